//! The Raft RPCs between coordinators: one TCP connection per peer, authenticated with the
//! cluster key like every connection (service `coordinator-raft`), then one JSON request
//! line and one JSON response line per call. A failed call drops the connection; the next
//! call connects again.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use proto::auth::{authenticate, client_handshake, Admitted};
use proto::conn::Connection;
use proto::{ClusterKey, ProtoError};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Member, Raft, TypeConfig};

/// The service name in the handshake.
pub const SERVICE: &str = "coordinator-raft";
/// Longest line. An AppendEntries carries at most 4 entries of at most 256 KiB each
/// ([`super::batch`]) and a snapshot chunk 256 KiB (~900 KB as JSON): ~1 MiB. The one
/// larger entry is a factorial's report with its value (up to ~1 MB of digits for N =
/// 200,000), hence the margin.
pub const MAX_LINE: usize = 8 << 20;
/// Most peer connections at once.
const MAX_PEERS: usize = 64;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
}

/// Makes a [`Peer`] per member.
pub struct Network {
    pub key: ClusterKey,
    /// The members' addresses as configured now (`--group`): they win over the addresses
    /// stored in the log's membership, so a group restarted on other ports still finds its
    /// members (their numbers stay).
    pub members: std::collections::BTreeMap<u64, Member>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &Member) -> Peer {
        Peer {
            target,
            addr: self
                .members
                .get(&target)
                .map_or_else(|| node.raft.clone(), |m| m.raft.clone()),
            key: self.key.clone(),
            conn: None,
        }
    }
}

/// The connection to one peer.
pub struct Peer {
    target: u64,
    addr: String,
    key: ClusterKey,
    conn: Option<Connection>,
}

/// A peer that refuses connections (down) is unreachable: openraft then waits a while
/// before the next try instead of retrying at every heartbeat; other failures are retried.
fn net_err<E: std::error::Error>(e: ProtoError) -> RPCError<u64, Member, E> {
    match &e {
        ProtoError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl Peer {
    async fn call(&mut self, req: &Request, ttl: Duration) -> Result<Response, ProtoError> {
        let r = tokio::time::timeout(ttl, self.call_inner(req)).await;
        let r = match r {
            Ok(r) => r,
            Err(_) => Err(ProtoError::Timeout(ttl)),
        };
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn call_inner(&mut self, req: &Request) -> Result<Response, ProtoError> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.addr).await?;
            let _ = stream.set_nodelay(true);
            let mut conn = Connection::new(stream).with_max_line(MAX_LINE);
            client_handshake(&mut conn, &self.key, SERVICE).await?;
            debug!(peer = self.target, addr = self.addr, "connected to peer");
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(ProtoError::Peer("no connection".into()));
        };
        conn.send(req).await?;
        match conn.read_msg::<Response>().await? {
            Some(r) => Ok(r),
            None => Err(ProtoError::Peer("peer closed the connection".into())),
        }
    }
}

fn unexpected<E: std::error::Error>() -> RPCError<u64, Member, E> {
    net_err(ProtoError::Malformed("unexpected response type".into()))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        match self.call(&Request::Append(rpc), option.hard_ttl()).await {
            Ok(Response::Append(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(net_err(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>,
    > {
        match self.call(&Request::Snapshot(rpc), option.hard_ttl()).await {
            Ok(Response::Snapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(net_err(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        match self.call(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Response::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(net_err(e)),
        }
    }
}

/// Answers the peers' RPCs until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    raft: Raft,
    key: ClusterKey,
    shutdown: CancellationToken,
) {
    let mut acceptor = proto::conn::Acceptor::new(listener, MAX_PEERS);
    while let Some((admission, stream, peer)) = acceptor.next(&shutdown).await {
        let (raft, key, shutdown) = (raft.clone(), key.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (mut conn, _permit) =
                match authenticate(admission, stream, &key, SERVICE, MAX_LINE).await {
                    Ok(Admitted::Ready(c, p)) => (c, p),
                    Ok(Admitted::Full(_)) => return,
                    Err(e) => {
                        debug!(%peer, error = %e, "peer connection refused");
                        return;
                    }
                };
            loop {
                let req = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = conn.read_msg::<Request>() => r,
                };
                let resp = match req {
                    Ok(Some(Request::Append(r))) => Response::Append(raft.append_entries(r).await),
                    Ok(Some(Request::Vote(r))) => Response::Vote(raft.vote(r).await),
                    Ok(Some(Request::Snapshot(r))) => {
                        Response::Snapshot(raft.install_snapshot(r).await)
                    }
                    Ok(None) => return,
                    Err(e) => {
                        debug!(%peer, error = %e, "peer connection ended");
                        return;
                    }
                };
                if conn.send(&resp).await.is_err() {
                    return;
                }
            }
        });
    }
}
