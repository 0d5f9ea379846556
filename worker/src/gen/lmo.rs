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
//!
//! Its rooms: this file holds the context (tables, y, the cut into parts) and the easy
//! leaves, P2 and the base part; `pi_table` the table of π up to √x; `hard` the hard
//! leaves and their sieve; `answer` the parts' answers and [`combine`].

use rayon::prelude::*;

use super::isqrt;
use super::sieve::{counts_at, primes_in, RangeSieve};

mod answer;
mod hard;
mod pi_table;
#[cfg(test)]
mod tests;

pub use answer::{combine, Part, PartAnswer};
pub use pi_table::PiTable;
use pi_table::MASKS;

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
