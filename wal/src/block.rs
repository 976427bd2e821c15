//! Log blocks: the 512-byte unit the redo log is written in, and how LSNs map onto them.
//!
//! ## Layout (little-endian, except the GCM nonce which is big-endian)
//!
//! ```text
//! offset size field          meaning
//! 0      4    checksum       CRC-32 (IEEE) over bytes [4, 512) AS STORED (ciphertext if encrypted)
//! 4      4    epoch          the log's epoch when the block was written (module `log`: one per open)
//! 8      8    block_no       position of the block in the log stream; block b holds LSNs [512b, 512b+512)
//! 16     2    data_len       bytes of record data in this block (1..=472)
//! 18     2    first_record   offset in the data area of the first record that STARTS here; 0xFFFF: none
//! 20     1    flags          bit 0: data area encrypted (AES-GCM); other bits zero
//! 21     3    reserved       zero
//! 24     472  data           record frames (module `record`), then zeros up to 472
//! 496    16   trailer        encrypted: the AES-GCM tag; plain: zero
//! ```
//!
//! ```text
//!  0    4      8         16   18   20 21   24                                   496        512
//!  +----+------+---------+----+----+--+----+-------------------------------------+----------+
//!  |crc |epoch |block_no |len |1st |fl|rsv | frame ... frame | zeros              | GCM tag  |
//!  +----+------+---------+----+----+--+----+-------------------------------------+----------+
//!       <------------ GCM associated data ----><---------- encrypted ----------->
//!       <---------------------------------- covered by the CRC --------------------------->
//! ```
//!
//! The layout is the same whether the log is encrypted or not, so LSN arithmetic and the
//! space a record takes never depend on the setting (a plain log wastes the 16 trailer
//! bytes: 3% of the block), and an encrypted-vs-plain benchmark measures only the crypto.
//!
//! ## LSNs
//!
//! An LSN is a byte position in the log stream, block headers and trailers included, so
//! `block_no = lsn / 512`. Record bytes live only in data areas, so the LSN of a record
//! byte is always `512·b + 24 + k` with `k < 472`. The *end* LSN of a record is the
//! position just past its last byte, `512·b + 24 + k` with `1 ≤ k ≤ 472`: a record whose
//! last byte fills a data area ends at `512·b + 496`, and the next record starts at
//! `512·(b+1) + 24`. Every record boundary is therefore an LSN whose offset in its block
//! lies in `[24, 496]`, which [`is_boundary`] checks.
//!
//! ## Why AES-GCM (and not CTR plus a check value)
//!
//! Redo records are highly predictable (kind bytes, space ids, page numbers, offsets) and
//! recovery *writes them into pages*. With CTR an attacker who can edit the log file could
//! flip known plaintext bits (say a page number) and fix up a CRC-based check, since CRC
//! is affine; GCM's tag stops that. It also covers the header as associated data, so a
//! block moved to another position, epoch or mode fails to open. The cost is 16 bytes per
//! block, which the layout above pays in both modes, and one GHASH pass over 472 bytes.
//!
//! ## Detection order (recovery, module `recovery`)
//!
//! 1. All-zero: never written. 2. CRC over the stored bytes: torn or damaged — checked
//!    before any key is used, so damage is never mistaken for a wrong key. 3. Header
//!    fields (`block_no` must be the position read, lengths in range, flags known).
//!    4. Decrypt and verify the tag; a plain block must have a zero trailer. 5. Bytes past
//!    `data_len` must be zero.

use strongbox_keyring::cipher::{GCM_NONCE_LEN, GCM_TAG_LEN};
use strongbox_keyring::nonce_audit::{self, Kind, Mode};
use strongbox_keyring::DataKey;

use crate::Lsn;

/// Bytes in one log block.
pub const BLOCK_SIZE: usize = 512;

const CHECKSUM_OFFSET: usize = 0;
const EPOCH_OFFSET: usize = CHECKSUM_OFFSET + 4;
const BLOCK_NO_OFFSET: usize = EPOCH_OFFSET + 4;
const DATA_LEN_OFFSET: usize = BLOCK_NO_OFFSET + 8;
const FIRST_RECORD_OFFSET: usize = DATA_LEN_OFFSET + 2;
const FLAGS_OFFSET: usize = FIRST_RECORD_OFFSET + 2;
const RESERVED_OFFSET: usize = FLAGS_OFFSET + 1;
/// Bytes before the data area.
pub const HEADER_LEN: usize = RESERVED_OFFSET + 3;
/// Bytes after the data area (the GCM tag, or zeros).
pub const TRAILER_LEN: usize = GCM_TAG_LEN;
/// Offset of the trailer.
const TRAILER_OFFSET: usize = BLOCK_SIZE - TRAILER_LEN;
/// Record bytes one block holds.
pub const DATA_CAPACITY: usize = TRAILER_OFFSET - HEADER_LEN;

