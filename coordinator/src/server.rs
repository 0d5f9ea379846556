//! The coordinator's async shell: accepts workers, runs the timers (failure detection,
//! flusher, input scan, status), and performs what the core decides.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use proto::auth::server_handshake;
use proto::msg::{CoordMsg, WorkerMsg, MAX_LINE, SERVICE};
use proto::{ClusterKey, Connection, ProtoError};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::core::{Action, Core, CoreConfig, Now, StatusView};
use crate::inputs::{list_files, InputWatcher};
use crate::primes::PrimesFile;
use crate::report::{read_report, write_atomic, write_report};
use crate::snapshot::{SnapshotConfig, Snapshots};

/// Everything the coordinator needs (validated by the binary).
#[derive(Clone, Debug)]
pub struct Config {
    pub input: PathBuf,
    pub output: PathBuf,
    pub primes: PathBuf,
    pub status_file: PathBuf,
    pub core: CoreConfig,
    pub flush_ms: u64,
    pub scan_ms: u64,
    pub quiet_ms: u64,
    pub max_connections: usize,
    pub snapshots: SnapshotConfig,
    pub key: ClusterKey,
    /// File servers to show on the dashboard (probed every 2 s); may be empty.
    pub afs_servers: Vec<String>,
}

enum Out {
    Msg(CoordMsg),
    Close(String),
}

pub(crate) struct Shared {
    pub(crate) core: Mutex<Core>,
    senders: Mutex<HashMap<u64, mpsc::UnboundedSender<Out>>>,
    cfg: Config,
    start: Instant,
    primes_count: std::sync::atomic::AtomicU64,
    pub(crate) snapshots: Mutex<Snapshots>,
    history: Mutex<std::collections::VecDeque<Sample>>,
    servers: Mutex<Vec<ServerProbe>>,
    /// Wakes the flusher early when a chunk finishes, so results do not wait a whole period.
    flush_now: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // No holder leaves these half-updated on panic in a way worse than stopping would.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn now(&self) -> Now {
        Now {
            ms: self.start.elapsed().as_millis() as u64,
            wall: chrono::Utc::now(),
        }
    }

    /// Runs `f` on the core and queues its messages while still holding the core lock, so
    /// the order of decisions is the order of messages on every channel (snapshots rely on
    /// it). Reports are written after the lock is released.
    pub(crate) fn apply(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Core, &mut Snapshots, Now) -> Vec<Action>,
    ) {
        let now = self.now();
        let mut reports = Vec::new();
        {
            let mut core = lock(&self.core);
            let mut snaps = lock(&self.snapshots);
            let actions = f(&mut core, &mut snaps, now);
            let senders = lock(&self.senders);
            for a in actions {
                match a {
                    Action::Send(conn, msg) => {
                        if let Some(tx) = senders.get(&conn) {
                            let _ = tx.send(Out::Msg(msg));
                        }
                    }
                    Action::Close(conn, reason) => {
                        info!(conn, reason, "closing worker connection");
                        if let Some(tx) = senders.get(&conn) {
                            let _ = tx.send(Out::Close(reason));
                        }
                    }
                    Action::WriteReport(r) => reports.push(r),
                }
            }
        }
        if reports.is_empty() {
            return;
        }
        // Report files are small, but a flush can finish thousands of them: write them off
        // the async worker threads so connections keep being served meanwhile.
        tokio::task::block_in_place(|| self.write_reports(reports));
    }

    fn write_reports(self: &Arc<Self>, reports: Vec<crate::core::Report>) {
        let mut failed = Vec::new();
        for r in reports {
            match write_report(&self.cfg.output, &r) {
                Ok(()) => info!(
                    file = r.file,
                    status = r.status,
                    primes = r.primes_found,
                    "report written"
                ),
                // Its primes are durable already; the file counts as failed (never done)
                // and the write is tried again later, and the file redone at a restart.
                Err(e) => {
                    error!(
                        file = r.file,
                        error = format!("{e:#}"),
                        "cannot write report"
                    );
                    failed.push((r.file, r.source, format!("{e:#}")));
                }
            }
        }
        if !failed.is_empty() {
            self.apply(|core, _, now| {
                for (file, fp, why) in failed {
                    core.report_write_failed(&file, fp, why, now);
                }
                Vec::new()
            });
        }
    }

    /// Sends a message to every connected worker (snapshot markers, shutdown).
    pub(crate) fn broadcast(&self, msg: impl Fn(u64) -> Option<CoordMsg>) {
        for (conn, tx) in lock(&self.senders).iter() {
            if let Some(m) = msg(*conn) {
                let _ = tx.send(Out::Msg(m));
            }
        }
    }
}

