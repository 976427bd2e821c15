//! Moving a table to another database: [`Db::export_table`] and [`Db::import_table`], like
//! MySQL's `FLUSH TABLES … FOR EXPORT` with its `.cfp` file, for Strongbox's two-tier keys.
//! `docs/transfer.md` is the guide; this doc is the reference.
//!
//! ## The export directory
//!
//! ```text
//! <out>/<table>.sbd     the tablespace: page 0 rewritten so that its data-key generations are
//!                       wrapped under the transfer key; pages 1..page_count exactly as stored
//!                       (ciphertext for an encrypted table). With the transfer key it is a
//!                       tablespace like any other: `SpaceFile::open` opens it.
//! <out>/<table>.sbmeta  the manifest (layout below); written last, through a temporary name,
//!                       so its presence means the other files are complete
//! <out>/<table>.sbtk    the transfer key (encrypted tables only): a key file in the MariaDB
//!                       format (`docs/FORMAT.md` §3), mode 0600, holding one random 256-bit
//!                       key as `<key id>;1;<hex>` — the table's key id, version 1 — so the
//!                       generations in page 0 keep naming the key id their pages carry
//! ```
//!
//! **Why page 0 is rewritten** rather than copied: the copy is then self-contained (the
//! transfer key opens it, nothing else is needed), and the data keys leave the source
//! database wrapped under the transfer key *only* — an old copy of the source key file does
//! not open an export. The export directory lives outside both databases and is read and
//! written through the real file system ([`StdVfs`]), like key files.
//!
//! ## Manifest `<table>.sbmeta`
//!
//! 344 bytes, CRC-protected; the layout and its checks are in `manifest.rs`.
//!
//! ## Export, step by step (what is guaranteed)
//!
//! ```text
//!  1. ddl lock                no DDL, rotation request or key reload meanwhile
//!  2. table.alive, exclusive  waits for the reads and writes in flight on the table and
//!                             blocks new ones (readers too) until the export ends
//!  3. rotator.hold(space)     no re-encryption pass; refused if page 0 says one is running
//!  4. uncommitted changes     waits (up to lock_wait_timeout) until no transaction holds a
//!                             changed key of the table: transactions change pages in place
//!                             and their undo is in the system space, which an export
//!                             cannot carry
//!  5. checkpoint              every page of the table durable in its file
//!  6. <table>.sbtk            a new random key, written 0600 (encrypted tables only)
//!  7. <table>.sbd             page 0 rewritten; pages copied as stored; synced
//!  8. <table>.sbmeta          temporary name, synced, renamed, directory synced
//! ```
//!
//! The copy is therefore the table at one transaction-consistent point: every committed
//! change and no uncommitted one. Pages are never decrypted on the way out. A failed export
//! removes what it wrote; a crash can leave files without `<table>.sbmeta`, which import
//! refuses and a new export into the same directory reports ([`Error::ExportExists`]).
//!
//! ## Import, step by step
//!
//! ```text
//!  1. read <table>.sbmeta       magic, version, CRC, every field
//!  2. checks                    page size, name free, local key id, encrypt_tables = force
//!  3. transfer key              must unwrap every data key of the manifest
//!  4. open <table>.sbd          as a tablespace under the transfer key; page 0 must agree
//!                               with the manifest
//!  5. new space id and file     import-<id>.sbd.tmp, with a FRESH data key wrapped under
//!                               the latest version of the key id in the local keyring
//!  6. pages 1..page_count       read_page (checksum, position, decrypt, policy, structure)
//!                               → new space id, page LSN 0 → encode_page (new key, new
//!                               nonce) → write; sync; page 0 with the allocation state;
//!                               rename to space-<id>.sbd; sync the data directory
//!  7. verify                    the tree, through the buffer pool, before anyone sees it
//!  8. register                  catalog and tables, as create_table; checkpoint
//!  9. delete <table>.sbtk
//! ```
//!
//! **Crash safety.** A crash before the rename leaves only `import-<id>.sbd.tmp`, which
//! `Db::open` ignores and the next import deletes. After it, until the catalog insert of
//! step 8 is durable, `space-<id>.sbd` is complete but no catalog entry names it, and
//! `Db::open` deletes it. The file, its contents and its name are durable (step 6) before
//! the catalog can name it — and the catalog insert can become durable early, with any
//! other transaction's commit. Plaintext never reaches a file: pages are decrypted
//! into memory and sealed again before they are written.
//!
//! **Why a fresh data key** and not the exported ones: the nonce argument (`docs/FORMAT.md`
//! §2.2) rests on *one data key, one tablespace*. The source database keeps writing its
//! table under its data keys, with its own write-nonce counter; a second tablespace under
//! the same keys, counting nonces on its own, would sooner or later seal the same
//! `(page_no, nonce)` under the same key — a repeated keystream. Every page is rewritten
//! anyway (its space id changes), so sealing it under a new key costs nothing more.
//!
//! **Why the page LSN becomes 0.** A page LSN is a position in the redo log of the
//! database that wrote the page. Here it would be compared with this database's log: an LSN
//! from a longer log would make recovery skip this database's later changes to the page as
//! "already applied", and the WAL rule would wait for this log to reach it. LSN 0 is below
//! every record, so every later change is redone.

