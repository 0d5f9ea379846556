//! While this member follows: workers that connect are told where the leader is
//! ([`CoordMsg::NotLeader`]).

use std::collections::BTreeMap;
use std::time::Duration;

use proto::auth::{authenticate, Admitted};
use proto::msg::{CoordMsg, WorkerMsg, MAX_LINE, SERVICE};
use proto::ClusterKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::group::{Member, Raft};

/// What a following replica tells workers that register with it.
#[derive(Clone)]
pub(super) struct Redirect {
    pub(super) raft: Raft,
    pub(super) members: BTreeMap<u64, Member>,
    /// This replica's workers' address, as the members list names it.
    pub(super) own: String,
    pub(super) key: ClusterKey,
    /// How long a registration waits for a leader to be known.
    pub(super) hold: Duration,
}

/// While following: each worker that registers hears where the leader is, then the
/// connection closes. While no other replica is known to lead (an election, or this one
/// about to serve), the answer waits, up to `hold`: for the leader's address, or for this
/// replica to start serving (`serving`; then the answer names this replica, and the worker
/// comes back at once), so that workers starting with the group register as soon as it has
/// a leader instead of backing off. Returns the listener once `stop` is cancelled: the
/// replica that starts serving keeps it, so that the port never closes in between (a worker
/// refused or reset there backed off 100-150 ms before registering).
pub(super) async fn redirect_workers(
    listener: TcpListener,
    r: Redirect,
    stop: CancellationToken,
    serving: CancellationToken,
) -> TcpListener {
    let mut acceptor = proto::conn::Acceptor::new(listener, 256);
    while let Some((admission, stream, _peer)) = acceptor.next(&stop).await {
        let (r, serving) = (r.clone(), serving.clone());
        tokio::spawn(async move {
            let Ok(Admitted::Ready(mut conn, _permit)) =
                authenticate(admission, stream, &r.key, SERVICE, MAX_LINE).await
            else {
                return;
            };
            if let Ok(WorkerMsg::Register { .. }) =
                conn.expect_msg::<WorkerMsg>(Duration::from_secs(10)).await
            {
                let leader = leader_for_worker(&r, &serving).await;
                let _ = conn.send(&CoordMsg::NotLeader { leader }).await;
            }
        });
    }
    acceptor.into_listener()
}

/// The workers' address of the replica a worker should register with: another member that
/// leads, or this one once it serves (`serving` cancelled); None if neither within the hold.
async fn leader_for_worker(r: &Redirect, serving: &CancellationToken) -> Option<String> {
    let mut rx = r.raft.metrics();
    let deadline = tokio::time::Instant::now() + r.hold;
    loop {
        {
            let m = rx.borrow_and_update();
            // Itself while not serving (about to, or a leader that lost its majority): wait.
            let other = m.current_leader.filter(|l| *l != m.id).and_then(|l| {
                r.members.get(&l).map(|n| n.workers.clone()).or_else(|| {
                    m.membership_config
                        .membership()
                        .get_node(&l)
                        .map(|n| n.workers.clone())
                })
            });
            if other.is_some() {
                return other;
            }
        }
        if serving.is_cancelled() {
            return Some(r.own.clone());
        }
        tokio::select! {
            _ = serving.cancelled() => {}
            r = rx.changed() => if r.is_err() { return None },
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}
