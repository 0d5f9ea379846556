//! Bulk data off the consensus path, through a real group: `primes` jobs whose flushes
//! carry megabytes of primes (range primes travel by reference and followers regenerate
//! them), with the leader killed, a member down across a log compaction, and a mode switch
//! with a large state. Each checks primes.txt exactly and that the members' files are the
//! same bytes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::{bin, wait_for};

use e2e::pipeline::{write_inputs, Pipeline};

const T: Duration = Duration::from_secs(180);

/// A range of ~1.1 M primes (~14 MB of primes.txt) near 10^12: flushes of megabytes.
const LO: u64 = 1_000_000_000_000;
const HI: u64 = 1_000_030_000_000;

fn s(x: &str) -> String {
    x.to_string()
}

fn add_job(p: &Pipeline, name: &str, line: &str) {
    let tmp = p.path(&format!("data/{name}.tmp"));
    std::fs::write(&tmp, format!("{line}\n")).expect("write job");
    std::fs::create_dir_all(p.path("data/jobs")).expect("mkdir jobs");
    std::fs::rename(&tmp, p.path(&format!("data/jobs/{name}.job"))).expect("move job");
}

fn job_done(p: &Pipeline, name: &str) -> bool {
    std::fs::read(p.path(&format!("data/output/jobs/{name}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["status"] == "done")
}

/// The primes `worker gen` prints for [lo, hi] (our sieve's baseline, checked elsewhere
/// against independent sources) plus those of the input files (`worker check`).
fn expected(p: &Pipeline, ranges: &[(u64, u64)]) -> BTreeSet<u64> {
    let mut want = BTreeSet::new();
    for (lo, hi) in ranges {
        let out = Command::new(bin("worker"))
            .args(["gen", &format!("primes {lo} {hi}")])
            .output()
            .expect("worker gen");
        assert!(out.status.success(), "worker gen failed");
        want.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.parse::<u64>().expect("a prime")),
        );
    }
    let inputs: Vec<_> = std::fs::read_dir(p.path("data/input"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    if !inputs.is_empty() {
        let out = Command::new(bin("worker"))
            .arg("check")
            .args(&inputs)
            .output()
            .expect("worker check");
        want.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.parse::<u64>().expect("a prime")),
        );
    }
    want
}

/// primes.txt at `path` holds exactly `want`, each once, no torn line.
fn assert_primes(path: &Path, want: &BTreeSet<u64>) {
    let text = std::fs::read_to_string(path).expect("primes.txt");
    assert!(text.is_empty() || text.ends_with('\n'), "no torn line");
    let got: Vec<u64> = text
        .lines()
        .map(|l| l.parse().unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let set: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(set.len(), got.len(), "no prime twice in {}", path.display());
    let missing: Vec<_> = want.difference(&set).take(5).collect();
    let extra: Vec<_> = set.difference(want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} differs: missing {missing:?}, extra {extra:?}",
        path.display()
    );
}

fn member_file(p: &Pipeline, dir: &str, id: usize, file: &str) -> Vec<u8> {
    std::fs::read(p.path(&format!("{dir}/coordinator-{id}/{file}"))).unwrap_or_default()
}

/// Waits until the members `ids` hold the same bytes as the root primes.txt and ledger
/// (each has applied everything), then checks it.
fn wait_members_identical(p: &Pipeline, dir: &str, ids: &[usize]) {
    let root = || {
        (
            std::fs::read(p.path("primes.txt")).unwrap_or_default(),
            std::fs::read(p.path("primes.txt.ranges")).unwrap_or_default(),
        )
    };
    wait_for(
        T,
        "every member's files the same bytes as the root's",
        || {
            let (primes, ledger) = root();
            ids.iter().all(|id| {
                member_file(p, dir, *id, "primes.txt") == primes
                    && member_file(p, dir, *id, "primes.txt.ranges") == ledger
            })
        },
    );
}

/// The files of `sub` (a folder of job reports), by name, of the root output folder and of
/// each member's own.
fn reports_of(p: &Pipeline, root: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(p.path(root)) {
        for e in rd.flatten() {
            if let Ok(b) = std::fs::read(e.path()) {
                out.insert(e.file_name().to_string_lossy().into_owned(), b);
            }
        }
    }
    out
}

/// The largest line of every member's Raft log: no entry carries bulk data.
fn assert_log_lines_bounded(p: &Pipeline, dir: &str, ids: &[usize]) {
    for id in ids {
        let log = member_file(p, dir, *id, "raft-log.jsonl");
        let longest = log
            .split(|b| *b == b'\n')
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        assert!(
            longest <= 1 << 20,
            "coordinator-{id}'s log has a line of {longest} bytes"
        );
    }
}

fn group_of_three(extra: &[&str]) -> Pipeline {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "f", 2, 3_000, 41);
    let mut flags = vec![
        s("--snapshot-ms"),
        s("1000"),
        s("--segment-numbers"),
        s("2000000"),
    ];
    flags.extend(extra.iter().map(|x| s(x)));
    p.coord_flags_mut(flags);
    p.simple();
    p.start_group(3);
    p
}

