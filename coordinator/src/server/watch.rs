//! The input watchers: the folders `data/input` and `data/jobs` (notify events, with a
//! periodic walk as the safety net), or the file server's listing of the inputs; each
//! change becomes an event for the machine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::inputs::InputWatcher;
use crate::machine::Event;
use crate::state::Shared;

/// Starts the notify watcher; its events go to the input loop. Returns the watcher, which
/// must be kept alive. A failure is logged: the periodic scan still finds everything.
pub(super) fn start_notify(
    dir: &std::path::Path,
    tx: mpsc::UnboundedSender<notify::Event>,
) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        // An error (events lost) asks for a full scan, as notify's own rescan flag does.
        let ev = res.unwrap_or_else(|_| {
            notify::Event::new(notify::EventKind::Other).set_flag(notify::event::Flag::Rescan)
        });
        let _ = tx.send(ev);
    };
    match proto::files::watch_inputs(dir, handler) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "cannot watch the folder; relying on periodic scans");
            None
        }
    }
}

/// With notifications working and no input waiting to become stable, the input folder is
/// walked every this many scan periods (a safety net for events the kernel dropped).
const IDLE_WALKS: u32 = 30;

/// Whether a periodic tick walks the input folder: always the first time (the files already
/// there at start-up), while notifications are unavailable, and while something waits to
/// become stable (only a walk sees it settle); otherwise once every [`IDLE_WALKS`] periods.
fn periodic_walk(
    since_last_walk: Option<Duration>,
    events_open: bool,
    pending: bool,
    period: Duration,
) -> bool {
    match since_last_walk {
        None => true,
        Some(since) => !events_open || pending || since >= period * IDLE_WALKS,
    }
}

/// A watched folder: where its stable files go.
#[derive(Clone, Copy)]
pub(super) enum Folder {
    /// `data/input`: files to test.
    Inputs,
    /// `data/jobs`: generation jobs, parsed before the machine sees them.
    Jobs,
}

/// Watches one folder (notifications, and periodic walks as a safety net or while a file
/// waits to become stable) and hands the machine what became stable or vanished.
pub(super) async fn folder_loop(
    shared: Arc<Shared>,
    folder: Folder,
    mut watcher: InputWatcher,
    mut events: mpsc::UnboundedReceiver<notify::Event>,
    shutdown: CancellationToken,
) {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
    let period = Duration::from_millis(shared.cfg.scan_ms);
    // At most one scan per this long, however many events arrive: a burst of thousands of
    // events (a big `cp` into the folder) costs a few scans, not thousands.
    let min_gap = Duration::from_millis(shared.cfg.scan_ms.clamp(10, 50));
    let apply_event = |watcher: &mut InputWatcher, ev: notify::Event| -> bool {
        debug!(kind = ?ev.kind, paths = ?ev.paths, "input event");
        if ev.need_rescan() {
            return true;
        }
        // Files staged in a hidden folder (then renamed in), and that folder's removal:
        // no visible input changed, so no walk (a `cp -r` of 2,000 files into `.stage/`
        // cost a walk of the whole folder every few ms).
        if watcher.only_hidden(&ev.paths) {
            return false;
        }
        match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                for p in &ev.paths {
                    watcher.note_closed(p);
                }
                true
            }
            // inotify reports a rename's new name as an event of its own (`To`, above),
            // then the pair: marking the files closed again would walk a folder renamed in
            // a second time.
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => true,
            EventKind::Modify(ModifyKind::Data(_)) | EventKind::Create(_) => {
                for p in &ev.paths {
                    watcher.note_writing(p);
                }
                true
            }
            EventKind::Remove(_) | EventKind::Modify(_) => true,
            // Reads (the file server opening files) change nothing.
            _ => false,
        }
    };
    let mut events_open = true;
    // A full walk stats every input file (about 2 µs each: 0.2 s for 100,000 files). With
    // notifications working and nothing waiting to become stable, the periodic walk is only
    // a safety net, so it runs every IDLE_WALKS periods instead of every period.
    let mut last_walk: Option<tokio::time::Instant> = None;
    // A fixed ticker, not a sleep re-armed on every event: irrelevant events (our own scans
    // open the folder, which inotify reports) must not postpone the periodic scan forever.
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.recv(), if events_open => {
                let Some(ev) = ev else {
                    events_open = false;
                    continue;
                };
                if !apply_event(&mut watcher, ev) {
                    continue;
                }
                // At once when the last walk is older than min_gap, else at that point: a
                // lone change (a folder renamed in) is walked without waiting, a burst
                // costs one walk per min_gap.
                if let Some(t) = last_walk {
                    tokio::time::sleep_until(t + min_gap).await;
                }
                while let Ok(ev) = events.try_recv() {
                    apply_event(&mut watcher, ev);
                }
            }
            _ = tick.tick() => {
                let since = last_walk.map(|t| t.elapsed());
                if !periodic_walk(since, events_open, watcher.pending(), period) {
                    continue;
                }
            }
        }
        last_walk = Some(tokio::time::Instant::now());
        let now = shared.now();
        let outcome = watcher.scan(now.ms);
        if outcome.ready.is_empty() && outcome.removed.is_empty() {
            continue;
        }
        match folder {
            Folder::Inputs => shared.apply(Event::Inputs(outcome)).await,
            Folder::Jobs => shared.apply(read_jobs(&shared, outcome).await).await,
        }
    }
}

