//! Key rotation and encryption changes of tablespaces while the database runs: MariaDB's
//! encryption threads (background re-encryption, `encryption_rotate_key_age`,
//! `encryption_rotation_iops`), online ALTER of a table's encryption, and MySQL's
//! master-key rewrap. `docs/rotation.md` is the guide.
//!
//! | file          | owns                                                                 |
//! |---------------|----------------------------------------------------------------------|
//! | `plan.rs`     | the rules: what a space's encryption record becomes (pure functions) |
//! | `pass.rs`     | one re-encryption pass over one space: batches, progress, finish     |
//! | `throttle.rs` | `encryption_rotation_iops`, shared by all threads                    |
//! | `mod.rs`      | [`Rotator`]: the threads, who works on which space, waiting for them |
//! | `api.rs`      | `Db::rotate_key`, `alter_table`, `reload_keys`, `wait_for_encryption`, `encryption_status`; the decisions at open |
//! | `status.rs`   | [`EncryptionStatus`]: `INNODB_TABLESPACES_ENCRYPTION`'s columns      |
//!
//! ## Threads
//!
//! `encryption_threads` workers share one queue: the tablespaces whose page 0 says a pass
//! is running (`RotationState::ACTIVE`), which is also how work survives a restart. A
//! worker takes a space nobody else is working on, runs its pass to the end, and looks
//! again. With nothing to do it blocks on a condition variable with no timeout: it wakes
//! only when [`Rotator::notify`] says there may be work (a rotation, an ALTER, an open that
//! found a pass to resume) or at shutdown. No polling loop burns CPU (MDEV-34358, PS-5666).
//!
//! A space can be *held* ([`Rotator::hold`]): the worker on it stops after its current
//! batch and none starts; dropping a table or exporting one holds it first.

pub(crate) mod api;
mod pass;
pub(crate) mod plan;
mod status;
mod throttle;

use crate::buffer::BufferPool;
use crate::error::{Error, Result};
use crate::space::header::EncryptionRecord;
use crate::space::{SpaceFile, SpaceSet};
pub use api::{RotationPolicy, RotationReport};
use parking_lot::{Condvar, Mutex};
use plan::{Trigger, Want};
pub use status::{EncryptionStatus, COLUMNS as STATUS_COLUMNS};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use strongbox_keyring::provider::KeyProvider;
use throttle::Throttle;

/// How far the passes a waiter waits for have come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Pages already moved, over the spaces still rotating.
    pub pages_done: u64,
    /// Pages of the spaces still rotating.
    pub pages_total: u64,
    /// Spaces still rotating.
    pub spaces: usize,
}

/// The re-encryption threads and their bookkeeping.
#[derive(Debug)]
pub(crate) struct Rotator {
    spaces: Arc<SpaceSet>,
    pool: Arc<BufferPool>,
    throttle: Throttle,
    thread_count: usize,
    state: Mutex<State>,
    /// Workers wait here for work.
    work: Condvar,
    /// Waiters wait here for a pass to end.
    progress: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
    counters: Arc<RotationCounters>,
    /// For planning a space again when its pass finishes (`None` without a keyring).
    keyring: Option<Arc<dyn KeyProvider>>,
    /// Guards what each space was last asked to become (by `rotate_key`, `alter_table`,
    /// the decisions at open) and why. A request that found all four generation slots
    /// used while a pass ran (rule 4 of `plan.rs`) is planned again from here when that
    /// pass finishes, in the same page-0 write; otherwise nothing would ask again.
    wanted: Mutex<HashMap<u32, (Want, Trigger)>>,
}

/// What the encryption threads did, for `Db::stats`.
#[derive(Debug, Default)]
pub(crate) struct RotationCounters {
    /// Times a worker woke from its wait for work. With nothing to do it stays put: a
    /// polling loop would show here.
    pub(crate) wakeups: AtomicU64,
    /// Pages a pass marked for rewriting (the rest already carried the target).
    pub(crate) pages_rewritten: AtomicU64,
}

