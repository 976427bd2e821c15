//! What the page codec costs per 16 KiB page, and which AES-GCM implementation to use.
//!
//! Groups (throughput in bytes of one 16 KiB page):
//!
//! | group          | ids                                                    | measures                 |
//! |----------------|--------------------------------------------------------|--------------------------|
//! | `page_encode`  | plain, aes_ctr-128/256, aes_cbc-128/256, aes_gcm-128/256 | `page::encode`          |
//! | `page_decode`  | same                                                   | `page::decode_in_place`  |
//! | `page_parts`   | ctr_apply-128, crc32                                   | the two passes a CTR page makes over its bytes |
//! | `gcm_impl`     | ring, aes-gcm                                          | AES-256-GCM seal in place, detached tag |
//!
//! `gcm_impl` is the evidence for `DataKey`'s GCM choice (see `keyring/src/cipher.rs`).
//! Compare `page_parts/ctr_apply-128` with `openssl speed -evp aes-128-ctr -bytes 16384`.
//!
//! Run: `cargo bench -p strongbox-bench --bench page_codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;

use aes_gcm::aead::{AeadInOut, KeyInit};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::RngExt;
use strongbox_engine::page::{
    decode_in_place, encode, PageHeader, PageId, PageKeys, PageSize, PageType, Seal,
};
use strongbox_keyring::{cipher, Algorithm, DataKey};

const PAGE: PageSize = PageSize::DEFAULT;
const PAGE_ID: PageId = PageId::new(7, 1234);
const KEY_ID: u32 = 1;
const KEY_VERSION: u32 = 1;

/// One data key, found under (`KEY_ID`, `KEY_VERSION`).
struct BenchKeys(Arc<DataKey>);

impl PageKeys for BenchKeys {
    fn data_key(&self, key_id: u32, key_version: u32) -> Option<Arc<DataKey>> {
        (key_id == KEY_ID && key_version == KEY_VERSION).then(|| self.0.clone())
    }
}

/// A 16 KiB plaintext frame with a B-tree leaf header and a random body.
fn frame() -> Vec<u8> {
    let mut frame = vec![0u8; PAGE.len()];
    rand::rng().fill(&mut frame[PAGE.body()]);
    let header = PageHeader::new(PageType::BtreeLeaf, PAGE_ID, 42);
    header.write(&mut frame);
    frame
}

/// Every way a page can be stored: a label and, if encrypted, the algorithm and key bits.
fn modes() -> Vec<(String, Option<(Algorithm, usize)>)> {
    let mut modes = vec![("plain".to_owned(), None)];
    for algorithm in Algorithm::ALL {
        for bits in [128, 256] {
            modes.push((format!("{algorithm}-{bits}"), Some((algorithm, bits))));
        }
    }
    modes
}

fn seal(key: &DataKey, mode: Option<(Algorithm, usize)>, write_nonce: u64) -> Seal<'_> {
    match mode {
        None => Seal::Plain,
        Some((algorithm, _)) => Seal::Encrypted {
            key,
            algorithm,
            key_id: KEY_ID,
            key_version: KEY_VERSION,
            write_nonce,
        },
    }
}

fn key_for(mode: Option<(Algorithm, usize)>) -> Arc<DataKey> {
    let bits = mode.map_or(128, |(_, bits)| bits);
    Arc::new(DataKey::generate(bits).expect("128 and 256 are valid key sizes"))
}

fn page_encode(c: &mut Criterion) {
    let frame = frame();
    let mut group = c.benchmark_group("page_encode");
    group.throughput(Throughput::Bytes(PAGE.len() as u64));
    for (label, mode) in modes() {
        let key = key_for(mode);
        let mut out = vec![0u8; PAGE.len()];
        let mut nonce = 0u64;
        group.bench_function(label, |b| {
            b.iter(|| {
                nonce += 1;
                encode(black_box(&frame), seal(&key, mode, nonce), &mut out)
                    .expect("the bench frame encodes");
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn page_decode(c: &mut Criterion) {
    let frame = frame();
    let mut group = c.benchmark_group("page_decode");
    group.throughput(Throughput::Bytes(PAGE.len() as u64));
    for (label, mode) in modes() {
        let key = key_for(mode);
        let mut stored = vec![0u8; PAGE.len()];
        encode(&frame, seal(&key, mode, 1), &mut stored).expect("the bench frame encodes");
        let keys = BenchKeys(key);
        group.bench_function(label, |b| {
            b.iter_batched_ref(
                || stored.clone(),
                |buf| decode_in_place(buf, PAGE_ID, &keys).expect("the bench page decodes"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn page_parts(c: &mut Criterion) {
    let key = DataKey::generate(128).expect("128 is a valid key size");
    let mut buf = frame();
    let mut group = c.benchmark_group("page_parts");
    group.throughput(Throughput::Bytes(PAGE.len() as u64));
    group.bench_function("ctr_apply-128", |b| {
        b.iter(|| key.ctr_apply(black_box(&[3; 16]), &mut buf))
    });
    group.bench_function("crc32", |b| b.iter(|| crc32fast::hash(black_box(&buf))));
    group.finish();
}

fn gcm_impl(c: &mut Criterion) {
    let mut key_bytes = [0u8; 32];
    rand::rng().fill(&mut key_bytes);
    let aad = [0x5a; 44];
    let mut buf = frame();

    let ring_key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key_bytes).expect("a 32-byte key"),
    );
    let rustcrypto_key = aes_gcm::Aes256Gcm::new(&key_bytes.into());

    let mut group = c.benchmark_group("gcm_impl");
    group.throughput(Throughput::Bytes(PAGE.len() as u64));
    let mut counter = 0u64;
    group.bench_function("ring", |b| {
        b.iter(|| {
            counter += 1;
            let nonce = ring::aead::Nonce::assume_unique_for_key(nonce_bytes(counter));
            ring_key
                .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(&aad), &mut buf)
                .expect("16 KiB is within GCM's limit")
        })
    });
    group.bench_function("aes-gcm", |b| {
        b.iter(|| {
            counter += 1;
            let nonce = nonce_bytes(counter).into();
            rustcrypto_key
                .encrypt_inout_detached(&nonce, &aad, buf.as_mut_slice().into())
                .expect("16 KiB is within GCM's limit")
        })
    });
    group.finish();
}

fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    nonce
}

fn report_hardware(_: &mut Criterion) {
    eprintln!(
        "AES hardware acceleration in the `aes` crate: {}",
        if cipher::hardware_accelerated() {
            "yes"
        } else {
            "NO (software AES)"
        }
    );
}

criterion_group!(
    benches,
    report_hardware,
    page_encode,
    page_decode,
    page_parts,
    gcm_impl
);
criterion_main!(benches);
