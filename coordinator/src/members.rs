//! What each member of a coordinator group says about itself, and what status concludes
//! from it: which members are up, who leads, or why no one does.
//!
//! Every member (leading or not) rewrites a small file beside the status file every half
//! second, `coordinator-<n>.member.json` ([`MemberView`]: its pid, role, term, the leader it
//! knows, whether it serves workers, its applied index). `coordinator status`, the
//! dashboard and `/metrics` read those files, not only the last leader's status file, so
//! they tell a dead or cut-off leader from a live one. The conclusion is a pure function of
//! the views, the processes' states and the time ([`verdict`]); reading the files and
//! `/proc` is the shell around it ([`collect`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A member's view of itself, as it writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its member number (`coordinator-<id>`).
    pub id: u64,
    pub pid: u32,
    /// The host it runs on (a pid means something only there).
    pub host: String,
    /// When it wrote this view (Unix time, ms).
    pub updated_ms: u64,
    /// Its Raft role: leader, follower, candidate, learner, shutdown.
    pub role: String,
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// True while it runs the coordinator for workers (it leads, confirmed by a majority).
    pub serving: bool,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    /// The group's members (their numbers), as its membership says.
    pub members: Vec<u64>,
}

/// What the operating system says of a member's pid (the shell looks; see
/// [`process_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// Running (or runnable, or sleeping).
    Alive,
    /// Suspended (SIGSTOP, Ctrl-Z): alive, answering nothing.
    Stopped,
    /// Exited, not yet reaped by its parent: not running, whatever `kill(pid, 0)` says.
    Zombie,
    /// No such process.
    Gone,
    /// On another host: its pid cannot be checked here, only the freshness of its view.
    Elsewhere,
}

/// A view older than this is a member that does not answer (it is rewritten every
/// [`PUBLISH_EVERY`]; the slack covers a loaded machine).
pub const STALE_MS: u64 = 3000;

/// How often a member rewrites its view.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// One member as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    pub id: u64,
    pub up: bool,
    /// leader, follower, candidate, "leader without a majority", "leader (taking over)",
    /// or DOWN (with the role it had last).
    pub state: String,
    /// Why it is down (or not serving although it leads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    pub term: Option<u64>,
    /// The last log index this member applied (from its own view, not the leader's).
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    /// How long ago it last wrote its view (None: never).
    pub seen_ms_ago: Option<u64>,
    pub pid: Option<u32>,
}

/// The group as status concludes it from the members' own views.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinators {
    /// Members in the group.
    pub size: usize,
    /// Members up (alive and writing their view).
    pub up: Vec<u64>,
    /// The member serving workers, if one does.
    pub leader: Option<u64>,
    /// The highest term a member up is in.
    pub term: Option<u64>,
    /// One line: who leads, or that no one does and why.
    pub summary: String,
    /// Its pid (the status file is its own when the pids match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_pid: Option<u32>,
    pub members: Vec<MemberRow>,
}

/// Concludes the group's state from each member's view (`None`: no view found) and its
/// process, at `now_ms` (Unix ms). `size` is the group's size if known otherwise (e.g.
/// from the last status file).
pub fn verdict(
    views: &[(u64, Option<(MemberView, Process)>)],
    size: usize,
    now_ms: u64,
) -> Coordinators {
    let size = views
        .iter()
        .filter_map(|(_, v)| v.as_ref().map(|(m, _)| m.members.len()))
        .chain([size, views.len()])
        .max()
        .unwrap_or(0);
    let majority = size / 2 + 1;
    let mut rows = Vec::new();
    let mut up: Vec<&MemberView> = Vec::new();
    for (id, v) in views {
        let Some((m, proc_)) = v else {
            rows.push(MemberRow {
                id: *id,
                up: false,
                state: "DOWN".into(),
                why: Some("never reported (not started?)".into()),
                term: None,
                applied_index: None,
                last_log_index: None,
                seen_ms_ago: None,
                pid: None,
            });
            continue;
        };
        let age = now_ms.saturating_sub(m.updated_ms);
        let why = match proc_ {
            Process::Gone => Some(format!("not running (pid {} is gone)", m.pid)),
            Process::Zombie => Some(format!("exited (pid {} is a zombie)", m.pid)),
            Process::Stopped => Some(format!("suspended (pid {}: SIGSTOP)", m.pid)),
            Process::Alive | Process::Elsewhere if age > STALE_MS => Some(format!(
                "not answering (its view is {:.1} s old)",
                age as f64 / 1000.0
            )),
            Process::Alive | Process::Elsewhere => None,
        };
        let is_up = why.is_none();
        if is_up {
            up.push(m);
        }
        rows.push(MemberRow {
            id: *id,
            up: is_up,
            state: if is_up {
                m.role.clone()
            } else {
                format!("DOWN (was {})", m.role)
            },
            why,
            term: Some(m.term),
            applied_index: m.applied_index,
            last_log_index: m.last_log_index,
            seen_ms_ago: Some(age),
            pid: Some(m.pid),
        });
    }
    let n_up = up.len();
    for r in rows.iter_mut().filter(|r| r.up && r.state == "leader") {
        let serving = up.iter().any(|m| m.id == r.id && m.serving);
        if n_up < majority {
            r.state = "leader without a majority".into();
        } else if !serving {
            r.state = "leader (taking over)".into();
        }
    }
    let term = up.iter().map(|m| m.term).max();
    // The member serving in the highest term (an older one may not have noticed yet).
    let leader = up
        .iter()
        .filter(|m| m.serving && m.role == "leader")
        .max_by_key(|m| m.term)
        .copied();
    let summary = match leader {
        Some(l) if n_up >= majority => format!(
            "coordinator-{} leads (term {}); {n_up} of {size} members up",
            l.id, l.term
        ),
        _ if n_up < majority => {
            let elected = up
                .iter()
                .find(|m| m.role == "leader")
                .map(|m| {
                    format!(
                        " (coordinator-{} was elected in term {} but no majority confirms it)",
                        m.id, m.term
                    )
                })
                .unwrap_or_default();
            format!(
                "no coordinator leads: {n_up} of {size} members up, no majority: nothing can progress{elected}"
            )
        }
        _ => match up.iter().find(|m| m.role == "leader") {
            Some(m) => format!(
                "no coordinator serves yet: coordinator-{} was elected in term {} and is taking over; {n_up} of {size} members up",
                m.id, m.term
            ),
            None => format!(
                "no coordinator leads: election under way (term {}); {n_up} of {size} members up",
                term.unwrap_or(0)
            ),
        },
    };
    // A serving member without a majority up cannot commit anything: not a leader.
    let leader = leader.filter(|_| n_up >= majority);
    Coordinators {
        size,
        up: up.iter().map(|m| m.id).collect(),
        leader: leader.map(|l| l.id),
        term,
        summary,
        leader_pid: leader.map(|l| l.pid),
        members: rows,
    }
}