use crate::btree::BTree;
use crate::catalog::{check_table_name, Encrypted, TableMeta};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::io::{FileIo, OpenMode, StdVfs, Vfs};
use crate::page::{self, PageHeader, PageId, PageKeys, PageType, Seal};
use crate::space::header::{EncryptionRecord, Generation, RotationState};
use crate::space::{
    self, AllocState, Allocator, NewSpace, SpaceEncryption, SpaceFile, SpaceHeader, SpaceKeys,
    SpaceKind,
};
use crate::table::{Table, TableInfo, TableOptions, TableState};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strongbox_keyring::keyfile::KeyFile;
use strongbox_keyring::provider::{FileKeyProvider, KeyProvider};
use strongbox_keyring::source::KeyFileSource;
use strongbox_keyring::wrap;

mod manifest;
use manifest::Manifest;

/// The version under which the transfer key file holds its key.
pub(crate) const TRANSFER_KEY_VERSION: u32 = 1;
/// Size of the transfer key.
const TRANSFER_KEY_BITS: usize = 256;
/// The name of a tablespace file while an import builds it: `import-<id>.sbd.tmp`.
const IMPORT_PREFIX: &str = "import-";
const IMPORT_SUFFIX: &str = ".sbd.tmp";
/// How often an export looks again for uncommitted changes while it waits.
const UNCOMMITTED_POLL: Duration = Duration::from_millis(10);

/// What [`Db::export_table`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub table: String,
    /// The table's space id in the source database (every page of the copy carries it).
    pub space_id: u32,
    /// `<out>/<table>.sbd`: the tablespace copy.
    pub data_file: PathBuf,
    /// `<out>/<table>.sbmeta`: the manifest.
    pub manifest_file: PathBuf,
    /// `<out>/<table>.sbtk`: the transfer key; `None` for an unencrypted table. Whoever
    /// holds it and the copy can read the table: carry the two separately.
    pub transfer_key_file: Option<PathBuf>,
    /// Pages of the copy, page 0 included.
    pub pages: u32,
    pub encrypted: bool,
    /// Keyring key id of the table (0 when unencrypted).
    pub key_id: u32,
}

/// How [`Db::import_table_with`] imports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Which export of the directory, by its table name; needed only when it holds several.
    pub table: Option<String>,
    /// The new table's name; by default the exported name.
    pub name: Option<String>,
    /// Keyring key id that encrypts the imported table; by default the exported key id.
    pub key_id: Option<u32>,
}

