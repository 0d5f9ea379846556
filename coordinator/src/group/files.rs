//! The files a replica's state is made of, as one list: the primes file, its ledger and
//! the reports, named `primes.txt`, `primes.txt.ranges` and `output/<report>`. A replica's
//! snapshot, an import of the root files and the leader's copy of its replica to the root
//! all read and write them through here.
//!
//! Two forms: in memory, here ([`collect_files`], [`pack`], [`unpack`], [`write_files`]:
//! every byte held at once, for small states), and streamed, in [`stream`]
//! ([`stream::pack_to`], [`stream::unpack_from`]: one file at a time through a bounded
//! buffer, whatever the size of `primes.txt`). Both write and read the same format: (u32
//! name length, name, u64 length, bytes)*, little-endian.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::primes::ledger_path;

pub mod stream;

/// The primes file `primes`, its ledger and the reports under `output`, as (name, bytes)
/// (missing ones are left out; hidden files, such as a write in progress, too).
pub fn collect_files(primes: &Path, output: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for (name, path) in [
        ("primes.txt".to_string(), primes.to_path_buf()),
        ("primes.txt.ranges".to_string(), ledger_path(primes)),
    ] {
        match std::fs::read(&path) {
            Ok(b) => files.push((name, b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    collect_tree(output, "output", &mut files)?;
    Ok(files)
}

fn collect_tree(dir: &Path, rel: &str, out: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    for_each_report(dir, &mut |name, path| {
        let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        out.push((format!("{rel}/{name}"), b));
        Ok(())
    })
}

/// Where file `name` (as [`collect_files`] names it) lives for the primes file `primes` and
/// the reports folder `output`; an error for any other name (one that would leave them).
pub fn place(name: &str, primes: &Path, output: &Path) -> anyhow::Result<PathBuf> {
    match name {
        "primes.txt" => Ok(primes.to_path_buf()),
        "primes.txt.ranges" => Ok(ledger_path(primes)),
        _ => match name.strip_prefix("output/") {
            Some(rest)
                if !rest
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..") =>
            {
                Ok(output.join(rest))
            }
            _ => anyhow::bail!("not a file of a replica's state: {name:?}"),
        },
    }
}

/// Writes `files` (as [`collect_files`] names them, every name checked first) as the primes
/// file `primes`, its ledger and the reports under `output`: the primes file and ledger
/// fsynced (an empty one for one missing from `files`), the reports too if
/// `durable_reports`. Returns the lengths of the primes file and ledger written.
pub fn write_files(
    files: &[(String, Vec<u8>)],
    primes: &Path,
    output: &Path,
    durable_reports: bool,
) -> anyhow::Result<(u64, u64)> {
    let placed = files
        .iter()
        .map(|(name, bytes)| Ok((name.as_str(), place(name, primes, output)?, bytes)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut lens = (0, 0);
    for (name, path, bytes) in &placed {
        let durable = durable_reports || !name.starts_with("output/");
        proto::files::write_atomic(path, bytes, durable)
            .with_context(|| format!("writing {}", path.display()))?;
        match *name {
            "primes.txt" => lens.0 = bytes.len() as u64,
            "primes.txt.ranges" => lens.1 = bytes.len() as u64,
            _ => {}
        }
    }
    for name in ["primes.txt", "primes.txt.ranges"] {
        if !files.iter().any(|(n, _)| n == name) {
            let path = place(name, primes, output)?;
            proto::files::write_atomic(&path, b"", true)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(lens)
}

/// Files as (u32 name length, name, u64 length, bytes)*, little-endian.
pub fn pack(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let total: usize = files.iter().map(|(n, b)| 12 + n.len() + b.len()).sum();
    let mut out = Vec::with_capacity(total);
    for (n, b) in files {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// The files [`pack`] packed.
pub fn unpack(mut data: &[u8]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> anyhow::Result<&'a [u8]> {
        if data.len() < n {
            anyhow::bail!("snapshot data is cut short");
        }
        let (a, b) = data.split_at(n);
        *data = b;
        Ok(a)
    }
    let mut files = Vec::new();
    while !data.is_empty() {
        let n = u32::from_le_bytes(take(&mut data, 4)?.try_into()?) as usize;
        let name = String::from_utf8(take(&mut data, n)?.to_vec()).context("file name")?;
        let len = u64::from_le_bytes(take(&mut data, 8)?.try_into()?) as usize;
        files.push((name, take(&mut data, len)?.to_vec()));
    }
    Ok(files)
}

/// Calls `f(name, path)` for every regular file below the reports folder `output`, `name`
/// relative to it with `/` separators (hidden files and folders skipped, symlinks not
/// followed; a missing `output` has none). One folder's listing is held at a time, never
/// the files' bytes.
pub(crate) fn for_each_report(
    output: &Path,
    f: &mut dyn FnMut(&str, &Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    walk_reports(output, "", f)
}

fn walk_reports(
    dir: &Path,
    rel: &str,
    f: &mut dyn FnMut(&str, &Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let kind = e
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        let rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if kind.is_dir() {
            walk_reports(&path, &rel, f)?;
        } else if kind.is_file() {
            f(&rel, &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_outside_the_state_are_refused() {
        let (p, o) = (Path::new("/r/primes.txt"), Path::new("/r/output"));
        assert_eq!(place("primes.txt", p, o).ok(), Some(p.to_path_buf()));
        assert_eq!(
            place("output/sub/a.json", p, o).ok(),
            Some(o.join("sub/a.json"))
        );
        for bad in [
            "output/../x",
            "output//x",
            "/etc/passwd",
            "x.json",
            "output/",
            "../primes.txt",
        ] {
            assert!(place(bad, p, o).is_err(), "{bad} refused");
        }
    }

    #[test]
    fn pack_round_trips() {
        let files = vec![
            ("primes.txt".to_string(), b"2\n3\n".to_vec()),
            ("output/a.json".to_string(), Vec::new()),
        ];
        assert_eq!(unpack(&pack(&files)).ok(), Some(files));
        assert!(unpack(&pack(&[("x".into(), vec![1, 2, 3])])[..10]).is_err());
    }
}
