//! How frames get back to disk. Eviction of a dirty victim, the page cleaner's pass and
//! `flush_all`'s pass all *take* dirty frames into a batch and end in `Core::write_batch`,
//! the one place pages are written (rule 7).
//!
//! The rules are in the [module doc](super). The ones this file keeps:
//!
//! * a victim is claimed only under its shard lock, unpinned and clean (rules 2, 6);
//! * the dirty flag is cleared under the latch before the page is encoded and set again
//!   if the write fails (rule 5);
//! * a taken frame stays pinned and latched upgradable until its home write is done
//!   (rule 7), and nobody waits for a latch while holding a batch (rule 10);
//! * a failed write poisons the pool (rule 9).
//!
//! # One batch
//!
//! Without a doublewrite a batch holds one page, written home unsynced; `flush_all` syncs
//! every space at its end. With one
//! ([`BufferPool::attach_doublewrite`](super::BufferPool::attach_doublewrite)) a batch
//! holds up to [`Doublewrite::slots`] pages (and at most half the frames, so misses still
//! find victims), and goes:
//!
//! ```text
//!   take each frame: pin, try the upgradable latch, clear dirty       rules 5, 7, 10
//!   PageIo::encode_page each      WAL rule, checksum, encrypt         rule 8
//!   Doublewrite::write_batch:
//!     1, 2  slots written, doublewrite.dbw synced                     R1
//!     3     write_home: PageIo::write_stored each page
//!     4     write_home: PageIo::sync_space each space written         R2
//!   release the latches and pins; on failure first set dirty again   rules 5, 9
//! ```
//!
//! An eviction writes its one dirty victim as a batch of one. The cleaner's pass skips
//! frames whose latch is busy; `flush_all`'s pass writes its batch out first and then waits
//! for the latch (rule 10).

use super::frame::{Frame, FrameId, Pin};
use super::pool::Core;
use crate::doublewrite::{Doublewrite, StoredPage};
use crate::error::Result;
use crate::page::PageId;
use parking_lot::{ArcRwLockUpgradableReadGuard, RawRwLock};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;

/// Victims a miss tries before it waits; claims fail only when racing with other threads.
const MAX_PROPOSALS: usize = 32;

/// A frame's latch in upgradable-read mode, owning an `Arc` of the lock so that a batch can
/// hold several.
type WriteBackLatch = ArcRwLockUpgradableReadGuard<RawRwLock, Box<[u8]>>;

/// The outcome of trying to take a victim from the page table.
enum Claim {
    /// The frame is unmapped and ours.
    Claimed,
    /// The frame is dirty; here is a pin so it can be written first (rule 6).
    Dirty(Pin),
    /// Pinned, remapped or gone meanwhile.
    Busy,
}

/// Whether taking a frame waits for its latch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Yes,
    No,
}

/// A dirty frame on its way to disk: pinned, latched upgradable, its dirty flag cleared.
/// Until it is dropped, writers of the page wait and nobody else writes or evicts it.
struct Taken {
    id: PageId,
    // Field order matters: the latch is released before the pin.
    latch: WriteBackLatch,
    pin: Pin,
}

