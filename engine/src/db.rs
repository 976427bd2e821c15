//! [`Db`]: opening and closing a database, tables, and everything that owns threads.
//!
//! ## Data directory
//!
//! ```text
//! <dir>/strongbox.lock     advisory lock; holds the pid of the process that has it open
//! <dir>/system.sbd         space 0: the catalog (page 1) and undo (directory on page 2; key 1)
//! <dir>/temp.sbd           temporary space (key 2, else 1); recreated at every start
//! <dir>/space-<id>.sbd     one file per table
//! <dir>/doublewrite.dbw    torn-page protection (`doublewrite.rs`)
//! <dir>/redo/              the redo log: redo.ctl and redo-<seq>.log segments (`wal`)
//! <dir>/tmp/               temporary files of bulk loads (`tmpdir`; `tempfile.rs`)
//! ```
//!
//! ## Open, step by step (`docs/durability.md` §3 has the recovery phases)
//!
//! 1. Lock the directory (fails at once if another process has it).
//! 2. Load the keyring. With encryption on and no key file: refuse, saying how to make one.
//! 3. Open (or create) the system space and every `space-<id>.sbd`, unwrapping their data
//!    keys: any missing or wrong key fails the open *before anything is written*, naming
//!    the file, key id and version. Open (or create) the redo log and scan it.
//! 4. Recovery phases A (doublewrite repair) and B (redo); read the catalog; delete
//!    tablespace files it does not name; recreate the temporary space.
//! 5. Checkpoint; start the page cleaner and the checkpoint thread; phase C (roll back
//!    unfinished transactions, purge); checkpoint.
//!
//! Durability: a commit is durable when `commit` returns (with `flush_log_at_commit = 1`;
//! see `FlushAtCommit` for 0 and 2). DDL is durable when it returns.

use crate::btree::{BTree, TreeStats};
use crate::buffer::BufferPool;
use crate::catalog::{check_table_name, Catalog, Encrypted, TableMeta};
use crate::checkpoint::{CheckpointThread, Checkpointer};
use crate::doublewrite::{self, Doublewrite};
use crate::error::{Error, Result};
use crate::io::Vfs;
use crate::lock::LockManager;
use crate::mtr::Mtr;
use crate::options::{EncryptTables, KeySource, Options};
use crate::page::PageSize;
use crate::recovery;
use crate::redo;
use crate::rotation::{self, Rotator};
use crate::space::{
    self, Allocator, IoCounters, NewSpace, SpaceEncryption, SpaceFile, SpaceKind, SpaceSet,
};
use crate::table::{Table, TableInfo, TableOptions, TableState};
use crate::undo::{UndoDirectory, UndoLog};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use strongbox_keyring::provider::{self, FileKeyProvider, KeyProvider};
use strongbox_keyring::source::KeyFileSource;
use strongbox_wal::{Log, LogConfig, LogStats, RecoveryReport, WalError};

/// An open database. Cheap to clone; every clone refers to the same database.
#[derive(Clone, Debug)]
pub struct Db {
    pub(crate) inner: Arc<DbInner>,
}

#[derive(Debug)]
pub(crate) struct DbInner {
    dir: PathBuf,
    pub(crate) options: Options,
    pub(crate) keyring: Option<Arc<dyn KeyProvider>>,
    warnings: Vec<String>,
    pub(crate) spaces: Arc<SpaceSet>,
    pub(crate) pool: Arc<BufferPool>,
    counters: Arc<IoCounters>,
    pub(crate) catalog: Catalog,
    /// Guards the open tables by name (changed by create/drop; read by `table`).
    pub(crate) tables: RwLock<BTreeMap<String, Arc<TableState>>>,
    /// Guards the temporary tables by name (never in the catalog; gone at restart).
    temp_tables: RwLock<BTreeMap<String, Arc<TableState>>>,
    /// Serialises DDL (and rotation requests) so the catalog, the files, page 0 of the
    /// spaces and `tables` change together.
    pub(crate) ddl: Mutex<()>,
    /// The re-encryption threads (`rotation/`).
    pub(crate) rotator: Arc<Rotator>,
    /// Guards against use after close: set once by `close`.
    closed: Mutex<bool>,
    log: Arc<Log>,
    locks: Arc<LockManager>,
    /// The undo directory (page 2 of the system space) and the system space's allocator,
    /// which undo logs share with the catalog.
    undo_directory: UndoDirectory,
    system_alloc: Arc<Allocator>,
    next_txn_id: AtomicU64,
    recovered: Mutex<Recovered>,
    checkpointer: Checkpointer,
    checkpoint_thread: Mutex<Option<CheckpointThread>>,
    _lock: Box<dyn std::fmt::Debug + Send + Sync>,
}

