//! Corruption of every file type (issue 8 §2): random damage is detected with an error that
//! names the file (and the page, or the redo segment and offset), or is repaired, or falls in
//! bytes nothing reads — and is never returned as data, never a panic.
//!
//! ## The pristine image
//!
//! One data directory per algorithm (aes_ctr, aes_cbc, aes_gcm), on real files, 4 KiB pages,
//! 512 KiB redo segments, a 512 KiB buffer pool, and beside it the key file twice: plain
//! (MariaDB format) and as an `openssl enc` container (PBKDF2-HMAC-SHA256) holding the same
//! keys. Four tables: `enc` (key 1), `enc5` (key 5, version 2), `plain` (unencrypted) and
//! `big` (key 5, values of 2–12 KB on overflow pages); enough rows for trees of two or more
//! levels. The workload:
//!
//! 1. inserts, committed; a checkpoint (the pages reach their files through the doublewrite
//!    file, which keeps copies);
//! 2. updates, deletes and inserts, committed (`flush_log_at_commit = 1`): redo after the
//!    last checkpoint that recovery must replay;
//! 3. a transaction that rewrites a quarter of the big values and a tenth of the small ones,
//!    left open. Its dirty pages overflow the pool, so the WAL rule writes its redo to disk:
//!    the log's last blocks belong to work that never committed, after every committed
//!    batch.
//!
//! The directory is then copied as it stands (twice, until two copies agree: the page
//! cleaner may still be writing), which is what `kill -9` leaves. The copy must open,
//! roll the open transaction back, pass `verify()` and hold exactly the committed rows.
//!
//! ## The cases
//!
//! For each file type — table space (`space-*.sbd`), system space (`system.sbd`), redo
//! segment (`redo/redo-*.log`), redo control file (`redo/redo.ctl`), `doublewrite.dbw`, the
//! plain key file and the encrypted key file — seeded random cases each copy a pristine
//! image and apply one damage: flip 1 to 8 random bits at random offsets, zero a random
//! 512-byte-aligned sector, or zero a random 4 KiB-aligned block. Then the database is
//! opened (with the damaged key file, for the key-file types); if it opens, `verify()` runs
//! and every row of every table is read, by scan and by point lookup, and compared with the
//! model. Each case is one of:
//!
//! * **detected**: an error naming the damaged file — for page files also a damaged page
//!   number, for redo segments the segment and byte offset, for key files the key file's
//!   path;
//! * **repaired**: recovery rewrote pages from their doublewrite copies and every row reads
//!   back exactly;
//! * **harmless**: every row reads back exactly (the damage fell in bytes nothing reads, in
//!   the second copy of page 0, in an unused doublewrite slot or key, or in the uncommitted
//!   tail of the log);
//! * **BAD**: a panic (any thread: a panic hook counts them), a wrong or missing row, or an
//!   error that names no file. The test fails if there is one.
//!
//! What the redo log's cases rely on: a block that fails its checksum with valid blocks
//! after it is damage, not a torn tail (`wal` recovery, `DamagedBlock`: names segment and
//! byte offset); a zeroed block reads as unwritten and ends the scan, but the pages written
//! after it carry LSNs beyond the recovered end, and reading such a page fails naming the
//! page and where the scan stopped (`PageAheadOfLog`). Before these two checks, both
//! damages dropped committed batches silently.
//!
//! Two deterministic cases pin the sharpest rules: a byte flipped in the middle of the redo
//! log with committed batches after it fails the open naming the segment and offset, and a
//! damaged page is repaired from its doublewrite copy — but is an error naming file and page
//! when that copy is damaged too.
//!
//! `STRONGBOX_CORRUPTION_CASES=N` sets the cases per file type (default 6);
//! `STRONGBOX_CORRUPTION_SEED=S` changes the seed. The figures are printed per file type.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use strongbox::engine::page::PageSize;
use strongbox::engine::{Db, Encrypted, Options, TableOptions};
use strongbox::keyring::keyfile::KeyFile;
use strongbox::keyring::openssl_enc::{Digest, EncSettings, Kdf};
use strongbox::keyring::source::{FileKey, KeyFileSource};
use strongbox::keyring::Algorithm;

