use super::*;

fn cfg() -> CoreConfig {
    CoreConfig {
        heartbeat_ms: 100,
        missed_heartbeats: 3,
        max_inflight: 1,
        small_inflight_bytes: 0,
        max_failures: 2,
        chunk_bytes: 1000,
        retry_ms: 50,
        failed_retry_ms: 1000,
        term: None,
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

fn assigns(actions: &[Action]) -> Vec<(u64, Assignment)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(c, CoordMsg::Assign(x)) => Some((*c, x.clone())),
            _ => None,
        })
        .collect()
}

fn done(attempt: &str, lines: u64, primes: u64) -> WorkerMsg {
    WorkerMsg::TaskDone(TaskDone {
        attempt: attempt.into(),
        version: "v".into(),
        size: 0,
        lines,
        numbers: lines,
        blank: 0,
        invalid: 1,
        first_invalid: vec![InvalidLine {
            line: 2,
            reason: "x".into(),
        }],
        primes,
        answer: None,
        first_prime: None,
        last_prime: None,
    })
}

#[test]
/// A file is split into chunks with contiguous ranges, handed out, flushed, then reported
/// with line numbers made absolute.
fn chunks_flow_to_a_report() {
    let mut c = Core::new(cfg(), "s".into());
    assert!(
        c.file_ready("a.txt", fp(2500), at(0)).is_empty(),
        "no worker yet"
    );
    let a = assigns(&c.register(1, "w1", at(0)));
    assert_eq!(a.len(), 1, "max_inflight 1");
    assert_eq!((a[0].1.start, a[0].1.end, a[0].1.chunks), (0, 833, 3));
    let b = assigns(&c.register(2, "w2", at(0)));
    assert_eq!((b[0].1.start, b[0].1.end), (833, 1666));
    c.message(
        1,
        WorkerMsg::Primes {
            attempt: a[0].1.attempt.clone(),
            small: vec![2, 3],
            big: vec![],
        },
        at(1),
    );
    let next = assigns(&c.message(1, done(&a[0].1.attempt, 10, 2), at(1)));
    assert_eq!(
        (next[0].1.start, next[0].1.end),
        (1666, 2500),
        "last chunk ends at the size"
    );
    c.message(2, done(&b[0].1.attempt, 20, 0), at(2));
    c.message(1, done(&next[0].1.attempt, 5, 1), at(3));
    let p = c.take_pending();
    assert_eq!(p.small, vec![2, 3]);
    assert_eq!(p.done.len(), 3);
    let reports: Vec<Report> = c
        .flushed(p.done, at(4))
        .into_iter()
        .filter_map(|a| match a {
            Action::WriteReport(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!((r.lines, r.primes_found, r.invalid_lines.count), (35, 3, 3));
    let lines: Vec<u64> = r.invalid_lines.first.iter().map(|i| i.line).collect();
    assert_eq!(
        lines,
        vec![2, 12, 32],
        "chunk-relative line numbers made absolute"
    );
    assert_eq!(r.workers, vec!["w1".to_string(), "w2".to_string()]);
}

#[test]
/// A disconnect requeues at once; the late result of the lost attempt is ignored.
fn disconnect_requeues_and_stale_results_are_ignored() {
    let mut c = Core::new(cfg(), "s".into());
    c.file_ready("a.txt", fp(10), at(0));
    let a = assigns(&c.register(1, "w1", at(0)));
    c.register(2, "w2", at(0));
    let re = assigns(&c.disconnected(1, at(5)));
    assert_eq!(re.len(), 1);
    assert_eq!(re[0].0, 2, "handed to the other worker");
    assert_eq!((c.totals.workers_lost, c.totals.tasks_requeued), (1, 1));
    // w1 comes back on a new connection and sends its old result: ignored.
    c.register(3, "w1", at(6));
    c.message(
        3,
        WorkerMsg::Primes {
            attempt: a[0].1.attempt.clone(),
            small: vec![7],
            big: vec![],
        },
        at(6),
    );
    c.message(3, done(&a[0].1.attempt, 1, 1), at(6));
    assert!(c.take_pending().small.is_empty());
    assert_eq!(c.totals.stale_messages_ignored, 2);
}

#[test]
/// A silent worker is declared dead after the missed heartbeats and its task moves on.
fn missed_heartbeats() {
    let mut c = Core::new(cfg(), "s".into());
    c.file_ready("a.txt", fp(10), at(0));
    c.register(1, "w1", at(0));
    c.register(2, "w2", at(0));
    c.message(
        2,
        WorkerMsg::Heartbeat {
            busy: vec![],
            bytes_done: 0,
            bytes_total: 0,
        },
        at(250),
    );
    assert!(assigns(&c.tick(at(250))).is_empty(), "not yet");
    c.message(
        2,
        WorkerMsg::Heartbeat {
            busy: vec![],
            bytes_done: 0,
            bytes_total: 0,
        },
        at(301),
    );
    let actions = c.tick(at(301));
    assert!(
        actions.iter().any(|a| matches!(a, Action::Close(1, _))),
        "{actions:?}"
    );
    assert_eq!(assigns(&actions)[0].0, 2);
}

#[test]
/// A coordinator that was not running (ticks stopped far longer than the heartbeat limit)
/// does not hold the pause against its workers; real silence afterwards still counts.
fn coordinator_stall_is_not_worker_silence() {
    let mut c = Core::new(cfg(), "s".into());
    c.file_ready("a.txt", fp(10), at(0));
    c.register(1, "w1", at(0));
    for t in (25..=100).step_by(25) {
        assert!(c.tick(at(t)).is_empty(), "a normal tick at {t}");
    }
    // Paused for 20 s: the first tick after it closes nobody.
    let actions = c.tick(at(20_100));
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Close(..))),
        "{actions:?}"
    );
    // The worker then stays silent, with the coordinator running: declared dead once its
    // silence while the coordinator ran (100 ms before the pause, then after it) passes the
    // limit of 300 ms.
    let mut t = 20_100;
    while t < 20_250 {
        t += 25;
        assert!(
            !c.tick(at(t)).iter().any(|a| matches!(a, Action::Close(..))),
            "still within the limit at {t}"
        );
    }
    let mut closed = false;
    while t < 20_400 && !closed {
        t += 25;
        closed = c
            .tick(at(t))
            .iter()
            .any(|a| matches!(a, Action::Close(1, _)));
    }
    assert!(closed, "silence after the pause is still detected");
}

