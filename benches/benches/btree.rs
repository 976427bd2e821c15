//! What the B+tree costs through the embedded API, with and without encryption, when every
//! page is in the buffer pool.
//!
//! One table of 100,000 records (16-byte keys, 100-byte values, loaded in random key order)
//! in a database on the in-memory file system ([`MemVfs`]) with a 64 MiB pool, which holds
//! every page. Each group runs the same operation on three databases:
//!
//! | id           | tables    | redo log  |
//! |--------------|-----------|-----------|
//! | `plain`      | plain     | plain     |
//! | `tables`     | encrypted | plain     |
//! | `tables+log` | encrypted | encrypted (the default once a keyring is configured) |
//!
//! | group           | measures                                                        |
//! |-----------------|-----------------------------------------------------------------|
//! | `get_hit`       | `Db::get` of a present key                                      |
//! | `get_miss`      | `Db::get` of an absent key (same descent, no value copied)      |
//! | `put_overwrite` | `Db::put` of a present key, same value length                   |
//! | `put_insert`    | `Db::put` of a new key, splits included                         |
//! | `scan_100`      | `Db::range` from a present key, the first 100 records read      |
//!
//! Each put is its own (autocommit) transaction. `put_insert` deletes its keys again after
//! each sample, untimed, so the table stays at 100,000 records.
//!
//! Pages are encrypted only on their way to a file and decrypted on their way in (DESIGN
//! §3), so with every page resident `plain` and `tables` should take the same time: that is
//! the point of the comparison. Writers still pay for encryption in two places, which the
//! put groups show: the redo log is sealed at every commit (`tables+log`;
//! `flush_log_at_commit = 2`, so each commit writes its block to the in-memory file), and
//! the page cleaner encrypts dirty pages in the background, competing for the CPU. Each
//! bench starts with every database checkpointed (untimed), so only the cleaner of the
//! database being measured runs. Commits never wait for a disk here: `wal` measures that.
//!
//! Keys are a multiplicative hash of a record number followed by the number itself, so
//! consecutive numbers land on unrelated leaves; present keys have even numbers, absent
//! ones odd.
//!
//! Run: `cargo bench -p strongbox-bench --bench btree`
//!
//! Plots are off: criterion's plotting backend needs system fonts. The numbers are on the
//! terminal and in `target/criterion`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use strongbox_engine::io::MemVfs;
use strongbox_engine::{Db, EncryptTables, FlushAtCommit, Options, Table, TableOptions};
use strongbox_keyring::provider::MemoryKeyProvider;

const RECORDS: u64 = 100_000;
const VALUE_LEN: usize = 100;
const SCAN_LEN: usize = 100;
const POOL: usize = 64 << 20;
/// Small redo segments keep the in-memory log small; checkpoints come every 96 MiB of redo.
const LOG_SEGMENT: u64 = 16 << 20;
/// Records per transaction while loading.
const LOAD_BATCH: u64 = 1_000;

/// Which of a database's files are encrypted.
#[derive(Clone, Copy)]
struct Mode {
    label: &'static str,
    tables: bool,
    log: bool,
}

const MODES: [Mode; 3] = [
    Mode {
        label: "plain",
        tables: false,
        log: false,
    },
    Mode {
        label: "tables",
        tables: true,
        log: false,
    },
    Mode {
        label: "tables+log",
        tables: true,
        log: true,
    },
];

/// Record number `n`'s key: a hash of `n` (placement), then `n` (uniqueness).
fn key(n: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    key[8..].copy_from_slice(&n.to_be_bytes());
    key
}

fn value(n: u64) -> [u8; VALUE_LEN] {
    let mut value = [0x5a; VALUE_LEN];
    value[..8].copy_from_slice(&n.to_le_bytes());
    value
}

/// The `i`-th present key an operation visits, cycling through all of them.
fn present(i: u64) -> [u8; 16] {
    key(2 * (i % RECORDS))
}

/// A database on its own in-memory file system, loaded with the bench table.
struct Loaded {
    mode: Mode,
    db: Db,
    table: Table,
}

impl Loaded {
    fn open(mode: Mode) -> Loaded {
        let keys = Arc::new(MemoryKeyProvider::new());
        keys.add_random(1, 1, 256).expect("256 is a valid key size");
        let options = Options::new()
            .key_provider(keys)
            .encrypt_tables(if mode.tables {
                EncryptTables::On
            } else {
                EncryptTables::Off
            })
            .encrypt_log(mode.log)
            .buffer_pool_size(POOL)
            .log_file_size(LOG_SEGMENT)
            .flush_log_at_commit(FlushAtCommit::WriteAtCommit)
            .vfs(Arc::new(MemVfs::new()));
        let db = Db::open("/bench", options).expect("open the bench database");
        let table = db
            .create_table("records", TableOptions::default())
            .expect("create the bench table");
        for batch in 0..RECORDS / LOAD_BATCH {
            let mut txn = db.begin().expect("begin");
            for n in batch * LOAD_BATCH..(batch + 1) * LOAD_BATCH {
                txn.put(&table, &key(2 * n), &value(n)).expect("load");
            }
            txn.commit().expect("commit the load");
        }
        Loaded { mode, db, table }
    }

