//! Undo logs: each writing transaction's before-images, stored in undo pages of the system
//! space, so that rollback and crash recovery can put back what the transaction changed
//! (`docs/durability.md` rules 4–6 and recovery phase C).
//!
//! An undo log is a byte stream of [`UndoRecord`]s cut into a chain of undo pages
//! ([`PageType::Undo`]). A record may span pages: a 16 MiB before-image spans about a
//! thousand 16 KiB pages, and the writer still holds at most two page guards at a time (the
//! page being filled and the next one), so logs far larger than the buffer pool work.
//!
//! ```text
//! undo page body (offsets from page::BODY_START, little-endian)
//! offset size field
//! 0      8    txn_id      the transaction that owns the log; the same on every page
//! 8      4    next_page   next page of the chain, 0 on the last page
//! 12     4    used        bytes of record stream in this page
//! 16     ..   stream      the record stream, continued from the previous page
//!
//! undo record (in the stream; may cross any number of page boundaries)
//! offset size field
//! 0      1    format      1; a reader refuses any other value
//! 1      1    flags       bit 0: a before-image follows; other bits 0
//! 2      8    prev_undo   reserved for MVCC, 0 in format 1 (see below)
//! 10     4    space_id    tablespace of the changed key
//! 14     4    key_len
//! 18     4    before_len  0 when there is no before-image
//! 22     ..   key, then before-image
//! ```
//!
//! **Room for MVCC** (issue 4 §2). A snapshot reader will need the older versions of a key:
//! the plan is that each record's `prev_undo` points at the undo record holding the version
//! before it (page number ‖ offset in the stream), forming InnoDB's "roll pointer" chain.
//! Format 1 writes 0 there and readers refuse anything else; the MVCC work gives the field
//! its meaning together with format 2, so that an older binary refuses the new records
//! instead of misreading them.
//!
//! The **undo directory** is one page of the system space listing the logs of transactions
//! that have not finished, so that recovery can find and roll them back:
//!
//! ```text
//! undo directory page body (offsets from page::BODY_START, little-endian)
//! offset size field
//! 0      4    magic       "SBUD"
//! 4      4    slot_count  slots on this page (fixed by the page size)
//! 8      ..   slots       slot_count × { txn_id u64 | first_page u32 }; first_page 0 = free
//! ```
//!
//! Nothing here is redo-logged yet: the mini-transaction step wraps every page change made
//! by this module (rule 2). Until then a crash may leave a torn record at a log's tail,
//! which [`UndoLog::read_all`] reports as corruption.

#![cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "wired into transactions by the durability work (docs/durability.md)"
    )
)]

use crate::buffer::{BufferPool, PageMut, PageRef};
use crate::error::{Error, Result};
use crate::page::{self, PageHeader, PageId, PageType, BODY_START};
use crate::space::{Allocator, SpaceFile};
use std::sync::Arc;

// Undo page body: each offset is the previous one plus its size.
const TXN_ID_OFFSET: usize = BODY_START;
const TXN_ID_LEN: usize = 8;
const NEXT_PAGE_OFFSET: usize = TXN_ID_OFFSET + TXN_ID_LEN;
const NEXT_PAGE_LEN: usize = 4;
const USED_OFFSET: usize = NEXT_PAGE_OFFSET + NEXT_PAGE_LEN;
const USED_LEN: usize = 4;
const STREAM_OFFSET: usize = USED_OFFSET + USED_LEN;

// Undo record header, relative to the record's first byte.
const FORMAT_AT: usize = 0;
const FORMAT_LEN: usize = 1;
const FLAGS_AT: usize = FORMAT_AT + FORMAT_LEN;
const FLAGS_LEN: usize = 1;
const PREV_UNDO_AT: usize = FLAGS_AT + FLAGS_LEN;
const PREV_UNDO_LEN: usize = 8;
const SPACE_ID_AT: usize = PREV_UNDO_AT + PREV_UNDO_LEN;
const SPACE_ID_LEN: usize = 4;
const KEY_LEN_AT: usize = SPACE_ID_AT + SPACE_ID_LEN;
const KEY_LEN_LEN: usize = 4;
const BEFORE_LEN_AT: usize = KEY_LEN_AT + KEY_LEN_LEN;
const BEFORE_LEN_LEN: usize = 4;
/// Bytes of a record before its key.
const RECORD_HEADER_LEN: usize = BEFORE_LEN_AT + BEFORE_LEN_LEN;

