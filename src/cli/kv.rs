//! `strongbox kv put | get | del | scan | load`.
//!
//! Keys and values are taken and printed as UTF-8 text, byte for byte. With `--hex`, every
//! key and value on the command line, in a load file and in the output is hexadecimal
//! instead — the way to handle binary data (and values with tabs or newlines in `scan`).

use super::settings::Settings;
use super::{open_db, CliResult, Exit};
use clap::{Args, Subcommand};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::ops::Bound;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct Encoding {
    /// Keys and values are hexadecimal (input and output).
    #[arg(long, global = true)]
    hex: bool,
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Set KEY to VALUE.
    Put {
        table: String,
        key: String,
        value: String,
        #[command(flatten)]
        encoding: Encoding,
    },
    /// Print the value of KEY (exit status 2 when absent).
    Get {
        table: String,
        key: String,
        #[command(flatten)]
        encoding: Encoding,
    },
    /// Delete KEY (succeeds whether or not it existed; says which on stderr).
    Del {
        table: String,
        key: String,
        #[command(flatten)]
        encoding: Encoding,
    },
    /// Print `key<TAB>value` lines in key order.
    Scan {
        table: String,
        /// First key (inclusive).
        #[arg(long)]
        from: Option<String>,
        /// Last key (inclusive).
        #[arg(long)]
        to: Option<String>,
        /// Descending order.
        #[arg(long)]
        reverse: bool,
        /// At most N lines.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        encoding: Encoding,
    },
    /// Bulk-load `key<TAB>value` lines from FILE (`-` for stdin), committed in batches.
    Load {
        table: String,
        file: PathBuf,
        /// Keys per transaction.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// Sort the input first (an external sort spilling to encrypted temporary files
        /// beyond a quarter of the buffer pool), then insert in key order: faster for large
        /// unsorted inputs. For a key given twice the last value wins either way.
        #[arg(long)]
        sort: bool,
        #[command(flatten)]
        encoding: Encoding,
    },
}

impl Encoding {
    fn decode(&self, text: &str, what: &str) -> Result<Vec<u8>, Exit> {
        if !self.hex {
            return Ok(text.as_bytes().to_vec());
        }
        decode_hex(text).ok_or_else(|| Exit::Error(format!("{what} {text:?} is not hexadecimal")))
    }

