//! The byte layout of a B+tree node (a slotted page) and pure functions over it.
//!
//! A node fills the *body* of a page: the bytes between the 48-byte page header and the
//! 16-byte trailer, both owned by the page codec. This module never sees those; it is handed
//! the body as a plain byte slice `b` with [`MIN_BODY_LEN`] `<= b.len() <=` [`MAX_BODY_LEN`].
//! Because `b.len() < 65536`, every offset inside a node fits in a `u16`. All integers are
//! little-endian.
//!
//! # Layout
//!
//! ```text
//! node header (HEADER_SIZE = 16 bytes at b[0..16])
//!
//! offset size  field           meaning
//!      0    1  kind            1 = leaf, 2 = branch; anything else is corrupt
//!      1    1  level           0 for leaves; a branch is 1 + its children's level
//!      2    2  cell_count      number of cells (= number of slots)
//!      4    2  content_start   lowest offset used by cell content; b.len() when empty
//!      6    2  garbage         bytes of dead cell content not yet compacted
//!      8    4  leftmost_child  branch: page holding the keys < key[0]; leaf: 0
//!     12    4  reserved        0
//!     16       slot array      cell_count x u16 cell offsets, in key order
//!
//! leaf cell
//!
//! offset        size     field
//!      0           2     key_len
//!      2           1     value_kind   0 = inline, 1 = overflow
//!      3           4     value_len    length of the value (overflow: its total length)
//!      7     key_len     key
//!      7+key_len   *     payload      inline: the value_len bytes of the value;
//!                                     overflow: u32 page number of the first overflow page
//!
//! branch cell
//!
//! offset        size     field
//!      0           2     key_len
//!      2           4     child        page holding the keys >= key (and < the next key)
//!      6     key_len     key
//! ```
//!
//! **Room for MVCC** (issue 4 §2). InnoDB's clustered-index records carry the id of the
//! transaction that last wrote them (`DB_TRX_ID`) and a pointer to the undo record holding
//! the version before (`DB_ROLL_PTR`), which snapshot reads follow. The leaf cell keeps
//! room for both: `value_kind` uses 1 bit of 8, and the snapshot-read work will give bit 7
//! the meaning "a 16-byte version header follows the key: trx_id u64 | roll_ptr u64 (undo
//! page ‖ offset, the same pointer as an undo record's `prev_undo`)". Today `check` refuses
//! any `value_kind` but 0 and 1, so an older binary refuses such cells instead of misreading
//! them.
//!
//! The slot array grows up from the header and cell content grows down from the end of the
//! body. Cells sit anywhere in `content_start..b.len()`; only the slots are in key order.
//!
//! ```text
//!  0        16                          16+2n               content_start          b.len()
//!  +--------+--------+-----+------------+-------------------+------+------+------+------+
//!  | header | slot 0 | ... | slot n-1   |    free space     | cell | dead | cell | cell |
//!  +--------+--------+-----+------------+-------------------+------+------+------+------+
//!                 slot array grows  -->                <--  cell content grows
//! ```
//!
//! Removing a cell turns its bytes into *garbage* (zeroed and counted in the header) rather
//! than moving other cells. An insert takes space from the gap between the slot array and
//! `content_start`; when that gap is too small but gap + garbage is enough, it first calls
//! [`NodeMut::compact`], which rewrites the live cells contiguously at the end of the body.
//!
//! # Use
//!
//! Read a node with [`Node`] and edit it with [`NodeMut`]; [`leaf_insert_split`],
//! [`branch_insert_split`] and [`merge_into`] move cells between siblings. The caller keeps
//! keys within [`max_key_len`] and values within [`max_inline_value`] (larger ones go to
//! overflow pages); under those rules every node that overflows by one cell can be split.
//!
//! # Invariants
//!
//! These are what [`Node::check`] verifies (1 and 2 already in [`Node::new`]):
//!
//! 1. `kind` is 1 or 2; a leaf has level 0 and a branch level >= 1.
//! 2. `16 + 2 * cell_count <= content_start <= b.len()` and `garbage <= b.len() - content_start`.
//! 3. Every slot points at a cell that lies wholly inside `content_start..b.len()`.
//! 4. No two cells overlap, and `b.len() - content_start` = the sum of the cell sizes + garbage.
//! 5. Every cell obeys the size rule (see [`max_cell_size`]).
//! 6. Keys are strictly increasing in slot order.
//! 7. A leaf's `leftmost_child` is 0, `reserved` is 0, and no child or overflow page is page 0
//!    (page 0 of a tablespace is its header, never a tree page).
//!
//! # Trust
//!
//! [`Node::new`] checks the header only, in constant time; [`Node::check`] checks every cell,
//! in O(n log n). Accessors on a node that passed `check` never panic for in-range indices.
//! On a node that fails `check` they may panic (there is no `unsafe` here, so nothing worse),
//! which is why the tree should call `check` on any page whose origin it does not trust.

use std::fmt;
use std::ops::Range;

/// Smallest body: a 4 KiB page minus the 48-byte page header and the 16-byte trailer.
pub const MIN_BODY_LEN: usize = 4096 - 64;
/// Largest body: a 64 KiB page minus the page header and trailer. Below 65536, so offsets are u16.
pub const MAX_BODY_LEN: usize = 65536 - 64;

// Node header fields.
const KIND: usize = 0;
const KIND_SIZE: usize = 1;
const LEVEL: usize = KIND + KIND_SIZE;
const LEVEL_SIZE: usize = 1;
const CELL_COUNT: usize = LEVEL + LEVEL_SIZE;
const CELL_COUNT_SIZE: usize = 2;
const CONTENT_START: usize = CELL_COUNT + CELL_COUNT_SIZE;
const CONTENT_START_SIZE: usize = 2;
const GARBAGE: usize = CONTENT_START + CONTENT_START_SIZE;
const GARBAGE_SIZE: usize = 2;
const LEFTMOST_CHILD: usize = GARBAGE + GARBAGE_SIZE;
const LEFTMOST_CHILD_SIZE: usize = 4;
const RESERVED: usize = LEFTMOST_CHILD + LEFTMOST_CHILD_SIZE;
const RESERVED_SIZE: usize = 4;
/// Size of the node header; the slot array starts here.
pub const HEADER_SIZE: usize = RESERVED + RESERVED_SIZE;
/// Size of one slot (a u16 cell offset).
const SLOT_SIZE: usize = 2;

const KIND_LEAF: u8 = 1;
const KIND_BRANCH: u8 = 2;

// Leaf cell fields.
const LEAF_KEY_LEN: usize = 0;
const LEAF_KEY_LEN_SIZE: usize = 2;
const LEAF_VALUE_KIND: usize = LEAF_KEY_LEN + LEAF_KEY_LEN_SIZE;
const LEAF_VALUE_KIND_SIZE: usize = 1;
const LEAF_VALUE_LEN: usize = LEAF_VALUE_KIND + LEAF_VALUE_KIND_SIZE;
const LEAF_VALUE_LEN_SIZE: usize = 4;
/// The key starts here; the payload follows the key.
const LEAF_KEY: usize = LEAF_VALUE_LEN + LEAF_VALUE_LEN_SIZE;
/// An overflow payload is the u32 number of the first overflow page.
const OVERFLOW_REF_SIZE: usize = 4;

const VALUE_INLINE: u8 = 0;
const VALUE_OVERFLOW: u8 = 1;

// Branch cell fields.
const BRANCH_KEY_LEN: usize = 0;
const BRANCH_KEY_LEN_SIZE: usize = 2;
const BRANCH_CHILD: usize = BRANCH_KEY_LEN + BRANCH_KEY_LEN_SIZE;
const BRANCH_CHILD_SIZE: usize = 4;
/// The key starts here and runs to the end of the cell.
const BRANCH_KEY: usize = BRANCH_CHILD + BRANCH_CHILD_SIZE;

// Size rules.
//
// Every cell together with its slot takes at most M = usable / 3 bytes. That is what makes
// splitting always possible. Let a node overflow by one cell: its live cells (with slots) fit
// in `usable`, so all of them plus the new one total T <= usable + M. Lay them out in key order.
//
// Leaf split: cut after the first cell at which the running total reaches T / 2. The left side
// is then < T / 2 + M (what came before that cell was < T / 2, the cell adds at most M) and the
// right side is <= T / 2. Both are below (usable + M) / 2 + M = usable / 2 + 3M / 2 <= usable,
// so both halves fit. Cutting one cell earlier mirrors this (left < T / 2, right < T / 2 + M),
// so when the first cut would leave the right side empty, the earlier one fits too.
//
// Branch split: one cell moves up to the parent instead of staying. Promote the cell at which
// the running total reaches T / 2: both sides are then below T / 2. If that cell was the first
// or the last, promote its neighbour instead, so that the side that would have been empty keeps
// one cell (<= M) and the other side only shrinks; that needs at least three cells, and an
// overflowing node has at least four, since three cells of at most M always fit.
//
// The split functions below pick, among the cuts that leave both sides non-empty, the one whose
// larger side is smallest: never worse than the cuts in this argument.

/// Bytes available for slots and cells: the body minus the node header.
pub const fn usable_space(body_len: usize) -> usize {
    body_len - HEADER_SIZE
}

/// Largest cell, not counting its 2-byte slot: cell + slot is at most a third of
/// [`usable_space`], so that any node that overflows by one cell splits into two that fit
/// (the argument is in the comment above [`usable_space`]).
pub const fn max_cell_size(body_len: usize) -> usize {
    usable_space(body_len) / 3 - SLOT_SIZE
}

/// Largest key: a leaf cell with this key and an overflow payload (a 4-byte page number) is
/// exactly [`max_cell_size`]. Branch cells are smaller than leaf cells for the same key, so
/// any key that fits in a leaf also fits in a branch.
///
/// 1325 bytes for 4 KiB pages, 5421 for 16 KiB, 21805 for 64 KiB: always more than a quarter
/// of the page.
pub const fn max_key_len(body_len: usize) -> usize {
    max_cell_size(body_len) - LEAF_KEY - OVERFLOW_REF_SIZE
}

