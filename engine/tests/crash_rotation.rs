//! Key rotation, rewrap and online ALTER under `SIGKILL`: a child process rotates keys or
//! alters a table while it writes, is killed at a random moment, and the parent reopens the
//! database from a real directory with a real key file and checks what survived.
//!
//! `engine/tests/rotation.rs` tests the same features in one process on a `MemVfs`. Here
//! the key file on disk is what the two processes share: the parent appends key versions
//! to it (as an operator would, `KeyFileSource::rotate`, an atomic rename) and the child's
//! `rotate_key` re-reads it; old versions are removed from it to prove nothing needs them.
//!
//! ## The harness
//!
//! As in `crash_kill.rs`, the test binary is its own child: `rotation_crash_child` does
//! nothing unless `STRONGBOX_ROTATION_CRASH_CHILD` names a scenario, and the parent spawns
//! `current_exe() rotation_crash_child --exact --nocapture --test-threads=1` with it set.
//!
//! ```text
//!   parent                                    child (cycle c)
//!   ------                                    ---------------
//!   edit the key file (scenario) ───────────▶ Db::open (recovery; resumes passes)
//!   poll events-c.txt; edit the key file      writer thread: txn c·1 000 000 + n, n = 1, 2, …
//!   SIGKILL at a random moment (often a         commit → append the id to commits-c.txt
//!   random delay after the child's first      main thread: the scenario's rotations or
//!   acknowledgement)                            ALTERs; each acknowledged in events-c.txt
//!   wait ───────────────────────────────────▶ ✝
//!   Db::open (recovery), checks, close, key-file edits, reopen, checks, close
//! ```
//!
//! The child acknowledges as `crash_kill.rs` does, in side files, each line written only
//! after the call it reports returned (the protocol, the spawning and killing, the model
//! and the data comparison are the crash tests' shared machinery, `common/crash/`):
//!
//! | file              | line                     | written after                            |
//! |-------------------|--------------------------|------------------------------------------|
//! | `commits-c.txt`   | `{id:020}`               | `commit()` of transaction `id`           |
//! | `events-c.txt`    | `rotate {key_id} {v}`    | `rotate_key(key_id, Reencrypt)` (scen. 1) |
//! |                   | `encrypted {key_id} {v}` | the `wait_for_encryption` after it       |
//! |                   | `rewrap {v}`             | `rotate_key(1, Rewrap)` returned `v` (2) |
//! |                   | `alter-start {n}`        | nothing: ALTER `n` is about to start (3) |
//! |                   | `alter {n}`              | `alter_table` for ALTER `n`              |
//! |                   | `alter-done {n}`         | the `wait_for_encryption` after it       |
//!
//! No `fsync`: a `SIGKILL` keeps everything a `write` handed to the kernel. A last line
//! without its newline was cut by the kill and counts as not written. Most kills come a
//! random delay after the child's first acknowledgement of the cycle (so inside the work
//! the scenario is about); a quarter come a short random delay after the spawn, which
//! also lands some in the child's own recovery or before its first call.
//!
//! The database: 4 KiB pages, a 1 MiB buffer pool, 256 KiB redo segments, the redo log
//! encrypted, the doublewrite on, two encryption threads. The child paces re-encryption at
//! [`CHILD_IOPS`] so a pass over a table takes long enough to be interrupted; the parent
//! runs unpaced to finish the passes quickly. The key file has keys 1, 2 and 5, 256-bit,
//! in the explicit `id;version;hex` form.
//!
//! ## The data model
//!
//! As in `crash_kill.rs`: the writes of transaction `T` are a pure function of the seed and
//! `T` ([`writes`]) — one to three keys of slot `T % SLOTS` in tables `a` and `b`, the key
//! `a/counter`, and a delete half a lap of slots away; `T % 7 == 3` rolls back, `T % 11 ==
//! 5` is dropped. Every value starts with `"{T}:"` and holds [`MARKER`] (to look for
//! plaintext in files). After a kill the tables must equal the model after the recorded
//! commits, or that plus the next committing transaction (whose commit may have returned
//! just before the kill): nothing acknowledged lost, nothing partial, nothing else.
//!
//! ## The scenarios and their checks
//!
//! 1. **Re-encryption** ([`kill_during_reencryption`]). Table `a` uses key 1 (with the
//!    system space), `b` key 5. Before each cycle the parent appends a version of key 1
//!    (odd cycles) or 5 (even cycles); the child calls `rotate_key(id, Reencrypt)`, then
//!    `wait_for_encryption`. After the kill: recovery succeeds and the data matches; if
//!    the rotation was acknowledged, page 0 of every space under the key already names the
//!    new version and `wait_for_encryption` alone (no second `rotate_key`) finishes every
//!    pass; otherwise the parent issues the rotation again. Then every encrypted space has
//!    `min_key_version == current_key_version ==` its key's latest version; the old
//!    versions are removed from the key file; every page of every tablespace file, read
//!    with [`inspect_file`] and the trimmed key file, decrypts and carries exactly that
//!    version (pages are read lazily, so only this proves a finished pass left none
//!    behind); and the database opens with the data intact. Every fourth cycle kills well
//!    inside the paced pass, and the run fails if no kill landed inside one.
//! 2. **Rewrap** ([`kill_during_rewrap`]). The parent appends versions of key 1 before and
//!    every [`REWRAP_ADD_EVERY`] during the cycle; the child calls `rotate_key(1, Rewrap)`
//!    in a loop. After the kill the database opens with the key file as it is; every
//!    version older than the last acknowledged rewrap can be removed at once; after one
//!    more rewrap (no crash) every version but the latest can be removed, every page of
//!    every tablespace file still decrypts, and the database opens with the data intact.
//! 3. **ALTER** ([`kill_during_alter`]). The child steps table `b` through [`SETTINGS`]
//!    (encrypted with key 5, plain, key 1, key 5, default, plain, …) while writing to it,
//!    sometimes waiting for the pass. After the kill and `wait_for_encryption`, `b` must be
//!    in the state of the last acknowledged ALTER or of the one in flight (never a third,
//!    never half-way), no pass running, `min_key_version == current_key_version`, every
//!    page of its file sealed with that generation (or plain, if it is plain) and no
//!    [`MARKER`] in the file when encrypted; table `a` unchanged; `Db::verify` passes; and
//!    a second reopen must find nothing left to do (the catalog agrees with page 0).
//!
//! On a failure the temporary directory (database, key file, side files, the last child's
//! log) is kept and its path printed.
//!
//! ## Running it
//!
//! Each scenario runs [`DEFAULT_CYCLES`] kill cycles. A soak runs more:
//!
//! ```text
//! STRONGBOX_ROTATION_CRASH_CYCLES=300 cargo test --release -p strongbox-engine \
//!     --test crash_rotation -- --nocapture
//! ```
//!
//! The seed is printed; `STRONGBOX_ROTATION_CRASH_SEED=<seed>` repeats the workload and the
//! kill delays (not the scheduling, so not the exact interleaving).

