//! Encrypted temporary files: streams of records that spill to disk and never outlive the
//! process (MariaDB's `encrypt_tmp_files`, with key id 2, else 1).
//!
//! A [`TempFileWriter`] appends variable-length records to `<dir>/tmp-<pid>-<n>.sbt`,
//! packing them into chunks of about [`CHUNK_TARGET`] bytes; [`TempFileWriter::finish`]
//! returns a [`TempFile`], which can be read back any number of times and deletes its file
//! when dropped. A crash leaves files behind; [`remove_leftovers`] deletes them at open.
//!
//! Temp files go through `std::fs`, not the crate's `Vfs`: they take no part in crash
//! recovery, are never synced, and are read back only by the `TempFile` that wrote them.
//!
//! ## Layout (little-endian)
//!
//! A file is a sequence of chunks and nothing else. An encrypted chunk:
//!
//! ```text
//! offset  size  field
//! 0       4     n: length of the sealed payload
//! 4       12    nonce: file number (u32) ‖ chunk index (u64)
//! 16      n     payload, AES-GCM ciphertext; AAD = chunk index (u64)
//! 16+n    16    GCM tag
//! ```
//!
//! A plain chunk (no keyring, or temp-file encryption off) is `[u32 n][n bytes of payload]`.
//! The payload, once decrypted:
//!
//! ```text
//!  0      1      5          5+len₁ 9+len₁
//!  +------+------+----------+------+----------+----
//!  | kind | len₁ | record 1 | len₂ | record 2 | ...     kind: 0 = more chunks follow,
//!  +------+------+----------+------+----------+----             1 = the last chunk
//! ```
//!
//! The last chunk says so, and the kind byte is inside the authenticated payload: a file cut
//! at a chunk boundary ends without a last chunk and is reported as [`Error::Corrupt`], never
//! read as a shorter stream. The chunk index in the AAD stops chunks being reordered,
//! repeated or dropped from the middle. Plain files get the same structural checks
//! (lengths, kind, the last chunk, no trailing bytes) but no integrity: a flipped byte
//! inside a record goes unnoticed, as with MariaDB's unencrypted temp files.
//!
//! ## Why a nonce never repeats under one key
//!
//! 1. Every encrypted [`TempFileKey`] is a fresh random data key that exists only in this
//!    process's memory: nothing written under an earlier key, or by an earlier process,
//!    shares it.
//! 2. A key numbers the files written under it from an atomic counter that refuses to
//!    wrap, so no two files under one key share a file number (nonce bytes 0..4).
//!    `TempFileKey` is not `Clone` — a clone would copy the counter; share it with `Arc`.
//! 3. Within a file, only its one writer (`&mut self`) seals chunks, with index 0, 1, 2, …
//!    (nonce bytes 4..12).
//!
//! So (file number, chunk index) is unique per key, and so is the nonce. The reader does not
//! trust the stored nonce: it recomputes it from the file number its `TempFile` remembers
//! and the chunk's position, so a chunk spliced in from another file of the same key fails.
//!
//! The counters allow 2³² − 1 files of 2⁶⁴ chunks each per key (creating one more file is
//! an error); GCM's own limit (2³⁶ bytes per nonce) is far above a chunk's 4 GiB maximum.

use crate::error::{Error, Result};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use strongbox_keyring::cipher::{GCM_NONCE_LEN, GCM_TAG_LEN};
use strongbox_keyring::nonce_audit::{self, Kind, Mode};
use strongbox_keyring::provider::{self, KeyProvider};
use strongbox_keyring::{wrap, DataKey};

/// A chunk is written once its payload would grow past this (a larger record gets a chunk
/// of its own).
pub const CHUNK_TARGET: usize = 64 * 1024;

