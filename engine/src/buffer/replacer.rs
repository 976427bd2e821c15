//! Which frame to evict: the [`Replacer`] seam and its CLOCK implementation.
//!
//! The policy is separate from the pool (as in bustub) so it can be read, tested and
//! swapped alone. A replacer only *proposes* victims; the pool decides whether a proposal
//! can really be claimed (rule 2) and asks again when it cannot.
//!
//! # CLOCK with usage counters
//!
//! Each frame has a usage counter from 0 to [`MAX_USAGE`]. A page starts at 0 when it is
//! loaded, and each later hit adds 1. A hand sweeps the frames in a circle; at each
//! evictable frame it either takes one off the counter or, at 0, proposes the frame.
//!
//! ```text
//!   frame   0   1   2   3   4   5        hand at 2, frames 0..=5 evictable
//!   usage   3   0   2   0   1   0
//!                   ^ 2→1, move on
//!                       ^ 0: propose frame 3
//! ```
//!
//! This resists scans. A page read once by a big scan never gets past 0 and goes at the
//! hand's next visit; a page hit three times survives three more sweeps. Under plain LRU
//! the same scan would push the whole hot set out.

use super::frame::FrameId;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};

/// Chooses eviction victims. Calls come from many threads at once.
pub(crate) trait Replacer: Send + Sync {
    /// A page was just loaded into `frame`.
    fn record_load(&self, frame: FrameId);
    /// `frame` was hit. Runs on every hit, so it must not take a lock shared by all frames.
    fn record_hit(&self, frame: FrameId);
    /// `frame` holds no page any more; forget its history.
    fn remove(&self, frame: FrameId);
    /// Proposes a frame to evict among those `evictable` accepts, or `None` when a bounded
    /// search found none (every frame pinned, or hit again as fast as it was passed).
    fn victim(&self, evictable: &dyn Fn(FrameId) -> bool) -> Option<FrameId>;
}

/// The largest usage count: a frame hit this often survives this many sweeps unhit.
pub(crate) const MAX_USAGE: u8 = 3;

/// CLOCK with a small usage counter per frame. Lock-free: counters and hand are atomics,
/// and their races only blur the history a little (a lost increment, an extra decrement).
pub(crate) struct ClockReplacer {
    /// One usage counter per frame, `0..=MAX_USAGE`.
    usage: Box<[AtomicU8]>,
    /// The next frame the hand looks at, modulo the number of frames.
    hand: AtomicUsize,
}

impl ClockReplacer {
    pub(crate) fn new(frames: usize) -> ClockReplacer {
        assert!(frames > 0, "a replacer needs frames");
        ClockReplacer {
            usage: (0..frames).map(|_| AtomicU8::new(0)).collect(),
            hand: AtomicUsize::new(0),
        }
    }
}

impl Replacer for ClockReplacer {
    fn record_load(&self, frame: FrameId) {
        self.usage[frame].store(0, Relaxed);
    }

    fn record_hit(&self, frame: FrameId) {
        let usage = self.usage[frame].load(Relaxed);
        if usage < MAX_USAGE {
            // Losing this race to another hit or to the hand is harmless.
            let _ = self.usage[frame].compare_exchange(usage, usage + 1, Relaxed, Relaxed);
        }
    }

    fn remove(&self, frame: FrameId) {
        self.usage[frame].store(0, Relaxed);
    }

    fn victim(&self, evictable: &dyn Fn(FrameId) -> bool) -> Option<FrameId> {
        let frames = self.usage.len();
        // Enough steps to take every counter from MAX_USAGE to 0 and come back once more.
        for _ in 0..frames * (usize::from(MAX_USAGE) + 1) {
            let frame = self.hand.fetch_add(1, Relaxed) % frames;
            if !evictable(frame) {
                continue;
            }
            let was = self.usage[frame]
                .fetch_update(Relaxed, Relaxed, |u| u.checked_sub(1))
                .unwrap_or(0);
            if was == 0 {
                return Some(frame);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposes_frames_at_zero_and_decrements_the_rest() {
        let clock = ClockReplacer::new(4);
        for f in 0..4 {
            clock.record_load(f);
        }
        clock.record_hit(0);
        clock.record_hit(2);
        clock.record_hit(2);
        let all = |_: FrameId| true;
        assert_eq!(clock.victim(&all), Some(1)); // 0: 1→0, 1: proposed
        assert_eq!(clock.victim(&all), Some(3)); // 2: 2→1, 3: proposed
        assert_eq!(clock.victim(&all), Some(0)); // 0 is at 0 now
        assert_eq!(clock.victim(&all), Some(1)); // 1 still at 0 (never reloaded)
        assert_eq!(clock.victim(&all), Some(3)); // 2: 1→0, 3: proposed
        assert_eq!(clock.victim(&all), Some(0));
        // 2 was passed twice (2→1→0) and is proposed at its third visit.
        assert_eq!(clock.victim(&|f| f == 2), Some(2));
    }

    #[test]
    fn usage_saturates() {
        let clock = ClockReplacer::new(2);
        for _ in 0..10 {
            clock.record_hit(0);
        }
        assert_eq!(clock.usage[0].load(Relaxed), MAX_USAGE);
        // MAX_USAGE decrements, then proposed.
        let only_0 = |f: FrameId| f == 0;
        assert_eq!(clock.victim(&only_0), Some(0));
        assert_eq!(clock.usage[0].load(Relaxed), 0);
    }

    #[test]
    fn skips_frames_that_are_not_evictable() {
        let clock = ClockReplacer::new(8);
        assert_eq!(clock.victim(&|f| f == 5), Some(5));
        assert_eq!(clock.victim(&|_| false), None);
    }

    #[test]
    fn remove_forgets_history() {
        let clock = ClockReplacer::new(2);
        clock.record_hit(1);
        clock.record_hit(1);
        clock.remove(1);
        assert_eq!(clock.victim(&|f| f == 1), Some(1));
        assert_eq!(clock.usage[1].load(Relaxed), 0);
    }
}
