//! Sending file bodies: whole files hashed as they are streamed, ranges (by `sendfile`
//! where there is one), each followed by its trailer (`file_end`, or `error: changed` when
//! the file changed while it was sent), and zero padding that keeps the framing when a
//! file ends early.

use std::sync::atomic::Ordering;

use proto::{Connection, ProtoError};

use super::{reply_error, Shared};
use crate::msg::{ErrorCode, FileInfo, Reply};
use crate::store::{Fingerprint, Hasher};

/// Opens a served file, or says why not (the reply is already sent on `Err`).
async fn open_served(
    shared: &Shared,
    conn: &mut Connection,
    rel: &str,
) -> Result<Option<std::fs::File>, ProtoError> {
    let (_, real) = match shared.store.resolve_existing(rel) {
        Ok(x) => x,
        Err(e) => {
            reply_error(conn, &e).await?;
            return Ok(None);
        }
    };
    match std::fs::File::open(&real) {
        Ok(f) => Ok(Some(f)),
        Err(e) => {
            conn.send(&Reply::Error {
                code: ErrorCode::NotFound,
                message: format!("opening {rel}: {e}"),
            })
            .await?;
            Ok(None)
        }
    }
}

/// Writes exactly `len` bytes of `file` from `start` as a raw body, hashing them into
/// `hasher` if given. Returns true if the file ended (or failed) early: the rest is padded
/// with zeros to keep the framing, and the caller must say the body is bad. Reads are plain
/// blocking reads in pieces of at most 1 MiB (page-cache copies, far shorter than handing
/// each piece to a blocking thread).
pub(super) async fn stream_file(
    conn: &mut Connection,
    file: &mut std::fs::File,
    start: u64,
    len: u64,
    mut hasher: Option<&mut Hasher>,
) -> Result<bool, ProtoError> {
    use std::io::{Read, Seek, SeekFrom};
    if start > 0 && file.seek(SeekFrom::Start(start)).is_err() {
        write_zeros(conn, len).await?;
        return Ok(true);
    }
    let mut buf = vec![0u8; len.min(1 << 20) as usize];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want]).unwrap_or(0);
        if n == 0 {
            write_zeros(conn, left).await?;
            return Ok(true);
        }
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&buf[..n]);
        }
        conn.write_raw(&buf[..n]).await?;
        left -= n as u64;
    }
    Ok(false)
}

/// Writes `len` zero bytes as body bytes: what keeps the framing when a file ends early.
async fn write_zeros(conn: &mut Connection, len: u64) -> Result<(), ProtoError> {
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        conn.write_raw(&zeros[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

/// Sends a range body with `sendfile` where there is one (no copy through this process;
/// ranges are not hashed, so the bytes need not pass through here), else by reading.
async fn send_range_body(
    conn: &mut Connection,
    file: &mut std::fs::File,
    start: u64,
    len: u64,
) -> Result<bool, ProtoError> {
    #[cfg(target_os = "linux")]
    {
        let sent = conn.write_file_range(file, start, len).await?;
        if sent == len {
            return Ok(false);
        }
        // The file ended early.
        write_zeros(conn, len - sent).await?;
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    stream_file(conn, file, start, len, None).await
}

/// Streams `len` bytes of a file from `start` (both clamped to the file): `range` header,
/// the raw bytes, then `file_end` if the file still has the fingerprint its version was
/// computed for, else `error: changed`. Ranges are not hashed (that would cost a pass over
/// the whole file per range); the fingerprint (size, mtime, inode) stands for the content.
pub(super) async fn send_range(
    shared: &Shared,
    conn: &mut Connection,
    rel: &str,
    fp: Fingerprint,
    version: Option<String>,
    start: u64,
    len: u64,
) -> Result<(), ProtoError> {
    let Some(mut file) = open_served(shared, conn, rel).await? else {
        return Ok(());
    };
    let start = start.min(fp.size);
    let len = len.min(fp.size - start);
    let pin = fp.token();
    conn.write_msg(&Reply::Range {
        path: rel.to_string(),
        start,
        len,
        size: fp.size,
        version: version.clone(),
        pin: pin.clone(),
    })
    .await?;
    let short = send_range_body(conn, &mut file, start, len).await?;
    shared
        .stats
        .body_bytes_sent
        .fetch_add(len, Ordering::Relaxed);
    if short || shared.store.fingerprint(rel) != Some(fp) {
        conn.send(&Reply::Error {
            code: ErrorCode::Changed,
            message: format!("{rel} changed while it was being sent; fetch again"),
        })
        .await
    } else {
        conn.send(&Reply::FileEnd {
            version: version.unwrap_or(pin),
        })
        .await
    }
}

/// Streams a whole file: header, exactly `size` raw bytes, then `file_end` with the version
/// of the bytes actually sent, or `error: changed` if the file changed during the transfer.
pub(super) async fn send_file(
    shared: &Shared,
    conn: &mut Connection,
    info: &FileInfo,
) -> Result<(), ProtoError> {
    let Some(mut file) = open_served(shared, conn, &info.path).await? else {
        return Ok(());
    };
    conn.write_msg(&Reply::File {
        path: info.path.clone(),
        size: info.size,
        version: info.version.clone(),
    })
    .await?;
    let mut hasher = Hasher::default();
    let short = stream_file(conn, &mut file, 0, info.size, Some(&mut hasher)).await?;
    shared
        .stats
        .body_bytes_sent
        .fetch_add(info.size, Ordering::Relaxed);
    let sent = hasher.finish();
    if short || sent != info.version {
        conn.send(&Reply::Error {
            code: ErrorCode::Changed,
            message: format!("{} changed while it was being sent; fetch again", info.path),
        })
        .await
    } else {
        conn.send(&Reply::FileEnd { version: sent }).await
    }
}