#[test]
/// Retryable failures are retried after a pause; past the limit the file is reported failed.
fn failures_retry_then_report() {
    let mut c = Core::new(cfg(), "s".into());
    c.file_ready("gone.txt", fp(10), at(0));
    let a = assigns(&c.register(1, "w1", at(0)));
    let fail = |attempt: &str| WorkerMsg::TaskFailed {
        attempt: attempt.into(),
        reason: "not found".into(),
        retryable: true,
    };
    assert!(
        assigns(&c.message(1, fail(&a[0].1.attempt), at(1))).is_empty(),
        "retry waits"
    );
    let b = assigns(&c.tick(at(60)));
    assert_eq!(b.len(), 1, "retried after the pause");
    let actions = c.message(1, fail(&b[0].1.attempt), at(61));
    let report = actions.iter().find_map(|a| match a {
        Action::WriteReport(r) => Some(r.clone()),
        _ => None,
    });
    let report = report.expect("reported after max failures");
    assert_eq!(report.status, ReportStatus::Failed);
    assert!(
        report.errors[0].contains("not found"),
        "{:?}",
        report.errors
    );
    assert_eq!(
        c.status(at(62)).files_failed,
        1,
        "counted failed while it is"
    );
    // The cause may go (file servers back): the failed file is tried again after the pause.
    assert!(assigns(&c.tick(at(900))).is_empty(), "not before the pause");
    let again = assigns(&c.tick(at(1062)));
    assert_eq!(again.len(), 1, "retried after failed_retry_ms");
    assert_eq!(c.status(at(1062)).files_failed, 0);
    let actions = c.message(1, done(&again[0].1.attempt, 1, 0), at(1063));
    assert!(actions.is_empty());
    let pending = c.take_pending();
    let r = c.flushed(pending.done, at(1064));
    assert!(
        matches!(&r[..], [Action::WriteReport(r)] if r.status == ReportStatus::Done),
        "{r:?}"
    );
    // Every failed round doubles the pause: 1 s, then 2 s.
    let mut c = Core::new(cfg(), "s".into());
    c.file_ready("gone.txt", fp(10), at(0));
    let mut next = assigns(&c.register(1, "w1", at(0)));
    let mut t = 0;
    let mut reported_at = Vec::new();
    while reported_at.len() < 2 {
        t += 10;
        if let Some((_, a)) = next.pop() {
            let actions = c.message(1, fail(&a.attempt), at(t));
            if actions.iter().any(|x| matches!(x, Action::WriteReport(_))) {
                reported_at.push(t);
            }
        }
        c.message(
            1,
            WorkerMsg::Heartbeat {
                busy: vec![],
                bytes_done: 0,
                bytes_total: 0,
            },
            at(t),
        );
        next.extend(assigns(&c.tick(at(t))));
        assert!(
            t < 10_000,
            "two failed rounds within 10 s: {reported_at:?} {next:?}"
        );
    }
    let first_retry = reported_at[0] + 1000;
    let second_gap = reported_at[1] - reported_at[0];
    assert!(
        (1000..1200).contains(&second_gap),
        "round 2 began {first_retry} ms in, {second_gap} ms after round 1"
    );
    assert!(
        assigns(&c.tick(at(reported_at[1] + 1990))).is_empty(),
        "round 3 waits 2 s"
    );
    assert_eq!(assigns(&c.tick(at(reported_at[1] + 2010))).len(), 1);
}

