//! Chandy–Lamport snapshots of the coordinator and its workers: the snapshot protocol as a
//! state machine without I/O (driven by [`crate::machine::Coordinator`]), the snapshot
//! files, and reading them back for recovery.
//!
//! The coordinator records its state and queues a marker to every connected worker in one
//! critical section (the same lock that orders all its decisions and sends), then records
//! every message each worker sends until that worker's marker comes back. A worker records
//! its state when the marker arrives and returns the marker (with the state) on its channel.
//! A worker that disconnects or does not answer within the timeout is noted, and its tasks
//! count as queued. The snapshot is written atomically; the newest N are kept.
//!
//! Recovery loads the newest readable snapshot: chunks it shows finished (done, flushing, or
//! completed by a `task_done` recorded in a channel) are not redone, and the primes it holds
//! (the flush buffer and the recorded `primes` messages) are flushed first.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use proto::msg::{CoordMsg, WorkerMsg, WorkerState};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::core::{CoordState, Now};

#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    pub dir: PathBuf,
    /// 0 disables periodic snapshots (the final one at shutdown is still taken).
    pub interval_ms: u64,
    pub keep: usize,
    /// How long to wait for a worker's marker before noting it as unresponsive.
    pub marker_timeout_ms: u64,
}

/// One snapshot file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub seq: u64,
    pub started_at: String,
    pub completed_at: String,
    pub coordinator: CoordState,
    /// Per worker that was connected: its recorded state, or why there is none.
    pub workers: BTreeMap<String, WorkerEntry>,
    /// Messages each worker sent after the coordinator recorded its state and before that
    /// worker's marker: the state of the channel worker -> coordinator.
    pub channels: BTreeMap<String, Vec<WorkerMsg>>,
    /// In a coordinator group: the leader's term and the log index applied when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<SnapshotGroup>,
}

/// Where in a group's history a snapshot was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotGroup {
    pub term: u64,
    pub commit_index: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum WorkerEntry {
    Recorded {
        state: WorkerState,
    },
    /// Disconnected before its marker came back; its tasks count as queued.
    Dead,
    /// Did not answer within the timeout; its tasks count as queued.
    Unresponsive,
}

/// Summary of the last snapshot, for status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub seq: u64,
    pub path: String,
    pub completed_at: String,
    pub bytes: u64,
    pub write_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Active {
    snap: Snapshot,
    started_ms: u64,
    /// conn -> worker whose marker we still wait for.
    waiting: HashMap<u64, String>,
    /// Attempts assigned in the recorded state: a result of any other attempt arriving
    /// before a marker is stale (taken back, or from a worker declared dead), carries no
    /// state, and is not recorded.
    #[serde(default, skip)]
    assigned: std::collections::HashSet<String>,
}

/// The snapshot protocol's state: the snapshot being taken, if any, and the last written.
#[derive(Serialize, Deserialize)]
pub struct Snapshots {
    marker_timeout_ms: u64,
    next_seq: u64,
    active: Option<Active>,
    last: Option<SnapshotInfo>,
}

fn seq_of(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot_")?
        .split('_')
        .next()?
        .parse()
        .ok()
}

/// Snapshot files in `dir`, newest first.
pub fn list_snapshots(dir: &std::path::Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if !name.ends_with(".json") {
                return None;
            }
            Some((seq_of(&name)?, e.path()))
        })
        .collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.0));
    v
}

impl Snapshots {
    /// A protocol whose next snapshot is number `next_seq` (one past the newest on disk).
    pub fn new(marker_timeout_ms: u64, next_seq: u64) -> Self {
        Snapshots {
            marker_timeout_ms,
            next_seq: next_seq.max(1),
            active: None,
            last: None,
        }
    }

    pub fn last(&self) -> Option<SnapshotInfo> {
        self.last.clone()
    }

    /// The last snapshot on disk at start-up (a previous run's or another leader's), for
    /// status until this run writes one.
    pub fn set_last(&mut self, info: SnapshotInfo) {
        self.last = Some(info);
    }

    /// The snapshot file `info` was written.
    pub fn written(&mut self, info: SnapshotInfo) {
        self.last = Some(info);
    }

    /// The number the next snapshot will have.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The number of the snapshot being taken, if one is.
    pub fn in_progress(&self) -> Option<u64> {
        self.active.as_ref().map(|a| a.snap.seq)
    }

    /// Starts a snapshot of `state` (the coordinator's, recorded now) and returns the
    /// markers to send, or `None` if one is being taken. The caller MUST queue the markers
    /// before anything else is sent on those connections.
    pub fn begin(
        &mut self,
        state: CoordState,
        conns: Vec<(u64, String)>,
        now: Now,
    ) -> Option<Vec<(u64, CoordMsg)>> {
        if self.active.is_some() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut waiting = HashMap::new();
        let mut markers = Vec::new();
        let mut channels = BTreeMap::new();
        for (conn, worker) in conns {
            markers.push((conn, CoordMsg::Marker { snapshot: seq }));
            channels.insert(worker.clone(), Vec::new());
            waiting.insert(conn, worker);
        }
        let assigned = state
            .files
            .iter()
            .flat_map(|f| &f.chunks)
            .filter_map(|c| match c {
                crate::core::ChunkState::Assigned { attempt, .. } => Some(attempt.clone()),
                _ => None,
            })
            .collect();
        self.active = Some(Active {
            assigned,
            snap: Snapshot {
                seq,
                started_at: now.wall.to_rfc3339(),
                completed_at: String::new(),
                coordinator: state,
                workers: BTreeMap::new(),
                channels,
                group: None,
            },
            started_ms: now.ms,
            waiting,
        });
        Some(markers)
    }

