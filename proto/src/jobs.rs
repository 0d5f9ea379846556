//! Generation jobs: the one-line job files of `data/jobs/`, and how a job is cut into tasks
//! (ranges into segments, a factorial into a product tree). Shared by the coordinator (which
//! schedules) and the worker (whose `worker gen` runs a job alone, the baseline).

use serde::{Deserialize, Serialize};

/// Largest N of `nth N`: p(10^16) is about 3.9 · 10^17, inside the prime-counting
/// function's range (2^60).
pub const NTH_MAX: u64 = 10_000_000_000_000_000;
/// Largest N of `factorial N`.
pub const FACTORIAL_MAX: u64 = 200_000;
/// Most numbers one `primes` job may span (about 1.1 x 10^12: some 4 x 10^10 primes and
/// 600 GB of primes.txt near 10^12); a longer range is split into several jobs.
pub const PRIMES_MAX_SPAN: u64 = 1 << 40;
/// Most numbers a `count` job may sieve (when the prime-counting function cannot answer
/// it: B above 2^60): about a day of one core's sieving.
pub const COUNT_MAX_SIEVE_SPAN: u64 = 1 << 48;
/// Most tasks a range job is cut into: longer ranges get wider segments (each task costs
/// the coordinator a few hundred bytes of state and a line in every snapshot).
pub const MAX_SEGMENTS: u64 = 1 << 17;
/// Factors one product task multiplies at most.
pub const FANOUT: usize = 4;

/// What a job file asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSpec {
    /// Every prime in [lo, hi] into primes.txt.
    Primes { lo: u64, hi: u64 },
    /// How many primes in [lo, hi].
    Count { lo: u64, hi: u64 },
    /// The n-th prime (the first is 2).
    Nth { n: u64 },
    /// n!, in decimal.
    Factorial { n: u64 },
}

fn number(word: &str, what: &str) -> Result<u64, String> {
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        let shown: String = word.chars().take(40).collect();
        return Err(format!("{what} {shown:?} is not a non-negative integer"));
    }
    word.parse::<u64>()
        .map_err(|_| format!("{what} {word} is too large: the limit is 2^64 - 1"))
}

impl JobSpec {
    /// Parses a job file's text: one line (surrounding whitespace and blank lines around it
    /// are fine), `primes A B`, `count A B`, `nth N` or `factorial N`. The error says why.
    pub fn parse(text: &str) -> Result<JobSpec, String> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let line = match lines.as_slice() {
            [] => return Err("empty job file: expected one line such as `primes 1 1000`".into()),
            [one] => *one,
            _ => {
                return Err(format!(
                    "{} lines: a job file holds one job on one line",
                    lines.len()
                ))
            }
        };
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let usage = "expected `primes A B`, `count A B`, `nth N` or `factorial N`";
        match words.as_slice() {
            [kind @ ("primes" | "count"), a, b] => {
                let lo = number(a, "A")?;
                let hi = number(b, "B")?;
                if lo > hi {
                    return Err(format!("empty range: A = {lo} is larger than B = {hi}"));
                }
                let span = hi - lo;
                if *kind == "primes" && span >= PRIMES_MAX_SPAN {
                    return Err(format!(
                        "the range holds {} numbers; a primes job takes at most 2^40 \
                         ({PRIMES_MAX_SPAN}): split it into several jobs",
                        span as u128 + 1
                    ));
                }
                if *kind == "count" && span >= COUNT_MAX_SIEVE_SPAN && !count_by_pi(lo, hi) {
                    return Err(format!(
                        "the range holds {} numbers above 2^60, where primes can only be \
                         counted by sieving; a count job sieves at most 2^48 \
                         ({COUNT_MAX_SIEVE_SPAN}) numbers: split it into several jobs",
                        span as u128 + 1
                    ));
                }
                Ok(if *kind == "primes" {
                    JobSpec::Primes { lo, hi }
                } else {
                    JobSpec::Count { lo, hi }
                })
            }
            ["nth", n] => {
                let n = number(n, "N")?;
                if n == 0 || n > NTH_MAX {
                    return Err(format!("N = {n}: nth takes N from 1 to 10^16"));
                }
                Ok(JobSpec::Nth { n })
            }
            ["factorial", n] => {
                let n = number(n, "N")?;
                if n > FACTORIAL_MAX {
                    return Err(format!("N = {n}: factorial takes N up to {FACTORIAL_MAX}"));
                }
                Ok(JobSpec::Factorial { n })
            }
            [kind @ ("primes" | "count" | "nth" | "factorial"), ..] => {
                Err(format!("wrong number of arguments for {kind}: {usage}"))
            }
            [other, ..] => {
                let shown: String = other.chars().take(40).collect();
                Err(format!("unknown job {shown:?}: {usage}"))
            }
            [] => Err(format!("empty line: {usage}")),
        }
    }

    /// The job as its file would say it.
    pub fn line(&self) -> String {
        match self {
            JobSpec::Primes { lo, hi } => format!("primes {lo} {hi}"),
            JobSpec::Count { lo, hi } => format!("count {lo} {hi}"),
            JobSpec::Nth { n } => format!("nth {n}"),
            JobSpec::Factorial { n } => format!("factorial {n}"),
        }
    }
}

