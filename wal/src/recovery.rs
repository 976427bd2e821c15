//! The recovery scan: read the log from the checkpoint to its end, collect the records.
//!
//! ## Phases (`Log::open`)
//!
//! ```text
//!  read control ──► unwrap log key ──► SCAN ──► new epoch (control, fsync) ──► delete old
//!  (newer slot)     (key id 1)         (this     > every epoch seen            segments,
//!                                       module)                                resume writing
//! ```
//!
//! ## The scan
//!
//! Starting at the block holding the checkpoint LSN, read block after block. Each block
//! goes through the checks of `block.rs`, then:
//!
//! 1. its `block_no` must be the position it was read from — which also rejects blocks
//!    left in a reused segment file by an older epoch at another position;
//! 2. its epoch must not be below the previous block's: the writer only moves forward
//!    within an epoch, and a new epoch resumes where recovery stopped, so an older epoch
//!    after a newer one is a stale block beyond a torn tail (crate docs, rule E3);
//! 3. its data is cut into frames (`record.rs`); `first_record` must agree with where the
//!    frames say the first new record starts;
//! 4. records are held back until the last record of their `append` batch (flagged in its
//!    frame) is read, so a batch — an engine mini-transaction — comes back whole or not at
//!    all.
//!
//! **Where the scan stops — never an error.** The first block that is missing (no
//! segment file, past the end of the file, a partial block), all zeros, fails its
//! checksum, sits at the wrong position, carries an older epoch, has an impossible header,
//! or fails decryption ends the log. A batch cut off by the end is discarded. The
//! [`RecoveryReport`] says where and why.
//!
//! **What is an error.** A crash tears only the tail, and only blocks that were never
//! acknowledged; so:
//! * the very first block after the checkpoint passing its checksum but failing to
//!   decrypt means the key is wrong ([`WalError::WrongKey`], naming key id and version) —
//!   a wrong key fails every block, a torn block is only ever at the tail;
//! * the block holding the checkpoint LSN missing or damaged (it was fsynced before the
//!   checkpoint was recorded) is [`WalError::CheckpointBlockUnreadable`], naming the segment;
//! * inconsistent frames or an undecodable record inside a block that passed its checksum
//!   and decryption is [`WalError::Corrupt`] / [`WalError::CorruptRecord`];
//! * a *damaged* block (checksum, header or decryption failing) with a valid block of this
//!   log after it — at its own position, of the same or a newer epoch — is
//!   [`WalError::DamagedBlock`], naming the segment and byte offset. Blocks are 512-byte
//!   sectors, so a torn write leaves a block old (unwritten, stale, misplaced) or new, never
//!   half of each; a block that fails its checksum is damage, and when the log goes on
//!   after it, the records after it were written later and may have been acknowledged.
//!   Dropping them as a "torn tail" would lose commits silently. (Damage with nothing valid
//!   after it cannot be told from a torn tail and still ends the log.)
//!
//! The one legitimate cut inside the log: a batch whose tail blocks were lost, after which
//! a *newer* epoch resumed writing. The newer block starts with a new record
//! (`first_record` = 0), so the older, incomplete batch is discarded and the scan goes on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strongbox_keyring::wrap::WrappedKey;
use strongbox_keyring::DataKey;

use crate::block::{self, BlockDefect, BlockHeader, BLOCK_SIZE, DATA_CAPACITY};
use crate::error::{Result, WalError};
use crate::io::{FileIo, OpenMode, Vfs};
use crate::record::{read_varint, Record, RecordError, MAX_RECORD_LEN};
use crate::segment::{segment_name, Geometry};
use crate::Lsn;

/// One record found by recovery, with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRecord {
    /// LSN of the record's first byte.
    pub lsn: Lsn,
    /// LSN just past its last byte.
    pub end_lsn: Lsn,
    /// End LSN of the `append` batch the record belongs to — what `append` returned, and
    /// so what the engine stamped as page LSN. Records of one batch share it.
    pub batch_end_lsn: Lsn,
    pub record: Record,
}

