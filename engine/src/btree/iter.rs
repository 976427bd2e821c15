//! Ordered range scans, forward and reverse, as a lazy iterator.
//!
//! The iterator never holds a latch between calls (latch rule 5 in `tree.rs`): each refill
//! descends from the root to one leaf, copies out the entries of that leaf that fall in
//! the range, notes where the next leaf begins, and releases everything.
//!
//! Where the next leaf begins is read off the descent path. At every branch the child taken
//! has an upper fence (the separator to its right, if any) and a lower fence (the
//! separator to its left, if any); the deepest such fences bound the leaf. A forward scan
//! continues at the leaf's upper fence; a reverse scan continues below its lower fence.
//!
//! ```text
//!            [ 20 | 50 ]                 scanning forward from 25:
//!           /     |     \                 descend: 20 <= 25 < 50 -> middle child, upper fence 50
//!   [5 10]   [20 30 40]   [50 60]         emit 30, 40; next refill starts at key 50
//! ```
//!
//! Entries seen are those in the tree at the time each leaf is read. With a [`ReadView`]
//! (every scan through `Db` and `Transaction` has one), each leaf's batch then goes through
//! the lock manager's protocol R1–R4 (`lock.rs`): keys another transaction holds are
//! replaced by their committed before-images over exactly the key range the leaf covered,
//! and the batch is read again if a rollback raced with it.

use super::node::NodeKind;
use super::tree::BTree;
use crate::error::Result;
use crate::lock::{LockManager, TxnId};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

/// Who reads, for the lock manager: committed data only, plus the reader's own writes.
#[derive(Clone)]
pub(crate) struct ReadView {
    pub(crate) locks: Arc<LockManager>,
    pub(crate) reader: Option<TxnId>,
}

impl std::fmt::Debug for ReadView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadView({:?})", self.reader)
    }
}

/// Where the next refill starts.
#[derive(Debug, Clone)]
enum Cursor {
    /// Forward: the next key at or after this bound.
    From(Bound<Vec<u8>>),
    /// Reverse: the next key at or before this bound.
    Before(Bound<Vec<u8>>),
    Finished,
}

/// A lazy, ordered iterator over `(key, value)` pairs of a key range.
#[derive(Debug)]
pub struct RangeIter {
    tree: BTree,
    cursor: Cursor,
    /// The far end of the range: upper bound going forward, lower bound in reverse.
    end: Bound<Vec<u8>>,
    buffered: VecDeque<(Vec<u8>, Vec<u8>)>,
    view: Option<ReadView>,
}