/// What start-up recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Where and why the redo scan stopped (`None` for a new database).
    pub log_stop: Option<String>,
    /// Torn pages rewritten from their doublewrite copies (phase A).
    pub torn_pages_repaired: usize,
    /// Page changes redone.
    pub redo: usize,
    /// Transactions rolled back because they had not committed.
    pub rolled_back: usize,
    /// Finished transactions whose undo logs were purged.
    pub purged: usize,
    /// Tablespace files no table owned (a create or drop cut short), deleted.
    pub leftover_files_removed: usize,
}

/// The page of the system space that holds the undo directory (page 1 is the catalog's
/// root; the directory is the next page a new database allocates).
pub(crate) const UNDO_DIRECTORY_PAGE: u32 = 2;

/// Buffer-pool and IO counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub pages_read: u64,
    pub pages_written: u64,
    pub pages_decrypted: u64,
    pub pages_encrypted: u64,
    pub evictions: u64,
    pub dirty_pages: u64,
    pub frames: u64,
    /// Pages the background page cleaner has written.
    pub cleaner_flushes: u64,
    /// The redo log's counters: records, commits, flush rounds, fsyncs, bytes, checkpoints.
    pub log: LogStats,
    /// Pages the re-encryption passes rewrote.
    pub pages_reencrypted: u64,
    /// Times an idle encryption thread woke up (only work or shutdown wakes one).
    pub encryption_wakeups: u64,
}

/// What `Db::verify` checked.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Per tree: the table name (`"(catalog)"` for the catalog) and what was counted.
    pub trees: Vec<(String, TreeStats)>,
}

impl Db {
    /// Opens the database in `dir`, creating it if the directory holds none, and recovers
    /// it after a crash (see the module doc).
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        let dir = dir.as_ref().to_path_buf();
        let vfs = Arc::clone(&options.vfs);
        vfs.create_dir_all(&dir)
            .map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = vfs.lock_directory(&dir).map_err(|e| lock_error(&dir, e))?;
        let (keyring, warnings) = load_keyring(&options)?;
        let keyring_ref = keyring.as_deref();
        let counters = Arc::new(IoCounters::default());
        let spaces = Arc::new(SpaceSet::new());
        let system_path = dir.join(space::file_name(space::SYSTEM_SPACE_ID));
        let exists = vfs.exists(&system_path);
        let page_size = if exists {
            space::probe_page_size(vfs.as_ref(), &system_path)?
        } else {
            options.page_size
        };

        // Step 3: the system space and the redo log (scanned, not yet applied).
        // A keyring lacking a version some tablespace still needs is reported once, for
        // every tablespace that needs one (so an operator sees what removing it broke).
        let mut missing_keys = Vec::new();
        let mut unfinished: Vec<(u32, PathBuf)> = Vec::new();
        let system = if exists {
            match SpaceFile::open(
                vfs.as_ref(),
                &system_path,
                space::SYSTEM_SPACE_ID,
                page_size,
                keyring_ref,
                Arc::clone(&counters),
            ) {
                Err(error @ Error::KeyUnavailable { .. }) => {
                    missing_keys.push(error);
                    None
                }
                other => Some(other?),
            }
        } else {
            let encryption = system_encryption(&options, keyring_ref)?;
            SpaceFile::create(
                vfs.as_ref(),
                &system_path,
                NewSpace {
                    id: space::SYSTEM_SPACE_ID,
                    kind: SpaceKind::System,
                    page_size,
                    encryption,
                },
                keyring_ref,
                Arc::clone(&counters),
            )
            .map(Some)?
        };
        // Every table's tablespace file in the directory, keys unwrapped: phase A needs
        // them all open before anything is written, and a missing or wrong key must fail
        // the open before the log is touched. Files the catalog turns out not to name are
        // left over from a create or drop that a crash cut short; they are deleted below.
        for path in vfs
            .list(&dir)
            .map_err(|e| Error::io("list directory", &dir, e))?
        {
            let Some(space_id) = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(space::table_space_id)
            else {
                continue;
            };
            // A file shorter than its page 0 is a `create_table` a crash cut short before
            // the header was synced: no catalog entry can name it yet (the entry is
            // written after the header). Decided once the catalog is read, below.
            let size = vfs
                .open(&path, crate::io::OpenMode::Existing)
                .and_then(|file| file.size())
                .map_err(|e| Error::io("open", &path, e))?;
            if size < page_size.len() as u64 {
                unfinished.push((space_id, path));
                continue;
            }
            match SpaceFile::open(
                vfs.as_ref(),
                &path,
                space_id,
                page_size,
                keyring_ref,
                Arc::clone(&counters),
            ) {
                Err(error @ Error::KeyUnavailable { .. }) => missing_keys.push(error),
                other => spaces.insert(Arc::new(other?)),
            }
        }
        if let KeySource::File { path, .. } = &options.keys {
            for error in &mut missing_keys {
                if let Error::KeyUnavailable { key_file, .. } = error {
                    *key_file = Some(path.clone());
                }
            }
        }
        let system = match (system, missing_keys.len()) {
            (Some(system), 0) => Arc::new(system),
            (_, 1) => return Err(missing_keys.remove(0)),
            _ => {
                return Err(Error::KeyVersionsMissing {
                    needed: missing_keys.iter().map(ToString::to_string).collect(),
                })
            }
        };
        spaces.insert(Arc::clone(&system));
        let (log, report) = open_log(&dir, &options, keyring_ref, exists)?;
        let log = Arc::new(log);
        spaces.attach_log(Arc::clone(&log));
        let pool = BufferPool::new(
            options.buffer_pool_size,
            page_size.len(),
            Arc::clone(&spaces) as _,
        )?;
        let doublewrite = Arc::new(Doublewrite::open_or_create(
            vfs.as_ref(),
            &dir,
            page_size,
            doublewrite::DEFAULT_SLOTS,
        )?);

