use super::*;
use crate::buffer::BufferPool;
use crate::io::{MemVfs, Vfs};
use crate::page::{read_page_lsn, PageHeader, PageId, PageSize, PageType, PAGE_LSN};
use crate::space::{Allocator, NewSpace, SpaceFile, SpaceKind, SpaceSet};
use std::ops::Range;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use strongbox_wal::{LogConfig, LoggedRecord, RecoveryReport};

pub(crate) const PAGE: usize = 4096;
pub(crate) const SPACE_ID: u32 = 1;
const SPACE_PATH: &str = "/db/space-1.sbd";
const LOG_DIR: &str = "/db/redo";
/// How long a test waits for another thread before it declares a deadlock. Only a failing
/// test ever waits this long.
const PATIENCE: Duration = Duration::from_secs(10);

fn log_config() -> LogConfig {
    LogConfig {
        segment_size: 64 << 10,
        encrypt: false,
        ..LogConfig::default()
    }
}

/// One unencrypted space of 4 KiB pages, its pool and allocator, and a plain redo log, all
/// in one in-memory file system that outlives a "crash" (dropping everything else).
pub(crate) struct Fixture {
    pub vfs: MemVfs,
    pub spaces: Arc<SpaceSet>,
    pub pool: Arc<BufferPool>,
    pub alloc: Allocator,
    pub log: Arc<Log>,
}

impl Fixture {
    pub(crate) fn create() -> Fixture {
        let vfs = MemVfs::new();
        let spec = NewSpace {
            id: SPACE_ID,
            kind: SpaceKind::Table,
            page_size: PageSize::try_from(PAGE as u32).unwrap(),
            encryption: None,
        };
        let space =
            SpaceFile::create(&vfs, Path::new(SPACE_PATH), spec, None, Default::default()).unwrap();
        let log = Log::create(shared(&vfs), Path::new(LOG_DIR), log_config(), None).unwrap();
        Fixture::assemble(vfs, space, log)
    }

    /// Opens what a crash left in `vfs`: the space file and the log (recovered, not applied).
    pub(crate) fn recover(vfs: MemVfs) -> (Fixture, RecoveryReport) {
        let page_size = PageSize::try_from(PAGE as u32).unwrap();
        let space = SpaceFile::open(
            &vfs,
            Path::new(SPACE_PATH),
            SPACE_ID,
            page_size,
            None,
            Default::default(),
        )
        .unwrap();
        let (log, report) =
            Log::open(shared(&vfs), Path::new(LOG_DIR), log_config(), None).unwrap();
        (Fixture::assemble(vfs, space, log), report)
    }

    fn assemble(vfs: MemVfs, space: SpaceFile, log: Log) -> Fixture {
        let space = Arc::new(space);
        let spaces = Arc::new(SpaceSet::new());
        spaces.insert(Arc::clone(&space));
        let pool = BufferPool::new(64 * PAGE, PAGE, Arc::clone(&spaces) as _).unwrap();
        let alloc = Allocator::new(space, Arc::clone(&pool));
        Fixture {
            vfs,
            spaces,
            pool,
            alloc,
            log: Arc::new(log),
        }
    }

    /// An mtr on this fixture's log and pool.
    pub(crate) fn mtr(&self) -> Mtr {
        Mtr::start(Some(&self.log), &self.pool).unwrap()
    }

    /// Allocates a page and logs it whole in its own mtr; returns its page number.
    pub(crate) fn new_page(&self, fill: u8) -> u32 {
        let mtr = self.mtr();
        let mut page = self.alloc.allocate(&mtr, PageType::Overflow).unwrap();
        page[100..200].fill(fill);
        let page_no = page.id().page_no;
        drop(page);
        mtr.commit().unwrap().expect("a new page is logged");
        page_no
    }

    /// Returns `page_no` to the free list in its own mtr.
    pub(crate) fn free_page(&self, page_no: u32) {
        let mtr = self.mtr();
        self.alloc.free(&mtr, page_no).unwrap();
        mtr.commit().unwrap().expect("a free is logged");
    }

    pub(crate) fn id(page_no: u32) -> PageId {
        PageId::new(SPACE_ID, page_no)
    }

