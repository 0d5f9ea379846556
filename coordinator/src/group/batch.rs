//! A flush as the group's log carries it: bounded entries, no bulk data.
//!
//! A flush ([`FlushBatch`]) can hold millions of primes (a `primes` job's segments stream
//! ~600,000 per 2^24 numbers near 10^12). Carried in one entry, as before, single log lines
//! of 46–65 MB outgrew every heartbeat and wedged the group. Now:
//! - **Range primes travel by reference.** A segment's primes as a worker streamed them are
//!   cut into [`Piece`]s: every prime in `[first, last]` of segment `[lo, hi]`, with their
//!   count and a hash. That is a pure function of the bounds, so a member that does not
//!   hold the primes (a follower; the leader after a restart) regenerates them with the
//!   sieve (about 0.2 CPU-seconds per 10^9 numbers near 10^12, far less than writing them)
//!   and checks the count and hash; the leader that proposed the entry uses the primes its
//!   workers sent, held in memory until the entry applies ([`Held`]). Regenerating needs no
//!   segment files, no transfer between members and no clean-up; catch-up from the log
//!   stays a catch-up from the log.
//! - **File primes are split** into entries of at most [`MAX_ENTRY_BYTES`] (a flush of a
//!   file made of primes); the tasks a flush finishes go in its last entry, after all of
//!   its primes, so an entry applied alone never records a task whose primes are missing.
//!   A flush whose later entries do not commit is handed back whole and sent again: its
//!   primes already applied are deduplicated.
//!
//! Sans I/O: [`split`] and [`regenerate`] are pure; the sieve is passed in.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::core::FlushBatch;
use crate::ranges::{Finished, Run};

mod encoded;

pub use encoded::FilePrimes;

/// The most an entry's primes and tasks take, encoded (JSON, primes as base64 of 8 bytes).
/// With [`MAX_PAYLOAD_ENTRIES`] per AppendEntries, no RPC between members exceeds ~1 MiB.
pub const MAX_ENTRY_BYTES: usize = 256 << 10;
/// Entries per AppendEntries RPC (openraft's `max_payload_entries`).
pub const MAX_PAYLOAD_ENTRIES: u64 = 4;

/// Primes below 2^64 per entry: base64 of 8 bytes is ~10.7 bytes each.
const SMALL_PER_ENTRY: usize = MAX_ENTRY_BYTES / 11;
/// A piece or a finished task, encoded, is at most this many bytes (a ledger line of a
/// file-less task: ~300 bytes; a piece ~120).
const ITEM_BYTES: usize = 512;

/// Every prime of segment `[lo, hi]` in `[first, last]`, as a worker sent them: `count`
/// primes whose little-endian bytes hash to `hash` (xxh3-64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub lo: u64,
    pub hi: u64,
    pub first: u64,
    pub last: u64,
    pub count: u64,
    pub hash: u64,
}

/// One entry's share of a flush.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Which batch of the leader's this is (its held primes; unique per process).
    pub id: u64,
    /// The term of the leader that proposed it. An entry that reached the log in another
    /// term is refused on every member: its predecessors in the proposer's pipeline may
    /// not have committed (entries written before this field existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    #[serde(default)]
    pub small: FilePrimes,
    #[serde(default)]
    pub big: Vec<String>,
    #[serde(default)]
    pub pieces: Vec<Piece>,
    #[serde(default)]
    pub finished: Vec<Finished>,
}

/// The hash of a piece's primes.
pub fn hash_primes(primes: &[u64]) -> u64 {
    // The little-endian bytes one after another, handed over a block at a time (the same
    // digest as 8 bytes at a time, which cost a call per prime).
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut block = [0u8; 8 * 512];
    for chunk in primes.chunks(512) {
        for (b, p) in block.chunks_exact_mut(8).zip(chunk) {
            b.copy_from_slice(&p.to_le_bytes());
        }
        h.update(&block[..8 * chunk.len()]);
    }
    h.digest()
}

