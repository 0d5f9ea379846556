//! π(x) in about x^(2/3) / log² x steps: the combinatorial method of Lagarias, Miller and
//! Odlyzko (1985) with the improvements of Deléglise and Rivat (1996), written from the
//! papers and from the algorithm notes that ship with primecount (no code was consulted).
//!
//! With y = α·x^(1/3) (α a tuning factor), a = π(y) and φ(x, b) the count of numbers in
//! [1, x] with no prime factor among the first b primes:
//!
//! ```text
//! π(x) = φ(x, a) + a - 1 - P2(x, a)
//! P2(x, a) = Σ_{y < p <= √x} (π(x/p) - π(p) + 1)
//! φ(x, a) = S1 + S2
//! S1 = Σ_{m <= y, lpf(m) > p_c} μ(m) φ(x/m, c)                      (ordinary leaves)
//! S2 = -Σ_{b=c}^{a-1} Σ_{m <= y < m·p_{b+1}, lpf(m) > p_{b+1}} μ(m) φ(x/(m p_{b+1}), b)
//! ```
//!
//! (c = 7: φ(n, 7) comes from a table of period 2·3·5·7·11·13·17.) The special leaves of
//! S2 with p = p_{b+1}, n = x/(p m), fall in three kinds (Deléglise–Rivat):
//! - **trivial** (n < p): φ(n, b) = 1, counted a whole run at a time;
//! - **easy** (n < p²): φ(n, b) = 1 + π(n) - b, from a table of π up to √x; the sum of
//!   π(x/(p q)) over one p's primes q is taken by Dirichlet's hyperbola above √(x/p), one
//!   term per distinct value (see `Context::sum_pi_quot`);
//! - **hard** (n >= p², which needs p < x^(1/4)): φ(n, b) is counted in a segmented sieve
//!   of [1, x/y] that crosses off p_{c+1}, p_{c+2}, ... in turn; a bit per number coprime
//!   to 30 (as in the π table) with counters per 64 and per 1024 bytes answers "how many
//!   left up to n".
//!
//! The work is cut into [`Part`]s with small answers that [`combine`] adds up, so that the
//! same π(x) runs on one thread, on several, or as tasks on several workers: the hard
//! leaves by intervals of n (each interval answers its leaves counted from its own start,
//! with, per b, the sum of μ over its leaves and how many numbers it left at stage b: the
//! combination adds what the intervals before contributed), the easy leaves by ranges of b,
//! P2 by intervals of x/p, and one base part (S1 and the closed forms).

use rayon::prelude::*;

use super::isqrt;
use super::sieve::{counts_at, primes_in, RangeSieve};

/// Largest x [`prime_pi`] accepts: the table of π up to √x takes √x/15 bytes (72 MB at
/// 2^60) and the factor table y/2·4 bytes; beyond, the time is hours anyway.
pub const PI_MAX: u64 = proto::jobs::PI_MAX;

/// Below this, π(x) is a plain count by the sieve (milliseconds).
const SIEVE_BELOW: u64 = 10_000_000;

/// φ(n, C) comes from a table: C = 7, the primes 2 to 17, period 510,510.
const C: usize = 7;
const PRIMORIAL_C: u64 = 2 * 3 * 5 * 7 * 11 * 13 * 17;

/// The residues mod 30 a bit stands for in the π table's words (as in the sieve).
const R: [u64; 8] = [1, 7, 11, 13, 17, 19, 23, 29];

/// ⌊∛n⌋.
pub fn icbrt(n: u64) -> u64 {
    let mut r = (n as f64).cbrt() as u64;
    let cube = |r: u64| (r as u128).pow(3);
    while r > 0 && cube(r) > n as u128 {
        r -= 1;
    }
    while cube(r + 1) <= n as u128 {
        r += 1;
    }
    r
}

/// π(n) for every n up to a limit: one bit per number coprime to 30 (a u64 word for 240
/// numbers) and the count of primes before each word, 16 bytes per 240 numbers.
pub struct PiTable {
    /// Per 240 numbers: (primes before, bits), side by side so a lookup reads one line.
    entries: Vec<(u64, u64)>,
    limit: u64,
}

/// Bits of a word standing for numbers <= r (r in 0..240).
const fn word_mask(r: u64) -> u64 {
    let full = r / 30;
    let mut m = if full == 0 {
        0
    } else {
        (1u64 << (8 * full)) - 1
    };
    let mut k = 0;
    while k < 8 {
        if R[k] <= r % 30 {
            m |= 1 << (8 * full + k as u64);
        }
        k += 1;
    }
    m
}

/// [`word_mask`] of every r.
const MASKS: [u64; 240] = {
    let mut t = [0u64; 240];
    let mut r = 0;
    while r < 240 {
        t[r] = word_mask(r as u64);
        r += 1;
    }
    t
};

impl PiTable {
    /// The table up to `limit` (at most 2^32: √x for any 64-bit x).
    pub fn new(limit: u64) -> Self {
        let limit = limit.clamp(1, u32::MAX as u64);
        let nwords = (limit / 240 + 1) as usize;
        let mut words = vec![0u64; nwords];
        let mut set = |n: u64| words[(n / 240) as usize] |= 1 << bit_index(n);
        // Below the sieve's wheel, prime by prime; above, its bytes as they are (one byte
        // for 30 numbers, the same bit order).
        for p in primes_in(7, limit.min(1049)) {
            set(p);
        }
        let mut s = RangeSieve::new(1050, limit.max(1050));
        while let Some(seg) = s.next_segment() {
            let (first_byte, bytes) = seg.wheel_bytes();
            for (i, &b) in bytes.iter().enumerate() {
                let at = first_byte as usize + i;
                if let Some(w) = words.get_mut(at / 8) {
                    *w |= (b as u64) << (8 * (at % 8));
                }
            }
        }
        let mut acc = 3u64; // 2, 3 and 5 have no bit
        let entries = words
            .into_iter()
            .map(|w| {
                let e = (acc, w);
                acc += w.count_ones() as u64;
                e
            })
            .collect();
        PiTable { entries, limit }
    }