/// Largest x the prime-counting function takes (the worker's π table holds √x values: 54
/// MB at 2^60, and π(2^60) is an hour of one core).
pub const PI_MAX: u64 = 1 << 60;

/// Whether `count A B` asks the prime-counting function for π(B) - π(A - 1) rather than
/// sieving [A, B]: when B is small enough for it ([`PI_MAX`]) and it is estimated cheaper.
/// π(x) by Deléglise–Rivat costs about 1.2·x^0.6 ns here (π(10^15): 1.19 s, π(10^16):
/// 4.79 s, measured on one thread); the sieve costs [`sieve_plan`] with the window of a
/// one-thread worker ([`BUCKET_WINDOW`]). Both spread over the workers, π with more
/// overhead per task, so it must win by 2x. For [10^15, 10^15 + 10^10] π is chosen:
/// ~4.8 s estimated (2.4 s measured) against ~5.7 s estimated for the bucket sieve.
pub fn count_by_pi(lo: u64, hi: u64) -> bool {
    if hi > PI_MAX {
        return false;
    }
    let pi_ns = |x: u64| 1.2 * (x.max(1) as f64).powf(0.6);
    (pi_ns(hi) + pi_ns(lo)) * 2.0 < sieve_plan(lo, hi, BUCKET_WINDOW).ns
}

/// Numbers of the bucket sieve's window in a worker of one thread (its 208 MiB give
/// ~4.9·10^9; the planner assumes 2^32, the widest `count` task).
pub const BUCKET_WINDOW: u64 = 1 << 32;

/// Which sieve one core uses for a range, and its estimated cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SievePlan {
    /// The bucket sieve (worker/src/gen/bucket.rs) rather than the plain segmented sieve.
    pub bucket: bool,
    /// Estimated nanoseconds on one core of this workplace's VM.
    pub ns: f64,
    /// The part of `ns` paid again by every bucket-sieve window (finding the sieving
    /// primes that do not fit the classic buckets, and their first multiples).
    pub per_window_ns: f64,
}

