//! The AFS client: whole-file caching with callbacks, revalidation by version, failover.
//!
//! `open(path)` returns a local copy under `<cache root>/<client id>/files/`. While the
//! server's callback promise for that file holds (the connection that got it is up and no
//! break arrived), a second `open` costs nothing on the network. A break, a lost connection
//! or a client restart turns the cached copy into a candidate that is revalidated by version
//! (`fetch` with `have_version`: `not_modified` costs one short round trip, no body).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::FutureExt;
use proto::auth::client_handshake;
use proto::{ClusterKey, Connection, ProtoError};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::msg::{ErrorCode, Reply, Request, MAX_LINE};
use crate::names::{check_rel, Hasher};
use crate::SERVICE;

/// Default [`ClientConfig::memory_file_max`].
pub const DEFAULT_MEMORY_FILE_MAX: u64 = 256 << 10;
/// Default [`ClientConfig::memory_limit_bytes`].
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;

/// Longest line a client accepts for listings (many files).
pub const MAX_LISTING_LINE: usize = 64 << 20;

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Stable id; the cache lives in `<cache_root>/<client_id>/`.
    pub client_id: String,
    /// Servers in order of preference: the primary first, then the backups.
    pub servers: Vec<String>,
    pub cache_root: PathBuf,
    /// Cached bytes kept; least recently used files are evicted beyond this.
    pub cache_limit_bytes: u64,
    pub key: ClusterKey,
    pub connect_timeout: Duration,
    /// Longest wait for a reply header, and longest silence in the middle of a body.
    pub request_timeout: Duration,
    /// Full passes over all servers before `open` gives up with `Unavailable`.
    pub max_rounds: u32,
    /// Files up to this size are cached in memory, not on disk (OpenAFS's memcache): no
    /// file creation per small file. Callbacks and revalidation are the same; a restarted
    /// client fetches them again. 0 keeps everything on disk.
    pub memory_file_max: u64,
    /// Bytes of small files kept in memory; least recently used ones are dropped beyond it.
    pub memory_limit_bytes: u64,
}

impl ClientConfig {
    /// Defaults for everything but identity, servers, cache root and key.
    pub fn new(client_id: &str, servers: Vec<String>, cache_root: &Path, key: ClusterKey) -> Self {
        ClientConfig {
            client_id: client_id.to_string(),
            servers,
            cache_root: cache_root.to_path_buf(),
            cache_limit_bytes: 8 << 30,
            key,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            max_rounds: 4,
            memory_file_max: DEFAULT_MEMORY_FILE_MAX,
            memory_limit_bytes: DEFAULT_MEMORY_LIMIT,
        }
    }
}

/// Why `open` failed, named for what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum AfsError {
    /// Every reachable server says the file does not exist. Report the task as failed.
    #[error("{path}: not found on any file server")]
    NotFound { path: String },
    /// The request can never succeed (path refused, file too large). Give up.
    #[error("{path}: refused: {message}")]
    Refused { path: String, message: String },
    /// No server answered. Retry later.
    #[error("no file server reachable: {message}")]
    Unavailable { message: String },
    /// The local cache could not be written. Check the disk.
    #[error("cache: {0}")]
    Cache(String),
    /// A range read asked for a version that the file no longer has. Start over.
    #[error("{path}: changed since its first range was read")]
    Changed { path: String },
}

/// Bytes of a file read by [`AfsClient::read_range`].
#[derive(Debug, Clone)]
pub struct RangeData {
    /// The bytes from `start`: fewer than asked for only at the end of the file.
    pub bytes: Vec<u8>,
    /// The file's size when the bytes were read.
    pub size: u64,
    /// The file's content version, if the server had computed it (a large file's first
    /// ranges are served while the server hashes it).
    pub version: Option<String>,
    /// The server's token for this state of the file: pass it (or the version) to later
    /// reads that must come from the same state.
    pub pin: String,
}

impl RangeData {
    /// What later reads of the same state pin: the version if known (it holds on every
    /// replica), else the pin.
    pub fn state(&self) -> &str {
        self.version.as_deref().unwrap_or(&self.pin)
    }
}

/// Longest range one request may ask for (the reply is held in memory).
pub const MAX_RANGE: u64 = 256 << 20;

/// Where an opened file's bytes are.
#[derive(Debug, Clone)]
pub enum Content {
    /// The local copy on disk. It is replaced (by rename) on a later refetch, so an open
    /// handle keeps reading the content it opened.
    Disk(PathBuf),
    /// A small file, held in memory (see [`ClientConfig::memory_file_max`]).
    Memory(Arc<Vec<u8>>),
}

