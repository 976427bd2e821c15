//! # strongbox-wal
//!
//! The redo log (planned; see issue "Durability"). This crate will own log sequence numbers
//! (LSNs as byte positions in the log), physiological redo records, encrypted and
//! checksummed log blocks, group commit, fuzzy checkpoints and the recovery scan that stops
//! cleanly at a torn tail. Until then it only defines the LSN type the page header uses.

/// A log sequence number: a byte position in the redo log. Every page records the LSN of
/// the last change applied to it; the WAL rule says no page reaches disk before the redo
/// up to its LSN is durable.
pub type Lsn = u64;
