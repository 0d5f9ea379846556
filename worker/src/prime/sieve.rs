//! A bitmap of the odd primes below [`SIEVE_LIMIT`], built on first use.

use std::sync::OnceLock;

/// Numbers below this are answered by one bit lookup. 2^24 covers the common "small numbers"
/// inputs; the bitmap of odd numbers costs 1 MiB and about 20 ms to build, once per process.
pub const SIEVE_LIMIT: u64 = 1 << 24;

static BITS: OnceLock<Vec<u64>> = OnceLock::new();

fn build() -> Vec<u64> {
    // bit i stands for 2i + 1; set = composite (or 1).
    let odd = (SIEVE_LIMIT / 2) as usize;
    let mut bits = vec![0u64; odd.div_ceil(64)];
    bits[0] |= 1; // 1 is not prime
    let mut i = 1usize;
    while (2 * i + 1) * (2 * i + 1) < SIEVE_LIMIT as usize {
        if bits[i / 64] >> (i % 64) & 1 == 0 {
            let p = 2 * i + 1;
            let mut j = (p * p) / 2;
            while j < odd {
                bits[j / 64] |= 1 << (j % 64);
                j += p;
            }
        }
        i += 1;
    }
    bits
}

/// Builds the bitmap now if no one has (a worker does it on a spare thread while it
/// connects, so that its first task does not wait for it).
pub fn warm_up() {
    BITS.get_or_init(build);
}

/// Exact primality of n < SIEVE_LIMIT.
#[inline]
pub(crate) fn is_prime_small(n: u64) -> bool {
    debug_assert!(n < SIEVE_LIMIT);
    if n & 1 == 0 {
        return n == 2;
    }
    let bits = BITS.get_or_init(build);
    let i = (n / 2) as usize;
    bits[i / 64] >> (i % 64) & 1 == 0
}
