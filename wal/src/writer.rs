//! The log writer: the in-memory log buffer, group commit, and the full-log wait.
//!
//! ## Positions (all guarded by `Writer::state`)
//!
//! ```text
//!   checkpoint_lsn <= durable_lsn <= written_lsn <= end_lsn
//!   |                 |              |              |
//!   recovery starts   fsynced        handed to OS   end of the last appended record
//!                                    (policy 2)     = current_lsn
//! ```
//!
//! ## Rules
//!
//! 1. **Appends are atomic and ordered.** `append` encodes its records outside the lock,
//!    then copies all their frames into the buffer under the lock, so a batch gets one
//!    contiguous LSN range and no other batch interleaves.
//! 2. **One leader at a time.** A thread that needs `lsn` written or durable and finds no
//!    flush running becomes the *leader*: it takes the *whole* buffer (every record appended
//!    so far, by anyone), releases the lock, seals the blocks (encrypts and checksums),
//!    writes them, fsyncs once, then publishes the new `written_lsn`/`durable_lsn` and wakes
//!    every waiter (`flushed`). Threads arriving meanwhile wait; whoever finds its LSN still
//!    not covered after the wake-up becomes the next leader and takes everything appended
//!    during the previous round. One fsync thus serves every commit that arrived while the
//!    previous one ran: group commit.
//! 3. **A written block is never appended to again.** Taking the buffer seals its last,
//!    partly filled block: the next record starts a new block (the LSN jumps to the next
//!    block's data area). So a block is written once per epoch and its IV is never reused
//!    (crate docs). *Space cost:* up to 471 padding bytes per flush — with one small commit
//!    per fsync, a commit costs a whole 512-byte block; with group commit the padding is
//!    shared. `LogStats::padding_bytes` counts it.
//! 4. **Failure poisons.** If a write or fsync fails, the leader records the first failure
//!    and every later call fails with [`WalError::Poisoned`] naming it. The leader does not
//!    retry: after a failed fsync the kernel may have dropped the dirty pages and marked
//!    them clean, so a retry can "succeed" without the data being durable (PostgreSQL's
//!    fsync lesson, 2018). Reopening the log runs recovery against what is really on disk.
//! 5. **Bounded space.** An append whose records would reach a segment at or beyond
//!    `checkpoint segment + capacity_segments` waits (`space_freed`) for a checkpoint, up to
//!    `full_log_timeout`, then fails with [`WalError::LogFull`]. Past 75% of the capacity,
//!    or while an append waits, `needs_checkpoint` is true and `checkpoint_wanted` is
//!    signalled.
//!
//! ```text
//!            append            take buffer (leader)         write + fsync
//!  records ───────► buffer ─────────────────────► sealing ───────────────► durable_lsn
//!                   (lock)        (lock, brief)   (no lock)   (no lock)    (lock, notify)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use strongbox_keyring::DataKey;

use crate::block::{self, BlockHeader, BLOCK_SIZE, DATA_CAPACITY};
use crate::config::FlushAtCommit;
use crate::error::{Result, WalError};
use crate::record::{Record, MAX_RECORD_LEN};
use crate::segment::{Geometry, SegmentWriter};
use crate::Lsn;

/// Counters a benchmark or an operator can read; see [`crate::Log::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records appended.
    pub records: u64,
    /// `commit` calls.
    pub commits: u64,
    /// Flush rounds (a leader writing and/or fsyncing).
    pub flushes: u64,
    /// fsyncs of segment files (directory fsyncs and control-file fsyncs not counted).
    pub fsyncs: u64,
    /// Bytes written to segment files.
    pub bytes_written: u64,
    /// Unused data-area bytes in blocks sealed partly filled (rule 3).
    pub padding_bytes: u64,
    /// Appends that had to wait for a checkpoint because the log was full.
    pub full_log_waits: u64,
    /// Checkpoints recorded.
    pub checkpoints: u64,
}

