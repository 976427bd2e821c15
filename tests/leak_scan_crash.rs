//! The plaintext-leak invariant over every file a database writes — tables, system space
//! (undo), redo log, doublewrite file, temporary space and temporary files — after a clean
//! shutdown and after a `kill -9` taken while temporary data is live (issue 8 §4).
//!
//! `leak_scan.rs` covers the tablespaces of encrypted tables and `durability_leaks.rs` the
//! redo, undo and doublewrite files on clean paths; this test adds temporary tables,
//! temporary files, freed pages and a process killed mid-work, and scans the data directory
//! **and** the temporary-file directory (`tmpdir`, set outside the data directory).
//!
//! ## The workload
//!
//! Every key and value carries the marker `LEAKMARK` (values many times over); tables `a`
//! (key 1) and `b` (key 2), 16 KiB pages, a 1 MiB buffer pool (evictions write dirty pages):
//!
//! 1. 300 records per table committed, every 25th value 40 KB (overflow chains); checkpoint;
//! 2. a transaction overwriting and deleting some of them, rolled back (its undo records
//!    and redo hold the marker);
//! 3. every 4th record deleted and committed (overflow chains freed), checkpoint;
//! 4. a temporary table (`Db::create_temp_table`, named with the marker) with 300 records,
//!    every 20th overflow-sized, a third deleted again;
//! 5. a bulk load of 2.4 MB into `a`: past its 1 MiB sort budget, so sorted runs spill to
//!    temporary files in `tmpdir`;
//! 6. a transaction overwriting half the records and deleting others, left open; a
//!    checkpoint (its undo pages and the dirty pages go through the doublewrite file);
//!    then more committed writes that no checkpoint flushes.
//!
//! **Clean:** the bulk load finishes, the open transaction rolls back, `Db::close`.
//! **Killed:** the workload runs in a child process (this test binary run again, only
//! `leak_scan_child`), which stops before finishing step 5 — the spilled runs are live
//! files — and after step 6 — the transaction open, the temporary table full, dirty pages
//! in memory — and tells the parent, which sends `SIGKILL`.
//!
//! Then every file under both directories is scanned and the hits are printed per file.
//!
//! * Encrypted (each algorithm; tables, redo log, temporary space and temporary files
//!   encrypted): zero hits in every file, while the files the leak would be in are there
//!   and written (undo pages, doublewrite slots, temporary files, the temporary space).
//!   Afterwards the database opens (recovery, after the kill) and holds what was committed.
//! * Control (no keyring: nothing encrypted), same workload: the marker is found in each
//!   place the encrypted run claims to cover — table files, redo segments, the doublewrite
//!   file, the temporary space and, after the kill, the undo pages of the system space and
//!   the temporary files — so the scan would see a leak there. (After a clean close the
//!   control's system space holds no marker: purge has emptied and zeroed the undo pages,
//!   and the bulk load's temporary files are deleted; nor is the doublewrite file claimed
//!   then, since its last slots may hold only pages without the marker.)
//!
//! Freed pages are covered by the zero-hit scan of the encrypted run (every page of every
//! file, free ones included); `leak_scan.rs` shows that freed pages of a *plain* table are
//! zeroed too.
//!
//! ```text
//! cargo test --test leak_scan_crash -- --nocapture     # prints the per-file table
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strongbox::engine::{Db, EncryptTables, Options, Table, TableOptions};
use strongbox::keyring::keyfile::KeyFile;
use strongbox::keyring::source::KeyFileSource;
use strongbox::keyring::Algorithm;

const MARKER: &[u8] = b"LEAKMARK";
const RECORDS: usize = 300;
const BIG_VALUE_LEN: usize = 40_000;
const PAGE_SIZE: usize = 16384;
/// Page type of an undo page (FORMAT.md §2.1); page headers are stored in the clear.
const UNDO_PAGE_TYPE: u16 = 5;
/// Pairs the bulk load pushes, about 400 bytes each: 2.4 MB against a 1 MiB budget.
const BULK_PAIRS: usize = 6000;

/// The child's settings (set by the parent): data directory, temporary-file directory,
/// key file (empty: the control), algorithm, and the file it creates when ready.
const ENV_DATA: &str = "STRONGBOX_LEAK_CHILD_DATA";
const ENV_TMP: &str = "STRONGBOX_LEAK_CHILD_TMP";
const ENV_KEYS: &str = "STRONGBOX_LEAK_CHILD_KEYS";
const ENV_ALGORITHM: &str = "STRONGBOX_LEAK_CHILD_ALGORITHM";
const ENV_READY: &str = "STRONGBOX_LEAK_CHILD_READY";
/// How long the parent waits for the child to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Encrypted with one algorithm, or the control with no keyring at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Encrypted(Algorithm),
    Control,
}

