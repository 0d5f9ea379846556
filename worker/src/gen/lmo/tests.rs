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
    let text = include_str!("../../../../testdata/pi_values.tsv");
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
