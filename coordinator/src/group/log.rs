//! The Raft log and vote of one replica, on disk.
//!
//! On disk: `raft-log.jsonl` holds one record per line (an entry appended, a truncation, a
//! purge), fsynced before openraft is told an append is durable; `raft-vote.json` holds the
//! vote (written atomically, fsynced). A purge rewrites the log file atomically: the purge
//! record first, then the lines of the entries kept, copied byte for byte. So the file holds
//! the entries not purged yet, plus what was appended since the last purge and truncated
//! since (those lines and the truncation records).
//!
//! In memory: an index only, per log index the entry's log id and where its line is in the
//! file (offset and length), with the last purged log id, the vote and the committed log id;
//! and a cache of the entries appended last (at most 64 of them and 8 MiB as encoded; a
//! batch's file primes are held decoded beside their text, so up to ~14 MiB), which
//! replication and the state machine read right after they are appended. Other entries are
//! read from the file when asked for (positioned reads on a handle of their own), and
//! decoded then.
//!
//! At start the file is read once, line by line, to rebuild the index: a record's log id is
//! decoded, the rest of its line only checked to be JSON, and no entry is kept; so a restart
//! reads the file as long as the log since the last purge. A torn last line (a crash
//! mid-append: that append was never acknowledged) is cut; a line that is not a record ends
//! the log there (with a warning, and the file is cut before it).//!
//! Its rooms: this file holds the store (open, append, truncate, purge, the cache);
//! `format` the log file's records (their encoding, the scan at open, reading entries
//! back); `raft` openraft's `RaftLogReader` and `RaftLogStorage` over it; `tests` its unit
//! tests (openraft's storage suite among them).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use openraft::{StorageError, StorageIOError, Vote};

use super::{LogEntry, LogId};
use crate::state::lock;

mod format;
mod raft;
#[cfg(test)]
mod tests;

use format::{encode, read_entries, scan, RecordOut, Scanned};

/// The log file, in the replica's folder.
const LOG_FILE: &str = "raft-log.jsonl";
/// The vote, in the replica's folder.
const VOTE_FILE: &str = "raft-vote.json";
/// The log file being rewritten by a purge (renamed over [`LOG_FILE`] once complete).
const PURGE_TMP: &str = ".raft-log.jsonl.purge.tmp";

/// The cache keeps at most this many of the entries appended last...
const CACHE_ENTRIES: usize = 64;
/// ... and at most this many bytes of them (as encoded); a larger entry is not kept.
const CACHE_BYTES: u64 = 8 << 20;
/// Adjacent lines are read from the file together, up to this many bytes at once.
const READ_RUN_BYTES: u64 = 1 << 20;
/// A replication read ([`RaftLogReader::limited_get_log_entries`]) returns the entries up to
/// this many bytes (as encoded), and at least one.
const LIMITED_READ_BYTES: u64 = 8 << 20;
/// The scan at open gives back its line buffer after a line longer than this.
const SCAN_BUFFER_KEPT: usize = 1 << 20;

/// Where an entry is: its log id, and its line in the log file (the newline included).
#[derive(Clone, Copy, Debug)]
struct Slot {
    log_id: LogId,
    offset: u64,
    len: u64,
}

/// Per log index, the entry's weight: the primes a member that does not hold them
/// regenerates to apply it ([`super::pace`]). Behind a lock of its own, never held across
/// I/O: [`LogStore::behind`] is asked from async tasks at every change of the metrics, and
/// must not wait for an append's fsync or a purge's rewrite (which hold the store's lock).
type Weights = Arc<Mutex<BTreeMap<u64, u64>>>;

/// The weight of an entry read back at open, which is not decoded then: a flush's worth
/// (so a member restarted far behind catches up at the normal priority).
const UNSEEN_WEIGHT: u64 = 4 << 20;

/// [`LogStore::behind`] counts at most this many entries.
const BEHIND_ENTRIES: usize = 4096;

/// The primes a member regenerates to apply `e`: its range pieces' counts.
fn weight_of(e: &LogEntry) -> u64 {
    match &e.payload {
        openraft::EntryPayload::Normal(super::Command::Batch(b)) => {
            b.pieces.iter().map(|p| p.count).sum()
        }
        _ => 0,
    }
}