    pub(crate) fn bytes(&self, page_no: u32) -> Vec<u8> {
        self.pool.read(Fixture::id(page_no)).unwrap().to_vec()
    }

    pub(crate) fn space(&self) -> &Arc<SpaceFile> {
        self.alloc.space()
    }

    /// Loses everything not in the file system: the pool unflushed, the log unclosed.
    pub(crate) fn crash(self) -> MemVfs {
        self.vfs
    }
}

fn shared(vfs: &MemVfs) -> Arc<dyn Vfs> {
    Arc::new(vfs.clone())
}

/// Applies `record` to `frame` the way redo does, without the LSN check.
fn replay(frame: &mut [u8], record: &Record) {
    match record {
        Record::PageDelta { ranges, .. } => {
            for (offset, bytes) in ranges {
                let start = *offset as usize;
                frame[start..start + bytes.len()].copy_from_slice(bytes);
            }
        }
        Record::PageImage { image, .. } => frame.copy_from_slice(image),
        other => panic!("not page redo: {other:?}"),
    }
}

/// The page a page record is for.
fn page_of(record: &Record) -> Option<u32> {
    match record {
        Record::PageDelta { page_no, .. } | Record::PageImage { page_no, .. } => Some(*page_no),
        _ => None,
    }
}

/// The records the log holds after `since`, each checked to belong to the batch that ended
/// at `lsn`.
fn one_batch(report: &RecoveryReport, since: Lsn, lsn: Lsn) -> Vec<Record> {
    let batch: Vec<&LoggedRecord> = report.records.iter().filter(|r| r.lsn >= since).collect();
    assert!(!batch.is_empty(), "nothing logged after LSN {since}");
    for logged in &batch {
        assert_eq!(
            logged.batch_end_lsn, lsn,
            "{:?} is not in the batch ending at {lsn}",
            logged.record
        );
    }
    assert_eq!(batch.last().unwrap().end_lsn, lsn);
    batch.into_iter().map(|r| r.record.clone()).collect()
}

#[test]
fn ranges_merge_small_gaps_and_skip_the_page_lsn() {
    let before = vec![0u8; PAGE];
    let mut after = before.clone();
    after[100] = 1;
    after[100 + MERGE_GAP] = 1; // gap of 15 unchanged bytes: merged
    after[300] = 1;
    after[300 + MERGE_GAP + 1] = 1; // gap of 16: separate
    let last_body_byte = PAGE - crate::page::TRAILER_LEN - 1;
    after[last_body_byte] = 1;
    after[PAGE - 1] = 1; // the trailer belongs to the codec: not logged
    assert_eq!(
        changed_ranges(&before, &after),
        [
            100..101 + MERGE_GAP,
            300..301,
            301 + MERGE_GAP..302 + MERGE_GAP,
            last_body_byte..last_body_byte + 1
        ]
    );
    // Every header byte changes: only page_type (4..6) and space_id/page_no (8..16) are
    // logged — not the checksum, the cipher, the page LSN or the key id, version and nonce.
    after = before.clone();
    after[..crate::page::BODY_START].fill(9);
    assert_eq!(changed_ranges(&before, &after), [4..6, 8..16]);
    const { assert!(PAGE_LSN.start >= 16) };
    assert!(changed_ranges(&before, &before).is_empty());
}

/// The byte-at-a-time definition `changed_ranges` must agree with.
fn naive_changed_ranges(before: &[u8], after: &[u8]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    for part in crate::page::logged_ranges(after.len()) {
        let mut current: Option<Range<usize>> = None;
        for i in part.filter(|&i| before[i] != after[i]) {
            current = match current {
                Some(r) if i - r.end < MERGE_GAP => Some(r.start..i + 1),
                Some(r) => {
                    ranges.push(r);
                    Some(i..i + 1)
                }
                None => Some(i..i + 1),
            };
        }
        ranges.extend(current);
    }
    ranges
}

