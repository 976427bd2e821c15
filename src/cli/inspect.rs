//! `strongbox inspect` and `strongbox verify`: looking at the files themselves.

use super::key_options::{key_file_source, print_diagnostics};
use super::settings::Settings;
use super::{open_db, CliResult, Exit};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::sync::Arc;
use strongbox_engine::inspect::{inspect_file, PageStatus, SpaceReport};
use strongbox_engine::io::StdVfs;
use strongbox_keyring::provider::{FileKeyProvider, KeyProvider};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Only this table's file (needs the keys to read the catalog).
    #[arg(long)]
    table: Option<String>,
    /// Only this page.
    #[arg(long)]
    page: Option<u32>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Tsv,
}

fn keyring(settings: &Settings) -> Result<Option<Arc<dyn KeyProvider>>, Exit> {
    let Some(path) = &settings.keyfile else {
        return Ok(None);
    };
    let (provider, diagnostics) = FileKeyProvider::open(key_file_source(settings, path.clone())?)?;
    print_diagnostics(&diagnostics);
    Ok(Some(Arc::new(provider)))
}

/// The tablespace files of the data directory, system space first.
fn space_files(settings: &Settings) -> Result<Vec<PathBuf>, Exit> {
    let dir = &settings.data;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("data directory {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "sbd"))
        .collect();
    files.sort_by_key(|path| {
        (
            path.file_name() != Some("system.sbd".as_ref()),
            path.clone(),
        )
    });
    if files.is_empty() {
        return Err(Exit::Error(format!(
            "{} holds no Strongbox tablespace files",
            dir.display()
        )));
    }
    Ok(files)
}

pub fn run_inspect(args: InspectArgs, settings: &Settings) -> CliResult {
    let keyring = keyring(settings)?;
    let files = match &args.table {
        None => space_files(settings)?,
        Some(name) => {
            let db = open_db(settings)?;
            let space_id = db.table(name)?.space_id();
            db.close()?;
            vec![settings
                .data
                .join(strongbox_engine::space::file_name(space_id))]
        }
    };
    for path in files {
        let report = inspect_file(&StdVfs, &path, keyring.as_deref(), args.page)?;
        print_report(&report, args.format);
    }
    Ok(())
}

fn print_report(report: &SpaceReport, format: Format) {
    let file = report
        .path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let header = &report.header;
    if format == Format::Table {
        let encryption = match &header.encryption {
            None => "not encrypted".to_string(),
            Some(e) => format!(
                "encrypted {} with key id {} version {} (min {})",
                e.algorithm, e.key_id, e.current_version, e.min_version
            ),
        };
        println!(
            "== {file}: space {} ({:?}), page size {}, {} pages, {} free; {encryption}",
            header.space_id, header.kind, report.page_size, header.page_count, header.free_count
        );
        for error in &report.key_errors {
            println!("   key problem: {error}");
        }
        println!(
            "{:>6}  {:<12} {:>10} {:>6} {:>7}  {:<8} {:<34} status",
            "page", "type", "lsn", "key_id", "key_ver", "checksum", "stored bytes 48..80"
        );
    }
    for page in &report.pages {
        let (page_type, lsn, key_id, key_version) = match &page.header {
            Some(h) => (format!("{:?}", h.page_type), h.lsn, h.key_id, h.key_version),
            None => ("-".to_string(), 0, 0, 0),
        };
        let checksum = if page.checksum_ok {
            "ok"
        } else if page.status == PageStatus::Empty {
            "-"
        } else {
            "BAD"
        };
        let status = match &page.status {
            PageStatus::Ok => "ok".to_string(),
            PageStatus::Empty => "empty (never written)".to_string(),
            PageStatus::NotDecrypted(why) => format!("not decrypted: {why}"),
            PageStatus::Bad(why) => format!("BAD: {why}"),
        };
        let prefix: String = page
            .stored_prefix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        match format {
            Format::Tsv => println!(
                "{file}\t{}\t{page_type}\t{lsn}\t{key_id}\t{key_version}\t{checksum}\t{status}\t{prefix}",
                page.page_no
            ),
            Format::Table => println!(
                "{:>6}  {:<12} {:>10} {:>6} {:>7}  {:<8} {:<34} {status}",
                page.page_no, page_type, lsn, key_id, key_version, checksum, &prefix[..prefix.len().min(32)]
            ),
        }
    }
}

pub fn run_verify(_args: VerifyArgs, settings: &Settings) -> CliResult {
    let keyring = keyring(settings)?;
    let mut bad = Vec::new();
    let mut checked = 0usize;
    for path in space_files(settings)? {
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if file == "temp.sbd" {
            continue; // recreated at every start; holds nothing to keep
        }
        let report = inspect_file(&StdVfs, &path, keyring.as_deref(), None)?;
        for error in &report.key_errors {
            bad.push(format!("{file}: {error}"));
        }
        for page in &report.pages {
            checked += 1;
            match &page.status {
                PageStatus::Bad(why) => bad.push(format!("{file} page {}: {why}", page.page_no)),
                PageStatus::NotDecrypted(why) => {
                    bad.push(format!("{file} page {}: not checked: {why}", page.page_no))
                }
                PageStatus::Ok | PageStatus::Empty => {}
            }
        }
    }
    if bad.is_empty() {
        let db = open_db(settings)?;
        let outcome = db.verify();
        db.close()?;
        match outcome {
            Ok(report) => {
                for (name, stats) in report.trees {
                    println!("tree {name}: {} entries, {} leaves, {} branches, {} overflow pages, {} free pages, depth {}", stats.entries, stats.leaves, stats.branches, stats.overflow_pages, stats.free_pages, stats.depth);
                }
            }
            Err(e) => bad.push(e.to_string()),
        }
    }
    for line in &bad {
        println!("{line}");
    }
    if bad.is_empty() {
        println!("ok: {checked} pages checked");
        Ok(())
    } else {
        Err(Exit::Error(format!(
            "verify found {} problem(s)",
            bad.len()
        )))
    }
}