#[derive(Debug, Default)]
struct Counters {
    records: AtomicU64,
    commits: AtomicU64,
    flushes: AtomicU64,
    fsyncs: AtomicU64,
    bytes_written: AtomicU64,
    padding_bytes: AtomicU64,
    full_log_waits: AtomicU64,
    checkpoints: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// The first failure, kept so every later call can name it.
#[derive(Debug, Clone)]
struct Poison {
    op: &'static str,
    path: std::path::PathBuf,
    source: Arc<std::io::Error>,
}

impl Poison {
    fn from_error(error: WalError) -> Poison {
        match error {
            WalError::Io { op, path, source } => Poison {
                op,
                path,
                source: Arc::new(source),
            },
            WalError::Poisoned { op, path, source } => Poison { op, path, source },
            other => Poison {
                op: "write",
                path: std::path::PathBuf::new(),
                source: Arc::new(std::io::Error::other(other.to_string())),
            },
        }
    }

    fn error(&self) -> WalError {
        WalError::Poisoned {
            op: self.op,
            path: self.path.clone(),
            source: Arc::clone(&self.source),
        }
    }
}

/// A block being filled: header fields kept typed, the bytes written at seal time.
struct OpenBlock {
    header: BlockHeader,
    bytes: Box<[u8; BLOCK_SIZE]>,
}

/// Everything guarded by `Writer::state`.
struct State {
    /// Blocks not yet taken by a leader, starting with block `buffer_first`.
    buffer: Vec<OpenBlock>,
    buffer_first: u64,
    /// Where the next record byte goes: data offset `next_offset` (0..=472) of block
    /// `next_block`. Offset 472 means that block is full; offset 0 that it does not exist
    /// yet. The buffer holds blocks `buffer_first..next_block`, plus `next_block` itself
    /// when `next_offset > 0`.
    next_block: u64,
    next_offset: usize,
    end_lsn: Lsn,
    written_lsn: Lsn,
    durable_lsn: Lsn,
    checkpoint_lsn: Lsn,
    /// A leader is writing (rule 2).
    leader: bool,
    /// Appends currently waiting for space (rule 5).
    space_waiters: usize,
    poison: Option<Poison>,
    closed: bool,
}

impl State {
    fn usable(&self) -> Result<()> {
        if let Some(poison) = &self.poison {
            return Err(poison.error());
        }
        if self.closed {
            return Err(WalError::Closed);
        }
        Ok(())
    }

    /// The LSN where the next record would start (after any padding).
    fn position(&self) -> Lsn {
        if self.next_offset == DATA_CAPACITY {
            block::lsn_at(self.next_block + 1, 0)
        } else {
            block::lsn_at(self.next_block, self.next_offset)
        }
    }

    /// The block the last of `len` more bytes would land in.
    fn last_block_after(&self, len: usize) -> u64 {
        let (mut block, mut offset) = (self.next_block, self.next_offset);
        if offset == DATA_CAPACITY {
            block += 1;
            offset = 0;
        }
        block + ((offset + len.max(1) - 1) / DATA_CAPACITY) as u64
    }

    /// Copies one frame in, starting new blocks as needed; returns its end LSN.
    fn put_frame(&mut self, frame: &[u8], epoch: u32, encrypted: bool) -> Lsn {
        let mut rest = frame;
        let mut starts_here = true;
        while !rest.is_empty() {
            if self.next_offset == DATA_CAPACITY {
                self.next_block += 1;
                self.next_offset = 0;
            }
            if self.next_offset == 0 {
                self.buffer.push(OpenBlock {
                    header: BlockHeader {
                        epoch,
                        block_no: self.next_block,
                        data_len: 0,
                        first_record: None,
                        encrypted,
                    },
                    bytes: Box::new([0u8; BLOCK_SIZE]),
                });
            }
            let open = self.buffer.last_mut().expect("a block was just ensured");
            if starts_here && open.header.first_record.is_none() {
                open.header.first_record = Some(self.next_offset as u16);
            }
            starts_here = false;
            let n = rest.len().min(DATA_CAPACITY - self.next_offset);
            block::data_mut(&mut open.bytes)[self.next_offset..self.next_offset + n]
                .copy_from_slice(&rest[..n]);
            self.next_offset += n;
            open.header.data_len = self.next_offset as u16;
            rest = &rest[n..];
        }
        self.end_lsn = block::lsn_at(self.next_block, self.next_offset);
        self.end_lsn
    }

