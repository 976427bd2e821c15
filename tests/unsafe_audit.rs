//! Where `unsafe` may appear (issue 8 §7, `docs/RELIABILITY.md` §7).
//!
//! The engine, keyring, redo log, server and CLI crates say `#![forbid(unsafe_code)]`, so
//! the compiler refuses `unsafe` in them. That does not cover test files, benches, binaries
//! of the benches crate or the fuzz targets, so this test reads every `.rs` file of the
//! repository and checks two rules:
//!
//! 1. `unsafe` code (a block, `unsafe fn`, `unsafe impl`) appears only in the modules of
//!    [`ALLOWED`], each of which says why;
//! 2. every `unsafe` there has a `// SAFETY:` comment on one of the three lines above it.
//!
//! The scan is by line, after dropping `//` comments: good enough for this code base,
//! where `unsafe` otherwise appears only in comments and in lint names like `unsafe_code`.

use std::path::{Path, PathBuf};

/// The modules allowed to hold `unsafe`, with the reason.
const ALLOWED: &[(&str, &str)] = &[(
    "benches/src/workload/resources.rs",
    "libc getrusage (peak RSS) and malloc_trim (release freed heap before measuring)",
)];

/// Directories never scanned: build output and fetched fuzz corpora.
const SKIPPED_DIRS: &[&str] = &["target", ".git", "corpus", "artifacts"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_ref()) && !name.starts_with("target") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The code part of a line: everything before a `//` comment.
fn code_of(line: &str) -> &str {
    line.find("//").map_or(line, |at| &line[..at])
}

/// True if `code` uses the keyword `unsafe` (not a longer identifier such as `unsafe_code`).
fn uses_unsafe(code: &str) -> bool {
    code.match_indices("unsafe").any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + "unsafe".len()..].chars().next();
        let is_ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !is_ident(before) && !is_ident(after) && !code[..at].contains('"')
    })
}

#[test]
fn unsafe_code_lives_only_in_the_allowed_modules_each_with_a_safety_comment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let this_file = Path::new(file!());
    let mut files = Vec::new();
    rust_files(root, &mut files);
    assert!(files.len() > 50, "found only {} .rs files", files.len());

    let mut problems = Vec::new();
    let mut uses_in_allowed = 0;
    for path in &files {
        let relative = path.strip_prefix(root).unwrap();
        if relative == this_file {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let allowed = ALLOWED.iter().any(|(p, _)| relative == Path::new(p));
        for (i, line) in lines.iter().enumerate() {
            if !uses_unsafe(code_of(line)) {
                continue;
            }
            let place = format!("{}:{}", relative.display(), i + 1);
            if !allowed {
                problems.push(format!("{place}: `unsafe` outside the allowed modules"));
                continue;
            }
            uses_in_allowed += 1;
            let justified = lines[i.saturating_sub(3)..i]
                .iter()
                .any(|above| above.trim_start().starts_with("// SAFETY:"));
            if !justified {
                problems.push(format!("{place}: `unsafe` without a `// SAFETY:` comment"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The allowed module really is where the unsafe code is (the scan would see it).
    assert!(
        uses_in_allowed >= 1,
        "no `unsafe` found even in {ALLOWED:?}"
    );
}

#[test]
fn the_scan_recognises_the_keyword_and_ignores_comments_and_lint_names() {
    assert!(uses_unsafe("    let x = unsafe { f() };"));
    assert!(uses_unsafe("unsafe impl Send for X {}"));
    assert!(!uses_unsafe("#![forbid(unsafe_code)]"));
    assert!(!uses_unsafe(code_of("let a = 1; // unsafe here")));
    assert!(!uses_unsafe(r#"assert!(msg.contains("unsafe"));"#));
}
