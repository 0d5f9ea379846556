//! A framed connection: JSON objects one per line, bounded, plus raw bodies.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Default longest JSON line accepted. A batch of primes is bounded well below this
/// (see `msg::MAX_PRIMES_PER_BATCH`); anything longer is a broken or hostile peer.
pub const DEFAULT_MAX_LINE: usize = 4 << 20;

/// Errors of a connection. Any of them closes the connection; none affects other connections.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The socket failed; the peer may be gone. Retry with a new connection.
    #[error("connection i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a line longer than the limit.
    #[error("message longer than {max} bytes")]
    TooLong { max: usize },
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed in the middle of a message")]
    Truncated,
    /// The peer sent something that is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The peer did not answer within the deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The handshake failed: replay, wrong protocol version, a broken exchange. Do not
    /// retry quickly.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The handshake showed that the two sides hold different cluster keys: retrying with
    /// the same key cannot succeed.
    #[error("authentication failed: {0}")]
    WrongKey(String),
    /// The peer reported an error and closed.
    #[error("peer error: {0}")]
    Peer(String),
}

/// One TCP connection. Reads and writes are buffered; call [`Connection::flush`] (or use
/// [`Connection::send`]) to push written messages out. [`Connection::into_split`] gives the
/// two directions to two tasks.
pub struct Connection {
    r: MsgReader,
    w: MsgWriter,
    /// The peer's address, for logs.
    pub peer: String,
}

/// The reading half of a [`Connection`].
pub struct MsgReader {
    reader: BufReader<OwnedReadHalf>,
    max_line: usize,
    line: Vec<u8>,
    /// `line` holds a line already returned; clear it before reading the next.
    line_done: bool,
}

/// The writing half of a [`Connection`].
pub struct MsgWriter {
    writer: BufWriter<OwnedWriteHalf>,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Self {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "unknown peer".to_string());
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        Connection {
            r: MsgReader {
                reader: BufReader::with_capacity(64 << 10, r),
                max_line: DEFAULT_MAX_LINE,
                line: Vec::new(),
                line_done: false,
            },
            w: MsgWriter {
                writer: BufWriter::with_capacity(64 << 10, w),
            },
            peer,
        }
    }

    /// Sets the longest accepted line.
    pub fn with_max_line(mut self, max: usize) -> Self {
        self.r.max_line = max;
        self
    }

    /// Changes the longest accepted line (e.g. once the peer has authenticated).
    pub fn set_max_line(&mut self, max: usize) {
        self.r.max_line = max;
    }

    /// The two directions, for a reader task and a writer task.
    pub fn into_split(self) -> (MsgReader, MsgWriter) {
        (self.r, self.w)
    }

    /// See [`MsgReader::read_line`].
    pub async fn read_line(&mut self) -> Result<Option<&[u8]>, ProtoError> {
        self.r.read_line().await
    }

    /// See [`MsgReader::read_msg`].
    pub async fn read_msg<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ProtoError> {
        self.r.read_msg().await
    }

    /// See [`MsgReader::expect_msg`].
    pub async fn expect_msg<T: DeserializeOwned>(
        &mut self,
        limit: Duration,
    ) -> Result<T, ProtoError> {
        self.r.expect_msg(limit).await
    }

    /// See [`MsgWriter::write_msg`].
    pub async fn write_msg<T: Serialize>(&mut self, msg: &T) -> Result<(), ProtoError> {
        self.w.write_msg(msg).await
    }

    /// See [`MsgWriter::send`].
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ProtoError> {
        self.w.send(msg).await
    }

    pub async fn flush(&mut self) -> Result<(), ProtoError> {
        self.w.flush().await
    }

    /// Copies exactly `len` raw bytes from the connection into `out`. If `stall` is given,
    /// fails with `Timeout` when no byte arrives for that long (a cut link or a hung peer),
    /// however long the whole body takes.
    pub async fn read_body<W: AsyncWrite + Unpin>(
        &mut self,
        len: u64,
        out: &mut W,
        stall: Option<Duration>,
    ) -> Result<(), ProtoError> {
        let mut left = len;
        // Straight from the read buffer: no intermediate copy, no buffer to allocate.
        while left > 0 {
            let fill = self.r.reader.fill_buf();
            let buf = match stall {
                Some(limit) => tokio::time::timeout(limit, fill)
                    .await
                    .map_err(|_| ProtoError::Timeout(limit))??,
                None => fill.await?,
            };
            if buf.is_empty() {
                return Err(ProtoError::Truncated);
            }
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            out.write_all(&buf[..n]).await?;
            self.r.reader.consume(n);
            left -= n as u64;
        }
        Ok(())
    }

    /// Reads exactly `len` raw bytes into memory (the caller has checked `len` against its
    /// limits), with the same stall rule as [`Connection::read_body`]. Large bodies are read
    /// by the kernel straight into the result, past the read buffer.
    pub async fn read_body_to_vec(
        &mut self,
        len: u64,
        stall: Option<Duration>,
    ) -> Result<Vec<u8>, ProtoError> {
        let want = usize::try_from(len).map_err(|_| ProtoError::TooLong { max: usize::MAX })?;
        let mut out = Vec::with_capacity(want);
        while out.len() < want {
            let left = (want - out.len()) as u64;
            let mut limited = (&mut self.r.reader).take(left);
            let read = limited.read_buf(&mut out);
            let n = match stall {
                Some(limit) => tokio::time::timeout(limit, read)
                    .await
                    .map_err(|_| ProtoError::Timeout(limit))??,
                None => read.await?,
            };
            if n == 0 {
                return Err(ProtoError::Truncated);
            }
        }
        Ok(out)
    }

    /// Writes exactly `len` raw bytes from `input` to the connection (buffered).
    pub async fn write_body<R: AsyncRead + Unpin>(
        &mut self,
        len: u64,
        input: &mut R,
    ) -> Result<(), ProtoError> {
        let mut limited = input.take(len);
        let copied = tokio::io::copy(&mut limited, &mut self.w.writer).await?;
        if copied != len {
            return Err(ProtoError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("body source ended after {copied} of {len} bytes"),
            )));
        }
        Ok(())
    }

    /// Writes raw bytes (buffered).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ProtoError> {
        self.w.writer.write_all(bytes).await?;
        Ok(())
    }

    /// Sends up to `len` bytes of `file` from `offset` as raw body bytes, kernel to socket
    /// (`sendfile`: no copy through this process). Returns the bytes sent: fewer than `len`
    /// only if the file ended early (the caller must then pad and report the body bad).
    /// Written messages still buffered are flushed first, so the order on the wire holds.
    #[cfg(target_os = "linux")]
    pub async fn write_file_range(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
    ) -> Result<u64, ProtoError> {
        use std::os::fd::AsRawFd;
        self.w.writer.flush().await?;
        let stream: &TcpStream = self.w.writer.get_ref().as_ref();
        let mut sent = 0u64;
        while sent < len {
            stream.writable().await?;
            let want = (len - sent).min(1 << 30) as usize;
            let mut off = libc::off_t::try_from(offset + sent)
                .map_err(|_| ProtoError::Malformed("file offset out of range".into()))?;
            let r = stream.try_io(tokio::io::Interest::WRITABLE, || {
                // SAFETY: both descriptors are open for the duration of the call (borrowed
                // from live objects) and `off` is a valid, exclusively borrowed off_t.
                let n =
                    unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut off, want) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as u64)
                }
            });
            match r {
                Ok(0) => break, // the file ended early
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(sent)
    }
}

