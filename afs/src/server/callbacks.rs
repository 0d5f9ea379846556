//! Callback promises: which connection holds a promise for which file, which connections
//! watch the listing, and breaking them (a message pushed to each holder's connection)
//! when a file changes or vanishes.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use proto::lock;
use tokio::sync::mpsc;

/// What a connection is told unasked.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Push {
    Break(String),
    ListChanged,
}

/// The promises of every connection of one server.
#[derive(Default)]
pub(super) struct Callbacks {
    /// path -> connections holding a callback promise for it.
    promises: Mutex<HashMap<String, HashSet<u64>>>,
    /// connection -> where to push its callback breaks and listing changes.
    conns: Mutex<HashMap<u64, mpsc::UnboundedSender<Push>>>,
    /// Connections promised a `list_changed` (they sent `watch_list`).
    list_watchers: Mutex<HashSet<u64>>,
}

impl Callbacks {
    /// Connection `id` is served: its breaks go to `tx`.
    pub(super) fn connect(&self, id: u64, tx: mpsc::UnboundedSender<Push>) {
        lock(&self.conns).insert(id, tx);
    }

    /// Connection `id` is closed: its promises end with it.
    pub(super) fn disconnect(&self, id: u64) {
        lock(&self.conns).remove(&id);
        lock(&self.list_watchers).remove(&id);
        for holders in lock(&self.promises).values_mut() {
            holders.remove(&id);
        }
    }

    /// Connection `conn` holds a promise for `path` (it was sent or revalidated).
    pub(super) fn promise(&self, path: &str, conn: u64) {
        lock(&self.promises)
            .entry(path.to_string())
            .or_default()
            .insert(conn);
    }

    /// Connection `id` is promised a `list_changed` at the next change of any file.
    pub(super) fn watch_list(&self, id: u64) {
        lock(&self.list_watchers).insert(id);
    }

    /// `path` changed or vanished: every promise for it is broken, and every listing watcher
    /// told once. Each promise is broken once: a holder must fetch again to hold a new one.
    pub(super) fn break_path(&self, path: &str) {
        let holders = lock(&self.promises).remove(path).unwrap_or_default();
        let watchers = std::mem::take(&mut *lock(&self.list_watchers));
        if !holders.is_empty() || !watchers.is_empty() {
            let conns = lock(&self.conns);
            for id in holders {
                if let Some(tx) = conns.get(&id) {
                    let _ = tx.send(Push::Break(path.to_string()));
                }
            }
            for id in watchers {
                if let Some(tx) = conns.get(&id) {
                    let _ = tx.send(Push::ListChanged);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(rx: &mut mpsc::UnboundedReceiver<Push>) -> Vec<Push> {
        let mut v = Vec::new();
        while let Ok(p) = rx.try_recv() {
            v.push(p);
        }
        v
    }

    /// A break reaches the holders of that file only, once.
    #[test]
    fn breaks_reach_the_holders_once() {
        let cb = Callbacks::default();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        cb.connect(1, tx1);
        cb.connect(2, tx2);
        cb.promise("a", 1);
        cb.promise("b", 2);
        cb.break_path("a");
        assert_eq!(pushed(&mut rx1), [Push::Break("a".into())]);
        assert_eq!(pushed(&mut rx2), []);
        cb.break_path("a");
        assert_eq!(pushed(&mut rx1), [], "a broken promise is not broken again");
    }

    /// A listing watcher is told once, at the next change of any file.
    #[test]
    fn list_watchers_are_told_once() {
        let cb = Callbacks::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        cb.connect(7, tx);
        cb.watch_list(7);
        cb.break_path("x");
        cb.break_path("y");
        assert_eq!(pushed(&mut rx), [Push::ListChanged]);
    }

    /// A closed connection's promises and watch end with it.
    #[test]
    fn disconnect_ends_promises() {
        let cb = Callbacks::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        cb.connect(3, tx.clone());
        cb.promise("a", 3);
        cb.watch_list(3);
        cb.disconnect(3);
        // Reconnected under the same id: nothing of the old promises remains.
        cb.connect(3, tx);
        cb.break_path("a");
        assert_eq!(pushed(&mut rx), []);
    }
}
