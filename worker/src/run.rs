//! The worker's life in a cluster: its settings, and the loop that keeps a session with a
//! coordinator going: reconnecting with backoff while it is away, following a group's
//! leader, failing over between the coordinators given.
//!
//! The parts, by job:
//! - `session`: one connection to one coordinator: registration, heartbeats, the
//!   coordinator's messages (assignments, cancellations, snapshot markers), one writer;
//! - `executor`: running tasks: fetch (or take prefetched) inputs, scan, send the primes
//!   and the report;
//! - `inputs`: the AFS clients the executors fetch through.
//!
//! All messages to the coordinator go through one queue to one writer task, so their order
//! on the wire is the order they were queued; the local state lock is held while queueing
//! results and while recording a snapshot, so a marker is always after exactly the results
//! that the recorded state says were sent.

use std::path::PathBuf;
use std::time::Duration;

use afs::client::ClientConfig;
use proto::ClusterKey;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::scan::ScanConfig;

mod executor;
mod inputs;
mod session;

use inputs::Afs;
use session::{session, SessionEnd};

/// Worker settings (validated by the binary).
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub id: String,
    /// Coordinator addresses, tried in turn (at least one).
    pub coordinators: Vec<String>,
    pub afs_servers: Vec<String>,
    pub cache_root: PathBuf,
    pub cache_limit_bytes: u64,
    /// Files up to this size are cached in memory, not on disk (see
    /// [`ClientConfig::memory_file_max`]); this much memory at most.
    pub memory_file_max: u64,
    pub memory_limit_bytes: u64,
    /// Read ranges through a file server's local socket when it offers one (see
    /// [`ClientConfig::local_reads`]).
    pub local_reads: bool,
    /// File-server reply timeout (and longest silence inside a file body).
    pub afs_timeout: Duration,
    pub key: ClusterKey,
    pub threads: u32,
    pub scan: ScanConfig,
    /// Probability of crashing (exit 86) in the middle of each task: fault injection.
    pub fail_prob: f64,
    /// Extra delay per task, in ms: fault injection (slowness).
    pub delay_ms: u64,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
    /// Fault injection: hold each snapshot marker this long before acting on it, as if the
    /// coordinator -> worker channel were slow (results sent meanwhile land in the
    /// snapshot's channel state).
    pub marker_delay: Duration,
}

/// Exit status of a crash injected by `--fail-prob`.
pub const INJECTED_CRASH_EXIT: i32 = 86;

/// Runs the worker until `shutdown`. Only a bad configuration or an unusable cache ends it
/// early; coordinator and file-server outages are waited out.
pub async fn run(cfg: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    // The small-number bitmap takes ~20 ms to build: done while we connect and register.
    std::thread::spawn(crate::prime::warm_up);
    let mut afs_cfg = ClientConfig::new(
        &cfg.id,
        cfg.afs_servers.clone(),
        &cfg.cache_root,
        cfg.key.clone(),
    );
    afs_cfg.cache_limit_bytes = cfg.cache_limit_bytes;
    afs_cfg.memory_file_max = cfg.memory_file_max;
    afs_cfg.memory_limit_bytes = cfg.memory_limit_bytes;
    afs_cfg.local_reads = cfg.local_reads;
    afs_cfg.request_timeout = cfg.afs_timeout;
    afs_cfg.connect_timeout = cfg.afs_timeout.min(Duration::from_secs(2));
    let afs = Afs::new(afs_cfg, cfg.threads.max(1) as usize)?;
    let mut backoff = Duration::from_millis(100);
    // Names this process to the coordinator: its reconnections replace its old connection,
    // while another process using the same id is refused.
    let instance: u64 = rand::random();
    if cfg.coordinators.is_empty() {
        anyhow::bail!("no coordinator address given (--coordinator)");
    }
    // The address to try next, and how many have failed in a row.
    let (mut at, mut failed) = (0usize, 0usize);
    // A coordinator group: the leader a follower named (tried next), the highest term
    // followed so far (an older one is refused: a deposed leader), redirects in a row.
    let (mut redirect, mut max_term, mut redirects): (Option<String>, u64, usize) = (None, 0, 0);
    // The coordinators that refused this worker's cluster key, and those that could not be
    // reached, since the last that took it: once every one is either and one refused, the
    // key is wrong (a bad configuration; the members of a group share one key) and
    // retrying cannot help.
    let mut wrong_key = std::collections::BTreeSet::new();
    let mut unreachable = std::collections::BTreeSet::new();
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let addr = redirect
            .take()
            .unwrap_or_else(|| cfg.coordinators[at % cfg.coordinators.len()].clone());
        match session(&cfg, &addr, instance, afs.clone(), &shutdown, &mut max_term).await {
            Ok(SessionEnd::NotLeader(leader)) => {
                wrong_key.clear();
                unreachable.clear();
                redirects += 1;
                match leader.as_deref() {
                    // It held the registration until it began to serve (it was taking
                    // over): the same address again, at once.
                    Some(l) if l == addr => {
                        info!(coordinator = addr, "that coordinator now leads: registering again")
                    }
                    Some(l) => info!(
                        coordinator = addr,
                        leader = l,
                        "that coordinator does not lead its group: going to the leader"
                    ),
                    None => info!(
                        coordinator = addr,
                        "that coordinator does not lead its group and knows no leader yet: trying the next"
                    ),
                }
                match leader {
                    // Another member leads, or this one (it held the registration until it
                    // began to serve): go there.
                    Some(l) => {
                        if let Some(i) = cfg.coordinators.iter().position(|c| *c == l) {
                            at = i;
                        }
                        redirect = Some(l);
                    }
                    None => at += 1,
                }
                // Followers answer at once: go on at once, but pause after a round without
                // a leader (an election under way).
                if redirects % (cfg.coordinators.len() + 1) != 0 {
                    continue;
                }
                backoff = Duration::from_millis(50);
            }
            Ok(SessionEnd::Shutdown) => return Ok(()),
            Ok(SessionEnd::InjectedCrash) => return Err(InjectedCrash.into()),
            Ok(SessionEnd::Refused(reason)) => {
                error!(reason, "the coordinator refused this worker");
                return Err(Refused(reason).into());
            }
            Ok(SessionEnd::Lost(why)) => {
                wrong_key.clear();
                unreachable.clear();
                redirects = 0;
                warn!(
                    why,
                    coordinator = addr,
                    "lost the coordinator; reconnecting"
                );
                // The same coordinator first, after a short pause (it may be back at
                // once), then the others.
                backoff = Duration::from_millis(100);
                failed = 0;
            }
            Err(e) => {
                if matches!(e, proto::ProtoError::WrongKey(_)) {
                    warn!(error = %e, coordinator = addr, "this coordinator refuses the worker's cluster key; trying the others");
                    wrong_key.insert(addr.clone());
                    unreachable.remove(&addr);
                } else {
                    info!(error = %e, coordinator = addr, "coordinator not reachable; retrying");
                    unreachable.insert(addr.clone());
                }
                if let Some(why) = key_verdict(&cfg.coordinators, &wrong_key, &unreachable) {
                    error!(reason = why, "wrong cluster key");
                    return Err(Refused(why).into());
                }
                at += 1;
                failed += 1;
                // Another address to try: at once, until every one has failed in a row.
                if failed % cfg.coordinators.len() != 0 {
                    continue;
                }
            }
        }
        let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
        }
        backoff = (backoff * 2).min(cfg.max_backoff);
    }
}

