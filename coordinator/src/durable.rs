//! The durability seam: everything the shell ([`crate::server`], [`crate::state`],
//! [`crate::flusher`]) makes durable goes through one [`Durable`]: a flush's primes with the
//! tasks it finishes, file reports, job reports. The shell never asks what is behind it.
//!
//! Every coordinator is a member of a group ([`crate::group`]): of one in simple mode, of
//! three in replicated mode; its leader's [`crate::group::node::Handle`] is the one
//! implementation. A durable step has happened once the group has committed and applied
//! it; until then nothing is marked done and nothing is reported.
//!
//! This module sits beneath both the shell and the group, so imports go one way: the group
//! runs the shell ([`crate::server::run`]) and hands it its `Durable`; the shell names only
//! this trait.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::core::{FlushBatch, JobReport, Report};
use crate::ranges::Finished;

/// A flush made durable: how many primes were new, and the primes file's count and
/// dedup-set size after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub new: u64,
    pub total: u64,
    pub in_set: u64,
}

/// A flush under way: resolves once it is durable, or with the flush handed back.
pub type Proposed = BoxFuture<'static, Result<Flushed, (anyhow::Error, FlushBatch)>>;

/// Where the shell's durable work goes.
pub trait Durable: Send + Sync {
    /// Proposes a flush's primes and finished tasks (not its `done` chunks: those are the
    /// caller's to mark once it is durable). The returned future resolves once the group
    /// has proposed it, in order after every flush proposed before; the [`Proposed`] it
    /// gives resolves once the flush is durable. The caller may propose the next flush
    /// before that (a pipeline), and must await them in the order proposed. On failure the
    /// flush comes back: what did not become durable (what did is deduplicated when it
    /// comes again). A flush proposed after one that failed never becomes durable without
    /// it (the group refuses it the same way on every member).
    fn flush(&self, p: FlushBatch) -> BoxFuture<'_, Proposed>;

    /// Writes file reports durably; how each went (an `Err` names why that one was not).
    fn reports(&self, rs: Vec<Report>) -> BoxFuture<'_, anyhow::Result<Vec<Result<(), String>>>>;

    /// Writes a job's report (a factorial's value with it) durably; the report as written,
    /// or why it was refused.
    fn job_report(
        &self,
        r: JobReport,
    ) -> BoxFuture<'_, anyhow::Result<Result<Box<JobReport>, String>>>;

    /// What is durable at the start: the finished generation tasks, the primes file's count
    /// and its dedup-set size.
    fn ledger(&self) -> (Vec<Finished>, u64, u64);

    /// The term this coordinator leads (snapshots and reports carry it).
    fn term(&self) -> u64;

    /// The last index applied (snapshots record it).
    fn applied_index(&self) -> u64;

    /// True while this coordinator still leads in its term.
    fn still_leads(&self) -> bool;

    /// Ok while this coordinator may write at root beside the files the group keeps there
    /// (its snapshots): a leader resumed after a pause still thinks it leads until it hears
    /// from the others, but the fence a newer leader took says otherwise. May wait for an
    /// apply in progress: call it from a blocking thread.
    fn may_write_root(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The group as this member sees it (status, dashboard, metrics).
    fn status(&self) -> GroupStatus;

    /// Keeps snapshot file `name` (its text `bytes`) where every member has it, pruned to
    /// the newest `keep` ([`crate::group::Command::SnapshotPart`]). Best effort: the
    /// snapshot is already written to the leader's snapshots folder.
    fn snapshot(
        &self,
        name: String,
        bytes: Vec<u8>,
        keep: usize,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        let _ = (name, bytes, keep);
        Box::pin(async { Ok(()) })
    }

    /// The folder where [`Durable::snapshot`] keeps them on this member, if any: the
    /// numbering goes on from the newest there, and a new leader resumes from it.
    fn snapshot_dir(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// This member's own results, served beside the dashboard ([`crate::results`]).
    fn results(&self) -> Option<std::sync::Arc<dyn crate::results::Source>> {
        None
    }
}

/// The group's state as one member sees it, for `coordinator status`, the dashboard and
/// `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupStatus {
    /// This member.
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    /// Role of this member: leader, follower, candidate, learner.
    pub role: String,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Each member: id, workers' address, and (on the leader) the index replicated to it.
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: u64,
    pub workers: String,
    pub matched_index: Option<u64>,
}
