//! The plaintext-leak invariant, checked on the files themselves.
//!
//! A workload writes records whose keys and values carry a marker (`LEAKMARK-<n>-`): small
//! values, overflow-sized values, and values that are later overwritten or deleted, with a
//! checkpoint between the phases so that every version really reaches the disk. After
//! close, every byte of every file in the data directory (the temporary space included) is
//! scanned for the marker.
//!
//! * Encrypted tables, every algorithm: zero hits anywhere.
//! * Controls: an unencrypted database, and an `encrypted = no` table next to an encrypted
//!   one, do show the marker — so the scan would see a leak if there were one.
//! * Deleting every record of an unencrypted table and checkpointing leaves no marker in
//!   its file: freed pages and removed cells are zeroed, not just unlinked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use strongbox::engine::{Db, EncryptTables, Encrypted, Options, Table, TableOptions};
use strongbox::keyring::keyfile::KeyFile;
use strongbox::keyring::source::KeyFileSource;
use strongbox::keyring::Algorithm;

const MARKER: &[u8] = b"LEAKMARK";

/// Records the workload writes; every 40th value is overflow-sized.
const RECORDS: usize = 600;
/// Larger than a 16 KiB page, so these values live on overflow pages.
const BIG_VALUE_LEN: usize = 40_000;

fn key(i: usize) -> Vec<u8> {
    format!("LEAKMARK-{i}-key").into_bytes()
}

fn first_value(i: usize) -> Vec<u8> {
    let unit = if i.is_multiple_of(40) {
        format!("LEAKMARK-{i}-big-")
    } else {
        format!("LEAKMARK-{i}-value-")
    };
    let len = if i.is_multiple_of(40) {
        BIG_VALUE_LEN
    } else {
        80
    };
    unit.repeat(len / unit.len() + 1).into_bytes()[..len].to_vec()
}

fn second_value(i: usize) -> Vec<u8> {
    format!("LEAKMARK-{i}-overwritten-").repeat(3).into_bytes()
}

/// A key file with keys 1 and 2, mode 0600, in `dir`.
fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("keys.txt");
    KeyFileSource::plain(&path)
        .create(&KeyFile::generate(&[1, 2], 256, false).unwrap())
        .unwrap();
    path
}

/// Small enough that the workload evicts dirty pages (another path to disk).
fn small_pool(options: Options) -> Options {
    options.buffer_pool_size(512 << 10)
}

/// Inserts, checkpoints, overwrites a third (turning some overflow values small),
/// checkpoints, deletes a fifth, checkpoints.
fn workload(db: &Db, table: &Table) {
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(100) {
        let mut txn = db.begin().unwrap();
        for &i in chunk {
            txn.put(table, &key(i), &first_value(i)).unwrap();
        }
        txn.commit().unwrap();
    }
    db.checkpoint().unwrap();
    let mut txn = db.begin().unwrap();
    for i in (0..RECORDS).filter(|i| i.is_multiple_of(3)) {
        txn.put(table, &key(i), &second_value(i)).unwrap();
    }
    txn.commit().unwrap();
    db.checkpoint().unwrap();
    let mut txn = db.begin().unwrap();
    for i in (0..RECORDS).filter(|i| i.is_multiple_of(5)) {
        assert!(txn.delete(table, &key(i)).unwrap());
    }
    txn.commit().unwrap();
    db.checkpoint().unwrap();
}

/// What the workload leaves behind, checked through the engine.
fn check_contents(db: &Db, table: &Table) {
    for i in 0..RECORDS {
        let expected = if i.is_multiple_of(5) {
            None
        } else if i.is_multiple_of(3) {
            Some(second_value(i))
        } else {
            Some(first_value(i))
        };
        assert_eq!(db.get(table, &key(i)).unwrap(), expected, "record {i}");
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

/// Marker hits per file, for every file under `dir` (recursively).
fn scan(dir: &Path) -> BTreeMap<PathBuf, usize> {
    let mut hits = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            assert!(
                !path.to_string_lossy().contains("LEAKMARK"),
                "a file name carries the marker: {}",
                path.display()
            );
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                hits.insert(path, count(&bytes, MARKER));
            }
        }
    }
    hits
}

fn hits_in(hits: &BTreeMap<PathBuf, usize>, dir: &Path, file: &str) -> usize {
    *hits
        .get(&dir.join(file))
        .unwrap_or_else(|| panic!("{file} is missing from {}: {hits:?}", dir.display()))
}

fn space_file(table: &Table) -> String {
    strongbox::engine::space::file_name(table.space_id())
}

