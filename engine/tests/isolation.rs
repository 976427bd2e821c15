//! Isolation of in-place transactions (issue 4 §4): no transaction reads another's
//! uncommitted writes — by point read, by scan, forward or reverse, inside or outside a
//! transaction — and two transactions cannot both hold uncommitted changes to one key.
//!
//! Each test leaves one transaction open with changes already in the B+tree leaves, and
//! checks what everybody else sees; then commits or rolls it back and checks again.

mod common;

use common::{contents, keyring, mem_options};
use std::time::Duration;
use strongbox_engine::io::MemVfs;
use strongbox_engine::{Db, Error, Table, TableOptions};
use strongbox_keyring::Algorithm;

fn open() -> (Db, Table) {
    let options = mem_options(&MemVfs::new(), &keyring(), 4096, 64, Algorithm::AesCtr)
        .lock_wait_timeout(Duration::from_millis(100));
    let db = Db::open("/db", options).unwrap();
    let table = db.create_table("t", TableOptions::default()).unwrap();
    for (key, value) in [("a", "1"), ("b", "2"), ("d", "4")] {
        db.put(&table, key.as_bytes(), value.as_bytes()).unwrap();
    }
    (db, table)
}

fn pairs(entries: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    entries
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn reverse_scan(db: &Db, table: &Table) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut entries: Vec<_> = db
        .range(table, .., true)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    entries.reverse();
    entries
}

/// What a reader outside the open transaction must see: the committed state.
fn assert_committed(db: &Db, table: &Table, expected: &[(&str, &str)], when: &str) {
    let expected = pairs(expected);
    assert_eq!(contents(db, table), expected, "{when}: forward scan");
    assert_eq!(reverse_scan(db, table), expected, "{when}: reverse scan");
    for key in ["a", "b", "c", "d"] {
        let committed = expected
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.clone());
        assert_eq!(
            db.get(table, key.as_bytes()).unwrap(),
            committed,
            "{when}: get {key}"
        );
        let other = db.begin().unwrap();
        assert_eq!(
            other.get(table, key.as_bytes()).unwrap(),
            committed,
            "{when}: another transaction's get {key}"
        );
    }
}

#[test]
fn uncommitted_writes_are_invisible_until_commit_and_then_all_at_once() {
    let (db, table) = open();
    let mut txn = db.begin().unwrap();
    txn.put(&table, b"a", b"10").unwrap(); // update
    txn.delete(&table, b"b").unwrap(); // delete
    txn.put(&table, b"c", b"30").unwrap(); // insert
    txn.put(&table, b"c", b"31").unwrap(); // and again
                                           // The writer sees its own changes...
    assert_eq!(txn.get(&table, b"a").unwrap(), Some(b"10".to_vec()));
    assert_eq!(txn.get(&table, b"b").unwrap(), None);
    let own: Vec<_> = txn
        .range(&table, .., false)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(own, pairs(&[("a", "10"), ("c", "31"), ("d", "4")]));
    // ...nobody else does.
    assert_committed(&db, &table, &[("a", "1"), ("b", "2"), ("d", "4")], "open");
    txn.commit().unwrap();
    assert_committed(
        &db,
        &table,
        &[("a", "10"), ("c", "31"), ("d", "4")],
        "committed",
    );
    db.verify().unwrap();
}

#[test]
fn a_rolled_back_or_dropped_transaction_leaves_nothing() {
    let (db, table) = open();
    for end in ["rollback", "drop"] {
        let mut txn = db.begin().unwrap();
        txn.put(&table, b"a", b"10").unwrap();
        txn.delete(&table, b"d").unwrap();
        txn.put(&table, b"c", b"30").unwrap();
        assert_committed(&db, &table, &[("a", "1"), ("b", "2"), ("d", "4")], end);
        match end {
            "rollback" => txn.rollback().unwrap(),
            _ => drop(txn),
        }
        assert_committed(&db, &table, &[("a", "1"), ("b", "2"), ("d", "4")], end);
    }
    db.verify().unwrap();
}

#[test]
fn a_second_writer_of_a_key_waits_and_times_out_while_the_first_is_open() {
    let (db, table) = open();
    let mut first = db.begin().unwrap();
    first.put(&table, b"a", b"first").unwrap();
    let mut second = db.begin().unwrap();
    let error = second.put(&table, b"a", b"second").unwrap_err();
    assert!(
        matches!(error, Error::LockWaitTimeout { .. }),
        "second writer: {error}"
    );
    let error = db.put(&table, b"a", b"autocommit").unwrap_err();
    assert!(
        matches!(error, Error::LockWaitTimeout { .. }),
        "autocommit writer: {error}"
    );
    // Other keys stay writable, and the first writer is not disturbed.
    second.put(&table, b"b", b"second").unwrap();
    second.commit().unwrap();
    first.commit().unwrap();
    assert_eq!(db.get(&table, b"a").unwrap(), Some(b"first".to_vec()));
    assert_eq!(db.get(&table, b"b").unwrap(), Some(b"second".to_vec()));
    // Once the first has committed, the key is free again.
    db.put(&table, b"a", b"later").unwrap();
    assert_eq!(db.get(&table, b"a").unwrap(), Some(b"later".to_vec()));
}

#[test]
fn a_multi_table_transaction_commits_or_rolls_back_across_tablespaces() {
    let (db, one) = open();
    let two = db.create_table("u", TableOptions::default()).unwrap();
    let mut txn = db.begin().unwrap();
    txn.put(&one, b"x", b"1").unwrap();
    txn.put(&two, b"x", b"2").unwrap();
    assert_eq!(db.get(&one, b"x").unwrap(), None);
    assert_eq!(db.get(&two, b"x").unwrap(), None);
    txn.rollback().unwrap();
    assert_eq!(db.get(&one, b"x").unwrap(), None);
    assert_eq!(db.get(&two, b"x").unwrap(), None);
    let mut txn = db.begin().unwrap();
    txn.put(&one, b"x", b"1").unwrap();
    txn.put(&two, b"x", b"2").unwrap();
    txn.commit().unwrap();
    assert_eq!(db.get(&one, b"x").unwrap(), Some(b"1".to_vec()));
    assert_eq!(db.get(&two, b"x").unwrap(), Some(b"2".to_vec()));
}

#[test]
fn get_for_update_makes_read_modify_write_lose_no_update() {
    let options = mem_options(&MemVfs::new(), &keyring(), 4096, 64, Algorithm::AesCtr);
    let db = Db::open("/db", options).unwrap();
    let table = db.create_table("t", TableOptions::default()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (db, table) = (db.clone(), table.clone());
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let mut txn = db.begin().unwrap();
                    let now = txn
                        .get_for_update(&table, b"counter")
                        .unwrap()
                        .map_or(0, |v| String::from_utf8(v).unwrap().parse::<u64>().unwrap());
                    txn.put(&table, b"counter", (now + 1).to_string().as_bytes())
                        .unwrap();
                    txn.commit().unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(db.get(&table, b"counter").unwrap(), Some(b"400".to_vec()));
    // A key locked but never written is unchanged by commit and by rollback.
    let mut txn = db.begin().unwrap();
    assert_eq!(txn.get_for_update(&table, b"absent").unwrap(), None);
    txn.rollback().unwrap();
    assert_eq!(db.get(&table, b"absent").unwrap(), None);
    db.close().unwrap();
}
