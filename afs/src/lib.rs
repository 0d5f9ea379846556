//! AFS: a whole-file caching file service with callbacks and primary–backup replication.
//!
//! - [`msg`]: the request and reply messages (one JSON object per line; file bodies travel
//!   as raw bytes after their header line, never inside JSON).
//! - [`names`]: what client and server share: acceptable paths, content versions.
//! - [`store`]: a server's storage root: safe path resolution (nothing outside the root),
//!   content versions cached by size and mtime, atomic writes.
//! - [`server`]: the accept loop, one task per connection, callback promises and their
//!   breaks, change scanning, and (on a primary) replication to the backups.
//! - [`probe`]: one short connection telling whether a server is up and its role (the
//!   coordinator's dashboard).
//! - [`client`]: the client library: `open(path)` returns a local cached copy, revalidated by
//!   version, with failover from the primary to the backups and an LRU size limit.

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
