//! Shared by the fuzz test files of several crates (each includes it with
//! `#[path = "../../test-support/reservation.rs"] mod reservation;`): a check that a call
//! reserved no large block of memory from a hostile length field (issue 8 §5,
//! `docs/RELIABILITY.md` §6).
//!
//! It reads `VmPeak` from `/proc/self/status` (Linux) instead of counting allocations, so
//! the tests need no global allocator and no `unsafe`: a reservation that is never touched
//! shows in the peak virtual size but not in the resident size. The peak only grows, so
//! this catches a reservation above the earlier peak; the claims tested are gigabytes, far
//! above it. Elsewhere the check is skipped.

/// Peak virtual memory of this process, in KiB.
fn vm_peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmPeak:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `f` and asserts that the process' peak virtual size grew by less than 256 MiB.
pub fn without_large_reservation<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let before = vm_peak_kib();
    let out = f();
    if let (Some(before), Some(after)) = (before, vm_peak_kib()) {
        assert!(
            after.saturating_sub(before) < 256 * 1024,
            "{what}: peak virtual size grew by {} MiB",
            (after - before) / 1024
        );
    }
    out
}
