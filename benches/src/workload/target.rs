//! The store adapter: the one seam between the workload generator and a database.
//!
//! A [`Target`] is shared by every worker thread (`&self` methods, `Sync`), so an adapter
//! that needs a connection per thread keeps them itself. [`Target::execute`] maps an
//! [`Op`] onto the handful of required methods, so an adapter only says how to read,
//! write and scan.
//!
//! | target      | adapter                          | what                                      |
//! |-------------|----------------------------------|-------------------------------------------|
//! | `embedded`  | [`Embedded`]                     | the Strongbox engine in this process      |
//! | `resp://…`  | [`Resp`](super::resp::Resp)      | any Redis-protocol server                 |
//! | peers       | [`peers`](super::peers)          | redb, sled, SQLite, SQLCipher, behind cargo features |
//!
//! Every adapter's tests run `tests::conformance` (put/get/scan/delete semantics).

use std::fmt;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use strongbox_engine::io::MemVfs;
use strongbox_engine::{Db, EncryptTables, FlushAtCommit, Options, Table, TableOptions};
use strongbox_keyring::provider::{MemoryKeyProvider, SYSTEM_KEY_ID};

use super::spec::Op;

/// Why a target operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum TargetError {
    /// The embedded engine refused or failed.
    Engine(strongbox_engine::Error),
    /// A transaction held an operation the target cannot run inside one.
    UnsupportedInTxn(&'static str),
    /// Setting the target up failed (a key, a connection).
    Setup(String),
    /// A RESP server answered a command with an error, or the connection to it failed.
    Resp(redis::RedisError),
    /// The target cannot run this kind of operation at all (a scan against a RESP server
    /// without `SB.RANGE`); the text says why and where it can run.
    Unsupported(String),
    /// A peer database (`redb`, `sled`, `sqlite`, `sqlcipher`) refused or failed.
    Peer {
        /// The peer's name, as [`Target::name`] gives it.
        peer: &'static str,
        /// What the peer reported.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The peer is known but this build left it out; rebuilding with the cargo feature of
    /// the same name puts it in.
    PeerNotBuiltIn(&'static str),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Engine(e) => write!(f, "engine: {e}"),
            TargetError::UnsupportedInTxn(kind) => {
                write!(f, "{kind} operations cannot run inside a transaction")
            }
            TargetError::Setup(message) => write!(f, "setting up the target: {message}"),
            TargetError::Resp(e) => write!(f, "resp: {e}"),
            TargetError::Unsupported(message) => write!(f, "{message}"),
            TargetError::Peer { peer, source } => write!(f, "{peer}: {source}"),
            TargetError::PeerNotBuiltIn(peer) => {
                write!(
                    f,
                    "peer `{peer}` is not built in: rebuild with `--features {peer}`"
                )
            }
        }
    }
}

impl std::error::Error for TargetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TargetError::Engine(e) => Some(e),
            TargetError::Resp(e) => Some(e),
            TargetError::Peer { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<strongbox_engine::Error> for TargetError {
    fn from(e: strongbox_engine::Error) -> TargetError {
        TargetError::Engine(e)
    }
}

impl From<redis::RedisError> for TargetError {
    fn from(e: redis::RedisError) -> TargetError {
        TargetError::Resp(e)
    }
}

pub type TargetResult<T> = Result<T, TargetError>;

/// What one [`Op`] did, for checks and per-operation statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Records read (a point read that found its key counts 1).
    pub records_read: usize,
    /// Point reads (including those in read-modify-writes) that found no record.
    pub misses: usize,
}

