//! The mini-transaction (mtr): the unit of atomic page change (`docs/durability.md` rules 2
//! and 3).
//!
//! One B+tree operation (an insert with its splits, a delete with its frees, an undo
//! append, a commit) changes several pages. It latches each page it may change through one
//! [`Mtr`], changes them, and commits:
//!
//! ```text
//!   let mtr = Mtr::start(log, &pool)?      waits first if the log needs a checkpoint
//!     let mut p = mtr.write(id)?           latched; the frame is snapshotted (before-image)
//!     let q = mtr.create(id)?              a new page: logged whole
//!     ... change p and q, then drop them   the latches are NOT released: the mtr keeps
//!                                          every page that changed (PageMut::kept_by)
//!   mtr.commit()?                                                               │
//!     1. diff every kept frame against its before-image -> PageDelta / PageImage │ pages
//!     2. log.append(records)   ONE batch: recovery applies all of it or none     │ stay
//!     3. stamp the batch's end LSN into every changed page                        │ latched
//!     4. release the latches, then the allocation locks  ─────────────────────────┘
//! ```
//!
//! Because the latches are held until the LSNs are stamped, the log order of the changes to
//! one page is the order they happened, and a page's LSN always names the batch that last
//! changed it, which is what redo compares against (`redo.rs`). A page dropped *unchanged*
//! (an ancestor a descent latched and let go) is released at once, so latch crabbing keeps
//! its concurrency. Asking the mtr again for a page it keeps hands the same guard back: an
//! operation may free a page it changed a moment ago.
//!
//! **Allocation.** Page 0's allocation fields (page count, free-list head and length) live
//! in memory (`SpaceFile::header`). The first allocation or free of a space in an mtr takes
//! that space's allocation lock ([`Mtr::lock_allocation`]) and holds it to the end, and the
//! commit logs the fields as a `SpaceHeader` record. So the records of two mtrs that
//! allocate in one space are in the order of their changes, and the fields read under the
//! lock (a checkpoint's page 0) never include an unlogged change. Lock order (deadlock
//! freedom): tree pages, then the allocation lock, then free, overflow and undo pages.
//!
//! **Deltas.** A `PageDelta` holds the byte ranges of the frame that differ from the
//! before-image. Ranges separated by fewer than [`MERGE_GAP`] unchanged bytes are merged,
//! since each range costs a few bytes of framing. Only the bytes upper layers own are
//! compared (`page::logged_ranges`): the page-LSN field ([`PAGE_LSN`](crate::page::PAGE_LSN)) is stamped by commit
//! and again by redo, and the codec's fields (cipher, key id, version, nonce, checksum,
//! trailer) describe whichever copy was last read or written, so logging them would graft
//! one copy's header onto another at redo.
//!
//! **An mtr that is not committed** (dropped after an error or a panic) is *aborted*: every
//! kept page with a before-image is restored to it, a page created by this mtr is marked
//! clean (it was never logged, so it must never be written), the allocation fields go back
//! to what they were when the mtr took the lock, and nothing is logged — memory and redo
//! still agree. The same holds when the append in [`Mtr::commit`] fails.
//!
//! Without a log (`Mtr::start(None, ..)`: unit tests of the tree, the temporary space) an
//! mtr only keeps its latching discipline and logs nothing.

use parking_lot::{Mutex, RawMutex};
use std::ops::Range;
use std::sync::Arc;

use strongbox_wal::{Log, Lsn, Record};

use crate::buffer::{BufferPool, Keeper, PageMut};
use crate::error::Result;
use crate::page::{logged_ranges, write_page_lsn, PageId};
use crate::space::{AllocState, SpaceFile};

/// Changed ranges closer than this many unchanged bytes are logged as one range.
pub(crate) const MERGE_GAP: usize = 16;

/// The most new pages a long operation (an overflow chain, an undo append, a purge) puts
/// in one mtr.
pub(crate) const MAX_PAGES_PER_MTR: usize = 16;

/// How many new pages a long operation puts in one mtr with `pool`: an mtr keeps its pages
/// latched, so a small pool (16 frames at least) gets smaller mtrs — an eighth of its
/// frames, and at most [`MAX_PAGES_PER_MTR`].
pub(crate) fn pages_per_mtr(pool: &BufferPool) -> usize {
    (pool.frame_count() / 8).clamp(1, MAX_PAGES_PER_MTR)
}

type AllocationGuard = parking_lot::lock_api::ArcMutexGuard<RawMutex, ()>;

