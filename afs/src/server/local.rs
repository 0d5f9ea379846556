//! Short-circuit local reads (HDFS's name for them): a client on the server's host asks
//! for a range on the server's Unix socket and gets the open file itself, its descriptor
//! passed with the reply (`SCM_RIGHTS`), instead of the bytes through loopback TCP. The
//! server does the same checks as for `fetch_range` (the path, the version asked for) and
//! checks that the file it opened has the fingerprint it answers with; the client reads
//! the range and checks that fingerprint again after (see `client/local.rs`).
//!
//! The socket is only a faster way to the same answers: a client that cannot reach it (on
//! another host, in another container) or whose token it refuses uses TCP as before.

use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::serve::range_state;
use super::Shared;
use crate::msg::{
    ErrorCode, LocalOffer, LocalReply, LocalRequest, MAX_LOCAL_LINE, PROOF_CLIENT, PROOF_SERVER,
};
use crate::store::Fingerprint;

/// The local socket, bound, with the lock that makes its path this server's.
pub(super) struct Bound {
    listener: UnixListener,
    pub(super) offer: LocalOffer,
    /// `<path>.lock`, locked for the server's life: another server told the same path finds
    /// it locked and runs without a local socket, and a socket file found at the path while
    /// holding the lock is a dead server's.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Binds the local socket at `path`.
pub(super) fn bind(path: &Path) -> Result<Bound, String> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("reading the current folder: {e}"))?
            .join(path)
    };
    if let Some(parent) = abs.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let mut lock_name = abs.clone().into_os_string();
    lock_name.push(".lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_name)
        .map_err(|e| format!("opening {}: {e}", Path::new(&lock_name).display()))?;
    let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| {
            format!(
                "{} is another running server's ({e})",
                Path::new(&lock_name).display()
            )
        })?;
    if let Ok(meta) = std::fs::symlink_metadata(&abs) {
        if !meta.file_type().is_socket() {
            return Err(format!("{} exists and is not a socket", abs.display()));
        }
        std::fs::remove_file(&abs)
            .map_err(|e| format!("removing the stale socket {}: {e}", abs.display()))?;
    }
    let listener =
        UnixListener::bind(&abs).map_err(|e| format!("binding {}: {e}", abs.display()))?;
    // The proofs are what admit a client; the mode only keeps other users from trying.
    if let Err(e) = std::fs::set_permissions(&abs, std::fs::Permissions::from_mode(0o600)) {
        warn!(path = %abs.display(), error = %e, "could not restrict the local socket to its owner");
    }
    let offer = LocalOffer {
        path: abs.to_string_lossy().into_owned(),
        token: hex::encode(rand::random::<[u8; 16]>()),
    };
    Ok(Bound {
        listener,
        offer,
        _lock: lock,
    })
}

/// Accepts local clients until `shutdown`, at most `max` at once (a client turned away
/// uses TCP), then removes the socket file (still this server's: it holds the lock).
pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    bound: Bound,
    max: usize,
    shutdown: CancellationToken,
) {
    let offer = bound.offer.clone();
    info!(path = offer.path, "local reads offered on a Unix socket");
    let permits = Arc::new(Semaphore::new(max));
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = bound.listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "accepting on the local socket");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!("local socket full: a client is turned away (it reads over TCP)");
            continue;
        };
        let shared = shared.clone();
        let token = offer.token.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = serve_local(&shared, stream, &token) => {
                    if let Err(e) = r {
                        debug!(error = %e, "local connection closed on error");
                    }
                }
            }
        });
    }
    let _ = std::fs::remove_file(&offer.path);
    drop(bound);
}

/// The most a reply may wait for a client that does not read.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads one line within `limit`.
async fn line_within(
    stream: &UnixStream,
    pending: &mut Vec<u8>,
    limit: Duration,
) -> std::io::Result<Option<Vec<u8>>> {
    tokio::time::timeout(limit, read_line(stream, pending))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no line in time"))?
}

/// Refuses a client that failed the handshake, and says so.
async fn refuse(stream: &UnixStream, why: &str) -> std::io::Error {
    let _ = timed_send(
        stream,
        &LocalReply::Error {
            code: ErrorCode::Forbidden,
            message: format!("{why}: prove this cluster's key for this server's token"),
        },
        None,
    )
    .await;
    std::io::Error::other(format!("local client refused: {why}"))
}

