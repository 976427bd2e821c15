//! One connection's state: protocol version, authentication, the table its data commands
//! use, the MULTI queue, WATCHed keys and SCAN cursors.

use std::collections::VecDeque;

/// A command as received: its arguments, the name first.
pub(crate) type Args = Vec<Vec<u8>>;

/// A key watched by `WATCH`: where, and the value it had then.
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    pub table: String,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// Commands queued between MULTI and EXEC.
#[derive(Debug, Default)]
pub(crate) struct Multi {
    pub queued: Vec<Args>,
    /// A command was refused while queueing: EXEC must fail (EXECABORT).
    pub failed: bool,
}

/// SCAN cursors are integers that clients hand back; each maps to the last key returned.
/// Only the newest [`ScanCursors::KEEP`] are kept, so a client cannot grow the table.
#[derive(Debug, Default)]
pub(crate) struct ScanCursors {
    next: u64,
    open: VecDeque<(u64, String, Vec<u8>)>,
}

impl ScanCursors {
    const KEEP: usize = 64;

    /// A new cursor that continues after `last_key` of `table`.
    pub fn save(&mut self, table: &str, last_key: Vec<u8>) -> u64 {
        self.next += 1;
        if self.open.len() == Self::KEEP {
            self.open.pop_front();
        }
        self.open
            .push_back((self.next, table.to_string(), last_key));
        self.next
    }

    /// Where cursor `cursor` of `table` continues; `None` when unknown or expired.
    pub fn find(&self, table: &str, cursor: u64) -> Option<Vec<u8>> {
        self.open
            .iter()
            .find(|(id, t, _)| *id == cursor && t == table)
            .map(|(_, _, key)| key.clone())
    }
}

/// Everything one connection remembers between commands.
#[derive(Debug)]
pub(crate) struct Session {
    pub id: u64,
    pub peer: String,
    /// 2 or 3 (`HELLO`).
    pub resp: u8,
    pub authenticated: bool,
    pub name: Option<Vec<u8>>,
    pub lib_name: Option<Vec<u8>>,
    pub lib_version: Option<Vec<u8>>,
    /// The table data commands use: `db<n>` after `SELECT n`, or any table after `SB.USE`.
    pub table: String,
    pub multi: Option<Multi>,
    pub watched: Vec<Watched>,
    pub cursors: ScanCursors,
}

impl Session {
    pub fn new(id: u64, peer: String, authenticated: bool) -> Session {
        Session {
            id,
            peer,
            resp: 2,
            authenticated,
            name: None,
            lib_name: None,
            lib_version: None,
            table: "db0".to_string(),
            multi: None,
            watched: Vec::new(),
            cursors: ScanCursors::default(),
        }
    }

    /// `RESET`: back to a fresh connection's state (keeps id, peer, and the need to AUTH).
    pub fn reset(&mut self, authenticated: bool) {
        *self = Session::new(self.id, std::mem::take(&mut self.peer), authenticated);
    }
}
