//! [`SimVfs`]: a simulated file system for crash and fault-injection tests. It keeps what
//! the disk holds apart from what the OS page cache holds, loses power on command, and
//! fails chosen operations the way real disks and kernels do.
//!
//! `kill -9` cannot prove that fsyncs sit in the right places: the page cache survives the
//! process. This file system can. A test runs a workload on a `SimVfs`, arms a power loss
//! after IO operation `k` ([`SimVfs::power_fail_after`]), and then asks for the disk as a
//! restart would find it ([`SimVfs::crash`]), with the unsynced state dropped, kept, picked
//! at random or torn ([`Damage`]). Sweeping `k` over every operation of a workload and several
//! damages per `k` checks every place where the power could fail.
//!
//! # The model
//!
//! Every file is an inode with a *durable* image, a queue of *pending* data operations
//! (writes and `set_len`, in issue order) and a *live* image. Names map to inodes in two
//! namespaces, live and durable, and a journal of pending directory changes lies between
//! them.
//!
//! ```text
//!   write_at, set_len ──► file's pending queue ──sync──► file's durable image
//!                          (reads see live)  └─SyncFails─► dropped, never durable
//!   open(create), remove, rename ──► directory journal ──sync_dir──► durable names
//!                                                           crash(damage) ──► new SimVfs
//! ```
//!
//! Rules:
//!
//! 1. **Reads see the live state**: every completed write, `set_len`, create, rename and
//!    remove, synced or not, as the page cache would.
//! 2. **`FileIo::sync` makes that file's pending data operations durable**, in issue order.
//!    It does nothing for the file's name and nothing for any other file.
//! 3. **Directory changes are durable only after `sync_dir`.** Creates, removes and renames
//!    queue in one journal. `sync_dir(d)` makes durable, in order, every pending change that
//!    touches `d`, and with them every earlier change of any directory that shares a change
//!    with those (a rename from `e` into `d` brings `e`'s earlier changes along), so the
//!    durable names are always the result of applying some order-respecting subset of the
//!    journal. A rename is a single change: after a crash both names moved or neither did.
//! 4. **A file survives a crash only under a name durable in the crash image.** A file
//!    created but whose directory was never synced vanishes, with all its data, synced or
//!    not, unless the crash happens to keep that create (see rule 5). A removal not yet
//!    durable may be undone by a crash: the file comes back with its durable data plus
//!    whatever the damage keeps of its pending writes. Directories themselves are implicit
//!    (like [`MemVfs`](super::MemVfs)) and always exist.
//! 5. **At a crash, pending directory changes survive as a prefix of the journal**: none for
//!    [`Damage::LoseAll`], all for [`Damage::KeepAll`], a seeded random cut otherwise. This
//!    models a journaling file system (ext4, XFS), whose metadata commits in order.
//! 6. **At a crash, pending data operations survive per [`Damage`]**; see its variants. The
//!    seeded variants are deterministic: the same state and seed give the same image.
//! 7. **A failed fsync loses the file's pending writes** ([`Fault::SyncFails`]): sync returns
//!    an error and drops the file's pending queue, as Linux does when writeback fails (the
//!    dirty pages are marked clean). Reads still see the data; no later sync and no crash,
//!    not even [`Damage::KeepAll`], makes it durable. Writes issued after the failure are
//!    pending as usual. This is the case PostgreSQL's "fsyncgate" taught: retrying the sync
//!    succeeds and proves nothing.
//! 8. **Power fails after operation `k`.** Operations are numbered from 1 over the counted
//!    calls ([`OpKind`]: open, read, write, sync, set_len, remove, rename, sync_dir); every
//!    call counts, successful or not. Once armed, operations `1..=k` run and every later call
//!    fails with [`SimError::PowerLoss`] and changes nothing, so a crash image taken
//!    afterwards shows the state as of operation `k`. The uncounted calls (`size`, `list`,
//!    `create_dir_all`) fail too once power is off; `exists` cannot fail and keeps answering
//!    from the frozen live state.
//!
//! A crash image is a new, independent `SimVfs`: everything in it is durable, nothing is
//! pending, no fault is armed and its operation counter starts at 0. Clones of one `SimVfs`
//! and its open files share one file system.
//!
//! # Example: a crash sweep
//!
//! Run the workload once to count its operations, then once per crash point and damage;
//! whatever the workload acknowledged must be found after the crash.
//!
//! ```
//! use std::path::Path;
//! use strongbox_wal::io::{Damage, OpenMode, SimVfs, Vfs};
//!
//! fn workload(vfs: &SimVfs) -> std::io::Result<()> {
//!     let log = vfs.open(Path::new("/db/log"), OpenMode::CreateNew)?;
//!     vfs.sync_dir(Path::new("/db"))?; // without it, LoseAll finds no file
//!     log.write_at(b"record", 0)?;
//!     log.sync() // without it, LoseAll finds an empty file
//! }
//!
//! let total = {
//!     let vfs = SimVfs::new();
//!     workload(&vfs).unwrap();
//!     vfs.ops()
//! };
//! for k in 0..=total {
//!     for damage in Damage::variants(k) {
//!         let vfs = SimVfs::new();
//!         vfs.power_fail_after(k);
//!         let acknowledged = workload(&vfs).is_ok();
//!         let disk = vfs.crash(damage);
//!         if acknowledged {
//!             assert_eq!(disk.contents(Path::new("/db/log")).unwrap(), b"record");
//!         }
//!     }
//! }
//! ```

mod damage;
mod fault;

pub use damage::Damage;
pub use fault::{Fault, FaultId, FaultRule, OpKind, SimError};

