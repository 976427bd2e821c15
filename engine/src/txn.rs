//! Transactions (`docs/durability.md` rules 4–6).
//!
//! A [`Transaction`] changes the B+tree leaves **in place**, as InnoDB does. For each key
//! it writes, the first time:
//!
//! ```text
//!   lock_exclusive(txn, space, key)      wait for another writer (lock_wait_timeout)
//!   before = tree.get(key)               the committed value (lock.rs, invariant C)
//!   undo log += (space, key, before)     its own mtr(s), before the tree change
//!   capture_before_image(before)         readers now see `before` for this key
//!   tree.put / tree.delete               an mtr of its own
//! ```
//!
//! The undo log is created and registered in the undo directory at the first write.
//! **Commit**: one mtr carries the `Commit` record and either frees a small undo log and
//! clears its directory slot, or marks the slot finished (a large log is purged a few pages
//! per mtr afterwards) — that batch is the commit point — then `log.commit` waits as
//! `flush_log_at_commit` says, and only then are the locks released (so readers never see
//! a commit the log could lose). Autocommit `Db::put` / `Db::delete` skip the undo log:
//! one tree operation is one atomic mtr. **Rollback** (also on drop, and when commit fails): the
//! undo records are put back newest first, each as an ordinary logged change, then the
//! slot is marked finished with a `Rollback` record, the locks released and the log purged.
//! After a crash, recovery does the same for every slot not marked finished
//! (`recovery.rs`).
//!
//! Isolation: no transaction reads another's uncommitted writes (readers get the captured
//! before-image, `lock.rs`), and two transactions never hold uncommitted changes to one key
//! at once. A rollback that fails half-way (an IO error) is tried again when the
//! transaction drops; if that fails too, it keeps its locks until restart, so nobody sees
//! the half-restored keys, and recovery finishes it.

use crate::btree::{BTree, RangeIter, ReadView};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::lock::{Acquired, Outcome, TxnId};
use crate::mtr::{pages_per_mtr, Mtr};
use crate::recovery;
use crate::table::Table;
use crate::undo::{UndoLog, UndoRecord};
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use strongbox_wal::Record;

/// A unit of work over one or more tables. Dropping it without `commit` rolls it back.
#[derive(Debug)]
pub struct Transaction<'db> {
    db: &'db Db,
    id: TxnId,
    /// The undo log and its directory slot, from the first write on.
    undo: Option<(UndoLog, usize)>,
    /// Committed or rolled back (or tried to).
    finished: bool,
}

