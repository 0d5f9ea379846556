//! `count A B`: how many primes in [A, B]. Sieved in long segments ([`Segments`] without
//! listing), or, where cheaper (B up to 2^60, [`proto::jobs::count_by_pi`]), π(B) − π(A − 1)
//! by Deléglise–Rivat (`gen::lmo`): one task per π(x) below [`PI_SPLIT_FROM`], from there
//! 3k + 1 part tasks combined here in the report. The π tasks are `nth`'s too.

use std::io::Write;
use std::sync::atomic::AtomicBool;

use proto::jobs::{segments, JobSpec, Params, COUNT_MAX_SIEVE_SPAN};
use proto::msg::{TaskDone, Work};

use super::primes::Segments;
use super::{bounds, num, range_args, Kind, Outcome, Plan};
use crate::gen::{self, lmo, pi, WorkDone};

/// A `count` job's segments are this many times longer than a `primes` job's (nothing to
/// send back: 2^32 numbers by default, about a second of sieving).
pub const COUNT_SEGMENT_FACTOR: u64 = 256;
/// A `count` job is cut into at least this many segments when they can be a `primes`
/// segment long or more (with 3 segments of 2^32, 2 workers shared [10^12, 10^12 + 10^10]
/// 2:1 and finished 1.5x faster than one, not 2x).
pub const COUNT_MIN_TASKS: u64 = 64;

/// π(x) is one task (`Work::Pi`) below this, and cut into parts (`Work::PiPart`) from it
/// on: below 10^13 a whole π(x) takes under 0.2 s on one core, about the cost of a dozen
/// tasks' round trips and flushes.
pub const PI_SPLIT_FROM: u64 = 10_000_000_000_000;

/// How many ways π(x) is cut for x at or above [`PI_SPLIT_FROM`]: k hard-leaf intervals,
/// k ranges of easy leaves, k P2 intervals and a base part (3k + 1 tasks). Each task
/// builds its own tables (tens of ms at 10^16), so k grows with x: 4 below 10^15 (13
/// tasks), 8 from there (25), 16 from 10^17 (49).
pub fn pi_parts_k(x: u64) -> u32 {
    match x {
        0..1_000_000_000_000_000 => 4,
        1_000_000_000_000_000..100_000_000_000_000_000 => 8,
        _ => 16,
    }
}

/// How many parts π(x) is cut into (x >= [`PI_SPLIT_FROM`]).
pub fn pi_part_count(x: u64) -> usize {
    lmo::part_count(pi_parts_k(x) as usize)
}

/// Part `t` of π(x).
pub fn pi_part(x: u64, t: usize) -> Work {
    Work::PiPart {
        x,
        k: pi_parts_k(x),
        part: t as u32,
    }
}

/// π(x) from its parts' answers, in order.
pub fn combine_pi(answers: &[String]) -> Result<u64, String> {
    let parts = answers
        .iter()
        .map(|a| lmo::PartAnswer::decode(a))
        .collect::<Result<Vec<_>, String>>()?;
    lmo::combine(&parts)
}

/// The `count` kind.
pub struct Count;

impl Kind for Count {
    fn word(&self) -> &'static str {
        "count"
    }

    fn usage(&self) -> &'static str {
        "count A B"
    }

    fn parse(&self, args: &[&str]) -> Result<JobSpec, String> {
        let (lo, hi) = range_args(args, self.usage())?;
        let span = hi - lo;
        if span >= COUNT_MAX_SIEVE_SPAN && !proto::jobs::count_by_pi(lo, hi) {
            return Err(format!(
                "the range holds {} numbers above 2^60, where primes can only be \
                 counted by sieving; a count job sieves at most 2^48 \
                 ({COUNT_MAX_SIEVE_SPAN}) numbers: split it into several jobs",
                span as u128 + 1
            ));
        }
        Ok(Params::new(self.word(), &[("lo", lo), ("hi", hi)]))
    }

    fn plan(&self, spec: &JobSpec, segment: u64) -> Result<Box<dyn Plan>, String> {
        let (lo, hi) = bounds(spec)?;
        Ok(plan_count(lo, hi, segment))
    }

    fn compute(
        &self,
        work: &Work,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64),
    ) -> Option<anyhow::Result<Option<WorkDone>>> {
        let answer = |a: String| {
            Ok(Some(WorkDone {
                answer: Some(a),
                ..WorkDone::default()
            }))
        };
        Some(match work {
            Work::Count { lo, hi } => gen::sieve_work(*lo, *hi, false, cancel, progress),
            Work::Pi { x } if *x > pi::PI_MAX => Err(anyhow::anyhow!(
                "pi({x}): the prime-counting function goes up to 2^60"
            )),
            Work::Pi { x } => answer(pi::prime_pi(*x).to_string()),
            Work::PiPart { x, k, part } => match lmo::run_part(*x, *k as usize, *part as usize) {
                Ok(a) => answer(a.encode()),
                Err(e) => Err(anyhow::anyhow!("pi part: {e}")),
            },
            _ => return None,
        })
    }

    fn run_local(&self, spec: &JobSpec, method: &str, out: &mut dyn Write) -> anyhow::Result<()> {
        let (lo, hi) = bounds(spec).map_err(anyhow::Error::msg)?;
        writeln!(out, "{}", gen::count_local(lo, hi, method)?)?;
        Ok(())
    }
}

