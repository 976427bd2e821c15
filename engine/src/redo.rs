//! Recovery phase B (`docs/durability.md` §3): apply the redo of complete mtr batches to the
//! pages, in LSN order.
//!
//! The input is `RecoveryReport::records`: every record of every *complete* batch from the
//! checkpoint on (the log drops a batch cut off by a crash whole, rule W7), so an mtr is
//! redone entirely or not at all (rule 2). For each page record:
//!
//! ```text
//!   page_no >= page_count of its space?
//!     PageImage  -> grow page_count to page_no + 1, BufferPool::create, copy the image
//!     PageDelta  -> corrupt: no earlier image in this recovery created the page
//!   else fetch through the pool (PageImage: a page never written, past the file's end or
//!   all zero, is created instead)
//!   page LSN >= record's batch_end_lsn?  -> skip: the change is already on the page
//!   else write the image or every range, then stamp batch_end_lsn as the page LSN
//! ```
//!
//! **Idempotence** (rule 3): a record is applied only to a page older than its batch, and
//! applying it makes the page exactly that old, so applying the same records again changes
//! nothing. The page LSN written is the batch's end LSN — what [`Mtr::commit`] stamped — so
//! every record of one batch compares against the same number.
//!
//! Other records are not page redo and are ignored here (counted in [`Applied::ignored`]):
//! `Commit` and `Rollback` feed phase C (undo), `Checkpoint` is a marker. `SpaceHeader`,
//! `CreateSpace` and `DropSpace` are not written yet (page 0 is persisted synchronously);
//! handling them is left to the work that starts logging them.
//!
//! Pages changed here are dirty in the pool; the caller flushes them (phase D checkpoint).
//!
//! [`Mtr::commit`]: crate::mtr::Mtr::commit

#![cfg_attr(
    not(test),
    expect(dead_code, reason = "wired into Db::open by the durability work")
)]

use std::io::ErrorKind;

use strongbox_wal::{LoggedRecord, Lsn, Record};

use crate::buffer::{BufferPool, PageMut};
use crate::error::{Error, Result};
use crate::page::{read_page_lsn, write_page_lsn, PageError, PageId};
use crate::space::SpaceSet;

/// What [`apply`] did, by record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Page records written to their page.
    pub applied: usize,
    /// Page records skipped because the page was already as new as the record.
    pub skipped: usize,
    /// Records that are not page redo.
    pub ignored: usize,
}

/// Applies every page record of `records` (in log order, as `Log::open` returns them) to the
/// pages of `spaces` through `pool`. See the module docs for the rules.
pub(crate) fn apply(
    records: &[LoggedRecord],
    spaces: &SpaceSet,
    pool: &BufferPool,
) -> Result<Applied> {
    let mut done = Applied::default();
    let mut last_lsn: Lsn = 0;
    for logged in records {
        debug_assert!(logged.batch_end_lsn >= last_lsn, "records in LSN order");
        last_lsn = logged.batch_end_lsn;
        let lsn = logged.batch_end_lsn;
        let applied = match &logged.record {
            Record::PageImage {
                space_id,
                page_no,
                image,
            } => {
                let id = PageId::new(*space_id, *page_no);
                let mut page = fetch_or_create(spaces, pool, id, logged.lsn)?;
                if image.len() != page.len() {
                    return Err(corrupt(
                        id,
                        logged.lsn,
                        format!("an image of {} bytes", image.len()),
                    ));
                }
                apply_if_older(&mut page, lsn, |frame| frame.copy_from_slice(image))
            }
            Record::PageDelta {
                space_id,
                page_no,
                ranges,
            } => {
                let id = PageId::new(*space_id, *page_no);
                if *page_no >= spaces.get(*space_id)?.header().page_count {
                    return Err(corrupt(
                        id,
                        logged.lsn,
                        "a change to a page past the end of its space".into(),
                    ));
                }
                let mut page = pool.write(id)?;
                let frame_len = page.len();
                let fits = |(offset, bytes): &(u32, Vec<u8>)| {
                    (*offset as usize)
                        .checked_add(bytes.len())
                        .is_some_and(|end| end <= frame_len)
                };
                if !ranges.iter().all(fits) {
                    return Err(corrupt(
                        id,
                        logged.lsn,
                        "a range past the page's end".into(),
                    ));
                }
                apply_if_older(&mut page, lsn, |frame| {
                    for (offset, bytes) in ranges {
                        let start = *offset as usize;
                        frame[start..start + bytes.len()].copy_from_slice(bytes);
                    }
                })
            }
            Record::SpaceHeader { .. }
            | Record::CreateSpace { .. }
            | Record::DropSpace { .. }
            | Record::Commit { .. }
            | Record::Rollback { .. }
            | Record::Checkpoint { .. } => {
                done.ignored += 1;
                continue;
            }
        };
        if applied {
            done.applied += 1;
        } else {
            done.skipped += 1;
        }
    }
    Ok(done)
}

/// Runs `change` and stamps `lsn` if the page is older than `lsn`; returns whether it did.
fn apply_if_older(page: &mut PageMut, lsn: Lsn, change: impl FnOnce(&mut [u8])) -> bool {
    if read_page_lsn(page) >= lsn {
        return false;
    }
    change(page);
    write_page_lsn(page, lsn);
    true
}

/// The page, latched for writing, for a `PageImage` that will replace it whole. A page past
/// the space's `page_count` (allocated after page 0 was last written) grows the space; a
/// page inside it that was never written (past the file's end, or with a zero checksum as
/// an all-zero page has) is created.
/// Any other read failure (a wrong key, a torn page) is returned: phase A repairs torn pages
/// from the doublewrite file before redo runs.
fn fetch_or_create(
    spaces: &SpaceSet,
    pool: &BufferPool,
    id: PageId,
    record_lsn: Lsn,
) -> Result<PageMut> {
    let space = spaces.get(id.space_id)?;
    if id.page_no >= space.header().page_count {
        let end = id.page_no.checked_add(1).ok_or_else(|| {
            corrupt(
                id,
                record_lsn,
                "an image of a page past the largest page number".into(),
            )
        })?;
        space.update_header(|h| h.page_count = h.page_count.max(end));
        return pool.create(id);
    }
    match pool.write(id) {
        Ok(page) => Ok(page),
        Err(Error::Io { source, .. }) if source.kind() == ErrorKind::UnexpectedEof => {
            pool.create(id)
        }
        Err(Error::Page {
            source: PageError::Corrupt { stored: 0, .. },
            ..
        }) => pool.create(id),
        Err(other) => Err(other),
    }
}

fn corrupt(id: PageId, lsn: Lsn, what: String) -> Error {
    Error::Corrupt {
        path: format!("redo log at LSN {lsn}").into(),
        problem: format!("{what} (space {}, page {})", id.space_id, id.page_no),
    }
}

#[cfg(test)]
mod tests;
