//! The crash loop: `SIGKILL` a child running a mixed workload — several writer threads,
//! key rotation (re-encrypt and rewrap) and online ALTER all at once — at a random moment,
//! recover, and check; many times over, counting. It ends with one line:
//!
//! ```text
//! cycles=N verified=M failures=F
//! ```
//!
//! `crash_kill.rs` kills one writer; `crash_rotation.rs` kills one rotation, rewrap or ALTER
//! at a time. This test runs them together, so a kill can land anywhere in their
//! interleaving: a commit during a pass, a pass finishing while a rewrap writes page 0, an
//! ALTER's checkpoint while the page cleaner and two encryption threads write.
//!
//! ## One cycle
//!
//! ```text
//!   parent                                       child (cycle c)
//!   ------                                       ---------------
//!   spawn ─────────────────────────────────────▶ Db::open (recovery; resumes passes)
//!                                                WRITERS threads, writer w: stream c·W+w,
//!                                                  txns on tables a b c d, keys "w{w}/…",
//!                                                  commit → commits-{stream}.txt
//!                                                rotation thread: add a key version to the
//!                                                  key file, rotate_key(reencrypt | rewrap)
//!                                                ALTER thread: step table d through SETTINGS
//!   SIGKILL at a random moment ────────────────▶ ✝
//!   trim key versions an acknowledged rewrap retired
//!   Db::open (recovery), data check, point reads,
//!   wait_for_encryption, ALTER and settled checks,
//!   rewrap keys 1 2 5, verify, close,
//!   trim the key file to the latest versions
//! ```
//!
//! The tables have different encryption: `a` key 1 (with the system space and the redo
//! log), `b` key 5, `c` plain, `d` whatever the last ALTER made it ([`SETTINGS`]: key 5,
//! plain, key 1, key 2, default, plain, …). 4 KiB pages and a 1 MiB pool keep eviction and
//! the page cleaner busy; 256 KiB redo segments make checkpoints; the child paces
//! re-encryption at [`CHILD_IOPS`] so passes take long enough to be cut.
//!
//! ## The workload and the checks
//!
//! Writer `w` runs the transactions of its stream in order ([`writes`]): puts of one to
//! three keys of slot `id % SLOTS` in table `a` and some of `b`, `c`, `d` (2% of values are
//! overflow chains, some keys written twice in one transaction), its own `w{w}/counter`, and
//! deletes half a lap of slots away; `id % 7 == 3` rolls back, `id % 11 == 5` is dropped
//! (`common/crash/workload.rs`). Streams touch disjoint keys, so after a kill the tables
//! must hold every acknowledged commit of every stream plus, per stream, its pending commit
//! all or nothing (`common/crash/streams.rs`); point reads agree. Then:
//!
//! 1. table `d` settles (after `wait_for_encryption`) in the state of the last acknowledged
//!    ALTER or of the one in flight, and `a`, `b`, `c` and the system space keep theirs;
//! 2. every space is settled: no pass running, every page moved;
//! 3. the recovery open already ran without the key versions older than the newest
//!    acknowledged rewrap of each key (the parent removed them first: a rewrap retires
//!    them at once);
//! 4. after a rewrap of keys 1, 2 and 5 `Db::verify` passes and `close` succeeds; the key
//!    file is trimmed to each key's latest version, which the next cycle's opens prove
//!    enough.
//!
//! [`an_alter_deferred_by_four_generations_is_applied_when_the_pass_frees_them`] pins the
//! bug this loop found (an acknowledged ALTER never applied when all four generation slots
//! were in use); it needs no crash.
//!
//! A failed cycle prints its details (the kept directory, the child's last log lines) and
//! the loop goes on with a fresh database; the test fails at the end if any cycle failed.
//!
//! ## Running it
//!
//! The default is [`DEFAULT_CYCLES`] cycles. `scripts/crashloop N` runs N in release;
//! by hand:
//!
//! ```text
//! STRONGBOX_CRASHLOOP_CYCLES=1000 cargo test --release -p strongbox-engine \
//!     --test crash_loop -- --nocapture
//! ```
//!
//! The seed is printed; `STRONGBOX_CRASHLOOP_SEED=<seed>` repeats the key choices, the
//! workload and the kill moments (not the scheduling, so not the exact interleaving).

