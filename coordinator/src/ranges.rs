//! Exactly once for range primes without a dedup entry per prime.
//!
//! A `primes A B` job writes every prime of its segments, hundreds of millions of them for a
//! long range: holding each in the dedup set (as file primes are) would make the
//! coordinator's memory grow with the range. Instead, what is known to be in primes.txt is
//! described by intervals:
//!
//! - **covered**: segments whose primes are all durable (each recorded in the ledger
//!   `primes.txt.ranges` once they are, with the other finished generation tasks), merged;
//! - **progress**: for a segment `[lo, hi]` being streamed, the largest prime `w` handled so
//!   far: every prime in `[lo, w]` is in primes.txt. A worker lists a segment's primes in
//!   ascending order from `lo` without a gap, so the next one it sends above `w` is the next
//!   prime of the segment; a new attempt starts again at `lo`, and what it sends up to `w` is
//!   skipped.
//!
//! A prime from any source is already written iff it is in the dedup set (file primes, and
//! anything read back from primes.txt outside covered intervals), in a covered interval, or
//! in some segment's `[lo, w]`. Range primes never enter the set; file primes still do. After
//! a restart, primes.txt lines inside covered intervals are not loaded into the set; lines of
//! a segment that was streamed but never recorded as covered are (the fallback: they cost
//! memory, never exactness).
//!
//! No I/O here: [`crate::primes::PrimesFile`] decides with this, writes, and only then
//! commits.

use std::collections::BTreeMap;

use proto::msg::{TaskDone, Work};
use serde::{Deserialize, Serialize};

/// Disjoint, non-adjacent closed intervals of u64, merged on insert.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Covered {
    /// start -> end (inclusive).
    map: BTreeMap<u64, u64>,
}

impl Covered {
    /// True if `p` lies in an interval.
    pub fn contains(&self, p: u64) -> bool {
        self.interval_of(p).is_some()
    }

    /// The interval holding `p`.
    pub fn interval_of(&self, p: u64) -> Option<(u64, u64)> {
        self.map
            .range(..=p)
            .next_back()
            .filter(|(_, &end)| p <= end)
            .map(|(&s, &e)| (s, e))
    }

    /// True if some interval meets `[lo, hi]`.
    pub fn meets(&self, lo: u64, hi: u64) -> bool {
        self.map
            .range(..=hi)
            .next_back()
            .is_some_and(|(_, &end)| end >= lo)
    }

    /// Adds `[lo, hi]`, merging with what it touches.
    pub fn insert(&mut self, lo: u64, hi: u64) {
        if lo > hi {
            return;
        }
        let (mut lo, mut hi) = (lo, hi);
        // Intervals that overlap or touch: start <= hi + 1 and end + 1 >= lo.
        let touching: Vec<(u64, u64)> = self
            .map
            .range(..=hi.saturating_add(1))
            .rev()
            .take_while(|(_, &e)| e.saturating_add(1) >= lo)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.map.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.map.insert(lo, hi);
    }

    /// Number of disjoint intervals.
    pub fn intervals(&self) -> usize {
        self.map.len()
    }

    /// The intervals, ascending (for a checkpoint of primes.txt).
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }
}

/// One line of the ledger (`primes.txt.ranges`): a generation task whose results are all
/// durable (for a `primes` segment: every prime of it in primes.txt), with the worker's
/// result, so a job that meets the same work again (after a restart, or another job) does
/// not compute it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub work: Work,
    pub worker: String,
    pub result: TaskDone,
}

impl Finished {
    /// The interval whose primes are all in primes.txt, for a `primes` segment.
    pub fn covers(&self) -> Option<(u64, u64)> {
        match self.work {
            Work::Primes { lo, hi } => Some((lo, hi)),
            _ => None,
        }
    }
}

/// A segment's primes as a worker sent them (one or several `primes` messages, possibly of
/// several attempts, in arrival order).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub lo: u64,
    pub hi: u64,
    #[serde(with = "crate::compact")]
    pub primes: Vec<u64>,
}

/// What is known to be in primes.txt besides the dedup set.
#[derive(Debug, Default)]
pub struct Ranges {
    pub covered: Covered,
    /// (lo, hi) of a segment being streamed -> the largest prime handled.
    progress: BTreeMap<(u64, u64), u64>,
}

