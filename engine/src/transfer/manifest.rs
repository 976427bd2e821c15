//! The export manifest `<table>.sbmeta`: its byte layout, encoding, and the checks import
//! makes on every field (`docs/transfer.md`, `docs/FORMAT.md` §10).
//!
//! ## Manifest `<table>.sbmeta` (little-endian, 344 bytes)
//!
//! ```text
//! offset size field
//! 0      8    magic             "SBXEXPRT"
//! 8      4    format_version    1
//! 12     4    page_size         bytes; must equal the importing database's
//! 16     4    source_space_id   the space id every page of the copy carries
//! 20     4    page_count        pages of the copy, page 0 included (>= 2)
//! 24     4    free_head         first page of the free list (0 = empty)
//! 28     4    free_count        pages on the free list
//! 32     1    name_len          1..=64
//! 33     1    encrypted         0 no, 1 yes
//! 34     1    algorithm         1 aes_ctr, 2 aes_cbc, 3 aes_gcm (0 when unencrypted)
//! 35     1    generation_count  1..=4 (0 when unencrypted)
//! 36     64   name              the table's name, zero-padded
//! 100    4    key_id            keyring key id of the table (0 when unencrypted)
//! 104    4    current_version   generation new writes used
//! 108    4    min_version       oldest generation a page may carry
//! 112    4    reserved          0
//! 116    224  generations       4 × { version u32, WrappedKey (52 bytes, FORMAT.md §4) },
//!                               each data key wrapped under the transfer key (key_id, 1);
//!                               unused slots zero
//! 340    4    crc               CRC-32 of bytes 0..340
//! ```
//!
//! Every field is checked on import; a failure names the field ([`Error::BadExport`]).
//!

use super::TRANSFER_KEY_VERSION;
use crate::catalog::check_table_name;
use crate::error::{Error, Result};
use crate::io::{OpenMode, StdVfs, Vfs};
use crate::page::header::{cipher_code, cipher_from_code};
use crate::page::PageSize;
use crate::space::header::{EncryptionRecord, Generation, RotationState, MAX_GENERATIONS};
use crate::space::{self, AllocState};
use std::path::Path;
use strongbox_keyring::wrap::WrappedKey;

const MAGIC: &[u8; 8] = b"SBXEXPRT";
const FORMAT_VERSION: u32 = 1;
const MAX_NAME_LEN: usize = 64;

const MAGIC_OFFSET: usize = 0;
const FORMAT_OFFSET: usize = MAGIC_OFFSET + 8;
const PAGE_SIZE_OFFSET: usize = FORMAT_OFFSET + 4;
const SOURCE_SPACE_OFFSET: usize = PAGE_SIZE_OFFSET + 4;
const PAGE_COUNT_OFFSET: usize = SOURCE_SPACE_OFFSET + 4;
const FREE_HEAD_OFFSET: usize = PAGE_COUNT_OFFSET + 4;
const FREE_COUNT_OFFSET: usize = FREE_HEAD_OFFSET + 4;
const NAME_LEN_OFFSET: usize = FREE_COUNT_OFFSET + 4;
const ENCRYPTED_OFFSET: usize = NAME_LEN_OFFSET + 1;
const ALGORITHM_OFFSET: usize = ENCRYPTED_OFFSET + 1;
const GENERATION_COUNT_OFFSET: usize = ALGORITHM_OFFSET + 1;
const NAME_OFFSET: usize = GENERATION_COUNT_OFFSET + 1;
const KEY_ID_OFFSET: usize = NAME_OFFSET + MAX_NAME_LEN;
const CURRENT_VERSION_OFFSET: usize = KEY_ID_OFFSET + 4;
const MIN_VERSION_OFFSET: usize = CURRENT_VERSION_OFFSET + 4;
const RESERVED_OFFSET: usize = MIN_VERSION_OFFSET + 4;
const GENERATIONS_OFFSET: usize = RESERVED_OFFSET + 4;
const GENERATION_LEN: usize = 4 + WrappedKey::ENCODED_LEN;
const CRC_OFFSET: usize = GENERATIONS_OFFSET + MAX_GENERATIONS * GENERATION_LEN;
/// Bytes of a manifest file.
const MANIFEST_LEN: usize = CRC_OFFSET + 4;

const _: () = assert!(
    MANIFEST_LEN == 344,
    "the module doc gives the manifest 344 bytes"
);

/// The manifest, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Manifest {
    pub(super) table: String,
    pub(super) source_space_id: u32,
    pub(super) page_size: PageSize,
    pub(super) alloc: AllocState,
    /// The record with every data key wrapped under the transfer key; `None` when the
    /// table is not encrypted.
    pub(super) encryption: Option<EncryptionRecord>,
}