    fn encode(&self, bytes: &[u8]) -> Vec<u8> {
        if !self.hex {
            return bytes.to_vec();
        }
        bytes
            .iter()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .collect()
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn run(command: KvCommand, settings: &Settings) -> CliResult {
    let db = open_db(settings)?;
    let result = run_on(&db, command);
    db.close()?;
    result
}

fn run_on(db: &strongbox_engine::Db, command: KvCommand) -> CliResult {
    let mut out = std::io::stdout().lock();
    match command {
        KvCommand::Put {
            table,
            key,
            value,
            encoding,
        } => {
            let table = db.table(&table)?;
            db.put(
                &table,
                &encoding.decode(&key, "key")?,
                &encoding.decode(&value, "value")?,
            )?;
        }
        KvCommand::Get {
            table,
            key,
            encoding,
        } => {
            let table = db.table(&table)?;
            match db.get(&table, &encoding.decode(&key, "key")?)? {
                None => return Err(Exit::NotFound),
                Some(value) => {
                    out.write_all(&encoding.encode(&value))?;
                    out.write_all(b"\n")?;
                }
            }
        }
        KvCommand::Del {
            table,
            key,
            encoding,
        } => {
            let table = db.table(&table)?;
            let existed = db.delete(&table, &encoding.decode(&key, "key")?)?;
            if !existed {
                eprintln!("strongbox: no such key");
            }
        }
        KvCommand::Scan {
            table,
            from,
            to,
            reverse,
            limit,
            encoding,
        } => {
            let table = db.table(&table)?;
            let from = from.map(|k| encoding.decode(&k, "--from")).transpose()?;
            let to = to.map(|k| encoding.decode(&k, "--to")).transpose()?;
            let bounds = (
                from.as_deref().map_or(Bound::Unbounded, Bound::Included),
                to.as_deref().map_or(Bound::Unbounded, Bound::Included),
            );
            for entry in db
                .range(&table, bounds, reverse)?
                .take(limit.unwrap_or(usize::MAX))
            {
                let (key, value) = entry?;
                out.write_all(&encoding.encode(&key))?;
                out.write_all(b"\t")?;
                out.write_all(&encoding.encode(&value))?;
                out.write_all(b"\n")?;
            }
        }
        KvCommand::Load {
            table,
            file,
            batch,
            sort,
            encoding,
        } => {
            let table = db.table(&table)?;
            let mut sink = if sort {
                Sink::Sorted(db.bulk_loader(&table)?)
            } else {
                Sink::Direct(db.begin()?, 0)
            };
            let read = load(&mut sink, db, &table, &file, batch.max(1), &encoding)?;
            let loaded = match sink {
                Sink::Direct(txn, _) => {
                    txn.commit()?;
                    read
                }
                Sink::Sorted(loader) => {
                    let report = loader.finish(batch.max(1))?;
                    if report.spilled_runs > 0 {
                        eprintln!(
                            "strongbox: sorted through {} temporary run(s), {} bytes",
                            report.spilled_runs, report.spilled_bytes
                        );
                    }
                    report.rows
                }
            };
            eprintln!("strongbox: loaded {loaded} keys into {}", table.name());
        }
    }
    out.flush()?;
    Ok(())
}

/// Where `kv load` puts what it reads: straight into transactions of `batch` keys, or
/// into a bulk loader that sorts first.
enum Sink<'db> {
    Direct(strongbox_engine::Transaction<'db>, usize),
    Sorted(strongbox_engine::BulkLoader),
}

/// Reads `key<TAB>value` lines into `sink`; returns how many lines it read.
fn load<'db>(
    sink: &mut Sink<'db>,
    db: &'db strongbox_engine::Db,
    table: &strongbox_engine::Table,
    file: &PathBuf,
    batch: usize,
    encoding: &Encoding,
) -> Result<u64, Exit> {
    let (reader, total): (Box<dyn BufRead>, u64) = if file.as_os_str() == "-" {
        (Box::new(BufReader::new(std::io::stdin())), 0)
    } else {
        let handle = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let total = handle.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(BufReader::new(handle)), total)
    };
    let progress = if std::io::stderr().is_terminal() && total > 0 {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {per_sec} eta {eta}",
            )
            .expect("a valid template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut loaded = 0u64;
    for (index, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", file.display()))?;
        progress.inc(line.len() as u64 + 1);
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.is_empty() {
            continue;
        }
        let tab = line.iter().position(|&b| b == b'\t').ok_or_else(|| {
            format!(
                "{} line {}: expected key<TAB>value",
                file.display(),
                index + 1
            )
        })?;
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let (key, value) = if encoding.hex {
            (
                encoding.decode(&text(&line[..tab]), "key")?,
                encoding.decode(&text(&line[tab + 1..]), "value")?,
            )
        } else {
            (line[..tab].to_vec(), line[tab + 1..].to_vec())
        };
        match sink {
            Sink::Sorted(loader) => loader.push(key, value)?,
            Sink::Direct(txn, in_batch) => {
                txn.put(table, &key, &value)?;
                *in_batch += 1;
                if *in_batch == batch {
                    let full = std::mem::replace(txn, db.begin()?);
                    full.commit()?;
                    *in_batch = 0;
                }
            }
        }
        loaded += 1;
    }
    progress.finish_and_clear();
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let hex = Encoding { hex: true };
        assert_eq!(hex.decode("00ff7a", "key").unwrap(), vec![0, 255, 0x7a]);
        assert!(hex.decode("0", "key").is_err());
        assert!(hex.decode("zz", "key").is_err());
        assert_eq!(hex.encode(&[0, 255]), b"00ff");
        let text = Encoding { hex: false };
        assert_eq!(text.decode("tab\there", "v").unwrap(), b"tab\there");
    }
}
