//! The flusher: every `flush_ms` (or soon after a chunk finishes) it pulls the machine's
//! buffer (`Shared::take_flush`, as raft-rs's `Ready`), proposes it to the group
//! ([`crate::durable`]), and once it is durable tells the machine which chunks are
//! ([`Event::Flushed`], the `advance`), which may write reports; or hands it back
//! ([`Event::FlushFailed`]). The next buffer is proposed while the last one applies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use crate::core::{ChunkKey, FlushBatch};
use crate::durable::{Flushed, Proposed};
use crate::machine::Event;
use crate::state::Shared;

/// Shortest time between two early flushes (completions within it share one fsync).
const FLUSH_GATHER: Duration = Duration::from_millis(20);

/// A flush of at least this many new primes is followed by [`proto::process::trim_heap`]:
/// a primes job's flushes (a few million primes each) leave multi-megabyte buffers freed
/// (the workers' messages, the batch, its pieces), which glibc kept: the leader's peak RSS
/// went to 200-225 MiB with 65 MiB in use. A small file's flush (thousands) trims nothing
/// worth the walk of every arena (up to ~4 ms).
const TRIM_AFTER_PRIMES: u64 = 1 << 20;

/// The pause after the `failed`-th flush handed back in a row, before the next is proposed:
/// FLUSH_GATHER, doubling, at most the flush period. A deposed leader's proposals fail at
/// once ("has to forward request") until it learns it no longer leads; without a pause it
/// proposed the handed-back buffer again and again (~56,000 times a second, each logged).
fn retry_pause(failed: u32, period: Duration) -> Duration {
    let cap = period.max(FLUSH_GATHER);
    FLUSH_GATHER
        .checked_mul(1 << failed.saturating_sub(1).min(16))
        .map_or(cap, |d| d.min(cap))
}

/// A flush proposed and not yet answered: its `done` chunks, what resolves once it is
/// durable, and when it was taken.
struct UnderWay {
    done: Vec<ChunkKey>,
    proposed: Proposed,
    since: Instant,
}

/// Runs until `shutdown`, then does a last round. A pipeline of two: the next flush is
/// proposed before the last one is awaited, so the group commits (appends, replicates,
/// fsyncs) the next while it applies the last; flushes are answered to the machine in the
/// order taken, and a flush that fails takes the one proposed after it back with it (the
/// group never makes that one durable alone: [`crate::durable::Durable::flush`]).
pub(crate) async fn flush_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let period = Duration::from_millis(shared.cfg.flush_ms);
    let mut under_way: Option<UnderWay> = None;
    // Flushes handed back in a row (each pauses the next proposal: `retry_pause`).
    let mut failed = 0u32;
    loop {
        let mut handed_back = false;
        let stopping = shutdown.is_cancelled();
        let last_flush = tokio::time::Instant::now();
        // What gathered until now goes in this flush, whatever asked for it.
        shared
            .flush_at_once
            .store(false, std::sync::atomic::Ordering::Release);
        if let Some(batch) = shared.take_flush() {
            let next = propose(&shared, batch).await;
            let last_ok = match under_way.take() {
                Some(last) => settle(&shared, last).await,
                None => true,
            };
            if last_ok {
                under_way = Some(next);
            } else {
                handed_back = true;
                if settle(&shared, next).await {
                    // Handed back, then the next durable: the group never makes a flush
                    // durable when the one proposed before it was not (`Durable::flush`),
                    // so this says the first failed after all its entries committed; its
                    // primes, handed back, are deduplicated when they come again.
                    error!("a flush was durable after the one before it failed");
                }
            }
        }
        if stopping {
            if let Some(last) = under_way.take() {
                settle(&shared, last).await;
            }
            return;
        }
        let wait = async {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(period) => {}
                _ = shared.flush_now.notified() => {
                    // A chunk finished: flush now if the last flush is older than
                    // FLUSH_GATHER, else at that point, so completions arriving together
                    // share one fsync while a lone completion (a dropped file) waits for
                    // none. The last completion under way (the end of a job) waits for
                    // none either: nothing is coming to share its fsync (it waited up to
                    // FLUSH_GATHER, 20 ms, for the job's report).
                    if !shared.flush_at_once.load(std::sync::atomic::Ordering::Acquire) {
                        tokio::time::sleep_until(last_flush + FLUSH_GATHER.min(period)).await;
                    }
                }
            }
        };
        // The flush under way is answered as soon as it is durable (its reports wait for
        // nothing else); the next round then takes what gathered meanwhile.
        let answered = match under_way.as_mut() {
            Some(u) => tokio::select! {
                _ = wait => None,
                r = &mut u.proposed => Some(r),
            },
            None => {
                wait.await;
                None
            }
        };
        if let Some(r) = answered {
            if let Some(u) = under_way.take() {
                handed_back |= !answer(&shared, u.done, u.since, r).await;
            }
        }
        if handed_back {
            failed += 1;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(retry_pause(failed, period)) => {}
            }
        } else {
            failed = 0;
        }
    }
}

/// Proposes one buffer to the group ([`crate::durable`]); its answer comes later.
async fn propose(shared: &Arc<Shared>, mut pending: FlushBatch) -> UnderWay {
    crate::crash::point("flush-before-append");
    let since = Instant::now();
    let done = std::mem::take(&mut pending.done);
    let proposed = shared.durable.flush(pending).await;
    UnderWay {
        done,
        proposed,
        since,
    }
}

/// Waits for a flush under way and answers it; false if it was handed back.
async fn settle(shared: &Arc<Shared>, u: UnderWay) -> bool {
    let r = u.proposed.await;
    answer(shared, u.done, u.since, r).await
}

/// Reports the chunks of a durable flush done, or hands the flush back (not durable, e.g.
/// this coordinator no longer leads); false if handed back.
async fn answer(
    shared: &Arc<Shared>,
    done: Vec<ChunkKey>,
    since: Instant,
    r: Result<Flushed, (anyhow::Error, FlushBatch)>,
) -> bool {
    match r {
        Ok(f) => {
            shared.set_primes(f.total, f.in_set);
            if f.new >= TRIM_AFTER_PRIMES {
                // Off the runtime's threads, and not waited for: it only gives pages back.
                drop(tokio::task::spawn_blocking(proto::process::trim_heap));
            }
            debug!(
                new = f.new,
                total = f.total,
                done = done.len(),
                ms = since.elapsed().as_millis() as u64,
                "flushed primes"
            );
            durable(shared, done).await;
            true
        }
        Err((e, mut back)) => {
            error!(error = format!("{e:#}"), "flush not durable; will retry");
            back.done = done;
            shared.apply(Event::FlushFailed(back)).await;
            false
        }
    }
}

/// The chunks `done` are durable: the machine may mark them done and write reports.
async fn durable(shared: &Arc<Shared>, done: Vec<ChunkKey>) {
    crate::crash::point("flush-after-append");
    let had_done = !done.is_empty();
    shared.apply(Event::Flushed(done)).await;
    if had_done {
        crate::crash::point("flush-after-report");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_handed_back_again_and_again_waits_longer_up_to_the_period() {
        let period = Duration::from_millis(500);
        let pauses: Vec<u64> = (1..=8)
            .map(|n| retry_pause(n, period).as_millis() as u64)
            .collect();
        assert_eq!(pauses, vec![20, 40, 80, 160, 320, 500, 500, 500]);
        assert_eq!(retry_pause(u32::MAX, period), period, "no overflow");
        assert_eq!(
            retry_pause(3, Duration::from_millis(5)),
            FLUSH_GATHER,
            "at least the gathering wait, even with a shorter period"
        );
    }
}
