//! The executors: each takes a batch of tasks (one task, or several small whole files),
//! fetches its inputs (or takes them prefetched), tests them on a blocking thread while
//! claiming and prefetching the next batch, and sends the primes and the report; a
//! generation task runs its computation instead. Results are queued under the tasks' lock,
//! so a snapshot marker is always after exactly the results its recorded state says were
//! sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use afs::client::{AfsError, Content};
use proto::lock;
use proto::msg::{Assignment, TaskDone, WorkerMsg};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::inputs::{Afs, Fetched};
use super::WorkerConfig;
use crate::chunk::{chunk_of, invalid_lines, prime_batches, scan_chunk_with_progress};
use crate::scan::{scan_slice, ScanResult};
use crate::tasks::{Phase, Taken, Tasks};

type FetchHandle = tokio::task::JoinHandle<Vec<Result<Fetched, AfsError>>>;

/// Tasks claimed from the queue whose inputs are being fetched while the executor that
/// claimed them tests its current ones.
struct Prefetched {
    batch: Vec<Taken>,
    fetch: FetchHandle,
}

/// Starts fetching a batch's inputs in its own task (so that the end of the current scan
/// is acted on at once, however long the fetch takes).
fn prefetch(afs: &Afs, batch: Vec<Taken>, max_line: u64) -> Prefetched {
    let afs = afs.clone();
    let assignments: Vec<Assignment> = batch.iter().map(|t| t.a.clone()).collect();
    let fetch = tokio::spawn(async move { afs.fetch_batch(&assignments, max_line).await });
    Prefetched { batch, fetch }
}

/// What an executor works with.
pub(super) struct Executor {
    pub(super) cfg: WorkerConfig,
    pub(super) afs: Afs,
    pub(super) local: Arc<Mutex<Tasks>>,
    pub(super) out: mpsc::UnboundedSender<WorkerMsg>,
    /// Changes at every assignment.
    pub(super) work: watch::Receiver<u64>,
    /// Set by an injected crash (--fail-prob).
    pub(super) crashed: CancellationToken,
}

impl Executor {
    /// Takes batches (the one claimed to prefetch first, else the next queued, else waits
    /// for an assignment) and executes them until `end`.
    pub(super) async fn run(mut self, end: CancellationToken) {
        let ex = &mut self;
        let mut claimed: Option<Prefetched> = None;
        loop {
            let (t, pre) = match claimed.take() {
                Some(p) => (p.batch, Some(p.fetch)),
                None => {
                    // Seen before looking: an assignment after this wakes us.
                    ex.work.borrow_and_update();
                    let next = lock(&ex.local).take_or_wait();
                    match next {
                        t if !t.is_empty() => (t, None),
                        _ => {
                            tokio::select! {
                                _ = end.cancelled() => return,
                                r = ex.work.changed() => if r.is_err() { return },
                            }
                            lock(&ex.local).woken();
                            continue;
                        }
                    }
                }
            };
            claimed = execute(ex, t, pre).await;
        }
    }
}

/// One task of a batch between its fetch and its report.
struct InFlight {
    a: Assignment,
    progress: Arc<std::sync::atomic::AtomicU64>,
    cancel: Arc<std::sync::atomic::AtomicBool>,
    fetched: Fetched,
}