mod common;

use common::crash::acks::{read_events, AckFile};
use common::crash::child::{
    child_command, child_env, kill_child, open_in_child, write_until_killed, KillAt, RunDir,
};
use common::crash::compare::{
    check_gets, diff_lines, differences, open_tables, scan_all, Outcomes,
};
use common::crash::setting::{status, status_row, wait, Setting};
use common::crash::workload::{committing_ids, txn_rng, write_all, Layout, Model, Write};
use common::crash::{env_u64, fresh_seed};
use common::Rng;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};
use strongbox_engine::inspect::{inspect_file, PageStatus};
use strongbox_engine::io::StdVfs;
use strongbox_engine::page::PageSize;
use strongbox_engine::space;
use strongbox_engine::{
    Db, EncryptTables, EncryptionStatus, FlushAtCommit, Options, RotationPolicy, Table,
    TableOptions,
};
use strongbox_keyring::keyfile::KeyFile;
use strongbox_keyring::provider::FileKeyProvider;
use strongbox_keyring::source::KeyFileSource;

// ---- settings -------------------------------------------------------------------------------

/// The scenario the child runs; its presence makes `rotation_crash_child` run.
const ENV_CHILD: &str = "STRONGBOX_ROTATION_CRASH_CHILD";
/// The child's data directory, key file, side files, cycle and workload seed.
const ENV_DIR: &str = "STRONGBOX_ROTATION_CRASH_DIR";
const ENV_KEYFILE: &str = "STRONGBOX_ROTATION_CRASH_KEYFILE";
const ENV_COMMITS: &str = "STRONGBOX_ROTATION_CRASH_COMMITS";
const ENV_EVENTS: &str = "STRONGBOX_ROTATION_CRASH_EVENTS";
const ENV_CYCLE: &str = "STRONGBOX_ROTATION_CRASH_CYCLE";
const ENV_WORKLOAD_SEED: &str = "STRONGBOX_ROTATION_CRASH_WORKLOAD_SEED";
/// Scenario 1: the key id to rotate and the version the parent added.
const ENV_KEY_ID: &str = "STRONGBOX_ROTATION_CRASH_KEY_ID";
const ENV_VERSION: &str = "STRONGBOX_ROTATION_CRASH_VERSION";
/// Scenario 3: the index in [`SETTINGS`] of table `b`'s current setting.
const ENV_ALTER_FROM: &str = "STRONGBOX_ROTATION_CRASH_ALTER_FROM";
/// Parent settings: cycles per scenario, and the seed.
const ENV_CYCLES: &str = "STRONGBOX_ROTATION_CRASH_CYCLES";
const ENV_SEED: &str = "STRONGBOX_ROTATION_CRASH_SEED";

const DEFAULT_CYCLES: u64 = 10;
/// The fill, the transactions of cycle 0 that the parent commits before the first cycle:
/// the committing ids up to this one, every slot written once.
const FILL_IDS: u64 = SLOTS;

/// Tables `a` and `b`; values are `"{T}:{table}/{key}"`, [`MARKER`] and padding.
const LAYOUT: Layout = Layout {
    tables: &["a", "b"],
    slot_digits: 4,
    tag: MARKER,
    // Mostly small values, some near the inline limit, 2% overflow chains.
    paddings: &[
        (60, 50..300),
        (95, 300..1500),
        (98, 1500..3500),
        (100, PAGE_SIZE..PAGE_SIZE + 8 * 1024),
    ],
};
/// The key id of table `b` in scenarios 1 and 2 (table `a` and the system space use 1).
const TABLE_KEY: u32 = 5;
/// Key slots per table; prime, so ids and the fates (mod 7, mod 11) mix.
const SLOTS: u64 = 1009;
const KEYS_PER_SLOT: usize = 3;
/// In every value: searched for in a tablespace file that must be encrypted.
const MARKER: &[u8] = b"~strongbox-plaintext~";

