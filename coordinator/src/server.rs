//! The coordinator's async shell: start-up and recovery (reading reports and the newest
//! snapshot), the accept loop and one task per worker connection, the input watcher, and
//! the timers (ticks, snapshots, status file, file-server probes). Every decision is the
//! machine's ([`crate::machine`]), reached through `Shared::apply`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use proto::auth::{authenticate, Admitted};
use proto::msg::{CoordMsg, WorkerMsg, MAX_LINE, SERVICE};
use proto::ProtoError;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::core::{Core, Now, ReportStatus};
use crate::durable::Durable;
use crate::inputs::{list_files, InputWatcher};
use crate::machine::{Coordinator, Event};
use crate::report::read_report;
use crate::snapshot::{list_snapshots, newest_snapshot, Snapshots};
use crate::state::{lock, status_value, Out, Shared};

pub use crate::state::Config;

/// Runs the coordinator on `listener` until `shutdown`, its durable steps through `durable`
/// (the group it leads); then flushes and writes a final snapshot.
pub async fn run(
    listener: TcpListener,
    http: Option<TcpListener>,
    cfg: Config,
    durable: Arc<dyn Durable>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.input)
        .with_context(|| format!("creating {}", cfg.input.display()))?;
    std::fs::create_dir_all(&cfg.output)
        .with_context(|| format!("creating {}", cfg.output.display()))?;
    std::fs::create_dir_all(&cfg.jobs)
        .with_context(|| format!("creating {}", cfg.jobs.display()))?;
    std::fs::create_dir_all(&cfg.snapshots.dir)
        .with_context(|| format!("creating {}", cfg.snapshots.dir.display()))?;
    // A leader starts from its replica, which has applied everything committed.
    let (finished, total, in_set) = durable.ledger();
    info!(
        primes = total,
        in_set,
        finished_tasks = finished.len(),
        term = durable.term(),
        "dedup state from this replica"
    );
    let session = format!("{:08x}", rand::random::<u32>());
    // Snapshots: those this host's leaders wrote, and those the group keeps in this
    // member's folder (every leader's, on whatever host it ran): numbers go on from the
    // newest of either, and recovery starts from it.
    let snapshot_dirs: Vec<std::path::PathBuf> = std::iter::once(cfg.snapshots.dir.clone())
        .chain(durable.snapshot_dir())
        .collect();
    let newest_snap = snapshot_dirs
        .iter()
        .filter_map(|d| list_snapshots(d).into_iter().next())
        .max_by_key(|(s, _)| *s);
    let next_seq = newest_snap.as_ref().map_or(1, |(s, _)| s + 1);
    let mut machine = Coordinator::new(
        Core::new(cfg.core.clone(), session.clone()),
        Snapshots::new(cfg.snapshots.marker_timeout_ms, next_seq),
    );
    machine.core_mut().set_finished(finished);

    // Recovery: files with a matching `done` report are done; the newest snapshot resumes
    // the files it shows in progress (its primes flushed first); the first scan queues the
    // rest, failed files included.
    let mut watcher = InputWatcher::new(&cfg.input, cfg.quiet_ms);
    // The input files: the local folder, or the file servers' listing.
    let mut listings = None;
    // Content versions the file server listed (by input), when it knew them.
    let mut versions: HashMap<String, String> = HashMap::new();
    let mut current = if cfg.inputs_from_afs {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watch = afs::listing::ListWatch {
            servers: cfg.afs_servers.clone(),
            key: cfg.key.clone(),
            client_id: "coordinator".into(),
            timeout: Duration::from_secs(3),
            refresh: LISTING_REFRESH,
        };
        tokio::spawn(watch.run(tx, shutdown.clone()));
        let listed = match tokio::time::timeout(FIRST_LISTING, rx.recv()).await {
            Ok(Some(l)) => {
                info!(
                    server = l.server,
                    files = l.files.len(),
                    "inputs listed by the file server"
                );
                l.files
            }
            _ => {
                warn!(
                    "no file server listed the inputs within {FIRST_LISTING:?}; starting with none \
                     (they are queued once one answers)"
                );
                HashMap::new()
            }
        };
        listings = Some(rx);
        let mut files = HashMap::with_capacity(listed.len());
        for (name, (fp, version)) in listed {
            if let Some(v) = version {
                versions.insert(name.clone(), v);
            }
            files.insert(name, fp);
        }
        files
    } else {
        list_files(&cfg.input)
    };
    let mut done = 0;
    for (name, fp) in current.iter_mut() {
        let report = read_report(&cfg.output, name);
        // A report whose content version is the listed one stands for this file even if
        // the fingerprint is another server's (a restart while a backup answers).
        if let Some(r) = &report {
            let same_content = versions
                .get(name)
                .is_some_and(|v| r.content_version.contains(v));
            if r.source != *fp && r.source.size == fp.size && same_content {
                *fp = r.source;
            }
        }
        match report {
            Some(r) if r.source == *fp && r.status == ReportStatus::Done => {
                machine
                    .core_mut()
                    .file_reported(name, *fp, r.chunks, r.numbers_read);
                if let [v] = r.content_version.as_slice() {
                    machine.core_mut().set_reported_version(name, v.clone());
                }
                watcher.mark_reported(name, *fp);
                done += 1;
            }
            // Its cause (file servers down, say) may have gone: the first scan queues it.
            Some(r) if r.source == *fp => {
                info!(file = name, errors = ?r.errors, "a file failed before; retrying it")
            }
            _ => {}
        }
    }
    // What the listing loop starts from (the inputs only: job keys join `current` below).
    let current_inputs = if listings.is_some() {
        current.clone()
    } else {
        HashMap::new()
    };
    // Jobs: a matching report (done, or invalid) means nothing to do; a valid job the
    // snapshot shows in progress resumes.
    let mut job_watcher = InputWatcher::new(&cfg.jobs, cfg.quiet_ms);
    let mut plans = HashMap::new();
    for (rel, fp) in list_files(&cfg.jobs) {
        let name = crate::jobs::job_name_of(&rel);
        let key = crate::core::job_key(&name);
        match crate::report::read_job_report(&cfg.output, &name) {
            Some(r) if r.source == fp && (r.status == "done" || r.status == "invalid") => {
                machine.core_mut().job_reported(&name, fp, &r);
                job_watcher.mark_reported(&rel, fp);
                continue;
            }
            _ => {}
        }
        if let Ok(job) = crate::jobs::read_job(&cfg.jobs, &rel, cfg.segment_numbers) {
            current.insert(key.clone(), fp);
            plans.insert(key, job);
        }
    }
    machine.set_job_plans(plans);
    let start = Instant::now();
    let newest = newest_snap
        .as_ref()
        .and_then(|(_, p)| p.parent())
        .and_then(newest_snapshot);
    if let Some(snap) = newest {
        let now = Now {
            ms: start.elapsed().as_millis() as u64,
            wall: chrono::Utc::now(),
        };
        let files = machine.recover(&snap, &current, now);
        info!(seq = snap.seq, files, "recovered from snapshot");
        if let Some((_, path)) = snapshot_dirs
            .iter()
            .flat_map(|d| list_snapshots(d))
            .find(|(seq, _)| *seq == snap.seq)
        {
            machine.set_last_snapshot(crate::snapshot::SnapshotInfo {
                seq: snap.seq,
                bytes: std::fs::metadata(&path).map_or(0, |m| m.len()),
                path: path.display().to_string(),
                completed_at: snap.completed_at.clone(),
                write_ms: 0,
            });
        }
    }
    info!(
        session,
        done,
        recovered_primes = machine.recovered_primes(),
        "coordinator ready"
    );
    let (shared, buffers) = Shared::new(cfg.clone(), durable, machine, (total, in_set));

    let tracker = TaskTracker::new();
    let _notify = match listings {
        Some(rx) => {
            tracker.spawn(listing_loop(
                shared.clone(),
                watcher,
                rx,
                current_inputs,
                shutdown.clone(),
            ));
            None
        }
        None => {
            let (events_tx, events_rx) = mpsc::unbounded_channel();
            let notify = start_notify(&cfg.input, events_tx);
            tracker.spawn(folder_loop(
                shared.clone(),
                Folder::Inputs,
                watcher,
                events_rx,
                shutdown.clone(),
            ));
            notify
        }
    };
    let (job_events_tx, job_events_rx) = mpsc::unbounded_channel();
    let _job_notify = start_notify(&cfg.jobs, job_events_tx);
    tracker.spawn(folder_loop(
        shared.clone(),
        Folder::Jobs,
        job_watcher,
        job_events_rx,
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
    tracker.spawn(snapshot_loop(shared.clone(), shutdown.clone()));
    let flusher = tokio::spawn(crate::flusher::flush_loop(
        shared.clone(),
        buffers,
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
            shared.disconnect(conn_id);
            shared.apply(Event::Disconnected { conn: conn_id }).await;
        });
    }
    info!("stopping: final flush and snapshot");
    // The flusher does a last round when it sees the shutdown; wait for it. The round
    // commits through the group's log, which a leader cut off from the majority cannot do:
    // it waits at most FINAL_FLUSH_LIMIT (what it held is not done; the next leader redoes
    // those chunks) instead of staying up, and in status, for as long as the cut lasts.
    let mut flusher = flusher;
    let flushed = match tokio::time::timeout(FINAL_FLUSH_LIMIT, &mut flusher).await {
        Ok(_) => true,
        Err(_) => {
            flusher.abort();
            warn!(
                limit_ms = FINAL_FLUSH_LIMIT.as_millis() as u64,
                "the final flush was not committed in time (no majority?): left to the next leader"
            );
            false
        }
    };
    // The workers go on with the next leader (their connections close; in a group of one,
    // with this coordinator once it is back); a deposed leader, or one whose last flush did
    // not commit, writes no snapshot.
    if flushed && shared.durable.still_leads() {
        final_snapshot(&shared).await;
    }
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
    let (mut conn, _permit) =
        match authenticate(admission, stream, &shared.cfg.key, SERVICE, MAX_LINE).await? {
            Admitted::Ready(conn, permit) => (conn, permit),
            Admitted::Full(mut conn) => {
                let _ = conn
                    .send(&CoordMsg::Error {
                        message: "too many workers connected".into(),
                    })
                    .await;
                return Err(ProtoError::Peer("connection limit reached".into()));
            }
        };
    let peer = conn.peer.clone();
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
    shared.connect(conn_id, tx);
    let closed = CancellationToken::new();
    let writer_closed = closed.clone();
    // Liveness: `alive` on a connection idle for a heartbeat interval, so a worker can tell a
    // paused or cut-off coordinator (whose kernel still acknowledges its heartbeats) from a
    // quiet one.
    let mut idle =
        tokio::time::interval(Duration::from_millis(shared.cfg.core.heartbeat_ms.max(10)));
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let writer_task = tokio::spawn(async move {
        let mut wrote = false;
        loop {
            let out = tokio::select! {
                out = rx.recv() => match out {
                    Some(out) => out,
                    None => break,
                },
                _ = idle.tick() => {
                    if !std::mem::take(&mut wrote)
                        && (writer.write_msg(&CoordMsg::Alive {}).await.is_err()
                            || writer.flush().await.is_err())
                    {
                        break;
                    }
                    continue;
                }
            };
            wrote = true;
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
    shared
        .apply(Event::Register {
            conn: conn_id,
            worker_id: worker_id.clone(),
            threads,
            instance,
        })
        .await;
    if shared.read(|m| m.core().worker_of(conn_id).is_some()) {
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
            Ok(Some(m)) => {
                shared
                    .apply(Event::Message {
                        conn: conn_id,
                        msg: m,
                    })
                    .await
            }
            Ok(None) => break Ok(()),
            Err(e) => {
                warn!(worker = worker_id, error = %e, "bad message from worker; closing its connection");
                shared.close(conn_id, format!("bad message: {e}"));
                break Err(e);
            }
        }
    };
    shared.disconnect(conn_id);
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
        // An error (events lost) asks for a full scan, as notify's own rescan flag does.
        let ev = res.unwrap_or_else(|_| {
            notify::Event::new(notify::EventKind::Other).set_flag(notify::event::Flag::Rescan)
        });
        let _ = tx.send(ev);
    }) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "file notifications unavailable; relying on periodic scans");
            return None;
        }
    };
    if let Err(e) = w.watch(dir, notify::RecursiveMode::Recursive) {
        warn!(dir = %dir.display(), error = %e, "cannot watch the folder; relying on periodic scans");
        return None;
    }
    Some(w)
}

