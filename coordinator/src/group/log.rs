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
//! and a cache of the entries appended last (at most 64 of them and 8 MiB), which
//! replication and the state machine read right after they are appended. Other entries are
//! read from the file when asked for (positioned reads on a handle of their own), and
//! decoded then.
//!
//! At start the file is read once, line by line, to rebuild the index: a record's log id is
//! decoded, the rest of its line only checked to be JSON, and no entry is kept; so a restart
//! reads the file as long as the log since the last purge. A torn last line (a crash
//! mid-append: that append was never acknowledged) is cut; a line that is not a record ends
//! the log there (with a warning, and the file is cut before it).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use super::{LogEntry, LogId, TypeConfig};
use crate::state::lock;

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

/// A record of the log file (one JSON line each), as written.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum RecordOut<'a> {
    Append(&'a LogEntry),
    /// Entries from this index on are gone.
    Truncate(u64),
    /// Entries up to this log id are gone (in a snapshot).
    Purge(&'a LogId),
}

/// A record as an entry is read back (only appends are: the index says where they are).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    Append(LogEntry),
    Truncate(serde::de::IgnoredAny),
    Purge(serde::de::IgnoredAny),
}

/// A record as the scan at open reads it: an entry's payload is checked as JSON and skipped.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Head {
    Append(EntryHead),
    Truncate(u64),
    Purge(LogId),
}

#[derive(Deserialize)]
struct EntryHead {
    log_id: LogId,
    #[serde(rename = "payload")]
    _payload: serde::de::IgnoredAny,
}

/// Where an entry is: its log id, and its line in the log file (the newline included).
#[derive(Clone, Copy, Debug)]
struct Slot {
    log_id: LogId,
    offset: u64,
    len: u64,
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
}

/// The log store; clones share it (the reader openraft asks for is a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
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
fn blocking<R>(f: impl FnOnce() -> R) -> R {
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

fn encode(rec: &RecordOut<'_>, buf: &mut Vec<u8>) -> anyhow::Result<u64> {
    let start = buf.len();
    serde_json::to_writer(&mut *buf, rec).context("encoding a Raft log record")?;
    buf.push(b'\n');
    Ok((buf.len() - start) as u64)
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the folder {}", dir.display()))
}

/// What the scan at open found: the entries' places, the last purge, and where the readable
/// records end.
struct Scanned {
    index: BTreeMap<u64, Slot>,
    purged: Option<LogId>,
    good: u64,
}

/// Reads the log file once to rebuild the index (keeping no entry).
fn scan(path: &Path, file: &File) -> anyhow::Result<Scanned> {
    let mut r = BufReader::with_capacity(64 << 10, file);
    let mut index = BTreeMap::new();
    let mut purged = None;
    let mut offset = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        match serde_json::from_slice::<Head>(&line) {
            Ok(Head::Append(h)) => {
                index.insert(
                    h.log_id.index,
                    Slot {
                        log_id: h.log_id,
                        offset,
                        len: n as u64,
                    },
                );
            }
            Ok(Head::Truncate(from)) => {
                index.split_off(&from);
            }
            Ok(Head::Purge(upto)) => {
                index = index.split_off(&upto.index.saturating_add(1));
                purged = Some(upto);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), offset, error = %e, "unreadable Raft log record: the log ends before it");
                break;
            }
        }
        offset += n as u64;
        if line.capacity() > SCAN_BUFFER_KEPT {
            line = Vec::new();
        }
    }
    Ok(Scanned {
        index,
        purged,
        good: offset,
    })
}

/// Decodes the line of the entry at `slot`.
fn decode(line: &[u8], slot: &Slot) -> anyhow::Result<LogEntry> {
    match serde_json::from_slice::<Record>(line) {
        Ok(Record::Append(e)) if e.log_id == slot.log_id => Ok(e),
        Ok(_) => anyhow::bail!(
            "the Raft log line at byte {} is not entry {}",
            slot.offset,
            slot.log_id
        ),
        Err(e) => Err(e).with_context(|| {
            format!(
                "decoding Raft log entry {} (line at byte {})",
                slot.log_id, slot.offset
            )
        }),
    }
}

