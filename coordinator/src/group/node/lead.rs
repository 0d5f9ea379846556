//! Leading: the lease, confirming the lead with a majority, waiting to lead and watching the
//! lead while serving, and standing for election (with a pre-vote).

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::ServerState;
use proto::ClusterKey;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{GroupConfig, Handle};
use crate::group::Raft;

/// How long a leader may go without confirming its lead with a majority before it stops
/// serving workers (cut off from the others: its flushes could not commit anyway).
pub(super) fn lease(group: &GroupConfig) -> Duration {
    Duration::from_millis(group.election_ms.max(50) * 4)
}

/// True if this replica leads in `term` and a majority confirms it now; also waits until
/// everything committed before is applied here (a read barrier).
async fn confirmed(raft: &Raft, lease: Duration) -> bool {
    matches!(
        tokio::time::timeout(lease, raft.ensure_linearizable()).await,
        Ok(Ok(_))
    )
}

/// Ok if a majority confirms this replica's lead within `lease` (heartbeats answered),
/// whatever its own applies are doing: while serving. Waiting for the apply as well (the
/// read barrier of [`confirmed`]) deposed a healthy leader whose apply of thousands of
/// reports outlasted the lease ("no majority confirms this leader" with every member up).
/// A round of heartbeats that misses a quorum is tried again until the lease runs out:
/// one round waits one heartbeat interval for each answer, and followers busy with a
/// job's fsyncs missed one now and then (the leader then stopped serving at once, 127 ms
/// into its 1.2 s lease, and every chunk in flight was handed out again).
/// `Err(None)`: this replica no longer leads (the metrics say who does): no retry can
/// confirm it, and waiting out the lease kept a deposed leader serving, its flushes failing,
/// for 1.2 s after it was resumed from a pause. `Err(Some(why))`: no majority answered.
async fn majority_confirms(raft: &Raft, lease: Duration) -> Result<(), Option<String>> {
    let start = tokio::time::Instant::now();
    let deadline = start + lease;
    let mut rounds = 0u32;
    loop {
        rounds += 1;
        let last = match tokio::time::timeout_at(deadline, raft.get_read_log_id()).await {
            Ok(Ok(_)) => {
                if rounds > 1 {
                    info!(
                        rounds,
                        ms = start.elapsed().as_millis() as u64,
                        "a majority confirms this leader after missed rounds of heartbeats"
                    );
                }
                return Ok(());
            }
            Ok(Err(e)) if e.forward_to_leader().is_some() => return Err(None),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_string(),
        };
        let (deposed, stopped) = {
            let rx = raft.metrics();
            let m = rx.borrow();
            (m.state != ServerState::Leader, m.running_state.is_err())
        };
        // Deposed meanwhile (a round answered by members of a newer term): the caller's
        // metrics say so.
        if deposed {
            return Err(None);
        }
        // The Raft node stopped, or the lease is out: no retry will confirm it.
        if stopped || tokio::time::Instant::now() >= deadline {
            return Err(Some(format!(
                "{last} ({rounds} rounds in {} ms)",
                start.elapsed().as_millis()
            )));
        }
        tokio::time::sleep(RETRY.min(deadline - tokio::time::Instant::now())).await;
    }
}

/// Between two rounds of [`majority_confirms`].
const RETRY: Duration = Duration::from_millis(50);

