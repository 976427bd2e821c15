//! Epochs, group commit, the flush policies, and fsync failure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::*;
use crate::{FlushAtCommit, Log, WalError};

/// Over many reopens — clean closes, crashes with unflushed records, torn tails — no
/// `(epoch, block_no)` pair is ever written twice, every open writes only in its own
/// (strictly larger) epoch, and torn blocks do get rewritten at the same position.
#[test]
fn no_epoch_and_block_pair_is_ever_written_twice() {
    for encrypt in [false, true] {
        let vfs = HookVfs::default();
        let keys = keys();
        let config = small_config(encrypt);
        let mut rng = Rng::new(3);
        let mut durable: Vec<Record> = Vec::new();
        let log = Log::create(Arc::new(vfs.clone()), dir(), config.clone(), Some(&keys)).unwrap();
        let mut log = Some(log);
        let mut last_epoch = 0;
        for cycle in 0..12 {
            let current = log.take().unwrap();
            assert!(current.epoch() > last_epoch);
            last_epoch = current.epoch();
            let before = vfs.hooks.blocks.lock().len();
            for _ in 0..10 {
                let batch: Vec<Record> = (0..3).map(|_| random_record(&mut rng)).collect();
                let end = current.append(&batch).unwrap();
                current.flush(end).unwrap();
                durable.extend(batch);
            }
            // Unflushed records, lost in the crash below.
            current.append(&[Record::Commit { txn_id: 77 }]).unwrap();
            let written: Vec<(u32, u64, u32)> = vfs.hooks.blocks.lock()[before..].to_vec();
            assert!(written.iter().all(|&(e, _, _)| e == last_epoch));
            drop(current); // crash
            if cycle % 3 == 1 {
                // Tear the tail: cut the last segment inside its last block.
                let last = *segments(&vfs.mem).last().unwrap();
                let path = dir().join(crate::segment::segment_name(last));
                let mut bytes = vfs.mem.contents(&path).unwrap();
                if bytes.len() >= 512 {
                    let keep = bytes.len() - 300;
                    bytes.truncate(keep);
                    vfs.mem.set_contents(&path, bytes);
                }
            }
            let (reopened, report) =
                Log::open(Arc::new(vfs.clone()), dir(), config.clone(), Some(&keys)).unwrap();
            // Recovery returns exactly the records fully before the damage.
            let recovered = records_of(&report);
            assert!(durable.starts_with(&recovered));
            durable = recovered;
            log = Some(reopened);
        }
        log.unwrap().close().unwrap();

        let blocks = vfs.hooks.blocks.lock();
        let mut seen = BTreeSet::new();
        let mut epochs_per_block: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
        for &(epoch, block_no, _) in blocks.iter() {
            assert!(
                seen.insert((epoch, block_no)),
                "({epoch}, {block_no}) written twice"
            );
            epochs_per_block.entry(block_no).or_default().insert(epoch);
        }
        assert!(
            epochs_per_block.values().any(|epochs| epochs.len() > 1),
            "the test must rewrite torn blocks at the same position in a new epoch"
        );
    }
}

/// Committers started together behind a barrier on a disk whose fsync takes 2 ms: one
/// fsync must serve several commits.
#[test]
fn group_commit_shares_fsyncs_and_loses_nothing() {
    const THREADS: u64 = 12;
    const COMMITS: u64 = 20;
    let vfs = HookVfs::default();
    vfs.hooks.sync_delay_micros.store(2000, Ordering::Relaxed);
    let keys = keys();
    let config = small_config(true);
    let log = Log::create(Arc::new(vfs.clone()), dir(), config.clone(), Some(&keys)).unwrap();
    let barrier = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (log, barrier) = (&log, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..COMMITS {
                    let txn_id = t * 1000 + i;
                    let lsn = log
                        .append(&[
                            Record::PageDelta {
                                space_id: t as u32,
                                page_no: i as u32,
                                ranges: vec![(64, vec![t as u8; 100])],
                            },
                            Record::Commit { txn_id },
                        ])
                        .unwrap();
                    log.commit(lsn).unwrap();
                    assert!(log.durable_lsn() >= lsn);
                }
            });
        }
    });
    let stats = log.stats();
    assert_eq!(stats.commits, THREADS * COMMITS);
    assert!(
        stats.fsyncs < stats.commits,
        "{} fsyncs for {} commits",
        stats.fsyncs,
        stats.commits
    );
    assert_eq!(stats.fsyncs, vfs.hooks.syncs.load(Ordering::Relaxed));
    drop(log); // crash: every acknowledged commit must survive
    let (log, report) = Log::open(Arc::new(vfs), dir(), config, Some(&keys)).unwrap();
    let committed: BTreeSet<u64> = report
        .records
        .iter()
        .filter_map(|r| match r.record {
            Record::Commit { txn_id } => Some(txn_id),
            _ => None,
        })
        .collect();
    let expected: BTreeSet<u64> = (0..THREADS)
        .flat_map(|t| (0..COMMITS).map(move |i| t * 1000 + i))
        .collect();
    assert_eq!(committed, expected);
    // Each thread's records appear in its own order, each delta right before its commit.
    for pair in report.records.chunks(2) {
        match (&pair[0].record, &pair[1].record) {
            (
                Record::PageDelta {
                    space_id, page_no, ..
                },
                Record::Commit { txn_id },
            ) => {
                assert_eq!(u64::from(*space_id) * 1000 + u64::from(*page_no), *txn_id)
            }
            other => panic!("batch interleaved: {other:?}"),
        }
    }
    log.close().unwrap();
}

