//! The dashboard in a real headless browser (Debian's Chromium driven by playwright-core,
//! installed by `.ci/run`): a running job's worker grid and counters appear, and the same
//! page updates live when a worker is killed. Saves `target/test-artifacts/dashboard.png`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use e2e::{bin_dir, read_addr};
use serde_json::Value;

use e2e::pipeline::{write_inputs, Pipeline};

/// Kills the browser driver (and so the browser) when the test ends.
struct Driver(Child);
impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The body of `GET path` from the dashboard at `addr` (HTTP/1.0: the server closes).
fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the dashboard");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    assert!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    out
}

fn chromium() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    p.exists().then_some(p)
}

#[test]
fn dashboard_shows_the_job_and_updates_live() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = repo.join("tests/browser/dashboard.mjs");
    let have_driver = repo
        .join("tests/browser/node_modules/playwright-core")
        .exists();
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let Some(chrome) = chromium().filter(|_| have_driver && node_ok) else {
        let msg = "the dashboard test needs node, Debian's chromium and tests/browser/node_modules (bash .ci/run installs them)";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        // Written to the stderr handle itself, not through eprintln!, which the test harness
        // captures and hides for a passing test: a skip must show in the test output.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("\nSKIPPED dashboard_tests: {msg}\n").as_bytes(),
        );
        return;
    };
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "d", 150, 500, 41);
    std::fs::create_dir_all(p.path("data/jobs")).expect("jobs folder");
    std::fs::write(p.path("data/jobs/n1000.job"), "nth 1000\n").expect("job file");
    p.worker_flags_mut(vec!["--delay-ms".into(), "120".into()]);
    p.simple();
    let afs = p.afs_list();
    p.coord_flags_mut(vec![
        "--http".into(),
        "127.0.0.1:0".into(),
        "--http-addr-file".into(),
        p.path("run/http.addr").display().to_string(),
        "--afs".into(),
        afs,
        "--snapshot-ms".into(),
        "1000".into(),
    ]);
    p.start_coordinator();
    for i in 1..=3 {
        p.start_worker(&format!("worker-{i}"));
    }
    let http = read_addr(&p.path("run/http.addr"), Duration::from_secs(20));
    let artifacts = bin_dir().join("../test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let child = Command::new("node")
        .arg(&script)
        .arg(format!("http://{http}/"))
        .arg(&shot)
        .env("CHROMIUM", &chrome)
        .current_dir(repo.join("tests/browser"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the browser driver");
    let mut driver = Driver(child);
    let stdout = driver.0.stdout.take().expect("driver stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| -> Value {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the browser driver did not report {what}"));
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver said {line:?}: {e}"));
        assert!(v.get("error").is_none(), "browser: {}", v["error"]);
        v
    };
    let ready = next("the first view");
    let workers = ready["ready"]["workers"].as_array().expect("workers");
    assert!(
        workers.len() >= 3,
        "the worker grid shows the workers: {ready}"
    );
    let servers = ready["ready"]["servers"].to_string();
    assert!(
        servers.contains("primary") && servers.contains("up"),
        "file servers shown: {servers}"
    );
    assert!(
        !p.unreported().is_empty(),
        "the job is still running while the page is checked"
    );

    p.kill_worker("worker-1");
    let mut stdin = driver.0.stdin.take().expect("driver stdin");
    writeln!(stdin, "killed worker-1").expect("tell the driver");
    let updated = next("the update after the kill");
    let after = &updated["updated"];
    let before = &updated["before"];
    let state = after["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == "worker-1"))
        .map(|w| w["state"].clone());
    assert_eq!(
        state,
        Some(Value::from("disconnected")),
        "the killed worker shows as disconnected: {after}"
    );
    assert!(
        after["updates"].as_u64() > before["updates"].as_u64(),
        "live updates kept coming"
    );
    assert_ne!(
        after["numbers"], ready["ready"]["numbers"],
        "the counters moved: {after}"
    );
    assert!(
        after["log"]
            .as_str()
            .is_some_and(|l| l.contains("worker-1")),
        "the change was logged on the page"
    );
    let jobs = after["jobs"].to_string();
    assert!(
        jobs.contains("n1000") && jobs.contains("nth 1000") && jobs.contains("done"),
        "the job table shows the job done: {jobs}"
    );
    // /metrics: the job and its tasks, the dedup set.
    let metrics = http_get(&http, "/metrics");
    for want in [
        "primes_jobs{state=\"done\"} 1",
        "primes_job_tasks{job=\"n1000\"} 1",
        "primes_job_tasks_done{job=\"n1000\"} 1",
        "# TYPE primes_dedup_set gauge",
    ] {
        assert!(
            metrics.contains(want),
            "/metrics lacks {want:?}:\n{metrics}"
        );
    }
    assert!(shot.exists(), "screenshot saved at {}", shot.display());
    println!("dashboard screenshot: {}", shot.display());
}
