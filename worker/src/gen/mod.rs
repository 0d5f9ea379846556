//! Generation work, the algorithms: the primes or their count in a range (a segmented
//! sieve), the prime counting function and the n-th prime, and products of big integers
//! for factorials. Which job uses which, and how, is `crate::kinds`.

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

use proto::jobs::segments;
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
    out: &mut dyn Write,
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

/// Writes the primes of [lo, hi], one per line (`worker gen primes`). Streamed: a few
/// segments at a time (one per thread, twice over) are sieved and formatted in parallel,
/// then written in order, so memory stays flat (a few MB a segment) for any range; the
/// bucket sieve where it is estimated cheaper.
pub fn write_primes(lo: u64, hi: u64, out: &mut dyn Write) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads().max(1);
    if use_bucket(lo, hi, threads) {
        return write_bucket_primes(lo, hi, threads, out);
    }
    let segs = segments(lo, hi, STREAM_SEGMENT);
    for group in segs.chunks(threads * 2) {
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
    Ok(())
}

/// The number of primes in [lo, hi] in this process (`worker gen count`): by `method`
/// `pi` (the prime-counting function), `bucket` or `plain` (a sieve), or `auto` (the
/// cheapest by the cost model).
pub fn count_local(lo: u64, hi: u64, method: &str) -> anyhow::Result<u64> {
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
    Ok(if by_pi {
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
    })
}

/// What a generation task produced.
#[derive(Debug, Default)]
pub struct WorkDone {
    /// A `primes` task's primes, ascending (sent into primes.txt).
    pub primes: Vec<u64>,
    /// How many were found (listed or counted), for `task_done`'s `primes`.
    pub count: u64,
    /// The task's answer (a count, π, a prime, a product, a kind's own encoding).
    pub answer: Option<String>,
}

/// Sieves [lo, hi] for a task: its primes listed (`list`) or counted (the count also in
/// `answer`); None if `cancel` was set (checked between segments).
pub fn sieve_work(
    lo: u64,
    hi: u64,
    list: bool,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<Option<WorkDone>> {
    let mut done = WorkDone::default();
    if lo > hi {
        anyhow::bail!("empty range [{lo}, {hi}]");
    }
    // A worker runs one task per thread (as many as rayon's), each with its share of the
    // bucket sieve's memory.
    let threads = rayon::current_num_threads().max(1);
    if use_bucket(lo, hi, threads) {
        let mut s = bucket::BucketSieve::new(lo, hi, sieve_memory(threads));
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
    } else {
        let mut s = sieve::RangeSieve::new(lo, hi);
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
    }
    if list {
        done.count = done.primes.len() as u64;
    } else {
        done.answer = Some(done.count.to_string());
    }
    Ok(Some(done))
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
        write_primes(lo, hi, &mut out).expect("run");
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
