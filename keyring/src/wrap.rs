//! The second tier: wrapping a tablespace's random data key under a keyring key.
//!
//! Every tablespace (and the redo log) has its own random [`DataKey`]; only data keys touch
//! pages. The data key is stored in the tablespace's header page *wrapped* — encrypted and
//! integrity-protected — under a keyring key `(id, version)` with AES Key Wrap (RFC 3394,
//! NIST SP 800-38F). AES-KW needs no nonce and carries a 64-bit integrity check, so
//! unwrapping under the wrong keyring key fails cleanly instead of yielding a wrong data key.
//!
//! This is what makes MySQL-style master-key rotation instant: rotating the keyring key
//! only rewraps a few dozen bytes per tablespace ([`rewrap`]); the pages do not change.
//!
//! ## Stored form ([`WrappedKey::ENCODED_LEN`] = 52 bytes, little-endian)
//!
//! ```text
//! offset size field
//! 0      4    key_id       keyring key id that wraps the data key
//! 4      4    key_version  keyring key version that wraps the data key
//! 8      1    wrapped_len  24 (128-bit data key) or 40 (256-bit data key)
//! 9      3    reserved     zero
//! 12     40   wrapped      AES-KW output, zero-padded to 40 bytes
//! ```

use crate::cipher::DataKey;
use crate::error::{KeyringError, Result};
use crate::provider::{latest_key, KeyProvider, KeyringKey};
use crate::secret::SecretBytes;
use aes_kw::{KeyInit, KwAes128, KwAes192, KwAes256};

const KEY_ID_OFFSET: usize = 0;
const KEY_VERSION_OFFSET: usize = KEY_ID_OFFSET + 4;
const WRAPPED_LEN_OFFSET: usize = KEY_VERSION_OFFSET + 4;
const RESERVED_OFFSET: usize = WRAPPED_LEN_OFFSET + 1;
const WRAPPED_OFFSET: usize = RESERVED_OFFSET + 3;
/// AES-KW adds one 64-bit semiblock to what it wraps.
const KW_OVERHEAD: usize = 8;
const MAX_WRAPPED: usize = 32 + KW_OVERHEAD;

/// A data key wrapped under keyring key `(key_id, key_version)`. Safe to store and show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub key_id: u32,
    pub key_version: u32,
    wrapped: Vec<u8>,
}

/// Why stored wrapped-key bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed wrapped data key: {0}")]
pub struct WrappedKeyFormatError(pub &'static str);

impl WrappedKey {
    /// Bytes the stored form takes.
    pub const ENCODED_LEN: usize = WRAPPED_OFFSET + MAX_WRAPPED;

    /// Writes the stored form into `out[..ENCODED_LEN]`.
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..Self::ENCODED_LEN];
        out.fill(0);
        out[KEY_ID_OFFSET..KEY_VERSION_OFFSET].copy_from_slice(&self.key_id.to_le_bytes());
        out[KEY_VERSION_OFFSET..WRAPPED_LEN_OFFSET]
            .copy_from_slice(&self.key_version.to_le_bytes());
        out[WRAPPED_LEN_OFFSET] = self.wrapped.len() as u8;
        out[WRAPPED_OFFSET..WRAPPED_OFFSET + self.wrapped.len()].copy_from_slice(&self.wrapped);
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> std::result::Result<WrappedKey, WrappedKeyFormatError> {
        let bytes = bytes
            .get(..Self::ENCODED_LEN)
            .ok_or(WrappedKeyFormatError("too short"))?;
        let u32_at = |offset: usize| {
            u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
        };
        let len = usize::from(bytes[WRAPPED_LEN_OFFSET]);
        if len != 16 + KW_OVERHEAD && len != 32 + KW_OVERHEAD {
            return Err(WrappedKeyFormatError("wrapped length is neither 24 nor 40"));
        }
        if bytes[RESERVED_OFFSET..WRAPPED_OFFSET]
            .iter()
            .any(|&b| b != 0)
            || bytes[WRAPPED_OFFSET + len..].iter().any(|&b| b != 0)
        {
            return Err(WrappedKeyFormatError("reserved bytes are not zero"));
        }
        let key_id = u32_at(KEY_ID_OFFSET);
        if key_id == 0 {
            return Err(WrappedKeyFormatError("key id 0"));
        }
        Ok(WrappedKey {
            key_id,
            key_version: u32_at(KEY_VERSION_OFFSET),
            wrapped: bytes[WRAPPED_OFFSET..WRAPPED_OFFSET + len].to_vec(),
        })
    }

    /// Size of the data key inside, in bits.
    pub fn data_key_bits(&self) -> usize {
        (self.wrapped.len() - KW_OVERHEAD) * 8
    }
}