/// The record format this code writes and reads.
const FORMAT_V1: u8 = 1;
/// `flags` bit: a before-image follows the key.
const HAS_BEFORE: u8 = 1;

// Undo directory body.
const DIR_MAGIC_OFFSET: usize = BODY_START;
const DIR_MAGIC_LEN: usize = 4;
const DIR_SLOT_COUNT_OFFSET: usize = DIR_MAGIC_OFFSET + DIR_MAGIC_LEN;
const DIR_SLOT_COUNT_LEN: usize = 4;
const DIR_SLOTS_OFFSET: usize = DIR_SLOT_COUNT_OFFSET + DIR_SLOT_COUNT_LEN;
const SLOT_TXN_ID_LEN: usize = 8;
const SLOT_FIRST_PAGE_LEN: usize = 4;
const SLOT_LEN: usize = SLOT_TXN_ID_LEN + SLOT_FIRST_PAGE_LEN;
const DIR_MAGIC: [u8; DIR_MAGIC_LEN] = *b"SBUD";

/// Bytes of record stream one undo page of `page_len` bytes holds.
fn stream_capacity(page_len: usize) -> usize {
    page::body_end(page_len) - STREAM_OFFSET
}

/// Slots one directory page of `page_len` bytes holds.
fn directory_capacity(page_len: usize) -> usize {
    (page::body_end(page_len) - DIR_SLOTS_OFFSET) / SLOT_LEN
}

fn get_u32(frame: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(frame[offset..offset + 4].try_into().expect("4 bytes"))
}

fn get_u64(frame: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(frame[offset..offset + 8].try_into().expect("8 bytes"))
}

fn put(frame: &mut [u8], offset: usize, bytes: &[u8]) {
    frame[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// The committed before-image of one key a transaction changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoRecord {
    pub space_id: u32,
    pub key: Vec<u8>,
    /// The value before the change; `None` when the key did not exist (rollback deletes it).
    pub before: Option<Vec<u8>>,
}

/// A record's fixed-size header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecordHeader {
    space_id: u32,
    key_len: u32,
    /// `Some(len)` when a before-image of `len` bytes follows the key.
    before_len: Option<u32>,
}

impl RecordHeader {
    fn of(record: &UndoRecord) -> Result<RecordHeader> {
        let len32 = |len: usize| {
            u32::try_from(len).map_err(|_| Error::ValueTooLarge {
                len,
                max: u32::MAX as usize,
            })
        };
        Ok(RecordHeader {
            space_id: record.space_id,
            key_len: len32(record.key.len())?,
            before_len: record.before.as_ref().map(|b| len32(b.len())).transpose()?,
        })
    }

    fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut out = [0u8; RECORD_HEADER_LEN];
        out[FORMAT_AT] = FORMAT_V1;
        out[FLAGS_AT] = if self.before_len.is_some() {
            HAS_BEFORE
        } else {
            0
        };
        put(&mut out, PREV_UNDO_AT, &0u64.to_le_bytes());
        put(&mut out, SPACE_ID_AT, &self.space_id.to_le_bytes());
        put(&mut out, KEY_LEN_AT, &self.key_len.to_le_bytes());
        put(
            &mut out,
            BEFORE_LEN_AT,
            &self.before_len.unwrap_or(0).to_le_bytes(),
        );
        out
    }

    /// Checks every field; the lengths are only claims until the bytes are read.
    fn decode(bytes: &[u8; RECORD_HEADER_LEN]) -> Result<RecordHeader, &'static str> {
        if bytes[FORMAT_AT] != FORMAT_V1 {
            return Err("has a record of unknown format");
        }
        let flags = bytes[FLAGS_AT];
        if flags & !HAS_BEFORE != 0 {
            return Err("has a record with unknown flags");
        }
        if get_u64(bytes, PREV_UNDO_AT) != 0 {
            return Err("has a record whose reserved prev_undo is not 0");
        }
        let before_len = get_u32(bytes, BEFORE_LEN_AT);
        if flags & HAS_BEFORE == 0 && before_len != 0 {
            return Err("has a record with a before-image length but no before-image");
        }
        Ok(RecordHeader {
            space_id: get_u32(bytes, SPACE_ID_AT),
            key_len: get_u32(bytes, KEY_LEN_AT),
            before_len: (flags & HAS_BEFORE != 0).then_some(before_len),
        })
    }
}

