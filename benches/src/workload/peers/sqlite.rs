//! SQLite and SQLCipher through rusqlite: one `WITHOUT ROWID` table in WAL mode.
//!
//! The key space is `usertable(key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID`, a
//! B-tree clustered on the key. A `rusqlite::Connection` may be used by one thread at a
//! time, so [`Sqlite`] keeps a pool of idle connections: each call takes one (or opens a new
//! one when none is idle) and puts it back. In WAL mode readers run beside the one writer;
//! writers queue on SQLite's lock, waiting up to [`BUSY_TIMEOUT`] rather than failing.
//!
//! Every new connection runs, in order:
//!
//! 1. `PRAGMA key = "x'…'"` (SQLCipher only): a raw 256-bit key, so no key derivation runs.
//! 2. `busy_timeout`, and `PRAGMA synchronous = FULL` ([`Durability::Durable`]: the WAL is
//!    synced at every commit) or `NORMAL` ([`Durability::Relaxed`]: synced at checkpoints).
//!
//! The first connection also switches the file to WAL (which the file remembers) and creates
//! the table. Transactions that write begin `IMMEDIATE`, taking the write lock at once, so
//! two of them never deadlock upgrading from a read; read-only ones begin `DEFERRED` and
//! read one snapshot.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::shared::{count_read, read_only};
use super::Durability;
use crate::workload::spec::Op;
use crate::workload::target::{Outcome, Target, TargetError, TargetResult};

/// How long a writer waits for the write lock before its statement fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const CREATE: &str = "CREATE TABLE IF NOT EXISTS usertable \
     (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID";
const GET: &str = "SELECT value FROM usertable WHERE key = ?1";
const PUT: &str = "INSERT INTO usertable (key, value) VALUES (?1, ?2) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const DELETE: &str = "DELETE FROM usertable WHERE key = ?1";
const SCAN: &str = "SELECT key, value FROM usertable WHERE key >= ?1 ORDER BY key LIMIT ?2";

/// A SQLite (or SQLCipher) database file and a pool of connections to it.
pub struct Sqlite {
    /// `sqlite` or `sqlcipher`.
    peer: &'static str,
    path: PathBuf,
    /// SQLCipher's raw key; `None` for plain SQLite.
    key: Option<[u8; 32]>,
    /// `FULL` or `NORMAL`.
    synchronous: &'static str,
    /// Guards the idle connections; held only to take or return one, never during a query.
    idle: Mutex<Vec<Connection>>,
}

impl fmt::Debug for Sqlite {
    /// Never shows the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sqlite")
            .field("peer", &self.peer)
            .field("path", &self.path)
            .field("encrypted", &self.key.is_some())
            .field("synchronous", &self.synchronous)
            .finish_non_exhaustive()
    }
}

impl Sqlite {
    /// Opens (or creates) the plain SQLite database file at `path`.
    #[cfg(feature = "sqlite")]
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> TargetResult<Sqlite> {
        Sqlite::open_with("sqlite", path.as_ref(), durability, None)
    }

    /// Opens (or creates) the SQLCipher database file at `path`, encrypted under `key`.
    #[cfg(feature = "sqlcipher")]
    pub fn open_encrypted(
        path: impl AsRef<Path>,
        durability: Durability,
        key: &[u8; 32],
    ) -> TargetResult<Sqlite> {
        Sqlite::open_with("sqlcipher", path.as_ref(), durability, Some(*key))
    }

    /// A fresh random 256-bit key for [`Sqlite::open_encrypted`].
    #[cfg(feature = "sqlcipher")]
    pub fn random_key() -> [u8; 32] {
        let mut key = [0; 32];
        rand::fill(&mut key);
        key
    }