impl ImportOptions {
    pub fn table(mut self, table: impl Into<String>) -> ImportOptions {
        self.table = Some(table.into());
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> ImportOptions {
        self.name = Some(name.into());
        self
    }

    pub fn key_id(mut self, key_id: u32) -> ImportOptions {
        self.key_id = Some(key_id);
        self
    }
}

/// What [`Db::import_table`] did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The new table.
    pub table: Table,
    /// Its encryption facts, as `Db::tables` lists them.
    pub info: TableInfo,
    /// The name and space id the table had in the source database.
    pub source_table: String,
    pub source_space_id: u32,
    /// Pages copied, page 0 excluded.
    pub pages_copied: u32,
    /// The transfer key file deleted (`None` for an unencrypted table, which has none).
    pub transfer_key_deleted: Option<PathBuf>,
    /// Things to tell the operator: a transfer key readable by others, or one that could not
    /// be deleted.
    pub warnings: Vec<String>,
}

impl Db {
    /// Exports table `name` into `out_dir` (created if needed): `<name>.sbd`, `<name>.sbmeta`
    /// and, for an encrypted table, the transfer key `<name>.sbtk` that opens them. The
    /// table is quiesced meanwhile: its reads and writes wait. Refused while a
    /// re-encryption pass runs on the table ([`Error::TableRotating`]), while open
    /// transactions hold uncommitted changes to it for longer than `lock_wait_timeout`
    /// ([`Error::UncommittedChanges`]), and when `out_dir` already holds an export of it.
    /// See the module doc for the steps and the files.
    pub fn export_table(&self, name: &str, out_dir: &Path) -> Result<ExportReport> {
        self.check_open()?;
        let inner = &self.inner;
        let _ddl = inner.ddl.lock();
        let state = self.exportable(name)?;
        let files = ExportFiles::new(out_dir, name);
        if let Some(existing) = files.all().into_iter().find(|path| StdVfs.exists(path)) {
            return Err(Error::ExportExists {
                table: name.to_string(),
                path: existing.to_path_buf(),
            });
        }
        // Steps 2–5: quiesce the table and make it durable.
        let _no_operations = state.alive.write();
        let space_id = state.meta.space_id;
        let _no_pass = inner.rotator.hold(space_id);
        let space = inner.spaces.get(space_id)?;
        if space
            .header()
            .encryption
            .is_some_and(|record| record.rotation != RotationState::default())
        {
            return Err(Error::TableRotating {
                table: name.to_string(),
            });
        }
        self.wait_for_no_uncommitted_changes(&state)?;
        self.checkpoint()?;
        let mut header = space.header();
        header.set_alloc(space.logged_alloc());

        StdVfs
            .create_dir_all(out_dir)
            .map_err(|e| Error::io("create directory", out_dir, e))?;
        let keyring = inner.keyring.as_deref();
        if let Err(error) = write_export(&files, name, &space, &header, keyring) {
            files.remove_all();
            return Err(error);
        }
        Ok(ExportReport {
            table: name.to_string(),
            space_id,
            data_file: files.data.clone(),
            manifest_file: files.manifest.clone(),
            transfer_key_file: header.encryption.as_ref().map(|_| files.key.clone()),
            pages: header.page_count,
            encrypted: header.encryption.is_some(),
            key_id: header.encryption.as_ref().map_or(0, |r| r.key_id),
        })
    }

    /// Imports the one export in `from_dir` as a new table called `name` (by default its
    /// exported name), then deletes its transfer key. See [`Db::import_table_with`].
    pub fn import_table(&self, from_dir: &Path, name: Option<&str>) -> Result<ImportReport> {
        let options = ImportOptions {
            name: name.map(str::to_string),
            ..ImportOptions::default()
        };
        self.import_table_with(from_dir, &options)
    }

