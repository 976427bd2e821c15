//! The keyring's error type.
//!
//! Each variant names what a caller can act on: which file, which line, which key id and
//! version. No variant ever carries key bytes or a file key (DESIGN §3: key material never
//! appears in an error message).

use std::path::PathBuf;

/// Everything that can go wrong while loading, using or changing keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// A line of a plain key file could not be parsed.
    #[error("key file {path}, line {line}: {problem}")]
    Parse {
        path: PathBuf,
        line: usize,
        problem: ParseProblem,
    },

    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An encrypted key file could not be decrypted: wrong file key, wrong digest or KDF
    /// settings, or a damaged file. OpenSSL cannot tell these apart either.
    #[error(
        "cannot decrypt key file {path}: wrong file key, wrong --digest/--pbkdf2-iter settings, \
         or the file is damaged ({reason})"
    )]
    Decrypt { path: PathBuf, reason: &'static str },

    /// The `--filekey` value could not be used (for example `FILE:path` is unreadable or empty).
    #[error("file key: {0}")]
    FileKey(String),

    /// A key id the caller needs is not in the keyring.
    #[error("encryption key id {id} is not in the keyring")]
    MissingKeyId { id: u32 },

    /// A particular version of a key is not in the keyring.
    #[error("encryption key id {id} version {version} is not in the keyring")]
    MissingKeyVersion { id: u32, version: u32 },

    /// Unwrapping a data key failed its integrity check: the wrapping key is wrong.
    #[error(
        "data key wrapped under key id {id} version {version} did not unwrap: the key file holds \
         a different key under that id and version"
    )]
    UnwrapFailed { id: u32, version: u32 },

    /// A value that must be a valid key size was not.
    #[error("invalid key length {bits} bits (expected 128, 192 or 256)")]
    InvalidKeyLength { bits: usize },

    /// A rotation or generation request that makes no sense (for example no ids given).
    #[error("{0}")]
    InvalidRequest(String),
}

/// What is wrong with one line of a plain key file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseProblem {
    #[error("expected `id;hexkey` or `id;version;hexkey`")]
    Garbage,
    #[error("key id {0:?} is not a number")]
    BadId(String),
    #[error("key id 0 is reserved; ids start at 1")]
    IdZero,
    #[error("key id {0} is out of range (largest is 4294967295)")]
    IdOutOfRange(String),
    #[error("key version {0:?} is not a number from 1 to 4294967295")]
    BadVersion(String),
    #[error("key is not valid hex (odd length or a character outside 0-9a-fA-F)")]
    BadHex,
    #[error("key is {bits} bits; keys must be 128, 192 or 256 bits (32, 48 or 64 hex digits)")]
    BadKeyLength { bits: usize },
    #[error("key id {id} version {version} appears twice (first on line {first_line})")]
    Duplicate {
        id: u32,
        version: u32,
        first_line: usize,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = KeyringError> = std::result::Result<T, E>;
