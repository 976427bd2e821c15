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
//! ## Manifest `<table>.sbmeta` (little-endian, 344 bytes)
//!
//! ```text
//! offset size field
//! 0      8    magic             "SBXEXPRT"
//! 8      4    format_version    1
//! 12     4    page_size         bytes; must equal the importing database's
//! 16     4    source_space_id   the space id every page of the copy carries
//! 20     4    page_count        pages of the copy, page 0 included (>= 2)
//! 24     4    free_head         first page of the free list (0 = empty)
//! 28     4    free_count        pages on the free list
//! 32     1    name_len          1..=64
//! 33     1    encrypted         0 no, 1 yes
//! 34     1    algorithm         1 aes_ctr, 2 aes_cbc, 3 aes_gcm (0 when unencrypted)
//! 35     1    generation_count  1..=4 (0 when unencrypted)
//! 36     64   name              the table's name, zero-padded
//! 100    4    key_id            keyring key id of the table (0 when unencrypted)
//! 104    4    current_version   generation new writes used
//! 108    4    min_version       oldest generation a page may carry
//! 112    4    reserved          0
//! 116    224  generations       4 × { version u32, WrappedKey (52 bytes, FORMAT.md §4) },
//!                               each data key wrapped under the transfer key (key_id, 1);
//!                               unused slots zero
//! 340    4    crc               CRC-32 of bytes 0..340
//! ```
//!
//! Every field is checked on import; a failure names the field ([`Error::BadExport`]).
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
use crate::page::header::{cipher_code, cipher_from_code};
use crate::page::{self, PageHeader, PageId, PageKeys, PageSize, PageType, Seal};
use crate::space::header::{EncryptionRecord, Generation, RotationState, MAX_GENERATIONS};
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
use strongbox_keyring::wrap::{self, WrappedKey};

const MAGIC: &[u8; 8] = b"SBXEXPRT";
const FORMAT_VERSION: u32 = 1;
const MAX_NAME_LEN: usize = 64;

const MAGIC_OFFSET: usize = 0;
const FORMAT_OFFSET: usize = MAGIC_OFFSET + 8;
const PAGE_SIZE_OFFSET: usize = FORMAT_OFFSET + 4;
const SOURCE_SPACE_OFFSET: usize = PAGE_SIZE_OFFSET + 4;
const PAGE_COUNT_OFFSET: usize = SOURCE_SPACE_OFFSET + 4;
const FREE_HEAD_OFFSET: usize = PAGE_COUNT_OFFSET + 4;
const FREE_COUNT_OFFSET: usize = FREE_HEAD_OFFSET + 4;
const NAME_LEN_OFFSET: usize = FREE_COUNT_OFFSET + 4;
const ENCRYPTED_OFFSET: usize = NAME_LEN_OFFSET + 1;
const ALGORITHM_OFFSET: usize = ENCRYPTED_OFFSET + 1;
const GENERATION_COUNT_OFFSET: usize = ALGORITHM_OFFSET + 1;
const NAME_OFFSET: usize = GENERATION_COUNT_OFFSET + 1;
const KEY_ID_OFFSET: usize = NAME_OFFSET + MAX_NAME_LEN;
const CURRENT_VERSION_OFFSET: usize = KEY_ID_OFFSET + 4;
const MIN_VERSION_OFFSET: usize = CURRENT_VERSION_OFFSET + 4;
const RESERVED_OFFSET: usize = MIN_VERSION_OFFSET + 4;
const GENERATIONS_OFFSET: usize = RESERVED_OFFSET + 4;
const GENERATION_LEN: usize = 4 + WrappedKey::ENCODED_LEN;
const CRC_OFFSET: usize = GENERATIONS_OFFSET + MAX_GENERATIONS * GENERATION_LEN;
/// Bytes of a manifest file.
const MANIFEST_LEN: usize = CRC_OFFSET + 4;

const _: () = assert!(
    MANIFEST_LEN == 344,
    "the module doc gives the manifest 344 bytes"
);

/// The version under which the transfer key file holds its key.
const TRANSFER_KEY_VERSION: u32 = 1;
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
        let manifest = Manifest::read(&files)?;
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

/// The manifest, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Manifest {
    table: String,
    source_space_id: u32,
    page_size: PageSize,
    alloc: AllocState,
    /// The record with every data key wrapped under the transfer key; `None` when the
    /// table is not encrypted.
    encryption: Option<EncryptionRecord>,
}

