//! Unit tests of the replica: entries applied again, snapshot pieces, submitted jobs.

use super::*;
use crate::core::FlushBatch;
use proto::msg::{TaskDone, Work};

fn finished(lo: u64, hi: u64, primes: u64) -> Finished {
    Finished {
        work: Work::Count { lo, hi },
        worker: "w1".into(),
        result: TaskDone {
            attempt: "a-1".into(),
            version: String::new(),
            size: 0,
            lines: 0,
            numbers: 0,
            blank: 0,
            invalid: 0,
            first_invalid: Vec::new(),
            primes,
            answer: Some(primes.to_string()),
            first_prime: None,
            last_prime: None,
        },
    }
}

fn flush(small: Vec<u64>, done: Vec<Finished>) -> Command {
    Command::Flush(FlushBatch {
        small,
        finished: done,
        ..FlushBatch::default()
    })
}

#[test]
/// A member keeps the ledger a leader starting on it takes up to date, and a member
/// reopened after a crash (its files not synced, applied.json older) applies the same
/// entries again without a prime twice.
fn ledger_kept_and_entries_applied_again_add_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || {
        Replica::open(
            &dir.path().join("member"),
            &dir.path().join("primes.txt"),
            &dir.path().join("output"),
            &dir.path().join("jobs"),
        )
        .expect("open")
    };
    let entries = [
        flush(vec![2, 3, 5], vec![finished(1, 10, 4)]),
        flush(vec![5, 7, 11], vec![finished(11, 20, 4)]),
    ];
    let r = open();
    for e in entries.iter().cloned() {
        lock(&r.inner).apply_one(e).expect("apply");
    }
    let (done, total, _) = r.ledger();
    assert_eq!(total, 5);
    assert_eq!(
        done.len(),
        2,
        "both tasks in the ledger a leader would take"
    );
    drop(r);
    // A crash: nothing recorded as applied, the entries come again.
    let r = open();
    assert_eq!(r.ledger().0.len(), 2, "the ledger read back at open");
    for e in entries.iter().cloned() {
        lock(&r.inner).apply_one(e).expect("apply again");
    }
    let text = std::fs::read_to_string(dir.path().join("member/primes.txt")).expect("read");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["11", "2", "3", "5", "7"]);
    assert_eq!(r.ledger().1, 5);
}

fn open_in(dir: &Path) -> Replica {
    Replica::open(
        &dir.join("member"),
        &dir.join("primes.txt"),
        &dir.join("output"),
        &dir.join("jobs"),
    )
    .expect("open")
}

fn part(name: &str, offset: u64, data: &str, last: bool) -> Command {
    Command::SnapshotPart {
        name: name.into(),
        offset,
        data: data.into(),
        last,
        keep: 2,
    }
}

fn snapshot_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("member/snapshots"))
        .expect("snapshots folder")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[test]
/// Snapshot pieces make the whole file only at the last piece; pieces applied again
/// (a crash) change nothing; the newest `keep` are kept; a bad name is refused.
fn snapshot_pieces_assemble_once_and_prune() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = open_in(dir.path());
    let names = [
        "snapshot_000001_20261206T000001.000Z.json",
        "snapshot_000002_20261206T000031.000Z.json",
        "snapshot_000003_20261206T000101.000Z.json",
    ];
    let first = [
        part(names[0], 0, "{\"seq\":", false),
        part(names[0], 7, "1}", true),
    ];
    for e in first.iter().cloned() {
        lock(&r.inner).apply_one(e).expect("apply");
    }
    let file = dir.path().join("member/snapshots").join(names[0]);
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "{\"seq\":1}");
    // Applied again after a crash: the finished file stays as it is.
    for e in first.iter().cloned() {
        lock(&r.inner).apply_one(e).expect("apply again");
    }
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "{\"seq\":1}");
    assert_eq!(snapshot_names(dir.path()), [names[0]]);
    // Half a snapshot is not one: hidden until its last piece.
    lock(&r.inner)
        .apply_one(part(names[1], 0, "{\"seq\":", false))
        .expect("apply");
    assert_eq!(
        snapshot_names(dir.path()),
        [".".to_string() + names[1] + ".part", names[0].to_string()]
    );
    lock(&r.inner)
        .apply_one(part(names[1], 7, "2}", true))
        .expect("apply");
    lock(&r.inner)
        .apply_one(part(names[2], 0, "{\"seq\":3}", true))
        .expect("apply");
    assert_eq!(
        snapshot_names(dir.path()),
        [names[1], names[2]],
        "keep 2: the oldest pruned"
    );
    // A name that could leave the folder is not written (and does not stop the apply).
    lock(&r.inner)
        .apply_one(part("../escape.json", 0, "x", true))
        .expect("apply goes on");
    assert!(!dir.path().join("member/escape.json").exists());
    assert!(!dir.path().join("escape.json").exists());
}

