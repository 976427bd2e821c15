//! Overflow chains: values too large to sit in a leaf.
//!
//! A value larger than `node::max_inline_value` is cut into chunks stored in a chain of
//! overflow pages; the leaf cell keeps only the total length and the first page number.
//!
//! ```text
//! overflow page body (offsets from page::BODY_START, little-endian)
//! offset size field
//! 0      4    next_page   next page of the chain, 0 on the last page
//! 4      4    chunk_len   bytes of value in this page
//! 8      ..   chunk
//! ```
//!
//! **Durability.** A chain is written *before* the leaf that will point at it, in
//! mini-transactions of a few pages each (`mtr::pages_per_mtr`: an mtr keeps its pages
//! latched, and a 16 MiB value must work through a 1 MiB pool). It is freed *after* the
//! leaf stopped pointing at it: its pages are turned into zeroed free pages a few per mtr,
//! each linked to the next page of the chain, and one small mtr then splices the whole
//! chain onto the free list ([`free_pages`], which `BTree::destroy` uses for a whole tree).
//! The price: a crash between the chain's mtrs and the leaf's (or between the leaf's and
//! the free) leaves the chain's pages allocated but unreachable. They are never corrupt,
//! only lost space, and `verify` reports them as `leaked_pages` instead of failing.

use crate::buffer::BufferPool;
use crate::error::{Error, Result};
use crate::mtr::{pages_per_mtr, Mtr};
use crate::page::{PageId, PageType, BODY_START};
use crate::space::{Allocator, NEXT_FREE_OFFSET};
use std::sync::Arc;
use strongbox_wal::Log;

const NEXT_OFFSET: usize = BODY_START;
const CHUNK_LEN_OFFSET: usize = NEXT_OFFSET + 4;
const CHUNK_OFFSET: usize = CHUNK_LEN_OFFSET + 4;

/// Most bytes reserved ahead of reading from a length stored in a page (1 MiB).
const RESERVE_LIMIT: usize = 1 << 20;

/// Bytes of value one overflow page holds.
pub fn chunk_capacity(body_end: usize) -> usize {
    body_end - CHUNK_OFFSET
}

fn read_u32(frame: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(frame[offset..offset + 4].try_into().expect("4 bytes"))
}

/// Writes `value` into a new chain and returns its first page. On failure the pages
/// written so far are given back.
pub(crate) fn write_chain(
    alloc: &Allocator,
    log: Option<&Arc<Log>>,
    body_end: usize,
    value: &[u8],
) -> Result<u32> {
    let mut written = Vec::new();
    match write_chain_pages(alloc, log, body_end, value, &mut written) {
        Ok(()) => Ok(written[0]),
        Err(error) => {
            for page_no in written {
                let freed = Mtr::start(log, alloc.pool())
                    .and_then(|mtr| alloc.free(&mtr, page_no).and_then(|()| mtr.commit()));
                if freed.is_err() {
                    break; // the rest stays leaked; the first error is the one to report
                }
            }
            Err(error)
        }
    }
}

fn write_chain_pages(
    alloc: &Allocator,
    log: Option<&Arc<Log>>,
    body_end: usize,
    value: &[u8],
    written: &mut Vec<u32>,
) -> Result<()> {
    let space_id = alloc.space().id();
    let chunks: Vec<&[u8]> = value.chunks(chunk_capacity(body_end)).collect();
    for group in chunks.chunks(pages_per_mtr(alloc.pool())) {
        let mtr = Mtr::start(log, alloc.pool())?;
        // Only a committed group's pages join `written`: an mtr that fails is aborted and
        // takes its own allocations back (mtr.rs), so freeing them again would put a page
        // on the free list twice.
        let mut pages = Vec::with_capacity(group.len());
        for chunk in group {
            let mut page = alloc.allocate(&mtr, PageType::Overflow)?;
            let page_no = page.id().page_no;
            page[CHUNK_LEN_OFFSET..CHUNK_OFFSET]
                .copy_from_slice(&(chunk.len() as u32).to_le_bytes());
            page[CHUNK_OFFSET..CHUNK_OFFSET + chunk.len()].copy_from_slice(chunk);
            drop(page);
            if let Some(&previous) = pages.last().or(written.last()) {
                let mut previous = mtr.write(PageId::new(space_id, previous))?;
                previous[NEXT_OFFSET..CHUNK_LEN_OFFSET].copy_from_slice(&page_no.to_le_bytes());
            }
            pages.push(page_no);
        }
        mtr.commit()?;
        written.extend(pages);
    }
    Ok(())
}

