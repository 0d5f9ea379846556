//! Chaos: the replicated system (three file servers, a group of three coordinators) over a
//! couple of thousand files while, for a bounded time, random workers, file servers and
//! coordinators (the leader or a follower) are killed (SIGKILL) and restarted and workers
//! are suspended (SIGSTOP/SIGCONT). The seed is fixed (PRIMES_CHAOS_SEED overrides)
//! and printed; at the end primes.txt must be exact.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use e2e::pipeline::{write_inputs, Pipeline};

#[test]
fn chaos_replicated_exact() {
    let seed: u64 = std::env::var("PRIMES_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261122);
    let chaos_for = Duration::from_millis(
        std::env::var("PRIMES_CHAOS_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10_000),
    );
    println!("chaos: seed {seed} (PRIMES_CHAOS_SEED), {chaos_for:?} of faults (PRIMES_CHAOS_MS)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "c", 2500, 150, seed);
    // And some files split into chunks of 6 KB, which workers read by range.
    write_inputs(&p.path("data/input"), "big", 12, 4000, seed + 1);
    p.worker_flags_mut(vec!["--delay-ms".into(), "8".into()]);
    p.coord_flags_mut(vec![
        "--snapshot-ms".into(),
        "400".into(),
        "--max-failures".into(),
        "6".into(),
        "--chunk-bytes".into(),
        "6000".into(),
    ]);
    p.replicated();
    crate::e2e_wait(
        Duration::from_secs(60),
        "backups to hold every input",
        || p.unreported_on_backups() == 0,
    );
    p.start_group(3);
    let workers: Vec<String> = (1..=3).map(|i| format!("worker-{i}")).collect();
    for w in &workers {
        p.start_worker(w);
    }
    let start = Instant::now();
    let mut log: Vec<String> = Vec::new();
    let mut stopped: Vec<(String, Instant)> = Vec::new();
    let (mut kills, mut stops, mut coord_kills, mut server_kills) = (0, 0, 0, 0);
    while start.elapsed() < chaos_for {
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..450)));
        let t = start.elapsed().as_millis();
        // Resume suspended workers after a while.
        stopped.retain(|(w, since)| {
            if since.elapsed() > Duration::from_millis(900) {
                p.worker_signal(w, libc::SIGCONT);
                log.push(format!("{t:>6} ms  SIGCONT {w}"));
                false
            } else {
                true
            }
        });
        match rng.gen_range(0..10) {
            0..=3 => {
                let w = &workers[rng.gen_range(0..workers.len())];
                if stopped.iter().any(|(s, _)| s == w) {
                    continue;
                }
                p.kill_worker(w);
                p.start_worker(w);
                kills += 1;
                log.push(format!("{t:>6} ms  kill -9 {w}, restarted"));
            }
            4..=5 => {
                let w = &workers[rng.gen_range(0..workers.len())];
                if stopped.iter().any(|(s, _)| s == w) {
                    continue;
                }
                p.worker_signal(w, libc::SIGSTOP);
                stopped.push((w.clone(), Instant::now()));
                stops += 1;
                log.push(format!("{t:>6} ms  SIGSTOP {w}"));
            }
            6..=7 => {
                let s = ["server-1", "server-2", "server-3"][rng.gen_range(0..3)];
                p.restart_server(s);
                server_kills += 1;
                log.push(format!(
                    "{t:>6} ms  kill -9 {s}, restarted at the same address"
                ));
            }
            _ => {
                let m = rng.gen_range(1..=3);
                let role = if p.leader() == Some(m) {
                    "the leader"
                } else {
                    "a follower"
                };
                p.kill_member(m);
                p.start_member(m);
                coord_kills += 1;
                log.push(format!(
                    "{t:>6} ms  kill -9 coordinator-{m} ({role}), restarted"
                ));
            }
        }
    }
    for (w, _) in &stopped {
        p.worker_signal(w, libc::SIGCONT);
    }
    let chaos_end = Instant::now();
    p.wait_all_reported(Duration::from_secs(180));
    p.assert_exact();
    let st = p.status();
    println!("chaos log:\n{}", log.join("\n"));
    println!(
        "chaos: {kills} worker kills, {stops} worker suspensions, {server_kills} file-server kills, {coord_kills} coordinator kills; \
         finished {:.1} s after the faults stopped; primes {}; totals {}",
        chaos_end.elapsed().as_secs_f64(),
        st["primes_in_file"],
        st["totals"]
    );
    let recoveries: usize = (1..=3)
        .map(|m| {
            p.member_log_all(m as usize)
                .lines()
                .filter(|l| l.contains("recovered from snapshot"))
                .count()
        })
        .sum();
    println!("chaos: leaders that recovered from a snapshot: {recoveries}");
    assert!(
        kills + stops + server_kills + coord_kills > 5,
        "enough faults were injected"
    );
}
