//! Torn and garbage tails: recovery returns exactly the records complete before the damage,
//! says where it stopped, and the log then carries on in a new epoch.

use std::sync::Arc;

use strongbox_keyring::provider::MemoryKeyProvider;

use super::*;
use crate::block::{block_of, lsn_at};
use crate::segment::segment_name;
use crate::{Log, LoggedRecord, StopWhy, WalError, BLOCK_SIZE};

const BLOCKS_PER_SEGMENT: u64 = 16;
const BLOCK: u64 = BLOCK_SIZE as u64;

/// A closed log of a few hundred records, each batch committed on its own (so blocks end
/// at varied fill levels), whose last segment holds 5 to 13 of its 16 blocks.
struct Built {
    encrypt: bool,
    keys: MemoryKeyProvider,
    files: Vec<(PathBuf, Vec<u8>)>,
    logged: Vec<LoggedRecord>,
    last_segment: PathBuf,
    /// Global block number of the last segment's first block.
    last_segment_first_block: u64,
}

fn build(encrypt: bool) -> Built {
    let vfs = HookVfs::default();
    let keys = keys();
    let config = small_config(encrypt);
    let log = Log::create(Arc::new(vfs.clone()), dir(), config.clone(), Some(&keys)).unwrap();
    let mut rng = Rng::new(if encrypt { 11 } else { 12 });
    let mut appended = Vec::new();
    loop {
        let batch: Vec<Record> = (0..1 + rng.below(4))
            .map(|_| match random_record(&mut rng) {
                Record::PageImage { image, .. } if image.len() > 2000 => {
                    Record::Commit { txn_id: 5 }
                }
                other => other,
            })
            .collect();
        log.commit(log.append(&batch).unwrap()).unwrap();
        appended.extend(batch);
        // Room for damage before the end (>= 4 blocks) and for garbage after it (<= 12).
        let last = block_of(log.current_lsn()) % BLOCKS_PER_SEGMENT;
        if appended.len() >= 300 && (4..=12).contains(&last) {
            break;
        }
    }
    log.close().unwrap();
    let files = snapshot(&vfs.mem);
    let (log, report) = Log::open(Arc::new(vfs.clone()), dir(), config, Some(&keys)).unwrap();
    drop(log);
    assert_eq!(records_of(&report), appended);
    let last_seq = *segments(&vfs.mem).last().unwrap();
    Built {
        encrypt,
        keys,
        files,
        logged: report.records,
        last_segment: dir().join(segment_name(last_seq)),
        last_segment_first_block: last_seq * BLOCKS_PER_SEGMENT,
    }
}

impl Built {
    fn last_segment_bytes(&self) -> Vec<u8> {
        let (_, bytes) = self
            .files
            .iter()
            .find(|(p, _)| *p == self.last_segment)
            .unwrap();
        assert!(bytes.len() >= 4 * BLOCK_SIZE);
        bytes.clone()
    }

    fn with_last_segment(&self, bytes: Vec<u8>) -> HookVfs {
        let vfs = restore(&self.files);
        vfs.mem.set_contents(&self.last_segment, bytes);
        vfs
    }

