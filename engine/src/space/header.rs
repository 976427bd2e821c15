//! Page 0 of every tablespace: the space header.
//!
//! Page 0 is stored *unencrypted* (cipher 0 in the page header, checksummed like every
//! page): it holds what is needed before anything can be decrypted — the wrapped data keys —
//! plus the allocation state. Nothing in it is user data; wrapped keys are safe to store in
//! the clear (they are encrypted under a keyring key). Page 0 never enters the buffer pool;
//! [`super::SpaceFile`] owns it.
//!
//! ## Layout of the body (offsets from `page::BODY_START`, little-endian)
//!
//! ```text
//! offset size field
//! 0      8    magic               "SBXSPACE"
//! 8      4    format_version      1
//! 12     4    space_id
//! 16     4    page_size           bytes
//! 20     1    kind                0 system, 1 table, 2 temporary
//! 21     1    encrypted           0 no, 1 yes
//! 22     1    algorithm           1 aes_ctr, 2 aes_cbc, 3 aes_gcm (0 when unencrypted)
//! 23     1    generation_count    data-key generations stored below (0..=4)
//! 24     4    page_count          pages in use or on the free list (file high-water mark)
//! 28     4    free_head           first page of the free list (0 = empty)
//! 32     4    free_count          pages on the free list
//! 36     4    reserved            0
//! 40     8    nonce_reserved      write nonces below this may have been used (see FORMAT.md)
//! 48     4    key_id              keyring key id of the tablespace
//! 52     4    current_key_version generation new page writes use
//! 56     4    min_key_version     oldest generation any page may still carry
//! 60     4    rotate_next_page    re-encryption pass: pages below it are done (durably)
//! 64     4    rotate_target       generation the pass moves pages to (0 = decrypting)
//! 68     4    rotate_flags        bit 0 ACTIVE (a pass is running), bit 1 PLAIN_PAGES
//!                                 (pages may still be unencrypted), bit 2 DECRYPTING
//!                                 (new writes are plain; encrypted pages stay readable)
//! 72     8    reserved            0
//! 80     224  generations         4 × { version u32, WrappedKey (52 bytes) }
//! 304    4    copy_crc            CRC-32 of bytes 0..304 of this copy
//! 308         end
//! ```
//!
//! **Two copies.** Page 0 is not written through the doublewrite buffer, and losing it
//! loses the wrapped data keys — the whole tablespace. So the header is written twice in
//! the page: at the body start (bytes 48..356 of the page, inside the first 512-byte
//! sector) and again at the middle of the page (`page_len / 2`, another 512-byte and, for
//! pages above 4 KiB, another 4 KiB sector), each with its own CRC. A write torn at sector
//! granularity leaves each copy whole, old or new, so when the page checksum fails
//! [`SpaceHeader::read_copies`] takes the first copy whose CRC holds. Either is safe: every
//! page-0 write is synced before anything relies on it (a checkpoint before the log is
//! told, a nonce reservation before its nonces are used), so a crash mid-write means the
//! old copy is still the one in force.

use crate::page::header::{cipher_code, cipher_from_code};
use crate::page::BODY_START;
use strongbox_keyring::wrap::WrappedKey;
use strongbox_keyring::Algorithm;

pub const MAGIC: &[u8; 8] = b"SBXSPACE";
pub const FORMAT_VERSION: u32 = 1;
/// How many data-key generations a space header can hold at once.
pub const MAX_GENERATIONS: usize = 4;

