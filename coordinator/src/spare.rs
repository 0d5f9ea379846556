//! Spare report files: the reports a `--fresh` start cleared, kept in a pool folder and
//! written over by the next run's reports instead of creating new files.
//!
//! Why: on ext4 without a journal (the file system of this project's VMs) a new inode is
//! never one freed in the last 60 s (360 s while its inode-table block is dirty), and every
//! create searches past each such inode from the start of its block group. `--fresh` has
//! just deleted the last run's reports, which sit in the same group as the new ones, so
//! each new report cost ~250-300 µs instead of ~20 (BENCHMARKS.md, "Small files: spare
//! report files"). A spare is written over where it lies in the pool, cut to its new
//! length and renamed into place: no inode is allocated or freed, and the report still
//! appears whole at once. It is never cut to zero first: ext4 then writes
//! the file out when it is closed (`auto_da_alloc`), which costs more than the create did.
//!
//! The pool is listed once, when the replica opens; once it is used up, reports are
//! created as before. Several processes may share a pool
//! (the members of a group on one host): a spare is written only under an exclusive
//! `flock`, and only while it is still at its name in the pool.

use std::collections::HashSet;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

/// At most this many spares are kept (a spare holds an inode and a block, ~4 KiB): a pool
/// found larger is trimmed when it is listed.
pub const SPARE_CAP: usize = 10_000;

/// A pool of spare report files; `Spares::none()` has none (every report is created).
#[derive(Default)]
pub struct Spares {
    list: Mutex<Vec<PathBuf>>,
    /// False once a spare could not be moved beside a report (another file system): the
    /// pool is then left alone.
    off: AtomicBool,
}

impl Spares {
    /// No pool.
    pub fn none() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The pool in folder `pool`, listed now (a walk of at most `cap` files, ~10 ms for
    /// 10,000; emptied folders removed); a pool of more is trimmed to those on a thread of
    /// its own.
    pub fn in_dir(pool: &Path, cap: usize) -> Arc<Self> {
        let spares = Self::none();
        if let Some(kept) = spares.list_now(pool, cap) {
            let pool = pool.to_path_buf();
            let trim = std::thread::Builder::new()
                .name("spare-reports".into())
                .spawn(move || trim(&pool, &kept));
            if let Err(e) = trim {
                warn!(error = %e, "cannot trim the spare report files");
            }
        }
        spares
    }

    /// Lists the pool in folder `pool` now: at most `cap` spares. When there are more,
    /// the ones listed, for [`trim`].
    pub fn list_now(&self, pool: &Path, cap: usize) -> Option<HashSet<PathBuf>> {
        let (mut files, mut dirs, mut more) = (Vec::new(), Vec::new(), false);
        let mut stack = vec![pool.to_path_buf()];
        'walk: while let Some(d) = stack.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    warn!(dir = %d.display(), error = %e, "cannot list spare report files");
                    continue;
                }
            };
            if d != pool {
                dirs.push(d);
            }
            for e in entries.flatten() {
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(e.path()),
                    Ok(t) if t.is_file() && files.len() >= cap => {
                        more = true;
                        break 'walk;
                    }
                    Ok(t) if t.is_file() => files.push(e.path()),
                    _ => {}
                }
            }
        }
        // Deepest first; a folder that still holds spares stays.
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        let kept = more.then(|| files.iter().cloned().collect());
        if !files.is_empty() {
            // Members sharing the pool start taking at different places.
            let at = std::process::id() as usize % files.len();
            files.rotate_left(at);
            info!(pool = %pool.display(), spares = files.len(), more, "spare report files listed");
            let mut list = lock(&self.list);
            files.append(&mut list);
            *list = files;
        }
        kept
    }

    /// How many spares are left to take.
    pub fn left(&self) -> usize {
        lock(&self.list).len()
    }

    /// Writes `bytes` to `path` atomically, without fsync: over a spare if one is left
    /// (written where it lies in the pool, then renamed to `path`), else as a new file (a
    /// hidden temporary name, then a rename). Either way `path` is replaced at once, whole.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        if let Some((spare, f)) = self.take() {
            // Cut to length after writing, never to zero first (see the module's note).
            let written = f
                .write_all_at(bytes, 0)
                .and_then(|()| f.set_len(bytes.len() as u64));
            if written.is_err() {
                return proto::files::write_atomic(path, bytes, false);
            }
            let moved = match std::fs::rename(&spare, path) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let dir = match path.parent() {
                        Some(d) if !d.as_os_str().is_empty() => d,
                        _ => Path::new("."),
                    };
                    std::fs::create_dir_all(dir).and_then(|()| std::fs::rename(&spare, path))
                }
                other => other,
            };
            // The lock goes with the file, once it has left the pool.
            drop(f);
            match moved {
                Ok(()) => return Ok(()),
                Err(e) => {
                    warn!(spare = %spare.display(), to = %path.display(), error = %e,
                        "cannot use the spare report files here; reports are created");
                    self.off.store(true, Ordering::Relaxed);
                }
            }
        }
        proto::files::write_atomic(path, bytes, false)
    }

    /// A spare, opened for writing and this process's alone: locked (`flock`), still at its
    /// name in the pool (not taken by a process that held it before), and linked by no other
    /// name (a report left in place is never written over). None once the pool is used up.
    fn take(&self) -> Option<(PathBuf, File)> {
        while !self.off.load(Ordering::Relaxed) {
            let spare = lock(&self.list).pop()?;
            // Gone: taken by another process sharing the pool.
            let Ok(f) = std::fs::OpenOptions::new().write(true).open(&spare) else {
                continue;
            };
            if !try_lock(&f) {
                continue;
            }
            let (Ok(held), Ok(named)) = (f.metadata(), std::fs::symlink_metadata(&spare)) else {
                continue;
            };
            if held.nlink() == 1 && held.ino() == named.ino() && held.dev() == named.dev() {
                return Some((spare, f));
            }
        }
        None
    }
}