/// The directories and key file of one run.
struct Run {
    /// Removed when the run is dropped (`None` in the child: the parent owns it).
    _dir: Option<tempfile::TempDir>,
    data: PathBuf,
    tmp: PathBuf,
    keys: Option<PathBuf>,
    algorithm: Algorithm,
}

impl Run {
    fn new(flavour: Flavour) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let keys = match flavour {
            Flavour::Encrypted(_) => {
                let path = dir.path().join("keys.txt");
                KeyFileSource::plain(&path)
                    .create(&KeyFile::generate(&[1, 2], 256, false).unwrap())
                    .unwrap();
                Some(path)
            }
            Flavour::Control => None,
        };
        let algorithm = match flavour {
            Flavour::Encrypted(algorithm) => algorithm,
            Flavour::Control => Algorithm::default(),
        };
        Run {
            data: dir.path().join("data"),
            tmp: dir.path().join("tmp"),
            _dir: Some(dir),
            keys,
            algorithm,
        }
    }

    fn options(&self) -> Options {
        let options = Options::new().buffer_pool_size(1 << 20).tmpdir(&self.tmp);
        match &self.keys {
            Some(keys) => options
                .keyfile(keys)
                .encryption_algorithm(self.algorithm)
                .encrypt_tables(EncryptTables::On)
                .encrypt_log(true)
                .encrypt_temp(true),
            None => options
                .encrypt_tables(EncryptTables::Off)
                .encrypt_log(false)
                .encrypt_temp(false),
        }
    }
}

fn key(t: usize, i: usize) -> Vec<u8> {
    format!("LEAKMARK-{t}-{i}-key").into_bytes()
}

fn marked(unit: String, len: usize) -> Vec<u8> {
    unit.repeat(len / unit.len() + 1).into_bytes()[..len].to_vec()
}

fn first_value(t: usize, i: usize) -> Vec<u8> {
    let len = if i.is_multiple_of(25) {
        BIG_VALUE_LEN
    } else {
        60 + i % 100
    };
    marked(format!("LEAKMARK-{t}-{i}-first-"), len)
}

fn tables(db: &Db) -> [Table; 2] {
    ["a", "b"].map(|name| db.table(name).unwrap())
}

/// Steps 1–4 and the bulk load's pushes (step 5); returns the loader, not finished.
fn workload_until_bulk(db: &Db, tables: &[Table; 2]) -> strongbox::engine::BulkLoader {
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(100) {
        let mut txn = db.begin().unwrap();
        for &i in chunk {
            for (t, table) in tables.iter().enumerate() {
                txn.put(table, &key(t, i), &first_value(t, i)).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    db.checkpoint().unwrap();

    let mut doomed = db.begin().unwrap();
    for (t, table) in tables.iter().enumerate() {
        for i in (0..RECORDS).filter(|i| i % 3 == 1) {
            let value = marked(format!("LEAKMARK-{t}-{i}-rolledback-"), 120);
            doomed.put(table, &key(t, i), &value).unwrap();
        }
        for i in (0..RECORDS).filter(|i| i % 7 == 2) {
            doomed.delete(table, &key(t, i)).unwrap();
        }
    }
    doomed.rollback().unwrap();

    let mut txn = db.begin().unwrap();
    for (t, table) in tables.iter().enumerate() {
        for i in (0..RECORDS).filter(|i| i.is_multiple_of(4)) {
            assert!(txn.delete(table, &key(t, i)).unwrap());
        }
    }
    txn.commit().unwrap();
    db.checkpoint().unwrap();

    let temp = db.create_temp_table("LEAKMARK-temp").unwrap();
    for i in 0..RECORDS {
        let len = if i.is_multiple_of(20) {
            BIG_VALUE_LEN
        } else {
            200
        };
        db.put(
            &temp,
            format!("LEAKMARK-temp-{i}").as_bytes(),
            &marked(format!("LEAKMARK-temp-{i}-"), len),
        )
        .unwrap();
    }
    for i in (0..RECORDS).step_by(3) {
        db.delete(&temp, format!("LEAKMARK-temp-{i}").as_bytes())
            .unwrap();
    }

    let mut loader = db.bulk_loader(&tables[0]).unwrap();
    for i in 0..BULK_PAIRS {
        // Pushed out of order, so the sort has something to do.
        let n = (i * 7919) % BULK_PAIRS;
        loader
            .push(
                format!("LEAKMARK-bulk-{n:05}").into_bytes(),
                marked(format!("LEAKMARK-bulk-{n}-"), 380),
            )
            .unwrap();
    }
    loader
}

/// Step 6: a transaction left open over a checkpoint, then unflushed committed writes.
fn open_transaction<'db>(db: &'db Db, tables: &[Table; 2]) -> strongbox::engine::Transaction<'db> {
    let mut open = db.begin().unwrap();
    for (t, table) in tables.iter().enumerate() {
        for i in (0..RECORDS).filter(|i| i % 2 == 1) {
            let value = marked(format!("LEAKMARK-{t}-{i}-uncommitted-"), 90);
            open.put(table, &key(t, i), &value).unwrap();
        }
        for i in (0..RECORDS).filter(|i| i % 11 == 3) {
            open.delete(table, &key(t, i)).unwrap();
        }
    }
    db.checkpoint().unwrap();
    for i in 0..100 {
        let value = marked(format!("LEAKMARK-late-{i}-"), 150);
        db.put(&tables[1], format!("LEAKMARK-late-{i}").as_bytes(), &value)
            .unwrap();
    }
    open
}

/// Temporary files (`*.sbt`) in `dir` and their total size.
fn temp_files(dir: &Path) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sbt"))
        .fold((0, 0), |(n, bytes), p| {
            (n + 1, bytes + std::fs::metadata(&p).unwrap().len())
        })
}

