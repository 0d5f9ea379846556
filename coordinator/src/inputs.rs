//! Watching `data/input`: which files exist, and when each is stable enough to queue.
//!
//! A file is ready when a closed write (or a rename into the folder) left it with its
//! current fingerprint, or when it has not changed for the quiet period and nobody is known
//! to be writing it. A file held open for writing waits for its close (or 30 quiet periods,
//! for writers that never close). Hidden files and directories are ignored.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::core::Fingerprint;

/// What a scan found.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScanOutcome {
    /// Files newly stable with this fingerprint (each fingerprint reported once).
    pub ready: Vec<(String, Fingerprint)>,
    /// Files that disappeared.
    pub removed: Vec<String>,
}

pub struct InputWatcher {
    dir: PathBuf,
    /// `dir` made absolute, to match the absolute paths of notify events.
    abs_dir: PathBuf,
    quiet_ms: u64,
    /// name -> (fingerprint, since when unchanged, in ms; negative for a file that was
    /// already older than the quiet period when first seen).
    seen: HashMap<String, (Fingerprint, i64)>,
    reported: HashMap<String, Fingerprint>,
    closed: HashMap<String, Fingerprint>,
    writing: HashSet<String>,
    /// Entries that are not regular files (symlinks, FIFOs, sockets), logged once each.
    skipped: HashSet<String>,
    /// Files the last scan saw that are not stable yet (they need more scans).
    waiting: usize,
}

pub fn fingerprint(meta: &std::fs::Metadata) -> Fingerprint {
    Fingerprint::of(meta)
}

/// Every regular, non-hidden file under `dir`, as relative paths joined by '/'.
pub fn list_files(dir: &Path) -> HashMap<String, Fingerprint> {
    proto::files::visible_files(dir)
        .into_iter()
        .map(|(rel, m)| (rel, fingerprint(&m)))
        .collect()
}

