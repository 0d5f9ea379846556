//! The `worker` binary: a cluster worker by default, or `worker check FILE...` with no cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use worker::run::WorkerConfig;
use worker::scan::ScanConfig;

/// Prime-pipeline worker. Without a subcommand it joins the cluster: registers with the
/// coordinator, fetches files through the AFS file servers, tests every number and sends the
/// primes back. It waits (retrying with backoff) while the coordinator or servers are away.
#[derive(Parser, Debug)]
#[command(name = "worker", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Stable worker id (letters, digits, '-', '_', '.'); names the log and the cache folder.
    #[arg(long, env = "WORKER_ID", default_value = "worker-1")]
    id: String,
    /// Coordinator address, or several (comma-separated or repeated): the worker registers
    /// with the first that answers and, when it loses it, tries the next at once (a round
    /// of all of them failing waits out the backoff). Default: the ports `start_system.sh`
    /// gives the coordinators, PRIMES_HOST (127.0.0.1) at PRIMES_BASE_PORT (7400), + 4 and
    /// + 5 (a group's other members).
    #[arg(long, env = "PRIMES_COORDINATOR", value_delimiter = ',')]
    coordinator: Vec<String>,
    /// File servers, primary first (comma-separated or repeated). Default: the ports
    /// `start_system.sh` gives them, PRIMES_HOST at PRIMES_BASE_PORT + 1, 2 and 3.
    #[arg(long = "afs", env = "AFS_SERVERS", value_delimiter = ',')]
    afs: Vec<String>,
    /// Cache root; this worker's cache is <cache-root>/<id>/ (default: `cache` in the
    /// current folder, the checkout, where start_system.sh puts it too).
    #[arg(long, env = "AFS_CACHE_ROOT", default_value = "cache")]
    cache_root: PathBuf,
    /// Cache size limit in MiB (least recently used files are evicted beyond it).
    #[arg(long, env = "AFS_CACHE_MIB", default_value_t = 8192)]
    cache_mib: u64,
    /// Files up to this many KiB are cached in memory instead of on disk (no file created
    /// per small file; a restarted worker fetches them again). 0: everything on disk.
    #[arg(long, env = "AFS_MEMORY_FILE_KIB", default_value_t = afs::client::DEFAULT_MEMORY_FILE_MAX >> 10)]
    memory_file_kib: u64,
    /// Read every range over TCP, even from a file server on this host that offers its
    /// local socket (by default such ranges come as the open file: no copy of the bytes
    /// through the server or a socket).
    #[arg(long, env = "AFS_NO_LOCAL_READS")]
    no_local_reads: bool,
    /// Memory for those small files, in MiB (least recently used ones dropped beyond it).
    #[arg(long, env = "AFS_MEMORY_CACHE_MIB", default_value_t = afs::client::DEFAULT_MEMORY_LIMIT >> 20)]
    memory_cache_mib: u64,
    /// Cluster key file (hex); PRIMES_CLUSTER_KEY overrides it.
    #[arg(long, env = "PRIMES_KEY_FILE", default_value = "run/cluster.key")]
    key_file: PathBuf,
    /// How long to wait for a file server's reply (or for the next bytes of a file) before
    /// trying the next server, in ms.
    #[arg(long, env = "AFS_TIMEOUT_MS", default_value_t = 30_000)]
    afs_timeout_ms: u64,
    /// Threads testing numbers (default: one per core).
    #[arg(long, env = "PRIMES_THREADS")]
    threads: Option<usize>,
    /// Largest accepted integer, in bits; longer numbers are invalid lines.
    #[arg(long, env = "PRIMES_MAX_BITS", default_value_t = worker::parse::DEFAULT_MAX_BITS)]
    max_bits: u64,
    /// Fault injection: probability (0..1) of crashing in the middle of each task. Off by default.
    #[arg(long, env = "WORKER_FAIL_PROB", default_value_t = 0.0)]
    fail_prob: f64,
    /// Fault injection: extra milliseconds of delay per task (tasks then go one at a time,
    /// not in batches of small files). Off by default.
    #[arg(long, env = "WORKER_DELAY_MS", default_value_t = 0)]
    delay_ms: u64,
    /// Fault injection: hold each snapshot marker this many ms before acting on it (a slow
    /// channel). Off by default.
    #[arg(long, env = "WORKER_MARKER_DELAY_MS", default_value_t = 0)]
    marker_delay_ms: u64,
    /// Longest pause between attempts to reach the coordinator, in ms.
    #[arg(long, env = "WORKER_MAX_BACKOFF_MS", default_value_t = 2000)]
    max_backoff_ms: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the distinct primes of FILEs (ascending, one per line) on stdout, and a summary
    /// of each file (lines, numbers, invalid lines with reasons) on stderr. No cluster needed.
    ///
    /// Exit status: 0 if every file was read, 1 if some file could not be read, 2 on bad usage.
    Check {
        /// Input files: one integer per line (see README, "Input format").
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Largest accepted integer, in bits; longer numbers are invalid lines.
        #[arg(long, env = "PRIMES_MAX_BITS", default_value_t = worker::parse::DEFAULT_MAX_BITS)]
        max_bits: u64,
        /// Threads for testing (default: one per core).
        #[arg(long, env = "PRIMES_THREADS")]
        threads: Option<usize>,
    },
    /// Run a generation job in this one process, no cluster (the baseline of the cluster's
    /// jobs): `primes A B` prints every prime in [A, B], one per line; `count A B` the
    /// number of primes in [A, B]; `nth N` the N-th prime; `factorial N` N! in decimal;
    /// `twins A B` the twin prime pairs in [A, B], `p p+2` per line.
    ///
    /// Exit status: 0 on success, 2 on a malformed job.
    Gen {
        /// The job, as a line of a job file: primes A B | count A B | nth N | factorial N |
        /// twins A B (any kind of `worker::kinds`).
        #[arg(required = true, num_args = 1..=3)]
        job: Vec<String>,
        /// How `count` works: `auto` (the cheapest by estimated cost, as the cluster
        /// decides), `sieve` (the cheaper of the two sieves), `plain` (the segmented sieve,
        /// testing its survivors above 2^44), `bucket` (the bucket sieve) or `pi` (π(B) −
        /// π(A − 1)).
        #[arg(long, default_value = "auto", value_parser = ["auto", "sieve", "plain", "bucket", "pi"])]
        method: String,
        /// Threads for sieving (default: one per core).
        #[arg(long, env = "PRIMES_THREADS")]
        threads: Option<usize>,
    },
}