    /// Opens the damaged log and checks the report against the records whose every byte
    /// lies before `damaged_block` — whole batches only; then appends in the new epoch and
    /// reopens, expecting the old and the new records. `why` checks the stop reason.
    /// Returns what the case exercised: whether a batch was discarded, and why the second
    /// reopen stopped.
    fn check(
        &self,
        vfs: HookVfs,
        damaged_block: u64,
        why: impl Fn(StopWhy) -> bool,
        case: u64,
    ) -> (bool, StopWhy) {
        let config = small_config(self.encrypt);
        let (log, report) = Log::open(
            Arc::new(vfs.clone()),
            dir(),
            config.clone(),
            Some(&self.keys),
        )
        .unwrap_or_else(|e| panic!("case {case}: open failed: {e}"));
        let complete = |r: &&LoggedRecord| (r.batch_end_lsn - 1) / BLOCK < damaged_block;
        let expected: Vec<LoggedRecord> = self.logged.iter().filter(complete).cloned().collect();
        assert_eq!(report.records, expected, "case {case}");
        assert_eq!(report.stop.block_no, damaged_block, "case {case}");
        assert!(why(report.stop.why), "case {case}: {:?}", report.stop);
        assert_eq!(report.resume_lsn, lsn_at(damaged_block, 0), "case {case}");
        // Nothing past the stop is left beside the new epoch's blocks (`truncate_from`).
        let files = snapshot(&vfs.mem);
        for (path, bytes) in &files {
            if *path == report.stop_segment {
                assert!(
                    bytes.len() as u64 <= report.stop_offset,
                    "case {case}: tail kept"
                );
            }
        }
        let stop_seq = damaged_block / BLOCKS_PER_SEGMENT;
        assert!(
            segments(&vfs.mem).iter().all(|&seq| seq <= stop_seq),
            "case {case}: a segment past the stop survived"
        );
        // A batch that started before the damage and ends inside it is discarded.
        let mut cut: Vec<Lsn> = Vec::new();
        for r in self.logged.iter() {
            let batch_start = self
                .logged
                .iter()
                .find(|s| s.batch_end_lsn == r.batch_end_lsn)
                .unwrap()
                .lsn;
            if batch_start < lsn_at(damaged_block, 0)
                && !complete(&r)
                && !cut.contains(&batch_start)
            {
                cut.push(batch_start);
            }
        }
        assert_eq!(report.discarded, cut, "case {case}");

        let new = [
            Record::Commit { txn_id: case },
            Record::CreateSpace {
                space_id: 9,
                payload: vec![case as u8; 30],
            },
        ];
        let end = log.append(&new).unwrap();
        log.flush(end).unwrap();
        log.close().unwrap();
        let (log, again) = Log::open(Arc::new(vfs), dir(), config, Some(&self.keys)).unwrap();
        let mut all: Vec<Record> = expected.into_iter().map(|r| r.record).collect();
        all.extend(new);
        assert_eq!(records_of(&again), all, "case {case}: second reopen");
        assert_eq!(again.records.last().unwrap().end_lsn, end);
        assert!(again.epoch > report.epoch);
        drop(log);
        (!report.discarded.is_empty(), again.stop.why)
    }
}

/// Truncates the last segment at every byte offset within its last three blocks.
fn truncated_at_every_offset(encrypt: bool) {
    let built = build(encrypt);
    let bytes = built.last_segment_bytes();
    // The sweep must include a cut that leaves some records of a batch complete: recovery
    // must drop them with the rest of their batch.
    let batch_split = (bytes.len() - 3 * BLOCK_SIZE..bytes.len()).any(|cut| {
        let damaged = built.last_segment_first_block + (cut / BLOCK_SIZE) as u64;
        built
            .logged
            .iter()
            .any(|r| (r.end_lsn - 1) / BLOCK < damaged && (r.batch_end_lsn - 1) / BLOCK >= damaged)
    });
    assert!(batch_split);
    for cut in bytes.len() - 3 * BLOCK_SIZE..bytes.len() {
        let vfs = built.with_last_segment(bytes[..cut].to_vec());
        let damaged = built.last_segment_first_block + (cut / BLOCK_SIZE) as u64;
        let partial = (cut % BLOCK_SIZE) as u64;
        let why = move |why| match why {
            StopWhy::EndOfFile => partial == 0,
            StopWhy::PartialBlock { bytes } => bytes == partial,
            _ => false,
        };
        let _ = built.check(vfs, damaged, why, cut as u64);
    }
}

#[test]
fn plain_torn_tail_truncated_at_every_offset() {
    truncated_at_every_offset(false);
}

#[test]
fn encrypted_torn_tail_truncated_at_every_offset() {
    truncated_at_every_offset(true);
}

