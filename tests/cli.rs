//! The `strongbox` binary, driven as a user would: exit statuses, exact output, files.
//!
//! Every call runs in its own temporary directory (the working directory and `--data`), so
//! no test touches the repository or another test. The key-file tests also run the real
//! `openssl` binary and fail (never skip) when it is missing.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_strongbox");

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A temporary directory to run in; `data` is the `--data` of every call.
struct Sandbox {
    dir: tempfile::TempDir,
    data: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Sandbox { dir, data }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut child = Command::new(BIN)
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let output = child.wait_with_output().unwrap();
        Run {
            code: output.status.code().expect("exited, not killed"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, b"")
    }

    /// Runs and expects exit status 0.
    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, 0, "strongbox {args:?} failed: {run:?}");
        run
    }

    /// Runs and expects exit status 1 with exactly one `strongbox: …` line on stderr.
    fn fails(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, 1, "strongbox {args:?} should fail: {run:?}");
        assert_one_line_error(&run);
        run
    }

    /// `keys.txt` with keys 1, 2 and 100, made by `keys generate`.
    fn keys(&self) -> &'static str {
        self.ok(&["keys", "generate", "--out", "keys.txt", "--ids", "1,2,100"]);
        "keys.txt"
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn read_text(&self, name: &str) -> String {
        String::from_utf8(self.read(name)).unwrap()
    }

    /// Writes a private (0600) file.
    fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

fn assert_one_line_error(run: &Run) {
    assert!(
        run.stderr.starts_with("strongbox: ")
            && run.stderr.ends_with('\n')
            && run.stderr.lines().count() == 1,
        "expected one `strongbox: …` line on stderr, got {:?}",
        run.stderr
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn is_hex(text: &str, digits: usize) -> bool {
    text.len() == digits && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs the real `openssl`; a missing binary fails the test with what to install.
fn openssl(cwd: &Path, args: &[&str]) -> std::process::Output {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs the real `openssl` binary (apt-get install openssl; CI installs \
                 it), but running it failed: {e}"
            )
        });
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

// Fixed keys for files whose exact listing is asserted.
const HEX_256_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const HEX_256_B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
const HEX_128: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const HEX_192: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7";

/// A MariaDB-style key file: comments, a blank line, both line forms, three key sizes.
fn sample_key_file() -> String {
    format!(
        "# production keys\n1;{HEX_256_A}\n# tables\n100;1;{HEX_192}\n100;2;{HEX_256_B}\n\n2;{HEX_128}\n# end\n"
    )
}

const SAMPLE_TSV: &str = "1\t1\t256\n2\t1\t128\n100\t1\t192\n100\t2\t256\n";

// ---------------------------------------------------------------------------------------
// keys

#[test]
fn keys_generate_writes_a_private_file_and_never_overwrites() {
    let sb = Sandbox::new();
    let run = sb.ok(&["keys", "generate", "--out", "keys.txt", "--ids", "1,2,100"]);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("wrote 3 key(s)"), "{run:?}");
    assert_eq!(mode(&sb.path("keys.txt")), 0o600);
    let text = sb.read_text("keys.txt");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, id) in lines.iter().zip(["1", "2", "100"]) {
        let (line_id, hex) = line.split_once(';').unwrap();
        assert_eq!(line_id, id);
        assert!(is_hex(hex, 64), "{line}");
    }

    let before = sb.read("keys.txt");
    let run = sb.fails(&["keys", "generate", "--out", "keys.txt", "--ids", "1"]);
    assert!(run.stderr.contains("refusing to overwrite"), "{run:?}");
    assert_eq!(sb.read("keys.txt"), before);

    sb.ok(&[
        "keys",
        "generate",
        "--out",
        "small.txt",
        "--ids",
        "1,7",
        "--bits",
        "128",
        "--with-versions",
    ]);
    let text = sb.read_text("small.txt");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(
        lines[0].starts_with("1;1;") && is_hex(&lines[0][4..], 32),
        "{text}"
    );
    assert!(
        lines[1].starts_with("7;1;") && is_hex(&lines[1][4..], 32),
        "{text}"
    );

    for (args, expected) in [
        (&["--ids", "1", "--bits", "100"][..], "not a key size"),
        (&["--ids", "0"][..], "reserved"),
        (&["--ids", "1,1"][..], "twice"),
    ] {
        let mut full = vec!["keys", "generate", "--out", "bad.txt"];
        full.extend_from_slice(args);
        let run = sb.fails(&full);
        assert!(run.stderr.contains(expected), "{args:?}: {run:?}");
        assert!(!sb.path("bad.txt").exists());
    }
}

