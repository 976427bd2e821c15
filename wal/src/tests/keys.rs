//! Keys: wrong and missing keys are clear errors naming key id and version; an encrypted
//! log holds no plaintext of its records.

use std::sync::Arc;

use strongbox_keyring::provider::MemoryKeyProvider;
use strongbox_keyring::KeyringError;

use super::*;
use crate::control::CONTROL_FILE;
use crate::{Log, WalError};

const MARKER: &[u8] = b"STRONGBOX-PLAINTEXT-MARKER";

fn marker_records(i: u32) -> Vec<Record> {
    let mut image = vec![0u8; 300];
    image[100..100 + MARKER.len()].copy_from_slice(MARKER);
    vec![
        Record::PageDelta {
            space_id: i,
            page_no: i,
            ranges: vec![(7, MARKER.to_vec()), (900, MARKER.repeat(3))],
        },
        Record::PageImage {
            space_id: i,
            page_no: i,
            image,
        },
        Record::CreateSpace {
            space_id: i,
            payload: MARKER.to_vec(),
        },
        Record::Commit { txn_id: 1 },
    ]
}

fn marker_hits(vfs: &HookVfs) -> usize {
    snapshot(&vfs.mem)
        .iter()
        .map(|(_, bytes)| bytes.windows(MARKER.len()).filter(|w| *w == MARKER).count())
        .sum()
}

#[test]
fn encrypted_log_files_hold_no_marker_and_plain_ones_do() {
    for encrypt in [true, false] {
        let vfs = HookVfs::default();
        let keys = keys();
        let config = small_config(encrypt);
        let log = Log::create(Arc::new(vfs.clone()), dir(), config.clone(), Some(&keys)).unwrap();
        for i in 0..50 {
            log.commit(log.append(&marker_records(i)).unwrap()).unwrap();
        }
        log.close().unwrap();
        let hits = marker_hits(&vfs);
        if encrypt {
            assert_eq!(hits, 0, "plaintext in an encrypted log");
        } else {
            assert!(
                hits >= 50 * 4,
                "control: the plain log holds the marker ({hits})"
            );
        }
        let (log, report) = Log::open(Arc::new(vfs), dir(), config, Some(&keys)).unwrap();
        assert_eq!(report.records.len(), 200);
        log.close().unwrap();
    }
}

fn encrypted_log() -> (HookVfs, MemoryKeyProvider) {
    let vfs = HookVfs::default();
    let keys = keys();
    let log = Log::create(
        Arc::new(vfs.clone()),
        dir(),
        small_config(true),
        Some(&keys),
    )
    .unwrap();
    log.commit(log.append(&marker_records(1)).unwrap()).unwrap();
    log.close().unwrap();
    (vfs, keys)
}

#[test]
fn a_different_key_under_the_same_id_is_refused_naming_id_and_version() {
    let (vfs, _) = encrypted_log();
    let impostor = MemoryKeyProvider::new();
    impostor.add_random(1, 1, 256).unwrap();
    let error = Log::open(Arc::new(vfs), dir(), small_config(true), Some(&impostor)).unwrap_err();
    assert!(
        matches!(
            &error,
            WalError::LogKey {
                key_id: 1,
                key_version: 1,
                source: KeyringError::UnwrapFailed { .. }
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("key id 1 version 1"), "{error}");
}

#[test]
fn a_missing_key_version_or_keyring_is_refused() {
    let (vfs, _) = encrypted_log();
    let rotated = MemoryKeyProvider::new();
    rotated.add_random(1, 2, 256).unwrap();
    let error = Log::open(
        Arc::new(vfs.clone()),
        dir(),
        small_config(true),
        Some(&rotated),
    )
    .unwrap_err();
    assert!(
        matches!(
            &error,
            WalError::LogKey {
                key_id: 1,
                key_version: 1,
                source: KeyringError::MissingKeyVersion { id: 1, version: 1 }
            }
        ),
        "{error}"
    );
    assert!(matches!(
        Log::open(Arc::new(vfs.clone()), dir(), small_config(true), None),
        Err(WalError::NoKeyring)
    ));
    assert!(matches!(
        Log::open(Arc::new(vfs), dir(), small_config(false), None),
        Err(WalError::EncryptionMismatch {
            log_encrypted: true
        })
    ));
    let empty = HookVfs::default();
    assert!(matches!(
        Log::create(Arc::new(empty.clone()), dir(), small_config(true), None),
        Err(WalError::NoKeyring)
    ));
    assert!(matches!(
        Log::create(
            Arc::new(empty),
            dir(),
            small_config(true),
            Some(&MemoryKeyProvider::new())
        ),
        Err(WalError::LogKey {
            key_id: 1,
            source: KeyringError::MissingKeyId { id: 1 },
            ..
        })
    ));
}

/// The control file of another log (same keyring, other data key): the key unwraps, but
/// the first block passes its checksum and fails decryption.
#[test]
fn blocks_that_do_not_decrypt_with_the_log_key_are_a_wrong_key_error() {
    let (vfs, keys) = encrypted_log();
    let other = HookVfs::default();
    let log = Log::create(
        Arc::new(other.clone()),
        dir(),
        small_config(true),
        Some(&keys),
    )
    .unwrap();
    log.close().unwrap();
    let control = dir().join(CONTROL_FILE);
    vfs.mem
        .set_contents(&control, other.mem.contents(&control).unwrap());
    let error = Log::open(Arc::new(vfs), dir(), small_config(true), Some(&keys)).unwrap_err();
    assert!(
        matches!(
            error,
            WalError::WrongKey {
                key_id: 1,
                key_version: 1,
                lsn: 24
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("key id 1 version 1"));
}

#[test]
fn rewrapped_log_key_opens_without_the_old_keyring_version() {
    let vfs = HookVfs::default();
    let keys = keys();
    let log = Log::create(
        Arc::new(vfs.clone()),
        dir(),
        small_config(true),
        Some(&keys),
    )
    .unwrap();
    for i in 0..10 {
        log.commit(log.append(&marker_records(i)).unwrap()).unwrap();
    }
    let old = log.wrapping_key().unwrap();
    let new_version = keys.rotate(1).unwrap();
    assert_eq!(
        log.rewrap_key(&keys).unwrap(),
        Some((1, new_version)),
        "the log key is wrapped under the new version"
    );
    assert_eq!(log.wrapping_key(), Some((1, new_version)));
    drop(log); // a crash: the records must still be readable
    assert!(keys.remove(old.0, old.1));
    let (log, report) = Log::open(
        Arc::new(vfs.clone()),
        dir(),
        small_config(true),
        Some(&keys),
    )
    .unwrap();
    assert_eq!(
        report.records.len(),
        40,
        "every record read back with the rewrapped key"
    );
    log.close().unwrap();
}
