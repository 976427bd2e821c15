//! # strongbox-bench
//!
//! Benchmarks for Strongbox: criterion micro-benches in `benches/` (the page codec per
//! algorithm, AES-GCM implementations compared), the issue benchmarks in `src/bin/`, and
//! [`workload`], the YCSB-style generator with its store-adapter trait. Planned (issue
//! "Workload generator"): the `strongbox-workload` binary and peer adapters behind cargo
//! features.

pub mod direct_io;
pub mod stats;
pub mod workload;
