//! Generation jobs, what the coordinator and the worker share of them: the shape of a job's
//! spec ([`Params`]: a kind's word and named arguments), the helpers that read a job line,
//! the limits and cost models of the built-in kinds, and how ranges are cut into segments
//! and a factorial into a product tree. The kinds themselves (their words, plans,
//! computations and reports) are `worker::kinds`, one module each.

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

/// A job as its line says it: its kind's word and its arguments by name (`primes 10 20` is
/// `primes` with `lo` = 10 and `hi` = 20). Which words and arguments exist is the kinds'
/// business (`worker::kinds`, one module per kind); here is only the shape, so that the
/// coordinator can keep, log and report a job of any kind.
pub type JobSpec = Params;

/// A kind's word with named integer arguments. Serialized flat, the word under `kind`:
/// `{"kind":"primes","lo":10,"hi":20}` (the shape job reports have always had). Used for a
/// job's line ([`JobSpec`]) and for a task of a kind that has no variant of its own in
/// [`crate::msg::Work`] ([`crate::msg::OpenWork`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Params {
    pub kind: String,
    /// In the order the line gives them.
    pub args: Vec<(String, u64)>,
}

impl Params {
    /// `kind` with `args`, in order.
    pub fn new(kind: &str, args: &[(&str, u64)]) -> Params {
        Params {
            kind: kind.to_string(),
            args: args.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        }
    }

    /// Argument `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.args.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Argument `name`, or an error that names it (a spec from an older or foreign writer).
    pub fn need(&self, name: &str) -> Result<u64, String> {
        self.get(name)
            .ok_or_else(|| format!("{} has no argument {name:?}", self.kind))
    }

    /// The job as its file would say it: the word, then the arguments in order.
    pub fn line(&self) -> String {
        let mut out = self.kind.clone();
        for (_, v) in &self.args {
            out.push(' ');
            out.push_str(&v.to_string());
        }
        out
    }
}

impl Serialize for Params {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.args.len() + 1))?;
        m.serialize_entry("kind", &self.kind)?;
        for (n, v) in &self.args {
            m.serialize_entry(n, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Params;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object with a string `kind` and integer arguments")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Params, A::Error> {
                use serde::de::Error;
                let mut kind = None;
                let mut args: Vec<(String, u64)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "kind" {
                        if kind.is_some() {
                            return Err(A::Error::duplicate_field("kind"));
                        }
                        kind = Some(map.next_value::<String>()?);
                    } else {
                        if args.iter().any(|(n, _)| *n == key) {
                            return Err(A::Error::custom(format!("duplicate argument {key:?}")));
                        }
                        let v = map.next_value::<u64>()?;
                        args.push((key, v));
                    }
                }
                let kind = kind.ok_or_else(|| A::Error::missing_field("kind"))?;
                Ok(Params { kind, args })
            }
        }
        d.deserialize_map(V)
    }
}

/// A non-negative integer argument of a job line; the error names it (`what`) and says why.
pub fn number(word: &str, what: &str) -> Result<u64, String> {
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        let shown: String = word.chars().take(40).collect();
        return Err(format!("{what} {shown:?} is not a non-negative integer"));
    }
    word.parse::<u64>()
        .map_err(|_| format!("{what} {word} is too large: the limit is 2^64 - 1"))
}

/// A range argument pair `A B` with A <= B.
pub fn range(a: &str, b: &str) -> Result<(u64, u64), String> {
    let lo = number(a, "A")?;
    let hi = number(b, "B")?;
    if lo > hi {
        return Err(format!("empty range: A = {lo} is larger than B = {hi}"));
    }
    Ok((lo, hi))
}

/// The one line of a job file's text (surrounding whitespace and blank lines around it are
/// fine), split into words; the error says why there is not exactly one.
pub fn job_words(text: &str) -> Result<Vec<&str>, String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [] => Err("empty job file: expected one line such as `primes 1 1000`".into()),
        [one] => Ok(one.split_ascii_whitespace().collect()),
        _ => Err(format!(
            "{} lines: a job file holds one job on one line",
            lines.len()
        )),
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
    /// A spec serializes flat, as the old per-kind enum did, and back.
    fn params_are_flat() {
        let p = Params::new("primes", &[("lo", 10), ("hi", 20)]);
        let json = serde_json::to_string(&p).expect("encode");
        assert_eq!(json, r#"{"kind":"primes","lo":10,"hi":20}"#);
        assert_eq!(serde_json::from_str::<Params>(&json).expect("decode"), p);
        assert_eq!(p.line(), "primes 10 20");
        assert_eq!(p.need("hi"), Ok(20));
        assert!(p.need("n").is_err());
        for bad in [
            r#"{"lo":1}"#,
            r#"{"kind":"primes","lo":-1}"#,
            r#"{"kind":"primes","lo":1,"lo":2}"#,
            r#"{"kind":3}"#,
        ] {
            assert!(serde_json::from_str::<Params>(bad).is_err(), "{bad}");
        }
        assert_eq!(job_words(" \n nth  5 \n\n"), Ok(vec!["nth", "5"]));
        assert!(job_words("").is_err_and(|e| e.contains("empty job file")));
        assert!(job_words("a\nb").is_err_and(|e| e.contains("2 lines")));
        assert!(range("5", "4").is_err_and(|e| e.contains("empty range")));
        assert!(number("1e3", "A").is_err_and(|e| e.contains("not a non-negative")));
        assert!(number("18446744073709551616", "B").is_err_and(|e| e.contains("too large")));
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
