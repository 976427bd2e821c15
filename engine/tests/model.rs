//! Model-based property test: random operation sequences run against the engine and
//! against a `BTreeMap<Vec<u8>, Vec<u8>>` per table, which must agree at every step.
//!
//! Each case picks a configuration — page size (4 to 64 KiB), a buffer pool of only
//! 16 to 32 frames (so nearly every operation evicts), an encryption algorithm, and whether
//! there is a keyring — and creates two tables: `enc` (encrypted with key 5, or plain when
//! the case has no keyring) and `plain` (unencrypted). It then runs up to 80 operations:
//!
//! * autocommit `put` / `delete` / `get`, and range scans forward or reverse with random
//!   inclusive, exclusive or missing bounds (inverted ones included), sometimes stopped
//!   early;
//! * transactions over both tables mixing the same operations, whose reads must see their
//!   own pending writes, ending in commit, rollback or drop;
//! * bulk fills of up to 1500 keys (ascending or descending, autocommit or one
//!   transaction), which grow trees to three or four levels, and range deletes, which empty
//!   leaves and leave separators behind that are no longer keys;
//! * scans paused part-way while other writes land, then resumed: keys the writes did not
//!   touch must still come out exactly as in the model;
//! * dropping and re-creating a table (old handles then fail with `NoSuchTable`);
//! * `checkpoint`, `verify`, and close-and-reopen — with another page size in the options,
//!   which an existing database ignores — after which every table must equal its model.
//!
//! Keys are drawn from a per-case pool of keys of 0 to ~210 bytes that share prefixes
//! heavily, the same keys followed by a counter, and keys of exactly `max_key_len` bytes;
//! values are 0 to 3000 bytes, sometimes 20 to 200 KiB (overflow chains). Values are
//! generated from a seed, so cases stay small. `verify()` runs every few operations, after
//! each reopen and at the end.
//!
//! The plain `#[test]`s at the bottom pin bugs this test found.
//!
//! The default run is kept short. For a long soak set `STRONGBOX_PROPTEST_CASES`, e.g.
//! `STRONGBOX_PROPTEST_CASES=5000 cargo test -p strongbox-engine --release --test model`.

mod common;

use common::{as_range, assert_contents, in_range, model_range, value_bytes, Short, TABLE_KEY_ID};
use proptest::prelude::*;
use proptest::sample::select;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use strongbox_engine::io::MemVfs;
use strongbox_engine::{Db, EncryptTables, Encrypted, Error, Options, Table, TableOptions};
use strongbox_keyring::provider::MemoryKeyProvider;
use strongbox_keyring::Algorithm;

/// Cases in a default run; `STRONGBOX_PROPTEST_CASES` overrides.
const DEFAULT_CASES: u32 = 384;
/// Operations between two `verify()` calls.
const VERIFY_EVERY: usize = 10;
const TABLES: [&str; 2] = ["enc", "plain"];

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
struct Config {
    page_size: usize,
    frames: usize,
    algorithm: Algorithm,
    /// Without a keyring the database runs with `encrypt_tables = off`.
    keyring: bool,
}

/// A key: one of the case's pool; a pool key followed by a big-endian counter (what
/// `Fill` inserts, so that single operations and bounds meet filled keys); or a key of
/// exactly `max_key_len` bytes, `m`s followed by a counter (the length depends on the page
/// size, known only when the case runs).
#[derive(Debug, Clone)]
enum KeyRef {
    Pool(usize),
    Derived(usize, u16),
    Max(u16),
}

/// A value by length and seed; the bytes are made by `value_bytes`.
#[derive(Clone)]
struct ValueSpec {
    len: usize,
    seed: u64,
}

impl std::fmt::Debug for ValueSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}B#{}", self.len, self.seed % 1000)
    }
}

