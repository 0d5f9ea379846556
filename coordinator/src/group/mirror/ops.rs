//! The file operations the mirror is made of: a hard link or a streamed copy put in place
//! by a rename under a temporary name, a tail appended, a folder fsynced; each safe to
//! repeat and leaving no temporary name behind.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// True if `a` and `b` name the same file (both there).
pub(super) fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `path`'s folder (`.` for a bare name).
pub(super) fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A temporary name beside `dst`, hidden, unique to this call (the root folder is shared by
/// the leaders of several processes, maybe with the same process id in containers).
pub(super) fn temp_name(dst: &Path, what: &str) -> PathBuf {
    let name = dst.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    dir_of(dst).join(proto::files::hidden_name(
        name,
        &format!(
            ".{what}{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ),
    ))
}

/// A hard link to `src` under a temporary name beside `dst` (its folder created if
/// missing); the name.
pub(super) fn temp_link(src: &Path, dst: &Path) -> std::io::Result<PathBuf> {
    let tmp = temp_name(dst, "link");
    match std::fs::hard_link(src, &tmp) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && src.exists() => {
            std::fs::create_dir_all(dir_of(dst))?;
            std::fs::hard_link(src, &tmp)?;
        }
        other => other?,
    }
    Ok(tmp)
}

/// Copies file `src` (none: empty) to a new file `to` (its folder created if missing),
/// streamed through a bounded buffer, fsynced if `durable`; the bytes copied.
pub(super) fn copy_file(src: &Path, to: &Path, durable: bool) -> anyhow::Result<u64> {
    let from = match File::open(src) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("opening {}", src.display())),
    };
    let mut out = match File::create(to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = dir_of(to);
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            File::create(to)
        }
        other => other,
    }
    .with_context(|| format!("creating {}", to.display()))?;
    let n = match from {
        Some(f) => {
            let len = f
                .metadata()
                .with_context(|| format!("reading {}", src.display()))?
                .len();
            std::io::copy(&mut std::io::Read::take(f, len), &mut out)
                .with_context(|| format!("copying {} to {}", src.display(), to.display()))?
        }
        None => 0,
    };
    if durable {
        out.sync_all()
            .with_context(|| format!("syncing {}", to.display()))?;
    }
    Ok(n)
}

/// fsyncs folder `dir` (the renames in it made durable).
pub(super) fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Puts a hard link to `src` at `dst`: one `link` where `dst` is new (the common case: a
/// file's first report); over an existing `dst` atomically (a link under a temporary name,
/// then a rename over it). Creates `dst`'s folder if missing. Fails where a link cannot be
/// made (another file system); `dst` is then untouched.
pub(super) fn link_into_place(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::io::ErrorKind;
    let dir = dst.parent().unwrap_or(Path::new("."));
    let first = match std::fs::hard_link(src, dst) {
        Err(e) if e.kind() == ErrorKind::NotFound && src.exists() => {
            std::fs::create_dir_all(dir)?;
            std::fs::hard_link(src, dst)
        }
        other => other,
    };
    match first {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        other => return other,
    }
    let tmp = temp_name(dst, "link");
    std::fs::hard_link(src, &tmp)?;
    let renamed = std::fs::rename(&tmp, dst);
    // Gone after a rename, except where `dst` already was this file (the same report applied
    // again): rename then leaves both names.
    let _ = std::fs::remove_file(&tmp);
    renamed
}

/// Renames `tmp` over `dst` atomically without ext4's flush of `tmp` on a rename over an
/// existing file (`auto_da_alloc`: a rename that replaces a file starts the writeback of
/// every dirty page of the file renamed; for a member's primes file just written, hundreds
/// of MB, ~0.3 s of a takeover here). The two names are exchanged (`RENAME_EXCHANGE`, which
/// does not flush) and the old file's new name removed; a plain rename where there is
/// nothing to exchange with or the file system cannot exchange.
pub(super) fn replace(tmp: &Path, dst: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let (Ok(a), Ok(b)) = (
            CString::new(tmp.as_os_str().as_bytes()),
            CString::new(dst.as_os_str().as_bytes()),
        ) else {
            return std::fs::rename(tmp, dst);
        };
        // SAFETY: both are NUL-terminated paths that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            // `tmp` now names the file `dst` named (its other links keep it).
            return match std::fs::remove_file(tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
    }
    std::fs::rename(tmp, dst)
}

/// `path` opened for appending (created if missing).
pub(super) fn open_append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Appends `from`'s bytes after offset `at` to `dst` (the file `to`), streamed through a
/// bounded buffer, fsynced; how many.
pub(super) fn append_tail(from: &Path, dst: &mut File, to: &Path, at: u64) -> anyhow::Result<u64> {
    let mut src = match File::open(from) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("opening {}", from.display())),
    };
    let len = src
        .metadata()
        .with_context(|| format!("reading {}", from.display()))?
        .len();
    if len <= at {
        return Ok(0);
    }
    src.seek(SeekFrom::Start(at))
        .with_context(|| format!("reading {}", from.display()))?;
    let n = std::io::copy(&mut std::io::Read::take(src, len - at), dst)
        .and_then(|n| dst.sync_data().map(|()| n))
        .with_context(|| format!("appending {} to {}", from.display(), to.display()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A report linked into place: new (its folder made), over an older one, and again over
    /// itself (an entry applied twice), leaving no temporary name behind.
    fn reports_linked_into_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("member/a.json");
        std::fs::create_dir_all(src.parent().expect("parent")).expect("mkdir");
        std::fs::write(&src, b"v1").expect("write");
        let dst = dir.path().join("root/sub/a.json");
        link_into_place(&src, &dst).expect("new");
        assert_eq!(std::fs::read(&dst).expect("read"), b"v1");
        // The member rewrites its report (a new file, renamed in place), then links again.
        let fresh = dir.path().join("member/.a.json.tmp");
        std::fs::write(&fresh, b"v2").expect("write");
        std::fs::rename(&fresh, &src).expect("rename");
        link_into_place(&src, &dst).expect("over an older one");
        assert_eq!(std::fs::read(&dst).expect("read"), b"v2");
        link_into_place(&src, &dst).expect("over itself");
        assert_eq!(std::fs::read(&dst).expect("read"), b"v2");
        let names: Vec<String> = std::fs::read_dir(dir.path().join("root/sub"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.json"]);
    }
}
