//! The dashboard: an HTTP page served by the coordinator (off unless `--http` is given),
//! updated live by server-sent events, with the same data as JSON and as Prometheus metrics.
//!
//! - `GET /` — the page (everything inline: no CDN, no external file)
//! - `GET /api/status` — the status JSON (as in `run/status.json`, with 10 minutes of history)
//! - `GET /events` — server-sent events: the status JSON every 0.5 s
//! - `GET /metrics` — Prometheus text format
//! - `GET /snapshots/<file>` — a snapshot file (names as listed in the status)
//! - `GET /results`, `/primes.txt`, `/reports`, `/reports/<name>`, `/snapshots` — the
//!   member's own results, read-only ([`crate::results`]), on every member

use std::convert::Infallible;
use std::path::PathBuf;
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
    let results = results_routes(shared.durable.results(), shared.cfg.snapshots.dir.clone());
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/status", get(api_status))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .with_state(shared)
        .merge(results);
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

/// The leader's status with what the members say of themselves (as `coordinator status`
/// composes it: the same `running`, the same `coordinators`).
fn live_status(shared: &Shared) -> serde_json::Value {
    let mut v = status_value(shared, true).0;
    let dir = crate::members::status_dir(&shared.cfg.status_file);
    let size = v["group"]["members"].as_array().map_or(0, |m| m.len());
    let coordinators = crate::members::collect(&dir, size);
    crate::status::compose(
        &mut v,
        coordinators,
        Some(crate::members::Process::Alive),
        crate::members::now_ms(),
    );
    v
}

async fn api_status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    axum::Json(live_status(&shared))
}