/// Reads a whole chain of `total_len` bytes starting at `first`.
pub fn read_chain(
    pool: &BufferPool,
    alloc: &Allocator,
    first: u32,
    total_len: u32,
) -> Result<Vec<u8>> {
    let space = alloc.space();
    let total = total_len as usize;
    // `total_len` comes from a leaf cell: up to 4 GiB, and only as trustworthy as the page.
    // Reserve at most a few pages' worth up front; the value grows as chunks are read.
    let mut value = Vec::with_capacity(total.min(RESERVE_LIMIT));
    let mut next = first;
    while value.len() < total {
        if next == 0 {
            return Err(chain_error(alloc, first, "ends before the value's length"));
        }
        let frame = pool.read(PageId::new(space.id(), next))?;
        let chunk_len = read_u32(&frame, CHUNK_LEN_OFFSET) as usize;
        if chunk_len == 0
            || chunk_len > chunk_capacity(frame.len() - crate::page::TRAILER_LEN)
            || value.len() + chunk_len > total
        {
            return Err(chain_error(
                alloc,
                first,
                "has a chunk of impossible length",
            ));
        }
        value.extend_from_slice(&frame[CHUNK_OFFSET..CHUNK_OFFSET + chunk_len]);
        next = read_u32(&frame, NEXT_OFFSET);
    }
    if next != 0 {
        return Err(chain_error(
            alloc,
            first,
            "continues past the value's length",
        ));
    }
    Ok(value)
}

/// The page numbers of a chain (for `verify` and for freeing).
pub fn chain_pages(
    pool: &BufferPool,
    alloc: &Allocator,
    first: u32,
    total_len: u32,
) -> Result<Vec<u32>> {
    let space = alloc.space();
    let capacity = chunk_capacity(pool.page_size() - crate::page::TRAILER_LEN);
    let expected = (total_len as usize).div_ceil(capacity).max(1);
    let mut pages = Vec::with_capacity(expected.min(RESERVE_LIMIT / 4));
    let mut next = first;
    while next != 0 {
        if pages.len() == expected {
            return Err(chain_error(alloc, first, "is longer than its value needs"));
        }
        pages.push(next);
        let frame = pool.read(PageId::new(space.id(), next))?;
        next = read_u32(&frame, NEXT_OFFSET);
    }
    if pages.len() != expected {
        return Err(chain_error(alloc, first, "is shorter than its value needs"));
    }
    Ok(pages)
}

/// Returns every page of a chain to the free list (see the module doc and [`free_pages`]).
pub(crate) fn free_chain(
    pool: &BufferPool,
    alloc: &Allocator,
    log: Option<&Arc<Log>>,
    first: u32,
    total_len: u32,
) -> Result<()> {
    let pages = chain_pages(pool, alloc, first, total_len)?;
    free_pages(alloc, log, &pages)
}

/// Returns `pages`, which nothing references any more, to the free list in bounded mtrs:
/// each page becomes a zeroed free page (so a deleted value of an unencrypted space does not
/// linger in the file) linked to the next one of `pages`, a few per mtr
/// ([`pages_per_mtr`]); then one small mtr splices the whole run onto the free list. A
/// chain's pages, given in chain order, keep their links. Used for overflow chains and by
/// `BTree::destroy`; a crash before the splice leaves the pages leaked, not corrupt.
pub(crate) fn free_pages(alloc: &Allocator, log: Option<&Arc<Log>>, pages: &[u32]) -> Result<()> {
    let (Some(&first), Some(&last)) = (pages.first(), pages.last()) else {
        return Ok(());
    };
    let space_id = alloc.space().id();
    // Each page with the one its free-list link will name (the last one's is set by the
    // splice).
    let links: Vec<(u32, u32)> = pages
        .iter()
        .copied()
        .zip(pages[1..].iter().copied().chain([0]))
        .collect();
    for group in links.chunks(pages_per_mtr(alloc.pool())) {
        let mtr = Mtr::start(log, alloc.pool())?;
        for &(page_no, next) in group {
            let id = PageId::new(space_id, page_no);
            let mut page = mtr.write(id)?;
            crate::page::init_frame(&mut page, PageType::Free, id, 0);
            page[NEXT_FREE_OFFSET..NEXT_FREE_OFFSET + 4].copy_from_slice(&next.to_le_bytes());
        }
        mtr.commit()?;
    }
    let count = u32::try_from(pages.len()).expect("a space has fewer than 2^32 pages");
    let mtr = Mtr::start(log, alloc.pool())?;
    alloc.free_linked(&mtr, first, last, count)?;
    mtr.commit()?;
    Ok(())
}

fn chain_error(alloc: &Allocator, first: u32, problem: &str) -> Error {
    Error::Corrupt {
        path: alloc.space().path().to_path_buf(),
        problem: format!("overflow chain starting at page {first} {problem}"),
    }
}