/// The data-key size that goes with a keyring key: 128-bit keyring keys make 128-bit data
/// keys; 192- and 256-bit keyring keys make 256-bit data keys (never weaker than the key
/// that protects them; AES-192 is skipped because few fast AES-GCM implementations offer it).
pub fn data_key_bits_for(keyring_key: &KeyringKey) -> usize {
    if keyring_key.bits() <= 128 {
        128
    } else {
        256
    }
}

/// Wraps `data_key` under keyring key `(key_id, key_version)`.
pub fn wrap(
    provider: &dyn KeyProvider,
    key_id: u32,
    key_version: u32,
    data_key: &DataKey,
) -> Result<WrappedKey> {
    let kek = provider.key(key_id, key_version)?;
    wrap_with(&kek, data_key)
}

/// Wraps `data_key` under the latest version of keyring key `key_id`.
pub fn wrap_latest(
    provider: &dyn KeyProvider,
    key_id: u32,
    data_key: &DataKey,
) -> Result<WrappedKey> {
    let kek = latest_key(provider, key_id)?;
    wrap_with(&kek, data_key)
}

/// A fresh random data key sized for keyring key `key_id`'s latest version, plus its
/// wrapped form — what a new tablespace stores in its header.
pub fn new_data_key(provider: &dyn KeyProvider, key_id: u32) -> Result<(DataKey, WrappedKey)> {
    let kek = latest_key(provider, key_id)?;
    let data_key = DataKey::generate(data_key_bits_for(&kek))?;
    let wrapped = wrap_with(&kek, &data_key)?;
    Ok((data_key, wrapped))
}

/// Unwraps a stored data key; a wrong keyring key is `UnwrapFailed` naming id and version.
pub fn unwrap(provider: &dyn KeyProvider, wrapped: &WrappedKey) -> Result<DataKey> {
    // The version needed is known here, so a missing id is reported with it.
    let kek = provider
        .key(wrapped.key_id, wrapped.key_version)
        .map_err(|error| match error {
            KeyringError::MissingKeyId { id } => KeyringError::MissingKeyVersion {
                id,
                version: wrapped.key_version,
            },
            other => other,
        })?;
    let failed = || KeyringError::UnwrapFailed {
        id: wrapped.key_id,
        version: wrapped.key_version,
    };
    let mut buf = zeroize::Zeroizing::new([0u8; MAX_WRAPPED]);
    let len = wrapped.wrapped.len() - KW_OVERHEAD;
    if !Kek::new(&kek)?.unwrap(&wrapped.wrapped, &mut buf[..]) {
        return Err(failed());
    }
    DataKey::from_secret(SecretBytes::new(buf[..len].to_vec()))
}

/// Unwraps under the old keyring key and wraps again under the latest version of
/// `new_key_id` (MySQL's master-key rotation). The data key itself does not change.
pub fn rewrap(
    provider: &dyn KeyProvider,
    wrapped: &WrappedKey,
    new_key_id: u32,
) -> Result<WrappedKey> {
    let data_key = unwrap(provider, wrapped)?;
    wrap_latest(provider, new_key_id, &data_key)
}

/// AES Key Wrap under a keyring key of any of the three AES sizes.
enum Kek {
    Aes128(KwAes128),
    Aes192(KwAes192),
    Aes256(KwAes256),
}

impl Kek {
    fn new(kek: &KeyringKey) -> Result<Kek> {
        let bytes = kek.secret.expose();
        let kek = match bytes.len() {
            16 => KwAes128::new_from_slice(bytes).map(Kek::Aes128),
            24 => KwAes192::new_from_slice(bytes).map(Kek::Aes192),
            32 => KwAes256::new_from_slice(bytes).map(Kek::Aes256),
            _ => {
                return Err(KeyringError::InvalidKeyLength {
                    bits: bytes.len() * 8,
                })
            }
        };
        kek.map_err(|_| KeyringError::InvalidKeyLength {
            bits: bytes.len() * 8,
        })
    }

    /// Wraps `plain` into `out`; false if the lengths do not suit AES-KW.
    fn wrap(&self, plain: &[u8], out: &mut [u8]) -> bool {
        match self {
            Kek::Aes128(kw) => kw.wrap_key(plain, out).is_ok(),
            Kek::Aes192(kw) => kw.wrap_key(plain, out).is_ok(),
            Kek::Aes256(kw) => kw.wrap_key(plain, out).is_ok(),
        }
    }

