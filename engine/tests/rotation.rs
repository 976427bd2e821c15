//! Key rotation, online ALTER and rewrap through the public API, on an in-memory file system:
//! rotate while a workload runs, every page ends on the new version, the old version can
//! be removed from the keyring; ALTER both ways leaves no plaintext behind; a keyring that
//! lacks a version still in use is refused with the tablespaces that need it.

mod common;

use common::{assert_contents, keyring, mem_options, TABLE_KEY_ID};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use strongbox_engine::io::{MemVfs, Vfs};
use strongbox_engine::{
    Db, Encrypted, EncryptionStatus, Error, Options, RotationPolicy, TableOptions,
};
use strongbox_keyring::provider::MemoryKeyProvider;
use strongbox_keyring::Algorithm;

const PAGE: usize = 4096;
const DIR: &str = "/db";
const MARKER: &[u8] = b"ROTATION-PLAINTEXT-MARKER";

fn options(vfs: &MemVfs, keys: &Arc<MemoryKeyProvider>) -> Options {
    mem_options(vfs, keys, PAGE, 64, Algorithm::AesCtr)
        .encryption_threads(2)
        .encryption_rotation_iops(0)
}

fn value(i: u32) -> Vec<u8> {
    let mut value = MARKER.to_vec();
    value.extend_from_slice(format!("-{i:06}").as_bytes());
    value
}

fn fill(db: &Db, name: &str, options: TableOptions, rows: u32) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let table = db.create_table(name, options).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..rows {
        let key = format!("key-{i:06}").into_bytes();
        db.put(&table, &key, &value(i)).unwrap();
        model.insert(key, value(i));
    }
    model
}

fn status_of(db: &Db, name: &str) -> EncryptionStatus {
    db.encryption_status()
        .unwrap()
        .into_iter()
        .find(|row| row.name == name)
        .unwrap_or_else(|| panic!("no status row for {name}"))
}

/// How many times the marker appears in the files under `dir`, by file.
fn marker_hits(vfs: &MemVfs, file: &str) -> usize {
    let bytes = vfs.contents(&Path::new(DIR).join(file)).unwrap_or_default();
    bytes.windows(MARKER.len()).filter(|w| *w == MARKER).count()
}

#[test]
fn rotating_under_a_workload_moves_every_page_and_frees_the_old_version() {
    let vfs = MemVfs::new();
    let keys = keyring();
    let db = Db::open(DIR, options(&vfs, &keys)).unwrap();
    let mut model = fill(&db, "t", TableOptions::default(), 3000);
    let table = db.table("t").unwrap();
    assert_eq!(status_of(&db, "t").current_key_version, 1);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, table, stop) = (db.clone(), table.clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let mut written = BTreeMap::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) || i < 500 {
                let key = format!("live-{i:06}").into_bytes();
                db.put(&table, &key, &value(i)).unwrap();
                written.insert(key, value(i));
                i += 1;
            }
            written
        })
    };
    keys.rotate(1).unwrap();
    let report = db.rotate_key(1, RotationPolicy::Reencrypt).unwrap();
    assert_eq!(report.version, 2);
    assert!(report.log_rewrapped);
    let mut reports = 0;
    db.wait_for_encryption(|_| reports += 1).unwrap();
    assert!(reports > 0);
    stop.store(true, Ordering::Relaxed);
    model.extend(writer.join().unwrap());

    for row in db.encryption_status().unwrap() {
        if row.key_id == 1 {
            assert_eq!(
                (row.current_key_version, row.min_key_version, row.rotating),
                (2, 2, false),
                "{row:?}"
            );
            assert_eq!(row.pages_done, row.pages_total);
        }
    }
    assert_contents(&db, &table, &model);
    db.verify().unwrap();
    db.close().unwrap();

    assert!(keys.remove(1, 1), "version 1 was in the keyring");
    let db = Db::open(DIR, options(&vfs, &keys)).expect("version 1 is no longer needed");
    assert_contents(&db, &db.table("t").unwrap(), &model);
    db.close().unwrap();
}

