//! Montgomery arithmetic modulo an odd number below 2^128 (R = 2^128), for the numbers
//! between 2^64 and 2^128, where num-bigint's allocations would cost 10-30x more.

use super::ring::ModRing;

/// a + b*c + d as (low, high) words: at most (2^64 - 1)^2 + 2 (2^64 - 1) = 2^128 - 1, so it
/// never overflows.
#[inline(always)]
fn mac(a: u64, b: u64, c: u64, d: u64) -> (u64, u64) {
    let t = a as u128 + b as u128 * c as u128 + d as u128;
    (t as u64, (t >> 64) as u64)
}

/// a + b as (sum, carry).
#[inline(always)]
fn adc(a: u64, b: u64) -> (u64, u64) {
    let (s, c) = a.overflowing_add(b);
    (s, c as u64)
}

/// Montgomery context for an odd modulus 2^64 < n < 2^128 - 1, on 64-bit words: a product
/// is 4 word multiplications (3 for a square) and the reduction, one word at a time, 2 more
/// per word plus one for the word's quotient — 10 (9) in all, against 11 when the quotient
/// is computed modulo 2^128 at once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mont128 {
    n: u128,
    n0: u64,
    n1: u64,
    /// -n^-1 mod 2^64.
    nneg: u64,
    /// 2^128 mod n.
    one: u128,
}

impl Mont128 {
    /// `n` MUST be odd, above 2^64 and below 2^128 - 1 (so that n + 1 fits).
    pub fn new(n: u128) -> Self {
        debug_assert!(n & 1 == 1 && n > u64::MAX as u128 && n < u128::MAX);
        let n0 = n as u64;
        // Correct to 3 bits, then each Newton step doubles: 3, 6, 12, 24, 48, 96.
        let mut inv = n0;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n0.wrapping_mul(inv)));
        }
        Mont128 {
            n,
            n0,
            n1: (n >> 64) as u64,
            nneg: inv.wrapping_neg(),
            one: 0u128.wrapping_sub(n) % n,
        }
    }

    pub fn n(&self) -> u128 {
        self.n
    }

    /// t * 2^-128 mod n for t = (t0, t1, t2, t3) < n * 2^128, reduced.
    #[inline(always)]
    fn redc(&self, t0: u64, t1: u64, t2: u64, t3: u64) -> u128 {
        let m = t0.wrapping_mul(self.nneg);
        let (_, c) = mac(t0, m, self.n0, 0);
        let (t1, c) = mac(t1, m, self.n1, c);
        let (t2, c) = adc(t2, c);
        let (t3, t4) = adc(t3, c);
        let m = t1.wrapping_mul(self.nneg);
        let (_, c) = mac(t1, m, self.n0, 0);
        let (t2, c) = mac(t2, m, self.n1, c);
        let (t3, c) = adc(t3, c);
        let t4 = t4 + c;
        // Below 2n: one subtraction at most.
        let r = t2 as u128 | (t3 as u128) << 64;
        if t4 != 0 || r >= self.n {
            r.wrapping_sub(self.n)
        } else {
            r
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
        let (a0, a1) = (*a as u64, (*a >> 64) as u64);
        let (b0, b1) = (*b as u64, (*b >> 64) as u64);
        let (t0, c) = mac(0, a0, b0, 0);
        let (t1, t2) = mac(c, a1, b0, 0);
        let (t1, c) = mac(t1, a0, b1, 0);
        let (t2, t3) = mac(t2, a1, b1, c);
        self.redc(t0, t1, t2, t3)
    }
    #[inline(always)]
    fn sqr(&self, a: &u128) -> u128 {
        let (a0, a1) = (*a as u64, (*a >> 64) as u64);
        // a^2 = a0^2 + 2 a0 a1 2^64 + a1^2 2^128, word by word; each column sums to less
        // than 2^66, so its carry fits in the next one.
        let (l0, h0) = mac(0, a0, a0, 0);
        let (x0, x1) = mac(0, a0, a1, 0);
        let (l2, h2) = mac(0, a1, a1, 0);
        let s1 = h0 as u128 + 2 * x0 as u128;
        let s2 = l2 as u128 + 2 * x1 as u128 + (s1 >> 64);
        let (t1, t2) = (s1 as u64, s2 as u64);
        let t3 = h2 + (s2 >> 64) as u64;
        self.redc(l0, t1, t2, t3)
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
