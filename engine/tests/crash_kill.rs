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
//!                                                commit  → append T to committed-c.txt, fsync
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

use common::{value_bytes, Rng, Short};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use strongbox_engine::page::PageSize;
use strongbox_engine::{Db, EncryptTables, FlushAtCommit, Options, Table, TableOptions};

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
/// Transaction ids of cycle `c` are `c * IDS_PER_CYCLE + n`, `n >= 1`.
const IDS_PER_CYCLE: u64 = 1_000_000;
/// The parent kills the child this many milliseconds after spawning it.
const KILL_AFTER_MS: std::ops::Range<usize> = 30..400;

const TABLES: [&str; 3] = ["a", "b", "c"];
/// Index of table `c` in [`TABLES`], the one encrypted with key 2.
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

/// How a transaction ends; a pure function of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Commit,
    /// `rollback()` after all its writes.
    Rollback,
    /// Dropped after all its writes, without commit or rollback.
    Drop,
}

fn fate(id: u64) -> Fate {
    if id % 7 == 3 {
        Fate::Rollback
    } else if id % 11 == 5 {
        Fate::Drop
    } else {
        Fate::Commit
    }
}

/// The committing transaction ids of `cycle`, in order.
fn committing_ids(cycle: u64) -> impl Iterator<Item = u64> {
    (cycle * IDS_PER_CYCLE + 1..(cycle + 1) * IDS_PER_CYCLE).filter(|&id| fate(id) == Fate::Commit)
}

