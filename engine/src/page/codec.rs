//! Encode a plaintext frame into stored bytes, and decode stored bytes back in place.
//!
//! ```text
//! encode(frame, seal, out)                  decode_in_place(buf, expected, keys)
//!   1. header: frame's type/ids/LSN +         1. checksum over buf[4..]      -> Corrupt
//!      seal's cipher/key id/version/nonce     2. header ids == expected      -> Misplaced
//!   2. body: copy [48, ps-16); trailer 0      3. header fields valid         -> BadHeader
//!   3. CTR/CBC: trailer[0..4] = check,        4. key (id, version) lookup    -> MissingKey
//!      encrypt [48, ps)                       5. decrypt; CTR/CBC check or
//!      GCM: encrypt [48, ps-16), tag->trailer    GCM tag                     -> WrongKeyOrTampered
//!   4. checksum over out[4..]                 6. zero the trailer; buf is the frame
//! ```
//!
//! The IVs, the nonce argument and what happens to the buffer on error are in the `page`
//! module doc.

use std::sync::Arc;

use strongbox_keyring::nonce_audit::{self, Kind, Mode};
use strongbox_keyring::{Algorithm, DataKey};

use super::error::PageError;
use super::header::{
    frame_fields, PageHeader, PageId, PageSize, AUTHENTICATED_HEADER, BODY_START, CHECKSUM_FIELD,
    HEADER_LEN, TRAILER_LEN,
};

/// Bytes of the CTR/CBC check value at the start of the trailer (a CRC-32).
const CHECK_LEN: usize = 4;

/// How [`encode`] should store a page.
#[derive(Debug, Clone, Copy)]
pub enum Seal<'a> {
    /// Unencrypted: the body is stored as is, the trailer is zero.
    Plain,
    /// Encrypted with `key`, the data key of generation `key_version` of the tablespace
    /// whose keyring key id is `key_id`.
    Encrypted {
        key: &'a DataKey,
        algorithm: Algorithm,
        key_id: u32,
        key_version: u32,
        /// Must never repeat for the same page number under `key` (see the module doc).
        write_nonce: u64,
    },
}

/// Where [`decode_in_place`] finds data keys.
///
/// The tablespace layer implements this over its unwrapped data-key generations.
pub trait PageKeys {
    /// The data key of generation `key_version` under keyring key `key_id`, if known.
    fn data_key(&self, key_id: u32, key_version: u32) -> Option<Arc<DataKey>>;
}

/// No keys at all: decoding an encrypted page reports [`PageError::MissingKey`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKeys;

impl PageKeys for NoKeys {
    fn data_key(&self, _key_id: u32, _key_version: u32) -> Option<Arc<DataKey>> {
        None
    }
}

/// Encodes the plaintext `frame` into `out`, the IO buffer of the same size.
///
/// `frame`'s header must carry the page type, space id, page number and LSN (upper layers
/// set them); its codec-owned header fields and its trailer are ignored. `frame` is not
/// modified. On error `out` holds no plaintext body bytes.
pub fn encode(frame: &[u8], seal: Seal<'_>, out: &mut [u8]) -> Result<(), PageError> {
    let size = page_size_of(out.len())?;
    if frame.len() != out.len() {
        return Err(PageError::SizeMismatch {
            expected: out.len(),
            got: frame.len(),
        });
    }
    let header = sealed_header(frame, &seal)?;
    let (out_header, sealed) = split_page(out)?;
    header.write_into(out_header);
    let body = size.body();
    let (out_body, trailer) = split_trailer(sealed)?;
    out_body.copy_from_slice(&frame[body]);
    trailer.fill(0);
    if let Seal::Encrypted { key, algorithm, .. } = seal {
        if let Err(error) = seal_body(key, algorithm, &header, out) {
            out[BODY_START..].fill(0);
            return Err(error);
        }
    }
    write_checksum(out);
    Ok(())
}

