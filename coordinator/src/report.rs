//! Per-file reports in `data/output/<file>.json`, written atomically.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::core::Report;

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
    write_replace(&path, &json, false).map_err(|e| match clash(output, &path) {
        Some(why) => e.context(why),
        None => e,
    })
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
pub fn read_report(output: &Path, file: &str) -> Option<Report> {
    let bytes = std::fs::read(report_path(output, file)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
