//! Crash safety under `SIGKILL`: a writer process is killed at random moments, and after
//! every kill the database must hold exactly the committed transactions.
//!
//! ## The harness
//!
//! The test binary runs itself as the writer: `crash_writer_child` does nothing unless
//! `STRONGBOX_CRASH_CHILD` names a data directory, and the parent test spawns
//! `current_exe() crash_writer_child --exact --nocapture --test-threads=1` with that variable
//! set. Each cycle:
//!
//! ```text
//!   parent                                   writer child (cycle c)
//!   ------                                   ----------------------
//!   spawn child ───────────────────────────▶ Db::open (recovery)
//!   sleep 30..400 ms                         for n = 1, 2, …:  T = c·1 000 000 + n
//!                                              begin; writes(T); then by T:
//!                                                commit  → append T to commits-c.txt, fsync
//!                                                rollback (T % 7 == 3)
//!                                                drop     (T % 11 == 5)
//!   SIGKILL, wait ─────────────────────────▶ ✝
//!   Db::open (recovery), check, close
//! ```
//!
//! The database is encrypted (a MariaDB-format key file with keys 1 and 2; table `c` uses
//! key 2), with 4 KiB pages and a 1 MiB buffer pool so that eviction and the page cleaner
//! write pages all the time, and 128 KiB redo-log segments so that the log rolls over and
//! checkpoints during a cycle.
//!
//! The child's side file, the spawning and killing, the model and the comparison are the
//! crash tests' shared machinery (`common/crash/`); this file holds the workload's shape
//! and the checks' sequence.
//!
//! ## The model
//!
//! The writes of transaction `T` are a pure function of the workload seed and `T`
//! ([`writes`]): one to four keys of slot `T % 257` in tables `a` and `b` (and sometimes `c`),
//! the hot keys `a/counter` and `b/hot{T % 3}`, and deletes of slot `T + 128` (written half a
//! lap of slots earlier). Every value starts with `"{T}:"`, so any value found names the
//! transaction that wrote it; a few values are longer than a page (overflow chains). The
//! expected contents are the committed transactions replayed in order.
//!
//! ## The checks, after every kill
//!
//! 1. The side file lists exactly the first k committing transactions of the cycle (a torn
//!    last line counts as not recorded).
//! 2. Let R be the model after the recorded transactions, and U the next committing
//!    transaction (the one whose commit may have returned just before the kill, unrecorded).
//!    A full scan of every table must equal R, or R plus all of U: every recorded transaction
//!    fully present, U all or nothing, nothing rolled back and nothing later visible. A
//!    mismatch is explained key by key, naming the transaction behind each value.
//! 3. Point reads agree with the scan (including `a/counter`, the newest committed id).
//! 4. `Db::verify` passes and `Db::close` succeeds. The next cycle reuses the directory.
//!
//! On a failure the temporary directory (database, key file, side files, the last child's
//! log) is kept and its path printed.
//!
//! ## Running it
//!
//! The default run is 50 cycles. A soak runs thousands:
//!
//! ```text
//! STRONGBOX_CRASH_CYCLES=5000 cargo test --release -p strongbox-engine --test crash_kill -- --nocapture
//! ```
//!
//! The seed is printed; `STRONGBOX_CRASH_SEED=<seed>` repeats the key file, the workload and
//! the kill delays. Where a kill lands in the writer's work still depends on scheduling, so a
//! replay explores the same neighbourhood rather than the identical interleaving.

mod common;

use common::crash::acks::AckFile;
use common::crash::child::{
    child_command, child_env, kill_child, open_in_child, write_until_killed, KillAt, RunDir,
};
use common::crash::compare::{open_tables, Outcomes};
use common::crash::workload::{txn_rng, Layout, Model, Write};
use common::crash::{env_u64, fresh_seed};
use common::Rng;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strongbox_engine::page::PageSize;
use strongbox_engine::{Db, EncryptTables, FlushAtCommit, Options, TableOptions};

// ---- settings -------------------------------------------------------------------------------

/// The writer child's data directory; its presence makes `crash_writer_child` run.
const ENV_CHILD: &str = "STRONGBOX_CRASH_CHILD";
/// The child's key file, side file, cycle number and workload seed.
const ENV_KEYFILE: &str = "STRONGBOX_CRASH_KEYFILE";
const ENV_SIDE_FILE: &str = "STRONGBOX_CRASH_SIDE_FILE";
const ENV_CYCLE: &str = "STRONGBOX_CRASH_CYCLE";
const ENV_WORKLOAD_SEED: &str = "STRONGBOX_CRASH_WORKLOAD_SEED";
/// Parent settings: the number of cycles and the seed.
const ENV_CYCLES: &str = "STRONGBOX_CRASH_CYCLES";
const ENV_SEED: &str = "STRONGBOX_CRASH_SEED";

