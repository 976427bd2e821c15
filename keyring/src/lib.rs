//! # strongbox-keyring
//!
//! Where keys come from and how they are used, kept in one crate so that key material
//! never leaves it in the clear (DESIGN §3).
//!
//! | module          | owns                                                                |
//! |-----------------|---------------------------------------------------------------------|
//! | [`secret`]      | `SecretBytes`: zeroized on drop, redacted in `Debug`                |
//! | [`keyfile`]     | the MariaDB `file_key_management` text format (`id;[version;]hex`)  |
//! | [`openssl_enc`] | the `openssl enc -aes-256-cbc` container (`Salted__`, EVP/PBKDF2)  |
//! | [`source`]      | a key file on disk, plain or encrypted, with its file key settings  |
//! | [`provider`]    | the `KeyProvider` trait, the file provider and an in-memory one     |
//! | [`cipher`]      | `DataKey`: AES-CTR, AES-CBC and AES-GCM over caller-owned buffers  |
//! | [`wrap`]        | wrapping a per-tablespace data key under a keyring key (AES-KW)     |
//! | [`nonce_audit`] | test-only (feature `nonce-audit`): every (key, IV) used to encrypt  |
//!
//! Two tiers, as in MySQL 8: a *keyring key* (id, version) from the key file wraps a
//! random *data key* per tablespace; only data keys touch pages. See `docs/keyring.md`.

#![forbid(unsafe_code)]

pub mod cipher;
pub mod error;
pub mod keyfile;
pub mod nonce_audit;
pub mod openssl_enc;
pub mod provider;
pub mod secret;
pub mod source;
pub mod wrap;

pub use cipher::{Algorithm, DataKey};
pub use error::{KeyringError, ParseProblem, Result};
pub use secret::SecretBytes;
