//! [`BTree`]: one B+tree in one tablespace — search, insert with splits, delete with
//! freeing of emptied pages — with latch crabbing so that many threads work at once.
//!
//! ## Shape
//!
//! A tree's root page never moves: a root split moves the old root's contents into two new
//! pages and turns the root page into their parent, as InnoDB does, and a root left with
//! one child absorbs it. So the root page number, fixed when the tree is created, is all
//! anyone outside the space has to remember. A table's tree is the only tree of its space
//! and is rooted at page 1 ([`ROOT_PAGE`]: [`BTree::create`], [`BTree::open`]). Several
//! trees can share one space — the temporary tables all live in the temporary space — each
//! rooted wherever its first page was allocated ([`BTree::create_anywhere`],
//! [`BTree::open_at`]).
//!
//! Leaves hold the records; branches hold separator keys and child page numbers (`node.rs`
//! has the byte layout). There are no sibling links: range scans re-descend from the root
//! for each leaf (see `iter.rs`), which keeps splits and frees local to one root-to-leaf
//! path.
//!
//! ## Destroying a tree
//!
//! [`BTree::destroy`] gives every page of a tree — root, branches, leaves and overflow
//! chains — back to the space's free list, where the space's other trees reuse them. It
//! walks the tree first (checking invariants 1–6 of `verify.rs`, so a damaged tree is
//! refused before anything is freed), then frees its pages the way an overflow chain is
//! freed (`overflow.rs`): they become zeroed free pages, linked one to the next, a bounded
//! number per mtr, the root in the first one; one last small mtr splices the whole run onto
//! the free list. A crash (or an IO error) in between leaves the tree unreachable (its root
//! is no longer a node) and its remaining pages leaked, never freed pages reachable from a
//! live root. Nobody may use the tree (or a clone of it) while or after it is destroyed.
//!
//! ## Latch protocol (numbered rules; every path follows them)
//!
//! 1. Latches are taken top-down only: a thread holding a latch on a node asks only for
//!    latches on that node's children (or on free/overflow pages, which no tree path
//!    latches). So no cycle of waiters can form.
//! 2. Reads couple shared latches: latch the child, then release the parent.
//! 3. Writes first try *optimistically*: shared latches down to the leaf's parent, an
//!    exclusive latch on the leaf. If the change fits in the leaf (no split, and a delete
//!    leaves the leaf non-empty), it is done there.
//! 4. Otherwise the write restarts *pessimistically*: exclusive latches from the root down,
//!    releasing all ancestors as soon as the current node is *safe* — a branch can absorb
//!    one more separator, or the leaf the new entry itself, without splitting (insert), or
//!    it keeps at least one entry after losing a child (delete) — because then nothing
//!    above it can change.
//! 5. No thread ever waits for a latch it already holds, and no latch is held while control
//!    returns to the caller (iterators copy a leaf's entries out and release it).

use super::node::{self, LeafValue, Node, NodeError, NodeKind, NodeMut};
use super::overflow;
use crate::buffer::{BufferPool, PageMut, PageRef};
use crate::error::{Error, Result};
use crate::mtr::Mtr;
use crate::page::{self, PageId, PageType, BODY_START};
use crate::space::Allocator;
use std::ops::Range;
use std::sync::Arc;
use strongbox_wal::Log;

/// Page number of the root of a table's tree, the only tree of its space ([`BTree::create`],
/// [`BTree::open`]). Trees made with [`BTree::create_anywhere`] are rooted elsewhere.
pub const ROOT_PAGE: u32 = 1;

/// Largest value Strongbox stores (the overflow length field is a u32).
pub const MAX_VALUE_LEN: usize = u32::MAX as usize;

/// A value as it is stored in a leaf: inline bytes or a reference to an overflow chain.
#[derive(Debug, Clone)]
enum Stored {
    Inline(Vec<u8>),
    Overflow { total_len: u32, first_page: u32 },
}

impl Stored {
    fn as_leaf_value(&self) -> LeafValue<'_> {
        match self {
            Stored::Inline(bytes) => LeafValue::Inline(bytes),
            Stored::Overflow {
                total_len,
                first_page,
            } => LeafValue::Overflow {
                total_len: *total_len,
                first_page: *first_page,
            },
        }
    }

    fn from_leaf_value(value: LeafValue<'_>) -> Stored {
        match value {
            LeafValue::Inline(bytes) => Stored::Inline(bytes.to_vec()),
            LeafValue::Overflow {
                total_len,
                first_page,
            } => Stored::Overflow {
                total_len,
                first_page,
            },
        }
    }
}