/// One page the mtr has latched.
struct Tracked {
    id: PageId,
    /// The guard while the mtr keeps it; `None` while the caller has it.
    page: Option<PageMut>,
    /// The frame when the mtr first latched it; `None` for a page this mtr created.
    before: Option<Box<[u8]>>,
    /// Logged as a whole image (the page was created, or re-created, by this mtr).
    whole: bool,
}

/// One space whose allocation lock the mtr holds.
struct Allocation {
    space: Arc<SpaceFile>,
    before: AllocState,
    _guard: AllocationGuard,
}

/// What the mtr holds; shared with the guards it hands out (their drop gives pages back).
#[derive(Default)]
struct Memo {
    pages: Mutex<Vec<Tracked>>,
}

impl Keeper for Memo {
    fn keep(&self, page: PageMut) {
        let mut pages = self.pages.lock();
        let index = pages
            .iter()
            .position(|t| t.id == page.id())
            .expect("a kept page was latched through this mtr");
        let tracked = &mut pages[index];
        let unchanged = !tracked.whole && tracked.before.as_deref() == Some(&page[..]);
        if unchanged {
            pages.swap_remove(index); // nothing to log: release the latch now
            drop(pages);
            drop(page);
        } else {
            tracked.page = Some(page);
        }
    }
}

/// A mini-transaction: latched pages whose changes are logged as one batch.
pub(crate) struct Mtr {
    log: Option<Arc<Log>>,
    pool: Arc<BufferPool>,
    memo: Arc<Memo>,
    allocations: Mutex<Vec<Allocation>>,
    /// Records that are not page changes (Commit, Rollback), appended after the pages'.
    extra: Vec<Record>,
}

impl Mtr {
    /// Starts an mtr. Call it before latching anything: with a log that is close to full,
    /// it first waits for a checkpoint (which needs latches to flush pages).
    pub(crate) fn start(log: Option<&Arc<Log>>, pool: &Arc<BufferPool>) -> Result<Mtr> {
        if let Some(log) = log {
            log.free_check()?;
        }
        Ok(Mtr {
            log: log.cloned(),
            pool: Arc::clone(pool),
            memo: Arc::default(),
            allocations: Mutex::new(Vec::new()),
            extra: Vec::new(),
        })
    }

    /// Page `id`, latched exclusively, to change. Its changes are logged at commit.
    pub(crate) fn write(&self, id: PageId) -> Result<PageMut> {
        if let Some(page) = self.take_kept(id, false) {
            return Ok(page);
        }
        let page = self.pool.write(id)?;
        let before = Some(Box::from(&page[..]));
        Ok(self.track(page, before, false))
    }

    /// Page `id` as a new, zeroed page, latched exclusively; it is logged whole at commit.
    /// For a page this mtr has already latched, the same guard, zeroed.
    pub(crate) fn create(&self, id: PageId) -> Result<PageMut> {
        if let Some(mut page) = self.take_kept(id, true) {
            page.fill(0);
            return Ok(page);
        }
        let page = self.pool.create(id)?;
        Ok(self.track(page, None, true))
    }

    /// Takes the allocation lock of `space` for the rest of this mtr (see the module doc);
    /// free if this mtr already holds it.
    pub(crate) fn lock_allocation(&self, space: &Arc<SpaceFile>) {
        let mut allocations = self.allocations.lock();
        if allocations.iter().any(|a| a.space.id() == space.id()) {
            return;
        }
        let guard = space.allocation_lock().lock_arc();
        allocations.push(Allocation {
            space: Arc::clone(space),
            before: space.header().alloc(),
            _guard: guard,
        });
    }

    /// Appends `record` to this mtr's batch, after its page records.
    pub(crate) fn push_record(&mut self, record: Record) {
        self.extra.push(record);
    }

    /// A guard this mtr keeps, handed out again.
    fn take_kept(&self, id: PageId, whole: bool) -> Option<PageMut> {
        let mut pages = self.memo.pages.lock();
        let tracked = pages.iter_mut().find(|t| t.id == id)?;
        let page = tracked
            .page
            .take()
            .expect("a page is latched twice in one mtr while its guard is out");
        tracked.whole |= whole;
        Some(page.kept_by(Arc::clone(&self.memo) as Arc<dyn Keeper>))
    }

    fn track(&self, page: PageMut, before: Option<Box<[u8]>>, whole: bool) -> PageMut {
        self.memo.pages.lock().push(Tracked {
            id: page.id(),
            page: None,
            before,
            whole,
        });
        page.kept_by(Arc::clone(&self.memo) as Arc<dyn Keeper>)
    }