    /// Records a message from `conn` if its channel is being recorded.
    pub fn record_channel(&mut self, conn: u64, m: &WorkerMsg) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let Some(worker) = a.waiting.get(&conn) else {
            return;
        };
        if matches!(m, WorkerMsg::Heartbeat { .. }) {
            return; // carries no task
        }
        let attempt = match m {
            WorkerMsg::Primes { attempt, .. } | WorkerMsg::TaskFailed { attempt, .. } => {
                Some(attempt)
            }
            WorkerMsg::TaskDone(d) => Some(&d.attempt),
            _ => None,
        };
        // (Empty after a deserialized machine: then everything is recorded, as before.)
        if attempt.is_some_and(|x| !a.assigned.is_empty() && !a.assigned.contains(x)) {
            return;
        }
        if let Some(ch) = a.snap.channels.get_mut(worker) {
            ch.push(m.clone());
        }
    }

    /// A marker came back; returns the finished snapshot if it was the last one awaited.
    pub fn marker_returned(
        &mut self,
        conn: u64,
        seq: u64,
        state: WorkerState,
        now: Now,
    ) -> Option<Snapshot> {
        let a = self.active.as_mut()?;
        if a.snap.seq != seq {
            return None;
        }
        let worker = a.waiting.remove(&conn)?;
        a.snap
            .workers
            .insert(worker, WorkerEntry::Recorded { state });
        self.finish_if_complete(now)
    }

    /// A connection closed; if we waited for its marker, the worker is noted dead.
    pub fn worker_gone(&mut self, conn: u64, now: Now) -> Option<Snapshot> {
        let a = self.active.as_mut()?;
        let worker = a.waiting.remove(&conn)?;
        a.snap.workers.insert(worker, WorkerEntry::Dead);
        self.finish_if_complete(now)
    }

    /// Gives up on markers that took longer than the marker timeout.
    pub fn check_timeout(&mut self, now: Now) -> Option<Snapshot> {
        let a = self.active.as_ref()?;
        if now.ms.saturating_sub(a.started_ms) < self.marker_timeout_ms {
            return None;
        }
        self.give_up(now)
    }

    /// Gives up on every marker still awaited now (a stopping coordinator cannot wait the
    /// whole timeout): those workers are noted unresponsive.
    pub fn give_up(&mut self, now: Now) -> Option<Snapshot> {
        let a = self.active.as_mut()?;
        for (_, worker) in a.waiting.drain() {
            a.snap.workers.insert(worker, WorkerEntry::Unresponsive);
        }
        self.finish_if_complete(now)
    }

    /// The snapshot, once no marker is awaited (at once when no worker was connected).
    pub fn finish_if_complete(&mut self, now: Now) -> Option<Snapshot> {
        if self.active.as_ref()?.waiting.is_empty() {
            let mut a = self.active.take()?;
            a.snap.completed_at = now.wall.to_rfc3339();
            return Some(a.snap);
        }
        None
    }
}

/// Where a snapshot is written: `snapshot_<seq>_<completed time>.json` in `dir`.
pub fn snapshot_path(dir: &Path, snap: &Snapshot) -> PathBuf {
    let stamp = chrono::DateTime::parse_from_rfc3339(&snap.completed_at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now())
        .format("%Y%m%dT%H%M%S%.3fZ");
    dir.join(format!("snapshot_{:06}_{stamp}.json", snap.seq))
}

/// Writes `snap` atomically and durably into `dir` and deletes all but the newest `keep`.
/// Returns the path and the size written.
pub fn write_snapshot_file(
    dir: &Path,
    keep: usize,
    snap: &Snapshot,
) -> anyhow::Result<(PathBuf, u64)> {
    let path = snapshot_path(dir, snap);
    let bytes = serde_json::to_vec_pretty(snap).context("encoding snapshot")?;
    proto::files::write_atomic(&path, &bytes, true)
        .with_context(|| format!("writing {}", path.display()))?;
    for (_, old) in list_snapshots(dir).into_iter().skip(keep.max(1)) {
        let _ = std::fs::remove_file(old);
    }
    Ok((path, bytes.len() as u64))
}

/// The newest readable snapshot in `dir` (unreadable ones are skipped with a warning).
pub fn newest_snapshot(dir: &Path) -> Option<Snapshot> {
    list_snapshots(dir).into_iter().find_map(|(_, p)| {
        let bytes = std::fs::read(&p).ok()?;
        match serde_json::from_slice::<Snapshot>(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(path = %p.display(), error = %e, "skipping unreadable snapshot");
                None
            }
        }
    })
}