const MAGIC_OFFSET: usize = 0;
const FORMAT_OFFSET: usize = MAGIC_OFFSET + 8;
const SPACE_ID_OFFSET: usize = FORMAT_OFFSET + 4;
const PAGE_SIZE_OFFSET: usize = SPACE_ID_OFFSET + 4;
const KIND_OFFSET: usize = PAGE_SIZE_OFFSET + 4;
const ENCRYPTED_OFFSET: usize = KIND_OFFSET + 1;
const ALGORITHM_OFFSET: usize = ENCRYPTED_OFFSET + 1;
const GENERATION_COUNT_OFFSET: usize = ALGORITHM_OFFSET + 1;
const PAGE_COUNT_OFFSET: usize = GENERATION_COUNT_OFFSET + 1;
const FREE_HEAD_OFFSET: usize = PAGE_COUNT_OFFSET + 4;
const FREE_COUNT_OFFSET: usize = FREE_HEAD_OFFSET + 4;
const RESERVED1_OFFSET: usize = FREE_COUNT_OFFSET + 4;
const NONCE_OFFSET: usize = RESERVED1_OFFSET + 4;
const KEY_ID_OFFSET: usize = NONCE_OFFSET + 8;
const CURRENT_VERSION_OFFSET: usize = KEY_ID_OFFSET + 4;
const MIN_VERSION_OFFSET: usize = CURRENT_VERSION_OFFSET + 4;
const ROTATE_NEXT_OFFSET: usize = MIN_VERSION_OFFSET + 4;
const ROTATE_TARGET_OFFSET: usize = ROTATE_NEXT_OFFSET + 4;
const ROTATE_FLAGS_OFFSET: usize = ROTATE_TARGET_OFFSET + 4;
const RESERVED2_OFFSET: usize = ROTATE_FLAGS_OFFSET + 4;
const GENERATIONS_OFFSET: usize = RESERVED2_OFFSET + 8;
const GENERATION_LEN: usize = 4 + WrappedKey::ENCODED_LEN;
/// Bytes of one copy of the header, its CRC excluded.
pub const HEADER_BODY_LEN: usize = GENERATIONS_OFFSET + MAX_GENERATIONS * GENERATION_LEN;
/// Bytes of one copy with its CRC.
const COPY_LEN: usize = HEADER_BODY_LEN + 4;

/// Where the two copies of the header start in a page of `page_len` bytes.
fn copy_offsets(page_len: usize) -> [usize; 2] {
    [BODY_START, page_len / 2]
}

/// What a tablespace holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaceKind {
    /// Space 0: the catalog (and, later, undo).
    System,
    /// One table (file per table).
    Table,
    /// Temporary tables; recreated empty at every start.
    Temporary,
}

/// One data-key generation: the data key made when version `version` of keyring key
/// `wrapped.key_id` was the latest, stored wrapped (possibly re-wrapped since under a newer
/// version of the same key id). Pages name a generation by (key id, version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub version: u32,
    pub wrapped: WrappedKey,
}

impl Generation {
    /// The keyring key id this generation belongs to.
    pub fn key_id(&self) -> u32 {
        self.wrapped.key_id
    }
}

impl EncryptionRecord {
    /// The generation new pages are sealed with.
    pub fn current(&self) -> Option<&Generation> {
        self.generations
            .iter()
            .find(|g| g.key_id() == self.key_id && g.version == self.current_version)
    }

    /// The oldest generation version any page may still carry.
    pub fn oldest_version(&self) -> u32 {
        self.generations
            .iter()
            .map(|g| g.version)
            .min()
            .unwrap_or(self.current_version)
    }
}

/// Re-encryption progress, persisted so a rotation resumes after a crash
/// (`engine/src/rotation/` owns the rules).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotationState {
    /// Pages `1..next_page` already carry the target sealing, durably.
    pub next_page: u32,
    /// The generation the pass moves pages to (0 while decrypting).
    pub target_version: u32,
    /// [`RotationState::ACTIVE`], [`RotationState::PLAIN_PAGES`], [`RotationState::DECRYPTING`].
    pub flags: u32,
}

impl RotationState {
    /// A re-encryption pass is running.
    pub const ACTIVE: u32 = 1;
    /// Some pages may still be unencrypted (the space is being encrypted).
    pub const PLAIN_PAGES: u32 = 2;
    /// The space is being decrypted: new writes are plain.
    pub const DECRYPTING: u32 = 4;
    const KNOWN: u32 = Self::ACTIVE | Self::PLAIN_PAGES | Self::DECRYPTING;

