//! The lock manager: exclusive key locks held until commit, and for each locked key its
//! committed before-image, so that transactions can change B+tree leaves in place while
//! readers never block and never see uncommitted data.
//!
//! Transactions update leaves **in place**; the before-image also goes to the undo log for
//! rollback and crash recovery (`docs/durability.md` rule 4), which is not this module's
//! business. The isolation this module provides (issue 4 §4; a later issue adds MVCC
//! snapshots):
//!
//! * no transaction ever reads another's uncommitted writes;
//! * two transactions never hold uncommitted changes to one key at the same time: the second
//!   writer waits for the first to commit or roll back, so they cannot both change a key and
//!   both commit.
//!
//! # Locks
//!
//! A writer takes an exclusive lock on `(space_id, key)` ([`LockManager::lock_exclusive`])
//! before it changes the key and holds it until its commit or rollback has finished
//! ([`LockManager::release_all`]). Another writer of that key sleeps until the lock is
//! released or `lock_wait_timeout` passes (default 50 s, InnoDB's
//! `innodb_lock_wait_timeout`); then it gets [`WaitTimeout`], which the caller turns into
//! [`Error::LockWaitTimeout`], and should roll back. Locking a key the transaction already
//! holds is free. There is no deadlock detector: a cycle of waiters is broken when the first
//! of them times out, as in InnoDB with `innodb_deadlock_detect = off`.
//!
//! One mutex guards the whole lock table. Readers of a space with no locked key never take
//! it: each space maps to one of 64 slots holding an atomic count of locked keys, and a read
//! whose slot count is zero is answered without the mutex.
//!
//! # The before-image
//!
//! Each lock entry also records the key's committed value, so readers need not wait for the
//! writer. Its states:
//!
//! ```text
//!              lock_exclusive            capture_before_image             release_all
//!   unlocked ────────────────► Pending ──────────────────────► Captured(v) ───────────► unlocked
//!      ▲                          │       (first capture only)
//!      └──────────────────────────┘ release_all (the holder never changed the tree)
//! ```
//!
//! `Captured(Some(v))`: the committed value is `v`. `Captured(None)`: the key did not exist
//! (the holder is inserting it). `Pending`: the holder has not changed the tree yet.
//!
//! # The protocol
//!
//! A **writer** changing key `k`:
//!
//! * **W1.** `lock_exclusive(txn, space, k)`; on [`WaitTimeout`], roll back.
//! * **W2.** If it returned [`Acquired::New`], read `k` from the tree: that is the committed
//!   value (invariant C(a) below).
//! * **W3.** `capture_before_image(txn, space, k, value)`. Only the first capture is stored.
//! * **W4.** Change the tree. Only now, never in state `Pending`.
//! * **W5.** At the end: to commit, make the commit durable, then `release_all(txn,
//!   Committed)`; to roll back, first restore every `Captured` key of [`LockManager::held_by`]
//!   in the tree, then `release_all(txn, RolledBack)`.
//!
//! A **reader** (another transaction, or autocommit with `reader = None`) of one key, or of
//! one batch of a scan:
//!
//! * **R1.** `epoch = read_epoch(space)`.
//! * **R2.** Read the tree.
//! * **R3.** Ask the lock manager: [`LockManager::before_image_for_reader`] for one key,
//!   [`LockManager::foreign_overrides`] over exactly the key range R2 covered. Where another
//!   transaction holds a key with `Captured(v)`, `v` replaces what R2 read (`None`: the key is
//!   absent). A key that is unlocked, `Pending`, or the reader's own keeps what R2 read.
//! * **R4.** If `!read_is_stable(epoch)`, a rollback released keys of this space meanwhile:
//!   discard the result and start again at R1.
//!
//! [`LockManager::read_committed`] does R1–R4 for one key.
//!
//! # A worked example
//!
//! One space with committed `a=1, b=2`; `c` does not exist. T1 and T2 write; the last column
//! is what a reader outside both (a scan of `a..=c`) returns. T1 reading `a` after step 3
//! gets its own `10`: its own keys are never overridden.
//!
//! ```text
//!  step  action                                tree           lock table                reader
//!  ----  ------------------------------------  -------------  ------------------------  -------
//!   0                                          a=1 b=2        -                         a=1 b=2
//!   1    T1 locks a                            a=1 b=2        a:T1 Pending              a=1 b=2
//!   2    T1 reads a=1, captures it             a=1 b=2        a:T1 Captured(1)          a=1 b=2
//!   3    T1 puts a=10                          a=10 b=2       a:T1 Captured(1)          a=1 b=2
//!   4    T2 locks b, captures 2, deletes b     a=10           a:T1 C(1)   b:T2 C(2)     a=1 b=2
//!   5    T2 locks c, captures None, puts c=3   a=10 c=3       as in 4, + c:T2 C(None)   a=1 b=2
//!   6    T1 locks b: waits for T2              a=10 c=3       as in 5                   a=1 b=2
//!   7    T2 commits: releases b, c; T1 wakes   a=10 c=3       a:T1 C(1)   b:T1 Pending  a=1 c=3
//!   8    T1 reads b (absent), captures None,   a=10 b=20 c=3  a:T1 C(1)   b:T1 C(None)  a=1 c=3
//!        puts b=20
//!   9    T1 rolls back: puts a=1, deletes b,   a=1 c=3        -                         a=1 c=3
//!        then releases a, b
//! ```
//!
//! At step 4 the scan reads only `a=10` from the tree; the overrides `a→1` and `b→2` turn
//! that into `a=1 b=2`. At step 5 the override `c→None` hides the uncommitted `c=3`.
//!
//! # Why it is safe
//!
//! The *committed value* of a key is the one left by the last transaction that released it
//! with `Committed` (or the initial one); a commit takes effect, for readers, when its locks
//! are released, all at once under the mutex.
//!
//! **Invariant C.** At every instant, for every key `k`:
//! (a) if `k` is unlocked or `Pending`, the tree holds the committed value of `k`;
//! (b) if `k` is `Captured(v)` by T, the committed value is `v`, and the tree holds `v` or a
//! value T wrote.
//!
//! It holds initially (nothing locked) and every step keeps it. Lock: the tree is unchanged.
//! Capture (W2–W3): while T holds `k` nobody else changes the tree at `k` or releases `k`, so
//! the value T read in state `Pending` is still the committed one. Tree changes (W4): only by
//! the holder in state `Captured` — (b) allows them. Commit (W5): at the release the
//! committed value becomes what the tree holds, and `k` is unlocked, so (a). Rollback (W5):
//! the tree is restored to `v` while still `Captured`, then released: (a). Releasing a
//! `Pending` key: the tree was never changed.
//!
//! **Readers.** A reader returns, for each key, a value that was committed at some instant
//! during its read. Say R2 read `t` and R3 ran at instant `c`:
//!
//! | the key at `c`                 | reader returns | committed because                  |
//! |--------------------------------|----------------|------------------------------------|
//! | `Captured(v)` by another txn   | `v`            | C(b) at `c`                        |
//! | held by the reader itself      | `t`            | it is the reader's own write       |
//! | unlocked, or `Pending`         | `t`            | C(a) at R2, or the argument below  |
//!
//! In the last row, if `t` was not committed at R2 then, by C, some T held `k` as
//! `Captured` at R2 and `t` is T's write. At `c` T no longer holds `k` (else row 1 or 2), so
//! T released it between R2 and `c`. If T committed, `t` became the committed value at that
//! release, during the read. If T rolled back, its `release_all` bumped the space's rollback
//! epoch after R2 (so after R1) and before `c` (so before R4): R4 sees the change and the
//! reader starts again.
//!
//! The fast path (slot count zero, no mutex) is the same as finding `k` unlocked: a writer
//! counts its key before it changes the tree, and a reader sees that change only through the
//! page latch the writer released after it, so the reader also sees the count or a later
//! value. The count of `k` drops only in the holder's `release_all`: after a commit `t` is
//! committed; a rollback bumps the epoch before it drops the count, so R4 sees the bump. The
//! atomics use `SeqCst`, so this argument needs no finer reasoning about orderings.
//!
//! **Writers.** Rule W1 and the exclusive lock mean a key has at most one holder; the holder
//! changes the tree only while it holds the key (W4) and restores it before releasing (W5),
//! so no two transactions' uncommitted changes to one key ever coexist.
//!
//! # What this leaves out
//!
//! * **No snapshots.** Each key, or each scan batch, is read as committed at some instant
//!   during that read; two reads (or two batches of one scan) may see different instants, so
//!   a reader can see a transaction's change to one key and not yet to another. MVCC (a later
//!   issue) gives a statement one snapshot.
//! * **Read-modify-write.** A transaction that reads a key and then writes it must lock it
//!   before the read (as `SELECT … FOR UPDATE` does), or another may commit in between.
//! * **No shared locks, no gap locks**, so no phantom protection.
//! * **Deadlocks** wait for the timeout; there is no wait-for graph.