/// Runs the coordinator on `listener` until `shutdown`; then flushes, writes a final
/// snapshot and tells the workers.
pub async fn run(
    listener: TcpListener,
    http: Option<TcpListener>,
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.input)
        .with_context(|| format!("creating {}", cfg.input.display()))?;
    std::fs::create_dir_all(&cfg.output)
        .with_context(|| format!("creating {}", cfg.output.display()))?;
    let primes_path = cfg.primes.clone();
    let primes = tokio::task::spawn_blocking(move || PrimesFile::open(&primes_path))
        .await
        .context("primes task")??;
    if primes.truncated_bytes > 0 {
        warn!(
            bytes = primes.truncated_bytes,
            "cut a torn last line from primes.txt (a crash mid-append)"
        );
    }
    info!(primes = primes.len(), "dedup set rebuilt from primes.txt");
    let session = format!("{:08x}", rand::random::<u32>());
    let mut core = Core::new(cfg.core.clone(), session.clone());
    let snapshots =
        Snapshots::open(cfg.snapshots.clone()).context("opening the snapshot folder")?;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        core: Mutex::new(Core::new(cfg.core.clone(), session.clone())),
        senders: Mutex::new(HashMap::new()),
        cfg: cfg.clone(),
        start,
        primes_count: std::sync::atomic::AtomicU64::new(primes.len() as u64),
        snapshots: Mutex::new(snapshots),
        history: Mutex::new(std::collections::VecDeque::new()),
        servers: Mutex::new(Vec::new()),
        flush_now: tokio::sync::Notify::new(),
    });

    // Recovery: files with a matching report are done; the snapshot's channel state is
    // applied by the flusher's first round; everything else is queued by the first scan.
    let mut watcher = InputWatcher::new(&cfg.input, cfg.quiet_ms);
    let mut done = 0;
    for (name, fp) in list_files(&cfg.input) {
        match read_report(&cfg.output, &name) {
            Some(r) if r.source == fp && r.status == "done" => {
                core.file_reported(&name, fp, r.chunks, r.numbers_read);
                watcher.mark_reported(&name, fp);
                done += 1;
            }
            // Its cause (file servers down, say) may have gone: the first scan queues it.
            Some(r) if r.source == fp => {
                info!(file = name, errors = ?r.errors, "a file failed before; retrying it")
            }
            _ => {}
        }
    }
    let recovered = crate::snapshot::recover(&cfg.snapshots, &cfg.input, &mut core, shared.now())?;
    *lock(&shared.core) = core;
    info!(
        session,
        done,
        recovered_primes = recovered.small.len() + recovered.big.len(),
        "coordinator ready"
    );

    let tracker = TaskTracker::new();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let _notify = start_notify(&cfg.input, events_tx);
    tracker.spawn(input_loop(
        shared.clone(),
        watcher,
        events_rx,
        shutdown.clone(),
    ));
    tracker.spawn(tick_loop(shared.clone(), shutdown.clone()));
    tracker.spawn(status_loop(shared.clone(), shutdown.clone()));
    if !shared.cfg.afs_servers.is_empty() {
        tracker.spawn(probe_loop(shared.clone(), shutdown.clone()));
    }
    if let Some(http) = http {
        tracker.spawn(crate::web::serve(http, shared.clone(), shutdown.clone()));
    }
    tracker.spawn(crate::snapshot::snapshot_loop(
        shared.clone(),
        shutdown.clone(),
    ));
    let flusher = tokio::spawn(flush_loop(
        shared.clone(),
        primes,
        recovered,
        shutdown.clone(),
    ));

    let mut acceptor = proto::conn::Acceptor::new(listener, cfg.max_connections);
    let mut next_conn = 0u64;
    while let Some((admission, stream, peer)) = acceptor.next(&shutdown).await {
        next_conn += 1;
        let conn_id = next_conn;
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = serve_worker(&shared, stream, admission, conn_id, &shutdown).await {
                info!(%peer, error = %e, "worker connection ended with an error");
            }
            lock(&shared.senders).remove(&conn_id);
            let mut finished = None;
            shared.apply(|core, snaps, now| {
                finished = snaps.worker_gone(conn_id);
                core.disconnected(conn_id, now)
            });
            if let Some(s) = finished {
                crate::snapshot::write_snapshot(&shared, s).await;
            }
        });
    }
    info!("stopping: final flush and snapshot");
    // The flusher does a last round when it sees the shutdown; wait for it.
    let _ = flusher.await;
    crate::snapshot::final_snapshot(&shared).await;
    shared.broadcast(|_| {
        Some(CoordMsg::Shutdown {
            reason: "coordinator stopping".into(),
        })
    });
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), tracker.wait()).await;
    write_status(&shared, false);
    info!("coordinator stopped");
    Ok(())
}