    pub fn is_active(&self) -> bool {
        self.flags & Self::ACTIVE != 0
    }

    pub fn plain_pages_allowed(&self) -> bool {
        self.flags & (Self::PLAIN_PAGES | Self::DECRYPTING) != 0
    }

    pub fn is_decrypting(&self) -> bool {
        self.flags & Self::DECRYPTING != 0
    }
}

/// The encryption record of an encrypted tablespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionRecord {
    pub key_id: u32,
    pub algorithm: Algorithm,
    pub current_version: u32,
    pub min_version: u32,
    pub rotation: RotationState,
    pub generations: Vec<Generation>,
}

/// Page 0, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceHeader {
    pub space_id: u32,
    pub page_size: u32,
    pub kind: SpaceKind,
    pub page_count: u32,
    pub free_head: u32,
    pub free_count: u32,
    pub nonce_reserved: u64,
    pub encryption: Option<EncryptionRecord>,
}

/// The allocation fields of page 0: what a mini-transaction that allocates or frees pages
/// changes, and what its `SpaceHeader` redo record carries (`docs/durability.md` rule 3).
///
/// ```text
/// SpaceHeader redo record image (little-endian)
/// offset size field
/// 0      4    page_count
/// 4      4    free_head
/// 8      4    free_count
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocState {
    pub page_count: u32,
    pub free_head: u32,
    pub free_count: u32,
}

impl AllocState {
    /// Bytes of [`AllocState::encode`].
    pub const ENCODED_LEN: usize = 12;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_LEN);
        for field in [self.page_count, self.free_head, self.free_count] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out
    }

    /// `None` unless `bytes` is exactly [`AllocState::ENCODED_LEN`] long.
    pub fn decode(bytes: &[u8]) -> Option<AllocState> {
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        Some(AllocState {
            page_count: u32_at(bytes, 0),
            free_head: u32_at(bytes, 4),
            free_count: u32_at(bytes, 8),
        })
    }
}

/// Why a page 0 body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("space header: {0}")]
pub struct HeaderError(pub String);

fn u32_at(body: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(body[offset..offset + 4].try_into().expect("4 bytes"))
}

