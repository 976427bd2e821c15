//! The B+tree: one per table, rooted at page 1 of the table's space; several per space
//! where tables share one (the temporary space), each rooted at the page it was created
//! on.
//!
//! | file          | owns                                                             |
//! |---------------|------------------------------------------------------------------|
//! | `node.rs`     | the byte layout of a node (slotted page) and edits to it         |
//! | `tree.rs`     | search, insert with splits, delete with frees, destroy; latches  |
//! | `overflow.rs` | chains of overflow pages for large values; freeing runs of pages |
//! | `iter.rs`     | lazy forward and reverse range scans                             |
//! | `verify.rs`   | the structural invariants, checked                               |

mod iter;
pub mod node;
mod overflow;
mod tree;
mod verify;

pub use iter::RangeIter;
pub(crate) use iter::ReadView;
pub use tree::{BTree, MAX_VALUE_LEN, ROOT_PAGE};
pub use verify::TreeStats;
