//! Defects found by trying the system from outside, each with the scenario that showed it:
//! a file that failed while the file servers were down, a paused coordinator, a rewrite that
//! keeps size and mtime, report names that clash, a second worker with an id in use,
//! cancelled work that kept running.

use std::path::Path;
use std::time::Duration;

use e2e::{bin, wait_for, Proc};
use serde_json::Value;

use e2e::pipeline::{write_inputs, Pipeline, Scripts};

const T: Duration = Duration::from_secs(60);

/// Drops `body` into the input folder as `name` by rename (picked up at once).
fn drop_file(p: &Pipeline, name: &str, body: &str) {
    let tmp = p.path(&format!("data/input/.{name}.tmp"));
    std::fs::write(&tmp, body).expect("write input");
    std::fs::rename(&tmp, p.path(&format!("data/input/{name}"))).expect("rename input");
}

fn report(p: &Pipeline, file: &str) -> Value {
    std::fs::read(p.path(&format!("data/output/{file}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn primes(p: &Pipeline) -> Vec<String> {
    std::fs::read_to_string(p.path("primes.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn registered(p: &Pipeline, n: usize) -> bool {
    p.status()["workers"]
        .as_array()
        .is_some_and(|ws| ws.iter().filter(|w| w["state"] != "disconnected").count() >= n)
}

#[test]
/// A file that failed while the file server was down is retried: at a coordinator restart,
/// and by the coordinator itself (with backoff) once the server is back; status counts it
/// failed meanwhile.
fn failed_files_are_retried() {
    let mut p = Pipeline::new();
    // Phase 1: no retry by timer within the test, so only the restart can retry it.
    p.coord_flags_mut(vec!["--failed-retry-ms".into(), "600000".into()]);
    p.start_simple(1);
    wait_for(T, "worker registered", || registered(&p, 1));
    p.kill_server("server-1");
    drop_file(&p, "a.txt", "1000003\n1000033\n1000037\n");
    wait_for(T, "a failed report for a.txt", || {
        report(&p, "a.txt")["status"] == "failed"
    });
    wait_for(T, "status to count a.txt failed", || {
        p.status()["files_failed"] == 1 && p.status()["files_done"] == 0
    });
    p.start_server_again("server-1");
    p.kill_coordinator();
    p.start_coordinator();
    wait_for(T, "a.txt done after the restart", || {
        report(&p, "a.txt")["status"] == "done"
    });
    assert_eq!(primes(&p).len(), 3, "{:?}", primes(&p));

    // Phase 2: the coordinator retries by itself once the server is back.
    p.coord_flags_mut(vec!["--failed-retry-ms".into(), "300".into()]);
    p.kill_coordinator();
    p.start_coordinator();
    wait_for(T, "worker registered again", || registered(&p, 1));
    p.kill_server("server-1");
    drop_file(&p, "b.txt", "1000039\n");
    wait_for(T, "a failed report for b.txt", || {
        report(&p, "b.txt")["status"] == "failed"
    });
    p.start_server_again("server-1");
    wait_for(T, "b.txt done without a restart", || {
        report(&p, "b.txt")["status"] == "done"
    });
    wait_for(T, "status: 2 done, 0 failed", || {
        p.status()["files_done"] == 2 && p.status()["files_failed"] == 0
    });
    p.assert_exact();
    // After a restart, status still counts what earlier sessions did (read from the new
    // coordinator's status: the killed one's file stays until it is rewritten).
    p.restart_coordinator();
    wait_for(T, "totals across sessions in the status", || {
        let st = p.status();
        st["files_done"] == 2 && st["chunks_done"] == 2 && st["numbers_in_reports"] == 4
    });
    assert_eq!(
        p.status()["totals"]["numbers_tested"],
        0,
        "this session tested nothing"
    );
}

#[test]
/// Symlinks (even to a file inside), FIFOs and sockets in the input folder are skipped and
/// said once each in the log; removing a finished file says its report stays.
fn special_files_are_skipped_and_said_once() {
    let mut p = Pipeline::new();
    std::fs::write(p.path("data/input/a.txt"), "7\n").expect("write");
    std::os::unix::fs::symlink(p.path("data/input/a.txt"), p.path("data/input/link.txt"))
        .expect("symlink");
    let fifo =
        std::ffi::CString::new(p.path("data/input/pipe").display().to_string()).expect("path");
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    let _sock = std::os::unix::net::UnixListener::bind(p.path("data/input/sock")).expect("socket");
    p.start_simple(1);
    wait_for(T, "a.txt reported", || {
        report(&p, "a.txt")["status"] == "done"
    });
    // Several scans later (every 50 ms), each is still said once.
    let log_has = |what: &str| {
        std::fs::read_to_string(p.path("logs/coordinator.log"))
            .unwrap_or_default()
            .matches(what)
            .count()
    };
    wait_for(T, "the three skipped entries logged", || {
        log_has("not a regular file") == 3
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(log_has("not a regular file"), 3, "once each");
    assert_eq!(log_has("symbolic link"), 1);
    assert_eq!(log_has("FIFO"), 1);
    assert_eq!(log_has("a socket"), 1);
    std::fs::remove_file(p.path("data/input/a.txt")).expect("rm");
    wait_for(T, "the removal logged", || log_has("input removed") == 1);
    assert_eq!(log_has("its report stays"), 1);
    assert_eq!(log_has("dropped from the queue"), 0);
    assert_eq!(primes(&p), vec!["7"]);
}

#[test]
/// A coordinator paused (SIGSTOP) for several heartbeat limits closes no worker when it
/// resumes: the pause was its own, not the workers' silence.
fn coordinator_pause_is_not_worker_silence() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "z", 12, 2000, 5);
    p.worker_flags_mut(vec!["--delay-ms".into(), "150".into()]);
    p.start_simple(2);
    wait_for(T, "two workers registered", || registered(&p, 2));
    wait_for(T, "work under way", || {
        p.status()["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["state"] == "busy"))
    });
    p.coordinator_signal(libc::SIGSTOP);
    // The fault itself: 2 s paused is more than 3 missed heartbeats of 200 ms.
    std::thread::sleep(Duration::from_secs(2));
    p.coordinator_signal(libc::SIGCONT);
    p.wait_all_reported(T);
    p.assert_exact();
    wait_for(T, "a status written after the pause", || {
        p.status()["files_done"] == 12
    });
    let log = std::fs::read_to_string(p.path("logs/coordinator.log")).unwrap_or_default();
    assert!(
        !log.contains("missed 3 heartbeats"),
        "a worker was closed for the coordinator's own pause"
    );
    assert_eq!(p.status()["totals"]["workers_lost"], 0);
}

#[test]
/// A rewrite in place that keeps the size, the inode and the mtime (`dd conv=notrunc`,
/// then `touch -r`) is seen as a change: the new prime appears.
fn rewrite_keeping_size_and_mtime_is_processed() {
    let mut p = Pipeline::new();
    let f = p.path("data/input/f.txt");
    std::fs::write(&f, "700000031000000001\n").expect("write");
    p.start_simple(1);
    p.wait_all_reported(T);
    let before = std::fs::metadata(&f).expect("stat");
    {
        use std::io::Write;
        let mut h = std::fs::File::options()
            .write(true)
            .open(&f)
            .expect("open in place");
        h.write_all(b"700000031000000023\n").expect("overwrite");
        h.set_modified(before.modified().expect("mtime"))
            .expect("set the old mtime back");
    }
    let after = std::fs::metadata(&f).expect("stat");
    assert_eq!(
        (after.len(), after.modified().ok()),
        (before.len(), before.modified().ok())
    );
    wait_for(T, "the new prime in primes.txt", || {
        primes(&p).contains(&"700000031000000023".to_string())
    });
    p.wait_all_reported(T);
    p.assert_exact();
}

#[test]
/// Input `x` (report `x.json`) and folder `x.json/` (reports under `x.json/`): one report
/// cannot be written, and that file is counted failed with the reason, never done.
fn report_name_clash_is_a_failure() {
    let mut p = Pipeline::new();
    std::fs::create_dir_all(p.path("data/input/x.json")).expect("mkdir");
    std::fs::write(p.path("data/input/x.json/y.txt"), "7\n").expect("write");
    std::fs::write(p.path("data/input/x"), "11\n").expect("write");
    p.start_simple(1);
    wait_for(T, "both files finished one way or the other", || {
        let st = p.status();
        st["files_done"].as_u64().unwrap_or(0) + st["files_failed"].as_u64().unwrap_or(0) == 2
    });
    let st = p.status();
    assert_eq!(st["files_done"], 1, "{st}");
    assert_eq!(st["files_failed"], 1, "{st}");
    let failed = st["files"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["state"] == "failed"))
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("report name clash")),
        "{failed}"
    );
    let mut got = primes(&p);
    got.sort();
    assert_eq!(got, vec!["11", "7"], "both files' primes are durable");
}

/// Starts a bare worker process with id `id` against `p`'s coordinator (not tracked by `p`).
fn extra_worker(p: &Pipeline, id: &str, log: &str) -> Proc {
    extra_worker_to(p, id, log, p.coord_addr())
}

/// [`extra_worker`] with its `--coordinator` list.
fn extra_worker_to(p: &Pipeline, id: &str, log: &str, coordinators: &str) -> Proc {
    extra_worker_keyed(p, id, log, coordinators, &p.path("run/cluster.key"))
}

/// [`extra_worker_to`] with the cluster key file it is given.
fn extra_worker_keyed(
    p: &Pipeline,
    id: &str,
    log: &str,
    coordinators: &str,
    key_file: &Path,
) -> Proc {
    let args: Vec<String> = [
        "--id",
        id,
        "--coordinator",
        coordinators,
        "--afs",
        &p.afs_list(),
        "--cache-root",
        &p.path("cache2").display().to_string(),
        "--max-backoff-ms",
        "300",
        "--threads",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Proc::start(
        id,
        &bin("worker"),
        &args,
        &[("PRIMES_KEY_FILE", key_file.display().to_string())],
        Path::new(&p.path("")),
        &p.path(log),
    )
}

#[test]
/// A second worker with an id already in use is refused with a clear error and exits
/// non-zero; the first keeps working and the job is exact; nothing loops.
fn duplicate_worker_id_is_refused() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "d", 8, 2000, 9);
    p.worker_flags_mut(vec!["--delay-ms".into(), "100".into()]);
    p.start_simple(1);
    wait_for(T, "worker-1 registered", || registered(&p, 1));
    let mut dup = extra_worker(&p, "worker-1", "logs/dup.log");
    let code = dup.wait_exit(Duration::from_secs(20));
    assert!(
        code.is_some_and(|c| c != 0),
        "the duplicate exits non-zero (got {code:?}): {}",
        dup.log_tail(5)
    );
    assert!(
        dup.log_tail(20).contains("already in use"),
        "{}",
        dup.log_tail(5)
    );
    p.wait_all_reported(T);
    p.assert_exact();
    let log = std::fs::read_to_string(p.path("logs/coordinator.log")).unwrap_or_default();
    assert_eq!(
        log.matches("worker registered").count(),
        1,
        "worker-1 registered once, never replaced"
    );
}

#[test]
/// A worker started with another cluster key than the system's: the coordinator refuses
/// the key, so the worker exits with the status of a refusal (3) and says which key to use,
/// instead of retrying forever at INFO "coordinator not reachable"; the system goes on.
fn worker_with_a_wrong_key_exits_saying_so() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "k", 4, 500, 9);
    p.start_simple(1);
    wait_for(T, "worker-1 registered", || registered(&p, 1));
    let wrong = p.path("run/other.key");
    std::fs::write(&wrong, "ab".repeat(32)).expect("writing another key");
    let mut w = extra_worker_keyed(&p, "worker-k", "logs/wrong-key.log", p.coord_addr(), &wrong);
    let code = w.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(3), "exits as refused: {}", w.log_tail(5));
    let tail = w.log_tail(10);
    assert!(
        tail.contains("refused this worker's cluster key") && tail.contains("PRIMES_KEY_FILE"),
        "{tail}"
    );
    // With an address that does not answer among them: it exits too, without a hot loop
    // (it tried the addresses ~97,000 times a second).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    drop(silent);
    let list = format!("{},{silent_addr}", p.coord_addr());
    let mut w = extra_worker_keyed(&p, "worker-k2", "logs/wrong-key2.log", &list, &wrong);
    let code = w.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(3), "exits as refused: {}", w.log_tail(5));
    let lines = std::fs::read_to_string(p.path("logs/wrong-key2.log"))
        .unwrap_or_default()
        .lines()
        .count();
    assert!(lines < 50, "{lines} log lines: {}", w.log_tail(5));
    p.wait_all_reported(T);
    p.assert_exact();
}

