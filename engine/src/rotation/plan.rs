//! What a tablespace's encryption record becomes: the pure rules of rotation, ALTER and
//! rewrap, kept apart from the threads and the IO so they can be read (and tested) alone.
//!
//! A space's record (page 0, `space/header.rs`) lists up to four data-key *generations*,
//! each named by (keyring key id, version) and stored wrapped; new page writes use the
//! *current* one. A *pass* (`RotationState::ACTIVE`) rewrites every page `1..page_count`
//! with the current sealing; when it has gone through every page, [`finished`] drops
//! every other generation. The rules:
//!
//! 1. **New generation, no page work.** When the keyring has a newer version of the key (or
//!    the space must move to another key id) a fresh data key is made, wrapped under the
//!    latest version, and becomes current. Pages written from then on use it.
//! 2. **When a pass is needed.** The space changes key id, is being encrypted or decrypted,
//!    the operator asked for a rotation ([`Trigger::Requested`]: every page must end on
//!    the newest generation), or a generation has grown too old: MariaDB's
//!    `encryption_rotate_key_age` rule, *oldest version + age < latest version*
//!    ([`Trigger::Age`]; age 0 = never for age). With age 1 a version-1 page moves only
//!    once version 3 exists (1 + 1 < 2 is false) — see `docs/rotation.md`.
//! 3. **A running pass restarts** (from page 1) when the current generation changes under
//!    it, because the pages it already moved went to a generation that is no longer current.
//! 4. **At most four generations.** When all four slots are used, no fifth is added: a pass
//!    to the current generation runs first (it frees the slots), and its finish plans the
//!    space again (what it was last asked to become, `Rotator::want`) and adds it.
//! 5. **Decrypting** keeps the generations (encrypted pages stay readable) while new writes
//!    are plain; when the pass is done the record goes. Encrypting a plain space starts
//!    with one generation and `PLAIN_PAGES` (plain pages stay readable) until its pass is done.
//! 6. **Rewrap** re-wraps each generation's data key under the latest version of its key id
//!    (MySQL's master-key rotation); no page changes, so it is one page-0 write.

use crate::error::{Error, Result};
use crate::space::header::{EncryptionRecord, Generation, RotationState, MAX_GENERATIONS};
use crate::space::EncryptionChange;
use strongbox_keyring::provider::KeyProvider;
use strongbox_keyring::{wrap, Algorithm, KeyringError};

/// What the space should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Encrypted { key_id: u32, algorithm: Algorithm },
    Plain,
}

/// Why the record is being looked at (rule 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// An operator asked (rotate, ALTER): every page must end on the newest generation.
    Requested,
    /// A background check: re-encrypt only generations older than this age.
    Age(u32),
}

/// The change that brings `current` to `want`, or `None` when there is nothing to do.
pub(crate) fn plan(
    current: Option<&EncryptionRecord>,
    want: Want,
    trigger: Trigger,
    keyring: Option<&dyn KeyProvider>,
) -> Result<Option<EncryptionChange>> {
    match (current, want) {
        (None, Want::Plain) => Ok(None),
        (Some(record), Want::Plain) => Ok(start_decrypting(record)),
        (None, Want::Encrypted { key_id, algorithm }) => {
            let keyring = need_keyring(keyring, key_id)?;
            let (key, wrapped) = wrap::new_data_key(keyring, key_id)?;
            let version = wrapped.key_version;
            let record = EncryptionRecord {
                key_id,
                algorithm,
                current_version: version,
                min_version: version,
                rotation: RotationState {
                    next_page: 1,
                    target_version: version,
                    flags: RotationState::ACTIVE | RotationState::PLAIN_PAGES,
                },
                generations: vec![Generation { version, wrapped }],
            };
            Ok(Some(EncryptionChange {
                record: Some(record),
                new_key: Some((key_id, version, key)),
            }))
        }
        (Some(record), Want::Encrypted { key_id, .. }) => {
            let keyring = need_keyring(keyring, key_id)?;
            rotate(record, key_id, trigger, keyring)
        }
    }
}

fn need_keyring(keyring: Option<&dyn KeyProvider>, key_id: u32) -> Result<&dyn KeyProvider> {
    keyring.ok_or_else(|| Error::NoKeyring {
        what: format!("encrypting with key id {key_id}"),
    })
}

fn start_decrypting(record: &EncryptionRecord) -> Option<EncryptionChange> {
    if record.rotation.is_decrypting() {
        return None;
    }
    let mut record = record.clone();
    record.rotation = RotationState {
        next_page: 1,
        target_version: 0,
        flags: RotationState::ACTIVE | RotationState::DECRYPTING,
    };
    Some(EncryptionChange {
        record: Some(record),
        new_key: None,
    })
}