/// Changes to [`Ranges`] made while deciding a batch, undone if the write fails.
#[derive(Debug, Default)]
pub struct Undo {
    old: Vec<((u64, u64), Option<u64>)>,
}

impl Ranges {
    /// True if `p` is in primes.txt by a covered interval or a streamed segment's prefix
    /// (`skip`: a segment not to consult).
    fn written(&self, p: u64, skip: Option<(u64, u64)>) -> bool {
        self.covered.contains(p)
            || self
                .progress
                .range(..=(p, u64::MAX))
                .any(|(&k, &w)| Some(k) != skip && k.0 <= p && p <= w)
    }

    /// True if `p` is in primes.txt by the intervals (for file primes).
    pub fn has(&self, p: u64) -> bool {
        self.written(p, None)
    }

    /// Decides `run`: hands `write` the primes to write (those neither in the intervals nor
    /// `in_set`), in order, and advances the segment's progress (recorded in `undo`).
    pub fn take_run(
        &mut self,
        run: &Run,
        in_set: impl Fn(u64) -> bool,
        mut write: impl FnMut(u64),
        undo: &mut Undo,
    ) {
        let key = (run.lo, run.hi);
        let before = self.progress.get(&key).copied();
        let mut w = before;
        // No other interval meets the segment (the usual case): only the set is consulted.
        let alone = !self.covered.meets(run.lo, run.hi)
            && !self
                .progress
                .iter()
                .any(|(&k, &pw)| k != key && k.0 <= run.hi && pw >= run.lo);
        for &p in &run.primes {
            if w.is_some_and(|w| p <= w) {
                continue;
            }
            if !in_set(p) && (alone || !self.written(p, Some(key))) {
                write(p);
            }
            w = Some(p);
        }
        if w != before {
            undo.old.push((key, before));
            if let Some(w) = w {
                self.progress.insert(key, w);
            }
        }
    }

    /// The write failed: progress goes back to where it was.
    pub fn undo(&mut self, undo: Undo) {
        for (key, old) in undo.old.into_iter().rev() {
            match old {
                Some(w) => self.progress.insert(key, w),
                None => self.progress.remove(&key),
            };
        }
    }

    /// A segment's primes are all durable: it is covered, no longer streamed.
    pub fn cover(&mut self, lo: u64, hi: u64) {
        self.progress.remove(&(lo, hi));
        self.covered.insert(lo, hi);
    }

    /// Segments being streamed (for the log and tests).
    pub fn streaming(&self) -> usize {
        self.progress.len()
    }

    /// Segments being streamed as `(lo, hi, w)`, `w` the largest prime handled (for a
    /// checkpoint of primes.txt).
    pub fn progress(&self) -> Vec<(u64, u64, u64)> {
        self.progress
            .iter()
            .map(|(&(lo, hi), &w)| (lo, hi, w))
            .collect()
    }