async fn serve_worker(
    shared: &Arc<Shared>,
    stream: TcpStream,
    admission: proto::conn::Admission,
    conn_id: u64,
    shutdown: &CancellationToken,
) -> Result<(), ProtoError> {
    // Strangers get short lines, a short deadline and slots of their own (proto::conn).
    let mut conn = Connection::new(stream).with_max_line(proto::conn::PRE_AUTH_MAX_LINE);
    let peer = conn.peer.clone();
    admission
        .guard(server_handshake(&mut conn, &shared.cfg.key, SERVICE))
        .await?;
    let Some(_permit) = admission.admit() else {
        let _ = conn
            .send(&CoordMsg::Error {
                message: "too many workers connected".into(),
            })
            .await;
        return Err(ProtoError::Peer("connection limit reached".into()));
    };
    conn.set_max_line(MAX_LINE);
    let (worker_id, threads, instance) =
        match conn.expect_msg::<WorkerMsg>(Duration::from_secs(10)).await {
            Ok(WorkerMsg::Register {
                worker_id,
                threads,
                instance,
                ..
            }) if proto::msg::valid_worker_id(&worker_id) => (worker_id, threads, instance),
            Ok(WorkerMsg::Register { worker_id, .. }) => {
                let message = format!("worker id {worker_id:?} is not valid");
                let _ = conn
                    .send(&CoordMsg::Error {
                        message: message.clone(),
                    })
                    .await;
                return Err(ProtoError::Malformed(message));
            }
            Ok(other) => {
                let _ = conn
                    .send(&CoordMsg::Error {
                        message: "expected register".into(),
                    })
                    .await;
                return Err(ProtoError::Malformed(format!(
                    "expected register, got {other:?}"
                )));
            }
            Err(e) => {
                let _ = conn
                    .send(&CoordMsg::Error {
                        message: e.to_string(),
                    })
                    .await;
                return Err(e);
            }
        };
    let (mut reader, mut writer) = conn.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    lock(&shared.senders).insert(conn_id, tx);
    let closed = CancellationToken::new();
    let writer_closed = closed.clone();
    let writer_task = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Msg(m) => {
                    if writer.write_msg(&m).await.is_err() {
                        break;
                    }
                    if rx.is_empty() && writer.flush().await.is_err() {
                        break;
                    }
                }
                Out::Close(reason) => {
                    let _ = writer.send(&CoordMsg::Error { message: reason }).await;
                    break;
                }
            }
        }
        writer_closed.cancel();
    });
    shared.apply(|core, _, now| {
        core.register_with_threads(conn_id, &worker_id, threads, instance, now)
    });
    if lock(&shared.core).worker_of(conn_id).is_some() {
        info!(worker = worker_id, %peer, conn = conn_id, "worker registered");
    } else {
        warn!(worker = worker_id, %peer, conn = conn_id, "registration refused: id in use");
    }
    let result = loop {
        let msg = tokio::select! {
            _ = closed.cancelled() => break Ok(()),
            _ = shutdown.cancelled() => break Ok(()),
            m = reader.read_decoded(WorkerMsg::decode) => m,
        };
        match msg {
            Ok(Some(WorkerMsg::Marker { snapshot, state })) => {
                let finished = lock(&shared.snapshots).marker_returned(conn_id, snapshot, state);
                if let Some(s) = finished {
                    crate::snapshot::write_snapshot(shared, s).await;
                }
            }
            Ok(Some(m)) => {
                if matches!(m, WorkerMsg::TaskDone(_)) {
                    shared.flush_now.notify_one();
                }
                shared.apply(|core, snaps, now| {
                    snaps.record_channel(conn_id, &m);
                    core.message(conn_id, m, now)
                });
            }
            Ok(None) => break Ok(()),
            Err(e) => {
                warn!(worker = worker_id, error = %e, "bad message from worker; closing its connection");
                if let Some(tx) = lock(&shared.senders).get(&conn_id) {
                    let _ = tx.send(Out::Close(format!("bad message: {e}")));
                }
                break Err(e);
            }
        }
    };
    lock(&shared.senders).remove(&conn_id);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer_task).await;
    debug!(worker = worker_id, "worker connection closed");
    result
}