use super::{FileIo, OpenMode, Vfs};
use damage::surviving_image;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One not-yet-durable operation, as [`SimVfs::pending_ops`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingOp {
    /// A write to the file last named `path`.
    Write {
        path: PathBuf,
        offset: u64,
        len: usize,
    },
    SetLen {
        path: PathBuf,
        len: u64,
    },
    Create {
        path: PathBuf,
    },
    Remove {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
}

/// A simulated file system; see the module docs for its rules.
#[derive(Clone, Default)]
pub struct SimVfs {
    /// Guards the whole file system: inodes, both namespaces, the directory journal, the
    /// operation counter, the power switch and the armed faults. One lock keeps every
    /// operation atomic with respect to a crash image.
    state: Arc<Mutex<State>>,
}

type InodeId = u64;

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
}

impl FileOp {
    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            FileOp::Write { offset, data } => {
                let end = offset + data.len();
                if image.len() < end {
                    image.resize(end, 0);
                }
                image[*offset..end].copy_from_slice(data);
            }
            FileOp::SetLen(len) => image.resize(*len, 0),
        }
    }
}

#[derive(Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    /// What reads see: `durable` with every pending op applied, except after `SyncFails`,
    /// which drops ops from `pending` but not from here.
    live: Vec<u8>,
    /// Pending data operations in issue order, with their global sequence numbers.
    pending: Vec<(u64, FileOp)>,
    /// The file's latest live name, for `pending_ops`.
    name: PathBuf,
    /// Open `SimFile` handles; an inode with handles is never collected.
    handles: usize,
}

/// One journaled directory change. A rename is one change, so it is durable all or
/// nothing.
#[derive(Debug, Clone)]
enum DirEdit {
    Create {
        path: PathBuf,
        inode: InodeId,
    },
    Remove {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
        inode: InodeId,
    },
}

#[derive(Debug, Clone)]
struct DirChange {
    seq: u64,
    edit: DirEdit,
}