/// Cuts a run into pieces (a run holds several attempts one after another: each maximal
/// ascending stretch is one piece), each with its primes. The run's primes are moved, not
/// copied, where it is one stretch (the usual case): a flush of a large job holds hundreds
/// of MB of them.
fn pieces_of(mut run: Run, out: &mut Vec<(Piece, Vec<u64>)>) {
    let mut starts = vec![0];
    for i in 1..run.primes.len() {
        if run.primes[i] <= run.primes[i - 1] {
            starts.push(i);
        }
    }
    let mut stretches = Vec::with_capacity(starts.len());
    for &s in starts.iter().rev() {
        // At 0, the run's buffer itself (`split_off(0)` would leave an allocation of the
        // same capacity behind, tens of MB, only to free it).
        stretches.push(if s == 0 {
            std::mem::take(&mut run.primes)
        } else {
            run.primes.split_off(s)
        });
    }
    for ps in stretches.into_iter().rev() {
        if let (Some(&first), Some(&last)) = (ps.first(), ps.last()) {
            out.push((
                Piece {
                    lo: run.lo,
                    hi: run.hi,
                    first,
                    last,
                    count: ps.len() as u64,
                    hash: hash_primes(&ps),
                },
                ps,
            ));
        }
    }
}

/// Pieces back into runs (consecutive pieces of one segment make one run, as
/// [`FlushBatch::push_run`] made them).
fn runs_from(pieces: impl IntoIterator<Item = ((u64, u64), Vec<u64>)>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for ((lo, hi), primes) in pieces {
        match runs.last_mut() {
            Some(r) if (r.lo, r.hi) == (lo, hi) => r.primes.extend(primes),
            _ => runs.push(Run { lo, hi, primes }),
        }
    }
    runs
}

/// A flush as entries: each with its id (`next_id()` gives one per batch) and, for the
/// proposer to hold, the runs of its pieces. The primes (file ones, then pieces) come before
/// the finished tasks, which are in the last entries. The flush is consumed (its primes
/// move into the batches and runs) but for `done`, which is left in `p`: [`unsplit`] puts
/// batches that did not commit back together.
pub fn split(p: &mut FlushBatch, mut next_id: impl FnMut() -> u64) -> Vec<(Batch, Vec<Run>)> {
    let mut out: Vec<(Batch, Vec<Run>)> = Vec::new();
    let mut cur = Batch::default();
    let mut cur_runs: Vec<((u64, u64), Vec<u64>)> = Vec::new();
    let mut used = 0usize;
    let mut pieces = Vec::new();
    for run in std::mem::take(&mut p.runs) {
        pieces_of(run, &mut pieces);
    }
    let mut flush =
        |cur: &mut Batch, cur_runs: &mut Vec<((u64, u64), Vec<u64>)>, used: &mut usize| {
            let mut b = std::mem::take(cur);
            b.id = next_id();
            let runs = runs_from(cur_runs.drain(..));
            out.push((b, runs));
            *used = 0;
        };
    let small = std::mem::take(&mut p.small);
    for chunk in small.chunks(SMALL_PER_ENTRY) {
        // A chunk fills an entry: the batch holds no file primes yet.
        debug_assert!(cur.small.is_empty());
        cur.small = FilePrimes::from(chunk.to_vec());
        used += chunk.len() * 11;
        if used >= MAX_ENTRY_BYTES - ITEM_BYTES {
            flush(&mut cur, &mut cur_runs, &mut used);
        }
    }
    drop(small);
    for b in std::mem::take(&mut p.big) {
        if used + b.len() + 4 > MAX_ENTRY_BYTES && used > 0 {
            flush(&mut cur, &mut cur_runs, &mut used);
        }
        used += b.len() + 4;
        cur.big.push(b);
    }
    for (piece, primes) in pieces {
        if used + ITEM_BYTES > MAX_ENTRY_BYTES {
            flush(&mut cur, &mut cur_runs, &mut used);
        }
        used += ITEM_BYTES / 4;
        cur_runs.push(((piece.lo, piece.hi), primes));
        cur.pieces.push(piece);
    }
    for f in std::mem::take(&mut p.finished) {
        // A ledger line is usually ~300 bytes, but a task's answer can be long (a π part's
        // partial sums near 2^60: ~60 KB): counted as encoded.
        let bytes = serde_json::to_vec(&f).map_or(ITEM_BYTES, |v| v.len() + 16);
        if used + bytes > MAX_ENTRY_BYTES && used > 0 {
            flush(&mut cur, &mut cur_runs, &mut used);
        }
        used += bytes;
        cur.finished.push(f);
    }
    if !cur.small.is_empty()
        || !cur.big.is_empty()
        || !cur.pieces.is_empty()
        || !cur.finished.is_empty()
    {
        flush(&mut cur, &mut cur_runs, &mut used);
    }
    out
}

