//! The command line of `strongbox-workload` (also `strongbox workload`): flags and named
//! scenarios turned into a [`Plan`], run, summarised, written out and charted.
//!
//! ```text
//! strongbox-workload --scenario percona-n1 --quick --plot n1.svg
//! strongbox-workload --workload ycsb-a,ycsb-c --threads 1,4,16 --duration 10 --encryption both
//! strongbox-workload --target resp://127.0.0.1:6380 --workload ycsb-b --encryption off
//! strongbox-workload --target embedded,redb,sqlite --workload fill-random --out r.json
//! ```
//!
//! A flag given with `--scenario` overrides that scenario's own value.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use strongbox_engine::FlushAtCommit;
use strongbox_keyring::Algorithm;

use super::experiment::{run_plan, EmbeddedSpec, Measurement, Plan, TargetSpec};
use super::report::{summary, write_plots, write_rows};
use super::runner::Stop;
use super::scenario::{Cast, Scenario};
use super::spec::{Config, KeyDistribution, KeyOrder, Workload};

#[derive(Parser, Debug)]
#[command(
    name = "strongbox-workload",
    about = "YCSB-style workloads and the Percona encryption-overhead experiments, against \
             Strongbox embedded, over RESP, and against peer databases"
)]
pub struct Args {
    /// A named scenario: percona-n1 (IO-bound), percona-n2 (in memory), peers.
    #[arg(long)]
    scenario: Option<String>,
    /// The scenario's small size (under two minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Comma-separated targets: embedded, resp://HOST:PORT, and peers built in with cargo
    /// features (redb, sled, sqlite, sqlcipher).
    #[arg(long, value_delimiter = ',')]
    target: Vec<String>,
    /// Comma-separated workloads: ycsb-a..ycsb-f, oltp-read-only, fill-seq, fill-random,
    /// read-random, scan.
    #[arg(long, value_delimiter = ',')]
    workload: Vec<String>,
    /// Comma-separated thread counts to sweep [default: 1].
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Records loaded before the run phase (the key space of `fill-*`) [default: 100000].
    #[arg(long)]
    records: Option<u64>,
    /// Operations per run phase (over all threads), instead of a duration.
    #[arg(long, alias = "operations")]
    ops: Option<u64>,
    /// Seconds per run phase [default: 10].
    #[arg(long, alias = "seconds")]
    duration: Option<f64>,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Records per operation of the `scan` workload.
    #[arg(long, default_value_t = 100)]
    scan_length: usize,
    /// Key chooser for reads, updates and scans instead of the workload's own: uniform,
    /// zipfian (θ = 0.99), latest.
    #[arg(long)]
    distribution: Option<String>,
    /// Hash record numbers into keys (YCSB's default insert order) instead of ordering them.
    #[arg(long)]
    hashed_keys: bool,
    /// Strongbox's buffer pool, e.g. 256MiB or 1GiB [default: 256MiB].
    #[arg(long)]
    buffer_pool: Option<String>,
    /// Strongbox with encryption on, off, or both side by side.
    #[arg(long, default_value = "both")]
    encryption: String,
    /// Comma-separated page ciphers for encrypted Strongbox: aes_ctr, aes_cbc, aes_gcm.
    #[arg(long, value_delimiter = ',', default_value = "aes_ctr")]
    algorithm: Vec<String>,
    /// 0 (redo flushed once a second), 1 (fsync at every commit; peers sync every
    /// commit too), 2 (written at commit, not synced).
    #[arg(long, alias = "flush", default_value_t = 2)]
    flush_log_at_commit: u8,
    /// Seed of every operation stream.
    #[arg(long, default_value_t = 0x5742_0b0c)]
    seed: u64,
    /// Records per load transaction.
    #[arg(long, default_value_t = 1_000)]
    load_batch: usize,
    /// Where databases are made (a subdirectory each, deleted after use) [default: a
    /// temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Strongbox on an in-memory file system (the CPU path alone, no file IO).
    #[arg(long)]
    in_memory: bool,
    /// Rounds over all targets, alternating them; tables show the median.
    #[arg(long)]
    repeat: Option<usize>,
    /// Write every measurement to FILE.json or FILE.csv (repeatable).
    #[arg(long)]
    out: Vec<PathBuf>,
    /// Chart throughput against threads to FILE.svg or FILE.png (one file per workload,
    /// `FILE-<workload>.ext`, when there are several) [default with --scenario:
    /// `<scenario>.svg`].
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Only the summary: no table per configuration, no progress bar.
    #[arg(long)]
    quiet: bool,
}