/// Tables `a` (key 1) and `b` (key 2; no key ids in the control).
fn create_tables(db: &Db, run: &Run) {
    for (name, key_id) in [("a", 1), ("b", 2)] {
        let options = match run.keys {
            Some(_) => TableOptions::default().encryption_key_id(key_id),
            None => TableOptions::default(),
        };
        db.create_table(name, options).unwrap();
    }
}

/// The whole workload in this process, then a clean close.
fn run_clean(run: &Run) {
    let db = Db::open(&run.data, run.options()).unwrap();
    create_tables(&db, run);
    let tables = tables(&db);
    let loader = workload_until_bulk(&db, &tables);
    let report = loader.finish(1000).unwrap();
    assert!(
        report.spilled_runs > 0,
        "the bulk load must spill: {report:?}"
    );
    let open = open_transaction(&db, &tables);
    open.rollback().unwrap();
    db.close().unwrap();
}

/// The child's side of the killed run (module doc): does nothing unless the parent set
/// the child's environment.
#[test]
fn leak_scan_child() {
    let Ok(data) = std::env::var(ENV_DATA) else {
        return;
    };
    let tmp = PathBuf::from(std::env::var(ENV_TMP).unwrap());
    let keys = std::env::var(ENV_KEYS).unwrap();
    let algorithm: Algorithm = std::env::var(ENV_ALGORITHM).unwrap().parse().unwrap();
    let ready = PathBuf::from(std::env::var(ENV_READY).unwrap());
    let run = Run {
        _dir: None,
        data: PathBuf::from(data),
        tmp: tmp.clone(),
        keys: (!keys.is_empty()).then(|| PathBuf::from(keys)),
        algorithm,
    };
    let db = Db::open(&run.data, run.options()).unwrap();
    let tables = tables(&db);
    let loader = workload_until_bulk(&db, &tables);
    let open = open_transaction(&db, &tables);
    let (files, bytes) = temp_files(&tmp);
    std::fs::write(&ready, format!("{files} {bytes}")).unwrap();
    // Everything stays live until the kill.
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let _ = (&loader, &open);
    }
}

/// Creates the tables, then runs the workload in a child and kills it when it is ready.
/// Returns the temporary files the child reported live (count, bytes).
fn run_killed(run: &Run) -> (usize, u64) {
    let db = Db::open(&run.data, run.options()).unwrap();
    create_tables(&db, run);
    db.close().unwrap();
    drop(db);

    let ready = run.data.with_file_name("ready");
    let log = run.data.with_file_name("child.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "leak_scan_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DATA, &run.data)
        .env(ENV_TMP, &run.tmp)
        .env(
            ENV_KEYS,
            run.keys
                .as_deref()
                .map_or(String::new(), |p| p.display().to_string()),
        )
        .env(ENV_ALGORITHM, run.algorithm.name())
        .env(ENV_READY, &ready)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ready.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the child exited ({status}) before it was ready:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "the child was not ready in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the child must die of the kill: {status}"
    );
    let reported = std::fs::read_to_string(&ready).unwrap();
    std::fs::remove_file(&ready).unwrap();
    std::fs::remove_file(&log).unwrap();
    let (files, bytes) = reported.split_once(' ').unwrap();
    (files.parse().unwrap(), bytes.parse().unwrap())
}

