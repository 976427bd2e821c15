//! The plaintext-leak invariant for the durability files: the redo log, the undo pages and
//! the doublewrite file (docs/durability.md §4; `leak_scan.rs` covers the tablespaces).
//!
//! A workload writes records whose keys and values carry a marker (`DURAMARK-<n>-`) into
//! two tables (key 1 and key 2), small values and values long enough for overflow pages:
//!
//! 1. inserts, committed; a checkpoint;
//! 2. a transaction that overwrites a third and deletes a fifth of the records, committed
//!    (its undo log held before-images until purge);
//! 3. one that overwrites and deletes others, rolled back (rollback writes the before-images
//!    back through the redo log);
//! 4. one that overwrites half and deletes some, left open; a checkpoint then writes every
//!    dirty page — the open transaction's undo pages among them — through the doublewrite
//!    file to its home.
//!
//! With the transaction still open (the disk as a crash now would leave it: undo pages full
//! of before-images), every file under the data directory, `redo/` included, is scanned for
//! the marker, and again after rollback and close. The hits are reported per kind of file
//! (redo segment, doublewrite file, system space, ...), so a regression names the file that
//! leaks.
//!
//! * Encrypted tables (key file with keys 1 and 2, redo-log encryption by default), each
//!   algorithm: zero hits in every file. The undo pages and the doublewrite slots are on
//!   disk all the same (counted from their unencrypted headers), so there was something to
//!   find.
//! * Control: `encrypt_tables = off`, `encrypt_log = false`, same workload: the marker is in
//!   the redo segments, in the doublewrite file, and in the undo pages of the system space,
//!   so the scan would see a leak if there were one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use strongbox::engine::{Db, EncryptTables, Options, Table, TableOptions};
use strongbox::keyring::keyfile::KeyFile;
use strongbox::keyring::source::KeyFileSource;
use strongbox::keyring::Algorithm;

const MARKER: &[u8] = b"DURAMARK";

/// Records per table.
const RECORDS: usize = 240;
/// Longer than a 16 KiB page: these values (and their before-images) span several pages.
const BIG_VALUE_LEN: usize = 20_000;
const PAGE_SIZE: usize = 16384;
/// Page type of an undo page in the page header (FORMAT.md §2.1), stored in the clear.
const UNDO_PAGE_TYPE: u16 = 5;

fn key(i: usize) -> Vec<u8> {
    format!("DURAMARK-{i}-key").into_bytes()
}

/// Version `version` of record `i`'s value in table `table`; every 30th is overflow-sized.
fn value(table: usize, i: usize, version: u32) -> Vec<u8> {
    let unit = format!("DURAMARK-{i}-t{table}-v{version}-");
    let len = if i.is_multiple_of(30) {
        BIG_VALUE_LEN
    } else {
        60 + i % 90
    };
    unit.repeat(len / unit.len() + 1).into_bytes()[..len].to_vec()
}

/// A key file with keys 1 and 2, mode 0600, in `dir` (outside the data directory).
fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("keys.txt");
    KeyFileSource::plain(&path)
        .create(&KeyFile::generate(&[1, 2], 256, false).unwrap())
        .unwrap();
    path
}

/// The tables: `alpha` with the default key (1), `beta` with key 2 when encrypted.
fn create_tables(db: &Db, encrypted: bool) -> [Table; 2] {
    let beta = if encrypted {
        TableOptions::default().encryption_key_id(2)
    } else {
        TableOptions::default()
    };
    let alpha = db.create_table("alpha", TableOptions::default()).unwrap();
    let beta = db.create_table("beta", beta).unwrap();
    assert_eq!(alpha.info().encrypted, encrypted);
    assert_eq!(beta.info().encrypted, encrypted);
    [alpha, beta]
}