    /// Unwraps `wrapped` into `out`; false if the integrity check fails.
    fn unwrap(&self, wrapped: &[u8], out: &mut [u8]) -> bool {
        match self {
            Kek::Aes128(kw) => kw.unwrap_key(wrapped, out).is_ok(),
            Kek::Aes192(kw) => kw.unwrap_key(wrapped, out).is_ok(),
            Kek::Aes256(kw) => kw.unwrap_key(wrapped, out).is_ok(),
        }
    }
}

fn wrap_with(kek: &KeyringKey, data_key: &DataKey) -> Result<WrappedKey> {
    let plain = data_key.secret().expose();
    let mut buf = [0u8; MAX_WRAPPED];
    let out_len = plain.len() + KW_OVERHEAD;
    if !Kek::new(kek)?.wrap(plain, &mut buf[..]) {
        return Err(KeyringError::InvalidKeyLength {
            bits: plain.len() * 8,
        });
    }
    Ok(WrappedKey {
        key_id: kek.id,
        key_version: kek.version,
        wrapped: buf[..out_len].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::MemoryKeyProvider;

    fn provider() -> MemoryKeyProvider {
        let provider = MemoryKeyProvider::new();
        provider.add_random(1, 1, 256).unwrap();
        provider.add_random(5, 1, 128).unwrap();
        provider.add_random(6, 1, 192).unwrap();
        provider
    }

    fn same_key(a: &DataKey, b: &DataKey) -> bool {
        a.secret().expose() == b.secret().expose()
    }

    #[test]
    fn wrap_unwrap_round_trip_for_every_keyring_key_size() {
        let provider = provider();
        for (id, expected_bits) in [(1, 256), (5, 128), (6, 256)] {
            let (data_key, wrapped) = new_data_key(&provider, id).unwrap();
            assert_eq!(data_key.bits(), expected_bits);
            assert_eq!(wrapped.data_key_bits(), expected_bits);
            let mut stored = [0u8; WrappedKey::ENCODED_LEN];
            wrapped.encode(&mut stored);
            let decoded = WrappedKey::decode(&stored).unwrap();
            assert_eq!(decoded, wrapped);
            assert!(same_key(&unwrap(&provider, &decoded).unwrap(), &data_key));
        }
    }

    #[test]
    fn unwrapping_under_a_different_key_is_a_clear_error() {
        let provider = provider();
        let (_, wrapped) = new_data_key(&provider, 1).unwrap();
        let impostor = MemoryKeyProvider::new();
        impostor.add_random(1, 1, 256).unwrap();
        match unwrap(&impostor, &wrapped) {
            Err(KeyringError::UnwrapFailed { id: 1, version: 1 }) => {}
            other => panic!("expected UnwrapFailed, got {other:?}"),
        }
        let empty = MemoryKeyProvider::new();
        assert!(matches!(
            unwrap(&empty, &wrapped),
            Err(KeyringError::MissingKeyVersion { id: 1, version: 1 })
        ));
    }

    #[test]
    fn rewrap_keeps_the_data_key_and_moves_to_the_new_version() {
        let provider = provider();
        let (data_key, wrapped) = new_data_key(&provider, 1).unwrap();
        provider.rotate(1).unwrap();
        let rewrapped = rewrap(&provider, &wrapped, 1).unwrap();
        assert_eq!((rewrapped.key_id, rewrapped.key_version), (1, 2));
        assert!(same_key(&unwrap(&provider, &rewrapped).unwrap(), &data_key));
        provider.remove(1, 1);
        assert!(unwrap(&provider, &wrapped).is_err());
        assert!(unwrap(&provider, &rewrapped).is_ok());
    }

    #[test]
    fn malformed_stored_forms_are_rejected() {
        let provider = provider();
        let (_, wrapped) = new_data_key(&provider, 1).unwrap();
        let mut stored = [0u8; WrappedKey::ENCODED_LEN];
        wrapped.encode(&mut stored);
        assert!(WrappedKey::decode(&stored[..10]).is_err());
        let mut bad_len = stored;
        bad_len[WRAPPED_LEN_OFFSET] = 33;
        assert!(WrappedKey::decode(&bad_len).is_err());
        let mut bad_reserved = stored;
        bad_reserved[RESERVED_OFFSET] = 1;
        assert!(WrappedKey::decode(&bad_reserved).is_err());
        let mut flipped = stored;
        flipped[WRAPPED_OFFSET + 3] ^= 1;
        let tampered = WrappedKey::decode(&flipped).unwrap();
        assert!(matches!(
            unwrap(&provider, &tampered),
            Err(KeyringError::UnwrapFailed { .. })
        ));
    }
}