/// Batches that did not commit, back into the flush they came from (`p`, which holds its
/// `done`), with the runs their proposer held (None where an apply already took them: that
/// batch committed after all, and its primes are durable).
pub fn unsplit(p: &mut FlushBatch, batches: impl IntoIterator<Item = (Batch, Option<Vec<Run>>)>) {
    for (b, runs) in batches {
        p.small.extend_from_slice(&b.small);
        p.big.extend(b.big);
        for r in runs.unwrap_or_default() {
            p.push_run(r.lo, r.hi, r.primes);
        }
        p.finished.extend(b.finished);
    }
}

/// The runs of `pieces` regenerated by `sieve(first, last)` (every prime in it, ascending),
/// with one line for each piece whose count or hash differs from what the worker sent (the
/// regenerated primes are used: they are the primes of the interval).
pub fn regenerate(
    pieces: &[Piece],
    sieve: impl FnMut(u64, u64) -> Vec<u64>,
) -> (Vec<Run>, Vec<String>) {
    let (made, wrong) = made_of(pieces, sieve);
    (runs_from(made), wrong)
}

/// [`regenerate`] with the pieces shared between `threads` threads (contiguous shares of
/// about as many numbers each, the first on this thread): the same runs and lines. For a
/// member that must apply before it serves (a new leader's catch-up, while its workers
/// wait): the sieve is most of a regeneration's time and the rest is written in order.
pub fn regenerate_on(
    pieces: &[Piece],
    threads: usize,
    sieve: impl Fn(u64, u64) -> Vec<u64> + Sync,
) -> (Vec<Run>, Vec<String>) {
    let shares = shares(pieces, threads);
    if shares.len() < 2 {
        return regenerate(pieces, sieve);
    }
    let sieve = &sieve;
    let parts: Vec<(Made, Vec<String>)> = std::thread::scope(|s| {
        let spawned: Vec<_> = shares[1..]
            .iter()
            .map(|share| {
                let run = move || made_of(share, sieve);
                (
                    share,
                    std::thread::Builder::new()
                        .name("regenerate".into())
                        .spawn_scoped(s, run),
                )
            })
            .collect();
        let mut parts = vec![made_of(shares[0], sieve)];
        for (share, h) in spawned {
            parts.push(match h {
                Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                // No thread: this one does the share.
                Err(_) => made_of(share, sieve),
            });
        }
        parts
    });
    let mut made = Vec::with_capacity(pieces.len());
    let mut wrong = Vec::new();
    for (m, w) in parts {
        made.extend(m);
        wrong.extend(w);
    }
    (runs_from(made), wrong)
}

/// Pieces regenerated, each with its segment, in order.
type Made = Vec<((u64, u64), Vec<u64>)>;

/// `pieces` cut into at most `threads` contiguous shares of about as many numbers each.
fn shares(pieces: &[Piece], threads: usize) -> Vec<&[Piece]> {
    let span = |p: &Piece| p.last.saturating_sub(p.first) as u128 + 1;
    let total: u128 = pieces.iter().map(span).sum();
    let n = threads.clamp(1, pieces.len().max(1)) as u128;
    let mut out = Vec::new();
    let (mut start, mut acc) = (0, 0u128);
    for (i, p) in pieces.iter().enumerate() {
        acc += span(p);
        // Cut once this share reaches its part of the whole (the last takes the rest).
        if (out.len() as u128) + 1 < n && acc * n >= total * (out.len() as u128 + 1) {
            out.push(&pieces[start..=i]);
            start = i + 1;
        }
    }
    if start < pieces.len() {
        out.push(&pieces[start..]);
    }
    out
}

/// Each piece's primes by `sieve`, with a line for each that differs from what was sent.
fn made_of(pieces: &[Piece], mut sieve: impl FnMut(u64, u64) -> Vec<u64>) -> (Made, Vec<String>) {
    let mut wrong = Vec::new();
    let made: Made = pieces
        .iter()
        .map(|p| {
            let primes = sieve(p.first, p.last);
            if primes.len() as u64 != p.count || hash_primes(&primes) != p.hash {
                wrong.push(format!(
                    "segment [{}, {}]: the primes in [{}, {}] as sent were {} (hash {:016x}), the sieve finds {} (hash {:016x})",
                    p.lo,
                    p.hi,
                    p.first,
                    p.last,
                    p.count,
                    p.hash,
                    primes.len(),
                    hash_primes(&primes)
                ));
            }
            ((p.lo, p.hi), primes)
        })
        .collect();
    (made, wrong)
}

/// The runs a proposer holds for its batches until they apply (by batch id), so the
/// leader's own apply writes the primes its workers sent instead of sieving them again.
#[derive(Default)]
pub struct Held {
    runs: HashMap<u64, Vec<Run>>,
}

