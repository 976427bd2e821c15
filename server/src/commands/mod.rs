//! The command table and how a command runs.
//!
//! Two kinds of command:
//!
//! * **data commands** (`strings.rs`, `keyspace.rs`) run inside one engine transaction: on
//!   their own, a transaction per command (so `INCR`, `MSET`, `SET … NX` are atomic); after
//!   `MULTI`, every queued command in the one transaction `EXEC` commits. They see the
//!   session's table and get a [`DataCtx`].
//! * **other commands** (`connection.rs`, `server_info.rs`, `admin.rs`, `multi.rs`) get the
//!   server and the session directly.
//!
//! A data command fails in one of two ways: [`Failure::Reply`] is the command's own error
//! (`ERR value is not an integer`), which leaves the transaction usable — in EXEC the
//! other commands still apply, as in Redis; [`Failure::Engine`] (a lock wait timeout, an IO
//! error) rolls the whole transaction back.

mod admin;
mod connection;
mod keyspace;
mod multi;
mod server_info;
mod strings;

use crate::reply::Reply;
use crate::server::Shared;
use crate::session::{Args, Session};
use strongbox_engine::{Table, Transaction};

/// What the connection does after replying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    Continue,
    /// `QUIT`: close this connection.
    Close,
    /// `SHUTDOWN`: close, and stop the server.
    Shutdown,
}

/// Why a data command did not produce its reply.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command's own error reply; the transaction stays usable.
    Reply(Reply),
    /// The engine failed; the transaction must be rolled back.
    Engine(strongbox_engine::Error),
}

impl From<strongbox_engine::Error> for Failure {
    fn from(error: strongbox_engine::Error) -> Failure {
        Failure::Engine(error)
    }
}

pub(crate) type DataResult = Result<Reply, Failure>;

/// What a data command works with.
pub(crate) struct DataCtx<'a> {
    pub txn: Transaction<'a>,
    pub table: Table,
    pub session: &'a mut Session,
    /// The command runs on its own (not in EXEC).
    alone: bool,
    db: &'a strongbox_engine::Db,
}

impl DataCtx<'_> {
    /// Writes one key as the command's only write. On its own a command then uses the
    /// engine's autocommit write (one B+tree operation: atomic by itself, no undo log),
    /// which costs a fraction of a transaction; in EXEC it joins the block's transaction.
    pub fn put_only(&mut self, key: &[u8], value: &[u8]) -> Result<(), Failure> {
        if self.alone {
            self.db.put(&self.table, key, value)?;
        } else {
            self.txn.put(&self.table, key, value)?;
        }
        Ok(())
    }
}

