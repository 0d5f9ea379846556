//! Hosts with their own addresses: network namespaces joined by a bridge (made by the test,
//! removed when it ends). The coordinator, two file servers and two workers each get a
//! namespace and an address; the links to the primary file server and to a worker are cut
//! (interface down) for a while and restored; the output is still exact. Skipped, with a
//! message, where the machine cannot create namespaces.

use std::process::Command;
use std::time::Duration;

use e2e::{bin, read_addr, wait_for, Proc};

use e2e::pipeline::{server_args, write_inputs, Pipeline};

const SUBNET: &str = "10.199.0";

struct Net {
    bridge: String,
    hosts: Vec<String>,
    suffix: u32,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    fn new() -> Result<Net, String> {
        // Unique per test in this process too (tests run in parallel): names stay within
        // the 15 bytes of an interface name.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
        let suffix = (std::process::id() % 100_000) * 10 + n;
        let bridge = format!("prb{suffix}");
        ip(&["netns", "add", &bridge])?;
        let net = Net {
            bridge,
            hosts: Vec::new(),
            suffix,
        };
        ip(&["-n", &net.bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.bridge, "link", "set", "br0", "up"])?;
        Ok(net)
    }

    /// Adds host number `n` (address SUBNET.n) and returns its namespace.
    fn host(&mut self, n: u8) -> Result<String, String> {
        let ns = format!("prh{}x{n}", self.suffix);
        let veth = format!("pv{}x{n}", self.suffix);
        ip(&["netns", "add", &ns])?;
        self.hosts.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "netns", &self.bridge])?;
        ip(&["-n", &self.bridge, "link", "set", &veth, "master", "br0"])?;
        ip(&["-n", &self.bridge, "link", "set", &veth, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{SUBNET}.{n}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(ns)
    }

    /// Cuts (or restores) the link of host `n` at the bridge.
    fn link(&self, n: u8, up: bool) {
        let veth = format!("pv{}x{n}", self.suffix);
        if let Err(e) = ip(&[
            "-n",
            &self.bridge,
            "link",
            "set",
            &veth,
            if up { "up" } else { "down" },
        ]) {
            panic!("{e}");
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in self.hosts.iter().chain(std::iter::once(&self.bridge)) {
            let _ = ip(&["netns", "del", h]);
        }
    }
}

fn start_in(p: &Pipeline, ns: &str, name: &str, program: &str, args: &[String]) -> Proc {
    let mut full = vec![
        "netns".to_string(),
        "exec".into(),
        ns.into(),
        bin(program).display().to_string(),
    ];
    full.extend(args.iter().cloned());
    let env = vec![(
        "PRIMES_KEY_FILE",
        p.path("run/cluster.key").display().to_string(),
    )];
    Proc::start(
        name,
        std::path::Path::new("ip"),
        &full,
        &env,
        &p.path(""),
        &p.path(&format!("logs/{name}.log")),
    )
}

fn s(x: &str) -> String {
    x.to_string()
}

/// Starts file server `id` in namespace `ns` with its `role`, `root` and `backups`, and
/// waits until it listens.
fn start_server(
    p: &Pipeline,
    ns: &str,
    id: &str,
    role: &str,
    root: &str,
    listen: &str,
    backups: &[String],
) -> Proc {
    let addr_file = p.path(&format!("run/{id}.addr"));
    let args = server_args(id, role, root, listen, backups, &addr_file);
    let proc = start_in(p, ns, id, "afs-server", &args);
    read_addr(&addr_file, Duration::from_secs(20));
    proc
}

/// A worker's flags in these tests: one thread, slowed by `delay_ms` per task, short backoff.
fn worker_args(
    p: &Pipeline,
    id: &str,
    coordinators: &str,
    afs: &str,
    delay_ms: u64,
) -> Vec<String> {
    vec![
        s("--id"),
        s(id),
        s("--coordinator"),
        s(coordinators),
        s("--afs"),
        s(afs),
        s("--cache-root"),
        p.path("cache").display().to_string(),
        s("--threads"),
        s("1"),
        s("--delay-ms"),
        delay_ms.to_string(),
        s("--max-backoff-ms"),
        s("300"),
    ]
}

#[test]
fn hosts_on_their_own_addresses_with_link_cuts() {
    let mut net = match Net::new() {
        Ok(n) => n,
        Err(e) => panic!("this test needs network namespaces (run as root with iproute2): {e}"),
    };
    let (c, s1, s2, w1, w2) = match (
        net.host(10),
        net.host(11),
        net.host(12),
        net.host(21),
        net.host(22),
    ) {
        (Ok(c), Ok(s1), Ok(s2), Ok(w1), Ok(w2)) => (c, s1, s2, w1, w2),
        (c, s1, s2, w1, w2) => panic!(
            "cannot set up veth links in network namespaces: {:?}",
            [c.err(), s1.err(), s2.err(), w1.err(), w2.err()]
        ),
    };
    let p = Pipeline::new();
    write_inputs(&p.path("data/input"), "n", 30, 2000, 31);
    // One file split into chunks (--chunk-bytes below), which workers read by range: over
    // TCP, since the file server is on another host, though its local socket's file is
    // within reach of every namespace here.
    write_inputs(&p.path("data/input"), "big", 1, 5000, 37);
    let addr = |n: u8| format!("{SUBNET}.{n}:7000");
    let mut procs = Vec::new();
    procs.push(start_server(
        &p,
        &s2,
        "server-2",
        "backup",
        "data/replicas/server-2",
        &addr(12),
        &[],
    ));
    procs.push(start_server(
        &p,
        &s1,
        "server-1",
        "primary",
        "data/input",
        &addr(11),
        &[addr(12)],
    ));
    wait_for(
        Duration::from_secs(30),
        "the backup to receive every input over the bridge",
        || {
            (0..30).all(|i| {
                p.path(&format!("data/replicas/server-2/n{i:03}.txt"))
                    .exists()
            })
        },
    );
    procs.push(start_in(
        &p,
        &c,
        "coordinator",
        "coordinator",
        &[
            s("--listen"),
            addr(10),
            s("--addr-file"),
            p.path("run/coordinator.addr").display().to_string(),
            s("--heartbeat-ms"),
            s("200"),
            s("--flush-ms"),
            s("100"),
            s("--quiet-ms"),
            s("200"),
            s("--retry-ms"),
            s("300"),
            s("--max-failures"),
            s("8"),
            s("--snapshot-ms"),
            s("500"),
            s("--chunk-bytes"),
            s("26000"),
        ],
    ));
    read_addr(&p.path("run/coordinator.addr"), Duration::from_secs(20));
    for (ns, id) in [(&w1, "worker-1"), (&w2, "worker-2")] {
        let mut args = worker_args(
            &p,
            id,
            &addr(10),
            &format!("{},{}", addr(11), addr(12)),
            300,
        );
        args.extend([s("--afs-timeout-ms"), s("1500")]);
        procs.push(start_in(&p, ns, id, "worker", &args));
    }
    wait_for(Duration::from_secs(30), "some progress", || {
        p.unreported().len() <= 26
    });
    println!(
        "cutting the primary file server's link for 3 s, and worker-1's for 2.5 s from 1 s on"
    );
    net.link(11, false);
    std::thread::sleep(Duration::from_millis(1000));
    let before = p.unreported().len();
    net.link(21, false);
    std::thread::sleep(Duration::from_millis(2000));
    net.link(11, true);
    assert!(
        p.unreported().len() < before,
        "work went on without the primary and worker-1"
    );
    std::thread::sleep(Duration::from_millis(500));
    net.link(21, true);
    p.wait_all_reported(Duration::from_secs(120));
    p.assert_exact();
    let log = std::fs::read_to_string(p.path("logs/coordinator.log")).unwrap_or_default();
    assert!(
        log.contains("missed"),
        "the coordinator noticed worker-1's silence"
    );
    let report: serde_json::Value = std::fs::read(p.path("data/output/big000.txt.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    assert!(
        report["chunks"].as_u64().is_some_and(|c| c >= 2),
        "the large file was not split: {report}"
    );
    for id in ["worker-1", "worker-2"] {
        let log = std::fs::read_to_string(p.path(&format!("logs/{id}.log"))).unwrap_or_default();
        assert!(
            !log.contains("local socket"),
            "{id} on another host read through the file server's local socket"
        );
    }
    drop(procs);
    drop(net);
}

/// The applied log index of a group member's replica (its `applied.json`).
fn applied_index(p: &Pipeline, id: u8) -> u64 {
    std::fs::read(p.path(&format!("data/coordinators/coordinator-{id}/applied.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["applied"]["index"].as_u64())
        .unwrap_or(0)
}

/// A group of three coordinators on hosts .31-.33, a file server on .11 and workers on .21
/// and .22, each in its own namespace, on `files` input files.
struct NetGroup {
    net: Net,
    p: Pipeline,
    /// Every process (killed when dropped).
    procs: Vec<Proc>,
}

fn net_group(prefix: &str, files: usize, seed: u64) -> NetGroup {
    let mut net = match Net::new() {
        Ok(n) => n,
        Err(e) => panic!("this test needs network namespaces (run as root with iproute2): {e}"),
    };
    // Coordinators on hosts 1..3 (.31-.33), the file server on .11, workers on .21/.22.
    let mut hosts = Vec::new();
    for n in [31u8, 32, 33, 11, 21, 22] {
        hosts.push(
            net.host(n)
                .unwrap_or_else(|e| panic!("setting up host {n}: {e}")),
        );
    }
    let p = Pipeline::new();
    write_inputs(&p.path("data/input"), prefix, files, 3000, seed);
    let addr = |n: u8, port: u16| format!("{SUBNET}.{n}:{port}");
    let mut procs = Vec::new();
    procs.push(start_server(
        &p,
        &hosts[3],
        "server-1",
        "primary",
        "data/input",
        &addr(11, 7000),
        &[],
    ));
    let group = [31u8, 32, 33]
        .iter()
        .map(|n| format!("{}/{}", addr(*n, 7000), addr(*n, 7001)))
        .collect::<Vec<_>>()
        .join(",");
    for id in 1..=3u8 {
        procs.push(start_in(
            &p,
            &hosts[id as usize - 1],
            &format!("coordinator-{id}"),
            "coordinator",
            &[
                s("--group"),
                group.clone(),
                s("--group-id"),
                id.to_string(),
                s("--afs"),
                addr(11, 7000),
                s("--inputs-from-afs"),
                s("--heartbeat-ms"),
                s("200"),
                s("--flush-ms"),
                s("100"),
                s("--quiet-ms"),
                s("200"),
                s("--snapshot-ms"),
                s("500"),
            ],
        ));
    }
    let coordinators = [31u8, 32, 33]
        .iter()
        .map(|n| addr(*n, 7000))
        .collect::<Vec<_>>()
        .join(",");
    for (ns, id) in [(&hosts[4], "worker-1"), (&hosts[5], "worker-2")] {
        let args = worker_args(&p, id, &coordinators, &addr(11, 7000), 150);
        procs.push(start_in(&p, ns, id, "worker", &args));
    }
    NetGroup { net, p, procs }
}

/// The member leading, by the status file the leader writes, if it says it runs.
fn leader_of(p: &Pipeline) -> Option<u8> {
    let st: serde_json::Value = std::fs::read(p.path("run/status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())?;
    (st["running"] == true).then_some(())?;
    st["group"]["leader"].as_u64().map(|l| l as u8)
}

/// The term a member has voted in (its `raft-vote.json`).
fn vote_term(p: &Pipeline, id: u8) -> u64 {
    std::fs::read(p.path(&format!(
        "data/coordinators/coordinator-{id}/raft-vote.json"
    )))
    .ok()
    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    .and_then(|v| v["leader_id"]["term"].as_u64())
    .unwrap_or(0)
}

#[test]
/// The leader's link cut: the other two elect a new leader and go on; the old one commits
/// nothing meanwhile, stops serving, and follows once back.
fn group_leader_cut_off_by_a_partition() {
    let NetGroup { net, p, procs } = net_group("q", 40, 41);
    let mut old = 0u8;
    wait_for(
        Duration::from_secs(60),
        "a leader and some progress",
        || {
            old = leader_of(&p).unwrap_or(0);
            old > 0 && p.unreported().len() <= 36
        },
    );
    let host_of = |id: u8| 30 + id;
    println!("cutting coordinator-{old}'s link (the leader)");
    net.link(host_of(old), false);
    let mut new = 0u8;
    wait_for(
        Duration::from_secs(20),
        "the majority to elect a new leader",
        || {
            new = leader_of(&p).unwrap_or(0);
            new > 0 && new != old
        },
    );
    // Whatever was in flight at the cut may still apply; after that, nothing more.
    std::thread::sleep(Duration::from_millis(1500));
    let frozen = applied_index(&p, old);
    let before = p.unreported().len();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(p.unreported().len() + 3 <= before || p.unreported().is_empty()) {
        if std::time::Instant::now() > deadline {
            panic!(
                "no progress without the old leader (coordinator-{old}); new leader coordinator-{new}:\n{}\nworker-1:\n{}",
                e2e::log_tail(&p.path(&format!("logs/coordinator-{new}.log")), 40),
                e2e::log_tail(&p.path("logs/worker-1.log"), 20)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        applied_index(&p, old),
        frozen,
        "the cut-off leader applied (so committed) nothing while cut off"
    );
    println!("restoring coordinator-{old}'s link");
    net.link(host_of(old), true);
    p.wait_all_reported(Duration::from_secs(120));
    p.assert_exact();
    let log = p.member_log_all(old as usize);
    assert!(
        log.contains("no majority confirms this leader") || log.contains("lost the lead"),
        "the old leader stopped serving:\n{}",
        e2e::log_tail(&p.path(&format!("logs/coordinator-{old}.log")), 30)
    );
    // It rejoins as a follower (once its connections are back: the work may all be done
    // by then) and catches up.
    let follows = || {
        p.member_log_all(old as usize)
            .contains(&format!("group: coordinator-{new} leads"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !follows() {
        if std::time::Instant::now() >= deadline {
            for id in 1..=3 {
                let l = p.member_log_all(id as usize);
                eprintln!("DEBUG coordinator-{id}:");
                for line in l.lines().filter(|l| {
                    l.contains("pre-vote")
                        || l.contains("leads")
                        || l.contains("election")
                        || l.contains("cutting")
                        || l.contains("vote-request")
                        || l.contains("restor")
                }) {
                    eprintln!("  {}", &line[..line.len().min(220)]);
                }
            }
            panic!(
                "the old leader follows the new one:\n{}",
                e2e::log_tail(&p.path(&format!("logs/coordinator-{old}.log")), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for(
        Duration::from_secs(30),
        "the old leader to catch up",
        || applied_index(&p, old) >= applied_index(&p, new),
    );
    drop(procs);
    drop(net);
}

#[test]
/// A follower's link cut for several election timeouts: it does not raise its term while
/// cut off (pre-vote: no majority would elect it), and once back it follows the leader it
/// had, which keeps its term. Without pre-vote it stood for election at every timeout and
/// its higher term deposed the healthy leader on its return.
fn group_follower_cut_off_does_not_depose_the_leader() {
    let NetGroup { net, p, procs } = net_group("f", 30, 43);
    let mut leader = 0u8;
    wait_for(
        Duration::from_secs(60),
        "a leader and some progress",
        || {
            leader = leader_of(&p).unwrap_or(0);
            leader > 0 && p.unreported().len() <= 27
        },
    );
    let follower = if leader == 1 { 2 } else { 1 };
    let term = vote_term(&p, leader);
    println!(
        "cutting coordinator-{follower}'s link (a follower; coordinator-{leader} leads in term {term})"
    );
    net.link(30 + follower, false);
    // Several election timeouts (300 ms by default: an election every 0.9–1.2 s).
    std::thread::sleep(Duration::from_secs(5));
    let cut_term = vote_term(&p, follower);
    println!("restoring coordinator-{follower}'s link (its term {cut_term})");
    net.link(30 + follower, true);
    p.wait_all_reported(Duration::from_secs(120));
    p.assert_exact();
    // It catches up as a follower.
    wait_for(Duration::from_secs(30), "the follower to catch up", || {
        applied_index(&p, follower) >= applied_index(&p, leader)
    });
    let flog = p.member_log_all(follower as usize);
    assert_eq!(
        cut_term,
        term,
        "the cut-off follower kept its term:\n{}",
        e2e::log_tail(&p.path(&format!("logs/coordinator-{follower}.log")), 30)
    );
    assert!(
        flog.contains("pre-vote lost"),
        "it asked and heard no majority"
    );
    assert_eq!(leader_of(&p), Some(leader), "the leader still leads");
    assert_eq!(vote_term(&p, leader), term, "in the same term");
    drop(procs);
    drop(net);
}

/// Runs `coordinator ARGS` in namespace `ns` (a host of its own) and returns its exit
/// status, stdout and stderr. The command bounds its own waits (connect 2 s, reads 30 s,
/// submit 15 s).
fn coordinator_cmd(p: &Pipeline, ns: &str, args: &[String]) -> (bool, String, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin("coordinator"))
        .args(args)
        .env(
            "PRIMES_KEY_FILE",
            p.path("host-client/cluster.key").display().to_string(),
        )
        .current_dir(p.path(""))
        .output()
        .unwrap_or_else(|e| panic!("running coordinator {args:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The member a host's status file says leads and serves, if any.
fn leader_on_host(p: &Pipeline, id: u8) -> Option<u8> {
    let st: serde_json::Value = std::fs::read(p.path(&format!("host-{id}/run/status.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())?;
    (st["running"] == true).then_some(())?;
    st["group"]["leader"]
        .as_u64()
        .map(|l| l as u8)
        .filter(|l| *l == id)
}

#[test]
/// Three coordinators on three hosts with nothing shared between them (each its own state,
/// results, snapshots, jobs and status folders; no root results folder): a job submitted
/// from a fourth host, the leader killed, and the results read from the members that are
/// left with `coordinator results`, exactly what `worker check` and `worker gen` say.
fn group_on_separate_hosts_results_from_any_member() {
    let mut net = match Net::new() {
        Ok(n) => n,
        Err(e) => panic!("this test needs network namespaces (run as root with iproute2): {e}"),
    };
    let mut hosts = Vec::new();
    for n in [31u8, 32, 33, 11, 21, 22, 40] {
        hosts.push(
            net.host(n)
                .unwrap_or_else(|e| panic!("setting up host {n}: {e}")),
        );
    }
    let client = hosts[6].clone();
    let p = Pipeline::new();
    write_inputs(&p.path("data/input"), "m", 30, 3000, 47);
    // The client host has its own copy of the key, nothing else.
    std::fs::create_dir_all(p.path("host-client")).expect("mkdir");
    std::fs::copy(p.path("run/cluster.key"), p.path("host-client/cluster.key"))
        .expect("copying the key");
    let addr = |n: u8, port: u16| format!("{SUBNET}.{n}:{port}");
    let mut procs = Vec::new();
    procs.push(start_server(
        &p,
        &hosts[3],
        "server-1",
        "primary",
        "data/input",
        &addr(11, 7000),
        &[],
    ));
    let group = [31u8, 32, 33]
        .iter()
        .map(|n| format!("{}/{}", addr(*n, 7000), addr(*n, 7001)))
        .collect::<Vec<_>>()
        .join(",");
    let mut coordinators: Vec<Option<Proc>> = Vec::new();
    for id in 1..=3u8 {
        let h = |rel: &str| p.path(&format!("host-{id}/{rel}")).display().to_string();
        coordinators.push(Some(start_in(
            &p,
            &hosts[id as usize - 1],
            &format!("coordinator-{id}"),
            "coordinator",
            &[
                s("--group"),
                group.clone(),
                s("--group-id"),
                id.to_string(),
                s("--group-dir"),
                h("coordinators"),
                s("--primes"),
                h("primes.txt"),
                s("--output"),
                h("output"),
                s("--snapshots"),
                h("snapshots"),
                s("--jobs"),
                h("jobs"),
                s("--input"),
                h("input"),
                s("--status-file"),
                h("run/status.json"),
                s("--http"),
                addr(30 + id, 7010),
                s("--afs"),
                addr(11, 7000),
                s("--inputs-from-afs"),
                s("--heartbeat-ms"),
                s("200"),
                s("--flush-ms"),
                s("100"),
                s("--quiet-ms"),
                s("200"),
                s("--snapshot-ms"),
                s("500"),
                s("--keep-snapshots"),
                s("1000"),
            ],
        )));
    }
    let coordinators_addr = [31u8, 32, 33]
        .iter()
        .map(|n| addr(*n, 7000))
        .collect::<Vec<_>>()
        .join(",");
    for (ns, id) in [(&hosts[4], "worker-1"), (&hosts[5], "worker-2")] {
        let args = worker_args(&p, id, &coordinators_addr, &addr(11, 7000), 150);
        procs.push(start_in(&p, ns, id, "worker", &args));
    }
    let raft_addrs = [31u8, 32, 33]
        .iter()
        .map(|n| addr(*n, 7001))
        .collect::<Vec<_>>()
        .join(",");
    let http_addrs = [31u8, 32, 33]
        .iter()
        .map(|n| addr(*n, 7010))
        .collect::<Vec<_>>()
        .join(",");
    let mut leader = 0u8;
    wait_for(Duration::from_secs(60), "a leader serving", || {
        leader = (1..=3).find_map(|id| leader_on_host(&p, id)).unwrap_or(0);
        leader > 0
    });
    // Status on the leader's host sees all three members (no folder is shared: the others'
    // views come over the network), and says the group runs.
    let status_file = p.path(&format!("host-{leader}/run/status.json"));
    let mut seen = serde_json::Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(seen["running"] == true
        && seen["coordinators"]["up"].as_array().map(Vec::len) == Some(3))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the leader's status sees three members up and the group running: {seen}"
        );
        std::thread::sleep(Duration::from_millis(100));
        let out = Command::new(bin("coordinator"))
            .args(["status", "--json", "--status-file"])
            .arg(&status_file)
            .output()
            .expect("running coordinator status");
        seen = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    }
    // A job from a host with no folder of the group's: committed through the log.
    let job = "primes 1000000 3000000";
    let submit = |name: &str, line: &str| {
        coordinator_cmd(
            &p,
            &client,
            &[s("submit"), s(name), s(line), s("--to"), raft_addrs.clone()],
        )
    };
    let (ok, _, err) = submit("gen1", job);
    assert!(ok, "coordinator submit failed: {err}");
    assert!(err.contains("committed by coordinator-"), "{err}");
    let (ok, _, err) = submit("bad", "primes 9 1");
    assert!(
        !ok && err.contains("larger than"),
        "a bad job is refused: {err}"
    );
    // The same name with another line is refused (it replaced the job silently before);
    // the same line again is accepted.
    let (ok, _, err) = submit("gen1", "count 1 1000");
    assert!(
        !ok && err.contains("with another line (primes 1000000 3000000)")
            && err.contains("--replace"),
        "another line under a submitted job's name is refused: {err}"
    );
    let (ok, _, err) = submit("gen1", job);
    assert!(ok, "the same job submitted again is accepted: {err}");
    let reports_on = |id: u8| {
        std::fs::read_dir(p.path(&format!("host-{id}/coordinators/coordinator-{id}/output")))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    wait_for(Duration::from_secs(60), "some progress", || {
        reports_on(leader) >= 8
    });
    // Its snapshots so far (their term), to check numbering goes on after the failover.
    println!("killing coordinator-{leader} (the leader) with SIGKILL");
    if let Some(mut c) = coordinators[leader as usize - 1].take() {
        c.kill9();
    }
    let mut new = 0u8;
    wait_for(Duration::from_secs(30), "another member to lead", || {
        new = (1..=3)
            .filter(|id| *id != leader)
            .find_map(|id| leader_on_host(&p, id))
            .unwrap_or(0);
        new > 0
    });
    // Everything done, as the members left say through the command.
    let mut listing = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (ok, out, _) = coordinator_cmd(
            &p,
            &client,
            &[s("results"), s("reports"), s("--from"), http_addrs.clone()],
        );
        if ok {
            listing = out;
            let files = listing.lines().filter(|l| l.starts_with("m")).count();
            if files == 30 && listing.lines().any(|l| l == "jobs/gen1.json") {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every report within 180 s; the members list:\n{listing}\nnew leader:\n{}",
            e2e::log_tail(&p.path(&format!("logs/coordinator-{new}.log")), 30)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out_dir = p.path("host-client/results");
    for what in ["primes", "reports", "snapshots"] {
        let (ok, _, err) = coordinator_cmd(
            &p,
            &client,
            &[
                s("results"),
                s(what),
                s("--out"),
                out_dir.display().to_string(),
                s("--from"),
                http_addrs.clone(),
            ],
        );
        assert!(ok, "coordinator results {what} failed: {err}");
        assert!(
            err.contains("results: from coordinator-") && err.contains("applied index"),
            "it says which member and how far: {err}"
        );
        assert!(
            !err.contains(&format!("from coordinator-{leader} ")),
            "not from the dead leader: {err}"
        );
        println!("results {what}: {}", err.trim());
    }
    // Exactly the primes of the inputs and of the job, each once.
    let text = std::fs::read_to_string(out_dir.join("primes.txt")).expect("primes.txt read");
    assert!(text.is_empty() || text.ends_with('\n'), "whole lines");
    let lines: Vec<&str> = text.lines().collect();
    let got: std::collections::BTreeSet<String> = lines.iter().map(|l| l.to_string()).collect();
    assert_eq!(got.len(), lines.len(), "no prime twice");
    let mut want = p.expected();
    let gen = Command::new(bin("worker"))
        .args(["gen", job])
        .output()
        .expect("worker gen");
    assert!(gen.status.success(), "worker gen failed");
    want.extend(
        String::from_utf8_lossy(&gen.stdout)
            .lines()
            .map(str::to_string),
    );
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "results differ: missing {missing:?}, extra {extra:?}"
    );
    // The member that neither died nor leads has the same results once it has applied as
    // far (asked alone: no leader answers, and the command says so).
    let other = (1..=3u8)
        .find(|id| *id != leader && *id != new)
        .expect("a third member");
    let mut said = String::new();
    wait_for(
        Duration::from_secs(30),
        "the follower's primes equal the expected ones",
        || {
            let (ok, out, err) = coordinator_cmd(
                &p,
                &client,
                &[
                    s("results"),
                    s("primes"),
                    s("--from"),
                    addr(30 + other, 7010),
                ],
            );
            said = err;
            ok && out
                .lines()
                .map(str::to_string)
                .collect::<std::collections::BTreeSet<_>>()
                == want
                && out.lines().count() == want.len()
        },
    );
    assert!(
        said.contains(&format!("from coordinator-{other} ")) && said.contains("no leader answers"),
        "{said}"
    );
    println!("results primes from the follower alone: {}", said.trim());
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out_dir.join("jobs/gen1.json")).expect("the job's report"),
    )
    .expect("report JSON");
    assert_eq!(report["status"], "done", "{report}");
    // Snapshots: kept by every member, numbered on across the leaders, each consistent.
    let snaps: Vec<std::path::PathBuf> = std::fs::read_dir(&out_dir)
        .expect("results folder")
        .flatten()
        .map(|e| e.path())
        .filter(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("snapshot_"))
        })
        .collect();
    let mut by_seq: Vec<(u64, u64)> = snaps
        .iter()
        .map(|f| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(f).expect("snapshot")).expect("json");
            (
                v["seq"].as_u64().expect("seq"),
                v["group"]["term"].as_u64().expect("term"),
            )
        })
        .collect();
    by_seq.sort();
    let terms: std::collections::BTreeSet<u64> = by_seq.iter().map(|x| x.1).collect();
    assert!(
        terms.len() >= 2,
        "snapshots of both leaders' terms are kept: {by_seq:?}"
    );
    assert!(
        by_seq
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "sequence numbers go on across leaders: {by_seq:?}"
    );
    let verify = Command::new(bin("coordinator"))
        .arg("verify-snapshot")
        .args(&snaps)
        .output()
        .expect("verify-snapshot");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // Nothing was shared: no results at the root of the folder the hosts share for logs.
    assert!(!p.path("primes.txt").exists(), "no root primes.txt");
    assert!(!p.path("data/output").exists(), "no root reports folder");
    drop(coordinators);
    drop(procs);
    drop(net);
}
