//! Generation jobs (`data/jobs/<name>.job`): how a job becomes tasks, and its report. A job
//! is kept like a file (its tasks are its chunks: queued, assigned, flushing, done, in the
//! snapshots too), under a key no input can have (`.jobs/<name>`: inputs never have a
//! hidden component), with a plan that says what each task computes.

use proto::jobs::{factorial_leaf, factorial_levels, segments, JobSpec, FANOUT};
use proto::msg::Work;

use super::*;

/// Numbers per segment of a `primes` job by default (about 600,000 primes at 10^12, 5 MB
/// held by the coordinator until durable; `coordinator --segment-numbers`). Measured on
/// [10^12, 10^12 + 10^9]: as fast end to end as 2^26, with a lower peak memory
/// (BENCHMARKS.md).
pub const PRIMES_SEGMENT: u64 = 1 << 24;
/// A `count` job's segments are this many times longer (nothing to send back: 2^32 numbers
/// by default, about a second of sieving).
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

/// The key of job `name` in the core's table.
pub fn job_key(name: &str) -> String {
    format!(".jobs/{name}")
}

/// The job name of a key made by [`job_key`].
pub fn job_name(key: &str) -> Option<&str> {
    key.strip_prefix(".jobs/")
}

/// What a job's tasks are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Plan {
    /// Range segments, sieved (listing primes, or counting them).
    Segments { list: bool, segs: Vec<(u64, u64)> },
    /// π(B) and π(A - 1) (task 1 absent when A <= 1): a count by the prime-counting function.
    Pi { hi: u64, lo: u64 },
    /// One task: the n-th prime.
    Nth { n: u64 },
    /// π(B) - π(A - 1) by parts: tasks [0, P) are the parts of π(hi) (P = 3k + 1, k =
    /// [`pi_parts_k`]); then, when lo > 1, the parts of π(lo - 1) likewise, or one `Pi`
    /// task when lo - 1 is below [`PI_SPLIT_FROM`].
    PiParts { hi: u64, lo: u64 },
    /// The n-th prime by parts: tasks [0, P) are the parts of π(x) at the estimate x; the
    /// last task sieves from x to the prime once they are all done (their answers give
    /// π(x)).
    NthParts { n: u64, x: u64 },
    /// The product tree of n!: level sizes; tasks numbered level by level, leaves first.
    Factorial { n: u64, levels: Vec<usize> },
}

impl Plan {
    /// The plan of `spec`, with `primes` segments of `segment` numbers.
    pub fn of(spec: JobSpec, segment: u64) -> Plan {
        match spec {
            JobSpec::Primes { lo, hi } => Plan::Segments {
                list: true,
                segs: segments(lo, hi, segment),
            },
            JobSpec::Count { lo, hi } if proto::jobs::count_by_pi(lo, hi) => {
                if hi >= PI_SPLIT_FROM {
                    Plan::PiParts { hi, lo }
                } else {
                    Plan::Pi { hi, lo }
                }
            }
            JobSpec::Count { lo, hi } => Plan::Segments {
                list: false,
                // Long segments (nothing to send back), but at least COUNT_MIN_TASKS of
                // them so that every worker gets a share.
                // Wider still where the bucket sieve pays a fixed cost per task (near
                // 2^64: tasks of 2^31 numbers, proto::jobs::count_min_task).
                segs: segments(
                    lo,
                    hi,
                    ((hi - lo) / COUNT_MIN_TASKS)
                        .clamp(segment, segment.saturating_mul(COUNT_SEGMENT_FACTOR))
                        .max(proto::jobs::count_min_task(lo, hi)),
                ),
            },
            JobSpec::Nth { n } => {
                let x = worker::gen::pi::nth_estimate(n);
                if x >= PI_SPLIT_FROM {
                    Plan::NthParts { n, x }
                } else {
                    Plan::Nth { n }
                }
            }
            JobSpec::Factorial { n } => Plan::Factorial {
                n,
                levels: factorial_levels(n),
            },
        }
    }

