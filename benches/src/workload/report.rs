//! What an experiment prints and writes: the comparison tables, `--out` files and
//! `--plot` charts, all from [`Measurement`] rows.
//!
//! Per workload, two tables:
//!
//! ```text
//! oltp-read-only: ops/s, median of 3 rounds
//!   threads    strongbox  strongbox-plain  enc/plain  overhead
//!         1        1,234            1,240      0.995      0.5%
//! oltp-read-only: resources
//!   target           load rec/s   on disk    peak RSS    growth  budget
//!   strongbox           251,000   151.2 MiB   40.1 MiB  36.0 MiB  ok (≤ 80.0 MiB)
//! ```
//!
//! `enc/plain` is the encrypted throughput over the plain one at the same thread count
//! (1.000 = free; Percona's "overhead" is `1 - enc/plain`). It appears for every
//! encrypted Strongbox label when `strongbox-plain` ran too. The budget is the memory
//! promise of the engine: what a configuration adds to the process's resident memory at
//! its peak (`growth`) stays within `buffer_pool_size` + 64 MiB.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::experiment::Measurement;
use super::plot::{plot_throughput, Series};
use super::resources::format_bytes;

/// What the engine may use beyond its buffer pool.
pub const MEMORY_SLACK_BYTES: u64 = 64 << 20;

/// The label of unencrypted Strongbox, the denominator of every ratio.
pub const PLAIN_LABEL: &str = "strongbox-plain";

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The distinct values of `items`, in first-seen order (the order the plan named them).
fn first_seen<'a>(items: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for item in items {
        if !seen.contains(item) {
            seen.push(item.clone());
        }
    }
    seen
}

/// Target labels in first-seen order.
fn labels(rows: &[&Measurement]) -> Vec<String> {
    first_seen(rows.iter().map(|r| &r.target))
}

/// Workloads in first-seen order.
fn workloads(rows: &[Measurement]) -> Vec<String> {
    first_seen(rows.iter().map(|r| &r.workload))
}