/// Size of the chunk length field and of a record's length prefix.
const LEN_SIZE: usize = 4;
/// Offset of the nonce in an encrypted chunk's header.
const NONCE_OFFSET: usize = LEN_SIZE;
/// Header of an encrypted chunk: length, then nonce.
const SEALED_HEADER_LEN: usize = NONCE_OFFSET + GCM_NONCE_LEN;
/// Header of a plain chunk: the length alone.
const PLAIN_HEADER_LEN: usize = LEN_SIZE;
/// The payload's first byte.
const KIND_LEN: usize = 1;
const KIND_MORE: u8 = 0;
const KIND_LAST: u8 = 1;

/// The largest record: a chunk holding only it must still fit the u32 length.
pub const MAX_RECORD_LEN: usize = u32::MAX as usize - KIND_LEN - LEN_SIZE;

const NAME_PREFIX: &str = "tmp-";
const NAME_SUFFIX: &str = ".sbt";

/// Makes file names unique within this process; `create_new` handles other processes.
static NEXT_NAME: AtomicU64 = AtomicU64::new(0);

/// The key temp files are written under: a random in-memory data key, or none (plain).
///
/// Only the unwrapped [`DataKey`] is kept. Its wrapped form is dropped at once: temp files
/// never outlive the process, so the key never has to be recovered from disk.
#[derive(Debug)]
pub struct TempFileKey {
    data_key: Option<Arc<DataKey>>,
    /// The number of the next file written under this key: nonce bytes 0..4 of that file.
    next_file: AtomicU32,
}

impl TempFileKey {
    /// A fresh key under keyring key 2 (else 1) when `encrypt` and a keyring is given;
    /// otherwise [`TempFileKey::plain`].
    pub fn for_keyring(keyring: Option<&dyn KeyProvider>, encrypt: bool) -> Result<TempFileKey> {
        match keyring {
            Some(keyring) if encrypt => {
                let key_id = provider::temporary_key_id(keyring);
                let (data_key, _wrapped) = wrap::new_data_key(keyring, key_id)?;
                Ok(TempFileKey::new(Some(Arc::new(data_key))))
            }
            _ => Ok(TempFileKey::plain()),
        }
    }

    /// No encryption: files hold the records in the clear.
    pub fn plain() -> TempFileKey {
        TempFileKey::new(None)
    }

    pub fn is_encrypted(&self) -> bool {
        self.data_key.is_some()
    }

    fn new(data_key: Option<Arc<DataKey>>) -> TempFileKey {
        TempFileKey {
            data_key,
            next_file: AtomicU32::new(0),
        }
    }

    /// A file number never handed out before under this key; `None` once they are used up.
    fn take_file_number(&self) -> Option<u32> {
        self.next_file
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .ok()
    }
}

/// Deletes a temp file when dropped.
#[derive(Debug)]
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        // Best effort: a file that cannot be removed now is removed by `remove_leftovers`
        // at the next open.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes one temp file. Dropping it without [`finish`](Self::finish) deletes the file.
pub struct TempFileWriter {
    file: File,
    path: RemoveOnDrop,
    data_key: Option<Arc<DataKey>>,
    file_number: u32,
    /// Index of the chunk being filled.
    chunk_index: u64,
    /// The chunk being filled: room for its header, the kind byte, then records.
    chunk: Vec<u8>,
    /// Bytes written to the file so far.
    size: u64,
}