impl Manifest {
    fn read(files: &ExportFiles) -> Result<Manifest> {
        let path = &files.manifest;
        let file = StdVfs
            .open(path, OpenMode::Existing)
            .map_err(|e| Error::io("open", path, e))?;
        let len = file.size().map_err(|e| Error::io("read", path, e))?;
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(4096)];
        file.read_at(&mut bytes, 0)
            .map_err(|e| Error::io("read", path, e))?;
        let manifest = Manifest::decode(&bytes).map_err(|problem| Error::BadExport {
            path: path.clone(),
            problem,
        })?;
        let stem = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".sbmeta"));
        if stem != Some(manifest.table.as_str()) {
            return Err(Error::BadExport {
                path: path.clone(),
                problem: format!(
                    "the manifest is of table {:?}; its files must keep that name (rename \
                     the table with the import's name option instead)",
                    manifest.table
                ),
            });
        }
        Ok(manifest)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; MANIFEST_LEN];
        out[MAGIC_OFFSET..FORMAT_OFFSET].copy_from_slice(MAGIC);
        put_u32(&mut out, FORMAT_OFFSET, FORMAT_VERSION);
        put_u32(&mut out, PAGE_SIZE_OFFSET, self.page_size.get());
        put_u32(&mut out, SOURCE_SPACE_OFFSET, self.source_space_id);
        put_u32(&mut out, PAGE_COUNT_OFFSET, self.alloc.page_count);
        put_u32(&mut out, FREE_HEAD_OFFSET, self.alloc.free_head);
        put_u32(&mut out, FREE_COUNT_OFFSET, self.alloc.free_count);
        out[NAME_LEN_OFFSET] = self.table.len() as u8;
        out[NAME_OFFSET..NAME_OFFSET + self.table.len()].copy_from_slice(self.table.as_bytes());
        if let Some(record) = &self.encryption {
            out[ENCRYPTED_OFFSET] = 1;
            out[ALGORITHM_OFFSET] = cipher_code(Some(record.algorithm));
            out[GENERATION_COUNT_OFFSET] = record.generations.len() as u8;
            put_u32(&mut out, KEY_ID_OFFSET, record.key_id);
            put_u32(&mut out, CURRENT_VERSION_OFFSET, record.current_version);
            put_u32(&mut out, MIN_VERSION_OFFSET, record.min_version);
            for (index, generation) in record.generations.iter().enumerate() {
                let start = GENERATIONS_OFFSET + index * GENERATION_LEN;
                put_u32(&mut out, start, generation.version);
                generation
                    .wrapped
                    .encode(&mut out[start + 4..start + GENERATION_LEN]);
            }
        }
        let crc = crc32fast::hash(&out[..CRC_OFFSET]);
        put_u32(&mut out, CRC_OFFSET, crc);
        out
    }

    /// Decodes and checks a manifest; the error names what is wrong.
    fn decode(bytes: &[u8]) -> std::result::Result<Manifest, String> {
        if bytes.get(MAGIC_OFFSET..FORMAT_OFFSET) != Some(MAGIC.as_slice()) {
            return Err("not a Strongbox export manifest (bad magic)".into());
        }
        let format = bytes.get(FORMAT_OFFSET..PAGE_SIZE_OFFSET).map(le_u32);
        if format != Some(FORMAT_VERSION) {
            return Err(format!(
                "manifest format version {}, this build reads version {FORMAT_VERSION}",
                format.map_or("(missing)".into(), |v| v.to_string())
            ));
        }
        if bytes.len() != MANIFEST_LEN {
            return Err(format!(
                "the manifest is {} bytes, expected {MANIFEST_LEN} (truncated or extended)",
                bytes.len()
            ));
        }
        let u32_at = |offset: usize| le_u32(&bytes[offset..offset + 4]);
        if u32_at(CRC_OFFSET) != crc32fast::hash(&bytes[..CRC_OFFSET]) {
            return Err("checksum mismatch: the manifest was damaged or edited".into());
        }
        let page_size =
            PageSize::try_from(u32_at(PAGE_SIZE_OFFSET)).map_err(|e| format!("page size: {e}"))?;
        let source_space_id = u32_at(SOURCE_SPACE_OFFSET);
        if source_space_id == space::SYSTEM_SPACE_ID || source_space_id == space::TEMP_SPACE_ID {
            return Err(format!(
                "source space id {source_space_id} is not a table's tablespace"
            ));
        }
        let alloc = AllocState {
            page_count: u32_at(PAGE_COUNT_OFFSET),
            free_head: u32_at(FREE_HEAD_OFFSET),
            free_count: u32_at(FREE_COUNT_OFFSET),
        };
        check_alloc(&alloc)?;
        let table = read_name(bytes)?;
        let encryption = match bytes[ENCRYPTED_OFFSET] {
            0 => {
                if bytes[ALGORITHM_OFFSET..NAME_OFFSET].iter().any(|&b| b != 0)
                    || bytes[KEY_ID_OFFSET..CRC_OFFSET].iter().any(|&b| b != 0)
                {
                    return Err("an unencrypted table's manifest carries key fields".into());
                }
                None
            }
            1 => Some(read_encryption(bytes)?),
            other => return Err(format!("encrypted flag {other} is neither 0 nor 1")),
        };
        Ok(Manifest {
            table,
            source_space_id,
            page_size,
            alloc,
            encryption,
        })
    }
}

