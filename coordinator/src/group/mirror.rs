//! The root files users read (`primes.txt`, its ledger, `data/output/`), kept by the leader
//! as a copy of its replica's, fenced by its term.
//!
//! When a replica becomes leader it takes the fence (`primes.txt.leader`: the term and group
//! of the leader that owns the root files, replaced atomically), then replaces the root files
//! with its replica's by rename (the replica has applied every committed entry by then), and
//! from then on copies what each applied entry adds (reports as hard links to the
//! replica's where the folders share a file system). Every append opens the root file
//! first, then checks the fence (once per entry), then writes: an older leader (cut off or paused, not yet
//! knowing) that checked before the takeover writes into the file the takeover renamed away,
//! and one that opens after it sees the newer fence and writes nothing. No lock is held
//! across writes, so a leader paused in the middle of one (SIGSTOP) cannot stop the next
//! from taking over. A report an older leader still renames in place is one of a committed
//! entry, the same as the new leader's. The root files are therefore always the state of
//! one leader's replica, at most one flush behind it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::core::{JobReport, Report};
use crate::primes::ledger_path;

pub struct Mirror {
    primes: PathBuf,
    output: PathBuf,
    jobs: PathBuf,
    fence: PathBuf,
    /// The term this replica holds the root files for, while it does.
    term: Option<u64>,
    /// The group it leads (see [`group_id`]).
    group: String,
    /// Bytes of the replica's primes file and ledger already in the root ones.
    copied: (u64, u64),
}

impl Mirror {
    pub fn new(primes: &Path, output: &Path, jobs: &Path) -> Self {
        Mirror {
            primes: primes.to_path_buf(),
            output: output.to_path_buf(),
            jobs: jobs.to_path_buf(),
            fence: fence_path(primes),
            term: None,
            group: String::new(),
            copied: (0, 0),
        }
    }

    pub fn term(&self) -> Option<u64> {
        self.term
    }

    /// Checks that the fence still names this group and `term`.
    fn check(&self, term: u64) -> anyhow::Result<()> {
        let (holder, group) = read_fence(&self.primes);
        if group != self.group || holder != term {
            anyhow::bail!(
                "the root files belong to the leader of term {holder} of group [{group}] now (this one led term {term} of [{}])",
                self.group
            );
        }
        Ok(())
    }

    /// Takes the fence for `term`, if it names an older term of this group, another group or
    /// nobody.
    fn take(&self, term: u64) -> anyhow::Result<()> {
        let (holder, group) = read_fence(&self.primes);
        if group == self.group && holder > term {
            anyhow::bail!(
                "the root files belong to the leader of term {holder} of this group now (this one leads term {term})"
            );
        }
        proto::files::write_atomic(
            &self.fence,
            format!("{term} {}\n", self.group).as_bytes(),
            true,
        )
        .with_context(|| format!("writing {}", self.fence.display()))
    }

    /// Takes the root files for `term` of `group`: they become copies of the replica's (`dir`).
    pub fn activate(&mut self, term: u64, group: &str, dir: &Path) -> anyhow::Result<()> {
        self.group = group.to_string();
        let files = super::files::collect_files(&dir.join("primes.txt"), &dir.join("output"))?;
        self.take(term)?;
        let copied = super::files::write_files(&files, &self.primes, &self.output, false)?;
        self.copied = copied;
        self.term = Some(term);
        Ok(())
    }

    pub fn deactivate(&mut self) {
        self.term = None;
    }

    /// Copies what the replica's primes file and ledger (`dir`) grew by since the last call.
    pub fn follow(&mut self, dir: &Path) -> anyhow::Result<()> {
        let Some(term) = self.term else {
            return Ok(());
        };
        let src = dir.join("primes.txt");
        let (from_p, from_l) = self.copied;
        let r = (|| {
            // Opened before the check: a takeover after it renames these away.
            let mut dst_p = open_append(&self.primes)?;
            let mut dst_l = open_append(&ledger_path(&self.primes))?;
            self.check(term)?;
            let a = append_tail(&src, &mut dst_p, &self.primes, from_p)?;
            let b = append_tail(
                &ledger_path(&src),
                &mut dst_l,
                &ledger_path(&self.primes),
                from_l,
            )?;
            Ok((from_p + a, from_l + b))
        })();
        if let Ok(c) = r {
            self.copied = c;
        }
        self.settle(r.map(|_| ()))
    }

