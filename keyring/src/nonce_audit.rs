//! A test-only audit of nonce use: every (data key, IV/nonce) pair used to **encrypt** a
//! page, a redo block or a temporary-file chunk, so a test can assert that none repeats.
//!
//! A reused CTR or GCM nonce under one key leaks the XOR of two plaintexts (and, for GCM,
//! the authentication key); the ciphertext still looks random, so no scan of the files can
//! see it. The argument that it never happens is in `engine/src/page/mod.rs` (pages),
//! `wal/src/lib.rs` (redo) and `engine/src/tempfile.rs` (temp files); this module lets a
//! test check it over a real run, crashes and rotations included.
//!
//! # Cost
//!
//! Everything is behind the `nonce-audit` cargo feature. Without it `record` is an empty
//! `#[inline(always)]` function and the call sites compile to nothing; nothing else of this
//! module exists. With it, a call that finds the audit stopped costs one relaxed atomic
//! load; a running audit hashes the key (SHA-256) and appends a `Record` under a mutex.
//!
//! # What is recorded, and where
//!
//! | `Kind`     | call site                                 | `Mode`   | recorded `iv`                   |
//! |------------|-------------------------------------------|----------|---------------------------------|
//! | `Page`     | `engine/src/page/codec.rs` (`seal_body`)  | CTR      | the first counter block (16 B)  |
//! |            |                                           | CBC      | the ESSIV *input* block (16 B)  |
//! |            |                                           | GCM      | the 96-bit nonce                |
//! | `Redo`     | `wal/src/block.rs` (`seal`)               | GCM      | the 96-bit nonce                |
//! | `TempFile` | `engine/src/tempfile.rs` (`write_chunk`)  | GCM      | the 96-bit nonce                |
//!
//! These are all the places that encrypt data with a [`DataKey`](crate::DataKey):
//! `ctr_apply`, `cbc_encrypt` and `gcm_seal` have no other callers outside tests and
//! benchmarks. To catch a call site added later, `DataKey::gcm_seal` and
//! `DataKey::cbc_encrypt` also count their calls while an audit runs (`Audit::seals`); a
//! test compares those counts with the records. CTR cannot be counted that way
//! (`ctr_apply` both encrypts and decrypts).
//!
//! For CBC the page codec's IV is `AES_K(block)` (ESSIV); the input `block` is recorded.
//! AES under one key is a permutation, so two IVs are equal exactly when their inputs are.
//!
//! **Not recorded:** AES key wrap (`wrap.rs`) is deterministic and takes no nonce — wrapping
//! the same data key twice gives the same bytes by design, which reveals nothing but that;
//! the OpenSSL `enc` container of a key file (`openssl_enc.rs`) derives a fresh key and IV
//! from a random salt per file and does not use a `DataKey`.
//!
//! # Keys
//!
//! A key is identified by the SHA-256 of its raw bytes (`Fingerprint`), so two `DataKey`
//! instances holding the same material — the same data key unwrapped again after a restart —
//! are the same key here, as they are to an attacker.
//!
//! # Repeats and overlaps
//!
//! `Audit::repeats` finds records with the same key, mode family and IV bytes.
//! `Audit::overlaps` is stricter: it treats every record as the range of 128-bit AES input
//! blocks it runs through the cipher under its key, and finds two ranges that share a block:
//!
//! ```text
//! CTR  iv = c, len bytes           blocks c .. c + ⌈len/16⌉
//! GCM  nonce n, len bytes          blocks n‖1 .. n‖(1 + ⌈len/16⌉)   (n‖1 masks the tag)
//! CBC  ESSIV input b               block  b                          (the IV is AES_K(b))
//! ```
//!
//! A shared block means two encryptions used the same keystream block (or a CBC IV equal to
//! a keystream block), even if their IVs differ, e.g. a CTR counter that ran into the next
//! page's range.
//!
//! # Use
//!
//! ```ignore
//! nonce_audit::start();
//! // ... run the engine ...
//! let audit = nonce_audit::take();
//! assert!(audit.repeats().is_empty());
//! assert!(audit.overlaps().is_empty());
//! ```
//!
//! The audit is process-wide: tests that use it must not run at the same time as other
//! tests that encrypt (one test per binary, or a lock).

/// What an encryption protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A tablespace page (tables, system space, temporary space).
    Page,
    /// A 512-byte redo-log block.
    Redo,
    /// A chunk of a temporary file (external sort, bulk load).
    TempFile,
}

/// The cipher mode of an encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    Ctr,
    Cbc,
    Gcm,
}

/// Records that `key` encrypts `len` bytes in `mode` with `iv` (see the module doc for what
/// `iv` is per mode). Without the `nonce-audit` feature this does nothing.
#[cfg(not(feature = "nonce-audit"))]
#[inline(always)]
pub fn record(_kind: Kind, _key: &crate::DataKey, _mode: Mode, _iv: &[u8], _len: usize) {}

#[cfg(feature = "nonce-audit")]
pub use audit::*;