    /// Logs every change as one batch, stamps the batch's end LSN into each changed page,
    /// then releases the latches and the allocation locks. Returns that LSN, or `None` if
    /// nothing was appended (no change, or no log). On an append failure the mtr is
    /// aborted (see the module docs).
    pub(crate) fn commit(mut self) -> Result<Option<Lsn>> {
        let Some(log) = self.log.clone() else {
            self.release();
            return Ok(None);
        };
        let mut records = Vec::new();
        for allocation in self.allocations.lock().iter() {
            let now = allocation.space.header().alloc();
            if now != allocation.before {
                records.push(Record::SpaceHeader {
                    space_id: allocation.space.id(),
                    image: now.encode(),
                });
            }
        }
        let mut pages = self.memo.pages.lock();
        let mut changed = Vec::new();
        for (index, tracked) in pages.iter().enumerate() {
            let page = tracked
                .page
                .as_ref()
                .expect("every page guard is dropped before its mtr commits");
            let id = tracked.id;
            let record = match &tracked.before {
                Some(before) if !tracked.whole => {
                    let ranges = changed_ranges(before, page);
                    if ranges.is_empty() {
                        continue;
                    }
                    Record::PageDelta {
                        space_id: id.space_id,
                        page_no: id.page_no,
                        ranges: ranges
                            .into_iter()
                            .map(|r| (r.start as u32, page[r].to_vec()))
                            .collect(),
                    }
                }
                _ => Record::PageImage {
                    space_id: id.space_id,
                    page_no: id.page_no,
                    image: page.to_vec(),
                },
            };
            records.push(record);
            changed.push(index);
        }
        if records.is_empty() && self.extra.is_empty() {
            drop(pages);
            self.release();
            return Ok(None);
        }
        records.append(&mut self.extra);
        // Rule 2: appended while every page is still latched; on failure `Drop` aborts.
        let lsn = log.append(&records)?;
        for index in changed {
            let page = pages[index].page.as_mut().expect("checked above");
            write_page_lsn(page, lsn);
        }
        drop(pages);
        self.release();
        Ok(Some(lsn))
    }

    /// Committed: lets go of every latch, then of the allocation locks, restoring nothing.
    fn release(&mut self) {
        self.memo.pages.lock().clear();
        self.allocations.lock().clear();
    }
}

impl Drop for Mtr {
    /// Aborts an uncommitted mtr: see the module docs.
    fn drop(&mut self) {
        let mut pages = std::mem::take(&mut *self.memo.pages.lock());
        for tracked in &mut pages {
            let Some(page) = tracked.page.as_mut() else {
                continue; // a guard still out can only be one being dropped by a panic
            };
            match &tracked.before {
                Some(before) => page.copy_from_slice(before),
                None => self.pool.forget_changes(page),
            }
        }
        drop(pages);
        for allocation in self.allocations.lock().drain(..) {
            allocation
                .space
                .update_header(|h| h.set_alloc(allocation.before));
        }
    }
}

/// The byte ranges where `after` differs from `before`, in order, within the bytes upper
/// layers own (`page::logged_ranges`: never [`PAGE_LSN`](crate::page::PAGE_LSN) or a codec field), with ranges
/// less than [`MERGE_GAP`] bytes apart merged.
///
/// This runs for every page of every mtr while its latch is held, so it skips equal
/// 64-byte blocks with one slice comparison (a `memcmp`) and looks at single bytes only
/// inside blocks that differ.
pub(crate) fn changed_ranges(before: &[u8], after: &[u8]) -> Vec<Range<usize>> {
    const BLOCK: usize = 64;
    assert_eq!(before.len(), after.len(), "a frame keeps its size");
    let mut ranges = Vec::new();
    for part in logged_ranges(after.len()) {
        let mut current: Option<Range<usize>> = None;
        let mut block_start = part.start;
        while block_start < part.end {
            let block = block_start..(block_start + BLOCK).min(part.end);
            block_start = block.end;
            if before[block.clone()] == after[block.clone()] {
                continue;
            }
            for i in block.filter(|&i| before[i] != after[i]) {
                current = match current {
                    Some(r) if i - r.end < MERGE_GAP => Some(r.start..i + 1),
                    Some(r) => {
                        ranges.push(r);
                        Some(i..i + 1)
                    }
                    None => Some(i..i + 1),
                };
            }
        }
        ranges.extend(current);
    }
    ranges
}

#[cfg(test)]
pub(crate) mod tests;
