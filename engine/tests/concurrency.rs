//! Many threads on shared tables, with a buffer pool small enough that eviction and the page
//! cleaner run all the time underneath them.
//!
//! * `disjoint_writers_with_shared_readers`: 8 threads, 2 encrypted tables, 64 frames of
//!   4 KiB. Each thread writes only its own keys — interleaved in key order with everyone
//!   else's, so threads meet in the same leaves and splits — and reads and scans
//!   everywhere. Since nobody else touches a thread's keys, every read of them, and the part
//!   of every scan that covers them, must match the thread's own model exactly. At the end
//!   `verify()` and the full contents (before and after reopening) must match the union of
//!   the models.
//! * `same_keys_last_writer_wins`: 8 threads put, delete, read and scan the *same* 48 keys.
//!   Every value read must be one some thread wrote for that key; at the end each key holds
//!   the last action of one of the threads on it; `verify()` passes. Transactions that
//!   deadlock on key locks time out and roll back (there is no deadlock detector).
//!
//! Loops are bounded by operation counts, never by time. Values carry their key and version
//! (see `make_value`), so a value read under the wrong key or half-written is caught.
//! `STRONGBOX_STRESS_SCALE=N` multiplies the operation counts by N for a longer soak.

mod common;

use common::{assert_contents, mem_options, value_bytes, Rng, Short, TABLE_KEY_ID};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::thread;
use strongbox_engine::io::MemVfs;
use strongbox_engine::{Db, Encrypted, Error, Table, TableOptions};
use strongbox_keyring::Algorithm;

const THREADS: usize = 8;
const FRAMES: usize = 64;
const PAGE_SIZE: usize = 4096;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// A value that names its key and version: `version (8 bytes LE) ‖ bytes from a seed made of
/// both`. `check_value` recomputes it, so a value read under another key, or mixed from two
/// writes, fails.
fn make_value(key: &[u8], version: u64, len: usize) -> Vec<u8> {
    let mut value = version.to_le_bytes().to_vec();
    value.extend(value_bytes(seed_of(key, version), len));
    value
}

fn seed_of(key: &[u8], version: u64) -> u64 {
    key.iter()
        .fold(version.wrapping_mul(0x100_0000_01B3), |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
        })
}

/// The version a value written by `make_value(key, ..)` carries; panics if it is not one.
fn check_value(key: &[u8], value: &[u8]) -> u64 {
    assert!(value.len() >= 8, "value of {:?} is too short", Short(key));
    let version = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
    assert!(
        value == make_value(key, version, value.len() - 8),
        "the value under {:?} was not written for it (version {version})",
        Short(key)
    );
    version
}

/// Value length: mostly small, sometimes a few overflow pages.
fn value_len(rng: &mut Rng) -> usize {
    if rng.percent(4) {
        4000 + rng.below(16_000)
    } else {
        rng.below(600)
    }
}