/// Most space one branch insert can take, its slot included: a branch cell for a key of
/// [`max_key_len`] bytes, plus the slot. A branch whose [`Node::free_space`] is at least this
/// takes any separator without splitting, so a split below it cannot propagate past it.
pub const fn max_branch_cell_len(body_len: usize) -> usize {
    BRANCH_KEY + max_key_len(body_len) + SLOT_SIZE
}

/// Largest value stored inline next to a key of `key_len` bytes; longer values go to overflow
/// pages (the caller writes those and stores only [`LeafValue::Overflow`] here). For any
/// `key_len <= max_key_len(body_len)` this is at least 4, the size of an overflow reference.
pub const fn max_inline_value(body_len: usize, key_len: usize) -> usize {
    max_cell_size(body_len).saturating_sub(LEAF_KEY.saturating_add(key_len))
}

/// Leaf or branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// Holds keys and values.
    Leaf,
    /// Holds separator keys and child page numbers.
    Branch,
}

/// The value half of a leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafValue<'a> {
    /// The value itself, stored in the cell.
    Inline(&'a [u8]),
    /// A value kept in a chain of overflow pages that the caller manages.
    Overflow {
        /// Length of the whole value.
        total_len: u32,
        /// Page number of the first overflow page.
        first_page: u32,
    },
}

impl LeafValue<'_> {
    fn payload_len(&self) -> usize {
        match self {
            LeafValue::Inline(v) => v.len(),
            LeafValue::Overflow { .. } => OVERFLOW_REF_SIZE,
        }
    }
}

/// The bytes of a node make no sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A header field, slot or cell is out of bounds or breaks an invariant; the text says which.
    #[error("corrupt B+tree node: {0}")]
    Corrupt(&'static str),
}

/// The node has too little free space for the change; nothing was modified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("B+tree node is full")]
pub struct Full;

/// The node header, decoded.
#[derive(Clone, Copy, Debug)]
struct Header {
    kind: NodeKind,
    level: u8,
    cell_count: usize,
    content_start: usize,
    garbage: usize,
    leftmost_child: u32,
    reserved: u32,
}

impl Header {
    /// Decodes the header and checks invariants 1 and 2; never panics.
    fn decode(b: &[u8]) -> Result<Header, NodeError> {
        if !(MIN_BODY_LEN..=MAX_BODY_LEN).contains(&b.len()) {
            return Err(NodeError::Corrupt("body length out of range"));
        }
        let kind = match b[KIND] {
            KIND_LEAF => NodeKind::Leaf,
            KIND_BRANCH => NodeKind::Branch,
            _ => return Err(NodeError::Corrupt("unknown node kind")),
        };
        let h = Header {
            kind,
            level: b[LEVEL],
            cell_count: usize::from(get_u16(b, CELL_COUNT)),
            content_start: usize::from(get_u16(b, CONTENT_START)),
            garbage: usize::from(get_u16(b, GARBAGE)),
            leftmost_child: get_u32(b, LEFTMOST_CHILD),
            reserved: get_u32(b, RESERVED),
        };
        match (h.kind, h.level) {
            (NodeKind::Leaf, 1..) => return Err(NodeError::Corrupt("leaf above level 0")),
            (NodeKind::Branch, 0) => return Err(NodeError::Corrupt("branch at level 0")),
            _ => {}
        }
        if h.content_start > b.len() {
            return Err(NodeError::Corrupt("content start beyond the body"));
        }
        if h.slot_end() > h.content_start {
            return Err(NodeError::Corrupt("slot array runs into cell content"));
        }
        if h.garbage > b.len() - h.content_start {
            return Err(NodeError::Corrupt("more garbage than cell content"));
        }
        Ok(h)
    }

    fn encode(&self, b: &mut [u8]) {
        b[KIND] = match self.kind {
            NodeKind::Leaf => KIND_LEAF,
            NodeKind::Branch => KIND_BRANCH,
        };
        b[LEVEL] = self.level;
        put_u16(b, CELL_COUNT, self.cell_count);
        put_u16(b, CONTENT_START, self.content_start);
        put_u16(b, GARBAGE, self.garbage);
        put_u32(b, LEFTMOST_CHILD, self.leftmost_child);
        put_u32(b, RESERVED, self.reserved);
    }

    /// End of the slot array.
    fn slot_end(&self) -> usize {
        HEADER_SIZE + self.cell_count * SLOT_SIZE
    }
}

/// One cell, decoded.
#[derive(Clone, Copy, Debug)]
enum Cell<'a> {
    Leaf { key: &'a [u8], value: LeafValue<'a> },
    Branch { key: &'a [u8], child: u32 },
}

impl<'a> Cell<'a> {
    /// Decodes the cell at `off` of a `kind` node, checking that it lies inside `b`.
    fn decode(b: &'a [u8], kind: NodeKind, off: usize) -> Result<Cell<'a>, NodeError> {
        let c = b
            .get(off..)
            .filter(|c| !c.is_empty())
            .ok_or(NodeError::Corrupt("slot points past the body"))?;
        match kind {
            NodeKind::Leaf => {
                let key_len = read_u16(c, LEAF_KEY_LEN).ok_or(CELL_HEADER_OUT)?;
                let value_kind = *c.get(LEAF_VALUE_KIND).ok_or(CELL_HEADER_OUT)?;
                let value_len = read_u32(c, LEAF_VALUE_LEN).ok_or(CELL_HEADER_OUT)?;
                let payload = LEAF_KEY + key_len;
                let key = c.get(LEAF_KEY..payload).ok_or(CELL_BODY_OUT)?;
                let value = match value_kind {
                    VALUE_INLINE => {
                        let end = usize::try_from(value_len)
                            .ok()
                            .and_then(|len| payload.checked_add(len))
                            .ok_or(CELL_BODY_OUT)?;
                        LeafValue::Inline(c.get(payload..end).ok_or(CELL_BODY_OUT)?)
                    }
                    VALUE_OVERFLOW => LeafValue::Overflow {
                        total_len: value_len,
                        first_page: read_u32(c, payload).ok_or(CELL_BODY_OUT)?,
                    },
                    _ => return Err(NodeError::Corrupt("unknown value kind")),
                };
                Ok(Cell::Leaf { key, value })
            }
            NodeKind::Branch => {
                let key_len = read_u16(c, BRANCH_KEY_LEN).ok_or(CELL_HEADER_OUT)?;
                let child = read_u32(c, BRANCH_CHILD).ok_or(CELL_HEADER_OUT)?;
                let key = c
                    .get(BRANCH_KEY..BRANCH_KEY + key_len)
                    .ok_or(CELL_BODY_OUT)?;
                Ok(Cell::Branch { key, child })
            }
        }
    }

    /// Writes the cell into `out`, which is exactly `self.size()` bytes long.
    fn encode(&self, out: &mut [u8]) {
        match *self {
            Cell::Leaf { key, value } => {
                put_u16(out, LEAF_KEY_LEN, key.len());
                out[LEAF_KEY..LEAF_KEY + key.len()].copy_from_slice(key);
                encode_leaf_value(out, key.len(), value);
            }
            Cell::Branch { key, child } => {
                put_u16(out, BRANCH_KEY_LEN, key.len());
                put_u32(out, BRANCH_CHILD, child);
                out[BRANCH_KEY..].copy_from_slice(key);
            }
        }
    }

    fn kind(&self) -> NodeKind {
        match self {
            Cell::Leaf { .. } => NodeKind::Leaf,
            Cell::Branch { .. } => NodeKind::Branch,
        }
    }

    fn key(&self) -> &'a [u8] {
        match *self {
            Cell::Leaf { key, .. } | Cell::Branch { key, .. } => key,
        }
    }

    /// Bytes the cell occupies, not counting its slot.
    fn size(&self) -> usize {
        match self {
            Cell::Leaf { key, value } => leaf_cell_size(key.len(), *value),
            Cell::Branch { key, .. } => branch_cell_size(key.len()),
        }
    }
}

const CELL_HEADER_OUT: NodeError = NodeError::Corrupt("cell header runs past the body");
const CELL_BODY_OUT: NodeError = NodeError::Corrupt("cell runs past the body");

fn leaf_cell_size(key_len: usize, value: LeafValue<'_>) -> usize {
    LEAF_KEY + key_len + value.payload_len()
}

fn branch_cell_size(key_len: usize) -> usize {
    BRANCH_KEY + key_len
}

/// Writes the value fields of a leaf cell whose key (of `key_len` bytes) is already in place.
fn encode_leaf_value(cell: &mut [u8], key_len: usize, value: LeafValue<'_>) {
    let payload = LEAF_KEY + key_len;
    match value {
        LeafValue::Inline(v) => {
            cell[LEAF_VALUE_KIND] = VALUE_INLINE;
            let len = u32::try_from(v.len()).expect("inline values are shorter than a page");
            put_u32(cell, LEAF_VALUE_LEN, len);
            cell[payload..payload + v.len()].copy_from_slice(v);
        }
        LeafValue::Overflow {
            total_len,
            first_page,
        } => {
            cell[LEAF_VALUE_KIND] = VALUE_OVERFLOW;
            put_u32(cell, LEAF_VALUE_LEN, total_len);
            put_u32(cell, payload, first_page);
        }
    }
}

/// A read-only view of a node.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    b: &'a [u8],
    h: Header,
}

impl<'a> Node<'a> {
    /// Views `b` as a node, checking the header (invariants 1 and 2) but not the cells.
    pub fn new(b: &'a [u8]) -> Result<Node<'a>, NodeError> {
        Ok(Node {
            b,
            h: Header::decode(b)?,
        })
    }

    /// Leaf or branch.
    pub fn kind(&self) -> NodeKind {
        self.h.kind
    }

    /// Height above the leaves: 0 for a leaf, 1 + the children's level for a branch.
    pub fn level(&self) -> u8 {
        self.h.level
    }

    /// Number of cells (keys).
    pub fn len(&self) -> usize {
        self.h.cell_count
    }

    /// Whether the node holds no cells.
    pub fn is_empty(&self) -> bool {
        self.h.cell_count == 0
    }

    /// Key of cell `i`. Panics if `i >= len()`.
    pub fn key(&self, i: usize) -> &'a [u8] {
        self.cell(i).key()
    }

