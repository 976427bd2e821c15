//! One experiment: every configuration (target × workload) opened fresh, loaded once and
//! swept over the thread counts, measured into [`Measurement`] rows.
//!
//! Order of work, for `repeat` rounds:
//!
//! ```text
//! for round in 1..=repeat
//!   for workload in workloads
//!     for target in targets          ← encrypted and plain alternate, round after round
//!       hand freed memory back, reset the peak RSS counter, note the RSS (baseline)
//!       open a fresh database; load; (Strongbox: close, reopen); measure bytes on disk
//!       for threads in sweep: run, record one Measurement
//!       close and delete the database
//! ```
//!
//! One target is open at a time. Memory is the process's peak since the target opened
//! (load and runs) minus its resident size just before, so what earlier configurations
//! left behind (a peer's allocator caches, say) is not charged to the next one; see
//! [`resources`].
//! Strongbox is closed and reopened between load and run, so the run starts from what a
//! restart would see. Alternating targets round by round, and taking the median over
//! rounds in the summary ([`report`](super::report)), keeps a noisy shared machine
//! from favouring whichever configuration ran in a quiet minute.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use strongbox_engine::io::MemVfs;
use strongbox_engine::{EncryptTables, FlushAtCommit, Options};
use strongbox_keyring::Algorithm;

use super::peers::{self, Durability};
use super::resources;
use super::resp::Resp;
use super::runner::{self, format_report, RunReport, Stop};
use super::spec::{Config, Workload};
use super::target::{Embedded, Target, TargetResult};

/// The Strongbox engine in this process, as one configuration runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddedSpec {
    /// Tables, system space and redo log encrypted under a random in-memory key; or no
    /// key at all (nothing encrypted).
    pub encrypted: bool,
    pub algorithm: Algorithm,
    /// `buffer_pool_size` in bytes.
    pub buffer_pool: usize,
    /// An in-memory file system instead of a directory on disk.
    pub in_memory: bool,
}

/// Where a configuration sends its operations.
#[derive(Clone, Debug, PartialEq)]
pub enum TargetSpec {
    Embedded(EmbeddedSpec),
    /// `resp://host:port`: any Redis-protocol server.
    Resp(String),
    /// A peer database by name (`redb`, `sled`, `sqlite`, `sqlcipher`).
    Peer(String),
}

impl TargetSpec {
    /// The label in tables, files and charts: `strongbox`, `strongbox-plain`, a peer's
    /// name or the URL.
    pub fn label(&self) -> String {
        match self {
            TargetSpec::Embedded(spec) => match (spec.encrypted, spec.algorithm) {
                (false, _) => "strongbox-plain".to_string(),
                (true, Algorithm::AesCtr) => "strongbox".to_string(),
                (true, other) => format!("strongbox-{}", other.name()),
            },
            TargetSpec::Resp(url) => url.clone(),
            TargetSpec::Peer(name) => name.clone(),
        }
    }

    /// `on`, `off`, or `n/a` where the tool does not control it (peers, servers). The
    /// `sqlcipher` peer always encrypts.
    pub fn encryption(&self) -> &'static str {
        match self {
            TargetSpec::Embedded(spec) if spec.encrypted => "on",
            TargetSpec::Embedded(_) => "off",
            TargetSpec::Peer(name) if name == "sqlcipher" => "on",
            TargetSpec::Peer(_) | TargetSpec::Resp(_) => "n/a",
        }
    }

    /// The buffer pool the memory budget is measured against (embedded only).
    pub fn buffer_pool(&self) -> Option<usize> {
        match self {
            TargetSpec::Embedded(spec) => Some(spec.buffer_pool),
            _ => None,
        }
    }
}

/// Everything one experiment runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `custom`, or the named scenario this plan came from.
    pub scenario: String,
    pub targets: Vec<TargetSpec>,
    pub workloads: Vec<Workload>,
    /// The thread-count sweep.
    pub threads: Vec<usize>,
    /// Records, values, keys and seed; `threads` is set per run.
    pub config: Config,
    pub stop: Stop,
    /// Records per load transaction.
    pub load_batch: usize,
    /// `flush_log_at_commit` for Strongbox; peers are synced per commit for
    /// `EveryCommit` and not otherwise.
    pub flush: FlushAtCommit,
    /// Where databases are made (one subdirectory each, deleted after use); `None` = a
    /// temporary directory.
    pub dir: Option<PathBuf>,
    /// Rounds over all targets; summaries take the median.
    pub repeat: usize,
    /// A live progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// Print each configuration's table as it finishes.
    pub verbose: bool,
}

