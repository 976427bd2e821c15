//! What the pool has done: counters for benchmarks, tests and `strongbox inspect`.

use std::sync::atomic::{AtomicIsize, AtomicU64};

/// A snapshot of the pool's counters. Each counter is exact, but they are read one after
/// another while the pool runs, so a snapshot is not one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// `read`/`write` calls that found their page in the pool.
    pub hits: u64,
    /// `read`/`write` calls that did not and read it from disk (`create` is neither).
    pub misses: u64,
    /// Pages read through [`PageIo`](super::PageIo) successfully.
    pub pages_read: u64,
    /// Pages written through [`PageIo`](super::PageIo), by any path.
    pub pages_written: u64,
    /// Pages removed from their frame to make room for another.
    pub evictions: u64,
    /// Frames dirty now.
    pub dirty_pages: u64,
    /// Frames in the pool.
    pub frames: u64,
    /// The part of `pages_written` that the page cleaner wrote.
    pub cleaner_flushes: u64,
}

impl BufferStats {
    /// Hits as a fraction of lookups (1.0 when there were none).
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            1.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

/// The counters that are not kept per shard (hits and misses are; see `table`). Only the
/// miss, write-back and dirtying paths touch them, never a plain hit.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) pages_read: AtomicU64,
    pub(super) pages_written: AtomicU64,
    pub(super) evictions: AtomicU64,
    pub(super) cleaner_flushes: AtomicU64,
    /// Signed: a flag cleared just after it was set may be uncounted before it was
    /// counted, so this can dip below zero for a moment.
    pub(super) dirty_pages: AtomicIsize,
    /// Clean-to-dirty transitions so far; the cleaner compares it between ticks to notice
    /// an idle pool.
    pub(super) dirtied: AtomicU64,
}
