//! AFS messages. Every connection starts with the cluster-key handshake (proto::auth), then
//! the client sends `hello` and gets `welcome`. Examples of every message:
//!
//! ```text
//! -> {"type":"hello","client_id":"worker-1"}
//! <- {"type":"welcome","server_id":"server-1","role":"primary"}
//! <- {"type":"welcome","server_id":"server-1","role":"primary","local":{"path":"/srv/run/afs-1.sock","token":"5f2c..."}}
//! -> {"type":"fetch","path":"a.txt","have_version":null}
//! <- {"type":"file","path":"a.txt","size":12,"version":"9c1e..."}  then 12 raw bytes, then
//! <- {"type":"file_end","version":"9c1e..."}      (version of the bytes actually sent)
//! -> {"type":"fetch","path":"a.txt","have_version":"9c1e..."}
//! <- {"type":"not_modified","path":"a.txt","version":"9c1e..."}
//! <- {"type":"callback_break","path":"a.txt"}     (unsolicited, when a.txt changes)
//! -> {"type":"fetch_range","path":"a.txt","start":4,"len":4,"version":"9c1e..."}
//! <- {"type":"range","path":"a.txt","start":4,"len":4,"size":12,"version":"9c1e...","pin":"fp-c-1879a2b3c4d5e6f7-2a"}  then 4 raw bytes, then
//! <- {"type":"file_end","version":"9c1e..."}      (or error "changed" if the file changed)
//! -> {"type":"stat","path":"a.txt"}
//! <- {"type":"stat","path":"a.txt","size":12,"version":"9c1e..."}
//! -> {"type":"list"}
//! <- {"type":"listing","files":[{"path":"a.txt","size":12,"version":"9c1e..."}]}
//! -> {"type":"store","path":"b.txt","size":3}     then 3 raw bytes (primary only)
//! <- {"type":"stored","path":"b.txt","version":"77ab..."}
//! -> {"type":"delete","path":"b.txt"}             (primary only)
//! <- {"type":"deleted","path":"b.txt"}
//! -> {"type":"replicate","path":"b.txt","size":3,"version":"77ab..."} then 3 raw bytes (backup only)
//! -> {"type":"replicate_delete","path":"b.txt"}   (backup only)
//! -> {"type":"ping"}
//! <- {"type":"pong"}
//! <- {"type":"error","code":"not_found","message":"no such file: c.txt"}
//! ```
//!
//! A server started with a local socket offers it in `welcome` (`local`: its absolute path
//! and a random token naming this run of the server, told only to authenticated clients).
//! A client on the same host connects to it and both prove the cluster key, bound to the
//! token and to each other's nonce (the server first: a client never trusts a descriptor
//! from a process that does not hold the key). Then the client asks for ranges there: the
//! server answers with the range's header and the open file itself (its descriptor passed
//! with the line, `SCM_RIGHTS`), and the client reads the bytes from the page cache with no
//! copy through either process or a socket. The client then checks that the file it was
//! given still has the fingerprint in the header (same inode, size, change and modification
//! times): the bytes are that state's. Lines on the local socket:
//!
//! ```text
//! => {"type":"hello","nonce":"8d1f..."}
//! <= {"type":"welcome","nonce":"33ab...","proof":"c0de..."}
//! => {"type":"prove","proof":"f00d..."}
//! <= {"type":"ready"}
//! => {"type":"open_range","path":"a.txt","start":4,"len":4,"version":null}
//! <= {"type":"range","path":"a.txt","start":4,"len":4,"size":12,"version":"9c1e...","pin":"fp-c-1879a2b3c4d5e6f7-1879a2b3c4d5e6f7-2a","fingerprint":{"size":12,"mtime_ns":1,"ctime_ns":1,"inode":42}}  with the descriptor
//! <= {"type":"error","code":"changed","message":"a.txt is no longer the version asked for"}
//! ```

use serde::{Deserialize, Serialize};

/// Longest control line (file bodies are not lines and have their own limit).
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Hello {
        client_id: String,
    },
    Fetch {
        path: String,
        have_version: Option<String>,
    },
    /// `len` bytes from `start` (clamped to the file), not cached by the client and
    /// without a callback promise; `version`, if given, must still name the file's state:
    /// its content version or its pin (see `Reply::Range`).
    FetchRange {
        path: String,
        start: u64,
        len: u64,
        version: Option<String>,
    },
    Stat {
        path: String,
    },
    List {},
    /// The files and their fingerprints (stat only, no hashing), with a promise: the
    /// server pushes `list_changed` once when any file appears, changes or goes. The
    /// coordinator learns its inputs this way, without a disk shared with the server.
    WatchList {},
    Store {
        path: String,
        size: u64,
    },
    Delete {
        path: String,
    },
    Replicate {
        path: String,
        size: u64,
        version: String,
    },
    ReplicateDelete {
        path: String,
    },
    Ping {},
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Backup,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedFile {
    pub path: String,
    pub fingerprint: proto::files::Fingerprint,
    /// The content version, if the server knows it without hashing (it hashed this state of
    /// the file before): the same content on another server has the same version, while
    /// its fingerprint (mtime, inode) is that server's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
    pub version: String,
}

