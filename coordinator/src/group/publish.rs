//! Publishes this member's view of itself ([`crate::members::MemberView`]) beside the
//! status file, for `coordinator status` and every member's dashboard
//! ([`crate::members::collect`]): the part of the members' views that reads the Raft node.
//! Members on other hosts share no folder with this one, so [`gather`] also asks every
//! other member for its view over the Raft port and writes it beside this member's own:
//! status then sees every member that answers, wherever it runs (one that does not answer
//! leaves its file to go stale, and status calls it down).

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

/// Writes a member's view to `path` (not fsynced: rewritten every half second).
async fn write_view(path: PathBuf, view: MemberView) {
    let _ = tokio::task::spawn_blocking(move || {
        let bytes = serde_json::to_vec_pretty(&view).unwrap_or_default();
        if let Err(e) = proto::files::write_atomic(&path, &bytes, false) {
            debug!(path = %path.display(), error = %e, "cannot write a member's view");
        }
    })
    .await;
}

/// Shortest time between two writes of a member's view when its role changes.
const PUBLISH_GAP: Duration = Duration::from_millis(50);

/// Rewrites this member's view every [`PUBLISH_EVERY`], and at once (at most every
/// `PUBLISH_GAP`) when its role, term, leader or serving changes, until `shutdown` (and
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
            write_view(path.clone(), view).await;
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

/// How long [`gather`] waits for a member's view: longer than a healthy answer on a loaded
/// machine, shorter than [`crate::members::STALE_MS`] so one slow member never makes the
/// others' views look stale.
const ASK_TTL: Duration = Duration::from_millis(1000);

/// Every [`PUBLISH_EVERY`], asks each other member (`peers`) for its view and writes what
/// it answers into `status_dir`, until `shutdown`. `me` is this member (not asked).
pub async fn gather(
    me: u64,
    peers: Vec<super::net::Peer>,
    status_dir: PathBuf,
    shutdown: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for mut peer in peers.into_iter().filter(|p| p.target() != me) {
        let (dir, shutdown) = (status_dir.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(PUBLISH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let view = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    v = peer.view(ASK_TTL) => v,
                };
                match view {
                    // Only a view of the member asked (a misconfigured address could reach
                    // another one, whose own view is its to write).
                    Ok(v) if v.id == peer.target() => {
                        write_view(view_path(&dir, v.id), v).await;
                    }
                    Ok(v) => debug!(
                        asked = peer.target(),
                        answered = v.id,
                        "a member's address answers for another"
                    ),
                    Err(e) => debug!(member = peer.target(), error = %e, "no view from a member"),
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}