#[derive(Debug, Clone)]
enum BoundSpec {
    Unbounded,
    Included(KeyRef),
    Excluded(KeyRef),
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        table: usize,
        key: KeyRef,
        value: ValueSpec,
    },
    Delete {
        table: usize,
        key: KeyRef,
    },
    Get {
        table: usize,
        key: KeyRef,
    },
    Scan {
        table: usize,
        lower: BoundSpec,
        upper: BoundSpec,
        reverse: bool,
        /// Stop after this many entries (the scan is lazy; stopping early must be fine).
        limit: Option<usize>,
    },
    /// Operations of the kinds above in one transaction.
    Txn {
        ops: Vec<Op>,
        end: TxnEnd,
    },
    /// Puts `count` keys `Derived(base, start + i * step)` — or `Max(start + i * step)`,
    /// at most `MAX_KEY_FILL` of them, when `max_keys` — ascending or descending, in
    /// autocommit or in one transaction: grows trees to several levels.
    Fill {
        table: usize,
        base: usize,
        max_keys: bool,
        start: u16,
        count: u16,
        step: u16,
        descending: bool,
        in_txn: bool,
        /// Largest value; each key gets a length in `0..=max_value` from `seed`.
        max_value: usize,
        seed: u64,
    },
    /// Deletes every `every`-th key of the model inside the bounds: frees pages, shrinks
    /// trees, and leaves separators that are no longer keys.
    DeleteRange {
        table: usize,
        lower: BoundSpec,
        upper: BoundSpec,
        every: usize,
    },
    /// A scan that stops after `after` entries while `writes` (puts, or deletes for
    /// `None`) are applied, then runs to its end. Keys untouched by the writes must come
    /// out exactly as in the model; the others with their old or new value, or not at all.
    InterleavedScan {
        table: usize,
        lower: BoundSpec,
        upper: BoundSpec,
        reverse: bool,
        after: usize,
        writes: Vec<(KeyRef, Option<ValueSpec>)>,
    },
    /// Drops the table (old handles must then fail with `NoSuchTable`) and creates it again,
    /// empty.
    Recreate {
        table: usize,
    },
    Checkpoint,
    Verify,
    Reopen {
        explicit_close: bool,
    },
}

#[derive(Debug, Clone, Copy)]
enum TxnEnd {
    Commit,
    Rollback,
    Drop,
}

// ---- strategies -----------------------------------------------------------------------

fn config() -> impl Strategy<Value = Config> {
    (
        select(vec![4096usize, 8192, 16384, 32768, 65536]),
        16usize..=32,
        select(Algorithm::ALL.to_vec()),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(page_size, frames, algorithm, keyring)| Config {
            page_size,
            frames,
            algorithm,
            keyring,
        })
}

/// Keys that share prefixes: a run of 0..=200 `k`s or one of a few fixed prefixes, then a
/// short suffix over a small alphabet (with 0x00 and 0xFF, the extremes of byte order).
fn pool_key() -> impl Strategy<Value = Vec<u8>> {
    let alphabet = vec![0x00u8, 0x01, b'a', b'b', b'k', 0x7F, 0xFF];
    let fixed: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"a".to_vec(),
        b"user/".to_vec(),
        b"user/0001/".to_vec(),
        vec![0xFF; 3],
    ];
    let prefix = prop_oneof![
        select(fixed),
        (0usize..=200).prop_map(|n| vec![b'k'; n]),
        (0usize..=4).prop_map(|n| vec![b'k'; n * 50]),
    ];
    (prefix, prop::collection::vec(select(alphabet), 0..6)).prop_map(|(mut key, suffix)| {
        key.extend(suffix);
        key
    })
}

/// Counters that `Fill` reaches (start below 2000, plus count times step).
const DERIVED_RANGE: u16 = 6500;
/// Most keys a `Fill` of longest keys writes (each is over a quarter of a page).
const MAX_KEY_FILL: u16 = 150;

fn key_ref(pool_len: usize) -> impl Strategy<Value = KeyRef> {
    prop_oneof![
        10 => (0..pool_len).prop_map(KeyRef::Pool),
        20 => (0..pool_len, 0..DERIVED_RANGE).prop_map(|(base, n)| KeyRef::Derived(base, n)),
        1 => (0..DERIVED_RANGE).prop_map(KeyRef::Max),
    ]
}

fn value_spec() -> impl Strategy<Value = ValueSpec> {
    let len = prop_oneof![
        40 => 0usize..3000,
        4 => Just(0usize),
        1 => 20_000usize..200_000,
    ];
    (len, any::<u64>()).prop_map(|(len, seed)| ValueSpec { len, seed })
}

fn bound_spec(pool_len: usize) -> impl Strategy<Value = BoundSpec> {
    prop_oneof![
        1 => Just(BoundSpec::Unbounded),
        2 => key_ref(pool_len).prop_map(BoundSpec::Included),
        2 => key_ref(pool_len).prop_map(BoundSpec::Excluded),
    ]
}

