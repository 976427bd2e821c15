//! Append, flush, reopen: exactly the records come back, with the LSNs `append` returned.

use std::sync::Arc;

use super::*;
use crate::{Log, WalError, BLOCK_SIZE};

fn round_trip(encrypt: bool) {
    let vfs = HookVfs::default();
    let keys = keys();
    let log = Log::create(
        Arc::new(vfs.clone()),
        dir(),
        small_config(encrypt),
        Some(&keys),
    )
    .unwrap();
    assert_eq!(log.current_lsn(), 24);
    let mut rng = Rng::new(7);
    let mut appended = Appended::new();
    for batch_no in 0..120 {
        let batch: Vec<Record> = (0..1 + rng.below(5))
            .map(|_| random_record(&mut rng))
            .collect();
        let end = log.append(&batch).unwrap();
        appended.push(&batch, end);
        match batch_no % 3 {
            0 => log.flush(end).unwrap(),
            1 => log.commit(end).unwrap(),
            _ => {} // left for a later flush to carry
        }
    }
    log.close().unwrap();
    assert!(
        segments(&vfs.mem).len() > 20,
        "the test must cross many segments"
    );

    let (log, report) = Log::open(
        Arc::new(vfs.clone()),
        dir(),
        small_config(encrypt),
        Some(&keys),
    )
    .unwrap();
    assert_eq!(records_of(&report), appended.records);
    let mut batch_start = 0;
    for &(last, end) in &appended.batch_ends {
        assert_eq!(report.records[last].end_lsn, end);
        for record in &report.records[batch_start..=last] {
            assert_eq!(record.batch_end_lsn, end);
        }
        batch_start = last + 1;
    }
    for pair in report.records.windows(2) {
        assert!(pair[0].lsn < pair[0].end_lsn && pair[0].end_lsn <= pair[1].lsn);
    }
    assert_eq!(report.start_lsn, 24);
    assert_eq!(report.end_lsn, appended.batch_ends.last().unwrap().1);
    assert!(report.discarded.is_empty());
    assert_eq!(report.stop.why, crate::StopWhy::EndOfFile);
    assert_eq!(report.epoch, 2);
    assert_eq!(log.epoch(), 2);
    assert_eq!(log.wrapping_key(), encrypt.then_some((1, 1)));
    // Writing resumes in a fresh block after the last one.
    assert_eq!(report.resume_lsn % BLOCK_SIZE as u64, 24);
    assert!(report.resume_lsn > report.end_lsn);
    assert_eq!(log.current_lsn(), report.resume_lsn);
    log.close().unwrap();
}

#[test]
fn plain_log_round_trips_across_many_segments() {
    round_trip(false);
}

#[test]
fn encrypted_log_round_trips_across_many_segments() {
    round_trip(true);
}

#[test]
fn unflushed_records_are_lost_in_a_crash_and_flushed_ones_are_not() {
    let vfs = HookVfs::default();
    let log = Log::create(Arc::new(vfs.clone()), dir(), small_config(false), None).unwrap();
    let kept = log.append(&[Record::Commit { txn_id: 1 }]).unwrap();
    log.flush(kept).unwrap();
    log.append(&[Record::Commit { txn_id: 2 }]).unwrap();
    drop(log); // crash: no close
    let (log, report) = Log::open(Arc::new(vfs), dir(), small_config(false), None).unwrap();
    assert_eq!(records_of(&report), vec![Record::Commit { txn_id: 1 }]);
    log.close().unwrap();
}

#[test]
fn api_misuse_gets_clear_errors() {
    let vfs: Arc<dyn crate::io::Vfs> = Arc::new(HookVfs::default());
    assert!(matches!(
        Log::open(vfs.clone(), dir(), small_config(false), None),
        Err(WalError::NotFound { .. })
    ));
    let log = Log::create(vfs.clone(), dir(), small_config(false), None).unwrap();
    assert!(matches!(
        Log::create(vfs.clone(), dir(), small_config(false), None),
        Err(WalError::AlreadyExists { .. })
    ));
    let end = log.append(&[Record::Commit { txn_id: 1 }]).unwrap();
    assert_eq!(log.append(&[]).unwrap(), end);
    assert!(matches!(
        log.flush(end + 1000),
        Err(WalError::BeyondEnd { .. })
    ));
    assert!(matches!(
        log.checkpoint(512 + 500), // offset 500: inside a trailer
        Err(WalError::BadCheckpoint { .. })
    ));
    log.checkpoint(end).unwrap();
    assert_eq!(log.checkpoint_lsn(), end);
    assert!(matches!(
        log.checkpoint(24),
        Err(WalError::BadCheckpoint { .. })
    ));
    let huge = Record::PageImage {
        space_id: 1,
        page_no: 1,
        image: vec![0; crate::record::MAX_RECORD_LEN + 1],
    };
    assert!(matches!(
        log.append(&[huge]),
        Err(WalError::TooLarge { what: "record", .. })
    ));
    log.close().unwrap();
    log.close().unwrap();
    assert!(matches!(
        log.append(&[Record::Commit { txn_id: 2 }]),
        Err(WalError::Closed)
    ));
    assert!(matches!(log.checkpoint(end), Err(WalError::Closed)));
}