    /// Imports an export written by [`Db::export_table`] (possibly by another database with
    /// other keys) as a new table, re-encrypted under a fresh data key wrapped under this
    /// database's keyring, and deletes the transfer key file when done. Fails, changing
    /// nothing, on a malformed or edited export ([`Error::BadExport`]), a missing or wrong
    /// transfer key, another page size ([`Error::Incompatible`]), a name in use
    /// ([`Error::TableExists`]) or a key id the keyring lacks ([`Error::MissingTableKey`]).
    /// See the module doc for the steps.
    pub fn import_table_with(
        &self,
        from_dir: &Path,
        options: &ImportOptions,
    ) -> Result<ImportReport> {
        self.check_open()?;
        let files = find_export(from_dir, options.table.as_deref())?;
        let manifest = Manifest::read(&files.manifest)?;
        let name = options.name.as_deref().unwrap_or(&manifest.table);
        check_table_name(name)?;
        if manifest.page_size.len() != self.page_size() {
            return Err(Error::Incompatible {
                path: files.manifest.clone(),
                problem: format!(
                    "exported with page_size {}, this database uses page_size {}",
                    manifest.page_size,
                    self.page_size()
                ),
            });
        }
        let inner = &self.inner;
        let _ddl = inner.ddl.lock();
        if self.table(name).is_ok() {
            return Err(Error::TableExists(name.to_string()));
        }
        let table_options = TableOptions {
            encrypted: if manifest.encryption.is_some() {
                Encrypted::Yes
            } else {
                Encrypted::No
            },
            encryption_key_id: options
                .key_id
                .or(manifest.encryption.as_ref().map(|r| r.key_id)),
        };
        let encryption = self.table_encryption(name, &table_options)?;
        let mut warnings = Vec::new();
        let transfer = open_transfer_key(&files, &manifest, &mut warnings)?;
        let copy = open_copy(&files, &manifest, transfer.as_ref())?;

        // Steps 5–6: the new space, complete and durable before anything names it.
        let space_id = inner.catalog.allocate_space_id()?;
        let space = self.build_space(space_id, &copy, &manifest, encryption)?;

        // Step 7: the tree must hold before the catalog names it.
        inner.spaces.insert(Arc::clone(&space));
        let alloc = Arc::new(Allocator::new(Arc::clone(&space), Arc::clone(&inner.pool)));
        let tree = BTree::open(
            Arc::clone(&inner.pool),
            alloc,
            Some(Arc::clone(inner.log())),
        );
        if let Err(error) = tree.verify() {
            drop(tree);
            inner.pool.discard_space(space_id);
            inner.spaces.remove(space_id);
            let path = space.path().to_path_buf();
            drop(space);
            let _ = inner.options.vfs.remove(&path);
            return Err(error);
        }

        // Step 8: as `create_table` registers a table.
        let meta = TableMeta::new(space_id, table_options.encrypted, encryption);
        let state = inner.register_table(name, meta, tree)?;
        self.checkpoint()?;

        // Step 9.
        let transfer_key_deleted = match transfer {
            None => None,
            Some(provider) => {
                drop(provider);
                match remove_durably(&files.key) {
                    Ok(()) => Some(files.key.clone()),
                    Err(error) => {
                        warnings.push(format!(
                            "could not delete the transfer key {}: {error}; delete it by hand",
                            files.key.display()
                        ));
                        None
                    }
                }
            }
        };
        Ok(ImportReport {
            info: state.info(),
            table: Table::new(state),
            source_table: manifest.table,
            source_space_id: manifest.source_space_id,
            pages_copied: manifest.alloc.page_count - 1,
            transfer_key_deleted,
            warnings,
        })
    }