/// The operations a transaction may contain (and that also run on their own).
fn data_op(pool_len: usize) -> impl Strategy<Value = Op> {
    let table = 0usize..TABLES.len();
    prop_oneof![
        6 => (table.clone(), key_ref(pool_len), value_spec())
            .prop_map(|(table, key, value)| Op::Put { table, key, value }),
        3 => (table.clone(), key_ref(pool_len)).prop_map(|(table, key)| Op::Delete { table, key }),
        2 => (table.clone(), key_ref(pool_len)).prop_map(|(table, key)| Op::Get { table, key }),
        2 => (
            table,
            bound_spec(pool_len),
            bound_spec(pool_len),
            any::<bool>(),
            prop::option::weighted(0.2, 0usize..5),
        )
            .prop_map(|(table, lower, upper, reverse, limit)| Op::Scan {
                table,
                lower,
                upper,
                reverse,
                limit,
            }),
    ]
}

fn fill(pool_len: usize) -> impl Strategy<Value = Op> {
    (
        (
            0..TABLES.len(),
            0..pool_len,
            prop::bool::weighted(0.1),
            0u16..2000,
            1u16..1500,
            1u16..4,
        ),
        (
            any::<bool>(),
            prop::bool::weighted(0.3),
            select(vec![0usize, 16, 100, 600, 1500, 3000]),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (table, base, max_keys, start, count, step),
                (descending, in_txn, max_value, seed),
            )| Op::Fill {
                table,
                base,
                max_keys,
                start,
                count,
                step,
                descending,
                in_txn,
                max_value,
                seed,
            },
        )
}

fn delete_range(pool_len: usize) -> impl Strategy<Value = Op> {
    (
        0..TABLES.len(),
        bound_spec(pool_len),
        bound_spec(pool_len),
        1usize..4,
    )
        .prop_map(|(table, lower, upper, every)| Op::DeleteRange {
            table,
            lower,
            upper,
            every,
        })
}

fn interleaved_scan(pool_len: usize) -> impl Strategy<Value = Op> {
    let write = (key_ref(pool_len), prop::option::weighted(0.6, value_spec()));
    (
        0..TABLES.len(),
        bound_spec(pool_len),
        bound_spec(pool_len),
        any::<bool>(),
        0usize..20,
        prop::collection::vec(write, 1..40),
    )
        .prop_map(
            |(table, lower, upper, reverse, after, writes)| Op::InterleavedScan {
                table,
                lower,
                upper,
                reverse,
                after,
                writes,
            },
        )
}

fn op(pool_len: usize) -> impl Strategy<Value = Op> {
    let end = select(vec![
        TxnEnd::Commit,
        TxnEnd::Commit,
        TxnEnd::Rollback,
        TxnEnd::Drop,
    ]);
    prop_oneof![
        30 => data_op(pool_len),
        3 => fill(pool_len),
        2 => delete_range(pool_len),
        4 => (prop::collection::vec(data_op(pool_len), 1..10), end)
            .prop_map(|(ops, end)| Op::Txn { ops, end }),
        2 => interleaved_scan(pool_len),
        1 => (0..TABLES.len()).prop_map(|table| Op::Recreate { table }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Verify),
        1 => any::<bool>().prop_map(|explicit_close| Op::Reopen { explicit_close }),
    ]
}

fn case() -> impl Strategy<Value = (Config, Vec<Vec<u8>>, Vec<Op>)> {
    (config(), prop::collection::vec(pool_key(), 4..40)).prop_flat_map(|(config, pool)| {
        let ops = prop::collection::vec(op(pool.len()), 1..80);
        (Just(config), Just(pool), ops)
    })
}

// ---- the harness ----------------------------------------------------------------------

/// The database under test, its tables and their models.
struct Harness {
    vfs: MemVfs,
    keys: Option<Arc<MemoryKeyProvider>>,
    config: Config,
    /// `None` only for a moment while reopening.
    db: Option<Db>,
    tables: Vec<Table>,
    models: Vec<Model>,
    pool: Vec<Vec<u8>>,
    max_key_len: usize,
}

impl Harness {
    fn new(config: Config, pool: Vec<Vec<u8>>) -> Harness {
        let vfs = MemVfs::new();
        let keys = config.keyring.then(common::keyring);
        let db = Db::open("/db", options(&vfs, keys.as_ref(), &config)).expect("create the db");
        let enc = if keys.is_some() {
            TableOptions::default()
                .encrypted(Encrypted::Yes)
                .encryption_key_id(TABLE_KEY_ID)
        } else {
            TableOptions::default()
        };
        let tables = vec![
            db.create_table(TABLES[0], enc).expect("create enc"),
            db.create_table(TABLES[1], TableOptions::default().encrypted(Encrypted::No))
                .expect("create plain"),
        ];
        assert_eq!(tables[0].info().encrypted, keys.is_some());
        assert!(!tables[1].info().encrypted);
        let max_key_len = tables[0].max_key_len();
        assert_eq!(max_key_len, tables[1].max_key_len());
        Harness {
            vfs,
            keys,
            config,
            db: Some(db),
            tables,
            models: vec![Model::new(), Model::new()],
            pool,
            max_key_len,
        }
    }

