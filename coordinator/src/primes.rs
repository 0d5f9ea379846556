//! `primes.txt`: the durable, deduplicated set of primes found.
//!
//! The file is append-only. On open, a torn last line (a crash in the middle of an append)
//! is cut off, never read as a number, and the in-memory dedup set is rebuilt from what
//! remains. An append writes only primes not yet written, then fsyncs; a failed write takes
//! back what the batch decided, so it can simply be retried.
//!
//! Primes of `primes` jobs (range segments) are deduplicated by intervals instead of the set
//! ([`crate::ranges`]): the ledger `primes.txt.ranges` lists, one JSON line each, the
//! generation tasks finished (each work once), a `primes` segment's line appended and
//! fsynced after its primes; at open, lines of primes.txt inside those segments are
//! counted, not loaded into the set.
//!
//! A checkpoint ([`PrimesFile::checkpoint`]) spares a reopen the scan of the whole file:
//! `primes.txt.meta` records the lengths of primes.txt and the ledger it describes (with a
//! fingerprint of each), the line counts, the covered intervals and the segments being
//! streamed, and `primes.txt.set` holds the dedup set. Open then loads the set from the
//! dump and reads only the lines appended since; a checkpoint that does not match the files
//! (shorter, replaced, a damaged dump) is ignored and removed, and the whole file read.
//!
//! [`PrimesFile::merge_from`] adds another primes file and its ledger, streaming, with the
//! same decisions on every member of a group (same files in, same bytes out).
//!
//! Its rooms: this file holds the file itself (open, append, the ledger's records); `lines`
//! reads primes.txt and the ledger line by line (the torn tail, the load into the set, the
//! ledger's check); `checkpoint` writes and resumes the checkpoint; `merge` merges another
//! primes file in.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use proto::msg::Work;

use crate::ranges::{Finished, Ranges, Run, Undo};

mod checkpoint;
mod decimal;
mod lines;
mod merge;
#[cfg(test)]
mod tests;

use checkpoint::{read_meta, remove_checkpoint, resume, Dump};
pub(crate) use lines::whole_lines_len;
use lines::{ledger_mismatch, load_all, open_lines, read_ledger};

/// The dedup set's hasher: foldhash, seeded at random per process (fast on u64 keys, where
/// the default SipHash spent more time than the table itself; the random seed keeps inputs
/// crafted to collide from degrading the table).
type Hash = foldhash::fast::RandomState;

/// The primes file and its dedup set. Primes below 2^64 are kept as u64 (8 bytes plus the
/// hash table's overhead each); larger ones as canonical decimal strings.
pub struct PrimesFile {
    path: PathBuf,
    file: File,
    small: HashSet<u64, Hash>,
    big: HashSet<String, Hash>,
    /// Lines of primes.txt known through `ranges` rather than the set.
    in_ranges: u64,
    /// The file's length (where the next append begins).
    bytes: u64,
    ranges: Ranges,
    ledger_path: PathBuf,
    ledger: File,
    /// The ledger's length (where the next line begins).
    ledger_bytes: u64,
    /// The works the ledger records (a task is recorded once).
    works: HashSet<Work>,
    /// The ledger's finished tasks: read at open, then each task [`PrimesFile::append`] or
    /// [`PrimesFile::merge_from`] records (once per work), for the machine to take (jobs
    /// resume from them). Callers may read or take it; they must not extend it (the file
    /// does; what it recorded is kept apart, so taking it changes no decision).
    pub finished: Vec<Finished>,
    /// Bytes cut from a torn tail at open, for the log.
    pub truncated_bytes: u64,
    /// fsync every append (see [`PrimesFile::set_sync`]).
    sync: bool,
    /// Changes to the set since open, to know whether the dump is current (insertions
    /// taken back by a failed write count too: the dump is then written once more).
    set_changes: u64,
    /// The set dump on disk, if it holds the set as of `set_changes == dumped.changes`.
    dumped: Option<Dump>,
    /// True if open used a checkpoint.
    from_checkpoint: bool,
}

/// The dedup set's primes inside `run`'s segment, sorted, when listing them costs less than
/// a probe of the set per prime of the run (`None`: probe).
fn set_inside(set: &HashSet<u64, Hash>, run: &Run) -> Option<Vec<u64>> {
    if set.len() > 4 * run.primes.len() {
        return None;
    }
    let mut v: Vec<u64> = set
        .iter()
        .copied()
        .filter(|p| (run.lo..=run.hi).contains(p))
        .collect();
    v.sort_unstable();
    Some(v)
}