#[test]
/// Done reports found (at start-up, or with a file server's late first listing) mark their
/// files reported with the report's content version, so the listing's own fingerprint of
/// the same content is taken as that file; a file the core already tracks is left alone.
fn reports_found_mark_files_done_and_leave_tracked_ones() {
    let mut c = Core::new(cfg(), "s".into());
    c.file_ready("busy.txt", fp(30), at(0));
    let found = |file: &str, size: u64| FoundReport {
        file: file.into(),
        source: fp(size),
        chunks: 1,
        numbers: 5,
        version: Some(format!("v-{file}")),
    };
    c.reports_found(vec![found("a.txt", 10), found("busy.txt", 99)]);
    assert!(!c.in_progress(&Key::file("a.txt")), "a.txt is done");
    assert_eq!(c.known(&Key::file("a.txt")), Some(fp(10)));
    // Another server's fingerprint of the same content is the reported file.
    let elsewhere = Fingerprint { inode: 7, ..fp(10) };
    assert_eq!(c.identify("a.txt", elsewhere, Some("v-a.txt")), fp(10));
    assert_eq!(c.identify("a.txt", elsewhere, Some("other")), elsewhere);
    // busy.txt was queued: the report read does not replace what the core knows.
    assert_eq!(c.known(&Key::file("busy.txt")), Some(fp(30)));
    assert!(c.in_progress(&Key::file("busy.txt")));
}

#[test]
/// A changed file cancels the running attempt and starts over.
fn changed_file_restarts() {
    let mut c = Core::new(cfg(), "s".into());
    c.file_ready("a.txt", fp(10), at(0));
    let a = assigns(&c.register(1, "w1", at(0)));
    let actions = c.file_ready("a.txt", fp(20), at(1));
    assert!(actions.iter().any(
        |x| matches!(x, Action::Send(1, CoordMsg::Cancel { attempt }) if *attempt == a[0].1.attempt)
    ));
    let b = assigns(&actions);
    assert_eq!(b[0].1.size, 20);
}

