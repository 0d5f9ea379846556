//! `twins A B`: the twin prime pairs (p, p + 2) with both in [A, B]. The example of a kind
//! added after the others: this file and its line in `KINDS` are all it took (its tasks
//! travel as `Work::Other`, `{"kind":"twins","lo":..,"hi":..}`).
//!
//! Plan: the lower members' range [A, B − 2] is cut into segments of at most
//! [`TWINS_SEGMENT`] numbers; the task of segment [a, b] sieves [a, min(b + 2, B)] and
//! answers the pairs' lower members, comma-separated (each pair is in exactly one task).
//! Report: `count` (pairs) and `answer` (the same), `first_prime` (the first pair's p) and
//! `last_prime` (the last pair's p + 2), and the pairs in the value file `<name>.txt`,
//! one `p p+2` line each, as a factorial's digits are: a list of thousands of pairs is too
//! long for the report, and it is the job's own result, not primes for primes.txt. The
//! span is capped ([`TWINS_MAX_SPAN`]) so the list stays under ~1 MB, the bound of one
//! entry in the group's log.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use proto::jobs::{segments, JobSpec, Params};
use proto::msg::{OpenWork, TaskDone, Work};

use super::{bounds, range_args, Kind, Outcome, Plan};
use crate::gen::{sieve::RangeSieve, WorkDone};

/// Most numbers B − A may span: twin pairs are densest near 0, where the 58,980 pairs
/// below 10^7 make a value file of 0.9 MB.
pub const TWINS_MAX_SPAN: u64 = 10_000_000;
/// Most lower members per task (some 8,000 pairs near 0: an answer of ~60 KB).
pub const TWINS_SEGMENT: u64 = 1 << 20;

/// The `twins` kind.
pub struct Twins;

impl Kind for Twins {
    fn word(&self) -> &'static str {
        "twins"
    }

    fn usage(&self) -> &'static str {
        "twins A B"
    }

    fn parse(&self, args: &[&str]) -> Result<JobSpec, String> {
        let (lo, hi) = range_args(args, self.usage())?;
        let spec = Params::new(self.word(), &[("lo", lo), ("hi", hi)]);
        checked(&spec)?;
        Ok(spec)
    }

    fn plan(&self, spec: &JobSpec, segment: u64) -> Result<Box<dyn Plan>, String> {
        let (lo, hi) = checked(spec)?;
        let top = hi.saturating_sub(2).max(lo);
        Ok(Box::new(TwinsPlan {
            hi,
            lows: segments(lo, top, segment.clamp(1, TWINS_SEGMENT)),
        }))
    }

    fn compute(
        &self,
        work: &Work,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64),
    ) -> Option<anyhow::Result<Option<WorkDone>>> {
        let Work::Other(OpenWork(p)) = work else {
            return None;
        };
        if p.kind != self.word() {
            return None;
        }
        let (lo, hi) = match bounds(p) {
            Ok(b) => b,
            Err(e) => return Some(Err(anyhow::anyhow!("twins task: {e}"))),
        };
        let Some(lows) = pairs(lo, hi, cancel, progress) else {
            return Some(Ok(None));
        };
        let answer = lows
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        Some(Ok(Some(WorkDone {
            primes: Vec::new(),
            count: lows.len() as u64,
            answer: Some(answer),
        })))
    }

    fn run_local(&self, spec: &JobSpec, _method: &str, out: &mut dyn Write) -> anyhow::Result<()> {
        let (lo, hi) = checked(spec).map_err(anyhow::Error::msg)?;
        let lows = pairs(lo, hi, &AtomicBool::new(false), &mut |_| {}).unwrap_or_default();
        out.write_all(listing(&lows).as_bytes())?;
        Ok(())
    }
}

/// A twins spec's range, checked as parsing checks it.
fn checked(spec: &JobSpec) -> Result<(u64, u64), String> {
    let (lo, hi) = bounds(spec)?;
    if hi - lo > TWINS_MAX_SPAN {
        return Err(format!(
            "B - A = {}: a twins job spans at most {TWINS_MAX_SPAN} numbers (its pairs are \
             listed in one file): split it into several jobs",
            hi - lo
        ));
    }
    Ok((lo, hi))
}

