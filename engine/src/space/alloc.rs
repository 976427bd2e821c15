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
//!   records), links it in as the new head, and writes it through the buffer pool — so on
//!   disk a free page is encrypted like any other page of its space.
//!
//! Lock order: the allocation mutex is taken before the latch of any *free* page, and
//! callers may hold latches of *tree* pages while allocating; tree pages and free pages are
//! disjoint, so no cycle can form.

use super::SpaceFile;
use crate::buffer::BufferPool;
use crate::error::{Error, Result};
use crate::page::{self, PageId, PageType, BODY_START};
use parking_lot::Mutex;
use std::sync::Arc;

const NEXT_FREE_OFFSET: usize = BODY_START;

/// Allocates and frees the pages of one space.
#[derive(Debug)]
pub struct Allocator {
    space: Arc<SpaceFile>,
    pool: Arc<BufferPool>,
    /// Serialises changes to the free list and the page count.
    lock: Mutex<()>,
}

impl Allocator {
    pub fn new(space: Arc<SpaceFile>, pool: Arc<BufferPool>) -> Allocator {
        Allocator {
            space,
            pool,
            lock: Mutex::new(()),
        }
    }

    pub fn space(&self) -> &Arc<SpaceFile> {
        &self.space
    }

    /// A page number that is now the caller's; its frame is zeroed and typed `page_type`.
    pub fn allocate(&self, page_type: PageType) -> Result<crate::buffer::PageMut> {
        let _lock = self.lock.lock();
        let (head, page_count) = {
            let header = self.space.header();
            (header.free_head, header.page_count)
        };
        let page_no = if head != 0 {
            let next = {
                let free_page = self.pool.read(self.id(head))?;
                read_next_free(&free_page)
            };
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
            head
        } else {
            let page_no = page_count;
            if page_no == u32::MAX {
                return Err(Error::Corrupt {
                    path: self.space.path().to_path_buf(),
                    problem: "tablespace is full (2^32 pages)".into(),
                });
            }
            self.space.update_header(|h| h.page_count += 1);
            page_no
        };
        let mut frame = self.pool.create(self.id(page_no))?;
        page::init_frame(&mut frame, page_type, self.id(page_no), 0);
        Ok(frame)
    }

    /// Returns `page_no` to the free list. The caller must no longer reference it.
    pub fn free(&self, page_no: u32) -> Result<()> {
        let _lock = self.lock.lock();
        let head = self.space.header().free_head;
        let mut frame = self.pool.create(self.id(page_no))?;
        page::init_frame(&mut frame, PageType::Free, self.id(page_no), 0);
        frame[NEXT_FREE_OFFSET..NEXT_FREE_OFFSET + 4].copy_from_slice(&head.to_le_bytes());
        drop(frame);
        self.space.update_header(|h| {
            h.free_head = page_no;
            h.free_count += 1;
        });
        Ok(())
    }

    /// Every page on the free list, in list order (for `verify`).
    pub fn free_pages(&self) -> Result<Vec<u32>> {
        let _lock = self.lock.lock();
        let header = self.space.header();
        let mut pages = Vec::with_capacity(header.free_count as usize);
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
