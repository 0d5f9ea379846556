//! Serving one connection: authentication and `hello`, then requests one at a time
//! (fetch, range, stat, list, store, replicate, delete, watch_list, ping) with the
//! connection's pushed callback breaks between them, until the client leaves, falls silent
//! or the server stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use proto::auth::{authenticate, Admitted};
use proto::{Connection, ProtoError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::callbacks::Push;
use super::scan::warm_versions;
use super::send::{send_file, send_range};
use super::{blocking, reply_error, Shared, SMALL_FETCH};
use crate::msg::{ErrorCode, FileInfo, ListedFile, Reply, Request, Role, MAX_LINE};
use crate::store::{Fingerprint, Store, StoreError};
use crate::SERVICE;

/// Serves one connection until it closes; its promises are ended by the caller.
pub(super) async fn serve_connection(
    shared: &Arc<Shared>,
    stream: TcpStream,
    admission: proto::conn::Admission,
    id: u64,
    shutdown: &CancellationToken,
) -> Result<(), ProtoError> {
    let (mut conn, _permit) =
        match authenticate(admission, stream, &shared.cfg.key, SERVICE, MAX_LINE).await? {
            Admitted::Ready(conn, permit) => (conn, permit),
            Admitted::Full(mut conn) => {
                let _ = conn
                    .send(&Reply::Error {
                        code: ErrorCode::Internal,
                        message: "too many connections; try another replica or later".into(),
                    })
                    .await;
                return Err(ProtoError::Peer("connection limit reached".into()));
            }
        };
    let client = match conn
        .expect_msg::<Request>(proto::auth::HANDSHAKE_TIMEOUT)
        .await?
    {
        Request::Hello { client_id } => client_id,
        other => {
            let _ = conn
                .send(&Reply::Error {
                    code: ErrorCode::BadRequest,
                    message: "expected hello".into(),
                })
                .await;
            return Err(ProtoError::Malformed(format!(
                "expected hello, got {other:?}"
            )));
        }
    };
    conn.send(&Reply::Welcome {
        server_id: shared.cfg.id.clone(),
        role: shared.cfg.role,
        local: shared.local.clone(),
    })
    .await?;
    debug!(client, peer = %conn.peer, "client connected");
    let (tx, mut breaks) = mpsc::unbounded_channel();
    shared.callbacks.connect(id, tx);
    loop {
        let req = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            Some(push) = breaks.recv() => {
                match push {
                    Push::Break(path) => {
                        shared.stats.breaks_sent.fetch_add(1, Ordering::Relaxed);
                        conn.send(&Reply::CallbackBreak { path }).await?;
                    }
                    Push::ListChanged => conn.send(&Reply::ListChanged {}).await?,
                }
                continue;
            }
            r = tokio::time::timeout(shared.cfg.idle_timeout, conn.read_msg::<Request>()) => match r {
                Err(_) => return Err(ProtoError::Timeout(shared.cfg.idle_timeout)),
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(req))) => req,
                Ok(Err(ProtoError::Malformed(m))) => {
                    let _ = conn.send(&Reply::Error { code: ErrorCode::BadRequest, message: m.clone() }).await;
                    return Err(ProtoError::Malformed(m));
                }
                Ok(Err(e)) => {
                    let _ = conn.send(&Reply::Error { code: ErrorCode::BadRequest, message: e.to_string() }).await;
                    return Err(e);
                }
            },
        };
        handle_request(shared, &mut conn, id, req).await?;
    }
}

