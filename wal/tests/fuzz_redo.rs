//! Fuzz tests, on stable, of the redo decoders (issue 8 §5): record bodies
//! (`Record::decode`), 512-byte blocks (`block::check` + `block::open`) and the recovery
//! scan of `Log::open` over a damaged log in a `MemVfs`.
//!
//! 1. Arbitrary bytes never panic; a record that decodes re-encodes to the same bytes.
//! 2. Structure-aware: valid records and blocks with bytes flipped, cut, or a length field
//!    set huge never panic, and a damaged block is refused.
//! 3. Recovery: a log of random batches, damaged by a flipped bit or a cut, recovers a
//!    prefix of what was appended, in whole batches; undamaged, all of it. Arbitrary
//!    segment bytes (checksums fixed up, so the frames behind them are parsed) never panic.
//! 4. Hostile lengths: a frame or field claiming gigabytes gives a prompt error and no
//!    large reservation.
//!
//! The default run is short. The long run (also in `scripts/fuzz`):
//! `PROPTEST_CASES=200000 cargo test --release -p strongbox-wal --test fuzz_redo`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use proptest::prelude::*;
use strongbox_keyring::provider::{KeyProvider, MemoryKeyProvider};
use strongbox_keyring::DataKey;
use strongbox_wal::block::{self, BlockDefect, BlockHeader};
use strongbox_wal::io::MemVfs;
use strongbox_wal::record::{RecordError, MAX_RECORD_LEN};
use strongbox_wal::{Log, LogConfig, Record, WalError, BLOCK_SIZE, DATA_CAPACITY};

/// Cases per property: `PROPTEST_CASES` if set, else a short default.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

static KEY: LazyLock<DataKey> = LazyLock::new(|| DataKey::generate(256).unwrap());
static KEYS: LazyLock<MemoryKeyProvider> = LazyLock::new(|| {
    let keys = MemoryKeyProvider::new();
    keys.add_random(1, 1, 256).unwrap();
    keys
});

const DIR: &str = "/fuzz/redo";

fn segment_path(seq: u64) -> PathBuf {
    Path::new(DIR).join(format!("redo-{seq:08}.log"))
}

fn log_config(encrypt: bool) -> LogConfig {
    LogConfig {
        segment_size: 4096,
        capacity_segments: 64,
        encrypt,
        ..LogConfig::default()
    }
}

fn keyring(encrypt: bool) -> Option<&'static dyn KeyProvider> {
    encrypt.then(|| &*KEYS as &dyn KeyProvider)
}

fn fix_crc(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[4..]);
    bytes[..4].copy_from_slice(&crc.to_le_bytes());
}

fn bytes_strategy(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn record_strategy() -> impl Strategy<Value = Record> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec((any::<u32>(), bytes_strategy(200)), 0..4)
        )
            .prop_map(|(space_id, page_no, ranges)| Record::PageDelta {
                space_id,
                page_no,
                ranges
            }),
        (any::<u32>(), any::<u32>(), bytes_strategy(1200)).prop_map(
            |(space_id, page_no, image)| Record::PageImage {
                space_id,
                page_no,
                image
            }
        ),
        (any::<u32>(), bytes_strategy(300))
            .prop_map(|(space_id, image)| Record::SpaceHeader { space_id, image }),
        (any::<u32>(), bytes_strategy(100))
            .prop_map(|(space_id, payload)| Record::CreateSpace { space_id, payload }),
        any::<u32>().prop_map(|space_id| Record::DropSpace { space_id }),
        any::<u64>().prop_map(|txn_id| Record::Commit { txn_id }),
        any::<u64>().prop_map(|txn_id| Record::Rollback { txn_id }),
        any::<u64>().prop_map(|lsn| Record::Checkpoint { lsn }),
    ]
}

/// A minimal LEB128 varint, as the log writes lengths.
fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

