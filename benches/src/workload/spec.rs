//! Workload definitions and the per-thread operation generator.
//!
//! A [`Workload`] names a mix of operations and how their keys are chosen; a [`Config`]
//! sizes it (records, value size, seed, threads); an [`OpGenerator`] turns the pair into a
//! deterministic stream of [`Op`]s for one thread.
//!
//! | workload          | mix                                          | keys                    |
//! |-------------------|----------------------------------------------|-------------------------|
//! | `ycsb-a`          | 50 % read, 50 % update                       | scrambled zipfian       |
//! | `ycsb-b`          | 95 % read, 5 % update                        | scrambled zipfian       |
//! | `ycsb-c`          | 100 % read                                   | scrambled zipfian       |
//! | `ycsb-d`          | 95 % read, 5 % insert                        | latest                  |
//! | `ycsb-e`          | 95 % scan (1..=100, uniform), 5 % insert     | scrambled zipfian       |
//! | `ycsb-f`          | 50 % read, 50 % read-modify-write            | scrambled zipfian       |
//! | `oltp-read-only`  | transactions of 10 reads + 4 scans of 100    | uniform                 |
//! | `fill-seq`        | 100 % insert, keys in order                  | sequential              |
//! | `fill-random`     | 100 % insert                                 | uniform                 |
//! | `read-random`     | 100 % read                                   | uniform                 |
//! | `scan`            | 100 % scan of `scan_length`                  | uniform start           |
//!
//! The YCSB rows follow `workloads/workload[a-f]` of YCSB's core package. `oltp-read-only`
//! follows sysbench's transaction shape (its four range queries are plain scans here);
//! the `fill-*`, `read-random` and `scan` rows follow LevelDB's `db_bench`.
//!
//! # Records and keys
//!
//! The load phase inserts records `0..record_count`; thread `t` of `T` loads one
//! contiguous slice ([`load_range`]). Record `n`'s key is `user` followed by `n`
//! zero-padded to [`Config::key_digits`] digits ([`KeyOrder::Ordered`]), or by
//! `fnv_hash64(n)` zero-padded to 20 digits ([`KeyOrder::Hashed`], YCSB's default
//! `insertorder`).
//!
//! Inserts during the run phase take new record numbers interleaved across threads:
//! thread `t` inserts `record_count + t`, `record_count + t + T`, … . Each thread bounds
//! its reads by what it can count without talking to the others,
//! `record_count + T × (its own inserts)`, so the stream stays deterministic; a read can
//! then name a record a slower thread has not inserted yet, which the target reports as
//! a miss. (YCSB instead shares an acknowledged counter and gives up determinism.)

use std::ops::Range;

use rand::RngExt;

use super::distribution::{fnv_hash64, thread_rng, Latest, ScrambledZipfian, Uniform, WorkloadRng};

/// One operation against a [`Target`](super::target::Target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read one record.
    Read(Vec<u8>),
    /// Overwrite an existing record.
    Update(Vec<u8>, Vec<u8>),
    /// Write a new record.
    Insert(Vec<u8>, Vec<u8>),
    /// Read up to `len` records in key order, starting at the first key `>= start`.
    Scan(Vec<u8>, usize),
    /// Read a record and write it back with a new value, atomically.
    ReadModifyWrite(Vec<u8>, Vec<u8>),
    /// Run these operations as one transaction.
    Txn(Vec<Op>),
}

/// The kinds of [`Op`], for mixes and per-kind statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
    Txn,
}

impl OpKind {
    /// Every kind, in the order of [`Mix`]'s fields.
    pub const ALL: [OpKind; 6] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Insert,
        OpKind::Scan,
        OpKind::ReadModifyWrite,
        OpKind::Txn,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Scan => "scan",
            OpKind::ReadModifyWrite => "rmw",
            OpKind::Txn => "txn",
        }
    }
}

impl Op {
    /// This operation's kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Read(_) => OpKind::Read,
            Op::Update(..) => OpKind::Update,
            Op::Insert(..) => OpKind::Insert,
            Op::Scan(..) => OpKind::Scan,
            Op::ReadModifyWrite(..) => OpKind::ReadModifyWrite,
            Op::Txn(_) => OpKind::Txn,
        }
    }
}

/// The proportions of each operation kind; they must sum to 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mix {
    pub read: f64,
    pub update: f64,
    pub insert: f64,
    pub scan: f64,
    pub read_modify_write: f64,
    pub txn: f64,
}