/// An entry waiting to go into a node that is full.
enum Pending<'v> {
    Leaf {
        index: usize,
        key: &'v [u8],
        value: LeafValue<'v>,
    },
    Branch {
        index: usize,
        key: Vec<u8>,
        child: u32,
    },
}

impl Pending<'_> {
    fn page_type(&self) -> PageType {
        match self {
            Pending::Leaf { .. } => PageType::BtreeLeaf,
            Pending::Branch { .. } => PageType::BtreeBranch,
        }
    }
}

/// One B+tree.
#[derive(Debug, Clone)]
pub struct BTree {
    pub(super) pool: Arc<BufferPool>,
    pub(super) alloc: Arc<Allocator>,
    /// Where every change is logged (`None`: unlogged, for unit tests and temporary data).
    pub(super) log: Option<Arc<Log>>,
    /// The node area of a page frame.
    pub(super) body: Range<usize>,
    /// The root's page number, fixed for the tree's life (see "Shape" above).
    pub(super) root: u32,
    /// The namespace of this tree's keys in the lock manager (`lock.rs`): the space id,
    /// except for the trees that share the temporary space, which each get their own.
    pub(super) lock_space: u32,
}

/// What a write found at the leaf.
enum Attempt<T> {
    Done(T),
    /// The optimistic path cannot do it; restart pessimistically.
    Restart,
}

impl BTree {
    /// Creates the empty tree of a new space: page 1 becomes an empty leaf.
    pub fn create(
        pool: Arc<BufferPool>,
        alloc: Arc<Allocator>,
        log: Option<Arc<Log>>,
    ) -> Result<BTree> {
        BTree::create_rooted(pool, alloc, log, Some(ROOT_PAGE))
    }

    /// Creates an empty tree in a space that may hold other trees: the next page the
    /// allocator hands out becomes its root, an empty leaf. Remember
    /// [`root_page`](BTree::root_page) to [`open_at`](BTree::open_at) it again.
    pub fn create_anywhere(
        pool: Arc<BufferPool>,
        alloc: Arc<Allocator>,
        log: Option<Arc<Log>>,
    ) -> Result<BTree> {
        BTree::create_rooted(pool, alloc, log, None)
    }

    /// One mtr: allocates the root and makes it an empty leaf; with `expected`, refuses any
    /// other page number (the mtr's abort then gives the page back).
    fn create_rooted(
        pool: Arc<BufferPool>,
        alloc: Arc<Allocator>,
        log: Option<Arc<Log>>,
        expected: Option<u32>,
    ) -> Result<BTree> {
        let mut tree = BTree::open(pool, alloc, log);
        let mtr = tree.start_mtr()?;
        let mut root = tree.alloc.allocate(&mtr, PageType::BtreeLeaf)?;
        let root_no = root.id().page_no;
        if let Some(expected) = expected.filter(|&expected| expected != root_no) {
            return Err(tree.corrupt(
                root_no,
                &format!("a new tree's first page is not page {expected}"),
            ));
        }
        NodeMut::init(&mut root[tree.body.clone()], NodeKind::Leaf, 0);
        drop(root);
        mtr.commit()?;
        tree.root = root_no;
        Ok(tree)
    }

    /// The tree of an existing space, rooted at page 1.
    pub fn open(pool: Arc<BufferPool>, alloc: Arc<Allocator>, log: Option<Arc<Log>>) -> BTree {
        BTree::open_at(pool, alloc, log, ROOT_PAGE)
    }

    /// The existing tree rooted at page `root` (as [`root_page`](BTree::root_page) reported
    /// it). Nothing is read here: a wrong page number shows up as `Error::Corrupt` on first
    /// use.
    pub fn open_at(
        pool: Arc<BufferPool>,
        alloc: Arc<Allocator>,
        log: Option<Arc<Log>>,
        root: u32,
    ) -> BTree {
        let page_size = pool.page_size();
        let lock_space = alloc.space().id();
        BTree {
            pool,
            alloc,
            log,
            body: BODY_START..page::body_end(page_size),
            root,
            lock_space,
        }
    }

    /// This tree with its keys in lock namespace `lock_space` instead of its space id (for
    /// trees that share a space: temporary tables).
    pub(crate) fn with_lock_space(mut self, lock_space: u32) -> BTree {
        self.lock_space = lock_space;
        self
    }

