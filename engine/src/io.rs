//! File IO behind one small seam. The traits and the real and in-memory file systems live
//! in `strongbox_wal::io` (the lowest crate that does file IO, since the redo log needs
//! files too); this module re-exports them so engine code and embedders find them here.

pub use strongbox_wal::io::*;