const PAGE_SIZE: usize = 4096;
const POOL_BYTES: usize = 1 << 20;
const LOG_FILE_SIZE: u64 = 256 * 1024;
/// The child's `encryption_rotation_iops`: a pass over a table of about 950 pages (two
/// paced IOs a page) takes most of a second, so kills land inside it.
const CHILD_IOPS: u32 = 2500;

/// Scenario 1: the kill comes this many milliseconds after the child acknowledged
/// `rotate_key` — in cycles 1, 5, 9, … well inside the paced passes (about 0.9 s), so
/// every run interrupts some; otherwise in three cycles of four within or after them, and
/// in the rest this many milliseconds after the spawn.
const REENCRYPT_KILL_INSIDE_PASS_MS: std::ops::Range<usize> = 0..300;
const REENCRYPT_KILL_AFTER_ACK_MS: std::ops::Range<usize> = 0..1600;
const REENCRYPT_KILL_AFTER_SPAWN_MS: std::ops::Range<usize> = 5..150;
/// Scenario 2: kill this many milliseconds after the first acknowledged rewrap.
const REWRAP_KILL_AFTER_ACK_MS: std::ops::Range<usize> = 0..500;
/// Scenario 2: the parent appends a version of key 1 this often while the child runs.
const REWRAP_ADD_EVERY: Duration = Duration::from_millis(70);
/// Scenario 3: as in scenario 1, after the first acknowledged ALTER or after the spawn.
const ALTER_KILL_AFTER_ACK_MS: std::ops::Range<usize> = 0..800;
const ALTER_KILL_AFTER_SPAWN_MS: std::ops::Range<usize> = 5..150;

/// The options of every open. The child paces re-encryption at [`CHILD_IOPS`]; the parent
/// passes 0 (unpaced).
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

/// What table `b` is put through in scenario 3, in order (index `n % len` for ALTER `n`).
/// Neighbours differ in what `encryption_status` shows, so the parent can tell which of
/// two neighbours the table ended in.
const SETTINGS: [Setting; 6] = [
    Setting::Encrypted(TABLE_KEY),
    Setting::Plain,
    Setting::Encrypted(1),
    Setting::Encrypted(TABLE_KEY),
    Setting::Default,
    Setting::Plain,
];

/// ALTER `n`'s target.
fn setting(n: u64) -> Setting {
    Setting::nth(&SETTINGS, n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Reencrypt,
    Rewrap,
    Alter,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Reencrypt => "reencrypt",
            Scenario::Rewrap => "rewrap",
            Scenario::Alter => "alter",
        }
    }

    fn parse(name: &str) -> Scenario {
        match name {
            "reencrypt" => Scenario::Reencrypt,
            "rewrap" => Scenario::Rewrap,
            "alter" => Scenario::Alter,
            _ => panic!("{ENV_CHILD}={name:?} is not a scenario"),
        }
    }

    /// The options tables `a` and `b` are created with.
    fn table_options(self) -> [TableOptions; 2] {
        match self {
            Scenario::Reencrypt | Scenario::Rewrap => [
                TableOptions::default(),
                TableOptions::default().encryption_key_id(TABLE_KEY),
            ],
            Scenario::Alter => [TableOptions::default(), setting(0).table_options()],
        }
    }
}

// ---- the workload ---------------------------------------------------------------------------

/// Everything transaction `id` writes, in order.
fn writes(seed: u64, id: u64) -> Vec<Write> {
    let mut rng = txn_rng(seed, id);
    let slot = id % SLOTS;
    let mut out = Vec::new();
    for table in 0..LAYOUT.tables.len() {
        for j in 0..1 + rng.below(KEYS_PER_SLOT) {
            let len = LAYOUT.padding(&mut rng);
            out.push(LAYOUT.put(id, table, LAYOUT.slot_key(slot, j), len));
        }
    }
    out.push(LAYOUT.put(id, 0, b"counter".to_vec(), 0));
    let old = (slot + SLOTS / 2) % SLOTS;
    let (table, j) = (rng.below(LAYOUT.tables.len()), rng.below(KEYS_PER_SLOT));
    out.push(Write::delete(table, LAYOUT.slot_key(old, j)));
    out
}

// ---- the child ------------------------------------------------------------------------------

