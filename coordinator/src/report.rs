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

/// Writes bytes to `path` atomically (temporary sibling, fsync, rename, fsync of the folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_replace(path, bytes, true)
}

/// Temporary sibling then rename, so readers never see a partial file; `durable` adds the
/// fsyncs that make it survive a power failure.
fn write_replace(path: &Path, bytes: &[u8], durable: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().context("report path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| if durable { f.sync_all() } else { Ok(()) })
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if durable {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// The source fingerprint recorded in an existing report, if it is readable.
pub fn reported_fingerprint(output: &Path, file: &str) -> Option<Fingerprint> {
    let bytes = std::fs::read(report_path(output, file)).ok()?;
    let r: Report = serde_json::from_slice(&bytes).ok()?;
    Some(r.source)
}
