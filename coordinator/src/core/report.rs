//! A file's report: what it says, and when it is due (every chunk done or failed).

use super::*;

/// How a file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Every chunk was tested and its primes are durable.
    Done,
    /// Some chunk could not be processed (`errors` says why); tried again later.
    Failed,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Done => "done",
            ReportStatus::Failed => "failed",
        }
    }
}

/// The per-file report (`data/output/<file>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub file: String,
    pub status: ReportStatus,
    /// Content version(s) the workers read (xxh3-128 of the file, from the file server).
    pub content_version: Vec<String>,
    /// Size and modification time of the input when it was queued; a report whose
    /// fingerprint matches the file on disk means the file is done.
    pub source: Fingerprint,
    pub lines: u64,
    pub numbers_read: u64,
    pub blank_lines: u64,
    /// Primes found in the file, repeats counted.
    pub primes_found: u64,
    pub invalid_lines: InvalidSummary,
    pub workers: Vec<String>,
    pub chunks: usize,
    pub errors: Vec<String>,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvalidSummary {
    pub count: u64,
    /// The first few, with line numbers in the whole file.
    pub first: Vec<InvalidLine>,
}

impl Core {
    /// The report of `key` if every chunk is done or failed (and none reported yet).
    pub(super) fn maybe_report(&mut self, key: &Key, now: Now) -> Option<Action> {
        let job = self.jobs.get_mut(key)?;
        if job.reported || !job.complete() {
            return None;
        }
        job.reported = true;
        job.report_written = false;
        if job.work.is_some() {
            return self.job_report(key, now);
        }
        let mut r = Report {
            file: key.to_string(),
            status: ReportStatus::Done,
            content_version: Vec::new(),
            source: job.fp,
            lines: 0,
            numbers_read: 0,
            blank_lines: 0,
            primes_found: 0,
            invalid_lines: InvalidSummary {
                count: 0,
                first: Vec::new(),
            },
            workers: Vec::new(),
            chunks: job.chunks.len(),
            errors: Vec::new(),
            started_at: job.started_at.unwrap_or(now.wall).to_rfc3339(),
            finished_at: now.wall.to_rfc3339(),
        };
        let mut workers = BTreeSet::new();
        for (i, c) in job.chunks.iter().enumerate() {
            match c {
                ChunkState::Done { result, worker } => {
                    for inv in &result.first_invalid {
                        if r.invalid_lines.first.len() < 10 {
                            r.invalid_lines.first.push(InvalidLine {
                                line: r.lines + inv.line,
                                reason: inv.reason.clone(),
                            });
                        }
                    }
                    r.lines += result.lines;
                    r.numbers_read += result.numbers;
                    r.blank_lines += result.blank;
                    r.primes_found += result.primes;
                    r.invalid_lines.count += result.invalid;
                    if !result.version.is_empty() && !r.content_version.contains(&result.version) {
                        r.content_version.push(result.version.clone());
                    }
                    workers.insert(worker.clone());
                }
                ChunkState::Failed { reason } => {
                    r.status = ReportStatus::Failed;
                    r.errors.push(format!("chunk {i}: {reason}"));
                }
                _ => {}
            }
        }
        if r.status == ReportStatus::Failed && r.invalid_lines.count > 0 {
            // Line numbers after a failed chunk are unknown; say so rather than mislead.
            r.errors.push(
                "line numbers after a failed chunk are relative to the next processed chunk".into(),
            );
        }
        r.workers = workers.into_iter().collect();
        job.reported_chunks = r.chunks;
        job.reported_numbers = r.numbers_read;
        if r.status == ReportStatus::Failed {
            job.failed_round(self.cfg.failed_retry_ms, now);
        }
        Some(Action::WriteReport(r))
    }

    /// The report of `key` (this version) is on disk.
    pub fn report_written(&mut self, key: &Key, fp: Fingerprint) {
        if let Some(job) = self.jobs.get_mut(key).filter(|j| j.fp == fp) {
            job.report_written = true;
        }
    }
}
