//! Publishes this member's view of itself ([`crate::members::MemberView`]) beside the
//! status file, for `coordinator status` and every member's dashboard
//! ([`crate::members::collect`]): the part of the members' views that reads the Raft node.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::members::{host, now_ms, view_path, MemberView, PUBLISH_EVERY};

/// Whether this member serves workers now: the token of its current lead, set while its
/// coordinator runs (cancelled the moment it stops leading).
#[derive(Default)]
pub struct Serving {
    lead: Mutex<Option<CancellationToken>>,
    changed: tokio::sync::Notify,
}

impl Serving {
    pub fn set(&self, lead: Option<CancellationToken>) {
        *proto::lock(&self.lead) = lead;
        self.changed.notify_one();
    }

    pub fn is_serving(&self) -> bool {
        proto::lock(&self.lead)
            .as_ref()
            .is_some_and(|t| !t.is_cancelled())
    }

    /// Resolves once serving may have changed: set, or the lead's token cancelled.
    async fn changed(&self) {
        let lead = proto::lock(&self.lead).clone();
        match lead.filter(|t| !t.is_cancelled()) {
            Some(t) => tokio::select! {
                _ = t.cancelled() => {}
                _ = self.changed.notified() => {}
            },
            None => self.changed.notified().await,
        }
    }
}

/// This member's view now.
pub fn view_of(raft: &super::Raft, serving: &Serving, host: &str) -> MemberView {
    let g = super::status_of(raft);
    MemberView {
        id: g.id,
        pid: std::process::id(),
        host: host.to_string(),
        updated_ms: now_ms(),
        role: g.role,
        term: g.term,
        leader: g.leader,
        serving: serving.is_serving(),
        applied_index: g.applied_index,
        last_log_index: g.last_log_index,
        members: g.members.iter().map(|m| m.id).collect(),
    }
}

/// Shortest time between two writes of a member's view when its role changes.
const PUBLISH_GAP: Duration = Duration::from_millis(50);

/// Rewrites this member's view every [`PUBLISH_EVERY`], and at once (at most every
/// [`PUBLISH_GAP`]) when its role, term, leader or serving changes, until `shutdown` (and
/// once more then).
pub async fn publish(
    raft: super::Raft,
    serving: Arc<Serving>,
    status_dir: PathBuf,
    shutdown: CancellationToken,
) {
    let host = host();
    let mut metrics = raft.metrics();
    let id = metrics.borrow().id;
    let path = view_path(&status_dir, id);
    if let Err(e) = std::fs::create_dir_all(&status_dir) {
        debug!(dir = %status_dir.display(), error = %e, "cannot create the status folder");
    }
    let key = |v: &MemberView| (v.role.clone(), v.term, v.leader, v.serving);
    let mut last = None;
    let mut due = tokio::time::Instant::now();
    loop {
        let view = view_of(&raft, &serving, &host);
        let now = tokio::time::Instant::now();
        let stopping = shutdown.is_cancelled();
        if now >= due || last.as_ref() != Some(&key(&view)) || stopping {
            last = Some(key(&view));
            due = now + PUBLISH_EVERY;
            let path = path.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let bytes = serde_json::to_vec_pretty(&view).unwrap_or_default();
                // Not fsynced: rewritten every half second.
                if let Err(e) = proto::files::write_atomic(&path, &bytes, false) {
                    debug!(path = %path.display(), error = %e, "cannot write the member's view");
                }
            })
            .await;
            if stopping {
                return;
            }
            tokio::time::sleep(PUBLISH_GAP).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep_until(due) => {}
            r = metrics.changed() => if r.is_err() { return },
            _ = serving.changed() => {}
        }
    }
}
