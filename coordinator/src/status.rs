//! `coordinator status`: progress from `run/status.json`, which the coordinator rewrites
//! every half second.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::members;

/// Tasks named per worker in the text status.
const SHOWN_TASKS: usize = 4;

/// A status file not rewritten for this long is not a running coordinator's (it is
/// rewritten every half second).
const STATUS_STALE_MS: u64 = 5000;

/// Reads the status file and asks the members themselves: whether the coordinator that
/// wrote it still runs and serves, and, for a group, which members are up and who leads or
/// why no one does ([`crate::members`]; key `coordinators`).
pub fn read(path: &Path) -> anyhow::Result<Value> {
    let file = std::fs::read(path);
    let mut v: Value = match &file {
        Ok(bytes) => {
            serde_json::from_slice(bytes).with_context(|| format!("reading {}", path.display()))?
        }
        Err(_) => Value::Null,
    };
    let size = v["group"]["members"].as_array().map_or(0, |m| m.len());
    let coordinators = members::collect(&members::status_dir(path), size);
    if let Err(e) = file {
        if coordinators.is_none() {
            return Err(e).with_context(|| {
                format!(
                    "no status at {} (has the coordinator been started? see README, Quick start)",
                    path.display()
                )
            });
        }
        // Members up, none of which ever served: their views are all there is.
        v = serde_json::json!({"running": false});
    }
    let writer = v["pid"].as_u64().map(|p| members::process_state(p as u32));
    compose(&mut v, coordinators, writer, members::now_ms());
    Ok(v)
}

/// Decides `running` and adds what the members say (`coordinators`) and how old the status
/// file is (`status_age_ms`): the status file is a running coordinator's only if it was
/// rewritten lately and its writer is alive (not a zombie) and, in a group, is the member
/// that serves now with a majority up. `writer` is what the system says of the file's pid.
pub fn compose(
    v: &mut Value,
    coordinators: Option<members::Coordinators>,
    writer: Option<members::Process>,
    now_ms: u64,
) {
    let age = v["updated_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| now_ms.saturating_sub(t.timestamp_millis().max(0) as u64));
    let fresh = age.is_some_and(|a| a <= STATUS_STALE_MS);
    let said = v["running"].as_bool().unwrap_or(false);
    let pid = v["pid"].as_u64();
    let running = said
        && fresh
        && match &coordinators {
            Some(c) => c.leader_pid.is_some() && c.leader_pid.map(u64::from) == pid,
            None => writer == Some(members::Process::Alive),
        };
    if !v.is_object() {
        *v = serde_json::json!({});
    }
    v["running"] = Value::Bool(running);
    if let Some(a) = age {
        v["status_age_ms"] = a.into();
    }
    if let Some(c) = coordinators {
        v["coordinators"] = serde_json::to_value(c).unwrap_or(Value::Null);
    }
}

fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        (done as usize * width) / total as usize
    };
    format!(
        "[{}{}]",
        "#".repeat(filled.min(width)),
        ".".repeat(width - filled.min(width))
    )
}