async fn events(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(shared, |shared| async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let data = live_status(&shared).to_string();
        Some((Ok(Event::default().event("status").data(data)), shared))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The status in Prometheus text format.
async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    metrics_text(&live_status(&shared))
}

/// Prometheus text of a status (the leader's live one, or, on a member that does not
/// serve, the last leader's file with the members' views): the same numbers as
/// `coordinator status --json`.
fn metrics_text(v: &serde_json::Value) -> ([(header::HeaderName, &'static str); 1], String) {
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, samples: Vec<(String, u64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let label = |k: &str, val: &str| {
        format!(
            "{{{k}=\"{}\"}}",
            val.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        )
    };
    metric(
        "primes_up",
        "1 if a coordinator runs and serves (the status is live), else 0.",
        "gauge",
        vec![(String::new(), u64::from(v["running"] == true))],
    );
    metric(
        "primes_files",
        "Input files by state.",
        "gauge",
        ["done", "in_progress", "queued", "failed"]
            .iter()
            .map(|s| (label("state", s), n(&v[format!("files_{s}").as_str()])))
            .collect(),
    );
    metric(
        "primes_chunks_total",
        "Chunks known.",
        "gauge",
        vec![(String::new(), n(&v["chunks_total"]))],
    );
    metric(
        "primes_chunks_done",
        "Chunks done.",
        "gauge",
        vec![(String::new(), n(&v["chunks_done"]))],
    );
    metric(
        "primes_in_file",
        "Distinct primes in primes.txt.",
        "gauge",
        vec![(String::new(), n(&v["primes_in_file"]))],
    );
    metric(
        "primes_dedup_set",
        "Primes held in the coordinator's dedup set (primes of primes jobs are known by their segments instead).",
        "gauge",
        vec![(String::new(), n(&v["primes_in_set"]))],
    );
    let jobs: Vec<&serde_json::Value> = v["jobs"].as_array().into_iter().flatten().collect();
    let mut jobs_by_state = std::collections::BTreeMap::new();
    for state in ["running", "finishing", "done", "failed", "invalid"] {
        jobs_by_state.insert(state.to_string(), 0u64);
    }
    for j in &jobs {
        *jobs_by_state
            .entry(j["state"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    metric(
        "primes_jobs",
        "Generation jobs by state.",
        "gauge",
        jobs_by_state
            .iter()
            .map(|(s, c)| (label("state", s), *c))
            .collect(),
    );
    let job = |j: &&serde_json::Value| label("job", j["job"].as_str().unwrap_or("?"));
    metric(
        "primes_job_tasks",
        "Tasks of each generation job.",
        "gauge",
        jobs.iter().map(|j| (job(j), n(&j["tasks"]))).collect(),
    );
    metric(
        "primes_job_tasks_done",
        "Tasks of each generation job whose results are durable.",
        "gauge",
        jobs.iter().map(|j| (job(j), n(&j["tasks_done"]))).collect(),
    );
    let t = &v["totals"];
    for (name, key, help) in [
        (
            "primes_numbers_tested_total",
            "numbers_tested",
            "Numbers tested in this coordinator session.",
        ),
        (
            "primes_tasks_done_total",
            "tasks_done",
            "Chunks finished in this session.",
        ),
        (
            "primes_tasks_failed_total",
            "tasks_failed",
            "Chunk attempts reported failed in this session.",
        ),
        (
            "primes_workers_lost_total",
            "workers_lost",
            "Workers lost (disconnect or missed heartbeats) in this session.",
        ),
    ] {
        metric(name, help, "counter", vec![(String::new(), n(&t[key]))]);
    }
    let mut by_state = std::collections::BTreeMap::new();
    for w in v["workers"].as_array().into_iter().flatten() {
        *by_state
            .entry(w["state"].as_str().unwrap_or("?").to_string())
            .or_insert(0u64) += 1;
    }
    metric(
        "primes_workers",
        "Workers by state (as the last coordinator saw them when primes_up is 0).",
        "gauge",
        by_state
            .iter()
            .map(|(s, c)| (label("state", s), *c))
            .collect(),
    );
    let servers: Vec<&serde_json::Value> =
        v["file_servers"].as_array().into_iter().flatten().collect();
    metric(
        "primes_file_servers_up",
        "File servers answering the probe.",
        "gauge",
        vec![(
            String::new(),
            servers.iter().filter(|s| s["up"] == true).count() as u64,
        )],
    );
    metric(
        "primes_file_server_up",
        "1 if this file server answers the probe (the first listed is the primary).",
        "gauge",
        servers
            .iter()
            .map(|s| {
                (
                    label("addr", s["addr"].as_str().unwrap_or("?")),
                    u64::from(s["up"] == true),
                )
            })
            .collect(),
    );
    metric(
        "primes_last_snapshot_seq",
        "Sequence number of the last snapshot written.",
        "gauge",
        vec![(String::new(), n(&v["last_snapshot"]["seq"]))],
    );
    if let Some(g) = v["group"].as_object() {
        let gv = |k: &str| g.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        metric(
            "primes_group_term",
            "Raft term of the coordinator group (served by its leader).",
            "gauge",
            vec![(String::new(), gv("term"))],
        );
        metric(
            "primes_group_leader",
            "Member number of the group's leader (0: none serves).",
            "gauge",
            vec![(
                String::new(),
                v["coordinators"]["leader"]
                    .as_u64()
                    .unwrap_or(if v["coordinators"].is_null() {
                        gv("leader")
                    } else {
                        0
                    }),
            )],
        );
        metric(
            "primes_group_applied_index",
            "Last log index applied by the leader's replica.",
            "gauge",
            vec![(String::new(), gv("applied_index"))],
        );
        metric(
            "primes_group_matched_index",
            "Last log index known replicated to each member.",
            "gauge",
            g.get("members")
                .and_then(|m| m.as_array())
                .into_iter()
                .flatten()
                .map(|m| {
                    (
                        label("member", &format!("coordinator-{}", n(&m["id"]))),
                        n(&m["matched_index"]),
                    )
                })
                .collect(),
        );
    }
    if let Some(c) = v["coordinators"].as_object() {
        let rows: Vec<&serde_json::Value> = c
            .get("members")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
            .collect();
        let member =
            |m: &&serde_json::Value| label("member", &format!("coordinator-{}", n(&m["id"])));
        metric(
            "primes_coordinators_up",
            "Members of the coordinator group up (alive and reporting).",
            "gauge",
            vec![(
                String::new(),
                c.get("up")
                    .and_then(|u| u.as_array())
                    .map_or(0, |u| u.len() as u64),
            )],
        );
        metric(
            "primes_coordinator_up",
            "1 if this member is up (its own view, not the leader's).",
            "gauge",
            rows.iter()
                .map(|m| (member(m), u64::from(m["up"] == true)))
                .collect(),
        );
        metric(
            "primes_coordinator_applied_index",
            "Last log index this member applied, as it says itself.",
            "gauge",
            rows.iter()
                .map(|m| (member(m), n(&m["applied_index"])))
                .collect(),
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// The dashboard of a member that does not serve workers (a follower, or any member while
/// no one leads): the same page and endpoints, from the last leader's status file and the
/// members' own views (as `coordinator status` shows them), so every member's dashboard
/// port answers. Live views end when `stop` is cancelled (this member begins to serve).
pub(crate) async fn serve_member(
    listener: TcpListener,
    status_file: std::path::PathBuf,
    snapshots: std::path::PathBuf,
    results: Option<Arc<dyn crate::results::Source>>,
    stop: CancellationToken,
) {
    let read = move || {
        crate::status::read(&status_file)
            .unwrap_or_else(|e| serde_json::json!({"running": false, "error": format!("{e:#}")}))
    };
    let (r1, r2, r3) = (read.clone(), read.clone(), read);
    let stop_events = stop.clone();
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/status", get(move || async move { axum::Json(r1()) }))
        .route(
            "/events",
            get(move || async move {
                let stream = futures::stream::unfold(r2, |r| async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let data = r().to_string();
                    Some((
                        Ok::<_, Infallible>(Event::default().event("status").data(data)),
                        r,
                    ))
                });
                use futures::StreamExt;
                let stop = stop_events.clone();
                Sse::new(stream.take_until(async move { stop.cancelled().await }))
                    .keep_alive(KeepAlive::default())
            }),
        )
        .route("/metrics", get(move || async move { metrics_text(&r3()) }))
        .merge(results_routes(results, snapshots));
    let listener = Capped {
        inner: listener,
        slots: proto::conn::Slots::new(DASHBOARD_CONNECTIONS),
    };
    let stop2 = stop.clone();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop2.cancelled().await })
        .await
    {
        warn!(error = %e, "member dashboard stopped");
    }
}

/// The read-only results endpoints ([`crate::results`]): the member's own files when the
/// group gives a source; the snapshots also from `root_snapshots` (where a leader on this
/// host writes them).
fn results_routes(
    source: Option<Arc<dyn crate::results::Source>>,
    root_snapshots: PathBuf,
) -> Router {
    let dirs = {
        let source = source.clone();
        let root = root_snapshots.clone();
        move || {
            let mut d = Vec::new();
            if let Some(s) = &source {
                d.push(crate::results::snapshots_dir(&s.dir()));
            }
            d.push(root.clone());
            d
        }
    };
    let d1 = dirs.clone();
    let mut app = Router::new()
        .route(
            "/snapshots",
            get(move || async move { axum::Json(crate::results::snapshot_names(&d1())) }),
        )
        .route(
            "/snapshots/{name}",
            get(move |Path(name): Path<String>| async move {
                if !crate::results::snapshot_name_ok(&name) {
                    return (StatusCode::BAD_REQUEST, "not a snapshot name").into_response();
                }
                for d in dirs() {
                    let path = d.join(&name);
                    if path.is_file() {
                        return stream_file(path, None, "application/json").await;
                    }
                }
                (
                    StatusCode::NOT_FOUND,
                    "no such snapshot (old ones are pruned)",
                )
                    .into_response()
            }),
        );
    let Some(source) = source else {
        return app;
    };
    let (s1, s2, s3, s4) = (source.clone(), source.clone(), source.clone(), source);
    app = app
        .route(
            "/results",
            get(move || async move { axum::Json(s1.info()) }),
        )
        .route(
            "/primes.txt",
            get(move || async move {
                // The length its applied entries wrote: whole lines, whatever is being
                // appended while this streams.
                let info = s2.info();
                stream_file(
                    s2.dir().join("primes.txt"),
                    Some(info.primes_bytes),
                    "text/plain; charset=utf-8",
                )
                .await
            }),
        )
        .route(
            "/reports",
            get(move || async move {
                let output = s3.dir().join("output");
                axum::Json(
                    tokio::task::spawn_blocking(move || crate::results::report_names(&output))
                        .await
                        .unwrap_or_default(),
                )
            }),
        )
        .route(
            "/reports/{*name}",
            get(move |Path(name): Path<String>| async move {
                if !crate::results::report_name_ok(&name) {
                    return (StatusCode::BAD_REQUEST, "not a report name").into_response();
                }
                let kind = if name.ends_with(".json") {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                };
                stream_file(s4.dir().join("output").join(&name), None, kind).await
            }),
        );
    app
}

/// Streams the first `len` bytes of `path` (the whole file without `len`) with that
/// Content-Length, in 64 KiB reads: nothing holds the file in memory. A file shorter than
/// `len` ends the body early, which the client sees as a short body.
async fn stream_file(path: PathBuf, len: Option<u64>, kind: &'static str) -> Response {
    use tokio::io::AsyncReadExt;
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (StatusCode::NOT_FOUND, "no such file").into_response()
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot open a result file");
            return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file").into_response();
        }
    };
    let size = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot stat a result file");
            return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file").into_response();
        }
    };
    let len = len.unwrap_or(size).min(size);
    let stream = futures::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; (left.min(64 << 10)) as usize];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)),
                    (file, left - n as u64),
                ))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    (
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}
