//! Generation jobs (`data/jobs/`) through the real cluster: answers checked against
//! independent sources (a plain sieve here, the `machine-prime` crate's test, published
//! values of π(x) and p_n, num-bigint's straightforward product), each prime once across
//! files and overlapping ranges, and kills in the middle of a range job.

use std::collections::BTreeSet;
use std::time::Duration;

use num_bigint::BigUint;
use serde_json::Value;

use e2e::pipeline::Pipeline;
use e2e::wait_for;

const T: Duration = Duration::from_secs(120);

fn s(x: &str) -> String {
    x.to_string()
}

/// The primes in [lo, hi] by a plain sieve up to 10^7, else number by number with
/// `machine-prime` (an implementation independent of ours).
fn primes_between(lo: u64, hi: u64) -> Vec<u64> {
    if hi <= 10_000_000 {
        let n = hi as usize;
        let mut comp = vec![false; n + 1];
        let mut out = Vec::new();
        for i in 2..=n {
            if !comp[i] {
                if i as u64 >= lo {
                    out.push(i as u64);
                }
                let mut m = i * i;
                while m <= n {
                    comp[m] = true;
                    m += i;
                }
            }
        }
        return out;
    }
    (lo..=hi).filter(|&x| machine_prime::is_prime(x)).collect()
}

