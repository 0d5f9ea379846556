//! The whole pipeline with real processes: exact output under worker, server and
//! coordinator failures, snapshots that are consistent cuts, and the start/stop scripts.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use e2e::pipeline::*;
use e2e::{bin, wait_for};
use serde_json::Value;

#[test]
/// Several files (mixed input included) give exactly the expected primes; a file dropped
/// while running (by rename and written in place) is processed; reports are complete.
fn pipeline_exact_and_live_drops() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "batch", 6, 3000, 1);
    std::fs::copy(
        testdata("mixed_input.txt"),
        p.path("data/input/mixed_input.txt"),
    )
    .expect("copy");
    p.coord_flags = vec![s("--chunk-bytes"), s("20000")];
    p.start_simple(3);
    p.wait_all_reported(T);
    p.assert_exact();
    // The chunks were read as start_system.sh's workers read them: from the open file the
    // file server on this host passes over its local socket.
    let local = (1..=3).any(|i| {
        std::fs::read_to_string(p.path(&format!("logs/worker-{i}.log")))
            .unwrap_or_default()
            .contains("through the file server's local socket")
    });
    assert!(local, "no worker read its ranges through the local socket");
    let report: Value = serde_json::from_slice(
        &std::fs::read(p.path("data/output/mixed_input.txt.json")).expect("report"),
    )
    .expect("json");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(testdata("mixed_input.expected.json")).expect("exp"))
            .expect("json");
    assert_eq!(report["lines"], expected["lines"]);
    assert_eq!(
        report["invalid_lines"]["count"].as_u64(),
        Some(expected["invalid_lines"].as_array().expect("arr").len() as u64)
    );
    let first: Vec<u64> = report["invalid_lines"]["first"]
        .as_array()
        .expect("first")
        .iter()
        .map(|i| i["line"].as_u64().expect("line"))
        .collect();
    let want: Vec<u64> = expected["invalid_lines"]
        .as_array()
        .expect("arr")
        .iter()
        .take(first.len())
        .map(|v| v.as_u64().expect("n"))
        .collect();
    assert_eq!(first, want, "invalid line numbers in the report");
    let primes = std::fs::read_to_string(p.path("primes.txt")).expect("primes");
    for d in expected["distinct_primes"].as_array().expect("distinct") {
        assert!(
            primes.lines().any(|l| Some(l) == d.as_str()),
            "{d} in primes.txt"
        );
    }

    // Drop by rename (instant) and by writing in place.
    std::fs::write(p.path("data/staged.txt"), "1000003\n1000033\n12\n").expect("write");
    std::fs::rename(p.path("data/staged.txt"), p.path("data/input/dropped.txt")).expect("mv");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(p.path("data/input/inplace.txt")).expect("create");
        for i in 0..2000u64 {
            writeln!(f, "{}", 2_000_000_000 + i).expect("write");
        }
    }
    p.wait_all_reported(T);
    p.assert_exact();
    // A changed file is processed again, nothing duplicated.
    std::fs::write(p.path("data/input/dropped.txt"), "1000037\n1000039\n").expect("rewrite");
    wait_for(T, "the changed file's new primes", || {
        std::fs::read_to_string(p.path("primes.txt"))
            .is_ok_and(|t| t.lines().any(|l| l == "1000039"))
    });
    wait_for(T, "the changed file's report", || {
        std::fs::read(p.path("data/output/dropped.txt.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|r| r["numbers_read"] == 2)
    });
    let text = std::fs::read_to_string(p.path("primes.txt")).expect("primes");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        lines.iter().collect::<BTreeSet<_>>().len(),
        "no duplicates after a change"
    );
}

/// Finds a worker that is busy right now, by the coordinator's status.
fn busy_worker(p: &Pipeline) -> Option<String> {
    p.status()["workers"]
        .as_array()?
        .iter()
        .find(|w| w["state"] == "busy")
        .and_then(|w| w["id"].as_str().map(s))
}

/// Waits for a busy worker and returns its id.
fn wait_busy_worker(p: &Pipeline) -> String {
    let mut victim = String::new();
    wait_for(T, "a busy worker", || match busy_worker(p) {
        Some(w) => {
            victim = w;
            true
        }
        None => false,
    });
    victim
}

/// True when `id` shows in the coordinator's status with the given connection state
/// (`connected`: anything but "disconnected").
fn worker_state_is(p: &Pipeline, id: &str, connected: bool) -> bool {
    p.status()["workers"].as_array().is_some_and(|ws| {
        ws.iter()
            .any(|w| w["id"] == id && (w["state"] != "disconnected") == connected)
    })
}

