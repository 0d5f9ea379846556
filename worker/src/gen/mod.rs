//! Generation work: the primes or their count in a range (a segmented sieve), the prime
//! counting function and the n-th prime, and products of big integers for factorials.

pub mod bucket;
pub mod lmo;
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

use std::sync::atomic::{AtomicBool, Ordering};

use proto::jobs::{segments, JobSpec};
use proto::msg::Work;
use rayon::prelude::*;

/// Numbers per segment when a count is run in one process (rayon shares them out).
const LOCAL_SEGMENT: u64 = 1 << 28;
/// Numbers per segment when `worker gen` lists primes: about 600,000 primes (8 MB of
/// text) near 10^12, held per thread until written.
const STREAM_SEGMENT: u64 = 1 << 24;

/// Bytes of bucket-sieve windows and their buckets in one process, shared by its threads
/// (a window each): with the rest of a worker (~30 MiB) its peak RSS stays under 256 MiB.
pub const SIEVE_MEMORY: usize = 208 << 20;

/// Memory of one bucket sieve when `threads` sieve at once.
pub fn sieve_memory(threads: usize) -> usize {
    SIEVE_MEMORY / threads.max(1)
}

/// Numbers of one bucket-sieve window when `threads` sieve at once.
pub fn window_numbers(threads: usize) -> u64 {
    bucket::window_numbers(sieve_memory(threads))
}

/// Whether the bucket sieve is estimated cheaper than the plain one for [lo, hi] with
/// `threads` sieving at once ([`proto::jobs::sieve_plan`]).
pub fn use_bucket(lo: u64, hi: u64, threads: usize) -> bool {
    proto::jobs::sieve_plan(lo, hi, window_numbers(threads)).bucket
}