impl Mix {
    const NONE: Mix = Mix {
        read: 0.0,
        update: 0.0,
        insert: 0.0,
        scan: 0.0,
        read_modify_write: 0.0,
        txn: 0.0,
    };

    /// The proportion of `kind`.
    pub fn of(&self, kind: OpKind) -> f64 {
        match kind {
            OpKind::Read => self.read,
            OpKind::Update => self.update,
            OpKind::Insert => self.insert,
            OpKind::Scan => self.scan,
            OpKind::ReadModifyWrite => self.read_modify_write,
            OpKind::Txn => self.txn,
        }
    }

    /// The kind whose share of `[0, 1)` contains `u` (YCSB's `DiscreteGenerator`).
    fn pick(&self, u: f64) -> OpKind {
        let mut acc = 0.0;
        for kind in OpKind::ALL {
            acc += self.of(kind);
            if u < acc {
                return kind;
            }
        }
        // Only reachable through rounding when u is just below 1.
        OpKind::ALL
            .into_iter()
            .rev()
            .find(|&k| self.of(k) > 0.0)
            .expect("a mix with no operations")
    }
}

/// How the records an operation touches are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyDistribution {
    Uniform,
    /// YCSB's `zipfian` request distribution: scrambled zipfian, θ = 0.99.
    Zipfian,
    /// Zipfian over recency: recently inserted records are hottest.
    Latest,
    /// Records in order (inserts of `fill-seq`).
    Sequential,
}

impl KeyDistribution {
    /// The distributions `--distribution` accepts.
    pub const CHOOSABLE: [KeyDistribution; 3] = [
        KeyDistribution::Uniform,
        KeyDistribution::Zipfian,
        KeyDistribution::Latest,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            KeyDistribution::Uniform => "uniform",
            KeyDistribution::Zipfian => "zipfian",
            KeyDistribution::Latest => "latest",
            KeyDistribution::Sequential => "sequential",
        }
    }

    /// The choosable distribution called `name`.
    pub fn from_name(name: &str) -> Option<KeyDistribution> {
        KeyDistribution::CHOOSABLE
            .into_iter()
            .find(|d| d.name() == name)
    }
}

/// A named workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    YcsbA,
    YcsbB,
    YcsbC,
    YcsbD,
    YcsbE,
    YcsbF,
    OltpReadOnly,
    FillSeq,
    FillRandom,
    ReadRandom,
    Scan,
}

/// Point reads in one `oltp-read-only` transaction.
pub const OLTP_POINT_READS: usize = 10;
/// Range reads in one `oltp-read-only` transaction.
pub const OLTP_RANGE_READS: usize = 4;
/// Records per `oltp-read-only` range read.
pub const OLTP_RANGE_LEN: usize = 100;
/// YCSB's `maxscanlength`.
pub const YCSB_MAX_SCAN_LENGTH: usize = 100;

impl Workload {
    /// Every workload, in the order of the module table.
    pub const ALL: [Workload; 11] = [
        Workload::YcsbA,
        Workload::YcsbB,
        Workload::YcsbC,
        Workload::YcsbD,
        Workload::YcsbE,
        Workload::YcsbF,
        Workload::OltpReadOnly,
        Workload::FillSeq,
        Workload::FillRandom,
        Workload::ReadRandom,
        Workload::Scan,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::YcsbC => "ycsb-c",
            Workload::YcsbD => "ycsb-d",
            Workload::YcsbE => "ycsb-e",
            Workload::YcsbF => "ycsb-f",
            Workload::OltpReadOnly => "oltp-read-only",
            Workload::FillSeq => "fill-seq",
            Workload::FillRandom => "fill-random",
            Workload::ReadRandom => "read-random",
            Workload::Scan => "scan",
        }
    }

    /// The workload called `name`.
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// The operation mix.
    pub fn mix(self) -> Mix {
        let m = Mix::NONE;
        match self {
            Workload::YcsbA => Mix {
                read: 0.5,
                update: 0.5,
                ..m
            },
            Workload::YcsbB => Mix {
                read: 0.95,
                update: 0.05,
                ..m
            },
            Workload::YcsbC | Workload::ReadRandom => Mix { read: 1.0, ..m },
            Workload::YcsbD => Mix {
                read: 0.95,
                insert: 0.05,
                ..m
            },
            Workload::YcsbE => Mix {
                scan: 0.95,
                insert: 0.05,
                ..m
            },
            Workload::YcsbF => Mix {
                read: 0.5,
                read_modify_write: 0.5,
                ..m
            },
            Workload::OltpReadOnly => Mix { txn: 1.0, ..m },
            Workload::FillSeq | Workload::FillRandom => Mix { insert: 1.0, ..m },
            Workload::Scan => Mix { scan: 1.0, ..m },
        }
    }

    /// How reads, updates and scan starts choose their records.
    pub fn distribution(self) -> KeyDistribution {
        match self {
            Workload::YcsbA
            | Workload::YcsbB
            | Workload::YcsbC
            | Workload::YcsbE
            | Workload::YcsbF => KeyDistribution::Zipfian,
            Workload::YcsbD => KeyDistribution::Latest,
            Workload::FillSeq => KeyDistribution::Sequential,
            Workload::OltpReadOnly
            | Workload::FillRandom
            | Workload::ReadRandom
            | Workload::Scan => KeyDistribution::Uniform,
        }
    }

    /// Whether the workload reads ranges (a target without ordered scans cannot run it).
    pub fn scans(self) -> bool {
        self.mix().scan > 0.0 || self == Workload::OltpReadOnly
    }

    /// Whether the run phase expects the load phase to have inserted the records first.
    /// The `fill-*` workloads are their own load.
    pub fn needs_load(self) -> bool {
        !matches!(self, Workload::FillSeq | Workload::FillRandom)
    }
}

