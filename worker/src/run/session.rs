//! One session with one coordinator: connect, register (refusing a leader of an older
//! term), then run the writer, the heartbeats and the executors while reading the
//! coordinator's messages (assignments, cancellations, snapshot markers) until the
//! connection ends or falls silent. How it ended tells the caller where to go next.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::auth::client_handshake;
use proto::lock;
use proto::msg::{CoordMsg, WorkerMsg, MAX_LINE, SERVICE};
use proto::{Connection, ProtoError};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::executor::Executor;
use super::inputs::Afs;
use super::WorkerConfig;
use crate::tasks::{BatchLimits, Tasks};

/// How a session ended.
pub(super) enum SessionEnd {
    Shutdown,
    Lost(String),
    /// The coordinator refused this worker for good (its id is in use).
    Refused(String),
    /// `--fail-prob` fired: the process must end as if it crashed.
    InjectedCrash,
    /// A coordinator group's member that does not lead: the leader's address if it knows.
    NotLeader(Option<String>),
}

/// Runs one session with the coordinator at `addr`; `max_term` is the highest term
/// followed so far (kept across sessions).
pub(super) async fn session(
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
            if writer.write_msg(&proto::msg::OnWire(&m)).await.is_err() {
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
            let ex = Executor {
                cfg: cfg.clone(),
                afs: afs.for_executor(n),
                local: local.clone(),
                out: out_tx.clone(),
                work: work_rx.clone(),
                crashed: crashed.clone(),
            };
            tokio::spawn(ex.run(end.clone()))
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
