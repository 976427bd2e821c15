//! `rotation_bench`: what background key rotation costs — MariaDB's encryption threads
//! (`engine/src/rotation/`), measured on real files.
//!
//! 1. **Re-encryption throughput, unthrottled.** A database holding `--size-mib` MiB of
//!    table pages (16 KiB), spread over `--tables` tables, is built once per algorithm
//!    (AES-CTR, AES-GCM). Each run reopens it with a small buffer pool (`--pool-mib`), so
//!    the pass must read every page, rotates key 1 with [`RotationPolicy::Reencrypt`] at
//!    `encryption_rotation_iops = 0`, and times `rotate_key` until `wait_for_encryption`
//!    returns, with 1, 2 and 4 encryption threads. Throughput = pages of the spaces under
//!    key 1 (tables, system, temporary) / that wall time. A pass works on one tablespace at a
//!    time and a tablespace is worked on by one thread, which is why the data is split over
//!    several tables. The files are served from the OS page cache (dropping it needs root);
//!    `--direct` opens the tablespace files with `O_DIRECT` instead, so every read is a
//!    device read (`benches/src/direct_io.rs`).
//! 2. **Foreground cost of a throttled rotation.** A fixed mixed workload (`--clients`
//!    threads, `--write-pct`% puts, the rest gets, uniformly random keys over every table)
//!    runs for `--seconds` on the AES-CTR database, (a) with no rotation and (b) right after
//!    `rotate_key` started a pass at `encryption_rotation_iops = 100` (MariaDB's default)
//!    with `--rotation-threads` threads. Every slice reopens the database with the same
//!    options and warms it up for `--warmup` seconds untimed; the only difference is the
//!    `rotate_key` call. After a (b) slice the unfinished pass is run to its end unthrottled
//!    (untimed), so every slice starts from a database with no pass pending and every (b)
//!    from one generation — otherwise the fifth rotation would find all four generation
//!    slots taken, add none and not restart the pass (rule 4 of `plan.rs`), and later (b)
//!    slices would continue an old pass instead of starting one. The arms alternate, the
//!    order rotating from round to round (ab, ba, ... or abc, bca, cab, ...), and ratios to
//!    (a) are taken within each round. The database is large enough that the pass
//!    cannot finish in a slice (at 100 IOs/s and two IOs per page, about 50 pages/s); the
//!    bench says if it did. `--placebo` adds a control arm (c): no rotation, but a thread
//!    that wakes 100 times a second and does nothing, to tell what the rotation's IO and
//!    CPU cost from what mere wake-ups do to a virtual machine's IO latency.
//! 3. **Idle cost.** A small, fully encrypted database is held open for `--idle-seconds`
//!    with 0 and with 4 encryption threads and nothing to rotate; the process's CPU time
//!    (utime + stime from `/proc/self/stat`) and that of the `sb-encrypt-*` threads
//!    (`/proc/self/task/*/stat`) over the window are reported, with the threads' wake-ups
//!    (`Stats::encryption_wakeups`). CPU times are in clock ticks, which Linux reports in
//!    units of 1/100 s (`USER_HZ`), so 10 ms is the resolution.
//!
//! ```text
//! cargo run --release -p strongbox-bench --bin rotation_bench -- [--quick] [--dir PATH]
//!     [--size-mib 200] [--tables 4] [--pool-mib 16] [--threads 1,2,4]
//!     [--algorithms aes_ctr,aes_gcm] [--passes 1] [--direct]
//!     [--seconds 10] [--rounds 3] [--warmup 1] [--clients 4] [--write-pct 25]
//!     [--fg-pool-mib 32] [--rotation-threads 4] [--placebo] [--policy 1] [--idle-seconds 5]
//!     [--no-throughput] [--no-foreground] [--no-idle]
//! ```
//!
//! `--quick`: 32 MiB, 2 s slices, 2 rounds, 1 s idle windows — a smoke test. Everything
//! lives in a temporary directory under `--dir` (default `$TMPDIR` or `/tmp`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use strongbox_bench::stats::{median, min_max};