    /// Steps 5–6 of an import: the new tablespace `space_id`, built under a temporary name
    /// (`Db::open` ignores it) and renamed to `space-<id>.sbd` only once complete and
    /// synced, then opened as `Db::open` opens a space. A crash therefore never leaves a
    /// half-made `space-<id>.sbd` — one too short to open would stop `Db::open` before it
    /// could tell it is a leftover. The name is durable before the catalog can name it:
    /// any commit may make the catalog insert durable before step 8's checkpoint does.
    fn build_space(
        &self,
        space_id: u32,
        copy: &SpaceFile,
        manifest: &Manifest,
        encryption: Option<SpaceEncryption>,
    ) -> Result<Arc<SpaceFile>> {
        let inner = &self.inner;
        let vfs = inner.options.vfs.as_ref();
        let dir = self.path();
        remove_interrupted_imports(vfs, dir)?;
        let temp = dir.join(format!("{IMPORT_PREFIX}{space_id}{IMPORT_SUFFIX}"));
        let path = dir.join(space::file_name(space_id));
        let counters = inner.spaces.get(space::SYSTEM_SPACE_ID)?.counters().clone();
        let keyring = inner.keyring.as_deref();
        let built = SpaceFile::create(
            vfs,
            &temp,
            NewSpace {
                id: space_id,
                kind: SpaceKind::Table,
                page_size: manifest.page_size,
                encryption,
            },
            keyring,
            Arc::clone(&counters),
        )
        .and_then(|target| copy_pages(copy, &target, manifest.alloc))
        .and_then(|()| {
            vfs.rename(&temp, &path)
                .map_err(|e| Error::io("rename", &temp, e))?;
            vfs.sync_dir(dir)
                .map_err(|e| Error::io("sync directory", dir, e))
        })
        .and_then(|()| {
            let page_size = manifest.page_size;
            SpaceFile::open(vfs, &path, space_id, page_size, keyring, counters)
        });
        built.map(Arc::new).inspect_err(|_| {
            for leftover in [&temp, &path] {
                if vfs.exists(leftover) {
                    let _ = vfs.remove(leftover);
                }
            }
        })
    }

    /// The ordinary table `name`: temporary tables have no tablespace of their own.
    fn exportable(&self, name: &str) -> Result<Arc<TableState>> {
        if let Some(state) = self.inner.tables.read().get(name) {
            return Ok(Arc::clone(state));
        }
        match self.table(name) {
            Ok(table) if table.is_temporary() => Err(Error::InvalidOption {
                name: "export",
                problem: format!(
                    "{name:?} is a temporary table; it has no tablespace of its own to export"
                ),
            }),
            _ => Err(Error::NoSuchTable(name.to_string())),
        }
    }

    /// Step 4 of an export: waits until no transaction holds a changed key of the table.
    /// New changes cannot start (the caller holds `alive` exclusively); commits and
    /// rollbacks need neither `alive` nor the DDL lock, so they finish. A transaction that
    /// waits for `alive` while holding changed keys would wait for ever, hence the timeout.
    fn wait_for_no_uncommitted_changes(&self, state: &TableState) -> Result<()> {
        let locks = self.inner.locks();
        let lock_space = state.tree.lock_space();
        let timeout = self.inner.options.lock_wait_timeout;
        let started = Instant::now();
        while !locks
            .foreign_overrides(lock_space, Bound::Unbounded, Bound::Unbounded, None)
            .is_empty()
        {
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(Error::UncommittedChanges {
                    table: state.name.clone(),
                    waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                });
            }
            std::thread::sleep(UNCOMMITTED_POLL);
        }
        Ok(())
    }
}

/// The files of one table's export.
struct ExportFiles {
    dir: PathBuf,
    data: PathBuf,
    manifest: PathBuf,
    /// Where the manifest is written before its rename.
    manifest_temp: PathBuf,
    key: PathBuf,
}

impl ExportFiles {
    fn new(dir: &Path, table: &str) -> ExportFiles {
        ExportFiles {
            dir: dir.to_path_buf(),
            data: dir.join(format!("{table}.sbd")),
            manifest: dir.join(format!("{table}.sbmeta")),
            manifest_temp: dir.join(format!("{table}.sbmeta.tmp")),
            key: dir.join(format!("{table}.sbtk")),
        }
    }

    fn all(&self) -> [&Path; 4] {
        [&self.data, &self.manifest, &self.manifest_temp, &self.key]
    }