    /// The largest n the table answers for.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// π(n), n <= [`PiTable::limit`].
    #[inline]
    pub fn pi(&self, n: u64) -> u64 {
        if n < 7 {
            return [0, 0, 1, 2, 2, 3, 3][n as usize];
        }
        let (before, bits) = self.entries[(n / 240) as usize];
        before + (bits & MASKS[(n % 240) as usize]).count_ones() as u64
    }
}

/// Bit of n (coprime to 30) in its word.
fn bit_index(n: u64) -> u64 {
    let r = n % 30;
    let k = R.iter().position(|&x| x == r).unwrap_or(0) as u64;
    8 * ((n % 240) / 30) + k
}

/// Division by a fixed d as two multiplications (Lemire, Kaser and Kurz, "Faster
/// remainder by direct computation", 2019: with c = ⌈2^128 / d⌉, ⌊n / d⌋ = ⌊c·n / 2^128⌋
/// for every 64-bit n). The leaves divide x/p by the same primes q again and again; a
/// 64-bit `div` costs tens of cycles, this a few.
#[derive(Clone, Copy)]
struct Divisor {
    hi: u64,
    lo: u64,
}

impl Divisor {
    /// d >= 2.
    fn new(d: u64) -> Self {
        let c = u128::MAX / d.max(2) as u128 + 1;
        Divisor {
            hi: (c >> 64) as u64,
            lo: c as u64,
        }
    }

    #[inline]
    fn div(self, n: u64) -> u64 {
        let a = self.hi as u128 * n as u128;
        let b = (self.lo as u128 * n as u128) >> 64;
        ((a + b) >> 64) as u64
    }
}

/// What one computation of π(x) needs, built once per process and shared by its parts.
pub struct Context {
    pub x: u64,
    /// y = α·x^(1/3), at least ∛x.
    pub y: u64,
    /// x / y: the hard leaves' n are below it.
    pub z: u64,
    /// π(y).
    pub a: usize,
    /// The primes up to y, 1-based: primes[1] = 2 (primes[0] = 0 is a placeholder).
    primes: Vec<u64>,
    /// Division by primes[i] (index 0 and 1 unused).
    divs: Vec<Divisor>,
    /// π up to max(√x, y).
    pi: PiTable,
    /// For odd m <= y (index m / 2): μ(m)·lpf(m), 0 when μ(m) = 0, i32::MAX for m = 1.
    factors: Vec<i32>,
    /// φ(r, C) for r in [0, PRIMORIAL_C).
    phi_c: Vec<u32>,
    /// The largest b with hard leaves (< C if none).
    b_max: usize,
}

/// y = α·∛x. A larger y moves work from the hard leaves' sieve (x/y long) to the
/// ordinary and easy leaves; tuned by measurement here (BENCHMARKS.md, issue 29). α grows
/// with the cube of x's bit length, ℓ³/10,471: 1.9 at 10^8, 15 at 10^16, 21.7 at 2^60.
/// Integer arithmetic only: every worker that computes a part of π(x) must find the same
/// y (a floating-point `log` may differ between hosts); the answers carry y, and
/// [`combine`] refuses parts that disagree.
fn choose_y(x: u64) -> u64 {
    let cbrt = icbrt(x);
    let bits = 64 - x.leading_zeros() as u128;
    let y = (cbrt as u128 * (bits * bits * bits).max(10_471) / 10_471) as u64;
    y.clamp(cbrt.max(100), isqrt(x))
}

impl Context {
    /// Builds the tables for π(x); x in [`SIEVE_BELOW`, [`PI_MAX`]].
    pub fn new(x: u64) -> Self {
        let sqrt = isqrt(x);
        let y = choose_y(x);
        let z = x / y;
        let mut primes = vec![0u64];
        primes.extend(primes_in(0, y));
        let a = primes.len() - 1;
        let divs = primes.iter().map(|&p| Divisor::new(p)).collect();
        let pi = PiTable::new(sqrt.max(y));
        let factors = factor_table(y, &primes);
        let phi_c = phi_table();
        // Hard leaves of b need p = p_{b+1} with p^4 < x and p² < x / y (some m in
        // (max(p, y/p), min(y, x/p³)]).
        let mut b_max = C - 1;
        for b in C..a {
            let p = primes[b + 1];
            let m_hi = y.min(x / p / p / p);
            if m_hi > p.max(y / p) {
                b_max = b;
            }
        }
        Context {
            x,
            y,
            z,
            a,
            primes,
            divs,
            pi,
            factors,
            phi_c,
            b_max,
        }
    }

    /// φ(n, C).
    #[inline]
    fn phi_c(&self, n: u64) -> u64 {
        (n / PRIMORIAL_C) * self.phi_c[PRIMORIAL_C as usize - 1] as u64
            + self.phi_c[(n % PRIMORIAL_C) as usize] as u64
    }

    /// μ(m)·lpf(m) of odd m <= y.
    #[inline]
    fn factor(&self, m: u64) -> i64 {
        self.factors[(m / 2) as usize] as i64
    }