async fn handle_request(
    shared: &Arc<Shared>,
    conn: &mut Connection,
    id: u64,
    req: Request,
) -> Result<(), ProtoError> {
    let store = shared.store.clone();
    let req_kind = match req {
        Request::Delete { .. } => ReqKind::Delete,
        Request::ReplicateDelete { .. } => ReqKind::ReplicateDelete,
        _ => ReqKind::Other,
    };
    match req {
        Request::Fetch { path, have_version } => {
            if fetch_small(shared, conn, id, &path, have_version.as_deref()).await? {
                return Ok(());
            }
            let info = match lookup(&store, path).await {
                Ok((i, _)) => i,
                Err(e) => return reply_error(conn, &e).await,
            };
            shared.promise(&info.path, id);
            if have_version.as_deref() == Some(info.version.as_str()) {
                return not_modified(shared, conn, info).await;
            }
            shared.stats.fetches.fetch_add(1, Ordering::Relaxed);
            send_file(shared, conn, &info).await
        }
        Request::FetchRange {
            path,
            start,
            len,
            version,
        } => {
            let (rel, fp, known) = match range_state(&store, path, version.as_deref()).await {
                Ok(x) => x,
                Err(e) => return reply_error(conn, &e).await,
            };
            shared.stats.fetches.fetch_add(1, Ordering::Relaxed);
            send_range(shared, conn, &rel, fp, known, start, len).await
        }
        Request::Stat { path } => match blocking(move || store.info(&path)).await {
            Ok(i) => {
                conn.send(&Reply::Stat {
                    path: i.path,
                    size: i.size,
                    version: i.version,
                })
                .await
            }
            Err(e) => reply_error(conn, &e).await,
        },
        Request::List {} => {
            let files = tokio::task::spawn_blocking(move || store.list())
                .await
                .unwrap_or_default();
            conn.send(&Reply::Listing { files }).await
        }
        Request::Store { path, size } => {
            if shared.cfg.role != Role::Primary {
                return refuse_body(
                    conn,
                    ErrorCode::ReadOnly,
                    "this server is a backup: write to the primary",
                )
                .await;
            }
            receive_file(shared, conn, &path, size, None).await
        }
        Request::Replicate {
            path,
            size,
            version,
        } => {
            if shared.cfg.role != Role::Backup {
                return refuse_body(
                    conn,
                    ErrorCode::ReadOnly,
                    "this server is the primary: it does not take replicas",
                )
                .await;
            }
            receive_file(shared, conn, &path, size, Some(version)).await
        }
        Request::Delete { path } | Request::ReplicateDelete { path } => {
            // Clients delete on the primary; only a primary's replicator deletes on a backup.
            let allowed = match shared.cfg.role {
                Role::Primary => matches!(req_kind, ReqKind::Delete),
                Role::Backup => matches!(req_kind, ReqKind::ReplicateDelete),
            };
            if !allowed {
                return conn
                    .send(&Reply::Error {
                        code: ErrorCode::ReadOnly,
                        message: format!("a {} does not take that delete", shared.cfg.role),
                    })
                    .await;
            }
            match blocking(move || store.delete(&path)).await {
                Ok(rel) => {
                    shared.break_callbacks(&rel);
                    conn.send(&Reply::Deleted { path: rel }).await
                }
                Err(e) => reply_error(conn, &e).await,
            }
        }
        Request::WatchList {} => {
            // The promise first: a change during the scan below is then pushed after it.
            shared.callbacks.watch_list(id);
            let s = shared.store.clone();
            let mut files: Vec<ListedFile> = tokio::task::spawn_blocking(move || {
                s.scan()
                    .into_iter()
                    .map(|(path, fingerprint)| ListedFile {
                        version: s.known_version(&path, &fingerprint),
                        path,
                        fingerprint,
                    })
                    .collect()
            })
            .await
            .unwrap_or_default();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            conn.send(&Reply::FileList { files }).await
        }
        Request::Ping {} => conn.send(&Reply::Pong {}).await,
        Request::Hello { .. } => {
            let _ = conn
                .send(&Reply::Error {
                    code: ErrorCode::BadRequest,
                    message: "hello sent twice".into(),
                })
                .await;
            Err(ProtoError::Malformed("hello sent twice".into()))
        }
    }
}

enum ReqKind {
    Delete,
    ReplicateDelete,
    Other,
}

/// Refuses a request whose body follows: the body cannot be skipped safely without reading
/// it, so say why and close the connection.
async fn refuse_body(
    conn: &mut Connection,
    code: ErrorCode,
    message: &str,
) -> Result<(), ProtoError> {
    let _ = conn
        .send(&Reply::Error {
            code,
            message: message.to_string(),
        })
        .await;
    Err(ProtoError::Peer(format!("refused a write: {message}")))
}

/// Serves a fetch of a small file whole from memory; `Ok(false)` when the file is not small
/// (or changed while it was read): the caller serves it the streaming way. The callback
/// promise is registered before the read, so a change after the read is always broken.
async fn fetch_small(
    shared: &Shared,
    conn: &mut Connection,
    id: u64,
    path: &str,
    have_version: Option<&str>,
) -> Result<bool, ProtoError> {
    let store = &shared.store;
    let rel = match crate::names::check_rel(path) {
        Ok(r) => r,
        Err(_) => return Ok(false), // the streaming path words the refusal
    };
    // Held by the client and unchanged since its version was computed: no need to read it.
    if let Some(Ok(Some((info, _)))) = have_version.map(|_| store.cached_info(&rel)) {
        if have_version == Some(info.version.as_str()) {
            shared.promise(&info.path, id);
            not_modified(shared, conn, info).await?;
            return Ok(true);
        }
    }
    shared.promise(&rel, id);
    let (info, bytes) = match store.read_small(&rel, SMALL_FETCH) {
        Ok(Some(x)) => x,
        Ok(None) => return Ok(false),
        Err(e) => {
            reply_error(conn, &e).await?;
            return Ok(true);
        }
    };
    if have_version == Some(info.version.as_str()) {
        not_modified(shared, conn, info).await?;
        return Ok(true);
    }
    shared.stats.fetches.fetch_add(1, Ordering::Relaxed);
    conn.write_msg(&Reply::File {
        path: info.path.clone(),
        size: info.size,
        version: info.version.clone(),
    })
    .await?;
    conn.write_raw(&bytes).await?;
    shared
        .stats
        .body_bytes_sent
        .fetch_add(info.size, Ordering::Relaxed);
    conn.send(&Reply::FileEnd {
        version: info.version,
    })
    .await?;
    Ok(true)
}

