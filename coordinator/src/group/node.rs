//! One coordinator of a group: its Raft node, the peers' RPC server, and the role loop. While
//! another replica leads, workers that connect here are told where the leader is
//! ([`CoordMsg::NotLeader`]). Once this replica leads (and has applied everything committed
//! before its term), it takes the root files ([`super::mirror`]) and runs the coordinator
//! ([`crate::server::run`]) with its durable steps going through the log ([`Handle`]) until
//! it leads no more.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::error::{InitializeError, RaftError};
use openraft::{ServerState, SnapshotPolicy};
use proto::auth::{authenticate, Admitted};
use proto::msg::{CoordMsg, WorkerMsg, MAX_LINE, SERVICE};
use proto::ClusterKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::log::LogStore;
use super::net::Network;
use super::replica::Replica;
use super::{Command, GroupStatus, Member, Outcome, Raft};
use crate::core::{JobReport, Pending, Report};
use crate::durable::{Durable, Flushed};
use crate::ranges::Finished;
use crate::server::Config;
use futures::future::BoxFuture;

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
}

/// The leader's access to the group, for the coordinator it runs.
#[derive(Clone)]
pub struct Handle {
    raft: Raft,
    replica: Replica,
    id: u64,
    term: u64,
    /// The root reports folder and the jobs folder: a report whose name a job owns is
    /// refused before it is proposed ([`crate::report::job_clash`]).
    output: PathBuf,
    jobs: PathBuf,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "group replica {} (term {})", self.id, self.term)
    }
}

/// The shell's durable work, committed through the group's log and applied by every member.
impl Durable for Handle {
    fn flush(&self, p: Pending) -> BoxFuture<'_, Result<Flushed, (anyhow::Error, Pending)>> {
        Box::pin(self.flush(p))
    }

    fn reports(&self, rs: Vec<Report>) -> BoxFuture<'_, anyhow::Result<Vec<Result<(), String>>>> {
        Box::pin(self.reports(rs))
    }

    fn job_report(
        &self,
        r: JobReport,
    ) -> BoxFuture<'_, anyhow::Result<Result<Box<JobReport>, String>>> {
        Box::pin(self.job_report(r))
    }

    fn ledger(&self) -> (Vec<Finished>, u64, u64) {
        self.replica.ledger()
    }

    fn term(&self) -> u64 {
        self.term
    }

    fn applied_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index)
    }

    fn still_leads(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader == Some(self.id) && m.current_term == self.term && m.running_state.is_ok()
    }

    fn status(&self) -> GroupStatus {
        super::status_of(&self.raft)
    }

    fn snapshot(
        &self,
        name: String,
        bytes: Vec<u8>,
        keep: usize,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let text = String::from_utf8(bytes).context("a snapshot file is not UTF-8")?;
            let parts = super::snapshot_parts(&text, super::SNAPSHOT_PART_BYTES);
            let count = parts.len();
            for (i, (offset, data)) in parts.into_iter().enumerate() {
                self.write(Command::SnapshotPart {
                    name: name.clone(),
                    offset,
                    data: data.to_string(),
                    last: i + 1 == count,
                    keep,
                })
                .await
                .with_context(|| format!("committing snapshot {name}"))?;
            }
            Ok(())
        })
    }

    fn snapshot_dir(&self) -> Option<PathBuf> {
        Some(crate::results::snapshots_dir(
            &self.replica.results_view().0,
        ))
    }

    fn results(&self) -> Option<Arc<dyn crate::results::Source>> {
        Some(Arc::new(MemberResults {
            raft: self.raft.clone(),
            replica: self.replica.clone(),
        }))
    }
}

/// A member's own results, served beside its dashboard whatever its role
/// ([`crate::results`]).
struct MemberResults {
    raft: Raft,
    replica: Replica,
}

impl crate::results::Source for MemberResults {
    fn info(&self) -> crate::results::Info {
        let (_, applied_index, primes_bytes) = self.replica.results_view();
        let st = super::status_of(&self.raft);
        crate::results::Info {
            member: st.id,
            role: st.role,
            leader: st.leader,
            term: st.term,
            applied_index,
            primes_bytes,
        }
    }

    fn dir(&self) -> PathBuf {
        self.replica.results_view().0
    }
}

impl Handle {
    async fn write(&self, cmd: Command) -> anyhow::Result<Outcome> {
        let r = self
            .raft
            .client_write(cmd)
            .await
            .map_err(|e| anyhow::anyhow!("not committed by the group: {e}"))?;
        Ok(r.data)
    }

