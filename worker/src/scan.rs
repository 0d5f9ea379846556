//! Scanning whole inputs: parse every line and keep the primes, in parallel over
//! line-aligned chunks.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use num_bigint::BigUint;
use rayon::prelude::*;

use crate::parse::{self, Invalid, Line, Value};
use crate::prime;

/// How many invalid lines a result keeps with their reason (all are counted).
pub const KEPT_INVALID: usize = 10;

/// Limits for a scan, and a way to stop it.
#[derive(Clone, Debug)]
pub struct ScanConfig {
    /// Largest accepted magnitude in bits (DESIGN.md 1.3; default 4096).
    pub max_bits: u64,
    /// Longest line held in memory; longer lines are invalid and skipped while streaming.
    pub max_line_bytes: u64,
    /// Set from outside to stop the scan: it is checked before every big number and every
    /// batch of machine words, so a cancelled scan stops within one number's test (tens of
    /// ms at 4096 bits). The result of a cancelled scan is partial: discard it.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl ScanConfig {
    /// True once the scan was asked to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            max_bits: parse::DEFAULT_MAX_BITS,
            max_line_bytes: 64 << 20,
            cancel: None,
        }
    }
}

/// One kept invalid line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidLine {
    /// 1-based line number in the scanned input.
    pub line: u64,
    pub reason: Invalid,
}

/// Counts and primes of a scanned input (or part of one).
#[derive(Clone, Debug, Default)]
pub struct ScanResult {
    /// Lines seen (a final line without newline included).
    pub lines: u64,
    /// Valid numbers read.
    pub numbers: u64,
    pub blank: u64,
    pub invalid: u64,
    /// The first [`KEPT_INVALID`] invalid lines.
    pub first_invalid: Vec<InvalidLine>,
    /// Primes below 2^64, repeats kept, in no particular order.
    pub primes: Vec<u64>,
    /// Primes of 2^64 and above, in input order, repeats kept.
    pub big_primes: Vec<BigUint>,
}

impl ScanResult {
    /// Appends `later`, the result of the input that follows this one.
    pub fn append(&mut self, mut later: ScanResult) {
        let offset = self.lines;
        for inv in later.first_invalid.drain(..) {
            if self.first_invalid.len() < KEPT_INVALID {
                self.first_invalid.push(InvalidLine {
                    line: inv.line + offset,
                    reason: inv.reason,
                });
            }
        }
        self.lines += later.lines;
        self.numbers += later.numbers;
        self.blank += later.blank;
        self.invalid += later.invalid;
        self.primes.append(&mut later.primes);
        self.big_primes.append(&mut later.big_primes);
    }

    fn note_invalid(&mut self, reason: Invalid) {
        self.invalid += 1;
        if self.first_invalid.len() < KEPT_INVALID {
            self.first_invalid.push(InvalidLine {
                line: self.lines,
                reason,
            });
        }
    }

    /// Counts one more line, invalid because it was too long to hold.
    pub fn push_too_long(&mut self, bytes: u64, max_bytes: u64) {
        self.lines += 1;
        self.note_invalid(Invalid::LineTooLong { bytes, max_bytes });
    }
}

/// Words are tested in batches of this many, so the interleaved test sees full lanes.
const BATCH: usize = 512;

/// Scans one buffer sequentially.
pub fn scan_buffer(buf: &[u8], cfg: &ScanConfig) -> ScanResult {
    let mut r = ScanResult::default();
    let mut words = Vec::with_capacity(BATCH);
    let mut wide = Vec::new();
    for line in parse::lines(buf) {
        r.lines += 1;
        match parse::parse_line(line, cfg.max_bits) {
            Line::Blank => r.blank += 1,
            Line::Invalid(reason) => r.note_invalid(reason),
            Line::Number(v) => {
                r.numbers += 1;
                match v {
                    Value::Word(w) => {
                        words.push(w);
                        if words.len() == BATCH {
                            if cfg.cancelled() {
                                return r;
                            }
                            prime::filter_primes_u64(&words, &mut r.primes);
                            words.clear();
                        }
                    }
                    Value::Big(b) => {
                        if cfg.cancelled() {
                            return r;
                        }
                        match u128::try_from(&b) {
                            Ok(x) => {
                                wide.push(x);
                                if wide.len() == WIDE_BATCH {
                                    test_wide(&mut wide, &mut r.big_primes);
                                }
                            }
                            Err(_) => {
                                if prime::is_prime_big(&b) {
                                    r.big_primes.push(b);
                                }
                            }
                        }
                    }
                    Value::Negative => {}
                }
            }
        }
    }
    prime::filter_primes_u64(&words, &mut r.primes);
    test_wide(&mut wide, &mut r.big_primes);
    r
}

