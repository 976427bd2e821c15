//! `commit_bench`: what durability costs the whole engine (issue 4), on real files.
//!
//! `wal_bench` measures the redo log alone; this drives `Db` — undo logs, B+tree
//! mini-transactions, the commit record — so each commit carries the redo the engine
//! really writes.
//!
//! 1. **Group commit.** Commits per second with 1, 4 and 16 committing threads at
//!    `flush_log_at_commit = 1`, and fsyncs per commit (from `Db::stats().log`). Two
//!    workloads: one `Db::put` of a 100-byte value per transaction, and transactions of 3
//!    puts across 2 tables. Each thread overwrites keys of its own range, so no thread
//!    waits for another's key lock.
//! 2. **Log encryption.** The same runs with `encrypt_log` on and off; tables are
//!    encrypted in both, so only the redo log differs. Repeated at `flush_log_at_commit`
//!    2 and 0, where no fsync waits at commit and the cipher's CPU cost can show.
//! 3. **Recovery.** A child process (this binary, `__fill`) fills a database's redo log
//!    past the last checkpoint and is killed with `SIGKILL` once the tail reaches 64 MiB;
//!    the parent then times the redo scan alone (`Log::open` on a copy of the log) and a
//!    full `Db::open` (scan, redo, rollback of the transactions the kill cut off,
//!    checkpoints). The files are still in the OS page cache: this is the CPU and
//!    write-back cost of recovery, not a cold read.
//!
//! How the noise is handled (docs/BENCHMARKS.md): both databases of a flush policy are open
//! at once and every configuration runs one slice per round, round after round, with the
//! plain/encrypted order flipped from one slice pair to the next. A ratio is computed
//! within each round (encrypted/plain, 16 threads/1 thread) and the median of those is
//! reported, so a disk that drifts during the run moves both sides of a ratio alike. Before
//! every slice the database takes a checkpoint (untimed), so no slice pays for one. The
//! fsync latency of the directory's disk is probed before and after the commit runs, with
//! idle and with busy CPUs, for a file that is overwritten and one that grows.
//!
//! Defaults: 2 s slices, 5 rounds, policies 1, 2 and 0, a 64 MiB tail, 3 recovery runs per
//! log. `--quick`: 0.3 s slices, 2 rounds, an 8 MiB tail, 1 recovery run — a smoke test.
//!
//! ```text
//! cargo run --release -p strongbox-bench --bin commit_bench -- [--quick] [--dir PATH]
//!     [--seconds S] [--rounds N] [--policies 1,2,0] [--tail-mib M] [--recovery-rounds N]
//!     [--no-commit] [--no-recovery]
//! cargo run --release -p strongbox-bench --bin commit_bench -- profile <put1|txn3> <threads>
//!     <policy 0|1|2> <plain|encrypted> <seconds> [--dir PATH]      one run, for `perf record`
//! ```
//!
//! Everything lives in a temporary directory under `--dir` (default: the system temporary
//! directory, `$TMPDIR` or `/tmp`): point it at the disk you want to measure.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use strongbox_bench::stats::{median, min_max};

use rand::{RngExt, SeedableRng};
use strongbox_engine::{Db, EncryptTables, FlushAtCommit, LogStats, Options, Table, TableOptions};
use strongbox_keyring::openssl_enc::EncSettings;
use strongbox_keyring::provider::FileKeyProvider;
use strongbox_keyring::source::KeyFileSource;
use strongbox_wal::io::StdVfs;
use strongbox_wal::{Log, LogConfig};

const THREADS: [usize; 3] = [1, 4, 16];
const WORKLOADS: [Workload; 2] = [Workload::Put1, Workload::Txn3];
const VALUE_LEN: usize = 100;
/// Keys each committing thread owns in each table (loaded before the runs).
const KEYS_PER_THREAD: u64 = 2_000;
/// Keys per table of the recovery database, and its writer threads.
const FILL_KEYS: u64 = 100_000;
const FILL_THREADS: usize = 4;
/// Redo segments of the recovery database: 8 of these make the log's capacity, and the
/// checkpoint thread fires at 75% of it (768 MiB), far above the tail.
const FILL_SEGMENT: u64 = 128 << 20;
const MIB: f64 = (1 << 20) as f64;

