//! No (key, IV) pair is ever used twice to encrypt, over a long mixed workload with key
//! rotation, ALTER and power losses (issue 8 §4b).
//!
//! A reused CTR or GCM nonce under one key leaks the XOR of two plaintexts, and a leak
//! scan cannot see it: both ciphertexts look random. The keyring's test-only audit
//! (`strongbox_keyring::nonce_audit`, feature `nonce-audit`, enabled for this crate's tests
//! in `engine/Cargo.toml`) records every encryption of a page, a redo block and a
//! temporary-file chunk: the SHA-256 of the key, the mode, the IV or nonce, the length.
//!
//! ## The workload
//!
//! One database on a [`SimVfs`] (4 KiB pages, a 24-frame buffer pool so that the same pages
//! are evicted and rewritten over and over, 128 KiB redo segments so that checkpoints come
//! often, the doublewrite on, the redo log and the temporary space encrypted). Tables `ctr`,
//! `cbc` and `gcm` are created under opens with `aes_ctr`, `aes_cbc` and `aes_gcm` and
//! keyring keys 1, 2 and 3. Then [`LIFETIMES`] lifetimes, each opened with the next
//! algorithm (the temporary space is recreated with it):
//!
//! 1. churn: per table, transactions of puts (overwrites of a small key set, some values on
//!    overflow pages) and deletes, committed; one more rolled back; a checkpoint;
//! 2. a temporary table written, overwritten and thinned, and a bulk load into another
//!    temporary table big enough to spill sorted runs to encrypted temporary files;
//! 3. key work, by lifetime: rotate key 1 with re-encryption (system space, `ctr`, the redo
//!    log's key rewrapped); rotate key 2 by rewrap, ALTER `cbc` to key 3; ALTER `ctr` to
//!    plain and back to encrypted (a new data key under this lifetime's algorithm); a new
//!    version of key 3 picked up by `reload_keys` and then an explicit re-encryption;
//! 4. more churn, then a re-encryption of key 1 started, a transaction left open, and the
//!    pass run (`encryption_threads = 0`: in the caller of `wait_for_encryption`) until the
//!    power fails a random 10 to 410 IOs into it ([`SimVfs::power_fail_after`]); the disk a
//!    restart finds ([`SimVfs::crash`]) with one of the damage kinds (unsynced writes kept
//!    at random, as a prefix, torn at 512 B or 4 KiB, lost, kept) is where the next lifetime
//!    opens — recovery, doublewrite repair, a re-encryption pass resumed half-way (printed).
//!    The last lifetime closes cleanly instead, and one more open and close follows.
//!
//! After every open the persistent tables must hold exactly the committed writes (a model).
//!
//! ## The checks
//!
//! Over all lifetimes together — pages sealed before a crash and after recovery under the
//! same data key are the case that matters:
//!
//! * no two records share a key and an IV ([`Audit::repeats`]), and no two share an AES
//!   input block ([`Audit::overlaps`]: a CTR counter range running into another, a GCM
//!   nonce's counter blocks meeting a CTR range of the same key);
//! * every kind and mode was exercised (pages in CTR, CBC and GCM; redo; temporary files);
//! * the records account for every GCM seal and CBC encryption the keyring performed
//!   ([`Audit::seals`]), so no encryption site escapes the audit;
//! * the same page under the same key was sealed in more than one lifetime (the audit did
//!   span the crashes) and many times over (the small pool rewrote pages).
//!
//! The figures are printed. `STRONGBOX_NONCE_AUDIT_LIFETIMES=<n>` runs a longer version
//! (default [`LIFETIMES`]); `STRONGBOX_NONCE_AUDIT_SEED=<seed>` repeats a run's values and
//! damage choices.
//!
//! ```text
//! cargo test -p strongbox-engine --test nonce_audit -- --nocapture
//! ```
//!
//! The negative control seals one page twice with the same write nonce through
//! `page::encode` (each algorithm) and one redo block twice through `wal::block::seal`: the
//! audit must report each repeat.

mod common;

