//! Folder walking and atomic file replacement, shared by the coordinator (its input folder,
//! reports, snapshots) and the file server (its root).

use std::path::Path;

/// Every regular, non-hidden file below `dir` (hidden files and folders skipped, symlinks
/// not followed), as (path relative to `dir` with `/` separators, metadata). Unreadable
/// entries are skipped: a folder being changed while walked is normal.
pub fn visible_files(dir: &Path) -> Vec<(String, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push((e.path(), rel));
            } else if ft.is_file() {
                if let Ok(m) = e.metadata() {
                    out.push((rel, m));
                }
            }
        }
    }
    out
}

/// Replaces `path` with `bytes` atomically: a hidden temporary sibling, then a rename, so a
/// reader sees the old content or the new, never part. `durable` adds the fsyncs (file and
/// folder) that make the result survive a power failure.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if durable {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// Hidden files and folders are skipped, subfolders walked, replacement is whole.
    fn walk_and_replace() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("sub/.git")).expect("mkdir");
        for f in ["a", ".h", "sub/b", "sub/.git/c"] {
            std::fs::write(d.path().join(f), "x").expect("write");
        }
        let mut names: Vec<String> = visible_files(d.path()).into_iter().map(|x| x.0).collect();
        names.sort();
        assert_eq!(names, vec!["a", "sub/b"]);
        write_atomic(&d.path().join("a"), b"new", true).expect("replace");
        assert_eq!(std::fs::read(d.path().join("a")).expect("read"), b"new");
        assert_eq!(
            visible_files(d.path()).len(),
            2,
            "no temporary file left behind"
        );
    }
}
