//! Generation jobs (`data/jobs/<name>.job`) in the core: a job is kept like a file (its
//! tasks are its chunks: queued, assigned, flushing, done, in the snapshots too), under its
//! own kind of key ([`Key::Job`]), with the plan its kind made (`worker::kinds`: what each
//! task computes, which tasks wait for which, how their answers combine into the report).
//! Nothing here names a kind.

use std::sync::Arc;

use proto::jobs::JobSpec;
use proto::msg::Work;
use worker::kinds;

use super::*;

/// Numbers per segment of a `primes` job by default (about 600,000 primes at 10^12, 5 MB
/// held by the coordinator until durable; `coordinator --segment-numbers`). Measured on
/// [10^12, 10^12 + 10^9]: as fast end to end as 2^26, with a lower peak memory
/// (BENCHMARKS.md).
pub const PRIMES_SEGMENT: u64 = 1 << 24;

/// What a job's tasks are, as its kind planned them ([`worker::kinds::Plan`]; shared, so
/// a clone of the core costs nothing per job).
#[derive(Clone)]
pub struct Plan(Arc<dyn kinds::Plan>);

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Plan {
    /// The plan of `spec`, with range segments of `segment` numbers.
    pub fn of(spec: &JobSpec, segment: u64) -> Result<Plan, String> {
        kinds::plan(spec, segment).map(|p| Plan(Arc::from(p)))
    }

    /// The segment `[lo, hi]` of task `t` if it lists primes (a `primes` job).
    pub fn list_segment(&self, t: u32) -> Option<(u64, u64)> {
        self.0.list_segment(t as usize)
    }

    /// What task `t` computes if the ledger records it when done (every generation task
    /// but those whose kind says their answers are of no use to another job: products).
    pub fn recorded_work(&self, t: u32) -> Option<Work> {
        if !self.0.recorded(t as usize) {
            return None;
        }
        self.work(t as usize, |_| None).map(|(w, _)| w)
    }

    pub fn tasks(&self) -> usize {
        self.0.tasks()
    }

    /// The tasks whose answers task `t` needs.
    pub fn children(&self, t: usize) -> Vec<usize> {
        self.0.children(t)
    }

    /// The task that needs task `t`'s answer (see [`Plan::children`]).
    pub fn parent(&self, t: usize) -> Option<usize> {
        self.0.parent(t)
    }

    /// What task `t` computes, and how much work it is (numbers, for progress); None while
    /// an answer it needs is not known (`answers` gives the done tasks' answers).
    pub fn work(&self, t: usize, answers: impl Fn(usize) -> Option<String>) -> Option<(Work, u64)> {
        self.0.work(t, &answers)
    }

    /// The report's findings from all tasks' results, in order.
    pub fn outcome(&self, results: &[&TaskDone]) -> Result<kinds::Outcome, String> {
        self.0.outcome(results)
    }
}

/// A generation job's plan. Serialized as its name, spec and segment width: the plan is a
/// pure function of them ([`worker::kinds::Kind::plan`]), so a restored core plans again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "GenJobWire", into = "GenJobWire")]
pub struct GenJob {
    pub name: String,
    pub spec: JobSpec,
    /// Numbers per range segment the plan was made with (`--segment-numbers`).
    pub segment: u64,
    pub plan: Plan,
}

impl GenJob {
    /// Job `name` of `spec`, planned with range segments of `segment` numbers; the error
    /// says why the spec cannot be planned.
    pub fn new(name: String, spec: JobSpec, segment: u64) -> Result<GenJob, String> {
        let plan = Plan::of(&spec, segment)?;
        Ok(GenJob {
            name,
            spec,
            segment,
            plan,
        })
    }
}

impl PartialEq for GenJob {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, &self.spec, self.segment) == (&other.name, &other.spec, other.segment)
    }
}

#[derive(Serialize, Deserialize)]
struct GenJobWire {
    name: String,
    spec: JobSpec,
    segment: u64,
}

impl From<GenJob> for GenJobWire {
    fn from(j: GenJob) -> Self {
        GenJobWire {
            name: j.name,
            spec: j.spec,
            segment: j.segment,
        }
    }
}

impl TryFrom<GenJobWire> for GenJob {
    type Error = String;
    fn try_from(w: GenJobWire) -> Result<Self, String> {
        GenJob::new(w.name, w.spec, w.segment)
    }
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
        Some(&self.jobs.get(&key.key)?.work.as_ref()?.plan)
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
        let key = Key::job(job.name.as_str());
        if self.jobs.get(&key).is_some_and(|j| j.fp == fp) {
            return Vec::new();
        }
        let mut actions = self.drop_entry(&key);
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
        let mut j = Tracked::new(gen, fp, chunks, None);
        j.work = Some(Box::new(job));
        self.jobs.insert(key.clone(), j);
        actions.extend(self.maybe_report(&key, now));
        actions.extend(self.assign(now));
        actions
    }

    /// Makes the job restored under `key` (from a snapshot) a generation job with `job`'s
    /// plan.
    pub fn attach_plan(&mut self, key: &Key, job: GenJob) {
        if let Some(j) = self.jobs.get_mut(key) {
            j.work = Some(Box::new(job));
        }
    }

    /// A job file whose report (`done`, or `invalid` for this version) exists: nothing to
    /// do; status shows it as the report says.
    pub fn job_reported(&mut self, name: &str, fp: Fingerprint, report: &JobReport) {
        let key = Key::job(name);
        self.reported_entry(key.clone(), fp, 0, 0);
        if let Some(j) = self.jobs.get_mut(&key) {
            j.shown = Some(Box::new(JobStatus {
                job: name.to_string(),
                line: report.spec.as_ref().map(|s| s.line()).unwrap_or_default(),
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
        let key = Key::job(name);
        if self.jobs.get(&key).is_some_and(|j| j.fp == fp) {
            return Vec::new();
        }
        let mut actions = self.drop_entry(&key);
        self.next_gen += 1;
        let mut j = Tracked::new(self.next_gen, fp, Vec::new(), Some(now.wall));
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
    pub(super) fn wake_parents(&mut self, key: &Key, done: &[u32], now: Now) {
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
    pub(super) fn job_report(&mut self, key: &Key, now: Now) -> Option<Action> {
        let job = self.jobs.get_mut(key)?;
        let work = job.work.as_ref()?;
        let mut r = JobReport::new(
            &work.name,
            Some(work.spec.clone()),
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
            let results: Vec<&TaskDone> = answers.iter().flatten().copied().collect();
            match work.plan.outcome(&results) {
                Ok(o) => {
                    r.answer = o.answer;
                    r.count = o.count;
                    r.first_prime = o.first_prime;
                    r.last_prime = o.last_prime;
                    if o.value.is_some() {
                        r.value_file = Some(format!("{}.txt", work.name));
                        r.value = o.value;
                    }
                }
                Err(e) => {
                    r.status = "failed".into();
                    r.errors.push(e);
                }
            }
        }
        if r.status != "done" {
            job.failed_round(self.cfg.failed_retry_ms, now);
        }
        Some(Action::WriteJobReport(Box::new(r)))
    }
}

/// `ready_ms` of a product task whose factors are not all known yet (never assigned until
/// `Core::wake_parents` queues it).
pub const WAITING: u64 = u64::MAX;
