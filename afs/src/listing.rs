//! Watching the file servers' listing: the files and their fingerprints, sent again each
//! time the server says it changed (`watch_list` / `list_changed`, PROTOCOL.md). This is how
//! a coordinator learns its input files without a disk shared with the file server.

use std::collections::HashMap;
use std::time::Duration;

use proto::files::Fingerprint;
use proto::{ClusterKey, Connection, ProtoError};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::msg::{Reply, Request, MAX_LINE};

/// One listing of a server's root.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The server that answered.
    pub server: String,
    /// Relative path -> fingerprint (size, mtime, ctime, inode on that server) and content
    /// version if the server knows it.
    pub files: HashMap<String, (Fingerprint, Option<String>)>,
}

/// Where to watch, and how.
#[derive(Clone, Debug)]
pub struct ListWatch {
    /// Servers in the order to try (the primary first).
    pub servers: Vec<String>,
    pub key: ClusterKey,
    pub client_id: String,
    /// Limit for connecting and for each answer.
    pub timeout: Duration,
    /// Listed again after this long even without `list_changed` (a safety net).
    pub refresh: Duration,
}

impl ListWatch {
    /// Sends every listing on `tx` until `shutdown` (or until `tx` is closed): from the
    /// first server that answers, again on each `list_changed` and every `refresh`; on an
    /// error, the next server after a short pause.
    pub async fn run(self, tx: mpsc::UnboundedSender<Listing>, shutdown: CancellationToken) {
        let mut at = 0usize;
        let mut failures = 0u32;
        loop {
            if shutdown.is_cancelled() || tx.is_closed() || self.servers.is_empty() {
                return;
            }
            let addr = self.servers[at % self.servers.len()].clone();
            let r = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.watch(&addr, &tx) => r,
            };
            match r {
                Ok(()) => return,
                Err(e) => {
                    failures += 1;
                    if failures <= self.servers.len() as u32 || failures % 20 == 0 {
                        warn!(server = addr, error = %e, "cannot list the file server; trying the next");
                    }
                    at += 1;
                    // Back to the primary first after a round of failures.
                    if at % self.servers.len() == 0 {
                        at = 0;
                    }
                    let pause = Duration::from_millis(if at == 0 { 500 } else { 50 });
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// One server: lists and waits for changes until an error (Ok when `tx` is closed).
    async fn watch(
        &self,
        addr: &str,
        tx: &mpsc::UnboundedSender<Listing>,
    ) -> Result<(), ProtoError> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ProtoError::Timeout(self.timeout))??;
        let mut conn = Connection::new(stream).with_max_line(MAX_LINE);
        tokio::time::timeout(
            self.timeout,
            proto::auth::client_handshake(&mut conn, &self.key, crate::SERVICE),
        )
        .await
        .map_err(|_| ProtoError::Timeout(self.timeout))??;
        conn.send(&Request::Hello {
            client_id: self.client_id.clone(),
        })
        .await?;
        match conn.expect_msg::<Reply>(self.timeout).await? {
            Reply::Welcome {
                server_id, role, ..
            } => {
                info!(server = addr, server_id, %role, "watching the file server's listing")
            }
            other => return Err(ProtoError::Peer(format!("expected welcome, got {other:?}"))),
        }
        loop {
            conn.send(&Request::WatchList {}).await?;
            let files = loop {
                match conn.expect_msg::<Reply>(self.timeout).await? {
                    Reply::FileList { files } => break files,
                    // A change pushed before the answer: the answer is newer anyway.
                    Reply::ListChanged {} | Reply::CallbackBreak { .. } => {}
                    Reply::Error { code, message } => {
                        return Err(ProtoError::Peer(format!("{code:?}: {message}")))
                    }
                    other => {
                        return Err(ProtoError::Peer(format!(
                            "expected file_list, got {other:?}"
                        )))
                    }
                }
            };
            debug!(server = addr, files = files.len(), "listing");
            let listing = Listing {
                server: addr.to_string(),
                files: files
                    .into_iter()
                    .map(|f| (f.path, (f.fingerprint, f.version)))
                    .collect(),
            };
            if tx.send(listing).is_err() {
                return Ok(());
            }
            // Until the server says it changed, or the refresh is due. Keep the link alive:
            // the server closes connections idle past its limit.
            let deadline = tokio::time::Instant::now() + self.refresh;
            loop {
                let ping_at = tokio::time::Instant::now() + PING_EVERY;
                let r =
                    tokio::time::timeout_at(deadline.min(ping_at), conn.read_msg::<Reply>()).await;
                match r {
                    Ok(Ok(Some(Reply::ListChanged {}))) => break,
                    Ok(Ok(Some(Reply::Pong {}))) | Ok(Ok(Some(Reply::CallbackBreak { .. }))) => {}
                    Ok(Ok(Some(other))) => {
                        return Err(ProtoError::Peer(format!("unexpected {other:?}")))
                    }
                    Ok(Ok(None)) => return Err(ProtoError::Truncated),
                    Ok(Err(e)) => return Err(e),
                    Err(_) if tokio::time::Instant::now() >= deadline => break,
                    Err(_) => conn.send(&Request::Ping {}).await?,
                }
            }
        }
    }
}

/// A watching connection pings this often (the server closes idle connections).
const PING_EVERY: Duration = Duration::from_secs(10);
