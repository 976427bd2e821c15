//! What one buffer-pool fetch costs: a hit, where the page is resident and only pinned and
//! latched, and for contrast a miss, where a clean frame is evicted and the page is read
//! back through the tablespace (checksum, decryption, leaf check) from the in-memory file
//! system.
//!
//! | group       | id              | measures                                                 |
//! |-------------|-----------------|----------------------------------------------------------|
//! | `pool_hit`  | read            | `BufferPool::read` of one resident page (shared latch)   |
//! | `pool_hit`  | write           | `BufferPool::write` of it (exclusive latch, marks dirty) |
//! | `pool_hit`  | read-1024-pages | `read` cycling over 1024 resident pages (colder caches)  |
//! | `pool_miss` | plain, aes_ctr  | `read` of a page not resident, plain / encrypted space   |
//!
//! Every fetch drops its guard at once (unlatch, unpin), so that is in the time too.
//!
//! The pool is benched directly: it is public, and its [`PageIo`] is the engine's own
//! [`SpaceSet`] over one [`SpaceFile`] on a [`MemVfs`], so a miss runs exactly the code a
//! database runs (`SpaceFile::read_page`) minus the disk. The pages are B-tree leaves full
//! of 16-byte keys and 100-byte values, so a miss also pays for the structural check every
//! tree page gets on its way in. The miss pool has the minimum of [`MIN_FRAMES`] frames and
//! the bench cycles over four times as many pages, so CLOCK evicts on every fetch (checked
//! before timing); the victims are clean, so no miss writes anything. Compare
//! `pool_miss/aes_ctr - pool_miss/plain` with `page_codec`'s `page_decode` numbers.
//!
//! No redo log, no B+tree descent and one thread: `btree` measures the path through `Db`.
//!
//! Run: `cargo bench -p strongbox-bench --bench buffer_pool`
//!
//! Plots are off: criterion's plotting backend needs system fonts. The numbers are on the
//! terminal and in `target/criterion`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strongbox_engine::btree::node::{LeafValue, NodeKind, NodeMut};
use strongbox_engine::buffer::{BufferPool, PageIo, MIN_FRAMES};
use strongbox_engine::io::MemVfs;
use strongbox_engine::page::{init_frame, PageId, PageSize, PageType};
use strongbox_engine::space::{
    AllocState, NewSpace, SpaceEncryption, SpaceFile, SpaceKind, SpaceSet,
};
use strongbox_keyring::provider::MemoryKeyProvider;
use strongbox_keyring::Algorithm;

const PAGE: PageSize = PageSize::DEFAULT;
const SPACE_ID: u32 = 1;
/// Data pages in the tablespace (16 MiB): enough for the hit bench to leave the CPU caches.
const PAGES: u32 = 1024;
/// Pages the miss bench cycles over: four times the pool, so every fetch misses.
const MISS_PAGES: u32 = 4 * MIN_FRAMES as u32;
const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;

/// A B-tree leaf for page `id`, filled with 16-byte keys and 100-byte values until full.
fn leaf(id: PageId) -> Vec<u8> {
    let mut frame = vec![0u8; PAGE.len()];
    init_frame(&mut frame, PageType::BtreeLeaf, id, 0);
    let mut node = NodeMut::init(&mut frame[PAGE.body()], NodeKind::Leaf, 0);
    let value = [0x5a; VALUE_LEN];
    for i in 0u64.. {
        let mut key = [0u8; KEY_LEN];
        key[..4].copy_from_slice(&id.page_no.to_be_bytes());
        key[8..].copy_from_slice(&i.to_be_bytes());
        let slot = usize::try_from(i).expect("a page holds few cells");
        if node
            .leaf_insert(slot, &key, LeafValue::Inline(&value))
            .is_err()
        {
            break;
        }
    }
    frame
}