        // Phases A and B (module doc).
        let mut recovered = Recovered::default();
        if let Some(report) = &report {
            recovered.log_stop = Some(format!(
                "LSN {} (block {}): {}",
                report.stop.lsn, report.stop.block_no, report.stop.why
            ));
            spaces.set_log_stop(format!(
                "byte {} of {} (LSN {}): {}",
                report.stop_offset,
                report.stop_segment.display(),
                report.stop.lsn,
                report.stop.why
            ));
            recovered.torn_pages_repaired = recovery::repair_torn_pages(&doublewrite, &spaces)?;
        }
        if options.doublewrite {
            pool.attach_doublewrite(Arc::clone(&doublewrite))?;
        } else {
            // Pages will go home without a copy: old copies must not outlive this point.
            doublewrite.clear_slots()?;
        }
        if let Some(report) = &report {
            recovered.redo = redo::apply(&report.records, &spaces, &pool, |space_id| {
                spaces.find(space_id).is_some()
            })?
            .applied;
        }
        let system_alloc = Arc::new(Allocator::new(system, Arc::clone(&pool)));
        let log_ref = Some(Arc::clone(&log));
        let (catalog_tree, undo_page) = if exists {
            let tree = BTree::open(Arc::clone(&pool), Arc::clone(&system_alloc), log_ref);
            (tree, UNDO_DIRECTORY_PAGE)
        } else {
            let tree = BTree::create(Arc::clone(&pool), Arc::clone(&system_alloc), log_ref)?;
            let mtr = Mtr::start(Some(&log), &pool)?;
            let page_no = UndoDirectory::create(&mtr, &system_alloc)?;
            mtr.commit()?;
            (tree, page_no)
        };
        if undo_page != UNDO_DIRECTORY_PAGE {
            return Err(Error::Corrupt {
                path: system_path,
                problem: format!("the undo directory went to page {undo_page}"),
            });
        }
        let undo_directory =
            UndoDirectory::open(Arc::clone(&pool), &system_alloc, UNDO_DIRECTORY_PAGE)?;
        let catalog = Catalog::new(catalog_tree);

