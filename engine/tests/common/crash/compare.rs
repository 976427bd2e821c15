//! What a recovery may find, and what to say when it finds something else.
//!
//! [`Outcomes`] holds the two states the contract allows (module doc of `crash`): R, the
//! model after every acknowledged commit, and R + P, that plus the pending commit whose
//! acknowledgement the crash may have swallowed. [`Outcomes::check_tables`] scans every
//! table and names the state found; on a mismatch it explains, key by key and naming the
//! transaction behind each value, which rule broke:
//!
//! | verdict   | meaning                                                          |
//! |-----------|------------------------------------------------------------------|
//! | MISSING   | an acknowledged transaction's value is absent or overwritten     |
//! | PARTIAL   | some but not all of the pending transaction's writes are visible |
//! | intruders | values of rolled-back, dropped or never-committed transactions   |
//! | stale     | none of those: an older or deleted value came back               |
//!
//! and where `a/counter` (written by every transaction) points, against both states.

use super::acks::read_commits;
use super::workload::{
    committed_in, committing_ids, fate, writer_of, Fate, Layout, Model, Tables, Write,
    IDS_PER_CYCLE,
};
use crate::common::Short;
use std::collections::{BTreeMap, BTreeSet};
use strongbox_engine::{Db, Table};

/// Key lines a mismatch shows; the rest are counted.
const SHOWN: usize = 20;

/// Opens the tables `names`, in order.
pub fn open_tables(db: &Db, names: &[&str]) -> Result<Vec<Table>, String> {
    names
        .iter()
        .map(|name| db.table(name).map_err(|e| format!("table {name:?}: {e}")))
        .collect()
}

/// Every entry of every table. A failed scan also says whether `Db::verify` finds the
/// damage.
pub fn scan_all(db: &Db, tables: &[Table]) -> Result<Tables, String> {
    let scan = || {
        let mut found: Tables = vec![BTreeMap::new(); tables.len()];
        for (i, table) in tables.iter().enumerate() {
            let name = table.name();
            let scan = db
                .range(table, .., false)
                .map_err(|e| format!("a scan of table {name:?} failed to start: {e}"))?;
            for entry in scan {
                let (key, value) = entry.map_err(|e| {
                    format!(
                        "a scan of table {name:?} failed after {} entries: {e}",
                        found[i].len()
                    )
                })?;
                found[i].insert(key, value);
            }
        }
        Ok(found)
    };
    scan().map_err(|problem: String| match db.verify() {
        Ok(_) => format!("{problem} (yet verify() passes)"),
        Err(e) => format!("{problem}; verify() fails too: {e}"),
    })
}

/// The two states a recovery may find (module doc).
pub struct Outcomes<'l> {
    layout: &'l Layout,
    /// The cycle that crashed (0 where a test has no cycles).
    cycle: u64,
    /// What earlier cycles committed.
    earlier: BTreeMap<u64, u64>,
    /// The transactions acknowledged in this cycle, in order.
    acked: Vec<u64>,
    /// The model after them.
    without: Model,
    /// The pending transaction and the model with it.
    with: Option<(u64, Model)>,
}