/// The child process. Runs only when a parent test spawns this binary with
/// `STRONGBOX_ROTATION_CRASH_CHILD` set; works until it is killed.
#[test]
fn rotation_crash_child() {
    let Some(scenario) = std::env::var_os(ENV_CHILD) else {
        return;
    };
    let scenario = Scenario::parse(&scenario.to_string_lossy());
    let dir = PathBuf::from(child_env(ENV_DIR));
    let keyfile = PathBuf::from(child_env(ENV_KEYFILE));
    let cycle: u64 = child_env(ENV_CYCLE).parse().expect("a cycle number");
    let seed: u64 = child_env(ENV_WORKLOAD_SEED).parse().expect("a seed");

    let (db, tables) = open_in_child(&dir, options(&keyfile, CHILD_IOPS), LAYOUT.tables);
    let writer = {
        let db = db.clone();
        let mut commits = AckFile::open(&PathBuf::from(child_env(ENV_COMMITS)), false);
        thread::spawn(move || {
            write_until_killed(&db, &tables, cycle, |id| writes(seed, id), &mut commits)
        })
    };
    let mut events = AckFile::open(&PathBuf::from(child_env(ENV_EVENTS)), false);
    let mut rng = Rng::new(seed ^ cycle.wrapping_mul(0xC0FF_EE00_D15E_A5E5));
    match scenario {
        Scenario::Reencrypt => {
            let key_id: u32 = child_env(ENV_KEY_ID).parse().expect("a key id");
            let version: u32 = child_env(ENV_VERSION).parse().expect("a version");
            thread::sleep(Duration::from_millis(rng.below(60) as u64));
            let report = db
                .rotate_key(key_id, RotationPolicy::Reencrypt)
                .unwrap_or_else(|e| panic!("child: rotate_key({key_id}) failed: {e}"));
            assert_eq!(
                report.version, version,
                "child: rotate_key used another version than the parent added"
            );
            events.record(&format!("rotate {key_id} {version}"));
            let rotated = Instant::now();
            db.wait_for_encryption(|_| {})
                .unwrap_or_else(|e| panic!("child: wait_for_encryption failed: {e}"));
            events.record(&format!("encrypted {key_id} {version}"));
            println!("child: the passes took {:?}", rotated.elapsed());
        }
        Scenario::Rewrap => loop {
            let report = db
                .rotate_key(1, RotationPolicy::Rewrap)
                .unwrap_or_else(|e| panic!("child: rotate_key(1, Rewrap) failed: {e}"));
            events.record(&format!("rewrap {}", report.version));
            thread::sleep(Duration::from_millis(5 + rng.below(30) as u64));
        },
        Scenario::Alter => {
            let from: u64 = child_env(ENV_ALTER_FROM).parse().expect("an ALTER index");
            for n in from + 1.. {
                let setting = setting(n);
                events.record(&format!("alter-start {n}"));
                db.alter_table(LAYOUT.tables[1], setting.table_options())
                    .unwrap_or_else(|e| panic!("child: ALTER {n} to {setting:?} failed: {e}"));
                events.record(&format!("alter {n}"));
                if rng.percent(40) {
                    db.wait_for_encryption(|_| {})
                        .unwrap_or_else(|e| panic!("child: wait after ALTER {n} failed: {e}"));
                    events.record(&format!("alter-done {n}"));
                }
                thread::sleep(Duration::from_millis(rng.below(80) as u64));
            }
        }
    }
    // Only the writer is left; it runs until the kill.
    writer.join().expect("the writer thread");
    panic!("child: the writer ran out of transaction ids before the kill");
}

// ---- scenario 1: re-encryption --------------------------------------------------------------

#[test]
fn kill_during_reencryption() {
    let Some(mut run) = Run::start(Scenario::Reencrypt) else {
        return;
    };
    let mut interrupted_passes = 0;
    let mut acknowledged = 0;
    let mut finished_in_child = 0;
    for cycle in 1..=run.cycles {
        let key_id = if cycle % 2 == 1 { 1 } else { TABLE_KEY };
        let outcome = reencrypt_cycle(&mut run, cycle, key_id);
        match outcome {
            Ok(found) => {
                interrupted_passes += u64::from(found.interrupted_pass);
                acknowledged += u64::from(found.acknowledged);
                finished_in_child += u64::from(found.finished_in_child);
            }
            Err(problem) => run.fail(cycle, &problem),
        }
    }
    println!(
        "crash_rotation reencrypt: {} cycles passed ({:.1} s); {acknowledged} rotations \
         acknowledged before the kill, {interrupted_passes} kills cut its pass short, \
         {finished_in_child} came after the child saw the pass finish",
        run.cycles,
        run.started.elapsed().as_secs_f64()
    );
    if run.cycles > 0 {
        assert!(
            interrupted_passes > 0,
            "no kill landed inside a re-encryption pass: the test did not test resumption \
             (is the pass too fast for CHILD_IOPS = {CHILD_IOPS}?)"
        );
    }
}

struct ReencryptCycle {
    acknowledged: bool,
    interrupted_pass: bool,
    finished_in_child: bool,
}

