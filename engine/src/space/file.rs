//! [`SpaceFile`]: one tablespace file — page 0, the data keys, and the IO boundary where
//! pages are encrypted on write and decrypted on read.
//!
//! Pages `1..page_count` are moved in and out of the buffer pool through
//! [`SpaceFile::read_page`] / [`SpaceFile::write_page`], which run the page codec with this
//! space's data key. Page 0 (the [`SpaceHeader`]) never enters the buffer pool: the header
//! lives in memory here and is written whole, synced, by [`SpaceFile::persist_header`].

use super::header::{AllocState, EncryptionRecord, Generation, SpaceHeader, SpaceKind};
use super::nonce::NonceSource;
use crate::btree::node;
use crate::error::{Error, Result};
use crate::io::{FileIo, OpenMode, Vfs};
use crate::page::{self, PageId, PageKeys, PageSize, PageType, Seal};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use strongbox_keyring::provider::KeyProvider;
use strongbox_keyring::{wrap, Algorithm, DataKey, KeyringError};

/// Counters of page IO and crypto, shared by every space of a database.
#[derive(Debug, Default)]
pub struct IoCounters {
    pub pages_read: AtomicU64,
    pub pages_written: AtomicU64,
    pub pages_decrypted: AtomicU64,
    pub pages_encrypted: AtomicU64,
}

/// How a new space is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceEncryption {
    pub key_id: u32,
    pub algorithm: Algorithm,
}

/// What a new space is.
#[derive(Debug, Clone, Copy)]
pub struct NewSpace {
    pub id: u32,
    pub kind: SpaceKind,
    pub page_size: PageSize,
    /// `None` for an unencrypted space.
    pub encryption: Option<SpaceEncryption>,
}

/// The unwrapped data keys of a space, by generation (keyring key id, version).
#[derive(Debug, Default)]
pub(crate) struct SpaceKeys {
    by_generation: HashMap<(u32, u32), Arc<DataKey>>,
}

impl SpaceKeys {
    /// Unwraps every data-key generation of `record` with `keyring`. The generations that
    /// cannot be unwrapped come back as errors, in header order, next to the keys that could.
    pub(crate) fn unwrap_all(
        record: &EncryptionRecord,
        keyring: &dyn KeyProvider,
    ) -> (SpaceKeys, Vec<KeyringError>) {
        let mut keys = SpaceKeys::default();
        let mut errors = Vec::new();
        for generation in &record.generations {
            match wrap::unwrap(keyring, &generation.wrapped) {
                Ok(data_key) => {
                    keys.by_generation.insert(
                        (generation.key_id(), generation.version),
                        Arc::new(data_key),
                    );
                }
                Err(error) => errors.push(error),
            }
        }
        (keys, errors)
    }

    /// True when no data key is loaded.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_generation.is_empty()
    }

    /// Keeps only the generations `record` still lists (none if it is `None`).
    fn retain_listed(&mut self, record: Option<&EncryptionRecord>) {
        self.by_generation.retain(|&(key_id, version), _| {
            record.is_some_and(|r| {
                r.generations
                    .iter()
                    .any(|g| g.key_id() == key_id && g.version == version)
            })
        });
    }
}

impl PageKeys for SpaceKeys {
    fn data_key(&self, key_id: u32, key_version: u32) -> Option<Arc<DataKey>> {
        self.by_generation.get(&(key_id, key_version)).cloned()
    }
}

/// A change to a space's encryption record, made by [`SpaceFile::update_encryption`]:
/// the record to install and the unwrapped data key of a generation it adds, if any.
pub(crate) struct EncryptionChange {
    pub(crate) record: Option<EncryptionRecord>,
    pub(crate) new_key: Option<(u32, u32, DataKey)>,
}

