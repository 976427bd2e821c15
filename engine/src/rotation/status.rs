//! The encryption status of a tablespace: the columns of MariaDB's
//! `information_schema.INNODB_TABLESPACES_ENCRYPTION`, in the order `strongbox status`
//! prints them.

use crate::space::{SpaceFile, SpaceKind};
use std::fmt;

/// One row of the status table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionStatus {
    pub space_id: u32,
    /// `system`, `temporary`, or the table's name.
    pub name: String,
    /// `aes_ctr`, `aes_cbc`, `aes_gcm`, or `none` for a plain space.
    pub scheme: &'static str,
    /// Keyring key id new writes use (0 when plain).
    pub key_id: u32,
    /// Generation (keyring version) new writes use (0 when plain or being decrypted).
    pub current_key_version: u32,
    /// Oldest generation a page may still carry (0 when plain).
    pub min_key_version: u32,
    /// A re-encryption pass (rotation, ALTER, `encrypt_tables` change) is running.
    pub rotating: bool,
    /// Pages the pass has moved (all pages when none is running).
    pub pages_done: u32,
    /// Pages of the space, page 0 excluded.
    pub pages_total: u32,
}

/// The column names, in order.
pub const COLUMNS: [&str; 9] = [
    "space_id",
    "name",
    "scheme",
    "key_id",
    "current_key_version",
    "min_key_version",
    "rotating",
    "pages_done",
    "pages_total",
];

impl EncryptionStatus {
    /// The row of `space`; `table` names it when it holds a table.
    pub(crate) fn of(space: &SpaceFile, table: Option<&str>) -> EncryptionStatus {
        let header = space.header();
        let name = match (header.kind, table) {
            (_, Some(table)) => table.to_string(),
            (SpaceKind::System, None) => "system".to_string(),
            (SpaceKind::Temporary, None) => "temporary".to_string(),
            (SpaceKind::Table, None) => format!("(space {})", space.id()),
        };
        let pages_total = header.page_count.saturating_sub(1);
        let Some(record) = header.encryption else {
            return EncryptionStatus {
                space_id: space.id(),
                name,
                scheme: "none",
                key_id: 0,
                current_key_version: 0,
                min_key_version: 0,
                rotating: false,
                pages_done: pages_total,
                pages_total,
            };
        };
        let rotating = record.rotation.is_active();
        let decrypting = record.rotation.is_decrypting();
        EncryptionStatus {
            space_id: space.id(),
            name,
            scheme: if decrypting {
                "none"
            } else {
                record.algorithm.name()
            },
            key_id: record.key_id,
            current_key_version: if decrypting {
                0
            } else {
                record.current_version
            },
            min_key_version: record.oldest_version(),
            rotating,
            pages_done: if rotating {
                record.rotation.next_page.saturating_sub(1).min(pages_total)
            } else {
                pages_total
            },
            pages_total,
        }
    }

    /// The row's fields as text, in [`COLUMNS`] order.
    pub fn fields(&self) -> [String; 9] {
        [
            self.space_id.to_string(),
            self.name.clone(),
            self.scheme.to_string(),
            self.key_id.to_string(),
            self.current_key_version.to_string(),
            self.min_key_version.to_string(),
            u8::from(self.rotating).to_string(),
            self.pages_done.to_string(),
            self.pages_total.to_string(),
        ]
    }
}

impl fmt::Display for EncryptionStatus {
    /// Tab-separated, [`COLUMNS`] order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.fields().join("\t"))
    }
}