#[test]
/// A file truncated while its only worker tests it (4096-bit numbers, tens of seconds of
/// work): the old attempt is cancelled and stops at once, so the new version is done long
/// before the old scan would have finished.
fn cancelled_work_stops() {
    let mut p = Pipeline::new();
    // About 10 MB of 1233-digit numbers (below 2^4096): ~40 s of testing on one thread.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut body = String::with_capacity(10 << 20);
    for _ in 0..8000 {
        for d in 0..1233 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digit = match d {
                0 => 1 + x % 9,
                1232 => [1, 3, 7, 9][(x % 4) as usize],
                _ => x % 10,
            };
            body.push(char::from(b'0' + digit as u8));
        }
        body.push('\n');
    }
    p.coord_flags_mut(vec!["--chunk-mib".into(), "64".into()]);
    p.start_simple(1);
    wait_for(T, "worker registered", || registered(&p, 1));
    drop_file(&p, "big.txt", &body);
    wait_for(T, "the worker busy with big.txt", || {
        p.status()["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["state"] == "busy"))
    });
    // The fault as it was found: the change comes while the scan is well under way
    // (progress of a whole file is reported per 16 MiB, so there is nothing to poll).
    std::thread::sleep(Duration::from_secs(2));
    let started = std::time::Instant::now();
    // Truncated in place: a new version with one number.
    std::fs::write(p.path("data/input/big.txt"), "1000003\n").expect("truncate");
    wait_for(
        Duration::from_secs(20),
        "the new version done while the old scan would still run",
        || report(&p, "big.txt")["numbers_read"] == 1,
    );
    let log = std::fs::read_to_string(p.path("logs/worker-1.log")).unwrap_or_default();
    assert!(
        log.contains("cancelled task stopped"),
        "the old attempt was stopped, not finished ({:?} after the change)",
        started.elapsed()
    );
    p.assert_exact();
}

