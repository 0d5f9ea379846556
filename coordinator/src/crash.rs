//! Deliberate crashes at named points, so recovery can be tested at exact moments rather
//! than wherever a kill happens to land. Set `PRIMES_CRASH_AT=POINT[:N]` to abort (like
//! kill -9: no cleanup, no flush) the N-th time (default 1st) POINT is reached. Off unless
//! the variable is set. Points:
//!
//! - `flush-before-append`: primes taken from the buffer, not yet written
//! - `flush-after-append`: primes appended and fsynced, their chunks not yet marked done
//! - `flush-after-report`: chunks marked done and reports written
//! - `snapshot-begun`: coordinator state recorded and markers sent, markers not back
//! - `snapshot-before-write`: all markers back, file not yet written
//! - `snapshot-after-write`: snapshot file written
//!
//! `PRIMES_SLOW_AT=POINT:MS` instead sleeps MS milliseconds every time POINT is reached (a
//! slow disk, on purpose). Points:
//!
//! - `apply-reports`: a group member applying an entry of reports, its state locked
//!
//! `PRIMES_SLOW_ANSWERS=AFTER_MS:FOR_MS:DELAY_MS[:EVERY_MS]` delays a group member's
//! answers to AppendEntries (heartbeats too) by DELAY_MS, for FOR_MS from AFTER_MS after
//! its first such answer (and again every EVERY_MS): a follower that handles the leader's
//! messages on time (it hears its leader) but answers late, as a loaded machine does; the
//! leader then misses rounds of heartbeats.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
static COUNT: AtomicU64 = AtomicU64::new(0);

fn spec() -> &'static Option<(String, u64)> {
    SPEC.get_or_init(|| {
        let v = std::env::var("PRIMES_CRASH_AT").ok()?;
        let (name, n) = match v.split_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((name, n.max(1)))
    })
}

/// Aborts the process if this is the configured crash point and occurrence.
pub fn point(name: &str) {
    if let Some((p, n)) = spec() {
        if p == name && COUNT.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("PRIMES_CRASH_AT: crash point {name} reached; aborting");
            std::process::abort();
        }
    }
}

static SLOW: OnceLock<Option<(String, u64)>> = OnceLock::new();

/// Sleeps (blocking the thread: the point's caller holds what a slow disk would hold) if
/// `PRIMES_SLOW_AT` names this point.
pub fn slow(name: &str) {
    let spec = SLOW.get_or_init(|| {
        let v = std::env::var("PRIMES_SLOW_AT").ok()?;
        let (p, ms) = v.split_once(':')?;
        Some((p.to_string(), ms.parse().ok()?))
    });
    if let Some((p, ms)) = spec {
        if p == name {
            std::thread::sleep(std::time::Duration::from_millis(*ms));
        }
    }
}

static SLOW_ANSWERS: OnceLock<Option<(u64, u64, u64, u64)>> = OnceLock::new();
static FIRST_ANSWER: OnceLock<std::time::Instant> = OnceLock::new();

/// How long to hold this answer to an AppendEntries, if `PRIMES_SLOW_ANSWERS` says so now.
pub fn answer_delay() -> Option<std::time::Duration> {
    let (after, len, delay, every) = (*SLOW_ANSWERS.get_or_init(|| {
        let v = std::env::var("PRIMES_SLOW_ANSWERS").ok()?;
        let mut it = v.split(':').map(|x| x.parse::<u64>().ok());
        let (a, l, d) = (it.next()??, it.next()??, it.next()??);
        Some((a, l, d, it.next().flatten().unwrap_or(u64::MAX).max(1)))
    }))?;
    let since = FIRST_ANSWER
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64;
    let into = since.checked_sub(after)? % every;
    (into < len).then(|| std::time::Duration::from_millis(delay))
}
