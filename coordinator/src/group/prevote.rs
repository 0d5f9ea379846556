//! Pre-vote (Ongaro's thesis, §9.6): a member stands for election only after a majority
//! says it would vote for it. openraft 0.9 has no pre-vote, so its own election timer is
//! turned off (`enable_elect: false`) in a group of more than one, and the election is
//! started here, through openraft (`trigger().elect()`), once a pre-vote round succeeds.
//! The election itself (terms, votes, logs) stays openraft's.
//!
//! Without it, a member cut off from the others raised its term at every election timeout
//! (4 → 64 in 27 s) and, on its return, its higher term deposed a healthy leader. With it, a
//! cut-off member asks, hears no majority, and keeps its term; on its return it follows.
//!
//! Sans I/O: [`Timer`] decides when to ask, [`grant`] how to answer; time is an input.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::LogId;

/// A pre-vote request: would you vote for me in the next term?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVote {
    pub candidate: u64,
    /// The candidate's term now (it would stand in the next).
    pub term: u64,
    pub last_log_id: Option<LogId>,
}

/// What a member knows when it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub term: u64,
    pub last_log_id: Option<LogId>,
    /// True if this member leads now.
    pub leading: bool,
    /// Time since this member last heard from a leader (an AppendEntries or snapshot it
    /// accepted); None if never since it started.
    pub since_leader: Option<Duration>,
}

/// Would this member vote for `req`'s candidate in the next term? Only if it has not heard
/// from a leader within `min_timeout` (a live leader keeps its followers), is not the
/// leader, and the candidate's log is at least as up to date as its own (Raft's vote rule)
/// and its next term would be above this member's (a stale candidate's would not).
pub fn grant(req: &PreVote, me: &View, min_timeout: Duration) -> bool {
    if me.leading {
        return false;
    }
    if me.since_leader.is_some_and(|d| d < min_timeout) {
        return false;
    }
    req.term + 1 > me.term && req.last_log_id >= me.last_log_id
}

/// When a member that does not lead asks for pre-votes: once it has heard from no leader
/// for its timeout, drawn anew in `[wait, wait + spread)` after each round, so that members
/// whose leader died do not all ask at once.
#[derive(Debug, Clone)]
pub struct Timer {
    wait: Duration,
    spread: Duration,
    /// This round's timeout.
    timeout: Duration,
    /// The time (since some fixed start) of the last event that resets the timer: a leader
    /// heard, a round asked, leading.
    since: Duration,
}

impl Timer {
    /// A timer started at `now`; `draw` gives a number in [0, 1) for the jitter.
    pub fn new(wait: Duration, spread: Duration, now: Duration, draw: f64) -> Timer {
        Timer {
            wait,
            spread,
            timeout: jitter(wait, spread, draw),
            since: now,
        }
    }

    /// A leader was heard at `at` (or this member leads then): no round before `at` plus a
    /// timeout.
    pub fn heard(&mut self, at: Duration) {
        self.since = self.since.max(at);
    }

    /// True if a round is due at `now`.
    pub fn due(&self, now: Duration) -> bool {
        now >= self.since + self.timeout
    }

    /// A round was asked at `now`: the next only after a new timeout (`draw` in [0, 1)).
    pub fn asked(&mut self, now: Duration, draw: f64) {
        self.since = now;
        self.timeout = jitter(self.wait, self.spread, draw);
    }
}

fn jitter(wait: Duration, spread: Duration, draw: f64) -> Duration {
    wait + spread.mul_f64(draw.clamp(0.0, 0.999))
}

/// True if `grants` (counting the candidate itself) are a majority of `voters`.
pub fn won(grants: usize, voters: usize) -> bool {
    grants * 2 > voters
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(openraft::CommittedLeaderId::new(term, 1), index))
    }

    fn view(term: u64, last: Option<LogId>, since_leader: Option<u64>) -> View {
        View {
            term,
            last_log_id: last,
            leading: false,
            since_leader: since_leader.map(Duration::from_millis),
        }
    }

    const MIN: Duration = Duration::from_millis(300);

    #[test]
    /// A member that heard its leader recently says no: a member returning from a cut does
    /// not get to stand, whatever its term.
    fn a_live_leader_keeps_its_followers() {
        let req = PreVote {
            candidate: 3,
            term: 64,
            last_log_id: log(4, 100),
        };
        assert!(!grant(&req, &view(4, log(4, 100), Some(50)), MIN));
        assert!(grant(&req, &view(4, log(4, 100), Some(400)), MIN));
        assert!(grant(&req, &view(4, log(4, 100), None), MIN));
        let leader = View {
            leading: true,
            ..view(4, log(4, 100), None)
        };
        assert!(!grant(&req, &leader, MIN));
    }

    #[test]
    /// Raft's vote rule: a candidate whose log is behind, or whose next term would not be
    /// above this member's, is refused.
    fn a_stale_candidate_is_refused() {
        let me = view(5, log(5, 10), None);
        let behind = PreVote {
            candidate: 2,
            term: 5,
            last_log_id: log(5, 9),
        };
        assert!(!grant(&behind, &me, MIN));
        let older_term = PreVote {
            candidate: 2,
            term: 4,
            last_log_id: log(5, 10),
        };
        assert!(!grant(&older_term, &me, MIN));
        let equal = PreVote {
            candidate: 2,
            term: 5,
            last_log_id: log(5, 10),
        };
        assert!(grant(&equal, &me, MIN));
        let newer_log = PreVote {
            candidate: 2,
            term: 5,
            last_log_id: log(6, 1),
        };
        assert!(grant(&newer_log, &me, MIN));
        assert!(grant(
            &PreVote {
                candidate: 2,
                term: 0,
                last_log_id: None
            },
            &view(0, None, None),
            MIN
        ));
    }

    #[test]
    /// The timer asks only after a full timeout without a leader, within [wait, wait +
    /// spread), and waits a new timeout after each round.
    fn the_timer_waits_a_jittered_timeout() {
        let ms = Duration::from_millis;
        let mut t = Timer::new(MIN, MIN, ms(0), 0.5);
        assert!(!t.due(ms(449)));
        assert!(t.due(ms(450)));
        t.heard(ms(400));
        assert!(!t.due(ms(849)));
        assert!(t.due(ms(850)));
        t.asked(ms(850), 0.0);
        assert!(!t.due(ms(1149)));
        assert!(t.due(ms(1150)));
        // An old hearing does not move it back.
        t.heard(ms(10));
        assert!(t.due(ms(1150)));
        let longest = Timer::new(MIN, MIN, ms(0), 1.0);
        assert!(!longest.due(ms(599)));
    }

    #[test]
    fn a_majority_counts_the_candidate() {
        assert!(won(1, 1));
        assert!(!won(1, 3));
        assert!(won(2, 3));
        assert!(!won(2, 4));
        assert!(won(3, 5));
    }
}