/// The lower members p of the twin pairs with lo <= p and p + 2 <= hi, ascending; None if
/// `cancel` was set (checked between sieve segments).
pub fn pairs(
    lo: u64,
    hi: u64,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    let mut prev: Option<u64> = None;
    let mut primes = Vec::new();
    let mut s = RangeSieve::new(lo, hi);
    while let Some(seg) = s.next_segment() {
        if cancel.load(Ordering::Relaxed) {
            return None;
        }
        primes.clear();
        seg.primes(&mut primes);
        for &q in &primes {
            // Consecutive primes two apart are exactly the twin pairs.
            if let Some(p) = prev.filter(|&p| q - p == 2) {
                out.push(p);
            }
            prev = Some(q);
        }
        progress(seg.span().1 - lo + 1);
    }
    Some(out)
}

/// The pairs of lower members `lows`, one `p p+2` line each.
fn listing(lows: &[u64]) -> String {
    lows.iter().map(|p| format!("{p} {}\n", p + 2)).collect()
}

/// The lower members `[lo, top]` of the pairs in [.., hi], cut into tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinsPlan {
    /// B: no pair's upper member is above it.
    pub hi: u64,
    /// The lower members' segments, one per task.
    pub lows: Vec<(u64, u64)>,
}

impl Plan for TwinsPlan {
    fn tasks(&self) -> usize {
        self.lows.len()
    }

    fn work(&self, t: usize, _answers: &dyn Fn(usize) -> Option<String>) -> Option<(Work, u64)> {
        let &(a, b) = self.lows.get(t)?;
        let hi = b.saturating_add(2).min(self.hi);
        let p = Params::new("twins", &[("lo", a), ("hi", hi)]);
        Some((Work::Other(OpenWork(p)), hi - a + 1))
    }

    /// The pairs are this job's answer, not worth keeping for another.
    fn recorded(&self, _t: usize) -> bool {
        false
    }

