//! [`Options`]: every setting of a database, with MariaDB's names where one exists
//! (DESIGN §5), and the builder embedders use.
//!
//! | option                      | default   | meaning                                          |
//! |-----------------------------|-----------|--------------------------------------------------|
//! | `keyfile` / `filekey`       | none      | the MariaDB-format key file and its file key     |
//! | `encrypt_tables`            | `on`      | `off`, `on` (tables default to encrypted), `force` (no unencrypted tables) |
//! | `encrypt_temp`              | `on`      | encrypt the temporary tablespace (key 2, else 1) |
//! | `default_encryption_key_id` | 1         | key id of tables that do not name one            |
//! | `encryption_algorithm`      | `aes_ctr` | `aes_ctr`, `aes_cbc`, or `aes_gcm` (authenticated) |
//! | `buffer_pool_size`          | 128 MiB   | bytes of page frames; the engine's memory budget |
//! | `page_size`                 | 16384     | 4096 … 65536; fixed when the database is created  |
//! | `encrypt_log`               | auto      | encrypt the redo log (key 1); auto = on whenever `encrypt_tables` is not `off` or a keyring is configured (an encrypted table's changes must not reach a plain log); fixed when the database is created |
//! | `flush_log_at_commit`       | 1         | 1: fsync at every commit (group commit); 2: write at commit, fsync each second; 0: write and fsync each second |
//! | `doublewrite`               | on        | write page images to `doublewrite.dbw` before writing them home (torn-page repair); off only for benchmarks |
//! | `lock_wait_timeout`         | 50 s      | how long a writer waits for another transaction's key lock |
//! | `log_file_size`             | 64 MiB    | bytes per redo-log segment (at least 32 pages); fixed when the database is created |
//! | `encryption_threads`        | 1         | background re-encryption threads (MariaDB's `innodb_encryption_threads`; MariaDB's default is 0, ours 1 so ALTER and rotation finish without extra settings); 0 = passes run only while someone waits for them |
//! | `encryption_rotate_key_age` | 1         | re-encrypt a space on its own when its oldest page generation + age < the key's latest version (MariaDB's meaning; 0 = never for age). An explicit rotation (`Db::rotate_key`) moves every page regardless: `docs/rotation.md` |
//! | `tmpdir`                    | `<data>/tmp` | where bulk loads spill sorted runs (encrypted temporary files, key 2 else 1, when `encrypt_temp` is on) |
//! | `encryption_rotation_iops`  | 100       | page IOs per second the re-encryption threads may use together (0 = no cap) |

use crate::io::{StdVfs, Vfs};
use crate::page::PageSize;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use strongbox_keyring::openssl_enc::EncSettings;
use strongbox_keyring::provider::KeyProvider;
use strongbox_keyring::Algorithm;
use strongbox_wal::FlushAtCommit;

/// MariaDB's `innodb_encrypt_tables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncryptTables {
    /// New tables are unencrypted unless they say `encrypted = yes`.
    Off,
    /// New tables are encrypted unless they say `encrypted = no`.
    #[default]
    On,
    /// Every table is encrypted; `encrypted = no` is refused.
    Force,
}

impl EncryptTables {
    pub fn name(self) -> &'static str {
        match self {
            EncryptTables::Off => "off",
            EncryptTables::On => "on",
            EncryptTables::Force => "force",
        }
    }
}

impl std::str::FromStr for EncryptTables {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "off" | "0" | "false" | "no" => Ok(EncryptTables::Off),
            "on" | "1" | "true" | "yes" => Ok(EncryptTables::On),
            "force" => Ok(EncryptTables::Force),
            _ => Err(format!("{text:?} is not off, on or force")),
        }
    }
}