/// The outcome of `Core::take`.
enum Take {
    Taken(Taken),
    /// Not dirty (written by someone else meanwhile), or orphaned: nothing to write.
    Clean,
    /// `Wait::No` and the latch was held; the pin is handed back.
    Busy(Pin),
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
    /// first, as a batch of one (rule 6). Only *tries* latches: the caller may hold latches
    /// of its own.
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
                    let written = match self.take(pin, id, Wait::No) {
                        Take::Taken(taken) => {
                            self.write_batch(&mut vec![taken])?;
                            true
                        }
                        Take::Clean => true,
                        Take::Busy(_) => false,
                    };
                    // The batch (and with it the pin) is gone by now.
                    if written && matches!(self.try_claim(f, id), Claim::Claimed) {
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

    /// Latches the frame `pin` holds, which holds page `id`, in upgradable-read mode and
    /// takes its dirty flag (rules 5, 7).
    fn take(&self, pin: Pin, id: PageId, wait: Wait) -> Take {
        let latch = match wait {
            Wait::Yes => pin.frame().latch.upgradable_read_arc(),
            Wait::No => match pin.frame().latch.try_upgradable_read_arc() {
                Some(latch) => latch,
                None => return Take::Busy(pin),
            },
        };
        // An orphan was discarded while we waited: its space is gone, so write nothing.
        if pin.frame().is_orphaned() || !self.take_dirty(pin.frame()) {
            return Take::Clean;
        }
        Take::Taken(Taken { id, latch, pin })
    }

    /// Writes the frames of `batch` and empties it, releasing their latches and pins; the
    /// one place pages are written (rule 7). Returns how many it wrote. On failure every
    /// frame of the batch is dirty again (rule 5) and the pool is poisoned (rule 9).
    fn write_batch(&self, batch: &mut Vec<Taken>) -> Result<u64> {
        if batch.is_empty() {
            return Ok(0);
        }
        let written = match self.doublewrite.get() {
            None => batch
                .iter()
                .try_for_each(|taken| self.io.write_page(taken.id, &taken.latch)),
            Some(dw) => self.write_through(dw, batch),
        };
        if let Err(err) = written {
            for taken in batch.drain(..) {
                self.mark_dirty(taken.pin.frame()); // the change still exists only here
            }
            self.poison(err.to_string());
            return Err(err);
        }
        let count = batch.len() as u64;
        self.counters.pages_written.fetch_add(count, Relaxed);
        batch.clear();
        Ok(count)
    }

    /// Encodes the batch (the WAL rule runs in `encode_page`) and sends it through the
    /// doublewrite, which calls back for the home writes (rule 11).
    fn write_through(&self, dw: &Doublewrite, batch: &[Taken]) -> Result<()> {
        let stored = batch
            .iter()
            .map(|taken| self.io.encode_page(taken.id, &taken.latch))
            .collect::<Result<Vec<_>>>()?;
        let pages: Vec<StoredPage<'_>> = batch
            .iter()
            .zip(&stored)
            .map(|(taken, stored)| (taken.id, &stored[..]))
            .collect();
        dw.write_batch(&pages, &mut |home| self.write_home(home))
    }

    /// Steps 3 and 4 of the doublewrite protocol: every image home, then a sync of every
    /// space written, before returning `Ok`.
    fn write_home(&self, pages: &[StoredPage<'_>]) -> Result<()> {
        let mut spaces = BTreeSet::new();
        for &(id, stored) in pages {
            self.io.write_stored(id, stored)?;
            spaces.insert(id.space_id);
        }
        spaces
            .into_iter()
            .try_for_each(|space_id| self.io.sync_space(space_id))
    }

    /// How many frames a pass takes before it writes them: one without a doublewrite, else
    /// up to the slot count, but never more than half the frames.
    fn batch_capacity(&self) -> usize {
        match self.doublewrite.get() {
            None => 1,
            Some(dw) => (dw.slots() as usize).min(self.frames.len() / 2).max(1),
        }
    }

    /// Writes the frames `pass` selects, shard by shard, in batches. Returns how many it
    /// wrote.
    pub(super) fn write_pass(&self, pass: Pass) -> Result<u64> {
        let wanted: fn(&Frame) -> bool = match pass {
            // Clean frames too: one may be mid-write by someone else (rule 7).
            Pass::Checkpoint => |_| true,
            Pass::Cleaner => |frame| frame.is_dirty() && frame.pin_count() == 0,
        };
        let capacity = self.batch_capacity();
        let mut batch = Vec::with_capacity(capacity);
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
                let wait = pass == Pass::Checkpoint;
                written += self.add_to_batch(pin, id, wait, &mut batch, capacity)?;
            }
        }
        written += self.write_batch(&mut batch)?;
        Ok(written)
    }

    /// Writes the listed pages that are dirty, in batches, waiting for latches like a
    /// checkpoint pass (rule 10: the batch is written before waiting). A page mid-write by
    /// someone else is waited for, so on return every listed page's last change has been
    /// written (not synced without a doublewrite). Returns how many it wrote.
    pub(super) fn write_listed(&self, ids: &[PageId]) -> Result<u64> {
        let capacity = self.batch_capacity();
        let mut batch = Vec::with_capacity(capacity);
        let mut written = 0;
        for &id in ids {
            let Some(f) = self.table.lock(id).map.get(&id).copied() else {
                continue; // not cached: what is on disk is its last version
            };
            let Some(pin) = self.pin_if_mapped(f, id, |_| true) else {
                continue; // evicted meanwhile, which wrote it if it was dirty
            };
            written += self.add_to_batch(pin, id, true, &mut batch, capacity)?;
        }
        written += self.write_batch(&mut batch)?;
        Ok(written)
    }

    /// Takes the frame `pin` holds into `batch`, and writes the batch once it is full.
    /// Rule 10: the latch is only *tried* while the batch holds frames; if it is busy and
    /// `wait` allows waiting, the batch is written first, then the latch waited for.
    /// Returns how many pages it wrote.
    fn add_to_batch(
        &self,
        pin: Pin,
        id: PageId,
        wait: bool,
        batch: &mut Vec<Taken>,
        capacity: usize,
    ) -> Result<u64> {
        let mut written = 0;
        let take = match self.take(pin, id, Wait::No) {
            Take::Busy(pin) if wait => {
                written += self.write_batch(batch)?;
                self.take(pin, id, Wait::Yes)
            }
            take => take,
        };
        if let Take::Taken(taken) = take {
            batch.push(taken);
            if batch.len() >= capacity {
                written += self.write_batch(batch)?;
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
