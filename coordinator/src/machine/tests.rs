//! The machine event by event, asserting the exact actions (in the style of openraft's
//! engine tests), and a seeded simulation of workers and a network that drops connections
//! and delays messages, in which every snapshot must be a consistent cut and the output
//! exact.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use proto::msg::{Assignment, TaskProgress, WorkerState};

use super::*;
use crate::core::{CoreConfig, ReportStatus};
use crate::snapshot::WorkerEntry;

fn cfg() -> CoreConfig {
    CoreConfig {
        heartbeat_ms: 100,
        missed_heartbeats: 3,
        max_inflight: 1,
        small_inflight_bytes: 0,
        max_failures: 3,
        chunk_bytes: 1000,
        retry_ms: 50,
        failed_retry_ms: 1000,
    }
}

fn at(ms: u64) -> Now {
    Now {
        ms,
        wall: chrono::Utc::now(),
    }
}

fn fp(size: u64) -> Fingerprint {
    Fingerprint {
        size,
        mtime_ns: 1,
        ctime_ns: 1,
        inode: 1,
    }
}

fn machine() -> Coordinator {
    Coordinator::new(Core::new(cfg(), "s".into()), Snapshots::new(500, 1))
}

fn register(m: &mut Coordinator, conn: u64, id: &str, now: u64) -> Vec<Action> {
    m.handle(
        Event::Register {
            conn,
            worker_id: id.into(),
            threads: 1,
            instance: conn,
        },
        at(now),
    )
}

fn ready(m: &mut Coordinator, file: &str, size: u64, now: u64) -> Vec<Action> {
    m.handle(
        Event::Inputs(ScanOutcome {
            ready: vec![(file.into(), fp(size))],
            removed: vec![],
        }),
        at(now),
    )
}

fn assigned(actions: &[Action]) -> Vec<(u64, Assignment)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(c, CoordMsg::Assign(x)) => Some((*c, x.clone())),
            _ => None,
        })
        .collect()
}

fn done_msg(attempt: &str, primes: u64) -> WorkerMsg {
    WorkerMsg::TaskDone(TaskDone {
        attempt: attempt.into(),
        version: "v".into(),
        size: 0,
        lines: 1,
        numbers: 1,
        blank: 0,
        invalid: 0,
        first_invalid: vec![],
        primes,
    })
}

fn state(id: &str, in_progress: Vec<TaskProgress>) -> WorkerState {
    WorkerState {
        worker_id: id.into(),
        in_progress,
        tasks_done: 0,
        numbers_tested: 0,
        cached_files: vec![],
    }
}

fn snapshot_of(actions: &[Action]) -> Snapshot {
    match actions {
        [Action::WriteSnapshot(s)] => (**s).clone(),
        other => panic!("expected exactly one snapshot to write, got {other:?}"),
    }
}

#[test]
/// With no worker connected a snapshot completes at once; a second one waits its turn.
fn snapshot_without_workers_completes_at_once() {
    let mut m = machine();
    ready(&mut m, "a.txt", 10, 0);
    let s = snapshot_of(&m.handle(Event::SnapshotDue, at(1)));
    assert_eq!(s.seq, 1);
    assert!(s.workers.is_empty() && s.channels.is_empty());
    assert_eq!(s.coordinator.files.len(), 1, "the queued file is recorded");
    assert!(crate::verify::verify(&s).consistent());
    assert_eq!(m.snapshot_in_progress(), None);
    assert_eq!(m.next_snapshot(), 2);
}