fn reencrypt_cycle(run: &mut Run, cycle: u64, key_id: u32) -> Result<ReencryptCycle, String> {
    let version = run.add_key_version(key_id)?;
    let kill = if cycle % 4 == 1 {
        run.kill_after_event(cycle, "rotate", REENCRYPT_KILL_INSIDE_PASS_MS)
    } else if run.rng.percent(75) {
        run.kill_after_event(cycle, "rotate", REENCRYPT_KILL_AFTER_ACK_MS)
    } else {
        KillAt::Delay(run.millis(REENCRYPT_KILL_AFTER_SPAWN_MS))
    };
    let env = [
        (ENV_KEY_ID, key_id.to_string()),
        (ENV_VERSION, version.to_string()),
    ];
    run.run_child(cycle, &env, kill, || Ok(()))?;
    let events = read_events(&run.paths.events(cycle))?;
    let acknowledged = events
        .iter()
        .any(|e| e == &["rotate", &key_id.to_string(), &version.to_string()]);
    let finished_in_child = events.iter().any(|e| e[0] == "encrypted");

    let db = run.open("Db::open (recovery) after the kill")?;
    let at_open = status(&db)?;
    run.check_data(&db, cycle)?;
    let under_key = |rows: &[EncryptionStatus]| -> Vec<EncryptionStatus> {
        rows.iter()
            .filter(|row| row.scheme != "none" && row.key_id == key_id)
            .cloned()
            .collect()
    };
    if under_key(&at_open).is_empty() {
        return Err(format!("no encrypted space uses key {key_id}: {at_open:?}"));
    }
    let interrupted_pass = acknowledged && !finished_in_child && at_open.iter().any(|r| r.rotating);
    if acknowledged {
        // rotate_key returned: page 0 of every space under the key is durable with the new
        // generation, and the pass it started must finish without being asked again.
        for row in under_key(&at_open) {
            if row.current_key_version != version {
                return Err(format!(
                    "rotate_key({key_id}) to version {version} was acknowledged, yet after \
                     recovery {:?} writes with version {}: {row:?}",
                    row.name, row.current_key_version
                ));
            }
        }
        wait(&db)?;
        for row in under_key(&status(&db)?) {
            if row.rotating || row.min_key_version != version {
                return Err(format!(
                    "the pass of the acknowledged rotation to version {version} did not finish \
                     after the restart: {row:?} (at open: {at_open:?})"
                ));
            }
        }
    } else {
        // An operator runs the rotation that was cut short again.
        wait(&db)?;
        let report = db
            .rotate_key(key_id, RotationPolicy::Reencrypt)
            .map_err(|e| format!("rotate_key({key_id}) after the kill failed: {e}"))?;
        if report.version != version {
            return Err(format!(
                "rotate_key after the kill used version {}, not {version}",
                report.version
            ));
        }
        wait(&db)?;
    }
    check_all_on_latest(&db, &run.paths.keyfile)?;
    run.check_unchanged(&db, "after the rotation finished")?;
    verify(&db)?;
    let rows = status(&db)?;
    close(db)?;

    // Nothing may need the older versions any more: every page of every space is sealed
    // with its key's latest version and decrypts without the older ones.
    run.remove_key_versions(key_id, version)?;
    for row in &rows {
        run.check_pages(row, Expect::AsStatus)?;
    }
    let db = run.open("Db::open without the key's older versions")?;
    check_all_on_latest(&db, &run.paths.keyfile)?;
    run.check_unchanged(&db, "after removing the older key versions")?;
    close(db)?;
    Ok(ReencryptCycle {
        acknowledged,
        interrupted_pass,
        finished_in_child,
    })
}

// ---- scenario 2: rewrap ---------------------------------------------------------------------

#[test]
fn kill_during_rewrap() {
    let Some(mut run) = Run::start(Scenario::Rewrap) else {
        return;
    };
    let mut rewraps = 0;
    for cycle in 1..=run.cycles {
        match rewrap_cycle(&mut run, cycle) {
            Ok(acknowledged) => rewraps += acknowledged,
            Err(problem) => run.fail(cycle, &problem),
        }
    }
    println!(
        "crash_rotation rewrap: {} cycles passed ({:.1} s); {rewraps} rewraps acknowledged",
        run.cycles,
        run.started.elapsed().as_secs_f64()
    );
}

fn rewrap_cycle(run: &mut Run, cycle: u64) -> Result<usize, String> {
    run.add_key_version(1)?;
    let kill = run.kill_after_event(cycle, "rewrap", REWRAP_KILL_AFTER_ACK_MS);
    let keys = KeyFileSource::plain(&run.paths.keyfile);
    let mut last_added = Instant::now();
    run.run_child(cycle, &[], kill, || {
        if last_added.elapsed() >= REWRAP_ADD_EVERY {
            keys.rotate(1, None)
                .map_err(|e| format!("adding a version of key 1 during the cycle: {e}"))?;
            last_added = Instant::now();
        }
        Ok(())
    })?;
    let events = read_events(&run.paths.events(cycle))?;
    let rewrapped: Vec<u32> = events
        .iter()
        .filter(|e| e[0] == "rewrap")
        .map(|e| e[1].parse().map_err(|_| format!("bad event {e:?}")))
        .collect::<Result<_, _>>()?;

    let db = run.open("Db::open (recovery) with the key file as it is")?;
    run.check_data(&db, cycle)?;
    verify(&db)?;
    close(db)?;

    if let Some(&acknowledged) = rewrapped.iter().max() {
        // Every wrap moved to this version before rotate_key returned.
        run.remove_key_versions(1, acknowledged)?;
        let db = run.open(&format!(
            "Db::open without the versions of key 1 older than {acknowledged}, the last \
             acknowledged rewrap"
        ))?;
        run.check_unchanged(
            &db,
            "after removing versions older than the acknowledged rewrap",
        )?;
        close(db)?;
    }

    let db = run.open("Db::open for the final rewrap")?;
    let latest = latest_version(&run.paths.keyfile, 1)?;
    let report = db
        .rotate_key(1, RotationPolicy::Rewrap)
        .map_err(|e| format!("the final rewrap failed: {e}"))?;
    let rows = status(&db)?;
    if report.version != latest || !report.log_rewrapped {
        return Err(format!(
            "the final rewrap reported {report:?}; expected version {latest} and the redo \
             log's key rewrapped"
        ));
    }
    close(db)?;
    run.remove_key_versions(1, latest)?;
    for row in &rows {
        run.check_pages(row, Expect::Readable)?;
    }
    let db = run.open("Db::open with only the latest version of key 1")?;
    run.check_unchanged(&db, "after removing every version but the latest")?;
    verify(&db)?;
    close(db)?;
    Ok(rewrapped.len())
}

// ---- scenario 3: ALTER ----------------------------------------------------------------------