const PAGE_SIZE: usize = 4096;
/// 128 pages: the committed redo after the checkpoint spans more than one segment.
const LOG_FILE_SIZE: u64 = 512 << 10;
/// 128 frames: the open transaction's pages do not fit, so its redo reaches the disk.
const POOL_SIZE: usize = 512 << 10;
const FILE_KEY: &str = "corruption test file key";
const SEALED_WITH: EncSettings = EncSettings {
    digest: Digest::Sha256,
    kdf: Kdf::Pbkdf2 { iterations: 1000 },
};
const KEY_TEXT: &str = "# keys of the corruption test\n\
    1;1111111111111111111111111111111111111111111111111111111111111111\n\
    2;2222222222222222222222222222222222222222222222222222222222222222\n\
    5;1;5151515151515151515151515151515151515151515151515151515151515151\n\
    5;2;5252525252525252525252525252525252525252525252525252525252525252\n";

/// Rows per small table after phase 1.
const SMALL_ROWS: usize = 900;
/// Rows of `big`.
const BIG_ROWS: usize = 40;

/// Table contents: key → value.
type Rows = BTreeMap<Vec<u8>, Vec<u8>>;
/// Every table's contents by name.
type Model = BTreeMap<String, Rows>;

/// xorshift64*: deterministic, seedable.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

/// A value naming its table, row and version; `len` bytes.
fn value(table: &str, i: usize, version: u32, len: usize) -> Vec<u8> {
    let unit = format!("{table}/{i}/v{version}|");
    unit.repeat(len / unit.len() + 1).into_bytes()[..len].to_vec()
}

fn small_len(rng: &mut Rng) -> usize {
    20 + rng.below(180)
}

fn big_len(rng: &mut Rng) -> usize {
    2000 + rng.below(10_000)
}

const TABLES: [&str; 4] = ["enc", "enc5", "plain", "big"];

fn table_options(name: &str) -> TableOptions {
    match name {
        "enc" => TableOptions::default(),
        "enc5" | "big" => TableOptions::default().encryption_key_id(5),
        _ => TableOptions::default().encrypted(Encrypted::No),
    }
}

/// A pristine image: `root/data`, `root/keys.txt`, `root/keys.enc`.
struct Pristine {
    algorithm: Algorithm,
    root: tempfile::TempDir,
    model: Model,
}

fn plain_options(root: &Path, algorithm: Algorithm) -> Options {
    Options::new()
        .keyfile(root.join("keys.txt"))
        .encryption_algorithm(algorithm)
        .page_size(PageSize::of_buffer(PAGE_SIZE).expect("4 KiB pages"))
        .log_file_size(LOG_FILE_SIZE)
        .buffer_pool_size(POOL_SIZE)
}

fn encrypted_key_options(root: &Path, algorithm: Algorithm) -> Options {
    plain_options(root, algorithm)
        .keyfile(root.join("keys.enc"))
        .filekey(FILE_KEY, SEALED_WITH)
}

/// Bytes of every file under `dir`, by path relative to `dir`.
fn read_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
            }
        }
    }
    files
}

