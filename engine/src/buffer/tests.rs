//! Tests of the whole pool through its public API, against [`MemPageIo`] and a gated
//! variant that can hold one read or write until the test lets it go; and of the write
//! path with a doublewrite attached, against real tablespaces on a [`SimVfs`], including a
//! crash sweep.

use super::mem_io::SCRIBBLE;
use super::replacer::{ClockReplacer, Replacer};
use super::*;
use crate::doublewrite::{self, Doublewrite};
use crate::error::Error;
use crate::io::{Damage, MemVfs, PendingOp, SimVfs, Vfs};
use crate::page::{self, PageSize, PageType};
use crate::space::{NewSpace, SpaceEncryption, SpaceFile, SpaceKind, SpaceSet};
use crossbeam::channel::{self, Receiver, Sender};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use strongbox_keyring::provider::MemoryKeyProvider;
use strongbox_keyring::Algorithm;

const PAGE: usize = 256;

fn id(space_id: u32, page_no: u32) -> PageId {
    PageId { space_id, page_no }
}

fn pool(frames: usize, io: Arc<dyn PageIo>) -> Arc<BufferPool> {
    BufferPool::new(frames * PAGE, PAGE, io).unwrap()
}

/// Page contents that name the page: its number, then a fill byte derived from it.
fn contents(page_no: u32) -> Vec<u8> {
    let mut page = vec![(page_no % 251) as u8; PAGE];
    page[..8].copy_from_slice(&u64::from(page_no).to_le_bytes());
    page
}

/// Stores pages `0..n` of space 1 directly in `io`.
fn store(io: &dyn PageIo, n: u32) {
    for page_no in 0..n {
        io.write_page(id(1, page_no), &contents(page_no)).unwrap();
    }
}

/// Polls `cond` until it holds; fails after a generous timeout instead of hanging.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn fewer_than_16_frames_is_refused() {
    let err = BufferPool::new(15 * PAGE, PAGE, Arc::new(MemPageIo::new())).unwrap_err();
    match err {
        Error::InvalidOption { name, problem } => {
            assert_eq!(name, "buffer_pool_size");
            assert!(problem.contains("minimum is 16 pages"), "{problem}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(BufferPool::new(16 * PAGE, PAGE, Arc::new(MemPageIo::new())).is_ok());
}

#[test]
fn read_after_write_through_eviction() {
    let io = Arc::new(MemPageIo::new());
    let pool = pool(16, io.clone());
    for page_no in 0..1000 {
        let mut page = pool.create(id(1, page_no)).unwrap();
        assert!(page.iter().all(|&b| b == 0));
        page.copy_from_slice(&contents(page_no));
    }
    for page_no in 0..1000 {
        let page = pool.read(id(1, page_no)).unwrap();
        assert_eq!(page.id(), id(1, page_no));
        assert!(
            *page == contents(page_no)[..],
            "page {page_no} came back wrong"
        );
    }
    pool.flush_all().unwrap();

    let stats = pool.stats();
    assert_eq!(stats.frames, 16);
    assert_eq!(stats.hits + stats.misses, 1000, "{stats:?}");
    assert!(stats.misses > 900, "{stats:?}");
    assert_eq!(stats.pages_read, stats.misses);
    assert_eq!(io.reads(), stats.pages_read);
    // Every load beyond the first 16 (1000 creates, then the misses) evicted a page.
    assert_eq!(stats.evictions, 1000 + stats.misses - 16, "{stats:?}");
    // Each page was dirty once and written once; reading never dirties.
    assert_eq!(stats.pages_written, 1000);
    assert_eq!(io.writes(), 1000);
    assert_eq!(stats.dirty_pages, 0);
    assert_eq!(io.syncs(), 1);
    for page_no in 0..1000 {
        assert_eq!(io.page(id(1, page_no)).unwrap(), contents(page_no));
    }
}

#[test]
fn hits_do_not_call_io() {
    let io = Arc::new(MemPageIo::new());
    store(&*io, 1);
    let pool = pool(16, io.clone());
    for _ in 0..100 {
        assert_eq!(pool.read(id(1, 0)).unwrap()[..], contents(0)[..]);
    }
    for _ in 0..10 {
        pool.write(id(1, 0)).unwrap()[100] = 1;
    }
    assert_eq!(io.reads(), 1);
    let stats = pool.stats();
    assert_eq!((stats.hits, stats.misses, stats.pages_read), (109, 1, 1));
    assert_eq!(stats.dirty_pages, 1);
}

#[test]
fn create_zeroes_a_cached_page_and_dirties_it() {
    let io = Arc::new(MemPageIo::new());
    store(&*io, 1);
    let pool = pool(16, io.clone());
    drop(pool.read(id(1, 0)).unwrap());
    assert!(pool.create(id(1, 0)).unwrap().iter().all(|&b| b == 0));
    assert_eq!(pool.stats().dirty_pages, 1);
    pool.flush_all().unwrap();
    assert!(io.page(id(1, 0)).unwrap().iter().all(|&b| b == 0));
}

/// A small deterministic generator, so the concurrent test needs no extra crate.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Every 8-byte word of a page holds the same counter, so a torn frame shows.
fn counter(page: &[u8]) -> u64 {
    let words: Vec<u64> = page
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .collect();
    assert!(words.iter().all(|&w| w == words[0]), "torn page: {words:?}");
    words[0]
}

fn increment(page: &mut [u8]) {
    let next = counter(page) + 1;
    for word in page.chunks_exact_mut(8) {
        word.copy_from_slice(&next.to_le_bytes());
    }
}

#[test]
fn concurrent_increments_are_never_lost() {
    const PAGES: u32 = 200;
    const THREADS: u64 = 8;
    const OPS: u64 = 3000;
    let io = Arc::new(MemPageIo::new());
    let pool = pool(32, io.clone());
    for page_no in 0..PAGES {
        drop(pool.create(id(1, page_no)).unwrap());
    }
    pool.start_cleaner().unwrap();

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let pool = Arc::clone(&pool);
            thread::spawn(move || {
                let mut rng = XorShift(0x9E37_79B9 + t * 7919);
                let mut increments = 0u64;
                for _ in 0..OPS {
                    let a = rng.below(u64::from(PAGES)) as u32;
                    match rng.below(4) {
                        0 => {
                            counter(&pool.read(id(1, a)).unwrap());
                        }
                        1 => {
                            increment(&mut pool.write(id(1, a)).unwrap());
                            increments += 1;
                        }
                        _ => {
                            // Two guards at once, taken in page order as the B+tree does.
                            let b = rng.below(u64::from(PAGES)) as u32;
                            let (low, high) = (a.min(b), a.max(b));
                            if low == high {
                                continue;
                            }
                            let parent = pool.read(id(1, low)).unwrap();
                            let mut child = pool.write(id(1, high)).unwrap();
                            counter(&parent);
                            increment(&mut child);
                            increments += 1;
                        }
                    }
                }
                increments
            })
        })
        .collect();
    let increments: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();

    pool.flush_all().unwrap();
    pool.shutdown().unwrap();
    let in_pool: u64 = (0..PAGES)
        .map(|p| counter(&pool.read(id(1, p)).unwrap()))
        .sum();
    let on_disk: u64 = (0..PAGES)
        .map(|p| counter(&io.page(id(1, p)).unwrap()))
        .sum();
    assert_eq!(in_pool, increments);
    assert_eq!(on_disk, increments);
    assert!(pool.stats().evictions > 0);
}

