//! redb: copy-on-write B-trees in one file, one writer at a time, readers on snapshots.
//!
//! The key space is one table, `usertable`, of raw bytes. Every write runs in a write
//! transaction (redb has one at a time, so concurrent writers queue in `begin_write`) whose
//! commit is `Durability::Immediate` or `Durability::None` as [`Durability`] says; every
//! read runs in a read transaction, a snapshot that never waits for the writer.

use std::path::Path;

use ::redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, Table, TableDefinition};

use super::shared::{count_read, read_only};
use super::Durability;
use crate::workload::spec::Op;
use crate::workload::target::{Outcome, Target, TargetError, TargetResult};

const PEER: &str = "redb";

/// The one table every run uses.
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("usertable");

/// The table as a write transaction sees it.
type WriteTable<'txn> = Table<'txn, &'static [u8], &'static [u8]>;

/// The table as a read transaction sees it.
type ReadTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// A redb database holding the key space in one table.
#[derive(Debug)]
pub struct Redb {
    db: Database,
    /// What each write transaction's commit waits for.
    durability: ::redb::Durability,
}

impl Redb {
    /// Opens (or creates) the database file at `path`, and its table.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> TargetResult<Redb> {
        let db = Database::create(path).map_err(peer_error)?;
        let durability = match durability {
            Durability::Durable => ::redb::Durability::Immediate,
            Durability::Relaxed => ::redb::Durability::None,
        };
        let redb = Redb { db, durability };
        // Opening the table in a write transaction creates it, so reads always find it.
        redb.write(|_| Ok(()))?;
        Ok(redb)
    }

    /// Runs `f` on the table in one write transaction and commits it.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut WriteTable<'_>) -> Result<T, ::redb::Error>,
    ) -> TargetResult<T> {
        let run = || -> Result<T, ::redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(self.durability)?;
            let result = f(&mut txn.open_table(TABLE)?)?;
            txn.commit()?;
            Ok(result)
        };
        run().map_err(peer_error)
    }

    /// Runs `f` on the table in one read transaction.
    fn read<T>(&self, f: impl FnOnce(&ReadTable) -> Result<T, ::redb::Error>) -> TargetResult<T> {
        let run = || -> Result<T, ::redb::Error> { f(&self.db.begin_read()?.open_table(TABLE)?) };
        run().map_err(peer_error)
    }
}

fn peer_error(e: impl Into<::redb::Error>) -> TargetError {
    TargetError::Peer {
        peer: PEER,
        source: Box::new(e.into()),
    }
}

/// Reads up to `count` records from the first key `>= start`.
fn scan(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    start: &[u8],
    count: usize,
) -> Result<usize, ::redb::Error> {
    let mut read = 0;
    for entry in table.range(start..)?.take(count) {
        entry?;
        read += 1;
    }
    Ok(read)
}

impl Target for Redb {
    fn name(&self) -> String {
        PEER.to_string()
    }

    fn load(&self, batch: &[(Vec<u8>, Vec<u8>)]) -> TargetResult<()> {
        self.write(|table| {
            for (key, value) in batch {
                table.insert(key.as_slice(), value.as_slice())?;
            }
            Ok(())
        })
    }

    fn get(&self, key: &[u8]) -> TargetResult<Option<Vec<u8>>> {
        self.read(|table| Ok(table.get(key)?.map(|value| value.value().to_vec())))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> TargetResult<()> {
        self.write(|table| {
            table.insert(key, value)?;
            Ok(())
        })
    }

    fn delete(&self, key: &[u8]) -> TargetResult<bool> {
        self.write(|table| Ok(table.remove(key)?.is_some()))
    }

    fn scan(&self, start: &[u8], count: usize) -> TargetResult<usize> {
        self.read(|table| scan(table, start, count))
    }

    fn read_modify_write(&self, key: &[u8], value: &[u8]) -> TargetResult<bool> {
        self.write(|table| {
            let existed = table.get(key)?.is_some();
            table.insert(key, value)?;
            Ok(existed)
        })
    }

    fn transaction(&self, ops: &[Op]) -> TargetResult<Outcome> {
        let mut outcome = Outcome::default();
        if read_only(ops)? {
            self.read(|table| {
                for op in ops {
                    match op {
                        Op::Read(key) => count_read(&mut outcome, table.get(&key[..])?.is_some()),
                        Op::Scan(start, len) => outcome.records_read += scan(table, start, *len)?,
                        _ => unreachable!("read_only passed only reads and scans"),
                    }
                }
                Ok(())
            })?;
        } else {
            self.write(|table| {
                for op in ops {
                    match op {
                        Op::Read(key) => count_read(&mut outcome, table.get(&key[..])?.is_some()),
                        Op::Scan(start, len) => outcome.records_read += scan(table, start, *len)?,
                        Op::Update(key, value) | Op::Insert(key, value) => {
                            table.insert(&key[..], &value[..])?;
                        }
                        Op::ReadModifyWrite(key, value) => {
                            count_read(&mut outcome, table.get(&key[..])?.is_some());
                            table.insert(&key[..], &value[..])?;
                        }
                        Op::Txn(_) => unreachable!("read_only refused nested transactions"),
                    }
                }
                Ok(())
            })?;
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::target::tests::conformance;

    #[test]
    fn redb_conforms_durable_and_relaxed() {
        for durability in [Durability::Durable, Durability::Relaxed] {
            let dir = tempfile::tempdir().unwrap();
            let target = Redb::open(dir.path().join("redb.redb"), durability).unwrap();
            assert_eq!(target.name(), "redb");
            conformance(&target);
        }
    }

    #[test]
    fn redb_reopens_with_its_data() {
        for durability in [Durability::Durable, Durability::Relaxed] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("redb.redb");
            let target = Redb::open(&path, durability).unwrap();
            conformance(&target);
            drop(target);
            let target = Redb::open(&path, durability).unwrap();
            assert_eq!(target.get(b"user000002").unwrap(), Some(b"new".to_vec()));
            assert_eq!(target.scan(b"user", 1_000).unwrap(), 500);
        }
    }

    #[test]
    fn redb_is_shared_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let target = Redb::open(dir.path().join("redb.redb"), Durability::Relaxed).unwrap();
        crate::workload::target::tests::shared_across_threads(&target);
    }
}
