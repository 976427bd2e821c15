//! [`Server`]: the listener, one thread per connection, and shutdown.
//!
//! **Threads, not an event loop** (`docs/server.md`): every command may block — on a key
//! lock held by another transaction (up to `lock_wait_timeout`), on a group-commit fsync,
//! on a page read — and the engine's API is blocking. A thread per connection keeps a
//! command's code straight-line and isolates a slow client to its own thread. Idle
//! connections cost a parked thread each (a small stack, no CPU: they block in `read`
//! with no timeout); `maxclients` (10,000) bounds them.
//!
//! **Shutdown** (`SHUTDOWN`, or SIGTERM/SIGINT through the CLI): stop accepting, shut the
//! read side of every connection — a connection finishes the commands it already has,
//! writes their replies and exits — join them all, then close the database (a checkpoint:
//! the next start needs no recovery).

use crate::commands;
use crate::config::ServerConfig;
use crate::connection;
use crate::reply::Reply;
use crate::session::Session;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use strongbox_engine::{Db, Encrypted, Table, TableOptions};

/// Stack of a connection thread: commands keep little on the stack.
const CONNECTION_STACK: usize = 512 * 1024;

/// What every connection shares.
pub(crate) struct Shared {
    pub db: Db,
    pub config: ServerConfig,
    pub started: Instant,
    pub port: u16,
    pub clients: AtomicUsize,
    pub next_client_id: AtomicU64,
    pub connections_received: AtomicU64,
    pub commands_processed: AtomicU64,
    pub rejected_connections: AtomicU64,
    /// Set once: stop accepting, let connections finish.
    stopping: AtomicBool,
    /// Guards the open connections (for shutdown) and their threads.
    connections: Mutex<HashMap<u64, (TcpStream, JoinHandle<()>)>>,
    /// Guards creating `db<n>` on first use and FLUSHDB's drop-and-create.
    table_ddl: Mutex<()>,
    /// Signalled when a shutdown is requested.
    shutdown_requested: (Mutex<bool>, Condvar),
}

impl Shared {
    pub fn count_command(&self) {
        self.commands_processed.fetch_add(1, Ordering::Relaxed);
    }

    /// The table called `name`; `db<n>` tables are created (default encryption) on first
    /// use when `create` is set.
    pub fn table(&self, name: &str, create: bool) -> Result<Table, Reply> {
        if let Ok(table) = self.db.table(name) {
            return Ok(table);
        }
        let numbered = name
            .strip_prefix("db")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !(create && numbered) {
            return Err(Reply::error(format!(
                "ERR table '{name}' does not exist (SB.TABLE CREATE it first)"
            )));
        }
        let _ddl = self.table_ddl.lock();
        match self.db.table(name) {
            Ok(table) => Ok(table),
            Err(_) => self
                .db
                .create_table(name, TableOptions::default())
                .map_err(|e| commands::engine_error(&e)),
        }
    }

    /// The table the session's data commands use.
    pub fn session_table(&self, session: &Session) -> Result<Table, Reply> {
        self.table(&session.table, true)
    }