/// Moves folder `dir` (reports about to be cleared) into the pool folder `pool`, under a
/// new name; false if it could not (the caller then deletes it).
pub fn keep(dir: &Path, pool: &Path) -> bool {
    if !dir.is_dir() || std::fs::create_dir_all(pool).is_err() {
        return false;
    }
    let to = pool.join(format!(
        "{}-{}-{:08x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f"),
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::rename(dir, to).is_ok()
}

/// Deletes every file in the pool folder `pool` but `kept`, and the folders emptied.
pub fn trim(pool: &Path, kept: &HashSet<PathBuf>) {
    let (mut stack, mut dirs, mut removed) = (vec![pool.to_path_buf()], Vec::new(), 0u64);
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) if !kept.contains(&e.path()) && std::fs::remove_file(e.path()).is_ok() => {
                    removed += 1;
                }
                _ => {}
            }
        }
        if d != pool {
            dirs.push(d);
        }
    }
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
    info!(pool = %pool.display(), removed, kept = kept.len(), "spare report files trimmed");
}

/// An exclusive `flock` on `f`, without waiting; false if another holds one.
fn try_lock(f: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor number, which `f` keeps open meanwhile.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ino(p: &Path) -> u64 {
        std::fs::metadata(p).expect("metadata").ino()
    }

    /// Old reports in `<t>/member/output`, kept into `<t>/pool`; their inode numbers.
    fn pool_of(t: &Path, n: usize, body: &[u8]) -> (PathBuf, Vec<u64>) {
        let out = t.join("member/output/sub");
        std::fs::create_dir_all(&out).expect("mkdir");
        let mut inos = Vec::new();
        for i in 0..n {
            let p = out.join(format!("old{i}.json"));
            std::fs::write(&p, body).expect("write");
            inos.push(ino(&p));
        }
        let pool = t.join("pool");
        assert!(keep(&t.join("member/output"), &pool));
        assert!(!t.join("member/output").exists());
        (pool, inos)
    }

    #[test]
    fn a_report_is_written_over_a_spare_and_no_file_is_created() {
        let t = tempfile::tempdir().expect("tempdir");
        let (pool, inos) = pool_of(t.path(), 3, &[b'x'; 500]);
        let s = Spares::default();
        s.list_now(&pool, SPARE_CAP);
        assert_eq!(s.left(), 3);
        let out = t.path().join("member2/output/a/b");
        // Shorter than the spare (cut to length), longer than it, and into a new folder.
        let short = b"{\"short\": 1}\n".to_vec();
        let long = vec![b'y'; 9000];
        s.write(&out.join("one.json"), &short).expect("write");
        s.write(&out.join("two.json"), &long).expect("write");
        s.write(&out.join("three.json"), b"3").expect("write");
        assert_eq!(std::fs::read(out.join("one.json")).expect("read"), short);
        assert_eq!(std::fs::read(out.join("two.json")).expect("read"), long);
        assert_eq!(std::fs::read(out.join("three.json")).expect("read"), b"3");
        let mut used: Vec<u64> = ["one", "two", "three"]
            .iter()
            .map(|n| ino(&out.join(format!("{n}.json"))))
            .collect();
        used.sort_unstable();
        let mut old = inos.clone();
        old.sort_unstable();
        assert_eq!(used, old, "the reports are the spares' inodes");
        assert_eq!(s.left(), 0);
        // Used up: the next report is created; no temporary name is left behind.
        s.write(&out.join("four.json"), b"4").expect("write");
        assert_eq!(std::fs::read(out.join("four.json")).expect("read"), b"4");
        assert!(!inos.contains(&ino(&out.join("four.json"))));
        let names: Vec<String> = std::fs::read_dir(&out)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        // The emptied pool folders go at the next listing.
        s.list_now(&pool, SPARE_CAP);
        assert_eq!(std::fs::read_dir(&pool).expect("ls pool").count(), 0);
    }

    #[test]
    fn a_report_replaces_an_existing_one_whole() {
        let t = tempfile::tempdir().expect("tempdir");
        let (pool, _) = pool_of(t.path(), 1, b"old");
        let s = Spares::default();
        s.list_now(&pool, SPARE_CAP);
        let p = t.path().join("out/r.json");
        std::fs::create_dir_all(t.path().join("out")).expect("mkdir");
        std::fs::write(&p, b"the first report, longer").expect("write");
        let reader = std::fs::File::open(&p).expect("open");
        s.write(&p, b"second").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"second");
        // One holding the old report still reads it whole (a new inode took its name).
        let mut old = String::new();
        std::io::Read::read_to_string(&mut &reader, &mut old).expect("read old");
        assert_eq!(old, "the first report, longer");
    }

    #[test]
    fn a_spare_still_linked_elsewhere_is_never_written_over() {
        let t = tempfile::tempdir().expect("tempdir");
        let (pool, _) = pool_of(t.path(), 1, b"a report still published");
        let spare = std::fs::read_dir(
            pool.read_dir()
                .expect("ls")
                .next()
                .expect("one")
                .expect("e")
                .path()
                .join("sub"),
        )
        .expect("ls")
        .next()
        .expect("one")
        .expect("e")
        .path();
        let published = t.path().join("published.json");
        std::fs::hard_link(&spare, &published).expect("link");
        let s = Spares::default();
        s.list_now(&pool, SPARE_CAP);
        let p = t.path().join("out/new.json");
        s.write(&p, b"new").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"new");
        assert_eq!(
            std::fs::read(&published).expect("read"),
            b"a report still published"
        );
        assert_ne!(ino(&p), ino(&published));
    }

    #[test]
    fn a_spare_another_process_holds_is_left_to_it() {
        let t = tempfile::tempdir().expect("tempdir");
        let (pool, inos) = pool_of(t.path(), 1, b"being written by another member");
        let s = Spares::default();
        s.list_now(&pool, SPARE_CAP);
        let spare = lock(&s.list)[0].clone();
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(&spare)
            .expect("open");
        assert!(try_lock(&other), "the other member's lock");
        let p = t.path().join("out/new.json");
        s.write(&p, b"new").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"new");
        assert!(!inos.contains(&ino(&p)), "created, not the held spare");
        assert_eq!(
            std::fs::read(&spare).expect("read"),
            b"being written by another member"
        );
    }

    #[test]
    fn the_pool_is_trimmed_to_its_cap() {
        let t = tempfile::tempdir().expect("tempdir");
        let (pool, _) = pool_of(t.path(), 7, b"x");
        let s = Spares::default();
        let kept = s.list_now(&pool, 4).expect("more than the cap");
        assert_eq!(s.left(), 4);
        assert_eq!(kept.len(), 4);
        trim(&pool, &kept);
        let mut left = 0;
        let mut stack = vec![pool.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("ls") {
                let e = e.expect("entry");
                if e.file_type().expect("type").is_dir() {
                    stack.push(e.path());
                } else {
                    left += 1;
                }
            }
        }
        assert_eq!(left, 4);
    }

    #[test]
    fn members_sharing_a_pool_never_take_the_same_spare() {
        let t = tempfile::tempdir().expect("tempdir");
        let (pool, inos) = pool_of(t.path(), 40, b"x");
        let (a, b) = (Spares::default(), Spares::default());
        a.list_now(&pool, SPARE_CAP);
        b.list_now(&pool, SPARE_CAP);
        let (da, db) = (t.path().join("a"), t.path().join("b"));
        std::thread::scope(|sc| {
            sc.spawn(|| {
                for i in 0..30 {
                    a.write(&da.join(format!("{i}.json")), format!("a{i}").as_bytes())
                        .expect("write a");
                }
            });
            sc.spawn(|| {
                for i in 0..30 {
                    b.write(&db.join(format!("{i}.json")), format!("b{i}").as_bytes())
                        .expect("write b");
                }
            });
        });
        let mut seen = std::collections::BTreeSet::new();
        let mut reused = 0;
        for (d, tag) in [(&da, "a"), (&db, "b")] {
            for i in 0..30 {
                let p = d.join(format!("{i}.json"));
                assert_eq!(
                    std::fs::read_to_string(&p).expect("read"),
                    format!("{tag}{i}")
                );
                assert!(seen.insert(ino(&p)), "two reports share an inode");
                reused += usize::from(inos.contains(&ino(&p)));
            }
        }
        assert_eq!(reused, 40, "every spare was used once");
    }

    #[test]
    fn no_pool_creates_every_report() {
        let t = tempfile::tempdir().expect("tempdir");
        let s = Spares::none();
        s.list_now(&t.path().join("missing"), SPARE_CAP);
        let p = t.path().join("x/r.json");
        s.write(&p, b"r").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"r");
        assert!(!keep(&t.path().join("missing"), &t.path().join("pool")));
    }
}
