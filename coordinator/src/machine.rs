//! The whole coordinator as one state machine without I/O: the scheduling core
//! ([`crate::core`]) and the snapshot protocol ([`crate::snapshot`]) behind one
//! [`Coordinator::handle`] that takes an [`Event`] and the time and returns the [`Action`]s
//! to perform. The async shell ([`crate::state`]) owns the machine under one lock, feeds it
//! what happens (messages, timers, results of its I/O) and performs the actions; it
//! decides nothing itself.

use std::collections::HashMap;

use proto::msg::{CoordMsg, TaskDone, WorkerMsg};
use tracing::{debug, info};

use crate::core::{self, ChunkKey, ChunkState, Core, Fingerprint, FlushBatch, Key, Now, Report};
use crate::inputs::ScanOutcome;
use crate::snapshot::{Snapshot, SnapshotInfo, Snapshots};

/// Something that happened, for the machine to decide on. Serializable so the seeded
/// simulation (`machine/sim_tests.rs`) can record every event and replay it through JSON
/// into a fresh machine, which must decide the same (the group's log carries durable
/// results, not these events).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// A connection authenticated and registered as `worker_id`.
    Register {
        conn: u64,
        worker_id: String,
        threads: u32,
        instance: u64,
    },
    /// A message from a registered connection (snapshot markers included).
    Message { conn: u64, msg: WorkerMsg },
    /// A worker connection closed.
    Disconnected { conn: u64 },
    /// The periodic timer ([`Core::tick_period_ms`]): failure detection, retries, marker
    /// timeouts.
    Tick,
    /// The input folder changed: files newly stable, files gone.
    Inputs(ScanOutcome),
    /// Done reports found for inputs the file server listed only after start-up (its first
    /// listing came late): nothing to queue for them.
    ReportsFound(Vec<core::FoundReport>),
    /// The jobs folder changed: job files newly stable (with what they ask for, or why they
    /// cannot run), job files gone (by job name).
    Jobs {
        ready: Vec<(String, Fingerprint, Result<core::GenJob, String>)>,
        removed: Vec<String>,
    },
    /// Time to flush: the machine hands over what waits in its buffer ([`Action::Flush`]).
    FlushDue,
    /// The flusher made the oldest flush under way durable, with these chunks' primes.
    /// (Up to two are under way; each is answered, in the order taken, by this or
    /// [`Event::FlushFailed`].)
    Flushed(Vec<ChunkKey>),
    /// The flusher could not make the oldest flush under way durable; its primes and
    /// completions go back to the buffer (behind any handed back before it).
    FlushFailed(FlushBatch),
    /// A report was written (of the file or job `key`, written `file` as when only files
    /// had reports).
    ReportWritten {
        #[serde(rename = "file")]
        key: Key,
        source: Fingerprint,
    },
    /// A report could not be written.
    ReportFailed {
        #[serde(rename = "file")]
        key: Key,
        source: Fingerprint,
        reason: String,
    },
    /// Time for a snapshot (periodic, or the final one at shutdown).
    SnapshotDue,
    /// Stop waiting for markers now (a stopping coordinator).
    SnapshotDeadline,
    /// A snapshot file was written.
    SnapshotWritten(SnapshotInfo),
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Queue a message on a worker connection (in order, before the lock is released).
    Send(u64, CoordMsg),
    /// Send an error and close a worker connection.
    Close(u64, String),
    /// Write a file's report; answer [`Event::ReportWritten`] or [`Event::ReportFailed`].
    WriteReport(Report),
    /// Write a job's report (and a factorial's value); answer [`Event::ReportWritten`] or
    /// [`Event::ReportFailed`] with the job's key.
    WriteJobReport(Box<core::JobReport>),
    /// Append these primes durably, then answer [`Event::Flushed`] with `done` (or
    /// [`Event::FlushFailed`] with everything).
    Flush(FlushBatch),
    /// A chunk finished: flush soon rather than at the next period.
    FlushSoon,
    /// A chunk finished and no other is assigned or queued (the end of a job, of a dropped
    /// file): flush at once, since no completion is coming to share the flush's fsync.
    FlushNow,
    /// Write a finished snapshot; answer [`Event::SnapshotWritten`].
    WriteSnapshot(Box<Snapshot>),
}