#[test]
/// A job of ~1.1 M primes through a group of three, its leader killed mid-job: the job
/// completes, primes.txt is exact, the two members left hold the same bytes, and no log
/// line exceeds 1 MiB.
fn bulk_job_through_a_group_survives_a_leader_kill() {
    let mut p = group_of_three(&[]);
    let first = p.wait_leader_other_than(None, T);
    for i in 1..=2 {
        p.start_worker(&format!("worker-{i}"));
    }
    add_job(&p, "big", &format!("primes {LO} {HI}"));
    // Other kinds beside it: a factorial's value and every report must reach every member.
    add_job(&p, "fact", "factorial 3000");
    add_job(&p, "cnt", "count 1000000000 1050000000");
    add_job(&p, "nth", "nth 1000000");
    wait_for(T, "part of the job written", || {
        std::fs::metadata(p.path("primes.txt")).map_or(0, |m| m.len()) > 3 << 20
    });
    assert!(!job_done(&p, "big"), "killed mid-job");
    p.kill_member(first);
    p.wait_leader_other_than(Some(first), T);
    wait_for(T, "the jobs' reports", || {
        ["big", "fact", "cnt", "nth"]
            .iter()
            .all(|j| job_done(&p, j))
    });
    p.wait_all_reported(T);
    let want = expected(&p, &[(LO, HI)]);
    assert_primes(&p.path("primes.txt"), &want);
    let left: Vec<usize> = (1..=3).filter(|i| *i != first).collect();
    wait_members_identical(&p, "data/coordinators", &left);
    assert_log_lines_bounded(&p, "data/coordinators", &left);
    // Every job report (a factorial's with its digits and hash, and its value file) is
    // the same on every member as at the root; the ledger has no line twice.
    let root = reports_of(&p, "data/output/jobs");
    let fact: serde_json::Value =
        serde_json::from_slice(root.get("fact.json").map_or(&[][..], |v| v)).expect("fact.json");
    assert!(
        fact["digits"].as_u64().is_some() && fact["sha256"].as_str().is_some(),
        "the factorial's report has its value: {fact}"
    );
    assert!(root.contains_key("fact.txt"), "the factorial's value file");
    let nth: serde_json::Value =
        serde_json::from_slice(root.get("nth.json").map_or(&[][..], |v| v)).expect("nth.json");
    assert_eq!(nth["answer"], "15485863");
    for id in &left {
        let theirs = reports_of(
            &p,
            &format!("data/coordinators/coordinator-{id}/output/jobs"),
        );
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            root.keys().collect::<Vec<_>>(),
            "coordinator-{id} has every job report"
        );
        assert!(
            theirs == root,
            "coordinator-{id}'s job reports are the root's"
        );
    }
    let ledger = std::fs::read_to_string(p.path("primes.txt.ranges")).expect("ledger");
    let lines: Vec<&str> = ledger.lines().collect();
    let distinct: BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(distinct.len(), lines.len(), "no ledger line twice");
}

