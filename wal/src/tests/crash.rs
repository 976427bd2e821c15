//! Power loss at every IO operation, through `SimVfs`: every acknowledged commit survives,
//! no batch comes back in part, and the log carries on after recovery.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::io::{Damage, Fault, FaultRule, OpKind, SimVfs};
use crate::{Log, LogConfig, Record, RecoveryReport, WalError};

use super::{dir, keys};

const TXNS: u64 = 36;

fn config() -> LogConfig {
    LogConfig {
        segment_size: 4096,
        capacity_segments: 64,
        ..LogConfig::default()
    }
}

fn batch(txn: u64) -> [Record; 2] {
    [
        Record::PageDelta {
            space_id: 1,
            page_no: txn as u32,
            // 40 to 2400 bytes: many batches span blocks, so torn writes keep some of
            // their blocks and lose others.
            ranges: vec![(0, vec![txn as u8; 40 + (txn as usize * 397) % 2360])],
        },
        Record::Commit { txn_id: txn },
    ]
}

/// What the workload got acknowledged before the power went.
#[derive(Default)]
struct Progress {
    created: bool,
    /// Transactions whose `commit` returned Ok.
    acked: u64,
    /// First transaction recovery may start at: 0, or the one after a checkpoint.
    checkpoint_starts: BTreeSet<u64>,
}

fn workload(
    vfs: &SimVfs,
    keys: &dyn strongbox_keyring::provider::KeyProvider,
    p: &mut Progress,
) -> crate::Result<()> {
    p.checkpoint_starts.insert(0);
    let mut log = Log::create(Arc::new(vfs.clone()), dir(), config(), Some(keys))?;
    p.created = true;
    for txn in 0..TXNS {
        let lsn = log.append(&batch(txn))?;
        log.commit(lsn)?;
        p.acked = txn + 1;
        if txn % 12 == 11 {
            p.checkpoint_starts.insert(txn + 1);
            log.checkpoint(lsn)?;
        }
        if txn == 17 {
            log.close()?;
            drop(log);
            log = Log::open(Arc::new(vfs.clone()), dir(), config(), Some(keys))?.0;
        }
    }
    log.close()
}

/// The recovered records are whole batches of consecutive transactions starting at a
/// checkpoint, covering every acknowledged one. Returns the transactions recovered.
fn check(report: &RecoveryReport, p: &Progress, case: &str) -> Vec<u64> {
    let records: Vec<&Record> = report.records.iter().map(|r| &r.record).collect();
    assert_eq!(records.len() % 2, 0, "{case}: a batch came back in part");
    let txns: Vec<u64> = records
        .chunks(2)
        .map(|pair| match pair {
            [delta, Record::Commit { txn_id }] => {
                assert_eq!(*delta, &batch(*txn_id)[0], "{case}");
                *txn_id
            }
            other => panic!("{case}: not a batch: {other:?}"),
        })
        .collect();
    let first = txns.first().copied().unwrap_or(p.acked);
    assert!(
        txns.is_empty() || p.checkpoint_starts.contains(&first),
        "{case}: recovery starts at txn {first}"
    );
    for (i, txn) in txns.iter().enumerate() {
        assert_eq!(
            *txn,
            first + i as u64,
            "{case}: transactions not consecutive"
        );
    }
    let end = first + txns.len() as u64;
    assert!(end >= p.acked, "{case}: acknowledged txn {} lost", end);
    txns
}

#[test]
fn power_loss_at_every_operation_loses_no_acknowledged_commit() {
    let keys = keys();
    let total = {
        let vfs = SimVfs::new();
        workload(&vfs, &keys, &mut Progress::default()).unwrap();
        vfs.ops()
    };
    assert!(total > 100, "the workload should do real IO ({total} ops)");
    let (mut cut_batches, mut torn_tails) = (0, 0);
    for k in 0..=total {
        for damage in Damage::variants(k) {
            let case = format!("crash after op {k} of {total}, {damage:?}");
            let vfs = SimVfs::new();
            vfs.power_fail_after(k);
            let mut progress = Progress::default();
            let _ = workload(&vfs, &keys, &mut progress);
            let disk = vfs.crash(damage);
            let (log, report) =
                match Log::open(Arc::new(disk.clone()), dir(), config(), Some(&keys)) {
                    Ok(opened) => opened,
                    Err(WalError::NotFound { .. }) if !progress.created => continue,
                    Err(e) => panic!("{case}: {e}"),
                };
            let txns = check(&report, &progress, &case);
            cut_batches += usize::from(!report.discarded.is_empty());
            torn_tails += usize::from(report.stop.why == crate::StopWhy::Unwritten);

            // The log carries on in a new epoch, and a clean reopen sees old and new.
            let lsn = log.append(&batch(1000)).unwrap();
            log.commit(lsn).unwrap();
            log.close().unwrap();
            drop(log);
            let (log, again) = Log::open(Arc::new(disk), dir(), config(), Some(&keys))
                .unwrap_or_else(|e| panic!("{case}, second open: {e}"));
            let mut expected: Vec<Record> = txns.iter().flat_map(|&t| batch(t)).collect();
            expected.extend(batch(1000));
            let got: Vec<Record> = again.records.iter().map(|r| r.record.clone()).collect();
            assert_eq!(got, expected, "{case}, second open");
            drop(log);
        }
    }
    // The sweep must have met batches cut by the crash and torn multi-block writes.
    assert!(
        cut_batches > 0 && torn_tails > 0,
        "{cut_batches} {torn_tails}"
    );
}

/// Linux drops the pages of a failed fsync and marks them clean. The log must not retry
/// and call the data durable; after a crash, everything acknowledged before the failure
/// is still there.
#[test]
fn a_failed_fsync_is_not_retried_and_acknowledged_commits_survive() {
    let keys = keys();
    let vfs = SimVfs::new();
    let log = Log::create(Arc::new(vfs.clone()), dir(), config(), Some(&keys)).unwrap();
    for txn in 0..5 {
        log.commit(log.append(&batch(txn)).unwrap()).unwrap();
    }
    vfs.inject(FaultRule::new(Fault::SyncFails, OpKind::Sync));
    let lsn = log.append(&batch(5)).unwrap();
    assert!(matches!(
        log.commit(lsn),
        Err(WalError::Poisoned { op: "fsync", .. })
    ));
    assert_eq!(vfs.faults_fired(), 1);
    assert!(matches!(log.flush(lsn), Err(WalError::Poisoned { .. })));
    drop(log);
    for damage in Damage::variants(5) {
        let disk = vfs.crash(damage);
        let (log, report) = Log::open(Arc::new(disk), dir(), config(), Some(&keys)).unwrap();
        let progress = Progress {
            created: true,
            acked: 5,
            checkpoint_starts: [0].into(),
        };
        let txns = check(&report, &progress, &format!("{damage:?}"));
        assert_eq!(
            txns,
            (0..5).collect::<Vec<_>>(),
            "the unsynced commit is gone"
        );
        drop(log);
    }
}