impl<'l> Outcomes<'l> {
    /// `model` (the state before `cycle`) plus the transactions `acked` in it, and that plus
    /// `pending`; `writes(id)` are the writes of transaction `id`.
    pub fn new(
        layout: &'l Layout,
        model: &Model,
        cycle: u64,
        acked: Vec<u64>,
        pending: Option<u64>,
        writes: impl Fn(u64) -> Vec<Write>,
    ) -> Outcomes<'l> {
        let mut without = model.clone();
        for &id in &acked {
            without.apply(id, writes(id));
        }
        let with = pending.map(|id| {
            let mut with = without.clone();
            with.apply(id, writes(id));
            (id, with)
        });
        Outcomes {
            layout,
            cycle,
            earlier: model.last_committed.clone(),
            acked,
            without,
            with,
        }
    }

    /// The outcomes after the kill of `cycle`: the commits the child recorded in
    /// `commits`, and pending the next committing transaction, whose commit may have
    /// returned just before the kill, unrecorded.
    pub fn after_kill(
        layout: &'l Layout,
        model: &Model,
        cycle: u64,
        commits: &std::path::Path,
        writes: impl Fn(u64) -> Vec<Write>,
    ) -> Result<Outcomes<'l>, String> {
        let recorded = read_commits(commits, cycle)?;
        let pending = committing_ids(cycle)
            .nth(recorded.len())
            .expect("a cycle has more ids than any run commits");
        Ok(Outcomes::new(
            layout,
            model,
            cycle,
            recorded,
            Some(pending),
            writes,
        ))
    }

    /// How many transactions were acknowledged.
    pub fn acked(&self) -> usize {
        self.acked.len()
    }

    /// Scans every table: `Ok(true)` if they hold the state with the pending transaction,
    /// `Ok(false)` if the one without, and otherwise an explanation.
    pub fn check_tables(&self, db: &Db, tables: &[Table]) -> Result<bool, String> {
        let found = scan_all(db, tables)?;
        if found == self.without.tables {
            Ok(false)
        } else if self
            .with
            .as_ref()
            .is_some_and(|(_, with)| with.tables == found)
        {
            Ok(true)
        } else {
            Err(self.explain(&found))
        }
    }

    /// The state found: with the pending transaction if `pending_present`.
    pub fn recovered(&self, pending_present: bool) -> &Model {
        match &self.with {
            Some((_, with)) if pending_present => with,
            _ => &self.without,
        }
    }

    pub fn into_recovered(self, pending_present: bool) -> Model {
        match self.with {
            Some((_, with)) if pending_present => with,
            _ => self.without,
        }
    }

    /// `get` agrees with the recovered state for every key of either allowed state (so
    /// also for the keys the pending transaction would have written or deleted).
    pub fn check_point_reads(
        &self,
        db: &Db,
        tables: &[Table],
        pending_present: bool,
    ) -> Result<(), String> {
        let keys: BTreeSet<(usize, &[u8])> = std::iter::once(&self.without)
            .chain(self.with.as_ref().map(|(_, with)| with))
            .flat_map(|model| {
                model
                    .tables
                    .iter()
                    .enumerate()
                    .flat_map(|(i, keys)| keys.keys().map(move |key| (i, key.as_slice())))
            })
            .collect();
        let expected = &self.recovered(pending_present).tables;
        check_gets(self.layout, db, tables, expected, keys)
    }

    /// What transaction `id` is, for explaining a mismatch.
    fn role(&self, id: u64) -> String {
        let pending = self.with.as_ref().map(|(id, _)| *id);
        let what = if committed_in(&self.earlier, id) {
            "committed in an earlier cycle"
        } else if self.acked.contains(&id) {
            "ACKNOWLEDGED"
        } else if pending == Some(id) {
            "pending: its commit may be durable unacknowledged"
        } else if fate(id) == Fate::Rollback {
            "ROLLED BACK"
        } else if fate(id) == Fate::Drop {
            "DROPPED without commit"
        } else if id / IDS_PER_CYCLE < self.cycle {
            "NOT COMMITTED: an earlier cycle's pending commit that was absent after its crash"
        } else {
            "NEVER COMMITTED"
        };
        format!("txn {id}, {what}")
    }

    /// How `found` differs from the acknowledged state, key by key, and which rule of the
    /// contract that breaks.
    fn explain(&self, found: &Tables) -> String {
        let without = &self.without.tables;
        let role = |id| self.role(id);
        let differing = differences(found, without);
        let lines = diff_lines(self.layout, found, without, &role);

        let mut verdicts = Vec::new();
        let missing: BTreeSet<u64> = without
            .iter()
            .zip(found)
            .flat_map(|(expected, found)| {
                expected
                    .iter()
                    .filter(move |(key, value)| found.get(*key) != Some(*value))
                    .filter_map(|(_, value)| writer_of(value))
            })
            .collect();
        if !missing.is_empty() {
            let first: Vec<u64> = missing.iter().take(8).copied().collect();
            verdicts.push(format!(
                "MISSING acknowledged txns (a value they wrote is absent or overwritten): {} \
                 of them, first {first:?}",
                missing.len(),
            ));
        }
        let mut headline_pending = String::new();
        if let Some((id, with)) = &self.with {
            let effective = differences(&with.tables, without);
            let visible = effective
                .iter()
                .filter(|&&(i, key)| found[i].get(key) == with.tables[i].get(key))
                .count();
            headline_pending = format!(
                " nor those plus pending txn {id} ({visible} of its {} effective writes \
                 visible)",
                effective.len()
            );
            if visible > 0 && visible < effective.len() {
                verdicts.push(format!(
                    "PARTIAL txn {id} (pending): {visible} of its {} effective writes are \
                     visible",
                    effective.len()
                ));
            }
        }
        let pending = self.with.as_ref().map(|(id, _)| *id);
        let intruders: BTreeSet<u64> = differing
            .iter()
            .filter_map(|&(i, key)| found[i].get(key).and_then(|v| writer_of(v)))
            .filter(|&id| !self.without.committed(id) && pending != Some(id))
            .collect();
        if !intruders.is_empty() {
            let list: Vec<String> = intruders.iter().map(|&id| self.role(id)).collect();
            verdicts.push(format!(
                "values of txns that must not be visible: {}",
                list.join("; ")
            ));
        }
        if verdicts.is_empty() {
            verdicts.push("stale or deleted values came back (see the keys below)".into());
        }
        let counter = |tables: &Tables| match tables[0].get(&b"counter"[..]).map(|v| writer_of(v)) {
            None => "nothing".to_string(),
            Some(None) => "a value no txn wrote".to_string(),
            Some(Some(id)) => format!("txn {id}"),
        };
        verdicts.push(format!(
            "{}/counter holds {}; expected {} (the acknowledged state){}",
            self.layout.tables[0],
            counter(found),
            counter(without),
            self.with
                .as_ref()
                .map_or(String::new(), |(_, with)| format!(
                    " or {} (with the pending txn)",
                    counter(&with.tables)
                )),
        ));
        let in_cycle = match self.cycle {
            0 => String::new(),
            cycle => format!(" in cycle {cycle}"),
        };
        format!(
            "after recovery the tables match neither the {} txns acknowledged{in_cycle} \
             (the last {}){headline_pending}.\n{}\n{} keys differ from the acknowledged \
             state:\n{}",
            self.acked.len(),
            self.acked.last().map_or("none".into(), u64::to_string),
            verdicts.join("\n"),
            differing.len(),
            lines.join("\n"),
        )
    }
}

