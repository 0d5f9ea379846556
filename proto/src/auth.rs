//! The cluster key and the challenge–response handshake that opens every connection.
//!
//! ```text
//! server -> {"type":"challenge","protocol":1,"service":"coordinator","nonce":"<32 hex bytes>"}
//! client -> {"type":"auth","protocol":1,"client_nonce":"<hex>","mac":"<hex HMAC-SHA256>"}
//! server -> {"type":"auth_ok","mac":"<hex>"}      or {"type":"auth_error","message":"..."} + close
//! ```
//! The client's MAC covers the service name and both nonces; the server's covers them in
//! another order, so each side proves it holds the key, the key never crosses the wire, and a
//! recorded handshake cannot be replayed (the server's nonce is fresh every time).

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::conn::{Connection, ProtoError};
use crate::PROTOCOL_VERSION;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a generated key.
pub const KEY_BYTES: usize = 32;

/// How long either side waits for the other's handshake message.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Environment variable holding the key in hex (takes precedence over a key file).
pub const KEY_ENV: &str = "PRIMES_CLUSTER_KEY";

/// Errors loading a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read cluster key file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write cluster key file {path}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cluster key {origin} is not valid: {reason}")]
    Invalid { origin: String, reason: String },
}

/// The shared secret of a cluster. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey(<{} bytes>)", self.0.len())
    }
}

impl ClusterKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = vec![0u8; KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut k);
        ClusterKey(k)
    }

    /// Parses a hex key (whitespace around it ignored); at least 16 bytes.
    pub fn from_hex(s: &str, origin: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(s.trim()).map_err(|e| KeyError::Invalid {
            origin: origin.to_string(),
            reason: format!("not hex: {e}"),
        })?;
        if bytes.len() < 16 {
            return Err(KeyError::Invalid {
                origin: origin.to_string(),
                reason: format!("{} bytes, need at least 16", bytes.len()),
            });
        }
        Ok(ClusterKey(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// Reads a key file (hex).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let s = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_hex(&s, &format!("in {}", path.display()))
    }

    /// The key from the environment variable [`KEY_ENV`] if set, else from `path`.
    pub fn resolve(path: &Path) -> Result<Self, KeyError> {
        match std::env::var(KEY_ENV) {
            Ok(hex) if !hex.trim().is_empty() => Self::from_hex(&hex, &format!("in ${KEY_ENV}")),
            _ => Self::load(path),
        }
    }

    /// Loads `path`, creating it with a new key (mode 0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        if path.exists() {
            return Self::load(path);
        }
        let key = Self::generate();
        let werr = |source| KeyError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(werr)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        use std::io::Write;
        match opts.open(path) {
            Ok(mut f) => {
                f.write_all(key.to_hex().as_bytes()).map_err(werr)?;
                f.sync_all().map_err(werr)?;
                Ok(key)
            }
            // Someone else created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(werr(e)),
        }
    }

    fn mac(&self, parts: &[&str]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut m = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        for p in parts {
            m.update(&(p.len() as u64).to_le_bytes());
            m.update(p.as_bytes());
        }
        m
    }

    /// HMAC-SHA256 of `parts` (each length-prefixed) under this key, in hex: a proof of
    /// holding the key, bound to the parts (nonces, a purpose).
    pub fn sign(&self, parts: &[&str]) -> String {
        hex::encode(self.mac(parts).finalize().into_bytes())
    }

    /// Constant-time check of a hex MAC made by [`ClusterKey::sign`].
    pub fn verify(&self, parts: &[&str], mac_hex: &str) -> bool {
        match hex::decode(mac_hex) {
            Ok(bytes) => self.mac(parts).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

/// The handshake messages.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Handshake {
    Challenge {
        protocol: u32,
        service: String,
        nonce: String,
    },
    Auth {
        protocol: u32,
        client_nonce: String,
        mac: String,
    },
    AuthOk {
        mac: String,
    },
    AuthError {
        message: String,
    },
}

fn nonce() -> String {
    let mut n = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut n);
    hex::encode(n)
}

const DOMAIN: &str = "primes-auth-v1";

