//! `encryption_rotation_iops`: a pacing clock shared by every re-encryption thread.
//!
//! Each page IO a pass makes takes the next slot of a schedule spaced `1 / iops` apart and
//! sleeps until it; the threads together therefore never exceed `iops` IOs in any second
//! (after the first), however many there are. A thread sleeps only when it has work,
//! so an idle database pays nothing. `iops = 0` switches pacing off.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Throttle {
    /// Time between two IOs; `None` = unthrottled.
    spacing: Option<Duration>,
    /// Guards the next free slot of the schedule.
    next: Mutex<Instant>,
}

impl Throttle {
    pub(crate) fn new(iops: u32) -> Throttle {
        Throttle {
            spacing: (iops > 0).then(|| Duration::from_secs(1) / iops),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for the next IO slot.
    pub(crate) fn acquire(&self) {
        let Some(spacing) = self.spacing else { return };
        let wait = {
            let mut next = self.next.lock();
            let now = Instant::now();
            // An idle stretch does not bank credit: the schedule restarts at `now`.
            let slot = (*next).max(now);
            *next = slot + spacing;
            slot - now
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}