/// `256MiB`, `1GiB`, `512k`, `1048576` → bytes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 256MiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?} (use KiB, MiB, GiB)"
            ))
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn flush_policy(number: u8) -> Result<FlushAtCommit, String> {
    Ok(match number {
        0 => FlushAtCommit::OncePerInterval,
        1 => FlushAtCommit::EveryCommit,
        2 => FlushAtCommit::WriteAtCommit,
        other => {
            return Err(format!(
                "--flush-log-at-commit must be 0, 1 or 2, not {other}"
            ))
        }
    })
}

/// The Strongbox configurations `--encryption` and `--algorithm` ask for.
fn embedded_specs(args: &Args, buffer_pool: usize) -> Result<Vec<TargetSpec>, String> {
    let algorithms = args
        .algorithm
        .iter()
        .map(|a| a.parse::<Algorithm>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let spec = |encrypted, algorithm| {
        TargetSpec::Embedded(EmbeddedSpec {
            encrypted,
            algorithm,
            buffer_pool,
            in_memory: args.in_memory,
        })
    };
    let encrypted = algorithms.iter().map(|&a| spec(true, a));
    let plain = spec(false, Algorithm::AesCtr);
    Ok(match args.encryption.as_str() {
        "on" => encrypted.collect(),
        "off" => vec![plain],
        "both" => encrypted.chain([plain]).collect(),
        other => {
            return Err(format!(
                "--encryption must be on, off or both, not {other:?}"
            ))
        }
    })
}

/// Turns the command line into a plan.
pub fn plan(args: &Args) -> Result<Plan, String> {
    let scenario = args
        .scenario
        .as_deref()
        .map(|name| {
            Scenario::from_name(name).ok_or_else(|| {
                format!("unknown scenario {name:?}: expected percona-n1, percona-n2 or peers")
            })
        })
        .transpose()?;
    if args.quick && scenario.is_none() {
        return Err("--quick sizes a --scenario; name one".to_string());
    }
    let shape = scenario.map(|s| s.shape(args.quick));

    let buffer_pool = match (&args.buffer_pool, &shape) {
        (Some(text), _) => parse_size(text)?,
        (None, Some(shape)) => shape.buffer_pool,
        (None, None) => 256 << 20,
    };
    if buffer_pool < (1 << 20) {
        return Err("--buffer-pool must be at least 1MiB".to_string());
    }

    let mut targets = Vec::new();
    let names: Vec<String> = match (&shape, args.target.is_empty()) {
        (Some(shape), true) => {
            let mut names = vec!["embedded".to_string()];
            if let Cast::WithPeers(peers) = &shape.cast {
                names.extend(peers.iter().cloned());
            }
            names
        }
        (_, false) => args.target.clone(),
        (None, true) => vec!["embedded".to_string()],
    };
    for name in names {
        if name == "embedded" {
            targets.extend(embedded_specs(args, buffer_pool)?);
        } else if name.starts_with("resp://") {
            targets.push(TargetSpec::Resp(name));
        } else {
            targets.push(TargetSpec::Peer(name));
        }
    }

    let workloads = if args.workload.is_empty() {
        shape
            .as_ref()
            .map_or(vec![Workload::YcsbA], |s| s.workloads.clone())
    } else {
        args.workload
            .iter()
            .map(|name| {
                Workload::from_name(name).ok_or_else(|| format!("unknown workload {name:?}"))
            })
            .collect::<Result<_, _>>()?
    };
    let threads = match (&shape, args.threads.is_empty()) {
        (_, false) => args.threads.clone(),
        (Some(shape), true) => shape.threads.clone(),
        (None, true) => vec![1],
    };
    if threads.contains(&0) {
        return Err("--threads values must be at least 1".to_string());
    }
    let records = args
        .records
        .or(shape.as_ref().map(|s| s.records))
        .unwrap_or(100_000);
    if records == 0 {
        return Err("--records must be at least 1".to_string());
    }
    let stop = match (args.ops, args.duration) {
        (Some(_), Some(_)) => return Err("give --ops or --duration, not both".to_string()),
        (Some(0), None) => return Err("--ops must be at least 1".to_string()),
        (Some(n), None) => Stop::Operations(n),
        (None, Some(s)) if !(s > 0.0 && s.is_finite()) => {
            return Err(format!(
                "--duration must be a positive number of seconds, not {s}"
            ))
        }
        (None, Some(s)) => Stop::After(Duration::from_secs_f64(s)),
        (None, None) => Stop::After(
            shape
                .as_ref()
                .map_or(Duration::from_secs(10), |s| s.duration),
        ),
    };
    let distribution = args
        .distribution
        .as_deref()
        .map(|name| {
            KeyDistribution::from_name(name).ok_or_else(|| {
                format!("unknown distribution {name:?}: expected uniform, zipfian or latest")
            })
        })
        .transpose()?;
    let key_order = if args.hashed_keys {
        KeyOrder::Hashed
    } else {
        shape.as_ref().map_or(KeyOrder::Ordered, |s| s.key_order)
    };
    if args.load_batch == 0 {
        return Err("--load-batch must be at least 1".to_string());
    }
    for out in &args.out {
        if !matches!(
            out.extension().and_then(|e| e.to_str()),
            Some("json" | "csv")
        ) {
            return Err(format!(
                "--out {}: name a .json or .csv file",
                out.display()
            ));
        }
    }
    let config = Config {
        record_count: records,
        value_size: args.value_size,
        key_order,
        scan_length: args.scan_length,
        operation_count: match stop {
            Stop::Operations(n) => n,
            Stop::After(_) => records * 10,
        },
        seed: args.seed,
        threads: 1,
        distribution,
        ..Config::default()
    };
    Ok(Plan {
        scenario: scenario.map_or("custom", Scenario::name).to_string(),
        targets,
        workloads,
        threads,
        config,
        stop,
        load_batch: args.load_batch,
        flush: flush_policy(args.flush_log_at_commit)?,
        dir: args.dir.clone(),
        repeat: args
            .repeat
            .or(shape.as_ref().map(|s| s.repeat))
            .unwrap_or(1)
            .max(1),
        progress: !args.quiet,
        verbose: !args.quiet,
    })
}

fn describe(plan: &Plan) -> String {
    let targets: Vec<String> = plan.targets.iter().map(TargetSpec::label).collect();
    let workloads: Vec<&str> = plan.workloads.iter().map(|w| w.name()).collect();
    let pool = plan
        .targets
        .iter()
        .find_map(TargetSpec::buffer_pool)
        .map_or(String::new(), |b| {
            format!(", buffer pool {}", super::resources::format_bytes(b as u64))
        });
    format!(
        "{}: {} on {}; threads {:?}; {} records of {} B{pool}; {}; flush_log_at_commit={}; {} round(s)",
        plan.scenario,
        workloads.join(","),
        targets.join(","),
        plan.threads,
        plan.config.record_count,
        plan.config.value_size,
        match plan.stop {
            Stop::After(d) => format!("{:.1} s per run", d.as_secs_f64()),
            Stop::Operations(n) => format!("{n} ops per run"),
        },
        super::experiment::flush_number(plan.flush),
        plan.repeat,
    )
}

fn run(args: &Args) -> Result<(), String> {
    let plan = plan(args)?;
    println!("{}\n", describe(&plan));
    let rows: Vec<Measurement> = run_plan(&plan, |_| {}).map_err(|e| e.to_string())?;
    println!("{}", summary(&rows));
    for out in &args.out {
        write_rows(out, &rows)?;
        println!("wrote {}", out.display());
    }
    if let Some(path) = chart_path(args) {
        for file in write_plots(&path, &plan.scenario, &rows)? {
            println!("wrote {}", file.display());
        }
    }
    Ok(())
}

/// Where the chart goes: `--plot`, or for a named scenario `<scenario>.svg` in the current
/// directory (a scenario answers with a table and a chart).
fn chart_path(args: &Args) -> Option<PathBuf> {
    args.plot.clone().or_else(|| {
        args.scenario
            .as_ref()
            .map(|s| PathBuf::from(format!("{s}.svg")))
    })
}

/// Runs the tool on `args` (the first is the program name) and returns the exit status:
/// 0 done, 1 the run failed (a one-line error on stderr), 2 bad arguments.
pub fn run_from<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("strongbox-workload: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Plan, String> {
        let args = Args::try_parse_from(line.split_whitespace()).map_err(|e| e.to_string())?;
        plan(&args)
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs")
            .unwrap_err()
            .contains("unknown size unit"));
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn defaults_compare_encrypted_and_plain() {
        let plan = parse("w").unwrap();
        let labels: Vec<String> = plan.targets.iter().map(TargetSpec::label).collect();
        assert_eq!(labels, ["strongbox", "strongbox-plain"]);
        assert_eq!(plan.workloads, [Workload::YcsbA]);
        assert_eq!(plan.threads, [1]);
        assert_eq!(plan.scenario, "custom");
        assert!(matches!(plan.stop, Stop::After(d) if d == Duration::from_secs(10)));
    }

    #[test]
    fn flags_shape_the_plan() {
        let plan = parse(
            "w --target embedded,resp://127.0.0.1:1,redb --encryption on --algorithm aes_ctr,aes_gcm \
             --workload ycsb-c,scan --threads 1,4,16 --ops 500 --buffer-pool 8MiB \
             --distribution latest --flush-log-at-commit 1",
        )
        .unwrap();
        let labels: Vec<String> = plan.targets.iter().map(TargetSpec::label).collect();
        assert_eq!(
            labels,
            [
                "strongbox",
                "strongbox-aes_gcm",
                "resp://127.0.0.1:1",
                "redb"
            ]
        );
        assert_eq!(plan.targets[0].buffer_pool(), Some(8 << 20));
        assert_eq!(plan.threads, [1, 4, 16]);
        assert!(matches!(plan.stop, Stop::Operations(500)));
        assert_eq!(plan.config.distribution, Some(KeyDistribution::Latest));
        assert_eq!(plan.flush, FlushAtCommit::EveryCommit);
    }

    #[test]
    fn scenarios_fill_in_what_flags_leave() {
        let plan = parse("w --scenario percona-n1 --quick").unwrap();
        assert_eq!(plan.scenario, "percona-n1");
        assert_eq!(plan.workloads, [Workload::OltpReadOnly]);
        let shape = Scenario::PerconaN1.shape(true);
        assert_eq!(plan.config.record_count, shape.records);
        assert_eq!(plan.targets[0].buffer_pool(), Some(shape.buffer_pool));
        let plan = parse("w --scenario percona-n2 --quick --threads 2 --records 10").unwrap();
        assert_eq!(plan.threads, [2]);
        assert_eq!(plan.config.record_count, 10);
    }

    #[test]
    fn scenarios_chart_by_default() {
        let args = |line: &str| Args::try_parse_from(line.split_whitespace()).unwrap();
        assert_eq!(
            chart_path(&args("w --scenario peers --quick")),
            Some(PathBuf::from("peers.svg"))
        );
        assert_eq!(
            chart_path(&args("w --scenario peers --plot p.png")),
            Some(PathBuf::from("p.png"))
        );
        assert_eq!(chart_path(&args("w --workload ycsb-a")), None);
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        let cases = [
            ("w --scenario percona-n9", "unknown scenario"),
            ("w --quick", "--quick sizes a --scenario"),
            ("w --encryption maybe", "on, off or both"),
            ("w --algorithm rot13", "unknown encryption_algorithm"),
            ("w --workload ycsb-z", "unknown workload"),
            ("w --threads 0", "at least 1"),
            ("w --ops 5 --duration 1", "not both"),
            ("w --duration 0", "positive number"),
            ("w --distribution pareto", "unknown distribution"),
            ("w --flush-log-at-commit 3", "0, 1 or 2"),
            ("w --buffer-pool 10k", "at least 1MiB"),
            ("w --out results.txt", ".json or .csv"),
            ("w --records 0", "at least 1"),
        ];
        for (line, expected) in cases {
            let err = parse(line).unwrap_err();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }
}