/// What a scanned file is; hits are also reported per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    TableSpace,
    SystemSpace,
    TemporarySpace,
    RedoSegment,
    RedoControl,
    Doublewrite,
    TempFile,
    Other,
}

fn place_of(path: &Path) -> Place {
    let name = path.file_name().unwrap().to_string_lossy();
    match name.as_ref() {
        "system.sbd" => Place::SystemSpace,
        "temp.sbd" => Place::TemporarySpace,
        "doublewrite.dbw" => Place::Doublewrite,
        "redo.ctl" => Place::RedoControl,
        _ if name.starts_with("redo-") && name.ends_with(".log") => Place::RedoSegment,
        _ if name.starts_with("space-") && name.ends_with(".sbd") => Place::TableSpace,
        _ if name.ends_with(".sbt") => Place::TempFile,
        _ => Place::Other,
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

/// One file's scan.
struct Scanned {
    place: Place,
    bytes: Vec<u8>,
    hits: usize,
}

/// Every file under `roots`, recursively, by path relative to the run's directory.
fn scan(run: &Run) -> BTreeMap<String, Scanned> {
    let base = run.data.parent().unwrap();
    let mut files = BTreeMap::new();
    let mut pending = vec![run.data.clone(), run.tmp.clone()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            assert_eq!(count(path.to_string_lossy().as_bytes(), MARKER), 0);
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let name = path.strip_prefix(base).unwrap().display().to_string();
            files.insert(
                name,
                Scanned {
                    place: place_of(&path),
                    hits: count(&bytes, MARKER),
                    bytes,
                },
            );
        }
    }
    files
}

fn hits_by_place(files: &BTreeMap<String, Scanned>) -> BTreeMap<Place, usize> {
    let mut by_place = BTreeMap::new();
    for scanned in files.values() {
        *by_place.entry(scanned.place).or_default() += scanned.hits;
    }
    by_place
}

fn pages_of_type(bytes: &[u8], page_type: u16) -> impl Iterator<Item = &[u8]> {
    bytes.chunks(PAGE_SIZE).filter(move |page| {
        page.len() == PAGE_SIZE && u16::from_le_bytes([page[4], page[5]]) == page_type
    })
}

fn system_space(files: &BTreeMap<String, Scanned>) -> &[u8] {
    &files
        .values()
        .find(|s| s.place == Place::SystemSpace)
        .expect("system.sbd")
        .bytes
}

/// Slots of the doublewrite file ever written (FORMAT.md §6: a 4 KiB header, then slots
/// of 24 + page-size bytes; an unwritten slot is all zeros).
fn written_doublewrite_slots(files: &BTreeMap<String, Scanned>) -> usize {
    files
        .values()
        .filter(|s| s.place == Place::Doublewrite)
        .map(|s| {
            s.bytes[4096.min(s.bytes.len())..]
                .chunks(24 + PAGE_SIZE)
                .filter(|slot| slot.iter().any(|&b| b != 0))
                .count()
        })
        .sum()
}

/// Prints the per-file table of a scan.
fn report(what: &str, files: &BTreeMap<String, Scanned>) {
    println!("== {what}");
    for (name, s) in files {
        println!(
            "   {name:<28} {:<16} {:>9} bytes {:>6} hits",
            format!("{:?}", s.place),
            s.bytes.len(),
            s.hits
        );
    }
    let undo: usize = pages_of_type(system_space(files), UNDO_PAGE_TYPE)
        .map(|page| count(page, MARKER))
        .sum();
    let undo_pages = pages_of_type(system_space(files), UNDO_PAGE_TYPE).count();
    println!(
        "   undo pages in system.sbd: {undo_pages}, hits in them: {undo}; doublewrite slots \
         written: {}",
        written_doublewrite_slots(files)
    );
}

/// After the scan: the database opens (recovering after a kill) and holds the committed
/// records of steps 1–3.
fn reopen_and_check(run: &Run) {
    let db = Db::open(&run.data, run.options()).unwrap();
    let tables = tables(&db);
    for (t, table) in tables.iter().enumerate() {
        for i in 0..RECORDS {
            let expected = (!i.is_multiple_of(4)).then(|| first_value(t, i));
            assert_eq!(db.get(table, &key(t, i)).unwrap(), expected, "{t}/{i}");
        }
    }
    db.verify().unwrap();
    db.close().unwrap();
}

/// The places a control run must show the marker in; `undo`: in undo pages of the system
/// space too (a transaction was open; after a clean close purge has emptied them).
fn assert_control_finds(
    files: &BTreeMap<String, Scanned>,
    places: &[Place],
    undo: bool,
    what: &str,
) {
    let by_place = hits_by_place(files);
    for place in places {
        assert!(
            by_place.get(place).copied().unwrap_or(0) > 0,
            "{what}: the control must find the marker in {place:?}: {by_place:?}"
        );
    }
    let tables_with_hits = files
        .values()
        .filter(|s| s.place == Place::TableSpace && s.hits > 0)
        .count();
    assert_eq!(
        tables_with_hits, 2,
        "{what}: both table files hold the marker"
    );
    let in_undo: usize = pages_of_type(system_space(files), UNDO_PAGE_TYPE)
        .map(|page| count(page, MARKER))
        .sum();
    if undo {
        assert!(
            in_undo > 0,
            "{what}: before-images are plaintext in undo pages"
        );
    }
}

fn assert_no_leak(files: &BTreeMap<String, Scanned>, what: &str) {
    let leaks: Vec<(&String, usize)> = files
        .iter()
        .filter(|(_, s)| s.hits > 0)
        .map(|(name, s)| (name, s.hits))
        .collect();
    assert!(leaks.is_empty(), "{what}: marker on disk: {leaks:?}");
    // The places the marker would leak to were written.
    let by_place: BTreeMap<Place, usize> = files.values().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.place).or_default() += s.bytes.len();
        m
    });
    for place in [
        Place::TableSpace,
        Place::SystemSpace,
        Place::RedoSegment,
        Place::Doublewrite,
    ] {
        assert!(
            by_place.get(&place).copied().unwrap_or(0) > 0,
            "{what}: no {place:?} bytes: {by_place:?}"
        );
    }
    assert!(written_doublewrite_slots(files) > 0, "{what}");
}

