//! The buffer pool: a fixed set of page-sized frames that cache pages in plaintext.
//!
//! Everything above this layer (the B+tree, undo, the catalog) reads and changes pages
//! only through the pool. Everything below it (the tablespaces and the page codec) is
//! reached only through the [`PageIo`] trait. The pool itself never sees keys and never
//! looks inside stored bytes: it hands what `PageIo::encode_page` made to the doublewrite
//! and back to `PageIo::write_stored` unopened. A hit costs one shard mutex, one atomic and
//! one latch, and no crypto at all (DESIGN.md §3, "encrypt only at the IO boundary").
//!
//! ```text
//!   BufferPool::read / write / create            PageRef / PageMut (pinned, latched)
//!            │                                            ▲
//!            ▼                                            │
//!   page table: 64 shards, each Mutex<HashMap<PageId, FrameId>>  ──▶  frames[FrameId]
//!            │ miss                                                 (latch, pin, dirty)
//!            ▼
//!   free list, else the replacer (CLOCK) proposes a victim ──▶ write back if dirty
//!            │                                                    (see `writeback.rs`)
//!            ▼
//!   PageIo::read_page  (tablespace: read, verify checksum, decrypt)
//! ```
//!
//! A write-back takes dirty frames into a *batch* and writes it in `Core::write_batch`:
//! one page at a time with no doublewrite, else up to the doublewrite's slot count through
//! [`Doublewrite::write_batch`](crate::doublewrite::Doublewrite::write_batch) (attached with
//! [`BufferPool::attach_doublewrite`]).
//!
//! * `pool.rs`: [`BufferPool`]: the API, lookup and miss.
//! * `writeback.rs`: eviction, batches, the one write path, the cleaner's and
//!   `flush_all`'s passes.
//! * `frame.rs`: one frame (latch, pin count, dirty flag) and the guards [`PageRef`] and
//!   [`PageMut`].
//! * `table.rs`: the sharded page table.
//! * `replacer.rs`: the `Replacer` seam and its CLOCK implementation.
//! * `cleaner.rs`: the background page cleaner.
//! * `stats.rs`: [`BufferStats`].
//! * `mem_io.rs`: [`MemPageIo`], an in-memory [`PageIo`] for tests.
//!
//! # The rules
//!
//! The pool is correct because of these rules; the code names them where it relies on them.
//!
//! 1. **The page table is the truth.** A frame holds page P exactly when the table maps P
//!    to it. Only a thread that owns a frame (popped it from the free list, or removed its
//!    mapping as an evictor) may change which page it holds.
//! 2. **Pins are taken under the shard lock, through the table.** So "mapped and pin
//!    count 0", checked under the page's shard lock, means nobody uses the frame and nobody
//!    can start to before the lock is released. The evictor claims a victim exactly so.
//! 3. **Publish before reading.** On a miss the loader maps the page to its frame *before*
//!    reading it, while holding the frame's write latch. A second thread missing on the same
//!    page finds the mapping, pins, and waits on the latch instead of reading it again.
//! 4. **Failed contents are never seen.** If the read fails, the loader unmaps the frame and
//!    marks it *orphaned* before releasing the latch. Whoever then gets the latch of an
//!    orphaned frame lets go and starts over; the last unpin returns the frame to the free
//!    list.
//! 5. **Dirty after latching, clean before writing.** The dirty flag is set by a
//!    [`PageMut`] only once it holds the write latch. A write-back clears the flag under the
//!    latch *before* encoding and sets it again (still under the latch) if the write fails,
//!    so a change made after the write-back's copy always leaves the frame dirty.
//! 6. **Only clean frames are evicted.** A dirty victim is written back first while it
//!    stays mapped (and pinned), so no reader can fetch a stale copy from disk while the
//!    newer one is on its way there.
//! 7. **Every page write goes through one function**, `Core::write_batch`. Each frame of a
//!    batch stays pinned and latched in upgradable-read mode from the moment its dirty flag
//!    is taken until its home write is done (with a doublewrite: synced): readers carry on,
//!    writers wait, and two write-backs of one frame take turns, so an older image never
//!    reaches home after a newer one. `flush_all` takes that latch on every mapped frame,
//!    so it waits for writes already in flight and skips nothing.
//! 8. **The WAL rule** (enforced by the [`PageIo`], in `encode_page`: `SpaceSet` once the
//!    redo log is attached): no stored image of a page reaches any file, the doublewrite
//!    file included, before the redo log is durable up to the page's LSN.
//! 9. **A failed write or sync poisons the pool.** The disk image may now be torn and only
//!    recovery can tell, so every later `read`, `write`, `create` and `flush_all` returns
//!    [`Error::Poisoned`](crate::error::Error::Poisoned), and the frames of the failed
//!    batch are dirty again. Failed *reads* do not poison: they concern one page and are
//!    reported to the caller.
//! 10. **Nobody waits for a latch while holding a batch.** A thread inside a
//!     mini-transaction may hold the exclusive latch of page X while it waits for page Y,
//!     which may be in someone's batch. So the passes and eviction only *try* latches while
//!     their batch is not empty; `flush_all`'s pass, finding a latch busy, first writes its
//!     batch out and only then waits.
//! 11. **The doublewrite order** (with a doublewrite attached): a page is written home only
//!     after its stored image is durable in a doublewrite slot, and a batch ends only once
//!     every space it wrote home is synced (`doublewrite.rs`, steps 1–5 and rules R1, R2).
//!     So a page torn at home by a crash has a whole copy in the last batch.
//!
//! # Locks and lock order
//!
//! | lock                         | guards                                   | held for            |
//! |------------------------------|------------------------------------------|---------------------|
//! | shard mutex (64 of them)     | one shard's id→frame map, hit/miss counts | a lookup or an edit |
//! | frame latch (`RwLock`)       | the frame's page bytes                    | as long as a guard lives; a batch's whole write |
//! | frame page-hint mutex        | which page the frame holds (a hint)       | a copy              |
//! | free-list mutex              | the frames that hold no page              | a push or a pop     |
//! | unpin-signal mutex           | nothing; the condvar sleeps on it         | a wait slice        |
//! | cleaner-handle mutex         | the page cleaner's thread handle          | start, shutdown     |
//! | doublewrite state mutex      | its slots and batch counter               | one batch's IO      |
//!
//! Pin counts, dirty flags, usage counters and statistics are atomics.
//!
//! A write-back holds its batch's latches while it waits for the redo log (the WAL rule, in
//! `encode_page`) and for the doublewrite's mutex. Neither can close a cycle: the log
//! flush and the holder of that mutex only write and sync files, and wait for no latch and
//! no pool mutex.
//!
//! Page latches are taken in the caller's order (the B+tree takes them top-down). The pool
//! never waits for a latch while holding one of its mutexes, and while serving a miss it
//! only *tries* the latches of other frames, so it cannot close a cycle with the caller's
//! latches (rule 10 extends this to batches). Its mutexes nest in one direction only, shard
//! mutex → page-hint mutex; all the others are taken alone. `flush_all` and `discard_space`
//! wait for latches, so call them holding no guards.