// ---- set-up -----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// `Db::put`: one 100-byte value, its own transaction.
    Put1,
    /// One transaction: two puts in table `a`, one in table `b`.
    Txn3,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Put1 => "1 put",
            Workload::Txn3 => "3 puts, 2 tables",
        }
    }
}

/// The redo log's encryption; tables are encrypted either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogKind {
    Plain,
    Encrypted,
}

impl LogKind {
    fn name(self) -> &'static str {
        match self {
            LogKind::Plain => "plain",
            LogKind::Encrypted => "encrypted",
        }
    }

    fn parse(text: &str) -> LogKind {
        match text {
            "plain" => LogKind::Plain,
            "encrypted" => LogKind::Encrypted,
            _ => panic!("{text:?} is not plain or encrypted"),
        }
    }

    fn encrypted(self) -> bool {
        self == LogKind::Encrypted
    }
}

/// A MariaDB-format key file with a random 256-bit key 1, readable only by the owner. A
/// file rather than an in-memory keyring because the crash child must use the same key.
fn write_keyfile(path: &Path) {
    let hex: String = (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect();
    let mut open = OpenOptions::new();
    open.write(true).create_new(true).mode(0o600);
    open.open(path)
        .and_then(|mut file| file.write_all(format!("1;{hex}\n").as_bytes()))
        .expect("write the key file");
}

fn options(keyfile: &Path, log: LogKind, policy: FlushAtCommit) -> Options {
    Options::new()
        .keyfile(keyfile)
        .encrypt_tables(EncryptTables::On)
        .encrypt_log(log.encrypted())
        .flush_log_at_commit(policy)
}

fn key(thread: usize, i: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(b"key0");
    key[4..8].copy_from_slice(&(thread as u32).to_be_bytes());
    key[8..].copy_from_slice(&i.to_be_bytes());
    key
}

/// A value that differs from the key's previous one (so every put changes its page).
fn value(i: u64) -> [u8; VALUE_LEN] {
    let mut value = [b'v'; VALUE_LEN];
    value[..8].copy_from_slice(&i.to_be_bytes());
    value
}

struct BenchDb {
    db: Db,
    a: Table,
    b: Table,
}

impl BenchDb {
    /// A new database with tables `a` and `b`, each holding `keys` keys for each of
    /// `threads` threads, checkpointed.
    fn create(dir: &Path, options: Options, threads: usize, keys: u64) -> BenchDb {
        let db = Db::open(dir, options).expect("open");
        let a = db.create_table("a", TableOptions::default()).expect("a");
        let b = db.create_table("b", TableOptions::default()).expect("b");
        for table in [&a, &b] {
            for t in 0..threads {
                for chunk in (0..keys).collect::<Vec<_>>().chunks(5_000) {
                    let mut txn = db.begin().expect("begin");
                    for &i in chunk {
                        txn.put(table, &key(t, i), &value(i)).expect("load");
                    }
                    txn.commit().expect("commit");
                }
            }
        }
        db.checkpoint().expect("checkpoint");
        BenchDb { db, a, b }
    }

    /// One transaction of `workload` by thread `t`; `i` counts its transactions.
    fn commit_one(&self, workload: Workload, t: usize, i: u64, keys: u64) {
        let v = value(i);
        match workload {
            Workload::Put1 => self.db.put(&self.a, &key(t, i % keys), &v).expect("put"),
            Workload::Txn3 => {
                let j = i % (keys / 2);
                let mut txn = self.db.begin().expect("begin");
                txn.put(&self.a, &key(t, 2 * j), &v).expect("put");
                txn.put(&self.a, &key(t, 2 * j + 1), &v).expect("put");
                txn.put(&self.b, &key(t, j), &v).expect("put");
                txn.commit().expect("commit");
            }
        }
    }
}

// ---- one measured slice -----------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    commits: u64,
    seconds: f64,
    /// The redo log's counters over the slice.
    log: LogStats,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.commits as f64 / self.seconds
    }
}

