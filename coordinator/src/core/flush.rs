//! The flush buffer: primes and completions waiting for the flusher, and what becomes done
//! once the flusher has made them durable (chunks, then files' and jobs' reports).

use super::*;

/// A flush batch: primes and completions waiting for the flusher.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlushBatch {
    #[serde(with = "crate::compact")]
    pub small: Vec<u64>,
    pub big: Vec<String>,
    /// Primes of `primes` job segments, by segment, in arrival order (deduplicated by
    /// intervals, never held in the dedup set: [`crate::ranges`]).
    pub runs: Vec<Run>,
    /// Generation tasks finished (but products): recorded in the ledger once their results
    /// (a `primes` segment's primes) are durable.
    pub finished: Vec<Finished>,
    /// Chunks whose primes are all in `small`/`big`/`runs` (or already durable).
    pub done: Vec<ChunkKey>,
}

impl FlushBatch {
    /// True if there is nothing to flush.
    pub fn is_empty(&self) -> bool {
        self.small.is_empty()
            && self.big.is_empty()
            && self.runs.is_empty()
            && self.finished.is_empty()
            && self.done.is_empty()
    }

    /// How many primes of `primes` job segments it holds (what the backlog counts).
    pub fn run_primes(&self) -> usize {
        self.runs.iter().map(|r| r.primes.len()).sum()
    }

    /// Puts `later` after what this holds (order matters for runs: a segment's primes must
    /// reach the flusher in the order they were sent).
    pub fn extend(&mut self, later: FlushBatch) {
        self.small.extend(later.small);
        self.big.extend(later.big);
        for run in later.runs {
            self.push_run(run.lo, run.hi, run.primes);
        }
        self.finished.extend(later.finished);
        self.done.extend(later.done);
    }

    /// Appends primes of segment `[lo, hi]` (to the last run if it is the same segment's).
    pub fn push_run(&mut self, lo: u64, hi: u64, primes: Vec<u64>) {
        match self.runs.last_mut() {
            Some(r) if (r.lo, r.hi) == (lo, hi) => r.primes.extend(primes),
            _ => self.runs.push(Run { lo, hi, primes }),
        }
    }
}

impl Core {
    /// Hands the flush buffer to the flusher (which then says [`Core::flush_taken`] of what
    /// it took with it).
    pub fn take_pending(&mut self) -> FlushBatch {
        std::mem::take(&mut self.pending)
    }

    /// A flush holding `primes` segment primes went to the flusher. The flusher may have
    /// two under way (the next proposed while the last applies); it answers each, in the
    /// order taken, with [`Core::flushed`] or [`Core::flush_failed`].
    pub fn flush_taken(&mut self, primes: usize) {
        self.in_flush.push_back(primes);
        // What was handed back went out with it.
        self.handed_back = 0;
    }

    /// The oldest flush under way was not made durable: its `primes` segment primes are
    /// handed back (waiting for the next flush).
    pub fn flush_failed(&mut self, primes: usize) {
        self.in_flush.pop_front();
        self.handed_back += primes;
    }

    /// Segment primes received and not yet durable (the buffer, what was handed back and
    /// the flushes under way).
    pub fn backlog(&self) -> usize {
        self.in_flush.iter().sum::<usize>() + self.handed_back + self.pending.run_primes()
    }

    /// The flusher made the oldest flush under way durable: `done`'s chunks are done; files
    /// whose chunks are all done get their report.
    pub fn flushed(&mut self, done: Vec<ChunkKey>, now: Now) -> Vec<Action> {
        self.in_flush.pop_front();
        let mut files = BTreeSet::new();
        let mut job_tasks: BTreeMap<Key, Vec<u32>> = BTreeMap::new();
        for ChunkKey { key, gen, chunk } in done {
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            if job.gen != gen {
                continue;
            }
            let c = &mut job.chunks[chunk as usize];
            if let ChunkState::Flushing { result, worker } = c.clone() {
                if let Some(w) = job.work.as_ref().and_then(|g| g.plan.recorded_work(chunk)) {
                    self.done_work.insert(w, (result.clone(), worker.clone()));
                }
                *c = ChunkState::Done { result, worker };
                if job.work.is_some() {
                    job_tasks.entry(key.clone()).or_default().push(chunk);
                }
                files.insert(key);
            }
        }
        let woke = !job_tasks.is_empty() || std::mem::take(&mut self.held_back);
        for (key, tasks) in job_tasks {
            self.wake_parents(&key, &tasks, now);
        }
        let mut actions: Vec<Action> = files
            .into_iter()
            .filter_map(|f| self.maybe_report(&f, now))
            .collect();
        if woke {
            actions.extend(self.assign(now));
        }
        actions
    }
}