#[test]
/// Markers go to every worker in the same step as the recording; messages a worker sends
/// before its marker returns are the channel's state; the returned marker completes it.
fn snapshot_records_channels_until_the_marker() {
    let mut m = machine();
    ready(&mut m, "a.txt", 10, 0);
    let a = assigned(&register(&mut m, 1, "w1", 0));
    assert_eq!(a.len(), 1);
    let attempt = a[0].1.attempt.clone();
    assert_eq!(
        m.handle(Event::SnapshotDue, at(5)),
        vec![Action::Send(1, CoordMsg::Marker { snapshot: 1 })]
    );
    assert_eq!(m.snapshot_in_progress(), Some(1));
    assert!(
        m.handle(Event::SnapshotDue, at(6)).is_empty(),
        "one at a time"
    );
    let primes = WorkerMsg::Primes {
        attempt: attempt.clone(),
        small: vec![7],
        big: vec![],
    };
    assert!(m
        .handle(
            Event::Message {
                conn: 1,
                msg: primes.clone()
            },
            at(7)
        )
        .is_empty());
    assert_eq!(
        m.handle(
            Event::Message {
                conn: 1,
                msg: done_msg(&attempt, 1)
            },
            at(8)
        ),
        vec![Action::FlushSoon]
    );
    let s = snapshot_of(&m.handle(
        Event::Message {
            conn: 1,
            msg: WorkerMsg::Marker {
                snapshot: 1,
                state: state("w1", vec![]),
            },
        },
        at(9),
    ));
    assert_eq!(s.channels["w1"], vec![primes, done_msg(&attempt, 1)]);
    assert!(matches!(s.workers["w1"], WorkerEntry::Recorded { .. }));
    assert!(
        crate::verify::verify(&s).consistent(),
        "{:?}",
        crate::verify::verify(&s)
    );
    // After the marker, messages are no longer recorded.
    assert_eq!(m.snapshot_in_progress(), None);
}

#[test]
/// A worker that disconnects before its marker is noted dead; one that stays silent past
/// the marker timeout (a tick) is noted unresponsive; a stopping coordinator gives up at
/// once (deadline).
fn snapshot_without_a_marker() {
    let mut m = machine();
    register(&mut m, 1, "w1", 0);
    register(&mut m, 2, "w2", 0);
    assert_eq!(m.handle(Event::SnapshotDue, at(1)).len(), 2, "two markers");
    assert!(m.handle(Event::Disconnected { conn: 1 }, at(2)).is_empty());
    let heartbeat = WorkerMsg::Heartbeat {
        busy: vec![],
        bytes_done: 0,
        bytes_total: 0,
    };
    for t in [100, 200, 300, 400] {
        m.handle(
            Event::Message {
                conn: 2,
                msg: heartbeat.clone(),
            },
            at(t),
        );
        assert!(
            m.handle(Event::Tick, at(t)).is_empty(),
            "within the 500 ms marker timeout at {t}"
        );
    }
    let s = snapshot_of(&m.handle(Event::Tick, at(502)));
    assert_eq!(s.workers["w1"], WorkerEntry::Dead);
    assert_eq!(s.workers["w2"], WorkerEntry::Unresponsive);
    assert!(s.channels["w2"].is_empty(), "heartbeats carry no task");

    m.handle(Event::SnapshotDue, at(600));
    let s = snapshot_of(&m.handle(Event::SnapshotDeadline, at(601)));
    assert_eq!(s.seq, 2);
    assert_eq!(s.workers["w2"], WorkerEntry::Unresponsive);
    assert!(m.handle(Event::SnapshotDeadline, at(602)).is_empty());
}

#[test]
/// The flush hand-off: nothing to flush gives nothing; a finished chunk's primes come out
/// as one Flush; only Flushed makes it done and writes the report; a failed append hands
/// the same buffer out again.
fn flush_hand_off() {
    let mut m = machine();
    assert!(m.handle(Event::FlushDue, at(0)).is_empty());
    ready(&mut m, "a.txt", 10, 0);
    let a = assigned(&register(&mut m, 1, "w1", 0));
    let attempt = a[0].1.attempt.clone();
    m.handle(
        Event::Message {
            conn: 1,
            msg: WorkerMsg::Primes {
                attempt: attempt.clone(),
                small: vec![3, 5],
                big: vec![],
            },
        },
        at(1),
    );
    m.handle(
        Event::Message {
            conn: 1,
            msg: done_msg(&attempt, 2),
        },
        at(2),
    );
    let want = Pending {
        small: vec![3, 5],
        big: vec![],
        done: vec![ChunkKey::new("a.txt", 1, 0)],
    };
    assert_eq!(
        m.handle(Event::FlushDue, at(3)),
        vec![Action::Flush(want.clone())]
    );
    assert!(m.handle(Event::FlushFailed(want.clone()), at(4)).is_empty());
    assert_eq!(
        m.handle(Event::FlushDue, at(5)),
        vec![Action::Flush(want.clone())],
        "handed out again"
    );
    let r = m.handle(Event::Flushed(want.done), at(6));
    assert!(
        matches!(&r[..], [Action::WriteReport(r)] if r.status == ReportStatus::Done && r.primes_found == 2),
        "{r:?}"
    );
    assert_eq!(m.core().status(at(7)).files_done, 1);
}