impl TempFileWriter {
    /// Creates `<dir>/tmp-<pid>-<n>.sbt` (a name no file has yet) for writing under `key`.
    pub fn create(dir: &Path, key: &TempFileKey) -> Result<TempFileWriter> {
        let file_number = key.take_file_number().ok_or_else(|| {
            Error::io(
                "create temp file",
                dir,
                io::Error::other("every file number of this temp-file key is used"),
            )
        })?;
        let (file, path) = loop {
            let n = NEXT_NAME.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(
                "{NAME_PREFIX}{}-{n}{NAME_SUFFIX}",
                std::process::id()
            ));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (file, path),
                // A leftover of an earlier process with our pid: take the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create temp file", path, e)),
            }
        };
        let mut writer = TempFileWriter {
            file,
            path: RemoveOnDrop(path),
            data_key: key.data_key.clone(),
            file_number,
            chunk_index: 0,
            chunk: Vec::with_capacity(CHUNK_TARGET + SEALED_HEADER_LEN + GCM_TAG_LEN),
            size: 0,
        };
        writer.start_chunk();
        Ok(writer)
    }

    /// Appends one record (at most [`MAX_RECORD_LEN`] bytes; empty is fine).
    pub fn push(&mut self, record: &[u8]) -> Result<()> {
        if record.len() > MAX_RECORD_LEN {
            return Err(Error::ValueTooLarge {
                len: record.len(),
                max: MAX_RECORD_LEN,
            });
        }
        let payload_len = self.chunk.len() - self.header_len();
        if payload_len > KIND_LEN && payload_len + LEN_SIZE + record.len() > CHUNK_TARGET {
            self.write_chunk(KIND_MORE)?;
        }
        let len = u32::try_from(record.len()).expect("checked against MAX_RECORD_LEN");
        self.chunk.extend_from_slice(&len.to_le_bytes());
        self.chunk.extend_from_slice(record);
        Ok(())
    }

    /// Writes the last chunk and returns the file, ready to be read.
    pub fn finish(mut self) -> Result<TempFile> {
        self.write_chunk(KIND_LAST)?;
        self.file
            .flush()
            .map_err(|e| Error::io("write temp file", &self.path.0, e))?;
        Ok(TempFile {
            path: self.path,
            data_key: self.data_key,
            file_number: self.file_number,
            size: self.size,
        })
    }

    fn header_len(&self) -> usize {
        header_len(self.data_key.is_some())
    }

    /// Empties the chunk buffer: header space, then a placeholder kind byte.
    fn start_chunk(&mut self) {
        self.chunk.clear();
        self.chunk.resize(self.header_len() + KIND_LEN, 0);
    }

    /// Seals (if encrypted) and writes the chunk being filled, marked `kind`.
    fn write_chunk(&mut self, kind: u8) -> Result<()> {
        let header_len = self.header_len();
        self.chunk[header_len] = kind;
        let payload_len = self.chunk.len() - header_len;
        let len = u32::try_from(payload_len).expect("a record is at most MAX_RECORD_LEN");
        self.chunk[..LEN_SIZE].copy_from_slice(&len.to_le_bytes());
        if let Some(key) = &self.data_key {
            let nonce = nonce(self.file_number, self.chunk_index);
            self.chunk[NONCE_OFFSET..SEALED_HEADER_LEN].copy_from_slice(&nonce);
            let aad = self.chunk_index.to_le_bytes();
            let sealed_len = self.chunk.len() - header_len;
            nonce_audit::record(Kind::TempFile, key, Mode::Gcm, &nonce, sealed_len);
            let tag = key
                .gcm_seal(&nonce, &aad, &mut self.chunk[header_len..])
                .expect("a chunk of at most 4 GiB is far below GCM's limit");
            self.chunk.extend_from_slice(&tag);
        }
        self.file
            .write_all(&self.chunk)
            .map_err(|e| Error::io("write temp file", &self.path.0, e))?;
        self.size += self.chunk.len() as u64;
        self.chunk_index += 1;
        self.start_chunk();
        Ok(())
    }
}

impl fmt::Debug for TempFileWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TempFileWriter")
            .field("path", &self.path.0)
            .field("chunk_index", &self.chunk_index)
            .finish_non_exhaustive()
    }
}

/// A finished temp file. Dropping it deletes the file (best effort).
#[derive(Debug)]
pub struct TempFile {
    path: RemoveOnDrop,
    data_key: Option<Arc<DataKey>>,
    file_number: u32,
    size: u64,
}

