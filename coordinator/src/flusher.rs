//! The flusher: every `flush_ms` (or soon after a chunk finishes) it pulls the machine's
//! buffer (`Shared::take_flush`, as raft-rs's `Ready`), makes it durable through the group
//! ([`crate::durable`]), and only then tells the machine which chunks are durable
//! ([`Event::Flushed`], the `advance`), which may write reports; or hands it back
//! ([`Event::FlushFailed`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use crate::core::FlushBatch;
use crate::machine::Event;
use crate::state::Shared;

/// Shortest time between two early flushes (completions within it share one fsync).
const FLUSH_GATHER: Duration = Duration::from_millis(20);

/// Runs until `shutdown`, then does a last round.
pub(crate) async fn flush_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let period = Duration::from_millis(shared.cfg.flush_ms);
    loop {
        let stopping = shutdown.is_cancelled();
        let last_flush = tokio::time::Instant::now();
        if let Some(batch) = shared.take_flush() {
            flush(&shared, batch).await;
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

/// Makes one buffer durable ([`crate::durable`]), then reports the chunks done (or hands it
/// all back: not durable, e.g. this coordinator no longer leads).
async fn flush(shared: &Arc<Shared>, mut pending: FlushBatch) {
    crate::crash::point("flush-before-append");
    let t = std::time::Instant::now();
    let done = std::mem::take(&mut pending.done);
    match shared.durable.flush(pending).await {
        Ok(f) => {
            shared.set_primes(f.total, f.in_set);
            debug!(
                new = f.new,
                total = f.total,
                done = done.len(),
                ms = t.elapsed().as_millis() as u64,
                "flushed primes"
            );
            durable(shared, done).await;
        }
        Err((e, mut back)) => {
            error!(error = format!("{e:#}"), "flush not durable; will retry");
            back.done = done;
            shared.apply(Event::FlushFailed(back)).await;
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
