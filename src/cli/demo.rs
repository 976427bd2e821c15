//! `strongbox demo`: the whole path on built-in defaults, in a temporary directory.
//!
//! 1. Generate a MariaDB-format key file (keys 1 and 2).
//! 2. Open a database with encryption on; create one encrypted and one plain table.
//! 3. Write the same records, carrying a marker string, into both; checkpoint.
//! 4. Scan the files on disk for the marker: found in the plain table's file, never in the
//!    encrypted one. Read everything back through the buffer pool.
//! 5. Print the counters that show where crypto happened (only at the IO boundary).

use super::CliResult;
use clap::Args;
use std::time::Instant;
use strongbox_engine::{Db, Encrypted, Options, TableOptions};
use strongbox_keyring::keyfile::KeyFile;
use strongbox_keyring::source::KeyFileSource;
use strongbox_keyring::Algorithm;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Records to write into each table.
    #[arg(long, default_value_t = 20_000)]
    records: u32,
    /// aes_ctr | aes_cbc | aes_gcm.
    #[arg(long, default_value = "aes_ctr")]
    algorithm: Algorithm,
    /// Keep the temporary directory and print its path.
    #[arg(long)]
    keep: bool,
}

const MARKER: &str = "STRONGBOX-DEMO-MARKER";

pub fn run(args: DemoArgs) -> CliResult {
    let dir = tempfile::Builder::new()
        .prefix("strongbox-demo")
        .tempdir()?;
    let key_path = dir.path().join("keys.txt");
    KeyFileSource::plain(&key_path).create(&KeyFile::generate(&[1, 2], 256, false)?)?;
    println!(
        "key file      {} (keys 1 and 2, 256-bit)",
        key_path.display()
    );

    let data = dir.path().join("data");
    let options = Options::new()
        .keyfile(&key_path)
        .encryption_algorithm(args.algorithm)
        .buffer_pool_size(8 << 20);
    let db = Db::open(&data, options)?;
    let secret = db.create_table("secret", TableOptions::default())?;
    let public = db.create_table("public", TableOptions::default().encrypted(Encrypted::No))?;
    println!(
        "database      {} ({}-byte pages, {})",
        data.display(),
        db.page_size(),
        args.algorithm
    );

    let started = Instant::now();
    for table in [&secret, &public] {
        let mut txn = db.begin()?;
        for i in 0..args.records {
            let key = format!("user:{i:08}");
            let value = format!("{MARKER} record {i} of table {}", table.name());
            txn.put(table, key.as_bytes(), value.as_bytes())?;
        }
        txn.commit()?;
    }
    db.checkpoint()?;
    println!(
        "wrote         {} records into each table in {:.2?}",
        args.records,
        started.elapsed()
    );

    for table in [&secret, &public] {
        let info = table.info();
        let file = data.join(strongbox_engine::space::file_name(info.space_id));
        let bytes = std::fs::read(&file)?;
        let hits = count(&bytes, MARKER.as_bytes());
        println!(
            "on disk       {:<7} {:>9} bytes, encrypted={:<5} marker found {hits} times",
            info.name,
            bytes.len(),
            info.encrypted
        );
        if info.encrypted && hits != 0 {
            return Err(
                format!("plaintext found in encrypted table file {}", file.display()).into(),
            );
        }
        if let Some(page) = bytes.get(db.page_size()..db.page_size() + 96) {
            println!(
                "              page 1 stored bytes 48..96: {}",
                hex(&page[48..96])
            );
        }
    }
    let mut read_back = 0;
    for entry in db.range(&secret, .., false)? {
        let (_, value) = entry?;
        if !value.starts_with(MARKER.as_bytes()) {
            return Err("read back a wrong value".into());
        }
        read_back += 1;
    }
    println!("read back     {read_back} records from the encrypted table through the buffer pool");
    let stats = db.stats();
    println!(
        "counters      pages encrypted {}, decrypted {}, written {}, read {}, hits {}, misses {}",
        stats.pages_encrypted,
        stats.pages_decrypted,
        stats.pages_written,
        stats.pages_read,
        stats.hits,
        stats.misses
    );
    db.verify()?;
    db.close()?;
    println!("verify        every tree and page accounted for");
    if args.keep {
        println!("kept          {}", dir.keep().display());
    }
    Ok(())
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
