//! Volume and size limits.
//!
//! * `hundred_megabytes_through_a_one_megabyte_pool`: over 100 MB written into an encrypted
//!   table on real files (a temporary directory, the default `StdVfs`) through a 1 MiB
//!   buffer pool, read back in full and verified; then everything is deleted, which must put
//!   every page but the root on the free list, and re-inserting half of it must reuse those
//!   pages: the page count and the file size stay put. Survives a reopen.
//! * `sixteen_megabyte_value_with_a_one_megabyte_pool`: one 16 MiB value (an overflow chain
//!   sixteen times the pool) round-trips through put, get, scan, transaction and reopen, and
//!   its pages return to the free list when it is replaced or deleted.
//! * `keys_up_to_max_key_len_work_and_longer_are_refused`: for every page size, keys of
//!   exactly `max_key_len` bytes work (also as separators three levels deep, and with
//!   values on either side of the inline limit), one more byte is `Error::KeyTooLarge`,
//!   and `max_key_len >= page_size / 4`.

mod common;

use common::{assert_contents, keyring, mem_options, value_bytes, Rng};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use strongbox_engine::btree::node;
use strongbox_engine::io::MemVfs;
use strongbox_engine::page::{body_end, BODY_START};
use strongbox_engine::{Db, EncryptTables, Encrypted, Error, Options, TableOptions};
use strongbox_keyring::provider::MemoryKeyProvider;
use strongbox_keyring::Algorithm;

const MIB: usize = 1 << 20;

// ---- 100 MB ---------------------------------------------------------------------------------

/// Bytes the big test writes, at least.
const TOTAL_BYTES: usize = 100_000_000;
/// Rows per transaction.
const BATCH: usize = 200;

/// The value of row `i`: mostly 1 to 8 KB (inline on 16 KiB pages), every 64th row 40 to
/// 120 KB (an overflow chain).
fn row_len(i: usize) -> usize {
    let mut rng = Rng::new(i as u64);
    if i.is_multiple_of(64) {
        40_000 + rng.below(80_000)
    } else {
        1000 + rng.below(7000)
    }
}

fn row_key(i: usize) -> Vec<u8> {
    format!("row{i:08}").into_bytes()
}

fn row_value(i: usize) -> Vec<u8> {
    value_bytes(i as u64, row_len(i))
}

fn file_options(keys: &Arc<MemoryKeyProvider>) -> Options {
    Options::new()
        .key_provider(Arc::clone(keys) as _)
        .encrypt_tables(EncryptTables::On)
        .buffer_pool_size(MIB)
}

/// Puts rows `rows` in a scattered order (a fixed permutation), `BATCH` per transaction.
fn insert_rows(db: &Db, table: &strongbox_engine::Table, rows: &[usize]) {
    let n = rows.len();
    // 7919 is prime and does not divide any row count used here, so this visits each once.
    let order = (0..n).map(|j| rows[(j * 7919) % n]);
    let order: Vec<usize> = order.collect();
    for batch in order.chunks(BATCH) {
        let mut txn = db.begin().expect("begin");
        for &i in batch {
            txn.put(table, &row_key(i), &row_value(i)).expect("put");
        }
        txn.commit().expect("commit");
    }
}

/// Every row of `rows` (ascending) and nothing else, via a full scan.
fn check_rows(db: &Db, table: &strongbox_engine::Table, rows: &[usize]) {
    let mut expected = rows.iter();
    let mut count = 0;
    for entry in db.range(table, .., false).expect("scan") {
        let (key, value) = entry.expect("scan entry");
        let i = *expected.next().expect("no more rows than written");
        assert_eq!(key, row_key(i));
        assert!(value == row_value(i), "row {i} has the wrong value");
        count += 1;
    }
    assert_eq!(count, rows.len());
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).expect("the table's file").len()
}

