//! The checkpoint of a primes file: `primes.txt.meta` (the lengths and fingerprints of the
//! files it describes, the line counts, the intervals) and `primes.txt.set` (the dump of
//! the dedup set); writing them, and resuming from them at open when they match the files.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::lines::load;
use super::{meta_path, set_path, Hash, PrimesFile, Sets, META_VERSION, WRITE_PIECE};
use crate::ranges::{Covered, Finished, Ranges};

/// What a checkpoint records (`primes.txt.meta`, one JSON object).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) version: u32,
    /// Bytes of primes.txt described (whole lines), and their [`fingerprint`].
    pub(super) primes_bytes: u64,
    pub(super) primes_sum: u64,
    /// Bytes of the ledger as it was, and their [`fingerprint`].
    pub(super) ledger_bytes: u64,
    pub(super) ledger_sum: u64,
    /// Lines of those bytes known by the intervals (`covered`, `streaming`), not the set.
    pub(super) in_ranges: u64,
    /// Primes in the dump: below 2^64 (u64 little-endian first), then at least 2^64 (lines).
    pub(super) small: u64,
    pub(super) big: u64,
    /// The dump's length and [`Sum`].
    pub(super) set_bytes: u64,
    pub(super) set_sum: u64,
    /// The covered intervals held in memory (the ledger's, and any its write missed).
    pub(super) covered: Vec<(u64, u64)>,
    /// Segments being streamed, `(lo, hi, w)`: every prime of `[lo, w]` is in those bytes.
    pub(super) streaming: Vec<(u64, u64, u64)>,
}

/// The set dump on disk.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dump {
    /// `set_changes` when it was written (or loaded).
    changes: u64,
    bytes: u64,
    sum: u64,
    small: u64,
    big: u64,
}

/// A 64-bit checksum of a byte stream (FNV-1a over little-endian 8-byte words, the last
/// padded with zeros, then the length, then a final mix): stable across versions and
/// builds, cheap enough for a dump of many MB. It tells a damaged or different file, not
/// one made to collide.
struct Sum {
    h: u64,
    word: [u8; 8],
    fill: usize,
    len: u64,
}

impl Sum {
    fn new() -> Self {
        Sum {
            h: 0xcbf2_9ce4_8422_2325,
            word: [0; 8],
            fill: 0,
            len: 0,
        }
    }

    fn mix(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }

    fn update(&mut self, mut b: &[u8]) {
        self.len += b.len() as u64;
        if self.fill > 0 {
            let n = (8 - self.fill).min(b.len());
            self.word[self.fill..self.fill + n].copy_from_slice(&b[..n]);
            self.fill += n;
            b = &b[n..];
            if self.fill < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.word));
            self.fill = 0;
        }
        let mut words = b.chunks_exact(8);
        for c in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        self.word[..rest.len()].copy_from_slice(rest);
        self.fill = rest.len();
    }

    fn finish(mut self) -> u64 {
        if self.fill > 0 {
            self.word[self.fill..].fill(0);
            self.mix(u64::from_le_bytes(self.word));
        }
        self.mix(self.len);
        let mut z = self.h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A fingerprint of a file's first `len` bytes: all of them up to 256 KiB, else 64 windows
/// of 4 KiB spread evenly from the start to `len` (the first and the last included), and
/// `len`. Reading it costs a few hundred KiB whatever the size; it tells a file replaced
/// or cut and written again, unless the new one has the same bytes in every window.
fn fingerprint(file: &File, len: u64) -> std::io::Result<u64> {
    const WINDOW: u64 = 4096;
    const WINDOWS: u64 = 64;
    let mut file = file;
    let mut sum = Sum::new();
    sum.update(&len.to_le_bytes());
    let mut buf = vec![0u8; WINDOW as usize];
    if len <= WINDOW * WINDOWS {
        file.seek(SeekFrom::Start(0))?;
        let mut left = len;
        while left > 0 {
            let n = left.min(WINDOW) as usize;
            file.read_exact(&mut buf[..n])?;
            sum.update(&buf[..n]);
            left -= n as u64;
        }
    } else {
        for k in 0..WINDOWS {
            let at = k * (len - WINDOW) / (WINDOWS - 1);
            file.seek(SeekFrom::Start(at))?;
            file.read_exact(&mut buf)?;
            sum.update(&buf);
        }
    }
    Ok(sum.finish())
}

/// The checkpoint's meta, if there is one.
pub(super) fn read_meta(path: &Path) -> Result<Option<Meta>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Removes a checkpoint that does not describe primes.txt (or may not any more).
pub(super) fn remove_checkpoint(path: &Path) {
    for p in [meta_path(path), set_path(path)] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove a stale checkpoint file")
            }
        }
    }
}

