//! Montgomery arithmetic modulo an odd number below 2^128 (R = 2^128), for the numbers
//! between 2^64 and 2^128, where num-bigint's allocations would cost 10-30x more.

use super::ring::ModRing;

/// Full 256-bit product of two u128 values, as (low, high).
#[inline(always)]
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    let (a0, a1) = (a as u64 as u128, a >> 64);
    let (b0, b1) = (b as u64 as u128, b >> 64);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    // Each term is below 2^64, so the sum is below 3 * 2^64.
    let mid = (p00 >> 64) + (p01 as u64 as u128) + (p10 as u64 as u128);
    let lo = (p00 as u64 as u128) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (lo, hi)
}

/// Montgomery context for an odd modulus 2^64 < n < 2^128 - 1.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mont128 {
    n: u128,
    /// n^-1 mod 2^128.
    ninv: u128,
    /// 2^128 mod n.
    one: u128,
}

impl Mont128 {
    /// `n` MUST be odd, above 2^64 and below 2^128 - 1 (so that n + 1 fits).
    pub fn new(n: u128) -> Self {
        debug_assert!(n & 1 == 1 && n > u64::MAX as u128 && n < u128::MAX);
        // Correct to 3 bits, then each Newton step doubles: 3, 6, 12, 24, 48, 96, 192.
        let mut inv = n;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u128.wrapping_sub(n.wrapping_mul(inv)));
        }
        Mont128 {
            n,
            ninv: inv,
            one: 0u128.wrapping_sub(n) % n,
        }
    }
}

impl ModRing for Mont128 {
    type E = u128;
    type X = u128;
    #[inline(always)]
    fn one(&self) -> u128 {
        self.one
    }
    #[inline(always)]
    fn zero(&self) -> u128 {
        0
    }
    #[inline(always)]
    fn mul(&self, a: &u128, b: &u128) -> u128 {
        let (lo, hi) = mul_wide(*a, *b);
        let m = lo.wrapping_mul(self.ninv);
        let (_, mn_hi) = mul_wide(m, self.n);
        // t - m*n has a zero low half, so the high halves subtract without a borrow in.
        let (r, borrow) = hi.overflowing_sub(mn_hi);
        if borrow {
            r.wrapping_add(self.n)
        } else {
            r
        }
    }
    #[inline(always)]
    fn add(&self, a: &u128, b: &u128) -> u128 {
        let (s, c) = a.overflowing_add(*b);
        if c || s >= self.n {
            s.wrapping_sub(self.n)
        } else {
            s
        }
    }
    #[inline(always)]
    fn sub(&self, a: &u128, b: &u128) -> u128 {
        let (d, b) = a.overflowing_sub(*b);
        if b {
            d.wrapping_add(self.n)
        } else {
            d
        }
    }
    #[inline(always)]
    fn half(&self, x: &u128) -> u128 {
        if x & 1 == 0 {
            x >> 1
        } else {
            (x >> 1) + (self.n >> 1) + 1
        }
    }
    fn n_mod(&self, m: u64) -> u64 {
        (self.n % m as u128) as u64
    }
    fn is_square(&self) -> bool {
        let r = self.n.isqrt();
        r * r == self.n
    }
    fn n_minus_1(&self) -> u128 {
        self.n - 1
    }
    fn n_plus_1(&self) -> u128 {
        self.n + 1
    }
}
