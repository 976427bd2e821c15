//! Range scans at their edges, each compared with a `BTreeMap` model.
//!
//! * `empty_table`: every bound shape, both directions, inverted ranges included: nothing,
//!   and no panic.
//! * `single_key`: bounds below, at, just past and above the only key.
//! * `bounds_at_separators_of_a_three_level_tree`: thousands of keys on 4 KiB pages (three
//!   or more levels). The separators are read out of the branch pages of the table file;
//!   each one, and every key, serves as an inclusive and exclusive lower and upper bound in
//!   both directions — notably a reverse scan whose exclusive upper bound is an existing
//!   key or a separator. Repeated after deletes have made most separators non-keys.
//! * `prefix_scans`: `[prefix, prefix_end(prefix))` both ways, with prefixes of each other,
//!   prefixes ending in 0xFF, the empty prefix and an all-0xFF prefix (no upper bound).
//! * `scans_while_another_thread_deletes` and `scans_while_another_thread_inserts`: scans
//!   never fail, return keys in strict order with their own values, and always include the
//!   keys nobody touches, while another thread empties or splits leaves under them.
//! * `transaction_overlay_in_both_directions`: pending puts, overwrites and deletes merge
//!   into a transaction's scans; inverted bounds with pending writes give an empty scan;
//!   another table's pending writes stay out; rollback and commit show up correctly.

mod common;

use common::{
    as_range, assert_contents, in_range, model_range, prefix_end, value_bytes, Rng, Short,
};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use strongbox_engine::btree::node::Node;
use strongbox_engine::io::MemVfs;
use strongbox_engine::page::{self, body_end, NoKeys, PageId, PageType, BODY_START};
use strongbox_engine::{Db, EncryptTables, Encrypted, Options, Table, TableOptions};
use strongbox_keyring::Algorithm;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const DIR: &str = "/db";

fn open_plain(vfs: &MemVfs, page_size: usize, frames: usize) -> Db {
    Db::open(
        DIR,
        Options::new()
            .vfs(std::sync::Arc::new(vfs.clone()))
            .encrypt_tables(EncryptTables::Off)
            .page_size(page::PageSize::of_buffer(page_size).expect("valid"))
            .buffer_pool_size(frames * page_size),
    )
    .expect("open")
}

/// The bound shapes built from `keys`: unbounded, and each key included and excluded.
fn bounds(keys: &[Vec<u8>]) -> Vec<Bound<Vec<u8>>> {
    let mut out = vec![Bound::Unbounded];
    for key in keys {
        out.push(Bound::Included(key.clone()));
        out.push(Bound::Excluded(key.clone()));
    }
    out
}

/// Scans `table` (autocommit) and compares the first `limit` entries with the model.
fn check(
    db: &Db,
    table: &Table,
    model: &Model,
    lower: &Bound<Vec<u8>>,
    upper: &Bound<Vec<u8>>,
    reverse: bool,
    limit: usize,
) {
    let found: Vec<(Vec<u8>, Vec<u8>)> = db
        .range(table, as_range(lower, upper), reverse)
        .expect("scan")
        .take(limit)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("scan {lower:?}..{upper:?} reverse {reverse}: {e}"));
    let expected: Vec<_> = model_range(model, lower, upper, reverse)
        .into_iter()
        .take(limit)
        .collect();
    assert!(
        found == expected,
        "scan {:?}..{:?} reverse {reverse}: found {:?}, expected {:?}",
        bound_text(lower),
        bound_text(upper),
        found.iter().map(|(k, _)| Short(k)).collect::<Vec<_>>(),
        expected.iter().map(|(k, _)| Short(k)).collect::<Vec<_>>(),
    );
}

fn bound_text(bound: &Bound<Vec<u8>>) -> String {
    match bound {
        Bound::Unbounded => "..".into(),
        Bound::Included(k) => format!("[{:?}", Short(k)),
        Bound::Excluded(k) => format!("({:?}", Short(k)),
    }
}

#[test]
fn empty_table() {
    let vfs = MemVfs::new();
    let db = open_plain(&vfs, 4096, 16);
    let table = db
        .create_table("t", TableOptions::default())
        .expect("create");
    let model = Model::new();
    let keys = [Vec::new(), b"a".to_vec(), vec![0xFF; 4]];
    for lower in bounds(&keys) {
        for upper in bounds(&keys) {
            for reverse in [false, true] {
                check(&db, &table, &model, &lower, &upper, reverse, usize::MAX);
            }
        }
    }
    // A transaction with nothing pending for this table sees the same.
    let txn = db.begin().expect("begin");
    assert_eq!(txn.range(&table, .., true).expect("scan").count(), 0);
}