fn log_delta(after: LogStats, before: LogStats) -> LogStats {
    LogStats {
        records: after.records - before.records,
        commits: after.commits - before.commits,
        flushes: after.flushes - before.flushes,
        fsyncs: after.fsyncs - before.fsyncs,
        bytes_written: after.bytes_written - before.bytes_written,
        padding_bytes: after.padding_bytes - before.padding_bytes,
        full_log_waits: after.full_log_waits - before.full_log_waits,
        checkpoints: after.checkpoints - before.checkpoints,
    }
}

/// `threads` threads commit `workload` transactions for `seconds`. `slice` numbers the
/// call, so values differ from one slice to the next.
fn run_slice(
    bench: &BenchDb,
    workload: Workload,
    threads: usize,
    seconds: f64,
    slice: u64,
) -> Sample {
    bench.db.checkpoint().expect("checkpoint");
    let before = bench.db.stats().log;
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let (started, commits) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let mut i = slice << 32;
                    while !stop.load(Ordering::Relaxed) {
                        bench.commit_one(workload, t, i, KEYS_PER_THREAD);
                        i += 1;
                    }
                    i - (slice << 32)
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        let commits: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
        (started, commits)
    });
    let seconds = started.elapsed().as_secs_f64();
    Sample {
        commits,
        seconds,
        log: log_delta(bench.db.stats().log, before),
    }
}

// ---- statistics -------------------------------------------------------------------------

/// Per-round ratios `top[r] / bottom[r]`.
fn ratios(top: &[Sample], bottom: &[Sample]) -> Vec<f64> {
    top.iter()
        .zip(bottom)
        .map(|(t, b)| t.rate() / b.rate())
        .collect()
}

/// Sums of the log counters over every slice, and the commits.
fn totals(samples: &[Sample]) -> (u64, LogStats) {
    let mut sum = LogStats::default();
    let mut commits = 0;
    for s in samples {
        commits += s.commits;
        sum.records += s.log.records;
        sum.fsyncs += s.log.fsyncs;
        sum.flushes += s.log.flushes;
        sum.bytes_written += s.log.bytes_written;
        sum.checkpoints += s.log.checkpoints;
    }
    (commits, sum)
}

