//! The real `strongbox` binary under libfiu: IO faults injected below the project's own code,
//! in the C library calls Rust's `std` makes, rather than through the engine's `Vfs` trait.
//!
//! `fiu-run -x` preloads libfiu's POSIX wrappers; `-c 'enable name=posix/io/sync/fdatasync,
//! failinfo=5'` makes every `fdatasync` fail with `EIO`, `enable_random …,probability=P`
//! a fraction of them. The engine's files go through `pwrite64` (`write_all_at`), `pread64`
//! (`read_exact_at`) and `fdatasync` (`sync_data`); `fsync` syncs directories and the key
//! file, `read` reads the key file and stdin. Each [`CASES`] entry is one fault setting;
//! under it a fixed sequence of commands ([`Op`]) runs — puts of small values, a value of
//! several pages, a put to a plain table, an overwrite, a delete, a bulk load of 300 keys
//! from stdin, a get, a scan, `verify`, an online `table alter --wait` and a
//! `keys rotate --policy rewrap` — and every command must end one of two ways:
//!
//! * **failed cleanly:** exit status 1, one `strongbox: …` line on stderr naming the
//!   failure (`Input/output error`, `No space left on device`, or their `os error` codes);
//! * **succeeded:** exit status 0, with correct output (a get or scan under faults returns
//!   what the model holds — never a wrong value or a missing key).
//!
//! Anything else is **bad**: a panic, a signal, another status, an error that does not name
//! the fault, wrong output. After each case, without faults, `strongbox verify` must pass
//! and every table must hold exactly the model: every write acknowledged by exit 0 present,
//! and each failed write all there or not at all (its outcome is unknown to the caller:
//! after a failed `fdatasync` the bytes may still be in the page cache, and a reopen can
//! see them). A deterministic case that never fails a command means libfiu intercepted
//! nothing, and is bad too: that proves the faults really fire. (A deterministic fault
//! fails every command at open — the lock file, the key file, page 0 — so those cases run
//! only [`SHORT_OPS`]; the random ones reach the redo log, page writes and syncs.)
//!
//! One more case switches the fault on in a live process ([`fsync_failure_in_a_running_server`]):
//! `strongbox serve` under `fiu-run -f`, `fiu-ctrl` enabling failing `fdatasync` after 20
//! acknowledged `SET`s. The `SET` that hits it must get an error naming the failure, later
//! `SET`s must keep failing after the fault is off again (no carrying on after a failed
//! fsync), and after a restart `verify` passes and the 20 `SET`s are there.
//!
//! Not covered: `write(2)`. libfiu cannot pick a file descriptor, so a failing `write` also
//! fails the binary's own stderr (and Rust's `eprintln!` panics when stderr cannot be
//! written); the engine writes its files only with `pwrite`.
//!
//! The test needs `fiu-run` (`apt-get install fiu-utils`). Without it the test prints why and
//! passes, unless `STRONGBOX_REQUIRE_FIU=1` (set in CI), which makes it fail.
//! `STRONGBOX_FIU_ROUNDS=N` runs the random cases N times (default 1); `scripts/libfiu-check`
//! runs this test in release with the output shown.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_strongbox");