    /// FLUSHDB: drops `name` and creates it again empty with the encryption it had.
    pub fn flush_table(&self, name: &str) -> Result<(), Reply> {
        let _ddl = self.table_ddl.lock();
        let Ok(table) = self.db.table(name) else {
            return Ok(()); // never used: already empty
        };
        let info = table.info();
        let mut options = TableOptions::default().encrypted(if info.encrypted {
            Encrypted::Yes
        } else {
            Encrypted::No
        });
        if info.encrypted {
            options = options.encryption_key_id(info.key_id);
        }
        self.db
            .drop_table(name)
            .and_then(|()| self.db.create_table(name, options))
            .map(|_| ())
            .map_err(|e| commands::engine_error(&e))
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Asks the server to stop (SHUTDOWN, a signal); `ServerHandle::wait_for_shutdown`
    /// returns.
    pub fn request_shutdown(&self) {
        let (lock, signal) = &self.shutdown_requested;
        *lock.lock() = true;
        signal.notify_all();
    }

    /// A connection thread is done.
    pub fn forget_connection(&self, id: u64) {
        self.connections.lock().remove(&id);
        self.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts servers.
pub struct Server;

/// A running server.
pub struct ServerHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `config.listen` and starts accepting. Refuses a non-loopback address without
    /// a password (Redis' protected mode).
    pub fn start(db: Db, config: ServerConfig) -> io::Result<ServerHandle> {
        let listener = TcpListener::bind(&config.listen)?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() && config.requirepass.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "refusing to listen on {addr} without a password (protected mode): \
                     set --requirepass, or listen on 127.0.0.1"
                ),
            ));
        }
        let shared = Arc::new(Shared {
            db,
            config,
            started: Instant::now(),
            port: addr.port(),
            clients: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            connections_received: AtomicU64::new(0),
            commands_processed: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            table_ddl: Mutex::new(()),
            shutdown_requested: (Mutex::new(false), Condvar::new()),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("sb-accept".into())
                .spawn(move || accept_loop(&shared, listener))?
        };
        Ok(ServerHandle {
            shared,
            addr,
            accept: Some(accept),
        })
    }
}

impl ServerHandle {
    /// The address the server listens on (the real port when the config said `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Asks the server to stop; `stop` does it.
    pub fn request_shutdown(&self) {
        self.shared.request_shutdown();
    }

    /// Blocks until SHUTDOWN or [`ServerHandle::request_shutdown`].
    pub fn wait_for_shutdown(&self) {
        let (lock, signal) = &self.shared.shutdown_requested;
        let mut requested = lock.lock();
        while !*requested {
            signal.wait(&mut requested);
        }
    }

    /// Stops accepting, lets every connection finish what it has, and closes the database
    /// (checkpoint). Returns the database's close result.
    pub fn stop(mut self) -> Result<(), strongbox_engine::Error> {
        self.shared.stopping.store(true, Ordering::Release);
        // Wake the accept loop with a connection of our own.
        let _ = TcpStream::connect(wake_address(self.addr));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let connections: Vec<(TcpStream, JoinHandle<()>)> = self
            .shared
            .connections
            .lock()
            .drain()
            .map(|(_, c)| c)
            .collect();
        for (stream, _) in &connections {
            let _ = stream.shutdown(Shutdown::Read);
        }
        for (_, thread) in connections {
            let _ = thread.join();
        }
        self.shared.db.close()
    }
}

/// Where to connect to reach a listener bound to `addr` (an unspecified address is
/// reached through loopback).
fn wake_address(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    for stream in listener.incoming() {
        if shared.is_stopping() {
            return;
        }
        let Ok(mut stream) = stream else {
            continue; // a connection reset before accept; the listener is fine
        };
        shared.connections_received.fetch_add(1, Ordering::Relaxed);
        if shared.clients.load(Ordering::Relaxed) >= shared.config.maxclients {
            shared.rejected_connections.fetch_add(1, Ordering::Relaxed);
            use std::io::Write;
            let _ = stream.write_all(b"-ERR max number of clients reached\r\n");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
        let Ok(registered) = stream.try_clone() else {
            continue;
        };
        shared.clients.fetch_add(1, Ordering::Relaxed);
        // Registered before the thread starts, so `stop` always finds it.
        let mut connections = shared.connections.lock();
        let thread = {
            let shared = Arc::clone(shared);
            std::thread::Builder::new()
                .name(format!("sb-client-{id}"))
                .stack_size(CONNECTION_STACK)
                .spawn(move || {
                    connection::serve(&shared, stream, id);
                    shared.forget_connection(id);
                })
        };
        match thread {
            Ok(thread) => {
                connections.insert(id, (registered, thread));
            }
            Err(_) => {
                shared.clients.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}
