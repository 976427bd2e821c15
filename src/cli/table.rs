//! `strongbox table create | alter | drop | list`.

use super::encryption::wait_with_progress;
use super::settings::Settings;
use super::{open_db, CliResult};
use clap::{Subcommand, ValueEnum};
use strongbox_engine::{Encrypted, TableOptions};

#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Create a table in its own tablespace.
    Create {
        name: String,
        /// yes | no | default (follow encrypt_tables).
        #[arg(long, default_value = "default")]
        encrypted: Encrypted,
        /// Keyring key id (default: default_encryption_key_id).
        #[arg(long)]
        key_id: Option<u32>,
    },
    /// Change a table's encryption online; the pages move in the background.
    Alter {
        name: String,
        /// yes | no | default (follow encrypt_tables).
        #[arg(long)]
        encrypted: Option<Encrypted>,
        /// Keyring key id (default: the table's current one, else default_encryption_key_id).
        #[arg(long)]
        key_id: Option<u32>,
        /// Wait, with a progress bar, until every page is re-encrypted.
        #[arg(long)]
        wait: bool,
    },
    /// Drop a table and delete its file.
    Drop { name: String },
    /// List tables: name, space id, encrypted, key id, key version, pages.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Tsv,
}

pub fn run(command: TableCommand, settings: &Settings) -> CliResult {
    let db = open_db(settings)?;
    match command {
        TableCommand::Create {
            name,
            encrypted,
            key_id,
        } => {
            let mut options = TableOptions::default().encrypted(encrypted);
            if let Some(key_id) = key_id {
                options = options.encryption_key_id(key_id);
            }
            let table = db.create_table(&name, options)?;
            let info = table.info();
            eprintln!(
                "strongbox: created table {name} (space {}, {})",
                info.space_id,
                describe_encryption(&info)
            );
        }
        TableCommand::Alter {
            name,
            encrypted,
            key_id,
            wait,
        } => {
            let info = db.table(&name)?.info();
            let encrypted = encrypted.unwrap_or(if info.encrypted {
                Encrypted::Yes
            } else {
                Encrypted::No
            });
            let mut options = TableOptions::default().encrypted(encrypted);
            let key_id =
                key_id.or((info.encrypted && encrypted != Encrypted::No).then_some(info.key_id));
            if let Some(key_id) = key_id {
                options = options.encryption_key_id(key_id);
            }
            db.alter_table(&name, options)?;
            eprintln!("strongbox: altered table {name}; its pages move in the background");
            if wait {
                wait_with_progress(&db)?;
            }
        }
        TableCommand::Drop { name } => db.drop_table(&name)?,
        TableCommand::List { format } => {
            let tables = db.tables()?;
            if format == Format::Table {
                println!(
                    "{:<24} {:>8} {:>9} {:>6} {:>11} {:>8}",
                    "name", "space_id", "encrypted", "key_id", "key_version", "pages"
                );
            }
            for info in tables {
                let encrypted = if info.encrypted { "yes" } else { "no" };
                match format {
                    Format::Tsv => println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        info.name,
                        info.space_id,
                        encrypted,
                        info.key_id,
                        info.key_version,
                        info.pages
                    ),
                    Format::Table => println!(
                        "{:<24} {:>8} {:>9} {:>6} {:>11} {:>8}",
                        info.name,
                        info.space_id,
                        encrypted,
                        info.key_id,
                        info.key_version,
                        info.pages
                    ),
                }
            }
        }
    }
    db.close()?;
    Ok(())
}

/// `encrypted with key K version V`, or `not encrypted`, for messages.
pub fn describe_encryption(info: &strongbox_engine::TableInfo) -> String {
    if info.encrypted {
        format!(
            "encrypted with key {} version {}",
            info.key_id, info.key_version
        )
    } else {
        "not encrypted".to_string()
    }
}