mod common;

use common::crash::acks::{read_events, AckFile};
use common::crash::child::{
    child_command, child_env, kill_child, open_in_child, tail, write_until_killed, KillAt, RunDir,
};
use common::crash::compare::open_tables;
use common::crash::setting::{status, status_row, wait, Setting};
use common::crash::streams::StreamOutcomes;
use common::crash::workload::IDS_PER_CYCLE;
use common::crash::workload::{committing_ids, txn_rng, write_all, Layout, Model, Write};
use common::crash::{env_u64, fresh_seed};
use common::Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};
use strongbox_engine::page::PageSize;
use strongbox_engine::{
    Db, EncryptTables, Encrypted, FlushAtCommit, Options, RotationPolicy, Table, TableOptions,
};
use strongbox_keyring::keyfile::KeyFile;
use strongbox_keyring::source::KeyFileSource;

// ---- settings -------------------------------------------------------------------------------

/// The child's data directory; its presence makes `crash_loop_child` run.
const ENV_CHILD: &str = "STRONGBOX_CRASHLOOP_CHILD";
const ENV_KEYFILE: &str = "STRONGBOX_CRASHLOOP_KEYFILE";
const ENV_EVENTS: &str = "STRONGBOX_CRASHLOOP_EVENTS";
/// The commits files of the writers' streams, in writer order (`std::env::join_paths`).
const ENV_COMMITS: &str = "STRONGBOX_CRASHLOOP_COMMITS";
const ENV_CYCLE: &str = "STRONGBOX_CRASHLOOP_CYCLE";
const ENV_WORKLOAD_SEED: &str = "STRONGBOX_CRASHLOOP_WORKLOAD_SEED";
/// The index in [`SETTINGS`] of table `d`'s current setting.
const ENV_ALTER_FROM: &str = "STRONGBOX_CRASHLOOP_ALTER_FROM";
/// Parent settings: the number of cycles and the seed.
const ENV_CYCLES: &str = "STRONGBOX_CRASHLOOP_CYCLES";
const ENV_SEED: &str = "STRONGBOX_CRASHLOOP_SEED";

const DEFAULT_CYCLES: u64 = 10;
/// Writer threads in the child, each with its own stream of transactions.
const WRITERS: u64 = 3;

/// Tables `a` (key 1), `b` (key 5), `c` (plain), `d` (altered).
const LAYOUT: Layout = Layout {
    tables: &["a", "b", "c", "d"],
    slot_digits: 3,
    tag: b":",
    // Mostly small values, some near the inline limit, 2% overflow chains.
    paddings: &[
        (55, 0..200),
        (90, 200..1500),
        (98, 1500..3500),
        (100, PAGE_SIZE..PAGE_SIZE + 12 * 1024),
    ],
};
const TABLE_D: usize = 3;
/// The key id of table `b`.
const TABLE_KEY: u32 = 5;
/// Every key id the key file holds.
const KEY_IDS: [u32; 3] = [1, 2, TABLE_KEY];
/// Key slots per writer and table; prime, so ids and the fates (mod 7, mod 11) mix.
const SLOTS: u64 = 257;
const KEYS_PER_SLOT: usize = 3;

const PAGE_SIZE: usize = 4096;
const POOL_BYTES: usize = 1 << 20;
const LOG_FILE_SIZE: u64 = 256 * 1024;
/// The child's `encryption_rotation_iops`: a pass over a table of a few hundred pages takes
/// a good part of a second, so kills land inside passes.
const CHILD_IOPS: u32 = 1500;

/// When the parent kills the child: this long after the spawn (which also lands kills in
/// the child's recovery), or after the child's first rotation or ALTER.
const KILL_AFTER_SPAWN_MS: std::ops::Range<usize> = 20..1500;
const KILL_AFTER_EVENT_MS: std::ops::Range<usize> = 0..700;

/// Table `d`'s settings, in order (ALTER `n` sets `SETTINGS[n % len]`). Neighbours differ in
/// what `encryption_status` shows, so the parent can tell which of two it ended in.
const SETTINGS: [Setting; 6] = [
    Setting::Encrypted(TABLE_KEY),
    Setting::Plain,
    Setting::Encrypted(1),
    Setting::Encrypted(2),
    Setting::Default,
    Setting::Plain,
];