/// How a record number becomes a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrder {
    /// `user` + the number, zero-padded: key order is record order, so scans and
    /// `fill-seq` walk the tree in order.
    Ordered,
    /// `user` + `fnv_hash64(number)`, zero-padded to 20 digits: YCSB's default, which
    /// scatters consecutive inserts over the tree.
    Hashed,
}

/// The sizes and seed of a run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Records inserted by the load phase (for `fill-*`: the key space the run writes).
    pub record_count: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Digits the record number is zero-padded to in [`KeyOrder::Ordered`] keys.
    pub key_digits: usize,
    pub key_order: KeyOrder,
    /// Records per operation of the `scan` workload.
    pub scan_length: usize,
    /// Operations the run phase expects to issue over all threads; sizes the key space
    /// the scrambled zipfian chooser draws from when the workload inserts (as YCSB's
    /// `operationcount` does).
    pub operation_count: u64,
    pub seed: u64,
    pub threads: usize,
    /// Overrides the workload's own [`Workload::distribution`] for reads, updates and
    /// scan starts (`--distribution`); inserts keep their workload's rule.
    pub distribution: Option<KeyDistribution>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            record_count: 100_000,
            value_size: 100,
            key_digits: 12,
            key_order: KeyOrder::Ordered,
            scan_length: 100,
            operation_count: 1_000_000,
            seed: 0x5742_0b0c,
            threads: 1,
            distribution: None,
        }
    }
}

impl Config {
    /// The key of record `n`.
    pub fn key(&self, n: u64) -> Vec<u8> {
        match self.key_order {
            KeyOrder::Ordered => format!("user{n:0width$}", width = self.key_digits),
            KeyOrder::Hashed => format!("user{:020}", fnv_hash64(n)),
        }
        .into_bytes()
    }
}

/// The records thread `thread` of `threads` inserts in the load phase: a contiguous
/// slice, the first `record_count % threads` slices one longer.
pub fn load_range(record_count: u64, thread: usize, threads: usize) -> Range<u64> {
    assert!(thread < threads, "thread {thread} of {threads}");
    let (t, n) = (thread as u64, threads as u64);
    let (base, extra) = (record_count / n, record_count % n);
    let start = t * base + t.min(extra);
    start..start + base + u64::from(t < extra)
}

/// A random value of `size` bytes of printable ASCII, as YCSB writes.
pub fn random_value(rng: &mut WorkloadRng, size: usize) -> Vec<u8> {
    let mut value = vec![0u8; size];
    rng.fill(&mut value[..]);
    for byte in &mut value {
        // 64 characters from '0' upward: cheap and printable.
        *byte = b'0' + (*byte & 0x3F);
    }
    value
}

/// The record chooser of one generator.
#[derive(Debug)]
enum Chooser {
    Uniform,
    Zipfian(ScrambledZipfian),
    Latest(Box<Latest>),
    Sequential,
}

/// The operation stream of one thread: deterministic for a given `(Config, Workload,
/// thread)`.
#[derive(Debug)]
pub struct OpGenerator {
    config: Config,
    workload: Workload,
    mix: Mix,
    thread: usize,
    rng: WorkloadRng,
    chooser: Chooser,
    /// Records this thread has inserted in the run phase.
    inserted: u64,
    /// `fill-seq`: this thread's slice and the next record in it.
    sequence: Range<u64>,
    next_sequential: u64,
}

