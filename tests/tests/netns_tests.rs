//! Hosts with their own addresses: network namespaces joined by a bridge (made by the test,
//! removed when it ends). The coordinator, two file servers and two workers each get a
//! namespace and an address; the links to the primary file server and to a worker are cut
//! (interface down) for a while and restored; the output is still exact. Skipped, with a
//! message, where the machine cannot create namespaces.

use std::process::Command;
use std::time::Duration;

use e2e::{bin, read_addr, wait_for, Proc};

use crate::pipeline_tests::{server_args, write_inputs_pub, Pipeline};

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
        let suffix = std::process::id() % 100_000;
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
        Err(e) => {
            println!("SKIPPED: this machine cannot create network namespaces ({e})");
            return;
        }
    };
    let (c, s1, s2, w1, w2) = match (
        net.host(10),
        net.host(11),
        net.host(12),
        net.host(21),
        net.host(22),
    ) {
        (Ok(c), Ok(s1), Ok(s2), Ok(w1), Ok(w2)) => (c, s1, s2, w1, w2),
        _ => {
            println!("SKIPPED: cannot set up veth links in network namespaces");
            return;
        }
    };
    let p = Pipeline::new();
    write_inputs_pub(&p.path("data/input"), "n", 30, 2000, 31);
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

#[test]
fn group_leader_cut_off_by_a_partition() {
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
    write_inputs_pub(&p.path("data/input"), "q", 40, 3000, 41);
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
    let mut members = Vec::new();
    for id in 1..=3u8 {
        members.push(start_in(
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
    let leader_of = |p: &Pipeline| -> Option<u8> {
        let st: serde_json::Value = std::fs::read(p.path("run/status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())?;
        (st["running"] == true).then_some(())?;
        st["group"]["leader"].as_u64().map(|l| l as u8)
    };
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
    let log =
        std::fs::read_to_string(p.path(&format!("logs/coordinator-{old}.log"))).unwrap_or_default();
    assert!(
        log.contains("no majority confirms this leader") || log.contains("lost the lead"),
        "the old leader stopped serving:\n{}",
        e2e::log_tail(&p.path(&format!("logs/coordinator-{old}.log")), 30)
    );
    // It rejoins as a follower and catches up.
    wait_for(
        Duration::from_secs(30),
        "the old leader to catch up",
        || applied_index(&p, old) >= applied_index(&p, new),
    );
    assert!(
        std::fs::read_to_string(p.path(&format!("logs/coordinator-{old}.log")))
            .unwrap_or_default()
            .contains(&format!("group: coordinator-{new} leads")),
        "the old leader follows the new one"
    );
    drop(members);
    drop(procs);
    drop(net);
}