/// One run phase of one configuration: a row of `--out` files and of the summary.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub scenario: String,
    pub round: usize,
    pub workload: String,
    pub target: String,
    pub encryption: String,
    pub algorithm: Option<String>,
    pub threads: usize,
    pub records: u64,
    pub value_size: usize,
    pub buffer_pool_bytes: Option<u64>,
    pub flush_log_at_commit: u8,
    pub operations: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub misses: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Records per second of this configuration's load phase (none for `fill-*`).
    pub load_records_per_sec: Option<f64>,
    /// Bytes allocated under the database directory after the load (for Strongbox after
    /// a clean close and reopen); none in memory or over the network.
    pub disk_bytes_after_load: Option<u64>,
    /// Resident memory of this process just before the configuration opened (what
    /// earlier configurations and the tool itself hold).
    pub baseline_rss_bytes: Option<u64>,
    /// Peak resident memory of this process since the configuration opened: its load
    /// and every run phase so far.
    pub peak_rss_bytes: Option<u64>,
}

impl Measurement {
    /// What the configuration itself added at its peak: peak minus baseline.
    pub fn rss_growth_bytes(&self) -> Option<u64> {
        Some(
            self.peak_rss_bytes?
                .saturating_sub(self.baseline_rss_bytes?),
        )
    }
}

/// A failure that stops the experiment (run-phase errors are counted in rows instead).
#[derive(Debug)]
pub struct ExperimentError(pub String);

impl fmt::Display for ExperimentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExperimentError {}

/// `flush_log_at_commit`'s number, as MariaDB spells the setting.
pub fn flush_number(flush: FlushAtCommit) -> u8 {
    match flush {
        FlushAtCommit::OncePerInterval => 0,
        FlushAtCommit::EveryCommit => 1,
        FlushAtCommit::WriteAtCommit => 2,
    }
}

/// Engine options for `spec`: a random 256-bit key 1 in memory when encrypted, none
/// otherwise (so neither tables, nor the system space, nor the redo log are encrypted).
pub fn embedded_options(spec: &EmbeddedSpec, flush: FlushAtCommit) -> TargetResult<Options> {
    let mut options = if spec.encrypted {
        Embedded::options(spec.buffer_pool, flush)?
    } else {
        Options::new()
            .buffer_pool_size(spec.buffer_pool)
            .flush_log_at_commit(flush)
            .encrypt_tables(EncryptTables::Off)
    };
    options = options.encryption_algorithm(spec.algorithm);
    if spec.in_memory {
        options = options.vfs(Arc::new(MemVfs::new()));
    }
    Ok(options)
}

/// An opened configuration.
enum Opened {
    Embedded {
        target: Embedded,
        /// The run phase's options (the same in-memory key as the load's).
        options: Options,
        path: PathBuf,
    },
    Other(Box<dyn Target + Send>),
}

impl Opened {
    fn target(&self) -> &dyn Target {
        match self {
            Opened::Embedded { target, .. } => target,
            Opened::Other(t) => t.as_ref(),
        }
    }

    /// Ends the load phase. Strongbox is closed (every page written home) and reopened
    /// with the configured pool, so the bytes on disk count the tree and the run starts
    /// from what a restart would see.
    fn finish_load(self) -> TargetResult<Opened> {
        match self {
            Opened::Embedded {
                target,
                options,
                path,
            } => {
                target.close()?;
                let target = Embedded::open(&path, options.clone())?;
                Ok(Opened::Embedded {
                    target,
                    options,
                    path,
                })
            }
            other => Ok(other),
        }
    }

    fn close(self) -> TargetResult<()> {
        match self {
            Opened::Embedded { target, .. } => target.close(),
            Opened::Other(t) => {
                drop(t);
                Ok(())
            }
        }
    }
}

