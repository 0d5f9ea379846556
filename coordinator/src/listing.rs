//! The file servers' listing of the inputs, watched once per process and shared: by the
//! coordinator that serves (its input loop) and by a group member from its start, whatever
//! its role, so that a member that begins to lead has the inputs at once. It depends on
//! nothing of the coordinator's state, which holds it ([`crate::state::Config::listing`]).

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The file servers' listing as a member process watches it from its start, whatever its
/// role (`--inputs-from-afs`): a member that begins to lead has the inputs at once, instead
/// of connecting, proving the key and asking then (3-10 ms of every start of a group of
/// three, and of every takeover).
#[derive(Clone, Debug)]
pub struct ListingFeed(tokio::sync::watch::Receiver<Option<afs::listing::Listing>>);

impl ListingFeed {
    /// Starts watching the listing as `watch` says (the coordinator's: `server::list_watch`),
    /// until `shutdown`.
    pub fn start(watch: afs::listing::ListWatch, shutdown: CancellationToken) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(watch.run(tx, shutdown));
        let (latest, feed) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            while let Some(l) = rx.recv().await {
                latest.send_replace(Some(l));
            }
        });
        ListingFeed(feed)
    }

    /// The listings from now on, until `shutdown`: the latest one first (if there is one
    /// yet), then each newer one (those in between, already outdated, are skipped).
    pub(crate) fn subscribe(
        &self,
        shutdown: CancellationToken,
    ) -> mpsc::UnboundedReceiver<afs::listing::Listing> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut feed = self.0.clone();
        tokio::spawn(async move {
            loop {
                let latest = feed.borrow_and_update().clone();
                if let Some(l) = latest {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = feed.changed() => if r.is_err() { return },
                }
            }
        });
        rx
    }
}
