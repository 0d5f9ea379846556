//! The status in Prometheus text format (`/metrics`).

use axum::http::header;

/// Prometheus text of a status (the leader's live one, or, on a member that does not
/// serve, the last leader's file with the members' views): the same numbers as
/// `coordinator status --json`.
pub(super) fn metrics_text(
    v: &serde_json::Value,
) -> ([(header::HeaderName, &'static str); 1], String) {
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, samples: Vec<(String, u64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let label = |k: &str, val: &str| {
        format!(
            "{{{k}=\"{}\"}}",
            val.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        )
    };
    metric(
        "primes_up",
        "1 if a coordinator runs and serves (the status is live), else 0.",
        "gauge",
        vec![(String::new(), u64::from(v["running"] == true))],
    );
    metric(
        "primes_files",
        "Input files by state.",
        "gauge",
        ["done", "in_progress", "queued", "failed"]
            .iter()
            .map(|s| (label("state", s), n(&v[format!("files_{s}").as_str()])))
            .collect(),
    );
    metric(
        "primes_chunks_total",
        "Chunks known.",
        "gauge",
        vec![(String::new(), n(&v["chunks_total"]))],
    );
    metric(
        "primes_chunks_done",
        "Chunks done.",
        "gauge",
        vec![(String::new(), n(&v["chunks_done"]))],
    );
    metric(
        "primes_in_file",
        "Distinct primes in primes.txt.",
        "gauge",
        vec![(String::new(), n(&v["primes_in_file"]))],
    );
    metric(
        "primes_dedup_set",
        "Primes held in the coordinator's dedup set (primes of primes jobs are known by their segments instead).",
        "gauge",
        vec![(String::new(), n(&v["primes_in_set"]))],
    );
    let jobs: Vec<&serde_json::Value> = v["jobs"].as_array().into_iter().flatten().collect();
    let mut jobs_by_state = std::collections::BTreeMap::new();
    for state in ["running", "finishing", "done", "failed", "invalid"] {
        jobs_by_state.insert(state.to_string(), 0u64);
    }
    for j in &jobs {
        *jobs_by_state
            .entry(j["state"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    metric(
        "primes_jobs",
        "Generation jobs by state.",
        "gauge",
        jobs_by_state
            .iter()
            .map(|(s, c)| (label("state", s), *c))
            .collect(),
    );
    let job = |j: &&serde_json::Value| label("job", j["job"].as_str().unwrap_or("?"));
    metric(
        "primes_job_tasks",
        "Tasks of each generation job.",
        "gauge",
        jobs.iter().map(|j| (job(j), n(&j["tasks"]))).collect(),
    );
    metric(
        "primes_job_tasks_done",
        "Tasks of each generation job whose results are durable.",
        "gauge",
        jobs.iter().map(|j| (job(j), n(&j["tasks_done"]))).collect(),
    );
    let t = &v["totals"];
    for (name, key, help) in [
        (
            "primes_numbers_tested_total",
            "numbers_tested",
            "Numbers tested in this coordinator session.",
        ),
        (
            "primes_tasks_done_total",
            "tasks_done",
            "Chunks finished in this session.",
        ),
        (
            "primes_tasks_failed_total",
            "tasks_failed",
            "Chunk attempts reported failed in this session.",
        ),
        (
            "primes_workers_lost_total",
            "workers_lost",
            "Workers lost (disconnect or missed heartbeats) in this session.",
        ),
        (
            "primes_tasks_requeued_total",
            "tasks_requeued",
            "Tasks a lost worker held, handed out again, in this session.",
        ),
    ] {
        metric(name, help, "counter", vec![(String::new(), n(&t[key]))]);
    }
    let mut by_state = std::collections::BTreeMap::new();
    for w in v["workers"].as_array().into_iter().flatten() {
        *by_state
            .entry(w["state"].as_str().unwrap_or("?").to_string())
            .or_insert(0u64) += 1;
    }
    metric(
        "primes_workers",
        "Workers by state (as the last coordinator saw them when primes_up is 0).",
        "gauge",
        by_state
            .iter()
            .map(|(s, c)| (label("state", s), *c))
            .collect(),
    );
    let servers: Vec<&serde_json::Value> =
        v["file_servers"].as_array().into_iter().flatten().collect();
    metric(
        "primes_file_servers_up",
        "File servers answering the probe.",
        "gauge",
        vec![(
            String::new(),
            servers.iter().filter(|s| s["up"] == true).count() as u64,
        )],
    );
    metric(
        "primes_file_server_up",
        "1 if this file server answers the probe (the first listed is the primary).",
        "gauge",
        servers
            .iter()
            .map(|s| {
                (
                    label("addr", s["addr"].as_str().unwrap_or("?")),
                    u64::from(s["up"] == true),
                )
            })
            .collect(),
    );
    metric(
        "primes_last_snapshot_seq",
        "Sequence number of the last snapshot written.",
        "gauge",
        vec![(String::new(), n(&v["last_snapshot"]["seq"]))],
    );
    if let Some(g) = v["group"].as_object() {
        let gv = |k: &str| g.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        metric(
            "primes_group_term",
            "Raft term of the coordinator group (served by its leader).",
            "gauge",
            vec![(String::new(), gv("term"))],
        );
        metric(
            "primes_group_leader",
            "Member number of the group's leader (0: none serves).",
            "gauge",
            vec![(
                String::new(),
                v["coordinators"]["leader"]
                    .as_u64()
                    .unwrap_or(if v["coordinators"].is_null() {
                        gv("leader")
                    } else {
                        0
                    }),
            )],
        );
        metric(
            "primes_group_applied_index",
            "Last log index applied by the leader's replica.",
            "gauge",
            vec![(String::new(), gv("applied_index"))],
        );
        metric(
            "primes_group_matched_index",
            "Last log index known replicated to each member.",
            "gauge",
            g.get("members")
                .and_then(|m| m.as_array())
                .into_iter()
                .flatten()
                .map(|m| {
                    (
                        label("member", &format!("coordinator-{}", n(&m["id"]))),
                        n(&m["matched_index"]),
                    )
                })
                .collect(),
        );
    }
    if let Some(c) = v["coordinators"].as_object() {
        let rows: Vec<&serde_json::Value> = c
            .get("members")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
            .collect();
        let member =
            |m: &&serde_json::Value| label("member", &format!("coordinator-{}", n(&m["id"])));
        metric(
            "primes_coordinators_up",
            "Members of the coordinator group up (alive and reporting).",
            "gauge",
            vec![(
                String::new(),
                c.get("up")
                    .and_then(|u| u.as_array())
                    .map_or(0, |u| u.len() as u64),
            )],
        );
        metric(
            "primes_coordinator_up",
            "1 if this member is up (its own view, not the leader's).",
            "gauge",
            rows.iter()
                .map(|m| (member(m), u64::from(m["up"] == true)))
                .collect(),
        );
        metric(
            "primes_coordinator_applied_index",
            "Last log index this member applied, as it says itself.",
            "gauge",
            rows.iter()
                .map(|m| (member(m), n(&m["applied_index"])))
                .collect(),
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
