//! Secret byte strings: key material that is zeroized on drop and never printed.
//!
//! Every key the keyring holds — keyring keys, data keys, file keys (passphrases) —
//! lives in a [`SecretBytes`]. Its `Debug` shows only the length, it has no `Display`,
//! and its buffer is overwritten with zeros when it is dropped, so a key does not linger
//! in freed memory. Bytes are reachable only through `SecretBytes::expose`, whose name
//! makes every use easy to find in review; it is `pub(crate)` so key material never
//! leaves this crate in the clear (DESIGN §3).

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Key material: zeroized on drop, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of `bytes`; the caller's vector is moved, not copied.
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// Fresh random bytes from the operating system's CSPRNG.
    pub(crate) fn random(len: usize) -> Self {
        use rand::TryRng;
        let mut bytes = vec![0u8; len];
        rand::rngs::SysRng
            .try_fill_bytes(&mut bytes)
            .expect("the operating system's random number generator failed");
        SecretBytes(bytes)
    }

    /// The raw bytes. Only code inside the keyring crate may look at them.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (safe to show: it reveals the key size, not the key).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Key size in bits.
    pub fn bits(&self) -> usize {
        self.0.len() * 8
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let secret = SecretBytes::new(vec![0xAB; 16]);
        let shown = format!("{secret:?}");
        assert_eq!(shown, "SecretBytes(<redacted 16 bytes>)");
        assert!(!shown.to_lowercase().contains("ab"));
    }

    #[test]
    fn random_secrets_differ() {
        let a = SecretBytes::random(32);
        let b = SecretBytes::random(32);
        assert_eq!(a.len(), 32);
        assert_ne!(a.expose(), b.expose());
    }
}
