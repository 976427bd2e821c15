//! [`SpaceSet`]: every open tablespace by id, and the buffer pool's way to disk.
//!
//! The buffer pool knows only page ids; `SpaceSet` implements [`PageIo`] by finding the
//! space and letting it run the codec. This is the IO boundary of DESIGN §2: frames above
//! it are plaintext, bytes below it are what the file holds.
//!
//! It is also where the **WAL rule** is enforced (`docs/durability.md` rule 1): once the
//! redo log is attached ([`SpaceSet::attach_log`]), no page reaches its file before the
//! log is durable up to the page's LSN, and no page 0 before the log is durable up to every
//! allocation change it records.

use super::SpaceFile;
use crate::buffer::PageIo;
use crate::error::{Error, Result};
use crate::page::read_page_lsn;
use crate::page::PageId;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use strongbox_wal::Log;

/// The open spaces of a database.
#[derive(Debug, Default)]
pub struct SpaceSet {
    /// Guards the id -> space map (changed by create/drop table; read on every page IO).
    spaces: RwLock<HashMap<u32, Arc<SpaceFile>>>,
    /// The redo log, once the database has one (see the module doc).
    log: OnceLock<Arc<Log>>,
    /// Where the start-up recovery's redo scan stopped, for [`Error::PageAheadOfLog`].
    log_stop: OnceLock<String>,
    /// The highest log end a page read has seen. The end only grows, so a page at or below
    /// it is known not to be ahead of the log without asking the log (which takes the
    /// writer's lock, contended by every commit).
    log_end_seen: AtomicU64,
}

impl SpaceSet {
    pub fn new() -> SpaceSet {
        SpaceSet::default()
    }

    pub fn insert(&self, space: Arc<SpaceFile>) {
        self.spaces.write().insert(space.id(), space);
    }

    pub fn remove(&self, space_id: u32) -> Option<Arc<SpaceFile>> {
        self.spaces.write().remove(&space_id)
    }

    pub fn get(&self, space_id: u32) -> Result<Arc<SpaceFile>> {
        self.spaces
            .read()
            .get(&space_id)
            .cloned()
            .ok_or_else(|| Error::Corrupt {
                path: PathBuf::from(format!("space {space_id}")),
                problem: "no such tablespace is open".into(),
            })
    }

    /// All open spaces, by id.
    pub fn all(&self) -> Vec<Arc<SpaceFile>> {
        let mut spaces: Vec<_> = self.spaces.read().values().cloned().collect();
        spaces.sort_by_key(|s| s.id());
        spaces
    }

    /// Makes page writes follow the WAL rule of `log` from now on. Only the first call
    /// counts.
    pub fn attach_log(&self, log: Arc<Log>) {
        let _ = self.log.set(log);
    }

    /// Records where the start-up recovery's redo scan stopped (named by the error a page
    /// newer than the log gets). Only the first call counts.
    pub fn set_log_stop(&self, stop: String) {
        let _ = self.log_stop.set(stop);
    }

    /// Writes every space's page 0 (synced) with its logged allocation state, after making
    /// the redo of that state durable.
    pub fn persist_headers(&self) -> Result<()> {
        let spaces = self.all();
        let snapshots: Vec<_> = spaces.iter().map(|space| space.logged_alloc()).collect();
        if let Some(log) = self.log.get() {
            log.flush(log.current_lsn())?;
        }
        for (space, alloc) in spaces.iter().zip(snapshots) {
            space.persist_header(alloc)?;
        }
        Ok(())
    }

    /// Space `space_id` if it is open (`get` treats a missing space as an error).
    pub(crate) fn find(&self, space_id: u32) -> Option<Arc<SpaceFile>> {
        self.spaces.read().get(&space_id).cloned()
    }
}

impl PageIo for SpaceSet {
    /// A page read back must not be newer than the log: it reached its file only after
    /// the log was durable up to its LSN, so a page beyond the log's end means the log lost
    /// durable records (a damaged or missing block that recovery took for the end).
    fn read_page(&self, id: PageId, frame: &mut [u8]) -> Result<()> {
        let space = self.get(id.space_id)?;
        space.read_page(id.page_no, frame)?;
        let page_lsn = read_page_lsn(frame);
        if page_lsn <= self.log_end_seen.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(log) = self.log.get() {
            let log_end = log.current_lsn();
            self.log_end_seen.fetch_max(log_end, Ordering::Relaxed);
            if page_lsn > log_end {
                frame.fill(0);
                return Err(Error::PageAheadOfLog {
                    path: space.path().to_path_buf(),
                    page_no: id.page_no,
                    page_lsn,
                    log_end,
                    log_stop: self.log_stop.get().cloned(),
                });
            }
        }
        Ok(())
    }

    /// Runs before the stored image can reach any file, the doublewrite slots included.
    fn encode_page(&self, id: PageId, frame: &[u8]) -> Result<Vec<u8>> {
        if let Some(log) = self.log.get() {
            log.flush(read_page_lsn(frame))?; // the WAL rule
        }
        self.get(id.space_id)?.encode_page(id.page_no, frame)
    }

    fn write_stored(&self, id: PageId, stored: &[u8]) -> Result<()> {
        self.get(id.space_id)?.write_stored(id.page_no, stored)
    }

    fn sync_space(&self, space_id: u32) -> Result<()> {
        self.get(space_id)?.sync()
    }

    fn sync(&self) -> Result<()> {
        for space in self.all() {
            space.sync()?;
        }
        Ok(())
    }
}
