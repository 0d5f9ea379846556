//! The worker's life in a cluster: connect to the coordinator (retrying with backoff while
//! it is away), register, heartbeat, take assignments, fetch files through the AFS client,
//! scan them, stream primes back in bounded batches, report completion; answer snapshot
//! markers with the local state.
//!
//! All messages to the coordinator go through one queue to one writer task, so their order
//! on the wire is the order they were queued; the local state lock is held while queueing
//! results and while recording a snapshot, so a marker is always after exactly the results
//! that the recorded state says were sent.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afs::client::{AfsClient, AfsError, ClientConfig};
use proto::auth::client_handshake;
use proto::msg::{Assignment, CoordMsg, TaskDone, WorkerMsg, MAX_LINE, SERVICE};
use proto::{ClusterKey, Connection, ProtoError};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::chunk::{
    invalid_lines, prime_batches, read_chunk, scan_chunk_with_progress, ChunkBytes,
};
use crate::scan::{scan_slice, ScanConfig};
use crate::tasks::{Phase, Taken, Tasks};
use proto::lock;

/// Worker settings (validated by the binary).
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub id: String,
    pub coordinator: String,
    pub afs_servers: Vec<String>,
    pub cache_root: PathBuf,
    pub cache_limit_bytes: u64,
    /// File-server reply timeout (and longest silence inside a file body).
    pub afs_timeout: Duration,
    pub key: ClusterKey,
    pub threads: u32,
    pub scan: ScanConfig,
    /// Probability of crashing (exit 86) in the middle of each task: fault injection.
    pub fail_prob: f64,
    /// Extra delay per task, in ms: fault injection (slowness).
    pub delay_ms: u64,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
    /// Fault injection: hold each snapshot marker this long before acting on it, as if the
    /// coordinator -> worker channel were slow (results sent meanwhile land in the
    /// snapshot's channel state).
    pub marker_delay: Duration,
}

/// Exit status of a crash injected by `--fail-prob`.
pub const INJECTED_CRASH_EXIT: i32 = 86;

/// Runs the worker until `shutdown`. Only a bad configuration or an unusable cache ends it
/// early; coordinator and file-server outages are waited out.
pub async fn run(cfg: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut afs_cfg = ClientConfig::new(
        &cfg.id,
        cfg.afs_servers.clone(),
        &cfg.cache_root,
        cfg.key.clone(),
    );
    afs_cfg.cache_limit_bytes = cfg.cache_limit_bytes;
    afs_cfg.request_timeout = cfg.afs_timeout;
    afs_cfg.connect_timeout = cfg.afs_timeout.min(Duration::from_secs(2));
    let afs = Afs::new(afs_cfg, cfg.threads.max(1) as usize)?;
    let mut backoff = Duration::from_millis(100);
    // Names this process to the coordinator: its reconnections replace its old connection,
    // while another process using the same id is refused.
    let instance: u64 = rand::random();
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        match session(&cfg, instance, afs.clone(), &shutdown).await {
            Ok(SessionEnd::Shutdown) => return Ok(()),
            Ok(SessionEnd::InjectedCrash) => return Err(InjectedCrash.into()),
            Ok(SessionEnd::Refused(reason)) => {
                error!(reason, "the coordinator refused this worker");
                return Err(Refused(reason).into());
            }
            Ok(SessionEnd::Lost(why)) => {
                warn!(why, "lost the coordinator; reconnecting");
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                info!(error = %e, coordinator = cfg.coordinator, "coordinator not reachable; retrying");
            }
        }
        let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
        }
        backoff = (backoff * 2).min(cfg.max_backoff);
    }
}

enum SessionEnd {
    Shutdown,
    Lost(String),
    /// The coordinator refused this worker for good (its id is in use).
    Refused(String),
    /// `--fail-prob` fired: the process must end as if it crashed.
    InjectedCrash,
}

/// `--fail-prob` fired: the binary exits with [`INJECTED_CRASH_EXIT`] at once.
#[derive(Debug, thiserror::Error)]
#[error("fault injection (--fail-prob): crashed mid-task")]
pub struct InjectedCrash;

/// The coordinator refused this worker for good; retrying would not help.
#[derive(Debug, thiserror::Error)]
#[error("refused by the coordinator: {0}")]
pub struct Refused(pub String);

