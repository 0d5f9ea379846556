//! The coordinator's decisions, without I/O: files and their chunks, workers, assignments,
//! failure detection, retries, and what becomes durable when. The async shell (`server`)
//! feeds it events with the current time and performs the [`Action`]s it returns, so every
//! transition is testable without sockets or clocks.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use proto::msg::{Assignment, CoordMsg, InvalidLine, TaskDone, WorkerMsg};
use serde::{Deserialize, Serialize};

use crate::ranges::{Finished, Run};

/// The time, as the core sees it: monotonic milliseconds for timeouts, wall clock for reports.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Now {
    pub ms: u64,
    pub wall: DateTime<Utc>,
}

/// What identifies a version of an input file cheaply (size, mtime, ctime, inode).
pub use proto::files::Fingerprint;

/// Scheduling settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CoreConfig {
    pub heartbeat_ms: u64,
    /// A worker silent for `heartbeat_ms * missed_heartbeats` is declared dead.
    pub missed_heartbeats: u32,
    /// Assignments a worker holds at once (the next is queued on the worker so it never idles
    /// waiting for a round trip).
    pub max_inflight: usize,
    /// A worker may hold up to [`SMALL_INFLIGHT_FACTOR`] x `max_inflight` assignments while
    /// they add up to less than this many bytes (0: never more than `max_inflight`).
    pub small_inflight_bytes: u64,
    /// Failures of one chunk before it is given up and reported.
    pub max_failures: u32,
    /// Files larger than this are split into chunks of about this size.
    pub chunk_bytes: u64,
    /// Pause before a failed chunk is retried, times the number of failures so far.
    pub retry_ms: u64,
    /// A file reported `failed` (its chunks failed `max_failures` times, e.g. while every
    /// file server was down) is tried again after this pause, doubled after every failed
    /// round up to [`MAX_FAILED_RETRY_MS`]: the cause may have gone.
    pub failed_retry_ms: u64,
    /// The group term this coordinator leads (a replicated group), told to workers.
    #[serde(default)]
    pub term: Option<u64>,
}

/// Longest pause between two rounds of a failed file (30 min).
pub const MAX_FAILED_RETRY_MS: u64 = 30 * 60 * 1000;

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send(u64, CoordMsg),
    Close(u64, String),
    WriteReport(Report),
    /// Write a generation job's report (and a factorial's value).
    WriteJobReport(Box<JobReport>),
}

/// Where one chunk stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ChunkState {
    Queued {
        ready_ms: u64,
    },
    Assigned {
        attempt: String,
        worker: String,
    },
    /// Its worker finished; its primes are in the flush buffer, not yet durable.
    Flushing {
        result: TaskDone,
        worker: String,
    },
    Done {
        result: TaskDone,
        worker: String,
    },
    Failed {
        reason: String,
    },
}

/// One input the core tracks, from queued to reported: a version of a file, or a generation
/// job ([`Key`]), with its chunks (a generation job's tasks).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tracked {
    gen: u64,
    fp: Fingerprint,
    chunks: Vec<ChunkState>,
    failures: Vec<u32>,
    started_at: Option<DateTime<Utc>>,
    /// A report exists for this version (found at start, or written): nothing to do,
    /// unless it says failed and `retry_at_ms` comes.
    reported: bool,
    /// Rounds that ended in a failed report (the backoff's exponent).
    failed_rounds: u32,
    /// When a failed file is tried again.
    retry_at_ms: Option<u64>,
    /// Chunks and numbers of the file's report (for status totals across sessions).
    reported_chunks: usize,
    reported_numbers: u64,
    /// Why the report could not be written (e.g. its name is taken by a folder): the file
    /// counts as failed, never done, and the write is tried again with the failed files.
    report_error: Option<String>,
    /// The report is on disk (status calls a file done only then: a crash before the
    /// write means the file is processed again).
    report_written: bool,
    /// A generation job's plan (None for an input file).
    work: Option<Box<GenJob>>,
    /// A job without a plan (done in an earlier session, or invalid), as status shows it.
    shown: Option<Box<JobStatus>>,
    /// The content version its report gives (a file reported in an earlier session).
    reported_version: Option<String>,
}

