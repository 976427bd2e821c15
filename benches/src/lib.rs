//! # strongbox-bench
//!
//! Benchmarks for Strongbox: criterion micro-benches in `benches/` (the page codec per
//! algorithm, AES-GCM implementations compared), the issue benchmarks in `src/bin/`, and
//! [`workload`], the YCSB-style generator with its store-adapter trait (driven by the
//! `strongbox-workload` binary), and [`stats`], what the binaries share. Planned (issue
//! "Workload generator"): the RESP and peer adapters behind cargo features, scenarios, charts.

// `unsafe` only in `workload::resources` (two libc calls, each with a SAFETY comment).
#![deny(unsafe_code)]

pub mod direct_io;
pub mod stats;
pub mod workload;