/// One open tablespace file.
#[derive(Debug)]
pub struct SpaceFile {
    id: u32,
    path: PathBuf,
    file: Arc<dyn FileIo>,
    page_size: PageSize,
    /// Guards the in-memory page 0: allocation state and encryption record.
    header: Mutex<SpaceHeader>,
    /// Serialises page-0 writes, so a later snapshot never lands before an earlier one.
    header_write: Mutex<()>,
    /// The allocation lock: held by a mini-transaction from its first allocation or free
    /// in this space until its redo is appended (`mtr.rs`), so the allocation fields of
    /// the in-memory header, read while holding it, include only logged changes.
    allocation: Arc<Mutex<()>>,
    /// The allocation fields page 0 on disk holds. Only a checkpoint changes them (after
    /// making the log durable past them); a nonce reservation rewrites page 0 with these.
    alloc_on_disk: Mutex<AllocState>,
    /// Guards the unwrapped data keys (replaced by rotation).
    keys: RwLock<SpaceKeys>,
    nonces: NonceSource,
    counters: Arc<IoCounters>,
    /// Bumped (under the header mutex) whenever `update_encryption` changes how new page
    /// writes are sealed. A re-encryption pass compares it across a batch: the record alone
    /// cannot tell that the sealing changed and came back meanwhile (key 1 → key 2 → key 1
    /// restarts to an identical record), while pages were written the other way.
    sealing_changes: AtomicU64,
}