#[test]
fn keys_list_prints_id_version_bits_and_never_key_bytes() {
    let sb = Sandbox::new();
    sb.write("keys.txt", sample_key_file());
    let run = sb.ok(&["keys", "list", "--keyfile", "keys.txt", "--format", "tsv"]);
    assert_eq!(run.stdout, SAMPLE_TSV);
    assert_eq!(run.stderr, "");

    let run = sb.ok(&["keys", "list", "--keyfile", "keys.txt"]);
    let mut lines = run.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["id", "version", "bits"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3], ["100", "2", "256"]);

    for hex in [HEX_256_A, HEX_256_B, HEX_128, HEX_192] {
        assert!(!run.stdout.contains(hex) && !run.stderr.contains(hex));
    }

    // Readable by others: still listed, with a warning saying how to fix it.
    std::fs::set_permissions(sb.path("keys.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = sb.ok(&["keys", "list", "--keyfile", "keys.txt", "--format", "tsv"]);
    assert_eq!(run.stdout, SAMPLE_TSV);
    assert!(run.stderr.contains("chmod 600"), "{run:?}");

    let run = sb.fails(&["keys", "list", "--format", "tsv"]);
    assert!(run.stderr.contains("--keyfile"), "{run:?}");
    sb.write("broken.txt", "1;nothex\n");
    let run = sb.fails(&["keys", "list", "--keyfile", "broken.txt"]);
    assert!(run.stderr.contains("line 1"), "{run:?}");
}

#[test]
fn keys_rotate_adds_a_version_after_the_ids_last_line_and_keeps_everything_else() {
    let sb = Sandbox::new();
    let original = sample_key_file();
    sb.write("keys.txt", &original);

    let run = sb.ok(&["keys", "rotate", "--keyfile", "keys.txt", "--id", "100"]);
    assert_eq!(run.stdout, "100\t3\n");
    let text = sb.read_text("keys.txt");
    let added: Vec<&str> = text
        .lines()
        .filter(|line| !original.lines().any(|old| old == *line))
        .collect();
    assert_eq!(added.len(), 1, "{text}");
    assert!(
        added[0].starts_with("100;3;") && is_hex(&added[0][6..], 64),
        "same size as the latest version: {text}"
    );
    let without_new: String = text
        .lines()
        .filter(|line| *line != added[0])
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(without_new, original, "comments and keys are kept in order");
    let position = |needle: &str| text.lines().position(|l| l.starts_with(needle)).unwrap();
    assert_eq!(position("100;3;"), position("100;2;") + 1);
    assert_eq!(mode(&sb.path("keys.txt")), 0o600);

    let run = sb.ok(&["keys", "rotate", "--keyfile", "keys.txt", "--id", "1"]);
    assert_eq!(run.stdout, "1\t2\n");
    let run = sb.ok(&[
        "keys",
        "rotate",
        "--keyfile",
        "keys.txt",
        "--id",
        "100",
        "--bits",
        "128",
    ]);
    assert_eq!(run.stdout, "100\t4\n");
    let run = sb.ok(&["keys", "list", "--keyfile", "keys.txt", "--format", "tsv"]);
    assert_eq!(
        run.stdout,
        "1\t1\t256\n1\t2\t256\n2\t1\t128\n100\t1\t192\n100\t2\t256\n100\t3\t256\n100\t4\t128\n"
    );

    let before = sb.read("keys.txt");
    let run = sb.fails(&["keys", "rotate", "--keyfile", "keys.txt", "--id", "9"]);
    assert!(run.stderr.contains("key id 9"), "{run:?}");
    assert_eq!(sb.read("keys.txt"), before);
}

#[test]
fn encrypted_key_file_written_by_strongbox_is_read_by_openssl() {
    let sb = Sandbox::new();
    let secret = "correct horse battery";
    let kdf = ["--digest", "sha256", "--pbkdf2-iter", "1000"];
    let mut generate = vec![
        "keys",
        "generate",
        "--out",
        "keys.enc",
        "--ids",
        "1,2,100",
        "--filekey",
        secret,
    ];
    generate.extend_from_slice(&kdf);
    let run = sb.ok(&generate);
    assert!(run.stderr.contains("(encrypted)"), "{run:?}");
    assert!(sb.read("keys.enc").starts_with(b"Salted__"));
    assert_eq!(mode(&sb.path("keys.enc")), 0o600);
    assert!(!String::from_utf8_lossy(&sb.read("keys.enc")).contains("1;"));

    let pass = format!("pass:{secret}");
    let output = openssl(
        sb.dir.path(),
        &[
            "enc",
            "-d",
            "-aes-256-cbc",
            "-md",
            "sha256",
            "-pbkdf2",
            "-iter",
            "1000",
            "-pass",
            &pass,
            "-in",
            "keys.enc",
        ],
    );
    let plain = String::from_utf8(output.stdout).expect("OpenSSL decrypts to text");
    let ids: Vec<&str> = plain
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_once(';').unwrap().0)
        .collect();
    assert_eq!(ids, ["1", "2", "100"], "{plain}");

    // The text OpenSSL recovered lists exactly as the encrypted file does.
    sb.write("keys.txt", &plain);
    let from_plain = sb.ok(&["keys", "list", "--keyfile", "keys.txt", "--format", "tsv"]);
    let mut list = vec![
        "keys",
        "list",
        "--keyfile",
        "keys.enc",
        "--format",
        "tsv",
        "--filekey",
        secret,
    ];
    list.extend_from_slice(&kdf);
    let from_encrypted = sb.ok(&list);
    assert_eq!(from_encrypted.stdout, from_plain.stdout);
    assert_eq!(from_encrypted.stdout, "1\t1\t256\n2\t1\t256\n100\t1\t256\n");

    // MariaDB's defaults (sha1, EVP_BytesToKey) are what OpenSSL does without -pbkdf2.
    sb.ok(&[
        "keys",
        "generate",
        "--out",
        "legacy.enc",
        "--ids",
        "5",
        "--filekey",
        secret,
    ]);
    let output = openssl(
        sb.dir.path(),
        &[
            "enc",
            "-d",
            "-aes-256-cbc",
            "-md",
            "sha1",
            "-pass",
            &pass,
            "-in",
            "legacy.enc",
        ],
    );
    let plain = String::from_utf8(output.stdout).unwrap();
    let key_line = plain.lines().find(|l| !l.starts_with('#')).unwrap();
    assert!(
        key_line.starts_with("5;") && is_hex(&key_line[2..], 64),
        "{plain}"
    );
}

