//! String commands: GET, SET (NX, XX, GET), SETNX, GETSET, GETDEL, MGET, MSET, MSETNX,
//! INCR/DECR/INCRBY/DECRBY, APPEND, STRLEN, GETRANGE.
//!
//! Every read that decides a write takes the key's lock first
//! (`Transaction::get_for_update`), so a read-modify-write cannot lose a concurrent update.
//! Multi-key writes lock their keys in sorted order, so two of them cannot deadlock.
//! Expiry (EX, PX, EXAT, PXAT, KEEPTTL) is not supported: a clear error, nothing written.

use super::{not_integer, parse_i64, syntax_error, text, DataCtx, DataResult, Failure};
use crate::reply::Reply;
use crate::session::Args;
use std::collections::BTreeMap;

pub(super) fn get(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    Ok(Reply::bulk_or_null(ctx.txn.get(&ctx.table, &args[1])?))
}

pub(super) fn set(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let (mut nx, mut xx, mut get) = (false, false, false);
    for option in &args[3..] {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"GET" => get = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" | b"KEEPTTL" | b"PERSIST" => {
                return Err(Failure::Reply(Reply::error(format!(
                    "ERR SET {}: key expiry is not supported by Strongbox",
                    text(option).to_ascii_uppercase()
                ))));
            }
            _ => return Err(Failure::Reply(syntax_error())),
        }
    }
    let (key, value) = (&args[1], &args[2]);
    let old = if nx || xx || get {
        ctx.txn.get_for_update(&ctx.table, key)?
    } else {
        None
    };
    let allowed = !(nx && old.is_some() || xx && old.is_none());
    if allowed && !(nx || xx || get) {
        ctx.put_only(key, value)?; // a plain SET: no read decides it
    } else if allowed {
        ctx.txn.put(&ctx.table, key, value)?;
    }
    Ok(match (get, allowed) {
        (true, _) => Reply::bulk_or_null(old),
        (false, true) => Reply::ok(),
        (false, false) => Reply::Null,
    })
}

pub(super) fn setnx(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    if ctx.txn.get_for_update(&ctx.table, &args[1])?.is_some() {
        return Ok(Reply::Integer(0));
    }
    ctx.txn.put(&ctx.table, &args[1], &args[2])?;
    Ok(Reply::Integer(1))
}

pub(super) fn getset(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let old = ctx.txn.get_for_update(&ctx.table, &args[1])?;
    ctx.txn.put(&ctx.table, &args[1], &args[2])?;
    Ok(Reply::bulk_or_null(old))
}

pub(super) fn getdel(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let old = ctx.txn.get_for_update(&ctx.table, &args[1])?;
    if old.is_some() {
        ctx.txn.delete(&ctx.table, &args[1])?;
    }
    Ok(Reply::bulk_or_null(old))
}

pub(super) fn mget(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let mut values = Vec::with_capacity(args.len() - 1);
    for key in &args[1..] {
        values.push(Reply::bulk_or_null(ctx.txn.get(&ctx.table, key)?));
    }
    Ok(Reply::Array(values))
}

/// The pairs of MSET/MSETNX, last value per key, in key order (the lock order).
fn pairs(args: &Args) -> Result<BTreeMap<&[u8], &[u8]>, Failure> {
    if args.len() % 2 != 1 {
        let name = text(&args[0]).to_ascii_lowercase();
        return Err(Failure::Reply(super::wrong_arity(&name)));
    }
    Ok(args[1..]
        .chunks(2)
        .map(|pair| (pair[0].as_slice(), pair[1].as_slice()))
        .collect())
}

pub(super) fn mset(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    for (key, value) in pairs(args)? {
        ctx.txn.put(&ctx.table, key, value)?;
    }
    Ok(Reply::ok())
}

pub(super) fn msetnx(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let pairs = pairs(args)?;
    for key in pairs.keys() {
        if ctx.txn.get_for_update(&ctx.table, key)?.is_some() {
            return Ok(Reply::Integer(0));
        }
    }
    for (key, value) in pairs {
        ctx.txn.put(&ctx.table, key, value)?;
    }
    Ok(Reply::Integer(1))
}

/// INCRBY and friends: the value must be a decimal i64 (absent = 0); overflow is an error.
fn add(ctx: &mut DataCtx<'_>, key: &[u8], delta: i64) -> DataResult {
    let current = match ctx.txn.get_for_update(&ctx.table, key)? {
        None => 0,
        Some(bytes) => parse_i64(&bytes).ok_or_else(not_integer)?,
    };
    let next = current
        .checked_add(delta)
        .ok_or_else(|| Failure::Reply(Reply::error("ERR increment or decrement would overflow")))?;
    ctx.txn.put(&ctx.table, key, next.to_string().as_bytes())?;
    Ok(Reply::Integer(next))
}

pub(super) fn incr(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    add(ctx, &args[1], 1)
}

pub(super) fn decr(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    add(ctx, &args[1], -1)
}

pub(super) fn incrby(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let delta = parse_i64(&args[2]).ok_or_else(not_integer)?;
    add(ctx, &args[1], delta)
}

pub(super) fn decrby(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let delta = parse_i64(&args[2])
        .and_then(i64::checked_neg)
        .ok_or_else(not_integer)?;
    add(ctx, &args[1], delta)
}

pub(super) fn append(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let mut value = ctx
        .txn
        .get_for_update(&ctx.table, &args[1])?
        .unwrap_or_default();
    value.extend_from_slice(&args[2]);
    ctx.txn.put(&ctx.table, &args[1], &value)?;
    Ok(Reply::Integer(value.len() as i64))
}

pub(super) fn strlen(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let len = ctx.txn.get(&ctx.table, &args[1])?.map_or(0, |v| v.len());
    Ok(Reply::Integer(len as i64))
}

pub(super) fn getrange(ctx: &mut DataCtx<'_>, args: &Args) -> DataResult {
    let (Some(start), Some(end)) = (parse_i64(&args[2]), parse_i64(&args[3])) else {
        return Err(not_integer());
    };
    let value = ctx.txn.get(&ctx.table, &args[1])?.unwrap_or_default();
    Ok(Reply::Bulk(range_of(&value, start, end).to_vec()))
}

/// Redis' GETRANGE indexes: negative counts from the end, both ends inclusive, clamped.
fn range_of(value: &[u8], start: i64, end: i64) -> &[u8] {
    let len = value.len() as i64;
    if len == 0 || (start < 0 && end < 0 && start > end) {
        return &[];
    }
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 {
        (len + end).max(0)
    } else {
        end.min(len - 1)
    };
    if start > end || start >= len {
        return &[];
    }
    &value[start as usize..=end as usize]
}

#[cfg(test)]
mod tests {
    use super::range_of;

    #[test]
    fn getrange_indexes_like_redis() {
        let v = b"This is a string";
        assert_eq!(range_of(v, 0, 3), b"This");
        assert_eq!(range_of(v, -3, -1), b"ing");
        assert_eq!(range_of(v, 0, -1), v);
        assert_eq!(range_of(v, 10, 100), b"string");
        assert_eq!(range_of(v, 5, 2), b"");
        assert_eq!(range_of(b"", 0, -1), b"");
        assert_eq!(range_of(v, -100, 1), b"Th");
    }
}
