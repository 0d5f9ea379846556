//! The Raft RPCs between coordinators, authenticated with the cluster key like every
//! connection (service `coordinator-raft`), then one JSON request line and one JSON
//! response line per call. A failed call drops the connection; the next call connects
//! again.
//!
//! Connections: openraft makes a client ([`Peer`]) per use, each with its own connection:
//! one for a peer's replication stream (entries and heartbeats), one for its snapshot
//! stream, one per vote request; pre-votes ([`super::prevote`]) take their own too. So a
//! vote never waits behind a transfer, and a heartbeat waits at most behind one bounded
//! AppendEntries (at most [`super::batch::MAX_PAYLOAD_ENTRIES`] entries of
//! [`super::batch::MAX_ENTRY_BYTES`]: ~1 MiB).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

use super::prevote::{self, PreVote};
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
    PreVote(PreVote),
    Submit(Submission),
    /// This member's view of itself ([`crate::members::MemberView`]), for the other
    /// members' status: they share no folder on separate hosts.
    View,
}

/// A job submitted with `coordinator submit` (not a Raft RPC: the command asks a member).
#[derive(Serialize, Deserialize)]
pub struct Submission {
    pub name: String,
    pub line: String,
    /// Replace a job of that name submitted before with another line (else refused).
    #[serde(default)]
    pub replace: bool,
}

/// A member's answer to a [`Submission`].
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Submitted {
    /// Committed at log `index` by leader `member`.
    Committed { index: u64, member: u64 },
    /// This member does not lead: the leader's Raft address, when known.
    NotLeader { leader: Option<String> },
    /// Refused for good (a bad name or line), or not committed (`retry`).
    Refused { reason: String, retry: bool },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    PreVote(bool),
    Submit(Submitted),
    View(Box<crate::members::MemberView>),
}

/// When this member last heard from a leader: an AppendEntries or snapshot chunk it
/// accepted (the pre-vote's "a live leader keeps its followers").
#[derive(Clone, Default)]
pub struct Contact(Arc<Mutex<Option<Instant>>>);

impl Contact {
    fn heard(&self) {
        *proto::lock(&self.0) = Some(Instant::now());
    }

    /// Time since a leader was last heard; None if never.
    pub fn since(&self) -> Option<Duration> {
        proto::lock(&self.0).map(|t| t.elapsed())
    }
}

/// What the pre-vote's answer needs besides the Raft node.
#[derive(Clone)]
pub struct Answering {
    pub contact: Contact,
    pub log: super::log::LogStore,
    /// The shortest election timeout: a leader heard within it is alive.
    pub min_timeout: Duration,
    /// The members' Raft addresses as configured, to redirect a submission to the leader.
    pub members: std::collections::BTreeMap<u64, Member>,
    /// This member's view of itself, as it answers a `view` request.
    pub view: Arc<dyn Fn() -> crate::members::MemberView + Send + Sync>,
    /// The coordinator's jobs folder (`--jobs`): a submission's name taken there by a job
    /// file with another line is refused while this member leads (unless it replaces).
    pub jobs: std::path::PathBuf,
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

impl Peer {
    /// A client of member `target` at `addr` (connects at the first call).
    pub fn new(target: u64, addr: &str, key: &ClusterKey) -> Peer {
        Peer {
            target,
            addr: addr.to_string(),
            key: key.clone(),
            conn: None,
        }
    }

    /// The member this client calls.
    pub fn target(&self) -> u64 {
        self.target
    }
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
    /// Asks for a pre-vote; true if granted (an error if there was no answer).
    pub async fn pre_vote(&mut self, req: PreVote, ttl: Duration) -> Result<bool, ProtoError> {
        match self.call(&Request::PreVote(req), ttl).await? {
            Response::PreVote(granted) => Ok(granted),
            _ => Err(ProtoError::Malformed("unexpected response type".into())),
        }
    }