    /// The parts of π(x) for `k` workers: the base part, then k hard-leaf intervals, k
    /// ranges of easy leaves, k intervals of P2 (3k + 1 in all).
    pub fn parts(&self, k: usize) -> Vec<Part> {
        let k = k.max(1);
        let mut out = vec![Part::Base];
        // Hard leaves: n in [0, z], cut at multiples of HARD_ALIGN where a cost model is
        // even. The sieve costs alike per number; the leaves start near n0 = z^(2/3) (the
        // least n >= p² with m <= y) and their time spreads about evenly over log n (at
        // 10^16 the first eighth of [0, z] took 10x the time of any other eighth). Cost up
        // to N: 2·log(N/n0)/log(z/n0) + N/z (the leaves weighed twice the sieve: at 10^16
        // the eight pieces then take 0.24-0.53 s, against 0.16-1.9 s cut evenly), in fixed
        // point; integers only, so every worker cuts alike.
        let end = self.z + 1;
        let c = icbrt(end);
        let n0 = (c * c).max(1);
        // log2 in units of 2^-16, the mantissa's log taken as linear (within 0.09).
        let lg = |v: u128| -> u128 {
            let int = 127 - v.leading_zeros() as u128;
            let frac = if int >= 16 {
                (v >> (int - 16)) & 0xffff
            } else {
                (v << (16 - int)) & 0xffff
            };
            (int << 16) + frac
        };
        let leaves = |n: u64| -> u128 {
            if n <= n0 {
                0
            } else {
                lg(((n as u128) << 32) / n0 as u128) - (32 << 16)
            }
        };
        let span = leaves(end).max(1);
        let cost =
            |n: u64| -> u128 { (leaves(n) << 33) / span + ((n as u128) << 32) / end as u128 };
        let total = cost(end);
        let at = |i: u64| -> u64 {
            let goal = total * i as u128 / k as u128;
            let (mut lo, mut hi) = (0u64, end);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if cost(mid) < goal {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            (lo / HARD_ALIGN * HARD_ALIGN).min(end)
        };
        for i in 0..k as u64 {
            let hi = if i + 1 == k as u64 { end } else { at(i + 1) };
            out.push(Part::Hard { lo: at(i), hi });
        }
        // Easy leaves: b in [C, a - 1), cut where the estimated leaves are even.
        let cost: Vec<u64> = (C..self.a.saturating_sub(1))
            .map(|b| self.easy_cost(b))
            .collect();
        let total: u128 = cost.iter().map(|&c| c as u128).sum();
        let mut b = C;
        let mut acc: u128 = 0;
        for i in 0..k {
            let start = b;
            let goal = total * (i + 1) as u128 / k as u128;
            while b < self.a.saturating_sub(1)
                && (i + 1 == k || acc + cost[b - C] as u128 / 2 < goal)
            {
                acc += cost[b - C] as u128;
                b += 1;
            }
            out.push(Part::Easy {
                b_lo: start,
                b_hi: b,
            });
        }
        // P2: x/p for y < p <= √x lies in [⌊√x⌋, x/y]; equal pieces.
        let (lo, hi) = (isqrt(self.x), self.z + 1);
        let span = hi.saturating_sub(lo);
        let step = span.div_ceil(k as u64).max(1);
        for i in 0..k as u64 {
            let a = (lo + i * step).min(hi);
            let b = (lo + (i + 1) * step).min(hi);
            out.push(Part::P2 { lo: a, hi: b });
        }
        out
    }

    /// About how many easy leaves b has (for cutting them into even parts; integers only,
    /// so that every worker cuts alike).
    fn easy_cost(&self, b: usize) -> u64 {
        let p = self.primes[b + 1];
        let x = self.x;
        let lo = p.max(x / p / p / p).max(self.y / p);
        let hi = self.y.min(x / p / p);
        if p * p <= self.y {
            // Scans every odd m above the lower bound.
            self.y.saturating_sub(lo) / 2 + 1
        } else if hi > lo {
            (hi - lo) / (64 - hi.leading_zeros() as u64) + 1
        } else {
            1
        }
    }

    /// Computes one part.
    pub fn run(&self, part: &Part) -> PartAnswer {
        match *part {
            Part::Base => self.base(),
            Part::Hard { lo, hi } => self.hard(lo, hi),
            Part::Easy { b_lo, b_hi } => PartAnswer::Easy {
                sum: self.easy(b_lo, b_hi),
            },
            Part::P2 { lo, hi } => self.p2(lo, hi),
        }
    }

    /// S1 + a - 1 + Σ_{i=a+1}^{π(√x)} (i - 1), and π(⌊√x⌋ - 1): the primes before P2's
    /// first interval.
    fn base(&self) -> PartAnswer {
        let mut s1: i128 = 0;
        let pc = self.primes[C];
        let mut m = 1;
        while m <= self.y {
            let f = self.factor(m);
            if f != 0 && f.unsigned_abs() > pc {
                s1 += f.signum() as i128 * self.phi_c(self.x / m) as i128;
            }
            m += 2;
        }
        let a = self.a as i128;
        let sqrt = isqrt(self.x);
        let big_a = self.pi.pi(sqrt) as i128;
        let closed = (big_a - 1) * big_a / 2 - (a - 1) * a / 2;
        PartAnswer::Base {
            y: self.y,
            sum: s1 + a - 1 + closed,
            pi_sqrt: self.pi.pi(sqrt - 1),
        }
    }

    /// The easy and trivial special leaves of b in [b_lo, b_hi): their part of S2.
    fn easy(&self, b_lo: usize, b_hi: usize) -> i128 {
        let x = self.x;
        let y = self.y;
        let mut s2: i128 = 0;
        for b in b_lo.max(C)..b_hi.min(self.a.saturating_sub(1)) {
            let p = self.primes[b + 1];
            let x_p = x / p;
            let hard_top = x_p / p / p; // m <= this: hard
            if p * p <= y {
                // m composite too: scan odd m in (max(y/p, x/p³), y].
                let mut m = (y / p).max(hard_top) + 1;
                m |= 1;
                while m <= y {
                    let f = self.factor(m);
                    if f != 0 && f.unsigned_abs() > p {
                        let n = x_p / m;
                        let phi = 1 + self.pi.pi(n).saturating_sub(b as u64);
                        s2 -= f.signum() as i128 * phi as i128;
                    }
                    m += 2;
                }
            } else {
                // m = q prime, p < q <= y: −μ(q) = +1.
                let lo = p.max(hard_top); // q > lo
                if lo >= y {
                    continue;
                }
                let trivial_from = (x_p / p).max(lo); // q > this: n < p, φ = 1
                if trivial_from < y {
                    s2 += (self.pi.pi(y) - self.pi.pi(trivial_from)) as i128;
                }
                let top = trivial_from.min(y);
                if top > lo {
                    let leaves = self.pi.pi(top) - self.pi.pi(lo);
                    s2 += leaves as i128 * (1 - b as i128) + self.sum_pi_quot(x_p, lo, top) as i128;
                }
            }
        }
        s2
    }

    /// Σ π(⌊v/q⌋) over the primes q in (lo, hi], for hi <= y and v/(lo + 1) <= the π
    /// table's limit: the easy leaves of one p (v = x/p).
    ///
    /// The pairs of primes (q, r) with q·r <= v, counted two ways (Dirichlet's hyperbola):
    /// below s = ⌊√v⌋ by q, one quotient each; above, by r <= v/q < s, where
    /// Σ_{q in (l, hi]} π(v/q) = π(v/hi)·(π(hi) − π(l)) + Σ_{v/hi < r <= v/(l+1)} (π(v/r) − π(l)).
    /// Above √v many q share one π(v/q) (Deléglise–Rivat's clustered leaves); walking the
    /// r visits each such cluster once, and, unlike jumping from cluster to cluster, no
    /// step waits on the one before (a division and a table lookup each, free to overlap).
    fn sum_pi_quot(&self, v: u64, lo: u64, hi: u64) -> u64 {
        let s = isqrt(v);
        let mut sum = 0u64;
        // q <= s, one at a time.
        let q_top = hi.min(s);
        if q_top > lo {
            let (i0, i1) = (self.pi.pi(lo) as usize + 1, self.pi.pi(q_top) as usize);
            for d in &self.divs[i0..=i1] {
                sum += self.pi.pi(d.div(v));
            }
        }
        // q > s, by r.
        let l = lo.max(s);
        if hi > l {
            let pi_l = self.pi.pi(l);
            let r0 = v / hi;
            sum += self.pi.pi(r0) * (self.pi.pi(hi) - pi_l);
            let (j0, j1) = (
                self.pi.pi(r0) as usize + 1,
                self.pi.pi(v / (l + 1)) as usize,
            );
            if j1 >= j0 {
                let mut part = 0u64;
                for d in &self.divs[j0..=j1] {
                    part += self.pi.pi(d.div(v));
                }
                sum += part - (j1 + 1 - j0) as u64 * pi_l;
            }
        }
        sum
    }

    /// Σ π(x/p) for the primes y < p <= √x with x/p in [lo, hi), counted from lo: the sum,
    /// how many such p, and the primes in [lo, hi).
    fn p2(&self, lo: u64, hi: u64) -> PartAnswer {
        // In pieces of P2_PIECE numbers: near √x every number is some x/p, and holding all
        // the p of a long interval would cost 8 bytes each (GBs near 10^18).
        let (mut sum, mut n, mut primes) = (0u64, 0u64, 0u64);
        let mut a = lo;
        while a < hi {
            let b = a.saturating_add(P2_PIECE).min(hi);
            let (s, k, c) = self.p2_piece(a, b);
            sum += s + k * primes;
            n += k;
            primes += c;
            a = b;
        }
        PartAnswer::P2 { sum, n, primes }
    }

    /// [`Context::p2`] of one piece.
    fn p2_piece(&self, lo: u64, hi: u64) -> (u64, u64, u64) {
        let x = self.x;
        // x/p in [lo, hi) ⟺ p in (x/hi, x/lo].
        let p_lo = (x / hi + 1).max(self.y + 1);
        let p_hi = (x / lo).min(isqrt(x));
        let ps = if p_lo <= p_hi {
            primes_in(p_lo, p_hi)
        } else {
            Vec::new()
        };
        let mut targets: Vec<u64> = ps.iter().rev().map(|&p| x / p).collect();
        targets.push(hi - 1);
        let counts = counts_at(lo, hi - 1, &targets);
        let total = counts.last().copied().unwrap_or(0);
        let sum: u64 = counts[..counts.len() - 1].iter().sum();
        (sum, ps.len() as u64, total)
    }

    /// The hard leaves with n in [lo, hi) (lo a multiple of [`HARD_ALIGN`]), counted as if
    /// φ(lo - 1, b) were 0 for every b.
    fn hard(&self, lo: u64, hi: u64) -> PartAnswer {
        let nb = (self.b_max + 1).saturating_sub(C);
        let mut mu_sum = vec![0i64; nb];
        let mut count = vec![0u64; nb];
        let mut phi = vec![0u64; nb];
        let mut sum: i128 = 0;
        if nb == 0 || lo >= hi {
            return PartAnswer::Hard {
                y: self.y,
                sum,
                mu_sum,
                count,
            };
        }
        let x = self.x;
        let y = self.y;
        let mut seg = HardSieve::new();
        let mut seg_lo = lo;
        while seg_lo < hi {
            let seg_hi = (seg_lo + SEG_NUMBERS).min(hi) - 1; // inclusive
            seg.reset(seg_lo, seg_hi); // stage C: 2 to 17 removed
            for b in C..=self.b_max {
                let p = self.primes[b + 1];
                let x_p = x / p;
                // Hard m: (y/p, min(y, x/p³)], lpf(m) > p, n = x/(p m) in [seg_lo, seg_hi].
                let m_hi = y.min(x_p / p / p).min(x_p / seg_lo.max(1));
                let m_lo = (y / p).max(x_p / (seg_hi + 1)).max(p) + 1;
                let i = b - C;
                if m_lo <= m_hi {
                    seg.rewind();
                    if p * p > y {
                        let (i0, i1) =
                            (self.pi.pi(m_lo - 1) as usize + 1, self.pi.pi(m_hi) as usize);
                        let mut leaves = 0i64;
                        for j in (i0..=i1).rev() {
                            let n = self.divs[j].div(x_p);
                            sum += (phi[i] + seg.count_upto(n)) as i128;
                            leaves += 1;
                        }
                        mu_sum[i] -= leaves;
                    } else {
                        let mut m = m_hi;
                        if m % 2 == 0 {
                            m -= 1;
                        }
                        while m >= m_lo {
                            let f = self.factor(m);
                            if f != 0 && f.unsigned_abs() > p {
                                let n = x_p / m;
                                let v = (phi[i] + seg.count_upto(n)) as i128;
                                if f > 0 {
                                    sum -= v;
                                    mu_sum[i] += 1;
                                } else {
                                    sum += v;
                                    mu_sum[i] -= 1;
                                }
                            }
                            m -= 2;
                        }
                    }
                }
                phi[i] += seg.total;
                if b < self.b_max {
                    seg.cross(p);
                }
            }
            seg_lo = seg_hi + 1;
        }
        count.copy_from_slice(&phi);
        PartAnswer::Hard {
            y: self.y,
            sum,
            mu_sum,
            count,
        }
    }
}

/// Numbers per segment of the hard leaves' sieve: 2^14 words of 240 numbers (128 KiB of
/// bits, in the L2 cache; a long segment means few per-segment setups of each of the ~10^3
/// primes).
const SEG_WORDS: usize = 1 << 14;
const SEG_NUMBERS: u64 = 240 * SEG_WORDS as u64;
/// Numbers of one piece of a P2 interval (at most as many primes p, 8 bytes each).
const P2_PIECE: u64 = 1 << 24;
/// Hard-leaf intervals start at multiples of this: a sieve word's 240 numbers.
pub const HARD_ALIGN: u64 = 240;
/// Bytes (of 30 numbers each) per small and per big counter of the hard sieve.
const SMALL_BYTES: usize = 64;
const BIG_BYTES: usize = 1024;
/// Period of the pre-sieve pattern, in words of 240 numbers: 7·11·13·17.
const PATTERN_WORDS: usize = 7 * 11 * 13 * 17;

/// The pre-sieve: the numbers free of 2 to 17 (stage C), one bit per number coprime to 30
/// as in the π table (word w: 240w + 30j + R[k] at bit 8j + k), period 17,017 words.
static PATTERN: std::sync::LazyLock<Vec<u64>> = std::sync::LazyLock::new(|| {
    // Per prime, its own period of p words (240 is coprime to p), then the AND of the four:
    // a few thousand divisions instead of one per bit of the whole period.
    let of = |p: u64| -> Vec<u64> {
        (0..p)
            .map(|w| {
                (0..64u64)
                    .filter(|&bit| (240 * w + 30 * (bit / 8) + R[bit as usize % 8]) % p != 0)
                    .fold(0u64, |m, bit| m | 1 << bit)
            })
            .collect()
    };
    let (p7, p11, p13, p17) = (of(7), of(11), of(13), of(17));
    (0..PATTERN_WORDS)
        .map(|w| p7[w % 7] & p11[w % 11] & p13[w % 13] & p17[w % 17])
        .collect()
});

/// One segment of the hard leaves' sieve, numbers [lo, hi] coprime to 30: byte i holds
/// lo + 30i + R[k] at bit k (the π table's order; eight bytes read as one little-endian
/// word). Counters of the bits still set per 64 and per 1024 bytes, kept up to date on
/// each crossing, let a count skip whole blocks.
struct HardSieve {
    lo: u64,
    /// Bytes in use (the segment's numbers, rounded up to whole words).
    nbytes: usize,
    bytes: Vec<u8>,
    small: Vec<u16>,
    big: Vec<u32>,
    /// Bits still set.
    total: u64,
    /// The count cursor: bytes before `at_byte` (a multiple of 8) hold `at_count` set bits.
    at_byte: usize,
    at_count: u64,
}

impl HardSieve {
    fn new() -> Self {
        let nbytes = 8 * SEG_WORDS;
        HardSieve {
            lo: 0,
            nbytes: 0,
            bytes: vec![0; nbytes],
            small: vec![0; nbytes / SMALL_BYTES],
            big: vec![0; nbytes / BIG_BYTES],
            total: 0,
            at_byte: 0,
            at_count: 0,
        }
    }