    /// Takes back a segment's progress from a checkpoint: every prime of `[lo, w]` is in
    /// primes.txt (the caller checked that the file is the one the checkpoint describes).
    pub fn resume(&mut self, lo: u64, hi: u64, w: u64) {
        let p = self.progress.entry((lo, hi)).or_insert(w);
        *p = (*p).max(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primes_in(lo: u64, hi: u64) -> Vec<u64> {
        (lo..=hi)
            .filter(|&n| n >= 2 && (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0))
            .collect()
    }

    #[test]
    fn covered_merges_and_finds() {
        let mut c = Covered::default();
        c.insert(10, 20);
        c.insert(30, 40);
        assert!(c.contains(10) && c.contains(20) && !c.contains(21) && !c.contains(9));
        assert!(c.meets(0, 10) && c.meets(15, 35) && !c.meets(21, 29));
        c.insert(21, 29);
        assert_eq!(c.intervals(), 1, "touching intervals merge");
        assert_eq!(c.interval_of(25), Some((10, 40)));
        c.insert(5, 50);
        assert_eq!(c.interval_of(5), Some((5, 50)));
        c.insert(u64::MAX - 1, u64::MAX);
        assert!(c.contains(u64::MAX));
        c.insert(0, 0);
        assert!(c.contains(0) && !c.contains(1));
        assert_eq!(c.intervals(), 3);
    }

    enum Item {
        File(u64),
        Piece(usize, Vec<u64>),
        Cover(usize),
    }

    #[test]
    /// Whatever the interleaving of overlapping segments, file primes, abandoned attempts
    /// and failed writes (a failed batch is decided again), each prime is written once and
    /// all are written.
    fn every_prime_written_once() {
        use rand::{Rng, SeedableRng};
        for seed in 0..300u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let segs: Vec<(u64, u64)> = (0..4)
                .map(|_| {
                    let lo = rng.gen_range(0..400u64);
                    (lo, lo + rng.gen_range(0..200u64))
                })
                .collect();
            // Per segment, in order: attempts that stop somewhere, one that finishes, its cover.
            let mut lists: Vec<Vec<Item>> = Vec::new();
            for (i, &(lo, hi)) in segs.iter().enumerate() {
                let all = primes_in(lo, hi);
                let mut items = Vec::new();
                let attempts = rng.gen_range(1..4);
                for a in 0..attempts {
                    let last = a + 1 == attempts;
                    let end = if last {
                        all.len()
                    } else {
                        rng.gen_range(0..=all.len())
                    };
                    let mut at = 0;
                    while at < end {
                        let to = (at + rng.gen_range(1..20)).min(end);
                        items.push(Item::Piece(i, all[at..to].to_vec()));
                        at = to;
                    }
                }
                items.push(Item::Cover(i));
                lists.push(items);
            }
            let file_primes: Vec<u64> = primes_in(0, 700)
                .into_iter()
                .filter(|_| rng.gen_bool(0.3))
                .collect();
            lists.push(file_primes.iter().map(|&p| Item::File(p)).collect());
            // Merge the lists at random, each in its own order.
            let mut items = Vec::new();
            let mut lists: Vec<std::collections::VecDeque<Item>> =
                lists.into_iter().map(Into::into).collect();
            while lists.iter().any(|l| !l.is_empty()) {
                let k = rng.gen_range(0..lists.len());
                if let Some(it) = lists[k].pop_front() {
                    items.push(it);
                }
            }
            let mut r = Ranges::default();
            let mut set = std::collections::HashSet::new();
            let mut file: Vec<u64> = Vec::new();
            let mut at = 0;
            while at < items.len() {
                let end = (at + rng.gen_range(1..6)).min(items.len());
                loop {
                    let mut out = Vec::new();
                    let mut undo = Undo::default();
                    let mut added = Vec::new();
                    for it in &items[at..end] {
                        match it {
                            Item::File(p) => {
                                if !set.contains(p) && !r.has(*p) {
                                    set.insert(*p);
                                    added.push(*p);
                                    out.push(*p);
                                }
                            }
                            Item::Piece(s, primes) => {
                                let run = Run {
                                    lo: segs[*s].0,
                                    hi: segs[*s].1,
                                    primes: primes.clone(),
                                };
                                r.take_run(&run, |p| set.contains(&p), |p| out.push(p), &mut undo);
                            }
                            Item::Cover(_) => {}
                        }
                    }
                    if rng.gen_bool(0.2) {
                        r.undo(undo);
                        for p in added {
                            set.remove(&p);
                        }
                        continue;
                    }
                    file.extend(out);
                    for it in &items[at..end] {
                        if let Item::Cover(s) = it {
                            r.cover(segs[*s].0, segs[*s].1);
                        }
                    }
                    break;
                }
                at = end;
            }
            let mut want: Vec<u64> = segs
                .iter()
                .flat_map(|&(lo, hi)| primes_in(lo, hi))
                .chain(file_primes.iter().copied())
                .collect();
            want.sort_unstable();
            want.dedup();
            let mut got = file.clone();
            got.sort_unstable();
            let n = got.len();
            got.dedup();
            assert_eq!(got.len(), n, "seed {seed}: a prime written twice");
            assert_eq!(got, want, "seed {seed}: primes missing");
            assert_eq!(r.streaming(), 0, "seed {seed}");
        }
    }
}
