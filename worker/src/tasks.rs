//! The worker's decisions, without I/O: the assignments it holds and in what phase, which
//! executor takes which (an idle one first; a busy one claims the next to prefetch only
//! when none is idle), cancellation, what a snapshot marker records, and the progress its
//! heartbeats report. The async part ([`crate::run`]) only fetches, scans and sends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use proto::msg::{Assignment, TaskProgress, WorkerState};

/// Where a task in hand stands (the `phase` of a snapshot's task record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Fetching,
    Testing,
    Sending,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Fetching => "fetching",
            Phase::Testing => "testing",
            Phase::Sending => "sending",
        }
    }
}

/// A task an executor holds, with the two flags its scanning thread shares.
pub struct Held {
    pub a: Assignment,
    pub phase: Phase,
    /// Bytes of the chunk tested so far (written by the scanning thread).
    pub bytes: Arc<AtomicU64>,
    /// Set when the task is cancelled: the scan stops at its next check.
    pub cancel: Arc<AtomicBool>,
}

impl Held {
    /// (bytes tested, chunk size). A chunk reads on to the end of the line that crosses its
    /// end, so the count is clamped.
    fn progress(&self) -> (u64, u64) {
        let total = self.a.end - self.a.start;
        (self.bytes.load(Ordering::Relaxed).min(total), total)
    }
}

/// What an executor takes: the assignment and the flags its scan shares.
pub struct Taken {
    pub a: Assignment,
    pub bytes: Arc<AtomicU64>,
    pub cancel: Arc<AtomicBool>,
}

/// Small whole files are taken, fetched and tested as one batch: one pipelined round trip
/// to the file server and one hand-off to a testing thread for the lot, instead of one of
/// each per file (what small files cost most). Each stays its own task: its own attempt,
/// results and report.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// A task joins a batch only if it is a whole file of at most this many bytes.
    pub file_max: u64,
    /// Most tasks in one batch.
    pub max_files: usize,
    /// Most bytes in one batch.
    pub max_bytes: u64,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            file_max: 256 << 10,
            max_files: 32,
            max_bytes: 1 << 20,
        }
    }
}

impl BatchLimits {
    /// One task at a time.
    pub fn none() -> Self {
        BatchLimits {
            file_max: 0,
            max_files: 1,
            max_bytes: 0,
        }
    }

    fn small(&self, a: &Assignment) -> bool {
        a.chunks == 1 && a.size <= self.file_max && a.work.is_none()
    }
}

/// The tasks of one session with the coordinator.
#[derive(Default)]
pub struct Tasks {
    limits: BatchLimits,
    queue: VecDeque<Assignment>,
    held: Vec<Held>,
    /// Executors waiting for work.
    idle: usize,
    /// Attempts cancelled while held, until their executor finishes them.
    cancelled: Vec<String>,
    tasks_done: u64,
    numbers_tested: u64,
    cached_files: Vec<String>,
}

impl Tasks {
    pub fn new(limits: BatchLimits) -> Self {
        Tasks {
            limits,
            ..Tasks::default()
        }
    }

    /// The coordinator assigned `a`: queued until an executor takes it.
    pub fn assigned(&mut self, a: Assignment) {
        self.queue.push_back(a);
    }

    /// An executor with nothing to do takes the next queued task, or a batch of small ones
    /// (phase fetching), or, when there is none, counts itself idle until [`Tasks::woken`].
    pub fn take_or_wait(&mut self) -> Vec<Taken> {
        let t = self.take();
        if t.is_empty() {
            self.idle += 1;
        }
        t
    }

    /// An idle executor was woken (it then tries [`Tasks::take_or_wait`] again).
    pub fn woken(&mut self) {
        self.idle = self.idle.saturating_sub(1);
    }

    /// A busy executor claims the next task to fetch its input while it tests its current
    /// one — only when no executor is idle (an idle one will take it at once).
    pub fn claim_for_prefetch(&mut self) -> Vec<Taken> {
        if self.idle > 0 {
            return Vec::new();
        }
        self.take()
    }

    /// The next task, with the small ones queued after it when it is small itself (at most
    /// an even share of the queue while other executors are idle, so none starves).
    fn take(&mut self) -> Vec<Taken> {
        let Some(first) = self.queue.pop_front() else {
            return Vec::new();
        };
        let mut batch = vec![self.hold(first)];
        if !self.limits.small(&batch[0].a) {
            return batch;
        }
        let share = (self.queue.len() + 1).div_ceil(self.idle + 1);
        let mut bytes = batch[0].a.size;
        while batch.len() < self.limits.max_files.min(share) {
            let Some(next) = self.queue.front() else {
                break;
            };
            if !self.limits.small(next) || bytes + next.size > self.limits.max_bytes {
                break;
            }
            bytes += next.size;
            if let Some(a) = self.queue.pop_front() {
                batch.push(self.hold(a));
            }
        }
        batch
    }