/// Waits until this replica leads, confirmed by a majority and caught up; its term (None at
/// shutdown; an error if the Raft node failed).
pub(super) async fn wait_to_lead(
    raft: &Raft,
    id: u64,
    lease: Duration,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<u64>> {
    let mut rx = raft.metrics();
    loop {
        let leading = {
            let m = rx.borrow_and_update();
            if let Err(e) = &m.running_state {
                anyhow::bail!("the Raft node stopped: {e}");
            }
            (m.state == ServerState::Leader && m.current_leader == Some(id))
                .then_some(m.current_term)
        };
        if let Some(term) = leading {
            if confirmed(raft, lease).await && raft.metrics().borrow().current_term == term {
                return Ok(Some(term));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(lease / 4) => {}
            }
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            r = rx.changed() => if r.is_err() { anyhow::bail!("the Raft node stopped") },
        }
    }
}

/// Cancels `stop` once the handle's replica no longer leads in its term, or cannot confirm
/// its lead with a majority within `lease`.
pub(super) async fn watch_lead(handle: Handle, lease: Duration, stop: CancellationToken) {
    let mut rx = handle.raft.metrics();
    let mut check = tokio::time::interval(lease / 2);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        {
            let m = rx.borrow_and_update();
            if m.current_leader != Some(handle.id)
                || m.current_term != handle.term
                || m.running_state.is_err()
            {
                info!(
                    term = handle.term,
                    now = m.current_term,
                    leader = ?m.current_leader,
                    "lost the lead"
                );
                stop.cancel();
                return;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.changed() => if r.is_err() { stop.cancel(); return; },
            _ = check.tick() => {
                // Root files it can no longer write (a failed copy, a newer fence): stop, and
                // take them again (a full copy) before serving.
                if !handle.replica.leads_root() {
                    warn!(term = handle.term, "no longer keeping the root files: stop serving");
                    stop.cancel();
                    return;
                }
                // Err(None), deposed: the metrics say so at the top of the loop.
                if let Err(Some(why)) = majority_confirms(&handle.raft, lease).await {
                    warn!(term = handle.term, why, "no majority confirms this leader: stop serving");
                    stop.cancel();
                    return;
                }
            }
        }
    }
}

/// Starts an election (openraft's) once a pre-vote round wins ([`crate::group::prevote`]):
/// after openraft's leader lease (twice the election timeout) and one heartbeat interval,
/// plus up to one election timeout of jitter, without hearing from a leader. The peers grant
/// only if they have not heard from a leader within the lease either (the heartbeat interval
/// covers the skew between the members' last heartbeats), so the election that follows is
/// one they take part in. A round that a peer refuses changes nothing (no term is spent): a
/// member whose own heartbeats were late while its peers still hear the leader asks in vain,
/// and there is no election. This wait was the lease plus a whole election timeout before,
/// which made a failover's election take 0.9-1.2 s.
pub(super) async fn stand_for_election(
    raft: Raft,
    group: GroupConfig,
    key: ClusterKey,
    answering: crate::group::net::Answering,
    shutdown: CancellationToken,
) {
    use crate::group::prevote::{won, PreVote, Timer};
    let min = Duration::from_millis(group.election_ms.max(50));
    let start = tokio::time::Instant::now();
    let now = || start.elapsed();
    let heartbeat = (min / 3).max(Duration::from_millis(10));
    let mut timer = Timer::new(
        answering.min_timeout + heartbeat,
        min,
        now(),
        rand::random(),
    );
    let mut tick = tokio::time::interval((min / 6).max(Duration::from_millis(5)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peers: BTreeMap<u64, crate::group::net::Peer> = group
        .members
        .iter()
        .filter(|(id, _)| **id != group.id)
        .map(|(id, m)| (*id, crate::group::net::Peer::new(*id, &m.raft, &key)))
        .collect();
    let voters = group.members.len();
    let mut lost_last = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (leading, term) = {
            let m = raft.metrics().borrow().clone();
            (m.state == ServerState::Leader, m.current_term)
        };
        if leading {
            timer.heard(now());
            lost_last = false;
            continue;
        }
        if let Some(d) = answering.contact.since() {
            timer.heard(now().saturating_sub(d));
        }
        if !timer.due(now()) {
            continue;
        }
        timer.asked(now(), rand::random());
        let asked_at = now();
        let req = PreVote {
            candidate: group.id,
            term,
            last_log_id: answering.log.last_log_id(),
        };
        // Ends as soon as a majority grants (a peer that is down would hold the round for
        // its whole timeout, and what the round learnt grows stale meanwhile).
        let mut grants = 1;
        {
            use futures::StreamExt;
            let mut answers: futures::stream::FuturesUnordered<_> = peers
                .values_mut()
                .map(|p| p.pre_vote(req.clone(), min))
                .collect();
            while !won(grants, voters) {
                match answers.next().await {
                    Some(Ok(true)) => grants += 1,
                    Some(_) => {}
                    None => break,
                }
            }
        }
        // A leader heard, or a term begun, while the round went on: that election is
        // someone else's, and standing now would depose its winner.
        let (term_now, leading_now) = {
            let m = raft.metrics().borrow().clone();
            (m.current_term, m.state == ServerState::Leader)
        };
        let heard_meanwhile = answering
            .contact
            .since()
            .is_some_and(|d| d < now().saturating_sub(asked_at));
        if term_now != term || leading_now || heard_meanwhile {
            continue;
        }
        if won(grants, voters) {
            info!(term, grants, voters, "pre-vote won: standing for election");
            lost_last = false;
            if let Err(e) = raft.trigger().elect().await {
                warn!(error = %e, "cannot start an election");
            }
        } else if !lost_last {
            lost_last = true;
            info!(
                term,
                grants,
                voters,
                "pre-vote lost: no majority would elect this member now (its term stays)"
            );
        }
    }
}