/// Verifies and decrypts the stored page in `buf`, which was read from `expected`.
///
/// On success `buf` holds the plaintext frame (header as stored, trailer zeroed) and the
/// decoded header is returned. An intact *unencrypted* page also succeeds: whether that is
/// acceptable (a tablespace being encrypted in the background holds both kinds) is the
/// caller's policy, so check `header.cipher`; otherwise an attacker could replace an
/// encrypted page with a plain one. On error `buf` never holds plaintext of an encrypted page:
/// errors found before decryption (`Corrupt`, `Misplaced`, `BadHeader`, `MissingKey`, size
/// errors) leave it as read; `WrongKeyOrTampered` zeroes bytes [`BODY_START`, len).
pub fn decode_in_place(
    buf: &mut [u8],
    expected: PageId,
    keys: &dyn PageKeys,
) -> Result<PageHeader, PageError> {
    page_size_of(buf.len())?;
    verify_checksum(buf, expected)?;
    let header = read_header(buf, expected)?;
    match header.cipher {
        None => check_plain_trailer(buf, &header)?,
        Some(algorithm) => {
            let key = find_key(keys, &header, expected)?;
            if open_body(&key, algorithm, &header, buf).is_err() {
                buf[BODY_START..].fill(0);
                return Err(PageError::WrongKeyOrTampered {
                    page: expected,
                    key_id: header.key_id,
                    key_version: header.key_version,
                    algorithm,
                });
            }
        }
    }
    let (_, trailer) = split_trailer(buf)?;
    trailer.fill(0);
    Ok(header)
}

/// True when every byte is zero: a page that was allocated but never written. Such a page
/// fails [`decode_in_place`] as `Corrupt` (the CRC-32 of zeros is not zero); the tablespace
/// layer decides whether that is expected.
pub fn is_all_zero(buf: &[u8]) -> bool {
    // OR-folding fixed chunks vectorizes; a byte-wise `all` with early exit does not.
    buf.chunks(64)
        .all(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

fn find_key(
    keys: &dyn PageKeys,
    header: &PageHeader,
    page: PageId,
) -> Result<Arc<DataKey>, PageError> {
    keys.data_key(header.key_id, header.key_version)
        .ok_or(PageError::MissingKey {
            page,
            key_id: header.key_id,
            key_version: header.key_version,
        })
}

fn page_size_of(len: usize) -> Result<PageSize, PageError> {
    PageSize::of_buffer(len).ok_or(PageError::UnsupportedPageSize { got: len })
}

/// The header to store: the frame's own fields plus the seal's.
fn sealed_header(frame: &[u8], seal: &Seal<'_>) -> Result<PageHeader, PageError> {
    let (frame_header, _) = frame
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(PageError::UnsupportedPageSize { got: frame.len() })?;
    let page = PageId::stored_in(frame_header);
    let bad = |reason| PageError::BadHeader { page, reason };
    let mut header = frame_fields(frame_header).map_err(bad)?;
    if let Seal::Encrypted {
        algorithm,
        key_id,
        key_version,
        write_nonce,
        ..
    } = *seal
    {
        header.cipher = Some(algorithm);
        header.key_id = key_id;
        header.key_version = key_version;
        header.write_nonce = write_nonce;
    }
    header.check().map_err(bad)?;
    Ok(header)
}

/// Splits a page into its header and everything after it ([48, ps): body and trailer).
fn split_page(page: &mut [u8]) -> Result<(&mut [u8; HEADER_LEN], &mut [u8]), PageError> {
    let got = page.len();
    page.split_first_chunk_mut::<HEADER_LEN>()
        .ok_or(PageError::UnsupportedPageSize { got })
}

/// Splits off the trailer from the end of `bytes`.
fn split_trailer(bytes: &mut [u8]) -> Result<(&mut [u8], &mut [u8; TRAILER_LEN]), PageError> {
    let got = bytes.len();
    bytes
        .split_last_chunk_mut::<TRAILER_LEN>()
        .ok_or(PageError::UnsupportedPageSize { got })
}

/// CTR counter block of the first body block: page_no (BE) ‖ write_nonce (BE) ‖ 0u32.
/// The low 32 bits count blocks; a page has at most 4096, so they never carry into the
/// nonce.
fn ctr_iv(header: &PageHeader) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..12].copy_from_slice(&gcm_nonce(header));
    iv
}

/// CBC IV: the encrypted CTR counter block (ESSIV-like), unpredictable without the key.
fn cbc_iv(key: &DataKey, header: &PageHeader) -> [u8; 16] {
    let mut iv = ctr_iv(header);
    key.encrypt_block(&mut iv);
    iv
}

/// GCM nonce: page_no (BE) ‖ write_nonce (BE).
fn gcm_nonce(header: &PageHeader) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&header.page_no.to_be_bytes());
    nonce[4..].copy_from_slice(&header.write_nonce.to_be_bytes());
    nonce
}