fn write_tree(dir: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) {
    for (rel, bytes) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// Total bytes of the redo segments under `data`.
fn redo_bytes(data: &Path) -> u64 {
    std::fs::read_dir(data.join("redo"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// One write: table, key, and the value to put (`None`: delete).
type Write<'a> = (&'a str, Vec<u8>, Option<Vec<u8>>);

/// Commits `writes` in one transaction and applies them to `model`.
fn commit(db: &Db, model: &mut Model, writes: Vec<Write<'_>>) {
    let mut txn = db.begin().unwrap();
    for (table, key, value) in writes {
        let handle = db.table(table).unwrap();
        let rows = model.get_mut(table).unwrap();
        match value {
            Some(value) => {
                txn.put(&handle, &key, &value).unwrap();
                rows.insert(key, value);
            }
            None => {
                txn.delete(&handle, &key).unwrap();
                rows.remove(&key);
            }
        }
    }
    txn.commit().unwrap();
}

impl Pristine {
    fn build(algorithm: Algorithm, seed: u64) -> Pristine {
        let root = tempfile::tempdir().unwrap();
        let keys_txt = root.path().join("keys.txt");
        let keys = KeyFile::parse(KEY_TEXT, &keys_txt).unwrap();
        KeyFileSource::plain(&keys_txt).create(&keys).unwrap();
        KeyFileSource::encrypted(
            root.path().join("keys.enc"),
            FileKey::parse(FILE_KEY).unwrap(),
            SEALED_WITH,
        )
        .create(&keys)
        .unwrap();

        let live = root.path().join("live");
        let db = Db::open(&live, plain_options(root.path(), algorithm)).unwrap();
        let mut model = Model::new();
        for name in TABLES {
            db.create_table(name, table_options(name)).unwrap();
            model.insert(name.to_string(), Rows::new());
        }
        let mut rng = Rng::new(seed);

        // Phase 1: inserts, then a checkpoint.
        for chunk in (0..SMALL_ROWS).collect::<Vec<_>>().chunks(150) {
            let mut writes = Vec::new();
            for &i in chunk {
                for name in ["enc", "enc5", "plain"] {
                    writes.push((name, key(i), Some(value(name, i, 1, small_len(&mut rng)))));
                }
                if i < BIG_ROWS {
                    writes.push(("big", key(i), Some(value("big", i, 1, big_len(&mut rng)))));
                }
            }
            commit(&db, &mut model, writes);
        }
        db.checkpoint().unwrap();

        // Phase 2: committed changes after the checkpoint.
        for round in 0..6u32 {
            let mut writes = Vec::new();
            for name in ["enc", "enc5", "plain"] {
                for _ in 0..40 {
                    let i = rng.below(SMALL_ROWS + 200);
                    let len = small_len(&mut rng);
                    writes.push((name, key(i), Some(value(name, i, 2 + round, len))));
                }
                for _ in 0..12 {
                    writes.push((name, key(rng.below(SMALL_ROWS)), None));
                }
            }
            for _ in 0..3 {
                let i = rng.below(BIG_ROWS);
                let len = big_len(&mut rng);
                writes.push(("big", key(i), Some(value("big", i, 2 + round, len))));
            }
            commit(&db, &mut model, writes);
        }
        let committed_redo = redo_bytes(&live);

        // Phase 3: a large transaction left open.
        let mut txn = db.begin().unwrap();
        for i in 0..BIG_ROWS / 4 {
            let table = db.table("big").unwrap();
            txn.put(&table, &key(i), &value("big", i, 99, big_len(&mut rng)))
                .unwrap();
        }
        for name in ["enc", "enc5", "plain"] {
            let table = db.table(name).unwrap();
            for i in (0..SMALL_ROWS).step_by(10) {
                txn.put(&table, &key(i), &value(name, i, 99, 150)).unwrap();
            }
        }
        let uncommitted_redo = redo_bytes(&live).saturating_sub(committed_redo);
        assert!(
            uncommitted_redo >= 8 * 512,
            "{algorithm}: the open transaction's redo must reach the disk after the last \
             commit ({uncommitted_redo} bytes did)"
        );

        // The disk as `kill -9` leaves it, once the page cleaner is done writing.
        let mut files = read_tree(&live);
        for attempt in 0.. {
            std::thread::sleep(Duration::from_millis(300));
            let again = read_tree(&live);
            if again == files {
                break;
            }
            assert!(attempt < 100, "the data directory never stopped changing");
            files = again;
        }
        write_tree(&root.path().join("data"), &files);
        drop(txn);
        db.close().unwrap();
        drop(db);
        std::fs::remove_dir_all(&live).unwrap();

        let pristine = Pristine {
            algorithm,
            root,
            model,
        };
        // The image itself recovers to exactly the committed rows.
        let case = tempfile::tempdir().unwrap();
        pristine.copy_to(case.path());
        let options = plain_options(case.path(), algorithm);
        let (recovered, result) =
            open_and_check(&case.path().join("data"), options, &pristine.model);
        if let Err(failure) = result {
            panic!("{algorithm}: the pristine image does not recover: {failure:?}");
        }
        let recovered = recovered.unwrap();
        assert!(recovered.rolled_back >= 1, "{algorithm}: {recovered:?}");
        assert!(recovered.redo > 0, "{algorithm}: {recovered:?}");
        println!(
            "pristine {algorithm}: {} bytes of redo after the last commit; recovery: {} page \
             changes redone, {} rolled back, log stop {:?}",
            uncommitted_redo,
            recovered.redo,
            recovered.rolled_back,
            recovered.log_stop.unwrap_or_default()
        );
        pristine
    }

    fn copy_to(&self, dir: &Path) {
        write_tree(dir, &read_tree(self.root.path()));
    }
}

/// Why a case did not read back the model.
#[derive(Debug)]
enum Failure {
    /// The engine returned an error: its text.
    Error(String),
    /// Data came back wrong, or rows were missing or extra.
    Wrong(String),
}

fn differences(name: &str, found: &Rows, expected: &Rows) -> String {
    let missing = expected.keys().filter(|k| !found.contains_key(*k)).count();
    let extra = found.keys().filter(|k| !expected.contains_key(*k)).count();
    let changed = expected
        .iter()
        .filter(|(k, v)| found.get(*k).is_some_and(|f| f != *v))
        .count();
    format!("table {name}: {missing} rows missing, {extra} extra, {changed} with other values")
}

/// Opens, verifies, reads every row. Returns what recovery reported (if the open worked).
fn open_and_check(
    data: &Path,
    options: Options,
    model: &Model,
) -> (Option<strongbox::engine::Recovered>, Result<bool, Failure>) {
    let error = |e: strongbox::engine::Error| Failure::Error(e.to_string());
    let db = match Db::open(data, options) {
        Ok(db) => db,
        Err(e) => return (None, Err(error(e))),
    };
    let recovered = db.recovery();
    let check = || -> Result<bool, Failure> {
        db.verify().map_err(error)?;
        let names: Vec<String> = db
            .tables()
            .map_err(error)?
            .into_iter()
            .map(|t| t.name)
            .collect();
        let expected_names: Vec<String> = model.keys().cloned().collect();
        if names != expected_names {
            return Err(Failure::Wrong(format!(
                "tables {names:?}, expected {expected_names:?}"
            )));
        }
        for (name, rows) in model {
            let table = db.table(name).map_err(error)?;
            let found: Rows = db
                .range(&table, .., false)
                .and_then(|scan| scan.collect::<Result<Rows, _>>())
                .map_err(error)?;
            if found != *rows {
                return Err(Failure::Wrong(differences(name, &found, rows)));
            }
            for (key, value) in rows {
                match db.get(&table, key).map_err(error)? {
                    Some(v) if v == *value => {}
                    other => {
                        return Err(Failure::Wrong(format!(
                            "table {name}: get {:?} returned {} bytes, expected {}",
                            String::from_utf8_lossy(key),
                            other.map_or(0, |v| v.len()),
                            value.len()
                        )))
                    }
                }
            }
        }
        Ok(recovered.torn_pages_repaired > 0)
    };
    let result = check();
    let closed = db.close().map_err(error);
    let result = match (result, closed) {
        (Ok(_), Err(e)) => Err(e),
        (result, _) => result,
    };
    (Some(recovered), result)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FileType {
    TableSpace,
    SystemSpace,
    RedoSegment,
    RedoControl,
    Doublewrite,
    KeyFilePlain,
    KeyFileEncrypted,
}

impl FileType {
    const ALL: [FileType; 7] = [
        FileType::TableSpace,
        FileType::SystemSpace,
        FileType::RedoSegment,
        FileType::RedoControl,
        FileType::Doublewrite,
        FileType::KeyFilePlain,
        FileType::KeyFileEncrypted,
    ];

    fn name(self) -> &'static str {
        match self {
            FileType::TableSpace => "table space",
            FileType::SystemSpace => "system space",
            FileType::RedoSegment => "redo segment",
            FileType::RedoControl => "redo.ctl",
            FileType::Doublewrite => "doublewrite",
            FileType::KeyFilePlain => "key file",
            FileType::KeyFileEncrypted => "key file (enc)",
        }
    }

    /// The files of this type in a case directory.
    fn candidates(self, root: &Path) -> Vec<PathBuf> {
        let data = root.join("data");
        let list = |dir: &Path, keep: &dyn Fn(&str) -> bool| -> Vec<PathBuf> {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_file() && keep(p.file_name().unwrap().to_str().unwrap()))
                .collect();
            paths.sort();
            paths
        };
        match self {
            FileType::TableSpace => list(&data, &|n| n.starts_with("space-")),
            FileType::SystemSpace => vec![data.join("system.sbd")],
            FileType::RedoSegment => list(&data.join("redo"), &|n| n.ends_with(".log")),
            FileType::RedoControl => vec![data.join("redo/redo.ctl")],
            FileType::Doublewrite => vec![data.join("doublewrite.dbw")],
            FileType::KeyFilePlain => vec![root.join("keys.txt")],
            FileType::KeyFileEncrypted => vec![root.join("keys.enc")],
        }
    }

    fn is_page_file(self) -> bool {
        matches!(self, FileType::TableSpace | FileType::SystemSpace)
    }
}

/// One damage applied to a file; returns its description and the pages it touched.
fn damage(path: &Path, rng: &mut Rng) -> (String, Vec<usize>) {
    let mut bytes = std::fs::read(path).unwrap();
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    let mut pages = Vec::new();
    let what = match rng.below(3) {
        0 => {
            let flips = 1 + rng.below(8);
            let mut at = Vec::new();
            for _ in 0..flips {
                let offset = rng.below(bytes.len());
                let bit = rng.below(8);
                bytes[offset] ^= 1 << bit;
                pages.push(offset / PAGE_SIZE);
                at.push(format!("{offset}.{bit}"));
            }
            format!("flip {flips} bit(s) at {}", at.join(" "))
        }
        kind => {
            let sector = if kind == 1 { 512 } else { 4096 };
            let start = rng.below(bytes.len().div_ceil(sector)) * sector;
            let end = bytes.len().min(start + sector);
            bytes[start..end].fill(0);
            pages.extend(start / PAGE_SIZE..=(end - 1) / PAGE_SIZE);
            format!("zero {sector} bytes at {start}")
        }
    };
    pages.sort_unstable();
    pages.dedup();
    std::fs::write(path, bytes).unwrap();
    (what, pages)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Detected(String),
    Repaired,
    Harmless,
    Bad(String),
}

/// Panics seen by the hook, in any thread (background threads' panics never reach
/// `catch_unwind`).
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.lock().unwrap().push(info.to_string());
            default(info);
        }));
    });
}