    /// Value of cell `i` of a leaf. Panics on a branch or if `i >= len()`.
    pub fn leaf_value(&self, i: usize) -> LeafValue<'a> {
        match self.cell(i) {
            Cell::Leaf { value, .. } => value,
            Cell::Branch { .. } => panic!("leaf_value called on a branch node"),
        }
    }

    /// Child `i` of a branch, for `i` in `0..=len()`: child 0 is the leftmost child (keys below
    /// key 0) and child `i + 1` is cell `i`'s child (keys from key `i` up to key `i + 1`).
    /// Panics on a leaf or if `i > len()`.
    pub fn child(&self, i: usize) -> u32 {
        assert_eq!(self.h.kind, NodeKind::Branch, "child called on a leaf node");
        if i == 0 {
            return self.h.leftmost_child;
        }
        match self.cell(i - 1) {
            Cell::Branch { child, .. } => child,
            Cell::Leaf { .. } => unreachable!("a branch decodes branch cells"),
        }
    }

    /// Binary search for `key`: `Ok(i)` if cell `i` holds it, else `Err(i)` with the index
    /// where it would be inserted.
    pub fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Which child of a branch to descend into for `key`: the number of cells whose key is
    /// `<= key`, to be passed to [`Node::child`].
    pub fn child_index_for(&self, key: &[u8]) -> usize {
        match self.search(key) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// Bytes available for new cells and their slots, counting garbage (an insert compacts).
    pub fn free_space(&self) -> usize {
        self.h.content_start - self.h.slot_end() + self.h.garbage
    }

    /// Bytes taken by live cells and their slots: [`usable_space`] minus [`Node::free_space`].
    pub fn used_space(&self) -> usize {
        usable_space(self.b.len()) - self.free_space()
    }

    /// Whether [`NodeMut::leaf_insert`] of a key of `key_len` bytes and `value` would succeed.
    pub fn would_fit_leaf(&self, key_len: usize, value: LeafValue<'_>) -> bool {
        leaf_cell_size(key_len, value) + SLOT_SIZE <= self.free_space()
    }

    /// Whether [`NodeMut::branch_insert`] of a key of `key_len` bytes would succeed.
    pub fn would_fit_branch(&self, key_len: usize) -> bool {
        branch_cell_size(key_len) + SLOT_SIZE <= self.free_space()
    }

    /// Checks every invariant listed in the module documentation.
    pub fn check(&self) -> Result<(), NodeError> {
        let h = &self.h;
        if h.reserved != 0 {
            return Err(NodeError::Corrupt("reserved header field is not zero"));
        }
        match (h.kind, h.leftmost_child) {
            (NodeKind::Leaf, 1..) => return Err(NodeError::Corrupt("leaf has a leftmost child")),
            (NodeKind::Branch, 0) => return Err(NodeError::Corrupt("branch child is page 0")),
            _ => {}
        }
        let max_cell = max_cell_size(self.b.len());
        let mut extents = Vec::with_capacity(h.cell_count);
        let mut live = 0;
        let mut prev_key: Option<&[u8]> = None;
        for i in 0..h.cell_count {
            let off = self.slot(i);
            if off < h.content_start {
                return Err(NodeError::Corrupt("slot points below content start"));
            }
            let cell = Cell::decode(self.b, h.kind, off)?;
            let size = cell.size();
            if size > max_cell {
                return Err(NodeError::Corrupt("cell larger than the size rule allows"));
            }
            match cell {
                Cell::Leaf {
                    value: LeafValue::Overflow { first_page: 0, .. },
                    ..
                } => return Err(NodeError::Corrupt("overflow value starts at page 0")),
                Cell::Branch { child: 0, .. } => {
                    return Err(NodeError::Corrupt("branch child is page 0"))
                }
                _ => {}
            }
            if prev_key.is_some_and(|prev| prev >= cell.key()) {
                return Err(NodeError::Corrupt("keys are not strictly increasing"));
            }
            prev_key = Some(cell.key());
            extents.push((off, off + size));
            live += size;
        }
        extents.sort_unstable();
        if extents.windows(2).any(|w| w[0].1 > w[1].0) {
            return Err(NodeError::Corrupt("cells overlap"));
        }
        if live + h.garbage != self.b.len() - h.content_start {
            return Err(NodeError::Corrupt(
                "cell content is not live cells plus garbage",
            ));
        }
        Ok(())
    }

    /// Offset of cell `i`, read from its slot. Panics if `i >= len()`.
    fn slot(&self, i: usize) -> usize {
        assert!(
            i < self.h.cell_count,
            "cell index {i} out of range for a node of {} cells",
            self.h.cell_count
        );
        usize::from(get_u16(self.b, HEADER_SIZE + i * SLOT_SIZE))
    }

    /// Cell `i`, decoded. Panics if `i >= len()` or the cell is corrupt.
    fn cell(&self, i: usize) -> Cell<'a> {
        Cell::decode(self.b, self.h.kind, self.slot(i))
            .unwrap_or_else(|e| panic!("{e} (call Node::check on untrusted pages)"))
    }

    /// Where cell `i` lies in the body.
    fn cell_range(&self, i: usize) -> Range<usize> {
        let off = self.slot(i);
        off..off + self.cell(i).size()
    }

    /// Every cell, in key order.
    fn cells(&self) -> Vec<Cell<'a>> {
        (0..self.len()).map(|i| self.cell(i)).collect()
    }
}

impl fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("kind", &self.h.kind)
            .field("level", &self.h.level)
            .field("len", &self.h.cell_count)
            .field("free_space", &self.free_space())
            .finish()
    }
}

/// A mutable view of a node. Every change keeps the invariants of the module documentation;
/// a change that does not fit returns [`Full`] and leaves the bytes untouched.
pub struct NodeMut<'a> {
    b: &'a mut [u8],
    h: Header,
}

impl<'a> NodeMut<'a> {
    /// Views `b` as a node, checking the header but not the cells (like [`Node::new`]).
    pub fn new(b: &'a mut [u8]) -> Result<NodeMut<'a>, NodeError> {
        let h = Header::decode(b)?;
        Ok(NodeMut { b, h })
    }

    /// Formats `b` as an empty node. Panics if the body length is out of range or the level
    /// does not suit the kind (leaves are level 0, branches level 1 or more).
    pub fn init(b: &'a mut [u8], kind: NodeKind, level: u8) -> NodeMut<'a> {
        assert!(
            (MIN_BODY_LEN..=MAX_BODY_LEN).contains(&b.len()),
            "node body of {} bytes is out of range",
            b.len()
        );
        assert_eq!(
            kind == NodeKind::Leaf,
            level == 0,
            "leaves are level 0, branches above"
        );
        let h = Header {
            kind,
            level,
            cell_count: 0,
            content_start: b.len(),
            garbage: 0,
            leftmost_child: 0,
            reserved: 0,
        };
        let mut node = NodeMut { b, h };
        node.reset();
        node
    }

    /// A read-only view of the same bytes.
    pub fn as_node(&self) -> Node<'_> {
        Node {
            b: self.b,
            h: self.h,
        }
    }

    /// Inserts `key` with `value` as cell `i` of a leaf. The caller keeps keys sorted and unique
    /// (use [`Node::search`]) and respects [`max_key_len`] and [`max_inline_value`]; breaking
    /// those is a bug and panics.
    pub fn leaf_insert(&mut self, i: usize, key: &[u8], value: LeafValue<'_>) -> Result<(), Full> {
        self.insert_cell(i, Cell::Leaf { key, value })
    }

    /// Inserts `key` as cell `i` of a branch; `child` holds the keys from `key` up to the next
    /// key. Same contract as [`NodeMut::leaf_insert`].
    pub fn branch_insert(&mut self, i: usize, key: &[u8], child: u32) -> Result<(), Full> {
        self.insert_cell(i, Cell::Branch { key, child })
    }

    /// Replaces the value of leaf cell `i`, keeping its key. A value no longer than the old one
    /// is written in place; a longer one moves the cell.
    pub fn leaf_replace_value(&mut self, i: usize, value: LeafValue<'_>) -> Result<(), Full> {
        assert_eq!(
            self.h.kind,
            NodeKind::Leaf,
            "leaf_replace_value on a branch"
        );
        let old = self.as_node().cell_range(i);
        let key_len = self.as_node().key(i).len();
        let new_size = leaf_cell_size(key_len, value);
        assert!(
            new_size <= max_cell_size(self.b.len()),
            "value of {} bytes breaks the size rule; check max_inline_value first",
            value.payload_len()
        );
        if new_size <= old.len() {
            let cell = &mut self.b[old.clone()];
            encode_leaf_value(cell, key_len, value);
            cell[new_size..].fill(0);
            self.h.garbage += old.len() - new_size;
            self.store_header();
            return Ok(());
        }
        if new_size > self.as_node().free_space() + old.len() {
            return Err(Full);
        }
        let key = self.as_node().key(i).to_vec();
        self.remove(i);
        self.put_cell(i, &Cell::Leaf { key: &key, value });
        Ok(())
    }

    /// Sets the leftmost child of a branch: the page holding the keys below key 0.
    pub fn set_leftmost_child(&mut self, page: u32) {
        self.set_child(0, page);
    }

    /// Sets child `i` of a branch (numbered as in [`Node::child`]: 0 is the leftmost child).
    pub fn set_child(&mut self, i: usize, page: u32) {
        assert_eq!(self.h.kind, NodeKind::Branch, "set_child on a leaf node");
        if i == 0 {
            self.h.leftmost_child = page;
            self.store_header();
        } else {
            let cell = self.as_node().cell_range(i - 1);
            put_u32(&mut self.b[cell], BRANCH_CHILD, page);
        }
    }

    /// Removes cell `i`; its bytes become garbage. On a branch this drops key `i` and child
    /// `i + 1`. Panics if `i >= len()`.
    pub fn remove(&mut self, i: usize) {
        let cell = self.as_node().cell_range(i);
        self.b[cell.clone()].fill(0);
        self.h.garbage += cell.len();
        let slot = HEADER_SIZE + i * SLOT_SIZE;
        let slot_end = self.h.slot_end();
        self.b.copy_within(slot + SLOT_SIZE..slot_end, slot);
        self.b[slot_end - SLOT_SIZE..slot_end].fill(0);
        self.h.cell_count -= 1;
        if self.h.cell_count == 0 {
            self.reset(); // Everything left is garbage; start afresh.
        } else {
            self.store_header();
        }
    }

    /// Rewrites the live cells contiguously at the end of the body, turning all garbage into
    /// free space between the slot array and the cells.
    pub fn compact(&mut self) {
        if self.h.garbage == 0 {
            return; // By invariant 4 the cells are already contiguous.
        }
        let snapshot = self.b.to_vec();
        let old = Node {
            b: &snapshot,
            h: self.h,
        };
        self.b[self.h.content_start..].fill(0);
        let mut end = self.b.len();
        for i in (0..old.len()).rev() {
            let cell = old.cell_range(i);
            let start = end - cell.len();
            self.b[start..end].copy_from_slice(&snapshot[cell]);
            put_u16(self.b, HEADER_SIZE + i * SLOT_SIZE, start);
            end = start;
        }
        self.h.content_start = end;
        self.h.garbage = 0;
        self.store_header();
    }

    fn insert_cell(&mut self, i: usize, cell: Cell<'_>) -> Result<(), Full> {
        self.assert_insertable(i, &cell);
        if cell.size() + SLOT_SIZE > self.as_node().free_space() {
            return Err(Full);
        }
        self.put_cell(i, &cell);
        Ok(())
    }

    /// Panics unless `cell` may go in at index `i`: right kind, index in range, within the size
    /// rule and (checked in debug builds) between its neighbours' keys.
    fn assert_insertable(&self, i: usize, cell: &Cell<'_>) {
        assert_eq!(
            cell.kind(),
            self.h.kind,
            "cell kind does not match the node"
        );
        assert!(
            i <= self.h.cell_count,
            "insert at {i} into a node of {} cells",
            self.h.cell_count
        );
        assert!(
            cell.size() <= max_cell_size(self.b.len()),
            "cell of {} bytes breaks the size rule (at most {}); check max_key_len and \
             max_inline_value first",
            cell.size(),
            max_cell_size(self.b.len())
        );
        debug_assert!(
            i == 0 || self.as_node().key(i - 1) < cell.key(),
            "insert out of key order"
        );
        debug_assert!(
            i == self.h.cell_count || cell.key() < self.as_node().key(i),
            "insert out of key order"
        );
    }

    /// Writes `cell` as cell `i`, compacting first if the gap is too small. The caller has
    /// checked that it fits in the free space.
    fn put_cell(&mut self, i: usize, cell: &Cell<'_>) {
        let size = cell.size();
        if self.h.content_start - self.h.slot_end() < size + SLOT_SIZE {
            self.compact();
        }
        assert!(
            self.h.content_start - self.h.slot_end() >= size + SLOT_SIZE,
            "put_cell called without room"
        );
        let off = self.h.content_start - size;
        cell.encode(&mut self.b[off..off + size]);
        let slot = HEADER_SIZE + i * SLOT_SIZE;
        let slot_end = self.h.slot_end();
        self.b.copy_within(slot..slot_end, slot + SLOT_SIZE);
        put_u16(self.b, slot, off);
        self.h.content_start = off;
        self.h.cell_count += 1;
        self.store_header();
    }

    /// Appends `cells`, which the caller has checked fit and follow the current keys.
    fn extend(&mut self, cells: &[Cell<'_>]) {
        for cell in cells {
            self.put_cell(self.h.cell_count, cell);
        }
    }

    /// Empties the node, keeping kind, level and leftmost child, and zeroes the rest of the body.
    fn reset(&mut self) {
        self.b.fill(0);
        self.h.cell_count = 0;
        self.h.content_start = self.b.len();
        self.h.garbage = 0;
        self.store_header();
    }

    fn store_header(&mut self) {
        self.h.encode(self.b);
    }
}

impl fmt::Debug for NodeMut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_node().fmt(f)
    }
}