/// A file opened through the cache.
#[derive(Debug, Clone)]
pub struct OpenedFile {
    pub content: Content,
    pub version: String,
    pub size: u64,
    /// True when no byte of the body crossed the network for this open.
    pub from_cache: bool,
    /// The server that answered, if any.
    pub server: Option<String>,
}

impl OpenedFile {
    /// The whole content (a copy of the disk file; borrowed when in memory).
    pub fn read(&self) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        match &self.content {
            Content::Disk(p) => std::fs::read(p).map(std::borrow::Cow::Owned),
            Content::Memory(b) => Ok(std::borrow::Cow::Borrowed(b.as_slice())),
        }
    }
}

/// Counters of network use.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientStats {
    /// Opens answered from the cache under a valid callback (no network at all).
    pub hits: u64,
    /// Opens answered `not_modified` after revalidation.
    pub revalidated: u64,
    /// Whole-file transfers.
    pub fetches: u64,
    /// Range reads (not cached).
    pub ranges: u64,
    /// Body bytes received.
    pub body_bytes: u64,
    /// Callback breaks received.
    pub breaks: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    version: String,
    size: u64,
    last_used: u64,
    #[serde(skip)]
    callback: bool,
    /// The content, for a file cached in memory (such entries are never saved in the index).
    #[serde(skip)]
    memory: Option<Arc<Vec<u8>>>,
}

impl Entry {
    /// The cached content, if it is still there.
    fn content(&self, local: PathBuf) -> Option<Content> {
        match &self.memory {
            Some(b) => Some(Content::Memory(b.clone())),
            None => local.exists().then_some(Content::Disk(local)),
        }
    }
}

struct Active {
    conn: Connection,
    server: usize,
}

/// The client. One per worker; not shared between tasks (methods take `&mut self`).
pub struct AfsClient {
    cfg: ClientConfig,
    dir: PathBuf,
    index: HashMap<String, Entry>,
    /// Bytes of the entries on disk and in memory (kept with the index, so that a fetch
    /// does not sum the whole index).
    disk_bytes: u64,
    memory_bytes: u64,
    clock: u64,
    active: Option<Active>,
    last_primary_try: Option<Instant>,
    stats: ClientStats,
    /// The index changed since it was last saved.
    index_dirty: bool,
    last_index_save: Option<Instant>,
}

/// The cache index is saved at most this often: losing the last second of it only means a
/// refetch after a crash, while saving it on every fetch is quadratic in the cache size.
const INDEX_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// An `AsyncWrite` over a plain (blocking) writer that hashes what passes through. Cache
/// writes land in the page cache and take microseconds: doing them in place is far cheaper
/// than handing every piece to a blocking thread and waking the runtime afterwards.
struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: std::io::Write + Unpin> AsyncWrite for HashingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let r = this.inner.write(buf);
        if let Ok(n) = r {
            this.hasher.update(&buf[..n]);
        }
        Poll::Ready(r)
    }
    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.inner.flush())
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.inner.flush())
    }
}

/// What one range request at one server gave.
enum RangeAttempt {
    Done(RangeData),
    NotHere,
    Changed,
    Failed(String),
}

/// What one attempt at one server gave.
enum Attempt {
    Done(OpenedFile),
    /// This server does not have it (another may).
    NotHere,
    /// This server failed; try another.
    Failed(String),
}

