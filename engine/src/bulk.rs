//! Bulk loads through an external sort: [`Db::bulk_loader`] takes pairs in any order,
//! sorts them with [`ExternalSorter`] — spilling sorted runs to encrypted temporary files
//! (AES-GCM, key 2, else key 1: `tempfile.rs`) once they pass a memory budget — and then
//! inserts them in key order, in transactions of `batch` keys (a temporary table takes
//! them one autocommit write at a time). Inserting in key order fills leaves left to right,
//! so each leaf is split once and written once instead of being touched at random.
//!
//! The budget is a quarter of `buffer_pool_size`. Temporary files go to `tmpdir`
//! (default `<data>/tmp`), are deleted when the load ends, and any a crash left there are
//! deleted at the next open. With `encrypt_temp = off` (or no keyring) they are plain.

use crate::db::Db;
use crate::error::{Error, Result};
use crate::sort::ExternalSorter;
use crate::table::Table;
use crate::tempfile::TempFileKey;
use std::sync::Arc;

/// What a bulk load did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkLoadReport {
    /// Distinct keys written (for a key pushed twice, the last value wins).
    pub rows: u64,
    /// Sorted runs spilled to temporary files, and their bytes on disk.
    pub spilled_runs: usize,
    pub spilled_bytes: u64,
}

/// Collects pairs for one table; [`BulkLoader::finish`] writes them.
pub struct BulkLoader {
    db: Db,
    table: Table,
    sorter: ExternalSorter,
}

impl Db {
    /// Starts a bulk load into `table` (see the module doc).
    pub fn bulk_loader(&self, table: &Table) -> Result<BulkLoader> {
        self.check_open()?;
        let inner = &self.inner;
        let dir = inner.temp_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let key = TempFileKey::for_keyring(inner.keyring.as_deref(), inner.options.encrypt_temp)?;
        let budget = (inner.options.buffer_pool_size / 4).max(1 << 20);
        Ok(BulkLoader {
            db: self.clone(),
            table: table.clone(),
            sorter: ExternalSorter::new(dir, Arc::new(key), budget),
        })
    }
}

impl BulkLoader {
    /// Adds one pair (checked against the table's key and value limits now, not at the end).
    pub fn push(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        crate::txn::check_sizes(&self.table, &key, &value)?;
        self.sorter.push(key, value)
    }

    /// Sorts what was pushed and writes it in key order, `batch` keys per transaction.
    pub fn finish(self, batch: usize) -> Result<BulkLoadReport> {
        let BulkLoader { db, table, sorter } = self;
        let mut report = BulkLoadReport {
            spilled_runs: sorter.spilled_runs(),
            spilled_bytes: sorter.spilled_bytes(),
            ..BulkLoadReport::default()
        };
        let batch = batch.max(1);
        let mut txn = None;
        let mut in_batch = 0;
        for pair in sorter.finish()? {
            let (key, value) = pair?;
            if table.is_temporary() {
                db.put(&table, &key, &value)?;
            } else {
                let open = match txn.as_mut() {
                    Some(open) => open,
                    None => txn.insert(db.begin()?),
                };
                open.put(&table, &key, &value)?;
                in_batch += 1;
                if in_batch == batch {
                    txn.take().expect("open").commit()?;
                    in_batch = 0;
                }
            }
            report.rows += 1;
        }
        if let Some(txn) = txn {
            txn.commit()?;
        }
        Ok(report)
    }
}
