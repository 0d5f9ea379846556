//! How fast a member applies what it does not hold: a follower regenerates a flush's range
//! primes and writes them behind the leader, at idle CPU priority.
//!
//! Commit needs a majority's *log*, not its apply: a range prime travels by reference
//! ([`super::batch`]) and the committed reference is as durable as the primes. So on a
//! machine the members share with the workers (a group of three on one host), a follower's
//! apply (sieve, decimal, ~1 GB of page-cache writes per 72 M primes: about 2.3
//! CPU-seconds) need not compete with the leader and the workers, which a job waits on.
//! While a follower follows a known leader and the entries in its log not yet applied
//! reference at most [`LAG_PRIMES`] primes to regenerate, its regeneration runs on a thread
//! of nice 19: it takes the CPU the job leaves idle and catches up when the job ends.
//! Anything else applies at the normal priority at once: a leader, a candidate (it must
//! apply everything before it serves), a member with no leader, and a follower further
//! behind than the bound (so a follower's lag, and the backlog a member elected next has to
//! apply before it serves, stay bounded under a load that never ends).
//!
//! The bound is in primes, not entries: the flusher's pipeline makes more, smaller entries
//! (a bound of 16 entries, as before, put followers at the normal priority a second into a
//! job). The log store weighs each entry as it is appended ([`super::log::LogStore::behind`]).
//!
//! The decision ([`yields`]) is pure; [`watch`] feeds it the Raft metrics and the log's
//! weights, and [`run_lowly`] runs one apply on a low-priority thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use openraft::ServerState;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::log::LogStore;
use super::Raft;
use crate::state::lock;

/// The most primes a follower leaves to regenerate at idle priority (in entries logged and
/// not yet applied); beyond, it applies at the normal priority. A member elected from a
/// yielding follower applies at most this many before it serves: ~2.3 s of one core per
/// 72 M primes here, so ~2.3 s at the bound, on top of the election.
pub const LAG_PRIMES: u64 = 72 << 20;

/// What [`yields`] decides from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub me: u64,
    pub state: ServerState,
    pub leader: Option<u64>,
    /// Primes to regenerate in the entries of this member's log not yet applied (counted
    /// up to a little past [`LAG_PRIMES`]).
    pub behind: u64,
}

/// True when this member's applies of what it must regenerate can wait for idle CPU.
pub fn yields(s: Seen) -> bool {
    let follows = s.state == ServerState::Follower && s.leader.is_some_and(|l| l != s.me);
    follows && s.behind <= LAG_PRIMES
}

/// Shared between [`watch`] and the replica: whether to apply at idle priority now.
#[derive(Clone, Default)]
pub struct Pace(Arc<AtomicBool>);

impl Pace {
    pub fn lowly(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, v: bool) {
        if self.0.swap(v, Ordering::Relaxed) != v {
            debug!(idle_priority = v, "follower apply pace");
        }
    }
}

/// Keeps `pace` up to date with the Raft metrics and the log until `shutdown`.
pub async fn watch(raft: Raft, log: LogStore, me: u64, pace: Pace, shutdown: CancellationToken) {
    let mut rx = raft.metrics();
    loop {
        {
            // Copied out: the metrics are not borrowed while the log is asked (Raft waits
            // for every borrow to end before it publishes the next metrics).
            let (state, leader, applied) = {
                let m = rx.borrow_and_update();
                (m.state, m.current_leader, m.last_applied.map(|l| l.index))
            };
            let mut seen = Seen {
                me,
                state,
                leader,
                behind: 0,
            };
            // Only a follower's answer depends on the weight: nothing else yields.
            if yields(seen) {
                seen.behind = log.behind(applied, LAG_PRIMES);
            }
            pace.set(yields(seen));
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                pace.set(false);
                return;
            }
            r = rx.changed() => if r.is_err() {
                pace.set(false);
                return;
            },
        }
    }
}

/// Runs `f` on a thread of nice 19 and returns what it returns (on this thread if no thread
/// can be started). Linux keeps the nice value per thread, so nothing else is slowed.
pub fn run_lowly<R: Send, F: FnOnce() -> R + Send>(f: F) -> R {
    let cell = Mutex::new(Some(f));
    let ran = std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("apply-lowly".into())
            .spawn_scoped(s, || {
                proto::process::lower_this_thread();
                let f = lock(&cell).take();
                f.map(|f| f())
            });
        match spawned {
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(e) => {
                debug!(error = %e, "no low-priority apply thread: applying here");
                None
            }
        }
    });
    match ran {
        Some(r) => r,
        None => {
            let f = lock(&cell).take();
            match f {
                Some(f) => f(),
                // The thread took `f` and returned its result above.
                None => unreachable!("the closure ran on the low-priority thread"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: ServerState, leader: Option<u64>, behind: u64) -> Seen {
        Seen {
            me: 2,
            state,
            leader,
            behind,
        }
    }

    #[test]
    /// A follower of a known leader yields while within the bound; nothing else does.
    fn only_a_follower_close_behind_yields() {
        assert!(yields(seen(ServerState::Follower, Some(1), 0)));
        assert!(yields(seen(ServerState::Follower, Some(1), LAG_PRIMES)));
        assert!(!yields(seen(
            ServerState::Follower,
            Some(1),
            LAG_PRIMES + 1
        )));
        assert!(!yields(seen(ServerState::Follower, None, 0)));
        assert!(!yields(seen(ServerState::Leader, Some(2), 0)));
        assert!(!yields(seen(ServerState::Candidate, None, 0)));
        // Stale metrics naming this member leader while it follows: it must hurry.
        assert!(!yields(seen(ServerState::Follower, Some(2), 0)));
    }

    #[test]
    /// The closure runs, on another thread of lower priority, and its result comes back.
    fn runs_lowly_and_returns() {
        let here = std::thread::current().id();
        let mut touched = 0;
        let (there, nice) = run_lowly(|| {
            touched += 1;
            // SAFETY: getpriority takes plain integers.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            (std::thread::current().id(), nice)
        });
        assert_eq!(touched, 1);
        assert_ne!(there, here);
        assert_eq!(nice, 19);
    }
}
