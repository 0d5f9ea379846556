//! The prime-counting function π(x) without listing the primes, and the n-th prime.
//!
//! π(x) uses the Legendre-style recursion known as Lucy's algorithm: with S(v) the count of
//! numbers in [2, v] not crossed off by the primes below p, crossing off p changes S(v) by
//! S(v / p) - S(p - 1) for every v >= p². Only the values v = x / i are ever needed (about
//! 2·√x of them), so π(x) takes O(x^(3/4)) time and O(√x) memory: 10^12 in about a second,
//! and far less than sieving up to x. The n-th prime starts from the inverse of Riemann's
//! R function (typically a few thousand primes away from the answer near 10^13), counts the
//! primes up to there with π, and sieves only the short stretch between.

use super::isqrt;
use super::sieve::primes_in;

/// Largest x [`prime_pi`] accepts (see [`super::lmo::PI_MAX`]).
pub const PI_MAX: u64 = super::lmo::PI_MAX;

/// π(x): the number of primes <= x, by Deléglise–Rivat ([`super::lmo`]). x at most
/// [`PI_MAX`].
pub fn prime_pi(x: u64) -> u64 {
    super::lmo::prime_pi(x)
}

/// π(x) by Lucy's O(x^(3/4)) recursion: the previous method, kept as an independent
/// cross-check in tests (x up to about 2^40: √x values in two tables).
pub fn lucy_pi(x: u64) -> u64 {
    if x < 2 {
        return 0;
    }
    let r = isqrt(x) as usize;
    // small[v] = S(v) for v <= r; large[i] = S(x / i) for 1 <= i <= r.
    let mut small: Vec<u64> = (0..=r as u64).map(|v| v.saturating_sub(1)).collect();
    let mut large: Vec<u64> = (0..=r as u64)
        .map(|i| x.checked_div(i).map_or(0, |q| q - 1))
        .collect();
    for p in 2..=r {
        if small[p] == small[p - 1] {
            continue; // p is not prime
        }
        let sp = small[p - 1];
        let p2 = (p as u64) * (p as u64);
        let pu = p as u64;
        // large[i] for x / i >= p², i.e. i <= x / p².
        let imax = (x / p2).min(r as u64) as usize;
        let rp = r / p; // i * p <= r: x / (i p) is large[i * p]
        for i in 1..=imax {
            let d = if i <= rp {
                large[i * p]
            } else {
                small[(x / (i as u64 * pu)) as usize]
            };
            large[i] -= d - sp;
        }
        // small[v] for v >= p², descending.
        let mut v = r;
        while v as u64 >= p2 {
            small[v] -= small[v / p] - sp;
            v -= 1;
        }
    }
    large[1]
}

