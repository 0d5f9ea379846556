//! Unit tests of the log store: appends and reopening, bounded reads, truncation, purges,
//! torn and unreadable lines, the old format, and openraft's storage suite.

use std::collections::BTreeSet;

use openraft::storage::{RaftLogReader, RaftLogReaderExt, RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{EntryPayload, Membership};
use serde::Serialize;

use super::*;
use crate::core::FlushBatch;
use crate::group::replica::Replica;
use crate::group::{Command, TypeConfig};

fn lid(term: u64, index: u64) -> LogId {
    openraft::testing::log_id(term, 1, index)
}

/// An entry of some size (growing with its index), with a payload to check.
fn ent(term: u64, index: u64) -> LogEntry {
    let payload = match index % 5 {
        0 => EntryPayload::Blank,
        1 => EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], None)),
        _ => EntryPayload::Normal(Command::Flush(FlushBatch {
            small: (0..index * 7).map(|p| p * 2 + term).collect(),
            big: vec![format!("1{}", "0".repeat(index as usize))],
            ..FlushBatch::default()
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
/// The weight of what a member has not applied: the primes its batches reference, kept
/// through a truncation and a purge; entries read back at open, not decoded, weigh a
/// flush's worth; the count stops once past the cap.
fn behind_weighs_the_primes_to_regenerate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = LogStore::open(dir.path()).expect("open");
    let pieces = |count| {
        EntryPayload::Normal(Command::Batch(crate::group::batch::Batch {
            pieces: vec![crate::group::batch::Piece {
                lo: 0,
                hi: 100,
                first: 2,
                last: 97,
                count,
                hash: 0,
            }],
            ..Default::default()
        }))
    };
    let weighed = |term, index, count| openraft::Entry {
        log_id: lid(term, index),
        payload: pieces(count),
    };
    append(
        &s,
        vec![
            weighed(1, 1, 10),
            ent(1, 2),
            weighed(1, 3, 30),
            weighed(1, 4, 40),
        ],
    );
    assert_eq!(s.behind(None, u64::MAX), 80);
    assert_eq!(s.behind(Some(1), u64::MAX), 70);
    assert_eq!(s.behind(Some(3), u64::MAX), 40);
    assert_eq!(s.behind(Some(4), u64::MAX), 0);
    assert_eq!(s.behind(None, 15), 40, "counted until past the cap");
    lock(&s.inner).truncate(4).expect("truncate");
    append(&s, vec![weighed(2, 4, 5)]);
    assert_eq!(s.behind(Some(1), u64::MAX), 35);
    lock(&s.inner).purge(lid(1, 1)).expect("purge");
    assert_eq!(s.behind(Some(1), u64::MAX), 35, "kept through the purge");
    drop(s);
    let s = LogStore::open(dir.path()).expect("reopen");
    assert_eq!(s.behind(Some(3), u64::MAX), UNSEEN_WEIGHT);
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
        let dir = tempfile::tempdir().map_err(|e| StorageError::from(StorageIOError::read(&e)))?;
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