impl SpaceFile {
    /// Creates a new space file with only page 0, synced, and a fresh data key wrapped
    /// under the latest version of `spec.encryption.key_id`.
    pub fn create(
        vfs: &dyn Vfs,
        path: &Path,
        spec: NewSpace,
        keyring: Option<&dyn KeyProvider>,
        counters: Arc<IoCounters>,
    ) -> Result<SpaceFile> {
        let NewSpace {
            id,
            kind,
            page_size,
            encryption,
        } = spec;
        let mut keys = SpaceKeys::default();
        let record = match encryption {
            None => None,
            Some(settings) => {
                let keyring = keyring.ok_or_else(|| Error::NoKeyring {
                    what: format!("creating encrypted tablespace {}", path.display()),
                })?;
                let (data_key, wrapped) = wrap::new_data_key(keyring, settings.key_id)?;
                let version = wrapped.key_version;
                keys.by_generation
                    .insert((settings.key_id, version), Arc::new(data_key));
                Some(EncryptionRecord {
                    key_id: settings.key_id,
                    algorithm: settings.algorithm,
                    current_version: version,
                    min_version: version,
                    rotation: Default::default(),
                    generations: vec![Generation { version, wrapped }],
                })
            }
        };
        let header = SpaceHeader {
            space_id: id,
            page_size: page_size.get(),
            kind,
            page_count: 1,
            free_head: 0,
            free_count: 0,
            nonce_reserved: 0,
            encryption: record,
        };
        let file = vfs
            .open(path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", path, e))?;
        let alloc = header.alloc();
        let space = SpaceFile::assemble(id, path, file, page_size, header, keys, counters);
        space.persist_header(alloc)?;
        Ok(space)
    }

    /// Opens an existing space file: reads and checks page 0 and unwraps every data-key
    /// generation with `keyring`. Writes nothing.
    pub fn open(
        vfs: &dyn Vfs,
        path: &Path,
        expected_id: u32,
        page_size: PageSize,
        keyring: Option<&dyn KeyProvider>,
        counters: Arc<IoCounters>,
    ) -> Result<SpaceFile> {
        let file = vfs
            .open(path, OpenMode::Existing)
            .map_err(|e| Error::io("open", path, e))?;
        let header = read_header(file.as_ref(), path, expected_id, page_size)?;
        let mut keys = SpaceKeys::default();
        if let Some(record) = &header.encryption {
            let keyring = keyring.ok_or_else(|| Error::NoKeyring {
                what: format!("encrypted tablespace {}", path.display()),
            })?;
            let (unwrapped, errors) = SpaceKeys::unwrap_all(record, keyring);
            if let Some(source) = errors.into_iter().next() {
                return Err(Error::KeyUnavailable {
                    path: path.to_path_buf(),
                    source,
                    key_file: None,
                });
            }
            keys = unwrapped;
        }
        Ok(SpaceFile::assemble(
            expected_id,
            path,
            file,
            page_size,
            header,
            keys,
            counters,
        ))
    }

    fn assemble(
        id: u32,
        path: &Path,
        file: Arc<dyn FileIo>,
        page_size: PageSize,
        header: SpaceHeader,
        keys: SpaceKeys,
        counters: Arc<IoCounters>,
    ) -> SpaceFile {
        SpaceFile {
            id,
            path: path.to_path_buf(),
            file,
            page_size,
            nonces: NonceSource::new(header.nonce_reserved),
            alloc_on_disk: Mutex::new(header.alloc()),
            header: Mutex::new(header),
            header_write: Mutex::new(()),
            allocation: Arc::new(Mutex::new(())),
            keys: RwLock::new(keys),
            counters,
            sealing_changes: AtomicU64::new(0),
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// A copy of the in-memory header.
    pub fn header(&self) -> SpaceHeader {
        self.header.lock().clone()
    }

    /// Changes the in-memory header (allocation); persisted by the next `persist_header`.
    pub(crate) fn update_header<T>(&self, change: impl FnOnce(&mut SpaceHeader) -> T) -> T {
        change(&mut self.header.lock())
    }

    /// The allocation lock (see the field's doc).
    pub(crate) fn allocation_lock(&self) -> &Arc<Mutex<()>> {
        &self.allocation
    }

    /// The allocation fields with every mini-transaction that changed them logged: read
    /// under the allocation lock, so none is half-way.
    pub(crate) fn logged_alloc(&self) -> AllocState {
        let _no_mtr_in_flight = self.allocation.lock();
        self.header.lock().alloc()
    }

    /// Reads page `page_no` and decodes it (verifying its checksum and decrypting it) into
    /// `frame`.
    pub fn read_page(&self, page_no: u32, frame: &mut [u8]) -> Result<()> {
        let rules = self.check_data_page(page_no)?;
        let offset = self.offset_of(page_no);
        self.file
            .read_at(frame, offset)
            .map_err(|source| self.page_io("read", page_no, source))?;
        self.counters.pages_read.fetch_add(1, Ordering::Relaxed);
        let id = PageId::new(self.id, page_no);
        let header =
            page::decode_in_place(frame, id, &*self.keys.read()).map_err(|source| Error::Page {
                path: self.path.clone(),
                source,
            })?;
        if header.cipher.is_some() {
            self.counters
                .pages_decrypted
                .fetch_add(1, Ordering::Relaxed);
        }
        self.check_policy(page_no, &rules, header.cipher.is_some())?;
        self.check_structure(page_no, header.page_type, frame)
    }

    /// The codec accepts any well-formed page, including an unencrypted one; whether a page
    /// *should* be encrypted is the space's policy. Without this check, someone who can
    /// write the file could replace an encrypted page by a plain page of their choosing
    /// (the CRC is public) and have it read as data. While a space is being encrypted
    /// (`PLAIN_PAGES`) or decrypted (`DECRYPTING`) both kinds are expected. An encrypted
    /// page that decoded used one of this space's generations (its keys hold no other),
    /// so its key id is one the space lists.
    fn check_policy(&self, page_no: u32, rules: &PageRules, encrypted: bool) -> Result<()> {
        let problem = match (rules.encrypted_ok, rules.plain_ok, encrypted) {
            (true, false, false) => "is not encrypted, but its tablespace is",
            (false, _, true) => "is encrypted, but its tablespace is not",
            _ => return Ok(()),
        };
        Err(Error::Corrupt {
            path: self.path.clone(),
            problem: format!("page {page_no} {problem} (tampering?)"),
        })
    }

    /// A page that passed its checksum (and tag or post-decrypt check) can still be
    /// malformed if it was written wrongly or forged with the key; tree pages are checked
    /// in full before anyone may use them, so later code can rely on their structure.
    fn check_structure(&self, page_no: u32, page_type: PageType, frame: &[u8]) -> Result<()> {
        if !matches!(page_type, PageType::BtreeLeaf | PageType::BtreeBranch) {
            return Ok(());
        }
        let body = &frame[page::BODY_START..page::body_end(frame.len())];
        node::Node::new(body)
            .and_then(|node| node.check())
            .map_err(|e| Error::Corrupt {
                path: self.path.clone(),
                problem: format!("page {page_no}: {e}"),
            })
    }

    /// Encodes `frame` and writes it as page `page_no`: [`encode_page`](Self::encode_page),
    /// then [`write_stored`](Self::write_stored). Not durable until [`SpaceFile::sync`].
    pub fn write_page(&self, page_no: u32, frame: &[u8]) -> Result<()> {
        let stored = self.encode_page(page_no, frame)?;
        self.write_stored(page_no, &stored)
    }

    /// The stored bytes of `frame` as page `page_no`: checksummed and, if the space is
    /// encrypted, encrypted with the current data key under a fresh write nonce. Writes
    /// nothing (except page 0 when the nonce reservation runs out).
    pub fn encode_page(&self, page_no: u32, frame: &[u8]) -> Result<Vec<u8>> {
        // Keys before header (the order `update_encryption` takes them in), so the
        // generation the header names cannot be dropped between the two looks.
        let (encryption, key) = {
            let keys = self.keys.read();
            let sealing = self.check_data_page(page_no)?.sealing;
            let key = sealing.map(|s| keys.data_key(s.key_id, s.key_version));
            (sealing, key.flatten())
        };
        let mut stored = vec![0u8; self.page_size.len()];
        match encryption {
            None => page::encode(frame, Seal::Plain, &mut stored),
            Some(Sealing {
                key_id,
                key_version,
                algorithm,
            }) => {
                let key = key.expect("update_encryption installs a generation's key first");
                let write_nonce = self.nonces.next(|limit| self.reserve_nonces(limit))?;
                page::encode(
                    frame,
                    Seal::Encrypted {
                        key: &key,
                        algorithm,
                        key_id,
                        key_version,
                        write_nonce,
                    },
                    &mut stored,
                )
            }
        }
        .map_err(|source| Error::Page {
            path: self.path.clone(),
            source,
        })?;
        if encryption.is_some() {
            self.counters
                .pages_encrypted
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(stored)
    }

    /// Makes every page written so far durable.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync()
            .map_err(|e| Error::io("sync", &self.path, e))
    }

    /// Writes page 0 from the in-memory header, with `alloc` as its allocation fields, and
    /// syncs the file. The caller makes sure the redo of every change `alloc` reflects is
    /// durable first (the WAL rule for page 0): see `SpaceSet::persist_headers`.
    pub fn persist_header(&self, alloc: AllocState) -> Result<()> {
        let _ordered = self.header_write.lock();
        let mut snapshot = self.header.lock().clone();
        snapshot.set_alloc(alloc);
        self.write_header(&snapshot)?;
        *self.alloc_on_disk.lock() = alloc;
        Ok(())
    }

    /// Changes the encryption record (rotation, ALTER, rewrap): `change` sees the current
    /// record and returns the new one, or `None` for "no change". The new record is written
    /// to page 0 and synced *before* memory changes, so no page is ever sealed with a
    /// generation whose wrapped key is not durable yet; then the new generation's key is
    /// installed and the keys of generations the record no longer lists are dropped. Page
    /// 0 keeps the allocation fields it already holds (the live ones may not be logged yet).
    /// Returns whether anything changed.
    pub(crate) fn update_encryption(
        &self,
        change: impl FnOnce(Option<&EncryptionRecord>) -> Result<Option<EncryptionChange>>,
    ) -> Result<bool> {
        let _ordered = self.header_write.lock();
        let current = self.header.lock().clone();
        let Some(EncryptionChange { record, new_key }) = change(current.encryption.as_ref())?
        else {
            return Ok(false);
        };
        let resealed = sealing_of(current.encryption.as_ref()) != sealing_of(record.as_ref());
        let mut snapshot = current;
        snapshot.encryption = record.clone();
        snapshot.set_alloc(*self.alloc_on_disk.lock());
        self.write_header(&snapshot)?;
        let mut keys = self.keys.write();
        if let Some((key_id, version, key)) = new_key {
            keys.by_generation.insert((key_id, version), Arc::new(key));
        }
        {
            let mut header = self.header.lock();
            header.encryption = record.clone();
            if resealed {
                self.sealing_changes.fetch_add(1, Ordering::SeqCst);
            }
        }
        keys.retain_listed(record.as_ref());
        Ok(true)
    }

    /// How many times `update_encryption` has changed the sealing of new page writes (see
    /// the field's doc). Read it before the record it is meant to go with.
    pub(crate) fn sealing_changes(&self) -> u64 {
        self.sealing_changes.load(Ordering::SeqCst)
    }

    /// Page 0 with a new nonce reservation, and the allocation fields page 0 already holds
    /// (the live ones may not be logged yet).
    fn reserve_nonces(&self, new_limit: u64) -> Result<()> {
        let _ordered = self.header_write.lock();
        let mut snapshot = {
            let mut header = self.header.lock();
            header.nonce_reserved = new_limit;
            header.clone()
        };
        snapshot.set_alloc(*self.alloc_on_disk.lock());
        self.write_header(&snapshot)
    }

    fn write_header(&self, header: &SpaceHeader) -> Result<()> {
        let size = self.page_size.len();
        let mut frame = vec![0u8; size];
        page::init_frame(
            &mut frame,
            PageType::SpaceHeader,
            PageId::new(self.id, 0),
            0,
        );
        header.write(&mut frame);
        let mut stored = vec![0u8; size];
        page::encode(&frame, Seal::Plain, &mut stored).map_err(|source| Error::Page {
            path: self.path.clone(),
            source,
        })?;
        self.file
            .write_at(&stored, 0)
            .map_err(|e| Error::io("write header of", &self.path, e))?;
        self.sync()
    }

    fn offset_of(&self, page_no: u32) -> u64 {
        u64::from(page_no) * self.page_size.len() as u64
    }

    /// Checks that `page_no` is a data page of this space and returns how the space seals
    /// its pages now and which stored pages it accepts — one look at the header per page IO.
    fn check_data_page(&self, page_no: u32) -> Result<PageRules> {
        let (page_count, rules) = {
            let header = self.header.lock();
            let rules = match header.encryption.as_ref() {
                None => PageRules {
                    sealing: None,
                    encrypted_ok: false,
                    plain_ok: true,
                },
                Some(record) => PageRules {
                    sealing: sealing_of(Some(record)),
                    encrypted_ok: true,
                    plain_ok: record.rotation.plain_pages_allowed(),
                },
            };
            (header.page_count, rules)
        };
        if page_no == 0 || page_no >= page_count {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                problem: format!(
                    "page {page_no} is outside the data pages 1..{page_count} of space {}",
                    self.id
                ),
            });
        }
        Ok(rules)
    }

    /// Writes `stored`, bytes made by [`encode_page`](Self::encode_page) (or a doublewrite
    /// copy of them), as page `page_no`. Not durable until [`SpaceFile::sync`]. Unlike
    /// `encode_page` it does not check `page_no` against the page count: doublewrite
    /// recovery restores pages that page 0 on disk may not count yet.
    pub fn write_stored(&self, page_no: u32, stored: &[u8]) -> Result<()> {
        if page_no == 0 {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                problem: "page 0 is the space header; only the header code writes it".into(),
            });
        }
        if stored.len() != self.page_size.len() {
            return Err(Error::Page {
                path: self.path.clone(),
                source: page::PageError::SizeMismatch {
                    expected: self.page_size.len(),
                    got: stored.len(),
                },
            });
        }
        self.file
            .write_at(stored, self.offset_of(page_no))
            .map_err(|source| self.page_io("write", page_no, source))?;
        self.counters.pages_written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The bytes page `page_no` holds in the file, neither checked nor decrypted (for
    /// doublewrite recovery, which judges them with `HomeState::of`). `None` when the page
    /// lies wholly or partly past the end of the file.
    pub fn read_stored(&self, page_no: u32) -> Result<Option<Vec<u8>>> {
        let mut stored = vec![0u8; self.page_size.len()];
        match self.file.read_at(&mut stored, self.offset_of(page_no)) {
            Ok(()) => Ok(Some(stored)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(self.page_io("read", page_no, e)),
        }
    }

    fn page_io(&self, op: &'static str, page_no: u32, source: std::io::Error) -> Error {
        Error::PageIo {
            op,
            page_no,
            path: self.path.clone(),
            source,
        }
    }

    /// The IO counters this space adds to (one set per database), so that a space created
    /// beside it (an imported table, `transfer/`) counts in the same statistics.
    pub(crate) fn counters(&self) -> &Arc<IoCounters> {
        &self.counters
    }
}

/// How a space treats page IO right now (from its header).
struct PageRules {
    /// How new writes are sealed; `None` = plain.
    sealing: Option<Sealing>,
    /// Whether stored pages may be encrypted / plain.
    encrypted_ok: bool,
    plain_ok: bool,
}

/// How an encrypted space seals its pages: key id, current generation, algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sealing {
    key_id: u32,
    key_version: u32,
    algorithm: Algorithm,
}

/// How new page writes are sealed under `record`: `None` = plain (no record, or decrypting).
fn sealing_of(record: Option<&EncryptionRecord>) -> Option<Sealing> {
    record
        .filter(|record| !record.rotation.is_decrypting())
        .map(|record| Sealing {
            key_id: record.key_id,
            key_version: record.current_version,
            algorithm: record.algorithm,
        })
}

/// The page size a space file was created with, read from its header (before checksums
/// can be checked, since the checksum covers a whole page of that size).
pub fn probe_page_size(vfs: &dyn Vfs, path: &Path) -> Result<PageSize> {
    let file = vfs
        .open(path, OpenMode::Existing)
        .map_err(|e| Error::io("open", path, e))?;
    let smallest = PageSize::ALL[0].len();
    let mut probe = vec![0u8; smallest];
    file.read_at(&mut probe, 0).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Corrupt {
            path: path.to_path_buf(),
            problem: "file is shorter than the smallest page".into(),
        },
        _ => Error::io("read header of", path, e),
    })?;
    let header = match SpaceHeader::read(&probe) {
        Ok(header) => header,
        // The first copy is torn: look for the second copy at the middle of each possible
        // page size.
        Err(error) => PageSize::ALL
            .iter()
            .find_map(|size| {
                let mut page = vec![0u8; size.len()];
                file.read_at(&mut page, 0).ok()?;
                SpaceHeader::read_copies(&page).filter(|h| h.page_size == size.get())
            })
            .ok_or_else(|| Error::Corrupt {
                path: path.to_path_buf(),
                problem: error.0,
            })?,
    };
    PageSize::try_from(header.page_size).map_err(|_| Error::Corrupt {
        path: path.to_path_buf(),
        problem: format!(
            "header names page size {}, which is not a valid size",
            header.page_size
        ),
    })
}

