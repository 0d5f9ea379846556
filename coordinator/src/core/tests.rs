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
    }
}

fn at(ms: u64) -> Now {
    Now {
        ms,
        wall: chrono::Utc::now(),
    }
}

fn fp(size: u64) -> Fingerprint {
    Fingerprint { size, mtime_ns: 1 }
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
    assert_eq!(report.status, "failed");
    assert!(
        report.errors[0].contains("not found"),
        "{:?}",
        report.errors
    );
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
    for i in 0..10 {
        c.file_ready(&format!("f{i}.txt"), fp(100), at(0));
    }
    assert_eq!(
        assigns(&c.register(1, "w1", at(0))).len(),
        8,
        "4 x 2 small files"
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
        assigns(&c.register_with_threads(1, "w1", 2, at(0))).len(),
        4
    );
}
