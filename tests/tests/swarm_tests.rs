//! The Docker Swarm stack (deploy/stack.yaml) on a single-node swarm, with the faults an
//! orchestrator must absorb: a worker's task killed (the restart policy starts it again), the
//! group leader's container removed (`docker rm -f`: another member leads; the service
//! starts a new task on the same volume, which rejoins), and the workers scaled from 3 to 6
//! mid-run; then a rolling update of the workers. The results, read from the members with
//! `coordinator results`, must equal the single-process check exactly. The swarm is initialised if this docker is in none (and
//! left again at the end); the stack, its volumes, the image and the node labels the test
//! added are removed at the end. Without docker or swarm mode the test fails and says why.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::docker::{build_image, docker_missing, repo, run, stdout, Members};
use e2e::{bin, wait_for};
use serde_json::Value;

use e2e::pipeline::{e2e_inputs, write_inputs};

const T: Duration = Duration::from_secs(180);
const LABELS: [&str; 4] = [
    "primes-input",
    "primes-coordinator-1",
    "primes-coordinator-2",
    "primes-coordinator-3",
];

/// A deployed stack in a temp dir; removed with everything it made on drop.
struct Stack {
    dir: tempfile::TempDir,
    name: String,
    image: String,
    ports: [u16; 3],
    node: String,
    /// Node labels this test added (removed again).
    labels_added: Vec<&'static str>,
    /// True if this test initialised the swarm (it leaves it again).
    swarm_ours: bool,
}

impl Stack {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn service(&self, s: &str) -> String {
        format!("{}_{s}", self.name)
    }

    /// The running containers of a service.
    fn containers(&self, service: &str) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-q", "--filter"])
            .arg(format!(
                "label=com.docker.swarm.service.name={}",
                self.service(service)
            ))
            .output();
        out.map(|o| stdout(&o).lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> Output {
        run(Command::new("docker").args(args))
    }

    /// The service's recent logs, for a failure message.
    fn logs(&self, service: &str) -> String {
        Command::new("docker")
            .args(["service", "logs", "--tail", "20", &self.service(service)])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    }
}

impl Members for Stack {
    fn http_addrs(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["stack", "rm", &self.name])
            .output();
        // The volumes can go once the stack's containers are gone.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let left = Command::new("docker")
                .args(["ps", "-aq", "--filter"])
                .arg(format!("label=com.docker.stack.namespace={}", self.name))
                .output()
                .map(|o| stdout(&o))
                .unwrap_or_default();
            if left.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        for v in [
            "replica-2",
            "replica-3",
            "coordinator-1",
            "coordinator-2",
            "coordinator-3",
        ] {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", &format!("{}_{v}", self.name)])
                .output();
        }
        let _ = Command::new("docker").args(["rmi", &self.image]).output();
        for l in &self.labels_added {
            let _ = Command::new("docker")
                .args(["node", "update", "--label-rm", l, &self.node])
                .output();
        }
        if self.swarm_ours {
            let _ = Command::new("docker")
                .args(["swarm", "leave", "--force"])
                .output();
        }
    }
}

/// Three free ports on 127.0.0.1 (found by binding port 0; released for the stack).
fn free_ports() -> [u16; 3] {
    let ls: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port"))
        .collect();
    let p = |i: usize| ls[i].local_addr().expect("local addr").port();
    [p(0), p(1), p(2)]
}

