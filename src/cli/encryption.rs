//! `strongbox status`, and what `keys rotate --data` and `table alter --wait` share:
//! applying a rotation to a database and waiting for the background re-encryption with a
//! progress bar.

use super::settings::Settings;
use super::{open_db, CliResult, Exit};
use clap::{Args, ValueEnum};
use std::io::IsTerminal;
use strongbox_engine::{Db, RotationPolicy, STATUS_COLUMNS};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// `table` for people (with a header), `tsv` for scripts (no header).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Tsv,
}

/// `strongbox status`: one row per tablespace, the columns of
/// `information_schema.INNODB_TABLESPACES_ENCRYPTION`.
pub fn run_status(args: StatusArgs, settings: &Settings) -> CliResult {
    let db = open_db(settings)?;
    let rows = db.encryption_status()?;
    db.close()?;
    let widths = [10, 24, 8, 6, 19, 15, 8, 10, 11];
    let line = |fields: &[String]| {
        fields
            .iter()
            .zip(widths)
            .map(|(field, width)| format!("{field:<width$}"))
            .collect::<Vec<_>>()
            .join(" ")
            .trim_end()
            .to_string()
    };
    if args.format == Format::Table {
        let header: Vec<String> = STATUS_COLUMNS.iter().map(|c| c.to_string()).collect();
        println!("{}", line(&header));
    }
    for row in rows {
        match args.format {
            Format::Tsv => println!("{row}"),
            Format::Table => println!("{}", line(&row.fields())),
        }
    }
    Ok(())
}

/// Applies the newest version of key `id` to the database in `settings.data`.
pub fn apply_rotation(
    settings: &Settings,
    id: u32,
    policy: RotationPolicy,
    wait: bool,
) -> CliResult {
    let db = open_db(settings)?;
    let report = db.rotate_key(id, policy)?;
    eprintln!(
        "strongbox: key {id} version {}: {} tablespace(s) {}{}",
        report.version,
        report.spaces.len(),
        match policy {
            RotationPolicy::Reencrypt => "re-encrypting",
            RotationPolicy::Rewrap => "rewrapped",
        },
        if report.log_rewrapped {
            "; redo log key rewrapped"
        } else {
            ""
        }
    );
    if wait {
        wait_with_progress(&db)?;
    }
    db.close()?;
    Ok(())
}

/// Waits for every re-encryption pass, with a progress bar on a terminal.
pub fn wait_with_progress(db: &Db) -> Result<(), Exit> {
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "re-encrypting {bar:40} {pos}/{len} pages {per_sec} eta {eta}",
            )
            .expect("a valid template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut largest = 0;
    db.wait_for_encryption(|progress| {
        largest = largest.max(progress.pages_total);
        bar.set_length(largest);
        bar.set_position(progress.pages_done.min(largest));
    })?;
    bar.finish_and_clear();
    eprintln!("strongbox: every page carries its tablespace's current key version");
    Ok(())
}