#[test]
/// An input whose report could not exist (a name of more than 250 bytes: `<name>.json`
/// would be longer than a file name holds) is not tested: failed at once with the reason,
/// never retried; 250 bytes are tested, in a subfolder too.
fn a_name_too_long_for_its_report_is_not_tested() {
    let mut c = Core::new(cfg(), "s".into());
    let long = "n".repeat(251);
    assert!(c
        .file_ready(&format!("sub/{long}"), fp(10), at(0))
        .is_empty());
    assert!(
        assigns(&c.register(1, "w1", at(0))).is_empty(),
        "nothing to test"
    );
    let st = c.status(at(1));
    assert_eq!((st.files_failed, st.files_queued), (1, 0));
    let why = st.files[0].error.clone().unwrap_or_default();
    assert!(
        why.contains("251 bytes") && why.contains("at most 250"),
        "{why}"
    );
    let later = 3_600_000;
    c.tick(at(later));
    assert!(
        assigns(&c.register(2, "w2", at(later))).is_empty(),
        "never retried"
    );
    assert!(
        c.file_ready(&format!("sub/{long}"), fp(10), at(later))
            .is_empty(),
        "the same version again changes nothing"
    );
    let fits = "f".repeat(250);
    let a = assigns(&c.file_ready(&format!("sub/{fits}"), fp(10), at(later)));
    assert_eq!(a.len(), 1, "250 bytes are tested");
}

#[test]
/// Oversized batches and malformed big primes close the connection and requeue the work.
fn hostile_primes_batches() {
    assert!(bad_batch(&[2, 3], &["18446744073709551629".into()]).is_none());
    for bad in [
        "18446744073709551615",
        "0184467440737095516290",
        "12\n34567890123456789012",
        "-18446744073709551629",
        "1e30000000000000000000",
    ] {
        assert!(bad_batch(&[], &[bad.to_string()]).is_some(), "{bad:?}");
    }
    assert!(bad_batch(&vec![7; proto::msg::MAX_PRIMES_PER_BATCH + 1], &[]).is_some());
    let mut c = Core::new(cfg(), "s".into());
    c.file_ready("a.txt", fp(10), at(0));
    let a = assigns(&c.register(1, "w1", at(0)));
    let actions = c.message(
        1,
        WorkerMsg::Primes {
            attempt: a[0].1.attempt.clone(),
            small: vec![],
            big: vec!["12\n3".into()],
        },
        at(1),
    );
    assert!(actions.iter().any(|x| matches!(x, Action::Close(1, _))));
    assert!(c.take_pending().big.is_empty(), "nothing of it was kept");
    assert_eq!(
        assigns(&c.register(2, "w2", at(2))).len(),
        1,
        "the chunk was requeued"
    );
}

#[test]
/// Chunk counts round to the nearest size and never leave a sliver; ranges tile the file.
fn chunking() {
    assert_eq!(chunk_count(0, 100), 1);
    assert_eq!(chunk_count(149, 100), 1);
    assert_eq!(chunk_count(150, 100), 2);
    assert_eq!(
        chunk_count((64 << 20) + 18, 64 << 20),
        1,
        "no 18-byte tail chunk"
    );
    assert_eq!(chunk_count(2 << 30, 64 << 20), 32);
    for (size, n) in [(2500u64, 3u64), (7, 3), (1 << 40, 17)] {
        let mut at = 0;
        for i in 0..n {
            let (s, e) = chunk_range(size, n, i);
            assert_eq!(s, at, "contiguous");
            assert!(e >= s);
            at = e;
        }
        assert_eq!(at, size, "the last chunk ends at the size");
    }
}