async fn session(
    cfg: &WorkerConfig,
    instance: u64,
    afs: Afs,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, ProtoError> {
    let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&cfg.coordinator))
        .await
        .map_err(|_| ProtoError::Timeout(Duration::from_secs(3)))??;
    let mut conn = Connection::new(stream).with_max_line(MAX_LINE);
    client_handshake(&mut conn, &cfg.key, SERVICE).await?;
    conn.send(&WorkerMsg::Register {
        worker_id: cfg.id.clone(),
        pid: std::process::id(),
        threads: cfg.threads,
        instance,
    })
    .await?;
    let heartbeat = match conn.expect_msg::<CoordMsg>(Duration::from_secs(10)).await? {
        CoordMsg::Welcome {
            session,
            heartbeat_ms,
        } => {
            info!(session, heartbeat_ms, "registered with the coordinator");
            Duration::from_millis(heartbeat_ms.max(10))
        }
        CoordMsg::Error { message } => return Err(ProtoError::Peer(message)),
        CoordMsg::Refused { reason } => return Ok(SessionEnd::Refused(reason)),
        other => return Err(ProtoError::Peer(format!("expected welcome, got {other:?}"))),
    };
    let (mut reader, mut writer) = conn.into_split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<WorkerMsg>();
    let local = Arc::new(Mutex::new(Tasks::default()));
    // Bumped at every assignment: wakes idle executors and executors that may claim one
    // for prefetching (a watch loses no wake-up and wakes them all).
    let (work_tx, work_rx) = watch::channel(0u64);
    let end = CancellationToken::new();
    // Set by an injected crash (--fail-prob).
    let crashed = CancellationToken::new();

    // Writer: one task, so the wire order is the queue order.
    let writer_end = end.clone();
    let writer_task = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let goodbye = matches!(m, WorkerMsg::Goodbye {});
            if writer.write_msg(&m).await.is_err() {
                break;
            }
            // Flush when nothing else is waiting, so batches share a syscall.
            if out_rx.is_empty() && writer.flush().await.is_err() {
                break;
            }
            if goodbye {
                break;
            }
        }
        writer_end.cancel();
    });

    // Heartbeats, independent of the CPU-bound work (which runs on blocking threads).
    let hb = {
        let out = out_tx.clone();
        let local = local.clone();
        let end = end.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(heartbeat);
            loop {
                tokio::select! {
                    _ = end.cancelled() => return,
                    _ = tick.tick() => {
                        let (busy, (bytes_done, bytes_total)) = {
                            let l = lock(&local);
                            (l.busy(), l.progress())
                        };
                        if out.send(WorkerMsg::Heartbeat { busy, bytes_done, bytes_total }).is_err() {
                            return;
                        }
                    }
                }
            }
        })
    };

    // Executors: one per testing thread, each taking one assignment at a time and claiming
    // the next one to fetch its input while it tests (when no executor is idle). Several
    // chunks in hand keep the threads busy across the ends of chunks, as separate
    // single-threaded workers would.
    let executors: Vec<_> = (0..cfg.threads.max(1) as usize)
        .map(|n| {
            let mut ex = Executor {
                cfg: cfg.clone(),
                afs: afs.for_executor(n),
                local: local.clone(),
                out: out_tx.clone(),
                work: work_rx.clone(),
                crashed: crashed.clone(),
            };
            let end = end.clone();
            tokio::spawn(async move {
                let mut claimed: Option<Prefetched> = None;
                loop {
                    let (t, pre) = match claimed.take() {
                        Some(p) => (p.t, Some(p.fetch)),
                        None => {
                            // Seen before looking: an assignment after this wakes us.
                            ex.work.borrow_and_update();
                            let next = lock(&ex.local).take_or_wait();
                            match next {
                                Some(t) => (t, None),
                                None => {
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
                    claimed = execute(&mut ex, t, pre).await;
                }
            })
        })
        .collect();

    let result = loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = out_tx.send(WorkerMsg::Goodbye {});
                let _ = tokio::time::timeout(Duration::from_secs(2), end.cancelled()).await;
                break SessionEnd::Shutdown;
            }
            _ = end.cancelled() => break SessionEnd::Lost("connection closed while writing".into()),
            _ = crashed.cancelled() => break SessionEnd::InjectedCrash,
            m = reader.read_msg::<CoordMsg>() => m,
        };
        match msg {
            Ok(Some(CoordMsg::Assign(a))) => {
                info!(
                    attempt = a.attempt,
                    file = a.file,
                    chunk = a.chunk,
                    "assigned"
                );
                lock(&local).assigned(a);
                work_tx.send_modify(|n| *n += 1);
            }
            Ok(Some(CoordMsg::Cancel { attempt })) => {
                info!(attempt, "cancelled by the coordinator");
                lock(&local).cancel(&attempt);
            }
            Ok(Some(CoordMsg::Marker { snapshot })) => {
                if !cfg.marker_delay.is_zero() {
                    tokio::time::sleep(cfg.marker_delay).await;
                }
                // The cache's content: listing it after every fetch cost time quadratic in
                // the number of files; read it here (as before the fetch under way, if any).
                let cached = afs.cached();
                // Record and answer under the lock: no result can slip between the two.
                let mut l = lock(&local);
                if let Some(c) = cached {
                    l.set_cached_files(c);
                }
                let state = l.record(&cfg.id);
                let _ = out_tx.send(WorkerMsg::Marker { snapshot, state });
            }
            Ok(Some(CoordMsg::Shutdown { reason })) => {
                info!(reason, "coordinator asked us to stop");
                let _ = out_tx.send(WorkerMsg::Goodbye {});
                let _ = tokio::time::timeout(Duration::from_secs(2), end.cancelled()).await;
                break SessionEnd::Lost(format!("coordinator shutdown: {reason}"));
            }
            Ok(Some(CoordMsg::Error { message })) => {
                break SessionEnd::Lost(format!("coordinator error: {message}"))
            }
            Ok(Some(CoordMsg::Refused { reason })) => break SessionEnd::Refused(reason),
            Ok(Some(CoordMsg::Welcome { .. })) => {
                break SessionEnd::Lost("unexpected second welcome".into())
            }
            Ok(None) => break SessionEnd::Lost("coordinator closed the connection".into()),
            Err(e) => break SessionEnd::Lost(e.to_string()),
        }
    };
    end.cancel();
    hb.abort();
    for e in &executors {
        e.abort();
    }
    // Aborting an executor does not stop a scan on a blocking thread: stop them all, or
    // they would keep the cores busy with results no one will take.
    lock(&local).cancel_all();
    drop(out_tx);
    let _ = writer_task.await;
    Ok(result)
}

