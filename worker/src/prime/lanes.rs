//! Both halves of BPSW on several numbers at once, interleaved: every lane walks the same
//! number of exponent bits (top-aligned: a leading 0 bit leaves the base-2 power at 1 and
//! the Lucas pair at (V_0, V_1) = (2, P)), so the multiplications of all lanes are
//! independent and overlap in the multiplier's pipeline instead of waiting for one
//! another's latency. Same answers as the one-number tests. For machine words (u64) and
//! u128, through [`LaneRing`].

use super::lucas::{baillie_p, finish_extra_strong};
use super::mont::Mont;
use super::mont128::Mont128;
use super::ring::ModRing;

/// An exponent the interleaved tests consume from its top bit.
pub(crate) trait LaneExp: Copy {
    /// Significant bits.
    fn bits(self) -> u32;
    /// Shifted so that its bit `top - 1` is the top bit (`top` >= its significant bits).
    fn align(self, top: u32) -> Self;
    /// Takes the top bit and shifts the rest up.
    fn take_top(&mut self) -> bool;
}

macro_rules! lane_exp {
    ($t:ty) => {
        impl LaneExp for $t {
            #[inline(always)]
            fn bits(self) -> u32 {
                <$t>::BITS - self.leading_zeros()
            }
            #[inline(always)]
            fn align(self, top: u32) -> Self {
                self << (<$t>::BITS - top.clamp(1, <$t>::BITS))
            }
            #[inline(always)]
            fn take_top(&mut self) -> bool {
                let b = *self >> (<$t>::BITS - 1) == 1;
                *self <<= 1;
                b
            }
        }
    };
}

lane_exp!(u64);
lane_exp!(u128);

/// A ring whose elements are machine values, with its two exponents as machine values.
pub(crate) trait LaneRing: ModRing<E: Copy> + Copy {
    type Word: LaneExp;
    /// [`extra_strong_lucas_lanes`] on this ring (a ring may bring a faster one of its own).
    #[inline(always)]
    fn lucas_lanes<const L: usize>(ms: &[Self; L]) -> [bool; L] {
        extra_strong_lucas_lanes(ms)
    }
    /// (d, s) with n - 1 = d * 2^s, d odd.
    fn minus_one_split(&self) -> (Self::Word, u64);
    /// (k, s) with n + 1 = k * 2^s, k odd. n + 1 MUST fit (n below the type's maximum).
    fn plus_one_split(&self) -> (Self::Word, u64);
}

impl LaneRing for Mont {
    type Word = u64;
    /// The generic loop, instantiated for machine words, ran the 64-bit primes benchmark
    /// in 2.1-2.4 ms against 1.5 ms for the same loop written for `Mont` (identical source
    /// but for the types; LLVM schedules the two differently).
    #[inline(always)]
    fn lucas_lanes<const L: usize>(ms: &[Self; L]) -> [bool; L] {
        super::lucas::extra_strong_lucas_lanes_u64(ms)
    }
    #[inline(always)]
    fn minus_one_split(&self) -> (u64, u64) {
        let x = self.n - 1;
        let s = x.trailing_zeros();
        (x >> s, s as u64)
    }
    #[inline(always)]
    fn plus_one_split(&self) -> (u64, u64) {
        // 2^64 - 1 is divisible by 3: trial division never lets it get here.
        debug_assert!(self.n < u64::MAX);
        let x = self.n.wrapping_add(1);
        let s = x.trailing_zeros();
        (x >> s, s as u64)
    }
}

impl LaneRing for Mont128 {
    type Word = u128;
    #[inline(always)]
    fn minus_one_split(&self) -> (u128, u64) {
        let x = self.n_minus_1();
        let s = x.trailing_zeros();
        (x >> s, s as u64)
    }
    #[inline(always)]
    fn plus_one_split(&self) -> (u128, u64) {
        let x = self.n_plus_1();
        let s = x.trailing_zeros();
        (x >> s, s as u64)
    }
}

/// Strong base-2 tests of `L` numbers at once: 2^d by squaring and doubling.
#[inline(always)]
pub(crate) fn strong_base2_lanes<R: LaneRing, const L: usize>(ms: &[R; L]) -> [bool; L] {
    let split: [(R::Word, u64); L] = std::array::from_fn(|i| ms[i].minus_one_split());
    let top = split.iter().map(|(d, _)| d.bits()).max().unwrap_or(0);
    let mut d: [R::Word; L] = std::array::from_fn(|i| split[i].0.align(top));
    let mut x: [R::E; L] = std::array::from_fn(|i| ms[i].one());
    for _ in 0..top {
        for i in 0..L {
            let m = &ms[i];
            let y = m.sqr(&x[i]);
            let dbl = m.add(&y, &y);
            x[i] = if d[i].take_top() { dbl } else { y };
        }
    }
    std::array::from_fn(|i| ms[i].finish_strong(x[i], split[i].1))
}

