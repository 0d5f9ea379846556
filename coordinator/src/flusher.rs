//! The flusher: every `flush_ms` (or soon after a chunk finishes) it asks the machine for
//! its buffer ([`Event::FlushDue`] → [`crate::machine::Action::Flush`]), appends the primes
//! not yet in primes.txt, fsyncs, and only then tells the machine which chunks are durable
//! ([`Event::Flushed`]), which may write reports.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use crate::core::Pending;
use crate::machine::Event;
use crate::primes::PrimesFile;
use crate::state::{lock, Shared};

/// Shortest time between two early flushes (completions within it share one fsync).
const FLUSH_GATHER: Duration = Duration::from_millis(20);

/// Where flushed primes go.
pub(crate) enum Sink {
    /// A single coordinator's primes.txt.
    Local(Box<PrimesFile>),
    /// A group's log: committed, then applied by every replica (the leader copies its own
    /// replica's primes to the root primes.txt before the commit is answered).
    Group(crate::group::node::Handle),
}

/// Runs until `shutdown`, then does a last round.
pub(crate) async fn flush_loop(
    shared: Arc<Shared>,
    sink: Sink,
    mut buffers: mpsc::UnboundedReceiver<Pending>,
    shutdown: CancellationToken,
) {
    let sink = match sink {
        Sink::Local(p) => Ok(Arc::new(Mutex::new(*p))),
        Sink::Group(g) => Err(g),
    };
    let period = Duration::from_millis(shared.cfg.flush_ms);
    loop {
        let stopping = shutdown.is_cancelled();
        let last_flush = tokio::time::Instant::now();
        shared.apply(Event::FlushDue).await;
        while let Ok(pending) = buffers.try_recv() {
            match &sink {
                Ok(primes) => flush(&shared, primes, pending).await,
                Err(group) => flush_group(&shared, group, pending).await,
            }
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(period) => {}
            _ = shared.flush_now.notified() => {
                // A chunk finished: flush now if the last flush is older than FLUSH_GATHER,
                // else at that point, so completions arriving together share one fsync
                // while a lone completion (the end of a job, a dropped file) waits for none.
                tokio::time::sleep_until(last_flush + FLUSH_GATHER.min(period)).await;
            }
        }
    }
}

/// Appends one buffer durably, then reports the chunks done (or hands it all back).
async fn flush(shared: &Arc<Shared>, primes: &Arc<Mutex<PrimesFile>>, pending: Pending) {
    crate::crash::point("flush-before-append");
    let p = primes.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut f = lock(&p);
        let r = f.append(
            &pending.small,
            &pending.big,
            &pending.runs,
            &pending.finished,
        );
        (r, (f.len(), f.in_set()), pending)
    })
    .await;
    match result {
        Ok((Ok(new), (total, in_set), pending)) => {
            shared.set_primes(total as u64, in_set as u64);
            if new > 0 {
                debug!(new, total, "flushed primes");
            }
            durable(shared, pending.done).await;
        }
        Ok((Err(e), _, pending)) => {
            // Nothing was marked done; everything goes back for the next round.
            error!(error = %e, "cannot append to primes.txt; will retry");
            shared.apply(Event::FlushFailed(pending)).await;
        }
        Err(e) => error!(error = %e, "flush task failed"),
    }
}

/// Commits one buffer through the group's log, then reports the chunks done (or hands it all
/// back: not committed, e.g. this coordinator no longer leads).
async fn flush_group(shared: &Arc<Shared>, group: &crate::group::node::Handle, pending: Pending) {
    crate::crash::point("flush-before-append");
    let t = std::time::Instant::now();
    match group.flush(pending.clone()).await {
        Ok((new, total, in_set)) => {
            shared.set_primes(total, in_set);
            debug!(
                new,
                total,
                done = pending.done.len(),
                ms = t.elapsed().as_millis() as u64,
                "flushed primes through the group"
            );
            durable(shared, pending.done).await;
        }
        Err(e) => {
            error!(error = format!("{e:#}"), "flush not committed; will retry");
            shared.apply(Event::FlushFailed(pending)).await;
        }
    }
}

/// The chunks `done` are durable: the machine may mark them done and write reports.
async fn durable(shared: &Arc<Shared>, done: Vec<crate::core::ChunkKey>) {
    crate::crash::point("flush-after-append");
    let had_done = !done.is_empty();
    shared.apply(Event::Flushed(done)).await;
    if had_done {
        crate::crash::point("flush-after-report");
    }
}