impl Manifest {
    /// Reads and checks `path`; the file name must be the manifest's table's.
    pub(super) fn read(path: &Path) -> Result<Manifest> {
        let file = StdVfs
            .open(path, OpenMode::Existing)
            .map_err(|e| Error::io("open", path, e))?;
        let len = file.size().map_err(|e| Error::io("read", path, e))?;
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(4096)];
        file.read_at(&mut bytes, 0)
            .map_err(|e| Error::io("read", path, e))?;
        let manifest = Manifest::decode(&bytes).map_err(|problem| Error::BadExport {
            path: path.to_path_buf(),
            problem,
        })?;
        let stem = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".sbmeta"));
        if stem != Some(manifest.table.as_str()) {
            return Err(Error::BadExport {
                path: path.to_path_buf(),
                problem: format!(
                    "the manifest is of table {:?}; its files must keep that name (rename \
                     the table with the import's name option instead)",
                    manifest.table
                ),
            });
        }
        Ok(manifest)
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; MANIFEST_LEN];
        out[MAGIC_OFFSET..FORMAT_OFFSET].copy_from_slice(MAGIC);
        put_u32(&mut out, FORMAT_OFFSET, FORMAT_VERSION);
        put_u32(&mut out, PAGE_SIZE_OFFSET, self.page_size.get());
        put_u32(&mut out, SOURCE_SPACE_OFFSET, self.source_space_id);
        put_u32(&mut out, PAGE_COUNT_OFFSET, self.alloc.page_count);
        put_u32(&mut out, FREE_HEAD_OFFSET, self.alloc.free_head);
        put_u32(&mut out, FREE_COUNT_OFFSET, self.alloc.free_count);
        out[NAME_LEN_OFFSET] = self.table.len() as u8;
        out[NAME_OFFSET..NAME_OFFSET + self.table.len()].copy_from_slice(self.table.as_bytes());
        if let Some(record) = &self.encryption {
            out[ENCRYPTED_OFFSET] = 1;
            out[ALGORITHM_OFFSET] = cipher_code(Some(record.algorithm));
            out[GENERATION_COUNT_OFFSET] = record.generations.len() as u8;
            put_u32(&mut out, KEY_ID_OFFSET, record.key_id);
            put_u32(&mut out, CURRENT_VERSION_OFFSET, record.current_version);
            put_u32(&mut out, MIN_VERSION_OFFSET, record.min_version);
            for (index, generation) in record.generations.iter().enumerate() {
                let start = GENERATIONS_OFFSET + index * GENERATION_LEN;
                put_u32(&mut out, start, generation.version);
                generation
                    .wrapped
                    .encode(&mut out[start + 4..start + GENERATION_LEN]);
            }
        }
        let crc = crc32fast::hash(&out[..CRC_OFFSET]);
        put_u32(&mut out, CRC_OFFSET, crc);
        out
    }

    /// Decodes and checks a manifest; the error names what is wrong.
    pub(super) fn decode(bytes: &[u8]) -> std::result::Result<Manifest, String> {
        if bytes.get(MAGIC_OFFSET..FORMAT_OFFSET) != Some(MAGIC.as_slice()) {
            return Err("not a Strongbox export manifest (bad magic)".into());
        }
        let format = bytes.get(FORMAT_OFFSET..PAGE_SIZE_OFFSET).map(le_u32);
        if format != Some(FORMAT_VERSION) {
            return Err(format!(
                "manifest format version {}, this build reads version {FORMAT_VERSION}",
                format.map_or("(missing)".into(), |v| v.to_string())
            ));
        }
        if bytes.len() != MANIFEST_LEN {
            return Err(format!(
                "the manifest is {} bytes, expected {MANIFEST_LEN} (truncated or extended)",
                bytes.len()
            ));
        }
        let u32_at = |offset: usize| le_u32(&bytes[offset..offset + 4]);
        if u32_at(CRC_OFFSET) != crc32fast::hash(&bytes[..CRC_OFFSET]) {
            return Err("checksum mismatch: the manifest was damaged or edited".into());
        }
        let page_size =
            PageSize::try_from(u32_at(PAGE_SIZE_OFFSET)).map_err(|e| format!("page size: {e}"))?;
        let source_space_id = u32_at(SOURCE_SPACE_OFFSET);
        if source_space_id == space::SYSTEM_SPACE_ID || source_space_id == space::TEMP_SPACE_ID {
            return Err(format!(
                "source space id {source_space_id} is not a table's tablespace"
            ));
        }
        let alloc = AllocState {
            page_count: u32_at(PAGE_COUNT_OFFSET),
            free_head: u32_at(FREE_HEAD_OFFSET),
            free_count: u32_at(FREE_COUNT_OFFSET),
        };
        check_alloc(&alloc)?;
        let table = read_name(bytes)?;
        let encryption = match bytes[ENCRYPTED_OFFSET] {
            0 => {
                if bytes[ALGORITHM_OFFSET..NAME_OFFSET].iter().any(|&b| b != 0)
                    || bytes[KEY_ID_OFFSET..CRC_OFFSET].iter().any(|&b| b != 0)
                {
                    return Err("an unencrypted table's manifest carries key fields".into());
                }
                None
            }
            1 => Some(read_encryption(bytes)?),
            other => return Err(format!("encrypted flag {other} is neither 0 nor 1")),
        };
        Ok(Manifest {
            table,
            source_space_id,
            page_size,
            alloc,
            encryption,
        })
    }
}