    /// After a failed export (which found none of them): whatever it wrote goes.
    fn remove_all(&self) {
        for path in self.all() {
            if StdVfs.exists(path) {
                let _ = StdVfs.remove(path);
            }
        }
        let _ = StdVfs.sync_dir(&self.dir);
    }
}

/// Steps 6–8 of an export.
fn write_export(
    files: &ExportFiles,
    table: &str,
    space: &SpaceFile,
    header: &SpaceHeader,
    keyring: Option<&dyn KeyProvider>,
) -> Result<()> {
    let mut exported = header.clone();
    if let Some(record) = &header.encryption {
        let keyring = keyring.ok_or_else(|| Error::NoKeyring {
            what: format!("exporting encrypted table {table:?}"),
        })?;
        let transfer = create_transfer_key(&files.key, record)?;
        exported.encryption = Some(wrap_for_transfer(record, keyring, &transfer, space)?);
    }
    copy_stored_pages(&files.data, space, &exported)?;
    let manifest = Manifest {
        table: table.to_string(),
        source_space_id: space.id(),
        page_size: space.page_size(),
        alloc: exported.alloc(),
        encryption: exported.encryption,
    };
    write_durably(&files.manifest_temp, &files.manifest, &manifest.encode())
}

/// A new transfer key file, 0600, one 256-bit key per key id the generations name (in
/// practice one: several key ids coexist only while a pass runs, which export refuses).
/// The key never passes through this crate: the keyring writes and reads it.
fn create_transfer_key(path: &Path, record: &EncryptionRecord) -> Result<FileKeyProvider> {
    let mut ids: Vec<u32> = record.generations.iter().map(Generation::key_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let source = KeyFileSource::plain(path);
    source.create(&KeyFile::generate(&ids, TRANSFER_KEY_BITS, true)?)?;
    let (provider, _diagnostics) = FileKeyProvider::open(source)?;
    Ok(provider)
}

/// `record` with every generation's data key wrapped under the transfer key instead of the
/// local keyring; versions and everything else unchanged.
fn wrap_for_transfer(
    record: &EncryptionRecord,
    keyring: &dyn KeyProvider,
    transfer: &dyn KeyProvider,
    space: &SpaceFile,
) -> Result<EncryptionRecord> {
    let (keys, errors) = SpaceKeys::unwrap_all(record, keyring);
    if let Some(source) = errors.into_iter().next() {
        return Err(Error::KeyUnavailable {
            path: space.path().to_path_buf(),
            source,
            key_file: None,
        });
    }
    let mut generations = Vec::with_capacity(record.generations.len());
    for generation in &record.generations {
        let key = keys
            .data_key(generation.key_id(), generation.version)
            .expect("every generation was unwrapped");
        generations.push(Generation {
            version: generation.version,
            wrapped: wrap::wrap(transfer, generation.key_id(), TRANSFER_KEY_VERSION, &key)?,
        });
    }
    Ok(EncryptionRecord {
        generations,
        ..record.clone()
    })
}

/// `<table>.sbd`: page 0 from `header`, then pages `1..page_count` as `space` stores them.
fn copy_stored_pages(path: &Path, space: &SpaceFile, header: &SpaceHeader) -> Result<()> {
    let file = StdVfs
        .open(path, OpenMode::CreateNew)
        .map_err(|e| Error::io("create", path, e))?;
    let page_len = space.page_size().len();
    let mut frame = vec![0u8; page_len];
    page::init_frame(
        &mut frame,
        PageType::SpaceHeader,
        PageId::new(header.space_id, 0),
        0,
    );
    header.write(&mut frame);
    let mut stored = vec![0u8; page_len];
    page::encode(&frame, Seal::Plain, &mut stored).map_err(|source| Error::Page {
        path: path.to_path_buf(),
        source,
    })?;
    write_at(file.as_ref(), path, &stored, 0)?;
    for page_no in 1..header.page_count {
        let stored = space.read_stored(page_no)?.ok_or_else(|| Error::Corrupt {
            path: space.path().to_path_buf(),
            problem: format!(
                "page {page_no} lies past the end of the file, below the page count {}",
                header.page_count
            ),
        })?;
        write_at(file.as_ref(), path, &stored, offset_of(page_no, page_len))?;
    }
    file.sync().map_err(|e| Error::io("sync", path, e))
}

/// Writes `bytes` to `temp`, syncs it, renames it to `path` and syncs the directory.
fn write_durably(temp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let file = StdVfs
        .open(temp, OpenMode::CreateOrOpen)
        .map_err(|e| Error::io("create", temp, e))?;
    file.set_len(0)
        .map_err(|e| Error::io("truncate", temp, e))?;
    write_at(file.as_ref(), temp, bytes, 0)?;
    file.sync().map_err(|e| Error::io("sync", temp, e))?;
    drop(file);
    StdVfs
        .rename(temp, path)
        .map_err(|e| Error::io("rename", temp, e))?;
    sync_parent(path)
}

fn remove_durably(path: &Path) -> Result<()> {
    StdVfs
        .remove(path)
        .map_err(|e| Error::io("remove", path, e))?;
    sync_parent(path)
}

fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    StdVfs
        .sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}