proptest::proptest! {
    /// Changes anywhere, including runs across 64-byte block edges and gaps of about
    /// `MERGE_GAP` that straddle a block edge: the block-skipping diff finds exactly what
    /// the byte-by-byte one finds.
    #[test]
    fn the_fast_diff_equals_the_byte_by_byte_diff(
        changes in proptest::collection::vec((0..PAGE, 1usize..40, 1u8..=255), 0..24)
    ) {
        let before: Vec<u8> = (0..PAGE).map(|i| (i * 7) as u8).collect();
        let mut after = before.clone();
        for (start, len, xor) in changes {
            for byte in &mut after[start..(start + len).min(PAGE)] {
                *byte ^= xor;
            }
        }
        proptest::prop_assert_eq!(
            changed_ranges(&before, &after),
            naive_changed_ranges(&before, &after)
        );
    }
}

#[test]
fn commit_appends_one_batch_whose_deltas_rebuild_the_after_image() {
    let fx = Fixture::create();
    let a = fx.new_page(1);
    let b = fx.new_page(2);
    let c = fx.new_page(3);
    let before: Vec<Vec<u8>> = [a, b, c].iter().map(|&p| fx.bytes(p)).collect();
    let records_before = fx.log.stats().records;
    let since = fx.log.current_lsn();

    let mtr = fx.mtr();
    let mut pa = mtr.write(Fixture::id(a)).unwrap();
    let mut pb = mtr.write(Fixture::id(b)).unwrap();
    let pc = mtr.write(Fixture::id(c)).unwrap(); // left unchanged
    pa[60..70].copy_from_slice(b"0123456789");
    pa[3000] = 0xAB;
    pb[PAGE - 40..PAGE - 20].fill(0xCD);
    assert_eq!(pc[..], before[2][..]);
    drop((pa, pb, pc));
    let lsn = mtr.commit().unwrap().expect("pages changed");
    fx.log.flush(lsn).unwrap();
    let after: Vec<Vec<u8>> = [a, b, c].iter().map(|&p| fx.bytes(p)).collect();
    assert_eq!(read_page_lsn(&after[0]), lsn);
    assert_eq!(read_page_lsn(&after[1]), lsn);
    assert_eq!(
        after[2], before[2],
        "an unchanged page is neither logged nor stamped"
    );
    assert_eq!(fx.log.stats().records, records_before + 2);

    let (_fx, report) = Fixture::recover(fx.crash());
    let batch = one_batch(&report, since, lsn);
    assert_eq!(batch.len(), 2, "one batch of two deltas, no space header");
    for (record, page) in batch.iter().zip([0, 1]) {
        let Record::PageDelta {
            page_no, ranges, ..
        } = record
        else {
            panic!("expected a delta, got {record:?}");
        };
        assert_eq!(*page_no, [a, b][page]);
        assert!(ranges.len() <= 2);
        let mut rebuilt = before[page].clone();
        replay(&mut rebuilt, record);
        write_page_lsn(&mut rebuilt, lsn);
        assert_eq!(rebuilt, after[page]);
    }
}

