//! A seeded simulation of scripted workers and a network that cuts links, pauses workers
//! and delays messages (FIFO per link, like TCP), in the style of raft-rs's test network:
//! every snapshot must be a consistent cut and the durable primes exact. Input files and
//! overlapping `primes` range jobs run together; the flusher is the real
//! [`crate::primes::PrimesFile`] on a temporary file, so primes.txt must hold each prime
//! once whatever was cut or repeated.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use proto::jobs::JobSpec;
use proto::msg::{Assignment, CoordMsg, TaskProgress, Work, WorkerMsg};

use super::tests::{at, done_msg, fp, machine, state};
use super::*;
use crate::core::ReportStatus;

/// A tiny deterministic generator (xorshift), so the simulation needs no crate and prints
/// the seed it ran with.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// A scripted worker: what the coordinator sent it (in order), the assignments it holds,
/// and whether it is connected.
struct SimWorker {
    id: String,
    conn: Option<u64>,
    inbox: VecDeque<CoordMsg>,
    tasks: VecDeque<Assignment>,
}

/// What the coordinator's actions did, seen from outside: buffers handed to the flusher,
/// reports written, snapshots written (each checked when written).
#[derive(Default)]
struct Effects {
    flushes: Vec<FlushBatch>,
    reports: BTreeMap<String, ReportStatus>,
    job_reports: BTreeMap<String, String>,
    snapshots: usize,
}

/// The machine, recording every event it is given with its time and the actions it
/// returned: replayed into a fresh machine they must give the same actions (a replica fed
/// the same log decides the same).
struct Recorded {
    m: Coordinator,
    log: Vec<(Event, Now, Vec<Action>)>,
    /// The whole machine as JSON after some event (a replica's state-machine snapshot), and
    /// how many events it had taken.
    saved: Option<(usize, String)>,
}

impl Recorded {
    fn handle(&mut self, e: Event, now: Now) -> Vec<Action> {
        let actions = self.m.handle(e.clone(), now);
        self.log.push((e, now, actions.clone()));
        actions
    }

    /// Saves the machine as it is now (once).
    fn save(&mut self) {
        if self.saved.is_none() {
            let json = serde_json::to_string(&self.m).expect("the machine encodes");
            self.saved = Some((self.log.len(), json));
        }
    }

    /// A machine restored from the saved state, fed the events after it, decides as the
    /// original did (a replica installing a snapshot, then the log's tail).
    fn restore_and_replay(&self, seed: u64) {
        let Some((at, json)) = &self.saved else {
            panic!("seed {seed}: no state was saved");
        };
        let mut restored: Coordinator = serde_json::from_str(json).expect("the machine decodes");
        for (i, (e, now, want)) in self.log.iter().enumerate().skip(*at) {
            let got = restored.handle(e.clone(), *now);
            assert!(
                got == *want,
                "seed {seed}: after restoring at event {at}, event {i} ({e:?}) decided differently:\n{got:?}\nvs\n{want:?}"
            );
        }
    }

    fn core(&self) -> &Core {
        self.m.core()
    }

    /// Replays the log into a fresh machine, each event and time through JSON (as a log
    /// on disk or a network would carry them): the same actions, event for event.
    fn replay(&self, seed: u64) {
        let mut fresh = machine();
        for (i, (e, now, want)) in self.log.iter().enumerate() {
            let wire = serde_json::to_string(&(e, now)).expect("an event encodes");
            let (e, now): (Event, Now) = serde_json::from_str(&wire).expect("and decodes");
            let got = fresh.handle(e.clone(), now);
            assert!(
                got == *want,
                "seed {seed}: replaying event {i} ({e:?}) decided differently:\n{got:?}\nvs\n{want:?}"
            );
        }
    }
}

/// Puts `msg` on `conn`'s link at `t` or later: a link is FIFO, like TCP.
fn send(wire: &mut Vec<(u64, u64, WorkerMsg)>, conn: u64, t: u64, msg: WorkerMsg) {
    let last = wire
        .iter()
        .filter(|x| x.1 == conn)
        .map(|x| x.0)
        .max()
        .unwrap_or(0);
    wire.push((t.max(last), conn, msg));
}

