//! Generation work: the primes or their count in a range (a segmented sieve), the prime
//! counting function and the n-th prime, and products of big integers for factorials.

pub mod pi;
pub mod sieve;

/// ⌊√n⌋.
pub fn isqrt(n: u64) -> u64 {
    let mut r = (n as f64).sqrt() as u64;
    while r.checked_mul(r).is_none_or(|sq| sq > n) {
        r -= 1;
    }
    while (r + 1).checked_mul(r + 1).is_some_and(|sq| sq <= n) {
        r += 1;
    }
    r
}
pub mod product;

use std::io::Write;

use proto::jobs::{segments, JobSpec};
use rayon::prelude::*;

/// Numbers per segment when a job is run in one process (rayon shares them out).
const LOCAL_SEGMENT: u64 = 1 << 28;

/// Runs `spec` in this process and writes its answer to `out` (`worker gen`).
pub fn run_local(spec: JobSpec, method: &str, out: &mut impl Write) -> anyhow::Result<()> {
    match spec {
        JobSpec::Primes { lo, hi } => {
            let segs = segments(lo, hi, LOCAL_SEGMENT);
            // A few segments at a time, written in order.
            for group in segs.chunks(rayon::current_num_threads().max(1) * 2) {
                let lists: Vec<Vec<u64>> = group
                    .par_iter()
                    .map(|&(a, b)| sieve::primes_in(a, b))
                    .collect();
                let mut buf = Vec::with_capacity(1 << 20);
                for p in lists.iter().flatten() {
                    writeln!(buf, "{p}")?;
                }
                out.write_all(&buf)?;
            }
        }
        JobSpec::Count { lo, hi } => {
            let by_pi = match method {
                "pi" => true,
                "sieve" => false,
                _ => proto::jobs::count_by_pi(lo, hi),
            };
            let n = if by_pi {
                if hi > pi::PI_MAX {
                    anyhow::bail!("the prime-counting function goes up to 2^48; B is larger");
                }
                pi::prime_pi(hi) - lo.checked_sub(1).map_or(0, pi::prime_pi)
            } else {
                segments(lo, hi, LOCAL_SEGMENT)
                    .par_iter()
                    .map(|&(a, b)| sieve::count_primes(a, b))
                    .sum()
            };
            writeln!(out, "{n}")?;
        }
        JobSpec::Nth { n } => {
            let p = pi::nth_prime(n, |_| {})
                .ok_or_else(|| anyhow::anyhow!("nth takes N from 1 to 10^12"))?;
            writeln!(out, "{p}")?;
        }
        JobSpec::Factorial { n } => {
            writeln!(out, "{}", product::factorial(n))?;
        }
    }
    out.flush()?;
    Ok(())
}