/// A rerun's verdict with worker-2 suspended: exit 3, worker-2 named as suspended, and a
/// headline that does not say "system up".
fn partly_up_with_worker_2_suspended(code: i32, out: &str) {
    assert_eq!(code, 3, "exit 3: up, but worker-2 is not answering\n{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("worker-2") && l.contains("suspended")),
        "{out}"
    );
    assert!(
        out.contains("system partly up") && !out.contains("system up ("),
        "{out}"
    );
}

#[test]
/// `./start_system.sh` rerun after the coordinator died while a worker is suspended: the
/// coordinator is restarted and stays up (nothing healthy or just restarted is stopped), the
/// suspended worker is named in one line, the exit status is 3, and new files are processed.
fn rerun_with_a_suspended_worker_keeps_the_restarted_coordinator() {
    let s = Scripts::new("s", 3, 3);
    let (code, out) = s.run("start_system.sh", &["simple", "2"], &s.with_base());
    assert_eq!(code, 0, "{out}");
    unsafe {
        libc::kill(s.pid("worker-2"), libc::SIGSTOP);
    }
    // At once, while the coordinator still lists the paused worker as registered (until it
    // misses its heartbeats): not up all the same, and the headline says so.
    let (code, out) = s.run("start_system.sh", &[], &[]);
    partly_up_with_worker_2_suspended(code, &out);
    unsafe {
        libc::kill(s.pid("coordinator"), libc::SIGKILL);
    }
    wait_for(T, "the coordinator gone", || {
        !e2e::alive(s.pid("coordinator"))
    });
    let (code, out) = s.run("start_system.sh", &[], &[]);
    partly_up_with_worker_2_suspended(code, &out);
    let coord = s.pid("coordinator");
    assert!(
        e2e::alive(coord),
        "the restarted coordinator is still up\n{out}"
    );
    std::fs::write(s.root().join("data/input/late.txt"), "1000003\n").expect("drop");
    wait_for(T, "the file dropped after the rerun is processed", || {
        s.root().join("data/output/late.txt.json").exists()
    });
    assert_eq!(s.pid("coordinator"), coord);
}

