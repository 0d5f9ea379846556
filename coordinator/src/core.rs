//! The coordinator's decisions, without I/O: files and their chunks, workers, assignments,
//! failure detection, retries, and what becomes durable when. The async shell (`server`)
//! feeds it events with the current time and performs the [`Action`]s it returns, so every
//! transition is testable without sockets or clocks.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use proto::msg::{Assignment, CoordMsg, InvalidLine, TaskDone, WorkerMsg};
use serde::{Deserialize, Serialize};

/// Why a `primes` message must be refused, if it must: over the batch limit, or a big prime
/// that is not canonical decimal of 2^64 or more (anything else could corrupt primes.txt —
/// a newline inside a string would write two lines).
pub fn bad_batch(small: &[u64], big: &[String]) -> Option<String> {
    let n = small.len() + big.len();
    if n > proto::msg::MAX_PRIMES_PER_BATCH {
        return Some(format!(
            "{n} primes in one message, the limit is {}",
            proto::msg::MAX_PRIMES_PER_BATCH
        ));
    }
    for b in big {
        let canonical = (20..=1234).contains(&b.len())
            && b.bytes().all(|c| c.is_ascii_digit())
            && !b.starts_with('0')
            && (b.len() > 20 || b.as_str() > "18446744073709551615");
        if !canonical {
            let shown: String = b.chars().take(40).collect();
            return Some(format!(
                "{shown:?} is not the canonical decimal of a number of 2^64 or more"
            ));
        }
    }
    None
}

/// A worker may hold this many times `max_inflight` assignments while they are small (see
/// [`CoreConfig::small_inflight_bytes`]).
pub const SMALL_INFLIGHT_FACTOR: usize = 4;

/// How many chunks a file of `size` bytes is cut into: the nearest whole number of
/// `chunk_bytes` pieces, at least one, so that no chunk is a sliver (a 64 MiB + 18 byte file
/// is one chunk, not two).
pub fn chunk_count(size: u64, chunk_bytes: u64) -> usize {
    let c = chunk_bytes.max(1);
    (size.saturating_add(c / 2) / c).max(1) as usize
}

/// Byte range of chunk `i` of `n` equal chunks of a `size`-byte file (the worker moves each
/// cut to the next line start).
pub fn chunk_range(size: u64, n: u64, i: u64) -> (u64, u64) {
    let at = |k: u64| ((size as u128 * k as u128) / n.max(1) as u128) as u64;
    (at(i), at(i + 1))
}

/// The time, as the core sees it: monotonic milliseconds for timeouts, wall clock for reports.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub ms: u64,
    pub wall: DateTime<Utc>,
}

/// What identifies a version of an input file cheaply (size, mtime, ctime, inode).
pub use proto::files::Fingerprint;

/// Scheduling settings.
#[derive(Clone, Debug)]
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
}

/// Longest pause between two rounds of a failed file (30 min).
pub const MAX_FAILED_RETRY_MS: u64 = 30 * 60 * 1000;

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send(u64, CoordMsg),
    Close(u64, String),
    WriteReport(Report),
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

#[derive(Debug, Clone)]
struct Job {
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
}

impl Job {
    fn complete(&self) -> bool {
        self.chunks
            .iter()
            .all(|c| matches!(c, ChunkState::Done { .. } | ChunkState::Failed { .. }))
    }
}

#[derive(Debug, Clone)]
struct Worker {
    conn: Option<u64>,
    last_seen_ms: u64,
    joined: DateTime<Utc>,
    assigned: Vec<String>,
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

/// How a file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Every chunk was tested and its primes are durable.
    Done,
    /// Some chunk could not be processed (`errors` says why); tried again later.
    Failed,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Done => "done",
            ReportStatus::Failed => "failed",
        }
    }
}

