//! The Raft log and vote of one replica, on disk: `raft-log.jsonl` holds one record per
//! line (an entry appended, a truncation, a purge), fsynced before openraft is told an
//! append is durable; `raft-vote.json` holds the vote (written atomically, fsynced). At
//! start the records are replayed; a purge rewrites the file with what is left, so it
//! stays as long as the entries since the last state-machine snapshot. A torn last line (a
//! crash mid-append) is cut: that append was never acknowledged.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{RaftLogId, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use super::{LogEntry, LogId, TypeConfig};
use crate::state::lock;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    Append(LogEntry),
    /// Entries from this index on are gone.
    Truncate(u64),
    /// Entries up to this log id are gone (in a snapshot).
    Purge(LogId),
}

struct Inner {
    path: PathBuf,
    file: File,
    entries: BTreeMap<u64, LogEntry>,
    purged: Option<LogId>,
    vote_path: PathBuf,
    vote: Option<Vote<u64>>,
    committed: Option<LogId>,
}

/// The log store; clones share it (the reader openraft asks for is a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn io_err(e: anyhow::Error) -> StorageError<u64> {
    StorageError::from(StorageIOError::write_logs(anyerror_of(e)))
}

fn anyerror_of(e: anyhow::Error) -> openraft::AnyError {
    openraft::AnyError::error(format!("{e:#}"))
}

impl LogStore {
    /// Opens (creating) the log in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("raft-log.jsonl");
        let vote_path = dir.join("raft-vote.json");
        let vote = match std::fs::read(&vote_path) {
            Ok(b) => Some(
                serde_json::from_slice(&b)
                    .with_context(|| format!("reading {}", vote_path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", vote_path.display())),
        };
        let mut entries = BTreeMap::new();
        let mut purged = None;
        let mut good = 0u64;
        match File::open(&path) {
            Ok(f) => {
                let mut r = BufReader::new(f);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    let n = r
                        .read_until(b'\n', &mut line)
                        .with_context(|| format!("reading {}", path.display()))?;
                    if n == 0 || line.last() != Some(&b'\n') {
                        break;
                    }
                    let rec: Record = match serde_json::from_slice(&line) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "unreadable log record: the log ends before it");
                            break;
                        }
                    };
                    good += n as u64;
                    apply_record(&mut entries, &mut purged, rec);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if len > good {
            tracing::warn!(path = %path.display(), bytes = len - good, "cut a torn end of the Raft log");
            file.set_len(good)
                .with_context(|| format!("cutting {}", path.display()))?;
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner {
                path,
                file,
                entries,
                purged,
                vote_path,
                vote,
                committed: None,
            })),
        })
    }

    /// True if nothing was ever logged nor voted (a replica to initialize).
    pub fn is_pristine(&self) -> bool {
        let g = lock(&self.inner);
        g.entries.is_empty() && g.purged.is_none() && g.vote.is_none()
    }
}

fn apply_record(entries: &mut BTreeMap<u64, LogEntry>, purged: &mut Option<LogId>, rec: Record) {
    match rec {
        Record::Append(e) => {
            entries.insert(e.get_log_id().index, e);
        }
        Record::Truncate(from) => {
            entries.split_off(&from);
        }
        Record::Purge(upto) => {
            let keep = entries.split_off(&(upto.index + 1));
            *entries = keep;
            *purged = Some(upto);
        }
    }
}

impl Inner {
    /// Appends `recs` to the file (fsynced), then to what is held.
    fn record(&mut self, recs: Vec<Record>) -> anyhow::Result<()> {
        self.write(&recs)?;
        for r in recs {
            apply_record(&mut self.entries, &mut self.purged, r);
        }
        Ok(())
    }

    fn write(&mut self, recs: &[Record]) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        for r in recs {
            serde_json::to_writer(&mut buf, r).context("encoding a log record")?;
            buf.push(b'\n');
        }
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("appending to {}", self.path.display()))
    }

    /// Rewrites the file with what is left (after a purge).
    fn compact(&mut self) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        if let Some(p) = self.purged {
            serde_json::to_writer(&mut buf, &Record::Purge(p)).context("encoding")?;
            buf.push(b'\n');
        }
        for e in self.entries.values() {
            serde_json::to_writer(&mut buf, &Record::Append(e.clone())).context("encoding")?;
            buf.push(b'\n');
        }
        proto::files::write_atomic(&self.path, &buf, true)
            .with_context(|| format!("rewriting {}", self.path.display()))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError<u64>> {
        let g = lock(&self.inner);
        Ok(g.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let g = lock(&self.inner);
        let last = g
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(g.purged);
        Ok(LogState {
            last_purged_log_id: g.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let mut g = lock(&self.inner);
        let bytes = serde_json::to_vec(vote)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        proto::files::write_atomic(&g.vote_path, &bytes, true)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        g.vote = Some(*vote);
        Ok(())
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
        let recs: Vec<Record> = entries.into_iter().map(Record::Append).collect();
        let inner = self.inner.clone();
        let written = tokio::task::block_in_place(move || lock(&inner).record(recs));
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let io = std::io::Error::other(format!("{e:#}"));
                callback.log_io_completed(Err(io));
                Err(io_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<u64>> {
        let inner = self.inner.clone();
        tokio::task::block_in_place(move || {
            lock(&inner).record(vec![Record::Truncate(log_id.index)])
        })
        .map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<u64>> {
        let inner = self.inner.clone();
        tokio::task::block_in_place(move || {
            let mut g = lock(&inner);
            let Inner {
                entries, purged, ..
            } = &mut *g;
            apply_record(entries, purged, Record::Purge(log_id));
            // The file is rewritten with what is left (the purge record first).
            g.compact()
        })
        .map_err(io_err)
    }
}
