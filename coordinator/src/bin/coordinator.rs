//! The `coordinator` binary: runs the coordinator, or shows status, or checks a snapshot.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use coordinator::core::CoreConfig;
use coordinator::server::Config;
use coordinator::snapshot::SnapshotConfig;

/// The snapshots' folder: the coordinator's `--snapshots` default and its variable, which
/// `verify-snapshot` without files reads too.
const SNAPSHOTS_DIR: &str = "snapshots";
const SNAPSHOTS_ENV: &str = "PRIMES_SNAPSHOTS";

/// Prime-pipeline coordinator. Without a subcommand it runs: watches the input folder, hands
/// chunks of files to workers, deduplicates their primes into primes.txt, writes a report per
/// file and takes Chandy–Lamport snapshots. It resumes from the state on disk unless --fresh.
#[derive(Parser, Debug)]
#[command(
    name = "coordinator",
    version,
    args_conflicts_with_subcommands = true,
    // A flag given twice takes its last value (a script appends what it overrides).
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Address to listen on for workers. Port 0 picks a free port (see --addr-file).
    #[arg(long, env = "COORD_LISTEN", default_value = "127.0.0.1:7400")]
    listen: String,
    /// Write the address actually bound to this file once listening.
    #[arg(long, env = "COORD_ADDR_FILE")]
    addr_file: Option<PathBuf>,
    /// Folder of input files.
    #[arg(long, env = "PRIMES_INPUT", default_value = "data/input")]
    input: PathBuf,
    /// Folder of generation jobs: one file per job (`<name>.job`), one line: `primes A B`,
    /// `count A B`, `nth N` or `factorial N`. Reports go to <output>/jobs/<name>.json.
    #[arg(long, env = "PRIMES_JOBS", default_value = "data/jobs")]
    jobs: PathBuf,
    /// Numbers per task of a `primes` job (a `count` job's tasks are up to 256 times longer,
    /// at least 64 of them when they can be; a range is cut into at most 131,072 tasks, wider
    /// ones if need be).
    #[arg(long, env = "PRIMES_SEGMENT_NUMBERS", default_value_t = coordinator::core::gen::PRIMES_SEGMENT)]
    segment_numbers: u64,
    /// Folder of per-file reports.
    #[arg(long, env = "PRIMES_OUTPUT", default_value = "data/output")]
    output: PathBuf,
    /// The deduplicated primes.
    #[arg(long, env = "PRIMES_FILE", default_value = "primes.txt")]
    primes: PathBuf,
    /// Folder of snapshots.
    #[arg(long, env = SNAPSHOTS_ENV, default_value = SNAPSHOTS_DIR)]
    snapshots: PathBuf,
    /// Status file read by `coordinator status`.
    #[arg(long, env = "PRIMES_STATUS_FILE", default_value = "run/status.json")]
    status_file: PathBuf,
    /// Cluster key file (hex); PRIMES_CLUSTER_KEY overrides it.
    #[arg(long, env = "PRIMES_KEY_FILE", default_value = "run/cluster.key")]
    key_file: PathBuf,
    /// Heartbeat interval the workers are told to use, in ms.
    #[arg(long, env = "PRIMES_HEARTBEAT_MS", default_value_t = 5000)]
    heartbeat_ms: u64,
    /// Missed heartbeats before a worker is declared dead and its tasks handed on.
    #[arg(long, env = "PRIMES_MISSED_HEARTBEATS", default_value_t = 3)]
    missed_heartbeats: u32,
    /// Flush interval of the prime buffer to primes.txt, in ms.
    #[arg(long, env = "PRIMES_FLUSH_MS", default_value_t = 500)]
    flush_ms: u64,
    /// Snapshot interval in ms (0: only the final snapshot at shutdown).
    #[arg(long, env = "PRIMES_SNAPSHOT_MS", default_value_t = 30_000)]
    snapshot_ms: u64,
    /// Snapshots kept (older ones are deleted).
    #[arg(long, env = "PRIMES_KEEP_SNAPSHOTS", default_value_t = 20)]
    keep_snapshots: usize,
    /// How long a snapshot waits for a worker's marker, in ms.
    #[arg(long, env = "PRIMES_MARKER_TIMEOUT_MS", default_value_t = 10_000)]
    marker_timeout_ms: u64,
    /// Files larger than this many MiB are split into chunks of about this size; workers read
    /// such chunks by range from the file server (files of one chunk go through their cache).
    #[arg(long, env = "PRIMES_CHUNK_MIB", default_value_t = 8)]
    chunk_mib: u64,
    /// Chunk size in bytes (overrides --chunk-mib; for tests).
    #[arg(long, env = "PRIMES_CHUNK_BYTES")]
    chunk_bytes: Option<u64>,
    /// Assignments a worker holds at once.
    #[arg(long, env = "PRIMES_MAX_INFLIGHT", default_value_t = 2)]
    max_inflight: usize,
    /// A worker may hold 32x --max-inflight assignments while they add up to less than this
    /// many KiB (many small files: fewer round trips waited for); 0 turns it off.
    #[arg(long, env = "PRIMES_SMALL_INFLIGHT_KIB", default_value_t = 1024)]
    small_inflight_kib: u64,
    /// Failures of one chunk before it is given up and reported as failed.
    #[arg(long, env = "PRIMES_MAX_FAILURES", default_value_t = 3)]
    max_failures: u32,
    /// Pause before retrying a failed chunk, in ms (times the failures so far).
    #[arg(long, env = "PRIMES_RETRY_MS", default_value_t = 2000)]
    retry_ms: u64,
    /// A file reported failed (e.g. every file server was down) is tried again after this
    /// many ms, doubled after each failed round up to 30 min; a restart retries at once.
    #[arg(long, env = "PRIMES_FAILED_RETRY_MS", default_value_t = 30_000)]
    failed_retry_ms: u64,
    /// How often the input folder is rescanned, in ms, while a file waits to become stable or
    /// file notifications are unavailable; otherwise notify events trigger scans and the
    /// folder is walked every 30 periods as a safety net.
    #[arg(long, env = "PRIMES_SCAN_MS", default_value_t = 250)]
    scan_ms: u64,
    /// A file written in place is queued after this many ms without change.
    #[arg(long, env = "PRIMES_QUIET_MS", default_value_t = 500)]
    quiet_ms: u64,
    /// Most worker connections at once.
    #[arg(long, env = "PRIMES_MAX_CONNECTIONS", default_value_t = 256)]
    max_connections: usize,
    /// Serve the dashboard (HTML with live updates, /api/status, /metrics) on this address,
    /// e.g. 127.0.0.1:7410. Off by default.
    #[arg(long, env = "PRIMES_HTTP")]
    http: Option<String>,
    /// Write the dashboard's bound address to this file once listening.
    #[arg(long, env = "PRIMES_HTTP_ADDR_FILE")]
    http_addr_file: Option<PathBuf>,
    /// File servers to show on the dashboard (probed every 2 s), comma-separated.
    #[arg(long = "afs", env = "AFS_SERVERS", value_delimiter = ',')]
    afs: Vec<String>,
    /// Learn the input files from the file servers (--afs, the primary first) instead of the
    /// local --input folder: the server sends its listing (paths, sizes, mtimes) and says
    /// when it changes, so the coordinator needs no disk shared with it. Reports still go
    /// to --output. The same quiet period applies (--quiet-ms)
    #[arg(long, env = "PRIMES_INPUTS_FROM_AFS", requires = "afs")]
    inputs_from_afs: bool,
    /// Run as one replica of a coordinator group (Raft): every member as
    /// WORKERS_ADDR/RAFT_ADDR, comma-separated, in the same order on every member (member n
    /// is coordinator-n). Workers are served on this member's WORKERS_ADDR (--listen is not
    /// used) while it leads; otherwise they are told the leader's address. Without it: a
    /// group of one serving workers on --listen (its state in <--group-dir>/coordinator-1).
    #[arg(
        long,
        env = "PRIMES_GROUP",
        value_delimiter = ',',
        requires = "group_id"
    )]
    group: Vec<String>,
    /// This replica's number in --group (1-based).
    #[arg(long, env = "PRIMES_GROUP_ID")]
    group_id: Option<u64>,
    /// Folder of the replicas' own state: this one uses <DIR>/coordinator-<id>/ (its Raft
    /// log, vote, primes, reports and state-machine snapshot).
    #[arg(long, env = "PRIMES_GROUP_DIR", default_value = "data/coordinators")]
    group_dir: PathBuf,
    /// Shortest Raft election timeout in ms (the longest is twice it; the leader's
    /// heartbeats go every quarter of it). A dead leader is replaced after one or two of
    /// these plus openraft's leader lease: with 300, the next prime is flushed about 1.3 s
    /// after a kill -9 of the leader (BENCHMARKS.md).
    #[arg(long, env = "PRIMES_ELECTION_MS", default_value_t = 300)]
    election_ms: u64,
    /// Entries between two state-machine snapshots of a replica (the log is compacted to
    /// them; a replica that was down long catches up from one).
    #[arg(long, env = "PRIMES_GROUP_SNAPSHOT_ENTRIES", default_value_t = 1000)]
    group_snapshot_entries: u64,
    /// Folder of spare report files: a --fresh start moves this replica's old reports there,
    /// and new reports are written over them instead of being created (a file created just
    /// after others were deleted is slow on ext4 without a journal). At most 10,000 are
    /// kept. start_system.sh gives data/spare-reports; none by default.
    #[arg(long, env = "PRIMES_SPARE_DIR")]
    spare_dir: Option<PathBuf>,
    /// Start over: clear primes.txt, reports, snapshots (never the input files); in a group,
    /// this replica's own state too.
    #[arg(long)]
    fresh: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show progress: files done/queued/in progress, numbers tested, primes, workers, last snapshot.
    ///
    /// Exit status: 0 if a coordinator is running (in a group: one leads and serves), 3 if
    /// not (the last known state is shown all the same), 1 if there is no status to show.
    Status {
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
        /// Redraw every second (a live view).
        #[arg(long)]
        watch: bool,
        #[arg(long, env = "PRIMES_STATUS_FILE", default_value = "run/status.json")]
        status_file: PathBuf,
        /// Print nothing; exit 0 if worker ID is connected to a running coordinator, else 1.
        #[arg(long, value_name = "ID")]
        registered: Option<String>,
        /// Health check (containers): exit 0 if the coordinator writing the status file is
        /// running and wrote it within the last 5 s, else print why and exit 1.
        #[arg(long, conflicts_with_all = ["registered", "watch"])]
        healthy: bool,
    },
    /// Read the results from the group's members, without a shared disk: the leader's, or
    /// the most up-to-date member's that answers (stderr says which, and its applied log
    /// index). `primes` goes to stdout (or DIR/primes.txt); `reports` and `snapshots` are
    /// listed (or written under DIR); `status` shows what each member says of itself.
    Results {
        what: WhatArg,
        /// Write into this folder (primes.txt, the reports' names, the snapshots' names)
        /// instead of stdout; each file written whole, then renamed into place.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The members' dashboard addresses (`coordinator --http`), comma-separated or
        /// repeated; every one is asked, those that do not answer are skipped. Default: the
        /// ones `start_system.sh` gives, PRIMES_HOST (127.0.0.1) at PRIMES_BASE_PORT (7400)
        /// + 10, 11 and 12.
        #[arg(long, env = "PRIMES_RESULTS_FROM", value_delimiter = ',')]
        from: Vec<String>,
    },
    /// Submit a generation job to the coordinator group from any host (no shared jobs
    /// folder): it is committed through the group's log, every member keeps it, and the
    /// leader runs it as a job file `NAME.job`; its report is `jobs/NAME.json` (read it with
    /// `coordinator results reports`). Exit 0 once committed.
    Submit {
        /// The job's name: 1-64 of [A-Za-z0-9._-], not starting with '.'.
        name: String,
        /// The job line: `primes A B`, `count A B`, `nth N` or `factorial N`.
        line: String,
        /// The members' Raft addresses (the RAFT part of --group), comma-separated; a
        /// member that does not lead names the leader. Default: the ones
        /// `start_system.sh` gives, PRIMES_HOST (127.0.0.1) at PRIMES_BASE_PORT (7400) + 6,
        /// 7 and 8.
        #[arg(long, env = "PRIMES_SUBMIT_TO", value_delimiter = ',')]
        to: Vec<String>,
        /// Cluster key file (hex); PRIMES_CLUSTER_KEY overrides it.
        #[arg(long, env = "PRIMES_KEY_FILE", default_value = "run/cluster.key")]
        key_file: PathBuf,
        /// How long to keep trying while no leader answers, in ms.
        #[arg(long, default_value_t = 15_000)]
        timeout_ms: u64,
        /// Replace a job of that name submitted before with another line (without it, such
        /// a submission is refused, exit 1; the same line again is accepted and changes
        /// nothing).
        #[arg(long)]
        replace: bool,
    },
    /// Check that snapshots are consistent cuts (each task in exactly one place).
    /// Exit status 0 if all are, 1 if not (or if there is none to check).
    VerifySnapshot {
        /// Snapshot files (default: every snapshot in snapshots/, or in PRIMES_SNAPSHOTS,
        /// newest first).
        files: Vec<PathBuf>,
        /// Print the verdicts as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `coordinator results` reads.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum WhatArg {
    /// Each member that answers: its role, term and applied index (one JSON line each;
    /// exit 1 if none answers: a health check).
    Status,
    Primes,
    Reports,
    Snapshots,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Status {
            healthy: true,
            status_file,
            ..
        }) => {
            return match coordinator::status::healthy(&status_file) {
                Ok(()) => ExitCode::SUCCESS,
                Err(why) => {
                    eprintln!("coordinator: unhealthy: {why}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Status {
            registered: Some(id),
            status_file,
            ..
        }) => {
            return if coordinator::status::registered(&status_file, &id) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Some(Command::Status {
            json,
            watch,
            status_file,
            registered: None,
            ..
        }) => {
            return match coordinator::status::run(&status_file, json, watch) {
                Ok(coordinator::status::Running::Yes) => ExitCode::SUCCESS,
                Ok(coordinator::status::Running::No) => ExitCode::from(3),
                Err(e) => {
                    eprintln!("coordinator: error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::VerifySnapshot { files, json }) => return verify(&files, json),
        Some(Command::Submit {
            name,
            line,
            to,
            key_file,
            timeout_ms,
            replace,
        }) => started_ports(to, 6)
            .and_then(|to| submit(&name, &line, replace, &to, &key_file, timeout_ms)),
        Some(Command::Results { what, out, from }) => {
            let what = match what {
                WhatArg::Status => coordinator::results::What::Status,
                WhatArg::Primes => coordinator::results::What::Primes,
                WhatArg::Reports => coordinator::results::What::Reports,
                WhatArg::Snapshots => coordinator::results::What::Snapshots,
            };
            started_ports(from, 10)
                .and_then(|from| coordinator::results::run(what, &from, out.as_deref()))
        }
        None => {
            proto::process::init_logging();
            run(cli.run)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coordinator: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `given` if any; else the three addresses `start_system.sh` gives its members for this
/// purpose: PRIMES_HOST (127.0.0.1) at PRIMES_BASE_PORT (7400) + `offset` + 0, 1, 2.
fn started_ports(given: Vec<String>, offset: u16) -> anyhow::Result<Vec<String>> {
    proto::process::given_or_started(given, &[offset, offset + 1, offset + 2])
        .map_err(anyhow::Error::msg)
}

fn submit(
    name: &str,
    line: &str,
    replace: bool,
    to: &[String],
    key_file: &std::path::Path,
    timeout_ms: u64,
) -> anyhow::Result<()> {
    coordinator::jobs::check_submission(name, line)
        .map_err(|e| anyhow::anyhow!(e))
        .context("the job")?;
    let key = proto::ClusterKey::resolve(key_file).context("loading the cluster key")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let (member, index, addr) = rt.block_on(coordinator::group::net::submit(
        to,
        &key,
        name,
        line.trim(),
        replace,
        std::time::Duration::from_millis(timeout_ms),
    ))?;
    eprintln!(
        "submitted job {name} ({}): committed by coordinator-{member} at {addr}, log index {index}",
        line.trim()
    );
    Ok(())
}

fn verify(files: &[PathBuf], json: bool) -> ExitCode {
    let listed: Vec<PathBuf>;
    let files = if files.is_empty() {
        // Where the coordinator writes them (its --snapshots, from the same variable).
        let dir = std::env::var_os(SNAPSHOTS_ENV)
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from(SNAPSHOTS_DIR), PathBuf::from);
        listed = coordinator::snapshot::list_snapshots(&dir)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        if listed.is_empty() {
            eprintln!(
                "no snapshots in {}/ (run this in the system's folder, or name the files)",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
        &listed[..]
    } else {
        files
    };
    let mut ok = true;
    let mut out = std::io::stdout().lock();
    for f in files {
        let snap = std::fs::read(f).map_err(anyhow::Error::from).and_then(|b| {
            serde_json::from_slice::<coordinator::snapshot::Snapshot>(&b)
                .map_err(anyhow::Error::from)
        });
        let v = match snap {
            Err(e) => {
                eprintln!("{}: cannot read snapshot: {e:#}", f.display());
                ok = false;
                continue;
            }
            Ok(s) => coordinator::verify::verify(&s),
        };
        ok &= v.consistent();
        let text = if json {
            serde_json::json!({"file": f.display().to_string(), "consistent": v.consistent(), "verdict": v})
                .to_string()
        } else {
            let mut t = format!(
                "{}: {} — {} tasks: {} queued, {} in progress, {} completed, {} in channels ({} channel messages)",
                f.display(),
                if v.consistent() { "consistent" } else { "INCONSISTENT" },
                v.tasks,
                v.queued,
                v.in_progress,
                v.completed,
                v.in_channel,
                v.channel_messages
            );
            for p in &v.problems {
                t.push_str(&format!("\n  {p}"));
            }
            t
        };
        match writeln!(out, "{text}") {
            Ok(()) => {}
            // The reader went (`verify-snapshot | head`): the verdict is of those checked.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) => {
                eprintln!("coordinator: writing the verdicts: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    for (name, v) in [
        ("--heartbeat-ms", a.heartbeat_ms),
        ("--flush-ms", a.flush_ms),
        ("--scan-ms", a.scan_ms),
        ("--missed-heartbeats", a.missed_heartbeats as u64),
        ("--max-inflight", a.max_inflight as u64),
        ("--max-failures", a.max_failures as u64),
        ("--max-connections", a.max_connections as u64),
    ] {
        if v == 0 {
            anyhow::bail!("{name} must be positive");
        }
    }
    let chunk_bytes = a.chunk_bytes.unwrap_or(a.chunk_mib << 20);
    if chunk_bytes == 0 {
        anyhow::bail!("the chunk size must be positive");
    }
    if a.fresh {
        for f in [
            a.primes.clone(),
            coordinator::primes::ledger_path(&a.primes),
        ] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
            }
        }
        for d in [&a.output, &a.snapshots] {
            match std::fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("clearing {}", d.display())),
            }
        }
    }
    let key = proto::ClusterKey::resolve(&a.key_file).context("loading the cluster key")?;
    let cfg = Config {
        input: a.input,
        jobs: a.jobs,
        segment_numbers: a.segment_numbers.max(1000),
        output: a.output,
        primes: a.primes,
        status_file: a.status_file,
        core: CoreConfig {
            heartbeat_ms: a.heartbeat_ms,
            missed_heartbeats: a.missed_heartbeats,
            max_inflight: a.max_inflight,
            small_inflight_bytes: a.small_inflight_kib << 10,
            max_failures: a.max_failures,
            chunk_bytes,
            retry_ms: a.retry_ms,
            failed_retry_ms: a.failed_retry_ms.max(1),
            term: None,
        },
        flush_ms: a.flush_ms,
        scan_ms: a.scan_ms,
        quiet_ms: a.quiet_ms,
        max_connections: a.max_connections,
        snapshots: SnapshotConfig {
            dir: a.snapshots,
            interval_ms: a.snapshot_ms,
            keep: a.keep_snapshots.max(1),
            marker_timeout_ms: a.marker_timeout_ms.max(100),
        },
        key,
        afs_servers: a.afs,
        inputs_from_afs: a.inputs_from_afs,
        listing: None,
    };
    // Every coordinator is a member of a group: without --group, of one, serving workers
    // on --listen (simple mode; start_system.sh names its one member the same way).
    let (id, members) = match a.group_id {
        Some(id) => {
            let members = coordinator::group::parse_members(&a.group)?;
            if !members.contains_key(&id) {
                anyhow::bail!(
                    "--group-id {id} is not a member: --group lists {} member(s)",
                    members.len()
                );
            }
            (id, members)
        }
        None => {
            let workers = concrete(&a.listen).context("the workers' address (--listen)")?;
            let one = coordinator::group::Member {
                workers: workers.to_string(),
                // Never dialled: a group of one has no peer.
                raft: "127.0.0.1:0".into(),
            };
            (1, std::collections::BTreeMap::from([(1, one)]))
        }
    };
    let dir = a.group_dir.join(format!("coordinator-{id}"));
    let spare_dir = a.spare_dir.clone();
    if a.fresh {
        // The last run's reports become spares, written over by this run's (an inode
        // freed just now makes every create slow on some file systems: coordinator::spare).
        if let Some(pool) = &spare_dir {
            coordinator::spare::keep(&dir.join("output"), pool);
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("clearing {}", dir.display())),
        }
    }
    let group = coordinator::group::node::GroupConfig {
        id,
        members,
        dir,
        election_ms: a.election_ms,
        snapshot_entries: a.group_snapshot_entries,
        addr_file: a.addr_file.clone(),
        spare_dir,
    };
    // One async thread: the coordinator's work is short message handling under one lock;
    // more threads only add cross-thread wake-ups (block_in_place needs the multi-thread kind).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(run_group(a.http, a.http_addr_file, cfg, group))
}

/// `addr` with a port: port 0 becomes a free port, found by binding it once (the member's
/// address must be known before it serves: its dashboard and workers' listeners are bound
/// while it leads, and its address is written to --addr-file at start).
fn concrete(addr: &str) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let a = addr
        .to_socket_addrs()
        .with_context(|| format!("address {addr:?}"))?
        .next()
        .with_context(|| format!("address {addr:?} resolves to nothing"))?;
    if a.port() != 0 {
        return Ok(a);
    }
    let l = std::net::TcpListener::bind(a).with_context(|| format!("listening on {a}"))?;
    l.local_addr().context("reading the bound address")
}

/// Runs one replica of a group: the peers' listener now, the workers' and the dashboard's
/// while it leads.
async fn run_group(
    http: Option<String>,
    http_addr_file: Option<PathBuf>,
    cfg: Config,
    group: coordinator::group::node::GroupConfig,
) -> anyhow::Result<()> {
    let me = group.members.get(&group.id).cloned().unwrap_or_default();
    let resolve = |addr: &str, what: &str| -> anyhow::Result<std::net::SocketAddr> {
        concrete(addr).with_context(|| format!("the {what} address"))
    };
    let workers = resolve(&me.workers, "workers")?;
    let raft = coordinator::server::bind(&me.raft)
        .await
        .context("the Raft address")?;
    // The workers' address is bound only while leading: check now that it is free.
    drop(
        tokio::net::TcpListener::bind(workers)
            .await
            .with_context(|| format!("listening on {workers}"))?,
    );
    let http = match &http {
        Some(h) => Some(resolve(h, "dashboard")?),
        None => None,
    };
    if let (Some(f), Some(h)) = (&http_addr_file, http) {
        proto::process::write_addr_file(f, &h.to_string())
            .with_context(|| format!("writing {}", f.display()))?;
    }
    tracing::info!(id = group.id, workers = %workers, raft = me.raft, "coordinator replica starting");
    println!(
        "coordinator-{} of a group of {}: workers {workers}, raft {}",
        group.id,
        group.members.len(),
        me.raft
    );
    let shutdown = proto::process::shutdown_on_signals();
    coordinator::group::node::run(workers, raft, http, cfg, group, shutdown).await
}