/// The AFS clients of a worker: one per executor, each with its own connection and its own
/// whole-file cache (`<cache root>/<id>/` for the first, `<id>.e<N>/` beside it for the
/// others, each with its share of the cache limit), so that no executor's fetch ever waits
/// for another's.
#[derive(Clone)]
struct Afs {
    clients: Vec<Arc<tokio::sync::Mutex<AfsClient>>>,
    /// The client of the executor holding this handle.
    mine: usize,
}

impl Afs {
    fn new(cfg: ClientConfig, executors: usize) -> Result<Self, AfsError> {
        let executors = executors.max(1);
        let clients = (0..executors)
            .map(|n| {
                let mut c = cfg.clone();
                c.cache_limit_bytes = cfg.cache_limit_bytes / executors as u64;
                if n > 0 {
                    c.client_id = format!("{}.e{n}", cfg.client_id);
                }
                AfsClient::new(c).map(|c| Arc::new(tokio::sync::Mutex::new(c)))
            })
            .collect::<Result<_, _>>()?;
        Ok(Afs { clients, mine: 0 })
    }

    fn for_executor(&self, n: usize) -> Self {
        Afs {
            mine: n % self.clients.len().max(1),
            ..self.clone()
        }
    }

    /// Every cached file, as far as no fetch holds a client now (for snapshot markers).
    fn cached(&self) -> Option<Vec<String>> {
        let mut all = Vec::new();
        for c in &self.clients {
            all.extend(c.try_lock().ok()?.cached().into_iter().map(|(p, _)| p));
        }
        all.sort();
        all.dedup();
        Some(all)
    }

    /// Fetches what task `a` tests. A file of one chunk goes through the AFS whole-file
    /// cache (validated with the server: the coordinator may have queued a change the
    /// server's scan has not announced yet). A chunk of a larger file is read by range
    /// ([`read_chunk`]): each worker then moves only the bytes it tests, once, instead of
    /// every worker copying the whole file into its cache.
    async fn fetch(&self, a: &Assignment, max_line: u64) -> Result<Fetched, AfsError> {
        let Some(client) = self.clients.get(self.mine) else {
            return Err(AfsError::Unavailable {
                message: "no AFS client".into(),
            });
        };
        let mut client = client.lock().await;
        if a.chunks > 1 {
            if let Some(c) = read_chunk(&mut client, &a.file, a.start, a.end, max_line).await? {
                return Ok(Fetched::Range(c));
            }
        }
        client.open_validated(&a.file).await.map(Fetched::Whole)
    }
}

/// A task's input, fetched: a whole file in the AFS cache (files of one chunk), or the
/// bytes of one chunk of a larger file read by range into memory.
enum Fetched {
    Whole(afs::client::OpenedFile),
    Range(ChunkBytes),
}

/// A task claimed from the queue whose input is being fetched while the executor that
/// claimed it tests its current one.
struct Prefetched {
    t: Taken,
    fetch: tokio::task::JoinHandle<Result<Fetched, AfsError>>,
}

/// Starts fetching task `n`'s input in its own task (so that the end of the current scan is
/// acted on at once, however long the fetch takes).
fn prefetch(afs: &Afs, t: Taken, max_line: u64) -> Prefetched {
    let afs = afs.clone();
    let n = t.a.clone();
    let fetch = tokio::spawn(async move { afs.fetch(&n, max_line).await });
    Prefetched { t, fetch }
}