/// How `count lo hi` goes by the prime-counting function, or None if it is sieved.
pub fn by_pi(lo: u64, hi: u64) -> Option<ByPi> {
    if !proto::jobs::count_by_pi(lo, hi) {
        return None;
    }
    Some(if hi >= PI_SPLIT_FROM {
        ByPi::Parts { hi, lo }
    } else {
        ByPi::Whole { hi, lo }
    })
}

/// The plan of `count lo hi` with `primes` segments of `segment` numbers.
pub fn plan_count(lo: u64, hi: u64, segment: u64) -> Box<dyn Plan> {
    if let Some(p) = by_pi(lo, hi) {
        return Box::new(p);
    }
    Box::new(Segments {
        list: false,
        // Long segments (nothing to send back), but at least COUNT_MIN_TASKS of them so
        // that every worker gets a share. Wider still where the bucket sieve pays a fixed
        // cost per task (near 2^64: tasks of 2^31 numbers, proto::jobs::count_min_task).
        segs: segments(
            lo,
            hi,
            ((hi - lo) / COUNT_MIN_TASKS)
                .clamp(segment, segment.saturating_mul(COUNT_SEGMENT_FACTOR))
                .max(proto::jobs::count_min_task(lo, hi)),
        ),
    })
}

/// A count by the prime-counting function: π(B) − π(A − 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ByPi {
    /// π(B) and π(A - 1) (task 1 absent when A <= 1), one task each.
    Whole { hi: u64, lo: u64 },
    /// By parts: tasks [0, P) are the parts of π(hi) (P = 3k + 1, k = [`pi_parts_k`]);
    /// then, when lo > 1, the parts of π(lo - 1) likewise, or one `Pi` task when lo - 1 is
    /// below [`PI_SPLIT_FROM`].
    Parts { hi: u64, lo: u64 },
}

impl Plan for ByPi {
    fn tasks(&self) -> usize {
        match *self {
            ByPi::Whole { lo, .. } => 1 + usize::from(lo > 1),
            ByPi::Parts { hi, lo } => {
                pi_part_count(hi)
                    + match lo.saturating_sub(1) {
                        0 => 0,
                        below if below < PI_SPLIT_FROM => 1,
                        below => pi_part_count(below),
                    }
            }
        }
    }

    fn work(&self, t: usize, _answers: &dyn Fn(usize) -> Option<String>) -> Option<(Work, u64)> {
        match *self {
            ByPi::Whole { hi, lo } => {
                let x = match t {
                    0 => hi,
                    1 if lo > 1 => lo - 1,
                    _ => return None,
                };
                Some((Work::Pi { x }, 1))
            }
            ByPi::Parts { hi, lo } => {
                let first = pi_part_count(hi);
                if t < first {
                    return Some((pi_part(hi, t), 1));
                }
                let below = lo.checked_sub(1)?;
                if below < PI_SPLIT_FROM {
                    (t == first && below > 0).then_some((Work::Pi { x: below }, 1))
                } else {
                    (t < first + pi_part_count(below)).then(|| (pi_part(below, t - first), 1))
                }
            }
        }
    }