#![cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "txn.rs starts using the lock manager next (issue 4 §4)"
    )
)]

use crate::error::Error;
use crate::txn::is_empty_range;
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A transaction's id, allocated by the caller and unique among live transactions.
pub(crate) type TxnId = u64;

/// InnoDB's default `innodb_lock_wait_timeout`.
pub(crate) const DEFAULT_LOCK_WAIT_TIMEOUT: Duration = Duration::from_secs(50);

/// Spaces share this many slots (by `space_id % SLOTS`) of locked-key counts and epochs.
const SLOTS: usize = 64;

/// What a lock entry knows about its key's committed value.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum BeforeImage {
    /// Locked; the holder has not captured the committed value and has not changed the tree.
    Pending,
    /// The committed value when the holder first captured it (`None`: the key did not exist).
    Captured(Option<Vec<u8>>),
}

/// What [`LockManager::lock_exclusive`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The lock is held and its before-image is `Pending`: read the committed value and
    /// capture it before changing the tree (W2–W3). Also returned on re-locking a key whose
    /// capture never happened (say the tree read failed), because that is what the caller
    /// must act on.
    New,
    /// The transaction already held the key with its before-image captured.
    AlreadyHeld,
}

/// How a transaction ended, for [`LockManager::release_all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Committed durably; the tree holds the transaction's values.
    Committed,
    /// Rolled back; the tree holds the before-images again.
    RolledBack,
}

/// One key a transaction holds, for its rollback.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) space_id: u32,
    pub(crate) key: Vec<u8>,
    pub(crate) before: BeforeImage,
}

/// A lock wait that outlasted the lock wait timeout. The transaction holds nothing new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaitTimeout {
    /// The space of the key that stayed locked.
    pub(crate) space_id: u32,
    /// The timeout that expired.
    pub(crate) waited: Duration,
}

