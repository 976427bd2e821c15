//! `strongbox demo`: it succeeds, reports no plaintext in the encrypted table's file, and
//! the directory it keeps (`--keep`) bears that out when scanned independently.

use std::path::{Path, PathBuf};
use std::process::Command;
use strongbox::engine::{Db, Options};

const BIN: &str = env!("CARGO_BIN_EXE_strongbox");
const MARKER: &[u8] = b"STRONGBOX-DEMO-MARKER";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `TMPDIR` (where the demo makes its directory) inside `sandbox`
/// and `--data` pointing into it.
fn run(sandbox: &Path, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .arg("--data")
        .arg(sandbox.join("data"))
        .args(args)
        .current_dir(sandbox)
        .env("TMPDIR", sandbox.join("tmp"))
        .output()
        .unwrap();
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn sandbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tmp")).unwrap();
    dir
}

/// The `on disk` line of the demo's output for `table`.
fn on_disk_line<'a>(stdout: &'a str, table: &str) -> &'a str {
    stdout
        .lines()
        .find(|line| line.starts_with("on disk") && line.split_whitespace().nth(2) == Some(table))
        .unwrap_or_else(|| panic!("no `on disk` line for {table} in\n{stdout}"))
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

#[test]
fn demo_finds_the_marker_only_in_the_unencrypted_table_with_every_algorithm() {
    for algorithm in ["aes_ctr", "aes_cbc", "aes_gcm"] {
        let dir = sandbox();
        let run = run(
            dir.path(),
            &["demo", "--records", "500", "--algorithm", algorithm],
        );
        assert_eq!(run.code, 0, "{algorithm}: {}\n{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains(&format!(", {algorithm})")),
            "{}",
            run.stdout
        );
        let secret = on_disk_line(&run.stdout, "secret");
        assert!(
            secret.contains("encrypted=true") && secret.ends_with("marker found 0 times"),
            "{algorithm}: {secret}"
        );
        let public = on_disk_line(&run.stdout, "public");
        assert!(
            public.contains("encrypted=false") && public.ends_with("marker found 500 times"),
            "{algorithm}: {public}"
        );
        assert!(
            run.stdout.contains("read back     500 records"),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("verify        every tree"),
            "{}",
            run.stdout
        );

        // The demo works in its own temporary directory, removes it, and ignores --data.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).unwrap().collect();
        assert!(left.is_empty(), "{algorithm}: the demo left {left:?}");
        assert!(!dir.path().join("data").exists());
    }
}

#[test]
fn the_directory_the_demo_keeps_confirms_what_it_printed() {
    let dir = sandbox();
    let run = run(dir.path(), &["demo", "--records", "500", "--keep"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let kept = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("kept"))
        .map(|path| PathBuf::from(path.trim()))
        .unwrap_or_else(|| panic!("no `kept` line in\n{}", run.stdout));
    assert!(
        kept.starts_with(dir.path().join("tmp")),
        "{}",
        kept.display()
    );
    let data = kept.join("data");
    let keys = kept.join("keys.txt");

    // Which file is which, from the catalog.
    let db = Db::open(&data, Options::new().keyfile(&keys)).unwrap();
    let file_of = |name: &str| {
        let table = db.table(name).unwrap();
        assert_eq!(table.info().encrypted, name == "secret");
        strongbox::engine::space::file_name(table.space_id())
    };
    let (secret, public) = (file_of("secret"), file_of("public"));
    db.close().unwrap();
    drop(db);

    // Every file, the redo log's too: the secret table's records appear nowhere in the
    // clear. The public table's appear once in its own file, and may appear in the
    // doublewrite file (which holds its pages as stored: unencrypted) — nowhere else.
    for path in files_under(&data) {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            count(&bytes, b"of table secret"),
            0,
            "{name} (secret is {secret})"
        );
        let public_hits = count(&bytes, b"of table public");
        if name == public {
            assert_eq!(
                count(&bytes, MARKER),
                500,
                "every record once, no stale copies"
            );
        } else if name != "doublewrite.dbw" {
            assert_eq!(public_hits, 0, "{name}");
        }
    }

    // The kept database is sound by the CLI's own check too.
    let data_arg = data.to_str().unwrap();
    let keys_arg = keys.to_str().unwrap();
    let verify = Command::new(BIN)
        .args(["--data", data_arg, "--keyfile", keys_arg, "verify"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// Every file below `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}