/// Starts the notify watcher; its events go to the input loop. Returns the watcher, which
/// must be kept alive. A failure is logged: the periodic scan still finds everything.
fn start_notify(
    dir: &std::path::Path,
    tx: mpsc::UnboundedSender<notify::Event>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut w = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let _ = tx.send(ev);
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "file notifications unavailable; relying on periodic scans");
            return None;
        }
    };
    if let Err(e) = w.watch(dir, notify::RecursiveMode::Recursive) {
        warn!(error = %e, "cannot watch the input folder; relying on periodic scans");
        return None;
    }
    Some(w)
}

async fn input_loop(
    shared: Arc<Shared>,
    mut watcher: InputWatcher,
    mut events: mpsc::UnboundedReceiver<notify::Event>,
    shutdown: CancellationToken,
) {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
    let period = Duration::from_millis(shared.cfg.scan_ms);
    // At most one scan per this long, however many events arrive: a burst of thousands of
    // events (a big `cp` into the folder) costs a few scans, not thousands.
    let min_gap = Duration::from_millis(shared.cfg.scan_ms.clamp(10, 50));
    let apply_event = |watcher: &mut InputWatcher, ev: notify::Event| -> bool {
        debug!(kind = ?ev.kind, paths = ?ev.paths, "input event");
        match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To))
            | EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                for p in &ev.paths {
                    watcher.note_closed(p);
                }
                true
            }
            EventKind::Modify(ModifyKind::Data(_)) | EventKind::Create(_) => {
                for p in &ev.paths {
                    watcher.note_writing(p);
                }
                true
            }
            EventKind::Remove(_) | EventKind::Modify(_) => true,
            // Reads (the file server opening files) change nothing.
            _ => false,
        }
    };
    let mut events_open = true;
    // A fixed ticker, not a sleep re-armed on every event: irrelevant events (our own scans
    // open the folder, which inotify reports) must not postpone the periodic scan forever.
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.recv(), if events_open => {
                let Some(ev) = ev else {
                    events_open = false;
                    continue;
                };
                if !apply_event(&mut watcher, ev) {
                    continue;
                }
                tokio::time::sleep(min_gap).await;
                while let Ok(ev) = events.try_recv() {
                    apply_event(&mut watcher, ev);
                }
            }
            _ = tick.tick() => {}
        }
        let now = shared.now();
        let outcome = watcher.scan(now.ms);
        if outcome.ready.is_empty() && outcome.removed.is_empty() {
            continue;
        }
        shared.apply(|core, _, now| {
            let mut actions = Vec::new();
            for name in &outcome.removed {
                if core.in_progress(name) {
                    info!(file = name, "input removed; dropped from the queue");
                } else {
                    info!(file = name, "input removed (its report stays)");
                }
                actions.extend(core.file_removed(name));
            }
            for (name, fp) in &outcome.ready {
                let known = core.known(name);
                if known == Some(*fp) {
                    continue;
                }
                if known.is_some() {
                    info!(file = name, size = fp.size, "input changed; queued again");
                } else {
                    info!(file = name, size = fp.size, "input queued");
                }
                actions.extend(core.file_ready(name, *fp, now));
            }
            actions
        });
    }
}

