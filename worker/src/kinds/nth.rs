//! `nth N`: the N-th prime (the first is 2). The inverse logarithmic integral estimates
//! it as x; below [`PI_SPLIT_FROM`] one task finds it, from there the parts of π(x) (the
//! `count` kind's tasks) come first, then one task sieves from x to the prime given π(x).

use std::io::Write;
use std::sync::atomic::AtomicBool;

use proto::jobs::{number, JobSpec, Params, NTH_MAX};
use proto::msg::{TaskDone, Work};

use super::count::{combine_pi, pi_part, pi_part_count, PI_SPLIT_FROM};
use super::{num, Kind, Outcome, Plan};
use crate::gen::{pi, WorkDone};

/// The `nth` kind.
pub struct Nth;

/// N of an `nth` spec, checked as parsing checks it.
fn n_of(spec: &JobSpec) -> Result<u64, String> {
    let n = spec.need("n")?;
    if n == 0 || n > NTH_MAX {
        return Err(format!("N = {n}: nth takes N from 1 to 10^16"));
    }
    Ok(n)
}

impl Kind for Nth {
    fn word(&self) -> &'static str {
        "nth"
    }

    fn usage(&self) -> &'static str {
        "nth N"
    }

    fn parse(&self, args: &[&str]) -> Result<JobSpec, String> {
        let [n] = args else {
            return Err(format!("expected `{}`", self.usage()));
        };
        let spec = Params::new(self.word(), &[("n", number(n, "N")?)]);
        n_of(&spec)?;
        Ok(spec)
    }

    fn plan(&self, spec: &JobSpec, _segment: u64) -> Result<Box<dyn Plan>, String> {
        let n = n_of(spec)?;
        let x = pi::nth_estimate(n);
        Ok(Box::new(if x >= PI_SPLIT_FROM {
            NthPlan::Parts { n, x }
        } else {
            NthPlan::One { n }
        }))
    }

    fn compute(
        &self,
        work: &Work,
        _cancel: &AtomicBool,
        _progress: &mut dyn FnMut(u64),
    ) -> Option<anyhow::Result<Option<WorkDone>>> {
        let p = match work {
            Work::Nth { n } => pi::nth_prime(*n, |_| {})
                .ok_or_else(|| anyhow::anyhow!("nth takes N from 1 to 10^16, not {n}")),
            Work::NthNear { n, x, pi } => pi::nth_near(*n, *x, *pi).ok_or_else(|| {
                anyhow::anyhow!("the {n}-th prime is not near {x} if pi({x}) = {pi}")
            }),
            _ => return None,
        };
        Some(p.map(|p| {
            Some(WorkDone {
                answer: Some(p.to_string()),
                ..WorkDone::default()
            })
        }))
    }

    fn run_local(&self, spec: &JobSpec, _method: &str, out: &mut dyn Write) -> anyhow::Result<()> {
        let n = n_of(spec).map_err(anyhow::Error::msg)?;
        let p = pi::nth_prime(n, |_| {})
            .ok_or_else(|| anyhow::anyhow!("nth takes N from 1 to 10^16"))?;
        writeln!(out, "{p}")?;
        Ok(())
    }
}

/// How the n-th prime is found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NthPlan {
    /// One task: the n-th prime.
    One { n: u64 },
    /// By parts: tasks [0, P) are the parts of π(x) at the estimate x; the last task
    /// sieves from x to the prime once they are all done (their answers give π(x)).
    Parts { n: u64, x: u64 },
}

impl Plan for NthPlan {
    fn tasks(&self) -> usize {
        match *self {
            NthPlan::One { .. } => 1,
            NthPlan::Parts { x, .. } => pi_part_count(x) + 1,
        }
    }

    fn children(&self, t: usize) -> Vec<usize> {
        match *self {
            NthPlan::Parts { x, .. } if t == pi_part_count(x) => (0..t).collect(),
            _ => Vec::new(),
        }
    }

    fn parent(&self, t: usize) -> Option<usize> {
        match *self {
            NthPlan::Parts { x, .. } => {
                let parts = pi_part_count(x);
                (t < parts).then_some(parts)
            }
            NthPlan::One { .. } => None,
        }
    }

    fn work(&self, t: usize, answers: &dyn Fn(usize) -> Option<String>) -> Option<(Work, u64)> {
        let (n, x) = match *self {
            NthPlan::One { n } => return (t == 0).then_some((Work::Nth { n }, 1)),
            NthPlan::Parts { n, x } => (n, x),
        };
        let parts = pi_part_count(x);
        if t < parts {
            return Some((pi_part(x, t), 1));
        }
        if t > parts {
            return None;
        }
        // A part not done yet: nothing to run yet.
        let answers = (0..parts).map(answers).collect::<Option<Vec<String>>>()?;
        // A part's answer that does not combine (it cannot happen with our workers) falls
        // back to the whole n-th prime in one task.
        Some(match combine_pi(&answers) {
            Ok(pi) => (Work::NthNear { n, x, pi }, 1),
            Err(_) => (Work::Nth { n }, 1),
        })
    }

    fn outcome(&self, results: &[&TaskDone]) -> Result<Outcome, String> {
        let p = num(results, self.tasks() - 1).ok_or("the worker's answer is missing")?;
        Ok(Outcome {
            answer: Some(p.to_string()),
            first_prime: Some(p.to_string()),
            last_prime: Some(p.to_string()),
            ..Outcome::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::lmo;

    /// nth by parts: the parts of π at the estimate, then the sieve task that waits for
    /// them and is given π(x) from their answers.
    #[test]
    fn nth_plan_waits_for_the_parts_of_pi() {
        let spec = Params::new("nth", &[("n", 1_000_000_000_000)]);
        let p = Nth.plan(&spec, 1 << 24).expect("plan");
        let x = pi::nth_estimate(1_000_000_000_000);
        let n = 1_000_000_000_000;
        assert!(x >= PI_SPLIT_FROM);
        assert_eq!(p.tasks(), 14);
        assert_eq!(p.children(13), (0..13).collect::<Vec<_>>());
        assert!((0..13).all(|t| p.parent(t) == Some(13) && p.children(t).is_empty()));
        assert_eq!(p.parent(13), None);
        // Not all parts answered: nothing to run yet.
        assert!(p
            .work(13, &|t| (t < 12).then(|| "e:0".to_string()))
            .is_none());
        // The real parts' answers give π(x).
        let ctx = lmo::Context::new(x);
        let answers: Vec<String> = ctx.parts(4).iter().map(|q| ctx.run(q).encode()).collect();
        let pi = pi::prime_pi(x);
        assert_eq!(
            p.work(13, &|t| answers.get(t).cloned()).map(|w| w.0),
            Some(Work::NthNear { n, x, pi })
        );
        // Answers that do not combine: the whole n-th prime in one task instead.
        assert_eq!(
            p.work(13, &|_| Some("e:1".to_string())).map(|w| w.0),
            Some(Work::Nth { n })
        );
        // Small n: one task, as before.
        let small = Nth
            .plan(&Params::new("nth", &[("n", 1000)]), 1 << 24)
            .expect("plan");
        assert_eq!(small.tasks(), 1);
        assert_eq!(
            small.work(0, &|_| None).map(|w| w.0),
            Some(Work::Nth { n: 1000 })
        );
    }
}