impl MsgReader {
    /// Reads one raw line (without the newline). `Ok(None)` on a clean end of stream between
    /// messages; an error on a line cut short or over the limit. Never buffers more than the
    /// limit. Cancel-safe: a partly read line is kept for the next call, so this can be
    /// polled once with `now_or_never` to see whether a message is already waiting.
    pub async fn read_line(&mut self) -> Result<Option<&[u8]>, ProtoError> {
        if self.line_done {
            self.line.clear();
            self.line_done = false;
        }
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                return if self.line.is_empty() {
                    Ok(None)
                } else {
                    Err(ProtoError::Truncated)
                };
            }
            match memchr::memchr(b'\n', buf) {
                Some(k) => {
                    if self.line.len() + k > self.max_line {
                        return Err(ProtoError::TooLong { max: self.max_line });
                    }
                    self.line.extend_from_slice(&buf[..k]);
                    self.reader.consume(k + 1);
                    self.line_done = true;
                    return Ok(Some(&self.line));
                }
                None => {
                    let n = buf.len();
                    if self.line.len() + n > self.max_line {
                        return Err(ProtoError::TooLong { max: self.max_line });
                    }
                    self.line.extend_from_slice(buf);
                    self.reader.consume(n);
                }
            }
        }
    }

    /// Reads and decodes one message; `Ok(None)` on clean end of stream.
    pub async fn read_msg<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ProtoError> {
        self.read_decoded(|l| serde_json::from_slice(l)).await
    }

    /// [`MsgReader::read_msg`] with a decoder of one's own (e.g. `WorkerMsg::decode`).
    pub async fn read_decoded<T>(
        &mut self,
        decode: impl FnOnce(&[u8]) -> serde_json::Result<T>,
    ) -> Result<Option<T>, ProtoError> {
        match self.read_line().await? {
            None => Ok(None),
            Some(line) => decode(line)
                .map(Some)
                .map_err(|e| ProtoError::Malformed(e.to_string())),
        }
    }

    /// Like [`MsgReader::read_msg`] but fails with `Timeout` after `limit`, and treats end of
    /// stream as `Truncated` (the caller expected an answer).
    pub async fn expect_msg<T: DeserializeOwned>(
        &mut self,
        limit: Duration,
    ) -> Result<T, ProtoError> {
        match tokio::time::timeout(limit, self.read_msg()).await {
            Err(_) => Err(ProtoError::Timeout(limit)),
            Ok(Ok(Some(m))) => Ok(m),
            Ok(Ok(None)) => Err(ProtoError::Truncated),
            Ok(Err(e)) => Err(e),
        }
    }
}

