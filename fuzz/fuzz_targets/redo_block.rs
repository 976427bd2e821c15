//! Fuzz target `redo_block`: one 512-byte redo block through `block::check` (all-zero,
//! CRC, header fields) and `block::open` (GCM tag or plain trailer, zero padding).
//!
//! Input: a control byte, then either the raw block (checksum fixed up on request, opened
//! plain or with the log key), or — control bit 0x01 — header fields and data from which a
//! valid block is sealed and then damaged by one flipped bit. An intact sealed block must
//! open to its data; a damaged one must be refused unless the flip was undone by the
//! checksum fix-up of a plain block's checksum field, or hit a plain block whose checksum
//! was fixed up afterwards (plain blocks have no tag).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strongbox_fuzz::{fix_crc, sized, Input, KEY_256};
use strongbox_wal::block::{self, BlockHeader, BLOCK_SIZE};
use strongbox_wal::DATA_CAPACITY;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let control = input.byte();
    let encrypted = control & 0x02 != 0;
    let key = encrypted.then(|| &**KEY_256);
    if control & 0x01 == 0 {
        let mut stored: [u8; BLOCK_SIZE] = sized(input.rest(), BLOCK_SIZE).try_into().unwrap();
        if control & 0x04 != 0 {
            fix_crc(&mut stored);
        }
        if let Ok(header) = block::check(&stored) {
            assert!(usize::from(header.data_len) <= DATA_CAPACITY);
            let _ = block::open(&mut stored, &header, key);
        }
        return;
    }
    let epoch = input.u32();
    let block_no = u64::from(input.u32());
    let data_len = 1 + (usize::from(input.byte()) | usize::from(input.byte()) << 8) % DATA_CAPACITY;
    let first = input.u32() as usize % (data_len + 1);
    let flip = input.u32() as usize % (BLOCK_SIZE * 8);
    let payload = input.rest();
    let header = BlockHeader {
        epoch,
        block_no,
        data_len: data_len as u16,
        first_record: (first < data_len).then_some(first as u16),
        encrypted,
    };
    let mut plain = [0u8; BLOCK_SIZE];
    header.write(&mut plain);
    let n = payload.len().min(data_len);
    block::data_mut(&mut plain)[..n].copy_from_slice(&payload[..n]);
    let mut stored = plain;
    block::seal(&mut stored, key);
    let damaged = control & 0x04 != 0;
    if damaged {
        stored[flip / 8] ^= 1 << (flip % 8);
        if control & 0x08 != 0 {
            fix_crc(&mut stored);
        }
    }
    let result = block::check(&stored).and_then(|h| {
        let mut opened = stored;
        block::open(&mut opened, &h, key).map(|()| (h, opened))
    });
    match result {
        Ok((h, opened)) if !damaged => {
            assert_eq!(h, header);
            assert_eq!(block::data(&opened), block::data(&plain));
        }
        Err(defect) if !damaged => panic!("an intact block was refused: {defect:?}"),
        Ok(_) => {
            let fixed = control & 0x08 != 0;
            assert!(fixed && (!encrypted || flip < 32), "a damaged block opened");
        }
        Err(_) => {}
    }
});