/// Median microseconds of a 512-byte `pwrite` + `fdatasync` in `dir` — what one redo flush
/// of a lone commit costs the disk at best — for two files, alternating so both see the same
/// disk: one whose first 32 KiB are written and synced beforehand and then overwritten, and
/// one that every write extends, as the redo log's writes do (segments are not
/// preallocated), so that each fdatasync must also make the new file size durable.
fn fsync_probe(dir: &Path, count: usize) -> (f64, f64) {
    let open = |name: &str| {
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join(name))
            .expect("probe file")
    };
    let (overwritten, extended) = (open("probe-overwrite"), open("probe-extend"));
    let block = [0x5Au8; 512];
    for i in 0..64 {
        overwritten.write_at(&block, i * 512).expect("write");
    }
    overwritten.sync_all().expect("fsync");
    let mut times = [Vec::with_capacity(count), Vec::with_capacity(count)];
    for i in 0..count {
        for (which, (file, offset)) in [(&overwritten, i % 64 * 512), (&extended, i * 512)]
            .into_iter()
            .enumerate()
        {
            let started = Instant::now();
            file.write_at(&block, offset as u64).expect("write");
            file.sync_data().expect("fdatasync");
            times[which].push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    for name in ["probe-overwrite", "probe-extend"] {
        std::fs::remove_file(dir.join(name)).expect("remove probe");
    }
    let [overwrite, extend] = times.map(median);
    (overwrite, extend)
}

/// The fsync probe twice: with the CPUs otherwise idle, and with every CPU kept busy by a
/// spinning thread. On a virtual machine an idle vCPU can take far longer to notice an IO
/// completion than a busy one; the difference is part of why many committing threads gain
/// more than their commits per fsync.
fn print_fsync_probe(dir: &Path, when: &str) {
    let (overwrite, extend) = fsync_probe(dir, 200);
    let stop = AtomicBool::new(false);
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (busy_overwrite, busy_extend) = std::thread::scope(|s| {
        for _ in 0..cpus {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        let probe = fsync_probe(dir, 200);
        stop.store(true, Ordering::Relaxed);
        probe
    });
    println!(
        "fsync probe {when} (512-byte pwrite + fdatasync, median of 200): idle CPUs: \
         overwrite {overwrite:.0} µs, extending the file {extend:.0} µs; {cpus} spinning \
         threads: overwrite {busy_overwrite:.0} µs, extending {busy_extend:.0} µs"
    );
}

/// The file system holding `dir`, from `/proc/self/mountinfo` (longest mount-point prefix).
fn file_system(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return "unknown".into();
    };
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount), Some(fs), Some(source)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
        else {
            continue;
        };
        if dir.starts_with(mount) && best.as_ref().is_none_or(|(len, _)| mount.len() >= *len) {
            best = Some((
                mount.len(),
                format!("{fs} on {source} (mounted at {mount})"),
            ));
        }
    }
    best.map_or("unknown".into(), |(_, text)| text)
}

// ---- sections 1 and 2: commit throughput ------------------------------------------------

/// `samples[workload][threads][log]`: one sample per round.
type Grid = Vec<Vec<[Vec<Sample>; 2]>>;

/// One flush policy: the plain-log and encrypted-log databases, every configuration
/// interleaved round by round. Returns the grid for the summary.
fn commit_section(settings: &Settings, root: &Path, keyfile: &Path, policy: FlushAtCommit) -> Grid {
    let level = policy.level();
    let dbs = [LogKind::Plain, LogKind::Encrypted].map(|log| {
        let dir = root.join(format!("commit-{level}-{}", log.name()));
        BenchDb::create(&dir, options(keyfile, log, policy), 16, KEYS_PER_THREAD)
    });
    let mut slice = 0;
    // Warm-up: fault in code paths and pages of every configuration.
    for workload in WORKLOADS {
        for threads in THREADS {
            for db in &dbs {
                slice += 1;
                run_slice(db, workload, threads, settings.seconds.min(0.3), slice);
            }
        }
    }
    let mut grid: Grid = vec![vec![[Vec::new(), Vec::new()]; THREADS.len()]; WORKLOADS.len()];
    let mut flip = 0;
    for _ in 0..settings.rounds {
        for (w, workload) in WORKLOADS.into_iter().enumerate() {
            for (t, threads) in THREADS.into_iter().enumerate() {
                flip += 1;
                let order = if flip % 2 == 0 { [0, 1] } else { [1, 0] };
                for log in order {
                    slice += 1;
                    let sample = run_slice(&dbs[log], workload, threads, settings.seconds, slice);
                    grid[w][t][log].push(sample);
                }
            }
        }
    }
    for db in &dbs {
        db.db.close().expect("close");
    }
    print_commit_table(settings, policy, &grid);
    grid
}

