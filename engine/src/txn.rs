//! Transactions.
//!
//! A [`Transaction`] buffers its writes privately and applies them to the trees at
//! `commit`; reads see the transaction's own writes laid over the committed data. So no
//! transaction ever reads another's uncommitted writes, and `rollback` (or dropping the
//! transaction) simply forgets the buffer.
//!
//! What this version does not do yet (the durability work adds it with the redo and undo
//! logs): commit is not atomic against a crash, concurrent commits to the same key are
//! last-writer-wins, and a commit becomes durable only at the next checkpoint or close.

use crate::btree::RangeIter;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::table::Table;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// Pending writes of one table: key -> `Some(value)` to put, `None` to delete.
type WriteSet = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
/// One entry of a [`WriteSet`].
type PendingWrite = (Vec<u8>, Option<Vec<u8>>);

/// A unit of work over one or more tables. Dropping it without `commit` rolls it back.
#[derive(Debug)]
pub struct Transaction<'db> {
    db: &'db Db,
    /// Per table (by space id): the handle and its pending writes.
    writes: BTreeMap<u32, (Table, WriteSet)>,
}

impl Db {
    /// Starts a transaction.
    pub fn begin(&self) -> Result<Transaction<'_>> {
        self.check_open()?;
        Ok(Transaction {
            db: self,
            writes: BTreeMap::new(),
        })
    }

    /// Reads one key (autocommit).
    pub fn get(&self, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        self.check_table(table)?;
        let _alive = table.alive()?;
        table.tree().get(key)
    }

    /// Writes one key in its own transaction.
    pub fn put(&self, table: &Table, key: &[u8], value: &[u8]) -> Result<()> {
        let mut txn = self.begin()?;
        txn.put(table, key, value)?;
        txn.commit()
    }

    /// Deletes one key in its own transaction; true if it existed.
    pub fn delete(&self, table: &Table, key: &[u8]) -> Result<bool> {
        let mut txn = self.begin()?;
        let existed = txn.delete(table, key)?;
        txn.commit()?;
        Ok(existed)
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
        self.check_open()?;
        self.check_table(table)?;
        Ok(Scan::new(table, &unpack(&range), WriteSet::new(), reverse))
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
    /// The value of `key` as this transaction sees it.
    pub fn get(&self, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.check_table(table)?;
        if let Some(pending) = self.pending(table).and_then(|writes| writes.get(key)) {
            return Ok(pending.clone());
        }
        self.db.get(table, key)
    }

    /// Sets `key` to `value` (applied at commit).
    pub fn put(&mut self, table: &Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.check_table(table)?;
        let _alive = table.alive()?;
        let max = table.max_key_len();
        if key.len() > max {
            return Err(crate::Error::KeyTooLarge {
                len: key.len(),
                max,
            });
        }
        if value.len() > crate::btree::MAX_VALUE_LEN {
            return Err(crate::Error::ValueTooLarge {
                len: value.len(),
                max: crate::btree::MAX_VALUE_LEN,
            });
        }
        self.writes_of(table)
            .insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    /// Deletes `key` (applied at commit); true if it exists as this transaction sees it.
    pub fn delete(&mut self, table: &Table, key: &[u8]) -> Result<bool> {
        let existed = self.get(table, key)?.is_some();
        self.writes_of(table).insert(key.to_vec(), None);
        Ok(existed)
    }

    /// A lazy scan as this transaction sees the table.
    pub fn range<'k, R: RangeBounds<&'k [u8]>>(
        &self,
        table: &Table,
        range: R,
        reverse: bool,
    ) -> Result<Scan> {
        self.db.check_open()?;
        self.db.check_table(table)?;
        let range = unpack(&range);
        let overlay: WriteSet = self
            .pending(table)
            .filter(|_| !is_empty_range(range.start_bound(), range.end_bound()))
            .map(|writes| {
                writes
                    .range::<[u8], _>((range.start_bound(), range.end_bound()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Scan::new(table, &range, overlay, reverse))
    }

    /// Applies every write. See the module doc for what is not yet guaranteed.
    pub fn commit(mut self) -> Result<()> {
        self.db.check_open()?;
        for (_, (table, writes)) in std::mem::take(&mut self.writes) {
            let _alive = table.alive()?;
            for (key, value) in writes {
                match value {
                    Some(value) => table.tree().put(&key, &value)?,
                    None => {
                        table.tree().delete(&key)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Forgets every write.
    pub fn rollback(self) {}

    fn pending(&self, table: &Table) -> Option<&WriteSet> {
        self.writes.get(&table.space_id()).map(|(_, writes)| writes)
    }

    fn writes_of(&mut self, table: &Table) -> &mut WriteSet {
        &mut self
            .writes
            .entry(table.space_id())
            .or_insert_with(|| (table.clone(), WriteSet::new()))
            .1
    }
}

/// A lazy scan: committed entries from the tree merged with a transaction's pending
/// writes (which win on equal keys; pending deletes hide entries).
#[derive(Debug)]
pub struct Scan {
    table: Table,
    committed: Peekable<RangeIter>,
    overlay: Peekable<std::vec::IntoIter<PendingWrite>>,
    reverse: bool,
}

impl Scan {
    fn new<R: RangeBounds<[u8]>>(
        table: &Table,
        range: &R,
        overlay: WriteSet,
        reverse: bool,
    ) -> Scan {
        let owned = |bound: Bound<&[u8]>| match bound {
            Bound::Included(key) => Bound::Included(key.to_vec()),
            Bound::Excluded(key) => Bound::Excluded(key.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let committed = table.tree().range(
            owned(range.start_bound()),
            owned(range.end_bound()),
            reverse,
        );
        let mut overlay: Vec<_> = overlay.into_iter().collect();
        if reverse {
            overlay.reverse();
        }
        Scan {
            table: table.clone(),
            committed: committed.peekable(),
            overlay: overlay.into_iter().peekable(),
            reverse,
        }
    }
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

/// True if `a` comes before `b` in scan order.
fn precedes(reverse: bool, a: &[u8], b: &[u8]) -> bool {
    if reverse {
        a > b
    } else {
        a < b
    }
}

impl Iterator for Scan {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let _alive = match self.table.alive() {
                Ok(guard) => guard,
                Err(error) => return Some(Err(error)),
            };
            let reverse = self.reverse;
            let take_overlay = match (self.committed.peek(), self.overlay.peek()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(Err(_)), Some(_)) => false,
                (Some(Ok((committed, _))), Some((pending, _))) => {
                    if committed == pending {
                        self.committed.next(); // shadowed by the pending write
                        true
                    } else {
                        precedes(reverse, pending, committed)
                    }
                }
            };
            if !take_overlay {
                return self.committed.next();
            }
            let (key, value) = self.overlay.next().expect("peeked");
            if let Some(value) = value {
                return Some(Ok((key, value)));
            }
        }
    }
}
