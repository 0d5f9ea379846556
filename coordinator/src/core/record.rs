//! The coordinator's state as a snapshot records it, and a file restored from a snapshot.

use super::*;

/// The coordinator's recorded state in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordState {
    pub session: String,
    /// Files (and jobs) whose report is written (all their tasks are completed and
    /// durable).
    pub completed_files: Vec<Key>,
    /// Files still being worked on, chunk by chunk.
    pub files: Vec<FileState>,
    /// Primes received but not yet flushed (they belong to `flushing` chunks or to attempts
    /// still running; those of `primes` job segments included).
    pub pending_small: Vec<u64>,
    pub pending_big: Vec<String>,
    /// Workers connected when the state was recorded.
    pub workers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileState {
    /// The file or job (written `file`, as it was when only files had chunks).
    #[serde(rename = "file")]
    pub key: Key,
    pub fingerprint: Fingerprint,
    pub reported: bool,
    pub chunks: Vec<ChunkState>,
    /// When its first task was handed out (a file's, a job's report's `started_at`): a
    /// restart or a new leader that resumes it from this snapshot keeps it. Absent in
    /// snapshots of older versions, and while nothing of it was handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
}

impl Core {
    /// Records the state for a snapshot (the caller holds the lock that orders messages).
    pub fn record(&self) -> CoordState {
        CoordState {
            session: self.session.clone(),
            completed_files: self
                .jobs
                .iter()
                .filter(|(_, j)| j.reported)
                .map(|(k, _)| k.clone())
                .collect(),
            files: self
                .jobs
                .iter()
                .filter(|(_, j)| !j.reported)
                .map(|(k, j)| FileState {
                    key: k.clone(),
                    fingerprint: j.fp,
                    reported: j.reported,
                    chunks: j.chunks.clone(),
                    started_at: j.started_at,
                })
                .collect(),
            // Segment primes too: recovery flushes them as plain primes (into the set).
            pending_small: self
                .pending
                .small
                .iter()
                .chain(self.pending.runs.iter().flat_map(|r| &r.primes))
                .copied()
                .collect(),
            pending_big: self.pending.big.clone(),
            workers: self
                .workers
                .iter()
                .filter(|(_, w)| w.conn.is_some())
                .map(|(id, _)| id.clone())
                .collect(),
        }
    }

    /// Recovery: a file (or job) whose chunks a snapshot knows. `finished` holds, per chunk,
    /// the result if the snapshot proves the chunk finished (its primes are durable or in
    /// `FlushBatch` being recovered); other chunks are queued. `started_at` is the time the
    /// snapshot recorded (the restart's time if none). Returns the chunks to mark done once
    /// the recovered primes are flushed.
    pub fn restore_entry(
        &mut self,
        key: &Key,
        fp: Fingerprint,
        finished: Vec<Option<(TaskDone, String)>>,
        started_at: Option<DateTime<Utc>>,
        now: Now,
    ) -> Vec<ChunkKey> {
        self.next_gen += 1;
        let gen = self.next_gen;
        let mut chunks = Vec::with_capacity(finished.len());
        let mut done = Vec::new();
        for (i, f) in finished.into_iter().enumerate() {
            match f {
                Some((result, worker)) => {
                    chunks.push(ChunkState::Flushing { result, worker });
                    done.push(ChunkKey::new(key, gen, i as u32));
                }
                None => {
                    chunks.push(ChunkState::Queued { ready_ms: now.ms });
                    self.queue.push_back(ChunkKey::new(key, gen, i as u32));
                }
            }
        }
        self.jobs.insert(
            key.clone(),
            Tracked::new(gen, fp, chunks, Some(started_at.unwrap_or(now.wall))),
        );
        done
    }
}