fn print_commit_table(settings: &Settings, policy: FlushAtCommit, grid: &Grid) {
    println!();
    println!(
        "flush_log_at_commit = {}: {} s slices, {} rounds, medians (ratios: median of the \
         per-round ratios, [min–max])",
        policy.level(),
        settings.seconds,
        settings.rounds
    );
    println!();
    println!(
        "| workload | threads | plain log commits/s | encrypted log commits/s | encrypted/plain \
         | vs 1 thread, plain | vs 1 thread, encrypted | fsyncs/commit (plain, enc) \
         | redo records/commit | redo bytes/commit (plain, enc) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (w, workload) in WORKLOADS.into_iter().enumerate() {
        for (t, threads) in THREADS.into_iter().enumerate() {
            let [plain, enc] = &grid[w][t];
            let rate = |s: &[Sample]| median(s.iter().map(Sample::rate).collect());
            let enc_ratio = ratios(enc, plain);
            let (lo, hi) = min_max(&enc_ratio);
            let speedup = |log: usize| {
                if t == 0 {
                    "1".to_string()
                } else {
                    let r = ratios(&grid[w][t][log], &grid[w][0][log]);
                    let (lo, hi) = min_max(&r);
                    format!("{:.2}× [{lo:.2}–{hi:.2}]", median(r))
                }
            };
            let (pc, pl) = totals(plain);
            let (ec, el) = totals(enc);
            // Under policy 0 the background flusher writes once a second, so the bytes
            // written during a slice say little about the bytes each commit appends.
            let bytes = if policy == FlushAtCommit::OncePerInterval {
                "—".to_string()
            } else {
                format!(
                    "{:.0}, {:.0}",
                    pl.bytes_written as f64 / pc as f64,
                    el.bytes_written as f64 / ec as f64
                )
            };
            println!(
                "| {} | {threads} | {:.0} | {:.0} | {:.3} [{lo:.3}–{hi:.3}] | {} | {} \
                 | {:.3}, {:.3} | {:.1} | {bytes} |",
                workload.name(),
                rate(plain),
                rate(enc),
                median(enc_ratio),
                speedup(0),
                speedup(1),
                pl.fsyncs as f64 / pc as f64,
                el.fsyncs as f64 / ec as f64,
                el.records as f64 / ec as f64,
            );
        }
    }
    println!();
    // The disk's latency drifts, sometimes by an order of magnitude within a run; the
    // lone committer's time per commit (one fsync each) shows where each round stood.
    for (w, workload) in WORKLOADS.into_iter().enumerate() {
        let per_round: Vec<String> = grid[w][0][0]
            .iter()
            .map(|s| format!("{:.0}", 1e6 / s.rate()))
            .collect();
        println!(
            "µs per commit by round, 1 thread, plain log, {}: {}",
            workload.name(),
            per_round.join(" ")
        );
    }
    let inside: u64 = grid
        .iter()
        .flatten()
        .flatten()
        .flatten()
        .map(|s| s.log.checkpoints)
        .sum();
    println!("checkpoints taken inside measured slices: {inside}");
}

// ---- section 3: recovery after SIGKILL ----------------------------------------------------

struct RecoverySample {
    /// Redo bytes from the checkpoint to the end of the last complete record.
    tail: u64,
    records: usize,
    scan_seconds: f64,
    open_seconds: f64,
    redone: usize,
    rolled_back: usize,
}

