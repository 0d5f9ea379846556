//! The root files users read (`primes.txt`, its ledger, `data/output/`): the leader's
//! replica's own files, fenced by its term.
//!
//! When a replica becomes leader (it has applied every committed entry by then) it takes the
//! fence (`primes.txt.leader`: the term and group of the leader that owns the root files,
//! replaced atomically), then puts its replica's files in place of the root ones: each root
//! name becomes a hard link to the replica's file, made under a temporary name and renamed
//! over the root name (atomic), the fence checked just before each rename. From then on the
//! root primes file and ledger *are* the replica's: what it appends is at root with nothing
//! copied; a report the replica rewrites (a new file, renamed in its folder) is linked into
//! place again as its entry is applied. Where a link cannot be made (the folders on different
//! file systems) the root files are copies instead, streamed to a temporary name and renamed
//! likewise, and what each applied entry adds is appended to them: the root file opened
//! first, then the fence checked, then written, so an older leader that checked before a
//! takeover writes into the file the takeover renamed away, and one that checks after sees
//! the newer fence and writes nothing.
//!
//! Fencing with links. A replica only ever writes its own files; the root names reach them
//! only through the links. Once a newer leader has renamed its links over the root names,
//! nothing an older leader appends to its replica's files (it keeps applying as a follower,
//! or runs on paused, not yet knowing) is reachable by a root name: it never writes into the
//! root files again. Between a newer leader taking the fence and its renames, the root names
//! still reach the older replica's files, which hold committed entries only, as the root
//! files did before the takeover. An older leader changes what a root name points to only by
//! a rename (its own takeover, a re-link, a report), each after a check of the fence: the
//! primes file and ledger one check per rename, the reports of an applied batch one check
//! for the batch. So after a newer fence it can still do at most the renames its last passed
//! check covered; a root primes file or ledger so put back is not the newer leader's, which
//! finds that at its next [`Mirror::follow`] and links its own again, and a report so put
//! back is one of a committed entry. No lock is held across writes, so a leader paused in the
//! middle of one (SIGSTOP) cannot stop the next from taking over. The root files are
//! therefore always one leader's replica's files (the same inodes; in copy mode at most one
//! applied flush behind).
//!
//! What sharing the inodes implies: the root primes file and ledger are exactly as durable as
//! the replica's (fsynced before a snapshot, a membership change, a clean stop; a torn tail
//! the replica cuts when it opens is cut at root too), and anything else writing the root
//! primes file in place (a coordinator without a group started on the same folder) would
//! write into the replica's: it must replace the file (break the link) first. Root reports
//! the replica lacks are left as they are. A replica whose primes file or ledger is replaced
//! by a new file (a snapshot installed) calls [`Mirror::relink`].
//!
//! Its rooms: this file holds the [`Mirror`] (taking the root files, following the
//! replica's, the reports); `fence.rs` the fence (who holds the root files); `ops.rs` the
//! file operations it is made of (links and copies put in place, tails appended).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tracing::info;

use crate::core::{JobReport, Report};
use crate::primes::ledger_path;

mod fence;
mod ops;

pub use fence::{fence_path, group_id, parse_fence, read_fence};
use ops::{
    append_tail, copy_file, dir_of, link_into_place, open_append, replace, same_file, sync_dir,
    temp_link, temp_name,
};

/// How the root primes file and ledger follow the replica's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Hard links to the replica's files: nothing to copy.
    Link,
    /// Copies (a link could not be made): each applied entry's bytes appended.
    Copy,
}

pub struct Mirror {
    primes: PathBuf,
    output: PathBuf,
    jobs: PathBuf,
    fence: PathBuf,
    /// The term this replica holds the root files for, while it does.
    term: Option<u64>,
    /// The group it leads (see [`group_id`]).
    group: String,
    /// How the root files follow the replica's since the takeover.
    mode: Mode,
    /// In copy mode: bytes of the replica's primes file and ledger already in the root ones.
    copied: (u64, u64),
    /// Whether links are tried (always, except in tests of copy mode).
    links: bool,
}

/// The replica's primes file and ledger in `dir`, each with its root counterpart.
type Pairs = [(PathBuf, PathBuf); 2];

impl Mirror {
    pub fn new(primes: &Path, output: &Path, jobs: &Path) -> Self {
        Mirror {
            primes: primes.to_path_buf(),
            output: output.to_path_buf(),
            jobs: jobs.to_path_buf(),
            fence: fence_path(primes),
            term: None,
            group: String::new(),
            mode: Mode::Link,
            copied: (0, 0),
            links: true,
        }
    }