#[cfg(feature = "nonce-audit")]
mod audit {
    use super::{Kind, Mode};
    use crate::DataKey;
    use sha2::{Digest, Sha256};
    use std::collections::{BTreeMap, HashMap};
    use std::fmt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// SHA-256 of a key's raw bytes. `Debug` shows the first 4 bytes only.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Fingerprint(pub [u8; 32]);

    impl Fingerprint {
        pub fn of(key: &DataKey) -> Fingerprint {
            Fingerprint(Sha256::digest(key.secret().expose()).into())
        }
    }

    impl fmt::Debug for Fingerprint {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let short: String = self.0[..4].iter().map(|b| format!("{b:02x}")).collect();
            write!(f, "key:{short}")
        }
    }

    /// One encryption. `Debug` shows the IV in hex.
    #[derive(Clone, PartialEq, Eq)]
    pub struct Record {
        pub kind: Kind,
        pub mode: Mode,
        pub key: Fingerprint,
        /// The IV as the module doc's table says (16 bytes, or a 12-byte GCM nonce).
        pub iv: Vec<u8>,
        /// Bytes encrypted.
        pub len: usize,
    }

    impl fmt::Debug for Record {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let iv: String = self.iv.iter().map(|b| format!("{b:02x}")).collect();
            write!(
                f,
                "{:?} {:?} {:?} iv {iv} len {}",
                self.kind, self.mode, self.key, self.len
            )
        }
    }

    impl Record {
        /// The AES input blocks this encryption runs through the cipher, `[start, end)` as
        /// 128-bit big-endian integers (module doc, "Repeats and overlaps").
        pub fn blocks(&self) -> (u128, u128) {
            let blocks = self.len.div_ceil(16) as u128;
            match self.mode {
                Mode::Ctr => {
                    let start = u128::from_be_bytes(self.iv[..16].try_into().expect("16 bytes"));
                    (start, start.saturating_add(blocks))
                }
                Mode::Cbc => {
                    let start = u128::from_be_bytes(self.iv[..16].try_into().expect("16 bytes"));
                    (start, start.saturating_add(1))
                }
                Mode::Gcm => {
                    let mut j0 = [0u8; 16];
                    j0[..12].copy_from_slice(&self.iv[..12]);
                    j0[15] = 1;
                    let start = u128::from_be_bytes(j0);
                    // GCM's counter wraps in its low 32 bits; no length here comes near.
                    (start, start + 1 + blocks)
                }
            }
        }
    }

    /// Two encryptions under one key that share an IV or an AES input block.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Clash {
        pub first: Record,
        pub second: Record,
    }

    /// What one audit saw: every record, and the raw seal calls per mode.
    #[derive(Debug, Default)]
    pub struct Audit {
        pub records: Vec<Record>,
        seals: BTreeMap<Mode, u64>,
    }

    impl Audit {
        /// Adds another audit's records and seal counts to this one (several runs, e.g.
        /// the lifetimes of a database between crashes, checked as one).
        pub fn absorb(&mut self, other: Audit) {
            self.records.extend(other.records);
            for (mode, n) in other.seals {
                *self.seals.entry(mode).or_default() += n;
            }
        }

        /// Records per (kind, mode).
        pub fn counts(&self) -> BTreeMap<(Kind, Mode), u64> {
            let mut counts = BTreeMap::new();
            for r in &self.records {
                *counts.entry((r.kind, r.mode)).or_default() += 1;
            }
            counts
        }

        /// Records of `kind`.
        pub fn count(&self, kind: Kind) -> u64 {
            self.records.iter().filter(|r| r.kind == kind).count() as u64
        }

        /// Distinct keys seen.
        pub fn keys(&self) -> usize {
            let mut keys: Vec<Fingerprint> = self.records.iter().map(|r| r.key).collect();
            keys.sort();
            keys.dedup();
            keys.len()
        }

        /// Calls of `DataKey::gcm_seal` (GCM) or `DataKey::cbc_encrypt` (CBC) while the
        /// audit ran, whoever made them; 0 for CTR, which cannot be told from decryption.
        pub fn seals(&self, mode: Mode) -> u64 {
            self.seals.get(&mode).copied().unwrap_or(0)
        }

        /// Pairs of records with the same key, the same IV bytes and the same mode family
        /// (CTR and CBC share one, since both record a 16-byte block).
        pub fn repeats(&self) -> Vec<Clash> {
            let mut seen: HashMap<(Fingerprint, bool, &[u8]), &Record> = HashMap::new();
            let mut clashes = Vec::new();
            for r in &self.records {
                let slot = (r.key, r.mode == Mode::Gcm, r.iv.as_slice());
                if let Some(first) = seen.insert(slot, r) {
                    clashes.push(Clash {
                        first: first.clone(),
                        second: r.clone(),
                    });
                }
            }
            clashes
        }

        /// Pairs of records under one key whose AES input blocks intersect (a superset of
        /// [`repeats`](Self::repeats)); each clash is reported once, against the range
        /// reaching furthest before it.
        pub fn overlaps(&self) -> Vec<Clash> {
            let mut by_key: HashMap<Fingerprint, Vec<&Record>> = HashMap::new();
            for r in &self.records {
                by_key.entry(r.key).or_default().push(r);
            }
            let mut clashes = Vec::new();
            for mut records in by_key.into_values() {
                records.sort_by_key(|r| r.blocks());
                let mut reach: Option<(u128, &Record)> = None;
                for r in records {
                    let (start, end) = r.blocks();
                    match reach {
                        Some((far, first)) if start < far => {
                            clashes.push(Clash {
                                first: first.clone(),
                                second: r.clone(),
                            });
                            if end > far {
                                reach = Some((end, r));
                            }
                        }
                        Some((far, _)) if end <= far => {}
                        _ => reach = Some((end, r)),
                    }
                }
            }
            clashes
        }
    }

    /// True while an audit runs; checked before taking the lock.
    static RUNNING: AtomicBool = AtomicBool::new(false);
    /// The running audit (`None` when stopped): its records and seal counts.
    static STATE: Mutex<Option<Audit>> = Mutex::new(None);

    fn state() -> std::sync::MutexGuard<'static, Option<Audit>> {
        STATE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a new audit, dropping anything recorded before.
    pub fn start() {
        *state() = Some(Audit::default());
        RUNNING.store(true, Ordering::SeqCst);
    }

    /// Stops the audit and returns what it recorded (empty if none was running).
    pub fn take() -> Audit {
        RUNNING.store(false, Ordering::SeqCst);
        state().take().unwrap_or_default()
    }

    /// Records an encryption (module doc). Does nothing unless an audit runs.
    pub fn record(kind: Kind, key: &DataKey, mode: Mode, iv: &[u8], len: usize) {
        if !RUNNING.load(Ordering::Relaxed) {
            return;
        }
        let record = Record {
            kind,
            mode,
            key: Fingerprint::of(key),
            iv: iv.to_vec(),
            len,
        };
        if let Some(audit) = state().as_mut() {
            audit.records.push(record);
        }
    }

    /// Counts a raw `gcm_seal` / `cbc_encrypt` call (the cross-check of the call sites).
    pub(crate) fn count_seal(mode: Mode) {
        if !RUNNING.load(Ordering::Relaxed) {
            return;
        }
        if let Some(audit) = state().as_mut() {
            *audit.seals.entry(mode).or_default() += 1;
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::SecretBytes;

        fn key(byte: u8) -> DataKey {
            DataKey::from_secret(SecretBytes::new(vec![byte; 32])).unwrap()
        }

        fn rec(mode: Mode, key: &DataKey, iv: &[u8], len: usize) -> Record {
            Record {
                kind: Kind::Page,
                mode,
                key: Fingerprint::of(key),
                iv: iv.to_vec(),
                len,
            }
        }

        fn audit(records: Vec<Record>) -> Audit {
            Audit {
                records,
                seals: BTreeMap::new(),
            }
        }

        #[test]
        fn same_material_same_fingerprint() {
            assert_eq!(Fingerprint::of(&key(1)), Fingerprint::of(&key(1)));
            assert_ne!(Fingerprint::of(&key(1)), Fingerprint::of(&key(2)));
        }

        #[test]
        fn repeats_need_the_same_key_and_iv() {
            let (a, b) = (key(1), key(2));
            let iv = [7u8; 16];
            let distinct = audit(vec![
                rec(Mode::Ctr, &a, &iv, 32),
                rec(Mode::Ctr, &b, &iv, 32),
                rec(Mode::Ctr, &a, &[8; 16], 32),
            ]);
            assert!(distinct.repeats().is_empty());
            assert!(distinct.overlaps().is_empty());
            let repeated = audit(vec![
                rec(Mode::Ctr, &a, &iv, 32),
                rec(Mode::Ctr, &key(1), &iv, 32),
            ]);
            assert_eq!(repeated.repeats().len(), 1);
            assert_eq!(repeated.overlaps().len(), 1);
        }

        #[test]
        fn overlapping_counter_ranges_are_found() {
            let a = key(1);
            let mut second = [0u8; 16];
            second[15] = 3; // starts inside the first range (blocks 0..4)
            let clash = audit(vec![
                rec(Mode::Ctr, &a, &[0; 16], 64),
                rec(Mode::Ctr, &a, &second, 16),
            ]);
            assert!(clash.repeats().is_empty());
            assert_eq!(clash.overlaps().len(), 1);
            second[15] = 4; // just past it
            let apart = audit(vec![
                rec(Mode::Ctr, &a, &[0; 16], 64),
                rec(Mode::Ctr, &a, &second, 16),
            ]);
            assert!(apart.overlaps().is_empty());
        }

        #[test]
        fn gcm_counter_blocks_meet_ctr_blocks_of_the_same_prefix() {
            let a = key(1);
            let nonce = [5u8; 12];
            let mut ctr_iv = [5u8; 16];
            ctr_iv[12..].copy_from_slice(&[0, 0, 0, 0]);
            // CTR from ‖0 over 2 blocks covers ‖0 and ‖1; GCM starts at ‖1.
            let clash = audit(vec![
                rec(Mode::Gcm, &a, &nonce, 100),
                rec(Mode::Ctr, &a, &ctr_iv, 32),
            ]);
            assert_eq!(clash.overlaps().len(), 1);
        }
    }
}