/// Flips one byte at every position of the last three blocks. A flip in the last block
/// cannot be told from a torn tail: the log ends there. A flip in an earlier block has
/// valid blocks of the log after it: that is damage, not a torn tail, and the open fails
/// naming the segment and the offset (a crash leaves a 512-byte block old or new, never
/// failing its checksum, so records after it may have been acknowledged).
///
/// The same earlier blocks zeroed instead (a sector a crash never wrote, while later ones
/// reached the disk) do end the log; the open cuts the log back there, so the blocks after
/// the zeroed one are gone and the second reopen ends after the new epoch's blocks, never
/// at an old block next to them.
fn flipped_at_every_byte(encrypt: bool) {
    let built = build(encrypt);
    let bytes = built.last_segment_bytes();
    let last_block = bytes.len() / BLOCK_SIZE - 1;
    let (mut discarded, mut stale, mut refused) = (false, false, 0);
    for pos in bytes.len() - 3 * BLOCK_SIZE..bytes.len() {
        let mut damaged_bytes = bytes.clone();
        damaged_bytes[pos] ^= 0x5A;
        let vfs = built.with_last_segment(damaged_bytes);
        let damaged = built.last_segment_first_block + (pos / BLOCK_SIZE) as u64;
        if pos / BLOCK_SIZE == last_block {
            let (cut, _) = built.check(
                vfs,
                damaged,
                |why| why == StopWhy::ChecksumMismatch,
                pos as u64,
            );
            discarded |= cut;
            continue;
        }
        let config = small_config(built.encrypt);
        match Log::open(Arc::new(vfs), dir(), config, Some(&built.keys)) {
            Err(WalError::DamagedBlock {
                path,
                offset,
                block_no,
                why: StopWhy::ChecksumMismatch,
                next_valid,
                ..
            }) => {
                assert_eq!(path, built.last_segment, "byte {pos}");
                assert_eq!(offset, (pos / BLOCK_SIZE * BLOCK_SIZE) as u64, "byte {pos}");
                assert_eq!((block_no, next_valid), (damaged, damaged + 1), "byte {pos}");
                refused += 1;
            }
            Err(other) => panic!("byte {pos}: expected DamagedBlock, got {other}"),
            Ok(_) => panic!("byte {pos}: damage before valid blocks must fail the open"),
        }
    }
    assert_eq!(refused, 2 * BLOCK_SIZE);
    for block in last_block - 2..last_block {
        let mut zeroed = bytes.clone();
        zeroed[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE].fill(0);
        let damaged = built.last_segment_first_block + block as u64;
        let (cut, second_stop) = built.check(
            built.with_last_segment(zeroed),
            damaged,
            |why| why == StopWhy::Unwritten,
            block as u64,
        );
        discarded |= cut;
        stale |= matches!(second_stop, StopWhy::StaleEpoch { .. });
    }
    // The sweep must have met a record cut by the damage, and no old block may have
    // survived past the new epoch's.
    assert!(discarded && !stale, "discarded {discarded}, stale {stale}");
}

#[test]
fn plain_tail_with_a_flipped_byte_anywhere() {
    flipped_at_every_byte(false);
}

#[test]
fn encrypted_tail_with_a_flipped_byte_anywhere() {
    flipped_at_every_byte(true);
}

#[test]
fn garbage_zeros_and_misplaced_blocks_after_the_end() {
    for encrypt in [false, true] {
        let built = build(encrypt);
        let bytes = built.last_segment_bytes();
        let end_block = built.last_segment_first_block + (bytes.len() / BLOCK_SIZE) as u64;
        let mut rng = Rng::new(99);

        let mut garbage = bytes.clone();
        garbage.extend(rng.bytes(3 * BLOCK_SIZE));
        built.check(
            built.with_last_segment(garbage),
            end_block,
            |w| w == StopWhy::ChecksumMismatch,
            1,
        );

        let mut zeros = bytes.clone();
        zeros.extend(vec![0; 2 * BLOCK_SIZE]);
        built.check(
            built.with_last_segment(zeros),
            end_block,
            |w| w == StopWhy::Unwritten,
            2,
        );

        // A valid block copied past the end: checksum fine, position wrong.
        let mut misplaced = bytes.clone();
        misplaced.extend_from_slice(&bytes[..BLOCK_SIZE]);
        let found = built.last_segment_first_block;
        built.check(
            built.with_last_segment(misplaced),
            end_block,
            move |w| w == StopWhy::WrongPosition { found },
            3,
        );
    }
}

