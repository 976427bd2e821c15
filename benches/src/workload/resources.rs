//! Peak resident memory and bytes on disk, for the report.
//!
//! Linux is the measured platform; elsewhere each function says what it falls back to.
//!
//! | function               | Linux source                            | elsewhere                  |
//! |------------------------|-----------------------------------------|----------------------------|
//! | [`reset_peak_rss`]     | write `5` to `/proc/self/clear_refs`    | `false`: cannot reset      |
//! | [`peak_rss_bytes`]     | `VmHWM` in `/proc/self/status`          | `getrusage` `ru_maxrss`    |
//! | [`current_rss_bytes`]  | `VmRSS` in `/proc/self/status`          | `None`                     |
//! | [`dir_bytes`]          | `st_blocks * 512`, summed recursively   | file lengths (apparent)    |
//! | [`dir_len`]            | file lengths, summed recursively        | the same                   |
//!
//! Measuring one phase's peak: call [`reset_peak_rss`] before it and [`peak_rss_bytes`]
//! after. The reset sets the high-water mark to the current RSS, so the reading after is
//! the largest RSS the process reached since, whatever it held before. Where the reset
//! fails (kernels before 4.0, non-Linux), the peak is the whole process's lifetime peak,
//! and a report should say so.
//!
//! The numbers are for the whole process: in-process peers, the generator's own buffers
//! and the histograms all count.

use std::io;
use std::path::Path;

/// Resets the kernel's peak-RSS counter (`VmHWM`) for this process to its current RSS.
///
/// Writes `5` to `/proc/self/clear_refs` (Linux 4.0 and later). Returns whether it
/// worked; `false` means later [`peak_rss_bytes`] readings still cover the whole life of
/// the process. Does not touch `getrusage`'s `ru_maxrss`, which cannot be reset.
pub fn reset_peak_rss() -> bool {
    #[cfg(target_os = "linux")]
    {
        std::fs::write("/proc/self/clear_refs", b"5").is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The most memory this process has had resident, in bytes, since it started or since
/// the last successful [`reset_peak_rss`].
///
/// Reads `VmHWM` from `/proc/self/status`. Where that is missing it falls back to
/// `getrusage(RUSAGE_SELF).ru_maxrss`, a lifetime peak that [`reset_peak_rss`] does not
/// reset. `None` if neither is available.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM").or_else(rusage_max_rss_bytes)
}

/// The memory this process has resident now, in bytes: `VmRSS` from `/proc/self/status`.
/// `None` where there is no such file (non-Linux).
pub fn current_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS")
}

/// Reads one `Name:   1234 kB` line of `/proc/self/status` as bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kib(&status, field).map(|kib| kib * 1024)
}

/// Finds `field` in the text of a `/proc/<pid>/status` file and returns its value in KiB.
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        let number = value.trim().strip_suffix("kB")?.trim();
        number.parse().ok()
    })
}

/// `getrusage(RUSAGE_SELF).ru_maxrss` in bytes (Linux and the BSDs report KiB, macOS
/// bytes).
#[cfg(unix)]
fn rusage_max_rss_bytes() -> Option<u64> {
    // SAFETY: `getrusage` only writes the struct we pass; all-zero is a valid `rusage`.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return None;
        }
        usage
    };
    let max_rss = u64::try_from(usage.ru_maxrss).ok()?;
    if cfg!(target_vendor = "apple") {
        Some(max_rss)
    } else {
        Some(max_rss * 1024)
    }
}

#[cfg(not(unix))]
fn rusage_max_rss_bytes() -> Option<u64> {
    None
}

/// Bytes allocated on disk for everything under `path` (itself included if it is a
/// file), recursively.
///
/// On unix this is `st_blocks * 512` per entry, so a sparse or preallocated file counts
/// the blocks it really holds, not its length; elsewhere it is the apparent size
/// ([`dir_len`]). Symbolic links are not followed. A file linked twice under `path`
/// counts twice. Entries that vanish during the walk (a store deleting a file while it
/// is measured) count as zero; `path` itself must exist.
pub fn dir_bytes(path: &Path) -> io::Result<u64> {
    walk(path, &allocated)
}

/// The apparent size of everything under `path`: the sum of file lengths, recursively,
/// as `du --apparent-size` counts them. Same walk as [`dir_bytes`].
pub fn dir_len(path: &Path) -> io::Result<u64> {
    walk(path, &|metadata| metadata.len())
}

#[cfg(unix)]
fn allocated(metadata: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    // `st_blocks` is in 512-byte units whatever the file system's block size.
    metadata.blocks() * 512
}

#[cfg(not(unix))]
fn allocated(metadata: &std::fs::Metadata) -> u64 {
    metadata.len()
}

