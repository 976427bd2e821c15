//! Checkpoints (`docs/durability.md` rule 8) and the thread that takes them when the redo
//! log fills up.
//!
//! A checkpoint here is *fuzzy* in what it writes and *sharp* in what it promises:
//!
//! ```text
//!   lsn = log.current_lsn()        every record below lsn changed frames that are already
//!                                  changed in memory (an mtr changes pages, then appends)
//!   pool.flush_all()               writes every dirty frame (WAL rule: log first), synced
//!   spaces.persist_headers()       page 0 of each space: the logged allocation fields
//!   log.checkpoint(lsn)            recovery may start at lsn; older segments are deleted
//! ```
//!
//! Work goes on meanwhile; changes made after `lsn` may or may not reach the files, and
//! recovery redoes them from the log either way (redo is idempotent, rule 3).

use crate::buffer::BufferPool;
use crate::error::Result;
use crate::space::SpaceSet;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use strongbox_wal::Log;

/// What a checkpoint touches.
#[derive(Debug, Clone)]
pub(crate) struct Checkpointer {
    pub(crate) pool: Arc<BufferPool>,
    pub(crate) spaces: Arc<SpaceSet>,
    pub(crate) log: Arc<Log>,
    /// One checkpoint at a time (the thread, `Db::checkpoint`, DDL, close).
    running: Arc<Mutex<()>>,
}

impl Checkpointer {
    pub(crate) fn new(pool: Arc<BufferPool>, spaces: Arc<SpaceSet>, log: Arc<Log>) -> Self {
        Checkpointer {
            pool,
            spaces,
            log,
            running: Arc::default(),
        }
    }

    /// Takes a checkpoint (see the module doc).
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let _one_at_a_time = self.running.lock();
        let lsn = self.log.current_lsn();
        self.pool.flush_all()?;
        if let Err(error) = self.spaces.persist_headers() {
            // Page 0 has no doublewrite copy, and after a failed write or sync its state on
            // disk is unknown (torn, or dropped by the kernel): stop, as a failed page
            // write-back does (buffer rule 9), so no commit goes on as if it were durable.
            self.log
                .fail("checkpoint", std::io::Error::other(error.to_string()));
            return Err(error);
        }
        self.log.checkpoint(lsn)?;
        Ok(())
    }

    /// Starts the thread that checkpoints whenever the log asks for it
    /// (`Log::wait_checkpoint_needed`).
    pub(crate) fn start_thread(&self) -> Result<CheckpointThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let this = self.clone();
        let stop_flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("strongbox-checkpoint".into())
            .spawn(move || loop {
                if stop_flag.load(Ordering::SeqCst) {
                    return;
                }
                // Returns at once when the log is closed (after `ask_to_stop`).
                if this.log.wait_checkpoint_needed(Duration::from_secs(1)) {
                    if let Err(error) = this.checkpoint() {
                        // No checkpoint will free log space again (the pool is poisoned or
                        // the log failed): fail the log, so appends waiting for space get
                        // this error now instead of a "log full" a minute later.
                        let error = std::io::Error::other(error.to_string());
                        this.log.fail("checkpoint", error);
                        return;
                    }
                }
            })
            .map_err(|e| crate::error::Error::io("start checkpoint thread", "", e))?;
        Ok(CheckpointThread {
            stop,
            handle: Some(handle),
        })
    }
}

/// The running checkpoint thread. Dropping it joins the thread: ask it to stop and close
/// the log first, or the join waits up to a second for the thread's wait to end.
#[derive(Debug)]
pub(crate) struct CheckpointThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl CheckpointThread {
    /// Makes the thread exit at its next wake-up.
    pub(crate) fn ask_to_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for CheckpointThread {
    fn drop(&mut self) {
        self.ask_to_stop();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