/// A database the workload generator can drive.
pub trait Target: Sync {
    /// A short name for reports (`embedded`, `resp://host:port`, …).
    fn name(&self) -> String;
    /// Loads a batch of records; the load phase calls this with batches of one thread's
    /// slice, and may call it from several threads at once.
    fn load(&self, batch: &[(Vec<u8>, Vec<u8>)]) -> TargetResult<()>;
    /// Reads one record.
    fn get(&self, key: &[u8]) -> TargetResult<Option<Vec<u8>>>;
    /// Writes one record (insert or overwrite).
    fn put(&self, key: &[u8], value: &[u8]) -> TargetResult<()>;
    /// Deletes one record; true if it existed.
    fn delete(&self, key: &[u8]) -> TargetResult<bool>;
    /// Reads up to `count` records in key order from the first key `>= start`; returns
    /// how many it read.
    fn scan(&self, start: &[u8], count: usize) -> TargetResult<usize>;
    /// Reads `key` and writes `value` to it so that no other write comes between; true if
    /// the key existed.
    fn read_modify_write(&self, key: &[u8], value: &[u8]) -> TargetResult<bool>;
    /// Runs `ops` (reads, scans, writes; no nested transactions) as one transaction.
    fn transaction(&self, ops: &[Op]) -> TargetResult<Outcome>;

    /// Whether [`Target::scan`], and scans inside [`Target::transaction`], can run at all;
    /// a runner asks before a workload with scans instead of failing on its first one.
    fn supports_scan(&self) -> bool {
        true
    }

    /// Runs one operation.
    fn execute(&self, op: &Op) -> TargetResult<Outcome> {
        let found = |hit: bool| Outcome {
            records_read: usize::from(hit),
            misses: usize::from(!hit),
        };
        Ok(match op {
            Op::Read(key) => found(self.get(key)?.is_some()),
            Op::Update(key, value) | Op::Insert(key, value) => {
                self.put(key, value)?;
                Outcome::default()
            }
            Op::Scan(start, len) => Outcome {
                records_read: self.scan(start, *len)?,
                misses: 0,
            },
            Op::ReadModifyWrite(key, value) => found(self.read_modify_write(key, value)?),
            Op::Txn(ops) => self.transaction(ops)?,
        })
    }
}

/// The table every embedded run uses.
pub const EMBEDDED_TABLE: &str = "usertable";

/// The Strongbox engine in this process: one table, [`EMBEDDED_TABLE`].
#[derive(Debug)]
pub struct Embedded {
    db: Db,
    table: Table,
}

impl Embedded {
    /// Opens (or creates) the database in `dir` with `options` and its table.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> TargetResult<Embedded> {
        let db = Db::open(dir, options)?;
        let table = match db.table(EMBEDDED_TABLE) {
            Ok(table) => table,
            Err(strongbox_engine::Error::NoSuchTable(_)) => {
                db.create_table(EMBEDDED_TABLE, TableOptions::default())?
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Embedded { db, table })
    }

    /// Options for a benchmark run: tables encrypted under a random 256-bit key 1 held in
    /// memory, `buffer_pool` bytes of pool, and the redo log flushed as `flush` says.
    pub fn options(buffer_pool: usize, flush: FlushAtCommit) -> TargetResult<Options> {
        let keys = Arc::new(MemoryKeyProvider::new());
        keys.add_random(SYSTEM_KEY_ID, 1, 256)
            .map_err(|e| TargetError::Setup(e.to_string()))?;
        Ok(Options::new()
            .key_provider(keys)
            .encrypt_tables(EncryptTables::On)
            .buffer_pool_size(buffer_pool)
            .flush_log_at_commit(flush))
    }

    /// An encrypted database on an in-memory file system: the CPU path alone, no disk.
    pub fn in_memory(buffer_pool: usize) -> TargetResult<Embedded> {
        let options = Embedded::options(buffer_pool, FlushAtCommit::WriteAtCommit)?
            .vfs(Arc::new(MemVfs::new()));
        Embedded::open("/strongbox-workload", options)
    }

    /// The database, for statistics and checkpoints.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Closes the database cleanly.
    pub fn close(self) -> TargetResult<()> {
        Ok(self.db.close()?)
    }
}

impl Target for Embedded {
    fn name(&self) -> String {
        "embedded".to_string()
    }