impl From<core::Action> for Action {
    fn from(a: core::Action) -> Self {
        match a {
            core::Action::Send(c, m) => Action::Send(c, m),
            core::Action::Close(c, r) => Action::Close(c, r),
            core::Action::WriteReport(r) => Action::WriteReport(r),
            core::Action::WriteJobReport(r) => Action::WriteJobReport(r),
        }
    }
}

fn lift(actions: Vec<core::Action>) -> Vec<Action> {
    actions.into_iter().map(Action::from).collect()
}

/// The coordinator's decisions. Serializable whole: what a replica's state-machine snapshot
/// holds.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Coordinator {
    core: Core,
    snaps: Snapshots,
    /// Primes and completions recovered from a snapshot, flushed first.
    recovered: Option<FlushBatch>,
    /// The plans of the valid job files present at start-up, by key, for recovery.
    job_plans: HashMap<Key, core::GenJob>,
}

impl Coordinator {
    /// The flush batch due now, if any (what was recovered, or handed back by a failed
    /// flush, first): the shell's flusher pulls it, makes it durable, then tells the machine
    /// [`Event::Flushed`] or [`Event::FlushFailed`] (a pull, as raft-rs's `Ready`/`advance`).
    /// [`Event::FlushDue`] does the same as an event, for the simulation's event stream.
    pub fn take_flush(&mut self) -> Option<FlushBatch> {
        let mut batch = self.recovered.take().unwrap_or_default();
        batch.extend(self.core.take_pending());
        if batch.is_empty() {
            return None;
        }
        self.core.flush_taken(batch.run_primes());
        Some(batch)
    }

    pub fn new(core: Core, snaps: Snapshots) -> Self {
        Coordinator {
            core,
            snaps,
            recovered: None,
            job_plans: HashMap::new(),
        }
    }

    /// The scheduling core, for reading (status).
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The scheduling core, for setting up before the first event (start-up).
    pub fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    /// The last snapshot written.
    pub fn last_snapshot(&self) -> Option<SnapshotInfo> {
        self.snaps.last()
    }

    /// The newest snapshot on disk at start-up, for status.
    pub fn set_last_snapshot(&mut self, info: SnapshotInfo) {
        self.snaps.set_last(info);
    }

    /// The number the next snapshot will have.
    pub fn next_snapshot(&self) -> u64 {
        self.snaps.next_seq()
    }

    /// The number of the snapshot being taken, if one is.
    pub fn snapshot_in_progress(&self) -> Option<u64> {
        self.snaps.in_progress()
    }