#[test]
/// Settings are remembered: a rerun with another base port while the system runs is refused
/// in one line (nothing started, ports.env kept); a plain rerun restarts the dead worker on
/// the remembered ports; after a stop, a plain start comes back replicated on those ports,
/// with the cache in the checkout.
fn rerun_reuses_the_remembered_settings() {
    let s = Scripts::new("s", 2, 3);
    let (code, out) = s.run("start_system.sh", &["replicated", "2"], &s.with_base());
    assert_eq!(code, 0, "{out}");
    let ports = std::fs::read_to_string(s.root().join("run/ports.env")).expect("ports.env");
    unsafe {
        libc::kill(s.pid("worker-2"), libc::SIGKILL);
    }
    wait_for(T, "worker-2 gone", || !e2e::alive(s.pid("worker-2")));
    let other = vec![("PRIMES_BASE_PORT", (s.base + 100).to_string())];
    let (code, out) = s.run("start_system.sh", &[], &other);
    assert_eq!(code, 2, "{out}");
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    assert!(out.contains("PRIMES_BASE_PORT"), "{out}");
    assert!(
        !e2e::alive(s.pid("worker-2")),
        "nothing started against another system"
    );
    assert_eq!(
        std::fs::read_to_string(s.root().join("run/ports.env")).expect("ports.env"),
        ports
    );
    let (code, out) = s.run("start_system.sh", &[], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("worker-2 registered"), "{out}");
    assert!(s.root().join("cache/worker-1").exists() || s.root().join("cache").exists());
    let (code, out) = s.run("stop_system.sh", &[], &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = s.run("start_system.sh", &[], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("replicated"), "comes back replicated: {out}");
    assert!(e2e::alive(s.pid("server-3")), "{out}");
    assert_eq!(
        std::fs::read_to_string(s.root().join("run/ports.env")).expect("ports.env"),
        ports,
        "the same ports"
    );
    wait_for(T, "both files done", || s.status()["files_done"] == 2);
}

/// Sets the coordinator to learn its inputs from `p`'s file servers (`--inputs-from-afs`),
/// with an input folder of its own (`coord-input`) that must stay empty. Returns the file
/// servers' addresses (the primary first).
fn inputs_from_afs(p: &mut Pipeline) -> String {
    let afs = p.afs_list();
    std::fs::create_dir_all(p.path("coord-input")).expect("mkdir");
    p.coord_flags_mut(vec![
        "--afs".into(),
        afs.clone(),
        "--inputs-from-afs".into(),
        "--input".into(),
        p.path("coord-input").display().to_string(),
    ]);
    afs
}

/// A group of one learning its inputs from the file server (`--inputs-from-afs`) with one
/// worker, after `count` files of `lines` numbers (names `<prefix>NNN.txt`) are all reported
/// and primes.txt is exact.
fn simple_from_afs_all_reported(prefix: &str, count: usize, lines: usize, seed: u64) -> Pipeline {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), prefix, count, lines, seed);
    p.simple();
    inputs_from_afs(&mut p);
    p.start_coordinator();
    p.start_worker("worker-1");
    p.wait_all_reported(T);
    p.assert_exact();
    p
}

