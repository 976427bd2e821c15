//! The catalog: which tables exist, in which tablespace, with which encryption settings.
//!
//! It is a B+tree in the system tablespace (space 0, root page 1) mapping a table name to a
//! [`TableMeta`] record, plus one reserved entry holding the next free space id. Reserved
//! entries start with a NUL byte, which table names cannot contain.
//!
//! ## TableMeta record (little-endian)
//!
//! ```text
//! offset size field
//! 0      1    format           1
//! 1      4    space_id
//! 5      1    encrypted_option 0 default, 1 yes, 2 no (as the user asked)
//! 6      4    key_id           keyring key id (0 when unencrypted)
//! 10     1    encrypted        0/1: what the table was created with
//! 11          end
//! ```

use crate::btree::BTree;
use crate::error::{Error, Result};
use std::ops::Bound;

const FORMAT: u8 = 1;
const RECORD_LEN: usize = 11;
const NEXT_SPACE_ID_KEY: &[u8] = b"\0next_space_id";

/// MariaDB's per-table `ENCRYPTED` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encrypted {
    /// Follow `encrypt_tables`.
    #[default]
    Default,
    Yes,
    No,
}

impl std::str::FromStr for Encrypted {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "default" => Ok(Encrypted::Default),
            "yes" | "on" | "true" => Ok(Encrypted::Yes),
            "no" | "off" | "false" => Ok(Encrypted::No),
            _ => Err(format!("{text:?} is not yes, no or default")),
        }
    }
}

/// What the catalog records about a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableMeta {
    pub space_id: u32,
    pub encrypted_option: Encrypted,
    pub key_id: u32,
    pub encrypted: bool,
}

impl TableMeta {
    /// The record of a table in space `space_id`, as the user asked (`encrypted_option`)
    /// and as it is (`encryption`).
    pub(crate) fn new(
        space_id: u32,
        encrypted_option: Encrypted,
        encryption: Option<crate::space::SpaceEncryption>,
    ) -> TableMeta {
        TableMeta {
            space_id,
            encrypted_option,
            key_id: encryption.map_or(0, |e| e.key_id),
            encrypted: encryption.is_some(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut record = Vec::with_capacity(RECORD_LEN);
        record.push(FORMAT);
        record.extend_from_slice(&self.space_id.to_le_bytes());
        record.push(match self.encrypted_option {
            Encrypted::Default => 0,
            Encrypted::Yes => 1,
            Encrypted::No => 2,
        });
        record.extend_from_slice(&self.key_id.to_le_bytes());
        record.push(u8::from(self.encrypted));
        record
    }

    fn decode(record: &[u8]) -> Option<TableMeta> {
        if record.len() != RECORD_LEN || record[0] != FORMAT {
            return None;
        }
        let u32_at = |offset: usize| {
            u32::from_le_bytes(record[offset..offset + 4].try_into().expect("4 bytes"))
        };
        Some(TableMeta {
            space_id: u32_at(1),
            encrypted_option: match record[5] {
                0 => Encrypted::Default,
                1 => Encrypted::Yes,
                2 => Encrypted::No,
                _ => return None,
            },
            key_id: u32_at(6),
            encrypted: match record[10] {
                0 => false,
                1 => true,
                _ => return None,
            },
        })
    }
}

/// Table names: 1 to 64 bytes of ASCII letters, digits, `_`, `-` and `.`.
pub fn check_table_name(name: &str) -> Result<()> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidTableName(name.to_string()))
    }
}

/// The catalog tree.
#[derive(Debug, Clone)]
pub struct Catalog {
    tree: BTree,
}

impl Catalog {
    pub fn new(tree: BTree) -> Catalog {
        Catalog { tree }
    }

    pub fn tree(&self) -> &BTree {
        &self.tree
    }

    /// Every table, by name.
    pub fn tables(&self) -> Result<Vec<(String, TableMeta)>> {
        let mut tables = Vec::new();
        for entry in self.tree.range(Bound::Unbounded, Bound::Unbounded, false) {
            let (key, value) = entry?;
            if key.first() == Some(&0) {
                continue;
            }
            let name =
                String::from_utf8(key).map_err(|_| self.corrupt("a table name is not UTF-8"))?;
            let meta = TableMeta::decode(&value).ok_or_else(|| {
                self.corrupt(&format!("the record of table {name:?} is malformed"))
            })?;
            tables.push((name, meta));
        }
        Ok(tables)
    }

    pub fn insert(&self, name: &str, meta: &TableMeta) -> Result<()> {
        self.tree.put(name.as_bytes(), &meta.encode())
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        self.tree.delete(name.as_bytes()).map(|_| ())
    }

    /// Takes the next space id for a new table (ids start at 1; 0 is the system space).
    pub fn allocate_space_id(&self) -> Result<u32> {
        let next = match self.tree.get(NEXT_SPACE_ID_KEY)? {
            None => 1,
            Some(bytes) => u32::from_le_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.corrupt("the next-space-id entry is malformed"))?,
            ),
        };
        if next >= crate::space::TEMP_SPACE_ID {
            return Err(self.corrupt("space ids are exhausted"));
        }
        self.tree
            .put(NEXT_SPACE_ID_KEY, &(next + 1).to_le_bytes())?;
        Ok(next)
    }

    fn corrupt(&self, problem: &str) -> Error {
        Error::Corrupt {
            path: std::path::PathBuf::from(crate::space::file_name(crate::space::SYSTEM_SPACE_ID)),
            problem: format!("catalog: {problem}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_meta_round_trips_and_rejects_garbage() {
        let meta = TableMeta {
            space_id: 9,
            encrypted_option: Encrypted::Yes,
            key_id: 100,
            encrypted: true,
        };
        assert_eq!(TableMeta::decode(&meta.encode()), Some(meta));
        let mut bad = meta.encode();
        bad[5] = 7;
        assert_eq!(TableMeta::decode(&bad), None);
        assert_eq!(TableMeta::decode(&bad[..5]), None);
    }

    #[test]
    fn table_names_are_checked() {
        for good in ["t", "users_2024", "a.b-c", &"x".repeat(64)] {
            check_table_name(good).unwrap();
        }
        for bad in ["", "has space", "slash/", "\0x", &"x".repeat(65), "ünï"] {
            assert!(check_table_name(bad).is_err(), "{bad:?}");
        }
    }
}
