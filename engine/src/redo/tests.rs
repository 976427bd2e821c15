use super::*;
use crate::io::MemVfs;
use crate::mtr::tests::{Fixture, PAGE, SPACE_ID};
use crate::page::PageType;

/// Pages 1..=3 made and flushed to disk (a clean state with page LSNs, page 0 with a page
/// count of 4), then several mtrs change them, add page 4 and page 5, and the log (only) is
/// flushed. Returns the crashed file system and every page as it was in memory just before
/// the crash.
///
/// The log then holds 15 records: 5 space headers (one per allocating mtr), 5 page images
/// (pages 1..=5) and 5 deltas.
fn crash_after_work() -> (MemVfs, Vec<(u32, Vec<u8>)>) {
    let fx = Fixture::create();
    let pages: Vec<u32> = (1..=3).map(|fill| fx.new_page(fill)).collect();
    fx.pool.flush_all().unwrap();
    fx.spaces.persist_headers().unwrap();

    // mtr 1: two pages, several ranges each.
    let mtr = fx.mtr();
    let mut p = mtr.write(Fixture::id(pages[0])).unwrap();
    p[1000..1100].fill(0x11);
    p[PAGE - 17] = 0x12;
    drop(p);
    mtr.write(Fixture::id(pages[1])).unwrap()[64..80].fill(0x21);
    mtr.commit().unwrap().unwrap();
    // mtr 2: a new page (past the page count on disk) and a change to an old one.
    let mtr = fx.mtr();
    let mut n = fx.alloc.allocate(&mtr, PageType::Overflow).unwrap();
    n[200..300].fill(0x44);
    let new_page = n.id().page_no;
    drop(n);
    mtr.write(Fixture::id(pages[2])).unwrap()[2000..2010].fill(0x33);
    mtr.commit().unwrap().unwrap();
    // mtr 3: the new page again, and page 1 again (a later change to the same bytes).
    let mtr = fx.mtr();
    mtr.write(Fixture::id(new_page)).unwrap()[250..260].fill(0x45);
    mtr.write(Fixture::id(pages[0])).unwrap()[1050..1060].fill(0x13);
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

/// Every page record (and space header) of the log, whatever the space.
fn everything(_: u32) -> bool {
    true
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
    assert_eq!(fx.space().header().page_count, 4, "page 0 as persisted");
    let done = apply(&report.records, &fx.spaces, &fx.pool, everything).unwrap();
    // 3 images already on disk are skipped; 5 deltas, 2 images and 5 space headers are
    // applied.
    assert_eq!(
        done,
        Applied {
            applied: 12,
            skipped: 3,
            ignored: 0
        }
    );
    assert_pages(&fx, &expected);
    assert_eq!(fx.space().header().page_count, 6);

    // The recovered pages survive a flush and a second crash with an empty log tail; only
    // the space headers, which carry no LSN, are set again.
    fx.pool.flush_all().unwrap();
    fx.spaces.persist_headers().unwrap();
    let (fx, report) = Fixture::recover(fx.crash());
    let again = apply(&report.records, &fx.spaces, &fx.pool, everything).unwrap();
    assert_eq!(
        again,
        Applied {
            applied: 5,
            skipped: 10,
            ignored: 0
        }
    );
    assert_pages(&fx, &expected);
    assert_eq!(fx.space().header().page_count, 6);
}

#[test]
fn applying_twice_is_applying_once() {
    let (vfs, expected) = crash_after_work();
    let (fx, report) = Fixture::recover(vfs);
    apply(&report.records, &fx.spaces, &fx.pool, everything).unwrap();
    let alloc = fx.space().header().alloc();
    let twice = apply(&report.records, &fx.spaces, &fx.pool, everything).unwrap();
    assert_eq!(
        twice,
        Applied {
            applied: 5,
            skipped: 10,
            ignored: 0
        }
    );
    assert_pages(&fx, &expected);
    assert_eq!(fx.space().header().alloc(), alloc);
}

#[test]
fn space_header_records_restore_the_allocation_fields_after_a_crash() {
    let fx = Fixture::create();
    let pages: Vec<u32> = (1..=4).map(|fill| fx.new_page(fill)).collect();
    fx.pool.flush_all().unwrap();
    fx.spaces.persist_headers().unwrap();
    let on_disk = fx.space().header().alloc();

    // Frees; reuses from the free list and a new page; a linked free (as an overflow chain
    // is freed) and a free. Only the log reaches the disk.
    let mtr = fx.mtr();
    fx.alloc.free(&mtr, pages[1]).unwrap();
    fx.alloc.free(&mtr, pages[2]).unwrap();
    mtr.commit().unwrap().unwrap();
    let mtr = fx.mtr();
    let reused: Vec<u32> = (0..3)
        .map(|_| {
            let page = fx.alloc.allocate(&mtr, PageType::Overflow).unwrap();
            page.id().page_no
        })
        .collect();
    assert_eq!(reused, [pages[2], pages[1], on_disk.page_count]);
    mtr.commit().unwrap().unwrap();
    let mtr = fx.mtr();
    fx.alloc.free_linked(&mtr, pages[3], pages[3], 1).unwrap();
    fx.alloc.free(&mtr, pages[2]).unwrap();
    mtr.commit().unwrap().unwrap();
    let expected = fx.space().header().alloc();
    let expected_free = fx.alloc.free_pages().unwrap();
    assert_eq!(expected.page_count, on_disk.page_count + 1);
    assert_eq!(expected_free, [pages[2], pages[3]]);
    assert_eq!(expected.free_count, 2);
    fx.log.flush(fx.log.current_lsn()).unwrap();

    let (fx, report) = Fixture::recover(fx.crash());
    assert_eq!(fx.space().header().alloc(), on_disk);
    assert_ne!(on_disk, expected);
    apply(&report.records, &fx.spaces, &fx.pool, everything).unwrap();
    assert_eq!(fx.space().header().alloc(), expected);
    assert_eq!(fx.alloc.free_pages().unwrap(), expected_free);
    // Allocation carries on from the recovered list.
    assert_eq!(fx.new_page(6), pages[2]);
}

#[test]
fn records_of_spaces_only_rejects_are_skipped() {
    let (vfs, expected) = crash_after_work();
    let (fx, report) = Fixture::recover(vfs);
    let on_disk = fx.space().header().alloc();
    let disk_pages: Vec<Vec<u8>> = (1..=3).map(|p| fx.bytes(p)).collect();
    let done = apply(&report.records, &fx.spaces, &fx.pool, |id| id != SPACE_ID).unwrap();
    assert_eq!(
        done,
        Applied {
            applied: 0,
            skipped: 15,
            ignored: 0
        }
    );
    assert_eq!(fx.space().header().alloc(), on_disk);
    for (page_no, bytes) in (1..=3).zip(&disk_pages) {
        assert_eq!(&fx.bytes(page_no), bytes, "page {page_no} was changed");
    }
    // The same records let through rebuild everything.
    apply(&report.records, &fx.spaces, &fx.pool, |id| id == SPACE_ID).unwrap();
    assert_pages(&fx, &expected);

    // A space with records but no file (dropped after the checkpoint): skipped when
    // rejected, an error when not.
    let dropped = [
        Record::SpaceHeader {
            space_id: 99,
            image: fx.space().header().alloc().encode(),
        },
        Record::PageDelta {
            space_id: 99,
            page_no: 1,
            ranges: vec![(100, vec![1])],
        },
    ]
    .map(|record| LoggedRecord {
        lsn: 1 << 40,
        end_lsn: 1 << 40,
        batch_end_lsn: 1 << 40,
        record,
    });
    let done = apply(&dropped, &fx.spaces, &fx.pool, |id| id != 99).unwrap();
    assert_eq!(done.skipped, 2);
    assert!(apply(&dropped, &fx.spaces, &fx.pool, everything).is_err());
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
        everything,
    )
    .unwrap();
    assert_eq!(done.skipped, 2);
    assert_eq!(fx.bytes(page_no), before);
    // One LSN newer, and the same change is applied and stamped.
    apply(&[record(page_lsn + 1)], &fx.spaces, &fx.pool, everything).unwrap();
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
            logged(Record::Rollback { txn_id: 8 }),
            logged(Record::Checkpoint { lsn: 24 }),
        ],
        &fx.spaces,
        &fx.pool,
        everything,
    )
    .unwrap();
    assert_eq!(done.ignored, 3);
    let delta = logged(Record::PageDelta {
        space_id: 1,
        page_no: 9,
        ranges: vec![(100, vec![1])],
    });
    let err = apply(&[delta], &fx.spaces, &fx.pool, everything).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { problem, .. } if problem.contains("past the end")),
        "{err}"
    );
}

#[test]
fn a_space_header_of_the_wrong_length_is_corruption() {
    let fx = Fixture::create();
    let alloc = fx.space().header().alloc();
    let mut image = AllocState {
        page_count: 7,
        ..alloc
    }
    .encode();
    image.push(0);
    let header = LoggedRecord {
        lsn: 24,
        end_lsn: 40,
        batch_end_lsn: 40,
        record: Record::SpaceHeader {
            space_id: SPACE_ID,
            image,
        },
    };
    let err = apply(&[header], &fx.spaces, &fx.pool, everything).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { problem, .. } if problem.contains("13 bytes")),
        "{err}"
    );
    assert_eq!(fx.space().header().alloc(), alloc);
}