/// With notifications working and no input waiting to become stable, the input folder is
/// walked every this many scan periods (a safety net for events the kernel dropped).
const IDLE_WALKS: u32 = 30;

/// Whether a periodic tick walks the input folder: always the first time (the files already
/// there at start-up), while notifications are unavailable, and while something waits to
/// become stable (only a walk sees it settle); otherwise once every [`IDLE_WALKS`] periods.
fn periodic_walk(
    since_last_walk: Option<Duration>,
    events_open: bool,
    pending: bool,
    period: Duration,
) -> bool {
    match since_last_walk {
        None => true,
        Some(since) => !events_open || pending || since >= period * IDLE_WALKS,
    }
}

/// A watched folder: where its stable files go.
#[derive(Clone, Copy)]
enum Folder {
    /// `data/input`: files to test.
    Inputs,
    /// `data/jobs`: generation jobs, parsed before the machine sees them.
    Jobs,
}

/// Watches one folder (notifications, and periodic walks as a safety net or while a file
/// waits to become stable) and hands the machine what became stable or vanished.
async fn folder_loop(
    shared: Arc<Shared>,
    folder: Folder,
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
        if ev.need_rescan() {
            return true;
        }
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
    // A full walk stats every input file (about 2 µs each: 0.2 s for 100,000 files). With
    // notifications working and nothing waiting to become stable, the periodic walk is only
    // a safety net, so it runs every IDLE_WALKS periods instead of every period.
    let mut last_walk: Option<tokio::time::Instant> = None;
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
            _ = tick.tick() => {
                let since = last_walk.map(|t| t.elapsed());
                if !periodic_walk(since, events_open, watcher.pending(), period) {
                    continue;
                }
            }
        }
        last_walk = Some(tokio::time::Instant::now());
        let now = shared.now();
        let outcome = watcher.scan(now.ms);
        if outcome.ready.is_empty() && outcome.removed.is_empty() {
            continue;
        }
        match folder {
            Folder::Inputs => shared.apply(Event::Inputs(outcome)).await,
            Folder::Jobs => shared.apply(read_jobs(&shared, outcome).await).await,
        }
    }
}

