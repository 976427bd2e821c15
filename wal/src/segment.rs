//! Segment files: where block `b` lives on disk.
//!
//! The log stream is cut into segments of `S = segment_size / 512` blocks. Segment `seq`
//! is the file `redo-<seq:08>.log` and holds blocks `[seq·S, (seq+1)·S)`; block `b` is at
//! byte `(b mod S)·512` of segment `b / S`. Sequence numbers only grow, so a segment file
//! name is never reused for other blocks; a checkpoint deletes whole segments below it
//! (`remove_below`).
//!
//! ```text
//!   LSN 0            S·512           2S·512          3S·512
//!   | redo-00000000  | redo-00000001  | redo-00000002  |  ...
//!   | b0 b1 .. bS-1  | bS ...         |                |
//! ```
//!
//! Files are created on first write and the directory is fsynced then, so a later
//! `fdatasync` of the file is enough to make its blocks durable. Files are not
//! preallocated: a write past the end extends the file, and that `fdatasync` also syncs
//! the new size.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::block::BLOCK_SIZE;
use crate::error::{Result, WalError};
use crate::io::{FileIo, OpenMode, Vfs};

/// The file name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("redo-{seq:08}.log")
}

/// The sequence number in a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("redo-")?.strip_suffix(".log")?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Only the one spelling `segment_name` writes, so no two names map to one segment.
    let seq = digits.parse().ok()?;
    (segment_name(seq) == name).then_some(seq)
}

/// Every segment file in `dir`, by sequence number.
pub fn list_segments(vfs: &dyn Vfs, dir: &Path) -> Result<BTreeMap<u64, PathBuf>> {
    let paths = vfs.list(dir).map_err(|e| WalError::io("list", dir, e))?;
    Ok(paths
        .into_iter()
        .filter_map(|path| {
            let seq = parse_segment_name(path.file_name()?.to_str()?)?;
            Some((seq, path))
        })
        .collect())
}

/// Deletes every segment with a sequence number below `seq`, then fsyncs the directory.
/// Returns how many were deleted.
pub fn remove_below(vfs: &dyn Vfs, dir: &Path, seq: u64) -> Result<usize> {
    let mut removed = 0;
    for (_, path) in list_segments(vfs, dir)?.range(..seq) {
        vfs.remove(path)
            .map_err(|e| WalError::io("remove", path, e))?;
        removed += 1;
    }
    if removed > 0 {
        vfs.sync_dir(dir)
            .map_err(|e| WalError::io("fsync directory", dir, e))?;
    }
    Ok(removed)
}

/// Cuts the log back to block `block_no`, where recovery stopped, before a new epoch writes
/// its first block there: the segment holding it is truncated at the block's offset and
/// every later segment deleted, all fsynced.
///
/// Without this, what the scan stopped at or never reached (a garbage tail, blocks of an
/// older epoch) would stay on disk past the new epoch's blocks, and a later crash that
/// keeps a new block but loses the one before it would put a damaged block *before* a
/// valid one — which recovery must refuse as damage (`recovery.rs`), making an ordinary
/// crash look like corruption. Cut back, everything past the resume point is either
/// unwritten or the new epoch's own.
///
/// A stop at a missing segment with later segments present is a lost file, not a tail:
/// [`WalError::SegmentGap`], and nothing is deleted.
pub fn truncate_from(vfs: &dyn Vfs, dir: &Path, geometry: Geometry, block_no: u64) -> Result<()> {
    let stop_seq = geometry.segment_of(block_no);
    let offset = geometry.offset_of(block_no);
    let segments = list_segments(vfs, dir)?;
    let later: Vec<&PathBuf> = segments.range(stop_seq + 1..).map(|(_, p)| p).collect();
    match segments.get(&stop_seq) {
        Some(path) => {
            let file = vfs
                .open(path, OpenMode::Existing)
                .map_err(|e| WalError::io("open", path, e))?;
            let len = file.size().map_err(|e| WalError::io("size", path, e))?;
            if len > offset {
                file.set_len(offset)
                    .map_err(|e| WalError::io("truncate", path, e))?;
                file.sync().map_err(|e| WalError::io("fsync", path, e))?;
            }
        }
        None => {
            if let Some(later) = later.first() {
                return Err(WalError::SegmentGap {
                    missing: dir.join(segment_name(stop_seq)),
                    later: later.to_path_buf(),
                });
            }
        }
    }
    for path in &later {
        vfs.remove(path)
            .map_err(|e| WalError::io("remove", path, e))?;
    }
    if !later.is_empty() {
        vfs.sync_dir(dir)
            .map_err(|e| WalError::io("fsync directory", dir, e))?;
    }
    Ok(())
}

/// Block-to-file arithmetic for one segment size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub blocks_per_segment: u64,
}

impl Geometry {
    pub fn new(segment_size: u64) -> Geometry {
        Geometry {
            blocks_per_segment: segment_size / BLOCK_SIZE as u64,
        }
    }

    /// The segment holding block `block_no`.
    pub fn segment_of(&self, block_no: u64) -> u64 {
        block_no / self.blocks_per_segment
    }

    /// The byte offset of block `block_no` in its segment file.
    pub fn offset_of(&self, block_no: u64) -> u64 {
        (block_no % self.blocks_per_segment) * BLOCK_SIZE as u64
    }

    /// The first block of segment `seq`.
    pub fn first_block(&self, seq: u64) -> u64 {
        seq * self.blocks_per_segment
    }

