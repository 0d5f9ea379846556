//! The status view of everything (`run/status.json`, the dashboard, `coordinator status`).

use super::*;

impl Core {
    /// A status view of everything, for `run/status.json`.
    pub fn status(&self, now: Now) -> StatusView {
        let mut v = StatusView {
            session: self.session.clone(),
            ..StatusView::default()
        };
        for (key, job) in &self.jobs {
            if let Some(g) = &job.work {
                let state = if !job.reported {
                    "running"
                } else if !job.report_written {
                    "finishing"
                } else if job
                    .chunks
                    .iter()
                    .any(|c| matches!(c, ChunkState::Failed { .. }))
                {
                    "failed"
                } else {
                    "done"
                };
                v.jobs.push(JobStatus {
                    job: g.name.clone(),
                    line: g.spec.line(),
                    state: state.into(),
                    tasks: job.chunks.len(),
                    tasks_done: job
                        .chunks
                        .iter()
                        .filter(|c| matches!(c, ChunkState::Done { .. }))
                        .count(),
                    error: job.chunks.iter().find_map(|c| match c {
                        ChunkState::Failed { reason } => Some(reason.clone()),
                        _ => None,
                    }),
                });
                continue;
            }
            if let Some(jn) = key.job_name() {
                // Done in an earlier session, or invalid: as its report says.
                v.jobs.push(match &job.shown {
                    Some(s) => (**s).clone(),
                    None => JobStatus {
                        job: jn.to_string(),
                        line: String::new(),
                        state: "invalid".into(),
                        tasks: 0,
                        tasks_done: 0,
                        error: None,
                    },
                });
                continue;
            }
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
                    FileProgress::Failed
                } else if !job.report_written {
                    // Finished, but its report is not on disk yet: not done until it is.
                    v.files_in_progress += 1;
                    FileProgress::InProgress
                } else {
                    v.files_done += 1;
                    FileProgress::Done
                }
            } else if job
                .chunks
                .iter()
                .all(|c| matches!(c, ChunkState::Queued { .. }))
            {
                v.files_queued += 1;
                FileProgress::Queued
            } else {
                v.files_in_progress += 1;
                FileProgress::InProgress
            };
            v.chunks_total += job.chunks.len() as u64;
            v.chunks_done += job
                .chunks
                .iter()
                .filter(|c| matches!(c, ChunkState::Done { .. } | ChunkState::Failed { .. }))
                .count() as u64;
            if v.files.len() < 500 && state != FileProgress::Done {
                v.files.push(FileStatus {
                    file: key.to_string(),
                    state,
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
        v.bytes_total = self
            .jobs
            .iter()
            .filter(|(k, _)| !k.is_job())
            .map(|(_, j)| j.fp.size)
            .sum();
        for (id, w) in &self.workers {
            let tasks: Vec<String> = w
                .assigned
                .iter()
                .filter_map(|(a, _)| self.attempts.get(a))
                .map(|k| format!("{}#{}", k.key, k.chunk))
                .collect();
            v.workers.push(WorkerStatus {
                id: id.clone(),
                state: if w.conn.is_none() {
                    WorkerLink::Disconnected
                } else if tasks.is_empty() {
                    WorkerLink::Idle
                } else {
                    WorkerLink::Busy
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
    /// Generation jobs (`data/jobs/`).
    #[serde(default)]
    pub jobs: Vec<JobStatus>,
    pub workers: Vec<WorkerStatus>,
    #[serde(skip_deserializing)]
    pub totals: Totals,
}

/// Where a file stands, as status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileProgress {
    Queued,
    InProgress,
    Done,
    Failed,
}

/// A worker as status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerLink {
    /// Connected, holding no task.
    Idle,
    /// Connected, holding tasks.
    Busy,
    /// Its connection is gone (it may come back).
    Disconnected,
}

impl WorkerLink {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerLink::Idle => "idle",
            WorkerLink::Busy => "busy",
            WorkerLink::Disconnected => "disconnected",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileStatus {
    pub file: String,
    pub state: FileProgress,
    pub chunks: usize,
    pub chunks_done: usize,
    /// Why a failed file failed (a chunk's reason, or why its report could not be written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A generation job as status shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub job: String,
    /// The job's line (empty for an invalid job file).
    pub line: String,
    /// running, finishing (results durable, report being written), done, failed, invalid.
    pub state: String,
    pub tasks: usize,
    pub tasks_done: usize,
    /// Why it is invalid or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    pub state: WorkerLink,
    pub tasks: Vec<String>,
    pub last_seen_ms_ago: u64,
    pub joined_at: String,
    pub tasks_done: u64,
    pub numbers_tested: u64,
    /// Progress of the task being tested, from the last heartbeat.
    pub task_bytes_done: u64,
    pub task_bytes_total: u64,
}
