//! The dashboard: an HTTP page served by the coordinator (off unless `--http` is given),
//! updated live by server-sent events, with the same data as JSON and as Prometheus metrics.
//!
//! - `GET /` — the page (everything inline: no CDN, no external file)
//! - `GET /api/status` — the status JSON (as in `run/status.json`, with 10 minutes of history)
//! - `GET /events` — server-sent events: the status JSON every 0.5 s
//! - `GET /metrics` — Prometheus text format
//! - `GET /snapshots/<file>` — a snapshot file (names as listed in the status)

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::stream::Stream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::state::{status_value, Shared};

const PAGE: &str = include_str!("web/index.html");

/// Serves the dashboard on `listener` until `shutdown`.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/status", get(api_status))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .route("/snapshots", get(snapshot_list))
        .route("/snapshots/{name}", get(snapshot_file))
        .with_state(shared);
    info!(%addr, "dashboard listening");
    let stop = shutdown.clone();
    let listener = Capped {
        inner: listener,
        slots: proto::conn::Slots::new(DASHBOARD_CONNECTIONS),
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        warn!(error = %e, "dashboard server stopped");
    }
}

/// Dashboard connections at once. The dashboard has no key, so a newcomer past this closes
/// the oldest connection (a browser's live view reconnects by itself) rather than waiting
/// behind silent or slow sockets.
const DASHBOARD_CONNECTIONS: usize = 64;

/// The dashboard's listener: every connection holds a slot of [`DASHBOARD_CONNECTIONS`].
struct Capped {
    inner: TcpListener,
    slots: proto::conn::Slots,
}

/// A dashboard connection that fails its reads and writes once evicted.
struct CappedIo {
    io: tokio::net::TcpStream,
    gone: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    _slot: proto::conn::Slot,
}

impl CappedIo {
    fn evicted(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        std::future::Future::poll(self.gone.as_mut(), cx).is_ready()
    }
}

fn evicted_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "closed for newer dashboard connections",
    )
}