/// Which `PageIo` call a gate holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Sync,
}

/// A one-shot gate: the next `op` on `page` tells `entered`, then waits on `release`
/// for whether to fail.
struct Gate {
    op: Op,
    page: PageId,
    entered: Sender<()>,
    release: Receiver<bool>,
}

/// [`MemPageIo`] that can hold one call at a gate and logs every finished call.
struct GatedIo {
    inner: MemPageIo,
    /// Guards the armed gate, if any.
    gate: Mutex<Option<Gate>>,
    /// Guards the calls finished so far, in order.
    log: Mutex<Vec<(Op, Option<PageId>)>>,
}

impl GatedIo {
    fn new() -> Arc<GatedIo> {
        Arc::new(GatedIo {
            inner: MemPageIo::new(),
            gate: Mutex::new(None),
            log: Mutex::new(Vec::new()),
        })
    }

    /// Arms the gate; returns (entered, release).
    fn arm(&self, op: Op, page: PageId) -> (Receiver<()>, Sender<bool>) {
        let (entered_tx, entered) = channel::unbounded();
        let (release, release_rx) = channel::unbounded();
        *self.gate.lock() = Some(Gate {
            op,
            page,
            entered: entered_tx,
            release: release_rx,
        });
        (entered, release)
    }

    /// Holds the call if the gate is armed for it; true if the call must fail.
    fn pass(&self, op: Op, page: PageId) -> bool {
        let gate = {
            let mut armed = self.gate.lock();
            match &*armed {
                Some(gate) if gate.op == op && gate.page == page => armed.take(),
                _ => None,
            }
        };
        match gate {
            Some(gate) => {
                gate.entered.send(()).unwrap();
                gate.release.recv().unwrap()
            }
            None => false,
        }
    }

    fn injected(op: &'static str) -> Error {
        Error::Io {
            op,
            path: "<gated>".into(),
            source: std::io::Error::other("injected failure at the gate"),
        }
    }
}

impl PageIo for GatedIo {
    fn read_page(&self, page: PageId, frame: &mut [u8]) -> crate::error::Result<()> {
        if self.pass(Op::Read, page) {
            frame.fill(SCRIBBLE);
            return Err(Self::injected("read page"));
        }
        self.inner.read_page(page, frame)?;
        self.log.lock().push((Op::Read, Some(page)));
        Ok(())
    }

    fn encode_page(&self, page: PageId, frame: &[u8]) -> crate::error::Result<Vec<u8>> {
        self.inner.encode_page(page, frame)
    }

    fn write_stored(&self, page: PageId, stored: &[u8]) -> crate::error::Result<()> {
        if self.pass(Op::Write, page) {
            return Err(Self::injected("write page"));
        }
        self.inner.write_stored(page, stored)?;
        self.log.lock().push((Op::Write, Some(page)));
        Ok(())
    }

    fn sync_space(&self, space_id: u32) -> crate::error::Result<()> {
        self.inner.sync_space(space_id)?;
        self.log.lock().push((Op::Sync, None));
        Ok(())
    }

    fn sync(&self) -> crate::error::Result<()> {
        self.inner.sync()?;
        self.log.lock().push((Op::Sync, None));
        Ok(())
    }
}