/// The writer of one transaction's undo log.
#[derive(Debug)]
pub struct UndoLog {
    pool: Arc<BufferPool>,
    alloc: Arc<Allocator>,
    txn_id: u64,
    first_page: u32,
    /// The page appends go to, and the stream bytes it already holds.
    last_page: u32,
    last_used: usize,
}

impl UndoLog {
    /// Starts an empty log for `txn_id` in a newly allocated undo page.
    pub fn create(pool: Arc<BufferPool>, alloc: Arc<Allocator>, txn_id: u64) -> Result<UndoLog> {
        let first_page = new_undo_page(&alloc, txn_id)?.id().page_no;
        Ok(UndoLog {
            pool,
            alloc,
            txn_id,
            first_page,
            last_page: first_page,
            last_used: 0,
        })
    }

    /// The page recovery and purge start from (what the undo directory records).
    pub fn first_page(&self) -> u32 {
        self.first_page
    }

    /// Appends `record` to the end of the log, allocating pages as the stream needs them.
    ///
    /// Not all-or-nothing yet: if an allocation fails midway, the record stays torn at the
    /// log's tail and [`UndoLog::read_all`] reports it. The mini-transaction step makes an
    /// append atomic (rule 2).
    pub fn append(&mut self, record: &UndoRecord) -> Result<()> {
        let header = RecordHeader::of(record)?.encode();
        let before = record.before.as_deref().unwrap_or_default();
        let capacity = stream_capacity(self.pool.page_size());
        let space_id = self.alloc.space().id();
        let mut page = self.pool.write(PageId::new(space_id, self.last_page))?;
        for part in [&header[..], &record.key, before] {
            let mut rest = part;
            while !rest.is_empty() {
                if self.last_used == capacity {
                    let next = new_undo_page(&self.alloc, self.txn_id)?;
                    let next_no = next.id().page_no;
                    put(&mut page, NEXT_PAGE_OFFSET, &next_no.to_le_bytes());
                    // Replacing the guard releases the full page: at most two are held.
                    page = next;
                    self.last_page = next_no;
                    self.last_used = 0;
                }
                let n = rest.len().min(capacity - self.last_used);
                put(&mut page, STREAM_OFFSET + self.last_used, &rest[..n]);
                self.last_used += n;
                put(
                    &mut page,
                    USED_OFFSET,
                    &(self.last_used as u32).to_le_bytes(),
                );
                rest = &rest[n..];
            }
        }
        Ok(())
    }

    /// Reads the log starting at `first_page`: its transaction id and its records in the
    /// order they were appended (rollback applies them in reverse).
    pub fn read_all(
        pool: &BufferPool,
        alloc: &Allocator,
        first_page: u32,
    ) -> Result<(u64, Vec<UndoRecord>)> {
        let mut chain = ChainReader::open(pool, alloc, first_page)?;
        let mut records = Vec::new();
        while !chain.at_end()? {
            let mut header = Vec::with_capacity(RECORD_HEADER_LEN);
            chain.read_into(&mut header, RECORD_HEADER_LEN)?;
            let header = header
                .as_slice()
                .try_into()
                .expect("read_into read them all");
            let header = RecordHeader::decode(header).map_err(|problem| chain.error(problem))?;
            let mut key = Vec::new();
            chain.read_into(&mut key, header.key_len as usize)?;
            let before = match header.before_len {
                None => None,
                Some(len) => {
                    let mut before = Vec::new();
                    chain.read_into(&mut before, len as usize)?;
                    Some(before)
                }
            };
            records.push(UndoRecord {
                space_id: header.space_id,
                key,
                before,
            });
        }
        Ok((chain.txn_id, records))
    }

    /// Purge: returns every page of the log starting at `first_page` to the free list. The
    /// whole chain is checked first, so a damaged chain frees nothing.
    pub fn free(pool: &BufferPool, alloc: &Allocator, first_page: u32) -> Result<()> {
        let mut chain = ChainReader::open(pool, alloc, first_page)?;
        let mut pages = vec![first_page];
        while let Some(page_no) = chain.advance()? {
            pages.push(page_no);
        }
        drop(chain);
        for page_no in pages {
            alloc.free(page_no)?;
        }
        Ok(())
    }
}

