//! What a crash can leave half written, and what start-up must make of it
//! (docs/durability.md §4): torn pages, with and without the doublewrite buffer, and torn or
//! garbage redo-log tails.
//!
//! ## The harness
//!
//! Everything runs on a [`SimVfs`]. A workload runs; then [`crash`] cuts the power and takes
//! the disk as a restart finds it, every completed write kept (what `kill -9` leaves). The
//! test damages that crash image the way a torn write would (each case on its own copy:
//! `SimVfs::crash` of a quiescent image is a copy), and `Db::open` recovers from it.
//!
//! ## The cases
//!
//! * **Torn page, doublewrite on.** After a checkpoint, the doublewrite file's last batch
//!   holds the new image of every page the checkpoint wrote. Every home page of that batch
//!   is torn: its first part the new image, the rest what the page held before (cut at a
//!   quarter, a half and three quarters). Restart repairs each from its copy: every value
//!   reads back, `verify` passes, every page of the batch is whole on disk again.
//! * **Torn page, doublewrite off** (the database never had it on). The same tear cannot be
//!   repaired: reads of a torn table page fail with an error naming the file and the page,
//!   never with data; a torn undo-directory page makes `Db::open` fail the same way.
//! * **Torn page, doublewrite turned off after it was on.** The doublewrite file still holds
//!   copies from the earlier session; the page torn by the later session must not be
//!   "repaired" with such a stale copy (ignored: it is, see the test's doc).
//! * **Truncated redo tail.** Committed transactions, no checkpoint after them, crash; the
//!   last segment is cut at every block boundary of the workload's log (every fourth with
//!   the log unencrypted), at every half block of the last 4 KiB, and around every commit's
//!   flush: one byte into it, half a block and one byte before its end, and at its end.
//!   Recovery stops at the cut, and the tables hold exactly the first `m` committed
//!   transactions — all of each, nothing of the rest — with `m` at least every commit whose
//!   flush ended before the cut, at most every commit that started writing before it, and
//!   never falling as the cut moves later. `Db::recovery().log_stop` names the cut's block.
//! * **Garbage redo tail.** Cuts like those (every fourth block boundary), but the bytes
//!   from the cut on are changed at random, or an earlier valid block is copied over the
//!   tail (a block at the wrong position), or the tail holds valid blocks of an *older
//!   epoch* beyond a tail that a later session rewrote (a crash after recovery had resumed
//!   writing inside the torn region). Same expectations.
//! * **Resuming.** After a recovery that stopped at a cut (truncated, or one zeroed block
//!   with the older epoch's blocks left behind it), a second session commits more and
//!   crashes: the next recovery finds the first session's survivors and all of the second.
//!
//! ## The workload of the tail cases
//!
//! Attempt `i` writes keys of both tables (`alpha`, key 1; `beta`, key 5): one to three keys
//! `txn-<i>/<j>` in `alpha` (some values longer than a page), `txn-<i>` in `beta`, the hot
//! key `counter` in `alpha`, and deletes of keys written four and six attempts earlier.
//! Every fifth attempt rolls back; the others commit with `flush_log_at_commit = 1`. Every
//! value starts with `<i>:`, so a value found names the attempt that wrote it. The expected
//! contents after the first `m` commits are `models[m]`; the crash image's tables must equal
//! exactly one of them.

mod common;