    /// Decides on `event` at `now`.
    pub fn handle(&mut self, event: Event, now: Now) -> Vec<Action> {
        match event {
            Event::Register {
                conn,
                worker_id,
                threads,
                instance,
            } => lift(
                self.core
                    .register_with_threads(conn, &worker_id, threads, instance, now),
            ),
            Event::Message {
                conn,
                msg: WorkerMsg::Marker { snapshot, state },
            } => self
                .snaps
                .marker_returned(conn, snapshot, state, now)
                .map(|s| vec![Action::WriteSnapshot(Box::new(s))])
                .unwrap_or_default(),
            Event::Message { conn, msg } => {
                self.snaps.record_channel(conn, &msg);
                let finished = matches!(msg, WorkerMsg::TaskDone(_));
                let mut actions = lift(self.core.message(conn, msg, now));
                if finished {
                    actions.push(if self.core.nothing_under_way() {
                        Action::FlushNow
                    } else {
                        Action::FlushSoon
                    });
                }
                actions
            }
            Event::Disconnected { conn } => {
                let mut actions = lift(self.core.disconnected(conn, now));
                if let Some(s) = self.snaps.worker_gone(conn, now) {
                    actions.push(Action::WriteSnapshot(Box::new(s)));
                }
                actions
            }
            Event::Tick => {
                let mut actions = lift(self.core.tick(now));
                if let Some(s) = self.snaps.check_timeout(now) {
                    actions.push(Action::WriteSnapshot(Box::new(s)));
                }
                actions
            }
            Event::Inputs(outcome) => self.inputs(outcome, now),
            Event::ReportsFound(found) => {
                self.core.reports_found(found);
                Vec::new()
            }
            Event::Jobs { ready, removed } => self.jobs(ready, removed, now),
            Event::FlushDue => self.take_flush().map(Action::Flush).into_iter().collect(),
            Event::Flushed(done) => lift(self.core.flushed(done, now)),
            Event::FlushFailed(p) => {
                // Back in front of whatever arrived since (the next take puts the buffer
                // after it); nothing was marked done. Flushes are answered in the order
                // taken, so one handed back earlier (with two under way) is older and
                // stays in front.
                self.core.flush_failed(p.run_primes());
                match &mut self.recovered {
                    Some(r) => r.extend(p),
                    None => self.recovered = Some(p),
                }
                Vec::new()
            }
            Event::ReportWritten { key, source } => {
                self.core.report_written(&key, source);
                Vec::new()
            }
            Event::ReportFailed {
                key,
                source,
                reason,
            } => {
                self.core.report_write_failed(&key, source, reason, now);
                Vec::new()
            }
            Event::SnapshotDue => {
                let conns = self.core.connections();
                let Some(markers) = self.snaps.begin(self.core.record(), conns, now) else {
                    return Vec::new();
                };
                let mut actions: Vec<Action> = markers
                    .into_iter()
                    .map(|(c, m)| Action::Send(c, m))
                    .collect();
                // No worker connected: complete at once.
                if let Some(s) = self.snaps.finish_if_complete(now) {
                    actions.push(Action::WriteSnapshot(Box::new(s)));
                }
                actions
            }
            Event::SnapshotDeadline => self
                .snaps
                .give_up(now)
                .map(|s| vec![Action::WriteSnapshot(Box::new(s))])
                .unwrap_or_default(),
            Event::SnapshotWritten(info) => {
                self.snaps.written(info);
                Vec::new()
            }
        }
    }

    fn jobs(
        &mut self,
        ready: Vec<(String, Fingerprint, Result<core::GenJob, String>)>,
        removed: Vec<String>,
        now: Now,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        for name in removed {
            info!(job = name, "job file removed");
            actions.extend(lift(self.core.job_removed(&name)));
        }
        for (name, fp, job) in ready {
            actions.extend(lift(match job {
                Ok(job) => {
                    info!(
                        job = name,
                        line = job.spec.line(),
                        tasks = job.plan.tasks(),
                        "job queued"
                    );
                    self.core.job_ready(job, fp, now)
                }
                Err(reason) => {
                    info!(job = name, reason, "job file invalid");
                    self.core.job_invalid(&name, fp, reason, now)
                }
            }));
        }
        actions
    }

    fn inputs(&mut self, outcome: ScanOutcome, now: Now) -> Vec<Action> {
        let mut actions = Vec::new();
        for name in &outcome.removed {
            if self.core.in_progress(&Key::file(name.as_str())) {
                info!(file = name, "input removed; dropped from the queue");
            } else {
                info!(file = name, "input removed (its report stays)");
            }
            actions.extend(lift(self.core.file_removed(name)));
        }
        for (name, fp) in &outcome.ready {
            let known = self.core.known(&Key::file(name.as_str()));
            if known == Some(*fp) {
                continue;
            }
            if known.is_some() {
                info!(file = name, size = fp.size, "input changed; queued again");
            } else {
                debug!(file = name, size = fp.size, "input queued");
            }
            actions.extend(lift(self.core.file_ready(name, *fp, now)));
        }
        actions
    }

