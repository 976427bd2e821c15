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
//! Writing holds at most two page guards at a time (the page being filled and the next
//! one), so a 16 MiB value works with a buffer pool far smaller than the value.

use crate::buffer::BufferPool;
use crate::error::{Error, Result};
use crate::page::{PageId, PageType, BODY_START};
use crate::space::Allocator;

const NEXT_OFFSET: usize = BODY_START;
const CHUNK_LEN_OFFSET: usize = NEXT_OFFSET + 4;
const CHUNK_OFFSET: usize = CHUNK_LEN_OFFSET + 4;

/// Bytes of value one overflow page holds.
pub fn chunk_capacity(body_end: usize) -> usize {
    body_end - CHUNK_OFFSET
}

fn read_u32(frame: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(frame[offset..offset + 4].try_into().expect("4 bytes"))
}

/// Writes `value` into a new chain and returns its first page.
pub fn write_chain(alloc: &Allocator, body_end: usize, value: &[u8]) -> Result<u32> {
    let capacity = chunk_capacity(body_end);
    let mut chunks = value.chunks(capacity).peekable();
    let mut current = alloc.allocate(PageType::Overflow)?;
    let first = current.id().page_no;
    while let Some(chunk) = chunks.next() {
        current[CHUNK_LEN_OFFSET..CHUNK_OFFSET]
            .copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        current[CHUNK_OFFSET..CHUNK_OFFSET + chunk.len()].copy_from_slice(chunk);
        if chunks.peek().is_none() {
            break;
        }
        let next = alloc.allocate(PageType::Overflow)?;
        current[NEXT_OFFSET..CHUNK_LEN_OFFSET].copy_from_slice(&next.id().page_no.to_le_bytes());
        current = next;
    }
    Ok(first)
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
    let mut value = Vec::with_capacity(total);
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
    let mut pages = Vec::with_capacity(expected);
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

/// Returns every page of a chain to the free list.
pub fn free_chain(pool: &BufferPool, alloc: &Allocator, first: u32, total_len: u32) -> Result<()> {
    for page_no in chain_pages(pool, alloc, first, total_len)? {
        alloc.free(page_no)?;
    }
    Ok(())
}

fn chain_error(alloc: &Allocator, first: u32, problem: &str) -> Error {
    Error::Corrupt {
        path: alloc.space().path().to_path_buf(),
        problem: format!("overflow chain starting at page {first} {problem}"),
    }
}