/// Does `message` name the damaged file (and a damaged page, for page files)?
fn names_the_file(file_type: FileType, file: &Path, pages: &[usize], message: &str) -> bool {
    let name = file.file_name().unwrap().to_str().unwrap();
    let file_named = match file_type {
        FileType::KeyFilePlain | FileType::KeyFileEncrypted => {
            message.contains(&file.display().to_string())
        }
        _ => message.contains(name),
    };
    let page_named = !file_type.is_page_file()
        || pages.iter().any(|p| {
            message.contains(&format!("page {p}:")) || message.contains(&format!("page {p} "))
        });
    file_named && page_named
}

/// Copies the pristine image, damages one file of `file_type`, opens and reads everything.
fn run_case(pristine: &Pristine, file_type: FileType, rng: &mut Rng) -> (Outcome, String) {
    let case = tempfile::tempdir().unwrap();
    pristine.copy_to(case.path());
    let candidates = file_type.candidates(case.path());
    let file = candidates[rng.below(candidates.len())].clone();
    let (what, pages) = damage(&file, rng);
    let label = format!(
        "{}: {} {what}",
        pristine.algorithm,
        file.file_name().unwrap().to_string_lossy()
    );
    let options = match file_type {
        FileType::KeyFileEncrypted => encrypted_key_options(case.path(), pristine.algorithm),
        _ => plain_options(case.path(), pristine.algorithm),
    };
    let panics_before = PANICS.lock().unwrap().len();
    let data = case.path().join("data");
    let result = catch_unwind(AssertUnwindSafe(|| {
        open_and_check(&data, options, &pristine.model).1
    }));
    let panicked = PANICS.lock().unwrap().len() > panics_before;
    let outcome = match result {
        _ if panicked => Outcome::Bad("a panic".into()),
        Err(_) => Outcome::Bad("a panic".into()),
        Ok(Ok(true)) => Outcome::Repaired,
        Ok(Ok(false)) => Outcome::Harmless,
        Ok(Err(Failure::Wrong(what))) => Outcome::Bad(what),
        Ok(Err(Failure::Error(message))) => {
            if names_the_file(file_type, &file, &pages, &message) {
                Outcome::Detected(message)
            } else {
                Outcome::Bad(format!("error not naming the damaged file/page: {message}"))
            }
        }
    };
    (outcome, label)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Tally {
    tried: usize,
    detected: usize,
    repaired: usize,
    harmless: usize,
    bad: usize,
    example: Option<String>,
}

#[test]
fn random_damage_to_every_file_type_is_detected_or_repaired_never_returned() {
    install_panic_hook();
    let cases = env_number("STRONGBOX_CORRUPTION_CASES", 6) as usize;
    let seed = env_number("STRONGBOX_CORRUPTION_SEED", 0x5B0C_0881);
    let started = std::time::Instant::now();
    let pristines: Vec<Pristine> = [Algorithm::AesCtr, Algorithm::AesCbc, Algorithm::AesGcm]
        .into_iter()
        .enumerate()
        .map(|(n, algorithm)| Pristine::build(algorithm, seed + n as u64))
        .collect();
    let mut rng = Rng::new(seed);
    let mut tallies: BTreeMap<FileType, Tally> = BTreeMap::new();
    let mut bad = Vec::new();
    for file_type in FileType::ALL {
        let tally = tallies.entry(file_type).or_default();
        for n in 0..cases {
            let pristine = &pristines[n % pristines.len()];
            let (outcome, label) = run_case(pristine, file_type, &mut rng);
            println!("  {}: {label}: {outcome:?}", file_type.name());
            tally.tried += 1;
            match outcome {
                Outcome::Detected(message) => {
                    tally.detected += 1;
                    tally
                        .example
                        .get_or_insert(format!("{label}\n      -> {message}"));
                }
                Outcome::Repaired => tally.repaired += 1,
                Outcome::Harmless => tally.harmless += 1,
                Outcome::Bad(why) => {
                    tally.bad += 1;
                    bad.push(format!("{}: {label}: {why}", file_type.name()));
                }
            }
        }
    }
    println!(
        "seed {seed:#x}, {cases} cases per file type ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<16} {:>6} {:>9} {:>9} {:>9} {:>5}",
        "file type", "tried", "detected", "repaired", "harmless", "BAD"
    );
    let mut total = Tally::default();
    for (file_type, t) in &tallies {
        println!(
            "{:<16} {:>6} {:>9} {:>9} {:>9} {:>5}",
            file_type.name(),
            t.tried,
            t.detected,
            t.repaired,
            t.harmless,
            t.bad
        );
        total.tried += t.tried;
        total.detected += t.detected;
        total.repaired += t.repaired;
        total.harmless += t.harmless;
        total.bad += t.bad;
    }
    println!(
        "{:<16} {:>6} {:>9} {:>9} {:>9} {:>5}",
        "total", total.tried, total.detected, total.repaired, total.harmless, total.bad
    );
    for (file_type, t) in &tallies {
        if let Some(example) = &t.example {
            println!("example ({}): {example}", file_type.name());
        }
    }
    assert!(
        bad.is_empty(),
        "{} BAD case(s):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// The checkpoint LSN and segment size in the newer valid slot of `redo.ctl` (FORMAT.md
/// §7.2: two 512-byte slots; CRC-32 over [4, 512); sequence at 16, segment size at 32,
/// checkpoint LSN at 40).
fn control(data: &Path) -> (u64, u64) {
    let bytes = std::fs::read(data.join("redo/redo.ctl")).unwrap();
    let u64_at = |slot: &[u8], at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().unwrap());
    bytes
        .chunks(512)
        .filter(|slot| {
            slot.len() == 512
                && &slot[4..12] == b"SBXREDO\0"
                && u32::from_le_bytes(slot[..4].try_into().unwrap()) == crc32fast::hash(&slot[4..])
        })
        .max_by_key(|slot| u64_at(slot, 16))
        .map(|slot| (u64_at(slot, 40), u64_at(slot, 32)))
        .expect("a valid control slot")
}

#[test]
fn a_damaged_block_in_the_middle_of_the_redo_log_fails_the_open_naming_segment_and_offset() {
    install_panic_hook();
    let pristine = Pristine::build(Algorithm::AesCtr, 7);
    let (checkpoint_lsn, segment_size) = control(&pristine.root.path().join("data"));
    let blocks_per_segment = segment_size / 512;
    // Two blocks past the checkpoint: committed batches of phase 2 follow it.
    let block = checkpoint_lsn / 512 + 2;
    let segment = format!("redo-{:08}.log", block / blocks_per_segment);
    let offset = (block % blocks_per_segment) * 512;
    for (n, at) in [100, 300, 511].into_iter().enumerate() {
        let case = tempfile::tempdir().unwrap();
        pristine.copy_to(case.path());
        let path = case.path().join("data/redo").join(&segment);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset as usize + at] ^= 1 << n;
        std::fs::write(&path, bytes).unwrap();
        let options = plain_options(case.path(), pristine.algorithm);
        let (_, result) = open_and_check(&case.path().join("data"), options, &pristine.model);
        match result {
            Err(Failure::Error(message)) => {
                assert!(
                    message.contains(&segment)
                        && message.contains(&format!("damaged at byte {offset} "))
                        && message.contains("not a torn tail"),
                    "{message}"
                );
                if n == 0 {
                    println!("flip in block {block}: {message}");
                }
            }
            other => panic!(
                "a flip at byte {} of {segment}: {other:?}",
                offset as usize + at
            ),
        }
    }

    // The same block zeroed reads as never written and ends the scan there; but the open
    // transaction's pages, evicted after it, carry later LSNs, and recovery reads them.
    let case = tempfile::tempdir().unwrap();
    pristine.copy_to(case.path());
    let path = case.path().join("data/redo").join(&segment);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offset as usize..offset as usize + 512].fill(0);
    std::fs::write(&path, bytes).unwrap();
    let options = plain_options(case.path(), pristine.algorithm);
    let (_, result) = open_and_check(&case.path().join("data"), options, &pristine.model);
    match result {
        Err(Failure::Error(message)) => {
            assert!(
                message.contains("beyond the end of the redo log")
                    && message.contains(&format!("byte {offset} of "))
                    && message.contains(&segment)
                    && message.contains("unwritten block"),
                "{message}"
            );
            println!("block {block} zeroed: {message}");
        }
        other => panic!("block {block} of the redo log zeroed: {other:?}"),
    }
    assert!(PANICS.lock().unwrap().is_empty());
}