#[test]
/// Recovery: chunks a snapshot shows finished (flushing, or done by a task_done in a
/// channel) are not redone; the primes it holds are flushed first, then those chunks are
/// done; a file changed since the snapshot starts over.
fn recovery_resumes_from_a_snapshot() {
    let mut m = machine();
    ready(&mut m, "a.txt", 2000, 0); // two chunks
    ready(&mut m, "b.txt", 10, 0);
    let mut a = assigned(&register(&mut m, 1, "w1", 0));
    a.extend(assigned(&register(&mut m, 2, "w2", 0)));
    let on = |f: &str, c: u32| {
        a.iter()
            .find(|(_, x)| x.file == f && x.chunk == c)
            .map(|(conn, x)| (*conn, x.attempt.clone()))
            .expect("assigned")
    };
    let (c0, a0) = on("a.txt", 0);
    let (c1, a1) = on("a.txt", 1);
    // Chunk 0 finished before the snapshot (its primes in the buffer, not flushed).
    m.handle(
        Event::Message {
            conn: c0,
            msg: WorkerMsg::Primes {
                attempt: a0.clone(),
                small: vec![11],
                big: vec![],
            },
        },
        at(1),
    );
    // w1 takes b.txt when chunk 0 is done.
    let b = assigned(&m.handle(
        Event::Message {
            conn: c0,
            msg: done_msg(&a0, 1),
        },
        at(2),
    ));
    assert_eq!(b.len(), 1);
    let b_task = TaskProgress {
        attempt: b[0].1.attempt.clone(),
        file: "b.txt".into(),
        chunk: 0,
        phase: "testing".into(),
        bytes_done: 0,
        bytes_total: 10,
    };
    m.handle(Event::SnapshotDue, at(3));
    // Chunk 1 finishes in the channel, before w2's marker.
    for msg in [
        WorkerMsg::Primes {
            attempt: a1.clone(),
            small: vec![13],
            big: vec![],
        },
        done_msg(&a1, 1),
    ] {
        m.handle(Event::Message { conn: c1, msg }, at(4));
    }
    let mut written = Vec::new();
    for (conn, id, tasks) in [(c0, "w1", vec![b_task]), (c1, "w2", vec![])] {
        written.extend(m.handle(
            Event::Message {
                conn,
                msg: WorkerMsg::Marker {
                    snapshot: 1,
                    state: state(id, tasks),
                },
            },
            at(5),
        ));
    }
    let snap = snapshot_of(&written);
    let v = crate::verify::verify(&snap);
    assert!(v.consistent(), "{v:?}");

    // A new coordinator: a.txt unchanged, b.txt changed since.
    let mut r = machine();
    let current: HashMap<String, Fingerprint> = [
        ("a.txt".to_string(), fp(2000)),
        ("b.txt".to_string(), fp(11)),
    ]
    .into();
    assert_eq!(r.recover(&snap, &current, at(0)), 1, "only a.txt resumes");
    assert_eq!(r.recovered_primes(), 2);
    let flush = r.handle(Event::FlushDue, at(1));
    let [Action::Flush(p)] = &flush[..] else {
        panic!("{flush:?}")
    };
    let mut small = p.small.clone();
    small.sort();
    assert_eq!(small, vec![11, 13], "the buffer's and the channel's primes");
    assert_eq!(p.done.len(), 2, "both chunks done once durable");
    assert!(
        assigned(&register(&mut r, 1, "w1", 2)).is_empty(),
        "nothing of a.txt is redone"
    );
    let reports = r.handle(Event::Flushed(p.done.clone()), at(3));
    assert!(
        matches!(&reports[..], [Action::WriteReport(x)] if x.file == "a.txt" && x.status == ReportStatus::Done)
    );
}

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
/// a consistent cut, and the durable primes are exactly those of the files.
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
    let mut m = machine();
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
    let mut durable: BTreeSet<u64> = BTreeSet::new();
    let mut reports: BTreeMap<String, ReportStatus> = BTreeMap::new();
    let mut snapshots = 0;
    let mut paused_until: HashMap<usize, u64> = HashMap::new();
    let (mut cuts, mut pauses) = (0, 0);
    let mut now = 0u64;
    let route = |actions: Vec<Action>,
                 workers: &mut Vec<SimWorker>,
                 durable: &mut BTreeSet<u64>,
                 pending_flush: &mut Vec<Pending>,
                 reports: &mut BTreeMap<String, ReportStatus>,
                 snapshots: &mut usize| {
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
                    reports.insert(r.file.clone(), r.status);
                }
                Action::Flush(p) => pending_flush.push(p),
                Action::FlushSoon => {}
                Action::WriteSnapshot(s) => {
                    let v = crate::verify::verify(&s);
                    assert!(
                        v.consistent(),
                        "seed {seed}: snapshot {} is not a consistent cut: {v:?}",
                        s.seq
                    );
                    *snapshots += 1;
                    let _ = durable;
                }
            }
        }
    };
    while reports.len() < files.len() || reports.values().any(|s| *s != ReportStatus::Done) {
        now += 10;
        assert!(
            now < 600_000,
            "seed {seed}: the simulated job did not finish: {reports:?}"
        );
        let mut flushes = Vec::new();
        // Workers: connect, heartbeat, work one task per step, answer markers.
        for i in 0..workers.len() {
            if paused_until.get(&i).is_some_and(|t| *t > now) {
                continue;
            }
            if workers[i].conn.is_none() {
                next_conn += 1;
                workers[i].conn = Some(next_conn);
                let id = workers[i].id.clone();
                let acts = register(&mut m, next_conn, &id, now);
                route(
                    acts,
                    &mut workers,
                    &mut durable,
                    &mut flushes,
                    &mut reports,
                    &mut snapshots,
                );
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
                    route(
                        acts,
                        &mut workers,
                        &mut durable,
                        &mut flushes,
                        &mut reports,
                        &mut snapshots,
                    );
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
        for (_, conn, msg) in due {
            let acts = m.handle(Event::Message { conn, msg }, at(now));
            route(
                acts,
                &mut workers,
                &mut durable,
                &mut flushes,
                &mut reports,
                &mut snapshots,
            );
        }
        // Timers.
        if now % 30 == 0 {
            let acts = m.handle(Event::Tick, at(now));
            route(
                acts,
                &mut workers,
                &mut durable,
                &mut flushes,
                &mut reports,
                &mut snapshots,
            );
        }
        if now % 100 == 0 {
            let acts = m.handle(Event::SnapshotDue, at(now));
            route(
                acts,
                &mut workers,
                &mut durable,
                &mut flushes,
                &mut reports,
                &mut snapshots,
            );
        }
        if now % 50 == 0 {
            let acts = m.handle(Event::FlushDue, at(now));
            route(
                acts,
                &mut workers,
                &mut durable,
                &mut flushes,
                &mut reports,
                &mut snapshots,
            );
        }
        for p in flushes {
            durable.extend(p.small.iter().copied());
            let acts = m.handle(Event::Flushed(p.done), at(now));
            let mut more = Vec::new();
            route(
                acts,
                &mut workers,
                &mut durable,
                &mut more,
                &mut reports,
                &mut snapshots,
            );
            assert!(more.is_empty());
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
    assert_eq!(
        durable, want,
        "seed {seed}: the durable primes are exactly the files'"
    );
    assert!(snapshots > 0, "seed {seed}: snapshots were taken");
    let lost = m.core().status(at(now)).totals.workers_lost;
    eprintln!(
        "seed {seed}: {} ms simulated, {snapshots} snapshots, {cuts} links cut, {pauses} pauses, {lost} workers lost, {} primes",
        now,
        durable.len()
    );
    assert!(cuts + pauses > 0, "seed {seed}: faults were injected");
}
