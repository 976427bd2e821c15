//! The mini-transaction (mtr): the unit of atomic page change (`docs/durability.md` rules 2
//! and 3).
//!
//! One B+tree operation (an insert with its splits, a delete with its frees) changes several
//! pages. It hands each exclusively latched page to one [`Mtr`], changes the pages through
//! it, and commits:
//!
//! ```text
//!   Mtr::new(&log)
//!     mtr.modify(pool.write(id)?)     snapshot the frame (the before-image)   ─┐ pages stay
//!     mtr.new_page(alloc.allocate()?) a fresh page: logged whole              │ latched
//!     mtr.page_mut(i)[..] = ...       change the frames through the mtr       │ (rule 2)
//!   mtr.commit()                                                              │
//!     1. diff every frame against its before-image  ->  PageDelta / PageImage │
//!     2. log.append(&records)          ONE batch: recovery gets all or none   │
//!     3. stamp the batch's end LSN into every changed page                    │
//!     4. drop the guards  ────────────────────────────────────────────────────┘
//! ```
//!
//! Because the latches are held until the LSNs are stamped, the log order of the changes
//! to one page is the order they happened, and a page's LSN always names the batch that
//! last changed it, which is what redo compares against (`redo.rs`).
//!
//! **Deltas.** A `PageDelta` holds the byte ranges of the frame that differ from the
//! before-image. Ranges separated by fewer than [`MERGE_GAP`] unchanged bytes are merged,
//! since each range costs a few bytes of framing. The page-LSN field ([`PAGE_LSN`]) is
//! never part of a range: commit stamps it, and redo stamps it again after applying.
//!
//! **An mtr that is not committed** (dropped after an error or a panic) is *aborted*: every
//! page given to [`Mtr::modify`] is restored to its before-image before its latch is
//! released, and nothing is logged, so memory and redo still agree. Pages given to
//! [`Mtr::new_page`] have no before-image and keep their bytes with no redo: their
//! allocation is not undone (the page is leaked until a later free), and since no tree page
//! points at them yet, nothing reads them. The same holds when the append in
//! [`Mtr::commit`] fails.
//!
//! What an mtr does not do (yet): call [`Log::free_check`] (the caller does, before it
//! latches anything), log page-0 header changes (`SpaceHeader` records), or undo an
//! allocation on abort.

#![cfg_attr(
    not(test),
    expect(dead_code, reason = "wired into the B+tree by the durability work")
)]

use std::ops::Range;
use std::sync::Arc;

use strongbox_wal::{Log, Lsn, Record};

use crate::buffer::PageMut;
use crate::error::Result;
use crate::page::{write_page_lsn, PAGE_LSN};

/// Changed ranges closer than this many unchanged bytes are logged as one range.
pub(crate) const MERGE_GAP: usize = 16;

/// One page the mtr holds.
struct Tracked {
    page: PageMut,
    /// The frame as it was when the mtr took it; `None` for a new page (logged whole).
    before: Option<Box<[u8]>>,
}

/// A mini-transaction: exclusively latched pages whose changes are logged as one batch.
pub(crate) struct Mtr {
    log: Arc<Log>,
    pages: Vec<Tracked>,
}

impl Mtr {
    /// An empty mtr that will append to `log`.
    pub(crate) fn new(log: &Arc<Log>) -> Mtr {
        Mtr {
            log: Arc::clone(log),
            pages: Vec::new(),
        }
    }

    /// Takes an exclusively latched page and snapshots it; changes made from now on (through
    /// [`Mtr::page_mut`]) are logged at commit. Returns the page's index in this mtr.
    pub(crate) fn modify(&mut self, page: PageMut) -> usize {
        let before = Some(Box::from(&page[..]));
        self.track(page, before)
    }

    /// Takes a freshly allocated page (from `BufferPool::create` or `Allocator::allocate`);
    /// it is logged as a whole `PageImage` at commit. Returns its index in this mtr.
    pub(crate) fn new_page(&mut self, page: PageMut) -> usize {
        self.track(page, None)
    }

    fn track(&mut self, page: PageMut, before: Option<Box<[u8]>>) -> usize {
        debug_assert!(
            self.pages.iter().all(|t| t.page.id() != page.id()),
            "page {:?} is already in this mtr",
            page.id()
        );
        self.pages.push(Tracked { page, before });
        self.pages.len() - 1
    }

    /// The frame of page `index`, to read.
    ///
    /// # Panics
    ///
    /// If `index` was not returned by this mtr's `modify` or `new_page`.
    pub(crate) fn page(&self, index: usize) -> &PageMut {
        &self.pages[index].page
    }

    /// The frame of page `index`, to change.
    ///
    /// # Panics
    ///
    /// If `index` was not returned by this mtr's `modify` or `new_page`.
    pub(crate) fn page_mut(&mut self, index: usize) -> &mut PageMut {
        &mut self.pages[index].page
    }

    /// Logs every change as one batch, stamps the batch's end LSN into each changed page,
    /// then releases the latches. Returns that LSN, or `None` if no page changed (nothing is
    /// appended then). On an append failure the mtr is aborted (see the module docs).
    pub(crate) fn commit(mut self) -> Result<Option<Lsn>> {
        let mut records = Vec::new();
        let mut changed = Vec::new();
        for (index, tracked) in self.pages.iter().enumerate() {
            let id = tracked.page.id();
            let record = match &tracked.before {
                None => Record::PageImage {
                    space_id: id.space_id,
                    page_no: id.page_no,
                    image: tracked.page.to_vec(),
                },
                Some(before) => {
                    let ranges = changed_ranges(before, &tracked.page);
                    if ranges.is_empty() {
                        continue;
                    }
                    Record::PageDelta {
                        space_id: id.space_id,
                        page_no: id.page_no,
                        ranges: ranges
                            .into_iter()
                            .map(|r| (r.start as u32, tracked.page[r].to_vec()))
                            .collect(),
                    }
                }
            };
            records.push(record);
            changed.push(index);
        }
        if records.is_empty() {
            self.pages.clear();
            return Ok(None);
        }
        // Rule 2: appended while every page is still latched; on failure `Drop` aborts.
        let lsn = self.log.append(&records)?;
        for index in changed {
            write_page_lsn(&mut self.pages[index].page, lsn);
        }
        // Committed: release the latches without restoring anything.
        self.pages.clear();
        Ok(Some(lsn))
    }
}

impl Drop for Mtr {
    /// Aborts an uncommitted mtr: see the module docs.
    fn drop(&mut self) {
        for tracked in &mut self.pages {
            if let Some(before) = &tracked.before {
                tracked.page.copy_from_slice(before);
            }
        }
    }
}

/// The byte ranges where `after` differs from `before`, in order, never covering
/// [`PAGE_LSN`], with ranges less than [`MERGE_GAP`] bytes apart merged.
pub(crate) fn changed_ranges(before: &[u8], after: &[u8]) -> Vec<Range<usize>> {
    assert_eq!(before.len(), after.len(), "a frame keeps its size");
    let mut ranges = Vec::new();
    for part in [0..PAGE_LSN.start, PAGE_LSN.end..after.len()] {
        let mut current: Option<Range<usize>> = None;
        for i in part.filter(|&i| before[i] != after[i]) {
            current = match current {
                Some(r) if i - r.end < MERGE_GAP => Some(r.start..i + 1),
                Some(r) => {
                    ranges.push(r);
                    Some(i..i + 1)
                }
                None => Some(i..i + 1),
            };
        }
        ranges.extend(current);
    }
    ranges
}

#[cfg(test)]
pub(crate) mod tests;
