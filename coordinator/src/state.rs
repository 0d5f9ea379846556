//! The coordinator's shared state: the [`Coordinator`] machine and the worker connections'
//! send queues under one lock, plus what status shows. `Shared::apply` is the only way an
//! event reaches the machine: it queues the machine's messages while still holding the lock
//! (so the order of decisions is the order of messages on every channel, which snapshots
//! rely on), then performs the rest of its actions (reports, snapshot files, the flusher's
//! hand-off) without it.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use proto::msg::CoordMsg;
use proto::ClusterKey;
use serde::Serialize;
use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, error, info, warn};

use crate::core::{CoreConfig, FlushBatch, Key, Now, Report, StatusView};
use crate::durable::{Durable, GroupStatus};
use crate::machine::{Action, Coordinator, Event};
use crate::snapshot::{write_snapshot_file, SnapshotConfig, SnapshotInfo};

/// Everything the coordinator needs (validated by the binary).
#[derive(Clone, Debug)]
pub struct Config {
    pub input: PathBuf,
    pub jobs: PathBuf,
    /// Numbers per segment of a `primes` job.
    pub segment_numbers: u64,
    pub output: PathBuf,
    pub primes: PathBuf,
    pub status_file: PathBuf,
    pub core: CoreConfig,
    pub flush_ms: u64,
    pub scan_ms: u64,
    pub quiet_ms: u64,
    pub max_connections: usize,
    pub snapshots: SnapshotConfig,
    pub key: ClusterKey,
    /// File servers to show on the dashboard (probed every 2 s); may be empty.
    pub afs_servers: Vec<String>,
    /// Learn the input files from the file servers' listing (`watch_list`) instead of the
    /// local `input` folder: no disk shared with the file server is needed.
    pub inputs_from_afs: bool,
    /// That listing, watched by this process since its start (a group member's); None: the
    /// coordinator connects and watches once it serves.
    pub listing: Option<crate::listing::ListingFeed>,
}

/// What a connection's writer task sends.
pub(crate) enum Out {
    Msg(CoordMsg),
    Close(String),
}

/// What the one lock guards.
struct Inner {
    machine: Coordinator,
    senders: HashMap<u64, mpsc::UnboundedSender<Out>>,
}

impl Inner {
    /// Queues `out` on connection `conn`'s writer, if it is still there.
    fn queue(&self, conn: u64, out: Out) {
        if let Some(tx) = self.senders.get(&conn) {
            let _ = tx.send(out);
        }
    }
}

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    pub(crate) cfg: Config,
    /// Where flushes and reports become durable: the group this coordinator leads.
    pub(crate) durable: Arc<dyn Durable>,
    start: Instant,
    /// Primes in primes.txt (set by the flusher).
    pub(crate) primes_count: AtomicU64,
    /// Of those, the primes held in the dedup set (set by the flusher).
    pub(crate) primes_in_set: AtomicU64,
    /// Progress samples for the dashboard's chart.
    pub(crate) history: Mutex<VecDeque<Sample>>,
    /// The last probe of each file server.
    pub(crate) servers: Mutex<Vec<afs::probe::ServerProbe>>,
    /// Wakes the flusher early when a chunk finishes ([`Action::FlushSoon`]).
    pub(crate) flush_now: Notify,
    /// Set with `flush_now` when nothing else is under way ([`Action::FlushNow`]): the
    /// flusher skips its gathering wait.
    pub(crate) flush_at_once: AtomicBool,
    /// The number of the last snapshot written.
    snapshot_written: watch::Sender<u64>,
    /// Snapshots on their way through the group's log: a stop waits for them (bounded)
    /// before the Raft node stops, so the final snapshot reaches every member.
    pub(crate) replicating: tokio_util::task::TaskTracker,
}

pub(crate) use proto::lock;