use rand::{RngExt, SeedableRng};
use strongbox_bench::direct_io::DirectVfs;
use strongbox_engine::{
    Db, EncryptTables, FlushAtCommit, Options, RotationPolicy, Table, TableOptions,
};
use strongbox_keyring::provider::{MemoryKeyProvider, SYSTEM_KEY_ID};
use strongbox_keyring::Algorithm;

const VALUE_LEN: usize = 400;
/// Records per load transaction.
const LOAD_CHUNK: u64 = 2_000;
/// The encryption threads' names start with this (`Rotator::start`).
const ENCRYPT_THREAD_PREFIX: &str = "sb-encrypt";
/// MariaDB's default `innodb_encryption_rotation_iops`.
const DEFAULT_IOPS: u32 = 100;
const MIB: f64 = (1 << 20) as f64;
/// Linux reports CPU times in `/proc` in units of 1/`USER_HZ` s, and `USER_HZ` is 100.
const TICKS_PER_SECOND: f64 = 100.0;

struct Settings {
    dir: Option<PathBuf>,
    size: u64,
    tables: usize,
    pool: usize,
    threads: Vec<usize>,
    algorithms: Vec<Algorithm>,
    passes: usize,
    direct: bool,
    seconds: f64,
    rounds: usize,
    warmup: f64,
    clients: usize,
    write_pct: u32,
    fg_pool: usize,
    rotation_threads: usize,
    placebo: bool,
    policy: FlushAtCommit,
    idle_seconds: f64,
    throughput: bool,
    foreground: bool,
    idle: bool,
}

// ---- the database -----------------------------------------------------------------------

fn key(i: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(b"rotation");
    key[8..].copy_from_slice(&i.to_be_bytes());
    key
}

/// A value that differs with `i` and `salt`, so a put always changes its page.
fn value(i: u64, salt: u64) -> [u8; VALUE_LEN] {
    let mut value = [b'v'; VALUE_LEN];
    value[..8].copy_from_slice(&i.to_be_bytes());
    value[8..16].copy_from_slice(&salt.to_be_bytes());
    value
}

fn table_name(t: usize) -> String {
    format!("t{t}")
}

/// One database directory, its keyring (kept for every reopen) and its shape.
struct Fixture {
    dir: PathBuf,
    keys: Arc<MemoryKeyProvider>,
    algorithm: Algorithm,
    tables: usize,
    records_per_table: u64,
}

impl Fixture {
    /// The settings every open shares: tables encrypted under key 1 (256 bits) with
    /// `algorithm`.
    fn options(&self) -> Options {
        Options::new()
            .key_provider(self.keys.clone())
            .encrypt_tables(EncryptTables::On)
            .encryption_algorithm(self.algorithm)
    }

    /// Builds a database whose `tables` tables hold about `size` bytes of pages together,
    /// waits for the initial passes (new spaces start with one) and closes it.
    fn create(dir: PathBuf, algorithm: Algorithm, size: u64, tables: usize) -> Fixture {
        let keys = Arc::new(MemoryKeyProvider::new());
        keys.add_random(SYSTEM_KEY_ID, 1, 256).expect("key 1");
        let mut fixture = Fixture {
            dir,
            keys,
            algorithm,
            tables,
            records_per_table: 0,
        };
        let options = fixture
            .options()
            .buffer_pool_size(256 << 20)
            .flush_log_at_commit(FlushAtCommit::WriteAtCommit)
            .encryption_threads(1)
            .encryption_rotation_iops(0);
        let db = Db::open(&fixture.dir, options).expect("open");
        let page_size = db.page_size() as u64;
        let per_table = size / tables as u64;
        let mut records = None;
        for t in 0..tables {
            let name = table_name(t);
            let table = db
                .create_table(&name, TableOptions::default())
                .expect("create table");
            let mut loaded = 0;
            // The first table is loaded until its file reaches its share; the others get
            // as many records.
            while records.is_none_or(|n| loaded < n) {
                let mut txn = db.begin().expect("begin");
                for i in loaded..loaded + LOAD_CHUNK {
                    txn.put(&table, &key(i), &value(i, 0)).expect("load");
                }
                txn.commit().expect("commit");
                loaded += LOAD_CHUNK;
                if records.is_none() && pages_of(&db, &name) * page_size >= per_table {
                    records = Some(loaded);
                }
            }
        }
        fixture.records_per_table = records.expect("at least one table");
        db.wait_for_encryption(|_| {}).expect("initial passes");
        db.close().expect("close");
        fixture
    }