    /// The segment `[lo, hi]` of task `t` if it lists primes (a `primes` job).
    pub fn list_segment(&self, t: u32) -> Option<(u64, u64)> {
        match self {
            Plan::Segments { list: true, segs } => segs.get(t as usize).copied(),
            _ => None,
        }
    }

    /// What task `t` computes if the ledger records it when done (every generation task
    /// but products, whose answers are large and useless to another job).
    pub fn recorded_work(&self, t: u32) -> Option<Work> {
        match self {
            Plan::Factorial { .. } => None,
            _ => self.work(t as usize, |_| None).map(|(w, _)| w),
        }
    }

    pub fn tasks(&self) -> usize {
        match self {
            Plan::Segments { segs, .. } => segs.len(),
            Plan::Pi { lo, .. } => 1 + usize::from(*lo > 1),
            Plan::Nth { .. } => 1,
            Plan::PiParts { hi, lo } => {
                pi_part_count(*hi)
                    + match lo.saturating_sub(1) {
                        0 => 0,
                        below if below < PI_SPLIT_FROM => 1,
                        below => pi_part_count(below),
                    }
            }
            Plan::NthParts { x, .. } => pi_part_count(*x) + 1,
            Plan::Factorial { levels, .. } => levels.iter().sum(),
        }
    }

    /// (level, index in level) of factorial task `t`.
    fn node(levels: &[usize], t: usize) -> (usize, usize) {
        let mut t = t;
        for (l, &size) in levels.iter().enumerate() {
            if t < size {
                return (l, t);
            }
            t -= size;
        }
        (levels.len(), t)
    }

    /// The tasks whose answers task `t` needs (a factorial's product its factors, the
    /// n-th prime's sieve the parts of π; none for the others).
    pub fn children(&self, t: usize) -> Vec<usize> {
        if let Plan::NthParts { x, .. } = self {
            let parts = pi_part_count(*x);
            return if t == parts {
                (0..parts).collect()
            } else {
                Vec::new()
            };
        }
        let Plan::Factorial { levels, .. } = self else {
            return Vec::new();
        };
        let (l, i) = Self::node(levels, t);
        if l == 0 {
            return Vec::new();
        }
        let below: usize = levels[..l - 1].iter().sum();
        let first = i * FANOUT;
        (first..(first + FANOUT).min(levels[l - 1]))
            .map(|c| below + c)
            .collect()
    }

    /// The task that needs task `t`'s answer (see [`Plan::children`]).
    pub fn parent(&self, t: usize) -> Option<usize> {
        if let Plan::NthParts { x, .. } = self {
            let parts = pi_part_count(*x);
            return (t < parts).then_some(parts);
        }
        let Plan::Factorial { levels, .. } = self else {
            return None;
        };
        let (l, i) = Self::node(levels, t);
        if l + 1 >= levels.len() {
            return None;
        }
        let above: usize = levels[..=l].iter().sum();
        Some(above + i / FANOUT)
    }

