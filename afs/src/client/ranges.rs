//! Range reads: bytes of a file read straight into memory from the first server that has
//! it, pinned to one state of the file across reads; nothing is cached and no callback is
//! kept (the worker's chunks of large files).

use std::time::Duration;

use proto::ProtoError;
use tracing::{debug, info, warn};

use super::local::{LocalLink, LocalRead};
use super::{AfsClient, AfsError};
use crate::msg::{ErrorCode, LocalOffer, Reply, Request};
use crate::names::check_rel;

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

/// What a server's error answer to a range of `rel` means, the same over TCP and the
/// local socket.
fn refused(rel: &str, code: ErrorCode, message: String) -> Result<RangeAttempt, AfsError> {
    match code {
        ErrorCode::NotFound => Ok(RangeAttempt::NotHere),
        ErrorCode::Changed => Ok(RangeAttempt::Changed),
        ErrorCode::Forbidden | ErrorCode::TooLarge => Err(AfsError::Refused {
            path: rel.to_string(),
            message,
        }),
        _ => Ok(RangeAttempt::Failed(message)),
    }
}

/// What one range request at one server gave.
enum RangeAttempt {
    Done(RangeData),
    NotHere,
    Changed,
    Failed(String),
}

impl AfsClient {
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

    /// The range through the connected server's local socket, if it offered one and it
    /// works from here; `None`: read it over TCP (the socket failed, or is not offered).
    async fn local_attempt(
        &mut self,
        rel: &str,
        start: u64,
        len: u64,
        version: Option<&str>,
    ) -> Option<Result<RangeAttempt, AfsError>> {
        if !self.cfg.local_reads {
            return None;
        }
        let active = self.active.as_mut()?;
        if active.local_off {
            return None;
        }
        let offer = active.offer.clone()?;
        let reused = active.local.take();
        // A link that served before may have been closed since (the server's idle timeout,
        // a restart): then one new link is tried before giving up on the socket.
        let mut read = None;
        for link in [reused, None] {
            let fresh = link.is_none();
            match self
                .local_read(link, &offer, rel, start, len, version)
                .await
            {
                Ok((link, r)) => {
                    if fresh {
                        info!(
                            socket = offer.path,
                            "reading ranges through the file server's local socket (its open files, not TCP)"
                        );
                    }
                    self.active.as_mut()?.local = Some(link);
                    read = Some(r);
                    break;
                }
                Err(e) if fresh => {
                    debug!(error = %e, "local reads off for this connection; reading over TCP");
                    self.active.as_mut()?.local_off = true;
                    return None;
                }
                Err(e) => debug!(error = %e, "the local link failed; connecting it again"),
            }
        }
        let read = read?;
        Some(match read {
            LocalRead::Done(d) => {
                self.stats.ranges += 1;
                self.stats.local_ranges += 1;
                Ok(RangeAttempt::Done(d))
            }
            LocalRead::Changed => Ok(RangeAttempt::Changed),
            LocalRead::Refused(code, message) => refused(rel, code, message),
        })
    }

    /// One range through `link`, or through a new link to `offer` (connected within the
    /// request timeout, then both proofs): the link back with what it read, or why the
    /// socket failed.
    async fn local_read(
        &self,
        link: Option<LocalLink>,
        offer: &LocalOffer,
        rel: &str,
        start: u64,
        len: u64,
        version: Option<&str>,
    ) -> Result<(LocalLink, LocalRead), String> {
        let timeout = self.cfg.request_timeout;
        let stream = match link {
            Some(_) => None,
            None => Some(
                tokio::time::timeout(timeout, tokio::net::UnixStream::connect(&offer.path))
                    .await
                    .map_err(|_| format!("connecting to {}: timed out", offer.path))?
                    .and_then(|s| s.into_std())
                    .map_err(|e| format!("connecting to {}: {e}", offer.path))?,
            ),
        };
        let (offer, key) = (offer.clone(), self.cfg.key.clone());
        let (path, version) = (rel.to_string(), version.map(str::to_string));
        let work = tokio::task::spawn_blocking(move || {
            let mut link = match (link, stream) {
                (Some(l), _) => l,
                (None, Some(s)) => LocalLink::handshake(s, &offer, &key, timeout)?,
                (None, None) => return Err(std::io::Error::other("no link")),
            };
            let r = link.read(&path, start, len, version.as_deref())?;
            Ok((link, r))
        });
        // The socket's own timeouts end a stuck call; this bounds the whole attempt too.
        match tokio::time::timeout(timeout * 2, work).await {
            Err(_) => Err("the local read timed out".into()),
            Ok(Err(e)) => Err(format!("local read task: {e}")),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Ok(Ok(x))) => Ok(x),
        }
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
        if let Some(r) = self.local_attempt(rel, start, len, version).await {
            return r;
        }
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
            Reply::Error { code, message } => return refused(rel, code, message),
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
}
