//! Peer databases behind cargo features: the same workloads against other embedded stores.
//!
//! Each peer is a [`Target`] adapter in its own file, compiled only with the cargo feature of
//! the same name (`peers` turns on the three that build quickly), so the default build pays
//! for none of them. [`open_peer`] opens one by name; [`PEERS_BUILT_IN`] lists what this build
//! holds.
//!
//! | peer        | feature     | adapter  | [`Durability::Durable`] / [`Durability::Relaxed`]               | key space                                                |
//! |-------------|-------------|----------|-----------------------------------------------------------------|----------------------------------------------------------|
//! | `redb`      | `redb`      | `Redb`   | `Durability::Immediate` / `Durability::None`                    | table `usertable`, `&[u8]` → `&[u8]`                     |
//! | `sled`      | `sled`      | `Sled`   | `Db::flush` after each write / sled's own flush every 500 ms    | the default tree, raw bytes                              |
//! | `sqlite`    | `sqlite`    | `Sqlite` | WAL, `synchronous=FULL` / WAL, `synchronous=NORMAL`             | `usertable(key BLOB PRIMARY KEY, value BLOB) WITHOUT ROWID` |
//! | `sqlcipher` | `sqlcipher` | `Sqlite` | as `sqlite`                                                     | as `sqlite`, every page encrypted under a random 256-bit raw key |
//!
//! What a crash loses under [`Durability::Relaxed`] differs by peer, so compare relaxed runs
//! with care:
//!
//! - redb: every commit since the last durable one. A `Durability::None` commit is never
//!   synced by itself; redb makes the pending ones durable on a clean close.
//! - sled: up to sled's flush interval (`flush_every_ms`, 500 ms by default), even on a
//!   process crash, since sled buffers its log in memory.
//! - SQLite: nothing on a process crash (each commit is written to the WAL file); on an OS
//!   crash or power loss, the commits since the WAL was last synced, which `NORMAL` does
//!   only at checkpoints.
//!
//! [`Durability::Durable`] means the same for all: a commit has been synced when it returns,
//! like the engine's `FlushAtCommit::EveryCommit`.
//!
//! Key spaces are raw byte strings in byte order everywhere (SQLite compares BLOBs with
//! `memcmp`), so a scan reads the same records from every peer. `WITHOUT ROWID` makes the
//! SQLite table a B-tree clustered on the key, as the others are.
//!
//! Both SQLite features link one `libsqlite3-sys`: with `sqlite` and `sqlcipher` on together
//! it builds SQLCipher, and the plain `sqlite` peer then runs SQLCipher with no key, which
//! reads and writes the plain SQLite format (SQLCipher encrypts nothing without a key).
//! Measure `sqlite` from a build without `sqlcipher` when the difference matters.

use std::path::Path;

use super::target::{Target, TargetError, TargetResult};

#[cfg(feature = "redb")]
mod redb;
#[cfg(feature = "sled")]
mod sled;
#[cfg(any(feature = "sqlite", feature = "sqlcipher"))]
mod sqlite;

#[cfg(feature = "redb")]
pub use self::redb::Redb;
#[cfg(feature = "sled")]
pub use self::sled::Sled;
#[cfg(any(feature = "sqlite", feature = "sqlcipher"))]
pub use self::sqlite::Sqlite;

/// Every peer [`open_peer`] knows, built in or not.
pub const PEERS: &[&str] = &["redb", "sled", "sqlite", "sqlcipher"];

/// The peers this build holds, in the order of [`PEERS`].
pub const PEERS_BUILT_IN: &[&str] = &[
    #[cfg(feature = "redb")]
    "redb",
    #[cfg(feature = "sled")]
    "sled",
    #[cfg(feature = "sqlite")]
    "sqlite",
    #[cfg(feature = "sqlcipher")]
    "sqlcipher",
];

/// Whether a commit is synced before it returns; the module docs show what each peer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is on stable storage when it returns.
    Durable,
    /// Commits are not synced one by one; a crash can lose the last ones.
    Relaxed,
}

