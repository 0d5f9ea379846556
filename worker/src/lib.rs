//! The worker: parses integer files and finds their primes.
//!
//! - [`parse`]: one input line on bytes to a value, blank, or invalid with a reason
//!   (DESIGN.md 1.3), with a SWAR fast path for machine words.
//! - [`prime`]: exact primality below 2^64 (sieve, trial division, BPSW) and BPSW above,
//!   with an interleaved batch test for machine words.
//! - [`scan`]: whole inputs (buffers or streams) split at newlines and scanned in parallel
//!   with rayon; counts, first invalid lines and primes.
//! - [`check`]: the one-shot `worker check FILE...` command, the single-process baseline.
//! - [`chunk`]: one assigned chunk of a file: its line-aligned byte range, scanned.
//! - [`tasks`]: the cluster worker's decisions without I/O: tasks held and their phases,
//!   which executor takes which, cancellation, snapshot records, progress.
//! - [`run`]: the cluster worker's I/O: coordinator session, heartbeats, fetching through
//!   the AFS client, scanning, sending results, answering markers.

pub mod check;
pub mod chunk;
pub mod gen;
pub mod parse;
pub mod prime;
pub mod run;
pub mod scan;
pub mod tasks;
