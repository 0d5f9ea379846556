//! Checks that a snapshot is a consistent cut: every task (a chunk of a file) is in exactly
//! one place — queued, in progress in one worker's recorded state, completed, or as a result
//! recorded in a channel.

use std::collections::HashMap;

use proto::msg::WorkerMsg;
use serde::Serialize;

use crate::core::ChunkState;
use crate::snapshot::{Snapshot, WorkerEntry};

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Verdict {
    pub tasks: usize,
    pub queued: usize,
    pub in_progress: usize,
    pub completed: usize,
    pub in_channel: usize,
    /// Messages recorded in channels (any type).
    pub channel_messages: usize,
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn verify(s: &Snapshot) -> Verdict {
    let mut v = Verdict::default();
    // attempt -> workers holding it in their recorded state
    let mut held: HashMap<&str, Vec<&str>> = HashMap::new();
    for (w, e) in &s.workers {
        if let WorkerEntry::Recorded { state } = e {
            for t in &state.in_progress {
                if t.bytes_done > t.bytes_total {
                    v.problems.push(format!(
                        "{w} reports {} of {} bytes done for attempt {}",
                        t.bytes_done, t.bytes_total, t.attempt
                    ));
                }
                held.entry(t.attempt.as_str()).or_default().push(w.as_str());
            }
        }
    }
    // attempt -> results recorded in channels
    let mut results: HashMap<&str, usize> = HashMap::new();
    for msgs in s.channels.values() {
        v.channel_messages += msgs.len();
        for m in msgs {
            match m {
                WorkerMsg::TaskDone(d) => *results.entry(d.attempt.as_str()).or_default() += 1,
                WorkerMsg::TaskFailed { attempt, .. } => {
                    *results.entry(attempt.as_str()).or_default() += 1
                }
                _ => {}
            }
        }
    }
    // A file with a report is one completed task per file (its chunks are not listed).
    v.tasks += s.coordinator.completed_files.len();
    v.completed += s.coordinator.completed_files.len();
    let mut assigned = std::collections::HashSet::new();
    for f in &s.coordinator.files {
        for (i, c) in f.chunks.iter().enumerate() {
            v.tasks += 1;
            let task = format!("{}#{i}", f.key);
            let places = match c {
                ChunkState::Queued { .. } => {
                    v.queued += 1;
                    1
                }
                ChunkState::Flushing { .. }
                | ChunkState::Done { .. }
                | ChunkState::Failed { .. } => {
                    v.completed += 1;
                    1
                }
                ChunkState::Assigned { attempt, worker } => {
                    assigned.insert(attempt.as_str());
                    let in_prog = held.get(attempt.as_str()).map_or(0, |w| w.len());
                    let in_ch = results.get(attempt.as_str()).copied().unwrap_or(0);
                    let recorded =
                        matches!(s.workers.get(worker), Some(WorkerEntry::Recorded { .. }));
                    if !recorded && in_prog == 0 && in_ch == 0 {
                        // Dead or unresponsive worker: its task counts as queued.
                        v.queued += 1;
                        1
                    } else {
                        v.in_progress += in_prog;
                        v.in_channel += in_ch;
                        in_prog + in_ch
                    }
                }
            };
            if places != 1 {
                v.problems
                    .push(format!("{task} is in {places} places ({c:?})"));
            }
        }
    }
    for (attempt, workers) in &held {
        if !assigned.contains(attempt) {
            v.problems.push(format!(
                "attempt {attempt} is in progress at {workers:?} but the coordinator's state does not have it assigned"
            ));
        }
    }
    for attempt in results.keys() {
        if !assigned.contains(attempt) {
            v.problems.push(format!(
                "a result for attempt {attempt} is in a channel but the coordinator's state does not have it assigned"
            ));
        }
    }
    v
}
