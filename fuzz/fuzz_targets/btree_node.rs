//! Fuzz target `btree_node`: a B+tree node body straight into `Node::new` + `Node::check`
//! (the check the tablespace runs on every tree page it reads), then every accessor of a
//! node that passes, and a few edits (`NodeMut` insert, remove, compact), after each of which
//! the node must still pass `check`.
//!
//! Input: a control byte and a 2-byte key-length seed, then the body (cut or zero-padded to
//! the smallest body, 4032 bytes). The control byte can stamp a plausible header (leaf or
//! branch, `content_start` = end, no cells) so that the cell bytes get exercised too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strongbox_engine::btree::node::{LeafValue, Node, NodeKind, NodeMut, MIN_BODY_LEN};
use strongbox_fuzz::{check_node, sized, Input};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let control = input.byte();
    let seed = input.byte();
    let rest = input.rest();
    let probe: Vec<u8> = rest.iter().take(usize::from(seed % 32)).copied().collect();
    let mut body = sized(rest, MIN_BODY_LEN);
    if control & 1 != 0 {
        // A header that passes `Node::new`, keeping the fuzzer's cell count and slots.
        let branch = control & 2 != 0;
        body[0] = if branch { 2 } else { 1 };
        body[1] = u8::from(branch);
        let count = usize::from(u16::from_le_bytes([body[2], body[3]])) % 64;
        body[2..4].copy_from_slice(&(count as u16).to_le_bytes());
        let start =
            (u16::from_le_bytes([body[4], body[5]]) as usize).clamp(16 + 2 * count, MIN_BODY_LEN);
        body[4..6].copy_from_slice(&(start as u16).to_le_bytes());
        body[6..8].fill(0);
        body[12..16].fill(0);
        if branch && body[8..12] == [0; 4] {
            body[8] = 1;
        }
        if !branch {
            body[8..12].fill(0);
        }
    }
    if !check_node(&body, &probe) {
        return;
    }
    // Edits keep a checked node valid.
    let mut node = NodeMut::new(&mut body).expect("a checked node opens for writing");
    let kind = node.as_node().kind();
    let len = node.as_node().len();
    let index = usize::from(seed) % (len + 1);
    let key_is_new = node.as_node().search(&probe).is_err();
    if key_is_new && probe.len() <= 64 {
        let at = node.as_node().search(&probe).unwrap_err();
        let inserted = match kind {
            NodeKind::Leaf => node.leaf_insert(at, &probe, LeafValue::Inline(&probe)),
            NodeKind::Branch => node.branch_insert(at, &probe, 5),
        };
        let _ = inserted;
        assert!(node.as_node().check().is_ok(), "insert broke the node");
    }
    if len > 0 && index < node.as_node().len() {
        node.remove(index);
        assert!(node.as_node().check().is_ok(), "remove broke the node");
    }
    node.compact();
    assert!(node.as_node().check().is_ok(), "compact broke the node");
    let _ = Node::new(&body).expect("still a node");
});