/// A way to damage an encoding: flip a byte, cut it, or overwrite a spot with a huge varint.
#[derive(Debug, Clone)]
enum Damage {
    Flip(usize, u8),
    Cut(usize),
    HugeVarint(usize, u64),
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, x)| Damage::Flip(at, x)),
        any::<usize>().prop_map(Damage::Cut),
        (
            any::<usize>(),
            prop::sample::select(vec![
                u64::MAX,
                u64::MAX >> 1,
                1 << 40,
                u64::from(u32::MAX),
                MAX_RECORD_LEN as u64 + 1,
            ])
        )
            .prop_map(|(at, v)| Damage::HugeVarint(at, v)),
    ]
}

fn damage(bytes: &mut Vec<u8>, how: &Damage) {
    if bytes.is_empty() {
        return;
    }
    match *how {
        Damage::Flip(at, x) => {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
        Damage::Cut(at) => bytes.truncate(at % bytes.len()),
        Damage::HugeVarint(at, value) => {
            let i = at % bytes.len();
            let huge = varint(value);
            let end = (i + huge.len()).min(bytes.len());
            bytes.splice(i..end, huge);
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn fuzz_record_arbitrary_bytes(bytes in bytes_strategy(128)) {
        if let Ok(record) = Record::decode(&bytes) {
            prop_assert_eq!(record.to_bytes(), bytes);
        }
    }

    #[test]
    fn fuzz_record_damaged_encodings(record in record_strategy(), how in damage_strategy()) {
        let mut bytes = record.to_bytes();
        damage(&mut bytes, &how);
        match Record::decode(&bytes) {
            Ok(decoded) => prop_assert_eq!(decoded.to_bytes(), bytes),
            Err(error) => { let _ = error.to_string(); }
        }
    }

    #[test]
    fn fuzz_block_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), BLOCK_SIZE),
        fix in any::<bool>(),
        encrypted in any::<bool>(),
    ) {
        let mut stored: [u8; BLOCK_SIZE] = bytes.try_into().unwrap();
        if fix {
            fix_crc(&mut stored);
        }
        if let Ok(header) = block::check(&stored) {
            prop_assert!(usize::from(header.data_len) <= DATA_CAPACITY);
            let key = encrypted.then_some(&*KEY);
            let _ = block::open(&mut stored, &header, key);
        }
    }

    #[test]
    fn fuzz_block_sealed_then_damaged(
        epoch in any::<u32>(),
        block_no in any::<u64>(),
        data in prop::collection::vec(any::<u8>(), 1..=DATA_CAPACITY),
        first in any::<prop::sample::Index>(),
        encrypted in any::<bool>(),
        flip in prop::option::of((0..BLOCK_SIZE * 8, any::<bool>())),
    ) {
        let data_len = data.len();
        let first = first.index(data_len + 1);
        let header = BlockHeader {
            epoch,
            block_no,
            data_len: data_len as u16,
            first_record: (first < data_len).then_some(first as u16),
            encrypted,
        };
        let key = encrypted.then_some(&*KEY);
        let mut stored = [0u8; BLOCK_SIZE];
        header.write(&mut stored);
        block::data_mut(&mut stored)[..data_len].copy_from_slice(&data);
        block::seal(&mut stored, key);
        if let Some((bit, refix)) = flip {
            stored[bit / 8] ^= 1 << (bit % 8);
            if refix {
                fix_crc(&mut stored);
            }
        }
        let opened = block::check(&stored).and_then(|h| {
            let mut copy = stored;
            block::open(&mut copy, &h, key).map(|()| (h, copy))
        });
        match (flip, opened) {
            (None, Ok((h, copy))) => {
                prop_assert_eq!(h, header);
                prop_assert_eq!(&block::data(&copy)[..data_len], &data[..]);
            }
            (None, Err(defect)) => prop_assert!(false, "intact block refused: {:?}", defect),
            (Some((_, false)), result) => {
                prop_assert_eq!(result.err(), Some(BlockDefect::ChecksumMismatch));
            }
            (Some((bit, true)), Ok(_)) => {
                // Only a plain block (no tag), or a flip in the checksum field itself.
                prop_assert!(!encrypted || bit < 32, "a tampered encrypted block opened");
            }
            (Some((_, true)), Err(_)) => {}
        }
    }
}

