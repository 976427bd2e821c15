//! Settings for commands that open a database: the TOML config file (`--config`) overlaid
//! by command-line flags (flags win), turned into engine [`Options`].
//!
//! ```toml
//! # strongbox.toml — every key optional; names follow MariaDB (DESIGN §5)
//! data = "./strongbox-data"
//! keyfile = "/etc/strongbox/keys.txt"
//! filekey = "FILE:/etc/strongbox/filekey"   # only for an encrypted key file
//! digest = "sha1"                            # sha1 | sha256 | sha512
//! pbkdf2_iter = 0                            # 0 = EVP_BytesToKey
//! encrypt_tables = "on"                      # off | on | force
//! encrypt_temp = true
//! default_encryption_key_id = 1
//! encryption_algorithm = "aes_ctr"           # aes_ctr | aes_cbc | aes_gcm
//! buffer_pool_size = "128M"                  # bytes, or with a K/M/G suffix
//! page_size = 16384                          # 4096 … 65536, for a new database
//! flush_log_at_commit = 1                    # 1: fsync per commit; 2: write, fsync 1/s; 0: 1/s
//! encrypt_log = true                         # default: on unless encrypt_tables = off and no keyfile
//! doublewrite = true                         # off only for benchmarks (torn pages!)
//! lock_wait_timeout = 50                     # seconds a writer waits for a key lock
//! log_file_size = "64M"                      # bytes per redo segment, for a new database
//! encryption_threads = 1                     # background re-encryption threads
//! encryption_rotate_key_age = 1              # re-encrypt when key version + age < latest
//! encryption_rotation_iops = 100             # their page IOs per second (0 = no cap)
//! listen = "127.0.0.1:6380"                  # strongbox serve (flags --listen etc. win)
//! requirepass = "…"                          # needed to listen beyond loopback
//! maxclients = 10000
//! proto_max_bulk_len = "512M"                # request limits (Redis' defaults shown)
//! proto_max_multibulk_len = 1048576
//! client_query_buffer_limit = "1G"
//! ```

use clap::Args;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use strongbox_engine::page::PageSize;
use strongbox_engine::{EncryptTables, FlushAtCommit, Options};
use strongbox_keyring::openssl_enc::{Digest, EncSettings, Kdf};
use strongbox_keyring::Algorithm;

/// The options every command accepts (before or after the subcommand).
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalOptions {
    /// Data directory.
    #[arg(long, global = true, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Key file (MariaDB file_key_management format, plain or openssl-encrypted).
    #[arg(long, global = true, value_name = "FILE")]
    pub keyfile: Option<PathBuf>,
    /// Passphrase of an encrypted key file, or FILE:path to read it from a file.
    #[arg(long, global = true, value_name = "SECRET|FILE:path")]
    pub filekey: Option<String>,
    /// Digest of the key file's key derivation (openssl enc -md).
    #[arg(long, global = true, value_name = "sha1|sha256|sha512")]
    pub digest: Option<Digest>,
    /// PBKDF2 iterations of the key file (openssl enc -pbkdf2 -iter N); 0 = EVP_BytesToKey.
    #[arg(long, global = true, value_name = "N")]
    pub pbkdf2_iter: Option<u32>,
    /// TOML configuration file; flags win over it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// off | on | force.
    #[arg(long, global = true, value_name = "off|on|force")]
    pub encrypt_tables: Option<EncryptTables>,
    /// aes_ctr | aes_cbc | aes_gcm.
    #[arg(long, global = true, value_name = "ALGORITHM")]
    pub encryption_algorithm: Option<Algorithm>,
    /// Buffer pool size in bytes, or with a K/M/G suffix.
    #[arg(long, global = true, value_name = "SIZE")]
    pub buffer_pool_size: Option<String>,
    /// Page size of a new database.
    #[arg(long, global = true, value_name = "BYTES")]
    pub page_size: Option<u32>,
    /// Key id of tables that do not name one.
    #[arg(long, global = true, value_name = "ID")]
    pub default_encryption_key_id: Option<u32>,
    /// 1: fsync the redo log at every commit; 2: write at commit, fsync once a second;
    /// 0: write and fsync once a second (MariaDB's innodb_flush_log_at_trx_commit).
    #[arg(long, global = true, value_name = "0|1|2")]
    pub flush_log_at_commit: Option<u8>,
    /// Encrypt the redo log (key 1); default on unless encrypt_tables = off.
    #[arg(long, global = true, value_name = "true|false")]
    pub encrypt_log: Option<bool>,
    /// The doublewrite buffer (torn-page protection); false only for benchmarks.
    #[arg(long, global = true, value_name = "true|false")]
    pub doublewrite: Option<bool>,
    /// Background re-encryption threads (0 = passes run only while a command waits).
    #[arg(long, global = true, value_name = "N")]
    pub encryption_threads: Option<usize>,
    /// Re-encrypt pages on their own when key version + age < latest (0 = never for age).
    #[arg(long, global = true, value_name = "AGE")]
    pub encryption_rotate_key_age: Option<u32>,
    /// Page IOs per second for re-encryption, all threads together (0 = no cap).
    #[arg(long, global = true, value_name = "IOPS")]
    pub encryption_rotation_iops: Option<u32>,
}