#[test]
fn single_key() {
    let vfs = MemVfs::new();
    let db = open_plain(&vfs, 4096, 16);
    let table = db
        .create_table("t", TableOptions::default())
        .expect("create");
    db.put(&table, b"m", b"value").expect("put");
    let model: Model = [(b"m".to_vec(), b"value".to_vec())].into();
    let keys = [
        Vec::new(),
        b"l".to_vec(),
        b"lz".to_vec(),
        b"m".to_vec(),
        b"m\0".to_vec(),
        b"n".to_vec(),
    ];
    for lower in bounds(&keys) {
        for upper in bounds(&keys) {
            for reverse in [false, true] {
                check(&db, &table, &model, &lower, &upper, reverse, usize::MAX);
            }
        }
    }
}

// ---- a deep tree ----------------------------------------------------------------------------

/// Key `i` of the deep-tree tests: a sortable number, then a tail of varying length so that
/// separators have many lengths.
fn deep_key(i: usize) -> Vec<u8> {
    let mut key = format!("{:07}", i * 3).into_bytes();
    key.extend(std::iter::repeat_n(b'.', i % 23));
    key
}

fn deep_value(i: usize) -> Vec<u8> {
    let len = if i.is_multiple_of(97) {
        9000
    } else {
        20 + i % 150
    };
    value_bytes(i as u64, len)
}

/// Fills `table` with `n` deep-tree keys in a scattered order; returns the model.
fn fill_deep(db: &Db, table: &Table, n: usize) -> Model {
    let mut model = Model::new();
    for j in 0..n {
        let i = (j * 7919) % n;
        db.put(table, &deep_key(i), &deep_value(i)).expect("put");
        model.insert(deep_key(i), deep_value(i));
    }
    model
}

/// Every separator in the branch pages of `table`'s file (after a checkpoint, so the file
/// is current). Only for unencrypted tables: the bodies are read as stored.
fn separators(vfs: &MemVfs, db: &Db, table: &Table) -> Vec<Vec<u8>> {
    db.checkpoint().expect("checkpoint");
    let path = Path::new(DIR).join(strongbox_engine::space::file_name(table.space_id()));
    let file = vfs.contents(&path).expect("the table's file");
    let page_size = db.page_size();
    let mut out = Vec::new();
    for page_no in 1..table.info().pages {
        let start = page_no as usize * page_size;
        let mut stored = file[start..start + page_size].to_vec();
        let header =
            page::decode_in_place(&mut stored, PageId::new(table.space_id(), page_no), &NoKeys)
                .expect("an intact, unencrypted page");
        if header.page_type == PageType::BtreeBranch {
            let node = Node::new(&stored[BODY_START..body_end(page_size)]).expect("a node");
            out.extend((0..node.len()).map(|i| node.key(i).to_vec()));
        }
    }
    out.sort();
    out
}

/// Scans bounded by each of `points` in every shape and direction, a few entries each, plus
/// the exact stretch between consecutive points.
fn check_around(db: &Db, table: &Table, model: &Model, points: &[Vec<u8>]) {
    for point in points {
        let included = Bound::Included(point.clone());
        let excluded = Bound::Excluded(point.clone());
        for reverse in [false, true] {
            for bound in [&included, &excluded] {
                check(db, table, model, bound, &Bound::Unbounded, reverse, 3);
                check(db, table, model, &Bound::Unbounded, bound, reverse, 3);
            }
        }
    }
    for pair in points.windows(2) {
        let lower = Bound::Included(pair[0].clone());
        let upper = Bound::Excluded(pair[1].clone());
        check(db, table, model, &lower, &upper, false, usize::MAX);
        check(db, table, model, &lower, &upper, true, usize::MAX);
    }
}

