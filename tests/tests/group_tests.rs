//! A replicated group of coordinators (Raft, real processes): the leader killed mid-run and
//! never restarted, each new leader killed in turn, a follower lost and caught up by a
//! state-machine snapshot, the whole group killed and restarted without redoing anything.
//! Root primes.txt must be exact and every snapshot a consistent cut, across failovers.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{bin, wait_for};
use serde_json::Value;

use e2e::pipeline::{write_inputs, Pipeline};

const T: Duration = Duration::from_secs(90);

fn s(x: &str) -> String {
    x.to_string()
}

/// A group of three on one file server, snapshots every 400 ms, workers slowed a little so
/// the run lasts long enough to kill things in the middle of it.
fn group(files: usize, lines: usize, extra: &[&str]) -> Pipeline {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "g", files, lines, 11);
    let mut flags = vec![s("--snapshot-ms"), s("400")];
    flags.extend(extra.iter().map(|x| s(x)));
    p.coord_flags_mut(flags);
    p.worker_flags_mut(vec![s("--delay-ms"), s("60")]);
    p.simple();
    p.start_group(3);
    p
}

/// The snapshot files (`*.json`) in the root snapshots/.
fn snapshot_files(p: &Pipeline) -> Vec<PathBuf> {
    std::fs::read_dir(p.path("snapshots"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

/// Every snapshot in snapshots/ verifies as a consistent cut; how many there are.
fn verify_snapshots(p: &Pipeline) -> usize {
    let snaps = snapshot_files(p);
    if snaps.is_empty() {
        return 0;
    }
    let out = Command::new(bin("coordinator"))
        .arg("verify-snapshot")
        .args(&snaps)
        .output()
        .expect("verify-snapshot runs");
    assert!(
        out.status.success(),
        "every snapshot is a consistent cut:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    snaps.len()
}

/// The terms recorded in the snapshots.
fn snapshot_terms(p: &Pipeline) -> Vec<u64> {
    let mut terms: Vec<u64> = snapshot_files(p)
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter_map(|v| v["group"]["term"].as_u64())
        .collect();
    terms.sort();
    terms.dedup();
    terms
}

fn sorted_lines(path: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(s)
        .collect();
    v.sort();
    v
}

#[test]
fn group_leader_killed_mid_run_is_replaced() {
    let mut p = group(24, 20_000, &[]);
    let first = p.wait_leader_other_than(None, T);
    for i in 1..=2 {
        p.start_worker(&format!("worker-{i}"));
    }
    wait_for(T, "some files reported, not all", || {
        let left = p.unreported().len();
        left < 22
    });
    assert!(!p.unreported().is_empty(), "killed mid-run");
    let t0 = Instant::now();
    p.kill_member(first);
    let next = p.wait_leader_other_than(Some(first), T);
    let took = t0.elapsed();
    // The dead leader is never restarted.
    p.wait_all_reported(T);
    p.assert_exact();
    let n = verify_snapshots(&p);
    assert!(n >= 1, "snapshots were taken");
    // The snapshots kept (the newest 20) name the term of the leader that took them.
    let terms = snapshot_terms(&p);
    assert!(
        !terms.is_empty() && terms.iter().all(|t| *t >= 1),
        "snapshots record their term: {terms:?}"
    );
    // The surviving replicas hold the same primes as the root file.
    let root = sorted_lines(&p.path("primes.txt"));
    let replica =
        sorted_lines(&p.path(&format!("data/coordinators/coordinator-{next}/primes.txt")));
    assert_eq!(root, replica, "the new leader's replica is the root primes");
    // Measured precisely in BENCHMARKS.md (goal 2 s); a loaded test machine gets slack.
    assert!(
        took < Duration::from_secs(10),
        "a new leader took {took:?}:\n{}",
        p.member_log(next, 20)
    );
}

#[test]
fn group_each_new_leader_killed_in_turn() {
    let mut p = group(40, 15_000, &[]);
    let mut leader = p.wait_leader_other_than(None, T);
    for i in 1..=2 {
        p.start_worker(&format!("worker-{i}"));
    }
    for round in 0..3 {
        let before = p.unreported().len();
        wait_for(T, "progress under this leader", || {
            p.unreported().len() + 2 <= before || p.unreported().is_empty()
        });
        if p.unreported().is_empty() {
            break;
        }
        p.kill_member(leader);
        let next = p.wait_leader_other_than(Some(leader), T);
        // The dead one comes back as a follower and catches up.
        p.start_member(leader);
        eprintln!("round {round}: coordinator-{leader} killed, coordinator-{next} leads");
        leader = next;
    }
    p.wait_all_reported(T);
    p.assert_exact();
    assert!(verify_snapshots(&p) >= 1);
}

#[test]
fn group_follower_lost_then_caught_up_by_snapshot() {
    // A state-machine snapshot every 4 entries: the log the returning follower missed is
    // compacted away, so it must install a snapshot.
    let mut p = group(30, 6_000, &["--group-snapshot-entries", "4"]);
    let leader = p.wait_leader_other_than(None, T);
    let follower = if leader == 1 { 2 } else { 1 };
    p.kill_member(follower);
    for i in 1..=2 {
        p.start_worker(&format!("worker-{i}"));
    }
    p.wait_all_reported(T);
    p.assert_exact();
    assert_eq!(
        p.leader(),
        Some(leader),
        "losing a follower changed nothing"
    );
    // The leader's log is compacted past what the follower has (openraft postpones a
    // purge while a replication to the member that is down is in flight: new small files
    // give it more chances), so the follower must install a snapshot.
    let log_of = |id: usize| {
        std::fs::read(p.path(&format!(
            "data/coordinators/coordinator-{id}/raft-log.jsonl"
        )))
        .unwrap_or_default()
    };
    let had = e2e::pipeline::last_index(&log_of(follower));
    let mut n = 0;
    wait_for(
        T,
        "the leader's log compacted past what the follower has",
        || {
            n += 1;
            if n % 10 == 0 {
                write_inputs(&p.path("data/input"), &format!("late{n}-"), 1, 50, n as u64);
            }
            e2e::pipeline::purged_index(&log_of(leader)) > had
        },
    );
    p.wait_all_reported(T);
    let files = std::fs::read_dir(p.path("data/input"))
        .map(|d| d.count())
        .unwrap_or(0);
    p.start_member(follower);
    let root = sorted_lines(&p.path("primes.txt"));
    let replica = p.path(&format!(
        "data/coordinators/coordinator-{follower}/primes.txt"
    ));
    let reports = || {
        std::fs::read_dir(p.path(&format!("data/coordinators/coordinator-{follower}/output")))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // Its primes and its reports (later entries than the primes they count) both arrive.
    wait_for(T, "the returning follower to catch up", || {
        sorted_lines(&replica) == root && reports() == files
    });
    // The log line is written just after the files are in place.
    wait_for(
        Duration::from_secs(20),
        "the follower's log of the install",
        || {
            p.member_log_all(follower)
                .contains("installed a snapshot from the leader")
        },
    );
}

#[test]
fn group_killed_whole_and_restarted_redoes_nothing() {
    let mut p = group(8, 10_000, &[]);
    p.wait_leader_other_than(None, T);
    for i in 1..=2 {
        p.start_worker(&format!("worker-{i}"));
    }
    p.wait_all_reported(T);
    p.assert_exact();
    let report = |p: &Pipeline| std::fs::read(p.path("data/output/g000.txt.json")).ok();
    let before = report(&p);
    for id in 1..=3 {
        p.kill_member(id);
    }
    for id in 1..=3 {
        p.start_member(id);
    }
    p.wait_leader_other_than(None, T);
    wait_for(T, "both workers back with the new leader", || {
        let st = p.status();
        st["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().filter(|w| w["state"] != "disconnected").count() == 2)
            && st["files_done"] == 8
    });
    let st = p.status();
    assert_eq!(
        st["totals"]["numbers_tested"], 0,
        "nothing redone after the restart: {st}"
    );
    assert_eq!(report(&p), before, "reports untouched");
    // And it goes on: a new file is processed.
    write_inputs(&p.path("data/input"), "h", 1, 2_000, 5);
    p.wait_all_reported(T);
    p.assert_exact();
    verify_snapshots(&p);
}

#[test]
fn group_takes_over_a_single_coordinators_state() {
    // A system run with one coordinator (simple mode before), then switched to a group on
    // the same folders: its primes and reports become the group's; nothing is redone.
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "s", 6, 5_000, 3);
    p.simple();
    p.start_coordinator();
    p.start_worker("worker-1");
    p.wait_all_reported(T);
    p.assert_exact();
    let primes_before = sorted_lines(&p.path("primes.txt"));
    p.kill_coordinator();
    p.kill_worker("worker-1");
    p.coord_flags_mut(vec![s("--snapshot-ms"), s("400")]);
    p.start_group(3);
    p.start_worker("worker-1");
    p.wait_leader_other_than(None, T);
    wait_for(T, "the worker registered with the group's leader", || {
        let st = p.status();
        st["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["state"] != "disconnected"))
            && st["files_done"] == 6
    });
    assert_eq!(
        p.status()["totals"]["numbers_tested"],
        0,
        "nothing redone after the switch"
    );
    assert_eq!(sorted_lines(&p.path("primes.txt")), primes_before);
    write_inputs(&p.path("data/input"), "t", 2, 3_000, 4);
    p.wait_all_reported(T);
    p.assert_exact();
}

#[test]
fn switching_between_simple_and_replicated_keeps_everything() {
    // The scripts' modes are two groups on the same root files: a group of one (its own
    // folder), then three, then one again; each switch merges what the other found.
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "a", 4, 4_000, 21);
    p.simple();
    p.coord_flags_mut(e2e::pipeline::simple_flags());
    p.start_group(1);
    p.start_worker("worker-1");
    p.wait_all_reported(T);
    p.assert_exact();
    p.kill_member(1);
    // Replicated: three members with a folder of their own.
    p.coord_flags_mut(vec![s("--snapshot-ms"), s("400")]);
    p.start_group(3);
    // The worker learns the new addresses as a user's restart of the scripts gives them.
    p.kill_worker("worker-1");
    p.start_worker("worker-1");
    write_inputs(&p.path("data/input"), "b", 3, 4_000, 22);
    p.wait_all_reported(T);
    p.assert_exact();
    for id in 1..=3 {
        p.kill_member(id);
    }
    // Simple again: its old state plus what the group of three found.
    p.coord_flags_mut(e2e::pipeline::simple_flags());
    p.start_group(1);
    p.kill_worker("worker-1");
    p.start_worker("worker-1");
    p.wait_leader_other_than(None, T);
    write_inputs(&p.path("data/input"), "c", 2, 4_000, 23);
    p.wait_all_reported(T);
    p.assert_exact();
    wait_for(T, "the worker back with the group of one", || {
        p.status()["files_done"] == 9
    });
    assert_eq!(
        p.status()["totals"]["numbers_tested"],
        8_000,
        "only the two new files were tested after the last switch: {}",
        p.status()["totals"]
    );
}

#[test]
fn group_leader_paused_is_replaced() {
    // SIGSTOP of the leader: its kernel still acknowledges the workers' heartbeats, so only
    // its silence (no `alive`) tells them; the others elect a leader and the job goes on.
    let mut p = group(30, 8_000, &[]);
    let first = p.wait_leader_other_than(None, T);
    for i in 1..=2 {
        p.start_worker(&format!("worker-{i}"));
    }
    wait_for(T, "some files reported", || p.unreported().len() < 28);
    p.member_signal(first, libc::SIGSTOP);
    let before = p.unreported().len();
    wait_for(T, "progress while the old leader is paused", || {
        p.unreported().len() + 3 <= before || p.unreported().is_empty()
    });
    p.member_signal(first, libc::SIGCONT);
    p.wait_all_reported(T);
    p.assert_exact();
    assert!(verify_snapshots(&p) >= 1);
    // The resumed old leader writes no snapshot at root: the new leader's fence says it no
    // longer keeps the root files (one numbered as the new leader's next was seen).
    let mut seqs: Vec<String> = snapshot_files(&p)
        .iter()
        .filter_map(|f| {
            let n = f.file_name()?.to_string_lossy().into_owned();
            n.strip_prefix("snapshot_")
                .and_then(|r| r.split('_').next())
                .map(String::from)
        })
        .collect();
    let n = seqs.len();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "two snapshots share a number: {seqs:?}");
    // Resumed, the old leader's proposals fail at once until it learns it was deposed: it
    // pauses between retries instead of proposing its handed-back flush again and again
    // (63,000 "flush not durable" lines in ~1.2 s were seen from outside).
    let log = p.member_log_all(first);
    let retries = log.matches("flush not durable").count();
    assert!(
        retries <= 40,
        "the resumed old leader retried its flush {retries} times"
    );
    // And it learns it was deposed from the others' answers, at once, instead of waiting
    // out its lease for a majority that would confirm it (1.2 s of failing flushes).
    assert!(
        log.contains("lost the lead") && !log.contains("no majority confirms this leader"),
        "the resumed old leader did not step down as deposed:\n{}",
        p.member_log(first, 30)
    );
}

/// Starts two workers and waits until every input is reported; primes.txt exact.
fn two_workers_to_the_end(p: &mut Pipeline) {
    for i in 1..=2 {
        p.start_worker(&format!("worker-{i}"));
    }
    p.wait_all_reported(T);
    p.assert_exact();
}

/// Runs `p`'s inputs through a group of three and two workers to the end: exact, with the
/// first leader serving throughout (none lost or gave up its lead); that leader.
fn one_leader_throughout(p: &mut Pipeline) -> usize {
    p.simple();
    p.start_group(3);
    let first = p.wait_leader_other_than(None, T);
    two_workers_to_the_end(p);
    assert_eq!(p.leader(), Some(first), "the same leader throughout");
    for id in 1..=3 {
        let log = p.member_log_all(id);
        assert!(
            !log.contains("stop serving") && !log.contains("lost the lead"),
            "coordinator-{id} lost or gave up the lead while healthy:\n{}",
            p.member_log(id, 30)
        );
    }
    first
}

#[test]
fn group_leader_keeps_its_lead_through_slow_applies() {
    // Every member takes 2 s to apply each entry of reports (a slow disk, on purpose), longer
    // than the leader's lease (4 x the 300 ms election timeout). A leader that waited for its
    // own apply to confirm its lead stopped serving at every such entry, with every member up
    // and answering ("no majority confirms this leader"), and handed all work out again.
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "slow", 6, 2_000, 5);
    p.coord_env
        .push(("PRIMES_SLOW_AT", s("apply-reports:2000")));
    one_leader_throughout(&mut p);
}

#[test]
fn group_leader_keeps_its_lead_through_missed_heartbeat_rounds() {
    // For 0.8 s of every 1.8 s (from 0.4 s after their first answer), the followers answer
    // every AppendEntries 0.3 s late (they hear the leader on time: no election), so every
    // round of heartbeats in such a window misses its quorum (openraft waits one heartbeat
    // interval, 0.1 s, for each answer); the leader checks its lead every 0.6 s, so a check
    // falls in every window, and the job lasts through two. A leader that stopped serving at
    // the first missed round gave up its lead ~1 run in 3 under ordinary load, handing every
    // chunk out again; it keeps it while rounds are missed within its 1.2 s lease.
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "beat", 100, 1_000, 9);
    p.coord_env
        .push(("PRIMES_SLOW_ANSWERS", s("400:800:300:1800")));
    p.worker_flags_mut(vec![s("--delay-ms"), s("60")]);
    let first = one_leader_throughout(&mut p);
    let leader_log = p.member_log_all(first);
    assert!(
        leader_log.contains("a majority confirms this leader after missed rounds"),
        "the slow window never made the leader miss a round (the test proves nothing):\n{}",
        p.member_log(first, 40)
    );
}

#[test]
fn group_started_one_member_at_a_time_elects_the_first() {
    // start_system.sh starts the members one after another, each once the one before has
    // written its address. The first stood for election at once: its votes to members not
    // started yet were refused, and the group had no leader until the second member's own
    // turn to stand, 600 ms later (seen at every fresh replicated start). It now stands once
    // a majority listens: it leads in term 1, and no other member had to stand.
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "seq", 4, 500, 3);
    p.simple();
    p.plan_group(3);
    p.start_member(1);
    wait_for(T, "coordinator-1 to stand or wait for a majority", || {
        let l = p.member_log_all(1);
        l.contains("group initialized") || l.contains("waiting for a majority")
    });
    p.start_member(2);
    wait_for(T, "coordinator-2 to start", || {
        p.member_log_all(2).contains("replica starting")
    });
    p.start_member(3);
    let leader = p.wait_leader_other_than(None, T);
    two_workers_to_the_end(&mut p);
    assert_eq!(
        leader,
        1,
        "the first member leads:\n{}",
        p.member_log(leader, 30)
    );
    assert!(
        p.member_log_all(1).contains("coordinator-1 leads term=1"),
        "coordinator-1 won the first election:\n{}",
        p.member_log(1, 30)
    );
    for id in 2..=3 {
        assert!(
            !p.member_log_all(id).contains("group initialized"),
            "coordinator-{id} had to stand for election itself:\n{}",
            p.member_log(id, 30)
        );
    }
}

#[test]
fn group_takes_over_with_reports_of_long_names() {
    // Found by a hostile-user pass: an input named 240 bytes got its report (245 bytes),
    // but a new leader taking the root files links or copies each report under a hidden
    // temporary name (`.NAME.copyPID-RANDOM`, 24 bytes more) that no file system holds:
    // it never served again, after a failover or any restart. Names up to 250 bytes (the
    // longest that can have a report) are reported, and the group takes over.
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "l", 3, 300, 4);
    let long = "L".repeat(246) + ".txt";
    std::fs::write(p.path(&format!("data/input/{long}")), "7\n11\n13\n").expect("write");
    p.simple();
    p.start_group(3);
    let first = p.wait_leader_other_than(None, T);
    two_workers_to_the_end(&mut p);
    assert!(p.path(&format!("data/output/{long}.json")).exists());
    p.kill_member(first);
    let next = p.wait_leader_other_than(Some(first), Duration::from_secs(30));
    assert_ne!(next, first);
    p.assert_exact();
}