impl TempFile {
    /// Reads the records back from the start, in the order they were pushed.
    pub fn reader(&self) -> Result<TempFileReader> {
        let path = self.path.0.clone();
        let file = File::open(&path).map_err(|e| Error::io("open temp file", &path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io("open temp file", &path, e))?
            .len();
        Ok(TempFileReader {
            file,
            path,
            data_key: self.data_key.clone(),
            file_number: self.file_number,
            file_len,
            pos: 0,
            next_chunk: 0,
            payload: Vec::new(),
            cursor: 0,
            last: false,
            broken: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path.0
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Reads a [`TempFile`]'s records. A chunk is authenticated whole before any of its records
/// is returned. After an error every later call fails too.
pub struct TempFileReader {
    file: File,
    path: PathBuf,
    data_key: Option<Arc<DataKey>>,
    file_number: u32,
    file_len: u64,
    /// File offset of the next chunk.
    pos: u64,
    next_chunk: u64,
    /// The current chunk's payload (kind byte first), verified.
    payload: Vec<u8>,
    /// Offset of the next record in `payload`.
    cursor: usize,
    /// The current chunk is the last one.
    last: bool,
    broken: bool,
}

impl TempFileReader {
    /// The next record, or `None` after the last one.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>> {
        if self.broken {
            return Err(self.corrupt("read after an earlier error".to_string()));
        }
        let record = self.advance();
        if record.is_err() {
            self.broken = true;
            self.payload.clear();
        }
        record
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn advance(&mut self) -> Result<Option<Vec<u8>>> {
        while self.cursor == self.payload.len() {
            if self.last {
                return Ok(None);
            }
            self.load_chunk()?;
        }
        self.take_record().map(Some)
    }

    /// Reads, checks and (if encrypted) decrypts the next chunk into `payload`.
    fn load_chunk(&mut self) -> Result<()> {
        let index = self.next_chunk;
        let header_len = header_len(self.data_key.is_some());
        let tag_len = if self.data_key.is_some() {
            GCM_TAG_LEN
        } else {
            0
        };
        if self.pos == self.file_len {
            return Err(self.corrupt(format!(
                "chunk {index}: the file ends before its last chunk (truncated)"
            )));
        }
        let mut header = [0u8; SEALED_HEADER_LEN];
        let header = &mut header[..header_len];
        self.read_exact(header, index)?;
        let len = u32::from_le_bytes(header[..LEN_SIZE].try_into().expect("4 bytes"));
        let body_len = u64::from(len) + tag_len as u64;
        if body_len > self.file_len - self.pos {
            return Err(self.corrupt(format!(
                "chunk {index}: {body_len} bytes announced but only {} left (truncated)",
                self.file_len - self.pos
            )));
        }
        let mut payload = std::mem::take(&mut self.payload);
        payload.resize(len as usize, 0);
        self.read_exact(&mut payload, index)?;
        if let Some(key) = self.data_key.clone() {
            let nonce = nonce(self.file_number, index);
            if header[NONCE_OFFSET..] != nonce {
                return Err(self.corrupt(format!(
                    "chunk {index}: its nonce belongs to another file or position"
                )));
            }
            let mut tag = [0u8; GCM_TAG_LEN];
            self.read_exact(&mut tag, index)?;
            if key
                .gcm_open(&nonce, &index.to_le_bytes(), &mut payload, &tag)
                .is_err()
            {
                return Err(self.corrupt(format!(
                    "chunk {index}: authentication failed (the bytes were altered)"
                )));
            }
        }
        self.last = match payload.first() {
            Some(&KIND_MORE) => false,
            Some(&KIND_LAST) => true,
            Some(kind) => return Err(self.corrupt(format!("chunk {index}: unknown kind {kind}"))),
            None => return Err(self.corrupt(format!("chunk {index}: empty payload"))),
        };
        if self.last && self.pos != self.file_len {
            return Err(self.corrupt(format!(
                "chunk {index}: {} bytes after the last chunk",
                self.file_len - self.pos
            )));
        }
        self.payload = payload;
        self.cursor = KIND_LEN;
        self.next_chunk += 1;
        Ok(())
    }

    /// The record at `cursor` in the current (verified) payload.
    fn take_record(&mut self) -> Result<Vec<u8>> {
        let chunk = self.next_chunk - 1;
        let rest = &self.payload[self.cursor..];
        let Some((len, rest)) = rest.split_first_chunk::<LEN_SIZE>() else {
            return Err(self.corrupt(format!("chunk {chunk}: a record length is cut off")));
        };
        let len = u32::from_le_bytes(*len) as usize;
        let Some(record) = rest.get(..len) else {
            return Err(self.corrupt(format!(
                "chunk {chunk}: a record of {len} bytes runs past the chunk's end"
            )));
        };
        let record = record.to_vec();
        self.cursor += LEN_SIZE + len;
        Ok(record)
    }

    fn read_exact(&mut self, buf: &mut [u8], chunk: u64) -> Result<()> {
        match self.file.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.corrupt(format!(
                "chunk {chunk}: the file ends inside it (truncated)"
            ))),
            Err(e) => Err(Error::io("read temp file", &self.path, e)),
        }
    }

    fn corrupt(&self, problem: String) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            problem: format!("temp file: {problem}"),
        }
    }
}

impl fmt::Debug for TempFileReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TempFileReader")
            .field("path", &self.path)
            .field("next_chunk", &self.next_chunk)
            .finish_non_exhaustive()
    }
}