#[test]
fn bounds_at_separators_of_a_three_level_tree() {
    let vfs = MemVfs::new();
    let db = open_plain(&vfs, 4096, 32);
    let table = db
        .create_table("t", TableOptions::default())
        .expect("create");
    let mut model = fill_deep(&db, &table, 6000);
    let tree = table.verify().expect("verify");
    assert!(tree.depth >= 3, "{tree:?}");

    let seps = separators(&vfs, &db, &table);
    assert!(
        seps.len() as u64 >= tree.leaves - 1,
        "{} separators",
        seps.len()
    );
    check_around(&db, &table, &model, &seps);
    // Every key as an exclusive bound, the reverse case in particular.
    for key in model.keys() {
        let excluded = Bound::Excluded(key.clone());
        check(&db, &table, &model, &Bound::Unbounded, &excluded, true, 2);
        check(&db, &table, &model, &excluded, &Bound::Unbounded, false, 2);
    }
    check(
        &db,
        &table,
        &model,
        &Bound::Unbounded,
        &Bound::Unbounded,
        false,
        usize::MAX,
    );
    check(
        &db,
        &table,
        &model,
        &Bound::Unbounded,
        &Bound::Unbounded,
        true,
        usize::MAX,
    );

    // Delete every separator that is a key and two thirds of the rest: the separators stay
    // in the branches but name keys that are gone, and some leaves empty out.
    let doomed: Vec<Vec<u8>> = model
        .keys()
        .enumerate()
        .filter(|(n, key)| !n.is_multiple_of(3) || seps.binary_search(key).is_ok())
        .map(|(_, key)| key.clone())
        .collect();
    for key in &doomed {
        assert!(db.delete(&table, key).expect("delete"));
        model.remove(key);
    }
    let tree = table.verify().expect("verify after deleting");
    assert_eq!(tree.entries, model.len() as u64);
    check_around(&db, &table, &model, &seps);
    let seps = separators(&vfs, &db, &table);
    assert!(
        seps.iter().any(|s| !model.contains_key(s)),
        "some separators are no longer keys"
    );
    check_around(&db, &table, &model, &seps);
    assert_contents(&db, &table, &model);
}

#[test]
fn prefix_scans() {
    let vfs = MemVfs::new();
    let db = open_plain(&vfs, 4096, 16);
    let table = db
        .create_table("t", TableOptions::default())
        .expect("create");
    let mut model = Model::new();
    let mut put = |key: Vec<u8>| {
        let value = value_bytes(key.len() as u64, key.len() * 3);
        db.put(&table, &key, &value).expect("put");
        model.insert(key, value);
    };
    for key in [
        &b""[..],
        b"a",
        b"a/",
        b"a/b",
        b"a/b/c",
        b"a0",
        b"a\xFF",
        b"a\xFF\xFF",
        b"a\xFF\xFF\x00",
        b"b",
        b"\xFF",
        b"\xFF\xFF",
        b"\xFF\xFF\x00",
    ] {
        put(key.to_vec());
    }
    // Enough keys under a few prefixes to span many leaves.
    for i in 0..3000usize {
        put(format!("user/{}/{i:05}", i % 7).into_bytes());
        if i.is_multiple_of(10) {
            put(format!("a/b/{i}").into_bytes());
        }
    }
    assert!(table.verify().expect("verify").depth >= 2);

    let prefixes: [&[u8]; 12] = [
        b"",
        b"a",
        b"a/",
        b"a/b",
        b"a/b/",
        b"a\xFF",
        b"a\xFF\xFF",
        b"user/",
        b"user/3/",
        b"user/3/01",
        b"\xFF",
        b"\xFF\xFF",
    ];
    for prefix in prefixes {
        let lower = Bound::Included(prefix.to_vec());
        let upper = prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        for reverse in [false, true] {
            let found: Vec<Vec<u8>> = db
                .range(&table, as_range(&lower, &upper), reverse)
                .expect("scan")
                .map(|entry| entry.expect("entry").0)
                .collect();
            let mut expected: Vec<Vec<u8>> = model
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect();
            if reverse {
                expected.reverse();
            }
            assert_eq!(
                found,
                expected,
                "prefix {:?} reverse {reverse}",
                Short(prefix)
            );
        }
    }
}

// ---- scans racing writers -------------------------------------------------------------------

