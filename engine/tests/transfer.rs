//! Export and import of a table with a transfer key (`engine/src/transfer.rs`): a table moves
//! between two databases with different keyrings, nothing readable is left on the way, and
//! every bad export is refused with the destination unchanged.

mod common;

use common::assert_contents;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use strongbox_engine::io::{Damage, SimVfs, StdVfs, Vfs};
use strongbox_engine::page::{PageHeader, PageSize};
use strongbox_engine::space::SpaceFile;
use strongbox_engine::{
    Db, EncryptTables, Encrypted, Error, ImportOptions, Options, RotationPolicy, Table,
    TableOptions,
};
use strongbox_keyring::provider::{FileKeyProvider, MemoryKeyProvider};
use strongbox_keyring::source::KeyFileSource;

const PAGE: usize = 4096;
/// Every value contains it; it must never appear in a file of an encrypted table's export,
/// nor in the destination's files.
const MARKER: &[u8] = b"TRANSFER-PLAINTEXT-MARKER";
const TABLE_KEY: u32 = 5;

/// A fresh keyring with random keys under `ids`: two calls give two different keyrings.
fn keyring(ids: &[u32]) -> Arc<MemoryKeyProvider> {
    let keys = MemoryKeyProvider::new();
    for &id in ids {
        keys.add_random(id, 1, 256).unwrap();
    }
    Arc::new(keys)
}

fn options(keys: &Arc<MemoryKeyProvider>) -> Options {
    Options::new()
        .key_provider(Arc::clone(keys) as _)
        .encrypt_tables(EncryptTables::On)
        .page_size(PageSize::of_buffer(PAGE).unwrap())
        .buffer_pool_size(64 * PAGE)
        .log_file_size(1 << 20)
        .encryption_threads(0)
}

fn open(dir: &Path, keys: &Arc<MemoryKeyProvider>) -> Db {
    Db::open(dir, options(keys)).unwrap()
}

fn value(i: u32) -> Vec<u8> {
    let mut value = MARKER.to_vec();
    value.extend_from_slice(format!("-{i}").as_bytes());
    if i.is_multiple_of(97) {
        // Overflow values: several pages each.
        value = value.repeat(400);
    }
    value
}

