//! The replicated state machine: one replica's files under
//! `data/coordinators/coordinator-<n>/`: `primes.txt` with its ledger (the same
//! [`PrimesFile`] a single coordinator keeps, so apply deduplicates exactly as a flush
//! does), `output/` (reports), `applied.json` (the last entry applied and the membership)
//! and `snapshot.bin` (the last state-machine snapshot, for peers that need it).
//!
//! Applying is deterministic and idempotent: re-applying entries after a crash between the
//! append and `applied.json` adds no prime twice (the dedup set) and rewrites the same
//! reports. A snapshot is these files; installing one replaces them.

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

use super::mirror::Mirror;
use super::{Command, LogEntry, LogId, Member, Outcome, TypeConfig};
use crate::primes::{ledger_path, PrimesFile};
use crate::ranges::Finished;
use crate::state::lock;

#[derive(Serialize, Deserialize, Default)]
struct Applied {
    applied: Option<LogId>,
    membership: StoredMembership<u64, Member>,
}

struct Stored {
    meta: SnapshotMeta<u64, Member>,
    data: Vec<u8>,
}

struct State {
    dir: PathBuf,
    primes: PrimesFile,
    jobs: PathBuf,
    applied: Applied,
    snapshot: Option<Stored>,
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
        let primes = PrimesFile::open(&dir.join("primes.txt"))?;
        let applied_path = dir.join("applied.json");
        let applied = match std::fs::read(&applied_path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("reading {}", applied_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Applied::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", applied_path.display())),
        };
        let snap_path = dir.join("snapshot.bin");
        let snapshot = match std::fs::read(&snap_path) {
            Ok(b) => Some(
                decode_stored(&b).with_context(|| format!("reading {}", snap_path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", snap_path.display())),
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
                snapshot,
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

    /// The replica's folder.
    pub fn dir(&self) -> PathBuf {
        lock(&self.inner).dir.clone()
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
}

impl State {
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
                for r in &reports {
                    let res = crate::report::write_report(&output, r, &self.jobs)
                        .map_err(|e| format!("{e:#}"));
                    if res.is_ok() {
                        if let Err(e) = self.mirror.report(r) {
                            warn!(
                                error = format!("{e:#}"),
                                "stopped copying reports to the root"
                            );
                        }
                    }
                    results.push(res);
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
        let files = collect_files(&self.dir.join("primes.txt"), &self.dir.join("output"))?;
        Ok(pack_files(&files))
    }

    /// Replaces the replica's files with a snapshot's.
    fn unpack(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.install(unpack_files(data)?)
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
        for (name, bytes) in files {
            if name.split('/').any(|c| c == ".." || c.is_empty()) || name.starts_with('/') {
                anyhow::bail!("a file outside the replica: {name:?}");
            }
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
                _ => {
                    let path = self.dir.join(&name);
                    proto::files::write_atomic(&path, &bytes, true)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
            }
        }
        self.primes.append(&small, &big, &[], &finished)?;
        Ok(())
    }

    /// Replaces the replica's files with `files` (names relative to its folder).
    fn install(&mut self, files: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        for (name, _) in &files {
            if name.split('/').any(|c| c == ".." || c.is_empty()) || name.starts_with('/') {
                anyhow::bail!("a file outside the replica: {name:?}");
            }
        }
        let output = self.dir.join("output");
        if output.exists() {
            std::fs::remove_dir_all(&output)
                .with_context(|| format!("clearing {}", output.display()))?;
        }
        let primes = self.dir.join("primes.txt");
        let mut seen_ledger = false;
        for (name, bytes) in &files {
            seen_ledger |= name == "primes.txt.ranges";
            let path = self.dir.join(name);
            proto::files::write_atomic(&path, bytes, true)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if !files.iter().any(|(n, _)| n == "primes.txt") {
            proto::files::write_atomic(&primes, b"", true)
                .with_context(|| format!("writing {}", primes.display()))?;
        }
        if !seen_ledger {
            let _ = std::fs::remove_file(ledger_path(&primes));
        }
        self.primes = PrimesFile::open(&primes)?;
        Ok(())
    }

    fn save_snapshot(&self, s: &Stored) -> anyhow::Result<()> {
        let path = self.dir.join("snapshot.bin");
        let meta = serde_json::to_vec(&s.meta).context("encoding snapshot meta")?;
        let mut bytes = Vec::with_capacity(meta.len() + 1 + s.data.len());
        bytes.extend_from_slice(&meta);
        bytes.push(b'\n');
        bytes.extend_from_slice(&s.data);
        proto::files::write_atomic(&path, &bytes, true)
            .with_context(|| format!("writing {}", path.display()))
    }
}

fn decode_stored(b: &[u8]) -> anyhow::Result<Stored> {
    let nl = b
        .iter()
        .position(|c| *c == b'\n')
        .context("no snapshot meta line")?;
    let meta = serde_json::from_slice(&b[..nl]).context("snapshot meta")?;
    Ok(Stored {
        meta,
        data: b[nl + 1..].to_vec(),
    })
}

/// A primes file, its ledger and the reports under `output`, as (name, bytes): `primes.txt`,
/// `primes.txt.ranges`, `output/...` (what a replica holds; the root files have the same).
pub fn collect_files(primes: &Path, output: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for (name, path) in [
        ("primes.txt".to_string(), primes.to_path_buf()),
        ("primes.txt.ranges".to_string(), ledger_path(primes)),
    ] {
        match std::fs::read(&path) {
            Ok(b) => files.push((name, b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    collect_tree(output, "output", &mut files)?;
    Ok(files)
}

fn collect_tree(dir: &Path, rel: &str, out: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let kind = e
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        let rel = format!("{rel}/{name}");
        if kind.is_dir() {
            collect_tree(&path, &rel, out)?;
        } else if kind.is_file() {
            let b = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            out.push((rel, b));
        }
    }
    Ok(())
}

/// Files as (u32 name length, name, u64 length, bytes)*, little-endian.
fn pack_files(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let total: usize = files.iter().map(|(n, b)| 12 + n.len() + b.len()).sum();
    let mut out = Vec::with_capacity(total);
    for (n, b) in files {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

fn unpack_files(mut data: &[u8]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> anyhow::Result<&'a [u8]> {
        if data.len() < n {
            anyhow::bail!("snapshot data is cut short");
        }
        let (a, b) = data.split_at(n);
        *data = b;
        Ok(a)
    }
    let mut files = Vec::new();
    while !data.is_empty() {
        let n = u32::from_le_bytes(take(&mut data, 4)?.try_into()?) as usize;
        let name = String::from_utf8(take(&mut data, n)?.to_vec()).context("file name")?;
        let len = u64::from_le_bytes(take(&mut data, 8)?.try_into()?) as usize;
        files.push((name, take(&mut data, len)?.to_vec()));
    }
    Ok(files)
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
        let stored = Stored {
            meta: meta.clone(),
            data: data.clone(),
        };
        let replica = self.replica.clone();
        tokio::task::block_in_place(|| {
            let mut g = lock(&replica.inner);
            g.save_snapshot(&stored)?;
            g.snapshot = Some(stored);
            Ok::<_, anyhow::Error>(())
        })
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
            for e in entries {
                let outcome = match e.payload {
                    EntryPayload::Blank => Outcome::Nothing,
                    EntryPayload::Normal(cmd) => g.apply_one(cmd)?,
                    EntryPayload::Membership(m) => {
                        g.applied.membership = StoredMembership::new(Some(e.log_id), m);
                        Outcome::Nothing
                    }
                };
                g.applied.applied = Some(e.log_id);
                out.push(outcome);
            }
            g.save_applied()?;
            g.follow();
            Ok(out)
        })
        .map_err(sm_err)
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        let g = lock(&self.inner);
        let data = tokio::task::block_in_place(|| g.pack());
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
            g.unpack(&data)?;
            g.applied = Applied {
                applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            g.save_applied()?;
            let stored = Stored { meta, data };
            g.save_snapshot(&stored)?;
            info!(index = ?stored.meta.last_log_id.map(|l| l.index), primes = g.primes.len(), "installed a snapshot from the leader");
            g.snapshot = Some(stored);
            Ok::<_, anyhow::Error>(())
        })
        .map_err(sm_err)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let g = lock(&self.inner);
        Ok(g.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