/// Why the scan stopped at a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWhy {
    /// The segment file that should hold the block does not exist.
    MissingSegment,
    /// The segment file ends before the block.
    EndOfFile,
    /// The segment file ends inside the block.
    PartialBlock { bytes: u64 },
    /// The block is all zeros (never written).
    Unwritten,
    /// The checksum over the stored bytes does not match (torn write or damage).
    ChecksumMismatch,
    /// A valid block that belongs at another position.
    WrongPosition { found: u64 },
    /// A valid block from an older epoch than the block before it (stale).
    StaleEpoch { found: u32, previous: u32 },
    /// The checksum matched but a header field is impossible.
    BadHeader(&'static str),
    /// The checksum matched but decryption (or the plain trailer check) failed.
    DecryptFailed,
}

impl fmt::Display for StopWhy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopWhy::MissingSegment => write!(f, "segment file missing"),
            StopWhy::EndOfFile => write!(f, "end of segment file"),
            StopWhy::PartialBlock { bytes } => write!(f, "partial block ({bytes} bytes)"),
            StopWhy::Unwritten => write!(f, "unwritten block"),
            StopWhy::ChecksumMismatch => write!(f, "checksum mismatch (torn or damaged)"),
            StopWhy::WrongPosition { found } => write!(f, "block belongs at block {found}"),
            StopWhy::StaleEpoch { found, previous } => {
                write!(f, "stale block of epoch {found} after epoch {previous}")
            }
            StopWhy::BadHeader(what) => write!(f, "bad header: {what}"),
            StopWhy::DecryptFailed => write!(f, "does not decrypt"),
        }
    }
}

/// Where the scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopReason {
    /// LSN of the start of the block where the scan stopped.
    pub lsn: Lsn,
    pub block_no: u64,
    pub why: StopWhy,
}

/// What recovery found; returned by `Log::open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The checkpoint LSN the scan started at.
    pub start_lsn: Lsn,
    /// End LSN of the last complete record (`start_lsn` if none).
    pub end_lsn: Lsn,
    /// Every record of every complete `append` batch from the checkpoint on, in log order.
    pub records: Vec<LoggedRecord>,
    /// Start LSNs of incomplete batches that were dropped (cut off by a crash).
    pub discarded: Vec<Lsn>,
    /// Where and why the scan stopped.
    pub stop: StopReason,
    /// The segment file holding the block where the scan stopped, and the block's byte
    /// offset in it (the file may not exist: `StopWhy::MissingSegment`).
    pub stop_segment: PathBuf,
    pub stop_offset: u64,
    /// Where new records go: the data start of the block where the scan stopped.
    pub resume_lsn: Lsn,
    /// The epoch this open writes in.
    pub epoch: u32,
}

/// What the scan hands `Log::open`.
pub(crate) struct Scanned {
    pub report: RecoveryReport,
    /// The largest epoch in any block that passed its checksum.
    pub max_epoch: u32,
    pub resume_block: u64,
}

/// The log key and how to name it in errors.
pub(crate) struct ScanKey<'a> {
    pub key: &'a DataKey,
    pub wrapped: &'a WrappedKey,
}

/// Reads blocks segment by segment, a chunk at a time.
struct BlockSource<'a> {
    vfs: &'a dyn Vfs,
    dir: &'a Path,
    geometry: Geometry,
    /// The open segment: (seq, file, size); `None` until the first read.
    segment: Option<(u64, Arc<dyn FileIo>, u64)>,
    chunk: Vec<u8>,
    /// Byte offset in the segment of `chunk[0]`.
    chunk_offset: u64,
}

const CHUNK: u64 = 256 * 1024;