    /// Copies the reports `rs` that the replica has just written in `written` (its reports
    /// folder), after one check of the fence: each a hard link to the same bytes, renamed
    /// into place, where the two folders share a file system (no second encoding and write
    /// of each report); written out otherwise.
    pub fn reports(&mut self, rs: &[&Report], written: &Path) -> anyhow::Result<()> {
        let Some(term) = self.term else {
            return Ok(());
        };
        if rs.is_empty() {
            return Ok(());
        }
        let res = self.check(term).and_then(|()| {
            for r in rs {
                let src = crate::report::report_path(written, &r.file);
                let dst = crate::report::report_path(&self.output, &r.file);
                if link_into_place(&src, &dst).is_err() {
                    crate::report::write_report(&self.output, r, &self.jobs)?;
                }
            }
            Ok(())
        });
        self.settle(res)
    }

    pub fn job_report(&mut self, r: &JobReport) -> anyhow::Result<()> {
        let Some(term) = self.term else {
            return Ok(());
        };
        let mut r = r.clone();
        let res = self
            .check(term)
            .and_then(|()| crate::report::write_job_report(&self.output, &mut r));
        self.settle(res)
    }

    /// A failed mirror write gives the root files up (a newer leader re-copies them).
    fn settle(&mut self, r: anyhow::Result<()>) -> anyhow::Result<()> {
        if r.is_err() {
            self.term = None;
        }
        r
    }
}

/// The fence of the root primes file `primes`: `<primes>.leader`.
pub fn fence_path(primes: &Path) -> PathBuf {
    let mut fence = primes.as_os_str().to_owned();
    fence.push(".leader");
    PathBuf::from(fence)
}

/// Who holds the root files by the fence's text: (term, group); (0, "") if nobody.
pub fn parse_fence(text: &str) -> (u64, String) {
    let mut it = text.split_whitespace();
    let term = it.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    (term, it.next().unwrap_or("").to_string())
}

/// Reads the fence of the root primes file `primes`: (term, group); (0, "") if none.
pub fn read_fence(primes: &Path) -> (u64, String) {
    parse_fence(&std::fs::read_to_string(fence_path(primes)).unwrap_or_default())
}

/// A group's name in the fence: its member numbers (`1,2,3`; a group of one is `1`). Two
/// groups that take turns on the same root files (simple mode, then replicated) differ.
pub fn group_id<'a>(ids: impl IntoIterator<Item = &'a u64>) -> String {
    ids.into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Puts a hard link to `src` at `dst`: one `link` where `dst` is new (the common case: a
/// file's first report); over an existing `dst` atomically (a link under a temporary name,
/// then a rename over it). Creates `dst`'s folder if missing. Fails where a link cannot be
/// made (another file system); `dst` is then untouched.
fn link_into_place(src: &Path, dst: &Path) -> std::io::Result<()> {
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
    let name = dst.file_name().and_then(|n| n.to_str()).unwrap_or("report");
    let tmp = dir.join(format!(".{name}.link{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(src, &tmp)?;
    let renamed = std::fs::rename(&tmp, dst);
    // Gone after a rename, except where `dst` already was this file (the same report applied
    // again): rename then leaves both names.
    let _ = std::fs::remove_file(&tmp);
    renamed
}

/// `path` opened for appending (created if missing).
fn open_append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Appends `from`'s bytes after offset `at` to `dst` (the file `to`), fsynced; how many.
fn append_tail(from: &Path, dst: &mut File, to: &Path, at: u64) -> anyhow::Result<u64> {
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
    let mut tail = Vec::with_capacity((len - at) as usize);
    src.take(len - at)
        .read_to_end(&mut tail)
        .with_context(|| format!("reading {}", from.display()))?;
    dst.write_all(&tail)
        .and_then(|()| dst.sync_data())
        .with_context(|| format!("appending to {}", to.display()))?;
    Ok(tail.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::link_into_place;

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
