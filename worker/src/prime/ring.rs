//! The arithmetic that the strong tests need, as a trait, so one implementation of each test
//! serves machine words (Montgomery, 64 and 128 bits) and big integers (num-bigint).

/// Exponents the tests walk bit by bit (n - 1 and n + 1).
pub(crate) trait Exponent {
    fn trailing_zeros(&self) -> u64;
    fn shr(&self, s: u64) -> Self;
    /// Number of significant bits.
    fn bits(&self) -> u64;
    fn bit(&self, i: u64) -> bool;
}

impl Exponent for u128 {
    #[inline(always)]
    fn trailing_zeros(&self) -> u64 {
        u128::trailing_zeros(*self) as u64
    }
    #[inline(always)]
    fn shr(&self, s: u64) -> Self {
        *self >> s
    }
    #[inline(always)]
    fn bits(&self) -> u64 {
        128 - self.leading_zeros() as u64
    }
    #[inline(always)]
    fn bit(&self, i: u64) -> bool {
        (*self >> i) & 1 == 1
    }
}

/// Arithmetic modulo an odd n > 2, in the representation that suits n's size. Elements are
/// always reduced (in [0, n) of the representation).
pub(crate) trait ModRing {
    type E: Clone + PartialEq;
    type X: Exponent;
    fn one(&self) -> Self::E;
    fn zero(&self) -> Self::E;
    fn mul(&self, a: &Self::E, b: &Self::E) -> Self::E;
    /// a * a (an implementation may square faster than it multiplies).
    #[inline(always)]
    fn sqr(&self, a: &Self::E) -> Self::E {
        self.mul(a, a)
    }
    fn add(&self, a: &Self::E, b: &Self::E) -> Self::E;
    fn sub(&self, a: &Self::E, b: &Self::E) -> Self::E;
    /// x / 2 mod n.
    #[cfg_attr(not(test), allow(dead_code))] // the strong Lucas cross-check uses it
    fn half(&self, a: &Self::E) -> Self::E;
    /// n mod m, for a small m > 0.
    fn n_mod(&self, m: u64) -> u64;
    fn is_square(&self) -> bool;
    fn n_minus_1(&self) -> Self::X;
    /// n + 1; callers guarantee it does not overflow the exponent type.
    fn n_plus_1(&self) -> Self::X;

    /// The element for a small integer k < n, by doubling and adding (a handful of adds).
    fn small(&self, k: u64) -> Self::E {
        let mut x = self.zero();
        let one = self.one();
        for i in (0..64 - k.leading_zeros()).rev() {
            x = self.add(&x, &x);
            if (k >> i) & 1 == 1 {
                x = self.add(&x, &one);
            }
        }
        x
    }

    /// The element for a small signed integer.
    #[cfg_attr(not(test), allow(dead_code))] // the strong Lucas cross-check uses it
    fn signed(&self, k: i64) -> Self::E {
        let x = self.small(k.unsigned_abs());
        if k < 0 {
            self.sub(&self.zero(), &x)
        } else {
            x
        }
    }

    /// Strong probable-prime test to base 2: 2^d by squaring and doubling (a doubling is an
    /// add, not a multiply).
    fn strong_base2(&self) -> bool {
        let nm1 = self.n_minus_1();
        let s = nm1.trailing_zeros();
        let d = nm1.shr(s);
        let mut x = self.one();
        for i in (0..d.bits()).rev() {
            x = self.sqr(&x);
            if d.bit(i) {
                x = self.add(&x, &x);
            }
        }
        self.finish_strong(x, s)
    }

    /// The squaring tail of Miller–Rabin: x = a^d with n - 1 = d * 2^s.
    fn finish_strong(&self, mut x: Self::E, s: u64) -> bool {
        let one = self.one();
        let minus_one = self.sub(&self.zero(), &one);
        if x == one || x == minus_one {
            return true;
        }
        for _ in 1..s {
            x = self.sqr(&x);
            if x == minus_one {
                return true;
            }
            if x == one {
                return false;
            }
        }
        false
    }
}