#[test]
/// A submitted job is kept in the member's jobs/ (checked again at apply); a bad one is
/// not written; another line under a kept name is refused unless it replaces, the same
/// line again is accepted; an entry logged before `replace` existed replaces, as it did.
fn submitted_jobs_kept_by_every_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = open_in(dir.path());
    let submit = |name: &str, line: &str, replace: bool| {
        lock(&r.inner)
            .apply_one(Command::SubmitJob {
                name: name.into(),
                line: line.into(),
                replace,
            })
            .expect("apply goes on")
    };
    let kept = || std::fs::read_to_string(dir.path().join("member/jobs/big.job")).expect("read");
    assert!(matches!(
        submit("big", " primes 1 1000 ", false),
        Outcome::Submitted(Ok(()))
    ));
    assert_eq!(kept(), "primes 1 1000\n");
    match submit("big", "count 1 1000", false) {
        Outcome::Submitted(Err(why)) => assert!(
            why.contains("another line (primes 1 1000)") && why.contains("--replace"),
            "{why}"
        ),
        other => panic!("another line under a kept name: {other:?}"),
    }
    assert_eq!(kept(), "primes 1 1000\n", "refused: unchanged");
    assert!(matches!(
        submit("big", "primes  1   1000", false),
        Outcome::Submitted(Ok(()))
    ));
    assert!(matches!(
        submit("big", "count 1 1000", true),
        Outcome::Submitted(Ok(()))
    ));
    assert_eq!(kept(), "count 1 1000\n", "replaced");
    let old: Command = serde_json::from_value(serde_json::json!(
        {"type": "submit_job", "data": {"name": "big", "line": "nth 10"}}
    ))
    .expect("an entry of the older form");
    assert!(matches!(
        lock(&r.inner).apply_one(old).expect("apply"),
        Outcome::Submitted(Ok(()))
    ));
    assert_eq!(kept(), "nth 10\n", "an older entry replaces");
    assert!(matches!(
        submit("../bad", "primes 1 1000", false),
        Outcome::Submitted(Err(_))
    ));
    assert!(matches!(
        submit("empty", "primes 9 1", false),
        Outcome::Submitted(Err(_))
    ));
    let mut jobs: Vec<String> = std::fs::read_dir(dir.path().join("member/jobs"))
        .expect("jobs")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    jobs.sort();
    assert_eq!(jobs, ["big.job"]);
    assert!(!dir.path().join("member/bad.job").exists());
}

#[test]
/// What the async side asks of a replica never waits for an apply in progress (here
/// simulated by holding the state's lock): a task on a runtime thread that waited for one
/// stopped the process's timers, the leader's heartbeats and lease checks with them.
fn the_async_side_never_waits_for_an_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = open_in(dir.path());
    let apply = lock(&r.inner);
    let (tx, rx) = std::sync::mpsc::channel();
    let asker = r.clone();
    std::thread::spawn(move || {
        let run = crate::ranges::Run {
            lo: 10,
            hi: 20,
            primes: vec![11, 13],
        };
        asker.hold(7, vec![run]);
        let back = asker.take_batch(7).map(|runs| runs.len());
        let answers = (
            asker.leads_root(),
            asker.counts(),
            asker.results_view().1,
            asker.pace().lowly(),
            back,
        );
        let _ = tx.send(answers);
    });
    let answers = rx.recv_timeout(std::time::Duration::from_secs(10));
    drop(apply);
    assert_eq!(
        answers.expect("an accessor waited for the apply in progress"),
        (false, (0, 0), 0, false, Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A flush's entry applies only if it reached the log in the term of the leader that
/// proposed it (the flusher's pipeline: one proposed after an entry that never committed
/// must not apply alone). Decided from the log, so every member refuses the same entries;
/// the refused batch's held primes stay for its proposer to take back.
async fn a_batch_logged_in_another_term_than_its_leaders_is_refused() {
    use openraft::storage::RaftStateMachine;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open_in(dir.path());
    let batch = |id, term, small: Vec<u64>| {
        Command::Batch(batch::Batch {
            id,
            term,
            small: small.into(),
            ..batch::Batch::default()
        })
    };
    let entry = |term, index, cmd| crate::group::LogEntry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(term, 1), index),
        payload: openraft::EntryPayload::Normal(cmd),
    };
    let held = crate::ranges::Run {
        lo: 100,
        hi: 110,
        primes: vec![101, 103],
    };
    r.hold(2, vec![held]);
    let out = r
        .apply(vec![
            entry(2, 1, batch(1, Some(2), vec![2, 3])),
            // Proposed by the leader of term 2, logged in term 3: refused.
            entry(3, 2, batch(2, Some(2), vec![5, 7])),
            // Written before batches named their term: applied as before.
            entry(3, 3, batch(3, None, vec![11])),
            entry(3, 4, batch(4, Some(3), vec![13])),
        ])
        .await
        .expect("apply");
    let refused: Vec<bool> = out
        .iter()
        .map(|o| matches!(o, Outcome::Refused { .. }))
        .collect();
    assert_eq!(refused, [false, true, false, false], "{out:?}");
    assert!(matches!(
        out[1],
        Outcome::Refused {
            proposed: 2,
            logged: 3
        }
    ));
    let text = std::fs::read_to_string(dir.path().join("member/primes.txt")).expect("read");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["11", "13", "2", "3"],
        "nothing of the refused batch"
    );
    assert_eq!(
        r.take_batch(2).map(|runs| runs[0].primes.clone()),
        Some(vec![101, 103]),
        "the refused batch's primes are still held"
    );
}
