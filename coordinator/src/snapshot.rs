//! Chandy–Lamport snapshots of the coordinator and its workers, and recovery from them.
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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proto::msg::{CoordMsg, TaskDone, WorkerMsg, WorkerState};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::core::{ChunkState, CoordState, Core, Now, Pending};
use crate::report::write_atomic;
use crate::server::Shared;

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

struct Active {
    snap: Snapshot,
    started_ms: u64,
    /// conn -> worker whose marker we still wait for.
    waiting: HashMap<u64, String>,
}

pub struct Snapshots {
    cfg: SnapshotConfig,
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
    pub fn open(cfg: SnapshotConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&cfg.dir)
            .with_context(|| format!("creating {}", cfg.dir.display()))?;
        let next_seq = list_snapshots(&cfg.dir).first().map_or(1, |(s, _)| s + 1);
        Ok(Snapshots {
            cfg,
            next_seq,
            active: None,
            last: None,
        })
    }

    pub fn last(&self) -> Option<SnapshotInfo> {
        self.last.clone()
    }

    /// Starts a snapshot: records the core and returns the markers to send. The caller MUST
    /// hold the core lock and queue the markers before releasing it.
    pub fn begin(
        &mut self,
        core: &Core,
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
        self.active = Some(Active {
            snap: Snapshot {
                seq,
                started_at: now.wall.to_rfc3339(),
                completed_at: String::new(),
                coordinator: core.record(),
                workers: BTreeMap::new(),
                channels,
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
        if let Some(ch) = a.snap.channels.get_mut(worker) {
            ch.push(m.clone());
        }
    }

    /// A marker came back; returns the finished snapshot if it was the last one awaited.
    pub fn marker_returned(&mut self, conn: u64, seq: u64, state: WorkerState) -> Option<Snapshot> {
        let a = self.active.as_mut()?;
        if a.snap.seq != seq {
            return None;
        }
        let worker = a.waiting.remove(&conn)?;
        a.snap
            .workers
            .insert(worker, WorkerEntry::Recorded { state });
        self.finish_if_complete()
    }

    /// A connection closed; if we waited for its marker, the worker is noted dead.
    pub fn worker_gone(&mut self, conn: u64) -> Option<Snapshot> {
        let a = self.active.as_mut()?;
        let worker = a.waiting.remove(&conn)?;
        a.snap.workers.insert(worker, WorkerEntry::Dead);
        self.finish_if_complete()
    }

    /// Gives up on markers that took too long.
    pub fn check_timeout(&mut self, now: Now) -> Option<Snapshot> {
        let a = self.active.as_mut()?;
        if now.ms.saturating_sub(a.started_ms) < self.cfg.marker_timeout_ms {
            return None;
        }
        for (_, worker) in a.waiting.drain() {
            a.snap.workers.insert(worker, WorkerEntry::Unresponsive);
        }
        self.finish_if_complete()
    }

    fn finish_if_complete(&mut self) -> Option<Snapshot> {
        if self.active.as_ref()?.waiting.is_empty() {
            let mut a = self.active.take()?;
            a.snap.completed_at = chrono::Utc::now().to_rfc3339();
            return Some(a.snap);
        }
        None
    }
}

/// Writes a finished snapshot atomically and prunes old ones.
pub(crate) async fn write_snapshot(shared: &Arc<Shared>, snap: Snapshot) {
    let (dir, keep) = {
        let s = crate::server::lock_snapshots(shared);
        (s.cfg.dir.clone(), s.cfg.keep)
    };
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let path = dir.join(format!("snapshot_{:06}_{stamp}.json", snap.seq));
    let seq = snap.seq;
    let completed_at = snap.completed_at.clone();
    crate::crash::point("snapshot-before-write");
    let t = std::time::Instant::now();
    let p = path.clone();
    let written = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let bytes = serde_json::to_vec_pretty(&snap).context("encoding snapshot")?;
        write_atomic(&p, &bytes)?;
        for (_, old) in list_snapshots(&dir).into_iter().skip(keep.max(1)) {
            let _ = std::fs::remove_file(old);
        }
        Ok(bytes.len() as u64)
    })
    .await;
    match written {
        Ok(Ok(bytes)) => {
            crate::crash::point("snapshot-after-write");
            let write_ms = t.elapsed().as_millis() as u64;
            info!(seq, path = %path.display(), bytes, write_ms, "snapshot written");
            crate::server::lock_snapshots(shared).last = Some(SnapshotInfo {
                seq,
                path: path.display().to_string(),
                completed_at,
                bytes,
                write_ms,
            });
        }
        Ok(Err(e)) => warn!(seq, error = %e, "cannot write snapshot"),
        Err(e) => warn!(seq, error = %e, "snapshot task failed"),
    }
}

