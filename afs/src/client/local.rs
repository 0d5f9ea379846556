//! The client's end of short-circuit local reads (see `server/local.rs`): a blocking Unix
//! socket to the server it is connected to, on which each range comes as the open file. The
//! client reads the range from it itself, then checks that the file still has the
//! fingerprint the server opened it with: then the bytes are that state's, as a `file_end`
//! after a TCP range says. Calls are short (a line each way on a local socket, and a read
//! from the page cache) and run on a blocking thread.

use std::io::{IoSliceMut, Read, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::RangeData;
use crate::msg::{
    ErrorCode, LocalOffer, LocalReply, LocalRequest, MAX_LOCAL_LINE, PROOF_CLIENT, PROOF_SERVER,
};
use crate::store::Fingerprint;
use proto::ClusterKey;

/// What a local range read gave.
pub(super) enum LocalRead {
    Done(RangeData),
    /// The server refused (not found, forbidden, changed, ...), as it would over TCP.
    Refused(ErrorCode, String),
    /// The file changed while it was read here.
    Changed,
}

/// A connection to a server's local socket.
pub(super) struct LocalLink {
    stream: UnixStream,
    pending: Vec<u8>,
}

impl LocalLink {
    /// Proves the cluster key on `stream` (connected to `offer`'s path) after the server
    /// proved it, both bound to the offer's token. Any failure means: read over TCP.
    pub(super) fn handshake(
        stream: UnixStream,
        offer: &LocalOffer,
        key: &ClusterKey,
        timeout: Duration,
    ) -> std::io::Result<LocalLink> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut link = LocalLink {
            stream,
            pending: Vec::new(),
        };
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        link.send(&LocalRequest::Hello {
            nonce: nonce.clone(),
        })?;
        let server_nonce = match link.receive()? {
            (LocalReply::Welcome { nonce: n, proof }, _)
                if key.verify(&[PROOF_SERVER, &offer.token, &nonce], &proof) =>
            {
                n
            }
            (other, _) => {
                return Err(std::io::Error::other(format!(
                    "the process at the local socket is not the server that offered it: {other:?}"
                )))
            }
        };
        link.send(&LocalRequest::Prove {
            proof: key.sign(&[PROOF_CLIENT, &offer.token, &server_nonce]),
        })?;
        match link.receive()? {
            (LocalReply::Ready {}, _) => Ok(link),
            (other, _) => Err(std::io::Error::other(format!(
                "the local socket refused this client: {other:?}"
            ))),
        }
    }

    /// Reads `len` bytes of `rel` from `start` as `fetch_range` would; `Err` is a failure
    /// of the socket (drop the link and read over TCP).
    pub(super) fn read(
        &mut self,
        rel: &str,
        start: u64,
        len: u64,
        version: Option<&str>,
    ) -> std::io::Result<LocalRead> {
        self.send(&LocalRequest::OpenRange {
            path: rel.to_string(),
            start,
            len,
            version: version.map(str::to_string),
        })?;
        let (reply, fd) = self.receive()?;
        let (got_start, got, size, v, pin, fp) = match reply {
            LocalReply::Range {
                start: s,
                len: got,
                size,
                version: v,
                pin,
                fingerprint,
                ..
            } if got <= len && s == start.min(size) => (s, got, size, v, pin, fingerprint),
            LocalReply::Error { code, message } => return Ok(LocalRead::Refused(code, message)),
            other => {
                return Err(std::io::Error::other(format!(
                    "unexpected local reply {other:?}"
                )))
            }
        };
        let Some(fd) = fd else {
            return Err(std::io::Error::other("a local range came without its file"));
        };
        let mut file = std::fs::File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other(
                "the local socket passed something not a file",
            ));
        }
        let want = usize::try_from(got).map_err(std::io::Error::other)?;
        let mut bytes = Vec::with_capacity(want);
        file.seek(SeekFrom::Start(got_start))?;
        (&mut file).take(got).read_to_end(&mut bytes)?;
        // Short: the file shrank. Another fingerprint: it was written since it was opened.
        if bytes.len() != want || Fingerprint::of(&file.metadata()?) != fp {
            return Ok(LocalRead::Changed);
        }
        Ok(LocalRead::Done(RangeData {
            bytes,
            size,
            version: v,
            pin,
        }))
    }

    fn send(&mut self, req: &LocalRequest) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.stream.write_all(&line)
    }

    /// Reads one reply line and the descriptor that came with it, if any.
    fn receive(&mut self) -> std::io::Result<(LocalReply, Option<OwnedFd>)> {
        let mut fd: Option<OwnedFd> = None;
        loop {
            if let Some(k) = self.pending.iter().position(|&c| c == b'\n') {
                let rest = self.pending.split_off(k + 1);
                let line = std::mem::replace(&mut self.pending, rest);
                let reply = serde_json::from_slice::<LocalReply>(&line[..k])
                    .map_err(|e| std::io::Error::other(format!("bad local reply: {e}")))?;
                return Ok((reply, fd));
            }
            if self.pending.len() > MAX_LOCAL_LINE {
                return Err(std::io::Error::other("local reply line too long"));
            }
            let mut buf = [0u8; 4096];
            // Room for the most descriptors one message can carry (SCM_MAX_FD): the control
            // data is never cut, so every descriptor installed here is seen and closed.
            let mut cmsg = nix::cmsg_space!([RawFd; 253]);
            let (n, got) = {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let msg = match recvmsg::<()>(
                    std::os::fd::AsRawFd::as_raw_fd(&self.stream),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Ok(m) => m,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                };
                let mut got = Vec::new();
                for c in msg.cmsgs().map_err(std::io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        got.extend(fds);
                    }
                }
                (msg.bytes, got)
            };
            for raw in got {
                // SAFETY: the kernel just installed `raw` in this process for us (SCM_RIGHTS);
                // nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if fd.is_none() {
                    fd = Some(owned);
                }
            }
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}
