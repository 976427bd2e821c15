//! A key file on disk: where it is, whether and how it is encrypted, and how to read and
//! rewrite it safely.
//!
//! * Plain files hold the [`crate::keyfile`] text.
//! * Encrypted files are the [`crate::openssl_enc`] container around that text, opened with a
//!   *file key* given as a literal (`--filekey secret`) or as `FILE:path` (the first line of
//!   that file, trailing newline trimmed), exactly as MariaDB's `file_key_management_filekey`.
//!
//! Writing is atomic: the new text goes to a temporary file in the same directory (mode
//! 0600), which is fsynced, renamed over the old file, and the directory fsynced — a crash
//! leaves either the old file or the new one, never a torn mix. An encrypted file stays
//! encrypted with the same settings (and a fresh salt); comments survive.
//!
//! Loading returns [`Diagnostic`]s next to the keys: warnings a careful operator wants to see,
//! such as a key file readable by other users.

use crate::error::{KeyringError, Result};
use crate::keyfile::KeyFile;
use crate::openssl_enc::{self, EncSettings};
use crate::secret::SecretBytes;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The secret that decrypts an encrypted key file.
#[derive(Clone)]
pub struct FileKey {
    secret: SecretBytes,
    /// Where it came from, when it was `FILE:path` (safe to show).
    origin: Option<PathBuf>,
}

impl FileKey {
    /// Parses a `--filekey` value: `FILE:path` reads the first line of that file; anything
    /// else is the passphrase itself.
    pub fn parse(value: &str) -> Result<FileKey> {
        match value.strip_prefix("FILE:") {
            Some(path) => FileKey::from_file(Path::new(path)),
            None if value.is_empty() => Err(KeyringError::FileKey("the file key is empty".into())),
            None => Ok(FileKey {
                secret: SecretBytes::new(value.as_bytes().to_vec()),
                origin: None,
            }),
        }
    }

    fn from_file(path: &Path) -> Result<FileKey> {
        let bytes = zeroize::Zeroizing::new(fs::read(path).map_err(|e| {
            KeyringError::FileKey(format!("cannot read file key {}: {e}", path.display()))
        })?);
        let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let first_line = first_line.strip_suffix(b"\r").unwrap_or(first_line);
        if first_line.is_empty() {
            return Err(KeyringError::FileKey(format!(
                "file key file {} is empty",
                path.display()
            )));
        }
        Ok(FileKey {
            secret: SecretBytes::new(first_line.to_vec()),
            origin: Some(path.to_path_buf()),
        })
    }

    pub(crate) fn expose(&self) -> &[u8] {
        self.secret.expose()
    }
}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(path) => write!(f, "FileKey(FILE:{})", path.display()),
            None => write!(f, "FileKey(<redacted literal>)"),
        }
    }
}

/// A warning found while loading keys; the keys are still usable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Diagnostic {
    /// A file holding secrets can be read by users other than its owner.
    ReadableByOthers { path: PathBuf, mode: u32 },
    /// A file key was given but the key file is plain text (it is read as plain text).
    FileKeyUnused { path: PathBuf },
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diagnostic::ReadableByOthers { path, mode } => write!(
                f,
                "warning: {} has mode {mode:04o} and is readable by group or others; \
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
            Diagnostic::FileKeyUnused { path } => write!(
                f,
                "warning: a file key was given but {} is not encrypted; it was read as plain text",
                path.display()
            ),
        }
    }
}

/// A key file location plus everything needed to decrypt and re-encrypt it.
#[derive(Debug, Clone)]
pub struct KeyFileSource {
    pub path: PathBuf,
    pub file_key: Option<FileKey>,
    pub settings: EncSettings,
}

/// Keys read from a source, with any warnings.
#[derive(Debug)]
pub struct Loaded {
    pub keys: KeyFile,
    pub diagnostics: Vec<Diagnostic>,
}

impl KeyFileSource {
    /// A plain (unencrypted) key file.
    pub fn plain(path: impl Into<PathBuf>) -> KeyFileSource {
        KeyFileSource {
            path: path.into(),
            file_key: None,
            settings: EncSettings::default(),
        }
    }

    /// The key file at `path`: encrypted when `file_key` (a passphrase or `FILE:path`, as
    /// `--filekey` takes it) is given, plain otherwise.
    pub fn new(
        path: impl Into<PathBuf>,
        file_key: Option<&str>,
        settings: EncSettings,
    ) -> Result<KeyFileSource> {
        Ok(match file_key {
            None => KeyFileSource::plain(path),
            Some(value) => KeyFileSource::encrypted(path, FileKey::parse(value)?, settings),
        })
    }

    /// An encrypted key file opened with `file_key` and `settings`.
    pub fn encrypted(path: impl Into<PathBuf>, file_key: FileKey, settings: EncSettings) -> Self {
        KeyFileSource {
            path: path.into(),
            file_key: Some(file_key),
            settings,
        }
    }

