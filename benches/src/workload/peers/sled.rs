//! sled 0.34: a lock-free B-tree over a log-structured page store, in one directory.
//!
//! The key space is sled's default tree, raw bytes. Single writes are sled's own atomic
//! operations; a load is one atomic batch; a read-modify-write and a transaction that
//! writes are sled transactions, which retry their closure on conflict. With
//! [`Durability::Durable`] every write is followed by `Db::flush`, which writes sled's IO
//! buffers and fsyncs; with [`Durability::Relaxed`] sled's background thread flushes
//! every 500 ms.
//!
//! Two limits of sled 0.34 shape [`Target::transaction`]: it has no read snapshots, so a
//! read-only transaction is its reads run one after another; and a sled transaction cannot
//! scan, so a transaction that writes and scans is refused with
//! [`TargetError::UnsupportedInTxn`].

use std::convert::Infallible;
use std::fmt;
use std::path::Path;

use ::sled::transaction::ConflictableTransactionResult;
use ::sled::{Batch, Db};

use super::shared::{count_read, read_only};
use super::Durability;
use crate::workload::spec::Op;
use crate::workload::target::{Outcome, Target, TargetError, TargetResult};

const PEER: &str = "sled";

/// A sled database holding the key space in its default tree.
pub struct Sled {
    db: Db,
    durability: Durability,
}

impl fmt::Debug for Sled {
    /// sled's own `Debug` prints every record, so only the settings are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sled")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl Sled {
    /// Opens (or creates) the database in directory `path`.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> TargetResult<Sled> {
        let db = ::sled::Config::new()
            .path(path)
            .open()
            .map_err(peer_error)?;
        Ok(Sled { db, durability })
    }

    /// Makes the writes before it durable, when every commit must be.
    fn sync(&self) -> TargetResult<()> {
        if self.durability == Durability::Durable {
            self.db.flush().map_err(peer_error)?;
        }
        Ok(())
    }

    /// Runs `ops`, which write and do not scan, in one sled transaction.
    fn write_transaction(&self, ops: &[Op]) -> TargetResult<Outcome> {
        let outcome = self
            .db
            .transaction(
                |txn| -> ConflictableTransactionResult<Outcome, Infallible> {
                    // The closure may run again after a conflict: count afresh each time.
                    let mut outcome = Outcome::default();
                    for op in ops {
                        match op {
                            Op::Read(key) => count_read(&mut outcome, txn.get(key)?.is_some()),
                            Op::Update(key, value) | Op::Insert(key, value) => {
                                txn.insert(key.as_slice(), value.as_slice())?;
                            }
                            Op::ReadModifyWrite(key, value) => {
                                count_read(&mut outcome, txn.get(key)?.is_some());
                                txn.insert(key.as_slice(), value.as_slice())?;
                            }
                            Op::Scan(..) | Op::Txn(_) => {
                                unreachable!("transaction refused scans and nested transactions")
                            }
                        }
                    }
                    Ok(outcome)
                },
            )
            .map_err(peer_error)?;
        self.sync()?;
        Ok(outcome)
    }
}

fn peer_error(e: impl std::error::Error + Send + Sync + 'static) -> TargetError {
    TargetError::Peer {
        peer: PEER,
        source: Box::new(e),
    }
}

impl Target for Sled {
    fn name(&self) -> String {
        PEER.to_string()
    }

    fn load(&self, batch: &[(Vec<u8>, Vec<u8>)]) -> TargetResult<()> {
        let mut writes = Batch::default();
        for (key, value) in batch {
            writes.insert(key.as_slice(), value.as_slice());
        }
        self.db.apply_batch(writes).map_err(peer_error)?;
        self.sync()
    }

    fn get(&self, key: &[u8]) -> TargetResult<Option<Vec<u8>>> {
        let value = self.db.get(key).map_err(peer_error)?;
        Ok(value.map(|value| value.to_vec()))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> TargetResult<()> {
        self.db.insert(key, value).map_err(peer_error)?;
        self.sync()
    }

    fn delete(&self, key: &[u8]) -> TargetResult<bool> {
        let existed = self.db.remove(key).map_err(peer_error)?.is_some();
        self.sync()?;
        Ok(existed)
    }

    fn scan(&self, start: &[u8], count: usize) -> TargetResult<usize> {
        let mut read = 0;
        for entry in self.db.range(start..).take(count) {
            entry.map_err(peer_error)?;
            read += 1;
        }
        Ok(read)
    }

    fn read_modify_write(&self, key: &[u8], value: &[u8]) -> TargetResult<bool> {
        let existed = self
            .db
            .transaction(|txn| -> ConflictableTransactionResult<bool, Infallible> {
                let existed = txn.get(key)?.is_some();
                txn.insert(key, value)?;
                Ok(existed)
            })
            .map_err(peer_error)?;
        self.sync()?;
        Ok(existed)
    }

    fn transaction(&self, ops: &[Op]) -> TargetResult<Outcome> {
        if !read_only(ops)? {
            if ops.iter().any(|op| matches!(op, Op::Scan(..))) {
                return Err(TargetError::UnsupportedInTxn("scan"));
            }
            return self.write_transaction(ops);
        }
        // No snapshot to read from: each read sees the latest commit.
        let mut outcome = Outcome::default();
        for op in ops {
            match op {
                Op::Read(key) => count_read(&mut outcome, self.get(key)?.is_some()),
                Op::Scan(start, len) => outcome.records_read += self.scan(start, *len)?,
                _ => unreachable!("read_only passed only reads and scans"),
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::target::tests::conformance;

    #[test]
    fn sled_conforms_durable_and_relaxed() {
        for durability in [Durability::Durable, Durability::Relaxed] {
            let dir = tempfile::tempdir().unwrap();
            let target = Sled::open(dir.path().join("sled"), durability).unwrap();
            assert_eq!(target.name(), "sled");
            conformance(&target);
        }
    }

    #[test]
    fn sled_reopens_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sled");
        let target = Sled::open(&path, Durability::Durable).unwrap();
        conformance(&target);
        drop(target);
        let target = Sled::open(&path, Durability::Durable).unwrap();
        assert_eq!(target.get(b"user000002").unwrap(), Some(b"new".to_vec()));
        assert_eq!(target.scan(b"user", 1_000).unwrap(), 500);
    }

    #[test]
    fn sled_refuses_a_scan_in_a_writing_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let target = Sled::open(dir.path().join("sled"), Durability::Relaxed).unwrap();
        let ops = [
            Op::Insert(b"a".to_vec(), b"1".to_vec()),
            Op::Scan(b"a".to_vec(), 10),
        ];
        let refused = target.transaction(&ops);
        assert!(matches!(
            refused,
            Err(TargetError::UnsupportedInTxn("scan"))
        ));
        assert_eq!(target.get(b"a").unwrap(), None);
        let ops = [
            Op::Insert(b"a".to_vec(), b"1".to_vec()),
            Op::ReadModifyWrite(b"a".to_vec(), b"2".to_vec()),
            Op::Read(b"b".to_vec()),
        ];
        let outcome = target.transaction(&ops).unwrap();
        assert_eq!(
            outcome,
            Outcome {
                records_read: 1,
                misses: 1
            }
        );
        assert_eq!(target.get(b"a").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn sled_is_shared_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let target = Sled::open(dir.path().join("sled"), Durability::Relaxed).unwrap();
        crate::workload::target::tests::shared_across_threads(&target);
    }
}
