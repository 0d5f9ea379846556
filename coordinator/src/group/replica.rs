//! The replicated state machine: one replica's files under
//! `data/coordinators/coordinator-<n>/`: `primes.txt` with its ledger (the same
//! [`PrimesFile`] a single coordinator keeps, so apply deduplicates exactly as a flush
//! does), `output/` (reports), `applied.json` (the last entry applied and the membership)
//! and `snapshot.bin` (the last state-machine snapshot, for peers that need it).
//!
//! Applying is deterministic and idempotent: re-applying entries adds no prime twice (the
//! dedup set) and rewrites the same reports. So the replica's files are not fsynced entry
//! by entry: the log is, and `applied.json` records the last entry applied only once the
//! files are synced (before a state-machine snapshot lets the log go, with a membership
//! change, at a clean stop); after a crash the entries since are applied again. A snapshot
//! is these files; installing one replaces them.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::files;
use super::mirror::Mirror;
use super::{Command, LogEntry, LogId, Member, Outcome, TypeConfig};
use crate::primes::PrimesFile;
use crate::ranges::Finished;
use crate::state::lock;

#[derive(Serialize, Deserialize, Default)]
struct Applied {
    applied: Option<LogId>,
    membership: StoredMembership<u64, Member>,
}

struct State {
    dir: PathBuf,
    primes: PrimesFile,
    jobs: PathBuf,
    applied: Applied,
    mirror: Mirror,
}

/// One replica's state machine; clones share it.
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Mutex<State>>,
}

fn sm_err(e: anyhow::Error) -> StorageError<u64> {
    StorageError::from(StorageIOError::write_state_machine(
        openraft::AnyError::error(format!("{e:#}")),
    ))
}