const DEFAULT_CYCLES: u64 = 50;
/// The parent kills the child this many milliseconds after spawning it.
const KILL_AFTER_MS: std::ops::Range<usize> = 30..400;

/// Tables `a`, `b` and `c`; values are `"{T}:{table}/{key}:"` and padding.
const LAYOUT: Layout = Layout {
    tables: &["a", "b", "c"],
    slot_digits: 3,
    tag: b":",
    // Mostly small values, some near the inline limit of a 4 KiB page, 2% overflow chains.
    paddings: &[
        (60, 0..200),
        (90, 200..1500),
        (98, 1500..4000),
        (100, PAGE_SIZE..PAGE_SIZE + 16 * 1024),
    ],
};
/// Index of table `c` in [`LAYOUT`], the one encrypted with key 2.
const TABLE_C: usize = 2;
/// Key slots per table; prime, so consecutive ids and the fates (mod 7, mod 11) mix well.
const SLOTS: u64 = 257;
/// At most this many keys per slot and table (`s{slot}/{0..KEYS_PER_SLOT}`).
const KEYS_PER_SLOT: usize = 4;
/// Hot keys `b/hot0..hot{HOT_KEYS}`, overwritten by every transaction in turn.
const HOT_KEYS: u64 = 3;

const PAGE_SIZE: usize = 4096;
/// 256 frames: far fewer than the data, so pages are evicted and written during a cycle.
const POOL_BYTES: usize = 1 << 20;
const LOG_FILE_SIZE: u64 = 128 * 1024;

/// The options of every open, in the parent and in the child.
fn options(keyfile: &Path) -> Options {
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
}

fn table_options(table: usize) -> TableOptions {
    if table == TABLE_C {
        TableOptions::default().encryption_key_id(2)
    } else {
        TableOptions::default()
    }
}

// ---- the workload ---------------------------------------------------------------------------

/// Everything transaction `id` writes, in order (a later write of the same key wins).
fn writes(seed: u64, id: u64) -> Vec<Write> {
    let mut rng = txn_rng(seed, id);
    let mut out = Vec::new();
    let slot = id % SLOTS;
    for table in 0..LAYOUT.tables.len() {
        if table == TABLE_C && rng.percent(50) {
            continue;
        }
        for j in 0..1 + rng.below(KEYS_PER_SLOT) {
            let len = LAYOUT.padding(&mut rng);
            out.push(LAYOUT.put(id, table, LAYOUT.slot_key(slot, j), len));
        }
    }
    out.push(LAYOUT.put(id, 0, b"counter".to_vec(), 0));
    let len = LAYOUT.padding(&mut rng);
    out.push(LAYOUT.put(id, 1, format!("hot{}", id % HOT_KEYS).into_bytes(), len));
    let old = (slot + SLOTS / 2) % SLOTS;
    for j in 0..KEYS_PER_SLOT {
        out.push(Write::delete(TABLE_C, LAYOUT.slot_key(old, j)));
    }
    out.push(Write::delete(
        0,
        LAYOUT.slot_key(old, rng.below(KEYS_PER_SLOT)),
    ));
    out
}

// ---- the writer child -----------------------------------------------------------------------

/// The writer process. Runs only when the parent test spawns this binary with
/// `STRONGBOX_CRASH_CHILD` set; commits until it is killed.
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(ENV_CHILD) else {
        return;
    };
    let keyfile = PathBuf::from(child_env(ENV_KEYFILE));
    let cycle: u64 = child_env(ENV_CYCLE).parse().expect("a cycle number");
    let seed: u64 = child_env(ENV_WORKLOAD_SEED)
        .parse()
        .expect("a workload seed");

    let (db, tables) = open_in_child(Path::new(&dir), options(&keyfile), LAYOUT.tables);
    let mut side = AckFile::open(&PathBuf::from(child_env(ENV_SIDE_FILE)), true);
    write_until_killed(&db, &tables, cycle, |id| writes(seed, id), &mut side);
    db.close().expect("close");
}

// ---- the parent -----------------------------------------------------------------------------

