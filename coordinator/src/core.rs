//! The coordinator's decisions, without I/O: files and their chunks, workers, assignments,
//! failure detection, retries, and what becomes durable when. The async shell (`server`)
//! feeds it events with the current time and performs the [`Action`]s it returns, so every
//! transition is testable without sockets or clocks.
//!
//! Its rooms: this file holds the types (the time, settings, actions, a chunk's state, a
//! tracked entry, a worker) and the [`Core`] itself; [`Key`] (`key.rs`) names an entry, a
//! file or a generation job; `entries.rs` entries coming and going; `workers.rs`
//! registration and the workers' messages; `assign.rs` handing out work; `flush.rs` the
//! flush buffer and what becomes done once it is durable; `failures.rs` what goes wrong;
//! `report.rs` a file's report; [`gen`] generation jobs; `record.rs` the state a snapshot
//! records; `status.rs` the status view.

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

/// Counters for status.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Totals {
    pub numbers_tested: u64,
    pub primes_received: u64,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    pub workers_lost: u64,
    /// Tasks a lost worker held, handed out again.
    #[serde(default)]
    pub tasks_requeued: u64,
    pub stale_messages_ignored: u64,
}

/// Serializable whole: the simulation saves it as JSON mid-run and restores it, and the
/// restored core, fed the same events, must decide as the original (a check of determinism;
/// the group's replicas keep files and counts, not this struct).
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
    /// Segment primes of each flush handed to the flusher and not yet answered, oldest
    /// first.
    in_flush: VecDeque<usize>,
    /// Segment primes of flushes handed back and not yet taken again.
    #[serde(default)]
    handed_back: usize,
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
            in_flush: VecDeque::new(),
            handed_back: 0,
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

    /// No chunk is assigned and none waits in the queue: no completion is coming that a
    /// flush could wait for.
    pub fn nothing_under_way(&self) -> bool {
        self.attempts.is_empty() && self.queue.is_empty()
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
mod entries;
mod failures;
mod flush;
pub mod gen;
mod key;
mod record;
mod report;
mod status;
mod workers;

pub use assign::{bad_batch, chunk_count, chunk_range, SMALL_INFLIGHT_FACTOR};
pub use entries::FoundReport;
pub use flush::FlushBatch;
pub use gen::{GenJob, JobReport, Plan};
pub use key::Key;
pub use record::{CoordState, FileState};
pub use report::{InvalidSummary, Report, ReportStatus};
pub use status::{FileProgress, FileStatus, JobStatus, StatusView, WorkerLink, WorkerStatus};

#[cfg(test)]
mod tests;