#[test]
fn commit_logs_the_allocation_first_the_pages_next_and_pushed_records_last() {
    let fx = Fixture::create();
    let a = fx.new_page(1);
    let b = fx.new_page(2);
    let c = fx.new_page(3);
    let before: Vec<(u32, Vec<u8>)> = [a, b, c].iter().map(|&p| (p, fx.bytes(p))).collect();
    let alloc_before = fx.space().header().alloc();
    let since = fx.log.current_lsn();

    let mut mtr = fx.mtr();
    mtr.write(Fixture::id(a)).unwrap()[500..520].fill(0x5A);
    let mut new = fx.alloc.allocate(&mtr, PageType::Overflow).unwrap();
    new[1000..1100].fill(0x6B);
    let n = new.id().page_no;
    drop(new);
    fx.alloc.free(&mtr, b).unwrap();
    drop(mtr.write(Fixture::id(c)).unwrap()); // unchanged: not logged
    mtr.lock_allocation(fx.space()); // held already: nothing happens
    mtr.push_record(Record::Commit { txn_id: 9 });
    let lsn = mtr.commit().unwrap().expect("pages changed");
    fx.log.flush(lsn).unwrap();
    let alloc_after = fx.space().header().alloc();
    assert_ne!(alloc_after, alloc_before);
    assert_eq!(alloc_after.page_count, n + 1);
    assert_eq!(alloc_after.free_head, b);
    let after: Vec<(u32, Vec<u8>)> = [a, b, c, n].iter().map(|&p| (p, fx.bytes(p))).collect();
    assert_eq!(read_page_lsn(&after[2].1), read_page_lsn(&before[2].1));

    let (_fx, report) = Fixture::recover(fx.crash());
    let batch = one_batch(&report, since, lsn);
    assert_eq!(batch.len(), 5, "{batch:#?}");
    assert_eq!(
        batch[0],
        Record::SpaceHeader {
            space_id: SPACE_ID,
            image: alloc_after.encode(),
        }
    );
    assert_eq!(batch[4], Record::Commit { txn_id: 9 });
    let pages = &batch[1..4];
    let mut logged: Vec<u32> = pages.iter().map(|r| page_of(r).unwrap()).collect();
    logged.sort_unstable();
    assert_eq!(logged, [a, b, n], "c was dropped unchanged");
    for record in pages {
        let page_no = page_of(record).unwrap();
        let mut rebuilt = match before.iter().find(|(p, _)| *p == page_no) {
            Some((_, bytes)) => {
                assert!(matches!(record, Record::PageDelta { .. }), "{record:?}");
                bytes.clone()
            }
            None => {
                assert!(matches!(record, Record::PageImage { .. }), "{record:?}");
                vec![0; PAGE]
            }
        };
        replay(&mut rebuilt, record);
        write_page_lsn(&mut rebuilt, lsn);
        let (_, expected) = after.iter().find(|(p, _)| *p == page_no).unwrap();
        assert_eq!(&rebuilt, expected, "page {page_no}");
    }
}

#[test]
fn an_mtr_without_changes_appends_nothing() {
    let fx = Fixture::create();
    let a = fx.new_page(1);
    let lsn = fx.log.current_lsn();
    let records = fx.log.stats().records;
    assert_eq!(fx.mtr().commit().unwrap(), None);
    let mtr = fx.mtr();
    let mut page = mtr.write(Fixture::id(a)).unwrap();
    page[500] = 7;
    page[500] = 0; // changed back: no difference
    drop(page);
    // The allocation lock alone, with the fields unchanged, logs no space header.
    mtr.lock_allocation(fx.space());
    assert_eq!(mtr.commit().unwrap(), None);
    assert_eq!(fx.log.current_lsn(), lsn);
    assert_eq!(fx.log.stats().records, records);
    // Without a log an mtr changes pages but logs nothing.
    let mtr = Mtr::start(None, &fx.pool).unwrap();
    mtr.write(Fixture::id(a)).unwrap()[500] = 8;
    assert_eq!(mtr.commit().unwrap(), None);
    assert_eq!(fx.bytes(a)[500], 8);
    assert_eq!(fx.log.current_lsn(), lsn);
}

#[test]
fn pushed_records_alone_are_logged() {
    let fx = Fixture::create();
    let since = fx.log.current_lsn();
    let mut mtr = fx.mtr();
    mtr.push_record(Record::Rollback { txn_id: 3 });
    let lsn = mtr.commit().unwrap().expect("a pushed record is logged");
    fx.log.flush(lsn).unwrap();
    let (_fx, report) = Fixture::recover(fx.crash());
    assert_eq!(
        one_batch(&report, since, lsn),
        [Record::Rollback { txn_id: 3 }]
    );
}

#[test]
fn a_dropped_mtr_restores_its_pages_and_logs_nothing() {
    let fx = Fixture::create();
    let a = fx.new_page(1);
    let before = fx.bytes(a);
    let lsn = fx.log.current_lsn();
    {
        let mtr = fx.mtr();
        mtr.write(Fixture::id(a)).unwrap()[100..4000].fill(0xEE);
        // Asked again, the kept page is changed further; abort still restores the first
        // before-image.
        mtr.write(Fixture::id(a)).unwrap()[10..20].fill(0xEF);
    }
    assert_eq!(fx.bytes(a), before);
    assert_eq!(fx.log.current_lsn(), lsn);
}