#[test]
fn kill_during_alter() {
    let Some(mut run) = Run::start(Scenario::Alter) else {
        return;
    };
    let mut state = 0u64;
    let mut in_flight_applied = 0;
    let mut alters = 0;
    for cycle in 1..=run.cycles {
        match alter_cycle(&mut run, cycle, state) {
            Ok((next, acknowledged, applied_in_flight)) => {
                alters += acknowledged;
                in_flight_applied += u64::from(applied_in_flight);
                state = next;
            }
            Err(problem) => run.fail(cycle, &problem),
        }
    }
    println!(
        "crash_rotation alter: {} cycles passed ({:.1} s); {alters} ALTERs acknowledged, \
         {in_flight_applied} unacknowledged ALTERs found applied; table b ends as {:?}",
        run.cycles,
        run.started.elapsed().as_secs_f64(),
        setting(state)
    );
}

/// One cycle from ALTER index `from`; returns the index the table ended in, how many
/// ALTERs the child acknowledged, and whether the one in flight took effect.
fn alter_cycle(run: &mut Run, cycle: u64, from: u64) -> Result<(u64, u64, bool), String> {
    let kill = if run.rng.percent(75) {
        run.kill_after_event(cycle, "alter", ALTER_KILL_AFTER_ACK_MS)
    } else {
        KillAt::Delay(run.millis(ALTER_KILL_AFTER_SPAWN_MS))
    };
    run.run_child(
        cycle,
        &[(ENV_ALTER_FROM, from.to_string())],
        kill,
        || Ok(()),
    )?;
    let events = read_events(&run.paths.events(cycle))?;
    let index_of = |kind: &str| -> Result<Option<u64>, String> {
        let mut last = None;
        for event in events.iter().filter(|e| e[0] == kind) {
            let n: u64 = event[1]
                .parse()
                .map_err(|_| format!("bad event {event:?}"))?;
            last = Some(n);
        }
        Ok(last)
    };
    let acknowledged = index_of("alter")?.unwrap_or(from);
    let started = index_of("alter-start")?.unwrap_or(from);
    if started > acknowledged + 1 || acknowledged < from {
        return Err(format!("the events do not follow the protocol: {events:?}"));
    }
    let mut allowed = vec![acknowledged];
    if started == acknowledged + 1 {
        allowed.push(started);
    }

    let db = run.open("Db::open (recovery) after the kill")?;
    run.check_data(&db, cycle)?;
    wait(&db)?;
    let rows = status(&db)?;
    let row = status_row(&rows, LAYOUT.tables[1])?;
    let shown = (row.scheme, row.key_id);
    let Some(&now) = allowed.iter().find(|&&n| setting(n).status() == shown) else {
        let expected: Vec<String> = allowed
            .iter()
            .map(|&n| format!("ALTER {n} = {:?} {:?}", setting(n), setting(n).status()))
            .collect();
        return Err(format!(
            "after recovery and wait_for_encryption table b shows (scheme, key id) {shown:?}, \
             but the last acknowledged ALTER and the one in flight allow only {}: {row:?}",
            expected.join(" or ")
        ));
    };
    if row.rotating
        || row.pages_done != row.pages_total
        || (row.scheme != "none" && row.min_key_version != row.current_key_version)
    {
        return Err(format!(
            "table b is not settled after wait_for_encryption: {row:?}"
        ));
    }
    let a = status_row(&rows, LAYOUT.tables[0])?;
    if (a.scheme, a.key_id, a.rotating) != ("aes_ctr", 1, false) {
        return Err(format!("table a, never altered, changed: {a:?}"));
    }
    run.check_unchanged(&db, "after wait_for_encryption")?;
    verify(&db)?;
    let space_file = run.paths.db.join(format!("space-{}.sbd", row.space_id));
    let (row, a) = (row.clone(), a.clone());
    close(db)?;
    run.check_pages(&a, Expect::AsStatus)?;
    run.check_pages(&row, Expect::AsStatus)?;
    if row.scheme != "none" {
        let hits = count(&space_file, MARKER)?;
        if hits > 0 {
            return Err(format!(
                "table b is encrypted ({row:?}) yet its file {} holds {hits} plaintext values",
                space_file.display()
            ));
        }
    }

    // The catalog and page 0 agree: a reopen finds nothing to do.
    let db = run.open("the second Db::open after the kill")?;
    let again = status(&db)?;
    let row_again = status_row(&again, LAYOUT.tables[1])?;
    if row_again.rotating || (row_again.scheme, row_again.key_id) != shown {
        return Err(format!(
            "a reopen changed table b's encryption again (the catalog disagrees with page 0): \
             {row:?} became {row_again:?}"
        ));
    }
    run.check_unchanged(&db, "after the second reopen")?;
    close(db)?;
    Ok((
        now,
        acknowledged - from,
        now == started && started > acknowledged,
    ))
}

// ---- the parent's harness -------------------------------------------------------------------

/// One scenario's run: its directory, key file, model and random choices.
struct Run {
    scenario: Scenario,
    /// The seed printed for a replay; `seed` is derived from it per scenario.
    replay_seed: u64,
    seed: u64,
    cycles: u64,
    paths: RunDir,
    model: Model,
    rng: Rng,
    started: Instant,
}