/// Opens (or creates) peer `name`'s database in `dir`, creating `dir` if needed.
///
/// Each peer keeps its own file (`redb.redb`, `sqlite.db`, `sqlcipher.db`) or directory
/// (`sled/`) there, so one directory can hold them all. `sqlcipher` gets a fresh random
/// key that is never shown, so its database cannot be opened again afterwards; use
/// `Sqlite::open_encrypted` to keep the key.
// With no peer built in, every arm that uses `dir` and `durability` is compiled out.
#[cfg_attr(
    not(any(
        feature = "redb",
        feature = "sled",
        feature = "sqlite",
        feature = "sqlcipher"
    )),
    allow(unused_variables)
)]
pub fn open_peer(
    name: &str,
    dir: &Path,
    durability: Durability,
) -> TargetResult<Box<dyn Target + Send>> {
    let Some(&peer) = PEERS.iter().find(|&&peer| peer == name) else {
        return Err(TargetError::Setup(format!(
            "unknown peer `{name}`; the peers are {}",
            PEERS.join(", ")
        )));
    };
    match peer {
        #[cfg(feature = "redb")]
        "redb" => {
            let path = shared::file_in(dir, "redb.redb")?;
            Ok(Box::new(Redb::open(path, durability)?))
        }
        #[cfg(feature = "sled")]
        "sled" => {
            let path = shared::file_in(dir, "sled")?;
            Ok(Box::new(Sled::open(path, durability)?))
        }
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let path = shared::file_in(dir, "sqlite.db")?;
            Ok(Box::new(Sqlite::open(path, durability)?))
        }
        #[cfg(feature = "sqlcipher")]
        "sqlcipher" => {
            let path = shared::file_in(dir, "sqlcipher.db")?;
            let key = Sqlite::random_key();
            Ok(Box::new(Sqlite::open_encrypted(path, durability, &key)?))
        }
        _ => Err(TargetError::PeerNotBuiltIn(peer)),
    }
}

/// What the adapters share: where files go, and how a transaction's operations are checked
/// and counted.
#[cfg(any(
    feature = "redb",
    feature = "sled",
    feature = "sqlite",
    feature = "sqlcipher"
))]
mod shared {
    use std::path::{Path, PathBuf};

    use crate::workload::spec::Op;
    use crate::workload::target::{Outcome, TargetError, TargetResult};

    /// `dir/name`, after creating `dir`.
    pub(super) fn file_in(dir: &Path, name: &str) -> TargetResult<PathBuf> {
        std::fs::create_dir_all(dir)
            .map_err(|e| TargetError::Setup(format!("creating {}: {e}", dir.display())))?;
        Ok(dir.join(name))
    }

    /// Whether a transaction's `ops` only read (point reads and scans), checked before it
    /// starts; `UnsupportedInTxn` if one of them is itself a transaction.
    pub(super) fn read_only(ops: &[Op]) -> TargetResult<bool> {
        let mut read_only = true;
        for op in ops {
            match op {
                Op::Read(_) | Op::Scan(..) => {}
                Op::Update(..) | Op::Insert(..) | Op::ReadModifyWrite(..) => read_only = false,
                Op::Txn(_) => return Err(TargetError::UnsupportedInTxn("nested transaction")),
            }
        }
        Ok(read_only)
    }

    /// Counts one point read (alone or in a read-modify-write) into `outcome`.
    pub(super) fn count_read(outcome: &mut Outcome, found: bool) {
        if found {
            outcome.records_read += 1;
        } else {
            outcome.misses += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_peer_names_the_missing_feature() {
        let dir = tempfile::tempdir().unwrap();
        for &peer in PEERS {
            match open_peer(peer, dir.path(), Durability::Relaxed) {
                Ok(target) => {
                    assert!(PEERS_BUILT_IN.contains(&peer));
                    assert_eq!(target.name(), peer);
                }
                Err(e) => {
                    assert!(!PEERS_BUILT_IN.contains(&peer), "{peer}: {e}");
                    let message = e.to_string();
                    assert_eq!(
                        message,
                        format!("peer `{peer}` is not built in: rebuild with `--features {peer}`")
                    );
                }
            }
        }
        let unknown = open_peer("rocksdb", dir.path(), Durability::Relaxed)
            .err()
            .unwrap();
        assert!(unknown.to_string().contains("unknown peer `rocksdb`"));
    }
}