    /// What task `t` computes, and how much work it is (numbers, for progress); None while
    /// a product task's factors are not all known (`answers` gives the done tasks' answers).
    pub fn work(&self, t: usize, answers: impl Fn(usize) -> Option<String>) -> Option<(Work, u64)> {
        match self {
            Plan::Segments { list, segs } => {
                let &(lo, hi) = segs.get(t)?;
                let w = if *list {
                    Work::Primes { lo, hi }
                } else {
                    Work::Count { lo, hi }
                };
                Some((w, hi - lo + 1))
            }
            Plan::Pi { hi, lo } => {
                let x = if t == 0 { *hi } else { lo - 1 };
                Some((Work::Pi { x }, 1))
            }
            Plan::Nth { n } => Some((Work::Nth { n: *n }, 1)),
            Plan::PiParts { hi, lo } => {
                let first = pi_part_count(*hi);
                if t < first {
                    return Some((pi_part(*hi, t), 1));
                }
                let below = lo.checked_sub(1)?;
                if below < PI_SPLIT_FROM {
                    (t == first).then_some((Work::Pi { x: below }, 1))
                } else {
                    (t < first + pi_part_count(below)).then(|| (pi_part(below, t - first), 1))
                }
            }
            Plan::NthParts { n, x } => {
                let parts = pi_part_count(*x);
                if t < parts {
                    return Some((pi_part(*x, t), 1));
                }
                if t > parts {
                    return None;
                }
                let answers: Option<Vec<String>> = (0..parts).map(&answers).collect();
                // A part's answer that does not combine (it cannot happen with our
                // workers) falls back to the whole n-th prime in one task.
                Some(match answers.map(|a| combine_pi(&a)) {
                    None => return None, // a part is not done yet
                    Some(Ok(pi)) => (Work::NthNear { n: *n, x: *x, pi }, 1),
                    Some(Err(_)) => (Work::Nth { n: *n }, 1),
                })
            }
            Plan::Factorial { n, levels } => {
                let (l, i) = Self::node(levels, t);
                let factors: Vec<String> = if l == 0 {
                    factorial_leaf(*n, i)
                        .into_iter()
                        .map(|f| format!("{f:x}"))
                        .collect()
                } else {
                    self.children(t)
                        .into_iter()
                        .map(&answers)
                        .collect::<Option<Vec<String>>>()?
                };
                let decimal = t + 1 == self.tasks();
                Some((Work::Multiply { factors, decimal }, 1))
            }
        }
    }
}

/// A generation job's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenJob {
    pub name: String,
    pub spec: JobSpec,
    pub plan: Plan,
}

/// A job's report (`data/output/jobs/<name>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    pub job: String,
    /// The job file's line, as understood (absent when it could not be parsed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<JobSpec>,
    /// `done`, `failed` (a task failed every try; tried again later) or `invalid` (the job
    /// file is malformed: `errors` says why; fix the file and it runs).
    pub status: String,
    pub source: Fingerprint,
    /// count: the number of primes; nth: the prime; factorial: not here (`value_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// primes: primes found in the range (all of them, also those already in primes.txt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_prime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prime: Option<String>,
    /// factorial: the value's file (`<name>.txt`, decimal), digits and SHA-256 of the digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digits: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub segments: usize,
    pub workers: Vec<String>,
    pub errors: Vec<String>,
    pub started_at: String,
    pub finished_at: String,
    /// The factorial's value in decimal, for the writer to put in `value_file` (not in the
    /// report itself).
    #[serde(skip)]
    pub value: Option<String>,
}

impl JobReport {
    /// A report of `status` with nothing found yet.
    fn new(
        name: &str,
        spec: Option<JobSpec>,
        status: &str,
        source: Fingerprint,
        started: DateTime<Utc>,
        now: Now,
    ) -> Self {
        JobReport {
            job: name.to_string(),
            spec,
            status: status.into(),
            source,
            answer: None,
            count: None,
            first_prime: None,
            last_prime: None,
            value_file: None,
            digits: None,
            sha256: None,
            segments: 0,
            workers: Vec::new(),
            errors: Vec::new(),
            started_at: started.to_rfc3339(),
            finished_at: now.wall.to_rfc3339(),
            value: None,
        }
    }
}

/// Why a `primes` message for segment `[lo, hi]` must be refused, if it must: a segment's
/// primes come ascending, inside it, below 2^64 (the flusher relies on the order).
pub fn bad_run(lo: u64, hi: u64, small: &[u64], big: &[String]) -> Option<String> {
    if !big.is_empty() {
        return Some(format!("a prime of 2^64 or more for segment [{lo}, {hi}]"));
    }
    if let Some(p) = small.iter().find(|&&p| p < lo || p > hi) {
        return Some(format!("{p} is outside segment [{lo}, {hi}]"));
    }
    if let Some(w) = small.windows(2).find(|w| w[0] >= w[1]) {
        return Some(format!(
            "primes of segment [{lo}, {hi}] out of order ({} then {})",
            w[0], w[1]
        ));
    }
    None
}

