//! External merge sort of key/value pairs, for bulk loads larger than memory.
//!
//! [`ExternalSorter::push`] buffers pairs in memory. When the buffer passes the memory
//! budget it is sorted by key and written as one sorted *run* to a [`TempFile`] (encrypted
//! under the sorter's [`TempFileKey`], like every temp file). [`ExternalSorter::finish`]
//! sorts what is left in memory and returns [`SortedPairs`], which merges the runs and that
//! remainder through a binary heap of one head pair per source, in ascending key order.
//! The runs are deleted when `SortedPairs` (or an unfinished sorter) is dropped.
//!
//! ## Duplicate keys: the pair pushed last wins
//!
//! Only the last pair pushed for a key is yielded, as if each push overwrote the key:
//!
//! 1. Inside a run (and the in-memory remainder) the buffer is reversed, stably sorted by
//!    key and deduplicated keeping the first of each key — which is the last one pushed.
//!    Every source therefore holds each key at most once, in strictly ascending order.
//! 2. Across sources, newer wins: sources are numbered in push order (run 0, run 1, …, the
//!    in-memory remainder last), and on equal keys the heap pops the highest number first;
//!    the older heads with that key are then skipped.
//!
//! ```text
//!   pushes:  b=1 a=1 | spill: run 0 | b=2 c=1 c=2 | spill: run 1 | a=2
//!   run 0:   a=1 b=1          run 1:  b=2 c=2          memory: a=2
//!   output:  a=2 (memory beats run 0)   b=2 (run 1 beats run 0)   c=2
//! ```
//!
//! ## Run record layout (one temp-file record per pair, little-endian)
//!
//! ```text
//! offset  size  field
//! 0       4     k: key length
//! 4       4     v: value length
//! 8       k     key
//! 8+k     v     value          (8 + k + v must equal the record's length)
//! ```
//!
//! A run whose keys are not strictly ascending is reported as corrupt; with encryption off
//! that is the only check on a run's contents beyond the temp file's structure.

use crate::error::{Error, Result};
use crate::tempfile::{TempFile, TempFileKey, TempFileReader, TempFileWriter, MAX_RECORD_LEN};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Offset of the value length in a run record.
const VALUE_LEN_OFFSET: usize = 4;
/// Size of a run record's header: key length, then value length.
const PAIR_HEADER_LEN: usize = VALUE_LEN_OFFSET + 4;
/// What a buffered pair costs beyond its bytes: the two `Vec` headers.
const PAIR_OVERHEAD: usize = 2 * std::mem::size_of::<Vec<u8>>();

type Pair = (Vec<u8>, Vec<u8>);

/// Sorts pairs by key, spilling sorted runs to temp files in `dir` beyond a memory budget.
pub struct ExternalSorter {
    dir: PathBuf,
    key: Arc<TempFileKey>,
    memory_budget: usize,
    /// Pairs not yet spilled, in push order (until sorted for a spill or `finish`).
    buffer: Vec<Pair>,
    /// Bytes `buffer` holds: keys, values and [`PAIR_OVERHEAD`] per pair.
    buffered_bytes: usize,
    /// The spilled runs, oldest first.
    runs: Vec<TempFile>,
    spilled_bytes: u64,
}

impl ExternalSorter {
    /// A sorter whose runs go to temp files in `dir`, encrypted under `key`, and which keeps
    /// up to about `memory_budget` bytes of pairs in memory.
    pub fn new(dir: PathBuf, key: Arc<TempFileKey>, memory_budget: usize) -> ExternalSorter {
        ExternalSorter {
            dir,
            key,
            memory_budget,
            buffer: Vec::new(),
            buffered_bytes: 0,
            runs: Vec::new(),
            spilled_bytes: 0,
        }
    }

    /// Adds a pair; a later push of the same key replaces it. Spills a run when the buffer
    /// passes the memory budget.
    pub fn push(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        let max_key = MAX_RECORD_LEN - PAIR_HEADER_LEN;
        if key.len() > max_key {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max: max_key,
            });
        }
        let max_value = max_key - key.len();
        if value.len() > max_value {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: max_value,
            });
        }
        self.buffered_bytes += key.len() + value.len() + PAIR_OVERHEAD;
        self.buffer.push((key, value));
        if self.buffered_bytes > self.memory_budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Runs written so far.
    pub fn spilled_runs(&self) -> usize {
        self.runs.len()
    }

    /// Bytes written to run files so far.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes
    }

    /// Every distinct key once, ascending, with the value pushed last for it.
    pub fn finish(mut self) -> Result<SortedPairs> {
        sort_keep_last(&mut self.buffer);
        let mut sources = Vec::with_capacity(self.runs.len() + 1);
        for run in &self.runs {
            sources.push(Source::Run(run.reader()?));
        }
        sources.push(Source::Memory(std::mem::take(&mut self.buffer).into_iter()));
        SortedPairs::new(sources, std::mem::take(&mut self.runs))
    }

    /// Writes the buffer as one sorted run. On error the buffer is kept (sorted).
    fn spill(&mut self) -> Result<()> {
        sort_keep_last(&mut self.buffer);
        let mut writer = TempFileWriter::create(&self.dir, &self.key)?;
        let mut record = Vec::new();
        for (key, value) in &self.buffer {
            encode_pair(key, value, &mut record);
            writer.push(&record)?;
        }
        let run = writer.finish()?;
        self.spilled_bytes += run.size();
        self.runs.push(run);
        self.buffer.clear();
        self.buffered_bytes = 0;
        Ok(())
    }
}

