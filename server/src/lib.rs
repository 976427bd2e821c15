//! # strongbox-server
//!
//! The Redis-protocol (RESP) network server (planned; see issue "Server"). It will own the
//! RESP parser with Redis' limits, connection handling, the command table and the mapping
//! of MULTI/EXEC onto engine transactions. The crate is a placeholder so that the
//! workspace layout of DESIGN §1 is in place from the start.
