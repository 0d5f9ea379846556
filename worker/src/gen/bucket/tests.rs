//! The bucket sieve against the exact test, the plain sieve and primesieve's counts: ranges
//! across windows, regions and segments, and the top of u64.

use super::*;
use crate::gen::sieve;
use crate::prime;

/// A small memory (windows of 3 segments, 94 M numbers), so that tests cross windows.
const MEM: usize = 3 * (SEGMENT_BYTES + SEGMENT_BYTES / 4);
/// The least memory: windows of one segment (31 M numbers), no classic buckets.
const ONE: usize = 0;
/// A worker's memory: up to 10^17 every sieving prime is in the classic buckets; near
/// 2^64 the smaller ones (up to ~4 * 10^8 for a short range).
const BIG: usize = crate::gen::SIEVE_MEMORY;

fn naive(lo: u64, hi: u64) -> Vec<u64> {
    (lo..=hi).filter(|&n| prime::is_prime_u64(n)).collect()
}

/// xorshift64*, seeded: the seed is printed and the case is in the assert messages.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The exact ceiling quotient, including at the top of u64 where f64 rounds.
#[test]
fn div_ceil_is_exact() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..100_000 {
        let n = rng(&mut seed);
        let p = (rng(&mut seed) >> 32).max(1 << 12);
        assert_eq!(div_ceil(n, p), n.div_ceil(p), "{n} / {p}");
    }
    for (n, p) in [
        (u64::MAX, 4_294_967_291),
        (u64::MAX, 4099),
        (0, 4099),
        (u64::MAX - 1, 65_537),
        (1 << 53, 4_194_319),
    ] {
        assert_eq!(div_ceil(n, p), n.div_ceil(p), "{n} / {p}");
    }
}

/// Short ranges at random places below 2^58 (sieving primes up to 2^29): the listing
/// equals the exact test's, and the count too.
#[test]
fn random_ranges_match_the_exact_test() {
    let seed0 = 0x5eed_0029u64;
    println!("seed {seed0:#x}");
    let mut seed = seed0;
    for case in 0..40 {
        let bits = 10 + rng(&mut seed) % 49;
        let lo = rng(&mut seed) >> (64 - bits);
        let hi = lo.saturating_add(rng(&mut seed) % 30_000);
        let want = naive(lo, hi);
        assert_eq!(primes_in(lo, hi, MEM), want, "case {case}: [{lo}, {hi}]");
        assert_eq!(primes_in(lo, hi, BIG), want, "case {case}: [{lo}, {hi}]");
        assert_eq!(count_primes(lo, hi, MEM), want.len() as u64, "[{lo}, {hi}]");
    }
    for (lo, hi) in [
        (0, 0),
        (0, 1),
        (2, 2),
        (0, 1023),
        (1000, 1100),
        (1020, 1030),
        (5, 4),
        (0, 3_000_000),
    ] {
        assert_eq!(primes_in(lo, hi, MEM), naive(lo, hi), "[{lo}, {hi}]");
    }
}

/// Ranges across window, segment and bucket-region edges agree with the plain sieve,
/// near 2^50 (every sieving prime above 2^22 in the classic buckets) and near 2^62 (the
/// larger ones found again in each window).
#[test]
fn window_and_region_edges() {
    for (base, memory) in [(1u64 << 50, ONE), (1 << 50, BIG), (1 << 62, ONE)] {
        let window = 30 * window_for(ONE).max(SEGMENT_BYTES) as u64;
        let lo = base - window - 1000;
        let hi = base + 1000;
        let got = primes_in(lo, hi, memory);
        let want = sieve::primes_in(lo, hi);
        assert_eq!(got.len(), want.len(), "[{lo}, {hi}]");
        assert!(got == want, "[{lo}, {hi}]: listings differ");
    }
    // A short range straddling a region edge inside a window.
    let edge = (1u64 << 50) + 30 * REGION_BYTES as u64;
    let (a, b) = (edge - 200, edge + 200);
    assert_eq!(primes_in(a, b, ONE), naive(a, b), "[{a}, {b}]");
}

/// The top of u64: the last window's last byte holds numbers above 2^64 - 1, and the
/// sieving primes go up to 2^32 - 5.
#[test]
fn the_top_of_u64() {
    let top = u64::MAX;
    let lo = top - 3_000_000;
    let mut s = BucketSieve::new(lo, top, BIG);
    let mut got = Vec::new();
    while let Some(w) = s.next_window() {
        w.primes(&mut got);
    }
    assert_eq!(got, naive(lo, top), "[{lo}, 2^64 - 1]");
    assert_eq!(got.last(), Some(&18_446_744_073_709_551_557));
    assert_eq!(count_primes(top, top, MEM), 0, "[2^64 - 1, 2^64 - 1]");
}

/// Counts checked against primesieve 11.0 (`primesieve A B --count`, run on this
/// workplace's VM on 2026-12-06).
#[test]
fn counts_match_primesieve() {
    const COUNTS: [(u64, u64, u64); 4] = [
        (1_000_000_000_000, 1_000_300_000_000, 10_858_588),
        (17_592_186_044_416, 17_592_286_044_416, 3_277_064),
        (1_000_000_000_000_000, 1_000_000_100_000_000, 2_893_937),
        (
            4_611_686_018_427_387_904,
            4_611_686_018_527_387_904,
            2_327_342,
        ),
    ];
    for (lo, hi, want) in COUNTS {
        assert_eq!(count_primes(lo, hi, MEM), want, "[{lo}, {hi}]");
        assert_eq!(count_primes(lo, hi, BIG), want, "[{lo}, {hi}]");
    }
}

/// The long counts of BENCHMARKS.md against primesieve 11.0 (`primesieve A B --count`):
/// 7 s and 5 s in release, so run with `--ignored`.
#[test]
#[ignore]
fn long_counts_match_primesieve() {
    let memory = crate::gen::SIEVE_MEMORY;
    for (lo, hi, want) in [
        (u64::MAX - (1 << 32) + 1, u64::MAX, 96_798_093),
        (1_000_000_000_000_000, 1_000_010_000_000_000, 289_531_946),
        (18_446_744_073_699_551_615, u64::MAX, 225_271),
    ] {
        assert_eq!(count_primes(lo, hi, memory), want, "[{lo}, {hi}]");
    }
}
