//! `strongbox serve`: the Redis-protocol server on defaults (`docs/server.md`).
//!
//! With no key file configured it uses `./strongbox-keys/keys.txt` — outside the data
//! directory — and makes it on first start (keys 1 and 2, 256-bit, mode 0600), saying
//! where it is and that it must be backed up and kept off the data volume. SIGTERM,
//! SIGINT and the SHUTDOWN command stop it cleanly: in-flight commands finish, the
//! database is checkpointed and closed, and the next start needs no recovery.

use super::key_options::key_file_source;
use super::settings::Settings;
use super::{open_db, CliResult};
use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::path::PathBuf;
use strongbox_keyring::keyfile::KeyFile;
use strongbox_server::{Server, ServerConfig};

/// The key file `serve` makes and uses when none is configured.
pub const DEFAULT_KEY_FILE: &str = "strongbox-keys/keys.txt";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// host:port to listen on (default 127.0.0.1:6380; anything but loopback needs
    /// --requirepass).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Clients must AUTH with this password.
    #[arg(long, value_name = "PASSWORD")]
    requirepass: Option<String>,
    /// Most connections at once (default 10000).
    #[arg(long, value_name = "N")]
    maxclients: Option<usize>,
}

pub fn run(args: ServeArgs, settings: &Settings) -> CliResult {
    let mut settings = settings.clone();
    if settings.keyfile.is_none() && settings.encrypt_tables != strongbox_engine::EncryptTables::Off
    {
        settings.keyfile = Some(default_key_file(&settings)?);
    }
    let mut config = ServerConfig::default();
    if let Some(listen) = args.listen.or(settings.listen.clone()) {
        config.listen = listen;
    }
    config.requirepass = args.requirepass.or(settings.requirepass.clone());
    if let Some(max) = args.maxclients.or(settings.maxclients) {
        config.maxclients = max;
    }
    let limits = &mut config.limits;
    if let Some(len) = settings.proto_max_bulk_len {
        limits.max_bulk_len = len;
    }
    if let Some(count) = settings.proto_max_multibulk_len {
        limits.max_multibulk_len = count;
    }
    if let Some(len) = settings.client_query_buffer_limit {
        limits.max_query_buffer = len;
    }
    let db = open_db(&settings)?;
    let handle = Server::start(db, config).map_err(|e| format!("serve: {e}"))?;
    eprintln!(
        "strongbox: serving {} on {} (Redis protocol; stop with Ctrl-C, SIGTERM or SHUTDOWN)",
        settings.data.display(),
        handle.local_addr()
    );
    let mut signals =
        Signals::new([SIGTERM, SIGINT]).map_err(|e| format!("install signal handlers: {e}"))?;
    let signal_control = signals.handle();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            if signals.forever().next().is_some() {
                handle.request_shutdown();
            }
        });
        handle.wait_for_shutdown();
        signal_control.close();
    });
    eprintln!("strongbox: shutting down: finishing commands, checkpointing");
    handle.stop()?;
    eprintln!("strongbox: stopped cleanly");
    Ok(())
}

/// `./strongbox-keys/keys.txt`, made (keys 1 and 2, 256-bit, 0600) if it does not exist.
fn default_key_file(settings: &Settings) -> Result<PathBuf, String> {
    let path = PathBuf::from(DEFAULT_KEY_FILE);
    if path.exists() {
        return Ok(path);
    }
    let dir = path.parent().expect("a relative path with a directory");
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let source = key_file_source(settings, path.clone())?;
    let keys = KeyFile::generate(&[1, 2], 256, false).map_err(|e| e.to_string())?;
    source.create(&keys).map_err(|e| e.to_string())?;
    eprintln!(
        "strongbox: first start: made key file {} (keys 1 and 2, 256-bit, mode 0600). \
         Back it up and keep it off the data volume: without it the data cannot be read.",
        std::fs::canonicalize(&path)
            .unwrap_or(path.clone())
            .display()
    );
    Ok(path)
}
