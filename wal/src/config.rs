//! [`LogConfig`] and [`FlushAtCommit`]: the redo log's settings.

use std::time::Duration;

use crate::block::BLOCK_SIZE;
use crate::error::{Result, WalError};

/// What `Log::commit` waits for: MariaDB's `innodb_flush_log_at_trx_commit`, named
/// `flush_log_at_commit` here (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushAtCommit {
    /// `0`: commit returns at once; the background thread writes and fsyncs the log once
    /// per `flush_interval`. A crash of the process or the machine can lose the last
    /// interval of commits.
    OncePerInterval,
    /// `1` (default): commit returns when its records are fsynced (group commit shares
    /// one fsync among all committers waiting at the time). Nothing acknowledged is lost.
    #[default]
    EveryCommit,
    /// `2`: commit writes its records to the OS (no fsync) before returning; the
    /// background thread fsyncs once per `flush_interval`. A process crash loses nothing;
    /// an OS crash or power loss can lose the last interval.
    WriteAtCommit,
}

impl FlushAtCommit {
    /// The MariaDB number: 0, 1 or 2.
    pub fn level(self) -> u8 {
        match self {
            FlushAtCommit::OncePerInterval => 0,
            FlushAtCommit::EveryCommit => 1,
            FlushAtCommit::WriteAtCommit => 2,
        }
    }

    /// From the MariaDB number; `None` for anything but 0, 1, 2.
    pub fn from_level(level: u8) -> Option<FlushAtCommit> {
        match level {
            0 => Some(FlushAtCommit::OncePerInterval),
            1 => Some(FlushAtCommit::EveryCommit),
            2 => Some(FlushAtCommit::WriteAtCommit),
            _ => None,
        }
    }
}

/// Settings of a redo log.
///
/// `segment_size` and `encrypt` are fixed when the log is created (the control file
/// records them; `open` uses the stored segment size and refuses a different `encrypt`).
/// The rest apply to each open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Bytes per segment file: a multiple of 512, at least 4 KiB. Default 64 MiB.
    pub segment_size: u64,
    /// How many segments the log may use between the checkpoint's segment and the write
    /// position (at least 2). Default 8 (512 MiB with the default segment size).
    pub capacity_segments: u32,
    /// `flush_log_at_commit`. Default [`FlushAtCommit::EveryCommit`].
    pub flush_at_commit: FlushAtCommit,
    /// `encrypt_log`: encrypt blocks with a data key wrapped under key id 1. Default on.
    pub encrypt: bool,
    /// How often the background thread flushes under policies 0 and 2
    /// (MariaDB's `innodb_flush_log_at_timeout`). Default 1 s.
    pub flush_interval: Duration,
    /// How long `append` waits for a checkpoint to free space in a full log before it
    /// fails with `LogFull`. Default 60 s.
    pub full_log_timeout: Duration,
    /// Unwritten log bytes after which `append` writes the buffer to the OS itself
    /// (`innodb_log_buffer_size`). Default 16 MiB.
    pub buffer_size: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size: 64 << 20,
            capacity_segments: 8,
            flush_at_commit: FlushAtCommit::default(),
            encrypt: true,
            flush_interval: Duration::from_secs(1),
            full_log_timeout: Duration::from_secs(60),
            buffer_size: 16 << 20,
        }
    }
}

/// Smallest segment: 8 blocks.
const MIN_SEGMENT_SIZE: u64 = 8 * BLOCK_SIZE as u64;

impl LogConfig {
    /// Checks every value; `open` and `create` call it.
    pub fn validate(&self) -> Result<()> {
        if !self.segment_size.is_multiple_of(BLOCK_SIZE as u64)
            || self.segment_size < MIN_SEGMENT_SIZE
        {
            return Err(WalError::Config(
                "segment_size must be a multiple of 512 and at least 4096",
            ));
        }
        if self.capacity_segments < 2 {
            return Err(WalError::Config("capacity_segments must be at least 2"));
        }
        if self.flush_interval.is_zero() {
            return Err(WalError::Config("flush_interval must be above zero"));
        }
        if self.buffer_size < BLOCK_SIZE {
            return Err(WalError::Config("buffer_size must be at least 512"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_validation() {
        for level in 0..=2 {
            assert_eq!(FlushAtCommit::from_level(level).unwrap().level(), level);
        }
        assert_eq!(FlushAtCommit::from_level(3), None);
        LogConfig::default().validate().unwrap();
        let bad = [
            LogConfig {
                segment_size: 4097,
                ..LogConfig::default()
            },
            LogConfig {
                segment_size: 2048,
                ..LogConfig::default()
            },
            LogConfig {
                capacity_segments: 1,
                ..LogConfig::default()
            },
            LogConfig {
                flush_interval: Duration::ZERO,
                ..LogConfig::default()
            },
        ];
        for config in bad {
            assert!(matches!(config.validate(), Err(WalError::Config(_))));
        }
    }
}
