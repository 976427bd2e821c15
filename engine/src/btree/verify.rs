//! `verify()`: checks every structural invariant of a tree and of its tablespace's page
//! accounting. The tests call it after every batch; `strongbox verify` runs it from the CLI.
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
//! 7. Accounting: page 0, the tree's pages, the overflow pages, the free list and the pages
//!    the caller names (the system space's undo pages) are each counted once — nothing
//!    shared, nothing past `page_count`. Pages of `0..page_count` that none of them reach are
//!    *leaked*: a crash in the middle of writing or freeing a large value's overflow chain
//!    leaves such pages (`overflow.rs`). They are counted in [`TreeStats::leaked_pages`],
//!    not reported as corruption: no data is wrong, only space is lost.

use super::node::NodeKind;
use super::overflow;
use super::tree::{BTree, ROOT_PAGE};
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
    pub free_pages: u64,
    /// Levels from the root to the leaves (1 for a tree that is a single leaf).
    pub depth: u32,
    /// Pages below `page_count` that nothing reaches (see rule 7).
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
        let mut walk = Walk {
            stats: TreeStats::default(),
            used: BTreeSet::new(),
        };
        let root_level = {
            let root = self.pool.read(self.id(ROOT_PAGE))?;
            self.node(&root)?.level()
        };
        walk.stats.depth = u32::from(root_level) + 1;
        self.visit(&mut walk, ROOT_PAGE, None, None, root_level)?;
        let free = self.alloc.free_pages()?;
        walk.stats.free_pages = free.len() as u64;
        let page_count = self.alloc.space().header().page_count;
        let mut seen = walk.used;
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
        walk.stats.leaked_pages = u64::from(page_count) - seen.len() as u64;
        Ok(walk.stats)
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
        if page_no != ROOT_PAGE && node.is_empty() && node.kind() == NodeKind::Leaf {
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