    /// The word (64 bits, 240 numbers) at byte `at` (a multiple of 8).
    #[inline]
    fn word(&self, at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.bytes[at..at + 8]);
        u64::from_le_bytes(w)
    }

    /// Starts the segment [lo, hi] (lo a multiple of 240, hi - lo < SEG_NUMBERS): the
    /// numbers free of 2..17.
    fn reset(&mut self, lo: u64, hi: u64) {
        self.lo = lo;
        let nw = ((hi - lo) / 240 + 1) as usize;
        self.nbytes = 8 * nw;
        let pat = &*PATTERN;
        let mut p = (lo / 240) as usize % PATTERN_WORDS;
        for k in 0..SEG_WORDS {
            let w = if k + 1 < nw {
                pat[p]
            } else if k + 1 == nw {
                pat[p] & MASKS[((hi - lo) % 240) as usize]
            } else {
                0
            };
            self.bytes[8 * k..8 * k + 8].copy_from_slice(&w.to_le_bytes());
            p = if p + 1 == PATTERN_WORDS { 0 } else { p + 1 };
        }
        for (s, c) in self.small.iter_mut().enumerate() {
            *c = self.bytes[s * SMALL_BYTES..(s + 1) * SMALL_BYTES]
                .chunks_exact(8)
                .map(|b| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(b);
                    u64::from_le_bytes(w).count_ones() as u16
                })
                .sum();
        }
        let per = BIG_BYTES / SMALL_BYTES;
        for (b, c) in self.big.iter_mut().enumerate() {
            *c = self.small[b * per..(b + 1) * per]
                .iter()
                .map(|&s| s as u32)
                .sum();
        }
        self.total = self.big.iter().map(|&c| c as u64).sum();
    }

    /// Crosses off the multiples of p (p > 5, prime; p itself included). The multiples
    /// p·k with k coprime to 30 fall, for each of k's 8 residues mod 30, on one bit of
    /// every p-th byte: 8 strided passes, and the multiples of 2, 3 and 5 are never visited.
    fn cross(&mut self, p: u64) {
        let lo = self.lo;
        let kmin = lo.div_ceil(p).max(1);
        let mut removed = 0u64;
        let step = p as usize;
        for kr in R {
            let k = kmin + (kr + 30 - kmin % 30) % 30;
            let m = p * k;
            let mut i = ((m - lo) / 30) as usize;
            let r = m % 30;
            let bit = R.iter().position(|&x| x == r).unwrap_or(0) as u32;
            let mask = 1u8 << bit;
            while i < self.nbytes {
                let b = &mut self.bytes[i];
                let was = ((*b & mask) >> bit) as u16;
                *b &= !mask;
                self.small[i / SMALL_BYTES] -= was;
                self.big[i / BIG_BYTES] -= was as u32;
                removed += was as u64;
                i += step;
            }
        }
        self.total -= removed;
    }

    /// Puts the count cursor back at the segment's start.
    fn rewind(&mut self) {
        self.at_byte = 0;
        self.at_count = 0;
    }

    /// How many numbers are left in [lo, n] (n >= lo, n <= the segment's hi, and at least
    /// the last n asked since the last rewind).
    #[inline]
    fn count_upto(&mut self, n: u64) -> u64 {
        let t = n - self.lo;
        let tb = (t / 240) as usize * 8; // the word holding n
        let mut at = self.at_byte;
        let mut acc = self.at_count;
        while at < tb {
            if at % BIG_BYTES == 0 && at + BIG_BYTES <= tb {
                acc += self.big[at / BIG_BYTES] as u64;
                at += BIG_BYTES;
            } else if at % SMALL_BYTES == 0 && at + SMALL_BYTES <= tb {
                acc += self.small[at / SMALL_BYTES] as u64;
                at += SMALL_BYTES;
            } else {
                acc += self.word(at).count_ones() as u64;
                at += 8;
            }
        }
        self.at_byte = at;
        self.at_count = acc;
        acc + (self.word(tb) & MASKS[(t % 240) as usize]).count_ones() as u64
    }
}