/// The file server's listing is asked for again after this long without a `list_changed`
/// push (a safety net: the pushes are what make a new file known at once).
const LISTING_REFRESH: Duration = Duration::from_secs(60);

/// How long start-up waits for the first listing of the inputs from a file server.
const FIRST_LISTING: Duration = Duration::from_secs(10);

/// The inputs as the file servers list them (`--inputs-from-afs`): each new listing is
/// decided on at once, and again every scan period while a file waits for its quiet period.
async fn listing_loop(
    shared: Arc<Shared>,
    mut watcher: InputWatcher,
    mut listings: mpsc::UnboundedReceiver<afs::listing::Listing>,
    mut latest: HashMap<String, crate::core::Fingerprint>,
    shutdown: CancellationToken,
) {
    let mut server = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(shared.cfg.scan_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut first = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            l = listings.recv() => match l {
                Some(l) => {
                    if l.server != server {
                        info!(server = l.server, files = l.files.len(), "inputs listed by the file server");
                        server = l.server.clone();
                    }
                    latest = shared.read(|m| {
                        l.files
                            .iter()
                            .map(|(name, (fp, v))| {
                                (name.clone(), m.core().identify(name, *fp, v.as_deref()))
                            })
                            .collect()
                    });
                }
                None => return,
            },
            _ = tick.tick() => {
                if !first && !watcher.pending() {
                    continue;
                }
            }
        }
        first = false;
        let outcome = watcher.scan_listing(&latest, shared.now().ms);
        if outcome.ready.is_empty() && outcome.removed.is_empty() {
            continue;
        }
        shared.apply(Event::Inputs(outcome)).await;
    }
}

