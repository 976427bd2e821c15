//! The machinery the crash tests share: `crash_kill.rs` (a writer killed with `SIGKILL`),
//! `crash_rotation.rs` (rotation, rewrap and ALTER killed with `SIGKILL`) and `crash_sim.rs`
//! (power loss at every IO operation of a simulated disk). Each of those files keeps only
//! its scenario: its options, its transaction generator, when it crashes and what it checks
//! beyond the data.
//!
//! | module       | what it holds                                                             |
//! |--------------|---------------------------------------------------------------------------|
//! | [`workload`] | transaction ids and fates, the layout of keys and values, the model        |
//! | [`acks`]     | the side files a child acknowledges in, and the parent's reading of them  |
//! | [`child`]    | the run directory, spawning this test binary as the child, killing it     |
//! | [`compare`]  | what a recovery may find, and a key-by-key explanation when it finds else |
//! | [`streams`]  | the same for several writers on disjoint keys (`crash_loop.rs`)           |
//! | [`setting`]  | the encryption settings an ALTER puts a table through, and their status   |
//!
//! The contract all three check after a crash: with R the model after every acknowledged
//! commit and P the one commit that may have become durable unacknowledged (its `commit`
//! was called and had not returned, or returned just before the kill), a full scan of every
//! table equals R or R plus all of P, and point reads agree with the scan.

pub mod acks;
pub mod child;
pub mod compare;
pub mod setting;
pub mod streams;
pub mod workload;

use super::Rng;

/// A decimal or `0x` hexadecimal number from the environment.
pub fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
}

/// A seed for a run that names none: the time and the process id, mixed.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Rng::new(nanos ^ (u64::from(std::process::id()) << 32)).next_u64()
}