    fn key(&self, key: &KeyRef) -> Vec<u8> {
        match key {
            KeyRef::Pool(index) => self.pool[*index].clone(),
            KeyRef::Derived(base, n) => {
                let mut key = self.pool[*base].clone();
                key.truncate(self.max_key_len - 2);
                key.extend_from_slice(&n.to_be_bytes());
                key
            }
            KeyRef::Max(n) => {
                let mut key = vec![b'm'; self.max_key_len - 2];
                key.extend_from_slice(&n.to_be_bytes());
                key
            }
        }
    }

    fn bound(&self, bound: &BoundSpec) -> Bound<Vec<u8>> {
        match bound {
            BoundSpec::Unbounded => Bound::Unbounded,
            BoundSpec::Included(key) => Bound::Included(self.key(key)),
            BoundSpec::Excluded(key) => Bound::Excluded(self.key(key)),
        }
    }

    fn run(&mut self, ops: &[Op]) {
        for (step, op) in ops.iter().enumerate() {
            self.apply(step, op);
            if step % VERIFY_EVERY == VERIFY_EVERY - 1 {
                self.verify(step);
            }
        }
        self.verify(ops.len());
        self.check_all_contents();
        self.reopen(true);
        self.check_all_contents();
        self.verify(ops.len());
    }

