//! Fuzz target `page_decode`: stored page bytes through `page::decode_in_place` (checksum,
//! position, header, key lookup, decrypt and check/tag for plain, aes_ctr, aes_cbc and
//! aes_gcm), then — for a tree page that decodes — the structural node check the tablespace
//! runs before the B+tree may use it.
//!
//! Input: a control byte, then the page. The control byte picks the size (4 or 8 KiB, or
//! the input's own length to reach the size errors), and whether to stamp the expected
//! position, a cipher code with key id 1 or 2, and a correct checksum into the header, so
//! that most inputs get past the first checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strongbox_engine::page::{decode_in_place, PageId};
use strongbox_fuzz::{check_tree_page, fix_crc, sized, FuzzPageKeys, Input};

const EXPECTED: PageId = PageId::new(7, 3);

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let control = input.byte();
    let rest = input.rest();
    let mut page = match control & 0x03 {
        0 | 1 => sized(rest, 4096),
        2 => sized(rest, 8192),
        _ => rest.to_vec(),
    };
    if page.len() >= 48 {
        if control & 0x04 != 0 {
            page[8..12].copy_from_slice(&EXPECTED.space_id.to_le_bytes());
            page[12..16].copy_from_slice(&EXPECTED.page_no.to_le_bytes());
        }
        if control & 0x08 != 0 {
            page[6] = (control >> 4) & 0x03; // cipher: none, ctr, cbc, gcm
            let key_id: u32 = if control & 0x40 != 0 { 2 } else { 1 };
            page[24..28].copy_from_slice(&key_id.to_le_bytes());
            page[28..32].copy_from_slice(&1u32.to_le_bytes());
        }
    }
    if control & 0x80 == 0 {
        fix_crc(&mut page);
    }
    let stored = page.clone();
    match decode_in_place(&mut page, EXPECTED, &FuzzPageKeys) {
        Ok(header) => {
            assert_eq!(header.page_id(), EXPECTED);
            check_tree_page(&page, &stored[48..64.min(stored.len())]);
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