/// Human-readable rendering.
pub fn render(v: &Value) -> String {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let t = |k: &str| v["totals"][k].as_u64().unwrap_or(0);
    let files_total =
        n("files_done") + n("files_queued") + n("files_in_progress") + n("files_failed");
    let running = v["running"].as_bool().unwrap_or(false);
    let coords = v["coordinators"].as_object();
    let age_s = v["status_age_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
    let mut s = String::new();
    if running {
        s.push_str(&format!(
            "coordinator: running (session {}, updated {})\n",
            v["session"].as_str().unwrap_or("?"),
            v["updated_at"].as_str().unwrap_or("?")
        ));
    } else {
        let why = coords
            .and_then(|c| c.get("summary"))
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| match v["pid"].as_u64() {
                Some(pid) => format!("the coordinator (pid {pid}) is not running"),
                None => "no coordinator has run yet".into(),
            });
        s.push_str(&format!("coordinator: NOT RUNNING: {why}\n"));
        if v["updated_at"].is_string() {
            s.push_str(&format!(
                "  below: the last known state, written {age_s:.1} s ago by pid {} (not live)\n",
                v["pid"].as_u64().unwrap_or(0)
            ));
        }
    }
    s.push_str(&format!(
        "files:   {} {}/{} done, {} in progress, {} queued, {} failed\n",
        bar(n("files_done") + n("files_failed"), files_total, 30),
        n("files_done"),
        files_total,
        n("files_in_progress"),
        n("files_queued"),
        n("files_failed")
    ));
    s.push_str(&format!(
        "chunks:  {} {}/{}\n",
        bar(n("chunks_done"), n("chunks_total"), 30),
        n("chunks_done"),
        n("chunks_total")
    ));
    s.push_str(&format!(
        "totals:  numbers in finished files {}   primes in primes.txt {} ({} in the dedup set)\n",
        n("numbers_in_reports"),
        n("primes_in_file"),
        n("primes_in_set"),
    ));
    s.push_str(&format!(
        "this session: numbers tested {}   tasks done {}   retried/failed tasks {}   workers lost {} (their tasks handed out again: {})\n",
        t("numbers_tested"),
        t("tasks_done"),
        t("tasks_failed"),
        t("workers_lost"),
        t("tasks_requeued")
    ));
    if let Some(c) = coords {
        // Not running: the summary heads the page already.
        s.push_str(&format!(
            "coordinators:{}\n",
            c.get("summary")
                .and_then(|x| x.as_str())
                .filter(|_| running)
                .map(|x| format!(" {x}"))
                .unwrap_or_default()
        ));
        // The leader's view of how far the log reached each member (while it runs).
        let matched = |id: u64| -> Option<u64> {
            if !running {
                return None;
            }
            v["group"]["members"]
                .as_array()?
                .iter()
                .find(|m| m["id"].as_u64() == Some(id))?["matched_index"]
                .as_u64()
        };
        for m in c
            .get("members")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
        {
            let id = m["id"].as_u64().unwrap_or(0);
            let idx = |k: &str| m[k].as_u64().map_or("-".to_string(), |i| i.to_string());
            let seen = m["seen_ms_ago"].as_u64().map_or("never".to_string(), |a| {
                format!("{:.1} s ago", a as f64 / 1000.0)
            });
            s.push_str(&format!(
                "  coordinator-{id} {:<26} term {:<4} applied {:<8} log {:<8}{}{}\n",
                m["state"].as_str().unwrap_or("?"),
                m["term"]
                    .as_u64()
                    .map_or("-".to_string(), |t| t.to_string()),
                idx("applied_index"),
                idx("last_log_index"),
                matched(id)
                    .map(|i| format!(" replicated {i}"))
                    .unwrap_or_default(),
                match m["why"].as_str() {
                    Some(w) => format!("  {w}; seen {seen}"),
                    None => String::new(),
                },
            ));
        }
    } else if let Some(g) = v["group"].as_object() {
        let gn = |k: &str| g.get(k).and_then(|x| x.as_u64());
        s.push_str(&format!(
            "group:   term {}, leader coordinator-{}, applied index {} (this status is the leader's)\n",
            gn("term").unwrap_or(0),
            gn("leader").map_or("?".to_string(), |l| l.to_string()),
            gn("applied_index").unwrap_or(0),
        ));
    }
    let servers: Vec<&Value> = v["file_servers"].as_array().into_iter().flatten().collect();
    if !servers.is_empty() {
        s.push_str("file servers:\n");
        for (i, f) in servers.iter().enumerate() {
            s.push_str(&format!(
                "  {:<22} {:<4} {}\n",
                f["addr"].as_str().unwrap_or("?"),
                if f["up"] == true { "up" } else { "DOWN" },
                match (&f["id"], &f["role"], &f["error"]) {
                    (Value::String(id), Value::String(role), _) => format!("{id} ({role})"),
                    (_, _, Value::String(e)) => format!(
                        "{}{e}",
                        if i == 0 {
                            "the primary (first listed): "
                        } else {
                            ""
                        }
                    ),
                    _ => String::new(),
                }
            ));
        }
        if let Some(note) = servers_note(&servers) {
            s.push_str(&format!("  {note}\n"));
        }
    }
    match v["last_snapshot"].as_object() {
        Some(snap) => s.push_str(&format!(
            "last snapshot: #{} at {} ({})\n",
            snap.get("seq").and_then(|x| x.as_u64()).unwrap_or(0),
            snap.get("completed_at")
                .and_then(|x| x.as_str())
                .unwrap_or("?"),
            snap.get("path").and_then(|x| x.as_str()).unwrap_or("?")
        )),
        None => s.push_str("last snapshot: none yet\n"),
    }
    if let Some(jobs) = v["jobs"].as_array().filter(|j| !j.is_empty()) {
        s.push_str("jobs:\n");
        for j in jobs {
            let g = |k: &str| j[k].as_u64().unwrap_or(0);
            s.push_str(&format!(
                "  {:<12} {:<10} {} {}/{} tasks  {}{}\n",
                j["job"].as_str().unwrap_or("?"),
                j["state"].as_str().unwrap_or("?"),
                bar(g("tasks_done"), g("tasks"), 20),
                g("tasks_done"),
                g("tasks"),
                j["line"].as_str().unwrap_or(""),
                j["error"]
                    .as_str()
                    .map(|e| format!("({e})"))
                    .unwrap_or_default()
            ));
        }
    }
    if running {
        s.push_str("workers:\n");
    } else {
        s.push_str(&format!(
            "workers (as the last coordinator saw them {age_s:.1} s ago; not live):\n"
        ));
    }
    for w in v["workers"].as_array().into_iter().flatten() {
        let all: Vec<&str> = w["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str())
            .collect();
        // A worker may hold dozens of small files: name a few, count the rest (all of
        // them are in --json).
        let mut tasks = all
            .iter()
            .take(SHOWN_TASKS)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if all.len() > SHOWN_TASKS {
            tasks.push_str(&format!(" (+{} more)", all.len() - SHOWN_TASKS));
        }
        s.push_str(&format!(
            "  {:<12} {:<12} done {:>6}  numbers {:>12}  seen {:>6} ms ago  {}\n",
            w["id"].as_str().unwrap_or("?"),
            w["state"].as_str().unwrap_or("?"),
            w["tasks_done"].as_u64().unwrap_or(0),
            w["numbers_tested"].as_u64().unwrap_or(0),
            // Seen by a coordinator that is gone: as long ago as its status is old, too.
            w["last_seen_ms_ago"].as_u64().unwrap_or(0)
                + if running {
                    0
                } else {
                    v["status_age_ms"].as_u64().unwrap_or(0)
                },
            tasks
        ));
    }
    let pending: Vec<&Value> = v["files"]
        .as_array()
        .into_iter()
        .flatten()
        .take(10)
        .collect();
    if !pending.is_empty() {
        s.push_str("files not done (first 10):\n");
        for f in pending {
            s.push_str(&format!(
                "  {:<40} {:<12} chunks {}/{}{}\n",
                f["file"].as_str().unwrap_or("?"),
                f["state"].as_str().unwrap_or("?"),
                f["chunks_done"].as_u64().unwrap_or(0),
                f["chunks"].as_u64().unwrap_or(0),
                f["error"]
                    .as_str()
                    .map(|e| format!("  ({e})"))
                    .unwrap_or_default()
            ));
        }
    }
    s
}

/// What the file servers' state means for the inputs (the first address is the primary,
/// as the scripts and the README give them), if anything is wrong.
pub fn servers_note(servers: &[&Value]) -> Option<String> {
    let up = servers.iter().filter(|f| f["up"] == true).count();
    if up == 0 {
        return Some(
            "no file server answers: inputs cannot be listed or read; dropped files wait".into(),
        );
    }
    if servers.len() > 1 && servers.first().is_some_and(|f| f["up"] != true) {
        return Some(
            "the primary is down: files dropped into data/input wait until it returns (the \
             backups hold only what it copied to them; what they hold is still served)"
                .into(),
        );
    }
    None
}

/// Ok if the coordinator writing `path` runs and wrote it within the last 5 s (it rewrites
/// it every 0.5 s); else why not.
pub fn healthy(path: &Path) -> Result<(), String> {
    let v = read(path).map_err(|e| format!("{e:#}"))?;
    if !v["running"].as_bool().unwrap_or(false) {
        return Err("the coordinator is not running".into());
    }
    let updated = v["updated_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .ok_or("the status file has no update time")?;
    let age = chrono::Utc::now().signed_duration_since(updated);
    if age > chrono::Duration::seconds(5) {
        return Err(format!(
            "the status was last written {}s ago",
            age.num_seconds()
        ));
    }
    Ok(())
}

/// True if the coordinator is running and has `worker` connected.
pub fn registered(path: &Path, worker: &str) -> bool {
    let Ok(v) = read(path) else { return false };
    v["running"].as_bool().unwrap_or(false)
        && v["workers"].as_array().is_some_and(|ws| {
            ws.iter()
                .any(|w| w["id"] == worker && w["state"] != "disconnected")
        })
}

/// Whether the status shown says a coordinator runs (in a group: one leads and serves):
/// `coordinator status` exits 0 if so, 3 if not (the LSB's "program is not running"),
/// after showing the last known state either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Running {
    Yes,
    No,
}

impl Running {
    /// What status `v` says.
    fn of(v: &Value) -> Running {
        if v["running"] == true {
            Running::Yes
        } else {
            Running::No
        }
    }
}

/// Runs the status command.
pub fn run(path: &Path, json: bool, watch: bool) -> anyhow::Result<Running> {
    if !watch {
        let v = read(path)?;
        let text = if json {
            serde_json::to_string_pretty(&v)? + "\n"
        } else {
            render(&v)
        };
        // A reader that stops early (`status | grep -q`, `| head`) closes the pipe: not an
        // error of ours (println! panicked with exit 101), and the exit status still says
        // whether a coordinator runs.
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(e).context("writing the status");
            }
        }
        return Ok(Running::of(&v));
    }
    let mut out = std::io::stdout();
    loop {
        let (text, running) = match read(path) {
            Ok(v) if json => (serde_json::to_string(&v)? + "\n", Running::of(&v)),
            Ok(v) => (render(&v), Running::of(&v)),
            Err(e) => (format!("{e:#}\n"), Running::No),
        };
        let written = if json {
            write!(out, "{text}")
        } else {
            // Clear the screen and redraw.
            write!(
                out,
                "\x1b[2J\x1b[H{text}\n(refreshing every second; Ctrl-C to quit)\n"
            )
        }
        .and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            // The reader went (`status --watch --json | head -n 3`): the watch is over, and
            // the exit status says what the last status showed.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                return Ok(running);
            }
            Err(e) => return Err(e).context("writing the status"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A worker holding many tasks is one line: the first few named, the rest counted.
    fn many_tasks_are_counted_not_listed() {
        let tasks: Vec<String> = (0..6).map(|i| format!("f{i}.txt#0")).collect();
        let v = serde_json::json!({
            "workers": [{"id": "worker-1", "state": "busy", "tasks": tasks}],
        });
        let text = render(&v);
        let line = text
            .lines()
            .find(|l| l.contains("worker-1"))
            .expect("the worker's line");
        assert!(
            line.contains("f0.txt#0, f1.txt#0, f2.txt#0, f3.txt#0 (+2 more)"),
            "{line}"
        );
        assert!(!line.contains("f4.txt"), "{line}");
    }

    fn member(id: u64, role: &str, serving: bool, at: u64) -> members::MemberView {
        members::MemberView {
            id,
            pid: 100 + id as u32,
            host: "h".into(),
            updated_ms: at,
            role: role.into(),
            term: 5,
            leader: Some(2),
            serving,
            applied_index: Some(40 + id),
            last_log_index: Some(40 + id),
            members: vec![1, 2, 3],
        }
    }

    #[test]
    /// A status file written a moment ago by a leader that is gone (two of three killed):
    /// not running, and the text says who is up and why nothing progresses, each member's
    /// own applied index, and that the workers shown are not live (issue 27, defect 1).
    fn status_of_a_dead_leader_without_a_majority() {
        let now = chrono::Utc::now();
        let now_ms = now.timestamp_millis() as u64;
        let mut v = serde_json::json!({
            "running": true,
            "pid": 102,
            "updated_at": (now - chrono::Duration::milliseconds(300)).to_rfc3339(),
            "workers": [{"id": "worker-1", "state": "busy", "tasks": ["a#0"], "last_seen_ms_ago": 100}],
            "file_servers": [
                {"addr": "127.0.0.1:7401", "up": false, "error": "connection refused"},
                {"addr": "127.0.0.1:7402", "up": true, "id": "server-2", "role": "backup"},
            ],
        });
        let c = members::verdict(
            &[
                (
                    1,
                    Some((
                        member(1, "follower", false, now_ms),
                        members::Process::Alive,
                    )),
                ),
                (
                    2,
                    Some((
                        member(2, "leader", true, now_ms - 300),
                        members::Process::Gone,
                    )),
                ),
                (
                    3,
                    Some((
                        member(3, "follower", false, now_ms - 300),
                        members::Process::Zombie,
                    )),
                ),
            ],
            0,
            now_ms,
        );
        compose(&mut v, Some(c), Some(members::Process::Gone), now_ms);
        assert_eq!(v["running"], false);
        let text = render(&v);
        assert!(
            text.starts_with(
                "coordinator: NOT RUNNING: no coordinator leads: 1 of 3 members up, no majority: nothing can progress\n"
            ),
            "{text}"
        );
        for want in [
            "coordinator-1 follower",
            "applied 41",
            "coordinator-2 DOWN (was leader)",
            "not running (pid 102 is gone)",
            "exited (pid 103 is a zombie)",
            "workers (as the last coordinator saw them 0.3 s ago; not live):",
            "the primary is down: files dropped into data/input wait",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
    }

    #[test]
    /// The serving leader's fresh status file is running; the same file once its writer is a
    /// zombie, or once it is old, is not (a single coordinator, no member views).
    fn running_needs_a_live_fresh_writer() {
        let now = chrono::Utc::now();
        let now_ms = now.timestamp_millis() as u64;
        let file = |age_ms: i64| {
            serde_json::json!({
                "running": true,
                "pid": 102,
                "updated_at": (now - chrono::Duration::milliseconds(age_ms)).to_rfc3339(),
            })
        };
        for (age, writer, want) in [
            (200, members::Process::Alive, true),
            (200, members::Process::Zombie, false),
            (200, members::Process::Stopped, false),
            (9000, members::Process::Alive, false),
        ] {
            let mut v = file(age);
            compose(&mut v, None, Some(writer), now_ms);
            assert_eq!(v["running"], want, "age {age} writer {writer:?}");
        }
        // In a group: only the serving leader's file.
        let c = members::verdict(
            &[
                (
                    1,
                    Some((
                        member(1, "follower", false, now_ms),
                        members::Process::Alive,
                    )),
                ),
                (
                    2,
                    Some((member(2, "leader", true, now_ms), members::Process::Alive)),
                ),
                (
                    3,
                    Some((
                        member(3, "follower", false, now_ms),
                        members::Process::Alive,
                    )),
                ),
            ],
            0,
            now_ms,
        );
        let mut v = file(200);
        compose(&mut v, Some(c.clone()), None, now_ms);
        assert_eq!(v["running"], true);
        assert!(
            render(&v).contains("coordinators: coordinator-2 leads (term 5); 3 of 3 members up")
        );
        let mut v = file(200);
        v["pid"] = 101.into();
        compose(&mut v, Some(c), None, now_ms);
        assert_eq!(
            v["running"], false,
            "written by a member that no longer serves"
        );
    }
}