/// Appends `batches` to a fresh log in a `MemVfs`, flushing each, and closes it.
fn write_log(encrypt: bool, batches: &[Vec<Record>]) -> Arc<MemVfs> {
    let vfs = Arc::new(MemVfs::new());
    let log = Log::create(
        vfs.clone(),
        Path::new(DIR),
        log_config(encrypt),
        keyring(encrypt),
    )
    .unwrap();
    for batch in batches {
        let lsn = log.append(batch).unwrap();
        log.flush(lsn).unwrap();
    }
    log.close().unwrap();
    vfs
}

fn recover(vfs: Arc<MemVfs>, encrypt: bool) -> Result<Vec<Record>, WalError> {
    let (log, report) = Log::open(vfs, Path::new(DIR), log_config(encrypt), keyring(encrypt))?;
    log.close()?;
    Ok(report.records.into_iter().map(|r| r.record).collect())
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn fuzz_recovery_of_a_damaged_log(
        batches in prop::collection::vec(prop::collection::vec(record_strategy(), 1..4), 1..6),
        encrypt in any::<bool>(),
        damage in prop::option::of((any::<prop::sample::Index>(), any::<bool>())),
    ) {
        let vfs = write_log(encrypt, &batches);
        let appended = batches.concat();
        let Some((at, cut)) = damage else {
            prop_assert_eq!(recover(vfs, encrypt).unwrap(), appended);
            return Ok(());
        };
        let mut segment = vfs.contents(&segment_path(0)).unwrap();
        if cut {
            segment.truncate(at.index(segment.len() + 1));
        } else {
            let bit = at.index(segment.len() * 8);
            segment[bit / 8] ^= 1 << (bit % 8);
        }
        vfs.set_contents(&segment_path(0), segment);
        let recovered = match recover(vfs, encrypt) {
            Ok(recovered) => recovered,
            // Damage with valid blocks after it is not a torn tail: refused, naming it.
            Err(WalError::DamagedBlock { .. }) if !cut => return Ok(()),
            Err(error) => return Err(TestCaseError::fail(format!("{error}"))),
        };
        prop_assert!(appended.starts_with(&recovered), "a record never appended came back");
        let mut boundaries = vec![0];
        for batch in &batches {
            boundaries.push(boundaries.last().unwrap() + batch.len());
        }
        prop_assert!(boundaries.contains(&recovered.len()), "a batch came back in part");
    }

    #[test]
    fn fuzz_recovery_of_arbitrary_segments(
        segment in prop::collection::vec(any::<u8>(), 0..4096),
        stamp_positions in any::<bool>(),
        fix_checksums in any::<bool>(),
    ) {
        let vfs = write_log(false, &[]);
        let mut segment = segment;
        for (i, block) in segment.chunks_exact_mut(BLOCK_SIZE).enumerate() {
            if stamp_positions {
                block[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            }
            if fix_checksums {
                fix_crc(block);
            }
        }
        vfs.set_contents(&segment_path(0), segment);
        match recover(vfs, false) {
            Ok(_) => {}
            Err(error) => prop_assert!(
                matches!(
                    error,
                    WalError::Corrupt { .. }
                        | WalError::CorruptRecord { .. }
                        | WalError::DamagedBlock { .. }
                ),
                "{}", error
            ),
        }
    }
}

// ---- hostile lengths --------------------------------------------------------------------

#[path = "../../test-support/reservation.rs"]
mod reservation;
use reservation::without_large_reservation;

/// A plain log whose only block holds `data` (one frame or the start of one).
fn log_with_block(data: &[u8], first_record: Option<u16>) -> Arc<MemVfs> {
    let vfs = write_log(false, &[]);
    let mut stored = [0u8; BLOCK_SIZE];
    BlockHeader {
        epoch: 1,
        block_no: 0,
        data_len: data.len() as u16,
        first_record,
        encrypted: false,
    }
    .write(&mut stored);
    block::data_mut(&mut stored)[..data.len()].copy_from_slice(data);
    block::seal(&mut stored, None);
    vfs.set_contents(&segment_path(0), stored.to_vec());
    vfs
}

#[test]
fn a_frame_claiming_gigabytes_is_a_corrupt_record() {
    for claim in [
        u64::MAX >> 1,
        1 << 40,
        u64::from(u32::MAX),
        MAX_RECORD_LEN as u64 + 1,
    ] {
        let mut data = varint(claim << 1 | 1);
        data.extend_from_slice(&[6, 1]); // a commit body, far shorter than claimed
        let vfs = log_with_block(&data, Some(0));
        let result = without_large_reservation("huge frame", || recover(vfs, false));
        match result {
            Err(WalError::CorruptRecord { source, .. }) => {
                assert!(matches!(
                    source,
                    RecordError::BadLength(_) | RecordError::BadVarint
                ))
            }
            other => panic!("claim {claim}: expected a corrupt record, got {other:?}"),
        }
    }
}

#[test]
fn a_frame_claiming_the_largest_record_is_cut_at_the_end_of_the_log() {
    // 1 MiB announced, 5 bytes present: the record continues past a partial block.
    let mut data = varint((MAX_RECORD_LEN as u64) << 1 | 1);
    data.extend_from_slice(&[2, 1, 1]);
    let vfs = log_with_block(&data, Some(0));
    let result = without_large_reservation("largest frame", || recover(vfs, false));
    assert!(
        matches!(result, Err(WalError::Corrupt { .. })),
        "{result:?}"
    );
}

#[test]
fn record_fields_claiming_gigabytes_are_truncated() {
    let cases: Vec<Vec<u8>> = vec![
        [&[2u8, 1, 1][..], &varint(u64::MAX >> 1)].concat(), // page image of 2^63 bytes
        [&[3u8, 1][..], &varint(1 << 40)].concat(),          // space header of 1 TiB
        [&[1u8, 1, 1][..], &varint(1 << 62), &[0; 16]].concat(), // 2^62 ranges
        [&[1u8, 1, 1, 1, 0][..], &varint(u64::from(u32::MAX))].concat(), // a 4 GiB range
    ];
    for bytes in cases {
        let result = without_large_reservation("huge field", || Record::decode(&bytes));
        assert_eq!(result, Err(RecordError::Truncated), "{bytes:?}");
    }
}

#[test]
fn a_segment_of_full_blocks_of_tiny_frames_recovers_without_blowing_up() {
    // Every block full of one-byte commit records in one batch that never ends: the
    // batch grows with the bytes read, and is dropped at the end of the log.
    let mut segment = Vec::new();
    for i in 0..8u64 {
        let mut stored = [0u8; BLOCK_SIZE];
        BlockHeader {
            epoch: 1,
            block_no: i,
            data_len: DATA_CAPACITY as u16,
            first_record: Some(0),
            encrypted: false,
        }
        .write(&mut stored);
        for frame in block::data_mut(&mut stored).chunks_exact_mut(4) {
            // Head 6: a 3-byte body, not the last of its batch; body: commit of txn 128.
            frame.copy_from_slice(&[6, 6, 0x80, 0x01]);
        }
        block::seal(&mut stored, None);
        segment.extend_from_slice(&stored);
    }
    let vfs = write_log(false, &[]);
    vfs.set_contents(&segment_path(0), segment);
    let result = without_large_reservation("tiny frames", || recover(vfs, false));
    assert_eq!(
        result.unwrap(),
        Vec::<Record>::new(),
        "the unfinished batch is dropped"
    );
}
