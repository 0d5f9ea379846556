//! `afs-fetch`: fetch files through the AFS client cache and print where the local copies
//! are. A debugging tool, and the client side of the fetch benchmark.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use afs::client::{AfsClient, ClientConfig, Content};
use anyhow::Context;
use clap::Parser;
use proto::ClusterKey;

/// Fetch files through the AFS client cache; prints one line per file: local path, size,
/// version, whether it came from the cache, and the throughput.
#[derive(Parser, Debug)]
#[command(name = "afs-fetch", version)]
struct Args {
    /// File server addresses, primary first (repeat or comma-separate).
    #[arg(
        long = "server",
        env = "AFS_SERVERS",
        value_delimiter = ',',
        required = true
    )]
    servers: Vec<String>,
    /// Client id (names the cache folder).
    #[arg(long, default_value = "afs-fetch")]
    id: String,
    /// Cache root; the cache is <cache-root>/<id>/.
    // Plain text for --help: rustdoc must not read the placeholders as HTML.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long, env = "AFS_CACHE_ROOT", default_value = "cache")]
    cache_root: PathBuf,
    /// Cluster key file (hex); PRIMES_CLUSTER_KEY overrides it.
    #[arg(long, env = "PRIMES_KEY_FILE", default_value = "run/cluster.key")]
    key_file: PathBuf,
    /// Health check (containers): connect to the first --server, authenticate, say hello;
    /// print its id and role and exit 0 if it answers within 3 s, else print why and exit 1.
    #[arg(long)]
    probe: bool,
    /// Paths relative to the server root.
    #[arg(required_unless_present = "probe")]
    paths: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let run = || -> anyhow::Result<()> {
        let key = ClusterKey::resolve(&args.key_file).context("loading the cluster key")?;
        let mut cfg = ClientConfig::new(&args.id, args.servers.clone(), &args.cache_root, key);
        // This tool's output is the local copy: keep every file on disk.
        cfg.memory_file_max = 0;
        let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
        if args.probe {
            let addr = &args.servers[0];
            let key = ClusterKey::resolve(&args.key_file).context("loading the cluster key")?;
            let p = rt.block_on(afs::probe::probe(
                addr,
                &key,
                &args.id,
                std::time::Duration::from_secs(3),
            ));
            if !p.up {
                anyhow::bail!("{addr}: {}", p.error.unwrap_or_default());
            }
            println!(
                "{addr}: up, {} ({})",
                p.id.unwrap_or_default(),
                p.role.unwrap_or_default()
            );
            return Ok(());
        }
        rt.block_on(async {
            let mut client = AfsClient::new(cfg)?;
            for p in &args.paths {
                let t = Instant::now();
                let f = client
                    .open(p)
                    .await
                    .with_context(|| format!("fetching {p}"))?;
                let secs = t.elapsed().as_secs_f64();
                println!(
                    "{}\t{} bytes\tversion {}\t{}\t{:.3} s\t{:.1} MB/s",
                    match &f.content {
                        Content::Disk(p) => p.display().to_string(),
                        Content::Memory(_) => "(memory)".to_string(),
                    },
                    f.size,
                    f.version,
                    if f.from_cache { "cached" } else { "fetched" },
                    secs,
                    f.size as f64 / secs / 1e6
                );
            }
            Ok(())
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("afs-fetch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
