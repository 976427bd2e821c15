//! Crash recovery, the parts `Db::open` runs in order (`docs/durability.md` §3):
//!
//! ```text
//!  (A) repair_torn_pages      a page torn by the crash is rewritten from its doublewrite copy
//!  (B) redo::apply            the log from the checkpoint on, system space first, then tables
//!  (C) finish_transactions    every undo log in the undo directory:
//!                               not finished -> roll back (its undo records, newest first),
//!                                               mark finished + Rollback record, purge
//!                               finished     -> purge (the crash came between commit and purge)
//!  (D) checkpoint             (in Db::open) so the next crash starts from here
//! ```
//!
//! Rolling back reuses what a live rollback does ([`undo_one`]): each before-image is
//! written back as an ordinary logged tree change, so a crash *during* recovery is
//! recovered the same way (putting a before-image twice is the same as once).

use crate::db::Db;
use crate::doublewrite::Doublewrite;
use crate::error::Result;
use crate::mtr::Mtr;
use crate::space::SpaceSet;
use crate::undo::{UndoLog, UndoRecord};
use strongbox_wal::Record;

/// Phase A over every space open in `spaces`; returns how many pages it rewrote.
pub(crate) fn repair_torn_pages(doublewrite: &Doublewrite, spaces: &SpaceSet) -> Result<usize> {
    crate::doublewrite::repair_torn_pages(doublewrite, spaces)
        .map(|report| report.pages_repaired.len())
}

/// Phase C (see the module doc).
pub(crate) fn finish_transactions(db: &Db) -> Result<()> {
    let inner = &db.inner;
    let directory = inner.undo_directory();
    for active in directory.active()? {
        inner.saw_txn_id(active.txn_id);
        if !active.finished {
            let (_, records) =
                UndoLog::read_all(&inner.pool, inner.system_alloc(), active.first_page)?;
            for record in records.iter().rev() {
                undo_one(db, record)?;
            }
            let mut mtr = Mtr::start(Some(inner.log()), &inner.pool)?;
            directory.mark_finished(&mtr, active.slot)?;
            mtr.push_record(Record::Rollback {
                txn_id: active.txn_id,
            });
            mtr.commit()?;
            inner.recovered().lock().rolled_back += 1;
        } else {
            inner.recovered().lock().purged += 1;
        }
        UndoLog::purge(
            &inner.pool,
            inner.system_alloc(),
            Some(inner.log()),
            directory,
            active.slot,
            active.first_page,
        )?;
    }
    Ok(())
}

/// Puts one before-image back: the key gets its old value, or is deleted if it had none.
/// A record of a table dropped since is skipped.
pub(crate) fn undo_one(db: &Db, record: &UndoRecord) -> Result<()> {
    let Some(table) = db.inner.table_by_space(record.space_id) else {
        return Ok(());
    };
    match &record.before {
        Some(value) => table.tree.put(&record.key, value),
        None => table.tree.delete(&record.key).map(|_| ()),
    }
}