/// φ(r, C) for r in [0, PRIMORIAL_C): the numbers in [1, r] free of 2..17.
fn phi_table() -> Vec<u32> {
    // Mark the multiples of each prime, then count: no division per entry.
    let mut free = vec![true; PRIMORIAL_C as usize];
    free[0] = false;
    for p in [2usize, 3, 5, 7, 11, 13, 17] {
        for f in free.iter_mut().step_by(p) {
            *f = false;
        }
    }
    let mut acc = 0;
    free.iter()
        .map(|&f| {
            acc += f as u32;
            acc
        })
        .collect()
}

/// μ(m)·lpf(m) for the odd m <= y (index m / 2); 0 where μ(m) = 0; i32::MAX for 1.
fn factor_table(y: u64, primes: &[u64]) -> Vec<i32> {
    let n = (y / 2 + 1) as usize;
    let mut lpf = vec![0u32; n];
    let mut sign = vec![1i8; n];
    for &p in primes.iter().skip(2) {
        // odd multiples p, 3p, 5p, ...: index (k p) / 2 for odd k.
        let mut m = p;
        while m <= y {
            let i = (m / 2) as usize;
            if lpf[i] == 0 {
                lpf[i] = p as u32;
            }
            sign[i] = -sign[i];
            m += 2 * p;
        }
        let p2 = p * p;
        let mut m = p2;
        while m <= y {
            sign[(m / 2) as usize] = 0;
            m += 2 * p2;
        }
    }
    lpf.iter()
        .zip(&sign)
        .map(|(&l, &s)| {
            if l == 0 {
                i32::MAX // m = 1: no prime factor, μ = 1
            } else {
                s as i32 * l as i32
            }
        })
        .collect()
}