impl MsgWriter {
    /// Queues one message (buffered).
    pub async fn write_msg<T: Serialize>(&mut self, msg: &T) -> Result<(), ProtoError> {
        let mut line = serde_json::to_vec(msg).map_err(|e| ProtoError::Malformed(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).await?;
        Ok(())
    }

    /// Writes one message and flushes.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ProtoError> {
        self.write_msg(msg).await?;
        self.flush().await
    }

    pub async fn flush(&mut self) -> Result<(), ProtoError> {
        self.writer.flush().await?;
        Ok(())
    }
}

/// Longest line a peer may send before it has proven the cluster key: the handshake's
/// messages are a few hundred bytes, so a stranger can never make us buffer more.
pub const PRE_AUTH_MAX_LINE: usize = 1024;

/// Connections at once that have not finished the handshake. A newcomer past this evicts
/// the oldest of them, so silent or slow strangers can delay a real peer by at most one
/// handshake, never starve it, and never take the authenticated connections' slots.
pub const PRE_AUTH_SLOTS: usize = 64;

/// Longest a peer may take to finish the handshake (a real peer needs milliseconds).
pub const PRE_AUTH_DEADLINE: Duration = Duration::from_secs(3);

/// Accepts connections for a server. Until a connection has authenticated it holds one of
/// [`PRE_AUTH_SLOTS`] slots of its own (the oldest evicted when they are all taken) and may
/// send [`PRE_AUTH_MAX_LINE`]-byte lines for [`PRE_AUTH_DEADLINE`]; once authenticated
/// ([`Admission::admit`]) it takes one of `max` slots, or is refused when they are all
/// taken. Accept errors (e.g. out of file descriptors) back off instead of spinning.
pub struct Acceptor {
    listener: tokio::net::TcpListener,
    authed: std::sync::Arc<tokio::sync::Semaphore>,
    pending: Slots,
    backoff: Duration,
}

/// A fixed number of slots where taking one when all are taken evicts the oldest holder
/// (its [`Slot::evicted`] token is cancelled): for peers that have not proven anything yet,
/// so that newcomers are served and old silent ones go, instead of the other way round.
#[derive(Clone)]
pub struct Slots {
    max: usize,
    held: std::sync::Arc<std::sync::Mutex<Held>>,
}

/// The last slot id given out, and the holders, oldest first.
type Held = (u64, std::collections::VecDeque<(u64, CancellationToken)>);

/// One taken slot; dropping it frees the slot.
pub struct Slot {
    id: u64,
    /// Cancelled when a newcomer evicts this holder: its connection should close.
    pub evicted: CancellationToken,
    slots: Slots,
}

impl Slots {
    pub fn new(max: usize) -> Self {
        Slots {
            max: max.max(1),
            held: Default::default(),
        }
    }

    /// Takes a slot, evicting the oldest holder if all are taken.
    pub fn take(&self) -> Slot {
        let evicted = CancellationToken::new();
        let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        h.0 += 1;
        let id = h.0;
        if h.1.len() >= self.max {
            if let Some((_, oldest)) = h.1.pop_front() {
                oldest.cancel();
            }
        }
        h.1.push_back((id, evicted.clone()));
        Slot {
            id,
            evicted,
            slots: self.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut h = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        h.1.retain(|(id, _)| *id != self.id);
    }
}

/// A connection accepted but not yet authenticated (see [`Acceptor`]). Dropping it frees
/// its pre-auth slot.
pub struct Admission {
    slot: Slot,
    authed: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Admission {
    /// Runs `handshake` (which MUST read from a connection limited to
    /// [`PRE_AUTH_MAX_LINE`]) under the pre-auth deadline, giving up if a newer stranger
    /// evicts this one.
    pub async fn guard<T>(
        &self,
        handshake: impl std::future::Future<Output = Result<T, ProtoError>>,
    ) -> Result<T, ProtoError> {
        tokio::select! {
            r = handshake => r,
            _ = self.slot.evicted.cancelled() => Err(ProtoError::Peer(
                "unauthenticated connection evicted by newer ones (too many at once)".into(),
            )),
            _ = tokio::time::sleep(PRE_AUTH_DEADLINE) => Err(ProtoError::Timeout(PRE_AUTH_DEADLINE)),
        }
    }

    /// The peer authenticated: it leaves the pre-auth slots and takes an authenticated one
    /// (hold the permit while the connection lives), or `None` when all are taken.
    pub fn admit(self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.authed.clone().try_acquire_owned().ok()
    }
}

impl Acceptor {
    pub fn new(listener: tokio::net::TcpListener, max: usize) -> Self {
        Acceptor {
            listener,
            authed: std::sync::Arc::new(tokio::sync::Semaphore::new(max)),
            pending: Slots::new(PRE_AUTH_SLOTS),
            backoff: Duration::from_millis(10),
        }
    }

