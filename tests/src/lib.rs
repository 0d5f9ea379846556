//! Helpers for tests that start the real binaries: find them, run them with a guard that
//! kills them by pid when dropped, and wait on conditions with a deadline instead of sleeping.

pub mod docker;
pub mod pipeline;

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The folder holding the workspace binaries: the test executable lives in
/// `target/<profile>/deps/`, the binaries in `target/<profile>/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test executable is in target/<profile>/deps")
        .to_path_buf();
    dir
}

/// Path of a workspace binary; panics with the fix if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (`cargo build --release --workspace --bins`, part of the README test command)",
        p.display()
    );
    p
}

/// A child process killed (SIGKILL, by pid) and reaped when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `program` with `args`, stdout and stderr appended to `log`, in `cwd`, with a
    /// clean environment plus `envs`.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, String)],
        cwd: &Path,
        log: &Path,
    ) -> Proc {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening log {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log handle");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", program.display()));
        Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    /// A child started otherwise (its stdout elsewhere than `log`), killed on drop as
    /// [`Proc::start`]'s are.
    fn adopt(name: &str, child: Child, log: &Path) -> Proc {
        Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for exit up to `limit`; returns the exit code if it exited.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            unsafe {
                libc::kill(self.pid(), libc::SIGCONT);
            }
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` with its stdout a pipe nobody reads (`cmd | head` once head is gone) and its
/// stderr in `log`: its exit code within `limit` (None: it did not exit, and was killed),
/// and its log's last lines.
pub fn exit_without_reader(
    cmd: &mut Command,
    log: &Path,
    limit: Duration,
) -> (Option<i32>, String) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors (close-on-exec, so no other test's
    // child inherits the reading end while it is still open).
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned here only.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    let err = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    let child = cmd
        .stdout(Stdio::from(writer))
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let mut p = Proc::adopt(&format!("{cmd:?}"), child, log);
    (p.wait_exit(limit), p.log_tail(10))
}

/// The last `n` lines of a file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads an address file once it exists and holds a full line.
pub fn read_addr(path: &Path, limit: Duration) -> String {
    let mut addr = String::new();
    wait_for(
        limit,
        &format!("address file {}", path.display()),
        || match std::fs::read_to_string(path) {
            Ok(s) if s.ends_with('\n') => {
                addr = s.trim().to_string();
                true
            }
            _ => false,
        },
    );
    addr
}

/// Peak resident memory of a process in KiB (Linux), if readable.
pub fn peak_rss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// True if `pid` is a live process (not gone, not a zombie waiting to be reaped).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