/// The dedup set from the dump `path` that `meta` describes (its length, counts and sum
/// checked), with room for `reserve` small primes.
fn read_set(path: &Path, meta: &Meta, reserve: usize) -> Result<Sets, String> {
    let io = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len != meta.set_bytes {
        return Err(format!(
            "{} is {len} bytes, the checkpoint says {}",
            path.display(),
            meta.set_bytes
        ));
    }
    let small_bytes = meta
        .small
        .checked_mul(8)
        .filter(|&b| b <= len)
        .ok_or_else(|| format!("{} is too short for its small primes", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut sum = Sum::new();
    let mut small = HashSet::with_capacity_and_hasher(reserve, Hash::default());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = small_bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        reader.read_exact(&mut buf[..n]).map_err(io)?;
        sum.update(&buf[..n]);
        for c in buf[..n].chunks_exact(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            small.insert(u64::from_le_bytes(w));
        }
        left -= n as u64;
    }
    let mut big = HashSet::with_hasher(Hash::default());
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            break;
        }
        sum.update(&line);
        let t = line
            .strip_suffix(b"\n")
            .filter(|t| t.first().is_some_and(|&d| d != b'0') && t.iter().all(u8::is_ascii_digit))
            .ok_or_else(|| format!("{} holds a line that is not a number", path.display()))?;
        big.insert(String::from_utf8_lossy(t).into_owned());
    }
    if sum.finish() != meta.set_sum {
        return Err(format!("{} does not match its checksum", path.display()));
    }
    if small.len() as u64 != meta.small || big.len() as u64 != meta.big {
        return Err(format!(
            "{} holds {} + {} primes, the checkpoint says {} + {}",
            path.display(),
            small.len(),
            big.len(),
            meta.small,
            meta.big
        ));
    }
    Ok((small, big))
}

/// A state taken from a checkpoint and the lines appended after it.
pub(super) struct Resumed {
    pub(super) small: HashSet<u64, Hash>,
    pub(super) big: HashSet<String, Hash>,
    pub(super) in_ranges: u64,
    pub(super) ranges: Ranges,
    pub(super) dump: Dump,
    /// Set insertions from the lines after the checkpoint.
    pub(super) inserted: u64,
}

/// The state `meta` describes, if it describes these files (else why not): primes.txt
/// (`good` bytes after the torn-tail cut) and the ledger (`ledger_len` bytes, `entries`
/// read from them) at least as long as recorded, with the same fingerprints; the set dump
/// intact. Then only primes.txt from the recorded length on is read, each line as the full
/// scan reads it.
///
/// The ledger check ([`ledger_mismatch`](super::lines::ledger_mismatch)) needs lines per
/// covered interval, which the checkpoint does not keep: it is not made again for the part the
/// checkpoint describes. That is sound: the checkpoint was written from a state that was exact
/// (opened by a full scan, which made the check, or from an earlier checkpoint, by induction,
/// or empty, then changed only by appends that decide against it), after both files were
/// synced, so every ledger line of that part had its primes durable in that part; the
/// fingerprints tell that the files are still those. What it does not cover is the ledger
/// appended since (with `set_sync(false)` a crash may keep a ledger line whose primes were
/// lost): for each segment recorded since, its first and last prime must be in primes.txt (in
/// the dump, in an interval the checkpoint knows, or on a line after it), else the full scan
/// decides. This finds the usual loss (the file's tail gone, the ledger's kept), not every
/// loss, as the full check itself is a lower bound only.
pub(super) fn resume(
    file: &File,
    good: u64,
    ledger: &File,
    ledger_len: u64,
    entries: &[(u64, Finished)],
    meta: &Meta,
    set_path: &Path,
) -> Result<Resumed, String> {
    if meta.version != META_VERSION {
        return Err(format!(
            "checkpoint format {}, not {META_VERSION}",
            meta.version
        ));
    }
    if good < meta.primes_bytes {
        return Err(format!(
            "primes.txt is {good} bytes, shorter than the {} the checkpoint describes",
            meta.primes_bytes
        ));
    }
    if ledger_len < meta.ledger_bytes {
        return Err(format!(
            "the ledger is {ledger_len} bytes, shorter than the {} the checkpoint describes",
            meta.ledger_bytes
        ));
    }
    let io = |what: &str, e: std::io::Error| format!("cannot read {what}: {e}");
    if fingerprint(file, meta.primes_bytes).map_err(|e| io("primes.txt", e))? != meta.primes_sum {
        return Err("primes.txt is not the file the checkpoint describes".into());
    }
    if fingerprint(ledger, meta.ledger_bytes).map_err(|e| io("the ledger", e))? != meta.ledger_sum {
        return Err("the ledger is not the one the checkpoint describes".into());
    }
    let mut ranges = Ranges::default();
    // What the checkpoint knows to be in its part without the set.
    let mut known = Covered::default();
    for &(lo, hi, w) in &meta.streaming {
        ranges.resume(lo, hi, w);
        known.insert(lo, w);
    }
    for &(lo, hi) in &meta.covered {
        ranges.covered.insert(lo, hi);
        known.insert(lo, hi);
    }
    for (lo, hi) in entries.iter().filter_map(|(_, f)| f.covers()) {
        ranges.cover(lo, hi);
    }
    // The first and last primes of the segments recorded since.
    let watch: HashSet<u64> = entries
        .iter()
        .filter(|(end, f)| *end > meta.ledger_bytes && f.covers().is_some() && f.result.primes > 0)
        .flat_map(|(_, f)| [&f.result.first_prime, &f.result.last_prime])
        .filter_map(|p| p.as_deref().and_then(|p| p.parse::<u64>().ok()))
        .collect();
    let tail = good - meta.primes_bytes;
    let mut reserve = meta.small as usize;
    if ranges.covered.intervals() == 0 {
        reserve += (tail / 20) as usize;
    }
    let (small, big) = read_set(set_path, meta, reserve)?;
    let before = (small.len() + big.len()) as u64;
    let loaded = load(
        file,
        meta.primes_bytes,
        good,
        &ranges.covered,
        (small, big),
        watch,
    )
    .map_err(|e| io("primes.txt", e))?;
    if let Some(p) = loaded
        .watch
        .iter()
        .find(|&&p| !loaded.small.contains(&p) && !known.contains(p))
    {
        return Err(format!(
            "a segment recorded in the ledger after the checkpoint lacks its prime {p} in primes.txt"
        ));
    }
    let inserted = (loaded.small.len() + loaded.big.len()) as u64 - before;
    Ok(Resumed {
        in_ranges: meta.in_ranges + loaded.in_ranges,
        small: loaded.small,
        big: loaded.big,
        ranges,
        dump: Dump {
            changes: 0,
            bytes: meta.set_bytes,
            sum: meta.set_sum,
            small: meta.small,
            big: meta.big,
        },
        inserted,
    })
}