fn put_u32(body: &mut [u8], offset: usize, value: u32) {
    body[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

impl SpaceHeader {
    /// The allocation fields.
    pub fn alloc(&self) -> AllocState {
        AllocState {
            page_count: self.page_count,
            free_head: self.free_head,
            free_count: self.free_count,
        }
    }

    /// Replaces the allocation fields.
    pub fn set_alloc(&mut self, alloc: AllocState) {
        self.page_count = alloc.page_count;
        self.free_head = alloc.free_head;
        self.free_count = alloc.free_count;
    }

    /// Writes the header into the body area of a page-0 frame (`frame` is the whole page).
    pub fn write(&self, frame: &mut [u8]) {
        for start in copy_offsets(frame.len()) {
            self.write_copy(&mut frame[start..start + COPY_LEN]);
        }
    }

    /// The header of a page-0 frame whose page checksum failed (a torn write): the first of
    /// the two copies whose own CRC holds, or `None`.
    pub fn read_copies(frame: &[u8]) -> Option<SpaceHeader> {
        copy_offsets(frame.len()).into_iter().find_map(|start| {
            let copy = frame.get(start..start + COPY_LEN)?;
            let stored = u32::from_le_bytes(copy[HEADER_BODY_LEN..].try_into().ok()?);
            if stored != crc32fast::hash(&copy[..HEADER_BODY_LEN]) {
                return None;
            }
            let mut page = vec![0u8; BODY_START + HEADER_BODY_LEN];
            page[BODY_START..].copy_from_slice(&copy[..HEADER_BODY_LEN]);
            SpaceHeader::read(&page).ok()
        })
    }

    /// One copy: the fields, then the CRC over them.
    fn write_copy(&self, copy: &mut [u8]) {
        self.write_fields(&mut copy[..HEADER_BODY_LEN]);
        let crc = crc32fast::hash(&copy[..HEADER_BODY_LEN]);
        copy[HEADER_BODY_LEN..COPY_LEN].copy_from_slice(&crc.to_le_bytes());
    }

    fn write_fields(&self, body: &mut [u8]) {
        body.fill(0);
        body[MAGIC_OFFSET..FORMAT_OFFSET].copy_from_slice(MAGIC);
        put_u32(body, FORMAT_OFFSET, FORMAT_VERSION);
        put_u32(body, SPACE_ID_OFFSET, self.space_id);
        put_u32(body, PAGE_SIZE_OFFSET, self.page_size);
        body[KIND_OFFSET] = match self.kind {
            SpaceKind::System => 0,
            SpaceKind::Table => 1,
            SpaceKind::Temporary => 2,
        };
        put_u32(body, PAGE_COUNT_OFFSET, self.page_count);
        put_u32(body, FREE_HEAD_OFFSET, self.free_head);
        put_u32(body, FREE_COUNT_OFFSET, self.free_count);
        body[NONCE_OFFSET..KEY_ID_OFFSET].copy_from_slice(&self.nonce_reserved.to_le_bytes());
        let Some(record) = &self.encryption else {
            return;
        };
        body[ENCRYPTED_OFFSET] = 1;
        body[ALGORITHM_OFFSET] = cipher_code(Some(record.algorithm));
        body[GENERATION_COUNT_OFFSET] = record.generations.len() as u8;
        put_u32(body, KEY_ID_OFFSET, record.key_id);
        put_u32(body, CURRENT_VERSION_OFFSET, record.current_version);
        put_u32(body, MIN_VERSION_OFFSET, record.min_version);
        put_u32(body, ROTATE_NEXT_OFFSET, record.rotation.next_page);
        put_u32(body, ROTATE_TARGET_OFFSET, record.rotation.target_version);
        put_u32(body, ROTATE_FLAGS_OFFSET, record.rotation.flags);
        for (index, generation) in record.generations.iter().enumerate() {
            let start = GENERATIONS_OFFSET + index * GENERATION_LEN;
            put_u32(body, start, generation.version);
            generation
                .wrapped
                .encode(&mut body[start + 4..start + GENERATION_LEN]);
        }
    }

    /// Reads the header from the body area of a decoded page-0 frame.
    pub fn read(frame: &[u8]) -> Result<SpaceHeader, HeaderError> {
        let bad = |problem: String| HeaderError(problem);
        let body = frame
            .get(BODY_START..BODY_START + HEADER_BODY_LEN)
            .ok_or_else(|| bad("page too small".into()))?;
        if &body[MAGIC_OFFSET..FORMAT_OFFSET] != MAGIC {
            return Err(bad("bad magic: not a Strongbox tablespace".into()));
        }
        let format = u32_at(body, FORMAT_OFFSET);
        if format != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {format}, this build reads version {FORMAT_VERSION}"
            )));
        }
        let kind = match body[KIND_OFFSET] {
            0 => SpaceKind::System,
            1 => SpaceKind::Table,
            2 => SpaceKind::Temporary,
            other => return Err(bad(format!("unknown space kind {other}"))),
        };
        let encryption = match body[ENCRYPTED_OFFSET] {
            0 => None,
            1 => Some(read_encryption(body)?),
            other => return Err(bad(format!("encrypted flag {other} is neither 0 nor 1"))),
        };
        Ok(SpaceHeader {
            space_id: u32_at(body, SPACE_ID_OFFSET),
            page_size: u32_at(body, PAGE_SIZE_OFFSET),
            kind,
            page_count: u32_at(body, PAGE_COUNT_OFFSET),
            free_head: u32_at(body, FREE_HEAD_OFFSET),
            free_count: u32_at(body, FREE_COUNT_OFFSET),
            nonce_reserved: u64::from_le_bytes(
                body[NONCE_OFFSET..KEY_ID_OFFSET]
                    .try_into()
                    .expect("8 bytes"),
            ),
            encryption,
        })
    }
}