    /// Hands the whole buffer to a leader and seals its last block (rule 3).
    fn take(&mut self) -> (Batch, u64) {
        let padding = if self.next_offset > 0 {
            let padding = (DATA_CAPACITY - self.next_offset) as u64;
            self.next_block += 1;
            self.next_offset = 0;
            padding
        } else {
            0
        };
        let batch = Batch {
            first_block: self.buffer_first,
            blocks: std::mem::take(&mut self.buffer),
            end_lsn: self.end_lsn,
        };
        self.buffer_first = self.next_block;
        (batch, padding)
    }
}

/// What a leader writes.
struct Batch {
    first_block: u64,
    blocks: Vec<OpenBlock>,
    end_lsn: Lsn,
}

/// Where a reopened log continues.
pub(crate) struct Start {
    pub epoch: u32,
    pub next_block: u64,
    pub checkpoint_lsn: Lsn,
}

/// The writing half of the log; shared by `Log` and its background flusher.
pub(crate) struct Writer {
    geometry: Geometry,
    capacity_segments: u64,
    epoch: u32,
    key: Option<DataKey>,
    policy: FlushAtCommit,
    buffer_size: usize,
    full_log_timeout: Duration,
    /// Guards the buffer, every LSN position, the leader flag, the poison and `closed`.
    state: Mutex<State>,
    /// Signalled when a flush round ends, and on close.
    flushed: Condvar,
    /// Signalled when a checkpoint frees space, and on close.
    space_freed: Condvar,
    /// Signalled when a checkpoint becomes needed, and on close.
    checkpoint_wanted: Condvar,
    /// Guards the segment files; only the leader (rule 2) takes it, so it is uncontended.
    files: Mutex<SegmentWriter>,
    counters: Counters,
}

/// Settings the writer needs (from `LogConfig` and the control file).
pub(crate) struct WriterConfig {
    pub geometry: Geometry,
    pub capacity_segments: u32,
    pub policy: FlushAtCommit,
    pub buffer_size: usize,
    pub full_log_timeout: Duration,
}

impl Writer {
    pub fn new(
        config: WriterConfig,
        key: Option<DataKey>,
        files: SegmentWriter,
        start: Start,
    ) -> Writer {
        let first = block::lsn_at(start.next_block, 0);
        Writer {
            geometry: config.geometry,
            capacity_segments: u64::from(config.capacity_segments),
            epoch: start.epoch,
            key,
            policy: config.policy,
            buffer_size: config.buffer_size,
            full_log_timeout: config.full_log_timeout,
            state: Mutex::new(State {
                buffer: Vec::new(),
                buffer_first: start.next_block,
                next_block: start.next_block,
                next_offset: 0,
                end_lsn: first,
                written_lsn: first,
                durable_lsn: first,
                checkpoint_lsn: start.checkpoint_lsn,
                leader: false,
                space_waiters: 0,
                poison: None,
                closed: false,
            }),
            flushed: Condvar::new(),
            space_freed: Condvar::new(),
            checkpoint_wanted: Condvar::new(),
            files: Mutex::new(files),
            counters: Counters::default(),
        }
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// First block that may not be written until the checkpoint moves (rule 5).
    fn limit_block(&self, st: &State) -> u64 {
        let checkpoint_segment = self.geometry.segment_of(block::block_of(st.checkpoint_lsn));
        self.geometry
            .first_block(checkpoint_segment + self.capacity_segments)
    }

    fn capacity_bytes(&self) -> u64 {
        self.capacity_segments * self.geometry.segment_bytes()
    }

    /// Bytes from the start of the checkpoint's segment to the write position: what the
    /// log occupies on disk.
    fn used_bytes(&self, st: &State) -> u64 {
        let checkpoint_segment = self.geometry.segment_of(block::block_of(st.checkpoint_lsn));
        st.position() - self.geometry.first_block(checkpoint_segment) * BLOCK_SIZE as u64
    }

    fn checkpoint_needed(&self, st: &State) -> bool {
        st.space_waiters > 0 || self.used_bytes(st) * 4 >= self.capacity_bytes() * 3
    }

    /// Appends records as one batch; returns the end LSN of the last one.
    pub fn append(&self, records: &[Record]) -> Result<Lsn> {
        let mut frames = Vec::new();
        let mut lens = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let (body_len, len) = record.encode_frame(&mut frames, i + 1 == records.len());
            if body_len > MAX_RECORD_LEN {
                return Err(WalError::TooLarge {
                    what: "record",
                    len: body_len,
                    max: MAX_RECORD_LEN,
                });
            }
            lens.push(len);
        }
        // A batch must fit in the log even right after a checkpoint at the write position.
        let max_batch = (self.capacity_segments - 1) as usize
            * self.geometry.blocks_per_segment as usize
            * DATA_CAPACITY
            - DATA_CAPACITY;
        if frames.len() > max_batch {
            return Err(WalError::TooLarge {
                what: "append batch",
                len: frames.len(),
                max: max_batch,
            });
        }
        let mut st = self.state.lock();
        st.usable()?;
        if records.is_empty() {
            return Ok(st.end_lsn);
        }
        let len = frames.len();
        self.wait_for_space(&mut st, |w, st| {
            st.last_block_after(len) < w.limit_block(st)
        })?;
        let encrypted = self.key.is_some();
        let mut rest = frames.as_slice();
        for len in lens {
            let (frame, later) = rest.split_at(len);
            st.put_frame(frame, self.epoch, encrypted);
            rest = later;
        }
        bump(&self.counters.records, records.len() as u64);
        let end = st.end_lsn;
        if self.checkpoint_needed(&st) {
            self.checkpoint_wanted.notify_all();
        }
        let unwritten = st.buffer.len() * BLOCK_SIZE;
        drop(st);
        if unwritten >= self.buffer_size {
            self.write_up_to(end, false)?;
        }
        Ok(end)
    }

