//! The coordinator's async shell: start-up and recovery (reading reports and the newest
//! snapshot), the accept loop and one task per worker connection, the input watcher, and
//! the timers (ticks, snapshots, status file, file-server probes). Every decision is the
//! machine's ([`crate::machine`]), reached through `Shared::apply`.
//!
//! Its rooms: this file holds start-up and recovery ([`run`]) and the worker connections;
//! `watch` the input watchers (the folders `data/input` and `data/jobs`, or the file
//! server's listing); `timers` the timers (ticks, snapshots, the status file, file-server
//! probes) and the final snapshot.

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
use tracing::{info, warn};

use crate::core::{Core, Key, Now, ReportStatus};
use crate::durable::Durable;
use crate::inputs::{list_files, InputWatcher};
use crate::machine::{Coordinator, Event};
use crate::report::read_report;
use crate::snapshot::{list_snapshots, newest_snapshot, Snapshots};
use crate::state::{Out, Shared};

pub use crate::state::Config;

mod timers;
mod watch;

use timers::{
    final_snapshot, probe_loop, snapshot_loop, status_loop, tick_loop, write_status,
    FINAL_FLUSH_LIMIT,
};
pub(crate) use watch::list_watch;
use watch::{folder_loop, listing_loop, start_notify, Folder, FIRST_LISTING};

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
    // The input files: the local folder, or the file servers' listing (and whether its
    // first listing is still to come).
    let mut listings = None;
    // The inputs, and the content versions the file server listed (by input) when it knew
    // them.
    let (mut current, versions) = if cfg.inputs_from_afs {
        let mut rx = match &cfg.listing {
            Some(feed) => feed.subscribe(shutdown.clone()),
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(list_watch(&cfg).run(tx, shutdown.clone()));
                rx
            }
        };
        // Issue 27: workers are served after this wait whether or not a server answered; a
        // listing that comes later brings its done reports with it ([`listing_loop`]).
        let listed = match tokio::time::timeout(FIRST_LISTING, rx.recv()).await {
            Ok(Some(l)) => {
                info!(
                    server = l.server,
                    files = l.files.len(),
                    "inputs listed by the file server"
                );
                Some(l.files)
            }
            _ => {
                warn!(
                    "no file server listed the inputs within {FIRST_LISTING:?}; serving workers \
                     meanwhile (the inputs are queued, and those already done found, once one \
                     answers)"
                );
                None
            }
        };
        listings = Some((rx, listed.is_none()));
        split_listing(listed.unwrap_or_default())
    } else {
        (list_files(&cfg.input), HashMap::new())
    };
    let found = find_reports(&cfg.output, &mut current, &versions);
    let done = found.len();
    for f in &found {
        watcher.mark_reported(&f.file, f.source);
    }
    machine.core_mut().reports_found(found);
    // The entries recovery may resume: the inputs, and the jobs below.
    let mut entries: HashMap<Key, _> = current
        .iter()
        .map(|(name, fp)| (Key::file(name.as_str()), *fp))
        .collect();
    // What the listing loop starts from (the inputs only).
    let current_inputs = if listings.is_some() {
        current
    } else {
        HashMap::new()
    };
    // Jobs: a matching report (done, or invalid) means nothing to do; a valid job the
    // snapshot shows in progress resumes.
    let mut job_watcher = InputWatcher::new(&cfg.jobs, cfg.quiet_ms);
    let mut plans = HashMap::new();
    for (rel, fp) in list_files(&cfg.jobs) {
        let name = crate::jobs::job_name_of(&rel);
        match crate::report::read_job_report(&cfg.output, &name) {
            Some(r) if r.source == fp && (r.status == "done" || r.status == "invalid") => {
                machine.core_mut().job_reported(&name, fp, &r);
                job_watcher.mark_reported(&rel, fp);
                continue;
            }
            _ => {}
        }
        if let Ok(job) = crate::jobs::read_job(&cfg.jobs, &rel, cfg.segment_numbers) {
            entries.insert(Key::job(name.as_str()), fp);
            plans.insert(Key::job(name), job);
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
        let files = machine.recover(&snap, &entries, now);
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
    let shared = Shared::new(cfg.clone(), durable, machine, (total, in_set));

    let tracker = TaskTracker::new();
    let _notify = match listings {
        Some((rx, late)) => {
            tracker.spawn(listing_loop(
                shared.clone(),
                watcher,
                rx,
                current_inputs,
                late,
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
    let flusher = tokio::spawn(crate::flusher::flush_loop(shared.clone(), shutdown.clone()));

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
    shared.replicating.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        tracker.wait().await;
        shared.replicating.wait().await;
    })
    .await;
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
    // The result, and who ended the connection for the log line (a worker killed or cut
    // off is seen here first; its chunks go back to the queue when the machine hears of it).
    let (result, ended) = loop {
        let msg = tokio::select! {
            _ = closed.cancelled() => break (Ok(()), "closed here"),
            _ = shutdown.cancelled() => break (Ok(()), "coordinator stopping"),
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
            Ok(None) => break (Ok(()), "closed by the worker"),
            Err(e @ (ProtoError::Io(_) | ProtoError::Truncated)) => break (Err(e), "lost"),
            Err(e) => {
                warn!(worker = worker_id, error = %e, "bad message from worker; closing its connection");
                shared.close(conn_id, format!("bad message: {e}"));
                break (Err(e), "bad message");
            }
        }
    };
    shared.disconnect(conn_id);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer_task).await;
    info!(
        worker = worker_id,
        conn = conn_id,
        ended,
        "worker connection closed"
    );
    result
}

/// Bind helper for the binary.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// A file server's listing as the fingerprints of its files and the content versions it
/// knew.
fn split_listing(
    listed: HashMap<String, (crate::core::Fingerprint, Option<String>)>,
) -> (
    HashMap<String, crate::core::Fingerprint>,
    HashMap<String, String>,
) {
    let mut versions = HashMap::new();
    let mut files = HashMap::with_capacity(listed.len());
    for (name, (fp, version)) in listed {
        if let Some(v) = version {
            versions.insert(name.clone(), v);
        }
        files.insert(name, fp);
    }
    (files, versions)
}

/// The inputs in `current` whose `done` report exists for their version: nothing to do for
/// them. A report whose content version is the listed one stands for its file even if the
/// fingerprint is another server's (a restart while a backup answers): that file's entry in
/// `current` becomes the report's fingerprint. Reads the reports: blocking.
fn find_reports(
    output: &std::path::Path,
    current: &mut HashMap<String, crate::core::Fingerprint>,
    versions: &HashMap<String, String>,
) -> Vec<crate::core::FoundReport> {
    let mut found = Vec::new();
    for (name, fp) in current.iter_mut() {
        let Some(r) = read_report(output, name) else {
            continue;
        };
        let same_content = versions
            .get(name)
            .is_some_and(|v| r.content_version.contains(v));
        if r.source != *fp && r.source.size == fp.size && same_content {
            *fp = r.source;
        }
        if r.source != *fp {
            continue;
        }
        if r.status == ReportStatus::Done {
            found.push(crate::core::FoundReport {
                file: name.clone(),
                source: r.source,
                chunks: r.chunks,
                numbers: r.numbers_read,
                version: match r.content_version.as_slice() {
                    [v] => Some(v.clone()),
                    _ => None,
                },
            });
        } else {
            // Its cause (file servers down, say) may have gone: the first scan queues it.
            info!(file = name, errors = ?r.errors, "a file failed before; retrying it");
        }
    }
    found
}
