//! The log file's records (one JSON line each: an entry appended, a truncation, a purge):
//! their encoding, the scan at open that rebuilds the index, and reading entries back.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{Slot, READ_RUN_BYTES, SCAN_BUFFER_KEPT};
use crate::group::{LogEntry, LogId};

/// A record of the log file (one JSON line each), as written.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RecordOut<'a> {
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

pub(super) fn encode(rec: &RecordOut<'_>, buf: &mut Vec<u8>) -> anyhow::Result<u64> {
    let start = buf.len();
    serde_json::to_writer(&mut *buf, rec).context("encoding a Raft log record")?;
    buf.push(b'\n');
    Ok((buf.len() - start) as u64)
}

/// What the scan at open found: the entries' places, the last purge, and where the readable
/// records end.
pub(super) struct Scanned {
    pub(super) index: BTreeMap<u64, Slot>,
    pub(super) purged: Option<LogId>,
    pub(super) good: u64,
}

/// Reads the log file once to rebuild the index (keeping no entry).
pub(super) fn scan(path: &Path, file: &File) -> anyhow::Result<Scanned> {
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
pub(super) fn read_entries(
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