#[test]
fn encrypted_tables_leave_no_plaintext_on_disk_with_any_algorithm() {
    for algorithm in Algorithm::ALL {
        let dir = tempfile::tempdir().unwrap();
        let keys = key_file(dir.path());
        let data = dir.path().join("data");
        let options = small_pool(
            Options::new()
                .keyfile(&keys)
                .encryption_algorithm(algorithm),
        );
        let db = Db::open(&data, options.clone()).unwrap();
        // The table name is marked too: it is stored in the catalog, in the system space.
        let table = db
            .create_table("LEAKMARK-table", TableOptions::default())
            .unwrap();
        assert!(table.info().encrypted);
        workload(&db, &table);
        let stats = db.stats();
        assert!(
            stats.evictions > 0,
            "{algorithm}: the pool should be small enough to evict"
        );
        let file = space_file(&table);
        db.close().unwrap();
        drop(db);

        let hits = scan(&data);
        for expected in ["system.sbd", "temp.sbd", "strongbox.lock", file.as_str()] {
            hits_in(&hits, &data, expected);
        }
        let leaks: Vec<_> = hits.iter().filter(|(_, &n)| n > 0).collect();
        assert!(leaks.is_empty(), "{algorithm}: marker on disk: {leaks:?}");
        let table_file_len = std::fs::metadata(data.join(&file)).unwrap().len();
        assert!(
            table_file_len > 20 * 16384,
            "{algorithm}: the workload should fill many pages, file is {table_file_len} bytes"
        );

        // The data is really there: the scan found nothing because it is ciphertext.
        let db = Db::open(&data, options).unwrap();
        let table = db.table("LEAKMARK-table").unwrap();
        check_contents(&db, &table);
        db.close().unwrap();
    }
}

#[test]
fn control_unencrypted_database_shows_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = Db::open(
        &data,
        small_pool(Options::new().encrypt_tables(EncryptTables::Off)),
    )
    .unwrap();
    let table = db
        .create_table("LEAKMARK-table", TableOptions::default())
        .unwrap();
    assert!(!table.info().encrypted);
    workload(&db, &table);
    let file = space_file(&table);
    db.close().unwrap();
    drop(db);

    let hits = scan(&data);
    // Each surviving record carries its marker in the key and (many times) in the value.
    let survivors = (0..RECORDS).filter(|i| !i.is_multiple_of(5)).count();
    assert!(
        hits_in(&hits, &data, &file) >= 2 * survivors,
        "the scan must find the plaintext of an unencrypted table: {hits:?}"
    );
    assert!(
        hits_in(&hits, &data, "system.sbd") > 0,
        "the unencrypted catalog holds the table name: {hits:?}"
    );
}

#[test]
fn control_plain_table_next_to_encrypted_one_shows_the_marker_only_in_its_own_file() {
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path());
    let data = dir.path().join("data");
    let db = Db::open(&data, small_pool(Options::new().keyfile(&keys))).unwrap();
    let secret = db
        .create_table("LEAKMARK-secret", TableOptions::default())
        .unwrap();
    let plain = db
        .create_table("plain", TableOptions::default().encrypted(Encrypted::No))
        .unwrap();
    assert!(secret.info().encrypted);
    assert!(!plain.info().encrypted);
    workload(&db, &secret);
    workload(&db, &plain);
    let (secret_file, plain_file) = (space_file(&secret), space_file(&plain));
    db.close().unwrap();
    drop(db);

    let hits = scan(&data);
    assert!(hits_in(&hits, &data, &plain_file) > 0, "{hits:?}");
    for file in [secret_file.as_str(), "system.sbd", "temp.sbd"] {
        assert_eq!(hits_in(&hits, &data, file), 0, "{file}: {hits:?}");
    }
}

#[test]
fn deleting_every_record_of_an_unencrypted_table_leaves_no_marker_in_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let options = small_pool(Options::new().encrypt_tables(EncryptTables::Off));
    let db = Db::open(&data, options.clone()).unwrap();
    let table = db.create_table("plain", TableOptions::default()).unwrap();
    workload(&db, &table);
    let file = data.join(space_file(&table));
    let before = count(&std::fs::read(&file).unwrap(), MARKER);
    assert!(before > 0, "the workload must reach the file first");

    let mut txn = db.begin().unwrap();
    for i in (0..RECORDS).filter(|i| !i.is_multiple_of(5)) {
        assert!(txn.delete(&table, &key(i)).unwrap(), "record {i}");
    }
    txn.commit().unwrap();
    let stats = table.verify().unwrap();
    assert_eq!(stats.entries, 0);
    assert!(
        stats.free_pages > 0,
        "deleting should free pages: {stats:?}"
    );
    db.close().unwrap();
    drop(db);

    let bytes = std::fs::read(&file).unwrap();
    let page_size = 16384;
    let pages_with_marker: Vec<usize> = bytes
        .chunks(page_size)
        .enumerate()
        .filter(|(_, page)| count(page, MARKER) > 0)
        .map(|(page_no, _)| page_no)
        .collect();
    assert!(
        pages_with_marker.is_empty(),
        "{} still holds the marker {} times (was {before}) on pages {pages_with_marker:?}",
        file.display(),
        count(&bytes, MARKER)
    );

    // The freed pages are reusable and the table still works.
    let db = Db::open(&data, options).unwrap();
    let table = db.table("plain").unwrap();
    assert_eq!(db.range(&table, .., false).unwrap().count(), 0);
    db.put(&table, b"k", b"v").unwrap();
    assert_eq!(db.get(&table, b"k").unwrap(), Some(b"v".to_vec()));
    db.close().unwrap();
}