impl Db {
    /// Starts a transaction.
    pub fn begin(&self) -> Result<Transaction<'_>> {
        self.check_open()?;
        Ok(Transaction {
            db: self,
            id: self.inner.next_txn_id(),
            undo: None,
            finished: false,
        })
    }

    /// Reads one key's committed value (autocommit).
    pub fn get(&self, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(None, table, key)
    }

    /// Writes one key in its own transaction.
    pub fn put(&self, table: &Table, key: &[u8], value: &[u8]) -> Result<()> {
        check_sizes(table, key, value)?;
        self.autocommit(table, key, |tree| tree.put(key, value))
    }

    /// Deletes one key in its own transaction; true if it existed.
    pub fn delete(&self, table: &Table, key: &[u8]) -> Result<bool> {
        self.autocommit(table, key, |tree| tree.delete(key))
    }

    /// A one-key transaction. It needs no undo log: its change is one B+tree operation, and
    /// the operation's mtr is atomic by itself (a large value's overflow chain is written
    /// first in mtrs of its own; a crash between them leaks the chain, never half a value).
    /// So: lock the key, show readers its committed value, change the tree, make the
    /// change durable as `flush_log_at_commit` says, release.
    fn autocommit<T>(
        &self,
        table: &Table,
        key: &[u8],
        change: impl FnOnce(&BTree) -> Result<T>,
    ) -> Result<T> {
        self.check_open()?;
        self.check_table(table)?;
        let _alive = table.alive()?;
        let inner = &self.inner;
        let (id, space_id) = (inner.next_txn_id(), table.tree().lock_space());
        inner
            .locks()
            .lock_exclusive(id, space_id, key)
            .map_err(|timeout| timeout.for_table(table.name()))?;
        let result = (|| {
            let before = table.tree().get(key)?;
            inner
                .locks()
                .capture_before_image(id, space_id, key, before);
            let outcome = change(table.tree())?;
            if !table.state.temporary {
                // A temporary table's pages are never logged: nothing to make durable.
                inner.log().commit(inner.log().current_lsn())?;
            }
            Ok(outcome)
        })();
        let outcome = match result {
            Ok(_) => Outcome::Committed,
            Err(_) => Outcome::RolledBack,
        };
        inner.locks().release_all(id, outcome);
        result
    }

    /// A lazy scan of committed data in key order (`reverse` for descending).
    ///
    /// `range` is any range of byte-string keys: `..`, `&b"a"[..]..&b"m"[..]`,
    /// `(Bound::Excluded(k), Bound::Unbounded)`, …
    pub fn range<'k, R: RangeBounds<&'k [u8]>>(
        &self,
        table: &Table,
        range: R,
        reverse: bool,
    ) -> Result<Scan> {
        self.scan(None, table, &unpack(&range), reverse)
    }

    fn read(&self, reader: Option<TxnId>, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        self.check_table(table)?;
        let _alive = table.alive()?;
        self.inner
            .locks()
            .read_committed(reader, table.tree().lock_space(), key, || {
                table.tree().get(key)
            })
    }

    fn scan<R: RangeBounds<[u8]>>(
        &self,
        reader: Option<TxnId>,
        table: &Table,
        range: &R,
        reverse: bool,
    ) -> Result<Scan> {
        self.check_open()?;
        self.check_table(table)?;
        let owned = |bound: Bound<&[u8]>| bound.map(<[u8]>::to_vec);
        let view = ReadView {
            locks: Arc::clone(self.inner.locks()),
            reader,
        };
        let entries = table
            .tree()
            .range(
                owned(range.start_bound()),
                owned(range.end_bound()),
                reverse,
            )
            .with_view(view);
        Ok(Scan {
            table: table.clone(),
            entries,
        })
    }

    /// Refuses a handle of another `Db` — typically one opened earlier on the same directory
    /// and closed since — with `NoSuchTable`: its pages live in that database's buffer pool,
    /// so writes through it would be lost, or would overwrite this database's pages when
    /// that pool evicts them.
    fn check_table(&self, table: &Table) -> Result<()> {
        if Arc::ptr_eq(table.tree().pool(), &self.inner.pool) {
            Ok(())
        } else {
            Err(Error::NoSuchTable(table.name().to_string()))
        }
    }
}

impl<'db> Transaction<'db> {
    /// The value of `key` as this transaction sees it: its own writes, else committed data.
    pub fn get(&self, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.read(Some(self.id), table, key)
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, table: &Table, key: &[u8], value: &[u8]) -> Result<()> {
        check_sizes(table, key, value)?;
        self.write(table, key, Some(value))?;
        Ok(())
    }

    /// Deletes `key`; true if it existed as this transaction sees it.
    pub fn delete(&mut self, table: &Table, key: &[u8]) -> Result<bool> {
        self.write(table, key, None)
    }

    /// A lazy scan as this transaction sees the table.
    pub fn range<'k, R: RangeBounds<&'k [u8]>>(
        &self,
        table: &Table,
        range: R,
        reverse: bool,
    ) -> Result<Scan> {
        self.db.scan(Some(self.id), table, &unpack(&range), reverse)
    }

