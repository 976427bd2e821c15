//! One re-encryption pass over one tablespace: every page `1..page_count` is rewritten with
//! the space's current sealing, in batches, and the progress is recorded in page 0.
//!
//! ```text
//!   read next_page from page 0 (in memory)          — where the pass is
//!   for each page of the batch (at most BATCH):
//!       throttle; latch it exclusively through the buffer pool (a miss reads and
//!       decrypts it) and release it — marked dirty, content unchanged
//!   BufferPool::flush_pages(batch)                   — written (doublewrite, fresh write
//!                                                      nonce = fresh IV) and synced
//!   page 0: next_page = end of batch, synced         — only now, so progress on disk
//!                                                      never runs ahead of the pages
//!   no page left: page 0 drops every other generation (plan::finished), synced
//! ```
//!
//! **Crash safety.** Page 0 says "pages below `next_page` carry the target"; it is written
//! only after those pages are durable, so after a crash the pass resumes at `next_page`
//! and redoes at most one batch. Pages at or beyond it may carry any listed generation
//! (every one is still in the header) or be plain while `PLAIN_PAGES`/`DECRYPTING` is set.
//! A generation is dropped only after every page was rewritten and synced.
//!
//! **Why marking dirty is enough.** The page's bytes do not change, so there is nothing to
//! redo-log; the next write of the page seals it with the current generation and a fresh
//! write nonce, so the new ciphertext never reuses an IV.
//!
//! **Every page is rewritten**, even one that may already carry the target. A frame's
//! codec fields say how the page was sealed when it was last *read*, not how it is sealed
//! on disk now (writes seal a copy), and a generation's name (key id, version) can come
//! back after it was dropped (key 5 → plain → key 5): skipping on that evidence left
//! plaintext pages behind in a table reported as encrypted (found by the kill -9 tests).
//!
//! **Concurrency.** Progress and the finish are compare-and-set on page 0 through
//! `SpaceFile::update_encryption`: if a rotation restarted the pass meanwhile (rule 3 of
//! `plan.rs`), the stale progress is dropped and the pass starts over from page 1.

use super::plan;
use super::throttle::Throttle;
use crate::buffer::BufferPool;
use crate::error::Result;
use crate::page::PageId;
use crate::space::header::EncryptionRecord;
use crate::space::{EncryptionChange, SpaceFile};
use std::sync::atomic::{AtomicU64, Ordering};

/// Pages per batch: one doublewrite batch, one page-0 write.
pub(crate) const BATCH: u32 = 64;

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every page moved; the old generations are gone from page 0.
    Finished,
    /// Nothing to do (no pass is running on this space).
    Idle,
    /// `stopped()` said so; progress up to the last batch is kept.
    Stopped,
}

/// Which pass a batch belongs to: a restart changes one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PassId {
    key_id: u32,
    target_version: u32,
    flags: u32,
}

impl PassId {
    fn of(record: &EncryptionRecord) -> PassId {
        PassId {
            key_id: record.key_id,
            target_version: record.rotation.target_version,
            flags: record.rotation.flags,
        }
    }
}

/// Runs the pass of `space` until it finishes or `stopped()` is true.
pub(crate) fn run(
    space: &SpaceFile,
    pool: &BufferPool,
    throttle: &Throttle,
    stopped: &dyn Fn() -> bool,
    replan: &dyn Fn(Option<&EncryptionRecord>) -> Result<Option<EncryptionChange>>,
    rewritten_count: &AtomicU64,
) -> Result<Outcome> {
    loop {
        if stopped() {
            return Ok(Outcome::Stopped);
        }
        // Before the record: a sealing change after this look fails `same_pass` below.
        let sealing = space.sealing_changes();
        let Some(record) = space.header().encryption else {
            return Ok(Outcome::Idle);
        };
        if !record.rotation.is_active() {
            return Ok(Outcome::Idle);
        }
        let pass = PassId::of(&record);
        let start = record.rotation.next_page.max(1);
        let page_count = space.logged_alloc().page_count;
        if start >= page_count {
            let finished = space.update_encryption(|current| {
                if !same_pass(space, current, pass, start, sealing) {
                    return Ok(None);
                }
                // What the space was last asked to become, planned again on the finished
                // record: a change rule 4 of `plan.rs` put off (all four generation slots
                // used) is made now, in the same write. A plan that fails (a key gone)
                // leaves the space as the pass left it, as `plan_at_open` does.
                let done = plan::finished(current.expect("checked"));
                Ok(Some(match replan(done.record.as_ref()) {
                    Ok(Some(again)) => again,
                    Ok(None) | Err(_) => done,
                }))
            })?;
            if finished {
                pool.clear_doublewrite()?;
                return Ok(Outcome::Finished);
            }
            continue; // restarted meanwhile
        }
        let end = start.saturating_add(BATCH).min(page_count);
        let mut rewritten = Vec::new();
        for page_no in start..end {
            if stopped() {
                return Ok(Outcome::Stopped);
            }
            let id = PageId::new(space.id(), page_no);
            throttle.acquire(); // the read (or hit)
            throttle.acquire(); // the write
            drop(pool.write(id)?); // dirty: the next write re-seals it
            rewritten.push(id);
        }
        pool.flush_pages(&rewritten)?;
        rewritten_count.fetch_add(rewritten.len() as u64, Ordering::Relaxed);
        space.update_encryption(|current| {
            Ok(same_pass(space, current, pass, start, sealing).then(|| {
                let mut record = current.expect("checked").clone();
                record.rotation.next_page = end;
                EncryptionChange {
                    record: Some(record),
                    new_key: None,
                }
            }))
        })?;
    }
}

/// True if `current` is still the pass `pass`, `start` pages in, and the sealing of new
/// page writes has not changed since the pass read `sealing` (`SpaceFile::sealing_changes`).
/// The record alone is not enough: a restart can bring back the very same record (ALTER key
/// 1 → key 2 → key 1 puts back the stored key-1 generation, `next_page` 1), while pages of
/// this batch were written with key 2 by others (the ALTER's checkpoint, the page cleaner)
/// and left clean, so `flush_pages` skipped them. Accepting the batch then let the finish
/// drop key 2's generation with those pages still sealed by it (found by `crash_loop`).
/// Runs inside `update_encryption`, so no sealing change can come between.
fn same_pass(
    space: &SpaceFile,
    current: Option<&EncryptionRecord>,
    pass: PassId,
    start: u32,
    sealing: u64,
) -> bool {
    space.sealing_changes() == sealing
        && current.is_some_and(|record| {
            record.rotation.is_active()
                && PassId::of(record) == pass
                && record.rotation.next_page.max(1) == start
        })
}