    fn open(&self, options: Options) -> (Db, Vec<Table>) {
        let db = Db::open(&self.dir, options).expect("open");
        let tables = (0..self.tables)
            .map(|t| db.table(&table_name(t)).expect("table"))
            .collect();
        (db, tables)
    }
}

/// Pages of the space holding table `name`, page 0 excluded.
fn pages_of(db: &Db, name: &str) -> u64 {
    db.encryption_status()
        .expect("status")
        .iter()
        .find(|row| row.name == name)
        .map_or(0, |row| u64::from(row.pages_total))
}

/// Over the spaces under key 1: (pages, spaces with a pass running).
fn key1_spaces(db: &Db) -> (u64, usize) {
    let rows = db.encryption_status().expect("status");
    let rows = rows.iter().filter(|row| row.key_id == SYSTEM_KEY_ID);
    rows.fold((0, 0), |(total, rotating), row| {
        (
            total + u64::from(row.pages_total),
            rotating + usize::from(row.rotating),
        )
    })
}

// ---- 1. re-encryption throughput --------------------------------------------------------

struct PassRun {
    pages: u64,
    seconds: f64,
    /// Pages read from the files meanwhile (buffer-pool misses).
    pages_read: u64,
    /// Pages the passes rewrote (`Stats::pages_reencrypted`).
    rewritten: u64,
    page_size: usize,
    /// CPU seconds the whole process used meanwhile (every thread, 10 ms resolution).
    cpu: f64,
}

impl PassRun {
    fn pages_per_second(&self) -> f64 {
        self.pages as f64 / self.seconds
    }

    fn mib_per_second(&self) -> f64 {
        self.pages_per_second() * self.page_size as f64 / MIB
    }
}

/// Reopens `fixture` cold and times one unthrottled rotation of key 1 with `threads` threads.
fn rotate_once(fixture: &Fixture, settings: &Settings, threads: usize) -> PassRun {
    let mut options = fixture
        .options()
        .buffer_pool_size(settings.pool)
        .encryption_threads(threads)
        .encryption_rotation_iops(0);
    if settings.direct {
        options = options.vfs(Arc::new(DirectVfs));
    }
    let (db, _) = fixture.open(options);
    fixture.keys.rotate(SYSTEM_KEY_ID).expect("new key version");
    let (pages, rotating) = key1_spaces(&db);
    assert_eq!(
        rotating, 0,
        "a pass was already running before the rotation"
    );
    let before = db.stats();
    let (cpu_before, _, _) = cpu_ticks();
    let started = Instant::now();
    let report = db
        .rotate_key(SYSTEM_KEY_ID, RotationPolicy::Reencrypt)
        .expect("rotate");
    db.wait_for_encryption(|_| {}).expect("wait");
    let seconds = started.elapsed().as_secs_f64();
    let (cpu_after, _, _) = cpu_ticks();
    let after = db.stats();
    for row in db.encryption_status().expect("status") {
        if row.key_id == SYSTEM_KEY_ID {
            assert_eq!(
                (row.rotating, row.min_key_version, row.current_key_version),
                (false, report.version, report.version),
                "{row:?}"
            );
        }
    }
    let page_size = db.page_size();
    db.close().expect("close");
    PassRun {
        pages,
        seconds,
        pages_read: after.pages_read - before.pages_read,
        rewritten: after.pages_reencrypted - before.pages_reencrypted,
        page_size,
        cpu: (cpu_after - cpu_before) as f64 / TICKS_PER_SECOND,
    }
}

