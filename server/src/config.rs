//! [`ServerConfig`]: what `strongbox serve` listens on and the limits it enforces.

use crate::resp::Limits;

/// Server settings (the database's own settings are in its `Options`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `host:port`; default `127.0.0.1:6380`.
    pub listen: String,
    /// Clients must `AUTH` with this first. Required to listen on anything but loopback
    /// (Redis' protected mode).
    pub requirepass: Option<String>,
    /// Connections beyond this are told `-ERR max number of clients reached` and closed.
    pub maxclients: usize,
    /// Request size limits (Redis' defaults).
    pub limits: Limits,
    /// The table `SELECT n` uses is `db<n>`; this is the largest `n` (Redis: 15).
    pub databases: u32,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:6380".to_string(),
            requirepass: None,
            maxclients: 10_000,
            limits: Limits::default(),
            databases: 16,
        }
    }
}