impl DirChange {
    /// The directories whose entries this change edits (one, or two for a rename).
    fn dirs(&self) -> impl Iterator<Item = &Path> + '_ {
        let (first, second) = match &self.edit {
            DirEdit::Create { path, .. } | DirEdit::Remove { path } => (path, None),
            DirEdit::Rename { from, to, .. } => (from, Some(to)),
        };
        std::iter::once(first)
            .chain(second)
            .map(|path| parent(path))
    }

    fn inode(&self) -> Option<InodeId> {
        match self.edit {
            DirEdit::Create { inode, .. } | DirEdit::Rename { inode, .. } => Some(inode),
            DirEdit::Remove { .. } => None,
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, InodeId>) {
        match &self.edit {
            DirEdit::Create { path, inode } => {
                names.insert(path.clone(), *inode);
            }
            DirEdit::Remove { path } => {
                names.remove(path);
            }
            DirEdit::Rename { from, to, inode } => {
                names.remove(from);
                names.insert(to.clone(), *inode);
            }
        }
    }

    fn describe(&self) -> PendingOp {
        match &self.edit {
            DirEdit::Create { path, .. } => PendingOp::Create { path: path.clone() },
            DirEdit::Remove { path } => PendingOp::Remove { path: path.clone() },
            DirEdit::Rename { from, to, .. } => PendingOp::Rename {
                from: from.clone(),
                to: to.clone(),
            },
        }
    }
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

#[derive(Debug)]
struct Armed {
    id: FaultId,
    rule: FaultRule,
    /// Matching operations seen since the rule was armed.
    seen: u64,
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<InodeId, Inode>,
    next_inode: InodeId,
    live: BTreeMap<PathBuf, InodeId>,
    durable: BTreeMap<PathBuf, InodeId>,
    /// Pending directory changes in issue order.
    journal: Vec<DirChange>,
    /// Orders all pending operations, for `pending_ops`.
    next_seq: u64,
    /// Counted operations so far.
    ops: u64,
    power_fails_after: Option<u64>,
    faults: Vec<Armed>,
    next_fault: u64,
    faults_fired: u64,
}

impl State {
    /// Counts one operation and decides its fate: power loss (an error), an injected fault
    /// (returned for the caller to act out), or none.
    fn begin(&mut self, op: OpKind, paths: &[&Path]) -> io::Result<Option<FaultRule>> {
        self.ops += 1;
        if self.power_fails_after.is_some_and(|k| self.ops > k) {
            return Err(SimError::PowerLoss.into());
        }
        let mut fired = None;
        let mut i = 0;
        while i < self.faults.len() {
            let armed = &mut self.faults[i];
            if armed.rule.matches(op, paths) {
                armed.seen += 1;
                if fired.is_none() && armed.seen >= armed.rule.nth {
                    fired = Some(armed.rule.clone());
                    self.faults_fired += 1;
                    if !armed.rule.persistent {
                        self.faults.remove(i);
                        continue;
                    }
                }
            }
            i += 1;
        }
        Ok(fired)
    }

    /// For the uncounted calls: fail once the power is off.
    fn check_power(&self) -> io::Result<()> {
        if self.powered_off() {
            return Err(SimError::PowerLoss.into());
        }
        Ok(())
    }

    fn powered_off(&self) -> bool {
        self.power_fails_after.is_some_and(|k| self.ops >= k)
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn inode(&mut self, id: InodeId) -> &mut Inode {
        self.inodes
            .get_mut(&id)
            .expect("open handles keep their inode alive")
    }

    fn push_file_op(&mut self, id: InodeId, op: FileOp) {
        let seq = self.seq();
        let inode = self.inode(id);
        op.apply(&mut inode.live);
        inode.pending.push((seq, op));
    }

    fn push_dir_change(&mut self, edit: DirEdit) {
        let change = DirChange {
            seq: self.seq(),
            edit,
        };
        change.apply(&mut self.live);
        self.journal.push(change);
    }

    /// Rule 3: walking the journal backwards, a change is needed if it touches a needed
    /// directory, and then its other directories are needed for all earlier changes.
    fn sync_dir(&mut self, dir: &Path) {
        let mut needed: BTreeSet<&Path> = BTreeSet::from([dir]);
        let mut apply = vec![false; self.journal.len()];
        for (i, change) in self.journal.iter().enumerate().rev() {
            if change.dirs().any(|d| needed.contains(d)) {
                apply[i] = true;
                needed.extend(change.dirs());
            }
        }
        let journal = std::mem::take(&mut self.journal);
        for (change, apply) in journal.into_iter().zip(apply) {
            if apply {
                change.apply(&mut self.durable);
            } else {
                self.journal.push(change);
            }
        }
        self.collect_garbage();
    }

    /// Drops inodes that no name, journaled change or open handle can reach.
    fn collect_garbage(&mut self) {
        let mut reachable: BTreeSet<InodeId> = self
            .live
            .values()
            .chain(self.durable.values())
            .copied()
            .collect();
        for change in &self.journal {
            reachable.extend(change.inode());
        }
        self.inodes
            .retain(|id, inode| inode.handles > 0 || reachable.contains(id));
    }

    fn create(&mut self, path: &Path) -> InodeId {
        self.next_inode += 1;
        let id = self.next_inode;
        self.inodes.insert(
            id,
            Inode {
                name: path.to_path_buf(),
                ..Inode::default()
            },
        );
        id
    }
}

impl SimVfs {
    /// An empty file system with power on and no faults armed.
    pub fn new() -> SimVfs {
        SimVfs::default()
    }

    /// Counted operations so far (rule 8), successful or not.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Power fails after operation `k` (an absolute count, see [`ops`](Self::ops)): every
    /// later operation fails with [`SimError::PowerLoss`]. `k` at or below `ops()` cuts the
    /// power now.
    pub fn power_fail_after(&self, k: u64) {
        self.state.lock().power_fails_after = Some(k);
    }

    /// Cuts the power now.
    pub fn power_fail_now(&self) {
        let mut state = self.state.lock();
        state.power_fails_after = Some(state.ops);
    }

    pub fn is_powered_off(&self) -> bool {
        self.state.lock().powered_off()
    }

    /// The disk as a restart after a power loss now would find it (rules 4–7): a new,
    /// independent file system in which everything is durable. `self` is left as it is.
    pub fn crash(&self, damage: Damage) -> SimVfs {
        let state = self.state.lock();
        let mut rng = damage.rng();
        let kept_changes = damage.journal_cut(state.journal.len(), &mut rng);
        let mut names = state.durable.clone();
        for change in &state.journal[..kept_changes] {
            change.apply(&mut names);
        }
        let survivors: BTreeSet<InodeId> = names.values().copied().collect();
        let images: BTreeMap<InodeId, Vec<u8>> = survivors
            .into_iter()
            .map(|id| (id, surviving_image(&state.inodes[&id], damage, &mut rng)))
            .collect();
        let mut image = State::default();
        for (path, id) in names {
            let new = image.create(&path);
            let inode = image.inode(new);
            inode.durable.clone_from(&images[&id]);
            inode.live.clone_from(&images[&id]);
            image.live.insert(path.clone(), new);
            image.durable.insert(path, new);
        }
        SimVfs {
            state: Arc::new(Mutex::new(image)),
        }
    }

    /// Arms a fault; it stays armed until it fires (one-shot) or is cleared (persistent).
    pub fn inject(&self, rule: FaultRule) -> FaultId {
        let mut state = self.state.lock();
        state.next_fault += 1;
        let id = FaultId(state.next_fault);
        state.faults.push(Armed { id, rule, seen: 0 });
        id
    }

    /// Disarms one fault ("space was freed"); false if it already fired or was cleared.
    pub fn clear_fault(&self, id: FaultId) -> bool {
        let mut state = self.state.lock();
        let before = state.faults.len();
        state.faults.retain(|armed| armed.id != id);
        state.faults.len() != before
    }

    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// How many operations an injected fault has failed so far.
    pub fn faults_fired(&self) -> u64 {
        self.state.lock().faults_fired
    }

    /// A file's live bytes (what reads see), if the live name exists.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.lock();
        state.live.get(path).map(|id| state.inodes[id].live.clone())
    }

    /// A file's durable bytes under a durable name: what [`Damage::LoseAll`] would leave.
    pub fn durable_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.lock();
        state
            .durable
            .get(path)
            .map(|id| state.inodes[id].durable.clone())
    }

    /// Replaces a file's bytes as if written and synced with its directory: live and
    /// durable, nothing pending for it. Meant for a quiescent file system, e.g. to damage
    /// a crash image. Not counted; works with the power off.
    pub fn set_contents(&self, path: &Path, bytes: Vec<u8>) {
        let mut state = self.state.lock();
        let id = match state.live.get(path) {
            Some(&id) => id,
            None => {
                let id = state.create(path);
                state.live.insert(path.to_path_buf(), id);
                id
            }
        };
        state.durable.insert(path.to_path_buf(), id);
        let inode = state.inode(id);
        inode.pending.clear();
        inode.live.clone_from(&bytes);
        inode.durable = bytes;
        state.collect_garbage();
    }

    /// Every live file path, sorted.
    pub fn list_all(&self) -> Vec<PathBuf> {
        self.state.lock().live.keys().cloned().collect()
    }

    /// Every pending operation, data and directory, in issue order.
    pub fn pending_ops(&self) -> Vec<PendingOp> {
        let state = self.state.lock();
        let mut ops: Vec<(u64, PendingOp)> = state
            .journal
            .iter()
            .map(|change| (change.seq, change.describe()))
            .collect();
        for inode in state.inodes.values() {
            for (seq, op) in &inode.pending {
                let path = inode.name.clone();
                let op = match op {
                    FileOp::Write { offset, data } => PendingOp::Write {
                        path,
                        offset: *offset as u64,
                        len: data.len(),
                    },
                    FileOp::SetLen(len) => PendingOp::SetLen {
                        path,
                        len: *len as u64,
                    },
                };
                ops.push((*seq, op));
            }
        }
        ops.sort_by_key(|(seq, _)| *seq);
        ops.into_iter().map(|(_, op)| op).collect()
    }
}

