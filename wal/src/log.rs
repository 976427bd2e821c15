//! [`Log`]: create or open a redo log, append, commit, flush, checkpoint, close.
//!
//! The crate docs explain the design; this file wires the parts together:
//! `control` (checkpoint, epoch, wrapped key) + `recovery` (scan at open) + `writer`
//! (buffer, group commit, space) + `segment` (files).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use strongbox_keyring::provider::{KeyProvider, SYSTEM_KEY_ID};
use strongbox_keyring::wrap;

use crate::block;
use crate::config::{FlushAtCommit, LogConfig};
use crate::control::{Control, ControlFile, CONTROL_FILE};
use crate::error::{Result, WalError};
use crate::flusher::Flusher;
use crate::io::Vfs;
use crate::record::Record;
use crate::recovery::{self, RecoveryReport, ScanKey};
use crate::segment::{self, Geometry, SegmentWriter};
use crate::writer::{LogStats, Start, Writer, WriterConfig};
use crate::Lsn;

/// An open redo log. `Send + Sync`: share it by reference or in an `Arc`.
///
/// Dropping a `Log` without [`Log::close`] stops its background thread but does not
/// flush: records not yet durable are lost, exactly as in a crash.
pub struct Log {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    geometry: Geometry,
    /// The wrapped log key's (id, version), if encrypted (changed by `rewrap_key`).
    key_name: Mutex<Option<(u32, u32)>>,
    writer: Arc<Writer>,
    /// Guards the control file: checkpoints are recorded one at a time.
    control: Mutex<ControlFile>,
    /// Guards the background flusher of policies 0 and 2; `None` once stopped (or never
    /// started under policy 1).
    flusher: Mutex<Option<Flusher>>,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("epoch", &self.writer.epoch())
            .field("encrypted", &self.key_name.lock().is_some())
            .field("current_lsn", &self.writer.current_lsn())
            .field("durable_lsn", &self.writer.durable_lsn())
            .field("checkpoint_lsn", &self.writer.checkpoint_lsn())
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Creates a new, empty log in `dir` (creating the directory). Fails with
    /// `AlreadyExists` if a control file or segment is there. With `config.encrypt`,
    /// a fresh random data key is made and stored wrapped under the latest version of key
    /// id 1 ([`SYSTEM_KEY_ID`]), which `keyring` must hold.
    pub fn create(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        config: LogConfig,
        keyring: Option<&dyn KeyProvider>,
    ) -> Result<Log> {
        config.validate()?;
        vfs.create_dir_all(dir)
            .map_err(|e| WalError::io("create directory", dir, e))?;
        if vfs.exists(&dir.join(CONTROL_FILE))
            || !segment::list_segments(vfs.as_ref(), dir)?.is_empty()
        {
            return Err(WalError::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        let (key, wrapped) = if config.encrypt {
            let keyring = keyring.ok_or(WalError::NoKeyring)?;
            let (key, wrapped) =
                wrap::new_data_key(keyring, SYSTEM_KEY_ID).map_err(|source| WalError::LogKey {
                    key_id: SYSTEM_KEY_ID,
                    key_version: keyring.latest_version(SYSTEM_KEY_ID).unwrap_or(0),
                    source,
                })?;
            (Some(key), Some(wrapped))
        } else {
            (None, None)
        };
        let checkpoint_lsn = block::lsn_at(0, 0);
        let key_name = wrapped.as_ref().map(|w| (w.key_id, w.key_version));
        let control = ControlFile::create(
            vfs.as_ref(),
            dir,
            Control {
                sequence: 1,
                epoch: 1,
                segment_size: config.segment_size,
                checkpoint_lsn,
                wrapped_key: wrapped,
            },
        )?;
        let start = Start {
            epoch: 1,
            next_block: 0,
            checkpoint_lsn,
        };
        Log::start(vfs, dir, &config, key, key_name, control, start)
    }

    /// Opens the log in `dir` and recovers it: reads the control file, unwraps the log key,
    /// scans from the checkpoint to the end (see [`RecoveryReport`]), starts a new epoch
    /// (synced before any write) and deletes segments below the checkpoint. New records
    /// go at `report.resume_lsn`.
    ///
    /// The stored segment size wins over `config.segment_size`; `config.encrypt` must match
    /// how the log was created.
    pub fn open(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        config: LogConfig,
        keyring: Option<&dyn KeyProvider>,
    ) -> Result<(Log, RecoveryReport)> {
        config.validate()?;
        let (mut control, slot_epoch) = ControlFile::open(vfs.as_ref(), dir)?;
        let stored = control.current().clone();
        if stored.wrapped_key.is_some() != config.encrypt {
            return Err(WalError::EncryptionMismatch {
                log_encrypted: stored.wrapped_key.is_some(),
            });
        }
        let stored_config = LogConfig {
            segment_size: stored.segment_size,
            ..config.clone()
        };
        if stored_config.validate().is_err() {
            return Err(WalError::ControlCorrupt {
                path: dir.join(CONTROL_FILE),
            });
        }
        let key = match &stored.wrapped_key {
            Some(wrapped) => {
                let keyring = keyring.ok_or(WalError::NoKeyring)?;
                Some(
                    wrap::unwrap(keyring, wrapped).map_err(|source| WalError::LogKey {
                        key_id: wrapped.key_id,
                        key_version: wrapped.key_version,
                        source,
                    })?,
                )
            }
            None => None,
        };
        let geometry = Geometry::new(stored.segment_size);
        let scan_key = match (&key, &stored.wrapped_key) {
            (Some(key), Some(wrapped)) => Some(ScanKey { key, wrapped }),
            _ => None,
        };
        let scanned = recovery::scan(vfs.as_ref(), dir, geometry, stored.checkpoint_lsn, scan_key)?;
        // The new epoch writes from where the scan stopped; nothing past that may survive
        // next to its blocks (`segment::truncate_from`).
        segment::truncate_from(vfs.as_ref(), dir, geometry, scanned.resume_block)?;
        // Rule E2: the new epoch is above every epoch in the control file and in any block
        // seen, and is durable before the first block is written with it.
        let epoch = slot_epoch
            .max(scanned.max_epoch)
            .checked_add(1)
            .ok_or(WalError::EpochExhausted)?;
        control.update(|c| c.epoch = epoch)?;
        segment::remove_below(
            vfs.as_ref(),
            dir,
            geometry.segment_of(block::block_of(stored.checkpoint_lsn)),
        )?;
        let mut report = scanned.report;
        report.epoch = epoch;
        let start = Start {
            epoch,
            next_block: scanned.resume_block,
            checkpoint_lsn: stored.checkpoint_lsn,
        };
        let key_name = stored
            .wrapped_key
            .as_ref()
            .map(|w| (w.key_id, w.key_version));
        let log = Log::start(vfs, dir, &stored_config, key, key_name, control, start)?;
        Ok((log, report))
    }

    fn start(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        config: &LogConfig,
        key: Option<strongbox_keyring::DataKey>,
        key_name: Option<(u32, u32)>,
        control: ControlFile,
        start: Start,
    ) -> Result<Log> {
        let geometry = Geometry::new(config.segment_size);
        let files = SegmentWriter::new(Arc::clone(&vfs), dir.to_path_buf(), geometry);
        let writer = Arc::new(Writer::new(
            WriterConfig {
                geometry,
                capacity_segments: config.capacity_segments,
                policy: config.flush_at_commit,
                buffer_size: config.buffer_size,
                full_log_timeout: config.full_log_timeout,
            },
            key,
            files,
            start,
        ));
        let flusher = match config.flush_at_commit {
            FlushAtCommit::EveryCommit => None,
            FlushAtCommit::OncePerInterval | FlushAtCommit::WriteAtCommit => Some(
                Flusher::start(Arc::clone(&writer), config.flush_interval)
                    .map_err(|e| WalError::io("start flusher thread for", dir, e))?,
            ),
        };
        Ok(Log {
            dir: dir.to_path_buf(),
            vfs,
            geometry,
            key_name: Mutex::new(key_name),
            writer,
            control: Mutex::new(control),
            flusher: Mutex::new(flusher),
        })
    }

    /// Appends `records` as one atomic batch (no other batch interleaves) and returns the
    /// end LSN of the last one. Not durable until flushed. Waits if the log is full (see
    /// [`Log::needs_checkpoint`]); call it without holding locks a checkpoint needs.
    pub fn append(&self, records: &[Record]) -> Result<Lsn> {
        self.writer.append(records)
    }

    /// The space check to call before a mini-transaction takes page latches (InnoDB's
    /// `log_free_check`): waits while the log is more than 7/8 full, asking for a
    /// checkpoint, so that the append made while latches are held finds room in the last
    /// eighth instead of waiting for a checkpoint that may need those latches. A batch must
    /// therefore stay well below 1/8 of the capacity. Fails with `LogFull` after
    /// `full_log_timeout`.
    pub fn free_check(&self) -> Result<()> {
        self.writer.free_check()
    }

    /// Returns once every record up to `lsn` is durable (group commit: one fsync serves
    /// every thread waiting at the time). `lsn` must not exceed [`Log::current_lsn`].
    pub fn flush(&self, lsn: Lsn) -> Result<()> {
        self.writer.write_up_to(lsn, true)
    }

    /// Ends a commit whose last record ended at `lsn`, as durable as `flush_at_commit`
    /// promises: policy 1 flushes to `lsn`; 2 writes to the OS; 0 returns at once.
    pub fn commit(&self, lsn: Lsn) -> Result<()> {
        self.writer.commit(lsn)
    }

    /// End LSN of the last appended record (a record boundary).
    pub fn current_lsn(&self) -> Lsn {
        self.writer.current_lsn()
    }

    /// Every record ending at or below this LSN is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.writer.durable_lsn()
    }

    /// Where recovery would start.
    pub fn checkpoint_lsn(&self) -> Lsn {
        self.writer.checkpoint_lsn()
    }

    /// Records that everything before `lsn` is safely in the data files, so recovery may
    /// start at `lsn`, and deletes segments entirely below it. `lsn` must be a record
    /// boundary — a value returned by `append` or `current_lsn` — not below the current
    /// checkpoint. Flushes up to `lsn` first if needed. Wakes appends waiting for space.
    pub fn checkpoint(&self, lsn: Lsn) -> Result<()> {
        let mut control = self.control.lock();
        let checkpoint_lsn = control.current().checkpoint_lsn;
        let bad = |why| WalError::BadCheckpoint {
            lsn,
            checkpoint_lsn,
            why,
        };
        if !block::is_boundary(lsn) {
            return Err(bad("not a record boundary"));
        }
        if lsn < checkpoint_lsn {
            return Err(bad("older than the current checkpoint"));
        }
        self.writer.usable()?;
        if lsn == checkpoint_lsn {
            return Ok(());
        }
        self.writer.write_up_to(lsn, true)?;
        // A failed control-file write or fsync leaves its state unknown: poison (rule 4).
        control
            .update(|c| c.checkpoint_lsn = lsn)
            .map_err(|e| self.writer.poison(e))?;
        self.writer.set_checkpoint(lsn);
        let below = self.geometry.segment_of(block::block_of(lsn));
        segment::remove_below(self.vfs.as_ref(), &self.dir, below)?;
        Ok(())
    }

    /// True past 75% of the log's capacity (counted from the checkpoint's segment) or while
    /// an append waits for space. The engine should then checkpoint.
    pub fn needs_checkpoint(&self) -> bool {
        self.writer.needs_checkpoint()
    }

    /// The checkpoint protocol's wait: blocks until [`Log::needs_checkpoint`] is true
    /// (returns true) or `timeout` passes or the log is closed or poisoned (returns
    /// false). An engine's checkpoint thread loops on it:
    ///
    /// ```text
    /// while running {
    ///     if log.wait_checkpoint_needed(Duration::from_secs(1)) {
    ///         let lsn = engine.flush_dirty_pages();   // oldest LSN still needed
    ///         log.checkpoint(lsn)?;                   // frees segments, wakes appends
    ///     }
    /// }
    /// ```
    pub fn wait_checkpoint_needed(&self, timeout: Duration) -> bool {
        self.writer.wait_checkpoint_needed(timeout)
    }

    /// Makes the log unusable because work it depends on failed — the engine's checkpoint
    /// could not write its pages, so no space will ever be freed. Appends waiting for space
    /// and every later call fail at once with this error instead of waiting for
    /// `full_log_timeout`. Returns the error the log now reports.
    pub fn fail(&self, op: &'static str, error: std::io::Error) -> WalError {
        self.writer.poison(WalError::Io {
            op,
            path: self.dir.clone(),
            source: error,
        })
    }

    /// Counters: records, commits, flush rounds, fsyncs, bytes written, padding, full-log
    /// waits, checkpoints.
    pub fn stats(&self) -> LogStats {
        self.writer.stats()
    }

    /// The epoch this open writes in.
    pub fn epoch(&self) -> u32 {
        self.writer.epoch()
    }

    /// The keyring key (id, version) the log's data key is wrapped under; `None` if plain.
    pub fn wrapping_key(&self) -> Option<(u32, u32)> {
        *self.key_name.lock()
    }

    /// MySQL's master-key rotation for the log: wraps the log's data key again under the
    /// latest version of key 1, without touching a block. Both control-file slots are
    /// rewritten (each write synced), so neither still names the old version and it can be
    /// removed from the keyring. Returns the new (id, version); a plain log returns `None`.
    /// A crash between the two writes leaves the newest slot with the new wrap, the other
    /// with the old: both unwrap to the same data key.
    pub fn rewrap_key(&self, keyring: &dyn KeyProvider) -> Result<Option<(u32, u32)>> {
        let mut control = self.control.lock();
        let Some(wrapped) = control.current().wrapped_key.clone() else {
            return Ok(None);
        };
        let rewrapped =
            wrap::rewrap(keyring, &wrapped, SYSTEM_KEY_ID).map_err(|source| WalError::LogKey {
                key_id: wrapped.key_id,
                key_version: wrapped.key_version,
                source,
            })?;
        let name = (rewrapped.key_id, rewrapped.key_version);
        for _slot in 0..2 {
            let key = rewrapped.clone();
            control
                .update(|c| c.wrapped_key = Some(key))
                .map_err(|e| self.writer.poison(e))?;
        }
        *self.key_name.lock() = Some(name);
        Ok(Some(name))
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the background thread, flushes everything appended, and refuses further
    /// work. Returns the first failure, if the log was poisoned. Calling it again is a
    /// no-op.
    pub fn close(&self) -> Result<()> {
        if let Some(mut flusher) = self.flusher.lock().take() {
            flusher.stop();
        }
        self.writer.close()
    }
}
