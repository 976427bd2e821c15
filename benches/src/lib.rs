//! # strongbox-bench
//!
//! Benchmarks for Strongbox. Today: criterion micro-benches in `benches/` (the page codec
//! per algorithm, AES-GCM implementations compared). Planned (issue "Workload generator"):
//! the `strongbox-workload` binary, its store-adapter trait and peer adapters behind cargo
//! features.

pub mod direct_io;
