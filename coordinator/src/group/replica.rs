//! The replicated state machine: one replica's files under
//! `data/coordinators/coordinator-<n>/`: `primes.txt` with its ledger (the same
//! [`PrimesFile`] a single coordinator keeps, so apply deduplicates exactly as a flush
//! does), `output/` (reports), `applied.json` (the last entry applied and the membership)
//! and the last state-machine snapshot (`snapshot.json`, its data packed when a peer needs
//! it).
//!
//! Applying is deterministic and idempotent: re-applying entries adds no prime twice (the
//! dedup set) and no ledger line twice, and rewrites the same reports. So the replica's
//! files are not fsynced entry by entry: the log is, and `applied.json` records the last
//! entry applied only once the files are synced (before a state-machine snapshot lets the
//! log go, with a membership change, at a clean stop); after a crash the entries since are
//! applied again. A flush's range primes come by reference ([`super::batch`]): the leader
//! that proposed it writes the primes it holds, every other member regenerates them.
//! A snapshot is a record of the files' lengths; installing one replaces the files,
//! streamed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::batch::{self, Held};
use super::files;
use super::mirror::Mirror;
use super::pace::{self, Pace};
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
    applied: Applied,
    mirror: Mirror,
    /// Range primes of the batches this process proposed, until they apply.
    held: Held,
    /// Where the proposer of an import put the root files it imports.
    import_dir: PathBuf,
    /// Whether what this member regenerates is applied at idle priority ([`pace`]).
    pace: Pace,
}

/// One replica's state machine; clones share it.
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Mutex<State>>,
    /// What the results endpoints read ([`Replica::results_view`]), behind a lock of its own:
    /// an apply holds `inner` for as long as it writes (a follower's at idle priority,
    /// [`pace`]), and a request on the async thread must not wait for it.
    view: Arc<Mutex<View>>,
    dir: PathBuf,
}

/// The last applied index and the length the primes file had then (whole lines).
#[derive(Clone, Copy, Default)]
struct View {
    applied: u64,
    primes_bytes: u64,
}