impl InputWatcher {
    pub fn new(dir: &Path, quiet_ms: u64) -> Self {
        InputWatcher {
            dir: dir.to_path_buf(),
            abs_dir: dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()),
            quiet_ms,
            seen: HashMap::new(),
            reported: HashMap::new(),
            closed: HashMap::new(),
            writing: HashSet::new(),
            skipped: HashSet::new(),
            waiting: 0,
        }
    }

    /// True if a notification's (absolute) `paths` are all hidden below the watched
    /// folder: no walk sees them ([`proto::files::only_hidden_below`]).
    pub fn only_hidden(&self, paths: &[PathBuf]) -> bool {
        proto::files::only_hidden_below(&self.abs_dir, paths)
    }

    /// Marks a file as already handled with this fingerprint (e.g. it has a report).
    pub fn mark_reported(&mut self, name: &str, fp: Fingerprint) {
        self.reported.insert(name.to_string(), fp);
    }

    fn rel(&self, path: &Path) -> Option<String> {
        // Events carry absolute paths; the folder may have been given relative.
        let rel = path
            .strip_prefix(&self.dir)
            .or_else(|_| path.strip_prefix(&self.abs_dir))
            .ok()?;
        let s = rel.to_str()?.to_string();
        if s.is_empty() || s.split('/').any(|p| p.starts_with('.')) {
            return None;
        }
        Some(s)
    }

    /// A write to `path` is in progress (an inotify modify event).
    pub fn note_writing(&mut self, path: &Path) {
        if let Some(r) = self.rel(path) {
            self.writing.insert(r);
        }
    }

    /// `path` was closed after writing, or renamed into the folder: its content is whole.
    /// A folder renamed in brings whole files too: every file under it is marked (so a
    /// folder of files staged elsewhere and moved in is queued at once, not after the
    /// quiet period).
    pub fn note_closed(&mut self, path: &Path) {
        if let Some(r) = self.rel(path) {
            self.writing.remove(&r);
            match std::fs::metadata(path) {
                Ok(m) if m.is_file() => {
                    self.closed.insert(r, fingerprint(&m));
                }
                Ok(m) if m.is_dir() => {
                    for (sub, m) in proto::files::walk(path).0 {
                        let name = format!("{r}/{sub}");
                        self.writing.remove(&name);
                        self.closed.insert(name, fingerprint(&m));
                    }
                }
                _ => {}
            }
        }
    }

    /// True while a file waits to become stable (its quiet period or its close), or one is
    /// known to be open for writing: only scans can see it become ready.
    pub fn pending(&self) -> bool {
        self.waiting > 0 || !self.writing.is_empty()
    }

    /// Looks at the folder now.
    pub fn scan(&mut self, now_ms: u64) -> ScanOutcome {
        let (files, skipped) = proto::files::walk(&self.dir);
        let files: HashMap<String, Fingerprint> = files
            .into_iter()
            .map(|(rel, m)| (rel, fingerprint(&m)))
            .collect();
        let now_skipped: HashSet<String> = skipped.iter().map(|(n, _)| n.clone()).collect();
        for (name, what) in skipped {
            if !self.skipped.contains(&name) {
                tracing::warn!(file = name, "skipped: {what}, not a regular file");
            }
        }
        self.skipped = now_skipped;
        self.scan_files(&files, now_ms)
    }

    /// Decides on a listing of the folder made elsewhere (the file server's, when the
    /// coordinator learns its inputs from it): the same quiet-period rule, without close
    /// events. Hidden paths are ignored, as in a walk.
    pub fn scan_listing(
        &mut self,
        files: &HashMap<String, Fingerprint>,
        now_ms: u64,
    ) -> ScanOutcome {
        let visible: HashMap<String, Fingerprint> = files
            .iter()
            .filter(|(n, _)| !n.is_empty() && !n.split('/').any(|p| p.starts_with('.')))
            .map(|(n, fp)| (n.clone(), *fp))
            .collect();
        self.scan_files(&visible, now_ms)
    }

    fn scan_files(&mut self, files: &HashMap<String, Fingerprint>, now_ms: u64) -> ScanOutcome {
        let mut out = ScanOutcome::default();
        self.waiting = 0;
        for (name, fp) in files {
            let since = match self.seen.get(name) {
                Some((old, since)) if old == fp => *since,
                _ => {
                    // A file last modified longer ago than the quiet period is quiet already
                    // (typical at start-up, or for a file moved in with an old mtime).
                    let age_ms = std::time::SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as i64)
                        .saturating_sub(fp.mtime_ns)
                        .max(0) as u64
                        / 1_000_000;
                    let since = if age_ms >= self.quiet_ms {
                        now_ms as i64 - self.quiet_ms as i64
                    } else {
                        now_ms as i64
                    };
                    self.seen.insert(name.clone(), (*fp, since));
                    since
                }
            };
            if self.reported.get(name) == Some(fp) {
                continue;
            }
            let quiet = (now_ms as i64 - since).max(0) as u64;
            let closed = self.closed.get(name) == Some(fp);
            let writing = self.writing.contains(name);
            let ready =
                closed || (!writing && quiet >= self.quiet_ms) || quiet >= self.quiet_ms * 30;
            if ready {
                self.reported.insert(name.clone(), *fp);
                self.writing.remove(name);
                out.ready.push((name.clone(), *fp));
            } else {
                self.waiting += 1;
            }
        }
        let gone: Vec<String> = self
            .seen
            .keys()
            .filter(|n| !files.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.seen.remove(&name);
            self.closed.remove(&name);
            self.writing.remove(&name);
            if self.reported.remove(&name).is_some() {
                out.removed.push(name);
            }
        }
        out.ready.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// Quiet period, closed writes, hidden files, removal.
    fn readiness() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("a.txt"), "2\n").expect("write");
        std::fs::write(d.join(".hidden"), "3\n").expect("write");
        std::fs::create_dir(d.join(".git")).expect("mkdir");
        std::fs::write(d.join(".git/x"), "3\n").expect("write");
        let mut w = InputWatcher::new(d, 500);
        assert!(w.scan(1000).ready.is_empty(), "not quiet yet");
        assert!(
            w.pending(),
            "a file waits for its quiet period: keep scanning"
        );
        let r = w.scan(1600);
        assert_eq!(r.ready.len(), 1);
        assert_eq!(r.ready[0].0, "a.txt");
        assert!(!w.pending(), "nothing waits: the periodic walk may rest");
        assert!(w.scan(2200).ready.is_empty(), "reported once");

        std::fs::write(d.join("b.txt"), "5\n").expect("write");
        w.note_closed(&d.join("b.txt"));
        assert_eq!(
            w.scan(2300).ready.len(),
            1,
            "a closed write is ready at once"
        );

        std::fs::write(d.join("c.txt"), "7\n").expect("write");
        w.note_writing(&d.join("c.txt"));
        assert!(w.pending(), "held open for writing");
        assert!(w.scan(2400).ready.is_empty());
        assert!(
            w.scan(3000).ready.is_empty(),
            "held open: not ready after one quiet period"
        );
        w.note_closed(&d.join("c.txt"));
        assert_eq!(w.scan(3100).ready.len(), 1);
        assert!(!w.pending());

        std::fs::remove_file(d.join("a.txt")).expect("rm");
        assert_eq!(w.scan(3200).removed, vec!["a.txt".to_string()]);

        // A file older than the quiet period is ready on first sight, even right after a
        // start, when the monotonic clock is still below the quiet period.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for f in ["b.txt", "c.txt"] {
            std::fs::File::options()
                .write(true)
                .open(d.join(f))
                .and_then(|h| h.set_modified(old))
                .expect("set mtime");
        }
        // Events name files by absolute path even when the folder was given relative (the
        // default `data/input`): a folder under the current directory, named relatively.
        let here = tempfile::tempdir_in(".").expect("tempdir here");
        let name = here.path().file_name().expect("name").to_owned();
        let mut r = InputWatcher::new(std::path::Path::new(&name), 500);
        let abs = std::env::current_dir()
            .expect("cwd")
            .join(&name)
            .join("e.txt");
        std::fs::write(&abs, "13\n").expect("write");
        r.note_closed(&abs);
        assert!(
            r.scan(10).ready.iter().any(|x| x.0 == "e.txt"),
            "a closed write is seen through an absolute path"
        );
        let mut fresh = InputWatcher::new(d, 500);
        assert_eq!(
            fresh.scan(5).ready.len(),
            2,
            "old files are ready at once after a start"
        );
    }

    #[test]
    /// A folder of fresh files renamed into the watched folder is ready at once (its files
    /// were written elsewhere); a fresh file beside it still waits for its quiet period.
    fn a_folder_renamed_in_is_ready_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let input = d.join("input");
        let stage = d.join("stage/batch");
        std::fs::create_dir_all(stage.join("sub")).expect("mkdir");
        std::fs::create_dir_all(&input).expect("mkdir");
        std::fs::write(stage.join("a.txt"), "2\n").expect("write");
        std::fs::write(stage.join("sub/b.txt"), "3\n").expect("write");
        std::fs::write(stage.join(".hidden"), "5\n").expect("write");
        let mut w = InputWatcher::new(&input, 500);
        assert!(w.scan(1000).ready.is_empty());
        std::fs::rename(&stage, input.join("batch")).expect("rename in");
        std::fs::write(input.join("fresh.txt"), "7\n").expect("write");
        w.note_closed(&input.join("batch"));
        let mut ready: Vec<String> = w.scan(1010).ready.into_iter().map(|r| r.0).collect();
        ready.sort();
        assert_eq!(ready, ["batch/a.txt", "batch/sub/b.txt"]);
        assert!(w.pending(), "fresh.txt waits for its quiet period");
        let later: Vec<String> = w.scan(1600).ready.into_iter().map(|r| r.0).collect();
        assert_eq!(later, ["fresh.txt"]);
    }
}