/// Allocates an undo page owned by `txn_id`, with an empty stream and no successor.
fn new_undo_page(alloc: &Allocator, txn_id: u64) -> Result<PageMut> {
    let mut page = alloc.allocate(PageType::Undo)?;
    put(&mut page, TXN_ID_OFFSET, &txn_id.to_le_bytes());
    Ok(page)
}

/// Reads a log's stream page by page, checking each page before using it. Holds one guard.
struct ChainReader<'a> {
    pool: &'a BufferPool,
    alloc: &'a Allocator,
    first_page: u32,
    txn_id: u64,
    /// Pages visited so far; more than the space has means a cycle.
    pages_seen: u32,
    /// The current page; `None` only before the first is read.
    page: Option<PageRef>,
    /// Stream bytes of `page` already consumed, and its `used` and `next_page` fields.
    pos: usize,
    used: usize,
    next: u32,
}

impl<'a> ChainReader<'a> {
    fn open(pool: &'a BufferPool, alloc: &'a Allocator, first_page: u32) -> Result<Self> {
        let mut reader = ChainReader {
            pool,
            alloc,
            first_page,
            txn_id: 0,
            pages_seen: 0,
            page: None,
            pos: 0,
            used: 0,
            next: first_page,
        };
        if reader.advance()?.is_none() {
            return Err(reader.error("is page 0"));
        }
        Ok(reader)
    }

    /// Moves to the next page of the chain and returns its number; `None` at the end.
    fn advance(&mut self) -> Result<Option<u32>> {
        let page_no = self.next;
        if page_no == 0 {
            return Ok(None);
        }
        let page_count = self.alloc.space().header().page_count;
        if page_no >= page_count {
            return Err(self.error(&format!("links to page {page_no} beyond the end")));
        }
        if self.pages_seen >= page_count {
            return Err(self.error("is cyclic"));
        }
        let page = self
            .pool
            .read(PageId::new(self.alloc.space().id(), page_no))?;
        let header = PageHeader::read(&page).map_err(|source| Error::Page {
            path: self.alloc.space().path().to_path_buf(),
            source,
        })?;
        if header.page_type != PageType::Undo {
            return Err(self.error(&format!(
                "reaches page {page_no}, which is a {:?} page, not an undo page",
                header.page_type
            )));
        }
        let used = get_u32(&page, USED_OFFSET) as usize;
        if used > stream_capacity(page.len()) {
            return Err(self.error(&format!("has page {page_no} claiming {used} bytes")));
        }
        let txn_id = get_u64(&page, TXN_ID_OFFSET);
        if self.pages_seen == 0 {
            self.txn_id = txn_id;
        } else if txn_id != self.txn_id {
            return Err(self.error(&format!(
                "reaches page {page_no} of transaction {txn_id}, not {}",
                self.txn_id
            )));
        }
        self.next = get_u32(&page, NEXT_PAGE_OFFSET);
        self.page = Some(page);
        self.pos = 0;
        self.used = used;
        self.pages_seen += 1;
        Ok(Some(page_no))
    }