fn check_alloc(alloc: &AllocState) -> std::result::Result<(), String> {
    if alloc.page_count < 2 {
        return Err(format!(
            "page count {} (a table has at least page 0 and its root)",
            alloc.page_count
        ));
    }
    let free_list_ok = if alloc.free_count == 0 {
        alloc.free_head == 0
    } else {
        alloc.free_head >= 2 && alloc.free_head < alloc.page_count
    } && alloc.free_count <= alloc.page_count - 2;
    if !free_list_ok {
        return Err(format!(
            "free list (head {}, {} pages) does not fit in {} pages",
            alloc.free_head, alloc.free_count, alloc.page_count
        ));
    }
    Ok(())
}

fn read_name(bytes: &[u8]) -> std::result::Result<String, String> {
    let len = usize::from(bytes[NAME_LEN_OFFSET]);
    if !(1..=MAX_NAME_LEN).contains(&len) {
        return Err(format!(
            "table name length {len} (expected 1 to {MAX_NAME_LEN})"
        ));
    }
    let field = &bytes[NAME_OFFSET..NAME_OFFSET + MAX_NAME_LEN];
    if field[len..].iter().any(|&b| b != 0) {
        return Err("bytes after the table name are not zero".into());
    }
    let name = std::str::from_utf8(&field[..len])
        .ok()
        .filter(|name| check_table_name(name).is_ok())
        .ok_or("the table name is not a valid table name")?;
    Ok(name.to_string())
}

fn read_encryption(bytes: &[u8]) -> std::result::Result<EncryptionRecord, String> {
    let u32_at = |offset: usize| le_u32(&bytes[offset..offset + 4]);
    let algorithm = cipher_from_code(bytes[ALGORITHM_OFFSET])
        .ok()
        .flatten()
        .ok_or_else(|| format!("unknown algorithm code {}", bytes[ALGORITHM_OFFSET]))?;
    let count = usize::from(bytes[GENERATION_COUNT_OFFSET]);
    if !(1..=MAX_GENERATIONS).contains(&count) {
        return Err(format!(
            "{count} data-key generations (expected 1 to {MAX_GENERATIONS})"
        ));
    }
    let key_id = u32_at(KEY_ID_OFFSET);
    if key_id == 0 {
        return Err("an encrypted table's key id is 0".into());
    }
    if u32_at(RESERVED_OFFSET) != 0 {
        return Err("reserved bytes are not zero".into());
    }
    let mut generations = Vec::with_capacity(count);
    for index in 0..count {
        let start = GENERATIONS_OFFSET + index * GENERATION_LEN;
        let wrapped = WrappedKey::decode(&bytes[start + 4..start + GENERATION_LEN])
            .map_err(|e| format!("generation {index}: {e}"))?;
        if wrapped.key_id != key_id || wrapped.key_version != TRANSFER_KEY_VERSION {
            return Err(format!(
                "generation {index} is wrapped under key id {} version {}, not under the \
                 transfer key (key id {key_id}, version {TRANSFER_KEY_VERSION})",
                wrapped.key_id, wrapped.key_version
            ));
        }
        generations.push(Generation {
            version: u32_at(start),
            wrapped,
        });
    }
    let unused = &bytes[GENERATIONS_OFFSET + count * GENERATION_LEN..CRC_OFFSET];
    if unused.iter().any(|&b| b != 0) {
        return Err("unused generation slots are not zero".into());
    }
    let record = EncryptionRecord {
        key_id,
        algorithm,
        current_version: u32_at(CURRENT_VERSION_OFFSET),
        min_version: u32_at(MIN_VERSION_OFFSET),
        rotation: RotationState::default(),
        generations,
    };
    if record.current().is_none() {
        return Err(format!(
            "the current generation (key id {key_id}, version {}) is not among the generations",
            record.current_version
        ));
    }
    if record.min_version > record.current_version {
        return Err(format!(
            "min version {} is above the current version {}",
            record.min_version, record.current_version
        ));
    }
    Ok(record)
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
}

