//! Fuzz target `enc_keyfile`: the whole encrypted key-file read, seal → damage → decrypt →
//! parse, through `KeyFileSource::parse_bytes` as `load` runs it.
//!
//! Input: a settings byte (digest and KDF), a damage byte and a 4-byte position, then the
//! plaintext. Undamaged, the file must open to exactly what the plaintext parses to (or
//! fail if the plaintext is not a key file); damaged (a flipped byte, a cut, bytes added),
//! it must fail or give keys, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strongbox_fuzz::{enc_settings, Input, PASSPHRASE};
use strongbox_keyring::keyfile::KeyFile;
use strongbox_keyring::openssl_enc::{self, Kdf};
use strongbox_keyring::source::{FileKey, KeyFileSource};

const SALT: [u8; 8] = *b"fuzzsalt";

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let settings = enc_settings(input.byte());
    let damage = input.byte();
    let at = input.u32() as usize;
    let plaintext = input.rest();
    if settings.kdf == (Kdf::Pbkdf2 { iterations: 0 }) {
        assert!(openssl_enc::try_seal(plaintext, PASSPHRASE.as_bytes(), &settings).is_err());
        return;
    }
    let mut file = openssl_enc::seal_with_salt(plaintext, PASSPHRASE.as_bytes(), &SALT, &settings);
    match damage % 4 {
        0 => {}
        1 => {
            let i = at % file.len();
            file[i] ^= damage | 1;
        }
        2 => file.truncate(at % file.len()),
        _ => file.extend(std::iter::repeat_n(damage, 1 + at % 64)),
    }
    let file_key = FileKey::parse(PASSPHRASE).expect("a literal file key");
    let source = KeyFileSource::encrypted("fuzz-keys.enc", file_key, settings);
    let mut diagnostics = Vec::new();
    let opened = source.parse_bytes(&file, &mut diagnostics);
    if damage.is_multiple_of(4) {
        let direct = std::str::from_utf8(plaintext)
            .ok()
            .and_then(|text| KeyFile::parse(text, Path::new("plain")).ok());
        let keys = |f: &KeyFile| -> Vec<(u32, u32, usize)> {
            f.entries()
                .iter()
                .map(|e| (e.id, e.version, e.bits()))
                .collect()
        };
        assert_eq!(opened.ok().map(|f| keys(&f)), direct.map(|f| keys(&f)));
    }
});