#[test]
fn sigkill_during_commits_keeps_every_recorded_txn_and_no_partial_one() {
    if std::env::var_os(ENV_CHILD).is_some() {
        return;
    }
    let cycles = env_u64(ENV_CYCLES).unwrap_or(DEFAULT_CYCLES);
    let seed = env_u64(ENV_SEED).unwrap_or_else(fresh_seed);
    println!("crash_kill: {cycles} cycles, seed {seed} (replay with {ENV_SEED}={seed})");

    let mut dir = RunDir::new();
    write_keyfile(&dir.keyfile, seed);
    {
        let db = Db::open(&dir.db, options(&dir.keyfile)).expect("create the database");
        for (i, name) in LAYOUT.tables.iter().enumerate() {
            db.create_table(name, table_options(i))
                .expect("create a table");
        }
        db.close().expect("close the new database");
    }

    let mut model = Model::new(LAYOUT.tables.len());
    let mut rng = Rng::new(seed);
    let mut totals = Totals::default();
    let started = Instant::now();
    for cycle in 1..=cycles {
        let kill_after =
            Duration::from_millis((KILL_AFTER_MS.start + rng.below(KILL_AFTER_MS.len())) as u64);
        let result = kill_writer(&dir, seed, cycle, kill_after)
            .and_then(|()| check_after_kill(&dir, seed, cycle, &mut model, &mut totals));
        if let Err(problem) = result {
            dir.fail(
                &format!(
                    "crash_kill cycle {cycle} of {cycles} (seed {seed}, killed after {} ms): \
                     {problem}",
                    kill_after.as_millis(),
                ),
                &format!("{ENV_SEED}={seed}"),
            );
        }
        if cycle % (cycles / 10).max(1) == 0 {
            println!(
                "crash_kill: cycle {cycle}/{cycles}: {} txns recorded so far, {} unrecorded \
                 commits found present, {} absent ({:.1} s)",
                totals.recorded,
                totals.unrecorded_present,
                totals.unrecorded_absent,
                started.elapsed().as_secs_f64(),
            );
        }
    }
    println!(
        "crash_kill: {cycles} cycles passed; {} txns committed in all, the newest {}",
        model.applied,
        model.newest().unwrap_or(0),
    );
}

#[derive(Debug, Default)]
struct Totals {
    recorded: u64,
    unrecorded_present: u64,
    unrecorded_absent: u64,
}

/// Spawns the writer for `cycle`, lets it run for `kill_after`, then kills it.
fn kill_writer(dir: &RunDir, seed: u64, cycle: u64, kill_after: Duration) -> Result<(), String> {
    let child = child_command("crash_writer_child", &dir.child_log)
        .and_then(|mut command| {
            command
                .env(ENV_CHILD, &dir.db)
                .env(ENV_KEYFILE, &dir.keyfile)
                .env(ENV_SIDE_FILE, dir.commits(cycle))
                .env(ENV_CYCLE, cycle.to_string())
                .env(ENV_WORKLOAD_SEED, seed.to_string())
                .spawn()
        })
        .map_err(|e| format!("spawn failed: {e}"))?;
    kill_child(child, &KillAt::Delay(kill_after), || Ok(()))
}

// ---- the checks -----------------------------------------------------------------------------

/// Opens (recovers) the database after the kill of cycle `cycle` and checks it against
/// `model`, which it advances to the recovered state.
fn check_after_kill(
    dir: &RunDir,
    seed: u64,
    cycle: u64,
    model: &mut Model,
    totals: &mut Totals,
) -> Result<(), String> {
    let outcomes = Outcomes::after_kill(&LAYOUT, model, cycle, &dir.commits(cycle), |id| {
        writes(seed, id)
    })?;
    let db = Db::open(&dir.db, options(&dir.keyfile))
        .map_err(|e| format!("Db::open (recovery) failed: {e}"))?;
    let tables = open_tables(&db, LAYOUT.tables)?;
    let unrecorded_present = outcomes.check_tables(&db, &tables)?;
    outcomes.check_point_reads(&db, &tables, unrecorded_present)?;
    db.verify()
        .map_err(|e| format!("verify() failed after recovery: {e}"))?;
    db.close().map_err(|e| format!("close failed: {e}"))?;

    totals.recorded += outcomes.acked() as u64;
    if unrecorded_present {
        totals.unrecorded_present += 1;
    } else {
        totals.unrecorded_absent += 1;
    }
    *model = outcomes.into_recovered(unrecorded_present);
    Ok(())
}

// ---- set-up helpers -------------------------------------------------------------------------

/// A MariaDB-format key file with 256-bit keys 1 and 2 drawn from `seed`, readable only by
/// the owner.
fn write_keyfile(path: &Path, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x6B65_7966_696C_6521);
    let mut text = String::new();
    for id in [1, 2] {
        let hex: String = (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect();
        text.push_str(&format!("{id};{hex}\n"));
    }
    let mut open = OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    open.open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .expect("write the key file");
}