#[test]
fn two_misses_on_one_page_read_it_once() {
    let io = GatedIo::new();
    store(&io.inner, 1);
    let pool = pool(16, io.clone());
    let (entered, release) = io.arm(Op::Read, id(1, 0));

    let first = {
        let pool = Arc::clone(&pool);
        thread::spawn(move || pool.read(id(1, 0)).map(|page| page.to_vec()))
    };
    entered.recv().unwrap(); // the first reader is inside read_page
    let second = {
        let pool = Arc::clone(&pool);
        thread::spawn(move || pool.read(id(1, 0)).map(|page| page.to_vec()))
    };
    // The second finds the page published and waits on its latch (counted as a hit).
    wait_until("the second reader finds the page", || {
        pool.stats().hits == 1
    });
    release.send(false).unwrap();

    assert_eq!(first.join().unwrap().unwrap(), contents(0));
    assert_eq!(second.join().unwrap().unwrap(), contents(0));
    assert_eq!(io.inner.reads(), 1);
}

#[test]
fn a_waiter_never_sees_a_failed_load() {
    let io = GatedIo::new();
    store(&io.inner, 1);
    let pool = pool(16, io.clone());
    let (entered, release) = io.arm(Op::Read, id(1, 0));

    let loader = {
        let pool = Arc::clone(&pool);
        thread::spawn(move || pool.read(id(1, 0)).map(|page| page.to_vec()))
    };
    entered.recv().unwrap();
    let waiter = {
        let pool = Arc::clone(&pool);
        thread::spawn(move || pool.read(id(1, 0)).map(|page| page.to_vec()))
    };
    wait_until("the waiter finds the page", || pool.stats().hits == 1);
    release.send(true).unwrap(); // the loader's read fails, after scribbling on the frame

    assert!(matches!(loader.join().unwrap(), Err(Error::Io { .. })));
    // The waiter started over and read the page itself.
    assert_eq!(waiter.join().unwrap().unwrap(), contents(0));
    assert_eq!(io.inner.reads(), 1); // the gated read never reached `inner`
}

#[test]
fn a_failed_read_leaves_no_trace() {
    let io = Arc::new(MemPageIo::new());
    store(&*io, 17);
    let pool = pool(16, io.clone());
    io.fail_reads(true);
    assert!(matches!(pool.read(id(1, 16)), Err(Error::Io { .. })));
    assert!(matches!(pool.write(id(1, 16)), Err(Error::Io { .. })));
    io.fail_reads(false);

    let page = pool.read(id(1, 16)).unwrap();
    assert!(*page == contents(16)[..]);
    assert_eq!(io.reads(), 3, "the failed page must not have been cached");
    drop(page);
    // The failed loads gave their frame back: 15 more pages fit without evicting.
    for page_no in 0..15 {
        drop(pool.read(id(1, page_no)).unwrap());
    }
    let stats = pool.stats();
    assert_eq!(stats.evictions, 0, "{stats:?}");
    assert_eq!((stats.misses, stats.pages_read), (18, 16));
    assert_eq!(stats.dirty_pages, 0);
}

#[test]
fn all_frames_pinned_is_an_error_not_a_hang() {
    let io = Arc::new(MemPageIo::new());
    store(&*io, 17);
    let pool = pool(16, io.clone());
    let mut held: Vec<PageRef> = (0..16).map(|p| pool.read(id(1, p)).unwrap()).collect();
    match pool.read(id(1, 16)) {
        Err(Error::BufferPoolExhausted { frames }) => assert_eq!(frames, 16),
        other => panic!("expected exhaustion, got {other:?}"),
    }
    held.pop();
    assert!(*pool.read(id(1, 16)).unwrap() == contents(16)[..]);
}

#[test]
fn a_failed_eviction_write_poisons_the_pool() {
    let io = Arc::new(MemPageIo::new());
    let pool = pool(16, io.clone());
    for page_no in 0..16 {
        drop(pool.create(id(1, page_no)).unwrap());
    }
    io.fail_writes(true);
    assert!(matches!(pool.create(id(1, 16)), Err(Error::Io { .. })));
    assert_eq!(pool.stats().dirty_pages, 16, "the victim must stay dirty");
    io.fail_writes(false);
    for result in [pool.read(id(1, 0)).err(), pool.flush_all().err()] {
        match result {
            Some(Error::Poisoned(why)) => assert!(why.contains("injected failure"), "{why}"),
            other => panic!("expected Poisoned, got {other:?}"),
        }
    }
}

#[test]
fn the_cleaner_writes_dirty_pages() {
    let io = Arc::new(MemPageIo::new());
    let pool = pool(32, io.clone());
    pool.start_cleaner().unwrap();
    for page_no in 0..20 {
        pool.create(id(1, page_no))
            .unwrap()
            .copy_from_slice(&contents(page_no));
    }
    wait_until("the cleaner has written every page", || {
        pool.stats().dirty_pages == 0
    });
    for page_no in 0..20 {
        assert_eq!(io.page(id(1, page_no)).unwrap(), contents(page_no));
    }
    let stats = pool.stats();
    assert_eq!((stats.cleaner_flushes, stats.pages_written), (20, 20));
    pool.shutdown().unwrap();
}

