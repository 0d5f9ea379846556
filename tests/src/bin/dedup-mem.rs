//! `dedup-mem N`: memory of the coordinator's dedup set holding N distinct 64-bit numbers.
//! Writes N distinct numbers as a primes.txt (a bijective mix of 0..N, so no repeats), opens
//! it with the coordinator's own `PrimesFile` (which rebuilds the set), and prints the peak
//! and current resident memory and the bytes per entry. The set does not care whether the
//! numbers are prime, so this measures the real structure without finding 50 M primes.

use std::io::Write;

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000_000);
    let dir = std::env::args().nth(2).unwrap_or_else(|| ".".into());
    let path = std::path::Path::new(&dir).join("dedup-mem-primes.txt");
    {
        let f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        for i in 0..n {
            // splitmix64 finaliser: a bijection on u64, so distinct inputs stay distinct.
            let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            writeln!(w, "{z}").unwrap_or_else(|e| panic!("writing: {e}"));
        }
        w.flush().unwrap_or_else(|e| panic!("writing: {e}"));
    }
    let before = rss_kib("VmRSS:");
    let t = std::time::Instant::now();
    let f = coordinator::primes::PrimesFile::open(&path).unwrap_or_else(|e| panic!("open: {e:#}"));
    let secs = t.elapsed().as_secs_f64();
    let after = rss_kib("VmRSS:");
    let peak = rss_kib("VmHWM:");
    println!(
        "{} distinct entries: resident {} MiB after load ({:.1} bytes per entry), peak {} MiB ({:.1} bytes per entry), load {:.1} s",
        f.len(),
        after / 1024,
        (after - before) as f64 * 1024.0 / n as f64,
        peak / 1024,
        peak as f64 * 1024.0 / n as f64,
        secs
    );
    drop(f);
    let _ = std::fs::remove_file(&path);
}
