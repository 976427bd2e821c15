//! Tablespaces: one file each, page 0 the header, pages 1.. the data.
//!
//! | file        | owns                                                              |
//! |-------------|-------------------------------------------------------------------|
//! | `header.rs` | page 0's layout: allocation state, encryption record, data keys  |
//! | `nonce.rs`  | the never-repeating write-nonce counter and its reservation       |
//! | `file.rs`   | `SpaceFile`: the IO boundary (encrypt on write, decrypt on read)  |
//! | `alloc.rs`  | the free list: allocate and free pages                            |
//! | `set.rs`    | `SpaceSet`: all open spaces; the buffer pool's `PageIo`           |
//!
//! File names inside the data directory: `system.sbd` (space 0: the catalog; key 1),
//! `temp.sbd` (temporary space; key 2, else 1; recreated at every start) and
//! `space-<id>.sbd` for each table (file per table).

mod alloc;
mod file;
pub mod header;
mod nonce;
mod set;

pub use alloc::{Allocator, NEXT_FREE_OFFSET};
pub use file::{probe_page_size, IoCounters, NewSpace, SpaceEncryption, SpaceFile};
pub(crate) use file::{EncryptionChange, SpaceKeys};
pub use header::{AllocState, SpaceHeader, SpaceKind};
pub use set::SpaceSet;

/// The system tablespace's id.
pub const SYSTEM_SPACE_ID: u32 = 0;
/// The temporary tablespace's id.
pub const TEMP_SPACE_ID: u32 = u32::MAX - 1;

/// The file name of space `id` inside the data directory.
pub fn file_name(id: u32) -> String {
    match id {
        SYSTEM_SPACE_ID => "system.sbd".to_string(),
        TEMP_SPACE_ID => "temp.sbd".to_string(),
        _ => format!("space-{id}.sbd"),
    }
}

/// The id of a table's tablespace file named `name` (`space-<id>.sbd`), if it is one.
pub fn table_space_id(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("space-")?.strip_suffix(".sbd")?;
    let id: u32 = digits.parse().ok()?;
    (file_name(id) == name && id != SYSTEM_SPACE_ID && id != TEMP_SPACE_ID).then_some(id)
}
