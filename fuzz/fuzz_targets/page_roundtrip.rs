//! Fuzz target `page_roundtrip`: a frame made from the input is sealed by `page::encode`
//! (plain, aes_ctr, aes_cbc or aes_gcm, 128- or 256-bit key), optionally damaged, and
//! decoded again.
//!
//! Undamaged, it must decode to the same frame. Damaged — a flipped bit with or without the
//! checksum fixed up, which reaches the post-decrypt check or the GCM tag — it must be
//! refused (a flip in an encrypted page is always caught; in a plain page only the checksum
//! catches it, so with the checksum fixed a plain page may decode) and, when refused after
//! decryption, hold no plaintext.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strongbox_engine::page::{
    decode_in_place, encode, init_frame, PageError, PageId, PageType, Seal, BODY_START,
};
use strongbox_fuzz::{check_tree_page, fix_crc, Input, KEY_128, KEY_256};
use strongbox_keyring::Algorithm;

const EXPECTED: PageId = PageId::new(7, 3);
const TYPES: [PageType; 4] = [
    PageType::BtreeLeaf,
    PageType::BtreeBranch,
    PageType::Overflow,
    PageType::Undo,
];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let control = input.byte();
    let damage = input.byte();
    let at = input.u32() as usize;
    let nonce = u64::from(input.u32());
    let body = input.rest();
    let size = if control & 0x80 != 0 { 8192 } else { 4096 };
    let mut frame = vec![0u8; size];
    init_frame(
        &mut frame,
        TYPES[usize::from(control >> 5 & 3)],
        EXPECTED,
        99,
    );
    let n = body.len().min(size - BODY_START - 16);
    frame[BODY_START..BODY_START + n].copy_from_slice(&body[..n]);

    let (key, key_id) = if control & 0x10 != 0 {
        (&*KEY_128, 2)
    } else {
        (&*KEY_256, 1)
    };
    let seal = match control & 3 {
        0 => Seal::Plain,
        mode => Seal::Encrypted {
            key,
            algorithm: Algorithm::ALL[usize::from(mode - 1)],
            key_id,
            key_version: 1,
            write_nonce: nonce,
        },
    };
    let mut stored = vec![0u8; size];
    encode(&frame, seal, &mut stored).expect("a valid frame encodes");

    let damaged = damage & 0x80 != 0;
    if damaged {
        let bit = at % (size * 8);
        stored[bit / 8] ^= 1 << (bit % 8);
        if damage & 0x40 != 0 {
            fix_crc(&mut stored);
        }
    }
    let checksum_fixed = damage & 0x40 != 0;
    let flipped_checksum = at % (size * 8) < 32;
    let mut page = stored.clone();
    let result = decode_in_place(&mut page, EXPECTED, &strongbox_fuzz::FuzzPageKeys);
    match (&result, damaged) {
        (Ok(header), false) => {
            // The body comes back; the header keeps the codec's fields as stored.
            assert!(
                page[BODY_START..size - 16] == frame[BODY_START..size - 16],
                "body differs"
            );
            assert_eq!((header.page_id(), header.lsn), (EXPECTED, 99));
            check_tree_page(&page, &body[..body.len().min(16)]);
        }
        (Err(error), false) => panic!("an intact page failed to decode: {error}"),
        (Ok(_), true) => {
            // Only a plain page whose checksum was fixed up (or a flip in the checksum
            // field that the fix-up then undid) can still decode.
            assert!(
                (matches!(seal, Seal::Plain) && checksum_fixed)
                    || (flipped_checksum && checksum_fixed),
                "a damaged page decoded"
            );
        }
        (Err(PageError::WrongKeyOrTampered { .. }), true) => {
            assert!(
                page[BODY_START..].iter().all(|&b| b == 0),
                "plaintext left behind"
            );
        }
        (Err(_), true) => assert_eq!(page, stored, "an early error changed the buffer"),
    }
});
