//! File IO behind one small seam, so that tests can swap the real file system for a
//! simulated one (crash and power-loss tests) or a fault-injecting one.
//!
//! * [`FileIo`]: positioned reads and writes on one open file, `sync`, length.
//! * [`Vfs`]: the file system: open, remove, rename, list, directory sync.
//! * [`StdVfs`]: the real thing (`pread`/`pwrite`/`fdatasync`).
//! * [`MemVfs`]: everything in memory; fast, and used by unit tests.
//!
//! All file access of the log and the engine goes through these traits; nothing else
//! touches `std::fs` for data or log files. The seam lives in this crate, the lowest one
//! that does file IO; `strongbox_engine::io` re-exports it.

mod dirlock;
mod mem;
mod sim;
mod std_fs;

pub use dirlock::{DirLock, LockedBy, LOCK_FILE};
pub use mem::MemVfs;
pub use sim::{Damage, Fault, FaultId, FaultRule, OpKind, PendingOp, SimError, SimVfs};
pub use std_fs::StdVfs;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One open file.
pub trait FileIo: Send + Sync + Debug {
    /// Fills `buf` from `offset`; reading past the end is `UnexpectedEof`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Truncates or extends (with zeros) to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The file must exist.
    Existing,
    /// Create it if absent; keep its contents if present.
    CreateOrOpen,
    /// Create it; fail if it exists.
    CreateNew,
}

/// A file system.
pub trait Vfs: Send + Sync + Debug {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileIo>>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The paths of the files directly inside `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Makes directory entries (creates, renames, removes) in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the one-process-at-a-time lock on a data directory; released when the
    /// returned guard drops. When another process holds it, the error has kind
    /// `WouldBlock` and carries a [`LockedBy`] (`error.get_ref()` downcasts to it).
    /// File systems private to one process need no lock.
    fn lock_directory(&self, _dir: &Path) -> io::Result<Box<dyn Debug + Send + Sync>> {
        Ok(Box::new(()))
    }
}
