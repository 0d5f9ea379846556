//! The streamed form of a replica's files: [`pack_to`] writes them to a stream and
//! [`unpack_from`] makes a stream the replica's files, one file at a time through a bounded
//! buffer, whatever the size of `primes.txt` (the format of [`super::pack`]).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{for_each_report, place};
use crate::primes::ledger_path;

/// Writes one file's header (name, length).
fn write_header(dest: &mut impl Write, name: &str, len: u64) -> std::io::Result<()> {
    let n = u32::try_from(name.len())
        .map_err(|_| std::io::Error::other(format!("file name too long: {name:?}")))?;
    dest.write_all(&n.to_le_bytes())?;
    dest.write_all(name.as_bytes())?;
    dest.write_all(&len.to_le_bytes())
}

/// Writes file `name` in the pack format: the first `len` bytes of `src` (the file `path`),
/// streamed; an error if it holds fewer.
fn pack_file(
    dest: &mut impl Write,
    name: &str,
    src: File,
    path: &Path,
    len: u64,
) -> anyhow::Result<()> {
    write_header(dest, name, len).context("writing the pack")?;
    let n = std::io::copy(&mut src.take(len), dest)
        .with_context(|| format!("packing {}", path.display()))?;
    if n != len {
        anyhow::bail!(
            "{} shrank while packed ({n} bytes of {len}): the pack is cut",
            path.display()
        );
    }
    Ok(())
}

/// Writes the replica's state to `dest` in the format of [`super::pack`], streamed (one file at a
/// time, through `io::copy`'s bounded buffer): the first `lens.0` bytes of the primes file
/// `primes`, the first `lens.1` of its ledger (each left out if missing and its length 0;
/// an error if shorter than its length: the lengths are those of the state to pack, taken
/// while nothing was appended), then every report under `output` (hidden names skipped).
pub fn pack_to(
    primes: &Path,
    lens: (u64, u64),
    output: &Path,
    dest: &mut impl Write,
) -> anyhow::Result<()> {
    for (name, path, len) in [
        ("primes.txt", primes.to_path_buf(), lens.0),
        ("primes.txt.ranges", ledger_path(primes), lens.1),
    ] {
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && len == 0 => continue,
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let have = f
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if have < len {
            anyhow::bail!(
                "{} holds {have} bytes, fewer than the {len} to pack",
                path.display()
            );
        }
        pack_file(dest, name, f, &path, len)?;
    }
    for_each_report(output, &mut |rel, path| {
        // The length of the file opened (a report replaced meanwhile is another file).
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = f
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        pack_file(dest, &format!("output/{rel}"), f, path, len)
    })?;
    dest.flush().context("writing the pack")
}

/// The longest file name [`unpack_from`] accepts (a sanity bound: a corrupt length must not
/// allocate gigabytes).
const MAX_NAME: usize = 64 << 10;

/// Buffer of each file written by [`unpack_from`].
const WRITE_BUF: usize = 256 << 10;

/// Reads exactly `buf.len()` bytes; `Ok(false)` if the stream ended before the first one
/// and `at_start` (a clean end between files), an error if it ends anywhere else.
fn read_full(src: &mut impl Read, buf: &mut [u8], at_start: bool) -> anyhow::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match src.read(&mut buf[got..]) {
            Ok(0) if got == 0 && at_start => return Ok(false),
            Ok(0) => anyhow::bail!("the pack is cut short"),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the pack"),
        }
    }
    Ok(true)
}

/// Copies the next `len` bytes of `src` into a new file `tmp` (replacing any), fsynced if
/// `durable`; an error if the stream ends first.
fn unpack_file(src: &mut impl Read, len: u64, tmp: &Path, durable: bool) -> anyhow::Result<()> {
    let f = File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = BufWriter::with_capacity(WRITE_BUF, f);
    let n = std::io::copy(&mut src.take(len), &mut w)
        .with_context(|| format!("writing {}", tmp.display()))?;
    if n != len {
        anyhow::bail!(
            "the pack is cut short ({n} bytes of {len} for {})",
            tmp.display()
        );
    }
    let f = w
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", tmp.display()))?;
    if durable {
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
    }
    Ok(())
}