    /// The namespace of this tree's keys in the lock manager.
    pub(crate) fn lock_space(&self) -> u32 {
        self.lock_space
    }

    /// The page number of this tree's root; it never changes while the tree exists.
    pub fn root_page(&self) -> u32 {
        self.root
    }

    /// A mini-transaction on this tree's log.
    pub(crate) fn start_mtr(&self) -> Result<Mtr> {
        Mtr::start(self.log.as_ref(), &self.pool)
    }

    /// The buffer pool holding this tree's pages: it identifies the open database the tree
    /// belongs to.
    pub(crate) fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    pub fn space_id(&self) -> u32 {
        self.alloc.space().id()
    }

    /// A copy of the tablespace header (page counts, encryption record).
    pub fn space_header(&self) -> crate::space::SpaceHeader {
        self.alloc.space().header()
    }

    /// Longest key this tree accepts.
    pub fn max_key_len(&self) -> usize {
        node::max_key_len(self.body.len())
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let leaf = self.descend_shared(key)?;
        let node = self.node(&leaf)?;
        match node.search(key) {
            Ok(index) => Ok(Some(self.load_value(node.leaf_value(index))?)),
            Err(_) => Ok(None),
        }
    }

    /// Inserts or replaces `key`.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_key(key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        let stored = self.store_value(key, value)?;
        match self.put_stored(key, &stored) {
            Ok(old) => self.release_value(old),
            Err(e) => {
                // The new value never became reachable; give its pages back.
                let _ = self.release_value(Some(stored));
                Err(e)
            }
        }
    }

    /// One mtr: puts the entry in the leaf, splitting as needed. Returns what it replaced.
    fn put_stored(&self, key: &[u8], stored: &Stored) -> Result<Option<Stored>> {
        let mtr = self.start_mtr()?;
        let replaced = match self.put_optimistic(&mtr, key, stored)? {
            Attempt::Done(replaced) => replaced,
            Attempt::Restart => self.put_pessimistic(&mtr, key, stored)?,
        };
        mtr.commit()?;
        Ok(replaced)
    }

    /// Removes `key`; true if it was there.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        let mtr = self.start_mtr()?;
        let removed = match self.delete_optimistic(&mtr, key)? {
            Attempt::Done(removed) => removed,
            Attempt::Restart => self.delete_pessimistic(&mtr, key)?,
        };
        mtr.commit()?;
        let found = removed.is_some();
        self.release_value(removed)?;
        Ok(found)
    }

    // ---- reading ----------------------------------------------------------------------

    /// The leaf that holds (or would hold) `key`, read-latched (rule 2).
    pub(super) fn descend_shared(&self, key: &[u8]) -> Result<PageRef> {
        let mut current = self.pool.read(self.id(self.root))?;
        loop {
            let node = self.node(&current)?;
            if node.kind() == NodeKind::Leaf {
                return Ok(current);
            }
            let child = node.child(node.child_index_for(key));
            let next = self.pool.read(self.id(child))?;
            current = next;
        }
    }

    pub(super) fn node<'a>(&self, frame: &'a [u8]) -> Result<Node<'a>> {
        let page_no = page::read_page_no(frame);
        Node::new(&frame[self.body.clone()]).map_err(|e| self.node_error(page_no, e))
    }

    pub(super) fn load_value(&self, value: LeafValue<'_>) -> Result<Vec<u8>> {
        match value {
            LeafValue::Inline(bytes) => Ok(bytes.to_vec()),
            LeafValue::Overflow {
                total_len,
                first_page,
            } => overflow::read_chain(&self.pool, &self.alloc, first_page, total_len),
        }
    }

    // ---- values -------------------------------------------------------------------------

    fn store_value(&self, key: &[u8], value: &[u8]) -> Result<Stored> {
        if value.len() <= node::max_inline_value(self.body.len(), key.len()) {
            return Ok(Stored::Inline(value.to_vec()));
        }
        let first_page =
            overflow::write_chain(&self.alloc, self.log.as_ref(), self.body.end, value)?;
        Ok(Stored::Overflow {
            total_len: value.len() as u32,
            first_page,
        })
    }

    fn release_value(&self, value: Option<Stored>) -> Result<()> {
        match value {
            Some(Stored::Overflow {
                total_len,
                first_page,
            }) => overflow::free_chain(
                &self.pool,
                &self.alloc,
                self.log.as_ref(),
                first_page,
                total_len,
            ),
            _ => Ok(()),
        }
    }

    // ---- insert -----------------------------------------------------------------------

    /// The leaf for `key`, write-latched, reached with shared latches above it (rule 3).
    fn descend_for_write(&self, mtr: &Mtr, key: &[u8]) -> Result<PageMut> {
        loop {
            let root = self.pool.read(self.id(self.root))?;
            if self.node(&root)?.kind() == NodeKind::Leaf {
                drop(root);
                let root = mtr.write(self.id(self.root))?;
                if self.node(&root)?.kind() == NodeKind::Leaf {
                    return Ok(root);
                }
                continue; // the root split while we switched latches
            }
            let mut parent = root;
            loop {
                let node = self.node(&parent)?;
                let child = node.child(node.child_index_for(key));
                if node.level() == 1 {
                    return mtr.write(self.id(child));
                }
                let next = self.pool.read(self.id(child))?;
                parent = next;
            }
        }
    }

    fn put_optimistic(
        &self,
        mtr: &Mtr,
        key: &[u8],
        value: &Stored,
    ) -> Result<Attempt<Option<Stored>>> {
        let mut leaf = self.descend_for_write(mtr, key)?;
        let position = self.node(&leaf)?.search(key);
        let body = self.body.clone();
        match position {
            Ok(index) => {
                let old = Stored::from_leaf_value(self.node(&leaf)?.leaf_value(index));
                let mut node = self.node_mut(&mut leaf)?;
                match node.leaf_replace_value(index, value.as_leaf_value()) {
                    Ok(()) => Ok(Attempt::Done(Some(old))),
                    Err(_) => Ok(Attempt::Restart),
                }
            }
            Err(index) => {
                let mut node = NodeMut::new(&mut leaf[body]).map_err(|e| self.node_error(0, e))?;
                match node.leaf_insert(index, key, value.as_leaf_value()) {
                    Ok(()) => Ok(Attempt::Done(None)),
                    Err(_) => Ok(Attempt::Restart),
                }
            }
        }
    }

    /// Rule 4 for inserts. Returns the value that was replaced, if any.
    fn put_pessimistic(&self, mtr: &Mtr, key: &[u8], value: &Stored) -> Result<Option<Stored>> {
        // A branch is safe if it can take any separator; the leaf, if it can take this
        // entry (a leaf cell may be a few bytes larger than the largest separator).
        let mut path = self.descend_exclusive(mtr, key, |node| match node.kind() {
            NodeKind::Branch => node.free_space() >= node::max_branch_cell_len(self.body.len()),
            NodeKind::Leaf => node.would_fit_leaf(key.len(), value.as_leaf_value()),
        })?;
        let (mut leaf, _) = path.pop().expect("the path ends at a leaf");
        let position = self.node(&leaf)?.search(key);
        let mut replaced = None;
        let index = match position {
            Ok(index) => {
                replaced = Some(Stored::from_leaf_value(self.node(&leaf)?.leaf_value(index)));
                let mut node = self.node_mut(&mut leaf)?;
                if node
                    .leaf_replace_value(index, value.as_leaf_value())
                    .is_ok()
                {
                    return Ok(replaced);
                }
                index
            }
            Err(index) => {
                let mut node = self.node_mut(&mut leaf)?;
                if node.leaf_insert(index, key, value.as_leaf_value()).is_ok() {
                    return Ok(None);
                }
                index
            }
        };
        // The leaf is full and must split, perhaps all the way up the latched path. Reserve
        // every page that can take before changing anything (one per latched level, plus
        // one more for a root split), so that a failed allocation leaves the tree exactly as
        // it was — InnoDB reserves free extents before a split for the same reason.
        let mut spares = self.reserve_pages(mtr, path.len() + 2)?;
        if replaced.is_some() {
            // A replaced value that does not fit in place goes in as a new cell.
            self.node_mut(&mut leaf)?.remove(index);
        }
        let pending = Pending::Leaf {
            index,
            key,
            value: value.as_leaf_value(),
        };
        self.split_upwards(path, leaf, pending, &mut spares)?;
        self.release_pages(mtr, spares)?;
        Ok(replaced)
    }

    /// Latches exclusively from the root to the leaf for `key`, releasing ancestors above
    /// every node for which `safe` holds. Returns the still-latched path with, for each
    /// branch, the index of the child taken.
    fn descend_exclusive(
        &self,
        mtr: &Mtr,
        key: &[u8],
        safe: impl Fn(&Node<'_>) -> bool,
    ) -> Result<Vec<(PageMut, usize)>> {
        let root = mtr.write(self.id(self.root))?;
        let mut path: Vec<(PageMut, usize)> = vec![(root, 0)];
        loop {
            let (top, _) = path.last().expect("non-empty");
            let node = self.node(top)?;
            if node.kind() == NodeKind::Leaf {
                return Ok(path);
            }
            let child_index = node.child_index_for(key);
            let child_no = node.child(child_index);
            path.last_mut().expect("non-empty").1 = child_index;
            let child = mtr.write(self.id(child_no))?;
            if safe(&self.node(&child)?) {
                path.clear();
            }
            path.push((child, 0));
        }
    }

    /// Splits `full` while inserting `pending` into it, then inserts the new separator into
    /// the parent (the next page up the latched `path`), splitting upwards while needed.
    fn split_upwards(
        &self,
        mut path: Vec<(PageMut, usize)>,
        mut full: PageMut,
        mut pending: Pending<'_>,
        spares: &mut Vec<PageMut>,
    ) -> Result<()> {
        loop {
            if full.id().page_no == self.root {
                return self.split_root(full, &pending, spares);
            }
            let mut right = self.take_spare(spares, pending.page_type())?;
            let separator = self.split_node(&pending, &mut full, &mut right);
            let right_no = right.id().page_no;
            drop(right);
            drop(full);
            let (mut parent, child_index) = path
                .pop()
                .ok_or_else(|| self.corrupt(0, "a split reached a parent that is not latched"))?;
            if self
                .node_mut(&mut parent)?
                .branch_insert(child_index, &separator, right_no)
                .is_ok()
            {
                return Ok(());
            }
            full = parent;
            pending = Pending::Branch {
                index: child_index,
                key: separator,
                child: right_no,
            };
        }
    }

    /// Inserts `pending` into `left` while moving the upper part to the empty `right`;
    /// returns the separator for the parent.
    fn split_node(
        &self,
        pending: &Pending<'_>,
        left: &mut PageMut,
        right: &mut PageMut,
    ) -> Vec<u8> {
        let body = self.body.clone();
        match pending {
            Pending::Leaf { index, key, value } => node::leaf_insert_split(
                &mut left[body.clone()],
                *index,
                key,
                *value,
                &mut right[body],
            ),
            Pending::Branch { index, key, child } => node::branch_insert_split(
                &mut left[body.clone()],
                *index,
                key,
                *child,
                &mut right[body],
            ),
        }
    }

    /// Root split: the root's contents move to a new left page, which is then split as
    /// usual; the root page becomes a branch one level higher with the two halves as
    /// children, so the root keeps its page number.
    fn split_root(
        &self,
        mut root: PageMut,
        pending: &Pending<'_>,
        spares: &mut Vec<PageMut>,
    ) -> Result<()> {
        let body = self.body.clone();
        let level = self.node(&root)?.level();
        let mut left = self.take_spare(spares, pending.page_type())?;
        left[body.clone()].copy_from_slice(&root[body.clone()]);
        let mut right = self.take_spare(spares, pending.page_type())?;
        let separator = self.split_node(pending, &mut left, &mut right);
        let (left_no, right_no) = (left.id().page_no, right.id().page_no);
        drop(left);
        drop(right);
        page::init_frame(&mut root, PageType::BtreeBranch, self.id(self.root), 0);
        let mut node = NodeMut::init(&mut root[body], NodeKind::Branch, level + 1);
        node.set_leftmost_child(left_no);
        node.branch_insert(0, &separator, right_no)
            .map_err(|_| self.corrupt(self.root, "a fresh root cannot hold one separator"))?;
        Ok(())
    }

    /// Allocates `count` pages for a split (on failure the mtr's abort gives them back).
    fn reserve_pages(&self, mtr: &Mtr, count: usize) -> Result<Vec<PageMut>> {
        (0..count)
            .map(|_| self.alloc.allocate(mtr, PageType::BtreeLeaf))
            .collect()
    }

    /// A reserved page, its header retyped for the node it will hold.
    fn take_spare(&self, spares: &mut Vec<PageMut>, page_type: PageType) -> Result<PageMut> {
        let mut page = spares
            .pop()
            .ok_or_else(|| self.corrupt(0, "a split needed more pages than were reserved"))?;
        let id = page.id();
        page::init_frame(&mut page, page_type, id, 0);
        Ok(page)
    }

    /// Returns unused reserved pages to the free list.
    fn release_pages(&self, mtr: &Mtr, pages: Vec<PageMut>) -> Result<()> {
        let page_nos: Vec<u32> = pages.iter().map(|page| page.id().page_no).collect();
        drop(pages);
        for page_no in page_nos {
            self.alloc.free(mtr, page_no)?;
        }
        Ok(())
    }

    // ---- delete -----------------------------------------------------------------------

    fn delete_optimistic(&self, mtr: &Mtr, key: &[u8]) -> Result<Attempt<Option<Stored>>> {
        let mut leaf = self.descend_for_write(mtr, key)?;
        let is_root = leaf.id().page_no == self.root;
        let node = self.node(&leaf)?;
        let Ok(index) = node.search(key) else {
            return Ok(Attempt::Done(None));
        };
        if node.len() == 1 && !is_root {
            return Ok(Attempt::Restart); // the leaf would become empty: rule 4
        }
        let old = Stored::from_leaf_value(node.leaf_value(index));
        self.node_mut(&mut leaf)?.remove(index);
        Ok(Attempt::Done(Some(old)))
    }

    /// Rule 4 for deletes: an emptied leaf is freed and unlinked from its parent; a branch
    /// left without children is freed in turn; a root branch with a single child absorbs it.
    /// The frees come last, after every latch (the allocation lock's place in the order).
    fn delete_pessimistic(&self, mtr: &Mtr, key: &[u8]) -> Result<Option<Stored>> {
        let mut path = self.descend_exclusive(mtr, key, |node| node.len() >= 2)?;
        let (mut leaf, _) = path.pop().expect("the path ends at a leaf");
        let node = self.node(&leaf)?;
        let Ok(index) = node.search(key) else {
            return Ok(None);
        };
        let old = Stored::from_leaf_value(node.leaf_value(index));
        self.node_mut(&mut leaf)?.remove(index);
        let mut emptied = if self.node(&leaf)?.is_empty() && leaf.id().page_no != self.root {
            Some(leaf)
        } else {
            None
        };
        let mut to_free = Vec::new();
        while let Some(page) = emptied.take() {
            let page_no = page.id().page_no;
            drop(page);
            to_free.push(page_no);
            let Some((mut parent, child_index)) = path.pop() else {
                return Err(self.corrupt(page_no, "an emptied page has no latched parent"));
            };
            let parent_empty = remove_child(&mut self.node_mut(&mut parent)?, child_index);
            if parent_empty && parent.id().page_no != self.root {
                emptied = Some(parent);
            } else {
                path.push((parent, child_index));
            }
        }
        if let Some((root, _)) = path.into_iter().next() {
            if root.id().page_no == self.root {
                self.collapse_root(mtr, root, &mut to_free)?;
            }
        }
        for page_no in to_free {
            self.alloc.free(mtr, page_no)?;
        }
        Ok(Some(old))
    }

    /// While the root is a branch with one child and no separators, pull the child up;
    /// the pulled-up pages join `to_free`.
    fn collapse_root(&self, mtr: &Mtr, mut root: PageMut, to_free: &mut Vec<u32>) -> Result<()> {
        let body = self.body.clone();
        loop {
            let node = self.node(&root)?;
            if node.kind() != NodeKind::Branch || !node.is_empty() {
                return Ok(());
            }
            let child_no = node.child(0);
            if child_no == 0 {
                // The last child went away: the tree is empty again.
                page::init_frame(&mut root, PageType::BtreeLeaf, self.id(self.root), 0);
                NodeMut::init(&mut root[body], NodeKind::Leaf, 0);
                return Ok(());
            }
            let child = mtr.write(self.id(child_no))?;
            let child_type = if self.node(&child)?.kind() == NodeKind::Leaf {
                PageType::BtreeLeaf
            } else {
                PageType::BtreeBranch
            };
            page::init_frame(&mut root, child_type, self.id(self.root), 0);
            root[body.clone()].copy_from_slice(&child[body.clone()]);
            drop(child);
            to_free.push(child_no);
        }
    }

    // ---- destroy ----------------------------------------------------------------------

    /// Frees every page of the tree, root and overflow chains included, and returns how
    /// many (see "Destroying a tree" above). The space's free count grows by exactly that.
    /// A tree that fails invariants 1–6 is refused with `Error::Corrupt` and left as it is.
    pub fn destroy(self) -> Result<u32> {
        let mut pages: Vec<u32> = self.tree_pages()?.into_iter().collect();
        let root_index = pages
            .iter()
            .position(|&page_no| page_no == self.root)
            .expect("a tree's walk reaches its root");
        pages.swap(0, root_index);
        overflow::free_pages(&self.alloc, self.log.as_ref(), &pages)?;
        Ok(pages.len() as u32)
    }

    // ---- helpers ----------------------------------------------------------------------

    fn node_mut<'a>(&self, frame: &'a mut PageMut) -> Result<NodeMut<'a>> {
        let page_no = frame.id().page_no;
        NodeMut::new(&mut frame[self.body.clone()]).map_err(|e| self.node_error(page_no, e))
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        let max = self.max_key_len();
        if key.len() > max {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max,
            });
        }
        Ok(())
    }

    pub(super) fn id(&self, page_no: u32) -> PageId {
        PageId::new(self.space_id(), page_no)
    }

    pub(super) fn corrupt(&self, page_no: u32, problem: &str) -> Error {
        Error::Corrupt {
            path: self.alloc.space().path().to_path_buf(),
            problem: format!("page {page_no}: {problem}"),
        }
    }

    fn node_error(&self, page_no: u32, error: NodeError) -> Error {
        self.corrupt(page_no, &error.to_string())
    }
}