fn throughput_section(settings: &Settings, fixtures: &[Fixture]) {
    println!();
    println!(
        "## 1. Re-encryption throughput, encryption_rotation_iops = 0, {} MiB buffer pool{}",
        settings.pool >> 20,
        if settings.direct {
            ", O_DIRECT"
        } else {
            ", files in the OS page cache"
        }
    );
    println!();
    // runs[algorithm][threads]
    let mut runs: Vec<Vec<Vec<PassRun>>> = fixtures
        .iter()
        .map(|_| settings.threads.iter().map(|_| Vec::new()).collect())
        .collect();
    for pass in 0..settings.passes {
        for (t, &threads) in settings.threads.iter().enumerate() {
            for (a, fixture) in fixtures.iter().enumerate() {
                let run = rotate_once(fixture, settings, threads);
                println!(
                    "pass {pass}: {} {threads} thread(s): {} pages in {:.2} s = {:.0} pages/s, \
                     {:.1} MiB/s ({} pages read, {} rewritten, {:.2} CPU s)",
                    fixture.algorithm,
                    run.pages,
                    run.seconds,
                    run.pages_per_second(),
                    run.mib_per_second(),
                    run.pages_read,
                    run.rewritten,
                    run.cpu
                );
                runs[a][t].push(run);
            }
        }
    }
    println!();
    println!(
        "| algorithm | threads | pages | seconds | pages/s [min–max] | MiB/s | vs 1 thread \
         | CPU busy (200% = 2 cores) | CPU µs/page | pages read, rewritten / pages |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let rate = |runs: &[PassRun]| median(runs.iter().map(PassRun::pages_per_second).collect());
    for (a, fixture) in fixtures.iter().enumerate() {
        for (t, &threads) in settings.threads.iter().enumerate() {
            let speedup = per_pass_ratio(&runs[a][t], &runs[a][0]);
            let runs = &runs[a][t];
            let rates: Vec<f64> = runs.iter().map(PassRun::pages_per_second).collect();
            let (low, high) = min_max(&rates);
            let sum = |f: fn(&PassRun) -> f64| runs.iter().map(f).sum::<f64>();
            let (cpu, seconds, pages) =
                (sum(|r| r.cpu), sum(|r| r.seconds), sum(|r| r.pages as f64));
            println!(
                "| {} | {threads} | {} | {:.2} | {:.0} [{low:.0}–{high:.0}] | {:.1} | {speedup:.2}× \
                 | {:.0}% | {:.0} | {:.2}, {:.2} |",
                fixture.algorithm,
                runs[0].pages,
                median(runs.iter().map(|r| r.seconds).collect()),
                rate(runs),
                median(runs.iter().map(PassRun::mib_per_second).collect()),
                cpu / seconds * 100.0,
                cpu / pages * 1e6,
                sum(|r| r.pages_read as f64) / pages,
                sum(|r| r.rewritten as f64) / pages
            );
        }
    }
    for (a, fixture) in fixtures.iter().enumerate().skip(1) {
        for (t, &threads) in settings.threads.iter().enumerate() {
            println!(
                "{} / {} pages/s, {threads} thread(s), median of per-pass ratios: {:.2}",
                fixture.algorithm,
                fixtures[0].algorithm,
                per_pass_ratio(&runs[a][t], &runs[0][t])
            );
        }
    }
}

/// The median over passes of `top`'s rate / `bottom`'s rate in the same pass.
fn per_pass_ratio(top: &[PassRun], bottom: &[PassRun]) -> f64 {
    median(
        top.iter()
            .zip(bottom)
            .map(|(t, b)| t.pages_per_second() / b.pages_per_second())
            .collect(),
    )
}

// ---- 2. foreground cost -----------------------------------------------------------------

/// What the clients did in one measured window.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    ops: u64,
    puts: u64,
    seconds: f64,
    /// Redo-log fsyncs in the window.
    fsyncs: u64,
    /// CPU the encryption threads used in the window, in ms.
    encrypt_cpu_ms: f64,
}

impl Window {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.seconds
    }
}

