//! # strongbox-server
//!
//! A Redis-protocol (RESP2/RESP3) server over a Strongbox database, so that `redis-cli`,
//! `redis-benchmark` and any Redis client library can use it. `docs/server.md` is the
//! guide (threads, limits, command list, what is not supported).
//!
//! | module        | owns                                                               |
//! |---------------|--------------------------------------------------------------------|
//! | [`resp`]      | the request parser: multibulk and inline, Redis' limits, strict framing |
//! | [`reply`]     | replies and their RESP2/RESP3 encodings                            |
//! | [`glob`]      | Redis glob patterns (KEYS, SCAN MATCH)                             |
//! | `config`      | [`ServerConfig`]: listen address, password, limits                 |
//! | `session`     | one connection's state: protocol, auth, table, MULTI queue, WATCH  |
//! | `commands/`   | the command table and every command, on engine transactions        |
//! | `connection`  | one client: read, parse, run in order (pipelining), write          |
//! | `server`      | [`Server`]: listener, a thread per connection, shutdown            |

#![forbid(unsafe_code)]

mod commands;
mod config;
mod connection;
pub mod glob;
pub mod reply;
pub mod resp;
mod server;
mod session;

pub use config::ServerConfig;
pub use server::{Server, ServerHandle};
