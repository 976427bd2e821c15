//! The page header: byte layout, page sizes, and the typed [`PageHeader`].
//!
//! Every page — plain or encrypted, of any type — starts with the same 48-byte header and
//! ends with a 16-byte trailer. All integers are little-endian.
//!
//! ```text
//! offset  size  field
//! 0       4     checksum     CRC-32 (crc32fast) over bytes [4, page_size) of the STORED bytes
//! 4       2     page_type    PageType: Free=0 SpaceHeader=1 BtreeLeaf=2 BtreeBranch=3
//!                            Overflow=4 Undo=5 FreeList=6 (others: reserved, rejected)
//! 6       1     cipher       0 none, 1 aes-ctr, 2 aes-cbc, 3 aes-gcm
//! 7       1     reserved     0
//! 8       4     space_id
//! 12      4     page_no
//! 16      8     page_lsn
//! 24      4     key_id       keyring key id of the tablespace (0 when unencrypted)
//! 28      4     key_version  data-key generation that sealed the page (0 = unencrypted)
//! 32      8     write_nonce  unique per (data key, write); 0 when unencrypted
//! 40      8     reserved     0
//! 48      ..    body         upper layers own [48, page_size - 16) in every mode
//! ps-16   16    trailer      GCM: the tag. CTR/CBC: the post-decrypt check (encrypted with
//!                            the body): bytes 0..4 = CRC-32 of (header[4..48] ‖ body
//!                            plaintext), rest zero. Unencrypted: zero.
//! ```
//!
//! The header is 48 bytes so that `page_size - 48` is a whole number of AES blocks (CBC
//! encrypts [48, page_size)). The header itself is never encrypted: a page must say which
//! key opens it. Bytes [4, 48) are nevertheless protected — they are inside the CTR/CBC
//! check and are the GCM associated data ([`AUTHENTICATED_HEADER`]).
//!
//! The codec (`codec.rs`) owns `checksum`, `cipher`, `key_id`, `key_version` and
//! `write_nonce`; upper layers set `page_type`, `space_id`, `page_no` and `page_lsn` in the
//! plaintext frame, usually by writing a [`PageHeader::new`].

use std::fmt;
use std::ops::Range;

use strongbox_keyring::Algorithm;

use super::error::PageError;

// Each offset is the previous field's offset plus its size; no offset is a bare number.
const CHECKSUM_OFFSET: usize = 0;
const CHECKSUM_LEN: usize = 4;
const PAGE_TYPE_OFFSET: usize = CHECKSUM_OFFSET + CHECKSUM_LEN;
const PAGE_TYPE_LEN: usize = 2;
const CIPHER_OFFSET: usize = PAGE_TYPE_OFFSET + PAGE_TYPE_LEN;
const CIPHER_LEN: usize = 1;
const RESERVED_A_OFFSET: usize = CIPHER_OFFSET + CIPHER_LEN;
const RESERVED_A_LEN: usize = 1;
const SPACE_ID_OFFSET: usize = RESERVED_A_OFFSET + RESERVED_A_LEN;
const SPACE_ID_LEN: usize = 4;
const PAGE_NO_OFFSET: usize = SPACE_ID_OFFSET + SPACE_ID_LEN;
const PAGE_NO_LEN: usize = 4;
const LSN_OFFSET: usize = PAGE_NO_OFFSET + PAGE_NO_LEN;
const LSN_LEN: usize = 8;
const KEY_ID_OFFSET: usize = LSN_OFFSET + LSN_LEN;
const KEY_ID_LEN: usize = 4;
const KEY_VERSION_OFFSET: usize = KEY_ID_OFFSET + KEY_ID_LEN;
const KEY_VERSION_LEN: usize = 4;
const WRITE_NONCE_OFFSET: usize = KEY_VERSION_OFFSET + KEY_VERSION_LEN;
const WRITE_NONCE_LEN: usize = 8;
const RESERVED_B_OFFSET: usize = WRITE_NONCE_OFFSET + WRITE_NONCE_LEN;
const RESERVED_B_LEN: usize = 8;

/// Header size in bytes.
pub const HEADER_LEN: usize = RESERVED_B_OFFSET + RESERVED_B_LEN;
/// First byte of the body upper layers may use.
pub const BODY_START: usize = HEADER_LEN;
/// Trailer size in bytes (GCM tag, or the CTR/CBC post-decrypt check).
pub const TRAILER_LEN: usize = 16;
/// Header bytes covered by the CTR/CBC check and used as GCM associated data: everything
/// but the checksum, which is computed last, over the stored bytes.
pub const AUTHENTICATED_HEADER: Range<usize> = PAGE_TYPE_OFFSET..HEADER_LEN;
/// Where the stored-bytes checksum lives, and the bytes it covers start.
pub(super) const CHECKSUM_FIELD: Range<usize> = CHECKSUM_OFFSET..PAGE_TYPE_OFFSET;