/// A tablespace of [`PAGES`] full leaves on `vfs`, AES-CTR encrypted if `encrypted`, behind
/// a [`SpaceSet`] (the engine's `PageIo`).
///
/// A space grows only inside a mini-transaction, which is not public; so this writes page 0
/// claiming `PAGES` data pages, reopens the file, and writes the pages through the space,
/// which encodes (and encrypts) them as the page cleaner would.
fn tablespace(vfs: &MemVfs, keys: &MemoryKeyProvider, encrypted: bool) -> Arc<SpaceSet> {
    let path = Path::new(if encrypted {
        "/bench/encrypted.sbd"
    } else {
        "/bench/plain.sbd"
    });
    let spec = NewSpace {
        id: SPACE_ID,
        kind: SpaceKind::Table,
        page_size: PAGE,
        encryption: encrypted.then_some(SpaceEncryption {
            key_id: 1,
            algorithm: Algorithm::AesCtr,
        }),
    };
    let created = SpaceFile::create(vfs, path, spec, Some(keys), Default::default())
        .expect("create the bench space");
    created
        .persist_header(AllocState {
            page_count: PAGES + 1,
            ..created.header().alloc()
        })
        .expect("grow the bench space");
    drop(created);
    let space = SpaceFile::open(vfs, path, SPACE_ID, PAGE, Some(keys), Default::default())
        .expect("reopen the bench space");
    for page_no in 1..=PAGES {
        space
            .write_page(page_no, &leaf(PageId::new(SPACE_ID, page_no)))
            .expect("write a bench page");
    }
    let spaces = Arc::new(SpaceSet::new());
    spaces.insert(Arc::new(space));
    spaces
}

fn keys() -> MemoryKeyProvider {
    let keys = MemoryKeyProvider::new();
    keys.add_random(1, 1, 256).expect("256 is a valid key size");
    keys
}

fn page(page_no: u32) -> PageId {
    PageId::new(SPACE_ID, page_no)
}

fn pool_hit(c: &mut Criterion) {
    let (vfs, keys) = (MemVfs::new(), keys());
    let io: Arc<dyn PageIo> = tablespace(&vfs, &keys, true);
    let pool = BufferPool::new(2 * PAGES as usize * PAGE.len(), PAGE.len(), io)
        .expect("a valid pool size");
    for page_no in 1..=PAGES {
        drop(pool.read(page(page_no)).expect("load a bench page"));
    }
    let hot = page(PAGES / 2);

    let mut group = c.benchmark_group("pool_hit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("read", |b| {
        b.iter(|| pool.read(black_box(hot)).expect("a resident page")[100])
    });
    group.bench_function("write", |b| {
        b.iter(|| pool.write(black_box(hot)).expect("a resident page")[100])
    });
    let mut page_no = 0;
    group.bench_function("read-1024-pages", |b| {
        b.iter(|| {
            page_no = page_no % PAGES + 1;
            pool.read(black_box(page(page_no)))
                .expect("a resident page")[100]
        })
    });
    group.finish();
    let stats = pool.stats();
    assert_eq!(
        stats.misses,
        u64::from(PAGES),
        "only the loading reads may miss"
    );
}

fn pool_miss(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_miss");
    group.throughput(Throughput::Elements(1));
    for encrypted in [false, true] {
        let (vfs, keys) = (MemVfs::new(), keys());
        let io: Arc<dyn PageIo> = tablespace(&vfs, &keys, encrypted);
        let pool =
            BufferPool::new(MIN_FRAMES * PAGE.len(), PAGE.len(), io).expect("a valid pool size");
        let mut page_no = 0;
        let mut fetch = || {
            page_no = page_no % MISS_PAGES + 1;
            pool.read(black_box(page(page_no))).expect("a bench page")[100]
        };
        for _ in 0..2 * MISS_PAGES {
            fetch();
        }
        assert_eq!(pool.stats().hits, 0, "the miss bench must miss every time");
        let label = if encrypted { "aes_ctr" } else { "plain" };
        group.bench_function(label, |b| b.iter(&mut fetch));
        let stats = pool.stats();
        assert_eq!(stats.hits, 0, "the miss bench must miss every time");
        assert_eq!(stats.pages_written, 0, "clean victims are never written");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = pool_hit, pool_miss
}
criterion_main!(benches);
