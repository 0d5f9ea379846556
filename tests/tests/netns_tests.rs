//! Hosts with their own addresses: network namespaces joined by a bridge (made by the test,
//! removed when it ends). The coordinator, two file servers and two workers each get a
//! namespace and an address; the links to the primary file server and to a worker are cut
//! (interface down) for a while and restored; the output is still exact. Skipped, with a
//! message, where the machine cannot create namespaces.

use std::process::Command;
use std::time::Duration;

use e2e::{bin, read_addr, wait_for, Proc};

use crate::pipeline_tests::{write_inputs_pub, Pipeline};

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
    procs.push(start_in(
        &p,
        &s2,
        "server-2",
        "afs-server",
        &[
            s("--id"),
            s("server-2"),
            s("--role"),
            s("backup"),
            s("--root"),
            s("data/replicas/server-2"),
            s("--listen"),
            addr(12),
            s("--addr-file"),
            p.path("run/server-2.addr").display().to_string(),
            s("--scan-ms"),
            s("50"),
        ],
    ));
    read_addr(&p.path("run/server-2.addr"), Duration::from_secs(20));
    procs.push(start_in(
        &p,
        &s1,
        "server-1",
        "afs-server",
        &[
            s("--id"),
            s("server-1"),
            s("--root"),
            s("data/input"),
            s("--listen"),
            addr(11),
            s("--addr-file"),
            p.path("run/server-1.addr").display().to_string(),
            s("--scan-ms"),
            s("50"),
            s("--backup"),
            addr(12),
        ],
    ));
    read_addr(&p.path("run/server-1.addr"), Duration::from_secs(20));
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
        procs.push(start_in(
            &p,
            ns,
            id,
            "worker",
            &[
                s("--id"),
                s(id),
                s("--coordinator"),
                addr(10),
                s("--afs"),
                format!("{},{}", addr(11), addr(12)),
                s("--cache-root"),
                p.path("cache").display().to_string(),
                s("--threads"),
                s("1"),
                s("--delay-ms"),
                s("300"),
                s("--afs-timeout-ms"),
                s("1500"),
                s("--max-backoff-ms"),
                s("300"),
            ],
        ));
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