impl fmt::Debug for SimVfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("SimVfs")
            .field("files", &state.live.len())
            .field("journal", &state.journal.len())
            .field("ops", &state.ops)
            .field("powered_off", &state.powered_off())
            .field("faults", &state.faults.len())
            .finish()
    }
}

/// An open file: a handle on an inode, so it follows renames and outlives removal.
struct SimFile {
    /// The file system this file lives in (see `SimVfs::state`).
    state: Arc<Mutex<State>>,
    inode: InodeId,
    /// The name it was opened under, for fault matching.
    path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("inode", &self.inode)
            .finish()
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut state = self.state.lock();
        state.inode(self.inode).handles -= 1;
        state.collect_garbage();
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl FileIo for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        if let Some(rule) = state.begin(OpKind::Read, &[&self.path])? {
            return Err(rule.error(0, buf.len()));
        }
        let live = &state.inode(self.inode).live;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&end| end <= live.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&live[start..end]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        let fault = state.begin(OpKind::Write, &[&self.path])?;
        let offset = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        offset
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        let (written, result) = match &fault {
            None => (buf.len(), Ok(())),
            Some(rule) => {
                let written = match rule.fault {
                    Fault::Enospc { written } | Fault::ShortWrite { written } => {
                        written.min(buf.len().saturating_sub(1))
                    }
                    Fault::Eio | Fault::SyncFails => 0,
                };
                (written, Err(rule.error(written, buf.len())))
            }
        };
        if written > 0 {
            let data = buf[..written].to_vec();
            state.push_file_op(self.inode, FileOp::Write { offset, data });
        }
        result
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        let fault = state.begin(OpKind::Sync, &[&self.path])?;
        let inode = state.inode(self.inode);
        match fault {
            None => {
                for (_, op) in std::mem::take(&mut inode.pending) {
                    op.apply(&mut inode.durable);
                }
                Ok(())
            }
            Some(rule) => {
                if rule.fault == Fault::SyncFails {
                    inode.pending.clear();
                }
                Err(rule.error(0, 0))
            }
        }
    }

    fn size(&self) -> io::Result<u64> {
        let mut state = self.state.lock();
        state.check_power()?;
        Ok(state.inode(self.inode).live.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        if let Some(rule) = state.begin(OpKind::SetLen, &[&self.path])? {
            return Err(rule.error(0, 0));
        }
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        state.push_file_op(self.inode, FileOp::SetLen(len));
        Ok(())
    }
}