/// Multiplier of the operation counts (`STRONGBOX_STRESS_SCALE`, default 1).
fn scale() -> usize {
    std::env::var("STRONGBOX_STRESS_SCALE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

fn open(
    vfs: &MemVfs,
    keys: &Arc<strongbox_keyring::provider::MemoryKeyProvider>,
    algorithm: Algorithm,
) -> Db {
    // A short lock wait: transactions of `same_keys_last_writer_wins` can deadlock.
    let options = mem_options(vfs, keys, PAGE_SIZE, FRAMES, algorithm)
        .lock_wait_timeout(std::time::Duration::from_millis(300));
    Db::open("/db", options).expect("open the database")
}

fn create_tables(db: &Db) -> Vec<Table> {
    vec![
        db.create_table("alpha", TableOptions::default().encrypted(Encrypted::Yes))
            .expect("create alpha"),
        db.create_table(
            "beta",
            TableOptions::default()
                .encrypted(Encrypted::Yes)
                .encryption_key_id(TABLE_KEY_ID),
        )
        .expect("create beta"),
    ]
}

// ---- disjoint writers -------------------------------------------------------------------

const OWN_KEYS: usize = 300;
const OPS_PER_THREAD: usize = 12_000;

/// Key `i` of thread `t`: ordered by `i` first, so the threads' keys interleave.
fn own_key(i: usize, t: usize) -> Vec<u8> {
    format!("key{i:05}/t{t}").into_bytes()
}

fn owner_of(key: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(key).ok()?;
    text.rsplit_once("/t")?.1.parse().ok()
}

/// One thread's run: its operations and the models of its own keys per table.
fn disjoint_worker(db: &Db, tables: &[Table], t: usize) -> Vec<Model> {
    let mut rng = Rng::new(0xD15_0000 + t as u64);
    let mut models = vec![Model::new(); tables.len()];
    let mut version = 0u64;
    for step in 0..OPS_PER_THREAD * scale() {
        let which = rng.below(tables.len());
        let (table, model) = (&tables[which], &mut models[which]);
        let key = own_key(rng.below(OWN_KEYS), t);
        let context = |what: &str| format!("thread {t} step {step}: {what} {:?}", Short(&key));
        match rng.below(100) {
            0..=34 => {
                version += 1;
                let value = make_value(&key, version, value_len(&mut rng));
                db.put(table, &key, &value)
                    .unwrap_or_else(|e| panic!("{}: {e}", context("put")));
                model.insert(key, value);
            }
            35..=49 => {
                let existed = db
                    .delete(table, &key)
                    .unwrap_or_else(|e| panic!("{}: {e}", context("delete")));
                assert_eq!(
                    existed,
                    model.remove(&key).is_some(),
                    "{}",
                    context("delete")
                );
            }
            50..=64 => {
                let found = db
                    .get(table, &key)
                    .unwrap_or_else(|e| panic!("{}: {e}", context("get")));
                assert!(found.as_ref() == model.get(&key), "{}", context("get"));
            }
            65..=74 => {
                let other = own_key(rng.below(OWN_KEYS), rng.below(THREADS));
                let found = db
                    .get(table, &other)
                    .unwrap_or_else(|e| panic!("{}: {e}", context("get other")));
                if let Some(value) = found {
                    check_value(&other, &value);
                }
            }
            75..=94 => {
                let from = own_key(rng.below(OWN_KEYS), rng.below(THREADS));
                let reverse = rng.percent(50);
                let limit = 1 + rng.below(60);
                check_scan(db, table, model, t, from, reverse, limit)
                    .unwrap_or_else(|e| panic!("{}: {e}", context("scan")));
            }
            _ => {
                // A transaction over both tables; committed or rolled back.
                let commit = rng.percent(70);
                let mut txn = db.begin().expect("begin");
                let mut pending = models.clone();
                for _ in 0..1 + rng.below(6) {
                    let which = rng.below(tables.len());
                    let key = own_key(rng.below(OWN_KEYS), t);
                    if rng.percent(75) {
                        version += 1;
                        let value = make_value(&key, version, value_len(&mut rng));
                        txn.put(&tables[which], &key, &value).expect("txn put");
                        pending[which].insert(key, value);
                    } else {
                        let existed = txn.delete(&tables[which], &key).expect("txn delete");
                        assert_eq!(existed, pending[which].remove(&key).is_some());
                    }
                }
                if commit {
                    txn.commit()
                        .unwrap_or_else(|e| panic!("thread {t} step {step}: commit: {e}"));
                    models = pending;
                } else {
                    txn.rollback().unwrap();
                }
            }
        }
    }
    models
}

/// A scan of up to `limit` entries from `from`. Entries must come in strict order and carry
/// valid values; those of thread `t` must be exactly its model's keys in the stretch the
/// scan covered.
fn check_scan(
    db: &Db,
    table: &Table,
    model: &Model,
    t: usize,
    from: Vec<u8>,
    reverse: bool,
    limit: usize,
) -> Result<(), String> {
    let range = if reverse {
        (Bound::Unbounded, Bound::Included(from.as_slice()))
    } else {
        (Bound::Included(from.as_slice()), Bound::Unbounded)
    };
    let entries: Vec<(Vec<u8>, Vec<u8>)> = db
        .range(table, range, reverse)
        .map_err(|e| e.to_string())?
        .take(limit)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    for pair in entries.windows(2) {
        let ordered = if reverse {
            pair[0].0 > pair[1].0
        } else {
            pair[0].0 < pair[1].0
        };
        if !ordered {
            return Err(format!(
                "out of order: {:?} then {:?}",
                Short(&pair[0].0),
                Short(&pair[1].0)
            ));
        }
    }
    for (key, value) in &entries {
        check_value(key, value);
    }
    // The stretch covered: everything up to the last entry, or the whole range if the scan
    // ended before the limit.
    let last = if entries.len() == limit {
        entries.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    let expected: Vec<&Vec<u8>> = model
        .keys()
        .filter(|k| {
            let past_start = if reverse { **k <= from } else { **k >= from };
            let before_end = match &last {
                None => true,
                Some(last) if reverse => *k >= last,
                Some(last) => *k <= last,
            };
            past_start && before_end
        })
        .collect();
    let mut expected = expected;
    if reverse {
        expected.reverse();
    }
    let mine: Vec<&Vec<u8>> = entries
        .iter()
        .map(|(k, _)| k)
        .filter(|k| owner_of(k) == Some(t))
        .collect();
    if mine != expected {
        return Err(format!(
            "own keys differ: scan has {}, model {}",
            mine.len(),
            expected.len()
        ));
    }
    for (key, value) in entries.iter().filter(|(k, _)| owner_of(k) == Some(t)) {
        if model.get(key) != Some(value) {
            return Err(format!("own key {:?} has another value", Short(key)));
        }
    }
    Ok(())
}

#[test]
fn disjoint_writers_with_shared_readers() {
    let vfs = MemVfs::new();
    let keys = common::keyring();
    let db = open(&vfs, &keys, Algorithm::AesGcm);
    let tables = create_tables(&db);

    let per_thread: Vec<Vec<Model>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (db, tables) = (&db, &tables);
                scope.spawn(move || disjoint_worker(db, tables, t))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a worker panicked"))
            .collect()
    });

    let mut union = vec![Model::new(); tables.len()];
    for models in per_thread {
        for (all, mine) in union.iter_mut().zip(models) {
            all.extend(mine);
        }
    }
    let report = db.verify().expect("verify after the threads");
    let stats = db.stats();
    assert!(
        stats.evictions > 0,
        "the pool was meant to be too small: {stats:?}"
    );
    for (table, model) in tables.iter().zip(&union) {
        assert_contents(&db, table, model);
        let (_, tree) = report
            .trees
            .iter()
            .find(|(name, _)| name == table.name())
            .expect("verify covers every table");
        assert_eq!(tree.entries, model.len() as u64);
        assert!(tree.depth >= 2, "{}: {tree:?}", table.name());
    }

    drop(tables);
    db.close().expect("close");
    drop(db);
    let db = open(&vfs, &keys, Algorithm::AesGcm);
    db.verify().expect("verify after reopening");
    for (name, model) in ["alpha", "beta"].iter().zip(&union) {
        assert_contents(&db, &db.table(name).expect("table"), model);
    }
}

// ---- same keys ----------------------------------------------------------------------------

const SHARED_KEYS: usize = 48;
const SHARED_OPS_PER_THREAD: usize = 12_000;

fn shared_key(i: usize) -> Vec<u8> {
    format!("shared{i:03}").into_bytes()
}

/// What a thread did last to a key: wrote this version, or deleted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    Wrote(u64),
    Deleted,
}

