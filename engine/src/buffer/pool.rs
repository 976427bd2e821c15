//! [`BufferPool`]: lookup, miss, eviction and write-back.
//!
//! The numbered rules this code relies on are in the [module doc](super).

use super::cleaner::Cleaner;
use super::frame::{Frame, FrameId, PageMut, PageRef, Pin, UnpinSignal, WriteLatch};
use super::replacer::{ClockReplacer, Replacer};
use super::stats::{BufferStats, Counters};
use super::table::PageTable;
use super::writeback::Pass;
use super::PageIo;
use crate::doublewrite::Doublewrite;
use crate::error::{Error, Result};
use crate::page::PageId;
use crossbeam::channel::{self, Receiver, Sender};
use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The fewest frames a pool may have: each thread descending the B+tree pins a few pages.
pub const MIN_FRAMES: usize = 16;
/// How long a miss waits for some frame to be unpinned before it gives up.
const EXHAUSTED_WAIT: Duration = Duration::from_secs(1);
/// One sleep of that wait; unpins that slip past the wake-up are seen this late at most.
const WAIT_SLICE: Duration = Duration::from_millis(10);

/// A fixed set of frames caching plaintext pages, shared by all threads.
///
/// `read` and `write` return guards that keep the page pinned and latched until dropped;
/// the caller decides the latch order (the B+tree goes top-down). Hold no guards while
/// calling `flush_all` or `discard_space`: they wait for latches.
pub struct BufferPool {
    pub(super) core: Arc<Core>,
    /// Guards the page cleaner's handle; `None` while no cleaner runs.
    cleaner: Mutex<Option<Cleaner>>,
}

/// The pool's shared state, owned jointly by the [`BufferPool`] and its page cleaner.
pub(super) struct Core {
    pub(super) page_size: usize,
    /// Allocated once, never resized.
    pub(super) frames: Box<[Arc<Frame>]>,
    pub(super) table: PageTable,
    /// Guards the list of frames that hold no page.
    pub(super) free: Mutex<Vec<FrameId>>,
    /// Told when a frame is unpinned to zero or freed; shared with every frame.
    pub(super) unpinned: Arc<UnpinSignal>,
    pub(super) replacer: Box<dyn Replacer>,
    pub(super) io: Arc<dyn PageIo>,
    /// Once set, every page write goes through it in batches (rule 11, `writeback.rs`).
    pub(super) doublewrite: OnceLock<Arc<Doublewrite>>,
    pub(super) counters: Counters,
    /// The first write failure (rule 9); once set, the pool refuses all work.
    pub(super) poison: OnceLock<String>,
    /// Wakes the page cleaner early. Capacity 1: one pending wake-up is enough.
    pub(super) wake: (Sender<()>, Receiver<()>),
}

/// How a newly claimed frame gets its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Read the page through `PageIo` (`read`, `write`).
    FromDisk,
    /// Zero it: the caller has just allocated the page (`create`).
    Zero,
}

/// What `Core::fetch` found.
enum Fetched {
    /// The page is in a frame, now pinned; the caller latches it and checks for an orphan
    /// (rule 4).
    Hit(Pin),
    /// The page was loaded into a pinned frame whose write latch the caller now holds.
    Loaded(Pin, WriteLatch),
}

impl BufferPool {
    /// A pool of `capacity_bytes / page_size` frames, all allocated now.
    ///
    /// Fails with `InvalidOption` if that is fewer than [`MIN_FRAMES`].
    pub fn new(capacity_bytes: usize, page_size: usize, io: Arc<dyn PageIo>) -> Result<Arc<Self>> {
        Self::with_replacer(capacity_bytes, page_size, io, |frames| {
            Box::new(ClockReplacer::new(frames))
        })
    }

