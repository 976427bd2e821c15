//! The page cleaner: a background thread that writes dirty frames so that misses seldom
//! have to write a victim themselves.
//!
//! It follows the shape of STYLE.md §12: the [`BufferPool`](super::BufferPool) owns it
//! (through [`Cleaner`]), it wakes on a ticker or a signal, it stops when its stop channel
//! closes, and the pool joins it on `shutdown` and on drop.
//!
//! ```text
//!   tick (CLEAN_INTERVAL) and over the low-water mark ─┐
//!   tick (CLEAN_INTERVAL) and nothing dirtied since ───┤
//!   miss found a dirty victim ─────────────────────────┼──▶ pass: write dirty, unpinned
//!   over half the frames dirty ────────────────────────┘    frames ──▶ wait again
//!                                                            │ write failed
//!   stop channel closed ──▶ exit                             ▼
//!                                        pool poisoned (rule 9) ──▶ exit
//! ```
//!
//! A pass writes through `Core::write_batch` like every other write, so the WAL rule, the
//! dirty-flag protocol and, with a doublewrite attached, the doublewrite order (rules 5, 7,
//! 8, 11) hold for it too. It only tries latches and skips busy frames (rule 10).

use super::pool::Core;
use crate::error::{Error, Result};
use crossbeam::channel::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long the cleaner sleeps between passes when nobody wakes it.
pub(super) const CLEAN_INTERVAL: Duration = Duration::from_millis(1000);

/// On a timer tick the cleaner writes only when more than this share of the frames is
/// dirty (InnoDB's `innodb_max_dirty_pages_pct_lwm` idea), or when the pool went idle.
/// Writing every dirty page on every tick would re-encrypt a hot page many times a second
/// for nothing: one write of its final state is enough.
const DIRTY_LOW_WATER_PERCENT: usize = 10;

/// The running cleaner thread, as owned by the pool.
pub(super) struct Cleaner {
    /// Dropping this sender closes the channel: that is the stop signal.
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Cleaner {
    pub(super) fn start(core: Arc<Core>) -> Result<Cleaner> {
        let (stop, stopped) = channel::bounded(0);
        let wake = core.wake_receiver();
        let thread = thread::Builder::new()
            .name("strongbox-page-cleaner".into())
            .spawn(move || run(&core, &wake, &stopped))
            .map_err(|err| Error::io("spawn the page cleaner thread", "", err))?;
        Ok(Cleaner { stop, thread })
    }

    /// Stops the thread and waits for it. If it panicked, the pool is poisoned.
    pub(super) fn stop(self, core: &Core) {
        drop(self.stop);
        if self.thread.join().is_err() {
            core.poison("the page cleaner thread panicked".into());
        }
    }
}

fn run(core: &Core, wake: &Receiver<()>, stop: &Receiver<()>) {
    let mut dirtied_at_last_tick = core.dirtied();
    loop {
        let woken = crossbeam::select! {
            recv(stop) -> _ => return,
            recv(wake) -> _ => true,
            default(CLEAN_INTERVAL) => false,
        };
        let dirtied = core.dirtied();
        let idle = dirtied == dirtied_at_last_tick;
        dirtied_at_last_tick = dirtied;
        let over_low_water =
            core.dirty_pages() * 100 > core.frame_count() * DIRTY_LOW_WATER_PERCENT;
        if !(woken || idle || over_low_water) {
            continue;
        }
        if let Err(err) = core.clean_pass() {
            // Rule 9: every later caller sees this as `Error::Poisoned`. A write-back
            // failure has recorded itself already; the first message is kept.
            core.poison(err.to_string());
            return;
        }
    }
}
