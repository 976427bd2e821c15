//! The embedder's side of rotation: [`Db::rotate_key`], [`Db::alter_table`],
//! [`Db::reload_keys`], [`Db::wait_for_encryption`], [`Db::encryption_status`], and what
//! `Db::open` decides for each tablespace ([`plan_at_open`]).

use super::plan::{self, Trigger, Want};
use super::status::EncryptionStatus;
use super::{Progress, Rotator};
use crate::catalog::{Encrypted, TableMeta};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::options::{EncryptTables, Options};
use crate::space::{self, SpaceFile, SpaceKind, SpaceSet};
use crate::table::TableOptions;
use std::collections::HashMap;
use strongbox_keyring::provider::{self, KeyProvider, SYSTEM_KEY_ID};
use strongbox_keyring::KeyringError;

/// How [`Db::rotate_key`] applies a keyring key's newest version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RotationPolicy {
    /// MariaDB's model: every tablespace under the key gets a new data key (a new
    /// generation) and the background threads re-encrypt every page with it.
    #[default]
    Reencrypt,
    /// MySQL's master-key rotation: every data key (and the redo log's) is wrapped again
    /// under the new version; no data page changes.
    Rewrap,
}

impl std::str::FromStr for RotationPolicy {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "reencrypt" | "re-encrypt" => Ok(RotationPolicy::Reencrypt),
            "rewrap" | "re-wrap" => Ok(RotationPolicy::Rewrap),
            _ => Err(format!("{text:?} is not reencrypt or rewrap")),
        }
    }
}

/// What [`Db::rotate_key`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// The keyring version now in use for the key.
    pub version: u32,
    /// Tablespaces whose header changed (a new generation, or keys rewrapped).
    pub spaces: Vec<u32>,
    /// Whether the redo log's key was rewrapped (key 1 only).
    pub log_rewrapped: bool,
}

impl Db {
    /// Applies the newest version of keyring key `key_id` (re-reading the key file first)
    /// to every tablespace that uses it, as `policy` says, and — for key 1 — rewraps the
    /// redo log's key. With [`RotationPolicy::Reencrypt`] the page work happens in the
    /// background; [`Db::wait_for_encryption`] waits for it.
    pub fn rotate_key(&self, key_id: u32, policy: RotationPolicy) -> Result<RotationReport> {
        self.check_open()?;
        let inner = &self.inner;
        let keyring = self.keyring_for("key rotation")?;
        keyring.reload()?;
        let version = keyring
            .latest_version(key_id)
            .ok_or(Error::Keyring(KeyringError::MissingKeyId { id: key_id }))?;
        let _ddl = inner.ddl.lock();
        let mut report = RotationReport {
            version,
            ..RotationReport::default()
        };
        for space in inner.spaces.all() {
            let changed = space.update_encryption(|current| {
                let Some(record) = current else {
                    return Ok(None);
                };
                match policy {
                    RotationPolicy::Reencrypt if record.key_id == key_id => {
                        let want = Want::Encrypted {
                            key_id,
                            algorithm: record.algorithm,
                        };
                        inner.rotator.want(space.id(), want, Trigger::Requested);
                        plan::plan(current, want, Trigger::Requested, Some(keyring))
                    }
                    RotationPolicy::Reencrypt => Ok(None),
                    RotationPolicy::Rewrap => {
                        if record.generations.iter().any(|g| g.key_id() == key_id) {
                            plan::rewrap(record, keyring)
                        } else {
                            Ok(None)
                        }
                    }
                }
            })?;
            if changed {
                report.spaces.push(space.id());
            }
        }
        if key_id == SYSTEM_KEY_ID {
            report.log_rewrapped = inner.log().rewrap_key(keyring)?.is_some();
        }
        inner.rotator.notify();
        Ok(report)
    }