/// Rules 1–4 for a space that is (or is becoming) encrypted and should be under `key_id`.
fn rotate(
    original: &EncryptionRecord,
    key_id: u32,
    trigger: Trigger,
    keyring: &dyn KeyProvider,
) -> Result<Option<EncryptionChange>> {
    let latest = keyring
        .latest_version(key_id)
        .ok_or(Error::Keyring(KeyringError::MissingKeyId { id: key_id }))?;
    let mut record = original.clone();
    let mut new_key = None;
    let mut restart = false;
    if record.rotation.is_decrypting() {
        // Back to encrypted half-way through a decryption: some pages are plain now.
        record.rotation.flags = RotationState::PLAIN_PAGES;
        restart = true;
    }
    let on_latest = record.key_id == key_id && record.current_version >= latest;
    if !on_latest {
        let stored = record
            .generations
            .iter()
            .any(|g| g.key_id() == key_id && g.version == latest);
        if stored {
            record.key_id = key_id;
            record.current_version = latest;
            restart = true;
        } else if record.generations.len() < MAX_GENERATIONS {
            let (key, wrapped) = wrap::new_data_key(keyring, key_id)?;
            let version = wrapped.key_version;
            record.generations.push(Generation { version, wrapped });
            // Rule 3: a pass moving pages to the old current must start over.
            restart |= record.key_id != key_id || record.rotation.is_active();
            record.key_id = key_id;
            record.current_version = version;
            new_key = Some((key_id, version, key));
        } else if !record.rotation.is_active() {
            restart = true; // rule 4
        }
    }
    let other_key = record
        .generations
        .iter()
        .any(|g| g.key_id() != record.key_id);
    let stale = match trigger {
        Trigger::Requested => record.generations.len() > 1,
        Trigger::Age(0) => false,
        Trigger::Age(age) => record
            .generations
            .iter()
            .filter(|g| g.key_id() == record.key_id)
            .any(|g| g.version.saturating_add(age) < latest),
    };
    if (other_key || stale) && !record.rotation.is_active() {
        restart = true;
    }
    if restart {
        record.rotation.next_page = 1;
        record.rotation.target_version = record.current_version;
        record.rotation.flags |= RotationState::ACTIVE;
    }
    record.min_version = record.oldest_version();
    if record == *original && new_key.is_none() {
        return Ok(None);
    }
    Ok(Some(EncryptionChange {
        record: Some(record),
        new_key,
    }))
}

/// The record once a pass has moved every page (rule 5 and the end of every pass): only
/// the current generation is kept, or nothing when decrypting.
pub(crate) fn finished(record: &EncryptionRecord) -> EncryptionChange {
    if record.rotation.is_decrypting() {
        return EncryptionChange {
            record: None,
            new_key: None,
        };
    }
    let mut record = record.clone();
    let (key_id, version) = (record.key_id, record.current_version);
    record
        .generations
        .retain(|g| g.key_id() == key_id && g.version == version);
    record.min_version = version;
    record.rotation = RotationState::default();
    EncryptionChange {
        record: Some(record),
        new_key: None,
    }
}

