//! The file server: accept loop, connections, callbacks, change scanning, replication.
//!
//! Every server (primary or backup) serves reads from its own root, keeps a callback promise
//! for each (connection, file) it sent or revalidated, and breaks the promises of a file when
//! its scan (or a write through the protocol) sees the file change or vanish. A primary also
//! runs one replicator per backup: it lists the backup, pushes every file whose version
//! differs, deletes what the primary no longer has, then waits for the next change — so a
//! backup that was down catches up as soon as it is reachable again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::auth::{authenticate, client_handshake, Admitted};
use proto::{ClusterKey, Connection, ProtoError};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::msg::{ErrorCode, FileInfo, ListedFile, Reply, Request, Role, MAX_LINE};
use crate::store::{Fingerprint, Hasher, Store, StoreError};
use crate::SERVICE;

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
}

/// Counters, for logs and tests.
#[derive(Default, Debug)]
pub struct Stats {
    pub body_bytes_sent: AtomicU64,
    pub fetches: AtomicU64,
    pub not_modified: AtomicU64,
    pub breaks_sent: AtomicU64,
}

struct Shared {
    store: Arc<Store>,
    cfg: ServerConfig,
    /// path -> connections holding a callback promise for it.
    callbacks: Mutex<HashMap<String, HashSet<u64>>>,
    /// connection -> where to push its callback breaks and listing changes.
    conns: Mutex<HashMap<u64, mpsc::UnboundedSender<Push>>>,
    /// Connections promised a `list_changed` (they sent `watch_list`).
    list_watchers: Mutex<HashSet<u64>>,
    /// Asks the scan loop for a scan now (the root's notifications).
    scan_now: tokio::sync::Notify,
    /// Bumped on every change; replicators wait on it.
    changes: watch::Sender<u64>,
    stats: Stats,
}

/// What a connection is told unasked.
#[derive(Debug)]
enum Push {
    Break(String),
    ListChanged,
}

impl Shared {
    fn break_callbacks(&self, path: &str) {
        let holders = lock(&self.callbacks).remove(path).unwrap_or_default();
        let watchers = std::mem::take(&mut *lock(&self.list_watchers));
        if !holders.is_empty() || !watchers.is_empty() {
            let conns = lock(&self.conns);
            for id in holders {
                if let Some(tx) = conns.get(&id) {
                    let _ = tx.send(Push::Break(path.to_string()));
                }
            }
            for id in watchers {
                if let Some(tx) = conns.get(&id) {
                    let _ = tx.send(Push::ListChanged);
                }
            }
        }
        self.changes.send_modify(|v| *v += 1);
    }

    fn promise(&self, path: &str, conn: u64) {
        lock(&self.callbacks)
            .entry(path.to_string())
            .or_default()
            .insert(conn);
    }
}

use proto::lock;

/// Runs a server on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    store: Arc<Store>,
    cfg: ServerConfig,
    shutdown: CancellationToken,
) {
    store.clean_temp_files();
    let (changes, _) = watch::channel(0u64);
    let shared = Arc::new(Shared {
        store,
        cfg,
        callbacks: Mutex::new(HashMap::new()),
        conns: Mutex::new(HashMap::new()),
        list_watchers: Mutex::new(HashSet::new()),
        scan_now: tokio::sync::Notify::new(),
        changes,
        stats: Stats::default(),
    });
    let _notify = watch_root(&shared);
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
    tracker.spawn(scan_loop(shared.clone(), first, shutdown.clone()));
    if shared.cfg.role == Role::Primary {
        for addr in shared.cfg.backups.clone() {
            tracker.spawn(replicate_loop(shared.clone(), addr, shutdown.clone()));
        }
    }
    let mut acceptor = proto::conn::Acceptor::new(listener, shared.cfg.max_connections);
    let mut next_id = 0u64;
    while let Some((admission, stream, peer)) = acceptor.next(&shutdown).await {
        next_id += 1;
        let id = next_id;
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            match serve_connection(&shared, stream, admission, id, &shutdown).await {
                Ok(()) => debug!(%peer, "connection closed"),
                Err(e) => info!(%peer, error = %e, "connection closed on error"),
            }
            lock(&shared.conns).remove(&id);
            lock(&shared.list_watchers).remove(&id);
            for holders in lock(&shared.callbacks).values_mut() {
                holders.remove(&id);
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    info!(
        sent = shared.stats.body_bytes_sent.load(Ordering::Relaxed),
        fetches = shared.stats.fetches.load(Ordering::Relaxed),
        "server stopped"
    );
}

/// Computes the versions of new or changed files in the background: they are about to be
/// fetched, and a request then finds the version ready instead of waiting for a whole-file
/// hash (a request arriving meanwhile waits for this hash rather than doing its own).
/// Small files are left out: their fetch reads and hashes them in one pass anyway.
fn warm_versions(store: &Arc<Store>, paths: Vec<String>) {
    if paths.is_empty() {
        return;
    }
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        for p in paths {
            let _ = store.info(&p);
        }
    });
}