/// `clients` threads run the mixed workload on `tables` for `seconds`. `seed` picks the
/// sequence of operations and keys; `salt` goes into every value written, and must differ
/// from call to call: a put of the value a key already holds changes no page, writes no
/// redo and waits for no fsync, so repeating a sequence with the same values would be cheaper.
fn run_workload(
    db: &Db,
    tables: &[Table],
    records: u64,
    settings: &Settings,
    seconds: f64,
    (seed, salt): (u64, u64),
) -> Window {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(settings.clients + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..settings.clients)
            .map(|c| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1000 + c as u64);
                    barrier.wait();
                    let (mut ops, mut puts) = (0, 0);
                    while !stop.load(Ordering::Relaxed) {
                        let table = &tables[rng.random_range(0..tables.len())];
                        let i = rng.random_range(0..records);
                        if rng.random_range(0..100) < settings.write_pct {
                            db.put(table, &key(i), &value(i, salt)).expect("put");
                            puts += 1;
                        } else {
                            std::hint::black_box(db.get(table, &key(i)).expect("get"));
                        }
                        ops += 1;
                    }
                    (ops, puts)
                })
            })
            .collect();
        barrier.wait();
        let fsyncs = db.stats().log.fsyncs;
        let (_, encrypt_ticks, _) = cpu_ticks();
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        let mut window = Window::default();
        for worker in workers {
            let (ops, puts) = worker.join().expect("client");
            window.ops += ops;
            window.puts += puts;
        }
        window.seconds = started.elapsed().as_secs_f64();
        window.fsyncs = db.stats().log.fsyncs - fsyncs;
        let ticks = cpu_ticks().1 - encrypt_ticks;
        window.encrypt_cpu_ms = ticks as f64 * 1000.0 / TICKS_PER_SECOND;
        window
    })
}

/// What runs beside the workload in one slice of section 2. The discriminants index the
/// per-arm arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arm {
    /// (a) Nothing.
    Plain,
    /// (b) A rotation at `encryption_rotation_iops = 100`, started just before the window.
    Rotating,
    /// (c) No rotation; one thread that sleeps `1 / 100` s in a loop, as often as the
    /// throttle lets the encryption threads wake, and does nothing else. A control: on a
    /// virtual machine a vCPU that wakes often can notice IO completions sooner, which
    /// would speed up commits for a reason that has nothing to do with rotation.
    Placebo,
}

impl Arm {
    fn letter(self) -> &'static str {
        match self {
            Arm::Plain => "a",
            Arm::Rotating => "b",
            Arm::Placebo => "c",
        }
    }
}

/// One slice of section 2: reopen, warm up, (b) start a rotation, measure, close, (b) run
/// the pass to its end. `seed` picks the operations (every arm of a round runs the same
/// ones); `slice` numbers the call. Returns the window and, for b, the pages the pass moved
/// in it and whether it finished.
fn foreground_slice(
    fixture: &Fixture,
    settings: &Settings,
    arm: Arm,
    (seed, slice): (u64, u64),
) -> (Window, Option<(u64, bool)>) {
    let options = fixture
        .options()
        .buffer_pool_size(settings.fg_pool)
        .flush_log_at_commit(settings.policy)
        .encryption_threads(settings.rotation_threads)
        .encryption_rotation_iops(DEFAULT_IOPS);
    let (db, tables) = fixture.open(options);
    assert_eq!(key1_spaces(&db).1, 0, "a pass is pending");
    let records = fixture.records_per_table;
    let warmup = (seed + 1_000_000, 2 * slice);
    run_workload(&db, &tables, records, settings, settings.warmup, warmup);
    db.checkpoint().expect("checkpoint");
    let mut moved = None;
    if arm == Arm::Rotating {
        fixture.keys.rotate(SYSTEM_KEY_ID).expect("new key version");
        db.rotate_key(SYSTEM_KEY_ID, RotationPolicy::Reencrypt)
            .expect("rotate");
        moved = Some(db.stats().pages_reencrypted);
    }
    let stop = AtomicBool::new(false);
    let window = std::thread::scope(|s| {
        if arm == Arm::Placebo {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1) / DEFAULT_IOPS);
                }
            });
        }
        let operations = (seed, 2 * slice + 1);
        let window = run_workload(
            &db,
            &tables,
            records,
            settings,
            settings.seconds,
            operations,
        );
        stop.store(true, Ordering::Relaxed);
        window
    });
    let outcome = moved.map(|start| {
        let rewritten = db.stats().pages_reencrypted - start;
        (rewritten, key1_spaces(&db).1 == 0)
    });
    db.close().expect("close");
    drop((db, tables)); // releases the directory lock
    if arm == Arm::Rotating {
        finish_passes(fixture);
    }
    (window, outcome)
}