        // Step 4: the tables; leftover files go.
        let mut tables = BTreeMap::new();
        let mut known = HashSet::new();
        for (name, meta) in catalog.tables()? {
            known.insert(meta.space_id);
            let space = spaces.find(meta.space_id).ok_or_else(|| {
                let path = dir.join(space::file_name(meta.space_id));
                Error::io(
                    "open",
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("the tablespace of table {name:?} is missing"),
                    ),
                )
            })?;
            let tree = BTree::open(
                Arc::clone(&pool),
                Arc::new(Allocator::new(space, Arc::clone(&pool))),
                Some(Arc::clone(&log)),
            );
            tables.insert(name.clone(), Arc::new(TableState::new(name, meta, tree)));
        }
        let leftovers: Vec<u32> = spaces
            .all()
            .iter()
            .map(|space| space.id())
            .filter(|id| *id != space::SYSTEM_SPACE_ID && !known.contains(id))
            .collect();
        for space_id in leftovers {
            pool.discard_space(space_id);
            drop(spaces.remove(space_id));
            let path = dir.join(space::file_name(space_id));
            vfs.remove(&path)
                .map_err(|e| Error::io("remove leftover tablespace", &path, e))?;
            recovered.leftover_files_removed += 1;
        }
        for (space_id, path) in unfinished {
            if known.contains(&space_id) {
                return Err(Error::Corrupt {
                    path,
                    problem: "the tablespace file is shorter than its header page".into(),
                });
            }
            vfs.remove(&path)
                .map_err(|e| Error::io("remove leftover tablespace", &path, e))?;
            recovered.leftover_files_removed += 1;
        }
        // Temporary files a crash left behind (they are on the real file system).
        let temp_files = options
            .tmpdir
            .clone()
            .unwrap_or_else(|| dir.join(TEMP_FILE_DIR));
        match crate::tempfile::remove_leftovers(&temp_files) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(
                    "remove leftover temporary files in",
                    temp_files,
                    e,
                ));
            }
            _ => {}
        }
        recreate_temp_space(
            vfs.as_ref(),
            &dir,
            &options,
            keyring_ref,
            page_size,
            &spaces,
            &counters,
        )?;
        if !exists {
            vfs.sync_dir(&dir)
                .map_err(|e| Error::io("sync directory", &dir, e))?;
        }
        let mut warnings = warnings;
        let catalog_tables: Vec<(String, TableMeta)> = tables
            .iter()
            .map(|(name, state)| (name.clone(), state.meta))
            .collect();
        let rotator = Arc::new(Rotator::new(
            Arc::clone(&spaces),
            Arc::clone(&pool),
            options.encryption_threads,
            options.encryption_rotation_iops,
            keyring.clone(),
        ));
        warnings.extend(rotation::api::plan_at_open(
            &spaces,
            &catalog_tables,
            &options,
            keyring_ref,
            &rotator,
        ));
        let checkpointer =
            Checkpointer::new(Arc::clone(&pool), Arc::clone(&spaces), Arc::clone(&log));
        let locks = Arc::new(LockManager::new(options.lock_wait_timeout));
        let db = Db {
            inner: Arc::new(DbInner {
                dir,
                keyring,
                warnings,
                spaces,
                pool: Arc::clone(&pool),
                counters,
                catalog,
                tables: RwLock::new(tables),
                temp_tables: RwLock::new(BTreeMap::new()),
                ddl: Mutex::new(()),
                rotator,
                closed: Mutex::new(false),
                log,
                locks,
                undo_directory,
                system_alloc,
                next_txn_id: AtomicU64::new(1),
                recovered: Mutex::new(recovered),
                checkpoint_thread: Mutex::new(None),
                checkpointer,
                options,
                _lock: lock,
            }),
        };
        // A checkpoint first: the redone pages reach their files and the log tail is freed,
        // so that phase C (which appends) finds room in a log the crash left nearly full.
        db.inner.checkpointer.checkpoint()?;
        pool.start_cleaner()?;
        *db.inner.checkpoint_thread.lock() = Some(db.inner.checkpointer.start_thread()?);
        // Phase C: roll back what never committed, purge what did; then phase D.
        recovery::finish_transactions(&db)?;
        db.inner.checkpointer.checkpoint()?;
        // Last: passes found in page 0 (a rotation cut short, an `encrypt_tables` change)
        // resume in the background.
        db.inner.rotator.start()?;
        db.inner.rotator.notify();
        Ok(db)
    }

    /// What start-up found and did (a crash recovery, or nothing).
    pub fn recovery(&self) -> Recovered {
        self.inner.recovered.lock().clone()
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// Warnings found while opening (for example a key file readable by others).
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    /// The page size this database was created with.
    pub fn page_size(&self) -> usize {
        self.inner.pool.page_size()
    }

    /// Creates a table in its own tablespace, encrypted as `options` and the database
    /// settings say.
    pub fn create_table(&self, name: &str, options: TableOptions) -> Result<Table> {
        self.check_open()?;
        check_table_name(name)?;
        let inner = &self.inner;
        let _ddl = inner.ddl.lock();
        if inner.tables.read().contains_key(name) {
            return Err(Error::TableExists(name.to_string()));
        }
        let encryption = self.table_encryption(name, &options)?;
        let space_id = inner.catalog.allocate_space_id()?;
        let path = inner.dir.join(space::file_name(space_id));
        let space = Arc::new(SpaceFile::create(
            inner.options.vfs.as_ref(),
            &path,
            NewSpace {
                id: space_id,
                kind: SpaceKind::Table,
                page_size: PageSize::of_buffer(self.page_size())
                    .expect("the pool's page size is valid"),
                encryption,
            },
            inner.keyring.as_deref(),
            Arc::clone(&inner.counters),
        )?);
        // The file's directory entry is durable before the catalog can name it: another
        // transaction's commit may make the catalog insert durable at any moment.
        inner
            .options
            .vfs
            .sync_dir(&inner.dir)
            .map_err(|e| Error::io("sync directory", &inner.dir, e))?;
        inner.spaces.insert(Arc::clone(&space));
        let alloc = Arc::new(Allocator::new(space, Arc::clone(&inner.pool)));
        let tree = BTree::create(Arc::clone(&inner.pool), alloc, Some(Arc::clone(&inner.log)))?;
        let meta = TableMeta::new(space_id, options.encrypted, encryption);
        let state = inner.register_table(name, meta, tree)?;
        self.checkpoint()?;
        inner
            .options
            .vfs
            .sync_dir(&inner.dir)
            .map_err(|e| Error::io("sync directory", &inner.dir, e))?;
        Ok(Table::new(state))
    }

    /// Creates a temporary table: a B+tree in the temporary tablespace (encrypted with key 2,
    /// else key 1, when `encrypt_temp` is on), never logged and never in the catalog, so it
    /// is gone after a restart or a crash. Its writes are autocommit only (`Db::put`,
    /// `Db::delete`, [`Db::bulk_load`]); a transaction refuses it. Its name shares the
    /// namespace of ordinary tables.
    pub fn create_temp_table(&self, name: &str) -> Result<Table> {
        self.check_open()?;
        check_table_name(name)?;
        let inner = &self.inner;
        let _ddl = inner.ddl.lock();
        if inner.tables.read().contains_key(name) || inner.temp_tables.read().contains_key(name) {
            return Err(Error::TableExists(name.to_string()));
        }
        let space = inner.spaces.get(space::TEMP_SPACE_ID)?;
        let encrypted = space.header().encryption.is_some();
        let alloc = Arc::new(Allocator::new(space, Arc::clone(&inner.pool)));
        // Its own lock namespace: temporary tables share one space id. Taken from the
        // catalog's space ids, so it never equals a table's.
        let lock_space = inner.catalog.allocate_space_id()?;
        let tree = BTree::create_anywhere(Arc::clone(&inner.pool), alloc, None)?
            .with_lock_space(lock_space);
        let meta = TableMeta {
            space_id: space::TEMP_SPACE_ID,
            encrypted_option: Encrypted::Default,
            key_id: 0,
            encrypted,
        };
        let state = Arc::new(TableState::temporary(name.to_string(), meta, tree));
        inner
            .temp_tables
            .write()
            .insert(name.to_string(), Arc::clone(&state));
        Ok(Table::new(state))
    }

    /// The table called `name` (ordinary or temporary).
    pub fn table(&self, name: &str) -> Result<Table> {
        self.check_open()?;
        let inner = &self.inner;
        let found = inner.tables.read().get(name).cloned();
        found
            .or_else(|| inner.temp_tables.read().get(name).cloned())
            .map(Table::new)
            .ok_or_else(|| Error::NoSuchTable(name.to_string()))
    }

    /// Drops a table: its catalog entry, its cached pages and its file (a temporary
    /// table: its pages go back to the temporary space's free list, zeroed).
    pub fn drop_table(&self, name: &str) -> Result<()> {
        self.check_open()?;
        let inner = &self.inner;
        let _ddl = inner.ddl.lock();
        if let Some(state) = inner.temp_tables.write().remove(name) {
            let mut alive = state.alive.write();
            *alive = false;
            state.tree.clone().destroy()?;
            return Ok(());
        }
        let state = inner
            .tables
            .write()
            .remove(name)
            .ok_or_else(|| Error::NoSuchTable(name.to_string()))?;
        // Wait for every operation in flight on the table, and refuse later ones.
        let mut alive = state.alive.write();
        *alive = false;
        let space_id = state.meta.space_id;
        let _no_pass = inner.rotator.hold(space_id);
        inner.catalog.remove(name)?;
        inner.pool.discard_space(space_id);
        let space = inner.spaces.remove(space_id);
        let path = inner.dir.join(space::file_name(space_id));
        let holds_plaintext = space.as_ref().is_some_and(|space| {
            space
                .header()
                .encryption
                .is_none_or(|record| record.rotation.plain_pages_allowed())
        });
        drop(space);
        if holds_plaintext {
            // Scrubbing: a plain table's rows must not linger in the blocks the file
            // system frees (docs/rotation.md, "Scrubbing").
            scrub_file(inner.options.vfs.as_ref(), &path)?;
        }
        inner
            .options
            .vfs
            .remove(&path)
            .map_err(|e| Error::io("remove", &path, e))?;
        self.checkpoint()?;
        inner
            .options
            .vfs
            .sync_dir(&inner.dir)
            .map_err(|e| Error::io("sync directory", &inner.dir, e))
    }

    /// Every table with its encryption facts, like `INNODB_TABLESPACES_ENCRYPTION`.
    pub fn tables(&self) -> Result<Vec<TableInfo>> {
        self.check_open()?;
        let states: Vec<Arc<TableState>> = self.inner.tables.read().values().cloned().collect();
        Ok(states.iter().map(|state| state.info()).collect())
    }

    /// Writes every dirty page and every tablespace header, synced.
    pub fn checkpoint(&self) -> Result<()> {
        self.check_open()?;
        self.inner.write_everything()
    }

    /// Checks every tree and every tablespace's page accounting.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.check_open()?;
        let mut report = VerifyReport::default();
        let mut undo_pages = vec![UNDO_DIRECTORY_PAGE];
        for active in self.inner.undo_directory.active()? {
            undo_pages.extend(UndoLog::pages(
                &self.inner.pool,
                &self.inner.system_alloc,
                active.first_page,
            )?);
        }
        report.trees.push((
            "(catalog)".to_string(),
            self.inner.catalog.tree().verify_with(&undo_pages)?,
        ));
        let states: Vec<Arc<TableState>> = self.inner.tables.read().values().cloned().collect();
        for state in states {
            report
                .trees
                .push((state.name.clone(), state.tree.verify()?));
        }
        Ok(report)
    }

    /// Buffer-pool and IO counters.
    pub fn stats(&self) -> Stats {
        let pool = self.inner.pool.stats();
        let counters = &self.inner.counters;
        let rotation = self.inner.rotator.counters();
        Stats {
            hits: pool.hits,
            misses: pool.misses,
            pages_read: counters.pages_read.load(Ordering::Relaxed),
            pages_written: counters.pages_written.load(Ordering::Relaxed),
            pages_decrypted: counters.pages_decrypted.load(Ordering::Relaxed),
            pages_encrypted: counters.pages_encrypted.load(Ordering::Relaxed),
            evictions: pool.evictions,
            dirty_pages: pool.dirty_pages,
            frames: pool.frames,
            cleaner_flushes: pool.cleaner_flushes,
            log: self.inner.log.stats(),
            pages_reencrypted: rotation.pages_rewritten.load(Ordering::Relaxed),
            encryption_wakeups: rotation.wakeups.load(Ordering::Relaxed),
        }
    }

    /// Checkpoints and stops background threads. Later calls on any clone fail with
    /// `Poisoned("database is closed")`. Also run (ignoring errors) when the last clone drops.
    pub fn close(&self) -> Result<()> {
        let mut closed = self.inner.closed.lock();
        if *closed {
            return Ok(());
        }
        *closed = true;
        self.inner.shut_down()
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if *self.inner.closed.lock() {
            return Err(Error::Poisoned("the database is closed".into()));
        }
        Ok(())
    }

    /// How a new table is encrypted, after checking the settings and the keyring.
    pub(crate) fn table_encryption(
        &self,
        name: &str,
        options: &TableOptions,
    ) -> Result<Option<SpaceEncryption>> {
        let settings = &self.inner.options;
        let encrypted = match options.encrypted {
            Encrypted::Yes => true,
            Encrypted::No if settings.encrypt_tables == EncryptTables::Force => {
                return Err(Error::EncryptionForced {
                    table: name.to_string(),
                });
            }
            Encrypted::No => false,
            Encrypted::Default => settings.encrypt_tables != EncryptTables::Off,
        };
        if !encrypted {
            if options.encryption_key_id.is_some() {
                return Err(Error::InvalidOption {
                    name: "encryption_key_id",
                    problem: format!("table {name:?} is not encrypted, so it cannot name a key id"),
                });
            }
            return Ok(None);
        }
        let key_id = options
            .encryption_key_id
            .unwrap_or(settings.default_encryption_key_id);
        let keyring = self
            .inner
            .keyring
            .as_deref()
            .ok_or_else(|| Error::NoKeyring {
                what: format!("encrypted table {name:?}"),
            })?;
        if keyring.latest_version(key_id).is_none() {
            return Err(Error::MissingTableKey {
                table: name.to_string(),
                key_id,
            });
        }
        Ok(Some(SpaceEncryption {
            key_id,
            algorithm: settings.encryption_algorithm,
        }))
    }
}

