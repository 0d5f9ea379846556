//! The status view of everything (`run/status.json`, the dashboard, `coordinator status`).

use super::*;

impl Core {
    /// A status view of everything, for `run/status.json`.
    pub fn status(&self, now: Now) -> StatusView {
        let mut v = StatusView {
            session: self.session.clone(),
            ..StatusView::default()
        };
        for (name, job) in &self.jobs {
            if job.reported {
                v.numbers_in_reports += job.reported_numbers;
                if job.chunks.is_empty() {
                    // Reported in an earlier session: its chunks are known from the report.
                    v.chunks_total += job.reported_chunks as u64;
                    v.chunks_done += job.reported_chunks as u64;
                }
            }
            let state = if job.reported {
                if job.report_error.is_some()
                    || job
                        .chunks
                        .iter()
                        .any(|c| matches!(c, ChunkState::Failed { .. }))
                {
                    v.files_failed += 1;
                    "failed"
                } else {
                    v.files_done += 1;
                    "done"
                }
            } else if job
                .chunks
                .iter()
                .all(|c| matches!(c, ChunkState::Queued { .. }))
            {
                v.files_queued += 1;
                "queued"
            } else {
                v.files_in_progress += 1;
                "in_progress"
            };
            v.chunks_total += job.chunks.len() as u64;
            v.chunks_done += job
                .chunks
                .iter()
                .filter(|c| matches!(c, ChunkState::Done { .. } | ChunkState::Failed { .. }))
                .count() as u64;
            if v.files.len() < 500 && state != "done" {
                v.files.push(FileStatus {
                    file: name.clone(),
                    state: state.into(),
                    chunks: job.chunks.len(),
                    chunks_done: job
                        .chunks
                        .iter()
                        .filter(|c| matches!(c, ChunkState::Done { .. }))
                        .count(),
                    error: job.report_error.clone().or_else(|| {
                        job.chunks.iter().find_map(|c| match c {
                            ChunkState::Failed { reason } => Some(reason.clone()),
                            _ => None,
                        })
                    }),
                });
            }
        }
        v.bytes_total = self.jobs.values().map(|j| j.fp.size).sum();
        for (id, w) in &self.workers {
            let tasks: Vec<String> = w
                .assigned
                .iter()
                .filter_map(|a| self.attempts.get(a))
                .map(|k| format!("{}#{}", k.file, k.chunk))
                .collect();
            v.workers.push(WorkerStatus {
                id: id.clone(),
                state: if w.conn.is_none() {
                    "disconnected".into()
                } else if tasks.is_empty() {
                    "idle".into()
                } else {
                    "busy".into()
                },
                tasks,
                last_seen_ms_ago: now.ms.saturating_sub(w.last_seen_ms),
                joined_at: w.joined.to_rfc3339(),
                tasks_done: w.tasks_done,
                numbers_tested: w.numbers,
                task_bytes_done: if w.conn.is_some() { w.progress.0 } else { 0 },
                task_bytes_total: if w.conn.is_some() { w.progress.1 } else { 0 },
            });
        }
        v.totals = self.totals.clone();
        v
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub session: String,
    pub files_done: u64,
    pub files_queued: u64,
    pub files_in_progress: u64,
    pub files_failed: u64,
    pub chunks_total: u64,
    pub chunks_done: u64,
    pub bytes_total: u64,
    /// Numbers read in the files whose report is written, over all sessions (`totals`
    /// counts this session's tests, retries included).
    #[serde(default)]
    pub numbers_in_reports: u64,
    pub files: Vec<FileStatus>,
    pub workers: Vec<WorkerStatus>,
    #[serde(skip_deserializing)]
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileStatus {
    pub file: String,
    pub state: String,
    pub chunks: usize,
    pub chunks_done: usize,
    /// Why a failed file failed (a chunk's reason, or why its report could not be written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    pub state: String,
    pub tasks: Vec<String>,
    pub last_seen_ms_ago: u64,
    pub joined_at: String,
    pub tasks_done: u64,
    pub numbers_tested: u64,
    /// Progress of the task being tested, from the last heartbeat.
    pub task_bytes_done: u64,
    pub task_bytes_total: u64,
}
