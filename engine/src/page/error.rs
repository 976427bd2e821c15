//! Why a page could not be encoded or decoded.
//!
//! The variants separate what a caller must treat differently (DESIGN §3): damage
//! ([`PageError::Corrupt`]: try the doublewrite copy), a wrong or altered key or page
//! ([`PageError::WrongKeyOrTampered`]), a key the keyring does not hold
//! ([`PageError::MissingKey`]: load the right key file), and a page read from the wrong
//! place ([`PageError::Misplaced`]). Every variant names the page; none carries page bytes
//! or key material.

use strongbox_keyring::Algorithm;

use super::header::PageId;

/// A page that failed to encode or decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PageError {
    /// The checksum over the stored bytes does not match: the page was damaged on disk or
    /// in transit (or was never written). Checked before anything else.
    #[error(
        "{page}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): \
         the page is damaged"
    )]
    Corrupt {
        page: PageId,
        stored: u32,
        computed: u32,
    },

    /// The stored bytes are intact but did not decrypt sanely: the key found under this id
    /// and version is not the one that sealed the page, or someone edited the page and
    /// recomputed its checksum. For AES-GCM this is a failed tag; for CTR/CBC a failed
    /// post-decrypt check (see the `page` module doc for what that check can and cannot
    /// catch).
    #[error(
        "{page}: {algorithm} decryption with key id {key_id} version {key_version} failed its \
         check: the key under that id and version is not the one that encrypted the page, or \
         the page was altered"
    )]
    WrongKeyOrTampered {
        page: PageId,
        key_id: u32,
        key_version: u32,
        algorithm: Algorithm,
    },

    /// The page was sealed with a key the caller does not have.
    #[error(
        "{page}: encrypted with key id {key_id} version {key_version}, which is not available \
         (is the right key file loaded?)"
    )]
    MissingKey {
        page: PageId,
        key_id: u32,
        key_version: u32,
    },

    /// The page is intact but its header says it belongs somewhere else.
    #[error("read {expected}, but the stored page is {found}")]
    Misplaced { expected: PageId, found: PageId },

    /// A header field holds a value no encoder writes (or an upper layer set one in a frame).
    #[error("{page}: bad page header: {reason}")]
    BadHeader { page: PageId, reason: &'static str },

    /// Two buffers that must have the same length do not, or a header was cut short.
    #[error("page buffer is {got} bytes, expected {expected}")]
    SizeMismatch { expected: usize, got: usize },

    /// The buffer's length is not a supported page size.
    #[error(
        "page buffer of {got} bytes is not a supported page size \
         (4096, 8192, 16384, 32768 or 65536)"
    )]
    UnsupportedPageSize { got: usize },
}
