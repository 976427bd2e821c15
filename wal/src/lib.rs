//! # strongbox-wal
//!
//! The redo log (planned; see issue "Durability"). This crate will own log sequence numbers
//! (LSNs as byte positions in the log), physiological redo records, encrypted and
//! checksummed log blocks, group commit, fuzzy checkpoints and the recovery scan that stops
//! cleanly at a torn tail. Today it holds the file-IO seam (`io`: `Vfs`, `FileIo`, the real
//! and in-memory file systems, the data-directory lock) that both the log and the engine
//! use, and the LSN type.

pub mod io;

/// A log sequence number: a byte position in the redo log. Every page records the LSN of
/// the last change applied to it; the WAL rule says no page reaches disk before the redo
/// up to its LSN is durable.
pub type Lsn = u64;
