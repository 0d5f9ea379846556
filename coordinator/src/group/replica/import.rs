//! Taking in the root files another group (or a coordinator without a group) left: the
//! import folder beside the root primes file, merged into the replica streaming.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tracing::info;

use super::State;
use crate::group::files;

impl State {
    /// Merges the root files the import folder holds (their first `primes_len` and
    /// `ledger_len` bytes, all reports) into this replica, streaming: an empty replica
    /// takes a copy, one with state of its own the union (the imported reports replacing
    /// its own: they are the newer). A member that cannot see the import folder (on
    /// another host) logs it and goes on without: it holds less than the others then.
    pub(super) fn import_root(&mut self, primes_len: u64, ledger_len: u64) -> anyhow::Result<()> {
        let src = self.import_dir.clone();
        let (src_primes, src_output) = (src.join("primes.txt"), src.join("output"));
        let have = std::fs::metadata(&src_primes).map_or(0, |m| m.len());
        if have < primes_len {
            tracing::error!(
                folder = %src.display(),
                have,
                primes_len,
                "cannot see the root files the leader imports: this member goes on without them"
            );
            return Ok(());
        }
        let added = self.primes.merge_from(
            &src_primes,
            primes_len,
            &crate::primes::ledger_path(&src_primes),
            ledger_len,
        )?;
        let output = self.dir.join("output");
        let reports = copy_tree(&src_output, &output)?;
        info!(
            added,
            reports,
            primes = self.primes.len(),
            "took the root files left by another group (or a coordinator without a group) into this group's state"
        );
        Ok(())
    }
}

/// Copies the files under `from` (hidden ones skipped) to the same names under `to`, each
/// atomically (reports: small); how many.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    files::for_each_report(from, &mut |name, src| {
        let dst = to.join(name);
        let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        proto::files::write_atomic(&dst, &bytes, false)
            .with_context(|| format!("writing {}", dst.display()))?;
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// The folder beside the root primes file `root_primes` where an import's files are linked
/// (`primes.txt.import/`).
pub fn import_dir(root_primes: &Path) -> PathBuf {
    let mut s = root_primes.as_os_str().to_owned();
    s.push(".import");
    PathBuf::from(s)
}