#[test]
fn encrypted_key_file_written_by_openssl_is_read_by_strongbox_and_opens_a_database() {
    let sb = Sandbox::new();
    sb.write("keys.txt", sample_key_file());
    let secret = "from openssl";
    let pass = format!("pass:{secret}");
    openssl(
        sb.dir.path(),
        &[
            "enc",
            "-aes-256-cbc",
            "-md",
            "sha256",
            "-pbkdf2",
            "-iter",
            "1000",
            "-salt",
            "-pass",
            &pass,
            "-in",
            "keys.txt",
            "-out",
            "keys.enc",
        ],
    );
    openssl(
        sb.dir.path(),
        &[
            "enc",
            "-aes-256-cbc",
            "-md",
            "sha1",
            "-salt",
            "-pass",
            &pass,
            "-in",
            "keys.txt",
            "-out",
            "legacy.enc",
        ],
    );
    for file in ["keys.enc", "legacy.enc"] {
        std::fs::set_permissions(sb.path(file), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let modern = [
        "--keyfile",
        "keys.enc",
        "--filekey",
        secret,
        "--digest",
        "sha256",
        "--pbkdf2-iter",
        "1000",
    ];
    let mut list = vec!["keys", "list", "--format", "tsv"];
    list.extend_from_slice(&modern);
    assert_eq!(sb.ok(&list).stdout, SAMPLE_TSV);
    let run = sb.ok(&[
        "keys",
        "list",
        "--format",
        "tsv",
        "--keyfile",
        "legacy.enc",
        "--filekey",
        secret,
    ]);
    assert_eq!(run.stdout, SAMPLE_TSV);

    // The database takes the same options.
    let mut create = vec!["table", "create", "t", "--key-id", "100"];
    create.extend_from_slice(&modern);
    sb.ok(&create);
    let mut list = vec!["table", "list", "--format", "tsv"];
    list.extend_from_slice(&modern);
    assert_eq!(sb.ok(&list).stdout, "t\t1\tyes\t100\t2\t2\n");
}

#[test]
fn wrong_file_key_or_settings_fail_with_cannot_decrypt() {
    let sb = Sandbox::new();
    let secret = "right passphrase";
    sb.ok(&[
        "keys",
        "generate",
        "--out",
        "keys.enc",
        "--ids",
        "1,2",
        "--filekey",
        secret,
        "--digest",
        "sha256",
        "--pbkdf2-iter",
        "1000",
    ]);
    let before = sb.read("keys.enc");
    for (filekey, digest, iterations) in [
        ("wrong passphrase", "sha256", "1000"),
        (secret, "sha1", "1000"),
        (secret, "sha256", "999"),
        (secret, "sha256", "0"),
    ] {
        let common = [
            "--keyfile",
            "keys.enc",
            "--filekey",
            filekey,
            "--digest",
            digest,
            "--pbkdf2-iter",
            iterations,
        ];
        for command in [&["keys", "list"][..], &["keys", "rotate", "--id", "1"][..]] {
            let mut args = command.to_vec();
            args.extend_from_slice(&common);
            let run = sb.fails(&args);
            assert!(
                run.stderr.contains("cannot decrypt key file"),
                "{args:?}: {run:?}"
            );
            assert!(!run.stderr.contains(filekey), "never print the file key");
        }
        let mut args = vec!["table", "list"];
        args.extend_from_slice(&common);
        let run = sb.fails(&args);
        assert!(run.stderr.contains("cannot decrypt key file"), "{run:?}");
    }
    assert_eq!(
        sb.read("keys.enc"),
        before,
        "failed rotations change nothing"
    );

    let run = sb.fails(&["keys", "list", "--keyfile", "keys.enc"]);
    assert!(run.stderr.contains("--filekey"), "{run:?}");
}

#[test]
fn filekey_can_come_from_a_file() {
    let sb = Sandbox::new();
    sb.write(
        "filekey",
        "passphrase from a file\nsecond line is ignored\n",
    );
    let from_file = ["--filekey", "FILE:filekey"];
    let mut generate = vec!["keys", "generate", "--out", "keys.enc", "--ids", "1,2"];
    generate.extend_from_slice(&from_file);
    sb.ok(&generate);
    assert!(sb.read("keys.enc").starts_with(b"Salted__"));

    // OpenSSL's `-pass file:` also reads the first line.
    let decrypt = || {
        let output = openssl(
            sb.dir.path(),
            &[
                "enc",
                "-d",
                "-aes-256-cbc",
                "-md",
                "sha1",
                "-pass",
                "file:filekey",
                "-in",
                "keys.enc",
            ],
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let before = decrypt();

    // Rotation keeps the file encrypted, with the same file key and settings, and its comment.
    let mut rotate = vec!["keys", "rotate", "--keyfile", "keys.enc", "--id", "2"];
    rotate.extend_from_slice(&from_file);
    assert_eq!(sb.ok(&rotate).stdout, "2\t2\n");
    assert!(sb.read("keys.enc").starts_with(b"Salted__"));
    let after = decrypt();
    assert!(after.starts_with(before.lines().next().unwrap()), "{after}");
    assert!(before.lines().all(|line| after.contains(line)), "{after}");
    assert!(after.lines().any(|l| l.starts_with("2;2;")), "{after}");

    let mut list = vec!["keys", "list", "--keyfile", "keys.enc", "--format", "tsv"];
    list.extend_from_slice(&from_file);
    assert_eq!(sb.ok(&list).stdout, "1\t1\t256\n2\t1\t256\n2\t2\t256\n");

    let run = sb.fails(&[
        "keys",
        "list",
        "--keyfile",
        "keys.enc",
        "--filekey",
        "FILE:missing",
    ]);
    assert!(run.stderr.contains("cannot read file key"), "{run:?}");
    sb.write("empty", "");
    let run = sb.fails(&[
        "keys",
        "list",
        "--keyfile",
        "keys.enc",
        "--filekey",
        "FILE:empty",
    ]);
    assert!(run.stderr.contains("empty"), "{run:?}");
}

// ---------------------------------------------------------------------------------------
// tables and keys/values

#[test]
fn table_create_list_drop() {
    let sb = Sandbox::new();
    let keys = sb.keys();
    let k = ["--keyfile", keys];
    let with_keys = |args: &[&'static str]| -> Vec<&'static str> {
        let mut all = args.to_vec();
        all.extend_from_slice(&k);
        all
    };
    let run = sb.ok(&with_keys(&["table", "create", "t1"]));
    assert!(
        run.stderr
            .contains("created table t1 (space 1, encrypted with key 1 version 1)"),
        "{run:?}"
    );
    sb.ok(&with_keys(&["table", "create", "t2", "--encrypted", "no"]));
    sb.ok(&with_keys(&["table", "create", "t3", "--key-id", "100"]));
    let list = with_keys(&["table", "list", "--format", "tsv"]);
    assert_eq!(
        sb.ok(&list).stdout,
        "t1\t1\tyes\t1\t1\t2\nt2\t2\tno\t0\t0\t2\nt3\t3\tyes\t100\t1\t2\n"
    );
    let human = sb.ok(&with_keys(&["table", "list"])).stdout;
    let header: Vec<&str> = human.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "name",
            "space_id",
            "encrypted",
            "key_id",
            "key_version",
            "pages"
        ]
    );

    let run = sb.fails(&with_keys(&["table", "create", "t1"]));
    assert!(run.stderr.contains("already exists"), "{run:?}");
    let run = sb.fails(&with_keys(&["table", "create", "t4", "--key-id", "55"]));
    assert!(run.stderr.contains("key id 55"), "{run:?}");
    let run = sb.fails(&with_keys(&["table", "create", "bad name"]));
    assert!(run.stderr.contains("invalid table name"), "{run:?}");
    let run = sb.fails(&with_keys(&[
        "table",
        "create",
        "t4",
        "--encrypted",
        "no",
        "--key-id",
        "100",
    ]));
    assert!(run.stderr.contains("encryption_key_id"), "{run:?}");

    assert!(sb.data.join("space-2.sbd").exists());
    sb.ok(&with_keys(&["table", "drop", "t2"]));
    assert!(!sb.data.join("space-2.sbd").exists());
    let run = sb.fails(&with_keys(&["table", "drop", "t2"]));
    assert!(run.stderr.contains("does not exist"), "{run:?}");
    sb.ok(&with_keys(&["table", "create", "t4"]));
    assert_eq!(
        sb.ok(&list).stdout,
        "t1\t1\tyes\t1\t1\t2\nt3\t3\tyes\t100\t1\t2\nt4\t4\tyes\t1\t1\t2\n",
        "space ids are not reused"
    );
}

#[test]
fn encrypted_database_without_a_key_file_says_how_to_make_one() {
    let sb = Sandbox::new();
    let run = sb.fails(&["table", "create", "t"]);
    assert!(run.stderr.contains("strongbox keys generate"), "{run:?}");

    let keys = sb.keys();
    sb.ok(&["table", "create", "t", "--keyfile", keys]);
    let run = sb.fails(&["table", "list"]);
    assert!(run.stderr.contains("strongbox keys generate"), "{run:?}");
    assert!(run.stderr.contains("system.sbd"), "{run:?}");
}

/// A sandbox with keys and one table `t`; returns the key-file flags.
fn with_table(sb: &Sandbox) -> [&'static str; 2] {
    let keys = sb.keys();
    sb.ok(&["table", "create", "t", "--keyfile", keys]);
    ["--keyfile", keys]
}

fn args<'a>(command: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    let mut all = command.to_vec();
    all.extend_from_slice(tail);
    all
}

#[test]
fn kv_put_get_del() {
    let sb = Sandbox::new();
    let k = with_table(&sb);
    let run = sb.ok(&args(&["kv", "put", "t", "alice", "admin user"], &k));
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));
    assert_eq!(
        sb.ok(&args(&["kv", "get", "t", "alice"], &k)).stdout,
        "admin user\n"
    );
    sb.ok(&args(&["kv", "put", "t", "alice", "guest"], &k));
    assert_eq!(
        sb.ok(&args(&["kv", "get", "t", "alice"], &k)).stdout,
        "guest\n"
    );

    let run = sb.run(&args(&["kv", "get", "t", "bob"], &k));
    assert_eq!(run.code, 2, "absent key: {run:?}");
    assert_eq!(run.stdout, "");

    let run = sb.ok(&args(&["kv", "del", "t", "alice"], &k));
    assert_eq!(run.stderr, "");
    assert_eq!(sb.run(&args(&["kv", "get", "t", "alice"], &k)).code, 2);
    let run = sb.ok(&args(&["kv", "del", "t", "alice"], &k));
    assert!(run.stderr.contains("no such key"), "{run:?}");

    let run = sb.fails(&args(&["kv", "get", "nosuch", "alice"], &k));
    assert!(run.stderr.contains("does not exist"), "{run:?}");
}

