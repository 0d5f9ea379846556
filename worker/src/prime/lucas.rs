//! Lucas probable-prime tests, the second half of BPSW.
//!
//! Production uses the **extra strong** Lucas test with Baillie's parameters (Q = 1 and the
//! first P = 3, 4, 5, ... with (P² − 4 / n) = −1), as GMP-era libraries such as
//! libtommath do: with Q = 1 only the V sequence is needed, two multiplications per bit
//! instead of four or five. Combined with a strong base-2 test this is ES-BPSW. Any
//! composite that passes must be a base-2 strong pseudoprime; checked against the complete
//! list of those below 2^64 (Feitsma–Galway), none passes the extra strong test, so below
//! 2^64 the answer is exact. [`strong_lucas`] (Selfridge's parameters, the original BPSW) is
//! kept as an independent cross-check in the tests.

use super::jacobi_signed;
use super::mont::Mont;
use super::ring::{Exponent, ModRing};

/// Jacobi symbol (a / n) for a small a ≥ 0 and odd n, from `n mod m` for small m.
fn jacobi_small<R: ModRing>(a: u64, r: &R) -> i32 {
    let n8 = r.n_mod(8);
    let e = a.trailing_zeros();
    let o = a >> e;
    let mut j = 1;
    // (2 / n) = -1 when n ≡ 3, 5 (mod 8).
    if e % 2 == 1 && (n8 == 3 || n8 == 5) {
        j = -j;
    }
    if o == 1 {
        return j;
    }
    j * jacobi_signed(o as i64, r.n_mod(o), n8)
}

/// Baillie's search for P. `None` when n is certainly composite (gcd(P² − 4, n) > 1, or n
/// is a perfect square, for which no P exists). n MUST exceed every P² − 4 tried, which
/// holds for n above the trial-division limit.
pub(crate) fn baillie_p<R: ModRing>(r: &R) -> Option<u64> {
    for p in 3u64.. {
        match jacobi_small(p * p - 4, r) {
            -1 => return Some(p),
            0 => return None,
            _ => {}
        }
        if p == 8 && r.is_square() {
            return None;
        }
    }
    unreachable!("the loop above only exits by returning")
}

/// Extra strong Lucas test of the odd n behind `r`, n > the trial-division limit.
pub(crate) fn extra_strong_lucas<R: ModRing>(r: &R) -> bool {
    let Some(p) = baillie_p(r) else {
        return false;
    };
    let pm = r.small(p);
    let two = r.small(2);
    let np1 = r.n_plus_1();
    let s = np1.trailing_zeros();
    let k = np1.shr(s);
    // (V_j, V_{j+1}) from (V_0, V_1) = (2, P); with Q = 1:
    // V_2j = V_j² − 2, V_2j+1 = V_j V_j+1 − P.
    let (mut v, mut w) = (two.clone(), pm.clone());
    for i in (0..k.bits()).rev() {
        let vw = r.sub(&r.mul(&v, &w), &pm);
        if k.bit(i) {
            w = r.sub(&r.sqr(&w), &two);
            v = vw;
        } else {
            v = r.sub(&r.sqr(&v), &two);
            w = vw;
        }
    }
    finish_extra_strong(r, v, w, &pm, &two, s)
}

/// The checks on V_k, V_k+1 (n + 1 = k·2^s): U_k ≡ 0 and V_k ≡ ±2, or V_k·2^r ≡ 0 for some
/// 0 ≤ r < s − 1. U_k ≡ 0 is tested as 2·V_k+1 ≡ P·V_k, since D·U_k = 2·V_k+1 − P·V_k.
pub(crate) fn finish_extra_strong<R: ModRing>(
    r: &R,
    mut v: R::E,
    w: R::E,
    pm: &R::E,
    two: &R::E,
    s: u64,
) -> bool {
    let zero = r.zero();
    let minus_two = r.sub(&zero, two);
    if (v == *two || v == minus_two) && r.add(&w, &w) == r.mul(pm, &v) {
        return true;
    }
    for _ in 0..s.saturating_sub(1) {
        if v == zero {
            return true;
        }
        v = r.sub(&r.sqr(&v), two);
    }
    false
}

