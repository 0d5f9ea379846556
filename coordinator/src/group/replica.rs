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
//!
//! Its rooms: this file holds the replica and applies entries; `snapshot` keeps, packs,
//! builds and installs state-machine snapshots; `import` takes in the root files of
//! another group; `raft` is openraft's `RaftStateMachine` over it; `tests` its unit tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use openraft::{StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::batch::{self, Held};
use super::log::blocking;
use super::mirror::Mirror;
use super::pace::{self, Pace};
use super::{Command, LogId, Member, Outcome};
use crate::primes::PrimesFile;
use crate::ranges::Finished;
use crate::state::lock;

mod import;
mod raft;
mod snapshot;
#[cfg(test)]
mod tests;

pub use import::import_dir;
pub use snapshot::Builder;

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
    /// Range primes of the batches this process proposed, until they apply (shared with
    /// [`Replica`]: the proposer holds them without waiting for an apply).
    held: Arc<Mutex<Held>>,
    /// Where the proposer of an import put the root files it imports.
    import_dir: PathBuf,
    /// Whether what this member regenerates is applied at idle priority ([`pace`]).
    pace: Pace,
    /// Report files a `--fresh` start cleared, written over by new reports.
    spares: Arc<crate::spare::Spares>,
}

/// One replica's state machine; clones share it.
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Mutex<State>>,
    /// What the async side reads ([`Replica::results_view`], [`Replica::leads_root`],
    /// [`Replica::counts`]), behind a lock of its own: an apply holds `inner` for as long as
    /// it writes (thousands of reports, a follower's regeneration at idle priority), and a
    /// task on a runtime thread must never wait for it. With two cores the runtime has two
    /// threads: two tasks waiting on `inner` stopped every timer of the process, the
    /// leader's heartbeats and lease checks too (a status file seconds old).
    view: Arc<Mutex<View>>,
    held: Arc<Mutex<Held>>,
    pace: Pace,
    dir: PathBuf,
}

/// What the async side reads: the last applied index, the length the primes file had then
/// (whole lines), its counts, and whether this member keeps the root files.
#[derive(Clone, Copy, Default)]
struct View {
    applied: u64,
    primes_bytes: u64,
    total: u64,
    in_set: u64,
    leads_root: bool,
}

impl State {
    fn view(&self) -> View {
        View {
            applied: self.applied.applied.map_or(0, |l| l.index),
            primes_bytes: self.primes.bytes(),
            total: self.primes.len() as u64,
            in_set: self.primes.in_set() as u64,
            leads_root: self.mirror.term().is_some(),
        }
    }
}

/// Whether entry `cmd`, logged at `at`, is refused: a flush's entry proposed by a leader of
/// one term that reached the log in another. The leader proposes its next flush before the
/// last applies; entries of one term commit in order, so one of them committed means every
/// earlier one of that leader did, but an entry proposed while its leader had just lost the
/// lead can reach the log later, in a term it leads again, after one that never did: that
/// entry must not apply (a segment's primes would be written with a gap). Decided from the
/// log alone, so every member refuses the same entries.
fn refused(cmd: &Command, at: LogId) -> Option<Outcome> {
    match cmd {
        Command::Batch(b) => {
            b.term
                .filter(|&t| t != at.leader_id.term)
                .map(|proposed| Outcome::Refused {
                    proposed,
                    logged: at.leader_id.term,
                })
        }
        _ => None,
    }
}

