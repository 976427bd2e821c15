//! Key choosers: which record number an operation touches.
//!
//! Every chooser draws from a [`WorkloadRng`] the caller owns, so a thread's sequence of
//! choices depends only on its seed (see [`thread_rng`]). The algorithms are YCSB's
//! (`site.ycsb.generator`), so results are comparable with published YCSB numbers:
//!
//! | chooser                | YCSB class                   | picks                                   |
//! |------------------------|------------------------------|-----------------------------------------|
//! | [`Uniform`]            | `UniformLongGenerator`       | any of `n` records, equally likely      |
//! | [`Zipfian`]            | `ZipfianGenerator`           | rank `r` with probability ∝ `1/(r+1)^θ` |
//! | [`ScrambledZipfian`]   | `ScrambledZipfianGenerator`  | zipfian popularity, hot keys scattered  |
//! | [`Latest`]             | `SkewedLatestGenerator`      | zipfian over recency: newest is hottest |
//!
//! # Worked example: how skewed is θ = 0.99?
//!
//! Over `n` items rank `r` (0-based) is drawn with probability `1/(r+1)^θ / ζ(n, θ)`, where
//! `ζ(n, θ) = Σ_{i=1..n} 1/i^θ`. For `n = 10 000`, `ζ ≈ 10.2` and `ζ(100) ≈ 5.3`, so the
//! hottest 1 % of the keys (ranks 0..100) receive about `5.3 / 10.2 ≈ 52 %` of the draws
//! and the hottest single key about 10 %. The plain zipfian puts those hot ranks on keys
//! 0, 1, 2, …, next to each other in the key space (and so on a few pages); the scrambled
//! variant hashes each rank with FNV-64 so the hot keys land anywhere.
//!
//! Not modelled: YCSB's `hotspot` and `exponential` distributions.

use rand::{RngExt, SeedableRng};

/// The generator every chooser draws from: xoshiro256++, fast and, unlike `SmallRng`,
/// the same algorithm on every platform and `rand` release, so a seed pins a run.
pub type WorkloadRng = rand::rngs::Xoshiro256PlusPlus;

/// YCSB's default zipfian constant.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// The item count YCSB's scrambled zipfian draws ranks from before hashing them.
pub const SCRAMBLED_ITEM_COUNT: u64 = 10_000_000_000;

/// `ζ(SCRAMBLED_ITEM_COUNT, 0.99)`, precomputed by YCSB (summing 10^10 terms at startup
/// would take a minute).
pub const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

/// The generator for `thread` of a run seeded with `seed`. Threads get unrelated streams;
/// the same `(seed, thread)` always gets the same stream.
pub fn thread_rng(seed: u64, thread: usize) -> WorkloadRng {
    // A golden-ratio step keeps neighbouring thread numbers far apart before
    // `seed_from_u64` mixes the value further.
    let mixed = seed ^ (thread as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    WorkloadRng::seed_from_u64(mixed)
}

/// YCSB's `Utils.fnvhash64`: FNV-1a over the eight little-endian bytes of `value`.
///
/// YCSB then takes `Math.abs` of the signed result; this returns the unsigned magnitude
/// instead, which differs only for the one value whose `abs` overflows in Java.
pub fn fnv_hash64(value: u64) -> u64 {
    const OFFSET_BASIS: u64 = 0xCBF2_9CE4_8422_2325;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET_BASIS;
    for byte in value.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    (hash as i64).unsigned_abs()
}

/// `ζ(n, θ) = Σ_{i=1..n} 1/i^θ`, continued from `ζ(from, θ) = partial`.
fn zeta_from(from: u64, n: u64, theta: f64, partial: f64) -> f64 {
    (from..n).fold(partial, |sum, i| sum + 1.0 / ((i + 1) as f64).powf(theta))
}

/// `ζ(n, θ)`.
pub fn zeta(n: u64, theta: f64) -> f64 {
    zeta_from(0, n, theta, 0.0)
}

/// Any of `n` records, equally likely.
#[derive(Clone, Debug)]
pub struct Uniform {
    n: u64,
}

impl Uniform {
    /// Over `0..n`; `n` must be at least 1.
    pub fn new(n: u64) -> Uniform {
        assert!(n > 0, "a uniform chooser needs at least one item");
        Uniform { n }
    }

    /// A record number in `0..n`.
    pub fn sample(&self, rng: &mut WorkloadRng) -> u64 {
        rng.random_range(0..self.n)
    }
}

/// YCSB's `ZipfianGenerator` (Gray et al., "Quickly generating billion-record synthetic
/// databases", SIGMOD 1994): rank 0 is the most popular, then 1, and so on.
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    /// `1 / (1 - θ)`.
    alpha: f64,
    /// `ζ(2, θ)`.
    zeta2: f64,
    /// `ζ(items, θ)`.
    zetan: f64,
    /// `(1 - (2/n)^(1-θ)) / (1 - ζ(2)/ζ(n))`.
    eta: f64,
}

