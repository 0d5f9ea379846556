//! Workers: registration (one live process per id), and the messages of a registered one
//! (heartbeats, primes, finished and failed tasks, goodbye).

use super::*;

impl Core {
    /// Registered connections and their workers (the channels a snapshot records).
    pub fn connections(&self) -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = self.conns.iter().map(|(c, w)| (*c, w.clone())).collect();
        v.sort();
        v
    }

    /// A connection registered as `worker_id` with one thread, instance 0 (the tests'
    /// shorthand; the shell calls [`Core::register_with_threads`]).
    #[cfg(test)]
    pub fn register(&mut self, conn: u64, worker_id: &str, now: Now) -> Vec<Action> {
        self.register_with_threads(conn, worker_id, 1, 0, now)
    }

    /// A connection registered as `worker_id`, a process (`instance`) that tests `threads`
    /// tasks at once.
    ///
    /// An id is one worker: while a live connection holds it, another process registering
    /// with it is refused for good (two processes sharing an id would replace each other's
    /// connection forever). The same process reconnecting (same instance), or any process
    /// once the old connection has been silent past the heartbeat limit, replaces the old
    /// connection, whose tasks are requeued.
    pub fn register_with_threads(
        &mut self,
        conn: u64,
        worker_id: &str,
        threads: u32,
        instance: u64,
        now: Now,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(old) = self
            .workers
            .get(worker_id)
            .filter(|w| w.conn.is_some_and(|c| c != conn))
        {
            let limit = self.cfg.heartbeat_ms * self.cfg.missed_heartbeats as u64;
            let silent = now.ms.saturating_sub(old.last_seen_ms) > limit;
            if old.instance != instance && !silent {
                let reason = format!(
                    "worker id {worker_id:?} is already in use by a connected worker (joined {}); \
                     give this one another --id",
                    old.joined.to_rfc3339()
                );
                return vec![
                    Action::Send(
                        conn,
                        CoordMsg::Refused {
                            reason: reason.clone(),
                        },
                    ),
                    Action::Close(conn, reason),
                ];
            }
            if let Some(old_conn) = old.conn {
                actions.push(Action::Close(
                    old_conn,
                    format!("{worker_id} reconnected on a new connection"),
                ));
            }
            actions.extend(self.lose_worker(worker_id, now, false));
        }
        let w = self.workers.entry(worker_id.to_string()).or_insert(Worker {
            conn: None,
            last_seen_ms: now.ms,
            joined: now.wall,
            assigned: Vec::new(),
            tasks_done: 0,
            numbers: 0,
            progress: (0, 0),
            threads: 1,
            instance,
        });
        // A worker claiming absurd parallelism must not drain the whole queue.
        w.threads = (threads as usize).clamp(1, 64);
        w.instance = instance;
        w.conn = Some(conn);
        w.last_seen_ms = now.ms;
        self.conns.insert(conn, worker_id.to_string());
        actions.push(Action::Send(
            conn,
            CoordMsg::Welcome {
                session: self.session.clone(),
                heartbeat_ms: self.cfg.heartbeat_ms,
                term: self.cfg.term,
            },
        ));
        actions.extend(self.assign(now));
        actions
    }

    /// The worker behind `conn`, if registered.
    pub fn worker_of(&self, conn: u64) -> Option<&str> {
        self.conns.get(&conn).map(|s| s.as_str())
    }

    /// True if `attempt` is the live attempt of a chunk, held by the worker on `conn`.
    fn current(&self, conn: u64, attempt: &str) -> Option<ChunkKey> {
        let worker = self.conns.get(&conn)?;
        let key = self.attempts.get(attempt)?;
        let job = self.jobs.get(&key.key)?;
        match job.chunks.get(key.chunk as usize)? {
            ChunkState::Assigned {
                attempt: a,
                worker: w,
            } if a == attempt && w == worker && job.gen == key.gen => Some(key.clone()),
            _ => None,
        }
    }

    /// A message from a registered worker.
    pub fn message(&mut self, conn: u64, msg: WorkerMsg, now: Now) -> Vec<Action> {
        let Some(worker) = self.conns.get(&conn).cloned() else {
            return vec![Action::Close(conn, "message before register".into())];
        };
        if let Some(w) = self.workers.get_mut(&worker) {
            w.last_seen_ms = now.ms;
        }
        match msg {
            WorkerMsg::Heartbeat {
                bytes_done,
                bytes_total,
                ..
            } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.progress = (bytes_done, bytes_total);
                }
                Vec::new()
            }
            WorkerMsg::Primes {
                attempt,
                small,
                big,
            } => {
                if let Some(why) = bad_batch(&small, &big) {
                    let mut a = vec![Action::Close(
                        conn,
                        format!("rejected a primes message: {why}"),
                    )];
                    a.extend(self.disconnected(conn, now));
                    return a;
                }
                let Some(key) = self.current(conn, &attempt) else {
                    self.totals.stale_messages_ignored += 1;
                    return Vec::new();
                };
                let segment = self.plan_of(&key).and_then(|p| p.list_segment(key.chunk));
                if let Some(why) = segment.and_then(|(lo, hi)| gen::bad_run(lo, hi, &small, &big)) {
                    let mut a = vec![Action::Close(
                        conn,
                        format!("rejected a primes message: {why}"),
                    )];
                    a.extend(self.disconnected(conn, now));
                    return a;
                }
                self.totals.primes_received += (small.len() + big.len()) as u64;
                match segment {
                    Some((lo, hi)) => self.pending.push_run(lo, hi, small),
                    None => {
                        self.pending.small.extend(small);
                        self.pending.big.extend(big);
                    }
                }
                Vec::new()
            }
            WorkerMsg::TaskDone(done) => {
                let Some(key) = self.current(conn, &done.attempt) else {
                    self.totals.stale_messages_ignored += 1;
                    return Vec::new();
                };
                self.attempts.remove(&done.attempt);
                self.totals.tasks_done += 1;
                self.totals.numbers_tested += done.numbers;
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.assigned.retain(|(a, _)| *a != done.attempt);
                    w.tasks_done += 1;
                    w.numbers += done.numbers;
                }
                if let Some(work) = self.plan_of(&key).and_then(|p| p.recorded_work(key.chunk)) {
                    self.pending.finished.push(Finished {
                        work,
                        worker: worker.clone(),
                        result: done.clone(),
                    });
                }
                if let Some(job) = self.jobs.get_mut(&key.key) {
                    job.chunks[key.chunk as usize] = ChunkState::Flushing {
                        result: done,
                        worker: worker.clone(),
                    };
                }
                self.pending.done.push(key);
                self.assign(now)
            }
            WorkerMsg::TaskFailed {
                attempt,
                reason,
                retryable,
            } => {
                let Some(ChunkKey { key, chunk, .. }) = self.current(conn, &attempt) else {
                    self.totals.stale_messages_ignored += 1;
                    return Vec::new();
                };
                self.attempts.remove(&attempt);
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.assigned.retain(|(a, _)| *a != attempt);
                }
                self.totals.tasks_failed += 1;
                let mut actions = self.chunk_failed(&key, chunk, reason, retryable, now);
                actions.extend(self.assign(now));
                actions
            }
            WorkerMsg::Goodbye {} => {
                let mut a = vec![Action::Close(conn, "worker said goodbye".into())];
                a.extend(self.disconnected(conn, now));
                a
            }
            WorkerMsg::Register { .. } => vec![Action::Close(conn, "registered twice".into())],
            WorkerMsg::Marker { .. } => Vec::new(), // handled by the snapshot logic in the shell
        }
    }
}