/// A piece of π(x): see [`Context::parts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Base,
    Hard { lo: u64, hi: u64 },
    Easy { b_lo: usize, b_hi: usize },
    P2 { lo: u64, hi: u64 },
}

/// What a part found; [`PartAnswer::encode`] makes it a task's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartAnswer {
    Base {
        y: u64,
        sum: i128,
        pi_sqrt: u64,
    },
    Hard {
        y: u64,
        sum: i128,
        mu_sum: Vec<i64>,
        count: Vec<u64>,
    },
    Easy {
        sum: i128,
    },
    P2 {
        sum: u64,
        n: u64,
        primes: u64,
    },
}

impl PartAnswer {
    /// As a task's answer: a letter and numbers, `:`-separated; lists `,`-separated.
    pub fn encode(&self) -> String {
        match self {
            PartAnswer::Base { y, sum, pi_sqrt } => format!("b:{y}:{sum}:{pi_sqrt}"),
            PartAnswer::Easy { sum } => format!("e:{sum}"),
            PartAnswer::P2 { sum, n, primes } => format!("p:{sum}:{n}:{primes}"),
            PartAnswer::Hard {
                y,
                sum,
                mu_sum,
                count,
            } => {
                let mu: Vec<String> = mu_sum.iter().map(|v| v.to_string()).collect();
                // Counts as differences from the previous b (smaller numbers).
                let mut prev = 0i128;
                let cs: Vec<String> = count
                    .iter()
                    .map(|&c| {
                        let d = c as i128 - prev;
                        prev = c as i128;
                        d.to_string()
                    })
                    .collect();
                format!("h:{y}:{sum}:{}:{}", mu.join(","), cs.join(","))
            }
        }
    }

