//! Fuzz tests, on stable, of the page decoder (issue 8 §5): `page::decode_in_place` for
//! every algorithm (plain, aes_ctr, aes_cbc, aes_gcm) and page size, and the structural
//! check the tablespace runs on every tree page it reads (`Node::new` + `Node::check`).
//!
//! 1. Arbitrary stored bytes (checksum fixed up, position and cipher stamped, so the checks
//!    behind the CRC are reached) never panic; a tree page that decodes is checked, and a
//!    node that passes the check is read through every accessor without a panic.
//! 2. Structure-aware: a sealed page with a bit flipped is refused (an encrypted one always,
//!    even with the checksum fixed up) and leaves no plaintext behind; intact, it decodes
//!    to the frame it was made from.
//! 3. Valid nodes with a byte changed or a length field set huge never panic `check`.
//! 4. Hostile lengths: an overflow value whose leaf cell claims 4 GiB gives a prompt
//!    error and no large reservation.
//!
//! The default run is short. The long run (also in `scripts/fuzz`):
//! `PROPTEST_CASES=200000 cargo test --release -p strongbox-engine --test fuzz_page`.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use proptest::prelude::*;
use strongbox_engine::btree::node::{LeafValue, Node, NodeKind, NodeMut};
use strongbox_engine::io::{MemVfs, Vfs};
use strongbox_engine::page::{
    body_end, decode_in_place, encode, init_frame, PageError, PageId, PageKeys, PageSize, PageType,
    Seal, BODY_START,
};
use strongbox_engine::{Db, EncryptTables, Options, TableOptions};
use strongbox_keyring::{Algorithm, DataKey};

/// Cases per property: `PROPTEST_CASES` if set, else a short default.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

static KEY_256: LazyLock<Arc<DataKey>> =
    LazyLock::new(|| Arc::new(DataKey::generate(256).unwrap()));
static KEY_128: LazyLock<Arc<DataKey>> =
    LazyLock::new(|| Arc::new(DataKey::generate(128).unwrap()));

/// Key id 1 version 1 is a 256-bit key, key id 2 version 1 a 128-bit one.
struct Keys;

impl PageKeys for Keys {
    fn data_key(&self, key_id: u32, key_version: u32) -> Option<Arc<DataKey>> {
        match (key_id, key_version) {
            (1, 1) => Some(Arc::clone(&KEY_256)),
            (2, 1) => Some(Arc::clone(&KEY_128)),
            _ => None,
        }
    }
}

const EXPECTED: PageId = PageId::new(7, 3);

/// The page checksum: CRC-32 over bytes [4, len), stored little-endian at 0.
fn fix_crc(page: &mut [u8]) {
    let crc = crc32fast::hash(&page[4..]);
    page[..4].copy_from_slice(&crc.to_le_bytes());
}

/// `Node::new` + `Node::check`, then every accessor of a node that passed. Returns whether
/// it passed.
fn check_node(body: &[u8], probe: &[u8]) -> bool {
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
        assert_eq!(node.search(key), Ok(i));
        match node.kind() {
            NodeKind::Leaf => {
                let _ = node.leaf_value(i);
            }
            NodeKind::Branch => assert_ne!(node.child(i), 0),
        }
    }
    if node.kind() == NodeKind::Branch {
        assert_ne!(node.child(node.len()), 0);
        assert!(node.child_index_for(probe) <= node.len());
    }
    let _ = node.search(probe);
    true
}

/// What the tablespace does with a decoded page: tree pages get the node check.
fn check_tree_page(frame: &[u8]) {
    let body = &frame[BODY_START..body_end(frame.len())];
    check_node(body, &frame[BODY_START..BODY_START + 8]);
}

fn seal_for(mode: u8, key_id: u32, nonce: u64) -> Seal<'static> {
    let key: &'static DataKey = if key_id == 2 { &KEY_128 } else { &KEY_256 };
    match mode % 4 {
        0 => Seal::Plain,
        m => Seal::Encrypted {
            key,
            algorithm: Algorithm::ALL[usize::from(m - 1)],
            key_id,
            key_version: 1,
            write_nonce: nonce,
        },
    }
}

const TYPES: [PageType; 5] = [
    PageType::BtreeLeaf,
    PageType::BtreeBranch,
    PageType::Overflow,
    PageType::Undo,
    PageType::Free,
];