impl Replica {
    /// Opens the replica in `dir`; the leader's copies go to `root_primes` and `root_output`.
    pub fn open(
        dir: &Path,
        root_primes: &Path,
        root_output: &Path,
        jobs: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("output"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut primes = PrimesFile::open(&dir.join("primes.txt"))?;
        primes.set_sync(false);
        let applied_path = dir.join("applied.json");
        let applied = match std::fs::read(&applied_path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("reading {}", applied_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Applied::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", applied_path.display())),
        };
        info!(
            dir = %dir.display(),
            primes = primes.len(),
            applied = ?applied.applied.map(|l| l.index),
            "replica opened"
        );
        Ok(Replica {
            inner: Arc::new(Mutex::new(State {
                dir: dir.to_path_buf(),
                primes,
                jobs: jobs.to_path_buf(),
                applied,
                mirror: Mirror::new(root_primes, root_output, jobs),
            })),
        })
    }

    /// The finished generation tasks and the primes counts (total, in the dedup set), for a
    /// leader starting its coordinator.
    pub fn ledger(&self) -> (Vec<Finished>, u64, u64) {
        let g = lock(&self.inner);
        (
            g.primes.finished.clone(),
            g.primes.len() as u64,
            g.primes.in_set() as u64,
        )
    }

    /// Takes the root files for `term` of group `group` (see [`Mirror`]).
    pub fn lead(&self, term: u64, group: &str) -> anyhow::Result<()> {
        let mut g = lock(&self.inner);
        let dir = g.dir.clone();
        tokio::task::block_in_place(|| g.mirror.activate(term, group, &dir))
    }

    /// The voters of the membership applied so far (none before the first).
    pub fn voters(&self) -> Option<std::collections::BTreeSet<u64>> {
        let g = lock(&self.inner);
        g.applied
            .applied
            .map(|_| g.applied.membership.membership().voter_ids().collect())
    }

    /// True if the replica holds nothing yet.
    pub fn is_empty(&self) -> bool {
        lock(&self.inner).is_empty()
    }

    /// True while this member keeps the root files (a failed copy or a newer fence ends it).
    pub fn leads_root(&self) -> bool {
        lock(&self.inner).mirror.term().is_some()
    }

    /// Stops copying to the root files.
    pub fn step_down(&self) {
        lock(&self.inner).mirror.deactivate();
    }

    /// Syncs the files and records what was applied (a clean stop: nothing to re-apply).
    pub fn close(&self) -> anyhow::Result<()> {
        let g = lock(&self.inner);
        tokio::task::block_in_place(|| g.make_durable())
    }
}

impl State {
    /// Syncs the primes file and ledger, then records what was applied (durably).
    fn make_durable(&self) -> anyhow::Result<()> {
        self.primes.sync()?;
        self.save_applied()
    }

    fn save_applied(&self) -> anyhow::Result<()> {
        let path = self.dir.join("applied.json");
        let bytes = serde_json::to_vec(&self.applied).context("encoding applied state")?;
        proto::files::write_atomic(&path, &bytes, true)
            .with_context(|| format!("writing {}", path.display()))
    }

    fn follow(&mut self) {
        let dir = self.dir.clone();
        if let Err(e) = self.mirror.follow(&dir) {
            warn!(
                error = format!("{e:#}"),
                "stopped copying to the root primes.txt"
            );
        }
    }

    fn apply_one(&mut self, cmd: Command) -> anyhow::Result<Outcome> {
        let output = self.dir.join("output");
        Ok(match cmd {
            Command::Flush(p) => {
                let new = self.primes.append(&p.small, &p.big, &p.runs, &p.finished)?;
                // The ledger as a leader starting here takes it (read at open, then kept up
                // to date: a member leads long after it opened). A task applied twice is
                // one entry of the leader's map.
                self.primes.finished.extend(p.finished);
                Outcome::Flushed {
                    new: new as u64,
                    total: self.primes.len() as u64,
                    in_set: self.primes.in_set() as u64,
                }
            }
            Command::Reports(reports) => {
                // The root reports follow the root primes (a report means its primes are in).
                self.follow();
                let mut results = Vec::with_capacity(reports.len());
                let mut written = Vec::with_capacity(reports.len());
                for r in &reports {
                    let res = crate::report::write_report(&output, r, &self.jobs)
                        .map_err(|e| format!("{e:#}"));
                    if res.is_ok() {
                        written.push(r);
                    }
                    results.push(res);
                }
                if let Err(e) = self.mirror.reports(&written, &output) {
                    warn!(
                        error = format!("{e:#}"),
                        "stopped copying reports to the root"
                    );
                }
                Outcome::Reports(results)
            }
            Command::Import(files) => {
                // The same decision on every member: an empty replica takes the files as
                // they are; one with state of its own merges them (primes and ledger as a
                // union, the imported reports replacing its own: they are the newer).
                let n = files.len();
                let files: Vec<(String, Vec<u8>)> = files
                    .into_iter()
                    .map(|(name, text)| (name, text.into_bytes()))
                    .collect();
                if self.is_empty() {
                    self.install(files)?;
                } else {
                    self.merge(files)?;
                }
                info!(
                    files = n,
                    primes = self.primes.len(),
                    "took the root files left by another coordinator (or group) into this group's state"
                );
                Outcome::Imported(true)
            }
            Command::JobReport(r) => {
                self.follow();
                let mut written = (*r).clone();
                match crate::report::write_job_report(&output, &mut written) {
                    Ok(()) => {
                        if let Err(e) = self.mirror.job_report(&r) {
                            warn!(
                                error = format!("{e:#}"),
                                "stopped copying reports to the root"
                            );
                        }
                        Outcome::JobReport(Ok(Box::new(written)))
                    }
                    Err(e) => Outcome::JobReport(Err(format!("{e:#}"))),
                }
            }
        })
    }

    /// The replica's files, packed.
    fn pack(&self) -> anyhow::Result<Vec<u8>> {
        let (primes, output) = self.paths();
        Ok(files::pack(&files::collect_files(&primes, &output)?))
    }

    /// Its primes file and reports folder.
    fn paths(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("primes.txt"), self.dir.join("output"))
    }

    /// True if the replica holds nothing yet (no prime, no finished task, no report).
    fn is_empty(&self) -> bool {
        self.primes.is_empty()
            && self.primes.finished.is_empty()
            && std::fs::read_dir(self.dir.join("output")).map_or(true, |mut d| d.next().is_none())
    }

    /// Adds `files` (names relative to its folder) to what the replica holds: the primes and
    /// ledger entries it lacks, and the reports (which replace its own).
    fn merge(&mut self, files: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        let (mut small, mut big, mut finished) = (Vec::new(), Vec::new(), Vec::new());
        let (primes, output) = self.paths();
        for (name, bytes) in files {
            let path = files::place(&name, &primes, &output)?;
            match name.as_str() {
                "primes.txt" => {
                    for line in bytes.split(|b| *b == b'\n') {
                        let Ok(t) = std::str::from_utf8(line) else {
                            continue;
                        };
                        let t = t.trim();
                        if let Ok(v) = t.parse::<u64>() {
                            small.push(v);
                        } else if !t.is_empty()
                            && !t.starts_with('0')
                            && t.bytes().all(|b| b.is_ascii_digit())
                        {
                            big.push(t.to_string());
                        }
                    }
                }
                "primes.txt.ranges" => {
                    for line in bytes.split(|b| *b == b'\n') {
                        if let Ok(f) = serde_json::from_slice::<Finished>(line) {
                            if !self.primes.finished.contains(&f) && !finished.contains(&f) {
                                finished.push(f);
                            }
                        }
                    }
                }
                _ => proto::files::write_atomic(&path, &bytes, true)
                    .with_context(|| format!("writing {}", path.display()))?,
            }
        }
        self.primes.append(&small, &big, &[], &finished)?;
        Ok(())
    }

    /// Replaces the replica's files with `files` (as [`files::collect_files`] names them).
    fn install(&mut self, files: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        let (primes, output) = self.paths();
        for (name, _) in &files {
            files::place(name, &primes, &output)?;
        }
        if output.exists() {
            std::fs::remove_dir_all(&output)
                .with_context(|| format!("clearing {}", output.display()))?;
        }
        files::write_files(&files, &primes, &output, true)?;
        self.primes = PrimesFile::open(&primes)?;
        self.primes.set_sync(false);
        Ok(())
    }

    /// Keeps a state-machine snapshot on disk (only there: it is read when a peer needs it)
    /// as its meta (one JSON line), then its data.
    fn save_snapshot(&self, meta: &SnapshotMeta<u64, Member>, data: &[u8]) -> anyhow::Result<()> {
        let path = self.dir.join("snapshot.bin");
        let meta = serde_json::to_vec(meta).context("encoding snapshot meta")?;
        let mut bytes = Vec::with_capacity(meta.len() + 1 + data.len());
        bytes.extend_from_slice(&meta);
        bytes.push(b'\n');
        bytes.extend_from_slice(data);
        proto::files::write_atomic(&path, &bytes, true)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The snapshot kept by [`State::save_snapshot`], if any.
    fn load_snapshot(&self) -> anyhow::Result<Option<Snapshot<TypeConfig>>> {
        let path = self.dir.join("snapshot.bin");
        let mut b = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let nl = b
            .iter()
            .position(|c| *c == b'\n')
            .with_context(|| format!("{}: no meta line", path.display()))?;
        let meta = serde_json::from_slice(&b[..nl])
            .with_context(|| format!("{}: meta", path.display()))?;
        b.drain(..=nl);
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(b)),
        }))
    }
}