// Splitting and merging. These take plain bodies, like the pages the tree holds, and panic if a
// header is corrupt: the tree has viewed each node with `NodeMut::new` or `Node::new` before.

const HEADER_CHECKED: &str = "split or merge of a node whose header was never checked";

/// Inserts a leaf cell that does not fit in `left` by splitting: all cells plus the new one are
/// shared between `left` (the lower keys) and `right`, a body of the same length that is
/// formatted here (the higher keys), so that both hold about the same number of bytes and at
/// least one cell each. Returns the separator, the first key of `right`, which the caller
/// inserts into the parent with `right`'s page number.
///
/// Panics, before changing anything, if the insert breaks the contract of
/// [`NodeMut::leaf_insert`], if the bodies differ in length, or if there would be fewer than two
/// cells in all (a node with room for the cell does not need splitting).
pub fn leaf_insert_split(
    left: &mut [u8],
    i: usize,
    key: &[u8],
    value: LeafValue<'_>,
    right: &mut [u8],
) -> Vec<u8> {
    let mut node = NodeMut::new(left).expect(HEADER_CHECKED);
    let new = Cell::Leaf { key, value };
    node.assert_insertable(i, &new);
    assert_eq!(right.len(), node.b.len(), "split bodies differ in length");
    assert!(
        !node.as_node().is_empty(),
        "a leaf split needs at least two cells"
    );

    let snapshot = node.b.to_vec();
    let mut cells = Node::new(&snapshot).expect(HEADER_CHECKED).cells();
    cells.insert(i, new);
    let k = split_point(&cells, false);
    let separator = cells[k].key().to_vec();

    node.reset();
    node.extend(&cells[..k]);
    NodeMut::init(right, NodeKind::Leaf, 0).extend(&cells[k..]);
    separator
}

/// Inserts a branch cell that does not fit in `left` by splitting: of all cells plus the new
/// one, the lower ones stay in `left`, the higher ones go to `right` (a body of the same length,
/// formatted here), and the middle cell is promoted: its key is returned for the parent and is
/// in neither half, and its child becomes `right`'s leftmost child. The cut balances the bytes
/// of the halves and leaves at least one cell on each side (there are always four or more
/// cells when the insert did not fit).
///
/// Panics, before changing anything, under the same conditions as [`leaf_insert_split`].
pub fn branch_insert_split(
    left: &mut [u8],
    i: usize,
    key: &[u8],
    child: u32,
    right: &mut [u8],
) -> Vec<u8> {
    let mut node = NodeMut::new(left).expect(HEADER_CHECKED);
    let new = Cell::Branch { key, child };
    node.assert_insertable(i, &new);
    assert_eq!(right.len(), node.b.len(), "split bodies differ in length");

    let snapshot = node.b.to_vec();
    let mut cells = Node::new(&snapshot).expect(HEADER_CHECKED).cells();
    cells.insert(i, new);
    let m = split_point(&cells, true);
    let Cell::Branch {
        key: middle,
        child: middle_child,
    } = cells[m]
    else {
        unreachable!("a branch holds branch cells");
    };

    node.reset();
    node.extend(&cells[..m]);
    let mut r = NodeMut::init(right, NodeKind::Branch, node.h.level);
    r.set_leftmost_child(middle_child);
    r.extend(&cells[m + 1..]);
    middle.to_vec()
}

/// Appends every cell of `right`, the right sibling of `left` with the same kind and level, to
/// `left`. For branches, `separator` is the parent's key between the two; it comes down with
/// `right`'s leftmost child as a new cell. For leaves it must be `None`. Returns [`Full`] and
/// changes nothing if it all does not fit; `right` is never changed (the caller frees it).
pub fn merge_into(left: &mut [u8], right: &[u8], separator: Option<&[u8]>) -> Result<(), Full> {
    let mut node = NodeMut::new(left).expect(HEADER_CHECKED);
    let right = Node::new(right).expect(HEADER_CHECKED);
    assert_eq!(
        node.h.kind,
        right.kind(),
        "merging nodes of different kinds"
    );
    assert_eq!(
        node.h.level,
        right.level(),
        "merging nodes of different levels"
    );
    let mut incoming = Vec::with_capacity(right.len() + 1);
    match (node.h.kind, separator) {
        (NodeKind::Leaf, None) => {}
        (NodeKind::Branch, Some(key)) => incoming.push(Cell::Branch {
            key,
            child: right.child(0),
        }),
        _ => panic!("a branch merge needs the separator, a leaf merge does not"),
    }
    incoming.extend(right.cells());
    let needed: usize = incoming.iter().map(|c| c.size() + SLOT_SIZE).sum();
    if needed > node.as_node().free_space() {
        return Err(Full);
    }
    for cell in &incoming {
        node.assert_insertable(node.h.cell_count, cell);
    }
    node.extend(&incoming);
    Ok(())
}