#[test]
fn hundred_megabytes_through_a_one_megabyte_pool() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let keys = keyring();
    let db = Db::open(dir.path(), file_options(&keys)).expect("open");
    assert_eq!(db.stats().frames, (MIB / db.page_size()) as u64);
    let table = db
        .create_table("big", TableOptions::default().encrypted(Encrypted::Yes))
        .expect("create");
    let file = dir
        .path()
        .join(strongbox_engine::space::file_name(table.space_id()));

    let mut rows = 0;
    let mut bytes = 0;
    while bytes < TOTAL_BYTES {
        bytes += row_key(rows).len() + row_len(rows);
        rows += 1;
    }
    let all: Vec<usize> = (0..rows).collect();
    insert_rows(&db, &table, &all);
    let stats = db.stats();
    assert!(
        stats.evictions > 0 && stats.pages_encrypted > 0,
        "{stats:?}"
    );

    check_rows(&db, &table, &all);
    let mut rng = Rng::new(99);
    for _ in 0..500 {
        let i = rng.below(rows);
        assert_eq!(
            db.get(&table, &row_key(i)).expect("get"),
            Some(row_value(i))
        );
    }
    let tree = table.verify().expect("verify");
    assert_eq!(tree.entries, rows as u64);
    db.checkpoint().expect("checkpoint");
    let pages = table.info().pages;
    let size = file_len(&file);
    assert!(
        size >= TOTAL_BYTES as u64,
        "the file holds all the data: {size}"
    );

    // Delete everything: every page but page 0 and the root goes back to the free list.
    for batch in all.chunks(BATCH) {
        let mut txn = db.begin().expect("begin");
        for &i in batch {
            assert!(txn.delete(&table, &row_key(i)).expect("delete"));
        }
        txn.commit().expect("commit");
    }
    let tree = table.verify().expect("verify after deleting");
    assert_eq!((tree.entries, tree.depth), (0, 1));
    assert_eq!(tree.free_pages, u64::from(pages) - 2);
    assert_eq!(table.info().pages, pages);

    // Half the data again: it fits in the freed pages, so the space does not grow.
    let half: Vec<usize> = (0..rows / 2).collect();
    insert_rows(&db, &table, &half);
    db.checkpoint().expect("checkpoint");
    assert_eq!(table.info().pages, pages, "re-inserting reuses freed pages");
    assert_eq!(file_len(&file), size, "the file did not grow");
    let tree = table.verify().expect("verify after re-inserting");
    assert_eq!(tree.entries, half.len() as u64);

    drop(table);
    db.close().expect("close");
    drop(db);
    let db = Db::open(dir.path(), file_options(&keys)).expect("reopen");
    let table = db.table("big").expect("table");
    db.verify().expect("verify after reopening");
    check_rows(&db, &table, &half);
}

// ---- 16 MiB value ---------------------------------------------------------------------------

#[test]
fn sixteen_megabyte_value_with_a_one_megabyte_pool() {
    let vfs = MemVfs::new();
    let keys = keyring();
    let page_size = 16384;
    let options = || mem_options(&vfs, &keys, page_size, MIB / page_size, Algorithm::AesGcm);
    let db = Db::open("/db", options()).expect("open");
    let table = db
        .create_table("t", TableOptions::default())
        .expect("create");
    let big = value_bytes(16, 16 * MIB);

    db.put(&table, b"big", &big).expect("put 16 MiB");
    db.put(&table, b"after", b"small").expect("put");
    assert!(db.get(&table, b"big").expect("get").as_ref() == Some(&big));
    let tree = table.verify().expect("verify");
    // Each overflow page holds a little less than a page of value.
    let pages = tree.overflow_pages as usize;
    assert!(
        pages > big.len() / page_size && pages <= big.len() / (page_size - 128) + 1,
        "{pages} overflow pages for 16 MiB"
    );

    let scanned: Vec<_> = db
        .range(
            &table,
            (Bound::Included(&b"a"[..]), Bound::Excluded(&b"c"[..])),
            true,
        )
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("scan entries");
    assert_eq!(scanned.len(), 2);
    assert!(scanned[0].0 == b"big" && scanned[0].1 == big);

    drop(table);
    drop(db);
    let db = Db::open("/db", options()).expect("reopen");
    let table = db.table("t").expect("table");
    assert!(db.get(&table, b"big").expect("get").as_ref() == Some(&big));

    // Replacing it in a transaction frees the chain; the transaction sees its own value.
    let mut txn = db.begin().expect("begin");
    txn.put(&table, b"big", b"tiny").expect("put");
    assert_eq!(
        txn.get(&table, b"big").expect("get"),
        Some(b"tiny".to_vec())
    );
    txn.commit().expect("commit");
    let tree = table.verify().expect("verify");
    assert_eq!(tree.overflow_pages, 0);
    assert!(tree.free_pages >= pages as u64);

    // Writing it again reuses those pages.
    let before = table.info().pages;
    db.put(&table, b"big", &big).expect("put again");
    assert_eq!(table.info().pages, before);
    assert!(db.delete(&table, b"big").expect("delete"));
    let tree = table.verify().expect("verify");
    assert_eq!((tree.entries, tree.overflow_pages), (1, 0));
}