    /// Makes every write durable (as `flush_log_at_commit` promises) and visible. If it
    /// fails, the transaction is rolled back and the error returned.
    pub fn commit(mut self) -> Result<()> {
        self.finished = true;
        let Some((undo, slot)) = self.undo.take() else {
            self.db
                .inner
                .locks()
                .release_all(self.id, Outcome::Committed);
            return Ok(());
        };
        let inner = &self.db.inner;
        let committed = (|| {
            let pages = UndoLog::pages(&inner.pool, inner.system_alloc(), undo.first_page())?;
            let mut mtr = Mtr::start(Some(inner.log()), &inner.pool)?;
            // A small log is freed in the commit's own mtr (pages first: the allocation
            // lock comes before the directory page, as in `register`); a large one is
            // marked finished and purged a few pages per mtr afterwards.
            let purge_later = pages.len() > pages_per_mtr(&inner.pool);
            if purge_later {
                inner.undo_directory().mark_finished(&mtr, slot)?;
            } else {
                for &page_no in &pages {
                    inner.system_alloc().free(&mtr, page_no)?;
                }
                inner.undo_directory().unregister(&mtr, slot)?;
            }
            mtr.push_record(Record::Commit { txn_id: self.id });
            let lsn = mtr.commit()?.expect("a commit record was logged");
            inner.log().commit(lsn)?;
            Ok(purge_later)
        })();
        let purge_later = match committed {
            Ok(purge_later) => purge_later,
            Err(error) => {
                self.undo = Some((undo, slot));
                let _ = self.roll_back();
                return Err(error);
            }
        };
        inner.locks().release_all(self.id, Outcome::Committed);
        if purge_later {
            // The commit is durable; a purge that fails here is finished by the next start.
            let _ = self.purge(&undo, slot);
        }
        Ok(())
    }

    /// Undoes every write.
    pub fn rollback(mut self) -> Result<()> {
        self.roll_back()
    }

    /// Locks `key` for this transaction (waiting for another writer, like a write would)
    /// and returns its value: SQL's `SELECT … FOR UPDATE`. Nobody else can change the key
    /// until this transaction ends, so a read-modify-write (INCR) cannot lose an update.
    pub fn get_for_update(&mut self, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let _alive = table.alive()?;
        self.lock_for_write(table, key)?;
        table.tree().get(key)
    }

    fn write(&mut self, table: &Table, key: &[u8], value: Option<&[u8]>) -> Result<bool> {
        let _alive = table.alive()?;
        let existed = self.lock_for_write(table, key)?;
        match value {
            Some(value) => table.tree().put(key, value)?,
            None => {
                table.tree().delete(key)?;
            }
        }
        Ok(existed)
    }

    /// Takes the key lock for a write; the first time, logs the key's committed value as
    /// undo and shows it to readers (rule: before-image before change). Returns whether the
    /// key exists as this transaction sees it.
    /// The caller holds `table.alive()`.
    fn lock_for_write(&mut self, table: &Table, key: &[u8]) -> Result<bool> {
        self.db.check_open()?;
        self.db.check_table(table)?;
        if table.state.temporary {
            return Err(Error::InvalidOption {
                name: "transaction",
                problem: format!(
                    "{:?} is a temporary table: its writes are autocommit only (Db::put, \
                     Db::delete), since its pages are never logged",
                    table.name()
                ),
            });
        }
        let space_id = table.space_id();
        let locks = self.db.inner.locks();
        let acquired = locks
            .lock_exclusive(self.id, space_id, key)
            .map_err(|timeout| timeout.for_table(table.name()))?;
        let existed = match acquired {
            Acquired::New => {
                let before = table.tree().get(key)?;
                let existed = before.is_some();
                self.log_undo(UndoRecord {
                    space_id,
                    key: key.to_vec(),
                    before: before.clone(),
                })?;
                locks.capture_before_image(self.id, space_id, key, before);
                existed
            }
            Acquired::AlreadyHeld => table.tree().get(key)?.is_some(),
        };
        Ok(existed)
    }