#[test]
/// The swarm stack under a killed task, a removed coordinator container and workers scaled
/// from 3 to 6 mid-run gives exactly the primes of the single-process check.
fn swarm_stack_survives_task_faults_and_scaling() {
    let _one_cluster = e2e::docker::lock();
    if let Some(why) = docker_missing(&[]) {
        panic!("the swarm test needs docker: {why} (bash .ci/run installs docker.io and starts dockerd)");
    }
    let state = stdout(&run(Command::new("docker").args([
        "info",
        "--format",
        "{{.Swarm.LocalNodeState}}",
    ])));
    let swarm_ours = state != "active";
    if swarm_ours {
        run(Command::new("docker").args(["swarm", "init", "--advertise-addr", "127.0.0.1"]));
    }
    let node = stdout(&run(Command::new("docker").args([
        "info",
        "--format",
        "{{.Swarm.NodeID}}",
    ])));
    let labels = stdout(&run(Command::new("docker").args([
        "node",
        "inspect",
        "--format",
        "{{json .Spec.Labels}}",
        &node,
    ])));
    let have: Value = serde_json::from_str(&labels).unwrap_or(Value::Null);
    let labels_added: Vec<&'static str> =
        LABELS.into_iter().filter(|l| have[*l] != "true").collect();
    let stamp = e2e::docker::stamp();
    let mut s = Stack {
        dir: tempfile::tempdir().expect("tempdir"),
        name: format!("primese2e{stamp}"),
        image: String::new(),
        ports: free_ports(),
        node: node.clone(),
        labels_added: Vec::new(),
        swarm_ours,
    };
    for l in &labels_added {
        s.docker(&["node", "update", "--label-add", &format!("{l}=true"), &node]);
        s.labels_added.push(l);
    }
    s.image = build_image(&stamp);
    for d in ["input", "stage"] {
        std::fs::create_dir_all(s.path(d)).expect("mkdir");
    }
    let key = proto::ClusterKey::generate();
    std::fs::write(s.path("cluster.key"), key.to_hex()).expect("key");

    let up = Instant::now();
    let [p1, p2, p3] = s.ports.map(|p| p.to_string());
    run(Command::new("docker")
        .args(["stack", "deploy", "--resolve-image", "never", "-c"])
        .arg(repo().join("deploy/stack.yaml"))
        .arg(&s.name)
        .env("PRIMES_INPUT", s.path("input"))
        .env("PRIMES_KEY_FILE", s.path("cluster.key"))
        .env("PRIMES_IMAGE", &s.image)
        .env("PRIMES_HTTP_PORT_1", p1)
        .env("PRIMES_HTTP_PORT_2", p2)
        .env("PRIMES_HTTP_PORT_3", p3)
        .env("PRIMES_WORKERS", "3")
        .env("PRIMES_HEARTBEAT_MS", "500")
        .env("PRIMES_SNAPSHOT_MS", "2000")
        .env("PRIMES_FLUSH_MS", "100")
        .env("WORKER_DELAY_MS", "300"));
    let deadline = Instant::now() + T;
    while s.workers().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "three workers registered with a leader of the stack: members say {:?}\n{}\n{}",
            s.results(&["status"]),
            s.logs("coordinator-1"),
            s.logs("worker")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("stack deploy to 3 workers registered: {:?}", up.elapsed());
    let (leader, _) = s.leader().expect("a member leads");
    let leader_box = s.containers(&format!("coordinator-{leader}"));
    assert_eq!(
        leader_box.len(),
        1,
        "one container runs coordinator-{leader}"
    );
    let worker_box = s.containers("worker");
    assert_eq!(worker_box.len(), 3, "three worker containers");

    // Input through the primary's bind-mounted folder (staged, then renamed in).
    write_inputs(&s.path("stage"), "w", 90, 2000, 29);
    for f in std::fs::read_dir(s.path("stage")).expect("stage").flatten() {
        std::fs::rename(f.path(), s.path("input").join(f.file_name())).expect("drop");
    }
    let n = e2e_inputs(&s.path("input")).len();

    // Faults while the job runs: workers scaled up, a worker's task killed, the leader's
    // container removed.
    s.docker(&[
        "service",
        "scale",
        "--detach",
        &format!("{}=6", s.service("worker")),
    ]);
    s.docker(&["kill", &worker_box[0]]);
    s.docker(&["rm", "-f", &leader_box[0]]);
    let reported = s.reported();
    let left = e2e_inputs(&s.path("input"))
        .iter()
        .filter(|f| !reported.contains(&format!("{f}.json")))
        .count();
    assert!(
        left > 10,
        "the faults come while the job runs ({left} of {n} files left)"
    );
    // Another member leads; the six workers (worker-1..6, one of them restarted) register.
    let deadline = Instant::now() + T;
    loop {
        let now_leader = s.leader().map(|(l, _)| l);
        let ws = s.workers();
        if now_leader.is_some_and(|l| l != leader) && ws.len() == 6 {
            let want: BTreeSet<String> = (1..=6).map(|i| format!("worker-{i}")).collect();
            assert_eq!(ws, want, "the scaled workers are named by their task slots");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "another member than {leader} leads and six workers register: leader {now_leader:?}, workers {ws:?}\n{}",
            s.logs("worker")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The removed coordinator's service starts a new task on its volume: it rejoins.
    wait_for(T, "the removed coordinator back, as a member", || {
        s.results(&["status"]).is_some_and(|o| {
            o.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|v| v["info"]["member"] == leader)
        })
    });
    // The killed worker's task was started again by the restart policy.
    wait_for(T, "the killed worker's task restarted", || {
        s.containers("worker").len() == 6
    });

    // A rolling update of the workers (one task at a time, the old one stopped first):
    // it completes, and the six workers register again under their slots' names.
    s.docker(&[
        "service",
        "update",
        "--detach",
        "--force",
        &s.service("worker"),
    ]);
    wait_for(T, "the rolling update of the workers completed", || {
        Command::new("docker")
            .args([
                "service",
                "inspect",
                "--format",
                "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
                &s.service("worker"),
            ])
            .output()
            .is_ok_and(|o| stdout(&o) == "completed")
    });
    wait_for(T, "six workers registered after the update", || {
        s.workers().len() == 6
    });

    // Every file reported, and the primes exact.
    let inputs = e2e_inputs(&s.path("input"));
    wait_for(T, "a report for every input", || {
        let reported = s.reported();
        inputs
            .iter()
            .all(|f| reported.contains(&format!("{f}.json")))
    });
    let text = s
        .results(&["primes"])
        .expect("coordinator results primes from a member");
    let got: Vec<&str> = text.lines().collect();
    let set: BTreeSet<&str> = got.iter().copied().collect();
    assert_eq!(set.len(), got.len(), "no prime twice");
    let files: Vec<PathBuf> = inputs.iter().map(|f| s.path("input").join(f)).collect();
    let check = run(Command::new(bin("worker")).arg("check").args(&files));
    let want_text = String::from_utf8_lossy(&check.stdout).to_string();
    let want: BTreeSet<&str> = want_text.lines().collect();
    assert_eq!(set, want, "the stack's primes.txt equals worker check");
    eprintln!(
        "swarm stack: job exact after faults, {:?} in all",
        up.elapsed()
    );
}