fn set_threads(threads: Option<usize>) -> anyhow::Result<usize> {
    if let Some(t) = threads {
        if t == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .with_context(|| format!("starting {t} threads"))?;
    }
    Ok(rayon::current_num_threads())
}

/// Exit status when the coordinator refuses this worker for good (its id is in use by
/// another live worker, or every coordinator refuses its cluster key).
const EXIT_REFUSED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check {
            files,
            max_bits,
            threads,
        }) => {
            if let Err(e) = set_threads(threads) {
                eprintln!("worker: error: {e:#}");
                return ExitCode::from(2);
            }
            let cfg = ScanConfig {
                max_bits,
                ..ScanConfig::default()
            };
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            match worker::check::run_check(&files, &cfg, &mut stdout.lock(), &mut stderr.lock()) {
                Ok(o) if o.failed_files == 0 => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("worker: error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Gen {
            job,
            method,
            threads,
        }) => {
            // Logs only when asked (RUST_LOG=debug shows π(x)'s time per part): the
            // job's answer is the whole output otherwise.
            if std::env::var_os("RUST_LOG").is_some() {
                proto::process::init_logging();
            }
            let spec = match worker::kinds::parse(&job.join(" ")) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("worker: error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = set_threads(threads) {
                eprintln!("worker: error: {e:#}");
                return ExitCode::from(2);
            }
            let stdout = std::io::stdout();
            match worker::kinds::run_local(&spec, &method, &mut stdout.lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("worker: error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            proto::process::init_logging();
            match cluster(cli.run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.downcast_ref::<worker::run::InjectedCrash>().is_some() => {
                    // As abrupt as a crash: no destructors, no runtime shutdown.
                    eprintln!("worker: {e}");
                    std::process::exit(worker::run::INJECTED_CRASH_EXIT)
                }
                Err(e) => {
                    eprintln!("worker: error: {e:#}");
                    if e.downcast_ref::<worker::run::Refused>().is_some() {
                        ExitCode::from(EXIT_REFUSED)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

fn cluster(a: RunArgs) -> anyhow::Result<()> {
    if !proto::msg::valid_worker_id(&a.id) {
        anyhow::bail!("--id {:?}: use 1-64 letters, digits, '-', '_' or '.'", a.id);
    }
    if !(0.0..=1.0).contains(&a.fail_prob) {
        anyhow::bail!("--fail-prob {} must be between 0 and 1", a.fail_prob);
    }
    // Not given: where start_system.sh puts them (following PRIMES_BASE_PORT as it does):
    // coordinators at the base, + 4 and + 5 (a group's other members), file servers + 1..3.
    let coordinators =
        proto::process::given_or_started(a.coordinator, &[0, 4, 5]).map_err(anyhow::Error::msg)?;
    let afs_servers =
        proto::process::given_or_started(a.afs, &[1, 2, 3]).map_err(anyhow::Error::msg)?;
    let threads = set_threads(a.threads)?;
    let key = proto::ClusterKey::resolve(&a.key_file).context("loading the cluster key")?;
    let cfg = WorkerConfig {
        id: a.id,
        coordinators,
        afs_servers,
        cache_root: a.cache_root,
        cache_limit_bytes: a.cache_mib << 20,
        memory_file_max: a.memory_file_kib << 10,
        local_reads: !a.no_local_reads,
        memory_limit_bytes: a.memory_cache_mib << 20,
        afs_timeout: Duration::from_millis(a.afs_timeout_ms.max(100)),
        key,
        threads: threads as u32,
        scan: ScanConfig {
            max_bits: a.max_bits,
            ..ScanConfig::default()
        },
        fail_prob: a.fail_prob,
        delay_ms: a.delay_ms,
        max_backoff: Duration::from_millis(a.max_backoff_ms.max(10)),
        marker_delay: Duration::from_millis(a.marker_delay_ms),
    };
    tracing::info!(id = cfg.id, coordinator = ?cfg.coordinators, afs = ?cfg.afs_servers, threads, "worker starting");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(async move {
        let shutdown = proto::process::shutdown_on_signals();
        worker::run::run(cfg, shutdown).await
    });
    // Scans still running are cancelled by `run`; do not wait long for one that is
    // between two checks (dropping the runtime would wait for it without bound).
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}