impl Run {
    /// Creates the key file and the database with its two tables and the fill; `None` in a
    /// child process (the parent tests do nothing there).
    fn start(scenario: Scenario) -> Option<Run> {
        if std::env::var_os(ENV_CHILD).is_some() {
            return None;
        }
        let cycles = env_u64(ENV_CYCLES).unwrap_or(DEFAULT_CYCLES);
        let replay_seed = env_u64(ENV_SEED).unwrap_or_else(fresh_seed);
        println!(
            "crash_rotation {}: {cycles} cycles, seed {replay_seed} (replay with \
             {ENV_SEED}={replay_seed})",
            scenario.name()
        );
        let paths = RunDir::new();
        let keys = KeyFile::generate(&[1, 2, TABLE_KEY], 256, true).expect("generate keys");
        KeyFileSource::plain(&paths.keyfile)
            .create(&keys)
            .expect("write the key file");

        let seed = replay_seed ^ (scenario as u64).wrapping_mul(0x5DEE_CE66_D1CE_4E5B);
        let mut model = Model::new(LAYOUT.tables.len());
        let db = Db::open(&paths.db, options(&paths.keyfile, 0)).expect("create the database");
        let tables: Vec<Table> = LAYOUT
            .tables
            .iter()
            .zip(scenario.table_options())
            .map(|(name, options)| db.create_table(name, options).expect("create a table"))
            .collect();
        let fill: Vec<u64> = committing_ids(0).take_while(|&id| id <= FILL_IDS).collect();
        for chunk in fill.chunks(64) {
            let mut txn = db.begin().expect("begin");
            for &id in chunk {
                let writes = writes(seed, id);
                write_all(&mut txn, &tables, &writes).expect("fill");
                model.apply(id, writes);
            }
            txn.commit().expect("commit the fill");
        }
        db.wait_for_encryption(|_| {})
            .expect("the new tables settle");
        db.close().expect("close the new database");
        Some(Run {
            scenario,
            replay_seed,
            seed,
            cycles,
            paths,
            model,
            rng: Rng::new(seed),
            started: Instant::now(),
        })
    }

    /// Keeps the directory and panics with `problem` and the child's last lines.
    fn fail(&mut self, cycle: u64, problem: &str) -> ! {
        let what = format!(
            "crash_rotation {} cycle {cycle} of {}: {problem}",
            self.scenario.name(),
            self.cycles,
        );
        self.paths
            .fail(&what, &format!("{ENV_SEED}={}", self.replay_seed))
    }

    fn millis(&mut self, range: std::ops::Range<usize>) -> Duration {
        Duration::from_millis((range.start + self.rng.below(range.len())) as u64)
    }

    /// Kills the child of `cycle` a random delay in `range_ms` after it first records an
    /// event of kind `event`.
    fn kill_after_event(
        &mut self,
        cycle: u64,
        event: &'static str,
        range_ms: std::ops::Range<usize>,
    ) -> KillAt {
        KillAt::AfterEvent {
            events: self.paths.events(cycle),
            event,
            delay: self.millis(range_ms),
        }
    }

    fn open(&self, what: &str) -> Result<Db, String> {
        Db::open(&self.paths.db, options(&self.paths.keyfile, 0))
            .map_err(|e| format!("{what} failed: {e}"))
    }

    /// Appends a version of `key_id` to the key file; returns its number.
    fn add_key_version(&self, key_id: u32) -> Result<u32, String> {
        KeyFileSource::plain(&self.paths.keyfile)
            .rotate(key_id, None)
            .map_err(|e| format!("adding a version of key {key_id}: {e}"))
    }

    /// Removes every version of `key_id` below `keep` from the key file.
    fn remove_key_versions(&self, key_id: u32, keep: u32) -> Result<(), String> {
        let source = KeyFileSource::plain(&self.paths.keyfile);
        let mut keys = source
            .load()
            .map_err(|e| format!("reading the key file: {e}"))?
            .keys;
        for version in 1..keep {
            keys.remove_version(key_id, version);
        }
        source
            .save(&keys)
            .map_err(|e| format!("writing the key file: {e}"))
    }

    /// Spawns the child for `cycle`, kills it as `kill` says, calling `tick` every poll.
    fn run_child(
        &self,
        cycle: u64,
        extra_env: &[(&str, String)],
        kill: KillAt,
        tick: impl FnMut() -> Result<(), String>,
    ) -> Result<(), String> {
        let child = child_command("rotation_crash_child", &self.paths.child_log)
            .and_then(|mut command| {
                command
                    .env(ENV_CHILD, self.scenario.name())
                    .env(ENV_DIR, &self.paths.db)
                    .env(ENV_KEYFILE, &self.paths.keyfile)
                    .env(ENV_COMMITS, self.paths.commits(cycle))
                    .env(ENV_EVENTS, self.paths.events(cycle))
                    .env(ENV_CYCLE, cycle.to_string())
                    .env(ENV_WORKLOAD_SEED, self.seed.to_string());
                for (name, value) in extra_env {
                    command.env(name, value);
                }
                command.spawn()
            })
            .map_err(|e| format!("spawn failed: {e}"))?;
        kill_child(child, &kill, tick)
    }

    /// Checks the tables after the kill of `cycle` against the recorded commits (see the
    /// module doc) and advances the model to what was found.
    fn check_data(&mut self, db: &Db, cycle: u64) -> Result<(), String> {
        let seed = self.seed;
        let outcomes = Outcomes::after_kill(
            &LAYOUT,
            &self.model,
            cycle,
            &self.paths.commits(cycle),
            |id| writes(seed, id),
        )?;
        let tables = open_tables(db, LAYOUT.tables)?;
        let unrecorded_present = outcomes.check_tables(db, &tables)?;
        self.model = outcomes.into_recovered(unrecorded_present);
        check_point_reads(db, &tables, &self.model, self.seed)
    }