#[test]
/// A worker holds up to 4 x max_inflight assignments while they are small, and only
/// max_inflight once what it holds reaches small_inflight_bytes.
fn small_assignments_fill_a_deeper_pipeline() {
    let small = CoreConfig {
        max_inflight: 2,
        small_inflight_bytes: 1000,
        chunk_bytes: 1_000_000,
        ..cfg()
    };
    let mut c = Core::new(small.clone(), "s".into());
    for i in 0..100 {
        c.file_ready(&format!("f{i}.txt"), fp(10), at(0));
    }
    assert_eq!(
        assigns(&c.register(1, "w1", at(0))).len(),
        SMALL_INFLIGHT_FACTOR * 2,
        "32 x 2 tiny files"
    );
    let mut c = Core::new(small.clone(), "s".into());
    for i in 0..100 {
        c.file_ready(&format!("f{i}.txt"), fp(100), at(0));
    }
    assert_eq!(
        assigns(&c.register(1, "w1", at(0))).len(),
        10,
        "small files while they add up to under 1000 bytes"
    );

    let mut c = Core::new(small, "s".into());
    for i in 0..5 {
        c.file_ready(&format!("g{i}.txt"), fp(600), at(0));
    }
    assert_eq!(
        assigns(&c.register(1, "w1", at(0))).len(),
        2,
        "1200 bytes held: no more than max_inflight"
    );

    // A worker testing 2 tasks at once holds twice as many.
    let mut c = Core::new(
        CoreConfig {
            max_inflight: 2,
            small_inflight_bytes: 1000,
            chunk_bytes: 1_000_000,
            ..cfg()
        },
        "s".into(),
    );
    for i in 0..9 {
        c.file_ready(&format!("h{i}.txt"), fp(600), at(0));
    }
    assert_eq!(
        assigns(&c.register_with_threads(1, "w1", 2, 0, at(0))).len(),
        4
    );
}

#[test]
/// An id in use by a live worker is refused to another process; the same process
/// reconnecting replaces its old connection; a silent holder loses the id.
fn worker_ids_are_not_shared() {
    let mut c = Core::new(cfg(), "s".into());
    c.file_ready("a.txt", fp(10), at(0));
    let first = c.register_with_threads(1, "w1", 1, 111, at(0));
    assert_eq!(assigns(&first).len(), 1);
    let refused = c.register_with_threads(2, "w1", 1, 222, at(10));
    assert!(
        matches!(&refused[..], [Action::Send(2, CoordMsg::Refused { reason }), Action::Close(2, _)] if reason.contains("already in use")),
        "{refused:?}"
    );
    assert_eq!(c.worker_of(1), Some("w1"), "the first keeps its id");
    assert_eq!(c.worker_of(2), None);
    // The same process on a new connection: the old one is closed, its task requeued.
    let again = c.register_with_threads(3, "w1", 1, 111, at(20));
    assert!(
        again.iter().any(|a| matches!(a, Action::Close(1, _))),
        "{again:?}"
    );
    assert_eq!(assigns(&again).len(), 1, "the task is handed out again");
    assert_eq!(c.worker_of(3), Some("w1"));
    // Another process, once the holder has been silent past the limit (300 ms).
    let late = c.register_with_threads(4, "w1", 1, 333, at(400));
    assert!(
        late.iter().any(|a| matches!(a, Action::Close(3, _))),
        "{late:?}"
    );
    assert_eq!(c.worker_of(4), Some("w1"));
}