impl Core {
    /// The plan of `key`'s job, if it is a generation job.
    pub(super) fn plan_of(&self, key: &ChunkKey) -> Option<&Plan> {
        Some(&self.jobs.get(&key.file)?.work.as_ref()?.plan)
    }

    /// The tasks the ledger shows finished (at start-up).
    pub fn set_finished(&mut self, done: Vec<crate::ranges::Finished>) {
        for r in done {
            self.done_work.insert(r.work, (r.result, r.worker));
        }
    }

    /// The result of `work` if it is durable.
    pub fn done_work(&self, work: &Work) -> Option<(TaskDone, String)> {
        self.done_work.get(work).cloned()
    }

    /// A job file (new or changed) parsed: queue its tasks. A factorial's product tasks
    /// wait for their factors; tasks the ledger shows done are done at once.
    pub fn job_ready(&mut self, job: GenJob, fp: Fingerprint, now: Now) -> Vec<Action> {
        let key = job_key(&job.name);
        if self.jobs.get(&key).is_some_and(|j| j.fp == fp) {
            return Vec::new();
        }
        let mut actions = self.drop_job(&key);
        self.next_gen += 1;
        let gen = self.next_gen;
        let n = job.plan.tasks();
        let mut chunks = Vec::with_capacity(n);
        for t in 0..n {
            let known = job
                .plan
                .recorded_work(t as u32)
                .and_then(|w| self.done_work(&w));
            if let Some((result, worker)) = known {
                chunks.push(ChunkState::Done { result, worker });
            } else if job.plan.children(t).is_empty() {
                chunks.push(ChunkState::Queued { ready_ms: now.ms });
                self.queue.push_back(ChunkKey::new(&key, gen, t as u32));
            } else {
                chunks.push(ChunkState::Queued { ready_ms: WAITING });
            }
        }
        let mut j = Job::new(gen, fp, chunks, None);
        j.work = Some(Box::new(job));
        self.jobs.insert(key.clone(), j);
        actions.extend(self.maybe_report(&key, now));
        actions.extend(self.assign(now));
        actions
    }

    /// Makes the job restored under `key` (from a snapshot) a generation job with `job`'s
    /// plan.
    pub fn attach_plan(&mut self, key: &str, job: GenJob) {
        if let Some(j) = self.jobs.get_mut(key) {
            j.work = Some(Box::new(job));
        }
    }

    /// A job file whose report (`done`, or `invalid` for this version) exists: nothing to
    /// do; status shows it as the report says.
    pub fn job_reported(&mut self, name: &str, fp: Fingerprint, report: &JobReport) {
        let key = job_key(name);
        self.file_reported(&key, fp, 0, 0);
        if let Some(j) = self.jobs.get_mut(&key) {
            j.shown = Some(Box::new(JobStatus {
                job: name.to_string(),
                line: report.spec.map(|s| s.line()).unwrap_or_default(),
                state: report.status.clone(),
                tasks: report.segments,
                tasks_done: report.segments,
                error: report.errors.first().cloned(),
            }));
        }
    }

    /// A job file that cannot be parsed: its report says why, and nothing runs.
    pub fn job_invalid(
        &mut self,
        name: &str,
        fp: Fingerprint,
        reason: String,
        now: Now,
    ) -> Vec<Action> {
        let key = job_key(name);
        if self.jobs.get(&key).is_some_and(|j| j.fp == fp) {
            return Vec::new();
        }
        let mut actions = self.drop_job(&key);
        self.next_gen += 1;
        let mut j = Job::new(self.next_gen, fp, Vec::new(), Some(now.wall));
        j.reported = true;
        j.shown = Some(Box::new(JobStatus {
            job: name.to_string(),
            line: String::new(),
            state: "invalid".into(),
            tasks: 0,
            tasks_done: 0,
            error: Some(reason.clone()),
        }));
        self.jobs.insert(key, j);
        let mut r = JobReport::new(name, None, "invalid", fp, now.wall, now);
        r.errors.push(reason);
        actions.push(Action::WriteJobReport(Box::new(r)));
        actions
    }