/// Where the page LSN sits in a frame: the mini-transaction stamps it and leaves it out of
/// its deltas; redo compares it with a record's LSN (`docs/durability.md` rules 2, 3).
pub const PAGE_LSN: Range<usize> = LSN_OFFSET..LSN_OFFSET + LSN_LEN;

/// The bytes of a frame of `page_len` bytes that upper layers own and a mini-transaction
/// logs: `page_type`, `space_id` and `page_no`, and the body. Not the page LSN (stamped by
/// the mtr) and not what the codec owns (checksum, cipher, key id, key version, write
/// nonce, trailer): those describe the copy on disk, and a delta carrying them would mix
/// the header of one stored copy into another at redo time.
pub fn logged_ranges(page_len: usize) -> [Range<usize>; 3] {
    [
        PAGE_TYPE_OFFSET..PAGE_TYPE_OFFSET + PAGE_TYPE_LEN,
        SPACE_ID_OFFSET..PAGE_NO_OFFSET + PAGE_NO_LEN,
        BODY_START..page_len - TRAILER_LEN,
    ]
}

/// The page LSN of a frame, without validating the rest of the header.
///
/// # Panics
///
/// If `frame` is shorter than [`HEADER_LEN`] (a caller bug: frames are whole pages).
pub fn read_page_lsn(frame: &[u8]) -> u64 {
    let header = frame
        .first_chunk()
        .expect("a page buffer is longer than the page header");
    u64::from_le_bytes(field(header, LSN_OFFSET))
}

/// Stores `lsn` as the page LSN of `frame`, touching no other byte.
///
/// # Panics
///
/// If `frame` is shorter than [`HEADER_LEN`] (a caller bug: frames are whole pages).
pub fn write_page_lsn(frame: &mut [u8], lsn: u64) {
    frame[PAGE_LSN].copy_from_slice(&lsn.to_le_bytes());
}

/// One past the last body byte upper layers may use, for a page of `page_len` bytes.
pub const fn body_end(page_len: usize) -> usize {
    page_len - TRAILER_LEN
}

const _: () = assert!(HEADER_LEN == 48, "FORMAT.md fixes the header at 48 bytes");
const _: () = assert!(
    HEADER_LEN.is_multiple_of(16),
    "CBC needs [HEADER_LEN, page_size) in whole blocks"
);

/// A supported page size: 4, 8, 16 (default), 32 or 64 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageSize(u32);

impl PageSize {
    /// 16 KiB, as InnoDB.
    pub const DEFAULT: PageSize = PageSize(16384);
    /// Every supported size, smallest first.
    pub const ALL: [PageSize; 5] = [
        PageSize(4096),
        PageSize(8192),
        PageSize(16384),
        PageSize(32768),
        PageSize(65536),
    ];

    /// The size in bytes.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The size in bytes, as a buffer length.
    #[expect(clippy::len_without_is_empty, reason = "a page size is never zero")]
    pub const fn len(self) -> usize {
        self.0 as usize
    }

    /// The page size a buffer of `len` bytes holds, if `len` is a supported size.
    pub fn of_buffer(len: usize) -> Option<PageSize> {
        PageSize::ALL.into_iter().find(|size| size.len() == len)
    }

    /// The body upper layers may use: [`BODY_START`], `page_size - TRAILER_LEN`.
    pub const fn body(self) -> Range<usize> {
        BODY_START..body_end(self.len())
    }
}

impl Default for PageSize {
    fn default() -> Self {
        PageSize::DEFAULT
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A `page_size` setting that is not one of the supported sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("page_size {0} is not supported: use 4096, 8192, 16384, 32768 or 65536")]
pub struct InvalidPageSize(pub u32);

impl TryFrom<u32> for PageSize {
    type Error = InvalidPageSize;

    fn try_from(bytes: u32) -> Result<Self, Self::Error> {
        PageSize::ALL
            .into_iter()
            .find(|size| size.0 == bytes)
            .ok_or(InvalidPageSize(bytes))
    }
}

/// Where a page belongs: its tablespace and its number within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageId {
    pub space_id: u32,
    pub page_no: u32,
}