/// Guarded by `Rotator::state`.
#[derive(Debug, Default)]
struct State {
    stop: bool,
    /// Spaces a worker (or a waiter) is running a pass on.
    busy: HashSet<u32>,
    /// Spaces nobody may work on, with how many holds each has.
    held: HashMap<u32, usize>,
    /// Spaces whose last pass failed, with the error; retried after the next `notify`.
    failed: HashMap<u32, String>,
}

impl Rotator {
    pub(crate) fn new(
        spaces: Arc<SpaceSet>,
        pool: Arc<BufferPool>,
        thread_count: usize,
        iops: u32,
        keyring: Option<Arc<dyn KeyProvider>>,
    ) -> Rotator {
        Rotator {
            spaces,
            pool,
            throttle: Throttle::new(iops),
            thread_count,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            counters: Arc::default(),
            keyring,
            wanted: Mutex::new(HashMap::new()),
        }
    }

    /// Records what `space_id` was just asked to become, for the plan after its pass. An
    /// operator's request for the same state is not weakened to the age rule by a later
    /// background check (`reload_keys`, open): it stays until a pass has met it.
    pub(crate) fn want(&self, space_id: u32, want: Want, trigger: Trigger) {
        let mut wanted = self.wanted.lock();
        if let Some(&(stored, Trigger::Requested)) = wanted.get(&space_id) {
            if stored == want && trigger != Trigger::Requested {
                return;
            }
        }
        wanted.insert(space_id, (want, trigger));
    }

    pub(crate) fn counters(&self) -> &RotationCounters {
        &self.counters
    }

    /// Starts the worker threads.
    pub(crate) fn start(self: &Arc<Self>) -> Result<()> {
        let mut threads = self.threads.lock();
        for n in 0..self.thread_count {
            let rotator = Arc::clone(self);
            let handle = std::thread::Builder::new()
                .name(format!("sb-encrypt-{n}"))
                .spawn(move || rotator.worker())
                .map_err(|e| Error::io("start encryption thread", "(thread)", e))?;
            threads.push(handle);
        }
        Ok(())
    }

    /// There may be new work: wakes every idle worker and forgets earlier failures.
    pub(crate) fn notify(&self) {
        let mut state = self.state.lock();
        state.failed.clear();
        self.work.notify_all();
    }