    /// Rule 5: waits until `fits` holds, signalling that a checkpoint is wanted.
    fn wait_for_space(
        &self,
        st: &mut MutexGuard<'_, State>,
        fits: impl Fn(&Writer, &State) -> bool,
    ) -> Result<()> {
        if fits(self, st) {
            return Ok(());
        }
        bump(&self.counters.full_log_waits, 1);
        let started = Instant::now();
        let deadline = started + self.full_log_timeout;
        st.space_waiters += 1;
        self.checkpoint_wanted.notify_all();
        let result = loop {
            if let Err(e) = st.usable() {
                break Err(e);
            }
            if fits(self, st) {
                break Ok(());
            }
            if self.space_freed.wait_until(st, deadline).timed_out() && !fits(self, st) {
                break Err(WalError::LogFull {
                    waited: started.elapsed(),
                    capacity: self.capacity_bytes(),
                    checkpoint_lsn: st.checkpoint_lsn,
                });
            }
        };
        st.space_waiters -= 1;
        result
    }

    /// Waits while the log is more than 7/8 full (InnoDB's `log_free_check`): called
    /// before an engine mini-transaction takes page latches, so its append — made while
    /// holding latches a checkpoint may need — finds room in the last eighth.
    pub fn free_check(&self) -> Result<()> {
        let mut st = self.state.lock();
        st.usable()?;
        self.wait_for_space(&mut st, |w, st| {
            w.used_bytes(st) * 8 <= w.capacity_bytes() * 7
        })
    }

