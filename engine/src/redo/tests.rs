use super::*;
use crate::io::MemVfs;
use crate::mtr::tests::{Fixture, PAGE};
use crate::mtr::Mtr;
use crate::page::PageType;

/// Pages 1..=3 made and flushed to disk (a clean state with page LSNs), then several mtrs
/// change them, add page 4 and page 5, and the log (only) is flushed. Returns the crashed
/// file system and every page as it was in memory just before the crash.
fn crash_after_work() -> (MemVfs, Vec<(u32, Vec<u8>)>) {
    let fx = Fixture::create();
    let pages: Vec<u32> = (1..=3).map(|fill| fx.new_page(fill)).collect();
    fx.pool.flush_all().unwrap();
    fx.spaces.persist_headers().unwrap();

    // mtr 1: two pages, several ranges each.
    let mut mtr = Mtr::new(&fx.log);
    let i = mtr.modify(fx.pool.write(Fixture::id(pages[0])).unwrap());
    let j = mtr.modify(fx.pool.write(Fixture::id(pages[1])).unwrap());
    mtr.page_mut(i)[1000..1100].fill(0x11);
    mtr.page_mut(i)[PAGE - 17] = 0x12;
    mtr.page_mut(j)[64..80].fill(0x21);
    mtr.commit().unwrap().unwrap();
    // mtr 2: a new page (past the page count on disk) and a change to an old one.
    let mut mtr = Mtr::new(&fx.log);
    let n = mtr.new_page(fx.alloc.allocate(PageType::Overflow).unwrap());
    mtr.page_mut(n)[200..300].fill(0x44);
    let k = mtr.modify(fx.pool.write(Fixture::id(pages[2])).unwrap());
    mtr.page_mut(k)[2000..2010].fill(0x33);
    let new_page = mtr.page(n).id().page_no;
    mtr.commit().unwrap().unwrap();
    // mtr 3: the new page again, and page 1 again (a later change to the same bytes).
    let mut mtr = Mtr::new(&fx.log);
    let n2 = mtr.modify(fx.pool.write(Fixture::id(new_page)).unwrap());
    mtr.page_mut(n2)[250..260].fill(0x45);
    let i2 = mtr.modify(fx.pool.write(Fixture::id(pages[0])).unwrap());
    mtr.page_mut(i2)[1050..1060].fill(0x13);
    mtr.commit().unwrap().unwrap();
    // A fifth page, logged whole in its own mtr.
    let last = fx.new_page(5);

    fx.log.flush(fx.log.current_lsn()).unwrap();
    let expected = pages
        .iter()
        .chain([&new_page, &last])
        .map(|&p| (p, fx.bytes(p)))
        .collect();
    (fx.crash(), expected)
}

/// Compares frames from byte 4 on: the checksum field (bytes 0..4) is codec-owned and holds
/// the stored CRC in a frame read from disk but zero in one made in memory.
fn assert_pages(fx: &Fixture, expected: &[(u32, Vec<u8>)]) {
    const CHECKSUM_LEN: usize = 4;
    for (page_no, bytes) in expected {
        let got = fx.bytes(*page_no);
        let diff: Vec<usize> = (CHECKSUM_LEN..PAGE)
            .filter(|&i| got[i] != bytes[i])
            .collect();
        assert!(diff.is_empty(), "page {page_no} differs at {diff:?}");
    }
}

#[test]
fn redo_after_a_crash_rebuilds_every_page() {
    let (vfs, expected) = crash_after_work();
    let (fx, report) = Fixture::recover(vfs);
    assert!(report.discarded.is_empty());
    let done = apply(&report.records, &fx.spaces, &fx.pool).unwrap();
    // 3 images already on disk are skipped; 5 deltas and 2 images are applied.
    assert_eq!(
        done,
        Applied {
            applied: 7,
            skipped: 3,
            ignored: 0
        }
    );
    assert_pages(&fx, &expected);
    assert_eq!(fx.spaces.get(1).unwrap().header().page_count, 6);

    // The recovered pages survive a flush and a second crash with an empty log tail.
    fx.pool.flush_all().unwrap();
    fx.spaces.persist_headers().unwrap();
    let (fx, report) = Fixture::recover(fx.crash());
    let again = apply(&report.records, &fx.spaces, &fx.pool).unwrap();
    assert_eq!(again.applied, 0);
    assert_pages(&fx, &expected);
}

#[test]
fn applying_twice_is_applying_once() {
    let (vfs, expected) = crash_after_work();
    let (fx, report) = Fixture::recover(vfs);
    apply(&report.records, &fx.spaces, &fx.pool).unwrap();
    let twice = apply(&report.records, &fx.spaces, &fx.pool).unwrap();
    assert_eq!(
        twice,
        Applied {
            applied: 0,
            skipped: 10,
            ignored: 0
        }
    );
    assert_pages(&fx, &expected);
}

#[test]
fn a_page_newer_than_the_record_is_left_alone() {
    let fx = Fixture::create();
    let page_no = fx.new_page(1);
    let page_lsn = read_page_lsn(&fx.bytes(page_no));
    let before = fx.bytes(page_no);
    let record = |batch_end_lsn| LoggedRecord {
        lsn: 24,
        end_lsn: batch_end_lsn,
        batch_end_lsn,
        record: Record::PageDelta {
            space_id: 1,
            page_no,
            ranges: vec![(100, vec![0xFF; 8])],
        },
    };
    let done = apply(
        &[record(page_lsn - 1), record(page_lsn)],
        &fx.spaces,
        &fx.pool,
    )
    .unwrap();
    assert_eq!(done.skipped, 2);
    assert_eq!(fx.bytes(page_no), before);
    // One LSN newer, and the same change is applied and stamped.
    apply(&[record(page_lsn + 1)], &fx.spaces, &fx.pool).unwrap();
    let after = fx.bytes(page_no);
    assert_eq!(after[100..108], [0xFF; 8]);
    assert_eq!(read_page_lsn(&after), page_lsn + 1);
}

#[test]
fn a_delta_past_the_end_is_corruption_and_other_records_are_ignored() {
    let fx = Fixture::create();
    let logged = |record| LoggedRecord {
        lsn: 24,
        end_lsn: 40,
        batch_end_lsn: 40,
        record,
    };
    let done = apply(
        &[
            logged(Record::Commit { txn_id: 7 }),
            logged(Record::Checkpoint { lsn: 24 }),
        ],
        &fx.spaces,
        &fx.pool,
    )
    .unwrap();
    assert_eq!(done.ignored, 2);
    let delta = logged(Record::PageDelta {
        space_id: 1,
        page_no: 9,
        ranges: vec![(100, vec![1])],
    });
    let err = apply(&[delta], &fx.spaces, &fx.pool).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { problem, .. } if problem.contains("past the end")),
        "{err}"
    );
}
