//! What the coordinator, the workers and the file servers share: framing, authentication and
//! the coordinator–worker messages.
//!
//! - [`conn`]: a TCP connection carrying one JSON object per line with a maximum line length,
//!   plus raw byte bodies (file contents never travel as JSON).
//! - [`auth`]: the cluster key and the HMAC challenge–response every connection starts with.
//! - [`msg`]: the coordinator–worker messages (PROTOCOL.md lists every one).
//! - [`files`]: walking a folder's visible files and replacing a file atomically.
//! - [`process`]: shutdown on SIGINT/SIGTERM and address files, for the binaries.

pub mod auth;
pub mod compact;
pub mod conn;
pub mod files;
pub mod jobs;
pub mod msg;
pub mod process;

pub use auth::ClusterKey;

/// Locks a mutex, going on if a holder panicked: every mutex in this project guards state
/// that a panicking holder leaves no worse than stopping would (maps, caches, counters),
/// and one panicked task must not take the whole process down with it.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
pub use conn::{Connection, ProtoError};

/// Version of the wire protocol, sent in the first message of every connection.
pub const PROTOCOL_VERSION: u32 = 1;