/// The files worth hashing ahead of their fetch (see [`warm_versions`]), by name: the order
/// the coordinator queues them in, so the first file asked for is the first hashed (in
/// the map's order, a request for the first file hashed it alongside the warm-up's file).
fn large(files: &HashMap<String, Fingerprint>) -> Vec<String> {
    let mut large: Vec<String> = files
        .iter()
        .filter(|(_, fp)| fp.size > SMALL_FETCH)
        .map(|(p, _)| p.clone())
        .collect();
    large.sort_unstable();
    large
}

/// After a notification of the root, how long to wait for the rest of its burst.
const NOTIFY_GATHER: Duration = Duration::from_millis(20);

/// Watches the root with notifications: a change asks the scan loop for a scan at once
/// (the periodic scan stays as the safety net). None if notifications are unavailable.
fn watch_root(shared: &Arc<Shared>) -> Option<notify::RecommendedWatcher> {
    use notify::event::{AccessKind, AccessMode, EventKind};
    use notify::Watcher;
    let weak = Arc::downgrade(shared);
    let mut w = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let relevant = match &res {
            // Our own reads (opens, closes without writing) change nothing.
            Ok(ev) => !matches!(
                ev.kind,
                EventKind::Access(AccessKind::Open(_))
                    | EventKind::Access(AccessKind::Read)
                    | EventKind::Access(AccessKind::Close(AccessMode::Read))
                    | EventKind::Access(AccessKind::Any)
            ),
            Err(_) => true,
        };
        if let (true, Some(s)) = (relevant, weak.upgrade()) {
            s.scan_now.notify_one();
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "file notifications unavailable; relying on periodic scans");
            return None;
        }
    };
    if let Err(e) = w.watch(shared.store.root(), notify::RecursiveMode::Recursive) {
        warn!(error = %e, "cannot watch the root; relying on periodic scans");
        return None;
    }
    Some(w)
}

async fn scan_loop(
    shared: Arc<Shared>,
    mut last: HashMap<String, Fingerprint>,
    shutdown: CancellationToken,
) {
    let store = shared.store.clone();
    warm_versions(&store, large(&last));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(shared.cfg.scan_interval) => {}
            _ = shared.scan_now.notified() => {
                // Events come in bursts (a write is many): one scan for the burst.
                tokio::time::sleep(NOTIFY_GATHER).await;
            }
        }
        let s = store.clone();
        let now = match tokio::task::spawn_blocking(move || s.scan()).await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "scan task failed");
                continue;
            }
        };
        let mut changed = Vec::new();
        for (path, fp) in &now {
            if last.get(path) != Some(fp) {
                debug!(path, "changed");
                shared.break_callbacks(path);
                if fp.size > SMALL_FETCH {
                    changed.push(path.clone());
                }
            }
        }
        warm_versions(&store, changed);
        for path in last.keys() {
            if !now.contains_key(path) {
                debug!(path, "removed");
                shared.break_callbacks(path);
            }
        }
        last = now;
    }
}

async fn reply_error(conn: &mut Connection, e: &StoreError) -> Result<(), ProtoError> {
    conn.send(&Reply::Error {
        code: e.code,
        message: e.message.clone(),
    })
    .await
}

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

async fn serve_connection(
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
    })
    .await?;
    debug!(client, peer = %conn.peer, "client connected");
    let (tx, mut breaks) = mpsc::unbounded_channel();
    lock(&shared.conns).insert(id, tx);
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
            let (rel, fp, known) = match range_lookup(&store, path).await {
                Ok(x) => x,
                Err(e) => return reply_error(conn, &e).await,
            };
            let pin = fp.token();
            if version
                .as_ref()
                .is_some_and(|v| *v != pin && Some(v) != known.as_ref())
            {
                return conn
                    .send(&Reply::Error {
                        code: ErrorCode::Changed,
                        message: format!("{rel} is no longer the version asked for"),
                    })
                    .await;
            }
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
            lock(&shared.list_watchers).insert(id);
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

/// Files up to this size are fetched from memory: read once, hashed from the bytes read,
/// sent from them (instead of hashing on a blocking thread and reading the file again to send
/// it, with a buffer zeroed per request: most of a small file's cost on the server).
const SMALL_FETCH: u64 = 1 << 20;

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