impl State {
    fn view(&self) -> View {
        View {
            applied: self.applied.applied.map_or(0, |l| l.index),
            primes_bytes: self.primes.bytes(),
        }
    }
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
        if primes.truncated_bytes > 0 {
            warn!(
                bytes = primes.truncated_bytes,
                "cut a torn last line from primes.txt (a crash mid-append)"
            );
        }
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
        let state = State {
            dir: dir.to_path_buf(),
            primes,
            applied,
            mirror: Mirror::new(root_primes, root_output, jobs),
            held: Held::default(),
            import_dir: import_dir(root_primes),
            pace: Pace::default(),
        };
        Ok(Replica {
            view: Arc::new(Mutex::new(state.view())),
            inner: Arc::new(Mutex::new(state)),
            dir: dir.to_path_buf(),
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

    /// This replica's folder, its last applied index and the length its primes file had
    /// then (whole lines: the view is updated after each entry applies). Never waits for an
    /// apply in progress.
    pub fn results_view(&self) -> (PathBuf, u64, u64) {
        let v = *lock(&self.view);
        (self.dir.clone(), v.applied, v.primes_bytes)
    }

    /// The pace of this member's applies, for [`pace::watch`] to keep up to date.
    pub fn pace(&self) -> Pace {
        lock(&self.inner).pace.clone()
    }

    /// Holds the range primes of batch `id` (about to be proposed) for its apply here.
    pub fn hold(&self, id: u64, runs: Vec<crate::ranges::Run>) {
        lock(&self.inner).held.hold(id, runs);
    }

    /// Takes back the runs held for batch `id` (not committed); None if an apply took them.
    pub fn take_batch(&self, id: u64) -> Option<Vec<crate::ranges::Run>> {
        lock(&self.inner).held.take(id)
    }

    /// Takes the root files for `term` of group `group` (see [`Mirror`]), and puts the
    /// submitted jobs not yet reported into the jobs folder.
    pub fn lead(&self, term: u64, group: &str) -> anyhow::Result<()> {
        let mut g = lock(&self.inner);
        let dir = g.dir.clone();
        tokio::task::block_in_place(|| {
            g.mirror.activate(term, group, &dir)?;
            let placed = g.place_submitted_jobs()?;
            if placed > 0 {
                info!(placed, "submitted jobs put into the jobs folder");
            }
            Ok(())
        })
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
        let mut g = lock(&self.inner);
        tokio::task::block_in_place(|| g.make_durable())
    }
}

impl State {
    /// Syncs the primes file and ledger, then records what was applied (durably).
    fn make_durable(&mut self) -> anyhow::Result<()> {
        // Synced, and a checkpoint of the dedup set and lengths: the next open reads it and
        // scans only what was appended since, not the whole primes.txt.
        self.primes.checkpoint()?;
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

    /// Writes a piece of snapshot `name` into `snapshots/` (a hidden `.part` file until the
    /// last piece, then renamed, and all but the newest `keep` removed). Idempotent: a
    /// piece applied again (after a crash) rewrites the same bytes at the same offset.
    fn snapshot_part(
        &mut self,
        name: &str,
        offset: u64,
        data: &str,
        last: bool,
        keep: usize,
    ) -> anyhow::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        if !crate::results::snapshot_name_ok(name) {
            anyhow::bail!("not a snapshot name: {name:?}");
        }
        let dir = crate::results::snapshots_dir(&self.dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let done = dir.join(name);
        let part = dir.join(format!(".{name}.part"));
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create(offset == 0)
            .truncate(false)
            .open(&part)
        {
            Ok(f) => f,
            // Its earlier pieces are gone: the file was finished before a crash (the
            // pieces are applied again), or this member installed a state-machine
            // snapshot in the middle of it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !done.exists() {
                    warn!(
                        snapshot = name,
                        offset, "snapshot piece without its beginning: skipped"
                    );
                }
                return Ok(());
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", part.display())),
        };
        let len = f
            .metadata()
            .with_context(|| format!("reading {}", part.display()))?
            .len();
        if len < offset {
            anyhow::bail!(
                "{} has {len} bytes, the piece begins at {offset}",
                part.display()
            );
        }
        f.set_len(offset)
            .and_then(|()| f.seek(SeekFrom::Start(offset)))
            .and_then(|_| f.write_all(data.as_bytes()))
            .with_context(|| format!("writing {}", part.display()))?;
        if last {
            f.sync_all()
                .with_context(|| format!("syncing {}", part.display()))?;
            drop(f);
            std::fs::rename(&part, &done)
                .with_context(|| format!("renaming {}", part.display()))?;
            for (_, old) in crate::snapshot::list_snapshots(&dir)
                .into_iter()
                .skip(keep.max(1))
            {
                let _ = std::fs::remove_file(old);
            }
        }
        Ok(())
    }

    /// Keeps submitted job `name` in `jobs/` here and, while this member keeps the root
    /// files, in the coordinator's jobs folder.
    fn submit_job(&mut self, name: &str, line: &str) -> anyhow::Result<()> {
        crate::jobs::check_submission(name, line).map_err(|e| anyhow::anyhow!(e))?;
        let file = format!("{name}.job");
        let text = format!("{}\n", line.trim());
        let own = self.dir.join("jobs").join(&file);
        write_if_changed(&own, &text)?;
        if self.mirror.term().is_some() {
            write_if_changed(&self.mirror.jobs_dir().join(&file), &text)?;
        }
        Ok(())
    }

    /// At takeover: puts every submitted job that has no report for its line yet into the
    /// coordinator's jobs folder (the previous leader's was on its own host), so this
    /// leader runs it; a job already reported is left out (its report is replicated).
    fn place_submitted_jobs(&self) -> anyhow::Result<usize> {
        let mut placed = 0;
        for e in std::fs::read_dir(self.dir.join("jobs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(file) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some(name) = file.strip_suffix(".job") else {
                continue;
            };
            let text = std::fs::read_to_string(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            let Ok(spec) = crate::jobs::check_submission(name, text.trim()) else {
                continue;
            };
            let report = self.dir.join("output/jobs").join(format!("{name}.json"));
            let reported = std::fs::read(&report)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|r| serde_json::to_value(spec).is_ok_and(|s| r["spec"] == s));
            if !reported && write_if_changed(&self.mirror.jobs_dir().join(&file), &text)? {
                placed += 1;
            }
        }
        Ok(placed)
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
            Command::Batch(b) => {
                let held = self.held.take(b.id);
                let primes = &mut self.primes;
                // The ledger a leader starting here takes is kept up to date by append (a
                // task applied twice is recorded once).
                let new = match held {
                    Some(runs) => primes.append(&b.small, &b.big, &runs, &b.finished)?,
                    None if b.pieces.is_empty() => {
                        primes.append(&b.small, &b.big, &[], &b.finished)?
                    }
                    None => {
                        let mut apply = move || {
                            let (runs, wrong) =
                                batch::regenerate(&b.pieces, worker::gen::sieve::primes_in);
                            for w in wrong {
                                tracing::error!(
                                    problem = w,
                                    "a range's primes as the leader had them differ from this member's sieve: the sieve's are written"
                                );
                            }
                            primes.append(&b.small, &b.big, &runs, &b.finished)
                        };
                        if self.pace.lowly() {
                            pace::run_lowly(apply)?
                        } else {
                            apply()?
                        }
                    }
                };
                Outcome::Flushed {
                    new: new as u64,
                    total: self.primes.len() as u64,
                    in_set: self.primes.in_set() as u64,
                }
            }
            Command::ImportRoot {
                primes_len,
                ledger_len,
            } => {
                self.import_root(primes_len, ledger_len)?;
                Outcome::Imported(true)
            }
            Command::SnapshotPart {
                name,
                offset,
                data,
                last,
                keep,
            } => {
                // A snapshot is for reading and resuming, not a decision: a member that
                // cannot write one says so and applies on.
                if let Err(e) = self.snapshot_part(&name, offset, &data, last, keep) {
                    warn!(
                        snapshot = name,
                        error = format!("{e:#}"),
                        "cannot keep a snapshot"
                    );
                }
                Outcome::Nothing
            }
            Command::SubmitJob { name, line } => {
                if let Err(e) = self.submit_job(&name, &line) {
                    warn!(
                        job = name,
                        error = format!("{e:#}"),
                        "cannot keep a submitted job"
                    );
                }
                Outcome::Nothing
            }
            Command::JobReportValue { report, value } => {
                let mut r = *report;
                r.value = value;
                self.job_report(r)
            }
            Command::Reports(reports) => {
                // The root reports follow the root primes (a report means its primes are in).
                self.follow();
                let mut results = Vec::with_capacity(reports.len());
                let mut written = Vec::with_capacity(reports.len());
                for r in &reports {
                    // The leader checked the jobs' names before proposing: apply depends on
                    // the log alone.
                    let res =
                        crate::report::write_report_only(&output, r).map_err(|e| format!("{e:#}"));
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
            Command::JobReport(r) => self.job_report(*r),
        })
    }

    fn job_report(&mut self, r: crate::core::JobReport) -> Outcome {
        self.follow();
        let output = self.dir.join("output");
        let mut written = r.clone();
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

    /// Merges the root files the import folder holds (their first `primes_len` and
    /// `ledger_len` bytes, all reports) into this replica, streaming: an empty replica
    /// takes a copy, one with state of its own the union (the imported reports replacing
    /// its own: they are the newer). A member that cannot see the import folder (on
    /// another host) logs it and goes on without: it holds less than the others then.
    fn import_root(&mut self, primes_len: u64, ledger_len: u64) -> anyhow::Result<()> {
        let src = self.import_dir.clone();
        let (src_primes, src_output) = (src.join("primes.txt"), src.join("output"));
        let have = std::fs::metadata(&src_primes).map_or(0, |m| m.len());
        if have < primes_len {
            tracing::error!(
                folder = %src.display(),
                have,
                primes_len,
                "cannot see the root files the leader imports: this member goes on without them"
            );
            return Ok(());
        }
        let added = self.primes.merge_from(
            &src_primes,
            primes_len,
            &crate::primes::ledger_path(&src_primes),
            ledger_len,
        )?;
        let output = self.dir.join("output");
        let reports = copy_tree(&src_output, &output)?;
        info!(
            added,
            reports,
            primes = self.primes.len(),
            "took the root files left by another group (or a coordinator without a group) into this group's state"
        );
        Ok(())
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

    /// The snapshot kept on disk, if any.
    fn read_kept(&self) -> anyhow::Result<Option<Kept>> {
        let path = self.dir.join(KEPT);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save_kept(&self, k: &Kept) -> anyhow::Result<()> {
        let path = self.dir.join(KEPT);
        let bytes = serde_json::to_vec(k).context("encoding the snapshot's meta")?;
        proto::files::write_atomic(&path, &bytes, true)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// The snapshot a member keeps: its meta and the lengths of the primes file and ledger it
/// covers (both only grow at the end, so their first bytes stay what they were). The data
/// a peer receives is packed from the files when a peer first needs it
/// (`snapshot-<id>.data`), streamed, never held in memory.
#[derive(Serialize, Deserialize)]
struct Kept {
    meta: SnapshotMeta<u64, Member>,
    primes_len: u64,
    ledger_len: u64,
}

/// The kept snapshot's meta file in a member's folder.
const KEPT: &str = "snapshot.json";
/// Where a snapshot being received is written.
const RECEIVING: &str = "snapshot.recv";

fn data_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("snapshot-{id}.data"))
}

/// Removes the data files of snapshots other than `keep` (and the pre-streaming
/// `snapshot.bin`).
fn remove_other_data(dir: &Path, keep: &Path) {
    let _ = std::fs::remove_file(dir.join("snapshot.bin"));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("snapshot-") && name.ends_with(".data") && e.path() != keep {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The data of snapshot `k` of the member in `dir`: packed now, streaming, unless it
/// already is. Runs without the replica's lock (the files' first bytes do not change; a
/// report may be newer than the snapshot, which the entries after it write again anyway).
fn data_of(dir: &Path, k: &Kept) -> anyhow::Result<PathBuf> {
    let path = data_path(dir, &k.meta.snapshot_id);
    if path.exists() {
        return Ok(path);
    }
    let tmp = dir.join(format!(".snapshot-{}.tmp", k.meta.snapshot_id));
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    files::pack_to(
        &dir.join("primes.txt"),
        (k.primes_len, k.ledger_len),
        &dir.join("output"),
        &mut w,
    )?;
    let file = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {}", tmp.display(), e.error()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {}", tmp.display()))?;
    remove_other_data(dir, &path);
    Ok(path)
}

/// Copies the files under `from` (hidden ones skipped) to the same names under `to`, each
/// atomically (reports: small); how many.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    files::for_each_report(from, &mut |name, src| {
        let dst = to.join(name);
        let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        proto::files::write_atomic(&dst, &bytes, false)
            .with_context(|| format!("writing {}", dst.display()))?;
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// The folder beside the root primes file `root_primes` where an import's files are linked
/// (`primes.txt.import/`).
pub fn import_dir(root_primes: &Path) -> PathBuf {
    let mut s = root_primes.as_os_str().to_owned();
    s.push(".import");
    PathBuf::from(s)
}

/// Records a snapshot: the files as they were made durable when asked (see `Kept`).
pub struct Builder {
    replica: Replica,
    applied: Option<LogId>,
    membership: StoredMembership<u64, Member>,
    lens: anyhow::Result<(u64, u64)>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (primes_len, ledger_len) =
            std::mem::replace(&mut self.lens, Ok((0, 0))).map_err(sm_err)?;
        let id = match self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, rand::random::<u32>()),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let kept = Kept {
            meta: SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
                snapshot_id: id,
            },
            primes_len,
            ledger_len,
        };
        let replica = self.replica.clone();
        let path = tokio::task::block_in_place(|| {
            let g = lock(&replica.inner);
            g.save_kept(&kept)?;
            Ok::<_, anyhow::Error>(g.dir.join(KEPT))
        })
        .map_err(sm_err)?;
        info!(index = ?kept.meta.last_log_id.map(|l| l.index), primes_len, "state-machine snapshot recorded");
        // openraft keeps only the meta of a snapshot it built; the data is read through
        // get_current_snapshot when a peer needs it.
        let file = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))
            .map_err(sm_err)?;
        Ok(Snapshot {
            meta: kept.meta,
            snapshot: Box::new(file),
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
        let (inner, view) = (self.inner.clone(), self.view.clone());
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
                *lock(&view) = g.view();
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
        let mut g = lock(&self.inner);
        // Durable first: the log up to this snapshot may be purged once it is built.
        let lens = tokio::task::block_in_place(|| g.make_durable())
            .map(|()| (g.primes.bytes(), g.primes.ledger_bytes()));
        Builder {
            replica: self.clone(),
            applied: g.applied.applied,
            membership: g.applied.membership.clone(),
            lens,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<u64>> {
        let path = lock(&self.inner).dir.join(RECEIVING);
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .with_context(|| format!("creating {}", path.display()))
            .map_err(sm_err)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<u64>> {
        snapshot
            .sync_all()
            .await
            .context("syncing a received snapshot")
            .map_err(sm_err)?;
        drop(snapshot);
        let (inner, view) = (self.inner.clone(), self.view.clone());
        let meta = meta.clone();
        tokio::task::block_in_place(move || {
            let mut g = lock(&inner);
            let received = g.dir.join(RECEIVING);
            let file = std::fs::File::open(&received)
                .with_context(|| format!("opening {}", received.display()))?;
            let (primes, output) = g.paths();
            files::unpack_from(
                &mut std::io::BufReader::with_capacity(1 << 20, file),
                &primes,
                &output,
            )?;
            g.primes = PrimesFile::open(&primes)?;
            g.primes.set_sync(false);
            g.applied = Applied {
                applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            g.make_durable()?;
            *lock(&view) = g.view();
            let data = data_path(&g.dir, &meta.snapshot_id);
            std::fs::rename(&received, &data)
                .with_context(|| format!("renaming {}", received.display()))?;
            remove_other_data(&g.dir, &data);
            let kept = Kept {
                meta: meta.clone(),
                primes_len: g.primes.bytes(),
                ledger_len: g.primes.ledger_bytes(),
            };
            g.save_kept(&kept)?;
            let dir = g.dir.clone();
            if let Err(e) = g.mirror.relink(&dir) {
                warn!(
                    error = format!("{e:#}"),
                    "stopped keeping the root files after installing a snapshot"
                );
            }
            info!(index = ?meta.last_log_id.map(|l| l.index), primes = g.primes.len(), "installed a snapshot from the leader");
            Ok::<_, anyhow::Error>(())
        })
        .map_err(sm_err)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let inner = self.inner.clone();
        let found = tokio::task::block_in_place(move || {
            let (dir, kept) = {
                let g = lock(&inner);
                (g.dir.clone(), g.read_kept()?)
            };
            let Some(kept) = kept else {
                return Ok(None);
            };
            let data = data_of(&dir, &kept)?;
            Ok::<_, anyhow::Error>(Some((kept.meta, data)))
        })
        .map_err(sm_err)?;
        let Some((meta, data)) = found else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(&data)
            .await
            .with_context(|| format!("opening {}", data.display()))
            .map_err(sm_err)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

/// Writes `text` to `path` atomically unless it already holds it; true if it wrote.
fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<bool> {
    if std::fs::read(path).is_ok_and(|b| b == text.as_bytes()) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    proto::files::write_atomic(path, text.as_bytes(), true)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
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

    fn open_in(dir: &Path) -> Replica {
        Replica::open(
            &dir.join("member"),
            &dir.join("primes.txt"),
            &dir.join("output"),
            &dir.join("jobs"),
        )
        .expect("open")
    }

    fn part(name: &str, offset: u64, data: &str, last: bool) -> Command {
        Command::SnapshotPart {
            name: name.into(),
            offset,
            data: data.into(),
            last,
            keep: 2,
        }
    }

    fn snapshot_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("member/snapshots"))
            .expect("snapshots folder")
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        v.sort();
        v
    }

    #[test]
    /// Snapshot pieces make the whole file only at the last piece; pieces applied again
    /// (a crash) change nothing; the newest `keep` are kept; a bad name is refused.
    fn snapshot_pieces_assemble_once_and_prune() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = open_in(dir.path());
        let names = [
            "snapshot_000001_20261206T000001.000Z.json",
            "snapshot_000002_20261206T000031.000Z.json",
            "snapshot_000003_20261206T000101.000Z.json",
        ];
        let first = [
            part(names[0], 0, "{\"seq\":", false),
            part(names[0], 7, "1}", true),
        ];
        for e in first.iter().cloned() {
            lock(&r.inner).apply_one(e).expect("apply");
        }
        let file = dir.path().join("member/snapshots").join(names[0]);
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "{\"seq\":1}");
        // Applied again after a crash: the finished file stays as it is.
        for e in first.iter().cloned() {
            lock(&r.inner).apply_one(e).expect("apply again");
        }
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "{\"seq\":1}");
        assert_eq!(snapshot_names(dir.path()), [names[0]]);
        // Half a snapshot is not one: hidden until its last piece.
        lock(&r.inner)
            .apply_one(part(names[1], 0, "{\"seq\":", false))
            .expect("apply");
        assert_eq!(
            snapshot_names(dir.path()),
            [".".to_string() + names[1] + ".part", names[0].to_string()]
        );
        lock(&r.inner)
            .apply_one(part(names[1], 7, "2}", true))
            .expect("apply");
        lock(&r.inner)
            .apply_one(part(names[2], 0, "{\"seq\":3}", true))
            .expect("apply");
        assert_eq!(
            snapshot_names(dir.path()),
            [names[1], names[2]],
            "keep 2: the oldest pruned"
        );
        // A name that could leave the folder is not written (and does not stop the apply).
        lock(&r.inner)
            .apply_one(part("../escape.json", 0, "x", true))
            .expect("apply goes on");
        assert!(!dir.path().join("member/escape.json").exists());
        assert!(!dir.path().join("escape.json").exists());
    }

    #[test]
    /// A submitted job is kept in the member's jobs/ (checked again at apply); a bad one is
    /// not written.
    fn submitted_jobs_kept_by_every_member() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = open_in(dir.path());
        lock(&r.inner)
            .apply_one(Command::SubmitJob {
                name: "big".into(),
                line: " primes 1 1000 ".into(),
            })
            .expect("apply");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("member/jobs/big.job")).expect("read"),
            "primes 1 1000\n"
        );
        lock(&r.inner)
            .apply_one(Command::SubmitJob {
                name: "../bad".into(),
                line: "primes 1 1000".into(),
            })
            .expect("apply goes on");
        lock(&r.inner)
            .apply_one(Command::SubmitJob {
                name: "empty".into(),
                line: "primes 9 1".into(),
            })
            .expect("apply goes on");
        let mut jobs: Vec<String> = std::fs::read_dir(dir.path().join("member/jobs"))
            .expect("jobs")
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        jobs.sort();
        assert_eq!(jobs, ["big.job"]);
        assert!(!dir.path().join("member/bad.job").exists());
    }
}