#[test]
fn a_missing_segment_ends_the_log() {
    let built = build(true);
    let vfs = restore(&built.files);
    vfs.mem.remove(&built.last_segment).unwrap();
    built.check(
        vfs,
        built.last_segment_first_block,
        |w| w == StopWhy::MissingSegment,
        4,
    );
}

/// A segment missing *between* others is a lost file, not the end of the log: the open
/// refuses and deletes nothing.
#[test]
fn a_segment_missing_before_a_later_one_is_refused() {
    let built = build(true);
    let vfs = restore(&built.files);
    let seqs = segments(&vfs.mem);
    assert!(seqs.len() >= 3, "{seqs:?}");
    let missing = dir().join(segment_name(seqs[seqs.len() - 2]));
    vfs.mem.remove(&missing).unwrap();
    let before = snapshot(&vfs.mem);
    let config = small_config(true);
    let error = Log::open(Arc::new(vfs.clone()), dir(), config, Some(&built.keys)).unwrap_err();
    match &error {
        WalError::SegmentGap { missing: m, .. } => assert_eq!(*m, missing),
        other => panic!("expected SegmentGap, got {other}"),
    }
    assert!(
        error
            .to_string()
            .contains("is missing but the later segment"),
        "{error}"
    );
    let after = snapshot(&vfs.mem);
    assert_eq!(
        before.iter().map(|(p, b)| (p, b.len())).collect::<Vec<_>>(),
        after.iter().map(|(p, b)| (p, b.len())).collect::<Vec<_>>()
    );
}

/// Two ordinary crashes must never add up to "damage": the first leaves a garbage block at
/// the tail (accepted as torn), the next epoch writes a 3-block batch there and the power
/// fails during its fsync, with the disk keeping any subset of the new sectors. Had the
/// garbage stayed on disk past the resume point, a kept later block behind it would look
/// like damage followed by valid blocks and the log would refuse to open (found in review;
/// `segment::truncate_from` is the fix). Every image must open with the five commits.
#[test]
fn a_garbage_tail_then_a_torn_batch_of_the_next_epoch_still_opens() {
    use crate::io::{Damage, SimVfs};
    use crate::FlushAtCommit;
    let config = LogConfig {
        segment_size: 64 * BLOCK,
        capacity_segments: 4,
        encrypt: false,
        flush_at_commit: FlushAtCommit::EveryCommit,
        ..LogConfig::default()
    };
    let vfs = SimVfs::new();
    let log = Log::create(Arc::new(vfs.clone()), dir(), config.clone(), None).unwrap();
    for txn_id in 0..5 {
        log.commit(log.append(&[Record::Commit { txn_id }]).unwrap())
            .unwrap();
    }
    drop(log);
    let disk = vfs.crash(Damage::KeepAll);
    let segment = dir().join(segment_name(0));
    let mut bytes = disk.contents(&segment).unwrap();
    let garbage_block = (bytes.len() / BLOCK_SIZE) as u64;
    bytes.extend((0..3 * BLOCK_SIZE).map(|i| (i as u8).wrapping_mul(37).wrapping_add(11)));
    disk.set_contents(&segment, bytes);
    let disk = disk.crash(Damage::KeepAll);

    let (log, report) = Log::open(Arc::new(disk.clone()), dir(), config.clone(), None).unwrap();
    assert_eq!(report.stop.block_no, garbage_block);
    assert_eq!(report.records.len(), 5);
    let lsn = log
        .append(&[Record::PageImage {
            space_id: 1,
            page_no: 1,
            image: vec![7; 1200],
        }])
        .unwrap();
    // The power fails at the batch's fsync (after the segment's open and the write).
    disk.power_fail_after(disk.ops() + 2);
    assert!(
        log.commit(lsn).is_err(),
        "the batch must not be acknowledged"
    );
    drop(log);
    for seed in 0..200 {
        let image = disk.crash(Damage::Torn { seed, sector: 512 });
        let (_, again) = Log::open(Arc::new(image), dir(), config.clone(), None)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let commits = records_of(&again)
            .iter()
            .filter(|r| matches!(r, Record::Commit { .. }))
            .count();
        assert_eq!(commits, 5, "seed {seed}");
    }
}