    /// Reads and parses the file.
    pub fn load(&self) -> Result<Loaded> {
        let mut diagnostics = Vec::new();
        diagnostics.extend(check_private(&self.path));
        if let Some(FileKey {
            origin: Some(origin),
            ..
        }) = &self.file_key
        {
            diagnostics.extend(check_private(origin));
        }
        let bytes =
            zeroize::Zeroizing::new(fs::read(&self.path).map_err(|source| KeyringError::Io {
                path: self.path.clone(),
                source,
            })?);
        let keys = self.parse_bytes(&bytes, &mut diagnostics)?;
        Ok(Loaded { keys, diagnostics })
    }

    /// What [`load`](Self::load) does with the file's bytes once read: decrypt them if they
    /// start with `Salted__`, then parse the key-file text. Public for the fuzz targets
    /// (`fuzz/`), which feed it bytes without a file.
    #[doc(hidden)]
    pub fn parse_bytes(&self, bytes: &[u8], diagnostics: &mut Vec<Diagnostic>) -> Result<KeyFile> {
        if bytes.starts_with(openssl_enc::MAGIC) {
            return self.decrypt(bytes);
        }
        if self.file_key.is_some() {
            diagnostics.push(Diagnostic::FileKeyUnused {
                path: self.path.clone(),
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| KeyringError::Parse {
            path: self.path.clone(),
            line: 1,
            problem: crate::ParseProblem::Garbage,
        })?;
        KeyFile::parse(text, &self.path)
    }

    fn decrypt(&self, bytes: &[u8]) -> Result<KeyFile> {
        let Some(file_key) = &self.file_key else {
            return Err(KeyringError::FileKey(format!(
                "{} is encrypted (it starts with Salted__); give its file key with --filekey",
                self.path.display()
            )));
        };
        let decrypt_error = |reason| KeyringError::Decrypt {
            path: self.path.clone(),
            reason,
        };
        let plain = openssl_enc::open(bytes, file_key.expose(), &self.settings)
            .map_err(|e| decrypt_error(e.0))?;
        // A wrong file key passes the padding check about once in 256 tries; what comes
        // out then is noise. Reporting that as a parse error would be misleading, and
        // returning it as keys would be worse, so any decrypted text that does not parse is
        // a decryption failure.
        let text = std::str::from_utf8(plain.expose())
            .map_err(|_| decrypt_error("decrypted bytes are not text"))?;
        KeyFile::parse(text, &self.path)
            .map_err(|_| decrypt_error("decrypted text is not a key file"))
    }

    /// Writes `keys` to the file atomically, encrypted if this source is.
    pub fn save(&self, keys: &KeyFile) -> Result<()> {
        let text = keys.render();
        let bytes = match &self.file_key {
            Some(file_key) => zeroize::Zeroizing::new(
                openssl_enc::try_seal(text.as_bytes(), file_key.expose(), &self.settings).map_err(
                    |e| KeyringError::InvalidRequest(format!("cannot encrypt key file: {e}")),
                )?,
            ),
            None => zeroize::Zeroizing::new(text.as_bytes().to_vec()),
        };
        write_atomically(&self.path, &bytes).map_err(|source| KeyringError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Creates a new key file; fails if one already exists (never overwrites keys).
    pub fn create(&self, keys: &KeyFile) -> Result<()> {
        if self.path.exists() {
            return Err(KeyringError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "file exists; refusing to overwrite keys",
                ),
            });
        }
        self.save(keys)
    }

    /// Loads, adds a new random version of `id`, saves atomically; returns the new version.
    pub fn rotate(&self, id: u32, bits: Option<usize>) -> Result<u32> {
        let mut keys = self.load()?.keys;
        let version = keys.add_version(id, bits)?;
        self.save(&keys)?;
        Ok(version)
    }
}

/// temp file (0600) -> write -> fsync -> rename -> fsync directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut temp_name = file_name.to_os_string();
    temp_name.push(format!(".tmp{}", std::process::id()));
    let temp_path = dir.join(temp_name);
    let result = (|| {
        let mut file = private_file_options().open(&temp_path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp_path, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    result
}

fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

#[cfg(unix)]
fn check_private(path: &Path) -> Option<Diagnostic> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| Diagnostic::ReadableByOthers {
        path: path.to_path_buf(),
        mode,
    })
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Option<Diagnostic> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openssl_enc::{Digest, Kdf};

    fn file_mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn plain_file_create_load_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeyFileSource::plain(dir.path().join("keys.txt"));
        source
            .create(&KeyFile::generate(&[1, 2], 256, false).unwrap())
            .unwrap();
        assert_eq!(file_mode(&source.path), 0o600);
        assert!(source
            .create(&KeyFile::generate(&[1], 256, false).unwrap())
            .is_err());
        let loaded = source.load().unwrap();
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        assert_eq!(source.rotate(1, None).unwrap(), 2);
        let keys = source.load().unwrap().keys;
        assert_eq!(keys.latest_version(1), Some(2));
        assert_eq!(keys.latest_version(2), Some(1));
        assert!(keys.render().starts_with("# Strongbox key file"));
        assert_eq!(file_mode(&source.path), 0o600);
    }

    #[test]
    fn encrypted_file_round_trips_and_stays_encrypted_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let settings = EncSettings {
            digest: Digest::Sha256,
            kdf: Kdf::Pbkdf2 { iterations: 1000 },
        };
        let source = KeyFileSource::encrypted(
            dir.path().join("keys.enc"),
            FileKey::parse("correct horse").unwrap(),
            settings,
        );
        source
            .create(&KeyFile::generate(&[1], 128, true).unwrap())
            .unwrap();
        assert!(fs::read(&source.path).unwrap().starts_with(b"Salted__"));
        source.rotate(1, None).unwrap();
        assert!(fs::read(&source.path).unwrap().starts_with(b"Salted__"));
        assert_eq!(source.load().unwrap().keys.latest_version(1), Some(2));

        let wrong = KeyFileSource::encrypted(
            source.path.clone(),
            FileKey::parse("wrong horse").unwrap(),
            settings,
        );
        assert!(matches!(wrong.load(), Err(KeyringError::Decrypt { .. })));
        let wrong_settings = KeyFileSource {
            settings: EncSettings::default(),
            ..source.clone()
        };
        assert!(matches!(
            wrong_settings.load(),
            Err(KeyringError::Decrypt { .. })
        ));
        let no_key = KeyFileSource::plain(source.path.clone());
        assert!(matches!(no_key.load(), Err(KeyringError::FileKey(_))));
    }