/// Server side: challenge the peer and check its answer. On failure the peer is told why
/// (without detail that helps an attacker) and the caller MUST close the connection.
pub async fn server_handshake(
    conn: &mut Connection,
    key: &ClusterKey,
    service: &str,
) -> Result<(), ProtoError> {
    let server_nonce = nonce();
    conn.send(&Handshake::Challenge {
        protocol: PROTOCOL_VERSION,
        service: service.to_string(),
        nonce: server_nonce.clone(),
    })
    .await?;
    let reply: Handshake = conn.expect_msg(HANDSHAKE_TIMEOUT).await?;
    let (client_nonce, mac) = match reply {
        Handshake::Auth {
            protocol,
            client_nonce,
            mac,
        } => {
            if protocol != PROTOCOL_VERSION {
                let msg = format!(
                    "protocol {protocol} not supported, this server speaks {PROTOCOL_VERSION}"
                );
                let _ = conn
                    .send(&Handshake::AuthError {
                        message: msg.clone(),
                    })
                    .await;
                return Err(ProtoError::Auth(msg));
            }
            (client_nonce, mac)
        }
        other => {
            let _ = conn
                .send(&Handshake::AuthError {
                    message: "expected an auth message".into(),
                })
                .await;
            return Err(ProtoError::Auth(format!("expected auth, got {other:?}")));
        }
    };
    if client_nonce.len() < 32
        || !key.verify(
            &[DOMAIN, "client", service, &server_nonce, &client_nonce],
            &mac,
        )
    {
        let _ = conn
            .send(&Handshake::AuthError {
                message: KEY_REFUSED.into(),
            })
            .await;
        return Err(ProtoError::WrongKey(
            "peer does not hold the cluster key".into(),
        ));
    }
    let mac = key.sign(&[DOMAIN, "server", service, &client_nonce, &server_nonce]);
    conn.send(&Handshake::AuthOk { mac }).await?;
    Ok(())
}

/// What a server answers a client whose proof does not match its key (the client then
/// knows that the keys differ, not that something else went wrong).
const KEY_REFUSED: &str = "bad cluster key";

/// Client side: answer the server's challenge and check that the server holds the key too.
pub async fn client_handshake(
    conn: &mut Connection,
    key: &ClusterKey,
    service: &str,
) -> Result<(), ProtoError> {
    let challenge: Handshake = conn.expect_msg(HANDSHAKE_TIMEOUT).await?;
    let server_nonce = match challenge {
        Handshake::Challenge {
            protocol,
            service: s,
            nonce,
        } => {
            if protocol != PROTOCOL_VERSION {
                return Err(ProtoError::Auth(format!(
                    "server speaks protocol {protocol}, we speak {PROTOCOL_VERSION}"
                )));
            }
            if s != service {
                return Err(ProtoError::Auth(format!(
                    "expected a {service} server, found a {s} server"
                )));
            }
            nonce
        }
        other => {
            return Err(ProtoError::Auth(format!(
                "expected a challenge, got {other:?}"
            )))
        }
    };
    let client_nonce = nonce();
    let mac = key.sign(&[DOMAIN, "client", service, &server_nonce, &client_nonce]);
    conn.send(&Handshake::Auth {
        protocol: PROTOCOL_VERSION,
        client_nonce: client_nonce.clone(),
        mac,
    })
    .await?;
    match conn.expect_msg::<Handshake>(HANDSHAKE_TIMEOUT).await? {
        Handshake::AuthOk { mac } => {
            if key.verify(
                &[DOMAIN, "server", service, &client_nonce, &server_nonce],
                &mac,
            ) {
                Ok(())
            } else {
                Err(ProtoError::WrongKey(
                    "server does not hold the cluster key".into(),
                ))
            }
        }
        Handshake::AuthError { message } if message == KEY_REFUSED => {
            Err(ProtoError::WrongKey(format!("server refused: {message}")))
        }
        Handshake::AuthError { message } => {
            Err(ProtoError::Auth(format!("server refused: {message}")))
        }
        other => Err(ProtoError::Auth(format!(
            "unexpected handshake reply {other:?}"
        ))),
    }
}

/// The end of [`authenticate`]: a connection ready to serve (keep the permit while it
/// lives), or one refused because the authenticated connections are all taken (tell the
/// peer in the service's own protocol, then close it).
pub enum Admitted {
    Ready(Connection, tokio::sync::OwnedSemaphorePermit),
    Full(Connection),
}

