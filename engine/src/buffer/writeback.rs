//! How frames get back to disk: eviction of a dirty victim, the page cleaner's pass and
//! `flush_all`'s pass all end in `Core::write_back`, the one place a page is written
//! (rule 7), which is also where the WAL rule will be enforced (rule 8).
//!
//! The rules are in the [module doc](super). The ones this file keeps:
//!
//! * a victim is claimed only under its shard lock, unpinned and clean (rules 2, 6);
//! * the dirty flag is cleared under the latch before the write and set again if it fails
//!   (rule 5);
//! * a failed write poisons the pool (rule 9).

use super::frame::{Frame, FrameId, Pin};
use super::pool::Core;
use crate::error::Result;
use crate::page::PageId;
use std::sync::atomic::Ordering::Relaxed;

/// Victims a miss tries before it waits; claims fail only when racing with other threads.
const MAX_PROPOSALS: usize = 32;

/// The outcome of trying to take a victim from the page table.
enum Claim {
    /// The frame is unmapped and ours.
    Claimed,
    /// The frame is dirty; here is a pin so it can be written first (rule 6).
    Dirty(Pin),
    /// Pinned, remapped or gone meanwhile.
    Busy,
}

/// Whether a write-back waits for the frame's latch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Yes,
    No,
}

/// The outcome of `Core::write_back`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteBack {
    Written,
    Clean,
    /// `Wait::No` and the latch was taken.
    Busy,
}

/// Which frames a write pass visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// Every mapped frame, waiting for latches: `flush_all`.
    Checkpoint,
    /// Dirty frames nobody has pinned, skipping busy latches: the page cleaner.
    Cleaner,
}