/// Median ops/s per (target, threads) over rounds.
fn median_throughput(rows: &[&Measurement]) -> BTreeMap<(String, usize), f64> {
    let mut samples: BTreeMap<(String, usize), Vec<f64>> = BTreeMap::new();
    for row in rows {
        samples
            .entry((row.target.clone(), row.threads))
            .or_default()
            .push(row.ops_per_sec);
    }
    samples
        .into_iter()
        .filter_map(|(k, v)| median(v).map(|m| (k, m)))
        .collect()
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The encrypted Strongbox labels that have a plain counterpart in `labels`.
fn encrypted_labels(labels: &[String]) -> Vec<&String> {
    if !labels.iter().any(|l| l == PLAIN_LABEL) {
        return Vec::new();
    }
    labels
        .iter()
        .filter(|l| l.starts_with("strongbox") && *l != PLAIN_LABEL)
        .collect()
}

/// The throughput table of one workload: a row per thread count, a column per target,
/// and ratio columns for encrypted Strongbox against plain.
pub fn throughput_table(rows: &[Measurement], workload: &str) -> String {
    let rows: Vec<&Measurement> = rows.iter().filter(|r| r.workload == workload).collect();
    let labels = labels(&rows);
    let medians = median_throughput(&rows);
    let rounds = rows.iter().map(|r| r.round).max().unwrap_or(1);
    let mut threads: Vec<usize> = rows.iter().map(|r| r.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    let encrypted = encrypted_labels(&labels);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "{workload}: ops/s{}",
        if rounds > 1 {
            format!(", median of {rounds} rounds")
        } else {
            String::new()
        }
    );
    let width = |label: &str| label.len().max(11);
    let _ = write!(out, "  {:>7}", "threads");
    for label in &labels {
        let _ = write!(out, "  {:>w$}", label, w = width(label));
    }
    for label in &encrypted {
        let name = ratio_name(label);
        let _ = write!(out, "  {:>w$}  {:>8}", name, "overhead", w = name.len());
    }
    out.push('\n');
    for &t in &threads {
        let _ = write!(out, "  {t:>7}");
        for label in &labels {
            let cell = medians
                .get(&(label.clone(), t))
                .map_or("-".to_string(), |v| thousands(*v));
            let _ = write!(out, "  {:>w$}", cell, w = width(label));
        }
        for label in &encrypted {
            let name = ratio_name(label);
            let ratio = ratio(&medians, label, t);
            let (r, o) = match ratio {
                Some(r) => (format!("{r:.3}"), format!("{:.1}%", (1.0 - r) * 100.0)),
                None => ("-".to_string(), "-".to_string()),
            };
            let _ = write!(out, "  {:>w$}  {:>8}", r, o, w = name.len());
        }
        out.push('\n');
    }
    out
}

fn ratio_name(label: &str) -> String {
    match label.strip_prefix("strongbox-") {
        Some(algorithm) => format!("{algorithm}/plain"),
        None => "enc/plain".to_string(),
    }
}

/// Encrypted over plain throughput at `threads`.
fn ratio(medians: &BTreeMap<(String, usize), f64>, label: &str, threads: usize) -> Option<f64> {
    let enc = medians.get(&(label.to_string(), threads))?;
    let plain = medians.get(&(PLAIN_LABEL.to_string(), threads))?;
    (*plain > 0.0).then(|| enc / plain)
}

/// Whether a row kept within the memory budget: what the configuration added to the
/// process at its peak ([`Measurement::rss_growth_bytes`]) within the pool + slack.
/// `None` where no budget applies (peers, servers, an in-memory file system whose files
/// live in RAM by design).
pub fn within_budget(row: &Measurement) -> Option<bool> {
    let pool = row.buffer_pool_bytes?;
    row.disk_bytes_after_load?;
    Some(row.rss_growth_bytes()? <= pool + MEMORY_SLACK_BYTES)
}

/// The resources table of one workload: per target, the load rate, bytes on disk, the
/// peak resident memory over its whole sweep, the budget check and errors.
pub fn resources_table(rows: &[Measurement], workload: &str) -> String {
    let rows: Vec<&Measurement> = rows.iter().filter(|r| r.workload == workload).collect();
    let mut out = String::new();
    let _ = writeln!(out, "{workload}: resources (worst round)");
    let _ = writeln!(
        out,
        "  {:<22} {:>12} {:>11} {:>11} {:>11}  {:<20} {:>7}",
        "target", "load rec/s", "on disk", "peak RSS", "growth", "budget", "errors"
    );
    for label in labels(&rows) {
        let mine: Vec<&&Measurement> = rows.iter().filter(|r| r.target == label).collect();
        let load = median(mine.iter().filter_map(|r| r.load_records_per_sec).collect());
        let disk = mine.iter().filter_map(|r| r.disk_bytes_after_load).max();
        let peak = mine.iter().filter_map(|r| r.peak_rss_bytes).max();
        let growth = mine.iter().filter_map(|r| r.rss_growth_bytes()).max();
        let errors: u64 = mine.iter().map(|r| r.errors).sum();
        let budget = match mine
            .iter()
            .map(|r| within_budget(r))
            .collect::<Option<Vec<_>>>()
        {
            Some(checks) => {
                let limit = mine[0].buffer_pool_bytes.unwrap_or(0) + MEMORY_SLACK_BYTES;
                let verdict = if checks.iter().all(|ok| *ok) {
                    "ok"
                } else {
                    "OVER"
                };
                format!("{verdict} (≤ {})", format_bytes(limit))
            }
            None => "n/a".to_string(),
        };
        let _ = writeln!(
            out,
            "  {:<22} {:>12} {:>11} {:>11} {:>11}  {:<20} {:>7}",
            label,
            load.map_or("-".to_string(), thousands),
            disk.map_or("-".to_string(), format_bytes),
            peak.map_or("-".to_string(), format_bytes),
            growth.map_or("-".to_string(), format_bytes),
            budget,
            errors,
        );
    }
    if let Some(error) = rows.iter().find_map(|r| r.first_error.as_ref()) {
        let _ = writeln!(out, "  first error: {error}");
    }
    out
}

/// Every workload's two tables.
pub fn summary(rows: &[Measurement]) -> String {
    let mut out = String::new();
    for workload in workloads(rows) {
        out.push_str(&throughput_table(rows, &workload));
        out.push('\n');
        out.push_str(&resources_table(rows, &workload));
        out.push('\n');
    }
    out
}

/// Writes every row to `path`: JSON (an array of objects) or CSV (a header and a line
/// per row), chosen by the extension.
pub fn write_rows(path: &Path, rows: &[Measurement]) -> Result<(), String> {
    let shown = path.display();
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => {
            let file = std::fs::File::create(path).map_err(|e| format!("{shown}: {e}"))?;
            serde_json::to_writer_pretty(std::io::BufWriter::new(file), rows)
                .map_err(|e| format!("{shown}: {e}"))
        }
        Some("csv") => {
            let mut writer = csv::Writer::from_path(path).map_err(|e| format!("{shown}: {e}"))?;
            for row in rows {
                writer.serialize(row).map_err(|e| format!("{shown}: {e}"))?;
            }
            writer.flush().map_err(|e| format!("{shown}: {e}"))
        }
        _ => Err(format!("{shown}: --out takes a .json or .csv file name")),
    }
}

/// The chart file of `workload`: `path` itself when there is one workload, else
/// `stem-workload.ext` beside it.
pub fn plot_path(path: &Path, workload: &str, workloads: usize) -> PathBuf {
    if workloads <= 1 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("plot");
    let name = match path.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{stem}-{workload}.{ext}"),
        None => format!("{stem}-{workload}"),
    };
    path.with_file_name(name)
}

