//! One coordinator of a group: its Raft node, the peers' RPC server, and the role loop. While
//! another replica leads, workers that connect here are told where the leader is
//! ([`CoordMsg::NotLeader`](proto::msg::CoordMsg::NotLeader)). Once this replica leads (and has
//! applied everything committed before its term), it takes the root files ([`super::mirror`])
//! and runs the coordinator ([`crate::server::run`]) with its durable steps going through the
//! log ([`Handle`]) until it leads no more.
//!
//! Its rooms: this file holds start-up ([`run`]) and the role loop; `handle` the leader's
//! durable steps through the log ([`Handle`]); `lead` winning, confirming and keeping the
//! lead; `import` the root files of another group taken in through the log; `redirect`
//! workers sent to the leader while this member follows.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::error::{InitializeError, RaftError};
use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::log::LogStore;
use super::net::Network;
use super::replica::Replica;
use super::{Member, Raft};
use crate::server::Config;

mod handle;
mod import;
mod lead;
mod redirect;

pub use handle::Handle;
use handle::MemberResults;
use import::import_root;
use lead::{lease, stand_for_election, wait_to_lead, watch_lead};
use redirect::{redirect_workers, Redirect};

/// What makes this process one replica of a group.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// This replica's number (1-based, its place in `members`).
    pub id: u64,
    pub members: BTreeMap<u64, Member>,
    /// This replica's own folder (`data/coordinators/coordinator-<id>`).
    pub dir: PathBuf,
    /// Shortest election timeout, in ms (the longest is twice it; heartbeats every quarter).
    pub election_ms: u64,
    /// A state-machine snapshot (and log compaction) every this many entries.
    pub snapshot_entries: u64,
    /// Written with the workers' address once it is first bound (as follower or leader):
    /// scripts wait for it.
    pub addr_file: Option<PathBuf>,
    /// The pool of spare report files ([`crate::spare`]), if any.
    pub spare_dir: Option<PathBuf>,
}

