//! Offline inspection of tablespace files, page by page, like InnoDB's `innochecksum`: it
//! works on a closed database and never writes.
//!
//! For every page it reports the stored header (type, LSN, key id and version), whether the
//! checksum over the stored bytes holds, whether the page decrypts with the keys at hand,
//! and the first stored body bytes — so a student sees ciphertext where the buffer pool
//! would show plaintext.

use crate::error::{Error, Result};
use crate::io::{OpenMode, Vfs};
use crate::page::{self, PageError, PageHeader, PageId, BODY_START};
use crate::space::{header::SpaceHeader, probe_page_size, SpaceKeys};
use std::path::{Path, PathBuf};
use strongbox_keyring::provider::KeyProvider;

/// Bytes of stored body shown per page.
pub const PREFIX_LEN: usize = 32;

/// What became of one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageStatus {
    /// Checksum and (if encrypted) decryption succeeded.
    Ok,
    /// Encrypted, checksum fine, but no keys were given (or the key was not unwrapped).
    NotDecrypted(String),
    /// Never written (all zeros) — normal only for a page allocated just before a crash.
    Empty,
    /// The page failed: corrupt, wrong key, misplaced …
    Bad(String),
}

/// One page's report.
#[derive(Debug, Clone)]
pub struct PageReport {
    pub page_no: u32,
    /// The stored header, when it could be decoded.
    pub header: Option<PageHeader>,
    pub checksum_ok: bool,
    pub status: PageStatus,
    /// The first stored bytes of the body (ciphertext for an encrypted page).
    pub stored_prefix: Vec<u8>,
}

/// A whole file's report.
#[derive(Debug, Clone)]
pub struct SpaceReport {
    pub path: PathBuf,
    pub page_size: usize,
    pub header: SpaceHeader,
    /// Key problems found while unwrapping the space's data keys.
    pub key_errors: Vec<String>,
    pub pages: Vec<PageReport>,
}

impl SpaceReport {
    /// Pages that are corrupt or fail to decrypt with the keys given.
    pub fn bad_pages(&self) -> impl Iterator<Item = &PageReport> {
        self.pages
            .iter()
            .filter(|p| matches!(p.status, PageStatus::Bad(_)))
    }
}

/// Inspects the file at `path`: every page, or only `only_page`.
pub fn inspect_file(
    vfs: &dyn Vfs,
    path: &Path,
    keyring: Option<&dyn KeyProvider>,
    only_page: Option<u32>,
) -> Result<SpaceReport> {
    let page_size = probe_page_size(vfs, path)?.len();
    let file = vfs
        .open(path, OpenMode::Existing)
        .map_err(|e| Error::io("open", path, e))?;
    let len = file.size().map_err(|e| Error::io("stat", path, e))?;
    let mut page0 = vec![0u8; page_size];
    file.read_at(&mut page0, 0)
        .map_err(|e| Error::io("read", path, e))?;
    let header = SpaceHeader::read(&page0).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        problem: e.0,
    })?;
    let (keys, key_errors) = match (&header.encryption, keyring) {
        (Some(record), Some(keyring)) => {
            let (keys, errors) = SpaceKeys::unwrap_all(record, keyring);
            (keys, errors.iter().map(ToString::to_string).collect())
        }
        _ => (SpaceKeys::default(), Vec::new()),
    };
    let page_count = (len / page_size as u64) as u32;
    let pages: Vec<u32> = match only_page {
        Some(page_no) => vec![page_no],
        None => (0..page_count).collect(),
    };
    let mut reports = Vec::with_capacity(pages.len());
    for page_no in pages {
        let mut buf = vec![0u8; page_size];
        if let Err(e) = file.read_at(&mut buf, u64::from(page_no) * page_size as u64) {
            reports.push(PageReport {
                page_no,
                header: None,
                checksum_ok: false,
                status: PageStatus::Bad(format!("cannot read: {e}")),
                stored_prefix: Vec::new(),
            });
            continue;
        }
        reports.push(inspect_page(
            &mut buf,
            PageId::new(header.space_id, page_no),
            &keys,
            keyring.is_some(),
        ));
    }
    Ok(SpaceReport {
        path: path.to_path_buf(),
        page_size,
        header,
        key_errors,
        pages: reports,
    })
}

fn inspect_page(buf: &mut [u8], id: PageId, keys: &SpaceKeys, have_keyring: bool) -> PageReport {
    let stored_prefix = buf[BODY_START..BODY_START + PREFIX_LEN].to_vec();
    let header = PageHeader::read(buf).ok();
    if page::is_all_zero(buf) {
        return PageReport {
            page_no: id.page_no,
            header: None,
            checksum_ok: false,
            status: PageStatus::Empty,
            stored_prefix,
        };
    }
    let (checksum_ok, status) = match page::decode_in_place(buf, id, keys) {
        Ok(_) => (true, PageStatus::Ok),
        Err(e @ PageError::Corrupt { .. }) => (false, PageStatus::Bad(e.to_string())),
        Err(e @ PageError::MissingKey { .. }) if !have_keyring || keys.is_empty() => {
            (true, PageStatus::NotDecrypted(e.to_string()))
        }
        Err(e) => (true, PageStatus::Bad(e.to_string())),
    };
    PageReport {
        page_no: id.page_no,
        header,
        checksum_ok,
        status,
        stored_prefix,
    }
}