#[test]
/// SIGKILL of a busy worker: its task is finished by another worker, output exact; the
/// killed worker restarted by hand rejoins.
fn worker_killed_mid_task() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "k", 12, 2000, 2);
    p.worker_flags = vec![s("--delay-ms"), s("300")];
    p.start_simple(3);
    let victim = wait_busy_worker(&p);
    p.worker(&victim).kill9();
    p.wait_all_reported(T);
    p.assert_exact();
    // The coordinator's log says so, naming the worker (it said nothing at info before).
    let log = std::fs::read_to_string(p.path("logs/coordinator.log")).unwrap_or_default();
    assert!(
        log.lines().any(|l| l.contains("worker connection closed")
            && l.contains(&format!("worker=\"{victim}\""))
            && (l.contains("ended=\"closed by the worker\"") || l.contains("ended=\"lost\""))),
        "no line for the killed worker in the coordinator's log:\n{}",
        e2e::log_tail(&p.path("logs/coordinator.log"), 40)
    );
    // The status file lags by up to 0.5 s.
    wait_for(
        T,
        "the status to count the lost worker and its task",
        || {
            let t = &p.status()["totals"];
            t["workers_lost"].as_u64().unwrap_or(0) >= 1
                && t["tasks_requeued"].as_u64().unwrap_or(0) >= 1
        },
    );
    p.start_worker(&victim);
    wait_for(T, "the restarted worker to rejoin", || {
        worker_state_is(&p, &victim, true)
    });
}

#[test]
/// A hung worker (SIGSTOP) is declared dead after missed heartbeats; its task finishes
/// elsewhere; after SIGCONT it rejoins and nothing is duplicated.
fn hung_worker_detected_by_heartbeats() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "h", 8, 2000, 3);
    p.worker_flags = vec![s("--delay-ms"), s("400")];
    p.start_simple(2);
    let victim = wait_busy_worker(&p);
    p.worker(&victim).signal(libc::SIGSTOP);
    wait_for(T, "the stopped worker to be declared dead", || {
        worker_state_is(&p, &victim, false)
    });
    p.wait_all_reported(T);
    p.assert_exact();
    p.worker(&victim).signal(libc::SIGCONT);
    wait_for(T, "the resumed worker to rejoin", || p.registered(2));
    std::thread::sleep(Duration::from_millis(300)); // let any late result arrive
    p.assert_exact();
}

#[test]
/// Replicated mode: the primary file server is killed mid-run; workers read from backups
/// (whole files, and chunks of split files by range); output exact.
fn replicated_primary_killed_mid_run() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "r", 10, 2000, 4);
    p.worker_flags = vec![s("--delay-ms"), s("200")];
    p.coord_flags = vec![s("--chunk-bytes"), s("7000")];
    p.replicated();
    wait_for(T, "backups to hold the inputs", || {
        e2e_inputs(&p.path("data/input")).iter().all(|f| {
            p.path(&format!("data/replicas/server-2/{f}")).exists()
                && p.path(&format!("data/replicas/server-3/{f}")).exists()
        })
    });
    p.start_coordinator();
    for i in 1..=3 {
        p.start_worker(&format!("worker-{i}"));
    }
    wait_for(T, "some progress", || p.unreported().len() < 9);
    if let Some(e) = p.servers.iter_mut().find(|e| e.0 == "server-1") {
        if let Some(proc_) = e.1.as_mut() {
            proc_.kill9();
        }
    }
    p.wait_all_reported(T);
    p.assert_exact();
}