    /// Changes a table's encryption while reads and writes go on (`encrypted` yes/no/default,
    /// `encryption_key_id`): the setting is recorded at once (durably), and the background
    /// threads move the pages; [`Db::wait_for_encryption`] waits for them. A crash part-way
    /// resumes the work at the next open.
    pub fn alter_table(&self, name: &str, options: TableOptions) -> Result<()> {
        self.check_open()?;
        let inner = &self.inner;
        let _ddl = inner.ddl.lock();
        let state = inner
            .tables
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchTable(name.to_string()))?;
        let encryption = self.table_encryption(name, &options)?;
        if encryption.is_some() && inner.log().wrapping_key().is_none() {
            return Err(Error::InvalidOption {
                name: "encrypted",
                problem: format!(
                    "table {name:?} cannot become encrypted: this database's redo log is not \
                     encrypted (it was created without a keyring or with encrypt_log = off), \
                     so the table's changes would reach it in the clear"
                ),
            });
        }
        let space_id = state.meta.space_id;
        let meta = TableMeta::new(space_id, options.encrypted, encryption);
        inner.catalog.insert(name, &meta)?;
        self.checkpoint()?; // the setting is durable before any page moves
        let want = encryption.map_or(Want::Plain, |e| Want::Encrypted {
            key_id: e.key_id,
            algorithm: e.algorithm,
        });
        let keyring = inner.keyring.as_deref();
        inner.rotator.want(space_id, want, Trigger::Requested);
        inner
            .spaces
            .get(space_id)?
            .update_encryption(|current| plan::plan(current, want, Trigger::Requested, keyring))?;
        inner.rotator.notify();
        Ok(())
    }

    /// Re-reads the key file and applies what changed, by the `encryption_rotate_key_age`
    /// rule: a newer key version becomes every affected space's current generation (new
    /// writes use it) and spaces whose oldest generation is too old are re-encrypted. This
    /// is how a version added to the key file by hand is picked up: nothing polls for it.
    pub fn reload_keys(&self) -> Result<Vec<String>> {
        self.check_open()?;
        let keyring = self.keyring_for("reloading keys")?;
        let diagnostics = keyring.reload()?;
        let _ddl = self.inner.ddl.lock();
        let mut warnings: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        let tables = self.inner.catalog.tables()?;
        warnings.extend(plan_at_open(
            &self.inner.spaces,
            &tables,
            &self.inner.options,
            Some(keyring),
            &self.inner.rotator,
        ));
        self.inner.rotator.notify();
        Ok(warnings)
    }

    /// Waits until no tablespace has a re-encryption pass running (rotation, ALTER,
    /// `encrypt_tables` change), calling `on_progress` about four times a second. With
    /// `encryption_threads = 0` the passes run in the caller's thread. Fails if a pass
    /// fails, naming the tablespace.
    pub fn wait_for_encryption(&self, mut on_progress: impl FnMut(Progress)) -> Result<()> {
        self.check_open()?;
        self.inner.rotator.wait(&|_| true, &mut on_progress)
    }

    /// One row per tablespace (system, temporary, each table), by space id: the columns of
    /// `information_schema.INNODB_TABLESPACES_ENCRYPTION`.
    pub fn encryption_status(&self) -> Result<Vec<EncryptionStatus>> {
        self.check_open()?;
        let names: HashMap<u32, String> = self
            .inner
            .tables
            .read()
            .iter()
            .map(|(name, state)| (state.meta.space_id, name.clone()))
            .collect();
        let mut spaces = self.inner.spaces.all();
        spaces.sort_by_key(|space| space.id());
        Ok(spaces
            .iter()
            .map(|space| EncryptionStatus::of(space, names.get(&space.id()).map(String::as_str)))
            .collect())
    }

    fn keyring_for(&self, what: &str) -> Result<&dyn KeyProvider> {
        self.inner
            .keyring
            .as_deref()
            .ok_or_else(|| Error::NoKeyring { what: what.into() })
    }
}

/// What a table's settings ask for under the database settings.
pub(crate) fn wanted_for_table(meta: &TableMeta, options: &Options) -> Want {
    let encrypted = match meta.encrypted_option {
        Encrypted::Yes => true,
        Encrypted::No => false,
        Encrypted::Default => options.encrypt_tables != EncryptTables::Off,
    };
    if !encrypted {
        return Want::Plain;
    }
    Want::Encrypted {
        key_id: if meta.key_id != 0 {
            meta.key_id
        } else {
            options.default_encryption_key_id
        },
        algorithm: options.encryption_algorithm,
    }
}

/// What the system space and the temporary space ask for.
fn wanted_for_space(
    space: &SpaceFile,
    options: &Options,
    keyring: Option<&dyn KeyProvider>,
) -> Want {
    let algorithm = options.encryption_algorithm;
    match space.header().kind {
        SpaceKind::System if options.encrypt_tables != EncryptTables::Off => Want::Encrypted {
            key_id: SYSTEM_KEY_ID,
            algorithm,
        },
        SpaceKind::Temporary if options.encrypt_temp => match keyring {
            Some(keyring) => Want::Encrypted {
                key_id: provider::temporary_key_id(keyring),
                algorithm,
            },
            None => Want::Plain,
        },
        _ => Want::Plain,
    }
}

/// For every tablespace: what its settings ask for, under the `encryption_rotate_key_age`
/// rule — MariaDB's automatic encryption and decryption at start-up (`encrypt_tables`
/// changed), new key versions, and too-old generations. Changes page 0 only; the
/// threads do the page work. A space that cannot be changed (its key id is missing, say)
/// is left as it is and named in the returned warnings. What each space should be is also
/// told to `rotator`, for the plan after its pass.
pub(crate) fn plan_at_open(
    spaces: &SpaceSet,
    tables: &[(String, TableMeta)],
    options: &Options,
    keyring: Option<&dyn KeyProvider>,
    rotator: &Rotator,
) -> Vec<String> {
    let trigger = Trigger::Age(options.encryption_rotate_key_age);
    let by_space: HashMap<u32, (&str, &TableMeta)> = tables
        .iter()
        .map(|(name, meta)| (meta.space_id, (name.as_str(), meta)))
        .collect();
    let mut warnings = Vec::new();
    for space in spaces.all() {
        let (label, want) = match by_space.get(&space.id()) {
            Some((name, meta)) => (format!("table {name:?}"), wanted_for_table(meta, options)),
            None if space.id() == space::SYSTEM_SPACE_ID || space.id() == space::TEMP_SPACE_ID => (
                space::file_name(space.id()),
                wanted_for_space(&space, options, keyring),
            ),
            None => continue,
        };
        rotator.want(space.id(), want, trigger);
        if let Err(error) =
            space.update_encryption(|current| plan::plan(current, want, trigger, keyring))
        {
            warnings.push(format!("{label}: encryption settings not applied: {error}"));
        }
    }
    warnings
}