    fn pages_read(&self) -> u64 {
        self.db.stats().pages_read
    }
}

/// Writes every dirty page of every database, so that no bench shares the CPU with the
/// page cleaner of a database an earlier bench wrote to.
fn quiesce(dbs: &[Loaded]) {
    for d in dbs {
        d.db.checkpoint().expect("checkpoint");
    }
}

/// Runs `op(db, i)` with `i` counting up across iterations, once per mode.
fn per_mode(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    dbs: &[Loaded],
    mut op: impl FnMut(&Loaded, u64),
) {
    for loaded in dbs {
        quiesce(dbs);
        let mut i = 0u64;
        group.bench_function(loaded.mode.label, |b| {
            b.iter(|| {
                i += 1;
                op(loaded, i);
            })
        });
    }
}

fn gets(c: &mut Criterion, dbs: &[Loaded]) {
    let reads_before: Vec<u64> = dbs.iter().map(Loaded::pages_read).collect();
    let mut group = c.benchmark_group("get_hit");
    group.throughput(Throughput::Elements(1));
    per_mode(&mut group, dbs, |d, i| {
        let found = d.db.get(&d.table, black_box(&present(i))).expect("get");
        assert!(found.is_some(), "a present key");
    });
    group.finish();

    let mut group = c.benchmark_group("get_miss");
    group.throughput(Throughput::Elements(1));
    per_mode(&mut group, dbs, |d, i| {
        let absent = key(2 * (i % RECORDS) + 1);
        let found = d.db.get(&d.table, black_box(&absent)).expect("get");
        assert!(found.is_none(), "an absent key");
    });
    group.finish();

    for (loaded, before) in dbs.iter().zip(reads_before) {
        assert_eq!(
            loaded.pages_read(),
            before,
            "{}: gets must be pool hits",
            loaded.mode.label
        );
    }
}

fn puts(c: &mut Criterion, dbs: &[Loaded]) {
    let mut group = c.benchmark_group("put_overwrite");
    group.throughput(Throughput::Elements(1));
    per_mode(&mut group, dbs, |d, i| {
        d.db.put(&d.table, black_box(&present(i)), &value(i))
            .expect("put");
    });
    group.finish();

    let mut group = c.benchmark_group("put_insert");
    group.throughput(Throughput::Elements(1));
    for d in dbs {
        quiesce(dbs);
        group.bench_function(d.mode.label, |b| {
            b.iter_custom(|iters| {
                let new_keys = (0..iters).map(|i| key(2 * i + 1));
                let started = Instant::now();
                for (i, k) in new_keys.clone().enumerate() {
                    d.db.put(&d.table, black_box(&k), &value(i as u64))
                        .expect("insert");
                }
                let elapsed = started.elapsed();
                for k in new_keys {
                    assert!(d.db.delete(&d.table, &k).expect("delete"), "inserted");
                }
                elapsed
            })
        });
    }
    group.finish();
}

fn scans(c: &mut Criterion, dbs: &[Loaded]) {
    let mut group = c.benchmark_group("scan_100");
    group.throughput(Throughput::Elements(SCAN_LEN as u64));
    per_mode(&mut group, dbs, |d, i| {
        let start = present(i);
        let scan = d.db.range(&d.table, &start[..].., false).expect("scan");
        let mut bytes = 0;
        for entry in scan.take(SCAN_LEN) {
            let (k, v) = entry.expect("scan entry");
            bytes += k.len() + v.len();
        }
        black_box(bytes);
    });
    group.finish();
}

fn btree(c: &mut Criterion) {
    let started = Instant::now();
    let dbs: Vec<Loaded> = MODES.into_iter().map(Loaded::open).collect();
    eprintln!(
        "btree: loaded {} databases of {RECORDS} records in {:.1} s",
        dbs.len(),
        started.elapsed().as_secs_f64()
    );
    gets(c, &dbs);
    puts(c, &dbs);
    scans(c, &dbs);
    for d in dbs {
        let stats = d.db.stats();
        eprintln!(
            "btree/{}: pool misses {}, pages encrypted {}, pages decrypted {}, checkpoints {}",
            d.mode.label,
            stats.misses,
            stats.pages_encrypted,
            stats.pages_decrypted,
            stats.log.checkpoints
        );
        d.db.close().expect("close");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = btree
}
criterion_main!(benches);
