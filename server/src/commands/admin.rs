//! Strongbox's own commands, under the `SB.` prefix:
//!
//! ```text
//! SB.TABLE CREATE name [ENCRYPTED YES|NO|DEFAULT] [KEY_ID n]
//! SB.TABLE ALTER name [ENCRYPTED YES|NO|DEFAULT] [KEY_ID n]     (pages move in the background)
//! SB.TABLE DROP name
//! SB.TABLE LIST                          -> one map per table
//! SB.USE name                            -> data commands of this connection use table `name`
//! SB.ENCRYPTION STATUS                   -> one map per tablespace (INNODB_TABLESPACES_ENCRYPTION)
//! SB.ENCRYPTION WAIT                     -> returns when no re-encryption pass is running
//! SB.KEY ROTATE id [REENCRYPT|REWRAP]    -> applies the key file's newest version of key id
//! SB.CHECKPOINT
//! SB.STATS                               -> buffer pool, IO, crypto and redo counters
//! ```
//!
//! `SB.RANGE start count` is also Strongbox's own, but it reads the session's table like
//! GET and SCAN, so it is a data command and lives with them in `keyspace.rs`.

use super::{engine_error, parse_i64, reply, syntax_error, text, After};
use crate::reply::Reply;
use crate::server::Shared;
use crate::session::{Args, Session};
use strongbox_engine::{Encrypted, RotationPolicy, TableOptions, STATUS_COLUMNS};

fn field(name: &str, value: Reply) -> (Reply, Reply) {
    (Reply::bulk(name), value)
}

/// `[ENCRYPTED YES|NO|DEFAULT] [KEY_ID n]`.
fn table_options(args: &[Vec<u8>]) -> Result<TableOptions, Reply> {
    let mut options = TableOptions::default();
    let mut rest = args.iter();
    while let Some(option) = rest.next() {
        let value = rest.next().ok_or_else(syntax_error)?;
        match option.to_ascii_uppercase().as_slice() {
            b"ENCRYPTED" => {
                let setting: Encrypted = text(value)
                    .parse()
                    .map_err(|e: String| Reply::error(format!("ERR {e}")))?;
                options = options.encrypted(setting);
            }
            b"KEY_ID" => {
                let id = parse_i64(value)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| Reply::error("ERR KEY_ID must be a key id (0 … 4294967295)"))?;
                options = options.encryption_key_id(id);
            }
            _ => return Err(syntax_error()),
        }
    }
    Ok(options)
}

pub(super) fn table(shared: &Shared, _: &mut Session, args: &Args) -> (Reply, After) {
    let db = &shared.db;
    let sub = args[1].to_ascii_uppercase();
    let name = args.get(2).map(|n| text(n));
    reply(match (sub.as_slice(), name) {
        (b"CREATE", Some(name)) => match table_options(&args[3..]) {
            Ok(options) => match db.create_table(&name, options) {
                Ok(_) => Reply::ok(),
                Err(error) => engine_error(&error),
            },
            Err(error) => error,
        },
        (b"ALTER", Some(name)) => match table_options(&args[3..]) {
            Ok(options) => match db.alter_table(&name, options) {
                Ok(()) => Reply::ok(),
                Err(error) => engine_error(&error),
            },
            Err(error) => error,
        },
        (b"DROP", Some(name)) if args.len() == 3 => match db.drop_table(&name) {
            Ok(()) => Reply::ok(),
            Err(error) => engine_error(&error),
        },
        (b"LIST", None) => match db.tables() {
            Ok(tables) => Reply::Array(
                tables
                    .into_iter()
                    .map(|t| {
                        Reply::Map(vec![
                            field("name", Reply::bulk(&t.name)),
                            field("space_id", Reply::Integer(i64::from(t.space_id))),
                            field("encrypted", Reply::Integer(i64::from(t.encrypted))),
                            field("key_id", Reply::Integer(i64::from(t.key_id))),
                            field("key_version", Reply::Integer(i64::from(t.key_version))),
                            field("pages", Reply::Integer(i64::from(t.pages))),
                        ])
                    })
                    .collect(),
            ),
            Err(error) => engine_error(&error),
        },
        _ => Reply::error(format!(
            "ERR unknown SB.TABLE form; use SB.TABLE CREATE|ALTER|DROP name … or SB.TABLE LIST (got '{}')",
            text(&args[1])
        )),
    })
}