/// One write of a transaction: put `value`, or delete when it is `None`.
#[derive(Debug, Clone)]
struct Write {
    table: usize,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// Everything transaction `id` writes, in order (a later write of the same key wins).
fn writes(seed: u64, id: u64) -> Vec<Write> {
    let mut rng = Rng::new(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut out = Vec::new();
    let slot = id % SLOTS;
    for table in 0..TABLES.len() {
        if table == TABLE_C && rng.percent(50) {
            continue;
        }
        for j in 0..1 + rng.below(KEYS_PER_SLOT) {
            let len = value_len(&mut rng);
            out.push(put(id, table, slot_key(slot, j), len));
        }
    }
    out.push(put(id, 0, b"counter".to_vec(), 0));
    let len = value_len(&mut rng);
    out.push(put(
        id,
        1,
        format!("hot{}", id % HOT_KEYS).into_bytes(),
        len,
    ));
    let old = (slot + SLOTS / 2) % SLOTS;
    for j in 0..KEYS_PER_SLOT {
        out.push(delete(TABLE_C, slot_key(old, j)));
    }
    out.push(delete(0, slot_key(old, rng.below(KEYS_PER_SLOT))));
    out
}

fn slot_key(slot: u64, j: usize) -> Vec<u8> {
    format!("s{slot:03}/{j}").into_bytes()
}

/// Mostly small values, some near the inline limit of a 4 KiB page, 2% overflow chains.
fn value_len(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..60 => rng.below(200),
        60..90 => 200 + rng.below(1300),
        90..98 => 1500 + rng.below(2500),
        _ => PAGE_SIZE + rng.below(16 * 1024),
    }
}

/// `"{id}:{table}/{key}:"` followed by `padding` generated bytes.
fn put(id: u64, table: usize, key: Vec<u8>, padding: usize) -> Write {
    let mut value =
        format!("{id}:{}/{}:", TABLES[table], String::from_utf8_lossy(&key)).into_bytes();
    value.extend(value_bytes(id ^ ((table as u64) << 56), padding));
    Write {
        table,
        key,
        value: Some(value),
    }
}

fn delete(table: usize, key: Vec<u8>) -> Write {
    Write {
        table,
        key,
        value: None,
    }
}

/// The transaction a value names (its `"{id}:"` prefix), if it is one of ours.
fn writer_of(value: &[u8]) -> Option<u64> {
    let end = value.iter().position(|&b| b == b':')?;
    std::str::from_utf8(&value[..end]).ok()?.parse().ok()
}

// ---- the writer child -----------------------------------------------------------------------

/// The writer process. Runs only when the parent test spawns this binary with
/// `STRONGBOX_CRASH_CHILD` set; commits until it is killed.
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(ENV_CHILD) else {
        return;
    };
    let env = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("the writer child needs {name}"))
    };
    let keyfile = PathBuf::from(env(ENV_KEYFILE));
    let side_file = PathBuf::from(env(ENV_SIDE_FILE));
    let cycle: u64 = env(ENV_CYCLE).parse().expect("a cycle number");
    let seed: u64 = env(ENV_WORKLOAD_SEED).parse().expect("a workload seed");

    let db = Db::open(&dir, options(&keyfile))
        .unwrap_or_else(|e| panic!("child: Db::open (recovery) failed: {e}"));
    let tables: Vec<Table> = TABLES
        .iter()
        .map(|name| db.table(name).expect("the parent created every table"))
        .collect();
    let mut side = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&side_file)
        .expect("open the side file");
    for id in cycle * IDS_PER_CYCLE + 1..(cycle + 1) * IDS_PER_CYCLE {
        let mut txn = db.begin().expect("begin");
        for write in writes(seed, id) {
            let table = &tables[write.table];
            match &write.value {
                Some(value) => txn.put(table, &write.key, value),
                None => txn.delete(table, &write.key).map(drop),
            }
            .unwrap_or_else(|e| panic!("child: a write of txn {id} failed: {e}"));
        }
        match fate(id) {
            Fate::Commit => {
                txn.commit()
                    .unwrap_or_else(|e| panic!("child: commit of txn {id} failed: {e}"));
                side.write_all(format!("{id:020}\n").as_bytes())
                    .and_then(|()| side.sync_all())
                    .expect("record the commit in the side file");
            }
            Fate::Rollback => txn.rollback().unwrap(),
            Fate::Drop => drop(txn),
        }
    }
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

    let root = tempfile::tempdir().expect("a temporary directory");
    let paths = Paths::new(root.path());
    write_keyfile(&paths.keyfile, seed);
    {
        let db = Db::open(&paths.db, options(&paths.keyfile)).expect("create the database");
        for (i, name) in TABLES.iter().enumerate() {
            db.create_table(name, table_options(i))
                .expect("create a table");
        }
        db.close().expect("close the new database");
    }

    let mut model = Model::default();
    let mut rng = Rng::new(seed);
    let mut totals = Totals::default();
    let started = Instant::now();
    for cycle in 1..=cycles {
        let kill_after =
            Duration::from_millis((KILL_AFTER_MS.start + rng.below(KILL_AFTER_MS.len())) as u64);
        let result = kill_writer(&paths, seed, cycle, kill_after)
            .and_then(|()| check_after_kill(&paths, seed, cycle, &mut model, &mut totals));
        if let Err(problem) = result {
            let log = tail(&paths.child_log, 40);
            let kept = root.keep();
            panic!(
                "crash_kill cycle {cycle} of {cycles} (seed {seed}, killed after {} ms): \
                 {problem}\n\nreplay with {ENV_SEED}={seed}; the database, key file, side \
                 files and child log are kept in {}\n\nlast lines of the writer's log:\n{log}",
                kill_after.as_millis(),
                kept.display(),
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

/// Files of one run, all in one temporary directory.
struct Paths {
    root: PathBuf,
    db: PathBuf,
    keyfile: PathBuf,
    child_log: PathBuf,
}

impl Paths {
    fn new(root: &Path) -> Paths {
        Paths {
            root: root.to_path_buf(),
            db: root.join("db"),
            keyfile: root.join("keys.txt"),
            child_log: root.join("child.log"),
        }
    }

    /// The ids cycle `cycle` committed, one per line.
    fn side_file(&self, cycle: u64) -> PathBuf {
        self.root.join(format!("committed-{cycle:05}.txt"))
    }
}

/// Spawns the writer for `cycle`, lets it run for `kill_after`, then kills it.
fn kill_writer(paths: &Paths, seed: u64, cycle: u64, kill_after: Duration) -> Result<(), String> {
    let mut child = spawn_writer(paths, seed, cycle).map_err(|e| format!("spawn failed: {e}"))?;
    thread::sleep(kill_after);
    if let Some(status) = child
        .try_wait()
        .map_err(|e| format!("try_wait failed: {e}"))?
    {
        return Err(format!(
            "the writer exited on its own ({status}) before it was killed"
        ));
    }
    child.kill().map_err(|e| format!("kill failed: {e}"))?;
    let status = child.wait().map_err(|e| format!("wait failed: {e}"))?;
    if killed(status) {
        Ok(())
    } else {
        Err(format!(
            "the writer exited on its own ({status}) just before it was killed"
        ))
    }
}

fn spawn_writer(paths: &Paths, seed: u64, cycle: u64) -> std::io::Result<Child> {
    let log = File::create(&paths.child_log)?;
    let log_too = log.try_clone()?;
    Command::new(std::env::current_exe()?)
        .args([
            "crash_writer_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_CHILD, &paths.db)
        .env(ENV_KEYFILE, &paths.keyfile)
        .env(ENV_SIDE_FILE, paths.side_file(cycle))
        .env(ENV_CYCLE, cycle.to_string())
        .env(ENV_WORKLOAD_SEED, seed.to_string())
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_too)
        .spawn()
}

#[cfg(unix)]
fn killed(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

#[cfg(not(unix))]
fn killed(status: ExitStatus) -> bool {
    !status.success()
}

// ---- the checks -----------------------------------------------------------------------------

/// The contents of every table, by key.
type Tables = [BTreeMap<Vec<u8>, Vec<u8>>; TABLES.len()];

/// The expected contents of every table, and the transactions replayed to reach them.
#[derive(Debug, Clone, Default)]
struct Model {
    tables: Tables,
    /// Per cycle, the last transaction known committed. A cycle's committed transactions are
    /// always its first committing ids, so this names all of them without listing millions.
    last_committed: BTreeMap<u64, u64>,
    /// How many transactions were applied.
    applied: u64,
}

impl Model {
    /// Applies the writes of `id`, the next committed transaction.
    fn apply(&mut self, seed: u64, id: u64) {
        for write in writes(seed, id) {
            let table = &mut self.tables[write.table];
            match write.value {
                Some(value) => table.insert(write.key, value),
                None => table.remove(&write.key),
            };
        }
        self.last_committed.insert(id / IDS_PER_CYCLE, id);
        self.applied += 1;
    }

    fn committed(&self, id: u64) -> bool {
        fate(id) == Fate::Commit
            && self
                .last_committed
                .get(&(id / IDS_PER_CYCLE))
                .is_some_and(|&last| id <= last)
    }

    /// The newest committed transaction: the one `a/counter` must name.
    fn newest(&self) -> Option<u64> {
        self.last_committed.values().next_back().copied()
    }
}

/// Opens (recovers) the database after the kill of cycle `cycle` and checks it against
/// `model`, which it advances to the recovered state.
fn check_after_kill(
    paths: &Paths,
    seed: u64,
    cycle: u64,
    model: &mut Model,
    totals: &mut Totals,
) -> Result<(), String> {
    let recorded = read_side_file(&paths.side_file(cycle), cycle)?;
    let unrecorded = committing_ids(cycle)
        .nth(recorded.len())
        .expect("a cycle has more ids than any run commits");
    let mut without = model.clone();
    for &id in &recorded {
        without.apply(seed, id);
    }
    let mut with = without.clone();
    with.apply(seed, unrecorded);
    let cases = Cases {
        cycle,
        recorded: &recorded,
        unrecorded,
        earlier: model,
    };

    let db = Db::open(&paths.db, options(&paths.keyfile))
        .map_err(|e| format!("Db::open (recovery) failed: {e}"))?;
    let tables: Vec<Table> = TABLES
        .iter()
        .map(|name| db.table(name).map_err(|e| format!("table {name:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let found = scan_all(&db, &tables).map_err(|problem| match db.verify() {
        Ok(_) => format!("{problem} (yet verify() passes)"),
        Err(e) => format!("{problem}; verify() fails too: {e}"),
    })?;
    let unrecorded_present = if found == without.tables {
        false
    } else if found == with.tables {
        true
    } else {
        return Err(explain_mismatch(&found, &without, &with, &cases));
    };
    let recovered = if unrecorded_present { &with } else { &without };
    check_point_reads(&db, &tables, recovered, [&without, &with])?;
    db.verify()
        .map_err(|e| format!("verify() failed after recovery: {e}"))?;
    db.close().map_err(|e| format!("close failed: {e}"))?;

    totals.recorded += recorded.len() as u64;
    if unrecorded_present {
        totals.unrecorded_present += 1;
        *model = with;
    } else {
        totals.unrecorded_absent += 1;
        *model = without;
    }
    Ok(())
}

/// The ids in a side file, checked to be the first committing ids of `cycle` in order. A last
/// line without its newline was cut by the kill: its commit counts as unrecorded.
fn read_side_file(path: &Path, cycle: u64) -> Result<Vec<u64>, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    let recorded: Vec<u64> = complete
        .lines()
        .map(|line| {
            line.parse()
                .map_err(|_| format!("side file {}: bad line {line:?}", path.display()))
        })
        .collect::<Result<_, _>>()?;
    let expected: Vec<u64> = committing_ids(cycle).take(recorded.len()).collect();
    if recorded != expected {
        return Err(format!(
            "side file {} is not the first {} committing ids of cycle {cycle}: {:?}",
            path.display(),
            recorded.len(),
            recorded
        ));
    }
    Ok(recorded)
}

fn scan_all(db: &Db, tables: &[Table]) -> Result<Tables, String> {
    let mut found: Tables = Default::default();
    for (i, table) in tables.iter().enumerate() {
        let scan = db
            .range(table, .., false)
            .map_err(|e| format!("a scan of table {:?} failed to start: {e}", TABLES[i]))?;
        for entry in scan {
            let (key, value) = entry.map_err(|e| {
                format!(
                    "a scan of table {:?} failed after {} entries: {e}",
                    TABLES[i],
                    found[i].len()
                )
            })?;
            found[i].insert(key, value);
        }
    }
    Ok(found)
}

/// `get` agrees with the scan for every key of either allowed state (so also for the keys the
/// unrecorded commit would have written or deleted).
fn check_point_reads(
    db: &Db,
    tables: &[Table],
    recovered: &Model,
    allowed: [&Model; 2],
) -> Result<(), String> {
    let keys: BTreeSet<(usize, &Vec<u8>)> = allowed
        .iter()
        .flat_map(|model| {
            model
                .tables
                .iter()
                .enumerate()
                .flat_map(|(i, keys)| keys.keys().map(move |key| (i, key)))
        })
        .collect();
    for (i, key) in keys {
        let got = db
            .get(&tables[i], key)
            .map_err(|e| format!("get {}: {e}", name(i, key)))?;
        let want = recovered.tables[i].get(key);
        if got.as_ref() != want {
            return Err(format!(
                "get {} returned {} but the scan found {}",
                name(i, key),
                describe_plain(got.as_deref()),
                describe_plain(want.map(Vec::as_slice)),
            ));
        }
    }
    Ok(())
}

/// What each transaction id is, for explaining a mismatch.
struct Cases<'a> {
    cycle: u64,
    recorded: &'a [u64],
    unrecorded: u64,
    /// The state before this cycle: what earlier cycles committed.
    earlier: &'a Model,
}

impl Cases<'_> {
    fn of(&self, id: u64) -> String {
        let what = if self.earlier.committed(id) {
            "committed in an earlier cycle"
        } else if self.recorded.contains(&id) {
            "recorded as committed"
        } else if id == self.unrecorded {
            "the commit that may have returned unrecorded"
        } else if fate(id) == Fate::Rollback {
            "ROLLED BACK"
        } else if fate(id) == Fate::Drop {
            "DROPPED without commit"
        } else if id / IDS_PER_CYCLE == self.cycle && id > self.unrecorded {
            "NEVER COMMITTED: after the unrecorded commit"
        } else {
            "NOT COMMITTED: an earlier cycle's unrecorded commit that was absent after its kill"
        };
        format!("txn {id}, {what}")
    }
}

/// A report of how the tables differ from the recorded state, key by key, and which rule of
/// the contract that breaks.
fn explain_mismatch(found: &Tables, without: &Model, with: &Model, cases: &Cases<'_>) -> String {
    const SHOWN: usize = 20;
    let mut lines = Vec::new();
    let mut differing = 0;
    let mut writers = BTreeSet::new();
    for (i, key) in differences(found, &without.tables) {
        let (got, want) = (found[i].get(key), without.tables[i].get(key));
        differing += 1;
        if let Some(id) = got.and_then(|v| writer_of(v)) {
            writers.insert(id);
        }
        if lines.len() < SHOWN {
            lines.push(format!(
                "  {}: expected {}, found {}",
                name(i, key),
                describe(want, cases),
                describe(got, cases)
            ));
        }
    }
    if differing > SHOWN {
        lines.push(format!("  … and {} more", differing - SHOWN));
    }

    let mut verdicts = Vec::new();
    let missing: Vec<u64> = not_fully_present(found, without).into_iter().collect();
    if !missing.is_empty() {
        verdicts.push(format!(
            "committed txns not (fully) present: {} of them, first {:?}",
            missing.len(),
            &missing[..missing.len().min(8)]
        ));
    }
    let (visible, effective) = visible_writes(found, without, with);
    if visible > 0 && visible < effective {
        verdicts.push(format!(
            "txn {} (the one commit that may be durable but unrecorded) is PARTIAL: {visible} \
             of its {effective} effective writes are visible",
            cases.unrecorded
        ));
    }
    let intruders: Vec<String> = writers
        .iter()
        .filter(|&&id| !without.committed(id) && id != cases.unrecorded)
        .map(|&id| cases.of(id))
        .collect();
    if !intruders.is_empty() {
        verdicts.push(format!(
            "values of txns that must not be visible: {}",
            intruders.join("; ")
        ));
    }
    let counter = |model: &Tables| match model[0].get(&b"counter"[..]).map(|v| writer_of(v)) {
        None => "nothing".to_string(),
        Some(None) => "a value no txn wrote".to_string(),
        Some(Some(id)) => format!("txn {id}"),
    };
    verdicts.push(format!(
        "a/counter holds {}; expected {} (last recorded) or {} (with the unrecorded commit)",
        counter(found),
        counter(&without.tables),
        counter(&with.tables),
    ));
    format!(
        "after recovery the tables match neither the recorded state nor the recorded state \
         plus txn {} ({} txns recorded this cycle{}).\n{}\n{differing} keys differ from the \
         recorded state:\n{}",
        cases.unrecorded,
        cases.recorded.len(),
        cases
            .recorded
            .last()
            .map_or(String::new(), |id| format!(", the last {id}")),
        verdicts.join("\n"),
        lines.join("\n"),
    )
}

/// The transactions that wrote an expected value which `found` does not hold.
fn not_fully_present(found: &Tables, model: &Model) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for (expected, found) in model.tables.iter().zip(found) {
        for (key, value) in expected {
            if found.get(key) != Some(value) {
                ids.extend(writer_of(value));
            }
        }
    }
    ids
}

/// Of the keys where `with` differs from `without`, how many `found` shows as in `with`.
fn visible_writes(found: &Tables, without: &Model, with: &Model) -> (usize, usize) {
    let effective = differences(&with.tables, &without.tables);
    let visible = effective
        .iter()
        .filter(|(i, key)| found[*i].get(*key) == with.tables[*i].get(*key))
        .count();
    (visible, effective.len())
}

/// The keys (table index, key) whose value or presence differs between `a` and `b`.
fn differences<'t>(a: &'t Tables, b: &'t Tables) -> Vec<(usize, &'t Vec<u8>)> {
    let mut out = Vec::new();
    for (i, (a, b)) in a.iter().zip(b).enumerate() {
        let keys: BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
        out.extend(
            keys.into_iter()
                .filter(|key| a.get(*key) != b.get(*key))
                .map(|key| (i, key)),
        );
    }
    out
}

fn describe(value: Option<&Vec<u8>>, cases: &Cases<'_>) -> String {
    match value {
        None => "absent".to_string(),
        Some(value) => match writer_of(value) {
            Some(id) => format!("{} bytes from {}", value.len(), cases.of(id)),
            None => format!("a value no txn wrote: {:?}", Short(value)),
        },
    }
}

fn describe_plain(value: Option<&[u8]>) -> String {
    match value {
        None => "nothing".to_string(),
        Some(value) => format!("{:?}", Short(value)),
    }
}

fn name(table: usize, key: &[u8]) -> String {
    format!("{}/{}", TABLES[table], String::from_utf8_lossy(key))
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

/// A decimal or `0x` hexadecimal number from the environment.
fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
}

fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Rng::new(nanos ^ (u64::from(std::process::id()) << 32)).next_u64()
}

/// The last `lines` lines of a text file (for showing the child's log).
fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
