//! The worker: parses integer files and finds their primes.
//!
//! - [`parse`]: one input line on bytes to a value, blank, or invalid with a reason
//!   (DESIGN.md 1.3), with a SWAR fast path for machine words.
//! - [`prime`]: exact primality below 2^64 (sieve, trial division, BPSW) and BPSW above,
//!   with an interleaved batch test for machine words.
//! - [`scan`]: whole inputs (buffers or streams) split at newlines and scanned in parallel
//!   with rayon; counts, first invalid lines and primes.
//! - [`check`]: the one-shot `worker check FILE...` command, the single-process baseline.
//! - [`gen`]: generation work without input files: primes or their count in a range
//!   (segmented sieve), the prime counting function and the n-th prime, big products.
//! - [`kinds`]: the generation job kinds, one module each behind one trait (line, plan,
//!   computation, report), registered in one list; the coordinator plans and reports
//!   through it too.
//! - [`chunk`]: one assigned chunk of a file: its line-aligned byte range, scanned.
//! - [`tasks`]: the cluster worker's decisions without I/O: tasks held and their phases,
//!   which executor takes which, cancellation, snapshot records, progress.
//! - [`run`]: the cluster worker's I/O: settings and failover between coordinators
//!   (`run.rs`), one coordinator session with registration, heartbeats and markers
//!   (`run/session.rs`), the executors that fetch, scan and send (`run/executor.rs`), and
//!   the AFS clients they fetch through (`run/inputs.rs`).

pub mod check;
pub mod chunk;
pub mod gen;
pub mod kinds;
pub mod parse;
pub mod prime;
pub mod run;
pub mod scan;
pub mod tasks;