/// The extra strong Lucas test of several machine words at once, interleaved (see
/// [`super::lanes`]; the generic version is slower for machine words, see
/// `LaneRing::lucas_lanes`). Same answers as [`extra_strong_lucas`].
pub(crate) fn extra_strong_lucas_lanes_u64<const L: usize>(ms: &[Mont; L]) -> [bool; L] {
    let mut alive = [true; L];
    let mut pm = [0u64; L];
    let mut two = [0u64; L];
    // k = (n + 1) / 2^s: n + 1 fits in a u64 because n < 2^64 - 1 here (2^64 - 1 is
    // divisible by 3). Shifted left as the bits are consumed, so that the next bit is always
    // the top one (one shift per lane and bit instead of a variable 128-bit shift).
    let mut k = [0u64; L];
    let mut s = [0u64; L];
    let mut top = 0;
    for i in 0..L {
        let m = &ms[i];
        match baillie_p(m) {
            Some(p) => pm[i] = m.small(p),
            None => {
                alive[i] = false;
                pm[i] = m.one;
            }
        }
        two[i] = m.add(m.one, m.one);
        debug_assert!(m.n < u64::MAX);
        let np1 = m.n.wrapping_add(1);
        s[i] = np1.trailing_zeros() as u64;
        k[i] = np1 >> s[i];
        top = top.max(64 - k[i].leading_zeros());
    }
    for ki in &mut k {
        *ki <<= 64 - top.max(1);
    }
    let mut v = two;
    let mut w = pm;
    for _ in 0..top {
        for i in 0..L {
            let m = &ms[i];
            let one_bit = k[i] >> 63 == 1;
            k[i] <<= 1;
            let vw = m.sub(m.mul(v[i], w[i]), pm[i]);
            let x = if one_bit { w[i] } else { v[i] };
            let sq = m.sub(m.mul(x, x), two[i]);
            (v[i], w[i]) = if one_bit { (vw, sq) } else { (sq, vw) };
        }
    }
    let mut out = [false; L];
    for i in 0..L {
        out[i] = alive[i] && finish_extra_strong(&ms[i], v[i], w[i], &pm[i], &two[i], s[i]);
    }
    out
}

/// Selfridge's search for D (method A). `None` when n is certainly composite.
#[cfg(test)]
fn selfridge_d<R: ModRing>(r: &R) -> Option<i64> {
    let n_mod_8 = r.n_mod(8);
    let mut d: i64 = 5;
    for tries in 0.. {
        let j = jacobi_signed(d, r.n_mod(d.unsigned_abs()), n_mod_8);
        if j == -1 {
            return Some(d);
        }
        if j == 0 {
            return None;
        }
        if tries == 6 && r.is_square() {
            return None;
        }
        d = if d > 0 { -(d + 2) } else { -d + 2 };
    }
    unreachable!("the loop above only exits by returning")
}

/// The strong Lucas test with Selfridge's parameters (P = 1, Q = (1 − D)/4): the Lucas half
/// of the original BPSW. A cross-check for [`extra_strong_lucas`] in the tests.
#[cfg(test)]
pub(crate) fn strong_lucas<R: ModRing>(r: &R) -> bool {
    let Some(d) = selfridge_d(r) else {
        return false;
    };
    let dm = r.signed(d);
    let qm = r.signed((1 - d) / 4);
    let np1 = r.n_plus_1();
    let s = np1.trailing_zeros();
    let k = np1.shr(s);
    let (mut u, mut v, mut qk) = (r.one(), r.one(), qm.clone());
    for i in (0..k.bits() - 1).rev() {
        u = r.mul(&u, &v);
        v = r.sub(&r.mul(&v, &v), &r.add(&qk, &qk));
        qk = r.mul(&qk, &qk);
        if k.bit(i) {
            let nu = r.half(&r.add(&u, &v));
            let nv = r.half(&r.add(&r.mul(&dm, &u), &v));
            u = nu;
            v = nv;
            qk = r.mul(&qk, &qm);
        }
    }
    let zero = r.zero();
    if u == zero || v == zero {
        return true;
    }
    for _ in 1..s {
        v = r.sub(&r.mul(&v, &v), &r.add(&qk, &qk));
        if v == zero {
            return true;
        }
        qk = r.mul(&qk, &qk);
    }
    false
}