    /// A mirror that never links (copy mode, as across file systems).
    #[cfg(test)]
    fn copying(primes: &Path, output: &Path, jobs: &Path) -> Self {
        Mirror {
            links: false,
            ..Mirror::new(primes, output, jobs)
        }
    }

    /// The jobs folder of the coordinator that keeps the root files.
    pub fn jobs_dir(&self) -> &Path {
        &self.jobs
    }

    pub fn term(&self) -> Option<u64> {
        self.term
    }

    /// Ok while this mirror keeps the root files and the fence still names it: what else
    /// the leader writes at root (its snapshots) is written only then.
    pub fn holds_fence(&self) -> anyhow::Result<()> {
        match self.term {
            Some(term) => self.check(term),
            None => anyhow::bail!("this member does not keep the root files"),
        }
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

    /// Takes the root files for `term` of `group`: after taking the fence, the root primes
    /// file, ledger and each report become hard links to the replica's (`dir`), or copies
    /// where links cannot be made. Root reports the replica lacks stay.
    pub fn activate(&mut self, term: u64, group: &str, dir: &Path) -> anyhow::Result<()> {
        self.term = None;
        self.group = group.to_string();
        self.take(term)?;
        self.place_pair(term, dir, self.links)?;
        self.place_reports(term, &dir.join("output"))?;
        self.term = Some(term);
        Ok(())
    }

    pub fn deactivate(&mut self) {
        self.term = None;
    }

    /// Puts the replica's primes file and ledger (`dir`) in place of the root ones again,
    /// after a check of the fence, for when the replica's were replaced by new files (a
    /// snapshot installed, a file rewritten): links again in link mode, copies again in copy
    /// mode.
    pub fn relink(&mut self, dir: &Path) -> anyhow::Result<()> {
        let Some(term) = self.term else {
            return Ok(());
        };
        let links = self.links && self.mode == Mode::Link;
        let r = self
            .check(term)
            .and_then(|()| self.place_pair(term, dir, links));
        self.settle(r)
    }

    /// Keeps the root primes file and ledger up with the replica's (`dir`): in link mode
    /// nothing to copy (the fence checked, and a root file that is no longer the replica's
    /// linked again); in copy mode, what they grew by since the last call appended.
    pub fn follow(&mut self, dir: &Path) -> anyhow::Result<()> {
        let Some(term) = self.term else {
            return Ok(());
        };
        if self.mode == Mode::Link {
            let r = self.check(term).and_then(|()| {
                let [p, l] = pairs(&self.primes, dir);
                if same_file(&p.0, &p.1) && same_file(&l.0, &l.1) {
                    return Ok(());
                }
                self.place_pair(term, dir, true)
            });
            return self.settle(r);
        }
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

    /// Puts the replica's primes file and ledger (`dir`) in place of the root ones: links
    /// if `links` and they can be made (link mode), else streamed copies (copy mode, their
    /// lengths the bytes copied). Each rename after a check of the fence.
    fn place_pair(&mut self, term: u64, dir: &Path, links: bool) -> anyhow::Result<()> {
        let pairs = pairs(&self.primes, dir);
        if links && self.link_pair(term, &pairs)? {
            self.mode = Mode::Link;
            self.copied = (0, 0);
            return Ok(());
        }
        let [p, l] = &pairs;
        let a = self.copy_over(term, &p.0, &p.1, true)?;
        let b = self.copy_over(term, &l.0, &l.1, true)?;
        self.mode = Mode::Copy;
        self.copied = (a, b);
        Ok(())
    }

    /// Links each replica file of `pairs` at its root name (a missing one created empty):
    /// both links made under temporary names first, then each renamed into place after a
    /// check of the fence. `Ok(false)` if a link cannot be made (nothing changed).
    fn link_pair(&self, term: u64, pairs: &Pairs) -> anyhow::Result<bool> {
        let mut tmps = Vec::with_capacity(pairs.len());
        for (src, dst) in pairs {
            // The replica keeps its files; one missing is an empty one (as the copy makes).
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(src)
                .with_context(|| format!("opening {}", src.display()))?;
            match temp_link(src, dst) {
                Ok(t) => tmps.push(t),
                Err(e) => {
                    for t in &tmps {
                        let _ = std::fs::remove_file(t);
                    }
                    info!(
                        from = %src.display(),
                        to = %dst.display(),
                        error = %e,
                        "cannot link the root files to this member's: copying them"
                    );
                    return Ok(false);
                }
            }
        }
        let r = (|| {
            for ((_, dst), tmp) in pairs.iter().zip(&tmps) {
                self.check(term)?;
                replace(tmp, dst)
                    .with_context(|| format!("renaming a link over {}", dst.display()))?;
            }
            sync_dir(dir_of(&self.primes))
        })();
        // Gone after a rename, except where the root name already was this file: rename
        // then leaves both names.
        for t in &tmps {
            let _ = std::fs::remove_file(t);
        }
        r.map(|()| true)
    }

    /// Copies the replica's file `src` (empty if missing) to a temporary name beside `dst`,
    /// streamed (fsynced if `durable`), then renames it over `dst` after a check of the
    /// fence; the bytes copied.
    fn copy_over(&self, term: u64, src: &Path, dst: &Path, durable: bool) -> anyhow::Result<u64> {
        let tmp = temp_name(dst, "copy");
        let r = (|| {
            let n = copy_file(src, &tmp, durable)?;
            self.check(term)?;
            std::fs::rename(&tmp, dst)
                .with_context(|| format!("renaming a copy over {}", dst.display()))?;
            if durable {
                sync_dir(dir_of(dst))?;
            }
            Ok(n)
        })();
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    }

    /// Puts every report of the replica's reports folder `src` in place at root (linked in
    /// link mode, else or where a link fails copied), each after a check of the fence.
    fn place_reports(&self, term: u64, src: &Path) -> anyhow::Result<()> {
        let links = self.mode == Mode::Link;
        super::files::for_each_report(src, &mut |rel, path| {
            let dst = self.output.join(rel);
            if links {
                self.check(term)?;
                if link_into_place(path, &dst).is_ok() {
                    return Ok(());
                }
            }
            self.copy_over(term, path, &dst, false).map(|_| ())
        })
    }

    /// Copies the reports `rs` that the replica has just written in `written` (its reports
    /// folder), after one check of the fence: in link mode each a hard link to the same
    /// bytes, renamed into place (no second encoding and write of each report); written out
    /// in copy mode, or where a link fails.
    pub fn reports(&mut self, rs: &[&Report], written: &Path) -> anyhow::Result<()> {
        let Some(term) = self.term else {
            return Ok(());
        };
        if rs.is_empty() {
            return Ok(());
        }
        let links = self.mode == Mode::Link;
        let res = self.check(term).and_then(|()| {
            for r in rs {
                let src = crate::report::report_path(written, &r.file);
                let dst = crate::report::report_path(&self.output, &r.file);
                if !(links && link_into_place(&src, &dst).is_ok()) {
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

/// The replica's primes file and ledger in `dir`, each with its root counterpart (of the
/// root primes file `primes`).
fn pairs(primes: &Path, dir: &Path) -> Pairs {
    let src = dir.join("primes.txt");
    [
        (src.clone(), primes.to_path_buf()),
        (ledger_path(&src), ledger_path(primes)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// `replace` puts the new file at the name at once and leaves the old one to its other
    /// links; with nothing at the name, or the same file there, it is a rename.
    fn replace_exchanges_names_and_keeps_the_old_file_for_its_other_links() {
        let t = tempfile::tempdir().expect("tempdir");
        let (old, new, root) = (
            t.path().join("old"),
            t.path().join("new"),
            t.path().join("root"),
        );
        std::fs::write(&old, b"the old leader's primes\n").expect("write");
        std::fs::write(&new, b"this member's primes\n").expect("write");
        std::fs::hard_link(&old, &root).expect("link");
        let tmp = t.path().join(".root.link");
        std::fs::hard_link(&new, &tmp).expect("link");
        super::replace(&tmp, &root).expect("replace");
        assert_eq!(
            std::fs::read(&root).expect("read"),
            b"this member's primes\n"
        );
        assert!(!tmp.exists(), "the temporary name is gone");
        assert_eq!(
            std::fs::read(&old).expect("read"),
            b"the old leader's primes\n"
        );
        assert_eq!(std::fs::metadata(&old).expect("stat").nlink(), 1);
        assert_eq!(std::fs::metadata(&new).expect("stat").nlink(), 2);
        // Nothing at the name: a rename.
        let fresh = t.path().join("fresh");
        std::fs::hard_link(&new, &tmp).expect("link");
        super::replace(&tmp, &fresh).expect("replace");
        assert_eq!(
            std::fs::read(&fresh).expect("read"),
            b"this member's primes\n"
        );
        assert!(!tmp.exists());
        // The same file at both names: it stays, the temporary name goes.
        std::fs::hard_link(&new, &tmp).expect("link");
        super::replace(&tmp, &root).expect("replace");
        assert_eq!(
            std::fs::read(&root).expect("read"),
            b"this member's primes\n"
        );
        assert!(!tmp.exists());
        assert_eq!(std::fs::metadata(&new).expect("stat").nlink(), 3);
    }
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    fn ino(p: &Path) -> u64 {
        std::fs::metadata(p).expect("stat").ino()
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).expect("read")
    }

    fn append(p: &Path, text: &str) {
        OpenOptions::new()
            .append(true)
            .open(p)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("append");
    }

    /// A member folder `name` under `root` with primes `text`, a ledger line and a report.
    fn member(root: &Path, name: &str, text: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("output/sub")).expect("mkdir");
        std::fs::write(dir.join("primes.txt"), text).expect("write");
        std::fs::write(dir.join("primes.txt.ranges"), format!("{name}\n")).expect("write");
        std::fs::write(dir.join("output/sub/r.json"), name).expect("write");
        dir
    }

    /// The root folder's primes file, reports folder and jobs folder (with older files).
    fn root(tmp: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let (p, o) = (tmp.join("primes.txt"), tmp.join("output"));
        std::fs::create_dir_all(o.join("sub")).expect("mkdir");
        std::fs::write(&p, "99\n").expect("write");
        std::fs::write(o.join("sub/r.json"), "old").expect("write");
        std::fs::write(o.join("extra.json"), "kept").expect("write");
        (p, o, tmp.join("jobs"))
    }

    #[test]
    /// In link mode the root primes file, ledger and reports are the member's files: what
    /// the member appends is at root with nothing copied; root reports it lacks stay.
    fn activate_links_the_members_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (p, o, jobs) = root(tmp.path());
        let a = member(tmp.path(), "a", "2\n");
        let mut m = Mirror::new(&p, &o, &jobs);
        m.activate(1, "1,2", &a).expect("activate");
        assert_eq!(m.term(), Some(1));
        assert_eq!(read_fence(&p), (1, "1,2".to_string()));
        assert_eq!(ino(&p), ino(&a.join("primes.txt")));
        assert_eq!(ino(&ledger_path(&p)), ino(&a.join("primes.txt.ranges")));
        assert_eq!(
            ino(&o.join("sub/r.json")),
            ino(&a.join("output/sub/r.json"))
        );
        assert_eq!(read(&o.join("extra.json")), "kept");
        append(&a.join("primes.txt"), "3\n");
        assert_eq!(read(&p), "2\n3\n");
        m.follow(&a).expect("follow");
        assert_eq!(read(&p), "2\n3\n");
        assert_eq!(m.term(), Some(1));
        let hidden: Vec<String> = std::fs::read_dir(tmp.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(hidden.is_empty(), "no temporary name left: {hidden:?}");
    }

    #[test]
    /// A newer leader's takeover replaces the links: what the older member appends is no
    /// longer at root, and the older leader's next follow finds the newer fence. A root
    /// file put back by an older leader's late rename is linked again at the newer one's
    /// next follow; a member file replaced by a new one is linked again by relink.
    fn newer_takeover_replaces_the_links() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (p, o, jobs) = root(tmp.path());
        let a = member(tmp.path(), "a", "2\n");
        let b = member(tmp.path(), "b", "2\n3\n");
        let mut old = Mirror::new(&p, &o, &jobs);
        old.activate(1, "1,2", &a).expect("activate a");
        let mut new = Mirror::new(&p, &o, &jobs);
        new.activate(2, "1,2", &b).expect("activate b");
        assert_eq!(ino(&p), ino(&b.join("primes.txt")));
        assert_eq!(
            ino(&o.join("sub/r.json")),
            ino(&b.join("output/sub/r.json"))
        );
        append(&a.join("primes.txt"), "13\n");
        assert_eq!(
            read(&p),
            "2\n3\n",
            "the older member's append is not at root"
        );
        assert!(
            old.holds_fence().is_err(),
            "the older leader's snapshots are not written at root"
        );
        new.holds_fence().expect("the newer leader holds the fence");
        assert!(
            old.follow(&a).is_err(),
            "the older leader sees the newer fence"
        );
        assert_eq!(old.term(), None);
        // An older leader cannot take the fence back.
        assert!(old.activate(1, "1,2", &a).is_err());
        assert_eq!(ino(&p), ino(&b.join("primes.txt")));
        new.follow(&b).expect("follow");
        assert_eq!(read(&p), "2\n3\n");
        // A late rename by the older leader (its check passed before the newer fence).
        std::fs::hard_link(a.join("primes.txt"), tmp.path().join("late")).expect("link");
        std::fs::rename(tmp.path().join("late"), &p).expect("rename");
        new.follow(&b).expect("follow");
        assert_eq!(ino(&p), ino(&b.join("primes.txt")), "linked again");
        // The member's primes file replaced (a snapshot installed).
        std::fs::write(b.join("fresh"), "5\n").expect("write");
        std::fs::rename(b.join("fresh"), b.join("primes.txt")).expect("rename");
        new.relink(&b).expect("relink");
        assert_eq!(ino(&p), ino(&b.join("primes.txt")));
        assert_eq!(read(&p), "5\n");
        assert_eq!(new.term(), Some(2));
    }

    #[test]
    /// Where the member's folder is on another file system (here /dev/shm, when it is one)
    /// the links fail (EXDEV) and the takeover copies instead; follow then appends.
    fn links_across_file_systems_fall_back_to_copies() {
        let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let dev = |p: &Path| std::fs::metadata(p).expect("stat").dev();
        if dev(shm.path()) == dev(tmp.path()) {
            return;
        }
        let (p, o, jobs) = root(tmp.path());
        let a = member(shm.path(), "a", "2\n");
        let mut m = Mirror::new(&p, &o, &jobs);
        m.activate(1, "1", &a).expect("activate");
        assert_eq!(m.mode, Mode::Copy);
        assert_eq!(read(&p), "2\n");
        assert_eq!(read(&o.join("sub/r.json")), "a");
        append(&a.join("primes.txt"), "3\n");
        m.follow(&a).expect("follow");
        assert_eq!(read(&p), "2\n3\n");
    }

    #[test]
    /// Copy mode (as across file systems): the takeover writes copies, follow streams each
    /// tail, relink copies again, and an older leader writes nothing after a newer fence.
    fn copy_mode_follow_streams_a_tail() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (p, o, jobs) = root(tmp.path());
        let a = member(tmp.path(), "a", "2\n");
        let mut m = Mirror::copying(&p, &o, &jobs);
        m.activate(1, "1", &a).expect("activate");
        assert_ne!(ino(&p), ino(&a.join("primes.txt")));
        assert_ne!(
            ino(&o.join("sub/r.json")),
            ino(&a.join("output/sub/r.json"))
        );
        assert_eq!(read(&p), "2\n");
        assert_eq!(read(&ledger_path(&p)), "a\n");
        assert_eq!(read(&o.join("sub/r.json")), "a");
        assert_eq!(read(&o.join("extra.json")), "kept");
        // A tail larger than any copy buffer.
        let tail: String = (0..200_000u64)
            .map(|i| format!("{}\n", 1_000_003 + 2 * i))
            .collect();
        append(&a.join("primes.txt"), &tail);
        append(&a.join("primes.txt.ranges"), "x\n");
        m.follow(&a).expect("follow");
        assert_eq!(read(&p), format!("2\n{tail}"));
        assert_eq!(read(&ledger_path(&p)), "a\nx\n");
        m.follow(&a).expect("nothing new");
        assert_eq!(read(&p).len(), 2 + tail.len());
        // The member's file replaced: copied again, then followed from there.
        std::fs::write(a.join("fresh"), "5\n").expect("write");
        std::fs::rename(a.join("fresh"), a.join("primes.txt")).expect("rename");
        m.relink(&a).expect("relink");
        assert_eq!(read(&p), "5\n");
        append(&a.join("primes.txt"), "7\n");
        m.follow(&a).expect("follow");
        assert_eq!(read(&p), "5\n7\n");
        // A newer leader (also copying) takes over; the older one writes nothing more.
        let b = member(tmp.path(), "b", "11\n");
        let mut newer = Mirror::copying(&p, &o, &jobs);
        newer.activate(2, "1", &b).expect("activate b");
        append(&a.join("primes.txt"), "17\n");
        assert!(m.follow(&a).is_err());
        assert_eq!(read(&p), "11\n");
    }
}