fn open(spec: &TargetSpec, dir: &Path, plan: &Plan, threads: usize) -> TargetResult<Opened> {
    Ok(match spec {
        TargetSpec::Embedded(embedded) => {
            let options = embedded_options(embedded, plan.flush)?;
            let path = if embedded.in_memory {
                PathBuf::from("/strongbox-workload")
            } else {
                dir.to_path_buf()
            };
            let target = Embedded::open(&path, options.clone())?;
            Opened::Embedded {
                target,
                options,
                path,
            }
        }
        TargetSpec::Resp(url) => Opened::Other(Box::new(Resp::connect(url, threads)?)),
        TargetSpec::Peer(name) => {
            let durability = match plan.flush {
                FlushAtCommit::EveryCommit => Durability::Durable,
                _ => Durability::Relaxed,
            };
            Opened::Other(peers::open_peer(name, dir, durability)?)
        }
    })
}

/// Where on disk a configuration's data lives, if anywhere the tool can measure.
fn measured_dir<'a>(spec: &TargetSpec, dir: &'a Path) -> Option<&'a Path> {
    match spec {
        TargetSpec::Embedded(e) if e.in_memory => None,
        TargetSpec::Resp(_) => None,
        _ => Some(dir),
    }
}

/// A file-name-safe form of a label.
fn slug(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// A live `ops/s` display over one run phase.
struct Progress {
    counter: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(enabled: bool, title: String, stop: Stop) -> Progress {
        let counter = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let ticker = enabled.then(|| {
            let (counter, done) = (counter.clone(), done.clone());
            std::thread::spawn(move || show_progress(&title, stop, &counter, &done))
        });
        Progress {
            counter,
            done,
            ticker,
        }
    }

    fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// The ticker thread: a bar over the run's time or operation budget, with the ops/s of
/// the last half second as its message.
fn show_progress(title: &str, stop: Stop, counter: &AtomicU64, done: &AtomicBool) {
    const TICK: Duration = Duration::from_millis(250);
    let (length, unit) = match stop {
        Stop::After(d) => (d.as_millis() as u64, "ms"),
        Stop::Operations(n) => (n, "ops"),
    };
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>32} [{bar:30}] {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(title.to_string());
    let start = Instant::now();
    let (mut last_ops, mut last_at) = (0u64, start);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let ops = counter.load(Ordering::Relaxed);
        let rate = (ops - last_ops) as f64 / (now - last_at).as_secs_f64().max(1e-9);
        (last_ops, last_at) = (ops, now);
        bar.set_position(match unit {
            "ms" => (now - start).as_millis() as u64,
            _ => ops,
        });
        bar.set_message(format!("{:.0} ops/s", rate));
    }
    bar.finish_and_clear();
}

/// One row from one run.
fn measurement(
    plan: &Plan,
    round: usize,
    spec: &TargetSpec,
    report: &RunReport,
    load: Option<f64>,
    disk: Option<u64>,
    baseline: Option<u64>,
) -> Measurement {
    let overall = report.overall();
    let micros = |q: f64| overall.value_at_quantile(q) as f64 / 1e3;
    Measurement {
        scenario: plan.scenario.clone(),
        round,
        workload: report.workload.name().to_string(),
        target: spec.label(),
        encryption: spec.encryption().to_string(),
        algorithm: match spec {
            TargetSpec::Embedded(e) if e.encrypted => Some(e.algorithm.name().to_string()),
            _ => None,
        },
        threads: report.threads,
        records: plan.config.record_count,
        value_size: plan.config.value_size,
        buffer_pool_bytes: spec.buffer_pool().map(|b| b as u64),
        flush_log_at_commit: flush_number(plan.flush),
        operations: report.operations(),
        seconds: report.elapsed.as_secs_f64(),
        ops_per_sec: report.throughput(),
        p50_us: micros(0.50),
        p95_us: micros(0.95),
        p99_us: micros(0.99),
        p999_us: micros(0.999),
        misses: report.misses,
        errors: report.errors,
        first_error: report.first_error.clone(),
        load_records_per_sec: load,
        disk_bytes_after_load: disk,
        baseline_rss_bytes: baseline,
        peak_rss_bytes: resources::peak_rss_bytes(),
    }
}

/// Runs `plan`, calling `row` with each measurement as it is made.
pub fn run_plan(
    plan: &Plan,
    mut row: impl FnMut(&Measurement),
) -> Result<Vec<Measurement>, ExperimentError> {
    if plan.threads.is_empty() || plan.threads.contains(&0) {
        return Err(ExperimentError(
            "thread counts must be at least 1".to_string(),
        ));
    }
    let scratch;
    let root = match &plan.dir {
        Some(dir) => dir.clone(),
        None => {
            scratch = tempfile::Builder::new()
                .prefix("strongbox-workload")
                .tempdir()
                .map_err(|e| ExperimentError(format!("making a temporary directory: {e}")))?;
            scratch.path().to_path_buf()
        }
    };
    let max_threads = *plan.threads.iter().max().expect("not empty");
    let mut rows = Vec::new();
    for round in 1..=plan.repeat.max(1) {
        for &workload in &plan.workloads {
            for spec in &plan.targets {
                let label = spec.label();
                let fail = |what: &str, e: &dyn fmt::Display| {
                    ExperimentError(format!("{label}, {}: {what}: {e}", workload.name()))
                };
                let dir = root.join(format!("{}-{}", slug(&label), workload.name()));
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)
                        .map_err(|e| fail(&format!("clearing {}", dir.display()), &e))?;
                }
                std::fs::create_dir_all(&dir)
                    .map_err(|e| fail(&format!("creating {}", dir.display()), &e))?;
                // Memory is measured from here: what earlier configurations freed goes
                // back to the kernel, the peak counter restarts at the current size.
                resources::release_freed_memory();
                resources::reset_peak_rss();
                let baseline = resources::current_rss_bytes();
                let opened =
                    open(spec, &dir, plan, max_threads).map_err(|e| fail("opening", &e))?;
                if workload.scans() && !opened.target().supports_scan() {
                    // A server without ordered scans cannot run this workload at all.
                    eprintln!(
                        "skipping {} on {label}: the server has no ordered scan (SB.RANGE)",
                        workload.name()
                    );
                    opened.close().map_err(|e| fail("closing", &e))?;
                    std::fs::remove_dir_all(&dir)
                        .map_err(|e| fail(&format!("removing {}", dir.display()), &e))?;
                    continue;
                }
                let mut load_rate = None;
                if workload.needs_load() {
                    let config = Config {
                        threads: max_threads,
                        ..plan.config.clone()
                    };
                    let report = runner::load(opened.target(), &config, plan.load_batch)
                        .map_err(|e| fail("loading", &e))?;
                    load_rate =
                        Some(report.records as f64 / report.elapsed.as_secs_f64().max(1e-9));
                }
                let opened = opened.finish_load().map_err(|e| fail("reopening", &e))?;
                let target = opened.target();
                let disk = measured_dir(spec, &dir).and_then(|d| resources::dir_bytes(d).ok());
                for &threads in &plan.threads {
                    let config = Config {
                        threads,
                        ..plan.config.clone()
                    };
                    let title = format!("{} {label} ×{threads}", workload.name());
                    let progress = Progress::start(plan.progress, title, plan.stop);
                    let report = runner::run_with_progress(
                        target,
                        &config,
                        workload,
                        plan.stop,
                        Some(&progress.counter),
                    );
                    progress.finish();
                    let m = measurement(plan, round, spec, &report, load_rate, disk, baseline);
                    if plan.verbose {
                        print!(
                            "{}",
                            format_report(&report).replacen(
                                &format!(" on {}", report.target),
                                &format!(" on {label}"),
                                1,
                            )
                        );
                        println!(
                            "  peak RSS {} (+{} since opening), on disk after load {}\n",
                            m.peak_rss_bytes
                                .map_or("n/a".into(), resources::format_bytes),
                            m.rss_growth_bytes()
                                .map_or("n/a".into(), resources::format_bytes),
                            m.disk_bytes_after_load
                                .map_or("n/a".into(), resources::format_bytes),
                        );
                    }
                    row(&m);
                    rows.push(m);
                }
                opened.close().map_err(|e| fail("closing", &e))?;
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| fail(&format!("removing {}", dir.display()), &e))?;
            }
        }
    }
    Ok(rows)
}
