//! Simulated power loss at every IO operation of a transaction workload (`docs/durability.md`
//! §4): after every crash point and every kind of damage to the unsynced writes, recovery
//! finds every acknowledged commit and nothing partial.
//!
//! `kill -9` (`crash_kill.rs`) never loses what sits in the OS page cache, so it cannot
//! show that the fsyncs are in the right places. This test runs the engine on a
//! [`SimVfs`], which keeps durable and not-yet-synced state apart, and takes the disk as a
//! restart after a power loss would find it ([`SimVfs::crash`]): the unsynced writes
//! dropped, kept, kept at random, kept as a prefix, or torn at 512 B or 4 KiB granularity
//! ([`Damage`]).
//!
//! ## Two sweeps
//!
//! **The dense sweep** crashes the workload at *every* IO operation `k = 1..=N` of one run.
//! Running the workload once per `k` costs N²/2 operations, minutes for a few thousand, so
//! the run goes once through a [`Tap`]: a file system that passes every call to the
//! `SimVfs` and, right after operation `k` and before operation `k + 1` can start, takes
//! the crash images planned for `k` together with the workload's progress at that moment.
//! The workload carries on (the power never really fails); worker threads recover the
//! images meanwhile. An image taken after operation `k` is exactly what `crash` returns
//! after a power loss armed at `k`.
//!
//! ```text
//!   base image (2 tables, closed cleanly) ──copy──► Tap ──► SimVfs
//!   workload: Db::open; txn 1 … TXNS; Db::close
//!        after each operation k: for each damage planned for k:
//!            (k, damage, crash(damage), progress) ──channel──► workers:
//!                Db::open (recovery) ──► checks 1–5
//! ```
//!
//! **The armed sweep** cuts the power for real ([`SimVfs::power_fail_after`]) at a spread of
//! points, so every call after the crash point fails, and checks that the engine reports
//! those failures (no commit acknowledged without its fsync, no error while the power was
//! on) before recovering the image the same way. After a power loss every call should fail
//! at once; a watchdog closes the database if the workload is still blocked
//! [`STALL_GRACE`] after it, and the sweep reports those stalls (printed, not asserted:
//! telling a stall from a slow machine is a matter of timing).
//!
//! Operations are counted from the copy of the base image on, so crash points also land in
//! the workload's own `Db::open` (a recovery of a cleanly closed database) and its final
//! `close`. The page cleaner and the checkpoint thread make the order and the number of
//! operations vary from run to run (N by ten or twenty percent), so the test never asserts
//! an IO sequence: operation `k` is a different operation in another run, each run is still
//! a valid crash point, and the dense sweep covers every `k` of the run it taps.
//!
//! ## The workload
//!
//! An encrypted database (keys 1 and 2 from a [`MemoryKeyProvider`]; table `b` uses key 2;
//! the redo log encrypted) and a plain one, each with 4 KiB pages, a 32-frame buffer pool
//! (evictions and the page cleaner write pages mid-run), 32 KiB redo segments (a few dozen
//! checkpoints per run), `flush_log_at_commit = 1` and the doublewrite on.
//! Transaction `n` ([`writes`]) is a pure function of the seed and `n`: one to three keys
//! of slot `n % SLOTS` in both tables, sometimes a key written twice, the hot keys
//! `a/counter` and `b/hot{n % 3}`, and deletes in the slot half a lap away. Every value
//! starts with `"{n}:"`, so a value found names the transaction that wrote it; one value in
//! 25 is longer than a page (an overflow chain). Transactions with `n % 7 == 3` roll back,
//! `n % 11 == 5` are dropped without commit or rollback, the rest commit.
//!
//! ## The checks, after every recovery
//!
//! *Acknowledged* transactions are those whose `commit` had returned Ok when the image was
//! taken; *in flight* is the one whose `commit` had been called but had not returned (or,
//! armed, returned an error): its commit record may or may not be durable.
//!
//! 1. `Db::open` recovers and both tables exist.
//! 2. A full scan of each table equals the replay of the acknowledged transactions (R), or
//!    R plus all of the in-flight transaction. A mismatch names every acknowledged
//!    transaction not (fully) present, an in-flight transaction seen in part, and the
//!    rolled-back, dropped or never-committed transactions whose values are visible.
//! 3. Point reads agree with the scan for every key of either allowed state.
//! 4. `Db::verify` passes. A crash between writing an overflow chain and linking it leaks
//!    its pages (rule 10); that is allowed and the total is reported.
//! 5. The recovered database takes a new commit and closes cleanly.
//!
//! ## Sizing and running it
//!
//! The default run, for each database: the dense sweep at every `k`, one damage variant per
//! `k` rotating through the six (`k mod 6`) and all six at every tenth `k`, and 24 armed
//! points, one variant each (about 5 000 crash points and 7 500 recoveries per database).
//! The full run takes every variant at every `k` in both dense sweeps and arms every
//! fiftieth `k`, all variants:
//!
//! ```text
//! STRONGBOX_SIM_FULL=1 cargo test --release -p strongbox-engine --test crash_sim -- --nocapture
//! ```
//!
//! The seed (workload values and damage choices) is printed; `STRONGBOX_SIM_SEED=<seed>`
//! repeats it (the thread interleaving is not repeated, so a replay explores the same
//! neighbourhood), and `STRONGBOX_SIM_K=<k>` arms only crash point `k`, every variant.

