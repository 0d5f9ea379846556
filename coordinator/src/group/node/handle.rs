//! The leader's durable steps through the group's log ([`Handle`], the group's `Durable`):
//! flushes, reports and job reports proposed and committed; and a member's own results
//! served beside its dashboard.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::core::{FlushBatch, JobReport, Report};
use crate::durable::{Durable, Flushed, Proposed};
use crate::group::replica::Replica;
use crate::group::{Command, GroupStatus, Outcome, Raft};
use crate::ranges::Finished;
use futures::future::BoxFuture;

/// The leader's access to the group, for the coordinator it runs.
#[derive(Clone)]
pub struct Handle {
    pub(super) raft: Raft,
    pub(super) replica: Replica,
    pub(super) id: u64,
    pub(super) term: u64,
    /// The root reports folder and the jobs folder: a report whose name a job owns is
    /// refused before it is proposed ([`crate::report::job_clash`]).
    pub(super) output: PathBuf,
    pub(super) jobs: PathBuf,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "group replica {} (term {})", self.id, self.term)
    }
}

/// The shell's durable work, committed through the group's log and applied by every member.
impl Durable for Handle {
    fn flush(&self, p: FlushBatch) -> BoxFuture<'_, Proposed> {
        Box::pin(self.propose(p))
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

    fn may_write_root(&self) -> anyhow::Result<()> {
        self.replica.holds_root_fence()
    }

    fn status(&self) -> GroupStatus {
        crate::group::status_of(&self.raft)
    }

    fn snapshot(
        &self,
        name: String,
        bytes: Vec<u8>,
        keep: usize,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let text = String::from_utf8(bytes).context("a snapshot file is not UTF-8")?;
            let parts = crate::group::snapshot_parts(&text, crate::group::SNAPSHOT_PART_BYTES);
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
pub(super) struct MemberResults {
    pub(super) raft: Raft,
    pub(super) replica: Replica,
}

impl crate::results::Source for MemberResults {
    fn info(&self) -> crate::results::Info {
        let (_, applied_index, primes_bytes) = self.replica.results_view();
        let st = crate::group::status_of(&self.raft);
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

    /// Proposes a flush as bounded entries ([`crate::group::batch`]), in order, each
    /// marked with this leader's term; the future it returns gives how many primes were
    /// new, and the replica's primes count and dedup-set size after it, once every entry
    /// has committed and applied. The flush's primes move into the entries (no copy is
    /// kept: a flush of a large job holds hundreds of MB). The next flush may be proposed
    /// before this one applies (the flusher's pipeline): an entry whose predecessor did not
    /// commit never applies, since entries of one term commit in order and an entry that
    /// reached the log in another term than its leader's is refused on every member
    /// ([`crate::group::replica`]). An entry that does not commit ends the flush with an
    /// error and hands it back: what did not commit, with its `done` (what did commit is
    /// deduplicated when it comes again).
    async fn propose(&self, mut p: FlushBatch) -> Proposed {
        let mut batches = crate::group::batch::split(&mut p, rand::random::<u64>).into_iter();
        let mut proposed = Vec::new();
        let mut unproposed = Vec::new();
        let mut failed = None;
        for (mut b, runs) in batches.by_ref() {
            b.term = Some(self.term);
            self.replica.hold(b.id, runs);
            // The entry goes by value; a copy of its (bounded) file primes is kept to hand
            // back if it does not commit.
            match self.raft.client_write_ff(Command::Batch(b.clone())).await {
                Ok(rx) => proposed.push((b, rx)),
                Err(e) => {
                    let runs = self.replica.take_batch(b.id);
                    unproposed.push((b, runs));
                    failed = Some(anyhow::anyhow!("not proposed to the group: {e}"));
                    break;
                }
            }
        }
        unproposed.extend(batches.map(|(b, runs)| (b, Some(runs))));
        let replica = self.replica.clone();
        Box::pin(async move {
            let (mut new, mut total, mut in_set) = (0, 0, 0);
            let any = !proposed.is_empty();
            let mut proposed = proposed.into_iter();
            while let Some((b, rx)) = proposed.next() {
                let e = match rx.await {
                    Ok(Ok(r)) => match r.data {
                        Outcome::Flushed {
                            new: n,
                            total: t,
                            in_set: s,
                        } => {
                            new += n;
                            (total, in_set) = (t, s);
                            continue;
                        }
                        o => anyhow::anyhow!("a flush's entry was not applied: {o:?}"),
                    },
                    Ok(Err(e)) => anyhow::anyhow!("not committed by the group: {e}"),
                    Err(e) => anyhow::anyhow!("the group stopped before committing: {e}"),
                };
                // This entry and every later one go back (a later one may still apply:
                // what it wrote is deduplicated when the flush comes again).
                let back = std::iter::once(b).chain(proposed.map(|(b, _)| b)).map(|b| {
                    let runs = replica.take_batch(b.id);
                    (b, runs)
                });
                crate::group::batch::unsplit(&mut p, back.chain(unproposed));
                return Err((e, p));
            }
            if let Some(e) = failed {
                crate::group::batch::unsplit(&mut p, unproposed);
                return Err((e, p));
            }
            if !any {
                (total, in_set) = replica.counts();
            }
            Ok(Flushed { new, total, in_set })
        })
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