/// Rule 6: every generation re-wrapped under the latest version of its key id, or `None`
/// when each already is.
pub(crate) fn rewrap(
    record: &EncryptionRecord,
    keyring: &dyn KeyProvider,
) -> Result<Option<EncryptionChange>> {
    let mut changed = record.clone();
    let mut any = false;
    for generation in &mut changed.generations {
        let key_id = generation.key_id();
        let latest = keyring
            .latest_version(key_id)
            .ok_or(Error::Keyring(KeyringError::MissingKeyId { id: key_id }))?;
        if generation.wrapped.key_version < latest {
            generation.wrapped = wrap::rewrap(keyring, &generation.wrapped, key_id)?;
            any = true;
        }
    }
    Ok(any.then_some(EncryptionChange {
        record: Some(changed),
        new_key: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongbox_keyring::provider::MemoryKeyProvider;

    const CTR: Algorithm = Algorithm::AesCtr;

    fn keyring() -> MemoryKeyProvider {
        let keys = MemoryKeyProvider::new();
        keys.add_random(1, 1, 256).unwrap();
        keys.add_random(5, 1, 256).unwrap();
        keys
    }

    fn want(key_id: u32) -> Want {
        Want::Encrypted {
            key_id,
            algorithm: CTR,
        }
    }

    /// Applies `plan` and returns the record (panics when there was nothing to do).
    fn apply(
        record: Option<&EncryptionRecord>,
        want: Want,
        trigger: Trigger,
        keys: &MemoryKeyProvider,
    ) -> Option<EncryptionRecord> {
        plan(record, want, trigger, Some(keys))
            .unwrap()
            .expect("a change")
            .record
    }

    fn encrypted(keys: &MemoryKeyProvider) -> EncryptionRecord {
        let record = apply(None, want(1), Trigger::Requested, keys).unwrap();
        finished(&record).record.unwrap()
    }

    #[test]
    fn encrypting_a_plain_space_starts_a_pass_that_accepts_plain_pages() {
        let keys = keyring();
        let record = apply(None, want(1), Trigger::Requested, &keys).unwrap();
        assert!(record.rotation.is_active() && record.rotation.plain_pages_allowed());
        assert_eq!(record.rotation.next_page, 1);
        let done = finished(&record).record.unwrap();
        assert_eq!(done.rotation, RotationState::default());
        assert_eq!(done.generations.len(), 1);
    }

    #[test]
    fn a_new_key_version_adds_a_generation_and_a_requested_rotation_moves_every_page() {
        let keys = keyring();
        let record = encrypted(&keys);
        assert!(
            plan(Some(&record), want(1), Trigger::Requested, Some(&keys))
                .unwrap()
                .is_none()
        );
        keys.rotate(1).unwrap();
        let rotated = apply(Some(&record), want(1), Trigger::Requested, &keys).unwrap();
        assert_eq!(rotated.current_version, 2);
        assert_eq!(rotated.min_version, 1);
        assert!(rotated.rotation.is_active());
        let done = finished(&rotated).record.unwrap();
        assert_eq!((done.min_version, done.generations.len()), (2, 1));
    }

    #[test]
    fn the_age_rule_is_mariadbs_version_plus_age_below_latest() {
        let keys = keyring();
        let record = encrypted(&keys);
        keys.rotate(1).unwrap(); // latest 2: 1 + 1 < 2 is false
        let v2 = apply(Some(&record), want(1), Trigger::Age(1), &keys).unwrap();
        assert_eq!(
            v2.current_version, 2,
            "new writes use the new version at once"
        );
        assert!(
            !v2.rotation.is_active(),
            "age 1: version 1 pages stay until version 3"
        );
        keys.rotate(1).unwrap(); // latest 3: 1 + 1 < 3
        let v3 = apply(Some(&v2), want(1), Trigger::Age(1), &keys).unwrap();
        assert!(v3.rotation.is_active());
        assert_eq!(v3.generations.len(), 3);
        keys.rotate(1).unwrap();
        let never = apply(Some(&record), want(1), Trigger::Age(0), &keys).unwrap();
        assert!(
            !never.rotation.is_active(),
            "age 0 never re-encrypts for age"
        );
    }

    #[test]
    fn a_full_header_runs_a_pass_before_adding_a_fifth_generation() {
        let keys = keyring();
        let mut record = encrypted(&keys);
        for _ in 0..3 {
            keys.rotate(1).unwrap();
            record = apply(Some(&record), want(1), Trigger::Age(0), &keys).unwrap();
        }
        assert_eq!(record.generations.len(), MAX_GENERATIONS);
        keys.rotate(1).unwrap();
        let full = apply(Some(&record), want(1), Trigger::Age(0), &keys).unwrap();
        assert_eq!(full.generations.len(), MAX_GENERATIONS);
        assert_eq!(full.current_version, 4, "no fifth generation yet");
        assert!(full.rotation.is_active(), "a pass frees the slots");
        let freed = finished(&full).record.unwrap();
        let next = apply(Some(&freed), want(1), Trigger::Age(0), &keys).unwrap();
        assert_eq!(next.current_version, 5);
    }

    #[test]
    fn changing_key_id_restarts_and_decrypting_then_encrypting_again_keeps_plain_pages_readable() {
        let keys = keyring();
        let record = encrypted(&keys);
        let moved = apply(Some(&record), want(5), Trigger::Age(0), &keys).unwrap();
        assert_eq!(moved.key_id, 5);
        assert!(
            moved.rotation.is_active(),
            "another key id always needs a pass"
        );
        let decrypting = apply(Some(&moved), Want::Plain, Trigger::Requested, &keys).unwrap();
        assert!(decrypting.rotation.is_decrypting());
        assert!(finished(&decrypting).record.is_none());
        let back = apply(Some(&decrypting), want(5), Trigger::Requested, &keys).unwrap();
        assert!(!back.rotation.is_decrypting() && back.rotation.plain_pages_allowed());
        assert_eq!(back.rotation.next_page, 1);
    }

    #[test]
    fn rewrap_moves_every_generation_to_the_latest_keyring_version() {
        let keys = keyring();
        let record = encrypted(&keys);
        assert!(rewrap(&record, &keys).unwrap().is_none());
        keys.rotate(1).unwrap();
        let rewrapped = rewrap(&record, &keys).unwrap().unwrap().record.unwrap();
        assert_eq!(rewrapped.generations[0].wrapped.key_version, 2);
        assert_eq!(
            rewrapped.generations[0].version, 1,
            "the data key and its pages do not change"
        );
        assert!(keys.remove(1, 1));
        wrap::unwrap(&keys, &rewrapped.generations[0].wrapped).unwrap();
    }
}