mod common;

use common::crash::compare::{open_tables, Outcomes};
use common::crash::workload::{fate, txn_rng, write_all, writer_of, Fate, Layout, Model, Write};
use common::crash::{env_u64, fresh_seed};
use common::Rng;
use crossbeam::channel;
use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use strongbox_engine::io::{Damage, FileIo, OpenMode, SimVfs, Vfs};
use strongbox_engine::page::PageSize;
use strongbox_engine::{Db, EncryptTables, FlushAtCommit, Options, Table, TableOptions};
use strongbox_keyring::provider::MemoryKeyProvider;

// ---- settings -------------------------------------------------------------------------------

const ENV_FULL: &str = "STRONGBOX_SIM_FULL";
const ENV_SEED: &str = "STRONGBOX_SIM_SEED";
const ENV_K: &str = "STRONGBOX_SIM_K";

const DIR: &str = "/db";
/// Tables `a` and `b`; values are `"{n}:{table}/{key}:"` and padding.
const LAYOUT: Layout = Layout {
    tables: &["a", "b"],
    slot_digits: 2,
    tag: b":",
    // Mostly small values, some of a kilobyte or two, one in 25 an overflow chain.
    paddings: &[
        (60, 0..120),
        (88, 120..1020),
        (96, 1000..2500),
        (100, PAGE_SIZE..3 * PAGE_SIZE),
    ],
};
/// Transactions in the workload.
const TXNS: u64 = 300;
/// Key slots per table (prime, so slots and fates mix).
const SLOTS: u64 = 53;
/// At most this many keys per slot and table.
const KEYS_PER_SLOT: usize = 3;
/// Hot keys `b/hot0..hot{HOT_KEYS}`.
const HOT_KEYS: u64 = 3;

const PAGE_SIZE: usize = 4096;
const FRAMES: usize = 32;
/// 128 KiB segments (the smallest the engine accepts for 4 KiB pages: 32 pages), 8 of them:
/// a few checkpoints during the workload. The log's free-space rule needs every mtr batch
/// below an eighth of the capacity, which is what that minimum guarantees.
const LOG_FILE_SIZE: u64 = 128 * 1024;

/// Damage variants per crash point (`Damage::variants`).
const VARIANTS: u64 = 6;
/// In the rotating plans, every crash point `k` that is a multiple of this gets every
/// variant.
const ALL_VARIANTS_EVERY: u64 = 10;
/// Armed crash points per database in the default run, spread over the workload.
const ARMED_POINTS: u64 = 24;
/// The full run arms every this many operations.
const FULL_ARMED_STRIDE: u64 = 50;
/// How long after a power loss the workload may stay blocked before the watchdog closes
/// the database (every call should fail at once).
const STALL_GRACE: Duration = Duration::from_millis(500);
/// Crash images waiting for a worker; the tap blocks the workload's IO when it is full.
const QUEUE: usize = 32;
/// A sweep stops checking after this many failures; the report shows the first few.
const MAX_FAILURES: usize = 20;
const SHOWN_FAILURES: usize = 5;