    /// Rule 2: returns once everything up to `lsn` is written (`sync == false`) or
    /// durable (`sync == true`).
    pub fn write_up_to(&self, lsn: Lsn, sync: bool) -> Result<()> {
        let mut st = self.state.lock();
        loop {
            if let Some(poison) = &st.poison {
                return Err(poison.error());
            }
            if lsn > st.end_lsn {
                return Err(WalError::BeyondEnd {
                    lsn,
                    current: st.end_lsn,
                });
            }
            let covered = if sync { st.durable_lsn } else { st.written_lsn };
            if covered >= lsn {
                return Ok(());
            }
            if st.leader {
                self.flushed.wait(&mut st);
                continue;
            }
            st.leader = true;
            let (batch, padding) = st.take();
            drop(st);
            bump(&self.counters.padding_bytes, padding);
            let result = self.write_batch(&batch, sync);
            st = self.state.lock();
            st.leader = false;
            match result {
                Ok(()) => {
                    st.written_lsn = st.written_lsn.max(batch.end_lsn);
                    if sync {
                        st.durable_lsn = st.written_lsn;
                    }
                }
                Err(error) => {
                    if st.poison.is_none() {
                        st.poison = Some(Poison::from_error(error));
                    }
                }
            }
            self.flushed.notify_all();
        }
    }

    /// The leader's IO: seal, write, fsync. No state lock is held here.
    fn write_batch(&self, batch: &Batch, sync: bool) -> Result<()> {
        let mut files = self.files.lock();
        if !batch.blocks.is_empty() {
            let mut bytes = Vec::with_capacity(batch.blocks.len() * BLOCK_SIZE);
            for open in &batch.blocks {
                let mut stored = *open.bytes;
                open.header.write(&mut stored);
                block::seal(&mut stored, self.key.as_ref());
                bytes.extend_from_slice(&stored);
            }
            files.write_blocks(batch.first_block, &bytes)?;
            bump(&self.counters.bytes_written, bytes.len() as u64);
        }
        if sync {
            let syncs = files.sync()?;
            bump(&self.counters.fsyncs, syncs);
        }
        bump(&self.counters.flushes, 1);
        Ok(())
    }

    /// `commit(lsn)` under the configured `flush_at_commit`.
    pub fn commit(&self, lsn: Lsn) -> Result<()> {
        bump(&self.counters.commits, 1);
        match self.policy {
            FlushAtCommit::EveryCommit => self.write_up_to(lsn, true),
            FlushAtCommit::WriteAtCommit => self.write_up_to(lsn, false),
            FlushAtCommit::OncePerInterval => {
                let st = self.state.lock();
                st.usable()?;
                if lsn > st.end_lsn {
                    return Err(WalError::BeyondEnd {
                        lsn,
                        current: st.end_lsn,
                    });
                }
                Ok(())
            }
        }
    }

    /// Makes everything appended so far durable.
    pub fn flush_all(&self) -> Result<()> {
        let end = self.state.lock().end_lsn;
        self.write_up_to(end, true)
    }

    /// Records an external failure (a control-file fsync) as the poison.
    pub fn poison(&self, error: WalError) -> WalError {
        let mut st = self.state.lock();
        let poison = st
            .poison
            .get_or_insert_with(|| Poison::from_error(error))
            .clone();
        self.flushed.notify_all();
        self.space_freed.notify_all();
        poison.error()
    }

    /// Fails if the log is poisoned or closed.
    pub fn usable(&self) -> Result<()> {
        self.state.lock().usable()
    }

    /// Moves the checkpoint (already durable in the control file) and wakes appends
    /// waiting for space.
    pub fn set_checkpoint(&self, lsn: Lsn) {
        let mut st = self.state.lock();
        st.checkpoint_lsn = lsn;
        bump(&self.counters.checkpoints, 1);
        self.space_freed.notify_all();
    }

    pub fn current_lsn(&self) -> Lsn {
        self.state.lock().end_lsn
    }

    pub fn durable_lsn(&self) -> Lsn {
        self.state.lock().durable_lsn
    }

