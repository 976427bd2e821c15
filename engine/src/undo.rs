//! Undo logs: each writing transaction's before-images, stored in undo pages of the system
//! space, so that rollback and crash recovery can put back what the transaction changed
//! (`docs/durability.md` rules 4–6 and recovery phase C).
//!
//! An undo log is a byte stream of [`UndoRecord`]s cut into a chain of undo pages
//! ([`PageType::Undo`]). A record may span pages: a 16 MiB before-image spans about a
//! thousand 16 KiB pages, and an append latches at most `pages_per_mtr` + 1 pages at a time
//! (one mini-transaction's worth), so logs far larger than the buffer pool work.
//!
//! Lock order: a transaction's undo pages are its own (no other thread latches them), so
//! an append may latch its last page before it takes the allocation lock for the next.
//! Purge frees a log only after its slot is marked finished; `first_page` then moves
//! through the chain, so a partly purged log is never read as records.
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
//!                         txn_id bit 63 = FINISHED: committed or rolled back, only purge left
//! ```
//!
//! **Redo.** Every page change here happens inside a mini-transaction (`mtr.rs`), so redo
//! protects the undo like any page. A log is created and registered in one mtr; an append
//! writes at most `mtr::pages_per_mtr` new pages per mtr, so a record larger than that can be
//! cut by a crash: [`UndoLog::read_all`] stops at a record that the stream ends inside (a
//! torn tail is only ever the last record, and the change it describes was never made —
//! the tree change comes after the whole record is logged). Marking a slot finished is the
//! commit point; purge then frees the chain a few pages per mtr, moving the slot's
//! `first_page` forward as it goes, so a crash mid-purge leaks nothing.

use crate::buffer::{BufferPool, PageMut, PageRef};
use crate::error::{Error, Result};
use crate::mtr::{pages_per_mtr, Mtr};
use crate::page::{self, PageHeader, PageId, PageType, BODY_START};
use crate::space::{Allocator, SpaceFile};
use std::sync::Arc;
use strongbox_wal::Log;

/// Slot `txn_id` bit: the transaction committed or rolled back; only purge is left.
const FINISHED: u64 = 1 << 63;

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
    log: Option<Arc<Log>>,
    txn_id: u64,
    first_page: u32,
    /// The page appends go to, and the stream bytes it already holds.
    last_page: u32,
    last_used: usize,
    /// An append failed after some of its mtrs committed: the log ends in a torn record,
    /// and only rollback may use it now.
    torn: bool,
}

impl UndoLog {
    /// Starts an empty log for `txn_id` in a page allocated in `mtr` (which should also
    /// register it in the directory, so that a crash cannot leak the page).
    pub(crate) fn create(
        mtr: &Mtr,
        pool: Arc<BufferPool>,
        alloc: Arc<Allocator>,
        log: Option<Arc<Log>>,
        txn_id: u64,
    ) -> Result<UndoLog> {
        let first_page = new_undo_page(mtr, &alloc, txn_id)?.id().page_no;
        Ok(UndoLog {
            pool,
            alloc,
            log,
            txn_id,
            first_page,
            last_page: first_page,
            last_used: 0,
            torn: false,
        })
    }

    /// The page recovery and purge start from (what the undo directory records).
    pub fn first_page(&self) -> u32 {
        self.first_page
    }

    /// Appends `record` to the end of the log, allocating pages as the stream needs them,
    /// at most `pages_per_mtr` per mini-transaction (see the module doc for a torn tail).
    pub fn append(&mut self, record: &UndoRecord) -> Result<()> {
        if self.torn {
            return Err(Error::Poisoned(format!(
                "transaction {}: an earlier undo append failed half-way; roll it back",
                self.txn_id
            )));
        }
        let header = RecordHeader::of(record)?.encode();
        let before = record.before.as_deref().unwrap_or_default();
        let mut parts = [&header[..], &record.key, before].into_iter();
        let mut rest: &[u8] = parts.next().expect("three parts");
        let mut committed_some = false;
        loop {
            // An mtr that fails is aborted: its pages and allocations are undone, so the
            // write position must go back too.
            let position = (self.last_page, self.last_used);
            match self.append_some(&mut parts, &mut rest) {
                Ok(true) => return Ok(()),
                Ok(false) => committed_some = true,
                Err(error) => {
                    (self.last_page, self.last_used) = position;
                    // Part of the record is in the log: it must stay the tail (a torn
                    // tail, which `read_all` leaves out), so nothing more may be appended.
                    self.torn = committed_some;
                    return Err(error);
                }
            }
        }
    }