#[test]
fn a_page_dropped_unchanged_is_released_at_once() {
    let fx = Fixture::create();
    let a = fx.new_page(1);
    let b = fx.new_page(2);
    let mtr = fx.mtr();
    drop(mtr.write(Fixture::id(a)).unwrap());
    mtr.write(Fixture::id(b)).unwrap()[300] ^= 0xFF; // kept: stays latched

    // Another thread latches `a` while the mtr is still open. Were `a` still latched, the
    // thread would block until the mtr ends and the receive below would time out.
    let (sender, receiver) = mpsc::channel();
    let pool = Arc::clone(&fx.pool);
    thread::spawn(move || {
        let mut page = pool.write(Fixture::id(a)).unwrap();
        page[400] = 0x44;
        let _ = sender.send(());
    });
    receiver
        .recv_timeout(PATIENCE)
        .expect("page a is still latched by the mtr that let it go unchanged");
    mtr.commit().unwrap().expect("b changed");
    assert_eq!(fx.bytes(a)[400], 0x44);
}

#[test]
fn kept_pages_stay_latched_until_commit_has_stamped_them() {
    let fx = Fixture::create();
    let a = fx.new_page(1);
    let mtr = fx.mtr();
    mtr.write(Fixture::id(a)).unwrap()[300] ^= 0xFF; // dropped changed: kept

    // A reader that gets in before the commit would see the old page LSN.
    let (sender, receiver) = mpsc::channel();
    let pool = Arc::clone(&fx.pool);
    thread::spawn(move || {
        let page = pool.read(Fixture::id(a)).unwrap();
        let _ = sender.send((read_page_lsn(&page), page[300]));
    });
    thread::sleep(Duration::from_millis(100)); // room for the reader to get in too early
    let lsn = mtr.commit().unwrap().expect("a changed");
    let (seen_lsn, seen_byte) = receiver.recv_timeout(PATIENCE).expect("reader finished");
    assert_eq!(
        seen_lsn, lsn,
        "the reader got the page before its LSN was stamped"
    );
    assert_eq!(seen_byte, fx.bytes(a)[300]);
}

#[test]
fn asking_again_for_a_kept_page_returns_it_with_the_change_visible() {
    let fx = Fixture::create();
    let a = fx.new_page(1);
    let b = fx.new_page(2);
    let before = fx.bytes(a);
    let since = fx.log.current_lsn();

    let mtr = fx.mtr();
    mtr.write(Fixture::id(a)).unwrap()[1000..1010].fill(0x31);
    let mut again = mtr.write(Fixture::id(a)).unwrap();
    assert_eq!(again[1000..1010], [0x31; 10], "the first change is visible");
    again[2000..2010].fill(0x32);
    drop(again);
    // `create` on a kept page zeroes the same guard and makes it a whole image.
    mtr.write(Fixture::id(b)).unwrap()[50] = 1;
    let mut recreated = mtr.create(Fixture::id(b)).unwrap();
    assert!(recreated.iter().all(|&byte| byte == 0));
    recreated[60] = 2;
    drop(recreated);
    let lsn = mtr.commit().unwrap().expect("pages changed");
    fx.log.flush(lsn).unwrap();
    let after_a = fx.bytes(a);
    let after_b = fx.bytes(b);
    assert_eq!(after_a[1000..1010], [0x31; 10]);
    assert_eq!(after_a[2000..2010], [0x32; 10]);

    let (_fx, report) = Fixture::recover(fx.crash());
    let batch = one_batch(&report, since, lsn);
    assert_eq!(batch.len(), 2, "one record per page: {batch:#?}");
    let mut rebuilt = before;
    replay(&mut rebuilt, &batch[0]);
    write_page_lsn(&mut rebuilt, lsn);
    assert!(matches!(batch[0], Record::PageDelta { page_no, .. } if page_no == a));
    assert_eq!(rebuilt, after_a, "one delta from the first before-image");
    let Record::PageImage { page_no, image, .. } = &batch[1] else {
        panic!("a re-created page is logged whole: {:?}", batch[1]);
    };
    assert_eq!(*page_no, b);
    let mut rebuilt = image.clone();
    write_page_lsn(&mut rebuilt, lsn);
    assert_eq!(rebuilt, after_b);
}