impl OpGenerator {
    /// The generator of thread `thread` of `config.threads`.
    pub fn new(config: &Config, workload: Workload, thread: usize) -> OpGenerator {
        assert!(config.record_count > 0, "record_count must be at least 1");
        let mix = workload.mix();
        let distribution = config
            .distribution
            .unwrap_or_else(|| workload.distribution());
        let chooser = match distribution {
            KeyDistribution::Uniform => Chooser::Uniform,
            KeyDistribution::Zipfian => {
                // YCSB sizes the space for twice the expected inserts and rejects records
                // not inserted yet.
                let expected_new = (config.operation_count as f64 * mix.insert * 2.0) as u64;
                Chooser::Zipfian(ScrambledZipfian::new(config.record_count + expected_new))
            }
            KeyDistribution::Latest => Chooser::Latest(Box::new(Latest::new(config.record_count))),
            KeyDistribution::Sequential => Chooser::Sequential,
        };
        let sequence = load_range(config.record_count, thread, config.threads);
        OpGenerator {
            config: config.clone(),
            workload,
            mix,
            thread,
            rng: thread_rng(config.seed, thread),
            chooser,
            inserted: 0,
            next_sequential: sequence.start,
            sequence,
        }
    }

    /// The workload this generator follows.
    pub fn workload(&self) -> Workload {
        self.workload
    }

    /// Records that exist as far as this thread can tell (see the module docs).
    fn known_records(&self) -> u64 {
        self.config.record_count + self.inserted * self.config.threads as u64
    }

    /// The record an existing-key operation touches.
    fn existing_record(&mut self) -> u64 {
        let known = self.known_records();
        match &mut self.chooser {
            Chooser::Uniform | Chooser::Sequential => Uniform::new(known).sample(&mut self.rng),
            Chooser::Zipfian(zipf) => loop {
                let n = zipf.sample(&mut self.rng);
                if n < known {
                    break n;
                }
            },
            Chooser::Latest(latest) => latest.sample(&mut self.rng, known),
        }
    }

    /// The record an insert writes.
    fn new_record(&mut self) -> u64 {
        match self.workload {
            Workload::FillRandom => Uniform::new(self.config.record_count).sample(&mut self.rng),
            Workload::FillSeq => {
                // Each thread fills its own slice in order, then starts it again.
                if self.next_sequential >= self.sequence.end {
                    self.next_sequential = self.sequence.start;
                }
                let n = self.next_sequential;
                self.next_sequential += 1;
                n
            }
            _ => {
                let n = self.config.record_count
                    + self.thread as u64
                    + self.inserted * self.config.threads as u64;
                self.inserted += 1;
                n
            }
        }
    }

    fn value(&mut self) -> Vec<u8> {
        random_value(&mut self.rng, self.config.value_size)
    }

    fn existing_key(&mut self) -> Vec<u8> {
        let n = self.existing_record();
        self.config.key(n)
    }

    /// The next operation.
    pub fn next_op(&mut self) -> Op {
        let kind = self.mix.pick(self.rng.random());
        match kind {
            OpKind::Read => Op::Read(self.existing_key()),
            OpKind::Update => {
                let key = self.existing_key();
                Op::Update(key, self.value())
            }
            OpKind::Insert => {
                let n = self.new_record();
                Op::Insert(self.config.key(n), self.value())
            }
            OpKind::Scan => {
                let len = match self.workload {
                    Workload::Scan => self.config.scan_length,
                    _ => self.rng.random_range(1..=YCSB_MAX_SCAN_LENGTH),
                };
                Op::Scan(self.existing_key(), len)
            }
            OpKind::ReadModifyWrite => {
                let key = self.existing_key();
                Op::ReadModifyWrite(key, self.value())
            }
            OpKind::Txn => {
                let mut ops = Vec::with_capacity(OLTP_POINT_READS + OLTP_RANGE_READS);
                for _ in 0..OLTP_POINT_READS {
                    ops.push(Op::Read(self.existing_key()));
                }
                for _ in 0..OLTP_RANGE_READS {
                    ops.push(Op::Scan(self.existing_key(), OLTP_RANGE_LEN));
                }
                Op::Txn(ops)
            }
        }
    }
}

impl Iterator for OpGenerator {
    type Item = Op;

