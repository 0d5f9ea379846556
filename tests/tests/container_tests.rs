//! The compose cluster (deploy/compose.yaml) with real container faults: the image is built,
//! the cluster brought up, input dropped through the primary's mounted folder, then a worker,
//! the primary file server and the coordinator group's leader are `docker kill`ed (the
//! leader stays down until the job is done: another member leads), a worker paused, a
//! worker cut off the network and reconnected, a worker's process crashed (restarted by the
//! `restart: unless-stopped` policy); the results, read from the members with
//! `coordinator results` (no volume is shared by two coordinators), must equal the
//! single-process check.
//! Containers, networks and volumes are removed at the end. Without a working docker the
//! test fails and says why (`.ci/run` installs docker.io and docker-compose and starts
//! dockerd).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::docker::{build_image, docker_missing, repo, run, stdout, Members};
use e2e::{bin, wait_for};

use e2e::pipeline::{e2e_inputs, write_inputs};

const T: Duration = Duration::from_secs(120);

/// A compose project in a temp dir, taken down (containers, networks, volumes) on drop.
struct Cluster {
    dir: tempfile::TempDir,
    project: String,
    image: String,
}

impl Cluster {
    fn compose(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(repo().join("deploy/compose.yaml"))
            .env("PRIMES_INPUT", self.path("input"))
            .env("PRIMES_KEY_FILE", self.path("cluster.key"))
            .env("PRIMES_IMAGE", &self.image)
            .env("PRIMES_HTTP_PUBLISH", "127.0.0.1:")
            .env("PRIMES_HTTP_PUBLISH_2", "127.0.0.1:")
            .env("PRIMES_HTTP_PUBLISH_3", "127.0.0.1:")
            .env("PRIMES_HEARTBEAT_MS", "500")
            .env("PRIMES_SNAPSHOT_MS", "2000")
            .env("PRIMES_FLUSH_MS", "100")
            .env("WORKER_DELAY_MS", "400");
        c
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The container id of a service.
    fn container(&self, service: &str) -> String {
        stdout(&run(self.compose().args(["ps", "-q", service])))
    }

    fn docker(&self, args: &[&str]) -> Output {
        run(Command::new("docker").args(args))
    }

    fn files_on(&self, service: &str) -> usize {
        let id = self.container(service);
        let out = Command::new("docker")
            .args(["exec", &id, "ls", "/srv/primes/replica"])
            .output();
        out.map_or(0, |o| String::from_utf8_lossy(&o.stdout).lines().count())
    }
}

impl Members for Cluster {
    /// The members' published dashboard addresses (those whose container runs).
    fn http_addrs(&self) -> String {
        (1..=3)
            .filter_map(|n| {
                let out = self
                    .compose()
                    .args(["port", &format!("coordinator-{n}"), "7410"])
                    .output()
                    .ok()?;
                let a = stdout(&out);
                (out.status.success() && !a.is_empty()).then_some(a)
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .compose()
            .args(["down", "-v", "--remove-orphans", "-t", "2"])
            .output();
        let _ = Command::new("docker").args(["rmi", &self.image]).output();
    }
}

#[test]
/// The compose cluster under container kills, a pause, a network cut and a crash gives
/// exactly the primes of the single-process check.
fn compose_cluster_survives_container_faults() {
    let _one_cluster = e2e::docker::lock();
    if let Some(why) = docker_missing(&[("docker-compose", "version")]) {
        panic!("the container test needs docker and docker-compose: {why} (bash .ci/run installs docker.io and docker-compose and starts dockerd)");
    }
    // The image, from the binaries this test runs against.
    let stamp = e2e::docker::stamp();
    let image = build_image(&stamp);
    let c = Cluster {
        dir: tempfile::tempdir().expect("tempdir"),
        project: format!("primese2e{stamp}"),
        image,
    };
    for d in ["input", "stage"] {
        std::fs::create_dir_all(c.path(d)).expect("mkdir");
    }
    let key = proto::ClusterKey::generate();
    std::fs::write(c.path("cluster.key"), key.to_hex()).expect("key");
    // The image's user (uid 10001) reads the key.
    let cp = std::ffi::CString::new(c.path("cluster.key").display().to_string()).expect("path");
    assert_eq!(
        unsafe { libc::chown(cp.as_ptr(), 10001, 10001) },
        0,
        "chown cluster.key"
    );
    std::fs::set_permissions(
        c.path("cluster.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod key");

    let up = Instant::now();
    run(c.compose().args(["up", "-d"]));
    wait_for(T, "three workers registered in the containers", || {
        c.workers().len() == 3
    });
    eprintln!("compose up to 3 workers registered: {:?}", up.elapsed());

    // The fault targets, found before the input is dropped (each lookup runs docker or
    // the results command: looked up after the drop they let the job finish first).
    let worker1 = c.container("worker-1");
    let server1 = c.container("server-1");
    // The group's leader, by what the members say.
    let leader = c.leader().map_or(0, |(l, _)| l);
    assert!(
        (1..=3).contains(&leader),
        "a member says it leads: {:?}",
        c.results(&["status"])
    );
    let coord = c.container(&format!("coordinator-{leader}"));
    let worker2 = c.container("worker-2");
    let worker3 = c.container("worker-3");

    // Input through the primary's mounted folder (staged, then renamed in: instant).
    write_inputs(&c.path("stage"), "c", 60, 2000, 15);
    for f in std::fs::read_dir(c.path("stage")).expect("stage").flatten() {
        std::fs::rename(f.path(), c.path("input").join(f.file_name())).expect("drop");
    }
    let n = e2e_inputs(&c.path("input")).len();
    wait_for(T, "the backups holding every input", || {
        c.files_on("server-2") == n && c.files_on("server-3") == n
    });

    // Faults while the job runs.
    c.docker(&["kill", &worker1]);
    let reported = c.reported();
    let unreported = e2e_inputs(&c.path("input"))
        .iter()
        .filter(|f| !reported.contains(&format!("{f}.json")))
        .count();
    assert!(
        unreported > 10,
        "the faults come while the job runs ({unreported} of {n} files left)"
    );
    c.docker(&["kill", &server1]);
    c.docker(&["pause", &worker3]);
    std::thread::sleep(Duration::from_secs(2)); // the fault: 4 heartbeats of silence
    c.docker(&["unpause", &worker3]);
    let net = stdout(&c.docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
        &worker2,
    ]));
    c.docker(&["network", "disconnect", &net, &worker2]);
    std::thread::sleep(Duration::from_secs(2)); // the fault: a cut link
    c.docker(&["network", "connect", &net, &worker2]);
    // The leader's container killed: another member leads without it.
    c.docker(&["kill", &coord]);
    let deadline = Instant::now() + T;
    while !(c.leader().is_some_and(|(l, _)| l != leader) && c.status()["running"] == true) {
        if Instant::now() > deadline {
            let logs = (1..=3)
                .filter(|&m| m != leader)
                .map(|m| {
                    let out = c
                        .compose()
                        .args(["logs", "--tail", "15", &format!("coordinator-{m}")])
                        .output();
                    out.map(|o| stdout(&o)).unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("\n");
            panic!(
                "timed out after {T:?} waiting for another coordinator than {leader} to lead: members say {:?}; the leader's status {}; logs:\n{logs}",
                c.results(&["status"]),
                c.status()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    c.docker(&["start", &server1]);
    c.docker(&["start", &worker1]);
    // A process that dies by itself is restarted by the restart policy.
    let pid: i32 = stdout(&c.docker(&["inspect", "-f", "{{.State.Pid}}", &worker2]))
        .parse()
        .expect("pid");
    assert!(pid > 0);
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    wait_for(T, "worker-2 restarted by its restart policy", || {
        let out = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{.RestartCount}} {{.State.Running}}",
                &worker2,
            ])
            .output();
        out.is_ok_and(|o| {
            let s = String::from_utf8_lossy(&o.stdout);
            let mut it = s.split_whitespace();
            it.next().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) >= 1
                && it.next() == Some("true")
        })
    });

    // Every file reported, and the primes exact.
    let inputs = e2e_inputs(&c.path("input"));
    wait_for(T, "a report for every input", || {
        let reported = c.reported();
        inputs
            .iter()
            .all(|f| reported.contains(&format!("{f}.json")))
    });
    let text = c
        .results(&["primes"])
        .expect("coordinator results primes from a member");
    let got: Vec<&str> = text.lines().collect();
    let set: std::collections::BTreeSet<&str> = got.iter().copied().collect();
    assert_eq!(set.len(), got.len(), "no prime twice");
    let files: Vec<PathBuf> = inputs.iter().map(|f| c.path("input").join(f)).collect();
    let check = run(Command::new(bin("worker")).arg("check").args(&files));
    let want_text = String::from_utf8_lossy(&check.stdout).to_string();
    let want: std::collections::BTreeSet<&str> = want_text.lines().collect();
    assert_eq!(set, want, "the containers' primes.txt equals worker check");
    // The killed leader comes back as a follower.
    c.docker(&["start", &coord]);
    assert!(
        c.results(&["snapshots"])
            .is_some_and(|l| l.lines().count() >= 1),
        "snapshots were written and are served by the members"
    );
}
