//! `afs-server`: serves the files under a root, with callbacks; replicated as primary/backup.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use afs::msg::Role;
use afs::server::{run, ServerConfig};
use afs::store::Store;
use anyhow::Context;
use clap::{Parser, ValueEnum};
use proto::ClusterKey;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    Primary,
    Backup,
}

/// AFS-style file server: whole-file fetches with callback promises, primary–backup
/// replication. Every connection must prove the cluster key.
#[derive(Parser, Debug)]
#[command(name = "afs-server", version)]
struct Args {
    /// Server id, used in logs and by clients.
    #[arg(long, env = "AFS_ID", default_value = "server-1")]
    id: String,
    /// Folder whose files are served (the primary serves data/input; each backup has its own).
    #[arg(long, env = "AFS_ROOT", default_value = "data/input")]
    root: PathBuf,
    /// Address to listen on. Port 0 picks a free port (see --addr-file).
    #[arg(long, env = "AFS_LISTEN", default_value = "127.0.0.1:0")]
    listen: String,
    /// Write the address actually bound to this file once listening.
    #[arg(long, env = "AFS_ADDR_FILE")]
    addr_file: Option<PathBuf>,
    /// primary: serves and replicates to --backup; backup: serves and takes replicas only.
    #[arg(long, value_enum, env = "AFS_ROLE", default_value = "primary")]
    role: RoleArg,
    /// Backup address to replicate to (primary only; repeat or comma-separate).
    #[arg(long = "backup", env = "AFS_BACKUPS", value_delimiter = ',')]
    backups: Vec<String>,
    /// Cluster key file (hex). The environment variable PRIMES_CLUSTER_KEY overrides it.
    #[arg(long, env = "PRIMES_KEY_FILE", default_value = "run/cluster.key")]
    key_file: PathBuf,
    /// How often the root is scanned for changes made outside the protocol, in ms (a safety
    /// net: the root's notifications trigger a scan within ~20 ms of a change).
    #[arg(long, env = "AFS_SCAN_MS", default_value_t = 300)]
    scan_ms: u64,
    /// Most connections served at once.
    #[arg(long, env = "AFS_MAX_CONNECTIONS", default_value_t = 256)]
    max_connections: usize,
    /// Close a connection silent for this many seconds.
    #[arg(long, env = "AFS_IDLE_TIMEOUT_S", default_value_t = 600)]
    idle_timeout_s: u64,
    /// A Unix socket on which clients on this host read ranges themselves: the server passes
    /// them the open file (HDFS's short-circuit reads) instead of sending its bytes over
    /// TCP. Clients elsewhere, or that cannot reach it, read over TCP. Off when not given.
    #[arg(long, env = "AFS_LOCAL_SOCKET")]
    local_socket: Option<PathBuf>,
    /// Largest file accepted by store/replicate, in bytes.
    #[arg(long, env = "AFS_MAX_FILE_BYTES", default_value_t = 64 << 30)]
    max_file_bytes: u64,
}

fn main() -> ExitCode {
    proto::process::init_logging();
    let args = Args::parse();
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("afs-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    if args.scan_ms == 0 || args.max_connections == 0 || args.idle_timeout_s == 0 {
        anyhow::bail!("--scan-ms, --max-connections and --idle-timeout-s must be positive");
    }
    let role = match args.role {
        RoleArg::Primary => Role::Primary,
        RoleArg::Backup => Role::Backup,
    };
    if role == Role::Backup && !args.backups.is_empty() {
        anyhow::bail!("--backup is for a primary; a backup only takes replicas");
    }
    let key = ClusterKey::resolve(&args.key_file).context("loading the cluster key")?;
    let store = Store::open(&args.root, args.max_file_bytes)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("opening root {}", args.root.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let addr = listener
            .local_addr()
            .context("reading the bound address")?
            .to_string();
        if let Some(f) = &args.addr_file {
            proto::process::write_addr_file(f, &addr)
                .with_context(|| format!("writing {}", f.display()))?;
        }
        tracing::info!(id = args.id, %addr, %role, root = %store.root().display(), "listening");
        println!("afs-server {} ({role}) listening on {addr}", args.id);
        let cfg = ServerConfig {
            id: args.id,
            role,
            backups: args.backups,
            scan_interval: Duration::from_millis(args.scan_ms),
            max_connections: args.max_connections,
            idle_timeout: Duration::from_secs(args.idle_timeout_s),
            key,
            local_socket: args.local_socket,
        };
        let shutdown = proto::process::shutdown_on_signals();
        run(listener, Arc::new(store), cfg, shutdown).await;
        Ok(())
    })
}
