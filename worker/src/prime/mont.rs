//! Montgomery arithmetic modulo an odd 64-bit number, and an interleaved strong base-2 test.

use super::ring::ModRing;

/// Montgomery context for an odd modulus `n` with R = 2^64.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mont {
    pub n: u64,
    /// n^-1 mod 2^64.
    ninv: u64,
    /// R mod n: the Montgomery form of 1.
    pub one: u64,
}

impl Mont {
    /// `n` MUST be odd and greater than 1.
    #[inline]
    pub fn new(n: u64) -> Self {
        debug_assert!(n & 1 == 1 && n > 1);
        // n*n ≡ 1 (mod 8) for odd n, so n is its own inverse to 3 bits; each Newton step
        // doubles the correct bits: 3, 6, 12, 24, 48, 96.
        let mut inv = n;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n.wrapping_mul(inv)));
        }
        let one = 0u64.wrapping_sub(n) % n;
        Mont { n, ninv: inv, one }
    }

    /// a * b * R^-1 mod n, for a, b < n.
    #[inline(always)]
    pub fn mul(&self, a: u64, b: u64) -> u64 {
        let t = a as u128 * b as u128;
        let lo = t as u64;
        let hi = (t >> 64) as u64;
        let m = lo.wrapping_mul(self.ninv);
        let mn_hi = ((m as u128 * self.n as u128) >> 64) as u64;
        // t - m*n has a zero low word, so the high words subtract without a borrow in.
        let (r, borrow) = hi.overflowing_sub(mn_hi);
        if borrow {
            r.wrapping_add(self.n)
        } else {
            r
        }
    }

    #[inline(always)]
    pub fn add(&self, a: u64, b: u64) -> u64 {
        let (s, c) = a.overflowing_add(b);
        if c || s >= self.n {
            s.wrapping_sub(self.n)
        } else {
            s
        }
    }

    #[inline(always)]
    pub fn sub(&self, a: u64, b: u64) -> u64 {
        let (d, b) = a.overflowing_sub(b);
        if b {
            d.wrapping_add(self.n)
        } else {
            d
        }
    }

    /// x / 2 mod n (n odd).
    #[inline(always)]
    #[cfg_attr(not(test), allow(dead_code))] // the strong Lucas cross-check uses it
    pub fn half(&self, x: u64) -> u64 {
        if x & 1 == 0 {
            x >> 1
        } else {
            // (x + n) / 2 without overflowing: both are odd.
            (x >> 1) + (self.n >> 1) + 1
        }
    }
}

impl ModRing for Mont {
    type E = u64;
    type X = u128;
    #[inline(always)]
    fn one(&self) -> u64 {
        self.one
    }
    #[inline(always)]
    fn zero(&self) -> u64 {
        0
    }
    #[inline(always)]
    fn mul(&self, a: &u64, b: &u64) -> u64 {
        Mont::mul(self, *a, *b)
    }
    #[inline(always)]
    fn add(&self, a: &u64, b: &u64) -> u64 {
        Mont::add(self, *a, *b)
    }
    #[inline(always)]
    fn sub(&self, a: &u64, b: &u64) -> u64 {
        Mont::sub(self, *a, *b)
    }
    #[inline(always)]
    fn half(&self, a: &u64) -> u64 {
        Mont::half(self, *a)
    }
    fn n_mod(&self, m: u64) -> u64 {
        self.n % m
    }
    fn is_square(&self) -> bool {
        let r = self.n.isqrt();
        r * r == self.n
    }
    #[inline(always)]
    fn n_minus_1(&self) -> u128 {
        self.n as u128 - 1
    }
    #[inline(always)]
    fn n_plus_1(&self) -> u128 {
        self.n as u128 + 1
    }
}