struct Inner {
    dir: PathBuf,
    path: PathBuf,
    /// The log file, for appending.
    file: File,
    /// The log file, for positioned reads (shared with reads in progress: a purge replaces
    /// it, and a read that took the old one reads the old file, unlinked but still open).
    reader: Arc<File>,
    /// The log file's length (where the next record goes).
    end: u64,
    /// The entries held, by index.
    index: BTreeMap<u64, Slot>,
    /// The entries appended last, by index, with their encoded length.
    cache: BTreeMap<u64, (LogEntry, u64)>,
    cache_bytes: u64,
    purged: Option<LogId>,
    vote_path: PathBuf,
    vote: Option<Vote<u64>>,
    committed: Option<LogId>,
    /// Set when a write failed: what is on disk is then unknown, so nothing more is written.
    failed: Option<String>,
    weights: Weights,
}

/// The log store; clones share it (the reader openraft asks for is a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    weights: Weights,
}

fn write_err(e: anyhow::Error) -> StorageError<u64> {
    StorageError::from(StorageIOError::write_logs(anyerror_of(e)))
}

fn read_err(e: anyhow::Error) -> StorageError<u64> {
    StorageError::from(StorageIOError::read_logs(anyerror_of(e)))
}

fn anyerror_of(e: anyhow::Error) -> openraft::AnyError {
    openraft::AnyError::error(format!("{e:#}"))
}

/// Runs blocking I/O: through `block_in_place` on a multi-thread tokio runtime (so the other
/// tasks of the worker move on), directly elsewhere (a current-thread runtime, where
/// `block_in_place` panics, or no runtime).
pub(super) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// `r` as `start..end` (`end` None: unbounded), or None if it holds no index.
fn index_range(r: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match r.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match r.end_bound() {
        Bound::Included(e) => e.checked_add(1),
        Bound::Excluded(e) => Some(*e),
        Bound::Unbounded => None,
    };
    match end {
        Some(e) if e <= start => None,
        _ => Some((start, end)),
    }
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the folder {}", dir.display()))
}