/// One thread's run; returns, per table and key, its last committed action.
/// Runs an autocommit write again while it times out behind transactions that deadlocked
/// (which roll back when their own wait times out), as an application would.
fn retrying_lock_waits<T>(
    mut write: impl FnMut() -> strongbox_engine::Result<T>,
) -> strongbox_engine::Result<T> {
    loop {
        match write() {
            Err(Error::LockWaitTimeout { .. }) => continue,
            other => return other,
        }
    }
}

fn shared_worker(db: &Db, tables: &[Table], t: usize) -> Vec<BTreeMap<Vec<u8>, Last>> {
    let mut rng = Rng::new(0x5A3E_0000 + t as u64);
    let mut last = vec![BTreeMap::new(); tables.len()];
    // Versions are unique across threads: the thread number in the top byte.
    let mut version = (t as u64) << 56;
    for step in 0..SHARED_OPS_PER_THREAD * scale() {
        let which = rng.below(tables.len());
        let table = &tables[which];
        let key = shared_key(rng.below(SHARED_KEYS));
        let context = format!("thread {t} step {step} on {:?}", Short(&key));
        match rng.below(100) {
            0..=39 => {
                version += 1;
                let value = make_value(&key, version, value_len(&mut rng));
                retrying_lock_waits(|| db.put(table, &key, &value))
                    .unwrap_or_else(|e| panic!("{context}: put: {e}"));
                last[which].insert(key, Last::Wrote(version));
            }
            40..=54 => {
                retrying_lock_waits(|| db.delete(table, &key))
                    .unwrap_or_else(|e| panic!("{context}: delete: {e}"));
                last[which].insert(key, Last::Deleted);
            }
            55..=74 => {
                if let Some(value) = db
                    .get(table, &key)
                    .unwrap_or_else(|e| panic!("{context}: get: {e}"))
                {
                    check_value(&key, &value);
                }
            }
            75..=89 => {
                let reverse = rng.percent(50);
                let mut previous: Option<Vec<u8>> = None;
                for entry in db.range(table, .., reverse).expect("scan") {
                    let (k, v) = entry.unwrap_or_else(|e| panic!("{context}: scan: {e}"));
                    check_value(&k, &v);
                    if let Some(p) = &previous {
                        assert!(
                            if reverse { *p > k } else { *p < k },
                            "{context}: scan out of order"
                        );
                    }
                    previous = Some(k);
                }
            }
            _ => {
                let mut txn = db.begin().expect("begin");
                let mut pending = last.clone();
                let mut deadlocked = false;
                for _ in 0..1 + rng.below(5) {
                    let which = rng.below(tables.len());
                    let key = shared_key(rng.below(SHARED_KEYS));
                    let written = if rng.percent(70) {
                        version += 1;
                        let value = make_value(&key, version, value_len(&mut rng));
                        pending[which].insert(key.clone(), Last::Wrote(version));
                        txn.put(&tables[which], &key, &value)
                    } else {
                        pending[which].insert(key.clone(), Last::Deleted);
                        txn.delete(&tables[which], &key).map(drop)
                    };
                    match written {
                        Ok(()) => {}
                        // Two transactions that lock shared keys in different orders wait
                        // for each other until one times out (no deadlock detector): that
                        // one rolls back, as an application would, and retries nothing.
                        Err(Error::LockWaitTimeout { .. }) => {
                            deadlocked = true;
                            break;
                        }
                        Err(e) => panic!("{context}: txn write: {e}"),
                    }
                }
                if deadlocked {
                    txn.rollback().unwrap();
                } else if rng.percent(70) {
                    txn.commit()
                        .unwrap_or_else(|e| panic!("{context}: commit: {e}"));
                    last = pending;
                } else {
                    txn.rollback().unwrap();
                }
            }
        }
    }
    last
}

