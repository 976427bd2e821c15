//! Shared pieces of the fuzz targets in `fuzz_targets/` (run them with `scripts/fuzz`).
//!
//! Each target feeds libFuzzer's bytes to one decoder of untrusted input and checks that it
//! returns (an error is fine) without panicking, hanging or allocating more than the input
//! warrants; `scripts/fuzz` runs them under `-malloc_limit_mb`, so a reservation sized by a
//! length field shows up as a crash. Where a checksum would stop almost every input at the
//! first check, a target uses a control byte to fix the checksum up, so the fuzzer reaches
//! the decoding behind it.
//!
//! | target           | decoder                                                        |
//! |------------------|----------------------------------------------------------------|
//! | `keyfile`        | the MariaDB key-file text (`KeyFileSource::parse_bytes`, plain) |
//! | `enc_open`       | the `Salted__` container, fixed passphrase, every KDF setting  |
//! | `enc_keyfile`    | seal → damage → decrypt → parse, through the encrypted source  |
//! | `page_decode`    | `page::decode_in_place` on stored bytes, then the node check   |
//! | `page_roundtrip` | `page::encode` → damage → `decode_in_place`, every algorithm   |
//! | `btree_node`     | `Node::new` + `Node::check`, then accessors and edits          |
//! | `redo_record`    | `Record::decode` (canonical: re-encodes to the same bytes)     |
//! | `redo_block`     | `block::check` + `block::open`, plain and encrypted            |
//! | `redo_scan`      | `Log::open` recovery over a fuzzed segment and control file    |
//! | `resp`           | the RESP request `Parser`, whole and split                     |

use std::sync::{Arc, LazyLock};

use strongbox_keyring::DataKey;

/// Takes control bytes from the front of the fuzz input; missing bytes read as zero, so
/// every input is usable.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Input<'a> {
        Input { bytes }
    }

    /// The next byte, or 0 when none is left.
    pub fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&first, rest)) => {
                self.bytes = rest;
                first
            }
            None => 0,
        }
    }

    /// The next little-endian u32 (missing bytes are zero).
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// Everything not taken yet.
    pub fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// One 256-bit and one 128-bit data key, random per process (the decoders' behaviour does
/// not depend on the key's value, only on whether it is the one that sealed the bytes).
pub static KEY_256: LazyLock<Arc<DataKey>> =
    LazyLock::new(|| Arc::new(DataKey::generate(256).expect("256-bit key")));
/// See [`KEY_256`].
pub static KEY_128: LazyLock<Arc<DataKey>> =
    LazyLock::new(|| Arc::new(DataKey::generate(128).expect("128-bit key")));

/// The CRC-32 the page codec and the redo blocks use: over `bytes[4..]`, stored LE at 0.
pub fn fix_crc(bytes: &mut [u8]) {
    if bytes.len() >= 4 {
        let crc = crc32fast::hash(&bytes[4..]);
        bytes[..4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Copies `src` into a zeroed buffer of exactly `len` bytes (cut or padded).
pub fn sized(src: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let n = src.len().min(len);
    out[..n].copy_from_slice(&src[..n]);
    out
}

/// The passphrase the `enc_*` targets seal and open with.
pub const PASSPHRASE: &str = "fuzz-file-key";

/// Every digest × {EVP_BytesToKey, PBKDF2 with 0, 1 or 2 iterations} from one byte (0
/// iterations is refused; few iterations keep the target fast, the code path is the same).
pub fn enc_settings(byte: u8) -> strongbox_keyring::openssl_enc::EncSettings {
    use strongbox_keyring::openssl_enc::{Digest, EncSettings, Kdf};
    let digest = [Digest::Sha1, Digest::Sha256, Digest::Sha512][usize::from(byte % 3)];
    let kdf = match (byte / 3) % 4 {
        0 => Kdf::EvpBytesToKey,
        n => Kdf::Pbkdf2 {
            iterations: u32::from(n - 1),
        },
    };
    EncSettings { digest, kdf }
}

/// Data keys for the page targets: key id 1 version 1 is [`KEY_256`], key id 2 version 1
/// is [`KEY_128`]; any other (id, version) is missing.
pub struct FuzzPageKeys;

impl strongbox_engine::page::PageKeys for FuzzPageKeys {
    fn data_key(&self, key_id: u32, key_version: u32) -> Option<Arc<DataKey>> {
        match (key_id, key_version) {
            (1, 1) => Some(Arc::clone(&KEY_256)),
            (2, 1) => Some(Arc::clone(&KEY_128)),
            _ => None,
        }
    }
}

/// What the B+tree does with a decoded tree page (`SpaceFile::check_structure`): view the
/// body as a node and check it; a node that passes is then read through every accessor,
/// which must not panic (the node module promises as much for checked nodes).
pub fn check_tree_page(frame: &[u8], probe: &[u8]) {
    use strongbox_engine::page::{body_end, BODY_START};
    let body = &frame[BODY_START..body_end(frame.len())];
    check_node(body, probe);
}

/// `Node::new` + `Node::check`; on success every accessor, with `probe` as a search key.
/// Returns whether the node passed.
pub fn check_node(body: &[u8], probe: &[u8]) -> bool {
    use strongbox_engine::btree::node::{LeafValue, Node, NodeKind};
    let Ok(node) = Node::new(body) else {
        return false;
    };
    if node.check().is_err() {
        return false;
    }
    let _ = format!("{node:?}");
    let _ = (node.level(), node.free_space(), node.used_space());
    for i in 0..node.len() {
        let key = node.key(i);
        assert_eq!(node.search(key), Ok(i), "a checked node finds its own keys");
        match node.kind() {
            NodeKind::Leaf => match node.leaf_value(i) {
                LeafValue::Inline(value) => assert!(value.len() <= body.len()),
                LeafValue::Overflow { first_page, .. } => assert_ne!(first_page, 0),
            },
            NodeKind::Branch => assert_ne!(node.child(i), 0),
        }
    }
    let found = node.search(probe);
    if node.kind() == NodeKind::Branch {
        assert_ne!(node.child(node.len()), 0);
        assert!(node.child_index_for(probe) <= node.len());
    }
    match found {
        Ok(i) => assert_eq!(node.key(i), probe),
        Err(i) => assert!(i <= node.len()),
    }
    true
}
