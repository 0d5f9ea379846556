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
//!
//! Its rooms: this file holds the two servers (the serving leader's, live, and a
//! member's that does not serve, from the status file) and the status endpoints;
//! `capped.rs` the listener that caps connections; `metrics.rs` the Prometheus text;
//! `results.rs` the results endpoints.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use futures::stream::Stream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::state::{status_value, Shared};

mod capped;
mod metrics;
mod results;

use capped::{Capped, DASHBOARD_CONNECTIONS};
use metrics::metrics_text;
use results::results_routes;

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
