//! What the redo log costs: appending a record to the log buffer, and a durable commit
//! under group commit.
//!
//! | group          | ids                              | measures                                 |
//! |----------------|----------------------------------|------------------------------------------|
//! | `wal_append`   | {64B, 1KiB} / {plain, encrypted} | `Log::append` of one record of that size |
//! | `group_commit` | 1, 4, 16 (committing threads)    | one small durable transaction, real disk |
//!
//! `wal_append` runs on the in-memory file system ([`MemVfs`]) and never waits for a sync.
//! The size is the record's whole frame, length prefix included. An append only copies
//! the encoded record into the buffer under the writer's lock, but every 16 MiB
//! (`LogConfig::buffer_size`) one append seals the buffered blocks (AES-GCM when
//! encrypted) and writes them, and when the log asks for a checkpoint the bench takes one
//! (it looks every 1024 appends; the engine's checkpoint thread waits for the signal).
//! Both are in the time, spread over the appends that caused them, so `encrypted / plain`
//! is the per-byte price of sealing.
//!
//! `group_commit` is the commit loop of `src/bin/wal_bench.rs` as a criterion bench: each
//! thread appends a ~100-byte page delta and a commit record and waits in `Log::commit`
//! until they are fsynced (`FlushAtCommit::EveryCommit`); one fsync serves every thread
//! waiting at the time. One iteration is one commit and its time is wall time across all
//! threads, so the throughput line is commits per second. The log is encrypted (the
//! default); `wal_bench` compares it with a plain log, and `commit_bench` measures commits
//! through `Db`, with the redo the engine really writes. The log lives in a temporary
//! directory under `$TMPDIR` (default `/tmp`): point it at the disk you want to measure.
//! 16 threads on a machine with fewer cores measure how well committers share fsyncs, not
//! CPU parallelism.
//!
//! Run: `cargo bench -p strongbox-bench --bench wal`
//!
//! Plots are off: criterion's plotting backend needs system fonts. The numbers are on the
//! terminal and in `target/criterion`.

use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strongbox_keyring::provider::MemoryKeyProvider;
use strongbox_wal::io::{MemVfs, StdVfs};
use strongbox_wal::{FlushAtCommit, Log, LogConfig, Record};

/// Frame sizes (length prefix included) of the appended records.
const APPEND_SIZES: [(&str, usize); 2] = [("64B", 64), ("1KiB", 1024)];
const THREADS: [usize; 3] = [1, 4, 16];
/// Bytes changed by each committed transaction's page delta.
const DELTA_LEN: usize = 100;
/// Appends between two looks at `Log::needs_checkpoint`.
const CHECKPOINT_EVERY: u64 = 1024;

fn keys() -> MemoryKeyProvider {
    let keys = MemoryKeyProvider::new();
    keys.add_random(1, 1, 256).expect("256 is a valid key size");
    keys
}

fn page_delta(page_no: u32, len: usize) -> Record {
    Record::PageDelta {
        space_id: 7,
        page_no,
        ranges: vec![(64, vec![0xA5; len])],
    }
}

/// Bytes `record` takes in the log stream: the varint length prefix, then the body.
fn frame_len(record: &Record) -> usize {
    let mut body = Vec::new();
    record.encode(&mut body);
    let prefix = (body.len() as u64) << 1 | 1;
    let prefix_len = (u64::BITS - prefix.leading_zeros()).div_ceil(7) as usize;
    body.len() + prefix_len
}

/// A page delta whose frame is exactly `len` bytes.
fn record_of(len: usize) -> Record {
    (0..len)
        .rev()
        .map(|payload| page_delta(1, payload))
        .find(|record| frame_len(record) == len)
        .unwrap_or_else(|| panic!("no page delta has a {len}-byte frame"))
}

fn wal_append(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("wal_append");
    for (size, len) in APPEND_SIZES {
        let record = [record_of(len)];
        group.throughput(Throughput::Bytes(len as u64));
        for encrypt in [false, true] {
            let config = LogConfig {
                segment_size: 8 << 20,
                capacity_segments: 8,
                encrypt,
                ..LogConfig::default()
            };
            let vfs = Arc::new(MemVfs::new());
            let log =
                Log::create(vfs, Path::new("/redo"), config, Some(&keys)).expect("create the log");
            let mut appended = 0u64;
            let mode = if encrypt { "encrypted" } else { "plain" };
            group.bench_function(BenchmarkId::new(size, mode), |b| {
                b.iter(|| {
                    let lsn = log.append(black_box(&record)).expect("append");
                    appended += 1;
                    if appended.is_multiple_of(CHECKPOINT_EVERY) && log.needs_checkpoint() {
                        log.checkpoint(lsn).expect("checkpoint");
                    }
                    lsn
                })
            });
            log.close().expect("close the log");
        }
    }
    group.finish();
}

/// `total` commits spread over `threads` threads that start together; returns the wall time
/// from the start to the last commit.
fn commit_round(log: &Log, threads: usize, total: u64) -> Duration {
    let barrier = Barrier::new(threads + 1);
    let started = std::thread::scope(|s| {
        for t in 0..threads {
            let commits = total / threads as u64 + u64::from((t as u64) < total % threads as u64);
            let barrier = &barrier;
            s.spawn(move || {
                let delta = page_delta(t as u32, DELTA_LEN);
                barrier.wait();
                for i in 0..commits {
                    let txn = [delta.clone(), Record::Commit { txn_id: i }];
                    let lsn = log.append(&txn).expect("append");
                    log.commit(lsn).expect("commit");
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    started.elapsed()
}

fn group_commit(c: &mut Criterion) {
    let keys = keys();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = LogConfig {
        flush_at_commit: FlushAtCommit::EveryCommit,
        ..LogConfig::default()
    };
    let log =
        Log::create(Arc::new(StdVfs), dir.path(), config, Some(&keys)).expect("create the log");
    // Create the first segment and fault in the code paths before anything is timed.
    commit_round(&log, 1, 50);

    let mut group = c.benchmark_group("group_commit");
    group.throughput(Throughput::Elements(1));
    for threads in THREADS {
        let before = log.stats();
        group.bench_function(BenchmarkId::from_parameter(threads), |b| {
            b.iter_custom(|iters| {
                let elapsed = commit_round(&log, threads, iters);
                if log.needs_checkpoint() {
                    log.checkpoint(log.current_lsn()).expect("checkpoint");
                }
                elapsed
            })
        });
        let after = log.stats();
        let commits = after.commits - before.commits;
        eprintln!(
            "group_commit/{threads}: {commits} commits, {:.2} commits per fsync",
            commits as f64 / (after.fsyncs - before.fsyncs).max(1) as f64
        );
    }
    group.finish();
    log.close().expect("close the log");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .without_plots()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = wal_append, group_commit
}
criterion_main!(benches);