/// The CTR/CBC post-decrypt check: CRC-32 of header[4..48] ‖ body plaintext.
fn check_value(page: &[u8]) -> u32 {
    let body_end = page.len() - TRAILER_LEN;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&page[AUTHENTICATED_HEADER]);
    crc.update(&page[BODY_START..body_end]);
    crc.finalize()
}

/// Encrypts a page whose header, body and zeroed trailer are in place.
fn seal_body(
    key: &DataKey,
    algorithm: Algorithm,
    header: &PageHeader,
    page: &mut [u8],
) -> Result<(), PageError> {
    let got = page.len();
    let length_error = |_| PageError::UnsupportedPageSize { got };
    match algorithm {
        Algorithm::AesCtr | Algorithm::AesCbc => {
            let check = check_value(page).to_le_bytes();
            let (_, sealed) = split_page(page)?;
            let (_, trailer) = split_trailer(sealed)?;
            trailer[..CHECK_LEN].copy_from_slice(&check);
            if algorithm == Algorithm::AesCtr {
                let iv = ctr_iv(header);
                nonce_audit::record(Kind::Page, key, Mode::Ctr, &iv, sealed.len());
                key.ctr_apply(&iv, sealed);
            } else {
                let essiv_input = ctr_iv(header);
                nonce_audit::record(Kind::Page, key, Mode::Cbc, &essiv_input, sealed.len());
                key.cbc_encrypt(&cbc_iv(key, header), sealed)
                    .map_err(length_error)?;
            }
        }
        Algorithm::AesGcm => {
            let (head, sealed) = split_page(page)?;
            let (body, trailer) = split_trailer(sealed)?;
            let aad = &head[AUTHENTICATED_HEADER];
            let nonce = gcm_nonce(header);
            nonce_audit::record(Kind::Page, key, Mode::Gcm, &nonce, body.len());
            *trailer = key.gcm_seal(&nonce, aad, body).map_err(length_error)?;
        }
    }
    Ok(())
}

/// The decrypted page did not pass its check or tag.
struct Unsealed;

/// Decrypts a page in place and verifies it. On `Err` the body may hold garbage or
/// unauthenticated plaintext; the caller must wipe it.
fn open_body(
    key: &DataKey,
    algorithm: Algorithm,
    header: &PageHeader,
    page: &mut [u8],
) -> Result<(), Unsealed> {
    let (head, sealed) = split_page(page).map_err(|_| Unsealed)?;
    match algorithm {
        Algorithm::AesCtr => key.ctr_apply(&ctr_iv(header), sealed),
        Algorithm::AesCbc => key
            .cbc_decrypt(&cbc_iv(key, header), sealed)
            .map_err(|_| Unsealed)?,
        Algorithm::AesGcm => {
            let (body, trailer) = split_trailer(sealed).map_err(|_| Unsealed)?;
            let tag = *trailer;
            return key
                .gcm_open(&gcm_nonce(header), &head[AUTHENTICATED_HEADER], body, &tag)
                .map_err(|_| Unsealed);
        }
    }
    verify_check(page)
}

/// The CTR/CBC trailer of a decrypted page must be its check value followed by zeros.
fn verify_check(page: &[u8]) -> Result<(), Unsealed> {
    let computed = check_value(page).to_le_bytes();
    let trailer = &page[page.len() - TRAILER_LEN..];
    let (stored, rest) = trailer.split_at(CHECK_LEN);
    if stored == computed && rest.iter().all(|&b| b == 0) {
        Ok(())
    } else {
        Err(Unsealed)
    }
}

/// CRC-32 of the stored bytes after the checksum field.
fn checksum_of(page: &[u8]) -> u32 {
    crc32fast::hash(&page[CHECKSUM_FIELD.end..])
}

fn write_checksum(page: &mut [u8]) {
    let checksum = checksum_of(page);
    page[CHECKSUM_FIELD].copy_from_slice(&checksum.to_le_bytes());
}

/// The checksum recorded in a stored page and the one its bytes have now: the codec's
/// first check (over the stored — for an encrypted space, encrypted — bytes, so it needs no
/// key). `None` for a buffer too short to hold the checksum field.
pub fn stored_checksums(page: &[u8]) -> Option<(u32, u32)> {
    let recorded = page.get(CHECKSUM_FIELD)?;
    let recorded = u32::from_le_bytes(recorded.try_into().ok()?);
    Some((recorded, checksum_of(page)))
}