impl Shared {
    /// The shared state around `machine`.
    pub(crate) fn new(
        cfg: Config,
        durable: Arc<dyn Durable>,
        machine: Coordinator,
        (primes, in_set): (u64, u64),
    ) -> Arc<Self> {
        Arc::new(Shared {
            inner: Mutex::new(Inner {
                machine,
                senders: HashMap::new(),
            }),
            cfg,
            durable,
            start: Instant::now(),
            primes_count: AtomicU64::new(primes),
            primes_in_set: AtomicU64::new(in_set),
            history: Mutex::new(VecDeque::new()),
            servers: Mutex::new(Vec::new()),
            flush_now: Notify::new(),
            flush_at_once: AtomicBool::new(false),
            snapshot_written: watch::channel(0).0,
            replicating: tokio_util::task::TaskTracker::new(),
        })
    }

    /// The flush batch due now, if any ([`Coordinator::take_flush`]): the flusher's pull.
    pub(crate) fn take_flush(&self) -> Option<FlushBatch> {
        lock(&self.inner).machine.take_flush()
    }

    pub(crate) fn now(&self) -> Now {
        Now {
            ms: self.start.elapsed().as_millis() as u64,
            wall: chrono::Utc::now(),
        }
    }

    /// Reads the machine (status, start-up checks).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Coordinator) -> T) -> T {
        f(&lock(&self.inner).machine)
    }

    /// A connection's send queue, from registration until it closes.
    pub(crate) fn connect(&self, conn: u64, tx: mpsc::UnboundedSender<Out>) {
        lock(&self.inner).senders.insert(conn, tx);
    }

    /// Sends an error on a connection and closes it (a malformed message: the shell's own
    /// protocol check, not a decision about work).
    pub(crate) fn close(&self, conn: u64, reason: String) {
        lock(&self.inner).queue(conn, Out::Close(reason));
    }

    pub(crate) fn disconnect(&self, conn: u64) {
        lock(&self.inner).senders.remove(&conn);
    }

    /// Feeds `event` to the machine and performs what it decides (see the module doc). What
    /// the performing reports back (a report or snapshot written, or not) goes to the
    /// machine the same way, until nothing is left to do.
    pub(crate) async fn apply(&self, event: Event) {
        let mut events = VecDeque::from([event]);
        let mut snapshots_done = Vec::new();
        while let Some(event) = events.pop_front() {
            let now = self.now();
            let rest: Vec<Action> = {
                let mut inner = lock(&self.inner);
                let actions = inner.machine.handle(event, now);
                let mut rest = Vec::new();
                for a in actions {
                    match a {
                        Action::Send(conn, msg) => inner.queue(conn, Out::Msg(msg)),
                        Action::Close(conn, reason) => {
                            info!(conn, reason, "closing worker connection");
                            inner.queue(conn, Out::Close(reason));
                        }
                        other => rest.push(other),
                    }
                }
                rest
            };
            let mut reports = Vec::new();
            for a in rest {
                match a {
                    Action::WriteReport(r) => reports.push(r),
                    Action::WriteJobReport(r) => events.push_back(self.write_job_report(*r).await),
                    // The shell's flusher pulls its batches ([`Shared::take_flush`]) and never
                    // feeds `FlushDue`; a batch handed out this way anyway goes back into the
                    // buffer. (It would be answered as the oldest flush under way: with the
                    // flusher's pipeline that is only right when none is; say so if it
                    // happens.)
                    Action::Flush(p) => {
                        error!("a flush was handed to the shell instead of the flusher");
                        events.push_back(Event::FlushFailed(p))
                    }
                    Action::FlushSoon => self.flush_now.notify_one(),
                    Action::FlushNow => {
                        self.flush_at_once.store(true, Ordering::Release);
                        self.flush_now.notify_one();
                    }
                    Action::WriteSnapshot(s) => {
                        snapshots_done.push(s.seq);
                        events.extend(self.write_snapshot(*s).await);
                    }
                    Action::Send(..) | Action::Close(..) => {}
                }
            }
            if !reports.is_empty() {
                events.extend(self.write_reports(reports).await);
            }
        }
        // Once the machine knows (also when a write failed: nobody must wait forever).
        // The highest number only: snapshots can finish out of order (one still open when
        // the next, a final one, begins), and a waiter for the later must not see the
        // earlier and wait forever.
        for seq in snapshots_done {
            self.snapshot_written.send_if_modified(|last| {
                let newer = seq > *last;
                if newer {
                    *last = seq;
                }
                newer
            });
        }
    }

    /// Writes reports on a blocking thread (a flush can finish thousands of them); returns
    /// how each went, for the machine: a file is done in status only once its report is on
    /// disk, and failed when it cannot be written.
    async fn write_reports(&self, reports: Vec<Report>) -> Vec<Event> {
        // A report names its entry by the key's string form.
        let keys: Vec<(Key, _)> = reports
            .iter()
            .map(|r| (Key::parse(&r.file), r.source))
            .collect();
        let results = match self.durable.reports(reports).await {
            Ok(r) => r,
            Err(e) => vec![Err(format!("{e:#}")); keys.len()],
        };
        keys.into_iter()
            .zip(results)
            .map(|((key, source), r)| match r {
                Ok(()) => {
                    debug!(file = key.to_string(), "report written");
                    Event::ReportWritten { key, source }
                }
                // Its primes are durable already; the file counts as failed (never done),
                // the write is tried again later, the file redone at a restart.
                Err(reason) => {
                    error!(file = key.to_string(), reason, "report not written");
                    Event::ReportFailed {
                        key,
                        source,
                        reason,
                    }
                }
            })
            .collect()
    }

    /// Writes a job's report (a factorial's value too).
    async fn write_job_report(&self, r: crate::core::JobReport) -> Event {
        let (key, source, job) = (Key::job(r.job.as_str()), r.source, r.job.clone());
        match self
            .durable
            .job_report(r)
            .await
            .and_then(|w| w.map_err(anyhow::Error::msg))
        {
            Ok(w) => {
                info!(
                    job,
                    status = w.status,
                    answer = w.answer.as_deref().unwrap_or(""),
                    "job report written"
                );
                Event::ReportWritten { key, source }
            }
            Err(e) => {
                error!(job, error = format!("{e:#}"), "job report not written");
                Event::ReportFailed {
                    key,
                    source,
                    reason: format!("{e:#}"),
                }
            }
        }
    }

    /// Writes a finished snapshot atomically and prunes old ones; returns what the machine
    /// learns of it (nothing if the write failed).
    async fn write_snapshot(&self, mut snap: crate::snapshot::Snapshot) -> Option<Event> {
        snap.group = Some(crate::snapshot::SnapshotGroup {
            term: self.durable.term(),
            commit_index: self.durable.applied_index(),
        });
        let dir = self.cfg.snapshots.dir.clone();
        let keep = self.cfg.snapshots.keep;
        let seq = snap.seq;
        let completed_at = snap.completed_at.clone();
        crate::crash::point("snapshot-before-write");
        let t = Instant::now();
        // Not at root once a newer leader took the fence (a leader resumed from a pause, not
        // yet told it was deposed, wrote a snapshot numbered as the new leader's next one).
        let durable = self.durable.clone();
        let written = tokio::task::spawn_blocking(move || {
            durable
                .may_write_root()
                .context("not the leader of the root files any more")?;
            write_snapshot_file(&dir, keep, &snap)
        })
        .await;
        match written {
            Ok(Ok((path, bytes))) => {
                crate::crash::point("snapshot-after-write");
                let write_ms = t.elapsed().as_millis() as u64;
                info!(seq, path = %path.display(), bytes, write_ms, "snapshot written");
                // Every member keeps it too (through the log), so any of them serves it
                // and numbers on from it after a failover.
                let durable = self.durable.clone();
                let (file, keep) = (path.clone(), self.cfg.snapshots.keep);
                self.replicating.spawn(async move {
                    let Some(name) = file.file_name().and_then(|n| n.to_str()).map(String::from)
                    else {
                        return;
                    };
                    let r = match tokio::fs::read(&file).await {
                        Ok(b) => durable.snapshot(name, b, keep).await,
                        Err(e) => Err(anyhow::Error::from(e)).context("reading it back"),
                    };
                    if let Err(e) = r {
                        warn!(
                            seq,
                            error = format!("{e:#}"),
                            "snapshot not replicated to the group"
                        );
                    }
                });
                let info = SnapshotInfo {
                    seq,
                    path: path.display().to_string(),
                    completed_at,
                    bytes,
                    write_ms,
                };
                Some(Event::SnapshotWritten(info))
            }
            Ok(Err(e)) => {
                warn!(seq, error = format!("{e:#}"), "cannot write snapshot");
                None
            }
            Err(e) => {
                warn!(seq, error = %e, "snapshot task failed");
                None
            }
        }
    }

    /// Waits until snapshot `seq` has been written (or failed).
    pub(crate) async fn snapshot_done(&self, seq: u64) {
        let mut rx = self.snapshot_written.subscribe();
        let _ = rx.wait_for(|s| *s >= seq).await;
    }

    /// The primes count, and how many of them the dedup set holds, after a flush.
    pub(crate) fn set_primes(&self, n: u64, in_set: u64) {
        self.primes_count.store(n, Ordering::Relaxed);
        self.primes_in_set.store(in_set, Ordering::Relaxed);
    }
}

