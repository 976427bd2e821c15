//! `strongbox export` and `strongbox import`: moving a table between databases with a
//! transfer key (`engine/src/transfer.rs`, `docs/transfer.md`).
//!
//! ```text
//! strongbox export --data A --keyfile a-keys.txt --table orders --out /media/x
//!     writes /media/x/orders.sbd, orders.sbmeta and (encrypted tables) orders.sbtk
//! strongbox import --data B --keyfile b-keys.txt --from /media/x [--name orders2]
//!     re-encrypts the pages under B's keys, then deletes orders.sbtk
//! ```

use super::encryption::wait_with_progress;
use super::settings::Settings;
use super::{open_db, CliResult};
use clap::Args;
use std::path::PathBuf;
use strongbox_engine::ImportOptions;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The table to export.
    #[arg(long)]
    table: String,
    /// Directory to write <table>.sbd, <table>.sbmeta and <table>.sbtk into (created).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// First wait (with a progress bar) for re-encryption passes to finish; without it an
    /// export of a table being re-encrypted is refused.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Directory an export wrote.
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// Which export of the directory, by table name (needed only when it holds several).
    #[arg(long)]
    table: Option<String>,
    /// Name of the new table (default: the exported name).
    #[arg(long)]
    name: Option<String>,
    /// Keyring key id to encrypt the imported table with (default: the exported key id).
    #[arg(long)]
    key_id: Option<u32>,
}

/// `strongbox export`.
pub fn run_export(args: ExportArgs, settings: &Settings) -> CliResult {
    let db = open_db(settings)?;
    if args.wait {
        wait_with_progress(&db)?;
    }
    let report = db.export_table(&args.table, &args.out)?;
    db.close()?;
    eprintln!(
        "strongbox: exported table {} ({} pages, {}) to {}",
        report.table,
        report.pages,
        if report.encrypted {
            format!("encrypted with key {}", report.key_id)
        } else {
            "not encrypted".to_string()
        },
        args.out.display()
    );
    if let Some(key) = &report.transfer_key_file {
        eprintln!(
            "strongbox: {} decrypts the export: carry it to the destination separately from \
             the other two files; the import deletes it",
            key.display()
        );
    }
    Ok(())
}

/// `strongbox import`.
pub fn run_import(args: ImportArgs, settings: &Settings) -> CliResult {
    let db = open_db(settings)?;
    let options = ImportOptions {
        table: args.table,
        name: args.name,
        key_id: args.key_id,
    };
    let report = db.import_table_with(&args.from, &options)?;
    db.close()?;
    let info = &report.info;
    eprintln!(
        "strongbox: imported table {} as {} (space {}, {} pages, {})",
        report.source_table,
        info.name,
        info.space_id,
        info.pages,
        super::table::describe_encryption(info)
    );
    if let Some(key) = &report.transfer_key_deleted {
        eprintln!("strongbox: deleted the transfer key {}", key.display());
    }
    for warning in &report.warnings {
        eprintln!("strongbox: warning: {warning}");
    }
    Ok(())
}