/// Error codes, named for what the client does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The file does not exist here (another replica may have it).
    NotFound,
    /// The path is not allowed (outside the root, hidden, malformed). Do not retry.
    Forbidden,
    /// This server does not take that write (a backup refusing a client write).
    ReadOnly,
    /// Over the file-size limit. Do not retry.
    TooLarge,
    /// The request was malformed; the connection is closed.
    BadRequest,
    /// The file changed while it was being sent; fetch again.
    Changed,
    /// The server failed (disk error); another replica may do better.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    Welcome {
        server_id: String,
        role: Role,
        /// The server's local socket, for clients on its host (see the module doc).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        local: Option<LocalOffer>,
    },
    File {
        path: String,
        size: u64,
        version: String,
    },
    /// Header of a range; `len` raw bytes follow, then `file_end` (with `version`, or `pin`
    /// when there is no version yet) or `error: changed`. `version` is the content version
    /// when the server has computed it; a large file's first ranges are served while it is
    /// being hashed, with only `pin`, a token of the file's state on this server.
    Range {
        path: String,
        start: u64,
        len: u64,
        size: u64,
        version: Option<String>,
        pin: String,
    },
    FileEnd {
        version: String,
    },
    NotModified {
        path: String,
        version: String,
    },
    Stat {
        path: String,
        size: u64,
        version: String,
    },
    Listing {
        files: Vec<FileInfo>,
    },
    /// Answer to `watch_list`.
    FileList {
        files: Vec<ListedFile>,
    },
    /// Pushed once after a `watch_list` when the listing has changed since.
    ListChanged {},
    Stored {
        path: String,
        version: String,
    },
    Deleted {
        path: String,
    },
    Pong {},
    CallbackBreak {
        path: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// A server's local socket, offered in `welcome` to clients that passed the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalOffer {
    /// Absolute path of the socket on the server's host.
    pub path: String,
    /// Random for each run of the server: both ends of the local socket bind their proofs
    /// of the cluster key to it, so a client that reaches another server's socket at the
    /// same path (in another container) finds out and reads over TCP.
    pub token: String,
}

/// Requests on the local socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LocalRequest {
    /// The first line: the client's nonce for the server's proof.
    Hello { nonce: String },
    /// The client's proof: the cluster key's MAC of ("afs-local client", token, the
    /// server's nonce).
    Prove { proof: String },
    /// The same as `fetch_range`, answered with the open file instead of its bytes.
    OpenRange {
        path: String,
        start: u64,
        len: u64,
        version: Option<String>,
    },
}

/// Replies on the local socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LocalReply {
    /// The server's nonce, and its proof: the cluster key's MAC of ("afs-local server",
    /// token, the client's nonce).
    Welcome {
        nonce: String,
        proof: String,
    },
    /// The client's proof holds: ranges may be asked for.
    Ready {},
    /// `start` and `len` clamped to the file, as in `range`; the line carries the open file
    /// (`SCM_RIGHTS`), which had `fingerprint` when it was opened.
    Range {
        path: String,
        start: u64,
        len: u64,
        size: u64,
        version: Option<String>,
        pin: String,
        fingerprint: proto::files::Fingerprint,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// Longest line on the local socket.
pub const MAX_LOCAL_LINE: usize = 64 << 10;

/// The purposes bound into the local socket's proofs (one side's is never the other's).
pub const PROOF_SERVER: &str = "afs-local server";
pub const PROOF_CLIENT: &str = "afs-local client";

#[cfg(test)]
mod tests {
    use super::*;

    /// `json` decodes strictly into a `T`, which encodes and decodes back to itself.
    fn round_trip<T>(json: &str)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let m: T = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        let back = serde_json::to_string(&m).expect("encode");
        assert_eq!(serde_json::from_str::<T>(&back).expect("decode"), m);
    }

    #[test]
    /// Every example in the module doc decodes (strictly) into a message and back.
    fn doc_examples_decode() {
        let src = include_str!("msg.rs");
        let mut n = 0;
        for line in src.lines() {
            let line = line.trim_start_matches("//!").trim();
            let (dir, rest) = if let Some(r) = line.strip_prefix("->") {
                ("req", r)
            } else if let Some(r) = line.strip_prefix("<-") {
                ("rep", r)
            } else if let Some(r) = line.strip_prefix("=>") {
                ("local_req", r)
            } else if let Some(r) = line.strip_prefix("<=") {
                ("local_rep", r)
            } else {
                continue;
            };
            let json = rest.trim();
            let end = json.rfind('}').map(|i| i + 1).unwrap_or(json.len());
            let json = &json[..end];
            match dir {
                "req" => round_trip::<Request>(json),
                "rep" => round_trip::<Reply>(json),
                "local_req" => round_trip::<LocalRequest>(json),
                _ => round_trip::<LocalReply>(json),
            }
            n += 1;
        }
        assert!(n >= 25, "found {n} examples");
        assert!(serde_json::from_str::<Request>(r#"{"type":"list","extra":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"type":"launch"}"#).is_err());
    }
}