    /// The job's product tasks whose factors just became all known go to the queue.
    pub(super) fn wake_parents(&mut self, key: &str, done: &[u32], now: Now) {
        let Some(job) = self.jobs.get_mut(key) else {
            return;
        };
        let Some(work) = job.work.as_ref() else {
            return;
        };
        let mut woken = BTreeSet::new();
        for &t in done {
            if let Some(p) = work.plan.parent(t as usize) {
                let ready = work
                    .plan
                    .children(p)
                    .iter()
                    .all(|&c| matches!(job.chunks.get(c), Some(ChunkState::Done { .. })));
                if ready && matches!(job.chunks[p], ChunkState::Queued { ready_ms: WAITING }) {
                    woken.insert(p);
                }
            }
        }
        for p in woken {
            job.chunks[p] = ChunkState::Queued { ready_ms: now.ms };
            self.queue.push_back(ChunkKey::new(key, job.gen, p as u32));
        }
    }

    /// The report of a finished job.
    pub(super) fn job_report(&mut self, key: &str, now: Now) -> Option<Action> {
        let job = self.jobs.get_mut(key)?;
        let work = job.work.as_ref()?;
        let mut r = JobReport::new(
            &work.name,
            Some(work.spec),
            "done",
            job.fp,
            job.started_at.unwrap_or(now.wall),
            now,
        );
        r.segments = job.chunks.len();
        let mut workers = BTreeSet::new();
        let mut answers = Vec::with_capacity(job.chunks.len());
        for (i, c) in job.chunks.iter().enumerate() {
            match c {
                ChunkState::Done { result, worker } => {
                    workers.insert(worker.clone());
                    answers.push(Some(result));
                }
                ChunkState::Failed { reason } => {
                    r.status = "failed".into();
                    r.errors.push(format!("task {i}: {reason}"));
                    answers.push(None);
                }
                _ => answers.push(None),
            }
        }
        r.workers = workers.into_iter().collect();
        if r.status == "done" {
            let num = |i: usize| -> Option<u64> {
                answers.get(i)?.as_ref()?.answer.as_deref()?.parse().ok()
            };
            match &work.plan {
                Plan::Segments { list, .. } => {
                    let total: u64 = answers.iter().flatten().map(|d| d.primes).sum();
                    r.count = Some(total);
                    if !list {
                        r.answer = Some(total.to_string());
                    }
                    r.first_prime = answers.iter().flatten().find_map(|d| d.first_prime.clone());
                    r.last_prime = answers
                        .iter()
                        .rev()
                        .flatten()
                        .find_map(|d| d.last_prime.clone());
                }
                Plan::Pi { lo, .. } => {
                    let below = if *lo > 1 { num(1) } else { Some(0) };
                    match (num(0), below) {
                        (Some(a), Some(b)) if a >= b => {
                            r.answer = Some((a - b).to_string());
                            r.count = Some(a - b);
                        }
                        _ => {
                            r.status = "failed".into();
                            r.errors
                                .push("a prime count is missing or inconsistent".into());
                        }
                    }
                }
                Plan::PiParts { hi, lo } => {
                    let text =
                        |i: usize| -> Option<String> { answers.get(i)?.as_ref()?.answer.clone() };
                    let first = pi_part_count(*hi);
                    let upper: Option<Vec<String>> = (0..first).map(text).collect();
                    let upper = upper
                        .ok_or("a part is missing".to_string())
                        .and_then(|a| combine_pi(&a));
                    let lower = match lo.saturating_sub(1) {
                        0 => Ok(0),
                        below if below < PI_SPLIT_FROM => {
                            num(first).ok_or("π(A - 1) is missing".to_string())
                        }
                        below => (first..first + pi_part_count(below))
                            .map(text)
                            .collect::<Option<Vec<String>>>()
                            .ok_or("a part is missing".to_string())
                            .and_then(|a| combine_pi(&a)),
                    };
                    match (upper, lower) {
                        (Ok(a), Ok(b)) if a >= b => {
                            r.answer = Some((a - b).to_string());
                            r.count = Some(a - b);
                        }
                        (a, b) => {
                            r.status = "failed".into();
                            r.errors.push(format!(
                                "the parts of π do not combine: {:?}, {:?}",
                                a.err(),
                                b.err()
                            ));
                        }
                    }
                }
                Plan::Nth { .. } | Plan::NthParts { .. } => match num(job.chunks.len() - 1) {
                    Some(p) => {
                        r.answer = Some(p.to_string());
                        r.first_prime = r.answer.clone();
                        r.last_prime = r.answer.clone();
                    }
                    None => {
                        r.status = "failed".into();
                        r.errors.push("the worker's answer is missing".into());
                    }
                },
                Plan::Factorial { .. } => {
                    let root = answers.last().and_then(|a| a.as_ref()?.answer.clone());
                    match root {
                        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => {
                            r.value_file = Some(format!("{}.txt", work.name));
                            r.value = Some(digits);
                        }
                        _ => {
                            r.status = "failed".into();
                            r.errors
                                .push("the product is missing or not decimal".into());
                        }
                    }
                }
            }
        }
        if r.status != "done" {
            job.failed_round(self.cfg.failed_retry_ms, now);
        }
        Some(Action::WriteJobReport(Box::new(r)))
    }
}