/// Runs the pending passes of `fixture` to their end, unthrottled.
fn finish_passes(fixture: &Fixture) {
    let options = fixture
        .options()
        .encryption_threads(2)
        .encryption_rotation_iops(0);
    let (db, _) = fixture.open(options);
    db.wait_for_encryption(|_| {}).expect("finish the passes");
    db.close().expect("close");
}

fn foreground_section(settings: &Settings, fixture: &Fixture) {
    println!();
    println!(
        "## 2. Foreground throughput: no rotation (a) vs a rotation at iops {DEFAULT_IOPS} with \
         {} thread(s) (b){}",
        settings.rotation_threads,
        if settings.placebo {
            " vs a placebo thread waking 100 times a second (c)"
        } else {
            ""
        }
    );
    println!(
        "{} clients, {}% puts / {}% gets, uniform keys over {} tables × {} records, \
         {} MiB buffer pool, flush_log_at_commit = {}, {} s windows after {} s warm-up",
        settings.clients,
        settings.write_pct,
        100 - settings.write_pct,
        fixture.tables,
        fixture.records_per_table,
        settings.fg_pool >> 20,
        settings.policy.level(),
        settings.seconds,
        settings.warmup
    );
    let mut arms = vec![Arm::Plain, Arm::Rotating];
    if settings.placebo {
        arms.push(Arm::Placebo);
    }
    println!();
    println!(
        "| round | order | a ops/s (no rotation) | b ops/s (rotating) | c ops/s (placebo) \
         | b/a | c/a | log fsyncs/s a, b, c | pages moved in b | encryption threads' CPU ms in b \
         | pass finished in b |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    // rates[arm][round]
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for round in 0..settings.rounds {
        let seed = round as u64 + 1;
        // The order rotates from round to round: ab, ba, ... or abc, bca, cab, ...
        let mut order = arms.clone();
        order.rotate_left(round % arms.len());
        let mut windows = [Window::default(); 3];
        let mut outcome = None;
        for (n, &arm) in order.iter().enumerate() {
            let slice = (round * arms.len() + n) as u64;
            let (window, moved) = foreground_slice(fixture, settings, arm, (seed, slice));
            windows[arm as usize] = window;
            outcome = outcome.or(moved);
        }
        let (moved, finished) = outcome.expect("b rotates");
        let [a, b, c] = windows;
        let or_dash = |arm: Arm, text: String| {
            if arms.contains(&arm) {
                text
            } else {
                "—".to_string()
            }
        };
        println!(
            "| {round} | {} | {:.0} | {:.0} | {} | {:.3} | {} | {:.0}, {:.0}, {} | {moved} | {:.0} | {} |",
            order.iter().map(|arm| arm.letter()).collect::<Vec<_>>().join(", "),
            a.rate(),
            b.rate(),
            or_dash(Arm::Placebo, format!("{:.0}", c.rate())),
            b.rate() / a.rate(),
            or_dash(Arm::Placebo, format!("{:.3}", c.rate() / a.rate())),
            a.fsyncs as f64 / a.seconds,
            b.fsyncs as f64 / b.seconds,
            or_dash(Arm::Placebo, format!("{:.0}", c.fsyncs as f64 / c.seconds)),
            b.encrypt_cpu_ms,
            if finished {
                "yes (database too small)"
            } else {
                "no"
            }
        );
        for arm in &arms {
            rates[*arm as usize].push(windows[*arm as usize].rate());
        }
    }
    let ratio = |top: &[f64], bottom: &[f64]| {
        let ratios: Vec<f64> = top.iter().zip(bottom).map(|(t, b)| t / b).collect();
        let (low, high) = min_max(&ratios);
        format!("**{:.3}** [{low:.3}–{high:.3}]", median(ratios))
    };
    let [a, b, c] = [0, 1, 2].map(|arm| rates[arm].clone());
    println!(
        "| median | | {:.0} | {:.0} | {} | {} | {} | | | | |",
        median(a.clone()),
        median(b.clone()),
        if settings.placebo {
            format!("{:.0}", median(c.clone()))
        } else {
            "—".to_string()
        },
        ratio(&b, &a),
        if settings.placebo {
            ratio(&c, &a)
        } else {
            "—".to_string()
        }
    );
    println!(
        "(pages moved: `Stats::pages_reencrypted`, which counts a 64-page batch once it is \
         flushed; the threads share the {DEFAULT_IOPS} IOs/s, two per page)"
    );
}

// ---- 3. idle cost -----------------------------------------------------------------------

/// CPU ticks (utime + stime) in a `/proc/.../stat` line.
fn ticks_in_stat(stat: &str) -> u64 {
    // The command name (field 2) may hold spaces; the fields after its `)` start at 3.
    let after = &stat[stat.rfind(')').expect("stat line") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let field = |n: usize| fields[n - 3].parse::<u64>().expect("tick count");
    field(14) + field(15)
}

/// (CPU ticks of the whole process, of its encryption threads, how many of those exist).
fn cpu_ticks() -> (u64, u64, usize) {
    let process = ticks_in_stat(&std::fs::read_to_string("/proc/self/stat").expect("stat"));
    let (mut threads, mut count) = (0, 0);
    for task in std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with(ENCRYPT_THREAD_PREFIX) {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) {
                threads += ticks_in_stat(&stat);
                count += 1;
            }
        }
    }
    (process, threads, count)
}

