//! Whole-log tests, through the public API, on `MemVfs` wrapped in a hooking decorator.
//!
//! A "crash" here is dropping the `Log` without `close`: `MemVfs` keeps every completed
//! write, so what survives is what was written; damage is applied to the files directly.

mod checkpoint;
mod crash;
mod damage;
mod durability;
mod keys;
mod roundtrip;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use strongbox_keyring::provider::MemoryKeyProvider;

use crate::io::{FileIo, MemVfs, OpenMode, Vfs};
use crate::segment::parse_segment_name;
use crate::{LogConfig, Lsn, Record};

/// What the hooking file system observes and injects; shared by all its files.
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    /// Guards the `(epoch, block_no, crc)` of every block written to a segment file.
    pub blocks: Mutex<Vec<(u32, u64, u32)>>,
    /// Each segment fsync sleeps this long (a slow disk, so group commit can form).
    pub sync_delay_micros: AtomicU64,
    /// When set, every fsync fails.
    pub fail_syncs: AtomicBool,
    pub syncs: AtomicU64,
    pub failed_syncs: AtomicU64,
}

/// `MemVfs` with [`Hooks`].
#[derive(Debug, Clone, Default)]
pub(crate) struct HookVfs {
    pub mem: MemVfs,
    pub hooks: Arc<Hooks>,
}

#[derive(Debug)]
struct HookFile {
    inner: Arc<dyn FileIo>,
    segment: bool,
    hooks: Arc<Hooks>,
}

impl FileIo for HookFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if self.segment {
            let mut blocks = self.hooks.blocks.lock();
            for block in buf.chunks(512) {
                let epoch = u32::from_le_bytes(block[4..8].try_into().unwrap());
                let block_no = u64::from_le_bytes(block[8..16].try_into().unwrap());
                let crc = u32::from_le_bytes(block[0..4].try_into().unwrap());
                blocks.push((epoch, block_no, crc));
            }
        }
        self.inner.write_at(buf, offset)
    }

    fn sync(&self) -> std::io::Result<()> {
        if self.segment {
            let delay = self.hooks.sync_delay_micros.load(Ordering::Relaxed);
            if delay > 0 {
                std::thread::sleep(Duration::from_micros(delay));
            }
            if self.hooks.fail_syncs.load(Ordering::Relaxed) {
                self.hooks.failed_syncs.fetch_add(1, Ordering::Relaxed);
                return Err(std::io::Error::other("injected fsync failure"));
            }
            self.hooks.syncs.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.sync()
    }

    fn size(&self) -> std::io::Result<u64> {
        self.inner.size()
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
}

impl Vfs for HookVfs {
    fn open(&self, path: &Path, mode: OpenMode) -> std::io::Result<Arc<dyn FileIo>> {
        let segment = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_segment_name)
            .is_some();
        Ok(Arc::new(HookFile {
            inner: self.mem.open(path, mode)?,
            segment,
            hooks: Arc::clone(&self.hooks),
        }))
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.mem.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.mem.rename(from, to)
    }
    fn exists(&self, path: &Path) -> bool {
        self.mem.exists(path)
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.mem.create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        self.mem.list(dir)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.mem.sync_dir(dir)
    }
}

pub(crate) fn dir() -> &'static Path {
    Path::new("/db/redo")
}

pub(crate) fn keys() -> MemoryKeyProvider {
    let keys = MemoryKeyProvider::new();
    keys.add_random(1, 1, 256).unwrap();
    keys
}

/// Small segments (16 blocks) and a roomy capacity.
pub(crate) fn small_config(encrypt: bool) -> LogConfig {
    LogConfig {
        segment_size: 8 * 1024,
        capacity_segments: 10_000,
        encrypt,
        ..LogConfig::default()
    }
}

/// A copy of every file (for replaying damage against the same starting point).
pub(crate) fn snapshot(mem: &MemVfs) -> Vec<(PathBuf, Vec<u8>)> {
    mem.list(dir())
        .unwrap()
        .into_iter()
        .map(|p| {
            let bytes = mem.contents(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

pub(crate) fn restore(files: &[(PathBuf, Vec<u8>)]) -> HookVfs {
    let vfs = HookVfs::default();
    for (path, bytes) in files {
        vfs.mem.set_contents(path, bytes.clone());
    }
    vfs
}

/// Segment files present, by sequence number.
pub(crate) fn segments(mem: &MemVfs) -> Vec<u64> {
    crate::segment::list_segments(mem, dir())
        .unwrap()
        .into_keys()
        .collect()
}

/// A deterministic generator (xorshift64*).
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A mix of every record kind; sizes from 2 bytes to several blocks, now and then a
/// 20 KiB page image that spans segments.
pub(crate) fn random_record(rng: &mut Rng) -> Record {
    let space_id = rng.below(100) as u32;
    let page_no = rng.next() as u32;
    match rng.below(10) {
        0..=3 => Record::PageDelta {
            space_id,
            page_no,
            ranges: (0..1 + rng.below(4))
                .map(|_| {
                    let len = rng.below(300) as usize;
                    (rng.below(16384) as u32, rng.bytes(len))
                })
                .collect(),
        },
        4 => {
            let len = if rng.below(8) == 0 {
                20_000
            } else {
                rng.below(1500) as usize
            };
            Record::PageImage {
                space_id,
                page_no,
                image: rng.bytes(len),
            }
        }
        5 => {
            let len = rng.below(200) as usize;
            Record::SpaceHeader {
                space_id,
                image: rng.bytes(len),
            }
        }
        6 => {
            let len = rng.below(40) as usize;
            Record::CreateSpace {
                space_id,
                payload: rng.bytes(len),
            }
        }
        7 => Record::DropSpace { space_id },
        8 => Record::Rollback { txn_id: rng.next() },
        _ => Record::Commit { txn_id: rng.next() },
    }
}

/// The records of a report, without LSNs.
pub(crate) fn records_of(report: &crate::RecoveryReport) -> Vec<Record> {
    report.records.iter().map(|r| r.record.clone()).collect()
}

/// What was appended: each record with the end LSN of its batch's last record (set on
/// the batch's last record only).
pub(crate) struct Appended {
    pub records: Vec<Record>,
    pub batch_ends: Vec<(usize, Lsn)>,
}

impl Appended {
    pub fn new() -> Appended {
        Appended {
            records: Vec::new(),
            batch_ends: Vec::new(),
        }
    }

    pub fn push(&mut self, batch: &[Record], end: Lsn) {
        self.records.extend_from_slice(batch);
        self.batch_ends.push((self.records.len() - 1, end));
    }
}