async fn tick_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let period = Duration::from_millis(lock(&shared.core).tick_period_ms());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        shared.apply(|core, _, now| core.tick(now));
        let timed_out = lock(&shared.snapshots).check_timeout(shared.now());
        if let Some(s) = timed_out {
            crate::snapshot::write_snapshot(&shared, s).await;
        }
    }
}

/// The flusher: every `flush_ms`, deduplicate the buffered primes into primes.txt, fsync,
/// and only then mark their chunks done (which may write reports).
async fn flush_loop(
    shared: Arc<Shared>,
    primes: PrimesFile,
    recovered: crate::core::Pending,
    shutdown: CancellationToken,
) {
    let primes = Arc::new(Mutex::new(primes));
    let period = Duration::from_millis(shared.cfg.flush_ms);
    let mut first = Some(recovered);
    let mut last_flush: tokio::time::Instant;
    loop {
        let stopping = shutdown.is_cancelled();
        last_flush = tokio::time::Instant::now();
        let mut pending = lock(&shared.core).take_pending();
        if let Some(r) = first.take() {
            pending.small.extend(r.small);
            pending.big.extend(r.big);
            pending.done.extend(r.done);
        }
        let done = std::mem::take(&mut pending.done);
        if !pending.small.is_empty() || !pending.big.is_empty() || !done.is_empty() {
            crate::crash::point("flush-before-append");
            let p = primes.clone();
            let (small, big) = (pending.small, pending.big);
            let result = tokio::task::spawn_blocking(move || {
                let mut f = lock(&p);
                let r = f.append(&small, &big);
                (r, f.len(), small, big)
            })
            .await;
            match result {
                Ok((Ok(new), total, _, _)) => {
                    shared
                        .primes_count
                        .store(total as u64, std::sync::atomic::Ordering::Relaxed);
                    if new > 0 {
                        debug!(new, total, "flushed primes");
                    }
                    crate::crash::point("flush-after-append");
                    let had_done = !done.is_empty();
                    shared.apply(|core, _, now| core.flushed(done, now));
                    if had_done {
                        crate::crash::point("flush-after-report");
                    }
                }
                Ok((Err(e), _, small, big)) => {
                    // Nothing was marked done; keep everything for the next round.
                    error!(error = %e, "cannot append to primes.txt; will retry");
                    first = Some(crate::core::Pending { small, big, done });
                }
                Err(e) => error!(error = %e, "flush task failed"),
            }
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(period) => {}
            _ = shared.flush_now.notified() => {
                // A chunk finished: flush now if the last flush is older than FLUSH_GATHER,
                // else at that point, so completions arriving together share one fsync
                // while a lone completion (the end of a job, a dropped file) waits for none.
                tokio::time::sleep_until(last_flush + FLUSH_GATHER.min(period)).await;
            }
        }
    }
}

/// Shortest time between two early flushes (completions within it share one fsync).
const FLUSH_GATHER: Duration = Duration::from_millis(20);

/// What `run/status.json` (and the dashboard's `/api/status`) holds.
#[derive(Serialize)]
struct StatusFile<'a> {
    updated_at: String,
    running: bool,
    pid: u32,
    primes_in_file: u64,
    uptime_ms: u64,
    last_snapshot: Option<crate::snapshot::SnapshotInfo>,
    file_servers: Vec<ServerProbe>,
    history: Vec<Sample>,
    #[serde(flatten)]
    view: &'a StatusView,
}

/// One point of the progress history (the dashboard's chart).
#[derive(Serialize, Clone, Copy)]
pub(crate) struct Sample {
    pub uptime_ms: u64,
    pub primes: u64,
    pub numbers: u64,
    pub files_done: u64,
}

/// What the last probe of a file server found.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct ServerProbe {
    pub addr: String,
    pub up: bool,
    pub id: Option<String>,
    pub role: Option<String>,
    pub checked_at: String,
    pub error: Option<String>,
}

/// History kept for the chart: one sample per status tick (0.5 s), 10 minutes.
const HISTORY: usize = 1200;