/// `path`'s folder (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `.<name of path><suffix>` beside `path` (cut to fit a file name: `hidden_name`).
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(path).join(proto::files::hidden_name(&name, suffix))
}

/// Removes `path` (file or folder) if it is there.
fn remove_any(path: &Path) -> anyhow::Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    r.with_context(|| format!("removing {}", path.display()))
}

/// fsyncs folder `dir` (the renames in it made durable).
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Exchanges folders `a` and `b` atomically where the system can (Linux `renameat2` with
/// `RENAME_EXCHANGE`); `Ok(false)` where it cannot (nothing done).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> anyhow::Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes()).context("a path with a NUL byte")?;
    let cb = CString::new(b.as_os_str().as_bytes()).context("a path with a NUL byte")?;
    // SAFETY: two valid NUL-terminated paths, relative to the working folder.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // Not supported by the kernel, the C library or the file system.
        Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ENOTSUP) => Ok(false),
        _ => Err(e).with_context(|| format!("exchanging {} and {}", a.display(), b.display())),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> anyhow::Result<bool> {
    Ok(false)
}

/// Puts folder `fresh` in place of folder `dest` (which may be missing) and removes the old
/// one: one atomic exchange where the system has it; else `dest` renamed aside, then
/// `fresh` renamed in (a moment without `dest`), then the old one removed.
fn swap_folder(fresh: &Path, dest: &Path) -> anyhow::Result<()> {
    let old = beside(dest, ".old");
    remove_any(&old)?;
    if dest.exists() {
        if exchange(fresh, dest)? {
            // `fresh` now names the old folder.
            return remove_any(fresh);
        }
        std::fs::rename(dest, &old)
            .with_context(|| format!("renaming {} aside", dest.display()))?;
    }
    if let Err(e) = std::fs::rename(fresh, dest) {
        // Put the old one back rather than leave no folder.
        let _ = std::fs::rename(&old, dest);
        return Err(e).with_context(|| format!("renaming {} in place", dest.display()));
    }
    remove_any(&old)
}

