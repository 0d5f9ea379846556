//! `trim_heap` gives freed multi-megabyte buffers back to the system. Alone in its test
//! binary: the process's RSS is what it measures, so no other test may allocate meanwhile.

/// The process's resident set, in bytes (`/proc/self/statm`, in pages).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("reading /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's second field");
    // SAFETY: sysconf takes a plain integer.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn freed_large_buffers_leave_the_resident_set() {
    const MIB: usize = 1 << 20;
    // As a coordinator meets them: one large message freed (glibc's mmap threshold rises to
    // its size), then many buffers of a few MiB, from the heap now, written and freed.
    drop(std::hint::black_box(vec![1u8; 8 * MIB]));
    let bufs: Vec<Vec<u8>> = (0..24).map(|i| vec![i as u8 + 1; 4 * MIB]).collect();
    // Held above them, so no free shrinks the heap's top by itself.
    let pin = std::hint::black_box(vec![7u8; 64 * 1024]);
    let before_free = rss();
    drop(std::hint::black_box(bufs));
    let freed = rss();
    proto::process::trim_heap();
    let trimmed = rss();
    drop(pin);
    let mib = |b: u64| b / MIB as u64;
    eprintln!(
        "rss: {} MiB written, {} MiB freed, {} MiB trimmed",
        mib(before_free),
        mib(freed),
        mib(trimmed)
    );
    assert!(
        freed + 64 * MIB as u64 > before_free,
        "glibc gave the buffers back by itself: this test no longer shows anything"
    );
    assert!(
        trimmed + 64 * MIB as u64 <= freed,
        "trim_heap left the freed buffers resident: {} MiB before, {} MiB after",
        mib(freed),
        mib(trimmed)
    );
}