    /// True when the stream has no more bytes (skipping pages with nothing left).
    fn at_end(&mut self) -> Result<bool> {
        while self.pos == self.used {
            if self.advance()?.is_none() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Appends the next `len` stream bytes to `out`. Memory grows only as bytes actually
    /// arrive, so a garbage length costs an error, never a huge allocation.
    fn read_into(&mut self, out: &mut Vec<u8>, mut len: usize) -> Result<()> {
        while len > 0 {
            if self.at_end()? {
                return Err(self.error("ends inside a record"));
            }
            let page = self
                .page
                .as_ref()
                .expect("a stream byte is on a loaded page");
            let n = len.min(self.used - self.pos);
            let start = STREAM_OFFSET + self.pos;
            out.extend_from_slice(&page[start..start + n]);
            self.pos += n;
            len -= n;
        }
        Ok(())
    }

    fn error(&self, problem: &str) -> Error {
        Error::Corrupt {
            path: self.alloc.space().path().to_path_buf(),
            problem: format!("undo log starting at page {} {problem}", self.first_page),
        }
    }
}

/// The page listing the undo logs of unfinished transactions (what recovery rolls back).
///
/// The directory page's latch guards its slots: `register` and `unregister` hold it
/// exclusively for their whole scan-and-write, so concurrent transactions never take one
/// slot twice.
#[derive(Debug)]
pub struct UndoDirectory {
    pool: Arc<BufferPool>,
    space: Arc<SpaceFile>,
    page_no: u32,
    capacity: usize,
}

impl UndoDirectory {
    /// Allocates an empty directory page and returns its number (to be kept where start-up
    /// finds it).
    pub fn create(alloc: &Allocator) -> Result<u32> {
        let mut page = alloc.allocate(PageType::Undo)?;
        let capacity = directory_capacity(page.len()) as u32;
        put(&mut page, DIR_MAGIC_OFFSET, &DIR_MAGIC);
        put(&mut page, DIR_SLOT_COUNT_OFFSET, &capacity.to_le_bytes());
        Ok(page.id().page_no)
    }

    /// Opens the directory at `page_no`, checking that it is one.
    pub fn open(pool: Arc<BufferPool>, alloc: &Allocator, page_no: u32) -> Result<UndoDirectory> {
        let space = Arc::clone(alloc.space());
        let corrupt = |problem: &str| Error::Corrupt {
            path: space.path().to_path_buf(),
            problem: format!("undo directory page {page_no} {problem}"),
        };
        if page_no == 0 || page_no >= space.header().page_count {
            return Err(corrupt("is not a page of the space"));
        }
        let capacity = {
            let page = pool.read(PageId::new(space.id(), page_no))?;
            if page[DIR_MAGIC_OFFSET..DIR_SLOT_COUNT_OFFSET] != DIR_MAGIC {
                return Err(corrupt("has no directory magic"));
            }
            let capacity = get_u32(&page, DIR_SLOT_COUNT_OFFSET) as usize;
            if capacity != directory_capacity(page.len()) {
                return Err(corrupt(&format!("claims {capacity} slots")));
            }
            capacity
        };
        Ok(UndoDirectory {
            pool,
            space,
            page_no,
            capacity,
        })
    }

    /// How many transactions can be registered at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records that `txn_id`'s undo log starts at `first_page`; returns the slot to pass to
    /// [`UndoDirectory::unregister`].
    ///
    /// # Panics
    ///
    /// If `first_page` is 0 (page 0 is the space header, never an undo page).
    pub fn register(&self, txn_id: u64, first_page: u32) -> Result<usize> {
        assert_ne!(first_page, 0, "page 0 is never an undo page");
        let mut page = self.pool.write(self.id())?;
        let slot = (0..self.capacity)
            .find(|&slot| get_u32(&page, first_page_offset(slot)) == 0)
            .ok_or(Error::TooManyTransactions { max: self.capacity })?;
        put(&mut page, slot_offset(slot), &txn_id.to_le_bytes());
        put(
            &mut page,
            first_page_offset(slot),
            &first_page.to_le_bytes(),
        );
        Ok(slot)
    }

    /// Frees `slot` (the transaction committed or rolled back and its log was purged).
    ///
    /// # Panics
    ///
    /// If `slot` is not below [`UndoDirectory::capacity`].
    pub fn unregister(&self, slot: usize) -> Result<()> {
        assert!(
            slot < self.capacity,
            "undo directory slot {slot} out of range"
        );
        let mut page = self.pool.write(self.id())?;
        put(&mut page, slot_offset(slot), &[0; SLOT_LEN]);
        Ok(())
    }

    /// Every registered `(txn_id, first_page)`, in slot order.
    pub fn active(&self) -> Result<Vec<(u64, u32)>> {
        let page_count = self.space.header().page_count;
        let page = self.pool.read(self.id())?;
        let mut active = Vec::new();
        for slot in 0..self.capacity {
            let first_page = get_u32(&page, first_page_offset(slot));
            if first_page == 0 {
                continue;
            }
            if first_page >= page_count {
                return Err(Error::Corrupt {
                    path: self.space.path().to_path_buf(),
                    problem: format!(
                        "undo directory slot {slot} points at page {first_page} beyond the end"
                    ),
                });
            }
            active.push((get_u64(&page, slot_offset(slot)), first_page));
        }
        Ok(active)
    }

    fn id(&self) -> PageId {
        PageId::new(self.space.id(), self.page_no)
    }
}

fn slot_offset(slot: usize) -> usize {
    DIR_SLOTS_OFFSET + slot * SLOT_LEN
}

fn first_page_offset(slot: usize) -> usize {
    slot_offset(slot) + SLOT_TXN_ID_LEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemVfs;
    use crate::page::PageSize;
    use crate::space::{NewSpace, SpaceEncryption, SpaceKind, SpaceSet, SYSTEM_SPACE_ID};
    use std::path::{Path, PathBuf};
    use strongbox_keyring::provider::{KeyProvider, MemoryKeyProvider};
    use strongbox_keyring::Algorithm;

    const MIB: usize = 1 << 20;

    /// A system space on a `MemVfs` with its buffer pool and allocator, as `Db::open` builds
    /// them.
    struct Fixture {
        vfs: MemVfs,
        path: PathBuf,
        pool: Arc<BufferPool>,
        alloc: Arc<Allocator>,
    }

    impl Fixture {
        fn new(page_size: u32, pool_bytes: usize, keys: Option<&MemoryKeyProvider>) -> Fixture {
            let vfs = MemVfs::new();
            let path = Path::new("/db/system.sbd").to_path_buf();
            let spec = NewSpace {
                id: SYSTEM_SPACE_ID,
                kind: SpaceKind::System,
                page_size: PageSize::try_from(page_size).unwrap(),
                encryption: keys.map(|_| SpaceEncryption {
                    key_id: 1,
                    algorithm: Algorithm::AesCtr,
                }),
            };
            let keyring = keys.map(|k| k as &dyn KeyProvider);
            let space = Arc::new(
                SpaceFile::create(&vfs, &path, spec, keyring, Default::default()).unwrap(),
            );
            let spaces = Arc::new(SpaceSet::new());
            spaces.insert(Arc::clone(&space));
            let pool = BufferPool::new(pool_bytes, page_size as usize, spaces as _).unwrap();
            let alloc = Arc::new(Allocator::new(space, Arc::clone(&pool)));
            Fixture {
                vfs,
                path,
                pool,
                alloc,
            }
        }

        fn log(&self, txn_id: u64) -> UndoLog {
            UndoLog::create(Arc::clone(&self.pool), Arc::clone(&self.alloc), txn_id).unwrap()
        }

        fn read_all(&self, first_page: u32) -> Result<(u64, Vec<UndoRecord>)> {
            UndoLog::read_all(&self.pool, &self.alloc, first_page)
        }

        fn page_count(&self) -> u32 {
            self.alloc.space().header().page_count
        }

        fn free_count(&self) -> u32 {
            self.alloc.space().header().free_count
        }

        fn write(&self, page_no: u32) -> PageMut {
            self.pool
                .write(PageId::new(SYSTEM_SPACE_ID, page_no))
                .unwrap()
        }
    }

    fn record(i: usize, before_len: Option<usize>) -> UndoRecord {
        UndoRecord {
            space_id: 7 + (i % 3) as u32,
            key: format!("key-{i:05}").into_bytes(),
            before: before_len.map(|len| (0..len).map(|b| (b * 31 + i) as u8).collect()),
        }
    }

    /// A small deterministic generator for garbage (xorshift64).
    fn garbage(seed: &mut u64, out: &mut [u8]) {
        for byte in out {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *byte = *seed as u8;
        }
    }

    #[test]
    fn records_of_every_size_read_back_in_order_through_a_small_pool() {
        let fx = Fixture::new(16384, MIB, None);
        let mut log = fx.log(42);
        let mut expected = Vec::new();
        for i in 0..300 {
            let before = match i % 4 {
                0 => None,
                1 => Some(0),
                2 => Some(i * 7),
                _ => Some(stream_capacity(16384) - RECORD_HEADER_LEN - 9 + i % 3),
            };
            expected.push(record(i, before));
            if i == 100 {
                expected.push(record(i, Some(MIB)));
            }
            if i == 200 {
                expected.push(record(i, Some(16 * MIB)));
            }
        }
        for rec in &expected {
            log.append(rec).unwrap();
        }
        assert!(fx.page_count() > 1024, "16 MiB spans about 1000 pages");
        let (txn_id, records) = fx.read_all(log.first_page()).unwrap();
        assert_eq!(txn_id, 42);
        assert_eq!(records.len(), expected.len());
        for (i, (got, want)) in records.iter().zip(&expected).enumerate() {
            assert!(got == want, "record {i} differs");
        }
    }

    #[test]
    fn an_empty_log_reads_back_empty() {
        let fx = Fixture::new(4096, MIB, None);
        let log = fx.log(u64::MAX);
        assert_eq!(fx.read_all(log.first_page()).unwrap(), (u64::MAX, vec![]));
    }

    #[test]
    fn free_returns_every_page_of_the_chain_and_they_are_reused() {
        let fx = Fixture::new(4096, MIB, None);
        let other = fx.log(1);
        let (count_before, free_before) = (fx.page_count(), fx.free_count());
        let mut log = fx.log(2);
        for i in 0..50 {
            log.append(&record(i, Some(1000))).unwrap();
        }
        let chain_len = fx.page_count() - count_before;
        assert!(chain_len > 10, "{chain_len}");
        UndoLog::free(&fx.pool, &fx.alloc, log.first_page()).unwrap();
        assert_eq!(fx.free_count(), free_before + chain_len);
        assert_eq!(fx.alloc.free_pages().unwrap().len() as u32, chain_len);
        assert_eq!(fx.read_all(other.first_page()).unwrap(), (1, vec![]));

        let mut again = fx.log(3);
        for i in 0..50 {
            again.append(&record(i, Some(1000))).unwrap();
        }
        assert_eq!(
            fx.page_count(),
            count_before + chain_len,
            "freed pages reused"
        );
        assert_eq!(fx.free_count(), free_before);
    }

    #[test]
    fn chains_that_leave_the_log_are_errors() {
        let fx = Fixture::new(4096, MIB, None);
        let not_undo = fx.alloc.allocate(PageType::Overflow).unwrap().id().page_no;
        let mut log = fx.log(9);
        for i in 0..10 {
            log.append(&record(i, Some(1000))).unwrap();
        }
        let first = log.first_page();
        let problem = |first_page| fx.read_all(first_page).unwrap_err().to_string();
        assert!(problem(0).contains("is page 0"));
        assert!(problem(10_000).contains("beyond the end"));
        assert!(problem(not_undo).contains("not an undo page"));

        // A page of another transaction spliced into the chain.
        let stranger = fx.log(10).first_page();
        put(
            &mut fx.write(first),
            NEXT_PAGE_OFFSET,
            &stranger.to_le_bytes(),
        );
        assert!(problem(first).contains("of transaction 10, not 9"));
        // A cycle, which free must refuse without freeing anything.
        put(&mut fx.write(first), NEXT_PAGE_OFFSET, &first.to_le_bytes());
        assert!(fx.read_all(first).is_err());
        let free_before = fx.free_count();
        let error = UndoLog::free(&fx.pool, &fx.alloc, first).unwrap_err();
        assert!(error.to_string().contains("cyclic"), "{error}");
        assert_eq!(fx.free_count(), free_before);
        // A page claiming more stream than it can hold.
        put(&mut fx.write(first), USED_OFFSET, &u32::MAX.to_le_bytes());
        assert!(problem(first).contains("claiming"));
    }

    #[test]
    fn garbage_records_are_errors_without_panics_or_huge_allocations() {
        let fx = Fixture::new(4096, MIB, None);
        let first = fx.log(5).first_page();
        let capacity = stream_capacity(4096);
        let set_stream = |stream: &[u8]| {
            let mut page = fx.write(first);
            put(&mut page, USED_OFFSET, &(stream.len() as u32).to_le_bytes());
            put(&mut page, STREAM_OFFSET, stream);
        };
        let problem = || fx.read_all(first).unwrap_err().to_string();

        // A key length of 4 GiB in a 22-byte stream: an error, not a 4 GiB allocation.
        let mut header = RecordHeader {
            space_id: 1,
            key_len: u32::MAX,
            before_len: Some(u32::MAX),
        }
        .encode();
        set_stream(&header);
        assert!(problem().contains("ends inside a record"));
        header[FORMAT_AT] = 2;
        set_stream(&header);
        assert!(problem().contains("unknown format"));
        header[FORMAT_AT] = FORMAT_V1;
        header[FLAGS_AT] = 0x80;
        set_stream(&header);
        assert!(problem().contains("unknown flags"));
        header[FLAGS_AT] = HAS_BEFORE;
        put(&mut header, PREV_UNDO_AT, &1u64.to_le_bytes());
        set_stream(&header);
        assert!(problem().contains("prev_undo"));

        let mut seed = 0x9E37_79B9_7F4A_7C15;
        let mut stream = vec![0u8; capacity];
        for round in 0..2000 {
            garbage(&mut seed, &mut stream);
            let len = (seed as usize) % (capacity + 1);
            if round % 2 == 0 {
                // Mostly well-formed headers, so the lengths get exercised too.
                stream[FORMAT_AT] = FORMAT_V1;
                stream[FLAGS_AT] &= HAS_BEFORE;
                put(&mut stream, PREV_UNDO_AT, &0u64.to_le_bytes());
            }
            set_stream(&stream[..len]);
            let _ = fx.read_all(first);
        }
    }

    #[test]
    fn the_directory_registers_lists_and_unregisters_across_reopen() {
        let fx = Fixture::new(16384, MIB, None);
        let page_no = UndoDirectory::create(&fx.alloc).unwrap();
        let dir = UndoDirectory::open(Arc::clone(&fx.pool), &fx.alloc, page_no).unwrap();
        assert!(dir.capacity() > 1000, "{}", dir.capacity());
        assert_eq!(dir.active().unwrap(), vec![]);
        let logs: Vec<UndoLog> = (0..3).map(|t| fx.log(100 + t)).collect();
        let slots: Vec<usize> = logs
            .iter()
            .zip(100..)
            .map(|(log, t)| dir.register(t, log.first_page()).unwrap())
            .collect();
        assert_eq!(slots, vec![0, 1, 2]);
        dir.unregister(slots[1]).unwrap();
        let reopened = UndoDirectory::open(Arc::clone(&fx.pool), &fx.alloc, page_no).unwrap();
        assert_eq!(
            reopened.active().unwrap(),
            vec![(100, logs[0].first_page()), (102, logs[2].first_page())]
        );
        assert_eq!(
            reopened.register(0, logs[1].first_page()).unwrap(),
            1,
            "reuses the slot"
        );

        let error = UndoDirectory::open(Arc::clone(&fx.pool), &fx.alloc, logs[0].first_page())
            .unwrap_err()
            .to_string();
        assert!(error.contains("no directory magic"), "{error}");
        assert!(UndoDirectory::open(Arc::clone(&fx.pool), &fx.alloc, 9999).is_err());
    }

    #[test]
    fn a_full_directory_refuses_with_too_many_transactions() {
        let fx = Fixture::new(4096, MIB, None);
        let page_no = UndoDirectory::create(&fx.alloc).unwrap();
        let dir = UndoDirectory::open(Arc::clone(&fx.pool), &fx.alloc, page_no).unwrap();
        let max = dir.capacity();
        assert_eq!(max, directory_capacity(4096));
        let first_page = fx.log(1).first_page();
        for txn_id in 0..max as u64 {
            dir.register(txn_id, first_page).unwrap();
        }
        let error = dir.register(u64::MAX, first_page).unwrap_err();
        assert!(
            matches!(error, Error::TooManyTransactions { max: m } if m == max),
            "{error}"
        );
        assert!(error.to_string().contains("commit or roll back"), "{error}");
        dir.unregister(max / 2).unwrap();
        assert_eq!(dir.register(u64::MAX, first_page).unwrap(), max / 2);
        assert_eq!(dir.active().unwrap().len(), max);
    }

    /// Writes before-images and keys carrying `marker`, checkpoints (flushes the pool), and
    /// says whether the space file contains the marker.
    fn marker_reaches_disk(keys: Option<&MemoryKeyProvider>) -> bool {
        const MARKER: &[u8] = b"UNDO-PLAINTEXT-MARKER-5d1c";
        let fx = Fixture::new(4096, MIB, keys);
        let mut log = fx.log(77);
        for i in 0..40 {
            let before = MARKER.repeat(1 + i * 5);
            log.append(&UndoRecord {
                space_id: 3,
                key: [MARKER, &i.to_le_bytes()].concat(),
                before: Some(before),
            })
            .unwrap();
        }
        fx.pool.flush_all().unwrap();
        let file = fx.vfs.contents(&fx.path).unwrap();
        assert!(file.len() > 4 * 4096, "the log reached the file");
        assert_eq!(fx.read_all(log.first_page()).unwrap().1.len(), 40);
        file.windows(MARKER.len()).any(|w| w == MARKER)
    }

    #[test]
    fn an_encrypted_system_space_keeps_before_images_off_disk() {
        let keys = MemoryKeyProvider::new();
        keys.add_random(1, 1, 256).unwrap();
        assert!(!marker_reaches_disk(Some(&keys)), "plaintext undo on disk");
        assert!(marker_reaches_disk(None), "control: the marker is findable");
    }
}