/// What an executor works with.
struct Executor {
    cfg: WorkerConfig,
    afs: Afs,
    local: Arc<Mutex<Tasks>>,
    out: mpsc::UnboundedSender<WorkerMsg>,
    /// Changes at every assignment.
    work: watch::Receiver<u64>,
    /// Set by an injected crash (--fail-prob).
    crashed: CancellationToken,
}

/// Fetches (or takes the prefetched input of), tests and reports task `t`; returns the
/// next task if one was claimed to prefetch meanwhile.
async fn execute(
    ex: &mut Executor,
    t: Taken,
    pending: Option<tokio::task::JoinHandle<Result<Fetched, AfsError>>>,
) -> Option<Prefetched> {
    let (cfg, afs, local, out, crashed) = (&ex.cfg, &ex.afs, &ex.local, &ex.out, &ex.crashed);
    let work = &mut ex.work;
    let Taken { a, bytes, cancel } = t;
    let set_phase = |phase: Phase| lock(local).set_phase(&a.attempt, phase);
    let max_line = cfg.scan.max_line_bytes;
    let opened = match pending {
        Some(fetch) => fetch.await.unwrap_or_else(|e| {
            Err(AfsError::Unavailable {
                message: format!("prefetch task failed: {e}"),
            })
        }),
        None => afs.fetch(&a, max_line).await,
    };
    let finish_failed = |reason: String, retryable: bool| {
        let mut l = lock(local);
        l.finish(&a.attempt);
        let _ = out.send(WorkerMsg::TaskFailed {
            attempt: a.attempt.clone(),
            reason,
            retryable,
        });
    };
    let fetched = match opened {
        Ok(f) => f,
        Err(e) => {
            warn!(file = a.file, error = %e, "cannot fetch the task's file");
            let retryable = !matches!(e, AfsError::Refused { .. });
            finish_failed(e.to_string(), retryable);
            return None;
        }
    };
    set_phase(Phase::Testing);
    if cfg.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(cfg.delay_ms)).await;
    }
    let crash = cfg.fail_prob > 0.0 && rand::thread_rng().gen_bool(cfg.fail_prob.min(1.0));
    let mut scan_cfg = cfg.scan.clone();
    scan_cfg.cancel = Some(cancel);
    let (start, end) = (a.start, a.end);
    let progress = bytes;
    let (version, size) = match &fetched {
        Fetched::Whole(f) => (f.version.clone(), f.size),
        // A chunk read before the server finished hashing a large file has no version;
        // the coordinator takes the file's version from its other chunks.
        Fetched::Range(c) => (c.version.clone().unwrap_or_default(), c.size),
    };
    let mut scan = tokio::task::spawn_blocking(move || {
        let report = |b| progress.store(b, std::sync::atomic::Ordering::Relaxed);
        match fetched {
            Fetched::Whole(f) => scan_chunk_with_progress(&f.local, start, end, &scan_cfg, report),
            Fetched::Range(c) => Ok(scan_slice(c.lines(), &scan_cfg, report)),
        }
    });
    // While the CPU scans this chunk, claim the next assignment and fetch its input, so
    // fetching and testing overlap — unless another executor is idle and will take it. The
    // next assignment usually arrives during the scan (the coordinator sends it when an
    // earlier completion reaches it): look again each time one arrives.
    let mut scanned = None;
    let mut assignments_open = true;
    let prefetched = loop {
        work.borrow_and_update();
        let claimed = lock(local).claim_for_prefetch();
        if let Some(n) = claimed {
            break Some(prefetch(afs, n, max_line));
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
    let r = match scanned {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            finish_failed(format!("reading the cached copy of {}: {e}", a.file), true);
            return prefetched;
        }
        Err(e) => {
            finish_failed(format!("scan task failed: {e}"), true);
            return prefetched;
        }
    };
    set_phase(Phase::Sending);
    let batches = prime_batches(&r);
    let mut l = lock(local);
    if l.is_cancelled(&a.attempt) {
        info!(
            attempt = a.attempt,
            "cancelled task stopped; its results dropped"
        );
        l.finish(&a.attempt);
        return prefetched;
    }
    for (i, (small, big)) in batches.into_iter().enumerate() {
        let _ = out.send(WorkerMsg::Primes {
            attempt: a.attempt.clone(),
            small,
            big,
        });
        if crash && i == 0 {
            break;
        }
    }
    if crash {
        drop(l);
        error!(
            attempt = a.attempt,
            "fault injection (--fail-prob): crashing mid-task"
        );
        // The session ends at once with the partial result on the wire and no goodbye;
        // the binary then exits as a crash would (the library never exits the process).
        crashed.cancel();
        return None;
    }
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
    }));
    l.completed(&a.attempt, r.numbers);
    info!(
        attempt = a.attempt,
        file = a.file,
        chunk = a.chunk,
        numbers = r.numbers,
        "task done"
    );
    prefetched
}