/// Opens a served file, or says why not (the reply is already sent on `Err`).
async fn open_served(
    shared: &Shared,
    conn: &mut Connection,
    rel: &str,
) -> Result<Option<std::fs::File>, ProtoError> {
    let (_, real) = match shared.store.resolve_existing(rel) {
        Ok(x) => x,
        Err(e) => {
            reply_error(conn, &e).await?;
            return Ok(None);
        }
    };
    match std::fs::File::open(&real) {
        Ok(f) => Ok(Some(f)),
        Err(e) => {
            conn.send(&Reply::Error {
                code: ErrorCode::NotFound,
                message: format!("opening {rel}: {e}"),
            })
            .await?;
            Ok(None)
        }
    }
}

/// Writes exactly `len` bytes of `file` from `start` as a raw body, hashing them into
/// `hasher` if given. Returns true if the file ended (or failed) early: the rest is padded
/// with zeros to keep the framing, and the caller must say the body is bad. Reads are plain
/// blocking reads in pieces of at most 1 MiB (page-cache copies, far shorter than handing
/// each piece to a blocking thread).
async fn stream_file(
    conn: &mut Connection,
    file: &mut std::fs::File,
    start: u64,
    len: u64,
    mut hasher: Option<&mut Hasher>,
) -> Result<bool, ProtoError> {
    use std::io::{Read, Seek, SeekFrom};
    if start > 0 && file.seek(SeekFrom::Start(start)).is_err() {
        write_zeros(conn, len).await?;
        return Ok(true);
    }
    let mut buf = vec![0u8; len.min(1 << 20) as usize];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want]).unwrap_or(0);
        if n == 0 {
            write_zeros(conn, left).await?;
            return Ok(true);
        }
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&buf[..n]);
        }
        conn.write_raw(&buf[..n]).await?;
        left -= n as u64;
    }
    Ok(false)
}