    fn load(&self, batch: &[(Vec<u8>, Vec<u8>)]) -> TargetResult<()> {
        let mut txn = self.db.begin()?;
        for (key, value) in batch {
            txn.put(&self.table, key, value)?;
        }
        Ok(txn.commit()?)
    }

    fn get(&self, key: &[u8]) -> TargetResult<Option<Vec<u8>>> {
        Ok(self.db.get(&self.table, key)?)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> TargetResult<()> {
        Ok(self.db.put(&self.table, key, value)?)
    }

    fn delete(&self, key: &[u8]) -> TargetResult<bool> {
        Ok(self.db.delete(&self.table, key)?)
    }

    fn scan(&self, start: &[u8], count: usize) -> TargetResult<usize> {
        let range = (Bound::Included(start), Bound::Unbounded);
        let mut read = 0;
        for entry in self.db.range(&self.table, range, false)?.take(count) {
            entry?;
            read += 1;
        }
        Ok(read)
    }

    fn read_modify_write(&self, key: &[u8], value: &[u8]) -> TargetResult<bool> {
        let mut txn = self.db.begin()?;
        let existed = txn.get_for_update(&self.table, key)?.is_some();
        txn.put(&self.table, key, value)?;
        txn.commit()?;
        Ok(existed)
    }

    fn transaction(&self, ops: &[Op]) -> TargetResult<Outcome> {
        let mut txn = self.db.begin()?;
        let mut outcome = Outcome::default();
        for op in ops {
            match op {
                Op::Read(key) => match txn.get(&self.table, key)? {
                    Some(_) => outcome.records_read += 1,
                    None => outcome.misses += 1,
                },
                Op::Update(key, value) | Op::Insert(key, value) => {
                    txn.put(&self.table, key, value)?
                }
                Op::Scan(start, len) => {
                    let range = (Bound::Included(&start[..]), Bound::Unbounded);
                    for entry in txn.range(&self.table, range, false)?.take(*len) {
                        entry?;
                        outcome.records_read += 1;
                    }
                }
                Op::ReadModifyWrite(key, value) => {
                    match txn.get_for_update(&self.table, key)? {
                        Some(_) => outcome.records_read += 1,
                        None => outcome.misses += 1,
                    }
                    txn.put(&self.table, key, value)?;
                }
                Op::Txn(_) => return Err(TargetError::UnsupportedInTxn("nested transaction")),
            }
        }
        txn.commit()?;
        Ok(outcome)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const POOL: usize = 8 << 20;

    fn key(n: u32) -> Vec<u8> {
        format!("user{n:06}").into_bytes()
    }

    /// The behaviour every adapter must show; each adapter's tests call it on a fresh,
    /// empty target.
    pub(crate) fn conformance(target: &dyn Target) {
        assert_eq!(target.get(b"missing").unwrap(), None);
        assert!(!target.delete(b"missing").unwrap());

        // put / get / overwrite / delete.
        target.put(b"alpha", b"1").unwrap();
        assert_eq!(target.get(b"alpha").unwrap(), Some(b"1".to_vec()));
        target.put(b"alpha", b"2").unwrap();
        assert_eq!(target.get(b"alpha").unwrap(), Some(b"2".to_vec()));
        assert!(target.delete(b"alpha").unwrap());
        assert_eq!(target.get(b"alpha").unwrap(), None);

        // load + scan: start inclusive, in key order, bounded by count and by the end.
        let batch: Vec<_> = (0..500)
            .map(|n| (key(n), format!("value{n}").into_bytes()))
            .collect();
        target.load(&batch[..250]).unwrap();
        target.load(&batch[250..]).unwrap();
        assert_eq!(target.get(&key(499)).unwrap(), Some(b"value499".to_vec()));
        assert_eq!(target.scan(&key(0), 100).unwrap(), 100);
        assert_eq!(target.scan(&key(450), 100).unwrap(), 50);
        assert_eq!(target.scan(b"user000010x", 5).unwrap(), 5);
        assert_eq!(target.scan(b"zzz", 10).unwrap(), 0);
        assert_eq!(target.scan(&key(0), 0).unwrap(), 0);
        // A deleted key is skipped by scans.
        assert!(target.delete(&key(1)).unwrap());
        assert_eq!(target.scan(&key(0), 1_000).unwrap(), 499);

        // read-modify-write reports whether the key existed and leaves the new value.
        assert!(target.read_modify_write(&key(2), b"new").unwrap());
        assert_eq!(target.get(&key(2)).unwrap(), Some(b"new".to_vec()));
        assert!(!target.read_modify_write(b"fresh", b"v").unwrap());
        assert_eq!(target.get(b"fresh").unwrap(), Some(b"v".to_vec()));

        // A read-only transaction like oltp-read-only's.
        let ops = vec![
            Op::Read(key(3)),
            Op::Read(key(1)),
            Op::Scan(key(100), 100),
            Op::Scan(key(490), 100),
        ];
        let outcome = target.transaction(&ops).unwrap();
        assert_eq!(
            outcome,
            Outcome {
                records_read: 1 + 100 + 10,
                misses: 1
            }
        );
        assert!(target.transaction(&[Op::Txn(vec![])]).is_err());

        // execute maps each Op onto the methods above.
        let insert = Op::Insert(key(600), b"i".to_vec());
        assert_eq!(target.execute(&insert).unwrap(), Outcome::default());
        let read = target.execute(&Op::Read(key(600))).unwrap();
        assert_eq!(read.records_read, 1);
        let miss = target.execute(&Op::Read(key(601))).unwrap();
        assert_eq!(miss.misses, 1);
        let update = Op::Update(key(600), b"u".to_vec());
        target.execute(&update).unwrap();
        assert_eq!(target.get(&key(600)).unwrap(), Some(b"u".to_vec()));
        let scan = target.execute(&Op::Scan(key(498), 10)).unwrap();
        assert_eq!(scan.records_read, 3);
        let rmw = Op::ReadModifyWrite(key(600), b"r".to_vec());
        assert_eq!(target.execute(&rmw).unwrap().records_read, 1);
        assert_eq!(target.get(&key(600)).unwrap(), Some(b"r".to_vec()));
    }

    #[test]
    fn embedded_in_memory_conforms() {
        let target = Embedded::in_memory(POOL).unwrap();
        assert_eq!(target.name(), "embedded");
        conformance(&target);
        target.close().unwrap();
    }

    #[test]
    fn embedded_on_disk_conforms_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let options = Embedded::options(POOL, FlushAtCommit::WriteAtCommit).unwrap();
        // The key lives in memory only: reopen with the same provider's options.
        let target = Embedded::open(dir.path(), options.clone()).unwrap();
        conformance(&target);
        target.close().unwrap();
        let target = Embedded::open(dir.path(), options).unwrap();
        assert_eq!(target.get(&key(2)).unwrap(), Some(b"new".to_vec()));
        target.close().unwrap();
    }

    /// Four threads writing their own keys and fighting over one read-modify-write key;
    /// every adapter's tests run it on a fresh, empty target.
    pub(crate) fn shared_across_threads(target: &dyn Target) {
        std::thread::scope(|s| {
            for t in 0..4u32 {
                s.spawn(move || {
                    for n in 0..200 {
                        let key = key(t * 1_000 + n);
                        target.put(&key, b"x").unwrap();
                        target.read_modify_write(b"counter", b"c").unwrap();
                        assert!(target.get(&key).unwrap().is_some());
                    }
                });
            }
        });
        assert_eq!(target.scan(b"user", 10_000).unwrap(), 800);
    }

    #[test]
    fn embedded_is_shared_across_threads() {
        let target = Embedded::in_memory(POOL).unwrap();
        shared_across_threads(&target);
        target.close().unwrap();
    }
}