/// The two databases the sweeps run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    /// Tables, redo log and temporary space encrypted; table `b` under key 2.
    Encrypted,
    /// Nothing encrypted.
    Plain,
}

/// Which damage variants crash point `k` gets.
#[derive(Debug, Clone, Copy)]
enum Variants {
    /// All six.
    All,
    /// One, rotating with `k`.
    Rotating,
    /// One, rotating with `k`; all six at every [`ALL_VARIANTS_EVERY`]-th `k`.
    RotatingAllEveryTenth,
}

impl Variants {
    fn damages(self, k: u64, seed: u64) -> Vec<Damage> {
        let all = Damage::variants(damage_seed(seed, k));
        let every = match self {
            Variants::All => true,
            Variants::Rotating => false,
            Variants::RotatingAllEveryTenth => k.is_multiple_of(ALL_VARIANTS_EVERY),
        };
        if every {
            all.to_vec()
        } else {
            vec![all[(k % VARIANTS) as usize]]
        }
    }
}

fn damage_seed(seed: u64, k: u64) -> u64 {
    Rng::new(seed ^ k.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

/// The keyring of the encrypted flavour: keys 1 (system, log, table `a`) and 2 (table `b`,
/// temporary space).
fn keyring() -> Arc<MemoryKeyProvider> {
    let keys = MemoryKeyProvider::new();
    for id in [1, 2] {
        keys.add_random(id, 1, 256).expect("256-bit keys are valid");
    }
    Arc::new(keys)
}

/// Everything the runs of one database share: the flavour, its keys, the seed and the base
/// image.
struct Setup {
    flavour: Flavour,
    keys: Arc<MemoryKeyProvider>,
    seed: u64,
    /// A cleanly closed database holding both (empty) tables; every run starts from a copy.
    base: SimVfs,
}

impl Setup {
    fn new(flavour: Flavour, seed: u64) -> Setup {
        let mut setup = Setup {
            flavour,
            keys: keyring(),
            seed,
            base: SimVfs::new(),
        };
        let vfs = SimVfs::new();
        let db = Db::open(DIR, setup.options(Arc::new(vfs.clone()))).expect("create the database");
        for (i, name) in LAYOUT.tables.iter().enumerate() {
            db.create_table(name, setup.table_options(i))
                .expect("create a table");
        }
        db.close().expect("close the new database");
        drop(db);
        // Only durable state: a cleanly closed database must be whole without its page cache.
        setup.base = vfs.crash(Damage::LoseAll);
        setup
    }

    fn options(&self, vfs: Arc<dyn Vfs>) -> Options {
        let options = Options::new()
            .vfs(vfs)
            .page_size(PageSize::of_buffer(PAGE_SIZE).expect("4 KiB is a supported page size"))
            .buffer_pool_size(FRAMES * PAGE_SIZE)
            .log_file_size(LOG_FILE_SIZE)
            .flush_log_at_commit(FlushAtCommit::EveryCommit)
            .doublewrite(true)
            .lock_wait_timeout(Duration::from_secs(5));
        match self.flavour {
            Flavour::Encrypted => options
                .key_provider(Arc::clone(&self.keys) as _)
                .encrypt_tables(EncryptTables::On)
                .encrypt_log(true)
                .encrypt_temp(true),
            Flavour::Plain => options
                .encrypt_tables(EncryptTables::Off)
                .encrypt_log(false)
                .encrypt_temp(false),
        }
    }

    fn table_options(&self, table: usize) -> TableOptions {
        if self.flavour == Flavour::Encrypted && table == 1 {
            TableOptions::default().encryption_key_id(2)
        } else {
            TableOptions::default()
        }
    }

    /// A fresh copy of the base image (all of it durable, so any damage copies it whole).
    fn fresh_disk(&self) -> SimVfs {
        self.base.crash(Damage::KeepAll)
    }
}

// ---- the workload ---------------------------------------------------------------------------

/// Everything transaction `n` writes, in order (a later write of the same key wins).
fn writes(seed: u64, n: u64) -> Vec<Write> {
    let mut rng = txn_rng(seed, n);
    let mut out = Vec::new();
    let slot = n % SLOTS;
    for table in 0..LAYOUT.tables.len() {
        for j in 0..1 + rng.below(KEYS_PER_SLOT) {
            let len = LAYOUT.padding(&mut rng);
            out.push(LAYOUT.put(n, table, LAYOUT.slot_key(slot, j), len));
        }
    }
    if rng.percent(30) {
        // The same key twice in one transaction: the second write finds the lock held.
        let len = LAYOUT.padding(&mut rng);
        out.push(LAYOUT.put(n, 0, LAYOUT.slot_key(slot, 0), len + 1));
    }
    out.push(LAYOUT.put(n, 0, b"counter".to_vec(), 0));
    let len = LAYOUT.padding(&mut rng);
    out.push(LAYOUT.put(n, 1, format!("hot{}", n % HOT_KEYS).into_bytes(), len));
    let old = (slot + SLOTS / 2) % SLOTS;
    out.push(Write::delete(
        0,
        LAYOUT.slot_key(old, rng.below(KEYS_PER_SLOT)),
    ));
    out.push(Write::delete(
        1,
        LAYOUT.slot_key(old, rng.below(KEYS_PER_SLOT)),
    ));
    out
}

/// What the workload has been told so far.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Transactions whose commit returned Ok, in order.
    acked: Vec<u64>,
    /// The transaction whose commit was called and has not returned Ok: all or nothing.
    in_flight: Option<u64>,
}

/// How a workload run ended.
#[derive(Debug, Default)]
struct Run {
    /// The step that failed and its error; `None` if the workload ran to the end.
    stopped: Option<String>,
    /// An error that came while the power was still on: a failure of its own.
    unexpected: Option<String>,
}

/// Where a workload runs: its file system, whether the power can fail, and where it
/// reports progress and publishes its database (for the watchdog).
struct Target<'a> {
    vfs: Arc<dyn Vfs>,
    sim: &'a SimVfs,
    progress: &'a Mutex<Progress>,
    db: &'a Mutex<Option<Db>>,
}