impl RangeIter {
    pub(crate) fn new(
        tree: BTree,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> RangeIter {
        let (cursor, end) = if reverse {
            (Cursor::Before(upper), lower)
        } else {
            (Cursor::From(lower), upper)
        };
        RangeIter {
            tree,
            cursor,
            end,
            buffered: VecDeque::new(),
            view: None,
        }
    }

    /// Reads through `view` (see the module doc).
    pub(crate) fn with_view(mut self, view: ReadView) -> RangeIter {
        self.view = Some(view);
        self
    }

    /// Reads the next leaf in scan order into `buffered`.
    fn refill(&mut self) -> Result<()> {
        while self.buffered.is_empty() {
            let (forward, start) = match &self.cursor {
                Cursor::Finished => return Ok(()),
                Cursor::From(bound) => (true, bound.clone()),
                Cursor::Before(bound) => (false, bound.clone()),
            };
            let saved = self.cursor.clone();
            let epoch = self
                .view
                .as_ref()
                .map(|view| view.locks.read_epoch(self.tree.lock_space()));
            let next_fence = self.read_leaf(forward, &start)?;
            let last = matches!(self.cursor, Cursor::Finished) || next_fence.is_none();
            if let (Some(view), Some(epoch)) = (self.view.clone(), epoch) {
                // The keys this leaf answered for: from `start` to its fence, within `end`.
                let (lower, upper) = match (forward, &next_fence) {
                    (true, Some(fence)) if !last => {
                        (start.clone(), tighter_upper(&self.end, fence))
                    }
                    (false, Some(fence)) if !last => {
                        (tighter_lower(&self.end, fence), start.clone())
                    }
                    (true, _) => (start.clone(), self.end.clone()),
                    (false, _) => (self.end.clone(), start.clone()),
                };
                let overrides = view.locks.foreign_overrides(
                    self.tree.lock_space(),
                    as_ref(&lower),
                    as_ref(&upper),
                    view.reader,
                );
                if !overrides.is_empty() {
                    let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self.buffered.drain(..).collect();
                    for (key, value) in overrides {
                        match value {
                            Some(value) => merged.insert(key, value),
                            None => merged.remove(&key),
                        };
                    }
                    self.buffered = if forward {
                        merged.into_iter().collect()
                    } else {
                        merged.into_iter().rev().collect()
                    };
                }
                if !view.locks.read_is_stable(epoch) {
                    self.buffered.clear();
                    self.cursor = saved;
                    continue;
                }
            }
            self.cursor = match (&self.cursor, forward, next_fence) {
                (Cursor::Finished, _, _) | (_, _, None) => Cursor::Finished,
                (_, true, Some(fence)) => Cursor::From(Bound::Included(fence)),
                (_, false, Some(fence)) => Cursor::Before(Bound::Excluded(fence)),
            };
        }
        Ok(())
    }

    /// Descends to the leaf where a scan in the given direction from `start` continues,
    /// copies the entries in range into `buffered` (reading overflow values while the leaf
    /// is still latched, so a concurrent delete cannot free them underneath us), marks the
    /// scan finished if the range ends in this leaf, and returns the fence where the next
    /// leaf begins.
    fn read_leaf(&mut self, forward: bool, start: &Bound<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        let tree = self.tree.clone();
        let mut next_fence = None;
        let mut current = tree.pool.read(tree.id(tree.root))?;
        loop {
            let node = tree.node(&current)?;
            if node.kind() == NodeKind::Leaf {
                let len = node.len();
                for step in 0..len {
                    let index = if forward { step } else { len - 1 - step };
                    let key = node.key(index);
                    let (after_start, before_end) = if forward {
                        (past_lower(key, start), before_upper(key, &self.end))
                    } else {
                        (before_upper(key, start), past_lower(key, &self.end))
                    };
                    if !after_start {
                        continue;
                    }
                    if !before_end {
                        self.cursor = Cursor::Finished;
                        break;
                    }
                    let value = tree.load_value(node.leaf_value(index))?;
                    self.buffered.push_back((key.to_vec(), value));
                }
                return Ok(next_fence);
            }
            // Forward, and reverse from an inclusive bound: the child whose range holds the
            // key. Reverse from an exclusive bound: the child holding keys strictly below
            // it — otherwise a bound equal to a separator would lead back into the leaf we
            // just left, forever.
            let child_index = match start {
                Bound::Excluded(key) if !forward => match node.search(key) {
                    Ok(index) | Err(index) => index,
                },
                Bound::Included(key) | Bound::Excluded(key) => node.child_index_for(key),
                Bound::Unbounded if forward => 0,
                Bound::Unbounded => node.len(),
            };
            if forward && child_index < node.len() {
                next_fence = Some(node.key(child_index).to_vec());
            }
            if !forward && child_index > 0 {
                next_fence = Some(node.key(child_index - 1).to_vec());
            }
            let child = node.child(child_index);
            let next = tree.pool.read(tree.id(child))?;
            current = next;
        }
    }
}

/// The tighter of the scan's upper `end` and a leaf's upper fence (exclusive).
fn tighter_upper(end: &Bound<Vec<u8>>, fence: &[u8]) -> Bound<Vec<u8>> {
    if before_upper(fence, end) {
        Bound::Excluded(fence.to_vec())
    } else {
        end.clone()
    }
}

/// The tighter of the scan's lower `end` and a leaf's lower fence (inclusive).
fn tighter_lower(end: &Bound<Vec<u8>>, fence: &[u8]) -> Bound<Vec<u8>> {
    if past_lower(fence, end) {
        Bound::Included(fence.to_vec())
    } else {
        end.clone()
    }
}

fn as_ref(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    bound.as_ref().map(Vec::as_slice)
}

fn past_lower(key: &[u8], lower: &Bound<Vec<u8>>) -> bool {
    match lower {
        Bound::Unbounded => true,
        Bound::Included(bound) => key >= bound.as_slice(),
        Bound::Excluded(bound) => key > bound.as_slice(),
    }
}

fn before_upper(key: &[u8], upper: &Bound<Vec<u8>>) -> bool {
    match upper {
        Bound::Unbounded => true,
        Bound::Included(bound) => key <= bound.as_slice(),
        Bound::Excluded(bound) => key < bound.as_slice(),
    }
}

impl Iterator for RangeIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffered.is_empty() {
            if let Err(error) = self.refill() {
                self.cursor = Cursor::Finished;
                return Some(Err(error));
            }
        }
        self.buffered.pop_front().map(Ok)
    }
}

impl BTree {
    /// A lazy iterator over the entries with `lower <= key <= upper` (per the bounds), in
    /// ascending order, or descending when `reverse`.
    pub fn range(&self, lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>, reverse: bool) -> RangeIter {
        RangeIter::new(self.clone(), lower, upper, reverse)
    }
}