#[test]
fn abort_after_allocate_and_free_restores_the_allocation_fields_and_the_pages() {
    let fx = Fixture::create();
    let a = fx.new_page(1);
    let b = fx.new_page(2);
    let c = fx.new_page(3);
    fx.free_page(c);
    fx.pool.flush_all().unwrap();
    fx.spaces.persist_headers().unwrap();
    let file_len = fx.vfs.contents(Path::new(SPACE_PATH)).unwrap().len();
    let pages_before: Vec<Vec<u8>> = [a, b, c].iter().map(|&p| fx.bytes(p)).collect();
    let alloc_before = fx.space().header().alloc();
    assert_eq!(fx.alloc.free_pages().unwrap(), [c]);
    let lsn = fx.log.current_lsn();
    {
        let mtr = fx.mtr();
        let mut reused = fx.alloc.allocate(&mtr, PageType::Overflow).unwrap();
        assert_eq!(reused.id().page_no, c, "the free list's head");
        reused[300..400].fill(0x77);
        drop(reused);
        let mut grown = fx.alloc.allocate(&mtr, PageType::Overflow).unwrap();
        let n = grown.id().page_no;
        assert_eq!(n, alloc_before.page_count, "the space grows");
        grown[300..400].fill(0x78);
        drop(grown);
        fx.alloc.free(&mtr, a).unwrap();
        mtr.write(Fixture::id(b)).unwrap()[300..400].fill(0x79);
        let during = fx.space().header().alloc();
        assert_eq!(during.page_count, n + 1);
        assert_eq!((during.free_head, during.free_count), (a, 1));
    }
    assert_eq!(fx.space().header().alloc(), alloc_before);
    for (page_no, before) in [a, b, c].iter().zip(&pages_before) {
        assert_eq!(&fx.bytes(*page_no), before, "page {page_no}");
    }
    assert_eq!(fx.log.current_lsn(), lsn, "an abort logs nothing");
    // The page the aborted mtr created was marked clean: it never reaches the file.
    fx.pool.flush_all().unwrap();
    let file = fx.vfs.contents(Path::new(SPACE_PATH)).unwrap();
    assert_eq!(file.len(), file_len, "the aborted new page was written");
    // The free list is intact and allocation carries on from it.
    assert_eq!(fx.alloc.free_pages().unwrap(), [c]);
    assert_eq!(fx.new_page(4), c);
    assert_eq!(fx.new_page(5), alloc_before.page_count);
}

#[test]
fn an_mtr_reallocates_pages_it_freed_without_deadlocking() {
    let fx = Fixture::create();
    let a = fx.new_page(1);
    let b = fx.new_page(2);
    let alloc_before = fx.space().header().alloc();
    assert_eq!(alloc_before.free_count, 0);

    // Run in a thread so that a self-deadlock fails the test instead of hanging it.
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mtr = fx.mtr();
        fx.alloc.free(&mtr, a).unwrap();
        fx.alloc.free(&mtr, b).unwrap();
        let mut reused = Vec::new();
        for fill in [0x61, 0x62] {
            let mut page = fx.alloc.allocate(&mtr, PageType::Overflow).unwrap();
            page[100..200].fill(fill);
            reused.push(page.id().page_no);
        }
        let lsn = mtr.commit().unwrap();
        let _ = sender.send((fx, reused, lsn));
    });
    let (fx, reused, lsn) = receiver
        .recv_timeout(PATIENCE)
        .expect("allocating a page this mtr freed deadlocked");
    assert_eq!(reused, [b, a], "the free list is last in, first out");
    assert_eq!(fx.space().header().alloc(), alloc_before);
    assert!(lsn.is_some(), "the pages changed");
    assert!(fx.alloc.free_pages().unwrap().is_empty());
    for (page_no, fill) in [(b, 0x61), (a, 0x62)] {
        let bytes = fx.bytes(page_no);
        assert_eq!(
            PageHeader::read(&bytes).unwrap().page_type,
            PageType::Overflow
        );
        assert_eq!(bytes[100..200], [fill; 100]);
    }
}