impl Tracked {
    /// A job for version `fp` of a file with these chunks, none failed, no report.
    fn new(
        gen: u64,
        fp: Fingerprint,
        chunks: Vec<ChunkState>,
        started_at: Option<DateTime<Utc>>,
    ) -> Self {
        Tracked {
            gen,
            fp,
            failures: vec![0; chunks.len()],
            chunks,
            started_at,
            reported: false,
            failed_rounds: 0,
            retry_at_ms: None,
            reported_chunks: 0,
            reported_numbers: 0,
            report_error: None,
            report_written: false,
            work: None,
            shown: None,
            reported_version: None,
        }
    }

    /// A round of the file ended failed: it is tried again after the failed-file pause,
    /// doubled after each failed round, up to [`MAX_FAILED_RETRY_MS`].
    fn failed_round(&mut self, failed_retry_ms: u64, now: Now) {
        let pause = failed_retry_ms
            .saturating_mul(1 << self.failed_rounds.min(16))
            .min(MAX_FAILED_RETRY_MS);
        self.failed_rounds += 1;
        self.retry_at_ms = Some(now.ms + pause);
    }

    fn complete(&self) -> bool {
        self.chunks
            .iter()
            .all(|c| matches!(c, ChunkState::Done { .. } | ChunkState::Failed { .. }))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Worker {
    conn: Option<u64>,
    last_seen_ms: u64,
    joined: DateTime<Utc>,
    /// Attempts it holds, with the bytes of each one's chunk.
    assigned: Vec<(String, u64)>,
    tasks_done: u64,
    numbers: u64,
    /// From the last heartbeat: bytes done and total of the tasks being tested.
    progress: (u64, u64),
    /// Testing threads the worker registered with: it works on that many tasks at once,
    /// so it may hold that many times the in-flight limits.
    threads: usize,
    /// The worker process holding the id (random per process).
    instance: u64,
}

/// One chunk of one version of a file (or one task of a generation job): the entry, the
/// generation of its version (a changed file gets a new one, so keys of the old version
/// match nothing), and the chunk's index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkKey {
    /// The entry (written `file`, as it was when only files had chunks).
    #[serde(rename = "file")]
    pub key: Key,
    pub gen: u64,
    pub chunk: u32,
}

impl ChunkKey {
    pub fn new(key: &Key, gen: u64, chunk: u32) -> Self {
        ChunkKey {
            key: key.clone(),
            gen,
            chunk,
        }
    }
}

/// A flush batch: primes and completions waiting for the flusher.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlushBatch {
    #[serde(with = "crate::compact")]
    pub small: Vec<u64>,
    pub big: Vec<String>,
    /// Primes of `primes` job segments, by segment, in arrival order (deduplicated by
    /// intervals, never held in the dedup set: [`crate::ranges`]).
    pub runs: Vec<Run>,
    /// Generation tasks finished (but products): recorded in the ledger once their results
    /// (a `primes` segment's primes) are durable.
    pub finished: Vec<Finished>,
    /// Chunks whose primes are all in `small`/`big`/`runs` (or already durable).
    pub done: Vec<ChunkKey>,
}

impl FlushBatch {
    /// True if there is nothing to flush.
    pub fn is_empty(&self) -> bool {
        self.small.is_empty()
            && self.big.is_empty()
            && self.runs.is_empty()
            && self.finished.is_empty()
            && self.done.is_empty()
    }

    /// Puts `later` after what this holds (order matters for runs: a segment's primes must
    /// reach the flusher in the order they were sent).
    pub fn extend(&mut self, later: FlushBatch) {
        self.small.extend(later.small);
        self.big.extend(later.big);
        for run in later.runs {
            self.push_run(run.lo, run.hi, run.primes);
        }
        self.finished.extend(later.finished);
        self.done.extend(later.done);
    }

    /// Appends primes of segment `[lo, hi]` (to the last run if it is the same segment's).
    pub fn push_run(&mut self, lo: u64, hi: u64, primes: Vec<u64>) {
        match self.runs.last_mut() {
            Some(r) if (r.lo, r.hi) == (lo, hi) => r.primes.extend(primes),
            _ => self.runs.push(Run { lo, hi, primes }),
        }
    }
}