/// ALTER `n`'s target.
fn setting(n: u64) -> Setting {
    Setting::nth(&SETTINGS, n)
}

/// The options tables `a`, `b`, `c` are created with (and keep); `d` starts at
/// `SETTINGS[0]`.
fn table_options(table: usize) -> TableOptions {
    match table {
        0 => TableOptions::default(),
        1 => TableOptions::default().encryption_key_id(TABLE_KEY),
        2 => TableOptions::default().encrypted(Encrypted::No),
        _ => setting(0).table_options(),
    }
}

/// What `encryption_status` must show for the tables never altered, and the system space.
const FIXED: [(&str, &str, u32); 4] = [
    ("system", "aes_ctr", 1),
    ("a", "aes_ctr", 1),
    ("b", "aes_ctr", TABLE_KEY),
    ("c", "none", 0),
];

/// The options of every open; the child paces re-encryption, the parent passes 0.
fn options(keyfile: &Path, iops: u32) -> Options {
    Options::new()
        .keyfile(keyfile)
        .encrypt_tables(EncryptTables::On)
        .encrypt_log(true)
        .page_size(PageSize::of_buffer(PAGE_SIZE).expect("4 KiB is a supported page size"))
        .buffer_pool_size(POOL_BYTES)
        .log_file_size(LOG_FILE_SIZE)
        .flush_log_at_commit(FlushAtCommit::EveryCommit)
        .doublewrite(true)
        .lock_wait_timeout(Duration::from_secs(10))
        .encryption_threads(2)
        .encryption_rotation_iops(iops)
}

// ---- the workload ---------------------------------------------------------------------------

/// The stream of writer `writer` in `cycle`.
fn stream(cycle: u64, writer: u64) -> u64 {
    cycle * WRITERS + writer
}

/// Everything transaction `id` writes, in order; only keys of its writer (`w{w}/…`).
fn writes(seed: u64, id: u64) -> Vec<Write> {
    let writer = (id / IDS_PER_CYCLE) % WRITERS;
    let key = |slot: u64, j: usize| format!("w{writer}/s{slot:03}/{j}").into_bytes();
    let mut rng = txn_rng(seed, id);
    let slot = id % SLOTS;
    let mut out = Vec::new();
    for table in 0..LAYOUT.tables.len() {
        if table != 0 && rng.percent(40) {
            continue;
        }
        for j in 0..1 + rng.below(KEYS_PER_SLOT) {
            let len = LAYOUT.padding(&mut rng);
            out.push(LAYOUT.put(id, table, key(slot, j), len));
            if rng.percent(5) {
                let len = LAYOUT.padding(&mut rng);
                out.push(LAYOUT.put(id, table, key(slot, j), len));
            }
        }
    }
    out.push(LAYOUT.put(id, 0, format!("w{writer}/counter").into_bytes(), 0));
    let old = (slot + SLOTS / 2) % SLOTS;
    let table = rng.below(LAYOUT.tables.len());
    if rng.percent(30) {
        out.extend((0..KEYS_PER_SLOT).map(|j| Write::delete(table, key(old, j))));
    } else {
        out.push(Write::delete(table, key(old, rng.below(KEYS_PER_SLOT))));
    }
    out
}

// ---- the child ------------------------------------------------------------------------------