    fn apply(&mut self, step: usize, op: &Op) {
        match op {
            Op::Put { table, key, value } => {
                let key = self.key(key);
                let value = value_bytes(value.seed, value.len);
                self.db()
                    .put(&self.tables[*table], &key, &value)
                    .unwrap_or_else(|e| panic!("step {step}: put {:?}: {e}", Short(&key)));
                self.models[*table].insert(key, value);
            }
            Op::Delete { table, key } => {
                let key = self.key(key);
                let existed = self
                    .db()
                    .delete(&self.tables[*table], &key)
                    .unwrap_or_else(|e| panic!("step {step}: delete {:?}: {e}", Short(&key)));
                let expected = self.models[*table].remove(&key).is_some();
                assert_eq!(existed, expected, "step {step}: delete {:?}", Short(&key));
            }
            Op::Get { table, key } => {
                let key = self.key(key);
                let found = self
                    .db()
                    .get(&self.tables[*table], &key)
                    .unwrap_or_else(|e| panic!("step {step}: get {:?}: {e}", Short(&key)));
                assert!(
                    found.as_ref() == self.models[*table].get(&key),
                    "step {step}: get {:?} found {:?} bytes",
                    Short(&key),
                    found.map(|v| v.len())
                );
            }
            Op::Scan {
                table,
                lower,
                upper,
                reverse,
                limit,
            } => {
                let (lower, upper) = (self.bound(lower), self.bound(upper));
                let scan = self
                    .db()
                    .range(&self.tables[*table], as_range(&lower, &upper), *reverse)
                    .unwrap_or_else(|e| panic!("step {step}: start a scan: {e}"));
                let expected = model_range(&self.models[*table], &lower, &upper, *reverse);
                check_scan(step, scan, expected, *limit);
            }
            Op::Txn { ops, end } => self.transaction(step, ops, *end),
            Op::Fill {
                table,
                base,
                max_keys,
                start,
                count,
                step: stride,
                descending,
                in_txn,
                max_value,
                seed,
            } => {
                let count = if *max_keys {
                    (*count).min(MAX_KEY_FILL)
                } else {
                    *count
                };
                let mut counters: Vec<u16> = (0..count)
                    .map(|i: u16| start.saturating_add(i.saturating_mul(*stride)))
                    .collect();
                if *descending {
                    counters.reverse();
                }
                let entries: Vec<(Vec<u8>, Vec<u8>)> = counters
                    .iter()
                    .map(|&n| {
                        let key = if *max_keys {
                            self.key(&KeyRef::Max(n))
                        } else {
                            self.key(&KeyRef::Derived(*base, n))
                        };
                        let value_seed = seed ^ u64::from(n);
                        let len = (value_seed % (*max_value as u64 + 1)) as usize;
                        (key, value_bytes(value_seed, len))
                    })
                    .collect();
                let table_handle = &self.tables[*table];
                if *in_txn {
                    let mut txn = self.db().begin().expect("begin");
                    for (key, value) in &entries {
                        txn.put(table_handle, key, value)
                            .unwrap_or_else(|e| panic!("step {step}: fill {:?}: {e}", Short(key)));
                    }
                    txn.commit()
                        .unwrap_or_else(|e| panic!("step {step}: commit a fill: {e}"));
                } else {
                    for (key, value) in &entries {
                        self.db()
                            .put(table_handle, key, value)
                            .unwrap_or_else(|e| panic!("step {step}: fill {:?}: {e}", Short(key)));
                    }
                }
                self.models[*table].extend(entries);
            }
            Op::DeleteRange {
                table,
                lower,
                upper,
                every,
            } => {
                let (lower, upper) = (self.bound(lower), self.bound(upper));
                let doomed: Vec<Vec<u8>> = model_range(&self.models[*table], &lower, &upper, false)
                    .into_iter()
                    .step_by(*every)
                    .map(|(key, _)| key)
                    .collect();
                for key in doomed {
                    let existed = self
                        .db()
                        .delete(&self.tables[*table], &key)
                        .unwrap_or_else(|e| panic!("step {step}: delete {:?}: {e}", Short(&key)));
                    assert!(
                        existed,
                        "step {step}: {:?} was not found to delete",
                        Short(&key)
                    );
                    self.models[*table].remove(&key);
                }
            }
            Op::InterleavedScan { .. } => self.interleaved_scan(step, op),
            Op::Recreate { table } => {
                let name = TABLES[*table];
                let old = self.tables[*table].clone();
                let options = old_options(&old);
                self.db()
                    .drop_table(name)
                    .unwrap_or_else(|e| panic!("step {step}: drop {name}: {e}"));
                match self.db().get(&old, b"k") {
                    Err(Error::NoSuchTable(dropped)) => assert_eq!(dropped, name),
                    other => panic!("step {step}: read of a dropped table gave {other:?}"),
                }
                assert!(self.db().table(name).is_err());
                let table_handle = self
                    .db()
                    .create_table(name, options)
                    .unwrap_or_else(|e| panic!("step {step}: create {name} again: {e}"));
                assert_ne!(table_handle.space_id(), old.space_id());
                self.tables[*table] = table_handle;
                self.models[*table].clear();
            }
            Op::Checkpoint => self
                .db()
                .checkpoint()
                .unwrap_or_else(|e| panic!("step {step}: checkpoint: {e}")),
            Op::Verify => self.verify(step),
            Op::Reopen { explicit_close } => {
                self.reopen(*explicit_close);
                self.check_all_contents();
                self.verify(step);
            }
        }
    }

    fn transaction(&mut self, step: usize, ops: &[Op], end: TxnEnd) {
        let mut pending = self.models.clone();
        let mut txn = self.db().begin().expect("begin");
        for op in ops {
            match op {
                Op::Put { table, key, value } => {
                    let key = self.key(key);
                    let value = value_bytes(value.seed, value.len);
                    txn.put(&self.tables[*table], &key, &value)
                        .unwrap_or_else(|e| panic!("step {step}: txn put {:?}: {e}", Short(&key)));
                    pending[*table].insert(key, value);
                }
                Op::Delete { table, key } => {
                    let key = self.key(key);
                    let existed = txn.delete(&self.tables[*table], &key).unwrap_or_else(|e| {
                        panic!("step {step}: txn delete {:?}: {e}", Short(&key))
                    });
                    let expected = pending[*table].remove(&key).is_some();
                    assert_eq!(
                        existed,
                        expected,
                        "step {step}: txn delete {:?}",
                        Short(&key)
                    );
                }
                Op::Get { table, key } => {
                    let key = self.key(key);
                    let found = txn
                        .get(&self.tables[*table], &key)
                        .unwrap_or_else(|e| panic!("step {step}: txn get {:?}: {e}", Short(&key)));
                    assert!(
                        found.as_ref() == pending[*table].get(&key),
                        "step {step}: txn get {:?}",
                        Short(&key)
                    );
                }
                Op::Scan {
                    table,
                    lower,
                    upper,
                    reverse,
                    limit,
                } => {
                    let (lower, upper) = (self.bound(lower), self.bound(upper));
                    let scan = txn
                        .range(&self.tables[*table], as_range(&lower, &upper), *reverse)
                        .unwrap_or_else(|e| panic!("step {step}: start a txn scan: {e}"));
                    let expected = model_range(&pending[*table], &lower, &upper, *reverse);
                    check_scan(step, scan, expected, *limit);
                }
                Op::Txn { .. }
                | Op::Fill { .. }
                | Op::DeleteRange { .. }
                | Op::InterleavedScan { .. }
                | Op::Recreate { .. }
                | Op::Checkpoint
                | Op::Verify
                | Op::Reopen { .. } => {
                    unreachable!("transactions hold data operations only")
                }
            }
        }
        match end {
            TxnEnd::Commit => {
                txn.commit()
                    .unwrap_or_else(|e| panic!("step {step}: commit: {e}"));
                self.models = pending;
            }
            TxnEnd::Rollback => txn.rollback().unwrap(),
            TxnEnd::Drop => drop(txn),
        }
    }

