//! The engine's error type: one enum whose variants a caller can match and act on.
//!
//! Page-level failures keep their own type ([`PageError`]) so that corruption, wrong keys
//! and missing keys stay distinguishable all the way up to the caller.

use crate::page::PageError;
use std::path::PathBuf;
use strongbox_keyring::KeyringError;

/// Everything the engine can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Reading or writing one page of a file failed.
    #[error("{op} page {page_no} of {path}: {source}")]
    PageIo {
        op: &'static str,
        page_no: u32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A page failed its checks: corrupt, wrong key, missing key or misplaced.
    #[error("{path}: {source}")]
    Page {
        path: PathBuf,
        #[source]
        source: PageError,
    },

    /// The keyring refused: missing key id or version, unwrap failure, bad key file.
    #[error(transparent)]
    Keyring(#[from] KeyringError),

    /// A tablespace's data key could not be unwrapped: its keyring key (id, version) is
    /// missing or differs from the one the data key was wrapped under.
    #[error(
        "cannot read {path}: {source}{}",
        key_file.as_ref().map(|k| format!(" (keys from {})", k.display())).unwrap_or_default()
    )]
    KeyUnavailable {
        path: PathBuf,
        #[source]
        source: KeyringError,
        /// The key file the keyring was loaded from, when it came from one.
        key_file: Option<PathBuf>,
    },

    /// Encryption is needed but no keyring was configured.
    #[error(
        "{what} needs encryption keys but no key file was given; create one with \
         `strongbox keys generate --out keys.txt --ids 1,2` and pass it with --keyfile \
         (Options::keyfile), or set encrypt_tables = off for an unencrypted database"
    )]
    NoKeyring { what: String },

    /// Another process holds the data directory.
    #[error(
        "data directory {path} is in use by another process{} (it holds the lock on {}/strongbox.lock)",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        path.display()
    )]
    Locked { path: PathBuf, holder: Option<u32> },

    /// A file's structure is wrong in a way no checksum caught (bad magic, impossible
    /// header field, broken tree invariant).
    #[error("{path}: {problem}")]
    Corrupt { path: PathBuf, problem: String },

    /// A page carries an LSN beyond the end of the redo log. Pages reach their files only
    /// after the log is durable up to their LSN (the WAL rule), so the log has lost records
    /// that were durable: it is damaged where recovery stopped (`log_stop`).
    #[error(
        "{path}: page {page_no} has LSN {page_lsn}, beyond the end of the redo log (LSN \
         {log_end}): the log has lost records that were durable when the page was written{}",
        log_stop
            .as_ref()
            .map(|s| format!("; the redo log is damaged where recovery stopped: {s}"))
            .unwrap_or_default()
    )]
    PageAheadOfLog {
        path: PathBuf,
        page_no: u32,
        page_lsn: u64,
        log_end: u64,
        /// Where the last recovery's scan stopped (segment, offset, reason), if it ran.
        log_stop: Option<String>,
    },

    /// The file was written by an incompatible version or with other settings.
    #[error("{path}: {problem}")]
    Incompatible { path: PathBuf, problem: String },

    #[error("table {0:?} already exists")]
    TableExists(String),

    #[error("table {0:?} does not exist")]
    NoSuchTable(String),

    /// Table names are 1 to 64 bytes of letters, digits, `_`, `-` and `.`.
    #[error("invalid table name {0:?}: use 1 to 64 letters, digits, '_', '-' or '.'")]
    InvalidTableName(String),

    /// `encrypt_tables = force` refuses unencrypted tables.
    #[error("table {table:?}: encrypted = no is refused because encrypt_tables = force")]
    EncryptionForced { table: String },

    /// A table names a key id the keyring does not have.
    #[error("table {table:?}: encryption key id {key_id} is not in the keyring")]
    MissingTableKey { table: String, key_id: u32 },

    #[error("key of {len} bytes is longer than the maximum of {max} bytes for this page size")]
    KeyTooLarge { len: usize, max: usize },

    #[error("value of {len} bytes is larger than the maximum of {max} bytes")]
    ValueTooLarge { len: usize, max: usize },

    /// Every buffer-pool frame is pinned; the pool is too small for the concurrency.
    #[error("buffer pool exhausted: all {frames} frames are in use; raise buffer_pool_size")]
    BufferPoolExhausted { frames: usize },

    /// Every slot of the undo directory is taken: that many write transactions are already
    /// unfinished. Commit or roll back some before starting more (the limit grows with the
    /// page size).
    #[error(
        "too many unfinished write transactions: all {max} undo directory slots are in use; \
         commit or roll back some before starting more"
    )]
    TooManyTransactions { max: usize },

    /// A background thread failed earlier; the database refuses further work until it is
    /// reopened (which runs recovery).
    #[error("the database stopped after an earlier failure: {0}")]
    Poisoned(String),

    /// Another transaction held a key this one needed for longer than the lock wait timeout
    /// (InnoDB's error 1205). Roll the transaction back and retry it; a deadlock ends this
    /// way too.
    #[error(
        "Lock wait timeout exceeded; try restarting transaction (table {table:?}, waited {waited_ms} ms)"
    )]
    LockWaitTimeout { table: String, waited_ms: u64 },

    /// The redo log failed: IO, a full log, a wrong log key, or an earlier failure that
    /// poisoned it (`strongbox_wal` rule W5: nothing is retried).
    #[error("redo log: {0}")]
    Log(#[from] strongbox_wal::WalError),

    /// A re-encryption pass (rotation, ALTER) failed on a tablespace; it is retried at the
    /// next rotation request or restart.
    #[error("re-encrypting {path} failed: {problem}")]
    RotationFailed { path: PathBuf, problem: String },

    /// Opening needs keyring key versions the keyring no longer has.
    #[error(
        "the keyring lacks key versions these tablespaces still use; restore them to the key \
         file (or rotate and re-encrypt before removing a version):\n{}",
        needed.iter().map(|n| format!("  {n}")).collect::<Vec<_>>().join("\n")
    )]
    KeyVersionsMissing { needed: Vec<String> },

    /// An option value is out of range or inconsistent.
    #[error("invalid option {name}: {problem}")]
    InvalidOption { name: &'static str, problem: String },

    /// `Db::export_table`: the output directory already holds (part of) an export of the
    /// table. Move it away, or export into another directory.
    #[error(
        "{path} already exists: the directory holds an export of table {table:?}; move it \
         away or export into another directory"
    )]
    ExportExists { table: String, path: PathBuf },

    /// `Db::export_table`: a re-encryption pass (rotation, ALTER) is running on the table:
    /// its pages are moving between keys (or to or from plaintext) and page 0 says so.
    /// Wait for it and export again.
    #[error(
        "table {table:?} is being re-encrypted; wait for it to finish \
         (Db::wait_for_encryption, or `strongbox export --wait`) and export again"
    )]
    TableRotating { table: String },

    /// `Db::export_table`: open transactions hold uncommitted changes to the table, whose
    /// undo an export could not carry. Commit or roll them back and export again.
    #[error(
        "table {table:?} has uncommitted changes of open transactions (waited {waited_ms} ms); \
         commit or roll them back and export again"
    )]
    UncommittedChanges { table: String, waited_ms: u64 },

    /// `Db::import_table`: an export's files are missing, malformed, inconsistent with one
    /// another, or were edited (a checksum failed).
    #[error("export {path}: {problem}")]
    BadExport { path: PathBuf, problem: String },

    /// `Db::import_table`: an encrypted table's export lacks its transfer key file.
    #[error(
        "the transfer key {path} is missing: an encrypted export cannot be imported without \
         it (a successful import deletes it; was this export imported already?)"
    )]
    TransferKeyMissing { path: PathBuf },

    /// `Db::import_table`: the transfer key does not unwrap the exported data keys: it is
    /// another export's key, or the export was tampered with.
    #[error(
        "the transfer key {path} does not unwrap the exported data keys: it belongs to \
         another export, or the export was tampered with"
    )]
    WrongTransferKey { path: PathBuf },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An IO error with the operation and file it concerns.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
