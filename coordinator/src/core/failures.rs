//! What goes wrong: failed chunks and their retries, lost connections, silent workers (and
//! a coordinator that was itself paused), failed files tried again, reports that could
//! not be written.

use super::*;

impl Core {
    pub(super) fn chunk_failed(
        &mut self,
        key: &Key,
        chunk: u32,
        reason: String,
        retryable: bool,
        now: Now,
    ) -> Vec<Action> {
        let Some(job) = self.jobs.get_mut(key) else {
            return Vec::new();
        };
        let i = chunk as usize;
        job.failures[i] += 1;
        if retryable && job.failures[i] < self.cfg.max_failures {
            job.chunks[i] = ChunkState::Queued {
                ready_ms: now.ms + self.cfg.retry_ms * job.failures[i] as u64,
            };
            let gen = job.gen;
            self.queue.push_back(ChunkKey::new(key, gen, chunk));
            Vec::new()
        } else {
            job.chunks[i] = ChunkState::Failed {
                reason: format!("{reason} (after {} attempts)", job.failures[i]),
            };
            self.maybe_report(key, now).into_iter().collect()
        }
    }

    /// The connection closed (or was closed): requeue the worker's chunks at once.
    pub fn disconnected(&mut self, conn: u64, now: Now) -> Vec<Action> {
        let Some(worker) = self.conns.remove(&conn) else {
            return Vec::new();
        };
        if self.workers.get(&worker).and_then(|w| w.conn) != Some(conn) {
            return Vec::new(); // an older connection of a worker that has reconnected
        }
        self.lose_worker(&worker, now, true)
    }

    pub(super) fn lose_worker(&mut self, worker: &str, now: Now, count: bool) -> Vec<Action> {
        let Some(w) = self.workers.get_mut(worker) else {
            return Vec::new();
        };
        if let Some(c) = w.conn.take() {
            self.conns.remove(&c);
        }
        if count {
            self.totals.workers_lost += 1;
        }
        let attempts = std::mem::take(&mut w.assigned);
        for (attempt, _) in attempts {
            if let Some(key) = self.attempts.remove(&attempt) {
                if let Some(job) = self.jobs.get_mut(&key.key) {
                    if job.gen == key.gen {
                        job.chunks[key.chunk as usize] = ChunkState::Queued { ready_ms: now.ms };
                        // Lost work goes to the front: it is the oldest.
                        self.queue.push_front(key);
                        self.totals.tasks_requeued += 1;
                    }
                }
            }
        }
        self.assign(now)
    }

    /// Periodic: declare silent workers dead, then hand out work.
    ///
    /// Silence is measured only over time the coordinator was running: when ticks stop for
    /// longer than a heartbeat (the coordinator was paused), the stall is credited to every
    /// worker, so that heartbeats still waiting in the sockets get read before anyone is
    /// judged. A stall of the observer is not evidence against the observed.
    pub fn tick(&mut self, now: Now) -> Vec<Action> {
        let period = self.tick_period_ms();
        if let Some(last) = self.last_tick_ms.replace(now.ms) {
            let gap = now.ms.saturating_sub(last);
            if gap > self.cfg.heartbeat_ms.max(2 * period) {
                let stall = gap - period;
                for w in self.workers.values_mut() {
                    w.last_seen_ms = (w.last_seen_ms + stall).min(now.ms);
                }
            }
        }
        let limit = self.cfg.heartbeat_ms * self.cfg.missed_heartbeats as u64;
        let dead: Vec<(String, u64)> = self
            .workers
            .iter()
            .filter_map(|(id, w)| {
                w.conn
                    .filter(|_| now.ms.saturating_sub(w.last_seen_ms) > limit)
                    .map(|c| (id.clone(), c))
            })
            .collect();
        let mut actions = Vec::new();
        for (id, conn) in dead {
            actions.push(Action::Close(
                conn,
                format!("{id} missed {} heartbeats", self.cfg.missed_heartbeats),
            ));
            actions.extend(self.lose_worker(&id, now, true));
        }
        actions.extend(self.retry_failed_files(now));
        actions.extend(self.assign(now));
        actions
    }

    /// Failed files whose pause is over get their failed chunks queued again (chunks that
    /// finished stay done: their primes are durable).
    /// A report that could not be written is written again.
    pub(super) fn retry_failed_files(&mut self, now: Now) -> Vec<Action> {
        let mut rewrite = Vec::new();
        for (key, job) in self.jobs.iter_mut() {
            if job.retry_at_ms.is_none_or(|t| t > now.ms) {
                continue;
            }
            job.retry_at_ms = None;
            job.reported = false;
            if job.report_error.take().is_some() {
                rewrite.push(key.clone());
            }
            for (i, c) in job.chunks.iter_mut().enumerate() {
                if matches!(c, ChunkState::Failed { .. }) {
                    *c = ChunkState::Queued { ready_ms: now.ms };
                    job.failures[i] = 0;
                    self.queue.push_back(ChunkKey::new(key, job.gen, i as u32));
                }
            }
            tracing::info!(
                file = key.to_string(),
                round = job.failed_rounds + 1,
                "retrying a file that failed"
            );
        }
        rewrite
            .iter()
            .filter_map(|k| self.maybe_report(k, now))
            .collect()
    }

    /// The report of `key` could not be written: the file (or job) is failed (never done),
    /// and the write is tried again after the failed-file pause (its cause, say a folder
    /// with the report's name, may be removed).
    pub fn report_write_failed(&mut self, key: &Key, fp: Fingerprint, reason: String, now: Now) {
        let Some(job) = self.jobs.get_mut(key).filter(|j| j.fp == fp) else {
            return;
        };
        job.failed_round(self.cfg.failed_retry_ms, now);
        job.report_error = Some(reason);
    }
}