impl BlockSource<'_> {
    fn read(&mut self, block_no: u64) -> Result<Result<[u8; BLOCK_SIZE], StopWhy>> {
        let seq = self.geometry.segment_of(block_no);
        if self.segment.as_ref().map(|s| s.0) != Some(seq) {
            let path = self.dir.join(segment_name(seq));
            if !self.vfs.exists(&path) {
                return Ok(Err(StopWhy::MissingSegment));
            }
            let file = self
                .vfs
                .open(&path, OpenMode::Existing)
                .map_err(|e| WalError::io("open", &path, e))?;
            let size = file.size().map_err(|e| WalError::io("stat", &path, e))?;
            self.segment = Some((seq, file, size));
            self.chunk.clear();
        }
        let (seq, file, size) = self.segment.as_ref().expect("opened above");
        let offset = self.geometry.offset_of(block_no);
        if offset >= *size {
            return Ok(Err(StopWhy::EndOfFile));
        }
        if offset + BLOCK_SIZE as u64 > *size {
            return Ok(Err(StopWhy::PartialBlock {
                bytes: size - offset,
            }));
        }
        let in_chunk = offset >= self.chunk_offset
            && offset + BLOCK_SIZE as u64 <= self.chunk_offset + self.chunk.len() as u64;
        if !in_chunk {
            let whole_blocks = (size - offset) / BLOCK_SIZE as u64 * BLOCK_SIZE as u64;
            self.chunk.resize(whole_blocks.min(CHUNK) as usize, 0);
            file.read_at(&mut self.chunk, offset)
                .map_err(|e| WalError::io("read", self.dir.join(segment_name(*seq)), e))?;
            self.chunk_offset = offset;
        }
        let start = (offset - self.chunk_offset) as usize;
        let mut out = [0u8; BLOCK_SIZE];
        out.copy_from_slice(&self.chunk[start..start + BLOCK_SIZE]);
        Ok(Ok(out))
    }
}

/// A record whose bytes may span blocks.
struct Partial {
    lsn: Lsn,
    bytes: Vec<u8>,
    /// Frame length (head + body), once the head varint is complete.
    total: Option<usize>,
    /// The head's `last_in_batch` bit.
    last_in_batch: bool,
}

impl Partial {
    fn new(lsn: Lsn) -> Partial {
        Partial {
            lsn,
            bytes: Vec::new(),
            total: None,
            last_in_batch: false,
        }
    }

    /// Takes bytes of `input` until the frame is complete; returns how many it took.
    /// Grows only by bytes actually read, so a garbage length cannot allocate.
    fn feed(&mut self, input: &[u8]) -> Result<usize> {
        let mut used = 0;
        while self.total.is_none() {
            let Some(&byte) = input.get(used) else {
                return Ok(used);
            };
            self.bytes.push(byte);
            used += 1;
            let corrupt = |source| WalError::CorruptRecord {
                lsn: self.lsn,
                source,
            };
            if let Some((head, head_len)) = read_varint(&self.bytes).map_err(corrupt)? {
                let len = head >> 1;
                if len == 0 || len > MAX_RECORD_LEN as u64 {
                    return Err(corrupt(RecordError::BadLength(len)));
                }
                self.total = Some(head_len + len as usize);
                self.last_in_batch = head & 1 == 1;
            }
        }
        let total = self.total.expect("set above");
        let take = (total - self.bytes.len()).min(input.len() - used);
        self.bytes.extend_from_slice(&input[used..used + take]);
        Ok(used + take)
    }

    fn complete(&self) -> bool {
        self.total == Some(self.bytes.len())
    }

    /// Decodes the complete frame; the batch end is filled in when the batch completes.
    fn finish(self, end_lsn: Lsn) -> Result<LoggedRecord> {
        let (_, head_len) = read_varint(&self.bytes)
            .ok()
            .flatten()
            .expect("a complete frame starts with a valid varint");
        let record =
            Record::decode(&self.bytes[head_len..]).map_err(|source| WalError::CorruptRecord {
                lsn: self.lsn,
                source,
            })?;
        Ok(LoggedRecord {
            lsn: self.lsn,
            end_lsn,
            batch_end_lsn: end_lsn,
            record,
        })
    }
}

/// Cuts verified blocks into records and batches (phase 3 of the scan).
struct Assembler {
    records: Vec<LoggedRecord>,
    discarded: Vec<Lsn>,
    /// A record whose frame continues in the next block.
    pending: Option<Partial>,
    /// Complete records of a batch whose last record has not been seen yet.
    batch: Vec<LoggedRecord>,
}

fn corrupt(block_no: u64, offset: usize, what: &'static str) -> WalError {
    WalError::Corrupt {
        lsn: block::lsn_at(block_no, offset),
        what,
    }
}

impl Assembler {
    /// A record is complete: add it to its batch, and release the batch if it was last.
    fn complete(&mut self, partial: Partial, end_lsn: Lsn) -> Result<()> {
        let last = partial.last_in_batch;
        self.batch.push(partial.finish(end_lsn)?);
        if last {
            for record in &mut self.batch {
                record.batch_end_lsn = end_lsn;
            }
            self.records.append(&mut self.batch);
        }
        Ok(())
    }