    /// One mtr of [`UndoLog::append`]: writes stream bytes until the record ends (true) or
    /// the mtr has allocated `pages_per_mtr` pages (false), and commits.
    fn append_some<'r>(
        &mut self,
        parts: &mut impl Iterator<Item = &'r [u8]>,
        rest: &mut &'r [u8],
    ) -> Result<bool> {
        let capacity = stream_capacity(self.pool.page_size());
        let space_id = self.alloc.space().id();
        let mtr = Mtr::start(self.log.as_ref(), &self.pool)?;
        let mut page = mtr.write(PageId::new(space_id, self.last_page))?;
        let mut new_pages = 0;
        let done = loop {
            while rest.is_empty() {
                match parts.next() {
                    Some(part) => *rest = part,
                    None => break,
                }
            }
            if rest.is_empty() {
                break true;
            }
            if self.last_used == capacity {
                if new_pages == pages_per_mtr(&self.pool) {
                    break false;
                }
                let next = new_undo_page(&mtr, &self.alloc, self.txn_id)?;
                let next_no = next.id().page_no;
                put(&mut page, NEXT_PAGE_OFFSET, &next_no.to_le_bytes());
                page = next;
                new_pages += 1;
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
            *rest = &rest[n..];
        };
        drop(page);
        mtr.commit()?;
        Ok(done)
    }

    /// Reads the log starting at `first_page`: its transaction id and its records in the
    /// order they were appended (rollback applies them in reverse). A record the stream
    /// ends inside is a torn tail (see the module doc) and is left out.
    pub fn read_all(
        pool: &BufferPool,
        alloc: &Allocator,
        first_page: u32,
    ) -> Result<(u64, Vec<UndoRecord>)> {
        let mut chain = ChainReader::open(pool, alloc, first_page)?;
        let mut records = Vec::new();
        while !chain.at_end()? {
            let mut header = Vec::with_capacity(RECORD_HEADER_LEN);
            if !chain.read_into(&mut header, RECORD_HEADER_LEN)? {
                break;
            }
            let header = header
                .as_slice()
                .try_into()
                .expect("read_into read them all");
            let header = RecordHeader::decode(header).map_err(|problem| chain.error(problem))?;
            let mut key = Vec::new();
            if !chain.read_into(&mut key, header.key_len as usize)? {
                break;
            }
            let before = match header.before_len {
                None => None,
                Some(len) => {
                    let mut before = Vec::new();
                    if !chain.read_into(&mut before, len as usize)? {
                        break;
                    }
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

    /// The page numbers of the log starting at `first_page`, checked as `read_all` checks
    /// them.
    pub(crate) fn pages(pool: &BufferPool, alloc: &Allocator, first_page: u32) -> Result<Vec<u32>> {
        let mut chain = ChainReader::open(pool, alloc, first_page)?;
        let mut pages = vec![first_page];
        while let Some(page_no) = chain.advance()? {
            pages.push(page_no);
        }
        Ok(pages)
    }

    /// Purge: frees the log starting at `first_page`, registered in `slot` of `directory`,
    /// up to `pages_per_mtr` pages per mini-transaction; each moves the slot's first page
    /// past the pages it freed, and the last one clears the slot. The chain is checked
    /// first, so a damaged chain frees nothing.
    pub(crate) fn purge(
        pool: &Arc<BufferPool>,
        alloc: &Allocator,
        log: Option<&Arc<Log>>,
        directory: &UndoDirectory,
        slot: usize,
        first_page: u32,
    ) -> Result<()> {
        let pages = UndoLog::pages(pool, alloc, first_page)?;
        let mut groups = pages.chunks(pages_per_mtr(pool)).peekable();
        while let Some(group) = groups.next() {
            let mtr = Mtr::start(log, pool)?;
            for &page_no in group {
                alloc.free(&mtr, page_no)?;
            }
            match groups.peek() {
                Some(next) => directory.set_first_page(&mtr, slot, next[0])?,
                None => directory.unregister(&mtr, slot)?,
            }
            mtr.commit()?;
        }
        Ok(())
    }
}

/// Allocates an undo page owned by `txn_id`, with an empty stream and no successor.
fn new_undo_page(mtr: &Mtr, alloc: &Allocator, txn_id: u64) -> Result<PageMut> {
    let mut page = alloc.allocate(mtr, PageType::Undo)?;
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

    /// Appends the next `len` stream bytes to `out`; false if the stream ends first.
    /// Memory grows only as bytes actually arrive, so a garbage length costs nothing.
    fn read_into(&mut self, out: &mut Vec<u8>, mut len: usize) -> Result<bool> {
        while len > 0 {
            if self.at_end()? {
                return Ok(false);
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
        Ok(true)
    }

    fn error(&self, problem: &str) -> Error {
        Error::Corrupt {
            path: self.alloc.space().path().to_path_buf(),
            problem: format!("undo log starting at page {} {problem}", self.first_page),
        }
    }
}

/// One registered undo log, as [`UndoDirectory::active`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveLog {
    pub slot: usize,
    pub txn_id: u64,
    pub first_page: u32,
    /// Committed or rolled back: only purge is left.
    pub finished: bool,
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
    /// Allocates an empty directory page in `mtr` and returns its number (to be kept where
    /// start-up finds it).
    pub(crate) fn create(mtr: &Mtr, alloc: &Allocator) -> Result<u32> {
        let mut page = alloc.allocate(mtr, PageType::Undo)?;
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
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records, in `mtr`, that `txn_id`'s undo log starts at `first_page`; returns the slot
    /// to pass to the other calls.
    ///
    /// # Panics
    ///
    /// If `first_page` is 0 (page 0 is the space header, never an undo page), or `txn_id`
    /// has bit 63 set.
    pub(crate) fn register(&self, mtr: &Mtr, txn_id: u64, first_page: u32) -> Result<usize> {
        assert_ne!(first_page, 0, "page 0 is never an undo page");
        assert_eq!(txn_id & FINISHED, 0, "transaction ids stay below 2^63");
        let mut page = mtr.write(self.id())?;
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

    /// Marks `slot` finished in `mtr`: the transaction committed or rolled back, so
    /// recovery only purges its log. Logged together with the Commit record, this is the
    /// commit point.
    pub(crate) fn mark_finished(&self, mtr: &Mtr, slot: usize) -> Result<()> {
        let mut page = mtr.write(self.id())?;
        let txn_id = get_u64(&page, self.checked(slot));
        put(
            &mut page,
            slot_offset(slot),
            &(txn_id | FINISHED).to_le_bytes(),
        );
        Ok(())
    }

    /// Moves `slot`'s first page forward (purge freed the pages before it).
    pub(crate) fn set_first_page(&self, mtr: &Mtr, slot: usize, first_page: u32) -> Result<()> {
        let mut page = mtr.write(self.id())?;
        self.checked(slot);
        put(
            &mut page,
            first_page_offset(slot),
            &first_page.to_le_bytes(),
        );
        Ok(())
    }

    /// Frees `slot` (its log has been purged).
    pub(crate) fn unregister(&self, mtr: &Mtr, slot: usize) -> Result<()> {
        let mut page = mtr.write(self.id())?;
        put(&mut page, self.checked(slot), &[0; SLOT_LEN]);
        Ok(())
    }

    /// The offset of `slot`.
    ///
    /// # Panics
    ///
    /// If `slot` is not below [`UndoDirectory::capacity`].
    fn checked(&self, slot: usize) -> usize {
        assert!(
            slot < self.capacity,
            "undo directory slot {slot} out of range"
        );
        slot_offset(slot)
    }

    /// Every registered log, in slot order.
    pub fn active(&self) -> Result<Vec<ActiveLog>> {
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
            let txn_id = get_u64(&page, slot_offset(slot));
            active.push(ActiveLog {
                slot,
                txn_id: txn_id & !FINISHED,
                first_page,
                finished: txn_id & FINISHED != 0,
            });
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
    use crate::io::{MemVfs, Vfs};
    /// Every fixture below has at least 128 frames, so mtrs get the full size.
    use crate::mtr::MAX_PAGES_PER_MTR as PAGES_PER_MTR;
    use crate::page::PageSize;
    use crate::redo;
    use crate::space::{
        NewSpace, SpaceEncryption, SpaceKind, SpaceSet, NEXT_FREE_OFFSET, SYSTEM_SPACE_ID,
    };
    use std::path::Path;
    use strongbox_keyring::provider::{KeyProvider, MemoryKeyProvider};
    use strongbox_keyring::Algorithm;
    use strongbox_wal::{LogConfig, LoggedRecord, Lsn, Record, RecoveryReport};

    const MIB: usize = 1 << 20;
    const SPACE_PATH: &str = "/db/system.sbd";
    const LOG_DIR: &str = "/db/redo";

    fn log_config() -> LogConfig {
        LogConfig {
            segment_size: 1 << 20,
            encrypt: false,
            ..LogConfig::default()
        }
    }

    fn shared(vfs: &MemVfs) -> Arc<dyn Vfs> {
        Arc::new(vfs.clone())
    }

    /// A system space on a `MemVfs` with its buffer pool and allocator, as `Db::open` builds
    /// them; with a redo log in the same file system when made by [`Fixture::logged`].
    struct Fixture {
        vfs: MemVfs,
        spaces: Arc<SpaceSet>,
        pool: Arc<BufferPool>,
        alloc: Arc<Allocator>,
        log: Option<Arc<Log>>,
    }

    fn create_space(vfs: &MemVfs, page_size: u32, keys: Option<&MemoryKeyProvider>) -> SpaceFile {
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
        let path = Path::new(SPACE_PATH);
        SpaceFile::create(vfs, path, spec, keyring, Default::default()).unwrap()
    }

    impl Fixture {
        /// Without a log: mtrs keep their latching and abort rules but log nothing.
        fn new(page_size: u32, pool_bytes: usize, keys: Option<&MemoryKeyProvider>) -> Fixture {
            let vfs = MemVfs::new();
            let space = create_space(&vfs, page_size, keys);
            Fixture::assemble(vfs, space, pool_bytes, None)
        }

        /// An unencrypted system space of 4 KiB pages and a plain redo log.
        fn logged() -> Fixture {
            let vfs = MemVfs::new();
            let space = create_space(&vfs, 4096, None);
            let log = Log::create(shared(&vfs), Path::new(LOG_DIR), log_config(), None).unwrap();
            Fixture::assemble(vfs, space, MIB, Some(log))
        }

        fn assemble(vfs: MemVfs, space: SpaceFile, pool_bytes: usize, log: Option<Log>) -> Self {
            let page_size = space.page_size().len();
            let space = Arc::new(space);
            let spaces = Arc::new(SpaceSet::new());
            spaces.insert(Arc::clone(&space));
            let log = log.map(Arc::new);
            if let Some(log) = &log {
                spaces.attach_log(Arc::clone(log));
            }
            let pool = BufferPool::new(pool_bytes, page_size, Arc::clone(&spaces) as _).unwrap();
            let alloc = Arc::new(Allocator::new(space, Arc::clone(&pool)));
            Fixture {
                vfs,
                spaces,
                pool,
                alloc,
                log,
            }
        }

        /// Loses the pool and the unflushed log (all but the file system is dropped first),
        /// and opens what the file system kept: the space as on disk and the log recovered,
        /// its records not yet applied.
        fn crash_and_recover(self) -> (Fixture, RecoveryReport) {
            let page_size = PageSize::try_from(self.pool.page_size() as u32).unwrap();
            let vfs = self.vfs.clone();
            drop(self);
            let path = Path::new(SPACE_PATH);
            let space = SpaceFile::open(
                &vfs,
                path,
                SYSTEM_SPACE_ID,
                page_size,
                None,
                Default::default(),
            )
            .unwrap();
            let (log, report) =
                Log::open(shared(&vfs), Path::new(LOG_DIR), log_config(), None).unwrap();
            (Fixture::assemble(vfs, space, MIB, Some(log)), report)
        }

        fn redo(&self, records: &[LoggedRecord]) {
            redo::apply(records, &self.spaces, &self.pool, |_| true).unwrap();
        }

        fn flush_log(&self) -> Lsn {
            let log = self.log.as_ref().expect("a logged fixture");
            let lsn = log.current_lsn();
            log.flush(lsn).unwrap();
            lsn
        }

        fn mtr(&self) -> Mtr {
            Mtr::start(self.log.as_ref(), &self.pool).unwrap()
        }

        /// Runs `change` in an mtr of its own and commits it.
        fn in_mtr<T>(&self, change: impl FnOnce(&Mtr) -> Result<T>) -> T {
            let mtr = self.mtr();
            let out = change(&mtr).unwrap();
            mtr.commit().unwrap();
            out
        }

        /// A new, unregistered log for `txn_id`.
        fn log(&self, txn_id: u64) -> UndoLog {
            self.in_mtr(|mtr| self.create(mtr, txn_id))
        }

        fn create(&self, mtr: &Mtr, txn_id: u64) -> Result<UndoLog> {
            UndoLog::create(
                mtr,
                Arc::clone(&self.pool),
                Arc::clone(&self.alloc),
                self.log.clone(),
                txn_id,
            )
        }

        /// A new log for `txn_id`, created and registered in one mtr, as a transaction's
        /// first write does.
        fn begin(&self, directory: &UndoDirectory, txn_id: u64) -> (UndoLog, usize) {
            self.in_mtr(|mtr| {
                let log = self.create(mtr, txn_id)?;
                let slot = directory.register(mtr, txn_id, log.first_page())?;
                Ok((log, slot))
            })
        }

        fn directory(&self) -> UndoDirectory {
            let page_no = self.in_mtr(|mtr| UndoDirectory::create(mtr, &self.alloc));
            self.open_directory(page_no)
        }

        fn open_directory(&self, page_no: u32) -> UndoDirectory {
            UndoDirectory::open(Arc::clone(&self.pool), &self.alloc, page_no).unwrap()
        }

        fn purge(&self, directory: &UndoDirectory, slot: usize, first_page: u32) -> Result<()> {
            let log = self.log.as_ref();
            UndoLog::purge(&self.pool, &self.alloc, log, directory, slot, first_page)
        }

        fn read_all(&self, first_page: u32) -> Result<(u64, Vec<UndoRecord>)> {
            UndoLog::read_all(&self.pool, &self.alloc, first_page)
        }

        fn pages(&self, first_page: u32) -> Vec<u32> {
            UndoLog::pages(&self.pool, &self.alloc, first_page).unwrap()
        }

        fn page_count(&self) -> u32 {
            self.alloc.space().header().page_count
        }

        fn free_count(&self) -> u32 {
            self.alloc.space().header().free_count
        }

        /// Page `page_no` latched outside any mtr, to damage it.
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

    /// Bytes `record` takes in the stream.
    fn stream_len(record: &UndoRecord) -> usize {
        RECORD_HEADER_LEN + record.key.len() + record.before.as_ref().map_or(0, Vec::len)
    }

    /// The batches (by end LSN) of `records` that start at or after `since` and end at or
    /// before `until`, each with its records.
    fn batches(records: &[LoggedRecord], since: Lsn, until: Lsn) -> Vec<(Lsn, Vec<&Record>)> {
        let mut batches: Vec<(Lsn, Vec<&Record>)> = Vec::new();
        for logged in records
            .iter()
            .filter(|r| r.lsn >= since && r.batch_end_lsn <= until)
        {
            match batches.last_mut() {
                Some((lsn, batch)) if *lsn == logged.batch_end_lsn => batch.push(&logged.record),
                _ => batches.push((logged.batch_end_lsn, vec![&logged.record])),
            }
        }
        batches
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
    fn a_torn_tail_is_left_out_and_the_records_before_it_read_back() {
        let fx = Fixture::new(4096, MIB, None);
        let mut log = fx.log(4);
        let records = [record(0, Some(100)), record(1, None), record(2, Some(300))];
        for rec in &records {
            log.append(rec).unwrap();
        }
        let first = log.first_page();
        let whole = records.iter().map(stream_len).sum::<usize>();
        assert_eq!(fx.pages(first), [first], "all three fit one page");
        assert_eq!(get_u32(&fx.write(first), USED_OFFSET) as usize, whole);
        let last_starts = whole - stream_len(&records[2]);
        let set_used = |used: usize| {
            put(
                &mut fx.write(first),
                USED_OFFSET,
                &(used as u32).to_le_bytes(),
            );
        };
        // Cut inside the header, the key and the before-image of the last record, and just
        // before its end: the first two read back. Cut at its start: the same, untorn.
        for used in [
            last_starts,
            last_starts + 1,
            last_starts + RECORD_HEADER_LEN - 1,
            last_starts + RECORD_HEADER_LEN + 3,
            last_starts + RECORD_HEADER_LEN + 20,
            whole - 1,
        ] {
            set_used(used);
            assert_eq!(
                fx.read_all(first).unwrap(),
                (4, records[..2].to_vec()),
                "stream cut at {used}"
            );
        }
        set_used(stream_len(&records[0]) + 1);
        assert_eq!(fx.read_all(first).unwrap(), (4, records[..1].to_vec()));
        set_used(5);
        assert_eq!(fx.read_all(first).unwrap(), (4, vec![]));
        set_used(whole);
        assert_eq!(fx.read_all(first).unwrap(), (4, records.to_vec()));

        // A record spanning pages, cut where its second page should follow.
        let long = record(3, Some(10_000));
        log.append(&long).unwrap();
        let pages = fx.pages(first);
        assert!(pages.len() >= 3, "{pages:?}");
        assert_eq!(fx.read_all(first).unwrap().1.len(), 4);
        put(&mut fx.write(first), NEXT_PAGE_OFFSET, &0u32.to_le_bytes());
        assert_eq!(fx.read_all(first).unwrap(), (4, records.to_vec()));
    }

    #[test]
    fn a_record_cut_between_its_mtrs_by_a_crash_is_a_torn_tail() {
        let fx = Fixture::logged();
        let mut log = fx.log(6);
        let small = [record(0, Some(50)), record(1, Some(60))];
        for rec in &small {
            log.append(rec).unwrap();
        }
        let since = fx.flush_log();
        let big = record(2, Some(3 * PAGES_PER_MTR * 4096));
        log.append(&big).unwrap();
        let until = fx.flush_log();
        let first = log.first_page();
        assert!(fx.pages(first).len() > 2 * PAGES_PER_MTR + 1);

        let (fx, report) = fx.crash_and_recover();
        let appends = batches(&report.records, since, until);
        assert!(appends.len() >= 3, "{} mtrs", appends.len());
        for (_, batch) in &appends {
            let new_pages = batch
                .iter()
                .filter(|r| matches!(r, Record::PageImage { .. }))
                .count();
            assert!(
                new_pages <= PAGES_PER_MTR,
                "{new_pages} new pages in one mtr"
            );
        }
        // The crash came after the big record's first mtr: only that one is redone.
        let first_mtr_end = appends[0].0;
        let cut = report
            .records
            .iter()
            .position(|r| r.batch_end_lsn > first_mtr_end)
            .unwrap();
        fx.redo(&report.records[..cut]);
        assert_eq!(fx.read_all(first).unwrap(), (6, small.to_vec()));
        // The rest of the log completes it.
        fx.redo(&report.records[cut..]);
        let (_, records) = fx.read_all(first).unwrap();
        assert_eq!(records.len(), 3);
        assert!(records[..2] == small && records[2] == big);
    }

    #[test]
    fn purge_frees_every_page_across_several_mtrs_and_clears_the_slot() {
        let fx = Fixture::logged();
        let directory = fx.directory();
        let (other, other_slot) = fx.begin(&directory, 1);
        let (count_before, free_before) = (fx.page_count(), fx.free_count());
        let (mut log, slot) = fx.begin(&directory, 2);
        for i in 0..150 {
            log.append(&record(i, Some(1000))).unwrap();
        }
        let chain = fx.pages(log.first_page());
        assert_eq!(chain.len() as u32, fx.page_count() - count_before);
        assert!(chain.len() > 2 * PAGES_PER_MTR, "{}", chain.len());
        fx.in_mtr(|mtr| directory.mark_finished(mtr, slot));

        let since = fx.flush_log();
        fx.purge(&directory, slot, log.first_page()).unwrap();
        let until = fx.flush_log();
        assert_eq!(fx.free_count(), free_before + chain.len() as u32);
        let mut freed = fx.alloc.free_pages().unwrap();
        freed.sort_unstable();
        assert_eq!(freed, chain, "every page of the chain, and only those");
        let other_entry = ActiveLog {
            slot: other_slot,
            txn_id: 1,
            first_page: other.first_page(),
            finished: false,
        };
        assert_eq!(directory.active().unwrap(), [other_entry]);
        assert_eq!(fx.read_all(other.first_page()).unwrap(), (1, vec![]));

        // The freed pages are reused before the space grows.
        let (mut again, _) = fx.begin(&directory, 3);
        for i in 0..150 {
            again.append(&record(i, Some(1000))).unwrap();
        }
        assert_eq!(fx.page_count(), count_before + chain.len() as u32);
        assert_eq!(fx.free_count(), free_before);

        // One batch per PAGES_PER_MTR pages, each logging the allocation fields once.
        let (_, report) = fx.crash_and_recover();
        let purges = batches(&report.records, since, until);
        assert_eq!(purges.len(), chain.len().div_ceil(PAGES_PER_MTR));
        for (_, batch) in &purges {
            let headers = batch
                .iter()
                .filter(|r| matches!(r, Record::SpaceHeader { .. }))
                .count();
            assert_eq!(headers, 1, "{batch:?}");
        }
    }

    #[test]
    fn a_crash_mid_purge_leaks_nothing_and_purge_finishes_from_the_slot() {
        let fx = Fixture::logged();
        let directory = fx.directory();
        let (mut log, slot) = fx.begin(&directory, 8);
        for i in 0..100 {
            log.append(&record(i, Some(1000))).unwrap();
        }
        let chain = fx.pages(log.first_page());
        assert!(chain.len() > PAGES_PER_MTR, "{}", chain.len());
        fx.in_mtr(|mtr| directory.mark_finished(mtr, slot));
        let free_before = fx.free_count();
        let since = fx.flush_log();
        fx.purge(&directory, slot, log.first_page()).unwrap();
        let until = fx.flush_log();
        let dir_page = directory.page_no;

        // The crash came after purge's first mtr.
        let (fx, report) = fx.crash_and_recover();
        let first_mtr_end = batches(&report.records, since, until)[0].0;
        let cut = report
            .records
            .iter()
            .position(|r| r.batch_end_lsn > first_mtr_end)
            .unwrap();
        fx.redo(&report.records[..cut]);
        let directory = fx.open_directory(dir_page);
        let [active] = directory.active().unwrap()[..] else {
            panic!("one log left to purge");
        };
        assert_eq!(
            (active.slot, active.txn_id, active.finished),
            (slot, 8, true)
        );
        assert_eq!(active.first_page, chain[PAGES_PER_MTR]);
        assert_eq!(fx.free_count(), free_before + PAGES_PER_MTR as u32);
        assert_eq!(fx.pages(active.first_page), chain[PAGES_PER_MTR..]);

        // Start-up finishes it from where the slot points.
        fx.purge(&directory, active.slot, active.first_page)
            .unwrap();
        assert_eq!(directory.active().unwrap(), []);
        let mut freed = fx.alloc.free_pages().unwrap();
        freed.sort_unstable();
        assert_eq!(freed, chain);
    }

    #[test]
    fn creating_and_registering_in_an_aborted_mtr_leaks_nothing() {
        let fx = Fixture::logged();
        let directory = fx.directory();
        let alloc_before = fx.alloc.space().header().alloc();
        let lsn = fx.flush_log();
        let first_page = {
            let mtr = fx.mtr();
            let log = fx.create(&mtr, 5).unwrap();
            directory.register(&mtr, 5, log.first_page()).unwrap();
            log.first_page()
        };
        assert_eq!(fx.alloc.space().header().alloc(), alloc_before);
        assert_eq!(directory.active().unwrap(), []);
        assert_eq!(fx.log.as_ref().unwrap().current_lsn(), lsn);
        let (log, slot) = fx.begin(&directory, 5);
        assert_eq!((log.first_page(), slot), (first_page, 0));
    }

    #[test]
    fn chains_that_leave_the_log_are_errors() {
        let fx = Fixture::new(4096, MIB, None);
        let directory = fx.directory();
        let not_undo = fx.in_mtr(|mtr| Ok(fx.alloc.allocate(mtr, PageType::Overflow)?.id()));
        let (mut log, slot) = fx.begin(&directory, 9);
        for i in 0..10 {
            log.append(&record(i, Some(1000))).unwrap();
        }
        let first = log.first_page();
        let problem = |first_page| fx.read_all(first_page).unwrap_err().to_string();
        assert!(problem(0).contains("is page 0"));
        assert!(problem(10_000).contains("beyond the end"));
        assert!(problem(not_undo.page_no).contains("not an undo page"));

        // A page of another transaction spliced into the chain.
        let stranger = fx.log(10).first_page();
        put(
            &mut fx.write(first),
            NEXT_PAGE_OFFSET,
            &stranger.to_le_bytes(),
        );
        assert!(problem(first).contains("of transaction 10, not 9"));
        // A cycle, which purge must refuse without freeing anything.
        put(&mut fx.write(first), NEXT_PAGE_OFFSET, &first.to_le_bytes());
        assert!(fx.read_all(first).is_err());
        let free_before = fx.free_count();
        let error = fx.purge(&directory, slot, first).unwrap_err();
        assert!(error.to_string().contains("cyclic"), "{error}");
        assert_eq!(fx.free_count(), free_before);
        assert_eq!(directory.active().unwrap().len(), 1, "still registered");
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

        // A key length of 4 GiB in a 22-byte stream: a torn tail, not a 4 GiB allocation.
        let mut header = RecordHeader {
            space_id: 1,
            key_len: u32::MAX,
            before_len: Some(u32::MAX),
        }
        .encode();
        set_stream(&header);
        assert_eq!(fx.read_all(first).unwrap(), (5, vec![]));
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
        header[FLAGS_AT] = 0;
        put(&mut header, PREV_UNDO_AT, &0u64.to_le_bytes());
        set_stream(&header);
        assert!(problem().contains("length but no before-image"));

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
    fn mark_finished_shows_in_active_and_keeps_the_slot() {
        let fx = Fixture::new(4096, MIB, None);
        let directory = fx.directory();
        let logs: Vec<(UndoLog, usize)> = (0..3).map(|t| fx.begin(&directory, 100 + t)).collect();
        let entry = |i: usize, finished| ActiveLog {
            slot: logs[i].1,
            txn_id: 100 + i as u64,
            first_page: logs[i].0.first_page(),
            finished,
        };
        // Aborted, it leaves no mark.
        {
            let mtr = fx.mtr();
            directory.mark_finished(&mtr, logs[1].1).unwrap();
        }
        assert_eq!(
            directory.active().unwrap(),
            [entry(0, false), entry(1, false), entry(2, false)]
        );
        fx.in_mtr(|mtr| directory.mark_finished(mtr, logs[1].1));
        assert_eq!(
            directory.active().unwrap(),
            [entry(0, false), entry(1, true), entry(2, false)]
        );
        // A finished slot stays taken until purge unregisters it.
        let (_, slot) = fx.begin(&directory, 103);
        assert_eq!(slot, 3);
        fx.in_mtr(|mtr| directory.unregister(mtr, logs[1].1));
        let (_, slot) = fx.begin(&directory, 104);
        assert_eq!(slot, logs[1].1, "reuses the slot");
        assert!(!directory.active().unwrap()[1].finished);
    }

    #[test]
    fn the_directory_registers_lists_and_unregisters_across_reopen() {
        let fx = Fixture::logged();
        let directory = fx.directory();
        let page_no = directory.page_no;
        assert_eq!(directory.capacity(), directory_capacity(4096));
        assert_eq!(directory.active().unwrap(), []);
        let logs: Vec<(UndoLog, usize)> = (0..4).map(|t| fx.begin(&directory, 100 + t)).collect();
        let slots: Vec<usize> = logs.iter().map(|(_, slot)| *slot).collect();
        assert_eq!(slots, [0, 1, 2, 3]);
        fx.in_mtr(|mtr| directory.unregister(mtr, slots[1]));
        // A checkpoint: what happened so far is on disk.
        fx.pool.flush_all().unwrap();
        fx.spaces.persist_headers().unwrap();
        // Later changes reach only the log.
        let moved = fx.log(102).first_page();
        fx.in_mtr(|mtr| directory.mark_finished(mtr, slots[0]));
        fx.in_mtr(|mtr| directory.set_first_page(mtr, slots[2], moved));
        fx.in_mtr(|mtr| directory.unregister(mtr, slots[3]));
        let expected = vec![
            ActiveLog {
                slot: slots[0],
                txn_id: 100,
                first_page: logs[0].0.first_page(),
                finished: true,
            },
            ActiveLog {
                slot: slots[2],
                txn_id: 102,
                first_page: moved,
                finished: false,
            },
        ];
        assert_eq!(directory.active().unwrap(), expected);
        fx.flush_log();

        let (fx, report) = fx.crash_and_recover();
        fx.redo(&report.records);
        let reopened = fx.open_directory(page_no);
        assert_eq!(reopened.active().unwrap(), expected);
        let (log, slot) = fx.begin(&reopened, 0);
        assert_eq!(slot, slots[1], "reuses the first free slot");
        assert_eq!(fx.read_all(log.first_page()).unwrap(), (0, vec![]));

        let open = |page_no| UndoDirectory::open(Arc::clone(&fx.pool), &fx.alloc, page_no);
        let error = open(logs[0].0.first_page()).unwrap_err().to_string();
        assert!(error.contains("no directory magic"), "{error}");
        assert!(open(9999).is_err());
        assert!(open(0).is_err());
    }

    #[test]
    fn a_full_directory_refuses_with_too_many_transactions() {
        let fx = Fixture::new(16384, MIB, None);
        let directory = fx.directory();
        let max = directory.capacity();
        assert_eq!(max, directory_capacity(16384));
        assert!(max > 1000, "{max}");
        let first_page = fx.log(1).first_page();
        fx.in_mtr(|mtr| {
            for txn_id in 0..max as u64 {
                directory.register(mtr, txn_id, first_page)?;
            }
            Ok(())
        });
        let mtr = fx.mtr();
        let error = directory.register(&mtr, 1 << 62, first_page).unwrap_err();
        drop(mtr);
        assert!(
            matches!(error, Error::TooManyTransactions { max: m } if m == max),
            "{error}"
        );
        assert!(error.to_string().contains("commit or roll back"), "{error}");
        fx.in_mtr(|mtr| directory.unregister(mtr, max / 2));
        let slot = fx.in_mtr(|mtr| directory.register(mtr, 1 << 62, first_page));
        assert_eq!(slot, max / 2);
        assert_eq!(directory.active().unwrap().len(), max);
    }

    /// An append that fails part-way (here: the free list is damaged at the second page it
    /// needs) is aborted, and the log must go on from where the last committed append left
    /// it.
    #[test]
    fn an_append_that_fails_leaves_the_log_appendable() {
        let fx = Fixture::new(4096, MIB, None);
        let mut log = fx.log(11);
        log.append(&record(0, Some(100))).unwrap();
        // Free list: x -> y -> (damaged link).
        let [x, y] = [0, 1]
            .map(|_| fx.in_mtr(|mtr| Ok(fx.alloc.allocate(mtr, PageType::Overflow)?.id().page_no)));
        fx.in_mtr(|mtr| fx.alloc.free(mtr, y));
        fx.in_mtr(|mtr| fx.alloc.free(mtr, x));
        let link = NEXT_FREE_OFFSET..NEXT_FREE_OFFSET + 4;
        fx.write(y)[link.clone()].copy_from_slice(&9999u32.to_le_bytes());
        let error = log.append(&record(1, Some(9000))).unwrap_err();
        assert!(error.to_string().contains("beyond the end"), "{error}");
        fx.write(y)[link].copy_from_slice(&0u32.to_le_bytes());

        log.append(&record(2, Some(10))).unwrap();
        assert_eq!(
            fx.read_all(log.first_page()).unwrap(),
            (11, vec![record(0, Some(100)), record(2, Some(10))])
        );
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
        let file = fx.vfs.contents(Path::new(SPACE_PATH)).unwrap();
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
