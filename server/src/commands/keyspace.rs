//! Keyspace commands: DEL/UNLINK, EXISTS, TYPE, SCAN, KEYS, RANDOMKEY, and Strongbox's
//! SB.RANGE.
//!
//! Only strings exist, so TYPE says `string` or `none`. SCAN cursors are numbers the session
//! maps to the last key returned (`session.rs`); a scan sees keys in order and never returns
//! one twice. SB.RANGE is the ordered range read SCAN cannot be: it starts at a key the
//! client names and returns values too, in one engine transaction.

use super::{not_integer, parse_i64, syntax_error, DataCtx, DataResult, Failure};
use crate::glob;
use crate::reply::Reply;
use crate::session::Args;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::ops::Bound;

pub(super) fn del(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    // Sorted and deduplicated: locks are taken in key order, and a key named twice
    // counts once, as in Redis.
    let keys: BTreeSet<&[u8]> = args[1..].iter().map(Vec::as_slice).collect();
    let mut deleted = 0;
    for key in keys {
        if ctx.txn.delete(&ctx.table, key)? {
            deleted += 1;
        }
    }
    Ok(Reply::Integer(deleted))
}

pub(super) fn exists(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let mut found = 0;
    for key in &args[1..] {
        if ctx.txn.get(&ctx.table, key)?.is_some() {
            found += 1;
        }
    }
    Ok(Reply::Integer(found))
}

pub(super) fn type_of(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let kind = match ctx.txn.get(&ctx.table, &args[1])? {
        Some(_) => "string",
        None => "none",
    };
    Ok(Reply::Simple(kind.into()))
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]`.
pub(super) fn scan(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let cursor = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| Failure::Reply(Reply::error("ERR invalid cursor")))?;
    let (mut pattern, mut count, mut only_strings) = (None, 10usize, true);
    let mut options = args[2..].iter();
    while let Some(option) = options.next() {
        let value = options
            .next()
            .ok_or_else(|| Failure::Reply(syntax_error()))?;
        match option.to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(value.clone()),
            b"COUNT" => {
                count = parse_i64(value)
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| Failure::Reply(syntax_error()))?
                    .min(100_000) as usize;
            }
            b"TYPE" => only_strings = value.eq_ignore_ascii_case(b"string"),
            _ => return Err(Failure::Reply(syntax_error())),
        }
    }
    let after = match cursor {
        0 => None,
        n => Some(
            ctx.session
                .cursors
                .find(ctx.table.name(), n)
                .ok_or_else(|| Failure::Reply(Reply::error("ERR invalid cursor")))?,
        ),
    };
    let start = match &after {
        Some(key) => Bound::Excluded(key.as_slice()),
        None => Bound::Unbounded,
    };
    let mut keys = Vec::new();
    let mut last = None;
    let mut finished = true;
    let entries = ctx
        .txn
        .range(&ctx.table, (start, Bound::Unbounded), false)?;
    for (examined, entry) in entries.enumerate() {
        let (key, _) = entry?;
        if examined == count {
            finished = false;
            break;
        }
        if only_strings && pattern.as_deref().is_none_or(|p| glob::matches(p, &key)) {
            keys.push(Reply::Bulk(key.clone()));
        }
        last = Some(key);
    }
    let next = match (finished, last) {
        (false, Some(last)) => ctx.session.cursors.save(ctx.table.name(), last),
        _ => 0,
    };
    Ok(Reply::Array(vec![
        Reply::bulk(next.to_string()),
        Reply::Array(keys),
    ]))
}

/// The most records one SB.RANGE returns (SCAN's COUNT is capped the same).
const MAX_RANGE: i64 = 100_000;

/// `SB.RANGE start count`: up to `count` records in key order from the first key
/// `>= start`, as a flat array `[key1, value1, key2, value2, …]` (HGETALL's shape, in RESP2
/// and RESP3 alike, so the order survives). `count` above 100,000 is read as 100,000.
pub(super) fn range(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let count = match parse_i64(&args[2]) {
        None => return Err(not_integer()),
        Some(n) if n < 1 => {
            return Err(Failure::Reply(Reply::error(
                "ERR value is out of range, must be positive",
            )))
        }
        Some(n) => n.min(MAX_RANGE) as usize,
    };
    let start = Bound::Included(args[1].as_slice());
    let mut flat = Vec::with_capacity(2 * count.min(1_024));
    for entry in ctx
        .txn
        .range(&ctx.table, (start, Bound::Unbounded), false)?
        .take(count)
    {
        let (key, value) = entry?;
        flat.push(Reply::Bulk(key));
        flat.push(Reply::Bulk(value));
    }
    Ok(Reply::Array(flat))
}

pub(super) fn keys(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let mut keys = Vec::new();
    for entry in ctx.txn.range(&ctx.table, .., false)? {
        let (key, _) = entry?;
        if glob::matches(&args[1], &key) {
            keys.push(Reply::Bulk(key));
        }
    }
    Ok(Reply::Array(keys))
}

/// The first key at or after a random probe, wrapping to the first key (uniform over the
/// gaps between keys, not over keys — documented in docs/server.md).
pub(super) fn randomkey(ctx: &mut DataCtx<'_>, _args: &Args) -> DataResult {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(ctx.session.id);
    let probe = hasher.finish().to_be_bytes();
    let found = match ctx
        .txn
        .range(
            &ctx.table,
            (Bound::Included(&probe[..]), Bound::Unbounded),
            false,
        )?
        .next()
    {
        Some(entry) => Some(entry?.0),
        None => match ctx.txn.range(&ctx.table, .., false)?.next() {
            Some(entry) => Some(entry?.0),
            None => None,
        },
    };
    Ok(Reply::bulk_or_null(found))
}

/// Keys in `table` (DBSIZE): a full scan.
pub(crate) fn count(
    db: &strongbox_engine::Db,
    table: &strongbox_engine::Table,
) -> Result<i64, strongbox_engine::Error> {
    let mut count = 0;
    for entry in db.range(table, .., false)? {
        entry?;
        count += 1;
    }
    Ok(count)
}