fn write_at(file: &dyn FileIo, path: &Path, bytes: &[u8], offset: u64) -> Result<()> {
    file.write_at(bytes, offset)
        .map_err(|e| Error::io("write", path, e))
}

fn offset_of(page_no: u32, page_len: usize) -> u64 {
    u64::from(page_no) * page_len as u64
}

/// The export in `dir`: the one named `table`, or the only one there.
fn find_export(dir: &Path, table: Option<&str>) -> Result<ExportFiles> {
    let bad = |problem: String| Error::BadExport {
        path: dir.to_path_buf(),
        problem,
    };
    if let Some(table) = table {
        check_table_name(table)?;
        let files = ExportFiles::new(dir, table);
        if !StdVfs.exists(&files.manifest) {
            return Err(bad(format!(
                "holds no export of table {table:?}: {} is missing (an export writes it last)",
                files.manifest.display()
            )));
        }
        return Ok(files);
    }
    let listed = StdVfs
        .list(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    let tables: Vec<&str> = listed
        .iter()
        .filter_map(|path| path.file_name()?.to_str()?.strip_suffix(".sbmeta"))
        .collect();
    match tables.as_slice() {
        [table] => Ok(ExportFiles::new(dir, table)),
        [] => Err(bad(
            "holds no export: no <table>.sbmeta manifest (an export writes it last)".into(),
        )),
        several => Err(bad(format!(
            "holds exports of several tables ({}); name the one to import",
            several.join(", ")
        ))),
    }
}

/// Deletes the temporary files of imports a crash interrupted (no other import runs: the
/// caller holds the DDL lock, and the directory lock keeps other processes out).
fn remove_interrupted_imports(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    let listed = vfs
        .list(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    for path in listed {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if name.starts_with(IMPORT_PREFIX) && name.ends_with(IMPORT_SUFFIX) {
            vfs.remove(&path)
                .map_err(|e| Error::io("remove interrupted import", &path, e))?;
        }
    }
    Ok(())
}

/// Step 3 of an import: the transfer key, checked against every data key of the manifest.
fn open_transfer_key(
    files: &ExportFiles,
    manifest: &Manifest,
    warnings: &mut Vec<String>,
) -> Result<Option<FileKeyProvider>> {
    let Some(record) = &manifest.encryption else {
        return Ok(None);
    };
    if !StdVfs.exists(&files.key) {
        return Err(Error::TransferKeyMissing {
            path: files.key.clone(),
        });
    }
    let (provider, diagnostics) = FileKeyProvider::open(KeyFileSource::plain(&files.key))?;
    warnings.extend(diagnostics.iter().map(ToString::to_string));
    for generation in &record.generations {
        wrap::unwrap(&provider, &generation.wrapped).map_err(|_| Error::WrongTransferKey {
            path: files.key.clone(),
        })?;
    }
    Ok(Some(provider))
}

/// Step 4 of an import: the tablespace copy, opened under the transfer key, whose page 0
/// must say what the manifest says.
fn open_copy(
    files: &ExportFiles,
    manifest: &Manifest,
    transfer: Option<&FileKeyProvider>,
) -> Result<SpaceFile> {
    let bad = |problem: String| Error::BadExport {
        path: files.data.clone(),
        problem,
    };
    if !StdVfs.exists(&files.data) {
        return Err(bad("the tablespace copy is missing".into()));
    }
    // Page 0 first, without keys, so that a copy that is not this manifest's is reported
    // as such rather than as a key that does not unwrap.
    let header = read_page_zero(&files.data, manifest).map_err(bad)?;
    if header.kind != SpaceKind::Table
        || header.alloc() != manifest.alloc
        || header.encryption != manifest.encryption
    {
        return Err(bad(format!(
            "page 0 of the tablespace copy does not match the manifest {}",
            files.manifest.display()
        )));
    }
    let copy = SpaceFile::open(
        &StdVfs,
        &files.data,
        manifest.source_space_id,
        manifest.page_size,
        transfer.map(|provider| provider as &dyn KeyProvider),
        Arc::default(),
    )
    .map_err(|e| bad(format!("the tablespace copy does not open: {e}")))?;
    if copy.read_stored(manifest.alloc.page_count - 1)?.is_none() {
        return Err(bad(format!(
            "the tablespace copy holds fewer than its {} pages",
            manifest.alloc.page_count
        )));
    }
    Ok(copy)
}

/// Page 0 of the copy at `path`, checked (checksum, position) and decoded.
fn read_page_zero(path: &Path, manifest: &Manifest) -> std::result::Result<SpaceHeader, String> {
    let file = StdVfs
        .open(path, OpenMode::Existing)
        .map_err(|e| format!("cannot open the tablespace copy: {e}"))?;
    let mut frame = vec![0u8; manifest.page_size.len()];
    file.read_at(&mut frame, 0)
        .map_err(|e| format!("cannot read page 0 of the tablespace copy: {e}"))?;
    let id = PageId::new(manifest.source_space_id, 0);
    page::decode_in_place(&mut frame, id, &page::NoKeys)
        .map_err(|e| format!("page 0 of the tablespace copy: {e}"))?;
    SpaceHeader::read(&frame).map_err(|e| format!("page 0 of the tablespace copy: {e}"))
}

/// Step 6 of an import: every page of `copy` decoded (all its checks), moved to `target`'s
/// space id with LSN 0, sealed by `target` (its key, its nonces) and written; then synced,
/// and page 0 written with the allocation state.
fn copy_pages(copy: &SpaceFile, target: &SpaceFile, alloc: AllocState) -> Result<()> {
    target.update_header(|header| header.set_alloc(alloc));
    let mut frame = vec![0u8; copy.page_size().len()];
    for page_no in 1..alloc.page_count {
        if let Err(error) = copy.read_page(page_no, &mut frame) {
            // A page allocated just before a crash and never written stays that way.
            match copy.read_stored(page_no)? {
                Some(stored) if page::is_all_zero(&stored) => {
                    target.write_stored(page_no, &stored)?;
                    continue;
                }
                _ => return Err(error),
            }
        }
        let stored_header = PageHeader::read(&frame).map_err(|source| Error::Page {
            path: copy.path().to_path_buf(),
            source,
        })?;
        PageHeader::new(
            stored_header.page_type,
            PageId::new(target.id(), page_no),
            0,
        )
        .write(&mut frame);
        let stored = target.encode_page(page_no, &frame)?;
        target.write_stored(page_no, &stored)?;
    }
    target.sync()?;
    target.persist_header(alloc)
}