#[test]
fn kv_hex_handles_binary_keys_and_values() {
    let sb = Sandbox::new();
    let k = with_table(&sb);
    sb.ok(&args(
        &["kv", "put", "t", "00ff", "deadbeef00", "--hex"],
        &k,
    ));
    assert_eq!(
        sb.ok(&args(&["kv", "get", "t", "00ff", "--hex"], &k))
            .stdout,
        "deadbeef00\n"
    );
    sb.ok(&args(
        &["kv", "put", "t", "616263", "09746162", "--hex"],
        &k,
    ));
    assert_eq!(
        sb.ok(&args(&["kv", "get", "t", "abc"], &k)).stdout,
        "\ttab\n"
    );
    assert_eq!(
        sb.ok(&args(&["kv", "scan", "t", "--hex"], &k)).stdout,
        "00ff\tdeadbeef00\n616263\t09746162\n"
    );
    sb.ok(&args(&["kv", "del", "t", "00FF", "--hex"], &k));
    assert_eq!(
        sb.run(&args(&["kv", "get", "t", "00ff", "--hex"], &k)).code,
        2
    );

    for bad in ["0", "zz", "abc"] {
        let run = sb.fails(&args(&["kv", "get", "t", bad, "--hex"], &k));
        assert!(run.stderr.contains("not hexadecimal"), "{bad}: {run:?}");
    }
}