    /// Appends `record` to this transaction's undo log, creating and registering the log
    /// (in one mtr) at the first write.
    fn log_undo(&mut self, record: UndoRecord) -> Result<()> {
        let inner = &self.db.inner;
        if self.undo.is_none() {
            let mtr = Mtr::start(Some(inner.log()), &inner.pool)?;
            let log = UndoLog::create(
                &mtr,
                Arc::clone(&inner.pool),
                Arc::clone(inner.system_alloc()),
                Some(Arc::clone(inner.log())),
                self.id,
            )?;
            let slot = inner
                .undo_directory()
                .register(&mtr, self.id, log.first_page())?;
            mtr.commit()?;
            self.undo = Some((log, slot));
        }
        let (log, _) = self.undo.as_mut().expect("created above");
        log.append(&record)
    }

    fn roll_back(&mut self) -> Result<()> {
        self.finished = true;
        let inner = &self.db.inner;
        let Some((undo, slot)) = self.undo.take() else {
            inner.locks().release_all(self.id, Outcome::RolledBack);
            return Ok(());
        };
        let undone = (|| {
            let (_, records) =
                UndoLog::read_all(&inner.pool, inner.system_alloc(), undo.first_page())?;
            for record in records.iter().rev() {
                recovery::undo_one(self.db, record)?;
            }
            let mut mtr = Mtr::start(Some(inner.log()), &inner.pool)?;
            inner.undo_directory().mark_finished(&mtr, slot)?;
            mtr.push_record(Record::Rollback { txn_id: self.id });
            mtr.commit()
        })();
        if let Err(error) = undone {
            // Not marked finished and the locks still held, so nobody else changed these
            // keys: keep the undo log, and `Drop` tries again (putting a before-image back
            // twice is harmless). A failed read is often transient.
            self.undo = Some((undo, slot));
            self.finished = false;
            return Err(error);
        }
        inner.locks().release_all(self.id, Outcome::RolledBack);
        self.purge(&undo, slot)
    }

    fn purge(&self, undo: &UndoLog, slot: usize) -> Result<()> {
        let inner = &self.db.inner;
        UndoLog::purge(
            &inner.pool,
            inner.system_alloc(),
            Some(inner.log()),
            inner.undo_directory(),
            slot,
            undo.first_page(),
        )
    }
}

impl Drop for Transaction<'_> {
    /// Rolls back a transaction that was neither committed nor rolled back, or whose
    /// rollback failed before it was marked finished: two tries at most.
    fn drop(&mut self) {
        for _ in 0..2 {
            if self.finished {
                break;
            }
            let _ = self.roll_back();
        }
    }
}

/// A lazy scan of one table: committed entries, and the scanning transaction's own.
#[derive(Debug)]
pub struct Scan {
    table: Table,
    entries: RangeIter,
}

/// Refuses a key or value the table cannot store, before anything is locked or logged.
pub(crate) fn check_sizes(table: &Table, key: &[u8], value: &[u8]) -> Result<()> {
    let max = table.max_key_len();
    if key.len() > max {
        return Err(Error::KeyTooLarge {
            len: key.len(),
            max,
        });
    }
    if value.len() > crate::btree::MAX_VALUE_LEN {
        return Err(Error::ValueTooLarge {
            len: value.len(),
            max: crate::btree::MAX_VALUE_LEN,
        });
    }
    Ok(())
}

/// The bounds of a range of `&[u8]` keys as a pair of `Bound<&[u8]>`.
fn unpack<'k, R: RangeBounds<&'k [u8]>>(range: &R) -> (Bound<&'k [u8]>, Bound<&'k [u8]>) {
    (
        range.start_bound().map(|k| *k),
        range.end_bound().map(|k| *k),
    )
}

/// True if no key lies within the bounds. `BTreeMap::range` panics on some such bounds
/// (start above end, or equal and both excluded), where a scan must simply be empty.
pub(crate) fn is_empty_range(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(start), Bound::Included(end)) => start > end,
        (Bound::Included(start) | Bound::Excluded(start), Bound::Excluded(end))
        | (Bound::Excluded(start), Bound::Included(end)) => start >= end,
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
    }
}

impl Iterator for Scan {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let _alive = match self.table.alive() {
            Ok(guard) => guard,
            Err(error) => return Some(Err(error)),
        };
        self.entries.next()
    }
}