/// `rows` rows in batches of 500 per transaction, then a few hundred deleted (so the
/// copied space has a free list); returns the model.
fn fill(db: &Db, table: &Table, rows: u32) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for batch in (0..rows).collect::<Vec<_>>().chunks(500) {
        let mut txn = db.begin().unwrap();
        for &i in batch {
            let key = format!("key-{i:06}").into_bytes();
            txn.put(table, &key, &value(i)).unwrap();
            model.insert(key, value(i));
        }
        txn.commit().unwrap();
    }
    let mut txn = db.begin().unwrap();
    for i in (rows / 3..rows / 2).step_by(2) {
        let key = format!("key-{i:06}").into_bytes();
        txn.delete(table, &key).unwrap();
        model.remove(&key);
    }
    txn.commit().unwrap();
    model
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir` (recursively) that contains the marker.
fn files_with_marker(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_with_marker(&path));
        } else if contains(&std::fs::read(&path).unwrap(), MARKER) {
            found.push(path);
        }
    }
    found
}

/// What must not change when an import fails: the tables and the data directory's files.
fn snapshot(db: &Db) -> (Vec<(String, u32)>, Vec<String>) {
    let tables = db
        .tables()
        .unwrap()
        .into_iter()
        .map(|info| (info.name, info.space_id))
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(db.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sbd") || name.ends_with(".tmp"))
        .collect();
    files.sort();
    (tables, files)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A source database in `root/src` with the encrypted table `secrets` (key 5), exported
/// into `root/out`; the source is closed afterwards.
fn exported_secrets(root: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let keys = keyring(&[1, 2, TABLE_KEY]);
    let src = open(&root.join("src"), &keys);
    let table = src
        .create_table(
            "secrets",
            TableOptions::default().encryption_key_id(TABLE_KEY),
        )
        .unwrap();
    let model = fill(&src, &table, 600);
    src.export_table("secrets", &root.join("out")).unwrap();
    src.close().unwrap();
    model
}

#[test]
fn an_encrypted_table_moves_to_a_database_with_other_keys() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let src_keys = keyring(&[1, 2, TABLE_KEY]);
    let src = open(&root.path().join("src"), &src_keys);
    let table = src
        .create_table(
            "secrets",
            TableOptions::default().encryption_key_id(TABLE_KEY),
        )
        .unwrap();
    let model = fill(&src, &table, 3000);
    let source_pages = table.info().pages;

    let report = src.export_table("secrets", &out).unwrap();
    assert!(report.encrypted);
    assert_eq!(report.key_id, TABLE_KEY);
    assert_eq!(report.pages, source_pages);
    let sbtk = report
        .transfer_key_file
        .clone()
        .expect("an encrypted export has a key");
    assert_eq!(sbtk, out.join("secrets.sbtk"));
    assert_eq!(mode(&sbtk), 0o600, "the transfer key is private");
    assert!(
        files_with_marker(&out).is_empty(),
        "plaintext in the export: {:?}",
        files_with_marker(&out)
    );
    assert_eq!(
        std::fs::metadata(&report.data_file).unwrap().len(),
        u64::from(source_pages) * PAGE as u64
    );

    // The copy is a tablespace its transfer key opens, and the source keyring does not.
    let page_size = PageSize::of_buffer(PAGE).unwrap();
    let (transfer, _) = FileKeyProvider::open(KeyFileSource::plain(&sbtk)).unwrap();
    let copy = SpaceFile::open(
        &StdVfs,
        &report.data_file,
        report.space_id,
        page_size,
        Some(&transfer),
        Default::default(),
    )
    .unwrap();
    let mut frame = vec![0u8; PAGE];
    copy.read_page(1, &mut frame).unwrap();
    let copied = copy.header();
    assert!(
        copied.free_count > 0,
        "the deletes left a free list to carry over"
    );
    drop(copy);
    let with_source_keys = SpaceFile::open(
        &StdVfs,
        &report.data_file,
        report.space_id,
        page_size,
        Some(src_keys.as_ref()),
        Default::default(),
    );
    assert!(matches!(
        with_source_keys,
        Err(Error::KeyUnavailable { .. })
    ));

    // The source goes on as before.
    src.put(&table, b"after-export", b"still writable").unwrap();
    src.verify().unwrap();
    src.close().unwrap();

    let dst_dir = root.path().join("dst");
    let dst_keys = keyring(&[1, 2, TABLE_KEY]);
    let dst = open(&dst_dir, &dst_keys);
    let imported = dst.import_table(&out, None).unwrap();
    assert_eq!(imported.info.name, "secrets");
    assert!(imported.info.encrypted);
    assert_eq!(imported.info.key_id, TABLE_KEY);
    assert_eq!(imported.info.pages, source_pages);
    assert_eq!(imported.source_table, "secrets");
    assert_eq!(imported.pages_copied, source_pages - 1);
    assert_eq!(
        imported.transfer_key_deleted.as_deref(),
        Some(sbtk.as_path())
    );
    assert!(
        !sbtk.exists(),
        "the transfer key is deleted after the import"
    );
    assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
    assert_contents(&dst, &imported.table, &model);
    dst.verify().unwrap();
    let space_id = imported.info.space_id;
    dst.close().unwrap();
    drop(dst);

    // The free list came along; imported pages carry the new space id and LSN 0; nothing
    // readable is on disk.
    let space_path = dst_dir.join(format!("space-{space_id}.sbd"));
    let reopened = SpaceFile::open(
        &StdVfs,
        &space_path,
        space_id,
        page_size,
        Some(dst_keys.as_ref()),
        Default::default(),
    )
    .unwrap();
    assert_eq!(reopened.header().alloc(), copied.alloc());
    drop(reopened);
    let stored = std::fs::read(&space_path).unwrap();
    let root_page = PageHeader::read(&stored[PAGE..2 * PAGE]).unwrap();
    assert_eq!((root_page.space_id, root_page.lsn), (space_id, 0));
    assert_eq!(root_page.key_id, TABLE_KEY);
    assert!(
        files_with_marker(&dst_dir).is_empty(),
        "plaintext in the destination: {:?}",
        files_with_marker(&dst_dir)
    );

    // It survives a restart and takes new writes like any table.
    let dst = open(&dst_dir, &dst_keys);
    let table = dst.table("secrets").unwrap();
    assert_contents(&dst, &table, &model);
    let mut model = model;
    let mut txn = dst.begin().unwrap();
    for i in 5000..5200 {
        let key = format!("key-{i:06}").into_bytes();
        txn.put(&table, &key, &value(i)).unwrap();
        model.insert(key, value(i));
    }
    txn.commit().unwrap();
    dst.close().unwrap();
    drop(dst);
    let dst = open(&dst_dir, &dst_keys);
    assert_contents(&dst, &dst.table("secrets").unwrap(), &model);
    dst.verify().unwrap();
    dst.close().unwrap();
}

#[test]
fn an_unencrypted_table_moves_without_a_transfer_key() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let src = open(&root.path().join("src"), &keyring(&[1, 2]));
    let table = src
        .create_table("open", TableOptions::default().encrypted(Encrypted::No))
        .unwrap();
    let model = fill(&src, &table, 800);
    let report = src.export_table("open", &out).unwrap();
    assert!(!report.encrypted);
    assert_eq!(report.transfer_key_file, None);
    assert!(!out.join("open.sbtk").exists());
    src.close().unwrap();

    // encrypt_tables = force refuses it, changing nothing.
    let forced_dir = root.path().join("forced");
    let forced = Db::open(
        &forced_dir,
        options(&keyring(&[1, 2])).encrypt_tables(EncryptTables::Force),
    )
    .unwrap();
    let before = snapshot(&forced);
    let error = forced.import_table(&out, None).unwrap_err();
    assert!(matches!(error, Error::EncryptionForced { .. }), "{error}");
    assert_eq!(snapshot(&forced), before);
    forced.close().unwrap();

    let dst = open(&root.path().join("dst"), &keyring(&[1, 2]));
    let imported = dst.import_table(&out, Some("opened")).unwrap();
    assert_eq!(imported.info.name, "opened");
    assert!(!imported.info.encrypted);
    assert_eq!(imported.transfer_key_deleted, None);
    assert_contents(&dst, &imported.table, &model);
    dst.verify().unwrap();
    dst.close().unwrap();
}

#[test]
fn bad_exports_are_refused_and_the_destination_is_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let model = exported_secrets(root);
    let out = root.join("out");
    // The destination's keyring lacks key 5: imports must name a key id it has.
    let dst = open(&root.join("dst"), &keyring(&[1, 2]));
    let existing = dst
        .create_table("existing", TableOptions::default())
        .unwrap();
    dst.put(&existing, b"k", b"v").unwrap();
    let before = snapshot(&dst);
    let as_key_1 = ImportOptions::default().key_id(1);
    let check_unchanged = |dst: &Db| {
        assert_eq!(snapshot(dst), before);
        assert!(dst.table("secrets").is_err());
    };

    let error = dst.import_table(&out, None).unwrap_err();
    assert!(
        matches!(
            error,
            Error::MissingTableKey {
                key_id: TABLE_KEY,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("key id 5"), "{error}");
    check_unchanged(&dst);

    let error = dst.import_table(&out, Some("existing")).unwrap_err();
    assert!(matches!(error, Error::TableExists(_)), "{error}");
    check_unchanged(&dst);

    // A manifest edited by one bit.
    let edited = root.join("edited");
    copy_dir(&out, &edited);
    flip_byte(&edited.join("secrets.sbmeta"), 20);
    let error = dst.import_table_with(&edited, &as_key_1).unwrap_err();
    assert!(matches!(error, Error::BadExport { .. }), "{error}");
    assert!(error.to_string().contains("checksum mismatch"), "{error}");
    check_unchanged(&dst);

    // Another export's transfer key, then none at all.
    let wrong_key = root.join("wrong-key");
    copy_dir(&out, &wrong_key);
    let other = root.join("other");
    let src = open(&root.join("src2"), &keyring(&[1, 2, TABLE_KEY]));
    src.create_table(
        "secrets",
        TableOptions::default().encryption_key_id(TABLE_KEY),
    )
    .unwrap();
    src.export_table("secrets", &other).unwrap();
    src.close().unwrap();
    std::fs::copy(other.join("secrets.sbtk"), wrong_key.join("secrets.sbtk")).unwrap();
    let error = dst.import_table_with(&wrong_key, &as_key_1).unwrap_err();
    assert!(matches!(error, Error::WrongTransferKey { .. }), "{error}");
    check_unchanged(&dst);
    std::fs::remove_file(wrong_key.join("secrets.sbtk")).unwrap();
    let error = dst.import_table_with(&wrong_key, &as_key_1).unwrap_err();
    assert!(matches!(error, Error::TransferKeyMissing { .. }), "{error}");
    check_unchanged(&dst);

    // A page of the copy damaged: found while copying; the half-made file is removed.
    let damaged = root.join("damaged");
    copy_dir(&out, &damaged);
    flip_byte(&damaged.join("secrets.sbd"), 3 * PAGE + 1000);
    let error = dst.import_table_with(&damaged, &as_key_1).unwrap_err();
    assert!(error.to_string().contains("secrets.sbd"), "{error}");
    check_unchanged(&dst);

    // Page 0 of the copy swapped for another export's: it disagrees with the manifest.
    let swapped = root.join("swapped");
    copy_dir(&out, &swapped);
    let mut bytes = std::fs::read(swapped.join("secrets.sbd")).unwrap();
    bytes[..PAGE].copy_from_slice(&std::fs::read(other.join("secrets.sbd")).unwrap()[..PAGE]);
    std::fs::write(swapped.join("secrets.sbd"), bytes).unwrap();
    let error = dst.import_table_with(&swapped, &as_key_1).unwrap_err();
    assert!(matches!(error, Error::BadExport { .. }), "{error}");
    check_unchanged(&dst);

    // Another page size.
    let big = Db::open(
        root.join("big-pages"),
        options(&keyring(&[1, 2, TABLE_KEY])).page_size(PageSize::of_buffer(8192).unwrap()),
    )
    .unwrap();
    let error = big.import_table(&out, None).unwrap_err();
    assert!(matches!(error, Error::Incompatible { .. }), "{error}");
    assert!(error.to_string().contains("page_size 4096"), "{error}");
    big.close().unwrap();

    // The intact export still imports, under the key id the destination has.
    let imported = dst
        .import_table_with(&out, &ImportOptions::default().key_id(1).name("moved"))
        .unwrap();
    assert_eq!(imported.info.key_id, 1);
    assert_contents(&dst, &imported.table, &model);
    dst.verify().unwrap();
    dst.close().unwrap();
}

#[test]
fn export_waits_for_quiet_and_refuses_what_it_cannot_carry() {
    let root = tempfile::tempdir().unwrap();
    let keys = keyring(&[1, 2, TABLE_KEY]);
    let src = Db::open(
        root.path().join("src"),
        options(&keys).lock_wait_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    let table = src
        .create_table("t", TableOptions::default().encryption_key_id(TABLE_KEY))
        .unwrap();
    let mut model = fill(&src, &table, 300);

    let error = src
        .export_table("nope", &root.path().join("x"))
        .unwrap_err();
    assert!(matches!(error, Error::NoSuchTable(_)), "{error}");
    src.create_temp_table("scratch").unwrap();
    let error = src
        .export_table("scratch", &root.path().join("x"))
        .unwrap_err();
    assert!(error.to_string().contains("temporary"), "{error}");

    // Uncommitted changes: refused after lock_wait_timeout, then fine once committed.
    let out = root.path().join("out");
    let mut txn = src.begin().unwrap();
    txn.put(&table, b"pending", b"uncommitted").unwrap();
    let error = src.export_table("t", &out).unwrap_err();
    assert!(matches!(error, Error::UncommittedChanges { .. }), "{error}");
    assert!(!out.join("t.sbmeta").exists());
    txn.commit().unwrap();
    model.insert(b"pending".to_vec(), b"uncommitted".to_vec());

    // A re-encryption pass running on the table: refused until it is done.
    keys.rotate(TABLE_KEY).unwrap();
    src.rotate_key(TABLE_KEY, RotationPolicy::Reencrypt)
        .unwrap();
    let error = src.export_table("t", &out).unwrap_err();
    assert!(matches!(error, Error::TableRotating { .. }), "{error}");
    assert!(error.to_string().contains("wait_for_encryption"), "{error}");
    src.wait_for_encryption(|_| {}).unwrap();

    let report = src.export_table("t", &out).unwrap();
    let error = src.export_table("t", &out).unwrap_err();
    assert!(matches!(error, Error::ExportExists { .. }), "{error}");
    assert!(report.manifest_file.exists());
    src.close().unwrap();

    let dst = open(&root.path().join("dst"), &keyring(&[1, 2, TABLE_KEY]));
    let imported = dst.import_table(&out, None).unwrap();
    assert_contents(&dst, &imported.table, &model);
    dst.close().unwrap();
}

#[test]
fn a_table_can_be_imported_back_into_its_own_database_as_a_copy() {
    let root = tempfile::tempdir().unwrap();
    let keys = keyring(&[1, 2, TABLE_KEY]);
    let db = open(&root.path().join("db"), &keys);
    let table = db
        .create_table("t", TableOptions::default().encryption_key_id(TABLE_KEY))
        .unwrap();
    let model = fill(&db, &table, 400);
    let out = root.path().join("out");
    db.export_table("t", &out).unwrap();
    let copy = db.import_table(&out, Some("t_copy")).unwrap();
    assert_ne!(copy.info.space_id, table.space_id());
    db.put(&table, b"only-in-t", b"1").unwrap();
    assert_contents(&db, &copy.table, &model);
    db.verify().unwrap();
    db.close().unwrap();
}

/// Power lost after each IO operation of an import into a destination on a [`SimVfs`],
/// each crash image (every kind of damage to unsynced writes) recovered: the imported table is either absent, with no
/// file of it left behind, or whole; and once `import_table` has returned it is there.
#[test]
fn a_power_loss_at_any_point_of_an_import_leaves_the_destination_consistent() {
    let root = tempfile::tempdir().unwrap();
    let model = exported_secrets(root.path());
    let keys = keyring(&[1, 2, TABLE_KEY]);
    let sim_options = |vfs: &SimVfs| options(&keys).vfs(Arc::new(vfs.clone()));
    let data = Path::new("/dst");
    let space_files = |vfs: &SimVfs| -> Vec<PathBuf> {
        let mut files = vfs.list(data).unwrap();
        files.retain(|path| path.to_string_lossy().contains(".sbd"));
        files
    };
    let base = SimVfs::new();
    let db = Db::open(data, sim_options(&base)).unwrap();
    db.create_table("existing", TableOptions::default())
        .unwrap();
    db.close().unwrap();
    drop(db);
    let base_files = space_files(&base);

    // An import into `vfs` of a fresh copy of the export (an import deletes its transfer
    // key); true if it returned Ok.
    let import_into = |vfs: &SimVfs| -> bool {
        let export = root.path().join("run");
        copy_dir(&root.path().join("out"), &export);
        let imported = Db::open(data, sim_options(vfs))
            .and_then(|db| db.import_table(&export, Some("moved")).map(|_| ()))
            .is_ok();
        std::fs::remove_dir_all(&export).unwrap();
        imported
    };
    // One run: into a fresh copy of the base, the power failing after operation `k`.
    let run = |k: Option<u64>| -> (SimVfs, bool) {
        let vfs = base.crash(Damage::KeepAll);
        if let Some(k) = k {
            vfs.power_fail_after(k);
        }
        let imported = import_into(&vfs);
        (vfs, imported)
    };
    let (full, imported) = run(None);
    assert!(imported);
    let total = full.ops();
    // A couple of hundred operations: every one is a crash point (a stride keeps the test
    // short should the import grow).
    let stride = (total / 600).max(1);
    for k in (1..=total).step_by(stride as usize) {
        let (vfs, acknowledged) = run(Some(k));
        for damage in Damage::variants(k) {
            let image = vfs.crash(damage);
            let db = Db::open(data, sim_options(&image))
                .unwrap_or_else(|e| panic!("k = {k}, {damage:?}: open failed: {e}"));
            let present = db.table("moved");
            match &present {
                Ok(table) => {
                    assert_contents(&db, table, &model);
                    db.verify().unwrap();
                }
                Err(_) => {
                    assert!(
                        !acknowledged,
                        "k = {k}, {damage:?}: an acknowledged import is lost"
                    );
                    let mut files = space_files(&image);
                    files.retain(|path| !path.to_string_lossy().ends_with(".tmp"));
                    assert_eq!(files, base_files, "k = {k}, {damage:?}");
                }
            }
            let absent = present.is_err();
            db.close().unwrap();
            drop((present, db));
            if damage == Damage::KeepAll && absent {
                // The import can be run again, and it clears what the crash left.
                assert!(import_into(&image), "k = {k}: the import again");
                assert_eq!(space_files(&image).len(), base_files.len() + 1);
            }
        }
    }
}

/// A table whose pages carry two data-key generations (a new key version picked up by
/// `reload_keys`, no re-encryption pass under `encryption_rotate_key_age = 1`) moves whole:
/// the export carries both generations, the import reads pages of each.
#[test]
fn a_table_with_two_key_generations_moves_whole() {
    let root = tempfile::tempdir().unwrap();
    let keys = keyring(&[1, 2, TABLE_KEY]);
    let src = open(&root.path().join("src"), &keys);
    let table = src
        .create_table("t", TableOptions::default().encryption_key_id(TABLE_KEY))
        .unwrap();
    let mut model = fill(&src, &table, 300);
    keys.rotate(TABLE_KEY).unwrap();
    src.reload_keys().unwrap();
    assert_eq!(table.info().key_version, 2);
    let mut txn = src.begin().unwrap();
    for i in 300..400 {
        let key = format!("key-{i:06}").into_bytes();
        txn.put(&table, &key, &value(i)).unwrap();
        model.insert(key, value(i));
    }
    txn.commit().unwrap();
    let status = src.encryption_status().unwrap();
    let row = status.iter().find(|row| row.name == "t").unwrap();
    assert_eq!(
        (row.min_key_version, row.current_key_version, row.rotating),
        (1, 2, false),
        "two generations in use, no pass"
    );
    let out = root.path().join("out");
    src.export_table("t", &out).unwrap();
    src.close().unwrap();

    let dst = open(&root.path().join("dst"), &keyring(&[1, 2, TABLE_KEY]));
    let imported = dst.import_table(&out, None).unwrap();
    assert_eq!(
        imported.info.key_version, 1,
        "a fresh key under the local version"
    );
    assert_contents(&dst, &imported.table, &model);
    dst.verify().unwrap();
    dst.close().unwrap();
}
