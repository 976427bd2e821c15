//! Fuzz target `keyfile`: the MariaDB key-file text, read as `KeyFileSource::load` reads a
//! plain key file (UTF-8 check, then `KeyFile::parse`). Whatever parses must render back to
//! text that parses to the same keys.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strongbox_keyring::keyfile::KeyFile;
use strongbox_keyring::source::KeyFileSource;

fuzz_target!(|data: &[u8]| {
    let source = KeyFileSource::plain("fuzz-keys.txt");
    let mut diagnostics = Vec::new();
    let Ok(file) = source.parse_bytes(data, &mut diagnostics) else {
        return;
    };
    let text = file.render();
    let again = KeyFile::parse(&text, Path::new("rendered")).expect("a rendered key file parses");
    let keys = |f: &KeyFile| -> Vec<(u32, u32, usize)> {
        f.entries()
            .iter()
            .map(|e| (e.id, e.version, e.bits()))
            .collect()
    };
    assert_eq!(keys(&file), keys(&again));
});