fn idle_section(settings: &Settings, root: &Path) {
    println!();
    println!(
        "## 3. Idle cost: CPU over {} s with nothing to rotate (10 ms ticks)",
        settings.idle_seconds
    );
    let fixture = Fixture::create(root.join("idle"), Algorithm::AesCtr, 1 << 20, 1);
    println!();
    println!(
        "| encryption threads | process CPU ms | encryption threads' CPU ms | threads found \
         | wake-ups |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for threads in [0, 4] {
        let (db, _) = fixture.open(fixture.options().encryption_threads(threads));
        db.wait_for_encryption(|_| {}).expect("nothing to do");
        std::thread::sleep(Duration::from_millis(500)); // let the open's work settle
        let wakeups = db.stats().encryption_wakeups;
        let (process, encrypt, _) = cpu_ticks();
        std::thread::sleep(Duration::from_secs_f64(settings.idle_seconds));
        let (process_after, encrypt_after, count) = cpu_ticks();
        let wakeups = db.stats().encryption_wakeups - wakeups;
        db.close().expect("close");
        println!(
            "| {threads} | {:.0} | {:.0} | {count} | {wakeups} |",
            (process_after - process) as f64 * 1000.0 / TICKS_PER_SECOND,
            (encrypt_after - encrypt) as f64 * 1000.0 / TICKS_PER_SECOND
        );
    }
}

// ---- the disk ---------------------------------------------------------------------------

