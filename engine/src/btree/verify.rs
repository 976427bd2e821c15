//! `verify()`: checks every structural invariant of a tree and of its tablespace's page
//! accounting. The tests call it after every batch; `strongbox verify` runs it from the CLI.
//! `verify_tree_only()` checks one tree of a space that holds several (the temporary
//! space): rules 1–6 and the tree's own part of rule 7, but not the space's accounting,
//! which no single tree can do.
//!
//! Invariants checked (numbered so that a failure message can name one):
//!
//! 1. Every node passes `node::check` (slots and cells in bounds, keys strictly ascending).
//! 2. Every key of a child lies within the fences its parent gives it: `lower <= key < upper`.
//! 3. Levels: leaves are level 0, a branch's children are exactly one level below it — so
//!    every leaf is at the same depth.
//! 4. No page other than the root is empty (emptied pages are freed on delete).
//! 5. The page type in each page header matches the node kind found in its body.
//! 6. Every overflow chain has exactly the pages its value length needs.
//! 7. Accounting. *The tree* (both checks): each of its pages, overflow pages included, is
//!    reached once, lies below `page_count` and is not on the free list. *The space*
//!    (`verify`, `verify_with`): page 0, the tree's pages, the overflow pages, the free list
//!    and the pages the caller names (the system space's undo pages) are each counted once —
//!    nothing shared, nothing past `page_count`. Pages of `0..page_count` that none of them
//!    reach are *leaked*: a crash in the middle of writing or freeing a large value's
//!    overflow chain, or of destroying a tree, leaves such pages (`overflow.rs`). They are
//!    counted in [`TreeStats::leaked_pages`], not reported as corruption: no data is wrong,
//!    only space is lost.

use super::node::NodeKind;
use super::overflow;
use super::tree::BTree;
use crate::error::Result;
use crate::page::{PageHeader, PageType};
use std::collections::BTreeSet;

/// What `verify` counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeStats {
    pub entries: u64,
    pub leaves: u64,
    pub branches: u64,
    pub overflow_pages: u64,
    /// Pages on the space's free list (shared by every tree of the space).
    pub free_pages: u64,
    /// Levels from the root to the leaves (1 for a tree that is a single leaf).
    pub depth: u32,
    /// Pages below `page_count` that nothing reaches (see rule 7); always 0 from
    /// `verify_tree_only`, which cannot tell them from other trees' pages.
    pub leaked_pages: u64,
}

/// A child page number with the lower and upper fences its parent gives it.
type ChildWithFences = (u32, Option<Vec<u8>>, Option<Vec<u8>>);

struct Walk {
    stats: TreeStats,
    used: BTreeSet<u32>,
}

impl BTree {
    /// Checks every invariant listed in the module doc; the first violation is returned as
    /// `Error::Corrupt` naming the page and the rule.
    pub fn verify(&self) -> Result<TreeStats> {
        self.verify_with(&[])
    }

    /// [`BTree::verify`] for a tree whose space also holds the pages `others` (undo pages
    /// of the system space), which rule 7 then counts as used.
    pub fn verify_with(&self, others: &[u32]) -> Result<TreeStats> {
        let Walk { mut stats, used } = self.walk()?;
        let free = self.alloc.free_pages()?;
        stats.free_pages = free.len() as u64;
        let page_count = self.alloc.space().header().page_count;
        let mut seen = used;
        seen.insert(0);
        for &page_no in others {
            if !seen.insert(page_no) {
                return Err(self.corrupt(page_no, "rule 7: an undo page is also in the tree"));
            }
        }
        for page_no in free {
            if !seen.insert(page_no) {
                return Err(self.corrupt(page_no, "rule 7: a free page is also in use"));
            }
        }
        if let Some(&beyond) = seen.range(page_count..).next() {
            return Err(self.corrupt(
                beyond,
                &format!("rule 7: a page in use past the space's {page_count} pages"),
            ));
        }
        stats.leaked_pages = u64::from(page_count) - seen.len() as u64;
        Ok(stats)
    }

    /// Checks rules 1–6 and the tree's part of rule 7, for a tree that shares its space
    /// with other trees: pages of the space outside this tree and the free list are not
    /// looked at, so `leaked_pages` is 0.
    pub fn verify_tree_only(&self) -> Result<TreeStats> {
        let Walk { mut stats, used } = self.walk()?;
        let page_count = self.alloc.space().header().page_count;
        if let Some(&beyond) = used.range(page_count..).next() {
            return Err(self.corrupt(
                beyond,
                &format!("rule 7: a page in use past the space's {page_count} pages"),
            ));
        }
        let free = self.alloc.free_pages()?;
        stats.free_pages = free.len() as u64;
        if let Some(&page_no) = free.iter().find(|page_no| used.contains(page_no)) {
            return Err(self.corrupt(page_no, "rule 7: a free page is also in use"));
        }
        Ok(stats)
    }

