//! [`MemVfs`]: an in-memory file system for tests. Every write is immediately "durable";
//! the simulated file system of the durability work will add crash semantics.

use super::{FileIo, OpenMode, Vfs};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Contents = Arc<Mutex<Vec<u8>>>;

/// Files held in memory, shared by every clone of the `MemVfs`.
#[derive(Debug, Default, Clone)]
pub struct MemVfs {
    /// Guards the directory: path -> file contents.
    files: Arc<Mutex<BTreeMap<PathBuf, Contents>>>,
}

impl MemVfs {
    pub fn new() -> MemVfs {
        MemVfs::default()
    }

    /// A copy of a file's bytes (for tests that scan or damage files).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.files.lock().get(path).map(|c| c.lock().clone())
    }

    /// Replaces a file's bytes (for tests that damage files).
    pub fn set_contents(&self, path: &Path, bytes: Vec<u8>) {
        let file = Arc::clone(self.files.lock().entry(path.to_path_buf()).or_default());
        *file.lock() = bytes;
    }
}

#[derive(Debug)]
struct MemFile {
    /// Guards the file's bytes.
    data: Contents,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl FileIo for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.data.lock();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if end > data.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&data[start..end]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.data.lock();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start + buf.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.data.lock().len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.data.lock().resize(len, 0);
        Ok(())
    }
}

impl Vfs for MemVfs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileIo>> {
        let mut files = self.files.lock();
        let data = match (files.get(path), mode) {
            (Some(_), OpenMode::CreateNew) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ))
            }
            (Some(data), _) => Arc::clone(data),
            (None, OpenMode::Existing) => return Err(not_found(path)),
            (None, _) => Arc::clone(files.entry(path.to_path_buf()).or_default()),
        };
        Ok(Arc::new(MemFile { data }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.files
            .lock()
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = self.files.lock();
        let data = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_path_buf(), data);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        self.files.lock().contains_key(path)
    }

    fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(self
            .files
            .lock()
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_lengths() {
        let vfs = MemVfs::new();
        let path = Path::new("/d/f");
        assert!(vfs.open(path, OpenMode::Existing).is_err());
        let file = vfs.open(path, OpenMode::CreateNew).unwrap();
        file.write_at(b"world", 5).unwrap();
        file.write_at(b"hello", 0).unwrap();
        let mut buf = [0u8; 10];
        file.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"helloworld");
        assert_eq!(
            file.read_at(&mut buf, 1).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        file.set_len(4).unwrap();
        assert_eq!(file.size().unwrap(), 4);
        assert!(vfs.open(path, OpenMode::CreateNew).is_err());
        assert_eq!(
            vfs.list(Path::new("/d")).unwrap(),
            vec![PathBuf::from("/d/f")]
        );
        vfs.rename(path, Path::new("/d/g")).unwrap();
        assert!(!vfs.exists(path));
        vfs.remove(Path::new("/d/g")).unwrap();
    }
}