/// Runs `writer` on one thread while two threads scan `table` (full scans forward and
/// reverse, and short range scans) until it finishes, at least `MIN_SCANS` times each. Every
/// scan must succeed, be strictly ordered, carry each key's own value, and contain every
/// `stable` key in its range.
fn scan_during(
    db: &Db,
    table: &Table,
    stable: &Model,
    values: impl Fn(&[u8]) -> Vec<u8> + Sync,
    writer: impl FnOnce() + Send,
) {
    const MIN_SCANS: usize = 5;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for s in 0..2u64 {
            let (done, values) = (&done, &values);
            scope.spawn(move || {
                let mut rng = Rng::new(s);
                let mut scans = 0;
                while scans < MIN_SCANS || !done.load(Ordering::Acquire) {
                    scans += 1;
                    let reverse = rng.percent(50);
                    let (lower, upper) = if rng.percent(50) {
                        (Bound::Unbounded, Bound::Unbounded)
                    } else {
                        let mut ends = [deep_key(rng.below(4000)), deep_key(rng.below(4000))];
                        ends.sort();
                        let [low, high] = ends;
                        (Bound::Included(low), Bound::Excluded(high))
                    };
                    let mut previous: Option<Vec<u8>> = None;
                    let mut seen_stable = 0;
                    for entry in db
                        .range(table, as_range(&lower, &upper), reverse)
                        .expect("scan")
                    {
                        let (key, value) = entry.unwrap_or_else(|e| panic!("scan failed: {e}"));
                        assert!(value == values(&key), "{:?} has a wrong value", Short(&key));
                        if let Some(p) = &previous {
                            assert!(
                                if reverse { *p > key } else { *p < key },
                                "out of order at {:?}",
                                Short(&key)
                            );
                        }
                        seen_stable += usize::from(stable.contains_key(&key));
                        previous = Some(key);
                    }
                    let expected = stable
                        .keys()
                        .filter(|k| in_range(k, &lower, &upper))
                        .count();
                    assert_eq!(seen_stable, expected, "a scan missed keys nobody touched");
                }
            });
        }
        writer();
        done.store(true, Ordering::Release);
    });
}

/// The number in a deep key (`deep_key` inverted).
fn deep_index(key: &[u8]) -> usize {
    let digits = std::str::from_utf8(&key[..7]).expect("digits");
    digits.parse::<usize>().expect("a number") / 3
}

#[test]
fn scans_while_another_thread_deletes() {
    let vfs = MemVfs::new();
    let keys = common::keyring();
    let db = Db::open(
        DIR,
        common::mem_options(&vfs, &keys, 4096, 32, Algorithm::AesCtr),
    )
    .expect("open");
    let table = db
        .create_table("t", TableOptions::default().encrypted(Encrypted::Yes))
        .expect("create");
    let model = fill_deep(&db, &table, 4000);
    assert!(table.verify().expect("verify").depth >= 3);
    let stable: Model = model
        .iter()
        .filter(|(k, _)| deep_index(k).is_multiple_of(5))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    scan_during(
        &db,
        &table,
        &stable,
        |key| deep_value(deep_index(key)),
        || {
            let mut doomed: Vec<&Vec<u8>> =
                model.keys().filter(|k| !stable.contains_key(*k)).collect();
            let mut rng = Rng::new(5);
            for i in (1..doomed.len()).rev() {
                doomed.swap(i, rng.below(i + 1));
            }
            for key in doomed {
                assert!(db.delete(&table, key).expect("delete"));
            }
        },
    );
    db.verify().expect("verify");
    assert_contents(&db, &table, &stable);
}

#[test]
fn scans_while_another_thread_inserts() {
    let vfs = MemVfs::new();
    let keys = common::keyring();
    let db = Db::open(
        DIR,
        common::mem_options(&vfs, &keys, 4096, 32, Algorithm::AesGcm),
    )
    .expect("open");
    let table = db
        .create_table("t", TableOptions::default())
        .expect("create");
    // Every fifth key first; the rest arrive while the scans run, splitting every leaf.
    let mut stable = Model::new();
    for i in (0..4000).step_by(5) {
        db.put(&table, &deep_key(i), &deep_value(i)).expect("put");
        stable.insert(deep_key(i), deep_value(i));
    }
    scan_during(
        &db,
        &table,
        &stable,
        |key| deep_value(deep_index(key)),
        || {
            for j in 0..4000usize {
                let i = (j * 7919) % 4000;
                if !i.is_multiple_of(5) {
                    db.put(&table, &deep_key(i), &deep_value(i)).expect("put");
                }
            }
        },
    );
    db.verify().expect("verify");
    let full: Model = (0..4000).map(|i| (deep_key(i), deep_value(i))).collect();
    assert_contents(&db, &table, &full);
}