    /// Bytes per segment.
    pub fn segment_bytes(&self) -> u64 {
        self.blocks_per_segment * BLOCK_SIZE as u64
    }
}

/// The segment files the flush leader writes, and which of them have unsynced writes.
/// Only the leader uses it (the writer keeps it behind its own mutex).
#[derive(Debug)]
pub struct SegmentWriter {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    geometry: Geometry,
    /// Open segment files by sequence number.
    files: BTreeMap<u64, Arc<dyn FileIo>>,
    /// Segments written since their last fsync.
    dirty: BTreeSet<u64>,
}

impl SegmentWriter {
    pub fn new(vfs: Arc<dyn Vfs>, dir: PathBuf, geometry: Geometry) -> SegmentWriter {
        SegmentWriter {
            vfs,
            dir,
            geometry,
            files: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(segment_name(seq))
    }

    fn file(&mut self, seq: u64) -> Result<Arc<dyn FileIo>> {
        if let Some(file) = self.files.get(&seq) {
            return Ok(Arc::clone(file));
        }
        let path = self.path(seq);
        // The segment recovery stopped in already exists, cut back to the resume point
        // (`truncate_from`); it is reused and written on from there.
        let existed = self.vfs.exists(&path);
        let file = self
            .vfs
            .open(&path, OpenMode::CreateOrOpen)
            .map_err(|e| WalError::io("create", &path, e))?;
        if !existed {
            self.vfs
                .sync_dir(&self.dir)
                .map_err(|e| WalError::io("fsync directory", &self.dir, e))?;
        }
        // Segments below the one being written are finished; drop their handles once synced.
        let done: Vec<u64> = self
            .files
            .range(..seq)
            .map(|(&s, _)| s)
            .filter(|s| !self.dirty.contains(s))
            .collect();
        for s in done {
            self.files.remove(&s);
        }
        self.files.insert(seq, Arc::clone(&file));
        Ok(file)
    }

    /// Writes stored blocks starting at block `first_block` (`bytes.len()` is a multiple
    /// of 512), one `write_at` per segment touched.
    pub fn write_blocks(&mut self, first_block: u64, bytes: &[u8]) -> Result<()> {
        let mut block = first_block;
        let mut rest = bytes;
        while !rest.is_empty() {
            let seq = self.geometry.segment_of(block);
            let room = (self.geometry.first_block(seq + 1) - block) as usize * BLOCK_SIZE;
            let (now, later) = rest.split_at(room.min(rest.len()));
            let file = self.file(seq)?;
            file.write_at(now, self.geometry.offset_of(block))
                .map_err(|e| WalError::io("write", self.path(seq), e))?;
            self.dirty.insert(seq);
            block += (now.len() / BLOCK_SIZE) as u64;
            rest = later;
        }
        Ok(())
    }

    /// fsyncs every segment written since its last fsync; returns how many fsyncs ran.
    pub fn sync(&mut self) -> Result<u64> {
        let mut syncs = 0;
        while let Some(&seq) = self.dirty.first() {
            let file = self.file(seq)?;
            file.sync()
                .map_err(|e| WalError::io("fsync", self.path(seq), e))?;
            self.dirty.remove(&seq);
            syncs += 1;
        }
        Ok(syncs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemVfs;

    #[test]
    fn names_and_geometry() {
        assert_eq!(segment_name(7), "redo-00000007.log");
        assert_eq!(segment_name(123_456_789), "redo-123456789.log");
        assert_eq!(parse_segment_name("redo-00000007.log"), Some(7));
        assert_eq!(parse_segment_name("redo-123456789.log"), Some(123_456_789));
        for bad in [
            "redo-7.log",
            "redo-000000007.log",
            "redo-0000000x.log",
            "redo.ctl",
            "redo-00000001.log.tmp",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
        let g = Geometry::new(4096);
        assert_eq!(g.blocks_per_segment, 8);
        assert_eq!((g.segment_of(17), g.offset_of(17)), (2, 512));
    }

    #[test]
    fn writes_split_at_segment_boundaries_and_old_segments_are_removed() {
        let vfs = Arc::new(MemVfs::new());
        let dir = PathBuf::from("/log");
        let mut writer = SegmentWriter::new(vfs.clone(), dir.clone(), Geometry::new(4096));
        let bytes: Vec<u8> = (0..10 * BLOCK_SIZE)
            .map(|i| (i / BLOCK_SIZE) as u8)
            .collect();
        writer.write_blocks(5, &bytes).unwrap();
        assert_eq!(writer.sync().unwrap(), 2);
        assert_eq!(writer.sync().unwrap(), 0);
        let seg0 = vfs.contents(&dir.join(segment_name(0))).unwrap();
        let seg1 = vfs.contents(&dir.join(segment_name(1))).unwrap();
        assert_eq!(seg0.len(), 8 * BLOCK_SIZE);
        assert_eq!(seg0[5 * BLOCK_SIZE], 0);
        assert_eq!(seg0[7 * BLOCK_SIZE], 2);
        assert_eq!(seg1.len(), 7 * BLOCK_SIZE);
        assert_eq!(seg1[6 * BLOCK_SIZE], 9);
        assert_eq!(remove_below(vfs.as_ref(), &dir, 1).unwrap(), 1);
        assert_eq!(
            list_segments(vfs.as_ref(), &dir)
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            vec![&1]
        );
    }
}