/// Numbers between 2^64 and 2^128 are tested in batches of this many (interleaved, like
/// machine words; each takes microseconds, so a batch is a short wait for a cancel).
const WIDE_BATCH: usize = 64;

/// Tests the queued numbers below 2^128 and empties the queue.
fn test_wide(wide: &mut Vec<u128>, big_primes: &mut Vec<BigUint>) {
    let mut found = Vec::new();
    prime::filter_primes_u128(wide, &mut found);
    big_primes.extend(found.into_iter().map(BigUint::from));
    wide.clear();
}

/// Size of the pieces a buffer is split into for parallel scanning.
const PIECE: usize = 256 << 10;

/// Splits `buf` into pieces of about `piece` bytes that end just after a newline (the last
/// one may end anywhere).
pub fn split_lines(buf: &[u8], piece: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() > piece {
        match memchr::memchr(b'\n', &rest[piece..]) {
            Some(k) => {
                let (a, b) = rest.split_at(piece + k + 1);
                out.push(a);
                rest = b;
            }
            None => break,
        }
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Scans one buffer on all rayon threads. Same result as [`scan_buffer`].
pub fn scan_parallel(buf: &[u8], cfg: &ScanConfig) -> ScanResult {
    let results: Vec<ScanResult> = split_lines(buf, PIECE)
        .into_par_iter()
        .map(|p| scan_buffer(p, cfg))
        .collect();
    let mut total = ScanResult::default();
    for r in results {
        total.append(r);
    }
    total
}

/// Bytes read from a stream per parallel step.
const BLOCK: usize = 16 << 20;

/// Bytes of an in-memory chunk scanned per parallel step by [`scan_slice`]: small enough
/// that progress (reported per step) moves several times within an 8 MiB chunk, large
/// enough (4 pieces) to keep 2 threads busy.
const SLICE_BLOCK: usize = 1 << 20;

/// [`scan_reader`] over bytes already in memory, without copying them: blocks of about
/// `SLICE_BLOCK` bytes cut at newlines are scanned in place. Same result as
/// `scan_reader` (a block with no newline, i.e. a line longer than a block, hands the rest
/// to it).
pub fn scan_slice(bytes: &[u8], cfg: &ScanConfig, mut progress: impl FnMut(u64)) -> ScanResult {
    let mut total = ScanResult::default();
    let mut pos = 0;
    while pos < bytes.len() && !cfg.cancelled() {
        let end = (pos + SLICE_BLOCK).min(bytes.len());
        let cut = if end == bytes.len() {
            let tail_start = memchr::memrchr(b'\n', &bytes[pos..end]).map_or(pos, |k| pos + k + 1);
            ((end - tail_start) as u64 <= cfg.max_line_bytes).then_some(end)
        } else {
            memchr::memrchr(b'\n', &bytes[pos..end]).map(|k| pos + k + 1)
        };
        let Some(cut) = cut.filter(|_| cfg.max_line_bytes >= SLICE_BLOCK as u64) else {
            let base = pos as u64;
            // Reading from a slice cannot fail.
            let rest = scan_reader(&bytes[pos..], cfg, |b| progress(base + b)).unwrap_or_default();
            total.append(rest);
            return total;
        };
        total.append(scan_parallel(&bytes[pos..cut], cfg));
        pos = cut;
        progress(pos as u64);
    }
    total
}

/// Scans a stream with bounded memory: blocks of about `BLOCK` bytes cut at newlines, each
/// scanned in parallel. A line longer than `cfg.max_line_bytes` is counted invalid and
/// skipped without being held. `progress` is called with the bytes consumed so far.
pub fn scan_reader<R: Read>(
    mut reader: R,
    cfg: &ScanConfig,
    mut progress: impl FnMut(u64),
) -> std::io::Result<ScanResult> {
    let mut total = ScanResult::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut consumed = 0u64;
    // Bytes of an over-long line being skipped, if we are in one.
    let mut skipping: Option<u64> = None;
    let mut eof = false;
    while !eof && !cfg.cancelled() {
        // Read up to BLOCK more bytes. `read_to_end` grows the buffer as data arrives, so a
        // small input never costs a BLOCK-sized allocation.
        let before = buf.len();
        loop {
            match reader
                .by_ref()
                .take((BLOCK - (buf.len() - before)) as u64)
                .read_to_end(&mut buf)
            {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if buf.len() - before < BLOCK {
            eof = true;
        }
        if let Some(skipped) = skipping.as_mut() {
            match memchr::memchr(b'\n', &buf) {
                Some(k) => {
                    total.push_too_long(*skipped + k as u64, cfg.max_line_bytes);
                    consumed += k as u64 + 1;
                    buf.drain(..=k);
                    skipping = None;
                }
                None => {
                    *skipped += buf.len() as u64;
                    consumed += buf.len() as u64;
                    buf.clear();
                    if eof {
                        total.push_too_long(skipping.take().unwrap_or(0), cfg.max_line_bytes);
                    }
                    continue;
                }
            }
        }
        let cut = if eof {
            // The final line has no newline; hold it to the same limit as any other.
            let tail_start = memchr::memrchr(b'\n', &buf).map_or(0, |k| k + 1);
            let tail = (buf.len() - tail_start) as u64;
            if tail > cfg.max_line_bytes {
                total.append(scan_parallel(&buf[..tail_start], cfg));
                total.push_too_long(tail, cfg.max_line_bytes);
                consumed += buf.len() as u64;
                buf.clear();
                progress(consumed);
                break;
            }
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf) {
                Some(k) => k + 1,
                None => 0,
            }
        };
        if cut > 0 {
            total.append(scan_parallel(&buf[..cut], cfg));
            consumed += cut as u64;
            buf.drain(..cut);
        }
        if !eof && buf.len() as u64 > cfg.max_line_bytes {
            skipping = Some(buf.len() as u64);
            consumed += buf.len() as u64;
            buf.clear();
        }
        progress(consumed);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A cancelled scan stops at its next check: before any big number, and between
    /// blocks of a stream.
    fn cancelled_scan_stops() {
        let big = "1".repeat(1200) + "\n";
        let buf = big.repeat(2000);
        let flag = Arc::new(AtomicBool::new(false));
        let cfg = ScanConfig {
            cancel: Some(flag.clone()),
            ..ScanConfig::default()
        };
        assert!(!cfg.cancelled());
        flag.store(true, Ordering::Relaxed);
        let r = scan_buffer(buf.as_bytes(), &cfg);
        assert_eq!(r.numbers, 1, "stopped before testing a second big number");
        let r = scan_slice(buf.as_bytes(), &cfg, |_| {});
        assert_eq!(r.numbers, 0, "a slice scan checks before its first block");
        let r = scan_reader(buf.as_bytes(), &cfg, |_| {}).expect("scan");
        assert_eq!(r.numbers, 0, "a stream scan checks before its first block");
        let whole = scan_buffer(buf.as_bytes(), &ScanConfig::default());
        assert_eq!(whole.numbers, 2000);
    }

    #[test]
    /// Parallel and streaming scans give the same result as one sequential pass.
    fn parallel_and_stream_agree() {
        let mut input = Vec::new();
        for i in 0..200_000u64 {
            match i % 7 {
                0 => input.extend_from_slice(b"junk\n"),
                1 => input.extend_from_slice(b"\n"),
                _ => input.extend_from_slice(format!("{}\n", i * 7919 + 1).as_bytes()),
            }
        }
        let cfg = ScanConfig::default();
        let sorted = |mut r: ScanResult| {
            r.primes.sort_unstable();
            r
        };
        let a = sorted(scan_buffer(&input, &cfg));
        let b = sorted(scan_parallel(&input, &cfg));
        let c = sorted(scan_reader(&input[..], &cfg, |_| {}).expect("reading a slice cannot fail"));
        for r in [&b, &c] {
            assert_eq!(r.lines, a.lines);
            assert_eq!(r.numbers, a.numbers);
            assert_eq!(r.invalid, a.invalid);
            assert_eq!(r.blank, a.blank);
            assert_eq!(r.first_invalid, a.first_invalid);
            assert_eq!(r.primes, a.primes);
        }
        assert_eq!(a.lines, 200_000);
        assert_eq!(a.first_invalid[1].line, 8);
    }

    #[test]
    /// Scanning bytes in place gives what streaming them gives: across several blocks, with
    /// a line longer than a block, a final line without a newline, and a small line limit.
    fn slice_and_stream_agree() {
        let mut input = Vec::new();
        let mut i = 0u64;
        while input.len() < 40 << 20 {
            match i % 11 {
                0 => input.extend_from_slice(b"junk\n"),
                1 => input.extend_from_slice(b"\r\n"),
                _ => input.extend_from_slice(format!("{}\n", i * 1_000_003 + 7).as_bytes()),
            }
            i += 1;
            if i == 300_000 {
                input.extend(std::iter::repeat_n(b'7', 17 << 20));
                input.push(b'\n');
            }
        }
        input.extend_from_slice(b"1000003");
        let sorted = |mut r: ScanResult| {
            r.primes.sort_unstable();
            r
        };
        for max_line_bytes in [64 << 20, 20 << 20, 1000] {
            let cfg = ScanConfig {
                max_line_bytes,
                ..ScanConfig::default()
            };
            let want = sorted(scan_reader(&input[..], &cfg, |_| {}).expect("slice"));
            let mut seen = Vec::new();
            let got = sorted(scan_slice(&input, &cfg, |b| seen.push(b)));
            assert_eq!(got.lines, want.lines, "limit {max_line_bytes}");
            assert_eq!(got.numbers, want.numbers, "limit {max_line_bytes}");
            assert_eq!(got.invalid, want.invalid, "limit {max_line_bytes}");
            assert_eq!(got.blank, want.blank, "limit {max_line_bytes}");
            assert_eq!(
                got.first_invalid, want.first_invalid,
                "limit {max_line_bytes}"
            );
            assert_eq!(got.primes, want.primes, "limit {max_line_bytes}");
            assert_eq!(seen.last().copied(), Some(input.len() as u64));
            assert!(seen.windows(2).all(|w| w[0] <= w[1]));
        }
    }

    #[test]
    /// Progress over an 8 MiB chunk in memory moves about once per MiB, not once per chunk.
    fn slice_progress_moves_within_a_chunk() {
        let mut input = Vec::new();
        let mut i = 0u64;
        while input.len() < 8 << 20 {
            input.extend_from_slice(format!("{}\n", i * 7 + 1).as_bytes());
            i += 1;
        }
        let mut seen = Vec::new();
        let r = scan_slice(&input, &ScanConfig::default(), |b| seen.push(b));
        assert_eq!(r.lines, i);
        assert!(seen.len() >= 7, "{seen:?}");
        assert_eq!(seen.last().copied(), Some(input.len() as u64));
    }

    #[test]
    /// A line longer than the limit is one invalid line, and the lines after it still count.
    fn overlong_line_is_skipped() {
        let mut input = b"7\n".to_vec();
        input.extend(std::iter::repeat_n(b'1', 100_000));
        input.extend_from_slice(b"\n11\n");
        let cfg = ScanConfig {
            max_line_bytes: 1000,
            ..ScanConfig::default()
        };
        struct Slow<'a>(&'a [u8]);
        impl Read for Slow<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = out.len().min(self.0.len()).min(4096);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let r = scan_reader(Slow(&input), &cfg, |_| {}).expect("in-memory read");
        assert_eq!(r.lines, 3);
        assert_eq!(r.invalid, 1);
        assert_eq!(r.first_invalid[0].line, 2);
        let mut primes = r.primes;
        primes.sort_unstable();
        assert_eq!(primes, vec![7, 11]);
    }
}

#[cfg(test)]
mod mixed_input {
    use super::*;
    use crate::parse::{lines, parse_line, DEFAULT_MAX_BITS};

    fn testdata(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    fn numbers(v: &serde_json::Value, key: &str) -> Vec<u64> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing"))
            .iter()
            .map(|x| {
                x.as_u64()
                    .unwrap_or_else(|| panic!("{key}: {x} is not a line number"))
            })
            .collect()
    }

    #[test]
    /// testdata/mixed_input.txt gives exactly the valid, blank and invalid lines and the
    /// distinct primes listed in mixed_input.expected.json.
    fn matches_expected_json() {
        let input = testdata("mixed_input.txt");
        let expected: serde_json::Value =
            serde_json::from_slice(&testdata("mixed_input.expected.json"))
                .expect("expected json parses");
        let (mut valid, mut blank, mut invalid) = (vec![], vec![], vec![]);
        for (i, line) in lines(&input).enumerate() {
            let n = i as u64 + 1;
            match parse_line(line, DEFAULT_MAX_BITS) {
                Line::Blank => blank.push(n),
                Line::Number(_) => valid.push(n),
                Line::Invalid(_) => invalid.push(n),
            }
        }
        assert_eq!(valid, numbers(&expected, "valid_lines"));
        assert_eq!(blank, numbers(&expected, "blank_lines"));
        assert_eq!(invalid, numbers(&expected, "invalid_lines"));

        let r = scan_reader(&input[..], &ScanConfig::default(), |_| {}).expect("in-memory read");
        assert_eq!(r.lines, expected["lines"].as_u64().expect("lines"));
        assert_eq!(r.numbers, valid.len() as u64);
        assert_eq!(r.invalid, invalid.len() as u64);
        assert_eq!(
            r.first_invalid.iter().map(|x| x.line).collect::<Vec<_>>(),
            invalid[..KEPT_INVALID]
        );
        let mut got: Vec<String> = r.primes.iter().map(|p| p.to_string()).collect();
        got.extend(r.big_primes.iter().map(|p| p.to_string()));
        let mut with_repeats = got.clone();
        with_repeats.sort();
        let mut want_repeats: Vec<String> = expected["primes_with_repeats"]
            .as_array()
            .expect("primes_with_repeats")
            .iter()
            .map(|x| x.as_str().expect("string").to_string())
            .collect();
        want_repeats.sort();
        assert_eq!(with_repeats, want_repeats);
        got.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
        got.dedup();
        let want: Vec<String> = expected["distinct_primes"]
            .as_array()
            .expect("distinct_primes")
            .iter()
            .map(|x| x.as_str().expect("string").to_string())
            .collect();
        assert_eq!(got, want);
    }
}