#[test]
/// A `primes` job's primes travel as runs of their segment (never the plain buffer), its
/// finished segments as ledger entries; a second job over the same segments is done at once
/// from them; primes outside the segment or out of order are refused.
fn primes_segments_flow_as_runs() {
    use proto::jobs::JobSpec;
    let mut c = Core::new(cfg(), "s".into());
    let spec = JobSpec::new("primes", &[("lo", 10), ("hi", 29)]);
    let job = |name: &str| GenJob::new(name.into(), spec.clone(), 10).expect("plan");
    c.job_ready(job("a"), fp(1), at(0));
    let a = assigns(&c.register(1, "w1", at(0)));
    assert_eq!(a.len(), 1);
    let (lo, hi) = match a[0].1.work {
        Some(proto::msg::Work::Primes { lo, hi }) => (lo, hi),
        ref w => panic!("not a primes task: {w:?}"),
    };
    assert_eq!((lo, hi), (10, 19));
    let primes = |small: Vec<u64>| WorkerMsg::Primes {
        attempt: a[0].1.attempt.clone(),
        small,
        big: vec![],
    };
    assert!(c.message(1, primes(vec![11, 13]), at(1)).is_empty());
    assert!(c.message(1, primes(vec![17, 19]), at(1)).is_empty());
    let mut d = done(&a[0].1.attempt, 0, 4);
    if let WorkerMsg::TaskDone(t) = &mut d {
        t.first_prime = Some("11".into());
        t.last_prime = Some("19".into());
    }
    let next = assigns(&c.message(1, d, at(2)));
    let p = c.take_pending();
    assert!(
        p.small.is_empty(),
        "segment primes never go to the plain buffer"
    );
    assert_eq!(
        p.runs,
        vec![crate::ranges::Run {
            lo: 10,
            hi: 19,
            primes: vec![11, 13, 17, 19]
        }]
    );
    assert_eq!(
        p.finished.iter().map(|r| r.covers()).collect::<Vec<_>>(),
        vec![Some((10, 19))]
    );
    c.flushed(p.done, at(3));
    // The second segment: one prime out of place closes the connection.
    let bad = WorkerMsg::Primes {
        attempt: next[0].1.attempt.clone(),
        small: vec![29, 23],
        big: vec![],
    };
    let actions = c.message(1, bad, at(4));
    assert!(
        matches!(&actions[0], Action::Close(1, why) if why.contains("out of order")),
        "{actions:?}"
    );
    // A job over the same first segment finds it durable: only [20, 29] is left to do.
    assert_eq!(
        c.done_work(&proto::msg::Work::Primes { lo: 10, hi: 19 })
            .map(|(r, _)| r.primes),
        Some(4)
    );
    c.job_ready(job("b"), fp(1), at(5));
    let b = assigns(&c.register(2, "w2", at(5)));
    let left: Vec<_> = b.iter().map(|(_, x)| x.work.clone()).collect();
    assert!(
        left.iter()
            .all(|w| *w == Some(proto::msg::Work::Primes { lo: 20, hi: 29 })),
        "{left:?}"
    );
}