    /// Runs an `Op::InterleavedScan` (see there for what it checks).
    fn interleaved_scan(&mut self, step: usize, op: &Op) {
        let Op::InterleavedScan {
            table,
            lower,
            upper,
            reverse,
            after,
            writes,
        } = op
        else {
            unreachable!("called for interleaved scans only")
        };
        let (table, reverse, after) = (*table, *reverse, *after);
        let (lower, upper) = (self.bound(lower), self.bound(upper));
        let before = self.models[table].clone();
        let mut scan = self
            .db()
            .range(&self.tables[table], as_range(&lower, &upper), reverse)
            .unwrap_or_else(|e| panic!("step {step}: start a scan: {e}"));
        let mut found: Vec<(Vec<u8>, Vec<u8>)> = scan
            .by_ref()
            .take(after)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("step {step}: scan: {e}"));
        let expected: Vec<_> = model_range(&before, &lower, &upper, reverse)
            .into_iter()
            .take(after)
            .collect();
        assert!(found == expected, "step {step}: scan before the writes");
        let mut touched = std::collections::BTreeSet::new();
        for (key, value) in writes {
            let key = self.key(key);
            match value {
                Some(value) => {
                    let value = value_bytes(value.seed, value.len);
                    self.db()
                        .put(&self.tables[table], &key, &value)
                        .unwrap_or_else(|e| panic!("step {step}: put mid-scan: {e}"));
                    self.models[table].insert(key.clone(), value);
                }
                None => {
                    self.db()
                        .delete(&self.tables[table], &key)
                        .unwrap_or_else(|e| panic!("step {step}: delete mid-scan: {e}"));
                    self.models[table].remove(&key);
                }
            }
            touched.insert(key);
        }
        let rest: Vec<(Vec<u8>, Vec<u8>)> = scan
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("step {step}: scan after the writes: {e}"));
        let resume_after = found.last().map(|(k, _)| k.clone());
        found.extend(rest);
        for pair in found.windows(2) {
            let ordered = if reverse {
                pair[0].0 > pair[1].0
            } else {
                pair[0].0 < pair[1].0
            };
            assert!(
                ordered,
                "step {step}: scan out of order at {:?}",
                Short(&pair[1].0)
            );
        }
        // Past the resumption point: untouched keys exactly as in the model, touched ones
        // with either value.
        let after_resume = |key: &[u8]| match &resume_after {
            None => true,
            Some(last) if reverse => key < last.as_slice(),
            Some(last) => key > last.as_slice(),
        };
        let now = &self.models[table];
        let expected_untouched: Vec<&Vec<u8>> = model_range(now, &lower, &upper, reverse)
            .iter()
            .filter(|(k, _)| after_resume(k) && !touched.contains(k))
            .map(|(k, _)| now.get_key_value(k).expect("in the model").0)
            .collect();
        let found_untouched: Vec<&Vec<u8>> = found
            .iter()
            .skip(expected.len())
            .map(|(k, _)| k)
            .filter(|k| !touched.contains(*k))
            .collect();
        assert_eq!(
            found_untouched.len(),
            expected_untouched.len(),
            "step {step}: untouched keys after the writes"
        );
        assert!(
            found_untouched == expected_untouched,
            "step {step}: untouched keys differ"
        );
        for (key, value) in found.iter().skip(expected.len()) {
            assert!(
                in_range(key, &lower, &upper),
                "step {step}: {:?} out of range",
                Short(key)
            );
            let old = before.get(key);
            let new = now.get(key);
            assert!(
                Some(value) == old || Some(value) == new,
                "step {step}: {:?} has neither its old nor its new value",
                Short(key)
            );
            if !touched.contains(key) {
                assert_eq!(Some(value), new, "step {step}: untouched {:?}", Short(key));
            }
        }
    }

    fn verify(&self, step: usize) {
        let report = self.db().verify().unwrap();
        eprintln!(
            "DEBUG {} {:?} {:?}",
            self.config.page_size,
            self.db().stats(),
            report
                .trees
                .iter()
                .map(|(_, s)| (s.entries, s.depth, s.overflow_pages, s.free_pages))
                .collect::<Vec<_>>()
        );
        let report = self
            .db()
            .verify()
            .unwrap_or_else(|e| panic!("step {step}: verify: {e}"));
        for (table, model) in TABLES.iter().zip(&self.models) {
            let (_, stats) = report
                .trees
                .iter()
                .find(|(name, _)| name == table)
                .expect("verify reports every table");
            assert_eq!(
                stats.entries,
                model.len() as u64,
                "step {step}: entries of {table}"
            );
        }
    }

    fn check_all_contents(&self) {
        for (table, model) in self.tables.iter().zip(&self.models) {
            assert_contents(self.db(), table, model);
        }
    }

    fn db(&self) -> &Db {
        self.db.as_ref().expect("the database is open")
    }

    /// Closes the database (explicitly, or by dropping the last handle) and opens it again.
    fn reopen(&mut self, explicit_close: bool) {
        self.tables.clear();
        let db = self.db.take().expect("the database is open");
        if explicit_close {
            db.close().expect("close");
        }
        drop(db);
        // Another page size in the options: an existing database keeps its own.
        let other = if self.config.page_size == 16384 {
            4096
        } else {
            16384
        };
        let options = options(&self.vfs, self.keys.as_ref(), &self.config)
            .page_size(strongbox_engine::page::PageSize::of_buffer(other).expect("valid"));
        self.db = Some(Db::open("/db", options).expect("reopen"));
        assert_eq!(self.db().page_size(), self.config.page_size);
        let mut names: Vec<String> = self
            .db()
            .tables()
            .expect("list tables")
            .into_iter()
            .map(|info| info.name)
            .collect();
        names.sort();
        assert_eq!(names, ["enc", "plain"]);
        self.tables = TABLES
            .iter()
            .map(|name| self.db().table(name).expect("table survives reopen"))
            .collect();
    }
}

