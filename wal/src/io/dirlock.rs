//! The data-directory lock: one process at a time.
//!
//! `strongbox.lock` in the data directory is locked with an advisory exclusive lock
//! (`flock`) for as long as the database is open. The holder writes its pid into the file so
//! that a second opener can say who holds it; the pid is cleared again when the lock is
//! released, so a failed or finished open leaves the file as it found it. The OS drops the
//! lock when the process dies, so a crash never leaves a stale lock behind.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const LOCK_FILE: &str = "strongbox.lock";

/// The payload of the `WouldBlock` error [`DirLock::acquire`] returns when another
/// process holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockedBy {
    /// The holder's pid, as it wrote it into the lock file (if readable).
    pub pid: Option<u32>,
}

impl fmt::Display for LockedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "locked by process {pid}"),
            None => write!(f, "locked by another process"),
        }
    }
}

impl std::error::Error for LockedBy {}

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DirLock {
    /// Open for as long as the lock is held; closing it releases the lock.
    file: File,
}

impl DirLock {
    /// Locks `dir` or fails at once (no waiting) with a `WouldBlock` error carrying
    /// [`LockedBy`].
    pub fn acquire(dir: &Path) -> io::Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = LockedBy {
                    pid: text.trim().parse().ok(),
                };
                return Err(io::Error::new(io::ErrorKind::WouldBlock, holder));
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| write!(file, "{}", std::process::id()))?;
        Ok(DirLock { file })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Clear the pid so the file is as it was before the open; the lock itself is
        // released when the file is closed.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_fails_naming_the_holder_then_succeeds_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(error) => {
                assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
                let holder = error.get_ref().and_then(|e| e.downcast_ref::<LockedBy>());
                assert_eq!(
                    holder,
                    Some(&LockedBy {
                        pid: Some(std::process::id())
                    })
                );
            }
            Ok(_) => panic!("a second lock succeeded"),
        }
        drop(first);
        assert_eq!(std::fs::read(dir.path().join(LOCK_FILE)).unwrap(), b"");
        DirLock::acquire(dir.path()).unwrap();
    }
}