    /// Like [`new`](Self::new), with another eviction policy.
    pub(crate) fn with_replacer(
        capacity_bytes: usize,
        page_size: usize,
        io: Arc<dyn PageIo>,
        replacer: impl FnOnce(usize) -> Box<dyn Replacer>,
    ) -> Result<Arc<Self>> {
        if page_size == 0 {
            return Err(Error::InvalidOption {
                name: "page_size",
                problem: "must not be 0".into(),
            });
        }
        let frames = capacity_bytes / page_size;
        if frames < MIN_FRAMES {
            return Err(Error::InvalidOption {
                name: "buffer_pool_size",
                problem: format!(
                    "{capacity_bytes} bytes hold {frames} pages of {page_size} bytes; \
                     the minimum is {MIN_FRAMES} pages ({} bytes)",
                    MIN_FRAMES * page_size
                ),
            });
        }
        let unpinned = Arc::new(UnpinSignal::new());
        let core = Core {
            page_size,
            frames: (0..frames)
                .map(|_| Arc::new(Frame::new(page_size, Arc::clone(&unpinned))))
                .collect(),
            table: PageTable::new(frames),
            // Popped from the end: frame 0 is used first.
            free: Mutex::new((0..frames).rev().collect()),
            unpinned,
            replacer: replacer(frames),
            io,
            doublewrite: OnceLock::new(),
            counters: Counters::default(),
            poison: OnceLock::new(),
            wake: channel::bounded(1),
        };
        Ok(Arc::new(BufferPool {
            core: Arc::new(core),
            cleaner: Mutex::new(None),
        }))
    }

    /// Pins page `id` and latches it shared, reading it from disk on a miss.
    pub fn read(&self, id: PageId) -> Result<PageRef> {
        loop {
            match self.core.fetch(id, Fill::FromDisk)? {
                Fetched::Hit(pin) => {
                    let latch = pin.frame().latch.read_arc();
                    if !pin.frame().is_orphaned() {
                        return Ok(PageRef::new(id, latch, pin));
                    }
                    // Rule 4: the load we waited for failed. Let go and start over.
                }
                Fetched::Loaded(pin, latch) => {
                    return Ok(PageRef::new(id, WriteLatch::downgrade(latch), pin));
                }
            }
        }
    }

    /// Pins page `id` and latches it exclusively, reading it from disk on a miss. The page
    /// counts as changed from now on.
    pub fn write(&self, id: PageId) -> Result<PageMut> {
        self.latch_for_write(id, Fill::FromDisk)
    }

    /// Like [`write`](Self::write) for a page the caller has just allocated: no disk read;
    /// the frame starts zeroed (also if the page happened to be cached).
    pub fn create(&self, id: PageId) -> Result<PageMut> {
        self.latch_for_write(id, Fill::Zero)
    }

    fn latch_for_write(&self, id: PageId, fill: Fill) -> Result<PageMut> {
        loop {
            let (pin, latch) = match self.core.fetch(id, fill)? {
                Fetched::Hit(pin) => {
                    let mut latch = pin.frame().latch.write_arc();
                    if pin.frame().is_orphaned() {
                        continue; // rule 4, as in `read`
                    }
                    if fill == Fill::Zero {
                        latch.fill(0);
                    }
                    (pin, latch)
                }
                Fetched::Loaded(pin, latch) => (pin, latch),
            };
            self.core.mark_dirty(pin.frame()); // rule 5: only now that we hold the latch
            return Ok(PageMut::new(id, latch, pin));
        }
    }

    /// From now on, writes every page through `dw`: encoded, into its slots and synced,
    /// then home and synced, in batches of up to `dw.slots()` pages (rule 11). Attach it
    /// before the first page is written; only the first call counts. `dw` must have been
    /// recovered if its file existed (`Doublewrite::recover`), or every write fails and
    /// poisons the pool.
    ///
    /// Fails with `InvalidOption` if `dw` holds pages of another size than the pool's.
    pub fn attach_doublewrite(&self, dw: Arc<Doublewrite>) -> Result<()> {
        if dw.page_size().len() != self.core.page_size {
            return Err(Error::InvalidOption {
                name: "doublewrite",
                problem: format!(
                    "{} holds pages of {} bytes, the buffer pool pages of {}",
                    dw.path().display(),
                    dw.page_size(),
                    self.core.page_size
                ),
            });
        }
        let _ = self.core.doublewrite.set(dw);
        Ok(())
    }

    /// Writes every dirty page, then makes them durable with `PageIo::sync`: a checkpoint
    /// or a clean close. Pages changed while it runs may or may not be included. With a
    /// doublewrite attached, each batch is durable before the next begins.
    pub fn flush_all(&self) -> Result<()> {
        self.core.check_poison()?;
        self.core.write_pass(Pass::Checkpoint)?;
        self.core.io.sync().inspect_err(|err| {
            // Rule 9: after a failed sync the OS may have dropped the pages it held.
            self.core.poison(err.to_string());
        })
    }