/// The config file's contents; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    data: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    filekey: Option<String>,
    digest: Option<String>,
    pbkdf2_iter: Option<u32>,
    encrypt_tables: Option<String>,
    encrypt_temp: Option<bool>,
    default_encryption_key_id: Option<u32>,
    encryption_algorithm: Option<String>,
    buffer_pool_size: Option<toml::Value>,
    page_size: Option<u32>,
    flush_log_at_commit: Option<u8>,
    encrypt_log: Option<bool>,
    doublewrite: Option<bool>,
    lock_wait_timeout: Option<u64>,
    log_file_size: Option<toml::Value>,
    encryption_threads: Option<usize>,
    encryption_rotate_key_age: Option<u32>,
    encryption_rotation_iops: Option<u32>,
    listen: Option<String>,
    requirepass: Option<String>,
    maxclients: Option<usize>,
    proto_max_bulk_len: Option<toml::Value>,
    proto_max_multibulk_len: Option<usize>,
    client_query_buffer_limit: Option<toml::Value>,
}

/// Everything resolved: config file, then flags on top.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data: PathBuf,
    /// Whether `data` was given (flag or config file) rather than defaulted.
    pub data_given: bool,
    pub keyfile: Option<PathBuf>,
    pub filekey: Option<String>,
    pub key_settings: EncSettings,
    pub encrypt_tables: EncryptTables,
    pub encrypt_temp: bool,
    pub default_encryption_key_id: u32,
    pub encryption_algorithm: Algorithm,
    pub buffer_pool_size: usize,
    pub page_size: PageSize,
    pub flush_log_at_commit: FlushAtCommit,
    /// `None`: the engine's default (on unless `encrypt_tables = off`).
    pub encrypt_log: Option<bool>,
    pub doublewrite: bool,
    pub lock_wait_timeout: Duration,
    pub log_file_size: u64,
    pub encryption_threads: usize,
    pub encryption_rotate_key_age: u32,
    pub encryption_rotation_iops: u32,
    /// `strongbox serve` settings from the config file (its flags win).
    pub listen: Option<String>,
    pub requirepass: Option<String>,
    pub maxclients: Option<usize>,
    /// Request limits (Redis' names with `_`); `None` = Redis' defaults.
    pub proto_max_bulk_len: Option<usize>,
    pub proto_max_multibulk_len: Option<usize>,
    pub client_query_buffer_limit: Option<usize>,
}

/// Where `--data` points when nothing says otherwise.
pub const DEFAULT_DATA_DIR: &str = "./strongbox-data";