    /// Reads an answer made by [`PartAnswer::encode`].
    pub fn decode(s: &str) -> Result<PartAnswer, String> {
        let f: Vec<&str> = s.split(':').collect();
        let int = |t: &str| t.parse::<i128>().map_err(|_| format!("bad number {t:?}"));
        let nat = |t: &str| t.parse::<u64>().map_err(|_| format!("bad number {t:?}"));
        let shown: String = s.chars().take(40).collect();
        match f.as_slice() {
            ["b", y, sum, pi] => Ok(PartAnswer::Base {
                y: nat(y)?,
                sum: int(sum)?,
                pi_sqrt: nat(pi)?,
            }),
            ["e", sum] => Ok(PartAnswer::Easy { sum: int(sum)? }),
            ["p", sum, n, primes] => Ok(PartAnswer::P2 {
                sum: nat(sum)?,
                n: nat(n)?,
                primes: nat(primes)?,
            }),
            ["h", y, sum, mu, cs] => {
                let list = |t: &str| -> Result<Vec<i128>, String> {
                    if t.is_empty() {
                        return Ok(Vec::new());
                    }
                    t.split(',').map(int).collect()
                };
                let mu_sum = list(mu)?
                    .into_iter()
                    .map(|v| i64::try_from(v).map_err(|_| format!("bad μ sum {v}")))
                    .collect::<Result<Vec<i64>, String>>()?;
                let mut prev = 0i128;
                let count = list(cs)?
                    .into_iter()
                    .map(|d| {
                        prev += d;
                        u64::try_from(prev).map_err(|_| format!("bad count {prev}"))
                    })
                    .collect::<Result<Vec<u64>, String>>()?;
                if mu_sum.len() != count.len() {
                    return Err(format!("hard part {shown:?}: lists of unequal length"));
                }
                Ok(PartAnswer::Hard {
                    y: nat(y)?,
                    sum: int(sum)?,
                    mu_sum,
                    count,
                })
            }
            _ => Err(format!("not a part of π(x): {shown:?}")),
        }
    }
}

/// π(x) from its parts' answers, in the order of [`Context::parts`] (any k): the hard
/// intervals add what the intervals before them left at each stage, P2's intervals what
/// the primes before them counted.
pub fn combine(answers: &[PartAnswer]) -> Result<u64, String> {
    let mut total: i128 = 0;
    let mut pi_sqrt = None;
    let mut y_seen = None;
    let mut same_y = |y: u64| match y_seen.replace(y) {
        Some(other) if other != y => Err(format!("parts computed with y = {other} and y = {y}")),
        _ => Ok(()),
    };
    let mut hard_before: Vec<u64> = Vec::new();
    let mut p2_before: Option<u64> = None;
    let mut p2_sum: i128 = 0;
    for a in answers {
        match a {
            PartAnswer::Base {
                y,
                sum,
                pi_sqrt: ps,
            } => {
                same_y(*y)?;
                total += sum;
                pi_sqrt = Some(*ps);
            }
            PartAnswer::Easy { sum } => total += sum,
            PartAnswer::Hard {
                y,
                sum,
                mu_sum,
                count,
            } => {
                same_y(*y)?;
                if hard_before.is_empty() {
                    hard_before = vec![0; count.len()];
                }
                if count.len() != hard_before.len() {
                    return Err("hard parts of different lengths".into());
                }
                total += sum;
                for ((before, &mu), &c) in hard_before.iter_mut().zip(mu_sum).zip(count) {
                    total -= mu as i128 * *before as i128;
                    *before += c;
                }
            }
            PartAnswer::P2 { sum, n, primes } => {
                let before = match p2_before {
                    Some(b) => b,
                    None => pi_sqrt.ok_or("the base part must come before P2's")?,
                };
                p2_sum += *sum as i128 + *n as i128 * before as i128;
                p2_before = Some(before + primes);
            }
        }
    }
    if pi_sqrt.is_none() {
        return Err("the base part is missing".into());
    }
    u64::try_from(total - p2_sum).map_err(|_| format!("π(x) came out as {}", total - p2_sum))
}

/// The number of parts for `k` workers (see [`Context::parts`]).
pub fn part_count(k: usize) -> usize {
    3 * k.max(1) + 1
}

/// Part `i` of π(x) cut for `k` workers, computed alone (a task): builds its own tables.
pub fn run_part(x: u64, k: usize, i: usize) -> Result<PartAnswer, String> {
    if !(SIEVE_BELOW..=PI_MAX).contains(&x) {
        return Err(format!(
            "π({x}) by parts takes x from {SIEVE_BELOW} to 2^60"
        ));
    }
    let ctx = Context::new(x);
    let parts = ctx.parts(k);
    let part = parts
        .get(i)
        .ok_or_else(|| format!("part {i} of {} for π({x})", parts.len()))?;
    Ok(ctx.run(part))
}