/// Unlinks child `index` from a branch; true if the branch has no children left.
/// (Cell `i` carries child `i + 1`; child 0 is the leftmost pointer.)
fn remove_child(node: &mut NodeMut<'_>, index: usize) -> bool {
    if index > 0 {
        node.remove(index - 1);
        return false;
    }
    if node.as_node().is_empty() {
        node.set_leftmost_child(0);
        return true;
    }
    let first = node.as_node().child(1);
    node.set_leftmost_child(first);
    node.remove(0);
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemVfs;
    use crate::page::PageSize;
    use crate::space::{NewSpace, SpaceFile, SpaceKind, SpaceSet};
    use std::path::Path;

    fn tree() -> BTree {
        let vfs = MemVfs::new();
        let spec = NewSpace {
            id: 1,
            kind: SpaceKind::Table,
            page_size: PageSize::try_from(4096).unwrap(),
            encryption: None,
        };
        let space = Arc::new(
            SpaceFile::create(&vfs, Path::new("/db/t"), spec, None, Default::default()).unwrap(),
        );
        let spaces = Arc::new(SpaceSet::new());
        spaces.insert(Arc::clone(&space));
        let pool = BufferPool::new(64 * 4096, 4096, spaces as _).unwrap();
        let alloc = Arc::new(Allocator::new(space, Arc::clone(&pool)));
        BTree::create(pool, alloc, None).unwrap()
    }

    fn contents(tree: &BTree) -> Vec<(Vec<u8>, Vec<u8>)> {
        use std::ops::Bound::Unbounded;
        tree.range(Unbounded, Unbounded, false)
            .collect::<Result<Vec<_>>>()
            .unwrap()
    }

    #[test]
    fn a_split_that_cannot_get_its_pages_changes_nothing() {
        let tree = tree();
        for i in 0..400u32 {
            tree.put(format!("key{i:05}").as_bytes(), &[7u8; 40])
                .unwrap();
        }
        let before = contents(&tree);
        let free_head = tree.space_header().free_head;
        // No free pages and no room to grow: every allocation now fails.
        tree.alloc
            .space()
            .update_header(|h| h.page_count = u32::MAX);
        let mut refused = 0;
        for i in 0..400u32 {
            // Growing values force splits (inserts into full leaves and replaces that no
            // longer fit); each must either succeed in place or leave the tree untouched.
            let key = format!("key{i:05}");
            match tree.put(key.as_bytes(), &[9u8; 600]) {
                Ok(()) => {}
                Err(_) => {
                    refused += 1;
                    let expected = before.iter().find(|(k, _)| k == key.as_bytes()).unwrap();
                    assert_eq!(tree.get(key.as_bytes()).unwrap(), Some(expected.1.clone()));
                }
            }
        }
        assert!(refused > 0, "the test must make some split fail");
        assert_eq!(contents(&tree).len(), before.len(), "no key was lost");
        assert_eq!(tree.space_header().free_head, free_head);
    }
}
