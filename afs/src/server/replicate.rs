//! Replication, on a primary: one loop per backup lists the backup, pushes every file whose
//! version differs, deletes what the primary no longer has, then waits for the next change
//! (reconnecting with backoff while the backup is away).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use proto::auth::client_handshake;
use proto::{Connection, ProtoError};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::send::stream_file;
use super::Shared;
use crate::msg::{FileInfo, Reply, Request, Role};
use crate::SERVICE;

/// Reads the next reply, skipping callback breaks (a replicator holds no cache).
async fn next_reply(conn: &mut Connection, limit: Duration) -> Result<Reply, ProtoError> {
    loop {
        match conn.expect_msg::<Reply>(limit).await? {
            Reply::CallbackBreak { .. } => continue,
            other => return Ok(other),
        }
    }
}

pub(super) async fn replicate_loop(shared: Arc<Shared>, addr: String, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = replicate_session(&shared, &addr, &shutdown);
        match session.await {
            Ok(()) => return,
            Err(e) => debug!(backup = %addr, error = %e, "replication session ended; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One connection to one backup: sync everything, then again after every change.
async fn replicate_session(
    shared: &Arc<Shared>,
    addr: &str,
    shutdown: &CancellationToken,
) -> Result<(), ProtoError> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| ProtoError::Timeout(Duration::from_secs(2)))??;
    let mut conn = Connection::new(stream).with_max_line(crate::client::MAX_LISTING_LINE);
    client_handshake(&mut conn, &shared.cfg.key, SERVICE).await?;
    conn.send(&Request::Hello {
        client_id: format!("replicator-{}", shared.cfg.id),
    })
    .await?;
    match next_reply(&mut conn, Duration::from_secs(5)).await? {
        Reply::Welcome {
            role: Role::Backup, ..
        } => {}
        other => {
            return Err(ProtoError::Peer(format!(
                "{addr} is not a backup: {other:?}"
            )))
        }
    }
    info!(backup = %addr, "replicating to backup");
    let mut changes = shared.changes.subscribe();
    loop {
        changes.borrow_and_update();
        conn.send(&Request::List {}).await?;
        let theirs = match next_reply(&mut conn, Duration::from_secs(60)).await? {
            Reply::Listing { files } => files,
            other => {
                return Err(ProtoError::Peer(format!(
                    "unexpected reply to list: {other:?}"
                )))
            }
        };
        let store = shared.store.clone();
        let ours = tokio::task::spawn_blocking(move || store.list())
            .await
            .unwrap_or_default();
        let their_versions: HashMap<&str, &str> = theirs
            .iter()
            .map(|f| (f.path.as_str(), f.version.as_str()))
            .collect();
        let our_paths: HashSet<&str> = ours.iter().map(|f| f.path.as_str()).collect();
        let mut pushed = 0;
        for f in &ours {
            if their_versions.get(f.path.as_str()) == Some(&f.version.as_str()) {
                continue;
            }
            push_file(shared, &mut conn, f).await?;
            pushed += 1;
        }
        for f in &theirs {
            if !our_paths.contains(f.path.as_str()) {
                conn.send(&Request::ReplicateDelete {
                    path: f.path.clone(),
                })
                .await?;
                next_reply(&mut conn, Duration::from_secs(30)).await?;
                pushed += 1;
            }
        }
        if pushed > 0 {
            info!(backup = %addr, changes = pushed, "backup brought up to date");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = changes.changed() => if r.is_err() { return Ok(()) },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn push_file(shared: &Shared, conn: &mut Connection, f: &FileInfo) -> Result<(), ProtoError> {
    let Ok((_, real)) = shared.store.resolve_existing(&f.path) else {
        return Ok(()); // gone since the listing; the next round deletes it
    };
    let Ok(mut file) = std::fs::File::open(&real) else {
        return Ok(());
    };
    conn.write_msg(&Request::Replicate {
        path: f.path.clone(),
        size: f.size,
        version: f.version.clone(),
    })
    .await?;
    // A file that shrank since the listing is padded; the backup then checks the version,
    // refuses it, and the next round (triggered by this very change) sends the new one.
    stream_file(conn, &mut file, 0, f.size, None).await?;
    conn.flush().await?;
    match next_reply(conn, Duration::from_secs(120)).await? {
        Reply::Stored { .. } => Ok(()),
        Reply::Error { code, message } => {
            warn!(path = f.path, ?code, message, "backup refused a replica");
            Err(ProtoError::Peer(message))
        }
        other => Err(ProtoError::Peer(format!(
            "unexpected reply to replicate: {other:?}"
        ))),
    }
}