/// A valid leaf or branch body of `len` bytes holding `keys` (made unique and sorted).
fn valid_node(len: usize, branch: bool, mut keys: Vec<Vec<u8>>) -> Vec<u8> {
    keys.sort();
    keys.dedup();
    let mut body = vec![0u8; len];
    let kind = if branch {
        NodeKind::Branch
    } else {
        NodeKind::Leaf
    };
    let mut node = NodeMut::init(&mut body, kind, u8::from(branch));
    if branch {
        node.set_leftmost_child(9);
    }
    for (i, key) in keys.iter().enumerate() {
        let done = if branch {
            node.branch_insert(i, key, 10 + i as u32)
        } else if i % 3 == 2 {
            let value = LeafValue::Overflow {
                total_len: 5000 + i as u32,
                first_page: 20 + i as u32,
            };
            node.leaf_insert(i, key, value)
        } else {
            node.leaf_insert(i, key, LeafValue::Inline(key))
        };
        if done.is_err() {
            break;
        }
    }
    body
}

/// A change to a node body: a byte, or a u16/u32 field set to a hostile value.
#[derive(Debug, Clone)]
enum Edit {
    Byte(usize, u8),
    U16(usize, u16),
    U32(usize, u32),
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    let at = any::<prop::sample::Index>();
    prop_oneof![
        (at.clone(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i.index(1 << 16), b)),
        // Header fields (cell count, content start, garbage) and slots.
        (
            0usize..64,
            prop::sample::select(vec![0u16, 1, 0x7FFF, 0xFFFF, 4032, 4031])
        )
            .prop_map(|(at, v)| Edit::U16(at, v)),
        (
            at.clone(),
            prop::sample::select(vec![0u16, 0xFFFF, 0x8000, 1325])
        )
            .prop_map(|(i, v)| Edit::U16(i.index(1 << 16), v)),
        (
            at,
            prop::sample::select(vec![0u32, u32::MAX, 1 << 31, 4096])
        )
            .prop_map(|(i, v)| Edit::U32(i.index(1 << 16), v)),
    ]
}