#[test]
/// Simulation (seeded; `PRIMES_SIM_SEED` picks another): three scripted workers and a
/// network that delays messages, cuts connections (the worker reconnects) and pauses a
/// worker past the heartbeat limit, with snapshots and flushes on timers. Every snapshot is
/// a consistent cut, and primes.txt holds exactly the primes of the files and of the range
/// jobs (which overlap each other and the files), each once.
fn simulated_cluster_with_faults() {
    let seeds: Vec<u64> = match std::env::var("PRIMES_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("PRIMES_SIM_SEED is a number")],
        Err(_) => vec![1, 2, 3, 20261130],
    };
    for seed in seeds {
        eprintln!("simulation seed {seed}");
        simulate(seed);
    }
}

fn simulate(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // Files: each a list of numbers; chunk = byte range, simulated as number ranges.
    let mut files: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for f in 0..20 {
        let n = 5 + rng.below(40) as usize;
        files.insert(
            format!("f{f}.txt"),
            (0..n).map(|_| rng.below(2000)).collect(),
        );
    }
    let want: BTreeSet<u64> = files
        .values()
        .flatten()
        .copied()
        .filter(|&n| is_prime(n))
        .collect();
    // Range jobs overlapping each other and the files' numbers, in segments of 150.
    let ranges = [(100u64, 1400u64), (900, 2600), (2500, 2600)];
    let want: BTreeSet<u64> = want
        .into_iter()
        .chain(
            ranges
                .iter()
                .flat_map(|&(lo, hi)| (lo..=hi).filter(|&n| is_prime(n))),
        )
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let primes_path = dir.path().join("primes.txt");
    let mut primes_file = crate::primes::PrimesFile::open(&primes_path).expect("primes.txt");
    let mut m = Recorded {
        m: machine(),
        log: Vec::new(),
        saved: None,
    };
    let jobs: Vec<_> = ranges
        .iter()
        .enumerate()
        .map(|(i, &(lo, hi))| {
            let spec = JobSpec::new("primes", &[("lo", lo), ("hi", hi)]);
            let job = crate::core::GenJob::new(format!("r{i}"), spec, 150).expect("plan");
            (format!("r{i}"), fp(1), Ok(job))
        })
        .collect();
    let _ = m.handle(
        Event::Jobs {
            ready: jobs,
            removed: vec![],
        },
        at(0),
    );
    for (name, nums) in &files {
        // 100 "bytes" per number: files over 1000 are split into chunks.
        let size = nums.len() as u64 * 100;
        let _ = m.handle(
            Event::Inputs(ScanOutcome {
                ready: vec![(name.clone(), fp(size))],
                removed: vec![],
            }),
            at(0),
        );
    }
    let mut workers: Vec<SimWorker> = (1..=3)
        .map(|i| SimWorker {
            id: format!("w{i}"),
            conn: None,
            inbox: VecDeque::new(),
            tasks: VecDeque::new(),
        })
        .collect();
    let mut next_conn = 0u64;
    // Messages in flight from workers to the coordinator: (deliver at, conn, message).
    let mut wire: Vec<(u64, u64, WorkerMsg)> = Vec::new();
    let mut fx = Effects::default();
    let mut paused_until: HashMap<usize, u64> = HashMap::new();
    let (mut cuts, mut pauses) = (0, 0);
    let mut now = 0u64;
    let route = |actions: Vec<Action>, workers: &mut Vec<SimWorker>, fx: &mut Effects| {
        for a in actions {
            match a {
                Action::Send(conn, msg) => {
                    if let Some(w) = workers.iter_mut().find(|w| w.conn == Some(conn)) {
                        w.inbox.push_back(msg);
                    }
                }
                Action::Close(conn, _) => {
                    if let Some(w) = workers.iter_mut().find(|w| w.conn == Some(conn)) {
                        w.conn = None;
                        w.inbox.clear();
                        w.tasks.clear();
                    }
                }
                Action::WriteReport(r) => {
                    fx.reports.insert(r.file.clone(), r.status);
                }
                Action::Flush(p) => fx.flushes.push(p),
                Action::WriteJobReport(r) => {
                    fx.job_reports.insert(r.job.clone(), r.status.clone());
                }
                Action::FlushSoon | Action::FlushNow => {}
                Action::WriteSnapshot(s) => {
                    let v = crate::verify::verify(&s);
                    assert!(
                        v.consistent(),
                        "seed {seed}: snapshot {} is not a consistent cut: {v:?}",
                        s.seq
                    );
                    fx.snapshots += 1;
                }
            }
        }
    };
    while fx.reports.len() < files.len()
        || fx.reports.values().any(|s| *s != ReportStatus::Done)
        || fx.job_reports.len() < ranges.len()
    {
        now += 10;
        // Mid-run (tasks assigned, primes buffered, perhaps a snapshot under way): the
        // state a new replica would install.
        if now == 250 + 10 * (seed % 20) {
            m.save();
        }
        assert!(
            now < 600_000,
            "seed {seed}: the simulated job did not finish: {:?}",
            fx.reports
        );
        // Workers: connect, heartbeat, work one task per step, answer markers.
        for i in 0..workers.len() {
            if paused_until.get(&i).is_some_and(|t| *t > now) {
                continue;
            }
            if workers[i].conn.is_none() {
                next_conn += 1;
                workers[i].conn = Some(next_conn);
                let id = workers[i].id.clone();
                let acts = m.handle(
                    Event::Register {
                        conn: next_conn,
                        worker_id: id,
                        threads: 1,
                        instance: next_conn,
                    },
                    at(now),
                );
                route(acts, &mut workers, &mut fx);
                continue;
            }
            let conn = workers[i].conn.unwrap_or(0);
            // What the coordinator sent, in order: a marker is answered at once with the
            // state as of that point (assignments before it held, none after it).
            while let Some(msg) = workers[i].inbox.pop_front() {
                match msg {
                    CoordMsg::Assign(x) => workers[i].tasks.push_back(x),
                    CoordMsg::Cancel { attempt } => {
                        workers[i].tasks.retain(|t| t.attempt != attempt)
                    }
                    CoordMsg::Marker { snapshot } => {
                        let in_progress = workers[i]
                            .tasks
                            .iter()
                            .map(|t| TaskProgress {
                                attempt: t.attempt.clone(),
                                file: t.file.clone(),
                                chunk: t.chunk,
                                phase: "queued".into(),
                                bytes_done: 0,
                                bytes_total: t.end - t.start,
                            })
                            .collect();
                        let st = state(&workers[i].id, in_progress);
                        send(
                            &mut wire,
                            conn,
                            now + rng.below(20),
                            WorkerMsg::Marker {
                                snapshot,
                                state: st,
                            },
                        );
                    }
                    _ => {}
                }
            }
            send(
                &mut wire,
                conn,
                now + rng.below(30),
                WorkerMsg::Heartbeat {
                    busy: vec![],
                    bytes_done: 0,
                    bytes_total: 0,
                },
            );
            if let Some(t) = workers[i].tasks.pop_front() {
                if let Some(Work::Primes { lo, hi }) = t.work {
                    // A segment's primes, ascending, in one to three messages.
                    let primes: Vec<u64> = (lo..=hi).filter(|&n| is_prime(n)).collect();
                    // Spread over time, so a cut link can leave a segment half sent.
                    let mut d = now + 1 + rng.below(40);
                    let cut1 = rng.below(primes.len() as u64 + 1) as usize;
                    let cut2 = cut1 + rng.below((primes.len() - cut1) as u64 + 1) as usize;
                    for part in [&primes[..cut1], &primes[cut1..cut2], &primes[cut2..]] {
                        d += rng.below(30);
                        send(
                            &mut wire,
                            conn,
                            d,
                            WorkerMsg::Primes {
                                attempt: t.attempt.clone(),
                                small: part.to_vec(),
                                big: vec![],
                            },
                        );
                    }
                    send(
                        &mut wire,
                        conn,
                        d,
                        done_msg(&t.attempt, primes.len() as u64),
                    );
                    continue;
                }
                let nums = &files[&t.file];
                let (lo, hi) = (
                    (t.start / 100) as usize,
                    (t.end / 100).min(nums.len() as u64) as usize,
                );
                let primes: Vec<u64> = nums[lo..hi]
                    .iter()
                    .copied()
                    .filter(|&n| is_prime(n))
                    .collect();
                let d = now + 1 + rng.below(40);
                send(
                    &mut wire,
                    conn,
                    d,
                    WorkerMsg::Primes {
                        attempt: t.attempt.clone(),
                        small: primes.clone(),
                        big: vec![],
                    },
                );
                send(
                    &mut wire,
                    conn,
                    d,
                    done_msg(&t.attempt, primes.len() as u64),
                );
            }
        }
        // Faults: cut a connection, or pause a worker past the heartbeat limit.
        // At random, and surely once each early on (a run is short).
        let roll = match now {
            100 => 0,
            200 => 1,
            _ => rng.below(60),
        };
        match roll {
            0 => {
                cuts += 1;
                let i = rng.below(3) as usize;
                if let Some(conn) = workers[i].conn.take() {
                    workers[i].tasks.clear();
                    workers[i].inbox.clear();
                    wire.retain(|x| x.1 != conn); // in flight on a cut link: lost
                    let acts = m.handle(Event::Disconnected { conn }, at(now));
                    route(acts, &mut workers, &mut fx);
                }
            }
            1 => {
                pauses += 1;
                paused_until.insert(rng.below(3) as usize, now + 500);
            }
            _ => {}
        }
        // Deliver what is due, in order per connection (a stable sort keeps each link FIFO).
        wire.sort_by_key(|x| x.0);
        let due: Vec<(u64, u64, WorkerMsg)> = {
            let cut = wire.iter().position(|x| x.0 > now).unwrap_or(wire.len());
            wire.drain(..cut).collect()
        };
        let mut events: Vec<Event> = due
            .into_iter()
            .map(|(_, conn, msg)| Event::Message { conn, msg })
            .collect();
        // Timers.
        for (every, event) in [
            (30, Event::Tick),
            (100, Event::SnapshotDue),
            (50, Event::FlushDue),
        ] {
            if now % every == 0 {
                events.push(event);
            }
        }
        for e in events {
            route(m.handle(e, at(now)), &mut workers, &mut fx);
        }
        // The flusher: durable, then done (which writes reports, never another flush).
        for p in std::mem::take(&mut fx.flushes) {
            primes_file
                .append(&p.small, &p.big, &p.runs, &p.finished)
                .expect("append");
            route(
                m.handle(Event::Flushed(p.done), at(now)),
                &mut workers,
                &mut fx,
            );
            assert!(fx.flushes.is_empty());
        }
        // A worker whose connection the coordinator closed reconnects at its next step.
        for w in workers.iter_mut() {
            if let Some(c) = w.conn {
                if m.core().worker_of(c).is_none() {
                    w.conn = None;
                    w.inbox.clear();
                    w.tasks.clear();
                }
            }
        }
    }
    drop(primes_file);
    let text = std::fs::read_to_string(&primes_path).expect("primes.txt");
    let lines: Vec<u64> = text.lines().map(|l| l.parse().expect("a number")).collect();
    let durable: BTreeSet<u64> = lines.iter().copied().collect();
    assert_eq!(
        durable.len(),
        lines.len(),
        "seed {seed}: a prime twice in primes.txt"
    );
    assert_eq!(
        durable, want,
        "seed {seed}: the durable primes are exactly the files' and the ranges'"
    );
    assert!(
        fx.job_reports.values().all(|s| s == "done"),
        "seed {seed}: {:?}",
        fx.job_reports
    );
    let snapshots = fx.snapshots;
    assert!(snapshots > 0, "seed {seed}: snapshots were taken");
    let lost = m.core().status(at(now)).totals.workers_lost;
    eprintln!(
        "seed {seed}: {} ms simulated, {snapshots} snapshots, {cuts} links cut, {pauses} pauses, {lost} workers lost, {} primes",
        now,
        durable.len()
    );
    assert!(cuts + pauses > 0, "seed {seed}: faults were injected");
    m.replay(seed);
    m.restore_and_replay(seed);
}
