//! Several B+trees in one tablespace, the way the temporary tables share the temporary space:
//! trees made with `BTree::create_anywhere`, reopened with `BTree::open_at`, given back with
//! `BTree::destroy`, and unlogged (`log = None`), overflow chains included. The space is
//! encrypted, and the pools are small, so pages really go to the file and come back.
//!
//! * `three_trees_in_one_space_match_their_models`: thousands of interleaved puts and
//!   deletes (inline and overflow values, the same keys in every tree) into three trees;
//!   each is checked against a `BTreeMap` by `get`, forward and reverse scans and
//!   `verify_tree_only`, and the space's pages add up (page 0 + every tree's pages + the free
//!   list = `page_count`). Survives a flush and a reopen of the space file.
//! * `destroy_frees_exactly_the_trees_pages_and_they_are_reused`: destroying one tree of
//!   three frees exactly its pages (zeroed, on the free list), leaves the other two intact,
//!   and a new tree then grows into those pages without extending the space.
//! * `destroy_works_through_a_sixteen_frame_pool`: a tree many times the pool is destroyed
//!   in bounded mini-transactions.
//! * `trees_of_one_space_work_concurrently_while_one_is_destroyed`: three threads write
//!   their own trees while another tree of the space is destroyed and replaced.
//! * `create_and_open_still_root_at_page_one`: `create` takes page 1 or fails without
//!   allocating anything; `open` is `open_at(.., 1)`.
//! * `a_destroyed_tree_is_refused_and_verify_counts_other_trees_as_leaked`: a stale handle
//!   fails `verify_tree_only` and `destroy` (freeing nothing), while the whole-space
//!   `verify` of a tree that shares its space counts the other trees' pages as leaked.

mod common;

use common::{keyring, value_bytes, Rng, Short};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::Unbounded;
use std::path::Path;
use std::sync::Arc;
use strongbox_engine::btree::{BTree, TreeStats};
use strongbox_engine::buffer::BufferPool;
use strongbox_engine::io::MemVfs;
use strongbox_engine::page::{body_end, PageHeader, PageId, PageSize, PageType, BODY_START};
use strongbox_engine::space::{
    Allocator, NewSpace, SpaceEncryption, SpaceFile, SpaceHeader, SpaceKind, SpaceSet,
    TEMP_SPACE_ID,
};
use strongbox_engine::Error;
use strongbox_keyring::provider::MemoryKeyProvider;
use strongbox_keyring::Algorithm;

const PAGE_SIZE: usize = 4096;
const PATH: &str = "/db/temp.sbd";
/// Keys per tree: small enough that puts often replace and deletes often hit.
const KEYS: usize = 700;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// One encrypted temporary space in memory, with its own buffer pool.
struct Space {
    vfs: MemVfs,
    keys: Arc<MemoryKeyProvider>,
    spaces: Arc<SpaceSet>,
    pool: Arc<BufferPool>,
    alloc: Arc<Allocator>,
}

impl Space {
    fn create(frames: usize) -> Space {
        let vfs = MemVfs::new();
        let keys = keyring();
        let spec = NewSpace {
            id: TEMP_SPACE_ID,
            kind: SpaceKind::Temporary,
            page_size: PageSize::try_from(PAGE_SIZE as u32).unwrap(),
            encryption: Some(SpaceEncryption {
                key_id: 2,
                algorithm: Algorithm::AesGcm,
            }),
        };
        let file = SpaceFile::create(
            &vfs,
            Path::new(PATH),
            spec,
            Some(keys.as_ref()),
            Default::default(),
        )
        .expect("the space is created");
        Space::assemble(vfs, keys, file, frames)
    }

    fn assemble(
        vfs: MemVfs,
        keys: Arc<MemoryKeyProvider>,
        file: SpaceFile,
        frames: usize,
    ) -> Space {
        let file = Arc::new(file);
        let spaces = Arc::new(SpaceSet::new());
        spaces.insert(Arc::clone(&file));
        let pool = BufferPool::new(frames * PAGE_SIZE, PAGE_SIZE, Arc::clone(&spaces) as _)
            .expect("a pool");
        let alloc = Arc::new(Allocator::new(file, Arc::clone(&pool)));
        Space {
            vfs,
            keys,
            spaces,
            pool,
            alloc,
        }
    }