#[test]
/// `--inputs-from-afs`: the coordinator's own input folder stays empty; it learns the files
/// from the file server's listing and its `list_changed` pushes: files there at start, a
/// file dropped later, a file rewritten, a file removed.
fn inputs_from_the_file_server() {
    let p = simple_from_afs_all_reported("s", 4, 200, 7);
    // Dropped on the server's side while running: queued from the server's push (the
    // coordinator lists again by itself only every 60 s).
    drop_file(&p, "late.txt", "1000003\n1000033\n");
    wait_for(Duration::from_secs(20), "a report for late.txt", || {
        report(&p, "late.txt")["status"] == "done"
    });
    // Rewritten: processed again; removed: its report stays, nothing breaks.
    let before = report(&p, "late.txt")["source"].clone();
    drop_file(&p, "late.txt", "1000037\n1000039\n1000081\n");
    wait_for(T, "late.txt processed again", || {
        let r = report(&p, "late.txt");
        r["status"] == "done" && r["source"] != before
    });
    std::fs::remove_file(p.path("data/input/s000.txt")).expect("remove");
    drop_file(&p, "last.txt", "1000099\n");
    wait_for(T, "a report for last.txt", || {
        report(&p, "last.txt")["status"] == "done"
    });
    p.wait_all_reported(T);
    let got = primes(&p);
    for want in [
        "1000003", "1000033", "1000037", "1000039", "1000081", "1000099",
    ] {
        assert!(got.iter().any(|x| x == want), "{want} in primes.txt");
    }
    let own = std::fs::read_dir(p.path("coord-input"))
        .expect("coord-input")
        .count();
    assert_eq!(own, 0, "the coordinator's input folder is not used");
    let log = std::fs::read_to_string(p.path("logs/coordinator.log")).unwrap_or_default();
    assert!(
        log.contains("inputs listed by the file server"),
        "the coordinator says where its inputs come from"
    );
}