/// Extra strong Lucas tests (Baillie's P, Q = 1) of `L` numbers at once.
pub(crate) fn extra_strong_lucas_lanes<R: LaneRing, const L: usize>(ms: &[R; L]) -> [bool; L] {
    let mut alive = [true; L];
    let mut pm = [ms[0].one(); L];
    let mut two = [ms[0].one(); L];
    let mut k = [ms[0].plus_one_split().0; L];
    let mut s = [0u64; L];
    let mut top = 0;
    for i in 0..L {
        let m = &ms[i];
        // A lane with no P is composite; it runs along with P = 1 and is not believed.
        match baillie_p(m) {
            Some(p) => pm[i] = m.small(p),
            None => {
                alive[i] = false;
                pm[i] = m.one();
            }
        }
        two[i] = m.add(&m.one(), &m.one());
        (k[i], s[i]) = m.plus_one_split();
        top = top.max(k[i].bits());
    }
    for ki in &mut k {
        *ki = ki.align(top);
    }
    // (V_j, V_{j+1}) from (V_0, V_1) = (2, P); with Q = 1:
    // V_2j = V_j² − 2, V_2j+1 = V_j V_j+1 − P.
    let mut v = two;
    let mut w = pm;
    for _ in 0..top {
        for i in 0..L {
            let m = &ms[i];
            let one_bit = k[i].take_top();
            let vw = m.sub(&m.mul(&v[i], &w[i]), &pm[i]);
            let x = if one_bit { w[i] } else { v[i] };
            let sq = m.sub(&m.mul(&x, &x), &two[i]);
            (v[i], w[i]) = if one_bit { (vw, sq) } else { (sq, vw) };
        }
    }
    let mut out = [false; L];
    for i in 0..L {
        out[i] = alive[i] && finish_extra_strong(&ms[i], v[i], w[i], &pm[i], &two[i], s[i]);
    }
    out
}

/// Numbers waiting for a test in lanes, and the two stages: a number that passes the base-2
/// test of its batch joins the next Lucas batch; one that passes that is prime (or, above
/// 2^64, a BPSW probable prime).
pub(crate) struct Pipeline<R: LaneRing, const MR: usize, const LU: usize> {
    mr: Queue<R, MR>,
    lucas: Queue<R, LU>,
}

struct Queue<R, const L: usize> {
    ms: [R; L],
    len: usize,
}

impl<R: LaneRing, const MR: usize, const LU: usize> Pipeline<R, MR, LU> {
    /// `filler` stands in the empty lanes (never tested).
    pub fn new(filler: R) -> Self {
        Pipeline {
            mr: Queue {
                ms: [filler; MR],
                len: 0,
            },
            lucas: Queue {
                ms: [filler; LU],
                len: 0,
            },
        }
    }

    /// Queues `m`; `prime` gets every number found prime meanwhile.
    #[inline]
    pub fn push(&mut self, m: R, mut prime: impl FnMut(&R)) {
        self.mr.ms[self.mr.len] = m;
        self.mr.len += 1;
        if self.mr.len < MR {
            return;
        }
        self.mr.len = 0;
        let pass = strong_base2_lanes(&self.mr.ms);
        for (m, ok) in self.mr.ms.iter().zip(pass) {
            if !ok {
                continue;
            }
            self.lucas.ms[self.lucas.len] = *m;
            self.lucas.len += 1;
            if self.lucas.len == LU {
                self.lucas.len = 0;
                let pass = R::lucas_lanes(&self.lucas.ms);
                for (m, ok) in self.lucas.ms.iter().zip(pass) {
                    if ok {
                        prime(m);
                    }
                }
            }
        }
    }

    /// Tests what is still queued, one number at a time.
    pub fn finish(&mut self, mut prime: impl FnMut(&R)) {
        for m in &self.mr.ms[..self.mr.len] {
            if m.strong_base2() && super::lucas::extra_strong_lucas(m) {
                prime(m);
            }
        }
        for m in &self.lucas.ms[..self.lucas.len] {
            if super::lucas::extra_strong_lucas(m) {
                prime(m);
            }
        }
        self.mr.len = 0;
        self.lucas.len = 0;
    }
}