    /// Makes the listed pages durable: writes those that are dirty (through the
    /// doublewrite when attached) and syncs their spaces. The re-encryption pass uses it
    /// before it records its progress. The caller must hold no page latch.
    pub fn flush_pages(&self, ids: &[PageId]) -> Result<u64> {
        self.core.check_poison()?;
        let written = self.core.write_listed(ids)?;
        let spaces: std::collections::BTreeSet<u32> = ids.iter().map(|id| id.space_id).collect();
        for space_id in spaces {
            self.core.io.sync_space(space_id).inspect_err(|err| {
                self.core.poison(err.to_string()); // rule 9
            })?;
        }
        Ok(written)
    }

    /// Empties the doublewrite slots, if a doublewrite is attached (between batches): the
    /// copies there are of pages already durable at home, and after a re-encryption they
    /// may be the last copies sealed the old way (or plain).
    pub fn clear_doublewrite(&self) -> Result<()> {
        match self.core.doublewrite.get() {
            Some(dw) => dw.clear_slots(),
            None => Ok(()),
        }
    }

    /// Forgets every page of space `space_id` without writing it (dropping a table); their
    /// frames become free. Nobody may use the space meanwhile. Returns once no write of the
    /// space is in flight, so the caller may delete its file.
    pub fn discard_space(&self, space_id: u32) {
        let core = &*self.core;
        let mut freed = Vec::new();
        let mut draining = Vec::new();
        for shard in core.table.shards() {
            shard.lock().map.retain(|id, &mut f| {
                if id.space_id != space_id {
                    return true;
                }
                let frame = &core.frames[f];
                // Unmapped from here (retain drops it under this lock), so rule 1 makes
                // the frame ownerless until claimed: clear the hint before orphaning.
                frame.set_page(None);
                frame.orphan();
                core.take_dirty(frame);
                if frame.try_claim_orphan() {
                    freed.push(f);
                } else {
                    draining.push(f); // pinned by a write-back in flight
                }
                false
            });
        }
        for f in freed {
            core.free_frame(f);
        }
        // Rule 7: a write-back holds the latch upgradable for its whole write.
        for f in draining {
            drop(core.frames[f].latch.upgradable_read());
        }
    }

    /// The pool's counters now.
    pub fn stats(&self) -> BufferStats {
        let core = &self.core;
        let (mut hits, mut misses) = (0, 0);
        for shard in core.table.shards() {
            let shard = shard.lock();
            hits += shard.hits;
            misses += shard.misses;
        }
        let counters = &core.counters;
        BufferStats {
            hits,
            misses,
            pages_read: counters.pages_read.load(Relaxed),
            pages_written: counters.pages_written.load(Relaxed),
            evictions: counters.evictions.load(Relaxed),
            dirty_pages: u64::try_from(counters.dirty_pages.load(Relaxed)).unwrap_or(0),
            frames: core.frames.len() as u64,
            cleaner_flushes: counters.cleaner_flushes.load(Relaxed),
        }
    }

    /// Bytes per page and per frame.
    pub fn page_size(&self) -> usize {
        self.core.page_size
    }

    /// How many frames the pool has (fixed at creation).
    pub fn frame_count(&self) -> usize {
        self.core.frames.len()
    }

    /// Starts the background page cleaner, unless it runs already.
    pub fn start_cleaner(&self) -> Result<()> {
        let mut cleaner = self.cleaner.lock();
        if cleaner.is_none() {
            *cleaner = Some(Cleaner::start(Arc::clone(&self.core))?);
        }
        Ok(())
    }

    /// Stops the page cleaner and waits for it to exit. Does not flush: call
    /// [`flush_all`](Self::flush_all) for a clean close. Fails with `Poisoned` if the
    /// cleaner (or any other write) failed earlier.
    pub fn shutdown(&self) -> Result<()> {
        let cleaner = self.cleaner.lock().take();
        if let Some(cleaner) = cleaner {
            cleaner.stop(&self.core);
        }
        self.core.check_poison()
    }

