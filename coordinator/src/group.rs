//! The coordinator group: coordinators replicated through Raft (the `openraft` crate; no
//! election or log replication of our own).
//!
//! The leader runs the coordinator as one process does ([`crate::server::run`]): it watches
//! the inputs, assigns, collects primes and takes snapshots. What must survive a crash goes
//! through the group's log before it takes effect ([`Command`]): each flush (the buffered,
//! deduplicated primes with the chunks they complete) and each report. Every replica applies
//! the committed log to its own files under `data/coordinators/coordinator-<n>/`
//! ([`replica`]); the leader also keeps the root `primes.txt` and `data/output/` a copy of
//! its own, fenced by its term ([`mirror`]). A new leader starts from its replica's state
//! as a restarted coordinator starts from disk.
//!
//! - [`batch`]: a flush as bounded entries (range primes by reference, regenerated where
//!   they are not held).
//! - [`files`]: a replica's state as a list of files (snapshots, imports, the root copy).
//! - [`log`]: the Raft log and vote on disk (append + fsync, truncate, purge).
//! - [`replica`]: the state machine: applies commands, builds and installs snapshots.
//! - [`mirror`]: the root files the leader maintains, and the term fence.
//! - [`net`]: the Raft RPCs between coordinators (authenticated TCP, one JSON line each).
//! - [`pace`]: a follower applies what it regenerates at idle priority, within a bound.
//! - [`prevote`]: a member stands for election only once a majority would vote for it.
//! - [`publish`]: this member's view of itself, written for status and the dashboards.
//! - [`node`]: the process: the Raft node, and the role loop (lead, or redirect workers).

pub mod batch;
pub mod files;
pub mod log;
pub mod mirror;
pub mod net;
pub mod node;
pub mod pace;
pub mod prevote;
pub mod publish;
pub mod replica;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::core::{FlushBatch, JobReport, Report};

openraft::declare_raft_types!(
    /// The group's Raft types.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = Member,
        SnapshotData = tokio::fs::File,
);

/// A Raft node of the group.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry of the group.
pub type LogEntry = openraft::Entry<TypeConfig>;
/// A log position.
pub type LogId = openraft::LogId<u64>;

/// A member of the group: where its peers reach it, and where workers do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The Raft address (coordinators only).
    pub raft: String,
    /// The workers' address.
    pub workers: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (raft {})", self.workers, self.raft)
    }
}

/// A decision that must survive any one coordinator: applied by every replica, in log order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Command {
    /// Written by versions before bounded entries (a whole flush with its primes in one
    /// entry): still applied from old logs, never proposed.
    Flush(FlushBatch),
    /// One entry's share of a flush ([`batch`]): file primes, range primes by reference,
    /// and (in the last entries of a flush) the tasks it finishes.
    Batch(batch::Batch),
    /// File reports, written once their primes are applied.
    Reports(Vec<Report>),
    /// A job's report, without a factorial's value (versions before bounded entries: the
    /// value was lost to followers); still applied from old logs.
    JobReport(Box<JobReport>),
    /// A job's report and a factorial's value in decimal (at most ~1 MB: N <= 200,000), so
    /// every member writes the same report and `<name>.txt`.
    JobReportValue {
        report: Box<JobReport>,
        value: Option<String>,
    },
    /// The root files (name, text) another group or a coordinator without a group wrote
    /// last (simple mode before replicated, the other way round, an older version): every
    /// member takes them into its state (an empty one as they are; one with state of its
    /// own merges them), so switching modes loses and redoes nothing.
    /// Written by versions before bounded entries; still applied from old logs.
    Import(Vec<(String, String)>),
    /// The root files another group (or a coordinator without a group) wrote last, by
    /// reference: the proposer linked them (or copied them where links cannot be made) into
    /// the import folder beside the root `primes.txt` ([`node`]); every member merges the
    /// first `primes_len` bytes of its primes file, the first `ledger_len` of its ledger and
    /// its reports into its state, streaming, so switching modes loses and redoes nothing.
    ImportRoot { primes_len: u64, ledger_len: u64 },
    /// A piece of a Chandy–Lamport snapshot file the leader wrote (`name` as the snapshot
    /// writer names it; `data` its text from byte `offset`, at most
    /// [`SNAPSHOT_PART_BYTES`] bytes), so every member keeps the snapshots in its own
    /// folder (`snapshots/`) and any member serves them, and numbers them on, after a
    /// failover. The last piece renames the file into place and keeps the newest `keep`.
    SnapshotPart {
        name: String,
        offset: u64,
        data: String,
        last: bool,
        keep: usize,
    },
    /// A job submitted to the group (`coordinator submit`, checked by the leader): every
    /// member keeps it as `jobs/<name>.job` in its own folder, and the member that keeps
    /// the root files (the leader) writes it into its jobs folder (`--jobs`), where its
    /// coordinator picks it up as any job file; a new leader does the same at takeover with
    /// the submitted jobs that have no report for that line yet. A job of that name kept
    /// with another line is replaced only when `replace` says so (`submit --replace`);
    /// otherwise the entry changes nothing and the submitter is told why.
    SubmitJob {
        name: String,
        line: String,
        /// Entries logged before this field existed replaced silently, as they still do.
        #[serde(default = "replaced_before")]
        replace: bool,
    },
}

