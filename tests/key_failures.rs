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
//!
//! The key-file side (issue 8 §3): a key file path that does not exist, and an encrypted key
//! file (`openssl enc` container, PBKDF2-HMAC-SHA256) opened with the wrong file key, the
//! wrong digest, the wrong KDF (EVP_BytesToKey instead of PBKDF2) and the wrong iteration
//! count. Each open must fail with an error naming the key file and what is wrong, and the
//! right settings must still open the database afterwards.
//!
//! "Byte-identical" is checked by hashing: every file under the data directory is hashed
//! with SHA-256 before and after the failed open, and the two maps (path → length, digest)
//! must be equal.

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use strongbox::engine::inspect::inspect_file;
use strongbox::engine::io::StdVfs;
use strongbox::engine::{Db, EncryptTables, Encrypted, Error, Options, TableOptions};
use strongbox::keyring::keyfile::KeyFile;
use strongbox::keyring::openssl_enc::{Digest, EncSettings, Kdf};
use strongbox::keyring::source::{FileKey, KeyFileSource};
use strongbox::keyring::KeyringError;

// Fixed test keys (hex, 256 bits each).
const KEY_1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const KEY_100_V1: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const KEY_100_V2: &str = "a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2";
const OTHER_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Key-file text with one `id;version;hex` line per entry.
fn key_text(entries: &[(u32, u32, &str)]) -> String {
    let mut text = String::from("# test keys\n");
    for (id, version, hex) in entries {
        text.push_str(&format!("{id};{version};{hex}\n"));
    }
    text
}

/// A key file with one `id;version;hex` line per entry, mode 0600.
fn write_keys(path: &Path, entries: &[(u32, u32, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, key_text(entries)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

const FULL: &[(u32, u32, &str)] = &[
    (1, 1, KEY_1),
    (2, 1, KEY_2),
    (100, 1, KEY_100_V1),
    (100, 2, KEY_100_V2),
];

/// One file's length and SHA-256 digest (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileHash {
    len: usize,
    sha256: String,
}

/// Every file under `dir` (the redo log's directory too) with its length and SHA-256.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, FileHash> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(snapshot(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            let sha256 = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let len = bytes.len();
            files.insert(path, FileHash { len, sha256 });
        }
    }
    files
}

