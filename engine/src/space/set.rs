//! [`SpaceSet`]: every open tablespace by id, and the buffer pool's way to disk.
//!
//! The buffer pool knows only page ids; `SpaceSet` implements [`PageIo`] by finding the
//! space and letting it run the codec. This is the IO boundary of DESIGN §2: frames above
//! it are plaintext, bytes below it are what the file holds.

use super::SpaceFile;
use crate::buffer::PageIo;
use crate::error::{Error, Result};
use crate::page::PageId;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The open spaces of a database.
#[derive(Debug, Default)]
pub struct SpaceSet {
    /// Guards the id -> space map (changed by create/drop table; read on every page IO).
    spaces: RwLock<HashMap<u32, Arc<SpaceFile>>>,
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

    /// Writes every space's page 0 (synced).
    pub fn persist_headers(&self) -> Result<()> {
        for space in self.all() {
            space.persist_header()?;
        }
        Ok(())
    }
}

impl PageIo for SpaceSet {
    fn read_page(&self, id: PageId, frame: &mut [u8]) -> Result<()> {
        self.get(id.space_id)?.read_page(id.page_no, frame)
    }

    fn write_page(&self, id: PageId, frame: &[u8]) -> Result<()> {
        self.get(id.space_id)?.write_page(id.page_no, frame)
    }

    fn sync(&self) -> Result<()> {
        for space in self.all() {
            space.sync()?;
        }
        Ok(())
    }
}
