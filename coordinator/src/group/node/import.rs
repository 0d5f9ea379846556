//! Importing the root files a group did not write last (another group's, or a coordinator
//! without a group's) into the group's state through the log, before a leader takes them.

use std::path::Path;

use anyhow::Context;
use tracing::info;

use crate::group::{Command, Outcome, Raft};
use crate::server::Config;

/// Before taking the root files: if this group did not write them last (the fence names
/// another group, or nobody: a coordinator without a group, simple mode before replicated
/// or the other way round), they become part of the group's state through the log (every
/// member merges them); the lead would otherwise replace them with this member's older or
/// empty state.
pub(super) async fn import_root(raft: &Raft, group_id: &str, cfg: &Config) -> anyhow::Result<()> {
    let (_, holder) = crate::group::mirror::read_fence(&cfg.primes);
    if holder == group_id {
        return Ok(());
    }
    let (primes, output) = (cfg.primes.clone(), cfg.output.clone());
    let lens = tokio::task::spawn_blocking(move || prepare_import(&primes, &output))
        .await
        .context("linking the root files for an import")??;
    let Some((primes_len, ledger_len)) = lens else {
        return Ok(());
    };
    info!(
        primes_bytes = primes_len,
        ledger_bytes = ledger_len,
        "importing the root files left by another group (or a coordinator without a group)"
    );
    let r = raft
        .client_write(Command::ImportRoot {
            primes_len,
            ledger_len,
        })
        .await
        .map_err(|e| anyhow::anyhow!("import not committed: {e}"))?;
    match r.data {
        Outcome::Imported(_) => Ok(()),
        other => anyhow::bail!("unexpected outcome of an import: {other:?}"),
    }
}

/// Puts the root files into the import folder beside them ([`crate::group::replica::import_dir`]),
/// replacing an older import: hard links (the root files of another group are its member's
/// files, which only ever grow at the end, so the prefix an import names stays as it was;
/// reports are replaced by rename, so a link keeps the version linked), or streamed copies
/// where links cannot be made. The lengths of the primes file and ledger linked (whole
/// lines), or None if the root holds nothing.
fn prepare_import(primes: &Path, output: &Path) -> anyhow::Result<Option<(u64, u64)>> {
    let dir = crate::group::replica::import_dir(primes);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("output"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut lens = [0u64; 2];
    for (i, (from, name)) in [
        (primes.to_path_buf(), "primes.txt"),
        (crate::primes::ledger_path(primes), "primes.txt.ranges"),
    ]
    .into_iter()
    .enumerate()
    {
        let to = dir.join(name);
        match link_or_copy(&from, &to) {
            Ok(()) => {
                let mut f = std::fs::File::open(&to)
                    .with_context(|| format!("opening {}", to.display()))?;
                let len = f
                    .metadata()
                    .with_context(|| format!("reading {}", to.display()))?
                    .len();
                lens[i] = crate::primes::whole_lines_len(&mut f, len, &to)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("linking {} for an import", from.display()))
            }
        }
    }
    let reports = link_tree(output, &dir.join("output"))?;
    if lens == [0, 0] && reports == 0 {
        return Ok(None);
    }
    Ok(Some((lens[0], lens[1])))
}

/// A hard link to `from` at `to`, or a copy where a link cannot be made.
fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(e),
        Err(_) => std::fs::copy(from, to).map(|_| ()),
    }
}

/// Links (or copies) every file under `from` to the same name under `to`; how many.
fn link_tree(from: &Path, to: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    crate::group::files::for_each_report(from, &mut |name, src| {
        let dst = to.join(name);
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        match link_or_copy(src, &dst) {
            Ok(()) => n += 1,
            // Replaced or removed meanwhile: a report of a file in flux is not imported.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("linking {}", src.display())),
        }
        Ok(())
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn write(path: &Path, body: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }

    fn same_file(a: &Path, b: &Path) -> bool {
        let (a, b) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
        (a.dev(), a.ino()) == (b.dev(), b.ino())
    }

    #[test]
    fn an_import_links_the_root_files_and_names_their_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (primes, output) = (dir.path().join("primes.txt"), dir.path().join("output"));
        // A torn last line (a writer killed mid-append) is not part of the import.
        write(&primes, "2\n3\n5");
        write(&crate::primes::ledger_path(&primes), "job a 1 10\n");
        write(&output.join("a.json"), "{}");
        write(&output.join("sub/b.json"), "{}");
        write(&output.join(".a.json.tmp"), "half");

        let lens = prepare_import(&primes, &output).unwrap();
        assert_eq!(lens, Some((4, 11)));
        let to = crate::group::replica::import_dir(&primes);
        assert!(
            same_file(&primes, &to.join("primes.txt")),
            "linked, not copied"
        );
        assert!(same_file(
            &output.join("sub/b.json"),
            &to.join("output/sub/b.json")
        ));
        assert!(to.join("output/a.json").exists());
        assert!(
            !to.join("output/.a.json.tmp").exists(),
            "temporaries are not imported"
        );

        // The root's primes file grows at its end only: the length named stays a prefix of
        // the linked file.
        std::fs::write(&primes, "2\n3\n5\n7\n").unwrap();
        assert!(std::fs::read(to.join("primes.txt"))
            .unwrap()
            .starts_with(b"2\n3\n"));
    }

    #[test]
    fn an_empty_root_imports_nothing_and_clears_an_older_import() {
        let dir = tempfile::tempdir().unwrap();
        let (primes, output) = (dir.path().join("primes.txt"), dir.path().join("output"));
        let old = crate::group::replica::import_dir(&primes).join("primes.txt");
        write(&old, "11\n");

        assert_eq!(prepare_import(&primes, &output).unwrap(), None);
        assert!(!old.exists(), "an older import is replaced");
    }

    #[test]
    fn reports_alone_are_an_import() {
        let dir = tempfile::tempdir().unwrap();
        let (primes, output) = (dir.path().join("primes.txt"), dir.path().join("output"));
        write(&output.join("only.json"), "{}");

        assert_eq!(prepare_import(&primes, &output).unwrap(), Some((0, 0)));
        let to = crate::group::replica::import_dir(&primes);
        assert!(to.join("output/only.json").exists());
    }
}
