//! The machine event by event, asserting the exact actions (in the style of openraft's
//! engine tests). The helpers here serve the simulation too (`sim_tests`).

use std::collections::HashMap;

use proto::msg::{Assignment, TaskProgress, WorkerState};

use super::*;
use crate::core::{CoreConfig, ReportStatus};
use crate::snapshot::WorkerEntry;

pub(super) fn cfg() -> CoreConfig {
    CoreConfig {
        heartbeat_ms: 100,
        missed_heartbeats: 3,
        max_inflight: 1,
        small_inflight_bytes: 0,
        max_failures: 3,
        chunk_bytes: 1000,
        retry_ms: 50,
        failed_retry_ms: 1000,
        term: None,
    }
}

pub(super) fn at(ms: u64) -> Now {
    Now {
        ms,
        wall: chrono::Utc::now(),
    }
}

pub(super) fn fp(size: u64) -> Fingerprint {
    Fingerprint {
        size,
        mtime_ns: 1,
        ctime_ns: 1,
        inode: 1,
    }
}

pub(super) fn machine() -> Coordinator {
    Coordinator::new(Core::new(cfg(), "s".into()), Snapshots::new(500, 1))
}

pub(super) fn register(m: &mut Coordinator, conn: u64, id: &str, now: u64) -> Vec<Action> {
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

pub(super) fn done_msg(attempt: &str, primes: u64) -> WorkerMsg {
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
        answer: None,
        first_prime: None,
        last_prime: None,
    })
}

