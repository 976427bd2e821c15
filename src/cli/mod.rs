//! Command-line parsing (clap) and dispatch to one module per command group.
//!
//! Exit status: 0 on success; 1 with a one-line error on stderr; 2 when `kv get` finds no
//! such key.

mod demo;
mod encryption;
mod inspect;
mod key_options;
mod keys;
mod kv;
mod serve;
mod settings;
mod table;
mod transfer;

use clap::{Parser, Subcommand};
use settings::{GlobalOptions, Settings};

/// Strongbox: an encrypted storage engine with MariaDB/MySQL-style data-at-rest encryption.
#[derive(Debug, Parser)]
#[command(name = "strongbox", version, about)]
struct Cli {
    #[command(flatten)]
    global: GlobalOptions,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list and rotate key files (MariaDB file_key_management format).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Create, drop and list tables.
    #[command(subcommand)]
    Table(table::TableCommand),
    /// Read and write keys of a table.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Show page headers and stored bytes of tablespace files (works on a closed database).
    Inspect(inspect::InspectArgs),
    /// Check every page of every tablespace and every tree; exit 1 listing what is bad.
    Verify(inspect::VerifyArgs),
    /// Serve the database over the Redis protocol (127.0.0.1:6380; makes a key file in
    /// ./strongbox-keys/ on first start).
    Serve(serve::ServeArgs),
    /// Encryption status per tablespace: space_id, name, scheme, key_id,
    /// current_key_version, min_key_version, rotating, pages_done, pages_total.
    Status(encryption::StatusArgs),
    /// Export a table for another database: <table>.sbd, <table>.sbmeta and, if encrypted,
    /// the transfer key <table>.sbtk (carry it separately).
    Export(transfer::ExportArgs),
    /// Import a table exported by `strongbox export`, re-encrypted under this database's
    /// keys; deletes the transfer key when done.
    Import(transfer::ImportArgs),
    /// Show encryption at work on built-in defaults: makes a key file and a database in a
    /// temporary directory, writes, reads back, and shows the ciphertext on disk.
    Demo(demo::DemoArgs),
    /// Run the workload generator (the `strongbox-workload` tool: YCSB workloads, the
    /// Percona encryption-overhead scenarios); `strongbox workload --help` for its flags.
    #[command(disable_help_flag = true)]
    Workload {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// How a command ends when it does not succeed.
#[derive(Debug)]
pub enum Exit {
    /// A one-line error for stderr; exit status 1.
    Error(String),
    /// `kv get` found no such key; exit status 2.
    NotFound,
}

impl<E: std::fmt::Display> From<E> for Exit {
    fn from(error: E) -> Exit {
        Exit::Error(error.to_string())
    }
}

pub type CliResult = Result<(), Exit>;

/// Parses the command line, runs the command and returns the process exit status.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version: print and succeed.
            let _ = err.print();
            return 0;
        }
        Err(err) => {
            let rendered = err.to_string();
            if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                // clap rendered the whole help; its usage line is the one-line answer.
                let usage = rendered
                    .lines()
                    .find_map(|line| line.trim().strip_prefix("Usage: "))
                    .unwrap_or("strongbox <COMMAND>");
                eprintln!("strongbox: a command is missing: usage: {usage} (try --help)");
                return 1;
            }
            // clap's message runs up to the first blank line; some messages continue on
            // indented lines (the missing arguments), so join those rather than cut them.
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|line| !line.is_empty())
                .collect();
            let message = message.join(" ");
            let message = message.trim_start_matches("error: ");
            eprintln!(
                "strongbox: {} (try --help)",
                if message.is_empty() {
                    "invalid arguments"
                } else {
                    message
                }
            );
            return 1;
        }
    };
    if let Command::Workload { args } = cli.command {
        // The generator makes its own databases; no settings or key files apply.
        let program = std::ffi::OsString::from("strongbox workload");
        return i32::from(strongbox_bench::workload::cli::run_from(
            std::iter::once(program).chain(args),
        ));
    }
    let result = Settings::resolve(&cli.global)
        .map_err(Exit::Error)
        .and_then(|settings| match cli.command {
            Command::Keys(command) => keys::run(command, &settings),
            Command::Table(command) => table::run(command, &settings),
            Command::Kv(command) => kv::run(command, &settings),
            Command::Inspect(args) => inspect::run_inspect(args, &settings),
            Command::Verify(args) => inspect::run_verify(args, &settings),
            Command::Status(args) => encryption::run_status(args, &settings),
            Command::Serve(args) => serve::run(args, &settings),
            Command::Export(args) => transfer::run_export(args, &settings),
            Command::Import(args) => transfer::run_import(args, &settings),
            Command::Demo(args) => demo::run(args),
            Command::Workload { .. } => unreachable!("dispatched above"),
        });
    match result {
        Ok(()) => 0,
        Err(Exit::NotFound) => 2,
        Err(Exit::Error(message)) => {
            // One line: an error's text never needs more.
            eprintln!("strongbox: {}", message.replace('\n', " "));
            1
        }
    }
}

/// Opens the database the settings describe, printing its warnings.
pub fn open_db(settings: &Settings) -> Result<strongbox_engine::Db, Exit> {
    let db = strongbox_engine::Db::open(&settings.data, settings.options())?;
    for warning in db.warnings() {
        eprintln!("strongbox: {warning}");
    }
    Ok(db)
}
