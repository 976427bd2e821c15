//! The page table: which frame holds which page, split into shards so that lookups of
//! different pages rarely meet on one mutex.
//!
//! A page's shard is fixed by a hash of its id. Each shard's mutex also guards that shard's
//! hit and miss counters, so counting costs the hit path nothing extra.
//!
//! The maps hash with [`PageIdHasher`], a multiply-and-rotate hash, rather than the
//! standard SipHash: keys come from the engine, not from an attacker, and the lookup sits
//! on the hit path.

use super::frame::FrameId;
use crate::page::PageId;
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Number of shards; a power of two.
const SHARDS: usize = 64;

/// One shard's map and counters.
#[derive(Debug, Default)]
pub(super) struct Shard {
    /// Pages of this shard that are in the pool (rule 1: this is the truth).
    pub(super) map: HashMap<PageId, FrameId, BuildHasherDefault<PageIdHasher>>,
    /// Lookups that found their page here.
    pub(super) hits: u64,
    /// Lookups that did not, and loaded the page from disk.
    pub(super) misses: u64,
}

pub(super) struct PageTable {
    /// Each mutex guards one shard's map and counters.
    shards: Box<[Mutex<Shard>]>,
}

impl PageTable {
    /// A table for a pool of `frames` frames. Each shard reserves room for twice its fair
    /// share up front; the table can never hold more entries than there are frames.
    pub(super) fn new(frames: usize) -> PageTable {
        let per_shard = (frames / SHARDS + 1) * 2;
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::with_capacity_and_hasher(per_shard, Default::default()),
                    ..Shard::default()
                })
            })
            .collect();
        PageTable { shards }
    }

    /// Locks the shard that `id` belongs to.
    pub(super) fn lock(&self, id: PageId) -> MutexGuard<'_, Shard> {
        self.shards[shard_of(id)].lock()
    }

    /// All shards, for passes over the whole table (flush, discard, statistics).
    pub(super) fn shards(&self) -> &[Mutex<Shard>] {
        &self.shards
    }
}

/// The hasher of the shard maps: each word is mixed in by rotate, xor and an odd multiply
/// (the scheme of rustc's FxHasher), which is enough for ids the engine hands out.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PageIdHasher(u64);

impl Hasher for PageIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, word: u32) {
        self.write_u64(u64::from(word));
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A multiplicative (Fibonacci) hash of the id's 64 bits, top bits taken: consecutive page
/// numbers of one space spread over all shards.
fn shard_of(id: PageId) -> usize {
    let key = (u64::from(id.space_id) << 32) | u64::from(id.page_no);
    let bits = SHARDS.trailing_zeros();
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_pages_spread_over_all_shards() {
        let mut used = [0usize; SHARDS];
        for page_no in 0..(SHARDS as u32 * 16) {
            used[shard_of(PageId {
                space_id: 7,
                page_no,
            })] += 1;
        }
        assert!(used.iter().all(|&n| n > 0), "{used:?}");
        assert!(used.iter().all(|&n| n < 64), "{used:?}");
    }

    #[test]
    fn lookups_of_one_page_use_one_shard() {
        let table = PageTable::new(16);
        let id = PageId {
            space_id: 1,
            page_no: 2,
        };
        table.lock(id).map.insert(id, 3);
        assert_eq!(table.lock(id).map.get(&id), Some(&3));
        let holding: usize = table.shards().iter().map(|s| s.lock().map.len()).sum();
        assert_eq!(holding, 1);
    }
}