    /// Reads every page of `row`'s tablespace file (the database closed) with the keys in
    /// the key file: each must decrypt (or never have been written) and, with
    /// [`Expect::AsStatus`], be sealed as the status row says — with the current generation,
    /// or plain. Pages are read lazily, so this is what proves that a finished pass left no
    /// page behind, including free pages no scan reaches.
    fn check_pages(&self, row: &EncryptionStatus, expect: Expect) -> Result<(), String> {
        if row.space_id == space::TEMP_SPACE_ID {
            return Ok(()); // recreated at every open
        }
        let source = KeyFileSource::plain(&self.paths.keyfile);
        let (keys, _) =
            FileKeyProvider::open(source).map_err(|e| format!("reading the key file: {e}"))?;
        let path = self.paths.db.join(space::file_name(row.space_id));
        let report = inspect_file(&StdVfs, &path, Some(&keys), None)
            .map_err(|e| format!("inspecting {}: {e}", path.display()))?;
        let want = (row.scheme != "none").then_some((row.key_id, row.current_key_version));
        let mut bad = Vec::new();
        let data_pages = report.header.page_count;
        for page in report
            .pages
            .iter()
            .filter(|p| (1..data_pages).contains(&p.page_no))
        {
            let sealed = page
                .header
                .as_ref()
                .and_then(|h| h.cipher.map(|_| (h.key_id, h.key_version)));
            let problem = match &page.status {
                PageStatus::Empty => continue,
                PageStatus::Ok if expect == Expect::Readable || sealed == want => continue,
                PageStatus::Ok => format!("sealed {sealed:?}"),
                PageStatus::NotDecrypted(why) | PageStatus::Bad(why) => why.clone(),
            };
            bad.push(format!("page {}: {problem}", page.page_no));
        }
        if bad.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} of the {} data pages of {} (status {row:?}) are not {}:\n  {}",
            bad.len(),
            data_pages.saturating_sub(1),
            path.display(),
            match expect {
                Expect::Readable => "readable with the key file".to_string(),
                Expect::AsStatus => format!("sealed {want:?} (key id, version; None = plain)"),
            },
            bad[..bad.len().min(10)].join("\n  ")
        ))
    }

    /// The tables still hold exactly the model.
    fn check_unchanged(&self, db: &Db, when: &str) -> Result<(), String> {
        let found = scan_all(db, &open_tables(db, LAYOUT.tables)?)?;
        if found != self.model.tables {
            let lines = diff_lines(&LAYOUT, &found, &self.model.tables, &|id| {
                format!("txn {id}")
            });
            return Err(format!(
                "{when} the tables changed: {} keys differ from the recovered state\n{}",
                differences(&found, &self.model.tables).len(),
                lines.join("\n")
            ));
        }
        Ok(())
    }
}

/// What [`Run::check_pages`] requires of every page besides being readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Nothing more (any generation the header lists).
    Readable,
    /// Sealed with the current generation of the status row, or plain if it is.
    AsStatus,
}

// ---- the checks -----------------------------------------------------------------------------

/// `get` agrees with the model for `a/counter` and a sample of keys, present or not.
fn check_point_reads(db: &Db, tables: &[Table], model: &Model, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed ^ model.last_committed.values().sum::<u64>());
    let mut keys: BTreeSet<(usize, Vec<u8>)> = BTreeSet::from([(0, b"counter".to_vec())]);
    for _ in 0..64 {
        let slot = rng.below(SLOTS as usize) as u64;
        keys.insert((
            rng.below(LAYOUT.tables.len()),
            LAYOUT.slot_key(slot, rng.below(KEYS_PER_SLOT)),
        ));
    }
    let keys = keys.iter().map(|(i, key)| (*i, key.as_slice()));
    check_gets(&LAYOUT, db, tables, &model.tables, keys)
}

fn verify(db: &Db) -> Result<(), String> {
    db.verify()
        .map(drop)
        .map_err(|e| format!("verify() failed: {e}"))
}

fn close(db: Db) -> Result<(), String> {
    db.close().map_err(|e| format!("close failed: {e}"))
}

/// Every encrypted space is settled on the latest version of its key: one generation,
/// no pass running, every page moved.
fn check_all_on_latest(db: &Db, keyfile: &Path) -> Result<(), String> {
    let rows = status(db)?;
    for row in &rows {
        if row.rotating || row.pages_done != row.pages_total {
            return Err(format!("a pass is still running: {row:?}"));
        }
        if row.scheme == "none" {
            continue;
        }
        let latest = latest_version(keyfile, row.key_id)?;
        if row.current_key_version != latest || row.min_key_version != latest {
            return Err(format!(
                "{:?} is not settled on version {latest} of key {} (min must equal current \
                 must equal latest): {row:?}",
                row.name, row.key_id
            ));
        }
    }
    Ok(())
}

fn latest_version(keyfile: &Path, key_id: u32) -> Result<u32, String> {
    KeyFileSource::plain(keyfile)
        .load()
        .map_err(|e| format!("reading the key file: {e}"))?
        .keys
        .latest_version(key_id)
        .ok_or_else(|| format!("the key file has no key {key_id}"))
}

/// How many times `needle` occurs in the file at `path`.
fn count(path: &Path, needle: &[u8]) -> Result<usize, String> {
    let bytes = fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(bytes.windows(needle.len()).filter(|w| *w == needle).count())
}