/// `first_record` value meaning "no record starts in this block".
const NO_RECORD: u16 = 0xFFFF;
/// Flag bit: the data area is encrypted.
const FLAG_ENCRYPTED: u8 = 1;

const _: () = assert!(HEADER_LEN == 24 && DATA_CAPACITY == 472);

/// The LSN of data byte `offset` (0..=472) of block `block_no`. `offset == 472` is the
/// end of a full block's data.
pub fn lsn_at(block_no: u64, offset: usize) -> Lsn {
    block_no * BLOCK_SIZE as u64 + (HEADER_LEN + offset) as u64
}

/// The block an LSN falls in.
pub fn block_of(lsn: Lsn) -> u64 {
    lsn / BLOCK_SIZE as u64
}

/// True if `lsn` can be a record boundary: its offset in its block lies in `[24, 496]`.
pub fn is_boundary(lsn: Lsn) -> bool {
    let in_block = (lsn % BLOCK_SIZE as u64) as usize;
    (HEADER_LEN..=TRAILER_OFFSET).contains(&in_block)
}

/// The data-area offset of a boundary LSN (see [`is_boundary`]).
pub fn data_offset(lsn: Lsn) -> usize {
    (lsn % BLOCK_SIZE as u64) as usize - HEADER_LEN
}

/// The header fields of a block, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub epoch: u32,
    pub block_no: u64,
    pub data_len: u16,
    /// Offset of the first record starting in this block, if any.
    pub first_record: Option<u16>,
    pub encrypted: bool,
}

impl BlockHeader {
    /// Writes the header fields (not the checksum) into `block`.
    pub fn write(&self, block: &mut [u8; BLOCK_SIZE]) {
        block[EPOCH_OFFSET..BLOCK_NO_OFFSET].copy_from_slice(&self.epoch.to_le_bytes());
        block[BLOCK_NO_OFFSET..DATA_LEN_OFFSET].copy_from_slice(&self.block_no.to_le_bytes());
        block[DATA_LEN_OFFSET..FIRST_RECORD_OFFSET].copy_from_slice(&self.data_len.to_le_bytes());
        let first = self.first_record.unwrap_or(NO_RECORD);
        block[FIRST_RECORD_OFFSET..FLAGS_OFFSET].copy_from_slice(&first.to_le_bytes());
        block[FLAGS_OFFSET] = if self.encrypted { FLAG_ENCRYPTED } else { 0 };
        block[RESERVED_OFFSET..HEADER_LEN].fill(0);
    }

    fn read(block: &[u8; BLOCK_SIZE]) -> Result<BlockHeader, BlockDefect> {
        let u16_at = |o: usize| u16::from_le_bytes([block[o], block[o + 1]]);
        let mut epoch = [0u8; 4];
        epoch.copy_from_slice(&block[EPOCH_OFFSET..BLOCK_NO_OFFSET]);
        let mut block_no = [0u8; 8];
        block_no.copy_from_slice(&block[BLOCK_NO_OFFSET..DATA_LEN_OFFSET]);
        let data_len = u16_at(DATA_LEN_OFFSET);
        let first = u16_at(FIRST_RECORD_OFFSET);
        let flags = block[FLAGS_OFFSET];
        if data_len == 0 || usize::from(data_len) > DATA_CAPACITY {
            return Err(BlockDefect::BadHeader("data_len out of range"));
        }
        if first != NO_RECORD && first >= data_len {
            return Err(BlockDefect::BadHeader("first_record past data_len"));
        }
        if flags & !FLAG_ENCRYPTED != 0 || block[RESERVED_OFFSET..HEADER_LEN] != [0; 3] {
            return Err(BlockDefect::BadHeader(
                "unknown flags or reserved bytes set",
            ));
        }
        Ok(BlockHeader {
            epoch: u32::from_le_bytes(epoch),
            block_no: u64::from_le_bytes(block_no),
            data_len,
            first_record: (first != NO_RECORD).then_some(first),
            encrypted: flags & FLAG_ENCRYPTED != 0,
        })
    }
}

