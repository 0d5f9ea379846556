//! Primality and parsing benchmarks. Run: `cargo bench -p worker --bench primality`.
//! Every group reports time per element (Throughput::Elements) so ns/number reads directly.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use num_bigint::BigUint;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::time::Duration;
use worker::parse::{lines, parse_line, Line, Value, DEFAULT_MAX_BITS};
use worker::prime::{
    filter_primes_u128, filter_primes_u64, is_prime_big, is_prime_u128, is_prime_u64,
    reference::is_prime_mr7,
};

const SEED: u64 = 20261122;

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(SEED)
}

fn u64_sets() -> Vec<(&'static str, Vec<u64>)> {
    let mut r = rng();
    let random_odd: Vec<u64> = (0..1 << 16).map(|_| r.gen::<u64>() | 1).collect();
    let mut primes = Vec::new();
    while primes.len() < 1 << 12 {
        let n = r.gen::<u64>() | (1 << 63) | 1;
        if machine_prime::is_prime(n) {
            primes.push(n);
        }
    }
    let small: Vec<u64> = (0..1 << 20).map(|_| r.gen_range(1..=10_000_000)).collect();
    // Full width: the top bit set, where a Montgomery product leaves no spare bit.
    let full_width: Vec<u64> = (0..1 << 16)
        .map(|_| r.gen::<u64>() | (1 << 63) | 1)
        .collect();
    vec![
        ("a_random_odd_u64", random_odd),
        ("a2_random_odd_u64_top_bit_set", full_width),
        ("b_u64_primes", primes),
        ("c_shuffled_1_to_1e7", small),
    ]
}

fn bench_u64(c: &mut Criterion) {
    for (name, nums) in u64_sets() {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(nums.len() as u64));
        g.bench_function("ours_batch_1thread", |b| {
            let mut out = Vec::with_capacity(nums.len());
            b.iter(|| {
                out.clear();
                filter_primes_u64(black_box(&nums), &mut out);
                out.len()
            })
        });
        g.bench_function("ours_single_1thread", |b| {
            b.iter(|| nums.iter().filter(|&&n| is_prime_u64(black_box(n))).count())
        });
        g.bench_function("machine_prime_1thread", |b| {
            b.iter(|| {
                nums.iter()
                    .filter(|&&n| machine_prime::is_prime(black_box(n)))
                    .count()
            })
        });
        g.bench_function("mr7_textbook_1thread", |b| {
            b.iter(|| nums.iter().filter(|&&n| is_prime_mr7(black_box(n))).count())
        });
        g.bench_function("ours_batch_all_threads", |b| {
            b.iter(|| {
                nums.par_chunks(256)
                    .map(|c| {
                        let mut out = Vec::new();
                        filter_primes_u64(c, &mut out);
                        out.len()
                    })
                    .sum::<usize>()
            })
        });
        g.bench_function("machine_prime_all_threads", |b| {
            b.iter(|| {
                nums.par_iter()
                    .filter(|&&n| machine_prime::is_prime(n))
                    .count()
            })
        });
        g.finish();
    }
}

fn bench_big(c: &mut Criterion) {
    let mut r = rng();
    for bits in [128u64, 256, 1024] {
        let random_odd: Vec<BigUint> = (0..64)
            .map(|_| {
                let mut n = BigUint::from(1u32) << (bits - 1);
                for i in 0..bits / 32 {
                    n |= BigUint::from(r.gen::<u32>()) << (32 * i);
                }
                n | BigUint::from(1u32)
            })
            .collect();
        let primes: Vec<BigUint> = {
            let mut out = Vec::new();
            let mut n = random_odd[0].clone();
            while out.len() < if bits > 512 { 4 } else { 32 } {
                if is_prime_big(&n) {
                    out.push(n.clone());
                }
                n += 2u32;
            }
            out
        };
        let mut g = c.benchmark_group(format!("d_{bits}_bit"));
        for (set, nums) in [("random_odd", &random_odd), ("primes", &primes)] {
            g.throughput(Throughput::Elements(nums.len() as u64));
            g.bench_with_input(BenchmarkId::new("ours_1thread", set), nums, |b, nums| {
                b.iter(|| nums.iter().filter(|n| is_prime_big(black_box(n))).count())
            });
            if bits == 128 {
                let w: Vec<u128> = nums
                    .iter()
                    .map(|n| u128::try_from(n).unwrap_or(0))
                    .collect();
                g.bench_with_input(BenchmarkId::new("ours_u128_1thread", set), &w, |b, w| {
                    b.iter(|| w.iter().filter(|&&n| is_prime_u128(black_box(n))).count())
                });
                g.bench_with_input(
                    BenchmarkId::new("ours_u128_batch_1thread", set),
                    &w,
                    |b, w| {
                        let mut out = Vec::with_capacity(w.len());
                        b.iter(|| {
                            out.clear();
                            filter_primes_u128(black_box(w), &mut out);
                            out.len()
                        })
                    },
                );
                g.bench_with_input(
                    BenchmarkId::new("machine_prime_1thread", set),
                    &w,
                    |b, w| {
                        b.iter(|| {
                            w.iter()
                                .filter(|&&n| machine_prime::is_prime_128(black_box(n)))
                                .count()
                        })
                    },
                );
                if set == "primes" {
                    // Without trial division ("worst case" entry point): valid for numbers
                    // with no small factor, such as these primes.
                    g.bench_with_input(
                        BenchmarkId::new("machine_prime_wc_1thread", set),
                        &w,
                        |b, w| {
                            b.iter(|| {
                                w.iter()
                                    .filter(|&&n| machine_prime::is_prime_wc_128(black_box(n)))
                                    .count()
                            })
                        },
                    );
                }
            }
        }
        g.finish();
    }
}

fn bench_parse(c: &mut Criterion) {
    let mut r = rng();
    let mut buf = Vec::new();
    for _ in 0..1 << 20 {
        buf.extend_from_slice(format!("{}\n", r.gen::<u64>() >> r.gen_range(0..40)).as_bytes());
    }
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("ours_parse_line", |b| {
        b.iter(|| {
            let mut s = 0u64;
            for l in lines(black_box(&buf)) {
                if let Line::Number(Value::Word(v)) = parse_line(l, DEFAULT_MAX_BITS) {
                    s = s.wrapping_add(v);
                }
            }
            s
        })
    });
    g.bench_function("std_str_parse", |b| {
        b.iter(|| {
            let mut s = 0u64;
            for l in black_box(&buf).split(|&c| c == b'\n') {
                if let Ok(v) = std::str::from_utf8(l).unwrap_or("").trim().parse::<u64>() {
                    s = s.wrapping_add(v);
                }
            }
            s
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench_u64, bench_big, bench_parse
}
criterion_main!(benches);
