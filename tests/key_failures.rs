//! What happens when the keys do not fit the database.
//!
//! The database is made with a key file holding ids 1, 2 and 100 (versions 1 and 2), and a
//! table encrypted under key 100 version 2. Then it is opened with key files that lack the
//! id, lack the version, or hold a different key under the same id and version. Each open
//! must fail with an error naming the key id (and version, where one is known) and must
//! leave every file of the data directory byte-for-byte as it was — `strongbox.lock`
//! included, which goes back to empty when a failed open releases it.
//!
//! Also: no key file at all (the error says how to make one), `encrypt_tables = force`
//! refusing `encrypted = no`, a table naming a key id the keyring lacks, and the temporary
//! space falling back to key 1 when key 2 is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use strongbox::engine::inspect::inspect_file;
use strongbox::engine::io::StdVfs;
use strongbox::engine::{Db, EncryptTables, Encrypted, Error, Options, TableOptions};
use strongbox::keyring::KeyringError;

// Fixed test keys (hex, 256 bits each).
const KEY_1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const KEY_100_V1: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const KEY_100_V2: &str = "a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2";
const OTHER_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A key file with one `id;version;hex` line per entry, mode 0600.
fn write_keys(path: &Path, entries: &[(u32, u32, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    let mut text = String::from("# test keys\n");
    for (id, version, hex) in entries {
        text.push_str(&format!("{id};{version};{hex}\n"));
    }
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

const FULL: &[(u32, u32, &str)] = &[
    (1, 1, KEY_1),
    (2, 1, KEY_2),
    (100, 1, KEY_100_V1),
    (100, 2, KEY_100_V2),
];

/// Every file under `dir` (the redo log's directory too) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(snapshot(&path));
        } else {
            files.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    files
}

fn assert_unchanged(before: &BTreeMap<PathBuf, Vec<u8>>, dir: &Path, case: &str) {
    let after = snapshot(dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "{case}: the set of files changed"
    );
    for (path, bytes) in before {
        assert!(
            after[path] == *bytes,
            "{case}: {} changed ({} -> {} bytes)",
            path.display(),
            bytes.len(),
            after[path].len()
        );
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    keys: PathBuf,
}

impl Fixture {
    /// A closed database: table `t` under key 100 (version 2), one record in it.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.txt");
        write_keys(&keys, FULL);
        let data = dir.path().join("data");
        let db = Db::open(&data, Options::new().keyfile(&keys)).unwrap();
        let table = db
            .create_table("t", TableOptions::default().encryption_key_id(100))
            .unwrap();
        let info = table.info();
        assert_eq!((info.key_id, info.key_version), (100, 2));
        db.put(&table, b"answer", b"42").unwrap();
        db.close().unwrap();
        drop(db);
        assert_eq!(
            std::fs::read(data.join("strongbox.lock")).unwrap(),
            b"",
            "a closed database leaves an empty lock file"
        );
        Fixture {
            _dir: dir,
            data,
            keys,
        }
    }

    /// Opens with a key file holding `entries`; expects failure and no change on disk.
    fn open_fails(&self, entries: &[(u32, u32, &str)], case: &str) -> Error {
        write_keys(&self.keys, entries);
        let before = snapshot(&self.data);
        let error = Db::open(&self.data, Options::new().keyfile(&self.keys))
            .expect_err(&format!("{case}: open should fail"));
        assert_unchanged(&before, &self.data, case);
        error
    }

    /// With the right keys back, the database opens and holds its record.
    fn still_opens(&self) {
        write_keys(&self.keys, FULL);
        let db = Db::open(&self.data, Options::new().keyfile(&self.keys)).unwrap();
        let table = db.table("t").unwrap();
        assert_eq!(db.get(&table, b"answer").unwrap(), Some(b"42".to_vec()));
        db.close().unwrap();
    }
}

fn file_name(path: &Path) -> &str {
    path.file_name().unwrap().to_str().unwrap()
}

#[test]
fn key_file_without_the_tables_key_id_fails_naming_id_and_version_and_changes_nothing() {
    let fixture = Fixture::new();
    let error = fixture.open_fails(&FULL[..2], "key id 100 missing");
    let text = error.to_string();
    match &error {
        Error::KeyUnavailable {
            path,
            source:
                KeyringError::MissingKeyVersion {
                    id: 100,
                    version: 2,
                },
            ..
        } => assert_eq!(file_name(path), "space-1.sbd"),
        other => panic!("expected KeyUnavailable(MissingKeyVersion 100/2), got {other:?}"),
    }
    assert!(text.contains("key id 100 version 2"), "{text}");
    assert!(text.contains("space-1.sbd"), "{text}");
    fixture.still_opens();
}

#[test]
fn key_file_without_the_tables_key_version_fails_naming_id_and_version() {
    let fixture = Fixture::new();
    let error = fixture.open_fails(&FULL[..3], "key 100 version 2 missing");
    let text = error.to_string();
    assert!(
        matches!(
            &error,
            Error::KeyUnavailable {
                source: KeyringError::MissingKeyVersion {
                    id: 100,
                    version: 2
                },
                ..
            }
        ),
        "expected KeyUnavailable(MissingKeyVersion 100/2), got {error:?}"
    );
    assert!(text.contains("key id 100 version 2"), "{text}");
    assert!(text.contains("space-1.sbd"), "{text}");
    fixture.still_opens();
}

#[test]
fn a_different_key_under_the_same_id_and_version_fails_naming_them() {
    let fixture = Fixture::new();
    let error = fixture.open_fails(
        &[
            (1, 1, KEY_1),
            (2, 1, KEY_2),
            (100, 1, KEY_100_V1),
            (100, 2, OTHER_KEY),
        ],
        "key 100 version 2 differs",
    );
    let text = error.to_string();
    assert!(
        matches!(
            &error,
            Error::KeyUnavailable {
                source: KeyringError::UnwrapFailed {
                    id: 100,
                    version: 2
                },
                ..
            }
        ),
        "expected KeyUnavailable(UnwrapFailed 100/2), got {error:?}"
    );
    assert!(text.contains("key id 100 version 2"), "{text}");
    assert!(text.contains("space-1.sbd"), "{text}");
    assert!(
        !text.contains(OTHER_KEY) && !text.contains(KEY_100_V2),
        "never print a key: {text}"
    );
    fixture.still_opens();
}

#[test]
fn a_different_or_missing_system_key_fails_on_the_system_space_and_changes_nothing() {
    let fixture = Fixture::new();
    let mut entries = FULL.to_vec();
    entries[0] = (1, 1, OTHER_KEY);
    let error = fixture.open_fails(&entries, "key 1 differs");
    match &error {
        Error::KeyUnavailable {
            path,
            source: KeyringError::UnwrapFailed { id: 1, version: 1 },
            ..
        } => assert_eq!(file_name(path), "system.sbd"),
        other => panic!("expected KeyUnavailable(UnwrapFailed 1/1), got {other:?}"),
    }
    let error = fixture.open_fails(&FULL[1..], "key 1 missing");
    let text = error.to_string();
    assert!(text.contains("key id 1 "), "{text}");
    fixture.still_opens();
}

#[test]
fn encrypted_database_without_a_key_file_says_how_to_make_one() {
    let fixture = Fixture::new();
    let before = snapshot(&fixture.data);
    for options in [
        Options::new(),
        Options::new().encrypt_tables(EncryptTables::Off),
    ] {
        let error = Db::open(&fixture.data, options).expect_err("no keys: open should fail");
        assert!(matches!(error, Error::NoKeyring { .. }), "{error:?}");
        let text = error.to_string();
        assert!(text.contains("strongbox keys generate"), "{text}");
        assert!(text.contains("system.sbd"), "{text}");
        assert_unchanged(&before, &fixture.data, "no key file");
    }

    // A new database with encryption on needs keys before it writes a single page.
    let fresh = fixture._dir.path().join("fresh");
    let error = Db::open(&fresh, Options::new()).expect_err("new encrypted database, no keys");
    assert!(matches!(error, Error::NoKeyring { .. }), "{error:?}");
    assert!(error.to_string().contains("strongbox keys generate"));
    assert!(!fresh.join("system.sbd").exists());
    fixture.still_opens();
}

#[test]
fn force_refuses_unencrypted_tables_and_creates_nothing() {
    let fixture = Fixture::new();
    let db = Db::open(
        &fixture.data,
        Options::new()
            .keyfile(&fixture.keys)
            .encrypt_tables(EncryptTables::Force),
    )
    .unwrap();
    let error = db
        .create_table("plain", TableOptions::default().encrypted(Encrypted::No))
        .expect_err("force must refuse encrypted = no");
    assert!(
        matches!(&error, Error::EncryptionForced { table } if table == "plain"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("encrypt_tables = force"),
        "{error}"
    );
    let names: Vec<String> = db.tables().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["t"]);
    // Default and explicit yes are still fine, and encrypted.
    let table = db.create_table("fine", TableOptions::default()).unwrap();
    assert!(table.info().encrypted);
    db.close().unwrap();
    drop(db);
    let spaces: Vec<String> = snapshot(&fixture.data)
        .keys()
        .map(|p| file_name(p).to_string())
        .filter(|name| name.starts_with("space-"))
        .collect();
    assert_eq!(spaces, ["space-1.sbd", "space-2.sbd"]);
}

#[test]
fn a_table_naming_a_missing_key_id_is_refused_naming_the_id() {
    let fixture = Fixture::new();
    let db = Db::open(&fixture.data, Options::new().keyfile(&fixture.keys)).unwrap();
    let error = db
        .create_table("orphan", TableOptions::default().encryption_key_id(77))
        .expect_err("key 77 is not in the key file");
    assert!(
        matches!(&error, Error::MissingTableKey { table, key_id: 77 } if table == "orphan"),
        "{error:?}"
    );
    assert!(error.to_string().contains("key id 77"), "{error}");
    assert!(db.table("orphan").is_err());
    db.close().unwrap();
    drop(db);
    assert!(!fixture.data.join("space-2.sbd").exists());

    // The same through default_encryption_key_id.
    let db = Db::open(
        &fixture.data,
        Options::new()
            .keyfile(&fixture.keys)
            .default_encryption_key_id(78),
    )
    .unwrap();
    let error = db
        .create_table("orphan", TableOptions::default())
        .expect_err("key 78 is not in the key file");
    assert!(
        matches!(&error, Error::MissingTableKey { key_id: 78, .. }),
        "{error:?}"
    );
    db.close().unwrap();
}

/// The key id the temporary space's header records.
fn temp_key_id(data: &Path) -> u32 {
    let report = inspect_file(&StdVfs, &data.join("temp.sbd"), None, None).unwrap();
    report
        .header
        .encryption
        .as_ref()
        .expect("the temporary space is encrypted")
        .key_id
}

#[test]
fn temporary_space_uses_key_2_and_falls_back_to_key_1_without_it() {
    let fixture = Fixture::new();
    assert_eq!(temp_key_id(&fixture.data), 2);

    write_keys(
        &fixture.keys,
        &[(1, 1, KEY_1), (100, 1, KEY_100_V1), (100, 2, KEY_100_V2)],
    );
    let db = Db::open(&fixture.data, Options::new().keyfile(&fixture.keys))
        .expect("key 2 is optional: temporary data falls back to key 1");
    let table = db.table("t").unwrap();
    assert_eq!(db.get(&table, b"answer").unwrap(), Some(b"42".to_vec()));
    db.close().unwrap();
    drop(db);
    assert_eq!(temp_key_id(&fixture.data), 1);

    // With key 2 back, the next start recreates the temporary space under key 2.
    fixture.still_opens();
    assert_eq!(temp_key_id(&fixture.data), 2);
}