#[test]
fn a_keyring_without_a_version_in_use_is_refused_naming_the_tablespaces() {
    let vfs = MemVfs::new();
    let keys = keyring();
    let db = Db::open(DIR, options(&vfs, &keys).encryption_threads(0)).unwrap();
    fill(
        &db,
        "a",
        TableOptions::default().encryption_key_id(TABLE_KEY_ID),
        10,
    );
    fill(
        &db,
        "b",
        TableOptions::default().encryption_key_id(TABLE_KEY_ID),
        10,
    );
    keys.rotate(TABLE_KEY_ID).unwrap();
    // A new generation for new writes, but no page moved yet (no threads, nobody waits).
    db.rotate_key(TABLE_KEY_ID, RotationPolicy::Reencrypt)
        .unwrap();
    assert!(status_of(&db, "a").rotating);
    db.close().unwrap();
    assert!(keys.remove(TABLE_KEY_ID, 1));
    let error = Db::open(DIR, options(&vfs, &keys)).unwrap_err();
    assert!(matches!(error, Error::KeyVersionsMissing { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("space-1.sbd") && text.contains("space-2.sbd"),
        "{text}"
    );
    assert!(text.contains("version 1"), "{text}");
}

#[test]
fn rotation_with_no_threads_runs_inside_the_wait_and_survives_reopen_part_way() {
    let vfs = MemVfs::new();
    let keys = keyring();
    let opts = || options(&vfs, &keys).encryption_threads(0);
    let db = Db::open(DIR, opts()).unwrap();
    let model = fill(&db, "t", TableOptions::default(), 2000);
    keys.rotate(1).unwrap();
    db.rotate_key(1, RotationPolicy::Reencrypt).unwrap();
    db.close().unwrap();
    // Reopened: page 0 still says a pass is running; waiting finishes it here.
    let db = Db::open(DIR, opts()).unwrap();
    assert!(status_of(&db, "t").rotating);
    db.wait_for_encryption(|_| {}).unwrap();
    let row = status_of(&db, "t");
    assert_eq!((row.rotating, row.min_key_version), (false, 2));
    assert_contents(&db, &db.table("t").unwrap(), &model);
    db.close().unwrap();
}

#[test]
fn rewrap_changes_no_page_and_lets_the_old_version_go() {
    let vfs = MemVfs::new();
    let keys = keyring();
    let db = Db::open(DIR, options(&vfs, &keys)).unwrap();
    let model = fill(&db, "t", TableOptions::default(), 500);
    db.checkpoint().unwrap();
    let written_before = db.stats().pages_written;
    keys.rotate(1).unwrap();
    let report = db.rotate_key(1, RotationPolicy::Rewrap).unwrap();
    assert!(report.log_rewrapped);
    assert!(
        report.spaces.contains(&0),
        "the system space is under key 1"
    );
    assert_eq!(
        db.stats().pages_written,
        written_before,
        "rewrap writes no data page"
    );
    let row = status_of(&db, "t");
    assert_eq!(
        (row.current_key_version, row.rotating),
        (1, false),
        "same data key"
    );
    db.close().unwrap();
    assert!(keys.remove(1, 1));
    let db = Db::open(DIR, options(&vfs, &keys)).expect("every wrap moved to version 2");
    assert_contents(&db, &db.table("t").unwrap(), &model);
    db.close().unwrap();
}

#[test]
fn alter_to_encrypted_leaves_no_plaintext_and_back_to_plain_works() {
    let vfs = MemVfs::new();
    let keys = keyring();
    let db = Db::open(DIR, options(&vfs, &keys)).unwrap();
    let mut model = fill(
        &db,
        "t",
        TableOptions::default().encrypted(Encrypted::No),
        1500,
    );
    let table = db.table("t").unwrap();
    // Deleted rows leave freed pages behind: they must not keep plaintext either.
    for i in 0..300 {
        let key = format!("key-{i:06}").into_bytes();
        db.delete(&table, &key).unwrap();
        model.remove(&key);
    }
    db.checkpoint().unwrap();
    let file = format!("space-{}.sbd", table.space_id());
    assert!(
        marker_hits(&vfs, &file) > 0,
        "a plain table's file holds its values"
    );

    db.alter_table(
        "t",
        TableOptions::default()
            .encrypted(Encrypted::Yes)
            .encryption_key_id(TABLE_KEY_ID),
    )
    .unwrap();
    for i in 0..200 {
        let key = format!("during-{i:04}").into_bytes();
        db.put(&table, &key, &value(i)).unwrap(); // writes go on meanwhile
        model.insert(key, value(i));
    }
    db.wait_for_encryption(|_| {}).unwrap();
    let row = status_of(&db, "t");
    assert_eq!(
        (row.scheme, row.key_id, row.rotating),
        ("aes_ctr", TABLE_KEY_ID, false)
    );
    db.checkpoint().unwrap();
    assert_eq!(
        marker_hits(&vfs, &file),
        0,
        "plaintext left in the table's file"
    );
    assert_eq!(
        marker_hits(&vfs, "doublewrite.dbw"),
        0,
        "plaintext left in the doublewrite"
    );
    let redo_hits: usize = vfs
        .list(&Path::new(DIR).join("redo"))
        .unwrap()
        .iter()
        .map(|path| {
            let bytes = vfs.contents(path).unwrap_or_default();
            bytes.windows(MARKER.len()).filter(|w| *w == MARKER).count()
        })
        .sum();
    assert_eq!(redo_hits, 0, "the redo log is encrypted");
    assert_contents(&db, &table, &model);

    db.alter_table("t", TableOptions::default().encrypted(Encrypted::No))
        .unwrap();
    db.wait_for_encryption(|_| {}).unwrap();
    assert_eq!(status_of(&db, "t").scheme, "none");
    db.close().unwrap();
    let db = Db::open(DIR, options(&vfs, &keys)).unwrap();
    assert_contents(&db, &db.table("t").unwrap(), &model);
    assert_eq!(
        status_of(&db, "t").scheme,
        "none",
        "the ALTER survives a reopen"
    );
    db.close().unwrap();
}

#[test]
fn encrypt_tables_off_decrypts_default_tables_and_on_encrypts_them_again() {
    let vfs = MemVfs::new();
    let keys = keyring();
    let db = Db::open(DIR, options(&vfs, &keys)).unwrap();
    let model = fill(&db, "d", TableOptions::default(), 800);
    fill(
        &db,
        "y",
        TableOptions::default().encrypted(Encrypted::Yes),
        10,
    );
    db.close().unwrap();

    let off = || options(&vfs, &keys).encrypt_tables(strongbox_engine::EncryptTables::Off);
    let db = Db::open(DIR, off()).unwrap();
    db.wait_for_encryption(|_| {}).unwrap();
    assert_eq!(
        status_of(&db, "d").scheme,
        "none",
        "default tables follow encrypt_tables"
    );
    assert_eq!(
        status_of(&db, "y").scheme,
        "aes_ctr",
        "encrypted = yes stays encrypted"
    );
    assert_contents(&db, &db.table("d").unwrap(), &model);
    db.close().unwrap();

    let db = Db::open(DIR, options(&vfs, &keys)).unwrap();
    db.wait_for_encryption(|_| {}).unwrap();
    assert_eq!(status_of(&db, "d").scheme, "aes_ctr");
    assert_contents(&db, &db.table("d").unwrap(), &model);
    db.close().unwrap();
}

#[test]
fn idle_encryption_threads_never_wake_and_work_wakes_them() {
    let vfs = MemVfs::new();
    let keys = keyring();
    let db = Db::open(DIR, options(&vfs, &keys).encryption_threads(4)).unwrap();
    let model = fill(&db, "t", TableOptions::default(), 500);
    thread::sleep(std::time::Duration::from_millis(200));
    let settled = db.stats().encryption_wakeups;
    thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(
        db.stats().encryption_wakeups,
        settled,
        "an idle encryption thread woke up with nothing to do (a polling loop)"
    );
    keys.rotate(1).unwrap();
    db.rotate_key(1, RotationPolicy::Reencrypt).unwrap();
    db.wait_for_encryption(|_| {}).unwrap();
    let stats = db.stats();
    assert!(
        stats.encryption_wakeups > settled,
        "the rotation woke the threads"
    );
    let moved: u64 = db
        .encryption_status()
        .unwrap()
        .iter()
        .filter(|row| row.key_id == 1)
        .map(|row| u64::from(row.pages_total))
        .sum();
    assert_eq!(
        stats.pages_reencrypted, moved,
        "each page rewritten once: no two of the 4 threads ran one space's pass"
    );
    assert_contents(&db, &db.table("t").unwrap(), &model);
    db.close().unwrap();
}

#[test]
fn every_algorithm_rotates_and_alters() {
    for algorithm in [Algorithm::AesCtr, Algorithm::AesCbc, Algorithm::AesGcm] {
        let vfs = MemVfs::new();
        let keys = keyring();
        let opts = || {
            mem_options(&vfs, &keys, PAGE, 32, algorithm)
                .encryption_threads(1)
                .encryption_rotation_iops(0)
        };
        let db = Db::open(DIR, opts()).unwrap();
        let model = fill(
            &db,
            "t",
            TableOptions::default().encrypted(Encrypted::No),
            800,
        );
        db.alter_table("t", TableOptions::default().encrypted(Encrypted::Yes))
            .unwrap();
        db.wait_for_encryption(|_| {}).unwrap();
        assert_eq!(status_of(&db, "t").scheme, algorithm.name());
        keys.rotate(1).unwrap();
        db.rotate_key(1, RotationPolicy::Reencrypt).unwrap();
        db.wait_for_encryption(|_| {}).unwrap();
        db.close().unwrap();
        assert!(keys.remove(1, 1));
        let db = Db::open(DIR, opts()).unwrap();
        assert_contents(&db, &db.table("t").unwrap(), &model);
        assert_eq!(status_of(&db, "t").min_key_version, 2, "{algorithm}");
        db.close().unwrap();
    }
}

/// Regression (found by the kill -9 tests): pages cached since they were read under a key
/// keep that key in their frame header; after key 5 -> plain -> key 5 the pass must still
/// rewrite them, or they stay plain in a table reported as encrypted.
#[test]
fn a_pass_rewrites_pages_whose_cached_header_looks_current() {
    let vfs = MemVfs::new();
    let keys = keyring();
    let opts = || options(&vfs, &keys).encryption_threads(0);
    let yes5 = TableOptions::default()
        .encrypted(Encrypted::Yes)
        .encryption_key_id(TABLE_KEY_ID);
    let db = Db::open(DIR, opts()).unwrap();
    let model = fill(&db, "t", yes5, 2000);
    db.close().unwrap();
    drop(db);
    let db = Db::open(DIR, opts()).unwrap();
    let table = db.table("t").unwrap();
    assert_contents(&db, &table, &model); // every page cached as read: key 5, version 1
    for step in [TableOptions::default().encrypted(Encrypted::No), yes5] {
        db.alter_table("t", step).unwrap();
        db.wait_for_encryption(|_| {}).unwrap();
    }
    db.close().unwrap();
    drop(db);
    let db = Db::open(DIR, opts()).unwrap();
    assert_contents(&db, &db.table("t").unwrap(), &model);
    db.checkpoint().unwrap();
    let file = format!("space-{}.sbd", db.table("t").unwrap().space_id());
    assert_eq!(
        marker_hits(&vfs, &file),
        0,
        "plaintext pages in an encrypted table"
    );
    db.close().unwrap();
}

/// A `create_table` cut short before its header page was synced leaves a short file that
/// no catalog entry can name: the next open deletes it instead of failing.
#[test]
fn a_tablespace_file_shorter_than_its_header_is_a_leftover() {
    let vfs = MemVfs::new();
    let keys = keyring();
    let db = Db::open(DIR, options(&vfs, &keys)).unwrap();
    let model = fill(&db, "t", TableOptions::default(), 100);
    db.close().unwrap();
    drop(db);
    for (name, len) in [("space-40.sbd", 0), ("space-41.sbd", 100)] {
        let file = vfs
            .open(
                &Path::new(DIR).join(name),
                strongbox_engine::io::OpenMode::CreateNew,
            )
            .unwrap();
        file.write_at(&vec![7u8; len], 0).unwrap();
    }
    let db = Db::open(DIR, options(&vfs, &keys)).unwrap();
    assert_eq!(db.recovery().leftover_files_removed, 2);
    assert!(!vfs.exists(&Path::new(DIR).join("space-40.sbd")));
    assert_contents(&db, &db.table("t").unwrap(), &model);
    db.close().unwrap();
}

/// ALTER key 1 → key 2 → key 1 while the first batch of the key-1 pass runs: the second
/// ALTER puts back the stored key-1 generation, so page 0 is again exactly the record the
/// batch started under (`next_page` 1), although pages of the batch were written with key
/// 2 meanwhile (the last ALTER's checkpoint) and so skipped by the batch's flush. The batch
/// must not count as done: it did, the finish dropped key 2's generation, and those pages
/// could no longer be read ("key id 2 version 1, which is not available"; found by
/// `crash_loop`).
#[test]
fn an_alter_back_to_the_key_a_running_batch_started_under_does_not_skip_its_pages() {
    let vfs = MemVfs::new();
    let keys = keyring();
    // One thread, slow enough that both ALTERs land inside the pass's first batch.
    let opts = || {
        options(&vfs, &keys)
            .encryption_threads(1)
            .encryption_rotation_iops(40)
    };
    let key = |id| {
        TableOptions::default()
            .encrypted(Encrypted::Yes)
            .encryption_key_id(id)
    };
    let db = Db::open(DIR, opts()).unwrap();
    let mut model = fill(&db, "t", key(TABLE_KEY_ID), 2000);
    let table = db.table("t").unwrap();
    let pages = db.encryption_status().unwrap();
    let pages = pages
        .iter()
        .find(|row| row.name == "t")
        .unwrap()
        .pages_total;
    assert!(
        (16..64).contains(&pages),
        "the table should fit one batch but take a while: {pages} pages"
    );
    db.alter_table("t", key(1)).unwrap();
    thread::sleep(std::time::Duration::from_millis(300));
    db.alter_table("t", key(2)).unwrap();
    thread::sleep(std::time::Duration::from_millis(300)); // the pass dirties more pages
    for i in (0..2000).step_by(50) {
        let key = format!("key-{i:06}").into_bytes();
        db.put(&table, &key, &value(i + 1)).unwrap();
        model.insert(key, value(i + 1));
    }
    // Its checkpoint writes the dirty pages with key 2, then key 1 is current again.
    db.alter_table("t", key(1)).unwrap();
    db.wait_for_encryption(|_| {}).unwrap();
    let t = status_of(&db, "t");
    assert_eq!((t.key_id, t.min_key_version, t.rotating), (1, 1, false));
    db.close().unwrap();
    drop(db);
    let db = Db::open(DIR, opts()).unwrap();
    assert_contents(&db, &db.table("t").unwrap(), &model);
    db.verify().unwrap();
    db.close().unwrap();
}