#[test]
fn a_cleaner_write_failure_poisons_the_pool() {
    let io = Arc::new(MemPageIo::new());
    let pool = pool(32, io.clone());
    io.fail_writes(true);
    pool.start_cleaner().unwrap();
    drop(pool.create(id(1, 0)).unwrap());
    wait_until("the pool is poisoned", || {
        matches!(pool.read(id(1, 0)), Err(Error::Poisoned(_)))
    });
    io.fail_writes(false);
    assert!(matches!(pool.write(id(1, 0)), Err(Error::Poisoned(_))));
    assert!(matches!(pool.create(id(1, 1)), Err(Error::Poisoned(_))));
    assert!(matches!(pool.flush_all(), Err(Error::Poisoned(_))));
    match pool.shutdown() {
        Err(Error::Poisoned(why)) => assert!(why.contains("injected failure"), "{why}"),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert_eq!(
        pool.stats().dirty_pages,
        1,
        "the page stays dirty in memory"
    );
}

#[test]
fn shutdown_and_drop_join_the_cleaner() {
    let pool = pool(16, Arc::new(MemPageIo::new()));
    pool.start_cleaner().unwrap();
    pool.start_cleaner().unwrap(); // a second start is a no-op
    assert_eq!(Arc::strong_count(pool.core()), 2);
    pool.shutdown().unwrap();
    // The thread has exited and dropped its share of the core.
    assert_eq!(Arc::strong_count(pool.core()), 1);

    pool.start_cleaner().unwrap();
    let core = Arc::downgrade(pool.core());
    drop(pool);
    assert!(
        core.upgrade().is_none(),
        "drop returned before the cleaner exited"
    );
}

#[test]
fn flush_all_waits_for_a_write_in_flight() {
    let io = GatedIo::new();
    let pool = pool(16, io.clone());
    drop(pool.create(id(1, 0)).unwrap());
    let (entered, release) = io.arm(Op::Write, id(1, 0));
    pool.start_cleaner().unwrap();
    entered.recv().unwrap(); // the cleaner has cleared the dirty flag and is writing

    let checkpoint = {
        let pool = Arc::clone(&pool);
        thread::spawn(move || pool.flush_all())
    };
    // Not a timing assertion: this only gives a flush_all that skipped the page time to
    // reach its sync before the write completes, so the log below would show it.
    thread::sleep(Duration::from_millis(100));
    release.send(false).unwrap();
    checkpoint.join().unwrap().unwrap();
    assert_eq!(
        *io.log.lock(),
        [(Op::Write, Some(id(1, 0))), (Op::Sync, None)],
        "the sync must come after the write that was in flight"
    );
    pool.shutdown().unwrap();
}

#[test]
fn discard_space_forgets_pages_without_writing_them() {
    let io = Arc::new(MemPageIo::new());
    let pool = pool(16, io.clone());
    for page_no in 0..5 {
        drop(pool.create(id(1, page_no)).unwrap());
        drop(pool.create(id(2, page_no)).unwrap());
    }
    pool.discard_space(1);
    assert_eq!(pool.stats().dirty_pages, 5);
    pool.flush_all().unwrap();
    assert_eq!(io.writes(), 5);
    assert!((0..5).all(|p| io.page(id(2, p)).is_some() && io.page(id(1, p)).is_none()));
    // The five frames are free again: eleven more pages fit without evicting.
    for page_no in 0..11 {
        drop(pool.create(id(3, page_no)).unwrap());
    }
    assert_eq!(pool.stats().evictions, 0);
    // And the discarded pages are gone: reading one goes to disk (where it never was).
    assert!(matches!(pool.read(id(1, 0)), Err(Error::Io { .. })));
}

/// CLOCK with its usage counters ignored: evicts in load order, like FIFO.
struct NoHistory(ClockReplacer);

impl Replacer for NoHistory {
    fn record_load(&self, frame: usize) {
        self.0.record_load(frame);
    }
    fn record_hit(&self, _frame: usize) {}
    fn remove(&self, frame: usize) {
        self.0.remove(frame);
    }
    fn victim(&self, evictable: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.0.victim(evictable)
    }
}

/// A hot set of 8 pages, each touched 3 times per round, between slices of a scan over
/// 10× the pool (64 frames). Each slice is longer than the pool, so plain LRU or FIFO
/// would lose the hot set every round. Returns the hit ratio of the hot set's first touch
/// in each round.
fn hot_set_hit_ratio(replacer: impl FnOnce(usize) -> Box<dyn Replacer>) -> f64 {
    const FRAMES: usize = 64;
    const HOT: u32 = 8;
    const SCAN: u32 = 10 * FRAMES as u32;
    const SLICE: u32 = 100;
    let io = Arc::new(MemPageIo::new());
    store(&*io, HOT + SCAN);
    let pool = BufferPool::with_replacer(FRAMES * PAGE, PAGE, io, replacer).unwrap();
    let touch = |page_no: u32| drop(pool.read(id(1, page_no)).unwrap());
    for _ in 0..4 {
        (0..HOT).for_each(touch);
    }
    let (mut first_touches, mut first_hits) = (0, 0);
    for slice in 0..SCAN.div_ceil(SLICE) {
        for hot in 0..HOT {
            let before = pool.stats().hits;
            touch(hot);
            first_hits += pool.stats().hits - before;
            first_touches += 1;
            touch(hot);
            touch(hot);
        }
        let start = HOT + slice * SLICE;
        (start..(start + SLICE).min(HOT + SCAN)).for_each(touch);
    }
    first_hits as f64 / first_touches as f64
}

#[test]
fn a_hot_set_survives_a_scan_of_ten_times_the_pool() {
    let clock = hot_set_hit_ratio(|frames| Box::new(ClockReplacer::new(frames)));
    assert!(clock >= 0.9, "hot-set hit ratio {clock}");
    // The same workload without usage counters loses the hot set: the test can fail.
    let fifo = hot_set_hit_ratio(|frames| Box::new(NoHistory(ClockReplacer::new(frames))));
    assert!(fifo < 0.5, "hot-set hit ratio without history {fifo}");
}

// The write path with a doublewrite attached. These tests run the real tablespace code
// (`SpaceSet`, `SpaceFile`, the page codec) on a `SimVfs`, which tells durable bytes from
// bytes still in the page cache.

/// Page size of the doublewrite tests: the smallest the codec accepts.
const DW_PAGE: usize = 4096;
/// Frames of their pools: the minimum, so that a few dozen pages force evictions.
const DW_FRAMES: usize = MIN_FRAMES;
const SPACE: u32 = 7;
const SPACE_PATH: &str = "/db/space-7.sbd";
/// What every frame's body repeats: found in a file only if a plaintext page reached it.
const MARKER: &[u8] = b"PLAINTEXT-MARKER";

fn dir() -> &'static Path {
    Path::new("/db")
}