/// `get` returns what `expected` holds for each of `keys` (table index, key).
pub fn check_gets<'k>(
    layout: &Layout,
    db: &Db,
    tables: &[Table],
    expected: &Tables,
    keys: impl IntoIterator<Item = (usize, &'k [u8])>,
) -> Result<(), String> {
    for (i, key) in keys {
        let got = db
            .get(&tables[i], key)
            .map_err(|e| format!("get {}: {e}", layout.name(i, key)))?;
        let want = expected[i].get(key);
        if got.as_ref() != want {
            let txn = |id| format!("txn {id}");
            return Err(format!(
                "get {} returned {} but the scan found {}",
                layout.name(i, key),
                describe(got.as_ref(), &txn),
                describe(want, &txn),
            ));
        }
    }
    Ok(())
}

/// The keys (table index, key) whose value or presence differs between `a` and `b`.
pub fn differences<'t>(a: &'t Tables, b: &'t Tables) -> Vec<(usize, &'t Vec<u8>)> {
    let mut out = Vec::new();
    for (i, (a, b)) in a.iter().zip(b).enumerate() {
        let keys: BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
        out.extend(
            keys.into_iter()
                .filter(|key| a.get(*key) != b.get(*key))
                .map(|key| (i, key)),
        );
    }
    out
}

/// One line per key where `found` differs from `expected` (the first [`SHOWN`], then a
/// count), each value described by `role` of its writer.
pub fn diff_lines(
    layout: &Layout,
    found: &Tables,
    expected: &Tables,
    role: &dyn Fn(u64) -> String,
) -> Vec<String> {
    let differing = differences(found, expected);
    let mut lines: Vec<String> = differing
        .iter()
        .take(SHOWN)
        .map(|&(i, key)| {
            format!(
                "  {}: expected {}, found {}",
                layout.name(i, key),
                describe(expected[i].get(key), role),
                describe(found[i].get(key), role)
            )
        })
        .collect();
    if differing.len() > SHOWN {
        lines.push(format!("  … and {} more", differing.len() - SHOWN));
    }
    lines
}

/// A value as its writer: `role` says what the transaction is.
pub fn describe(value: Option<&Vec<u8>>, role: &dyn Fn(u64) -> String) -> String {
    match value {
        None => "absent".to_string(),
        Some(value) => match writer_of(value) {
            Some(id) => format!("{} bytes from {}", value.len(), role(id)),
            None => format!("a value no txn wrote: {:?}", Short(value)),
        },
    }
}