impl LogStore {
    /// Opens (creating) the log in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(LOG_FILE);
        let vote_path = dir.join(VOTE_FILE);
        let vote = match std::fs::read(&vote_path) {
            Ok(b) => Some(
                serde_json::from_slice(&b)
                    .with_context(|| format!("reading {}", vote_path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", vote_path.display())),
        };
        // A purge that did not finish (its temporary file; the log file is still the old one).
        let tmp = dir.join(PURGE_TMP);
        match std::fs::remove_file(&tmp) {
            Ok(()) => tracing::info!(path = %tmp.display(), "removed an unfinished purge"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let reader = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let Scanned {
            index,
            purged,
            good,
        } = scan(&path, &reader)?;
        let len = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if len > good {
            tracing::warn!(path = %path.display(), bytes = len - good, "cut a torn end of the Raft log");
            file.set_len(good)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cutting {}", path.display()))?;
        }
        tracing::info!(
            path = %path.display(),
            entries = index.len(),
            bytes = good,
            purged = ?purged.map(|l| l.index),
            "Raft log opened"
        );
        let weights: Weights = Arc::new(Mutex::new(
            index.keys().map(|&i| (i, UNSEEN_WEIGHT)).collect(),
        ));
        Ok(LogStore {
            weights: weights.clone(),
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                path,
                file,
                reader: Arc::new(reader),
                end: good,
                index,
                cache: BTreeMap::new(),
                cache_bytes: 0,
                purged,
                vote_path,
                vote,
                committed: None,
                failed: None,
                weights,
            })),
        })
    }

    /// True if nothing was ever logged nor voted (a replica to initialize).
    pub fn is_pristine(&self) -> bool {
        let g = lock(&self.inner);
        g.index.is_empty() && g.purged.is_none() && g.vote.is_none()
    }

    /// The id of the last entry in the log (or the last purged): what Raft's vote rule and
    /// the pre-vote ([`super::prevote`]) compare.
    pub fn last_log_id(&self) -> Option<LogId> {
        let g = lock(&self.inner);
        g.index.last_key_value().map(|(_, s)| s.log_id).or(g.purged)
    }

    /// The primes to regenerate in the entries after index `applied` (all of them if
    /// `None`), counted until the sum passes `cap` (what [`super::pace`] asks: whether it
    /// does); `u64::MAX` for more than [`BEHIND_ENTRIES`] entries (far behind whatever
    /// they hold, and the count stays cheap: it runs at every change of the metrics).
    pub fn behind(&self, applied: Option<u64>, cap: u64) -> u64 {
        let w = lock(&self.weights);
        let from = applied.map_or(Bound::Unbounded, Bound::Excluded);
        let mut sum = 0u64;
        for (i, (_, weight)) in w.range((from, Bound::Unbounded)).enumerate() {
            if i >= BEHIND_ENTRIES {
                return u64::MAX;
            }
            sum = sum.saturating_add(*weight);
            if sum > cap {
                break;
            }
        }
        sum
    }

    /// The log file's length in bytes: the entries kept at the last purge and those appended
    /// since (with the few small truncation and purge records, and entries truncated since).
    /// It grows until a state-machine snapshot lets the log be purged.
    pub fn bytes_since_purge(&self) -> u64 {
        lock(&self.inner).end
    }

    /// The entries in `range`, from the cache or the file; with `limit`, only the first
    /// entries up to that many bytes (at least one).
    fn read(
        &self,
        range: impl RangeBounds<u64>,
        limit: Option<u64>,
    ) -> anyhow::Result<Vec<LogEntry>> {
        let Some((start, end)) = index_range(&range) else {
            return Ok(Vec::new());
        };
        let (path, reader, plan) = {
            let g = lock(&self.inner);
            let slots = match end {
                Some(end) => g.index.range(start..end),
                None => g.index.range(start..),
            };
            let mut plan = Vec::new();
            let mut bytes = 0u64;
            for s in slots.map(|(_, s)| *s) {
                if limit.is_some_and(|l| !plan.is_empty() && bytes + s.len > l) {
                    break;
                }
                bytes += s.len;
                let cached = g.cache.get(&s.log_id.index).map(|(e, _)| e.clone());
                plan.push((s, cached));
            }
            (g.path.clone(), g.reader.clone(), plan)
        };
        // The file is read without the lock: appends only add to it, a truncation appends a
        // record, and a purge writes another file (this read keeps the one it took).
        if plan.iter().all(|(_, c)| c.is_some()) {
            return Ok(plan.into_iter().filter_map(|(_, c)| c).collect());
        }
        blocking(|| read_entries(&path, &reader, plan))
    }
}

impl Inner {
    /// Refuses to write after a failed write.
    fn check(&self) -> anyhow::Result<()> {
        match &self.failed {
            Some(e) => anyhow::bail!(
                "the Raft log in {} is not written after an earlier failure ({e}); restart to recover",
                self.path.display()
            ),
            None => Ok(()),
        }
    }

    /// Appends `buf` (whole records) to the file, fsynced; returns where it starts.
    fn write(&mut self, buf: &[u8]) -> anyhow::Result<u64> {
        self.check()?;
        let at = self.end;
        let written = self
            .file
            .write_all(buf)
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("appending to {}", self.path.display()));
        if let Err(e) = &written {
            self.failed = Some(format!("{e:#}"));
        }
        written?;
        self.end += buf.len() as u64;
        Ok(at)
    }

