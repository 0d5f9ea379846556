//! Processing one assigned chunk of a local file: find the chunk's line-aligned byte range,
//! scan it, and shape the result for the wire.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use proto::msg::{InvalidLine, MAX_PRIMES_PER_BATCH};

use crate::scan::{scan_reader, ScanConfig, ScanResult};

/// Byte position where the first line starting at or after `at` begins: 0 for 0, else one
/// past the first newline at or after `at - 1` (or the file size if there is none).
fn line_start_at_or_after(f: &mut File, at: u64, size: u64) -> std::io::Result<u64> {
    if at == 0 {
        return Ok(0);
    }
    if at >= size {
        return Ok(size);
    }
    f.seek(SeekFrom::Start(at - 1))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut pos = at - 1;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(size);
        }
        if let Some(k) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(pos + k as u64 + 1);
        }
        pos += n as u64;
    }
}

/// The lines of `bytes` (a whole file in memory) that start in `[start, end)`, the same cut
/// as [`scan_chunk`] makes in a file.
pub fn chunk_of(bytes: &[u8], start: u64, end: u64) -> &[u8] {
    let line_start = |at: u64| -> usize {
        let at = at.min(bytes.len() as u64) as usize;
        if at == 0 || at == bytes.len() {
            return at;
        }
        memchr::memchr(b'\n', &bytes[at - 1..]).map_or(bytes.len(), |k| at + k)
    };
    let from = line_start(start);
    let to = line_start(end);
    &bytes[from..to.max(from)]
}

/// Scans the lines of `path` that start in `[start, end)`. Line numbers in the result count
/// from 1 at the chunk's first line.
pub fn scan_chunk(
    path: &Path,
    start: u64,
    end: u64,
    cfg: &ScanConfig,
) -> std::io::Result<ScanResult> {
    scan_chunk_with_progress(path, start, end, cfg, |_| {})
}

/// [`scan_chunk`], reporting the bytes of the chunk consumed so far as it goes.
pub fn scan_chunk_with_progress(
    path: &Path,
    start: u64,
    end: u64,
    cfg: &ScanConfig,
    progress: impl FnMut(u64),
) -> std::io::Result<ScanResult> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    let from = line_start_at_or_after(&mut f, start, size)?;
    let to = if end >= size {
        size
    } else {
        line_start_at_or_after(&mut f, end, size)?
    };
    if to <= from {
        return Ok(ScanResult::default());
    }
    f.seek(SeekFrom::Start(from))?;
    scan_reader(
        BufReader::with_capacity(1 << 20, f).take(to - from),
        cfg,
        progress,
    )
}

/// The lines of one chunk of a file, read by range from the file servers.
#[derive(Debug)]
pub struct ChunkBytes {
    /// The bytes read, from `start - 1` (or 0) to the end of the chunk's last line.
    pub bytes: Vec<u8>,
    /// The chunk's lines are `bytes[from..to]`.
    pub from: usize,
    pub to: usize,
    /// The file's content version, if the server had computed it by the time of one of
    /// the ranges (every range was read from the same state of the file), and its size.
    pub version: Option<String>,
    pub size: u64,
}

impl ChunkBytes {
    /// The chunk's lines.
    pub fn lines(&self) -> &[u8] {
        &self.bytes[self.from..self.to]
    }
}

/// Bytes read past a chunk's end in its first range, so that the line crossing the end
/// usually arrives with the chunk: extending the buffer afterwards re-allocated and copied
/// the whole chunk (8 MiB by default) for every chunk.
const LOOK_AHEAD: u64 = 4 << 10;

/// Reads the lines of `file` that start in `[start, end)` (the same lines as
/// [`scan_chunk`] on a local copy) by range from the file servers, all from one version.
///
/// They run from one past the first newline at or after `start - 1` to one past the first
/// newline at or after `end - 1`: the first range is `[start - 1, end + LOOK_AHEAD)`, and
/// while the last line is unfinished, pieces of growing size (64 KiB up to 16 MiB) of the
/// same version follow. `Ok(None)` when the line crossing `end` is longer than `max_line`
/// (such a line is invalid anyway, but holding it would need unbounded memory): read the
/// file whole.
pub async fn read_chunk(
    client: &mut afs::client::AfsClient,
    file: &str,
    start: u64,
    end: u64,
    max_line: u64,
) -> Result<Option<ChunkBytes>, afs::client::AfsError> {
    let lo = start.saturating_sub(1);
    let end = end.max(lo);
    let first = client
        .read_range(file, lo, end - lo + LOOK_AHEAD, None)
        .await?;
    let state = first.state().to_string();
    let (mut version, size) = (first.version, first.size);
    let mut bytes = first.bytes;
    // The chunk's own bytes, [lo, end), within what was read.
    let own = ((end - lo) as usize).min(bytes.len());
    let from = if start == 0 {
        0
    } else {
        // No newline: no line starts in the chunk.
        memchr::memchr(b'\n', &bytes[..own]).map_or(own, |k| k + 1)
    };
    let to = if from == own {
        own
    } else {
        // The last line ends at the first newline at or after `end - 1`.
        let mut searched = own - 1;
        let mut piece: u64 = 64 << 10;
        loop {
            if let Some(k) = memchr::memchr(b'\n', &bytes[searched..]) {
                break searched + k + 1;
            }
            searched = bytes.len();
            let pos = lo + bytes.len() as u64;
            if pos >= size {
                break bytes.len();
            }
            if pos.saturating_sub(end) > max_line {
                return Ok(None);
            }
            let more = client.read_range(file, pos, piece, Some(&state)).await?;
            version = version.or(more.version);
            if more.bytes.is_empty() {
                break bytes.len();
            }
            bytes.extend_from_slice(&more.bytes);
            piece = (piece * 2).min(16 << 20);
        }
    };
    bytes.truncate(to);
    Ok(Some(ChunkBytes {
        bytes,
        from,
        to,
        version,
        size,
    }))
}