impl PageId {
    pub const fn new(space_id: u32, page_no: u32) -> PageId {
        PageId { space_id, page_no }
    }

    /// The ids stored in a header (always readable: any bytes are valid ids).
    pub(super) fn stored_in(header: &[u8; HEADER_LEN]) -> PageId {
        PageId {
            space_id: u32::from_le_bytes(field(header, SPACE_ID_OFFSET)),
            page_no: u32::from_le_bytes(field(header, PAGE_NO_OFFSET)),
        }
    }
}

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "space {} page {}", self.space_id, self.page_no)
    }
}

/// What a page holds. Stored as a u16; unknown values are rejected, leaving room for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum PageType {
    Free = 0,
    SpaceHeader = 1,
    BtreeLeaf = 2,
    BtreeBranch = 3,
    Overflow = 4,
    Undo = 5,
    FreeList = 6,
}

impl PageType {
    const ALL: [PageType; 7] = [
        PageType::Free,
        PageType::SpaceHeader,
        PageType::BtreeLeaf,
        PageType::BtreeBranch,
        PageType::Overflow,
        PageType::Undo,
        PageType::FreeList,
    ];
}

impl TryFrom<u16> for PageType {
    type Error = &'static str;

    fn try_from(code: u16) -> Result<Self, Self::Error> {
        PageType::ALL
            .into_iter()
            .find(|t| *t as u16 == code)
            .ok_or("unknown page type")
    }
}

/// The `cipher` byte: 0 = none, else the algorithm. Page 0's encryption record stores the
/// same codes.
pub(crate) fn cipher_code(cipher: Option<Algorithm>) -> u8 {
    match cipher {
        None => 0,
        Some(Algorithm::AesCtr) => 1,
        Some(Algorithm::AesCbc) => 2,
        Some(Algorithm::AesGcm) => 3,
    }
}

pub(crate) fn cipher_from_code(code: u8) -> Result<Option<Algorithm>, &'static str> {
    match code {
        0 => Ok(None),
        1 => Ok(Some(Algorithm::AesCtr)),
        2 => Ok(Some(Algorithm::AesCbc)),
        3 => Ok(Some(Algorithm::AesGcm)),
        _ => Err("unknown cipher"),
    }
}

/// A decoded, validated page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    /// CRC-32 of the stored bytes [4, page_size); meaningful only as read from storage.
    pub checksum: u32,
    pub page_type: PageType,
    /// `None` for an unencrypted page.
    pub cipher: Option<Algorithm>,
    pub space_id: u32,
    pub page_no: u32,
    pub lsn: u64,
    pub key_id: u32,
    pub key_version: u32,
    pub write_nonce: u64,
}

impl PageHeader {
    /// A plaintext frame's header as upper layers set it: codec-owned fields zero.
    pub fn new(page_type: PageType, page: PageId, lsn: u64) -> PageHeader {
        PageHeader {
            checksum: 0,
            page_type,
            cipher: None,
            space_id: page.space_id,
            page_no: page.page_no,
            lsn,
            key_id: 0,
            key_version: 0,
            write_nonce: 0,
        }
    }

    /// Where this header says the page belongs.
    pub fn page_id(&self) -> PageId {
        PageId::new(self.space_id, self.page_no)
    }

    /// Decodes and validates the first [`HEADER_LEN`] bytes of `page`.
    pub fn read(page: &[u8]) -> Result<PageHeader, PageError> {
        let header = page.first_chunk().ok_or(PageError::SizeMismatch {
            expected: HEADER_LEN,
            got: page.len(),
        })?;
        let page_id = PageId::stored_in(header);
        let bad = |reason| PageError::BadHeader {
            page: page_id,
            reason,
        };
        if header[RESERVED_A_OFFSET] != 0
            || field::<RESERVED_B_LEN>(header, RESERVED_B_OFFSET) != [0; RESERVED_B_LEN]
        {
            return Err(bad("reserved bytes are not zero"));
        }
        let decoded = PageHeader {
            checksum: u32::from_le_bytes(field(header, CHECKSUM_OFFSET)),
            cipher: cipher_from_code(header[CIPHER_OFFSET]).map_err(bad)?,
            key_id: u32::from_le_bytes(field(header, KEY_ID_OFFSET)),
            key_version: u32::from_le_bytes(field(header, KEY_VERSION_OFFSET)),
            write_nonce: u64::from_le_bytes(field(header, WRITE_NONCE_OFFSET)),
            ..frame_fields(header).map_err(bad)?
        };
        decoded.check().map_err(bad)?;
        Ok(decoded)
    }