/// Where to cut `cells` (at least two of them) in a split, minimising the larger side's bytes
/// (cells plus slots) among the cuts that leave at least one cell on each side.
///
/// Without `promote` the halves are `..k` and `k..`. With `promote` cell `k` moves up to the
/// parent and the halves are `..k` and `k + 1..`; with fewer than three cells one half must
/// then be empty. The comment above [`usable_space`] shows that the chosen cut fits.
fn split_point(cells: &[Cell<'_>], promote: bool) -> usize {
    let sizes: Vec<usize> = cells.iter().map(|c| c.size() + SLOT_SIZE).collect();
    let total: usize = sizes.iter().sum();
    let n = sizes.len();
    let candidates = match (promote, n) {
        (false, _) => 1..n,
        (true, 0..=2) => 0..n,
        (true, _) => 1..n - 1,
    };
    let mut best = (usize::MAX, candidates.start);
    let mut left: usize = sizes[..candidates.start].iter().sum();
    for k in candidates {
        let moved_up = if promote { sizes[k] } else { 0 };
        let right = total - left - moved_up;
        let larger = left.max(right);
        if larger < best.0 {
            best = (larger, k);
        }
        left += sizes[k];
    }
    best.1
}

fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Like [`get_u16`], but `None` past the end of `b`.
fn read_u16(b: &[u8], at: usize) -> Option<usize> {
    let bytes = b.get(at..at.checked_add(2)?)?;
    Some(usize::from(u16::from_le_bytes([bytes[0], bytes[1]])))
}

/// Like [`get_u32`], but `None` past the end of `b`.
fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Stores an offset or length, which fits in a u16 because bodies are shorter than 64 KiB.
fn put_u16(b: &mut [u8], at: usize, v: usize) {
    let v = u16::try_from(v).expect("node offsets and key lengths fit in a u16");
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const BODY_4K: usize = 4096 - 64;
    const BODY_16K: usize = 16384 - 64;
    const BODY_64K: usize = 65536 - 64;

    /// An owned [`LeafValue`], for models.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Val {
        Inline(Vec<u8>),
        Overflow { total_len: u32, first_page: u32 },
    }

    impl Val {
        fn as_leaf(&self) -> LeafValue<'_> {
            match self {
                Val::Inline(v) => LeafValue::Inline(v),
                Val::Overflow {
                    total_len,
                    first_page,
                } => LeafValue::Overflow {
                    total_len: *total_len,
                    first_page: *first_page,
                },
            }
        }

        fn from_leaf(v: LeafValue<'_>) -> Val {
            match v {
                LeafValue::Inline(v) => Val::Inline(v.to_vec()),
                LeafValue::Overflow {
                    total_len,
                    first_page,
                } => Val::Overflow {
                    total_len,
                    first_page,
                },
            }
        }
    }

    fn inline(v: &[u8]) -> Val {
        Val::Inline(v.to_vec())
    }

    /// Panics unless `b` passes `check` and its free gap is zero, so no removed data lingers.
    fn check_and_gap_zeroed(b: &[u8]) -> Node<'_> {
        let node = Node::new(b).unwrap();
        node.check().unwrap();
        let gap = &b[node.h.slot_end()..node.h.content_start];
        assert!(gap.iter().all(|&x| x == 0), "stale bytes in the free gap");
        node
    }

    /// The entries of a leaf that must pass `check`.
    fn leaf_entries(b: &[u8]) -> Vec<(Vec<u8>, Val)> {
        let node = check_and_gap_zeroed(b);
        assert_eq!(node.kind(), NodeKind::Leaf);
        (0..node.len())
            .map(|i| (node.key(i).to_vec(), Val::from_leaf(node.leaf_value(i))))
            .collect()
    }

    /// The keys and children of a branch that must pass `check`.
    fn branch_contents(b: &[u8]) -> (Vec<Vec<u8>>, Vec<u32>) {
        let node = check_and_gap_zeroed(b);
        assert_eq!(node.kind(), NodeKind::Branch);
        let keys = (0..node.len()).map(|i| node.key(i).to_vec()).collect();
        let children = (0..=node.len()).map(|i| node.child(i)).collect();
        (keys, children)
    }

    fn leaf_with(body_len: usize, entries: &[(&[u8], Val)]) -> Vec<u8> {
        let mut b = vec![0; body_len];
        let mut node = NodeMut::init(&mut b, NodeKind::Leaf, 0);
        for (key, val) in entries {
            let i = node.as_node().search(key).unwrap_err();
            node.leaf_insert(i, key, val.as_leaf()).unwrap();
        }
        b
    }

    /// A level-1 branch with children 100, 101, ... around `keys`.
    fn branch_with(body_len: usize, keys: &[&[u8]]) -> Vec<u8> {
        let mut b = vec![0; body_len];
        let mut node = NodeMut::init(&mut b, NodeKind::Branch, 1);
        node.set_child(0, 100);
        for (i, key) in keys.iter().enumerate() {
            node.branch_insert(i, key, 101 + i as u32).unwrap();
        }
        b
    }

    fn corrupt(msg: &'static str) -> Result<(), NodeError> {
        Err(NodeError::Corrupt(msg))
    }

    fn check(b: &[u8]) -> Result<(), NodeError> {
        Node::new(b)?.check()
    }

    /// A small xorshift generator, so that seeded tests can make many random cells cheaply.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.below(256) as u8).collect()
        }
    }

    #[test]
    fn layout_is_pinned() {
        let b = leaf_with(
            BODY_4K,
            &[
                (b"b", inline(b"xy")),
                (
                    b"a",
                    Val::Overflow {
                        total_len: 70_000,
                        first_page: 9,
                    },
                ),
            ],
        );
        // Body 4032 = 0x0FC0. "b" went in first: a 10-byte cell at 4022 = 0x0FB6;
        // then "a": a 12-byte cell at 4010 = 0x0FAA, whose slot comes first.
        #[rustfmt::skip]
        let header_and_slots = [
            1,                      // kind: leaf
            0,                      // level
            2, 0,                   // cell_count
            0xAA, 0x0F,             // content_start
            0, 0,                   // garbage
            0, 0, 0, 0,             // leftmost_child
            0, 0, 0, 0,             // reserved
            0xAA, 0x0F,             // slot 0 -> "a"
            0xB6, 0x0F,             // slot 1 -> "b"
        ];
        assert_eq!(b[..20], header_and_slots);
        assert!(b[20..0x0FAA].iter().all(|&x| x == 0));
        #[rustfmt::skip]
        let cells = [
            1, 0,                   // key_len
            1,                      // value_kind: overflow
            0x70, 0x11, 0x01, 0x00, // value_len: 70000
            b'a',                   // key
            9, 0, 0, 0,             // first overflow page
            1, 0,                   // key_len
            0,                      // value_kind: inline
            2, 0, 0, 0,             // value_len
            b'b',                   // key
            b'x', b'y',             // value
        ];
        assert_eq!(b[0x0FAA..], cells);

        let b = branch_with(BODY_4K, &[b"k"]);
        #[rustfmt::skip]
        let expected = [
            2, 1,                   // kind: branch, level 1
            1, 0,                   // cell_count
            0xB9, 0x0F,             // content_start: 4032 - 7
            0, 0,                   // garbage
            100, 0, 0, 0,           // leftmost_child
            0, 0, 0, 0,             // reserved
            0xB9, 0x0F,             // slot 0
        ];
        assert_eq!(b[..18], expected);
        assert_eq!(b[0x0FB9..], [1, 0, 101, 0, 0, 0, b'k']);
    }

    #[test]
    fn size_rules_for_common_page_sizes() {
        // 4 KiB: usable 4016, a third is 1338, minus the slot 1336.
        assert_eq!(usable_space(BODY_4K), 4016);
        assert_eq!(max_cell_size(BODY_4K), 1336);
        assert_eq!(max_key_len(BODY_4K), 1325);
        assert_eq!(max_inline_value(BODY_4K, 0), 1329);
        assert_eq!(max_inline_value(BODY_4K, 16), 1313);
        // 16 KiB: usable 16304, a third is 5434.
        assert_eq!(usable_space(BODY_16K), 16304);
        assert_eq!(max_cell_size(BODY_16K), 5432);
        assert_eq!(max_key_len(BODY_16K), 5421);
        assert_eq!(max_inline_value(BODY_16K, 16), 5409);
        // 64 KiB.
        assert_eq!(max_key_len(BODY_64K), 21805);
        // Past the largest key there is no inline room at all.
        assert_eq!(max_inline_value(BODY_4K, 5000), 0);
    }

    #[test]
    fn max_key_len_is_at_least_a_quarter_page_for_every_page_size() {
        for page_size in 4096..=65536 {
            let body = page_size - 64;
            let key = max_key_len(body);
            assert!(key >= page_size / 4, "page {page_size}: max key {key}");
            assert!(key <= usize::from(u16::MAX));
            // A largest key still leaves room for an overflow reference or 4 inline bytes.
            assert_eq!(max_inline_value(body, key), OVERFLOW_REF_SIZE);
            // Three largest cells with their slots fit in an empty node.
            assert!(3 * (max_cell_size(body) + SLOT_SIZE) <= usable_space(body));
        }
    }

    #[test]
    fn max_branch_cell_len_is_exact() {
        let key = vec![b'z'; max_key_len(BODY_4K)];
        assert_eq!(max_branch_cell_len(BODY_4K), 6 + 1325 + 2);
        // Used space 24 + 1325 + 1325 + short: free space is 1333 + 9 - short.
        for (short, fits) in [(9, true), (10, false)] {
            let mut b = vec![0; BODY_4K];
            let mut node = NodeMut::init(&mut b, NodeKind::Branch, 1);
            node.set_leftmost_child(1);
            for (i, len) in [max_key_len(BODY_4K), max_key_len(BODY_4K), short]
                .into_iter()
                .enumerate()
            {
                node.branch_insert(i, &vec![b'a' + i as u8; len], 2)
                    .unwrap();
            }
            let free = node.as_node().free_space();
            assert_eq!(free >= max_branch_cell_len(BODY_4K), fits);
            assert_eq!(node.branch_insert(3, &key, 3).is_ok(), fits);
        }
    }

    #[test]
    fn search_and_child_index_for() {
        let b = branch_with(BODY_4K, &[b"b", b"d", b"f"]);
        let node = Node::new(&b).unwrap();
        assert_eq!(node.search(b"d"), Ok(1));
        assert_eq!(node.search(b"a"), Err(0));
        assert_eq!(node.search(b"e"), Err(2));
        assert_eq!(node.search(b"g"), Err(3));
        assert_eq!(node.child_index_for(b""), 0);
        assert_eq!(node.child_index_for(b"a"), 0);
        assert_eq!(node.child_index_for(b"b"), 1);
        assert_eq!(node.child_index_for(b"c"), 1);
        assert_eq!(node.child_index_for(b"f"), 3);
        assert_eq!(node.child_index_for(b"ff"), 3);
        assert_eq!(
            (0..=3).map(|i| node.child(i)).collect::<Vec<_>>(),
            [100, 101, 102, 103]
        );

        let empty = leaf_with(BODY_4K, &[]);
        assert_eq!(Node::new(&empty).unwrap().search(b"x"), Err(0));

        // The empty key sorts first, and a prefix sorts before its extensions.
        let b = leaf_with(
            BODY_4K,
            &[
                (b"ab", inline(b"2")),
                (b"", inline(b"0")),
                (b"a", inline(b"1")),
            ],
        );
        let keys: Vec<_> = leaf_entries(&b).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [&b""[..], b"a", b"ab"]);
    }

    #[test]
    fn set_child_changes_only_that_child() {
        let mut b = branch_with(BODY_4K, &[b"b", b"d"]);
        let mut node = NodeMut::new(&mut b).unwrap();
        node.set_child(0, 7);
        node.set_child(2, 9);
        assert_eq!(
            branch_contents(&b),
            (vec![b"b".to_vec(), b"d".to_vec()], vec![7, 101, 9])
        );
    }

    #[test]
    fn failed_insert_changes_nothing() {
        let mut b = leaf_with(BODY_4K, &[]);
        let value = vec![7; 200];
        let mut n = 0u32;
        loop {
            let before = b.clone();
            let key = n.to_be_bytes();
            let mut node = NodeMut::new(&mut b).unwrap();
            let fits = node
                .as_node()
                .would_fit_leaf(key.len(), LeafValue::Inline(&value));
            match node.leaf_insert(n as usize, &key, LeafValue::Inline(&value)) {
                Ok(()) => assert!(fits),
                Err(Full) => {
                    assert!(!fits);
                    assert_eq!(b, before);
                    break;
                }
            }
            n += 1;
        }
        assert_eq!(n, 4016 / (2 + 7 + 4 + 200));
        assert_eq!(leaf_entries(&b).len(), n as usize);
    }

    #[test]
    fn garbage_is_reclaimed_by_compaction() {
        let value = [0xAB; 100];
        let mut b = leaf_with(BODY_4K, &[]);
        let mut node = NodeMut::new(&mut b).unwrap();
        let mut n = 0u16;
        while node
            .leaf_insert(
                usize::from(n),
                &(2 * n).to_be_bytes(),
                LeafValue::Inline(&value),
            )
            .is_ok()
        {
            n += 1;
        }
        for i in (0..usize::from(n)).rev().step_by(2) {
            node.remove(i);
        }
        let removed = usize::from(n).div_ceil(2);
        assert_eq!(node.h.garbage, removed * (7 + 2 + 100));
        let gap = node.h.content_start - node.h.slot_end();
        assert!(
            gap < 7 + 2 + 100 + SLOT_SIZE,
            "the test must need compaction"
        );

        // Odd keys slot in between the survivors; the first one forces a compaction.
        let mut inserted = 0;
        for k in (1..2 * n).step_by(2) {
            let key = k.to_be_bytes();
            let i = node.as_node().search(&key).unwrap_err();
            if node
                .leaf_insert(i, &key, LeafValue::Inline(&value))
                .is_err()
            {
                break;
            }
            assert_eq!(node.h.garbage, 0, "insert compacted");
            inserted += 1;
        }
        assert!(inserted >= removed, "{inserted} of {removed} fit again");
        let entries = leaf_entries(&b);
        assert_eq!(entries.len(), usize::from(n) - removed + inserted);
        assert!(entries.iter().all(|(_, v)| *v == inline(&value)));
    }

    #[test]
    fn removing_the_last_cell_resets_the_node() {
        let mut b = leaf_with(BODY_4K, &[(b"a", inline(b"1")), (b"b", inline(b"2"))]);
        let mut node = NodeMut::new(&mut b).unwrap();
        node.remove(1);
        node.remove(0);
        assert!(node.as_node().is_empty());
        assert_eq!(node.as_node().free_space(), usable_space(BODY_4K));
        assert_eq!(b, leaf_with(BODY_4K, &[]));
    }

    #[test]
    fn replace_value_in_place_moved_and_full() {
        let mut b = leaf_with(
            BODY_4K,
            &[(b"a", inline(&[1; 300])), (b"b", inline(&[2; 10]))],
        );
        let mut node = NodeMut::new(&mut b).unwrap();
        let free = node.as_node().free_space();
        // Shrinking writes in place; the tail becomes garbage.
        node.leaf_replace_value(0, LeafValue::Inline(&[3; 100]))
            .unwrap();
        assert_eq!(node.h.garbage, 200);
        assert_eq!(node.as_node().free_space(), free + 200);
        // Overflow references are 4 bytes.
        let overflow = LeafValue::Overflow {
            total_len: 1 << 20,
            first_page: 42,
        };
        node.leaf_replace_value(1, overflow).unwrap();
        // Growing moves the cell.
        node.leaf_replace_value(0, LeafValue::Inline(&[4; 1000]))
            .unwrap();
        node.leaf_replace_value(0, LeafValue::Inline(&[5; 1300]))
            .unwrap();
        assert_eq!(
            leaf_entries(&b),
            [
                (b"a".to_vec(), inline(&[5; 1300])),
                (b"b".to_vec(), Val::from_leaf(overflow)),
            ]
        );

        // Fill up, then a growing replace that does not fit changes nothing.
        let mut node = NodeMut::new(&mut b).unwrap();
        node.leaf_insert(2, b"c", LeafValue::Inline(&[6; 1300]))
            .unwrap();
        node.leaf_insert(3, b"d", LeafValue::Inline(&[7; 1200]))
            .unwrap();
        let before = b.clone();
        let mut node = NodeMut::new(&mut b).unwrap();
        assert_eq!(
            node.leaf_replace_value(1, LeafValue::Inline(&[8; 1300])),
            Err(Full)
        );
        assert_eq!(b, before);
    }

    /// Keys of `len` bytes that sort in the order of `i`.
    fn long_key(i: u8, len: usize) -> Vec<u8> {
        let mut key = vec![b'k'; len];
        key[0] = i;
        key
    }

    #[test]
    fn leaf_split_with_largest_cells() {
        for body in [BODY_4K, BODY_16K, BODY_64K] {
            let key_len = max_key_len(body);
            let values = [
                LeafValue::Overflow {
                    total_len: u32::MAX,
                    first_page: 5,
                },
                LeafValue::Inline(&[9; OVERFLOW_REF_SIZE]),
            ];
            for value in values {
                // Three largest cells fill the node; insert a fourth at each position.
                for at in 0..4u8 {
                    let mut b = vec![0; body];
                    let mut node = NodeMut::init(&mut b, NodeKind::Leaf, 0);
                    let mut model = BTreeMap::new();
                    for i in (0..4u8).filter(|&i| i != at) {
                        let key = long_key(i, key_len);
                        let slot = node.as_node().len();
                        node.leaf_insert(slot, &key, value).unwrap();
                        model.insert(key, Val::from_leaf(value));
                    }
                    let key = long_key(at, key_len);
                    let i = usize::from(at);
                    assert!(!node.as_node().would_fit_leaf(key_len, value));
                    assert_eq!(node.leaf_insert(i, &key, value), Err(Full));

                    let mut right = vec![0; body];
                    let separator = leaf_insert_split(&mut b, i, &key, value, &mut right);
                    model.insert(key, Val::from_leaf(value));
                    let (left, right) = (leaf_entries(&b), leaf_entries(&right));
                    assert_eq!((left.len(), right.len()), (2, 2));
                    assert_eq!(separator, right[0].0);
                    assert!(left.iter().all(|(k, _)| *k < separator));
                    let all: Vec<_> = left.into_iter().chain(right).collect();
                    assert_eq!(all, model.into_iter().collect::<Vec<_>>());
                }
            }
        }
    }

    #[test]
    fn branch_split_with_largest_keys() {
        for body in [BODY_4K, BODY_16K, BODY_64K] {
            let key_len = max_key_len(body);
            for at in 0..4u8 {
                let mut b = vec![0; body];
                let mut node = NodeMut::init(&mut b, NodeKind::Branch, 3);
                node.set_child(0, 1000);
                let mut keys = Vec::new();
                let mut children = vec![1000];
                for i in (0..4u8).filter(|&i| i != at) {
                    let slot = node.as_node().len();
                    node.branch_insert(slot, &long_key(i, key_len), 1001 + u32::from(i))
                        .unwrap();
                    keys.push(long_key(i, key_len));
                    children.push(1001 + u32::from(i));
                }
                let i = usize::from(at);
                let key = long_key(at, key_len);
                assert!(!node.as_node().would_fit_branch(key_len));
                assert_eq!(node.branch_insert(i, &key, 2000), Err(Full));

                let mut right = vec![0; body];
                let middle = branch_insert_split(&mut b, i, &key, 2000, &mut right);
                keys.insert(i, key);
                children.insert(i + 1, 2000);

                let (lk, lc) = branch_contents(&b);
                let (rk, rc) = branch_contents(&right);
                assert!(!lk.is_empty() && !rk.is_empty());
                assert_eq!(lk.len() + rk.len(), 3);
                assert!(!lk.contains(&middle) && !rk.contains(&middle));
                let joined: Vec<_> = lk.into_iter().chain([middle]).chain(rk).collect();
                assert_eq!(joined, keys);
                assert_eq!([lc, rc].concat(), children);
                assert_eq!(Node::new(&right).unwrap().level(), 3);
            }
        }
    }

    #[test]
    fn merge_leaves_and_branches() {
        let mut left = leaf_with(BODY_4K, &[(b"a", inline(b"1")), (b"b", inline(b"2"))]);
        let right = leaf_with(BODY_4K, &[(b"c", inline(b"3"))]);
        merge_into(&mut left, &right, None).unwrap();
        let keys: Vec<_> = leaf_entries(&left).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [b"a", b"b", b"c"]);

        let mut left = branch_with(BODY_4K, &[b"a", b"b"]); // children 100, 101, 102
        let mut right = branch_with(BODY_4K, &[b"y"]);
        let mut r = NodeMut::new(&mut right).unwrap();
        r.set_leftmost_child(200);
        r.set_child(1, 201);
        merge_into(&mut left, &right, Some(b"m")).unwrap();
        assert_eq!(
            branch_contents(&left),
            (
                vec![b"a".to_vec(), b"b".to_vec(), b"m".to_vec(), b"y".to_vec()],
                vec![100, 101, 102, 200, 201]
            )
        );

        // Two nodes that are each more than half full do not merge, and nothing changes.
        let big = inline(&[0; 1200]);
        let mut left = leaf_with(BODY_4K, &[(b"a", big.clone()), (b"b", big.clone())]);
        let right = leaf_with(BODY_4K, &[(b"c", big.clone()), (b"d", big)]);
        let before = left.clone();
        assert_eq!(merge_into(&mut left, &right, None), Err(Full));
        assert_eq!(left, before);
    }

    /// A valid leaf with cells "a" -> "xy" (slot 0) and "b" -> "z" (slot 1).
    fn two_cell_leaf() -> Vec<u8> {
        leaf_with(BODY_4K, &[(b"a", inline(b"xy")), (b"b", inline(b"z"))])
    }

    /// A way to damage a node, and the error that should report it.
    type Damage = (fn(&mut Vec<u8>), &'static str);

    fn slot_offset(b: &[u8], i: usize) -> usize {
        usize::from(get_u16(b, HEADER_SIZE + i * SLOT_SIZE))
    }

    #[test]
    fn corrupt_headers_are_refused_by_new() {
        assert!(check(&two_cell_leaf()).is_ok());
        let cases: [Damage; 8] = [
            (|b| b[KIND] = 7, "unknown node kind"),
            (|b| b[KIND] = 0, "unknown node kind"),
            (|b| b[LEVEL] = 1, "leaf above level 0"),
            (
                |b| put_u16(b, CELL_COUNT, 3000),
                "slot array runs into cell content",
            ),
            (
                |b| put_u16(b, CONTENT_START, HEADER_SIZE + 2),
                "slot array runs into cell content",
            ),
            (
                |b| put_u16(b, CONTENT_START, BODY_4K + 1),
                "content start beyond the body",
            ),
            (
                |b| put_u16(b, GARBAGE, 100),
                "more garbage than cell content",
            ),
            (|b| b.truncate(MIN_BODY_LEN - 1), "body length out of range"),
        ];
        for (corrupt_it, msg) in cases {
            let mut b = two_cell_leaf();
            corrupt_it(&mut b);
            assert_eq!(Node::new(&b).map(|_| ()), corrupt(msg));
            assert_eq!(NodeMut::new(&mut b).map(|_| ()), corrupt(msg));
        }
        let mut b = branch_with(BODY_4K, &[b"k"]);
        b[LEVEL] = 0;
        assert_eq!(Node::new(&b).map(|_| ()), corrupt("branch at level 0"));
        assert!(Node::new(&[0; MAX_BODY_LEN + 1]).is_err());
    }

    #[test]
    fn corrupt_cells_are_found_by_check() {
        let cases: [Damage; 11] = [
            (
                |b| put_u16(b, HEADER_SIZE, BODY_4K),
                "slot points past the body",
            ),
            (
                |b| put_u16(b, HEADER_SIZE, 0xFFFF),
                "slot points past the body",
            ),
            (
                |b| put_u16(b, HEADER_SIZE, BODY_4K - 3),
                "cell header runs past the body",
            ),
            (
                |b| put_u16(b, HEADER_SIZE, HEADER_SIZE),
                "slot points below content start",
            ),
            (
                |b| {
                    let (s0, s1) = (slot_offset(b, 0), slot_offset(b, 1));
                    put_u16(b, HEADER_SIZE, s1);
                    put_u16(b, HEADER_SIZE + SLOT_SIZE, s0);
                },
                "keys are not strictly increasing",
            ),
            (
                |b| {
                    let s0 = slot_offset(b, 0);
                    put_u16(b, HEADER_SIZE + SLOT_SIZE, s0);
                },
                "keys are not strictly increasing",
            ),
            (
                |b| put_u16(b, GARBAGE, 1),
                "cell content is not live cells plus garbage",
            ),
            (
                |b| {
                    let s0 = slot_offset(b, 0);
                    b[s0 + LEAF_VALUE_KIND] = 5;
                },
                "unknown value kind",
            ),
            (
                |b| {
                    let s0 = slot_offset(b, 0);
                    put_u32(b, s0 + LEAF_VALUE_LEN, 60_000);
                },
                "cell runs past the body",
            ),
            (
                |b| put_u32(b, RESERVED, 1),
                "reserved header field is not zero",
            ),
            (
                |b| put_u32(b, LEFTMOST_CHILD, 1),
                "leaf has a leftmost child",
            ),
        ];
        for (corrupt_it, msg) in cases {
            let mut b = two_cell_leaf();
            corrupt_it(&mut b);
            assert!(Node::new(&b).is_ok(), "{msg}: the header is still sane");
            assert_eq!(check(&b), corrupt(msg));
        }
    }

    #[test]
    fn overlapping_cells_are_found_by_check() {
        // Hide a well-formed cell for key "b" inside the value of "a", then point the slot of
        // "c" at it: keys still increase and every cell is in bounds, but two cells overlap.
        let mut hidden = vec![0; LEAF_KEY + 2];
        Cell::Leaf {
            key: b"b",
            value: LeafValue::Inline(b"z"),
        }
        .encode(&mut hidden);
        let mut b = leaf_with(
            BODY_4K,
            &[(b"a", Val::Inline(hidden)), (b"c", inline(b"w"))],
        );
        let inside_a = slot_offset(&b, 0) + LEAF_KEY + 1;
        put_u16(&mut b, HEADER_SIZE + SLOT_SIZE, inside_a);
        let node = Node::new(&b).unwrap();
        assert_eq!(node.key(1), b"b");
        assert_eq!(node.check(), corrupt("cells overlap"));
    }

    #[test]
    fn corrupt_page_numbers_and_oversized_cells_are_found_by_check() {
        let mut b = branch_with(BODY_4K, &[b"k"]);
        put_u32(&mut b, LEFTMOST_CHILD, 0);
        assert_eq!(check(&b), corrupt("branch child is page 0"));

        let mut b = branch_with(BODY_4K, &[b"k"]);
        let cell = slot_offset(&b, 0);
        put_u32(&mut b, cell + BRANCH_CHILD, 0);
        assert_eq!(check(&b), corrupt("branch child is page 0"));

        let overflow = Val::Overflow {
            total_len: 5000,
            first_page: 0,
        };
        let b = leaf_with(BODY_4K, &[(b"k", overflow)]);
        assert_eq!(check(&b), corrupt("overflow value starts at page 0"));

        // One byte over the size rule, written by hand since the API refuses it.
        let mut b = leaf_with(BODY_4K, &[]);
        let key = vec![b'k'; max_key_len(BODY_4K)];
        let cell = Cell::Leaf {
            key: &key,
            value: LeafValue::Inline(&[0; OVERFLOW_REF_SIZE + 1]),
        };
        let off = BODY_4K - cell.size();
        cell.encode(&mut b[off..]);
        put_u16(&mut b, CELL_COUNT, 1);
        put_u16(&mut b, CONTENT_START, off);
        put_u16(&mut b, HEADER_SIZE, off);
        assert_eq!(check(&b), corrupt("cell larger than the size rule allows"));
    }

    #[test]
    #[should_panic(expected = "breaks the size rule")]
    fn oversized_keys_are_a_caller_bug() {
        let mut b = vec![0; BODY_4K];
        let key = vec![0; max_key_len(BODY_4K) + 1];
        let overflow = LeafValue::Overflow {
            total_len: 1,
            first_page: 1,
        };
        let _ = NodeMut::init(&mut b, NodeKind::Leaf, 0).leaf_insert(0, &key, overflow);
    }

    /// Calls every accessor and a few changes on a node that passed `check`; none may panic,
    /// and the changes must keep it valid.
    fn exercise(b: &mut [u8]) {
        let Ok(node) = Node::new(b) else { return };
        if node.check().is_err() {
            return;
        }
        let _ = (node.free_space(), node.used_space(), node.level());
        for i in 0..node.len() {
            let key = node.key(i);
            assert_eq!(node.search(key), Ok(i));
            match node.kind() {
                NodeKind::Leaf => match node.leaf_value(i) {
                    LeafValue::Inline(v) => assert!(v.len() <= max_inline_value(BODY_4K, 0)),
                    LeafValue::Overflow { first_page, .. } => assert_ne!(first_page, 0),
                },
                NodeKind::Branch => assert_ne!(node.child(i + 1), 0),
            }
        }
        let probe = [0xFF; 3];
        let at = node.child_index_for(&probe);
        let kind = node.kind();
        let len = node.len();
        let mut node = NodeMut::new(b).unwrap();
        if len > 0 {
            node.remove(0);
        }
        node.compact();
        if node.as_node().search(&probe).is_err() {
            let at = at.saturating_sub(usize::from(len > 0));
            let _ = match kind {
                NodeKind::Leaf => node.leaf_insert(at, &probe, LeafValue::Inline(b"v")),
                NodeKind::Branch => node.branch_insert(at, &probe, 77),
            };
        }
        assert_eq!(check(b), Ok(()));
    }

    fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![vec(0u8..3, 0..6), vec(any::<u8>(), 0..64)]
    }

    fn val_strategy() -> impl Strategy<Value = Val> {
        prop_oneof![
            9 => vec(any::<u8>(), 0..300).prop_map(Val::Inline),
            1 => (any::<u32>(), 1..u32::MAX).prop_map(|(total_len, first_page)| Val::Overflow {
                total_len,
                first_page
            }),
        ]
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put(Vec<u8>, Val),
        Replace(usize, Val),
        Remove(usize),
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (key_strategy(), val_strategy()).prop_map(|(k, v)| Op::Put(k, v)),
            2 => (any::<usize>(), val_strategy()).prop_map(|(i, v)| Op::Replace(i, v)),
            3 => any::<usize>().prop_map(Op::Remove),
        ]
    }

    /// A row of sibling leaves, each with the lowest key it may hold (the first one: the empty
    /// key, which is below every key): the bottom level of a B+tree without the branches.
    struct Leaves(Vec<(Vec<u8>, Vec<u8>)>);

    impl Leaves {
        fn route(&self, key: &[u8]) -> usize {
            self.0.partition_point(|(low, _)| low.as_slice() <= key) - 1
        }

        /// Inserts or replaces, splitting the leaf if the change does not fit.
        fn put(&mut self, key: &[u8], val: &Val) {
            let j = self.route(key);
            let body = &mut self.0[j].1;
            let before = body.clone();
            let mut node = NodeMut::new(body).unwrap();
            let (i, existed) = match node.as_node().search(key) {
                Ok(i) => (i, true),
                Err(i) => (i, false),
            };
            let result = if existed {
                node.leaf_replace_value(i, val.as_leaf())
            } else {
                node.leaf_insert(i, key, val.as_leaf())
            };
            if result.is_ok() {
                return;
            }
            assert_eq!(*body, before, "a change that did not fit modified the node");
            let mut right = vec![0; body.len()];
            let mut node = NodeMut::new(body).unwrap();
            if existed {
                node.remove(i);
            }
            let separator = leaf_insert_split(body, i, key, val.as_leaf(), &mut right);
            let (left_entries, right_entries) = (leaf_entries(body), leaf_entries(&right));
            assert!(!left_entries.is_empty() && !right_entries.is_empty());
            assert_eq!(separator, right_entries[0].0);
            assert!(left_entries.last().unwrap().0 < separator);
            self.0.insert(j + 1, (separator, right));
        }

        /// Removes `key`, then merges the leaf with a sibling if it is under a third full.
        fn remove(&mut self, key: &[u8]) {
            let j = self.route(key);
            let mut node = NodeMut::new(&mut self.0[j].1).unwrap();
            let i = node.as_node().search(key).unwrap();
            node.remove(i);
            if node.as_node().used_space() >= usable_space(self.0[j].1.len()) / 3 {
                return;
            }
            for left in [Some(j), j.checked_sub(1)].into_iter().flatten() {
                if left + 1 >= self.0.len() {
                    continue;
                }
                let (lo, hi) = self.0.split_at_mut(left + 1);
                let before = lo[left].1.clone();
                match merge_into(&mut lo[left].1, &hi[0].1, None) {
                    Ok(()) => {
                        self.0.remove(left + 1);
                        return;
                    }
                    Err(Full) => assert_eq!(lo[left].1, before),
                }
            }
        }

        fn verify(&self, model: &BTreeMap<Vec<u8>, Val>) {
            let mut all = Vec::new();
            for (j, (low, body)) in self.0.iter().enumerate() {
                let entries = leaf_entries(body);
                assert!(
                    self.0.len() == 1 || !entries.is_empty(),
                    "empty leaf left over"
                );
                let high = self.0.get(j + 1).map(|(next, _)| next);
                for (key, _) in &entries {
                    assert!(key >= low && high.is_none_or(|high| key < high));
                }
                all.extend(entries);
            }
            let expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(all, expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Leaves against a `BTreeMap`: after every insert, replace or remove (with splits and
        /// merges as needed) every leaf passes `check` and the leaves hold the model in order.
        #[test]
        fn leaves_match_a_btreemap(ops in vec(op_strategy(), 1..300)) {
            let mut model = BTreeMap::new();
            let mut leaves = Leaves(vec![(Vec::new(), leaf_with(BODY_4K, &[]))]);
            for op in ops {
                match op {
                    Op::Put(key, val) => {
                        leaves.put(&key, &val);
                        model.insert(key, val);
                    }
                    Op::Replace(pick, val) if !model.is_empty() => {
                        let key = model.keys().nth(pick % model.len()).unwrap().clone();
                        leaves.put(&key, &val);
                        model.insert(key, val);
                    }
                    Op::Remove(pick) if !model.is_empty() => {
                        let key = model.keys().nth(pick % model.len()).unwrap().clone();
                        leaves.remove(&key);
                        model.remove(&key);
                    }
                    _ => {}
                }
                leaves.verify(&model);
            }
        }

        /// A branch filled with random keys until an insert does not fit, split, then shrunk
        /// and merged back: keys and children keep their interleaving throughout.
        #[test]
        fn branch_split_and_merge_keep_the_interleaving(
            keys in vec(
                prop_oneof![3 => vec(any::<u8>(), 0..16), 1 => vec(any::<u8>(), 0..=1325)],
                1..300,
            ),
        ) {
            let mut b = vec![0; BODY_4K];
            let mut node = NodeMut::init(&mut b, NodeKind::Branch, 2);
            node.set_child(0, 1);
            let mut model_keys: Vec<Vec<u8>> = Vec::new();
            let mut children = vec![1];
            for (n, key) in keys.iter().enumerate() {
                let child = 2 + n as u32;
                let mut node = NodeMut::new(&mut b).unwrap();
                let Err(i) = node.as_node().search(key) else { continue };
                if node.branch_insert(i, key, child).is_ok() {
                    model_keys.insert(i, key.clone());
                    children.insert(i + 1, child);
                    prop_assert_eq!(branch_contents(&b), (model_keys.clone(), children.clone()));
                    continue;
                }
                let mut right = vec![0; BODY_4K];
                let middle = branch_insert_split(&mut b, i, key, child, &mut right);
                model_keys.insert(i, key.clone());
                children.insert(i + 1, child);
                let (lk, lc) = branch_contents(&b);
                let (rk, rc) = branch_contents(&right);
                prop_assert!(!lk.is_empty() && !rk.is_empty());
                let joined: Vec<_> = lk.iter().cloned().chain([middle.clone()]).chain(rk).collect();
                prop_assert_eq!(&joined, &model_keys);
                prop_assert_eq!([lc, rc].concat(), children.clone());

                // Drop the left node's last cells until the right one merges back in.
                loop {
                    let before = b.clone();
                    match merge_into(&mut b, &right, Some(&middle)) {
                        Ok(()) => break,
                        Err(Full) => prop_assert_eq!(&b, &before),
                    }
                    let mut node = NodeMut::new(&mut b).unwrap();
                    let last = node.as_node().len() - 1;
                    node.remove(last);
                    model_keys.remove(last);
                    children.remove(last + 1);
                }
                prop_assert_eq!(branch_contents(&b), (model_keys, children));
                return Ok(());
            }
        }

        /// For any body length and mix of cell sizes, the first insert that does not fit can
        /// be split into two valid halves (the size-rule argument, tested).
        #[test]
        fn splits_always_fit(
            page_size in 4096usize..=65536,
            seed in 1u64..,
            big_percent in 0usize..=100,
            branch in any::<bool>(),
        ) {
            let body = page_size - 64;
            let mut rng = Rng(seed);
            let mut b = vec![0; body];
            let (kind, level) = if branch { (NodeKind::Branch, 1) } else { (NodeKind::Leaf, 0) };
            let mut node = NodeMut::init(&mut b, kind, level);
            node.set_child_if_branch();
            // Leaf entries, or branch keys with their children as overflow page numbers.
            let mut model: BTreeMap<Vec<u8>, Val> = BTreeMap::new();
            let (key, val, i) = loop {
                let big = rng.below(100) < big_percent;
                let key_len = if big { rng.below(max_key_len(body) + 1) } else { rng.below(16) };
                let key = rng.bytes(key_len);
                let Err(i) = node.as_node().search(&key) else { continue };
                let page = 1 + rng.below(1000) as u32;
                let val = if branch || rng.below(4) == 0 {
                    Val::Overflow { total_len: 1 << 20, first_page: page }
                } else {
                    let max = max_inline_value(body, key_len);
                    let len = rng.below(if big { max + 1 } else { 20.min(max + 1) });
                    Val::Inline(rng.bytes(len))
                };
                let fitted = if branch {
                    node.branch_insert(i, &key, page)
                } else {
                    node.leaf_insert(i, &key, val.as_leaf())
                };
                if fitted.is_err() {
                    break (key, val, i);
                }
                model.insert(key, val);
            };

            let mut right = vec![0; body];
            let separator = match val {
                Val::Overflow { first_page, .. } if branch => {
                    branch_insert_split(&mut b, i, &key, first_page, &mut right)
                }
                _ => leaf_insert_split(&mut b, i, &key, val.as_leaf(), &mut right),
            };
            model.insert(key, val);
            let expected: Vec<_> = model.into_iter().collect();
            if branch {
                let ((lk, lc), (rk, rc)) = (branch_contents(&b), branch_contents(&right));
                prop_assert!(!lk.is_empty() && !rk.is_empty());
                let keys: Vec<_> = lk.into_iter().chain([separator]).chain(rk).collect();
                let children = lc.into_iter().chain(rc).skip(1).map(|first_page| {
                    Val::Overflow { total_len: 1 << 20, first_page }
                });
                prop_assert_eq!(keys.into_iter().zip(children).collect::<Vec<_>>(), expected);
            } else {
                let (left, right) = (leaf_entries(&b), leaf_entries(&right));
                prop_assert!(!left.is_empty() && !right.is_empty());
                prop_assert_eq!(&separator, &right[0].0);
                prop_assert_eq!([left, right].concat(), expected);
            }
        }

        /// Random bytes never make `new`, `check` or (after `check`) the accessors panic.
        #[test]
        fn random_bodies_never_panic(
            mut b in prop_oneof![
                vec(any::<u8>(), 0..64),
                vec(any::<u8>(), BODY_4K..=BODY_4K),
            ],
            plausible in any::<bool>(),
            count in 0usize..6,
            content in 0usize..200,
        ) {
            if plausible && b.len() == BODY_4K {
                // Get past the header checks so that the cell checks see random cells.
                b[KIND] = KIND_LEAF + (b[KIND] & 1);
                b[LEVEL] = b[KIND] - KIND_LEAF;
                put_u16(&mut b, CELL_COUNT, count);
                put_u16(&mut b, CONTENT_START, BODY_4K - content);
                put_u16(&mut b, GARBAGE, 0);
            }
            exercise(&mut b);
        }

        /// A valid node with a few bytes changed: `new`, `check` and the accessors and changes
        /// on whatever still passes `check` never panic.
        #[test]
        fn damaged_nodes_never_panic(
            entries in vec((key_strategy(), val_strategy()), 0..30),
            branch in any::<bool>(),
            edits in vec((any::<usize>(), any::<u8>(), any::<bool>()), 0..6),
        ) {
            let mut b = vec![0; BODY_4K];
            let kind = if branch { NodeKind::Branch } else { NodeKind::Leaf };
            let mut node = NodeMut::init(&mut b, kind, u8::from(branch));
            node.set_child_if_branch();
            for (key, val) in &entries {
                let Err(i) = node.as_node().search(key) else { continue };
                let _ = if branch {
                    node.branch_insert(i, key, 5)
                } else {
                    node.leaf_insert(i, key, val.as_leaf())
                };
            }
            prop_assert_eq!(check(&b), Ok(()));
            let front = HEADER_SIZE + SLOT_SIZE * Node::new(&b).unwrap().len() + 8;
            for (at, byte, near_front) in edits {
                let at = if near_front { at % front } else { at % BODY_4K };
                b[at] = byte;
            }
            exercise(&mut b);
        }
    }

    impl NodeMut<'_> {
        /// Gives a fresh branch a non-zero leftmost child so that it passes `check`.
        fn set_child_if_branch(&mut self) {
            if self.h.kind == NodeKind::Branch {
                self.set_child(0, 1);
            }
        }
    }
}
