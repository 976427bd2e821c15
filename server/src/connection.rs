//! One client connection: read bytes, parse every complete command, run them in order,
//! write all their replies at once (pipelined requests get their replies in order, in as
//! few writes as they arrived in), repeat.
//!
//! A protocol error (`resp.rs`: oversized or malformed request) is answered with
//! `-ERR Protocol error: …` and the connection is closed, as Redis does; the server and the
//! other clients go on. A read of 0 bytes (the client left, or shutdown closed our read
//! side) ends the connection after the commands already received are answered.

use crate::commands::{self, After};
use crate::resp::Parser;
use crate::server::Shared;
use crate::session::Session;
use std::io::{Read, Write};
use std::net::TcpStream;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;

pub(crate) fn serve(shared: &Shared, mut stream: TcpStream, id: u64) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut session = Session::new(id, peer, shared.config.requirepass.is_none());
    let mut parser = Parser::new(shared.config.limits);
    let mut input = vec![0u8; READ_CHUNK];
    let mut output = Vec::new();
    loop {
        let after = answer_complete(shared, &mut session, &mut parser, &mut output);
        if !output.is_empty() {
            if stream.write_all(&output).is_err() {
                return;
            }
            output.clear();
        }
        match after {
            Some(After::Continue) | None => {}
            Some(After::Close) => return,
            Some(After::Shutdown) => {
                shared.request_shutdown();
                return;
            }
        }
        if after.is_none() {
            return; // a protocol error was answered
        }
        let read = match stream.read(&mut input) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Err(error) = parser.feed(&input[..read]) {
            let _ = stream.write_all(format!("-{error}\r\n").as_bytes());
            return;
        }
    }
}

/// Runs every complete command in the parser and encodes the replies into `output`.
/// `Some(Continue)` to read more, `Some(Close | Shutdown)` to stop after writing, `None`
/// after a protocol error (its reply is in `output`).
fn answer_complete(
    shared: &Shared,
    session: &mut Session,
    parser: &mut Parser,
    output: &mut Vec<u8>,
) -> Option<After> {
    loop {
        match parser.next_command(session.authenticated) {
            Ok(Some(args)) => {
                let (reply, after) = commands::execute(shared, session, args);
                reply.encode(session.resp, output);
                if after != After::Continue {
                    return Some(after);
                }
            }
            Ok(None) => return Some(After::Continue),
            Err(error) => {
                output.extend_from_slice(format!("-{error}\r\n").as_bytes());
                return None;
            }
        }
    }
}