impl tokio::io::AsyncRead for CappedIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.evicted(cx) {
            return std::task::Poll::Ready(Err(evicted_error()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CappedIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.evicted(cx) {
            return std::task::Poll::Ready(Err(evicted_error()));
        }
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for Capped {
    type Io = CappedIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let slot = self.slots.take();
        let gone = Box::pin(slot.evicted.clone().cancelled_owned());
        (
            CappedIo {
                io,
                gone,
                _slot: slot,
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

async fn api_status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    axum::Json(status_value(&shared, true).0)
}

async fn events(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(shared, |shared| async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let data = status_value(&shared, true).0.to_string();
        Some((Ok(Event::default().event("status").data(data)), shared))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The status in Prometheus text format.
async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let st = crate::state::status(&shared);
    let (v, t) = (&st.view, &st.view.totals);
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, samples: Vec<(String, u64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    metric(
        "primes_files",
        "Input files by state.",
        "gauge",
        [
            ("done", v.files_done),
            ("in_progress", v.files_in_progress),
            ("queued", v.files_queued),
            ("failed", v.files_failed),
        ]
        .iter()
        .map(|(s, n)| (format!("{{state=\"{s}\"}}"), *n))
        .collect(),
    );
    metric(
        "primes_chunks_total",
        "Chunks known.",
        "gauge",
        vec![(String::new(), v.chunks_total)],
    );
    metric(
        "primes_chunks_done",
        "Chunks done.",
        "gauge",
        vec![(String::new(), v.chunks_done)],
    );
    metric(
        "primes_in_file",
        "Distinct primes in primes.txt.",
        "gauge",
        vec![(String::new(), st.primes)],
    );
    metric(
        "primes_dedup_set",
        "Primes held in the coordinator's dedup set (primes of primes jobs are known by their segments instead).",
        "gauge",
        vec![(String::new(), st.primes_in_set)],
    );
    let mut jobs_by_state = std::collections::BTreeMap::new();
    for state in ["running", "finishing", "done", "failed", "invalid"] {
        jobs_by_state.insert(state, 0u64);
    }
    for j in &v.jobs {
        *jobs_by_state.entry(j.state.as_str()).or_insert(0) += 1;
    }
    metric(
        "primes_jobs",
        "Generation jobs by state.",
        "gauge",
        jobs_by_state
            .into_iter()
            .map(|(s, c)| (format!("{{state=\"{s}\"}}"), c))
            .collect(),
    );
    let label = |j: &crate::core::JobStatus| {
        format!(
            "{{job=\"{}\"}}",
            j.job
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        )
    };
    metric(
        "primes_job_tasks",
        "Tasks of each generation job.",
        "gauge",
        v.jobs.iter().map(|j| (label(j), j.tasks as u64)).collect(),
    );
    metric(
        "primes_job_tasks_done",
        "Tasks of each generation job whose results are durable.",
        "gauge",
        v.jobs
            .iter()
            .map(|j| (label(j), j.tasks_done as u64))
            .collect(),
    );
    metric(
        "primes_numbers_tested_total",
        "Numbers tested in this coordinator session.",
        "counter",
        vec![(String::new(), t.numbers_tested)],
    );
    metric(
        "primes_tasks_done_total",
        "Chunks finished in this session.",
        "counter",
        vec![(String::new(), t.tasks_done)],
    );
    metric(
        "primes_tasks_failed_total",
        "Chunk attempts reported failed in this session.",
        "counter",
        vec![(String::new(), t.tasks_failed)],
    );
    metric(
        "primes_workers_lost_total",
        "Workers lost (disconnect or missed heartbeats) in this session.",
        "counter",
        vec![(String::new(), t.workers_lost)],
    );
    let mut by_state = std::collections::BTreeMap::new();
    for w in &v.workers {
        *by_state.entry(w.state.as_str()).or_insert(0u64) += 1;
    }
    metric(
        "primes_workers",
        "Workers by state.",
        "gauge",
        by_state
            .into_iter()
            .map(|(s, c)| (format!("{{state=\"{s}\"}}"), c))
            .collect(),
    );
    let up = st.servers.iter().filter(|s| s.up).count() as u64;
    metric(
        "primes_file_servers_up",
        "File servers answering the probe.",
        "gauge",
        vec![(String::new(), up)],
    );
    metric(
        "primes_last_snapshot_seq",
        "Sequence number of the last snapshot written.",
        "gauge",
        vec![(
            String::new(),
            st.last_snapshot.as_ref().map_or(0, |s| s.seq),
        )],
    );
    if let Some(g) = &st.group {
        metric(
            "primes_group_term",
            "Raft term of the coordinator group (served by its leader).",
            "gauge",
            vec![(String::new(), g.term)],
        );
        metric(
            "primes_group_leader",
            "Member number of the group's leader.",
            "gauge",
            vec![(String::new(), g.leader.unwrap_or(0))],
        );
        metric(
            "primes_group_applied_index",
            "Last log index applied by the leader's replica.",
            "gauge",
            vec![(String::new(), g.applied_index.unwrap_or(0))],
        );
        metric(
            "primes_group_matched_index",
            "Last log index known replicated to each member.",
            "gauge",
            g.members
                .iter()
                .map(|m| {
                    (
                        format!("{{member=\"coordinator-{}\"}}", m.id),
                        m.matched_index.unwrap_or(0),
                    )
                })
                .collect(),
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

async fn snapshot_list(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let dir = shared.cfg.snapshots.dir.clone();
    let names: Vec<String> = crate::snapshot::list_snapshots(&dir)
        .into_iter()
        .filter_map(|(_, p)| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .collect();
    axum::Json(names)
}

async fn snapshot_file(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    // Only names the snapshot writer makes: no path separators, no way out of the folder.
    let ok = name.starts_with("snapshot_")
        && name.ends_with(".json")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return (StatusCode::BAD_REQUEST, "not a snapshot name").into_response();
    }
    let path = shared.cfg.snapshots.dir.clone().join(&name);
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => (
            StatusCode::NOT_FOUND,
            "no such snapshot (old ones are pruned)",
        )
            .into_response(),
    }
}
