//! MULTI / EXEC / DISCARD / WATCH / UNWATCH, on one engine transaction.
//!
//! Commands after MULTI are checked (name, arity) and queued; EXEC begins one engine
//! transaction, re-reads every WATCHed key *with its lock taken* (`get_for_update`) and
//! aborts with a null reply if any changed since WATCH, runs the queue, and commits: the
//! whole block is atomic, isolated (other clients see none of it until commit) and as
//! durable as `flush_log_at_commit` says. A command's own error (wrong type of value) is
//! its reply in the array and the rest still apply, as in Redis; an engine failure (a lock
//! wait timeout) rolls the whole block back.
//!
//! WATCH compares values: a key changed and changed back between WATCH and EXEC counts as
//! unchanged (Redis would abort). Documented in docs/server.md.

use super::{engine_error, reply, run_queued, After};
use crate::reply::Reply;
use crate::server::Shared;
use crate::session::{Args, Multi, Session, Watched};

pub(super) fn multi(_: &Shared, session: &mut Session, _: &Args) -> (Reply, After) {
    if session.multi.is_some() {
        return reply(Reply::error("ERR MULTI calls can not be nested"));
    }
    session.multi = Some(Multi::default());
    reply(Reply::ok())
}

pub(super) fn discard(_: &Shared, session: &mut Session, _: &Args) -> (Reply, After) {
    if session.multi.take().is_none() {
        return reply(Reply::error("ERR DISCARD without MULTI"));
    }
    session.watched.clear();
    reply(Reply::ok())
}

pub(super) fn watch(shared: &Shared, session: &mut Session, args: &Args) -> (Reply, After) {
    if session.multi.is_some() {
        return reply(Reply::error("ERR WATCH inside MULTI is not allowed"));
    }
    let table = match shared.session_table(session) {
        Ok(table) => table,
        Err(error) => return reply(error),
    };
    for key in &args[1..] {
        match shared.db.get(&table, key) {
            Ok(value) => session.watched.push(Watched {
                table: session.table.clone(),
                key: key.clone(),
                value,
            }),
            Err(error) => return reply(engine_error(&error)),
        }
    }
    reply(Reply::ok())
}

pub(super) fn unwatch(_: &Shared, session: &mut Session, _: &Args) -> (Reply, After) {
    session.watched.clear();
    reply(Reply::ok())
}

pub(super) fn exec(shared: &Shared, session: &mut Session, _: &Args) -> (Reply, After) {
    let Some(multi) = session.multi.take() else {
        return reply(Reply::error("ERR EXEC without MULTI"));
    };
    let watched = std::mem::take(&mut session.watched);
    if multi.failed {
        return reply(Reply::error(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
    }
    reply(match run_block(shared, session, &multi.queued, &watched) {
        Ok(replies) => replies,
        Err(error) => error,
    })
}

/// The EXEC proper: `Ok(null array)` when a watched key changed.
fn run_block(
    shared: &Shared,
    session: &mut Session,
    queued: &[Args],
    watched: &[Watched],
) -> Result<Reply, Reply> {
    let table = shared.session_table(session)?;
    let mut txn = shared.db.begin().map_err(|e| engine_error(&e))?;
    for watch in watched {
        let unchanged = shared.table(&watch.table, true).and_then(|t| {
            txn.get_for_update(&t, &watch.key)
                .map_err(|e| engine_error(&e))
        });
        match unchanged {
            Ok(now) if now == watch.value => {}
            Ok(_) => {
                let _ = txn.rollback();
                return Ok(Reply::NullArray);
            }
            Err(error) => {
                let _ = txn.rollback();
                return Err(error);
            }
        }
    }
    match run_queued(shared, session, txn, table, queued) {
        Ok((replies, txn)) => {
            txn.commit().map_err(|e| engine_error(&e))?;
            Ok(Reply::Array(replies))
        }
        Err(failed) => {
            let (error, txn) = *failed;
            let _ = txn.rollback();
            Err(Reply::error(format!(
                "EXECABORT Transaction rolled back: {}",
                error.to_string().replace(['\r', '\n'], " ")
            )))
        }
    }
}