#[test]
fn submit_refuses_a_name_taken_in_the_jobs_folder() {
    // Found by a hostile-user pass: a job file dropped into data/jobs (or placed there by
    // the other mode's group before a switch) was replaced by `coordinator submit` with the
    // same name and another line, silently; the group's log did not know it. Refused now
    // unless --replace; the same line, however spaced, is accepted.
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "j", 1, 10, 1);
    std::fs::create_dir_all(p.path("data/jobs")).expect("jobs folder");
    std::fs::write(p.path("data/jobs/k.job"), "count 1 50\n").expect("a job file");
    p.simple();
    p.plan_group(1);
    p.start_member(1);
    p.wait_leader_other_than(None, T);
    let raft = p.members[0].2.clone();
    let submit = |line: &str, extra: &[&str]| {
        let out = Command::new(bin("coordinator"))
            .args(["submit", "k", line, "--to", &raft])
            .args(extra)
            .current_dir(p.path(""))
            .env("PRIMES_KEY_FILE", p.path("run/cluster.key"))
            .output()
            .expect("coordinator submit runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = submit("count 1 60", &[]);
    assert_eq!(code, Some(1), "refused: {err}");
    assert!(
        err.contains("in the jobs folder with another line (count 1 50)")
            && err.contains("--replace"),
        "{err}"
    );
    let read = || std::fs::read_to_string(p.path("data/jobs/k.job")).unwrap_or_default();
    assert_eq!(read(), "count 1 50\n", "the job file is left as it was");
    let (code, err) = submit("count  1   50", &[]);
    assert_eq!(code, Some(0), "the same line, spaced otherwise: {err}");
    let (code, err) = submit("count 1 60", &["--replace"]);
    assert_eq!(code, Some(0), "replaced: {err}");
    wait_for(T, "the replaced job file", || read() == "count 1 60\n");
    // Another cluster key: refused at once, not after waiting out --timeout-ms for a
    // leader (which it did, 15 s by default).
    let other = p.path("run/other.key");
    std::fs::write(&other, "cd".repeat(32)).expect("another key");
    let started = Instant::now();
    let out = Command::new(bin("coordinator"))
        .args([
            "submit",
            "k2",
            "nth 5",
            "--to",
            &raft,
            "--timeout-ms",
            "60000",
        ])
        .current_dir(p.path(""))
        .env("PRIMES_KEY_FILE", &other)
        .output()
        .expect("coordinator submit runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cluster key"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up at once, not at the 60 s timeout: {err}"
    );
}

/// `coordinator status` (`--json` or text) as a user runs it in the system's folder.
fn status_cmd(p: &Pipeline, json: bool) -> (Value, String) {
    let (v, text, _) = status_run(p, json);
    (v, text)
}

/// [`status_cmd`] with its exit code.
fn status_run(p: &Pipeline, json: bool) -> (Value, String, Option<i32>) {
    let mut cmd = Command::new(bin("coordinator"));
    cmd.arg("status").current_dir(p.path(""));
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("coordinator status runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v = if json {
        serde_json::from_str(&text).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    (v, text, out.status.code())
}

#[test]
fn group_status_without_a_majority() {
    // Issue 27, defect 1: the two followers killed, the leader left alone. Status asks the
    // members: not running, who is up, no leader and why, each member's applied index; the
    // lone leader's last flush (which cannot commit) does not keep it "running".
    let mut p = group(12, 20_000, &[]);
    let leader = p.wait_leader_other_than(None, T);
    p.start_worker("worker-1");
    wait_for(T, "the worker busy under the leader", || {
        p.unreported().len() < 12
    });
    wait_for(T, "status: the leader runs", || {
        let (v, _) = status_cmd(&p, true);
        v["running"] == true && v["coordinators"]["leader"] == leader as u64
    });
    let (_, _, code) = status_run(&p, false);
    assert_eq!(code, Some(0), "status exits 0 while a coordinator runs");
    // Its reader gone before it writes (`status | grep -q`): the same exit status, no panic
    // (it exited 101 with a backtrace).
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(bin("coordinator"))
        .arg("status")
        .current_dir(p.path(""))
        .stdout(writer)
        .output()
        .expect("coordinator status runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `status --watch` whose reader goes: over at its first write, with that exit status
    // (it exited 1, "Broken pipe"). Killed when dropped, should it loop on.
    for json in [true, false] {
        let mut cmd = Command::new(bin("coordinator"));
        cmd.args(["status", "--watch"]).current_dir(p.path(""));
        if json {
            cmd.arg("--json");
        }
        let (status, log) = e2e::exit_without_reader(
            &mut cmd,
            &p.path("logs/status-watch.log"),
            Duration::from_secs(10),
        );
        assert_eq!(
            status,
            Some(0),
            "--watch (json {json}) without a reader (None: it did not exit):\n{log}"
        );
    }
    for id in (1..=3).filter(|i| *i != leader) {
        p.kill_member(id);
    }
    let t0 = Instant::now();
    let mut last = String::new();
    wait_for(
        Duration::from_secs(20),
        "status: no majority, not running",
        || {
            let (v, text) = status_cmd(&p, true);
            last = text;
            let c = &v["coordinators"];
            v["running"] == false
                && c["up"] == serde_json::json!([leader])
                && c["leader"].is_null()
                && c["summary"]
                    .as_str()
                    .is_some_and(|s| s.contains("1 of 3 members up, no majority"))
                && c["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().all(|m| m["applied_index"].as_u64().is_some()))
        },
    );
    eprintln!("status said so {:?} after the kills:\n{last}", t0.elapsed());
    let (_, text, code) = status_run(&p, false);
    assert!(
        text.starts_with("coordinator: NOT RUNNING: no coordinator leads: 1 of 3 members up"),
        "{text}"
    );
    assert_eq!(code, Some(3), "status exits 3 when no coordinator runs");
    assert_eq!(status_run(&p, true).2, Some(3), "with --json too");
    // The lone leader stops serving and does not wait without limit on its last flush.
    wait_for(
        Duration::from_secs(30),
        "the lone leader's coordinator stopped",
        || p.member_log_all(leader).contains("coordinator stopped"),
    );
    assert_eq!(p.status()["running"], false, "its status file says so too");
}