/// Median microseconds of a 16 KiB `pwrite` + `fdatasync` overwriting one page of a file
/// in `dir`: what each of a pass's syncs (doublewrite, pages, page 0) costs at best. This
/// virtual disk's fsync latency changes by an order of magnitude over minutes, and the
/// unthrottled pass follows it.
fn fsync_probe(dir: &Path) -> f64 {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync-probe");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("probe file");
    let page = [0x5Au8; 16 << 10];
    file.write_all_at(&page, 0).expect("write");
    file.sync_all().expect("fsync");
    let times = (0..100)
        .map(|_| {
            let started = Instant::now();
            file.write_all_at(&page, 0).expect("write");
            file.sync_data().expect("fdatasync");
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    std::fs::remove_file(&path).expect("remove probe");
    median(times)
}

// ---- statistics, settings, main ---------------------------------------------------------

fn parse_list<T: std::str::FromStr>(text: &str, what: &str) -> Vec<T> {
    text.split(',')
        .map(|item| {
            item.parse()
                .unwrap_or_else(|_| panic!("{item:?} is not a valid {what}"))
        })
        .collect()
}

fn parse_settings(args: &[String]) -> Settings {
    let mut settings = Settings {
        dir: None,
        size: 200 << 20,
        tables: 4,
        pool: 16 << 20,
        threads: vec![1, 2, 4],
        algorithms: vec![Algorithm::AesCtr, Algorithm::AesGcm],
        passes: 1,
        direct: false,
        seconds: 10.0,
        rounds: 3,
        warmup: 1.0,
        clients: 4,
        write_pct: 25,
        fg_pool: 32 << 20,
        rotation_threads: 4,
        placebo: false,
        policy: FlushAtCommit::EveryCommit,
        idle_seconds: 5.0,
        throughput: true,
        foreground: true,
        idle: true,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => {
                settings.size = 32 << 20;
                settings.seconds = 2.0;
                settings.rounds = 2;
                settings.warmup = 0.5;
                settings.idle_seconds = 1.0;
            }
            "--dir" => settings.dir = Some(PathBuf::from(value())),
            "--size-mib" => settings.size = value().parse::<u64>().expect("MiB") << 20,
            "--tables" => settings.tables = value().parse().expect("tables"),
            "--pool-mib" => settings.pool = value().parse::<usize>().expect("MiB") << 20,
            "--threads" => settings.threads = parse_list(value(), "thread count"),
            "--algorithms" => settings.algorithms = parse_list(value(), "algorithm"),
            "--passes" => settings.passes = value().parse().expect("passes"),
            "--direct" => settings.direct = true,
            "--placebo" => settings.placebo = true,
            "--seconds" => settings.seconds = value().parse().expect("seconds"),
            "--rounds" => settings.rounds = value().parse().expect("rounds"),
            "--warmup" => settings.warmup = value().parse().expect("seconds"),
            "--clients" => settings.clients = value().parse().expect("clients"),
            "--write-pct" => settings.write_pct = value().parse().expect("percent"),
            "--fg-pool-mib" => settings.fg_pool = value().parse::<usize>().expect("MiB") << 20,
            "--rotation-threads" => settings.rotation_threads = value().parse().expect("threads"),
            "--policy" => {
                let level = value().parse().expect("policy");
                settings.policy = FlushAtCommit::from_level(level).expect("0, 1 or 2");
            }
            "--idle-seconds" => settings.idle_seconds = value().parse().expect("seconds"),
            "--no-throughput" => settings.throughput = false,
            "--no-foreground" => settings.foreground = false,
            "--no-idle" => settings.idle = false,
            other => {
                panic!("unknown argument {other:?} (see the doc comment of rotation_bench.rs)")
            }
        }
    }
    assert!(settings.write_pct <= 100, "--write-pct is a percentage");
    assert!(
        settings.tables > 0 && settings.clients > 0,
        "need tables and clients"
    );
    settings
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = parse_settings(&args);
    let mut builder = tempfile::Builder::new();
    builder.prefix("rotation_bench-");
    let root = match &settings.dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .expect("temporary directory");
    println!(
        "rotation_bench: directory {}; {} CPUs; AES hardware: {}; key 1 is 256-bit",
        root.path().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        strongbox_keyring::cipher::hardware_accelerated()
    );

    let mut fixtures = Vec::new();
    if settings.throughput || settings.foreground {
        let algorithms = if settings.throughput {
            settings.algorithms.clone()
        } else {
            vec![Algorithm::AesCtr]
        };
        for algorithm in algorithms {
            let started = Instant::now();
            let fixture = Fixture::create(
                root.path().join(algorithm.name()),
                algorithm,
                settings.size,
                settings.tables,
            );
            println!(
                "built the {algorithm} database: {} tables × {} records of {VALUE_LEN} bytes \
                 in {:.1} s",
                fixture.tables,
                fixture.records_per_table,
                started.elapsed().as_secs_f64()
            );
            fixtures.push(fixture);
        }
    }
    let probe = |when: &str| {
        println!(
            "fsync probe {when} (16 KiB pwrite + fdatasync, median of 100): {:.0} µs",
            fsync_probe(root.path())
        );
    };
    if settings.throughput {
        probe("before section 1");
        throughput_section(&settings, &fixtures);
        probe("after section 1");
    }
    if settings.foreground {
        probe("before section 2");
        foreground_section(&settings, &fixtures[0]);
        probe("after section 2");
    }
    if settings.idle {
        idle_section(&settings, root.path());
    }
}