/// How many parts π(x) is cut into (x >= [`PI_SPLIT_FROM`]).
fn pi_part_count(x: u64) -> usize {
    worker::gen::lmo::part_count(pi_parts_k(x) as usize)
}

/// Part `t` of π(x).
fn pi_part(x: u64, t: usize) -> Work {
    Work::PiPart {
        x,
        k: pi_parts_k(x),
        part: t as u32,
    }
}

/// π(x) from its parts' answers, in order.
fn combine_pi(answers: &[String]) -> Result<u64, String> {
    let parts = answers
        .iter()
        .map(|a| worker::gen::lmo::PartAnswer::decode(a))
        .collect::<Result<Vec<_>, String>>()?;
    worker::gen::lmo::combine(&parts)
}

/// `ready_ms` of a product task whose factors are not all known yet (never assigned until
/// `Core::wake_parents` queues it).
pub const WAITING: u64 = u64::MAX;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factorial_plan_links_children_and_parents() {
        let p = Plan::of(JobSpec::Factorial { n: 100 }, PRIMES_SEGMENT);
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
        assert!(p.work(25, |_| None).is_none());
        assert_eq!(
            p.work(24, |_| None).map(|w| w.0),
            Some(Work::Multiply {
                factors: vec!["61".into(), "62".into(), "63".into(), "64".into()],
                decimal: false,
            })
        );
    }

    #[test]
    fn count_plans() {
        let count = |lo, hi| Plan::of(JobSpec::Count { lo, hi }, PRIMES_SEGMENT);
        // Small x: one π task per bound.
        assert_eq!(
            count(0, 5_000_000_000_000),
            Plan::Pi {
                hi: 5_000_000_000_000,
                lo: 0
            }
        );
        assert_eq!(count(0, 5_000_000_000_000).tasks(), 1);
        // From 10^13 on: π by parts (3k + 1 tasks, k = 4 below 10^15).
        let p = count(0, 100_000_000_000_000);
        assert_eq!(
            p,
            Plan::PiParts {
                hi: 100_000_000_000_000,
                lo: 0
            }
        );
        assert_eq!(p.tasks(), 13);
        assert_eq!(
            p.work(12, |_| None).map(|w| w.0),
            Some(Work::PiPart {
                x: 100_000_000_000_000,
                k: 4,
                part: 12
            })
        );
        assert!(p.work(13, |_| None).is_none());
        // A lower bound below 10^13 is one π task after the parts; above, parts too.
        let p = count(1_000, 1_000_000_000_000_000);
        assert_eq!(p.tasks(), 25 + 1);
        assert_eq!(p.work(25, |_| None).map(|w| w.0), Some(Work::Pi { x: 999 }));
        let p = count(500_000_000_000_001, 1_000_000_000_000_000);
        assert_eq!(p.tasks(), 25 + 13);
        assert_eq!(
            p.work(37, |_| None).map(|w| w.0),
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
        assert!(matches!(
            count(1_000_000_000_000_000, 1_000_001_000_000_000),
            Plan::Segments { list: false, .. }
        ));
        assert!(matches!(
            count(1_000_000_000_000, 1_010_000_000_000),
            Plan::Pi { .. }
        ));
        // 10^10 numbers near 10^15: π(B) − π(A − 1) by parts (2 x 1.2 s of π, one thread,
        // against ~4.5 s of the bucket sieve; the plain sieve took 78 s).
        let p = count(1_000_000_000_000_000, 1_000_010_000_000_000);
        assert!(matches!(p, Plan::PiParts { .. }), "{p:?}");
        // Near 2^64 the bucket sieve pays ~3 s per task: 2^32 numbers make two tasks,
        // not 64; a short range keeps the narrow tasks (the plain sieve).
        let p = count(u64::MAX - (1 << 32) + 1, u64::MAX);
        assert!(
            matches!(&p, Plan::Segments { list: false, segs } if segs.len() == 2),
            "{p:?}"
        );
        let p = count(u64::MAX - (1 << 28) + 1, u64::MAX);
        assert!(
            matches!(&p, Plan::Segments { list: false, segs } if segs.len() == 16),
            "{p:?}"
        );
    }

    /// nth by parts: the parts of π at the estimate, then the sieve task that waits for
    /// them and is given π(x) from their answers.
    #[test]
    fn nth_plan_waits_for_the_parts_of_pi() {
        let p = Plan::of(
            JobSpec::Nth {
                n: 1_000_000_000_000,
            },
            PRIMES_SEGMENT,
        );
        let Plan::NthParts { n, x } = p else {
            panic!("not by parts: {p:?}");
        };
        assert_eq!(n, 1_000_000_000_000);
        assert_eq!(p.tasks(), 14);
        assert_eq!(p.children(13), (0..13).collect::<Vec<_>>());
        assert!((0..13).all(|t| p.parent(t) == Some(13) && p.children(t).is_empty()));
        assert_eq!(p.parent(13), None);
        // Not all parts answered: nothing to run yet.
        assert!(p
            .work(13, |t| (t < 12).then(|| "e:0".to_string()))
            .is_none());
        // The real parts' answers give π(x).
        let ctx = worker::gen::lmo::Context::new(x);
        let answers: Vec<String> = ctx.parts(4).iter().map(|q| ctx.run(q).encode()).collect();
        let pi = worker::gen::pi::prime_pi(x);
        assert_eq!(
            p.work(13, |t| answers.get(t).cloned()).map(|w| w.0),
            Some(Work::NthNear { n, x, pi })
        );
        // Answers that do not combine: the whole n-th prime in one task instead.
        assert_eq!(
            p.work(13, |_| Some("e:1".to_string())).map(|w| w.0),
            Some(Work::Nth { n })
        );
        // Small n: one task, as before.
        assert_eq!(
            Plan::of(JobSpec::Nth { n: 1000 }, PRIMES_SEGMENT),
            Plan::Nth { n: 1000 }
        );
    }
}
