//! BPSW above 2^64: Montgomery on u128 up to 2^128, num-bigint beyond.

use num_bigint::BigUint;
use num_traits::{One, ToPrimitive, Zero};

use super::lucas::extra_strong_lucas;
use super::mont128::Mont128;
use super::ring::{Exponent, ModRing};
use super::trial::TABLE;

/// Products of consecutive odd primes, each fitting in a u64, so trial division of a big
/// number costs one short division per product instead of one per prime.
fn trial_products() -> &'static [(u64, std::ops::Range<usize>)] {
    use std::sync::OnceLock;
    static P: OnceLock<Vec<(u64, std::ops::Range<usize>)>> = OnceLock::new();
    P.get_or_init(|| {
        let mut out = Vec::new();
        let mut start = 0;
        let mut prod: u64 = 1;
        for (i, &(p, _, _)) in TABLE.iter().enumerate() {
            match prod.checked_mul(p) {
                Some(x) => prod = x,
                None => {
                    out.push((prod, start..i));
                    start = i;
                    prod = p;
                }
            }
        }
        out.push((prod, start..TABLE.len()));
        out
    })
}

/// True if an odd prime up to the trial limit divides n, given n mod each product.
fn has_small_factor(rem: impl Fn(u64) -> u64) -> bool {
    trial_products().iter().any(|(prod, range)| {
        let r = rem(*prod);
        TABLE[range.clone()].iter().any(|&(p, _, _)| r % p == 0)
    })
}

/// BPSW primality of any non-negative integer (exact below 2^64).
pub fn is_prime_big(n: &BigUint) -> bool {
    if let Some(x) = n.to_u128() {
        return is_prime_u128(x);
    }
    if !n.bit(0) {
        return false;
    }
    if has_small_factor(|m| rem_u64(n, m)) {
        return false;
    }
    let r = BigRing { n: n.clone() };
    r.strong_base2() && extra_strong_lucas(&r)
}

/// Primality of a number below 2^128: exact below 2^64, BPSW above (see the module doc).
pub fn is_prime_u128(n: u128) -> bool {
    match u64::try_from(n) {
        Ok(x) => super::is_prime_u64(x),
        Err(_) => n & 1 == 1 && is_prime_u128_above_64(n),
    }
}

/// The Montgomery context of an odd 2^64 < n < 2^128 that needs the strong tests, or
/// `None` when trial division settles it (composite).
pub(crate) fn u128_candidate(n: u128) -> Option<Mont128> {
    // u128::MAX is divisible by 3; excluding it keeps n + 1 in range.
    if n == u128::MAX || super::trial::has_small_factor_u128(n) {
        return None;
    }
    Some(Mont128::new(n))
}

/// Appends to `out` every number of `nums` that is prime (exact below 2^64, BPSW above),
/// testing the numbers above 2^64 interleaved like [`super::filter_primes_u64`] does
/// machine words (duplicates kept, order not).
pub fn filter_primes_u128(nums: &[u128], out: &mut Vec<u128>) {
    let filler = Mont128::new((1 << 64) + 1);
    let mut lanes = super::lanes::Pipeline::<Mont128, 2, 2>::new(filler);
    for &n in nums {
        match u64::try_from(n) {
            Ok(x) => {
                if super::is_prime_u64(x) {
                    out.push(n);
                }
            }
            Err(_) if n & 1 == 0 => {}
            Err(_) => {
                if let Some(m) = u128_candidate(n) {
                    lanes.push(m, |m| out.push(m.n()));
                }
            }
        }
    }
    lanes.finish(|m| out.push(m.n()));
}

/// BPSW for odd 2^64 < n < 2^128.
fn is_prime_u128_above_64(n: u128) -> bool {
    let Some(m) = u128_candidate(n) else {
        return false;
    };
    m.strong_base2() && extra_strong_lucas(&m)
}

fn rem_u64(n: &BigUint, m: u64) -> u64 {
    // The remainder is below m, so it always fits.
    (n % m).to_u64().unwrap_or(0)
}

impl Exponent for BigUint {
    fn trailing_zeros(&self) -> u64 {
        BigUint::trailing_zeros(self).unwrap_or(0)
    }
    fn shr(&self, s: u64) -> Self {
        self >> s
    }
    fn bits(&self) -> u64 {
        BigUint::bits(self)
    }
    fn bit(&self, i: u64) -> bool {
        BigUint::bit(self, i)
    }
}

/// Plain residues modulo a big odd n (reduction by division).
struct BigRing {
    n: BigUint,
}

impl ModRing for BigRing {
    type E = BigUint;
    type X = BigUint;
    fn one(&self) -> BigUint {
        BigUint::one()
    }
    fn zero(&self) -> BigUint {
        BigUint::zero()
    }
    fn mul(&self, a: &BigUint, b: &BigUint) -> BigUint {
        a * b % &self.n
    }
    fn add(&self, a: &BigUint, b: &BigUint) -> BigUint {
        let s = a + b;
        if s >= self.n {
            s - &self.n
        } else {
            s
        }
    }
    fn sub(&self, a: &BigUint, b: &BigUint) -> BigUint {
        if a >= b {
            a - b
        } else {
            a + &self.n - b
        }
    }
    fn half(&self, a: &BigUint) -> BigUint {
        if a.bit(0) {
            (a + &self.n) >> 1
        } else {
            a >> 1
        }
    }
    fn n_mod(&self, m: u64) -> u64 {
        rem_u64(&self.n, m)
    }
    fn is_square(&self) -> bool {
        let r = self.n.sqrt();
        &r * &r == self.n
    }
    fn n_minus_1(&self) -> BigUint {
        &self.n - 1u32
    }
    fn n_plus_1(&self) -> BigUint {
        &self.n + 1u32
    }
    /// num-bigint's modpow uses Montgomery multiplication internally for odd moduli, which
    /// beats the generic square-and-double with division-based reduction.
    fn strong_base2(&self) -> bool {
        let nm1 = self.n_minus_1();
        let s = Exponent::trailing_zeros(&nm1);
        let d = &nm1 >> s;
        self.finish_strong(BigUint::from(2u32).modpow(&d, &self.n), s)
    }
}
