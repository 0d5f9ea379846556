//! Small helpers every binary needs: a shutdown token wired to SIGINT/SIGTERM, the
//! address file that tells scripts and tests which port a server really bound, idle
//! priority for a thread whose work can wait, where `start_system.sh` puts the system
//! (the commands' default addresses), and giving the heap's free pages back.

use std::path::Path;

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        t.cancel();
    });
    token
}

/// Writes `addr` to `path` atomically (temporary file, then rename), so a reader never sees
/// half an address.
pub fn write_addr_file(path: &Path, addr: &str) -> std::io::Result<()> {
    crate::files::write_atomic(path, format!("{addr}\n").as_bytes(), false)
}

/// Installs the log subscriber every binary uses: human-readable lines on stderr (the
/// scripts send them to `logs/<name>.log`), level from `RUST_LOG` (default `info`, with the
/// Raft library's own chatter off: a coordinator logs each election and lost lead itself,
/// while openraft logs every vote at info and every failed heartbeat to a dead peer).
/// `RUST_LOG` is a comma-separated list of `level` and `target=level` directives (the most
/// specific target wins); one that does not parse is reported on stderr and the default used.
pub const DEFAULT_LOG: &str =
    "info,openraft=warn,openraft::replication=off,openraft::core::raft_core=off";

pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .init();
}

/// The filter of `RUST_LOG`'s value `env` ([`DEFAULT_LOG`] when unset, empty or unparsable).
fn log_filter(env: Option<&str>) -> tracing_subscriber::filter::Targets {
    let default = || {
        DEFAULT_LOG
            .parse()
            .unwrap_or_else(|_| tracing_subscriber::filter::Targets::new())
    };
    match env.map(str::trim).filter(|s| !s.is_empty()) {
        None => default(),
        Some(s) => s.parse().unwrap_or_else(|e| {
            eprintln!("RUST_LOG={s:?} is not a list of target=level directives ({e}): using {DEFAULT_LOG:?}");
            default()
        }),
    }
}

/// Ports `start_system.sh` uses from its base: workers' coordinator ports, file servers,
/// Raft ports and dashboards, up to base + 12.
const STARTED_SPAN: u16 = 12;

/// `given` if any; else a command's default addresses, where `start_system.sh` puts them:
/// `PRIMES_HOST` (127.0.0.1) at `PRIMES_BASE_PORT` (7400) + each of `offsets` (at most
/// 12), the two variables read as the script reads them. Err: a `PRIMES_BASE_PORT` that is
/// not a port number with room for the script's ports.
pub fn given_or_started(given: Vec<String>, offsets: &[u16]) -> Result<Vec<String>, String> {
    if !given.is_empty() {
        return Ok(given);
    }
    let (host, base) = started_base_from(
        std::env::var("PRIMES_HOST").ok(),
        std::env::var("PRIMES_BASE_PORT").ok(),
    )?;
    debug_assert!(offsets.iter().all(|o| *o <= STARTED_SPAN));
    Ok(offsets
        .iter()
        .map(|o| format!("{host}:{}", base + o))
        .collect())
}

fn started_base_from(host: Option<String>, base: Option<String>) -> Result<(String, u16), String> {
    let host = host
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".into());
    let base = match base.filter(|b| !b.is_empty()) {
        None => 7400,
        Some(b) => b
            .parse::<u16>()
            .ok()
            .filter(|b| b.checked_add(STARTED_SPAN).is_some())
            .ok_or_else(|| format!("PRIMES_BASE_PORT must be a port number, got '{b}'"))?,
    };
    Ok((host, base))
}

/// Nice 19 for the calling thread (Linux keeps the nice value per thread, so nothing else
/// in the process is slowed; raising it needs no privilege). A failure is logged at debug
/// and leaves the normal priority, which is only slower for everyone else. Never call it
/// on a pooled thread (tokio's blocking pool): the next task there would inherit it.
pub fn lower_this_thread() {
    // SAFETY: setpriority takes plain integers; `who` 0 is the calling thread on Linux.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower this thread's priority");
    }
}

/// Gives the free pages of the C heap back to the system (glibc's `malloc_trim(0)`); does
/// nothing on other C libraries. glibc keeps what a process freed: once a block above its
/// mmap threshold (128 KiB at first) is freed, the threshold rises to that block's size (up
/// to 32 MiB), so later multi-megabyte buffers come from the per-thread arenas, and freed
/// ones stay there, split among arenas, counted in the process's RSS. A coordinator that
/// handles a job's multi-megabyte messages and flushes grew to 200-225 MiB of RSS that way
/// while 65 MiB were in use (heaptrack). Takes up to a few milliseconds (it walks every
/// arena): call it after bulk work, off the async runtime's threads.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a plain integer and only returns free pages of the heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::log_filter;

    #[test]
    fn started_base_defaults_and_refusals() {
        use super::started_base_from as f;
        assert_eq!(f(None, None), Ok(("127.0.0.1".into(), 7400)));
        assert_eq!(
            f(Some(String::new()), Some(String::new())),
            Ok(("127.0.0.1".into(), 7400))
        );
        assert_eq!(
            f(Some("10.0.0.2".into()), Some("9000".into())),
            Ok(("10.0.0.2".into(), 9000))
        );
        for bad in ["x", "-1", "70000", "65530"] {
            let e = f(None, Some(bad.into())).unwrap_err();
            assert!(e.contains("PRIMES_BASE_PORT") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_default_log_keeps_raft_chatter_out() {
        for env in [None, Some(""), Some("  "), Some("coordinator=loud")] {
            let f = log_filter(env);
            assert!(
                f.would_enable("coordinator::group", &Level::INFO),
                "{env:?}"
            );
            assert!(!f.would_enable("coordinator", &Level::DEBUG), "{env:?}");
            assert!(f.would_enable("openraft::engine", &Level::WARN), "{env:?}");
            assert!(!f.would_enable("openraft::engine", &Level::INFO), "{env:?}");
            assert!(
                !f.would_enable("openraft::replication", &Level::ERROR),
                "{env:?}"
            );
        }
    }

    #[test]
    fn rust_log_directives_are_honoured_most_specific_first() {
        let f = log_filter(Some("warn,coordinator=debug,coordinator::group=off"));
        assert!(f.would_enable("coordinator::server", &Level::DEBUG));
        assert!(!f.would_enable("coordinator::group::net", &Level::ERROR));
        assert!(f.would_enable("worker", &Level::WARN));
        assert!(!f.would_enable("worker", &Level::INFO));
    }
}
