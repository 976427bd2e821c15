//! # strongbox-engine
//!
//! The storage engine: a B+tree key-value store whose pages are plaintext in the buffer
//! pool and encrypted only on their way to disk.
//!
//! ```no_run
//! use strongbox_engine::{Db, Options, TableOptions};
//!
//! let db = Db::open("data", Options::new().keyfile("keys.txt"))?;
//! let users = db.create_table("users", TableOptions::default())?;   // encrypted, key 1
//! let mut txn = db.begin()?;
//! txn.put(&users, b"alice", b"admin")?;
//! txn.commit()?;
//! assert_eq!(db.get(&users, b"alice")?, Some(b"admin".to_vec()));
//! for entry in db.range(&users, &b"a"[..]..&b"m"[..], false)? {
//!     let (key, value) = entry?;
//!     println!("{key:?} = {value:?}");
//! }
//! db.close()?;
//! # Ok::<(), strongbox_engine::Error>(())
//! ```
//!
//! Layers, bottom-up (see `docs/ARCHITECTURE.md`):
//!
//! | module      | owns                                                                  |
//! |-------------|-----------------------------------------------------------------------|
//! | [`io`]      | the file-system seam (`Vfs`, `FileIo`); real and in-memory            |
//! | [`page`]    | the page header and codec: plaintext frame <-> checksummed ciphertext |
//! | [`space`]   | tablespace files, page 0, data keys, write nonces, free lists         |
//! | [`doublewrite`] | torn-page protection: page images synced to `doublewrite.dbw` first |
//! | [`buffer`]  | the buffer pool, its replacer and the page cleaner                   |
//! | [`btree`]   | B+tree nodes, search, splits, frees, scans, verify                    |
//! | `catalog`   | table name -> tablespace and encryption settings                      |
//! | `lock`      | key locks held to commit; committed before-images for readers         |
//! | `undo`      | undo logs in the system space: before-images for rollback, recovery   |
//! | `mtr`       | mini-transactions: a B+tree operation's page changes as one redo batch |
//! | `redo`      | recovery phase B: apply the redo of complete batches to the pages     |
//! | `rotation`  | key rotation, ALTER of encryption, rewrap: background re-encryption   |
//! | [`tempfile`] | encrypted temporary files (key 2, else 1) that never outlive the process |
//! | [`sort`]    | external merge sort of key/value pairs through temp files (bulk load) |
//! | `bulk`      | `Db::bulk_loader`: sort (spilling to encrypted temp files), insert in key order |
//! | `transfer`  | `Db::export_table` / `Db::import_table`: moving a table with a transfer key |
//! | `db`, `txn` | the embedded API                                                      |

#![forbid(unsafe_code)]

pub mod btree;
pub mod buffer;
mod bulk;
mod catalog;
mod checkpoint;
mod db;
pub mod doublewrite;
mod error;
pub mod inspect;
pub mod io;
pub(crate) mod lock;
pub(crate) mod mtr;
mod options;
pub mod page;
mod recovery;
pub(crate) mod redo;
mod rotation;
pub mod sort;
pub mod space;
mod table;
pub mod tempfile;
mod transfer;
mod txn;
pub(crate) mod undo;

pub use bulk::{BulkLoadReport, BulkLoader};
pub use catalog::Encrypted;
pub use db::{Db, Recovered, Stats, VerifyReport};
pub use error::{Error, Result};
pub use options::{EncryptTables, KeySource, Options};
pub use rotation::{EncryptionStatus, Progress, RotationPolicy, RotationReport, STATUS_COLUMNS};
pub use strongbox_wal::{FlushAtCommit, LogStats};
pub use table::{Table, TableInfo, TableOptions};
pub use transfer::{ExportReport, ImportOptions, ImportReport};
pub use txn::{Scan, Transaction};