/// The cheaper sieve for [lo, hi] with bucket windows of `window` numbers, by a cost model
/// fitted to measurements on this workplace's VM (BENCHMARKS.md, issue 29):
/// - below 2^44 (sieving primes up to 2^22) the plain sieve: 0.28 ns a number;
/// - above, the plain sieve tests its survivors: ~8 ns a number at 10^15, 11 ns near 2^64;
/// - the bucket sieve: 0.3 ns a number, plus ~8 ns per multiple of a sieving prime above
///   2^22 (0.267·ln(ln √hi / ln 2^22) of them per number), plus ~14 ns per sieving prime
///   up to √hi (generating it and finding its first multiple) once per task when they all
///   fit the classic buckets (√hi up to ~2·10^8), else once per window: near 2^64 that is
///   2.8 s a window, 0.9 ns a number: 7.5 s for 2^32 numbers (measured 7.5 s); at 10^15,
///   0.57 ns a number: 5.7 s for 10^10 (measured 4.5 s).
///
/// So near 2^64 the plain sieve wins below ~3·10^8 numbers (a `primes` task of 2^24) and
/// the bucket sieve above (a long `count`).
pub fn sieve_plan(lo: u64, hi: u64, window: u64) -> SievePlan {
    let n = (hi - lo) as f64 + 1.0;
    let root = (hi as f64).sqrt();
    let medium = (1u64 << 22) as f64;
    if root <= medium {
        return SievePlan {
            bucket: false,
            ns: 0.28 * n,
            per_window_ns: 0.0,
        };
    }
    let bits = (hi as f64).log2();
    let plain = n * (8.0 + 3.0 * ((bits - 50.0) / 14.0).clamp(0.0, 1.0));
    let primes = root / root.ln();
    let setup = primes * 14.0;
    // Every sieving prime's state fits the classic buckets up to ~12 M primes (104 MiB).
    let all_fit = primes < 1.2e7;
    let windows = if all_fit {
        1.0
    } else {
        (n / window.max(1) as f64).ceil()
    };
    let multiples = 0.267 * (root.ln() / medium.ln()).ln();
    let bucket = windows * setup + n * (0.3 + 8.0 * multiples);
    if bucket < plain {
        SievePlan {
            bucket: true,
            ns: bucket,
            per_window_ns: if all_fit { 0.0 } else { setup },
        }
    } else {
        SievePlan {
            bucket: false,
            ns: plain,
            per_window_ns: 0.0,
        }
    }
}

/// The narrowest `count` task worth sending for [lo, hi]: where the bucket sieve pays
/// [`SievePlan::per_window_ns`] again per task, a task at least as long as that costs in
/// numbers (near 2^64: 2^31, so that a count of 2^32 numbers still makes two tasks).
pub fn count_min_task(lo: u64, hi: u64) -> u64 {
    let plan = sieve_plan(lo, hi, BUCKET_WINDOW);
    if !plan.bucket || plan.per_window_ns == 0.0 {
        return 1;
    }
    let per_number = (plan.ns - plan.per_window_ns) / ((hi - lo) as f64 + 1.0);
    ((plan.per_window_ns / per_number) as u64).clamp(1, BUCKET_WINDOW / 2)
}

/// Cuts [lo, hi] into segments of about `width` numbers (the last may be shorter), wider
/// if that would make more than [`MAX_SEGMENTS`].
pub fn segments(lo: u64, hi: u64, width: u64) -> Vec<(u64, u64)> {
    let span = (hi - lo) as u128 + 1;
    let width = width
        .max(1)
        .max(span.div_ceil(MAX_SEGMENTS as u128).min(u64::MAX as u128) as u64);
    let mut out = Vec::new();
    let mut a = lo;
    loop {
        let b = a.saturating_add(width - 1).min(hi);
        out.push((a, b));
        if b == hi {
            return out;
        }
        a = b + 1;
    }
}

/// The product tree of n!: level 0 holds the leaves (groups of up to [`FANOUT`] consecutive
/// factors 1..=n, or the single factor 1 for 0! and 1!), each level above multiplies up to
/// [`FANOUT`] consecutive nodes of the level below, and the last level has one node, the
/// answer. Returns each level's node count.
pub fn factorial_levels(n: u64) -> Vec<usize> {
    let mut levels = vec![(n.max(1) as usize).div_ceil(FANOUT)];
    while let Some(&last) = levels.last() {
        if last <= 1 {
            break;
        }
        levels.push(last.div_ceil(FANOUT));
    }
    levels
}