#[test]
fn clean_shutdown_leaves_no_marker_in_any_file_and_the_control_shows_them() {
    let mut flavours = vec![Flavour::Control];
    flavours.extend(Algorithm::ALL.map(Flavour::Encrypted));
    for flavour in flavours {
        let run = Run::new(flavour);
        run_clean(&run);
        let files = scan(&run);
        report(&format!("clean shutdown, {flavour:?}"), &files);
        let what = format!("clean, {flavour:?}");
        match flavour {
            // Not the doublewrite file: after a clean close its slots may hold only pages
            // without the marker (seen once in four runs); the killed run and
            // tests/durability_leaks.rs show the control finding it there.
            Flavour::Control => assert_control_finds(
                &files,
                &[Place::TableSpace, Place::RedoSegment, Place::TemporarySpace],
                false,
                &what,
            ),
            Flavour::Encrypted(_) => {
                assert_no_leak(&files, &what);
                let temp = files
                    .values()
                    .find(|s| s.place == Place::TemporarySpace)
                    .expect("temp.sbd");
                assert!(
                    temp.bytes.len() > 4 * PAGE_SIZE,
                    "{what}: the temporary table reached the temporary space"
                );
            }
        }
        reopen_and_check(&run);
    }
}

#[test]
fn kill_9_with_temporary_data_live_leaves_no_marker_and_the_control_shows_them() {
    let mut flavours = vec![Flavour::Control];
    flavours.extend(Algorithm::ALL.map(Flavour::Encrypted));
    for flavour in flavours {
        let run = Run::new(flavour);
        let (live_files, live_bytes) = run_killed(&run);
        let files = scan(&run);
        report(
            &format!("kill -9, {flavour:?} ({live_files} temporary files, {live_bytes} bytes, live at the kill)"),
            &files,
        );
        let what = format!("kill -9, {flavour:?}");
        assert!(live_files > 0, "{what}: spilled runs were live at the kill");
        let on_disk = files
            .values()
            .filter(|s| s.place == Place::TempFile)
            .count();
        assert!(on_disk > 0, "{what}: the kill left temporary files behind");
        match flavour {
            Flavour::Control => assert_control_finds(
                &files,
                &[
                    Place::TableSpace,
                    Place::SystemSpace,
                    Place::RedoSegment,
                    Place::Doublewrite,
                    Place::TemporarySpace,
                    Place::TempFile,
                ],
                true,
                &what,
            ),
            Flavour::Encrypted(_) => {
                assert_no_leak(&files, &what);
                assert!(
                    pages_of_type(system_space(&files), UNDO_PAGE_TYPE).count() > 0,
                    "{what}: the open transaction's undo pages are on disk"
                );
            }
        }
        reopen_and_check(&run);
        let (left, _) = temp_files(&run.tmp);
        assert_eq!(left, 0, "{what}: open removes leftover temporary files");
    }
}
