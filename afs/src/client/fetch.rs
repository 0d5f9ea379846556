//! Whole-file fetches through the cache: `open` (answered from the cache while the
//! callback holds, else revalidated or fetched, with retries and failover), the body's
//! reception to disk or memory checked against its version, and `open_many`, which
//! pipelines the fetches of a batch on one connection.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use proto::ProtoError;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::warn;

use super::cache::Entry;
use super::{AfsClient, AfsError, Content, OpenedFile};
use crate::msg::{ErrorCode, Reply, Request};
use crate::names::{check_rel, Hasher};

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

/// What one attempt at one server gave.
enum Attempt {
    Done(OpenedFile),
    /// This server does not have it (another may).
    NotHere,
    /// This server failed; try another.
    Failed(String),
}

impl AfsClient {
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
        let now = self.index.tick();
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
                let now = self.index.tick();
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
                        let now = self.index.tick();
                        let content = match &memory {
                            Some(b) => Content::Memory(b.clone()),
                            None => Content::Disk(local.clone()),
                        };
                        let old = self.index.insert(
                            rel.to_string(),
                            Entry {
                                version: version.clone(),
                                size,
                                last_used: now,
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
}