impl WaitTimeout {
    /// The engine error, naming the table the caller knows `space_id` by.
    pub(crate) fn for_table(self, table: &str) -> Error {
        Error::LockWaitTimeout {
            table: table.to_string(),
            waited_ms: u64::try_from(self.waited.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// A space's rollback epoch at rule R1, checked at R4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadEpoch {
    space_id: u32,
    rollbacks: u64,
}

/// The lock table of one database. See the module doc.
pub(crate) struct LockManager {
    /// How long `lock_exclusive` waits for another transaction's lock.
    timeout: Duration,
    /// Guards every lock entry, every transaction's list of held keys, and the waiter count.
    table: Mutex<LockTable>,
    /// Per slot of spaces, counters read without `table`; changed only while holding it.
    slots: [Slot; SLOTS],
}

/// Counters of the spaces whose `space_id % SLOTS` is this slot's index.
#[derive(Default)]
struct Slot {
    /// Keys locked in these spaces; readers skip the mutex while it is zero.
    locked: AtomicUsize,
    /// Rollbacks that released a `Captured` key of these spaces (rule R4).
    rollbacks: AtomicU64,
}

#[derive(Default)]
struct LockTable {
    /// Per space, its locked keys in key order (for `foreign_overrides`).
    spaces: HashMap<u32, BTreeMap<Vec<u8>, Entry>>,
    /// Per transaction, the keys it holds, in the order it first locked them.
    held: HashMap<TxnId, Vec<(u32, Vec<u8>)>>,
    /// Transactions asleep in `lock_exclusive`.
    waiting: usize,
}

/// One locked key.
struct Entry {
    owner: TxnId,
    before: BeforeImage,
    /// Where the key's waiters sleep (with the `table` mutex); made by the first waiter and
    /// notified when the entry is removed.
    released: Option<Arc<Condvar>>,
}

impl LockManager {
    /// An empty lock table whose waits give up after `timeout`.
    pub(crate) fn new(timeout: Duration) -> LockManager {
        LockManager {
            timeout,
            table: Mutex::new(LockTable::default()),
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }

    /// Locks `key` of `space_id` for `txn` (rule W1), waiting up to the timeout for another
    /// holder to release it.
    pub(crate) fn lock_exclusive(
        &self,
        txn: TxnId,
        space_id: u32,
        key: &[u8],
    ) -> Result<Acquired, WaitTimeout> {
        let deadline = Instant::now().checked_add(self.timeout);
        let mut table = self.table.lock();
        loop {
            let LockTable { spaces, held, .. } = &mut *table;
            let keys = spaces.entry(space_id).or_default();
            let released = match keys.get_mut(key) {
                None => {
                    let entry = Entry {
                        owner: txn,
                        before: BeforeImage::Pending,
                        released: None,
                    };
                    keys.insert(key.to_vec(), entry);
                    held.entry(txn).or_default().push((space_id, key.to_vec()));
                    self.slot(space_id).locked.fetch_add(1, SeqCst);
                    return Ok(Acquired::New);
                }
                Some(entry) if entry.owner == txn => {
                    return Ok(match entry.before {
                        BeforeImage::Pending => Acquired::New,
                        BeforeImage::Captured(_) => Acquired::AlreadyHeld,
                    });
                }
                Some(entry) => Arc::clone(entry.released.get_or_insert_with(Default::default)),
            };
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(WaitTimeout {
                    space_id,
                    waited: self.timeout,
                });
            }
            table.waiting += 1;
            match deadline {
                Some(deadline) => {
                    released.wait_until(&mut table, deadline);
                }
                None => released.wait(&mut table),
            }
            table.waiting -= 1;
        }
    }

    /// Records the committed value of a key `txn` holds (rule W3); true if this call stored
    /// it, false if an earlier capture already had.
    pub(crate) fn capture_before_image(
        &self,
        txn: TxnId,
        space_id: u32,
        key: &[u8],
        before: Option<Vec<u8>>,
    ) -> bool {
        let mut table = self.table.lock();
        let entry = table
            .spaces
            .get_mut(&space_id)
            .and_then(|keys| keys.get_mut(key));
        match entry {
            Some(entry) if entry.owner == txn => {
                if entry.before == BeforeImage::Pending {
                    entry.before = BeforeImage::Captured(before);
                    true
                } else {
                    false
                }
            }
            _ => {
                debug_assert!(false, "txn {txn} captured a key it does not hold (rule W1)");
                false
            }
        }
    }

    /// The committed value a reader must use instead of what it read from the tree (rule
    /// R3): `Some(before)` if another transaction than `reader` holds the key with a captured
    /// before-image, `None` if the tree's value stands.
    pub(crate) fn before_image_for_reader(
        &self,
        reader: Option<TxnId>,
        space_id: u32,
        key: &[u8],
    ) -> Option<Option<Vec<u8>>> {
        if self.slot(space_id).locked.load(SeqCst) == 0 {
            return None;
        }
        let table = self.table.lock();
        let entry = table.spaces.get(&space_id)?.get(key)?;
        match &entry.before {
            BeforeImage::Captured(before) if Some(entry.owner) != reader => Some(before.clone()),
            _ => None,
        }
    }

    /// Every key between the bounds that another transaction than `reader` holds with a
    /// captured before-image, with that image, in key order (rule R3 for scans).
    pub(crate) fn foreign_overrides(
        &self,
        space_id: u32,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reader: Option<TxnId>,
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        if self.slot(space_id).locked.load(SeqCst) == 0 || is_empty_range(lower, upper) {
            return Vec::new();
        }
        let table = self.table.lock();
        let Some(keys) = table.spaces.get(&space_id) else {
            return Vec::new();
        };
        keys.range::<[u8], _>((lower, upper))
            .filter_map(|(key, entry)| match &entry.before {
                BeforeImage::Captured(before) if Some(entry.owner) != reader => {
                    Some((key.clone(), before.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Rule R1: the space's rollback epoch before a read.
    pub(crate) fn read_epoch(&self, space_id: u32) -> ReadEpoch {
        ReadEpoch {
            space_id,
            rollbacks: self.slot(space_id).rollbacks.load(SeqCst),
        }
    }

    /// Rule R4: false if a rollback released keys of the space since `epoch`, so the read
    /// must start again.
    pub(crate) fn read_is_stable(&self, epoch: ReadEpoch) -> bool {
        self.slot(epoch.space_id).rollbacks.load(SeqCst) == epoch.rollbacks
    }

    /// Reads one key as committed data for `reader` (rules R1–R4). `read_tree` reads the key
    /// from the tree and may run more than once.
    pub(crate) fn read_committed<E>(
        &self,
        reader: Option<TxnId>,
        space_id: u32,
        key: &[u8],
        mut read_tree: impl FnMut() -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Option<Vec<u8>>, E> {
        loop {
            let epoch = self.read_epoch(space_id);
            let from_tree = read_tree()?;
            let value = self
                .before_image_for_reader(reader, space_id, key)
                .unwrap_or(from_tree);
            if self.read_is_stable(epoch) {
                return Ok(value);
            }
        }
    }

    /// The keys `txn` holds, in the order it first locked them, with their before-images:
    /// what its rollback restores (rule W5).
    pub(crate) fn held_by(&self, txn: TxnId) -> Vec<Held> {
        let table = self.table.lock();
        let Some(keys) = table.held.get(&txn) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|(space_id, key)| {
                let entry = table.spaces.get(space_id)?.get(key)?;
                Some(Held {
                    space_id: *space_id,
                    key: key.clone(),
                    before: entry.before.clone(),
                })
            })
            .collect()
    }

    /// Releases every lock of `txn` and wakes their waiters (rule W5). Call it only once the
    /// commit is durable, or once a rollback has restored the tree.
    pub(crate) fn release_all(&self, txn: TxnId, outcome: Outcome) {
        let mut table = self.table.lock();
        let Some(keys) = table.held.remove(&txn) else {
            return;
        };
        let spaces = &mut table.spaces;
        for (space_id, key) in keys {
            let Some(space) = spaces.get_mut(&space_id) else {
                continue;
            };
            let Some(entry) = space.remove(&key) else {
                continue;
            };
            debug_assert_eq!(entry.owner, txn, "held list and lock entry disagree");
            let slot = self.slot(space_id);
            if outcome == Outcome::RolledBack && entry.before != BeforeImage::Pending {
                // Rule R4: before the key stops counting as locked.
                slot.rollbacks.fetch_add(1, SeqCst);
            }
            slot.locked.fetch_sub(1, SeqCst);
            if space.is_empty() {
                spaces.remove(&space_id);
            }
            if let Some(released) = entry.released {
                released.notify_all();
            }
        }
    }

    /// Transactions waiting for a lock now (InnoDB's `innodb_row_lock_current_waits`).
    pub(crate) fn waiting(&self) -> usize {
        self.table.lock().waiting
    }

    /// Keys locked now, over all spaces.
    pub(crate) fn locked_keys(&self) -> usize {
        self.slots.iter().map(|slot| slot.locked.load(SeqCst)).sum()
    }

    fn slot(&self, space_id: u32) -> &Slot {
        &self.slots[space_id as usize % SLOTS]
    }
}

/// Lengths only: keys and before-images are user data, which may be secret (STYLE §13).
impl fmt::Debug for BeforeImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BeforeImage::Pending => write!(f, "Pending"),
            BeforeImage::Captured(None) => write!(f, "Captured(absent)"),
            BeforeImage::Captured(Some(value)) => write!(f, "Captured({} bytes)", value.len()),
        }
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Held(space {}, {}-byte key, {:?})",
            self.space_id,
            self.key.len(),
            self.before
        )
    }
}

impl fmt::Debug for LockManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockManager")
            .field("timeout", &self.timeout)
            .field("locked_keys", &self.locked_keys())
            .field("waiting", &self.waiting())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;
    use std::thread;

    const SPACE: u32 = 7;

    /// A manager whose waits never time out within a test.
    fn patient() -> Arc<LockManager> {
        Arc::new(LockManager::new(DEFAULT_LOCK_WAIT_TIMEOUT))
    }

    /// Longer than any test runs: only a release can end these waits.
    const FOREVER: Duration = Duration::from_secs(24 * 3600);

    /// Bounds a wait for a thread's report, so a lost wake-up fails instead of hanging.
    const HANG_GUARD: Duration = Duration::from_secs(30);

    /// Polls until `n` transactions sleep in `lock_exclusive` (a bounded loop: a hang fails).
    fn wait_for_waiters(locks: &LockManager, n: usize) {
        for _ in 0..60_000 {
            if locks.waiting() == n {
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        panic!("{} waiters, expected {n}", locks.waiting());
    }

    fn keys_of(locks: &LockManager, txn: TxnId) -> Vec<(u32, Vec<u8>)> {
        let held = locks.held_by(txn);
        held.into_iter().map(|h| (h.space_id, h.key)).collect()
    }

    fn captured(value: &[u8]) -> BeforeImage {
        BeforeImage::Captured(Some(value.to_vec()))
    }

    #[test]
    fn a_second_writer_waits_until_the_first_releases() {
        let locks = Arc::new(LockManager::new(FOREVER));
        assert_eq!(locks.lock_exclusive(1, SPACE, b"k"), Ok(Acquired::New));
        assert!(locks.capture_before_image(1, SPACE, b"k", Some(b"old".to_vec())));

        let (sender, receiver) = mpsc::channel();
        let second = thread::spawn({
            let locks = Arc::clone(&locks);
            move || sender.send(locks.lock_exclusive(2, SPACE, b"k")).unwrap()
        });
        wait_for_waiters(&locks, 1);
        assert!(
            receiver.try_recv().is_err(),
            "T2 got the lock while T1 held it"
        );
        assert!(locks.held_by(2).is_empty());

        locks.release_all(1, Outcome::Committed);
        assert_eq!(
            receiver.recv_timeout(HANG_GUARD).expect("T2 was not woken"),
            Ok(Acquired::New)
        );
        second.join().unwrap();
        assert_eq!(keys_of(&locks, 2), [(SPACE, b"k".to_vec())]);
        assert!(locks.held_by(1).is_empty());
        // T2's entry starts Pending: T1's before-image went with T1's lock.
        assert_eq!(locks.before_image_for_reader(None, SPACE, b"k"), None);
        assert_eq!(locks.waiting(), 0);
    }

    #[test]
    fn a_waiter_times_out_and_the_holder_is_unaffected() {
        let locks = LockManager::new(Duration::from_millis(20));
        locks.lock_exclusive(1, SPACE, b"k").unwrap();
        locks.capture_before_image(1, SPACE, b"k", Some(b"v".to_vec()));

        let timeout = locks.lock_exclusive(2, SPACE, b"k").unwrap_err();
        assert_eq!(timeout.space_id, SPACE);
        let error = timeout.for_table("users");
        assert!(matches!(&error, Error::LockWaitTimeout { table, .. } if table == "users"));
        let text = error.to_string();
        assert!(
            text.contains("Lock wait timeout exceeded; try restarting transaction"),
            "{text}"
        );
        assert!(text.contains("\"users\""), "{text}");

        assert!(locks.held_by(2).is_empty());
        assert_eq!(locks.waiting(), 0);
        assert_eq!(
            locks.lock_exclusive(1, SPACE, b"k"),
            Ok(Acquired::AlreadyHeld)
        );
        let held = Held {
            space_id: SPACE,
            key: b"k".to_vec(),
            before: captured(b"v"),
        };
        assert_eq!(locks.held_by(1), [held]);
        assert_eq!(
            locks.before_image_for_reader(Some(2), SPACE, b"k"),
            Some(Some(b"v".to_vec()))
        );

        // A zero timeout fails at once, and the key is free after the holder releases.
        let impatient = LockManager::new(Duration::ZERO);
        impatient.lock_exclusive(1, SPACE, b"k").unwrap();
        assert!(impatient.lock_exclusive(2, SPACE, b"k").is_err());
        impatient.release_all(1, Outcome::RolledBack);
        assert_eq!(impatient.lock_exclusive(2, SPACE, b"k"), Ok(Acquired::New));
    }

    #[test]
    fn relocking_is_free_and_a_transaction_holds_many_keys() {
        let locks = patient();
        let keys: Vec<(u32, Vec<u8>)> = (0..10u8)
            .map(|i| (SPACE + u32::from(i % 2), vec![b'k', 9 - i]))
            .collect();
        for (space, key) in &keys {
            assert_eq!(locks.lock_exclusive(1, *space, key), Ok(Acquired::New));
            // Not captured yet: the caller must still capture.
            assert_eq!(locks.lock_exclusive(1, *space, key), Ok(Acquired::New));
            assert!(locks.capture_before_image(1, *space, key, Some(key.clone())));
            assert!(!locks.capture_before_image(1, *space, key, Some(b"later".to_vec())));
            assert_eq!(
                locks.lock_exclusive(1, *space, key),
                Ok(Acquired::AlreadyHeld)
            );
        }
        assert_eq!(keys_of(&locks, 1), keys, "held_by keeps locking order");
        for held in locks.held_by(1) {
            assert_eq!(
                held.before,
                captured(&held.key),
                "only the first capture counts"
            );
        }
        assert_eq!(locks.locked_keys(), 10);

        locks.release_all(1, Outcome::Committed);
        assert_eq!(locks.locked_keys(), 0);
        assert!(locks.held_by(1).is_empty());
        assert!(
            locks.table.lock().spaces.is_empty(),
            "empty spaces are dropped"
        );
        locks.release_all(1, Outcome::Committed); // releasing nothing is harmless
    }

    #[test]
    fn release_all_wakes_every_waiter() {
        let locks = Arc::new(LockManager::new(FOREVER));
        for key in [b"a", b"b", b"c", b"d"] {
            locks.lock_exclusive(1, SPACE, key).unwrap();
        }
        // Four waiters on distinct keys, and two more on `a` that must take turns.
        let wanted: [(TxnId, &[u8]); 6] = [
            (2, b"a"),
            (3, b"b"),
            (4, b"c"),
            (5, b"d"),
            (6, b"a"),
            (7, b"a"),
        ];
        let (sender, receiver) = mpsc::channel();
        let threads: Vec<_> = wanted
            .iter()
            .map(|&(txn, key)| {
                let (locks, sender) = (Arc::clone(&locks), sender.clone());
                thread::spawn(move || {
                    let acquired = locks.lock_exclusive(txn, SPACE, key);
                    sender.send((txn, acquired)).unwrap();
                    locks.release_all(txn, Outcome::Committed);
                })
            })
            .collect();
        wait_for_waiters(&locks, wanted.len());
        assert!(receiver.try_recv().is_err());

        locks.release_all(1, Outcome::Committed);
        let mut woken: Vec<TxnId> = (0..wanted.len())
            .map(|_| {
                let (txn, acquired) = receiver
                    .recv_timeout(HANG_GUARD)
                    .expect("a waiter was not woken");
                assert_eq!(acquired, Ok(Acquired::New));
                txn
            })
            .collect();
        woken.sort_unstable();
        assert_eq!(woken, [2, 3, 4, 5, 6, 7]);
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!((locks.waiting(), locks.locked_keys()), (0, 0));
    }

    #[test]
    fn readers_see_foreign_captured_images_and_their_own_writes() {
        let locks = patient();
        let read = |reader| locks.before_image_for_reader(reader, SPACE, b"k");
        assert_eq!(read(None), None, "unlocked");

        locks.lock_exclusive(1, SPACE, b"k").unwrap();
        assert_eq!((read(None), read(Some(2))), (None, None), "Pending");

        locks.capture_before_image(1, SPACE, b"k", Some(b"old".to_vec()));
        assert_eq!(read(None), Some(Some(b"old".to_vec())));
        assert_eq!(read(Some(2)), Some(Some(b"old".to_vec())));
        assert_eq!(
            read(Some(1)),
            None,
            "the owner reads its own write from the tree"
        );
        assert_eq!(locks.before_image_for_reader(None, SPACE, b"other"), None);
        assert_eq!(locks.before_image_for_reader(None, SPACE + 1, b"k"), None);

        // A key being inserted: readers must not see it.
        locks.lock_exclusive(1, SPACE, b"new").unwrap();
        locks.capture_before_image(1, SPACE, b"new", None);
        assert_eq!(
            locks.before_image_for_reader(None, SPACE, b"new"),
            Some(None)
        );

        locks.release_all(1, Outcome::Committed);
        assert_eq!(read(None), None, "released");
    }

    #[test]
    fn foreign_overrides_are_the_foreign_captured_keys_in_range_in_order() {
        use Bound::{Excluded, Included, Unbounded};
        let locks = patient();
        // T1 captures b, h, d, f (locked out of order), and inserts c; e is Pending.
        for key in [b"b", b"h", b"d", b"f"] {
            locks.lock_exclusive(1, SPACE, key).unwrap();
            locks.capture_before_image(1, SPACE, key, Some(key.to_vec()));
        }
        locks.lock_exclusive(1, SPACE, b"c").unwrap();
        locks.capture_before_image(1, SPACE, b"c", None);
        locks.lock_exclusive(1, SPACE, b"e").unwrap();
        // T2 holds g; another space's d is T3's.
        locks.lock_exclusive(2, SPACE, b"g").unwrap();
        locks.capture_before_image(2, SPACE, b"g", Some(b"G".to_vec()));
        locks.lock_exclusive(3, SPACE + 1, b"d").unwrap();
        locks.capture_before_image(3, SPACE + 1, b"d", Some(b"D".to_vec()));

        let keys = |lower, upper, reader| -> Vec<String> {
            let overrides = locks.foreign_overrides(SPACE, lower, upper, reader);
            let show = |(key, before): (Vec<u8>, Option<Vec<u8>>)| {
                let key = String::from_utf8(key).unwrap();
                match before {
                    Some(value) => format!("{key}={}", String::from_utf8(value).unwrap()),
                    None => format!("{key}=absent"),
                }
            };
            overrides.into_iter().map(show).collect()
        };
        let (c, g): (&[u8], &[u8]) = (b"c", b"g");
        assert_eq!(
            keys(Unbounded, Unbounded, None),
            ["b=b", "c=absent", "d=d", "f=f", "g=G", "h=h"]
        );
        assert_eq!(
            keys(Included(c), Included(g), None),
            ["c=absent", "d=d", "f=f", "g=G"]
        );
        assert_eq!(keys(Excluded(c), Excluded(g), None), ["d=d", "f=f"]);
        assert_eq!(
            keys(Included(c), Excluded(g), Some(2)),
            ["c=absent", "d=d", "f=f"]
        );
        assert_eq!(keys(Excluded(c), Unbounded, Some(1)), ["g=G"]);
        assert_eq!(keys(Unbounded, Excluded(c), Some(2)), ["b=b"]);
        // Empty and inverted ranges are empty, not a panic.
        assert!(keys(Excluded(c), Excluded(c), None).is_empty());
        assert!(keys(Included(g), Included(c), None).is_empty());
        assert!(keys(Included(g), Excluded(c), None).is_empty());
        assert_eq!(keys(Included(c), Included(c), None), ["c=absent"]);
        // A space with nothing locked (its slot count is zero).
        assert!(locks
            .foreign_overrides(SPACE + 2, Unbounded, Unbounded, None)
            .is_empty());
    }

    /// A rollback that restores the tree and releases between a reader's tree read (R2) and
    /// its question to the lock manager (R3) would leave the reader with the rolled-back
    /// value; rule R4 makes it read again. A commit at the same point needs no second read.
    #[test]
    fn a_read_overlapping_a_rollback_reads_again() {
        for outcome in [Outcome::RolledBack, Outcome::Committed] {
            let locks = patient();
            let tree = Mutex::new(Some(b"new".to_vec()));
            locks.lock_exclusive(1, SPACE, b"k").unwrap();
            locks.capture_before_image(1, SPACE, b"k", Some(b"old".to_vec()));

            let mut reads = 0;
            let value = locks.read_committed(None, SPACE, b"k", || {
                reads += 1;
                let read = tree.lock().clone();
                if reads == 1 {
                    if outcome == Outcome::RolledBack {
                        *tree.lock() = Some(b"old".to_vec());
                    }
                    locks.release_all(1, outcome);
                }
                Ok::<_, Error>(read)
            });
            match outcome {
                Outcome::RolledBack => {
                    assert_eq!((value.unwrap(), reads), (Some(b"old".to_vec()), 2))
                }
                Outcome::Committed => {
                    assert_eq!((value.unwrap(), reads), (Some(b"new".to_vec()), 1))
                }
            }
        }
    }

    #[test]
    fn only_rollbacks_of_captured_keys_move_the_epoch() {
        let locks = patient();
        let epoch = locks.read_epoch(SPACE);
        let neighbour = locks.read_epoch(SPACE + 1);

        locks.lock_exclusive(1, SPACE, b"k").unwrap();
        locks.release_all(1, Outcome::RolledBack); // Pending: the tree never changed
        locks.lock_exclusive(2, SPACE, b"k").unwrap();
        locks.capture_before_image(2, SPACE, b"k", None);
        locks.release_all(2, Outcome::Committed);
        assert!(locks.read_is_stable(epoch));

        locks.lock_exclusive(3, SPACE, b"k").unwrap();
        locks.capture_before_image(3, SPACE, b"k", None);
        locks.release_all(3, Outcome::RolledBack);
        assert!(!locks.read_is_stable(epoch));
        assert!(locks.read_is_stable(neighbour));
    }

    /// A model tree for the tests below: its mutex plays the part of the page latch.
    type Tree = Mutex<BTreeMap<Vec<u8>, Vec<u8>>>;

    /// One transaction writing `key = value` by rules W1–W4 (`None` deletes).
    fn write(
        locks: &LockManager,
        tree: &Tree,
        txn: TxnId,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Acquired, WaitTimeout> {
        let acquired = locks.lock_exclusive(txn, SPACE, key)?;
        if acquired == Acquired::New {
            let before = tree.lock().get(key).cloned();
            locks.capture_before_image(txn, SPACE, key, before);
        }
        let mut tree = tree.lock();
        match value {
            Some(value) => tree.insert(key.to_vec(), value.to_vec()),
            None => tree.remove(key),
        };
        Ok(acquired)
    }

    /// Rule W5 for a rollback: restore, then release.
    fn roll_back(locks: &LockManager, tree: &Tree, txn: TxnId) {
        for held in locks.held_by(txn) {
            if let BeforeImage::Captured(before) = held.before {
                let mut tree = tree.lock();
                match before {
                    Some(value) => tree.insert(held.key, value),
                    None => tree.remove(&held.key),
                };
            }
        }
        locks.release_all(txn, Outcome::RolledBack);
    }

    /// A reader's scan of the whole space by rules R1–R4.
    fn scan(locks: &LockManager, tree: &Tree, reader: Option<TxnId>) -> BTreeMap<Vec<u8>, Vec<u8>> {
        loop {
            let epoch = locks.read_epoch(SPACE);
            let mut seen = tree.lock().clone();
            for (key, before) in
                locks.foreign_overrides(SPACE, Bound::Unbounded, Bound::Unbounded, reader)
            {
                match before {
                    Some(value) => seen.insert(key, value),
                    None => seen.remove(&key),
                };
            }
            if locks.read_is_stable(epoch) {
                return seen;
            }
        }
    }

    /// The grid of the module doc, step by step.
    #[test]
    fn the_worked_example_of_the_module_doc() {
        let locks = patient();
        let tree: Tree = Mutex::new(BTreeMap::new());
        tree.lock().insert(b"a".to_vec(), b"1".to_vec());
        tree.lock().insert(b"b".to_vec(), b"2".to_vec());
        let outside = |locks: &LockManager| {
            let seen = scan(locks, &tree, None);
            let show = |(k, v): (&Vec<u8>, &Vec<u8>)| {
                format!("{}={}", k[0] as char, String::from_utf8_lossy(v))
            };
            seen.iter().map(show).collect::<Vec<_>>().join(" ")
        };
        let a_for_t1 = |locks: &LockManager| {
            locks.read_committed(Some(1), SPACE, b"a", || {
                Ok::<_, Error>(tree.lock().get(&b"a"[..]).cloned())
            })
        };

        assert_eq!(
            write(&locks, &tree, 1, b"a", Some(b"10")),
            Ok(Acquired::New)
        ); // steps 1-3
        assert_eq!(outside(&locks), "a=1 b=2");
        assert_eq!(a_for_t1(&locks).unwrap(), Some(b"10".to_vec()));
        write(&locks, &tree, 2, b"b", None).unwrap(); // step 4
        assert_eq!(outside(&locks), "a=1 b=2");
        write(&locks, &tree, 2, b"c", Some(b"3")).unwrap(); // step 5
        assert_eq!(outside(&locks), "a=1 b=2");
        assert_eq!(
            *tree.lock(),
            BTreeMap::from([
                (b"a".to_vec(), b"10".to_vec()),
                (b"c".to_vec(), b"3".to_vec())
            ])
        );

        thread::scope(|scope| {
            let t1 = scope.spawn(|| write(&locks, &tree, 1, b"b", Some(b"20"))); // step 6
            wait_for_waiters(&locks, 1);
            assert_eq!(outside(&locks), "a=1 b=2");
            locks.release_all(2, Outcome::Committed); // step 7
            assert_eq!(t1.join().unwrap(), Ok(Acquired::New)); // step 8
        });
        assert_eq!(outside(&locks), "a=1 c=3");
        assert_eq!(
            locks.held_by(1),
            [
                Held {
                    space_id: SPACE,
                    key: b"a".to_vec(),
                    before: captured(b"1")
                },
                Held {
                    space_id: SPACE,
                    key: b"b".to_vec(),
                    before: BeforeImage::Captured(None)
                },
            ]
        );
        roll_back(&locks, &tree, 1); // step 9
        assert_eq!(outside(&locks), "a=1 c=3");
        assert_eq!(scan(&locks, &tree, None), *tree.lock());
        assert_eq!(locks.locked_keys(), 0);
    }

    #[test]
    fn a_deadlock_is_broken_by_the_timeout() {
        let locks = LockManager::new(Duration::from_millis(30));
        locks.lock_exclusive(1, SPACE, b"a").unwrap();
        locks.lock_exclusive(2, SPACE, b"b").unwrap();
        let outcomes: Vec<bool> = thread::scope(|scope| {
            let cross = [(1, &b"b"[..]), (2, &b"a"[..])].map(|(txn, key)| {
                let locks = &locks;
                scope.spawn(move || {
                    let acquired = locks.lock_exclusive(txn, SPACE, key);
                    // Either way the transaction ends, which frees the other.
                    locks.release_all(txn, Outcome::RolledBack);
                    acquired.is_ok()
                })
            });
            cross.map(|t| t.join().unwrap()).to_vec()
        });
        assert!(outcomes.contains(&false), "nobody timed out: {outcomes:?}");
        assert_eq!((locks.waiting(), locks.locked_keys()), (0, 0));
    }

    /// splitmix64: a small deterministic generator, so a failure can be replayed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        }
    }

    /// 8 writer threads run random transactions (1-5 keys of 50, random order, some keys
    /// twice) with a short timeout that breaks deadlocks; they commit or roll back at
    /// random. Two readers scan and read keys meanwhile. Checked: a shadow map of holders
    /// never shows two holders of one key; readers only ever see committed values; writers
    /// see their own writes; every transaction ends; nothing is left locked.
    #[test]
    fn random_transactions_keep_keys_exclusive_and_reads_committed() {
        const WRITERS: u64 = 8;
        const TXNS: u64 = 150;
        const KEYS: u64 = 50;
        let key = |i: u64| format!("key{i:02}").into_bytes();
        let locks = LockManager::new(Duration::from_millis(5));
        let tree: Tree = Mutex::new(
            (0..KEYS)
                .step_by(2)
                .map(|i| (key(i), 0u64.to_be_bytes().to_vec()))
                .collect(),
        );
        // Shadow of who holds each key, kept by the writers.
        let holders: Mutex<HashMap<Vec<u8>, TxnId>> = Mutex::default();
        // Txns that committed (0 = the initial data), recorded before their locks go.
        let committed: Mutex<HashSet<TxnId>> = Mutex::new(HashSet::from([0]));
        let writers_done = AtomicBool::new(false);
        let check_committed = |value: &[u8]| {
            let txn = u64::from_be_bytes(value.try_into().unwrap());
            assert!(
                committed.lock().contains(&txn),
                "read txn {txn}'s uncommitted value"
            );
        };

        let (done, finished) = mpsc::channel::<(u64, u64, u64)>();
        thread::scope(|scope| {
            for thread in 0..WRITERS {
                let (locks, tree, holders, committed, done) =
                    (&locks, &tree, &holders, &committed, done.clone());
                scope.spawn(move || {
                    let mut rng = Rng(thread);
                    let (mut commits, mut rollbacks, mut timeouts) = (0, 0, 0);
                    for i in 0..TXNS {
                        let txn = thread * 1_000 + i + 1;
                        let mut timed_out = false;
                        for _ in 0..=rng.below(5) {
                            let k = key(rng.below(KEYS));
                            let value = (rng.below(4) != 0).then(|| txn.to_be_bytes());
                            match write(locks, tree, txn, &k, value.as_ref().map(|v| &v[..])) {
                                Ok(acquired) => {
                                    let before = holders.lock().insert(k.clone(), txn);
                                    let expected =
                                        (acquired == Acquired::AlreadyHeld).then_some(txn);
                                    assert_eq!(before, expected, "two holders of one key");
                                    let own = locks.read_committed(Some(txn), SPACE, &k, || {
                                        Ok::<_, Error>(tree.lock().get(&k).cloned())
                                    });
                                    assert_eq!(
                                        own.unwrap(),
                                        value.map(|v| v.to_vec()),
                                        "own write"
                                    );
                                    // Hold the locks across a reschedule, so transactions
                                    // overlap even on a machine with few cores.
                                    thread::yield_now();
                                }
                                Err(timeout) => {
                                    assert_eq!(timeout.space_id, SPACE);
                                    timed_out = true;
                                    break;
                                }
                            }
                        }
                        let commit = !timed_out && rng.below(3) != 0;
                        {
                            let mut holders = holders.lock();
                            for held in locks.held_by(txn) {
                                assert_eq!(holders.remove(&held.key), Some(txn));
                            }
                        }
                        if commit {
                            committed.lock().insert(txn);
                            locks.release_all(txn, Outcome::Committed);
                            commits += 1;
                        } else {
                            roll_back(locks, tree, txn);
                            if timed_out {
                                timeouts += 1
                            } else {
                                rollbacks += 1
                            }
                        }
                    }
                    done.send((commits, rollbacks, timeouts)).unwrap();
                });
            }
            for reader in 0..2 {
                let (locks, tree, writers_done, check_committed) =
                    (&locks, &tree, &writers_done, &check_committed);
                scope.spawn(move || {
                    let mut rng = Rng(100 + reader);
                    // Bounded by the writers, which are bounded.
                    while !writers_done.load(SeqCst) {
                        for value in scan(locks, tree, None).values() {
                            check_committed(value);
                        }
                        let k = key(rng.below(KEYS));
                        let value = locks.read_committed(None, SPACE, &k, || {
                            Ok::<_, Error>(tree.lock().get(&k).cloned())
                        });
                        if let Some(value) = value.unwrap() {
                            check_committed(&value);
                        }
                    }
                });
            }
            drop(done);
            // A writer that panicked drops its sender, so this ends at once rather than
            // waiting out the hang guard; the readers stop before anything is asserted.
            let reports: Vec<_> = (0..WRITERS)
                .map(|_| finished.recv_timeout(Duration::from_secs(300)))
                .collect();
            writers_done.store(true, SeqCst);
            let mut ended = 0;
            for report in reports {
                let (commits, rollbacks, timeouts) = report.expect("a writer hung or panicked");
                ended += commits + rollbacks + timeouts;
            }
            assert_eq!(
                ended,
                WRITERS * TXNS,
                "every transaction commits, rolls back or times out"
            );
        });

        assert_eq!((locks.locked_keys(), locks.waiting()), (0, 0));
        assert!(holders.lock().is_empty());
        for value in tree.lock().values() {
            check_committed(value);
        }
    }
}
