use super::*;
use crate::buffer::BufferPool;
use crate::io::{MemVfs, Vfs};
use crate::page::{read_page_lsn, PageId, PageSize, PageType};
use crate::space::{Allocator, NewSpace, SpaceFile, SpaceKind, SpaceSet};
use std::path::Path;
use strongbox_wal::{LogConfig, RecoveryReport};

pub(crate) const PAGE: usize = 4096;
pub(crate) const SPACE_ID: u32 = 1;
const SPACE_PATH: &str = "/db/space-1.sbd";
const LOG_DIR: &str = "/db/redo";

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

    /// Allocates a page and logs it whole in its own mtr; returns its page number.
    pub(crate) fn new_page(&self, fill: u8) -> u32 {
        let mut mtr = Mtr::new(&self.log);
        let i = mtr.new_page(self.alloc.allocate(PageType::Overflow).unwrap());
        mtr.page_mut(i)[100..200].fill(fill);
        let page_no = mtr.page(i).id().page_no;
        mtr.commit().unwrap().expect("a new page is logged");
        page_no
    }

    pub(crate) fn id(page_no: u32) -> PageId {
        PageId::new(SPACE_ID, page_no)
    }

    pub(crate) fn bytes(&self, page_no: u32) -> Vec<u8> {
        self.pool.read(Fixture::id(page_no)).unwrap().to_vec()
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

#[test]
fn ranges_merge_small_gaps_and_skip_the_page_lsn() {
    let before = vec![0u8; PAGE];
    let mut after = before.clone();
    after[100] = 1;
    after[100 + MERGE_GAP] = 1; // gap of 15 unchanged bytes: merged
    after[300] = 1;
    after[300 + MERGE_GAP + 1] = 1; // gap of 16: separate
    after[PAGE - 1] = 1;
    assert_eq!(
        changed_ranges(&before, &after),
        [
            100..101 + MERGE_GAP,
            300..301,
            301 + MERGE_GAP..302 + MERGE_GAP,
            PAGE - 1..PAGE
        ]
    );
    // Bytes on both sides of the LSN field change, and the field itself: two ranges, neither
    // touching it.
    after = before.clone();
    after[PAGE_LSN.start - 1] = 1;
    after[PAGE_LSN.start..PAGE_LSN.end].fill(9);
    after[PAGE_LSN.end] = 1;
    assert_eq!(
        changed_ranges(&before, &after),
        [
            PAGE_LSN.start - 1..PAGE_LSN.start,
            PAGE_LSN.end..PAGE_LSN.end + 1
        ]
    );
    assert!(changed_ranges(&before, &before).is_empty());
}

#[test]
fn commit_appends_one_batch_whose_deltas_rebuild_the_after_image() {
    let fx = Fixture::create();
    let a = fx.new_page(1);
    let b = fx.new_page(2);
    let c = fx.new_page(3);
    let before: Vec<Vec<u8>> = [a, b, c].iter().map(|&p| fx.bytes(p)).collect();
    let records_before = fx.log.stats();

    let mut mtr = Mtr::new(&fx.log);
    let ia = mtr.modify(fx.pool.write(Fixture::id(a)).unwrap());
    let ib = mtr.modify(fx.pool.write(Fixture::id(b)).unwrap());
    let ic = mtr.modify(fx.pool.write(Fixture::id(c)).unwrap()); // left unchanged
    mtr.page_mut(ia)[60..70].copy_from_slice(b"0123456789");
    mtr.page_mut(ia)[3000] = 0xAB;
    mtr.page_mut(ib)[PAGE - 40..PAGE - 20].fill(0xCD);
    assert_eq!(mtr.page(ic)[..], before[2][..]);
    let lsn = mtr.commit().unwrap().expect("pages changed");
    fx.log.flush(lsn).unwrap();
    let after: Vec<Vec<u8>> = [a, b, c].iter().map(|&p| fx.bytes(p)).collect();
    assert_eq!(read_page_lsn(&after[0]), lsn);
    assert_eq!(read_page_lsn(&after[1]), lsn);
    assert_eq!(
        after[2], before[2],
        "an unchanged page is neither logged nor stamped"
    );
    assert_eq!(fx.log.stats().records, records_before.records + 2);

    let (_fx, report) = Fixture::recover(fx.crash());
    let batch: Vec<_> = report
        .records
        .iter()
        .filter(|r| r.batch_end_lsn == lsn)
        .collect();
    assert_eq!(batch.len(), 2, "one batch of two deltas");
    assert_eq!(report.records.last().unwrap().end_lsn, lsn);
    for (logged, page) in batch.iter().zip([0, 1]) {
        let Record::PageDelta {
            page_no, ranges, ..
        } = &logged.record
        else {
            panic!("expected a delta, got {:?}", logged.record);
        };
        assert_eq!(*page_no, [a, b][page]);
        assert!(ranges.len() <= 2);
        let mut rebuilt = before[page].clone();
        replay(&mut rebuilt, &logged.record);
        write_page_lsn(&mut rebuilt, lsn);
        assert_eq!(rebuilt, after[page]);
    }
}

#[test]
fn an_mtr_without_changes_appends_nothing() {
    let fx = Fixture::create();
    let a = fx.new_page(1);
    let lsn = fx.log.current_lsn();
    let records = fx.log.stats().records;
    assert_eq!(Mtr::new(&fx.log).commit().unwrap(), None);
    let mut mtr = Mtr::new(&fx.log);
    let i = mtr.modify(fx.pool.write(Fixture::id(a)).unwrap());
    mtr.page_mut(i)[500] = 7;
    mtr.page_mut(i)[500] = 0; // changed back: no difference
    assert_eq!(mtr.commit().unwrap(), None);
    assert_eq!(fx.log.current_lsn(), lsn);
    assert_eq!(fx.log.stats().records, records);
}

#[test]
fn a_dropped_mtr_restores_its_pages_and_logs_nothing() {
    let fx = Fixture::create();
    let a = fx.new_page(1);
    let before = fx.bytes(a);
    let lsn = fx.log.current_lsn();
    {
        let mut mtr = Mtr::new(&fx.log);
        let i = mtr.modify(fx.pool.write(Fixture::id(a)).unwrap());
        mtr.page_mut(i)[100..4000].fill(0xEE);
    }
    assert_eq!(fx.bytes(a), before);
    assert_eq!(fx.log.current_lsn(), lsn);
}