// ---- transactions -----------------------------------------------------------------------------

#[test]
fn transaction_overlay_in_both_directions() {
    let vfs = MemVfs::new();
    let db = open_plain(&vfs, 4096, 16);
    let table = db
        .create_table("t", TableOptions::default())
        .expect("create");
    let other = db
        .create_table("other", TableOptions::default())
        .expect("create");
    let key = |i: usize| format!("k{i:04}").into_bytes();
    let mut committed = Model::new();
    for i in (0..600).step_by(2) {
        let value = value_bytes(i as u64, i % 300);
        db.put(&table, &key(i), &value).expect("put");
        committed.insert(key(i), value);
    }

    let mut txn = db.begin().expect("begin");
    let mut seen = committed.clone();
    let mut rng = Rng::new(3);
    for _ in 0..400 {
        let i = rng.below(620);
        if rng.percent(60) {
            let value = value_bytes(1_000_000 + i as u64, rng.below(400));
            txn.put(&table, &key(i), &value).expect("put");
            seen.insert(key(i), value);
        } else {
            txn.delete(&table, &key(i)).expect("delete");
            seen.remove(&key(i));
        }
    }
    // Keys outside the committed span, on both sides.
    for extra in [b"a".to_vec(), b"k".to_vec(), b"z".to_vec()] {
        txn.put(&table, &extra, b"pending").expect("put");
        seen.insert(extra, b"pending".to_vec());
    }
    // Another table's pending writes must not appear in this table's scans.
    txn.put(&other, &key(1), b"elsewhere").expect("put");
    txn.delete(&other, &key(2)).expect("delete");

    let mut points: Vec<Vec<u8>> = (0..620).step_by(7).map(key).collect();
    points.extend([b"a".to_vec(), b"k".to_vec(), b"z".to_vec(), Vec::new()]);
    for lower in bounds(&points[..12]) {
        for upper in bounds(&points[8..20]) {
            for reverse in [false, true] {
                let found: Vec<(Vec<u8>, Vec<u8>)> = txn
                    .range(&table, as_range(&lower, &upper), reverse)
                    .expect("scan")
                    .collect::<Result<_, _>>()
                    .expect("entries");
                assert!(
                    found == model_range(&seen, &lower, &upper, reverse),
                    "txn scan {}..{} reverse {reverse}",
                    bound_text(&lower),
                    bound_text(&upper)
                );
            }
        }
    }
    for reverse in [false, true] {
        let found: Vec<_> = txn
            .range(&table, .., reverse)
            .expect("scan")
            .collect::<Result<Vec<_>, _>>()
            .expect("entries");
        assert!(found == model_range(&seen, &Bound::Unbounded, &Bound::Unbounded, reverse));
        // Inverted and empty ranges over pending writes.
        for (lower, upper) in [
            (Bound::Included(key(300)), Bound::Included(key(100))),
            (Bound::Excluded(key(300)), Bound::Excluded(key(300))),
            (Bound::Included(key(300)), Bound::Excluded(key(300))),
            (Bound::Excluded(key(301)), Bound::Included(key(301))),
        ] {
            let found = txn
                .range(&table, as_range(&lower, &upper), reverse)
                .expect("scan")
                .count();
            assert_eq!(found, 0, "{}..{}", bound_text(&lower), bound_text(&upper));
        }
        let others: Vec<Vec<u8>> = txn
            .range(&other, .., reverse)
            .expect("scan")
            .map(|e| e.expect("entry").0)
            .collect();
        assert_eq!(others, vec![key(1)]);
    }
    // Outside the transaction nothing has changed yet.
    assert_contents(&db, &table, &committed);
    txn.commit().expect("commit");
    assert_contents(&db, &table, &seen);

    // A rolled-back transaction leaves no trace.
    let mut txn = db.begin().expect("begin");
    txn.delete(&table, b"a").expect("delete");
    txn.put(&table, b"b", b"never").expect("put");
    assert_eq!(
        txn.range(&table, .., false)
            .expect("scan")
            .next()
            .expect("one")
            .expect("ok")
            .0,
        b"b"
    );
    txn.rollback().unwrap();
    assert_contents(&db, &table, &seen);
    db.verify().expect("verify");
}
