//! Where keyring keys come from: the [`KeyProvider`] trait and its implementations.
//!
//! A keyring key is identified by `(id, version)`. New writes use the latest version of an
//! id; older versions stay available for reading until nothing needs them (DESIGN §3–§4).
//!
//! Key ids have roles, as in MariaDB:
//!
//! | id | role                                                         | if absent            |
//! |----|--------------------------------------------------------------|----------------------|
//! | 1  | system tablespace (catalog, undo), redo log, doublewrite     | error: must exist    |
//! | 2  | temporary tablespace and temporary files                     | falls back to key 1  |
//! | n  | any table that names it (`encryption_key_id`)                | table creation fails |
//!
//! Implementations: [`FileKeyProvider`] (a MariaDB key file, plain or encrypted, reloadable
//! like `FLUSH FILE_KEY_MANAGEMENT_KEYS`) and [`MemoryKeyProvider`] (tests, embedding).
//! An external KMS would be a third implementation of the same four methods.

use crate::error::{KeyringError, Result};
use crate::keyfile::KeyFile;
use crate::secret::SecretBytes;
use crate::source::{Diagnostic, KeyFileSource};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

/// The key id of the system tablespace, redo log and doublewrite area.
pub const SYSTEM_KEY_ID: u32 = 1;
/// The key id of temporary space and temporary files (falls back to [`SYSTEM_KEY_ID`]).
pub const TEMPORARY_KEY_ID: u32 = 2;

/// One keyring key. Its bytes never leave this crate; other crates pass it back to
/// [`crate::wrap`] to wrap or unwrap data keys.
pub struct KeyringKey {
    pub id: u32,
    pub version: u32,
    pub(crate) secret: SecretBytes,
}

impl KeyringKey {
    /// Key size in bits.
    pub fn bits(&self) -> usize {
        self.secret.bits()
    }
}

impl fmt::Debug for KeyringKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyringKey {{ id: {}, version: {}, <redacted {}-bit> }}",
            self.id,
            self.version,
            self.bits()
        )
    }
}

/// What `list` shows of a key: never its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyInfo {
    pub id: u32,
    pub version: u32,
    pub bits: usize,
}

/// A source of keyring keys.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// The newest version of key `id`, or `None` if the id is unknown.
    fn latest_version(&self, id: u32) -> Option<u32>;
    /// The key `(id, version)`, or `MissingKeyId` / `MissingKeyVersion`.
    fn key(&self, id: u32, version: u32) -> Result<Arc<KeyringKey>>;
    /// Re-reads the source so new versions are seen without a restart.
    fn reload(&self) -> Result<Vec<Diagnostic>>;
    /// Every (id, version, bits), sorted.
    fn list(&self) -> Vec<KeyInfo>;
}

/// The latest version of key `id`.
pub fn latest_key(provider: &dyn KeyProvider, id: u32) -> Result<Arc<KeyringKey>> {
    let version = provider
        .latest_version(id)
        .ok_or(KeyringError::MissingKeyId { id })?;
    provider.key(id, version)
}

/// Checks that key 1, which every encrypted database needs, exists.
pub fn require_system_key(provider: &dyn KeyProvider) -> Result<()> {
    match provider.latest_version(SYSTEM_KEY_ID) {
        Some(_) => Ok(()),
        None => Err(KeyringError::MissingKeyId { id: SYSTEM_KEY_ID }),
    }
}

/// The key id temporary data uses: 2 when the keyring has it, else 1.
pub fn temporary_key_id(provider: &dyn KeyProvider) -> u32 {
    if provider.latest_version(TEMPORARY_KEY_ID).is_some() {
        TEMPORARY_KEY_ID
    } else {
        SYSTEM_KEY_ID
    }
}

type KeyMap = BTreeMap<(u32, u32), Arc<KeyringKey>>;

fn lookup(keys: &KeyMap, id: u32, version: u32) -> Result<Arc<KeyringKey>> {
    if let Some(key) = keys.get(&(id, version)) {
        return Ok(Arc::clone(key));
    }
    if keys.range((id, 0)..=(id, u32::MAX)).next().is_some() {
        Err(KeyringError::MissingKeyVersion { id, version })
    } else {
        Err(KeyringError::MissingKeyId { id })
    }
}

fn latest_in(keys: &KeyMap, id: u32) -> Option<u32> {
    keys.range((id, 0)..=(id, u32::MAX))
        .next_back()
        .map(|(&(_, version), _)| version)
}

fn list_of(keys: &KeyMap) -> Vec<KeyInfo> {
    keys.values()
        .map(|key| KeyInfo {
            id: key.id,
            version: key.version,
            bits: key.bits(),
        })
        .collect()
}

fn key_map(file: &KeyFile) -> KeyMap {
    file.entries()
        .iter()
        .map(|entry| {
            let key = KeyringKey {
                id: entry.id,
                version: entry.version,
                secret: entry.key.clone(),
            };
            ((entry.id, entry.version), Arc::new(key))
        })
        .collect()
}

/// Keys from a MariaDB-format key file, plain or encrypted.
#[derive(Debug)]
pub struct FileKeyProvider {
    source: KeyFileSource,
    /// Guards the loaded keys; replaced whole by `reload`.
    keys: RwLock<KeyMap>,
}

impl FileKeyProvider {
    /// Loads the file; the diagnostics are warnings to show the operator.
    pub fn open(source: KeyFileSource) -> Result<(FileKeyProvider, Vec<Diagnostic>)> {
        let loaded = source.load()?;
        let provider = FileKeyProvider {
            keys: RwLock::new(key_map(&loaded.keys)),
            source,
        };
        Ok((provider, loaded.diagnostics))
    }

