//! The load and run phases: worker threads, stop conditions, HDR latency histograms and
//! the report table.
//!
//! Latencies are recorded in nanoseconds in one [`Histogram`] per operation kind per
//! thread (no sharing on the hot path) and merged when the threads finish. A failed
//! operation is counted, its first error kept for the report, and the run goes on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::distribution::thread_rng;
use super::spec::{load_range, random_value, Config, OpGenerator, OpKind, Workload};
use super::target::{Target, TargetResult};

/// The largest latency a histogram records exactly (longer ones are clamped): 60 s.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// When a run phase stops.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many operations over all threads (split evenly, remainder to the first).
    Operations(u64),
}

/// What a load phase did.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub records: u64,
    pub elapsed: Duration,
}

/// Inserts records `0..config.record_count` with `config.threads` threads, in
/// transactions of `batch` records.
pub fn load(target: &dyn Target, config: &Config, batch: usize) -> TargetResult<LoadReport> {
    let start = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..config.threads)
            .map(|thread| {
                s.spawn(move || -> TargetResult<()> {
                    // Load values come from a stream of their own, apart from the run's.
                    let mut rng = thread_rng(config.seed ^ 0x10AD, thread);
                    let range = load_range(config.record_count, thread, config.threads);
                    let mut records = Vec::with_capacity(batch);
                    for n in range {
                        records.push((config.key(n), random_value(&mut rng, config.value_size)));
                        if records.len() == batch {
                            target.load(&records)?;
                            records.clear();
                        }
                    }
                    if !records.is_empty() {
                        target.load(&records)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("load thread panicked"))
    })?;
    Ok(LoadReport {
        records: config.record_count,
        elapsed: start.elapsed(),
    })
}

/// What one run phase measured.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub workload: Workload,
    pub target: String,
    pub threads: usize,
    pub elapsed: Duration,
    /// Successful operations per kind with their latencies.
    pub latencies: BTreeMap<OpKind, Histogram<u64>>,
    /// Point reads that found nothing.
    pub misses: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl RunReport {
    /// Successful operations of every kind.
    pub fn operations(&self) -> u64 {
        self.latencies.values().map(Histogram::len).sum()
    }

    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        self.operations() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Every kind's latencies merged.
    pub fn overall(&self) -> Histogram<u64> {
        let mut all = latency_histogram();
        for h in self.latencies.values() {
            all.add(h).expect("same bounds");
        }
        all
    }
}

/// Per-thread results before merging.
struct ThreadResult {
    latencies: BTreeMap<OpKind, Histogram<u64>>,
    misses: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Operations a worker finishes between two additions to the shared progress counter:
/// often enough for a live ops/s figure, rare enough not to bounce a cache line per op.
const PROGRESS_BATCH: u64 = 64;

/// Runs `workload` on `target` with `config.threads` threads until `stop`.
pub fn run(target: &dyn Target, config: &Config, workload: Workload, stop: Stop) -> RunReport {
    run_with_progress(target, config, workload, stop, None)
}

/// [`run`], adding finished operations to `progress` as it goes (for a live display).
pub fn run_with_progress(
    target: &dyn Target,
    config: &Config,
    workload: Workload,
    stop: Stop,
    progress: Option<&AtomicU64>,
) -> RunReport {
    let start = Instant::now();
    let results: Vec<ThreadResult> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..config.threads)
            .map(|thread| {
                s.spawn(move || {
                    let budget = match stop {
                        Stop::Operations(total) => {
                            let t = config.threads as u64;
                            Some(total / t + u64::from((thread as u64) < total % t))
                        }
                        Stop::After(_) => None,
                    };
                    let deadline = match stop {
                        Stop::After(d) => Some(start + d),
                        Stop::Operations(_) => None,
                    };
                    let limits = Limits {
                        budget,
                        deadline,
                        progress,
                    };
                    worker(target, config, workload, thread, limits)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker thread panicked"))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut report = RunReport {
        workload,
        target: target.name(),
        threads: config.threads,
        elapsed,
        latencies: BTreeMap::new(),
        misses: 0,
        errors: 0,
        first_error: None,
    };
    for result in results {
        for (kind, h) in result.latencies {
            report
                .latencies
                .entry(kind)
                .or_insert_with(latency_histogram)
                .add(&h)
                .expect("same bounds");
        }
        report.misses += result.misses;
        report.errors += result.errors;
        report.first_error = report.first_error.or(result.first_error);
    }
    report
}

/// When one worker stops, and where it reports progress.
struct Limits<'a> {
    budget: Option<u64>,
    deadline: Option<Instant>,
    progress: Option<&'a AtomicU64>,
}

fn worker(
    target: &dyn Target,
    config: &Config,
    workload: Workload,
    thread: usize,
    limits: Limits<'_>,
) -> ThreadResult {
    let Limits {
        budget,
        deadline,
        progress,
    } = limits;
    let mut generator = OpGenerator::new(config, workload, thread);
    let mut result = ThreadResult {
        latencies: BTreeMap::new(),
        misses: 0,
        errors: 0,
        first_error: None,
    };
    let mut done = 0u64;
    loop {
        if budget.is_some_and(|b| done >= b) {
            break;
        }
        let op = generator.next_op();
        let began = Instant::now();
        if deadline.is_some_and(|d| began >= d) {
            break;
        }
        let outcome = target.execute(&op);
        let nanos = began.elapsed().as_nanos() as u64;
        done += 1;
        if done.is_multiple_of(PROGRESS_BATCH) {
            if let Some(progress) = progress {
                progress.fetch_add(PROGRESS_BATCH, Ordering::Relaxed);
            }
        }
        match outcome {
            Ok(outcome) => {
                result.misses += outcome.misses as u64;
                result
                    .latencies
                    .entry(op.kind())
                    .or_insert_with(latency_histogram)
                    .saturating_record(nanos.clamp(1, MAX_LATENCY_NS));
            }
            Err(e) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    if let Some(progress) = progress {
        progress.fetch_add(done % PROGRESS_BATCH, Ordering::Relaxed);
    }
    result
}

/// Formats a latency in nanoseconds with a readable unit.
pub fn duration(nanos: u64) -> String {
    match nanos {
        0..1_000 => format!("{nanos} ns"),
        1_000..1_000_000 => format!("{:.1} µs", nanos as f64 / 1e3),
        _ => format!("{:.2} ms", nanos as f64 / 1e6),
    }
}

/// One table for one configuration: a row per operation kind and one for all of them.
pub fn format_report(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} on {}, {} thread(s), {:.1} s: {:.0} ops/s{}{}",
        report.workload.name(),
        report.target,
        report.threads,
        report.elapsed.as_secs_f64(),
        report.throughput(),
        if report.misses > 0 {
            format!(", {} misses", report.misses)
        } else {
            String::new()
        },
        match &report.first_error {
            Some(e) => format!(", {} errors (first: {e})", report.errors),
            None => String::new(),
        }
    );
    let _ = writeln!(
        out,
        "  {:<8} {:>10} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "op", "count", "ops/s", "p50", "p95", "p99", "p99.9"
    );
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let overall = report.overall();
    let rows = report
        .latencies
        .iter()
        .map(|(kind, h)| (kind.name(), h))
        .chain((report.latencies.len() > 1).then_some(("all", &overall)));
    for (name, h) in rows {
        let _ = writeln!(
            out,
            "  {:<8} {:>10} {:>12.0} {:>10} {:>10} {:>10} {:>10}",
            name,
            h.len(),
            h.len() as f64 / secs,
            duration(h.value_at_quantile(0.50)),
            duration(h.value_at_quantile(0.95)),
            duration(h.value_at_quantile(0.99)),
            duration(h.value_at_quantile(0.999)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Embedded;

    fn config(threads: usize) -> Config {
        Config {
            record_count: 2_000,
            value_size: 32,
            operation_count: 4_000,
            threads,
            ..Config::default()
        }
    }

    #[test]
    fn load_then_run_counts_every_operation() {
        let target = Embedded::in_memory(16 << 20).unwrap();
        let config = config(3);
        let loaded = load(&target, &config, 100).unwrap();
        assert_eq!(loaded.records, 2_000);
        assert_eq!(target.scan(b"user", 10_000).unwrap(), 2_000);
        let progress = AtomicU64::new(0);
        let report = run_with_progress(
            &target,
            &config,
            Workload::YcsbA,
            Stop::Operations(4_000),
            Some(&progress),
        );
        assert_eq!(report.errors, 0, "{:?}", report.first_error);
        assert_eq!(report.operations(), 4_000);
        assert_eq!(
            progress.load(Ordering::Relaxed),
            4_000,
            "every operation counted once"
        );
        assert_eq!(report.misses, 0, "every read names a loaded record");
        let kinds: Vec<_> = report.latencies.keys().copied().collect();
        assert_eq!(kinds, [OpKind::Read, OpKind::Update]);
        let table = format_report(&report);
        assert!(table.contains("ycsb-a on embedded, 3 thread(s)"), "{table}");
        assert!(
            table.contains("p99.9") && table.contains("\n  all "),
            "{table}"
        );
        target.close().unwrap();
    }

    #[test]
    fn timed_run_stops() {
        let target = Embedded::in_memory(16 << 20).unwrap();
        let config = config(2);
        load(&target, &config, 500).unwrap();
        let report = run(
            &target,
            &config,
            Workload::OltpReadOnly,
            Stop::After(Duration::from_millis(200)),
        );
        assert!(report.elapsed < Duration::from_secs(5));
        assert!(report.operations() > 0);
        assert_eq!(report.errors, 0, "{:?}", report.first_error);
        target.close().unwrap();
    }

    #[test]
    fn durations_pick_a_unit() {
        assert_eq!(duration(999), "999 ns");
        assert_eq!(duration(1_500), "1.5 µs");
        assert_eq!(duration(2_500_000), "2.50 ms");
    }
}