/// The factors of leaf `i` of n!'s tree.
pub fn factorial_leaf(n: u64, i: usize) -> Vec<u64> {
    let first = i as u64 * FANOUT as u64 + 1;
    (first..=(first + FANOUT as u64 - 1).min(n.max(1))).collect()
}

/// Big integers on the wire: lowercase hex, no leading zeros ("0" for zero).
pub fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && (s == "0" || !s.starts_with('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_lines() {
        assert_eq!(
            JobSpec::parse("primes 10 20\n"),
            Ok(JobSpec::Primes { lo: 10, hi: 20 })
        );
        assert_eq!(
            JobSpec::parse("\n  count 18446744073709551000 18446744073709551615  \n\n"),
            Ok(JobSpec::Count {
                lo: u64::MAX - 615,
                hi: u64::MAX
            })
        );
        // The longest ranges allowed: 2^40 numbers to list, π for any count up to 2^60.
        assert!(JobSpec::parse("primes 0 1099511627775").is_ok());
        assert!(JobSpec::parse("count 0 1152921504606846976").is_ok());
        assert_eq!(
            JobSpec::parse("nth 10000000000000000"),
            Ok(JobSpec::Nth { n: NTH_MAX })
        );
        assert_eq!(
            JobSpec::parse("factorial 0"),
            Ok(JobSpec::Factorial { n: 0 })
        );
        for (bad, why) in [
            ("", "empty job file"),
            ("primes 1", "wrong number of arguments"),
            ("primes 5 4", "empty range"),
            ("primes -1 4", "not a non-negative integer"),
            ("primes 1 18446744073709551616", "too large"),
            ("nth 0", "nth takes N from 1"),
            ("nth 10000000000000001", "nth takes N from 1"),
            ("factorial 200001", "factorial takes N up to"),
            ("sieve 1 2", "unknown job"),
            ("primes 1 2\ncount 1 2", "2 lines"),
            ("primes 1e3 2", "not a non-negative integer"),
            ("primes 0 1099511627776", "at most 2^40"),
            (
                "primes 0 18446744073709551615",
                "split it into several jobs",
            ),
            ("count 0 18446744073709551615", "sieves at most 2^48"),
        ] {
            let e = JobSpec::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn segments_cover_the_range_once() {
        assert_eq!(segments(5, 5, 10), vec![(5, 5)]);
        assert_eq!(segments(0, 25, 10), vec![(0, 9), (10, 19), (20, 25)]);
        let top = segments(u64::MAX - 25, u64::MAX, 10);
        assert_eq!(top.last(), Some(&(u64::MAX - 5, u64::MAX)));
        assert_eq!(top.len(), 3);
        // However narrow the segments asked for, a range makes at most MAX_SEGMENTS.
        let wide = segments(0, PRIMES_MAX_SPAN - 1, 1000);
        assert!(wide.len() as u64 <= MAX_SEGMENTS, "{}", wide.len());
        assert_eq!(wide.last().map(|s| s.1), Some(PRIMES_MAX_SPAN - 1));
        assert!(wide.windows(2).all(|w| w[0].1 + 1 == w[1].0));
        assert_eq!(segments(0, u64::MAX, 1).len() as u64, MAX_SEGMENTS);
    }

    #[test]
    fn factorial_tree() {
        assert_eq!(factorial_levels(0), vec![1]);
        assert_eq!(factorial_levels(4), vec![1]);
        assert_eq!(factorial_levels(5), vec![2, 1]);
        assert_eq!(factorial_levels(100), vec![25, 7, 2, 1]);
        assert_eq!(factorial_leaf(0, 0), vec![1]);
        assert_eq!(factorial_leaf(10, 2), vec![9, 10]);
        assert!(is_hex("0") && is_hex("1f") && !is_hex("01") && !is_hex("1F") && !is_hex(""));
    }
}