    /// Encodes this header into the first [`HEADER_LEN`] bytes of `page`.
    ///
    /// # Panics
    ///
    /// If `page` is shorter than [`HEADER_LEN`]: every page is at least 4 KiB, so that is a
    /// caller bug, not bad data.
    pub fn write(&self, page: &mut [u8]) {
        let header = page
            .first_chunk_mut()
            .expect("a page buffer is longer than the page header");
        self.write_into(header);
    }

    /// Encodes this header into `out`, reserved bytes zero.
    pub(super) fn write_into(&self, out: &mut [u8; HEADER_LEN]) {
        put(out, CHECKSUM_OFFSET, self.checksum.to_le_bytes());
        put(out, PAGE_TYPE_OFFSET, (self.page_type as u16).to_le_bytes());
        put(out, CIPHER_OFFSET, [cipher_code(self.cipher)]);
        put(out, RESERVED_A_OFFSET, [0; RESERVED_A_LEN]);
        put(out, SPACE_ID_OFFSET, self.space_id.to_le_bytes());
        put(out, PAGE_NO_OFFSET, self.page_no.to_le_bytes());
        put(out, LSN_OFFSET, self.lsn.to_le_bytes());
        put(out, KEY_ID_OFFSET, self.key_id.to_le_bytes());
        put(out, KEY_VERSION_OFFSET, self.key_version.to_le_bytes());
        put(out, WRITE_NONCE_OFFSET, self.write_nonce.to_le_bytes());
        put(out, RESERVED_B_OFFSET, [0; RESERVED_B_LEN]);
    }

    /// The consistency rules between fields, shared by `read` and the encoder.
    pub(super) fn check(&self) -> Result<(), &'static str> {
        match self.cipher {
            None if self.key_id != 0 || self.key_version != 0 || self.write_nonce != 0 => {
                Err("unencrypted page with a key id, key version or nonce")
            }
            Some(_) if self.key_id == 0 => Err("encrypted page with key id 0"),
            Some(_) if self.key_version == 0 => Err("encrypted page with key version 0"),
            _ => Ok(()),
        }
    }
}

/// Makes `frame` a fresh, empty page: every byte zero, then a header with `page_type`,
/// `page` and `lsn` (the codec-owned fields stay zero until the page is encoded).
///
/// # Panics
///
/// If `frame` is shorter than [`HEADER_LEN`] (a caller bug: frames are whole pages).
pub fn init_frame(frame: &mut [u8], page_type: PageType, page: PageId, lsn: u64) {
    frame.fill(0);
    PageHeader::new(page_type, page, lsn).write(frame);
}

/// The page number in a frame's header, without validating the rest of the header.
///
/// # Panics
///
/// If `frame` is shorter than [`HEADER_LEN`] (a caller bug: frames are whole pages).
pub fn read_page_no(frame: &[u8]) -> u32 {
    let header = frame
        .first_chunk()
        .expect("a page buffer is longer than the page header");
    PageId::stored_in(header).page_no
}

/// The fields upper layers own (type, ids, LSN), read from a plaintext frame; the
/// codec-owned fields are left zero and the codec-owned bytes are not looked at.
pub(super) fn frame_fields(header: &[u8; HEADER_LEN]) -> Result<PageHeader, &'static str> {
    let page_type = PageType::try_from(u16::from_le_bytes(field(header, PAGE_TYPE_OFFSET)))?;
    let lsn = u64::from_le_bytes(field(header, LSN_OFFSET));
    Ok(PageHeader::new(page_type, PageId::stored_in(header), lsn))
}

/// `N` bytes of the header at `offset` (offsets are the constants above, always in range).
fn field<const N: usize>(header: &[u8; HEADER_LEN], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&header[offset..offset + N]);
    out
}

