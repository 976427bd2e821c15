//! The crash contract for several writers at once: each writer thread of a killed child
//! runs its own *stream* of transactions on keys no other writer touches, so each stream
//! may leave its own pending commit, and those are independent.
//!
//! ```text
//!   stream s = cycle · writers + w        ids of s: s · IDS_PER_CYCLE + n, n = 1, 2, …
//!   writer w: keys "w{w}/…" only          its commits file lists a prefix of committing_ids(s)
//! ```
//!
//! With R the model after every acknowledged commit of every stream and P₁ … Pₖ the next
//! committing transaction of each stream (whose commit may have become durable
//! unacknowledged), a recovery must find R plus any subset of the Pᵢ, each Pᵢ all or
//! nothing ([`StreamOutcomes::check_tables`]). Since streams write disjoint keys, each Pᵢ
//! is judged on its own keys: all of its effective writes visible (present), none
//! (absent), or some (PARTIAL, a failure); everything else must equal R.

use super::acks::read_commits;
use super::compare::{check_gets, diff_lines, differences, scan_all};
use super::workload::{committing_ids, fate, Fate, Layout, Model, Write, IDS_PER_CYCLE};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use strongbox_engine::{Db, Table};

/// One stream's acknowledged commits in the cycle that crashed, and its pending one.
struct Stream {
    acked: Vec<u64>,
    pending: u64,
    /// The pending transaction's effective writes: (table, key) → value (`None`: deleted),
    /// only where that differs from the acknowledged state.
    effective: BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>,
    pending_writes: Vec<Write>,
}

/// What a recovery may find after a kill of writers running several streams.
pub struct StreamOutcomes<'l> {
    layout: &'l Layout,
    /// What committed before the cycle.
    earlier: BTreeMap<u64, u64>,
    streams: Vec<Stream>,
    /// The model after every acknowledged commit (R).
    without: Model,
}

/// What [`StreamOutcomes::check_tables`] found.
pub struct Recovered {
    /// R plus the pending transactions found present.
    pub model: Model,
    pub acked: u64,
    pub pending_present: u64,
    pub pending_absent: u64,
}

impl<'l> StreamOutcomes<'l> {
    /// `model` (the state before the cycle) plus the commits each stream recorded:
    /// `streams` lists (stream number, its commits file); `writes(id)` are the writes of
    /// transaction `id`.
    pub fn after_kill(
        layout: &'l Layout,
        model: &Model,
        streams: &[(u64, &Path)],
        writes: impl Fn(u64) -> Vec<Write>,
    ) -> Result<StreamOutcomes<'l>, String> {
        let mut without = model.clone();
        let mut recorded = Vec::new();
        for &(stream, path) in streams {
            let acked = read_commits(path, stream)?;
            for &id in &acked {
                without.apply(id, writes(id));
            }
            let pending = committing_ids(stream)
                .nth(acked.len())
                .expect("a stream has more ids than any run commits");
            recorded.push((acked, pending));
        }
        let streams = recorded
            .into_iter()
            .map(|(acked, pending)| {
                let pending_writes = writes(pending);
                let mut after: BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
                for write in &pending_writes {
                    after.insert((write.table, write.key.clone()), write.value.clone());
                }
                after.retain(|(table, key), value| {
                    without.tables[*table].get(key) != value.as_ref()
                });
                Stream {
                    acked,
                    pending,
                    effective: after,
                    pending_writes,
                }
            })
            .collect();
        Ok(StreamOutcomes {
            layout,
            earlier: model.last_committed.clone(),
            streams,
            without,
        })
    }

    /// Scans every table and checks it against R plus any subset of the pending
    /// transactions (module doc); returns the state found, or an explanation.
    pub fn check_tables(&self, db: &Db, tables: &[Table]) -> Result<Recovered, String> {
        let found = scan_all(db, tables)?;
        let mut recovered = Recovered {
            model: self.without.clone(),
            acked: self.streams.iter().map(|s| s.acked.len() as u64).sum(),
            pending_present: 0,
            pending_absent: 0,
        };
        let mut partial = Vec::new();
        for stream in &self.streams {
            let visible = stream
                .effective
                .iter()
                .filter(|((table, key), value)| found[*table].get(key) == value.as_ref())
                .count();
            if visible == stream.effective.len() && visible > 0 {
                recovered
                    .model
                    .apply(stream.pending, stream.pending_writes.clone());
                recovered.pending_present += 1;
            } else if visible == 0 {
                recovered.pending_absent += 1;
            } else {
                partial.push(format!(
                    "PARTIAL txn {} (pending): {visible} of its {} effective writes are visible",
                    stream.pending,
                    stream.effective.len()
                ));
            }
        }
        if partial.is_empty() && found == recovered.model.tables {
            return Ok(recovered);
        }
        let expected = &recovered.model.tables;
        let role = |id| self.role(id);
        let lines = diff_lines(self.layout, &found, expected, &role);
        Err(format!(
            "after recovery the tables match no allowed state (every acknowledged commit of \
             the {} streams, plus each pending commit all or nothing).\n{}{} keys differ \
             from the acknowledged state plus the pending commits found whole:\n{}",
            self.streams.len(),
            partial
                .iter()
                .map(|line| format!("{line}\n"))
                .collect::<String>(),
            differences(&found, expected).len(),
            lines.join("\n")
        ))
    }

    /// `get` agrees with `recovered` for `extra` keys and every key a pending transaction
    /// wrote.
    pub fn check_point_reads<'k>(
        &'k self,
        db: &Db,
        tables: &[Table],
        recovered: &Model,
        extra: impl IntoIterator<Item = (usize, &'k [u8])>,
    ) -> Result<(), String> {
        let keys: BTreeSet<(usize, &[u8])> = self
            .streams
            .iter()
            .flat_map(|s| s.pending_writes.iter())
            .map(|w| (w.table, w.key.as_slice()))
            .chain(extra)
            .collect();
        check_gets(self.layout, db, tables, &recovered.tables, keys)
    }

    /// What transaction `id` is, for explaining a mismatch.
    fn role(&self, id: u64) -> String {
        let stream = id / IDS_PER_CYCLE;
        let what = if super::workload::committed_in(&self.earlier, id) {
            "committed in an earlier cycle"
        } else if self.streams.iter().any(|s| s.acked.contains(&id)) {
            "ACKNOWLEDGED"
        } else if self.streams.iter().any(|s| s.pending == id) {
            "pending: its commit may be durable unacknowledged"
        } else if fate(id) == Fate::Rollback {
            "ROLLED BACK"
        } else if fate(id) == Fate::Drop {
            "DROPPED without commit"
        } else if self.earlier.contains_key(&stream) {
            "NOT COMMITTED: an earlier cycle's pending commit that was absent after its crash"
        } else {
            "NEVER COMMITTED"
        };
        format!("txn {id} (stream {stream}), {what}")
    }
}