    fn open_with(
        peer: &'static str,
        path: &Path,
        durability: Durability,
        key: Option<[u8; 32]>,
    ) -> TargetResult<Sqlite> {
        let synchronous = match durability {
            Durability::Durable => "FULL",
            Durability::Relaxed => "NORMAL",
        };
        let sqlite = Sqlite {
            peer,
            path: path.to_path_buf(),
            key,
            synchronous,
            idle: Mutex::new(Vec::new()),
        };
        let conn = sqlite.connect().map_err(|e| sqlite.error(e))?;
        if sqlite.key.is_some() {
            // Plain SQLite ignores `PRAGMA key`: make sure this one would encrypt.
            let cipher: Option<String> = conn
                .query_row("PRAGMA cipher_version", [], |row| row.get(0))
                .optional()
                .map_err(|e| sqlite.error(e))?;
            if cipher.is_none() {
                return Err(TargetError::Setup(
                    "the linked SQLite is not SQLCipher; `PRAGMA key` would do nothing".into(),
                ));
            }
        }
        let setup = || -> rusqlite::Result<String> {
            let mode = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| {
                row.get::<_, String>(0)
            })?;
            conn.execute_batch(CREATE)?;
            Ok(mode)
        };
        let mode = setup().map_err(|e| sqlite.error(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(TargetError::Setup(format!(
                "{}: journal mode is {mode}, not WAL",
                path.display()
            )));
        }
        sqlite.idle.lock().push(conn);
        Ok(sqlite)
    }

    /// A new connection, keyed and set up as the module docs list.
    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open(&self.path)?;
        if let Some(key) = &self.key {
            let hex: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
            conn.execute_batch(&format!("PRAGMA key = \"x'{hex}'\";"))?;
        }
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", self.synchronous)?;
        Ok(conn)
    }

    /// Runs `f` on an idle connection, or a new one, and returns the connection to the pool.
    fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> TargetResult<T> {
        // Its own statement, so the pool's lock is released before connecting.
        let idle = self.idle.lock().pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.connect().map_err(|e| self.error(e))?,
        };
        // A failed transaction has rolled back when `f` returns, so the connection is
        // reusable either way.
        let result = f(&mut conn);
        self.idle.lock().push(conn);
        result.map_err(|e| self.error(e))
    }

    /// Runs `f` in one transaction that begins as `behavior` says, and commits it.
    fn in_transaction<T>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> TargetResult<T> {
        self.with_connection(|conn| {
            let txn = conn.transaction_with_behavior(behavior)?;
            let result = f(&txn)?;
            txn.commit()?;
            Ok(result)
        })
    }

    fn error(&self, e: rusqlite::Error) -> TargetError {
        TargetError::Peer {
            peer: self.peer,
            source: Box::new(e),
        }
    }
}

fn get(conn: &Connection, key: &[u8]) -> rusqlite::Result<Option<Vec<u8>>> {
    let mut statement = conn.prepare_cached(GET)?;
    statement.query_row((key,), |row| row.get(0)).optional()
}

fn put(conn: &Connection, key: &[u8], value: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached(PUT)?.execute((key, value))?;
    Ok(())
}

/// Reads up to `count` records, values included, from the first key `>= start`.
fn scan(conn: &Connection, start: &[u8], count: usize) -> rusqlite::Result<usize> {
    let limit = i64::try_from(count).unwrap_or(i64::MAX);
    let mut statement = conn.prepare_cached(SCAN)?;
    let mut rows = statement.query((start, limit))?;
    let mut read = 0;
    while let Some(row) = rows.next()? {
        row.get_ref(1)?;
        read += 1;
    }
    Ok(read)
}

impl Target for Sqlite {
    fn name(&self) -> String {
        self.peer.to_string()
    }

    fn load(&self, batch: &[(Vec<u8>, Vec<u8>)]) -> TargetResult<()> {
        self.in_transaction(TransactionBehavior::Immediate, |txn| {
            for (key, value) in batch {
                put(txn, key, value)?;
            }
            Ok(())
        })
    }