/// Sums `size` over `path` and, if it is a directory, everything under it.
fn walk(path: &Path, size: &dyn Fn(&std::fs::Metadata) -> u64) -> io::Result<u64> {
    let metadata = std::fs::symlink_metadata(path)?;
    let mut total = size(&metadata);
    if metadata.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            match walk(&entry.path(), size) {
                Ok(bytes) => total += bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(total)
}

/// `n` bytes for a person: `512 B`, `1.5 KiB`, `12.0 MiB`, `3.2 GiB` (one decimal, binary
/// units, GiB the largest).
pub fn format_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)];
    if n < 1024 {
        return format!("{n} B");
    }
    // Pick the unit on the rounded value, so 1048575 B reads `1.0 MiB`, not `1024.0 KiB`.
    // Tenths are computed in integers so no value rounds differently from its neighbours.
    let tenths = |unit: u64| (u128::from(n) * 10 + u128::from(unit) / 2) / u128::from(unit);
    let (name, unit) = UNITS
        .iter()
        .copied()
        .rev()
        .find(|&(_, unit)| tenths(unit) >= 10)
        .expect("n >= 1024 so KiB fits");
    let t = tenths(unit);
    format!("{}.{} {name}", t / 10, t % 10)
}

/// Hands memory the allocator holds but nothing uses back to the kernel, so resident
/// memory measures what is live (glibc keeps freed small blocks, such as the frames of a
/// closed buffer pool, resident otherwise).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it has no
    // preconditions and touches no memory the program still uses.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_bytes_picks_unit_and_rounds_to_one_decimal() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (10 * 1024 + 102, "10.1 KiB"),
            ((1 << 20) - 1, "1.0 MiB"),
            (64 << 20, "64.0 MiB"),
            ((3 << 30) + (1 << 29), "3.5 GiB"),
            (5 << 40, "5120.0 GiB"),
            (u64::MAX, "17179869184.0 GiB"),
        ];
        for (n, expected) in cases {
            assert_eq!(format_bytes(n), expected, "format_bytes({n})");
        }
    }

    #[test]
    fn status_lines_parse_to_kib() {
        let status = "Name:\tbench\nVmHWM:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(123_456));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(2_048));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert_eq!(parse_status_kib("VmRSSx: 1 kB\n", "VmRSS"), None);
    }

    #[test]
    fn peak_grows_with_a_touched_allocation_and_falls_after_reset() {
        const SIZE: u64 = 64 << 20;
        let linux = cfg!(target_os = "linux");
        if linux {
            assert!(reset_peak_rss(), "writing /proc/self/clear_refs failed");
        }
        let Some(before) = peak_rss_bytes() else {
            eprintln!("no peak-RSS source on this platform; nothing to check");
            return;
        };
        // Non-zero fill so every page is written (a zeroed Vec may stay unmapped).
        let touched = std::hint::black_box(vec![1u8; SIZE as usize]);
        let with_vec = peak_rss_bytes().expect("peak was readable before");
        drop(touched);
        // Without a reset the peak may already have been above before + SIZE.
        let grown = if linux { before + SIZE / 2 } else { SIZE };
        assert!(
            with_vec >= grown,
            "peak {} after touching 64 MiB, {} before",
            format_bytes(with_vec),
            format_bytes(before)
        );

        if linux {
            assert!(reset_peak_rss(), "writing /proc/self/clear_refs failed");
            let after_reset = peak_rss_bytes().expect("peak was readable before");
            // Other tests may allocate meanwhile; half the Vec is margin enough.
            assert!(
                after_reset + SIZE / 2 <= with_vec,
                "peak {} after reset and drop, {} with the Vec",
                format_bytes(after_reset),
                format_bytes(with_vec)
            );
            assert!(current_rss_bytes().expect("VmRSS on Linux") > 0);
        }
    }

    /// A byte stream that does not compress, so a compressing file system allocates
    /// at least its length.
    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn dir_sizes_sum_files_recursively() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), noise(100_000)).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b"), noise(10_000)).unwrap();
        std::fs::write(dir.path().join("sub/empty"), b"").unwrap();

        let apparent = dir_len(dir.path()).unwrap();
        // Directories have a length of their own on most file systems: count files only.
        let dirs = std::fs::metadata(dir.path()).unwrap().len()
            + std::fs::metadata(dir.path().join("sub")).unwrap().len();
        assert_eq!(apparent - dirs, 110_000);

        let allocated = dir_bytes(dir.path()).unwrap();
        assert!(allocated >= 110_000, "allocated {allocated}");
        assert_eq!(dir_len(&dir.path().join("a")).unwrap(), 100_000);
        assert!(dir_bytes(&dir.path().join("missing")).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn dir_bytes_counts_what_a_sparse_file_really_uses() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("sparse")).unwrap();
        file.set_len(16 << 20).unwrap();
        assert!(dir_len(dir.path()).unwrap() >= 16 << 20);
        let allocated = dir_bytes(dir.path()).unwrap();
        assert!(
            allocated < 1 << 20,
            "a 16 MiB hole allocates {}",
            format_bytes(allocated)
        );
    }
}