impl Zipfian {
    /// Over ranks `0..items` with exponent `theta` (0 < θ < 1); computes `ζ(items, θ)`,
    /// which takes time linear in `items`.
    pub fn new(items: u64, theta: f64) -> Zipfian {
        Zipfian::with_zetan(items, theta, zeta(items, theta))
    }

    /// As [`Zipfian::new`] with `ζ(items, θ)` already known.
    pub fn with_zetan(items: u64, theta: f64, zetan: f64) -> Zipfian {
        assert!(items > 0, "a zipfian chooser needs at least one item");
        assert!(theta > 0.0 && theta < 1.0, "θ must lie in (0, 1)");
        let zeta2 = zeta(2, theta);
        let mut zipfian = Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta2,
            zetan,
            eta: 0.0,
        };
        zipfian.eta = zipfian.eta_for(items);
        zipfian
    }

    fn eta_for(&self, items: u64) -> f64 {
        (1.0 - (2.0 / items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2 / self.zetan)
    }

    /// The number of ranks.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Widens (or narrows) the rank space to `items`. Growing continues the ζ sum from the
    /// old count, so a chooser that follows inserts one at a time stays cheap, as in YCSB.
    pub fn resize(&mut self, items: u64) {
        assert!(items > 0, "a zipfian chooser needs at least one item");
        if items == self.items {
            return;
        }
        self.zetan = if items > self.items {
            zeta_from(self.items, items, self.theta, self.zetan)
        } else {
            zeta(items, self.theta)
        };
        self.items = items;
        self.eta = self.eta_for(items);
    }

    /// A rank in `0..items`.
    pub fn sample(&self, rng: &mut WorkloadRng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let rank = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        // Rounding can land one past the end when u is close to 1.
        rank.min(self.items - 1)
    }
}

/// YCSB's `ScrambledZipfianGenerator`: a zipfian rank over 10^10 items, hashed with
/// [`fnv_hash64`] and reduced modulo the record count. The popularity profile stays
/// skewed, but the hot records are spread over the key space instead of clustered at
/// its start. Because the long tail of 10^10 ranks folds onto every record, the skew is
/// milder than [`Zipfian`] over the same count (the hottest 1 % of 10 000 records get
/// about a fifth of the draws rather than a half).
#[derive(Clone, Debug)]
pub struct ScrambledZipfian {
    items: u64,
    ranks: Zipfian,
}

impl ScrambledZipfian {
    /// Over record numbers `0..items`, θ = 0.99 as in YCSB.
    pub fn new(items: u64) -> ScrambledZipfian {
        assert!(items > 0, "a zipfian chooser needs at least one item");
        ScrambledZipfian {
            items,
            ranks: Zipfian::with_zetan(SCRAMBLED_ITEM_COUNT, ZIPFIAN_CONSTANT, SCRAMBLED_ZETAN),
        }
    }

