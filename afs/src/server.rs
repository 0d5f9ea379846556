//! The file server: start-up and the accept loop, and what every part shares.
//!
//! Every server (primary or backup) serves reads from its own root, keeps a callback promise
//! for each (connection, file) it sent or revalidated, and breaks the promises of a file when
//! its scan (or a write through the protocol) sees the file change or vanish. A primary also
//! runs one replicator per backup: it lists the backup, pushes every file whose version
//! differs, deletes what the primary no longer has, then waits for the next change — so a
//! backup that was down catches up as soon as it is reachable again.
//!
//! The parts, by job:
//! - `serve`: one connection: authentication, then its requests;
//! - `send`: file and range bodies with their trailers;
//! - `callbacks`: who holds a promise for which file, and breaking them;
//! - `scan`: finding changes in the root (periodic scans, file notifications);
//! - `replicate`: a primary keeping its backups up to date.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto::{ClusterKey, Connection, ProtoError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::msg::{ErrorCode, Reply, Role};
use crate::store::{Store, StoreError};

mod callbacks;
mod local;
mod replicate;
mod scan;
mod send;
mod serve;

/// Server settings (validated by the binary).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub id: String,
    pub role: Role,
    /// Backup addresses a primary replicates to.
    pub backups: Vec<String>,
    /// How often the root is scanned for changes made outside the protocol.
    pub scan_interval: Duration,
    /// Most connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// A connection silent for this long is closed (the client reconnects when it needs to).
    pub idle_timeout: Duration,
    pub key: ClusterKey,
    /// A Unix socket offered to clients on this host for short-circuit range reads (see
    /// `local`); `None`: TCP only.
    pub local_socket: Option<std::path::PathBuf>,
}

/// Counters, for logs and tests.
#[derive(Default, Debug)]
pub struct Stats {
    pub body_bytes_sent: AtomicU64,
    pub fetches: AtomicU64,
    pub not_modified: AtomicU64,
    pub breaks_sent: AtomicU64,
    /// Ranges answered with the open file on the local socket.
    pub local_ranges: AtomicU64,
}

struct Shared {
    store: Arc<Store>,
    cfg: ServerConfig,
    callbacks: callbacks::Callbacks,
    /// Asks the scan loop for a scan now (the root's notifications).
    scan_now: tokio::sync::Notify,
    /// Bumped on every change; replicators wait on it.
    changes: watch::Sender<u64>,
    stats: Stats,
    /// The local socket offered in `welcome`, if it is up.
    local: Option<crate::msg::LocalOffer>,
}

impl Shared {
    /// `path` changed or vanished: break its promises and wake the replicators.
    fn break_callbacks(&self, path: &str) {
        self.callbacks.break_path(path);
        self.changes.send_modify(|v| *v += 1);
    }

    fn promise(&self, path: &str, conn: u64) {
        self.callbacks.promise(path, conn);
    }
}

/// Files up to this size are fetched from memory: read once, hashed from the bytes read,
/// sent from them (instead of hashing on a blocking thread and reading the file again to send
/// it, with a buffer zeroed per request: most of a small file's cost on the server). Larger
/// new files are hashed ahead of their fetch by the scan.
const SMALL_FETCH: u64 = 1 << 20;

/// Runs a server on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    store: Arc<Store>,
    cfg: ServerConfig,
    shutdown: CancellationToken,
) {
    store.clean_temp_files();
    let local = cfg
        .local_socket
        .as_deref()
        .and_then(|p| match local::bind(p) {
            Ok(x) => Some(x),
            Err(e) => {
                warn!(error = %e, "no short-circuit local reads: clients read over TCP");
                None
            }
        });
    let (changes, _) = watch::channel(0u64);
    let shared = Arc::new(Shared {
        store,
        cfg,
        callbacks: callbacks::Callbacks::default(),
        scan_now: tokio::sync::Notify::new(),
        changes,
        stats: Stats::default(),
        local: local.as_ref().map(|b| b.offer.clone()),
    });
    let _notify = scan::watch_root(&shared);
    // The first scan is the baseline that later scans compare with to break callbacks: it
    // must precede every fetch. A fetch served before it, of a file that changed before it,
    // would hold a promise that no scan ever breaks (the change is in the baseline).
    let first = {
        let s = shared.store.clone();
        tokio::task::spawn_blocking(move || s.scan())
            .await
            .unwrap_or_default()
    };
    let tracker = TaskTracker::new();
    tracker.spawn(scan::scan_loop(shared.clone(), first, shutdown.clone()));
    if shared.cfg.role == Role::Primary {
        for addr in shared.cfg.backups.clone() {
            tracker.spawn(replicate::replicate_loop(
                shared.clone(),
                addr,
                shutdown.clone(),
            ));
        }
    }
    if let Some(bound) = local {
        tracker.spawn(local::accept_loop(
            shared.clone(),
            bound,
            shared.cfg.max_connections,
            shutdown.clone(),
        ));
    }
    let mut acceptor = proto::conn::Acceptor::new(listener, shared.cfg.max_connections);
    let mut next_id = 0u64;
    while let Some((admission, stream, peer)) = acceptor.next(&shutdown).await {
        next_id += 1;
        let id = next_id;
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            match serve::serve_connection(&shared, stream, admission, id, &shutdown).await {
                Ok(()) => debug!(%peer, "connection closed"),
                Err(e) => info!(%peer, error = %e, "connection closed on error"),
            }
            shared.callbacks.disconnect(id);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    info!(
        sent = shared.stats.body_bytes_sent.load(Ordering::Relaxed),
        fetches = shared.stats.fetches.load(Ordering::Relaxed),
        local_ranges = shared.stats.local_ranges.load(Ordering::Relaxed),
        "server stopped"
    );
}

/// Sends a storage error as the reply.
async fn reply_error(conn: &mut Connection, e: &StoreError) -> Result<(), ProtoError> {
    conn.send(&Reply::Error {
        code: e.code,
        message: e.message.clone(),
    })
    .await
}

/// Runs a storage call on a blocking thread; a failed thread is an internal error.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError {
            code: ErrorCode::Internal,
            message: format!("storage task failed: {e}"),
        })
    })
}