/// Bytes formatted before they are handed to the file during an append.
const WRITE_PIECE: usize = 1 << 20;

/// The checkpoint format; another version is not read.
const META_VERSION: u32 = 1;

/// The ledger of `path` (`primes.txt` -> `primes.txt.ranges`).
pub fn ledger_path(path: &Path) -> PathBuf {
    suffixed(path, ".ranges")
}

/// `path` with `suffix` appended to its name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The checkpoint's meta file (`primes.txt.meta`).
fn meta_path(path: &Path) -> PathBuf {
    suffixed(path, ".meta")
}

/// The checkpoint's dump of the dedup set (`primes.txt.set`).
fn set_path(path: &Path) -> PathBuf {
    suffixed(path, ".set")
}

/// The dedup set: primes below 2^64, and the others.
type Sets = (HashSet<u64, Hash>, HashSet<String, Hash>);

impl PrimesFile {
    /// Opens (creating) `path`, cutting a torn tail and loading every prime: from its
    /// checkpoint and the lines appended since when the checkpoint matches the files, else
    /// by reading the whole file.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let ledger_path = ledger_path(path);
        let (mut ledger, mut ledger_bytes, ledger_cut) = open_lines(&ledger_path)?;
        if ledger_cut > 0 {
            tracing::warn!(bytes = ledger_cut, path = %ledger_path.display(), "cut a torn last line");
        }
        let entries = read_ledger(&ledger_path, &ledger, ledger_bytes)?;
        let (mut file, good, truncated_bytes) = open_lines(path)?;
        let resumed = match read_meta(&meta_path(path)) {
            Ok(Some(meta)) => {
                match resume(
                    &file,
                    good,
                    &ledger,
                    ledger_bytes,
                    &entries,
                    &meta,
                    &set_path(path),
                ) {
                    Ok(r) => {
                        tracing::info!(
                            path = %path.display(),
                            from = meta.primes_bytes,
                            bytes = good - meta.primes_bytes,
                            "loaded the checkpoint; read primes.txt from where it ends"
                        );
                        Some(r)
                    }
                    Err(why) => {
                        tracing::warn!(path = %path.display(), why, "not using the checkpoint; reading all of primes.txt");
                        None
                    }
                }
            }
            Ok(None) => {
                tracing::info!(path = %path.display(), "no checkpoint; reading all of primes.txt");
                None
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), why, "not using the checkpoint; reading all of primes.txt");
                None
            }
        };
        let mut finished: Vec<Finished> = entries.into_iter().map(|(_, f)| f).collect();
        let from_checkpoint = resumed.is_some();
        let (small, big, in_ranges, ranges, dumped, set_changes) = match resumed {
            Some(r) => (
                r.small,
                r.big,
                r.in_ranges,
                r.ranges,
                Some(r.dump),
                r.inserted,
            ),
            None => {
                // A checkpoint not used does not describe the files (or may not): gone, so
                // that nothing trusts it later.
                remove_checkpoint(path);
                let mut ranges = Ranges::default();
                for (lo, hi) in finished.iter().filter_map(Finished::covers) {
                    ranges.cover(lo, hi);
                }
                let mut loaded = load_all(&file, good, &ranges.covered)
                    .with_context(|| format!("reading {}", path.display()))?;
                // The ledger must describe this primes.txt: a segment it lists whose primes
                // are not all there (primes.txt deleted or replaced, the ledger kept) would
                // be skipped for good. Then its segments are dropped and everything loads
                // into the set.
                if let Some(why) = ledger_mismatch(&finished, &ranges.covered, &loaded.per_interval)
                {
                    tracing::warn!(
                        path = %ledger_path.display(),
                        why,
                        "the ledger's primes segments do not match primes.txt; dropping them"
                    );
                    // The other tasks' results do not depend on primes.txt: they stay.
                    finished.retain(|f| f.covers().is_none());
                    let mut keep = Vec::new();
                    for f in &finished {
                        if let Ok(l) = serde_json::to_vec(f) {
                            keep.extend_from_slice(&l);
                            keep.push(b'\n');
                        }
                    }
                    proto::files::write_atomic(&ledger_path, &keep, true)
                        .with_context(|| format!("rewriting {}", ledger_path.display()))?;
                    (ledger, ledger_bytes, _) = open_lines(&ledger_path)?;
                    ranges = Ranges::default();
                    loaded = load_all(&file, good, &ranges.covered)
                        .with_context(|| format!("reading {}", path.display()))?;
                }
                (loaded.small, loaded.big, loaded.in_ranges, ranges, None, 0)
            }
        };
        file.seek(SeekFrom::End(0))
            .with_context(|| format!("seeking {}", path.display()))?;
        let works = finished.iter().map(|f| f.work.clone()).collect();
        Ok(PrimesFile {
            path: path.to_path_buf(),
            file,
            small,
            big,
            in_ranges,
            bytes: good,
            ranges,
            ledger_path,
            ledger,
            ledger_bytes,
            works,
            finished,
            truncated_bytes,
            sync: true,
            set_changes,
            dumped,
            from_checkpoint,
        })
    }

    /// Whether each append is fsynced before it returns (the default). A group's replica
    /// turns it off: its log is durable and re-applying it is idempotent, so the replica
    /// syncs only before a snapshot lets the log go ([`PrimesFile::sync`]).
    pub fn set_sync(&mut self, on: bool) {
        self.sync = on;
    }

    /// fsyncs the primes file and its ledger.
    pub fn sync(&self) -> anyhow::Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("syncing {}", self.path.display()))?;
        self.ledger
            .sync_data()
            .with_context(|| format!("syncing {}", self.ledger_path.display()))
    }

    /// Distinct primes on disk.
    pub fn len(&self) -> usize {
        self.small.len() + self.big.len() + self.in_ranges as usize
    }

    /// Primes held in the dedup set (the rest are known by their segments).
    pub fn in_set(&self) -> usize {
        self.small.len() + self.big.len()
    }

    /// The length of primes.txt (whole lines; where the next append begins).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The length of the ledger (whole lines).
    pub fn ledger_bytes(&self) -> u64 {
        self.ledger_bytes
    }

    /// True if open took the dedup set from a checkpoint (and read only the lines after it).
    pub fn from_checkpoint(&self) -> bool {
        self.from_checkpoint
    }

    /// Covered segments (merged) and segments being streamed, for the log.
    pub fn range_stats(&self) -> (usize, usize) {
        (self.ranges.covered.intervals(), self.ranges.streaming())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the primes not yet written, then fsyncs; then records in the ledger the tasks
    /// of `finished` (tasks whose results are now all durable; a `primes` segment's primes
    /// included) whose work it does not record yet, and adds them to
    /// [`PrimesFile::finished`]. Returns how many primes were new.
    /// `big` MUST hold canonical decimal (no sign, no leading zeros) of values of 2^64 or
    /// more; each run MUST list its segment's primes ascending from its start, without a gap
    /// (several attempts one after another).
    pub fn append(
        &mut self,
        small: &[u64],
        big: &[String],
        runs: &[Run],
        finished: &[Finished],
    ) -> anyhow::Result<usize> {
        // One probe per prime: insert at once (a duplicate, in the set or earlier in this
        // batch, is refused), and take the new ones out again if the write fails.
        let ranges = &self.ranges;
        let set = &mut self.small;
        let new_small: Vec<u64> = small
            .iter()
            .copied()
            .filter(|p| !ranges.has(*p) && set.insert(*p))
            .collect();
        let new_big: Vec<&String> = big
            .iter()
            .filter(|p| !self.big.contains(*p) && self.big.insert((*p).clone()))
            .collect();
        self.set_changes += (new_small.len() + new_big.len()) as u64;
        // Written in pieces of about WRITE_PIECE bytes as they are decided (a large batch
        // of segment primes is never formatted whole in memory); on any failure the file is
        // cut back to where the batch began, so a retry cannot duplicate a line.
        let start = self.bytes;
        let mut out = Vec::with_capacity(WRITE_PIECE + 64);
        let mut written: std::io::Result<()> = Ok(());
        let mut digits = itoa::Buffer::new();
        let file = &mut self.file;
        // Hands `out` to the file once it holds a piece (`handed`: bytes handed so far).
        let mut handed = 0u64;
        let mut spill = |out: &mut Vec<u8>| {
            if out.len() >= WRITE_PIECE && written.is_ok() {
                written = file.write_all(out);
                handed += out.len() as u64;
                out.clear();
            }
        };
        for p in &new_small {
            out.extend_from_slice(digits.format(*p).as_bytes());
            out.push(b'\n');
            spill(&mut out);
        }
        for p in &new_big {
            out.extend_from_slice(p.as_bytes());
            out.push(b'\n');
            spill(&mut out);
        }
        let mut undo = Undo::default();
        let mut from_runs = 0u64;
        for run in runs {
            // A range's primes are ascending and close: formatted incrementally. Only the
            // dedup set's primes inside the segment are looked at (usually none: a probe
            // per prime was a tenth of writing a job's primes).
            let mut lines = decimal::Lines::default();
            let inside = set_inside(&self.small, run);
            self.ranges.take_run(
                run,
                |p| {
                    inside
                        .as_ref()
                        .map_or_else(|| self.small.contains(&p), |v| v.binary_search(&p).is_ok())
                },
                |p| {
                    from_runs += 1;
                    lines.put(p, &mut out);
                    spill(&mut out);
                },
                &mut undo,
            );
        }
        // Everything formatted: what was handed to the file and what is left to hand.
        let total = handed + out.len() as u64;
        let new = new_small.len() + new_big.len() + from_runs as usize;
        if new > 0 {
            let result = written
                .and_then(|_| self.file.write_all(&out))
                .and_then(|_| {
                    if self.sync {
                        self.file.sync_data()
                    } else {
                        Ok(())
                    }
                })
                .with_context(|| format!("appending to {}", self.path.display()));
            if let Err(e) = result {
                // Not durable: cut what was written, forget the batch's decisions, so that
                // the retry writes them.
                self.cut_back(start);
                for p in &new_small {
                    self.small.remove(p);
                }
                for p in &new_big {
                    self.big.remove(*p);
                }
                self.ranges.undo(undo);
                return Err(e);
            }
            self.bytes = start + total;
        }
        self.in_ranges += from_runs;
        self.record(finished);
        Ok(new)
    }

    /// Cuts primes.txt back to `len` after a failed write (never below the length a
    /// checkpoint recorded: that is at most the length before the write).
    fn cut_back(&mut self, len: u64) {
        if let Err(cut) = self.file.set_len(len).and_then(|_| self.file.sync_data()) {
            tracing::error!(error = %cut, path = %self.path.display(), "cannot cut a failed append back");
        }
    }

    /// Records in the ledger the tasks of `finished` whose work it does not record yet (the
    /// first of a work, if it comes twice), covers their segments and adds them to
    /// `finished`. Their results are durable (a segment's primes written before). Returns
    /// the segments covered.
    fn record<'a>(&mut self, finished: impl IntoIterator<Item = &'a Finished>) -> usize {
        let mut lines = Vec::new();
        let mut covered = 0;
        for c in finished {
            if self.works.contains(&c.work) {
                continue;
            }
            self.works.insert(c.work.clone());
            if let Some((lo, hi)) = c.covers() {
                self.ranges.cover(lo, hi);
                covered += 1;
            }
            match serde_json::to_vec(c) {
                Ok(l) => {
                    lines.extend_from_slice(&l);
                    lines.push(b'\n');
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a ledger line"),
            }
            self.finished.push(c.clone());
        }
        if lines.is_empty() {
            return covered;
        }
        // The primes are durable: the covers hold in memory whatever happens here (and a
        // checkpoint records them). A ledger that misses them only makes the next start
        // load those primes into the set (and sieve those segments again if their job has
        // to resume). A failed write is cut back, so no torn line is left for the next one
        // to run into.
        if let Err(e) = self.ledger.write_all(&lines).and_then(|_| {
            if self.sync {
                self.ledger.sync_data()
            } else {
                Ok(())
            }
        }) {
            tracing::error!(error = %e, path = %self.ledger_path.display(), "cannot append to the ledger of finished segments");
            if let Err(e) = self.ledger.set_len(self.ledger_bytes) {
                tracing::error!(error = %e, path = %self.ledger_path.display(), "cannot cut a failed ledger append back");
            }
            return covered;
        }
        self.ledger_bytes += lines.len() as u64;
        covered
    }
}