impl fmt::Debug for ExternalSorter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalSorter")
            .field("dir", &self.dir)
            .field("memory_budget", &self.memory_budget)
            .field("buffered_pairs", &self.buffer.len())
            .field("spilled_runs", &self.runs.len())
            .field("spilled_bytes", &self.spilled_bytes)
            .finish_non_exhaustive()
    }
}

/// Sorts by key and keeps, of each key, the pair pushed last (see the module doc, rule 1).
fn sort_keep_last(pairs: &mut Vec<Pair>) {
    pairs.reverse();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.dedup_by(|later, earlier| later.0 == earlier.0);
}

fn encode_pair(key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let len = |bytes: &[u8]| u32::try_from(bytes.len()).expect("checked by push");
    out.clear();
    out.extend_from_slice(&len(key).to_le_bytes());
    out.extend_from_slice(&len(value).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

fn decode_pair(record: &[u8], path: &Path) -> Result<Pair> {
    let corrupt = |problem: String| Error::Corrupt {
        path: path.to_path_buf(),
        problem: format!("sort run: {problem}"),
    };
    let Some((header, body)) = record.split_first_chunk::<PAIR_HEADER_LEN>() else {
        return Err(corrupt(format!("a record of {} bytes", record.len())));
    };
    let (key_len, value_len) = header.split_at(VALUE_LEN_OFFSET);
    let key_len = u32::from_le_bytes(key_len.try_into().expect("4 bytes")) as usize;
    let value_len = u32::from_le_bytes(value_len.try_into().expect("4 bytes")) as usize;
    if key_len.checked_add(value_len) != Some(body.len()) {
        return Err(corrupt(format!(
            "a {key_len}-byte key and {value_len}-byte value in a record of {} bytes",
            record.len()
        )));
    }
    let (key, value) = body.split_at(key_len);
    Ok((key.to_vec(), value.to_vec()))
}

/// Where merged pairs come from: a spilled run, or the sorted in-memory remainder.
enum Source {
    Run(TempFileReader),
    Memory(std::vec::IntoIter<Pair>),
}

impl Source {
    fn next_pair(&mut self) -> Result<Option<Pair>> {
        match self {
            Source::Run(reader) => match reader.next_record()? {
                Some(record) => decode_pair(&record, reader.path()).map(Some),
                None => Ok(None),
            },
            Source::Memory(pairs) => Ok(pairs.next()),
        }
    }
}

/// A source's current smallest pair, ordered for `BinaryHeap` (a max-heap): the smallest
/// key is greatest, and on equal keys the newest source is greatest.
struct Head {
    key: Vec<u8>,
    value: Vec<u8>,
    source: usize,
}

impl Ord for Head {
    fn cmp(&self, other: &Head) -> Ordering {
        other
            .key
            .cmp(&self.key)
            .then(self.source.cmp(&other.source))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Head) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Head) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

/// The sorted, deduplicated pairs of an [`ExternalSorter`]. After yielding an error it ends.
pub struct SortedPairs {
    // Declared before `runs`, so the readers are closed before the files are deleted.
    sources: Vec<Source>,
    heap: BinaryHeap<Head>,
    failed: bool,
    /// Kept only so the run files live until the merge is done.
    _runs: Vec<TempFile>,
}

impl SortedPairs {
    fn new(sources: Vec<Source>, runs: Vec<TempFile>) -> Result<SortedPairs> {
        let mut pairs = SortedPairs {
            heap: BinaryHeap::with_capacity(sources.len()),
            sources,
            failed: false,
            _runs: runs,
        };
        for source in 0..pairs.sources.len() {
            pairs.refill(source, None)?;
        }
        Ok(pairs)
    }

    /// Pushes the next pair of `source`, which must come after `after`, its previous key.
    fn refill(&mut self, source: usize, after: Option<&[u8]>) -> Result<()> {
        let Some((key, value)) = self.sources[source].next_pair()? else {
            return Ok(());
        };
        if let (Some(after), Source::Run(reader)) = (after, &self.sources[source]) {
            if key.as_slice() <= after {
                return Err(Error::Corrupt {
                    path: reader.path().to_path_buf(),
                    problem: "sort run: keys out of order".to_string(),
                });
            }
        }
        self.heap.push(Head { key, value, source });
        Ok(())
    }

    fn next_pair(&mut self) -> Result<Option<Pair>> {
        let Some(winner) = self.heap.pop() else {
            return Ok(None);
        };
        self.refill(winner.source, Some(&winner.key))?;
        while self.heap.peek().is_some_and(|head| head.key == winner.key) {
            let older = self.heap.pop().expect("just peeked");
            self.refill(older.source, Some(&older.key))?;
        }
        Ok(Some((winner.key, winner.value)))
    }
}

impl Iterator for SortedPairs {
    type Item = Result<Pair>;

    fn next(&mut self) -> Option<Result<Pair>> {
        if self.failed {
            return None;
        }
        let next = self.next_pair();
        self.failed = next.is_err();
        next.transpose()
    }
}

impl fmt::Debug for SortedPairs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SortedPairs")
            .field("sources", &self.sources.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use strongbox_keyring::provider::MemoryKeyProvider;

    fn encrypted_key() -> Arc<TempFileKey> {
        let keyring = MemoryKeyProvider::new();
        keyring.add_random(2, 1, 256).unwrap();
        keyring.add_random(1, 1, 256).unwrap();
        Arc::new(TempFileKey::for_keyring(Some(&keyring), true).unwrap())
    }

    /// Pushes `pairs`, checks against a `BTreeMap` fed the same pushes, returns the sorter's
    /// spill counters.
    fn sort_and_check(key: Arc<TempFileKey>, budget: usize, pairs: &[Pair]) -> (usize, u64) {
        let dir = ::tempfile::tempdir().unwrap();
        let mut sorter = ExternalSorter::new(dir.path().to_path_buf(), key, budget);
        let mut model = BTreeMap::new();
        for (key, value) in pairs {
            sorter.push(key.clone(), value.clone()).unwrap();
            model.insert(key.clone(), value.clone());
        }
        let counters = (sorter.spilled_runs(), sorter.spilled_bytes());
        let sorted: Vec<Pair> = sorter.finish().unwrap().map(|p| p.unwrap()).collect();
        assert_eq!(sorted, model.into_iter().collect::<Vec<_>>());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "runs left"
        );
        counters
    }

    /// Keys from a small set, so there are many duplicates; every fifth value empty.
    fn sample_pairs(n: usize) -> Vec<Pair> {
        (0..n)
            .map(|i| {
                let key = format!("key-{:04}", (i * 7919) % 500).into_bytes();
                let value = match i % 5 {
                    0 => Vec::new(),
                    _ => format!("value {i}").into_bytes(),
                };
                (key, value)
            })
            .collect()
    }

    /// A sorter with `runs` spilled runs of `sample_pairs`, in `dir`.
    fn spilled(dir: &Path, key: Arc<TempFileKey>, n: usize) -> (ExternalSorter, Vec<PathBuf>) {
        let mut sorter = ExternalSorter::new(dir.to_path_buf(), key, 2_000);
        for (key, value) in sample_pairs(n) {
            sorter.push(key, value).unwrap();
        }
        assert!(sorter.spilled_runs() > 1);
        let files = sorter.runs.iter().map(|run| run.path().to_path_buf());
        let files = files.collect();
        (sorter, files)
    }

    /// Drains a sorter: the pairs yielded before the first error, and that error.
    fn drain(sorter: ExternalSorter) -> (Vec<Pair>, Option<Error>) {
        let mut pairs = Vec::new();
        let mut merged = match sorter.finish() {
            Ok(merged) => merged,
            Err(e) => return (pairs, Some(e)),
        };
        for pair in merged.by_ref() {
            match pair {
                Ok(pair) => pairs.push(pair),
                Err(e) => {
                    assert!(merged.next().is_none(), "the iterator ends after an error");
                    return (pairs, Some(e));
                }
            }
        }
        (pairs, None)
    }

    /// The merge fails with `Corrupt`, having yielded only correct pairs.
    fn assert_merge_corrupt(sorter: ExternalSorter, n: usize) {
        let model: BTreeMap<_, _> = sample_pairs(n).into_iter().collect();
        let (pairs, error) = drain(sorter);
        assert!(matches!(error, Some(Error::Corrupt { .. })), "{error:?}");
        for (key, value) in pairs {
            assert_eq!(model.get(&key), Some(&value), "a wrong pair was yielded");
        }
    }

    #[test]
    fn sorts_like_a_btreemap_through_many_encrypted_runs() {
        let (runs, bytes) = sort_and_check(encrypted_key(), 1_000, &sample_pairs(5_000));
        assert!(runs > 50, "{runs} runs");
        assert!(bytes > 0);
    }

    #[test]
    fn sorts_in_plain_mode_too() {
        let key = Arc::new(TempFileKey::plain());
        let (runs, _) = sort_and_check(key, 1_000, &sample_pairs(5_000));
        assert!(runs > 50, "{runs} runs");
    }

    #[test]
    fn sorts_in_memory_when_the_budget_allows() {
        let (runs, bytes) = sort_and_check(encrypted_key(), 1 << 30, &sample_pairs(5_000));
        assert_eq!((runs, bytes), (0, 0));
        assert_eq!(sort_and_check(encrypted_key(), 0, &[]), (0, 0));
    }

    #[test]
    fn the_pair_pushed_last_wins_across_runs_and_memory() {
        // The module doc's example, spilling by hand, then a key repeated in memory.
        let dir = ::tempfile::tempdir().unwrap();
        let mut sorter = ExternalSorter::new(dir.path().to_path_buf(), encrypted_key(), usize::MAX);
        let push = |sorter: &mut ExternalSorter, pairs: &[(&str, &str)]| {
            for &(key, value) in pairs {
                sorter.push(key.into(), value.into()).unwrap();
            }
        };
        push(&mut sorter, &[("b", "1"), ("a", "1")]);
        sorter.spill().unwrap();
        push(&mut sorter, &[("b", "2"), ("c", "1"), ("c", "2")]);
        sorter.spill().unwrap();
        push(&mut sorter, &[("a", "2"), ("d", ""), ("d", "x"), ("d", "")]);
        assert_eq!(sorter.spilled_runs(), 2);
        let sorted: Vec<Pair> = sorter.finish().unwrap().map(|p| p.unwrap()).collect();
        let expected = [("a", "2"), ("b", "2"), ("c", "2"), ("d", "")]
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()));
        assert_eq!(sorted, expected);
    }

    #[test]
    fn an_altered_byte_in_a_run_fails_the_merge() {
        let dir = ::tempfile::tempdir().unwrap();
        let n = 3_000;
        for victim in [0, 3] {
            let (sorter, files) = spilled(dir.path(), encrypted_key(), n);
            let mut bytes = std::fs::read(&files[victim]).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x04;
            std::fs::write(&files[victim], bytes).unwrap();
            assert_merge_corrupt(sorter, n);
        }
    }

    #[test]
    fn a_truncated_run_fails_the_merge() {
        let dir = ::tempfile::tempdir().unwrap();
        let n = 3_000;
        for key in [encrypted_key(), Arc::new(TempFileKey::plain())] {
            let (sorter, files) = spilled(dir.path(), key, n);
            let len = std::fs::metadata(&files[1]).unwrap().len();
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&files[1])
                .unwrap();
            file.set_len(len - 10).unwrap();
            assert_merge_corrupt(sorter, n);
        }
    }

    #[test]
    fn spilled_runs_hold_no_plaintext() {
        let dir = ::tempfile::tempdir().unwrap();
        let marker = b"PLAINTEXT-MARKER";
        let mut sorter = ExternalSorter::new(dir.path().to_path_buf(), encrypted_key(), 4_096);
        for i in 0..2_000u32 {
            sorter
                .push([&marker[..], &i.to_be_bytes()].concat(), marker.to_vec())
                .unwrap();
        }
        assert!(sorter.spilled_runs() > 10);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(marker.len()).any(|w| w == marker));
        }
        assert_eq!(drain(sorter).0.len(), 2_000);
    }

    #[test]
    fn run_records_are_checked_when_decoded() {
        let path = Path::new("run");
        let mut record = Vec::new();
        encode_pair(b"key", b"value", &mut record);
        assert_eq!(
            decode_pair(&record, path).unwrap(),
            (b"key".to_vec(), b"value".to_vec())
        );
        for bad in [&record[..7], &record[..record.len() - 1], &[0xff; 8][..]] {
            assert!(matches!(decode_pair(bad, path), Err(Error::Corrupt { .. })));
        }
    }

    #[test]
    fn dropping_an_unfinished_sorter_removes_its_runs() {
        let dir = ::tempfile::tempdir().unwrap();
        let (sorter, files) = spilled(dir.path(), encrypted_key(), 1_000);
        assert!(files.iter().all(|f| f.exists()));
        drop(sorter);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn matches_a_btreemap_model(
            pairs in prop::collection::vec(
                (prop::collection::vec(0u8..4, 0..4), prop::collection::vec(any::<u8>(), 0..40)),
                0..300,
            ),
            budget in 0usize..2_000,
            encrypted in any::<bool>(),
        ) {
            let key = match encrypted {
                true => encrypted_key(),
                false => Arc::new(TempFileKey::plain()),
            };
            sort_and_check(key, budget, &pairs);
        }
    }
}
