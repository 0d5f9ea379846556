use super::reference::{is_prime_mr7, is_prime_trial, strong_probable_prime};
use super::*;
use num_bigint::BigUint;
use rand::{Rng, SeedableRng};

fn rng(name: &str) -> rand::rngs::StdRng {
    let seed: u64 = std::env::var("PRIMES_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0000_0000_0001);
    eprintln!("{name}: seed {seed} (set PRIMES_TEST_SEED to change)");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Asserts two prime lists hold the same numbers (a batch does not keep input order), naming the first difference instead of printing both.
fn assert_same(got: &[u64], want: &[u64], what: &str) {
    let (mut got, mut want) = (got.to_vec(), want.to_vec());
    got.sort_unstable();
    want.sort_unstable();
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at {i}: got {} want {}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
}

fn testdata(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
/// Every row of testdata/known_primality.tsv gets its independently known class.
fn known_primality_table() {
    let mut rows = 0;
    for line in testdata("known_primality.tsv").lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(num), Some(class)) = (cols.next(), cols.next()) else {
            panic!("bad row {line:?}");
        };
        let n: BigUint = num
            .parse()
            .unwrap_or_else(|e| panic!("bad number {num:?}: {e}"));
        let want = match class {
            "prime" => true,
            "not_prime" => false,
            other => panic!("bad class {other:?}"),
        };
        assert_eq!(is_prime_big(&n), want, "{num} should be {class}");
        if let Ok(w) = u64::try_from(&n) {
            assert_eq!(is_prime_u64(w), want, "{num} should be {class} (u64 path)");
            let mut out = Vec::new();
            filter_primes_u64(&[w, w, w, w, w], &mut out);
            assert_eq!(out.len(), if want { 5 } else { 0 }, "{num} in a batch");
        }
        rows += 1;
    }
    assert_eq!(rows, 575, "the table has 575 rows");
}

#[test]
/// Agrees with trial division on every number below 100,000 and on random numbers below 10^8.
fn agrees_with_trial_division() {
    for n in 0..100_000u64 {
        assert_eq!(is_prime_u64(n), is_prime_trial(n), "n = {n}");
    }
    let mut r = rng("agrees_with_trial_division");
    let nums: Vec<u64> = (0..200_000).map(|_| r.gen_range(0..100_000_000)).collect();
    let mut batch = Vec::new();
    filter_primes_u64(&nums, &mut batch);
    let want: Vec<u64> = nums
        .iter()
        .copied()
        .filter(|&n| is_prime_trial(n))
        .collect();
    assert_same(&batch, &want, "batch below 10^8");
}

#[test]
/// Agrees with machine-prime and the 7-base Miller–Rabin on random 64-bit numbers, batch and
/// single, including numbers just above the sieve and near 2^64.
fn agrees_on_random_u64() {
    let mut r = rng("agrees_on_random_u64");
    let mut nums: Vec<u64> = (0..300_000).map(|_| r.gen::<u64>() | 1).collect();
    nums.extend((0..20_000).map(|i| SIEVE_LIMIT + i));
    nums.extend((0..20_000).map(|i| u64::MAX - i));
    // Random bit lengths, so batches mix sizes.
    nums.extend((0..100_000).map(|_| r.gen::<u64>() >> r.gen_range(0..40)));
    let mut batch = Vec::new();
    filter_primes_u64(&nums, &mut batch);
    let want: Vec<u64> = nums
        .iter()
        .copied()
        .filter(|&n| machine_prime::is_prime(n))
        .collect();
    assert_same(&batch, &want, "random u64 batch");
    for &n in nums.iter().take(50_000) {
        assert_eq!(is_prime_u64(n), is_prime_mr7(n), "n = {n}");
    }
}

#[test]
/// Agrees with machine-prime's 128-bit test on random 65..128-bit numbers and 128-bit primes.
fn agrees_on_random_u128() {
    let mut r = rng("agrees_on_random_u128");
    let mut found = 0;
    let mut all = Vec::new();
    let mut want_all = Vec::new();
    for i in 0..20_000 {
        let n: u128 = match i % 10 {
            // Machine words and even numbers go through the batch too.
            0 => r.gen::<u64>() as u128,
            1 => r.gen::<u128>() & !1,
            _ => (r.gen::<u128>() >> r.gen_range(0..63)) | (1 << 64) | 1,
        };
        let want = machine_prime::is_prime_128(n);
        found += want as u32;
        assert_eq!(is_prime_big(&BigUint::from(n)), want, "n = {n}");
        assert_eq!(is_prime_u128(n), want, "n = {n}");
        all.push(n);
        if want {
            want_all.push(n);
        }
    }
    assert!(
        found > 100,
        "the sample should hold primes too, found {found}"
    );
    let mut got = Vec::new();
    filter_primes_u128(&all, &mut got);
    got.sort_unstable();
    want_all.sort_unstable();
    assert_eq!(
        got, want_all,
        "the interleaved batch gives the same answers"
    );
}

/// Chernick's Carmichael numbers (6k+1)(12k+1)(18k+1) with all three factors prime.
fn chernick(r: &mut impl Rng, k_bits: u32, count: usize) -> Vec<BigUint> {
    let mut out = Vec::new();
    while out.len() < count {
        let k: u64 = r.gen_range(1..1u64 << k_bits);
        let fs = [6 * k as u128 + 1, 12 * k as u128 + 1, 18 * k as u128 + 1];
        if fs.iter().all(|&f| is_prime_big(&BigUint::from(f))) {
            out.push(fs.iter().map(|&f| BigUint::from(f)).product());
        }
    }
    out
}

#[test]
/// Carmichael numbers (which fool a Fermat test to every coprime base) are all composite,
/// below 2^64 and above.
fn carmichael_numbers_are_composite() {
    let mut r = rng("carmichael_numbers_are_composite");
    for n in [561u64, 1105, 1729, 2465, 2821, 6601, 8911, 5148001, 6868261] {
        assert!(!is_prime_u64(n), "{n}");
    }
    for k_bits in [6, 12, 18, 20, 30, 40] {
        for n in chernick(&mut r, k_bits, 30) {
            assert!(!is_prime_big(&n), "Carmichael {n}");
            if let Ok(w) = u64::try_from(&n) {
                assert!(!is_prime_u64(w), "Carmichael {w}");
                assert!(!machine_prime::is_prime(w));
            } else if let Ok(w) = u128::try_from(&n) {
                assert!(!machine_prime::is_prime_128(w));
            }
        }
    }
}

#[test]
/// Strong pseudoprimes to base 2 (composites that pass the first half of BPSW), found by a
/// search with the reference test, are caught by the Lucas half.
fn strong_base2_pseudoprimes_are_composite() {
    let mut r = rng("strong_base2_pseudoprimes_are_composite");
    let mut found = Vec::new();
    // Pseudoprimes cluster in n = (k+1)(2k+1) and (k+1)(3k+1) with both factors prime.
    for _ in 0..3_000_000 {
        let k: u64 = r.gen_range(2..1 << 31);
        for n in [(k + 1) * (2 * k + 1), (k + 1) * (3 * k + 1)] {
            if n & 1 == 1 && strong_probable_prime(n, 2) {
                found.push(n);
            }
        }
        if found.len() >= 20 {
            break;
        }
    }
    // Known ones from the literature as well.
    found.extend([
        2047u64,
        3277,
        4033,
        4681,
        8321,
        15841,
        29341,
        3215031751,
        3825123056546413051,
    ]);
    assert!(
        found.len() >= 12,
        "the search should find pseudoprimes, found {found:?}"
    );
    for n in found {
        assert!(strong_probable_prime(n, 2), "{n} should pass base 2");
        assert!(!is_prime_u64(n), "strong pseudoprime {n}");
        // Enough copies that every interleaved lane of both tests meets the pseudoprime.
        let batch: Vec<u64> = [n, 3, n, n, n, 16777259].repeat(7);
        let want: Vec<u64> = [3, 16777259].repeat(7);
        let mut out = Vec::new();
        filter_primes_u64(&batch, &mut out);
        assert_same(&out, &want, "batch with a pseudoprime");
    }
}

#[test]
/// Powers of two and perfect squares (no Selfridge D exists for a square) are composite.
fn powers_and_squares() {
    for k in 2..64 {
        assert!(!is_prime_u64(1 << k), "2^{k}");
    }
    for p in [16777259u64, 4294967291, 1000003, 65521] {
        assert!(!is_prime_u64(p * p), "{p}^2");
        assert!(!is_prime_big(&(BigUint::from(p) * p * p)), "{p}^3");
    }
    let p = BigUint::from(18446744073709551557u64);
    assert!(!is_prime_big(&(&p * &p)), "square of a 64-bit prime");
}

#[test]
/// Mersenne primes and their composite neighbours, up to 4423 bits.
fn mersenne() {
    let one = BigUint::from(1u32);
    for e in [61u32, 89, 107, 127, 521, 607, 1279] {
        assert!(is_prime_big(&((&one << e) - 1u32)), "2^{e}-1");
    }
    for e in [67u32, 101, 257, 1000] {
        assert!(!is_prime_big(&((&one << e) - 1u32)), "2^{e}-1");
    }
}

#[test]
/// The extra strong Lucas test alone, on every odd composite below 10^5 (above the trial
/// limit, coprime to the primes up to 727 or not): it passes exactly the known extra strong
/// Lucas pseudoprimes with Baillie's parameters (OEIS A217719), and every prime.
fn extra_strong_lucas_pseudoprimes_match_oeis() {
    let known: Vec<u64> = vec![
        989, 3239, 5777, 10877, 27971, 29681, 30739, 31631, 39059, 72389, 73919, 75077,
    ];
    let mut found = Vec::new();
    for n in (731..100_000u64).step_by(2) {
        let m = Mont::new(n);
        let pass = lucas::extra_strong_lucas(&m);
        if is_prime_trial(n) {
            assert!(pass, "prime {n} must pass");
        } else if pass {
            found.push(n);
        }
    }
    let below: Vec<u64> = known.iter().copied().filter(|&n| n > 731).collect();
    assert_eq!(found, below);
}

#[test]
/// On random 64-bit numbers that pass the base-2 test, the extra strong Lucas test (used)
/// and Selfridge's strong Lucas test (the original BPSW) agree, and the lanes agree with
/// the single test.
fn lucas_variants_agree() {
    let mut r = rng("lucas_variants_agree");
    let mut n_checked = 0;
    while n_checked < 4000 {
        let n = r.gen::<u64>() | 1 | (1 << 63);
        if trial::has_small_factor(n) {
            continue;
        }
        let m = Mont::new(n);
        if !m.strong_base2() {
            continue;
        }
        let es = lucas::extra_strong_lucas(&m);
        assert_eq!(es, lucas::strong_lucas(&m), "n = {n}");
        let lanes = lanes::extra_strong_lucas_lanes(&[m, Mont::new(1_000_003), m, Mont::new(989)]);
        assert_eq!(lanes, [es, true, es, true], "n = {n}");
        n_checked += 1;
    }
    // 128-bit and big-integer rings agree with the strong test too.
    for _ in 0..300 {
        let n: u128 = r.gen::<u128>() | 1 | (1 << 127);
        let big = BigUint::from(n);
        assert_eq!(
            is_prime_big(&big),
            machine_prime::is_prime_128(n),
            "n = {n}"
        );
    }
}

#[test]
/// The 128-bit Montgomery product and square agree with big-integer arithmetic, for moduli
/// of every width up to 2^128 - 3 and operands at the edges (0, 1, n - 1) and at random.
fn montgomery_128_matches_big_integers() {
    use super::mont128::Mont128;
    use super::ring::ModRing;
    let mut r = rng("montgomery_128_matches_big_integers");
    let big = |x: u128| BigUint::from(x);
    let r128: BigUint = BigUint::from(1u8) << 128u32;
    for round in 0..3000 {
        let n: u128 = match round {
            0 => u128::MAX - 2,
            1 => (1u128 << 64) + 1,
            _ => (r.gen::<u128>() >> r.gen_range(0..63)) | (1 << 64) | 1,
        };
        if n == u128::MAX {
            continue;
        }
        let m = Mont128::new(n);
        // Montgomery form of x is x * R mod n; mul(xR, yR) = xyR.
        let rinv = r128.modinv(&big(n)).expect("R is invertible mod odd n");
        let from = |x: u128| big(x) * &rinv % big(n);
        for k in 0..8 {
            let (a, b) = match k {
                0 => (0, n - 1),
                1 => (n - 1, n - 1),
                2 => (1, n - 1),
                _ => (r.gen::<u128>() % n, r.gen::<u128>() % n),
            };
            let want = big(a) * big(b) * &rinv % big(n);
            assert_eq!(big(m.mul(&a, &b)), want, "{a} * {b} mod {n}");
            let want_sq = big(a) * big(a) * &rinv % big(n);
            assert_eq!(big(m.sqr(&a)), want_sq, "{a}^2 mod {n}");
            assert_eq!(from(m.one()), BigUint::from(1u8), "one mod {n}");
        }
    }
}