/// Runs the workload until it ends or the first error.
fn workload(setup: &Setup, target: &Target<'_>) -> Run {
    let mut run = Run::default();
    let stop = |run: &mut Run, step: String, error: strongbox_engine::Error| {
        let what = format!("{step}: {error}");
        if !target.sim.is_powered_off() {
            run.unexpected = Some(what.clone());
        }
        run.stopped = Some(what);
    };
    let db = match Db::open(DIR, setup.options(Arc::clone(&target.vfs))) {
        Ok(db) => db,
        Err(e) => {
            stop(&mut run, "Db::open".into(), e);
            return run;
        }
    };
    *lock(target.db) = Some(db.clone());
    let tables: Vec<Table> = match LAYOUT.tables.iter().map(|name| db.table(name)).collect() {
        Ok(tables) => tables,
        Err(e) => {
            stop(&mut run, "opening the tables".into(), e);
            return run;
        }
    };
    for n in 1..=TXNS {
        let mut txn = match db.begin() {
            Ok(txn) => txn,
            Err(e) => {
                stop(&mut run, format!("begin of txn {n}"), e);
                break;
            }
        };
        if let Err(e) = write_all(&mut txn, &tables, &writes(setup.seed, n)) {
            stop(&mut run, format!("a write of txn {n}"), e);
            break;
        }
        match fate(n) {
            Fate::Commit => {
                lock(target.progress).in_flight = Some(n);
                if let Err(e) = txn.commit() {
                    stop(&mut run, format!("commit of txn {n}"), e);
                    break;
                }
                let mut progress = lock(target.progress);
                progress.acked.push(n);
                progress.in_flight = None;
            }
            Fate::Rollback => {
                if let Err(e) = txn.rollback() {
                    stop(&mut run, format!("rollback of txn {n}"), e);
                    break;
                }
            }
            Fate::Drop => drop(txn),
        }
    }
    if run.stopped.is_none() {
        if let Err(e) = db.close() {
            stop(&mut run, "Db::close".into(), e);
        }
    }
    run
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---- the tap: crash images at every operation -----------------------------------------------

/// One crash image and what the workload had been told when it was taken.
struct Image {
    k: u64,
    damage: Damage,
    disk: SimVfs,
    progress: Progress,
}

/// A file system that passes every call to a [`SimVfs`] and, after each counted operation
/// `k`, sends the crash images `variants` plans for `k` (see the module doc).
#[derive(Clone)]
struct Tap {
    sim: SimVfs,
    shared: Arc<TapShared>,
}

struct TapShared {
    /// Held across an operation and its images, so that no other operation comes between.
    serial: Mutex<()>,
    progress: Arc<Mutex<Progress>>,
    variants: Variants,
    seed: u64,
    /// Taken out when the workload is over, which ends the workers.
    images: Mutex<Option<channel::Sender<Image>>>,
}

impl Tap {
    /// Runs one counted operation, then takes its crash images.
    fn op<T>(&self, call: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let _serial = lock(&self.shared.serial);
        let result = call();
        let k = self.sim.ops();
        let progress = lock(&self.shared.progress).clone();
        for damage in self.shared.variants.damages(k, self.shared.seed) {
            let image = Image {
                k,
                damage,
                disk: self.sim.crash(damage),
                progress: progress.clone(),
            };
            if let Some(images) = lock(&self.shared.images).as_ref() {
                // The workers receive until the sender is taken out.
                let _ = images.send(image);
            }
        }
        result
    }
}

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap").field("sim", &self.sim).finish()
    }
}