/// One fault setting: `fiu-run -c` commands.
struct Case {
    name: &'static str,
    enable: &'static [&'static str],
    /// Deterministic: at least one command must fail (else libfiu did not intercept).
    must_fail: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "fdatasync EIO",
        enable: &["enable name=posix/io/sync/fdatasync,failinfo=5"],
        must_fail: true,
    },
    Case {
        name: "fsync EIO",
        enable: &["enable name=posix/io/sync/fsync,failinfo=5"],
        must_fail: true,
    },
    Case {
        name: "pwrite ENOSPC",
        enable: &["enable name=posix/io/rw/pwrite,failinfo=28"],
        must_fail: true,
    },
    Case {
        name: "pread EIO",
        enable: &["enable name=posix/io/rw/pread,failinfo=5"],
        must_fail: true,
    },
    Case {
        name: "read EIO",
        enable: &["enable name=posix/io/rw/read,failinfo=5"],
        must_fail: true,
    },
    Case {
        name: "open EIO",
        enable: &["enable name=posix/io/oc/open,failinfo=5"],
        must_fail: true,
    },
    Case {
        name: "ftruncate ENOSPC",
        enable: &["enable name=posix/io/rw/ftruncate,failinfo=28"],
        must_fail: true,
    },
    Case {
        name: "fdatasync EIO p=0.3",
        enable: &["enable_random name=posix/io/sync/fdatasync,failinfo=5,probability=0.3"],
        must_fail: false,
    },
    Case {
        name: "pwrite ENOSPC p=0.1",
        enable: &["enable_random name=posix/io/rw/pwrite,failinfo=28,probability=0.1"],
        must_fail: false,
    },
    Case {
        name: "pread EIO p=0.1",
        enable: &["enable_random name=posix/io/rw/pread,failinfo=5,probability=0.1"],
        must_fail: false,
    },
    Case {
        name: "short pwrite p=0.5",
        enable: &["enable_random name=posix/io/rw/pwrite/reduce,probability=0.5"],
        must_fail: false,
    },
    Case {
        name: "short pread p=0.5",
        enable: &["enable_random name=posix/io/rw/pread/reduce,probability=0.5"],
        must_fail: false,
    },
    Case {
        name: "mixed p=0.05",
        enable: &[
            "enable_random name=posix/io/rw/pwrite,failinfo=28,probability=0.05",
            "enable_random name=posix/io/rw/pread,failinfo=5,probability=0.05",
            "enable_random name=posix/io/sync/fdatasync,failinfo=5,probability=0.05",
            "enable_random name=posix/io/sync/fsync,failinfo=5,probability=0.05",
        ],
        must_fail: false,
    },
];

/// How a command's stderr may name the injected fault.
const FAULT_WORDS: [&str; 4] = [
    "Input/output error",
    "os error 5",
    "No space left on device",
    "os error 28",
];

/// The commands of [`ops`] a deterministic case runs: a put, a bulk load, `verify` and a
/// key rotation (the only command that calls `fsync` on an existing database: the key
/// file's atomic rewrite).
const SHORT_OPS: [usize; 4] = [0, 5, 9, 11];

const TABLES: [&str; 3] = ["enc", "k5", "plain"];
const SEEDED: usize = 200;

/// A key's value per table: the model of what the database holds.
type Contents = BTreeMap<(usize, Vec<u8>), Vec<u8>>;

/// Key-value pairs, as `kv scan` prints them.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A write whose command failed: its effect is all there or not at all.
type Unsure = Vec<((usize, Vec<u8>), Option<Vec<u8>>)>;

/// One command of a case, and what it writes or expects.
enum Op {
    /// Writes (`None` deletes) made by a command that either commits all or fails.
    Write {
        args: Vec<String>,
        stdin: Vec<u8>,
        writes: Unsure,
    },
    /// Reads: exit 0 must print `expect`; `None` means "whatever the model holds", checked
    /// against the model.
    Read {
        args: Vec<String>,
        table: Option<usize>,
        key: Option<Vec<u8>>,
    },
    /// Changes no data (verify, ALTER, rotation): only exit status and stderr are judged.
    Other { args: Vec<String> },
}

#[derive(Debug, Default)]
struct Counts {
    cases: usize,
    commands: usize,
    failed_cleanly: usize,
    succeeded: usize,
    bad: usize,
}

struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    fiu_run: PathBuf,
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Sandbox {
    fn run(&self, enable: &[&str], args: &[String], stdin: &[u8]) -> Run {
        self.run_at(&self.data, enable, args, stdin)
    }

    /// [`Sandbox::run`] on the database in `data`.
    fn run_at(&self, data: &Path, enable: &[&str], args: &[String], stdin: &[u8]) -> Run {
        let mut command = if enable.is_empty() {
            Command::new(BIN)
        } else {
            let mut command = Command::new(&self.fiu_run);
            command.args(["-x", "-f", ""]);
            for e in enable {
                command.args(["-c", e]);
            }
            command.arg(BIN);
            command
        };
        command
            .arg("--data")
            .arg(data)
            .arg("--keyfile")
            .arg(self.root.join("keys.txt"))
            .args(args)
            .current_dir(&self.root)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn strongbox");
        // From a thread, so a large input cannot block against the child's output; a child
        // that fails before reading its input closes the pipe, which is no error here.
        let mut pipe = child.stdin.take().expect("stdin");
        let input = stdin.to_vec();
        let feeder = std::thread::spawn(move || drop(pipe.write_all(&input)));
        let output = child.wait_with_output().expect("wait for strongbox");
        feeder.join().expect("the stdin thread");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs without faults and expects exit 0.
    fn ok(&self, args: &[&str], stdin: &[u8]) -> Run {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let run = self.run(&[], &args, stdin);
        assert_eq!(run.code, Some(0), "strongbox {args:?} failed: {run:?}");
        run
    }

    /// Every entry of table `table`, read without faults.
    fn scan(&self, table: usize) -> Result<Entries, String> {
        let args = vec![
            "kv".to_string(),
            "scan".into(),
            TABLES[table].into(),
            "--hex".into(),
        ];
        let run = self.run(&[], &args, b"");
        if run.code != Some(0) {
            return Err(format!("kv scan {} failed: {run:?}", TABLES[table]));
        }
        parse_scan(&run.stdout)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn parse_scan(stdout: &str) -> Result<Entries, String> {
    stdout
        .lines()
        .map(|line| {
            let (k, v) = line
                .split_once('\t')
                .ok_or_else(|| format!("bad scan line {line:?}"))?;
            Ok((
                unhex(k).ok_or_else(|| format!("bad hex {k:?}"))?,
                unhex(v).ok_or_else(|| format!("bad hex {v:?}"))?,
            ))
        })
        .collect()
}

/// `len` bytes of a value that names its key and case, so a misplaced one shows.
fn value(tag: &str, len: usize) -> Vec<u8> {
    let mut v = format!("{tag}|").into_bytes();
    let mut x: u32 = tag
        .bytes()
        .fold(7, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

fn seed_key(i: usize) -> Vec<u8> {
    format!("seed/{i:04}").into_bytes()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// The commands of case number `c` (its keys are its own; `round` varies the ALTER).
fn ops(c: usize) -> Vec<Op> {
    let put = |table: usize, key: Vec<u8>, value: Vec<u8>| Op::Write {
        args: strings(&[
            "kv",
            "put",
            TABLES[table],
            &hex(&key),
            &hex(&value),
            "--hex",
        ]),
        stdin: Vec::new(),
        writes: vec![((table, key), Some(value))],
    };
    let small = format!("c{c}/small").into_bytes();
    let large = format!("c{c}/large").into_bytes();
    let plain = format!("c{c}/plain").into_bytes();
    let overwritten = seed_key(2 * c % SEEDED);
    let deleted = seed_key((2 * c + 1) % SEEDED);
    let loaded: Vec<(Vec<u8>, Vec<u8>)> = (0..300)
        .map(|i| {
            let key = format!("c{c}/load/{i:03}");
            let v = value(&key, 40 + i % 200);
            (key.into_bytes(), v)
        })
        .collect();
    let tsv: String = loaded
        .iter()
        .map(|(k, v)| format!("{}\t{}\n", hex(k), hex(v)))
        .collect();
    let alter_key = if c.is_multiple_of(2) { "2" } else { "5" };
    vec![
        put(0, small.clone(), value(&format!("c{c}/small"), 60)),
        put(1, large.clone(), value(&format!("c{c}/large"), 20_000)),
        put(2, plain, value(&format!("c{c}/plain"), 300)),
        put(0, overwritten, value(&format!("c{c}/over"), 120)),
        Op::Write {
            args: strings(&["kv", "del", TABLES[0], &hex(&deleted), "--hex"]),
            stdin: Vec::new(),
            writes: vec![((0, deleted), None)],
        },
        Op::Write {
            args: strings(&["kv", "load", TABLES[1], "-", "--hex"]),
            stdin: tsv.into_bytes(),
            writes: loaded.into_iter().map(|(k, v)| ((1, k), Some(v))).collect(),
        },
        Op::Read {
            args: strings(&["kv", "get", TABLES[0], &hex(&small), "--hex"]),
            table: Some(0),
            key: Some(small),
        },
        Op::Read {
            args: strings(&["kv", "get", TABLES[1], &hex(&large), "--hex"]),
            table: Some(1),
            key: Some(large),
        },
        Op::Read {
            args: strings(&["kv", "scan", TABLES[2], "--hex"]),
            table: Some(2),
            key: None,
        },
        Op::Other {
            args: strings(&["verify"]),
        },
        Op::Other {
            args: strings(&["table", "alter", TABLES[1], "--key-id", alter_key, "--wait"]),
        },
        Op::Other {
            args: strings(&["keys", "rotate", "--id", "1", "--policy", "rewrap"]),
        },
    ]
}

/// Where `fiu-run` is, if installed.
fn find_fiu_run() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("fiu-run"))
        .find(|p| p.is_file())
}

#[test]
fn cli_survives_io_faults_injected_by_libfiu() {
    let Some(fiu_run) = find_fiu_run() else {
        if std::env::var("STRONGBOX_REQUIRE_FIU").as_deref() == Ok("1") {
            panic!(
                "fiu-run is not installed but STRONGBOX_REQUIRE_FIU=1: apt-get install fiu-utils"
            );
        }
        println!("libfiu: SKIPPED: fiu-run not found (apt-get install fiu-utils); set STRONGBOX_REQUIRE_FIU=1 to make this a failure");
        return;
    };
    let rounds: usize = std::env::var("STRONGBOX_FIU_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("STRONGBOX_FIU_ROUNDS is a number"))
        .unwrap_or(1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sb = Sandbox {
        root: dir.path().to_path_buf(),
        data: dir.path().join("data"),
        _dir: dir,
        fiu_run,
    };
    let mut model = set_up(&sb);

    let mut counts = Counts::default();
    let mut problems: Vec<String> = Vec::new();
    let mut seen_errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut c = 0;
    for round in 0..rounds {
        for case in CASES {
            if round > 0 && case.must_fail {
                continue;
            }
            c += 1;
            counts.cases += 1;
            let before = counts.failed_cleanly;
            let mut unsure: Vec<Unsure> = Vec::new();
            // A deterministic fault fails every command the same way at open (the lock
            // file, the key file, page 0): a few commands show it.
            let ops = ops(c)
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !case.must_fail || SHORT_OPS.contains(i))
                .map(|(_, op)| op);
            for op in ops {
                counts.commands += 1;
                let (args, stdin): (&[String], &[u8]) = match &op {
                    Op::Write { args, stdin, .. } => (args, stdin),
                    Op::Read { args, .. } | Op::Other { args } => (args, b""),
                };
                let run = sb.run(case.enable, args, stdin);
                let label = format!("case {c} [{}] strongbox {}", case.name, short(args));
                match judge(&run) {
                    Verdict::Succeeded => {
                        counts.succeeded += 1;
                        match op {
                            Op::Write { writes, .. } => apply(&mut model, writes),
                            Op::Read { table, key, .. } => {
                                if let Err(e) = check_read(&model, &unsure, &run, table, key) {
                                    counts.bad += 1;
                                    problems.push(format!("{label}: exit 0 but {e}"));
                                }
                            }
                            Op::Other { .. } => {}
                        }
                    }
                    Verdict::NotFound => match op {
                        Op::Read {
                            table: Some(t),
                            key: Some(key),
                            ..
                        } if may_be_absent(&model, &unsure, t, &key) => counts.succeeded += 1,
                        _ => {
                            counts.bad += 1;
                            problems.push(format!("{label}: exit 2 (no such key): {run:?}"));
                        }
                    },
                    Verdict::FailedCleanly(line) => {
                        counts.failed_cleanly += 1;
                        *seen_errors.entry(generalise(&line)).or_default() += 1;
                        if let Op::Write { writes, .. } = op {
                            unsure.push(writes);
                        }
                    }
                    Verdict::Bad(why) => {
                        counts.bad += 1;
                        problems.push(format!("{label}: {why}: {run:?}"));
                        if let Op::Write { writes, .. } = op {
                            unsure.push(writes);
                        }
                    }
                }
            }
            let failed_here = counts.failed_cleanly - before;
            if case.must_fail && failed_here == 0 {
                counts.bad += 1;
                problems.push(format!(
                    "case {c} [{}]: no command failed: libfiu did not intercept the call",
                    case.name
                ));
            }
            match check_after(&sb, &mut model, unsure) {
                Ok(note) => println!(
                    "libfiu: case {c} [{}]: {failed_here} commands failed cleanly; after it \
                     verify passes and the data matches{note}",
                    case.name
                ),
                Err(e) => {
                    counts.bad += 1;
                    problems.push(format!("case {c} [{}]: after the faults: {e}", case.name));
                }
            }
        }
    }
    counts.cases += 1;
    counts.commands += 1;
    match fsync_failure_in_a_running_server(&sb) {
        Ok(note) => {
            counts.failed_cleanly += 1;
            println!(
                "libfiu: case {} [fdatasync EIO in a running server]: {note}",
                c + 1
            );
        }
        Err(e) => {
            counts.bad += 1;
            problems.push(format!("[fdatasync EIO in a running server]: {e}"));
        }
    }
    println!("libfiu: errors seen (exit 1, stderr generalised):");
    for (line, n) in &seen_errors {
        println!("  {n:4} × {line}");
    }
    for problem in &problems {
        println!("BAD: {problem}");
    }
    println!(
        "libfiu: cases={} commands={} failed-cleanly={} succeeded={} bad={}",
        counts.cases, counts.commands, counts.failed_cleanly, counts.succeeded, counts.bad
    );
    assert_eq!(
        counts.bad,
        0,
        "{} bad outcomes:\n{}",
        counts.bad,
        problems.join("\n")
    );
}

/// Creates the key file and the tables, and loads [`SEEDED`] keys into each.
fn set_up(sb: &Sandbox) -> Contents {
    sb.ok(
        &["keys", "generate", "--out", "keys.txt", "--ids", "1,2,5"],
        b"",
    );
    sb.ok(&["table", "create", TABLES[0]], b"");
    sb.ok(&["table", "create", TABLES[1], "--key-id", "5"], b"");
    sb.ok(&["table", "create", TABLES[2], "--encrypted", "no"], b"");
    let mut model = Contents::new();
    for (t, name) in TABLES.iter().enumerate() {
        let mut tsv = String::new();
        for i in 0..SEEDED {
            let key = seed_key(i);
            let v = value(&format!("{name}/seed/{i}"), 50 + (i * 37) % 400);
            tsv.push_str(&format!("{}\t{}\n", hex(&key), hex(&v)));
            model.insert((t, key), v);
        }
        sb.ok(&["kv", "load", name, "-", "--hex"], tsv.as_bytes());
    }
    model
}

enum Verdict {
    Succeeded,
    /// Exit status 2: `kv get` found no such key.
    NotFound,
    /// The one stderr line.
    FailedCleanly(String),
    Bad(String),
}

fn judge(run: &Run) -> Verdict {
    if run.stderr.contains("panicked") || run.stderr.contains("RUST_BACKTRACE") {
        return Verdict::Bad("PANIC".into());
    }
    match run.code {
        Some(0) => Verdict::Succeeded,
        Some(1) => {
            let lines: Vec<&str> = run.stderr.lines().collect();
            let Some(last) = lines.last() else {
                return Verdict::Bad("exit 1 without a message".into());
            };
            if !last.starts_with("strongbox: ") {
                return Verdict::Bad("the error is not a `strongbox: …` line".into());
            }
            // `verify` lists what it could not check on stdout, one line per page.
            if !FAULT_WORDS
                .iter()
                .any(|w| last.contains(w) || run.stdout.contains(w))
            {
                return Verdict::Bad("the error does not name the IO failure".into());
            }
            Verdict::FailedCleanly(last.to_string())
        }
        Some(2) => Verdict::NotFound,
        Some(code) => Verdict::Bad(format!("exit status {code}")),
        None => Verdict::Bad("killed by a signal".into()),
    }
}

/// A successful read printed what the model holds (a key some failed write touched may
/// hold either value).
fn check_read(
    model: &Contents,
    unsure: &[Unsure],
    run: &Run,
    table: Option<usize>,
    key: Option<Vec<u8>>,
) -> Result<(), String> {
    let table = table.expect("reads name a table");
    let allowed = |key: &Vec<u8>, found: Option<&Vec<u8>>| -> bool {
        let id = (table, key.clone());
        model.get(&id) == found
            || unsure
                .iter()
                .flatten()
                .any(|(k, v)| *k == id && v.as_ref() == found)
    };
    match key {
        Some(key) => {
            let found = unhex(run.stdout.trim_end()).ok_or("the output is not hex")?;
            if !allowed(&key, Some(&found)) {
                return Err(format!(
                    "get printed {} bytes that are not the value of {:?}",
                    found.len(),
                    String::from_utf8_lossy(&key)
                ));
            }
        }
        None => {
            let found: BTreeMap<Vec<u8>, Vec<u8>> = parse_scan(&run.stdout)?.into_iter().collect();
            let mut keys: Vec<&Vec<u8>> = found.keys().collect();
            keys.extend(model.keys().filter(|(t, _)| *t == table).map(|(_, k)| k));
            for key in keys {
                if !allowed(key, found.get(key)) {
                    return Err(format!(
                        "the scan is wrong at key {:?}",
                        String::from_utf8_lossy(key)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether `key` of `table` may be absent: the model lacks it or a failed write deleted
/// or had not yet written it.
fn may_be_absent(model: &Contents, unsure: &[Unsure], table: usize, key: &[u8]) -> bool {
    let id = (table, key.to_vec());
    !model.contains_key(&id)
        || unsure
            .iter()
            .flatten()
            .any(|(k, v)| *k == id && v.is_none())
}

fn apply(model: &mut Contents, writes: Unsure) {
    for (id, v) in writes {
        match v {
            Some(v) => model.insert(id, v),
            None => model.remove(&id),
        };
    }
}

/// Without faults: `verify` passes and the tables hold the model, each failed write all
/// there or not at all; the model becomes what was found.
fn check_after(sb: &Sandbox, model: &mut Contents, unsure: Vec<Unsure>) -> Result<String, String> {
    let verify = sb.run(&[], &strings(&["verify"]), b"");
    if verify.code != Some(0) {
        return Err(format!("verify fails: {verify:?}"));
    }
    let mut found = Contents::new();
    for t in 0..TABLES.len() {
        for (k, v) in sb.scan(t)? {
            found.insert((t, k), v);
        }
    }
    let (mut landed, mut lost) = (0, 0);
    for writes in unsure {
        let visible = writes
            .iter()
            .filter(|(id, v)| found.get(id) == v.as_ref())
            .count();
        if visible == writes.len() {
            landed += 1;
            apply(model, writes);
        } else if visible == 0 || writes.iter().all(|(id, v)| model.get(id) == v.as_ref()) {
            lost += 1;
        } else {
            return Err(format!(
                "a failed write is partly there: {visible} of its {} keys (first {:?})",
                writes.len(),
                String::from_utf8_lossy(&(writes[0].0).1)
            ));
        }
    }
    if found != *model {
        let differing: Vec<String> = found
            .keys()
            .chain(model.keys())
            .filter(|id| found.get(*id) != model.get(*id))
            .take(10)
            .map(|(t, k)| {
                format!(
                    "{}/{}: found {:?}, expected {:?}",
                    TABLES[*t],
                    String::from_utf8_lossy(k),
                    found.get(&(*t, k.clone())).map(|v| v.len()),
                    model.get(&(*t, k.clone())).map(|v| v.len())
                )
            })
            .collect();
        *model = found;
        return Err(format!(
            "the tables differ from the acknowledged writes (value lengths shown):\n  {}",
            differing.join("\n  ")
        ));
    }
    Ok(if landed + lost > 0 {
        format!(" ({landed} failed writes landed whole, {lost} absent)")
    } else {
        String::new()
    })
}

/// The command line without long hex values.
fn short(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.len() > 24 {
                format!("{}…", &a[..16])
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An error line with paths and numbers replaced, to group like errors.
fn generalise(line: &str) -> String {
    let mut out = String::new();
    let mut digits = false;
    for ch in line.chars() {
        if ch.is_ascii_digit() {
            if !digits {
                out.push('N');
            }
            digits = true;
        } else {
            digits = false;
            out.push(ch);
        }
    }
    let mut words: Vec<String> = Vec::new();
    for word in out.split(' ') {
        if word.contains("/tmp/") || word.starts_with('/') || word.starts_with("\"/") {
            words.push("PATH".into());
        } else {
            words.push(word.to_string());
        }
    }
    words.join(" ")
}

// ---- a fault switched on in a running server -------------------------------------------------

/// `fdatasync` starts failing under a running `strongbox serve` (`fiu-ctrl` switches the
/// fault on in the live process): the `SET` that hits it gets an error reply naming the IO
/// failure, and — the lesson of PostgreSQL's fsync bug — the server then refuses every
/// later write, even after the fault is switched off again, rather than assume the data
/// reached the disk. It stops on `SIGTERM` without a panic; restarted without faults,
/// `verify` passes and every `SET` answered `+OK` is there.
fn fsync_failure_in_a_running_server(sb: &Sandbox) -> Result<String, String> {
    use std::io::{BufRead, BufReader, Read};
    let data = sb.root.join("served");
    let ctrl = sb.root.join("fiu-ctrl");
    let mut child = Command::new(&sb.fiu_run)
        .arg("-x")
        .arg("-f")
        .arg(&ctrl)
        .arg(BIN)
        .arg("--data")
        .arg(&data)
        .arg("--keyfile")
        .arg(sb.root.join("keys.txt"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(&sb.root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn serve: {e}"))?;
    let pid = child.id().to_string();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    let addr = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            let _ = child.kill();
            return Err(format!("serve ended before serving: {seen}"));
        }
        seen.push_str(&line);
        if line.contains("serving") {
            let addr = line
                .split(" on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .ok_or_else(|| format!("no address in {line:?}"))?;
            break addr.to_string();
        }
    };
    let result = (|| {
        let mut client = Resp::connect(&addr)?;
        let mut acked = Vec::new();
        for i in 0..20 {
            let (key, value) = (format!("k{i}"), format!("value-{i}"));
            match client.call(&["SET", &key, &value])?.as_str() {
                "+OK" => acked.push((key, value)),
                other => return Err(format!("SET {key} before any fault: {other:?}")),
            }
        }
        fiu_ctrl(
            &ctrl,
            &pid,
            "enable name=posix/io/sync/fdatasync,failinfo=5",
        )?;
        let failed = client.call(&["SET", "k-during", "x"])?;
        if !failed.starts_with("-") || !FAULT_WORDS.iter().any(|w| failed.contains(w)) {
            return Err(format!(
                "the SET whose fdatasync failed got {failed:?}, not an error naming it"
            ));
        }
        fiu_ctrl(&ctrl, &pid, "disable name=posix/io/sync/fdatasync")?;
        let after = client.call(&["SET", "k-after", "x"])?;
        if !after.starts_with("-") {
            return Err(format!(
                "after a failed fdatasync (fault off again) a SET got {after:?}: the server \
                 carried on writing"
            ));
        }
        let read = client.call(&["GET", "k0"])?;
        if read.starts_with('$') && !read.contains("value-0") {
            return Err(format!("GET k0 after the failure returned {read:?}"));
        }
        Ok((acked, failed, after))
    })();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait().map_err(|e| e.to_string())?;
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    let (acked, failed, after) = result?;
    if rest.contains("panicked") || status.code().is_none() {
        return Err(format!("serve ended with {status:?}: {rest}"));
    }

    let run = |args: &[&str]| sb.run_at(&data, &[], &strings(args), b"");
    let verify = run(&["verify"]);
    if verify.code != Some(0) {
        return Err(format!(
            "verify after the server's fdatasync failure: {verify:?}"
        ));
    }
    for (key, value) in &acked {
        let got = run(&["kv", "get", "db0", key]);
        if got.code != Some(0) || got.stdout.trim_end() != value {
            return Err(format!(
                "acknowledged SET {key} lost after restart: {got:?}"
            ));
        }
    }
    Ok(format!(
        "{} SETs acknowledged before the fault and present after restart; the SET that hit \
         it: {}; the next SET with the fault off: {}; serve exited {status}",
        acked.len(),
        failed.trim_end(),
        after.trim_end()
    ))
}

fn fiu_ctrl(prefix: &Path, pid: &str, command: &str) -> Result<(), String> {
    let status = Command::new("fiu-ctrl")
        .arg("-f")
        .arg(prefix)
        .args(["-c", command, pid])
        .status()
        .map_err(|e| format!("fiu-ctrl: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("fiu-ctrl -c {command:?} {pid} failed: {status}"))
    }
}

/// A minimal RESP client: one request, one reply line (with its bulk body).
struct Resp {
    stream: std::io::BufReader<std::net::TcpStream>,
}

impl Resp {
    fn connect(addr: &str) -> Result<Resp, String> {
        let stream =
            std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        Ok(Resp {
            stream: std::io::BufReader::new(stream),
        })
    }

    fn call(&mut self, args: &[&str]) -> Result<String, String> {
        use std::io::{BufRead, Read};
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| format!("send {args:?}: {e}"))?;
        let mut line = String::new();
        self.stream
            .read_line(&mut line)
            .map_err(|e| format!("reply to {args:?}: {e}"))?;
        if let Some(len) = line
            .strip_prefix('$')
            .and_then(|n| n.trim().parse::<usize>().ok())
        {
            let mut body = vec![0u8; len + 2];
            self.stream
                .read_exact(&mut body)
                .map_err(|e| format!("reply to {args:?}: {e}"))?;
            line.push_str(&String::from_utf8_lossy(&body));
        }
        Ok(line.trim_end().to_string())
    }
}