    /// Commits a flush as bounded entries ([`super::batch`]), in order; how many primes were
    /// new, and the replica's primes count and dedup-set size after it. The flush's primes
    /// move into the entries (no copy is kept: a flush of a large job holds hundreds of MB).
    /// An entry that does not commit ends it with an error and the flush handed back: what
    /// did not commit, with its `done` (what did commit is deduplicated when it comes again).
    async fn flush(&self, mut p: Pending) -> Result<Flushed, (anyhow::Error, Pending)> {
        let batches = super::batch::split(&mut p, rand::random::<u64>);
        let (mut new, mut total, mut in_set) = (0, 0, 0);
        let mut batches = batches.into_iter();
        let mut any = false;
        while let Some((b, runs)) = batches.next() {
            any = true;
            let id = b.id;
            self.replica.hold(id, runs);
            // The entry goes by value; a copy of its (bounded) file primes is kept to hand
            // back if it does not commit.
            let written = self.write(Command::Batch(b.clone())).await;
            let e = match written {
                Ok(Outcome::Flushed {
                    new: n,
                    total: t,
                    in_set: s,
                }) => {
                    new += n;
                    (total, in_set) = (t, s);
                    continue;
                }
                Err(e) => e,
                Ok(o) => anyhow::anyhow!("unexpected outcome of a flush: {o:?}"),
            };
            let back = std::iter::once((b, self.replica.take_batch(id)))
                .chain(batches.map(|(b, runs)| (b, Some(runs))));
            super::batch::unsplit(&mut p, back);
            return Err((e, p));
        }
        if !any {
            let (_, t, s) = self.replica.ledger();
            (total, in_set) = (t, s);
        }
        Ok(Flushed { new, total, in_set })
    }

    /// Commits reports; how each was written. A report whose name a job owns is refused
    /// here, by the leader (apply depends on the log alone).
    async fn reports(&self, rs: Vec<Report>) -> anyhow::Result<Vec<Result<(), String>>> {
        let (output, jobs) = (self.output.clone(), self.jobs.clone());
        let (rs, clashes) = tokio::task::spawn_blocking(move || {
            let clashes: Vec<Option<String>> = rs
                .iter()
                .map(|r| crate::report::job_clash(&output, r, &jobs))
                .collect();
            (rs, clashes)
        })
        .await
        .context("checking report names")?;
        let propose: Vec<Report> = rs
            .into_iter()
            .zip(&clashes)
            .filter(|(_, c)| c.is_none())
            .map(|(r, _)| r)
            .collect();
        let mut written = if propose.is_empty() {
            Vec::new()
        } else {
            match self.write(Command::Reports(propose)).await? {
                Outcome::Reports(r) => r,
                other => anyhow::bail!("unexpected outcome of reports: {other:?}"),
            }
        }
        .into_iter();
        Ok(clashes
            .into_iter()
            .map(|c| match c {
                Some(why) => Err(why),
                None => written
                    .next()
                    .unwrap_or_else(|| Err("no outcome for this report".into())),
            })
            .collect())
    }

    /// Commits a job report, with a factorial's value; the report as written.
    async fn job_report(&self, mut r: JobReport) -> anyhow::Result<Result<Box<JobReport>, String>> {
        let value = r.value.take();
        let cmd = Command::JobReportValue {
            report: Box::new(r),
            value,
        };
        match self.write(cmd).await? {
            Outcome::JobReport(r) => Ok(r),
            other => anyhow::bail!("unexpected outcome of a job report: {other:?}"),
        }
    }
}