/// Why a stored block is not a valid block (before or during decryption).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockDefect {
    /// Every byte is zero: the block was never written.
    Unwritten,
    /// The CRC over the stored bytes does not match: torn write or damage.
    ChecksumMismatch,
    /// The checksum matched but a header field is impossible.
    BadHeader(&'static str),
    /// The checksum matched but the GCM tag did not verify (or a plain block's trailer
    /// or padding is not zero): wrong key, or the block was altered and re-checksummed.
    DecryptFailed,
}

/// The data area of a block (for filling it in place).
pub fn data_mut(block: &mut [u8; BLOCK_SIZE]) -> &mut [u8] {
    &mut block[HEADER_LEN..TRAILER_OFFSET]
}

/// The data area of a block.
pub fn data(block: &[u8; BLOCK_SIZE]) -> &[u8] {
    &block[HEADER_LEN..TRAILER_OFFSET]
}

/// The 96-bit GCM nonce of a block: `epoch (4) ‖ block_no (8)`, big-endian. GCM's own
/// 32-bit block counter follows it, so the counter blocks of one block are
/// `epoch ‖ block_no ‖ 1..=31` (module `log` argues why they never repeat).
pub fn nonce(epoch: u32, block_no: u64) -> [u8; GCM_NONCE_LEN] {
    let mut nonce = [0u8; GCM_NONCE_LEN];
    nonce[..4].copy_from_slice(&epoch.to_be_bytes());
    nonce[4..].copy_from_slice(&block_no.to_be_bytes());
    nonce
}

/// Turns a plaintext block (header fields written, data filled, rest zero) into its stored
/// form: encrypts the data area when `key` is given (the header must say `encrypted`),
/// then writes the checksum.
pub fn seal(block: &mut [u8; BLOCK_SIZE], key: Option<&DataKey>) {
    debug_assert_eq!(block[FLAGS_OFFSET] & FLAG_ENCRYPTED != 0, key.is_some());
    match key {
        Some(key) => {
            let epoch = u32::from_le_bytes(
                block[EPOCH_OFFSET..BLOCK_NO_OFFSET]
                    .try_into()
                    .expect("4 bytes"),
            );
            let block_no = u64::from_le_bytes(
                block[BLOCK_NO_OFFSET..DATA_LEN_OFFSET]
                    .try_into()
                    .expect("8 bytes"),
            );
            let nonce = nonce(epoch, block_no);
            let (head, rest) = block.split_at_mut(HEADER_LEN);
            let (body, trailer) = rest.split_at_mut(DATA_CAPACITY);
            nonce_audit::record(Kind::Redo, key, Mode::Gcm, &nonce, body.len());
            let tag = key
                .gcm_seal(&nonce, &head[EPOCH_OFFSET..], body)
                .expect("472 bytes are far below GCM's limit");
            trailer.copy_from_slice(&tag);
        }
        None => block[TRAILER_OFFSET..].fill(0),
    }
    let crc = crc32fast::hash(&block[EPOCH_OFFSET..]);
    block[CHECKSUM_OFFSET..EPOCH_OFFSET].copy_from_slice(&crc.to_le_bytes());
}

/// Checks a stored block's checksum and header, without any key: steps 1–3 of the
/// detection order.
pub fn check(block: &[u8; BLOCK_SIZE]) -> Result<BlockHeader, BlockDefect> {
    if block.iter().all(|&b| b == 0) {
        return Err(BlockDefect::Unwritten);
    }
    let stored = u32::from_le_bytes(
        block[CHECKSUM_OFFSET..EPOCH_OFFSET]
            .try_into()
            .expect("4 bytes"),
    );
    if crc32fast::hash(&block[EPOCH_OFFSET..]) != stored {
        return Err(BlockDefect::ChecksumMismatch);
    }
    BlockHeader::read(block)
}