/// The cores this process may use (1 if unknown).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
            held: Arc::default(),
            import_dir: import_dir(root_primes),
            pace: Pace::default(),
            spares: crate::spare::Spares::none(),
        };
        Ok(Replica {
            view: Arc::new(Mutex::new(state.view())),
            held: state.held.clone(),
            pace: state.pace.clone(),
            inner: Arc::new(Mutex::new(state)),
            dir: dir.to_path_buf(),
        })
    }

    /// Writes its reports over the spare report files of `spares` while they last
    /// ([`crate::spare`]).
    pub fn with_spares(self, spares: Arc<crate::spare::Spares>) -> Self {
        lock(&self.inner).spares = spares;
        self
    }

    /// The finished generation tasks and the primes counts (total, in the dedup set), for a
    /// leader starting its coordinator.
    pub fn ledger(&self) -> (Vec<Finished>, u64, u64) {
        blocking(|| {
            let g = lock(&self.inner);
            (
                g.primes.finished.clone(),
                g.primes.len() as u64,
                g.primes.in_set() as u64,
            )
        })
    }

    /// The primes counts (total, in the dedup set) after the last entry applied. Never waits
    /// for an apply in progress.
    pub fn counts(&self) -> (u64, u64) {
        let v = *lock(&self.view);
        (v.total, v.in_set)
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
        self.pace.clone()
    }

    /// Holds the range primes of batch `id` (about to be proposed) for its apply here.
    pub fn hold(&self, id: u64, runs: Vec<crate::ranges::Run>) {
        lock(&self.held).hold(id, runs);
    }

    /// Takes back the runs held for batch `id` (not committed); None if an apply took them.
    pub fn take_batch(&self, id: u64) -> Option<Vec<crate::ranges::Run>> {
        lock(&self.held).take(id)
    }

    /// Takes the root files for `term` of group `group` (see [`Mirror`]), and puts the
    /// submitted jobs not yet reported into the jobs folder.
    pub fn lead(&self, term: u64, group: &str) -> anyhow::Result<()> {
        blocking(|| {
            let mut g = lock(&self.inner);
            let dir = g.dir.clone();
            let r = g.mirror.activate(term, group, &dir).and_then(|()| {
                let placed = g.place_submitted_jobs()?;
                if placed > 0 {
                    info!(placed, "submitted jobs put into the jobs folder");
                }
                Ok(())
            });
            *lock(&self.view) = g.view();
            r
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
        blocking(|| lock(&self.inner).is_empty())
    }

    /// True while this member keeps the root files (a failed copy or a newer fence ends it),
    /// as of the last entry applied. Never waits for an apply in progress.
    pub fn leads_root(&self) -> bool {
        lock(&self.view).leads_root
    }

    /// Ok while this member keeps the root files under a fence that still names it. Waits
    /// for an apply in progress: call it from a blocking thread.
    pub fn holds_root_fence(&self) -> anyhow::Result<()> {
        lock(&self.inner).mirror.holds_fence()
    }

    /// Stops copying to the root files (after the apply in progress, if any).
    pub fn step_down(&self) {
        blocking(|| {
            let mut g = lock(&self.inner);
            g.mirror.deactivate();
            *lock(&self.view) = g.view();
        });
        // Primes of flushes this leader proposed that will not apply here as proposed (a
        // truncated or refused entry) would otherwise stay held for good.
        lock(&self.held).clear();
    }

    /// Syncs the files and records what was applied (a clean stop: nothing to re-apply).
    pub fn close(&self) -> anyhow::Result<()> {
        blocking(|| lock(&self.inner).make_durable())
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
    /// files, in the coordinator's jobs folder. A job of that name kept with another line
    /// is replaced only if `replace`; else nothing changes and the inner error says why
    /// (the same on every member: it depends on the jobs the log kept before).
    fn submit_job(
        &mut self,
        name: &str,
        line: &str,
        replace: bool,
    ) -> anyhow::Result<Result<(), String>> {
        crate::jobs::check_submission(name, line).map_err(|e| anyhow::anyhow!(e))?;
        let file = format!("{name}.job");
        let text = format!("{}\n", line.trim());
        let own = self.dir.join("jobs").join(&file);
        if !replace {
            let taken = crate::jobs::taken_otherwise(&own, name, line, "was submitted before")
                .with_context(|| format!("reading {}", own.display()))?;
            if let Some(why) = taken {
                return Ok(Err(why));
            }
        }
        write_if_changed(&own, &text)?;
        if self.mirror.term().is_some() {
            write_if_changed(&self.mirror.jobs_dir().join(&file), &text)?;
        }
        Ok(Ok(()))
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
                let held = lock(&self.held).take(b.id);
                let primes = &mut self.primes;
                // The ledger a leader starting here takes is kept up to date by append (a
                // task applied twice is recorded once).
                let new = match held {
                    Some(runs) => primes.append(&b.small, &b.big, &runs, &b.finished)?,
                    None if b.pieces.is_empty() => {
                        primes.append(&b.small, &b.big, &[], &b.finished)?
                    }
                    None => {
                        let lowly = self.pace.lowly();
                        let mut apply = move || {
                            // Behind at idle priority, one thread is enough; a member that must
                            // apply before it serves (a new leader) uses every core: its workers
                            // are waiting, and idle.
                            let threads = if lowly { 1 } else { cores() };
                            let (runs, wrong) = batch::regenerate_on(
                                &b.pieces,
                                threads,
                                worker::gen::sieve::primes_in,
                            );
                            for w in wrong {
                                tracing::error!(
                                    problem = w,
                                    "a range's primes as the leader had them differ from this member's sieve: the sieve's are written"
                                );
                            }
                            primes.append(&b.small, &b.big, &runs, &b.finished)
                        };
                        let since = std::time::Instant::now();
                        let new = if lowly {
                            pace::run_lowly(apply)?
                        } else {
                            apply()?
                        };
                        tracing::debug!(
                            lowly,
                            new,
                            ms = since.elapsed().as_millis() as u64,
                            "regenerated and applied a batch"
                        );
                        new
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
            Command::SubmitJob {
                name,
                line,
                replace,
            } => match self.submit_job(&name, &line, replace) {
                Ok(kept) => Outcome::Submitted(kept),
                Err(e) => {
                    warn!(
                        job = name,
                        error = format!("{e:#}"),
                        "cannot keep a submitted job"
                    );
                    Outcome::Submitted(Err(format!("cannot keep it: {e:#}")))
                }
            },
            Command::JobReportValue { report, value } => {
                let mut r = *report;
                r.value = value;
                self.job_report(r)
            }
            Command::Reports(reports) => {
                crate::crash::slow("apply-reports");
                // The root reports follow the root primes (a report means its primes are in).
                self.follow();
                let mut results = Vec::with_capacity(reports.len());
                let mut written = Vec::with_capacity(reports.len());
                for r in &reports {
                    // The leader checked the jobs' names before proposing: apply depends on
                    // the log alone.
                    let res = crate::report::write_report_only(&output, r, &self.spares)
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