    /// Writes every page and page 0, drops the pool and opens the file again from scratch.
    /// The caller drops its tree handles first.
    fn reopen(self, frames: usize) -> Space {
        self.pool.flush_all().expect("flush");
        self.spaces.persist_headers().expect("page 0 written");
        self.pool.shutdown().expect("shutdown");
        let Space { vfs, keys, .. } = self;
        let file = SpaceFile::open(
            &vfs,
            Path::new(PATH),
            TEMP_SPACE_ID,
            PageSize::try_from(PAGE_SIZE as u32).unwrap(),
            Some(keys.as_ref()),
            Default::default(),
        )
        .expect("the space opens again");
        Space::assemble(vfs, keys, file, frames)
    }

    fn new_tree(&self) -> BTree {
        BTree::create_anywhere(Arc::clone(&self.pool), Arc::clone(&self.alloc), None)
            .expect("a tree is created")
    }

    fn open_tree(&self, root: u32) -> BTree {
        BTree::open_at(Arc::clone(&self.pool), Arc::clone(&self.alloc), None, root)
    }

    fn header(&self) -> SpaceHeader {
        self.alloc.space().header()
    }

    fn free_list(&self) -> BTreeSet<u32> {
        self.alloc
            .free_pages()
            .expect("the free list reads")
            .into_iter()
            .collect()
    }

    /// Checks that page 0, the trees' pages and the free list are every page of the space,
    /// each once: `verify_tree_only` has checked that no tree page is free, and a page two
    /// trees shared (or a leaked one) would break the sum.
    fn assert_accounted(&self, trees: &[&BTree]) {
        let header = self.header();
        let in_trees: u64 = trees
            .iter()
            .map(|tree| pages_of(&tree.verify_tree_only().expect("tree verifies")))
            .sum();
        assert_eq!(
            self.free_list().len() as u64,
            u64::from(header.free_count),
            "the free list holds free_count pages"
        );
        assert_eq!(
            1 + in_trees + u64::from(header.free_count),
            u64::from(header.page_count),
            "page 0 + {} tree pages + {} free pages must be the space's {} pages",
            in_trees,
            header.free_count,
            header.page_count
        );
    }
}

/// Pages a tree holds, overflow chains included.
fn pages_of(stats: &TreeStats) -> u64 {
    stats.leaves + stats.branches + stats.overflow_pages
}

/// Keys of 9 to 250 bytes: long separators make branches narrow, so trees of a few
/// hundred keys are three levels deep and branches split too.
fn key(i: usize) -> Vec<u8> {
    format!("key{i:05}-{}", "k".repeat(i * 7 % 240)).into_bytes()
}

/// Mostly small values, some near a quarter page, and 3% overflow chains of 2 to 10 pages.
fn value_len(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=2 => 5_000 + rng.below(35_000),
        3..=12 => 300 + rng.below(900),
        _ => 1 + rng.below(100),
    }
}

/// `ops` random puts (65%) and deletes on random trees, mirrored in the models.
fn churn(trees: &[BTree], models: &mut [Model], rng: &mut Rng, ops: usize) {
    for _ in 0..ops {
        let t = rng.below(trees.len());
        let k = key(rng.below(KEYS));
        if rng.percent(65) {
            let len = value_len(rng);
            let value = value_bytes(rng.next_u64(), len);
            trees[t].put(&k, &value).expect("put");
            models[t].insert(k, value);
        } else {
            let found = trees[t].delete(&k).expect("delete");
            assert_eq!(
                found,
                models[t].remove(&k).is_some(),
                "tree {t}: delete of {:?} disagrees with the model",
                Short(&k)
            );
        }
    }
}

