//! Generation job kinds: each kind is one module here, the whole of it behind [`Kind`]: the
//! words of its job line, how a job is cut into tasks ([`Plan`]), what a worker computes
//! for each task, how the coordinator combines the tasks' answers into the report, and
//! `worker gen` (the kind run in one process, the baseline). A new kind is one new module
//! and one line in [`KINDS`]; `twins.rs` is the example to copy.
//!
//! Why here, in the worker crate, and as one trait rather than one per side:
//! - proto cannot hold it: a kind's plan and its combination are the same algorithm as its
//!   computation (π(x) is cut into `lmo` parts and combined by `lmo::combine`; the n-th
//!   prime's plan starts from `pi::nth_estimate`), and those are the worker's.
//! - the coordinator already links this crate as a library for exactly that, so the arrow
//!   coordinator → worker → proto exists and nothing points back: no cycle. The
//!   coordinator's sans-I/O core calls only the pure parts (`parse`, `plan`, the plan's
//!   `work`, `outcome`), never `compute` or `run_local`.
//! - a trait per side would split each kind over two crates again, with a registry on each
//!   side to keep in step; one trait keeps a kind in one file.
//!
//! The wire stays as it was: a kind's spec is a [`JobSpec`] (its word and named integer
//! arguments, serialized flat as job reports always had it), and its tasks are
//! [`Work`] values. The built-in kinds use [`Work`]'s own variants; a kind added later uses
//! [`Work::Other`] (its word and integer arguments), so it needs no change in proto.

use std::io::Write;
use std::sync::atomic::AtomicBool;

use proto::jobs::{job_words, JobSpec};
use proto::msg::{TaskDone, Work};

use crate::gen::WorkDone;

pub mod count;
pub mod factorial;
pub mod nth;
pub mod primes;
pub mod twins;

/// Every kind. Registration of a new kind is one line here.
pub static KINDS: &[&dyn Kind] = &[
    &primes::Primes,
    &count::Count,
    &nth::Nth,
    &factorial::Factorial,
    &twins::Twins,
];

/// One generation job kind, all of it. Implementations are unit structs in their own
/// modules, registered in [`KINDS`].
pub trait Kind: Sync {
    /// The word that starts its job line (`primes`); unique among [`KINDS`].
    fn word(&self) -> &'static str;

    /// Its line with placeholders (`primes A B`): shown in errors; the number of words
    /// after the first is the number of arguments [`Kind::parse`] is given.
    fn usage(&self) -> &'static str;

    /// The spec of a job line's arguments (the words after the kind's word, as many as
    /// [`Kind::usage`] has), or why the job cannot run. The spec's `kind` MUST be
    /// [`Kind::word`].
    fn parse(&self, args: &[&str]) -> Result<JobSpec, String>;

    /// The job's tasks, with `segment` the coordinator's numbers per range segment
    /// (`--segment-numbers`). MUST be a pure function of its arguments: a restored or
    /// replayed coordinator plans again and must find the same tasks. An error for a spec
    /// [`Kind::parse`] would refuse.
    fn plan(&self, spec: &JobSpec, segment: u64) -> Result<Box<dyn Plan>, String>;

    /// Runs `work` if it is one of this kind's tasks (None if not): its result, or None if
    /// `cancel` was set. `progress` is told how many of its numbers are done.
    fn compute(
        &self,
        work: &Work,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64),
    ) -> Option<anyhow::Result<Option<WorkDone>>>;

    /// Runs a whole job in this process and writes its answer to `out` (`worker gen`);
    /// `method` is `worker gen --method` (only `count` has a choice).
    fn run_local(&self, spec: &JobSpec, method: &str, out: &mut dyn Write) -> anyhow::Result<()>;
}

/// A job's tasks, numbered from 0, as its kind planned them. The coordinator schedules
/// them like a file's chunks; a task with children waits until they are all done.
pub trait Plan: std::fmt::Debug + Send + Sync {
    /// How many tasks.
    fn tasks(&self) -> usize;

    /// What task `t` computes, and how much work it is (numbers, for progress); None while
    /// an answer it needs is not known (`answers` gives the done tasks' answers) or for a
    /// task that does not exist.
    fn work(&self, t: usize, answers: &dyn Fn(usize) -> Option<String>) -> Option<(Work, u64)>;

    /// The tasks whose answers task `t` needs.
    fn children(&self, _t: usize) -> Vec<usize> {
        Vec::new()
    }

    /// The task that needs task `t`'s answer (the inverse of [`Plan::children`]).
    fn parent(&self, _t: usize) -> Option<usize> {
        None
    }

    /// Whether task `t` is recorded in the ledger once done (another job meeting the same
    /// work takes its result): not when answers are large and of no use to another job.
    fn recorded(&self, _t: usize) -> bool {
        true
    }

    /// The segment `[lo, hi]` of task `t` if it sends its primes into primes.txt.
    fn list_segment(&self, _t: usize) -> Option<(u64, u64)> {
        None
    }

    /// The report's findings from every task's result, in task order (all done), or why
    /// they do not combine (the job is then reported failed).
    fn outcome(&self, results: &[&TaskDone]) -> Result<Outcome, String>;
}

/// What a job found, for its report (`data/output/jobs/<name>.json`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// The answer (a count, a prime).
    pub answer: Option<String>,
    /// How many were found (primes, pairs).
    pub count: Option<u64>,
    pub first_prime: Option<String>,
    pub last_prime: Option<String>,
    /// Text for the job's value file `<name>.txt` (a factorial's digits, twin pairs), when
    /// it is too long for the report.
    pub value: Option<String>,
}