#[test]
/// kill -9 of the coordinator at several moments, then restart: exact output, no torn or
/// duplicated line, and files with reports are not redone.
fn coordinator_killed_and_restarted() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "c", 16, 2500, 5);
    p.worker_flags = vec![s("--delay-ms"), s("150")];
    p.coord_flags = vec![s("--snapshot-ms"), s("300"), s("--chunk-bytes"), s("15000")];
    p.start_simple(3);
    let total = e2e_inputs(&p.path("data/input")).len();
    let mut reported_before: Vec<(String, String)> = Vec::new();
    for (round, left) in [(0, total - 3), (1, total - 8), (2, total - 12)] {
        wait_for(T, "progress before the kill", || {
            p.unreported().len() <= left
        });
        if let Some(c) = p.coordinator.as_mut() {
            c.kill9();
        }
        reported_before = e2e_inputs(&p.path("data/input"))
            .into_iter()
            .filter_map(|f| {
                let r: Value = serde_json::from_slice(
                    &std::fs::read(p.path(&format!("data/output/{f}.json"))).ok()?,
                )
                .ok()?;
                Some((f, r["finished_at"].as_str()?.to_string()))
            })
            .collect();
        assert!(
            !reported_before.is_empty(),
            "round {round}: some files were done before the kill"
        );
        p.start_coordinator();
    }
    p.wait_all_reported(T);
    p.assert_exact();
    for (f, finished) in reported_before {
        let r: Value = serde_json::from_slice(
            &std::fs::read(p.path(&format!("data/output/{f}.json"))).expect("report"),
        )
        .expect("json");
        assert_eq!(
            r["finished_at"].as_str(),
            Some(finished.as_str()),
            "{f} was not redone after the restart"
        );
    }
}

#[test]
/// The coordinator crashes (abort, as kill -9) at each named moment — before, inside and
/// after a flush, during a snapshot — and is restarted each time; a torn last line is left in
/// primes.txt as well. The output is exact, with no torn or duplicated line.
fn coordinator_crash_points() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "x", 40, 2000, 9);
    p.worker_flags = vec![s("--delay-ms"), s("60")];
    p.coord_flags = vec![s("--snapshot-ms"), s("150"), s("--chunk-bytes"), s("12000")];
    p.simple();
    for point in [
        "flush-before-append",
        "flush-after-append",
        "flush-after-report",
        "snapshot-begun",
        "snapshot-before-write",
        "snapshot-after-write",
    ] {
        p.coord_env = vec![("PRIMES_CRASH_AT", format!("{point}:2"))];
        p.start_coordinator();
        if p.workers.is_empty() {
            for i in 1..=2 {
                p.start_worker(&format!("worker-{i}"));
            }
        }
        let c = p.coordinator.as_mut().expect("coordinator");
        let code = c.wait_exit(T);
        assert!(
            code.is_some(),
            "{point}: the coordinator reached the crash point\n{}",
            c.log_tail(5)
        );
        assert!(
            c.log_tail(3).contains(point),
            "{point}: crashed there\n{}",
            c.log_tail(3)
        );
    }
    // A torn last line, as a crash in the middle of an append would leave.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(p.path("primes.txt"))
            .expect("primes.txt");
        f.write_all(b"1234567").expect("tear");
    }
    p.coord_env.clear();
    p.start_coordinator();
    p.wait_all_reported(T);
    p.assert_exact();
    let log = std::fs::read_to_string(p.path("logs/coordinator.log")).expect("log");
    assert!(
        log.contains("cut a torn last line"),
        "the torn line was noticed"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("recovered from snapshot") && !l.contains("files=0")),
        "some restart resumed chunks from a snapshot"
    );
}

#[test]
/// Workers that crash mid-task at random (--fail-prob) and are restarted by a supervisor
/// loop: the output is still exact.
fn injected_worker_crashes() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "f", 30, 1500, 10);
    p.worker_flags = vec![s("--fail-prob"), s("0.2"), s("--delay-ms"), s("20")];
    p.simple();
    p.start_coordinator();
    let ids: Vec<String> = (1..=3).map(|i| format!("worker-{i}")).collect();
    for id in &ids {
        p.start_worker(id);
    }
    let mut restarts = 0;
    let deadline = std::time::Instant::now() + T;
    while !p.unreported().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "did not finish; {restarts} restarts; unreported {:?}\n{}\n{}",
            p.unreported(),
            p.worker("worker-1").log_tail(5),
            e2e::log_tail(&p.path("logs/coordinator.log"), 10)
        );
        for id in &ids {
            if !p.worker(id).is_running() {
                let code = p.worker(id).wait_exit(Duration::from_millis(10));
                assert_eq!(code, Some(86), "{id} exited by the injected crash");
                p.start_worker(id);
                restarts += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    p.assert_exact();
    assert!(restarts > 0, "some worker crashed and was restarted");
}

#[test]
/// Everything killed at once (kill -9), restarted: exact output.
fn everything_killed_at_once() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "e", 10, 2500, 6);
    p.worker_flags = vec![s("--delay-ms"), s("150")];
    p.coord_flags = vec![s("--snapshot-ms"), s("300")];
    p.start_simple(2);
    wait_for(T, "some progress", || p.unreported().len() < 8);
    if let Some(c) = p.coordinator.as_mut() {
        c.kill9();
    }
    for (_, w) in p.workers.iter_mut() {
        if let Some(w) = w.as_mut() {
            w.kill9();
        }
    }
    for (_, sv, _) in p.servers.iter_mut() {
        if let Some(sv) = sv.as_mut() {
            sv.kill9();
        }
    }
    p.servers.clear();
    p.coord_addr.clear();
    p.start_simple(2);
    p.wait_all_reported(T);
    p.assert_exact();
}