    /// Never ends: the runner decides how many operations to take.
    fn next(&mut self) -> Option<Op> {
        Some(self.next_op())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    const OPS: usize = 100_000;

    fn small_config() -> Config {
        Config {
            record_count: 10_000,
            value_size: 16,
            operation_count: OPS as u64,
            ..Config::default()
        }
    }

    fn counts(workload: Workload, config: &Config) -> BTreeMap<OpKind, usize> {
        let mut counts = BTreeMap::new();
        for op in OpGenerator::new(config, workload, 0).take(OPS) {
            *counts.entry(op.kind()).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn mixes_sum_to_one() {
        for workload in Workload::ALL {
            let mix = workload.mix();
            let sum: f64 = OpKind::ALL.into_iter().map(|k| mix.of(k)).sum();
            assert!((sum - 1.0).abs() < 1e-12, "{}", workload.name());
            assert_eq!(Workload::from_name(workload.name()), Some(workload));
        }
        assert_eq!(Workload::from_name("ycsb-g"), None);
    }

    #[test]
    fn mix_proportions_within_two_percent() {
        let config = small_config();
        for workload in Workload::ALL {
            let mix = workload.mix();
            let counts = counts(workload, &config);
            for kind in OpKind::ALL {
                let seen = *counts.get(&kind).unwrap_or(&0) as f64 / OPS as f64;
                assert!(
                    (seen - mix.of(kind)).abs() < 0.02,
                    "{}: {} at {seen:.4}, expected {}",
                    workload.name(),
                    kind.name(),
                    mix.of(kind)
                );
            }
        }
    }

    #[test]
    fn same_seed_same_ops() {
        let config = small_config();
        for workload in Workload::ALL {
            let a: Vec<Op> = OpGenerator::new(&config, workload, 0).take(500).collect();
            let b: Vec<Op> = OpGenerator::new(&config, workload, 0).take(500).collect();
            assert_eq!(a, b, "{}", workload.name());
            let other = Config {
                seed: config.seed + 1,
                ..config.clone()
            };
            let c: Vec<Op> = OpGenerator::new(&other, workload, 0).take(500).collect();
            if workload != Workload::FillSeq {
                assert_ne!(a, c, "{}: seed ignored", workload.name());
            }
        }
    }

    #[test]
    fn threads_get_different_streams() {
        let config = Config {
            threads: 2,
            ..small_config()
        };
        let a: Vec<Op> = OpGenerator::new(&config, Workload::YcsbA, 0)
            .take(100)
            .collect();
        let b: Vec<Op> = OpGenerator::new(&config, Workload::YcsbA, 1)
            .take(100)
            .collect();
        assert_ne!(a, b);
    }

    #[test]
    fn distribution_override_changes_the_skew() {
        // read-random is uniform by default; with `--distribution zipfian` its hottest key
        // takes far more than a uniform share (1 / 10,000 records).
        let hottest_share = |config: &Config| {
            let mut hits: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
            for op in OpGenerator::new(config, Workload::ReadRandom, 0).take(OPS) {
                if let Op::Read(key) = op {
                    *hits.entry(key).or_insert(0) += 1;
                }
            }
            *hits.values().max().unwrap() as f64 / OPS as f64
        };
        let uniform = small_config();
        assert!(hottest_share(&uniform) < 0.001);
        let zipfian = Config {
            distribution: Some(KeyDistribution::Zipfian),
            ..small_config()
        };
        assert!(hottest_share(&zipfian) > 0.01);
        for d in KeyDistribution::CHOOSABLE {
            assert_eq!(KeyDistribution::from_name(d.name()), Some(d));
        }
        assert_eq!(KeyDistribution::from_name("sequential"), None);
    }

    #[test]
    fn keys_are_ycsb_style() {
        let config = small_config();
        assert_eq!(config.key(42), b"user000000000042".to_vec());
        let hashed = Config {
            key_order: KeyOrder::Hashed,
            ..config
        };
        let key = String::from_utf8(hashed.key(42)).unwrap();
        assert_eq!(key, format!("user{:020}", fnv_hash64(42)));
        assert_eq!(key.len(), 24);
    }

    #[test]
    fn values_have_the_configured_size_and_are_printable() {
        let config = small_config();
        for op in OpGenerator::new(&config, Workload::YcsbA, 0).take(1_000) {
            if let Op::Update(_, value) = op {
                assert_eq!(value.len(), 16);
                assert!(value.iter().all(|b| b.is_ascii_graphic()));
            }
        }
    }

    #[test]
    fn load_ranges_partition_the_records() {
        for (records, threads) in [(10, 3), (3, 4), (1_000, 1), (7, 7)] {
            let mut next = 0;
            for t in 0..threads {
                let range = load_range(records, t, threads);
                assert_eq!(range.start, next);
                assert!(range.end - range.start <= records / threads as u64 + 1);
                next = range.end;
            }
            assert_eq!(next, records);
        }
    }

    #[test]
    fn inserts_interleave_across_threads_without_collisions() {
        let config = Config {
            threads: 3,
            ..small_config()
        };
        let mut seen = HashSet::new();
        for thread in 0..3 {
            for op in OpGenerator::new(&config, Workload::YcsbD, thread).take(5_000) {
                if let Op::Insert(key, _) = op {
                    let n: u64 = std::str::from_utf8(&key[4..]).unwrap().parse().unwrap();
                    assert!(n >= config.record_count);
                    assert_eq!((n - config.record_count) % 3, thread as u64);
                    assert!(seen.insert(n), "record {n} inserted twice");
                }
            }
        }
        assert!(!seen.is_empty());
    }

    #[test]
    fn reads_stay_within_known_records() {
        let config = small_config();
        for workload in [Workload::YcsbA, Workload::YcsbD, Workload::YcsbE] {
            let mut generator = OpGenerator::new(&config, workload, 0);
            for _ in 0..20_000 {
                let bound = generator.known_records();
                let op = generator.next_op();
                if let Op::Read(key) | Op::Update(key, _) | Op::Scan(key, _) = &op {
                    let n: u64 = std::str::from_utf8(&key[4..]).unwrap().parse().unwrap();
                    assert!(n < bound.max(generator.known_records()), "{n} >= {bound}");
                }
            }
        }
    }

    #[test]
    fn ycsb_d_reads_favour_new_inserts() {
        let config = small_config();
        let mut generator = OpGenerator::new(&config, Workload::YcsbD, 0);
        let (mut reads, mut recent) = (0, 0);
        for _ in 0..OPS {
            let known = generator.known_records();
            if let Op::Read(key) = generator.next_op() {
                let n: u64 = std::str::from_utf8(&key[4..]).unwrap().parse().unwrap();
                reads += 1;
                // The newest 100 records, about 1 % of the table.
                if n + 100 >= known {
                    recent += 1;
                }
            }
        }
        assert!(
            recent * 2 > reads,
            "{recent} of {reads} reads hit the newest records"
        );
        assert!(generator.inserted > 4_000);
    }

    #[test]
    fn scans_have_the_right_lengths() {
        let config = Config {
            scan_length: 7,
            ..small_config()
        };
        let mut lengths = HashSet::new();
        for op in OpGenerator::new(&config, Workload::YcsbE, 0).take(10_000) {
            if let Op::Scan(_, len) = op {
                assert!((1..=YCSB_MAX_SCAN_LENGTH).contains(&len));
                lengths.insert(len);
            }
        }
        assert_eq!(lengths.len(), YCSB_MAX_SCAN_LENGTH, "uniform over 1..=100");
        for op in OpGenerator::new(&config, Workload::Scan, 0).take(100) {
            assert!(matches!(op, Op::Scan(_, 7)));
        }
    }

    #[test]
    fn oltp_transactions_have_sysbench_shape() {
        let config = small_config();
        for op in OpGenerator::new(&config, Workload::OltpReadOnly, 0).take(100) {
            let Op::Txn(ops) = op else {
                panic!("not a transaction: {op:?}")
            };
            let reads = ops.iter().filter(|o| matches!(o, Op::Read(_))).count();
            let scans = ops
                .iter()
                .filter(|o| matches!(o, Op::Scan(_, OLTP_RANGE_LEN)))
                .count();
            assert_eq!((reads, scans), (OLTP_POINT_READS, OLTP_RANGE_READS));
        }
    }

    #[test]
    fn fill_seq_walks_each_slice_in_order() {
        let config = Config {
            record_count: 10,
            threads: 2,
            ..small_config()
        };
        let keys: Vec<Vec<u8>> = OpGenerator::new(&config, Workload::FillSeq, 1)
            .take(7)
            .map(|op| match op {
                Op::Insert(key, _) => key,
                other => panic!("{other:?}"),
            })
            .collect();
        let expected: Vec<Vec<u8>> = [5, 6, 7, 8, 9, 5, 6].map(|n| config.key(n)).to_vec();
        assert_eq!(keys, expected);
    }
}
