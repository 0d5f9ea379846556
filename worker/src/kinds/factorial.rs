//! `factorial N`: N! as a product tree. The leaves multiply up to [`FANOUT`] consecutive
//! numbers, each inner task multiplies up to [`FANOUT`] products below it (sent as hex),
//! the last one answers in decimal; a product task is handed out once its factors are
//! done. The value goes to the job's value file (`<name>.txt`).

use std::io::Write;
use std::sync::atomic::AtomicBool;

use proto::jobs::{
    factorial_leaf, factorial_levels, number, JobSpec, Params, FACTORIAL_MAX, FANOUT,
};
use proto::msg::{TaskDone, Work};

use super::{Kind, Outcome, Plan};
use crate::gen::{product, WorkDone};

/// The `factorial` kind.
pub struct Factorial;

/// N of a `factorial` spec, checked as parsing checks it.
fn n_of(spec: &JobSpec) -> Result<u64, String> {
    let n = spec.need("n")?;
    if n > FACTORIAL_MAX {
        return Err(format!("N = {n}: factorial takes N up to {FACTORIAL_MAX}"));
    }
    Ok(n)
}

impl Kind for Factorial {
    fn word(&self) -> &'static str {
        "factorial"
    }

    fn usage(&self) -> &'static str {
        "factorial N"
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
        Ok(Box::new(Tree {
            n,
            levels: factorial_levels(n),
        }))
    }

    fn compute(
        &self,
        work: &Work,
        _cancel: &AtomicBool,
        _progress: &mut dyn FnMut(u64),
    ) -> Option<anyhow::Result<Option<WorkDone>>> {
        let Work::Multiply { factors, decimal } = work else {
            return None;
        };
        let answer = product::multiply_hex(factors).and_then(|hex| {
            Ok(if *decimal {
                product::from_hex(&hex)?.to_str_radix(10)
            } else {
                hex
            })
        });
        Some(answer.map(|a| {
            Some(WorkDone {
                answer: Some(a),
                ..WorkDone::default()
            })
        }))
    }

    fn run_local(&self, spec: &JobSpec, _method: &str, out: &mut dyn Write) -> anyhow::Result<()> {
        let n = n_of(spec).map_err(anyhow::Error::msg)?;
        writeln!(out, "{}", product::factorial(n))?;
        Ok(())
    }
}

/// The product tree of n!: level sizes; tasks numbered level by level, leaves first.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    pub n: u64,
    pub levels: Vec<usize>,
}

impl Tree {
    /// (level, index in level) of task `t`.
    fn node(&self, t: usize) -> (usize, usize) {
        let mut t = t;
        for (l, &size) in self.levels.iter().enumerate() {
            if t < size {
                return (l, t);
            }
            t -= size;
        }
        (self.levels.len(), t)
    }
}

impl Plan for Tree {
    fn tasks(&self) -> usize {
        self.levels.iter().sum()
    }

    fn children(&self, t: usize) -> Vec<usize> {
        let (l, i) = self.node(t);
        if l == 0 || l >= self.levels.len() {
            return Vec::new();
        }
        let below: usize = self.levels[..l - 1].iter().sum();
        let first = i * FANOUT;
        (first..(first + FANOUT).min(self.levels[l - 1]))
            .map(|c| below + c)
            .collect()
    }

    fn parent(&self, t: usize) -> Option<usize> {
        let (l, i) = self.node(t);
        if l + 1 >= self.levels.len() {
            return None;
        }
        let above: usize = self.levels[..=l].iter().sum();
        Some(above + i / FANOUT)
    }

    /// Products' answers are large and of no use to another job.
    fn recorded(&self, _t: usize) -> bool {
        false
    }

    fn work(&self, t: usize, answers: &dyn Fn(usize) -> Option<String>) -> Option<(Work, u64)> {
        if t >= self.tasks() {
            return None;
        }
        let (l, i) = self.node(t);
        let factors: Vec<String> = if l == 0 {
            factorial_leaf(self.n, i)
                .into_iter()
                .map(|f| format!("{f:x}"))
                .collect()
        } else {
            self.children(t)
                .into_iter()
                .map(answers)
                .collect::<Option<Vec<String>>>()?
        };
        let decimal = t + 1 == self.tasks();
        Some((Work::Multiply { factors, decimal }, 1))
    }

    fn outcome(&self, results: &[&TaskDone]) -> Result<Outcome, String> {
        match results.last().and_then(|d| d.answer.clone()) {
            Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => Ok(Outcome {
                value: Some(digits),
                ..Outcome::default()
            }),
            _ => Err("the product is missing or not decimal".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factorial_plan_links_children_and_parents() {
        let p = Factorial
            .plan(&Params::new("factorial", &[("n", 100)]), 1 << 24)
            .expect("plan");
        // Levels 25, 7, 2, 1.
        assert_eq!(p.tasks(), 35);
        assert_eq!(p.children(0), Vec::<usize>::new());
        assert_eq!(p.children(25), vec![0, 1, 2, 3]);
        assert_eq!(p.children(31), vec![24]);
        assert_eq!(p.children(34), vec![32, 33]);
        assert_eq!(p.parent(24), Some(31));
        assert_eq!(p.parent(33), Some(34));
        assert_eq!(p.parent(34), None);
        for t in 0..34 {
            let up = p.parent(t).expect("parent");
            assert!(p.children(up).contains(&t));
        }
        assert!(p.work(25, &|_| None).is_none());
        assert!(!p.recorded(0));
        assert_eq!(
            p.work(24, &|_| None).map(|w| w.0),
            Some(Work::Multiply {
                factors: vec!["61".into(), "62".into(), "63".into(), "64".into()],
                decimal: false,
            })
        );
    }
}