/// Reads page 0 without knowing the page size in advance: the smallest page size is read
/// first to learn the size recorded in the header, then the whole page is checked.
fn read_header(
    file: &dyn FileIo,
    path: &Path,
    expected_id: u32,
    page_size: PageSize,
) -> Result<SpaceHeader> {
    let corrupt = |problem: String| Error::Corrupt {
        path: path.to_path_buf(),
        problem,
    };
    let mut frame = vec![0u8; page_size.len()];
    file.read_at(&mut frame, 0).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => corrupt("file is shorter than one page".into()),
        _ => Error::io("read header of", path, e),
    })?;
    if let Ok(header) = SpaceHeader::read(&frame) {
        if header.page_size != page_size.get() {
            return Err(Error::Incompatible {
                path: path.to_path_buf(),
                problem: format!(
                    "written with page_size {}, opened with page_size {}",
                    header.page_size,
                    page_size.get()
                ),
            });
        }
    }
    struct NoKeys;
    impl PageKeys for NoKeys {
        fn data_key(&self, _: u32, _: u32) -> Option<Arc<DataKey>> {
            None
        }
    }
    let stored = frame.clone();
    let header = match page::decode_in_place(&mut frame, PageId::new(expected_id, 0), &NoKeys) {
        Ok(_) => SpaceHeader::read(&frame).map_err(|e| corrupt(e.0))?,
        // A torn page 0: each of the header's two copies carries its own CRC.
        Err(source) => SpaceHeader::read_copies(&stored).ok_or_else(|| Error::Page {
            path: path.to_path_buf(),
            source,
        })?,
    };
    if header.space_id != expected_id {
        return Err(corrupt(format!(
            "header says space {}, expected space {expected_id}",
            header.space_id
        )));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemVfs;
    use crate::page::PageHeader;
    use strongbox_keyring::provider::MemoryKeyProvider;

    fn keyring() -> MemoryKeyProvider {
        let keys = MemoryKeyProvider::new();
        keys.add_random(1, 1, 256).unwrap();
        keys
    }

    fn spec(encryption: Option<SpaceEncryption>) -> NewSpace {
        NewSpace {
            id: 5,
            kind: SpaceKind::Table,
            page_size: PageSize::try_from(4096).unwrap(),
            encryption,
        }
    }

    const ENCRYPTED: Option<SpaceEncryption> = Some(SpaceEncryption {
        key_id: 1,
        algorithm: Algorithm::AesCtr,
    });

    fn frame_with(space: &SpaceFile, page_no: u32, byte: u8) -> Vec<u8> {
        let mut frame = vec![0u8; space.page_size().len()];
        page::init_frame(
            &mut frame,
            PageType::Overflow,
            PageId::new(space.id(), page_no),
            0,
        );
        let end = page::body_end(frame.len());
        frame[page::BODY_START..end].fill(byte);
        frame
    }

    const PATH: &str = "/db/space-5.sbd";

    /// An encrypted 4 KiB space in memory whose page 1 has been written once.
    fn space_with_page_one_written() -> (MemVfs, MemoryKeyProvider, SpaceFile) {
        let vfs = MemVfs::new();
        let keys = keyring();
        let space = SpaceFile::create(
            &vfs,
            Path::new(PATH),
            spec(ENCRYPTED),
            Some(&keys),
            Default::default(),
        )
        .unwrap();
        space.update_header(|h| h.page_count = 2);
        space.write_page(1, &frame_with(&space, 1, 1)).unwrap();
        (vfs, keys, space)
    }

    fn stored_page(vfs: &MemVfs, path: &Path, page_no: usize) -> Vec<u8> {
        vfs.contents(path).unwrap()[page_no * 4096..(page_no + 1) * 4096].to_vec()
    }

    /// Page 0 torn at 512-byte granularity in every pattern of old and new sectors (16 KiB
    /// page: 32 sectors, patterns chosen so each copy's sector is old or new): the space
    /// still opens, with the old or the new header, and never with a mix.
    #[test]
    fn a_torn_page_zero_opens_with_the_old_or_the_new_header() {
        let vfs = MemVfs::new();
        let path = Path::new("/db/space-5.sbd");
        let keys = keyring();
        let spec = NewSpace {
            page_size: PageSize::try_from(16384).unwrap(),
            ..spec(ENCRYPTED)
        };
        let space = SpaceFile::create(&vfs, path, spec, Some(&keys), Default::default()).unwrap();
        let old = vfs.contents(path).unwrap();
        let old_alloc = space.header().alloc();
        let new_alloc = AllocState {
            page_count: 9,
            free_head: 4,
            free_count: 3,
        };
        space.persist_header(new_alloc).unwrap();
        let new = vfs.contents(path).unwrap();
        assert_ne!(old, new);
        let sectors = 16384 / 512;
        for pattern in [0b01u32, 0b10, 0b11, 0b00] {
            for split in [1, 4, 16, 17, 31] {
                // Sector i comes from the new page when i < split (copy 1, sector 0) or,
                // for copy 2's sector 16, when bit 1 of the pattern says so.
                let mut torn = old.clone();
                for i in 0..sectors {
                    let newer = if i == 0 {
                        pattern & 1 != 0
                    } else if i == sectors / 2 {
                        pattern & 2 != 0
                    } else {
                        i < split
                    };
                    if newer {
                        torn[i * 512..(i + 1) * 512].copy_from_slice(&new[i * 512..(i + 1) * 512]);
                    }
                }
                vfs.set_contents(path, torn);
                let page_size = probe_page_size(&vfs, path).unwrap();
                let reopened =
                    SpaceFile::open(&vfs, path, 5, page_size, Some(&keys), Default::default())
                        .unwrap_or_else(|e| panic!("pattern {pattern:02b} split {split}: {e}"));
                let alloc = reopened.header().alloc();
                assert!(
                    alloc == old_alloc || alloc == new_alloc,
                    "pattern {pattern:02b} split {split}: {alloc:?}"
                );
            }
        }
        // Both copies gone: an error naming the file, never a guess.
        let mut ruined = new.clone();
        ruined[..512].fill(0xEE);
        ruined[8192..8704].fill(0xEE);
        vfs.set_contents(path, ruined.clone());
        let page_size = PageSize::try_from(16384).unwrap();
        let error = SpaceFile::open(&vfs, path, 5, page_size, Some(&keys), Default::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("space-5.sbd"), "{error}");
    }

    #[test]
    fn pages_round_trip_and_the_same_page_never_encrypts_the_same_way_twice() {
        let vfs = MemVfs::new();
        let path = Path::new("/db/space-5.sbd");
        let keys = keyring();
        let space = SpaceFile::create(&vfs, path, spec(ENCRYPTED), Some(&keys), Default::default())
            .unwrap();
        space.update_header(|h| h.page_count = 2);
        let frame = frame_with(&space, 1, 0xAB);
        space.write_page(1, &frame).unwrap();
        let first = stored_page(&vfs, path, 1);
        space.write_page(1, &frame).unwrap();
        let second = stored_page(&vfs, path, 1);
        assert_ne!(first[page::BODY_START..], second[page::BODY_START..]);
        assert!(
            !second.windows(64).any(|w| w.iter().all(|&b| b == 0xAB)),
            "plaintext on disk"
        );
        let mut read = vec![0u8; 4096];
        space.read_page(1, &mut read).unwrap();
        assert_eq!(
            read[page::BODY_START..page::body_end(4096)],
            frame[page::BODY_START..page::body_end(4096)]
        );
    }

    #[test]
    fn a_plain_page_substituted_into_an_encrypted_space_is_refused() {
        let (vfs, _keys, space) = space_with_page_one_written();
        let path = Path::new(PATH);
        let mut forged = vec![0u8; 4096];
        page::encode(&frame_with(&space, 1, 0xEE), Seal::Plain, &mut forged).unwrap();
        let mut image = vfs.contents(path).unwrap();
        image[4096..8192].copy_from_slice(&forged);
        vfs.set_contents(path, image);
        let mut read = vec![0u8; 4096];
        let error = space.read_page(1, &mut read).unwrap_err().to_string();
        assert!(error.contains("not encrypted"), "{error}");
    }

    #[test]
    fn reopening_continues_past_the_durable_nonce_reservation() {
        let (vfs, keys, space) = space_with_page_one_written();
        let path = Path::new(PATH);
        let used = PageHeader::read(&stored_page(&vfs, path, 1))
            .unwrap()
            .write_nonce;
        drop(space);
        let reopened = SpaceFile::open(
            &vfs,
            path,
            5,
            PageSize::try_from(4096).unwrap(),
            Some(&keys),
            Default::default(),
        )
        .unwrap();
        reopened.update_header(|h| h.page_count = 2);
        reopened
            .write_page(1, &frame_with(&reopened, 1, 1))
            .unwrap();
        let next = PageHeader::read(&stored_page(&vfs, path, 1))
            .unwrap()
            .write_nonce;
        assert!(next > used, "nonce {next} after reopen must exceed {used}");
    }

    #[test]
    fn opening_with_another_key_under_the_same_id_names_id_and_version() {
        let vfs = MemVfs::new();
        let path = Path::new("/db/space-5.sbd");
        SpaceFile::create(
            &vfs,
            path,
            spec(ENCRYPTED),
            Some(&keyring()),
            Default::default(),
        )
        .unwrap();
        let before = vfs.contents(path).unwrap();
        let error = SpaceFile::open(
            &vfs,
            path,
            5,
            PageSize::try_from(4096).unwrap(),
            Some(&keyring()),
            Default::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("key id 1 version 1"), "{error}");
        assert_eq!(
            vfs.contents(path).unwrap(),
            before,
            "a failed open writes nothing"
        );
        let no_keys = SpaceFile::open(
            &vfs,
            path,
            5,
            PageSize::try_from(4096).unwrap(),
            None,
            Default::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(no_keys.contains("strongbox keys generate"), "{no_keys}");
    }
}