use common::{assert_contents, Rng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use strongbox_engine::io::{Damage, SimVfs};
use strongbox_engine::page::{self, PageId, PageSize, PageType, Seal};
use strongbox_engine::{
    Db, EncryptTables, Encrypted, FlushAtCommit, Options, RotationPolicy, Table, TableOptions,
};
use strongbox_keyring::nonce_audit::{self, Audit, Fingerprint, Kind, Mode};
use strongbox_keyring::provider::MemoryKeyProvider;
use strongbox_keyring::{wrap, Algorithm};
use strongbox_wal::block::{self, BlockHeader, BLOCK_SIZE};

const DIR: &str = "/db";
const PAGE_SIZE: usize = 4096;
const FRAMES: usize = 24;
const LOG_FILE_SIZE: u64 = 128 << 10;
/// Lifetimes of the database in the default run; all but the last end in a power loss.
const LIFETIMES: u64 = 9;
const ENV_LIFETIMES: &str = "STRONGBOX_NONCE_AUDIT_LIFETIMES";
const ENV_SEED: &str = "STRONGBOX_NONCE_AUDIT_SEED";

/// The persistent tables: name, the algorithm of the open that creates it, its key id.
const TABLES: [(&str, Algorithm, u32); 3] = [
    ("ctr", Algorithm::AesCtr, 1),
    ("cbc", Algorithm::AesCbc, 2),
    ("gcm", Algorithm::AesGcm, 3),
];
/// Keys per table the churn writes (a small set: the same pages are rewritten).
const KEYS: u64 = 600;

/// The audit is process-wide: the tests of this file take turns.
static AUDIT: Mutex<()> = Mutex::new(());

fn audit_lock() -> MutexGuard<'static, ()> {
    AUDIT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

fn options(
    sim: &SimVfs,
    keys: &Arc<MemoryKeyProvider>,
    tmp: &std::path::Path,
    lifetime: u64,
) -> Options {
    Options::new()
        .vfs(Arc::new(sim.clone()))
        .key_provider(Arc::clone(keys) as _)
        .encrypt_tables(EncryptTables::On)
        .encrypt_log(true)
        .encrypt_temp(true)
        .encryption_algorithm(Algorithm::ALL[(lifetime % 3) as usize])
        .page_size(PageSize::of_buffer(PAGE_SIZE).expect("4 KiB pages"))
        .buffer_pool_size(FRAMES * PAGE_SIZE)
        .log_file_size(LOG_FILE_SIZE)
        .flush_log_at_commit(FlushAtCommit::EveryCommit)
        .doublewrite(true)
        // Passes run in `wait_for_encryption`'s caller, so a power loss can be put inside
        // one deterministically.
        .encryption_threads(0)
        .encryption_rotation_iops(0)
        .lock_wait_timeout(Duration::from_secs(10))
        .tmpdir(tmp)
}

/// The committed contents of every persistent table.
type Model = BTreeMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>>;

fn value(rng: &mut Rng, tag: &str) -> Vec<u8> {
    let len = if rng.percent(7) {
        5000 + rng.below(7000) // an overflow chain
    } else {
        40 + rng.below(400)
    };
    let mut v = format!("{tag}:").into_bytes();
    while v.len() < len {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

fn key(i: u64) -> Vec<u8> {
    format!("k{i:05}").into_bytes()
}

/// Committed transactions of puts and deletes on every table, one rolled back, a
/// checkpoint in the middle.
fn churn(db: &Db, tables: &[Table], model: &mut Model, rng: &mut Rng, tag: &str) {
    for round in 0..3 {
        for (table, (name, _, _)) in tables.iter().zip(TABLES) {
            let rows = model.get_mut(name).expect("every table is modelled");
            let mut txn = db.begin().unwrap();
            let mut writes = Vec::new();
            for _ in 0..30 {
                let k = key(rng.next_u64() % KEYS);
                if rng.percent(20) {
                    txn.delete(table, &k).unwrap();
                    writes.push((k, None));
                } else {
                    let v = value(rng, tag);
                    txn.put(table, &k, &v).unwrap();
                    writes.push((k, Some(v)));
                }
            }
            txn.commit().unwrap();
            for (k, v) in writes {
                match v {
                    Some(v) => rows.insert(k, v),
                    None => rows.remove(&k),
                };
            }
        }
        let mut doomed = db.begin().unwrap();
        for table in tables {
            for _ in 0..10 {
                let k = key(rng.next_u64() % KEYS);
                if rng.percent(30) {
                    doomed.delete(table, &k).unwrap();
                } else {
                    doomed.put(table, &k, &value(rng, "rolled-back")).unwrap();
                }
            }
        }
        doomed.rollback().unwrap();
        if round == 1 {
            db.checkpoint().unwrap();
        }
    }
}

/// A temporary table written and thinned, and a bulk load that spills sorted runs.
fn temporary_work(db: &Db, rng: &mut Rng, lifetime: u64) -> usize {
    let scratch = db.create_temp_table(&format!("scratch{lifetime}")).unwrap();
    for pass in 0..2 {
        for i in 0..200 {
            db.put(&scratch, &key(i), &value(rng, &format!("temp{pass}")))
                .unwrap();
        }
    }
    for i in (0..200).step_by(3) {
        db.delete(&scratch, &key(i)).unwrap();
    }
    let sorted = db.create_temp_table(&format!("sorted{lifetime}")).unwrap();
    let mut loader = db.bulk_loader(&sorted).unwrap();
    // 2200 pairs of about 1 KiB: past the 1 MiB budget twice, so two runs spill.
    for i in 0..2200u64 {
        let k = (i.wrapping_mul(0x9E37_79B9) % 100_000)
            .to_be_bytes()
            .to_vec();
        let mut v = vec![0u8; 1000];
        v[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        loader.push(k, v).unwrap();
    }
    let report = loader.finish(100).unwrap();
    assert!(
        report.spilled_runs > 0,
        "the bulk load should spill: {report:?}"
    );
    db.drop_table(&format!("scratch{lifetime}")).unwrap();
    report.spilled_runs
}

/// What lifetime `lifetime` does to keys (module doc, step 3); waits for every pass.
fn key_work(db: &Db, keys: &MemoryKeyProvider, lifetime: u64) -> &'static str {
    let done = match lifetime % 4 {
        0 => {
            keys.rotate(1).unwrap();
            db.rotate_key(1, RotationPolicy::Reencrypt).unwrap();
            "rotate key 1 (re-encrypt)"
        }
        1 => {
            keys.rotate(2).unwrap();
            db.rotate_key(2, RotationPolicy::Rewrap).unwrap();
            db.alter_table("cbc", TableOptions::default().encryption_key_id(3))
                .unwrap();
            "rotate key 2 (rewrap), ALTER cbc to key 3"
        }
        2 => {
            db.alter_table("ctr", TableOptions::default().encrypted(Encrypted::No))
                .unwrap();
            db.wait_for_encryption(|_| {}).unwrap();
            db.alter_table(
                "ctr",
                TableOptions::default()
                    .encrypted(Encrypted::Yes)
                    .encryption_key_id(1),
            )
            .unwrap();
            "ALTER ctr to plain and back (new key and algorithm)"
        }
        _ => {
            keys.rotate(3).unwrap();
            db.reload_keys().unwrap();
            db.rotate_key(3, RotationPolicy::Reencrypt).unwrap();
            "new version of key 3: reload_keys, then re-encrypt"
        }
    };
    db.wait_for_encryption(|_| {}).unwrap();
    done
}

fn open_tables(db: &Db) -> Vec<Table> {
    TABLES
        .iter()
        .map(|(name, _, _)| db.table(name).unwrap())
        .collect()
}

fn check_model(db: &Db, model: &Model) {
    for (name, rows) in model {
        assert_contents(db, &db.table(name).unwrap(), rows);
    }
    db.verify().unwrap();
}

/// Creates the three tables, each under an open with its algorithm; returns the disk.
fn create(keys: &Arc<MemoryKeyProvider>, tmp: &std::path::Path) -> SimVfs {
    let sim = SimVfs::new();
    for (i, (name, _, key_id)) in TABLES.iter().enumerate() {
        let db = Db::open(DIR, options(&sim, keys, tmp, i as u64)).unwrap();
        let table = db
            .create_table(name, TableOptions::default().encryption_key_id(*key_id))
            .unwrap();
        assert!(table.info().encrypted);
        db.close().unwrap();
    }
    sim
}

/// The damage of the power loss that ends lifetime `lifetime`.
fn damage(seed: u64, lifetime: u64) -> Damage {
    let variants = Damage::variants(seed ^ lifetime.wrapping_mul(0xA076_1D64_78BD_642F));
    // Every kind in turn, starting with the realistic one (any subset of unsynced writes).
    variants[((lifetime + 1) % variants.len() as u64) as usize]
}

/// Page records per (key, page number), with the lifetimes that sealed each.
fn page_lifetimes(
    audits: &[(u64, Audit)],
) -> HashMap<(Fingerprint, [u8; 4]), (u64, BTreeSet<u64>)> {
    let mut pages: HashMap<(Fingerprint, [u8; 4]), (u64, BTreeSet<u64>)> = HashMap::new();
    for (lifetime, audit) in audits {
        for r in audit.records.iter().filter(|r| r.kind == Kind::Page) {
            let page_no: [u8; 4] = r.iv[..4].try_into().expect("IVs start with page_no");
            let entry = pages.entry((r.key, page_no)).or_default();
            entry.0 += 1;
            entry.1.insert(*lifetime);
        }
    }
    pages
}

#[test]
fn no_key_and_iv_pair_is_used_twice_across_rotation_alter_and_crashes() {
    let _turn = audit_lock();
    let lifetimes = env_u64(ENV_LIFETIMES).unwrap_or(LIFETIMES).max(2);
    let seed = env_u64(ENV_SEED).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("nonce audit: seed {seed} ({ENV_SEED}), {lifetimes} lifetimes");
    let mut rng = Rng::new(seed);
    let keys = Arc::new(MemoryKeyProvider::new());
    for id in [1, 2, 3] {
        keys.add_random(id, 1, 256).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();

    nonce_audit::start();
    let mut sim = create(&keys, tmp.path());
    let mut audits = vec![(0, nonce_audit::take())];
    let mut model: Model = TABLES
        .iter()
        .map(|(n, _, _)| (*n, BTreeMap::new()))
        .collect();
    let mut spilled = 0;
    let mut crashes = Vec::new();

    for lifetime in 1..=lifetimes {
        nonce_audit::start();
        let db = Db::open(DIR, options(&sim, &keys, tmp.path(), lifetime)).unwrap();
        check_model(&db, &model);
        let resumed: Vec<String> = db
            .encryption_status()
            .unwrap()
            .into_iter()
            .filter(|s| s.rotating)
            .map(|s| format!("{} {}/{}", s.name, s.pages_done, s.pages_total))
            .collect();
        if !resumed.is_empty() {
            println!("lifetime {lifetime}: opened with passes to resume: {resumed:?}");
        }
        let tables = open_tables(&db);
        let tag = format!("life{lifetime}");
        churn(&db, &tables, &mut model, &mut rng, &tag);
        spilled += temporary_work(&db, &mut rng, lifetime);
        let did = key_work(&db, &keys, lifetime - 1);
        churn(&db, &tables, &mut model, &mut rng, &tag);
        if lifetime == lifetimes {
            check_model(&db, &model);
            db.close().unwrap();
            drop(db);
            println!("lifetime {lifetime}: {did}; closed cleanly");
        } else {
            // A pass running, a transaction open, dirty pages: then the power fails.
            keys.rotate(1).unwrap();
            db.rotate_key(1, RotationPolicy::Reencrypt).unwrap();
            let mut open = db.begin().unwrap();
            for (i, table) in tables.iter().enumerate() {
                for j in 0..8 {
                    open.put(table, &key(j * 7 + i as u64), &value(&mut rng, "open"))
                        .unwrap();
                }
            }
            let rotating = db
                .encryption_status()
                .unwrap()
                .iter()
                .filter(|s| s.rotating)
                .count();
            // The pass runs in this thread (`encryption_threads = 0`) until the power fails
            // some IOs into it.
            let ops = 10 + rng.below(400) as u64;
            sim.power_fail_after(sim.ops() + ops);
            let cut = db.wait_for_encryption(|_| {}).is_err();
            sim.power_fail_now();
            drop(open);
            let _ = db.close(); // fails: the power is off
            drop(db);
            let damage = damage(seed, lifetime);
            sim = sim.crash(damage);
            println!(
                "lifetime {lifetime}: {did}; {rotating} spaces to re-encrypt, power lost {ops} \
                 IOs later ({}), restart with {damage:?}",
                if cut { "mid-pass" } else { "after the pass" }
            );
            crashes.push(damage);
        }
        audits.push((lifetime, nonce_audit::take()));
    }
    // One more open: recovery of a clean shutdown, and a check of what the last lifetime left.
    nonce_audit::start();
    let db = Db::open(DIR, options(&sim, &keys, tmp.path(), lifetimes + 1)).unwrap();
    check_model(&db, &model);
    db.close().unwrap();
    drop(db);
    audits.push((lifetimes + 1, nonce_audit::take()));

    let pages = page_lifetimes(&audits);
    let mut all = Audit::default();
    for (_, audit) in audits {
        all.absorb(audit);
    }
    let counts = all.counts();
    let repeats = all.repeats();
    let overlaps = all.overlaps();
    println!("pairs recorded per (kind, mode): {counts:?}");
    println!(
        "total {} pairs under {} distinct keys; {} crashes; {spilled} sorted runs spilled",
        all.records.len(),
        all.keys(),
        crashes.len()
    );
    let across_lifetimes = pages.values().filter(|(_, l)| l.len() > 1).count();
    let most = pages.values().map(|(n, _)| *n).max().unwrap_or(0);
    println!(
        "{} distinct (key, page) pairs; {across_lifetimes} sealed in more than one lifetime; \
         the most rewritten page was sealed {most} times",
        pages.len()
    );
    println!(
        "raw seals: gcm {} cbc {}; repeats {}; overlapping counter blocks {}",
        all.seals(Mode::Gcm),
        all.seals(Mode::Cbc),
        repeats.len(),
        overlaps.len()
    );

    assert!(
        repeats.is_empty(),
        "{} (key, IV) pairs used twice; the first: {:#?}",
        repeats.len(),
        &repeats[..repeats.len().min(5)]
    );
    assert!(
        overlaps.is_empty(),
        "{} AES input blocks used twice under one key; the first: {:#?}",
        overlaps.len(),
        &overlaps[..overlaps.len().min(5)]
    );
    for (kind, mode) in [
        (Kind::Page, Mode::Ctr),
        (Kind::Page, Mode::Cbc),
        (Kind::Page, Mode::Gcm),
        (Kind::Redo, Mode::Gcm),
        (Kind::TempFile, Mode::Gcm),
    ] {
        assert!(
            counts.get(&(kind, mode)).copied().unwrap_or(0) > 0,
            "no {kind:?} encryption in {mode:?} was recorded: {counts:?}"
        );
    }
    for mode in [Mode::Gcm, Mode::Cbc] {
        let recorded = all.records.iter().filter(|r| r.mode == mode).count() as u64;
        assert_eq!(
            recorded,
            all.seals(mode),
            "{mode:?}: the keyring encrypted more often than the call sites recorded"
        );
    }
    assert!(
        across_lifetimes > 0,
        "some page must be sealed under the same key before and after a crash"
    );
    assert!(most > 10, "the small pool should rewrite pages many times");
    assert_eq!(crashes.len() as u64, lifetimes - 1);
}

#[test]
fn negative_control_the_audit_reports_a_repeated_nonce() {
    let _turn = audit_lock();
    let keys = MemoryKeyProvider::new();
    keys.add_random(1, 1, 256).unwrap();
    let mut frame = vec![0u8; PAGE_SIZE];
    page::init_frame(&mut frame, PageType::BtreeLeaf, PageId::new(9, 3), 1);
    let mut stored = vec![0u8; PAGE_SIZE];

    nonce_audit::start();
    // One data key per algorithm (a key has one algorithm in a tablespace).
    for algorithm in Algorithm::ALL {
        let (key, _) = wrap::new_data_key(&keys, 1).unwrap();
        for write_nonce in [41, 42, 41] {
            let seal = Seal::Encrypted {
                key: &key,
                algorithm,
                key_id: 1,
                key_version: 1,
                write_nonce,
            };
            page::encode(&frame, seal, &mut stored).unwrap();
        }
    }
    let (log_key, _) = wrap::new_data_key(&keys, 1).unwrap();
    let header = BlockHeader {
        epoch: 3,
        block_no: 77,
        data_len: 10,
        first_record: Some(0),
        encrypted: true,
    };
    for block_no in [77, 78, 77] {
        let mut redo = [0u8; BLOCK_SIZE];
        BlockHeader { block_no, ..header }.write(&mut redo);
        block::seal(&mut redo, Some(&log_key));
    }
    let audit = nonce_audit::take();

    println!("negative control: {:?}", audit.counts());
    let repeats = audit.repeats();
    let repeated: Vec<(Kind, Mode)> = repeats
        .iter()
        .map(|c| (c.second.kind, c.second.mode))
        .collect();
    assert_eq!(
        repeated,
        vec![
            (Kind::Page, Mode::Ctr),
            (Kind::Page, Mode::Cbc),
            (Kind::Page, Mode::Gcm),
            (Kind::Redo, Mode::Gcm),
        ],
        "{repeats:#?}"
    );
    assert!(audit.overlaps().len() >= repeats.len());
    assert_eq!(
        audit.seals(Mode::Gcm),
        6,
        "three GCM pages, three redo blocks"
    );
    assert_eq!(audit.seals(Mode::Cbc), 3);
}