    fn outcome(&self, results: &[&TaskDone]) -> Result<Outcome, String> {
        let mut lows = Vec::new();
        for (t, d) in results.iter().enumerate() {
            let answer = d
                .answer
                .as_deref()
                .ok_or_else(|| format!("task {t}: no answer"))?;
            let (a, b) = self.lows.get(t).copied().unwrap_or((1, 0));
            for w in answer.split(',').filter(|w| !w.is_empty()) {
                let p: u64 = w
                    .parse()
                    .map_err(|_| format!("task {t}: {w:?} is not a number"))?;
                if p < a || p > b || lows.last().is_some_and(|&l| l >= p) {
                    return Err(format!(
                        "task {t}: pair {p} is outside [{a}, {b}] or out of order"
                    ));
                }
                lows.push(p);
            }
        }
        Ok(Outcome {
            answer: Some(lows.len().to_string()),
            count: Some(lows.len() as u64),
            first_prime: lows.first().map(|p| p.to_string()),
            last_prime: lows.last().map(|p| (p + 2).to_string()),
            value: Some(listing(&lows).trim_end().to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The twin pairs' lower members in [lo, hi] by a plain sieve of Eratosthenes over
    /// 0..=hi, independent of the segmented sieve.
    fn naive(lo: u64, hi: u64) -> Vec<u64> {
        let n = hi as usize;
        let mut composite = vec![false; n + 1];
        composite[0] = true;
        if n >= 1 {
            composite[1] = true;
        }
        let mut i = 2;
        while i * i <= n {
            if !composite[i] {
                let mut j = i * i;
                while j <= n {
                    composite[j] = true;
                    j += i;
                }
            }
            i += 1;
        }
        (lo as usize..=n.saturating_sub(2))
            .filter(|&p| p + 2 <= n && !composite[p] && !composite[p + 2])
            .map(|p| p as u64)
            .collect()
    }

    /// A job's plan run task by task as workers would, combined as the coordinator does.
    fn run_job(lo: u64, hi: u64, segment: u64) -> Outcome {
        let spec = Twins
            .parse(&[&lo.to_string(), &hi.to_string()])
            .expect("parse");
        let plan = Twins.plan(&spec, segment).expect("plan");
        let results: Vec<TaskDone> = (0..plan.tasks())
            .map(|t| {
                let (work, _) = plan.work(t, &|_| None).expect("work");
                let done = Twins
                    .compute(&work, &AtomicBool::new(false), &mut |_| {})
                    .expect("a twins task")
                    .expect("computed")
                    .expect("not cancelled");
                TaskDone {
                    attempt: String::new(),
                    version: String::new(),
                    size: 0,
                    lines: 0,
                    numbers: 0,
                    blank: 0,
                    invalid: 0,
                    first_invalid: Vec::new(),
                    primes: done.count,
                    answer: done.answer,
                    first_prime: None,
                    last_prime: None,
                }
            })
            .collect();
        plan.outcome(&results.iter().collect::<Vec<_>>())
            .expect("outcome")
    }

    #[test]
    /// Known counts of twin pairs below 10^3 .. 10^7, through plan, tasks and combination.
    fn known_counts() {
        for (hi, want) in [
            (1_000, 35),
            (10_000, 205),
            (100_000, 1224),
            (1_000_000, 8169),
            (10_000_000, 58980),
        ] {
            let o = run_job(0, hi, 1 << 20);
            assert_eq!(o.count, Some(want), "pairs below {hi}");
            assert_eq!(o.answer, Some(want.to_string()), "below {hi}");
            assert_eq!(o.first_prime.as_deref(), Some("3"), "below {hi}");
        }
    }

    #[test]
    /// Against the naive sieve: ranges whose edges cut pairs, with tasks so short that
    /// pairs straddle every task boundary; the listing names each pair once, in order.
    fn matches_a_naive_sieve() {
        for (lo, hi, segment) in [
            (0, 2, 1),
            (3, 5, 1),
            (4, 7, 1),
            (5, 7, 7),
            (0, 100, 1),
            (0, 100, 3),
            (10, 2_000, 17),
            (11, 20_000, 1000),
            (17, 19, 1000),
            (18, 19, 1000),
            (99_989, 200_003, 4096),
        ] {
            let want = naive(lo, hi);
            let o = run_job(lo, hi, segment);
            assert_eq!(
                o.count,
                Some(want.len() as u64),
                "[{lo}, {hi}] by {segment}"
            );
            let listed: String = want.iter().map(|p| format!("{p} {}\n", p + 2)).collect();
            assert_eq!(
                o.value.as_deref(),
                Some(listed.trim_end()),
                "[{lo}, {hi}] by {segment}"
            );
            assert_eq!(o.first_prime, want.first().map(|p| p.to_string()));
            assert_eq!(o.last_prime, want.last().map(|p| (p + 2).to_string()));
        }
    }

    #[test]
    /// Near 2^64 the task bounds do not overflow, and the pairs match a direct check.
    fn top_of_the_range() {
        let lo = u64::MAX - 100_000;
        let o = run_job(lo, u64::MAX, 1000);
        let want = pairs(lo, u64::MAX, &AtomicBool::new(false), &mut |_| {}).expect("pairs");
        assert_eq!(o.count, Some(want.len() as u64));
        assert!(want
            .iter()
            .all(|&p| crate::prime::is_prime_u64(p) && crate::prime::is_prime_u64(p + 2)));
    }

    #[test]
    /// Bad task answers are refused at combination, not summed.
    fn bad_answers_are_refused() {
        let plan = TwinsPlan {
            hi: 100,
            lows: vec![(0, 49), (50, 98)],
        };
        let done = |a: &str| TaskDone {
            attempt: String::new(),
            version: String::new(),
            size: 0,
            lines: 0,
            numbers: 0,
            blank: 0,
            invalid: 0,
            first_invalid: Vec::new(),
            primes: 0,
            answer: Some(a.into()),
            first_prime: None,
            last_prime: None,
        };
        let (a, b) = (done("3,5"), done("59,71"));
        assert_eq!(plan.outcome(&[&a, &b]).map(|o| o.count), Ok(Some(4)));
        for (x, y) in [("3,x", "59"), ("59", "71"), ("5,3", "59"), ("3", "")] {
            let (x, y) = (done(x), done(y));
            let r = plan.outcome(&[&x, &y]);
            if y.answer.as_deref() == Some("") {
                assert_eq!(r.map(|o| o.count), Ok(Some(1)));
            } else {
                assert!(r.is_err(), "{x:?} {y:?}");
            }
        }
    }
}