// ---- key length -----------------------------------------------------------------------------

#[test]
fn keys_up_to_max_key_len_work_and_longer_are_refused() {
    for page_size in [4096usize, 8192, 16384, 32768, 65536] {
        let vfs = MemVfs::new();
        let keys = keyring();
        let db = Db::open(
            "/db",
            mem_options(&vfs, &keys, page_size, 32, Algorithm::AesCtr),
        )
        .expect("open");
        let table = db
            .create_table("t", TableOptions::default())
            .expect("create");
        let max = table.max_key_len();
        assert!(max >= page_size / 4, "{page_size}: max_key_len {max}");

        // Longest key; then one byte more, refused by autocommit and by a transaction.
        let longest = vec![b'x'; max];
        db.put(&table, &longest, b"v").expect("put a longest key");
        assert_eq!(db.get(&table, &longest).expect("get"), Some(b"v".to_vec()));
        let too_long = vec![b'x'; max + 1];
        for result in [
            db.put(&table, &too_long, b"v"),
            db.begin().expect("begin").put(&table, &too_long, b"v"),
        ] {
            match result {
                Err(Error::KeyTooLarge { len, max: limit }) => {
                    assert_eq!((len, limit), (max + 1, max));
                }
                other => panic!("{page_size}: a key of max + 1 bytes gave {other:?}"),
            }
        }
        assert!(db.delete(&table, &longest).expect("delete"));

        // Many longest keys: branches full of longest separators, values either side of
        // the inline limit (which is tiny next to a longest key).
        let body = body_end(page_size) - BODY_START;
        let inline = node::max_inline_value(body, max);
        let mut model = BTreeMap::new();
        for i in 0..60u32 {
            let mut key = vec![b'k'; max - 4];
            key.extend_from_slice(&(i.wrapping_mul(2_654_435_761)).to_be_bytes());
            let len = match i % 3 {
                0 => inline,
                1 => inline + 1,
                _ => 3 * page_size,
            };
            let value = value_bytes(u64::from(i), len);
            db.put(&table, &key, &value).expect("put a longest key");
            model.insert(key, value);
        }
        let tree = table.verify().expect("verify");
        assert_eq!(tree.entries, 60);
        assert!(tree.depth >= 3, "{page_size}: {tree:?}");
        assert_contents(&db, &table, &model);
        let reversed: Vec<Vec<u8>> = db
            .range(&table, .., true)
            .expect("scan")
            .map(|e| e.expect("entry").0)
            .collect();
        assert!(reversed.iter().rev().eq(model.keys()));
        for key in model.keys() {
            assert!(db.delete(&table, key).expect("delete"));
        }
        let tree = table.verify().expect("verify after deleting");
        assert_eq!((tree.entries, tree.depth, tree.overflow_pages), (0, 1, 0));
    }
}