/// Draws throughput against threads, a line per target, one chart per workload; returns
/// the files written.
pub fn write_plots(path: &Path, title: &str, rows: &[Measurement]) -> Result<Vec<PathBuf>, String> {
    let names = workloads(rows);
    let mut written = Vec::new();
    for workload in &names {
        let mine: Vec<&Measurement> = rows.iter().filter(|r| &r.workload == workload).collect();
        let medians = median_throughput(&mine);
        let series: Vec<Series> = labels(&mine)
            .into_iter()
            .map(|label| Series {
                points: medians
                    .iter()
                    .filter(|((l, _), _)| *l == label)
                    .map(|((_, threads), ops)| (*threads, *ops))
                    .collect(),
                label,
            })
            .collect();
        let file = plot_path(path, workload, names.len());
        plot_throughput(&file, &format!("{title}: {workload}"), &series)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        written.push(file);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: &str, threads: usize, ops: f64, round: usize) -> Measurement {
        Measurement {
            scenario: "test".into(),
            round,
            workload: "ycsb-c".into(),
            target: target.into(),
            encryption: if target == PLAIN_LABEL { "off" } else { "on" }.into(),
            algorithm: None,
            threads,
            records: 10,
            value_size: 100,
            buffer_pool_bytes: Some(16 << 20),
            flush_log_at_commit: 2,
            operations: 100,
            seconds: 1.0,
            ops_per_sec: ops,
            p50_us: 1.0,
            p95_us: 2.0,
            p99_us: 3.0,
            p999_us: 4.0,
            misses: 0,
            errors: 0,
            first_error: None,
            load_records_per_sec: Some(1000.0),
            disk_bytes_after_load: Some(1 << 20),
            baseline_rss_bytes: Some(10 << 20),
            peak_rss_bytes: Some(40 << 20),
        }
    }

    fn sample() -> Vec<Measurement> {
        vec![
            row("strongbox", 1, 990.0, 1),
            row(PLAIN_LABEL, 1, 1000.0, 1),
            row("strongbox", 1, 950.0, 2),
            row(PLAIN_LABEL, 1, 1000.0, 2),
            row("strongbox", 1, 1010.0, 3),
            row(PLAIN_LABEL, 1, 1000.0, 3),
            row("strongbox", 4, 3000.0, 1),
        ]
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }

    #[test]
    fn throughput_table_takes_medians_and_ratios() {
        let table = throughput_table(&sample(), "ycsb-c");
        assert!(
            table.starts_with("ycsb-c: ops/s, median of 3 rounds"),
            "{table}"
        );
        // threads 1: median 990 vs 1000 → 0.990, 1.0 % overhead.
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with("1 "))
            .unwrap();
        assert!(line.contains("990") && line.contains("1,000"), "{line}");
        assert!(line.contains("0.990") && line.contains("1.0%"), "{line}");
        // threads 4: no plain run, so no ratio.
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with("4 "))
            .unwrap();
        assert!(
            line.contains("3,000") && line.matches(" -").count() == 3,
            "{line}"
        );
    }

    #[test]
    fn no_ratio_without_a_plain_run() {
        let rows = vec![row("strongbox", 1, 10.0, 1), row("redb", 1, 20.0, 1)];
        let table = throughput_table(&rows, "ycsb-c");
        assert!(!table.contains("enc/plain"), "{table}");
    }

    #[test]
    fn budget_is_pool_plus_slack() {
        let mut r = row("strongbox", 1, 1.0, 1);
        assert_eq!(within_budget(&r), Some(true));
        // The budget is on growth: a large baseline left by others does not count.
        r.baseline_rss_bytes = Some(500 << 20);
        r.peak_rss_bytes = Some((500 << 20) + (16 << 20) + MEMORY_SLACK_BYTES);
        assert_eq!(within_budget(&r), Some(true));
        r.peak_rss_bytes = Some((500 << 20) + (16 << 20) + MEMORY_SLACK_BYTES + 1);
        assert_eq!(within_budget(&r), Some(false));
        r.disk_bytes_after_load = None; // in-memory files
        assert_eq!(within_budget(&r), None);
        let table = resources_table(&sample(), "ycsb-c");
        assert!(table.contains("ok (≤ 80.0 MiB)"), "{table}");
    }

    #[test]
    fn rows_round_trip_through_json_and_csv() {
        let dir = tempfile::tempdir().unwrap();
        let rows = sample();
        let json = dir.path().join("r.json");
        write_rows(&json, &rows).unwrap();
        let parsed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), rows.len());
        assert_eq!(parsed[0]["target"], "strongbox");
        let csv = dir.path().join("r.csv");
        write_rows(&csv, &rows).unwrap();
        let text = std::fs::read_to_string(&csv).unwrap();
        assert_eq!(text.lines().count(), rows.len() + 1);
        assert!(
            text.starts_with("scenario,round,workload,target,"),
            "{text}"
        );
        let err = write_rows(&dir.path().join("r.txt"), &rows).unwrap_err();
        assert!(err.contains(".json or .csv"), "{err}");
    }

    #[test]
    fn plot_paths_per_workload() {
        let p = Path::new("/tmp/out.svg");
        assert_eq!(plot_path(p, "ycsb-a", 1), PathBuf::from("/tmp/out.svg"));
        assert_eq!(
            plot_path(p, "ycsb-a", 2),
            PathBuf::from("/tmp/out-ycsb-a.svg")
        );
    }
}