/// `tree` holds exactly `model`: point reads (present and absent keys), full scans both
/// ways, and its invariants.
fn assert_matches(tree: &BTree, model: &Model) {
    let forward: Vec<(Vec<u8>, Vec<u8>)> = tree
        .range(Unbounded, Unbounded, false)
        .collect::<Result<_, _>>()
        .expect("a forward scan");
    let expected: Vec<(Vec<u8>, Vec<u8>)> =
        model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let found_keys: Vec<&[u8]> = forward.iter().map(|(k, _)| k.as_slice()).collect();
    let model_keys: Vec<&[u8]> = model.keys().map(Vec::as_slice).collect();
    assert_eq!(
        found_keys,
        model_keys,
        "tree rooted at {}: keys differ",
        tree.root_page()
    );
    assert!(
        forward == expected,
        "tree rooted at {}: values differ",
        tree.root_page()
    );
    let mut reverse: Vec<(Vec<u8>, Vec<u8>)> = tree
        .range(Unbounded, Unbounded, true)
        .collect::<Result<_, _>>()
        .expect("a reverse scan");
    reverse.reverse();
    assert!(reverse == expected, "reverse scan differs");
    for i in 0..KEYS {
        let k = key(i);
        let got = tree.get(&k).expect("get");
        assert!(
            got.as_ref() == model.get(&k),
            "tree rooted at {}: get({:?}) gives {:?} bytes, the model {:?}",
            tree.root_page(),
            Short(&k),
            got.as_ref().map(Vec::len),
            model.get(&k).map(Vec::len)
        );
    }
    let stats = tree.verify_tree_only().expect("the tree verifies");
    assert_eq!(stats.entries, model.len() as u64);
    assert_eq!(stats.leaked_pages, 0);
}

/// A space with three churned trees, each big enough to have branches and overflow chains.
fn three_churned_trees(frames: usize, seed: u64) -> (Space, Vec<BTree>, Vec<Model>) {
    let space = Space::create(frames);
    let trees: Vec<BTree> = (0..3).map(|_| space.new_tree()).collect();
    let mut models = vec![Model::new(); 3];
    let mut rng = Rng::new(seed);
    churn(&trees, &mut models, &mut rng, 6000);
    for tree in &trees {
        let stats = tree.verify_tree_only().unwrap();
        assert!(
            stats.depth >= 3 && stats.overflow_pages > 0,
            "the workload must make every tree three levels deep, with overflow chains: \
             {stats:?}"
        );
    }
    (space, trees, models)
}

#[test]
fn three_trees_in_one_space_match_their_models() {
    let space = Space::create(48);
    let trees: Vec<BTree> = (0..3).map(|_| space.new_tree()).collect();
    let roots: Vec<u32> = trees.iter().map(BTree::root_page).collect();
    assert_eq!(
        roots.iter().collect::<BTreeSet<_>>().len(),
        3,
        "three distinct roots: {roots:?}"
    );
    for tree in &trees {
        assert_eq!(
            pages_of(&tree.verify_tree_only().unwrap()),
            1,
            "an empty root leaf"
        );
    }
    let mut models = vec![Model::new(); 3];
    let mut rng = Rng::new(7);
    for _round in 0..4 {
        churn(&trees, &mut models, &mut rng, 1500);
        for (tree, model) in trees.iter().zip(&models) {
            assert_matches(tree, model);
        }
        space.assert_accounted(&trees.iter().collect::<Vec<_>>());
    }
    let roots_after: Vec<u32> = trees.iter().map(BTree::root_page).collect();
    assert_eq!(roots_after, roots, "root splits keep the root page");
    let header = space.header();
    drop(trees);

    let space = space.reopen(48);
    assert_eq!(space.header().page_count, header.page_count);
    assert_eq!(space.header().free_count, header.free_count);
    let trees: Vec<BTree> = roots.iter().map(|&root| space.open_tree(root)).collect();
    for (tree, model) in trees.iter().zip(&models) {
        assert_matches(tree, model);
    }
    churn(&trees, &mut models, &mut rng, 1500);
    for (tree, model) in trees.iter().zip(&models) {
        assert_matches(tree, model);
    }
    space.assert_accounted(&trees.iter().collect::<Vec<_>>());

    // Emptying a tree collapses it back into its root page, which stays where it was.
    for k in std::mem::take(&mut models[0]).keys() {
        assert!(trees[0].delete(k).unwrap());
    }
    assert_eq!(trees[0].root_page(), roots[0]);
    assert_eq!(pages_of(&trees[0].verify_tree_only().unwrap()), 1);
    assert_matches(&trees[0], &models[0]);
    space.assert_accounted(&trees.iter().collect::<Vec<_>>());
    churn(&trees, &mut models, &mut rng, 1500);
    for (tree, model) in trees.iter().zip(&models) {
        assert_matches(tree, model);
    }
    space.assert_accounted(&trees.iter().collect::<Vec<_>>());
}