/// Deletes the temp files (`tmp-<pid>-<n>.sbt`) a crash left in `dir` and returns how many.
///
/// Run it at open, before any temp file is created in `dir`: it deletes every temp file,
/// including those of this process — after a crash a new process can reuse the old pid.
pub fn remove_leftovers(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let is_temp = entry.file_name().to_str().is_some_and(is_temp_file_name);
        if !is_temp || !entry.file_type()?.is_file() {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// `tmp-<digits>-<digits>.sbt`, and nothing a user might have named similarly.
fn is_temp_file_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    name.strip_prefix(NAME_PREFIX)
        .and_then(|rest| rest.strip_suffix(NAME_SUFFIX))
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(pid, n)| digits(pid) && digits(n))
}

fn header_len(encrypted: bool) -> usize {
    if encrypted {
        SEALED_HEADER_LEN
    } else {
        PLAIN_HEADER_LEN
    }
}

/// File number (bytes 0..4) ‖ chunk index (bytes 4..12), both little-endian.
fn nonce(file_number: u32, chunk_index: u64) -> [u8; GCM_NONCE_LEN] {
    let mut nonce = [0u8; GCM_NONCE_LEN];
    nonce[..4].copy_from_slice(&file_number.to_le_bytes());
    nonce[4..].copy_from_slice(&chunk_index.to_le_bytes());
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;
    use strongbox_keyring::provider::MemoryKeyProvider;

    fn encrypted_key() -> TempFileKey {
        let keyring = MemoryKeyProvider::new();
        keyring.add_random(1, 1, 256).unwrap();
        TempFileKey::for_keyring(Some(&keyring), true).unwrap()
    }

    fn both_keys() -> [TempFileKey; 2] {
        [encrypted_key(), TempFileKey::plain()]
    }

    /// Small and empty records, and one larger than a chunk.
    fn sample_records() -> Vec<Vec<u8>> {
        let mut records: Vec<Vec<u8>> = (0..2000).map(|i| vec![i as u8; i % 300]).collect();
        records.insert(700, vec![0xab; 3 * CHUNK_TARGET]);
        records
    }

    fn write(dir: &Path, key: &TempFileKey, records: &[Vec<u8>]) -> TempFile {
        let mut writer = TempFileWriter::create(dir, key).unwrap();
        for record in records {
            writer.push(record).unwrap();
        }
        writer.finish().unwrap()
    }

    /// The records read before the first error, and that error.
    fn read_all(file: &TempFile) -> (Vec<Vec<u8>>, Option<Error>) {
        let mut reader = file.reader().unwrap();
        let mut records = Vec::new();
        loop {
            match reader.next_record() {
                Ok(Some(record)) => records.push(record),
                Ok(None) => return (records, None),
                Err(e) => return (records, Some(e)),
            }
        }
    }

    /// Reading fails with `Corrupt` mentioning `needle`, after returning only a prefix.
    fn assert_corrupt(file: &TempFile, written: &[Vec<u8>], needle: &str) {
        let (records, error) = read_all(file);
        assert!(
            written.starts_with(&records),
            "returned records that were not written"
        );
        match error {
            Some(Error::Corrupt { problem, .. }) => {
                assert!(problem.contains(needle), "{problem:?} lacks {needle:?}")
            }
            other => panic!("expected Corrupt mentioning {needle:?}, got {other:?}"),
        }
    }

    /// Where each chunk lies in a file's bytes.
    fn chunk_ranges(bytes: &[u8], encrypted: bool) -> Vec<Range<usize>> {
        let (header, tag) = match encrypted {
            true => (SEALED_HEADER_LEN, GCM_TAG_LEN),
            false => (PLAIN_HEADER_LEN, 0),
        };
        let mut ranges = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            ranges.push(pos..pos + header + len + tag);
            pos += header + len + tag;
        }
        ranges
    }

    fn edit(file: &TempFile, change: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = std::fs::read(file.path()).unwrap();
        change(&mut bytes);
        std::fs::write(file.path(), bytes).unwrap();
    }

    #[test]
    fn records_round_trip_in_both_modes() {
        let dir = ::tempfile::tempdir().unwrap();
        let records = sample_records();
        for key in both_keys() {
            let file = write(dir.path(), &key, &records);
            let bytes = std::fs::read(file.path()).unwrap();
            assert_eq!(bytes.len() as u64, file.size());
            assert!(chunk_ranges(&bytes, key.is_encrypted()).len() > 5);
            for _ in 0..2 {
                let (read, error) = read_all(&file);
                assert!(error.is_none(), "{error:?}");
                assert_eq!(read, records);
            }
        }
    }

    #[test]
    fn an_empty_file_is_one_last_chunk() {
        let dir = ::tempfile::tempdir().unwrap();
        for key in both_keys() {
            let file = write(dir.path(), &key, &[]);
            let expected = match key.is_encrypted() {
                true => SEALED_HEADER_LEN + KIND_LEN + GCM_TAG_LEN,
                false => PLAIN_HEADER_LEN + KIND_LEN,
            };
            assert_eq!(file.size(), expected as u64);
            assert_eq!(file.reader().unwrap().next_record().unwrap(), None);
        }
    }

    #[test]
    fn no_plaintext_reaches_an_encrypted_file() {
        let dir = ::tempfile::tempdir().unwrap();
        let marker = b"STRONGBOX-PLAINTEXT-MARKER";
        let records = vec![marker.to_vec(); 10_000];
        let contains = |file: &TempFile| {
            let bytes = std::fs::read(file.path()).unwrap();
            bytes.windows(marker.len()).any(|w| w == marker)
        };
        assert!(!contains(&write(dir.path(), &encrypted_key(), &records)));
        // The check can see the marker when it is there.
        assert!(contains(&write(
            dir.path(),
            &TempFileKey::plain(),
            &records
        )));
    }

    #[test]
    fn an_altered_chunk_fails_authentication_and_yields_nothing_of_it() {
        let dir = ::tempfile::tempdir().unwrap();
        let records = sample_records();
        let key = encrypted_key();
        let file = write(dir.path(), &key, &records);
        let pristine = std::fs::read(file.path()).unwrap();
        let chunk1 = chunk_ranges(&pristine, true)[1].clone();
        let places = [
            ("length", chunk1.start),
            ("nonce", chunk1.start + NONCE_OFFSET + 2),
            ("ciphertext", chunk1.start + SEALED_HEADER_LEN + 100),
            ("tag", chunk1.end - 1),
        ];
        for (what, offset) in places {
            std::fs::write(file.path(), &pristine).unwrap();
            edit(&file, |bytes| bytes[offset] ^= 0x01);
            let (read, error) = read_all(&file);
            assert!(
                matches!(&error, Some(Error::Corrupt { problem, .. }) if problem.contains("chunk 1")),
                "{what}: {error:?}"
            );
            assert!(records.starts_with(&read), "{what}");
        }
    }

    #[test]
    fn every_single_byte_change_to_an_encrypted_file_is_detected() {
        let dir = ::tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..20).map(|i| vec![i; i as usize]).collect();
        let file = write(dir.path(), &encrypted_key(), &records);
        let pristine = std::fs::read(file.path()).unwrap();
        for offset in 0..pristine.len() {
            let mut bytes = pristine.clone();
            bytes[offset] ^= 0x80;
            std::fs::write(file.path(), &bytes).unwrap();
            let (read, error) = read_all(&file);
            assert!(read.is_empty() && error.is_some(), "offset {offset}");
        }
    }

    #[test]
    fn damaged_plain_files_never_panic() {
        let dir = ::tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..20).map(|i| vec![i; i as usize]).collect();
        let file = write(dir.path(), &TempFileKey::plain(), &records);
        let pristine = std::fs::read(file.path()).unwrap();
        for offset in 0..pristine.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bytes = pristine.clone();
                bytes[offset] ^= flip;
                std::fs::write(file.path(), &bytes).unwrap();
                let _ = read_all(&file);
            }
        }
        std::fs::write(file.path(), &pristine).unwrap();
        edit(&file, |bytes| bytes[PLAIN_HEADER_LEN] = 7);
        assert_corrupt(&file, &records, "unknown kind");
    }

    #[test]
    fn truncation_is_an_error_in_both_modes() {
        let dir = ::tempfile::tempdir().unwrap();
        let records = sample_records();
        for key in both_keys() {
            let file = write(dir.path(), &key, &records);
            let pristine = std::fs::read(file.path()).unwrap();
            let last = chunk_ranges(&pristine, key.is_encrypted()).pop().unwrap();
            for cut in [last.start, pristine.len() - 1, 3, 0] {
                std::fs::write(file.path(), &pristine[..cut]).unwrap();
                assert_corrupt(&file, &records, "truncated");
            }
        }
    }

    #[test]
    fn bytes_after_the_last_chunk_are_an_error() {
        let dir = ::tempfile::tempdir().unwrap();
        for key in both_keys() {
            let records = vec![b"one".to_vec(), b"two".to_vec()];
            let file = write(dir.path(), &key, &records);
            edit(&file, |bytes| bytes.push(0));
            assert_corrupt(&file, &records, "after the last chunk");
        }
    }

    #[test]
    fn chunks_cannot_be_reordered_or_moved_between_files() {
        let dir = ::tempfile::tempdir().unwrap();
        let key = encrypted_key();
        // Same-sized records make same-sized chunks, so chunks can be swapped.
        let records = vec![vec![7u8; 1000]; 200];
        let a = write(dir.path(), &key, &records);
        let b = write(dir.path(), &key, &records);
        let a_bytes = std::fs::read(a.path()).unwrap();
        let ranges = chunk_ranges(&a_bytes, true);
        let (c0, c1) = (ranges[0].clone(), ranges[1].clone());
        assert_eq!(c0.len(), c1.len());

        edit(&a, |bytes| {
            let first = bytes[c0.clone()].to_vec();
            bytes.copy_within(c1.clone(), c0.start);
            bytes[c1.clone()].copy_from_slice(&first);
        });
        assert_corrupt(&a, &records, "chunk 0");

        // Chunk 0 of `a` in place of chunk 0 of `b`: its nonce gives it away ...
        edit(&b, |bytes| {
            bytes[c0.clone()].copy_from_slice(&a_bytes[c0.clone()])
        });
        assert_corrupt(&b, &records, "another file");
        // ... and with `b`'s nonce written over it, its tag does.
        edit(&b, |bytes| {
            let own = nonce(b.file_number, 0);
            bytes[NONCE_OFFSET..SEALED_HEADER_LEN].copy_from_slice(&own);
        });
        assert_corrupt(&b, &records, "authentication failed");
    }

    #[test]
    fn a_reader_stays_failed_after_an_error() {
        let dir = ::tempfile::tempdir().unwrap();
        let file = write(dir.path(), &encrypted_key(), &[b"x".to_vec()]);
        edit(&file, |bytes| *bytes.last_mut().unwrap() ^= 1);
        let mut reader = file.reader().unwrap();
        assert!(reader.next_record().is_err());
        assert!(matches!(
            reader.next_record(),
            Err(Error::Corrupt { problem, .. }) if problem.contains("earlier error")
        ));
    }

    #[test]
    fn files_of_one_key_get_distinct_numbers_until_they_run_out() {
        let dir = ::tempfile::tempdir().unwrap();
        let key = encrypted_key();
        let a = TempFileWriter::create(dir.path(), &key).unwrap();
        let b = TempFileWriter::create(dir.path(), &key).unwrap();
        assert_ne!(a.file_number, b.file_number);
        assert_ne!(a.path.0, b.path.0);

        key.next_file.store(u32::MAX - 1, Ordering::Relaxed);
        let last = TempFileWriter::create(dir.path(), &key).unwrap();
        assert_eq!(last.file_number, u32::MAX - 1);
        assert!(matches!(
            TempFileWriter::create(dir.path(), &key),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn files_are_deleted_on_drop_finished_or_not() {
        let dir = ::tempfile::tempdir().unwrap();
        let key = TempFileKey::plain();
        let writer = TempFileWriter::create(dir.path(), &key).unwrap();
        let path = writer.path.0.clone();
        assert!(path.exists());
        drop(writer);
        assert!(!path.exists());

        let file = write(dir.path(), &key, &[b"record".to_vec()]);
        let path = file.path().to_path_buf();
        let mut reader = file.reader().unwrap();
        drop(file);
        assert!(!path.exists());
        // An open reader keeps working on Unix, where the name goes but the file stays.
        #[cfg(unix)]
        assert_eq!(reader.next_record().unwrap(), Some(b"record".to_vec()));
        let _ = reader.next_record();
    }

    #[test]
    fn remove_leftovers_deletes_only_temp_files() {
        let dir = ::tempfile::tempdir().unwrap();
        for name in ["tmp-12-0.sbt", "tmp-99-7.sbt"] {
            std::fs::write(dir.path().join(name), b"left by a crash").unwrap();
        }
        let kept = ["tmp-notes.sbt", "tmp-1-2.sbt.bak", "data.sbt", "tmp--1.sbt"];
        for name in kept {
            std::fs::write(dir.path().join(name), b"not ours").unwrap();
        }
        std::fs::create_dir(dir.path().join("tmp-3-4.sbt")).unwrap();
        assert_eq!(remove_leftovers(dir.path()).unwrap(), 2);
        assert_eq!(remove_leftovers(dir.path()).unwrap(), 0);
        for name in kept {
            assert!(dir.path().join(name).exists(), "{name}");
        }
        assert!(dir.path().join("tmp-3-4.sbt").is_dir());
    }

    #[test]
    fn for_keyring_encrypts_only_with_a_keyring_and_when_asked() {
        let keyring = MemoryKeyProvider::new();
        assert!(matches!(
            TempFileKey::for_keyring(Some(&keyring), true),
            Err(Error::Keyring(_))
        ));
        keyring.add_random(1, 1, 128).unwrap();
        assert!(TempFileKey::for_keyring(Some(&keyring), true)
            .unwrap()
            .is_encrypted());
        keyring.add_random(2, 1, 256).unwrap();
        assert!(TempFileKey::for_keyring(Some(&keyring), true)
            .unwrap()
            .is_encrypted());
        assert!(!TempFileKey::for_keyring(Some(&keyring), false)
            .unwrap()
            .is_encrypted());
        assert!(!TempFileKey::for_keyring(None, true).unwrap().is_encrypted());
    }
}
