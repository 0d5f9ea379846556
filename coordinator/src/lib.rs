//! The coordinator: queues input files as chunked tasks, hands them to workers, collects
//! primes, makes them durable, reports each file, and snapshots the whole system.
//!
//! Decisions (no I/O, time as an input, unit-tested event by event):
//! - [`machine`]: the whole coordinator as one state machine: `handle(Event, Now)` returns
//!   the actions to perform; recovery from a snapshot.
//! - [`core`]: the scheduling part of it (files, chunks, workers, heartbeats, retries, what
//!   becomes done when, reports' content, status); its entries keyed by [`core::Key`] (an
//!   input file or a generation job).
//! - [`snapshot`]: the Chandy–Lamport protocol's part (markers, channel recording,
//!   timeouts), and the snapshot files.
//! - [`inputs`]: when a file in `data/input` is stable enough to queue.
//!
//! The shell (I/O only; imports go one way: group → server → flusher, web → state →
//! durable, machine; the shell names no group type):
//! - [`state`]: the machine and the connections' queues under one lock; `apply(event)`
//!   performs the machine's actions; the status JSON.
//! - [`server`]: start-up and recovery, the accept loop and worker connections; the input
//!   watchers (`server/watch.rs`: the folders, or the file server's listing); the timers
//!   (`server/timers.rs`: ticks, snapshots, status file, file-server probes).
//! - [`flusher`]: hands the machine's buffered primes to the durability seam, reports back.
//! - [`durable`]: the seam: the one interface through which the shell makes anything
//!   durable (flushes, reports, job reports).
//! - [`group`]: every coordinator is a member of a group (Raft through `openraft`; of one
//!   in simple mode): the leader runs the above with its flushes and reports committed
//!   through the group's log, its `Durable` (primes in it as base64: [`compact`]).
//! - [`web`]: the optional dashboard (HTML with live updates, JSON, Prometheus metrics:
//!   `web/metrics.rs`; its connection cap: `web/capped.rs`), and beside it the member's
//!   results, read-only ([`results`]; their endpoints: `web/results.rs`).
//!
//! Files and commands:
//! - [`primes`]: `primes.txt` with its dedup set; torn-tail repair on open; append + fsync;
//!   reading its lines and ledger (`primes/lines.rs`), its checkpoint (`primes/checkpoint.rs`),
//!   merging another primes file in (`primes/merge.rs`).
//! - [`report`]: atomic per-file reports in `data/output/`.
//! - [`spare`]: the report files a `--fresh` start cleared, written over by new reports
//!   instead of creating files (`data/spare-reports/`).
//! - [`results`]: results without a shared disk: which member to read them from, and the
//!   `coordinator results` command (an HTTP client of the members' endpoints).
//! - [`verify`]: the consistency check of a snapshot (each task in exactly one place).
//! - [`status`]: the `coordinator status` command (text, JSON, live view).
//! - [`members`]: each group member's view of itself (a file beside the status file,
//!   written by the member and by the others, which ask it over the Raft port) and what
//!   status concludes from them: who is up, who leads or why no one does.
//! - [`crash`]: deliberate crashes at named points for recovery tests (`PRIMES_CRASH_AT`),
//!   slow points (`PRIMES_SLOW_AT`) and late answers to the leader (`PRIMES_SLOW_ANSWERS`).

pub use proto::compact;
pub mod core;
pub mod crash;
pub mod durable;
pub mod flusher;
pub mod group;
pub mod inputs;
pub mod jobs;
pub mod listing;
pub mod machine;
pub mod members;
pub mod primes;
pub mod ranges;
pub mod report;
pub mod results;
pub mod server;
pub mod snapshot;
pub mod spare;
pub mod state;
pub mod status;
pub mod verify;
pub mod web;