    /// Stops the workers after their current batch and joins them.
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.work.notify_all();
        self.progress.notify_all();
        for handle in self.threads.lock().drain(..) {
            let _ = handle.join();
        }
    }

    /// Keeps every pass off `space_id` until the returned guard drops; returns once no
    /// pass is running on it.
    pub(crate) fn hold(&self, space_id: u32) -> Hold<'_> {
        let mut state = self.state.lock();
        *state.held.entry(space_id).or_default() += 1;
        while state.busy.contains(&space_id) {
            self.progress.wait(&mut state);
        }
        Hold {
            rotator: self,
            space_id,
        }
    }

    fn worker(&self) {
        let mut state = self.state.lock();
        loop {
            if state.stop {
                return;
            }
            match self.next_space(&state) {
                Some(space) => {
                    // Claimed under the lock: two woken workers never run one space's pass.
                    state.busy.insert(space.id());
                    drop(state);
                    self.run_pass(&space);
                    state = self.state.lock();
                }
                None => {
                    self.work.wait(&mut state);
                    self.counters.wakeups.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// A space with a pass to run that nobody works on, holds or saw fail.
    fn next_space(&self, state: &State) -> Option<Arc<SpaceFile>> {
        self.spaces.all().into_iter().find(|space| {
            let id = space.id();
            is_rotating(space)
                && !state.busy.contains(&id)
                && !state.held.contains_key(&id)
                && !state.failed.contains_key(&id)
        })
    }

    /// Runs `space`'s pass in this thread; the caller has marked it busy (under the same
    /// lock in which it chose it), and this unmarks it.
    fn run_pass(&self, space: &SpaceFile) {
        let id = space.id();
        let stopped = || {
            let state = self.state.lock();
            state.stop || state.held.contains_key(&id)
        };
        let replan = |done: Option<&EncryptionRecord>| {
            let wanted = self.wanted.lock().get(&id).copied();
            match wanted {
                Some((want, trigger)) => {
                    let again = plan::plan(done, want, trigger, self.keyring.as_deref());
                    if trigger == Trigger::Requested && matches!(again, Ok(None)) {
                        // Met. Keep the state but not the urgency (`Age(0)`: no age rule), so
                        // the next background check may set its own rule for this space.
                        let mut wanted = self.wanted.lock();
                        if wanted.get(&id) == Some(&(want, trigger)) {
                            wanted.insert(id, (want, Trigger::Age(0)));
                        }
                    }
                    again
                }
                None => Ok(None),
            }
        };
        let outcome = pass::run(
            space,
            &self.pool,
            &self.throttle,
            &stopped,
            &replan,
            &self.counters.pages_rewritten,
        );
        let mut state = self.state.lock();
        state.busy.remove(&id);
        if let Err(error) = outcome {
            state.failed.insert(id, error.to_string());
        }
        self.progress.notify_all();
    }

    /// Waits until no space that `wanted` selects has a pass running, reporting progress
    /// about four times a second. With no worker threads the passes run here, in the
    /// caller's thread. Fails if a pass failed (naming the space and the cause) or the
    /// database is closing.
    pub(crate) fn wait(
        &self,
        wanted: &dyn Fn(u32) -> bool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        loop {
            let pending: Vec<Arc<SpaceFile>> = self
                .spaces
                .all()
                .into_iter()
                .filter(|space| wanted(space.id()) && is_rotating(space))
                .collect();
            on_progress(progress_of(&pending));
            if pending.is_empty() {
                return Ok(());
            }
            let mut state = self.state.lock();
            if let Some((space, problem)) = pending
                .iter()
                .find_map(|space| Some((space, state.failed.get(&space.id())?)))
            {
                return Err(Error::RotationFailed {
                    path: space.path().to_path_buf(),
                    problem: problem.clone(),
                });
            }
            if state.stop {
                return Err(Error::Poisoned("the database is closing".into()));
            }
            if self.thread_count == 0 {
                let free = pending
                    .iter()
                    .find(|s| !state.busy.contains(&s.id()) && !state.held.contains_key(&s.id()));
                if let Some(space) = free {
                    state.busy.insert(space.id());
                    drop(state);
                    self.run_pass(space);
                    continue;
                }
            }
            self.progress
                .wait_for(&mut state, Duration::from_millis(250));
        }
    }
}

/// Keeps passes off a space while alive (see [`Rotator::hold`]).
#[derive(Debug)]
pub(crate) struct Hold<'a> {
    rotator: &'a Rotator,
    space_id: u32,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut state = self.rotator.state.lock();
        if let Some(count) = state.held.get_mut(&self.space_id) {
            *count -= 1;
            if *count == 0 {
                state.held.remove(&self.space_id);
            }
        }
        self.rotator.work.notify_all();
    }
}

/// True while page 0 of `space` says a pass is running.
pub(crate) fn is_rotating(space: &SpaceFile) -> bool {
    space
        .header()
        .encryption
        .is_some_and(|record| record.rotation.is_active())
}

fn progress_of(pending: &[Arc<SpaceFile>]) -> Progress {
    let mut progress = Progress {
        spaces: pending.len(),
        ..Progress::default()
    };
    for space in pending {
        let header = space.header();
        let total = u64::from(header.page_count.saturating_sub(1));
        let next = header
            .encryption
            .map_or(1, |record| record.rotation.next_page.max(1));
        progress.pages_total += total;
        progress.pages_done += u64::from(next - 1).min(total);
    }
    progress
}
