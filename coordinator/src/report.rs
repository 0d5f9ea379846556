//! Per-file reports in `data/output/<file>.json`, written atomically.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::core::{Fingerprint, Report};

/// Where the report of input `file` lives.
pub fn report_path(output: &Path, file: &str) -> PathBuf {
    output.join(format!("{file}.json"))
}

/// Writes `r` atomically (temporary file, rename) without fsync: a report lost or unreadable
/// after a power failure only means the file is processed again (its primes are durable and
/// deduplicated), while an fsync per report would cost more than small files take to test.
pub fn write_report(output: &Path, r: &Report) -> anyhow::Result<()> {
    let path = report_path(output, &r.file);
    let json = serde_json::to_vec_pretty(r).context("encoding report")?;
    write_replace(&path, &json, false)
}

/// Writes bytes to `path` atomically and durably (see [`proto::files::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_replace(path, bytes, true)
}

fn write_replace(path: &Path, bytes: &[u8], durable: bool) -> anyhow::Result<()> {
    proto::files::write_atomic(path, bytes, durable)
        .with_context(|| format!("writing {}", path.display()))
}

/// The source fingerprint recorded in an existing report, if it is readable.
pub fn reported_fingerprint(output: &Path, file: &str) -> Option<Fingerprint> {
    let bytes = std::fs::read(report_path(output, file)).ok()?;
    let r: Report = serde_json::from_slice(&bytes).ok()?;
    Some(r.source)
}