fn assert_unchanged(before: &BTreeMap<PathBuf, FileHash>, dir: &Path, case: &str) {
    let after = snapshot(dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "{case}: the set of files changed"
    );
    for (path, hash) in before {
        assert_eq!(
            after[path],
            *hash,
            "{case}: {} changed (length, SHA-256)",
            path.display()
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
    assert!(
        text.contains(&format!("(keys from {})", fixture.keys.display())),
        "the error names the key file: {text}"
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

// ---- the key file itself: missing, or encrypted and opened with the wrong settings --------

/// The passphrase the encrypted key file is sealed with.
const FILE_KEY: &str = "correct horse battery staple";

/// How the encrypted key file is sealed: `openssl enc -aes-256-cbc -md sha256 -pbkdf2
/// -iter 1000`.
const SEALED_WITH: EncSettings = EncSettings {
    digest: Digest::Sha256,
    kdf: Kdf::Pbkdf2 { iterations: 1000 },
};

/// A closed database like [`Fixture`]'s, made with an encrypted key file (`keys.enc`).
struct EncryptedFixture {
    dir: tempfile::TempDir,
    data: PathBuf,
    keys: PathBuf,
}

impl EncryptedFixture {
    fn new() -> EncryptedFixture {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.enc");
        let file = KeyFile::parse(&key_text(FULL), &keys).unwrap();
        KeyFileSource::encrypted(&keys, FileKey::parse(FILE_KEY).unwrap(), SEALED_WITH)
            .create(&file)
            .unwrap();
        assert!(std::fs::read(&keys).unwrap().starts_with(b"Salted__"));
        let data = dir.path().join("data");
        let fixture = EncryptedFixture { dir, data, keys };
        let db = Db::open(&fixture.data, fixture.right()).unwrap();
        let table = db
            .create_table("t", TableOptions::default().encryption_key_id(100))
            .unwrap();
        db.put(&table, b"answer", b"42").unwrap();
        db.close().unwrap();
        fixture
    }

    /// The options that open the database.
    fn right(&self) -> Options {
        Options::new()
            .keyfile(&self.keys)
            .filekey(FILE_KEY, SEALED_WITH)
    }

    /// Opens with `options`; expects failure and every file hashing as before.
    fn open_fails(&self, options: Options, case: &str) -> Error {
        let before = snapshot(&self.data);
        let error = Db::open(&self.data, options).expect_err(&format!("{case}: open should fail"));
        assert_unchanged(&before, &self.data, case);
        let text = error.to_string();
        assert!(
            !text.contains(FILE_KEY),
            "{case}: never print the file key: {text}"
        );
        for (_, _, hex) in FULL {
            assert!(!text.contains(hex), "{case}: never print a key: {text}");
        }
        error
    }

    /// A wrong file key or wrong settings: the one decryption error, naming the key file.
    fn open_fails_to_decrypt(&self, filekey: &str, settings: EncSettings, case: &str) {
        let options = Options::new()
            .keyfile(&self.keys)
            .filekey(filekey, settings);
        let error = self.open_fails(options, case);
        match &error {
            Error::Keyring(KeyringError::Decrypt { path, .. }) => {
                assert_eq!(path, &self.keys, "{case}")
            }
            other => panic!("{case}: expected Keyring(Decrypt), got {other:?}"),
        }
        let text = error.to_string();
        assert!(
            text.contains(&format!("cannot decrypt key file {}", self.keys.display())),
            "{case}: {text}"
        );
        assert!(
            text.contains("wrong file key, wrong --digest/--pbkdf2-iter settings"),
            "{case}: the error says what may be wrong: {text}"
        );
    }

    /// With the right file key and settings, the database opens and holds its record.
    fn still_opens(&self) {
        let db = Db::open(&self.data, self.right()).unwrap();
        let table = db.table("t").unwrap();
        assert_eq!(db.get(&table, b"answer").unwrap(), Some(b"42".to_vec()));
        db.close().unwrap();
    }
}

#[test]
fn a_key_file_that_does_not_exist_is_named_and_nothing_changes() {
    let fixture = Fixture::new();
    let missing = fixture._dir.path().join("no-such-keys.txt");
    let before = snapshot(&fixture.data);
    let error = Db::open(&fixture.data, Options::new().keyfile(&missing))
        .expect_err("a missing key file must fail the open");
    assert_unchanged(&before, &fixture.data, "key file missing");
    match &error {
        Error::Keyring(KeyringError::Io { path, source }) => {
            assert_eq!(path, &missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Keyring(Io NotFound), got {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains(&format!("key file {}", missing.display())),
        "{text}"
    );
    fixture.still_opens();
}

#[test]
fn an_encrypted_key_file_with_a_wrong_file_key_is_refused_and_nothing_changes() {
    let fixture = EncryptedFixture::new();
    fixture.open_fails_to_decrypt(
        "battery horse correct staple",
        SEALED_WITH,
        "wrong file key",
    );
    fixture.still_opens();
}

#[test]
fn an_encrypted_key_file_with_the_wrong_digest_or_kdf_is_refused_and_nothing_changes() {
    let fixture = EncryptedFixture::new();
    let cases = [
        (
            "wrong digest (sha1 instead of sha256)",
            EncSettings {
                digest: Digest::Sha1,
                ..SEALED_WITH
            },
        ),
        (
            "wrong digest (sha512 instead of sha256)",
            EncSettings {
                digest: Digest::Sha512,
                ..SEALED_WITH
            },
        ),
        (
            "wrong KDF (EVP_BytesToKey instead of PBKDF2)",
            EncSettings {
                kdf: Kdf::EvpBytesToKey,
                ..SEALED_WITH
            },
        ),
        (
            "wrong PBKDF2 iteration count (999 instead of 1000)",
            EncSettings {
                kdf: Kdf::Pbkdf2 { iterations: 999 },
                ..SEALED_WITH
            },
        ),
        (
            "wrong PBKDF2 iteration count (openssl's default 10000)",
            EncSettings {
                kdf: Kdf::Pbkdf2 { iterations: 10_000 },
                ..SEALED_WITH
            },
        ),
    ];
    for (case, settings) in cases {
        fixture.open_fails_to_decrypt(FILE_KEY, settings, case);
    }
    fixture.still_opens();
}

#[test]
fn an_encrypted_key_file_without_its_file_key_or_with_a_missing_file_key_file_is_refused() {
    let fixture = EncryptedFixture::new();

    let error = fixture.open_fails(Options::new().keyfile(&fixture.keys), "no file key given");
    assert!(
        matches!(&error, Error::Keyring(KeyringError::FileKey(_))),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&fixture.keys.display().to_string()) && text.contains("--filekey"),
        "{text}"
    );

    let missing = fixture.dir.path().join("no-such-filekey.txt");
    let error = fixture.open_fails(
        Options::new()
            .keyfile(&fixture.keys)
            .filekey(format!("FILE:{}", missing.display()), SEALED_WITH),
        "file-key file missing",
    );
    assert!(
        matches!(&error, Error::Keyring(KeyringError::FileKey(_))),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&format!("cannot read file key {}", missing.display())),
        "{text}"
    );
    fixture.still_opens();
}