/// Why this worker's cluster key is wrong, once every coordinator address (since the last
/// that took the key) refused it or did not answer, and one refused it at least; else None
/// (a worker started before its coordinators waits for them as long as it takes).
fn key_verdict(
    addrs: &[String],
    refused: &std::collections::BTreeSet<String>,
    silent: &std::collections::BTreeSet<String>,
) -> Option<String> {
    let all = addrs
        .iter()
        .all(|c| refused.contains(c) || silent.contains(c));
    if refused.is_empty() || !all {
        return None;
    }
    let list: Vec<&str> = refused.iter().map(String::as_str).collect();
    Some(format!(
        "{} {} refused this worker's cluster key{}: start it with the system's key \
         (--key-file or PRIMES_KEY_FILE: run/cluster.key in the folder the system was \
         started from; or PRIMES_CLUSTER_KEY)",
        if list.len() == 1 {
            "the coordinator at"
        } else {
            "the coordinators at"
        },
        list.join(", "),
        if addrs.iter().any(|c| !refused.contains(c)) {
            " (the others did not answer)"
        } else {
            ""
        }
    ))
}

/// `--fail-prob` fired: the binary exits with [`INJECTED_CRASH_EXIT`] at once.
#[derive(Debug, thiserror::Error)]
#[error("fault injection (--fail-prob): crashed mid-task")]
pub struct InjectedCrash;

/// The coordinator refused this worker for good; retrying would not help.
#[derive(Debug, thiserror::Error)]
#[error("refused by the coordinator: {0}")]
pub struct Refused(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// Wrong once every address refused the key or did not answer, and one refused it;
    /// never from silence alone (coordinators not started yet).
    fn a_wrong_key_is_known_once_every_address_refused_or_was_silent() {
        let addrs: Vec<String> = ["a:1", "b:1", "c:1"].map(String::from).into();
        let set = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect();
        assert_eq!(
            key_verdict(&addrs, &set(&[]), &set(&["a:1", "b:1", "c:1"])),
            None
        );
        assert_eq!(key_verdict(&addrs, &set(&["a:1"]), &set(&["b:1"])), None);
        let why = key_verdict(&addrs, &set(&["a:1"]), &set(&["b:1", "c:1"])).unwrap_or_default();
        assert!(
            why.starts_with("the coordinator at a:1 refused") && why.contains("did not answer"),
            "{why}"
        );
        let why = key_verdict(&addrs, &set(&["a:1", "b:1", "c:1"]), &set(&[])).unwrap_or_default();
        assert!(
            why.starts_with("the coordinators at a:1, b:1, c:1 refused")
                && !why.contains("did not answer"),
            "{why}"
        );
    }
}