/// Answers a fetch of a version the client already holds (no body).
async fn not_modified(
    shared: &Shared,
    conn: &mut Connection,
    info: FileInfo,
) -> Result<(), ProtoError> {
    shared.stats.not_modified.fetch_add(1, Ordering::Relaxed);
    conn.send(&Reply::NotModified {
        path: info.path,
        version: info.version,
    })
    .await
}

/// Size, version and fingerprint of `path`: inline when the version is known, on a blocking
/// thread when the content has to be hashed.
async fn lookup(store: &Arc<Store>, path: String) -> Result<(FileInfo, Fingerprint), StoreError> {
    match store.cached_info(&path)? {
        Some(hit) => Ok(hit),
        None => {
            let s = store.clone();
            blocking(move || s.info_fp(&path)).await
        }
    }
}

/// Files up to this size have their version computed before a range is served (a few ms);
/// larger ones are served at once, pinned by fingerprint, while they are hashed.
const RANGE_WAIT_FOR_VERSION: u64 = 64 << 20;

/// The state a range of `path` is served from: its normal path, fingerprint and version
/// (if known; see [`range_lookup`]), or `changed` when `version` (a content version or a
/// pin) no longer names it. Shared by `fetch_range` and the local socket.
pub(super) async fn range_state(
    store: &Arc<Store>,
    path: String,
    version: Option<&str>,
) -> Result<(String, Fingerprint, Option<String>), StoreError> {
    let (rel, fp, known) = range_lookup(store, path).await?;
    if version.is_some_and(|v| v != fp.token() && Some(v) != known.as_deref()) {
        return Err(StoreError {
            code: ErrorCode::Changed,
            message: format!("{rel} is no longer the version asked for"),
        });
    }
    Ok((rel, fp, known))
}

/// Path, fingerprint and, if known, content version of a file for a range read. A large
/// file whose version is not known yet is being hashed in the background meanwhile.
async fn range_lookup(
    store: &Arc<Store>,
    path: String,
) -> Result<(String, Fingerprint, Option<String>), StoreError> {
    if let Some((i, fp)) = store.cached_info(&path)? {
        return Ok((i.path, fp, Some(i.version)));
    }
    let (rel, fp) = store.stat(&path)?;
    if fp.size <= RANGE_WAIT_FOR_VERSION {
        let (i, fp) = lookup(store, path).await?;
        return Ok((i.path, fp, Some(i.version)));
    }
    warm_versions(store, vec![rel.clone()]);
    Ok((rel, fp, None))
}

async fn receive_file(
    shared: &Shared,
    conn: &mut Connection,
    path: &str,
    size: u64,
    expect_version: Option<String>,
) -> Result<(), ProtoError> {
    let pending = match shared.store.begin_write(path, size) {
        Ok(p) => p,
        Err(e) => return refuse_body(conn, e.code, &e.message).await,
    };
    let mut tmp = match tokio::fs::File::create(&pending.tmp).await {
        Ok(f) => f,
        Err(e) => {
            shared.store.abort_write(pending);
            return refuse_body(
                conn,
                ErrorCode::Internal,
                &format!("cannot create temporary file: {e}"),
            )
            .await;
        }
    };
    let got = conn
        .read_body(size, &mut tmp, Some(shared.cfg.idle_timeout))
        .await;
    let flushed = tmp.flush().await;
    drop(tmp);
    if let Err(e) = got {
        shared.store.abort_write(pending);
        return Err(e);
    }
    if let Err(e) = flushed {
        shared.store.abort_write(pending);
        return refuse_body(
            conn,
            ErrorCode::Internal,
            &format!("writing temporary file: {e}"),
        )
        .await;
    }
    let store = shared.store.clone();
    match blocking(move || store.finish_write(pending)).await {
        Ok(info) => {
            if let Some(v) = expect_version {
                if v != info.version {
                    warn!(
                        path = info.path,
                        "replica arrived with a different version; the next sync repairs it"
                    );
                }
            }
            shared.break_callbacks(&info.path);
            conn.send(&Reply::Stored {
                path: info.path,
                version: info.version,
            })
            .await
        }
        Err(e) => reply_error(conn, &e).await,
    }
}