/// Runs this replica until `shutdown`: `workers` is the address to serve workers on (bound
/// while leading, answered with the leader's address otherwise); `raft` the peers' listener.
pub async fn run(
    workers: SocketAddr,
    raft_listener: TcpListener,
    http: Option<SocketAddr>,
    cfg: Config,
    group: GroupConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let log = LogStore::open(&group.dir)?;
    let pristine = log.is_pristine();
    let replica = Replica::open(&group.dir, &cfg.primes, &cfg.output, &cfg.jobs)?;
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
        let (raft, members) = (raft.clone(), group.members.clone());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
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
    loop {
        // Follow: answer workers with the leader's address until this replica leads.
        let listener = bind(workers).await?;
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
        let gid = super::mirror::group_id(group.members.keys());
        // The root files: merged into the group's state if another wrote them, then taken
        // (workers that register meanwhile are held by the redirect).
        let taken = import_root(raft, &gid, cfg)
            .await
            .and_then(|()| replica.lead(term, &gid));
        stop.cancel();
        let _ = redirect.await;
        stop_member_web(member_web).await;
        if let Err(e) = taken {
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
        info!(term, "this coordinator leads the group: serving workers");
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
        let listener = bind(workers).await?;
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

/// Before taking the root files: if this group did not write them last (the fence names
/// another group, or nobody: a coordinator without a group, simple mode before replicated
/// or the other way round), they become part of the group's state through the log (every
/// member merges them); the lead would otherwise replace them with this member's older or
/// empty state.
async fn import_root(raft: &Raft, group_id: &str, cfg: &Config) -> anyhow::Result<()> {
    let (_, holder) = super::mirror::read_fence(&cfg.primes);
    if holder == group_id {
        return Ok(());
    }
    let (primes, output) = (cfg.primes.clone(), cfg.output.clone());
    let lens = tokio::task::spawn_blocking(move || prepare_import(&primes, &output))
        .await
        .context("linking the root files for an import")??;
    let Some((primes_len, ledger_len)) = lens else {
        return Ok(());
    };
    info!(
        primes_bytes = primes_len,
        ledger_bytes = ledger_len,
        "importing the root files left by another group (or a coordinator without a group)"
    );
    let r = raft
        .client_write(Command::ImportRoot {
            primes_len,
            ledger_len,
        })
        .await
        .map_err(|e| anyhow::anyhow!("import not committed: {e}"))?;
    match r.data {
        Outcome::Imported(_) => Ok(()),
        other => anyhow::bail!("unexpected outcome of an import: {other:?}"),
    }
}

/// Puts the root files into the import folder beside them ([`super::replica::import_dir`]),
/// replacing an older import: hard links (the root files of another group are its member's
/// files, which only ever grow at the end, so the prefix an import names stays as it was;
/// reports are replaced by rename, so a link keeps the version linked), or streamed copies
/// where links cannot be made. The lengths of the primes file and ledger linked (whole
/// lines), or None if the root holds nothing.
fn prepare_import(primes: &Path, output: &Path) -> anyhow::Result<Option<(u64, u64)>> {
    let dir = super::replica::import_dir(primes);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("output"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut lens = [0u64; 2];
    for (i, (from, name)) in [
        (primes.to_path_buf(), "primes.txt"),
        (crate::primes::ledger_path(primes), "primes.txt.ranges"),
    ]
    .into_iter()
    .enumerate()
    {
        let to = dir.join(name);
        match link_or_copy(&from, &to) {
            Ok(()) => {
                let mut f = std::fs::File::open(&to)
                    .with_context(|| format!("opening {}", to.display()))?;
                let len = f
                    .metadata()
                    .with_context(|| format!("reading {}", to.display()))?
                    .len();
                lens[i] = crate::primes::whole_lines_len(&mut f, len, &to)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("linking {} for an import", from.display()))
            }
        }
    }
    let reports = link_tree(output, &dir.join("output"))?;
    if lens == [0, 0] && reports == 0 {
        return Ok(None);
    }
    Ok(Some((lens[0], lens[1])))
}

/// A hard link to `from` at `to`, or a copy where a link cannot be made.
fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(e),
        Err(_) => std::fs::copy(from, to).map(|_| ()),
    }
}

/// Links (or copies) every file under `from` to the same name under `to`; how many.
fn link_tree(from: &Path, to: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    super::files::for_each_report(from, &mut |name, src| {
        let dst = to.join(name);
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        match link_or_copy(src, &dst) {
            Ok(()) => n += 1,
            // Replaced or removed meanwhile: a report of a file in flux is not imported.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("linking {}", src.display())),
        }
        Ok(())
    })?;
    Ok(n)
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

/// How long a leader may go without confirming its lead with a majority before it stops
/// serving workers (cut off from the others: its flushes could not commit anyway).
fn lease(group: &GroupConfig) -> Duration {
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

/// Waits until this replica leads, confirmed by a majority and caught up; its term (None at
/// shutdown; an error if the Raft node failed).
async fn wait_to_lead(
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
async fn watch_lead(handle: Handle, lease: Duration, stop: CancellationToken) {
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
                if !confirmed(&handle.raft, lease).await {
                    warn!(term = handle.term, "no majority confirms this leader: stop serving");
                    stop.cancel();
                    return;
                }
            }
        }
    }
}

/// Starts an election (openraft's) once a pre-vote round wins ([`super::prevote`]): after
/// openraft's own wait (its leader lease, twice the election timeout, then one election
/// timeout with jitter) without hearing from a leader. The peers grant only if they have
/// not heard from a leader within the lease either, so the election that follows is one
/// they take part in.
async fn stand_for_election(
    raft: Raft,
    group: GroupConfig,
    key: ClusterKey,
    answering: super::net::Answering,
    shutdown: CancellationToken,
) {
    use super::prevote::{won, PreVote, Timer};
    let min = Duration::from_millis(group.election_ms.max(50));
    let start = tokio::time::Instant::now();
    let now = || start.elapsed();
    let mut timer = Timer::new(answering.min_timeout + min, min, now(), rand::random());
    let mut tick = tokio::time::interval((min / 6).max(Duration::from_millis(5)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peers: BTreeMap<u64, super::net::Peer> = group
        .members
        .iter()
        .filter(|(id, _)| **id != group.id)
        .map(|(id, m)| (*id, super::net::Peer::new(*id, &m.raft, &key)))
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

/// What a following replica tells workers that register with it.
#[derive(Clone)]
struct Redirect {
    raft: Raft,
    members: BTreeMap<u64, Member>,
    /// This replica's workers' address, as the members list names it.
    own: String,
    key: ClusterKey,
    /// How long a registration waits for a leader to be known.
    hold: Duration,
}

/// While following: each worker that registers hears where the leader is, then the
/// connection closes. While no other replica is known to lead (an election, or this one
/// about to serve), the answer waits, up to `hold`: for the leader's address, or for this
/// replica to start serving (`serving`; then the answer names this replica, and the worker
/// comes back at once), so that workers starting with the group register as soon as it has
/// a leader instead of backing off.
async fn redirect_workers(
    listener: TcpListener,
    r: Redirect,
    stop: CancellationToken,
    serving: CancellationToken,
) {
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