/// The per-file report (`data/output/<file>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub file: String,
    pub status: ReportStatus,
    /// Content version(s) the workers read (xxh3-128 of the file, from the file server).
    pub content_version: Vec<String>,
    /// Size and modification time of the input when it was queued; a report whose
    /// fingerprint matches the file on disk means the file is done.
    pub source: Fingerprint,
    pub lines: u64,
    pub numbers_read: u64,
    pub blank_lines: u64,
    /// Primes found in the file, repeats counted.
    pub primes_found: u64,
    pub invalid_lines: InvalidSummary,
    pub workers: Vec<String>,
    pub chunks: usize,
    pub errors: Vec<String>,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvalidSummary {
    pub count: u64,
    /// The first few, with line numbers in the whole file.
    pub first: Vec<InvalidLine>,
}

/// One chunk of one version of a file: the file, the generation of its job (a changed
/// file gets a new one, so keys of the old version match nothing), and the chunk's index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChunkKey {
    pub file: String,
    pub gen: u64,
    pub chunk: u32,
}

impl ChunkKey {
    pub fn new(file: &str, gen: u64, chunk: u32) -> Self {
        ChunkKey {
            file: file.to_string(),
            gen,
            chunk,
        }
    }
}

/// Primes and completions waiting for the flusher.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Pending {
    pub small: Vec<u64>,
    pub big: Vec<String>,
    /// Chunks whose primes are all in `small`/`big` (or already durable).
    pub done: Vec<ChunkKey>,
}

/// Counters for status.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Totals {
    pub numbers_tested: u64,
    pub primes_received: u64,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    pub workers_lost: u64,
    pub stale_messages_ignored: u64,
}