impl AfsClient {
    /// Opens the cache (creating its folder) and loads the index a previous run left.
    pub fn new(cfg: ClientConfig) -> Result<Self, AfsError> {
        let dir = cfg.cache_root.join(&cfg.client_id);
        std::fs::create_dir_all(dir.join("files"))
            .map_err(|e| AfsError::Cache(format!("creating {}: {e}", dir.display())))?;
        let mut index: HashMap<String, Entry> = std::fs::read(dir.join("index.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        // Keep only entries whose file is really there with the recorded size.
        index.retain(|rel, e| {
            check_rel(rel).is_ok()
                && std::fs::metadata(dir.join("files").join(rel))
                    .map(|m| m.len() == e.size)
                    .unwrap_or(false)
        });
        let clock = index.values().map(|e| e.last_used).max().unwrap_or(0);
        if !index.is_empty() {
            info!(
                files = index.len(),
                "cache index loaded; entries will be revalidated by version"
            );
        }
        Ok(AfsClient {
            cfg,
            dir,
            disk_bytes: index.values().map(|e| e.size).sum(),
            memory_bytes: 0,
            index,
            clock,
            active: None,
            last_primary_try: None,
            stats: ClientStats::default(),
            index_dirty: false,
            last_index_save: None,
        })
    }

    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Paths and versions currently cached.
    pub fn cached(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .index
            .iter()
            .map(|(p, e)| (p.clone(), e.version.clone()))
            .collect();
        v.sort();
        v
    }

    fn local_path(&self, rel: &str) -> PathBuf {
        self.dir.join("files").join(rel)
    }

    fn drop_connection(&mut self, why: &str) {
        if let Some(a) = self.active.take() {
            debug!(server = %self.cfg.servers[a.server], why, "dropping file-server connection");
        }
        // Promises were per connection.
        for e in self.index.values_mut() {
            e.callback = false;
        }
    }

    fn apply_break(&mut self, path: &str) {
        self.stats.breaks += 1;
        if let Some(e) = self.index.get_mut(path) {
            e.callback = false;
        }
    }

    /// Applies callback breaks that already arrived, without waiting.
    fn drain_breaks(&mut self) {
        loop {
            let Some(active) = self.active.as_mut() else {
                return;
            };
            match active.conn.read_msg::<Reply>().now_or_never() {
                None => return,
                Some(Ok(Some(Reply::CallbackBreak { path }))) => self.apply_break(&path),
                Some(Ok(Some(other))) => {
                    self.drop_connection(&format!("unexpected message {other:?}"));
                    return;
                }
                Some(Ok(None)) => {
                    self.drop_connection("server closed the connection");
                    return;
                }
                Some(Err(e)) => {
                    self.drop_connection(&e.to_string());
                    return;
                }
            }
        }
    }

    async fn connect(&self, server: usize) -> Result<Connection, ProtoError> {
        let addr = &self.cfg.servers[server];
        let stream = tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ProtoError::Timeout(self.cfg.connect_timeout))??;
        let mut conn = Connection::new(stream).with_max_line(MAX_LINE);
        client_handshake(&mut conn, &self.cfg.key, SERVICE).await?;
        conn.send(&Request::Hello {
            client_id: self.cfg.client_id.clone(),
        })
        .await?;
        match conn.expect_msg::<Reply>(self.cfg.request_timeout).await? {
            Reply::Welcome { role, server_id } => {
                debug!(%addr, server_id, %role, "connected to file server");
                Ok(conn)
            }
            other => Err(ProtoError::Peer(format!("expected welcome, got {other:?}"))),
        }
    }

    /// Ensures a connection to `server` (reusing the current one if it is that server).
    async fn ensure(&mut self, server: usize) -> Result<(), ProtoError> {
        if self.active.as_ref().is_some_and(|a| a.server == server) {
            return Ok(());
        }
        let conn = self.connect(server).await?;
        self.drop_connection("switching server");
        self.active = Some(Active { conn, server });
        Ok(())
    }

    /// Reads the next reply, applying callback breaks that come before it.
    async fn reply(&mut self) -> Result<Reply, ProtoError> {
        loop {
            let limit = self.cfg.request_timeout;
            let Some(active) = self.active.as_mut() else {
                return Err(ProtoError::Truncated);
            };
            match active.conn.expect_msg::<Reply>(limit).await? {
                Reply::CallbackBreak { path } => self.apply_break(&path),
                other => return Ok(other),
            }
        }
    }

    /// The order to try servers in: the current one first, and the primary before the
    /// backups (but at most every 5 s while the primary is failing, so a dead primary does
    /// not cost a connect timeout on every open).
    fn server_order(&mut self) -> Vec<usize> {
        let n = self.cfg.servers.len();
        let mut order: Vec<usize> = (0..n).collect();
        if let Some(cur) = self.active.as_ref().map(|a| a.server) {
            if cur != 0 {
                let retry_primary = self
                    .last_primary_try
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(5));
                order.retain(|&s| s != cur);
                order.insert(0, cur);
                if retry_primary {
                    self.last_primary_try = Some(Instant::now());
                    order.retain(|&s| s != 0);
                    order.insert(0, 0);
                }
            }
        }
        order
    }

    /// Opens `path` (relative to the servers' roots) and returns a local cached copy.
    pub async fn open(&mut self, path: &str) -> Result<OpenedFile, AfsError> {
        self.open_with(path, true).await
    }

    /// Like [`AfsClient::open`], but always asks the server (`fetch` with the cached version:
    /// a short `not_modified` when nothing changed, no body). For callers that learned of a
    /// change by another route than the callback — the worker, whose coordinator may queue a
    /// changed file before the server's change scan has broken the callback.
    pub async fn open_validated(&mut self, path: &str) -> Result<OpenedFile, AfsError> {
        self.open_with(path, false).await
    }