/// The kind whose word is `word`.
pub fn by_word(word: &str) -> Option<&'static dyn Kind> {
    KINDS.iter().copied().find(|k| k.word() == word)
}

/// The kinds' lines, for errors: "`primes A B`, ... or `twins A B`".
fn usages() -> String {
    let all: Vec<String> = KINDS.iter().map(|k| format!("`{}`", k.usage())).collect();
    match all.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Parses a job file's text: one line (surrounding whitespace and blank lines around it
/// are fine) of a registered kind. The error says why not.
pub fn parse(text: &str) -> Result<JobSpec, String> {
    let words = job_words(text)?;
    let Some((&word, args)) = words.split_first() else {
        return Err(format!("empty line: expected {}", usages()));
    };
    let Some(kind) = by_word(word) else {
        let shown: String = word.chars().take(40).collect();
        return Err(format!("unknown job {shown:?}: expected {}", usages()));
    };
    let arity = kind
        .usage()
        .split_ascii_whitespace()
        .count()
        .saturating_sub(1);
    if args.len() != arity {
        return Err(format!(
            "wrong number of arguments for {word}: expected `{}`",
            kind.usage()
        ));
    }
    kind.parse(args)
}

/// The tasks of `spec` (see [`Kind::plan`]).
pub fn plan(spec: &JobSpec, segment: u64) -> Result<Box<dyn Plan>, String> {
    by_word(&spec.kind)
        .ok_or_else(|| format!("unknown job kind {:?}", spec.kind))?
        .plan(spec, segment)
}

/// Runs one generation task by the kind it belongs to (see [`Kind::compute`]).
pub fn compute(
    work: &Work,
    cancel: &AtomicBool,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Option<WorkDone>> {
    KINDS
        .iter()
        .find_map(|k| k.compute(work, cancel, &mut progress))
        .unwrap_or_else(|| anyhow::bail!("no kind computes {work:?}: a newer coordinator?"))
}

/// Runs `spec` in this process and writes its answer to `out` (`worker gen`).
pub fn run_local(spec: &JobSpec, method: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let kind =
        by_word(&spec.kind).ok_or_else(|| anyhow::anyhow!("unknown job kind {:?}", spec.kind))?;
    kind.run_local(spec, method, out)?;
    out.flush()?;
    Ok(())
}

/// The answer of `results[i]` as a number.
pub(crate) fn num(results: &[&TaskDone], i: usize) -> Option<u64> {
    results.get(i)?.answer.as_deref()?.parse().ok()
}

/// A range kind's arguments `A B`, parsed ([`proto::jobs::range`]); the error names the
/// form `usage` when there are not two.
fn range_args(args: &[&str], usage: &str) -> Result<(u64, u64), String> {
    let [a, b] = args else {
        return Err(format!("expected `{usage}`"));
    };
    proto::jobs::range(a, b)
}

/// `lo` and `hi` of a range spec, checked as parsing checks them.
pub(crate) fn bounds(spec: &JobSpec) -> Result<(u64, u64), String> {
    let (lo, hi) = (spec.need("lo")?, spec.need("hi")?);
    if lo > hi {
        return Err(format!("empty range: A = {lo} is larger than B = {hi}"));
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::jobs::{Params, NTH_MAX};

    #[test]
    /// Words are unique, specs carry their kind's word, and every usage parses to arity.
    fn registry_is_consistent() {
        for (i, k) in KINDS.iter().enumerate() {
            assert!(
                KINDS[..i].iter().all(|o| o.word() != k.word()),
                "{} twice",
                k.word()
            );
            assert!(k.usage().starts_with(k.word()), "{}", k.usage());
            let line = k
                .usage()
                .split_ascii_whitespace()
                .enumerate()
                .map(|(i, w)| {
                    if i == 0 {
                        w.to_string()
                    } else {
                        (10 * i).to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            let spec = parse(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(spec.kind, k.word());
            assert_eq!(spec.line(), line);
            assert!(plan(&spec, 1000).is_ok_and(|p| p.tasks() > 0), "{line}");
        }
    }

    #[test]
    fn job_lines() {
        assert_eq!(
            parse("primes 10 20\n"),
            Ok(Params::new("primes", &[("lo", 10), ("hi", 20)]))
        );
        assert_eq!(
            parse("\n  count 18446744073709551000 18446744073709551615  \n\n"),
            Ok(Params::new(
                "count",
                &[("lo", u64::MAX - 615), ("hi", u64::MAX)]
            ))
        );
        // The longest ranges allowed: 2^40 numbers to list, π for any count up to 2^60.
        assert!(parse("primes 0 1099511627775").is_ok());
        assert!(parse("count 0 1152921504606846976").is_ok());
        assert_eq!(
            parse("nth 10000000000000000"),
            Ok(Params::new("nth", &[("n", NTH_MAX)]))
        );
        assert_eq!(
            parse("factorial 0"),
            Ok(Params::new("factorial", &[("n", 0)]))
        );
        assert_eq!(
            parse("twins 3 1000"),
            Ok(Params::new("twins", &[("lo", 3), ("hi", 1000)]))
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
            ("sieve 1 2", "`nth N`, `factorial N` or `twins A B`"),
            ("primes 1 2\ncount 1 2", "2 lines"),
            ("primes 1e3 2", "not a non-negative integer"),
            ("primes 0 1099511627776", "at most 2^40"),
            (
                "primes 0 18446744073709551615",
                "split it into several jobs",
            ),
            ("count 0 18446744073709551615", "sieves at most 2^48"),
            ("twins 5 4", "empty range"),
            ("twins 0 10000001", "twins job spans at most"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
