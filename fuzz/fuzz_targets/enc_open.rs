//! Fuzz target `enc_open`: the `openssl enc` container (`Salted__` ‖ salt ‖ CBC blocks)
//! opened with a fixed passphrase. The first byte picks the digest and KDF; the rest is the
//! file. Whatever opens is shorter than its ciphertext.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strongbox_fuzz::{enc_settings, Input, PASSPHRASE};
use strongbox_keyring::openssl_enc;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let settings = enc_settings(input.byte());
    let file = input.rest();
    match openssl_enc::open(file, PASSPHRASE.as_bytes(), &settings) {
        Ok(plain) => assert!(plain.len() + 16 < file.len()),
        Err(reason) => assert!(!reason.0.is_empty()),
    }
});