    /// Every page of the tree, overflow pages included (for `destroy`), with rules 1–6 and
    /// "reached once" checked on the way.
    pub(super) fn tree_pages(&self) -> Result<BTreeSet<u32>> {
        Ok(self.walk()?.used)
    }

    /// Walks the whole tree from the root, checking rules 1–6 and that no page is reached
    /// twice.
    fn walk(&self) -> Result<Walk> {
        let mut walk = Walk {
            stats: TreeStats::default(),
            used: BTreeSet::new(),
        };
        let root_level = {
            let root = self.pool.read(self.id(self.root))?;
            self.node(&root)?.level()
        };
        walk.stats.depth = u32::from(root_level) + 1;
        self.visit(&mut walk, self.root, None, None, root_level)?;
        Ok(walk)
    }

    fn visit(
        &self,
        walk: &mut Walk,
        page_no: u32,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
        expected_level: u8,
    ) -> Result<()> {
        if !walk.used.insert(page_no) {
            return Err(self.corrupt(page_no, "rule 7: page reached twice"));
        }
        let frame = self.pool.read(self.id(page_no))?;
        let node = self.node(&frame)?;
        node.check()
            .map_err(|e| self.corrupt(page_no, &format!("rule 1: {e}")))?;
        if node.level() != expected_level {
            return Err(self.corrupt(
                page_no,
                &format!(
                    "rule 3: level {} where {expected_level} was expected",
                    node.level()
                ),
            ));
        }
        let page_type = PageHeader::read(&frame)
            .map_err(|e| self.corrupt(page_no, &format!("rule 5: {e}")))?
            .page_type;
        let expected_type = match node.kind() {
            NodeKind::Leaf => PageType::BtreeLeaf,
            NodeKind::Branch => PageType::BtreeBranch,
        };
        if page_type != expected_type {
            return Err(self.corrupt(
                page_no,
                &format!(
                    "rule 5: page type {page_type:?} holds a {:?} node",
                    node.kind()
                ),
            ));
        }
        if page_no != self.root && node.is_empty() && node.kind() == NodeKind::Leaf {
            return Err(self.corrupt(page_no, "rule 4: empty leaf"));
        }
        for index in 0..node.len() {
            let key = node.key(index);
            if lower.is_some_and(|l| key < l) || upper.is_some_and(|u| key >= u) {
                return Err(self.corrupt(
                    page_no,
                    &format!("rule 2: key {index} lies outside its fences"),
                ));
            }
        }
        match node.kind() {
            NodeKind::Leaf => {
                walk.stats.leaves += 1;
                walk.stats.entries += node.len() as u64;
                for index in 0..node.len() {
                    if let super::node::LeafValue::Overflow {
                        total_len,
                        first_page,
                    } = node.leaf_value(index)
                    {
                        for page in
                            overflow::chain_pages(&self.pool, &self.alloc, first_page, total_len)?
                        {
                            if !walk.used.insert(page) {
                                return Err(self.corrupt(page, "rule 6: overflow page used twice"));
                            }
                            walk.stats.overflow_pages += 1;
                        }
                    }
                }
            }
            NodeKind::Branch => {
                walk.stats.branches += 1;
                if expected_level == 0 {
                    return Err(self.corrupt(page_no, "rule 3: a branch at level 0"));
                }
                let children: Vec<ChildWithFences> = (0..=node.len())
                    .map(|child| {
                        let low = if child == 0 {
                            lower.map(<[u8]>::to_vec)
                        } else {
                            Some(node.key(child - 1).to_vec())
                        };
                        let high = if child == node.len() {
                            upper.map(<[u8]>::to_vec)
                        } else {
                            Some(node.key(child).to_vec())
                        };
                        (node.child(child), low, high)
                    })
                    .collect();
                drop(frame);
                for (child, low, high) in children {
                    if child == 0 {
                        return Err(self.corrupt(page_no, "rule 4: a branch without children"));
                    }
                    self.visit(
                        walk,
                        child,
                        low.as_deref(),
                        high.as_deref(),
                        expected_level - 1,
                    )?;
                }
            }
        }
        Ok(())
    }
}