#[test]
fn same_keys_last_writer_wins() {
    let vfs = MemVfs::new();
    let keys = common::keyring();
    let db = open(&vfs, &keys, Algorithm::AesCbc);
    let tables = create_tables(&db);

    let per_thread: Vec<Vec<BTreeMap<Vec<u8>, Last>>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (db, tables) = (&db, &tables);
                scope.spawn(move || shared_worker(db, tables, t))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a worker panicked"))
            .collect()
    });

    db.verify().expect("verify after the threads");
    for (which, table) in tables.iter().enumerate() {
        let contents: BTreeMap<Vec<u8>, Vec<u8>> =
            common::contents(&db, table).into_iter().collect();
        for i in 0..SHARED_KEYS {
            let key = shared_key(i);
            let state = match contents.get(&key) {
                Some(value) => Last::Wrote(check_value(&key, value)),
                None => Last::Deleted,
            };
            let candidates: Vec<Last> = per_thread
                .iter()
                .filter_map(|last| last[which].get(&key).copied())
                .collect();
            // Each key's operations happen one after another, so the final state is the
            // last of them: some thread's last action on it (absent if nobody touched it).
            let explained = if candidates.is_empty() {
                state == Last::Deleted
            } else {
                candidates.contains(&state)
            };
            assert!(
                explained,
                "{}: {:?} ends as {state:?}, but the threads' last actions were {candidates:?}",
                table.name(),
                Short(&key)
            );
        }
        assert!(contents.keys().all(|k| k.starts_with(b"shared")));
    }

    drop(tables);
    drop(db);
    let db = open(&vfs, &keys, Algorithm::AesCbc);
    db.verify().expect("verify after reopening");
    for name in ["alpha", "beta"] {
        for (key, value) in common::contents(&db, &db.table(name).expect("table")) {
            check_value(&key, &value);
        }
    }
}