fn background_flush_makes_commits_durable(policy: FlushAtCommit) {
    let vfs = HookVfs::default();
    let config = LogConfig {
        flush_at_commit: policy,
        flush_interval: Duration::from_millis(20),
        ..small_config(false)
    };
    let log = Log::create(Arc::new(vfs.clone()), dir(), config.clone(), None).unwrap();
    let lsn = log.append(&[Record::Commit { txn_id: 1 }]).unwrap();
    log.commit(lsn).unwrap();
    if policy == FlushAtCommit::WriteAtCommit {
        // Policy 2: the block reached the OS before commit returned.
        assert!(!vfs.hooks.blocks.lock().is_empty());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.durable_lsn() < lsn {
        assert!(Instant::now() < deadline, "the background flush never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(vfs.hooks.syncs.load(Ordering::Relaxed) >= 1);
    assert_eq!(log.stats().commits, 1);
    drop(log); // crash after the background fsync
    let (log, report) = Log::open(Arc::new(vfs), dir(), config, None).unwrap();
    assert_eq!(records_of(&report), vec![Record::Commit { txn_id: 1 }]);
    log.close().unwrap();
}

#[test]
fn policy_0_background_thread_writes_and_fsyncs() {
    background_flush_makes_commits_durable(FlushAtCommit::OncePerInterval);
}

#[test]
fn policy_2_writes_at_commit_and_background_thread_fsyncs() {
    background_flush_makes_commits_durable(FlushAtCommit::WriteAtCommit);
}

#[test]
fn close_flushes_under_every_policy() {
    for level in 0..=2 {
        let vfs = HookVfs::default();
        let config = LogConfig {
            flush_at_commit: FlushAtCommit::from_level(level).unwrap(),
            flush_interval: Duration::from_secs(3600),
            ..small_config(false)
        };
        let log = Log::create(Arc::new(vfs.clone()), dir(), config.clone(), None).unwrap();
        let lsn = log.append(&[Record::Rollback { txn_id: 5 }]).unwrap();
        log.commit(lsn).unwrap();
        log.close().unwrap();
        let (log, report) = Log::open(Arc::new(vfs), dir(), config, None).unwrap();
        assert_eq!(records_of(&report), vec![Record::Rollback { txn_id: 5 }]);
        log.close().unwrap();
    }
}

/// A failed fsync is never retried and poisons every later call, naming the failure;
/// reopening recovers what was durable before it.
#[test]
fn fsync_failure_poisons_the_log() {
    let vfs = HookVfs::default();
    let config = small_config(false);
    let log = Log::create(Arc::new(vfs.clone()), dir(), config.clone(), None).unwrap();
    let good = log.append(&[Record::Commit { txn_id: 1 }]).unwrap();
    log.commit(good).unwrap();

    vfs.hooks.fail_syncs.store(true, Ordering::Relaxed);
    let bad = log.append(&[Record::Commit { txn_id: 2 }]).unwrap();
    let first = log.commit(bad).unwrap_err();
    assert!(
        matches!(first, WalError::Poisoned { op: "fsync", .. }),
        "{first}"
    );
    assert_eq!(vfs.hooks.failed_syncs.load(Ordering::Relaxed), 1);

    // The disk "recovers", but the log must not believe a retry.
    vfs.hooks.fail_syncs.store(false, Ordering::Relaxed);
    for error in [
        log.append(&[Record::Commit { txn_id: 3 }]).unwrap_err(),
        log.flush(bad).unwrap_err(),
        log.commit(good).unwrap_err(),
        log.checkpoint(good).unwrap_err(),
    ] {
        let message = error.to_string();
        assert!(matches!(error, WalError::Poisoned { .. }), "{message}");
        assert!(message.contains("fsync") && message.contains("injected fsync failure"));
    }
    assert_eq!(log.durable_lsn(), good);
    assert_eq!(
        vfs.hooks.syncs.load(Ordering::Relaxed),
        1,
        "no fsync after the failure"
    );
    assert!(matches!(log.close(), Err(WalError::Poisoned { .. })));
    drop(log);

    let (log, report) = Log::open(Arc::new(vfs), dir(), config, None).unwrap();
    // Record 2 was written (not synced); with this file system the write survived, so
    // recovery may see it, but it never saw record 3.
    let recovered = records_of(&report);
    assert_eq!(recovered[0], Record::Commit { txn_id: 1 });
    assert!(!recovered.contains(&Record::Commit { txn_id: 3 }));
    log.close().unwrap();
}
