//! Folder walking, file fingerprints and atomic file replacement, shared by the coordinator
//! (its input folder, reports, snapshots) and the file server (its root).

use std::path::Path;
use std::time::UNIX_EPOCH;

/// What identifies a version of a file cheaply, without reading it. Size and mtime alone
/// miss a rewrite that keeps both (`dd conv=notrunc` then `touch -r`): the change time
/// cannot be set back by a user and moves with every write, and the inode changes when a
/// file is replaced by rename, so all four together decide "changed".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub size: u64,
    pub mtime_ns: i64,
    /// Status change time (ns since the epoch). Absent in reports written before it was
    /// recorded: such a report matches no file, so the file is checked again (harmless:
    /// its primes are deduplicated).
    #[serde(default)]
    pub ctime_ns: i64,
    #[serde(default)]
    pub inode: u64,
}

impl Fingerprint {
    /// The fingerprint of a file from its metadata.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64);
        #[cfg(unix)]
        let (ctime_ns, inode) = {
            use std::os::unix::fs::MetadataExt;
            (
                meta.ctime().saturating_mul(1_000_000_000) + meta.ctime_nsec(),
                meta.ino(),
            )
        };
        #[cfg(not(unix))]
        let (ctime_ns, inode) = (mtime_ns, 0);
        Fingerprint {
            size: meta.len(),
            mtime_ns,
            ctime_ns,
            inode,
        }
    }

    /// A short token naming this state of a file on this host (not content-derived: two
    /// replicas give different tokens for the same bytes).
    pub fn token(&self) -> String {
        format!(
            "fp-{:x}-{:x}-{:x}-{:x}",
            self.size, self.mtime_ns, self.ctime_ns, self.inode
        )
    }
}

/// True if `path` is below folder `root` (both absolute, or both relative to the same
/// folder) through a hidden name (a file or folder whose name starts with `.`): nothing a
/// walk of `root` sees ([`visible_files`], [`walk`]).
pub fn hidden_below(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root).is_ok_and(|rel| {
        rel.components()
            .any(|c| c.as_os_str().to_str().is_some_and(|n| n.starts_with('.')))
    })
}

/// True if a file notification's `paths` are all hidden below the watched folder `root`
/// (and there is one at least): a write staged in `.stage/` before its rename, the removal
/// of that folder. It changes no visible file, so it needs no scan.
pub fn only_hidden_below(root: &Path, paths: &[std::path::PathBuf]) -> bool {
    !paths.is_empty() && paths.iter().all(|p| hidden_below(root, p))
}

/// The kinds of change a watched folder of inputs reports: creations, removals, writes,
/// renames, metadata and closes after writing. Not opens: every read of an input (the file
/// server serving it, a scan) would wake the watcher for nothing, 2,000 wake-ups for a
/// batch of 2,000 small files. The kernel filters them (inotify's mask), so they never
/// reach the process. Nor closes after reading (notify's default leaves them out too).
pub fn input_change_kinds() -> notify::EventKindMask {
    notify::EventKindMask::CORE | notify::EventKindMask::ACCESS_CLOSE
}

/// Watches `dir` and everything below it for [`input_change_kinds`], handing each event (or
/// error: events were lost) to `handler`. The folder is watched by its canonical path, so
/// events carry absolute paths however `dir` was given.
pub fn watch_inputs<F: notify::EventHandler>(
    dir: &Path,
    handler: F,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let config = notify::Config::default().with_event_kinds(input_change_kinds());
    let mut w = notify::RecommendedWatcher::new(handler, config)?;
    let abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    w.watch(&abs, notify::RecursiveMode::Recursive)?;
    Ok(w)
}

/// Every regular, non-hidden file below `dir` (hidden files and folders skipped, symlinks
/// not followed), as (path relative to `dir` with `/` separators, metadata). Unreadable
/// entries are skipped: a folder being changed while walked is normal.
pub fn visible_files(dir: &Path) -> Vec<(String, std::fs::Metadata)> {
    walk(dir).0
}

/// A visible entry that is not a regular file or folder, and what it is.
pub type Skipped = (String, &'static str);

/// [`visible_files`], plus the visible entries skipped because they are neither a regular
/// file nor a folder (symlinks, even to a file inside, FIFOs, sockets, devices), with what
/// they are, so that callers can say so.
pub fn walk(dir: &Path) -> (Vec<(String, std::fs::Metadata)>, Vec<Skipped>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
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
            } else {
                skipped.push((rel, kind_of(&ft)));
            }
        }
    }
    (out, skipped)
}

fn kind_of(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "a symbolic link (not followed)"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a device"
    }
}

/// The most bytes a file name holds (NAME_MAX on Linux's file systems).
pub const NAME_MAX: usize = 255;

