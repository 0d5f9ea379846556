//! The test harness of the whole pipeline with real processes: [`Pipeline`] (servers, a
//! coordinator or a group of coordinators, and workers in a temp dir, with short intervals
//! and kill/restart/pause helpers), [`Scripts`] (a copy of start_system.sh/stop_system.sh
//! run on a free port range) and the input writers the test modules share.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{bin, read_addr, wait_for, Proc};
use proto::ClusterKey;
use serde_json::Value;

pub const T: Duration = Duration::from_secs(60);

/// A cluster in a temp dir: servers, a coordinator and workers, all with short intervals.
pub struct Pipeline {
    pub dir: tempfile::TempDir,
    pub servers: Vec<(String, Option<Proc>, String)>,
    pub coordinator: Option<Proc>,
    pub coord_addr: String,
    pub workers: Vec<(String, Option<Proc>)>,
    /// Extra coordinator flags and environment (kept for restarts).
    pub coord_flags: Vec<String>,
    pub coord_env: Vec<(&'static str, String)>,
    pub worker_flags: Vec<String>,
    /// A coordinator group (replicated coordinators): each member's process, workers' and
    /// Raft addresses.
    pub members: Vec<(Option<Proc>, String, String)>,
}

pub fn s(x: &str) -> String {
    x.to_string()
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline::new()
    }
}