/// Writes `len` zero bytes as body bytes: what keeps the framing when a file ends early.
async fn write_zeros(conn: &mut Connection, len: u64) -> Result<(), ProtoError> {
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        conn.write_raw(&zeros[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

/// Sends a range body with `sendfile` where there is one (no copy through this process;
/// ranges are not hashed, so the bytes need not pass through here), else by reading.
async fn send_range_body(
    conn: &mut Connection,
    file: &mut std::fs::File,
    start: u64,
    len: u64,
) -> Result<bool, ProtoError> {
    #[cfg(target_os = "linux")]
    {
        let sent = conn.write_file_range(file, start, len).await?;
        if sent == len {
            return Ok(false);
        }
        // The file ended early.
        write_zeros(conn, len - sent).await?;
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    stream_file(conn, file, start, len, None).await
}

/// Streams `len` bytes of a file from `start` (both clamped to the file): `range` header,
/// the raw bytes, then `file_end` if the file still has the fingerprint its version was
/// computed for, else `error: changed`. Ranges are not hashed (that would cost a pass over
/// the whole file per range); the fingerprint (size, mtime, inode) stands for the content.
async fn send_range(
    shared: &Shared,
    conn: &mut Connection,
    rel: &str,
    fp: Fingerprint,
    version: Option<String>,
    start: u64,
    len: u64,
) -> Result<(), ProtoError> {
    let Some(mut file) = open_served(shared, conn, rel).await? else {
        return Ok(());
    };
    let start = start.min(fp.size);
    let len = len.min(fp.size - start);
    let pin = fp.token();
    conn.write_msg(&Reply::Range {
        path: rel.to_string(),
        start,
        len,
        size: fp.size,
        version: version.clone(),
        pin: pin.clone(),
    })
    .await?;
    let short = send_range_body(conn, &mut file, start, len).await?;
    shared
        .stats
        .body_bytes_sent
        .fetch_add(len, Ordering::Relaxed);
    if short || shared.store.fingerprint(rel) != Some(fp) {
        conn.send(&Reply::Error {
            code: ErrorCode::Changed,
            message: format!("{rel} changed while it was being sent; fetch again"),
        })
        .await
    } else {
        conn.send(&Reply::FileEnd {
            version: version.unwrap_or(pin),
        })
        .await
    }
}

/// Streams a whole file: header, exactly `size` raw bytes, then `file_end` with the version
/// of the bytes actually sent, or `error: changed` if the file changed during the transfer.
async fn send_file(
    shared: &Shared,
    conn: &mut Connection,
    info: &FileInfo,
) -> Result<(), ProtoError> {
    let Some(mut file) = open_served(shared, conn, &info.path).await? else {
        return Ok(());
    };
    conn.write_msg(&Reply::File {
        path: info.path.clone(),
        size: info.size,
        version: info.version.clone(),
    })
    .await?;
    let mut hasher = Hasher::default();
    let short = stream_file(conn, &mut file, 0, info.size, Some(&mut hasher)).await?;
    shared
        .stats
        .body_bytes_sent
        .fetch_add(info.size, Ordering::Relaxed);
    let sent = hasher.finish();
    if short || sent != info.version {
        conn.send(&Reply::Error {
            code: ErrorCode::Changed,
            message: format!("{} changed while it was being sent; fetch again", info.path),
        })
        .await
    } else {
        conn.send(&Reply::FileEnd { version: sent }).await
    }
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

/// Reads the next reply, skipping callback breaks (a replicator holds no cache).
async fn next_reply(conn: &mut Connection, limit: Duration) -> Result<Reply, ProtoError> {
    loop {
        match conn.expect_msg::<Reply>(limit).await? {
            Reply::CallbackBreak { .. } => continue,
            other => return Ok(other),
        }
    }
}

async fn replicate_loop(shared: Arc<Shared>, addr: String, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = replicate_session(&shared, &addr, &shutdown);
        match session.await {
            Ok(()) => return,
            Err(e) => debug!(backup = %addr, error = %e, "replication session ended; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One connection to one backup: sync everything, then again after every change.
async fn replicate_session(
    shared: &Arc<Shared>,
    addr: &str,
    shutdown: &CancellationToken,
) -> Result<(), ProtoError> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| ProtoError::Timeout(Duration::from_secs(2)))??;
    let mut conn = Connection::new(stream).with_max_line(crate::client::MAX_LISTING_LINE);
    client_handshake(&mut conn, &shared.cfg.key, SERVICE).await?;
    conn.send(&Request::Hello {
        client_id: format!("replicator-{}", shared.cfg.id),
    })
    .await?;
    match next_reply(&mut conn, Duration::from_secs(5)).await? {
        Reply::Welcome {
            role: Role::Backup, ..
        } => {}
        other => {
            return Err(ProtoError::Peer(format!(
                "{addr} is not a backup: {other:?}"
            )))
        }
    }
    info!(backup = %addr, "replicating to backup");
    let mut changes = shared.changes.subscribe();
    loop {
        changes.borrow_and_update();
        conn.send(&Request::List {}).await?;
        let theirs = match next_reply(&mut conn, Duration::from_secs(60)).await? {
            Reply::Listing { files } => files,
            other => {
                return Err(ProtoError::Peer(format!(
                    "unexpected reply to list: {other:?}"
                )))
            }
        };
        let store = shared.store.clone();
        let ours = tokio::task::spawn_blocking(move || store.list())
            .await
            .unwrap_or_default();
        let their_versions: HashMap<&str, &str> = theirs
            .iter()
            .map(|f| (f.path.as_str(), f.version.as_str()))
            .collect();
        let our_paths: HashSet<&str> = ours.iter().map(|f| f.path.as_str()).collect();
        let mut pushed = 0;
        for f in &ours {
            if their_versions.get(f.path.as_str()) == Some(&f.version.as_str()) {
                continue;
            }
            push_file(shared, &mut conn, f).await?;
            pushed += 1;
        }
        for f in &theirs {
            if !our_paths.contains(f.path.as_str()) {
                conn.send(&Request::ReplicateDelete {
                    path: f.path.clone(),
                })
                .await?;
                next_reply(&mut conn, Duration::from_secs(30)).await?;
                pushed += 1;
            }
        }
        if pushed > 0 {
            info!(backup = %addr, changes = pushed, "backup brought up to date");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = changes.changed() => if r.is_err() { return Ok(()) },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn push_file(shared: &Shared, conn: &mut Connection, f: &FileInfo) -> Result<(), ProtoError> {
    let Ok((_, real)) = shared.store.resolve_existing(&f.path) else {
        return Ok(()); // gone since the listing; the next round deletes it
    };
    let Ok(mut file) = std::fs::File::open(&real) else {
        return Ok(());
    };
    conn.write_msg(&Request::Replicate {
        path: f.path.clone(),
        size: f.size,
        version: f.version.clone(),
    })
    .await?;
    // A file that shrank since the listing is padded; the backup then checks the version,
    // refuses it, and the next round (triggered by this very change) sends the new one.
    stream_file(conn, &mut file, 0, f.size, None).await?;
    conn.flush().await?;
    match next_reply(conn, Duration::from_secs(120)).await? {
        Reply::Stored { .. } => Ok(()),
        Reply::Error { code, message } => {
            warn!(path = f.path, ?code, message, "backup refused a replica");
            Err(ProtoError::Peer(message))
        }
        other => Err(ProtoError::Peer(format!(
            "unexpected reply to replicate: {other:?}"
        ))),
    }
}
