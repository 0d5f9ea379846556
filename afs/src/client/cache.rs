//! The client's cache index: which files are held (on disk or in memory), their versions,
//! callback state and recency, the byte totals, and which files eviction drops.
//!
//! [`Index`] decides without I/O (tests below drive it directly); the methods at the end
//! are the client's shell around it: loading and saving `index.json` and removing the
//! local copies of the files the index drops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{AfsClient, Content};
use crate::names::check_rel;

/// One cached file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) version: String,
    pub(super) size: u64,
    /// The index's clock when the file was last opened (least recently used goes first).
    pub(super) last_used: u64,
    /// The server's callback promise holds (per connection, so never saved).
    #[serde(skip)]
    pub(super) callback: bool,
    /// The content, for a file cached in memory (such entries are never saved in the index).
    #[serde(skip)]
    pub(super) memory: Option<Arc<Vec<u8>>>,
}

impl Entry {
    /// The cached content, if it is still there.
    pub(super) fn content(&self, local: PathBuf) -> Option<Content> {
        match &self.memory {
            Some(b) => Some(Content::Memory(b.clone())),
            None => local.exists().then_some(Content::Disk(local)),
        }
    }
}

/// The cache index without I/O: entries by path, the bytes held on disk and in memory
/// (kept with the entries, so that a fetch does not sum the whole index), and the clock
/// that orders uses.
#[derive(Debug, Default)]
pub(super) struct Index {
    entries: HashMap<String, Entry>,
    disk_bytes: u64,
    memory_bytes: u64,
    clock: u64,
}

impl Index {
    /// An index of the `loaded` entries (from a previous run's `index.json`) that `keep`
    /// accepts; every one of them is on disk. The clock resumes after the latest use.
    pub(super) fn load(
        mut loaded: HashMap<String, Entry>,
        keep: impl Fn(&str, &Entry) -> bool,
    ) -> Self {
        loaded.retain(|rel, e| keep(rel, e));
        Index {
            clock: loaded.values().map(|e| e.last_used).max().unwrap_or(0),
            disk_bytes: loaded.values().map(|e| e.size).sum(),
            memory_bytes: 0,
            entries: loaded,
        }
    }

    /// Advances the clock and returns its new value (the time of a use).
    pub(super) fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn get(&self, rel: &str) -> Option<&Entry> {
        self.entries.get(rel)
    }

    pub(super) fn get_mut(&mut self, rel: &str) -> Option<&mut Entry> {
        self.entries.get_mut(rel)
    }

    /// Paths and versions held, sorted.
    pub(super) fn listing(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .map(|(p, e)| (p.clone(), e.version.clone()))
            .collect();
        v.sort();
        v
    }

    /// The entries saved in `index.json`: those on disk (memory is lost with the process).
    pub(super) fn on_disk(&self) -> HashMap<&String, &Entry> {
        self.entries
            .iter()
            .filter(|(_, e)| e.memory.is_none())
            .collect()
    }

    /// Every callback promise ends (they were per connection).
    pub(super) fn clear_callbacks(&mut self) {
        for e in self.entries.values_mut() {
            e.callback = false;
        }
    }

    /// Adds or replaces the entry of `rel`, keeping the byte totals.
    pub(super) fn insert(&mut self, rel: String, e: Entry) -> Option<Entry> {
        *self.total(e.memory.is_some()) += e.size;
        let old = self.entries.insert(rel, e);
        if let Some(o) = &old {
            let t = self.total(o.memory.is_some());
            *t = t.saturating_sub(o.size);
        }
        old
    }

    /// Removes the entry of `rel`, keeping the byte totals.
    pub(super) fn remove(&mut self, rel: &str) -> Option<Entry> {
        let old = self.entries.remove(rel);
        if let Some(o) = &old {
            let t = self.total(o.memory.is_some());
            *t = t.saturating_sub(o.size);
        }
        old
    }

    fn total(&mut self, memory: bool) -> &mut u64 {
        if memory {
            &mut self.memory_bytes
        } else {
            &mut self.disk_bytes
        }
    }

    /// Removes least recently used entries until the disk bytes fit `disk_limit` and the
    /// memory bytes fit `memory_limit`, each kind evicting only its own entries and never
    /// `keep` (the file just opened). Returns the paths removed, with whether each was on
    /// disk (its local copy is then to be deleted), in the order they were chosen.
    pub(super) fn evict(
        &mut self,
        keep: &str,
        disk_limit: u64,
        memory_limit: u64,
    ) -> Vec<(String, bool)> {
        let mut gone = Vec::new();
        for (memory, limit) in [(false, disk_limit), (true, memory_limit)] {
            while *self.total(memory) > limit {
                let victim = self
                    .entries
                    .iter()
                    .filter(|(p, e)| p.as_str() != keep && e.memory.is_some() == memory)
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(p, _)| p.clone());
                let Some(v) = victim else { break };
                if self.remove(&v).is_some() {
                    gone.push((v, !memory));
                }
            }
        }
        gone
    }
}