/// [`Command::SubmitJob::replace`] of an entry written before the field existed.
fn replaced_before() -> bool {
    true
}

/// Bytes of snapshot text per [`Command::SnapshotPart`]: as a JSON string (quotes and
/// newlines escaped: at most twice as long) well within an entry's 256 KiB.
pub const SNAPSHOT_PART_BYTES: usize = 96 << 10;

/// `text` cut into pieces of at most `max` bytes at character boundaries: (offset, piece).
pub fn snapshot_parts(text: &str, max: usize) -> Vec<(u64, &str)> {
    let mut parts = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + max.max(4)).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        parts.push((start as u64, &text[start..end]));
        start = end;
    }
    if parts.is_empty() {
        parts.push((0, ""));
    }
    parts
}

/// What applying a command did, for the leader that proposed it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Outcome {
    /// A membership change or a blank entry.
    #[default]
    Nothing,
    /// Primes appended: how many were new; the replica's totals after.
    Flushed { new: u64, total: u64, in_set: u64 },
    /// Each report: written, or why not.
    Reports(Vec<Result<(), String>>),
    /// The job report as written (digits and hash filled in), or why not.
    JobReport(Result<Box<JobReport>, String>),
    /// Whether an import was taken (only an empty replica takes one).
    Imported(bool),
    /// A submitted job kept, or why not (a job of that name with another line).
    Submitted(Result<(), String>),
    /// A flush's entry that reached the log in another term than its proposer's: not
    /// applied, on any member ([`batch::Batch::term`]).
    Refused { proposed: u64, logged: u64 },
}

/// Parses `--group`: `WORKERS/RAFT` per member, comma-separated, members numbered from 1.
pub fn parse_members(spec: &[String]) -> anyhow::Result<std::collections::BTreeMap<u64, Member>> {
    let mut members = std::collections::BTreeMap::new();
    for (i, m) in spec.iter().enumerate() {
        let (workers, raft) = m.split_once('/').ok_or_else(|| {
            anyhow::anyhow!("--group member {m:?} must be WORKERS_ADDR/RAFT_ADDR")
        })?;
        if workers.is_empty() || raft.is_empty() {
            anyhow::bail!("--group member {m:?} must be WORKERS_ADDR/RAFT_ADDR");
        }
        members.insert(
            i as u64 + 1,
            Member {
                raft: raft.to_string(),
                workers: workers.to_string(),
            },
        );
    }
    if members.is_empty() {
        anyhow::bail!("--group lists no member");
    }
    Ok(members)
}

pub use crate::durable::{GroupStatus, MemberStatus};

/// The group's state as this replica sees it.
pub fn status_of(raft: &Raft) -> GroupStatus {
    let m = raft.metrics().borrow().clone();
    let replication = m.replication.clone().unwrap_or_default();
    let members = m
        .membership_config
        .membership()
        .nodes()
        .map(|(id, node)| MemberStatus {
            id: *id,
            workers: node.workers.clone(),
            matched_index: if *id == m.id {
                m.last_log_index
            } else {
                replication.get(id).cloned().flatten().map(|l| l.index)
            },
        })
        .collect();
    GroupStatus {
        id: m.id,
        leader: m.current_leader,
        term: m.current_term,
        role: format!("{:?}", m.state).to_lowercase(),
        last_log_index: m.last_log_index,
        applied_index: m.last_applied.map(|l| l.index),
        members,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshot_parts_cut_at_character_boundaries() {
        let text = "ab\u{e9}cd\u{1f600}e";
        let parts = super::snapshot_parts(text, 4);
        let joined: String = parts.iter().map(|(_, p)| *p).collect();
        assert_eq!(joined, text);
        for (off, p) in &parts {
            assert!(p.len() <= 4, "{p:?}");
            assert_eq!(&text[*off as usize..*off as usize + p.len()], *p);
        }
        assert_eq!(
            super::snapshot_parts("", 4),
            vec![(0, "")],
            "an empty file is one piece"
        );
    }
}
