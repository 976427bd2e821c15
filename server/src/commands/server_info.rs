//! Server commands: COMMAND, CONFIG, INFO, DBSIZE, FLUSHDB, SHUTDOWN.

use super::{engine_error, keyspace, lookup, reply, text, After, COMMANDS};
use crate::glob;
use crate::reply::Reply;
use crate::server::Shared;
use crate::session::{Args, Session};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name…`, `COMMAND DOCS [name…]` — enough for
/// redis-cli's hints and for client libraries that probe.
pub(super) fn command(_: &Shared, _: &mut Session, args: &Args) -> (Reply, After) {
    let info = |spec: &super::Spec| {
        let keyed = spec.is_data() && !matches!(spec.name, "scan" | "randomkey" | "sb.range");
        Reply::Array(vec![
            Reply::bulk(spec.name),
            Reply::Integer(i64::from(spec.arity)),
            Reply::Array(vec![Reply::Simple(
                if spec.is_data() { "write" } else { "fast" }.into(),
            )]),
            Reply::Integer(i64::from(keyed)),
            Reply::Integer(if keyed { -1 } else { 0 }),
            Reply::Integer(i64::from(keyed)),
        ])
    };
    let sub = args.get(1).map(|a| a.to_ascii_uppercase());
    reply(match sub.as_deref() {
        None => Reply::Array(COMMANDS.iter().map(info).collect()),
        Some(b"COUNT") => Reply::Integer(COMMANDS.len() as i64),
        Some(b"INFO") => Reply::Array(
            args[2..]
                .iter()
                .map(|name| lookup(name).map_or(Reply::NullArray, info))
                .collect(),
        ),
        Some(b"DOCS") => Reply::Map(Vec::new()),
        Some(_) => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            text(&args[1])
        )),
    })
}

/// The settings `CONFIG GET` shows (what redis-benchmark and clients ask for).
fn config_values(shared: &Shared) -> Vec<(&'static str, String)> {
    let config = &shared.config;
    let (host, port) = config
        .listen
        .rsplit_once(':')
        .unwrap_or((config.listen.as_str(), ""));
    vec![
        ("bind", host.to_string()),
        ("port", port.to_string()),
        ("databases", config.databases.to_string()),
        ("maxclients", config.maxclients.to_string()),
        ("requirepass", String::new()), // never shown
        ("protected-mode", "yes".to_string()),
        ("save", String::new()),
        ("appendonly", "no".to_string()),
        ("appendfsync", "everysec".to_string()),
        ("proto-max-bulk-len", config.limits.max_bulk_len.to_string()),
        (
            "client-query-buffer-limit",
            config.limits.max_query_buffer.to_string(),
        ),
        ("timeout", "0".to_string()),
    ]
}

pub(super) fn config(shared: &Shared, _: &mut Session, args: &Args) -> (Reply, After) {
    let sub = args[1].to_ascii_uppercase();
    reply(match sub.as_slice() {
        b"GET" if args.len() >= 3 => {
            let values = config_values(shared);
            let pairs = values
                .iter()
                .filter(|(name, _)| {
                    args[2..]
                        .iter()
                        .any(|p| glob::matches(&p.to_ascii_lowercase(), name.as_bytes()))
                })
                .map(|(name, value)| (Reply::bulk(name), Reply::bulk(value)))
                .collect();
            Reply::Map(pairs)
        }
        b"RESETSTAT" => Reply::ok(),
        b"SET" => Reply::error(
            "ERR CONFIG SET is not supported by Strongbox: change the setting in the config file \
             or on the command line and restart",
        ),
        _ => Reply::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CONFIG HELP.",
            text(&args[1])
        )),
    })
}

/// `INFO [section…]`: server, clients, stats, memory, persistence, keyspace, encryption,
/// bufferpool (all of them by default).
pub(super) fn info(shared: &Shared, _: &mut Session, args: &Args) -> (Reply, After) {
    const ALL: [&str; 8] = [
        "server",
        "clients",
        "stats",
        "memory",
        "persistence",
        "keyspace",
        "encryption",
        "bufferpool",
    ];
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| text(a).to_ascii_lowercase())
        .collect();
    let everything = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
    let mut out = String::new();
    for section in ALL {
        if everything || wanted.iter().any(|w| w == section) {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            section_text(shared, section, &mut out);
        }
    }
    reply(Reply::Verbatim(out))
}

fn section_text(shared: &Shared, section: &str, out: &mut String) {
    let stats = shared.db.stats();
    let mut title = section.to_string();
    title[..1].make_ascii_uppercase();
    let _ = write!(out, "# {title}\r\n");
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        let _ = write!(out, "{key}:{value}\r\n");
    };
    match section {
        "server" => {
            line("redis_version", &"7.2.0");
            line("strongbox_version", &env!("CARGO_PKG_VERSION"));
            line("redis_mode", &"standalone");
            line("os", &std::env::consts::OS);
            line("process_id", &std::process::id());
            line("tcp_port", &shared.port);
            line("uptime_in_seconds", &shared.started.elapsed().as_secs());
        }
        "clients" => {
            line("connected_clients", &shared.clients.load(Ordering::Relaxed));
            line("maxclients", &shared.config.maxclients);
        }
        "stats" => {
            line(
                "total_connections_received",
                &shared.connections_received.load(Ordering::Relaxed),
            );
            line(
                "total_commands_processed",
                &shared.commands_processed.load(Ordering::Relaxed),
            );
            line(
                "rejected_connections",
                &shared.rejected_connections.load(Ordering::Relaxed),
            );
        }
        "memory" => {
            line("used_memory_rss", &resident_bytes());
            line(
                "buffer_pool_bytes",
                &(stats.frames * shared.db.page_size() as u64),
            );
        }
        "persistence" => {
            line("loading", &0);
            line("redo_commits", &stats.log.commits);
            line("redo_fsyncs", &stats.log.fsyncs);
            line("redo_bytes_written", &stats.log.bytes_written);
            line("checkpoints", &stats.log.checkpoints);
            let recovered = shared.db.recovery();
            line("recovery_redo_applied", &recovered.redo);
            line("recovery_rolled_back", &recovered.rolled_back);
        }
        "keyspace" => {
            if let Ok(tables) = shared.db.tables() {
                for table in tables {
                    if let Ok(handle) = shared.db.table(&table.name) {
                        if let Ok(keys) = keyspace::count(&shared.db, &handle) {
                            line(&table.name, &format!("keys={keys},expires=0,avg_ttl=0"));
                        }
                    }
                }
            }
        }
        "encryption" => {
            if let Ok(rows) = shared.db.encryption_status() {
                for row in rows {
                    line(
                        &format!("space{}", row.space_id),
                        &format!(
                            "name={},scheme={},key_id={},current_key_version={},\
                             min_key_version={},rotating={},pages_done={},pages_total={}",
                            row.name,
                            row.scheme,
                            row.key_id,
                            row.current_key_version,
                            row.min_key_version,
                            u8::from(row.rotating),
                            row.pages_done,
                            row.pages_total
                        ),
                    );
                }
            }
            line("pages_encrypted", &stats.pages_encrypted);
            line("pages_decrypted", &stats.pages_decrypted);
            line("pages_reencrypted", &stats.pages_reencrypted);
        }
        "bufferpool" => {
            line("frames", &stats.frames);
            line("hits", &stats.hits);
            line("misses", &stats.misses);
            line("dirty_pages", &stats.dirty_pages);
            line("evictions", &stats.evictions);
            line("pages_read", &stats.pages_read);
            line("pages_written", &stats.pages_written);
        }
        _ => {}
    }
}

/// Resident set size from /proc (0 where there is none).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

pub(super) fn dbsize(shared: &Shared, session: &mut Session, _: &Args) -> (Reply, After) {
    let table = match shared.session_table(session) {
        Ok(table) => table,
        Err(error) => return reply(error),
    };
    reply(match keyspace::count(&shared.db, &table) {
        Ok(n) => Reply::Integer(n),
        Err(error) => engine_error(&error),
    })
}

/// `FLUSHDB [SYNC|ASYNC]`: the session's table is dropped and created again empty, with
/// the same encryption settings.
pub(super) fn flushdb(shared: &Shared, session: &mut Session, args: &Args) -> (Reply, After) {
    if let Some(mode) = args.get(1) {
        if !mode.eq_ignore_ascii_case(b"SYNC") && !mode.eq_ignore_ascii_case(b"ASYNC") {
            return reply(super::syntax_error());
        }
    }
    reply(match shared.flush_table(&session.table) {
        Ok(()) => Reply::ok(),
        Err(error) => error,
    })
}

pub(super) fn shutdown(_: &Shared, _: &mut Session, args: &Args) -> (Reply, After) {
    for option in &args[1..] {
        let option = option.to_ascii_uppercase();
        if option.as_slice() == b"ABORT" {
            return reply(Reply::error(
                "ERR There is no shutdown in progress to abort.",
            ));
        }
        if !matches!(option.as_slice(), b"NOSAVE" | b"SAVE" | b"NOW" | b"FORCE") {
            return reply(super::syntax_error());
        }
    }
    (Reply::ok(), After::Shutdown)
}