/// The options a table was created with, read back from what it reports.
fn old_options(table: &Table) -> TableOptions {
    let info = table.info();
    if info.encrypted {
        TableOptions::default()
            .encrypted(Encrypted::Yes)
            .encryption_key_id(info.key_id)
    } else {
        TableOptions::default().encrypted(Encrypted::No)
    }
}

fn options(vfs: &MemVfs, keys: Option<&Arc<MemoryKeyProvider>>, config: &Config) -> Options {
    match keys {
        Some(keys) => {
            common::mem_options(vfs, keys, config.page_size, config.frames, config.algorithm)
        }
        None => Options::new()
            .vfs(Arc::new(vfs.clone()))
            .encrypt_tables(EncryptTables::Off)
            .page_size(
                strongbox_engine::page::PageSize::of_buffer(config.page_size).expect("valid"),
            )
            .buffer_pool_size(config.frames * config.page_size),
    }
}

fn check_scan(
    step: usize,
    scan: strongbox_engine::Scan,
    expected: Vec<(Vec<u8>, Vec<u8>)>,
    limit: Option<usize>,
) {
    let take = limit.unwrap_or(usize::MAX);
    let found: Vec<(Vec<u8>, Vec<u8>)> = scan
        .take(take)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("step {step}: scan: {e}"));
    let expected: Vec<_> = expected.into_iter().take(take).collect();
    let keys = |entries: &[(Vec<u8>, Vec<u8>)]| -> Vec<String> {
        entries
            .iter()
            .map(|(k, _)| format!("{:?}", Short(k)))
            .collect()
    };
    assert_eq!(
        keys(&found),
        keys(&expected),
        "step {step}: scan returned other keys"
    );
    assert!(found == expected, "step {step}: scan returned other values");
}

fn cases() -> u32 {
    std::env::var("STRONGBOX_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 500,
        // Integration tests have no lib.rs for proptest to file regressions beside;
        // a failure prints its minimal case, which becomes a plain test.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_a_btreemap((config, pool, ops) in case()) {
        let mut harness = Harness::new(config, pool);
        harness.run(&ops);
    }
}

