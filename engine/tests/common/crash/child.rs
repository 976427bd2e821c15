//! The killed child: the test binary runs itself again, running only one test that does
//! nothing unless an environment variable (the test's child marker) is set.
//!
//! ```text
//!   parent                                        child
//!   ------                                        -----
//!   child_command(test, log) + the marker ──────▶ the test `test` runs; others return
//!   kill_child: poll every POLL                   Db::open (recovery), work,
//!     tick(); watch the events file               acknowledge in side files (acks.rs)
//!     at the kill moment: SIGKILL, wait ─────────▶ ✝
//!   check that the kill ended it, not an exit
//! ```
//!
//! Everything of one run lives in one temporary directory ([`RunDir`]), kept with its path
//! printed when a check fails.

use super::acks::{read_events, AckFile};
use super::workload::{cycle_ids, run_txn, Fate, Write};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use strongbox_engine::{Db, Options, Table};

/// How often the parent looks at the child and its events.
pub const POLL: Duration = Duration::from_millis(5);
/// How long the parent waits for an event before it calls the child stuck.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The lines of the child's log a failure shows.
const LOG_LINES: usize = 40;

/// The files of one run, all in one temporary directory.
pub struct RunDir {
    /// `None` once kept after a failure.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    pub db: PathBuf,
    pub keyfile: PathBuf,
    /// The last child's stdout and stderr.
    pub child_log: PathBuf,
}

impl RunDir {
    pub fn new() -> RunDir {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = dir.path().to_path_buf();
        RunDir {
            dir: Some(dir),
            db: root.join("db"),
            keyfile: root.join("keys.txt"),
            child_log: root.join("child.log"),
            root,
        }
    }

    /// The ids cycle `cycle` committed, one per line.
    pub fn commits(&self, cycle: u64) -> PathBuf {
        self.root.join(format!("commits-{cycle:05}.txt"))
    }

    /// The child's other acknowledgements in cycle `cycle`.
    pub fn events(&self, cycle: u64) -> PathBuf {
        self.root.join(format!("events-{cycle:05}.txt"))
    }

    /// Keeps the directory (not deleted on drop) and returns its path, for a run that
    /// reports a failure and goes on with a fresh directory.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.root.clone()
    }

    /// Keeps the directory and panics with `what` went wrong, how to replay it (`replay`,
    /// a setting such as `SEED=1`), where the files are and the child's last log lines.
    #[track_caller]
    pub fn fail(&mut self, what: &str, replay: &str) -> ! {
        let log = tail(&self.child_log, LOG_LINES);
        let kept = self.dir.take().map(|dir| dir.keep());
        panic!(
            "{what}\n\nreplay with {replay}; the database, key file, side files and child log \
             are kept in {}\n\nlast lines of the child's log:\n{log}",
            kept.map_or("(already kept)".into(), |p| p.display().to_string()),
        );
    }
}

/// A command running this test binary again, only the test `test`, with its output going
/// to `log`. The caller adds the child marker and the child's settings to its environment.
pub fn child_command(test: &str, log: &Path) -> std::io::Result<Command> {
    let log = File::create(log)?;
    let log_too = log.try_clone()?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_too);
    Ok(command)
}

/// A setting the parent gave the child.
#[track_caller]
pub fn child_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("the child needs {name}"))
}

/// The child's first step: opens (recovers) the database in `dir` and the tables `names`,
/// which the parent created.
pub fn open_in_child(dir: &Path, options: Options, names: &[&str]) -> (Db, Vec<Table>) {
    let db =
        Db::open(dir, options).unwrap_or_else(|e| panic!("child: Db::open (recovery) failed: {e}"));
    let tables = names
        .iter()
        .map(|name| db.table(name).expect("the parent created every table"))
        .collect();
    (db, tables)
}

/// When the parent kills the child.
pub enum KillAt {
    /// This long after the spawn.
    Delay(Duration),
    /// This long after the child first records an event of kind `event` in `events`.
    AfterEvent {
        events: PathBuf,
        event: &'static str,
        delay: Duration,
    },
}

/// Lets `child` run until `kill` says, calling `tick` every [`POLL`], then kills it and
/// checks that the kill is what ended it: a child that exits on its own has failed.
pub fn kill_child(
    mut child: Child,
    kill: &KillAt,
    mut tick: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let result = (|| {
        let spawned = Instant::now();
        let mut kill_at = match kill {
            KillAt::Delay(delay) => Some(spawned + *delay),
            KillAt::AfterEvent { .. } => None,
        };
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| format!("try_wait failed: {e}"))?
            {
                return Err(format!(
                    "the child exited on its own ({status}) before it was killed"
                ));
            }
            tick()?;
            let now = Instant::now();
            if let (
                None,
                KillAt::AfterEvent {
                    events,
                    event,
                    delay,
                },
            ) = (kill_at, kill)
            {
                if read_events(events)?.iter().any(|e| e[0] == *event) {
                    kill_at = Some(now + *delay);
                } else if now - spawned > EVENT_TIMEOUT {
                    return Err(format!("the child never reported {event:?}"));
                }
            }
            if kill_at.is_some_and(|at| now >= at) {
                return Ok(());
            }
            thread::sleep(POLL.min(kill_at.map_or(POLL, |at| at - now)));
        }
    })();
    if child.try_wait().ok().flatten().is_none() {
        child.kill().map_err(|e| format!("kill failed: {e}"))?;
    }
    let status = child.wait().map_err(|e| format!("wait failed: {e}"))?;
    result?;
    if killed(status) {
        Ok(())
    } else {
        Err(format!(
            "the child exited on its own ({status}) just before it was killed"
        ))
    }
}

#[cfg(unix)]
fn killed(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

#[cfg(not(unix))]
fn killed(status: ExitStatus) -> bool {
    !status.success()
}

/// The child's writer: runs the transactions of `cycle` in order, `writes(id)` each, and
/// records every commit in `commits` once it returned, until the kill (or the cycle's
/// ids run out). A failure ends the process at once, so the parent sees it exit before
/// the kill, even when this runs on a thread of its own.
pub fn write_until_killed(
    db: &Db,
    tables: &[Table],
    cycle: u64,
    writes: impl Fn(u64) -> Vec<Write>,
    commits: &mut AckFile,
) {
    for id in cycle_ids(cycle) {
        match run_txn(db, tables, id, &writes(id)) {
            Ok(Fate::Commit) => commits.record_commit(id),
            Ok(_) => {}
            Err(e) => {
                eprintln!("child: txn {id} failed: {e}");
                std::process::exit(3);
            }
        }
    }
}

/// The last `lines` lines of a text file (for showing the child's log).
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
