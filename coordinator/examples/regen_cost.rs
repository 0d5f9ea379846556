//! Where a member's regeneration of range primes goes, per prime: the sieve listing a
//! piece's primes, their hash, and the append to a primes file (ranges bookkeeping, decimal,
//! page-cache writes). 32 pieces of 2^24 numbers from 10^12, as a `primes` job's flushes
//! reference them; then the same numbers listed in one call and counted.
//!
//!     cargo run --release -p coordinator --example regen_cost [SCRATCH_DIR]

use std::time::Instant;

use anyhow::Context;
use coordinator::group::batch::hash_primes;
use coordinator::primes::PrimesFile;
use coordinator::ranges::Run;
use worker::gen::sieve::{count_primes, primes_in};

const LO: u64 = 1_000_000_000_000;
const PIECE: u64 = 1 << 24;
const PIECES: u64 = 32;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| std::env::temp_dir().join("regen_cost"), Into::into);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut file = PrimesFile::open(&dir.join("primes.txt"))?;
    file.set_sync(false);
    let (mut sieve, mut hash, mut append, mut n) = (0.0, 0.0, 0.0, 0u64);
    for i in 0..PIECES {
        let (lo, hi) = (LO + i * PIECE, LO + (i + 1) * PIECE - 1);
        let t = Instant::now();
        let primes = primes_in(lo, hi);
        sieve += t.elapsed().as_secs_f64();
        let t = Instant::now();
        std::hint::black_box(hash_primes(&primes));
        hash += t.elapsed().as_secs_f64();
        n += primes.len() as u64;
        let t = Instant::now();
        file.append(&[], &[], &[Run { lo, hi, primes }], &[])?;
        append += t.elapsed().as_secs_f64();
    }
    let per = |s: f64| s * 1e9 / n as f64;
    println!(
        "{n} primes in {PIECES} pieces: sieve {:.1} ns a prime, hash {:.1}, append {:.1}",
        per(sieve),
        per(hash),
        per(append)
    );
    let hi = LO + PIECES * PIECE - 1;
    let t = Instant::now();
    let listed = primes_in(LO, hi).len() as u64;
    let listing = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let counted = count_primes(LO, hi);
    let counting = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        listed == n && counted == n,
        "the counts differ: {listed}, {counted}, {n}"
    );
    println!(
        "in one call: listed {:.1} ns a prime, counted {:.1}",
        per(listing),
        per(counting)
    );
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(())
}