mod cleaner;
mod frame;
mod mem_io;
mod pool;
mod replacer;
mod stats;
mod table;
mod writeback;

#[cfg(test)]
mod tests;

pub(crate) use frame::Keeper;
pub use frame::{PageMut, PageRef};
pub use mem_io::MemPageIo;
pub use pool::{BufferPool, MIN_FRAMES};
pub use stats::BufferStats;

use crate::error::Result;
use crate::page::PageId;

/// How the pool reaches disk. Implemented by the tablespace layer, which runs the page
/// codec (decrypt on read, encrypt on write). The pool never sees keys; the stored bytes it
/// carries from `encode_page` to `write_stored` are opaque to it.
pub trait PageIo: Send + Sync + 'static {
    /// Reads page `id` and decodes it into `frame` (page_size bytes of plaintext).
    fn read_page(&self, id: PageId, frame: &mut [u8]) -> Result<()>;
    /// The stored bytes of `frame` as page `id` (checksummed; for an encrypted space,
    /// encrypted). Returns only once those bytes may reach a file: the WAL rule (rule 8)
    /// is enforced here.
    fn encode_page(&self, id: PageId, frame: &[u8]) -> Result<Vec<u8>>;
    /// Writes `stored`, bytes from `encode_page`, as page `id` (not yet durable).
    fn write_stored(&self, id: PageId, stored: &[u8]) -> Result<()>;
    /// Encodes `frame` and writes it as page `id` (not yet durable).
    fn write_page(&self, id: PageId, frame: &[u8]) -> Result<()> {
        let stored = self.encode_page(id, frame)?;
        self.write_stored(id, &stored)
    }
    /// Makes every page of space `space_id` written so far durable.
    fn sync_space(&self, space_id: u32) -> Result<()>;
    /// Makes all pages written so far durable.
    fn sync(&self) -> Result<()>;
}
