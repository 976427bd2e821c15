//! The workload generator behind `strongbox-workload`: YCSB-style load and run phases
//! against any store behind one adapter trait.
//!
//! Bottom-up:
//!
//! | module           | owns                                                            |
//! |------------------|-----------------------------------------------------------------|
//! | [`distribution`] | key choosers (uniform, zipfian, scrambled zipfian, latest), seeded |
//! | [`spec`]         | the named workloads, their mixes, keys and values; [`OpGenerator`] |
//! | [`target`]       | the [`Target`] adapter trait and the [`Embedded`] engine adapter |
//! | [`resp`]         | the `resp://host:port` adapter (any Redis-protocol server)      |
//! | [`peers`]        | redb, sled, SQLite, SQLCipher adapters behind cargo features    |
//! | [`runner`]       | load and run phases on threads, HDR latency histograms, per-run table |
//! | [`resources`]    | peak resident memory, bytes on disk                             |
//! | [`experiment`]   | a [`Plan`](experiment::Plan) run: targets × workloads × threads → measurements |
//! | [`report`]       | summary tables (encrypted/plain ratio, memory budget), JSON/CSV, charts |
//! | [`plot`]         | throughput-vs-threads charts (SVG, PNG) with plotters           |
//! | [`scenario`]     | the named scenarios `percona-n1`, `percona-n2`, `peers`         |
//! | [`cli`]          | the command line of `strongbox-workload` / `strongbox workload` |
//!
//! The guide is `docs/workload.md`. A run by hand, below the command line:
//!
//! ```no_run
//! use strongbox_bench::workload::{load_range, Config, Embedded, OpGenerator, Target, Workload};
//!
//! let config = Config { record_count: 10_000, ..Config::default() };
//! let target = Embedded::in_memory(64 << 20)?;
//! // Load phase: each thread inserts its slice of the records.
//! let mut rng = strongbox_bench::workload::distribution::thread_rng(config.seed, 0);
//! let batch: Vec<_> = load_range(config.record_count, 0, 1)
//!     .map(|n| (config.key(n), strongbox_bench::workload::random_value(&mut rng, 100)))
//!     .collect();
//! target.load(&batch)?;
//! // Run phase: each thread draws its own deterministic stream of operations.
//! for op in OpGenerator::new(&config, Workload::YcsbA, 0).take(1_000) {
//!     target.execute(&op)?;
//! }
//! # Ok::<(), strongbox_bench::workload::TargetError>(())
//! ```
//!
//! Determinism: a run's operations depend only on the [`Config`] (its seed and thread
//! count included), the [`Workload`] and the thread number, never on timing; see
//! [`spec`] for the one place where threads' views of the key space differ.

pub mod cli;
pub mod distribution;
pub mod experiment;
pub mod peers;
pub mod plot;
pub mod report;
#[allow(unsafe_code)] // getrusage and malloc_trim: see the SAFETY comments there.
pub mod resources;
pub mod resp;
pub mod runner;
pub mod scenario;
pub mod spec;
pub mod target;

pub use runner::{format_report, load, run, run_with_progress, LoadReport, RunReport, Stop};
pub use spec::{
    load_range, random_value, Config, KeyDistribution, KeyOrder, Mix, Op, OpGenerator, OpKind,
    Workload,
};
pub use target::{Embedded, Outcome, Target, TargetError, TargetResult};