fn ps() -> PageSize {
    PageSize::try_from(DW_PAGE as u32).unwrap()
}

/// Page `n` of the test space.
fn pid(n: u32) -> PageId {
    id(SPACE, n)
}

/// A frame of `page` at `version`: an overflow page whose body repeats [`MARKER`], with the
/// version in its first body byte.
fn frame(page: PageId, version: u8) -> Vec<u8> {
    let mut frame = vec![0u8; DW_PAGE];
    page::init_frame(&mut frame, PageType::Overflow, page, 0);
    let body = &mut frame[page::BODY_START..page::body_end(DW_PAGE)];
    for chunk in body.chunks_mut(MARKER.len()) {
        chunk.copy_from_slice(&MARKER[..chunk.len()]);
    }
    body[0] = version;
    frame
}

fn version_of(frame: &[u8]) -> u8 {
    frame[page::BODY_START]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A data directory on a [`SimVfs`]: one space whose pages `1..=pages` hold version 0,
/// durable, and a new doublewrite file.
struct Disk {
    vfs: SimVfs,
    keys: MemoryKeyProvider,
    spaces: Arc<SpaceSet>,
    dw: Arc<Doublewrite>,
    encrypted: bool,
}

impl Disk {
    fn new(pages: u32, slots: u32, encrypted: bool) -> Disk {
        let vfs = SimVfs::new();
        let keys = MemoryKeyProvider::new();
        keys.add_random(1, 1, 256).unwrap();
        let spec = NewSpace {
            id: SPACE,
            kind: SpaceKind::Table,
            page_size: ps(),
            encryption: encrypted.then_some(SpaceEncryption {
                key_id: 1,
                algorithm: Algorithm::AesCtr,
            }),
        };
        let path = Path::new(SPACE_PATH);
        let space = SpaceFile::create(&vfs, path, spec, Some(&keys), Default::default()).unwrap();
        space.update_header(|header| header.page_count = pages + 1);
        for n in 1..=pages {
            space.write_page(n, &frame(pid(n), 0)).unwrap();
        }
        let spaces = Arc::new(SpaceSet::new());
        spaces.insert(Arc::new(space));
        spaces.persist_headers().unwrap();
        spaces.sync().unwrap();
        vfs.sync_dir(dir()).unwrap();
        let dw = Doublewrite::open_or_create(&vfs, dir(), ps(), slots).unwrap();
        Disk {
            vfs,
            keys,
            spaces,
            dw: Arc::new(dw),
            encrypted,
        }
    }

    /// A pool over `io`, with this disk's doublewrite attached if `doublewrite`.
    fn pool(&self, io: Arc<dyn PageIo>, doublewrite: bool) -> Arc<BufferPool> {
        let pool = BufferPool::new(DW_FRAMES * DW_PAGE, DW_PAGE, io).unwrap();
        if doublewrite {
            pool.attach_doublewrite(Arc::clone(&self.dw)).unwrap();
        }
        pool
    }

    /// Page `n` as the space file holds it, decoded.
    fn read(spaces: &SpaceSet, n: u32) -> crate::error::Result<Vec<u8>> {
        let mut frame = vec![0u8; DW_PAGE];
        spaces.read_page(pid(n), &mut frame)?;
        Ok(frame)
    }

    fn file(&self, path: &Path) -> Vec<u8> {
        self.vfs.contents(path).unwrap()
    }
}

/// One call the pool made to [`Checked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Encode(PageId),
    Home(PageId),
    SyncSpace(u32),
    SyncAll,
}

/// The real tablespace IO of a [`Disk`], logging every write-side call and checking the
/// doublewrite order from the pool's side. Broken rules are collected rather than panicked
/// on, because the page cleaner's thread makes some of the calls.
struct Checked {
    spaces: Arc<SpaceSet>,
    vfs: SimVfs,
    dw_path: PathBuf,
    encrypted: bool,
    /// Guards the calls so far, in order.
    calls: Mutex<Vec<Call>>,
    /// Guards the rules seen broken.
    broken: Mutex<Vec<String>>,
    /// Makes every `write_stored` fail.
    fail_home: AtomicBool,
}

impl Checked {
    fn new(disk: &Disk) -> Arc<Checked> {
        Arc::new(Checked {
            spaces: Arc::clone(&disk.spaces),
            vfs: disk.vfs.clone(),
            dw_path: disk.dw.path().to_path_buf(),
            encrypted: disk.encrypted,
            calls: Mutex::new(Vec::new()),
            broken: Mutex::new(Vec::new()),
            fail_home: AtomicBool::new(false),
        })
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }

    fn broken(&self) -> Vec<String> {
        self.broken.lock().clone()
    }

    fn home_writes(&self) -> usize {
        self.calls()
            .iter()
            .filter(|call| matches!(call, Call::Home(_)))
            .count()
    }

    fn home_write_pending(&self) -> bool {
        self.vfs
            .pending_ops()
            .iter()
            .any(|op| matches!(op, PendingOp::Write { path, .. } if path == Path::new(SPACE_PATH)))
    }
}

