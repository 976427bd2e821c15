//! Turning the global key options (`--keyfile`, `--filekey`, `--digest`, `--pbkdf2-iter`,
//! MariaDB's `file_key_management_filename`, `_filekey`, `_digest`, `_use_pbkdf2`) into a
//! key-file source, and printing load-time warnings.

use super::settings::Settings;
use std::path::PathBuf;
use strongbox_keyring::source::{Diagnostic, KeyFileSource};

/// The key file at `path`, encrypted when a file key was given.
pub fn key_file_source(settings: &Settings, path: PathBuf) -> Result<KeyFileSource, String> {
    KeyFileSource::new(path, settings.filekey.as_deref(), settings.key_settings)
        .map_err(|e| e.to_string())
}

/// The configured key file, or an error saying how to name one.
pub fn required_key_file(settings: &Settings) -> Result<KeyFileSource, String> {
    let path = settings
        .keyfile
        .clone()
        .ok_or("no key file given: pass --keyfile FILE (or set keyfile in --config)")?;
    key_file_source(settings, path)
}

/// Prints load-time warnings on stderr.
pub fn print_diagnostics(diagnostics: &[Diagnostic]) {
    for diagnostic in diagnostics {
        eprintln!("strongbox: {diagnostic}");
    }
}
