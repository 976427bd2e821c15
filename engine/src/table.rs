//! Tables: the handle embedders hold, its options, and what listing tables shows.

use crate::btree::BTree;
use crate::catalog::{Encrypted, TableMeta};
use crate::error::{Error, Result};
use parking_lot::{RwLock, RwLockReadGuard};
use std::fmt;
use std::sync::Arc;

/// Per-table settings, MariaDB's `ENCRYPTED` and `ENCRYPTION_KEY_ID` table options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// `yes`, `no`, or `default` (follow `encrypt_tables`).
    pub encrypted: Encrypted,
    /// Keyring key id; `None` means `default_encryption_key_id`.
    pub encryption_key_id: Option<u32>,
}

impl TableOptions {
    pub fn encrypted(mut self, encrypted: Encrypted) -> TableOptions {
        self.encrypted = encrypted;
        self
    }

    pub fn encryption_key_id(mut self, key_id: u32) -> TableOptions {
        self.encryption_key_id = Some(key_id);
        self
    }
}

/// One row of the table listing — the facts `information_schema.INNODB_TABLESPACES_ENCRYPTION`
/// shows for a tablespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub name: String,
    pub space_id: u32,
    pub encrypted: bool,
    /// Keyring key id (0 when unencrypted).
    pub key_id: u32,
    /// Key version new writes use (0 when unencrypted).
    pub key_version: u32,
    /// Pages in the tablespace, header and free pages included.
    pub pages: u32,
}

/// The shared state behind every handle of one table.
pub(crate) struct TableState {
    pub(crate) name: String,
    pub(crate) meta: TableMeta,
    pub(crate) tree: BTree,
    /// A temporary table: a tree in the temporary space, unlogged, gone at restart.
    pub(crate) temporary: bool,
    /// False once the table is dropped. Operations hold it shared for their duration, so
    /// `drop_table` (which takes it exclusively) waits for them and refuses later ones.
    pub(crate) alive: RwLock<bool>,
}

impl fmt::Debug for TableState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Table({:?}, space {})", self.name, self.meta.space_id)
    }
}

impl TableState {
    pub(crate) fn new(name: String, meta: TableMeta, tree: BTree) -> TableState {
        TableState {
            name,
            meta,
            tree,
            temporary: false,
            alive: RwLock::new(true),
        }
    }

    /// A temporary table's state (see `Db::create_temp_table`).
    pub(crate) fn temporary(name: String, meta: TableMeta, tree: BTree) -> TableState {
        TableState {
            temporary: true,
            ..TableState::new(name, meta, tree)
        }
    }

    pub(crate) fn info(&self) -> TableInfo {
        let header = self.tree.space_header();
        let key_version = header.encryption.as_ref().map_or(0, |e| e.current_version);
        TableInfo {
            name: self.name.clone(),
            space_id: self.meta.space_id,
            encrypted: header.encryption.is_some(),
            key_id: header.encryption.as_ref().map_or(0, |e| e.key_id),
            key_version,
            pages: header.page_count,
        }
    }
}

/// A handle to a table. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Table {
    pub(crate) state: Arc<TableState>,
}

impl Table {
    pub(crate) fn new(state: Arc<TableState>) -> Table {
        Table { state }
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn space_id(&self) -> u32 {
        self.state.meta.space_id
    }

    /// True for a temporary table (`Db::create_temp_table`).
    pub fn is_temporary(&self) -> bool {
        self.state.temporary
    }

    /// Encryption facts as of now.
    pub fn info(&self) -> TableInfo {
        self.state.info()
    }

    /// Longest key this table accepts (depends on the page size).
    pub fn max_key_len(&self) -> usize {
        self.state.tree.max_key_len()
    }

    /// Checks the table's tree and page accounting.
    pub fn verify(&self) -> Result<crate::btree::TreeStats> {
        let _alive = self.alive()?;
        self.state.tree.verify()
    }

    /// The tree, with a guard that keeps the table from being dropped meanwhile.
    pub(crate) fn alive(&self) -> Result<RwLockReadGuard<'_, bool>> {
        let alive = self.state.alive.read();
        if !*alive {
            return Err(Error::NoSuchTable(self.state.name.clone()));
        }
        Ok(alive)
    }

    pub(crate) fn tree(&self) -> &BTree {
        &self.state.tree
    }
}