type DataFn = fn(&mut DataCtx<'_>, &Args) -> DataResult;
type PlainFn = fn(&Shared, &mut Session, &Args) -> (Reply, After);

#[derive(Clone, Copy)]
enum Handler {
    Data(DataFn),
    Plain(PlainFn),
}

/// Allowed before AUTH.
const NOAUTH: u8 = 1;
/// Runs at once even inside MULTI (it controls the transaction or the connection).
const IMMEDIATE: u8 = 2;

/// One row of the command table.
#[derive(Clone, Copy)]
pub(crate) struct Spec {
    pub name: &'static str,
    /// Redis' convention: `n > 0` exactly n arguments (name included), `-n` at least n.
    pub arity: i32,
    flags: u8,
    handler: Handler,
}

impl Spec {
    const fn data(name: &'static str, arity: i32, handler: DataFn) -> Spec {
        Spec {
            name,
            arity,
            flags: 0,
            handler: Handler::Data(handler),
        }
    }

    const fn plain(name: &'static str, arity: i32, flags: u8, handler: PlainFn) -> Spec {
        Spec {
            name,
            arity,
            flags,
            handler: Handler::Plain(handler),
        }
    }

    fn arity_ok(&self, count: usize) -> bool {
        let count = count as i64;
        let arity = i64::from(self.arity);
        if arity >= 0 {
            count == arity
        } else {
            count >= -arity
        }
    }

    pub fn is_data(&self) -> bool {
        matches!(self.handler, Handler::Data(_))
    }
}

/// Every command, by name (lower case).
pub(crate) const COMMANDS: &[Spec] = &[
    // connection
    Spec::plain("ping", -1, 0, connection::ping),
    Spec::plain("echo", 2, 0, connection::echo),
    Spec::plain("hello", -1, NOAUTH | IMMEDIATE, connection::hello),
    Spec::plain("auth", -2, NOAUTH | IMMEDIATE, connection::auth),
    Spec::plain("select", 2, 0, connection::select),
    Spec::plain("client", -2, 0, connection::client),
    Spec::plain("quit", -1, NOAUTH | IMMEDIATE, connection::quit),
    Spec::plain("reset", 1, NOAUTH | IMMEDIATE, connection::reset),
    // server
    Spec::plain("command", -1, 0, server_info::command),
    Spec::plain("config", -2, 0, server_info::config),
    Spec::plain("info", -1, 0, server_info::info),
    Spec::plain("dbsize", 1, 0, server_info::dbsize),
    Spec::plain("flushdb", -1, 0, server_info::flushdb),
    Spec::plain("shutdown", -1, 0, server_info::shutdown),
    // transactions
    Spec::plain("multi", 1, IMMEDIATE, multi::multi),
    Spec::plain("exec", 1, IMMEDIATE, multi::exec),
    Spec::plain("discard", 1, IMMEDIATE, multi::discard),
    Spec::plain("watch", -2, IMMEDIATE, multi::watch),
    Spec::plain("unwatch", 1, IMMEDIATE, multi::unwatch),
    // strings
    Spec::data("get", 2, strings::get),
    Spec::data("set", -3, strings::set),
    Spec::data("setnx", 3, strings::setnx),
    Spec::data("getset", 3, strings::getset),
    Spec::data("getdel", 2, strings::getdel),
    Spec::data("mget", -2, strings::mget),
    Spec::data("mset", -3, strings::mset),
    Spec::data("msetnx", -3, strings::msetnx),
    Spec::data("incr", 2, strings::incr),
    Spec::data("decr", 2, strings::decr),
    Spec::data("incrby", 3, strings::incrby),
    Spec::data("decrby", 3, strings::decrby),
    Spec::data("append", 3, strings::append),
    Spec::data("strlen", 2, strings::strlen),
    Spec::data("getrange", 4, strings::getrange),
    // keyspace
    Spec::data("del", -2, keyspace::del),
    Spec::data("unlink", -2, keyspace::del),
    Spec::data("exists", -2, keyspace::exists),
    Spec::data("type", 2, keyspace::type_of),
    Spec::data("scan", -2, keyspace::scan),
    Spec::data("keys", 2, keyspace::keys),
    Spec::data("randomkey", 1, keyspace::randomkey),
    Spec::data("sb.range", 3, keyspace::range),
    // Strongbox administration
    Spec::plain("sb.table", -2, 0, admin::table),
    Spec::plain("sb.use", 2, 0, admin::use_table),
    Spec::plain("sb.encryption", -2, 0, admin::encryption),
    Spec::plain("sb.key", -3, 0, admin::key),
    Spec::plain("sb.checkpoint", 1, 0, admin::checkpoint),
    Spec::plain("sb.stats", 1, 0, admin::stats),
];

/// The command called `name` (any case).
pub(crate) fn lookup(name: &[u8]) -> Option<&'static Spec> {
    let name = name.to_ascii_lowercase();
    COMMANDS.iter().find(|spec| spec.name.as_bytes() == name)
}

/// Runs one command for `session` and returns its reply and what to do next.
pub(crate) fn execute(shared: &Shared, session: &mut Session, args: Args) -> (Reply, After) {
    let Some(name) = args.first() else {
        return (Reply::error("ERR empty command"), After::Continue);
    };
    let Some(spec) = lookup(name) else {
        if let Some(multi) = session.multi.as_mut() {
            multi.failed = true;
        }
        return (unknown_command(&args), After::Continue);
    };
    if !session.authenticated && spec.flags & NOAUTH == 0 {
        return (
            Reply::error("NOAUTH Authentication required."),
            After::Continue,
        );
    }
    if !spec.arity_ok(args.len()) {
        if let Some(multi) = session.multi.as_mut() {
            multi.failed = true;
        }
        return (wrong_arity(spec.name), After::Continue);
    }
    if let Some(multi) = session.multi.as_mut() {
        if spec.flags & IMMEDIATE == 0 {
            multi.queued.push(args);
            return (Reply::Simple("QUEUED".into()), After::Continue);
        }
    }
    shared.count_command();
    match spec.handler {
        Handler::Plain(run) => run(shared, session, &args),
        Handler::Data(run) => (run_alone(shared, session, run, &args), After::Continue),
    }
}