fn put<const N: usize>(header: &mut [u8; HEADER_LEN], offset: usize, bytes: [u8; N]) {
    header[offset..offset + N].copy_from_slice(&bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PageHeader {
        PageHeader {
            checksum: 0xDEAD_BEEF,
            page_type: PageType::BtreeLeaf,
            cipher: Some(Algorithm::AesGcm),
            space_id: 3,
            page_no: 17,
            lsn: 0x0102_0304_0506_0708,
            key_id: 5,
            key_version: 2,
            write_nonce: 0x1112_1314_1516_1718,
        }
    }

    #[test]
    fn layout_matches_the_table() {
        let mut bytes = [0u8; HEADER_LEN];
        sample().write_into(&mut bytes);
        let expected: [u8; HEADER_LEN] = [
            0xEF, 0xBE, 0xAD, 0xDE, // checksum
            2, 0, // page_type
            3, 0, // cipher, reserved
            3, 0, 0, 0, // space_id
            17, 0, 0, 0, // page_no
            8, 7, 6, 5, 4, 3, 2, 1, // page_lsn
            5, 0, 0, 0, // key_id
            2, 0, 0, 0, // key_version
            0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, // write_nonce
            0, 0, 0, 0, 0, 0, 0, 0, // reserved
        ];
        assert_eq!(bytes, expected);
        assert_eq!(PageHeader::read(&bytes), Ok(sample()));
    }

    #[test]
    fn every_page_size_leaves_whole_cbc_blocks() {
        for size in PageSize::ALL {
            assert_eq!((size.len() - BODY_START) % 16, 0);
            assert_eq!(size.body(), BODY_START..size.len() - TRAILER_LEN);
            assert_eq!(PageSize::try_from(size.get()), Ok(size));
            assert_eq!(PageSize::of_buffer(size.len()), Some(size));
        }
        assert_eq!(PageSize::default().get(), 16384);
        let err = PageSize::try_from(1000).unwrap_err();
        assert_eq!(err, InvalidPageSize(1000));
        assert!(err
            .to_string()
            .contains("4096, 8192, 16384, 32768 or 65536"));
        assert_eq!(PageSize::of_buffer(4095), None);
    }

    #[test]
    fn page_id_displays_space_and_page() {
        assert_eq!(PageId::new(3, 17).to_string(), "space 3 page 17");
    }

    fn reason(bytes: &[u8; HEADER_LEN]) -> &'static str {
        match PageHeader::read(bytes) {
            Err(PageError::BadHeader { page, reason }) => {
                assert_eq!(page, PageId::new(3, 17));
                reason
            }
            other => panic!("expected BadHeader, got {other:?}"),
        }
    }

    #[test]
    fn rejects_what_no_encoder_writes() {
        let mut good = [0u8; HEADER_LEN];
        sample().write_into(&mut good);

        let mut b = good;
        b[PAGE_TYPE_OFFSET] = 7;
        assert_eq!(reason(&b), "unknown page type");
        let mut b = good;
        b[CIPHER_OFFSET] = 4;
        assert_eq!(reason(&b), "unknown cipher");
        let mut b = good;
        b[RESERVED_A_OFFSET] = 1;
        assert_eq!(reason(&b), "reserved bytes are not zero");
        let mut b = good;
        b[HEADER_LEN - 1] = 1;
        assert_eq!(reason(&b), "reserved bytes are not zero");

        let encrypted = |f: fn(&mut PageHeader)| {
            let mut h = sample();
            f(&mut h);
            let mut b = [0u8; HEADER_LEN];
            h.write_into(&mut b);
            b
        };
        assert_eq!(
            reason(&encrypted(|h| h.key_version = 0)),
            "encrypted page with key version 0"
        );
        assert_eq!(
            reason(&encrypted(|h| h.key_id = 0)),
            "encrypted page with key id 0"
        );
        assert_eq!(
            reason(&encrypted(|h| h.cipher = None)),
            "unencrypted page with a key id, key version or nonce"
        );
    }

    #[test]
    fn short_input_is_a_size_mismatch() {
        assert_eq!(
            PageHeader::read(&[0u8; 47]),
            Err(PageError::SizeMismatch {
                expected: HEADER_LEN,
                got: 47
            })
        );
    }

    #[test]
    fn init_frame_clears_the_page_and_writes_the_header() {
        let mut frame = vec![0xEE; 4096];
        init_frame(&mut frame, PageType::Overflow, PageId::new(2, 9), 77);
        assert_eq!(
            PageHeader::read(&frame),
            Ok(PageHeader::new(PageType::Overflow, PageId::new(2, 9), 77))
        );
        assert!(frame[HEADER_LEN..].iter().all(|&b| b == 0));
        assert_eq!(read_page_no(&frame), 9);
    }

    #[test]
    fn plain_header_round_trips() {
        let h = PageHeader::new(PageType::Undo, PageId::new(1, 2), 99);
        let mut page = vec![0u8; 4096];
        h.write(&mut page);
        assert_eq!(PageHeader::read(&page), Ok(h));
        let b: &[u8; HEADER_LEN] = page.first_chunk().unwrap();
        assert_eq!(frame_fields(b), Ok(h));
    }
}
