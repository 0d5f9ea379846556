//! Is a file server up, and which role does it play? One short connection: the handshake
//! and a `hello`, answered by `welcome` with the server's id and role.

use std::time::Duration;

use proto::{ClusterKey, Connection, ProtoError};
use serde::Serialize;
use tokio::net::TcpStream;

use crate::msg::{Reply, Request, MAX_LINE};

/// What one probe of a file server found.
#[derive(Serialize, Clone, Debug)]
pub struct ServerProbe {
    pub addr: String,
    pub up: bool,
    pub id: Option<String>,
    pub role: Option<String>,
    pub checked_at: String,
    pub error: Option<String>,
}

/// Probes the server at `addr`, giving up after `limit`.
pub async fn probe(addr: &str, key: &ClusterKey, client_id: &str, limit: Duration) -> ServerProbe {
    let attempt = async {
        let stream = TcpStream::connect(addr).await?;
        let mut c = Connection::new(stream).with_max_line(MAX_LINE);
        proto::auth::client_handshake(&mut c, key, crate::SERVICE).await?;
        c.send(&Request::Hello {
            client_id: client_id.into(),
        })
        .await?;
        match c.expect_msg::<Reply>(limit).await? {
            Reply::Welcome {
                server_id, role, ..
            } => Ok((server_id, role.to_string())),
            other => Err(ProtoError::Peer(format!("unexpected {other:?}"))),
        }
    };
    let result = tokio::time::timeout(limit, attempt).await;
    let (up, id, role, error) = match result {
        Ok(Ok((id, role))) => (true, Some(id), Some(role), None),
        Ok(Err(e)) => (false, None, None, Some(e.to_string())),
        Err(_) => (
            false,
            None,
            None,
            Some(format!("no answer within {limit:?}")),
        ),
    };
    ServerProbe {
        addr: addr.to_string(),
        up,
        id,
        role,
        checked_at: chrono::Utc::now().to_rfc3339(),
        error,
    }
}
