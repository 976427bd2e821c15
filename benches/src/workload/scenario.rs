//! The named scenarios: fixed plans that answer one question each, in a `--quick` size
//! (under two minutes on a 2-core machine) and a full size.
//!
//! | scenario     | question                                     | workloads                          | data vs pool       |
//! |--------------|----------------------------------------------|------------------------------------|--------------------|
//! | `percona-n1` | encryption cost when pages are read and decrypted all the time | `oltp-read-only`  | about 16× the pool |
//! | `percona-n2` | encryption cost when everything is cached     | `oltp-read-only`                   | pool larger        |
//! | `peers`      | Strongbox against the databases built in      | YCSB A, B, C, E and `fill-random`  | pool larger        |
//!
//! The first two reproduce the two experiments of Percona's "Measuring Percona Server
//! for MySQL On-Disk Decryption Overhead" (sysbench `oltp_read_only`, a thread sweep,
//! encrypted against plain). Both run Strongbox on disk; "IO-bound" here means bound by
//! buffer-pool misses, each a read through the OS page cache plus a page decryption;
//! the files stay in the page cache, as in Percona's run where the data fit in RAM.

use std::time::Duration;

use super::peers::PEERS_BUILT_IN;
use super::spec::{KeyOrder, Workload};

/// A named scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    PerconaN1,
    PerconaN2,
    Peers,
}

/// Who runs in a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cast {
    /// Strongbox encrypted and plain.
    StrongboxOnly,
    /// Strongbox encrypted and plain, then every peer built into this binary.
    WithPeers(Vec<String>),
}

/// The sizes and shape of one scenario at one size.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub workloads: Vec<Workload>,
    pub cast: Cast,
    pub threads: Vec<usize>,
    pub records: u64,
    pub buffer_pool: usize,
    pub duration: Duration,
    pub key_order: KeyOrder,
    /// Rounds over the targets (the summary takes medians).
    pub repeat: usize,
}

const MIB: usize = 1 << 20;

impl Scenario {
    pub const ALL: [Scenario; 3] = [Scenario::PerconaN1, Scenario::PerconaN2, Scenario::Peers];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::PerconaN1 => "percona-n1",
            Scenario::PerconaN2 => "percona-n2",
            Scenario::Peers => "peers",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The plan's shape; `quick` for the two-minute size.
    pub fn shape(self, quick: bool) -> Shape {
        let seconds =
            |quick_s: u64, full_s: u64| Duration::from_secs(if quick { quick_s } else { full_s });
        let sweep = if quick {
            vec![1, 4]
        } else {
            vec![1, 4, 16, 64]
        };
        let repeat = if quick { 1 } else { 2 };
        match self {
            // Records of 16-byte keys and 100-byte values take about 260 bytes of tree
            // each, loaded in key order (measured: 1 M records → 257 MiB on disk), so
            // the data is about 16× the pool at either size.
            Scenario::PerconaN1 => Shape {
                workloads: vec![Workload::OltpReadOnly],
                cast: Cast::StrongboxOnly,
                threads: sweep,
                records: if quick { 1_000_000 } else { 2_000_000 },
                buffer_pool: if quick { 16 * MIB } else { 32 * MIB },
                duration: seconds(8, 15),
                key_order: KeyOrder::Ordered,
                repeat,
            },
            Scenario::PerconaN2 => Shape {
                workloads: vec![Workload::OltpReadOnly],
                cast: Cast::StrongboxOnly,
                threads: sweep,
                records: if quick { 500_000 } else { 2_000_000 },
                buffer_pool: if quick { 256 * MIB } else { 1024 * MIB },
                duration: seconds(8, 15),
                key_order: KeyOrder::Ordered,
                repeat,
            },
            Scenario::Peers => Shape {
                workloads: vec![
                    Workload::YcsbA,
                    Workload::YcsbB,
                    Workload::YcsbC,
                    Workload::YcsbE,
                    Workload::FillRandom,
                ],
                cast: Cast::WithPeers(PEERS_BUILT_IN.iter().map(|p| p.to_string()).collect()),
                threads: if quick { vec![1, 4] } else { vec![1, 4, 16] },
                records: if quick { 100_000 } else { 1_000_000 },
                buffer_pool: if quick { 64 * MIB } else { 512 * MIB },
                duration: seconds(1, 5),
                key_order: KeyOrder::Hashed,
                repeat: 1,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
        }
        assert_eq!(Scenario::from_name("percona-n3"), None);
    }

    #[test]
    fn percona_scenarios_put_data_on_the_right_side_of_the_pool() {
        // ≈260 bytes of tree per record (see Shape's comment).
        for quick in [true, false] {
            let n1 = Scenario::PerconaN1.shape(quick);
            let data = n1.records as usize * 260;
            assert!(data > 10 * n1.buffer_pool, "n1 must be IO-bound");
            let n2 = Scenario::PerconaN2.shape(quick);
            let data = n2.records as usize * 260;
            assert!(data < n2.buffer_pool, "n2 must fit in the pool");
        }
    }

    #[test]
    fn quick_runs_fit_in_two_minutes_of_run_phase() {
        for s in Scenario::ALL {
            let shape = s.shape(true);
            let targets = 2 + match &shape.cast {
                Cast::StrongboxOnly => 0,
                Cast::WithPeers(p) => p.len(),
            };
            let run = shape.duration.as_secs_f64()
                * shape.threads.len() as f64
                * shape.workloads.len() as f64
                * targets as f64
                * shape.repeat as f64;
            // Loads come on top; they are measured in BENCHMARKS.md.
            assert!(run <= 100.0, "{}: {run} s of run phase", s.name());
        }
    }
}
