//! Injected faults: [`FaultRule`] says which operation fails and [`Fault`] how; every
//! made-up failure carries a [`SimError`].

use std::io;
use std::path::{Path, PathBuf};

/// A fault to inject; [`FaultRule`] says on which operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The device is full: the operation fails with `StorageFull`. A write first puts its
    /// first `written` bytes (at most all but one) into the pending queue; `written: 0` is
    /// the nothing-written variant. Armed as persistent, this is "disk full until space is
    /// freed" ([`SimVfs::clear_fault`](super::SimVfs::clear_fault)). Other operations do nothing and fail.
    Enospc { written: usize },
    /// An IO error (`EIO`): the operation does nothing and fails. On `sync` the pending
    /// writes stay pending (a transient error; contrast `SyncFails`).
    Eio,
    /// Only on [`OpKind::Sync`]: the sync fails and the file's pending writes are dropped for
    /// good (rule 7 of the module docs).
    SyncFails,
    /// Only on [`OpKind::Write`]: the first `written` bytes (at most all but one) reach the
    /// pending queue and the write fails with `WriteZero`, as `write_all_at` does when the
    /// device stops taking bytes.
    ShortWrite { written: usize },
}

/// The counted operations; a [`FaultRule`] targets one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `Vfs::open`, in any mode (creating or not).
    Open,
    Read,
    Write,
    Sync,
    SetLen,
    Remove,
    Rename,
    SyncDir,
}

/// When to inject a [`Fault`]: the `nth` matching operation of kind `op` (counted from
/// when the rule is armed), optionally only on paths under `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub(super) fault: Fault,
    op: OpKind,
    pub(super) nth: u64,
    path: Option<PathBuf>,
    pub(super) persistent: bool,
}

impl FaultRule {
    /// Fires once, on the first matching operation, on any path.
    ///
    /// # Panics
    /// If `fault` cannot happen on `op` (`SyncFails` needs `Sync`, `ShortWrite` needs
    /// `Write`).
    pub fn new(fault: Fault, op: OpKind) -> FaultRule {
        match fault {
            Fault::SyncFails => assert_eq!(op, OpKind::Sync, "SyncFails is a sync fault"),
            Fault::ShortWrite { .. } => {
                assert_eq!(op, OpKind::Write, "ShortWrite is a write fault")
            }
            Fault::Enospc { .. } | Fault::Eio => {}
        }
        FaultRule {
            fault,
            op,
            nth: 1,
            path: None,
            persistent: false,
        }
    }

    /// Fires on the `n`-th matching operation (1-based) instead of the first.
    pub fn nth(mut self, n: u64) -> FaultRule {
        assert!(n >= 1, "operations are counted from 1");
        self.nth = n;
        self
    }

    /// Matches only operations on `path` or on files under it (component-wise prefix; a
    /// rename matches if either name does). A file opened under one name keeps that name
    /// for matching after a rename.
    pub fn on_path(mut self, path: impl Into<PathBuf>) -> FaultRule {
        self.path = Some(path.into());
        self
    }

    /// Keeps firing on every matching operation from the `nth` on, until cleared.
    pub fn persistent(mut self) -> FaultRule {
        self.persistent = true;
        self
    }

    pub(super) fn matches(&self, op: OpKind, paths: &[&Path]) -> bool {
        self.op == op
            && self
                .path
                .as_deref()
                .is_none_or(|under| paths.iter().any(|p| p.starts_with(under)))
    }

    pub(super) fn error(&self, written: usize, len: usize) -> io::Error {
        match self.fault {
            Fault::Enospc { .. } => SimError::NoSpace,
            Fault::Eio => SimError::Eio,
            Fault::SyncFails => SimError::SyncFailed,
            Fault::ShortWrite { .. } => SimError::ShortWrite { written, len },
        }
        .into()
    }
}

/// Names an armed fault, for [`SimVfs::clear_fault`](super::SimVfs::clear_fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultId(pub(super) u64);

/// The payload of every error the simulator makes up; [`SimError::of`] recovers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// Kind `Other`: power failed (rule 8); every operation fails from now on.
    #[error("simulated power loss")]
    PowerLoss,
    /// Kind `StorageFull`.
    #[error("simulated ENOSPC: no space left on device")]
    NoSpace,
    /// Kind `Other`.
    #[error("simulated EIO: input/output error")]
    Eio,
    /// Kind `Other`: the file's pending writes are lost (rule 7).
    #[error("simulated fsync failure: the file's unsynced writes are lost")]
    SyncFailed,
    /// Kind `WriteZero`.
    #[error("simulated short write: {written} of {len} bytes")]
    ShortWrite { written: usize, len: usize },
}

impl SimError {
    /// The simulated failure behind `err`, if it is one.
    pub fn of(err: &io::Error) -> Option<SimError> {
        err.get_ref()?.downcast_ref::<SimError>().copied()
    }
}

impl From<SimError> for io::Error {
    fn from(err: SimError) -> io::Error {
        let kind = match err {
            SimError::NoSpace => io::ErrorKind::StorageFull,
            SimError::ShortWrite { .. } => io::ErrorKind::WriteZero,
            SimError::PowerLoss | SimError::Eio | SimError::SyncFailed => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}