impl DbInner {
    /// A checkpoint: every dirty page and every tablespace header written and synced, and
    /// the redo log told that recovery may start here.
    fn write_everything(&self) -> Result<()> {
        self.checkpointer.checkpoint()
    }

    /// The last write and the stop of the background threads (close, and drop).
    fn shut_down(&self) -> Result<()> {
        self.rotator.stop();
        let thread = self.checkpoint_thread.lock().take();
        if let Some(thread) = &thread {
            thread.ask_to_stop();
        }
        let written = self.write_everything();
        let stopped = self.pool.shutdown();
        // Closing the log also wakes the checkpoint thread from its wait.
        let closed = self.log.close().map_err(Error::from);
        drop(thread);
        written.and(stopped).and(closed)
    }

    pub(crate) fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub(crate) fn locks(&self) -> &Arc<LockManager> {
        &self.locks
    }

    pub(crate) fn undo_directory(&self) -> &UndoDirectory {
        &self.undo_directory
    }

    pub(crate) fn system_alloc(&self) -> &Arc<Allocator> {
        &self.system_alloc
    }

    /// A new transaction id (ids are unique among the transactions in the undo directory).
    pub(crate) fn next_txn_id(&self) -> u64 {
        self.next_txn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Raises the next transaction id above `txn_id` (recovery saw it in use).
    pub(crate) fn saw_txn_id(&self, txn_id: u64) {
        self.next_txn_id.fetch_max(txn_id + 1, Ordering::Relaxed);
    }

    pub(crate) fn recovered(&self) -> &Mutex<Recovered> {
        &self.recovered
    }

    /// Records a new table (its tablespace and tree already made) in the catalog and the
    /// open tables; not durable until the caller checkpoints.
    pub(crate) fn register_table(
        &self,
        name: &str,
        meta: TableMeta,
        tree: BTree,
    ) -> Result<Arc<TableState>> {
        self.catalog.insert(name, &meta)?;
        let state = Arc::new(TableState::new(name.to_string(), meta, tree));
        self.tables
            .write()
            .insert(name.to_string(), Arc::clone(&state));
        Ok(state)
    }

    /// Where temporary files go (`tmpdir`).
    pub(crate) fn temp_dir(&self) -> PathBuf {
        self.options
            .tmpdir
            .clone()
            .unwrap_or_else(|| self.dir.join(TEMP_FILE_DIR))
    }

    /// The open table whose tablespace is `space_id`.
    pub(crate) fn table_by_space(&self, space_id: u32) -> Option<Arc<TableState>> {
        self.tables
            .read()
            .values()
            .find(|state| state.meta.space_id == space_id)
            .cloned()
    }
}

impl Drop for DbInner {
    fn drop(&mut self) {
        if !*self.closed.get_mut() {
            let _ = self.shut_down();
        }
    }
}

/// The keyring (if any) and the warnings found while loading it.
type LoadedKeyring = (Option<Arc<dyn KeyProvider>>, Vec<String>);

/// A directory-lock failure: `Locked` (naming the holder) when another process has it.
fn lock_error(dir: &Path, error: std::io::Error) -> Error {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<crate::io::LockedBy>())
    {
        Some(holder) => Error::Locked {
            path: dir.to_path_buf(),
            holder: holder.pid,
        },
        None => Error::io("lock", dir.join(crate::io::LOCK_FILE), error),
    }
}

