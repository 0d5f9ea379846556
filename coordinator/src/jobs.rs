//! Watching `data/jobs/`: job files become [`crate::core::GenJob`]s (or an invalid job's
//! reason). The folder is polled (jobs are few and small), with the same stability rule as
//! inputs (`InputWatcher`).

use std::collections::HashMap;
use std::path::Path;

use proto::jobs::JobSpec;

use crate::core::{Fingerprint, GenJob};
use crate::inputs::list_files;

/// Largest job file read: a job is one short line.
const MAX_JOB_FILE: u64 = 4096;

/// A job file's name without its `.job` suffix (the job's name in reports and status).
pub fn job_name_of(rel: &str) -> String {
    rel.strip_suffix(".job").unwrap_or(rel).to_string()
}

/// Longest job line `coordinator submit` takes.
pub const MAX_SUBMIT_LINE: usize = 1024;

/// True if job lines `a` and `b` are the same job line, however spaced
/// (`count  1   1000` is `count 1 1000`).
pub fn same_line(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// Why submitting job `name` with `line` would replace another job, if it would: the job
/// file `file` holds another line. `whence` says where that job came from ("was submitted
/// before", "is in the jobs folder"). No file: None; a file that cannot be read: the error.
pub fn taken_otherwise(
    file: &std::path::Path,
    name: &str,
    line: &str,
    whence: &str,
) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(file) {
        Ok(kept) if !same_line(&kept, line) => Ok(Some(format!(
            "a job named {name} {whence} with another line ({}): submit it with --replace \
             to replace it, or give another name",
            kept.trim()
        ))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether job `name` with `line` may be submitted to the group (`coordinator submit`):
/// the name 1–64 of `[A-Za-z0-9._-]`, not starting with `.` (it becomes the file
/// `<name>.job` and the report `jobs/<name>.json`), and the line a valid job. Checked by
/// the command and again by the leader before it commits it.
pub fn check_submission(name: &str, line: &str) -> Result<JobSpec, String> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return Err(format!(
            "job name {name:?} must be 1-64 of [A-Za-z0-9._-], not starting with '.'"
        ));
    }
    if line.len() > MAX_SUBMIT_LINE {
        return Err(format!(
            "a job is one line of at most {MAX_SUBMIT_LINE} bytes, not {}",
            line.len()
        ));
    }
    worker::kinds::parse(line)
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
    let spec = worker::kinds::parse(&text)?;
    GenJob::new(job_name_of(rel), spec, segment)
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
    fn submissions() {
        for (name, line, ok) in [
            ("a", "primes 1 100", true),
            ("big-1.x_y", "count 1 1000000", true),
            ("", "primes 1 100", false),
            (".hidden", "primes 1 100", false),
            ("a/b", "primes 1 100", false),
            ("..", "primes 1 100", false),
            ("a b", "primes 1 100", false),
            ("a", "primes 100 1", false),
            ("a", "frobnicate 3", false),
            ("tw", "twins 1 1000", true),
            ("a", "", false),
        ] {
            assert_eq!(
                check_submission(name, line).is_ok(),
                ok,
                "{name:?} {line:?}"
            );
        }
        assert!(check_submission("a", &format!("nth {}", "1".repeat(2000))).is_err());
        assert!(check_submission(&"n".repeat(65), "nth 5").is_err());
    }

    #[test]
    fn job_files() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("a.job"), "primes 1 100\n").expect("write");
        std::fs::write(d.path().join("b.job"), "primes 100 1\n").expect("write");
        std::fs::write(d.path().join("c.job"), vec![b'x'; 5000]).expect("write");
        std::fs::write(d.path().join("d.job"), [0xff, 0xfe]).expect("write");
        let jobs = current_jobs(d.path(), 1000);
        assert_eq!(
            jobs["a"].1.as_ref().map(|j| j.spec.clone()),
            Ok(JobSpec::new("primes", &[("lo", 1), ("hi", 100)]))
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