    fn append(&mut self, entries: Vec<LogEntry>) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut lens = Vec::with_capacity(entries.len());
        for e in &entries {
            lens.push(encode(&RecordOut::Append(e), &mut buf)?);
        }
        let mut offset = self.write(&buf)?;
        drop(buf);
        {
            let mut w = lock(&self.weights);
            for e in &entries {
                w.insert(e.log_id.index, weight_of(e));
            }
        }
        for (e, len) in entries.into_iter().zip(lens) {
            let log_id = e.log_id;
            self.index.insert(
                log_id.index,
                Slot {
                    log_id,
                    offset,
                    len,
                },
            );
            offset += len;
            self.cache_put(e, len);
        }
        Ok(())
    }

    fn cache_put(&mut self, e: LogEntry, len: u64) {
        let index = e.log_id.index;
        if let Some((_, old)) = self.cache.remove(&index) {
            self.cache_bytes -= old;
        }
        if len > CACHE_BYTES {
            return;
        }
        self.cache.insert(index, (e, len));
        self.cache_bytes += len;
        while self.cache.len() > CACHE_ENTRIES || self.cache_bytes > CACHE_BYTES {
            match self.cache.pop_first() {
                Some((_, (_, l))) => self.cache_bytes -= l,
                None => break,
            }
        }
    }

    /// Drops the cached entries from index `from` on.
    fn cache_drop_from(&mut self, from: u64) {
        for (_, (_, l)) in self.cache.split_off(&from) {
            self.cache_bytes -= l;
        }
    }

    fn truncate(&mut self, from: u64) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        encode(&RecordOut::Truncate(from), &mut buf)?;
        self.write(&buf)?;
        self.index.split_off(&from);
        lock(&self.weights).split_off(&from);
        self.cache_drop_from(from);
        Ok(())
    }

    /// Rewrites the file with the purge record first, then the lines of the entries after
    /// `upto` copied from the file as they are; then takes the new file.
    fn purge(&mut self, upto: LogId) -> anyhow::Result<()> {
        self.check()?;
        let first_kept = upto.index.saturating_add(1);
        let kept: Vec<Slot> = self.index.range(first_kept..).map(|(_, s)| *s).collect();
        let tmp = self.dir.join(PURGE_TMP);
        let (index, end) = match self.rewrite(&tmp, &upto, &kept) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = std::fs::rename(&tmp, &self.path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("renaming {} over the log", tmp.display()));
        }
        // The new file is in place: the handles must follow it, or nothing more is written
        // (the old handles still read the old file, which holds the same entries).
        let reopened = sync_dir(&self.dir).and_then(|()| {
            let file = OpenOptions::new()
                .append(true)
                .open(&self.path)
                .with_context(|| format!("opening {}", self.path.display()))?;
            let reader = File::open(&self.path)
                .with_context(|| format!("opening {}", self.path.display()))?;
            Ok((file, reader))
        });
        let (file, reader) = match reopened {
            Ok(h) => h,
            Err(e) => {
                self.failed = Some(format!("{e:#}"));
                return Err(e);
            }
        };
        self.file = file;
        self.reader = Arc::new(reader);
        self.end = end;
        self.index = index;
        self.purged = Some(upto);
        {
            let mut w = lock(&self.weights);
            *w = w.split_off(&first_kept);
        }
        let kept_cache = self.cache.split_off(&first_kept);
        self.cache = kept_cache;
        self.cache_bytes = self.cache.values().map(|(_, l)| l).sum();
        Ok(())
    }

    /// Writes `tmp`: the purge record, then the lines of `kept` (adjacent lines copied
    /// together, streamed); fsynced. Returns their places in it and its length.
    fn rewrite(
        &self,
        tmp: &Path,
        upto: &LogId,
        kept: &[Slot],
    ) -> anyhow::Result<(BTreeMap<u64, Slot>, u64)> {
        let ctx = || format!("writing {}", tmp.display());
        let mut out = File::create(tmp).with_context(ctx)?;
        let mut head = Vec::new();
        let mut pos = encode(&RecordOut::Purge(upto), &mut head)?;
        out.write_all(&head).with_context(ctx)?;
        let mut src: &File = &self.reader;
        let mut index = BTreeMap::new();
        let mut i = 0;
        while i < kept.len() {
            let start = kept[i].offset;
            let mut end = start + kept[i].len;
            let mut j = i + 1;
            while j < kept.len() && kept[j].offset == end {
                end += kept[j].len;
                j += 1;
            }
            src.seek(SeekFrom::Start(start))
                .with_context(|| format!("reading {}", self.path.display()))?;
            let copied =
                std::io::copy(&mut src.take(end - start), &mut out).with_context(|| {
                    format!(
                        "copying entries from {} to {}",
                        self.path.display(),
                        tmp.display()
                    )
                })?;
            if copied != end - start {
                anyhow::bail!(
                    "{} ends at {} before the entries it should hold (up to {end})",
                    self.path.display(),
                    start + copied
                );
            }
            for s in &kept[i..j] {
                index.insert(
                    s.log_id.index,
                    Slot {
                        offset: pos + (s.offset - start),
                        ..*s
                    },
                );
            }
            pos += end - start;
            i = j;
        }
        out.sync_all().with_context(ctx)?;
        Ok((index, pos))
    }
}