#[test]
fn kv_scan_honours_bounds_order_and_limit() {
    let sb = Sandbox::new();
    let k = with_table(&sb);
    let file: String = (0..10).map(|i| format!("k{i:02}\tv{i}\n")).collect();
    sb.write("rows.tsv", file.as_bytes());
    sb.ok(&args(&["kv", "load", "t", "rows.tsv"], &k));
    let rows = |range: std::ops::RangeInclusive<usize>, reverse: bool| -> String {
        let mut lines: Vec<String> = range.map(|i| format!("k{i:02}\tv{i}\n")).collect();
        if reverse {
            lines.reverse();
        }
        lines.concat()
    };
    let scan = |extra: &[&str]| sb.ok(&args(&args(&["kv", "scan", "t"], extra), &k)).stdout;
    assert_eq!(scan(&[]), file);
    assert_eq!(scan(&["--from", "k03", "--to", "k06"]), rows(3..=6, false));
    assert_eq!(
        scan(&["--from", "k025", "--to", "k065"]),
        rows(3..=6, false)
    );
    assert_eq!(scan(&["--reverse"]), rows(0..=9, true));
    assert_eq!(scan(&["--reverse", "--limit", "3"]), rows(7..=9, true));
    assert_eq!(
        scan(&["--reverse", "--from", "k02", "--to", "k05"]),
        rows(2..=5, true)
    );
    assert_eq!(scan(&["--from", "k08", "--limit", "5"]), rows(8..=9, false));
    assert_eq!(scan(&["--limit", "0"]), "");
    assert_eq!(scan(&["--from", "k07", "--to", "k03"]), "");
    assert_eq!(scan(&["--from", "x"]), "");
}

#[test]
fn kv_load_reads_tsv_from_a_file_or_stdin() {
    let sb = Sandbox::new();
    let k = with_table(&sb);
    sb.write(
        "rows.tsv",
        "a\tfirst value\r\n\nb\tsecond\twith a tab\nc\t\n",
    );
    let run = sb.ok(&args(&["kv", "load", "t", "rows.tsv", "--batch", "2"], &k));
    assert!(run.stderr.contains("loaded 3 keys into t"), "{run:?}");
    assert_eq!(
        sb.ok(&args(&["kv", "scan", "t", "--hex"], &k)).stdout,
        "61\t66697273742076616c7565\n62\t7365636f6e640977697468206120746162\n63\t\n"
    );

    let run = sb.run_with_stdin(&args(&["kv", "load", "t", "-"], &k), b"d\tfrom stdin\n");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        sb.ok(&args(&["kv", "get", "t", "d"], &k)).stdout,
        "from stdin\n"
    );

    let run = sb.run_with_stdin(
        &args(&["kv", "load", "t", "-", "--hex"], &k),
        b"00ff\t0102\n",
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        sb.ok(&args(&["kv", "get", "t", "00ff", "--hex"], &k))
            .stdout,
        "0102\n"
    );

    // A bad line fails naming it; its batch is not committed.
    sb.write("bad.tsv", "e\t1\nno tab here\n");
    let run = sb.fails(&args(&["kv", "load", "t", "bad.tsv"], &k));
    assert!(run.stderr.contains("bad.tsv line 2"), "{run:?}");
    assert_eq!(sb.run(&args(&["kv", "get", "t", "e"], &k)).code, 2);
    let run = sb.fails(&args(&["kv", "load", "t", "missing.tsv"], &k));
    assert!(run.stderr.contains("missing.tsv"), "{run:?}");
}

// ---------------------------------------------------------------------------------------
// inspect and verify

/// Keys, an encrypted table `sec` and a plain table `pub`, each with a few records.
fn two_tables(sb: &Sandbox) -> [&'static str; 2] {
    let keys = sb.keys();
    let k = ["--keyfile", keys];
    sb.ok(&args(&["table", "create", "sec"], &k));
    sb.ok(&args(&["table", "create", "pub", "--encrypted", "no"], &k));
    for table in ["sec", "pub"] {
        sb.ok(&args(&["kv", "put", table, "key", "value"], &k));
    }
    k
}

/// `inspect --format tsv` rows: file, page, type, lsn, key_id, key_version, checksum,
/// status, stored bytes.
fn inspect_rows(sb: &Sandbox, extra: &[&str]) -> Vec<Vec<String>> {
    let run = sb.ok(&args(&["inspect", "--format", "tsv"], extra));
    run.stdout
        .lines()
        .map(|line| {
            let fields: Vec<String> = line.split('\t').map(str::to_string).collect();
            assert_eq!(fields.len(), 9, "{line}");
            fields
        })
        .collect()
}

fn row<'a>(rows: &'a [Vec<String>], file: &str, page: &str) -> &'a [String] {
    rows.iter()
        .find(|r| r[0] == file && r[1] == page)
        .unwrap_or_else(|| panic!("no row for {file} page {page}: {rows:?}"))
}