pub(super) fn state(id: &str, in_progress: Vec<TaskProgress>) -> WorkerState {
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
        vec![Action::FlushNow],
        "the only chunk: nothing else is under way"
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
/// Two flushes under way (the flusher proposes the next before the last applies): answered
/// in the order taken, a first handed back and then a second keep their order in front of
/// what arrives later, so a segment's primes are never flushed out of order.
fn two_flushes_under_way_handed_back_in_order() {
    let mut m = machine();
    ready(&mut m, "a.txt", 10, 0);
    let a = assigned(&register(&mut m, 1, "w1", 0));
    let attempt = a[0].1.attempt.clone();
    let primes = |m: &mut Coordinator, small: Vec<u64>, t: u64| {
        m.handle(
            Event::Message {
                conn: 1,
                msg: WorkerMsg::Primes {
                    attempt: attempt.clone(),
                    small,
                    big: vec![],
                },
            },
            at(t),
        );
    };
    primes(&mut m, vec![3, 5], 1);
    let first = m.take_flush().expect("a first flush");
    primes(&mut m, vec![7, 11], 2);
    let second = m
        .take_flush()
        .expect("a second flush, the first still under way");
    primes(&mut m, vec![13], 3);
    assert!(m.handle(Event::FlushFailed(first), at(4)).is_empty());
    assert!(m.handle(Event::FlushFailed(second), at(5)).is_empty());
    let again = m.take_flush().expect("handed out again");
    assert_eq!(
        again.small,
        vec![3, 5, 7, 11, 13],
        "in the order they arrived"
    );
    assert_eq!(m.take_flush(), None);
}

#[test]
/// A completion asks for a flush soon (completions close together share one); the last one
/// under way, with nothing assigned or queued after it, asks for one at once.
fn the_last_completion_under_way_flushes_at_once() {
    let mut m = machine();
    ready(&mut m, "a.txt", 2500, 0);
    let mut a = assigned(&register(&mut m, 1, "w1", 0));
    let mut asks = vec![];
    for t in 1..=3 {
        let [(_, x)] = &a[..] else {
            panic!("one chunk assigned at a time, got {a:?}");
        };
        let actions = m.handle(
            Event::Message {
                conn: 1,
                msg: done_msg(&x.attempt, 0),
            },
            at(t),
        );
        asks.push(
            actions
                .iter()
                .filter(|a| matches!(a, Action::FlushSoon | Action::FlushNow))
                .cloned()
                .collect::<Vec<_>>(),
        );
        a = assigned(&actions);
    }
    assert!(a.is_empty(), "three chunks of 1000 bytes: {a:?}");
    assert_eq!(
        asks,
        vec![
            vec![Action::FlushSoon],
            vec![Action::FlushSoon],
            vec![Action::FlushNow]
        ]
    );
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
    let want = FlushBatch {
        small: vec![3, 5],
        big: vec![],
        done: vec![ChunkKey::new(&Key::file("a.txt"), 1, 0)],
        ..FlushBatch::default()
    };
    assert_eq!(
        m.handle(Event::FlushDue, at(3)),
        vec![Action::Flush(want.clone())]
    );
    assert!(m.handle(Event::FlushFailed(want.clone()), at(4)).is_empty());
    // The shell's pull gives the same batch as the event, once.
    assert_eq!(
        m.take_flush(),
        Some(want.clone()),
        "handed out again (pulled)"
    );
    assert_eq!(m.take_flush(), None, "taken once");
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
    assert_eq!(
        m.core().status(at(7)).files_done,
        0,
        "not done before its report is on disk"
    );
    assert!(m
        .handle(
            Event::ReportWritten {
                key: Key::file("a.txt"),
                source: fp(10)
            },
            at(8)
        )
        .is_empty());
    assert_eq!(m.core().status(at(9)).files_done, 1);
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
    let current: HashMap<Key, Fingerprint> =
        [(Key::file("a.txt"), fp(2000)), (Key::file("b.txt"), fp(11))].into();
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

#[test]
/// A job resumed from a snapshot (a restart, a new leader) keeps the time its first task
/// was handed out as its report's `started_at`, not the resumption's time (issue 27,
/// defect 5: the report said the last takeover's time).
fn resumed_job_keeps_its_start_time() {
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let when = |ms: u64| Now {
        ms,
        wall: t0 + chrono::Duration::milliseconds(ms as i64),
    };
    let spec = proto::jobs::JobSpec::new("count", &[("lo", 0), ("hi", 100)]);
    let job = || crate::core::GenJob::new("c".into(), spec.clone(), 1000).expect("plan");
    let mut m = machine();
    m.handle(
        Event::Jobs {
            ready: vec![("c".into(), fp(1), Ok(job()))],
            removed: vec![],
        },
        when(0),
    );
    let a = assigned(&m.handle(
        Event::Register {
            conn: 1,
            worker_id: "w1".into(),
            threads: 1,
            instance: 1,
        },
        when(10),
    ));
    assert!(!a.is_empty(), "the job's task is handed out");
    m.handle(Event::SnapshotDue, when(20));
    let snap = {
        let done = m.handle(
            Event::Message {
                conn: 1,
                msg: WorkerMsg::Marker {
                    snapshot: 1,
                    state: state(
                        "w1",
                        vec![TaskProgress {
                            attempt: a[0].1.attempt.clone(),
                            file: a[0].1.file.clone(),
                            chunk: 0,
                            phase: "testing".into(),
                            bytes_done: 0,
                            bytes_total: 0,
                        }],
                    ),
                },
            },
            when(30),
        );
        snapshot_of(&done)
    };
    // An hour later a new leader resumes the job from that snapshot and finishes it.
    let later = 3_600_000;
    let mut r = machine();
    let key = Key::job("c");
    r.set_job_plans([(key.clone(), job())].into());
    let current: HashMap<Key, Fingerprint> = [(key, fp(1))].into();
    assert_eq!(r.recover(&snap, &current, when(later)), 1);
    let flush = r.handle(Event::FlushDue, when(later));
    if let [Action::Flush(p)] = &flush[..] {
        r.handle(Event::Flushed(p.done.clone()), when(later));
    }
    let b = assigned(&register(&mut r, 1, "w1", later + 1));
    assert_eq!(b.len(), 1, "{b:?}");
    let mut done = done_msg(&b[0].1.attempt, 0);
    if let WorkerMsg::TaskDone(d) = &mut done {
        d.answer = Some("25".into());
    }
    r.handle(Event::Message { conn: 1, msg: done }, when(later + 2));
    let flush = r.handle(Event::FlushDue, when(later + 3));
    let [Action::Flush(p)] = &flush[..] else {
        panic!("{flush:?}")
    };
    let out = r.handle(Event::Flushed(p.done.clone()), when(later + 4));
    let report = out
        .iter()
        .find_map(|a| match a {
            Action::WriteJobReport(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a job report: {out:?}"));
    assert_eq!(
        report.started_at,
        when(10).wall.to_rfc3339(),
        "started when first handed out, not at the takeover"
    );
}

#[test]
/// A task taken back from a worker (work stealing) and its late result: a snapshot begun
/// after the move does not record the stale result in the channel, so the cut stays
/// consistent (each task in exactly one place).
fn stolen_task_leaves_snapshots_consistent() {
    let mut m = Coordinator::new(
        Core::new(
            CoreConfig {
                max_inflight: 2,
                chunk_bytes: 1_000_000,
                ..cfg()
            },
            "s".into(),
        ),
        Snapshots::new(500, 1),
    );
    ready(&mut m, "a.txt", 10, 0);
    ready(&mut m, "b.txt", 10, 0);
    let a = assigned(&register(&mut m, 1, "w1", 0));
    assert_eq!(a.len(), 2);
    let moved = register(&mut m, 2, "w2", 1);
    let b = assigned(&moved);
    assert_eq!(b.len(), 1, "b.txt moves to the idle w2: {moved:?}");
    let stale = a[1].1.attempt.clone();
    m.handle(Event::SnapshotDue, at(2));
    // w1 had finished b.txt before it saw the cancel: its result arrives, stale.
    m.handle(
        Event::Message {
            conn: 1,
            msg: done_msg(&stale, 1),
        },
        at(3),
    );
    let mut written = Vec::new();
    for (conn, id, x) in [(1, "w1", &a[0].1), (2, "w2", &b[0].1)] {
        let task = TaskProgress {
            attempt: x.attempt.clone(),
            file: x.file.clone(),
            chunk: 0,
            phase: "testing".into(),
            bytes_done: 0,
            bytes_total: 10,
        };
        written.extend(m.handle(
            Event::Message {
                conn,
                msg: WorkerMsg::Marker {
                    snapshot: 1,
                    state: state(id, vec![task]),
                },
            },
            at(4),
        ));
    }
    let snap = snapshot_of(&written);
    let v = crate::verify::verify(&snap);
    assert!(v.consistent(), "{v:?}");
}