/// Fetches (or takes the prefetched inputs of), tests and reports a batch of tasks (one
/// task, or several small whole files); returns the next batch if one was claimed to
/// prefetch meanwhile.
async fn execute(
    ex: &mut Executor,
    batch: Vec<Taken>,
    pending: Option<FetchHandle>,
) -> Option<Prefetched> {
    if let [t] = batch.as_slice() {
        if t.a.work.is_some() {
            if let Some(fetch) = pending {
                fetch.abort();
            }
            let t = batch.into_iter().next()?;
            execute_gen(ex, t).await;
            return None;
        }
    }
    let (cfg, afs, local, out, crashed) = (&ex.cfg, &ex.afs, &ex.local, &ex.out, &ex.crashed);
    let work = &mut ex.work;
    let max_line = cfg.scan.max_line_bytes;
    let opened = match pending {
        Some(fetch) => fetch.await.unwrap_or_else(|e| {
            batch
                .iter()
                .map(|_| {
                    Err(AfsError::Unavailable {
                        message: format!("prefetch task failed: {e}"),
                    })
                })
                .collect()
        }),
        None => {
            let assignments: Vec<Assignment> = batch.iter().map(|t| t.a.clone()).collect();
            afs.fetch_batch(&assignments, max_line).await
        }
    };
    let finish_failed = |a: &Assignment, reason: String, retryable: bool| {
        task_failed(local, out, &a.attempt, reason, retryable)
    };
    let mut jobs = Vec::with_capacity(batch.len());
    for (t, r) in batch.into_iter().zip(opened) {
        match r {
            Ok(fetched) => jobs.push(InFlight {
                a: t.a,
                progress: t.bytes,
                cancel: t.cancel,
                fetched,
            }),
            Err(e) => {
                warn!(file = t.a.file, error = %e, "cannot fetch the task's file");
                let retryable = !matches!(e, AfsError::Refused { .. });
                finish_failed(&t.a, e.to_string(), retryable);
            }
        }
    }
    if jobs.is_empty() {
        return None;
    }
    {
        let mut l = lock(local);
        for j in &jobs {
            l.set_phase(&j.a.attempt, Phase::Testing);
        }
    }
    if cfg.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(cfg.delay_ms)).await;
    }
    let base_cfg = cfg.scan.clone();
    let in_hand: Vec<Assignment> = jobs.iter().map(|j| j.a.clone()).collect();
    let mut scan = tokio::task::spawn_blocking(move || {
        let results: Vec<std::io::Result<ScanResult>> = jobs
            .iter()
            .map(|j| {
                let mut scan_cfg = base_cfg.clone();
                scan_cfg.cancel = Some(j.cancel.clone());
                let report = |b| j.progress.store(b, std::sync::atomic::Ordering::Relaxed);
                let (start, end) = (j.a.start, j.a.end);
                match &j.fetched {
                    Fetched::Whole(f) => match &f.content {
                        Content::Disk(p) => {
                            scan_chunk_with_progress(p, start, end, &scan_cfg, report)
                        }
                        Content::Memory(b) => {
                            Ok(scan_slice(chunk_of(b, start, end), &scan_cfg, report))
                        }
                    },
                    Fetched::Range(c) => Ok(scan_slice(c.lines(), &scan_cfg, report)),
                    Fetched::Nothing => Ok(ScanResult::default()),
                }
            })
            .collect();
        (jobs, results)
    });
    // While the CPU scans this batch, claim the next assignments and fetch their inputs,
    // so fetching and testing overlap — unless another executor is idle and will take
    // them. The next assignments usually arrive during the scan (the coordinator sends them
    // when an earlier completion reaches it): look again each time one arrives.
    let mut scanned = None;
    let mut assignments_open = true;
    let prefetched = loop {
        work.borrow_and_update();
        let claimed = lock(local).claim_for_prefetch();
        if !claimed.is_empty() {
            break Some(prefetch(afs, claimed, max_line));
        }
        tokio::select! {
            r = &mut scan => {
                scanned = Some(r);
                break None;
            }
            r = work.changed(), if assignments_open => assignments_open = r.is_ok(),
        }
    };
    let scanned = match scanned {
        Some(r) => r,
        None => scan.await,
    };
    let (jobs, results) = match scanned {
        Ok(x) => x,
        Err(e) => {
            for a in &in_hand {
                finish_failed(a, format!("scan task failed: {e}"), true);
            }
            return prefetched;
        }
    };
    let crash = cfg.fail_prob > 0.0;
    let mut l = lock(local);
    for (j, r) in jobs.into_iter().zip(results) {
        let a = &j.a;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                drop(l);
                finish_failed(
                    a,
                    format!("reading the cached copy of {}: {e}", a.file),
                    true,
                );
                l = lock(local);
                continue;
            }
        };
        l.set_phase(&a.attempt, Phase::Sending);
        if l.is_cancelled(&a.attempt) {
            info!(
                attempt = a.attempt,
                "cancelled task stopped; its results dropped"
            );
            l.finish(&a.attempt);
            continue;
        }
        let crash = crash && rand::thread_rng().gen_bool(cfg.fail_prob.min(1.0));
        if send_primes(out, &a.attempt, prime_batches(&r), crash) {
            drop(l);
            // The session ends at once with the partial result on the wire and no goodbye;
            // the binary then exits as a crash would (the library never exits the process).
            crashed.cancel();
            return None;
        }
        let (version, size) = match &j.fetched {
            Fetched::Whole(f) => (f.version.clone(), f.size),
            // A chunk read before the server finished hashing a large file has no version;
            // the coordinator takes the file's version from its other chunks.
            Fetched::Range(c) => (c.version.clone().unwrap_or_default(), c.size),
            Fetched::Nothing => (String::new(), 0),
        };
        let _ = out.send(WorkerMsg::TaskDone(TaskDone {
            attempt: a.attempt.clone(),
            version,
            size,
            lines: r.lines,
            numbers: r.numbers,
            blank: r.blank,
            invalid: r.invalid,
            first_invalid: invalid_lines(&r),
            primes: (r.primes.len() + r.big_primes.len()) as u64,
            answer: None,
            first_prime: None,
            last_prime: None,
        }));
        l.completed(&a.attempt, r.numbers);
        debug!(
            attempt = a.attempt,
            file = a.file,
            chunk = a.chunk,
            numbers = r.numbers,
            "task done"
        );
    }
    prefetched
}

