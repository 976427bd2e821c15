//! Checkpoints reclaim segments; a full log waits for one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::{Log, WalError};

fn delta(i: u64) -> Record {
    Record::PageDelta {
        space_id: 1,
        page_no: i as u32,
        ranges: vec![(0, vec![i as u8; 200])],
    }
}

#[test]
fn checkpoint_deletes_segments_below_it_and_recovery_starts_there() {
    let vfs = HookVfs::default();
    let config = LogConfig {
        segment_size: 4096,
        capacity_segments: 8,
        ..small_config(false)
    };
    let log = Log::create(Arc::new(vfs.clone()), dir(), config.clone(), None).unwrap();
    assert!(!log.needs_checkpoint());
    let mut i = 0;
    while !log.needs_checkpoint() {
        log.commit(log.append(&[delta(i)]).unwrap()).unwrap();
        i += 1;
    }
    // 75% of 8 segments of 8 blocks: at least 48 blocks are in use.
    assert!(crate::block::block_of(log.current_lsn()) >= 47);
    let before = segments(&vfs.mem);
    assert!(before.len() >= 6);

    let checkpoint = log.current_lsn();
    log.checkpoint(checkpoint).unwrap();
    assert!(!log.needs_checkpoint());
    assert_eq!(log.checkpoint_lsn(), checkpoint);
    let checkpoint_segment = crate::block::block_of(checkpoint) / 8;
    assert_eq!(segments(&vfs.mem), vec![checkpoint_segment]);
    assert_eq!(log.stats().checkpoints, 1);

    let after: Vec<Record> = (1000..1005).map(delta).collect();
    log.commit(log.append(&after).unwrap()).unwrap();
    drop(log);
    let (log, report) = Log::open(Arc::new(vfs.clone()), dir(), config, None).unwrap();
    assert_eq!(report.start_lsn, checkpoint);
    assert_eq!(records_of(&report), after);
    log.close().unwrap();
}

/// A checkpoint thread that acts only once an append is actually waiting: every append
/// must then wait at least once, and all of them must still succeed.
#[test]
fn a_full_log_waits_for_a_checkpoint() {
    let vfs = HookVfs::default();
    let config = LogConfig {
        segment_size: 4096,
        capacity_segments: 3,
        ..small_config(true)
    };
    let keys = keys();
    let log = Log::create(Arc::new(vfs.clone()), dir(), config.clone(), Some(&keys)).unwrap();
    let done = AtomicBool::new(false);
    let mut last_checkpoint = 0;
    std::thread::scope(|s| {
        let checkpointer = s.spawn(|| {
            let mut served = 0;
            let mut max_segments = 0;
            while !done.load(Ordering::Relaxed) {
                if !log.wait_checkpoint_needed(Duration::from_millis(20)) {
                    continue;
                }
                let waits = log.stats().full_log_waits;
                if waits > served {
                    served = waits;
                    max_segments = max_segments.max(segments(&vfs.mem).len());
                    log.checkpoint(log.current_lsn()).unwrap();
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            max_segments
        });
        for i in 0..400 {
            log.commit(log.append(&[delta(i)]).unwrap()).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let max_segments = checkpointer.join().unwrap();
        assert!(
            max_segments <= 3,
            "{max_segments} segments in a 3-segment log"
        );
        last_checkpoint = log.checkpoint_lsn();
    });
    let stats = log.stats();
    assert!(stats.full_log_waits > 0 && stats.checkpoints > 0);
    drop(log);
    let (log, report) = Log::open(Arc::new(vfs), dir(), config, Some(&keys)).unwrap();
    assert_eq!(report.start_lsn, last_checkpoint);
    let recovered = records_of(&report);
    let first = 400 - recovered.len() as u64;
    assert_eq!(recovered, (first..400).map(delta).collect::<Vec<_>>());
    log.close().unwrap();
}

#[test]
fn a_log_that_stays_full_fails_with_log_full() {
    let vfs = HookVfs::default();
    let config = LogConfig {
        segment_size: 4096,
        capacity_segments: 2,
        full_log_timeout: Duration::from_millis(50),
        ..small_config(false)
    };
    let log = Log::create(Arc::new(vfs), dir(), config, None).unwrap();
    let error = loop {
        match log.append(&[delta(1)]) {
            Ok(lsn) => log.flush(lsn).unwrap(),
            Err(error) => break error,
        }
    };
    assert!(matches!(error, WalError::LogFull { .. }), "{error}");
    assert!(log.needs_checkpoint());
    assert!(matches!(log.free_check(), Err(WalError::LogFull { .. })));
    // A checkpoint frees the space again.
    log.checkpoint(log.current_lsn()).unwrap();
    log.free_check().unwrap();
    log.append(&[delta(2)]).unwrap();
    let too_big: Vec<Record> = (0..40).map(delta).collect();
    assert!(matches!(
        log.append(&too_big),
        Err(WalError::TooLarge {
            what: "append batch",
            ..
        })
    ));
    log.close().unwrap();
}

/// `free_check` waits above 7/8 of the capacity, well before an append would; a
/// checkpoint releases it.
#[test]
fn free_check_waits_in_the_last_eighth_until_a_checkpoint() {
    let vfs = HookVfs::default();
    let config = LogConfig {
        segment_size: 4096,
        capacity_segments: 4,
        full_log_timeout: Duration::from_secs(10),
        ..small_config(false)
    };
    let log = Log::create(Arc::new(vfs), dir(), config, None).unwrap();
    // 4 segments of 8 blocks = 32 blocks, 7/8 = 28; one flushed record per block. After
    // 28 commits the write position is past 28 blocks (at block 28's data start).
    for i in 0..28 {
        log.free_check().unwrap();
        log.commit(log.append(&[delta(i)]).unwrap()).unwrap();
    }
    let waits_before = log.stats().full_log_waits;
    std::thread::scope(|s| {
        let waiter = s.spawn(|| log.free_check());
        while log.stats().full_log_waits == waits_before {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(log.needs_checkpoint());
        // The append itself still fits: free_check left it room.
        log.commit(log.append(&[delta(99)]).unwrap()).unwrap();
        log.checkpoint(log.current_lsn()).unwrap();
        waiter.join().unwrap().unwrap();
    });
    log.close().unwrap();
}