    #[cfg(test)]
    pub(super) fn core(&self) -> &Arc<Core> {
        &self.core
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        if let Some(cleaner) = self.cleaner.get_mut().take() {
            cleaner.stop(&self.core);
        }
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("frames", &self.core.frames.len())
            .field("page_size", &self.core.page_size)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// Finds page `id` or loads it into a frame: the hit and miss paths.
    fn fetch(&self, id: PageId, fill: Fill) -> Result<Fetched> {
        self.check_poison()?;
        let counted = u64::from(fill == Fill::FromDisk);
        {
            let mut shard = self.table.lock(id);
            if let Some(&f) = shard.map.get(&id) {
                let pin = self.frames[f].pin(); // rule 2
                shard.hits += counted;
                drop(shard);
                self.replacer.record_hit(f);
                return Ok(Fetched::Hit(pin));
            }
        }

        let f = self.claim_frame()?;
        let frame = &self.frames[f];
        // Nobody else uses the latch of a frame that is neither mapped nor pinned, except
        // `discard_space` waiting out a write-back for a moment.
        let mut latch = frame.latch.write_arc();
        let pin = frame.pin();
        frame.set_page(Some(id));
        {
            let mut shard = self.table.lock(id);
            if let Some(&other) = shard.map.get(&id) {
                // Another thread loaded the page while we looked for a frame: use its copy.
                let other_pin = self.frames[other].pin();
                shard.hits += counted;
                drop(shard);
                frame.set_page(None);
                drop(latch);
                drop(pin);
                self.free_frame(f);
                self.replacer.record_hit(other);
                return Ok(Fetched::Hit(other_pin));
            }
            shard.map.insert(id, f); // rule 3: publish before reading
            shard.misses += counted;
        }
        self.replacer.record_load(f);
        match fill {
            Fill::Zero => latch.fill(0),
            Fill::FromDisk => {
                if let Err(err) = self.io.read_page(id, &mut latch) {
                    self.unpublish(f, id, latch, pin);
                    return Err(err);
                }
                self.counters.pages_read.fetch_add(1, Relaxed);
            }
        }
        Ok(Fetched::Loaded(pin, latch))
    }

    /// Undoes a failed load (rule 4): unmaps and orphans the frame before releasing its
    /// latch, so threads waiting on the latch see the mark and start over.
    fn unpublish(&self, f: FrameId, id: PageId, latch: WriteLatch, pin: Pin) {
        let frame = &self.frames[f];
        {
            let mut shard = self.table.lock(id);
            // Still ours unless `discard_space` broke its contract and the page was reloaded.
            if shard.map.get(&id) == Some(&f) {
                shard.map.remove(&id);
            }
            frame.set_page(None);
            frame.orphan();
        }
        drop(latch);
        drop(pin);
        if frame.try_claim_orphan() {
            self.free_frame(f);
        }
        // Otherwise the last waiter's unpin leaves it for the replacer to reclaim.
    }

    /// A frame that holds no page, from the free list or by eviction. Waits up to
    /// `EXHAUSTED_WAIT` while every frame is pinned.
    fn claim_frame(&self) -> Result<FrameId> {
        let deadline = Instant::now() + EXHAUSTED_WAIT;
        loop {
            if let Some(f) = self.free.lock().pop() {
                return Ok(f);
            }
            if let Some(f) = self.evict()? {
                return Ok(f);
            }
            if Instant::now() >= deadline {
                return Err(Error::BufferPoolExhausted {
                    frames: self.frames.len(),
                });
            }
            self.unpinned.wait(WAIT_SLICE);
        }
    }

    /// Returns a frame the caller owns (unmapped, unpinned) to the free list.
    pub(super) fn free_frame(&self, f: FrameId) {
        let frame = &self.frames[f];
        debug_assert_eq!(frame.pin_count(), 0);
        self.take_dirty(frame);
        frame.set_page(None);
        self.replacer.remove(f);
        self.free.lock().push(f);
        self.unpinned.notify();
    }

    pub(super) fn wake_receiver(&self) -> Receiver<()> {
        self.wake.1.clone()
    }

    /// Records the first failure that makes the disk image doubtful (rule 9). Later
    /// failures keep the first message, which names the cause.
    pub(super) fn poison(&self, reason: String) {
        let _ = self.poison.set(reason);
    }

    pub(super) fn check_poison(&self) -> Result<()> {
        match self.poison.get() {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }
}