/// The logarithmic integral li(x) (Ramanujan's series), for x >= 2.
fn li(x: f64) -> f64 {
    const GAMMA: f64 = 0.577_215_664_901_532_9;
    let l = x.ln();
    let mut sum = 0.0;
    let mut term = 1.0; // (-1)^(n-1) l^n / (n! 2^(n-1))
    let mut inner = 0.0; // sum over k <= (n-1)/2 of 1/(2k+1)
    for n in 1..200 {
        term *= l / n as f64;
        if n > 1 {
            term *= -0.5;
        }
        if (n - 1) % 2 == 0 {
            inner += 1.0 / (2 * ((n - 1) / 2) + 1) as f64;
        }
        let add = term * inner;
        sum += add;
        if add.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    GAMMA + l.ln() + x.sqrt() * sum
}

/// Riemann's R(x) = Σ_k μ(k)/k · li(x^(1/k)): π(x) to within about √x / ln x times a small
/// factor, far closer than li(x) alone (at 3·10^13, li is ~2·10^5 primes off, R a few
/// thousand), so the stretch [`nth_near`] sieves is that much shorter.
fn riemann_r(x: f64) -> f64 {
    // μ(k) for k <= 64 (x^(1/k) < 2 beyond k = 64 for any 64-bit x).
    let mu = |k: u64| -> f64 {
        let (mut m, mut n, mut sign) = (2, k, 1.0);
        while m * m <= n {
            if n % m == 0 {
                n /= m;
                if n % m == 0 {
                    return 0.0;
                }
                sign = -sign;
            }
            m += 1;
        }
        if n > 1 {
            -sign
        } else {
            sign
        }
    };
    let mut sum = 0.0;
    for k in 1..=64u64 {
        let root = x.powf(1.0 / k as f64);
        if root < 2.0 {
            break;
        }
        let m = mu(k);
        if m != 0.0 {
            sum += m / k as f64 * li(root);
        }
    }
    sum
}

/// An x with R(x) close to n (Newton's method): the n-th prime is near it.
fn r_inverse(n: u64) -> u64 {
    let nf = n as f64;
    let mut x = nf * nf.ln().max(1.0);
    for _ in 0..100 {
        let step = (riemann_r(x) - nf) * x.ln();
        x -= step;
        if step.abs() < 1.0 {
            break;
        }
    }
    x.max(2.0) as u64
}

/// Largest n [`nth_prime`] accepts: p(10^16) is about 3.9 · 10^17, below [`PI_MAX`].
pub const NTH_MAX: u64 = proto::jobs::NTH_MAX;

/// The n-th prime (n >= 1, the first is 2), for n up to [`NTH_MAX`]. `progress` is told
/// the phase as it goes.
pub fn nth_prime(n: u64, mut progress: impl FnMut(&str)) -> Option<u64> {
    if n == 0 || n > NTH_MAX {
        return None;
    }
    if n < 1000 {
        return primes_in(0, 8000).get(n as usize - 1).copied();
    }
    progress("counting");
    let x = nth_estimate(n);
    let count = prime_pi(x);
    progress("refining");
    nth_near(n, x, count)
}

/// Where the n-th prime is looked for: an x near it (the inverse of the logarithmic
/// integral; a few √x·ln x away). The coordinator asks for π there by parts.
pub fn nth_estimate(n: u64) -> u64 {
    r_inverse(n)
}

/// The n-th prime, knowing that π(x) = `count`: sieves from x, a stretch at a time,
/// toward it. None if `count` cannot be right (the sieve runs out of numbers).
pub fn nth_near(n: u64, x: u64, count: u64) -> Option<u64> {
    if n == 0 {
        return None;
    }
    // The first stretch covers the expected distance, |n - count| primes of average gap
    // ln x, with a margin; each next one is twice as long, up to 2^22 numbers. Above 2^44
    // the sieve tests its survivors one by one, so a stretch longer than needed costs.
    let expect = (n.abs_diff(count) as f64 * (x.max(3) as f64).ln() * 1.25) as u64;
    let mut step: u64 = expect.saturating_add(1 << 12).min(1 << 22);
    let mut grow = || {
        let s = step;
        step = (step * 2).min(1 << 22);
        s
    };
    if count >= n {
        // p_n <= x: walk back from x.
        let mut above = count; // primes <= hi
        let mut hi = x;
        loop {
            let lo = hi.saturating_sub(grow() - 1);
            let ps = primes_in(lo, hi);
            let k = ps.len() as u64;
            // ps holds the primes numbered above - k + 1 ..= above.
            if above.checked_sub(k)? < n {
                return ps.get((n - (above - k) - 1) as usize).copied();
            }
            above -= k;
            hi = lo.checked_sub(1)?;
        }
    } else {
        let mut below = count; // primes <= lo - 1
        let mut lo = x.checked_add(1)?;
        loop {
            let hi = lo.checked_add(grow() - 1)?;
            let ps = primes_in(lo, hi);
            let k = ps.len() as u64;
            if below + k >= n {
                return ps.get((n - below - 1) as usize).copied();
            }
            below += k;
            lo = hi.checked_add(1)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::sieve::count_primes;

    /// The two methods agree (Lucy's recursion against Deléglise–Rivat) on scattered x.
    #[test]
    fn lucy_and_dr_agree() {
        for x in [
            10_000_019u64,
            99_999_999_977,
            123_456_789_012,
            777_777_777_777,
        ] {
            assert_eq!(lucy_pi(x), prime_pi(x), "pi({x})");
        }
    }

    #[test]
    fn pi_matches_the_sieve() {
        for x in [
            0u64, 1, 2, 3, 4, 10, 100, 1000, 7919, 65_536, 1_000_003, 12_345_678,
        ] {
            assert_eq!(prime_pi(x), count_primes(0, x), "pi({x})");
        }
        // Known values.
        assert_eq!(prime_pi(1_000_000_000), 50_847_534);
        assert_eq!(prime_pi(10_000_000_000), 455_052_511);
    }

    #[test]
    fn nth_matches_known_values() {
        let known = [
            (1u64, 2u64),
            (2, 3),
            (3, 5),
            (10, 29),
            (1000, 7919),
            (1001, 7927),
            (10_000, 104_729),
            (1_000_000, 15_485_863),
            (100_000_000, 2_038_074_743),
            (1_000_000_000, 22_801_763_489),
        ];
        for (n, p) in known {
            assert_eq!(nth_prime(n, |_| {}), Some(p), "p_{n}");
        }
        assert_eq!(nth_prime(0, |_| {}), None);
        // From either side of the estimate, and a count that cannot be right.
        let x = nth_estimate(1_000_000_000);
        let c = prime_pi(x);
        // Riemann's R lands within a few thousand primes (li alone: about √x / ln x, 6·10^3).
        assert!(c.abs_diff(1_000_000_000) < 3_000, "π(R⁻¹(10^9)) = {c}");
        assert_eq!(nth_near(1_000_000_000, x, c), Some(22_801_763_489));
        assert_eq!(
            nth_near(50_847_534, 1_000_000_000, 50_847_534),
            Some(999_999_937)
        );
        assert_eq!(
            nth_near(50_847_535, 999_999_937, 50_847_534),
            Some(1_000_000_007)
        );
        assert_eq!(nth_near(5, 100, 1_000_000), None);
    }
}