fn load_keyring(options: &Options) -> Result<LoadedKeyring> {
    match &options.keys {
        KeySource::None => Ok((None, Vec::new())),
        KeySource::Provider(provider) => Ok((Some(Arc::clone(provider)), Vec::new())),
        KeySource::File {
            path,
            filekey,
            settings,
        } => {
            let source = KeyFileSource::new(path, filekey.as_deref(), *settings)?;
            let (provider, diagnostics) = FileKeyProvider::open(source)?;
            let warnings = diagnostics.iter().map(ToString::to_string).collect();
            Ok((Some(Arc::new(provider)), warnings))
        }
    }
}

/// The smallest redo-log segment, in pages (see `open_log`).
pub(crate) const MIN_LOG_FILE_PAGES: u64 = 32;

/// The temporary-file directory inside the data directory (default `tmpdir`).
pub(crate) const TEMP_FILE_DIR: &str = "tmp";

/// The redo log directory inside the data directory.
pub(crate) const LOG_DIR: &str = "redo";

/// Opens the redo log (with the scan a recovery needs) or, for a new database, creates it.
/// An existing log keeps the encryption it was created with.
fn open_log(
    dir: &Path,
    options: &Options,
    keyring: Option<&dyn KeyProvider>,
    exists: bool,
) -> Result<(Log, Option<RecoveryReport>)> {
    let log_dir = dir.join(LOG_DIR);
    let mut config = LogConfig {
        segment_size: options.log_file_size,
        flush_at_commit: options.flush_log_at_commit,
        encrypt: options.log_encrypted(),
        ..LogConfig::default()
    };
    if !exists {
        // One mini-transaction's batch must fit in the last eighth of the log (one segment)
        // or it could wait for a checkpoint while holding the latches the checkpoint needs:
        // the largest batches (a split path, a group of overflow pages) are about 24 pages.
        let min = MIN_LOG_FILE_PAGES * options.page_size.len() as u64;
        if options.log_file_size < min {
            return Err(Error::InvalidOption {
                name: "log_file_size",
                problem: format!(
                    "{} bytes is below {min} ({MIN_LOG_FILE_PAGES} pages of {} bytes)",
                    options.log_file_size,
                    options.page_size.len()
                ),
            });
        }
        if config.encrypt && keyring.is_none() {
            return Err(Error::NoKeyring {
                what: "encrypt_log = on".into(),
            });
        }
        let log = Log::create(Arc::clone(&options.vfs), &log_dir, config, keyring)?;
        return Ok((log, None));
    }
    let opened = Log::open(Arc::clone(&options.vfs), &log_dir, config.clone(), keyring);
    let (log, report) = match opened {
        Err(WalError::EncryptionMismatch { log_encrypted }) => {
            config.encrypt = log_encrypted;
            Log::open(Arc::clone(&options.vfs), &log_dir, config, keyring)?
        }
        other => other?,
    };
    Ok((log, Some(report)))
}