    /// A record number in `0..items`.
    pub fn sample(&self, rng: &mut WorkloadRng) -> u64 {
        fnv_hash64(self.ranks.sample(rng)) % self.items
    }
}

/// YCSB's `SkewedLatestGenerator`: zipfian over recency. Of `count` records inserted so far
/// (numbered `0..count` in insert order), the newest is the most popular, then the one
/// before it, and so on.
#[derive(Clone, Debug)]
pub struct Latest {
    recency: Zipfian,
}

impl Latest {
    /// For a table that holds records `0..count` now.
    pub fn new(count: u64) -> Latest {
        Latest {
            recency: Zipfian::new(count, ZIPFIAN_CONSTANT),
        }
    }

    /// A record number in `0..count`, favouring the largest; `count` is the number
    /// inserted so far and may have grown since the last call.
    pub fn sample(&mut self, rng: &mut WorkloadRng, count: u64) -> u64 {
        self.recency.resize(count);
        count - 1 - self.recency.sample(rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: u64 = 10_000;
    const DRAWS: usize = 200_000;

    fn histogram(draws: impl Iterator<Item = u64>, n: u64) -> Vec<u64> {
        let mut counts = vec![0u64; n as usize];
        for key in draws {
            counts[key as usize] += 1;
        }
        counts
    }

    /// The share of all draws that went to the `top` most frequently drawn keys.
    fn top_share(counts: &[u64], top: usize) -> f64 {
        let mut sorted = counts.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let total: u64 = counts.iter().sum();
        sorted[..top].iter().sum::<u64>() as f64 / total as f64
    }

    #[test]
    fn fnv_hash64_matches_ycsb() {
        // FNV-1a of eight zero bytes, computed by hand from the definition.
        let mut expected: u64 = 0xCBF2_9CE4_8422_2325;
        for _ in 0..8 {
            expected = expected.wrapping_mul(1_099_511_628_211);
        }
        assert_eq!(fnv_hash64(0), (expected as i64).unsigned_abs());
        assert_ne!(fnv_hash64(1), fnv_hash64(2));
    }

    #[test]
    fn zeta_of_small_counts() {
        assert!((zeta(1, 0.99) - 1.0).abs() < 1e-12);
        assert!((zeta(2, 0.99) - (1.0 + 0.5f64.powf(0.99))).abs() < 1e-12);
        let mut grown = Zipfian::new(10, 0.99);
        grown.resize(1_000);
        assert!((grown.zetan - zeta(1_000, 0.99)).abs() < 1e-9);
        grown.resize(100);
        assert!((grown.zetan - zeta(100, 0.99)).abs() < 1e-9);
    }

    #[test]
    fn uniform_covers_every_bucket_evenly() {
        let mut rng = thread_rng(7, 0);
        let chooser = Uniform::new(100);
        let counts = histogram((0..DRAWS).map(|_| chooser.sample(&mut rng)), 100);
        // Each bucket expects 2 000 draws, standard deviation ≈ 44.5: allow ±6σ.
        let expected = DRAWS as f64 / 100.0;
        for (key, &count) in counts.iter().enumerate() {
            assert!(
                (count as f64 - expected).abs() < 270.0,
                "bucket {key} got {count}, expected about {expected}"
            );
        }
        // Pearson's χ² with 99 degrees of freedom: mean 99, P(χ² > 160) < 1e-4.
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 160.0, "χ² = {chi2}");
    }

    #[test]
    fn zipfian_top_one_percent_matches_theory() {
        let mut rng = thread_rng(11, 0);
        let chooser = Zipfian::new(N, ZIPFIAN_CONSTANT);
        let counts = histogram((0..DRAWS).map(|_| chooser.sample(&mut rng)), N);
        // The hot ranks are the first ones.
        let share = counts[..100].iter().sum::<u64>() as f64 / DRAWS as f64;
        let theory = zeta(100, ZIPFIAN_CONSTANT) / zeta(N, ZIPFIAN_CONSTANT);
        assert!(theory > 0.5, "theory {theory}");
        // Gray's method approximates the tail, not the head: allow a few percent.
        assert!(
            (share - theory).abs() < 0.03,
            "top 1% got {share:.3}, theory {theory:.3}"
        );
        // Rank 0 alone: 1/ζ(n).
        let first = counts[0] as f64 / DRAWS as f64;
        let theory_first = 1.0 / zeta(N, ZIPFIAN_CONSTANT);
        assert!((first - theory_first).abs() < 0.01, "rank 0 got {first:.3}");
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[1000]);
    }