impl Core {
    /// Asks the replacer for victims until one can be claimed. Writes a dirty victim back
    /// first (rule 6). Only *tries* latches: the caller may hold latches of its own.
    pub(super) fn evict(&self) -> Result<Option<FrameId>> {
        let evictable = |f: FrameId| self.frames[f].pin_count() == 0;
        for _ in 0..MAX_PROPOSALS {
            let Some(f) = self.replacer.victim(&evictable) else {
                return Ok(None);
            };
            let frame = &self.frames[f];
            if frame.try_claim_orphan() {
                self.take_dirty(frame);
                return Ok(Some(f));
            }
            // No page: free, or owned by another thread right now.
            let Some(id) = frame.page() else { continue };
            match self.try_claim(f, id) {
                Claim::Claimed => return Ok(Some(f)),
                Claim::Busy => {}
                Claim::Dirty(pin) => {
                    // The cleaner is behind, or this would not be needed.
                    self.wake_cleaner();
                    let outcome = self.write_back(pin.frame(), id, Wait::No)?;
                    drop(pin);
                    if outcome != WriteBack::Busy && matches!(self.try_claim(f, id), Claim::Claimed)
                    {
                        return Ok(Some(f));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Takes frame `f` out of the page table if it still holds `id`, is unpinned and clean
    /// (rules 2 and 6).
    fn try_claim(&self, f: FrameId, id: PageId) -> Claim {
        let frame = &self.frames[f];
        let mut shard = self.table.lock(id);
        if shard.map.get(&id) != Some(&f) || frame.pin_count() != 0 {
            return Claim::Busy;
        }
        if frame.is_dirty() {
            return Claim::Dirty(frame.pin());
        }
        shard.map.remove(&id);
        drop(shard);
        frame.set_page(None);
        self.counters.evictions.fetch_add(1, Relaxed);
        Claim::Claimed
    }

    /// Writes `frame`, which holds page `id` and which the caller has pinned, if it is
    /// dirty. Every page write goes through here (rule 7).
    fn write_back(&self, frame: &Frame, id: PageId, wait: Wait) -> Result<WriteBack> {
        let latch = match wait {
            Wait::Yes => frame.latch.upgradable_read(),
            Wait::No => match frame.latch.try_upgradable_read() {
                Some(latch) => latch,
                None => return Ok(WriteBack::Busy),
            },
        };
        // An orphan was discarded while we waited: its space is gone, so write nothing.
        if frame.is_orphaned() || !self.take_dirty(frame) {
            return Ok(WriteBack::Clean);
        }
        // Rule 8, the WAL rule, belongs exactly here once the redo log exists: before the
        // page may reach disk, make the log durable up to the page's LSN, e.g.
        // `self.wal.flush_to(page_lsn(&latch))?` (re-dirtying the frame if that fails).
        if let Err(err) = self.io.write_page(id, &latch) {
            self.mark_dirty(frame); // rule 5: the change still exists only here
            self.poison(err.to_string()); // rule 9
            return Err(err);
        }
        self.counters.pages_written.fetch_add(1, Relaxed);
        Ok(WriteBack::Written)
    }

    /// Writes the frames `pass` selects, shard by shard, pinning one frame at a time.
    /// Returns how many it wrote.
    pub(super) fn write_pass(&self, pass: Pass) -> Result<u64> {
        let (wanted, wait): (fn(&Frame) -> bool, Wait) = match pass {
            // Clean frames too: one may be mid-write by someone else (rule 7).
            Pass::Checkpoint => (|_| true, Wait::Yes),
            Pass::Cleaner => (|frame| frame.is_dirty() && frame.pin_count() == 0, Wait::No),
        };
        let mut candidates = Vec::new();
        let mut written = 0;
        for shard in self.table.shards() {
            candidates.extend(
                shard
                    .lock()
                    .map
                    .iter()
                    .filter(|&(_, &f)| wanted(&self.frames[f]))
                    .map(|(&id, &f)| (id, f)),
            );
            for (id, f) in candidates.drain(..) {
                let Some(pin) = self.pin_if_mapped(f, id, wanted) else {
                    continue; // evicted or changed since the shard was read
                };
                if self.write_back(pin.frame(), id, wait)? == WriteBack::Written {
                    written += 1;
                }
            }
        }
        Ok(written)
    }

    /// Pins frame `f` if it still holds `id` and `wanted` accepts it (rule 2).
    fn pin_if_mapped(&self, f: FrameId, id: PageId, wanted: fn(&Frame) -> bool) -> Option<Pin> {
        let shard = self.table.lock(id);
        let frame = &self.frames[f];
        (shard.map.get(&id) == Some(&f) && wanted(frame)).then(|| frame.pin())
    }

    /// One pass of the page cleaner: writes dirty frames nobody has pinned.
    pub(super) fn clean_pass(&self) -> Result<()> {
        self.check_poison()?;
        let written = self.write_pass(Pass::Cleaner)?;
        self.counters.cleaner_flushes.fetch_add(written, Relaxed);
        Ok(())
    }

    /// Sets `frame` dirty and counts it; wakes the cleaner when over half the pool is.
    pub(super) fn mark_dirty(&self, frame: &Frame) {
        if frame.set_dirty() {
            self.counters.dirtied.fetch_add(1, Relaxed);
            let dirty = self.counters.dirty_pages.fetch_add(1, Relaxed) + 1;
            if dirty > (self.frames.len() / 2) as isize {
                self.wake_cleaner();
            }
        }
    }

    /// Clears `frame`'s dirty flag and uncounts it; true if it was dirty.
    pub(super) fn take_dirty(&self, frame: &Frame) -> bool {
        let was_dirty = frame.take_dirty();
        if was_dirty {
            self.counters.dirty_pages.fetch_sub(1, Relaxed);
        }
        was_dirty
    }

    /// Clean-to-dirty transitions so far.
    pub(super) fn dirtied(&self) -> u64 {
        self.counters.dirtied.load(Relaxed)
    }

    /// Frames dirty now (never negative).
    pub(super) fn dirty_pages(&self) -> usize {
        usize::try_from(self.counters.dirty_pages.load(Relaxed)).unwrap_or(0)
    }

    /// Frames in the pool.
    pub(super) fn frame_count(&self) -> usize {
        self.frames.len()
    }

    pub(super) fn wake_cleaner(&self) {
        // Full means a wake-up is already pending, which is all this asks for.
        let _ = self.wake.0.try_send(());
    }
}
