//! Handing out work: how files are cut into chunks, which worker has room, and which
//! batches of primes are acceptable.

use super::*;

/// Why a `primes` message must be refused, if it must: over the batch limit, or a big prime
/// that is not canonical decimal of 2^64 or more (anything else could corrupt primes.txt —
/// a newline inside a string would write two lines).
pub fn bad_batch(small: &[u64], big: &[String]) -> Option<String> {
    let n = small.len() + big.len();
    if n > proto::msg::MAX_PRIMES_PER_BATCH {
        return Some(format!(
            "{n} primes in one message, the limit is {}",
            proto::msg::MAX_PRIMES_PER_BATCH
        ));
    }
    for b in big {
        let canonical = (20..=1234).contains(&b.len())
            && b.bytes().all(|c| c.is_ascii_digit())
            && !b.starts_with('0')
            && (b.len() > 20 || b.as_str() > "18446744073709551615");
        if !canonical {
            let shown: String = b.chars().take(40).collect();
            return Some(format!(
                "{shown:?} is not the canonical decimal of a number of 2^64 or more"
            ));
        }
    }
    None
}

/// A worker may hold this many times `max_inflight` assignments while they are small (see
/// [`CoreConfig::small_inflight_bytes`]).
pub const SMALL_INFLIGHT_FACTOR: usize = 32;

/// Segment primes the coordinator holds (received, not yet durable) beyond which no more
/// `primes` segments are handed out until the flusher catches up: workers sieve faster than
/// primes.txt is written, and without this the whole range would wait in memory.
pub const BACKLOG_PRIMES: usize = 8 << 20;

/// How many chunks a file of `size` bytes is cut into: the nearest whole number of
/// `chunk_bytes` pieces, at least one, so that no chunk is a sliver (a 64 MiB + 18 byte file
/// is one chunk, not two).
pub fn chunk_count(size: u64, chunk_bytes: u64) -> usize {
    let c = chunk_bytes.max(1);
    (size.saturating_add(c / 2) / c).max(1) as usize
}

/// Byte range of chunk `i` of `n` equal chunks of a `size`-byte file (the worker moves each
/// cut to the next line start).
pub fn chunk_range(size: u64, n: u64, i: u64) -> (u64, u64) {
    let at = |k: u64| ((size as u128 * k as u128) / n.max(1) as u128) as u64;
    (at(i), at(i + 1))
}

impl Core {
    /// Whether `w` can take one more assignment: up to `max_inflight` per testing thread, or up to
    /// [`SMALL_INFLIGHT_FACTOR`] times that while what it holds is under
    /// `small_inflight_bytes` (small files: a worker holding only two of them spends its
    /// time waiting for round trips; large chunks: holding more would leave one worker with
    /// queued chunks at the end of a job while another idles).
    pub(super) fn has_room(&self, w: &Worker) -> bool {
        let n = w.assigned.len();
        let limit = self.cfg.max_inflight * w.threads;
        if n < limit {
            return true;
        }
        if n >= limit * SMALL_INFLIGHT_FACTOR {
            return false;
        }
        let held: u64 = w.assigned.iter().map(|(_, bytes)| bytes).sum();
        held < self.cfg.small_inflight_bytes
    }

    /// Hands queued chunks to workers with room, oldest first; then, while a worker has an
    /// idle testing thread and another holds assignments it has not started (behind the
    /// ones its threads test), moves them over (`Core::steal`).
    pub fn assign(&mut self, now: Now) -> Vec<Action> {
        let mut actions = self.assign_queued(now);
        while let Some(mut moved) = self.steal(now) {
            let given = self.assign_queued(now);
            let took = !given.is_empty();
            moved.extend(given);
            actions.extend(moved);
            if !took {
                break;
            }
        }
        actions
    }