pub struct Core {
    cfg: CoreConfig,
    session: String,
    next_attempt: u64,
    next_gen: u64,
    jobs: BTreeMap<String, Job>,
    queue: VecDeque<ChunkKey>,
    attempts: HashMap<String, ChunkKey>,
    workers: BTreeMap<String, Worker>,
    conns: HashMap<u64, String>,
    pending: Pending,
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
            pending: Pending::default(),
            totals: Totals::default(),
            last_tick_ms: None,
        }
    }

    /// How often the shell must call [`Core::tick`]: a few times per heartbeat, so a silent
    /// worker is noticed soon after its limit, and at least every 0.5 s (retry pauses).
    pub fn tick_period_ms(&self) -> u64 {
        (self.cfg.heartbeat_ms / 4).clamp(20, 500)
    }

    /// The fingerprint of the job for `file`, if any.
    pub fn known(&self, file: &str) -> Option<Fingerprint> {
        self.jobs.get(file).map(|j| j.fp)
    }

    /// True if `file` has work not finished yet (queued, running, or waiting to be flushed).
    pub fn in_progress(&self, file: &str) -> bool {
        self.jobs.get(file).is_some_and(|j| !j.reported)
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
        self.next_gen += 1;
        self.jobs.insert(
            file.to_string(),
            Job {
                gen: self.next_gen,
                fp,
                chunks: Vec::new(),
                failures: Vec::new(),
                started_at: None,
                reported: true,
                failed_rounds: 0,
                retry_at_ms: None,
                reported_chunks: chunks,
                reported_numbers: numbers,
                report_error: None,
            },
        );
    }

    /// A file (new or changed) is stable and must be processed.
    pub fn file_ready(&mut self, file: &str, fp: Fingerprint, now: Now) -> Vec<Action> {
        if self.jobs.get(file).is_some_and(|j| j.fp == fp) {
            return Vec::new();
        }
        let mut actions = self.drop_job(file);
        self.next_gen += 1;
        let gen = self.next_gen;
        let chunks = chunk_count(fp.size, self.cfg.chunk_bytes);
        self.jobs.insert(
            file.to_string(),
            Job {
                gen,
                fp,
                chunks: vec![ChunkState::Queued { ready_ms: now.ms }; chunks],
                failures: vec![0; chunks],
                started_at: None,
                reported: false,
                failed_rounds: 0,
                retry_at_ms: None,
                reported_chunks: 0,
                reported_numbers: 0,
                report_error: None,
            },
        );
        for c in 0..chunks as u32 {
            self.queue.push_back(ChunkKey::new(file, gen, c));
        }
        actions.extend(self.assign(now));
        actions
    }

    /// A file vanished: forget it (its queued chunks go; running attempts are cancelled).
    pub fn file_removed(&mut self, file: &str) -> Vec<Action> {
        self.drop_job(file)
    }

    fn drop_job(&mut self, file: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(job) = self.jobs.remove(file) {
            for c in job.chunks {
                if let ChunkState::Assigned { attempt, worker } = c {
                    self.attempts.remove(&attempt);
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.assigned.retain(|a| *a != attempt);
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
        let job = self.jobs.get(&key.file)?;
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
                if self.current(conn, &attempt).is_none() {
                    self.totals.stale_messages_ignored += 1;
                    return Vec::new();
                }
                self.totals.primes_received += (small.len() + big.len()) as u64;
                self.pending.small.extend(small);
                self.pending.big.extend(big);
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
                    w.assigned.retain(|a| *a != done.attempt);
                    w.tasks_done += 1;
                    w.numbers += done.numbers;
                }
                if let Some(job) = self.jobs.get_mut(&key.file) {
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
                let Some(ChunkKey { file, chunk, .. }) = self.current(conn, &attempt) else {
                    self.totals.stale_messages_ignored += 1;
                    return Vec::new();
                };
                self.attempts.remove(&attempt);
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.assigned.retain(|a| *a != attempt);
                }
                self.totals.tasks_failed += 1;
                let mut actions = self.chunk_failed(&file, chunk, reason, retryable, now);
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

    fn chunk_failed(
        &mut self,
        file: &str,
        chunk: u32,
        reason: String,
        retryable: bool,
        now: Now,
    ) -> Vec<Action> {
        let Some(job) = self.jobs.get_mut(file) else {
            return Vec::new();
        };
        let i = chunk as usize;
        job.failures[i] += 1;
        if retryable && job.failures[i] < self.cfg.max_failures {
            job.chunks[i] = ChunkState::Queued {
                ready_ms: now.ms + self.cfg.retry_ms * job.failures[i] as u64,
            };
            let gen = job.gen;
            self.queue.push_back(ChunkKey::new(file, gen, chunk));
            Vec::new()
        } else {
            job.chunks[i] = ChunkState::Failed {
                reason: format!("{reason} (after {} attempts)", job.failures[i]),
            };
            self.maybe_report(file, now).into_iter().collect()
        }
    }

    /// The connection closed (or was closed): requeue the worker's chunks at once.
    pub fn disconnected(&mut self, conn: u64, now: Now) -> Vec<Action> {
        let Some(worker) = self.conns.remove(&conn) else {
            return Vec::new();
        };
        if self.workers.get(&worker).and_then(|w| w.conn) != Some(conn) {
            return Vec::new(); // an older connection of a worker that has reconnected
        }
        self.lose_worker(&worker, now, true)
    }

    fn lose_worker(&mut self, worker: &str, now: Now, count: bool) -> Vec<Action> {
        let Some(w) = self.workers.get_mut(worker) else {
            return Vec::new();
        };
        if let Some(c) = w.conn.take() {
            self.conns.remove(&c);
        }
        if count {
            self.totals.workers_lost += 1;
        }
        let attempts = std::mem::take(&mut w.assigned);
        for attempt in attempts {
            if let Some(key) = self.attempts.remove(&attempt) {
                if let Some(job) = self.jobs.get_mut(&key.file) {
                    if job.gen == key.gen {
                        job.chunks[key.chunk as usize] = ChunkState::Queued { ready_ms: now.ms };
                        // Lost work goes to the front: it is the oldest.
                        self.queue.push_front(key);
                    }
                }
            }
        }
        self.assign(now)
    }

    /// Periodic: declare silent workers dead, then hand out work.
    ///
    /// Silence is measured only over time the coordinator was running: when ticks stop for
    /// longer than a heartbeat (the coordinator was paused), the stall is credited to every
    /// worker, so that heartbeats still waiting in the sockets get read before anyone is
    /// judged. A stall of the observer is not evidence against the observed.
    pub fn tick(&mut self, now: Now) -> Vec<Action> {
        let period = self.tick_period_ms();
        if let Some(last) = self.last_tick_ms.replace(now.ms) {
            let gap = now.ms.saturating_sub(last);
            if gap > self.cfg.heartbeat_ms.max(2 * period) {
                let stall = gap - period;
                for w in self.workers.values_mut() {
                    w.last_seen_ms = (w.last_seen_ms + stall).min(now.ms);
                }
            }
        }
        let limit = self.cfg.heartbeat_ms * self.cfg.missed_heartbeats as u64;
        let dead: Vec<(String, u64)> = self
            .workers
            .iter()
            .filter_map(|(id, w)| {
                w.conn
                    .filter(|_| now.ms.saturating_sub(w.last_seen_ms) > limit)
                    .map(|c| (id.clone(), c))
            })
            .collect();
        let mut actions = Vec::new();
        for (id, conn) in dead {
            actions.push(Action::Close(
                conn,
                format!("{id} missed {} heartbeats", self.cfg.missed_heartbeats),
            ));
            actions.extend(self.lose_worker(&id, now, true));
        }
        actions.extend(self.retry_failed_files(now));
        actions.extend(self.assign(now));
        actions
    }

    /// Failed files whose pause is over get their failed chunks queued again (chunks that
    /// finished stay done: their primes are durable).
    /// A report that could not be written is written again.
    fn retry_failed_files(&mut self, now: Now) -> Vec<Action> {
        let mut rewrite = Vec::new();
        for (file, job) in self.jobs.iter_mut() {
            if job.retry_at_ms.is_none_or(|t| t > now.ms) {
                continue;
            }
            job.retry_at_ms = None;
            job.reported = false;
            if job.report_error.take().is_some() {
                rewrite.push(file.clone());
            }
            for (i, c) in job.chunks.iter_mut().enumerate() {
                if matches!(c, ChunkState::Failed { .. }) {
                    *c = ChunkState::Queued { ready_ms: now.ms };
                    job.failures[i] = 0;
                    self.queue.push_back(ChunkKey::new(file, job.gen, i as u32));
                }
            }
            tracing::info!(
                file,
                round = job.failed_rounds + 1,
                "retrying a file that failed"
            );
        }
        rewrite
            .iter()
            .filter_map(|f| self.maybe_report(f, now))
            .collect()
    }

    /// The report of `file` could not be written: the file is failed (never done), and the
    /// write is tried again after the failed-file pause (its cause, say a folder with the
    /// report's name, may be removed).
    pub fn report_write_failed(&mut self, file: &str, fp: Fingerprint, reason: String, now: Now) {
        let Some(job) = self.jobs.get_mut(file).filter(|j| j.fp == fp) else {
            return;
        };
        let pause = self
            .cfg
            .failed_retry_ms
            .saturating_mul(1 << job.failed_rounds.min(16))
            .min(MAX_FAILED_RETRY_MS);
        job.failed_rounds += 1;
        job.retry_at_ms = Some(now.ms + pause);
        job.report_error = Some(reason);
    }

    /// Whether `w` can take one more assignment: up to `max_inflight` per testing thread, or up to
    /// [`SMALL_INFLIGHT_FACTOR`] times that while what it holds is under
    /// `small_inflight_bytes` (small files: a worker holding only two of them spends its
    /// time waiting for round trips; large chunks: holding more would leave one worker with
    /// queued chunks at the end of a job while another idles).
    fn has_room(&self, w: &Worker) -> bool {
        let n = w.assigned.len();
        let limit = self.cfg.max_inflight * w.threads;
        if n < limit {
            return true;
        }
        if n >= limit * SMALL_INFLIGHT_FACTOR {
            return false;
        }
        let held: u64 = w
            .assigned
            .iter()
            .filter_map(|a| self.attempts.get(a))
            .filter_map(|k| {
                let job = self.jobs.get(&k.file)?;
                let (s, e) = chunk_range(job.fp.size, job.chunks.len() as u64, k.chunk as u64);
                Some(e - s)
            })
            .sum();
        held < self.cfg.small_inflight_bytes
    }

    /// Hands queued chunks to workers with room, oldest first.
    pub fn assign(&mut self, now: Now) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut deferred = Vec::new();
        // The worker with the fewest assignments that has room, each round.
        while let Some(worker) = self
            .workers
            .iter()
            .filter(|(_, w)| w.conn.is_some() && self.has_room(w))
            .min_by_key(|(_, w)| w.assigned.len())
            .map(|(id, _)| id.clone())
        {
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            let Some(job) = self.jobs.get_mut(&key.file) else {
                continue;
            };
            if job.gen != key.gen {
                continue;
            }
            match job.chunks[key.chunk as usize] {
                ChunkState::Queued { ready_ms } if ready_ms <= now.ms => {}
                ChunkState::Queued { .. } => {
                    deferred.push(key);
                    continue;
                }
                _ => continue,
            }
            let chunk = key.chunk;
            self.next_attempt += 1;
            let attempt = format!("{}-{}", self.session, self.next_attempt);
            let n = job.chunks.len() as u64;
            let size = job.fp.size;
            let (start, end) = chunk_range(size, n, chunk as u64);
            job.chunks[chunk as usize] = ChunkState::Assigned {
                attempt: attempt.clone(),
                worker: worker.clone(),
            };
            job.started_at.get_or_insert(now.wall);
            let file = key.file.clone();
            self.attempts.insert(attempt.clone(), key);
            let Some(w) = self.workers.get_mut(&worker) else {
                break;
            };
            w.assigned.push(attempt.clone());
            if let Some(conn) = w.conn {
                actions.push(Action::Send(
                    conn,
                    CoordMsg::Assign(Assignment {
                        attempt,
                        file,
                        chunk,
                        chunks: n as u32,
                        start,
                        end,
                        size,
                    }),
                ));
            }
        }
        self.queue.extend(deferred);
        actions
    }

    /// Hands the flush buffer to the flusher.
    pub fn take_pending(&mut self) -> Pending {
        std::mem::take(&mut self.pending)
    }

    /// The flusher made `done`'s primes durable: those chunks are done; files whose chunks
    /// are all done get their report.
    pub fn flushed(&mut self, done: Vec<ChunkKey>, now: Now) -> Vec<Action> {
        let mut files = BTreeSet::new();
        for ChunkKey { file, gen, chunk } in done {
            let Some(job) = self.jobs.get_mut(&file) else {
                continue;
            };
            if job.gen != gen {
                continue;
            }
            let c = &mut job.chunks[chunk as usize];
            if let ChunkState::Flushing { result, worker } = c.clone() {
                *c = ChunkState::Done { result, worker };
                files.insert(file);
            }
        }
        files
            .into_iter()
            .filter_map(|f| self.maybe_report(&f, now))
            .collect()
    }

    /// The report of `file` if every chunk is done or failed (and none reported yet).
    fn maybe_report(&mut self, file: &str, now: Now) -> Option<Action> {
        let job = self.jobs.get_mut(file)?;
        if job.reported || !job.complete() {
            return None;
        }
        job.reported = true;
        let mut r = Report {
            file: file.to_string(),
            status: ReportStatus::Done,
            content_version: Vec::new(),
            source: job.fp,
            lines: 0,
            numbers_read: 0,
            blank_lines: 0,
            primes_found: 0,
            invalid_lines: InvalidSummary {
                count: 0,
                first: Vec::new(),
            },
            workers: Vec::new(),
            chunks: job.chunks.len(),
            errors: Vec::new(),
            started_at: job.started_at.unwrap_or(now.wall).to_rfc3339(),
            finished_at: now.wall.to_rfc3339(),
        };
        let mut workers = BTreeSet::new();
        for (i, c) in job.chunks.iter().enumerate() {
            match c {
                ChunkState::Done { result, worker } => {
                    for inv in &result.first_invalid {
                        if r.invalid_lines.first.len() < 10 {
                            r.invalid_lines.first.push(InvalidLine {
                                line: r.lines + inv.line,
                                reason: inv.reason.clone(),
                            });
                        }
                    }
                    r.lines += result.lines;
                    r.numbers_read += result.numbers;
                    r.blank_lines += result.blank;
                    r.primes_found += result.primes;
                    r.invalid_lines.count += result.invalid;
                    if !result.version.is_empty() && !r.content_version.contains(&result.version) {
                        r.content_version.push(result.version.clone());
                    }
                    workers.insert(worker.clone());
                }
                ChunkState::Failed { reason } => {
                    r.status = ReportStatus::Failed;
                    r.errors.push(format!("chunk {i}: {reason}"));
                }
                _ => {}
            }
        }
        if r.status == ReportStatus::Failed && r.invalid_lines.count > 0 {
            // Line numbers after a failed chunk are unknown; say so rather than mislead.
            r.errors.push(
                "line numbers after a failed chunk are relative to the next processed chunk".into(),
            );
        }
        r.workers = workers.into_iter().collect();
        job.reported_chunks = r.chunks;
        job.reported_numbers = r.numbers_read;
        if r.status == ReportStatus::Failed {
            let pause = self
                .cfg
                .failed_retry_ms
                .saturating_mul(1 << job.failed_rounds.min(16))
                .min(MAX_FAILED_RETRY_MS);
            job.failed_rounds += 1;
            job.retry_at_ms = Some(now.ms + pause);
        }
        Some(Action::WriteReport(r))
    }

    /// A status view of everything, for `run/status.json`.
    pub fn status(&self, now: Now) -> StatusView {
        let mut v = StatusView {
            session: self.session.clone(),
            ..StatusView::default()
        };
        for (name, job) in &self.jobs {
            if job.reported {
                v.numbers_in_reports += job.reported_numbers;
                if job.chunks.is_empty() {
                    // Reported in an earlier session: its chunks are known from the report.
                    v.chunks_total += job.reported_chunks as u64;
                    v.chunks_done += job.reported_chunks as u64;
                }
            }
            let state = if job.reported {
                if job.report_error.is_some()
                    || job
                        .chunks
                        .iter()
                        .any(|c| matches!(c, ChunkState::Failed { .. }))
                {
                    v.files_failed += 1;
                    "failed"
                } else {
                    v.files_done += 1;
                    "done"
                }
            } else if job
                .chunks
                .iter()
                .all(|c| matches!(c, ChunkState::Queued { .. }))
            {
                v.files_queued += 1;
                "queued"
            } else {
                v.files_in_progress += 1;
                "in_progress"
            };
            v.chunks_total += job.chunks.len() as u64;
            v.chunks_done += job
                .chunks
                .iter()
                .filter(|c| matches!(c, ChunkState::Done { .. } | ChunkState::Failed { .. }))
                .count() as u64;
            if v.files.len() < 500 && state != "done" {
                v.files.push(FileStatus {
                    file: name.clone(),
                    state: state.into(),
                    chunks: job.chunks.len(),
                    chunks_done: job
                        .chunks
                        .iter()
                        .filter(|c| matches!(c, ChunkState::Done { .. }))
                        .count(),
                    error: job.report_error.clone().or_else(|| {
                        job.chunks.iter().find_map(|c| match c {
                            ChunkState::Failed { reason } => Some(reason.clone()),
                            _ => None,
                        })
                    }),
                });
            }
        }
        v.bytes_total = self.jobs.values().map(|j| j.fp.size).sum();
        for (id, w) in &self.workers {
            let tasks: Vec<String> = w
                .assigned
                .iter()
                .filter_map(|a| self.attempts.get(a))
                .map(|k| format!("{}#{}", k.file, k.chunk))
                .collect();
            v.workers.push(WorkerStatus {
                id: id.clone(),
                state: if w.conn.is_none() {
                    "disconnected".into()
                } else if tasks.is_empty() {
                    "idle".into()
                } else {
                    "busy".into()
                },
                tasks,
                last_seen_ms_ago: now.ms.saturating_sub(w.last_seen_ms),
                joined_at: w.joined.to_rfc3339(),
                tasks_done: w.tasks_done,
                numbers_tested: w.numbers,
                task_bytes_done: if w.conn.is_some() { w.progress.0 } else { 0 },
                task_bytes_total: if w.conn.is_some() { w.progress.1 } else { 0 },
            });
        }
        v.totals = self.totals.clone();
        v
    }
}

/// The coordinator's recorded state in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordState {
    pub session: String,
    /// Files whose report is written (all their tasks are completed and durable).
    pub completed_files: Vec<String>,
    /// Files still being worked on, chunk by chunk.
    pub files: Vec<FileState>,
    /// Primes received but not yet flushed (they belong to `flushing` chunks or to attempts
    /// still running).
    pub pending_small: Vec<u64>,
    pub pending_big: Vec<String>,
    /// Workers connected when the state was recorded.
    pub workers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileState {
    pub file: String,
    pub fingerprint: Fingerprint,
    pub reported: bool,
    pub chunks: Vec<ChunkState>,
}

impl Core {
    /// Records the state for a snapshot (the caller holds the lock that orders messages).
    pub fn record(&self) -> CoordState {
        CoordState {
            session: self.session.clone(),
            completed_files: self
                .jobs
                .iter()
                .filter(|(_, j)| j.reported)
                .map(|(f, _)| f.clone())
                .collect(),
            files: self
                .jobs
                .iter()
                .filter(|(_, j)| !j.reported)
                .map(|(f, j)| FileState {
                    file: f.clone(),
                    fingerprint: j.fp,
                    reported: j.reported,
                    chunks: j.chunks.clone(),
                })
                .collect(),
            pending_small: self.pending.small.clone(),
            pending_big: self.pending.big.clone(),
            workers: self
                .workers
                .iter()
                .filter(|(_, w)| w.conn.is_some())
                .map(|(id, _)| id.clone())
                .collect(),
        }
    }

    /// Recovery: a file whose chunks a snapshot knows. `finished` holds, per chunk, the result
    /// if the snapshot proves the chunk finished (its primes are durable or in `Pending`
    /// being recovered); other chunks are queued. Returns the chunks to mark done once the
    /// recovered primes are flushed.
    pub fn restore_file(
        &mut self,
        file: &str,
        fp: Fingerprint,
        finished: Vec<Option<(TaskDone, String)>>,
        now: Now,
    ) -> Vec<ChunkKey> {
        self.next_gen += 1;
        let gen = self.next_gen;
        let mut chunks = Vec::with_capacity(finished.len());
        let mut done = Vec::new();
        for (i, f) in finished.into_iter().enumerate() {
            match f {
                Some((result, worker)) => {
                    chunks.push(ChunkState::Flushing { result, worker });
                    done.push(ChunkKey::new(file, gen, i as u32));
                }
                None => {
                    chunks.push(ChunkState::Queued { ready_ms: now.ms });
                    self.queue.push_back(ChunkKey::new(file, gen, i as u32));
                }
            }
        }
        let n = chunks.len();
        self.jobs.insert(
            file.to_string(),
            Job {
                gen,
                fp,
                chunks,
                failures: vec![0; n],
                started_at: Some(now.wall),
                reported: false,
                failed_rounds: 0,
                retry_at_ms: None,
                reported_chunks: 0,
                reported_numbers: 0,
                report_error: None,
            },
        );
        done
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub session: String,
    pub files_done: u64,
    pub files_queued: u64,
    pub files_in_progress: u64,
    pub files_failed: u64,
    pub chunks_total: u64,
    pub chunks_done: u64,
    pub bytes_total: u64,
    /// Numbers read in the files whose report is written, over all sessions (`totals`
    /// counts this session's tests, retries included).
    #[serde(default)]
    pub numbers_in_reports: u64,
    pub files: Vec<FileStatus>,
    pub workers: Vec<WorkerStatus>,
    #[serde(skip_deserializing)]
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileStatus {
    pub file: String,
    pub state: String,
    pub chunks: usize,
    pub chunks_done: usize,
    /// Why a failed file failed (a chunk's reason, or why its report could not be written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    pub state: String,
    pub tasks: Vec<String>,
    pub last_seen_ms_ago: u64,
    pub joined_at: String,
    pub tasks_done: u64,
    pub numbers_tested: u64,
    /// Progress of the task being tested, from the last heartbeat.
    pub task_bytes_done: u64,
    pub task_bytes_total: u64,
}

#[cfg(test)]
mod tests;
