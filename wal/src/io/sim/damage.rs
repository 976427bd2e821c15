//! [`Damage`]: what of the pending state survives a crash, and the seeded choices behind
//! it (rules 5 and 6 of the [module docs](super)).

use super::{FileOp, Inode};
use std::collections::BTreeSet;

/// What survives a crash of the pending (unsynced) state. Durable state always survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Nothing pending reached the disk: only durable state survives.
    LoseAll,
    /// Everything pending reached the disk, in issue order.
    KeepAll,
    /// Each pending data operation of each file independently reached the disk or not
    /// (probability ½); the kept ones apply in issue order. Any subset, not only a prefix:
    /// the kernel writes dirty pages back in any order, so a later write can be on disk
    /// while an earlier one is not. This is the realistic adversary.
    Random { seed: u64 },
    /// Per file, a random-length prefix of the pending data operations reached the disk (a
    /// file system that writes data back in order). Weaker than `Random`; useful to tell an
    /// ordering bug from a missing sync.
    Prefix { seed: u64 },
    /// Like `Random`, and at least one kept write that spans two or more `sector`-sized
    /// pieces is torn: a non-empty strict subset of its pieces persisted. Pieces are cut at
    /// absolute multiples of `sector` (512 or 4096), so a sector is never half written.
    /// A crash with `sector: 0` panics.
    Torn { seed: u64, sector: usize },
}

impl Damage {
    /// One of each variant, the seeded ones with `seed`: what a crash sweep tries per point.
    pub fn variants(seed: u64) -> [Damage; 6] {
        [
            Damage::LoseAll,
            Damage::KeepAll,
            Damage::Random { seed },
            Damage::Prefix { seed },
            Damage::Torn { seed, sector: 512 },
            Damage::Torn { seed, sector: 4096 },
        ]
    }

    /// The generator behind every seeded choice of one crash.
    pub(super) fn rng(self) -> Rng {
        Rng(self.seed())
    }

    /// Rule 5: how many of the `len` journaled directory changes survive, as a prefix.
    pub(super) fn journal_cut(self, len: usize, rng: &mut Rng) -> usize {
        match self {
            Damage::LoseAll => 0,
            Damage::KeepAll => len,
            Damage::Random { .. } | Damage::Prefix { .. } | Damage::Torn { .. } => {
                rng.below(len + 1)
            }
        }
    }

    fn seed(self) -> u64 {
        match self {
            Damage::LoseAll | Damage::KeepAll => 0,
            Damage::Random { seed } | Damage::Prefix { seed } | Damage::Torn { seed, .. } => seed,
        }
    }
}

/// A small seeded PRNG (SplitMix64): deterministic damage without a dependency.
pub(super) struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn coin(&mut self) -> bool {
        self.next() >> 63 == 1
    }

    /// Uniform in `0..n`; `n > 0`. The modulo bias is irrelevant at these sizes.
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("below n, which is a usize")
    }
}

/// The pieces of `[offset, offset + len)` cut at multiples of `sector`.
pub(super) fn sector_pieces(offset: usize, len: usize, sector: usize) -> Vec<(usize, usize)> {
    let end = offset + len;
    let mut pieces = Vec::new();
    let mut start = offset;
    while start < end {
        let piece_end = ((start / sector + 1) * sector).min(end);
        pieces.push((start, piece_end));
        start = piece_end;
    }
    pieces
}

/// Rule 6: the image of one file after a crash with `damage`.
pub(super) fn surviving_image(inode: &Inode, damage: Damage, rng: &mut Rng) -> Vec<u8> {
    let mut image = inode.durable.clone();
    let ops: Vec<&FileOp> = inode.pending.iter().map(|(_, op)| op).collect();
    let kept: Vec<&FileOp> = match damage {
        Damage::LoseAll => Vec::new(),
        Damage::KeepAll => ops,
        Damage::Prefix { .. } => {
            let cut = rng.below(ops.len() + 1);
            ops[..cut].to_vec()
        }
        Damage::Random { .. } | Damage::Torn { .. } => {
            ops.into_iter().filter(|_| rng.coin()).collect()
        }
    };
    let torn = match damage {
        Damage::Torn { sector, .. } => choose_torn(&kept, sector, rng),
        _ => vec![None; kept.len()],
    };
    for (op, pieces) in kept.iter().zip(torn) {
        match (op, pieces) {
            (FileOp::Write { data, offset }, Some(pieces)) => {
                for (start, end) in pieces {
                    FileOp::Write {
                        offset: start,
                        data: data[start - offset..end - offset].to_vec(),
                    }
                    .apply(&mut image);
                }
            }
            _ => op.apply(&mut image),
        }
    }
    image
}

/// For each kept op, `Some(pieces that persist)` if it is torn. Every write spanning two
/// or more sectors is torn with probability ½, and at least one is; a torn write keeps a
/// non-empty strict subset of its pieces.
fn choose_torn(kept: &[&FileOp], sector: usize, rng: &mut Rng) -> Vec<Option<Vec<(usize, usize)>>> {
    assert!(sector > 0, "sector size must be positive");
    let pieces: Vec<Vec<(usize, usize)>> = kept
        .iter()
        .map(|op| match op {
            FileOp::Write { offset, data } => sector_pieces(*offset, data.len(), sector),
            FileOp::SetLen(_) => Vec::new(),
        })
        .collect();
    let tearable: Vec<usize> = (0..kept.len()).filter(|&i| pieces[i].len() >= 2).collect();
    let mut tear: BTreeSet<usize> = tearable.iter().copied().filter(|_| rng.coin()).collect();
    if tear.is_empty() && !tearable.is_empty() {
        tear.insert(tearable[rng.below(tearable.len())]);
    }
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, pieces)| {
            if !tear.contains(&i) {
                return None;
            }
            let mut mask: Vec<bool> = pieces.iter().map(|_| rng.coin()).collect();
            if mask.iter().all(|&m| m == mask[0]) {
                let flip = rng.below(mask.len());
                mask[flip] = !mask[flip];
            }
            Some(
                pieces
                    .into_iter()
                    .zip(mask)
                    .filter(|&(_, m)| m)
                    .map(|(p, _)| p)
                    .collect(),
            )
        })
        .collect()
}
