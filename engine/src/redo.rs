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
//! A `SpaceHeader` record carries a space's allocation fields ([`AllocState`]) after an
//! mtr that allocated or freed pages; those mtrs were serialised per space by the
//! allocation lock, so applying them in log order leaves the fields as the last one logged
//! them. Page 0 on disk is only ever older (a checkpoint writes it), so they are set
//! unconditionally.
//!
//! Other records are not page redo and are ignored here (counted in [`Applied::ignored`]):
//! `Commit` and `Rollback` are markers (the undo directory says which transactions
//! finished), `Checkpoint` too. `CreateSpace` and `DropSpace` are not written (DDL makes
//! its files durable itself).
//!
//! Records of a space `only` rejects are skipped (counted in [`Applied::skipped`]): start-up
//! replays the system space first, reads the catalog, then replays the tables; a space
//! dropped after the checkpoint has records but no file.
//!
//! Pages changed here are dirty in the pool; the caller flushes them (phase D checkpoint).
//!
//! [`Mtr::commit`]: crate::mtr::Mtr::commit

use std::io::ErrorKind;

use strongbox_wal::{LoggedRecord, Lsn, Record};

use crate::buffer::{BufferPool, PageMut};
use crate::error::{Error, Result};
use crate::page::{read_page_lsn, write_page_lsn, PageError, PageId};
use crate::space::{AllocState, SpaceSet};

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
    only: impl Fn(u32) -> bool,
) -> Result<Applied> {
    let mut done = Applied::default();
    let mut last_lsn: Lsn = 0;
    for logged in records {
        debug_assert!(logged.batch_end_lsn >= last_lsn, "records in LSN order");
        last_lsn = logged.batch_end_lsn;
        let lsn = logged.batch_end_lsn;
        if let Some(space_id) = space_of(&logged.record) {
            if !only(space_id) {
                done.skipped += 1;
                continue;
            }
        }
        let applied = match &logged.record {
            Record::SpaceHeader { space_id, image } => {
                let alloc = AllocState::decode(image).ok_or_else(|| Error::Corrupt {
                    path: format!("redo log at LSN {}", logged.lsn).into(),
                    problem: format!("a space header record of {} bytes", image.len()),
                })?;
                spaces.get(*space_id)?.update_header(|h| h.set_alloc(alloc));
                true
            }
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
            Record::CreateSpace { .. }
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

/// The space a page or header record belongs to.
fn space_of(record: &Record) -> Option<u32> {
    match record {
        Record::PageImage { space_id, .. }
        | Record::PageDelta { space_id, .. }
        | Record::SpaceHeader { space_id, .. } => Some(*space_id),
        _ => None,
    }
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
        Err(Error::Io { source, .. } | Error::PageIo { source, .. })
            if source.kind() == ErrorKind::UnexpectedEof =>
        {
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