fn verify_checksum(page: &[u8], expected: PageId) -> Result<(), PageError> {
    let (stored, computed) = stored_checksums(page).ok_or(PageError::SizeMismatch {
        expected: HEADER_LEN,
        got: page.len(),
    })?;
    if stored == computed {
        return Ok(());
    }
    Err(PageError::Corrupt {
        page: expected,
        stored,
        computed,
    })
}

/// Position first (a misplaced page's other fields are not ours to judge), then fields.
fn read_header(page: &[u8], expected: PageId) -> Result<PageHeader, PageError> {
    let (head, _) = page
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(PageError::UnsupportedPageSize { got: page.len() })?;
    let found = PageId::stored_in(head);
    if found != expected {
        return Err(PageError::Misplaced { expected, found });
    }
    PageHeader::read(head)
}

fn check_plain_trailer(page: &[u8], header: &PageHeader) -> Result<(), PageError> {
    if page[page.len() - TRAILER_LEN..].iter().all(|&b| b == 0) {
        return Ok(());
    }
    Err(PageError::BadHeader {
        page: header.page_id(),
        reason: "unencrypted page with a nonzero trailer",
    })
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;

    use super::*;
    use crate::page::header::PageType;

    /// One key per size, made once: key generation is not what these tests are about.
    static KEY_128: LazyLock<Arc<DataKey>> =
        LazyLock::new(|| Arc::new(DataKey::generate(128).unwrap()));
    static KEY_256: LazyLock<Arc<DataKey>> =
        LazyLock::new(|| Arc::new(DataKey::generate(256).unwrap()));
    static OTHER_256: LazyLock<Arc<DataKey>> =
        LazyLock::new(|| Arc::new(DataKey::generate(256).unwrap()));

    fn key(bits: usize) -> Arc<DataKey> {
        match bits {
            128 => KEY_128.clone(),
            _ => KEY_256.clone(),
        }
    }

    /// How a test page is stored: plain, or an algorithm with a key size.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Mode {
        Plain,
        Encrypted(Algorithm, usize),
    }

    fn all_modes() -> Vec<Mode> {
        let mut modes = vec![Mode::Plain];
        for algorithm in Algorithm::ALL {
            for bits in [128, 256] {
                modes.push(Mode::Encrypted(algorithm, bits));
            }
        }
        modes
    }

    fn encrypted_modes() -> Vec<Mode> {
        all_modes()
            .into_iter()
            .filter(|m| *m != Mode::Plain)
            .collect()
    }

    /// A keyring holding exactly one data key under (`key_id`, `key_version`).
    struct OneKey {
        key_id: u32,
        key_version: u32,
        key: Arc<DataKey>,
    }

    impl PageKeys for OneKey {
        fn data_key(&self, key_id: u32, key_version: u32) -> Option<Arc<DataKey>> {
            (key_id == self.key_id && key_version == self.key_version).then(|| self.key.clone())
        }
    }

    /// Everything that varies between test pages.
    #[derive(Debug, Clone, Copy)]
    struct Case {
        size: PageSize,
        mode: Mode,
        page: PageId,
        lsn: u64,
        key_id: u32,
        key_version: u32,
        nonce: u64,
        seed: u64,
    }

    impl Case {
        fn new(size: PageSize, mode: Mode) -> Case {
            Case {
                size,
                mode,
                page: PageId::new(3, 17),
                lsn: 0x1234_5678,
                key_id: 5,
                key_version: 2,
                nonce: 99,
                seed: 7,
            }
        }

        fn keys(&self) -> OneKey {
            let bits = match self.mode {
                Mode::Encrypted(_, bits) => bits,
                Mode::Plain => 256,
            };
            OneKey {
                key_id: self.key_id,
                key_version: self.key_version,
                key: key(bits),
            }
        }

        /// A plaintext frame: header set as an upper layer would, pseudo-random body.
        fn frame(&self) -> Vec<u8> {
            let mut frame = vec![0u8; self.size.len()];
            let header = PageHeader::new(PageType::BtreeLeaf, self.page, self.lsn);
            header.write(&mut frame);
            let mut state = self.seed;
            for byte in &mut frame[self.size.body()] {
                // splitmix64: cheap, deterministic, and every byte differs from its neighbours.
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                *byte = (z ^ (z >> 31)) as u8;
            }
            frame
        }

        fn encode(&self, frame: &[u8]) -> Vec<u8> {
            let key = self.keys().key;
            let seal = match self.mode {
                Mode::Plain => Seal::Plain,
                Mode::Encrypted(algorithm, _) => Seal::Encrypted {
                    key: &key,
                    algorithm,
                    key_id: self.key_id,
                    key_version: self.key_version,
                    write_nonce: self.nonce,
                },
            };
            let mut out = vec![0xAA; frame.len()];
            encode(frame, seal, &mut out).unwrap();
            out
        }

        fn decode(&self, stored: &[u8]) -> (Result<PageHeader, PageError>, Vec<u8>) {
            let mut buf = stored.to_vec();
            let result = decode_in_place(&mut buf, self.page, &self.keys());
            (result, buf)
        }

        fn algorithm(&self) -> Option<Algorithm> {
            match self.mode {
                Mode::Plain => None,
                Mode::Encrypted(algorithm, _) => Some(algorithm),
            }
        }
    }

    fn recompute_checksum(page: &mut [u8]) {
        let crc = crc32fast::hash(&page[4..]);
        page[..4].copy_from_slice(&crc.to_le_bytes());
    }

    fn set_u32(page: &mut [u8], offset: usize, value: u32) {
        page[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn set_u64(page: &mut [u8], offset: usize, value: u64) {
        page[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }

    const PAGE_NO_AT: usize = 12;
    const SPACE_ID_AT: usize = 8;
    const LSN_AT: usize = 16;

    fn wrong_key_or_tampered(case: &Case) -> PageError {
        PageError::WrongKeyOrTampered {
            page: case.page,
            key_id: case.key_id,
            key_version: case.key_version,
            algorithm: case.algorithm().unwrap(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every mode × key size × page size: decode(encode(frame)) gives back the frame's
        /// body and the header fields, and the encrypted body differs from the plaintext.
        #[test]
        fn round_trip_every_mode_and_page_size(
            seed: u64, space_id: u32, page_no: u32, lsn: u64, nonce: u64,
            key_id in 1u32.., key_version in 1u32..,
        ) {
            for size in PageSize::ALL {
                for mode in all_modes() {
                    let case = Case {
                        size, mode, page: PageId::new(space_id, page_no), lsn,
                        key_id, key_version, nonce, seed,
                    };
                    let frame = case.frame();
                    let stored = case.encode(&frame);
                    let body = size.body();
                    if mode != Mode::Plain {
                        prop_assert_ne!(&stored[body.clone()], &frame[body.clone()]);
                    }
                    let (result, buf) = case.decode(&stored);
                    let header = result.unwrap();
                    prop_assert_eq!(&buf[body.clone()], &frame[body.clone()]);
                    prop_assert_eq!(&buf[body.end..], &[0u8; TRAILER_LEN][..]);
                    prop_assert_eq!(&buf[..HEADER_LEN], &stored[..HEADER_LEN]);
                    prop_assert_eq!(header.page_id(), case.page);
                    prop_assert_eq!(header.page_type, PageType::BtreeLeaf);
                    prop_assert_eq!(header.lsn, lsn);
                    prop_assert_eq!(header.cipher, case.algorithm());
                    let (id, version, n) = match mode {
                        Mode::Plain => (0, 0, 0),
                        Mode::Encrypted(..) => (key_id, key_version, nonce),
                    };
                    prop_assert_eq!((header.key_id, header.key_version, header.write_nonce),
                                    (id, version, n));
                    prop_assert_eq!(header.checksum, crc32fast::hash(&stored[4..]));
                }
            }
        }

        /// Any single-bit flip anywhere in a stored page (checksum field included) is
        /// caught by the checksum over the stored bytes, in every mode and page size.
        #[test]
        fn any_single_bit_flip_is_corrupt(position in 0.0f64..1.0, seed: u64) {
            for size in PageSize::ALL {
                for mode in all_modes() {
                    let case = Case { seed, ..Case::new(size, mode) };
                    let mut stored = case.encode(&case.frame());
                    let bit = ((size.len() * 8) as f64 * position) as usize;
                    stored[bit / 8] ^= 1 << (bit % 8);
                    let (result, buf) = case.decode(&stored);
                    prop_assert!(
                        matches!(result, Err(PageError::Corrupt { page, .. }) if page == case.page),
                        "{:?} bit {} -> {:?}", mode, bit, result
                    );
                    prop_assert_eq!(buf, stored, "a corrupt page is left as read");
                }
            }
        }

        /// An attacker who flips a bit and recomputes the checksum is caught by the
        /// post-decrypt check or the GCM tag (or, in the header, by the position and
        /// header checks) for every encrypted mode; a body flip is WrongKeyOrTampered.
        #[test]
        fn flip_with_recomputed_checksum_is_detected(position in 0.0f64..1.0, seed: u64) {
            let size = PageSize::ALL[(seed % 5) as usize];
            for mode in encrypted_modes() {
                let case = Case { seed, ..Case::new(size, mode) };
                let mut stored = case.encode(&case.frame());
                let first_bit = CHECKSUM_FIELD.end * 8;
                let bit = first_bit + (((size.len() * 8 - first_bit) as f64) * position) as usize;
                stored[bit / 8] ^= 1 << (bit % 8);
                recompute_checksum(&mut stored);
                let (result, buf) = case.decode(&stored);
                prop_assert!(result.is_err(), "{:?} bit {} accepted", mode, bit);
                if bit >= BODY_START * 8 {
                    prop_assert_eq!(result, Err(wrong_key_or_tampered(&case)));
                    prop_assert!(buf[BODY_START..].iter().all(|&b| b == 0));
                }
            }
        }

        /// No input bytes make the decoder panic, even with a valid checksum and the
        /// expected position in the header.
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 4096),
            header in proptest::collection::vec(any::<u8>(), HEADER_LEN),
        ) {
            let mut page = bytes;
            page[..HEADER_LEN].copy_from_slice(&header);
            let expected = PageId::new(1, 2);
            let _ = decode_in_place(&mut page.clone(), expected, &NoKeys);
            set_u32(&mut page, SPACE_ID_AT, 1);
            set_u32(&mut page, PAGE_NO_AT, 2);
            recompute_checksum(&mut page);
            let case = Case::new(PageSize::ALL[0], Mode::Encrypted(Algorithm::AesCtr, 128));
            let _ = decode_in_place(&mut page.clone(), expected, &NoKeys);
            let _ = decode_in_place(&mut page, expected, &case.keys());
        }
    }

    #[test]
    fn rewriting_a_page_with_a_new_nonce_changes_every_ciphertext_block() {
        for mode in encrypted_modes() {
            let first = Case::new(PageSize::DEFAULT, mode);
            let second = Case {
                nonce: first.nonce + 1,
                ..first
            };
            let frame = first.frame();
            let (a, b) = (first.encode(&frame), second.encode(&frame));
            let body = PageSize::DEFAULT.body();
            assert_ne!(&a[body.clone()], &frame[body.clone()], "{mode:?}");
            for (block_a, block_b) in a[BODY_START..].chunks(16).zip(b[BODY_START..].chunks(16)) {
                assert_ne!(block_a, block_b, "{mode:?}: a block repeated across writes");
            }
            assert_eq!(first.decode(&a).1[body.clone()], second.decode(&b).1[body]);
        }
    }

    #[test]
    fn a_different_key_under_the_same_id_is_wrong_key() {
        for algorithm in Algorithm::ALL {
            let case = Case::new(PageSize::DEFAULT, Mode::Encrypted(algorithm, 256));
            let stored = case.encode(&case.frame());
            let imposter = OneKey {
                key: OTHER_256.clone(),
                ..case.keys()
            };
            let mut buf = stored.clone();
            let result = decode_in_place(&mut buf, case.page, &imposter);
            assert_eq!(result, Err(wrong_key_or_tampered(&case)));
            assert!(
                buf[BODY_START..].iter().all(|&b| b == 0),
                "no garbage handed out"
            );
            assert_eq!(buf[..BODY_START], stored[..BODY_START]);
            let shown = result.unwrap_err().to_string();
            assert!(shown.contains("space 3 page 17") && shown.contains("key id 5 version 2"));
        }
    }

    #[test]
    fn a_key_the_keyring_lacks_is_missing_key() {
        for algorithm in Algorithm::ALL {
            let case = Case::new(PageSize::DEFAULT, Mode::Encrypted(algorithm, 128));
            let stored = case.encode(&case.frame());
            let newer = Case {
                key_version: case.key_version + 1,
                ..case
            };
            for keys in [&newer.keys() as &dyn PageKeys, &NoKeys] {
                let mut buf = stored.clone();
                let result = decode_in_place(&mut buf, case.page, keys);
                assert_eq!(
                    result,
                    Err(PageError::MissingKey {
                        page: case.page,
                        key_id: 5,
                        key_version: 2
                    })
                );
                assert_eq!(buf, stored, "left as read (ciphertext)");
            }
        }
    }

    #[test]
    fn a_page_copied_to_another_position_is_misplaced() {
        for mode in all_modes() {
            let case = Case::new(PageSize::DEFAULT, mode);
            let stored = case.encode(&case.frame());
            for elsewhere in [PageId::new(3, 18), PageId::new(4, 17)] {
                let mut buf = stored.clone();
                let result = decode_in_place(&mut buf, elsewhere, &case.keys());
                assert_eq!(
                    result,
                    Err(PageError::Misplaced {
                        expected: elsewhere,
                        found: case.page
                    })
                );
                assert_eq!(buf, stored);
            }
        }
    }

    /// An attacker edits the header to match the new position (or LSN) and recomputes the
    /// checksum: the IV/nonce, the CTR/CBC check and the GCM associated data all bind
    /// the header, so decryption fails.
    #[test]
    fn a_header_edited_to_fit_is_wrong_key_or_tampered() {
        type Edit = fn(&mut [u8]);
        let edits: [(&str, PageId, Edit); 3] = [
            ("page_no", PageId::new(3, 18), |p| {
                set_u32(p, PAGE_NO_AT, 18)
            }),
            ("space_id", PageId::new(4, 17), |p| {
                set_u32(p, SPACE_ID_AT, 4)
            }),
            ("lsn", PageId::new(3, 17), |p| set_u64(p, LSN_AT, 1)),
        ];
        for mode in encrypted_modes() {
            for (what, moved_to, edit) in edits {
                let case = Case::new(PageSize::DEFAULT, mode);
                let mut stored = case.encode(&case.frame());
                edit(&mut stored);
                recompute_checksum(&mut stored);
                let moved = Case {
                    page: moved_to,
                    ..case
                };
                let (result, _) = moved.decode(&stored);
                assert_eq!(
                    result,
                    Err(wrong_key_or_tampered(&moved)),
                    "{mode:?} {what}"
                );
            }
        }
    }

    #[test]
    fn an_all_zero_page_is_corrupt_and_detected_as_never_written() {
        for size in PageSize::ALL {
            let mut page = vec![0u8; size.len()];
            assert!(is_all_zero(&page));
            let result = decode_in_place(&mut page, PageId::new(1, 1), &NoKeys);
            assert!(
                matches!(result, Err(PageError::Corrupt { stored: 0, computed, .. }) if computed != 0)
            );
            page[size.len() - 1] = 1;
            assert!(!is_all_zero(&page));
        }
        assert!(is_all_zero(&[]));
        assert!(!is_all_zero(&[0, 0, 0, 1]));
    }

    /// Pins the IV derivation to the module doc by recomputing each mode with the raw
    /// cipher operations.
    #[test]
    fn ivs_follow_the_documented_derivation() {
        let case = Case {
            page: PageId::new(3, 0x0102_0304),
            nonce: 0x1112_1314_1516_1718,
            ..Case::new(PageSize::ALL[0], Mode::Plain)
        };
        let frame = case.frame();
        let counter0: [u8; 16] = [
            1, 2, 3, 4, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0, 0, 0, 0,
        ];
        let key = key(128);
        for algorithm in Algorithm::ALL {
            let case = Case {
                mode: Mode::Encrypted(algorithm, 128),
                ..case
            };
            let stored = case.encode(&frame);
            let mut expected = stored[..BODY_START].to_vec();
            let mut sealed = frame[BODY_START..].to_vec();
            let trailer_at = sealed.len() - TRAILER_LEN;
            match algorithm {
                Algorithm::AesCtr | Algorithm::AesCbc => {
                    let mut crc = crc32fast::Hasher::new();
                    crc.update(&stored[4..BODY_START]);
                    crc.update(&sealed[..trailer_at]);
                    sealed[trailer_at..trailer_at + 4]
                        .copy_from_slice(&crc.finalize().to_le_bytes());
                    if algorithm == Algorithm::AesCtr {
                        key.ctr_apply(&counter0, &mut sealed);
                    } else {
                        let mut iv = counter0;
                        key.encrypt_block(&mut iv);
                        key.cbc_encrypt(&iv, &mut sealed).unwrap();
                    }
                }
                Algorithm::AesGcm => {
                    let nonce: [u8; 12] = counter0[..12].try_into().unwrap();
                    let (body, trailer) = sealed.split_at_mut(trailer_at);
                    let tag = key.gcm_seal(&nonce, &stored[4..BODY_START], body).unwrap();
                    trailer.copy_from_slice(&tag);
                }
            }
            expected.extend_from_slice(&sealed);
            assert_eq!(stored[4..], expected[4..], "{algorithm}");
        }
    }

    #[test]
    fn encode_overwrites_stale_codec_fields_in_the_frame() {
        // A frame straight from decode still carries the stored cipher, key and nonce;
        // re-encoding it plain (or with a new nonce) must not inherit them.
        let case = Case::new(PageSize::DEFAULT, Mode::Encrypted(Algorithm::AesGcm, 256));
        let (result, frame) = case.decode(&case.encode(&case.frame()));
        result.unwrap();
        let plain = Case {
            mode: Mode::Plain,
            ..case
        };
        let (result, buf) = plain.decode(&plain.encode(&frame));
        assert_eq!(result.unwrap().cipher, None);
        assert_eq!(buf[case.size.body()], case.frame()[case.size.body()]);
        let next = Case { nonce: 100, ..case };
        let (result, _) = next.decode(&next.encode(&frame));
        assert_eq!(result.unwrap().write_nonce, 100);
    }

    #[test]
    fn encode_rejects_bad_sizes_and_seals() {
        let case = Case::new(PageSize::DEFAULT, Mode::Plain);
        let frame = case.frame();
        let mut short = vec![0u8; 8192];
        assert_eq!(
            encode(&frame, Seal::Plain, &mut short),
            Err(PageError::SizeMismatch {
                expected: 8192,
                got: 16384
            })
        );
        let mut odd = vec![0u8; 5000];
        assert_eq!(
            encode(&odd.clone(), Seal::Plain, &mut odd),
            Err(PageError::UnsupportedPageSize { got: 5000 })
        );
        assert_eq!(
            decode_in_place(&mut odd, case.page, &NoKeys),
            Err(PageError::UnsupportedPageSize { got: 5000 })
        );

        let mut out = vec![0u8; frame.len()];
        let seal = |key_id, key_version| Seal::Encrypted {
            key: &KEY_128,
            algorithm: Algorithm::AesCtr,
            key_id,
            key_version,
            write_nonce: 1,
        };
        let bad = |reason| {
            Err(PageError::BadHeader {
                page: case.page,
                reason,
            })
        };
        assert_eq!(
            encode(&frame, seal(5, 0), &mut out),
            bad("encrypted page with key version 0")
        );
        assert_eq!(
            encode(&frame, seal(0, 1), &mut out),
            bad("encrypted page with key id 0")
        );
        let mut unknown_type = frame.clone();
        unknown_type[4] = 200;
        assert_eq!(
            encode(&unknown_type, Seal::Plain, &mut out),
            bad("unknown page type")
        );
    }

    #[test]
    fn a_plain_page_with_a_nonzero_trailer_is_rejected() {
        let case = Case::new(PageSize::DEFAULT, Mode::Plain);
        let mut stored = case.encode(&case.frame());
        *stored.last_mut().unwrap() = 1;
        recompute_checksum(&mut stored);
        let (result, _) = case.decode(&stored);
        assert_eq!(
            result,
            Err(PageError::BadHeader {
                page: case.page,
                reason: "unencrypted page with a nonzero trailer"
            })
        );
    }

    #[test]
    fn plain_pages_store_the_body_in_the_clear() {
        let case = Case::new(PageSize::DEFAULT, Mode::Plain);
        let frame = case.frame();
        let stored = case.encode(&frame);
        let body = case.size.body();
        assert_eq!(stored[body.clone()], frame[body.clone()]);
        assert_eq!(stored[body.end..], [0u8; TRAILER_LEN]);
        assert_eq!(stored[24..48], [0u8; 24], "no key id, version, nonce");
    }
}
