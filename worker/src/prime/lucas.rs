//! The strong Lucas probable-prime test (Selfridge's method A: P = 1, Q = (1 - D) / 4 with
//! the first D in 5, -7, 9, -11, ... for which the Jacobi symbol (D/n) is -1). Together with
//! the strong base-2 test this is BPSW.

use super::jacobi_signed;
use super::ring::{Exponent, ModRing};

/// Selfridge's search for D. Returns `None` when n is certainly composite (a D shares a
/// factor with n, or n is a perfect square, for which no D exists). n MUST exceed every D
/// tried, which holds for n above the trial-division limit.
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
        // A square n never gives -1; check once the cheap attempts are spent.
        if tries == 6 && r.is_square() {
            return None;
        }
        d = if d > 0 { -(d + 2) } else { -d + 2 };
    }
    unreachable!("the loop above only exits by returning")
}

/// Strong Lucas test of the odd n behind `r`, n > the trial-division limit.
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
        // index k -> 2k
        u = r.mul(&u, &v);
        v = r.sub(&r.mul(&v, &v), &r.add(&qk, &qk));
        qk = r.mul(&qk, &qk);
        if k.bit(i) {
            // index 2k -> 2k + 1, with P = 1
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

/// Strong Lucas tests of several odd n > the trial-division limit at once, interleaved like
/// [`super::mont::strong_base2_lanes`]. Every lane starts at index 0 (U = 0, V = 2, Q^0 = 1),
/// where a doubling leaves it at index 0, so all lanes walk the same bit positions and the
/// multiplications of different lanes overlap. Same answers as [`strong_lucas`].
pub(crate) fn strong_lucas_lanes<const L: usize>(ms: &[super::mont::Mont; L]) -> [bool; L] {
    let mut alive = [true; L];
    let mut dm = [0u64; L];
    let mut qm = [0u64; L];
    let mut k = [0u128; L];
    let mut s = [0u64; L];
    let mut top = 0;
    for i in 0..L {
        let m = &ms[i];
        match selfridge_d(m) {
            Some(d) => {
                dm[i] = m.signed(d);
                qm[i] = m.signed((1 - d) / 4);
            }
            None => {
                alive[i] = false;
                dm[i] = m.one;
                qm[i] = m.one;
            }
        }
        let np1 = m.n_plus_1();
        s[i] = Exponent::trailing_zeros(&np1);
        k[i] = np1 >> s[i];
        top = top.max(Exponent::bits(&k[i]));
    }
    let mut u = [0u64; L];
    let mut v = [0u64; L];
    let mut qk = [0u64; L];
    for i in 0..L {
        v[i] = ms[i].add(ms[i].one, ms[i].one);
        qk[i] = ms[i].one;
    }
    for bit in (0..top).rev() {
        for i in 0..L {
            let m = &ms[i];
            let u2 = m.mul(u[i], v[i]);
            let v2 = m.sub(m.mul(v[i], v[i]), m.add(qk[i], qk[i]));
            let q2 = m.mul(qk[i], qk[i]);
            if (k[i] >> bit) & 1 == 1 {
                u[i] = m.half(m.add(u2, v2));
                v[i] = m.half(m.add(m.mul(dm[i], u2), v2));
                qk[i] = m.mul(q2, qm[i]);
            } else {
                u[i] = u2;
                v[i] = v2;
                qk[i] = q2;
            }
        }
    }
    let mut out = [false; L];
    for i in 0..L {
        if !alive[i] {
            continue;
        }
        let m = &ms[i];
        if u[i] == 0 || v[i] == 0 {
            out[i] = true;
            continue;
        }
        let (mut v, mut qk) = (v[i], qk[i]);
        for _ in 1..s[i] {
            v = m.sub(m.mul(v, v), m.add(qk, qk));
            if v == 0 {
                out[i] = true;
                break;
            }
            qk = m.mul(qk, qk);
        }
    }
    out
}