/// How a coordinator watches the file servers' listing.
pub(crate) fn list_watch(cfg: &crate::state::Config) -> afs::listing::ListWatch {
    afs::listing::ListWatch {
        servers: cfg.afs_servers.clone(),
        key: cfg.key.clone(),
        client_id: "coordinator".into(),
        timeout: Duration::from_secs(3),
        refresh: LISTING_REFRESH,
    }
}

/// The file server's listing is asked for again after this long without a `list_changed`
/// push (a safety net: the pushes are what make a new file known at once).
pub(super) const LISTING_REFRESH: Duration = Duration::from_secs(60);

/// How long start-up waits for the first listing of the inputs from a file server before it
/// serves workers without one (a listing takes milliseconds when a server answers; a later
/// one brings the done reports with it, [`listing_loop`]). Well under `start_system.sh`'s
/// wait for the workers' registration (issue 27: a 10 s wait here failed starts).
pub(super) const FIRST_LISTING: Duration = Duration::from_secs(2);

/// The inputs as the file servers list them (`--inputs-from-afs`): each new listing is
/// decided on at once, and again every scan period while a file waits for its quiet period.
/// `late`: start-up had no listing, so the first one is checked against the reports already
/// written first, as start-up does (a file done before is not done again).
pub(super) async fn listing_loop(
    shared: Arc<Shared>,
    mut watcher: InputWatcher,
    mut listings: mpsc::UnboundedReceiver<afs::listing::Listing>,
    mut latest: HashMap<String, crate::core::Fingerprint>,
    mut late: bool,
    shutdown: CancellationToken,
) {
    let mut server = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(shared.cfg.scan_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut first = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            l = listings.recv() => match l {
                Some(l) => {
                    if l.server != server {
                        info!(server = l.server, files = l.files.len(), "inputs listed by the file server");
                        server = l.server.clone();
                    }
                    if std::mem::take(&mut late) {
                        let found = reports_of_late_listing(&shared, &l).await;
                        info!(files = l.files.len(), done = found.len(), "first listing after start-up: done reports found");
                        for f in &found {
                            watcher.mark_reported(&f.file, f.source);
                        }
                        shared.apply(Event::ReportsFound(found)).await;
                    }
                    latest = shared.read(|m| {
                        l.files
                            .iter()
                            .map(|(name, (fp, v))| {
                                (name.clone(), m.core().identify(name, *fp, v.as_deref()))
                            })
                            .collect()
                    });
                }
                None => return,
            },
            _ = tick.tick() => {
                if !first && !watcher.pending() {
                    continue;
                }
            }
        }
        first = false;
        let outcome = watcher.scan_listing(&latest, shared.now().ms);
        if outcome.ready.is_empty() && outcome.removed.is_empty() {
            continue;
        }
        shared.apply(Event::Inputs(outcome)).await;
    }
}

/// The done reports of the inputs in a file server's first listing, when it came after
/// start-up ([`super::find_reports`], on a blocking thread).
async fn reports_of_late_listing(
    shared: &Shared,
    l: &afs::listing::Listing,
) -> Vec<crate::core::FoundReport> {
    let output = shared.cfg.output.clone();
    let (mut files, versions) = super::split_listing(l.files.clone());
    tokio::task::spawn_blocking(move || super::find_reports(&output, &mut files, &versions))
        .await
        .unwrap_or_else(|e| {
            // Nothing is lost: the files are then queued and done again.
            warn!(error = %e, "reading the done reports of a late listing failed");
            Vec::new()
        })
}

/// The event for job files that became stable (read and parsed) or vanished.
async fn read_jobs(shared: &Shared, outcome: crate::inputs::ScanOutcome) -> Event {
    let dir = shared.cfg.jobs.clone();
    let segment = shared.cfg.segment_numbers;
    let ready = tokio::task::spawn_blocking(move || {
        outcome
            .ready
            .into_iter()
            .map(|(rel, fp)| {
                let job = crate::jobs::read_job(&dir, &rel, segment);
                (crate::jobs::job_name_of(&rel), fp, job)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let removed = outcome
        .removed
        .iter()
        .map(|r| crate::jobs::job_name_of(r))
        .collect();
    Event::Jobs { ready, removed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// The first tick always walks (the inputs present at start-up); later ticks walk while
    /// notifications are off or an input waits to settle, else once every IDLE_WALKS periods.
    fn when_the_input_folder_is_walked() {
        let p = Duration::from_millis(250);
        for (events, pending) in [(true, false), (false, false), (true, true)] {
            assert!(periodic_walk(None, events, pending, p), "the first tick");
        }
        let soon = Some(p);
        assert!(
            !periodic_walk(soon, true, false, p),
            "idle with notifications"
        );
        assert!(periodic_walk(soon, false, false, p), "no notifications");
        assert!(periodic_walk(soon, true, true, p), "a file settling");
        assert!(
            periodic_walk(Some(p * IDLE_WALKS), true, false, p),
            "the safety net"
        );
    }
}