#[test]
/// Snapshots under load (short interval, slowed workers) are all consistent cuts, at least
/// one records a non-empty channel, and the final snapshot is written at a graceful stop.
fn snapshots_are_consistent_under_load() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "s", 30, 1500, 7);
    // A slow marker channel makes results cross it while the snapshot is open.
    p.worker_flags = vec![s("--delay-ms"), s("40"), s("--marker-delay-ms"), s("80")];
    p.coord_flags = vec![
        s("--snapshot-ms"),
        s("60"),
        s("--keep-snapshots"),
        s("1000"),
    ];
    p.start_simple(3);
    p.wait_all_reported(T);
    p.assert_exact();
    if let Some(c) = p.coordinator.as_mut() {
        c.signal(libc::SIGTERM);
        let code = c.wait_exit(Duration::from_secs(20));
        assert_eq!(code, Some(0), "graceful stop:\n{}", c.log_tail(30));
    }
    let snaps: Vec<PathBuf> = std::fs::read_dir(p.path("snapshots"))
        .expect("snapshots dir")
        .flatten()
        .map(|e| e.path())
        .filter(|f| f.extension().is_some_and(|x| x == "json"))
        .collect();
    assert!(snaps.len() >= 5, "several snapshots taken: {}", snaps.len());
    let out = Command::new(bin("coordinator"))
        .arg("verify-snapshot")
        .arg("--json")
        .args(&snaps)
        .output()
        .expect("verify");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "all snapshots consistent:\n{text}");
    let with_channel = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["verdict"]["channel_messages"].as_u64().unwrap_or(0) > 0)
        .count();
    assert!(
        with_channel >= 1,
        "some snapshot recorded messages in a channel:\n{text}"
    );
    // Without files: every snapshot of the folder it runs in; in a folder without any, a
    // clear refusal.
    let verify_in = |dir: &str| {
        Command::new(bin("coordinator"))
            .arg("verify-snapshot")
            .current_dir(p.path(dir))
            .env_remove("PRIMES_SNAPSHOTS")
            .output()
            .expect("verify-snapshot runs")
    };
    let all = verify_in(".");
    let listed = String::from_utf8_lossy(&all.stdout);
    assert!(all.status.success(), "{listed}");
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.contains(": consistent"))
            .count(),
        snaps.len(),
        "{listed}"
    );
    // Its reader gone (`verify-snapshot | head`): it stops, exit 0 (it panicked, "failed
    // printing to stdout").
    let mut cmd = Command::new(bin("coordinator"));
    cmd.arg("verify-snapshot").args(&snaps);
    let (code, log) = e2e::exit_without_reader(
        &mut cmd,
        &p.path("logs/verify-no-reader.log"),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let none = verify_in("data");
    assert_eq!(none.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no snapshots in snapshots/"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
}

#[test]
/// The scripts as a user runs them: start (health-checked), process, status, stop
/// (graceful, final snapshot), restart resumes without redoing, and all pids are gone.
fn start_and_stop_scripts() {
    let sc = Scripts::new("u", 5, 8);
    let root = sc.root();
    let (code, so) = sc.run("start_system.sh", &["simple", "2"], &sc.with_base());
    assert_eq!(code, 0, "start_system.sh failed:\n{so}");
    assert!(so.contains("worker-2 registered"), "{so}");
    wait_for(T, "reports", || {
        (0..5).all(|i| root.join(format!("data/output/u{i:03}.txt.json")).exists())
    });
    // The status file is rewritten every 0.5 s, so it may lag the reports a little.
    let status = || -> Value {
        let st = Command::new(bin("coordinator"))
            .args(["status", "--json", "--status-file"])
            .arg(root.join("run/status.json"))
            .output()
            .expect("status");
        serde_json::from_slice(&st.stdout).unwrap_or(Value::Null)
    };
    wait_for(T, "the status to show 5 files done", || {
        status()["files_done"] == 5
    });
    assert_eq!(status()["running"], true);
    // Running it again starts nothing new.
    let (code, again) = sc.run("start_system.sh", &[], &[]);
    assert_eq!(code, 0, "{again}");
    assert!(again.contains("already running"), "{again}");
    let pids: Vec<i32> = std::fs::read_dir(root.join("run"))
        .expect("run dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 4, "server, coordinator, two workers");
    let (code, out) = sc.run("stop_system.sh", &[], &[]);
    assert_eq!(code, 0, "{out}");
    for pid in pids {
        assert!(!e2e::alive(pid), "pid {pid} is gone after stop");
    }
    assert!(
        std::fs::read_dir(root.join("snapshots"))
            .expect("snapshots")
            .count()
            >= 1,
        "final snapshot written"
    );
    let text = std::fs::read_to_string(root.join("primes.txt")).expect("primes");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), lines.iter().collect::<BTreeSet<_>>().len());
    assert!(!lines.is_empty());
    // A port taken: start fails with a one-line reason and leaves nothing running.
    let blocker =
        std::net::TcpListener::bind(("127.0.0.1", sc.base)).expect("take the coordinator port");
    let (code, err) = sc.run("start_system.sh", &[], &[]);
    assert_ne!(code, 0, "start must fail when the port is taken");
    assert!(err.contains("coordinator failed to start"), "{err}");
    // One reason, no job-control lines ("line 33: 27123 Killed nohup ...") for what the
    // failed start stopped (issue 27).
    assert!(
        !err.contains("Killed") && err.matches("start_system.sh").count() == 1,
        "one line of reason and nothing else: {err}"
    );
    drop(blocker);
    let left: Vec<_> = std::fs::read_dir(root.join("run"))
        .expect("run dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
        .collect();
    assert!(left.is_empty(), "a failed start cleans up its pid files");
}

#[test]
/// `start_system.sh --fresh` keeps the cleared reports' files as spares
/// (`data/spare-reports/`), and the next run's reports are written over them: every new
/// report is exact, is one of the old files (no file created), and nothing stale shows.
fn a_fresh_start_writes_its_reports_over_the_last_runs() {
    use std::os::unix::fs::MetadataExt;
    let sc = Scripts::new("s", 6, 21);
    let root = sc.root();
    let reports = || -> Vec<PathBuf> {
        (0..6)
            .map(|i| root.join(format!("data/output/s{i:03}.txt.json")))
            .collect()
    };
    let run = |args: &[&str]| {
        let (code, so) = sc.run("start_system.sh", args, &sc.with_base());
        assert_eq!(code, 0, "start_system.sh failed:\n{so}");
        wait_for(T, "every report", || reports().iter().all(|p| p.exists()));
        let primes = std::fs::read_to_string(root.join("primes.txt")).expect("primes");
        let (code, out) = sc.run("stop_system.sh", &[], &[]);
        assert_eq!(code, 0, "{out}");
        let mut primes: Vec<String> = primes.lines().map(str::to_string).collect();
        primes.sort();
        let bodies: Vec<Value> = reports()
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).expect("report")).expect("json"))
            .collect();
        let inodes: BTreeSet<u64> = reports()
            .iter()
            .map(|p| std::fs::metadata(p).expect("report").ino())
            .collect();
        (primes, bodies, inodes)
    };
    let (primes1, bodies1, inodes1) = run(&["simple", "2"]);
    let (primes2, bodies2, inodes2) = run(&["simple", "2", "--fresh"]);
    assert_eq!(primes1, primes2, "the same primes after a fresh start");
    for (i, (a, b)) in bodies1.iter().zip(&bodies2).enumerate() {
        assert_eq!(b["status"], "done", "report {i}: {b}");
        assert_eq!(b["file"], format!("s{i:03}.txt"));
        for k in ["primes_found", "numbers_read", "lines"] {
            assert_eq!(a[k], b[k], "report {i}, {k}");
        }
    }
    assert!(
        inodes2.is_subset(&inodes1),
        "the new reports are the old files written over: {inodes1:?} then {inodes2:?}"
    );
    // Used up: no spare report is left in the pool.
    let mut left = Vec::new();
    let mut stack = vec![root.join("data/spare-reports")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                _ => left.push(e.path()),
            }
        }
    }
    assert!(
        left.iter().all(|p| !p.to_string_lossy().contains("/s00")),
        "spares of these reports left: {left:?}"
    );
}
