//! `coordinator status`: progress from `run/status.json`, which the coordinator rewrites
//! every half second.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// Tasks named per worker in the text status.
const SHOWN_TASKS: usize = 4;

/// Reads the status file and whether its coordinator is still alive.
pub fn read(path: &Path) -> anyhow::Result<Value> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "no status at {} (has the coordinator been started? see README, Quick start)",
            path.display()
        )
    })?;
    let mut v: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?;
    let alive = v["pid"]
        .as_u64()
        .is_some_and(|pid| unsafe { libc::kill(pid as i32, 0) } == 0);
    let running = v["running"].as_bool().unwrap_or(false) && alive;
    v["running"] = Value::Bool(running);
    Ok(v)
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
    let mut s = String::new();
    s.push_str(&format!(
        "coordinator: {} (session {}, updated {})\n",
        if v["running"].as_bool().unwrap_or(false) {
            "running"
        } else {
            "NOT RUNNING (last known state)"
        },
        v["session"].as_str().unwrap_or("?"),
        v["updated_at"].as_str().unwrap_or("?")
    ));
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
        "this session: numbers tested {}   tasks done {}   retried/failed tasks {}   workers lost {}\n",
        t("numbers_tested"),
        t("tasks_done"),
        t("tasks_failed"),
        t("workers_lost")
    ));
    if let Some(g) = v["group"].as_object() {
        let gn = |k: &str| g.get(k).and_then(|x| x.as_u64());
        s.push_str(&format!(
            "group:   term {}, leader coordinator-{}, applied index {} (this status is the leader's)\n",
            gn("term").unwrap_or(0),
            gn("leader").map_or("?".to_string(), |l| l.to_string()),
            gn("applied_index").unwrap_or(0),
        ));
        for m in g
            .get("members")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
        {
            let id = m["id"].as_u64().unwrap_or(0);
            s.push_str(&format!(
                "  coordinator-{id} {:<22} log replicated to index {}{}\n",
                m["workers"].as_str().unwrap_or("?"),
                m["matched_index"]
                    .as_u64()
                    .map_or("? (unreachable)".to_string(), |i| i.to_string()),
                if gn("leader") == Some(id) {
                    "  (leader)"
                } else {
                    ""
                },
            ));
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
    s.push_str("workers:\n");
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
            w["last_seen_ms_ago"].as_u64().unwrap_or(0),
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

/// Runs the status command.
pub fn run(path: &Path, json: bool, watch: bool) -> anyhow::Result<()> {
    if !watch {
        let v = read(path)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print!("{}", render(&v));
        }
        return Ok(());
    }
    let mut out = std::io::stdout();
    loop {
        let text = match read(path) {
            Ok(v) if json => serde_json::to_string(&v)? + "\n",
            Ok(v) => render(&v),
            Err(e) => format!("{e:#}\n"),
        };
        if json {
            write!(out, "{text}")?;
        } else {
            // Clear the screen and redraw.
            write!(
                out,
                "\x1b[2J\x1b[H{text}\n(refreshing every second; Ctrl-C to quit)\n"
            )?;
        }
        out.flush()?;
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
}