    /// Work stealing (issue 27): no task waits behind another on one worker while a worker
    /// is idle. A worker tests `threads` assignments at once, in the order given; the ones
    /// after those wait. If the queue has nothing ready and a connected worker holds fewer
    /// assignments than its threads, the last waiting assignment of the worker with the
    /// most waiting ones is taken back: `cancel` to its holder (a late result of that
    /// attempt is ignored, as any stale one), the chunk queued first. None if there is no
    /// such pair.
    pub(super) fn steal(&mut self, now: Now) -> Option<Vec<Action>> {
        let ready = self.queue.iter().any(|k| {
            self.jobs.get(&k.key).is_some_and(|j| {
                j.gen == k.gen
                    && matches!(j.chunks.get(k.chunk as usize),
                        Some(ChunkState::Queued { ready_ms }) if *ready_ms <= now.ms)
            })
        });
        if ready {
            return None;
        }
        let idle = self
            .workers
            .values()
            .any(|w| w.conn.is_some() && w.assigned.len() < w.threads.max(1));
        if !idle {
            return None;
        }
        // The smallest waiting assignment anywhere (the idle worker is soon free again to
        // take the next); among equals the one given last.
        let (victim, at, _) = self
            .workers
            .iter()
            .filter(|(_, w)| w.conn.is_some())
            .flat_map(|(id, w)| {
                let start = w.threads.max(1).min(w.assigned.len());
                w.assigned[start..]
                    .iter()
                    .enumerate()
                    .map(move |(i, (attempt, bytes))| (id, start + i, *bytes, attempt))
            })
            .min_by(|a, b| {
                (a.2, std::cmp::Reverse(self.attempt_number(a.3)))
                    .cmp(&(b.2, std::cmp::Reverse(self.attempt_number(b.3))))
            })
            .map(|(id, i, bytes, _)| (id.clone(), i, bytes))?;
        let w = self.workers.get_mut(&victim)?;
        let (attempt, _) = w.assigned.remove(at);
        let conn = w.conn;
        let key = self.attempts.remove(&attempt)?;
        let job = self.jobs.get_mut(&key.key)?;
        if let Some(c) = job.chunks.get_mut(key.chunk as usize) {
            *c = ChunkState::Queued { ready_ms: now.ms };
        }
        self.queue.push_front(key);
        Some(
            conn.map(|conn| Action::Send(conn, CoordMsg::Cancel { attempt }))
                .into_iter()
                .collect(),
        )
    }

    /// The sequence number in an attempt id (`<session>-<n>`), for ordering.
    fn attempt_number(&self, attempt: &str) -> u64 {
        attempt
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0)
    }

    /// Hands queued chunks to workers with room, oldest first.
    fn assign_queued(&mut self, now: Now) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut deferred = Vec::new();
        let backlog = self.backlog();
        // The worker with the fewest assignments that has room, each round.
        while let Some(worker) = self
            .workers
            .iter()
            .filter(|(_, w)| w.conn.is_some() && self.has_room(w))
            .min_by_key(|(_, w)| w.assigned.len())
            .map(|(id, _)| id.clone())
        {
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            let Some(job) = self.jobs.get_mut(&key.key) else {
                continue;
            };
            if job.gen != key.gen {
                continue;
            }
            match job.chunks[key.chunk as usize] {
                ChunkState::Queued { ready_ms } if ready_ms <= now.ms => {}
                ChunkState::Queued { .. } => {
                    deferred.push(key);
                    continue;
                }
                _ => continue,
            }
            let chunk = key.chunk;
            let n = job.chunks.len() as u64;
            let lists = job
                .work
                .as_ref()
                .is_some_and(|g| g.plan.list_segment(chunk).is_some());
            if lists && backlog > BACKLOG_PRIMES {
                self.held_back = true;
                deferred.push(key);
                continue;
            }
            // A generation task: what it computes (a product waits for its factors).
            let work = match &job.work {
                Some(g) => {
                    let chunks = &job.chunks;
                    let answer = |t: usize| match chunks.get(t) {
                        Some(ChunkState::Done { result, .. }) => result.answer.clone(),
                        _ => None,
                    };
                    match g.plan.work(chunk as usize, answer) {
                        Some(w) => Some(w),
                        None => {
                            job.chunks[chunk as usize] = ChunkState::Queued {
                                ready_ms: gen::WAITING,
                            };
                            continue;
                        }
                    }
                }
                None => None,
            };
            self.next_attempt += 1;
            let attempt = format!("{}-{}", self.session, self.next_attempt);
            let (size, (start, end)) = match &work {
                Some((_, weight)) => (*weight, (0, *weight)),
                None => (job.fp.size, chunk_range(job.fp.size, n, chunk as u64)),
            };
            let work = work.map(|(w, _)| w);
            job.chunks[chunk as usize] = ChunkState::Assigned {
                attempt: attempt.clone(),
                worker: worker.clone(),
            };
            job.started_at.get_or_insert(now.wall);
            let file = key.key.to_string();
            self.attempts.insert(attempt.clone(), key);
            let Some(w) = self.workers.get_mut(&worker) else {
                break;
            };
            w.assigned.push((attempt.clone(), end - start));
            if let Some(conn) = w.conn {
                actions.push(Action::Send(
                    conn,
                    CoordMsg::Assign(Assignment {
                        attempt,
                        file,
                        chunk,
                        chunks: n as u32,
                        start,
                        end,
                        size,
                        work,
                    }),
                ));
            }
        }
        self.queue.extend(deferred);
        actions
    }
}