/// Where the keyring comes from.
#[derive(Clone, Default)]
pub enum KeySource {
    /// No keyring: only `encrypt_tables = off` databases can be used.
    #[default]
    None,
    /// A key file, plain or encrypted (`filekey` is `SECRET` or `FILE:path`).
    File {
        path: PathBuf,
        filekey: Option<String>,
        settings: EncSettings,
    },
    /// Keys supplied by the embedder.
    Provider(Arc<dyn KeyProvider>),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::None => write!(f, "None"),
            KeySource::File {
                path,
                filekey,
                settings,
            } => f
                .debug_struct("File")
                .field("path", path)
                .field("filekey", &filekey.as_ref().map(|_| "<redacted>"))
                .field("settings", settings)
                .finish(),
            KeySource::Provider(provider) => write!(f, "Provider({provider:?})"),
        }
    }
}

/// Settings for [`crate::Db::open`]. Build with [`Options::new`] and the setters.
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) keys: KeySource,
    pub(crate) encrypt_tables: EncryptTables,
    pub(crate) encrypt_temp: bool,
    pub(crate) default_encryption_key_id: u32,
    pub(crate) encryption_algorithm: Algorithm,
    pub(crate) buffer_pool_size: usize,
    pub(crate) page_size: PageSize,
    pub(crate) vfs: Arc<dyn Vfs>,
    /// `None`: on whenever table encryption is on.
    pub(crate) encrypt_log: Option<bool>,
    pub(crate) flush_log_at_commit: FlushAtCommit,
    pub(crate) doublewrite: bool,
    pub(crate) lock_wait_timeout: Duration,
    pub(crate) log_file_size: u64,
    pub(crate) encryption_threads: usize,
    pub(crate) encryption_rotate_key_age: u32,
    pub(crate) encryption_rotation_iops: u32,
    /// `None`: `<data>/tmp`.
    pub(crate) tmpdir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            keys: KeySource::None,
            encrypt_tables: EncryptTables::On,
            encrypt_temp: true,
            default_encryption_key_id: 1,
            encryption_algorithm: Algorithm::AesCtr,
            buffer_pool_size: 128 << 20,
            page_size: PageSize::DEFAULT,
            vfs: Arc::new(StdVfs),
            encrypt_log: None,
            flush_log_at_commit: FlushAtCommit::EveryCommit,
            doublewrite: true,
            lock_wait_timeout: Duration::from_secs(50),
            log_file_size: 64 << 20,
            encryption_threads: 1,
            encryption_rotate_key_age: 1,
            encryption_rotation_iops: 100,
            tmpdir: None,
        }
    }
}

impl Options {
    /// The defaults: encryption on, AES-CTR, 128 MiB buffer pool, 16 KiB pages, no keyring.
    pub fn new() -> Options {
        Options::default()
    }

    /// Use a MariaDB-format key file (plain unless [`Options::filekey`] is set).
    pub fn keyfile(mut self, path: impl Into<PathBuf>) -> Options {
        let (filekey, settings) = match self.keys {
            KeySource::File {
                filekey, settings, ..
            } => (filekey, settings),
            _ => (None, EncSettings::default()),
        };
        self.keys = KeySource::File {
            path: path.into(),
            filekey,
            settings,
        };
        self
    }

    /// The key file is encrypted: `secret` is the passphrase or `FILE:path`; `settings`
    /// are the digest and KDF it was encrypted with. Call after [`Options::keyfile`].
    pub fn filekey(mut self, secret: impl Into<String>, settings: EncSettings) -> Options {
        if let KeySource::File {
            filekey,
            settings: s,
            ..
        } = &mut self.keys
        {
            *filekey = Some(secret.into());
            *s = settings;
        }
        self
    }

    /// Keys from the embedder's own provider.
    pub fn key_provider(mut self, provider: Arc<dyn KeyProvider>) -> Options {
        self.keys = KeySource::Provider(provider);
        self
    }

    pub fn encrypt_tables(mut self, setting: EncryptTables) -> Options {
        self.encrypt_tables = setting;
        self
    }

