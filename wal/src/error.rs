//! The redo log's error type.
//!
//! A torn or garbage tail is *not* an error: recovery stops there and says so in its
//! [`crate::RecoveryReport`]. Errors are what a caller must act on: IO failures, a log
//! that is unusable after one (`Poisoned`), a wrong or missing key, a damaged control
//! file, corruption inside blocks that passed their checksum, a full log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use strongbox_keyring::KeyringError;

use crate::record::RecordError;
use crate::recovery::StopWhy;
use crate::Lsn;

/// Everything the redo log can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An earlier write or fsync of the log failed, so nothing after it can be trusted to
    /// be durable; the log refuses all further work. Reopen the log to recover.
    #[error(
        "redo log is unusable since an earlier failure ({op} {path}: {source}); \
         close and reopen it to recover"
    )]
    Poisoned {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },

    /// `Log::create` found a log already there.
    #[error("a redo log already exists in {dir}")]
    AlreadyExists { dir: PathBuf },

    /// `Log::open` found no control file.
    #[error("no redo log in {dir} (redo.ctl is missing)")]
    NotFound { dir: PathBuf },

    /// Neither slot of the control file is valid.
    #[error("redo log control file {path} is damaged: neither copy is valid")]
    ControlCorrupt { path: PathBuf },

    /// The control file is from a newer (or unknown) format.
    #[error("redo log control file {path} has format version {version}; this build reads 1")]
    UnsupportedVersion { path: PathBuf, version: u32 },

    /// A configuration value is unusable.
    #[error("invalid redo log configuration: {0}")]
    Config(&'static str),

    /// The log is (or should be) encrypted but no keyring was given.
    #[error(
        "the redo log is encrypted but no keyring was given; pass the key provider \
         (key id 1 must exist) or create the log with encrypt = false"
    )]
    NoKeyring,

    /// The setting `encrypt` differs from how the log was created.
    #[error(
        "the redo log was created with encryption {}, but encrypt_log is now {}; recover \
         with the old setting, checkpoint, and recreate the log to change it",
        if *.log_encrypted { "on" } else { "off" },
        if *.log_encrypted { "off" } else { "on" }
    )]
    EncryptionMismatch { log_encrypted: bool },

    /// The log's data key could not be made or unwrapped.
    #[error("redo log key (key id {key_id} version {key_version}): {source}")]
    LogKey {
        key_id: u32,
        key_version: u32,
        #[source]
        source: KeyringError,
    },

    /// The first block after the checkpoint passed its checksum but not decryption: the
    /// log's data key is not the one these blocks were written with.
    #[error(
        "redo log block at LSN {lsn} does not decrypt with the log key (wrapped under key id \
         {key_id} version {key_version}): wrong key, or the control file belongs to another log"
    )]
    WrongKey {
        key_id: u32,
        key_version: u32,
        lsn: Lsn,
    },

    /// A block that passed its checksum (and decryption) holds inconsistent data. A crash
    /// cannot cause this; it is a bug or deliberate tampering.
    #[error("redo log corrupt at LSN {lsn}: {what}")]
    Corrupt { lsn: Lsn, what: &'static str },

    /// A damaged block (failing its checksum, header checks or decryption) with valid blocks
    /// of the log after it. A crash tears only the tail; damage followed by later writes of
    /// the same log is not a torn tail, and dropping it would drop durable records.
    #[error(
        "redo log segment {path} is damaged at byte {offset} (block {block_no}, LSN {lsn}): \
         {why}; valid log blocks follow it (block {next_valid}), so this is not a torn tail \
         and the records after it cannot be dropped"
    )]
    DamagedBlock {
        path: PathBuf,
        offset: u64,
        block_no: u64,
        lsn: Lsn,
        why: StopWhy,
        next_valid: u64,
    },

    /// The log stops at a missing segment file, yet a later segment exists. Segments are
    /// created in order (each after its predecessor, with the directory fsynced), so no crash
    /// leaves a gap: a file was lost, and the records in the later ones cannot be dropped.
    #[error(
        "redo log segment {missing} is missing but the later segment {later} exists: the log \
         has lost a file, and recovery will not drop the records after the gap"
    )]
    SegmentGap { missing: PathBuf, later: PathBuf },

    /// The block holding the checkpoint LSN (fsynced before the checkpoint was recorded in
    /// `redo.ctl`) is missing or damaged, so the log cannot be read from its checkpoint.
    #[error(
        "redo log segment {path}, byte {offset}: the block holding the checkpoint LSN {lsn} \
         recorded in redo.ctl is unreadable ({why}); either the segment is damaged or missing, \
         or a damaged redo.ctl slot left an older checkpoint whose segments were deleted"
    )]
    CheckpointBlockUnreadable {
        path: PathBuf,
        offset: u64,
        lsn: Lsn,
        why: StopWhy,
    },

    /// A record inside a verified block does not decode.
    #[error("redo log record at LSN {lsn} does not decode: {source}")]
    CorruptRecord {
        lsn: Lsn,
        #[source]
        source: RecordError,
    },

    /// A record is larger than [`crate::record::MAX_RECORD_LEN`], or a batch larger than
    /// the log can ever hold.
    #[error("{what} of {len} bytes is larger than the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },

    /// The log stayed full for `waited`: no checkpoint freed space. The engine must run
    /// checkpoints when `Log::needs_checkpoint` says so.
    #[error(
        "redo log full for {waited:?} (capacity {capacity} bytes, checkpoint at LSN \
         {checkpoint_lsn}): no checkpoint freed space"
    )]
    LogFull {
        waited: Duration,
        capacity: u64,
        checkpoint_lsn: Lsn,
    },

    /// An LSN beyond the end of the log was passed to `flush` or `checkpoint`.
    #[error("LSN {lsn} is beyond the end of the log ({current})")]
    BeyondEnd { lsn: Lsn, current: Lsn },

    /// A checkpoint LSN is not a record boundary or is older than the current checkpoint.
    #[error("invalid checkpoint LSN {lsn}: {why} (current checkpoint {checkpoint_lsn})")]
    BadCheckpoint {
        lsn: Lsn,
        checkpoint_lsn: Lsn,
        why: &'static str,
    },

    /// The epoch counter (one per open) is used up.
    #[error("redo log epoch counter exhausted; recreate the log")]
    EpochExhausted,

    /// The log was closed.
    #[error("the redo log is closed")]
    Closed,
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WalError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = WalError> = std::result::Result<T, E>;