impl PrimesFile {
    /// Syncs primes.txt and the ledger, then records a checkpoint so that the next open
    /// reads only what is appended after it: the dump of the dedup set `primes.txt.set`
    /// (rewritten only if the set changed since the last checkpoint, so a checkpoint while
    /// only segments' primes were appended writes a few hundred bytes), then the meta
    /// `primes.txt.meta` (each replaced atomically and fsynced). Appends after it are the
    /// tail the next open reads.
    pub fn checkpoint(&mut self) -> anyhow::Result<()> {
        self.sync()?;
        let dump = match self.dumped {
            Some(d) if d.changes == self.set_changes => d,
            _ => {
                // The old meta no longer matches the dump once it is replaced: an open
                // between the two reads the whole file, never a wrong set.
                let d = self.write_set()?;
                self.dumped = Some(d);
                d
            }
        };
        let meta = Meta {
            version: META_VERSION,
            primes_bytes: self.bytes,
            primes_sum: fingerprint(&self.file, self.bytes)
                .with_context(|| format!("reading {}", self.path.display()))?,
            ledger_bytes: self.ledger_bytes,
            ledger_sum: fingerprint(&self.ledger, self.ledger_bytes)
                .with_context(|| format!("reading {}", self.ledger_path.display()))?,
            in_ranges: self.in_ranges,
            small: dump.small,
            big: dump.big,
            set_bytes: dump.bytes,
            set_sum: dump.sum,
            covered: self.ranges.covered.iter().collect(),
            streaming: self.ranges.progress(),
        };
        let path = meta_path(&self.path);
        let json = serde_json::to_vec(&meta).context("encoding the checkpoint")?;
        proto::files::write_atomic(&path, &json, true)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Writes the dedup set to its dump (a temporary file, fsynced, renamed over it).
    fn write_set(&self) -> anyhow::Result<Dump> {
        let path = set_path(&self.path);
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        let result = (|| -> std::io::Result<(u64, u64)> {
            let mut f = File::create(&tmp)?;
            let mut sum = Sum::new();
            let mut total = 0u64;
            let mut out = Vec::with_capacity(WRITE_PIECE + 64);
            let mut put = |out: &mut Vec<u8>, last: bool| -> std::io::Result<()> {
                if out.len() >= WRITE_PIECE || last {
                    sum.update(out);
                    total += out.len() as u64;
                    f.write_all(out)?;
                    out.clear();
                }
                Ok(())
            };
            for p in &self.small {
                out.extend_from_slice(&p.to_le_bytes());
                put(&mut out, false)?;
            }
            for p in &self.big {
                out.extend_from_slice(p.as_bytes());
                out.push(b'\n');
                put(&mut out, false)?;
            }
            put(&mut out, true)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            Ok((total, sum.finish()))
        })();
        let (bytes, sum) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e).with_context(|| format!("writing {}", path.display()));
            }
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
        Ok(Dump {
            changes: self.set_changes,
            bytes,
            sum,
            small: self.small.len() as u64,
            big: self.big.len() as u64,
        })
    }
}