    /// Where the keys come from.
    pub fn source(&self) -> &KeyFileSource {
        &self.source
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeyMap> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl KeyProvider for FileKeyProvider {
    fn latest_version(&self, id: u32) -> Option<u32> {
        latest_in(&self.read(), id)
    }

    fn key(&self, id: u32, version: u32) -> Result<Arc<KeyringKey>> {
        lookup(&self.read(), id, version)
    }

    fn reload(&self) -> Result<Vec<Diagnostic>> {
        let loaded = self.source.load()?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = key_map(&loaded.keys);
        Ok(loaded.diagnostics)
    }

    fn list(&self) -> Vec<KeyInfo> {
        list_of(&self.read())
    }
}

/// Keys held only in memory: for tests and for embedders with their own key store.
#[derive(Debug, Default)]
pub struct MemoryKeyProvider {
    /// Guards the key map.
    keys: RwLock<KeyMap>,
}

impl MemoryKeyProvider {
    pub fn new() -> MemoryKeyProvider {
        MemoryKeyProvider::default()
    }

    /// Adds a random key `(id, version)` of `bits` (128, 192 or 256).
    pub fn add_random(&self, id: u32, version: u32, bits: usize) -> Result<()> {
        if !matches!(bits, 128 | 192 | 256) {
            return Err(KeyringError::InvalidKeyLength { bits });
        }
        self.insert(id, version, SecretBytes::random(bits / 8));
        Ok(())
    }

    /// Adds a new random version of `id` (same size as its latest) and returns it.
    pub fn rotate(&self, id: u32) -> Result<u32> {
        let latest = latest_key(self, id)?;
        let version = latest.version + 1;
        self.insert(id, version, SecretBytes::random(latest.secret.len()));
        Ok(version)
    }

    /// Forgets `(id, version)`; true if it was there.
    pub fn remove(&self, id: u32, version: u32) -> bool {
        self.write().remove(&(id, version)).is_some()
    }

    fn insert(&self, id: u32, version: u32, secret: SecretBytes) {
        let key = KeyringKey {
            id,
            version,
            secret,
        };
        self.write().insert((id, version), Arc::new(key));
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeyMap> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, KeyMap> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl KeyProvider for MemoryKeyProvider {
    fn latest_version(&self, id: u32) -> Option<u32> {
        latest_in(&self.read(), id)
    }

    fn key(&self, id: u32, version: u32) -> Result<Arc<KeyringKey>> {
        lookup(&self.read(), id, version)
    }

    fn reload(&self) -> Result<Vec<Diagnostic>> {
        Ok(Vec::new())
    }

    fn list(&self) -> Vec<KeyInfo> {
        list_of(&self.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_provider_reload_sees_new_versions() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeyFileSource::plain(dir.path().join("keys.txt"));
        source
            .create(&KeyFile::generate(&[1, 5], 256, false).unwrap())
            .unwrap();
        let (provider, diagnostics) = FileKeyProvider::open(source.clone()).unwrap();
        assert!(diagnostics.is_empty());
        assert_eq!(provider.latest_version(5), Some(1));
        source.rotate(5, Some(128)).unwrap();
        assert_eq!(provider.latest_version(5), Some(1), "no reload yet");
        provider.reload().unwrap();
        assert_eq!(provider.latest_version(5), Some(2));
        assert_eq!(provider.key(5, 2).unwrap().bits(), 128);
        let listed = provider.list();
        assert_eq!(
            listed
                .iter()
                .map(|k| (k.id, k.version, k.bits))
                .collect::<Vec<_>>(),
            vec![(1, 1, 256), (5, 1, 256), (5, 2, 128)]
        );
    }

    #[test]
    fn missing_ids_and_versions_are_told_apart() {
        let provider = MemoryKeyProvider::new();
        provider.add_random(1, 1, 256).unwrap();
        assert!(matches!(
            provider.key(1, 2),
            Err(KeyringError::MissingKeyVersion { id: 1, version: 2 })
        ));
        assert!(matches!(
            provider.key(3, 1),
            Err(KeyringError::MissingKeyId { id: 3 })
        ));
        assert!(matches!(
            latest_key(&provider, 3),
            Err(KeyringError::MissingKeyId { id: 3 })
        ));
        assert_eq!(provider.rotate(1).unwrap(), 2);
        assert_eq!(latest_key(&provider, 1).unwrap().version, 2);
        assert!(provider.remove(1, 1));
        assert!(matches!(
            provider.key(1, 1),
            Err(KeyringError::MissingKeyVersion { .. })
        ));
    }

    #[test]
    fn roles_system_key_required_and_temporary_falls_back() {
        let provider = MemoryKeyProvider::new();
        assert!(matches!(
            require_system_key(&provider),
            Err(KeyringError::MissingKeyId { id: 1 })
        ));
        provider.add_random(1, 1, 256).unwrap();
        require_system_key(&provider).unwrap();
        assert_eq!(temporary_key_id(&provider), SYSTEM_KEY_ID);
        provider.add_random(2, 1, 256).unwrap();
        assert_eq!(temporary_key_id(&provider), TEMPORARY_KEY_ID);
    }

    #[test]
    fn keyring_key_debug_is_redacted() {
        let provider = MemoryKeyProvider::new();
        provider.add_random(7, 3, 192).unwrap();
        let shown = format!("{:?}", provider.key(7, 3).unwrap());
        assert_eq!(
            shown,
            "KeyringKey { id: 7, version: 3, <redacted 192-bit> }"
        );
    }
}