    #[test]
    fn scrambled_zipfian_is_skewed_but_scattered() {
        let mut rng = thread_rng(13, 0);
        let chooser = ScrambledZipfian::new(N);
        let counts = histogram((0..DRAWS).map(|_| chooser.sample(&mut rng)), N);
        // Ranks 0..100 of 10^10: ζ(100)/ζ(10^10) ≈ 5.3/26.5 ≈ 20 %, plus the folded tail.
        let share = top_share(&counts, 100);
        let head = zeta(100, ZIPFIAN_CONSTANT) / SCRAMBLED_ZETAN;
        assert!(share > head && share < head + 0.1, "top 1% got {share:.3}");
        // Uniform would give the top 1 % barely more than 1 %.
        assert!(share > 0.15);
        // The hottest record is rank 0's hash, not record 0.
        let hottest = (0..N as usize).max_by_key(|&k| counts[k]).unwrap() as u64;
        assert_eq!(hottest, fnv_hash64(0) % N);
        // The hot records are spread: the 100 hottest span most of the key space.
        let mut order: Vec<usize> = (0..N as usize).collect();
        order.sort_unstable_by(|&a, &b| counts[b].cmp(&counts[a]));
        let (lo, hi) = order[..100]
            .iter()
            .fold((usize::MAX, 0), |(lo, hi), &k| (lo.min(k), hi.max(k)));
        assert!(hi - lo > N as usize / 2, "hot keys in {lo}..={hi}");
    }

    #[test]
    fn latest_favours_recent_inserts() {
        let mut rng = thread_rng(17, 0);
        let mut chooser = Latest::new(N);
        let counts = histogram((0..DRAWS).map(|_| chooser.sample(&mut rng, N)), N);
        let newest = counts[(N - 100) as usize..].iter().sum::<u64>() as f64 / DRAWS as f64;
        assert!(newest > 0.5, "newest 1% got {newest:.3}");
        assert!(counts[(N - 1) as usize] > counts[(N - 2) as usize]);
        // After more inserts the hot spot follows the newest record.
        let grown = N + 500;
        let mut hits_new = 0;
        for _ in 0..10_000 {
            let key = chooser.sample(&mut rng, grown);
            assert!(key < grown);
            if key >= N {
                hits_new += 1;
            }
        }
        assert!(
            hits_new > 5_000,
            "only {hits_new} of 10 000 hit the 500 new records"
        );
    }

    #[test]
    fn choosers_are_deterministic_per_seed_and_thread() {
        let draw = |seed, thread| {
            let mut rng = thread_rng(seed, thread);
            let zipf = ScrambledZipfian::new(N);
            (0..100).map(|_| zipf.sample(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1, 0), draw(1, 0));
        assert_ne!(draw(1, 0), draw(1, 1));
        assert_ne!(draw(1, 0), draw(2, 0));
    }

    #[test]
    fn single_item_choosers_return_zero() {
        let mut rng = thread_rng(3, 0);
        assert_eq!(Zipfian::new(1, 0.99).sample(&mut rng), 0);
        assert_eq!(ScrambledZipfian::new(1).sample(&mut rng), 0);
        assert_eq!(Latest::new(1).sample(&mut rng, 1), 0);
        assert_eq!(Uniform::new(1).sample(&mut rng), 0);
    }
}