/// Writes the primes of [lo, hi] by the bucket sieve: `threads` windows sieved at once,
/// each then written in order, its text formatted in parallel pieces of ~1 MB. Memory:
/// the windows ([`SIEVE_MEMORY`] in all) and 4 pieces of text per thread.
fn write_bucket_primes(
    lo: u64,
    hi: u64,
    threads: usize,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    /// Window bytes per piece of text (2 M numbers: ~45,000 primes near 2^64).
    const PIECE: usize = 1 << 16;
    let memory = sieve_memory(threads);
    let pieces = segments(lo, hi, bucket::window_numbers_for(lo, hi, memory));
    for group in pieces.chunks(threads) {
        let mut sieves: Vec<bucket::BucketSieve> = group
            .par_iter()
            .with_max_len(1)
            .map(|&(a, b)| {
                let mut s = bucket::BucketSieve::new(a, b, memory);
                s.sieve_next();
                s
            })
            .collect();
        for s in &mut sieves {
            // One window per piece of the range as planned; any further one in turn.
            loop {
                if let Some(w) = s.window() {
                    let n = w.len().div_ceil(PIECE).max(1);
                    let ks: Vec<usize> = (0..n).collect();
                    for ks in ks.chunks(threads * 4) {
                        let texts: Vec<Vec<u8>> = ks
                            .par_iter()
                            .map(|&k| {
                                let mut ps = Vec::new();
                                w.primes_of(k * PIECE, (k + 1) * PIECE, &mut ps);
                                let mut text = Vec::with_capacity(ps.len() * 21);
                                for p in ps {
                                    push_decimal(&mut text, p);
                                }
                                text
                            })
                            .collect();
                        for t in &texts {
                            out.write_all(t)?;
                        }
                    }
                }
                if !s.sieve_next() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Appends `n` in decimal and a newline.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
    out.push(b'\n');
}

/// Runs `spec` in this process and writes its answer to `out` (`worker gen`).
pub fn run_local(spec: JobSpec, method: &str, out: &mut impl Write) -> anyhow::Result<()> {
    match spec {
        JobSpec::Primes { lo, hi } if use_bucket(lo, hi, rayon::current_num_threads()) => {
            write_bucket_primes(lo, hi, rayon::current_num_threads().max(1), out)?;
        }
        JobSpec::Primes { lo, hi } => {
            // Streamed: a few segments at a time (one per thread, twice over) are sieved
            // and formatted in parallel, then written in order, so memory stays flat
            // (a few MB a segment) for any range.
            let segs = segments(lo, hi, STREAM_SEGMENT);
            for group in segs.chunks(rayon::current_num_threads().max(1) * 2) {
                let texts: Vec<Vec<u8>> = group
                    .par_iter()
                    .map(|&(a, b)| {
                        let mut text = Vec::new();
                        let mut s = sieve::RangeSieve::new(a, b);
                        let mut ps = Vec::new();
                        while let Some(seg) = s.next_segment() {
                            ps.clear();
                            seg.primes(&mut ps);
                            for &p in &ps {
                                push_decimal(&mut text, p);
                            }
                        }
                        text
                    })
                    .collect();
                for t in &texts {
                    out.write_all(t)?;
                }
            }
        }
        JobSpec::Count { lo, hi } => {
            let threads = rayon::current_num_threads().max(1);
            let by_pi = match method {
                "pi" => true,
                "auto" => proto::jobs::count_by_pi(lo, hi),
                _ => false,
            };
            let bucket = match method {
                "bucket" => true,
                "plain" => false,
                _ => use_bucket(lo, hi, threads),
            };
            let n = if by_pi {
                if hi > pi::PI_MAX {
                    anyhow::bail!("the prime-counting function goes up to 2^60; B is larger");
                }
                pi::prime_pi(hi) - lo.checked_sub(1).map_or(0, pi::prime_pi)
            } else if bucket {
                // One piece per thread (more if a piece would not fit one window), each
                // with its share of the memory.
                let width = ((hi - lo) / threads as u64 + 1).min(window_numbers(threads));
                let memory = sieve_memory(threads);
                segments(lo, hi, width)
                    .par_iter()
                    .with_max_len(1)
                    .map(|&(a, b)| bucket::count_primes(a, b, memory))
                    .sum()
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
                .ok_or_else(|| anyhow::anyhow!("nth takes N from 1 to 10^16"))?;
            writeln!(out, "{p}")?;
        }
        JobSpec::Factorial { n } => {
            writeln!(out, "{}", product::factorial(n))?;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `worker gen primes` prints the sieve's primes, one per line, across segment edges.
    #[test]
    fn streamed_primes_match_the_sieve() {
        let lo = 1_000_000_000_000 - 5;
        let hi = lo + 3 * STREAM_SEGMENT + 12_345;
        let mut out = Vec::new();
        run_local(JobSpec::Primes { lo, hi }, "auto", &mut out).expect("run");
        let want: String = sieve::primes_in(lo, hi)
            .iter()
            .map(|p| format!("{p}\n"))
            .collect();
        assert!(out == want.as_bytes(), "the listing differs");
        let mut d = Vec::new();
        for n in [0u64, 7, 10, u64::MAX] {
            push_decimal(&mut d, n);
        }
        assert_eq!(d, b"0\n7\n10\n18446744073709551615\n");
    }
}

/// What a generation task produced.
#[derive(Debug, Default)]
pub struct WorkDone {
    /// A `primes` task's primes, ascending.
    pub primes: Vec<u64>,
    /// Primes found (listed or counted).
    pub count: u64,
    /// The answer of a count, π, n-th prime or product task.
    pub answer: Option<String>,
}

/// Runs one generation task; `progress` is told how many of its numbers are done. None if
/// `cancel` was set (checked between segments).
pub fn run_work(
    work: &Work,
    cancel: &AtomicBool,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Option<WorkDone>> {
    let mut done = WorkDone::default();
    match work {
        Work::Primes { lo, hi } | Work::Count { lo, hi } => {
            if lo > hi {
                anyhow::bail!("empty range [{lo}, {hi}]");
            }
            let list = matches!(work, Work::Primes { .. });
            // A worker runs one task per thread (as many as rayon's), each with its share
            // of the bucket sieve's memory.
            let threads = rayon::current_num_threads().max(1);
            if use_bucket(*lo, *hi, threads) {
                let mut s = bucket::BucketSieve::new(*lo, *hi, sieve_memory(threads));
                loop {
                    if cancel.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                    if !s.sieve_next() {
                        break;
                    }
                    let Some(w) = s.window() else { break };
                    if list {
                        w.primes(&mut done.primes);
                    } else {
                        done.count += w.count();
                    }
                    progress(w.span().1 - lo + 1);
                }
                if list {
                    done.count = done.primes.len() as u64;
                } else {
                    done.answer = Some(done.count.to_string());
                }
                return Ok(Some(done));
            }
            let mut s = sieve::RangeSieve::new(*lo, *hi);
            while let Some(seg) = s.next_segment() {
                if cancel.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                if list {
                    seg.primes(&mut done.primes);
                } else {
                    done.count += seg.count();
                }
                let (_, last) = seg.span();
                progress(last - lo + 1);
            }
            if list {
                done.count = done.primes.len() as u64;
            } else {
                done.answer = Some(done.count.to_string());
            }
        }
        Work::Pi { x } => {
            if *x > pi::PI_MAX {
                anyhow::bail!("pi({x}): the prime-counting function goes up to 2^60");
            }
            done.answer = Some(pi::prime_pi(*x).to_string());
        }
        Work::Nth { n } => {
            let p = pi::nth_prime(*n, |_| {})
                .ok_or_else(|| anyhow::anyhow!("nth takes N from 1 to 10^16, not {n}"))?;
            done.answer = Some(p.to_string());
        }
        Work::PiPart { x, k, part } => {
            let a = lmo::run_part(*x, *k as usize, *part as usize)
                .map_err(|e| anyhow::anyhow!("pi part: {e}"))?;
            done.answer = Some(a.encode());
        }
        Work::NthNear { n, x, pi } => {
            let p = pi::nth_near(*n, *x, *pi).ok_or_else(|| {
                anyhow::anyhow!("the {n}-th prime is not near {x} if pi({x}) = {pi}")
            })?;
            done.answer = Some(p.to_string());
        }
        Work::Multiply { factors, decimal } => {
            let hex = product::multiply_hex(factors)?;
            done.answer = Some(if *decimal {
                product::from_hex(&hex)?.to_str_radix(10)
            } else {
                hex
            });
        }
    }
    Ok(Some(done))
}
