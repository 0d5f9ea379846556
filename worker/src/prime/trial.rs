//! Trial division by the odd primes up to [`TRIAL_LIMIT`] without a single division:
//! for odd p, p divides n exactly when n * p^-1 (mod 2^64) <= (2^64 - 1) / p.

/// Largest trial divisor. Trial division up to here leaves about 17% of random odd 64-bit
/// numbers for the strong tests; going further costs more than the tests it saves.
pub const TRIAL_LIMIT: u64 = 727;

const fn odd_primes_count() -> usize {
    let mut c = 0;
    let mut p = 3;
    while p <= TRIAL_LIMIT {
        if is_prime_const(p) {
            c += 1;
        }
        p += 2;
    }
    c
}

const fn is_prime_const(n: u64) -> bool {
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    n >= 2
}

const COUNT: usize = odd_primes_count();

/// (p, p^-1 mod 2^64, (2^64 - 1) / p) for every odd prime p <= TRIAL_LIMIT, ascending.
pub(crate) const TABLE: [(u64, u64, u64); COUNT] = {
    let mut t = [(0u64, 0u64, 0u64); COUNT];
    let mut i = 0;
    let mut p = 3;
    while p <= TRIAL_LIMIT {
        if is_prime_const(p) {
            let mut inv = p;
            let mut k = 0;
            while k < 5 {
                inv = inv.wrapping_mul(2u64.wrapping_sub(p.wrapping_mul(inv)));
                k += 1;
            }
            t[i] = (p, inv, u64::MAX / p);
            i += 1;
        }
        p += 2;
    }
    t
};

/// True if an odd prime <= TRIAL_LIMIT divides n. n MUST be larger than TRIAL_LIMIT (else
/// n would be reported as its own factor).
#[inline]
pub(crate) fn has_small_factor(n: u64) -> bool {
    TABLE
        .iter()
        .any(|&(_, inv, lim)| n.wrapping_mul(inv) <= lim)
}

/// (p^-1 mod 2^128, (2^128 - 1) / p) for the same primes as [`TABLE`]: the same
/// division-free test for numbers up to 2^128 (a u128 remainder by a u64 is a library call
/// of a few dozen cycles; this is three multiplications).
const TABLE128: [(u128, u128); COUNT] = {
    let mut t = [(0u128, 0u128); COUNT];
    let mut i = 0;
    while i < COUNT {
        let p = TABLE[i].0 as u128;
        let mut inv = p;
        let mut k = 0;
        while k < 6 {
            inv = inv.wrapping_mul(2u128.wrapping_sub(p.wrapping_mul(inv)));
            k += 1;
        }
        t[i] = (inv, u128::MAX / p);
        i += 1;
    }
    t
};

/// True if an odd prime <= TRIAL_LIMIT divides n (n larger than TRIAL_LIMIT).
#[inline]
pub(crate) fn has_small_factor_u128(n: u128) -> bool {
    TABLE128
        .iter()
        .any(|&(inv, lim)| n.wrapping_mul(inv) <= lim)
}