/// The cache index is saved at most this often: losing the last second of it only means a
/// refetch after a crash, while saving it on every fetch is quadratic in the cache size.
const INDEX_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Whether a changed index is saved now, given when it was last saved (see
/// [`INDEX_SAVE_INTERVAL`]).
fn save_due(last_save: Option<Instant>, now: Instant) -> bool {
    last_save.is_none_or(|t| now.saturating_duration_since(t) >= INDEX_SAVE_INTERVAL)
}

impl AfsClient {
    /// Loads the index a previous run left in `dir`, keeping only entries whose file is
    /// really there with the recorded size.
    pub(super) fn load_index(dir: &std::path::Path) -> Index {
        let loaded: HashMap<String, Entry> = std::fs::read(dir.join("index.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let index = Index::load(loaded, |rel, e| {
            check_rel(rel).is_ok()
                && std::fs::metadata(dir.join("files").join(rel))
                    .map(|m| m.len() == e.size)
                    .unwrap_or(false)
        });
        if !index.is_empty() {
            info!(
                files = index.len(),
                "cache index loaded; entries will be revalidated by version"
            );
        }
        index
    }

    /// Paths and versions currently cached.
    pub fn cached(&self) -> Vec<(String, String)> {
        self.index.listing()
    }

    pub(super) fn local_path(&self, rel: &str) -> PathBuf {
        self.dir.join("files").join(rel)
    }

    /// Drops `rel` from the cache (the servers say it no longer exists).
    pub(super) fn forget(&mut self, rel: &str) {
        if let Some(e) = self.index.remove(rel) {
            if e.memory.is_none() {
                let _ = std::fs::remove_file(self.local_path(rel));
                self.save_index();
            }
        }
    }

    /// Evicts least recently used files until the disk cache and the memory cache each fit
    /// their limit, never the file just opened.
    pub(super) fn evict(&mut self, keep: &str) {
        let gone = self.index.evict(
            keep,
            self.cfg.cache_limit_bytes,
            self.cfg.memory_limit_bytes,
        );
        for (v, on_disk) in gone {
            if on_disk {
                let _ = std::fs::remove_file(self.local_path(&v));
            }
            debug!(path = v, "evicted from cache");
        }
    }

    /// Saves the index if it changed and the last save is old enough (see
    /// [`INDEX_SAVE_INTERVAL`]).
    pub(super) fn save_index(&mut self) {
        self.index_dirty = true;
        if !save_due(self.last_index_save, Instant::now()) {
            return;
        }
        self.flush_index();
    }

    /// Saves the index now if it changed.
    pub fn flush_index(&mut self) {
        if !self.index_dirty {
            return;
        }
        self.index_dirty = false;
        self.last_index_save = Some(Instant::now());
        let path = self.dir.join("index.json");
        let write = serde_json::to_vec(&self.index.on_disk())
            .map_err(std::io::Error::other)
            .and_then(|b| proto::files::write_atomic(&path, &b, false));
        if let Err(e) = write {
            warn!(error = %e, "cannot save cache index; the cache will be refetched after a restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(size: u64, last_used: u64) -> Entry {
        Entry {
            version: format!("v{last_used}"),
            size,
            last_used,
            callback: true,
            memory: None,
        }
    }

    fn mem(size: u64, last_used: u64) -> Entry {
        Entry {
            memory: Some(Arc::new(vec![0; size as usize])),
            ..disk(size, last_used)
        }
    }

    fn index(entries: &[(&str, Entry)]) -> Index {
        let mut i = Index::default();
        for (p, e) in entries {
            i.insert(p.to_string(), e.clone());
        }
        i
    }

    /// Bytes held on disk and in memory.
    fn totals(i: &Index) -> (u64, u64) {
        (i.disk_bytes, i.memory_bytes)
    }

    fn paths(gone: &[(String, bool)]) -> Vec<&str> {
        gone.iter().map(|(p, _)| p.as_str()).collect()
    }

    /// Disk entries go least recently used first, only as many as needed to fit the limit.
    #[test]
    fn evicts_least_recently_used_until_it_fits() {
        let mut i = index(&[("a", disk(40, 3)), ("b", disk(40, 1)), ("c", disk(40, 2))]);
        let gone = i.evict("a", 50, u64::MAX);
        assert_eq!(paths(&gone), ["b", "c"]);
        assert!(gone.iter().all(|(_, on_disk)| *on_disk));
        assert_eq!(totals(&i), (40, 0));
        assert!(i.get("a").is_some());
    }

    /// The file just opened stays even when it is the oldest, and alone over the limit.
    #[test]
    fn never_evicts_the_file_kept() {
        let mut i = index(&[("old", disk(100, 1)), ("new", disk(10, 2))]);
        let gone = i.evict("old", 50, u64::MAX);
        assert_eq!(paths(&gone), ["new"], "only the other file can go");
        assert_eq!(
            totals(&i),
            (100, 0),
            "the kept file alone stays over the limit"
        );
        assert!(i.evict("old", 50, u64::MAX).is_empty());
    }

    /// Disk and memory have separate limits, and each evicts only its own entries.
    #[test]
    fn disk_and_memory_are_limited_apart() {
        let mut i = index(&[
            ("d1", disk(30, 1)),
            ("m1", mem(5, 2)),
            ("m2", mem(5, 3)),
            ("d2", disk(30, 4)),
        ]);
        assert_eq!(totals(&i), (60, 10));
        // Memory over its limit: the oldest memory entry goes, though d1 is older.
        let gone = i.evict("none", 100, 6);
        assert_eq!(gone, vec![("m1".to_string(), false)]);
        assert_eq!(totals(&i), (60, 5));
        // Disk over its limit: a disk entry goes, though m2 is in memory and older.
        let gone = i.evict("none", 40, 100);
        assert_eq!(gone, vec![("d1".to_string(), true)]);
        assert_eq!(totals(&i), (30, 5));
    }

    /// Within the limits nothing is evicted.
    #[test]
    fn nothing_goes_within_the_limits() {
        let mut i = index(&[("a", disk(10, 1)), ("b", mem(10, 2))]);
        assert!(i.evict("x", 10, 10).is_empty());
        assert_eq!(i.len(), 2);
    }

    /// Replacing an entry moves its bytes between the totals (a file that shrank into
    /// memory leaves the disk total), and removing subtracts them.
    #[test]
    fn totals_follow_inserts_replacements_and_removals() {
        let mut i = index(&[("f", disk(100, 1))]);
        let old = i.insert("f".into(), mem(8, 2));
        assert!(
            old.is_some_and(|o| o.memory.is_none()),
            "the disk entry is returned"
        );
        assert_eq!(totals(&i), (0, 8));
        i.insert("g".into(), disk(50, 3));
        assert_eq!(totals(&i), (50, 8));
        assert!(i.remove("f").is_some());
        assert_eq!(totals(&i), (50, 0));
        assert!(i.remove("f").is_none(), "removing twice changes nothing");
        assert_eq!(totals(&i), (50, 0));
    }

    /// Only disk entries are saved, without their callback state or content.
    #[test]
    fn saves_disk_entries_only_without_callbacks() {
        let i = index(&[("d", disk(3, 1)), ("m", mem(3, 2))]);
        let on_disk = i.on_disk();
        assert_eq!(on_disk.len(), 1);
        let json = serde_json::to_string(&on_disk).unwrap_or_default();
        assert!(json.contains("\"d\""), "{json}");
        assert!(
            !json.contains("callback") && !json.contains("memory"),
            "{json}"
        );
        let back: HashMap<String, Entry> = serde_json::from_str(&json).unwrap_or_default();
        assert!(back
            .get("d")
            .is_some_and(|e| !e.callback && e.memory.is_none()));
    }

    /// Loading keeps the entries the check accepts, counts them on disk, and resumes the
    /// clock after the latest use.
    #[test]
    fn load_filters_and_resumes_the_clock() {
        let loaded: HashMap<String, Entry> = [
            ("keep".to_string(), disk(10, 7)),
            ("gone".to_string(), disk(20, 9)),
            ("also".to_string(), disk(5, 2)),
        ]
        .into_iter()
        .collect();
        let mut i = Index::load(loaded, |rel, _| rel != "gone");
        assert_eq!(i.len(), 2);
        assert_eq!(totals(&i), (15, 0));
        assert_eq!(i.tick(), 8, "the clock resumes after the latest kept use");
        assert_eq!(
            i.listing(),
            [("also".into(), "v2".into()), ("keep".into(), "v7".into())]
        );
    }

    /// Dropping the connection ends every promise.
    #[test]
    fn clearing_callbacks_ends_every_promise() {
        let mut i = index(&[("a", disk(1, 1)), ("b", mem(1, 2))]);
        i.clear_callbacks();
        assert!(!i.get("a").is_some_and(|e| e.callback));
        assert!(!i.get("b").is_some_and(|e| e.callback));
    }

    /// A changed index is saved at once the first time, then at most once per interval.
    #[test]
    fn index_saves_are_spaced() {
        let t0 = Instant::now();
        assert!(save_due(None, t0));
        assert!(!save_due(Some(t0), t0));
        assert!(!save_due(Some(t0), t0 + INDEX_SAVE_INTERVAL / 2));
        assert!(save_due(Some(t0), t0 + INDEX_SAVE_INTERVAL));
    }
}
