//! [`MemPageIo`]: pages kept in a map, for tests of the pool and of the layers above it.

use super::PageIo;
use crate::error::{Error, Result};
use crate::page::PageId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

/// An in-memory [`PageIo`] that counts its calls and fails on request.
///
/// It has no codec: the stored form of a frame is the frame itself (`encode_page` copies
/// it). So it suits a doublewrite only if the frames are valid stored pages, since the
/// doublewrite refuses anything else.
///
/// Reading a page that was never written fails like reading past the end of a file. A
/// failed read scribbles over the frame first, as a half-done read might, so tests can
/// check that such bytes are never handed out.
#[derive(Debug, Default)]
pub struct MemPageIo {
    /// Guards the stored pages: what `write_stored` last wrote for each id.
    pages: Mutex<HashMap<PageId, Vec<u8>>>,
    reads: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    fail_reads: AtomicBool,
    fail_writes: AtomicBool,
}

/// What a failed read leaves in the frame.
pub(crate) const SCRIBBLE: u8 = 0xEE;

impl MemPageIo {
    pub fn new() -> MemPageIo {
        MemPageIo::default()
    }

    /// Calls of `read_page` so far, failed ones included.
    pub fn reads(&self) -> u64 {
        self.reads.load(SeqCst)
    }

    /// Calls of `write_stored` (also through `write_page`) so far, failed ones included.
    pub fn writes(&self) -> u64 {
        self.writes.load(SeqCst)
    }

    /// Calls of `sync` and `sync_space` so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(SeqCst)
    }

    /// From now on, every `read_page` fails (`true`) or works again (`false`).
    pub fn fail_reads(&self, fail: bool) {
        self.fail_reads.store(fail, SeqCst);
    }

    /// From now on, every `write_stored`, `sync` and `sync_space` fails (`true`) or works
    /// again.
    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, SeqCst);
    }

    /// The stored copy of page `id`.
    pub fn page(&self, id: PageId) -> Option<Vec<u8>> {
        self.pages.lock().get(&id).cloned()
    }

    /// How many distinct pages have been written.
    pub fn page_count(&self) -> usize {
        self.pages.lock().len()
    }

    fn sync_as(&self, path: PathBuf) -> Result<()> {
        self.syncs.fetch_add(1, SeqCst);
        if self.fail_writes.load(SeqCst) {
            return Err(Error::Io {
                op: "sync",
                path,
                source: io::Error::other("injected failure"),
            });
        }
        Ok(())
    }

    fn error(op: &'static str, id: PageId, kind: io::ErrorKind, why: &str) -> Error {
        let path = PathBuf::from(format!("<memory>/space-{}", id.space_id));
        Error::Io {
            op,
            path,
            source: io::Error::new(kind, format!("{id}: {why}")),
        }
    }
}

impl PageIo for MemPageIo {
    fn read_page(&self, id: PageId, frame: &mut [u8]) -> Result<()> {
        self.reads.fetch_add(1, SeqCst);
        if self.fail_reads.load(SeqCst) {
            frame.fill(SCRIBBLE);
            return Err(Self::error(
                "read page",
                id,
                io::ErrorKind::Other,
                "injected failure",
            ));
        }
        match self.pages.lock().get(&id) {
            Some(stored) => {
                frame.copy_from_slice(stored);
                Ok(())
            }
            None => Err(Self::error(
                "read page",
                id,
                io::ErrorKind::UnexpectedEof,
                "never written",
            )),
        }
    }

    fn encode_page(&self, _id: PageId, frame: &[u8]) -> Result<Vec<u8>> {
        Ok(frame.to_vec())
    }

    fn write_stored(&self, id: PageId, stored: &[u8]) -> Result<()> {
        self.writes.fetch_add(1, SeqCst);
        if self.fail_writes.load(SeqCst) {
            return Err(Self::error(
                "write page",
                id,
                io::ErrorKind::Other,
                "injected failure",
            ));
        }
        self.pages.lock().insert(id, stored.to_vec());
        Ok(())
    }

    fn sync_space(&self, space_id: u32) -> Result<()> {
        self.sync_as(PathBuf::from(format!("<memory>/space-{space_id}")))
    }

    fn sync(&self) -> Result<()> {
        self.sync_as(PathBuf::from("<memory>"))
    }
}