    pub fn checkpoint_lsn(&self) -> Lsn {
        self.state.lock().checkpoint_lsn
    }

    pub fn needs_checkpoint(&self) -> bool {
        self.checkpoint_needed(&self.state.lock())
    }

    /// Blocks until a checkpoint is needed (true), or `timeout` passes or the log closes
    /// (false).
    pub fn wait_checkpoint_needed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock();
        loop {
            if st.closed || st.poison.is_some() {
                return false;
            }
            if self.checkpoint_needed(&st) {
                return true;
            }
            if self
                .checkpoint_wanted
                .wait_until(&mut st, deadline)
                .timed_out()
            {
                return self.checkpoint_needed(&st);
            }
        }
    }

    pub fn stats(&self) -> LogStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LogStats {
            records: get(&c.records),
            commits: get(&c.commits),
            flushes: get(&c.flushes),
            fsyncs: get(&c.fsyncs),
            bytes_written: get(&c.bytes_written),
            padding_bytes: get(&c.padding_bytes),
            full_log_waits: get(&c.full_log_waits),
            checkpoints: get(&c.checkpoints),
        }
    }

    /// Flushes everything, then refuses further work. Idempotent.
    pub fn close(&self) -> Result<()> {
        if self.state.lock().closed {
            return Ok(());
        }
        let result = self.flush_all();
        let mut st = self.state.lock();
        st.closed = true;
        self.flushed.notify_all();
        self.space_freed.notify_all();
        self.checkpoint_wanted.notify_all();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemVfs;
    use std::path::PathBuf;

    fn writer(vfs: &Arc<MemVfs>) -> Writer {
        let geometry = Geometry::new(4096);
        Writer::new(
            WriterConfig {
                geometry,
                capacity_segments: 4,
                policy: FlushAtCommit::EveryCommit,
                buffer_size: 1 << 20,
                full_log_timeout: Duration::from_secs(5),
            },
            None,
            SegmentWriter::new(vfs.clone(), PathBuf::from("/log"), geometry),
            Start {
                epoch: 1,
                next_block: 0,
                checkpoint_lsn: block::lsn_at(0, 0),
            },
        )
    }

    #[test]
    fn lsns_count_headers_and_a_flush_seals_the_block() {
        let vfs = Arc::new(MemVfs::new());
        let w = writer(&vfs);
        assert_eq!(w.current_lsn(), 24);
        // kind, space_id, payload length, 8 bytes: an 11-byte body, a 12-byte frame.
        let record = Record::CreateSpace {
            space_id: 1,
            payload: vec![0; 8],
        };
        assert_eq!(record.encode_frame(&mut Vec::new(), true), (11, 12));
        assert_eq!(w.append(std::slice::from_ref(&record)).unwrap(), 36);
        w.write_up_to(36, true).unwrap();
        assert_eq!(w.durable_lsn(), 36);
        // The next record starts in block 1, after block 0's padding and trailer.
        assert_eq!(w.append(std::slice::from_ref(&record)).unwrap(), 512 + 36);
        let stats = w.stats();
        assert_eq!(stats.padding_bytes, 472 - 12);
        assert_eq!(
            (stats.flushes, stats.fsyncs, stats.bytes_written),
            (1, 1, 512)
        );
        // A record filling the rest of the data area ends at the block's data end: a
        // 453-byte image makes a 458-byte body and a 460-byte frame; 12 + 460 = 472.
        let exact = Record::PageImage {
            space_id: 1,
            page_no: 1,
            image: vec![7; 453],
        };
        assert_eq!(
            exact.encode_frame(&mut Vec::new(), true).1,
            DATA_CAPACITY - 12
        );
        assert_eq!(w.append(&[exact]).unwrap(), 512 + 496);
        assert_eq!(
            w.append(std::slice::from_ref(&record)).unwrap(),
            1024 + 36,
            "the next record starts in a new block"
        );
        assert!(matches!(
            w.write_up_to(5000, true),
            Err(WalError::BeyondEnd { .. })
        ));
    }
}