/// The status as JSON: the same for `run/status.json` and the dashboard.
pub(crate) fn status_value(shared: &Shared, running: bool) -> serde_json::Value {
    let now = shared.now();
    let view = lock(&shared.core).status(now);
    let status = StatusFile {
        updated_at: now.wall.to_rfc3339(),
        running,
        pid: std::process::id(),
        primes_in_file: shared
            .primes_count
            .load(std::sync::atomic::Ordering::Relaxed),
        uptime_ms: now.ms,
        last_snapshot: lock(&shared.snapshots).last(),
        file_servers: lock(&shared.servers).clone(),
        history: lock(&shared.history).iter().copied().collect(),
        view: &view,
    };
    serde_json::to_value(&status).unwrap_or(serde_json::Value::Null)
}

fn write_status(shared: &Shared, running: bool) {
    let mut v = status_value(shared, running);
    {
        // One history sample per status tick, from the status just computed.
        let mut h = lock(&shared.history);
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(Sample {
            uptime_ms: v["uptime_ms"].as_u64().unwrap_or(0),
            primes: v["primes_in_file"].as_u64().unwrap_or(0),
            numbers: v["totals"]["numbers_tested"].as_u64().unwrap_or(0),
            files_done: v["files_done"].as_u64().unwrap_or(0),
        });
    }
    // The file keeps only the last minute of history; the dashboard has it all.
    if let Some(h) = v.get_mut("history").and_then(|h| h.as_array_mut()) {
        let cut = h.len().saturating_sub(120);
        h.drain(..cut);
    }
    match serde_json::to_vec_pretty(&v) {
        Ok(b) => {
            if let Err(e) = write_atomic(&shared.cfg.status_file, &b) {
                debug!(error = %e, "cannot write status file");
            }
        }
        Err(e) => debug!(error = %e, "cannot encode status"),
    }
}

/// Every 2 s, connects to each file server (handshake and hello) to show which are up and
/// which is primary.
async fn probe_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    use afs::msg::{Reply, Request};
    loop {
        let mut out = Vec::new();
        for addr in &shared.cfg.afs_servers {
            let probe = async {
                let stream = TcpStream::connect(addr).await?;
                let mut c = Connection::new(stream).with_max_line(afs::msg::MAX_LINE);
                proto::auth::client_handshake(&mut c, &shared.cfg.key, afs::SERVICE).await?;
                c.send(&Request::Hello {
                    client_id: "coordinator-probe".into(),
                })
                .await?;
                match c.expect_msg::<Reply>(Duration::from_secs(1)).await? {
                    Reply::Welcome { server_id, role } => Ok((server_id, role.to_string())),
                    other => Err(ProtoError::Peer(format!("unexpected {other:?}"))),
                }
            };
            let r = tokio::time::timeout(Duration::from_millis(1500), probe).await;
            let checked_at = chrono::Utc::now().to_rfc3339();
            out.push(match r {
                Ok(Ok((id, role))) => ServerProbe {
                    addr: addr.clone(),
                    up: true,
                    id: Some(id),
                    role: Some(role),
                    checked_at,
                    error: None,
                },
                Ok(Err(e)) => ServerProbe {
                    addr: addr.clone(),
                    up: false,
                    id: None,
                    role: None,
                    checked_at,
                    error: Some(e.to_string()),
                },
                Err(_) => ServerProbe {
                    addr: addr.clone(),
                    up: false,
                    id: None,
                    role: None,
                    checked_at,
                    error: Some("no answer within 1.5 s".into()),
                },
            });
        }
        *lock(&shared.servers) = out;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn status_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || write_status(&s, true)).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// The snapshot folder.
pub(crate) fn snapshot_dir(shared: &Shared) -> std::path::PathBuf {
    shared.cfg.snapshots.dir.clone()
}

pub(crate) fn lock_snapshots(shared: &Shared) -> std::sync::MutexGuard<'_, Snapshots> {
    lock(&shared.snapshots)
}

/// Connections with a live writer.
pub(crate) fn connected(shared: &Shared) -> Vec<u64> {
    lock(&shared.senders).keys().copied().collect()
}

/// Bind helper for the binary.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}