use common::{keyring, value_bytes, Rng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use strongbox_engine::doublewrite::{stored_checksum_ok, DOUBLEWRITE_FILE};
use strongbox_engine::io::{Damage, SimVfs};
use strongbox_engine::page::{PageHeader, PageId, PageSize, PageType};
use strongbox_engine::space::{self, SYSTEM_SPACE_ID};
use strongbox_engine::{Db, EncryptTables, FlushAtCommit, Options, Table, TableOptions};
use strongbox_keyring::provider::MemoryKeyProvider;

const DIR: &str = "/db";

/// The disk as a power cut now leaves it, with every completed write kept (as after
/// `kill -9`). `db` is abandoned: its IO fails from now on, so dropping it writes nothing.
fn crash(vfs: &SimVfs, db: Db) -> SimVfs {
    vfs.power_fail_now();
    let disk = vfs.crash(Damage::KeepAll);
    drop(db);
    disk
}

/// An independent copy of the disk (every completed write kept), to damage or open without
/// touching the original.
fn copy(disk: &SimVfs) -> SimVfs {
    disk.crash(Damage::KeepAll)
}

fn path(file: &str) -> PathBuf {
    Path::new(DIR).join(file)
}

/// Contents of one table.
type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

fn scan(db: &Db, table: &Table) -> Result<Rows, String> {
    db.range(table, .., false)
        .and_then(|scan| scan.collect::<Result<Rows, _>>())
        .map_err(|e| format!("a scan of table {:?} failed: {e}", table.name()))
}

// ---- torn pages -----------------------------------------------------------------------------

const TORN_PAGE_SIZE: usize = 16384;
/// Keys per table: several leaves under a branch root at 16 KiB pages.
const TORN_KEYS: usize = 400;
const TORN_TABLES: [&str; 2] = ["t1", "t2"];

fn torn_options(vfs: &SimVfs, keys: &Arc<MemoryKeyProvider>, doublewrite: bool) -> Options {
    Options::new()
        .vfs(Arc::new(vfs.clone()))
        .key_provider(Arc::clone(keys) as _)
        .encrypt_tables(EncryptTables::On)
        .page_size(PageSize::of_buffer(TORN_PAGE_SIZE).expect("16 KiB is a page size"))
        .buffer_pool_size(4 << 20)
        .doublewrite(doublewrite)
}

fn torn_table_options(table: usize) -> TableOptions {
    if table == 0 {
        TableOptions::default()
    } else {
        TableOptions::default().encryption_key_id(common::TABLE_KEY_ID)
    }
}

fn torn_key(i: usize) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

fn torn_value(table: usize, i: usize, version: u64) -> Vec<u8> {
    let mut value = format!("v{version}:{table}/{i}:").into_bytes();
    value.extend(value_bytes(
        version << 32 | (table as u64) << 16 | i as u64,
        80,
    ));
    value
}

/// What the torn-page workload leaves: the crash image, and every file as it was after the
/// first checkpoint (the "old" halves of the torn pages).
struct TornImage {
    disk: SimVfs,
    before: BTreeMap<PathBuf, Vec<u8>>,
    /// Space id → file path, for the system space and the tables.
    files: BTreeMap<u32, PathBuf>,
}

/// Inserts version 1 of every key, checkpoints, snapshots the files, updates every key to
/// version 2, checkpoints again, crashes.
fn torn_workload(keys: &Arc<MemoryKeyProvider>, doublewrite: bool) -> TornImage {
    let vfs = SimVfs::new();
    let db = Db::open(DIR, torn_options(&vfs, keys, doublewrite)).expect("create");
    let tables: Vec<Table> = TORN_TABLES
        .iter()
        .enumerate()
        .map(|(t, name)| db.create_table(name, torn_table_options(t)).unwrap())
        .collect();
    let mut files = BTreeMap::from([(SYSTEM_SPACE_ID, path(&space::file_name(0)))]);
    for table in &tables {
        files.insert(table.space_id(), path(&space::file_name(table.space_id())));
    }
    write_version(&db, &tables, 1);
    db.checkpoint().unwrap();
    let before = vfs
        .list_all()
        .into_iter()
        .filter_map(|p| vfs.contents(&p).map(|bytes| (p, bytes)))
        .collect();
    write_version(&db, &tables, 2);
    db.checkpoint().unwrap();
    TornImage {
        disk: crash(&vfs, db),
        before,
        files,
    }
}

fn write_version(db: &Db, tables: &[Table], version: u64) {
    for chunk in (0..TORN_KEYS).collect::<Vec<_>>().chunks(100) {
        let mut txn = db.begin().unwrap();
        for &i in chunk {
            for (t, table) in tables.iter().enumerate() {
                txn.put(table, &torn_key(i), &torn_value(t, i, version))
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
}

/// Every key of every table holds version `version`, by point read and by scan.
fn check_version(db: &Db, version: u64) {
    for (t, name) in TORN_TABLES.iter().enumerate() {
        let table = db.table(name).unwrap();
        let expected: Rows = (0..TORN_KEYS)
            .map(|i| (torn_key(i), torn_value(t, i, version)))
            .collect();
        assert!(scan(db, &table).unwrap() == expected, "table {name}");
        for (key, value) in &expected {
            assert_eq!(db.get(&table, key).unwrap().as_ref(), Some(value));
        }
    }
    db.verify().expect("verify after recovery");
}

/// One valid slot of the doublewrite file.
struct Slot {
    page: PageId,
    batch: u64,
    image: Vec<u8>,
}

/// The valid slots of `doublewrite.dbw` (FORMAT.md §6), decoded here from the bytes.
fn doublewrite_slots(disk: &SimVfs, page_size: usize) -> Vec<Slot> {
    const FILE_HEADER: usize = 4096;
    const SLOT_HEADER: usize = 24;
    let bytes = disk
        .contents(&path(DOUBLEWRITE_FILE))
        .expect("a doublewrite file");
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let slots = u32_at(&bytes, 20) as usize;
    let slot_len = SLOT_HEADER + page_size;
    assert_eq!(bytes.len(), FILE_HEADER + slots * slot_len);
    (0..slots)
        .map(|i| &bytes[FILE_HEADER + i * slot_len..FILE_HEADER + (i + 1) * slot_len])
        .filter(|slot| {
            slot.iter().any(|&b| b != 0) && u32_at(slot, 0) == crc32fast::hash(&slot[4..])
        })
        .map(|slot| Slot {
            page: PageId::new(u32_at(slot, 4), u32_at(slot, 8)),
            batch: u64::from_le_bytes(slot[16..24].try_into().unwrap()),
            image: slot[SLOT_HEADER..].to_vec(),
        })
        .collect()
}

/// The slots of the highest batch: the only one whose home writes may not have finished.
fn last_batch(disk: &SimVfs, page_size: usize) -> Vec<Slot> {
    let slots = doublewrite_slots(disk, page_size);
    let last = slots.iter().map(|s| s.batch).max().unwrap_or(0);
    slots.into_iter().filter(|s| s.batch == last).collect()
}

/// Page `page_no` of the file bytes `file`, zero-filled past the end (not written yet).
fn page_of(file: &[u8], page_no: u32, page_size: usize) -> Vec<u8> {
    let start = page_no as usize * page_size;
    let mut page = vec![0u8; page_size];
    if start < file.len() {
        let end = file.len().min(start + page_size);
        page[..end - start].copy_from_slice(&file[start..end]);
    }
    page
}

/// Writes `page` of `file` on `disk` as a torn write leaves it: `new[..split]` then
/// `old[split..]`. Returns false (and writes nothing) if that is just `new` again.
fn tear(disk: &SimVfs, file: &Path, page_no: u32, new: &[u8], old: &[u8], split: usize) -> bool {
    let page_size = new.len();
    let mut torn = new[..split].to_vec();
    torn.extend_from_slice(&old[split..]);
    if torn == new {
        return false;
    }
    assert!(
        !stored_checksum_ok(&torn),
        "a torn page must fail its checksum"
    );
    let mut bytes = disk.contents(file).expect("the home file exists");
    let start = page_no as usize * page_size;
    assert!(bytes.len() >= start + page_size, "the new image is home");
    bytes[start..start + page_size].copy_from_slice(&torn);
    disk.set_contents(file, bytes);
    true
}

#[test]
fn torn_pages_are_repaired_from_the_doublewrite_copy() {
    let keys = keyring();
    let image = torn_workload(&keys, true);
    let batch = last_batch(&image.disk, TORN_PAGE_SIZE);
    for table_space in image.files.keys().filter(|&&id| id != SYSTEM_SPACE_ID) {
        assert!(
            batch.iter().any(|s| s.page.space_id == *table_space),
            "the last doublewrite batch should hold pages of space {table_space}"
        );
    }
    for split in [
        TORN_PAGE_SIZE / 4,
        TORN_PAGE_SIZE / 2,
        TORN_PAGE_SIZE * 3 / 4,
    ] {
        let disk = copy(&image.disk);
        let mut torn = Vec::new();
        for slot in &batch {
            let file = &image.files[&slot.page.space_id];
            let home = page_of(
                &disk.contents(file).unwrap(),
                slot.page.page_no,
                TORN_PAGE_SIZE,
            );
            assert!(home == slot.image, "{}: home is the slot image", slot.page);
            let old = page_of(&image.before[file], slot.page.page_no, TORN_PAGE_SIZE);
            if tear(&disk, file, slot.page.page_no, &slot.image, &old, split) {
                torn.push(slot.page);
            }
        }
        assert!(
            torn.iter()
                .filter(|p| p.space_id != SYSTEM_SPACE_ID)
                .count()
                >= 2,
            "split {split}: pages of both tables torn: {torn:?}"
        );

        let db = Db::open(DIR, torn_options(&disk, &keys, true))
            .unwrap_or_else(|e| panic!("split {split}: open with torn pages {torn:?}: {e}"));
        assert_eq!(
            db.recovery().torn_pages_repaired,
            torn.len(),
            "split {split}: every torn page repaired, nothing else"
        );
        check_version(&db, 2);
        db.close().unwrap();
        drop(db);
        for page in &torn {
            let file = disk.contents(&image.files[&page.space_id]).unwrap();
            let stored = page_of(&file, page.page_no, TORN_PAGE_SIZE);
            assert!(
                stored_checksum_ok(&stored),
                "split {split}: {page} is whole again"
            );
        }
        let db = Db::open(DIR, torn_options(&disk, &keys, true)).unwrap();
        check_version(&db, 2);
        db.close().unwrap();
    }
}

/// The leaf pages of `space_id` that the second checkpoint rewrote, with old and new bytes.
fn rewritten_leaves(image: &TornImage, space_id: u32) -> Vec<(u32, Vec<u8>, Vec<u8>)> {
    let file = &image.files[&space_id];
    let new_file = image.disk.contents(file).unwrap();
    (1..(new_file.len() / TORN_PAGE_SIZE) as u32)
        .map(|page_no| {
            (
                page_no,
                page_of(&new_file, page_no, TORN_PAGE_SIZE),
                page_of(&image.before[file], page_no, TORN_PAGE_SIZE),
            )
        })
        .filter(|(_, new, old)| {
            new != old && PageHeader::read(new).is_ok_and(|h| h.page_type == PageType::BtreeLeaf)
        })
        .collect()
}

#[test]
fn torn_pages_without_doublewrite_are_reported_as_corruption_naming_the_page() {
    let keys = keyring();
    let image = torn_workload(&keys, false);
    assert!(
        doublewrite_slots(&image.disk, TORN_PAGE_SIZE).is_empty(),
        "with doublewrite off from the start, no slot was ever written"
    );
    let table_spaces: Vec<u32> = image
        .files
        .keys()
        .copied()
        .filter(|&id| id != SYSTEM_SPACE_ID)
        .collect();
    let mut cases = 0;
    for (t, &space_id) in table_spaces.iter().enumerate() {
        let file_name = space::file_name(space_id);
        let leaves = rewritten_leaves(&image, space_id);
        assert!(leaves.len() >= 2, "{file_name}: leaves were rewritten");
        for (page_no, new, old) in leaves {
            let disk = copy(&image.disk);
            assert!(tear(
                &disk,
                &image.files[&space_id],
                page_no,
                &new,
                &old,
                TORN_PAGE_SIZE / 2
            ));
            // "<path>/space-<id>.sbd: space <id> page <n>: checksum mismatch (...): the page
            // is damaged": corruption, not a wrong key, named by file and page.
            let names_the_page = |message: &str| {
                message.contains(&file_name)
                    && message.contains(&format!("page {page_no}: checksum mismatch"))
            };
            let db = Db::open(DIR, torn_options(&disk, &keys, false))
                .unwrap_or_else(|e| panic!("open with {file_name} page {page_no} torn: {e}"));
            let table = db.table(TORN_TABLES[t]).unwrap();
            let mut failed = 0;
            for i in 0..TORN_KEYS {
                match db.get(&table, &torn_key(i)) {
                    Ok(found) => assert_eq!(
                        found,
                        Some(torn_value(t, i, 2)),
                        "{file_name} page {page_no} torn: key {i} must read right or fail"
                    ),
                    Err(e) => {
                        let message = e.to_string();
                        assert!(names_the_page(&message), "{message}");
                        failed += 1;
                    }
                }
            }
            assert!(
                failed > 0,
                "{file_name} page {page_no}: some key lives on it"
            );
            let scanned = scan(&db, &table).expect_err("a scan crosses the torn page");
            assert!(names_the_page(&scanned), "{scanned}");
            let verified = db.verify().expect_err("verify finds the torn page");
            assert!(names_the_page(&verified.to_string()), "{verified}");
            // The other table is untouched.
            let other = db.table(TORN_TABLES[1 - t]).unwrap();
            assert_eq!(scan(&db, &other).unwrap().len(), TORN_KEYS);
            drop(db);
            cases += 1;
        }
    }
    assert!(cases >= 4);

    // A torn undo-directory page (system space page 2) stops the open, naming it.
    let system = &image.files[&SYSTEM_SPACE_ID];
    let new = page_of(&image.disk.contents(system).unwrap(), 2, TORN_PAGE_SIZE);
    let old = page_of(&image.before[system], 2, TORN_PAGE_SIZE);
    let disk = copy(&image.disk);
    assert!(tear(&disk, system, 2, &new, &old, TORN_PAGE_SIZE / 2));
    let error = Db::open(DIR, torn_options(&disk, &keys, false))
        .expect_err("the undo directory is unreadable")
        .to_string();
    assert!(
        error.contains("system.sbd") && error.contains("page 2: checksum mismatch"),
        "{error}"
    );
}

/// A database used with the doublewrite on, then reopened with it off. The doublewrite file
/// keeps the copies of the earlier session. The later session updates a page, checkpoints,
/// updates it again, and crashes while the next checkpoint writes it home (torn: new first
/// half, the previous checkpoint's second half). Recovery must not restore the earlier
/// session's stale copy and redo from the later checkpoint on top of it: that silently
/// brings back values from before the later session's first checkpoint. Expected: the
/// torn page reported as corruption (or the right values); never stale ones.
#[test]
fn stale_doublewrite_copies_from_an_earlier_session_are_not_restored() {
    let keys = keyring();
    let vfs = SimVfs::new();
    let on = torn_options(&vfs, &keys, true);
    let db = Db::open(DIR, on).unwrap();
    let table = db.create_table("t", TableOptions::default()).unwrap();
    let space_file = path(&space::file_name(table.space_id()));
    let small = |i: usize, version: u64| torn_value(0, i, version)[..40].to_vec();
    let mut txn = db.begin().unwrap();
    for i in 0..20 {
        txn.put(&table, &torn_key(i), &small(i, 1)).unwrap();
    }
    txn.commit().unwrap();
    db.checkpoint().unwrap();
    let disk = crash(&vfs, db);
    let root = PageId::new(table.space_id(), 1);
    assert!(
        last_batch(&disk, TORN_PAGE_SIZE)
            .iter()
            .any(|s| s.page == root),
        "session 1 leaves a copy of the table's root leaf in the last batch"
    );

    // Session 2, doublewrite off: keys 0..10 to version 2, checkpoint; keys 10..20 to
    // version 3, committed but not checkpointed.
    let vfs = disk;
    let off = torn_options(&vfs, &keys, false);
    let db = Db::open(DIR, off.clone()).unwrap();
    let table = db.table("t").unwrap();
    let mut txn = db.begin().unwrap();
    for i in 0..10 {
        txn.put(&table, &torn_key(i), &small(i, 2)).unwrap();
    }
    txn.commit().unwrap();
    db.checkpoint().unwrap();
    let checkpointed = page_of(&vfs.contents(&space_file).unwrap(), 1, TORN_PAGE_SIZE);
    let mut txn = db.begin().unwrap();
    for i in 10..20 {
        txn.put(&table, &torn_key(i), &small(i, 3)).unwrap();
    }
    txn.commit().unwrap();
    let before_checkpoint = copy(&vfs);
    db.checkpoint().unwrap();
    let newest = page_of(&vfs.contents(&space_file).unwrap(), 1, TORN_PAGE_SIZE);
    drop(crash(&vfs, db));

    // The crash came while that last checkpoint wrote the root leaf home.
    let disk = before_checkpoint;
    assert!(tear(
        &disk,
        &space_file,
        1,
        &newest,
        &checkpointed,
        TORN_PAGE_SIZE / 2
    ));
    let file_name = space::file_name(table.space_id());
    let names_the_page = |e: &strongbox_engine::Error| {
        e.to_string().contains(&file_name) && e.to_string().contains("page 1:")
    };
    for doublewrite in [false, true] {
        let disk = copy(&disk);
        let db = match Db::open(DIR, torn_options(&disk, &keys, doublewrite)) {
            Ok(db) => db,
            Err(e) => {
                assert!(names_the_page(&e), "{e}");
                continue;
            }
        };
        let table = db.table("t").unwrap();
        for i in 0..20 {
            let expected = small(i, if i < 10 { 2 } else { 3 });
            let read = db.get(&table, &torn_key(i));
            if let Err(e) = &read {
                assert!(names_the_page(e), "{e}");
            }
            if let Ok(found) = read {
                let shown = |v: &[u8]| String::from_utf8_lossy(&v[..6]).into_owned();
                assert!(
                    found.as_deref() == Some(&expected[..]),
                    "reopened with doublewrite {doublewrite}: key {i} reads {:?}, committed \
                     value {:?}",
                    found.as_deref().map(shown),
                    shown(&expected)
                );
            }
        }
    }
}

// ---- redo-log tails -------------------------------------------------------------------------

const TAIL_PAGE_SIZE: usize = 4096;
const TAIL_LOG_FILE_SIZE: u64 = 4 << 20;
const BLOCK: usize = 512;
const TAIL_TABLES: [&str; 2] = ["alpha", "beta"];
/// Attempts of the tail workload; every fifth rolls back.
const TAIL_ATTEMPTS: u64 = 60;

fn tail_options(vfs: &SimVfs, keys: &Arc<MemoryKeyProvider>, encrypt_log: bool) -> Options {
    Options::new()
        .vfs(Arc::new(vfs.clone()))
        .key_provider(Arc::clone(keys) as _)
        .encrypt_tables(EncryptTables::On)
        .encrypt_log(encrypt_log)
        .page_size(PageSize::of_buffer(TAIL_PAGE_SIZE).expect("4 KiB is a page size"))
        .buffer_pool_size(2 << 20)
        .log_file_size(TAIL_LOG_FILE_SIZE)
        .flush_log_at_commit(FlushAtCommit::EveryCommit)
}

fn rolls_back(attempt: u64) -> bool {
    attempt % 5 == 3
}

/// One write: put `value` into table `table`, or delete when it is `None`.
type Write = (usize, Vec<u8>, Option<Vec<u8>>);

/// Everything attempt `i` writes, in order.
fn tail_writes(i: u64) -> Vec<Write> {
    let mut rng = Rng::new(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let put = |table: usize, key: String, len: usize| -> Write {
        let mut value = format!("{i}:{key}:").into_bytes();
        value.extend(value_bytes(i << 8 | table as u64, len));
        (table, key.into_bytes(), Some(value))
    };
    let mut out = Vec::new();
    for j in 0..1 + rng.below(3) {
        let len = if rng.percent(10) {
            TAIL_PAGE_SIZE + rng.below(4000)
        } else {
            rng.below(600)
        };
        out.push(put(0, format!("txn-{i:04}/{j}"), len));
    }
    out.push(put(1, format!("txn-{i:04}"), 20 + rng.below(200)));
    out.push(put(0, "counter".into(), 0));
    if i >= 4 {
        out.push((0, format!("txn-{:04}/0", i - 4).into_bytes(), None));
    }
    if i >= 6 {
        out.push((1, format!("txn-{:04}", i - 6).into_bytes(), None));
    }
    out
}

/// The contents of both tables.
type Tables = [Rows; 2];

fn apply(model: &mut Tables, writes: &[Write]) {
    for (table, key, value) in writes {
        match value {
            Some(value) => model[*table].insert(key.clone(), value.clone()),
            None => model[*table].remove(key),
        };
    }
}

/// Runs `writes` in one transaction and commits or rolls it back.
fn run(db: &Db, tables: &[Table], writes: &[Write], commit: bool) {
    let mut txn = db.begin().unwrap();
    for (table, key, value) in writes {
        match value {
            Some(value) => txn.put(&tables[*table], key, value).unwrap(),
            None => drop(txn.delete(&tables[*table], key).unwrap()),
        }
    }
    if commit {
        txn.commit().unwrap();
    } else {
        txn.rollback().unwrap();
    }
}

fn scan_tables(db: &Db) -> Result<Tables, String> {
    let mut found = Tables::default();
    for (t, name) in TAIL_TABLES.iter().enumerate() {
        let table = db.table(name).map_err(|e| e.to_string())?;
        found[t] = scan(db, &table)?;
    }
    Ok(found)
}

/// Where one commit's log writes lie in the last segment: its length before `commit` was
/// called and after it returned. The commit's batch ends after `before` (it was appended
/// later, and a written block is never written again) and at or before `after` (the commit
/// returned only once it was durable). Usually `after - before` is the commit's own flush;
/// a page cleaner pass in between can only widen it.
#[derive(Debug, Clone, Copy)]
struct CommitSpan {
    before: usize,
    after: usize,
}

/// The crash image of the tail workload and what is known about its log.
struct TailImage {
    disk: SimVfs,
    keys: Arc<MemoryKeyProvider>,
    encrypt_log: bool,
    /// The last segment (the only one the workload wrote).
    segment: PathBuf,
    /// The number of its first block in the log.
    first_block: u64,
    /// Its bytes in the crash image.
    log: Vec<u8>,
    /// Its length when the workload began (after the last checkpoint).
    start: usize,
    commits: Vec<CommitSpan>,
    /// `models[m]`: the tables after the first `m` commits.
    models: Vec<Tables>,
}

/// The highest-numbered redo segment on `vfs` and its sequence number.
fn last_segment(vfs: &SimVfs) -> (PathBuf, u64) {
    vfs.list_all()
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let seq = name
                .strip_prefix("redo-")?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((p, seq))
        })
        .max_by_key(|(_, seq)| *seq)
        .expect("a redo segment")
}

fn segment_len(vfs: &SimVfs, segment: &Path) -> usize {
    vfs.contents(segment).map_or(0, |bytes| bytes.len())
}

fn tail_workload(encrypt_log: bool) -> TailImage {
    let keys = keyring();
    let vfs = SimVfs::new();
    let db = Db::open(DIR, tail_options(&vfs, &keys, encrypt_log)).expect("create");
    let tables = vec![
        db.create_table(TAIL_TABLES[0], TableOptions::default())
            .unwrap(),
        db.create_table(
            TAIL_TABLES[1],
            TableOptions::default().encryption_key_id(common::TABLE_KEY_ID),
        )
        .unwrap(),
    ];
    db.checkpoint().unwrap();
    let checkpoints = db.stats().log.checkpoints;
    let (segment, seq) = last_segment(&vfs);
    let start = segment_len(&vfs, &segment);
    let mut models = vec![Tables::default()];
    let mut commits = Vec::new();
    for i in 0..TAIL_ATTEMPTS {
        let writes = tail_writes(i);
        if rolls_back(i) {
            run(&db, &tables, &writes, false);
            continue;
        }
        let before = segment_len(&vfs, &segment);
        run(&db, &tables, &writes, true);
        let after = segment_len(&vfs, &segment);
        assert!(
            after > before,
            "attempt {i}: commit returned before its batch reached the log file"
        );
        commits.push(CommitSpan { before, after });
        let mut model = models.last().unwrap().clone();
        apply(&mut model, &writes);
        models.push(model);
    }
    assert_eq!(
        db.stats().log.checkpoints,
        checkpoints,
        "no checkpoint may fall inside the workload: recovery must scan all of it"
    );
    assert_eq!(
        last_segment(&vfs).1,
        seq,
        "the workload stays in one segment"
    );
    let disk = crash(&vfs, db);
    let log = disk.contents(&segment).unwrap();
    assert!(log.len() >= commits.last().unwrap().after);
    TailImage {
        disk,
        keys,
        encrypt_log,
        segment,
        first_block: seq * TAIL_LOG_FILE_SIZE / BLOCK as u64,
        log,
        start,
        commits,
        models,
    }
}

/// What one recovery found; the database is still open.
struct Recovery {
    disk: SimVfs,
    db: Db,
    present: usize,
    log_stop: String,
}

impl TailImage {
    /// Commits that must survive a cut at byte `cut` of the segment: those whose commit had
    /// returned when the segment was no longer than that.
    fn surely_present(&self, cut: usize) -> usize {
        self.commits.iter().filter(|c| c.after <= cut).count()
    }

    /// Commits that may survive: those whose batch was appended while the segment was
    /// shorter than `cut`.
    fn possibly_present(&self, cut: usize) -> usize {
        self.commits.iter().filter(|c| c.before < cut).count()
    }

    /// Block boundaries every `step` blocks from the workload's start to the end of the log,
    /// every boundary and mid-block point of the last 4 KiB, and around each commit: the
    /// segment length before it, a byte and a block past that, half a block and a byte
    /// before its end, and its end.
    fn cuts(&self, step: usize) -> Vec<usize> {
        let end = self.log.len();
        let mut cuts: Vec<usize> = (self.start..=end)
            .filter(|c| c % (BLOCK * step) == 0 || (*c + 4096 >= end && c % (BLOCK / 2) == 0))
            .collect();
        cuts.push(end);
        for c in &self.commits {
            cuts.extend([c.before, c.before + 1, c.before + BLOCK]);
            cuts.extend([c.after - BLOCK / 2, c.after - 1, c.after]);
        }
        cuts.retain(|&c| (self.start..=end).contains(&c));
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    /// The global number of the block at byte `offset` of the segment.
    fn block_at(&self, offset: usize) -> u64 {
        self.first_block + (offset / BLOCK) as u64
    }

    /// Recovers a copy of the crash image whose last segment holds `segment`, and checks
    /// that the tables hold exactly the first `m` commits with `m` in `at_least..=at_most`.
    fn recover(&self, what: &str, segment: Vec<u8>, at_least: usize, at_most: usize) -> Recovery {
        let disk = copy(&self.disk);
        disk.set_contents(&self.segment, segment);
        let db = Db::open(DIR, tail_options(&disk, &self.keys, self.encrypt_log))
            .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
        let found = scan_tables(&db).unwrap_or_else(|e| panic!("{what}: {e}"));
        let present = self
            .models
            .iter()
            .position(|model| *model == found)
            .unwrap_or_else(|| panic!("{what}: {}", explain(&found, &self.models)));
        assert!(
            (at_least..=at_most).contains(&present),
            "{what}: {present} commits recovered; between {at_least} and {at_most} expected"
        );
        db.verify()
            .unwrap_or_else(|e| panic!("{what}: verify: {e}"));
        let log_stop = db.recovery().log_stop.expect("an existing database");
        Recovery {
            disk,
            db,
            present,
            log_stop,
        }
    }

    /// `recover` with the bounds of a log whose valid part ends at byte `cut`.
    fn recover_cut(&self, what: &str, segment: Vec<u8>, cut: usize) -> Recovery {
        self.recover(
            what,
            segment,
            self.surely_present(cut),
            self.possibly_present(cut),
        )
    }
}

/// Says which attempts the found values come from and which prefix of the commits is
/// closest: enough to tell a partial transaction from a lost or a resurrected one.
fn explain(found: &Tables, models: &[Tables]) -> String {
    let writers = |tables: &Tables| -> Vec<u64> {
        let mut ids: Vec<u64> = tables
            .iter()
            .flat_map(|rows| rows.values())
            .filter_map(|v| {
                let end = v.iter().position(|&b| b == b':')?;
                std::str::from_utf8(&v[..end]).ok()?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let differences = |model: &Tables| -> usize {
        (0..2)
            .map(|t| {
                let (a, b) = (&found[t], &model[t]);
                a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).count()
                    + b.keys().filter(|k| !a.contains_key(*k)).count()
            })
            .sum()
    };
    let closest = (0..models.len())
        .min_by_key(|&m| differences(&models[m]))
        .unwrap_or(0);
    format!(
        "the tables match no prefix of the commits (a partial, lost or resurrected \
         transaction): they hold values of attempts {:?}; the closest prefix, the first \
         {closest} commits ({} keys differ), holds values of attempts {:?}",
        writers(found),
        differences(&models[closest]),
        writers(&models[closest])
    )
}

/// `log[..cut]` followed by `len - cut` bytes from `fill`.
fn replaced_tail(log: &[u8], cut: usize, fill: impl FnMut(usize) -> u8) -> Vec<u8> {
    let mut bytes = log[..cut].to_vec();
    bytes.extend((cut..log.len()).map(fill));
    bytes
}

#[test]
fn truncated_redo_tail_recovers_exactly_the_commits_before_the_cut() {
    for encrypt_log in [true, false] {
        let image = tail_workload(encrypt_log);
        let cuts = image.cuts(if encrypt_log { 1 } else { 4 });
        let mut previous = 0;
        for &cut in &cuts {
            let what = format!("encrypt_log {encrypt_log}: segment truncated at byte {cut}");
            let recovery = image.recover_cut(&what, image.log[..cut].to_vec(), cut);
            assert!(
                recovery.present >= previous,
                "{what}: {} commits, but {previous} survived a shorter log",
                recovery.present
            );
            previous = recovery.present;
            let why = if cut.is_multiple_of(BLOCK) {
                "end of segment file"
            } else {
                "partial block"
            };
            let stop = format!("(block {}): {why}", image.block_at(cut));
            assert!(
                recovery.log_stop.contains(&stop),
                "{what}: log_stop is {:?}, expected {stop:?}",
                recovery.log_stop
            );
            recovery.db.close().unwrap();
        }
        assert_eq!(
            previous,
            image.commits.len(),
            "the whole log keeps every commit"
        );
        assert!(cuts.len() > 100, "{} cut points", cuts.len());
    }
}

#[test]
fn garbage_redo_tail_recovers_exactly_the_commits_before_it() {
    for encrypt_log in [true, false] {
        let image = tail_workload(encrypt_log);
        let mut rng = Rng::new(0x5EED);
        let mut previous = 0;
        for cut in image.cuts(4) {
            if cut == image.log.len() {
                continue;
            }
            let what = format!("encrypt_log {encrypt_log}: random bytes from byte {cut} on");
            // Every byte changes (a random byte could happen to be the one it replaces).
            let mut segment = replaced_tail(&image.log, cut, |at| {
                image.log[at] ^ (1 + rng.below(255) as u8)
            });
            segment.extend((0..2 * BLOCK).map(|_| rng.next_u64() as u8));
            let recovery = image.recover_cut(&what, segment, cut);
            assert!(recovery.present >= previous, "{what}");
            previous = recovery.present;
            let stop = format!("(block {}): checksum mismatch", image.block_at(cut));
            assert!(
                recovery.log_stop.contains(&stop),
                "{what}: log_stop is {:?}, expected {stop:?}",
                recovery.log_stop
            );
            recovery.db.close().unwrap();
        }
    }
}

#[test]
fn earlier_valid_blocks_copied_over_the_tail_end_the_log_there() {
    let image = tail_workload(true);
    let mut previous = 0;
    for (n, cut) in image
        .cuts(4)
        .into_iter()
        .filter(|c| c.is_multiple_of(BLOCK) && *c < image.log.len())
        .enumerate()
    {
        // The tail shifted by one to three blocks: every block from the cut on is a valid
        // block of this log and epoch, at the wrong position.
        let shift = BLOCK * (1 + n % 3);
        let what = format!("blocks from byte {} copied to byte {cut} on", cut - shift);
        let segment = replaced_tail(&image.log, cut, |at| image.log[at - shift]);
        let recovery = image.recover_cut(&what, segment, cut);
        assert!(recovery.present >= previous, "{what}");
        previous = recovery.present;
        let stop = format!(
            "(block {}): block belongs at block {}",
            image.block_at(cut),
            image.block_at(cut - shift)
        );
        assert!(
            recovery.log_stop.contains(&stop),
            "{what}: log_stop is {:?}, expected {stop:?}",
            recovery.log_stop
        );
        recovery.db.close().unwrap();
    }
}

/// Small writes of a session after recovery: they must fit in the blocks the cut freed.
fn later_writes(k: u64) -> Vec<Write> {
    (0..2)
        .map(|t| {
            let key = format!("later-{k}");
            let value = format!("{}:{key}", 1000 + k).into_bytes();
            (t, key.into_bytes(), Some(value))
        })
        .collect()
}

/// After a recovery that stopped at `cut`, a second session commits a few transactions and
/// crashes; the third open must find the first session's surviving commits and all of the
/// second session's. With `stale_tail`, the blocks past the damaged one were left intact
/// on disk: the open that stopped at the damage must cut them away before the new epoch
/// writes (`wal` `segment::truncate_from`), so after the second session's crash no block of
/// the older epoch follows the newer ones and recovery ends after the second session's own
/// blocks.
fn resume_after_damage(image: &TailImage, cut: usize, stale_tail: bool) {
    assert!(cut.is_multiple_of(BLOCK));
    let what = format!("damage at byte {cut} (stale tail kept: {stale_tail})");
    // The one block is zeroed (a sector the crash never wrote while later ones reached the
    // disk), not garbled: a block failing its checksum with valid blocks after it is damage,
    // which recovery refuses (`wal` recovery, DamagedBlock; tests/corruption.rs).
    let segment = if stale_tail {
        replaced_tail(&image.log, cut, |at| {
            if at < cut + BLOCK {
                0
            } else {
                image.log[at]
            }
        })
    } else {
        image.log[..cut].to_vec()
    };
    let Recovery {
        disk, db, present, ..
    } = image.recover_cut(&what, segment, cut);
    let written_at_open = db.stats().log.bytes_written;
    let tables: Vec<Table> = TAIL_TABLES.iter().map(|n| db.table(n).unwrap()).collect();
    let mut model = image.models[present].clone();
    for k in 0..3 {
        let writes = later_writes(k);
        run(&db, &tables, &writes, true);
        apply(&mut model, &writes);
    }
    run(&db, &tables, &later_writes(99), false);
    let written = db.stats().log.bytes_written as usize;
    if stale_tail {
        assert!(
            cut + written + BLOCK <= image.log.len(),
            "{what}: the second session ({written_at_open} bytes at open, {written} in all) \
             must leave blocks of the first one after its own"
        );
    }
    let disk = crash(&disk, db);
    let db = Db::open(DIR, tail_options(&disk, &image.keys, image.encrypt_log))
        .unwrap_or_else(|e| panic!("{what}: recovery after the second session: {e}"));
    let found = scan_tables(&db).unwrap();
    assert!(
        found == model,
        "{what}: after the second session: {}",
        explain(&found, &[model.clone()])
    );
    db.verify().unwrap();
    let log_stop = db.recovery().log_stop.unwrap();
    if stale_tail {
        assert!(
            !log_stop.contains("stale block of epoch"),
            "{what}: a block of the first session survived past the second's: {log_stop:?}"
        );
    }
    db.close().unwrap();
}

#[test]
fn blocks_beyond_a_recovered_tail_are_cut_away_and_never_replayed() {
    let image = tail_workload(true);
    let range = image.log.len() - image.start;
    for eighth in 1..7 {
        let cut = (image.start + range * eighth / 8) / BLOCK * BLOCK;
        resume_after_damage(&image, cut, true);
    }
}

#[test]
fn the_log_resumes_after_a_cut_and_a_second_crash_keeps_both_sessions() {
    let image = tail_workload(false);
    let range = image.log.len() - image.start;
    for eighth in [1, 4, 7] {
        let cut = (image.start + range * eighth / 8) / BLOCK * BLOCK;
        resume_after_damage(&image, cut, false);
    }
}
