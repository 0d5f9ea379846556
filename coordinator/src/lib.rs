//! The coordinator: queues input files as chunked tasks, hands them to workers, collects
//! primes, makes them durable, reports each file, and snapshots the whole system.
//!
//! Decisions (no I/O, time as an input, unit-tested event by event):
//! - [`machine`]: the whole coordinator as one state machine: `handle(Event, Now)` returns
//!   the actions to perform; recovery from a snapshot.
//! - [`core`]: the scheduling part of it (files, chunks, workers, heartbeats, retries, what
//!   becomes done when, reports' content, status).
//! - [`snapshot`]: the Chandy–Lamport protocol's part (markers, channel recording,
//!   timeouts), and the snapshot files.
//! - [`inputs`]: when a file in `data/input` is stable enough to queue.
//!
//! The shell (I/O only; imports go one way: server → flusher, web → state → machine):
//! - [`state`]: the machine and the connections' queues under one lock; `apply(event)`
//!   performs the machine's actions; the status JSON.
//! - [`server`]: start-up and recovery, the accept loop and worker connections, the input
//!   watcher, timers (ticks, snapshots, status file, file-server probes).
//! - [`flusher`]: appends the machine's buffered primes to primes.txt, fsyncs, reports back.
//! - [`group`]: a replicated group of coordinators (Raft through `openraft`): the leader
//!   runs the above with its flushes and reports committed through the group's log
//!   (lists of primes in it as one base64 string: [`compact`]).
//! - [`web`]: the optional dashboard (HTML with live updates, JSON, Prometheus metrics).
//!
//! Files and commands:
//! - [`primes`]: `primes.txt` with its dedup set; torn-tail repair on open; append + fsync.
//! - [`report`]: atomic per-file reports in `data/output/`.
//! - [`verify`]: the consistency check of a snapshot (each task in exactly one place).
//! - [`status`]: the `coordinator status` command (text, JSON, live view).
//! - [`members`]: each group member's view of itself (a file beside the status file) and
//!   what status concludes from them: who is up, who leads or why no one does.
//! - [`crash`]: deliberate crashes at named points for recovery tests (`PRIMES_CRASH_AT`).

pub mod compact;
pub mod core;
pub mod crash;
pub mod flusher;
pub mod group;
pub mod inputs;
pub mod jobs;
pub mod machine;
pub mod members;
pub mod primes;
pub mod ranges;
pub mod report;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod status;
pub mod verify;
pub mod web;