/// Runs a generation task on a blocking thread (cancellable between sieve segments) and
/// reports it: a `primes` task's primes in bounded batches, then `task_done` with the
/// answer.
async fn execute_gen(ex: &mut Executor, t: Taken) {
    let (cfg, local, out) = (&ex.cfg, &ex.local, &ex.out);
    let a = t.a.clone();
    lock(local).set_phase(&a.attempt, Phase::Testing);
    if cfg.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(cfg.delay_ms)).await;
    }
    let (progress, cancel) = (t.bytes.clone(), t.cancel.clone());
    let Some(work) = a.work.clone() else {
        return;
    };
    let result = tokio::task::spawn_blocking(move || {
        crate::kinds::compute(&work, &cancel, |n| {
            progress.store(n, std::sync::atomic::Ordering::Relaxed)
        })
    })
    .await;
    let fail =
        |reason: String, retryable: bool| task_failed(local, out, &a.attempt, reason, retryable);
    let done = match result {
        Ok(Ok(Some(d))) => d,
        Ok(Ok(None)) => {
            info!(
                attempt = a.attempt,
                "cancelled task stopped; its results dropped"
            );
            lock(local).finish(&a.attempt);
            return;
        }
        Ok(Err(e)) => return fail(format!("{e:#}"), false),
        Err(e) => return fail(format!("generation task failed: {e}"), true),
    };
    let mut l = lock(local);
    l.set_phase(&a.attempt, Phase::Sending);
    if l.is_cancelled(&a.attempt) {
        l.finish(&a.attempt);
        return;
    }
    let crash = cfg.fail_prob > 0.0 && rand::thread_rng().gen_bool(cfg.fail_prob.min(1.0));
    let batches = done
        .primes
        .chunks(proto::msg::MAX_PRIMES_PER_BATCH)
        .map(|b| (b.to_vec(), Vec::new()));
    if send_primes(out, &a.attempt, batches, crash) {
        drop(l);
        ex.crashed.cancel();
        return;
    }
    let numbers = a.end - a.start;
    let _ = out.send(WorkerMsg::TaskDone(TaskDone {
        attempt: a.attempt.clone(),
        version: String::new(),
        size: 0,
        lines: 0,
        numbers,
        blank: 0,
        invalid: 0,
        first_invalid: Vec::new(),
        primes: done.count,
        answer: done.answer,
        first_prime: done.primes.first().map(|p| p.to_string()),
        last_prime: done.primes.last().map(|p| p.to_string()),
    }));
    l.completed(&a.attempt, numbers);
    debug!(
        attempt = a.attempt,
        job = a.file,
        task = a.chunk,
        "generation task done"
    );
}

/// Ends `attempt` locally and reports it failed, under the one lock: a snapshot marker
/// cannot come between (the task would be in neither the recorded state nor the channel).
fn task_failed(
    local: &Mutex<Tasks>,
    out: &mpsc::UnboundedSender<WorkerMsg>,
    attempt: &str,
    reason: String,
    retryable: bool,
) {
    let mut l = lock(local);
    l.finish(attempt);
    let _ = out.send(WorkerMsg::TaskFailed {
        attempt: attempt.to_string(),
        reason,
        retryable,
    });
}

/// Queues a task's `primes` messages; with `crash` (fault injection, --fail-prob) only the
/// first, and says so: the caller then ends the session as a crash would. Returns `crash`.
fn send_primes(
    out: &mpsc::UnboundedSender<WorkerMsg>,
    attempt: &str,
    batches: impl IntoIterator<Item = (Vec<u64>, Vec<String>)>,
    crash: bool,
) -> bool {
    for (small, big) in batches {
        let _ = out.send(WorkerMsg::Primes {
            attempt: attempt.to_string(),
            small,
            big,
        });
        if crash {
            break;
        }
    }
    if crash {
        error!(attempt, "fault injection (--fail-prob): crashing mid-task");
    }
    crash
}
