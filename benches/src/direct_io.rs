//! `DirectVfs`: the real file system with `O_DIRECT` on tablespace files, so that a
//! buffer-pool miss is a real device read instead of a copy out of the OS page cache.
//!
//! Benchmarks use it to measure what encryption costs when the workload is truly IO-bound
//! (Percona's setting): with the OS page cache in the way, a "miss" costs a few
//! microseconds and the AES pass looks large next to it; on a device read it does not.
//! Buffers are bounced through 4096-byte-aligned memory, as `O_DIRECT` requires.

use std::fmt;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use strongbox_engine::io::{FileIo, OpenMode, StdVfs, Vfs};

const ALIGN: usize = 4096;

/// `StdVfs`, but files ending in `.sbd` are opened with `O_DIRECT`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DirectVfs;

struct DirectFile {
    file: std::fs::File,
}

impl fmt::Debug for DirectFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DirectFile")
    }
}

/// An `ALIGN`-aligned window of `len` bytes inside a larger vector (no `unsafe` needed).
fn aligned(raw: &mut Vec<u8>, len: usize) -> &mut [u8] {
    raw.resize(len + ALIGN, 0);
    let start = raw.as_ptr().align_offset(ALIGN);
    &mut raw[start..start + len]
}

impl FileIo for DirectFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut raw = Vec::new();
        let bounce = aligned(&mut raw, buf.len());
        self.file.read_exact_at(bounce, offset)?;
        buf.copy_from_slice(bounce);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut raw = Vec::new();
        let bounce = aligned(&mut raw, buf.len());
        bounce.copy_from_slice(buf);
        self.file.write_all_at(bounce, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

impl Vfs for DirectVfs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileIo>> {
        if path.extension().is_none_or(|ext| ext != "sbd") {
            return StdVfs.open(path, mode);
        }
        let mut options = StdVfs::open_options(mode);
        options.custom_flags(libc::O_DIRECT);
        Ok(Arc::new(DirectFile {
            file: options.open(path)?,
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        StdVfs.remove(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdVfs.rename(from, to)
    }

    fn exists(&self, path: &Path) -> bool {
        StdVfs.exists(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        StdVfs.create_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        StdVfs.list(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdVfs.sync_dir(dir)
    }

    fn lock_directory(&self, dir: &Path) -> io::Result<Box<dyn fmt::Debug + Send + Sync>> {
        StdVfs.lock_directory(dir)
    }
}