/// The crash child: a new database in `dir`, loaded and checkpointed, then `FILL_THREADS`
/// threads commit 3-put transactions on random keys until the process is killed. Prints
/// `ready` after the checkpoint and `redo <bytes written since>` every 10 ms.
fn fill_child(dir: &Path, keyfile: &Path, log: LogKind) {
    // Policy 2: each commit is written to the OS before it returns, so a SIGKILL loses no
    // acknowledged commit, and the fill is not held back by fsyncs.
    let options = options(keyfile, log, FlushAtCommit::WriteAtCommit).log_file_size(FILL_SEGMENT);
    let bench = BenchDb::create(dir, options, 1, FILL_KEYS);
    let baseline = bench.db.stats().log.bytes_written;
    println!("ready");
    std::thread::scope(|s| {
        for t in 0..FILL_THREADS {
            let bench = &bench;
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
                let mut i = 0u64;
                loop {
                    let v = value(i);
                    let mut txn = bench.db.begin().expect("begin");
                    for table in [&bench.a, &bench.a, &bench.b] {
                        // Thread t owns the keys ≡ t (mod FILL_THREADS): no lock waits.
                        let n = rng.random_range(0..FILL_KEYS / FILL_THREADS as u64);
                        let k = key(0, n * FILL_THREADS as u64 + t as u64);
                        txn.put(table, &k, &v).expect("put");
                    }
                    txn.commit().expect("commit");
                    i += 1;
                }
            });
        }
        loop {
            std::thread::sleep(Duration::from_millis(10));
            println!("redo {}", bench.db.stats().log.bytes_written - baseline);
        }
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

fn recovery_run(
    root: &Path,
    keyfile: &Path,
    log: LogKind,
    tail: u64,
    run: usize,
) -> RecoverySample {
    let dir = root.join(format!("crash-{}-{run}", log.name()));
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .arg("__fill")
        .arg(&dir)
        .arg(keyfile)
        .arg(log.name())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the fill child");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for line in lines {
        let line = line.expect("read child");
        let written: u64 = line
            .strip_prefix("redo ")
            .map_or(0, |n| n.parse().expect("bytes"));
        if written >= tail {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");

    // The redo scan alone, on a copy of the log (opening it starts a new epoch).
    let copy = root.join(format!("scan-{}-{run}", log.name()));
    copy_dir(&dir.join("redo"), &copy);
    let source = KeyFileSource::new(keyfile, None, EncSettings::default()).expect("key file");
    let (keys, _) = FileKeyProvider::open(source).expect("keyring");
    let config = LogConfig {
        encrypt: log.encrypted(),
        ..LogConfig::default()
    };
    let started = Instant::now();
    let (scanned, report) = Log::open(Arc::new(StdVfs), &copy, config, Some(&keys)).expect("scan");
    let scan_seconds = started.elapsed().as_secs_f64();
    drop(scanned);
    std::fs::remove_dir_all(&copy).expect("remove copy");

    // Full recovery: what a restart after the crash costs until `Db::open` returns.
    let started = Instant::now();
    let db = Db::open(&dir, options(keyfile, log, FlushAtCommit::EveryCommit)).expect("recover");
    let open_seconds = started.elapsed().as_secs_f64();
    let recovered = db.recovery();
    db.close().expect("close");
    std::fs::remove_dir_all(&dir).expect("remove");
    RecoverySample {
        tail: report.end_lsn - report.start_lsn,
        records: report.records.len(),
        scan_seconds,
        open_seconds,
        redone: recovered.redo,
        rolled_back: recovered.rolled_back,
    }
}

fn recovery_section(settings: &Settings, root: &Path, keyfile: &Path) -> [Vec<RecoverySample>; 2] {
    let mut runs = [Vec::new(), Vec::new()];
    for run in 0..settings.recovery_rounds {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for log in order {
            let kind = [LogKind::Plain, LogKind::Encrypted][log];
            runs[log].push(recovery_run(root, keyfile, kind, settings.tail, run));
        }
    }
    println!();
    println!(
        "Recovery after SIGKILL with a {} MiB redo tail, {} runs each (medians; [min–max]):",
        settings.tail >> 20,
        settings.recovery_rounds
    );
    println!();
    println!(
        "| log | tail MiB | redo records | scan only (s) | scan MiB/s | Db::open (s) \
         | page changes redone | txns rolled back |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (log, samples) in runs.iter().enumerate() {
        let tail = median(samples.iter().map(|s| s.tail as f64).collect());
        let scan: Vec<f64> = samples.iter().map(|s| s.scan_seconds).collect();
        let open: Vec<f64> = samples.iter().map(|s| s.open_seconds).collect();
        let ((slo, shi), (olo, ohi)) = (min_max(&scan), min_max(&open));
        let (scan, open) = (median(scan), median(open));
        println!(
            "| {} | {:.1} | {:.0} | {scan:.3} [{slo:.3}–{shi:.3}] | {:.0} | {open:.3} \
             [{olo:.3}–{ohi:.3}] | {:.0} | {:.0} |",
            [LogKind::Plain, LogKind::Encrypted][log].name(),
            tail / MIB,
            median(samples.iter().map(|s| s.records as f64).collect()),
            tail / MIB / scan,
            median(samples.iter().map(|s| s.redone as f64).collect()),
            median(samples.iter().map(|s| s.rolled_back as f64).collect()),
        );
    }
    let paired: Vec<f64> = runs[1]
        .iter()
        .zip(&runs[0])
        .map(|(e, p)| e.open_seconds / p.open_seconds)
        .collect();
    let scan_paired: Vec<f64> = runs[1]
        .iter()
        .zip(&runs[0])
        .map(|(e, p)| e.scan_seconds / p.scan_seconds)
        .collect();
    println!(
        "| encrypted/plain | | | {:.2} | | {:.2} | | |",
        median(scan_paired),
        median(paired)
    );
    runs
}

// ---- command line -----------------------------------------------------------------------

struct Settings {
    dir: Option<PathBuf>,
    seconds: f64,
    rounds: usize,
    recovery_rounds: usize,
    tail: u64,
    policies: Vec<FlushAtCommit>,
    commit: bool,
    recovery: bool,
}

fn parse_settings(args: &[String]) -> Settings {
    let mut settings = Settings {
        dir: None,
        seconds: 2.0,
        rounds: 5,
        recovery_rounds: 3,
        tail: 64 << 20,
        policies: vec![
            FlushAtCommit::EveryCommit,
            FlushAtCommit::WriteAtCommit,
            FlushAtCommit::OncePerInterval,
        ],
        commit: true,
        recovery: true,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => {
                settings.seconds = 0.3;
                settings.rounds = 2;
                settings.recovery_rounds = 1;
                settings.tail = 8 << 20;
            }
            "--dir" => settings.dir = Some(PathBuf::from(value())),
            "--seconds" => settings.seconds = value().parse().expect("seconds"),
            "--rounds" => settings.rounds = value().parse().expect("rounds"),
            "--recovery-rounds" => settings.recovery_rounds = value().parse().expect("runs"),
            "--tail-mib" => settings.tail = value().parse::<u64>().expect("MiB") << 20,
            "--policies" => {
                settings.policies = value()
                    .split(',')
                    .map(|p| {
                        let level = p.parse().expect("policy");
                        FlushAtCommit::from_level(level).expect("0, 1 or 2")
                    })
                    .collect();
            }
            "--no-commit" => settings.commit = false,
            "--no-recovery" => settings.recovery = false,
            other => panic!("unknown argument {other:?} (see the doc comment of commit_bench.rs)"),
        }
    }
    settings
}

fn temp_root(dir: Option<&Path>) -> tempfile::TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix("commit_bench-");
    match dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .expect("temporary directory")
}