    /// Drops the incomplete batch (and record) in progress, remembering where it started.
    fn discard(&mut self) {
        let pending = self.pending.take().map(|p| p.lsn);
        if let Some(lsn) = self.batch.first().map(|r| r.lsn).or(pending) {
            self.discarded.push(lsn);
        }
        self.batch.clear();
    }

    /// Consumes one verified block's data. `start` is `Some(offset)` for the block holding
    /// the checkpoint (parsing starts there); `new_epoch` is true when this block's epoch
    /// is above the previous block's.
    fn block(
        &mut self,
        header: &BlockHeader,
        data: &[u8],
        start: Option<usize>,
        new_epoch: bool,
    ) -> Result<()> {
        let b = header.block_no;
        let first_record = header.first_record.map(usize::from);
        let mut pos = match start {
            Some(offset) => {
                if offset > data.len() {
                    return Err(corrupt(b, offset, "checkpoint LSN beyond its block's data"));
                }
                if offset < first_record.unwrap_or(data.len()) {
                    return Err(corrupt(b, offset, "checkpoint LSN inside a record"));
                }
                offset
            }
            None => {
                let continuation = first_record.unwrap_or(data.len());
                if new_epoch {
                    // A newer epoch resumed after a torn tail: whatever batch the older
                    // epoch left open was cut by the crash.
                    if continuation != 0 {
                        return Err(corrupt(b, 0, "a new epoch continues an old record"));
                    }
                    self.discard();
                }
                match self.pending.take() {
                    None if continuation > 0 => {
                        return Err(corrupt(b, 0, "continuation bytes with no record"))
                    }
                    None => {}
                    Some(mut partial) => {
                        let used = partial.feed(&data[..continuation])?;
                        if partial.complete() {
                            if used != continuation {
                                return Err(corrupt(b, used, "record ends before first_record"));
                            }
                            self.complete(partial, block::lsn_at(b, used))?;
                        } else if first_record.is_some() {
                            return Err(corrupt(b, 0, "record cut short inside the log"));
                        } else if data.len() < DATA_CAPACITY {
                            return Err(corrupt(b, 0, "record continues past a partial block"));
                        } else {
                            self.pending = Some(partial);
                        }
                    }
                }
                continuation
            }
        };
        let mut first_new = true;
        while pos < data.len() {
            if first_new && start.is_none() && first_record != Some(pos) {
                return Err(corrupt(b, pos, "first_record disagrees with the frames"));
            }
            first_new = false;
            let mut partial = Partial::new(block::lsn_at(b, pos));
            pos += partial.feed(&data[pos..])?;
            if partial.complete() {
                self.complete(partial, block::lsn_at(b, pos))?;
            } else if data.len() < DATA_CAPACITY {
                return Err(corrupt(b, pos, "record continues past a partial block"));
            } else {
                self.pending = Some(partial);
            }
        }
        // A flush never splits a batch, and only a flush leaves a block partly filled.
        if data.len() < DATA_CAPACITY && !self.batch.is_empty() {
            return Err(corrupt(
                b,
                data.len(),
                "batch continues past a partial block",
            ));
        }
        Ok(())
    }
}