/// What `run/status.json` (and the dashboard's `/api/status`) holds.
#[derive(Serialize)]
struct StatusFile<'a> {
    updated_at: String,
    running: bool,
    pid: u32,
    primes_in_file: u64,
    /// Of those, the primes held in the coordinator's dedup set (memory): primes of
    /// `primes` jobs are known by their segments instead.
    primes_in_set: u64,
    uptime_ms: u64,
    last_snapshot: Option<SnapshotInfo>,
    file_servers: Vec<afs::probe::ServerProbe>,
    /// The coordinator group (members, leader, term, log indexes), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<GroupStatus>,
    history: Vec<Sample>,
    #[serde(flatten)]
    view: &'a StatusView,
}

/// One point of the progress history (the dashboard's chart).
#[derive(Serialize, Clone, Copy)]
pub(crate) struct Sample {
    pub uptime_ms: u64,
    pub primes: u64,
    pub numbers: u64,
    pub files_done: u64,
}

/// Everything status shows, typed (the dashboard's metrics read it directly).
pub(crate) struct Status {
    pub now: Now,
    pub view: StatusView,
    pub primes: u64,
    pub primes_in_set: u64,
    pub last_snapshot: Option<SnapshotInfo>,
    pub servers: Vec<afs::probe::ServerProbe>,
    /// The coordinator group this coordinator leads.
    pub group: Option<GroupStatus>,
}

