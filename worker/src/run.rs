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

use afs::client::{AfsClient, AfsError, ClientConfig, Content};
use proto::auth::client_handshake;
use proto::msg::{Assignment, CoordMsg, TaskDone, WorkerMsg, MAX_LINE, SERVICE};
use proto::{ClusterKey, Connection, ProtoError};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::chunk::{
    chunk_of, invalid_lines, prime_batches, read_chunk, scan_chunk_with_progress, ChunkBytes,
};
use crate::scan::{scan_slice, ScanConfig, ScanResult};
use crate::tasks::{BatchLimits, Phase, Taken, Tasks};
use proto::lock;

/// Worker settings (validated by the binary).
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub id: String,
    /// Coordinator addresses, tried in turn (at least one).
    pub coordinators: Vec<String>,
    pub afs_servers: Vec<String>,
    pub cache_root: PathBuf,
    pub cache_limit_bytes: u64,
    /// Files up to this size are cached in memory, not on disk (see
    /// [`ClientConfig::memory_file_max`]); this much memory at most.
    pub memory_file_max: u64,
    pub memory_limit_bytes: u64,
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
    // The small-number bitmap takes ~20 ms to build: done while we connect and register.
    std::thread::spawn(crate::prime::warm_up);
    let mut afs_cfg = ClientConfig::new(
        &cfg.id,
        cfg.afs_servers.clone(),
        &cfg.cache_root,
        cfg.key.clone(),
    );
    afs_cfg.cache_limit_bytes = cfg.cache_limit_bytes;
    afs_cfg.memory_file_max = cfg.memory_file_max;
    afs_cfg.memory_limit_bytes = cfg.memory_limit_bytes;
    afs_cfg.request_timeout = cfg.afs_timeout;
    afs_cfg.connect_timeout = cfg.afs_timeout.min(Duration::from_secs(2));
    let afs = Afs::new(afs_cfg, cfg.threads.max(1) as usize)?;
    let mut backoff = Duration::from_millis(100);
    // Names this process to the coordinator: its reconnections replace its old connection,
    // while another process using the same id is refused.
    let instance: u64 = rand::random();
    if cfg.coordinators.is_empty() {
        anyhow::bail!("no coordinator address given (--coordinator)");
    }
    // The address to try next, and how many have failed in a row.
    let (mut at, mut failed) = (0usize, 0usize);
    // A coordinator group: the leader a follower named (tried next), the highest term
    // followed so far (an older one is refused: a deposed leader), redirects in a row.
    let (mut redirect, mut max_term, mut redirects): (Option<String>, u64, usize) = (None, 0, 0);
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let addr = redirect
            .take()
            .unwrap_or_else(|| cfg.coordinators[at % cfg.coordinators.len()].clone());
        match session(&cfg, &addr, instance, afs.clone(), &shutdown, &mut max_term).await {
            Ok(SessionEnd::NotLeader(leader)) => {
                redirects += 1;
                match leader.as_deref() {
                    // It held the registration until it began to serve (it was taking
                    // over): the same address again, at once.
                    Some(l) if l == addr => {
                        info!(coordinator = addr, "that coordinator now leads: registering again")
                    }
                    Some(l) => info!(
                        coordinator = addr,
                        leader = l,
                        "that coordinator does not lead its group: going to the leader"
                    ),
                    None => info!(
                        coordinator = addr,
                        "that coordinator does not lead its group and knows no leader yet: trying the next"
                    ),
                }
                match leader {
                    // Another member leads, or this one (it held the registration until it
                    // began to serve): go there.
                    Some(l) => {
                        if let Some(i) = cfg.coordinators.iter().position(|c| *c == l) {
                            at = i;
                        }
                        redirect = Some(l);
                    }
                    None => at += 1,
                }
                // Followers answer at once: go on at once, but pause after a round without
                // a leader (an election under way).
                if redirects % (cfg.coordinators.len() + 1) != 0 {
                    continue;
                }
                backoff = Duration::from_millis(50);
            }
            Ok(SessionEnd::Shutdown) => return Ok(()),
            Ok(SessionEnd::InjectedCrash) => return Err(InjectedCrash.into()),
            Ok(SessionEnd::Refused(reason)) => {
                error!(reason, "the coordinator refused this worker");
                return Err(Refused(reason).into());
            }
            Ok(SessionEnd::Lost(why)) => {
                redirects = 0;
                warn!(
                    why,
                    coordinator = addr,
                    "lost the coordinator; reconnecting"
                );
                // The same coordinator first, after a short pause (it may be back at
                // once), then the others.
                backoff = Duration::from_millis(100);
                failed = 0;
            }
            Err(e) => {
                info!(error = %e, coordinator = addr, "coordinator not reachable; retrying");
                at += 1;
                failed += 1;
                // Another address to try: at once, until every one has failed in a row.
                if failed % cfg.coordinators.len() != 0 {
                    continue;
                }
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
    /// A coordinator group's member that does not lead: the leader's address if it knows.
    NotLeader(Option<String>),
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
    addr: &str,
    instance: u64,
    afs: Afs,
    shutdown: &CancellationToken,
    max_term: &mut u64,
) -> Result<SessionEnd, ProtoError> {
    let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
        .await
        .map_err(|_| ProtoError::Timeout(Duration::from_secs(3)))??;
    // Until the welcome names the heartbeat: a coordinator cut off by the network is given
    // up after 15 s of unacknowledged sends.
    proto::conn::set_user_timeout(&stream, Duration::from_secs(15));
    let raw = std::os::fd::AsRawFd::as_raw_fd(&stream);
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
            term,
        } => {
            if let Some(t) = term {
                if t < *max_term {
                    // A leader deposed since: its assignments could never be committed.
                    warn!(
                        term = t,
                        newer = *max_term,
                        "refusing a coordinator of an older term"
                    );
                    return Ok(SessionEnd::NotLeader(None));
                }
                *max_term = t;
            }
            info!(
                session,
                heartbeat_ms, term, "registered with the coordinator"
            );
            // Heartbeats unacknowledged for 2 intervals (at least 1 s): the coordinator is cut
            // off (a network partition sends no FIN), so the connection drops and the next
            // coordinator is tried: a new leader is found within two heartbeats.
            proto::conn::set_user_timeout_fd(
                raw,
                Duration::from_millis((heartbeat_ms * 2).max(1000)),
            );
            Duration::from_millis(heartbeat_ms.max(10))
        }
        CoordMsg::Error { message } => return Err(ProtoError::Peer(message)),
        CoordMsg::Refused { reason } => return Ok(SessionEnd::Refused(reason)),
        CoordMsg::NotLeader { leader } => return Ok(SessionEnd::NotLeader(leader)),
        other => return Err(ProtoError::Peer(format!("expected welcome, got {other:?}"))),
    };
    let (mut reader, mut writer) = conn.into_split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<WorkerMsg>();
    // Injected slowness (--delay-ms) is per task: its tasks go one at a time.
    let limits = if cfg.delay_ms > 0 {
        BatchLimits::none()
    } else {
        BatchLimits::default()
    };
    let local = Arc::new(Mutex::new(Tasks::new(limits)));
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
                    claimed = execute(&mut ex, t, pre).await;
                }
            })
        })
        .collect();

    // A coordinator sends at least `alive` every heartbeat interval: silence for 3 of them
    // (at least 1 s) means it is paused or cut off, and the others are tried. With one
    // coordinator there is no other to try: a paused one is waited for (it resumes with
    // every worker still connected, none declared lost for its own pause).
    let silence = (cfg.coordinators.len() > 1).then(|| (heartbeat * 3).max(Duration::from_secs(1)));
    let mut heard = tokio::time::Instant::now();
    let result = loop {
        let msg = tokio::select! {
            _ = tokio::time::sleep_until(heard + silence.unwrap_or_default()), if silence.is_some() => {
                break SessionEnd::Lost(format!("coordinator silent for {:?}", silence.unwrap_or_default()));
            }
            _ = shutdown.cancelled() => {
                let _ = out_tx.send(WorkerMsg::Goodbye {});
                let _ = tokio::time::timeout(Duration::from_secs(2), end.cancelled()).await;
                break SessionEnd::Shutdown;
            }
            _ = end.cancelled() => break SessionEnd::Lost("connection closed while writing".into()),
            _ = crashed.cancelled() => break SessionEnd::InjectedCrash,
            m = reader.read_msg::<CoordMsg>() => m,
        };
        heard = tokio::time::Instant::now();
        match msg {
            Ok(Some(CoordMsg::Alive {})) => {}
            Ok(Some(CoordMsg::Assign(a))) => {
                debug!(
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
            Ok(Some(CoordMsg::NotLeader { leader })) => break SessionEnd::NotLeader(leader),
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
                c.memory_limit_bytes = cfg.memory_limit_bytes / executors as u64;
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

    /// Fetches the inputs of a batch: [`Afs::fetch`] for one task, the whole files of a
    /// batch of small ones with their requests pipelined. Results in the batch's order.
    async fn fetch_batch(
        &self,
        batch: &[Assignment],
        max_line: u64,
    ) -> Vec<Result<Fetched, AfsError>> {
        if let [a] = batch {
            if a.work.is_some() {
                return vec![Ok(Fetched::Nothing)];
            }
            return vec![self.fetch(a, max_line).await];
        }
        let Some(client) = self.clients.get(self.mine) else {
            return batch
                .iter()
                .map(|_| {
                    Err(AfsError::Unavailable {
                        message: "no AFS client".into(),
                    })
                })
                .collect();
        };
        let paths: Vec<String> = batch.iter().map(|a| a.file.clone()).collect();
        let opened = client.lock().await.open_many(&paths).await;
        opened.into_iter().map(|r| r.map(Fetched::Whole)).collect()
    }
}

/// A task's input, fetched: a whole file in the AFS cache (files of one chunk), or the
/// bytes of one chunk of a larger file read by range into memory.
enum Fetched {
    Whole(afs::client::OpenedFile),
    Range(ChunkBytes),
    /// A generation task reads no input.
    Nothing,
}

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

/// One task of a batch between its fetch and its report.
struct Job {
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
            Ok(fetched) => jobs.push(Job {
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
        crate::gen::run_work(&work, &cancel, |n| {
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
