//! `worker check FILE...`: the distinct primes of some files, in one process, no cluster.
//!
//! Prints the distinct primes in ascending order on stdout, one per line, and a summary per
//! file (lines, numbers, invalid lines with the first reasons) on stderr. This is also the
//! single-process baseline that the distributed pipeline is measured against.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context;
use num_bigint::BigUint;

use crate::scan::{scan_reader, ScanConfig, ScanResult};

/// Outcome of a check run.
pub struct CheckOutcome {
    /// Files that could not be read (their error was reported on stderr).
    pub failed_files: usize,
}

/// Scans `files` and writes the distinct primes to `out`, the summary to `err`.
pub fn run_check(
    files: &[PathBuf],
    cfg: &ScanConfig,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<CheckOutcome> {
    let mut primes: Vec<u64> = Vec::new();
    let mut big: Vec<BigUint> = Vec::new();
    let mut failed_files = 0;
    let mut total = ScanResult::default();
    for path in files {
        let result = File::open(path)
            .and_then(|f| scan_reader(io::BufReader::with_capacity(1 << 20, f), cfg, |_| {}));
        let mut r = match result {
            Ok(r) => r,
            Err(e) => {
                writeln!(err, "{}: cannot read: {e}", path.display())?;
                failed_files += 1;
                continue;
            }
        };
        writeln!(
            err,
            "{}: {} lines, {} numbers, {} primes (with repeats), {} blank, {} invalid",
            path.display(),
            r.lines,
            r.numbers,
            r.primes.len() + r.big_primes.len(),
            r.blank,
            r.invalid
        )?;
        for inv in &r.first_invalid {
            writeln!(err, "  line {}: {}", inv.line, inv.reason)?;
        }
        if r.invalid > r.first_invalid.len() as u64 {
            writeln!(
                err,
                "  ... and {} more invalid lines",
                r.invalid - r.first_invalid.len() as u64
            )?;
        }
        primes.append(&mut r.primes);
        big.append(&mut r.big_primes);
        total.lines += r.lines;
        total.numbers += r.numbers;
        total.invalid += r.invalid;
    }
    primes.sort_unstable();
    primes.dedup();
    big.sort_unstable();
    big.dedup();
    let mut w = io::BufWriter::with_capacity(1 << 16, out);
    for p in &primes {
        writeln!(w, "{p}").context("writing primes to stdout")?;
    }
    for p in &big {
        writeln!(w, "{p}").context("writing primes to stdout")?;
    }
    w.flush().context("writing primes to stdout")?;
    if files.len() > 1 {
        writeln!(
            err,
            "total: {} files, {} lines, {} numbers, {} distinct primes, {} invalid lines",
            files.len(),
            total.lines,
            total.numbers,
            primes.len() + big.len(),
            total.invalid
        )?;
    }
    Ok(CheckOutcome { failed_files })
}