    /// Asks the member for its view of itself.
    pub async fn view(&mut self, ttl: Duration) -> Result<crate::members::MemberView, ProtoError> {
        match self.call(&Request::View, ttl).await? {
            Response::View(v) => Ok(*v),
            _ => Err(ProtoError::Malformed("unexpected response type".into())),
        }
    }

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
    answering: Answering,
    shutdown: CancellationToken,
) {
    let mut acceptor = proto::conn::Acceptor::new(listener, MAX_PEERS);
    while let Some((admission, stream, peer)) = acceptor.next(&shutdown).await {
        let (raft, key, shutdown) = (raft.clone(), key.clone(), shutdown.clone());
        let answering = answering.clone();
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
                    Ok(Some(Request::Append(r))) => {
                        let r = raft.append_entries(r).await;
                        if matches!(&r, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_)))
                        {
                            answering.contact.heard();
                        }
                        if let Some(d) = crate::crash::answer_delay() {
                            tokio::time::sleep(d).await;
                        }
                        Response::Append(r)
                    }
                    Ok(Some(Request::Vote(r))) => Response::Vote(raft.vote(r).await),
                    Ok(Some(Request::Snapshot(r))) => {
                        let vote = r.vote;
                        let r = raft.install_snapshot(r).await;
                        if matches!(&r, Ok(s) if s.vote == vote) {
                            answering.contact.heard();
                        }
                        Response::Snapshot(r)
                    }
                    Ok(Some(Request::PreVote(r))) => {
                        Response::PreVote(answer_pre_vote(&raft, &answering, &r))
                    }
                    Ok(Some(Request::Submit(s))) => {
                        Response::Submit(answer_submit(&raft, &answering, s).await)
                    }
                    Ok(Some(Request::View)) => Response::View(Box::new((answering.view)())),
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

/// Commits a submitted job if this member leads (checked first: a bad name or line is
/// refused before it reaches the log); else names the leader.
async fn answer_submit(raft: &Raft, a: &Answering, s: Submission) -> Submitted {
    let members = &a.members;
    if let Err(reason) = crate::jobs::check_submission(&s.name, &s.line) {
        return Submitted::Refused {
            reason,
            retry: false,
        };
    }
    let m = raft.metrics().borrow().clone();
    if m.state != openraft::ServerState::Leader {
        return Submitted::NotLeader {
            leader: m
                .current_leader
                .and_then(|l| members.get(&l))
                .map(|l| l.raft.clone()),
        };
    }
    // A job file of that name in the jobs folder (dropped there by hand, or placed by the
    // leader of another group before a mode switch) that this group's log does not know:
    // the same rule as for a job submitted before ([`crate::jobs::taken_otherwise`]).
    if !s.replace {
        let file = a.jobs.join(format!("{}.job", s.name));
        if let Ok(Some(reason)) =
            crate::jobs::taken_otherwise(&file, &s.name, &s.line, "is in the jobs folder")
        {
            return Submitted::Refused {
                reason,
                retry: false,
            };
        }
    }
    let cmd = super::Command::SubmitJob {
        name: s.name,
        line: s.line.trim().to_string(),
        replace: s.replace,
    };
    match raft.client_write(cmd).await {
        Ok(r) => match r.data {
            super::Outcome::Submitted(Err(reason)) => Submitted::Refused {
                reason,
                retry: false,
            },
            _ => Submitted::Committed {
                index: r.log_id.index,
                member: m.id,
            },
        },
        Err(RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
            Submitted::NotLeader {
                leader: f
                    .leader_id
                    .and_then(|l| members.get(&l))
                    .map(|l| l.raft.clone()),
            }
        }
        Err(e) => Submitted::Refused {
            reason: format!("not committed: {e}"),
            retry: true,
        },
    }
}

/// Submits job `name` (`line`) to the group through the members at `addrs` (their Raft
/// addresses): a member that does not lead names the leader, which is asked next; while
/// no one leads (an election) the members are asked again, until `limit`. The member that
/// committed it, and the log index. A job of that name submitted before with another line
/// is refused unless `replace`.
pub async fn submit(
    addrs: &[String],
    key: &ClusterKey,
    name: &str,
    line: &str,
    replace: bool,
    limit: Duration,
) -> anyhow::Result<(u64, u64, String)> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no member was asked");
    loop {
        let mut queue: std::collections::VecDeque<String> = addrs.iter().cloned().collect();
        let mut asked = 0;
        // Members whose handshake failed for a reason that waiting cannot change (another
        // cluster key, not a Raft port): when every one asked did, the answer is at once.
        let mut hopeless = 0;
        while let Some(addr) = queue.pop_front() {
            asked += 1;
            if asked > addrs.len() * 3 {
                break;
            }
            let mut peer = Peer::new(0, &addr, key);
            let req = Request::Submit(Submission {
                name: name.to_string(),
                line: line.to_string(),
                replace,
            });
            match peer.call(&req, Duration::from_secs(10)).await {
                Ok(Response::Submit(Submitted::Committed { index, member })) => {
                    return Ok((member, index, addr));
                }
                Ok(Response::Submit(Submitted::NotLeader { leader })) => {
                    last = format!("{addr} does not lead");
                    if let Some(l) = leader {
                        queue.push_front(l);
                    }
                }
                Ok(Response::Submit(Submitted::Refused {
                    reason,
                    retry: false,
                })) => anyhow::bail!("refused: {reason}"),
                Ok(Response::Submit(Submitted::Refused { reason, .. })) => {
                    last = format!("{addr}: {reason}");
                }
                Ok(_) => last = format!("{addr}: unexpected answer"),
                Err(e) => {
                    if matches!(e, ProtoError::WrongKey(_) | ProtoError::Auth(_)) {
                        hopeless += 1;
                    }
                    last = format!("{addr}: {e}");
                }
            }
        }
        if hopeless > 0 && hopeless == asked {
            anyhow::bail!(
                "no member would take the job: {last} (the cluster key: --key-file or \
                 PRIMES_KEY_FILE, run/cluster.key; the members' Raft ports: --to)"
            );
        }
        if Instant::now() >= deadline {
            anyhow::bail!("no leader committed the job within {limit:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// This member's answer to a pre-vote ([`prevote::grant`]).
fn answer_pre_vote(raft: &Raft, a: &Answering, req: &PreVote) -> bool {
    let view = {
        let m = raft.metrics().borrow().clone();
        prevote::View {
            term: m.current_term,
            last_log_id: a.log.last_log_id(),
            leading: m.state == openraft::ServerState::Leader,
            since_leader: a.contact.since(),
        }
    };
    let granted = prevote::grant(req, &view, a.min_timeout);
    debug!(
        candidate = req.candidate,
        term = req.term,
        granted,
        "pre-vote asked"
    );
    granted
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn pre_vote() -> PreVote {
        PreVote {
            candidate: 2,
            term: 3,
            last_log_id: None,
        }
    }

    /// A fake member on a free port: authenticates like [`serve`], then answers each request
    /// with what `answer` says (None: stays silent); counts the connections it accepted.
    async fn fake_member(
        key: ClusterKey,
        answer: fn(Request) -> Option<Response>,
    ) -> (String, Arc<AtomicUsize>, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (conns, stop) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
        let (counted, shutdown) = (conns.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acceptor = proto::conn::Acceptor::new(listener, 8);
            while let Some((admission, stream, _)) = acceptor.next(&shutdown).await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (key, shutdown) = (key.clone(), shutdown.clone());
                tokio::spawn(async move {
                    let Ok(Admitted::Ready(mut conn, _permit)) =
                        authenticate(admission, stream, &key, SERVICE, MAX_LINE).await
                    else {
                        return;
                    };
                    loop {
                        let req = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            r = conn.read_msg::<Request>() => r,
                        };
                        let Ok(Some(req)) = req else { return };
                        match answer(req) {
                            Some(resp) => {
                                if conn.send(&resp).await.is_err() {
                                    return;
                                }
                            }
                            None => shutdown.cancelled().await,
                        }
                    }
                });
            }
        });
        (addr, conns, stop)
    }

    #[tokio::test]
    /// A member that refuses connections (down) is unreachable, so that openraft backs off
    /// instead of retrying at every heartbeat.
    async fn a_member_that_is_down_is_unreachable() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let mut peer = Peer::new(2, &addr, &ClusterKey::generate());
        let req = VoteRequest::new(openraft::Vote::new(1, 1), None);
        let r = peer.vote(req, RPCOption::new(Duration::from_secs(2))).await;
        assert!(matches!(r, Err(RPCError::Unreachable(_))), "{r:?}");
    }