fn apply(body: &mut [u8], edit: &Edit) {
    let len = body.len();
    match *edit {
        Edit::Byte(at, b) => body[at % len] = b,
        Edit::U16(at, v) => {
            let at = at % (len - 1);
            body[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        Edit::U32(at, v) => {
            let at = at % (len - 3);
            body[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_page_decode_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        large in any::<bool>(),
        stamp_position in any::<bool>(),
        cipher in prop::option::of((0u8..5, 1u32..3, 0u32..3)),
        fix in any::<bool>(),
    ) {
        let size = if large { 8192 } else { 4096 };
        let mut page = vec![0u8; size];
        page[..bytes.len()].copy_from_slice(&bytes);
        if stamp_position {
            page[8..12].copy_from_slice(&EXPECTED.space_id.to_le_bytes());
            page[12..16].copy_from_slice(&EXPECTED.page_no.to_le_bytes());
        }
        if let Some((code, key_id, version)) = cipher {
            page[6] = code;
            page[24..28].copy_from_slice(&key_id.to_le_bytes());
            page[28..32].copy_from_slice(&version.to_le_bytes());
        }
        if fix {
            fix_crc(&mut page);
        }
        let stored = page.clone();
        match decode_in_place(&mut page, EXPECTED, &Keys) {
            Ok(header) => {
                prop_assert_eq!(header.page_id(), EXPECTED);
                check_tree_page(&page);
            }
            Err(PageError::WrongKeyOrTampered { .. }) => {
                prop_assert!(page[BODY_START..].iter().all(|&b| b == 0));
            }
            Err(_) => prop_assert!(page == stored, "an early error changed the buffer"),
        }
    }

    #[test]
    fn fuzz_page_buffers_of_any_length(len in 0usize..70_000) {
        let mut page = vec![0xA5u8; len];
        let result = decode_in_place(&mut page, EXPECTED, &Keys);
        prop_assert!(result.is_err());
    }

    #[test]
    fn fuzz_page_sealed_then_damaged(
        body in prop::collection::vec(any::<u8>(), 0..600),
        size in prop::sample::select(vec![4096usize, 8192, 16384]),
        page_type in 0usize..TYPES.len(),
        mode in 0u8..4,
        key_id in 1u32..3,
        nonce in any::<u64>(),
        flip in prop::option::of((any::<prop::sample::Index>(), any::<bool>())),
    ) {
        let mut frame = vec![0u8; size];
        init_frame(&mut frame, TYPES[page_type], EXPECTED, 42);
        frame[BODY_START..BODY_START + body.len()].copy_from_slice(&body);
        let seal = seal_for(mode, key_id, nonce);
        let mut stored = vec![0u8; size];
        encode(&frame, seal, &mut stored).unwrap();
        let mut bit = usize::MAX;
        if let Some((at, refix)) = flip {
            bit = at.index(size * 8);
            stored[bit / 8] ^= 1 << (bit % 8);
            if refix {
                fix_crc(&mut stored);
            }
        }
        let mut page = stored.clone();
        let result = decode_in_place(&mut page, EXPECTED, &Keys);
        match (flip, result) {
            (None, Ok(header)) => {
                // The body comes back; the header keeps the codec's fields as stored.
                prop_assert!(page[BODY_START..size - 16] == frame[BODY_START..size - 16]);
                prop_assert_eq!((header.page_type, header.page_id(), header.lsn),
                    (TYPES[page_type], EXPECTED, 42));
                check_tree_page(&page);
            }
            (None, Err(error)) => prop_assert!(false, "intact page refused: {}", error),
            (Some((_, false)), result) => {
                prop_assert!(matches!(result, Err(PageError::Corrupt { .. })), "{:?}", result);
                prop_assert!(page == stored, "an early error changed the buffer");
            }
            (Some((_, true)), Ok(_)) => prop_assert!(
                matches!(seal, Seal::Plain) || bit < 32,
                "a tampered encrypted page decoded"
            ),
            (Some((_, true)), Err(PageError::WrongKeyOrTampered { .. })) => {
                prop_assert!(page[BODY_START..].iter().all(|&b| b == 0), "plaintext left");
            }
            (Some((_, true)), Err(_)) => {
                prop_assert!(page == stored, "an early error changed the buffer")
            }
        }
    }

    #[test]
    fn fuzz_node_arbitrary_bodies(
        bytes in prop::collection::vec(any::<u8>(), 0..4032),
        header in prop::option::of((any::<bool>(), 0u16..200, any::<u16>())),
        probe in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut body = vec![0u8; 4032];
        body[..bytes.len()].copy_from_slice(&bytes);
        if let Some((branch, count, start)) = header {
            body[0] = if branch { 2 } else { 1 };
            body[1] = u8::from(branch);
            body[2..4].copy_from_slice(&count.to_le_bytes());
            let start = usize::from(start).clamp(16 + 2 * usize::from(count), 4032) as u16;
            body[4..6].copy_from_slice(&start.to_le_bytes());
            body[6..8].fill(0);
            body[12..16].fill(0);
        }
        check_node(&body, &probe);
    }

    #[test]
    fn fuzz_node_damaged_valid_nodes(
        len in prop::sample::select(vec![4032usize, 8128, 65472]),
        branch in any::<bool>(),
        keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..60),
        edits in prop::collection::vec(edit_strategy(), 0..3),
        probe in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut body = valid_node(len, branch, keys);
        if edits.is_empty() {
            prop_assert!(check_node(&body, &probe), "a node built by NodeMut fails check");
        }
        for edit in &edits {
            apply(&mut body, edit);
        }
        check_node(&body, &probe);
    }
}

// ---- hostile lengths --------------------------------------------------------------------

#[path = "../../test-support/reservation.rs"]
mod reservation;
use reservation::without_large_reservation;

/// A leaf cell claiming a 4 GiB overflow value: the chain is read as far as it goes and
/// refused, without reserving the claimed size first (it used to be reserved up front).
#[test]
fn an_overflow_value_claiming_4_gib_is_refused_without_reserving_it() {
    let vfs = MemVfs::new();
    let options = || {
        Options::new()
            .vfs(Arc::new(vfs.clone()))
            .encrypt_tables(EncryptTables::Off)
            .page_size(PageSize::of_buffer(4096).unwrap())
            .buffer_pool_size(64 * 4096)
    };
    let dir = Path::new("/db");
    let db = Db::open(dir, options()).unwrap();
    let table = db.create_table("t", TableOptions::default()).unwrap();
    db.put(&table, b"key", &[7u8; 10_000]).unwrap();
    db.close().unwrap();
    drop(db);

    // The table's space file: the one `space-<id>.sbd`; its root leaf is page 1.
    let file = vfs
        .list(dir)
        .unwrap()
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("space-")
        })
        .expect("a table space file");
    let mut bytes = vfs.contents(&file).unwrap();
    let page = &mut bytes[4096..8192];
    let body = &mut page[BODY_START..body_end(4096)];
    let slot = usize::from(u16::from_le_bytes([body[16], body[17]]));
    assert_eq!(body[slot + 2], 1, "the value went to an overflow chain");
    body[slot + 3..slot + 7].copy_from_slice(&u32::MAX.to_le_bytes());
    fix_crc(page);
    vfs.set_contents(&file, bytes);

    let db = Db::open(dir, options()).unwrap();
    let table = db.table("t").unwrap();
    let result = without_large_reservation("4 GiB overflow value", || db.get(&table, b"key"));
    let error = result.expect_err("a chain shorter than its claimed length is corrupt");
    assert!(error.to_string().contains("ends before"), "{error}");
    db.close().unwrap();
}
