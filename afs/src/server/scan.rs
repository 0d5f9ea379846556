//! Change scanning: the root is scanned periodically and at once when file notifications
//! say it changed; every change or removal breaks the file's callbacks (and wakes the
//! replicators), and large new files are hashed ahead of their fetch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Shared, SMALL_FETCH};
use crate::store::{Fingerprint, Store};

/// Computes the versions of new or changed files in the background: they are about to be
/// fetched, and a request then finds the version ready instead of waiting for a whole-file
/// hash (a request arriving meanwhile waits for this hash rather than doing its own).
/// Small files are left out: their fetch reads and hashes them in one pass anyway.
///
/// On a thread of its own at idle priority (nice 19): at start-up the inputs' hashing
/// (~45 ms of a core for 256 MB) ran beside the coordinators' election and the workers'
/// start on the same cores, and every step of those (an fsync, a reply) waited behind it.
/// A request for a version waits for a hash under way, and the waiting leaves a core idle
/// for it.
pub(super) fn warm_versions(store: &Arc<Store>, paths: Vec<String>) {
    if paths.is_empty() {
        return;
    }
    let store = store.clone();
    let spawned = std::thread::Builder::new()
        .name("warm-versions".into())
        .spawn(move || {
            proto::process::lower_this_thread();
            for p in paths {
                let _ = store.info(&p);
            }
        });
    if let Err(e) = spawned {
        // Nothing is lost: each version is then computed when first asked for.
        warn!(error = %e, "no thread to hash the inputs ahead of their fetch");
    }
}

/// The files worth hashing ahead of their fetch (see [`warm_versions`]), by name: the order
/// the coordinator queues them in, so the first file asked for is the first hashed (in
/// the map's order, a request for the first file hashed it alongside the warm-up's file).
fn large(files: &HashMap<String, Fingerprint>) -> Vec<String> {
    let mut large: Vec<String> = files
        .iter()
        .filter(|(_, fp)| fp.size > SMALL_FETCH)
        .map(|(p, _)| p.clone())
        .collect();
    large.sort_unstable();
    large
}

/// After a notification of the root, how long to wait for the rest of its burst.
const NOTIFY_GATHER: Duration = Duration::from_millis(20);

/// Watches the root with notifications: a change asks the scan loop for a scan at once
/// (the periodic scan stays as the safety net). None if notifications are unavailable.
pub(super) fn watch_root(shared: &Arc<Shared>) -> Option<notify::RecommendedWatcher> {
    let weak = Arc::downgrade(shared);
    let root = shared.store.root().to_path_buf();
    let abs_root = root.canonicalize().unwrap_or_else(|_| root.clone());
    let handler = move |res: notify::Result<notify::Event>| {
        let relevant = match &res {
            // Our own reads are not reported (the watch's mask leaves opens and closes
            // without writing out); files staged in a hidden folder before their rename
            // change nothing a scan sees.
            Ok(ev) => !proto::files::only_hidden_below(&abs_root, &ev.paths),
            Err(_) => true,
        };
        if let (true, Some(s)) = (relevant, weak.upgrade()) {
            s.scan_now.notify_one();
        }
    };
    match proto::files::watch_inputs(&root, handler) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, "cannot watch the root; relying on periodic scans");
            None
        }
    }
}

pub(super) async fn scan_loop(
    shared: Arc<Shared>,
    mut last: HashMap<String, Fingerprint>,
    shutdown: CancellationToken,
) {
    let store = shared.store.clone();
    warm_versions(&store, large(&last));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(shared.cfg.scan_interval) => {}
            _ = shared.scan_now.notified() => {
                // Events come in bursts (a write is many): one scan for the burst.
                tokio::time::sleep(NOTIFY_GATHER).await;
            }
        }
        let s = store.clone();
        let now = match tokio::task::spawn_blocking(move || s.scan()).await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "scan task failed");
                continue;
            }
        };
        let mut changed = Vec::new();
        for (path, fp) in &now {
            if last.get(path) != Some(fp) {
                debug!(path, "changed");
                shared.break_callbacks(path);
                if fp.size > SMALL_FETCH {
                    changed.push(path.clone());
                }
            }
        }
        warm_versions(&store, changed);
        for path in last.keys() {
            if !now.contains_key(path) {
                debug!(path, "removed");
                shared.break_callbacks(path);
            }
        }
        last = now;
    }
}