/// Server side of a new connection: the handshake under the pre-auth limits
/// ([`crate::conn::Acceptor`]: short lines, a short deadline, slots of its own), then an
/// authenticated slot and the service's own line limit `max_line`.
pub async fn authenticate(
    admission: crate::conn::Admission,
    stream: tokio::net::TcpStream,
    key: &ClusterKey,
    service: &str,
    max_line: usize,
) -> Result<Admitted, ProtoError> {
    let mut conn = Connection::new(stream).with_max_line(crate::conn::PRE_AUTH_MAX_LINE);
    admission
        .guard(server_handshake(&mut conn, key, service))
        .await?;
    let Some(permit) = admission.admit() else {
        return Ok(Admitted::Full(conn));
    };
    conn.set_max_line(max_line);
    Ok(Admitted::Ready(conn, permit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (Connection, Connection) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (
            Connection::new(c.expect("connect")),
            Connection::new(s.expect("accept").0),
        )
    }

    #[tokio::test]
    /// Same key: both sides succeed. Different key: both fail, saying the keys differ.
    async fn right_and_wrong_key() {
        let k = ClusterKey::generate();
        let (mut c, mut s) = pair().await;
        let (a, b) = tokio::join!(
            client_handshake(&mut c, &k, "afs"),
            server_handshake(&mut s, &k, "afs")
        );
        a.expect("client ok");
        b.expect("server ok");

        let (mut c, mut s) = pair().await;
        let other = ClusterKey::generate();
        let (a, b) = tokio::join!(
            client_handshake(&mut c, &other, "afs"),
            server_handshake(&mut s, &k, "afs")
        );
        // Both know it is the key, not a fault worth retrying.
        assert!(matches!(a, Err(ProtoError::WrongKey(_))), "{a:?}");
        assert!(matches!(b, Err(ProtoError::WrongKey(_))), "{b:?}");
    }

    #[tokio::test]
    /// A recorded client answer replayed on a new connection is refused (fresh nonce).
    async fn replay_is_refused() {
        let k = ClusterKey::generate();
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = {
            let k = k.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for _ in 0..2 {
                    let (s, _) = l.accept().await.expect("accept");
                    let mut s = Connection::new(s);
                    results.push(server_handshake(&mut s, &k, "coordinator").await.is_ok());
                }
                results
            })
        };
        // First connection: a real client, but we record what it sends by proxying by hand.
        let s1 = TcpStream::connect(addr).await.expect("connect");
        let (r1, mut w1) = s1.into_split();
        let mut r1 = BufReader::new(r1);
        let mut challenge = String::new();
        r1.read_line(&mut challenge).await.expect("challenge");
        let nonce = match serde_json::from_str::<Handshake>(&challenge).expect("json") {
            Handshake::Challenge { nonce, .. } => nonce,
            other => panic!("{other:?}"),
        };
        let client_nonce = "ab".repeat(32);
        let mac = k.sign(&[DOMAIN, "client", "coordinator", &nonce, &client_nonce]);
        let auth = serde_json::to_string(&Handshake::Auth {
            protocol: PROTOCOL_VERSION,
            client_nonce,
            mac,
        })
        .expect("json")
            + "\n";
        w1.write_all(auth.as_bytes()).await.expect("send");
        let mut ok = String::new();
        r1.read_line(&mut ok).await.expect("auth ok");
        // Second connection: replay the same auth line.
        let s2 = TcpStream::connect(addr).await.expect("connect");
        let (r2, mut w2) = s2.into_split();
        let mut r2 = BufReader::new(r2);
        let mut challenge2 = String::new();
        r2.read_line(&mut challenge2).await.expect("challenge");
        w2.write_all(auth.as_bytes()).await.expect("send");
        let results = server.await.expect("server task");
        assert_eq!(results, vec![true, false]);
    }

    #[test]
    /// Keys parse from hex, short or non-hex keys are refused, Debug hides the key.
    fn key_parsing() {
        let k = ClusterKey::generate();
        let back =
            ClusterKey::from_hex(&format!(" {} \n", k.to_hex()), "test").expect("round trip");
        assert_eq!(back.0, k.0);
        assert!(ClusterKey::from_hex("abcd", "test").is_err());
        assert!(ClusterKey::from_hex("zz", "test").is_err());
        assert!(!format!("{k:?}").contains(&k.to_hex()));
    }
}
