//! Slow, obviously-correct implementations used to check the fast ones and as benchmark
//! baselines. Not for production use.

/// Trial division by every odd number up to sqrt(n).
pub fn is_prime_trial(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3u64;
    while d.saturating_mul(d) <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

fn mulmod(a: u64, b: u64, n: u64) -> u64 {
    (a as u128 * b as u128 % n as u128) as u64
}

fn powmod(mut a: u64, mut e: u64, n: u64) -> u64 {
    let mut r = 1 % n;
    a %= n;
    while e > 0 {
        if e & 1 == 1 {
            r = mulmod(r, a, n);
        }
        a = mulmod(a, a, n);
        e >>= 1;
    }
    r
}

/// Strong probable-prime test of odd n > 2 to base a, with plain u128 division.
pub fn strong_probable_prime(n: u64, a: u64) -> bool {
    let s = (n - 1).trailing_zeros();
    let d = (n - 1) >> s;
    let mut x = powmod(a, d, n);
    if x == 1 || x == n - 1 || a % n == 0 {
        return true;
    }
    for _ in 1..s {
        x = mulmod(x, x, n);
        if x == n - 1 {
            return true;
        }
    }
    false
}

/// The textbook deterministic Miller–Rabin for 64 bits: Jim Sinclair's seven bases
/// {2, 325, 9375, 28178, 450775, 9780504, 1795265022}, one number at a time.
pub fn is_prime_mr7(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    for p in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        if n % p == 0 {
            return n == p;
        }
    }
    [2u64, 325, 9375, 28178, 450775, 9780504, 1795265022]
        .iter()
        .all(|&a| strong_probable_prime(n, a))
}