fn check_alloc(alloc: &AllocState) -> std::result::Result<(), String> {
    if alloc.page_count < 2 {
        return Err(format!(
            "page count {} (a table has at least page 0 and its root)",
            alloc.page_count
        ));
    }
    let free_list_ok = if alloc.free_count == 0 {
        alloc.free_head == 0
    } else {
        alloc.free_head >= 2 && alloc.free_head < alloc.page_count
    } && alloc.free_count <= alloc.page_count - 2;
    if !free_list_ok {
        return Err(format!(
            "free list (head {}, {} pages) does not fit in {} pages",
            alloc.free_head, alloc.free_count, alloc.page_count
        ));
    }
    Ok(())
}

fn read_name(bytes: &[u8]) -> std::result::Result<String, String> {
    let len = usize::from(bytes[NAME_LEN_OFFSET]);
    if !(1..=MAX_NAME_LEN).contains(&len) {
        return Err(format!(
            "table name length {len} (expected 1 to {MAX_NAME_LEN})"
        ));
    }
    let field = &bytes[NAME_OFFSET..NAME_OFFSET + MAX_NAME_LEN];
    if field[len..].iter().any(|&b| b != 0) {
        return Err("bytes after the table name are not zero".into());
    }
    let name = std::str::from_utf8(&field[..len])
        .ok()
        .filter(|name| check_table_name(name).is_ok())
        .ok_or("the table name is not a valid table name")?;
    Ok(name.to_string())
}

fn read_encryption(bytes: &[u8]) -> std::result::Result<EncryptionRecord, String> {
    let u32_at = |offset: usize| le_u32(&bytes[offset..offset + 4]);
    let algorithm = cipher_from_code(bytes[ALGORITHM_OFFSET])
        .ok()
        .flatten()
        .ok_or_else(|| format!("unknown algorithm code {}", bytes[ALGORITHM_OFFSET]))?;
    let count = usize::from(bytes[GENERATION_COUNT_OFFSET]);
    if !(1..=MAX_GENERATIONS).contains(&count) {
        return Err(format!(
            "{count} data-key generations (expected 1 to {MAX_GENERATIONS})"
        ));
    }
    let key_id = u32_at(KEY_ID_OFFSET);
    if key_id == 0 {
        return Err("an encrypted table's key id is 0".into());
    }
    if u32_at(RESERVED_OFFSET) != 0 {
        return Err("reserved bytes are not zero".into());
    }
    let mut generations = Vec::with_capacity(count);
    for index in 0..count {
        let start = GENERATIONS_OFFSET + index * GENERATION_LEN;
        let wrapped = WrappedKey::decode(&bytes[start + 4..start + GENERATION_LEN])
            .map_err(|e| format!("generation {index}: {e}"))?;
        if wrapped.key_id != key_id || wrapped.key_version != TRANSFER_KEY_VERSION {
            return Err(format!(
                "generation {index} is wrapped under key id {} version {}, not under the \
                 transfer key (key id {key_id}, version {TRANSFER_KEY_VERSION})",
                wrapped.key_id, wrapped.key_version
            ));
        }
        generations.push(Generation {
            version: u32_at(start),
            wrapped,
        });
    }
    let unused = &bytes[GENERATIONS_OFFSET + count * GENERATION_LEN..CRC_OFFSET];
    if unused.iter().any(|&b| b != 0) {
        return Err("unused generation slots are not zero".into());
    }
    let record = EncryptionRecord {
        key_id,
        algorithm,
        current_version: u32_at(CURRENT_VERSION_OFFSET),
        min_version: u32_at(MIN_VERSION_OFFSET),
        rotation: RotationState::default(),
        generations,
    };
    if record.current().is_none() {
        return Err(format!(
            "the current generation (key id {key_id}, version {}) is not among the generations",
            record.current_version
        ));
    }
    if record.min_version > record.current_version {
        return Err(format!(
            "min version {} is above the current version {}",
            record.min_version, record.current_version
        ));
    }
    Ok(record)
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
}