/// The file a member writes its view to, beside the status file.
pub fn view_path(status_dir: &Path, id: u64) -> PathBuf {
    status_dir.join(format!("coordinator-{id}.member.json"))
}

/// The folder of the status file (where the members' views go too).
pub fn status_dir(status_file: &Path) -> PathBuf {
    match status_file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// This host's name (where a pid means something).
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// What the operating system says of `pid` on this host.
pub fn process_state(pid: u32) -> Process {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the command name in parentheses.
        Ok(stat) => match stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next()) {
            Some('Z') | Some('X') => Process::Zombie,
            Some('T') | Some('t') => Process::Stopped,
            _ => Process::Alive,
        },
        Err(_) => {
            // No /proc (not Linux): kill(pid, 0) at least tells a gone process.
            // SAFETY: signal 0 checks existence only.
            if pid > 0 && unsafe { libc::kill(pid as i32, 0) } == 0 {
                Process::Alive
            } else {
                Process::Gone
            }
        }
    }
}

/// Reads the members' views in `status_dir` and concludes (None if no member wrote one:
/// not a group). `size` as in [`verdict`].
pub fn collect(status_dir: &Path, size: usize) -> Option<Coordinators> {
    let here = host();
    let mut found: Vec<(u64, Option<(MemberView, Process)>)> = Vec::new();
    let entries = std::fs::read_dir(status_dir).ok()?;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("coordinator-"))
            .and_then(|n| n.strip_suffix(".member.json"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let view = std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<MemberView>(&b).ok());
        found.push((
            id,
            view.map(|v| {
                let p = if v.host == here {
                    process_state(v.pid)
                } else {
                    Process::Elsewhere
                };
                (v, p)
            }),
        ));
    }
    if found.is_empty() {
        return None;
    }
    // Members the views name that wrote none.
    let named: Vec<u64> = found
        .iter()
        .filter_map(|(_, v)| v.as_ref().map(|(m, _)| m.members.clone()))
        .max_by_key(|m| m.len())
        .unwrap_or_default();
    for id in named {
        if !found.iter().any(|(i, _)| *i == id) {
            found.push((id, None));
        }
    }
    found.sort_by_key(|(id, _)| *id);
    Some(verdict(&found, size, now_ms()))
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u64, role: &str, term: u64, serving: bool, at: u64) -> MemberView {
        MemberView {
            id,
            pid: 100 + id as u32,
            host: "h".into(),
            updated_ms: at,
            role: role.into(),
            term,
            leader: (role == "leader").then_some(id),
            serving,
            applied_index: Some(10 * id),
            last_log_index: Some(10 * id),
            members: vec![1, 2, 3],
        }
    }

    #[test]
    /// A healthy group: the serving leader leads, every member's own applied index shows.
    fn a_serving_leader_with_a_majority_leads() {
        let now = 10_000;
        let c = verdict(
            &[
                (
                    1,
                    Some((view(1, "leader", 4, true, now - 100), Process::Alive)),
                ),
                (
                    2,
                    Some((view(2, "follower", 4, false, now - 200), Process::Alive)),
                ),
                (
                    3,
                    Some((view(3, "follower", 4, false, now), Process::Alive)),
                ),
            ],
            0,
            now,
        );
        assert_eq!(c.leader, Some(1));
        assert_eq!(c.leader_pid, Some(101));
        assert_eq!(c.up, vec![1, 2, 3]);
        assert_eq!(c.summary, "coordinator-1 leads (term 4); 3 of 3 members up");
        let applied: Vec<_> = c.members.iter().map(|m| m.applied_index).collect();
        assert_eq!(applied, vec![Some(10), Some(20), Some(30)]);
    }

    #[test]
    /// Two of three killed: the one alive is named, no one leads, and the reason says why.
    /// A dead leader's fresh-looking view does not count (its pid is gone), nor a zombie's.
    fn no_majority_says_so() {
        let now = 10_000;
        let c = verdict(
            &[
                (
                    1,
                    Some((view(1, "follower", 5, false, now), Process::Alive)),
                ),
                (
                    2,
                    Some((view(2, "leader", 5, true, now - 300), Process::Gone)),
                ),
                (
                    3,
                    Some((view(3, "follower", 5, false, now - 300), Process::Zombie)),
                ),
            ],
            0,
            now,
        );
        assert_eq!(c.leader, None);
        assert_eq!(c.up, vec![1]);
        assert_eq!(
            c.summary,
            "no coordinator leads: 1 of 3 members up, no majority: nothing can progress"
        );
        assert_eq!(c.members[1].state, "DOWN (was leader)");
        assert_eq!(
            c.members[1].why.as_deref(),
            Some("not running (pid 102 is gone)")
        );
        assert_eq!(
            c.members[2].why.as_deref(),
            Some("exited (pid 103 is a zombie)")
        );
    }

    #[test]
    /// A leader left alone that still believes it serves is not a leader: without a
    /// majority up it commits nothing. One that stopped serving is shown as such.
    fn a_lone_leader_does_not_lead() {
        let now = 10_000;
        for serving in [true, false] {
            let c = verdict(
                &[
                    (
                        1,
                        Some((view(1, "leader", 7, serving, now), Process::Alive)),
                    ),
                    (2, None),
                    (
                        3,
                        Some((view(3, "follower", 7, false, 1_000), Process::Alive)),
                    ),
                ],
                0,
                now,
            );
            assert_eq!(c.leader, None, "serving {serving}");
            assert_eq!(c.members[0].state, "leader without a majority");
            assert!(
                c.summary
                    .starts_with("no coordinator leads: 1 of 3 members up, no majority")
                    && c.summary.contains("coordinator-1 was elected in term 7"),
                "{}",
                c.summary
            );
            assert_eq!(
                c.members[1].why.as_deref(),
                Some("never reported (not started?)")
            );
            assert_eq!(
                c.members[2].why.as_deref(),
                Some("not answering (its view is 9.0 s old)")
            );
        }
    }

    #[test]
    /// A majority up but no one serving: an election, or a new leader taking over.
    fn elections_and_takeovers() {
        let now = 10_000;
        let c = verdict(
            &[
                (
                    1,
                    Some((view(1, "candidate", 9, false, now), Process::Alive)),
                ),
                (
                    2,
                    Some((view(2, "follower", 8, false, now), Process::Alive)),
                ),
            ],
            3,
            now,
        );
        assert_eq!(c.size, 3);
        assert_eq!(
            c.summary,
            "no coordinator leads: election under way (term 9); 2 of 3 members up"
        );
        let c = verdict(
            &[
                (1, Some((view(1, "leader", 9, false, now), Process::Alive))),
                (
                    2,
                    Some((view(2, "follower", 9, false, now), Process::Stopped)),
                ),
                (
                    3,
                    Some((view(3, "follower", 9, false, now), Process::Elsewhere)),
                ),
            ],
            0,
            now,
        );
        assert_eq!(c.leader, None);
        assert!(c
            .summary
            .contains("coordinator-1 was elected in term 9 and is taking over"));
        assert_eq!(c.members[0].state, "leader (taking over)");
        assert_eq!(
            c.members[1].why.as_deref(),
            Some("suspended (pid 102: SIGSTOP)")
        );
        assert!(
            c.members[2].up,
            "a member on another host counts by its view's age"
        );
    }

    #[test]
    /// Two members serving (an old leader that has not noticed yet): the higher term leads.
    fn the_newer_term_wins() {
        let now = 10_000;
        let c = verdict(
            &[
                (1, Some((view(1, "leader", 3, true, now), Process::Alive))),
                (2, Some((view(2, "leader", 4, true, now), Process::Alive))),
                (
                    3,
                    Some((view(3, "follower", 4, false, now), Process::Alive)),
                ),
            ],
            0,
            now,
        );
        assert_eq!(c.leader, Some(2));
    }
}
