//! What the container tests share: running docker, building the image from this checkout's
//! binaries, and one lock so that two clusters never run at once on a 2-core machine.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::bin_dir;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a command; panics with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A command's stdout, trimmed.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Says why docker (and `tools`, e.g. docker-compose) cannot be used here, if it cannot.
pub fn docker_missing(tools: &[(&str, &str)]) -> Option<String> {
    for (tool, arg) in [("docker", "info")].iter().chain(tools) {
        match Command::new(tool).arg(arg).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Some(format!(
                    "`{tool} {arg}` failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) => return Some(format!("`{tool}` cannot run: {e}")),
        }
    }
    None
}

/// One cluster of containers at a time (they share the machine's cores and the base image).
pub fn lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A name unique to this run (pid and time), for images, projects and stacks.
pub fn stamp() -> String {
    format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 1_000_000)
    )
}

/// Builds the image from target/release of this checkout (the binaries the tests run),
/// tagged `primes-e2e:<stamp>`; makes the base image first when it is missing.
pub fn build_image(stamp: &str) -> String {
    run(Command::new("bash").arg(repo().join("deploy/base-image.sh")));
    assert_eq!(
        bin_dir().canonicalize().ok(),
        repo().join("target/release").canonicalize().ok(),
        "the image is built from target/release of this checkout"
    );
    let image = format!("primes-e2e:{stamp}");
    run(Command::new("docker")
        .args(["build", "-q", "-f"])
        .arg(repo().join("deploy/Dockerfile"))
        .args(["-t", &image])
        .arg(repo()));
    image
}

/// The body of `GET path` from `addr` (HTTP/1.0: no chunked body), if it answers 200.
pub fn http_get(addr: &str, path: &str) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let sock: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).ok()?;
    let split = all.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&all[..split]);
    head.lines()
        .next()?
        .contains(" 200 ")
        .then(|| all[split + 4..].to_vec())
}

/// A coordinator group reached from outside through its members' published dashboard
/// addresses: what the tests ask it, through `coordinator results` and `/api/status`.
pub trait Members {
    /// The members' dashboard addresses, comma-separated (those that can be reached now).
    fn http_addrs(&self) -> String;

    /// `coordinator results ARGS --from <the members>`: its stdout if it succeeded.
    fn results(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(crate::bin("coordinator"))
            .arg("results")
            .args(args)
            .args(["--from", &self.http_addrs()])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The leading member's number and dashboard address, by what the members say.
    fn leader(&self) -> Option<(u64, String)> {
        self.results(&["status"])?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["info"]["role"] == "leader")
            .and_then(|v| {
                Some((
                    v["info"]["member"].as_u64()?,
                    v["addr"].as_str()?.to_string(),
                ))
            })
    }

    /// The serving leader's live status (`/api/status`; null if none answers).
    fn status(&self) -> serde_json::Value {
        self.leader()
            .and_then(|(_, addr)| http_get(&addr, "/api/status"))
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Names of the workers connected to the serving leader.
    fn workers(&self) -> BTreeSet<String> {
        self.status()["workers"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .filter(|w| w["state"] != "disconnected")
                    .filter_map(|w| w["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The reports the members list.
    fn reported(&self) -> BTreeSet<String> {
        self.results(&["reports"])
            .map(|o| o.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}
