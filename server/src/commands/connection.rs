//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, CLIENT, QUIT, RESET.

use super::{reply, text, wrong_arity, After};
use crate::reply::Reply;
use crate::server::Shared;
use crate::session::{Args, Session};

pub(super) fn ping(_: &Shared, _: &mut Session, args: &Args) -> (Reply, After) {
    reply(match args.len() {
        1 => Reply::Simple("PONG".into()),
        2 => Reply::Bulk(args[1].clone()),
        _ => wrong_arity("ping"),
    })
}

pub(super) fn echo(_: &Shared, _: &mut Session, args: &Args) -> (Reply, After) {
    reply(Reply::Bulk(args[1].clone()))
}

/// Compares without an early exit, so the time taken says nothing about where two
/// passwords first differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    diff == 0
}

/// Checks `user`/`password` against `requirepass`; only the user `default` exists.
fn check_password(shared: &Shared, user: &[u8], password: &[u8]) -> Result<(), Reply> {
    let Some(expected) = &shared.config.requirepass else {
        return Err(Reply::error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ));
    };
    let password_ok = constant_time_eq(password, expected.as_bytes());
    if user.eq_ignore_ascii_case(b"default") && password_ok {
        Ok(())
    } else {
        Err(Reply::error(
            "WRONGPASS invalid username-password pair or user is disabled.",
        ))
    }
}

pub(super) fn auth(shared: &Shared, session: &mut Session, args: &Args) -> (Reply, After) {
    let (user, password) = match args.len() {
        2 => (&b"default"[..], &args[1]),
        3 => (args[1].as_slice(), &args[2]),
        _ => return reply(super::syntax_error()),
    };
    reply(match check_password(shared, user, password) {
        Ok(()) => {
            session.authenticated = true;
            Reply::ok()
        }
        Err(error) => error,
    })
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
pub(super) fn hello(shared: &Shared, session: &mut Session, args: &Args) -> (Reply, After) {
    let mut resp = session.resp;
    if let Some(version) = args.get(1) {
        match version.as_slice() {
            b"2" => resp = 2,
            b"3" => resp = 3,
            _ => return reply(Reply::error("NOPROTO unsupported protocol version")),
        }
    }
    let mut options = args.iter().skip(2);
    let mut name = None;
    while let Some(option) = options.next() {
        match option.to_ascii_uppercase().as_slice() {
            b"AUTH" => {
                let (Some(user), Some(password)) = (options.next(), options.next()) else {
                    return reply(super::syntax_error());
                };
                if let Err(error) = check_password(shared, user, password) {
                    return reply(error);
                }
                session.authenticated = true;
            }
            b"SETNAME" => match options.next() {
                Some(value) => name = Some(value.clone()),
                None => return reply(super::syntax_error()),
            },
            _ => return reply(super::syntax_error()),
        }
    }
    if !session.authenticated {
        return reply(Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        ));
    }
    session.resp = resp;
    if name.is_some() {
        session.name = name;
    }
    let field = |k: &str, v: Reply| (Reply::bulk(k), v);
    reply(Reply::Map(vec![
        field("server", Reply::bulk("strongbox")),
        field("version", Reply::bulk(env!("CARGO_PKG_VERSION"))),
        field("proto", Reply::Integer(i64::from(resp))),
        field("id", Reply::Integer(session.id as i64)),
        field("mode", Reply::bulk("standalone")),
        field("role", Reply::bulk("master")),
        field("modules", Reply::Array(Vec::new())),
    ]))
}

pub(super) fn select(shared: &Shared, session: &mut Session, args: &Args) -> (Reply, After) {
    let index = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|n| n.parse::<u32>().ok());
    reply(match index {
        Some(n) if n < shared.config.databases => {
            session.table = format!("db{n}");
            Reply::ok()
        }
        Some(_) => Reply::error("ERR DB index is out of range"),
        None => Reply::error("ERR value is not an integer or out of range"),
    })
}

pub(super) fn client(_: &Shared, session: &mut Session, args: &Args) -> (Reply, After) {
    let sub = args[1].to_ascii_uppercase();
    reply(match (sub.as_slice(), args.len()) {
        (b"SETNAME", 3) => {
            if args[2].iter().any(|&b| b <= b' ' || b > b'~') {
                Reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                )
            } else {
                session.name = (!args[2].is_empty()).then(|| args[2].clone());
                Reply::ok()
            }
        }
        (b"GETNAME", 2) => Reply::bulk_or_null(session.name.clone()),
        (b"ID", 2) => Reply::Integer(session.id as i64),
        (b"SETINFO", 4) => match args[2].to_ascii_uppercase().as_slice() {
            b"LIB-NAME" => {
                session.lib_name = Some(args[3].clone());
                Reply::ok()
            }
            b"LIB-VER" => {
                session.lib_version = Some(args[3].clone());
                Reply::ok()
            }
            _ => Reply::error(format!("ERR Unrecognized option '{}'", text(&args[2]))),
        },
        (b"INFO", 2) => Reply::Verbatim(client_line(session) + "\n"),
        (b"LIST", _) => Reply::Verbatim(client_line(session) + "\n"),
        (b"NO-EVICT" | b"NO-TOUCH", 3) => Reply::ok(),
        (b"SETNAME" | b"GETNAME" | b"ID" | b"SETINFO" | b"INFO", _) => Reply::error(format!(
            "ERR wrong number of arguments for 'client|{}' command",
            text(&args[1]).to_ascii_lowercase()
        )),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            text(&args[1])
        )),
    })
}

fn client_line(session: &Session) -> String {
    let show = |v: &Option<Vec<u8>>| v.as_deref().map(text).unwrap_or_default();
    format!(
        "id={} addr={} name={} db={} resp={} lib-name={} lib-ver={}",
        session.id,
        session.peer,
        show(&session.name),
        session.table,
        session.resp,
        show(&session.lib_name),
        show(&session.lib_version)
    )
}

pub(super) fn quit(_: &Shared, _: &mut Session, _: &Args) -> (Reply, After) {
    (Reply::ok(), After::Close)
}

pub(super) fn reset(shared: &Shared, session: &mut Session, _: &Args) -> (Reply, After) {
    session.reset(shared.config.requirepass.is_none());
    reply(Reply::Simple("RESET".into()))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