#[test]
/// A member down while a large job runs, its log compacted meanwhile (a snapshot every 4
/// entries): it comes back by a streamed snapshot install and ends with the same bytes.
fn bulk_member_down_across_a_compaction_catches_up() {
    let mut p = group_of_three(&["--group-snapshot-entries", "4"]);
    let leader = p.wait_leader_other_than(None, T);
    let down = if leader == 1 { 2 } else { 1 };
    p.kill_member(down);
    for i in 1..=2 {
        p.start_worker(&format!("worker-{i}"));
    }
    add_job(&p, "big", &format!("primes {LO} {HI}"));
    // More entries than the 16 a snapshot leaves in the log: the log the member missed
    // is gone.
    write_inputs(&p.path("data/input"), "more", 30, 500, 43);
    wait_for(T, "the job's report", || job_done(&p, "big"));
    p.wait_all_reported(T);
    assert_primes(&p.path("primes.txt"), &expected(&p, &[(LO, HI)]));
    // The leader's log has let entries go (it begins with a purge record), so the member
    // cannot catch up from the log alone. openraft postpones a purge while a replication
    // to the member that is down is in flight: new entries (small files) give it more
    // chances.
    let had = e2e::pipeline::last_index(&member_file(
        &p,
        "data/coordinators",
        down,
        "raft-log.jsonl",
    ));
    let mut n = 0;
    wait_for(
        T,
        "the leader's log compacted past what the member has",
        || {
            n += 1;
            if n % 10 == 0 {
                write_inputs(&p.path("data/input"), &format!("late{n}-"), 1, 50, n as u64);
            }
            e2e::pipeline::purged_index(&member_file(
                &p,
                "data/coordinators",
                leader,
                "raft-log.jsonl",
            )) > had
        },
    );
    p.wait_all_reported(T);
    p.start_member(down);
    wait_members_identical(&p, "data/coordinators", &[1, 2, 3]);
    let log = || p.member_log_all(down);
    // The log line is written just after the files are in place.
    wait_for(
        Duration::from_secs(20),
        "the member's log of the install",
        || log().contains("installed a snapshot from the leader"),
    );
}

/// The flags of the scripts' simple mode, with the bulk tests' segments.
fn simple_flags() -> Vec<String> {
    let mut flags = e2e::pipeline::simple_flags();
    flags.extend([s("--segment-numbers"), s("2000000")]);
    flags
}

#[test]
/// Simple mode with a large state, switched to replicated (the root files imported by
/// reference, streamed into every member) and back, with a job in each mode: nothing lost,
/// nothing twice, the members identical.
fn bulk_mode_switch_with_a_large_state() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "f", 2, 3_000, 42);
    p.simple();
    p.coord_flags_mut(simple_flags());
    p.start_group(1);
    p.start_worker("worker-1");
    add_job(&p, "one", &format!("primes {LO} {HI}"));
    wait_for(T, "the first job", || job_done(&p, "one"));
    p.wait_all_reported(T);
    p.kill_member(1);
    p.kill_worker("worker-1");
    // Replicated: three members that have never seen the state.
    p.coord_flags_mut(vec![
        s("--snapshot-ms"),
        s("1000"),
        s("--segment-numbers"),
        s("2000000"),
    ]);
    p.start_group(3);
    p.start_worker("worker-1");
    let (lo2, hi2) = (HI - 5_000_000, HI + 10_000_000);
    add_job(&p, "two", &format!("primes {lo2} {hi2}"));
    wait_for(T, "the second job", || job_done(&p, "two"));
    let want = expected(&p, &[(LO, HI), (lo2, hi2)]);
    assert_primes(&p.path("primes.txt"), &want);
    wait_members_identical(&p, "data/coordinators", &[1, 2, 3]);
    assert_log_lines_bounded(&p, "data/coordinators", &[1, 2, 3]);
    for id in 1..=3 {
        p.kill_member(id);
    }
    p.kill_worker("worker-1");
    // Simple again: its own state plus what the three found.
    p.coord_flags_mut(simple_flags());
    p.start_group(1);
    p.start_worker("worker-1");
    let (lo3, hi3) = (HI + 5_000_000, HI + 12_000_000);
    add_job(&p, "three", &format!("primes {lo3} {hi3}"));
    wait_for(T, "the third job", || job_done(&p, "three"));
    assert_primes(
        &p.path("primes.txt"),
        &expected(&p, &[(LO, HI), (lo2, hi2), (lo3, hi3)]),
    );
    wait_members_identical(&p, "data/coordinators/simple", &[1]);
}