impl Settings {
    pub fn resolve(global: &GlobalOptions) -> Result<Settings, String> {
        let file = match &global.config {
            Some(path) => read_config(path)?,
            None => ConfigFile::default(),
        };
        let parse_err = |what: &str, e: String| format!("{what}: {e}");
        let digest = match (&global.digest, &file.digest) {
            (Some(d), _) => *d,
            (None, Some(text)) => text.parse().map_err(|e| parse_err("config digest", e))?,
            (None, None) => Digest::default(),
        };
        let iterations = global.pbkdf2_iter.or(file.pbkdf2_iter).unwrap_or(0);
        let encrypt_tables = match (global.encrypt_tables, &file.encrypt_tables) {
            (Some(setting), _) => setting,
            (None, Some(text)) => text
                .parse()
                .map_err(|e| parse_err("config encrypt_tables", e))?,
            (None, None) => EncryptTables::On,
        };
        let encryption_algorithm = match (global.encryption_algorithm, &file.encryption_algorithm) {
            (Some(algorithm), _) => algorithm,
            (None, Some(text)) => {
                text.parse()
                    .map_err(|e: <Algorithm as std::str::FromStr>::Err| {
                        parse_err("config encryption_algorithm", e.to_string())
                    })?
            }
            (None, None) => Algorithm::AesCtr,
        };
        let buffer_pool_size = match &global.buffer_pool_size {
            Some(text) => parse_size(text)?,
            None => config_size("buffer_pool_size", file.buffer_pool_size.as_ref())?
                .unwrap_or(128 << 20),
        };
        let level = global
            .flush_log_at_commit
            .or(file.flush_log_at_commit)
            .unwrap_or(1);
        let flush_log_at_commit = FlushAtCommit::from_level(level)
            .ok_or_else(|| format!("flush_log_at_commit: {level} is not 0, 1 or 2"))?;
        let log_file_size =
            config_size("log_file_size", file.log_file_size.as_ref())?.unwrap_or(64 << 20) as u64;
        let page_size = match global.page_size.or(file.page_size) {
            Some(bytes) => PageSize::try_from(bytes).map_err(|e| e.to_string())?,
            None => PageSize::DEFAULT,
        };
        let data = global.data.clone().or(file.data);
        Ok(Settings {
            data_given: data.is_some(),
            data: data.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            keyfile: global.keyfile.clone().or(file.keyfile),
            filekey: global.filekey.clone().or(file.filekey),
            key_settings: EncSettings {
                digest,
                kdf: match iterations {
                    0 => Kdf::EvpBytesToKey,
                    iterations => Kdf::Pbkdf2 { iterations },
                },
            },
            encrypt_tables,
            encrypt_temp: file.encrypt_temp.unwrap_or(true),
            default_encryption_key_id: global
                .default_encryption_key_id
                .or(file.default_encryption_key_id)
                .unwrap_or(1),
            encryption_algorithm,
            buffer_pool_size,
            page_size,
            flush_log_at_commit,
            encrypt_log: global.encrypt_log.or(file.encrypt_log),
            doublewrite: global.doublewrite.or(file.doublewrite).unwrap_or(true),
            lock_wait_timeout: Duration::from_secs(file.lock_wait_timeout.unwrap_or(50)),
            log_file_size,
            encryption_threads: global
                .encryption_threads
                .or(file.encryption_threads)
                .unwrap_or(1),
            encryption_rotate_key_age: global
                .encryption_rotate_key_age
                .or(file.encryption_rotate_key_age)
                .unwrap_or(1),
            encryption_rotation_iops: global
                .encryption_rotation_iops
                .or(file.encryption_rotation_iops)
                .unwrap_or(100),
            listen: file.listen,
            requirepass: file.requirepass,
            maxclients: file.maxclients,
            proto_max_bulk_len: config_size(
                "proto_max_bulk_len",
                file.proto_max_bulk_len.as_ref(),
            )?,
            proto_max_multibulk_len: file.proto_max_multibulk_len,
            client_query_buffer_limit: config_size(
                "client_query_buffer_limit",
                file.client_query_buffer_limit.as_ref(),
            )?,
        })
    }

    /// Engine options for these settings.
    pub fn options(&self) -> Options {
        let mut options = Options::new()
            .encrypt_tables(self.encrypt_tables)
            .encrypt_temp(self.encrypt_temp)
            .default_encryption_key_id(self.default_encryption_key_id)
            .encryption_algorithm(self.encryption_algorithm)
            .buffer_pool_size(self.buffer_pool_size)
            .page_size(self.page_size)
            .flush_log_at_commit(self.flush_log_at_commit)
            .doublewrite(self.doublewrite)
            .lock_wait_timeout(self.lock_wait_timeout)
            .log_file_size(self.log_file_size)
            .encryption_threads(self.encryption_threads)
            .encryption_rotate_key_age(self.encryption_rotate_key_age)
            .encryption_rotation_iops(self.encryption_rotation_iops);
        if let Some(on) = self.encrypt_log {
            options = options.encrypt_log(on);
        }
        if let Some(keyfile) = &self.keyfile {
            options = options.keyfile(keyfile);
            if let Some(filekey) = &self.filekey {
                options = options.filekey(filekey.clone(), self.key_settings);
            }
        }
        options
    }
}