/// Counters for status.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Totals {
    pub numbers_tested: u64,
    pub primes_received: u64,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    pub workers_lost: u64,
    pub stale_messages_ignored: u64,
}

/// Serializable whole (a replica's state-machine snapshot): a replica restored from it and
/// fed the same events decides as the original.
#[derive(Serialize, Deserialize)]
pub struct Core {
    cfg: CoreConfig,
    session: String,
    next_attempt: u64,
    next_gen: u64,
    jobs: BTreeMap<Key, Tracked>,
    queue: VecDeque<ChunkKey>,
    attempts: HashMap<String, ChunkKey>,
    workers: BTreeMap<String, Worker>,
    conns: HashMap<u64, String>,
    pending: FlushBatch,
    /// Generation tasks whose results are durable (the ledger, and those finished since),
    /// with their results: a job meeting the same work again does not compute it again.
    #[serde(with = "as_pairs")]
    done_work: HashMap<proto::msg::Work, (TaskDone, String)>,
    /// Segment primes handed to the flusher and not yet reported flushed.
    in_flush: usize,
    /// A `primes` segment was held back by the backlog: assign again after a flush.
    held_back: bool,
    pub totals: Totals,
    /// When [`Core::tick`] last ran: a much longer gap means the coordinator itself was not
    /// running (SIGSTOP, a VM pause, swap), which says nothing about the workers.
    last_tick_ms: Option<u64>,
}

impl Core {
    pub fn new(cfg: CoreConfig, session: String) -> Self {
        Core {
            cfg,
            session,
            next_attempt: 0,
            next_gen: 0,
            jobs: BTreeMap::new(),
            queue: VecDeque::new(),
            attempts: HashMap::new(),
            workers: BTreeMap::new(),
            conns: HashMap::new(),
            pending: FlushBatch::default(),
            done_work: HashMap::new(),
            in_flush: 0,
            held_back: false,
            totals: Totals::default(),
            last_tick_ms: None,
        }
    }

    /// How often the shell must call [`Core::tick`]: a few times per heartbeat, so a silent
    /// worker is noticed soon after its limit, and at least every 0.5 s (retry pauses).
    pub fn tick_period_ms(&self) -> u64 {
        (self.cfg.heartbeat_ms / 4).clamp(20, 500)
    }

    /// The fingerprint of the version of `key` the core tracks, if any.
    pub fn known(&self, key: &Key) -> Option<Fingerprint> {
        self.jobs.get(key).map(|j| j.fp)
    }

    /// The content version of the version of `key` the coordinator knows (what its workers
    /// read, or what its report says), if known.
    pub fn content_version(&self, key: &Key) -> Option<String> {
        let job = self.jobs.get(key)?;
        job.chunks
            .iter()
            .find_map(|c| match c {
                ChunkState::Done { result, .. } | ChunkState::Flushing { result, .. }
                    if !result.version.is_empty() =>
                {
                    Some(result.version.clone())
                }
                _ => None,
            })
            .or_else(|| job.reported_version.clone())
    }

    /// Records the content version the report of `file` gives (start-up).
    pub fn set_reported_version(&mut self, file: &str, version: String) {
        if let Some(j) = self.jobs.get_mut(&Key::file(file)) {
            j.reported_version = Some(version);
        }
    }

    /// The fingerprint to take for `file` as a file server lists it: its own, unless the
    /// coordinator knows the file under another fingerprint with the same content version
    /// (another server's copy: its mtime and inode are that server's), then the known one,
    /// so that a listing failing over to a backup does not make every file look changed.
    pub fn identify(&self, file: &str, fp: Fingerprint, version: Option<&str>) -> Fingerprint {
        let key = Key::file(file);
        match (self.known(&key), version) {
            (Some(k), Some(v))
                if k != fp
                    && k.size == fp.size
                    && self.content_version(&key).as_deref() == Some(v) =>
            {
                k
            }
            _ => fp,
        }
    }

    /// True if `key` has work not finished yet (queued, running, or waiting to be flushed).
    pub fn in_progress(&self, key: &Key) -> bool {
        self.jobs.get(key).is_some_and(|j| !j.reported)
    }