impl Vfs for SimVfs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileIo>> {
        let mut state = self.state.lock();
        if let Some(rule) = state.begin(OpKind::Open, &[path])? {
            return Err(rule.error(0, 0));
        }
        let inode = match (state.live.get(path).copied(), mode) {
            (Some(_), OpenMode::CreateNew) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ))
            }
            (Some(inode), _) => inode,
            (None, OpenMode::Existing) => return Err(not_found(path)),
            (None, _) => {
                let inode = state.create(path);
                state.push_dir_change(DirEdit::Create {
                    path: path.to_path_buf(),
                    inode,
                });
                inode
            }
        };
        state.inode(inode).handles += 1;
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            inode,
            path: path.to_path_buf(),
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        if let Some(rule) = state.begin(OpKind::Remove, &[path])? {
            return Err(rule.error(0, 0));
        }
        if !state.live.contains_key(path) {
            return Err(not_found(path));
        }
        state.push_dir_change(DirEdit::Remove {
            path: path.to_path_buf(),
        });
        state.collect_garbage();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        if let Some(rule) = state.begin(OpKind::Rename, &[from, to])? {
            return Err(rule.error(0, 0));
        }
        let inode = *state.live.get(from).ok_or_else(|| not_found(from))?;
        if from == to {
            return Ok(());
        }
        state.inode(inode).name = to.to_path_buf();
        state.push_dir_change(DirEdit::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            inode,
        });
        state.collect_garbage();
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        self.state.lock().live.contains_key(path)
    }

    fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        self.state.lock().check_power()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let state = self.state.lock();
        state.check_power()?;
        Ok(state
            .live
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        if let Some(rule) = state.begin(OpKind::SyncDir, &[dir])? {
            return Err(rule.error(0, 0));
        }
        state.sync_dir(dir);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::damage::sector_pieces;
    use super::*;

    const DIR: &str = "/db";

    fn p(name: &str) -> PathBuf {
        Path::new(DIR).join(name)
    }

    fn dir() -> &'static Path {
        Path::new(DIR)
    }

    /// A new file whose name is already durable, so a test can look at its data alone.
    fn durable_file(vfs: &SimVfs, name: &str) -> Arc<dyn FileIo> {
        let file = vfs.open(&p(name), OpenMode::CreateNew).unwrap();
        vfs.sync_dir(dir()).unwrap();
        file
    }

    fn sim_error(result: io::Result<()>) -> SimError {
        SimError::of(&result.unwrap_err()).expect("a simulated error")
    }

    #[test]
    fn behaves_like_a_file_system() {
        let vfs = SimVfs::new();
        let path = p("f");
        assert!(vfs.open(&path, OpenMode::Existing).is_err());
        let file = vfs.open(&path, OpenMode::CreateNew).unwrap();
        file.write_at(b"world", 5).unwrap();
        file.write_at(b"hello", 0).unwrap();
        let mut buf = [0u8; 10];
        file.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"helloworld");
        assert_eq!(
            file.read_at(&mut buf, 1).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        file.set_len(4).unwrap();
        assert_eq!(file.size().unwrap(), 4);
        assert!(vfs.open(&path, OpenMode::CreateNew).is_err());
        assert_eq!(vfs.list(dir()).unwrap(), vec![path.clone()]);
        vfs.rename(&path, &p("g")).unwrap();
        assert!(!vfs.exists(&path));
        assert_eq!(vfs.contents(&p("g")), Some(b"hell".to_vec()));
        vfs.remove(&p("g")).unwrap();
        assert!(vfs.remove(&p("g")).is_err());
        assert!(vfs.list_all().is_empty());
    }

    #[test]
    fn unsynced_write_is_lost_with_lose_all_and_kept_with_keep_all() {
        let vfs = SimVfs::new();
        let file = durable_file(&vfs, "a");
        file.write_at(b"hello", 0).unwrap();
        assert_eq!(
            vfs.contents(&p("a")),
            Some(b"hello".to_vec()),
            "reads see it"
        );
        assert_eq!(vfs.durable_contents(&p("a")), Some(Vec::new()));
        assert_eq!(
            vfs.crash(Damage::LoseAll).contents(&p("a")),
            Some(Vec::new())
        );
        assert_eq!(
            vfs.crash(Damage::KeepAll).contents(&p("a")),
            Some(b"hello".to_vec())
        );
    }

    #[test]
    fn synced_write_survives_lose_all() {
        let vfs = SimVfs::new();
        let file = durable_file(&vfs, "a");
        file.write_at(b"hello", 0).unwrap();
        file.sync().unwrap();
        file.write_at(b"J", 0).unwrap();
        file.set_len(3).unwrap();
        assert_eq!(
            vfs.crash(Damage::LoseAll).contents(&p("a")),
            Some(b"hello".to_vec())
        );
        assert_eq!(
            vfs.crash(Damage::KeepAll).contents(&p("a")),
            Some(b"Jel".to_vec())
        );
        assert!(vfs.crash(Damage::KeepAll).pending_ops().is_empty());
    }

    #[test]
    fn sync_of_one_file_leaves_another_pending() {
        let vfs = SimVfs::new();
        let a = durable_file(&vfs, "a");
        let b = durable_file(&vfs, "b");
        a.write_at(b"aaa", 0).unwrap();
        b.write_at(b"bbb", 0).unwrap();
        a.sync().unwrap();
        let image = vfs.crash(Damage::LoseAll);
        assert_eq!(image.contents(&p("a")), Some(b"aaa".to_vec()));
        assert_eq!(image.contents(&p("b")), Some(Vec::new()));
        assert_eq!(
            vfs.pending_ops(),
            vec![PendingOp::Write {
                path: p("b"),
                offset: 0,
                len: 3
            }]
        );
    }

    #[test]
    fn created_file_vanishes_until_its_directory_is_synced() {
        let vfs = SimVfs::new();
        let file = vfs.open(&p("new"), OpenMode::CreateNew).unwrap();
        file.write_at(b"data", 0).unwrap();
        file.sync().unwrap();
        assert_eq!(
            vfs.durable_contents(&p("new")),
            None,
            "synced data, no durable name"
        );
        assert!(vfs.crash(Damage::LoseAll).list_all().is_empty());
        assert_eq!(
            vfs.crash(Damage::KeepAll).contents(&p("new")),
            Some(b"data".to_vec())
        );
        vfs.sync_dir(dir()).unwrap();
        assert_eq!(
            vfs.crash(Damage::LoseAll).contents(&p("new")),
            Some(b"data".to_vec())
        );
    }

    #[test]
    fn rename_is_durable_only_after_sync_dir_and_never_half_done() {
        let vfs = SimVfs::new();
        let file = durable_file(&vfs, "tmp");
        file.write_at(b"v2", 0).unwrap();
        file.sync().unwrap();
        vfs.rename(&p("tmp"), &p("final")).unwrap();
        assert_eq!(vfs.list_all(), vec![p("final")]);
        assert_eq!(vfs.crash(Damage::LoseAll).list_all(), vec![p("tmp")]);
        let mut outcomes = BTreeSet::new();
        for seed in 0..32 {
            let names = vfs.crash(Damage::Random { seed }).list_all();
            assert_eq!(names.len(), 1, "exactly one name survives: {names:?}");
            outcomes.insert(names[0].clone());
        }
        assert_eq!(outcomes, BTreeSet::from([p("tmp"), p("final")]));
        vfs.sync_dir(dir()).unwrap();
        let image = vfs.crash(Damage::LoseAll);
        assert_eq!(image.list_all(), vec![p("final")]);
        assert_eq!(image.contents(&p("final")), Some(b"v2".to_vec()));
    }

    #[test]
    fn remove_is_durable_only_after_sync_dir() {
        let vfs = SimVfs::new();
        let file = durable_file(&vfs, "old");
        file.write_at(b"synced", 0).unwrap();
        file.sync().unwrap();
        file.write_at(b"S", 0).unwrap();
        vfs.remove(&p("old")).unwrap();
        assert!(!vfs.exists(&p("old")));
        assert_eq!(
            vfs.crash(Damage::LoseAll).contents(&p("old")),
            Some(b"synced".to_vec()),
            "the removal is undone with the durable data"
        );
        vfs.sync_dir(dir()).unwrap();
        assert!(vfs.crash(Damage::LoseAll).list_all().is_empty());
        assert!(vfs.crash(Damage::KeepAll).list_all().is_empty());
    }

    #[test]
    fn sync_dir_brings_along_earlier_changes_a_rename_depends_on() {
        let vfs = SimVfs::new();
        let (a, b, c) = (Path::new("/a"), Path::new("/b"), Path::new("/c"));
        vfs.open(&a.join("x"), OpenMode::CreateNew).unwrap();
        vfs.open(&c.join("y"), OpenMode::CreateNew).unwrap();
        vfs.rename(&a.join("x"), &b.join("x")).unwrap();
        vfs.open(&a.join("z"), OpenMode::CreateNew).unwrap();
        vfs.sync_dir(b).unwrap();
        assert_eq!(
            vfs.crash(Damage::LoseAll).list_all(),
            vec![b.join("x")],
            "/a's create before the rename came along; /a/z and /c/y did not"
        );
        assert_eq!(
            vfs.pending_ops(),
            vec![
                PendingOp::Create { path: c.join("y") },
                PendingOp::Create { path: a.join("z") },
            ]
        );
        vfs.sync_dir(a).unwrap();
        assert_eq!(
            vfs.crash(Damage::LoseAll).list_all(),
            vec![a.join("z"), b.join("x")]
        );
    }

    /// Checks that `image` holds, in each `sector` of `[offset, offset + len)`, all old or
    /// all new bytes, and says whether both kinds occur.
    fn sectors_whole(
        image: &[u8],
        offset: usize,
        len: usize,
        sector: usize,
        old: u8,
        new: u8,
    ) -> (bool, bool) {
        let (mut saw_old, mut saw_new) = (false, false);
        for (start, end) in sector_pieces(offset, len, sector) {
            let piece = &image[start..end];
            if piece.iter().all(|&b| b == new) {
                saw_new = true;
            } else {
                assert!(piece.iter().all(|&b| b == old), "partial sector at {start}");
                saw_old = true;
            }
        }
        (saw_old, saw_new)
    }

    #[test]
    fn torn_writes_mix_whole_sectors_deterministically() {
        for (offset, len, sector) in [(0, 4096, 512), (100, 1000, 512), (0, 16384, 4096)] {
            let vfs = SimVfs::new();
            let file = durable_file(&vfs, "page");
            file.write_at(&vec![0xAA; offset + len + 512], 0).unwrap();
            file.sync().unwrap();
            file.write_at(&vec![0xBB; len], offset as u64).unwrap();
            let (mut mixed, mut lost) = (0, 0);
            for seed in 0..64 {
                let damage = Damage::Torn { seed, sector };
                let image = vfs.crash(damage).contents(&p("page")).unwrap();
                assert_eq!(image, vfs.crash(damage).contents(&p("page")).unwrap());
                assert!(image[..offset]
                    .iter()
                    .chain(&image[offset + len..])
                    .all(|&b| b == 0xAA));
                match sectors_whole(&image, offset, len, sector, 0xAA, 0xBB) {
                    (true, true) => mixed += 1,
                    (true, false) => lost += 1,
                    (false, _) => panic!("the only kept write is always torn"),
                }
            }
            assert!(
                mixed > 0 && lost > 0,
                "{offset}+{len}/{sector}: {mixed} torn, {lost} lost"
            );
        }
    }

    #[test]
    fn random_damage_keeps_any_subset_of_whole_writes() {
        let vfs = SimVfs::new();
        let file = durable_file(&vfs, "f");
        file.write_at(&[0u8; 300], 0).unwrap();
        file.sync().unwrap();
        for i in 0..3u8 {
            file.write_at(&[i + 1; 100], u64::from(i) * 100).unwrap();
        }
        let mut outcomes = BTreeSet::new();
        for seed in 0..64 {
            let image = vfs
                .crash(Damage::Random { seed })
                .contents(&p("f"))
                .unwrap();
            let kept: Vec<bool> = (0..3u8)
                .map(|i| {
                    let region = &image[usize::from(i) * 100..][..100];
                    let kept = region.iter().all(|&b| b == i + 1);
                    assert!(
                        kept || region.iter().all(|&b| b == 0),
                        "write {i} partly kept"
                    );
                    kept
                })
                .collect();
            outcomes.insert(kept);
        }
        assert_eq!(
            outcomes.len(),
            8,
            "every subset occurs, not only prefixes: {outcomes:?}"
        );
    }

    #[test]
    fn prefix_damage_keeps_an_in_order_prefix() {
        let vfs = SimVfs::new();
        let file = durable_file(&vfs, "f");
        for i in 0..4u8 {
            file.write_at(&[i + 1], u64::from(i)).unwrap();
        }
        let mut lengths = BTreeSet::new();
        for seed in 0..64 {
            let image = vfs
                .crash(Damage::Prefix { seed })
                .contents(&p("f"))
                .unwrap();
            assert_eq!(image, (1..=4).take(image.len()).collect::<Vec<u8>>());
            lengths.insert(image.len());
        }
        assert_eq!(lengths, BTreeSet::from([0, 1, 2, 3, 4]));
    }

    #[test]
    fn power_fails_after_op_k() {
        let vfs = SimVfs::new();
        vfs.power_fail_after(3);
        let file = vfs.open(&p("f"), OpenMode::CreateNew).unwrap(); // op 1
        file.write_at(b"a", 0).unwrap(); // op 2
        file.write_at(b"b", 1).unwrap(); // op 3
        assert!(vfs.is_powered_off());
        assert_eq!(sim_error(file.write_at(b"c", 2)), SimError::PowerLoss); // op 4
        assert_eq!(sim_error(file.sync()), SimError::PowerLoss);
        assert_eq!(sim_error(vfs.sync_dir(dir())), SimError::PowerLoss);
        let mut buf = [0u8; 1];
        assert!(file.read_at(&mut buf, 0).is_err());
        assert!(file.size().is_err());
        assert!(vfs.open(&p("g"), OpenMode::CreateNew).is_err());
        assert_eq!(vfs.ops(), 8);
        let image = vfs.crash(Damage::KeepAll);
        assert_eq!(
            image.contents(&p("f")),
            Some(b"ab".to_vec()),
            "state as of op 3"
        );
        assert_eq!(image.ops(), 0);
        assert!(!image.is_powered_off());
        assert!(vfs.crash(Damage::LoseAll).list_all().is_empty());
    }

    #[test]
    fn enospc_with_nothing_written_is_one_shot() {
        let vfs = SimVfs::new();
        let file = durable_file(&vfs, "f");
        vfs.inject(FaultRule::new(Fault::Enospc { written: 0 }, OpKind::Write));
        let err = file.write_at(b"hello", 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(SimError::of(&err), Some(SimError::NoSpace));
        assert_eq!(vfs.contents(&p("f")), Some(Vec::new()));
        assert!(vfs.pending_ops().is_empty());
        file.write_at(b"hello", 0).unwrap();
        assert_eq!(vfs.faults_fired(), 1);
    }

    #[test]
    fn enospc_with_a_prefix_persists_until_cleared() {
        let vfs = SimVfs::new();
        let full = durable_file(&vfs, "full");
        let other = durable_file(&vfs, "other");
        let rule = FaultRule::new(Fault::Enospc { written: 3 }, OpKind::Write)
            .on_path(p("full"))
            .persistent();
        let id = vfs.inject(rule);
        assert_eq!(sim_error(full.write_at(b"hello", 0)), SimError::NoSpace);
        assert_eq!(vfs.contents(&p("full")), Some(b"hel".to_vec()));
        assert_eq!(sim_error(full.write_at(b"xy", 3)), SimError::NoSpace);
        assert_eq!(
            vfs.contents(&p("full")),
            Some(b"helx".to_vec()),
            "a failed write keeps at most all but one byte"
        );
        other.write_at(b"fine", 0).unwrap();
        assert!(vfs.clear_fault(id), "space was freed");
        full.write_at(b"hello", 0).unwrap();
        assert_eq!(vfs.faults_fired(), 2);
        assert!(!vfs.clear_fault(id));
    }

    #[test]
    fn eio_fails_the_nth_read_and_writes_nothing() {
        let vfs = SimVfs::new();
        let file = durable_file(&vfs, "f");
        file.write_at(b"abc", 0).unwrap();
        vfs.inject(FaultRule::new(Fault::Eio, OpKind::Read).nth(2));
        vfs.inject(FaultRule::new(Fault::Eio, OpKind::Write));
        let mut buf = [0u8; 3];
        file.read_at(&mut buf, 0).unwrap();
        assert_eq!(sim_error(file.read_at(&mut buf, 0)), SimError::Eio);
        file.read_at(&mut buf, 0).unwrap();
        assert_eq!(sim_error(file.write_at(b"xyz", 0)), SimError::Eio);
        assert_eq!(vfs.contents(&p("f")), Some(b"abc".to_vec()));
    }

    #[test]
    fn eio_on_sync_keeps_the_writes_pending() {
        let vfs = SimVfs::new();
        let file = durable_file(&vfs, "f");
        file.write_at(b"abc", 0).unwrap();
        vfs.inject(FaultRule::new(Fault::Eio, OpKind::Sync));
        assert_eq!(sim_error(file.sync()), SimError::Eio);
        file.sync().unwrap();
        assert_eq!(vfs.durable_contents(&p("f")), Some(b"abc".to_vec()));
    }

    #[test]
    fn failed_sync_drops_pending_writes_for_good() {
        let vfs = SimVfs::new();
        let file = durable_file(&vfs, "f");
        file.write_at(b"lost", 0).unwrap();
        vfs.inject(FaultRule::new(Fault::SyncFails, OpKind::Sync).on_path(p("f")));
        assert_eq!(sim_error(file.sync()), SimError::SyncFailed);
        assert_eq!(
            vfs.contents(&p("f")),
            Some(b"lost".to_vec()),
            "reads still see it"
        );
        assert!(vfs.pending_ops().is_empty());
        file.sync().unwrap();
        assert_eq!(
            vfs.durable_contents(&p("f")),
            Some(Vec::new()),
            "the retry proves nothing"
        );
        assert_eq!(
            vfs.crash(Damage::KeepAll).contents(&p("f")),
            Some(Vec::new())
        );
        file.write_at(b"!", 5).unwrap();
        file.sync().unwrap();
        assert_eq!(vfs.durable_contents(&p("f")), Some(b"\0\0\0\0\0!".to_vec()));
    }

    #[test]
    fn short_write_leaves_a_prefix_pending() {
        let vfs = SimVfs::new();
        let file = durable_file(&vfs, "f");
        vfs.inject(FaultRule::new(
            Fault::ShortWrite { written: 2 },
            OpKind::Write,
        ));
        let err = file.write_at(b"hello", 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        assert_eq!(
            SimError::of(&err),
            Some(SimError::ShortWrite { written: 2, len: 5 })
        );
        assert_eq!(vfs.contents(&p("f")), Some(b"he".to_vec()));
        assert_eq!(
            vfs.crash(Damage::KeepAll).contents(&p("f")),
            Some(b"he".to_vec())
        );
        assert_eq!(
            vfs.crash(Damage::LoseAll).contents(&p("f")),
            Some(Vec::new())
        );
    }

    #[test]
    fn faults_on_directory_operations() {
        let vfs = SimVfs::new();
        vfs.inject(FaultRule::new(Fault::Enospc { written: 0 }, OpKind::Open).on_path(p("b")));
        vfs.inject(FaultRule::new(Fault::Eio, OpKind::SyncDir));
        vfs.open(&p("a"), OpenMode::CreateNew).unwrap();
        assert_eq!(
            vfs.open(&p("b"), OpenMode::CreateNew).unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        assert!(!vfs.exists(&p("b")));
        assert_eq!(sim_error(vfs.sync_dir(dir())), SimError::Eio);
        assert!(vfs.crash(Damage::LoseAll).list_all().is_empty());
    }

    #[test]
    #[should_panic(expected = "SyncFails is a sync fault")]
    fn sync_fault_on_a_write_is_refused() {
        FaultRule::new(Fault::SyncFails, OpKind::Write);
    }

    #[test]
    fn handles_follow_renames_and_outlive_removal() {
        let vfs = SimVfs::new();
        let file = durable_file(&vfs, "a");
        vfs.rename(&p("a"), &p("b")).unwrap();
        file.write_at(b"x", 0).unwrap();
        assert_eq!(vfs.contents(&p("b")), Some(b"x".to_vec()));
        vfs.remove(&p("b")).unwrap();
        vfs.sync_dir(dir()).unwrap();
        file.write_at(b"y", 1).unwrap();
        assert_eq!(file.size().unwrap(), 2);
        assert_eq!(vfs.state.lock().inodes.len(), 1);
        drop(file);
        assert!(
            vfs.state.lock().inodes.is_empty(),
            "the unlinked inode is collected"
        );
    }

    #[test]
    fn clones_share_and_crash_images_are_independent() {
        let vfs = SimVfs::new();
        let clone = vfs.clone();
        durable_file(&clone, "f").write_at(b"1", 0).unwrap();
        assert_eq!(vfs.contents(&p("f")), Some(b"1".to_vec()));
        let image = vfs.crash(Damage::KeepAll);
        image.set_contents(&p("f"), b"image".to_vec());
        assert_eq!(vfs.contents(&p("f")), Some(b"1".to_vec()));
        vfs.set_contents(&p("f"), b"orig".to_vec());
        assert_eq!(image.contents(&p("f")), Some(b"image".to_vec()));
        assert_eq!(vfs.durable_contents(&p("f")), Some(b"orig".to_vec()));
    }

    #[test]
    fn pending_ops_are_listed_in_issue_order() {
        let vfs = SimVfs::new();
        let file = vfs.open(&p("a"), OpenMode::CreateNew).unwrap();
        file.write_at(b"abc", 7).unwrap();
        file.set_len(4).unwrap();
        vfs.rename(&p("a"), &p("b")).unwrap();
        vfs.remove(&p("b")).unwrap();
        assert_eq!(
            vfs.pending_ops(),
            vec![
                PendingOp::Create { path: p("a") },
                PendingOp::Write {
                    path: p("b"),
                    offset: 7,
                    len: 3
                },
                PendingOp::SetLen {
                    path: p("b"),
                    len: 4
                },
                PendingOp::Rename {
                    from: p("a"),
                    to: p("b")
                },
                PendingOp::Remove { path: p("b") },
            ]
        );
    }

    // A journal the way the engine's crash tests will use the harness: a record, then a
    // commit mark; after any crash, a commit mark must come with the whole record, and an
    // acknowledged commit must be found.

    const RECORD_LEN: usize = 3000;
    const MARK_AT: usize = 4096;
    const MARK: &[u8] = b"COMMIT!\n";

    fn record() -> Vec<u8> {
        (0..RECORD_LEN).map(|i| (i % 251) as u8 + 1).collect()
    }

    fn journal(vfs: &SimVfs, sync_before_mark: bool) -> io::Result<()> {
        let log = vfs.open(&p("journal"), OpenMode::CreateNew)?;
        vfs.sync_dir(dir())?;
        log.write_at(&record(), 0)?;
        if sync_before_mark {
            log.sync()?;
        }
        log.write_at(MARK, MARK_AT as u64)?;
        log.sync()
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Found {
        Nothing,
        Committed,
        Broken,
    }

    fn recover(vfs: &SimVfs) -> Found {
        let Some(bytes) = vfs.contents(&p("journal")) else {
            return Found::Nothing;
        };
        if bytes.get(MARK_AT..MARK_AT + MARK.len()) != Some(MARK) {
            Found::Nothing
        } else if bytes.get(..RECORD_LEN) == Some(&record()[..]) {
            Found::Committed
        } else {
            Found::Broken
        }
    }

    /// Crashes the journal at every op with every damage; returns the outcomes seen and the
    /// number of violations (a broken record, or an acknowledged commit not found).
    fn sweep(sync_before_mark: bool) -> (BTreeSet<Found>, usize) {
        let total = {
            let vfs = SimVfs::new();
            journal(&vfs, sync_before_mark).unwrap();
            vfs.ops()
        };
        let (mut seen, mut violations) = (BTreeSet::new(), 0);
        for k in 0..=total {
            for seed in 0..8 {
                for damage in Damage::variants(seed) {
                    let vfs = SimVfs::new();
                    vfs.power_fail_after(k);
                    let acknowledged = journal(&vfs, sync_before_mark).is_ok();
                    assert_eq!(acknowledged, k == total);
                    let found = recover(&vfs.crash(damage));
                    if found == Found::Broken || (acknowledged && found != Found::Committed) {
                        violations += 1;
                    }
                    seen.insert(found);
                }
            }
        }
        (seen, violations)
    }

    #[test]
    fn journal_survives_every_crash_point_and_damage() {
        let (seen, violations) = sweep(true);
        assert_eq!(violations, 0);
        assert_eq!(seen, BTreeSet::from([Found::Nothing, Found::Committed]));
    }

    #[test]
    fn journal_missing_a_sync_is_caught() {
        let (seen, violations) = sweep(false);
        assert!(violations > 0);
        assert!(seen.contains(&Found::Broken));
    }
}