/// Serves one local client: the proofs both ways, then ranges one at a time.
async fn serve_local(shared: &Shared, stream: UnixStream, token: &str) -> std::io::Result<()> {
    let mut pending = Vec::new();
    let hs = proto::auth::HANDSHAKE_TIMEOUT;
    let client_nonce = match line_within(&stream, &mut pending, hs)
        .await?
        .as_deref()
        .map(serde_json::from_slice::<LocalRequest>)
    {
        Some(Ok(LocalRequest::Hello { nonce })) if nonce.len() >= 16 => nonce,
        _ => return Err(refuse(&stream, "expected hello with a nonce").await),
    };
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let key = &shared.cfg.key;
    let proof = key.sign(&[PROOF_SERVER, token, &client_nonce]);
    timed_send(
        &stream,
        &LocalReply::Welcome {
            nonce: nonce.clone(),
            proof,
        },
        None,
    )
    .await?;
    match line_within(&stream, &mut pending, hs)
        .await?
        .as_deref()
        .map(serde_json::from_slice::<LocalRequest>)
    {
        Some(Ok(LocalRequest::Prove { proof }))
            if key.verify(&[PROOF_CLIENT, token, &nonce], &proof) => {}
        _ => return Err(refuse(&stream, "bad proof").await),
    }
    timed_send(&stream, &LocalReply::Ready {}, None).await?;
    loop {
        let line = match line_within(&stream, &mut pending, shared.cfg.idle_timeout).await {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Ok(()),
            r => match r? {
                Some(l) => l,
                None => return Ok(()),
            },
        };
        let req = match serde_json::from_slice::<LocalRequest>(&line) {
            Ok(LocalRequest::OpenRange {
                path,
                start,
                len,
                version,
            }) => (path, start, len, version),
            Ok(other) => {
                return Err(std::io::Error::other(format!("unexpected {other:?}")));
            }
            Err(e) => {
                let _ = timed_send(
                    &stream,
                    &LocalReply::Error {
                        code: ErrorCode::BadRequest,
                        message: format!("bad request: {e}"),
                    },
                    None,
                )
                .await;
                return Err(std::io::Error::other(format!("bad request: {e}")));
            }
        };
        let (reply, file) = open_range(shared, req).await;
        timed_send(&stream, &reply, file.as_ref()).await?;
    }
}

/// [`send`] within [`SEND_TIMEOUT`]: a client that stops reading loses its connection.
async fn timed_send(
    stream: &UnixStream,
    reply: &LocalReply,
    file: Option<&std::fs::File>,
) -> std::io::Result<()> {
    tokio::time::timeout(SEND_TIMEOUT, send(stream, reply, file))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "the client does not read")
        })?
}

/// The answer to `open_range`: the header and the open file, or an error.
async fn open_range(
    shared: &Shared,
    (path, start, len, version): (String, u64, u64, Option<String>),
) -> (LocalReply, Option<std::fs::File>) {
    let refuse = |code, message| (LocalReply::Error { code, message }, None);
    let (rel, fp, known) = match range_state(&shared.store, path, version.as_deref()).await {
        Ok(x) => x,
        Err(e) => return refuse(e.code, e.message),
    };
    let real = match shared.store.resolve_existing(&rel) {
        Ok((_, real)) => real,
        Err(e) => return refuse(e.code, e.message),
    };
    let file = match std::fs::File::open(&real) {
        Ok(f) => f,
        Err(e) => return refuse(ErrorCode::NotFound, format!("opening {rel}: {e}")),
    };
    // The file opened must be the state named: else it was replaced or written since.
    match file.metadata() {
        Ok(m) if Fingerprint::of(&m) == fp => {}
        _ => {
            return refuse(
                ErrorCode::Changed,
                format!("{rel} changed while it was being opened; fetch again"),
            )
        }
    }
    let start = start.min(fp.size);
    let len = len.min(fp.size - start);
    shared.stats.fetches.fetch_add(1, Ordering::Relaxed);
    shared.stats.local_ranges.fetch_add(1, Ordering::Relaxed);
    (
        LocalReply::Range {
            path: rel,
            start,
            len,
            size: fp.size,
            version: known,
            pin: fp.token(),
            fingerprint: fp,
        },
        Some(file),
    )
}

/// Sends one reply line, with `file`'s descriptor attached to its first byte.
async fn send(
    stream: &UnixStream,
    reply: &LocalReply,
    file: Option<&std::fs::File>,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let fds = file.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = fds
        .as_ref()
        .map(|fds| vec![ControlMessage::ScmRights(fds)])
        .unwrap_or_default();
    let sent = loop {
        stream.writable().await?;
        match stream.try_io(Interest::WRITABLE, || {
            sendmsg::<()>(
                stream.as_raw_fd(),
                &[IoSlice::new(&line)],
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        }) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    // The descriptor went with the first bytes; the rest is plain.
    let mut rest = &line[sent..];
    while !rest.is_empty() {
        stream.writable().await?;
        match stream.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one line (without its newline); `None` at a clean end. `pending` keeps what was
/// read past the line.
async fn read_line(stream: &UnixStream, pending: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(k) = memchr_newline(pending) {
            let rest = pending.split_off(k + 1);
            let mut line = std::mem::replace(pending, rest);
            line.pop();
            return Ok(Some(line));
        }
        if pending.len() > MAX_LOCAL_LINE {
            return Err(std::io::Error::other(format!(
                "a line longer than {MAX_LOCAL_LINE} bytes"
            )));
        }
        stream.readable().await?;
        let mut buf = [0u8; 4096];
        match stream.try_read(&mut buf) {
            Ok(0) if pending.is_empty() => return Ok(None),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}
