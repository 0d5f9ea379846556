//! Small helpers every binary needs: a shutdown token wired to SIGINT/SIGTERM, and the
//! address file that tells scripts and tests which port a server really bound.

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
pub const DEFAULT_LOG: &str =
    "info,openraft=warn,openraft::replication=off,openraft::core::raft_core=off";

pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