/// The status now.
pub(crate) fn status(shared: &Shared) -> Status {
    let now = shared.now();
    let (view, last_snapshot) = shared.read(|m| (m.core().status(now), m.last_snapshot()));
    Status {
        now,
        view,
        primes: shared.primes_count.load(Ordering::Relaxed),
        primes_in_set: shared.primes_in_set.load(Ordering::Relaxed),
        last_snapshot,
        servers: lock(&shared.servers).clone(),
        group: Some(shared.durable.status()),
    }
}

/// The status as JSON: the same for `run/status.json` and the dashboard; and the history
/// sample it makes.
pub(crate) fn status_value(shared: &Shared, running: bool) -> (serde_json::Value, Sample) {
    let st = status(shared);
    let sample = Sample {
        uptime_ms: st.now.ms,
        primes: st.primes,
        numbers: st.view.totals.numbers_tested,
        files_done: st.view.files_done,
    };
    let file = StatusFile {
        updated_at: st.now.wall.to_rfc3339(),
        running,
        pid: std::process::id(),
        primes_in_file: st.primes,
        primes_in_set: st.primes_in_set,
        uptime_ms: st.now.ms,
        last_snapshot: st.last_snapshot,
        file_servers: st.servers,
        group: st.group,
        history: lock(&shared.history).iter().copied().collect(),
        view: &st.view,
    };
    (
        serde_json::to_value(&file).unwrap_or(serde_json::Value::Null),
        sample,
    )
}
