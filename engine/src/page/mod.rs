//! Pages: the on-disk page header and the page codec.
//!
//! This module is the ONE place where a plaintext buffer-pool frame becomes stored bytes
//! and back (DESIGN §2 steps 3–4, §3 "encrypt only at the IO boundary"):
//!
//! ```text
//!  buffer pool frame (plaintext)                     stored page (IO buffer)
//! +--------+--------------------------+-------+     +--------+---------------------------+
//! | header | body                     | 0...0 | ==> | header | body + trailer, encrypted |
//! +--------+--------------------------+-------+     +--------+---------------------------+
//!  0       48                   ps-16    ps   encode  checksum over [4, ps) of these bytes
//!                                            <== decode_in_place (checksum, then decrypt)
//! ```
//!
//! * `header.rs` — the byte layout table, [`PageSize`], [`PageId`], [`PageType`], the typed
//!   [`PageHeader`], and [`init_frame`] for upper layers starting a fresh page.
//! * `codec.rs` — [`encode`], [`decode_in_place`], [`Seal`], [`PageKeys`].
//! * `error.rs` — [`PageError`].
//!
//! # IVs and nonces
//!
//! All three derive from `page_no` and `write_nonce` (both big-endian here, unlike the
//! little-endian header fields, because the CTR counter is a big-endian integer):
//!
//! ```text
//! CTR  counter block for body block i:   page_no(4) ‖ write_nonce(8) ‖ i(4)   i < 4096
//! CBC  IV:                          AES_K(page_no(4) ‖ write_nonce(8) ‖ 0(4))
//! GCM  nonce (96 bits):                  page_no(4) ‖ write_nonce(8)
//!      associated data:                  header bytes [4, 48)
//! ```
//!
//! **Why no nonce repeats under a key.** Each data key belongs to exactly one tablespace,
//! so `space_id` need not be in the IV. The caller guarantees that a pair
//! `(page_no, write_nonce)` is sealed at most once under a data key (e.g. a per-tablespace
//! write counter that is persisted ahead of use). Then every 128-bit block the key ever
//! encrypts as a counter is distinct:
//!
//! ```text
//!   write (16 KiB)     counter blocks if CTR                 or if GCM (J0 = nonce ‖ 1)
//!   page 7, nonce 41   07 ‖ 41 ‖ 0 .. 07 ‖ 41 ‖ 1020         07 ‖ 41 ‖ 1 .. 07 ‖ 41 ‖ 1021
//!   page 7, nonce 42   07 ‖ 42 ‖ 0 ..                        (one mode per write, never both)
//!   page 8, nonce 42   08 ‖ 42 ‖ 0 ..
//! ```
//!
//! The block counter `i` lives in the low 32 bits and a 64 KiB page has 4093 body blocks,
//! so it never carries into the nonce. Writing the same page twice uses two nonces and so
//! gives unrelated ciphertext. The CBC IV is the encryption of a counter block that no
//! write ever uses as a CTR/GCM counter (nonces are not reused), so it is unpredictable to
//! anyone without the key, as CBC requires.
//!
//! # Detection
//!
//! 1. The CRC-32 over the stored bytes catches damage (every single-bit error, and all but
//!    2^-32 of random damage) before any key is touched: [`PageError::Corrupt`].
//! 2. A page whose header names another position is [`PageError::Misplaced`].
//! 3. After decryption, GCM verifies its tag; CTR/CBC compare a CRC-32 of header[4..48] ‖
//!    body plaintext stored encrypted in the trailer. Failure is
//!    [`PageError::WrongKeyOrTampered`], naming the key id and version.
//!
//! **The CTR/CBC check is not a MAC.** It reliably catches a wrong key, a page copied to
//! another position or tablespace, and blind edits. It does not stop an attacker who knows
//! the plaintext: CTR is malleable and CRC-32 is affine, so flipping chosen plaintext bits
//! and the matching check bits goes unnoticed. Tables that need integrity against a
//! deliberate attacker should use `aes_gcm`, whose tag covers the body and header[4..48].
//! Neither mode stops a whole stored page being replaced by an older intact copy of the
//! same page (a rollback), nor by an unencrypted page: the caller checks the returned
//! header's `cipher` against the tablespace's policy.
//!
//! # On error
//!
//! [`decode_in_place`] never leaves plaintext of an encrypted page in the buffer when it
//! fails: errors found before decryption leave the stored bytes (ciphertext) as read;
//! a failed check or tag zeroes `[BODY_START, page_size)`. Nothing here panics on any
//! input bytes.

mod codec;
mod error;
pub(crate) mod header;

pub use codec::{decode_in_place, encode, is_all_zero, stored_checksums, NoKeys, PageKeys, Seal};
pub use error::PageError;
pub use header::{
    body_end, init_frame, logged_ranges, read_page_lsn, read_page_no, write_page_lsn,
    InvalidPageSize, PageHeader, PageId, PageSize, PageType, AUTHENTICATED_HEADER, BODY_START,
    HEADER_LEN, PAGE_LSN, TRAILER_LEN,
};