struct TapFile {
    file: Arc<dyn FileIo>,
    tap: Tap,
}

impl fmt::Debug for TapFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.file.fmt(f)
    }
}

impl FileIo for TapFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.tap.op(|| self.file.read_at(buf, offset))
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.tap.op(|| self.file.write_at(buf, offset))
    }
    fn sync(&self) -> io::Result<()> {
        self.tap.op(|| self.file.sync())
    }
    fn size(&self) -> io::Result<u64> {
        self.file.size()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.tap.op(|| self.file.set_len(len))
    }
}

impl Vfs for Tap {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileIo>> {
        let file = self.op(|| self.sim.open(path, mode))?;
        Ok(Arc::new(TapFile {
            file,
            tap: self.clone(),
        }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.op(|| self.sim.remove(path))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.op(|| self.sim.rename(from, to))
    }
    fn exists(&self, path: &Path) -> bool {
        self.sim.exists(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.sim.create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.sim.list(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.op(|| self.sim.sync_dir(dir))
    }
}

// ---- the checks -----------------------------------------------------------------------------

/// What one recovery found, for the totals.
#[derive(Debug, Default, Clone, Copy)]
struct Found {
    in_flight_present: bool,
    leaked_pages: u64,
    redo: usize,
    rolled_back: usize,
}

/// Recovers `disk` and runs checks 1–5 against `progress`.
fn check(setup: &Setup, disk: &SimVfs, progress: &Progress) -> Result<Found, String> {
    let outcomes = Outcomes::new(
        &LAYOUT,
        &Model::new(LAYOUT.tables.len()),
        0,
        progress.acked.clone(),
        progress.in_flight,
        |n| writes(setup.seed, n),
    );
    let db = Db::open(DIR, setup.options(Arc::new(disk.clone())))
        .map_err(|e| format!("Db::open (recovery) failed: {e}"))?;
    let recovered = db.recovery();
    let tables = open_tables(&db, LAYOUT.tables)?;
    let in_flight_present = outcomes.check_tables(&db, &tables)?;
    outcomes.check_point_reads(&db, &tables, in_flight_present)?;
    let report = db
        .verify()
        .map_err(|e| format!("verify() failed after recovery: {e}"))?;
    let leaked_pages = report.trees.iter().map(|(_, s)| s.leaked_pages).sum();

    // Check 5: the recovered database works.
    let mut txn = db
        .begin()
        .map_err(|e| format!("begin after recovery: {e}"))?;
    txn.put(&tables[0], b"after-recovery", b"1")
        .map_err(|e| format!("a write after recovery failed: {e}"))?;
    txn.commit()
        .map_err(|e| format!("a commit after recovery failed: {e}"))?;
    db.close()
        .map_err(|e| format!("close after recovery failed: {e}"))?;
    Ok(Found {
        in_flight_present,
        leaked_pages,
        redo: recovered.redo,
        rolled_back: recovered.rolled_back,
    })
}

// ---- the sweeps -----------------------------------------------------------------------------

/// What a sweep saw.
#[derive(Debug, Default)]
struct Totals {
    points: u64,
    recoveries: u64,
    acked: u64,
    in_flight_present: u64,
    in_flight_absent: u64,
    leaked_pages: u64,
    redo: u64,
    rolled_back: u64,
    /// Armed points where the workload was still blocked [`STALL_GRACE`] after the power
    /// loss, with the first few.
    stalls: u64,
    stalled: Vec<String>,
    failures: Vec<String>,
    failure_count: usize,
}

impl Totals {
    /// Counts one recovery of an image taken at `progress`.
    fn record(
        &mut self,
        progress: &Progress,
        case: impl FnOnce() -> String,
        result: Result<Found, String>,
    ) {
        self.recoveries += 1;
        self.acked += progress.acked.len() as u64;
        match result {
            Ok(found) => {
                if found.in_flight_present {
                    self.in_flight_present += 1;
                } else if progress.in_flight.is_some() {
                    self.in_flight_absent += 1;
                }
                self.leaked_pages += found.leaked_pages;
                self.redo += found.redo as u64;
                self.rolled_back += found.rolled_back as u64;
            }
            Err(problem) => self.fail(format!("{}: {problem}", case())),
        }
    }

    fn fail(&mut self, message: String) {
        self.failure_count += 1;
        if self.failures.len() < SHOWN_FAILURES {
            self.failures.push(message);
        }
    }

    fn summary(&self, what: &str, started: Instant) -> String {
        format!(
            "{what}: {} crash points, {} recoveries in {:.1} s; {} acknowledged commits \
             checked (summed over recoveries); in-flight commit found present {} times / absent {}; {} redo changes \
             applied and {} txns rolled back by recovery; {} leaked pages in all; {} stalls \
             after power loss; {} failures",
            self.points,
            self.recoveries,
            started.elapsed().as_secs_f64(),
            self.acked,
            self.in_flight_present,
            self.in_flight_absent,
            self.redo,
            self.rolled_back,
            self.leaked_pages,
            self.stalls,
            self.failure_count,
        )
    }

    fn assert_passed(&self, what: &str, seed: u64) {
        assert!(
            self.failure_count == 0,
            "{what}: {} failures{} (seed {seed}; replay with {ENV_SEED}={seed}); the first \
             {}:\n\n{}",
            self.failure_count,
            if self.failure_count >= MAX_FAILURES {
                ", stopped checking"
            } else {
                ""
            },
            self.failures.len(),
            self.failures.join("\n\n"),
        );
    }
}

/// The dense sweep: one tapped run, crash images after every operation (module doc).
/// Returns the totals and N, the operations of the run.
fn dense_sweep(setup: &Setup, variants: Variants) -> (Totals, u64) {
    let started = Instant::now();
    let what = format!("crash_sim {:?} dense", setup.flavour);
    let progress = Arc::new(Mutex::new(Progress::default()));
    let (sender, receiver) = channel::bounded::<Image>(QUEUE);
    let tap = Tap {
        sim: setup.fresh_disk(),
        shared: Arc::new(TapShared {
            serial: Mutex::new(()),
            progress: Arc::clone(&progress),
            variants,
            seed: setup.seed,
            images: Mutex::new(Some(sender)),
        }),
    };
    let totals = Mutex::new(Totals::default());
    let points = Mutex::new(BTreeSet::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (run, n) = std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                for image in receiver.iter() {
                    lock(&points).insert(image.k);
                    if lock(&totals).failure_count >= MAX_FAILURES {
                        continue; // drain, so the workload can finish
                    }
                    let result = check(setup, &image.disk, &image.progress);
                    lock(&totals).record(
                        &image.progress,
                        || {
                            format!(
                                "{:?} crash after op k={}, damage {:?}, seed {} (dense sweep)",
                                setup.flavour, image.k, image.damage, setup.seed
                            )
                        },
                        result,
                    );
                }
            });
        }
        let db = Mutex::new(None);
        let target = Target {
            vfs: Arc::new(tap.clone()),
            sim: &tap.sim,
            progress: &progress,
            db: &db,
        };
        let run = workload(setup, &target);
        drop(lock(&db).take());
        lock(&tap.shared.images).take(); // the workers end when the queue is empty
        (run, tap.sim.ops())
    });
    let progress = lock(&progress).clone();
    let mut totals = totals.into_inner().unwrap_or_else(|p| p.into_inner());
    totals.points = lock(&points).len() as u64;
    match run.unexpected.or(run.stopped) {
        Some(error) => totals.fail(format!(
            "{:?} dense sweep, seed {}: the workload failed without a crash: {error}",
            setup.flavour, setup.seed
        )),
        None => {
            // A cleanly closed database is whole without its page cache.
            let result = check(setup, &tap.sim.crash(Damage::LoseAll), &progress);
            totals.record(
                &progress,
                || {
                    format!(
                        "{:?} after the workload's clean close, damage LoseAll, seed {}",
                        setup.flavour, setup.seed
                    )
                },
                result,
            );
        }
    }
    println!("{} (N = {n} IO operations)", totals.summary(&what, started));
    (totals, n)
}