/// Reads a pack ([`pack_to`], [`super::pack`]) from `src`, streamed, and makes it the replica's
/// state: the primes file `primes`, its ledger and the reports folder `output`. Every name
/// is checked with [`place`] before any byte of its file is written. Each file goes first
/// to a temporary name: the primes file and ledger beside theirs (fsynced; an empty one for
/// one the pack lacks, as [`super::write_files`] does), the reports into a fresh hidden folder
/// beside `output` (not fsynced). Only once the whole pack was read are they put in place:
/// the primes file and ledger each by one rename, then the reports folder as a whole (the
/// reports `output` held before are gone, those of the pack in their place). A pack cut
/// short, malformed or naming a file outside the state is an error that leaves the
/// previous files as they were (the temporary ones removed). The format has no end
/// marker: a pack cut exactly between two files reads as a shorter, whole one, so the
/// caller must know the pack's length (as a snapshot's transport does) to tell.
pub fn unpack_from(src: &mut impl Read, primes: &Path, output: &Path) -> anyhow::Result<()> {
    let ledger = ledger_path(primes);
    let tmp_primes = beside(primes, ".unpack");
    let tmp_ledger = beside(&ledger, ".unpack");
    let staging = beside(output, ".unpack");
    // Left by an earlier unpack that failed or crashed (the names are this replica's own).
    for t in [&tmp_primes, &tmp_ledger, &staging] {
        remove_any(t)?;
    }
    let read = (|| {
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("creating {}", staging.display()))?;
        let (mut got_primes, mut got_ledger) = (false, false);
        loop {
            let mut n = [0u8; 4];
            if !read_full(src, &mut n, true)? {
                break;
            }
            let n = u32::from_le_bytes(n) as usize;
            if n > MAX_NAME {
                anyhow::bail!("malformed pack: a file name of {n} bytes");
            }
            let mut name = vec![0u8; n];
            read_full(src, &mut name, false)?;
            let name = String::from_utf8(name).context("malformed pack: file name")?;
            // Checked before anything of the file is written.
            place(&name, primes, output)?;
            let mut len = [0u8; 8];
            read_full(src, &mut len, false)?;
            let len = u64::from_le_bytes(len);
            match name.as_str() {
                "primes.txt" => {
                    unpack_file(src, len, &tmp_primes, true)?;
                    got_primes = true;
                }
                "primes.txt.ranges" => {
                    unpack_file(src, len, &tmp_ledger, true)?;
                    got_ledger = true;
                }
                _ => {
                    let dst = place(&name, primes, &staging)?;
                    let dir = parent_of(&dst);
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    unpack_file(src, len, &dst, false)?;
                }
            }
        }
        for (got, tmp) in [(got_primes, &tmp_primes), (got_ledger, &tmp_ledger)] {
            if !got {
                unpack_file(&mut std::io::empty(), 0, tmp, true)?;
            }
        }
        Ok(())
    })();
    if let Err(e) = read {
        for t in [&tmp_primes, &tmp_ledger, &staging] {
            let _ = remove_any(t);
        }
        return Err(e);
    }
    // The whole pack is on disk: now replace.
    let put = (|| {
        for (tmp, dst) in [(&tmp_primes, primes), (&tmp_ledger, ledger.as_path())] {
            std::fs::rename(tmp, dst).with_context(|| format!("replacing {}", dst.display()))?;
            sync_dir(parent_of(dst))?;
        }
        swap_folder(&staging, output)?;
        sync_dir(parent_of(output))
    })();
    if put.is_err() {
        for t in [&tmp_primes, &tmp_ledger, &staging] {
            let _ = remove_any(t);
        }
    }
    put
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::files::{pack, unpack};

    /// Every file below `dir` as (path relative to it, bytes), hidden ones included, sorted.
    fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
        fn go(dir: &Path, rel: &str, out: &mut Vec<(String, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).expect("list") {
                let e = e.expect("entry");
                let rel = format!("{rel}{}", e.file_name().to_string_lossy());
                if e.file_type().expect("type").is_dir() {
                    go(&e.path(), &format!("{rel}/"), out);
                } else {
                    out.push((rel, std::fs::read(e.path()).expect("read")));
                }
            }
        }
        let mut out = Vec::new();
        go(dir, "", &mut out);
        out.sort();
        out
    }

    /// A member folder with a primes file, ledger and nested reports (and a hidden file).
    fn state(dir: &Path) {
        std::fs::create_dir_all(dir.join("output/sub/deeper")).expect("mkdir");
        std::fs::write(dir.join("primes.txt"), b"2\n3\n5\n7\n").expect("write");
        std::fs::write(dir.join("primes.txt.ranges"), b"{\"a\":1}\n").expect("write");
        std::fs::write(dir.join("output/a.json"), b"{}").expect("write");
        std::fs::write(dir.join("output/sub/b.json"), b"[1]").expect("write");
        std::fs::write(dir.join("output/sub/deeper/c.json"), b"").expect("write");
        std::fs::write(dir.join("output/.hidden.tmp"), b"x").expect("write");
    }

    /// The previous state of a folder a pack is unpacked into.
    fn old_state(dir: &Path) {
        std::fs::create_dir_all(dir.join("output/old")).expect("mkdir");
        std::fs::write(dir.join("primes.txt"), b"11\n").expect("write");
        std::fs::write(dir.join("primes.txt.ranges"), b"old\n").expect("write");
        std::fs::write(dir.join("output/old/z.json"), b"old").expect("write");
    }

    fn packed(dir: &Path, lens: (u64, u64)) -> Vec<u8> {
        let mut out = Vec::new();
        pack_to(&dir.join("primes.txt"), lens, &dir.join("output"), &mut out).expect("pack_to");
        out
    }

    #[test]
    /// pack_to writes the format of pack (the primes file and ledger cut at the lengths
    /// given, hidden reports left out), and unpack_from makes exactly that the state: the
    /// reports folder replaced as a whole, no temporary name left.
    fn pack_to_unpack_from_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        state(&src);
        // Appended after the lengths were taken: not packed.
        let data = packed(&src, (6, 8));
        let mut files = unpack(&data).expect("the format of pack");
        files.sort();
        let want: Vec<(String, Vec<u8>)> = vec![
            ("output/a.json".into(), b"{}".to_vec()),
            ("output/sub/b.json".into(), b"[1]".to_vec()),
            ("output/sub/deeper/c.json".into(), Vec::new()),
            ("primes.txt".into(), b"2\n3\n5\n".to_vec()),
            ("primes.txt.ranges".into(), b"{\"a\":1}\n".to_vec()),
        ];
        assert_eq!(files, want);
        old_state(&dst);
        unpack_from(&mut &data[..], &dst.join("primes.txt"), &dst.join("output"))
            .expect("unpack_from");
        assert_eq!(tree(&dst), want);
        // Lengths beyond a file's are refused; a missing ledger of length 0 left out, and
        // made an empty file by unpack_from.
        let mut sink = Vec::new();
        assert!(pack_to(
            &src.join("primes.txt"),
            (99, 0),
            &src.join("output"),
            &mut sink
        )
        .is_err());
        std::fs::remove_file(src.join("primes.txt.ranges")).expect("rm");
        std::fs::remove_dir_all(src.join("output")).expect("rm");
        let data = packed(&src, (2, 0));
        assert_eq!(
            unpack(&data).ok(),
            Some(vec![("primes.txt".into(), b"2\n".to_vec())])
        );
        unpack_from(&mut &data[..], &dst.join("primes.txt"), &dst.join("output"))
            .expect("unpack_from");
        assert_eq!(
            tree(&dst),
            vec![
                ("primes.txt".to_string(), b"2\n".to_vec()),
                ("primes.txt.ranges".to_string(), Vec::new()),
            ]
        );
        assert!(dst.join("output").is_dir(), "an empty reports folder");
    }

    #[test]
    /// A pack cut inside a file's record (or with an absurd name length) is an error that
    /// leaves the previous files as they were, and no temporary file behind. (A cut exactly
    /// between two records is a shorter well-formed pack: the format cannot tell.)
    fn cut_pack_leaves_old_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        state(&src);
        let data = packed(&src, (8, 8));
        let mut boundaries = vec![0];
        for (n, b) in unpack(&data).expect("unpack") {
            boundaries.push(boundaries[boundaries.len() - 1] + 12 + n.len() + b.len());
        }
        old_state(&dst);
        let before = tree(&dst);
        let mut cuts: Vec<usize> = (1..data.len())
            .filter(|c| !boundaries.contains(c))
            .step_by(3)
            .collect();
        cuts.push(data.len() - 1);
        for cut in cuts {
            let r = unpack_from(
                &mut &data[..cut],
                &dst.join("primes.txt"),
                &dst.join("output"),
            );
            assert!(r.is_err(), "cut at {cut} of {}", data.len());
            assert_eq!(tree(&dst), before, "cut at {cut}");
            assert_eq!(tree(tmp.path()).len(), before.len() + tree(&src).len());
        }
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"primes.txt");
        let r = unpack_from(&mut &huge[..], &dst.join("primes.txt"), &dst.join("output"));
        assert!(r.is_err());
        assert_eq!(tree(&dst), before);
    }

    #[test]
    /// A name outside the state is refused before anything of it is written, and the
    /// files read before it are not put in place.
    fn bad_name_refused_with_nothing_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dst = tmp.path().join("dst");
        old_state(&dst);
        let before = tree(tmp.path());
        for bad in ["output/../escaped", "../escaped", "/tmp/escaped", "output/"] {
            let data = pack(&[
                ("primes.txt".into(), b"13\n".to_vec()),
                ("output/fine.json".into(), b"{}".to_vec()),
                (bad.into(), b"evil".to_vec()),
            ]);
            let r = unpack_from(&mut &data[..], &dst.join("primes.txt"), &dst.join("output"));
            assert!(r.is_err(), "{bad} refused");
            assert_eq!(tree(tmp.path()), before, "{bad}: nothing written");
        }
    }
}