pub(super) fn use_table(shared: &Shared, session: &mut Session, args: &Args) -> (Reply, After) {
    let name = text(&args[1]);
    reply(match shared.db.table(&name) {
        Ok(_) => {
            session.table = name;
            Reply::ok()
        }
        Err(error) => engine_error(&error),
    })
}

pub(super) fn encryption(shared: &Shared, _: &mut Session, args: &Args) -> (Reply, After) {
    let sub = args[1].to_ascii_uppercase();
    reply(match (sub.as_slice(), args.len()) {
        (b"STATUS", 2) => match shared.db.encryption_status() {
            Ok(rows) => Reply::Array(
                rows.into_iter()
                    .map(|row| {
                        Reply::Map(
                            STATUS_COLUMNS
                                .iter()
                                .zip(row.fields())
                                .map(|(name, value)| field(name, Reply::bulk(value)))
                                .collect(),
                        )
                    })
                    .collect(),
            ),
            Err(error) => engine_error(&error),
        },
        (b"WAIT", 2) => match shared.db.wait_for_encryption(|_| {}) {
            Ok(()) => Reply::ok(),
            Err(error) => engine_error(&error),
        },
        _ => Reply::error("ERR use SB.ENCRYPTION STATUS or SB.ENCRYPTION WAIT"),
    })
}

pub(super) fn key(shared: &Shared, _: &mut Session, args: &Args) -> (Reply, After) {
    if !args[1].eq_ignore_ascii_case(b"ROTATE") || args.len() > 4 {
        return reply(Reply::error("ERR use SB.KEY ROTATE id [REENCRYPT|REWRAP]"));
    }
    let Some(id) = parse_i64(&args[2]).and_then(|n| u32::try_from(n).ok()) else {
        return reply(Reply::error("ERR key id must be a number (0 … 4294967295)"));
    };
    let policy = match args.get(3).map(|p| text(p).parse::<RotationPolicy>()) {
        None => RotationPolicy::Reencrypt,
        Some(Ok(policy)) => policy,
        Some(Err(e)) => return reply(Reply::error(format!("ERR {e}"))),
    };
    reply(match shared.db.rotate_key(id, policy) {
        Ok(report) => Reply::Map(vec![
            field("key_id", Reply::Integer(i64::from(id))),
            field("version", Reply::Integer(i64::from(report.version))),
            field("spaces", Reply::Integer(report.spaces.len() as i64)),
            field(
                "log_rewrapped",
                Reply::Integer(i64::from(report.log_rewrapped)),
            ),
        ]),
        Err(error) => engine_error(&error),
    })
}

pub(super) fn checkpoint(shared: &Shared, _: &mut Session, _: &Args) -> (Reply, After) {
    reply(match shared.db.checkpoint() {
        Ok(()) => Reply::ok(),
        Err(error) => engine_error(&error),
    })
}

pub(super) fn stats(shared: &Shared, _: &mut Session, _: &Args) -> (Reply, After) {
    let s = shared.db.stats();
    let n = |v: u64| Reply::Integer(v as i64);
    reply(Reply::Map(vec![
        field("hits", n(s.hits)),
        field("misses", n(s.misses)),
        field("pages_read", n(s.pages_read)),
        field("pages_written", n(s.pages_written)),
        field("pages_decrypted", n(s.pages_decrypted)),
        field("pages_encrypted", n(s.pages_encrypted)),
        field("pages_reencrypted", n(s.pages_reencrypted)),
        field("evictions", n(s.evictions)),
        field("dirty_pages", n(s.dirty_pages)),
        field("frames", n(s.frames)),
        field("redo_commits", n(s.log.commits)),
        field("redo_fsyncs", n(s.log.fsyncs)),
        field("redo_bytes_written", n(s.log.bytes_written)),
        field("checkpoints", n(s.log.checkpoints)),
    ]))
}