    /// The valid job files present at start-up (their keys must also be in `current` for
    /// [`Coordinator::recover`], with their fingerprints): a job the snapshot shows in
    /// progress resumes with this plan.
    pub fn set_job_plans(&mut self, plans: HashMap<Key, core::GenJob>) {
        self.job_plans = plans;
    }

    /// Recovery from `snap`, the newest snapshot, after the files with a `done` report were
    /// marked done: a file it shows in progress whose input still has the same fingerprint
    /// (`current`) resumes, its finished chunks (done, flushing, or completed by a
    /// `task_done` recorded in a channel) not redone. The primes it holds (the flush buffer
    /// and the recorded `primes` messages) are flushed first, before those chunks are
    /// marked done. Returns how many files resumed.
    pub fn recover(
        &mut self,
        snap: &Snapshot,
        current: &HashMap<Key, Fingerprint>,
        now: Now,
    ) -> usize {
        let mut pending = FlushBatch::default();
        pending.small.extend(&snap.coordinator.pending_small);
        pending
            .big
            .extend(snap.coordinator.pending_big.iter().cloned());
        // Results recorded in channels, by attempt.
        let mut channel_done: HashMap<String, (TaskDone, String)> = HashMap::new();
        for (worker, msgs) in &snap.channels {
            for m in msgs {
                match m {
                    WorkerMsg::Primes { small, big, .. } => {
                        pending.small.extend(small);
                        pending.big.extend(big.iter().cloned());
                    }
                    WorkerMsg::TaskDone(d) => {
                        channel_done.insert(d.attempt.clone(), (d.clone(), worker.clone()));
                    }
                    _ => {}
                }
            }
        }
        let mut resumed = 0;
        for f in &snap.coordinator.files {
            // A file already known has a done report; a file changed since starts over.
            if self.core.known(&f.key).is_some() || current.get(&f.key) != Some(&f.fingerprint) {
                continue;
            }
            let plan = self.job_plans.get(&f.key);
            // A task whose results the ledger shows durable is finished too.
            let ledger = |t: usize| {
                let w = plan?.plan.recorded_work(t as u32)?;
                self.core.done_work(&w)
            };
            let finished: Vec<Option<(TaskDone, String)>> = f
                .chunks
                .iter()
                .enumerate()
                .map(|(t, c)| match c {
                    ChunkState::Done { result, worker }
                    | ChunkState::Flushing { result, worker } => {
                        Some((result.clone(), worker.clone()))
                    }
                    ChunkState::Assigned { attempt, .. } => {
                        channel_done.get(attempt).cloned().or_else(|| ledger(t))
                    }
                    _ => ledger(t),
                })
                .collect();
            if f.key.is_job() && plan.is_none_or(|p| p.plan.tasks() != f.chunks.len()) {
                continue;
            }
            // Finished tasks the ledger lacks are recorded once their results (recovered
            // here, or flushed before the crash) are durable.
            for (t, f) in finished.iter().enumerate() {
                let work = plan.and_then(|p| p.plan.recorded_work(t as u32));
                if let (Some(work), Some((result, worker))) = (work, f) {
                    if self.core.done_work(&work).is_none() {
                        pending.finished.push(crate::ranges::Finished {
                            work,
                            worker: worker.clone(),
                            result: result.clone(),
                        });
                    }
                }
            }
            pending.done.extend(self.core.restore_entry(
                &f.key,
                f.fingerprint,
                finished,
                f.started_at,
                now,
            ));
            if let Some(p) = plan {
                self.core.attach_plan(&f.key, p.clone());
            }
            resumed += 1;
        }
        self.recovered = Some(pending);
        resumed
    }

    /// Primes recovered and not yet handed to the flusher (for start-up logs).
    pub fn recovered_primes(&self) -> usize {
        self.recovered
            .as_ref()
            .map_or(0, |p| p.small.len() + p.big.len())
    }
}

#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;
