//! `strongbox-workload`: YCSB-style workloads against a Strongbox target.
//!
//! For each workload a fresh target is opened, loaded with `--records` records (unless
//! the workload is a `fill-*`, which is its own load), and run once per `--threads`
//! value, printing one table per configuration: ops/s and p50/p95/p99/p99.9 latency per
//! operation kind. Workloads and targets are described in `strongbox_bench::workload`.
//!
//! ```text
//! strongbox-workload --workload ycsb-a,ycsb-c --threads 1,4,16 --seconds 10
//! strongbox-workload --dir /mnt/nvme/sb --flush 1 --workload fill-random --operations 1000000
//! ```
//!
//! Only the `embedded` target exists so far; `resp://host:port` and peer databases are
//! planned.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use strongbox_bench::workload::{
    format_report, load, run, Config, Embedded, KeyOrder, Stop, Workload,
};
use strongbox_engine::FlushAtCommit;

#[derive(Parser, Debug)]
#[command(about = "YCSB-style workloads against Strongbox")]
struct Args {
    /// Where to send operations: `embedded` (the engine in this process).
    #[arg(long, default_value = "embedded")]
    target: String,
    /// Database directory for `embedded`; without it, an in-memory file system (no disk).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Comma-separated workloads: ycsb-a..ycsb-f, oltp-read-only, fill-seq, fill-random,
    /// read-random, scan.
    #[arg(long, default_value = "ycsb-a", value_delimiter = ',')]
    workload: Vec<String>,
    /// Comma-separated thread counts to sweep.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Records loaded before the run phase (the key space of `fill-*`).
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Records per operation of the `scan` workload.
    #[arg(long, default_value_t = 100)]
    scan_length: usize,
    /// Hash record numbers into keys (YCSB's default insert order) instead of ordering them.
    #[arg(long)]
    hashed_keys: bool,
    /// Seconds per run phase (ignored with `--operations`).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Operations per run phase instead of a duration.
    #[arg(long)]
    operations: Option<u64>,
    /// Seed of every operation stream.
    #[arg(long, default_value_t = 0x5742_0b0c)]
    seed: u64,
    /// Buffer pool size in MiB.
    #[arg(long, default_value_t = 256)]
    pool_mib: usize,
    /// `flush_log_at_commit`: 0 (once a second), 1 (fsync every commit), 2 (write only).
    #[arg(long, default_value_t = 2)]
    flush: u8,
    /// Records per load transaction.
    #[arg(long, default_value_t = 1_000)]
    load_batch: usize,
}

fn open(args: &Args, workload: Workload) -> Result<Embedded, String> {
    if args.target != "embedded" {
        return Err(format!(
            "unknown target {:?} (only `embedded` exists so far)",
            args.target
        ));
    }
    let flush = match args.flush {
        0 => FlushAtCommit::OncePerInterval,
        1 => FlushAtCommit::EveryCommit,
        2 => FlushAtCommit::WriteAtCommit,
        other => return Err(format!("--flush must be 0, 1 or 2, not {other}")),
    };
    let pool = args.pool_mib << 20;
    let target = match &args.dir {
        Some(dir) => {
            let dir = dir.join(workload.name());
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let options = Embedded::options(pool, flush).map_err(|e| e.to_string())?;
            Embedded::open(&dir, options)
        }
        None => Embedded::in_memory(pool),
    };
    target.map_err(|e| e.to_string())
}

fn main_inner(args: &Args) -> Result<(), String> {
    let workloads = args
        .workload
        .iter()
        .map(|name| Workload::from_name(name).ok_or_else(|| format!("unknown workload {name:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    if args.threads.contains(&0) {
        return Err("--threads values must be at least 1".into());
    }
    let stop = match args.operations {
        Some(n) => Stop::Operations(n),
        None => Stop::After(Duration::from_secs_f64(args.seconds)),
    };
    let base = Config {
        record_count: args.records,
        value_size: args.value_size,
        key_order: if args.hashed_keys {
            KeyOrder::Hashed
        } else {
            KeyOrder::Ordered
        },
        scan_length: args.scan_length,
        operation_count: args.operations.unwrap_or(args.records * 10),
        seed: args.seed,
        threads: 1,
        ..Config::default()
    };
    for workload in workloads {
        let target = open(args, workload)?;
        if workload.needs_load() {
            let config = Config {
                threads: *args.threads.iter().max().expect("at least one"),
                ..base.clone()
            };
            let report = load(&target, &config, args.load_batch).map_err(|e| e.to_string())?;
            println!(
                "load: {} records in {:.1} s ({:.0} records/s)",
                report.records,
                report.elapsed.as_secs_f64(),
                report.records as f64 / report.elapsed.as_secs_f64().max(1e-9)
            );
        }
        for &threads in &args.threads {
            let config = Config {
                threads,
                ..base.clone()
            };
            let report = run(&target, &config, workload, stop);
            println!("{}", format_report(&report));
        }
        target.close().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match main_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strongbox-workload: {e}");
            ExitCode::FAILURE
        }
    }
}
