//! Fuzz target `redo_record`: `Record::decode` on a record body. Decoding is canonical, so
//! whatever decodes must encode back to exactly the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strongbox_wal::Record;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        assert_eq!(record.to_bytes(), data, "decoding is canonical");
    }
});