    fn get(&self, key: &[u8]) -> TargetResult<Option<Vec<u8>>> {
        self.with_connection(|conn| get(conn, key))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> TargetResult<()> {
        self.with_connection(|conn| put(conn, key, value))
    }

    fn delete(&self, key: &[u8]) -> TargetResult<bool> {
        self.with_connection(|conn| Ok(conn.prepare_cached(DELETE)?.execute((key,))? > 0))
    }

    fn scan(&self, start: &[u8], count: usize) -> TargetResult<usize> {
        self.with_connection(|conn| scan(conn, start, count))
    }

    fn read_modify_write(&self, key: &[u8], value: &[u8]) -> TargetResult<bool> {
        self.in_transaction(TransactionBehavior::Immediate, |txn| {
            let existed = get(txn, key)?.is_some();
            put(txn, key, value)?;
            Ok(existed)
        })
    }

    fn transaction(&self, ops: &[Op]) -> TargetResult<Outcome> {
        let behavior = if read_only(ops)? {
            TransactionBehavior::Deferred
        } else {
            TransactionBehavior::Immediate
        };
        self.in_transaction(behavior, |txn| {
            let mut outcome = Outcome::default();
            for op in ops {
                match op {
                    Op::Read(key) => count_read(&mut outcome, get(txn, key)?.is_some()),
                    Op::Scan(start, len) => outcome.records_read += scan(txn, start, *len)?,
                    Op::Update(key, value) | Op::Insert(key, value) => put(txn, key, value)?,
                    Op::ReadModifyWrite(key, value) => {
                        count_read(&mut outcome, get(txn, key)?.is_some());
                        put(txn, key, value)?;
                    }
                    Op::Txn(_) => unreachable!("read_only refused nested transactions"),
                }
            }
            Ok(outcome)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::target::tests::conformance;

    /// Whether any file in `dir` (the database, its WAL) holds `needle` in the clear.
    fn stored_in_clear(dir: &Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().any(|entry| {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            bytes.windows(needle.len()).any(|window| window == needle)
        })
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_conforms_durable_and_relaxed() {
        for durability in [Durability::Durable, Durability::Relaxed] {
            let dir = tempfile::tempdir().unwrap();
            let target = Sqlite::open(dir.path().join("sqlite.db"), durability).unwrap();
            assert_eq!(target.name(), "sqlite");
            conformance(&target);
        }
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_reopens_with_its_data_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sqlite.db");
        let target = Sqlite::open(&path, Durability::Relaxed).unwrap();
        conformance(&target);
        assert!(stored_in_clear(dir.path(), b"value499"));
        drop(target);
        let target = Sqlite::open(&path, Durability::Relaxed).unwrap();
        assert_eq!(target.get(b"user000002").unwrap(), Some(b"new".to_vec()));
        assert_eq!(target.scan(b"user", 1_000).unwrap(), 500);
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_is_shared_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let target = Sqlite::open(dir.path().join("sqlite.db"), Durability::Relaxed).unwrap();
        crate::workload::target::tests::shared_across_threads(&target);
    }

    #[cfg(feature = "sqlcipher")]
    #[test]
    fn sqlcipher_conforms_durable_and_relaxed() {
        for durability in [Durability::Durable, Durability::Relaxed] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("sqlcipher.db");
            let target = Sqlite::open_encrypted(path, durability, &Sqlite::random_key()).unwrap();
            assert_eq!(target.name(), "sqlcipher");
            conformance(&target);
        }
    }

    #[cfg(feature = "sqlcipher")]
    #[test]
    fn sqlcipher_reopens_with_its_key_only_and_stores_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sqlcipher.db");
        let key = Sqlite::random_key();
        let target = Sqlite::open_encrypted(&path, Durability::Durable, &key).unwrap();
        conformance(&target);
        assert!(!stored_in_clear(dir.path(), b"value499"));
        let debug = format!("{target:?}");
        assert!(debug.contains("encrypted: true") && !debug.contains(&format!("{key:?}")));
        drop(target);

        let wrong = Sqlite::open_encrypted(&path, Durability::Durable, &Sqlite::random_key());
        assert!(matches!(
            wrong,
            Err(TargetError::Peer {
                peer: "sqlcipher",
                ..
            })
        ));
        let target = Sqlite::open_encrypted(&path, Durability::Durable, &key).unwrap();
        assert_eq!(target.get(b"user000002").unwrap(), Some(b"new".to_vec()));
        assert_eq!(target.scan(b"user", 1_000).unwrap(), 500);
    }

    #[cfg(feature = "sqlcipher")]
    #[test]
    fn sqlcipher_is_shared_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sqlcipher.db");
        let key = Sqlite::random_key();
        let target = Sqlite::open_encrypted(path, Durability::Relaxed, &key).unwrap();
        crate::workload::target::tests::shared_across_threads(&target);
    }
}