/// The system space is encrypted with key 1 whenever table encryption is on.
fn system_encryption(
    options: &Options,
    keyring: Option<&dyn KeyProvider>,
) -> Result<Option<SpaceEncryption>> {
    if options.encrypt_tables == EncryptTables::Off {
        return Ok(None);
    }
    let keyring = keyring.ok_or_else(|| Error::NoKeyring {
        what: format!("encrypt_tables = {}", options.encrypt_tables.name()),
    })?;
    provider::require_system_key(keyring)?;
    Ok(Some(SpaceEncryption {
        key_id: provider::SYSTEM_KEY_ID,
        algorithm: options.encryption_algorithm,
    }))
}

/// Overwrites the whole file at `path` with zeros and syncs it (before it is deleted).
fn scrub_file(vfs: &dyn Vfs, path: &Path) -> Result<()> {
    const CHUNK: u64 = 1 << 20;
    let file = vfs
        .open(path, crate::io::OpenMode::Existing)
        .map_err(|e| Error::io("open for scrubbing", path, e))?;
    let len = file.size().map_err(|e| Error::io("size", path, e))?;
    let zeros = vec![0u8; CHUNK as usize];
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(CHUNK) as usize;
        file.write_at(&zeros[..n], offset)
            .map_err(|e| Error::io("scrub", path, e))?;
        offset += n as u64;
    }
    file.sync().map_err(|e| Error::io("sync", path, e))
}

/// Deletes the old temporary space and makes a new, empty one (key 2, else key 1).
fn recreate_temp_space(
    vfs: &dyn Vfs,
    dir: &Path,
    options: &Options,
    keyring: Option<&dyn KeyProvider>,
    page_size: PageSize,
    spaces: &SpaceSet,
    counters: &Arc<IoCounters>,
) -> Result<()> {
    let path = dir.join(space::file_name(space::TEMP_SPACE_ID));
    if vfs.exists(&path) {
        vfs.remove(&path)
            .map_err(|e| Error::io("remove", &path, e))?;
    }
    let encryption = match keyring {
        Some(keyring) if options.encrypt_temp => Some(SpaceEncryption {
            key_id: provider::temporary_key_id(keyring),
            algorithm: options.encryption_algorithm,
        }),
        _ => None,
    };
    let temp = SpaceFile::create(
        vfs,
        &path,
        NewSpace {
            id: space::TEMP_SPACE_ID,
            kind: SpaceKind::Temporary,
            page_size,
            encryption,
        },
        keyring,
        Arc::clone(counters),
    )?;
    spaces.insert(Arc::new(temp));
    Ok(())
}
