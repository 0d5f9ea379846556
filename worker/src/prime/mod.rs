//! Primality testing.
//!
//! - Below 2^64 the answer is exact: a sieve bitmap for small numbers, trial division by the
//!   odd primes up to [`TRIAL_LIMIT`], then ES-BPSW (a strong base-2 Miller–Rabin test and
//!   the extra strong Lucas test, see `lucas`). A composite passing it would be a base-2
//!   strong pseudoprime, and none of the complete list of those below 2^64 passes.
//! - Above 2^64 the same test runs on u128 Montgomery arithmetic or big integers. No
//!   composite is known to pass BPSW, but none is proven impossible: see the README.
//! - [`filter_primes_u64`] and [`filter_primes_u128`] test many numbers at once, running
//!   each half of the test on several numbers interleaved so that the multiplier pipeline
//!   stays busy (see `lanes`).

mod big;
mod lanes;
mod lucas;
mod mont;
mod mont128;
pub mod reference;
mod ring;
mod sieve;
mod trial;

pub use big::{filter_primes_u128, is_prime_big, is_prime_u128};
pub use sieve::{warm_up, SIEVE_LIMIT};
pub use trial::TRIAL_LIMIT;

use lucas::extra_strong_lucas;
use mont::Mont;
use ring::ModRing;

/// How many base-2 tests run interleaved in [`filter_primes_u64`]: independent Montgomery
/// multiplications in flight hide one multiplication's latency (measured: 6 beats 4 and 8).
const MR_LANES: usize = 6;
/// Lucas tests interleaved: each has two independent multiplications per bit already (4
/// measured best; 6 and 8 run out of registers and take twice as long).
const LUCAS_LANES: usize = 4;

/// Outcome of the cheap first stage for one machine word.
enum Quick {
    Prime,
    Composite,
    /// Survived trial division; needs the strong tests.
    Unknown,
}

#[inline]
fn quick(n: u64) -> Quick {
    if n < SIEVE_LIMIT {
        return if sieve::is_prime_small(n) {
            Quick::Prime
        } else {
            Quick::Composite
        };
    }
    if n & 1 == 0 || trial::has_small_factor(n) {
        return Quick::Composite;
    }
    Quick::Unknown
}

/// Exact primality of a machine word.
pub fn is_prime_u64(n: u64) -> bool {
    match quick(n) {
        Quick::Prime => true,
        Quick::Composite => false,
        Quick::Unknown => {
            let m = Mont::new(n);
            m.strong_base2() && extra_strong_lucas(&m)
        }
    }
}

/// Appends to `out` every prime in `nums` (duplicates kept, order not: numbers that need the
/// strong tests are appended when their batch completes).
///
/// Same answers as [`is_prime_u64`] on each number, faster on a batch: the numbers that
/// survive trial division are queued and their base-2 tests run `MR_LANES` at a time;
/// those that pass are queued again for Lucas tests, `LUCAS_LANES` at a time.
pub fn filter_primes_u64(nums: &[u64], out: &mut Vec<u64>) {
    let mut lanes = lanes::Pipeline::<Mont, MR_LANES, LUCAS_LANES>::new(Mont::new(3));
    for &n in nums {
        match quick(n) {
            Quick::Prime => out.push(n),
            Quick::Composite => {}
            Quick::Unknown => lanes.push(Mont::new(n), |m| out.push(m.n)),
        }
    }
    lanes.finish(|m| out.push(m.n));
}

/// Jacobi symbol (a/n) for odd n > 0.
pub(crate) fn jacobi(mut a: u64, mut n: u64) -> i32 {
    debug_assert!(n & 1 == 1);
    a %= n;
    let mut t = 1;
    while a != 0 {
        let z = a.trailing_zeros();
        a >>= z;
        if z & 1 == 1 && (n % 8 == 3 || n % 8 == 5) {
            t = -t;
        }
        if a % 4 == 3 && n % 4 == 3 {
            t = -t;
        }
        std::mem::swap(&mut a, &mut n);
        a %= n;
    }
    if n == 1 {
        t
    } else {
        0
    }
}

/// Jacobi symbol (d/n) for a small signed `d` (|d| odd), given `n mod |d|` and `n mod 8`.
/// Lets the big-integer path compute the symbol without a big division per candidate.
pub(crate) fn jacobi_signed(d: i64, n_mod_d: u64, n_mod_8: u64) -> i32 {
    let a = d.unsigned_abs();
    // (|d| / n) = (n / |d|) * (-1)^((|d|-1)/2 * (n-1)/2) by reciprocity (both odd).
    let mut j = if a == 1 { 1 } else { jacobi(n_mod_d, a) };
    if a % 4 == 3 && n_mod_8 % 4 == 3 {
        j = -j;
    }
    // (-1 / n) = (-1)^((n-1)/2)
    if d < 0 && n_mod_8 % 4 == 3 {
        j = -j;
    }
    j
}

#[cfg(test)]
mod tests;