#[test]
fn inspect_shows_page_headers_decryption_and_stored_bytes() {
    let sb = Sandbox::new();
    let k = two_tables(&sb);

    let keyed = inspect_rows(&sb, &k);
    let files: std::collections::BTreeSet<&str> = keyed.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        files.into_iter().collect::<Vec<_>>(),
        ["space-1.sbd", "space-2.sbd", "system.sbd", "temp.sbd"]
    );
    for r in &keyed {
        assert_eq!(r[6], "ok", "checksum: {r:?}");
        assert_eq!(r[7], "ok", "with keys every page decrypts: {r:?}");
        assert!(is_hex(&r[8], 64), "stored bytes: {r:?}");
    }
    // Columns: page type, page LSN (stamped by the redo log), key id, key version.
    let lsn = |r: &[String]| r[3].parse::<u64>().expect("a page LSN");
    let sec = row(&keyed, "space-1.sbd", "1");
    assert_eq!([&sec[2], &sec[4], &sec[5]], ["BtreeLeaf", "1", "1"]);
    assert!(lsn(sec) > 0, "{sec:?}");
    let public = row(&keyed, "space-2.sbd", "1");
    assert_eq!(
        [&public[2], &public[4], &public[5]],
        ["BtreeLeaf", "0", "0"]
    );
    assert!(lsn(public) > 0, "{public:?}");
    assert_eq!(row(&keyed, "space-1.sbd", "0")[2], "SpaceHeader");

    // Without keys the encrypted pages are reported, not decrypted; the stored bytes are
    // the same bytes either way (they are what is on disk).
    let keyless = inspect_rows(&sb, &[]);
    assert_eq!(keyless.len(), keyed.len());
    for (with, without) in keyed.iter().zip(&keyless) {
        assert_eq!(with[..7], without[..7]);
        assert_eq!(with[8], without[8]);
    }
    for (file, page) in [("system.sbd", "1"), ("space-1.sbd", "1")] {
        let status = &row(&keyless, file, page)[7];
        assert!(status.starts_with("not decrypted"), "{file}: {status}");
    }
    assert_eq!(row(&keyless, "space-2.sbd", "1")[7], "ok");

    let only = inspect_rows(&sb, &args(&["--table", "sec", "--page", "1"], &k));
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0][..2], ["space-1.sbd", "1"]);

    let human = sb.ok(&args(&["inspect"], &k)).stdout;
    for expected in [
        "== system.sbd: space 0 (System)",
        "== space-1.sbd: space 1 (Table), page size 16384, 2 pages, 0 free; encrypted aes_ctr with key id 1 version 1",
        "== space-2.sbd: space 2 (Table), page size 16384, 2 pages, 0 free; not encrypted",
        "stored bytes",
    ] {
        assert!(human.contains(expected), "missing {expected:?} in\n{human}");
    }
}