/// Phases 1 to 3 of the module doc: what stays committed.
fn committed_phases(db: &Db, tables: &[Table; 2]) {
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(60) {
        let mut txn = db.begin().unwrap();
        for &i in chunk {
            for (t, table) in tables.iter().enumerate() {
                txn.put(table, &key(i), &value(t, i, 1)).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    db.checkpoint().unwrap();

    let mut txn = db.begin().unwrap();
    for (t, table) in tables.iter().enumerate() {
        for i in (0..RECORDS).filter(|i| i.is_multiple_of(3)) {
            txn.put(table, &key(i), &value(t, i, 2)).unwrap();
        }
        for i in (0..RECORDS).filter(|i| i.is_multiple_of(5)) {
            assert!(txn.delete(table, &key(i)).unwrap());
        }
    }
    txn.commit().unwrap();

    let mut txn = db.begin().unwrap();
    for (t, table) in tables.iter().enumerate() {
        for i in (0..RECORDS).filter(|i| i % 4 == 1) {
            txn.put(table, &key(i), &value(t, i, 3)).unwrap();
        }
        for i in (0..RECORDS).filter(|i| i % 7 == 2) {
            txn.delete(table, &key(i)).unwrap();
        }
    }
    txn.rollback().unwrap();
}

/// What the committed phases leave in table `t`.
fn expected(t: usize, i: usize) -> Option<Vec<u8>> {
    if i.is_multiple_of(5) {
        None
    } else if i.is_multiple_of(3) {
        Some(value(t, i, 2))
    } else {
        Some(value(t, i, 1))
    }
}

fn check_contents(db: &Db, tables: &[Table; 2]) {
    for (t, table) in tables.iter().enumerate() {
        for i in 0..RECORDS {
            assert_eq!(
                db.get(table, &key(i)).unwrap(),
                expected(t, i),
                "table {t} record {i}"
            );
        }
    }
    db.verify().unwrap();
}

/// What kind of file a path in the data directory is; the scan reports hits per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    RedoSegment,
    RedoControl,
    Doublewrite,
    SystemSpace,
    TemporarySpace,
    TableSpace,
    Other,
}

fn kind_of(data: &Path, path: &Path) -> Kind {
    let name = path.file_name().unwrap().to_string_lossy();
    let in_redo = path.parent() == Some(&data.join("redo"));
    match name.as_ref() {
        _ if in_redo && name.starts_with("redo-") && name.ends_with(".log") => Kind::RedoSegment,
        "redo.ctl" if in_redo => Kind::RedoControl,
        "doublewrite.dbw" => Kind::Doublewrite,
        "system.sbd" => Kind::SystemSpace,
        "temp.sbd" => Kind::TemporarySpace,
        _ if name.starts_with("space-") && name.ends_with(".sbd") => Kind::TableSpace,
        _ => Kind::Other,
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

/// One file's scan result.
#[derive(Debug)]
struct Scanned {
    kind: Kind,
    bytes: Vec<u8>,
    hits: usize,
}

/// Every file under `data`, recursively, with its marker hits.
fn scan(data: &Path) -> BTreeMap<PathBuf, Scanned> {
    let mut files = BTreeMap::new();
    let mut pending = vec![data.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(count(path.to_string_lossy().as_bytes(), MARKER), 0);
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let scanned = Scanned {
                kind: kind_of(data, &path),
                hits: count(&bytes, MARKER),
                bytes,
            };
            files.insert(path, scanned);
        }
    }
    files
}

/// Marker hits per kind of file, and the files of each kind (so a failure names them).
fn hits_by_kind(files: &BTreeMap<PathBuf, Scanned>) -> BTreeMap<Kind, (usize, Vec<String>)> {
    let mut by_kind: BTreeMap<Kind, (usize, Vec<String>)> = BTreeMap::new();
    for (path, scanned) in files {
        let entry = by_kind.entry(scanned.kind).or_default();
        entry.0 += scanned.hits;
        entry.1.push(format!(
            "{} ({} hits)",
            path.file_name().unwrap().to_string_lossy(),
            scanned.hits
        ));
    }
    by_kind
}

fn hits_of(by_kind: &BTreeMap<Kind, (usize, Vec<String>)>, kind: Kind) -> usize {
    by_kind
        .get(&kind)
        .unwrap_or_else(|| panic!("no {kind:?} file in the data directory: {by_kind:?}"))
        .0
}

fn system_space(files: &BTreeMap<PathBuf, Scanned>) -> &[u8] {
    let (_, system) = files
        .iter()
        .find(|(_, s)| s.kind == Kind::SystemSpace)
        .expect("system.sbd");
    &system.bytes
}

/// The undo pages of the system space (their header is stored in the clear).
fn undo_pages(system: &[u8]) -> impl Iterator<Item = &[u8]> {
    system.chunks(PAGE_SIZE).filter(|page| {
        page.len() == PAGE_SIZE && u16::from_le_bytes([page[4], page[5]]) == UNDO_PAGE_TYPE
    })
}

/// Slots of the doublewrite file that were ever written (FORMAT.md §6: past the 4 KiB
/// header, slots of 24 + page-size bytes; an unwritten slot is all zeros).
fn written_doublewrite_slots(files: &BTreeMap<PathBuf, Scanned>) -> usize {
    let (_, dw) = files
        .iter()
        .find(|(_, s)| s.kind == Kind::Doublewrite)
        .expect("doublewrite.dbw");
    dw.bytes[4096..]
        .chunks(24 + PAGE_SIZE)
        .filter(|slot| slot.iter().any(|&b| b != 0))
        .count()
}

/// The scans of one run: with the last transaction open, and after close.
type Scans = [BTreeMap<PathBuf, Scanned>; 2];

/// Runs the workload in a new database at `data` and scans it twice: with the last
/// transaction open after a checkpoint (the state a crash then leaves), and after rollback
/// and close. Checks the committed contents after rollback and after a reopen.
fn run(data: &Path, options: Options, encrypted: bool) -> Scans {
    let db = Db::open(data, options.clone()).unwrap();
    let tables = create_tables(&db, encrypted);
    committed_phases(&db, &tables);

    let mut txn = db.begin().unwrap();
    for (t, table) in tables.iter().enumerate() {
        for i in (0..RECORDS).filter(|i| i.is_multiple_of(2)) {
            txn.put(table, &key(i), &value(t, i, 4)).unwrap();
        }
        for i in (0..RECORDS).filter(|i| i % 11 == 1) {
            txn.delete(table, &key(i)).unwrap();
        }
    }
    db.checkpoint().unwrap();
    let open = scan(data);
    txn.rollback().unwrap();
    check_contents(&db, &tables);
    db.close().unwrap();
    drop(db);
    let closed = scan(data);

    let db = Db::open(data, options).unwrap();
    let tables = [db.table("alpha").unwrap(), db.table("beta").unwrap()];
    check_contents(&db, &tables);
    db.close().unwrap();
    [open, closed]
}

#[test]
fn redo_undo_and_doublewrite_hold_no_plaintext_of_encrypted_tables() {
    for algorithm in Algorithm::ALL {
        let dir = tempfile::tempdir().unwrap();
        let keys = key_file(dir.path());
        let data = dir.path().join("data");
        let options = Options::new()
            .keyfile(&keys)
            .encrypt_tables(EncryptTables::On)
            .encryption_algorithm(algorithm)
            .buffer_pool_size(1 << 20);
        let scans = run(&data, options, true);
        for (when, files) in ["with a transaction open", "after close"]
            .iter()
            .zip(&scans)
        {
            let by_kind = hits_by_kind(files);
            for kind in [Kind::RedoSegment, Kind::Doublewrite, Kind::SystemSpace] {
                assert_eq!(
                    hits_of(&by_kind, kind),
                    0,
                    "{algorithm}, {when}: the marker leaks into {kind:?}: {by_kind:?}"
                );
            }
            let leaks: Vec<_> = by_kind.iter().filter(|(_, (hits, _))| *hits > 0).collect();
            assert!(leaks.is_empty(), "{algorithm}, {when}: {leaks:?}");
        }
        // There was something to find: before-images in undo pages, doublewrite slots,
        // a redo log with the workload in it.
        let open = &scans[0];
        assert!(
            undo_pages(system_space(open)).count() > 0,
            "{algorithm}: the open transaction's undo pages are on disk"
        );
        assert!(written_doublewrite_slots(open) > 0, "{algorithm}");
        let redo_bytes: usize = open
            .values()
            .filter(|s| s.kind == Kind::RedoSegment)
            .map(|s| s.bytes.len())
            .sum();
        assert!(
            redo_bytes > 100_000,
            "{algorithm}: {redo_bytes} bytes of redo"
        );
    }
}

#[test]
fn control_unencrypted_redo_undo_and_doublewrite_show_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let options = Options::new()
        .encrypt_tables(EncryptTables::Off)
        .encrypt_log(false)
        .buffer_pool_size(1 << 20);
    let [open, _] = run(&data, options, false);
    let by_kind = hits_by_kind(&open);
    for kind in [
        Kind::RedoSegment,
        Kind::Doublewrite,
        Kind::SystemSpace,
        Kind::TableSpace,
    ] {
        assert!(
            hits_of(&by_kind, kind) > 0,
            "the control must find the marker in {kind:?}: {by_kind:?}"
        );
    }
    let in_undo: usize = undo_pages(system_space(&open))
        .map(|page| count(page, MARKER))
        .sum();
    assert!(
        in_undo > 0,
        "the open transaction's before-images are plaintext in its undo pages: {by_kind:?}"
    );
}
