//! Fuzz target `redo_scan`: recovery (`Log::open`) over a fuzzed redo log in a `MemVfs`.
//!
//! Two modes, chosen by bit 0x01 of the control byte:
//!
//! * **raw**: the rest of the input is segment 0 of a plain log (4 KiB segments); on request
//!   each block gets its CRC fixed up and its `block_no` stamped with its position, and the
//!   first 512 bytes replace control slot 0 (CRC fixed). `Log::open` must return `Ok` or an
//!   error, never panic, and an `Ok` log must close.
//! * **records**: the input is cut into records appended in batches to a real log (plain or
//!   encrypted), which is closed, damaged by one flipped bit (or cut), and opened again. The
//!   records recovered must be a prefix of those appended, whole batches only (a flipped bit
//!   fails the block's CRC, so the scan stops there, or refuses the log with `DamagedBlock`
//!   when valid blocks follow); undamaged, they must all come back.
#![no_main]

use std::path::Path;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use strongbox_fuzz::{fix_crc, Input};
use strongbox_keyring::provider::MemoryKeyProvider;
use strongbox_wal::io::MemVfs;
use strongbox_wal::{Log, LogConfig, Record, WalError, BLOCK_SIZE};

const DIR: &str = "/fuzz/redo";
const SEGMENT_SIZE: u64 = 4096;

static KEYS: LazyLock<MemoryKeyProvider> = LazyLock::new(|| {
    let keys = MemoryKeyProvider::new();
    keys.add_random(1, 1, 256).expect("key 1");
    keys
});

fn config(encrypt: bool) -> LogConfig {
    LogConfig {
        segment_size: SEGMENT_SIZE,
        encrypt,
        ..LogConfig::default()
    }
}

/// The control file of a fresh plain log.
static CONTROL: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let vfs = Arc::new(MemVfs::new());
    let log = Log::create(vfs.clone(), Path::new(DIR), config(false), None).expect("create");
    log.close().expect("close");
    vfs.contents(&Path::new(DIR).join("redo.ctl"))
        .expect("control file")
});

fn segment_path() -> std::path::PathBuf {
    Path::new(DIR).join("redo-00000000.log")
}

fn raw(control: u8, mut input: Input<'_>) {
    let vfs = Arc::new(MemVfs::new());
    let mut control_file = CONTROL.clone();
    if control & 0x02 != 0 {
        for byte in control_file.iter_mut().take(BLOCK_SIZE) {
            *byte = input.byte();
        }
        fix_crc(&mut control_file[..BLOCK_SIZE]);
    }
    let mut segment = input.rest().to_vec();
    for (i, block) in segment.chunks_exact_mut(BLOCK_SIZE).enumerate() {
        if control & 0x04 != 0 {
            block[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        }
        if control & 0x08 != 0 {
            fix_crc(block);
        }
    }
    vfs.set_contents(&Path::new(DIR).join("redo.ctl"), control_file);
    vfs.set_contents(&segment_path(), segment);
    if let Ok((log, _report)) = Log::open(vfs, Path::new(DIR), config(false), None) {
        let _ = log.close();
    }
}

fn records(control: u8, mut input: Input<'_>) {
    let encrypt = control & 0x02 != 0;
    let keys = encrypt.then(|| &*KEYS as &dyn strongbox_keyring::provider::KeyProvider);
    let damage = input.byte();
    let at = input.u32() as usize;
    let mut batches: Vec<Vec<Record>> = Vec::new();
    let mut batch = Vec::new();
    let rest = input.rest();
    for chunk in rest.chunks(97) {
        let (&tag, body) = chunk.split_first().expect("chunks are not empty");
        batch.push(match tag % 4 {
            0 => Record::Commit {
                txn_id: u64::from(tag),
            },
            1 => Record::PageDelta {
                space_id: 7,
                page_no: u32::from(tag),
                ranges: vec![(u32::from(tag) * 3, body.to_vec())],
            },
            2 => Record::PageImage {
                space_id: 7,
                page_no: 1,
                image: body.repeat(1 + usize::from(tag % 8)),
            },
            _ => Record::CreateSpace {
                space_id: u32::from(tag),
                payload: body.to_vec(),
            },
        });
        if tag & 0x10 != 0 {
            batches.push(std::mem::take(&mut batch));
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    let vfs = Arc::new(MemVfs::new());
    let dir = Path::new(DIR);
    let mut config = config(encrypt);
    config.capacity_segments = 64;
    let log = Log::create(vfs.clone(), dir, config.clone(), keys).expect("create");
    for batch in &batches {
        let lsn = log.append(batch).expect("append");
        log.flush(lsn).expect("flush");
    }
    log.close().expect("close");
    let appended: Vec<Record> = batches.concat();

    let damaged = damage & 0x80 != 0 && vfs.contents(&segment_path()).is_some();
    if damaged {
        let mut segment = vfs.contents(&segment_path()).expect("segment 0");
        if damage & 0x40 != 0 {
            segment.truncate(at % (segment.len() + 1));
        } else if !segment.is_empty() {
            let bit = at % (segment.len() * 8);
            segment[bit / 8] ^= 1 << (bit % 8);
        }
        vfs.set_contents(&segment_path(), segment);
    }
    let (log, report) = match Log::open(vfs, dir, config, keys) {
        Ok(opened) => opened,
        // A flipped bit with valid blocks after it is not a torn tail: refused.
        Err(WalError::DamagedBlock { .. }) if damaged && damage & 0x40 == 0 => return,
        Err(error) => panic!("damage at the tail only cuts the log: {error}"),
    };
    let recovered: Vec<Record> = report.records.iter().map(|r| r.record.clone()).collect();
    if damaged {
        assert!(
            appended.starts_with(&recovered),
            "recovery returned a record never appended"
        );
        let mut whole = 0;
        let mut ends = vec![0];
        for batch in &batches {
            whole += batch.len();
            ends.push(whole);
        }
        assert!(ends.contains(&recovered.len()), "recovery split a batch");
    } else {
        assert_eq!(recovered, appended);
    }
    log.close().expect("close");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let control = input.byte();
    if control & 0x01 == 0 {
        raw(control, input);
    } else {
        records(control, input);
    }
});