    #[test]
    fn saving_with_zero_pbkdf2_iterations_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeyFileSource::encrypted(
            dir.path().join("keys.enc"),
            FileKey::parse("secret").unwrap(),
            EncSettings {
                digest: Digest::Sha256,
                kdf: Kdf::Pbkdf2 { iterations: 0 },
            },
        );
        let keys = KeyFile::generate(&[1], 256, false).unwrap();
        assert!(matches!(
            source.create(&keys),
            Err(KeyringError::InvalidRequest(_))
        ));
        assert!(!source.path.exists());
    }

    #[test]
    fn wrong_file_keys_never_yield_keys() {
        let dir = tempfile::tempdir().unwrap();
        let settings = EncSettings::default();
        let source = KeyFileSource::encrypted(
            dir.path().join("keys.enc"),
            FileKey::parse("the right one").unwrap(),
            settings,
        );
        source
            .create(&KeyFile::generate(&[1, 2], 256, false).unwrap())
            .unwrap();
        for attempt in 0..600 {
            let wrong = KeyFileSource::encrypted(
                source.path.clone(),
                FileKey::parse(&format!("guess {attempt}")).unwrap(),
                settings,
            );
            assert!(matches!(wrong.load(), Err(KeyringError::Decrypt { .. })));
        }
    }

    #[test]
    fn file_key_from_file_trims_the_newline_and_warns_when_public() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("filekey");
        fs::write(&key_path, "s3cret\n").unwrap();
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
        let file_key = FileKey::parse(&format!("FILE:{}", key_path.display())).unwrap();
        assert_eq!(file_key.expose(), b"s3cret");
        assert!(!format!("{file_key:?}").contains("s3cret"));
        assert!(!format!("{:?}", FileKey::parse("s3cret").unwrap()).contains("s3cret"));

        let source =
            KeyFileSource::encrypted(dir.path().join("k.enc"), file_key, EncSettings::default());
        source
            .create(&KeyFile::generate(&[1], 256, false).unwrap())
            .unwrap();
        let loaded = source.load().unwrap();
        assert_eq!(
            loaded.diagnostics,
            vec![Diagnostic::ReadableByOthers {
                path: key_path.clone(),
                mode: 0o644
            }]
        );
        assert!(FileKey::parse("FILE:/nonexistent/strongbox").is_err());
        fs::write(&key_path, "\n").unwrap();
        assert!(FileKey::parse(&format!("FILE:{}", key_path.display())).is_err());
    }

    #[test]
    fn plain_file_readable_by_others_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.txt");
        fs::write(&path, "1;00112233445566778899aabbccddeeff\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let loaded = KeyFileSource::plain(&path).load().unwrap();
        assert_eq!(loaded.diagnostics.len(), 1);
        assert!(loaded.diagnostics[0].to_string().contains("chmod 600"));
    }
}