/// `profile <put1|txn3> <threads> <policy> <plain|encrypted> <seconds> [--dir PATH]`: one
/// configuration, one slice, for `perf record`.
fn profile(args: &[String]) {
    let [workload, threads, policy, log, seconds, rest @ ..] = args else {
        panic!("profile <put1|txn3> <threads> <policy 0|1|2> <plain|encrypted> <seconds>");
    };
    let workload = match workload.as_str() {
        "put1" => Workload::Put1,
        "txn3" => Workload::Txn3,
        other => panic!("{other:?} is not put1 or txn3"),
    };
    let threads: usize = threads.parse().expect("threads");
    let policy = FlushAtCommit::from_level(policy.parse().expect("policy")).expect("0, 1 or 2");
    let log = LogKind::parse(log);
    let seconds: f64 = seconds.parse().expect("seconds");
    let settings = parse_settings(rest);
    let root = temp_root(settings.dir.as_deref());
    let keyfile = root.path().join("keys.txt");
    write_keyfile(&keyfile);
    let bench = BenchDb::create(
        &root.path().join("db"),
        options(&keyfile, log, policy),
        threads,
        KEYS_PER_THREAD,
    );
    let s = run_slice(&bench, workload, threads, seconds, 1);
    println!(
        "{} × {threads} threads, policy {}, {} log: {:.0} commits/s, {:.3} fsyncs/commit, \
         {:.1} records/commit, {:.0} bytes/commit, {:.1} µs/commit per thread",
        workload.name(),
        policy.level(),
        log.name(),
        s.rate(),
        s.log.fsyncs as f64 / s.commits as f64,
        s.log.records as f64 / s.commits as f64,
        s.log.bytes_written as f64 / s.commits as f64,
        1e6 * threads as f64 / s.rate(),
    );
    bench.db.close().expect("close");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__fill") => {
            let [_, dir, keyfile, log] = args.as_slice() else {
                panic!("__fill <dir> <keyfile> <plain|encrypted>");
            };
            return fill_child(Path::new(dir), Path::new(keyfile), LogKind::parse(log));
        }
        Some("profile") => return profile(&args[1..]),
        _ => {}
    }
    let settings = parse_settings(&args);
    let root = temp_root(settings.dir.as_deref());
    let keyfile = root.path().join("keys.txt");
    write_keyfile(&keyfile);
    println!(
        "commit_bench: directory {} — {}; {} CPUs; AES hardware: {}",
        root.path().display(),
        file_system(root.path()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        strongbox_keyring::cipher::hardware_accelerated()
    );
    println!(
        "tables encrypted (AES-CTR, 256-bit key 1) in every run; only encrypt_log differs; \
         {VALUE_LEN}-byte values, {KEYS_PER_THREAD} keys per thread and table"
    );
    print_fsync_probe(root.path(), "before");

    let mut grids = Vec::new();
    if settings.commit {
        for &policy in &settings.policies {
            grids.push((
                policy,
                commit_section(&settings, root.path(), &keyfile, policy),
            ));
        }
        println!();
        print_fsync_probe(root.path(), "after the commit runs");
    }
    let recovery = settings
        .recovery
        .then(|| recovery_section(&settings, root.path(), &keyfile));

    println!();
    println!("Summary (targets of issue 4):");
    println!();
    println!("| measure | workload | plain log | encrypted log | target |");
    println!("|---|---|---:|---:|---|");
    for (policy, grid) in &grids {
        for (w, workload) in WORKLOADS.into_iter().enumerate() {
            let last = THREADS.len() - 1;
            if *policy == FlushAtCommit::EveryCommit {
                let speedup = |log: usize| median(ratios(&grid[w][last][log], &grid[w][0][log]));
                println!(
                    "| 16 threads / 1 thread, policy 1 | {} | {:.2}× | {:.2}× | ≥ 4× |",
                    workload.name(),
                    speedup(0),
                    speedup(1)
                );
                let per_fsync = |log: usize| {
                    let (commits, stats) = totals(&grid[w][last][log]);
                    commits as f64 / stats.fsyncs as f64
                };
                println!(
                    "| commits per fsync at 16 threads, policy 1 | {} | {:.2} | {:.2} | |",
                    workload.name(),
                    per_fsync(0),
                    per_fsync(1)
                );
            }
            for (t, threads) in THREADS.into_iter().enumerate() {
                let ratio = median(ratios(&grid[w][t][1], &grid[w][t][0]));
                println!(
                    "| log-encryption overhead, policy {}, {threads} thread(s) | {} | | {:+.1}% | ≤ 3% |",
                    policy.level(),
                    workload.name(),
                    (1.0 - ratio) * 100.0
                );
            }
        }
    }
    if let Some(runs) = recovery {
        let open = |log: usize| median(runs[log].iter().map(|s| s.open_seconds).collect());
        println!(
            "| recovery (Db::open) after SIGKILL, {} MiB tail | 3 puts, random keys | {:.2} s | {:.2} s | — |",
            settings.tail >> 20,
            open(0),
            open(1)
        );
    }
}