/// Starts a snapshot now (if none is running). Returns false if one was already running.
pub(crate) fn start(shared: &Arc<Shared>) -> bool {
    let mut started = false;
    let mut finished = None;
    shared.apply(|core, snaps, now| {
        let conns = crate::server::connected(shared);
        let conns: Vec<(u64, String)> = conns
            .into_iter()
            .filter_map(|c| core.worker_of(c).map(|w| (c, w.to_string())))
            .collect();
        match snaps.begin(core, conns, now) {
            Some(markers) => {
                started = true;
                // No worker connected: the snapshot is complete at once.
                finished = snaps.finish_if_complete();
                markers
                    .into_iter()
                    .map(|(c, m)| crate::core::Action::Send(c, m))
                    .collect()
            }
            None => Vec::new(),
        }
    });
    if started {
        crate::crash::point("snapshot-begun");
    }
    if let Some(s) = finished {
        let shared = shared.clone();
        tokio::spawn(async move { write_snapshot(&shared, s).await });
    }
    started
}

pub(crate) async fn snapshot_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let interval = crate::server::lock_snapshots(&shared).cfg.interval_ms;
    if interval == 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(interval)) => {}
        }
        start(&shared);
    }
}

/// At shutdown: one last snapshot, waiting briefly for the markers.
pub(crate) async fn final_snapshot(shared: &Arc<Shared>) {
    // Let a periodic snapshot in progress finish or time out first.
    for _ in 0..100 {
        if crate::server::lock_snapshots(shared).active.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !start(shared) {
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(2000);
    loop {
        let done = crate::server::lock_snapshots(shared).active.is_none();
        if done {
            // Give the writer task a moment to finish writing.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        if std::time::Instant::now() > deadline {
            let s = {
                let mut snaps = crate::server::lock_snapshots(shared);
                let a = snaps.active.as_mut();
                if let Some(a) = a {
                    for (_, w) in a.waiting.drain() {
                        a.snap.workers.insert(w, WorkerEntry::Unresponsive);
                    }
                }
                snaps.finish_if_complete()
            };
            if let Some(s) = s {
                write_snapshot(shared, s).await;
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Recovery from the newest readable snapshot. Applies it to `core` for files that still
/// have the same fingerprint and no report, and returns the primes to flush first together
/// with the chunks that become done once they are durable.
pub fn recover(
    cfg: &SnapshotConfig,
    input: &std::path::Path,
    core: &mut Core,
    now: Now,
) -> anyhow::Result<Pending> {
    let mut pending = Pending::default();
    let Some(snap) = list_snapshots(&cfg.dir).into_iter().find_map(|(_, p)| {
        let bytes = std::fs::read(&p).ok()?;
        match serde_json::from_slice::<Snapshot>(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(path = %p.display(), error = %e, "skipping unreadable snapshot");
                None
            }
        }
    }) else {
        return Ok(pending);
    };
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
    let mut restored = 0;
    for f in &snap.coordinator.files {
        let Some(current) = core.known(&f.file).or_else(|| {
            let meta = std::fs::metadata(input.join(&f.file)).ok()?;
            Some(crate::inputs::fingerprint(&meta))
        }) else {
            continue;
        };
        if current != f.fingerprint || core.known(&f.file).is_some() {
            continue; // changed since, or already reported
        }
        let finished: Vec<Option<(TaskDone, String)>> = f
            .chunks
            .iter()
            .map(|c| match c {
                ChunkState::Done { result, worker } | ChunkState::Flushing { result, worker } => {
                    Some((result.clone(), worker.clone()))
                }
                ChunkState::Assigned { attempt, .. } => channel_done.get(attempt).cloned(),
                _ => None,
            })
            .collect();
        pending
            .done
            .extend(core.restore_file(&f.file, f.fingerprint, finished, now));
        restored += 1;
    }
    info!(seq = snap.seq, files = restored, "recovered from snapshot");
    Ok(pending)
}
