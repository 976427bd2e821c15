//! `strongbox-workload`: YCSB-style workloads and the Percona encryption-overhead
//! scenarios against Strongbox embedded, over RESP, and against peer databases. The
//! command line is documented in `strongbox_bench::workload::cli` and `--help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(strongbox_bench::workload::cli::run_from(std::env::args_os()))
}
