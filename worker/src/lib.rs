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
//! - [`run`]: the cluster worker: coordinator session, heartbeats, task execution through
//!   the AFS client, snapshot markers.

pub mod check;
pub mod chunk;
pub mod parse;
pub mod prime;
pub mod run;
pub mod scan;
