//! `strongbox keys generate | list | rotate` (rotate `--data` also applies the new version
//! to a database: `encryption.rs`).

use super::encryption::apply_rotation;
use super::key_options::{key_file_source, print_diagnostics, required_key_file};
use super::settings::Settings;
use super::CliResult;
use clap::{Subcommand, ValueEnum};
use std::path::PathBuf;
use strongbox_engine::RotationPolicy;
use strongbox_keyring::keyfile::KeyFile;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new key file with one random key per id (mode 0600; never overwrites).
    Generate {
        /// Where to write the key file.
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated key ids, e.g. 1,2,100 (1 = system, 2 = temporary).
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u32>,
        /// Key size.
        #[arg(long, default_value_t = 256, value_parser = parse_bits)]
        bits: usize,
        /// Write `id;version;hex` lines instead of `id;hex`.
        #[arg(long)]
        with_versions: bool,
    },
    /// List the keys of a key file: id, version and size, never key bytes.
    List {
        /// `table` for people, `tsv` (id, version, bits; no header) for scripts.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Add a new random version of one key id, atomically; prints `id<TAB>version`.
    /// With --data, also apply it to that database (see --policy).
    Rotate {
        /// The key id to rotate.
        #[arg(long)]
        id: u32,
        /// Size of the new version (default: same as the current version).
        #[arg(long, value_parser = parse_bits)]
        bits: Option<usize>,
        /// With --data: `reencrypt` (new data keys; pages re-encrypted in the background)
        /// or `rewrap` (data keys wrapped again under the new version; no page changes).
        #[arg(long)]
        policy: Option<RotationPolicy>,
        /// With --data: wait (with a progress bar) until every page carries the new version.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Tsv,
}

/// True if `dir` holds a Strongbox database (its system tablespace).
fn holds_database(dir: &std::path::Path) -> bool {
    use strongbox_engine::space::{file_name, SYSTEM_SPACE_ID};
    dir.join(file_name(SYSTEM_SPACE_ID)).exists()
}

fn parse_bits(text: &str) -> Result<usize, String> {
    match text {
        "128" | "192" | "256" => Ok(text.parse().expect("digits")),
        _ => Err(format!("{text:?} is not a key size; use 128, 192 or 256")),
    }
}

pub fn run(command: KeysCommand, settings: &Settings) -> CliResult {
    match command {
        KeysCommand::Generate {
            out,
            ids,
            bits,
            with_versions,
        } => {
            let source = key_file_source(settings, out)?;
            let keys = KeyFile::generate(&ids, bits, with_versions)?;
            source.create(&keys)?;
            eprintln!(
                "strongbox: wrote {} key(s) to {}{}; back it up and keep it off the data volume",
                ids.len(),
                source.path.display(),
                if source.file_key.is_some() {
                    " (encrypted)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        KeysCommand::List { format } => {
            let loaded = required_key_file(settings)?.load()?;
            print_diagnostics(&loaded.diagnostics);
            let mut rows: Vec<(u32, u32, usize)> = loaded
                .keys
                .entries()
                .iter()
                .map(|e| (e.id, e.version, e.bits()))
                .collect();
            rows.sort_unstable();
            if format == Format::Table {
                println!("{:>10}  {:>7}  {:>4}", "id", "version", "bits");
            }
            for (id, version, bits) in rows {
                match format {
                    Format::Tsv => println!("{id}\t{version}\t{bits}"),
                    Format::Table => println!("{id:>10}  {version:>7}  {bits:>4}"),
                }
            }
            Ok(())
        }
        KeysCommand::Rotate {
            id,
            bits,
            policy,
            wait,
        } => {
            let source = required_key_file(settings)?;
            let loaded = source.load()?;
            print_diagnostics(&loaded.diagnostics);
            // Applied to the database in --data when there is one there; asking for a
            // policy or a wait without one is an error, before the key file changes.
            let database = settings.data_given && holds_database(&settings.data);
            if !database && (wait || policy.is_some()) {
                return Err(format!(
                    "--policy and --wait apply the rotation to a database, and {} holds none \
                     (give --data DIR)",
                    settings.data.display()
                )
                .into());
            }
            let version = source.rotate(id, bits)?;
            println!("{id}\t{version}");
            if database {
                apply_rotation(settings, id, policy.unwrap_or_default(), wait)?;
            }
            Ok(())
        }
    }
}