fn read_config(path: &Path) -> Result<ConfigFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {}", path.display(), e.message()))
}

/// A size from the config file: an integer, or a string like `64M`.
fn config_size(name: &str, value: Option<&toml::Value>) -> Result<Option<usize>, String> {
    match value {
        None => Ok(None),
        Some(toml::Value::Integer(bytes)) => usize::try_from(*bytes)
            .map(Some)
            .map_err(|_| format!("config {name} is negative")),
        Some(toml::Value::String(text)) => parse_size(text).map(Some),
        Some(other) => Err(format!("config {name}: {other} is not a size")),
    }
}

/// `4096`, `64K`, `128M`, `2G` (powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (digits, shift) = match text.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&text[..text.len() - 1], 10),
        Some('M') => (&text[..text.len() - 1], 20),
        Some('G') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let number: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 4096, 64K, 128M or 2G"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("128M").unwrap(), 128 << 20);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("s.toml");
        std::fs::write(
            &config,
            "data = \"/from/file\"\nencrypt_tables = \"force\"\nbuffer_pool_size = \"2M\"\ndigest = \"sha256\"\n",
        )
        .unwrap();
        let global = GlobalOptions {
            config: Some(config.clone()),
            data: Some(PathBuf::from("/from/flag")),
            ..GlobalOptions::default()
        };
        let settings = Settings::resolve(&global).unwrap();
        assert_eq!(settings.data, PathBuf::from("/from/flag"));
        assert_eq!(settings.encrypt_tables, EncryptTables::Force);
        assert_eq!(settings.buffer_pool_size, 2 << 20);
        assert_eq!(settings.key_settings.digest, Digest::Sha256);
        std::fs::write(&config, "no_such_setting = 1\n").unwrap();
        let error = Settings::resolve(&global).unwrap_err();
        assert!(error.contains("no_such_setting"), "{error}");
    }

    #[test]
    fn durability_settings_resolve_with_defaults_and_refuse_bad_levels() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("s.toml");
        let global = GlobalOptions {
            config: Some(config.clone()),
            ..GlobalOptions::default()
        };
        std::fs::write(&config, "").unwrap();
        let defaults = Settings::resolve(&global).unwrap();
        assert_eq!(defaults.flush_log_at_commit, FlushAtCommit::EveryCommit);
        assert_eq!(defaults.encrypt_log, None);
        assert!(defaults.doublewrite);
        assert_eq!(defaults.log_file_size, 64 << 20);
        std::fs::write(
            &config,
            "flush_log_at_commit = 2\nencrypt_log = false\ndoublewrite = false\n\
             lock_wait_timeout = 3\nlog_file_size = \"1M\"\n",
        )
        .unwrap();
        let from_file = Settings::resolve(&global).unwrap();
        assert_eq!(from_file.flush_log_at_commit, FlushAtCommit::WriteAtCommit);
        assert_eq!(from_file.encrypt_log, Some(false));
        assert!(!from_file.doublewrite);
        assert_eq!(from_file.lock_wait_timeout, Duration::from_secs(3));
        assert_eq!(from_file.log_file_size, 1 << 20);
        let flagged = GlobalOptions {
            flush_log_at_commit: Some(0),
            ..global.clone()
        };
        assert_eq!(
            Settings::resolve(&flagged).unwrap().flush_log_at_commit,
            FlushAtCommit::OncePerInterval
        );
        let bad = GlobalOptions {
            flush_log_at_commit: Some(3),
            ..global
        };
        let error = Settings::resolve(&bad).unwrap_err();
        assert!(error.contains("not 0, 1 or 2"), "{error}");
    }
}