/// Regression: a pessimistic insert took a leaf for "safe" when it had room for the largest
/// *separator*, though a leaf cell can be a few bytes larger than that. Such a leaf let the
/// descent release its parent, and the split that followed failed with "a split reached a
/// parent that is not latched". This builds exactly that leaf on every page size: a root
/// split leaves `{a1, a2}` on the left, `a3` brings its free space into the gap, and `a4`,
/// a largest inline cell, must split it.
#[test]
fn insert_splits_a_leaf_with_room_for_a_separator_but_not_the_cell() {
    use strongbox_engine::btree::node;
    use strongbox_engine::page::{body_end, BODY_START};
    for page_size in [4096usize, 8192, 16384, 32768, 65536] {
        let body = body_end(page_size) - BODY_START;
        let (usable, largest_cell) = (node::usable_space(body), node::max_cell_size(body));
        let cell_header = largest_cell - node::max_inline_value(body, 0);
        let slot = 2;
        let key_len = 2;
        let value_for_cell = |cell: usize| cell - cell_header - key_len;
        let medium = largest_cell * 3 / 4;
        let free_wanted = node::max_branch_cell_len(body) + 2;
        assert!(free_wanted < largest_cell + slot, "the gap exists");
        let small = usable - 2 * (medium + slot) - slot - free_wanted;
        let steps: [(&[u8], usize); 6] = [
            (b"a1", medium),
            (b"a2", medium),
            (b"a5", largest_cell),
            (b"a6", largest_cell), // root split: {a1, a2} | {a5, a6}
            (b"a3", small),        // the left leaf now has `free_wanted` bytes free
            (b"a4", largest_cell), // needs two more
        ];
        let vfs = MemVfs::new();
        let keys = common::keyring();
        let db = Db::open(
            "/db",
            common::mem_options(&vfs, &keys, page_size, 16, Algorithm::AesCtr),
        )
        .unwrap();
        let table = db.create_table("t", TableOptions::default()).unwrap();
        let mut model = Model::new();
        for (key, cell) in steps {
            let value = value_bytes(cell as u64, value_for_cell(cell));
            db.put(&table, key, &value)
                .unwrap_or_else(|e| panic!("{page_size}: put {:?}: {e}", Short(key)));
            model.insert(key.to_vec(), value);
        }
        let stats = table.verify().unwrap();
        assert_eq!(
            (stats.depth, stats.leaves),
            (2, 3),
            "{page_size}: {stats:?}"
        );
        assert_contents(&db, &table, &model);
    }
}

/// Regression: a `Table` handle kept across a reopen still pointed into the closed
/// database's buffer pool, so the new database accepted writes through it that it never
/// saw — lost, or written over its pages when the old pool evicted them. Such handles are
/// now refused with `NoSuchTable`; a handle from `db.table()` works.
#[test]
fn handles_from_a_closed_database_are_refused() {
    let vfs = MemVfs::new();
    let keys = common::keyring();
    let options = || common::mem_options(&vfs, &keys, 4096, 16, Algorithm::AesCtr);
    let db = Db::open("/db", options()).unwrap();
    let stale = db.create_table("t", TableOptions::default()).unwrap();
    db.put(&stale, b"kept", b"1").unwrap();
    db.close().unwrap();
    assert!(matches!(
        db.put(&stale, b"x", b"y"),
        Err(Error::Poisoned(_))
    ));
    drop(db);

    let db = Db::open("/db", options()).unwrap();
    let refused = |result: Result<(), Error>| {
        assert!(
            matches!(&result, Err(Error::NoSuchTable(name)) if name == "t"),
            "{result:?}"
        );
    };
    refused(db.put(&stale, b"lost", b"2"));
    refused(db.get(&stale, b"kept").map(drop));
    refused(db.delete(&stale, b"kept").map(drop));
    refused(db.range(&stale, .., false).map(drop));
    let mut txn = db.begin().unwrap();
    refused(txn.put(&stale, b"lost", b"2"));
    refused(txn.get(&stale, b"kept").map(drop));
    refused(txn.range(&stale, .., true).map(drop));
    drop(txn);

    let table = db.table("t").unwrap();
    assert_eq!(db.get(&table, b"kept").unwrap(), Some(b"1".to_vec()));
    assert_eq!(db.get(&table, b"lost").unwrap(), None);
    db.verify().unwrap();
}