#[test]
fn destroy_frees_exactly_the_trees_pages_and_they_are_reused() {
    let (space, mut trees, mut models) = three_churned_trees(48, 11);
    let victim = trees.remove(1);
    models.remove(1);
    let victim_pages = pages_of(&victim.verify_tree_only().unwrap());
    let victim_root = victim.root_page();
    let before = space.header();
    let free_before = space.free_list();

    let freed = victim.destroy().expect("destroy");

    assert_eq!(
        u64::from(freed),
        victim_pages,
        "destroy reports the tree's pages"
    );
    let after = space.header();
    assert_eq!(after.free_count, before.free_count + freed);
    assert_eq!(after.page_count, before.page_count, "nothing is allocated");
    let free_after = space.free_list();
    assert!(free_before.is_subset(&free_after));
    let newly_free: BTreeSet<u32> = free_after.difference(&free_before).copied().collect();
    assert_eq!(newly_free.len() as u64, victim_pages);
    assert!(newly_free.contains(&victim_root));
    let body = BODY_START..body_end(PAGE_SIZE);
    for &page_no in &newly_free {
        let frame = space
            .pool
            .read(PageId::new(TEMP_SPACE_ID, page_no))
            .unwrap();
        let header = PageHeader::read(&frame).unwrap();
        assert_eq!(header.page_type, PageType::Free, "page {page_no}");
        // The first four body bytes link the free list; the rest must be scrubbed.
        assert!(
            frame[body.start + 4..body.end].iter().all(|&b| b == 0),
            "freed page {page_no} still holds data"
        );
    }
    for (tree, model) in trees.iter().zip(&models) {
        assert_matches(tree, model);
    }
    space.assert_accounted(&trees.iter().collect::<Vec<_>>());

    // A new tree takes the freed pages (its root first: the free list's head) and grows
    // into them without extending the space.
    let reused = space.new_tree();
    assert_eq!(
        reused.root_page(),
        victim_root,
        "the free list's head is reused"
    );
    let mut model = Model::new();
    let mut rng = Rng::new(99);
    let target = victim_pages / 2;
    let mut i = 0;
    while pages_of(&reused.verify_tree_only().unwrap()) < target {
        for _ in 0..20 {
            let len = value_len(&mut rng);
            let value = value_bytes(rng.next_u64(), len);
            reused.put(&key(i % KEYS), &value).unwrap();
            model.insert(key(i % KEYS), value);
            i += 1;
        }
    }
    assert_eq!(
        space.header().page_count,
        before.page_count,
        "the new tree grew into freed pages only"
    );
    assert_matches(&reused, &model);
    trees.push(reused);
    models.push(model);
    for (tree, model) in trees.iter().zip(&models) {
        assert_matches(tree, model);
    }
    space.assert_accounted(&trees.iter().collect::<Vec<_>>());

    // And all of it survives a reopen.
    let roots: Vec<u32> = trees.iter().map(BTree::root_page).collect();
    drop(trees);
    let space = space.reopen(48);
    let trees: Vec<BTree> = roots.iter().map(|&root| space.open_tree(root)).collect();
    for (tree, model) in trees.iter().zip(&models) {
        assert_matches(tree, model);
    }
    space.assert_accounted(&trees.iter().collect::<Vec<_>>());
}

#[test]
fn destroy_works_through_a_sixteen_frame_pool() {
    let space = Space::create(16);
    let small = space.new_tree();
    let big = space.new_tree();
    let mut rng = Rng::new(3);
    let mut small_model = Model::new();
    for i in 0..300 {
        let value = value_bytes(rng.next_u64(), 1 + rng.below(200));
        big.put(&key(i), &value_bytes(i as u64, 10_000 + rng.below(10_000)))
            .unwrap();
        small.put(&key(i), &value).unwrap();
        small_model.insert(key(i), value);
    }
    let big_pages = pages_of(&big.verify_tree_only().unwrap());
    assert!(
        big_pages > 800,
        "the tree must dwarf the pool: {big_pages} pages"
    );
    let free_before = space.header().free_count;
    let freed = big.destroy().expect("destroy in bounded mtrs");
    assert_eq!(u64::from(freed), big_pages);
    assert_eq!(space.header().free_count, free_before + freed);
    assert_matches(&small, &small_model);
    space.assert_accounted(&[&small]);
}

