//! AFS: a whole-file caching file service with callbacks and primary–backup replication.
//!
//! - [`msg`]: the request and reply messages (one JSON object per line; file bodies travel
//!   as raw bytes after their header line, never inside JSON).
//! - [`names`]: what client and server share: acceptable paths, content versions.
//! - [`store`]: a server's storage root: safe path resolution (nothing outside the root),
//!   content versions cached by size and mtime, atomic writes.
//! - [`server`]: the accept loop and what its parts share; `server/serve.rs` one
//!   connection's requests, `server/send.rs` file and range bodies, `server/callbacks.rs`
//!   callback promises and their breaks, `server/scan.rs` change scanning of the root,
//!   `server/replicate.rs` (on a primary) replication to the backups, `server/local.rs`
//!   short-circuit local reads (ranges answered with the open file over a Unix socket).
//! - [`probe`]: one short connection telling whether a server is up and its role (the
//!   coordinator's dashboard).
//! - [`client`]: the client library: `open(path)` returns a local cached copy, revalidated by
//!   version, with failover from the primary to the backups (`client.rs`: the client and its
//!   connection); `client/cache.rs` the cache index and LRU eviction (disk and memory),
//!   `client/fetch.rs` whole-file fetches, single or pipelined, `client/ranges.rs` range
//!   reads, `client/local.rs` range reads from the open file a server on this host passes.
//! - [`listing`]: watching a server's listing (the coordinator's inputs without a shared
//!   disk).

pub mod client;
pub mod listing;
pub mod msg;
pub mod names;
pub mod probe;
pub mod server;
pub mod store;

/// Service name used in the handshake, so a worker cannot mistake a file server for the
/// coordinator or the reverse.
pub const SERVICE: &str = "afs";