    fn hold(&mut self, a: Assignment) -> Taken {
        let h = Held {
            a: a.clone(),
            phase: Phase::Fetching,
            bytes: Arc::default(),
            cancel: Arc::default(),
        };
        let t = Taken {
            a,
            bytes: h.bytes.clone(),
            cancel: h.cancel.clone(),
        };
        self.held.push(h);
        t
    }

    pub fn set_phase(&mut self, attempt: &str, phase: Phase) {
        if let Some(h) = self.held.iter_mut().find(|h| h.a.attempt == attempt) {
            h.phase = phase;
        }
    }

    /// The coordinator cancelled `attempt` (its file changed or vanished, or it went to
    /// another worker): dropped if queued, its scan stopped if held. Its results are never
    /// sent. An attempt not in hand leaves nothing behind.
    pub fn cancel(&mut self, attempt: &str) {
        self.queue.retain(|a| a.attempt != attempt);
        for h in self.held.iter().filter(|h| h.a.attempt == attempt) {
            h.cancel.store(true, Ordering::Relaxed);
            self.cancelled.push(attempt.to_string());
        }
    }

    /// The session ended: every task in hand is stopped (their attempts are void now).
    pub fn cancel_all(&mut self) {
        self.queue.clear();
        for h in &self.held {
            h.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// True if `attempt` was cancelled: its results must not be sent.
    pub fn is_cancelled(&self, attempt: &str) -> bool {
        self.cancelled.iter().any(|c| c == attempt)
    }

    /// The executor is done with `attempt` (sent, failed or cancelled).
    pub fn finish(&mut self, attempt: &str) {
        self.held.retain(|h| h.a.attempt != attempt);
        self.cancelled.retain(|c| c != attempt);
    }

    /// `attempt` completed after testing `numbers` numbers.
    pub fn completed(&mut self, attempt: &str, numbers: u64) {
        self.finish(attempt);
        self.tasks_done += 1;
        self.numbers_tested += numbers;
    }

    /// The AFS cache's files, as a marker records them.
    pub fn set_cached_files(&mut self, files: Vec<String>) {
        self.cached_files = files;
    }

    /// The worker's state for a snapshot: every task in hand with its phase and progress,
    /// then the queued ones.
    pub fn record(&self, id: &str) -> WorkerState {
        // A cancelled task (the coordinator took it back) is no longer this worker's.
        let held = self
            .held
            .iter()
            .filter(|h| !self.is_cancelled(&h.a.attempt))
            .map(|h| {
                let (bytes_done, bytes_total) = h.progress();
                TaskProgress {
                    attempt: h.a.attempt.clone(),
                    file: h.a.file.clone(),
                    chunk: h.a.chunk,
                    phase: h.phase.as_str().into(),
                    bytes_done,
                    bytes_total,
                }
            });
        let queued = self.queue.iter().map(|a| TaskProgress {
            attempt: a.attempt.clone(),
            file: a.file.clone(),
            chunk: a.chunk,
            phase: "queued".into(),
            bytes_done: 0,
            bytes_total: a.end - a.start,
        });
        WorkerState {
            worker_id: id.to_string(),
            in_progress: held.chain(queued).collect(),
            tasks_done: self.tasks_done,
            numbers_tested: self.numbers_tested,
            cached_files: self.cached_files.clone(),
        }
    }

    /// (bytes done, bytes total) summed over the tasks in hand, (0, 0) when none.
    pub fn progress(&self) -> (u64, u64) {
        self.held.iter().fold((0, 0), |(d, t), h| {
            let (done, total) = h.progress();
            (d + done, t + total)
        })
    }

    /// Every attempt in hand or queued (for heartbeats).
    pub fn busy(&self) -> Vec<String> {
        self.held
            .iter()
            .map(|h| h.a.attempt.clone())
            .chain(self.queue.iter().map(|a| a.attempt.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(attempt: &str, start: u64, end: u64) -> Assignment {
        Assignment {
            attempt: attempt.into(),
            file: format!("{attempt}.txt"),
            chunk: 0,
            chunks: 1,
            start,
            end,
            size: end,
            work: None,
        }
    }

    fn one(mut batch: Vec<Taken>) -> Taken {
        assert_eq!(batch.len(), 1, "one task");
        batch.remove(0)
    }

    fn names(batch: &[Taken]) -> Vec<&str> {
        batch.iter().map(|t| t.a.attempt.as_str()).collect()
    }

    #[test]
    /// Small whole files are taken together, within the limits, in order; a large file or a
    /// chunk of one goes alone and ends a batch; while other executors are idle, a batch
    /// takes only its share of the queue.
    fn batches_of_small_files() {
        let limits = BatchLimits {
            file_max: 100,
            max_files: 3,
            max_bytes: 200,
        };
        let mut t = Tasks::new(limits);
        for (n, size) in [
            ("a", 50),
            ("b", 50),
            ("c", 50),
            ("d", 50),
            ("e", 100),
            ("f", 100),
        ] {
            t.assigned(a(n, 0, size));
        }
        t.assigned(a("big", 0, 101));
        t.assigned(a("g", 0, 10));
        let mut chunk = a("part", 0, 10);
        chunk.chunks = 2;
        chunk.size = 20;
        t.assigned(chunk);
        t.assigned(a("h", 0, 10));
        assert_eq!(names(&t.take_or_wait()), ["a", "b", "c"], "at most 3 files");
        assert_eq!(names(&t.take_or_wait()), ["d", "e"], "200 bytes at most");
        assert_eq!(
            names(&t.claim_for_prefetch()),
            ["f"],
            "a large file ends it"
        );
        assert_eq!(names(&t.take_or_wait()), ["big"], "alone");
        assert_eq!(
            names(&t.take_or_wait()),
            ["g"],
            "a chunk of a larger file ends it"
        );
        assert_eq!(names(&t.take_or_wait()), ["part"]);
        assert_eq!(names(&t.take_or_wait()), ["h"]);
        // Another executor idle: half of the queue each.
        let mut t = Tasks::new(limits);
        assert!(t.take_or_wait().is_empty());
        for n in ["p", "q", "r", "s"] {
            t.assigned(a(n, 0, 10));
        }
        assert_eq!(
            names(&t.take_or_wait()),
            ["p", "q"],
            "a share for the idle one"
        );
        t.woken();
        assert_eq!(names(&t.take_or_wait()), ["r", "s"]);
        assert_eq!(t.busy(), ["p", "q", "r", "s"]);
    }

    #[test]
    /// Executors take tasks in order; with none queued they wait (idle), and a busy one
    /// claims a task to prefetch only while no executor is idle.
    fn taking_and_claiming() {
        let mut t = Tasks::new(BatchLimits::none());
        assert!(t.take_or_wait().is_empty(), "nothing yet: idle");
        t.assigned(a("x", 0, 10));
        assert!(
            t.claim_for_prefetch().is_empty(),
            "an idle executor will take it"
        );
        t.woken();
        let x = one(t.take_or_wait());
        assert_eq!(x.a.attempt, "x");
        t.assigned(a("y", 0, 10));
        let y = one(t.claim_for_prefetch());
        assert_eq!(y.a.attempt, "y");
        assert_eq!(t.busy(), vec!["x", "y"]);
        let rec = t.record("w");
        assert_eq!(
            rec.in_progress
                .iter()
                .map(|p| p.phase.as_str())
                .collect::<Vec<_>>(),
            vec!["fetching", "fetching"]
        );
    }

    #[test]
    /// A cancelled queued task is dropped; a held one has its scan flag set and its
    /// results refused until finished; cancelling something not in hand leaves nothing.
    fn cancelling() {
        let mut t = Tasks::new(BatchLimits::none());
        t.assigned(a("x", 0, 10));
        t.assigned(a("y", 0, 10));
        let x = one(t.take_or_wait());
        t.cancel("y");
        assert_eq!(t.busy(), vec!["x"], "queued y dropped");
        assert!(!t.is_cancelled("y"), "nothing kept for a task not held");
        t.cancel("x");
        assert!(x.cancel.load(Ordering::Relaxed), "the scan is told to stop");
        assert!(t.is_cancelled("x"));
        t.finish("x");
        assert!(
            !t.is_cancelled("x") && t.busy().is_empty(),
            "nothing left behind"
        );
        t.cancel("nobody");
        assert!(t.cancelled.is_empty());
        // The end of a session stops everything in hand.
        t.assigned(a("z", 0, 10));
        let z = one(t.take_or_wait());
        t.assigned(a("w", 0, 10));
        t.cancel_all();
        assert!(z.cancel.load(Ordering::Relaxed));
        assert_eq!(t.busy(), vec!["z"], "queued ones dropped");
    }

    #[test]
    /// Progress is clamped to each chunk and summed; phases and counts reach the record.
    fn progress_and_record() {
        let mut t = Tasks::new(BatchLimits::none());
        t.assigned(a("x", 100, 200));
        t.assigned(a("y", 0, 50));
        t.assigned(a("q", 0, 7));
        let x = one(t.take_or_wait());
        let y = one(t.claim_for_prefetch());
        x.bytes.store(150, Ordering::Relaxed); // read past the end of its last line
        y.bytes.store(20, Ordering::Relaxed);
        t.set_phase("x", Phase::Testing);
        assert_eq!(t.progress(), (120, 150));
        t.set_cached_files(vec!["c.txt".into()]);
        let r = t.record("w1");
        assert_eq!(r.worker_id, "w1");
        let got: Vec<(String, String, u64, u64)> = r
            .in_progress
            .iter()
            .map(|p| {
                (
                    p.attempt.clone(),
                    p.phase.clone(),
                    p.bytes_done,
                    p.bytes_total,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("x".into(), "testing".into(), 100, 100),
                ("y".into(), "fetching".into(), 20, 50),
                ("q".into(), "queued".into(), 0, 7),
            ]
        );
        assert_eq!(r.cached_files, vec!["c.txt"]);
        t.completed("x", 42);
        let r = t.record("w1");
        assert_eq!((r.tasks_done, r.numbers_tested), (1, 42));
        assert_eq!(t.progress(), (20, 50));
    }
}