    async fn open_with(
        &mut self,
        path: &str,
        trust_callback: bool,
    ) -> Result<OpenedFile, AfsError> {
        let rel = check_rel(path).map_err(|e| AfsError::Refused {
            path: path.to_string(),
            message: e,
        })?;
        self.drain_breaks();
        self.clock += 1;
        let now = self.clock;
        let local = self.local_path(&rel);
        if let Some(e) = self.index.get_mut(&rel) {
            let content = if trust_callback && e.callback {
                e.content(local)
            } else {
                None
            };
            if let Some(content) = content {
                e.last_used = now;
                self.stats.hits += 1;
                return Ok(OpenedFile {
                    content,
                    version: e.version.clone(),
                    size: e.size,
                    from_cache: true,
                    server: None,
                });
            }
        }
        let mut last_err = String::from("no servers configured");
        for round in 0..self.cfg.max_rounds.max(1) {
            let mut not_found = 0;
            let order = self.server_order();
            let mut changed_retries = 0;
            let mut i = 0;
            while i < order.len() {
                let server = order[i];
                match self.attempt(server, &rel).await {
                    Ok(Attempt::Done(f)) => return Ok(f),
                    Ok(Attempt::NotHere) => {
                        not_found += 1;
                        i += 1;
                    }
                    Ok(Attempt::Failed(m)) if m == "changed" && changed_retries < 5 => {
                        changed_retries += 1; // same server again
                    }
                    Ok(Attempt::Failed(m)) => {
                        last_err = format!("{}: {m}", self.cfg.servers[server]);
                        i += 1;
                    }
                    Err(e) => {
                        if let e @ AfsError::Refused { .. } = e {
                            return Err(e);
                        }
                        last_err = format!("{}: {e}", self.cfg.servers[server]);
                        self.drop_connection(&last_err);
                        i += 1;
                    }
                }
            }
            if not_found > 0 && not_found == order.len() {
                self.forget(&rel);
                return Err(AfsError::NotFound { path: rel });
            }
            if not_found > 0 && round + 1 == self.cfg.max_rounds.max(1) {
                // Some servers say it does not exist and the others are unreachable.
                self.forget(&rel);
                return Err(AfsError::NotFound { path: rel });
            }
            let pause = Duration::from_millis(100 << round.min(4));
            warn!(path = rel, round, error = %last_err, "no file server answered; retrying");
            tokio::time::sleep(pause).await;
        }
        Err(AfsError::Unavailable { message: last_err })
    }

    /// Reads `len` bytes of `path` from `start` (clamped to the file) from the first server
    /// that has the file, into memory; nothing is cached and no callback is kept. With
    /// `version` (a content version or a pin, see [`RangeData::state`]), the file must still
    /// be in that state (else [`AfsError::Changed`]): a reader assembling one version from
    /// several ranges passes the state of the first. Content versions hold on every
    /// replica; a pin only on the server that gave it.
    pub async fn read_range(
        &mut self,
        path: &str,
        start: u64,
        len: u64,
        version: Option<&str>,
    ) -> Result<RangeData, AfsError> {
        let rel = check_rel(path).map_err(|e| AfsError::Refused {
            path: path.to_string(),
            message: e,
        })?;
        if len > MAX_RANGE {
            return Err(AfsError::Refused {
                path: rel,
                message: format!("a range of {len} bytes is over the {MAX_RANGE} byte limit"),
            });
        }
        self.drain_breaks();
        let mut last_err = String::from("no servers configured");
        let rounds = self.cfg.max_rounds.max(1);
        for round in 0..rounds {
            let order = self.server_order();
            let mut not_found = 0;
            for &server in &order {
                match self.range_attempt(server, &rel, start, len, version).await {
                    Ok(RangeAttempt::Done(d)) => return Ok(d),
                    Ok(RangeAttempt::NotHere) => not_found += 1,
                    Ok(RangeAttempt::Changed) if version.is_some() => {
                        return Err(AfsError::Changed { path: rel })
                    }
                    Ok(RangeAttempt::Changed) => {
                        last_err = format!("{}: changed during the read", self.cfg.servers[server]);
                    }
                    Ok(RangeAttempt::Failed(m)) => {
                        last_err = format!("{}: {m}", self.cfg.servers[server]);
                    }
                    Err(e @ AfsError::Refused { .. }) => return Err(e),
                    Err(e) => {
                        last_err = format!("{}: {e}", self.cfg.servers[server]);
                        self.drop_connection(&last_err);
                    }
                }
            }
            if not_found > 0 && (not_found == order.len() || round + 1 == rounds) {
                return Err(AfsError::NotFound { path: rel });
            }
            warn!(path = rel, round, error = %last_err, "no file server gave the range; retrying");
            tokio::time::sleep(Duration::from_millis(100 << round.min(4))).await;
        }
        Err(AfsError::Unavailable { message: last_err })
    }

