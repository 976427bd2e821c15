//! Write nonces: a per-tablespace counter that never repeats, even across crashes.
//!
//! Every encrypted page write takes a fresh 64-bit nonce that goes into the page header and
//! into the IV (see `page::codec` and docs/FORMAT.md). Each data key belongs to exactly one
//! tablespace, so a counter per tablespace that never repeats means no IV is ever reused
//! under one key.
//!
//! The counter lives in memory; what is persisted is a *reservation*: page 0 records
//! `nonce_reserved`, and nonces at or above it have never been used. Before handing out a
//! nonce at or past the persisted limit, the space writes and syncs page 0 with a limit
//! [`RESERVATION`] higher. After a crash the counter restarts at the persisted limit, which
//! skips whatever was reserved but unused and can never go back to a used value.
//!
//! ```text
//!   persisted limit L      in-memory next n        rule: a nonce n is handed out only if n < L
//!   open:  n := L (header)      first write: n >= L -> persist L' = n + RESERVATION, then use n
//! ```

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Nonces reserved per page-0 write (one synced header write per this many page writes).
pub const RESERVATION: u64 = 1 << 20;

/// The in-memory side of a space's nonce counter.
#[derive(Debug)]
pub struct NonceSource {
    next: AtomicU64,
    /// Nonces below this are covered by a durable reservation.
    limit: AtomicU64,
    /// Serialises reservations so only one thread persists a new limit at a time.
    reserving: Mutex<()>,
}

impl NonceSource {
    /// Starts at the persisted reservation: nothing is usable until a reservation is durable.
    pub fn new(persisted_reservation: u64) -> NonceSource {
        NonceSource {
            next: AtomicU64::new(persisted_reservation),
            limit: AtomicU64::new(persisted_reservation),
            reserving: Mutex::new(()),
        }
    }

    /// A nonce never handed out before. `persist(new_limit)` must make the new limit durable
    /// before returning `Ok`; it is called only when the reservation is used up.
    pub fn next<E>(&self, persist: impl FnOnce(u64) -> Result<(), E>) -> Result<u64, E> {
        let nonce = self.next.fetch_add(1, Ordering::Relaxed);
        if nonce < self.limit.load(Ordering::Acquire) {
            return Ok(nonce);
        }
        let _reserving = self.reserving.lock();
        let limit = self.limit.load(Ordering::Acquire);
        if nonce < limit {
            return Ok(nonce);
        }
        let new_limit = nonce.max(limit) + RESERVATION;
        persist(new_limit)?;
        self.limit.store(new_limit, Ordering::Release);
        Ok(nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn nonces_are_unique_and_only_used_below_a_persisted_limit() {
        let persisted = AtomicU64::new(5);
        let source = NonceSource::new(5);
        let mut seen = HashSet::new();
        for _ in 0..(RESERVATION * 2 + 10) {
            let nonce = source
                .next(|limit| {
                    persisted.store(limit, Ordering::SeqCst);
                    Ok::<(), ()>(())
                })
                .unwrap();
            assert!(nonce < persisted.load(Ordering::SeqCst));
            assert!(nonce >= 5);
            assert!(seen.insert(nonce));
        }
    }

    #[test]
    fn a_failed_reservation_hands_out_nothing_and_restart_skips_ahead() {
        let source = NonceSource::new(100);
        assert_eq!(source.next(|_| Err("disk full")), Err("disk full"));
        let mut persisted = 0;
        let nonce = source
            .next(|limit| {
                persisted = limit;
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(
            nonce, 101,
            "the nonce of the failed attempt is never reused"
        );
        let after_crash = NonceSource::new(persisted);
        let again = after_crash.next(|_| Ok::<(), ()>(())).unwrap();
        assert!(again >= persisted && again > nonce);
    }

    #[test]
    fn concurrent_callers_never_share_a_nonce() {
        let source = std::sync::Arc::new(NonceSource::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let source = std::sync::Arc::clone(&source);
                std::thread::spawn(move || {
                    (0..10_000)
                        .map(|_| source.next(|_| Ok::<(), ()>(())).unwrap())
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let mut all = HashSet::new();
        for handle in handles {
            for nonce in handle.join().unwrap() {
                assert!(all.insert(nonce));
            }
        }
        assert_eq!(all.len(), 40_000);
    }
}