/// The event for job files that became stable (read and parsed) or vanished.
async fn read_jobs(shared: &Shared, outcome: crate::inputs::ScanOutcome) -> Event {
    let dir = shared.cfg.jobs.clone();
    let segment = shared.cfg.segment_numbers;
    let ready = tokio::task::spawn_blocking(move || {
        outcome
            .ready
            .into_iter()
            .map(|(rel, fp)| {
                let job = crate::jobs::read_job(&dir, &rel, segment);
                (crate::jobs::job_name_of(&rel), fp, job)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let removed = outcome
        .removed
        .iter()
        .map(|r| crate::jobs::job_name_of(r))
        .collect();
    Event::Jobs { ready, removed }
}

async fn tick_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let period = Duration::from_millis(shared.read(|m| m.core().tick_period_ms()));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        shared.apply(Event::Tick).await;
    }
}

/// Every `--snapshot-ms`, a snapshot (the machine skips it if one is still being taken).
async fn snapshot_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let interval = shared.cfg.snapshots.interval_ms;
    if interval == 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(interval)) => {}
        }
        begin_snapshot(&shared).await;
    }
}

/// Starts a snapshot; returns its number, or `None` if one was already being taken.
async fn begin_snapshot(shared: &Arc<Shared>) -> Option<u64> {
    let before = shared.read(|m| m.snapshot_in_progress());
    if before.is_some() {
        return None;
    }
    let seq = shared.read(|m| m.next_snapshot());
    shared.apply(Event::SnapshotDue).await;
    crate::crash::point("snapshot-begun");
    Some(seq)
}

