//! The page cleaner: a background thread that writes dirty frames so that misses seldom
//! have to write a victim themselves.
//!
//! It follows the shape of STYLE.md §12: the [`BufferPool`](super::BufferPool) owns it
//! (through [`Cleaner`]), it wakes on a ticker or a signal, it stops when its stop channel
//! closes, and the pool joins it on `shutdown` and on drop.
//!
//! ```text
//!            every CLEAN_INTERVAL ─┐
//!   miss found a dirty victim ─────┼──▶ pass: write dirty, unpinned frames ──▶ wait again
//!   over half the frames dirty ────┘          │ write failed
//!                                             ▼
//!   stop channel closed ──▶ exit       pool poisoned (rule 9) ──▶ exit
//! ```
//!
//! A pass writes through `Core::write_back` like every other write, so the WAL rule and
//! the dirty-flag protocol (rules 5, 7, 8) hold for it too.

use super::pool::Core;
use crate::error::{Error, Result};
use crossbeam::channel::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long the cleaner sleeps between passes when nobody wakes it.
pub(super) const CLEAN_INTERVAL: Duration = Duration::from_millis(100);

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
    loop {
        crossbeam::select! {
            recv(stop) -> _ => return,
            recv(wake) -> _ => {}
            default(CLEAN_INTERVAL) => {}
        }
        if let Err(err) = core.clean_pass() {
            // Rule 9: every later caller sees this as `Error::Poisoned`. A write-back
            // failure has recorded itself already; the first message is kept.
            core.poison(err.to_string());
            return;
        }
    }
}