    /// The listener back, for another acceptor: connections waiting in its backlog stay
    /// (closing it and binding the port again would reset them, and refuse any in between).
    pub fn into_listener(self) -> tokio::net::TcpListener {
        self.listener
    }

    /// The next connection, not yet authenticated, or `None` once `shutdown` is cancelled.
    pub async fn next(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Option<(Admission, TcpStream, std::net::SocketAddr)> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = self.listener.accept() => match r {
                    Ok((stream, peer)) => {
                        self.backoff = Duration::from_millis(10);
                        let admission = Admission {
                            slot: self.pending.take(),
                            authed: self.authed.clone(),
                        };
                        return Some((admission, stream, peer));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; backing off");
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
                    }
                },
            }
        }
    }
}

/// Makes the kernel drop `stream`'s connection once data it sent has gone unacknowledged for
/// `timeout` (TCP_USER_TIMEOUT, Linux): a peer cut off by the network (no FIN, no RST) is
/// then noticed by the next read or write failing, instead of after TCP's own ~15 minutes.
/// Best effort: an error is ignored (the peer is still noticed, later).
pub fn set_user_timeout(stream: &TcpStream, timeout: Duration) {
    use std::os::fd::AsRawFd;
    set_user_timeout_fd(stream.as_raw_fd(), timeout)
}

/// [`set_user_timeout`] on a socket by its fd (one a [`Connection`] now owns; it MUST still
/// be open).
pub fn set_user_timeout_fd(fd: std::os::fd::RawFd, timeout: Duration) {
    let ms: libc::c_uint = timeout.as_millis().min(u32::MAX as u128) as libc::c_uint;
    // SAFETY: setsockopt on a socket this stream owns, with a c_uint the size it says.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            &ms as *const libc::c_uint as *const libc::c_void,
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (Connection, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (Connection::new(c.expect("connect")), s.expect("accept").0)
    }

    #[tokio::test]
    /// An acceptor stopped and its listener handed on: a connection that arrives in between
    /// waits in the backlog and the next owner accepts it (the port never closes).
    async fn listener_handed_on_keeps_waiting_connections() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let mut acceptor = Acceptor::new(l, 4);
        stop.cancel();
        assert!(acceptor.next(&stop).await.is_none());
        let l = acceptor.into_listener();
        let client = TcpStream::connect(addr)
            .await
            .expect("connect while handed on");
        let (server, peer) = tokio::time::timeout(Duration::from_secs(5), l.accept())
            .await
            .expect("accepted in time")
            .expect("accept");
        assert_eq!(peer, client.local_addr().expect("client addr"));
        drop(server);
    }

    #[tokio::test]
    /// Lines round-trip; a clean close is None; a cut line and an over-long line are errors.
    async fn framing_limits() {
        let (mut c, mut s) = pair().await;
        s.write_all(b"{\"a\":1}\n{\"a\":2}\n").await.expect("write");
        let v: serde_json::Value = c.read_msg().await.expect("ok").expect("some");
        assert_eq!(v["a"], 1);
        let v: serde_json::Value = c.read_msg().await.expect("ok").expect("some");
        assert_eq!(v["a"], 2);
        drop(s);
        assert!(c
            .read_msg::<serde_json::Value>()
            .await
            .expect("clean eof")
            .is_none());

        let (c, mut s) = pair().await;
        let mut c = c.with_max_line(100);
        s.write_all(&[b'x'; 500]).await.expect("write");
        assert!(matches!(
            c.read_line().await,
            Err(ProtoError::TooLong { max: 100 })
        ));

        let (mut c, mut s) = pair().await;
        s.write_all(b"{\"a\":").await.expect("write");
        drop(s);
        assert!(matches!(c.read_line().await, Err(ProtoError::Truncated)));

        let (mut c, mut s) = pair().await;
        s.write_all(b"not json\n").await.expect("write");
        assert!(matches!(
            c.read_msg::<serde_json::Value>().await,
            Err(ProtoError::Malformed(_))
        ));
    }
}
