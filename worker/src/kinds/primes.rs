//! `primes A B`: every prime in [A, B] into primes.txt. The range is cut into segments
//! of `--segment-numbers`; a worker sieves a segment and sends its primes ascending
//! (the coordinator's flusher deduplicates them by intervals). The report gives their
//! count and the first and last. [`Segments`] is also `count`'s sieving plan.

use std::io::Write;
use std::sync::atomic::AtomicBool;

use proto::jobs::{segments, JobSpec, Params, PRIMES_MAX_SPAN};
use proto::msg::{TaskDone, Work};

use super::{bounds, range_args, Kind, Outcome, Plan};
use crate::gen::{self, WorkDone};

/// The `primes` kind.
pub struct Primes;

impl Kind for Primes {
    fn word(&self) -> &'static str {
        "primes"
    }

    fn usage(&self) -> &'static str {
        "primes A B"
    }

    fn parse(&self, args: &[&str]) -> Result<JobSpec, String> {
        let (lo, hi) = range_args(args, self.usage())?;
        let span = hi - lo;
        if span >= PRIMES_MAX_SPAN {
            return Err(format!(
                "the range holds {} numbers; a primes job takes at most 2^40 \
                 ({PRIMES_MAX_SPAN}): split it into several jobs",
                span as u128 + 1
            ));
        }
        Ok(Params::new(self.word(), &[("lo", lo), ("hi", hi)]))
    }

    fn plan(&self, spec: &JobSpec, segment: u64) -> Result<Box<dyn Plan>, String> {
        let (lo, hi) = bounds(spec)?;
        Ok(Box::new(Segments {
            list: true,
            segs: segments(lo, hi, segment),
        }))
    }

    fn compute(
        &self,
        work: &Work,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64),
    ) -> Option<anyhow::Result<Option<WorkDone>>> {
        match work {
            Work::Primes { lo, hi } => Some(gen::sieve_work(*lo, *hi, true, cancel, progress)),
            _ => None,
        }
    }

    fn run_local(&self, spec: &JobSpec, _method: &str, out: &mut dyn Write) -> anyhow::Result<()> {
        let (lo, hi) = bounds(spec).map_err(anyhow::Error::msg)?;
        gen::write_primes(lo, hi, out)
    }
}

/// Range segments, sieved: listing their primes (`primes`) or counting them (`count`).
#[derive(Debug, Clone, PartialEq)]
pub struct Segments {
    pub list: bool,
    pub segs: Vec<(u64, u64)>,
}

impl Plan for Segments {
    fn tasks(&self) -> usize {
        self.segs.len()
    }

    fn work(&self, t: usize, _answers: &dyn Fn(usize) -> Option<String>) -> Option<(Work, u64)> {
        let &(lo, hi) = self.segs.get(t)?;
        let w = if self.list {
            Work::Primes { lo, hi }
        } else {
            Work::Count { lo, hi }
        };
        Some((w, hi - lo + 1))
    }

    fn list_segment(&self, t: usize) -> Option<(u64, u64)> {
        if self.list {
            self.segs.get(t).copied()
        } else {
            None
        }
    }

    fn outcome(&self, results: &[&TaskDone]) -> Result<Outcome, String> {
        let total: u64 = results.iter().map(|d| d.primes).sum();
        Ok(Outcome {
            answer: (!self.list).then(|| total.to_string()),
            count: Some(total),
            first_prime: results.iter().find_map(|d| d.first_prime.clone()),
            last_prime: results.iter().rev().find_map(|d| d.last_prime.clone()),
            value: None,
        })
    }
}
