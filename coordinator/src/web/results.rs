//! The read-only results endpoints beside the dashboard (`/results`, `/primes.txt`,
//! `/reports`, `/snapshots`), streamed from the member's files.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tracing::warn;

/// The read-only results endpoints ([`crate::results`]): the member's own files when the
/// group gives a source; the snapshots also from `root_snapshots` (where a leader on this
/// host writes them).
pub(super) fn results_routes(
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