/// The armed sweep: the power really fails after operation `k`, for each `k` of `points`.
fn armed_sweep(setup: &Setup, points: &[u64], variants: Variants) -> Totals {
    let started = Instant::now();
    let what = format!("crash_sim {:?} armed", setup.flavour);
    let mut totals = Totals::default();
    for &k in points {
        if totals.failure_count >= MAX_FAILURES {
            break;
        }
        totals.points += 1;
        armed_point(setup, k, variants, &mut totals);
    }
    println!("{}", totals.summary(&what, started));
    for stall in &totals.stalled {
        println!("  stall: {stall}");
    }
    totals
}

/// One armed crash point: the workload until the power fails after operation `k`, then
/// every damage variant of `k` recovered and checked.
fn armed_point(setup: &Setup, k: u64, variants: Variants, totals: &mut Totals) {
    let sim = setup.fresh_disk();
    sim.power_fail_after(k);
    let progress = Mutex::new(Progress::default());
    let db = Mutex::new(None);
    let target = Target {
        vfs: Arc::new(sim.clone()),
        sim: &sim,
        progress: &progress,
        db: &db,
    };
    let done = AtomicBool::new(false);
    let (run, stalled) = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let run = workload(setup, &target);
            done.store(true, Ordering::SeqCst);
            run
        });
        let stalled = watch(&sim, &done, &db);
        let run = worker.join().expect("the workload does not panic");
        (run, stalled)
    });
    drop(lock(&db).take());
    let progress = progress.into_inner().unwrap_or_else(|p| p.into_inner());
    let case = |damage: Option<Damage>| {
        format!(
            "{:?} crash after op k={k}, damage {}, seed {} (armed; the workload stopped at {})",
            setup.flavour,
            damage.map_or("-".into(), |d| format!("{d:?}")),
            setup.seed,
            run.stopped.as_deref().unwrap_or("its end"),
        )
    };
    if stalled {
        totals.stalls += 1;
        if totals.stalled.len() < SHOWN_FAILURES {
            totals.stalled.push(case(None));
        }
    }
    if let Some(error) = &run.unexpected {
        totals.fail(format!(
            "{}: an error while the power was on: {error}",
            case(None)
        ));
    }
    for damage in variants.damages(k, setup.seed) {
        let result = check(setup, &sim.crash(damage), &progress);
        totals.record(&progress, || case(Some(damage)), result);
    }
}

