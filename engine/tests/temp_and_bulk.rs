//! Temporary tables (trees in the temporary space, key 2, gone at restart), bulk loads
//! through the external sort (spilled runs in encrypted temporary files), and scrubbing of
//! deleted rows in unencrypted tables. Real directories: temporary files are on the real
//! file system.

mod common;

use common::{assert_contents, keyring};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use strongbox_engine::page::PageSize;
use strongbox_engine::{Db, EncryptTables, Encrypted, Error, FlushAtCommit, Options, TableOptions};
use strongbox_keyring::provider::MemoryKeyProvider;

const PAGE: usize = 4096;
const MARKER: &[u8] = b"TEMP-AND-BULK-PLAINTEXT";

fn options(keys: &Arc<MemoryKeyProvider>) -> Options {
    Options::new()
        .key_provider(Arc::clone(keys) as _)
        .encrypt_tables(EncryptTables::On)
        .page_size(PageSize::of_buffer(PAGE).unwrap())
        .buffer_pool_size(64 * PAGE)
        .flush_log_at_commit(FlushAtCommit::WriteAtCommit) // durability is not under test
}

fn value(i: u32) -> Vec<u8> {
    let mut value = MARKER.to_vec();
    value.extend_from_slice(format!("-{i:06}").as_bytes());
    value
}

fn marker_hits(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.windows(MARKER.len()).filter(|w| *w == MARKER).count()
}

#[test]
fn temporary_tables_live_in_the_encrypted_temp_space_and_vanish_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring();
    let db = Db::open(dir.path(), options(&keys)).unwrap();
    let a = db.create_temp_table("scratch_a").unwrap();
    let b = db.create_temp_table("scratch_b").unwrap();
    assert!(a.is_temporary());
    assert!(matches!(
        db.create_temp_table("scratch_a"),
        Err(Error::TableExists(_))
    ));
    let (mut model_a, mut model_b) = (BTreeMap::new(), BTreeMap::new());
    for i in 0..3000u32 {
        // The same keys in both tables: each has its own lock namespace and tree.
        let key = format!("k{:05}", i % 1500).into_bytes();
        db.put(&a, &key, &value(i)).unwrap();
        model_a.insert(key.clone(), value(i));
        if i % 3 == 0 {
            db.put(&b, &key, &value(i + 1)).unwrap();
            model_b.insert(key, value(i + 1));
        }
    }
    for i in 0..200u32 {
        let key = format!("k{i:05}").into_bytes();
        assert_eq!(db.delete(&a, &key).unwrap(), model_a.remove(&key).is_some());
    }
    assert_contents(&db, &a, &model_a);
    assert_contents(&db, &b, &model_b);
    let mut txn = db.begin().unwrap();
    let refused = txn.put(&a, b"x", b"y").unwrap_err();
    assert!(refused.to_string().contains("temporary table"), "{refused}");
    txn.rollback().unwrap();

    let temp = db
        .encryption_status()
        .unwrap()
        .into_iter()
        .find(|row| row.name == "temporary")
        .unwrap();
    assert_eq!(
        (temp.scheme, temp.key_id),
        ("aes_ctr", 2),
        "key 2 encrypts temp space"
    );
    db.checkpoint().unwrap();
    assert_eq!(
        marker_hits(&dir.path().join("temp.sbd")),
        0,
        "plaintext in temp.sbd"
    );

    let pages_before = db.table("scratch_a").unwrap().info().pages;
    db.drop_table("scratch_a").unwrap();
    assert!(matches!(db.table("scratch_a"), Err(Error::NoSuchTable(_))));
    assert_contents(&db, &b, &model_b);
    // The dropped tree's pages are reused rather than the file growing.
    let c = db.create_temp_table("scratch_c").unwrap();
    for i in 0..1000u32 {
        db.put(&c, format!("c{i:05}").as_bytes(), &value(i))
            .unwrap();
    }
    assert_eq!(
        c.info().pages,
        pages_before,
        "freed temporary pages were reused"
    );
    db.close().unwrap();
    drop(db); // releases the directory lock

    let db = Db::open(dir.path(), options(&keys)).unwrap();
    for name in ["scratch_b", "scratch_c"] {
        assert!(
            matches!(db.table(name), Err(Error::NoSuchTable(_))),
            "{name}"
        );
    }
    db.close().unwrap();
}

#[test]
fn a_bulk_load_spills_encrypted_runs_and_loads_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring();
    let db = Db::open(dir.path(), options(&keys)).unwrap();
    let table = db.create_table("bulk", TableOptions::default()).unwrap();
    let mut loader = db.bulk_loader(&table).unwrap();
    let mut model = BTreeMap::new();
    // 20k pairs in scrambled order, about 1.2 MB: several times the 1 MiB budget.
    for i in 0..20_000u32 {
        let n = i.wrapping_mul(2_654_435_761) % 15_000; // repeats: the last value wins
        let key = format!("key-{n:08}").into_bytes();
        let mut v = value(i);
        v.resize(40, b'.');
        loader.push(key.clone(), v.clone()).unwrap();
        model.insert(key, v);
    }
    let report = loader.finish(500).unwrap();
    assert!(report.spilled_runs >= 1, "{report:?}");
    assert_eq!(report.rows, model.len() as u64);
    assert_contents(&db, &table, &model);
    let tmp = dir.path().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(
        left.is_empty(),
        "temporary runs are deleted after the load: {left:?}"
    );
    db.close().unwrap();
}

#[test]
fn deleted_rows_of_a_plain_table_leave_no_plaintext_in_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring();
    let db = Db::open(dir.path(), options(&keys)).unwrap();
    let table = db
        .create_table("plain", TableOptions::default().encrypted(Encrypted::No))
        .unwrap();
    for i in 0..2000u32 {
        let mut v = value(i);
        if i % 50 == 0 {
            v.resize(6000, b'#'); // overflow chains too
        }
        db.put(&table, format!("k{i:05}").as_bytes(), &v).unwrap();
    }
    db.checkpoint().unwrap();
    let file = dir.path().join(format!("space-{}.sbd", table.space_id()));
    assert!(
        marker_hits(&file) > 1000,
        "a plain table's values are on disk"
    );
    for i in 0..2000u32 {
        db.delete(&table, format!("k{i:05}").as_bytes()).unwrap();
    }
    db.checkpoint().unwrap();
    assert_eq!(marker_hits(&file), 0, "deleted rows linger in the file");
    db.close().unwrap();
}
