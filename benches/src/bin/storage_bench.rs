//! `storage_bench`: what encryption costs the storage core — random gets and puts, 1 and 4
//! threads, encrypted vs plain, with (a) a buffer pool larger than the data and (b) a pool a
//! tenth of the data (every miss reads and decrypts a page; every eviction of a dirty page
//! encrypts one), served from the OS page cache, and (c) the same with `O_DIRECT`, so every
//! miss is a device read — the truly IO-bound case Percona measured.
//!
//! Encrypted and plain runs alternate slice by slice (ten slices per round) in one process,
//! so both see the same machine and disk noise; the table reports the median of the rounds
//! and the ratio encrypted/plain.
//!
//! ```text
//! cargo run --release -p strongbox-bench --bin storage_bench -- [records] [rounds]
//! ```

use rand::{RngExt, SeedableRng};
use std::sync::Arc;
use std::time::Instant;
use strongbox_bench::direct_io::DirectVfs;
use strongbox_bench::stats::median;
use strongbox_engine::{Db, EncryptTables, Encrypted, Options, Table, TableOptions};
use strongbox_keyring::provider::MemoryKeyProvider;

const VALUE_LEN: usize = 100;
/// Operations per thread and measurement when misses come from memory / from the device.
const OPS_PER_THREAD: usize = 200_000;
const DIRECT_OPS_PER_THREAD: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Get,
    Put,
}

struct Setup {
    _dir: tempfile::TempDir,
    db: Db,
    table: Table,
}

fn key(i: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(b"user0000");
    key[8..].copy_from_slice(&i.to_be_bytes());
    key
}

fn setup(records: u64, pool_bytes: usize, encrypted: bool, direct: bool) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Arc::new(MemoryKeyProvider::new());
    keys.add_random(1, 1, 256).expect("key");
    let options = Options::new()
        .key_provider(keys)
        .encrypt_tables(if encrypted {
            EncryptTables::On
        } else {
            EncryptTables::Off
        })
        .buffer_pool_size(pool_bytes);
    let options = if direct {
        options.vfs(Arc::new(DirectVfs))
    } else {
        options
    };
    let db = Db::open(dir.path(), options).expect("open");
    let table = db
        .create_table(
            "bench",
            TableOptions::default().encrypted(if encrypted {
                Encrypted::Yes
            } else {
                Encrypted::No
            }),
        )
        .expect("create");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut order: Vec<u64> = (0..records).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    for chunk in order.chunks(10_000) {
        let mut txn = db.begin().expect("begin");
        for &i in chunk {
            txn.put(&table, &key(i), &[b'v'; VALUE_LEN]).expect("put");
        }
        txn.commit().expect("commit");
    }
    db.checkpoint().expect("checkpoint");
    Setup {
        _dir: dir,
        db,
        table,
    }
}

/// Seconds `threads` threads take to do `ops` operations each of `op` on random keys
/// (`seed` picks the key sequence).
fn measure(setup: &Setup, records: u64, threads: usize, op: Op, ops: usize, seed: u64) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let db = &setup.db;
            let table = &setup.table;
            scope.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1000 + t as u64);
                for _ in 0..ops {
                    let k = key(rng.random_range(0..records));
                    match op {
                        Op::Get => {
                            std::hint::black_box(db.get(table, &k).expect("get"));
                        }
                        Op::Put => db.put(table, &k, &[b'w'; VALUE_LEN]).expect("put"),
                    }
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}

/// Plain and encrypted alternate in this many slices per round, so that both see the same
/// machine and disk conditions even when those drift within a round.
const SLICES: usize = 10;

/// Operations per second of plain and of encrypted over one round, interleaved slice by slice.
fn measure_round(
    plain: &Setup,
    encrypted: &Setup,
    records: u64,
    threads: usize,
    op: Op,
    ops: usize,
    round: usize,
) -> (f64, f64) {
    let slice = (ops / SLICES).max(1);
    let (mut plain_secs, mut encrypted_secs) = (0.0, 0.0);
    for s in 0..SLICES {
        let seed = (round * SLICES + s) as u64;
        plain_secs += measure(plain, records, threads, op, slice, seed);
        encrypted_secs += measure(encrypted, records, threads, op, slice, seed);
    }
    let total = (threads * slice * SLICES) as f64;
    (total / plain_secs, total / encrypted_secs)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let records: u64 = args.next().map_or(300_000, |a| a.parse().expect("records"));
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("rounds"));
    // About 3.0 pages of 16 KiB per 100 records of 16 + 100 bytes (leaves ~2/3 full).
    let data_bytes = (records as usize * (VALUE_LEN + 16 + 9)) * 3 / 2;
    let small_pool = (data_bytes / 10).max(1 << 20);
    let configs = [
        ("pool > data", data_bytes * 2, false),
        ("pool = data/10, page cache", small_pool, false),
        ("pool = data/10, O_DIRECT", small_pool, true),
    ];
    println!(
        "records {records}, value {VALUE_LEN} B, {OPS_PER_THREAD} ops per thread \
         ({DIRECT_OPS_PER_THREAD} with O_DIRECT), {rounds} rounds, median ops/s"
    );
    println!();
    println!("| buffer pool | op | threads | plain ops/s | encrypted ops/s | encrypted/plain | plain hit ratio |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (label, pool, direct) in configs {
        let ops = if direct {
            DIRECT_OPS_PER_THREAD
        } else {
            OPS_PER_THREAD
        };
        let plain = setup(records, pool, false, direct);
        let encrypted = setup(records, pool, true, direct);
        for op in [Op::Get, Op::Put] {
            for threads in [1, 4] {
                let (mut p, mut e) = (Vec::new(), Vec::new());
                let before = plain.db.stats();
                for round in 0..rounds {
                    let (plain_rate, encrypted_rate) =
                        measure_round(&plain, &encrypted, records, threads, op, ops, round);
                    p.push(plain_rate);
                    e.push(encrypted_rate);
                }
                let after = plain.db.stats();
                let hits = (after.hits - before.hits) as f64;
                let misses = (after.misses - before.misses) as f64;
                let (p, e) = (median(p), median(e));
                println!(
                    "| {label} ({} MiB) | {op:?} | {threads} | {p:.0} | {e:.0} | {:.3} | {:.3} |",
                    pool >> 20,
                    e / p,
                    hits / (hits + misses).max(1.0)
                );
            }
        }
        let stats = encrypted.db.stats();
        println!(
            "| | encrypted db counters: pages encrypted {}, decrypted {} | | | | | |",
            stats.pages_encrypted, stats.pages_decrypted
        );
    }
}
