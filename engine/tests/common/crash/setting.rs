//! The encryption settings an ALTER puts a table through in the `SIGKILL` tests
//! (`crash_rotation.rs` scenario 3, `crash_loop.rs`), and what `encryption_status` shows
//! once a table has settled in one. Each test keeps its own sequence (`Setting::nth`).
//! Also the status calls those tests make, as `Result<_, String>` for their reports.

use strongbox_engine::{Db, Encrypted, EncryptionStatus, TableOptions};

/// One `ALTER TABLE … ENCRYPTED=…` target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `encrypted = yes`, with this key id.
    Encrypted(u32),
    /// `encrypted = no`.
    Plain,
    /// `encrypted = default` (on, so key 1).
    Default,
}

impl Setting {
    /// ALTER `n` of a test's `sequence` (index `n % len`).
    pub fn nth(sequence: &[Setting], n: u64) -> Setting {
        sequence[(n % sequence.len() as u64) as usize]
    }

    pub fn table_options(self) -> TableOptions {
        match self {
            Setting::Encrypted(key_id) => TableOptions::default()
                .encrypted(Encrypted::Yes)
                .encryption_key_id(key_id),
            Setting::Plain => TableOptions::default().encrypted(Encrypted::No),
            Setting::Default => TableOptions::default(),
        }
    }

    /// The `(scheme, key_id)` `encryption_status` shows once the table's pass is done.
    pub fn status(self) -> (&'static str, u32) {
        match self {
            Setting::Encrypted(key_id) => ("aes_ctr", key_id),
            Setting::Plain => ("none", 0),
            Setting::Default => ("aes_ctr", 1),
        }
    }
}

/// Every space's encryption status.
pub fn status(db: &Db) -> Result<Vec<EncryptionStatus>, String> {
    db.encryption_status()
        .map_err(|e| format!("encryption_status failed: {e}"))
}

/// The status row of table `name`.
pub fn status_row<'r>(
    rows: &'r [EncryptionStatus],
    name: &str,
) -> Result<&'r EncryptionStatus, String> {
    rows.iter()
        .find(|row| row.name == name)
        .ok_or_else(|| format!("no status row for {name:?}: {rows:?}"))
}

/// Waits until no encryption pass is left to run.
pub fn wait(db: &Db) -> Result<(), String> {
    db.wait_for_encryption(|_| {})
        .map_err(|e| format!("wait_for_encryption failed: {e}"))
}