/// Runs this replica until `shutdown`: `workers` is the address to serve workers on (bound
/// while leading, answered with the leader's address otherwise); `raft` the peers' listener.
pub async fn run(
    workers: SocketAddr,
    raft_listener: TcpListener,
    http: Option<SocketAddr>,
    mut cfg: Config,
    group: GroupConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if cfg.inputs_from_afs && cfg.listing.is_none() {
        cfg.listing = Some(crate::listing::ListingFeed::start(
            crate::server::list_watch(&cfg),
            shutdown.clone(),
        ));
    }
    let log = LogStore::open(&group.dir)?;
    let pristine = log.is_pristine();
    let spares = match &group.spare_dir {
        Some(d) => crate::spare::Spares::in_dir(d, crate::spare::SPARE_CAP),
        None => crate::spare::Spares::none(),
    };
    let replica =
        Replica::open(&group.dir, &cfg.primes, &cfg.output, &cfg.jobs)?.with_spares(spares);
    let configured: std::collections::BTreeSet<u64> = group.members.keys().copied().collect();
    if let Some(voters) = replica.voters() {
        if voters != configured {
            anyhow::bail!(
                "the state in {} belongs to a group of members {voters:?}, not {configured:?} as --group says: \
                 give the same members, another --group-dir, or --fresh",
                group.dir.display()
            );
        }
    }
    let election = group.election_ms.max(50);
    // Elections start from a pre-vote round ([`super::prevote`]) in a group of several; a
    // group of one elects itself at once.
    let pre_vote = group.members.len() > 1;
    let rcfg = openraft::Config {
        cluster_name: "primes-coordinators".into(),
        enable_elect: !pre_vote,
        election_timeout_min: election,
        election_timeout_max: election * 2,
        // Also the AppendEntries timeout (openraft): a third of the election timeout leaves
        // a loaded 2-core machine room to answer, and an RPC is at most ~1 MiB.
        heartbeat_interval: (election / 3).max(10),
        install_snapshot_timeout: 10_000,
        max_payload_entries: super::batch::MAX_PAYLOAD_ENTRIES,
        // Snapshot chunks travel as JSON arrays (~3.6 bytes a byte): ~900 KB a message.
        snapshot_max_chunk_size: 256 << 10,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(group.snapshot_entries.max(2)),
        max_in_snapshot_log_to_keep: 16,
        ..Default::default()
    }
    .validate()
    .context("Raft configuration")?;
    let log_size = log.clone();
    let log_pace = log.clone();
    let log_answering = log.clone();
    let raft = Raft::new(
        group.id,
        Arc::new(rcfg),
        Network {
            key: cfg.key.clone(),
            members: group.members.clone(),
        },
        log,
        replica.clone(),
    )
    .await
    .context("starting the Raft node")?;
    let serving = Arc::new(super::publish::Serving::default());
    let answering = super::net::Answering {
        contact: super::net::Contact::default(),
        log: log_answering,
        min_timeout: Duration::from_millis(election * 2),
        members: group.members.clone(),
        view: {
            let (raft, serving, host) = (raft.clone(), serving.clone(), crate::members::host());
            Arc::new(move || super::publish::view_of(&raft, &serving, &host))
        },
        jobs: cfg.jobs.clone(),
    };
    let peers = tokio::spawn(super::net::serve(
        raft_listener,
        raft.clone(),
        cfg.key.clone(),
        answering.clone(),
        shutdown.clone(),
    ));
    if pre_vote {
        tokio::spawn(stand_for_election(
            raft.clone(),
            group.clone(),
            cfg.key.clone(),
            answering,
            shutdown.clone(),
        ));
    }
    if pristine {
        // The first member initializes the group at once (it stands for election); the
        // others, one after another, only if they have heard from no one by then (the first
        // is down): all at once split the first votes, and an election timeout (300-600 ms
        // by default) passed before a leader was chosen.
        let rank = group
            .members
            .keys()
            .position(|id| *id == group.id)
            .unwrap_or(0);
        let wait = Duration::from_millis(election * 2 * rank as u64);
        let (raft, members, me) = (raft.clone(), group.members.clone(), group.id);
        tokio::spawn(async move {
            if rank == 0 {
                // Once a majority can hear it, within an election timeout (well before the
                // next member's turn): started one after another (start_system.sh waits for
                // each one's address before it starts the next), the others were not
                // listening yet, the votes were refused, and the group had no leader until
                // the second member's turn, 600 ms later.
                until_a_majority_listens(me, &members, Duration::from_millis(election)).await;
            } else {
                tokio::time::sleep(wait).await;
            }
            let heard = raft.metrics().borrow().current_term > 0;
            if heard {
                return;
            }
            match raft.initialize(members.clone()).await {
                Ok(()) => info!(members = members.len(), "group initialized"),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => error!(error = %e, "cannot initialize the group"),
            }
        });
    }
    tokio::spawn(log_elections(raft.clone(), shutdown.clone()));
    tokio::spawn(super::pace::watch(
        raft.clone(),
        log_pace,
        group.id,
        replica.pace(),
        shutdown.clone(),
    ));
    tokio::spawn(compact_large_logs(raft.clone(), log_size, shutdown.clone()));
    // Issue 27: every member says what it is (status reads the members, not only the
    // last leader's status file).
    let views = tokio::spawn(super::publish::publish(
        raft.clone(),
        serving.clone(),
        crate::members::status_dir(&cfg.status_file),
        shutdown.clone(),
    ));
    // On separate hosts the others' views are not in this member's folder: ask them.
    tokio::spawn(super::publish::gather(
        group.id,
        group
            .members
            .iter()
            .map(|(id, m)| super::net::Peer::new(*id, &m.raft, &cfg.key))
            .collect(),
        crate::members::status_dir(&cfg.status_file),
        shutdown.clone(),
    ));

    let result = role_loop(
        workers, http, &raft, &replica, &cfg, &group, &serving, &shutdown,
    )
    .await;
    let _ = views.await;
    let _ = raft.shutdown().await;
    peers.abort();
    if let Err(e) = replica.close() {
        warn!(
            error = format!("{e:#}"),
            "cannot sync the replica's files at stop"
        );
    }
    result
}