#[test]
/// Issue 27 (a start failing with "worker-1 did not register"): a coordinator whose file
/// server does not answer its listing (suspended: the kernel accepts the connection, nothing
/// answers) serves workers after a short wait instead of 10 s, and the listing that comes
/// later brings the done reports with it: a file done before is not done again. Before, the
/// start waited 10 s, then took the late listing's files as new and did them all again.
fn late_first_listing_neither_holds_workers_nor_redoes_files() {
    let mut p = simple_from_afs_all_reported("l", 3, 100, 13);
    let report_text = |p: &Pipeline, i: usize| {
        std::fs::read_to_string(p.path(&format!("data/output/l{i:03}.txt.json"))).expect("report")
    };
    let before: Vec<String> = (0..3).map(|i| report_text(&p, i)).collect();
    let old = p.status()["session"].clone();
    p.kill_coordinator();
    let server = p.server_pid("server-1");
    assert!(server > 0, "the file server runs");
    // SAFETY-free: kill(2) on the test's own child.
    unsafe { libc::kill(server, libc::SIGSTOP) };
    let started = std::time::Instant::now();
    p.start_coordinator();
    wait_for(T, "the new coordinator serving worker-1", || {
        let st = p.status();
        st["session"] != old && p.registered(1)
    });
    let waited = started.elapsed();
    unsafe { libc::kill(server, libc::SIGCONT) };
    // The start-up waits 2 s for a listing (and the worker retries every 0.3 s at most),
    // about 3 s in all; before, it waited 10 s before serving, so any bound under 10 s
    // tells the two apart: 9 s leaves the most room for a loaded machine.
    assert!(
        waited < Duration::from_secs(9),
        "workers were served {waited:?} after the start, with the file server silent"
    );
    drop_file(&p, "after.txt", "1000003\n1000033\n");
    wait_for(T, "a report for after.txt", || {
        report(&p, "after.txt")["status"] == "done"
    });
    for (i, b) in before.iter().enumerate() {
        let now = report_text(&p, i);
        assert_eq!(&now, b, "l{i:03}.txt was done again after the late listing");
    }
    let log = std::fs::read_to_string(p.path("logs/coordinator.log")).unwrap_or_default();
    assert!(
        log.contains("first listing after start-up: done reports found"),
        "the late listing was checked against the reports"
    );
    p.wait_all_reported(T);
    p.assert_exact();
}

#[test]
/// A worker given several coordinator addresses registers with one that answers: the first
/// listed is dead, the job still completes exactly.
fn worker_tries_each_coordinator_address() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "c", 3, 100, 9);
    p.simple();
    p.start_coordinator();
    // An address nobody listens on: bound, then released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let list = format!("{dead},{}", p.coord_addr());
    let _w = extra_worker_to(&p, "worker-x", "logs/worker-x.log", &list);
    p.wait_all_reported(T);
    p.assert_exact();
    let log = std::fs::read_to_string(p.path("logs/worker-x.log")).unwrap_or_default();
    assert!(
        log.contains("coordinator not reachable") && log.contains(&dead),
        "the dead address was tried first"
    );
}