/// The child process. Runs only when the parent spawns this binary with
/// `STRONGBOX_CRASHLOOP_CHILD` set; works until it is killed.
#[test]
fn crash_loop_child() {
    let Some(dir) = std::env::var_os(ENV_CHILD) else {
        return;
    };
    let keyfile = PathBuf::from(child_env(ENV_KEYFILE));
    let cycle: u64 = child_env(ENV_CYCLE).parse().expect("a cycle number");
    let seed: u64 = child_env(ENV_WORKLOAD_SEED).parse().expect("a seed");
    let alter_from: u64 = child_env(ENV_ALTER_FROM).parse().expect("an ALTER index");
    let commits: Vec<PathBuf> = std::env::split_paths(&child_env(ENV_COMMITS)).collect();

    let (db, tables) = open_in_child(
        Path::new(&dir),
        options(&keyfile, CHILD_IOPS),
        LAYOUT.tables,
    );
    let writers: Vec<_> = (0..WRITERS)
        .zip(commits)
        .map(|(writer, path)| {
            let (db, tables) = (db.clone(), tables.clone());
            let stream = stream(cycle, writer);
            thread::spawn(move || {
                let mut commits = AckFile::open(&path, false);
                write_until_killed(&db, &tables, stream, |id| writes(seed, id), &mut commits)
            })
        })
        .collect();
    let events = PathBuf::from(child_env(ENV_EVENTS));
    let rotations = {
        let (db, keyfile, events) = (db.clone(), keyfile.clone(), events.clone());
        let mut rng = Rng::new(seed ^ cycle.wrapping_mul(0xC0FF_EE00_D15E_A5E5));
        thread::spawn(move || rotate_until_killed(&db, &keyfile, &events, &mut rng))
    };
    let mut rng = Rng::new(seed ^ cycle.wrapping_mul(0xA17E_5EED_0000_0001));
    alter_until_killed(&db, &events, alter_from, &mut rng);
    rotations.join().expect("the rotation thread");
    for writer in writers {
        writer.join().expect("a writer thread");
    }
}

/// Failures end the process at once, so the parent sees it exit before the kill.
fn die(what: String) -> ! {
    eprintln!("child: {what}");
    std::process::exit(3);
}

/// Adds a version of a key to the key file and applies it, by re-encryption or rewrap,
/// sometimes waiting for the passes; acknowledges each step in `events`.
fn rotate_until_killed(db: &Db, keyfile: &Path, events: &Path, rng: &mut Rng) {
    let mut events = AckFile::open(events, false);
    loop {
        thread::sleep(Duration::from_millis(rng.below(150) as u64));
        let key_id = KEY_IDS[rng.below(KEY_IDS.len())];
        let (policy, word) = if rng.percent(50) {
            (RotationPolicy::Reencrypt, "reencrypt")
        } else {
            (RotationPolicy::Rewrap, "rewrap")
        };
        let version = KeyFileSource::plain(keyfile)
            .rotate(key_id, None)
            .unwrap_or_else(|e| die(format!("adding a version of key {key_id}: {e}")));
        events.record(&format!("version {key_id} {version}"));
        let report = db
            .rotate_key(key_id, policy)
            .unwrap_or_else(|e| die(format!("rotate_key({key_id}, {word}) failed: {e}")));
        if report.version != version {
            die(format!(
                "rotate_key({key_id}, {word}) used version {}, not {version}",
                report.version
            ));
        }
        events.record(&format!("{word} {key_id} {version}"));
        if rng.percent(30) {
            db.wait_for_encryption(|_| {})
                .unwrap_or_else(|e| die(format!("wait_for_encryption failed: {e}")));
            events.record("settled");
        }
    }
}

/// Steps table `d` through [`SETTINGS`] from ALTER `from + 1` on; acknowledges each step.
fn alter_until_killed(db: &Db, events: &Path, from: u64, rng: &mut Rng) {
    let mut events = AckFile::open(events, false);
    for n in from + 1.. {
        thread::sleep(Duration::from_millis(rng.below(200) as u64));
        let setting = setting(n);
        events.record(&format!("alter-start {n}"));
        db.alter_table(LAYOUT.tables[TABLE_D], setting.table_options())
            .unwrap_or_else(|e| die(format!("ALTER {n} to {setting:?} failed: {e}")));
        events.record(&format!("alter {n}"));
        if rng.percent(30) {
            db.wait_for_encryption(|_| {})
                .unwrap_or_else(|e| die(format!("wait after ALTER {n} failed: {e}")));
            events.record(&format!("alter-done {n}"));
        }
    }
}

// ---- the parent -----------------------------------------------------------------------------