/// Returns once this member and the peers that accept a connection on their Raft port are
/// a majority, or after `bound` (the election then goes ahead: a vote refused costs a
/// retry, not correctness).
async fn until_a_majority_listens(me: u64, members: &BTreeMap<u64, Member>, bound: Duration) {
    let started = tokio::time::Instant::now();
    let mut listening = std::collections::BTreeSet::new();
    let mut said = false;
    loop {
        for (id, m) in members {
            if *id == me || listening.contains(id) {
                continue;
            }
            let connect = tokio::net::TcpStream::connect(m.raft.as_str());
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(50), connect).await {
                listening.insert(*id);
            }
        }
        if super::prevote::won(listening.len() + 1, members.len()) {
            return;
        }
        if started.elapsed() >= bound {
            warn!(
                listening = listening.len() + 1,
                members = members.len(),
                "no majority of the group listens yet: standing for election all the same"
            );
            return;
        }
        if !std::mem::replace(&mut said, true) {
            info!(
                listening = listening.len() + 1,
                members = members.len(),
                "waiting for a majority of the group to listen before standing for election"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn role_loop(
    workers: SocketAddr,
    http: Option<SocketAddr>,
    raft: &Raft,
    replica: &Replica,
    cfg: &Config,
    group: &GroupConfig,
    views: &super::publish::Serving,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut announced = false;
    // How workers reach this replica (the configured address, as the others name it).
    let workers_addr = group
        .members
        .get(&group.id)
        .map_or_else(|| workers.to_string(), |m| m.workers.clone());
    // The workers' listener kept from following to serving, and back when taking the root
    // files failed (see [`redirect_workers`]).
    let mut kept: Option<TcpListener> = None;
    loop {
        // Follow: answer workers with the leader's address until this replica leads.
        let listener = match kept.take() {
            Some(l) => l,
            None => bind(workers).await?,
        };
        if !announced {
            announced = true;
            if let Some(f) = &group.addr_file {
                proto::process::write_addr_file(f, &workers.to_string())
                    .with_context(|| format!("writing {}", f.display()))?;
            }
        }
        let stop = shutdown.child_token();
        // Cancelled once this replica serves: workers held by the redirect come back here.
        let serving = CancellationToken::new();
        let redirect = tokio::spawn(redirect_workers(
            listener,
            Redirect {
                raft: raft.clone(),
                members: group.members.clone(),
                own: workers_addr.clone(),
                key: cfg.key.clone(),
                hold: lease(group),
            },
            stop.clone(),
            serving.clone(),
        ));
        // Issue 27: the dashboard port answers while following too (the last leader's
        // status and the members' views), until this member serves its own.
        let member_web = match http {
            Some(a) => Some(tokio::spawn(crate::web::serve_member(
                bind(a).await?,
                cfg.status_file.clone(),
                cfg.snapshots.dir.clone(),
                Some(Arc::new(MemberResults {
                    raft: raft.clone(),
                    replica: replica.clone(),
                })),
                stop.clone(),
            ))),
            None => None,
        };
        let led = wait_to_lead(raft, group.id, lease(group), shutdown).await;
        let term = match led {
            Ok(Some(t)) => t,
            other => {
                stop.cancel();
                let _ = redirect.await;
                stop_member_web(member_web).await;
                return other.map(|_| ());
            }
        };
        // How long taking the root files took (logged: a takeover's share of a failover).
        let taking_root = std::time::Instant::now();
        let gid = super::mirror::group_id(group.members.keys());
        // The root files: merged into the group's state if another wrote them, then taken
        // (workers that register meanwhile are held by the redirect).
        let taken = import_root(raft, &gid, cfg)
            .await
            .and_then(|()| replica.lead(term, &gid));
        stop.cancel();
        let following = redirect.await.ok();
        stop_member_web(member_web).await;
        if let Err(e) = taken {
            kept = following;
            error!(
                term,
                error = format!("{e:#}"),
                "cannot take the root files; not serving (trying again in 1 s)"
            );
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        info!(
            term,
            root_ms = taking_root.elapsed().as_millis() as u64,
            "this coordinator leads the group: serving workers"
        );
        let handle = Handle {
            raft: raft.clone(),
            replica: replica.clone(),
            id: group.id,
            term,
            output: cfg.output.clone(),
            jobs: cfg.jobs.clone(),
        };
        let lead_stop = shutdown.child_token();
        let watcher = tokio::spawn(watch_lead(handle.clone(), lease(group), lead_stop.clone()));
        let mut lead_cfg = cfg.clone();
        lead_cfg.core.term = Some(term);
        let listener = match following {
            Some(l) => l,
            None => bind(workers).await?,
        };
        serving.cancel();
        let http = match http {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        views.set(Some(lead_stop.clone()));
        let failed = crate::server::run(
            listener,
            http,
            lead_cfg,
            Arc::new(handle),
            lead_stop.clone(),
        )
        .await;
        views.set(None);
        lead_stop.cancel();
        watcher.abort();
        replica.step_down();
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if let Err(e) = failed {
            // Not at once again: what failed (a folder it cannot write, say) likely still
            // does.
            error!(
                term,
                error = format!("{e:#}"),
                "the coordinator stopped with an error (leading again in 1 s)"
            );
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        info!(term, "no longer the leader: following");
    }
}

/// Waits briefly for a member's dashboard to close (its live views end when it is told to
/// stop), so the leader's can bind the port.
async fn stop_member_web(web: Option<tokio::task::JoinHandle<()>>) {
    if let Some(mut w) = web {
        if tokio::time::timeout(Duration::from_secs(1), &mut w)
            .await
            .is_err()
        {
            w.abort();
        }
    }
}

/// Binds `addr`, retrying briefly (the previous role's listener has just closed).
async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut last = None;
    for _ in 0..40 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last.map_or_else(|| anyhow::anyhow!("bind failed"), anyhow::Error::from))
        .with_context(|| format!("listening on {addr}"))
}

/// A log past this many bytes is compacted (a snapshot) whatever its number of entries:
/// entries are small, but a flush of file primes may take many of 256 KiB.
const LOG_BYTES_SNAPSHOT: u64 = 64 << 20;

/// Asks for a snapshot (which lets the log go) once the log on disk passes
/// [`LOG_BYTES_SNAPSHOT`], at most every 10 s, so a restart reads a bounded log.
async fn compact_large_logs(raft: Raft, log: LogStore, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let recent = last.is_some_and(|t| t.elapsed() < Duration::from_secs(10));
        if log.bytes_since_purge() > LOG_BYTES_SNAPSHOT && !recent {
            last = Some(tokio::time::Instant::now());
            info!(
                bytes = log.bytes_since_purge(),
                "the log is large: snapshot and compact"
            );
            if let Err(e) = raft.trigger().snapshot().await {
                warn!(error = %e, "cannot ask for a snapshot");
            }
        }
    }
}

/// One log line per change of leader or term.
async fn log_elections(raft: Raft, shutdown: CancellationToken) {
    let mut rx = raft.metrics();
    let mut last = (0u64, None);
    loop {
        {
            let m = rx.borrow_and_update();
            let now = (m.current_term, m.current_leader);
            if now != last {
                match m.current_leader {
                    Some(l) => info!(
                        term = m.current_term,
                        leader = l,
                        "group: coordinator-{l} leads"
                    ),
                    None => info!(term = m.current_term, "group: no leader (election)"),
                }
                last = now;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(raft: String) -> Member {
        Member {
            raft,
            workers: "127.0.0.1:1".into(),
        }
    }

    #[tokio::test]
    /// One peer of two listening is a majority with this member: the wait ends without
    /// reaching its bound (an hour); nobody listening, it ends at the bound.
    async fn the_first_member_waits_for_a_majority_listening() {
        let up = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let down = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let down_addr = down.local_addr().expect("addr").to_string();
        drop(down);
        let members: BTreeMap<u64, Member> = [
            (1, member("127.0.0.1:1".into())),
            (2, member(down_addr.clone())),
            (3, member(up.local_addr().expect("addr").to_string())),
        ]
        .into();
        let hour = Duration::from_secs(3600);
        tokio::time::timeout(
            Duration::from_secs(30),
            until_a_majority_listens(1, &members, hour),
        )
        .await
        .expect("returned once member 3 listened");

        let silent: BTreeMap<u64, Member> = [
            (1, member("127.0.0.1:1".into())),
            (2, member(down_addr.clone())),
            (3, member(down_addr)),
        ]
        .into();
        let bound = Duration::from_millis(30);
        let started = std::time::Instant::now();
        until_a_majority_listens(1, &silent, bound).await;
        assert!(started.elapsed() >= bound, "returned before its bound");
    }
}
