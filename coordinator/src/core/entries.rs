//! The table's entries coming and going: what the core knows of each file and job, a file
//! queued (new or changed), found reported at start-up, or removed, and a job removed.

use super::*;

impl Core {
    /// The fingerprint of the version of `key` the core tracks, if any.
    pub fn known(&self, key: &Key) -> Option<Fingerprint> {
        self.jobs.get(key).map(|j| j.fp)
    }

    /// The content version of the version of `key` the coordinator knows (what its workers
    /// read, or what its report says), if known.
    pub fn content_version(&self, key: &Key) -> Option<String> {
        let job = self.jobs.get(key)?;
        job.chunks
            .iter()
            .find_map(|c| match c {
                ChunkState::Done { result, .. } | ChunkState::Flushing { result, .. }
                    if !result.version.is_empty() =>
                {
                    Some(result.version.clone())
                }
                _ => None,
            })
            .or_else(|| job.reported_version.clone())
    }

    /// Records the content version the report of `file` gives (start-up).
    pub fn set_reported_version(&mut self, file: &str, version: String) {
        if let Some(j) = self.jobs.get_mut(&Key::file(file)) {
            j.reported_version = Some(version);
        }
    }

    /// The fingerprint to take for `file` as a file server lists it: its own, unless the
    /// coordinator knows the file under another fingerprint with the same content version
    /// (another server's copy: its mtime and inode are that server's), then the known one,
    /// so that a listing failing over to a backup does not make every file look changed.
    pub fn identify(&self, file: &str, fp: Fingerprint, version: Option<&str>) -> Fingerprint {
        let key = Key::file(file);
        match (self.known(&key), version) {
            (Some(k), Some(v))
                if k != fp
                    && k.size == fp.size
                    && self.content_version(&key).as_deref() == Some(v) =>
            {
                k
            }
            _ => fp,
        }
    }

    /// True if `key` has work not finished yet (queued, running, or waiting to be flushed).
    pub fn in_progress(&self, key: &Key) -> bool {
        self.jobs.get(key).is_some_and(|j| !j.reported)
    }

    /// A file whose `done` report for this fingerprint already exists: nothing to queue.
    /// `chunks` and `numbers` come from the report, for the status totals.
    pub fn file_reported(&mut self, file: &str, fp: Fingerprint, chunks: usize, numbers: u64) {
        self.reported_entry(Key::file(file), fp, chunks, numbers);
    }

    /// Inputs whose `done` reports were found: at start-up, or with the first listing of a
    /// file server that answered only after start-up. Nothing to queue for them. A file the
    /// core already tracks is left as it is (what it knows is newer than a report read).
    pub fn reports_found(&mut self, found: Vec<FoundReport>) {
        for f in found {
            if self.known(&Key::file(f.file.as_str())).is_some() {
                continue;
            }
            self.file_reported(&f.file, f.source, f.chunks, f.numbers);
            if let Some(v) = f.version {
                self.set_reported_version(&f.file, v);
            }
        }
    }

    /// An entry (a file, a job) whose report for this fingerprint already exists.
    pub(super) fn reported_entry(
        &mut self,
        key: Key,
        fp: Fingerprint,
        chunks: usize,
        numbers: u64,
    ) {
        self.next_gen += 1;
        self.jobs.insert(
            key,
            Tracked {
                reported: true,
                reported_chunks: chunks,
                reported_numbers: numbers,
                report_written: true,
                ..Tracked::new(self.next_gen, fp, Vec::new(), None)
            },
        );
    }

    /// A file (new or changed) is stable and must be processed.
    pub fn file_ready(&mut self, file: &str, fp: Fingerprint, now: Now) -> Vec<Action> {
        let key = Key::file(file);
        if self.jobs.get(&key).is_some_and(|j| j.fp == fp) {
            return Vec::new();
        }
        let mut actions = self.drop_entry(&key);
        self.next_gen += 1;
        let gen = self.next_gen;
        if let Some(reason) = crate::report::report_name_refused(file) {
            tracing::warn!(file, reason, "input not tested");
            let mut refused = Tracked::new(gen, fp, Vec::new(), Some(now.wall));
            // Failed for good: never retried (nothing changes until the file is renamed,
            // which makes it another input).
            refused.reported = true;
            refused.report_error = Some(reason);
            self.jobs.insert(key, refused);
            return actions;
        }
        let chunks = chunk_count(fp.size, self.cfg.chunk_bytes);
        for c in 0..chunks as u32 {
            self.queue.push_back(ChunkKey::new(&key, gen, c));
        }
        self.jobs.insert(
            key,
            Tracked::new(
                gen,
                fp,
                vec![ChunkState::Queued { ready_ms: now.ms }; chunks],
                None,
            ),
        );
        actions.extend(self.assign(now));
        actions
    }

    /// A file vanished: forget it (its queued chunks go; running attempts are cancelled).
    pub fn file_removed(&mut self, file: &str) -> Vec<Action> {
        self.drop_entry(&Key::file(file))
    }

    /// A job file vanished: forget the job, as [`Core::file_removed`] a file.
    pub fn job_removed(&mut self, name: &str) -> Vec<Action> {
        self.drop_entry(&Key::job(name))
    }

    /// Forgets `key` (its queued chunks go; running attempts are cancelled).
    pub(super) fn drop_entry(&mut self, key: &Key) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(job) = self.jobs.remove(key) {
            for c in job.chunks {
                if let ChunkState::Assigned { attempt, worker } = c {
                    self.attempts.remove(&attempt);
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.assigned.retain(|(a, _)| *a != attempt);
                        if let Some(conn) = w.conn {
                            actions.push(Action::Send(conn, CoordMsg::Cancel { attempt }));
                        }
                    }
                }
            }
        }
        actions
    }
}

/// An input whose `done` report exists for its listed version ([`Core::reports_found`]):
/// the report's source fingerprint, chunk and number counts (for the status totals) and
/// content version (when the report names exactly one).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FoundReport {
    pub file: String,
    pub source: Fingerprint,
    pub chunks: usize,
    pub numbers: u64,
    pub version: Option<String>,
}