/// π(x) in this process, its parts shared among rayon's threads. x <= [`PI_MAX`].
pub fn prime_pi(x: u64) -> u64 {
    if x < SIEVE_BELOW {
        return super::sieve::count_primes(0, x);
    }
    let t = std::time::Instant::now();
    let ctx = Context::new(x);
    tracing::debug!(
        x,
        y = ctx.y,
        z = ctx.z,
        a = ctx.a,
        b_max = ctx.b_max,
        secs = t.elapsed().as_secs_f64(),
        "pi tables"
    );
    let threads = rayon::current_num_threads().max(1);
    let parts = ctx.parts(if threads == 1 { 1 } else { 4 * threads });
    let answers: Vec<PartAnswer> = parts
        .par_iter()
        .map(|p| {
            let t = std::time::Instant::now();
            let a = ctx.run(p);
            tracing::debug!(part = ?p, secs = t.elapsed().as_secs_f64(), "pi part");
            a
        })
        .collect();
    // The parts come from this process's own context: combining cannot fail.
    combine(&answers).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::sieve::count_primes;

    #[test]
    fn pi_table_matches_the_sieve() {
        let t = PiTable::new(100_000);
        for n in (0..100_000)
            .step_by(37)
            .chain([0, 1, 2, 3, 4, 5, 6, 7, 239, 240, 241])
        {
            assert_eq!(t.pi(n), count_primes(0, n), "pi({n})");
        }
    }

    /// Division by multiplication equals `/` (random n and d, seed printed; the edges).
    #[test]
    fn divisor_divides() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..200_000 {
            let shift = rng.gen_range(0..62);
            let d = rng.gen_range(2..u64::MAX >> shift);
            let shift = rng.gen_range(0..64);
            let n: u64 = rng.gen::<u64>() >> shift;
            assert_eq!(Divisor::new(d).div(n), n / d, "{n} / {d}, seed {seed}");
        }
        for d in [2u64, 3, 7, 1 << 32, u64::MAX, u64::MAX - 1] {
            for n in [0u64, 1, d - 1, d, u64::MAX, u64::MAX - 1] {
                assert_eq!(Divisor::new(d).div(n), n / d, "{n} / {d}");
            }
        }
    }

    /// The easy leaves' sum by the hyperbola equals the quotients summed one by one
    /// (random x and ranges of q, seed printed).
    #[test]
    fn sum_pi_quot_matches_the_plain_sum() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..6 {
            let x = rng.gen_range(SIEVE_BELOW..50_000_000_000u64);
            let ctx = Context::new(x);
            for _ in 0..40 {
                let b = rng.gen_range(C..ctx.a - 1);
                let p = ctx.primes[b + 1];
                let v = x / p;
                let lo_min = p.max(v / p / p);
                // As the easy leaves ask: q <= y, v/q within the π table.
                if lo_min >= ctx.y || v / (lo_min + 1) > ctx.pi.limit() {
                    continue;
                }
                let lo = rng.gen_range(lo_min..ctx.y);
                let hi = rng.gen_range(lo..=ctx.y.min(v / p).max(lo));
                let want: u64 = ctx.primes[1..]
                    .iter()
                    .filter(|&&q| q > lo && q <= hi)
                    .map(|&q| ctx.pi.pi(v / q))
                    .sum();
                assert_eq!(
                    ctx.sum_pi_quot(v, lo, hi),
                    want,
                    "x {x} p {p} ({lo}, {hi}], seed {seed}"
                );
            }
        }
    }

    #[test]
    fn cube_roots() {
        for n in [0u64, 1, 7, 8, 9, 26, 27, 28, 999, 1000, u64::MAX, 1 << 60] {
            let r = icbrt(n) as u128;
            assert!(r.pow(3) <= n as u128 && (r + 1).pow(3) > n as u128, "{n}");
        }
    }

    /// Published values of π(x) stored in the repo (`testdata/pi_values.tsv`).
    fn known_pi() -> Vec<(u64, u64)> {
        let text = include_str!("../../../testdata/pi_values.tsv");
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
            })
            .collect()
    }

    /// π(10^k) for k <= 12 equals the published values (k = 13..18 are #[ignore]d: minutes
    /// in all; `cargo test --release -p worker -- --ignored pi_of_large_powers`).
    #[test]
    fn pi_of_powers_of_ten() {
        let known = known_pi();
        assert!(
            known.len() >= 19,
            "testdata/pi_values.tsv holds {}",
            known.len()
        );
        for (x, want) in known.into_iter().filter(|&(x, _)| x <= 1_000_000_000_000) {
            assert_eq!(prime_pi(x), want, "pi({x})");
        }
    }

    /// π(10^13) to π(10^18) equal the published values (slow: about 15 minutes in all).
    #[test]
    #[ignore]
    fn pi_of_large_powers() {
        for (x, want) in known_pi()
            .into_iter()
            .filter(|&(x, _)| x > 1_000_000_000_000)
        {
            assert_eq!(prime_pi(x), want, "pi({x})");
        }
    }

    /// Random x from 10^7 to 2·10^9 (seed printed): π(x) by parts equals the sieve's count,
    /// however many parts it is cut into.
    #[test]
    fn random_x_match_the_sieve() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..12 {
            let x = rng.gen_range(SIEVE_BELOW..2_000_000_000);
            let want = count_primes(0, x);
            let ctx = Context::new(x);
            for k in [1, 2, 5] {
                let answers: Vec<PartAnswer> = ctx.parts(k).iter().map(|p| ctx.run(p)).collect();
                assert_eq!(
                    combine(&answers),
                    Ok(want),
                    "pi({x}) in {k} parts, seed {seed}"
                );
            }
        }
    }

    /// Part answers survive their text form, and combine refuses what is missing.
    #[test]
    fn answers_round_trip() {
        let x = 123_456_789_012;
        let ctx = Context::new(x);
        let answers: Vec<PartAnswer> = ctx.parts(3).iter().map(|p| ctx.run(p)).collect();
        let texts: Vec<String> = answers.iter().map(PartAnswer::encode).collect();
        let back: Vec<PartAnswer> = texts
            .iter()
            .map(|t| PartAnswer::decode(t))
            .collect::<Result<_, _>>()
            .expect("decode");
        assert_eq!(back, answers);
        assert_eq!(combine(&back), Ok(prime_pi(x)));
        assert!(combine(&back[1..]).is_err(), "without the base part");
        assert!(PartAnswer::decode("h:5:1:2,3:4").is_err());
        // Parts of two different cuts (another y) are refused.
        let mut other = back.clone();
        if let PartAnswer::Base { y, .. } = &mut other[0] {
            *y += 1;
        }
        let r = combine(&other);
        assert!(r.as_ref().is_err_and(|e| e.contains("y =")), "{r:?}");
        assert!(PartAnswer::decode("q:1").is_err());
        assert!(PartAnswer::decode("e:x").is_err());
    }

    #[test]
    fn counts_at_targets() {
        let lo = 1_000_000_007;
        let hi = lo + 40_000_000;
        let targets: Vec<u64> = (0..50).map(|i| lo + i * 800_000 + i % 7).collect();
        let got = counts_at(lo, hi, &targets);
        for (t, g) in targets.iter().zip(got) {
            assert_eq!(g, count_primes(lo, *t), "[{lo}, {t}]");
        }
    }
}
