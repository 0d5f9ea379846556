//! The coordinator's timers: ticks, snapshots (and the final one at shutdown), the status
//! file with its history, and the file servers' probes.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::machine::Event;
use crate::state::{lock, status_value, Shared};

pub(super) async fn tick_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let period = Duration::from_millis(shared.read(|m| m.core().tick_period_ms()));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        shared.apply(Event::Tick).await;
    }
}

/// Every `--snapshot-ms`, a snapshot (the machine skips it if one is still being taken).
pub(super) async fn snapshot_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let interval = shared.cfg.snapshots.interval_ms;
    if interval == 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(interval)) => {}
        }
        begin_snapshot(&shared).await;
    }
}

/// Starts a snapshot; returns its number, or `None` if one was already being taken.
async fn begin_snapshot(shared: &Arc<Shared>) -> Option<u64> {
    let before = shared.read(|m| m.snapshot_in_progress());
    if before.is_some() {
        return None;
    }
    let seq = shared.read(|m| m.next_snapshot());
    shared.apply(Event::SnapshotDue).await;
    crate::crash::point("snapshot-begun");
    Some(seq)
}

/// How long a group's leader that stops waits for its last flush to commit.
pub(super) const FINAL_FLUSH_LIMIT: Duration = Duration::from_secs(3);

/// How long the final snapshot waits for markers before noting workers unresponsive.
const FINAL_MARKER_WAIT: Duration = Duration::from_secs(2);

/// At shutdown: let a snapshot in progress finish (or give up on its markers), then take
/// one last snapshot, waiting briefly for the markers.
pub(super) async fn final_snapshot(shared: &Arc<Shared>) {
    if let Some(seq) = shared.read(|m| m.snapshot_in_progress()) {
        if tokio::time::timeout(FINAL_MARKER_WAIT, shared.snapshot_done(seq))
            .await
            .is_err()
        {
            shared.apply(Event::SnapshotDeadline).await;
        }
    }
    let Some(seq) = begin_snapshot(shared).await else {
        return;
    };
    if tokio::time::timeout(FINAL_MARKER_WAIT, shared.snapshot_done(seq))
        .await
        .is_err()
    {
        shared.apply(Event::SnapshotDeadline).await;
        shared.snapshot_done(seq).await;
    }
}

/// History kept for the chart: one sample per status tick (0.5 s), 10 minutes.
const HISTORY: usize = 1200;

/// Writes `run/status.json` (keeping the last minute of history) and takes one history
/// sample for the dashboard.
pub(super) fn write_status(shared: &Shared, running: bool) {
    let (mut v, sample) = status_value(shared, running);
    {
        let mut h = lock(&shared.history);
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(sample);
    }
    if let Some(h) = v.get_mut("history").and_then(|h| h.as_array_mut()) {
        let cut = h.len().saturating_sub(120);
        h.drain(..cut);
    }
    match serde_json::to_vec_pretty(&v) {
        Ok(b) => {
            // Not fsynced: the status is rewritten every half second.
            if let Err(e) = proto::files::write_atomic(&shared.cfg.status_file, &b, false) {
                debug!(error = %e, "cannot write status file");
            }
        }
        Err(e) => debug!(error = %e, "cannot encode status"),
    }
}

/// Every 2 s, probes each file server, to show which are up and which is primary.
pub(super) async fn probe_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let mut out = Vec::new();
        for addr in &shared.cfg.afs_servers {
            out.push(
                afs::probe::probe(
                    addr,
                    &shared.cfg.key,
                    "coordinator-probe",
                    Duration::from_millis(1500),
                )
                .await,
            );
        }
        *lock(&shared.servers) = out;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

pub(super) async fn status_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || write_status(&s, true)).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
