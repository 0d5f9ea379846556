//! Watching `data/jobs/`: job files become [`crate::core::GenJob`]s (or an invalid job's
//! reason). The folder is polled (jobs are few and small), with the same stability rule as
//! inputs ([`InputWatcher`]).

use std::collections::HashMap;
use std::path::Path;

use proto::jobs::JobSpec;

use crate::core::{Fingerprint, GenJob, Plan};
use crate::inputs::list_files;

/// Largest job file read: a job is one short line.
const MAX_JOB_FILE: u64 = 4096;

/// A job file's name without its `.job` suffix (the job's name in reports and status).
pub fn job_name_of(rel: &str) -> String {
    rel.strip_suffix(".job").unwrap_or(rel).to_string()
}

/// What a job file asks for, or why it cannot be run.
pub fn read_job(dir: &Path, rel: &str, segment: u64) -> Result<GenJob, String> {
    let path = dir.join(rel);
    let meta = std::fs::metadata(&path).map_err(|e| format!("cannot read the job file: {e}"))?;
    if meta.len() > MAX_JOB_FILE {
        return Err(format!(
            "the job file has {} bytes; a job is one line (at most {MAX_JOB_FILE} bytes)",
            meta.len()
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read the job file: {e}"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| "the job file is not UTF-8 text".to_string())?;
    let spec = JobSpec::parse(&text)?;
    Ok(GenJob {
        name: job_name_of(rel),
        spec,
        plan: Plan::of(spec, segment),
    })
}

/// The job files present now, by job name: fingerprint and what each asks for.
pub fn current_jobs(
    dir: &Path,
    segment: u64,
) -> HashMap<String, (Fingerprint, Result<GenJob, String>)> {
    list_files(dir)
        .into_iter()
        .map(|(rel, fp)| (job_name_of(&rel), (fp, read_job(dir, &rel, segment))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_files() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("a.job"), "primes 1 100\n").expect("write");
        std::fs::write(d.path().join("b.job"), "primes 100 1\n").expect("write");
        std::fs::write(d.path().join("c.job"), vec![b'x'; 5000]).expect("write");
        std::fs::write(d.path().join("d.job"), [0xff, 0xfe]).expect("write");
        let jobs = current_jobs(d.path(), 1000);
        assert_eq!(
            jobs["a"].1.as_ref().map(|j| j.spec),
            Ok(JobSpec::Primes { lo: 1, hi: 100 })
        );
        assert!(jobs["b"]
            .1
            .as_ref()
            .is_err_and(|e| e.contains("empty range")));
        assert!(jobs["c"]
            .1
            .as_ref()
            .is_err_and(|e| e.contains("5000 bytes")));
        assert!(jobs["d"].1.as_ref().is_err_and(|e| e.contains("UTF-8")));
    }
}
