//! The acknowledgement protocol between a child that is killed and the parent that checks
//! what survived.
//!
//! The child appends one line to a side file right after the call the line reports returned
//! (a commit, a rotation, an ALTER), so a line in the file proves the call had returned
//! before the kill. The rules:
//!
//! 1. A line is written only after its call returned, in one `write` of the whole line
//!    with its newline.
//! 2. A last line without its newline was cut by the kill and counts as not written.
//! 3. A commit's line is `{id:020}`; the commits file of cycle `c` therefore lists a prefix
//!    of [`committing_ids`]`(c)` ([`read_commits`] checks that it does).
//! 4. Other events are words separated by spaces, the first naming the kind
//!    ([`read_events`]).
//!
//! A `SIGKILL` keeps everything a `write` handed to the kernel, so no `fsync` is needed;
//! a side file opened `durable` syncs every line anyway.

use super::workload::committing_ids;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The child's end: a side file it appends acknowledgements to.
pub struct AckFile {
    file: File,
    path: PathBuf,
    /// `sync_all` after every line.
    durable: bool,
}

impl AckFile {
    pub fn open(path: &Path, durable: bool) -> AckFile {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open the side file {}: {e}", path.display()));
        AckFile {
            file,
            path: path.to_path_buf(),
            durable,
        }
    }

    /// Appends `line` (rule 1).
    pub fn record(&mut self, line: &str) {
        self.file
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| {
                if self.durable {
                    self.file.sync_all()
                } else {
                    Ok(())
                }
            })
            .unwrap_or_else(|e| panic!("record {line:?} in {}: {e}", self.path.display()));
    }

    /// Appends the line of transaction `id`'s commit (rule 3).
    pub fn record_commit(&mut self, id: u64) {
        self.record(&format!("{id:020}"));
    }
}

/// The text of a side file up to its last newline ("" when it does not exist; rule 2).
pub fn complete_lines(path: &Path) -> Result<String, String> {
    let mut text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    text.truncate(text.rfind('\n').map_or(0, |end| end + 1));
    Ok(text)
}

/// The ids in a commits file, checked to be the first committing ids of `cycle` in order.
pub fn read_commits(path: &Path, cycle: u64) -> Result<Vec<u64>, String> {
    let recorded: Vec<u64> = complete_lines(path)?
        .lines()
        .map(|line| {
            line.parse()
                .map_err(|_| format!("side file {}: bad line {line:?}", path.display()))
        })
        .collect::<Result<_, _>>()?;
    let expected: Vec<u64> = committing_ids(cycle).take(recorded.len()).collect();
    if recorded != expected {
        return Err(format!(
            "side file {} is not the first {} committing ids of cycle {cycle}: {:?}",
            path.display(),
            recorded.len(),
            recorded
        ));
    }
    Ok(recorded)
}

/// The complete lines of an events file, split into words (rule 4).
pub fn read_events(path: &Path) -> Result<Vec<Vec<String>>, String> {
    Ok(complete_lines(path)?
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|words| !words.is_empty())
        .collect())
}