    fn outcome(&self, results: &[&TaskDone]) -> Result<Outcome, String> {
        let (a, b) = match *self {
            ByPi::Whole { lo, .. } => {
                let below = if lo > 1 { num(results, 1) } else { Some(0) };
                match (num(results, 0), below) {
                    (Some(a), Some(b)) => (a, b),
                    _ => return Err("a prime count is missing or inconsistent".into()),
                }
            }
            ByPi::Parts { hi, lo } => {
                let text = |i: usize| -> Option<String> { results.get(i)?.answer.clone() };
                let first = pi_part_count(hi);
                let upper = (0..first)
                    .map(text)
                    .collect::<Option<Vec<String>>>()
                    .ok_or("a part is missing".to_string())
                    .and_then(|a| combine_pi(&a));
                let lower = match lo.saturating_sub(1) {
                    0 => Ok(0),
                    below if below < PI_SPLIT_FROM => {
                        num(results, first).ok_or("π(A - 1) is missing".to_string())
                    }
                    below => (first..first + pi_part_count(below))
                        .map(text)
                        .collect::<Option<Vec<String>>>()
                        .ok_or("a part is missing".to_string())
                        .and_then(|a| combine_pi(&a)),
                };
                match (upper, lower) {
                    (Ok(a), Ok(b)) => (a, b),
                    (a, b) => {
                        return Err(format!(
                            "the parts of π do not combine: {:?}, {:?}",
                            a.err(),
                            b.err()
                        ))
                    }
                }
            }
        };
        if a < b {
            return Err(match self {
                ByPi::Whole { .. } => "a prime count is missing or inconsistent".into(),
                ByPi::Parts { .. } => format!("the parts of π do not combine: {a} < {b}"),
            });
        }
        Ok(Outcome {
            answer: Some((a - b).to_string()),
            count: Some(a - b),
            ..Outcome::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: u64 = 1 << 24;

    #[test]
    fn count_plans() {
        let count = |lo, hi| plan_count(lo, hi, SEGMENT);
        // Small x: one π task per bound.
        assert_eq!(
            by_pi(0, 5_000_000_000_000),
            Some(ByPi::Whole {
                hi: 5_000_000_000_000,
                lo: 0
            })
        );
        assert_eq!(count(0, 5_000_000_000_000).tasks(), 1);
        // From 10^13 on: π by parts (3k + 1 tasks, k = 4 below 10^15).
        assert_eq!(
            by_pi(0, 100_000_000_000_000),
            Some(ByPi::Parts {
                hi: 100_000_000_000_000,
                lo: 0
            })
        );
        let p = count(0, 100_000_000_000_000);
        assert_eq!(p.tasks(), 13);
        assert_eq!(
            p.work(12, &|_| None).map(|w| w.0),
            Some(Work::PiPart {
                x: 100_000_000_000_000,
                k: 4,
                part: 12
            })
        );
        assert!(p.work(13, &|_| None).is_none());
        // A lower bound below 10^13 is one π task after the parts; above, parts too.
        let p = count(1_000, 1_000_000_000_000_000);
        assert_eq!(p.tasks(), 25 + 1);
        assert_eq!(
            p.work(25, &|_| None).map(|w| w.0),
            Some(Work::Pi { x: 999 })
        );
        let p = count(500_000_000_000_001, 1_000_000_000_000_000);
        assert_eq!(p.tasks(), 25 + 13);
        assert_eq!(
            p.work(37, &|_| None).map(|w| w.0),
            Some(Work::PiPart {
                x: 500_000_000_000_000,
                k: 4,
                part: 12
            })
        );
        assert!(p.children(3).is_empty() && p.parent(3).is_none());
        // A range too short for π is sieved: 10^9 numbers near 10^15 (~0.6 s of the bucket
        // sieve against 2 x 1.2 s of π); 10^10 near 10^12 is not (π: 0.1 s in all, one
        // task each).
        assert!(by_pi(1_000_000_000_000_000, 1_000_001_000_000_000).is_none());
        assert!(matches!(
            by_pi(1_000_000_000_000, 1_010_000_000_000),
            Some(ByPi::Whole { .. })
        ));
        // 10^10 numbers near 10^15: π(B) − π(A − 1) by parts (2 x 1.2 s of π, one thread,
        // against ~4.5 s of the bucket sieve; the plain sieve took 78 s).
        let p = by_pi(1_000_000_000_000_000, 1_000_010_000_000_000);
        assert!(matches!(p, Some(ByPi::Parts { .. })), "{p:?}");
        // Near 2^64 the bucket sieve pays ~3 s per task: 2^32 numbers make two tasks,
        // not 64; a short range keeps the narrow tasks (the plain sieve).
        let p = count(u64::MAX - (1 << 32) + 1, u64::MAX);
        assert_eq!(p.tasks(), 2, "{p:?}");
        assert!(p.list_segment(0).is_none());
        let p = count(u64::MAX - (1 << 28) + 1, u64::MAX);
        assert_eq!(p.tasks(), 16, "{p:?}");
    }

    #[test]
    /// π(B) - π(A - 1) from the tasks' answers, and an inconsistent pair refused.
    fn pi_outcome() {
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
        let p = ByPi::Whole { hi: 100, lo: 10 };
        let (a, b) = (done("25"), done("4"));
        assert_eq!(p.outcome(&[&a, &b]).map(|o| o.count), Ok(Some(21)));
        assert!(p.outcome(&[&b, &a]).is_err());
    }
}
