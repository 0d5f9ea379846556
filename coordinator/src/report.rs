//! Per-file reports in `data/output/<file>.json`, written atomically.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::core::{JobReport, Report};

/// Where the report of input `file` lives.
pub fn report_path(output: &Path, file: &str) -> PathBuf {
    output.join(format!("{file}.json"))
}

/// Why input `file` (its path below the input folder) can have no report, if it cannot: a
/// report is named `<name>.json`, and a file name holds at most 255 bytes, so a name of
/// more than 250 bytes cannot have one. Such an input is not tested at all (nothing it
/// found could ever be reported) and shows as failed with this reason.
pub fn report_name_refused(file: &str) -> Option<String> {
    let name = file.rsplit('/').next().unwrap_or(file);
    let most = proto::files::NAME_MAX - ".json".len();
    (name.len() > most).then(|| {
        format!(
            "its name is {} bytes long: its report would be named <name>.json, and a file \
             name holds at most {} bytes; rename it to at most {most} bytes",
            name.len(),
            proto::files::NAME_MAX
        )
    })
}

/// Writes `r` atomically (temporary file, rename) without fsync: a report lost or unreadable
/// after a power failure only means the file is processed again (its primes are durable and
/// deduplicated), while an fsync per report would cost more than small files take to test.
/// `jobs` is the jobs folder: a job owns `data/output/jobs/<name>.json`, so an input
/// `jobs/<name>` (whose report would be the same file) cannot have its report.
pub fn write_report(output: &Path, r: &Report, jobs: &Path) -> anyhow::Result<()> {
    if let Some(clash) = job_clash(output, r, jobs) {
        anyhow::bail!(clash);
    }
    write_report_only(output, r, &crate::spare::Spares::default())
}

/// Why report `r` cannot be written because a job owns its name (an input
/// `data/input/jobs/<name>` while the job `<name>` exists in `jobs`), if that is why. A
/// group's leader decides this before it proposes a report (apply depends on the log alone).
pub fn job_clash(output: &Path, r: &Report, jobs: &Path) -> Option<String> {
    let rest = r.file.strip_prefix("jobs/")?;
    let job = crate::inputs::list_files(jobs)
        .into_keys()
        .find(|rel| crate::jobs::job_name_of(rel) == rest)?;
    Some(format!(
        "report name clash: {} is the report of the job {}; rename the input folder `jobs`",
        report_path(output, &r.file).display(),
        jobs.join(job).display()
    ))
}

/// Writes report `r` atomically (no check against the jobs: see [`job_clash`]), over a
/// spare report file if `spares` has one ([`crate::spare`]).
pub fn write_report_only(
    output: &Path,
    r: &Report,
    spares: &crate::spare::Spares,
) -> anyhow::Result<()> {
    let path = report_path(output, &r.file);
    let json = serde_json::to_vec_pretty(r).context("encoding report")?;
    let written = spares
        .write(&path, &json)
        .with_context(|| format!("writing {}", path.display()));
    written.map_err(|e| match clash(output, &path) {
        Some(why) => e.context(why),
        None => e,
    })
}

/// Where the report of job `name` lives: `data/output/jobs/<name>.json`.
pub fn job_report_path(output: &Path, name: &str) -> PathBuf {
    output.join("jobs").join(format!("{name}.json"))
}

/// Writes a job's report atomically; a job's value (a factorial's decimal digits, twin
/// pairs) goes first to `data/output/jobs/<name>.txt` (a newline after), fsynced, and the
/// report names the SHA-256 of the file's bytes, and its digits if it is one number.
pub fn write_job_report(output: &Path, r: &mut JobReport) -> anyhow::Result<()> {
    use sha2::Digest;
    if let Some(value) = r.value.take() {
        let path = output.join("jobs").join(format!("{}.txt", r.job));
        let mut bytes = value.into_bytes();
        if bytes.iter().all(u8::is_ascii_digit) {
            r.digits = Some(bytes.len() as u64);
        }
        bytes.push(b'\n');
        r.sha256 = Some(hex::encode(sha2::Sha256::digest(&bytes)));
        write_replace(&path, &bytes, true)?;
    }
    let json = serde_json::to_vec_pretty(r).context("encoding job report")?;
    write_replace(&job_report_path(output, &r.job), &json, true)
}

/// Why `path` cannot hold a report because of another input's reports, if that is why:
/// input `x` has its report at `x.json`, which is a folder when an input folder is named
/// `x.json`; and the other way round.
fn clash(output: &Path, path: &Path) -> Option<String> {
    if path.is_dir() {
        return Some(format!(
            "report name clash: {} is a folder (of the reports of an input folder with that name)",
            path.display()
        ));
    }
    let mut p = path.parent();
    while let Some(d) = p {
        if d == output || !d.starts_with(output) {
            break;
        }
        if d.is_file() {
            return Some(format!(
                "report name clash: {} is the report of another input, so it cannot be a folder",
                d.display()
            ));
        }
        p = d.parent();
    }
    None
}

fn write_replace(path: &Path, bytes: &[u8], durable: bool) -> anyhow::Result<()> {
    proto::files::write_atomic(path, bytes, durable)
        .with_context(|| format!("writing {}", path.display()))
}

/// The existing report of `file`, if it is readable.
/// The report of job `name`, if one is there and readable.
pub fn read_job_report(output: &Path, name: &str) -> Option<JobReport> {
    let bytes = std::fs::read(job_report_path(output, name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn read_report(output: &Path, file: &str) -> Option<Report> {
    let bytes = std::fs::read(report_path(output, file)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