/// Decrypts a checked block in place (steps 4–5). On failure an encrypted block's data
/// area is zeroed, so no unauthenticated plaintext remains.
pub fn open(
    block: &mut [u8; BLOCK_SIZE],
    header: &BlockHeader,
    key: Option<&DataKey>,
) -> Result<(), BlockDefect> {
    if let Some(key) = key {
        let nonce = nonce(header.epoch, header.block_no);
        let mut tag = [0u8; TRAILER_LEN];
        tag.copy_from_slice(&block[TRAILER_OFFSET..]);
        let (head, rest) = block.split_at_mut(HEADER_LEN);
        key.gcm_open(
            &nonce,
            &head[EPOCH_OFFSET..],
            &mut rest[..DATA_CAPACITY],
            &tag,
        )
        .map_err(|_| BlockDefect::DecryptFailed)?;
    } else if block[TRAILER_OFFSET..].iter().any(|&b| b != 0) {
        return Err(BlockDefect::DecryptFailed);
    }
    if data(block)[usize::from(header.data_len)..]
        .iter()
        .any(|&b| b != 0)
    {
        return Err(BlockDefect::BadHeader("bytes past data_len are not zero"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DataKey {
        DataKey::generate(256).unwrap()
    }

    fn sample(encrypted: bool) -> [u8; BLOCK_SIZE] {
        let mut block = [0u8; BLOCK_SIZE];
        BlockHeader {
            epoch: 3,
            block_no: 0x0102_0304_0506_0708,
            data_len: 5,
            first_record: Some(1),
            encrypted,
        }
        .write(&mut block);
        data_mut(&mut block)[..5].copy_from_slice(b"hello");
        block
    }

    #[test]
    fn header_bytes_are_where_the_table_says() {
        let mut block = sample(false);
        seal(&mut block, None);
        let expected_crc = crc32fast::hash(&block[4..]);
        assert_eq!(&block[0..4], &expected_crc.to_le_bytes());
        assert_eq!(&block[4..8], &3u32.to_le_bytes());
        assert_eq!(&block[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&block[16..18], &[5, 0]);
        assert_eq!(&block[18..20], &[1, 0]);
        assert_eq!(&block[20..24], &[0, 0, 0, 0]);
        assert_eq!(&block[24..29], b"hello");
        assert!(block[29..].iter().all(|&b| b == 0));
        assert_eq!(lsn_at(2, 0), 1048);
        assert_eq!(lsn_at(2, DATA_CAPACITY), 1520);
        assert!(is_boundary(1048) && is_boundary(1520));
        assert!(!is_boundary(1047) && !is_boundary(1521) && !is_boundary(1024));
        assert_eq!(data_offset(1520), DATA_CAPACITY);
    }

    #[test]
    fn encrypted_round_trip_and_detection() {
        let key = key();
        let mut block = sample(true);
        seal(&mut block, Some(&key));
        assert!(!block.windows(5).any(|w| w == b"hello"));
        let header = check(&block).unwrap();
        let mut opened = block;
        open(&mut opened, &header, Some(&key)).unwrap();
        assert_eq!(&data(&opened)[..5], b"hello");

        // A wrong key passes the checksum and fails the tag.
        let mut wrong = block;
        let header = check(&wrong).unwrap();
        assert_eq!(
            open(&mut wrong, &header, Some(&DataKey::generate(256).unwrap())),
            Err(BlockDefect::DecryptFailed)
        );
        assert!(data(&wrong).iter().all(|&b| b == 0));

        // Any flipped bit fails the checksum first.
        for i in 0..BLOCK_SIZE {
            let mut damaged = block;
            damaged[i] ^= 0x10;
            assert_eq!(check(&damaged), Err(BlockDefect::ChecksumMismatch));
        }
    }

    #[test]
    fn a_header_edit_with_a_fixed_checksum_fails_the_tag() {
        let key = key();
        let mut block = sample(true);
        seal(&mut block, Some(&key));
        block[BLOCK_NO_OFFSET] ^= 1; // claim another position...
        let crc = crc32fast::hash(&block[4..]);
        block[..4].copy_from_slice(&crc.to_le_bytes()); // ...and fix the checksum
        let header = check(&block).unwrap();
        assert_eq!(
            open(&mut block, &header, Some(&key)),
            Err(BlockDefect::DecryptFailed)
        );
    }

    #[test]
    fn unwritten_and_bad_headers() {
        assert_eq!(check(&[0u8; BLOCK_SIZE]), Err(BlockDefect::Unwritten));
        let mut block = sample(false);
        block[FLAGS_OFFSET] = 0x80;
        let crc = crc32fast::hash(&block[4..]);
        block[..4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(check(&block), Err(BlockDefect::BadHeader(_))));
    }
}