/// A data command in a transaction of its own.
fn run_alone(shared: &Shared, session: &mut Session, run: DataFn, args: &Args) -> Reply {
    let table = match shared.session_table(session) {
        Ok(table) => table,
        Err(reply) => return reply,
    };
    let txn = match shared.db.begin() {
        Ok(txn) => txn,
        Err(error) => return engine_error(&error),
    };
    let mut ctx = DataCtx {
        txn,
        table,
        session,
        alone: true,
        db: &shared.db,
    };
    let outcome = run(&mut ctx, args);
    let DataCtx { txn, .. } = ctx;
    match outcome {
        Ok(reply) => match txn.commit() {
            Ok(()) => reply,
            Err(error) => engine_error(&error),
        },
        Err(failure) => {
            let _ = txn.rollback();
            match failure {
                Failure::Reply(reply) => reply,
                Failure::Engine(error) => engine_error(&error),
            }
        }
    }
}

/// An engine failure in the middle of EXEC, with the transaction to roll back.
pub(crate) type BlockFailed<'a> = Box<(strongbox_engine::Error, Transaction<'a>)>;

/// Runs the data commands `queued` in `txn` (EXEC): one reply each.
pub(crate) fn run_queued<'a>(
    shared: &'a Shared,
    session: &'a mut Session,
    txn: Transaction<'a>,
    table: Table,
    queued: &[Args],
) -> Result<(Vec<Reply>, Transaction<'a>), BlockFailed<'a>> {
    let mut ctx = DataCtx {
        txn,
        table,
        session,
        alone: false,
        db: &shared.db,
    };
    let mut replies = Vec::with_capacity(queued.len());
    for args in queued {
        let spec = lookup(&args[0]).expect("only known commands are queued");
        let reply = match spec.handler {
            Handler::Data(run) => match run(&mut ctx, args) {
                Ok(reply) => reply,
                Err(Failure::Reply(reply)) => reply,
                Err(Failure::Engine(error)) => return Err(Box::new((error, ctx.txn))),
            },
            Handler::Plain(run) => {
                shared.count_command();
                let reply = run(shared, ctx.session, args).0;
                // SELECT or SB.USE inside the block: later commands use the new table.
                // (If the table cannot be opened, they stay on the old one.)
                if ctx.session.table != ctx.table.name() {
                    if let Ok(table) = shared.session_table(ctx.session) {
                        ctx.table = table;
                    }
                }
                reply
            }
        };
        replies.push(reply);
    }
    Ok((replies, ctx.txn))
}

/// A reply after which the connection goes on (most plain commands).
pub(crate) fn reply(reply: Reply) -> (Reply, After) {
    (reply, After::Continue)
}

/// Redis' text for an unknown command.
pub(crate) fn unknown_command(args: &Args) -> Reply {
    let name = String::from_utf8_lossy(&args[0]);
    let shown: Vec<String> = args[1..]
        .iter()
        .take(8)
        .map(|a| format!("'{}'", String::from_utf8_lossy(a)))
        .collect();
    Reply::error(format!(
        "ERR unknown command '{}', with args beginning with: {}",
        truncate(&name, 128),
        truncate(&shown.join(" "), 128)
    ))
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Redis' text for a wrong argument count.
pub(crate) fn wrong_arity(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// An engine error as a reply, on one line.
pub(crate) fn engine_error(error: &strongbox_engine::Error) -> Reply {
    Reply::error(format!(
        "ERR {}",
        error.to_string().replace(['\r', '\n'], " ")
    ))
}

/// Redis' "syntax error".
pub(crate) fn syntax_error() -> Reply {
    Reply::error("ERR syntax error")
}

/// Redis' answer to an argument that should be an integer and is not one (or is too big).
pub(crate) fn not_integer() -> Failure {
    Failure::Reply(Reply::error("ERR value is not an integer or out of range"))
}

/// An argument as text (lossy), for messages.
pub(crate) fn text(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).into_owned()
}

/// Parses a whole decimal i64 like Redis' `string2ll`: no spaces, no leading `+`.
pub(crate) fn parse_i64(arg: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(arg).ok()?;
    if text.is_empty() || text.starts_with('+') || text.len() > 20 {
        return None;
    }
    text.parse().ok()
}