impl Held {
    pub fn hold(&mut self, id: u64, runs: Vec<Run>) {
        if !runs.is_empty() {
            self.runs.insert(id, runs);
        }
    }

    /// The runs held for batch `id` (taken: a batch applies once per process).
    pub fn take(&mut self, id: u64) -> Option<Vec<Run>> {
        self.runs.remove(&id)
    }

    /// Lets every held run go (a leader stepping down: a batch of its still to apply
    /// regenerates its primes instead).
    pub fn clear(&mut self) {
        self.runs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primes_in(a: u64, b: u64) -> Vec<u64> {
        (a.max(2)..=b)
            .filter(|n| (2..*n).take_while(|d| d * d <= *n).all(|d| n % d != 0))
            .collect()
    }

    fn run(lo: u64, hi: u64, primes: Vec<u64>) -> Run {
        Run { lo, hi, primes }
    }

    #[test]
    fn the_hash_is_the_one_in_logs_written_before() {
        // Logs hold hashes made 8 bytes at a time: the block-wise hash must equal it.
        let one_by_one = |ps: &[u64]| {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for p in ps {
                h.update(&p.to_le_bytes());
            }
            h.digest()
        };
        let ps = primes_in(1, 20_000);
        for n in [0, 1, 511, 512, 513, 1024, 1500, ps.len()] {
            assert_eq!(hash_primes(&ps[..n]), one_by_one(&ps[..n]), "{n} primes");
        }
        // And pinned, so that both cannot change together.
        assert_eq!(hash_primes(&[2, 3, 5]), 0xfcd6_0fd4_e884_af7e);
    }

    #[test]
    /// Pieces regenerate to exactly the runs a worker sent: several attempts in one run
    /// (a restart from the segment's start), several segments, a continuation.
    fn pieces_regenerate_the_runs() {
        let mut attempts = primes_in(100, 160);
        attempts.extend(primes_in(100, 200));
        let runs = vec![run(100, 200, attempts), run(300, 400, primes_in(331, 397))];
        let mut p = FlushBatch {
            runs: runs.clone(),
            ..FlushBatch::default()
        };
        let mut id = 0;
        let batches = split(&mut p, || {
            id += 1;
            id
        });
        assert_eq!(batches.len(), 1);
        let (b, held) = &batches[0];
        assert_eq!(b.pieces.len(), 3, "two attempts and one continuation");
        assert_eq!(held, &runs, "the proposer holds the runs as sent");
        let (again, wrong) = regenerate(&b.pieces, primes_in);
        assert_eq!(again, runs);
        assert!(wrong.is_empty());
    }

    #[test]
    /// A piece whose primes were not all sent is told, and the sieve's primes are used.
    fn a_wrong_piece_is_told() {
        let mut sent = primes_in(10, 50);
        sent.remove(3);
        let mut p = FlushBatch {
            runs: vec![run(10, 50, sent)],
            ..FlushBatch::default()
        };
        let batches = split(&mut p, || 7);
        let (runs, wrong) = regenerate(&batches[0].0.pieces, primes_in);
        assert_eq!(runs, vec![run(10, 50, primes_in(10, 50))]);
        assert_eq!(wrong.len(), 1, "{wrong:?}");
    }

    #[test]
    /// Shared between threads, pieces regenerate to the same runs and the same lines
    /// (a piece of a segment cut between two shares included, and a wrong one).
    fn regenerated_on_threads_as_on_one() {
        let mut sent = primes_in(3000, 9000);
        sent.remove(100);
        // Two attempts at one segment, then other segments of several sizes.
        let mut again = primes_in(10, 400);
        again.extend(primes_in(200, 700));
        let mut p = FlushBatch {
            runs: vec![
                run(10, 700, again),
                run(701, 800, primes_in(701, 800)),
                run(801, 2999, primes_in(801, 2999)),
                run(3000, 9000, sent),
                run(9001, 9100, primes_in(9001, 9100)),
            ],
            ..FlushBatch::default()
        };
        let batches = split(&mut p, || 7);
        let pieces = &batches[0].0.pieces;
        assert_eq!(pieces.len(), 6);
        let one = regenerate(pieces, primes_in);
        assert_eq!(one.1.len(), 1, "{:?}", one.1);
        for threads in [0, 1, 2, 3, 6, 64] {
            let many = regenerate_on(pieces, threads, primes_in);
            assert_eq!(many, one, "{threads} threads");
            let cut = shares(pieces, threads);
            assert_eq!(cut.len(), threads.clamp(1, 6).min(cut.len()).max(1));
            assert_eq!(cut.concat(), *pieces, "{threads} threads");
        }
        assert_eq!(shares(pieces, 2).len(), 2);
        assert!(shares(&[], 2).is_empty());
        assert_eq!(regenerate_on(&[], 2, primes_in), (Vec::new(), Vec::new()));
    }

    #[test]
    /// A large flush becomes entries within the bound, its primes first and its finished
    /// tasks last, and together they hold all of it.
    fn large_flushes_are_split_within_the_bound() {
        let small: Vec<u64> = (0..200_000u64).map(|i| 1_000_000_007 + 2 * i).collect();
        let finished: Vec<Finished> = (0..3000u64)
            .map(|i| Finished {
                work: proto::msg::Work::Count {
                    lo: i * 10,
                    hi: i * 10 + 9,
                },
                worker: "worker-1".into(),
                result: proto::msg::TaskDone {
                    attempt: format!("a-{i}"),
                    version: String::new(),
                    size: 0,
                    lines: 0,
                    numbers: 10,
                    blank: 0,
                    invalid: 0,
                    first_invalid: Vec::new(),
                    primes: 1,
                    answer: Some("1".into()),
                    first_prime: None,
                    last_prime: None,
                },
            })
            .collect();
        let whole = FlushBatch {
            small: small.clone(),
            big: vec!["18446744073709551629".into(); 3],
            runs: vec![run(2, 10_000, primes_in(2, 10_000))],
            finished: finished.clone(),
            done: vec![crate::core::ChunkKey {
                key: crate::core::Key::file("a.txt"),
                gen: 1,
                chunk: 0,
            }],
        };
        let mut p = whole.clone();
        let mut id = 0;
        let batches = split(&mut p, || {
            id += 1;
            id
        });
        assert!(batches.len() > 3);
        let mut seen_finished = false;
        let (mut s, mut f, mut big) = (Vec::new(), Vec::new(), 0);
        for (b, _) in &batches {
            let bytes = serde_json::to_vec(b).expect("encode").len();
            assert!(bytes <= MAX_ENTRY_BYTES, "an entry of {bytes} bytes");
            if seen_finished {
                assert!(
                    b.small.is_empty() && b.pieces.is_empty(),
                    "primes after tasks"
                );
            }
            seen_finished |= !b.finished.is_empty();
            s.extend_from_slice(&b.small);
            f.extend(b.finished.iter().cloned());
            big += b.big.len();
        }
        assert_eq!((s, f, big), (small, finished, 3));
        let ids: std::collections::BTreeSet<u64> = batches.iter().map(|(b, _)| b.id).collect();
        assert_eq!(ids.len(), batches.len(), "one id per batch");
        // Handed back whole (nothing committed), the flush is what it was.
        assert!(p.small.is_empty() && p.runs.is_empty() && p.finished.is_empty());
        assert_eq!(p.done, whole.done, "done stays with the flush");
        unsplit(&mut p, batches.into_iter().map(|(b, r)| (b, Some(r))));
        assert_eq!(p, whole);
    }

    #[test]
    /// Finished tasks with long answers (a π part's: tens of KB) are counted as encoded:
    /// entries stay within the bound.
    fn long_answers_stay_within_the_bound() {
        let long = "7".repeat(60_000);
        let mut p = FlushBatch {
            finished: (0..20u64)
                .map(|i| Finished {
                    work: proto::msg::Work::Count {
                        lo: i * 10,
                        hi: i * 10 + 9,
                    },
                    worker: "worker-1".into(),
                    result: proto::msg::TaskDone {
                        attempt: format!("a-{i}"),
                        version: String::new(),
                        size: 0,
                        lines: 0,
                        numbers: 10,
                        blank: 0,
                        invalid: 0,
                        first_invalid: Vec::new(),
                        primes: 1,
                        answer: Some(long.clone()),
                        first_prime: None,
                        last_prime: None,
                    },
                })
                .collect(),
            ..FlushBatch::default()
        };
        let batches = split(&mut p, || 1);
        assert!(batches.len() >= 5, "{} entries", batches.len());
        let n: usize = batches.iter().map(|(b, _)| b.finished.len()).sum();
        assert_eq!(n, 20);
        for (b, _) in &batches {
            let bytes = serde_json::to_vec(b).expect("encode").len();
            assert!(bytes <= MAX_ENTRY_BYTES, "an entry of {bytes} bytes");
        }
    }
}