/// Reads the entries of `plan` (those not given from the cache) from `file`, adjacent lines
/// together.
fn read_entries(
    path: &Path,
    file: &File,
    plan: Vec<(Slot, Option<LogEntry>)>,
) -> anyhow::Result<Vec<LogEntry>> {
    let mut out = Vec::with_capacity(plan.len());
    let mut buf = Vec::new();
    let mut it = plan.into_iter().peekable();
    while let Some((slot, cached)) = it.next() {
        if let Some(e) = cached {
            out.push(e);
            continue;
        }
        let mut run = vec![slot];
        let mut end = slot.offset + slot.len;
        while let Some((next, None)) = it.peek() {
            if next.offset != end || end + next.len - slot.offset > READ_RUN_BYTES {
                break;
            }
            end += next.len;
            run.push(*next);
            it.next();
        }
        let len = usize::try_from(end - slot.offset).context("a Raft log read too large")?;
        buf.resize(len, 0);
        file.read_exact_at(&mut buf, slot.offset).with_context(|| {
            format!(
                "reading {} bytes at {} of {}",
                len,
                slot.offset,
                path.display()
            )
        })?;
        for s in &run {
            let at = (s.offset - slot.offset) as usize;
            out.push(decode(&buf[at..at + s.len as usize], s)?);
        }
        if buf.capacity() > 2 * READ_RUN_BYTES as usize {
            buf = Vec::new();
        }
    }
    Ok(out)
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
        Ok(LogStore {
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

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError<u64>> {
        self.read(range, None).map_err(read_err)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<LogEntry>, StorageError<u64>> {
        self.read(start..end, Some(LIMITED_READ_BYTES))
            .map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let g = lock(&self.inner);
        let last = g.index.last_key_value().map(|(_, s)| s.log_id).or(g.purged);
        Ok(LogState {
            last_purged_log_id: g.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let bytes = serde_json::to_vec(vote)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        let inner = self.inner.clone();
        blocking(move || {
            let mut g = lock(&inner);
            proto::files::write_atomic(&g.vote_path, &bytes, true)?;
            g.vote = Some(*vote);
            Ok::<_, std::io::Error>(())
        })
        .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(lock(&self.inner).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError<u64>> {
        lock(&self.inner).committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<u64>> {
        Ok(lock(&self.inner).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = LogEntry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<LogEntry> = entries.into_iter().collect();
        let inner = self.inner.clone();
        let written = blocking(move || lock(&inner).append(entries));
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let io = std::io::Error::other(format!("{e:#}"));
                callback.log_io_completed(Err(io));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<u64>> {
        let inner = self.inner.clone();
        blocking(move || lock(&inner).truncate(log_id.index)).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<u64>> {
        let inner = self.inner.clone();
        blocking(move || lock(&inner).purge(log_id)).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::storage::{RaftLogReaderExt, RaftLogStorageExt};
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{EntryPayload, Membership};

    use super::*;
    use crate::core::Pending;
    use crate::group::replica::Replica;
    use crate::group::Command;

    fn lid(term: u64, index: u64) -> LogId {
        openraft::testing::log_id(term, 1, index)
    }

    /// An entry of some size (growing with its index), with a payload to check.
    fn ent(term: u64, index: u64) -> LogEntry {
        let payload = match index % 5 {
            0 => EntryPayload::Blank,
            1 => EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], None)),
            _ => EntryPayload::Normal(Command::Flush(Pending {
                small: (0..index * 7).map(|p| p * 2 + term).collect(),
                big: vec![format!("1{}", "0".repeat(index as usize))],
                ..Pending::default()
            })),
        };
        openraft::Entry {
            log_id: lid(term, index),
            payload,
        }
    }

    fn json(entries: &[LogEntry]) -> String {
        serde_json::to_string(entries).expect("encode")
    }

    fn ids(entries: &[LogEntry]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    fn all(s: &LogStore) -> Vec<LogEntry> {
        s.read(.., None).expect("read")
    }

    fn append(s: &LogStore, entries: Vec<LogEntry>) {
        lock(&s.inner).append(entries).expect("append");
    }

    fn log_file(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(LOG_FILE)).expect("read log file")
    }

    fn state(s: &LogStore) -> (Option<LogId>, Option<LogId>) {
        let g = lock(&s.inner);
        (g.purged, g.index.last_key_value().map(|(_, s)| s.log_id))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    /// Entries appended through openraft's interface read back the same from the cache and,
    /// after reopening, from the file (ranges of all kinds), and the vote survives.
    async fn append_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = LogStore::open(dir.path()).expect("open");
        assert!(s.is_pristine());
        assert_eq!(s.bytes_since_purge(), 0);
        let entries: Vec<LogEntry> = (1..=100).map(|i| ent(1, i)).collect();
        for batch in entries.chunks(7) {
            s.blocking_append(batch.to_vec()).await.expect("append");
        }
        s.save_vote(&Vote::new(3, 1)).await.expect("vote");
        assert!(!s.is_pristine());
        {
            let g = lock(&s.inner);
            assert!(g.cache.len() <= CACHE_ENTRIES && g.cache_bytes <= CACHE_BYTES);
            assert_eq!(
                g.cache.keys().next(),
                Some(&(100 - CACHE_ENTRIES as u64 + 1))
            );
        }
        assert_eq!(json(&all(&s)), json(&entries));
        let len = log_file(dir.path()).len() as u64;
        assert_eq!(s.bytes_since_purge(), len);
        drop(s);

        let mut s = LogStore::open(dir.path()).expect("reopen");
        assert!(!s.is_pristine());
        assert!(lock(&s.inner).cache.is_empty());
        assert_eq!(s.bytes_since_purge(), len);
        assert_eq!(s.read_vote().await.expect("vote"), Some(Vote::new(3, 1)));
        let st = s.get_log_state().await.expect("state");
        assert_eq!(
            (st.last_purged_log_id, st.last_log_id),
            (None, Some(lid(1, 100)))
        );
        assert_eq!(json(&all(&s)), json(&entries));
        let got = s.try_get_log_entries(10..20).await.expect("read");
        assert_eq!(json(&got), json(&entries[9..19]));
        let got = s.try_get_log_entries(..=5).await.expect("read");
        assert_eq!(json(&got), json(&entries[..5]));
        let got = s.try_get_log_entries(95..).await.expect("read");
        assert_eq!(json(&got), json(&entries[94..]));
        assert!(s
            .try_get_log_entries(50..50)
            .await
            .expect("read")
            .is_empty());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 60..40;
        assert!(s
            .try_get_log_entries(reversed)
            .await
            .expect("read")
            .is_empty());
        assert!(s.try_get_log_entries(101..).await.expect("read").is_empty());
        assert_eq!(
            s.try_get_log_entry(42)
                .await
                .expect("read")
                .map(|e| e.log_id),
            Some(lid(1, 42))
        );
        // A replication read is limited in bytes, but never empty.
        let got = s.limited_get_log_entries(1, 101).await.expect("read");
        assert_eq!(json(&got), json(&entries[..got.len()]));
        let got = s.limited_get_log_entries(7, 8).await.expect("read");
        assert_eq!(ids(&got), vec![(1, 7)]);
    }

    #[test]
    /// A replication read stops at LIMITED_READ_BYTES (at least one entry).
    fn limited_read_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LogStore::open(dir.path()).expect("open");
        let big = |i| openraft::Entry {
            log_id: lid(1, i),
            payload: EntryPayload::Normal(Command::Import(vec![(
                "primes.txt".into(),
                "7\n".repeat(3 << 20),
            )])),
        };
        append(&s, (1..=4).map(big).collect());
        let s = LogStore::open(dir.path()).expect("reopen");
        let got = s.read(1..5, Some(LIMITED_READ_BYTES)).expect("read");
        assert_eq!(ids(&got), vec![(1, 1)]);
        let got = s.read(1..5, None).expect("read");
        assert_eq!(ids(&got), vec![(1, 1), (1, 2), (1, 3), (1, 4)]);
    }

    #[tokio::test]
    /// A truncation drops the entries from its index (written as a record, kept at reopen);
    /// on a current-thread runtime (no block_in_place).
    async fn truncate_then_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = LogStore::open(dir.path()).expect("open");
        s.blocking_append((1..=5).map(|i| ent(1, i)).collect::<Vec<_>>())
            .await
            .expect("append");
        s.truncate(lid(1, 3)).await.expect("truncate");
        assert_eq!(ids(&all(&s)), vec![(1, 1), (1, 2)]);
        assert!(s.try_get_log_entries(3..).await.expect("read").is_empty());
        s.blocking_append(vec![ent(2, 3), ent(2, 4)])
            .await
            .expect("append");
        let want = vec![ent(1, 1), ent(1, 2), ent(2, 3), ent(2, 4)];
        assert_eq!(json(&all(&s)), json(&want));
        drop(s);
        let mut s = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(json(&all(&s)), json(&want));
        let st = s.get_log_state().await.expect("state");
        assert_eq!(st.last_log_id, Some(lid(2, 4)));
        // Truncating everything.
        s.truncate(lid(1, 1)).await.expect("truncate");
        drop(s);
        let mut s = LogStore::open(dir.path()).expect("reopen");
        assert!(all(&s).is_empty());
        let st = s.get_log_state().await.expect("state");
        assert_eq!((st.last_purged_log_id, st.last_log_id), (None, None));
        assert!(s.is_pristine());
    }

    #[test]
    /// A purge rewrites the file: the purge record, then the kept lines byte for byte (also
    /// those appended after a truncation, elsewhere in the old file); reads after it (from
    /// the cache, from the new file, after reopening) return the right entries.
    fn purge_rewrites_and_reads_right() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LogStore::open(dir.path()).expect("open");
        append(&s, (1..=10).map(|i| ent(1, i)).collect());
        lock(&s.inner).truncate(8).expect("truncate");
        append(&s, vec![ent(2, 8), ent(2, 9)]);
        let before = log_file(dir.path());
        let line_of = |i: u64| {
            let g = lock(&s.inner);
            let sl = g.index[&i];
            before[sl.offset as usize..(sl.offset + sl.len) as usize].to_vec()
        };
        let kept_lines: Vec<u8> = (5..=9).flat_map(line_of).collect();

        lock(&s.inner).purge(lid(1, 4)).expect("purge");
        let after = log_file(dir.path());
        let first = after.iter().position(|b| *b == b'\n').expect("a line") + 1;
        assert_eq!(
            std::str::from_utf8(&after[..first]).expect("utf-8"),
            "{\"purge\":{\"leader_id\":{\"term\":1,\"node_id\":1},\"index\":4}}\n"
        );
        assert_eq!(&after[first..], &kept_lines[..]);
        assert_eq!(s.bytes_since_purge(), after.len() as u64);
        assert!(s.bytes_since_purge() < before.len() as u64);
        assert!(!dir.path().join(PURGE_TMP).exists());

        let want = vec![ent(1, 5), ent(1, 6), ent(1, 7), ent(2, 8), ent(2, 9)];
        assert_eq!(json(&all(&s)), json(&want));
        // From the new file, not the cache.
        lock(&s.inner).cache.clear();
        lock(&s.inner).cache_bytes = 0;
        assert_eq!(json(&all(&s)), json(&want));
        assert_eq!(json(&s.read(6..9, None).expect("read")), json(&want[1..4]));
        assert!(s.read(..5, None).expect("read").is_empty());
        assert_eq!(state(&s), (Some(lid(1, 4)), Some(lid(2, 9))));

        // Appending after the purge, then reopening.
        append(&s, vec![ent(2, 10)]);
        drop(s);
        let s = LogStore::open(dir.path()).expect("reopen");
        let mut want = want;
        want.push(ent(2, 10));
        assert_eq!(json(&all(&s)), json(&want));
        assert_eq!(state(&s), (Some(lid(1, 4)), Some(lid(2, 10))));

        // A purge from the file (nothing cached), then one past the last entry.
        lock(&s.inner).purge(lid(1, 6)).expect("purge");
        assert_eq!(json(&all(&s)), json(&want[2..]));
        assert_eq!(json(&s.read(8..=9, None).expect("read")), json(&want[3..5]));
        lock(&s.inner).purge(lid(3, 20)).expect("purge");
        assert!(all(&s).is_empty());
        assert_eq!(state(&s), (Some(lid(3, 20)), None));
        drop(s);
        let s = LogStore::open(dir.path()).expect("reopen");
        assert!(all(&s).is_empty());
        assert_eq!(state(&s), (Some(lid(3, 20)), None));
        assert!(!s.is_pristine());
    }

    #[test]
    /// A file cut mid-line (a crash mid-append) reopens without the torn record, cut off, and
    /// takes appends after it.
    fn torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LogStore::open(dir.path()).expect("open");
        append(&s, (1..=3).map(|i| ent(1, i)).collect());
        drop(s);
        let good = log_file(dir.path());
        let mut line = Vec::new();
        encode(&RecordOut::Append(&ent(1, 4)), &mut line).expect("encode");
        let mut torn = good.clone();
        torn.extend_from_slice(&line[..line.len() / 2]);
        std::fs::write(dir.path().join(LOG_FILE), &torn).expect("write");

        let s = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(ids(&all(&s)), vec![(1, 1), (1, 2), (1, 3)]);
        assert_eq!(log_file(dir.path()), good);
        append(&s, vec![ent(1, 4)]);
        drop(s);
        let s = LogStore::open(dir.path()).expect("reopen");
        let want: Vec<LogEntry> = (1..=4).map(|i| ent(1, i)).collect();
        assert_eq!(json(&all(&s)), json(&want));
    }

    #[test]
    /// A line that is not a record ends the log there (the file is cut before it).
    fn unreadable_record_ends_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LogStore::open(dir.path()).expect("open");
        append(&s, (1..=2).map(|i| ent(1, i)).collect());
        drop(s);
        let good = log_file(dir.path());
        let mut bad = good.clone();
        bad.extend_from_slice(b"{\"append\":{\"log_id\":3}}\n");
        encode(&RecordOut::Append(&ent(1, 3)), &mut bad).expect("encode");
        std::fs::write(dir.path().join(LOG_FILE), &bad).expect("write");
        let s = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(ids(&all(&s)), vec![(1, 1), (1, 2)]);
        assert_eq!(log_file(dir.path()), good);
    }

    #[test]
    /// A log written by the previous version (every record replayed at open, a purge
    /// re-encoding what was left) opens the same: the same file, the same records.
    fn old_format_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blank = |term: u64, index: u64| {
            format!(
                "{{\"append\":{{\"log_id\":{{\"leader_id\":{{\"term\":{term},\"node_id\":1}},\"index\":{index}}},\"payload\":\"Blank\"}}}}\n"
            )
        };
        let mut text = String::new();
        text.push_str("{\"purge\":{\"leader_id\":{\"term\":1,\"node_id\":1},\"index\":1}}\n");
        for i in 2..=5 {
            text.push_str(&blank(1, i));
        }
        text.push_str("{\"truncate\":4}\n");
        text.push_str(&blank(2, 4));
        std::fs::write(dir.path().join(LOG_FILE), &text).expect("write");
        std::fs::write(
            dir.path().join(VOTE_FILE),
            "{\"leader_id\":{\"term\":2,\"node_id\":1},\"committed\":true}",
        )
        .expect("write vote");

        let s = LogStore::open(dir.path()).expect("open");
        assert_eq!(state(&s), (Some(lid(1, 1)), Some(lid(2, 4))));
        assert_eq!(ids(&all(&s)), vec![(1, 2), (1, 3), (2, 4)]);
        assert_eq!(lock(&s.inner).vote, Some(Vote::new_committed(2, 1)));
        // This version writes the same lines.
        let mut line = Vec::new();
        let e = openraft::Entry {
            log_id: lid(2, 4),
            payload: EntryPayload::Blank,
        };
        encode(&RecordOut::Append(&e), &mut line).expect("encode");
        assert_eq!(std::str::from_utf8(&line).expect("utf-8"), blank(2, 4));
        line.clear();
        encode(&RecordOut::Truncate(4), &mut line).expect("encode");
        assert_eq!(line, b"{\"truncate\":4}\n");
        // And a normal entry as the previous version encoded it (the owned record).
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum OldRecord {
            Append(LogEntry),
        }
        let mut old = serde_json::to_vec(&OldRecord::Append(ent(1, 7))).expect("encode");
        old.push(b'\n');
        line.clear();
        encode(&RecordOut::Append(&ent(1, 7)), &mut line).expect("encode");
        assert_eq!(line, old);
    }

    /// Builds our log store and state machine in a fresh folder, for openraft's suite.
    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, Replica, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, Replica), StorageError<u64>> {
            let dir =
                tempfile::tempdir().map_err(|e| StorageError::from(StorageIOError::read(&e)))?;
            let d = dir.path();
            let log = LogStore::open(d).map_err(read_err)?;
            let sm = Replica::open(
                &d.join("member"),
                &d.join("primes.txt"),
                &d.join("output"),
                &d.join("jobs"),
            )
            .map_err(read_err)?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    /// openraft's own storage tests, on our log store and state machine.
    fn openraft_suite() {
        Suite::test_all(Builder).expect("openraft's storage suite");
    }
}