#[test]
/// Issue 27, defect 2: no task waits behind another on one worker while a worker is idle.
/// A worker holding a task it has not started (behind the one its thread tests) gives it
/// up to a worker that becomes idle: `cancel` to the first, the same chunk assigned to the
/// second; the first's late result is ignored. Nothing is taken from a worker that tests
/// all it holds, nor while the queue has work ready.
fn idle_workers_take_waiting_tasks() {
    let two = CoreConfig {
        max_inflight: 2,
        chunk_bytes: 1_000_000,
        ..cfg()
    };
    let mut c = Core::new(two, "s".into());
    c.file_ready("slow10.txt", fp(500), at(0));
    c.file_ready("slow11.txt", fp(500), at(0));
    let a = assigns(&c.register(1, "w1", at(0)));
    assert_eq!(a.len(), 2, "w1 holds both: slow11 waits behind slow10");
    let waiting = a[1].1.clone();
    assert_eq!(waiting.file, "slow11.txt");
    // w2 comes (or finishes its work): slow11 moves to it at once.
    let actions = c.register(2, "w2", at(10));
    assert!(
        actions.contains(&Action::Send(
            1,
            CoordMsg::Cancel {
                attempt: waiting.attempt.clone()
            }
        )),
        "{actions:?}"
    );
    let b = assigns(&actions);
    assert_eq!(b.len(), 1, "{actions:?}");
    assert_eq!((b[0].0, b[0].1.file.as_str()), (2, "slow11.txt"));
    assert_ne!(b[0].1.attempt, waiting.attempt, "a new attempt");
    // w1's late result of the attempt taken from it counts for nothing.
    c.message(1, done(&waiting.attempt, 5, 1), at(20));
    assert_eq!(c.totals.stale_messages_ignored, 1);
    assert_eq!(
        c.status(at(20)).workers[0].tasks.len(),
        1,
        "w1 keeps slow10 only"
    );

    // A small file dropped among long ones, with workers busy testing what they hold:
    // nothing is moved (no one is idle) until a worker finishes; then the small file, not
    // yet started behind a long one, goes to it.
    let mut c = Core::new(
        CoreConfig {
            max_inflight: 2,
            chunk_bytes: 1_000_000,
            ..cfg()
        },
        "s".into(),
    );
    for i in 0..3 {
        c.file_ready(&format!("k{i}.txt"), fp(900_000), at(0));
    }
    for conn in 1..=3 {
        c.register(conn, &format!("w{conn}"), at(0));
    }
    let queued = c.file_ready("k_small.txt", fp(3), at(5));
    let small = assigns(&queued);
    assert_eq!(small.len(), 1, "the small file goes behind a long one");
    assert!(
        !queued
            .iter()
            .any(|a| matches!(a, Action::Send(_, CoordMsg::Cancel { .. }))),
        "no one idle: nothing moves"
    );
    let holder = small[0].0;
    let other = (1..=3).find(|w| *w != holder).expect("another worker");
    let long = c
        .status(at(6))
        .workers
        .iter()
        .find(|w| w.id == format!("w{other}"))
        .map(|w| w.tasks.clone())
        .expect("worker");
    assert_eq!(long.len(), 1);
    let attempt = c
        .attempts
        .iter()
        .find(|(_, k)| format!("{}#{}", k.key, k.chunk) == long[0])
        .map(|(a, _)| a.clone())
        .expect("attempt");
    let mut got = c.message(other, done(&attempt, 1, 0), at(100));
    let durable = c.take_pending().done;
    got.extend(c.flushed(durable, at(101)));
    let moved = assigns(&got);
    assert!(
        got.contains(&Action::Send(
            holder,
            CoordMsg::Cancel {
                attempt: small[0].1.attempt.clone()
            }
        )),
        "{got:?}"
    );
    assert_eq!(moved.len(), 1);
    assert_eq!(
        (moved[0].0, moved[0].1.file.as_str()),
        (other, "k_small.txt")
    );

    // Two tasks waiting (a long one, a small one) and one worker idle: the small one moves.
    let mut c = Core::new(
        CoreConfig {
            max_inflight: 2,
            chunk_bytes: 1_000_000,
            ..cfg()
        },
        "s".into(),
    );
    for f in ["l1.txt", "l2.txt", "l3.txt"] {
        c.file_ready(f, fp(900_000), at(0));
    }
    c.file_ready("s.txt", fp(3), at(0));
    c.register(1, "w1", at(0));
    c.register(2, "w2", at(0));
    let moved = assigns(&c.register(3, "w3", at(1)));
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0].1.file, "s.txt", "the small one, not the long one");
}

#[test]
/// The backlog counts the segment primes of every flush under way (two with the flusher's
/// pipeline), each until it is answered, oldest first, whichever way.
fn backlog_counts_each_flush_until_answered() {
    let mut c = Core::new(cfg(), "s".into());
    assert_eq!(c.backlog(), 0);
    c.flush_taken(5);
    c.flush_taken(7);
    assert_eq!(c.backlog(), 12);
    c.flush_failed(5);
    assert_eq!(c.backlog(), 12, "handed back: still not durable");
    c.flushed(Vec::new(), at(1));
    assert_eq!(c.backlog(), 5, "the oldest answered first, then the next");
    c.flush_taken(5);
    assert_eq!(c.backlog(), 5, "taken again, counted once");
    c.flushed(Vec::new(), at(2));
    assert_eq!(c.backlog(), 0);
    c.flushed(Vec::new(), at(3));
    assert_eq!(
        c.backlog(),
        0,
        "an answer with none under way changes nothing"
    );
}
