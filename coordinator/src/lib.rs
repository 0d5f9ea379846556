//! The coordinator: queues input files as chunked tasks, hands them to workers, collects
//! primes, makes them durable, reports each file, and snapshots the whole system.
//!
//! - [`core`]: every scheduling decision without I/O (files, chunks, workers, heartbeats,
//!   retries, what becomes done when), driven by events with the time as an input.
//! - [`server`]: the async shell: accept loop, worker connections, timers, the flusher.
//! - [`inputs`]: watching `data/input` (notify plus periodic scans) and deciding when a file
//!   is stable enough to queue.
//! - [`primes`]: `primes.txt` with its dedup set; torn-tail repair on open; append + fsync.
//! - [`report`]: atomic per-file reports in `data/output/`.
//! - [`snapshot`]: Chandy–Lamport snapshots with channel state, and recovery from them.
//! - [`verify`]: the consistency check of a snapshot (each task in exactly one place).
//! - [`status`]: the `coordinator status` command (text, JSON, live view).
//! - [`web`]: the optional dashboard (HTML with live updates, JSON, Prometheus metrics).
//! - [`crash`]: deliberate crashes at named points for recovery tests (`PRIMES_CRASH_AT`).

pub mod core;
pub mod crash;
pub mod inputs;
pub mod primes;
pub mod report;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod verify;
pub mod web;