/// Scans the log in `dir` from `checkpoint_lsn` (see the module docs).
pub(crate) fn scan(
    vfs: &dyn Vfs,
    dir: &Path,
    geometry: Geometry,
    checkpoint_lsn: Lsn,
    key: Option<ScanKey<'_>>,
) -> Result<Scanned> {
    if !block::is_boundary(checkpoint_lsn) {
        return Err(WalError::Corrupt {
            lsn: checkpoint_lsn,
            what: "the control file's checkpoint LSN is not a record boundary",
        });
    }
    let start_offset = block::data_offset(checkpoint_lsn);
    let mut source = BlockSource {
        vfs,
        dir,
        geometry,
        segment: None,
        chunk: Vec::new(),
        chunk_offset: 0,
    };
    let mut assembler = Assembler {
        records: Vec::new(),
        discarded: Vec::new(),
        pending: None,
        batch: Vec::new(),
    };
    let mut block_no = block::block_of(checkpoint_lsn);
    let mut previous_epoch: Option<u32> = None;
    let mut max_epoch = 0;
    let why = loop {
        let mut stored = match source.read(block_no)? {
            Ok(stored) => stored,
            Err(why) => break why,
        };
        let header = match block::check(&stored) {
            Ok(header) => header,
            Err(defect) => break stop_why(defect),
        };
        max_epoch = max_epoch.max(header.epoch);
        if header.block_no != block_no {
            break StopWhy::WrongPosition {
                found: header.block_no,
            };
        }
        if let Some(previous) = previous_epoch.filter(|&p| header.epoch < p) {
            break StopWhy::StaleEpoch {
                found: header.epoch,
                previous,
            };
        }
        if header.encrypted != key.is_some() {
            break StopWhy::BadHeader("encryption flag differs from the log's");
        }
        if let Err(defect) = block::open(&mut stored, &header, key.as_ref().map(|k| k.key)) {
            if let (None, BlockDefect::DecryptFailed, Some(k)) = (previous_epoch, defect, &key) {
                return Err(WalError::WrongKey {
                    key_id: k.wrapped.key_id,
                    key_version: k.wrapped.key_version,
                    lsn: block::lsn_at(block_no, 0),
                });
            }
            break stop_why(defect);
        }
        let data = &block::data(&stored)[..usize::from(header.data_len)];
        let start = previous_epoch.is_none().then_some(start_offset);
        let new_epoch = previous_epoch.is_some_and(|p| header.epoch > p);
        assembler.block(&header, data, start, new_epoch)?;
        previous_epoch = Some(header.epoch);
        block_no += 1;
    };
    if matches!(
        why,
        StopWhy::ChecksumMismatch | StopWhy::BadHeader(_) | StopWhy::DecryptFailed
    ) {
        let after = previous_epoch.unwrap_or(0);
        if let Some(next_valid) = valid_block_after(&mut source, block_no, after, key.as_ref())? {
            return Err(WalError::DamagedBlock {
                path: dir.join(segment_name(geometry.segment_of(block_no))),
                offset: geometry.offset_of(block_no),
                block_no,
                lsn: block::lsn_at(block_no, 0),
                why,
                next_valid,
            });
        }
    }
    if previous_epoch.is_none() && start_offset > 0 {
        return Err(WalError::CheckpointBlockUnreadable {
            path: dir.join(segment_name(geometry.segment_of(block_no))),
            offset: geometry.offset_of(block_no),
            lsn: checkpoint_lsn,
            why,
        });
    }
    assembler.discard();
    let end_lsn = assembler
        .records
        .last()
        .map_or(checkpoint_lsn, |r| r.end_lsn);
    Ok(Scanned {
        report: RecoveryReport {
            start_lsn: checkpoint_lsn,
            end_lsn,
            records: assembler.records,
            discarded: assembler.discarded,
            stop: StopReason {
                lsn: block_no * BLOCK_SIZE as u64,
                block_no,
                why,
            },
            stop_segment: dir.join(segment_name(geometry.segment_of(block_no))),
            stop_offset: geometry.offset_of(block_no),
            resume_lsn: block::lsn_at(block_no, 0),
            epoch: 0,
        },
        max_epoch,
        resume_block: block_no,
    })
}

/// The first block after `damaged` that is a valid block of this log — checksum, header
/// and decryption pass, it sits at its own position, and its epoch is not older than
/// `epoch` (the last good block's) — searched up to the end of the segment files.
fn valid_block_after(
    source: &mut BlockSource<'_>,
    damaged: u64,
    epoch: u32,
    key: Option<&ScanKey<'_>>,
) -> Result<Option<u64>> {
    let mut block_no = damaged + 1;
    while let Ok(mut stored) = source.read(block_no)? {
        let valid = block::check(&stored).is_ok_and(|header| {
            header.block_no == block_no
                && header.epoch >= epoch
                && header.encrypted == key.is_some()
                && block::open(&mut stored, &header, key.map(|k| k.key)).is_ok()
        });
        if valid {
            return Ok(Some(block_no));
        }
        block_no += 1;
    }
    Ok(None)
}

fn stop_why(defect: BlockDefect) -> StopWhy {
    match defect {
        BlockDefect::Unwritten => StopWhy::Unwritten,
        BlockDefect::ChecksumMismatch => StopWhy::ChecksumMismatch,
        BlockDefect::BadHeader(what) => StopWhy::BadHeader(what),
        BlockDefect::DecryptFailed => StopWhy::DecryptFailed,
    }
}