    pub fn encrypt_temp(mut self, on: bool) -> Options {
        self.encrypt_temp = on;
        self
    }

    pub fn default_encryption_key_id(mut self, key_id: u32) -> Options {
        self.default_encryption_key_id = key_id;
        self
    }

    pub fn encryption_algorithm(mut self, algorithm: Algorithm) -> Options {
        self.encryption_algorithm = algorithm;
        self
    }

    /// Bytes of buffer-pool frames (at least 16 pages).
    pub fn buffer_pool_size(mut self, bytes: usize) -> Options {
        self.buffer_pool_size = bytes;
        self
    }

    /// Page size for a *new* database; an existing one keeps the size it was created with.
    pub fn page_size(mut self, page_size: PageSize) -> Options {
        self.page_size = page_size;
        self
    }

    /// The file system (tests use an in-memory or fault-injecting one).
    pub fn vfs(mut self, vfs: Arc<dyn Vfs>) -> Options {
        self.vfs = vfs;
        self
    }

    /// Encrypt the redo log with a data key wrapped under key 1 (MariaDB's
    /// `innodb_encrypt_log`). Default: on whenever `encrypt_tables` is not `off` or a
    /// keyring is configured.
    pub fn encrypt_log(mut self, on: bool) -> Options {
        self.encrypt_log = Some(on);
        self
    }

    /// MariaDB's `innodb_flush_log_at_trx_commit`: see [`FlushAtCommit`].
    pub fn flush_log_at_commit(mut self, policy: FlushAtCommit) -> Options {
        self.flush_log_at_commit = policy;
        self
    }

    /// Torn-page protection. Turning it off is for benchmarks only: a page torn by a power
    /// failure is then reported as corruption at start-up and cannot be repaired.
    pub fn doublewrite(mut self, on: bool) -> Options {
        self.doublewrite = on;
        self
    }

    /// How long a writer waits for a key another transaction holds before it gets
    /// `Error::LockWaitTimeout` (InnoDB's `innodb_lock_wait_timeout`).
    pub fn lock_wait_timeout(mut self, timeout: Duration) -> Options {
        self.lock_wait_timeout = timeout;
        self
    }

    /// Bytes per redo-log segment file for a *new* database (a multiple of 512, at least 32
    /// pages). Smaller segments make checkpoints more frequent.
    pub fn log_file_size(mut self, bytes: u64) -> Options {
        self.log_file_size = bytes;
        self
    }

    /// Background re-encryption threads (MariaDB's `innodb_encryption_threads`). Idle
    /// threads sleep until there is work; 0 means passes run only inside
    /// [`crate::Db::wait_for_encryption`].
    pub fn encryption_threads(mut self, threads: usize) -> Options {
        self.encryption_threads = threads;
        self
    }

    /// MariaDB's `innodb_encryption_rotate_key_age` (see the module table).
    pub fn encryption_rotate_key_age(mut self, age: u32) -> Options {
        self.encryption_rotate_key_age = age;
        self
    }

    /// MariaDB's `innodb_encryption_rotation_iops`: page IOs per second for re-encryption,
    /// shared by all its threads; 0 = unthrottled.
    pub fn encryption_rotation_iops(mut self, iops: u32) -> Options {
        self.encryption_rotation_iops = iops;
        self
    }

    /// Where temporary files go (MariaDB's `tmpdir`; default `<data>/tmp`). They are on
    /// the real file system even when [`Options::vfs`] is not.
    pub fn tmpdir(mut self, dir: impl Into<PathBuf>) -> Options {
        self.tmpdir = Some(dir.into());
        self
    }

    /// Whether the redo log is encrypted under these settings.
    pub(crate) fn log_encrypted(&self) -> bool {
        self.encrypt_log.unwrap_or(
            self.encrypt_tables != EncryptTables::Off || !matches!(self.keys, KeySource::None),
        )
    }
}