fn put_u32(out: &mut [u8], offset: usize, value: u32) {
    out[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongbox_keyring::provider::MemoryKeyProvider;
    use strongbox_keyring::wrap;
    use strongbox_keyring::Algorithm;

    fn encrypted_manifest() -> Manifest {
        let transfer = MemoryKeyProvider::new();
        transfer.add_random(5, 1, 256).unwrap();
        let generations = [2, 3]
            .into_iter()
            .map(|version| Generation {
                version,
                wrapped: wrap::new_data_key(&transfer, 5).unwrap().1,
            })
            .collect();
        Manifest {
            table: "orders.2024".into(),
            source_space_id: 7,
            page_size: PageSize::try_from(4096).unwrap(),
            alloc: AllocState {
                page_count: 40,
                free_head: 12,
                free_count: 3,
            },
            encryption: Some(EncryptionRecord {
                key_id: 5,
                algorithm: Algorithm::AesGcm,
                current_version: 3,
                min_version: 2,
                rotation: RotationState::default(),
                generations,
            }),
        }
    }

    #[test]
    fn manifests_round_trip() {
        let plain = Manifest {
            encryption: None,
            ..encrypted_manifest()
        };
        for manifest in [encrypted_manifest(), plain] {
            let bytes = manifest.encode();
            assert_eq!(bytes.len(), MANIFEST_LEN);
            assert_eq!(Manifest::decode(&bytes).unwrap(), manifest);
        }
    }

    /// Each damage, with the checksum fixed up afterwards where needed so that the field
    /// check (not the checksum) must catch it.
    #[test]
    fn every_malformed_field_is_named() {
        let good = encrypted_manifest().encode();
        let fix_crc = |bytes: &mut Vec<u8>| {
            let crc = crc32fast::hash(&bytes[..CRC_OFFSET]);
            put_u32(bytes, CRC_OFFSET, crc);
        };
        type Damage = fn(&mut Vec<u8>);
        let cases: [(Damage, bool, &str); 14] = [
            (|b| b[0] = b'X', false, "bad magic"),
            (|b| put_u32(b, FORMAT_OFFSET, 2), false, "format version 2"),
            (|b| b.truncate(300), false, "300 bytes"),
            (|b| b[200] ^= 1, false, "checksum mismatch"),
            (|b| put_u32(b, PAGE_SIZE_OFFSET, 5000), true, "page size"),
            (
                |b| put_u32(b, SOURCE_SPACE_OFFSET, 0),
                true,
                "source space id",
            ),
            (|b| put_u32(b, PAGE_COUNT_OFFSET, 1), true, "page count 1"),
            (|b| put_u32(b, FREE_HEAD_OFFSET, 99), true, "free list"),
            (|b| b[NAME_LEN_OFFSET] = 0, true, "name length 0"),
            (|b| b[NAME_OFFSET] = b'/', true, "not a valid table name"),
            (|b| b[ENCRYPTED_OFFSET] = 2, true, "encrypted flag 2"),
            (|b| b[ALGORITHM_OFFSET] = 9, true, "algorithm code 9"),
            (
                |b| b[GENERATION_COUNT_OFFSET] = 5,
                true,
                "5 data-key generations",
            ),
            (
                |b| put_u32(b, CURRENT_VERSION_OFFSET, 9),
                true,
                "current generation",
            ),
        ];
        for (damage, refresh_crc, expected) in cases {
            let mut bytes = good.clone();
            damage(&mut bytes);
            if refresh_crc {
                fix_crc(&mut bytes);
            }
            let error = Manifest::decode(&bytes).unwrap_err();
            assert!(
                error.contains(expected),
                "{error:?} should say {expected:?}"
            );
        }
    }

    #[test]
    fn an_unencrypted_manifest_with_key_fields_is_refused() {
        let mut bytes = Manifest {
            encryption: None,
            ..encrypted_manifest()
        }
        .encode();
        put_u32(&mut bytes, KEY_ID_OFFSET, 5);
        let crc = crc32fast::hash(&bytes[..CRC_OFFSET]);
        put_u32(&mut bytes, CRC_OFFSET, crc);
        let error = Manifest::decode(&bytes).unwrap_err();
        assert!(error.contains("key fields"), "{error}");
    }
}