#[test]
fn crash_loop_mixed_workload_with_rotation_and_alter() {
    if std::env::var_os(ENV_CHILD).is_some() {
        return;
    }
    let cycles = env_u64(ENV_CYCLES).unwrap_or(DEFAULT_CYCLES);
    let seed = env_u64(ENV_SEED).unwrap_or_else(fresh_seed);
    println!(
        "crash_loop: {cycles} cycles, {WRITERS} writers, seed {seed} (replay with \
         {ENV_SEED}={seed})"
    );
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut run = Run::start(seed);
    let mut totals = Totals::default();
    let mut failures = Vec::new();
    for cycle in 1..=cycles {
        let kill = if rng.percent(40) {
            KillAt::Delay(millis(&mut rng, KILL_AFTER_SPAWN_MS))
        } else {
            KillAt::AfterEvent {
                events: run.dir.events(cycle),
                event: if rng.percent(50) { "alter" } else { "version" },
                delay: millis(&mut rng, KILL_AFTER_EVENT_MS),
            }
        };
        let kill_text = match &kill {
            KillAt::Delay(d) => format!("{} ms after the spawn", d.as_millis()),
            KillAt::AfterEvent { event, delay, .. } => {
                format!("{} ms after the first {event:?} event", delay.as_millis())
            }
        };
        match run.cycle(cycle, kill) {
            Ok(found) => totals.add(&found),
            Err(problem) => {
                let kept = run.dir.keep();
                let log = tail(&run.dir.child_log, 30);
                let failure = format!(
                    "FAILURE cycle {cycle} (seed {seed}, killed {kill_text}): {problem}\n  \
                     kept: {}\n  child's last log lines:\n{log}",
                    kept.display()
                );
                println!("{failure}");
                failures.push(cycle);
                run = Run::start(seed ^ cycle);
            }
        }
        if cycle % (cycles / 10).max(1) == 0 {
            println!(
                "crash_loop: cycle {cycle}/{cycles}, {} failed ({:.1} s): {totals:?}",
                failures.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "crash_loop: seed {seed}, {:.1} s; {totals:?}; failed cycles {failures:?}",
        started.elapsed().as_secs_f64()
    );
    println!(
        "cycles={cycles} verified={} failures={}",
        cycles - failures.len() as u64,
        failures.len()
    );
    assert!(failures.is_empty(), "{} cycles failed", failures.len());
}

fn millis(rng: &mut Rng, range: std::ops::Range<usize>) -> Duration {
    Duration::from_millis((range.start + rng.below(range.len())) as u64)
}

/// Counts across cycles, printed as they grow.
#[derive(Debug, Default)]
struct Totals {
    acked_commits: u64,
    pending_present: u64,
    pending_absent: u64,
    rotations_acked: u64,
    rewraps_acked: u64,
    alters_acked: u64,
    /// Kills after which recovery found a re-encryption pass running.
    kills_inside_a_pass: u64,
    /// Kills after which table `d` ended in the ALTER that was in flight.
    alters_in_flight_applied: u64,
}

/// What one cycle saw.
#[derive(Debug, Default)]
struct Cycle {
    acked_commits: u64,
    pending_present: u64,
    pending_absent: u64,
    rotations_acked: u64,
    rewraps_acked: u64,
    alters_acked: u64,
    inside_pass: bool,
    in_flight_applied: bool,
}

impl Totals {
    fn add(&mut self, c: &Cycle) {
        self.acked_commits += c.acked_commits;
        self.pending_present += c.pending_present;
        self.pending_absent += c.pending_absent;
        self.rotations_acked += c.rotations_acked;
        self.rewraps_acked += c.rewraps_acked;
        self.alters_acked += c.alters_acked;
        self.kills_inside_a_pass += u64::from(c.inside_pass);
        self.alters_in_flight_applied += u64::from(c.in_flight_applied);
    }
}

/// One database's run: its directory, model, the seed and table `d`'s setting.
struct Run {
    dir: RunDir,
    seed: u64,
    model: Model,
    /// The ALTER index of table `d`'s setting.
    alter: u64,
}

impl Run {
    /// A fresh directory: the key file, the database, its tables, and the fill (cycle 0:
    /// every slot of every writer written once).
    fn start(seed: u64) -> Run {
        let dir = RunDir::new();
        let keys = KeyFile::generate(&KEY_IDS, 256, true).expect("generate keys");
        KeyFileSource::plain(&dir.keyfile)
            .create(&keys)
            .expect("write the key file");
        let mut model = Model::new(LAYOUT.tables.len());
        let db = Db::open(&dir.db, options(&dir.keyfile, 0)).expect("create the database");
        let tables: Vec<Table> = (0..LAYOUT.tables.len())
            .map(|i| {
                db.create_table(LAYOUT.tables[i], table_options(i))
                    .expect("create a table")
            })
            .collect();
        for writer in 0..WRITERS {
            let fill: Vec<u64> = committing_ids(stream(0, writer))
                .take_while(|&id| id % IDS_PER_CYCLE <= SLOTS)
                .collect();
            for chunk in fill.chunks(64) {
                let mut txn = db.begin().expect("begin");
                for &id in chunk {
                    let writes = writes(seed, id);
                    write_all(&mut txn, &tables, &writes).expect("fill");
                    model.apply(id, writes);
                }
                txn.commit().expect("commit the fill");
            }
        }
        db.wait_for_encryption(|_| {})
            .expect("the new tables settle");
        db.close().expect("close the new database");
        Run {
            dir,
            seed,
            model,
            alter: 0,
        }
    }

    fn commits(&self, cycle: u64) -> Vec<(u64, PathBuf)> {
        (0..WRITERS)
            .map(|w| stream(cycle, w))
            .map(|s| (s, self.dir.commits(s)))
            .collect()
    }

    fn open(&self, what: &str) -> Result<Db, String> {
        Db::open(&self.dir.db, options(&self.dir.keyfile, 0))
            .map_err(|e| format!("{what} failed: {e}"))
    }

    /// Spawns the child, kills it, recovers and checks (module doc).
    fn cycle(&mut self, cycle: u64, kill: KillAt) -> Result<Cycle, String> {
        let commits = std::env::join_paths(self.commits(cycle).into_iter().map(|(_, p)| p))
            .map_err(|e| format!("a side-file path cannot be passed on: {e}"))?;
        let child = child_command("crash_loop_child", &self.dir.child_log)
            .and_then(|mut command| {
                command
                    .env(ENV_CHILD, &self.dir.db)
                    .env(ENV_KEYFILE, &self.dir.keyfile)
                    .env(ENV_EVENTS, self.dir.events(cycle))
                    .env(ENV_COMMITS, &commits)
                    .env(ENV_CYCLE, cycle.to_string())
                    .env(ENV_WORKLOAD_SEED, self.seed.to_string())
                    .env(ENV_ALTER_FROM, self.alter.to_string())
                    .spawn()
            })
            .map_err(|e| format!("spawn failed: {e}"))?;
        kill_child(child, &kill, || Ok(()))?;

        let events = read_events(&self.dir.events(cycle))?;
        let mut found = Cycle::default();
        let mut rewrapped: BTreeMap<u32, u32> = BTreeMap::new();
        let (mut acked_alter, mut started_alter) = (self.alter, self.alter);
        for event in &events {
            let number = |i: usize| -> Result<u64, String> {
                event
                    .get(i)
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| format!("bad event line {event:?}"))
            };
            match event[0].as_str() {
                "reencrypt" => found.rotations_acked += 1,
                "rewrap" => {
                    found.rewraps_acked += 1;
                    rewrapped.insert(number(1)? as u32, number(2)? as u32);
                }
                "alter" => {
                    found.alters_acked += 1;
                    acked_alter = number(1)?;
                }
                "alter-start" => started_alter = number(1)?,
                _ => {}
            }
        }

        // Check 3: a rewrap retires the older versions of its key at once.
        for (&key_id, &version) in &rewrapped {
            self.remove_versions_below(key_id, version)?;
        }

        let db = self.open("Db::open (recovery) after the kill")?;
        let at_open = status(&db)?;
        found.inside_pass = at_open.iter().any(|row| row.rotating);
        let tables = open_tables(&db, LAYOUT.tables)?;
        let seed = self.seed;
        let streams = self.commits(cycle);
        let streams: Vec<(u64, &Path)> = streams.iter().map(|(s, p)| (*s, p.as_path())).collect();
        let outcomes =
            StreamOutcomes::after_kill(&LAYOUT, &self.model, &streams, |id| writes(seed, id))?;
        let recovered = outcomes.check_tables(&db, &tables)?;
        let counters: Vec<(usize, Vec<u8>)> = (0..WRITERS)
            .map(|w| (0, format!("w{w}/counter").into_bytes()))
            .chain(self.sample_keys(cycle))
            .collect();
        outcomes.check_point_reads(
            &db,
            &tables,
            &recovered.model,
            counters.iter().map(|(i, k)| (*i, k.as_slice())),
        )?;
        found.acked_commits = recovered.acked;
        found.pending_present = recovered.pending_present;
        found.pending_absent = recovered.pending_absent;
        self.model = recovered.model;

        // Checks 1 and 2, once the passes are done.
        wait(&db)?;
        let rows = status(&db)?;
        let d = status_row(&rows, LAYOUT.tables[TABLE_D])?;
        let shown = (d.scheme, d.key_id);
        self.alter = if shown == setting(acked_alter).status() {
            acked_alter
        } else if started_alter > acked_alter && shown == setting(started_alter).status() {
            found.in_flight_applied = true;
            started_alter
        } else {
            let catalog = db
                .tables()
                .map_err(|e| format!("listing the tables: {e}"))?
                .into_iter()
                .find(|t| t.name == LAYOUT.tables[TABLE_D]);
            let d_at_open = status_row(&at_open, LAYOUT.tables[TABLE_D])?;
            return Err(format!(
                "table d settled as (scheme, key id) {shown:?}, but the last acknowledged \
                 ALTER {acked_alter} makes it {:?} and the one in flight ({}) {:?}: {d:?}\n  \
                 at open: {d_at_open:?}\n  the catalog: {catalog:?}\n  open's warnings: \
                 {:?}",
                setting(acked_alter).status(),
                if started_alter > acked_alter {
                    format!("ALTER {started_alter}")
                } else {
                    "none".to_string()
                },
                setting(started_alter).status(),
                db.warnings(),
            ));
        };
        for (name, scheme, key_id) in FIXED {
            let row = status_row(&rows, name)?;
            if (row.scheme, row.key_id) != (scheme, key_id) {
                return Err(format!(
                    "{name} should stay ({scheme}, key {key_id}) but shows {row:?}"
                ));
            }
        }
        // A key version the child added but had not applied yet is picked up by the open
        // as a new current generation without a pass (the age rule, `docs/rotation.md`
        // §4), so `min_key_version` may stay below `current_key_version`.
        for row in &rows {
            if row.rotating || row.pages_done != row.pages_total {
                return Err(format!(
                    "{:?} is not settled after wait_for_encryption: {row:?}",
                    row.name
                ));
            }
        }

        // Check 4: rewrap everything under the latest versions, verify, trim the key file.
        for key_id in KEY_IDS {
            db.rotate_key(key_id, RotationPolicy::Rewrap)
                .map_err(|e| format!("rotate_key({key_id}, rewrap) after recovery: {e}"))?;
        }
        db.verify()
            .map_err(|e| format!("verify() failed after recovery: {e}"))?;
        db.close().map_err(|e| format!("close failed: {e}"))?;
        for key_id in KEY_IDS {
            let latest = self.latest_version(key_id)?;
            self.remove_versions_below(key_id, latest)?;
        }
        Ok(found)
    }

    /// A sample of keys for point reads (present or not).
    fn sample_keys(&self, cycle: u64) -> Vec<(usize, Vec<u8>)> {
        let mut rng = Rng::new(self.seed ^ cycle.rotate_left(17));
        (0..48)
            .map(|_| {
                let table = rng.below(LAYOUT.tables.len());
                let key = format!(
                    "w{}/s{:03}/{}",
                    rng.below(WRITERS as usize),
                    rng.below(SLOTS as usize),
                    rng.below(KEYS_PER_SLOT)
                );
                (table, key.into_bytes())
            })
            .collect()
    }

    fn latest_version(&self, key_id: u32) -> Result<u32, String> {
        KeyFileSource::plain(&self.dir.keyfile)
            .load()
            .map_err(|e| format!("reading the key file: {e}"))?
            .keys
            .latest_version(key_id)
            .ok_or_else(|| format!("the key file has no key {key_id}"))
    }

    /// Removes every version of `key_id` below `keep` from the key file.
    fn remove_versions_below(&self, key_id: u32, keep: u32) -> Result<(), String> {
        let source = KeyFileSource::plain(&self.dir.keyfile);
        let mut keys = source
            .load()
            .map_err(|e| format!("reading the key file: {e}"))?
            .keys;
        let old: Vec<u32> = keys
            .entries()
            .iter()
            .filter(|e| e.id == key_id && e.version < keep)
            .map(|e| e.version)
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        for version in old {
            keys.remove_version(key_id, version);
        }
        source
            .save(&keys)
            .map_err(|e| format!("writing the key file: {e}"))
    }
}

// ---- found by the crash loop ----------------------------------------------------------------

/// An ALTER that finds all four generation slots used while a pass runs (plan rule 4)
/// waits for the pass to free them; once it has, the table must still move to the key the
/// ALTER named. (The crash loop found a table left on key 1 for good after an acknowledged
/// ALTER to key 5: nothing asked again once the slots were free.) No crash is needed: with
/// `encryption_threads = 0` passes run only inside `wait_for_encryption`, so the
/// generations pile up.
#[test]
fn an_alter_deferred_by_four_generations_is_applied_when_the_pass_frees_them() {
    if std::env::var_os(ENV_CHILD).is_some() {
        return;
    }
    let (dir, source) = key_file_dir();
    let db = table_t_without_encryption_threads(&dir);
    rotate_key_1(&db, &source, 3);
    db.alter_table("t", Setting::Encrypted(TABLE_KEY).table_options())
        .expect("ALTER t to key 5");
    db.wait_for_encryption(|_| {}).expect("the passes finish");
    let rows = db.encryption_status().expect("status");
    let t = status_row(&rows, "t").expect("a row for t");
    assert_eq!(
        (t.scheme, t.key_id, t.rotating),
        ("aes_ctr", TABLE_KEY, false),
        "the ALTER to key {TABLE_KEY} was acknowledged: {t:?}"
    );
    db.verify().expect("verify");
    db.close().expect("close");
}

/// `times` rotations of key 1 with re-encryption, each after adding a version to the key
/// file. With no encryption threads the passes wait, so each adds a generation.
fn rotate_key_1(db: &Db, source: &KeyFileSource, times: usize) {
    for _ in 0..times {
        source.rotate(1, None).expect("add a version of key 1");
        db.rotate_key(1, RotationPolicy::Reencrypt)
            .expect("rotate key 1");
    }
}

/// A run directory with a key file of [`KEY_IDS`], and the source that edits it.
fn key_file_dir() -> (RunDir, KeyFileSource) {
    let dir = RunDir::new();
    let keys = KeyFile::generate(&KEY_IDS, 256, true).expect("generate keys");
    let source = KeyFileSource::plain(&dir.keyfile);
    source.create(&keys).expect("write the key file");
    (dir, source)
}

/// A database with one table `t` of 200 records and `encryption_threads = 0`, so passes
/// run only inside `wait_for_encryption` and key generations pile up meanwhile.
fn table_t_without_encryption_threads(dir: &RunDir) -> Db {
    let db = Db::open(&dir.db, options(&dir.keyfile, 0).encryption_threads(0))
        .expect("create the database");
    let table = db
        .create_table("t", TableOptions::default())
        .expect("create a table");
    for i in 0..200u32 {
        db.put(&table, format!("k{i:04}").as_bytes(), &[7u8; 300])
            .expect("put");
    }
    db
}

/// The same deferral, with a key reload while the pass is pending: the reload's age rule
/// must not weaken the operator's request (found in review: the table ended on versions
/// 4 and 5 with no pass running, so removing version 4 from the key file would have made
/// it unopenable).
#[test]
fn a_deferred_rotation_survives_a_key_reload_before_the_pass_finishes() {
    if std::env::var_os(ENV_CHILD).is_some() {
        return;
    }
    let (dir, source) = key_file_dir();
    let db = table_t_without_encryption_threads(&dir);
    rotate_key_1(&db, &source, 4);
    db.reload_keys().expect("reload the key file");
    db.wait_for_encryption(|_| {}).expect("the passes finish");
    let rows = db.encryption_status().expect("status");
    let t = status_row(&rows, "t").expect("a row for t");
    assert_eq!(
        (t.min_key_version, t.current_key_version, t.rotating),
        (5, 5, false),
        "every page must end on the newest version of key 1: {t:?}"
    );
    db.verify().expect("verify");
    db.close().expect("close");
}