    #[tokio::test]
    /// A call that gets no answer within its time fails and drops its connection; the next
    /// call connects again (a half-dead connection is never reused).
    async fn a_silent_member_times_out_and_the_next_call_connects_again() {
        let key = ClusterKey::generate();
        let (addr, conns, stop) = fake_member(key.clone(), |req| match req {
            Request::PreVote(p) if p.term == 3 => None,
            Request::PreVote(_) => Some(Response::PreVote(true)),
            _ => None,
        })
        .await;
        let mut peer = Peer::new(2, &addr, &key);
        let r = peer.pre_vote(pre_vote(), Duration::from_millis(300)).await;
        assert!(matches!(r, Err(ProtoError::Timeout(_))), "{r:?}");
        let answered = PreVote {
            term: 4,
            ..pre_vote()
        };
        let r = peer.pre_vote(answered, Duration::from_secs(5)).await;
        assert!(matches!(r, Ok(true)), "{r:?}");
        assert_eq!(
            conns.load(Ordering::SeqCst),
            2,
            "a new connection after the timeout"
        );
        stop.cancel();
    }

    #[tokio::test]
    /// An answer of the wrong kind is an error, not taken for the one asked.
    async fn an_answer_of_the_wrong_kind_is_refused() {
        let key = ClusterKey::generate();
        let (addr, _, stop) = fake_member(key.clone(), |_| Some(Response::PreVote(true))).await;
        let mut peer = Peer::new(2, &addr, &key);
        let r = peer.view(Duration::from_secs(5)).await;
        assert!(matches!(r, Err(ProtoError::Malformed(_))), "{r:?}");
        stop.cancel();
    }

    #[tokio::test]
    /// A member with another cluster key is refused at the handshake.
    async fn a_member_with_another_key_is_refused() {
        let (addr, _, stop) =
            fake_member(ClusterKey::generate(), |_| Some(Response::PreVote(true))).await;
        let mut peer = Peer::new(2, &addr, &ClusterKey::generate());
        let r = peer.pre_vote(pre_vote(), Duration::from_secs(5)).await;
        assert!(r.is_err(), "{r:?}");
        stop.cancel();
    }

    #[test]
    /// The request names on the wire (PROTOCOL.md): one JSON line, tagged in snake_case.
    fn request_names_on_the_wire() {
        let line = serde_json::to_string(&Request::PreVote(pre_vote())).expect("encode");
        assert!(line.starts_with(r#"{"pre_vote":"#), "{line}");
        let line = serde_json::to_string(&Request::View).expect("encode");
        assert_eq!(line, r#""view""#);
    }
}