fn read_encryption(body: &[u8]) -> Result<EncryptionRecord, HeaderError> {
    let algorithm = cipher_from_code(body[ALGORITHM_OFFSET])
        .ok()
        .flatten()
        .ok_or_else(|| HeaderError(format!("unknown algorithm code {}", body[ALGORITHM_OFFSET])))?;
    let count = usize::from(body[GENERATION_COUNT_OFFSET]);
    if count == 0 || count > MAX_GENERATIONS {
        return Err(HeaderError(format!(
            "{count} data-key generations (expected 1 to {MAX_GENERATIONS})"
        )));
    }
    let mut generations = Vec::with_capacity(count);
    for index in 0..count {
        let start = GENERATIONS_OFFSET + index * GENERATION_LEN;
        let wrapped = WrappedKey::decode(&body[start + 4..start + GENERATION_LEN])
            .map_err(|e| HeaderError(format!("generation {index}: {e}")))?;
        generations.push(Generation {
            version: u32_at(body, start),
            wrapped,
        });
    }
    let record = EncryptionRecord {
        key_id: u32_at(body, KEY_ID_OFFSET),
        algorithm,
        current_version: u32_at(body, CURRENT_VERSION_OFFSET),
        min_version: u32_at(body, MIN_VERSION_OFFSET),
        rotation: RotationState {
            next_page: u32_at(body, ROTATE_NEXT_OFFSET),
            target_version: u32_at(body, ROTATE_TARGET_OFFSET),
            flags: u32_at(body, ROTATE_FLAGS_OFFSET),
        },
        generations,
    };
    if record.current().is_none() {
        return Err(HeaderError(format!(
            "current key (id {}, version {}) has no stored data key",
            record.key_id, record.current_version
        )));
    }
    let unknown = record.rotation.flags & !RotationState::KNOWN;
    if unknown != 0 {
        return Err(HeaderError(format!("unknown rotation flags {unknown:#x}")));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongbox_keyring::provider::MemoryKeyProvider;
    use strongbox_keyring::wrap;

    fn encrypted_header() -> SpaceHeader {
        let provider = MemoryKeyProvider::new();
        provider.add_random(7, 3, 256).unwrap();
        let (_, wrapped) = wrap::new_data_key(&provider, 7).unwrap();
        SpaceHeader {
            space_id: 42,
            page_size: 16384,
            kind: SpaceKind::Table,
            page_count: 100,
            free_head: 17,
            free_count: 2,
            nonce_reserved: 1 << 40,
            encryption: Some(EncryptionRecord {
                key_id: 7,
                algorithm: Algorithm::AesGcm,
                current_version: 3,
                min_version: 3,
                rotation: RotationState::default(),
                generations: vec![Generation {
                    version: 3,
                    wrapped,
                }],
            }),
        }
    }

    #[test]
    fn header_round_trips() {
        let mut frame = vec![0u8; 16384];
        for header in [
            encrypted_header(),
            SpaceHeader {
                encryption: None,
                kind: SpaceKind::System,
                ..encrypted_header()
            },
        ] {
            header.write(&mut frame);
            assert_eq!(SpaceHeader::read(&frame).unwrap(), header);
        }
    }

    #[test]
    fn damaged_headers_are_rejected_with_a_reason() {
        let mut frame = vec![0u8; 16384];
        encrypted_header().write(&mut frame);
        let cases: [(usize, u8, &str); 5] = [
            (MAGIC_OFFSET, b'X', "magic"),
            (FORMAT_OFFSET, 9, "format version"),
            (KIND_OFFSET, 9, "space kind"),
            (ALGORITHM_OFFSET, 9, "algorithm"),
            (GENERATION_COUNT_OFFSET, 0, "generations"),
        ];
        for (offset, value, expected) in cases {
            let mut damaged = frame.clone();
            damaged[BODY_START + offset] = value;
            let error = SpaceHeader::read(&damaged).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error} should mention {expected}"
            );
        }
    }
}
