//! Page allocation within a tablespace: a free list threaded through freed pages.
//!
//! ```text
//!  page 0 header: free_head ──► page 17 ──► page 5 ──► page 42 ──► 0 (end)
//!                               (each free page's body starts with the next page number)
//! ```
//!
//! * `allocate` pops the head of the free list, or extends the space by one page when the
//!   list is empty (`page_count` is the high-water mark; the file grows when the page is
//!   first written).
//! * `free` zeroes the page's body (so freed pages of unencrypted tables do not keep deleted
//!   records) and links it in as the new head; on disk a free page is encrypted like any
//!   other page of its space.
//!
//! Both work inside a mini-transaction (`mtr.rs`): the free-list pages they touch are
//! latched through it and logged with the rest of the operation, and the page-0 fields
//! (`page_count`, `free_head`, `free_count`) change under the space's allocation lock,
//! which the mtr takes here and holds until its redo is appended (a `SpaceHeader` record).
//!
//! Lock order: callers latch the *tree* pages they need first; the allocation lock comes
//! after them, and *free* pages (which no tree path latches) after it. So no cycle forms.

use super::SpaceFile;
use crate::buffer::{BufferPool, PageMut};
use crate::error::{Error, Result};
use crate::mtr::Mtr;
use crate::page::{self, PageId, PageType, BODY_START};
use std::sync::Arc;

/// Where a free page keeps the number of the next one.
pub const NEXT_FREE_OFFSET: usize = BODY_START;

/// Allocates and frees the pages of one space.
#[derive(Debug)]
pub struct Allocator {
    space: Arc<SpaceFile>,
    pool: Arc<BufferPool>,
}

impl Allocator {
    pub fn new(space: Arc<SpaceFile>, pool: Arc<BufferPool>) -> Allocator {
        Allocator { space, pool }
    }

    pub fn space(&self) -> &Arc<SpaceFile> {
        &self.space
    }

    pub(crate) fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    /// A page number that is now the caller's, latched through `mtr`; its frame is zeroed
    /// and typed `page_type`.
    pub(crate) fn allocate(&self, mtr: &Mtr, page_type: PageType) -> Result<PageMut> {
        mtr.lock_allocation(&self.space);
        let (head, page_count) = {
            let header = self.space.header();
            (header.free_head, header.page_count)
        };
        let mut frame = if head != 0 {
            let frame = mtr.write(self.id(head))?;
            let next = read_next_free(&frame);
            if next != 0 && next >= page_count {
                return Err(Error::Corrupt {
                    path: self.space.path().to_path_buf(),
                    problem: format!("free page {head} links to page {next} beyond the end"),
                });
            }
            self.space.update_header(|h| {
                h.free_head = next;
                h.free_count = h.free_count.saturating_sub(1);
            });
            frame
        } else {
            if page_count == u32::MAX {
                return Err(Error::Corrupt {
                    path: self.space.path().to_path_buf(),
                    problem: "tablespace is full (2^32 pages)".into(),
                });
            }
            self.space.update_header(|h| h.page_count += 1);
            mtr.create(self.id(page_count))?
        };
        let id = frame.id();
        page::init_frame(&mut frame, page_type, id, 0);
        Ok(frame)
    }

    /// Returns `page_no` to the free list, inside `mtr`. The caller must no longer
    /// reference it.
    pub(crate) fn free(&self, mtr: &Mtr, page_no: u32) -> Result<()> {
        mtr.lock_allocation(&self.space);
        let head = self.space.header().free_head;
        let mut frame = mtr.write(self.id(page_no))?;
        page::init_frame(&mut frame, PageType::Free, self.id(page_no), 0);
        frame[NEXT_FREE_OFFSET..NEXT_FREE_OFFSET + 4].copy_from_slice(&head.to_le_bytes());
        drop(frame);
        self.space.update_header(|h| {
            h.free_head = page_no;
            h.free_count += 1;
        });
        Ok(())
    }

    /// Returns `count` pages already linked `first -> ... -> last` through the free-list
    /// link (an overflow chain) in one step: only `last` and page 0 change.
    pub(crate) fn free_linked(&self, mtr: &Mtr, first: u32, last: u32, count: u32) -> Result<()> {
        mtr.lock_allocation(&self.space);
        let head = self.space.header().free_head;
        let mut frame = mtr.write(self.id(last))?;
        frame[NEXT_FREE_OFFSET..NEXT_FREE_OFFSET + 4].copy_from_slice(&head.to_le_bytes());
        drop(frame);
        self.space.update_header(|h| {
            h.free_head = first;
            h.free_count += count;
        });
        Ok(())
    }

    /// Every page on the free list, in list order (for `verify`).
    pub fn free_pages(&self) -> Result<Vec<u32>> {
        let _no_allocation_meanwhile = self.space.allocation_lock().lock();
        let header = self.space.header();
        // `free_count` is read from page 0 (up to 4 billion): reserve at most 64 Ki entries
        // ahead; the list grows as it is walked.
        let mut pages = Vec::with_capacity((header.free_count as usize).min(1 << 16));
        let mut next = header.free_head;
        while next != 0 {
            if pages.len() > header.page_count as usize || next >= header.page_count {
                return Err(Error::Corrupt {
                    path: self.space.path().to_path_buf(),
                    problem: format!("free list is cyclic or leaves the file at page {next}"),
                });
            }
            pages.push(next);
            let frame = self.pool.read(self.id(next))?;
            next = read_next_free(&frame);
        }
        Ok(pages)
    }

    fn id(&self, page_no: u32) -> PageId {
        PageId::new(self.space.id(), page_no)
    }
}

fn read_next_free(frame: &[u8]) -> u32 {
    u32::from_le_bytes(
        frame[NEXT_FREE_OFFSET..NEXT_FREE_OFFSET + 4]
            .try_into()
            .expect("4 bytes"),
    )
}