/// A valid slot of the doublewrite file (FORMAT.md §6).
struct Slot {
    offset: usize,
    space_id: u32,
    page_no: u32,
    batch: u64,
}

fn doublewrite_slots(bytes: &[u8]) -> Vec<Slot> {
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let slots = u32_at(20) as usize;
    let slot_len = 24 + PAGE_SIZE;
    (0..slots)
        .map(|i| 4096 + i * slot_len)
        .filter(|&at| {
            let slot = &bytes[at..at + slot_len];
            slot.iter().any(|&b| b != 0) && u32_at(at) == crc32fast::hash(&slot[4..])
        })
        .map(|at| Slot {
            offset: at,
            space_id: u32_at(at + 4),
            page_no: u32_at(at + 8),
            batch: u64::from_le_bytes(bytes[at + 16..at + 24].try_into().unwrap()),
        })
        .collect()
}

#[test]
fn a_damaged_page_is_repaired_from_its_doublewrite_copy_and_an_error_when_the_copy_is_damaged_too()
{
    install_panic_hook();
    let pristine = Pristine::build(Algorithm::AesGcm, 11);
    let data = pristine.root.path().join("data");
    let dw = std::fs::read(data.join("doublewrite.dbw")).unwrap();
    let slots = doublewrite_slots(&dw);
    let last = slots
        .iter()
        .map(|s| s.batch)
        .max()
        .expect("doublewrite copies");
    // A B+tree page of a table (page type 2 leaf or 3 branch, in the clear header) whose home
    // copy is the doublewrite image: `verify` reads it whatever else happens.
    let slot = slots
        .iter()
        .filter(|s| s.batch == last && s.space_id != 0)
        .find(|s| {
            let image = &dw[s.offset + 24..s.offset + 24 + PAGE_SIZE];
            let home = std::fs::read(data.join(format!("space-{}.sbd", s.space_id))).unwrap();
            let start = s.page_no as usize * PAGE_SIZE;
            let page_type = u16::from_le_bytes([image[4], image[5]]);
            matches!(page_type, 2 | 3) && home.get(start..start + PAGE_SIZE) == Some(image)
        })
        .expect("a table's tree page in the last doublewrite batch");
    let file = format!("space-{}.sbd", slot.space_id);

    for copy_damaged in [false, true] {
        let case = tempfile::tempdir().unwrap();
        pristine.copy_to(case.path());
        let home = case.path().join("data").join(&file);
        let mut bytes = std::fs::read(&home).unwrap();
        bytes[slot.page_no as usize * PAGE_SIZE + 1000] ^= 0x10;
        std::fs::write(&home, bytes).unwrap();
        if copy_damaged {
            let path = case.path().join("data/doublewrite.dbw");
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[slot.offset + 24 + 1000] ^= 0x10;
            std::fs::write(&path, bytes).unwrap();
        }
        let options = plain_options(case.path(), pristine.algorithm);
        let (recovered, result) =
            open_and_check(&case.path().join("data"), options, &pristine.model);
        if copy_damaged {
            match result {
                Err(Failure::Error(message)) => {
                    assert!(
                        message.contains(&file)
                            && message.contains(&format!("page {}", slot.page_no)),
                        "{message}"
                    );
                    println!("page and copy damaged: {message}");
                }
                other => panic!(
                    "{file} page {} and its copy damaged: {other:?}",
                    slot.page_no
                ),
            }
        } else {
            assert!(
                matches!(result, Ok(true)),
                "{file} page {}: {result:?}",
                slot.page_no
            );
            assert!(recovered.unwrap().torn_pages_repaired >= 1);
        }
    }
    assert!(PANICS.lock().unwrap().is_empty());
}
