//! `wal_bench`: what the redo log's group commit and encryption cost, on real files.
//!
//! 1. Commits per second and fsyncs per commit with 1, 4 and 16 committing threads at
//!    `flush_log_at_commit = 1`, encrypted vs plain. Each commit appends one ~200-byte
//!    record and waits for it to be durable. Encrypted and plain runs alternate round by
//!    round in one process so both see the same machine noise; the table shows the median
//!    round.
//! 2. The same commit loop on the in-memory file system (`MemVfs`, fsync free): with the
//!    disk out of the way this is what the log's CPU path costs, so the encrypted/plain
//!    ratio shows the price of sealing blocks. On a real disk that price hides in fsync
//!    noise.
//! 3. Recovery: the time `Log::open` takes to scan a 64 MiB tail, encrypted vs plain.
//!
//! The log lives in a temporary directory under `$TMPDIR` (default `/tmp`): point it at
//! the disk you want to measure.
//!
//! ```text
//! cargo run --release -p strongbox-bench --bin wal_bench -- [seconds_per_run] [rounds]
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use strongbox_keyring::provider::MemoryKeyProvider;
use strongbox_wal::io::{MemVfs, StdVfs, Vfs};
use strongbox_wal::{FlushAtCommit, Log, LogConfig, LogStats, Record};

const THREADS: [usize; 3] = [1, 4, 16];
/// 190 bytes of payload: with its header the record's frame is 200 bytes.
const PAYLOAD: usize = 190;

#[derive(Clone, Copy)]
struct Run {
    commits: u64,
    seconds: f64,
    stats: LogStats,
}

impl Run {
    fn commits_per_second(&self) -> f64 {
        self.commits as f64 / self.seconds
    }
}

fn config(encrypt: bool) -> LogConfig {
    LogConfig {
        encrypt,
        flush_at_commit: FlushAtCommit::EveryCommit,
        ..LogConfig::default()
    }
}

fn record(thread: usize, i: u64) -> Record {
    Record::PageDelta {
        space_id: thread as u32,
        page_no: i as u32,
        ranges: vec![(64, vec![0xA5; PAYLOAD])],
    }
}

fn commit_run(
    keys: &MemoryKeyProvider,
    encrypt: bool,
    threads: usize,
    seconds: f64,
    in_memory: bool,
) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vfs, config): (Arc<dyn Vfs>, _) = if in_memory {
        // Small segments, so checkpoints keep the in-memory files small.
        let config = LogConfig {
            segment_size: 4 << 20,
            capacity_segments: 4,
            ..config(encrypt)
        };
        (Arc::new(MemVfs::new()), config)
    } else {
        (Arc::new(StdVfs), config(encrypt))
    };
    let log = Log::create(vfs, dir.path(), config, Some(keys)).expect("create log");
    // Warm-up: create the first segment and fault in the code paths.
    for i in 0..50 {
        log.commit(log.append(&[record(0, i)]).expect("append"))
            .expect("commit");
    }
    let before = log.stats();
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let started = std::thread::scope(|s| {
        // The engine's checkpoint thread, reduced to its log side.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if log.wait_checkpoint_needed(Duration::from_millis(10)) {
                    log.checkpoint(log.current_lsn()).expect("checkpoint");
                }
            }
        });
        for t in 0..threads {
            let (log, stop, barrier) = (&log, &stop, &barrier);
            s.spawn(move || {
                barrier.wait();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let lsn = log.append(&[record(t, i)]).expect("append");
                    log.commit(lsn).expect("commit");
                    i += 1;
                }
            });
        }
        barrier.wait();
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        started
    });
    let elapsed = started.elapsed().as_secs_f64();
    let after = log.stats();
    log.close().expect("close");
    let stats = LogStats {
        records: after.records - before.records,
        commits: after.commits - before.commits,
        flushes: after.flushes - before.flushes,
        fsyncs: after.fsyncs - before.fsyncs,
        bytes_written: after.bytes_written - before.bytes_written,
        padding_bytes: after.padding_bytes - before.padding_bytes,
        full_log_waits: after.full_log_waits - before.full_log_waits,
        checkpoints: after.checkpoints - before.checkpoints,
    };
    Run {
        commits: stats.commits,
        seconds: elapsed,
        stats,
    }
}

fn median_by_rate(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.commits_per_second().total_cmp(&b.commits_per_second()));
    runs[runs.len() / 2]
}