/// Waits for the workload to finish; if it is still running [`STALL_GRACE`] after the power
/// failed, closes its database so that blocked calls return, and says so.
fn watch(sim: &SimVfs, done: &AtomicBool, db: &Mutex<Option<Db>>) -> bool {
    let mut powered_off_at = None;
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
        if !sim.is_powered_off() {
            continue;
        }
        let since = *powered_off_at.get_or_insert_with(Instant::now);
        if since.elapsed() > STALL_GRACE {
            if let Some(db) = lock(db).take() {
                let _ = db.close();
            }
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            return true;
        }
    }
    false
}

// ---- settings from the environment, and the tests -------------------------------------------

fn full() -> bool {
    std::env::var(ENV_FULL).is_ok_and(|v| v != "0")
}

fn seed() -> u64 {
    env_u64(ENV_SEED).unwrap_or_else(fresh_seed)
}

/// Both sweeps on one database.
fn sweeps(flavour: Flavour, dense_variants: Variants) {
    let seed = seed();
    println!("crash_sim {flavour:?}: seed {seed} (replay with {ENV_SEED}={seed})");
    let setup = Setup::new(flavour, seed);
    if let Some(k) = env_u64(ENV_K) {
        let totals = armed_sweep(&setup, &[k], Variants::All);
        totals.assert_passed(&format!("crash_sim {flavour:?} armed at k={k}"), seed);
        return;
    }
    let (dense_variants, armed_variants) = if full() {
        (Variants::All, Variants::All)
    } else {
        (dense_variants, Variants::Rotating)
    };
    let (dense, n) = dense_sweep(&setup, dense_variants);
    dense.assert_passed(&format!("crash_sim {flavour:?} dense sweep"), seed);
    // The armed points spread over a run as long as the tapped one.
    let points: Vec<u64> = if full() {
        (1..=n).step_by(FULL_ARMED_STRIDE as usize).collect()
    } else {
        (1..=ARMED_POINTS).map(|i| i * n / ARMED_POINTS).collect()
    };
    let armed = armed_sweep(&setup, &points, armed_variants);
    armed.assert_passed(&format!("crash_sim {flavour:?} armed sweep"), seed);
    assert!(
        dense.in_flight_present + dense.in_flight_absent > 0,
        "no crash image caught a commit in flight: the sweep missed the commit path"
    );
}