impl Pipeline {
    pub fn new() -> Pipeline {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["data/input", "run", "logs"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        ClusterKey::load_or_create(&dir.path().join("run/cluster.key")).expect("key");
        Pipeline {
            dir,
            servers: Vec::new(),
            coordinator: None,
            coord_addr: String::new(),
            workers: Vec::new(),
            coord_flags: Vec::new(),
            coord_env: Vec::new(),
            worker_flags: Vec::new(),
            members: Vec::new(),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![(
            "PRIMES_KEY_FILE",
            self.path("run/cluster.key").display().to_string(),
        )]
    }

    pub fn start_server(
        &mut self,
        id: &str,
        role: &str,
        root: &str,
        backups: &[String],
        listen: &str,
    ) -> String {
        let addr_file = self.path(&format!("run/{id}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let p = Proc::start(
            id,
            &bin("afs-server"),
            &server_args(id, role, root, listen, backups, &addr_file),
            &self.env(),
            self.dir.path(),
            &self.path(&format!("logs/{id}.log")),
        );
        let addr = read_addr(&addr_file, T);
        if let Some(e) = self.servers.iter_mut().find(|e| e.0 == id) {
            e.1 = Some(p);
            e.2 = addr.clone();
        } else {
            self.servers.push((s(id), Some(p), addr.clone()));
        }
        addr
    }

    /// A file server, the coordinator and `workers` workers named worker-1, worker-2, ...
    pub fn start_simple(&mut self, workers: usize) {
        self.simple();
        self.start_coordinator();
        for i in 1..=workers {
            self.start_worker(&format!("worker-{i}"));
        }
    }

    pub fn simple(&mut self) {
        self.start_server("server-1", "primary", "data/input", &[], "127.0.0.1:0");
    }

    pub fn replicated(&mut self) {
        let b1 = self.start_server(
            "server-2",
            "backup",
            "data/replicas/server-2",
            &[],
            "127.0.0.1:0",
        );
        let b2 = self.start_server(
            "server-3",
            "backup",
            "data/replicas/server-3",
            &[],
            "127.0.0.1:0",
        );
        self.start_server(
            "server-1",
            "primary",
            "data/input",
            &[b1, b2],
            "127.0.0.1:0",
        );
    }

    pub fn afs_list(&self) -> String {
        let mut v: Vec<&(String, Option<Proc>, String)> = self.servers.iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.iter().map(|e| e.2.clone()).collect::<Vec<_>>().join(",")
    }

    pub fn start_coordinator(&mut self) {
        let listen = if self.coord_addr.is_empty() {
            s("127.0.0.1:0")
        } else {
            self.coord_addr.clone()
        };
        let addr_file = self.path("run/coordinator.addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut args = vec![
            s("--listen"),
            listen,
            s("--addr-file"),
            addr_file.display().to_string(),
        ];
        args.extend(short_intervals());
        args.extend(self.coord_flags.iter().cloned());
        let mut env = self.env();
        env.extend(self.coord_env.iter().cloned());
        let p = Proc::start(
            "coordinator",
            &bin("coordinator"),
            &args,
            &env,
            self.dir.path(),
            &self.path("logs/coordinator.log"),
        );
        self.coord_addr = read_addr(&addr_file, T);
        self.coordinator = Some(p);
    }

    pub fn start_worker(&mut self, id: &str) {
        let mut args = vec![
            s("--id"),
            s(id),
            s("--coordinator"),
            self.coord_addr.clone(),
            s("--afs"),
            self.afs_list(),
            s("--cache-root"),
            self.path("cache").display().to_string(),
            s("--max-backoff-ms"),
            s("300"),
            s("--threads"),
            s("1"),
        ];
        args.extend(self.worker_flags.iter().cloned());
        let p = Proc::start(
            id,
            &bin("worker"),
            &args,
            &self.env(),
            self.dir.path(),
            &self.path(&format!("logs/{id}.log")),
        );
        if let Some(e) = self.workers.iter_mut().find(|e| e.0 == id) {
            e.1 = Some(p);
        } else {
            self.workers.push((s(id), Some(p)));
        }
    }

    pub fn worker(&mut self, id: &str) -> &mut Proc {
        self.workers
            .iter_mut()
            .find(|e| e.0 == id)
            .and_then(|e| e.1.as_mut())
            .unwrap_or_else(|| panic!("no worker {id}"))
    }

    pub fn status(&self) -> Value {
        std::fs::read(self.path("run/status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    pub fn registered(&self, n: usize) -> bool {
        let st = self.status();
        st["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().filter(|w| w["state"] != "disconnected").count() >= n)
    }

    /// Input files (relative names) that have no report yet.
    pub fn unreported(&self) -> Vec<String> {
        e2e_inputs(&self.path("data/input"))
            .into_iter()
            .filter(|f| !self.path(&format!("data/output/{f}.json")).exists())
            .collect()
    }

    pub fn wait_all_reported(&self, limit: Duration) {
        wait_for(limit, "a report for every input file", || {
            self.unreported().is_empty()
        });
    }

    /// The distinct primes the inputs hold, by the single-process `worker check`.
    pub fn expected(&self) -> BTreeSet<String> {
        let files: Vec<PathBuf> = e2e_inputs(&self.path("data/input"))
            .iter()
            .map(|f| self.path(&format!("data/input/{f}")))
            .collect();
        let out = Command::new(bin("worker"))
            .arg("check")
            .args(&files)
            .output()
            .expect("worker check");
        assert!(
            out.status.success(),
            "worker check failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(s)
            .collect()
    }

    /// Asserts primes.txt holds exactly the expected primes, each once, no torn line.
    pub fn assert_exact(&self) {
        let text = std::fs::read_to_string(self.path("primes.txt")).expect("primes.txt");
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "primes.txt ends with a newline"
        );
        let lines: Vec<&str> = text.lines().collect();
        let set: BTreeSet<String> = lines.iter().map(|l| s(l)).collect();
        assert_eq!(
            set.len(),
            lines.len(),
            "no prime appears twice in primes.txt"
        );
        let want = self.expected();
        let missing: Vec<_> = want.difference(&set).take(5).collect();
        let extra: Vec<_> = set.difference(&want).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "primes.txt differs: missing {missing:?}, extra {extra:?}"
        );
    }
}

/// Coordinator groups.
impl Pipeline {
    /// Starts a group of `n` coordinators on free ports (learning inputs from the file
    /// servers); workers started after get every member's address.
    pub fn start_group(&mut self, n: usize) {
        self.plan_group(n);
        for i in 1..=n {
            self.start_member(i);
        }
    }

    /// Picks free ports for a group of `n` coordinators without starting any
    /// ([`Pipeline::start_member`] starts each).
    pub fn plan_group(&mut self, n: usize) {
        let held: Vec<std::net::TcpListener> = (0..2 * n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port"))
            .collect();
        let addrs: Vec<String> = held
            .iter()
            .map(|l| l.local_addr().expect("addr").to_string())
            .collect();
        drop(held);
        self.members = (0..n)
            .map(|i| (None, addrs[2 * i].clone(), addrs[2 * i + 1].clone()))
            .collect();
        self.coord_addr = self
            .members
            .iter()
            .map(|m| m.1.clone())
            .collect::<Vec<_>>()
            .join(",");
    }

    /// Starts (again) group member `id` (1-based).
    pub fn start_member(&mut self, id: usize) {
        let spec = self
            .members
            .iter()
            .map(|m| format!("{}/{}", m.1, m.2))
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec![
            s("--group"),
            spec,
            s("--group-id"),
            id.to_string(),
            s("--afs"),
            self.afs_list(),
            s("--inputs-from-afs"),
        ];
        args.extend(short_intervals());
        args.extend(self.coord_flags.iter().cloned());
        let mut env = self.env();
        env.extend(self.coord_env.iter().cloned());
        let p = Proc::start(
            &format!("coordinator-{id}"),
            &bin("coordinator"),
            &args,
            &env,
            self.dir.path(),
            &self.path(&format!("logs/coordinator-{id}.log")),
        );
        self.members[id - 1].0 = Some(p);
    }

    /// Sends `sig` to group member `id`.
    pub fn member_signal(&mut self, id: usize, sig: i32) {
        if let Some(p) = self.members[id - 1].0.as_ref() {
            p.signal(sig);
        }
    }

    /// kill -9 group member `id`.
    pub fn kill_member(&mut self, id: usize) {
        if let Some(p) = self.members[id - 1].0.as_mut() {
            p.kill9();
        }
    }

    /// The member leading now, by the status file, if that member is alive and wrote it.
    pub fn leader(&mut self) -> Option<usize> {
        let st = self.status();
        let id = st["group"]["leader"].as_u64()? as usize;
        let pid = st["pid"].as_i64()? as i32;
        let m = self.members.get_mut(id.checked_sub(1)?)?.0.as_mut()?;
        (m.pid() == pid && m.is_running() && st["running"] == true).then_some(id)
    }

    /// Waits for a leader other than `old`; returns it.
    pub fn wait_leader_other_than(&mut self, old: Option<usize>, limit: Duration) -> usize {
        let mut found = None;
        wait_for(limit, "a (new) leader of the group", || {
            found = self.leader().filter(|l| Some(*l) != old);
            found.is_some()
        });
        found.unwrap_or_default()
    }

    /// Log of member `id`, its last lines.
    pub fn member_log(&self, id: usize, n: usize) -> String {
        crate::log_tail(&self.path(&format!("logs/coordinator-{id}.log")), n)
    }

    /// Group member `id`'s whole log so far (empty if it has none yet).
    pub fn member_log_all(&self, id: usize) -> String {
        std::fs::read_to_string(self.path(&format!("logs/coordinator-{id}.log")))
            .unwrap_or_default()
    }
}

impl Pipeline {
    pub fn coord_addr(&self) -> &str {
        &self.coord_addr
    }
    pub fn worker_flags_mut(&mut self, flags: Vec<String>) {
        self.worker_flags = flags;
    }
    pub fn coord_flags_mut(&mut self, flags: Vec<String>) {
        self.coord_flags = flags;
    }
    pub fn worker_signal(&mut self, id: &str, sig: i32) {
        self.worker(id).signal(sig);
    }
    pub fn kill_worker(&mut self, id: &str) {
        self.worker(id).kill9();
    }
    pub fn kill_coordinator(&mut self) {
        if let Some(c) = self.coordinator.as_mut() {
            c.kill9();
        }
    }
    /// kill -9 the coordinator, runs `meanwhile` (changes made while it is down), starts it
    /// again on its address and waits for the new coordinator's status (the killed one's
    /// status file stays until it is rewritten).
    pub fn restart_coordinator_with(&mut self, meanwhile: impl FnOnce(&Pipeline)) {
        let old = self.status()["session"].clone();
        self.kill_coordinator();
        meanwhile(self);
        self.start_coordinator();
        wait_for(T, "the new coordinator's status", || {
            let st = self.status();
            st["session"] != old && st["running"] == true
        });
    }
    /// [`Pipeline::restart_coordinator_with`] with nothing changed meanwhile.
    pub fn restart_coordinator(&mut self) {
        self.restart_coordinator_with(|_| {});
    }
    /// kill -9 a file server and start it again on the same address with the same role.
    pub fn restart_server(&mut self, id: &str) {
        self.kill_server(id);
        self.start_server_again(id);
    }
    /// kill -9 a file server (and leave it down).
    pub fn kill_server(&mut self, id: &str) {
        if let Some(p) = self
            .servers
            .iter_mut()
            .find(|e| e.0 == id)
            .and_then(|e| e.1.as_mut())
        {
            p.kill9();
        }
    }
    /// The coordinator's pid (0 if not started).
    pub fn coordinator_pid(&self) -> i32 {
        self.coordinator.as_ref().map_or(0, |c| c.pid())
    }
    /// A file server's pid (0 if not running).
    pub fn server_pid(&self, id: &str) -> i32 {
        self.servers
            .iter()
            .find(|e| e.0 == id)
            .and_then(|e| e.1.as_ref())
            .map_or(0, |p| p.pid())
    }
    /// Signals the coordinator (SIGSTOP, SIGCONT, ...).
    pub fn coordinator_signal(&self, sig: i32) {
        if let Some(c) = self.coordinator.as_ref() {
            c.signal(sig);
        }
    }
    /// Starts a killed file server again on its address with its role.
    pub fn start_server_again(&mut self, id: &str) {
        let Some(i) = self.servers.iter().position(|e| e.0 == id) else {
            return;
        };
        let addr = self.servers[i].2.clone();
        if id == "server-1" {
            let backups: Vec<String> = self
                .servers
                .iter()
                .filter(|e| e.0 != "server-1")
                .map(|e| e.2.clone())
                .collect();
            self.start_server(id, "primary", "data/input", &backups, &addr);
        } else {
            self.start_server(id, "backup", &format!("data/replicas/{id}"), &[], &addr);
        }
    }
    /// Input files missing from some backup.
    pub fn unreported_on_backups(&self) -> usize {
        e2e_inputs(&self.path("data/input"))
            .iter()
            .filter(|f| {
                !self.path(&format!("data/replicas/server-2/{f}")).exists()
                    || !self.path(&format!("data/replicas/server-3/{f}")).exists()
            })
            .count()
    }
}

/// The coordinator's intervals in tests: short, so failures are noticed and work flows fast.
pub fn short_intervals() -> Vec<String> {
    [
        "--heartbeat-ms",
        "200",
        "--flush-ms",
        "100",
        "--scan-ms",
        "50",
        "--quiet-ms",
        "200",
        "--retry-ms",
        "200",
        "--marker-timeout-ms",
        "2000",
    ]
    .iter()
    .map(|x| s(x))
    .collect()
}

/// A file server's arguments in the tests: `backups` to push to, its address written to
/// `addr_file`, a short scan interval.
pub fn server_args(
    id: &str,
    role: &str,
    root: &str,
    listen: &str,
    backups: &[String],
    addr_file: &Path,
) -> Vec<String> {
    let mut args = vec![
        s("--id"),
        s(id),
        s("--role"),
        s(role),
        s("--root"),
        s(root),
        s("--listen"),
        s(listen),
        s("--addr-file"),
        addr_file.display().to_string(),
        s("--scan-ms"),
        s("50"),
        // As start_system.sh starts them: workers on the same host read ranges through it.
        s("--local-socket"),
        addr_file.with_extension("sock").display().to_string(),
    ];
    for b in backups {
        args.extend([s("--backup"), b.clone()]);
    }
    args
}

/// Input files under `dir` (non-hidden, relative names).
pub fn e2e_inputs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read input dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(s))
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// Writes `count` files of `lines` pseudo-random numbers each (fixed seed), some of them
/// repeated across files so that deduplication matters.
pub fn write_inputs(dir: &Path, prefix: &str, count: usize, lines: usize, seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for f in 0..count {
        let mut body = String::new();
        for i in 0..lines {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = match i % 4 {
                0 => x % 100_000,
                1 => x % 10_000_000_000,
                2 => x >> 1,
                _ => (i as u64 * 7919) % 50_000, // repeated across files
            };
            body.push_str(&format!("{v}\n"));
        }
        std::fs::write(dir.join(format!("{prefix}{f:03}.txt")), body).expect("write input");
    }
}

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

/// A copy of the scripts in a temp dir, run with a free port range; stopped on drop.
pub struct Scripts {
    pub dir: tempfile::TempDir,
    pub base: u16,
}

impl Scripts {
    /// `files` input files of 1000 numbers named `<prefix>NNN.txt` (seeded).
    pub fn new(prefix: &str, files: usize, seed: u64) -> Scripts {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for f in ["start_system.sh", "stop_system.sh"] {
            std::fs::copy(repo.join(f), root.join(f)).expect("copy script");
        }
        std::fs::create_dir_all(root.join("target")).expect("mkdir");
        std::os::unix::fs::symlink(crate::bin_dir(), root.join("target/release"))
            .expect("symlink bins");
        std::fs::create_dir_all(root.join("data/input")).expect("mkdir");
        write_inputs(&root.join("data/input"), prefix, files, 1000, seed);
        Scripts {
            base: free_base(),
            dir,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a script with short intervals and nothing of the caller's PRIMES_BASE_PORT,
    /// AFS_CACHE_ROOT or PRIMES_HOST (the remembered ones apply), plus `env`; returns the
    /// exit code and stdout + stderr.
    pub fn run(&self, script: &str, args: &[&str], env: &[(&str, String)]) -> (i32, String) {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(self.root().join(script))
            .args(args)
            .current_dir(self.root())
            .env_remove("PRIMES_BASE_PORT")
            .env_remove("AFS_CACHE_ROOT")
            .env_remove("PRIMES_HOST")
            .env("PRIMES_SNAPSHOT_MS", "1000")
            .env("PRIMES_HEARTBEAT_MS", "300")
            .env("WORKER_MAX_BACKOFF_MS", "300");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run script");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    pub fn with_base(&self) -> Vec<(&'static str, String)> {
        vec![("PRIMES_BASE_PORT", self.base.to_string())]
    }

    pub fn pid(&self, name: &str) -> i32 {
        std::fs::read_to_string(self.root().join(format!("run/{name}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn status(&self) -> Value {
        std::fs::read(self.root().join("run/status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }
}

impl Drop for Scripts {
    fn drop(&mut self) {
        // Resume anything a test suspended, then the graceful stop (which kills stragglers).
        for e in std::fs::read_dir(self.root().join("run"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().ends_with(".pid") {
                if let Some(pid) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    unsafe {
                        libc::kill(pid, libc::SIGCONT);
                    }
                }
            }
        }
        let _ = self.run("stop_system.sh", &[], &[]);
    }
}

/// A base port with the ports the scripts use free (found by binding), away from every base
/// handed to another test of this process (they run in parallel: two finding the same free
/// range at the same moment would collide).
pub fn free_base() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let base = (0..2000u16)
        .map(|i| 21000 + ((std::process::id() as u16 % 1500) * 13) % 20000 + i * 11)
        .filter(|b| given.iter().all(|g| b.abs_diff(*g) > 220))
        .find(|b| {
            [
                0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 100, 101, 102, 103, 110,
            ]
            .iter()
            .all(|k| std::net::TcpListener::bind(("127.0.0.1", b + k)).is_ok())
        })
        .expect("free ports");
    given.push(base);
    base
}

/// The index of the last entry a Raft log file (`raft-log.jsonl`) appends (0 if none).
pub fn last_index(log: &[u8]) -> u64 {
    log.split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .filter_map(|v| v["append"]["log_id"]["index"].as_u64())
        .max()
        .unwrap_or(0)
}

/// The index up to which a Raft log file was purged (its first record), 0 if it was not.
pub fn purged_index(log: &[u8]) -> u64 {
    log.split(|b| *b == b'\n')
        .next()
        .and_then(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .and_then(|v| v["purge"]["index"].as_u64())
        .unwrap_or(0)
}

/// The flags of the scripts' simple mode (a group of one with a folder of its own).
pub fn simple_flags() -> Vec<String> {
    [
        "--snapshot-ms",
        "400",
        "--group-dir",
        "data/coordinators/simple",
    ]
    .iter()
    .map(|x| s(x))
    .collect()
}