/// Writes `bytes` of redo in large batches (few fsyncs), drops the log without closing
/// (a crash after the last flush), and times `Log::open`.
fn recovery_run(keys: &MemoryKeyProvider, encrypt: bool, bytes: u64) -> (f64, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path(), keys, encrypt, bytes);
    let started = Instant::now();
    let (log, report) =
        Log::open(Arc::new(StdVfs), dir.path(), config(encrypt), Some(keys)).expect("open");
    let seconds = started.elapsed().as_secs_f64();
    drop(log);
    (seconds, report.records.len())
}

fn fill(dir: &Path, keys: &MemoryKeyProvider, encrypt: bool, bytes: u64) {
    let log = Log::create(Arc::new(StdVfs), dir, config(encrypt), Some(keys)).expect("create");
    let batch: Vec<Record> = (0..1000).map(|i| record(0, i)).collect();
    while log.current_lsn() < bytes {
        let lsn = log.append(&batch).expect("append");
        log.flush(lsn).expect("flush");
    }
    drop(log);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().map_or(2.0, |a| a.parse().expect("seconds"));
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("rounds"));
    let keys = MemoryKeyProvider::new();
    keys.add_random(1, 1, 256).expect("key");

    println!(
        "wal_bench: flush_log_at_commit = 1, one {}-byte record per commit, {seconds} s per \
         run, median of {rounds} rounds, AES hardware: {}",
        PAYLOAD + 10,
        strongbox_keyring::cipher::hardware_accelerated()
    );
    println!();
    println!(
        "| threads | log       | commits/s | fsyncs/commit | commits/fsync | bytes written/commit | encrypted/plain |"
    );
    println!(
        "|--------:|-----------|----------:|--------------:|--------------:|---------------------:|----------------:|"
    );
    let mut single_thread = [0.0f64; 2];
    for threads in THREADS {
        let mut runs = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for encrypt in [false, true] {
                runs[usize::from(encrypt)]
                    .push(commit_run(&keys, encrypt, threads, seconds, false));
            }
        }
        let [plain, encrypted] = runs.map(median_by_rate);
        for (name, run) in [("plain", plain), ("encrypted", encrypted)] {
            let s = run.stats;
            let ratio = if name == "encrypted" {
                format!(
                    "{:.3}",
                    encrypted.commits_per_second() / plain.commits_per_second()
                )
            } else {
                String::new()
            };
            println!(
                "| {threads:>7} | {name:<9} | {:>9.0} | {:>13.3} | {:>13.2} | {:>20.0} | {ratio:>15} |",
                run.commits_per_second(),
                s.fsyncs as f64 / s.commits as f64,
                s.commits as f64 / s.fsyncs.max(1) as f64,
                s.bytes_written as f64 / s.commits as f64,
            );
        }
        if threads == 1 {
            single_thread = [plain.commits_per_second(), encrypted.commits_per_second()];
        } else if threads == 16 {
            println!(
                "|         | speed-up 16 vs 1 thread: plain {:.1}×, encrypted {:.1}× |||||",
                plain.commits_per_second() / single_thread[0],
                encrypted.commits_per_second() / single_thread[1],
            );
        }
    }

    println!();
    println!(
        "CPU path only (MemVfs: no disk, fsync free), {seconds} s per run, median of {rounds}:"
    );
    println!();
    println!("| threads | plain commits/s | encrypted commits/s | encrypted/plain |");
    println!("|--------:|----------------:|--------------------:|----------------:|");
    for threads in [1, 4] {
        let mut runs = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for encrypt in [false, true] {
                runs[usize::from(encrypt)].push(commit_run(&keys, encrypt, threads, seconds, true));
            }
        }
        let [plain, encrypted] = runs.map(median_by_rate);
        println!(
            "| {threads:>7} | {:>15.0} | {:>19.0} | {:>15.3} |",
            plain.commits_per_second(),
            encrypted.commits_per_second(),
            encrypted.commits_per_second() / plain.commits_per_second()
        );
    }

    const TAIL: u64 = 64 << 20;
    println!();
    println!("| recovery scan of a 64 MiB tail | seconds | records | MiB/s |");
    println!("|--------------------------------|--------:|--------:|------:|");
    for encrypt in [false, true] {
        let mut times = Vec::new();
        let mut records = 0;
        for _ in 0..rounds {
            let (t, n) = recovery_run(&keys, encrypt, TAIL);
            times.push(t);
            records = n;
        }
        times.sort_by(f64::total_cmp);
        let t = times[times.len() / 2];
        println!(
            "| {:<30} | {t:>7.3} | {records:>7} | {:>5.0} |",
            if encrypt { "encrypted" } else { "plain" },
            TAIL as f64 / t / (1 << 20) as f64
        );
    }
}