#[test]
fn power_loss_at_every_io_keeps_acknowledged_commits_encrypted() {
    sweeps(Flavour::Encrypted, Variants::RotatingAllEveryTenth);
}

#[test]
fn power_loss_at_every_io_keeps_acknowledged_commits_plain() {
    sweeps(Flavour::Plain, Variants::RotatingAllEveryTenth);
}

/// The model itself: the workload has commits, rollbacks, drops, overflow values and
/// deletes, and the values name their writers.
#[test]
fn the_workload_covers_what_the_sweep_needs() {
    let seed = 1;
    let fates: BTreeSet<_> = (1..=TXNS).map(|n| format!("{:?}", fate(n))).collect();
    assert_eq!(fates.len(), 3, "{fates:?}");
    let all: Vec<Write> = (1..=TXNS).flat_map(|n| writes(seed, n)).collect();
    assert!(all.iter().any(|w| w.value.is_none()));
    let overflow = all
        .iter()
        .filter(|w| w.value.as_ref().is_some_and(|v| v.len() > PAGE_SIZE))
        .count();
    assert!(overflow >= 20, "{overflow} values longer than a page");
    for n in [1, 17, TXNS] {
        for write in writes(seed, n) {
            if let Some(value) = write.value {
                assert_eq!(writer_of(&value), Some(n));
            }
        }
    }
}