/// The primes of a result as wire batches of at most [`MAX_PRIMES_PER_BATCH`].
pub fn prime_batches(r: &ScanResult) -> Vec<(Vec<u64>, Vec<String>)> {
    let mut out = Vec::new();
    for c in r.primes.chunks(MAX_PRIMES_PER_BATCH) {
        out.push((c.to_vec(), Vec::new()));
    }
    for c in r.big_primes.chunks(MAX_PRIMES_PER_BATCH / 64) {
        out.push((Vec::new(), c.iter().map(|b| b.to_string()).collect()));
    }
    out
}

/// The first invalid lines in wire form.
pub fn invalid_lines(r: &ScanResult) -> Vec<InvalidLine> {
    r.first_invalid
        .iter()
        .map(|i| InvalidLine {
            line: i.line,
            reason: i.reason.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A chunk cut in memory ([`chunk_of`]) is the same lines as the same chunk of the file.
    fn memory_chunks_match_file_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.txt");
        for content in [&b"2\n3\n\nx\n55\n7"[..], b"", b"\n\n\n", b"13\n"] {
            std::fs::write(&path, content).expect("write");
            let size = content.len() as u64;
            for start in 0..=size + 1 {
                for end in start..=size + 2 {
                    let mut f = File::open(&path).expect("open");
                    let from = line_start_at_or_after(&mut f, start, size).expect("start");
                    let to = if end >= size {
                        size
                    } else {
                        line_start_at_or_after(&mut f, end, size).expect("end")
                    };
                    let want = &content[from as usize..to.max(from) as usize];
                    assert_eq!(chunk_of(content, start, end), want, "{start}..{end}");
                }
            }
        }
    }

    #[test]
    /// Chunks cut anywhere cover every line exactly once, whatever the cut points.
    fn chunks_partition_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.txt");
        let mut content = String::new();
        for i in 0..2000u64 {
            content.push_str(&format!("{}\n", i * 7 + 3));
            if i % 97 == 0 {
                content.push_str("junk\n\n");
            }
        }
        content.push_str("101"); // final line without newline
        std::fs::write(&path, &content).expect("write");
        let size = content.len() as u64;
        let whole = scan_chunk(&path, 0, size, &ScanConfig::default()).expect("scan");
        for chunk in [1u64, 7, 100, 1000, 4096, size] {
            let mut lines = 0;
            let mut primes = Vec::new();
            let mut invalid = 0;
            let mut start = 0;
            while start < size {
                let end = (start + chunk).min(size);
                let r = scan_chunk(&path, start, end, &ScanConfig::default()).expect("scan");
                lines += r.lines;
                invalid += r.invalid;
                primes.extend(r.primes);
                start = end;
            }
            let mut want = whole.primes.clone();
            want.sort_unstable();
            primes.sort_unstable();
            assert_eq!(lines, whole.lines, "chunk size {chunk}");
            assert_eq!(invalid, whole.invalid, "chunk size {chunk}");
            assert_eq!(primes, want, "chunk size {chunk}");
        }
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;

    #[test]
    /// Progress is reported block by block, increasing, and ends at the bytes read.
    fn progress_advances_per_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.txt");
        let line = b"18446744073709551557\n";
        let mut content = Vec::with_capacity(40 << 20);
        while content.len() < 40 << 20 {
            content.extend_from_slice(line);
        }
        std::fs::write(&path, &content).expect("write");
        let mut seen = Vec::new();
        let r = scan_chunk_with_progress(
            &path,
            0,
            content.len() as u64,
            &ScanConfig::default(),
            |b| seen.push(b),
        )
        .expect("scan");
        assert_eq!(r.numbers as usize, content.len() / line.len());
        assert!(seen.len() >= 3, "several blocks reported: {seen:?}");
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "increasing: {seen:?}"
        );
        assert_eq!(seen.last().copied(), Some(content.len() as u64));
    }
}