/// Builds a snapshot from the files as they were when asked.
pub struct Builder {
    replica: Replica,
    applied: Option<LogId>,
    membership: StoredMembership<u64, Member>,
    data: anyhow::Result<Vec<u8>>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let data = std::mem::replace(&mut self.data, Ok(Vec::new())).map_err(sm_err)?;
        let id = match self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, rand::random::<u32>()),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: id,
        };
        let replica = self.replica.clone();
        tokio::task::block_in_place(|| lock(&replica.inner).save_snapshot(&meta, &data))
            .map_err(sm_err)?;
        info!(index = ?meta.last_log_id.map(|l| l.index), bytes = data.len(), "state-machine snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for Replica {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, Member>), StorageError<u64>> {
        let g = lock(&self.inner);
        Ok((g.applied.applied, g.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<u64>>
    where
        I: IntoIterator<Item = LogEntry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<LogEntry> = entries.into_iter().collect();
        let inner = self.inner.clone();
        tokio::task::block_in_place(move || {
            let mut g = lock(&inner);
            let mut out = Vec::with_capacity(entries.len());
            let mut membership = false;
            for e in entries {
                let outcome = match e.payload {
                    EntryPayload::Blank => Outcome::Nothing,
                    EntryPayload::Normal(cmd) => g.apply_one(cmd)?,
                    EntryPayload::Membership(m) => {
                        g.applied.membership = StoredMembership::new(Some(e.log_id), m);
                        membership = true;
                        Outcome::Nothing
                    }
                };
                g.applied.applied = Some(e.log_id);
                out.push(outcome);
            }
            // What was applied is made durable (and recorded in applied.json) only before a
            // snapshot lets the log go, and with a membership: until then a crash re-applies
            // the entries from the log, which adds nothing twice (one fsync per entry, the
            // log's, instead of four).
            if membership {
                g.make_durable()?;
            }
            g.follow();
            Ok(out)
        })
        .map_err(sm_err)
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        let g = lock(&self.inner);
        // Durable first: the log up to this snapshot may be purged once it is built.
        let data = tokio::task::block_in_place(|| g.make_durable().and_then(|()| g.pack()));
        Builder {
            replica: self.clone(),
            applied: g.applied.applied,
            membership: g.applied.membership.clone(),
            data,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let inner = self.inner.clone();
        let meta = meta.clone();
        tokio::task::block_in_place(move || {
            let mut g = lock(&inner);
            g.install(files::unpack(&data)?)?;
            g.applied = Applied {
                applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            g.save_applied()?;
            g.save_snapshot(&meta, &data)?;
            info!(index = ?meta.last_log_id.map(|l| l.index), primes = g.primes.len(), "installed a snapshot from the leader");
            Ok::<_, anyhow::Error>(())
        })
        .map_err(sm_err)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let inner = self.inner.clone();
        tokio::task::block_in_place(move || lock(&inner).load_snapshot()).map_err(sm_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Pending;
    use proto::msg::{TaskDone, Work};

    fn finished(lo: u64, hi: u64, primes: u64) -> Finished {
        Finished {
            work: Work::Count { lo, hi },
            worker: "w1".into(),
            result: TaskDone {
                attempt: "a-1".into(),
                version: String::new(),
                size: 0,
                lines: 0,
                numbers: 0,
                blank: 0,
                invalid: 0,
                first_invalid: Vec::new(),
                primes,
                answer: Some(primes.to_string()),
                first_prime: None,
                last_prime: None,
            },
        }
    }

    fn flush(small: Vec<u64>, done: Vec<Finished>) -> Command {
        Command::Flush(Pending {
            small,
            finished: done,
            ..Pending::default()
        })
    }

    #[test]
    /// A member keeps the ledger a leader starting on it takes up to date, and a member
    /// reopened after a crash (its files not synced, applied.json older) applies the same
    /// entries again without a prime twice.
    fn ledger_kept_and_entries_applied_again_add_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || {
            Replica::open(
                &dir.path().join("member"),
                &dir.path().join("primes.txt"),
                &dir.path().join("output"),
                &dir.path().join("jobs"),
            )
            .expect("open")
        };
        let entries = [
            flush(vec![2, 3, 5], vec![finished(1, 10, 4)]),
            flush(vec![5, 7, 11], vec![finished(11, 20, 4)]),
        ];
        let r = open();
        for e in entries.iter().cloned() {
            lock(&r.inner).apply_one(e).expect("apply");
        }
        let (done, total, _) = r.ledger();
        assert_eq!(total, 5);
        assert_eq!(
            done.len(),
            2,
            "both tasks in the ledger a leader would take"
        );
        drop(r);
        // A crash: nothing recorded as applied, the entries come again.
        let r = open();
        assert_eq!(r.ledger().0.len(), 2, "the ledger read back at open");
        for e in entries.iter().cloned() {
            lock(&r.inner).apply_one(e).expect("apply again");
        }
        let text = std::fs::read_to_string(dir.path().join("member/primes.txt")).expect("read");
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, ["11", "2", "3", "5", "7"]);
        assert_eq!(r.ledger().1, 5);
    }
}
