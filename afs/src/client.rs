//! The AFS client: whole-file caching with callbacks, revalidation by version, failover.
//!
//! `open(path)` returns a local copy under `<cache root>/<client id>/files/`. While the
//! server's callback promise for that file holds (the connection that got it is up and no
//! break arrived), a second `open` costs nothing on the network. A break, a lost connection
//! or a client restart turns the cached copy into a candidate that is revalidated by version
//! (`fetch` with `have_version`: `not_modified` costs one short round trip, no body).
//!
//! This file holds the client type, its settings and errors, and its connection: which
//! server to try (the primary first, failing over to the backups), the handshake, callback
//! breaks, and the listing and store requests. The rest, by job:
//! - `cache`: the cache index (disk and memory entries, recency, byte totals), eviction
//!   and the saved `index.json`;
//! - `fetch`: whole-file opens through the cache, single or pipelined in batches;
//! - `ranges`: range reads into memory, pinned to one state of the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use proto::auth::client_handshake;
use proto::{ClusterKey, Connection, ProtoError};
use tokio::net::TcpStream;
use tracing::debug;

use crate::msg::{Reply, Request, MAX_LINE};
use crate::names::check_rel;
use crate::SERVICE;

mod cache;
mod fetch;
mod local;
mod ranges;

pub use ranges::{RangeData, MAX_RANGE};

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
    /// Read ranges through the server's local socket when it offers one and this client
    /// can reach it (same host): the file's descriptor instead of its bytes over TCP.
    pub local_reads: bool,
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
            local_reads: true,
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
    /// Of those, the ones read through the server's local socket (no body bytes).
    pub local_ranges: u64,
    /// Body bytes received.
    pub body_bytes: u64,
    /// Callback breaks received.
    pub breaks: u64,
}

struct Active {
    conn: Connection,
    server: usize,
    /// The server's local socket, if it offered one.
    offer: Option<crate::msg::LocalOffer>,
    /// The link to it, once connected (taken while a read is under way).
    local: Option<local::LocalLink>,
    /// The local socket failed on this connection: ranges go over TCP.
    local_off: bool,
}

/// The client. One per worker; not shared between tasks (methods take `&mut self`).
pub struct AfsClient {
    cfg: ClientConfig,
    dir: PathBuf,
    index: cache::Index,
    active: Option<Active>,
    last_primary_try: Option<Instant>,
    stats: ClientStats,
    /// The index changed since it was last saved.
    index_dirty: bool,
    last_index_save: Option<Instant>,
}

impl AfsClient {
    /// Opens the cache (creating its folder) and loads the index a previous run left.
    pub fn new(cfg: ClientConfig) -> Result<Self, AfsError> {
        let dir = cfg.cache_root.join(&cfg.client_id);
        std::fs::create_dir_all(dir.join("files"))
            .map_err(|e| AfsError::Cache(format!("creating {}: {e}", dir.display())))?;
        let index = Self::load_index(&dir);
        Ok(AfsClient {
            cfg,
            dir,
            index,
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

    fn drop_connection(&mut self, why: &str) {
        if let Some(a) = self.active.take() {
            debug!(server = %self.cfg.servers[a.server], why, "dropping file-server connection");
        }
        // Promises were per connection.
        self.index.clear_callbacks();
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

    async fn connect(
        &self,
        server: usize,
    ) -> Result<(Connection, Option<crate::msg::LocalOffer>), ProtoError> {
        let addr = &self.cfg.servers[server];
        let stream = tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ProtoError::Timeout(self.cfg.connect_timeout))??;
        // The server is on this host when the connection never leaves its network stack:
        // to an address of its own, the kernel picks that same address as the source. A
        // server in another network namespace (a host of the netns tests, a container)
        // shares no address with this one, even when its socket file is reachable.
        let same_host = matches!(
            (stream.local_addr(), stream.peer_addr()),
            (Ok(l), Ok(p)) if l.ip() == p.ip()
        );
        let mut conn = Connection::new(stream).with_max_line(MAX_LINE);
        client_handshake(&mut conn, &self.cfg.key, SERVICE).await?;
        conn.send(&Request::Hello {
            client_id: self.cfg.client_id.clone(),
        })
        .await?;
        match conn.expect_msg::<Reply>(self.cfg.request_timeout).await? {
            Reply::Welcome {
                role,
                server_id,
                local,
            } => {
                debug!(%addr, server_id, %role, local = local.is_some(), same_host, "connected to file server");
                Ok((conn, local.filter(|_| same_host)))
            }
            other => Err(ProtoError::Peer(format!("expected welcome, got {other:?}"))),
        }
    }

    /// Ensures a connection to `server` (reusing the current one if it is that server).
    async fn ensure(&mut self, server: usize) -> Result<(), ProtoError> {
        if self.active.as_ref().is_some_and(|a| a.server == server) {
            return Ok(());
        }
        let (conn, offer) = self.connect(server).await?;
        self.drop_connection("switching server");
        self.active = Some(Active {
            conn,
            server,
            offer,
            local: None,
            local_off: false,
        });
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