/// Flips one byte inside page `page` of `file` in the data directory.
fn corrupt(sb: &Sandbox, file: &str, page: usize) {
    let path = sb.data.join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[page * 16384 + 1000] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn verify_passes_on_a_good_database_and_lists_corrupt_pages() {
    let sb = Sandbox::new();
    let k = two_tables(&sb);
    let run = sb.ok(&args(&["verify"], &k));
    assert!(run.stdout.contains("tree sec: 1 entries"), "{run:?}");
    assert!(run.stdout.contains("tree pub: 1 entries"), "{run:?}");
    let checked: usize = run
        .stdout
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("ok: "))
        .and_then(|line| line.strip_suffix(" pages checked"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `ok: N pages checked` line: {run:?}"));
    // At least the header and root of the system space and of both tables.
    assert!(checked >= 6, "{run:?}");

    // Without keys the encrypted pages cannot be checked, and verify says so.
    let run = sb.run(&["verify"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(
            "space-1.sbd page 1: not checked: space 1 page 1: encrypted with key id 1 version 1"
        ),
        "{run:?}"
    );

    corrupt(&sb, "space-1.sbd", 1);
    corrupt(&sb, "space-2.sbd", 1);
    let run = sb.run(&args(&["verify"], &k));
    assert_eq!(run.code, 1, "{run:?}");
    assert_one_line_error(&run);
    assert!(run.stderr.contains("verify found 2 problem(s)"), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(lines[0].starts_with("space-1.sbd page 1: "), "{run:?}");
    assert!(lines[1].starts_with("space-2.sbd page 1: "), "{run:?}");
}

// ---------------------------------------------------------------------------------------
// process-level behaviour

#[test]
fn a_second_process_is_refused_while_the_data_directory_is_held() {
    use strongbox::engine::{Db, Options};
    let sb = Sandbox::new();
    let k = with_table(&sb);
    let db = Db::open(&sb.data, Options::new().keyfile(sb.path("keys.txt"))).unwrap();
    let run = sb.fails(&args(&["kv", "get", "t", "x"], &k));
    assert!(run.stderr.contains("in use by another process"), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("(pid {})", std::process::id())),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(&sb.data.display().to_string()),
        "{run:?}"
    );
    db.close().unwrap();
    drop(db);
    assert_eq!(sb.run(&args(&["kv", "get", "t", "x"], &k)).code, 2);
}

#[test]
fn config_file_is_read_and_flags_win() {
    let sb = Sandbox::new();
    sb.keys();
    let elsewhere = sb.path("from-config");
    sb.write(
        "strongbox.toml",
        format!(
            "data = \"{}\"\nkeyfile = \"keys.txt\"\nencrypt_tables = \"force\"\n\
             encryption_algorithm = \"aes_gcm\"\nbuffer_pool_size = \"4M\"\n",
            elsewhere.display()
        ),
    );
    let c = ["--config", "strongbox.toml"];

    // encrypt_tables = force comes from the file; --data from the flag wins over `data`.
    let run = sb.fails(&args(
        &["table", "create", "plain", "--encrypted", "no"],
        &c,
    ));
    assert!(run.stderr.contains("encrypt_tables = force"), "{run:?}");
    assert!(sb.data.join("system.sbd").exists());
    assert!(!elsewhere.exists(), "the --data flag wins over the file");

    // Flags win over the file's settings.
    sb.ok(&args(
        &[
            "table",
            "create",
            "plain",
            "--encrypted",
            "no",
            "--encrypt-tables",
            "on",
        ],
        &c,
    ));
    sb.ok(&args(&["table", "create", "gcm"], &c));
    sb.ok(&args(
        &[
            "table",
            "create",
            "cbc",
            "--encryption-algorithm",
            "aes_cbc",
        ],
        &c,
    ));
    let human = sb.ok(&args(&["inspect"], &c)).stdout;
    for expected in [
        "== space-1.sbd: space 1 (Table), page size 16384, 2 pages, 0 free; not encrypted",
        "== space-2.sbd: space 2 (Table), page size 16384, 2 pages, 0 free; encrypted aes_gcm",
        "== space-3.sbd: space 3 (Table), page size 16384, 2 pages, 0 free; encrypted aes_cbc",
    ] {
        assert!(human.contains(expected), "missing {expected:?} in\n{human}");
    }

    sb.write("bad.toml", "no_such_setting = 1\n");
    let run = sb.fails(&["table", "list", "--config", "bad.toml"]);
    assert!(run.stderr.contains("no_such_setting"), "{run:?}");
    let run = sb.fails(&["table", "list", "--config", "missing.toml"]);
    assert!(run.stderr.contains("missing.toml"), "{run:?}");
}

#[test]
fn argument_errors_are_one_line_and_help_succeeds() {
    let sb = Sandbox::new();
    let run = sb.fails(&["--bogus"]);
    assert!(run.stderr.contains("--bogus") && run.stderr.contains("(try --help)"));
    let run = sb.fails(&["kv", "get"]);
    assert!(
        run.stderr.contains("<TABLE>") && run.stderr.contains("<KEY>"),
        "the error must say which arguments are missing: {run:?}"
    );
    for (command, usage) in [
        (&[][..], "requires a subcommand"),
        (&["kv"][..], "usage: strongbox kv [OPTIONS] <COMMAND>"),
    ] {
        let run = sb.fails(command);
        assert!(run.stderr.contains(usage), "{command:?}: {run:?}");
    }
    let run = sb.fails(&["keys", "generate", "--out", "k.txt", "--ids", "x"]);
    assert!(run.stderr.contains("x"), "{run:?}");
    let run = sb.fails(&["table", "list", "--encrypt-tables", "sometimes"]);
    assert!(run.stderr.contains("sometimes"), "{run:?}");
    let run = sb.fails(&["table", "list", "--buffer-pool-size", "12X"]);
    assert!(run.stderr.contains("12X"), "{run:?}");

    let run = sb.ok(&["--help"]);
    assert!(run.stdout.contains("Usage:"), "{run:?}");
    let run = sb.ok(&["kv", "scan", "--help"]);
    assert!(run.stdout.contains("--reverse"), "{run:?}");
}

// ---------------------------------------------------------------------------------------
// export and import

#[test]
fn export_and_import_move_a_table_between_databases_with_different_keys() {
    const MARKER: &str = "CLI-TRANSFER-MARKER";
    let src = Sandbox::new();
    let k = ["--keyfile", src.keys()];
    src.ok(&args(&["table", "create", "orders", "--key-id", "100"], &k));
    let rows: String = (0..300)
        .map(|i| format!("key-{i:04}\t{MARKER}-{i}\n"))
        .collect();
    src.write("rows.tsv", rows);
    src.ok(&args(&["kv", "load", "orders", "rows.tsv"], &k));
    let out = src.path("export");
    let out_arg = out.to_str().unwrap();

    let run = src.ok(&args(
        &["export", "--table", "orders", "--out", out_arg],
        &k,
    ));
    assert!(run.stderr.contains("exported table orders"), "{run:?}");
    assert!(run.stderr.contains("orders.sbtk"), "{run:?}");
    for file in ["orders.sbd", "orders.sbmeta", "orders.sbtk"] {
        let bytes = std::fs::read(out.join(file)).unwrap();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "plaintext in {file}"
        );
    }
    assert_eq!(mode(&out.join("orders.sbtk")), 0o600);
    let run = src.fails(&args(
        &["export", "--table", "orders", "--out", out_arg],
        &k,
    ));
    assert!(run.stderr.contains("already exists"), "{run:?}");

    // Another database, with its own key file.
    let dst = Sandbox::new();
    let dk = ["--keyfile", dst.keys()];
    assert_ne!(src.read("keys.txt"), dst.read("keys.txt"));
    let run = dst.ok(&args(
        &["import", "--from", out_arg, "--name", "orders2"],
        &dk,
    ));
    assert!(
        run.stderr.contains("imported table orders as orders2"),
        "{run:?}"
    );
    assert!(run.stderr.contains("deleted the transfer key"), "{run:?}");
    assert!(!out.join("orders.sbtk").exists());
    assert_eq!(
        dst.ok(&args(&["kv", "get", "orders2", "key-0042"], &dk))
            .stdout,
        format!("{MARKER}-42\n")
    );
    let scan = dst.ok(&args(&["kv", "scan", "orders2"], &dk)).stdout;
    assert_eq!(scan.lines().count(), 300);
    let list = dst
        .ok(&args(&["table", "list", "--format", "tsv"], &dk))
        .stdout;
    let row: Vec<&str> = list
        .lines()
        .find(|line| line.starts_with("orders2\t"))
        .unwrap_or_else(|| panic!("orders2 is not listed: {list}"))
        .split('\t')
        .collect();
    assert_eq!((row[2], row[3]), ("yes", "100"), "{list}");
    dst.ok(&args(&["verify"], &dk));

    // The transfer key is gone, so the export cannot be imported a second time.
    let run = dst.fails(&args(
        &["import", "--from", out_arg, "--name", "orders3"],
        &dk,
    ));
    assert!(run.stderr.contains("transfer key"), "{run:?}");
}

#[test]
fn status_table_alter_and_keys_rotate_with_wait() {
    let sb = Sandbox::new();
    let [k, kf] = with_table(&sb);
    let keys = kf;
    let rows: String = (0..3000)
        .map(|i| format!("key{i:05}\tvalue{i}\n"))
        .collect();
    sb.write("rows.tsv", &rows);
    sb.ok(&[k, kf, "kv", "load", "t", "rows.tsv", "--sort"]);
    let status = |sb: &Sandbox| -> Vec<Vec<String>> {
        sb.ok(&[k, kf, "status", "--format", "tsv"])
            .stdout
            .lines()
            .map(|line| line.split('\t').map(String::from).collect())
            .collect()
    };
    let table_row = |rows: &[Vec<String>]| rows.iter().find(|r| r[1] == "t").unwrap().clone();
    let row = table_row(&status(&sb));
    assert_eq!(row.len(), 9, "space_id … pages_total: {row:?}");
    assert_eq!(&row[2..7], ["aes_ctr", "1", "1", "1", "0"]);

    let run = sb.ok(&[
        "keys",
        "rotate",
        "--keyfile",
        keys,
        "--id",
        "1",
        "--wait",
        "--encryption-rotation-iops",
        "0",
    ]);
    assert_eq!(run.stdout, "1\t2\n");
    assert!(run.stderr.contains("every page carries"), "{run:?}");
    for row in status(&sb).iter().filter(|r| r[3] == "1") {
        assert_eq!(
            (&row[4][..], &row[5][..], &row[6][..]),
            ("2", "2", "0"),
            "{row:?}"
        );
        assert_eq!(row[7], row[8], "pages_done = pages_total");
    }
    // Version 1 is no longer used anywhere: remove it and the database still opens.
    let text = sb.read_text(keys);
    let without_v1: String = text
        .lines()
        // Version 1 of key 1 is `1;<hex>` (generated without versions) or `1;1;<hex>`.
        .filter(|line| {
            let version_one = line.starts_with("1;1;")
                || (line.starts_with("1;") && line.matches(';').count() == 1);
            !version_one
        })
        .map(|line| format!("{line}\n"))
        .collect();
    sb.write(keys, &without_v1);
    assert_eq!(
        sb.ok(&[k, kf, "kv", "get", "t", "key00042"]).stdout,
        "value42\n"
    );

    sb.ok(&[
        k,
        kf,
        "table",
        "alter",
        "t",
        "--encrypted",
        "no",
        "--wait",
        "--encryption-rotation-iops",
        "0",
    ]);
    assert_eq!(table_row(&status(&sb))[2], "none");
    sb.ok(&[
        k,
        kf,
        "table",
        "alter",
        "t",
        "--encrypted",
        "yes",
        "--key-id",
        "100",
        "--wait",
        "--encryption-rotation-iops",
        "0",
    ]);
    let row = table_row(&status(&sb));
    assert_eq!((&row[2][..], &row[3][..]), ("aes_ctr", "100"));
    assert_eq!(
        sb.ok(&[k, kf, "kv", "get", "t", "key02999"]).stdout,
        "value2999\n"
    );
    let refused = sb.fails(&[
        "keys",
        "rotate",
        "--keyfile",
        keys,
        "--id",
        "1",
        "--policy",
        "rewrap",
        "--data",
        "nowhere",
    ]);
    assert!(refused.stderr.contains("holds none"), "{refused:?}");
}

#[test]
fn serve_makes_a_key_file_outside_the_data_directory_and_stops_on_sigterm() {
    let sb = Sandbox::new();
    sb.write("serve.toml", "proto_max_bulk_len = 8\n");
    let mut child = Command::new(BIN)
        .args([
            "--data",
            "served",
            "--config",
            "serve.toml",
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(sb.dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    let mut line = String::new();
    use std::io::BufRead;
    while stderr.read_line(&mut line).unwrap() > 0 {
        lines.push(std::mem::take(&mut line));
        if lines.last().unwrap().contains("serving") {
            break;
        }
    }
    let text = lines.concat();
    assert!(
        text.contains("strongbox-keys/keys.txt") && text.contains("Back it up"),
        "{text}"
    );
    assert_eq!(mode(&sb.path("strongbox-keys/keys.txt")), 0o600);
    assert!(!sb.path("served/keys.txt").exists());
    // The config file's request limits apply: a 9-byte bulk is over proto_max_bulk_len.
    let addr = text
        .split(" on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the serving line names the address");
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client
        .write_all(b"*2\r\n$4\r\nECHO\r\n$9\r\n123456789\r\n")
        .unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut client, &mut reply).unwrap();
    assert!(reply.contains("invalid bulk length"), "{reply}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM ends serve with 0: {exit:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(rest.contains("stopped cleanly"), "{rest}");
}

#[test]
fn workload_runs_encrypted_and_plain_and_writes_results() {
    let sb = Sandbox::new();
    let dbs = sb.path("dbs");
    let run = sb.ok(&[
        "workload",
        "--workload",
        "ycsb-b,scan",
        "--records",
        "500",
        "--ops",
        "400",
        "--threads",
        "1,2",
        "--buffer-pool",
        "4MiB",
        "--dir",
        dbs.to_str().unwrap(),
        "--quiet",
        "--out",
        "r.json",
        "--out",
        "r.csv",
        "--plot",
        "r.svg",
    ]);
    // The summary: a ratio column per workload, and the memory budget checked.
    assert!(run.stdout.contains("ycsb-b: ops/s"), "{}", run.stdout);
    assert!(run.stdout.contains("enc/plain"), "{}", run.stdout);
    assert!(run.stdout.contains("ok (≤ 68.0 MiB)"), "{}", run.stdout);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&sb.read_text("r.json")).unwrap();
    // 2 workloads × 2 targets × 2 thread counts.
    assert_eq!(rows.len(), 8);
    for row in &rows {
        assert_eq!(row["errors"], 0, "{row}");
        assert_eq!(row["operations"], 400, "{row}");
    }
    assert_eq!(sb.read_text("r.csv").lines().count(), 9);
    let svg = sb.read_text("r-ycsb-b.svg");
    assert!(
        svg.contains("strongbox-plain"),
        "chart legend names the targets"
    );
    assert!(sb.path("r-scan.svg").exists());
    // Each configuration's database is deleted after use.
    assert_eq!(std::fs::read_dir(&dbs).unwrap().count(), 0);

    let run = sb.run(&["workload", "--encryption", "maybe"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("--encryption must be on, off or both"),
        "{run:?}"
    );
}
