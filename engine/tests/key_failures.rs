//! Key failures refuse cleanly and change nothing: a database reopened without a key id
//! it uses, without a key version it uses, with another key under the same id and
//! version, or with no keys at all fails to open with an error that names the key, and
//! every file under the data directory is byte-identical afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strongbox_engine::{Db, EncryptTables, Options, TableOptions};
use strongbox_keyring::provider::MemoryKeyProvider;

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn options(keys: Option<Arc<MemoryKeyProvider>>) -> Options {
    let options = Options::new().encrypt_tables(EncryptTables::On);
    match keys {
        Some(keys) => options.key_provider(keys),
        None => options,
    }
}

/// Keys 1 (versions 1 and 2) and 5 (version 1); a table under each.
fn keys() -> Arc<MemoryKeyProvider> {
    let keys = Arc::new(MemoryKeyProvider::new());
    keys.add_random(1, 1, 256).unwrap();
    keys.add_random(1, 2, 256).unwrap();
    keys.add_random(5, 1, 256).unwrap();
    keys
}

fn build(dir: &Path, keys: &Arc<MemoryKeyProvider>) {
    let db = Db::open(dir, options(Some(keys.clone()))).unwrap();
    let t1 = db
        .create_table("under_key_1", TableOptions::default())
        .unwrap();
    let t5 = db
        .create_table("under_key_5", TableOptions::default().encryption_key_id(5))
        .unwrap();
    for n in 0..200u32 {
        db.put(&t1, format!("k{n:04}").as_bytes(), b"one").unwrap();
        db.put(&t5, format!("k{n:04}").as_bytes(), b"five").unwrap();
    }
    db.close().unwrap();
}

/// Opens with `keys`, expects a refusal whose text contains every one of `words`, and
/// checks that nothing on disk changed.
fn refuses(dir: &Path, keys: Option<Arc<MemoryKeyProvider>>, words: &[&str]) {
    let before = snapshot(dir);
    let error = Db::open(dir, options(keys))
        .expect_err("must refuse")
        .to_string();
    for word in words {
        assert!(error.contains(word), "{error:?} should name {word:?}");
    }
    assert!(
        before == snapshot(dir),
        "a refused open changed files: {error}"
    );
}

#[test]
fn key_failures_refuse_with_the_key_named_and_leave_files_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let good = keys();
    build(dir.path(), &good);

    // Key id 5 missing.
    let no_five = keys();
    no_five.remove(5, 1);
    refuses(
        dir.path(),
        Some(no_five),
        &["space-2.sbd", "key id 5 version 1 is not in the keyring"],
    );

    // Key 1's version 2 (its latest, which wrapped the data keys) missing.
    let no_v2 = keys();
    no_v2.remove(1, 2);
    refuses(
        dir.path(),
        Some(no_v2),
        &["system.sbd", "key id 1 version 2 is not in the keyring"],
    );

    // Another key under the same id and versions. (The providers above hold fresh random
    // keys too, so their errors list these lines as well; each names its own file.)
    refuses(
        dir.path(),
        Some(keys()),
        &[
            "space-1.sbd: data key wrapped under key id 1 version 2 did not unwrap",
            "the key file holds a different key under that id and version",
        ],
    );

    // No keys at all.
    refuses(
        dir.path(),
        None,
        &["system.sbd needs encryption keys but no key file was given"],
    );

    // The right keys still open it, with every record.
    let db = Db::open(dir.path(), options(Some(good))).unwrap();
    let t5 = db.table("under_key_5").unwrap();
    assert_eq!(db.get(&t5, b"k0199").unwrap(), Some(b"five".to_vec()));
    let t1 = db.table("under_key_1").unwrap();
    assert_eq!(db.get(&t1, b"k0000").unwrap(), Some(b"one".to_vec()));
    db.close().unwrap();
}