impl PageIo for Checked {
    fn read_page(&self, id: PageId, frame: &mut [u8]) -> crate::error::Result<()> {
        self.spaces.read_page(id, frame)
    }

    fn encode_page(&self, id: PageId, frame: &[u8]) -> crate::error::Result<Vec<u8>> {
        // The batch this page joins will overwrite the slots (R2).
        if self.home_write_pending() {
            self.broken.lock().push(format!(
                "{id} encoded for a new batch while an earlier home write is not durable"
            ));
        }
        let stored = self.spaces.encode_page(id, frame)?;
        self.calls.lock().push(Call::Encode(id));
        Ok(stored)
    }

    fn write_stored(&self, id: PageId, stored: &[u8]) -> crate::error::Result<()> {
        let slots = self.vfs.durable_contents(&self.dw_path).unwrap_or_default();
        if !contains(&slots, stored) {
            self.broken.lock().push(format!(
                "{id} written home before a durable slot held its image (R1)"
            ));
        }
        if self.encrypted && contains(stored, MARKER) {
            self.broken
                .lock()
                .push(format!("{id}: plaintext in the stored image"));
        }
        if self.fail_home.load(SeqCst) {
            return Err(GatedIo::injected("write page"));
        }
        self.spaces.write_stored(id, stored)?;
        self.calls.lock().push(Call::Home(id));
        Ok(())
    }

    fn sync_space(&self, space_id: u32) -> crate::error::Result<()> {
        self.spaces.sync_space(space_id)?;
        self.calls.lock().push(Call::SyncSpace(space_id));
        Ok(())
    }

    fn sync(&self) -> crate::error::Result<()> {
        self.spaces.sync()?;
        self.calls.lock().push(Call::SyncAll);
        Ok(())
    }
}

/// The sizes of the batches in `calls`, which must be a run of batches, each "encode n
/// pages, write the same n pages home, sync their space", optionally ended by one
/// `SyncAll` (`flush_all`).
fn batches(calls: &[Call]) -> Vec<usize> {
    let calls = calls.strip_suffix(&[Call::SyncAll]).unwrap_or(calls);
    let mut sizes = Vec::new();
    for batch in calls.split_inclusive(|call| *call == Call::SyncSpace(SPACE)) {
        let n = batch.len() / 2;
        assert_eq!(batch.len(), 2 * n + 1, "not a batch: {batch:?}");
        assert_eq!(
            batch[2 * n],
            Call::SyncSpace(SPACE),
            "not a batch: {batch:?}"
        );
        let homes: Vec<_> = batch[..n]
            .iter()
            .map(|call| match call {
                Call::Encode(page) => Call::Home(*page),
                other => panic!("{other:?} where an encode was expected in {batch:?}"),
            })
            .collect();
        assert_eq!(batch[n..2 * n], homes[..], "not a batch: {batch:?}");
        sizes.push(n);
    }
    sizes
}

#[test]
fn flush_all_writes_batches_to_the_slots_before_home_and_never_plaintext() {
    // 10 pages through 4 slots: more pages than one batch holds.
    for encrypted in [true, false] {
        let disk = Disk::new(10, 4, encrypted);
        let io = Checked::new(&disk);
        let pool = disk.pool(io.clone(), true);
        for n in 1..=10 {
            pool.write(pid(n))
                .unwrap()
                .copy_from_slice(&frame(pid(n), 1));
        }
        pool.flush_all().unwrap();

        assert_eq!(io.broken(), Vec::<String>::new());
        assert_eq!(batches(&io.calls()), [4, 4, 2]);
        assert_eq!(io.calls().last(), Some(&Call::SyncAll));
        let stats = pool.stats();
        assert_eq!((stats.pages_written, stats.dirty_pages), (10, 0));
        for n in 1..=10 {
            assert_eq!(version_of(&Disk::read(&disk.spaces, n).unwrap()), 1);
        }
        // Unencrypted is the control: the marker shows, so the scan can find it.
        let slots = disk.file(disk.dw.path());
        assert_eq!(
            contains(&slots, MARKER),
            !encrypted,
            "encrypted: {encrypted}"
        );
        assert_eq!(
            contains(&disk.file(Path::new(SPACE_PATH)), MARKER),
            !encrypted
        );
    }
}

/// The control for the checks of [`Checked`]: without a doublewrite they do fire.
#[test]
fn without_a_doublewrite_pages_go_home_one_by_one_with_no_slot_copy() {
    let disk = Disk::new(3, 4, true);
    let io = Checked::new(&disk);
    let pool = disk.pool(io.clone(), false);
    for n in 1..=3 {
        pool.write(pid(n))
            .unwrap()
            .copy_from_slice(&frame(pid(n), 1));
    }
    pool.flush_all().unwrap();
    let calls = io.calls();
    assert_eq!(calls.len(), 7, "{calls:?}");
    assert!(
        calls[..6]
            .chunks(2)
            .all(|pair| matches!(pair, [Call::Encode(a), Call::Home(b)] if a == b)),
        "{calls:?}"
    );
    assert_eq!(calls[6], Call::SyncAll, "no sync per write");
    let broken = io.broken();
    assert_eq!(
        broken.iter().filter(|b| b.contains("(R1)")).count(),
        3,
        "{broken:?}"
    );
    assert!(
        broken.iter().any(|b| b.contains("not durable")),
        "{broken:?}"
    );
}