#[test]
/// An input folder named `jobs` holding `n1`, and a job `n1`: both would report to
/// data/output/jobs/n1.json. The job keeps it; the input counts as failed with the reason.
fn input_folder_jobs_does_not_take_a_jobs_report() {
    let mut p = Pipeline::new();
    std::fs::create_dir_all(p.path("data/input/jobs")).expect("mkdir");
    std::fs::write(p.path("data/input/jobs/n1"), "13\n").expect("write");
    std::fs::create_dir_all(p.path("data/jobs")).expect("mkdir");
    std::fs::write(p.path("data/jobs/n1.job"), "nth 10\n").expect("write");
    p.start_simple(1);
    wait_for(T, "the job done and the input failed", || {
        let st = p.status();
        st["files_failed"] == 1
            && st["jobs"]
                .as_array()
                .is_some_and(|j| j.iter().any(|j| j["state"] == "done"))
    });
    let r = report(&p, "jobs/n1");
    assert_eq!(r["job"], "n1", "the job's report: {r}");
    assert_eq!(r["answer"], "29", "{r}");
    let st = p.status();
    let failed = st["files"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["state"] == "failed"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(failed["file"], "jobs/n1", "{st}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("is the report of the job")),
        "{failed}"
    );
    assert_eq!(primes(&p), vec!["13"], "the input's primes are durable");
}

/// Waits until the status file has been rewritten `n` more times.
fn status_rewritten(p: &Pipeline, n: usize) {
    for _ in 0..n {
        let at = p.status()["updated_at"].clone();
        wait_for(T, "the status rewritten", || p.status()["updated_at"] != at);
    }
}

#[test]
/// `--inputs-from-afs` with a primary and two backups: when the primary dies the listing
/// moves to a backup, whose copies have their own mtimes and inodes, and no file is
/// processed again (same content versions); a coordinator restarted while only backups
/// answer redoes nothing either.
fn listing_failover_redoes_nothing() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "f", 4, 200, 21);
    p.replicated();
    let afs = inputs_from_afs(&mut p);
    p.start_coordinator();
    p.start_worker("worker-1");
    p.wait_all_reported(T);
    wait_for(T, "backups hold every file", || {
        p.unreported_on_backups() == 0
    });
    status_rewritten(&p, 2);
    let done_before = p.status()["totals"]["tasks_done"].clone();
    assert_eq!(done_before, 4, "one task per file");
    let primary = afs.split(',').next().unwrap_or_default().to_string();
    let from_backup = |p: &Pipeline| {
        std::fs::read_to_string(p.path("logs/coordinator.log"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("inputs listed by the file server") && !l.contains(&primary))
    };
    assert!(!from_backup(&p), "listed by the primary so far");
    p.kill_server("server-1");
    wait_for(T, "the inputs listed by a backup", || from_backup(&p));
    status_rewritten(&p, 2);
    let st = p.status();
    assert_eq!(st["files_done"], 4, "{st}");
    assert_eq!(
        (st["files_queued"].clone(), st["files_in_progress"].clone()),
        (0.into(), 0.into()),
        "nothing queued again: {st}"
    );
    assert_eq!(st["totals"]["tasks_done"], done_before, "nothing redone");

    // A restart while the primary is still down: the reports stand for the backups' copies.
    p.restart_coordinator();
    status_rewritten(&p, 2);
    let st = p.status();
    assert_eq!(st["files_done"], 4, "{st}");
    assert_eq!(
        st["totals"]["tasks_done"], 0,
        "nothing redone after the restart: {st}"
    );
    p.assert_exact();
}

#[test]
/// Files staged in a hidden folder are never queued there, and a folder of them renamed
/// into the inputs is queued at once: the notifications about the hidden folder (thousands
/// for a `cp -r`) are skipped without a walk, and the rename's own is never skipped. The
/// periodic walk is off (a minute), so only notifications can bring the files in.
fn a_folder_staged_hidden_then_renamed_in_is_queued_at_once() {
    let mut p = Pipeline::new();
    p.coord_flags_mut(vec!["--scan-ms".into(), "60000".into()]);
    p.start_simple(1);
    wait_for(T, "worker registered", || registered(&p, 1));
    let stage = p.path("data/input/.stage/batch");
    std::fs::create_dir_all(&stage).expect("mkdir");
    write_inputs(&stage, "h", 20, 50, 5);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !p.path("data/output/.stage").exists() && !p.path("data/output/batch").exists(),
        "nothing staged in a hidden folder is reported"
    );
    let before = p.status()["files_done"].as_u64().unwrap_or(0);
    std::fs::rename(&stage, p.path("data/input/batch")).expect("rename in");
    std::fs::remove_dir(p.path("data/input/.stage")).expect("rmdir");
    wait_for(T, "every report of the renamed folder", || {
        (0..20).all(|i| report(&p, &format!("batch/h{i:03}.txt"))["status"] == "done")
    });
    wait_for(T, "status to count the 20 files done, once", || {
        p.status()["files_done"].as_u64() == Some(before + 20)
    });
}