fn put_u32(out: &mut [u8], offset: usize, value: u32) {
    out[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongbox_keyring::provider::MemoryKeyProvider;
    use strongbox_keyring::Algorithm;

    fn encrypted_manifest() -> Manifest {
        let transfer = MemoryKeyProvider::new();
        transfer.add_random(5, 1, 256).unwrap();
        let generations = [2, 3]
            .into_iter()
            .map(|version| Generation {
                version,
                wrapped: wrap::new_data_key(&transfer, 5).unwrap().1,
            })
            .collect();
        Manifest {
            table: "orders.2024".into(),
            source_space_id: 7,
            page_size: PageSize::try_from(4096).unwrap(),
            alloc: AllocState {
                page_count: 40,
                free_head: 12,
                free_count: 3,
            },
            encryption: Some(EncryptionRecord {
                key_id: 5,
                algorithm: Algorithm::AesGcm,
                current_version: 3,
                min_version: 2,
                rotation: RotationState::default(),
                generations,
            }),
        }
    }

    #[test]
    fn manifests_round_trip() {
        let plain = Manifest {
            encryption: None,
            ..encrypted_manifest()
        };
        for manifest in [encrypted_manifest(), plain] {
            let bytes = manifest.encode();
            assert_eq!(bytes.len(), MANIFEST_LEN);
            assert_eq!(Manifest::decode(&bytes).unwrap(), manifest);
        }
    }

    /// Each damage, with the checksum fixed up afterwards where needed so that the field
    /// check (not the checksum) must catch it.
    #[test]
    fn every_malformed_field_is_named() {
        let good = encrypted_manifest().encode();
        let fix_crc = |bytes: &mut Vec<u8>| {
            let crc = crc32fast::hash(&bytes[..CRC_OFFSET]);
            put_u32(bytes, CRC_OFFSET, crc);
        };
        type Damage = fn(&mut Vec<u8>);
        let cases: [(Damage, bool, &str); 14] = [
            (|b| b[0] = b'X', false, "bad magic"),
            (|b| put_u32(b, FORMAT_OFFSET, 2), false, "format version 2"),
            (|b| b.truncate(300), false, "300 bytes"),
            (|b| b[200] ^= 1, false, "checksum mismatch"),
            (|b| put_u32(b, PAGE_SIZE_OFFSET, 5000), true, "page size"),
            (
                |b| put_u32(b, SOURCE_SPACE_OFFSET, 0),
                true,
                "source space id",
            ),
            (|b| put_u32(b, PAGE_COUNT_OFFSET, 1), true, "page count 1"),
            (|b| put_u32(b, FREE_HEAD_OFFSET, 99), true, "free list"),
            (|b| b[NAME_LEN_OFFSET] = 0, true, "name length 0"),
            (|b| b[NAME_OFFSET] = b'/', true, "not a valid table name"),
            (|b| b[ENCRYPTED_OFFSET] = 2, true, "encrypted flag 2"),
            (|b| b[ALGORITHM_OFFSET] = 9, true, "algorithm code 9"),
            (
                |b| b[GENERATION_COUNT_OFFSET] = 5,
                true,
                "5 data-key generations",
            ),
            (
                |b| put_u32(b, CURRENT_VERSION_OFFSET, 9),
                true,
                "current generation",
            ),
        ];
        for (damage, refresh_crc, expected) in cases {
            let mut bytes = good.clone();
            damage(&mut bytes);
            if refresh_crc {
                fix_crc(&mut bytes);
            }
            let error = Manifest::decode(&bytes).unwrap_err();
            assert!(
                error.contains(expected),
                "{error:?} should say {expected:?}"
            );
        }
    }

    #[test]
    fn an_unencrypted_manifest_with_key_fields_is_refused() {
        let mut bytes = Manifest {
            encryption: None,
            ..encrypted_manifest()
        }
        .encode();
        put_u32(&mut bytes, KEY_ID_OFFSET, 5);
        let crc = crc32fast::hash(&bytes[..CRC_OFFSET]);
        put_u32(&mut bytes, CRC_OFFSET, crc);
        let error = Manifest::decode(&bytes).unwrap_err();
        assert!(error.contains("key fields"), "{error}");
    }
}
