//! # strongbox-wal
//!
//! The redo log: LSNs, redo records, encrypted and checksummed 512-byte log blocks, group
//! commit, checkpoints with bounded space, and the recovery scan that stops cleanly at a
//! torn tail. It also holds the file-IO seam ([`io`]: `Vfs`, `FileIo`, the real and
//! in-memory file systems, the data-directory lock) that the log and the engine share.
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//! use strongbox_keyring::provider::MemoryKeyProvider;
//! use strongbox_wal::io::MemVfs;
//! use strongbox_wal::{Log, LogConfig, Record};
//!
//! let keys = MemoryKeyProvider::new();
//! keys.add_random(1, 1, 256)?; // key id 1 encrypts the redo log (DESIGN §3)
//! let vfs = Arc::new(MemVfs::new());
//! let dir = Path::new("/db/redo");
//!
//! let log = Log::create(vfs.clone(), dir, LogConfig::default(), Some(&keys))?;
//! let lsn = log.append(&[
//!     Record::PageDelta { space_id: 7, page_no: 3, ranges: vec![(100, b"new".to_vec())] },
//!     Record::Commit { txn_id: 42 },
//! ])?;
//! log.commit(lsn)?; // flush_log_at_commit = 1: durable when this returns
//! log.close()?;
//!
//! let (log, report) = Log::open(vfs, dir, LogConfig::default(), Some(&keys))?;
//! assert_eq!(report.records.len(), 2);
//! assert_eq!(report.records[1].record, Record::Commit { txn_id: 42 });
//! assert_eq!(report.records[1].end_lsn, lsn);
//! log.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Map
//!
//! | file          | owns                                                                    |
//! |---------------|-------------------------------------------------------------------------|
//! | `block.rs`    | the 512-byte block layout, LSN arithmetic, sealing/opening (AES-GCM)    |
//! | `record.rs`   | [`Record`] and its frame encoding; a decoder that never trusts a length |
//! | `control.rs`  | `redo.ctl`: two slots holding epoch, checkpoint, segment size, key     |
//! | `segment.rs`  | segment files `redo-<seq:08>.log`, block → file arithmetic             |
//! | `writer.rs`   | the log buffer, group commit, poisoning, the full-log wait             |
//! | `flusher.rs`  | the background thread of `flush_log_at_commit` 0 and 2                 |
//! | `recovery.rs` | the scan from the checkpoint; [`RecoveryReport`]                       |
//! | `log.rs`      | [`Log`]: create/open/append/flush/commit/checkpoint/close              |
//! | `config.rs`   | [`LogConfig`], [`FlushAtCommit`]                                        |
//!
//! ## On disk
//!
//! ```text
//! <log dir>/
//!   redo.ctl            control file: 2 × 512-byte slots (control.rs)
//!   redo-00000000.log   segment 0: blocks [0, S)          S = segment_size / 512
//!   redo-00000001.log   segment 1: blocks [S, 2S)   ...   deleted once below the checkpoint
//! ```
//!
//! An **LSN** is a byte position in the log stream, block headers included: block `b`
//! covers LSNs `[512·b, 512·b + 512)` and its record bytes sit at `512·b + 24 ..
//! 512·b + 496` (block.rs has the layout and the boundary rules). A fresh log starts at
//! LSN 24.
//!
//! ## Rules of the log
//!
//! * **W1 (write-ahead).** The engine writes no page whose LSN exceeds
//!   [`Log::durable_lsn`]; it calls [`Log::flush`] first. (Enforced in the engine.)
//! * **W2 (one write per block per epoch).** A block, once handed to the OS, is never
//!   written again in the same epoch: each flush seals its last block and the next record
//!   starts a fresh block (`writer.rs` rule 3).
//! * **W3 (epochs).** Each open takes a new epoch, above every epoch in the control file
//!   and in any block recovery saw, and fsyncs it in the control file before the first
//!   block is written. Epochs only grow.
//! * **W4 (no overwrite of valid blocks).** After recovery, writing resumes at the block
//!   where the scan stopped — never inside a block that holds recovered records, so a torn
//!   write can never damage acknowledged data.
//! * **W5 (fsync failure is final).** A failed write or fsync poisons the log; nothing is
//!   retried (`writer.rs` rule 4).
//! * **W6 (checkpoint before delete).** A segment is deleted only after a checkpoint above
//!   all of its blocks is fsynced in the control file.
//! * **W7 (batches are atomic).** The records of one [`Log::append`] call get one
//!   contiguous LSN range, are never split across flushes, and come back from recovery
//!   all or none (the last frame of a batch is flagged, `record.rs`), so an engine
//!   mini-transaction is redone whole or not at all.
//!
//! ## Why an IV is never reused under the log key
//!
//! The argument, in the style of docs/FORMAT.md §2.2:
//!
//! 1. **One key, one log.** `Log::create` makes a fresh random data key for this log only
//!    (wrapped under key id 1 in the control file). So uniqueness only has to hold within
//!    this log.
//! 2. **The IV is a function of `(epoch, block_no)`.** Each block is sealed with AES-GCM
//!    under the 96-bit nonce `epoch (4) ‖ block_no (8)`; GCM's 32-bit counter follows it,
//!    so the counter blocks of one block are `epoch ‖ block_no ‖ 1..=31` (1 for the tag,
//!    2..=31 for 472 data bytes). Distinct pairs give disjoint counter blocks.
//! 3. **Within an epoch, each `block_no` is sealed once (W2).** The writer's position only
//!    moves forward and a written block is never reopened; a leader seals exactly the
//!    blocks it took from the buffer, and no block is in two takes.
//! 4. **An epoch is never reused (W3).** The epoch is durable before any block carries it;
//!    a crash after that fsync just wastes the epoch. A torn control-slot write leaves the
//!    previous slot, whose epoch was never used for a block written by the torn open
//!    (nothing is written before the fsync returns). Because the new epoch also exceeds
//!    every epoch found in a block, even a control file that lost its newest slot to
//!    damage cannot lead to a reused epoch for the blocks recovery reads.
//! 5. Therefore every block sealed under the key uses counter blocks no other seal used,
//!    in particular the torn tail, which the next epoch rewrites at the same positions.
//!
//! Worked example (3 blocks per flush shown, `e` = epoch):
//!
//! ```text
//! time  event                                  blocks sealed (epoch, block_no)
//! t0    create: control epoch 1 (synced)       -
//! t1    flush records A..C                     (1,0) (1,1)            block 1 partly filled
//! t2    flush record D                         (1,2)                  D starts a new block (W2)
//! t3    flush E (blocks 3,4); crash mid-write  (1,3) (1,4)            block 4 torn on disk
//! t4    open: scan stops at block 4 (checksum) -; control epoch 2 (synced)
//! t5    flush F                                (2,4)                  same position, new IV
//! t6    crash, open: control epoch 3           -                      E's start in block 3 is
//!                                                                     discarded (cut by epoch 2)
//! ```
//!
//! ## Torn tails and stale blocks
//!
//! A crash tears only unacknowledged blocks, at the end. The scan stops at the first block
//! that is missing, zero, fails its checksum, names another position, or carries an
//! *older* epoch than its predecessor (recovery.rs). That last check is what makes W4 safe
//! without erasing anything: after a resume at block `r` in epoch `e`, every block at or
//! past `r` from an older epoch is stale, and position `r` itself only ever holds a block
//! of epoch ≥ `e` or an invalid one, so the scan can never step from a newer block onto a
//! stale one.
//!
//! ## Flush policies (`flush_log_at_commit`, [`FlushAtCommit`])
//!
//! | value | `commit` does                     | background thread (every `flush_interval`) | a crash loses            |
//! |-------|-----------------------------------|--------------------------------------------|--------------------------|
//! | 1     | write + fsync (group commit)      | not started                                | nothing acknowledged     |
//! | 2     | write to the OS                   | fsync                                      | ≤ 1 interval on OS crash |
//! | 0     | nothing                           | write + fsync                              | ≤ 1 interval             |
//!
//! ## Checkpoints and space
//!
//! The log may occupy `capacity_segments` segments counted from the checkpoint's segment.
//! [`Log::needs_checkpoint`] turns true at 75% of that (or when an append is waiting);
//! [`Log::wait_checkpoint_needed`] lets the engine's checkpoint thread sleep until then.
//! The engine writes out dirty pages and calls [`Log::checkpoint`] with the oldest LSN it
//! still needs; segments wholly below it are deleted. An append that would go past the
//! capacity waits for that (up to `full_log_timeout`, then [`WalError::LogFull`]).
//! An append made while holding page latches must not be the one that waits (the
//! checkpoint may need those latches), so the engine calls [`Log::free_check`] before
//! latching: it waits while the log is more than 7/8 full, which keeps the last eighth
//! for appends already under way (InnoDB's `log_free_check`).
//!
//! ```text
//!   0%            75%                 87.5%              100% of capacity
//!   |-------------|-------------------|------------------|
//!                 needs_checkpoint    free_check waits   append waits (LogFull after timeout)
//! ```
//!
//! ## What is left out
//!
//! Segments are not preallocated or recycled (a new file per segment); log records are
//! not applied here (that is the engine's redo pass); the log key is not rotated (a key-1
//! rotation would rewrap it in the control file).

#![forbid(unsafe_code)]

// Public (hidden) only so the fuzz targets in `fuzz/` can decode blocks directly.
#[doc(hidden)]
pub mod block;
mod config;
mod control;
mod error;
mod flusher;
pub mod io;
mod log;
pub mod record;
mod recovery;
mod segment;
mod writer;

#[cfg(test)]
mod tests;

pub use block::{BLOCK_SIZE, DATA_CAPACITY};
pub use config::{FlushAtCommit, LogConfig};
pub use error::{Result, WalError};
pub use log::Log;
pub use record::{Record, RecordError};
pub use recovery::{LoggedRecord, RecoveryReport, StopReason, StopWhy};
pub use writer::LogStats;

/// A log sequence number: a byte position in the redo log. Every page records the LSN of
/// the last change applied to it; the WAL rule says no page reaches disk before the redo
/// up to its LSN is durable.
pub type Lsn = u64;