    /// Registered connections and their workers (the channels a snapshot records).
    pub fn connections(&self) -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = self.conns.iter().map(|(c, w)| (*c, w.clone())).collect();
        v.sort();
        v
    }

    /// A file whose `done` report for this fingerprint already exists: nothing to queue.
    /// `chunks` and `numbers` come from the report, for the status totals.
    pub fn file_reported(&mut self, file: &str, fp: Fingerprint, chunks: usize, numbers: u64) {
        self.reported_entry(Key::file(file), fp, chunks, numbers);
    }

    /// An entry (a file, a job) whose report for this fingerprint already exists.
    fn reported_entry(&mut self, key: Key, fp: Fingerprint, chunks: usize, numbers: u64) {
        self.next_gen += 1;
        self.jobs.insert(
            key,
            Tracked {
                reported: true,
                reported_chunks: chunks,
                reported_numbers: numbers,
                report_written: true,
                ..Tracked::new(self.next_gen, fp, Vec::new(), None)
            },
        );
    }

    /// A file (new or changed) is stable and must be processed.
    pub fn file_ready(&mut self, file: &str, fp: Fingerprint, now: Now) -> Vec<Action> {
        let key = Key::file(file);
        if self.jobs.get(&key).is_some_and(|j| j.fp == fp) {
            return Vec::new();
        }
        let mut actions = self.drop_entry(&key);
        self.next_gen += 1;
        let gen = self.next_gen;
        let chunks = chunk_count(fp.size, self.cfg.chunk_bytes);
        for c in 0..chunks as u32 {
            self.queue.push_back(ChunkKey::new(&key, gen, c));
        }
        self.jobs.insert(
            key,
            Tracked::new(
                gen,
                fp,
                vec![ChunkState::Queued { ready_ms: now.ms }; chunks],
                None,
            ),
        );
        actions.extend(self.assign(now));
        actions
    }

    /// A file vanished: forget it (its queued chunks go; running attempts are cancelled).
    pub fn file_removed(&mut self, file: &str) -> Vec<Action> {
        self.drop_entry(&Key::file(file))
    }

    /// A job file vanished: forget the job, as [`Core::file_removed`] a file.
    pub fn job_removed(&mut self, name: &str) -> Vec<Action> {
        self.drop_entry(&Key::job(name))
    }

    /// Forgets `key` (its queued chunks go; running attempts are cancelled).
    fn drop_entry(&mut self, key: &Key) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(job) = self.jobs.remove(key) {
            for c in job.chunks {
                if let ChunkState::Assigned { attempt, worker } = c {
                    self.attempts.remove(&attempt);
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.assigned.retain(|(a, _)| *a != attempt);
                        if let Some(conn) = w.conn {
                            actions.push(Action::Send(conn, CoordMsg::Cancel { attempt }));
                        }
                    }
                }
            }
        }
        actions
    }

    /// A connection registered as `worker_id` (tests: one thread, instance 0).
    pub fn register(&mut self, conn: u64, worker_id: &str, now: Now) -> Vec<Action> {
        self.register_with_threads(conn, worker_id, 1, 0, now)
    }

    /// A connection registered as `worker_id`, a process (`instance`) that tests `threads`
    /// tasks at once.
    ///
    /// An id is one worker: while a live connection holds it, another process registering
    /// with it is refused for good (two processes sharing an id would replace each other's
    /// connection forever). The same process reconnecting (same instance), or any process
    /// once the old connection has been silent past the heartbeat limit, replaces the old
    /// connection, whose tasks are requeued.
    pub fn register_with_threads(
        &mut self,
        conn: u64,
        worker_id: &str,
        threads: u32,
        instance: u64,
        now: Now,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(old) = self
            .workers
            .get(worker_id)
            .filter(|w| w.conn.is_some_and(|c| c != conn))
        {
            let limit = self.cfg.heartbeat_ms * self.cfg.missed_heartbeats as u64;
            let silent = now.ms.saturating_sub(old.last_seen_ms) > limit;
            if old.instance != instance && !silent {
                let reason = format!(
                    "worker id {worker_id:?} is already in use by a connected worker (joined {}); \
                     give this one another --id",
                    old.joined.to_rfc3339()
                );
                return vec![
                    Action::Send(
                        conn,
                        CoordMsg::Refused {
                            reason: reason.clone(),
                        },
                    ),
                    Action::Close(conn, reason),
                ];
            }
            if let Some(old_conn) = old.conn {
                actions.push(Action::Close(
                    old_conn,
                    format!("{worker_id} reconnected on a new connection"),
                ));
            }
            actions.extend(self.lose_worker(worker_id, now, false));
        }
        let w = self.workers.entry(worker_id.to_string()).or_insert(Worker {
            conn: None,
            last_seen_ms: now.ms,
            joined: now.wall,
            assigned: Vec::new(),
            tasks_done: 0,
            numbers: 0,
            progress: (0, 0),
            threads: 1,
            instance,
        });
        // A worker claiming absurd parallelism must not drain the whole queue.
        w.threads = (threads as usize).clamp(1, 64);
        w.instance = instance;
        w.conn = Some(conn);
        w.last_seen_ms = now.ms;
        self.conns.insert(conn, worker_id.to_string());
        actions.push(Action::Send(
            conn,
            CoordMsg::Welcome {
                session: self.session.clone(),
                heartbeat_ms: self.cfg.heartbeat_ms,
                term: self.cfg.term,
            },
        ));
        actions.extend(self.assign(now));
        actions
    }

    /// The worker behind `conn`, if registered.
    pub fn worker_of(&self, conn: u64) -> Option<&str> {
        self.conns.get(&conn).map(|s| s.as_str())
    }

    /// True if `attempt` is the live attempt of a chunk, held by the worker on `conn`.
    fn current(&self, conn: u64, attempt: &str) -> Option<ChunkKey> {
        let worker = self.conns.get(&conn)?;
        let key = self.attempts.get(attempt)?;
        let job = self.jobs.get(&key.key)?;
        match job.chunks.get(key.chunk as usize)? {
            ChunkState::Assigned {
                attempt: a,
                worker: w,
            } if a == attempt && w == worker && job.gen == key.gen => Some(key.clone()),
            _ => None,
        }
    }

    /// A message from a registered worker.
    pub fn message(&mut self, conn: u64, msg: WorkerMsg, now: Now) -> Vec<Action> {
        let Some(worker) = self.conns.get(&conn).cloned() else {
            return vec![Action::Close(conn, "message before register".into())];
        };
        if let Some(w) = self.workers.get_mut(&worker) {
            w.last_seen_ms = now.ms;
        }
        match msg {
            WorkerMsg::Heartbeat {
                bytes_done,
                bytes_total,
                ..
            } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.progress = (bytes_done, bytes_total);
                }
                Vec::new()
            }
            WorkerMsg::Primes {
                attempt,
                small,
                big,
            } => {
                if let Some(why) = bad_batch(&small, &big) {
                    let mut a = vec![Action::Close(
                        conn,
                        format!("rejected a primes message: {why}"),
                    )];
                    a.extend(self.disconnected(conn, now));
                    return a;
                }
                let Some(key) = self.current(conn, &attempt) else {
                    self.totals.stale_messages_ignored += 1;
                    return Vec::new();
                };
                let segment = self.plan_of(&key).and_then(|p| p.list_segment(key.chunk));
                if let Some(why) = segment.and_then(|(lo, hi)| gen::bad_run(lo, hi, &small, &big)) {
                    let mut a = vec![Action::Close(
                        conn,
                        format!("rejected a primes message: {why}"),
                    )];
                    a.extend(self.disconnected(conn, now));
                    return a;
                }
                self.totals.primes_received += (small.len() + big.len()) as u64;
                match segment {
                    Some((lo, hi)) => self.pending.push_run(lo, hi, small),
                    None => {
                        self.pending.small.extend(small);
                        self.pending.big.extend(big);
                    }
                }
                Vec::new()
            }
            WorkerMsg::TaskDone(done) => {
                let Some(key) = self.current(conn, &done.attempt) else {
                    self.totals.stale_messages_ignored += 1;
                    return Vec::new();
                };
                self.attempts.remove(&done.attempt);
                self.totals.tasks_done += 1;
                self.totals.numbers_tested += done.numbers;
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.assigned.retain(|(a, _)| *a != done.attempt);
                    w.tasks_done += 1;
                    w.numbers += done.numbers;
                }
                if let Some(work) = self.plan_of(&key).and_then(|p| p.recorded_work(key.chunk)) {
                    self.pending.finished.push(Finished {
                        work,
                        worker: worker.clone(),
                        result: done.clone(),
                    });
                }
                if let Some(job) = self.jobs.get_mut(&key.key) {
                    job.chunks[key.chunk as usize] = ChunkState::Flushing {
                        result: done,
                        worker: worker.clone(),
                    };
                }
                self.pending.done.push(key);
                self.assign(now)
            }
            WorkerMsg::TaskFailed {
                attempt,
                reason,
                retryable,
            } => {
                let Some(ChunkKey { key, chunk, .. }) = self.current(conn, &attempt) else {
                    self.totals.stale_messages_ignored += 1;
                    return Vec::new();
                };
                self.attempts.remove(&attempt);
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.assigned.retain(|(a, _)| *a != attempt);
                }
                self.totals.tasks_failed += 1;
                let mut actions = self.chunk_failed(&key, chunk, reason, retryable, now);
                actions.extend(self.assign(now));
                actions
            }
            WorkerMsg::Goodbye {} => {
                let mut a = vec![Action::Close(conn, "worker said goodbye".into())];
                a.extend(self.disconnected(conn, now));
                a
            }
            WorkerMsg::Register { .. } => vec![Action::Close(conn, "registered twice".into())],
            WorkerMsg::Marker { .. } => Vec::new(), // handled by the snapshot logic in the shell
        }
    }

    /// Hands the flush buffer to the flusher.
    pub fn take_pending(&mut self) -> FlushBatch {
        let p = std::mem::take(&mut self.pending);
        self.in_flush += p.runs.iter().map(|r| r.primes.len()).sum::<usize>();
        p
    }

    /// Segment primes received and not yet durable (the buffer and the flush under way).
    pub fn backlog(&self) -> usize {
        self.in_flush
            + self
                .pending
                .runs
                .iter()
                .map(|r| r.primes.len())
                .sum::<usize>()
    }

    /// The flusher made `done`'s primes durable: those chunks are done; files whose chunks
    /// are all done get their report.
    pub fn flushed(&mut self, done: Vec<ChunkKey>, now: Now) -> Vec<Action> {
        self.in_flush = 0;
        let mut files = BTreeSet::new();
        let mut job_tasks: BTreeMap<Key, Vec<u32>> = BTreeMap::new();
        for ChunkKey { key, gen, chunk } in done {
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            if job.gen != gen {
                continue;
            }
            let c = &mut job.chunks[chunk as usize];
            if let ChunkState::Flushing { result, worker } = c.clone() {
                if let Some(w) = job.work.as_ref().and_then(|g| g.plan.recorded_work(chunk)) {
                    self.done_work.insert(w, (result.clone(), worker.clone()));
                }
                *c = ChunkState::Done { result, worker };
                if job.work.is_some() {
                    job_tasks.entry(key.clone()).or_default().push(chunk);
                }
                files.insert(key);
            }
        }
        let woke = !job_tasks.is_empty() || std::mem::take(&mut self.held_back);
        for (key, tasks) in job_tasks {
            self.wake_parents(&key, &tasks, now);
        }
        let mut actions: Vec<Action> = files
            .into_iter()
            .filter_map(|f| self.maybe_report(&f, now))
            .collect();
        if woke {
            actions.extend(self.assign(now));
        }
        actions
    }
}

/// A map with keys JSON cannot take as object keys, (de)serialized as a list of pairs.
mod as_pairs {
    use std::collections::HashMap;
    use std::hash::Hash;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        m: &HashMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<HashMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

mod assign;
mod failures;
pub mod gen;
mod key;
mod record;
mod report;
mod status;

pub use assign::{bad_batch, chunk_count, chunk_range, SMALL_INFLIGHT_FACTOR};
pub use gen::{GenJob, JobReport, Plan};
pub use key::Key;
pub use record::{CoordState, FileState};
pub use report::{InvalidSummary, Report, ReportStatus};
pub use status::{FileProgress, FileStatus, JobStatus, StatusView, WorkerLink, WorkerStatus};

#[cfg(test)]
mod tests;