/// A hidden name for a temporary or partial file beside `name`: `.NAME` + `suffix`, or,
/// when that is longer than a file name holds (a name of 230 bytes and more, such as the
/// report of an input named up to 250 bytes), the name cut to fit, with a hash of the
/// whole name (so that two long names alike in their first bytes differ) before `suffix`.
pub fn hidden_name(name: &str, suffix: &str) -> String {
    let whole = format!(".{name}{suffix}");
    if whole.len() <= NAME_MAX {
        return whole;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    let tail = format!("~{:016x}{suffix}", h.finish());
    let mut cut = NAME_MAX.saturating_sub(1 + tail.len()).min(name.len());
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(".{}{tail}", &name[..cut])
}

/// The hidden temporary name [`write_atomic`] writes `name` under first.
fn tmp_name(name: &str) -> String {
    hidden_name(name, &format!(".tmp{}", std::process::id()))
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
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(tmp_name(name));
    let result = (|| {
        // The folder is created only when missing (most writes go to an existing one, and
        // create_dir_all costs a failed mkdir and a stat each time).
        let mut f = match std::fs::File::create(&tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                std::fs::File::create(&tmp)?
            }
            other => other?,
        };
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
    /// A name of up to NAME_MAX bytes is written (its temporary name fits too), and two
    /// long names alike in their beginning get temporary names of their own.
    fn long_names_written_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        for len in [1, 200, 240, 250, NAME_MAX] {
            let name = "é".repeat(len / 2) + &"a".repeat(len % 2);
            assert_eq!(name.len(), len);
            let p = dir.path().join(&name);
            write_atomic(&p, b"x", false).unwrap_or_else(|e| panic!("{len} bytes: {e}"));
            assert_eq!(std::fs::read(&p).expect("read"), b"x");
            assert!(tmp_name(&name).len() <= NAME_MAX, "{len}");
            assert!(tmp_name(&name).starts_with('.'), "hidden");
        }
        let (a, b) = ("a".repeat(250) + "1", "a".repeat(250) + "2");
        assert_ne!(tmp_name(&a), tmp_name(&b));
        // Any suffix: a copy's, a part's.
        for suffix in [".part", ".copy4194304-deadbeef", ".unpack"] {
            let h = hidden_name(&a, suffix);
            assert!(
                h.len() <= NAME_MAX && h.ends_with(suffix) && h.starts_with(".a"),
                "{h}"
            );
            assert_eq!(
                hidden_name("short.json", suffix),
                format!(".short.json{suffix}")
            );
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(left.is_empty(), "no temporary file left");
    }

    #[test]
    fn hidden_below_a_root() {
        let root = Path::new("/d/input");
        for (p, hidden) in [
            ("/d/input/.stage", true),
            ("/d/input/.stage/small/f1.txt", true),
            ("/d/input/a/.f.txt.tmp", true),
            ("/d/input/a/f.txt", false),
            ("/d/input", false),
            ("/d/.other/input/f.txt", false),
            ("/elsewhere/.x", false),
        ] {
            assert_eq!(hidden_below(root, Path::new(p)), hidden, "{p}");
        }
        let paths = |ps: &[&str]| ps.iter().map(std::path::PathBuf::from).collect::<Vec<_>>();
        assert!(only_hidden_below(
            root,
            &paths(&["/d/input/.stage", "/d/input/.x/y"])
        ));
        assert!(!only_hidden_below(
            root,
            &paths(&["/d/input/.stage/b", "/d/input/b"])
        ));
        assert!(!only_hidden_below(root, &[]), "no path: a rescan");
    }

    #[test]
    /// A rewrite that keeps size and mtime (`dd conv=notrunc`, then the old mtime set back)
    /// still changes the fingerprint.
    fn rewrite_keeping_size_and_mtime_is_seen() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f");
        std::fs::write(&p, "700000031000000001\n").expect("write");
        let before = std::fs::metadata(&p).expect("stat");
        let fp = Fingerprint::of(&before);
        // Let the clock move on so the change time can differ even on coarse clocks.
        std::thread::sleep(std::time::Duration::from_millis(20));
        {
            use std::io::{Seek, Write};
            let mut f = std::fs::File::options().write(true).open(&p).expect("open");
            f.seek(std::io::SeekFrom::Start(0)).expect("seek");
            f.write_all(b"700000031000000023\n").expect("overwrite");
            f.set_modified(before.modified().expect("mtime"))
                .expect("set mtime back");
        }
        let after = Fingerprint::of(&std::fs::metadata(&p).expect("stat"));
        assert_eq!((after.size, after.mtime_ns), (fp.size, fp.mtime_ns));
        assert_ne!(after, fp, "the change time gives the rewrite away");
        assert_ne!(after.token(), fp.token());
    }

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
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("link")).expect("symlink");
        let (files, skipped) = walk(d.path());
        assert_eq!(
            files.len(),
            2,
            "a symlink is not followed, even to a file inside"
        );
        assert_eq!(
            skipped,
            vec![("link".to_string(), "a symbolic link (not followed)")]
        );
        std::fs::remove_file(d.path().join("link")).expect("rm");
        write_atomic(&d.path().join("a"), b"new", true).expect("replace");
        assert_eq!(std::fs::read(d.path().join("a")).expect("read"), b"new");
        assert_eq!(
            visible_files(d.path()).len(),
            2,
            "no temporary file left behind"
        );
    }
}
