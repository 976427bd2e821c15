//! Helpers shared by the engine's integration tests (`model.rs`, `concurrency.rs`,
//! `large.rs`, `scans.rs`; the crash tests also use [`crash`]). Each test file is its own
//! crate and uses only some of these.
#![allow(dead_code)]

pub mod crash;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use strongbox_engine::io::MemVfs;
use strongbox_engine::page::PageSize;
use strongbox_engine::{Db, EncryptTables, Options, Table};
use strongbox_keyring::provider::MemoryKeyProvider;
use strongbox_keyring::Algorithm;

/// The key id the tests' encrypted tables name explicitly (besides the default, 1).
pub const TABLE_KEY_ID: u32 = 5;

/// A keyring with keys 1 (system and default), 2 (temporary space) and [`TABLE_KEY_ID`].
pub fn keyring() -> Arc<MemoryKeyProvider> {
    let keys = MemoryKeyProvider::new();
    for id in [1, 2, TABLE_KEY_ID] {
        keys.add_random(id, 1, 256).expect("256-bit keys are valid");
    }
    Arc::new(keys)
}

/// Options for an in-memory database with encryption on (keys from `keys`).
pub fn mem_options(
    vfs: &MemVfs,
    keys: &Arc<MemoryKeyProvider>,
    page_size: usize,
    frames: usize,
    algorithm: Algorithm,
) -> Options {
    Options::new()
        .vfs(Arc::new(vfs.clone()))
        .key_provider(Arc::clone(keys) as _)
        .encrypt_tables(EncryptTables::On)
        .encryption_algorithm(algorithm)
        .page_size(PageSize::of_buffer(page_size).expect("a valid page size"))
        .buffer_pool_size(frames * page_size)
}

/// Every entry of `table`, in key order, read with an autocommit scan.
pub fn contents(db: &Db, table: &Table) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.range(table, .., false)
        .expect("a scan starts")
        .collect::<Result<_, _>>()
        .expect("a full scan succeeds")
}

/// Asserts that `table` holds exactly `model`, comparing keys first so that a failure
/// names the first differing key rather than printing two huge vectors.
pub fn assert_contents(db: &Db, table: &Table, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let found = contents(db, table);
    let found_keys: Vec<&[u8]> = found.iter().map(|(k, _)| k.as_slice()).collect();
    let model_keys: Vec<&[u8]> = model.keys().map(Vec::as_slice).collect();
    if found_keys != model_keys {
        let first = found_keys
            .iter()
            .zip(&model_keys)
            .position(|(a, b)| a != b)
            .unwrap_or(found_keys.len().min(model_keys.len()));
        panic!(
            "table {:?}: {} keys, model has {}; first difference at position {first}: \
             found {:?}, model {:?}",
            table.name(),
            found_keys.len(),
            model_keys.len(),
            found_keys.get(first).map(|k| Short(k)),
            model_keys.get(first).map(|k| Short(k)),
        );
    }
    for ((key, value), expected) in found.iter().zip(model.values()) {
        assert!(
            value == expected,
            "table {:?}: key {:?} holds {} bytes, the model {} bytes",
            table.name(),
            Short(key),
            value.len(),
            expected.len()
        );
    }
}

/// The model's answer to a range scan, without `BTreeMap::range`'s panics on inverted
/// bounds (the engine must answer those with an empty scan).
pub fn model_range(
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    lower: &Bound<Vec<u8>>,
    upper: &Bound<Vec<u8>>,
    reverse: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<_> = model
        .iter()
        .filter(|(k, _)| in_range(k, lower, upper))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if reverse {
        out.reverse();
    }
    out
}

pub fn in_range(key: &[u8], lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    let above = match lower {
        Bound::Unbounded => true,
        Bound::Included(b) => key >= b.as_slice(),
        Bound::Excluded(b) => key > b.as_slice(),
    };
    let below = match upper {
        Bound::Unbounded => true,
        Bound::Included(b) => key <= b.as_slice(),
        Bound::Excluded(b) => key < b.as_slice(),
    };
    above && below
}

/// Borrows owned bounds in the form `Db::range` and `Transaction::range` accept.
pub fn as_range<'a>(
    lower: &'a Bound<Vec<u8>>,
    upper: &'a Bound<Vec<u8>>,
) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (borrow(lower), borrow(upper))
}

fn borrow(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(b) => Bound::Included(b.as_slice()),
        Bound::Excluded(b) => Bound::Excluded(b.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None` when there is
/// none (the prefix is all 0xFF bytes): the exclusive upper bound of a prefix scan.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A small deterministic generator (SplitMix64), so tests need no extra dependency and a
/// failing run repeats exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), close enough for tests.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// `len` bytes determined by `seed`: values are generated, not stored in the test case, so
/// that proptest cases stay small while a mixed-up value still shows.
pub fn value_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ (len as u64).rotate_left(32));
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Shows the start of a long key or value in assertion messages.
pub struct Short<'a>(pub &'a [u8]);

impl std::fmt::Debug for Short<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 24;
        let shown = &self.0[..self.0.len().min(SHOWN)];
        write!(f, "{:?}", String::from_utf8_lossy(shown))?;
        if self.0.len() > SHOWN {
            write!(f, "..({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

/// Every algorithm the engine encrypts pages with.
pub const ALGORITHMS: [Algorithm; 3] = Algorithm::ALL;