    async fn range_attempt(
        &mut self,
        server: usize,
        rel: &str,
        start: u64,
        len: u64,
        version: Option<&str>,
    ) -> Result<RangeAttempt, AfsError> {
        let proto_err = |e: ProtoError| AfsError::Unavailable {
            message: e.to_string(),
        };
        self.ensure(server).await.map_err(proto_err)?;
        let Some(active) = self.active.as_mut() else {
            return Ok(RangeAttempt::Failed("not connected".into()));
        };
        active
            .conn
            .send(&Request::FetchRange {
                path: rel.to_string(),
                start,
                len,
                version: version.map(str::to_string),
            })
            .await
            .map_err(proto_err)?;
        let (got, size, v, pin) = match self.reply().await.map_err(proto_err)? {
            Reply::Range {
                start: s,
                len: got,
                size,
                version: v,
                pin,
                ..
            } if got <= len && s == start.min(size) => (got, size, v, pin),
            Reply::Error { code, message } => {
                return match code {
                    ErrorCode::NotFound => Ok(RangeAttempt::NotHere),
                    ErrorCode::Changed => Ok(RangeAttempt::Changed),
                    ErrorCode::Forbidden | ErrorCode::TooLarge => Err(AfsError::Refused {
                        path: rel.to_string(),
                        message,
                    }),
                    _ => Ok(RangeAttempt::Failed(message)),
                }
            }
            other => {
                self.drop_connection("unexpected reply to fetch_range");
                return Ok(RangeAttempt::Failed(format!("unexpected reply {other:?}")));
            }
        };
        let timeout = self.cfg.request_timeout;
        let Some(active) = self.active.as_mut() else {
            return Ok(RangeAttempt::Failed("not connected".into()));
        };
        let bytes = active
            .conn
            .read_body_to_vec(got, Some(timeout))
            .await
            .map_err(proto_err)?;
        self.stats.body_bytes += got;
        match self.reply().await.map_err(proto_err)? {
            Reply::FileEnd { version: sent } if sent == *v.as_ref().unwrap_or(&pin) => {
                self.stats.ranges += 1;
                Ok(RangeAttempt::Done(RangeData {
                    bytes,
                    size,
                    version: v,
                    pin,
                }))
            }
            Reply::Error {
                code: ErrorCode::Changed,
                ..
            } => Ok(RangeAttempt::Changed),
            other => {
                self.drop_connection("bad range trailer");
                Ok(RangeAttempt::Failed(format!(
                    "unexpected trailer {other:?}"
                )))
            }
        }
    }

    fn forget(&mut self, rel: &str) {
        if let Some(e) = self.unindex(rel) {
            if e.memory.is_none() {
                let _ = std::fs::remove_file(self.local_path(rel));
                self.save_index();
            }
        }
    }

    /// Opens several files, all validated with the server as [`AfsClient::open_validated`]
    /// does, with their requests pipelined on one connection: one round trip for the lot
    /// instead of one per file (small files cost mostly round trips). A file whose pipelined
    /// fetch does not succeed is opened again on its own, with the usual retries and
    /// failover. Results in the order of `paths`.
    pub async fn open_many(&mut self, paths: &[String]) -> Vec<Result<OpenedFile, AfsError>> {
        let mut out: Vec<Option<Result<OpenedFile, AfsError>>> = Vec::new();
        out.resize_with(paths.len(), || None);
        if paths.len() > 1 {
            self.drain_breaks();
            self.pipelined(paths, &mut out).await;
        }
        let mut done = Vec::with_capacity(paths.len());
        for (p, r) in paths.iter().zip(out) {
            done.push(match r {
                Some(r) => r,
                None => self.open_validated(p).await,
            });
        }
        done
    }