fn job_report(p: &Pipeline, name: &str) -> Option<Value> {
    let bytes = std::fs::read(p.path(&format!("data/output/jobs/{name}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn wait_reports(p: &Pipeline, names: &[&str]) {
    wait_for(T, "a report for every job", || {
        names.iter().all(|n| job_report(p, n).is_some())
    });
}

fn add_job(p: &Pipeline, name: &str, line: &str) {
    let tmp = p.path(&format!("data/{name}.tmp"));
    std::fs::write(&tmp, format!("{line}\n")).expect("write job");
    std::fs::create_dir_all(p.path("data/jobs")).expect("mkdir jobs");
    std::fs::rename(&tmp, p.path(&format!("data/jobs/{name}.job"))).expect("move job");
}

fn primes_file(p: &Pipeline) -> Vec<u64> {
    let text = std::fs::read_to_string(p.path("primes.txt")).expect("primes.txt");
    assert!(text.is_empty() || text.ends_with('\n'), "no torn line");
    text.lines()
        .map(|l| l.parse::<u64>().unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// Asserts primes.txt holds exactly `want`, each once.
fn assert_primes(p: &Pipeline, want: &BTreeSet<u64>) {
    let got = primes_file(p);
    let set: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(set.len(), got.len(), "no prime twice in primes.txt");
    let missing: Vec<_> = want.difference(&set).take(5).collect();
    let extra: Vec<_> = set.difference(want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "primes.txt differs: missing {missing:?}, extra {extra:?}"
    );
}

#[test]
/// Every kind of job on a small cluster, with an input file whose primes overlap two range
/// jobs and two ranges that overlap each other: answers match, primes.txt has each prime
/// once, malformed jobs get a report with the reason.
fn jobs_match_independent_answers() {
    let mut p = Pipeline::new();
    let t12 = 1_000_000_000_000u64;
    let top = u64::MAX;
    // An input file sharing primes with the ranges below (and holding one outside them).
    let mut input = String::new();
    for x in (90_000..110_000)
        .chain(t12..t12 + 3000)
        .chain([top - 58, 1_000_003_233])
    {
        input.push_str(&format!("{x}\n"));
    }
    std::fs::write(p.path("data/input/mixed.txt"), input).expect("write input");
    p.start_simple(2);
    let jobs = [
        ("small", s("primes 0 100000")),
        ("overlap", s("primes 95000 150000")),
        ("t12", format!("primes {t12} {}", t12 + 2_000_000)),
        ("top", format!("primes {} {top}", top - 300_000)),
        ("pi9", s("count 1 1000000000")),
        ("sieved", format!("count {t12} {}", t12 + 100_000_000)),
        ("n1", s("nth 1")),
        ("n1000", s("nth 1000")),
        ("n6", s("nth 1000000")),
        ("n8", s("nth 100000000")),
        ("n10", s("nth 10000000000")),
        ("f1000", s("factorial 1000")),
        ("f20000", s("factorial 20000")),
        ("f0", s("factorial 0")),
        ("tw7", s("twins 0 10000000")),
        ("tw", s("twins 1000037 3000000")),
        ("bad", s("primes 10 1")),
        ("junk", s("make me a sandwich")),
    ];
    for (name, line) in &jobs {
        add_job(&p, name, line);
    }
    let names: Vec<&str> = jobs.iter().map(|(n, _)| *n).collect();
    wait_reports(&p, &names);
    p.wait_all_reported(T);

    let answer = |name: &str| -> String {
        let r = job_report(&p, name).expect("report");
        assert_eq!(r["status"], "done", "{name}: {r}");
        r["answer"].as_str().unwrap_or_default().to_string()
    };
    // pi(10^9) and the count on [10^12, 10^12 + 10^8] (primesieve 11 says 3618282).
    assert_eq!(answer("pi9"), "50847534");
    assert_eq!(answer("sieved"), "3618282");
    for (name, want) in [
        ("n1", "2"),
        ("n1000", "7919"),
        ("n6", "15485863"),
        ("n8", "2038074743"),
        ("n10", "252097800623"),
    ] {
        assert_eq!(answer(name), want, "{name}");
    }
    // Factorials against a plain product, digits and SHA-256 in the report.
    for (name, n) in [("f1000", 1000u32), ("f20000", 20_000), ("f0", 0)] {
        let r = job_report(&p, name).expect("report");
        assert_eq!(r["status"], "done", "{name}: {r}");
        let mut want = BigUint::from(1u32);
        for k in 2..=n {
            want *= k;
        }
        let want = want.to_string();
        let got = std::fs::read_to_string(p.path(&format!("data/output/jobs/{name}.txt")))
            .expect("factorial value");
        assert_eq!(got.trim_end(), want, "{name}");
        assert_eq!(r["digits"].as_u64(), Some(want.len() as u64), "{name}");
    }
    // Twin pairs: the published count below 10^7, and a range that starts on a pair
    // (1000037, 1000039), listed against the plain sieve's consecutive primes.
    let r = job_report(&p, "tw7").expect("report");
    assert_eq!(r["status"], "done", "tw7: {r}");
    assert_eq!(
        r["count"].as_u64(),
        Some(58_980),
        "twin pairs below 10^7: {r}"
    );
    assert_eq!(r["answer"], "58980");
    for (name, lo, hi) in [("tw7", 0u64, 10_000_000u64), ("tw", 1_000_037, 3_000_000)] {
        let r = job_report(&p, name).expect("report");
        assert_eq!(r["status"], "done", "{name}: {r}");
        let pairs: Vec<u64> = primes_between(lo, hi)
            .windows(2)
            .filter(|w| w[1] - w[0] == 2)
            .map(|w| w[0])
            .collect();
        let want: String = pairs.iter().map(|p| format!("{p} {}\n", p + 2)).collect();
        let got = std::fs::read_to_string(p.path(&format!("data/output/jobs/{name}.txt")))
            .expect("twins listing");
        assert!(
            got == want,
            "{name}: the listing differs from the plain sieve's pairs"
        );
        assert_eq!(r["count"].as_u64(), Some(pairs.len() as u64), "{name}");
        assert_eq!(r["first_prime"], pairs[0].to_string(), "{name}");
        assert_eq!(
            r["last_prime"],
            (pairs[pairs.len() - 1] + 2).to_string(),
            "{name}"
        );
        assert!(
            r["sha256"].is_string() && r["digits"].is_null(),
            "{name}: {r}"
        );
    }
    for (name, why) in [("bad", "empty range"), ("junk", "unknown job")] {
        let r = job_report(&p, name).expect("report");
        assert_eq!(r["status"], "invalid", "{name}");
        assert!(r["errors"].to_string().contains(why), "{name}: {r}");
    }
    // primes.txt: the file's primes and every range's, each once.
    let mut want: BTreeSet<u64> = BTreeSet::new();
    want.extend(primes_between(0, 150_000));
    want.extend(primes_between(t12, t12 + 2_000_000));
    want.extend(primes_between(top - 300_000, top));
    if machine_prime::is_prime(1_000_003_233) {
        want.insert(1_000_003_233);
    }
    assert_primes(&p, &want);
    let r = job_report(&p, "t12").expect("report");
    let n = primes_between(t12, t12 + 2_000_000);
    assert_eq!(r["count"].as_u64(), Some(n.len() as u64));
    assert_eq!(r["first_prime"], n[0].to_string());
    assert_eq!(r["last_prime"], n[n.len() - 1].to_string());
    // run/status.json is rewritten every half second: a report can be on disk before the
    // status that lists its job (seen in CI under load), so wait for it, bounded.
    wait_for(T, "status listing every job", || {
        p.status()["jobs"]
            .as_array()
            .is_some_and(|j| j.len() == jobs.len())
    });
    let st = p.status();
    let junk = st["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|j| j["job"] == "junk").cloned())
        .unwrap_or_default();
    assert_eq!(junk["state"], "invalid", "{junk}");
    assert!(
        junk["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown job")),
        "status says why a job is invalid: {junk}"
    );
}

#[test]
/// kill -9 of a worker and of the coordinator in the middle of a long range job: after
/// restarts the report and primes.txt are exact (each prime once, none missing).
fn range_job_survives_kills() {
    let mut p = Pipeline::new();
    p.coord_flags_mut(vec![
        s("--segment-numbers"),
        s("250000"),
        s("--snapshot-ms"),
        s("300"),
    ]);
    p.worker_flags_mut(vec![s("--delay-ms"), s("60")]);
    p.start_simple(2);
    let t12 = 1_000_000_000_000u64;
    let (lo, hi) = (t12, t12 + 10_000_000 - 1); // 40 segments
    add_job(&p, "long", &format!("primes {lo} {hi}"));
    let done = |p: &Pipeline| -> u64 {
        p.status()["jobs"]
            .as_array()
            .and_then(|j| j.first().cloned())
            .and_then(|j| j["tasks_done"].as_u64())
            .unwrap_or(0)
    };
    wait_for(T, "a few segments done", || done(&p) >= 5);
    p.kill_worker("worker-1");
    wait_for(T, "more segments done", || done(&p) >= 12);
    p.kill_coordinator();
    p.start_coordinator();
    p.start_worker("worker-1");
    wait_reports(&p, &["long"]);
    let r = job_report(&p, "long").expect("report");
    assert_eq!(r["status"], "done", "{r}");
    let want: BTreeSet<u64> = primes_between(lo, hi).into_iter().collect();
    assert_eq!(r["count"].as_u64(), Some(want.len() as u64));
    assert_eq!(r["segments"].as_u64(), Some(40));
    assert_primes(&p, &want);

    // A count and an nth job too, to be found again in the ledger below.
    add_job(&p, "c", &format!("count {t12} {}", t12 + 100_000_000));
    add_job(&p, "n", "nth 100000000");
    wait_reports(&p, &["c", "n"]);
    let answer = |p: &Pipeline, name: &str| job_report(p, name).expect("report")["answer"].clone();
    assert_eq!(answer(&p, "c"), "3618282");
    assert_eq!(answer(&p, "n"), "2038074743");

    // The ledger of finished tasks: the same jobs again (their reports removed) after a
    // restart are done without computing anything, and the range's primes are not loaded
    // into the dedup set.
    // The coordinator restarted with the reports removed, and `gone` (files) too.
    let restart = |p: &mut Pipeline, gone: &[&str]| {
        p.restart_coordinator_with(|p| {
            for name in ["long", "c", "n"] {
                std::fs::remove_file(p.path(&format!("data/output/jobs/{name}.json")))
                    .expect("remove report");
            }
            for f in gone {
                match std::fs::remove_file(p.path(f)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("removing {f}: {e}"),
                }
            }
        });
        wait_reports(p, &["long", "c", "n"]);
        let r = job_report(p, "long").expect("report");
        assert_eq!(r["status"], "done", "{r}");
        assert_eq!(r["count"].as_u64(), Some(want.len() as u64), "{r}");
        assert_eq!(r["first_prime"], want.first().expect("a prime").to_string());
        assert_eq!(r["last_prime"], want.last().expect("a prime").to_string());
        assert_eq!(answer(p, "c"), "3618282");
        assert_eq!(answer(p, "n"), "2038074743");
        assert_primes(p, &want);
    };
    restart(&mut p, &[]);
    let all_done = |p: &Pipeline| {
        p.status()["jobs"]
            .as_array()
            .is_some_and(|j| j.len() == 3 && j.iter().all(|j| j["state"] == "done"))
    };
    wait_for(T, "status after the reports", || all_done(&p));
    let st = p.status();
    assert_eq!(
        st["totals"]["tasks_done"], 0,
        "no segment sieved again: {st}"
    );
    assert_eq!(
        st["primes_in_set"], 0,
        "range primes are not in the set: {st}"
    );
    assert_eq!(st["primes_in_file"].as_u64(), Some(want.len() as u64));

    // The root primes.txt deleted: it is the leader's view of its member's files, which
    // give it back whole at the restart (nothing is sieved again).
    restart(&mut p, &["primes.txt"]);
    wait_for(T, "status after the reports", || all_done(&p));
    assert_primes(&p, &want);
    assert_eq!(
        p.status()["totals"]["tasks_done"],
        0,
        "primes.txt is given back, nothing redone"
    );

    // A restart with the reports in place: status shows the jobs done, as the reports say.
    p.restart_coordinator();
    wait_for(T, "status listing the three jobs", || {
        p.status()["jobs"].as_array().is_some_and(|j| j.len() == 3)
    });
    let st = p.status();
    let jobs = st["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(jobs.len(), 3, "{st}");
    for j in &jobs {
        assert_eq!(j["state"], "done", "{j}");
        assert!(j["line"].as_str().is_some_and(|l| !l.is_empty()), "{j}");
        assert_eq!(j["tasks"], j["tasks_done"], "{j}");
    }
    assert_eq!(st["totals"]["tasks_done"], 0, "nothing recomputed: {st}");
}

#[test]
/// π(x) and the n-th prime cut into parts over three workers, one of them killed with
/// SIGKILL while it holds a part: the answers are exact (π(10^14) and p(10^12) as
/// published; a count whose lower bound is cut into parts too, against primecount's
/// π(2·10^13 - 1) = 675,895,909,271).
fn pi_job_split_survives_a_worker_kill() {
    let mut p = Pipeline::new();
    // Every task waits 400 ms before it computes: a kill lands inside a task.
    p.worker_flags_mut(vec![s("--delay-ms"), s("400")]);
    p.start_simple(3);
    add_job(&p, "pi14", "count 1 100000000000000");
    add_job(&p, "n12", "nth 1000000000000");
    add_job(&p, "c", "count 20000000000000 100000000000000");
    let job = |p: &Pipeline, name: &str| -> Value {
        p.status()["jobs"]
            .as_array()
            .and_then(|j| j.iter().find(|j| j["job"] == name).cloned())
            .unwrap_or_default()
    };
    // A worker busy with a part of π(10^14), after some of its parts are done.
    let mut victim = String::new();
    wait_for(
        T,
        "parts of pi14 done and a worker busy with the next",
        || {
            if job(&p, "pi14")["tasks_done"].as_u64().unwrap_or(0) < 2 {
                return false;
            }
            let st = p.status();
            let busy = st["workers"].as_array().and_then(|ws| {
                ws.iter()
                    .find(|w| w["state"] == "busy" && w.to_string().contains(".jobs/"))
                    .and_then(|w| w["id"].as_str().map(s))
            });
            match busy {
                Some(w) => {
                    victim = w;
                    true
                }
                None => false,
            }
        },
    );
    p.kill_worker(&victim);
    wait_reports(&p, &["pi14", "n12", "c"]);
    let report = |name: &str| -> Value {
        let r = job_report(&p, name).expect("report");
        assert_eq!(r["status"], "done", "{name}: {r}");
        r
    };
    let r = report("pi14");
    assert_eq!(r["answer"], "3204941750802", "{r}");
    assert_eq!(
        r["segments"].as_u64(),
        Some(13),
        "π(10^14) in 3k + 1 = 13 parts: {r}"
    );
    assert!(
        r["workers"].as_array().is_some_and(|w| w.len() >= 2),
        "the parts ran on several workers: {r}"
    );
    assert_eq!(report("n12")["answer"], "29996224275833");
    let r = report("c");
    assert_eq!(r["answer"], "2529045841531", "{r}");
    assert_eq!(
        r["segments"].as_u64(),
        Some(26),
        "both bounds in parts: {r}"
    );
    let st = p.status();
    assert!(
        st["workers"].as_array().is_some_and(|ws| ws
            .iter()
            .any(|w| w["id"] == victim.as_str() && w["state"] == "disconnected")),
        "{victim} was lost: {st}"
    );
}