#[test]
fn the_cleaner_writes_through_the_doublewrite() {
    let disk = Disk::new(12, 4, true);
    let io = Checked::new(&disk);
    let pool = disk.pool(io.clone(), true);
    pool.start_cleaner().unwrap();
    for n in 1..=12 {
        pool.write(pid(n))
            .unwrap()
            .copy_from_slice(&frame(pid(n), 1));
    }
    wait_until("the cleaner has written every page", || {
        pool.stats().dirty_pages == 0
    });
    pool.shutdown().unwrap();

    assert_eq!(io.broken(), Vec::<String>::new());
    let sizes = batches(&io.calls());
    assert!(sizes.iter().all(|&n| (1..=4).contains(&n)), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 12);
    assert_eq!(pool.stats().cleaner_flushes, 12);
    for n in 1..=12 {
        assert_eq!(version_of(&Disk::read(&disk.spaces, n).unwrap()), 1);
    }
    assert!(!contains(&disk.file(disk.dw.path()), MARKER));
}

#[test]
fn a_dirty_victim_goes_through_the_doublewrite_as_a_batch_of_one() {
    let disk = Disk::new(24, 4, true);
    let io = Checked::new(&disk);
    let pool = disk.pool(io.clone(), true);
    for n in 1..=24 {
        pool.write(pid(n))
            .unwrap()
            .copy_from_slice(&frame(pid(n), 1));
    }
    // Every frame was dirty, so each of the 8 pages that did not fit evicted a dirty one.
    assert_eq!(pool.stats().evictions, 8);
    assert_eq!(batches(&io.calls()), [1; 8]);
    pool.flush_all().unwrap();
    assert_eq!(batches(&io.calls()), [1, 1, 1, 1, 1, 1, 1, 1, 4, 4, 4, 4]);
    assert_eq!(io.broken(), Vec::<String>::new());
    for n in 1..=24 {
        assert_eq!(version_of(&Disk::read(&disk.spaces, n).unwrap()), 1);
    }
}