    /// The pipelined pass of [`AfsClient::open_many`] on the first server in order: fills
    /// `out` with the files fetched or revalidated; leaves the rest `None`.
    async fn pipelined(
        &mut self,
        paths: &[String],
        out: &mut [Option<Result<OpenedFile, AfsError>>],
    ) {
        let Some(&server) = self.server_order().first() else {
            return;
        };
        if let Err(e) = self.ensure(server).await {
            self.drop_connection(&e.to_string());
            return;
        }
        let mut sent = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let Ok(rel) = check_rel(p) else { continue };
            let req = self.fetch_request(&rel);
            let Some(active) = self.active.as_mut() else {
                return;
            };
            if let Err(e) = active.conn.write_msg(&req).await {
                self.drop_connection(&e.to_string());
                return;
            }
            sent.push((i, rel));
        }
        if let Some(active) = self.active.as_mut() {
            if let Err(e) = active.conn.flush().await {
                self.drop_connection(&e.to_string());
                return;
            }
        }
        for (i, rel) in sent {
            match self.answer(server, &rel).await {
                Ok(Attempt::Done(f)) => out[i] = Some(Ok(f)),
                // Opened again on its own (not found, changed: worded there).
                Ok(_) => {}
                Err(e @ AfsError::Refused { .. }) => out[i] = Some(Err(e)),
                Err(e) => {
                    // The replies still due are lost with the connection.
                    self.drop_connection(&e.to_string());
                    return;
                }
            }
        }
    }

    /// The `fetch` request for `rel`, naming the version held (if any) for revalidation.
    fn fetch_request(&self, rel: &str) -> Request {
        let local = self.local_path(rel);
        let have_version = self
            .index
            .get(rel)
            .filter(|e| e.memory.is_some() || local.exists())
            .map(|e| e.version.clone());
        Request::Fetch {
            path: rel.to_string(),
            have_version,
        }
    }

    /// One fetch at one server. Protocol failures are `Err` (the connection is dropped).
    async fn attempt(&mut self, server: usize, rel: &str) -> Result<Attempt, AfsError> {
        let proto_err = |e: ProtoError| AfsError::Unavailable {
            message: e.to_string(),
        };
        self.ensure(server).await.map_err(proto_err)?;
        let req = self.fetch_request(rel);
        let Some(active) = self.active.as_mut() else {
            return Ok(Attempt::Failed("not connected".into()));
        };
        active.conn.send(&req).await.map_err(proto_err)?;
        self.answer(server, rel).await
    }

    /// Reads and applies the answer to a `fetch` of `rel` sent to `server`.
    async fn answer(&mut self, server: usize, rel: &str) -> Result<Attempt, AfsError> {
        let proto_err = |e: ProtoError| AfsError::Unavailable {
            message: e.to_string(),
        };
        let local = self.local_path(rel);
        let server_name = Some(self.cfg.servers[server].clone());
        match self.reply().await.map_err(proto_err)? {
            Reply::NotModified { version, .. } => {
                self.clock += 1;
                let now = self.clock;
                let Some(e) = self.index.get_mut(rel) else {
                    return Ok(Attempt::Failed(
                        "not_modified for a file we do not hold".into(),
                    ));
                };
                e.callback = true;
                e.last_used = now;
                self.stats.revalidated += 1;
                let Some(content) = e.content(local) else {
                    return Ok(Attempt::Failed(
                        "not_modified for a file no longer cached".into(),
                    ));
                };
                Ok(Attempt::Done(OpenedFile {
                    content,
                    version,
                    size: e.size,
                    from_cache: true,
                    server: server_name,
                }))
            }
            Reply::File { size, version, .. } => {
                let in_memory = size <= self.cfg.memory_file_max;
                let got = if in_memory {
                    self.receive_memory(rel, size, &version).await?.map(Some)
                } else {
                    self.receive(rel, size, &version).await?.map(|()| None)
                };
                match got {
                    None => Ok(Attempt::Failed("changed".into())),
                    Some(memory) => {
                        self.stats.fetches += 1;
                        self.clock += 1;
                        let content = match &memory {
                            Some(b) => Content::Memory(b.clone()),
                            None => Content::Disk(local.clone()),
                        };
                        let old = self.reindex(
                            rel.to_string(),
                            Entry {
                                version: version.clone(),
                                size,
                                last_used: self.clock,
                                callback: true,
                                memory,
                            },
                        );
                        let was_on_disk = old.is_some_and(|o| o.memory.is_none());
                        if in_memory && was_on_disk {
                            let _ = std::fs::remove_file(&local);
                        }
                        self.evict(rel);
                        if !in_memory || was_on_disk {
                            self.save_index();
                        }
                        Ok(Attempt::Done(OpenedFile {
                            content,
                            version,
                            size,
                            from_cache: false,
                            server: server_name,
                        }))
                    }
                }
            }
            Reply::Error { code, message } => match code {
                ErrorCode::NotFound => Ok(Attempt::NotHere),
                ErrorCode::Forbidden | ErrorCode::TooLarge => Err(AfsError::Refused {
                    path: rel.to_string(),
                    message,
                }),
                _ => Ok(Attempt::Failed(message)),
            },
            other => {
                self.drop_connection("unexpected reply");
                Ok(Attempt::Failed(format!("unexpected reply {other:?}")))
            }
        }
    }

    /// Receives a small body into memory and checks it against its version (the trailer).
    /// `Ok(None)`: the server said the file changed mid-transfer.
    async fn receive_memory(
        &mut self,
        rel: &str,
        size: u64,
        version: &str,
    ) -> Result<Option<Arc<Vec<u8>>>, AfsError> {
        let proto_err = |e: ProtoError| AfsError::Unavailable {
            message: e.to_string(),
        };
        let mut w = HashingWriter {
            inner: Vec::with_capacity(size as usize),
            hasher: Hasher::default(),
        };
        let Some(active) = self.active.as_mut() else {
            return Err(AfsError::Unavailable {
                message: "connection lost".into(),
            });
        };
        active
            .conn
            .read_body(size, &mut w, Some(self.cfg.request_timeout))
            .await
            .map_err(proto_err)?;
        let local_hash = w.hasher.finish();
        self.stats.body_bytes += size;
        let good = self.trailer(rel, version, &local_hash).await?;
        Ok(good.then(|| Arc::new(w.inner)))
    }

    /// Reads the trailer after a body: `Ok(true)` when the server confirms `version` and
    /// the bytes received hash to it; `Ok(false)` when the file changed during the transfer
    /// or the bytes do not match (fetch again); `Err` on a protocol failure.
    async fn trailer(
        &mut self,
        rel: &str,
        version: &str,
        local_hash: &str,
    ) -> Result<bool, AfsError> {
        let reply = self.reply().await.map_err(|e| AfsError::Unavailable {
            message: e.to_string(),
        })?;
        match reply {
            Reply::FileEnd { version: sent } if sent == version && local_hash == sent => Ok(true),
            Reply::FileEnd { .. } => {
                warn!(
                    path = rel,
                    "received bytes do not match their version; refetching"
                );
                Ok(false)
            }
            Reply::Error {
                code: ErrorCode::Changed,
                ..
            } => Ok(false),
            other => {
                self.drop_connection("bad trailer");
                Err(AfsError::Unavailable {
                    message: format!("unexpected trailer {other:?}"),
                })
            }
        }
    }

    /// Receives a body into a temporary file, checks it, and moves it into place.
    /// `Ok(None)`: the server said the file changed mid-transfer.
    async fn receive(
        &mut self,
        rel: &str,
        size: u64,
        version: &str,
    ) -> Result<Option<()>, AfsError> {
        let proto_err = |e: ProtoError| AfsError::Unavailable {
            message: e.to_string(),
        };
        let local = self.local_path(rel);
        let parent = local.parent().unwrap_or(&self.dir).to_path_buf();
        std::fs::create_dir_all(&parent)
            .map_err(|e| AfsError::Cache(format!("creating {}: {e}", parent.display())))?;
        let tmp = parent.join(format!(".fetch-{:016x}", rand::random::<u64>()));
        let file = std::fs::File::create(&tmp)
            .map_err(|e| AfsError::Cache(format!("creating {}: {e}", tmp.display())))?;
        let mut w = HashingWriter {
            inner: std::io::BufWriter::with_capacity(size.clamp(4096, 1 << 20) as usize, file),
            hasher: Hasher::default(),
        };
        let Some(active) = self.active.as_mut() else {
            return Err(AfsError::Unavailable {
                message: "connection lost".into(),
            });
        };
        let body = active
            .conn
            .read_body(size, &mut w, Some(self.cfg.request_timeout))
            .await;
        let flushed = w.flush().await;
        let local_hash = w.hasher.finish();
        drop(w);
        let cleanup = |tmp: &Path| {
            let _ = std::fs::remove_file(tmp);
        };
        if let Err(e) = body {
            cleanup(&tmp);
            return Err(proto_err(e));
        }
        if let Err(e) = flushed {
            cleanup(&tmp);
            return Err(AfsError::Cache(format!("writing {}: {e}", tmp.display())));
        }
        self.stats.body_bytes += size;
        match self.trailer(rel, version, &local_hash).await {
            Ok(true) => {}
            Ok(false) => {
                cleanup(&tmp);
                return Ok(None);
            }
            Err(e) => {
                cleanup(&tmp);
                return Err(e);
            }
        }
        std::fs::rename(&tmp, &local)
            .map_err(|e| AfsError::Cache(format!("placing {}: {e}", local.display())))?;
        Ok(Some(()))
    }

    /// Adds or replaces the entry of `rel`, keeping the byte totals.
    fn reindex(&mut self, rel: String, e: Entry) -> Option<Entry> {
        *self.total(e.memory.is_some()) += e.size;
        let old = self.index.insert(rel, e);
        if let Some(o) = &old {
            let t = self.total(o.memory.is_some());
            *t = t.saturating_sub(o.size);
        }
        old
    }

    /// Removes the entry of `rel`, keeping the byte totals.
    fn unindex(&mut self, rel: &str) -> Option<Entry> {
        let old = self.index.remove(rel);
        if let Some(o) = &old {
            let t = self.total(o.memory.is_some());
            *t = t.saturating_sub(o.size);
        }
        old
    }

    fn total(&mut self, memory: bool) -> &mut u64 {
        if memory {
            &mut self.memory_bytes
        } else {
            &mut self.disk_bytes
        }
    }

    /// Evicts least recently used files until the disk cache and the memory cache each fit
    /// their limit, never the file just opened.
    fn evict(&mut self, keep: &str) {
        for memory in [false, true] {
            let limit = if memory {
                self.cfg.memory_limit_bytes
            } else {
                self.cfg.cache_limit_bytes
            };
            while *self.total(memory) > limit {
                let victim = self
                    .index
                    .iter()
                    .filter(|(p, e)| p.as_str() != keep && e.memory.is_some() == memory)
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(p, _)| p.clone());
                let Some(v) = victim else { break };
                if self.unindex(&v).is_some() {
                    if !memory {
                        let _ = std::fs::remove_file(self.local_path(&v));
                    }
                    debug!(path = v, "evicted from cache");
                }
            }
        }
    }

    /// Saves the index if it changed and the last save is old enough (see
    /// [`INDEX_SAVE_INTERVAL`]).
    fn save_index(&mut self) {
        self.index_dirty = true;
        if self
            .last_index_save
            .is_some_and(|t| t.elapsed() < INDEX_SAVE_INTERVAL)
        {
            return;
        }
        self.flush_index();
    }

    /// Saves the index now if it changed.
    pub fn flush_index(&mut self) {
        if !self.index_dirty {
            return;
        }
        self.index_dirty = false;
        self.last_index_save = Some(Instant::now());
        let path = self.dir.join("index.json");
        let on_disk: HashMap<&String, &Entry> = self
            .index
            .iter()
            .filter(|(_, e)| e.memory.is_none())
            .collect();
        let write = serde_json::to_vec(&on_disk)
            .map_err(std::io::Error::other)
            .and_then(|b| proto::files::write_atomic(&path, &b, false));
        if let Err(e) = write {
            warn!(error = %e, "cannot save cache index; the cache will be refetched after a restart");
        }
    }

    /// Lists the files of the first server that answers.
    pub async fn list(&mut self) -> Result<Vec<crate::msg::FileInfo>, AfsError> {
        let order = self.server_order();
        let mut last = String::new();
        for server in order {
            if let Err(e) = self.ensure(server).await {
                last = e.to_string();
                continue;
            }
            let sent = match self.active.as_mut() {
                Some(a) => a.conn.send(&Request::List {}).await,
                None => continue,
            };
            if let Err(e) = sent {
                self.drop_connection(&e.to_string());
                continue;
            }
            match self.reply().await {
                Ok(Reply::Listing { files }) => return Ok(files),
                Ok(other) => last = format!("unexpected {other:?}"),
                Err(e) => {
                    last = e.to_string();
                    self.drop_connection(&last);
                }
            }
        }
        Err(AfsError::Unavailable { message: last })
    }

    /// Role of the server this client is connected to, if any (for status displays).
    pub fn connected_server(&self) -> Option<&str> {
        self.active
            .as_ref()
            .map(|a| self.cfg.servers[a.server].as_str())
    }

    /// Stores a local file as `path` on the primary (AFS write-on-close). Backups refuse
    /// writes, so this goes to the first server only.
    pub async fn store(&mut self, path: &str, local: &Path) -> Result<String, AfsError> {
        let rel = check_rel(path).map_err(|e| AfsError::Refused {
            path: path.to_string(),
            message: e,
        })?;
        let proto_err = |e: ProtoError| AfsError::Unavailable {
            message: e.to_string(),
        };
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| AfsError::Cache(format!("opening {}: {e}", local.display())))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| AfsError::Cache(format!("stat {}: {e}", local.display())))?
            .len();
        self.ensure(0).await.map_err(proto_err)?;
        let Some(active) = self.active.as_mut() else {
            return Err(AfsError::Unavailable {
                message: "connection lost".into(),
            });
        };
        active
            .conn
            .write_msg(&Request::Store {
                path: rel.clone(),
                size,
            })
            .await
            .map_err(proto_err)?;
        active
            .conn
            .write_body(size, &mut file)
            .await
            .map_err(proto_err)?;
        active.conn.flush().await.map_err(proto_err)?;
        match self.reply().await.map_err(proto_err)? {
            Reply::Stored { version, .. } => Ok(version),
            Reply::Error { message, .. } => {
                self.drop_connection("store refused");
                Err(AfsError::Refused { path: rel, message })
            }
            other => Err(AfsError::Unavailable {
                message: format!("unexpected reply to store: {other:?}"),
            }),
        }
    }
}

impl Drop for AfsClient {
    fn drop(&mut self) {
        self.flush_index();
    }
}