/// How long a group's leader that stops waits for its last flush to commit.
const FINAL_FLUSH_LIMIT: Duration = Duration::from_secs(3);

/// How long the final snapshot waits for markers before noting workers unresponsive.
const FINAL_MARKER_WAIT: Duration = Duration::from_secs(2);

/// At shutdown: let a snapshot in progress finish (or give up on its markers), then take
/// one last snapshot, waiting briefly for the markers.
async fn final_snapshot(shared: &Arc<Shared>) {
    if let Some(seq) = shared.read(|m| m.snapshot_in_progress()) {
        if tokio::time::timeout(FINAL_MARKER_WAIT, shared.snapshot_done(seq))
            .await
            .is_err()
        {
            shared.apply(Event::SnapshotDeadline).await;
        }
    }
    let Some(seq) = begin_snapshot(shared).await else {
        return;
    };
    if tokio::time::timeout(FINAL_MARKER_WAIT, shared.snapshot_done(seq))
        .await
        .is_err()
    {
        shared.apply(Event::SnapshotDeadline).await;
        shared.snapshot_done(seq).await;
    }
}

/// History kept for the chart: one sample per status tick (0.5 s), 10 minutes.
const HISTORY: usize = 1200;

/// Writes `run/status.json` (keeping the last minute of history) and takes one history
/// sample for the dashboard.
fn write_status(shared: &Shared, running: bool) {
    let (mut v, sample) = status_value(shared, running);
    {
        let mut h = lock(&shared.history);
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(sample);
    }
    if let Some(h) = v.get_mut("history").and_then(|h| h.as_array_mut()) {
        let cut = h.len().saturating_sub(120);
        h.drain(..cut);
    }
    match serde_json::to_vec_pretty(&v) {
        Ok(b) => {
            // Not fsynced: the status is rewritten every half second.
            if let Err(e) = proto::files::write_atomic(&shared.cfg.status_file, &b, false) {
                debug!(error = %e, "cannot write status file");
            }
        }
        Err(e) => debug!(error = %e, "cannot encode status"),
    }
}

/// Every 2 s, probes each file server, to show which are up and which is primary.
async fn probe_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let mut out = Vec::new();
        for addr in &shared.cfg.afs_servers {
            out.push(
                afs::probe::probe(
                    addr,
                    &shared.cfg.key,
                    "coordinator-probe",
                    Duration::from_millis(1500),
                )
                .await,
            );
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

/// Bind helper for the binary.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// The first tick always walks (the inputs present at start-up); later ticks walk while
    /// notifications are off or an input waits to settle, else once every IDLE_WALKS periods.
    fn when_the_input_folder_is_walked() {
        let p = Duration::from_millis(250);
        for (events, pending) in [(true, false), (false, false), (true, true)] {
            assert!(periodic_walk(None, events, pending, p), "the first tick");
        }
        let soon = Some(p);
        assert!(
            !periodic_walk(soon, true, false, p),
            "idle with notifications"
        );
        assert!(periodic_walk(soon, false, false, p), "no notifications");
        assert!(periodic_walk(soon, true, true, p), "a file settling");
        assert!(
            periodic_walk(Some(p * IDLE_WALKS), true, false, p),
            "the safety net"
        );
    }
}
