//! The dashboard's listener, capped: at most [`DASHBOARD_CONNECTIONS`] connections at once,
//! a newcomer past that evicting the oldest.

use tokio::net::TcpListener;

/// Dashboard connections at once. The dashboard has no key, so a newcomer past this closes
/// the oldest connection (a browser's live view reconnects by itself) rather than waiting
/// behind silent or slow sockets.
pub(super) const DASHBOARD_CONNECTIONS: usize = 64;

/// The dashboard's listener: every connection holds a slot of [`DASHBOARD_CONNECTIONS`].
pub(super) struct Capped {
    pub(super) inner: TcpListener,
    pub(super) slots: proto::conn::Slots,
}

/// A dashboard connection that fails its reads and writes once evicted.
pub(super) struct CappedIo {
    io: tokio::net::TcpStream,
    gone: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    _slot: proto::conn::Slot,
}

impl CappedIo {
    fn evicted(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        std::future::Future::poll(self.gone.as_mut(), cx).is_ready()
    }
}

fn evicted_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "closed for newer dashboard connections",
    )
}

impl tokio::io::AsyncRead for CappedIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.evicted(cx) {
            return std::task::Poll::Ready(Err(evicted_error()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CappedIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.evicted(cx) {
            return std::task::Poll::Ready(Err(evicted_error()));
        }
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for Capped {
    type Io = CappedIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let slot = self.slots.take();
        let gone = Box::pin(slot.evicted.clone().cancelled_owned());
        (
            CappedIo {
                io,
                gone,
                _slot: slot,
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