#[test]
fn a_failed_home_write_poisons_the_pool_and_leaves_the_pages_dirty() {
    let disk = Disk::new(6, 4, true);
    let io = Checked::new(&disk);
    let pool = disk.pool(io.clone(), true);
    for n in 1..=6 {
        pool.write(pid(n))
            .unwrap()
            .copy_from_slice(&frame(pid(n), 1));
    }
    io.fail_home.store(true, SeqCst);
    assert!(matches!(pool.flush_all(), Err(Error::Io { .. })));
    assert_eq!(pool.stats().dirty_pages, 6, "every page must stay dirty");
    assert_eq!(io.home_writes(), 0);
    io.fail_home.store(false, SeqCst);
    match pool.read(pid(1)) {
        Err(Error::Poisoned(why)) => assert!(why.contains("injected failure"), "{why}"),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    // The slots keep the only sure copies until recovery: the doublewrite refuses reuse.
    let refused = disk.dw.write_batch(&[], &mut |_| Ok(()));
    assert!(matches!(refused, Err(Error::Poisoned(_))), "{refused:?}");
    for n in 1..=6 {
        assert_eq!(version_of(&Disk::read(&disk.spaces, n).unwrap()), 0);
    }
}

#[test]
fn attaching_a_doublewrite_of_another_page_size_is_refused() {
    let disk = Disk::new(1, 4, false);
    let pool = BufferPool::new(DW_FRAMES * 8192, 8192, disk.spaces.clone()).unwrap();
    let refused = pool.attach_doublewrite(Arc::clone(&disk.dw));
    assert!(
        matches!(refused, Err(Error::InvalidOption { .. })),
        "{refused:?}"
    );
}

/// [`frame`] as a plain stored page: what [`MemPageIo`], which has no codec, must be given
/// for the doublewrite to accept its "encoding" (a copy).
fn stored(page: PageId, version: u8) -> Vec<u8> {
    let mut stored = vec![0u8; DW_PAGE];
    page::encode(&frame(page, version), page::Seal::Plain, &mut stored).unwrap();
    stored
}

/// A [`GatedIo`] pool with a doublewrite of `slots` slots (on a `MemVfs`) and pages
/// `1..=dirty` of the test space dirty at version 1.
fn gated_pool(slots: u32, dirty: u32) -> (Arc<GatedIo>, Arc<BufferPool>) {
    let io = GatedIo::new();
    let dw = Doublewrite::open_or_create(&MemVfs::new(), dir(), ps(), slots).unwrap();
    let pool = BufferPool::new(DW_FRAMES * DW_PAGE, DW_PAGE, io.clone()).unwrap();
    pool.attach_doublewrite(Arc::new(dw)).unwrap();
    for n in 1..=dirty {
        pool.create(pid(n))
            .unwrap()
            .copy_from_slice(&stored(pid(n), 1));
    }
    (io, pool)
}

fn home_writes(io: &GatedIo) -> Vec<PageId> {
    io.log
        .lock()
        .iter()
        .filter_map(|&(op, page)| (op == Op::Write).then_some(page?))
        .collect()
}

#[test]
fn writers_wait_and_readers_go_on_until_the_batch_is_home() {
    let (io, pool) = gated_pool(4, 2);
    let (entered, release) = io.arm(Op::Write, pid(2));
    let flusher = {
        let pool = Arc::clone(&pool);
        thread::spawn(move || pool.flush_all())
    };
    entered.recv().unwrap(); // pages 1 and 2 are in one batch, page 2 on its way home
    assert_eq!(version_of(&pool.read(pid(1)).unwrap()), 1, "readers go on");
    let writer = {
        let pool = Arc::clone(&pool);
        thread::spawn(move || {
            pool.write(pid(1))
                .unwrap()
                .copy_from_slice(&stored(pid(1), 2))
        })
    };
    // Not a timing assertion: a writer that got through would show up here, or in the log.
    thread::sleep(Duration::from_millis(100));
    assert!(
        !writer.is_finished(),
        "a writer changed a page of a batch not yet home"
    );
    release.send(false).unwrap();
    flusher.join().unwrap().unwrap();
    writer.join().unwrap();
    // Two home writes, the batch's sync of the space, `flush_all`'s sync of everything.
    let log = io.log.lock().clone();
    assert_eq!(home_writes(&io).len(), 2, "{log:?}");
    assert_eq!(log[2..], [(Op::Sync, None), (Op::Sync, None)], "{log:?}");
    assert_eq!(version_of(&io.inner.page(pid(1)).unwrap()), 1);
    assert_eq!(
        pool.stats().dirty_pages,
        1,
        "the writer's change is still to be written"
    );
}

#[test]
fn flush_all_never_waits_for_a_latch_while_holding_a_batch() {
    // Learn the order in which a pass visits pages 1..=7 (fixed by the page table's hash).
    let order = {
        let (io, pool) = gated_pool(8, 7);
        pool.flush_all().unwrap();
        home_writes(&io)
    };
    let (first, last) = (order[0], order[6]);
    let (io, pool) = gated_pool(8, 7);
    // This thread, like one inside a mini-transaction, holds the page the pass reaches
    // last, and will then ask for one the pass has already taken.
    let held = pool.write(last).unwrap();
    let flusher = {
        let pool = Arc::clone(&pool);
        thread::spawn(move || pool.flush_all())
    };
    // A pass that waited for `last` holding the other six would never write them.
    wait_until("the other six pages are home", || {
        home_writes(&io).len() == 6
    });
    drop(pool.write(first).unwrap());
    drop(held);
    flusher.join().unwrap().unwrap();
    assert_eq!(home_writes(&io).len(), 7, "and then `last`");
    assert_eq!(
        pool.stats().dirty_pages,
        1,
        "`first`, changed after the pass took it"
    );
}

/// Pages of the crash sweep: more than the frames, so evictions write pages too.
const SWEEP_PAGES: u32 = 20;
const SWEEP_SLOTS: u32 = 4;

/// Writes version 1 of every page (evicting dirty victims on the way) and flushes, then
/// version 2 of half of them and flushes. Stops at the first failure. Returns, per page
/// number, the version a `flush_all` acknowledged as durable.
fn sweep_workload(disk: &Disk, doublewrite: bool) -> Vec<u8> {
    let mut durable = vec![0; SWEEP_PAGES as usize + 1];
    let pool = disk.pool(disk.spaces.clone(), doublewrite);
    for (version, last) in [(1, SWEEP_PAGES), (2, SWEEP_PAGES / 2)] {
        for n in 1..=last {
            let Ok(mut page) = pool.create(pid(n)) else {
                return durable;
            };
            page.copy_from_slice(&frame(pid(n), version));
        }
        if pool.flush_all().is_err() {
            return durable;
        }
        durable[1..=last as usize].fill(version);
    }
    durable
}

/// Crashes the workload after every IO operation with every kind of damage, then reopens
/// the space and (with a doublewrite) repairs torn pages. Every page must then decode, at
/// least at its acknowledged version. Returns how many pages failed to decode.
fn crash_sweep(doublewrite: bool) -> usize {
    let total = {
        let disk = Disk::new(SWEEP_PAGES, SWEEP_SLOTS, true);
        let before = disk.vfs.ops();
        sweep_workload(&disk, doublewrite);
        disk.vfs.ops() - before
    };
    let mut unreadable = 0;
    for k in 0..=total {
        for damage in Damage::variants(k) {
            let disk = Disk::new(SWEEP_PAGES, SWEEP_SLOTS, true);
            disk.vfs.power_fail_after(disk.vfs.ops() + k);
            let durable = sweep_workload(&disk, doublewrite);
            let crashed = disk.vfs.crash(damage);
            let space = SpaceFile::open(
                &crashed,
                Path::new(SPACE_PATH),
                SPACE,
                ps(),
                Some(&disk.keys),
                Default::default(),
            )
            .unwrap();
            let spaces = SpaceSet::new();
            spaces.insert(Arc::new(space));
            if doublewrite {
                let dw = Doublewrite::open_or_create(&crashed, dir(), ps(), SWEEP_SLOTS).unwrap();
                doublewrite::repair_torn_pages(&dw, &spaces).unwrap();
            }
            for n in 1..=SWEEP_PAGES {
                match Disk::read(&spaces, n) {
                    Ok(frame) => assert!(
                        version_of(&frame) >= durable[n as usize],
                        "k {k} {damage:?}: page {n} at version {}, but version {} was durable",
                        version_of(&frame),
                        durable[n as usize]
                    ),
                    Err(err) if doublewrite => panic!("k {k} {damage:?}: page {n}: {err}"),
                    Err(_) => unreadable += 1,
                }
            }
        }
    }
    unreadable
}

#[test]
fn every_crash_while_writing_through_the_doublewrite_leaves_whole_pages() {
    assert_eq!(crash_sweep(true), 0);
}

/// The control: the same crashes without the doublewrite do tear pages, so the sweep
/// exercises torn home writes and the doublewrite is what repairs them.
#[test]
fn without_the_doublewrite_the_same_crashes_tear_pages() {
    assert!(crash_sweep(false) > 0);
}