#[test]
fn trees_of_one_space_work_concurrently_while_one_is_destroyed() {
    let (space, trees, models) = three_churned_trees(64, 23);
    let doomed = space.new_tree();
    let mut rng = Rng::new(5);
    for i in 0..KEYS {
        let len = value_len(&mut rng);
        doomed.put(&key(i), &value_bytes(i as u64, len)).unwrap();
    }
    let doomed_pages = pages_of(&doomed.verify_tree_only().unwrap());
    let workers: Vec<_> = trees
        .into_iter()
        .zip(models)
        .enumerate()
        .map(|(t, (tree, mut model))| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(100 + t as u64);
                let trees = [tree];
                churn(&trees, std::slice::from_mut(&mut model), &mut rng, 2000);
                let [tree] = trees;
                (tree, model)
            })
        })
        .collect();
    let freed = doomed.destroy().expect("destroy while other trees change");
    assert_eq!(u64::from(freed), doomed_pages);
    let replacement = space.new_tree();
    let mut replacement_model = Model::new();
    churn(
        std::slice::from_ref(&replacement),
        std::slice::from_mut(&mut replacement_model),
        &mut rng,
        2000,
    );
    let mut trees = Vec::new();
    for worker in workers {
        let (tree, model) = worker.join().expect("a worker");
        assert_matches(&tree, &model);
        trees.push(tree);
    }
    assert_matches(&replacement, &replacement_model);
    trees.push(replacement);
    space.assert_accounted(&trees.iter().collect::<Vec<_>>());
}

#[test]
fn create_and_open_still_root_at_page_one() {
    let space = Space::create(32);
    let main = BTree::create(Arc::clone(&space.pool), Arc::clone(&space.alloc), None).unwrap();
    assert_eq!(main.root_page(), 1);
    main.put(b"k", b"v").unwrap();
    let opened = BTree::open(Arc::clone(&space.pool), Arc::clone(&space.alloc), None);
    assert_eq!(opened.root_page(), 1);
    assert_eq!(opened.get(b"k").unwrap(), Some(b"v".to_vec()));

    // Page 1 is taken: `create` refuses, and gives back the page it was handed.
    let before = space.header();
    match BTree::create(Arc::clone(&space.pool), Arc::clone(&space.alloc), None) {
        Err(Error::Corrupt { problem, .. }) => {
            assert!(problem.contains("not page 1"), "{problem}")
        }
        other => panic!("create over an existing tree: {other:?}"),
    }
    let after = space.header();
    assert_eq!(
        (after.page_count, after.free_count, after.free_head),
        (before.page_count, before.free_count, before.free_head)
    );
    let other = space.new_tree();
    assert_ne!(other.root_page(), 1);
    other.put(b"k", b"other").unwrap();
    assert_eq!(opened.get(b"k").unwrap(), Some(b"v".to_vec()));
    space.assert_accounted(&[&main, &other]);

    // A one-page tree gives back its root, which the next tree then takes.
    let free_before = space.header().free_count;
    let other_root = other.root_page();
    assert_eq!(other.destroy().unwrap(), 1);
    assert_eq!(space.header().free_count, free_before + 1);
    space.assert_accounted(&[&main]);
    assert_eq!(space.new_tree().root_page(), other_root);
}

#[test]
fn a_destroyed_tree_is_refused_and_verify_counts_other_trees_as_leaked() {
    let (space, trees, models) = three_churned_trees(48, 31);
    let stats: Vec<TreeStats> = trees
        .iter()
        .map(|t| t.verify_tree_only().unwrap())
        .collect();
    // The whole-space check of one tree sees the other trees' pages as unreachable.
    let whole = trees[0].verify().expect("verify");
    assert_eq!(
        whole.leaked_pages,
        pages_of(&stats[1]) + pages_of(&stats[2])
    );
    assert_eq!(pages_of(&whole), pages_of(&stats[0]));

    let root = trees[2].root_page();
    let freed = space.open_tree(root).destroy().unwrap();
    assert_eq!(u64::from(freed), pages_of(&stats[2]));
    assert!(
        trees[2].verify_tree_only().is_err(),
        "a handle to a destroyed tree must fail verification"
    );
    let before = space.header();
    assert!(
        space.open_tree(root).destroy().is_err(),
        "destroying a free page as a tree must be refused"
    );
    let after = space.header();
    assert_eq!(
        (after.free_count, after.free_head),
        (before.free_count, before.free_head),
        "a refused destroy frees nothing"
    );
    for (tree, model) in trees.iter().zip(&models).take(2) {
        assert_matches(tree, model);
    }
    space.assert_accounted(&[&trees[0], &trees[1]]);
}
