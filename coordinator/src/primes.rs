//! `primes.txt`: the durable, deduplicated set of primes found.
//!
//! The file is append-only. On open, a torn last line (a crash in the middle of an append)
//! is cut off, never read as a number, and the in-memory dedup set is rebuilt from what
//! remains. An append writes only primes not yet written, then fsyncs; a failed write takes
//! back what the batch decided, so it can simply be retried.
//!
//! Primes of `primes` jobs (range segments) are deduplicated by intervals instead of the set
//! ([`crate::ranges`]): the ledger `primes.txt.ranges` lists, one JSON line each, the
//! generation tasks finished (each work once), a `primes` segment's line appended and
//! fsynced after its primes; at open, lines of primes.txt inside those segments are
//! counted, not loaded into the set.
//!
//! A checkpoint ([`PrimesFile::checkpoint`]) spares a reopen the scan of the whole file:
//! `primes.txt.meta` records the lengths of primes.txt and the ledger it describes (with a
//! fingerprint of each), the line counts, the covered intervals and the segments being
//! streamed, and `primes.txt.set` holds the dedup set. Open then loads the set from the
//! dump and reads only the lines appended since; a checkpoint that does not match the files
//! (shorter, replaced, a damaged dump) is ignored and removed, and the whole file read.
//!
//! [`PrimesFile::merge_from`] adds another primes file and its ledger, streaming, with the
//! same decisions on every member of a group (same files in, same bytes out).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use proto::msg::Work;
use serde::{Deserialize, Serialize};

use crate::ranges::{Covered, Finished, Ranges, Run, Undo};

/// The dedup set's hasher: foldhash, seeded at random per process (fast on u64 keys, where
/// the default SipHash spent more time than the table itself; the random seed keeps inputs
/// crafted to collide from degrading the table).
type Hash = foldhash::fast::RandomState;

/// The primes file and its dedup set. Primes below 2^64 are kept as u64 (8 bytes plus the
/// hash table's overhead each); larger ones as canonical decimal strings.
pub struct PrimesFile {
    path: PathBuf,
    file: File,
    small: HashSet<u64, Hash>,
    big: HashSet<String, Hash>,
    /// Lines of primes.txt known through `ranges` rather than the set.
    in_ranges: u64,
    /// The file's length (where the next append begins).
    bytes: u64,
    ranges: Ranges,
    ledger_path: PathBuf,
    ledger: File,
    /// The ledger's length (where the next line begins).
    ledger_bytes: u64,
    /// The works the ledger records (a task is recorded once).
    works: HashSet<Work>,
    /// The ledger's finished tasks: read at open, then each task [`PrimesFile::append`] or
    /// [`PrimesFile::merge_from`] records (once per work), for the machine to take (jobs
    /// resume from them). Callers may read or take it; they must not extend it (the file
    /// does; what it recorded is kept apart, so taking it changes no decision).
    pub finished: Vec<Finished>,
    /// Bytes cut from a torn tail at open, for the log.
    pub truncated_bytes: u64,
    /// fsync every append (see [`PrimesFile::set_sync`]).
    sync: bool,
    /// Changes to the set since open, to know whether the dump is current (insertions
    /// taken back by a failed write count too: the dump is then written once more).
    set_changes: u64,
    /// The set dump on disk, if it holds the set as of `set_changes == dumped.changes`.
    dumped: Option<Dump>,
    /// True if open used a checkpoint.
    from_checkpoint: bool,
}

/// Bytes formatted before they are handed to the file during an append.
const WRITE_PIECE: usize = 1 << 20;

/// The checkpoint format; another version is not read.
const META_VERSION: u32 = 1;

/// The ledger of `path` (`primes.txt` -> `primes.txt.ranges`).
pub fn ledger_path(path: &Path) -> PathBuf {
    suffixed(path, ".ranges")
}

/// `path` with `suffix` appended to its name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The checkpoint's meta file (`primes.txt.meta`).
fn meta_path(path: &Path) -> PathBuf {
    suffixed(path, ".meta")
}

/// The checkpoint's dump of the dedup set (`primes.txt.set`).
fn set_path(path: &Path) -> PathBuf {
    suffixed(path, ".set")
}

/// Opens `path` for appending and reading, creating it, and cuts a torn last line. Returns
/// the file, its length after the cut and the bytes cut.
fn open_lines(path: &Path) -> anyhow::Result<(File, u64, u64)> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    let good = whole_lines_len(&mut file, len, path)?;
    if len > good {
        file.set_len(good)
            .and_then(|_| file.sync_all())
            .with_context(|| format!("cutting the torn tail of {}", path.display()))?;
    }
    Ok((file, good, len - good))
}

/// The length of the first `len` bytes of `file` (at `path`, for errors) up to the end of
/// their last complete line: what a torn last line leaves.
pub(crate) fn whole_lines_len(file: &mut File, len: u64, path: &Path) -> anyhow::Result<u64> {
    let mut pos = len;
    let mut buf = vec![0u8; 64 << 10];
    while pos > 0 {
        let start = pos.saturating_sub(buf.len() as u64);
        let n = (pos - start) as usize;
        file.seek(SeekFrom::Start(start))
            .and_then(|_| std::io::Read::read_exact(file, &mut buf[..n]))
            .with_context(|| format!("reading {}", path.display()))?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
            return Ok(start + i as u64 + 1);
        }
        pos = start;
    }
    Ok(0)
}

/// Calls `f` on each whole line (without its newline) of `file` from byte `from` to `to`;
/// bytes after the last newline before `to` are not a line.
fn scan_lines(
    file: &File,
    from: u64,
    to: u64,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut file = file;
    file.seek(SeekFrom::Start(from))?;
    let mut reader = BufReader::with_capacity(1 << 20, file.take(to.saturating_sub(from)));
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        // Whole lines in this block (the tail waits for the next block).
        let mut rest: &[u8] = buf;
        if !carry.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(k) => {
                    carry.extend_from_slice(&rest[..k]);
                    f(&carry)?;
                    carry.clear();
                    rest = &rest[k + 1..];
                }
                None => {
                    carry.extend_from_slice(rest);
                    reader.consume(n);
                    continue;
                }
            }
        }
        while let Some(k) = memchr::memchr(b'\n', rest) {
            f(&rest[..k])?;
            rest = &rest[k + 1..];
        }
        carry.extend_from_slice(rest);
        reader.consume(n);
    }
    Ok(())
}

/// The finished tasks of a ledger's first `len` bytes (whole lines), each with the offset
/// where its line ends (a line that cannot be read is logged and skipped: a segment's
/// primes are then loaded into the set, which costs memory, never exactness).
fn read_ledger(path: &Path, file: &File, len: u64) -> anyhow::Result<Vec<(u64, Finished)>> {
    let mut out = Vec::new();
    let mut end = 0u64;
    scan_lines(file, 0, len, |line| {
        end += line.len() as u64 + 1;
        if line.trim_ascii().is_empty() {
            return Ok(());
        }
        match serde_json::from_slice::<Finished>(line) {
            Ok(r) if r.covers().is_none_or(|(lo, hi)| lo <= hi) => out.push((end, r)),
            Ok(_) => tracing::warn!(
                line = %String::from_utf8_lossy(line),
                "ignoring a ledger line with lo > hi"
            ),
            Err(e) => tracing::warn!(
                line = %String::from_utf8_lossy(line),
                error = %e,
                "ignoring a ledger line that cannot be read"
            ),
        }
        Ok(())
    })
    .with_context(|| format!("reading {}", path.display()))?;
    Ok(out)
}

/// What a checkpoint records (`primes.txt.meta`, one JSON object).
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    version: u32,
    /// Bytes of primes.txt described (whole lines), and their [`fingerprint`].
    primes_bytes: u64,
    primes_sum: u64,
    /// Bytes of the ledger as it was, and their [`fingerprint`].
    ledger_bytes: u64,
    ledger_sum: u64,
    /// Lines of those bytes known by the intervals (`covered`, `streaming`), not the set.
    in_ranges: u64,
    /// Primes in the dump: below 2^64 (u64 little-endian first), then at least 2^64 (lines).
    small: u64,
    big: u64,
    /// The dump's length and [`Sum`].
    set_bytes: u64,
    set_sum: u64,
    /// The covered intervals held in memory (the ledger's, and any its write missed).
    covered: Vec<(u64, u64)>,
    /// Segments being streamed, `(lo, hi, w)`: every prime of `[lo, w]` is in those bytes.
    streaming: Vec<(u64, u64, u64)>,
}

/// The set dump on disk.
#[derive(Debug, Clone, Copy)]
struct Dump {
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
fn read_meta(path: &Path) -> Result<Option<Meta>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Removes a checkpoint that does not describe primes.txt (or may not any more).
fn remove_checkpoint(path: &Path) {
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

/// The dedup set: primes below 2^64, and the others.
type Sets = (HashSet<u64, Hash>, HashSet<String, Hash>);

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
struct Resumed {
    small: HashSet<u64, Hash>,
    big: HashSet<String, Hash>,
    in_ranges: u64,
    ranges: Ranges,
    dump: Dump,
    /// Set insertions from the lines after the checkpoint.
    inserted: u64,
}

/// The state `meta` describes, if it describes these files (else why not): primes.txt
/// (`good` bytes after the torn-tail cut) and the ledger (`ledger_len` bytes, `entries`
/// read from them) at least as long as recorded, with the same fingerprints; the set dump
/// intact. Then only primes.txt from the recorded length on is read, each line as the full
/// scan reads it.
///
/// The ledger check ([`ledger_mismatch`]) needs lines per covered interval, which the
/// checkpoint does not keep: it is not made again for the part the checkpoint describes.
/// That is sound: the checkpoint was written from a state that was exact (opened by a full
/// scan, which made the check, or from an earlier checkpoint, by induction, or empty, then
/// changed only by appends that decide against it), after both files were synced, so
/// every ledger line of that part had its primes durable in that part; the fingerprints
/// tell that the files are still those. What it does not cover is the ledger appended since
/// (with `set_sync(false)` a crash may keep a ledger line whose primes were lost): for each
/// segment recorded since, its first and last prime must be in primes.txt (in the dump, in
/// an interval the checkpoint knows, or on a line after it), else the full scan decides.
/// This finds the usual loss (the file's tail gone, the ledger's kept), not every loss, as
/// the full check itself is a lower bound only.
fn resume(
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
    /// Opens (creating) `path`, cutting a torn tail and loading every prime: from its
    /// checkpoint and the lines appended since when the checkpoint matches the files, else
    /// by reading the whole file.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let ledger_path = ledger_path(path);
        let (mut ledger, mut ledger_bytes, ledger_cut) = open_lines(&ledger_path)?;
        if ledger_cut > 0 {
            tracing::warn!(bytes = ledger_cut, path = %ledger_path.display(), "cut a torn last line");
        }
        let entries = read_ledger(&ledger_path, &ledger, ledger_bytes)?;
        let (mut file, good, truncated_bytes) = open_lines(path)?;
        let resumed = match read_meta(&meta_path(path)) {
            Ok(Some(meta)) => {
                match resume(
                    &file,
                    good,
                    &ledger,
                    ledger_bytes,
                    &entries,
                    &meta,
                    &set_path(path),
                ) {
                    Ok(r) => {
                        tracing::info!(
                            path = %path.display(),
                            from = meta.primes_bytes,
                            bytes = good - meta.primes_bytes,
                            "loaded the checkpoint; read primes.txt from where it ends"
                        );
                        Some(r)
                    }
                    Err(why) => {
                        tracing::warn!(path = %path.display(), why, "not using the checkpoint; reading all of primes.txt");
                        None
                    }
                }
            }
            Ok(None) => {
                tracing::info!(path = %path.display(), "no checkpoint; reading all of primes.txt");
                None
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), why, "not using the checkpoint; reading all of primes.txt");
                None
            }
        };
        let mut finished: Vec<Finished> = entries.into_iter().map(|(_, f)| f).collect();
        let from_checkpoint = resumed.is_some();
        let (small, big, in_ranges, ranges, dumped, set_changes) = match resumed {
            Some(r) => (
                r.small,
                r.big,
                r.in_ranges,
                r.ranges,
                Some(r.dump),
                r.inserted,
            ),
            None => {
                // A checkpoint not used does not describe the files (or may not): gone, so
                // that nothing trusts it later.
                remove_checkpoint(path);
                let mut ranges = Ranges::default();
                for (lo, hi) in finished.iter().filter_map(Finished::covers) {
                    ranges.cover(lo, hi);
                }
                let mut loaded = load_all(&file, good, &ranges.covered)
                    .with_context(|| format!("reading {}", path.display()))?;
                // The ledger must describe this primes.txt: a segment it lists whose primes
                // are not all there (primes.txt deleted or replaced, the ledger kept) would
                // be skipped for good. Then its segments are dropped and everything loads
                // into the set.
                if let Some(why) = ledger_mismatch(&finished, &ranges.covered, &loaded.per_interval)
                {
                    tracing::warn!(
                        path = %ledger_path.display(),
                        why,
                        "the ledger's primes segments do not match primes.txt; dropping them"
                    );
                    // The other tasks' results do not depend on primes.txt: they stay.
                    finished.retain(|f| f.covers().is_none());
                    let mut keep = Vec::new();
                    for f in &finished {
                        if let Ok(l) = serde_json::to_vec(f) {
                            keep.extend_from_slice(&l);
                            keep.push(b'\n');
                        }
                    }
                    proto::files::write_atomic(&ledger_path, &keep, true)
                        .with_context(|| format!("rewriting {}", ledger_path.display()))?;
                    (ledger, ledger_bytes, _) = open_lines(&ledger_path)?;
                    ranges = Ranges::default();
                    loaded = load_all(&file, good, &ranges.covered)
                        .with_context(|| format!("reading {}", path.display()))?;
                }
                (loaded.small, loaded.big, loaded.in_ranges, ranges, None, 0)
            }
        };
        file.seek(SeekFrom::End(0))
            .with_context(|| format!("seeking {}", path.display()))?;
        let works = finished.iter().map(|f| f.work.clone()).collect();
        Ok(PrimesFile {
            path: path.to_path_buf(),
            file,
            small,
            big,
            in_ranges,
            bytes: good,
            ranges,
            ledger_path,
            ledger,
            ledger_bytes,
            works,
            finished,
            truncated_bytes,
            sync: true,
            set_changes,
            dumped,
            from_checkpoint,
        })
    }

    /// Whether each append is fsynced before it returns (the default). A group's replica
    /// turns it off: its log is durable and re-applying it is idempotent, so the replica
    /// syncs only before a snapshot lets the log go ([`PrimesFile::sync`]).
    pub fn set_sync(&mut self, on: bool) {
        self.sync = on;
    }

    /// fsyncs the primes file and its ledger.
    pub fn sync(&self) -> anyhow::Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("syncing {}", self.path.display()))?;
        self.ledger
            .sync_data()
            .with_context(|| format!("syncing {}", self.ledger_path.display()))
    }

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

    /// Distinct primes on disk.
    pub fn len(&self) -> usize {
        self.small.len() + self.big.len() + self.in_ranges as usize
    }

    /// Primes held in the dedup set (the rest are known by their segments).
    pub fn in_set(&self) -> usize {
        self.small.len() + self.big.len()
    }

    /// The length of primes.txt (whole lines; where the next append begins).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The length of the ledger (whole lines).
    pub fn ledger_bytes(&self) -> u64 {
        self.ledger_bytes
    }

    /// True if open took the dedup set from a checkpoint (and read only the lines after it).
    pub fn from_checkpoint(&self) -> bool {
        self.from_checkpoint
    }

    /// Covered segments (merged) and segments being streamed, for the log.
    pub fn range_stats(&self) -> (usize, usize) {
        (self.ranges.covered.intervals(), self.ranges.streaming())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the primes not yet written, then fsyncs; then records in the ledger the tasks
    /// of `finished` (tasks whose results are now all durable; a `primes` segment's primes
    /// included) whose work it does not record yet, and adds them to
    /// [`PrimesFile::finished`]. Returns how many primes were new.
    /// `big` MUST hold canonical decimal (no sign, no leading zeros) of values of 2^64 or
    /// more; each run MUST list its segment's primes ascending from its start, without a gap
    /// (several attempts one after another).
    pub fn append(
        &mut self,
        small: &[u64],
        big: &[String],
        runs: &[Run],
        finished: &[Finished],
    ) -> anyhow::Result<usize> {
        // One probe per prime: insert at once (a duplicate, in the set or earlier in this
        // batch, is refused), and take the new ones out again if the write fails.
        let ranges = &self.ranges;
        let set = &mut self.small;
        let new_small: Vec<u64> = small
            .iter()
            .copied()
            .filter(|p| !ranges.has(*p) && set.insert(*p))
            .collect();
        let new_big: Vec<&String> = big
            .iter()
            .filter(|p| !self.big.contains(*p) && self.big.insert((*p).clone()))
            .collect();
        self.set_changes += (new_small.len() + new_big.len()) as u64;
        // Written in pieces of about WRITE_PIECE bytes as they are decided (a large batch
        // of segment primes is never formatted whole in memory); on any failure the file is
        // cut back to where the batch began, so a retry cannot duplicate a line.
        let start = self.bytes;
        let mut out = Vec::with_capacity(WRITE_PIECE + 64);
        let mut written: std::io::Result<()> = Ok(());
        let mut total = 0u64;
        let mut digits = itoa::Buffer::new();
        let file = &mut self.file;
        let mut put = |text: &[u8], out: &mut Vec<u8>| {
            out.extend_from_slice(text);
            out.push(b'\n');
            total += text.len() as u64 + 1;
            if out.len() >= WRITE_PIECE && written.is_ok() {
                written = file.write_all(out);
                out.clear();
            }
        };
        for p in &new_small {
            put(digits.format(*p).as_bytes(), &mut out);
        }
        for p in &new_big {
            put(p.as_bytes(), &mut out);
        }
        let mut undo = Undo::default();
        let mut from_runs = 0u64;
        for run in runs {
            let set = &self.small;
            self.ranges.take_run(
                run,
                |p| set.contains(&p),
                |p| {
                    from_runs += 1;
                    put(digits.format(p).as_bytes(), &mut out);
                },
                &mut undo,
            );
        }
        let new = new_small.len() + new_big.len() + from_runs as usize;
        if new > 0 {
            let result = written
                .and_then(|_| self.file.write_all(&out))
                .and_then(|_| {
                    if self.sync {
                        self.file.sync_data()
                    } else {
                        Ok(())
                    }
                })
                .with_context(|| format!("appending to {}", self.path.display()));
            if let Err(e) = result {
                // Not durable: cut what was written, forget the batch's decisions, so that
                // the retry writes them.
                self.cut_back(start);
                for p in &new_small {
                    self.small.remove(p);
                }
                for p in &new_big {
                    self.big.remove(*p);
                }
                self.ranges.undo(undo);
                return Err(e);
            }
            self.bytes = start + total;
        }
        self.in_ranges += from_runs;
        self.record(finished);
        Ok(new)
    }

    /// Cuts primes.txt back to `len` after a failed write (never below the length a
    /// checkpoint recorded: that is at most the length before the write).
    fn cut_back(&mut self, len: u64) {
        if let Err(cut) = self.file.set_len(len).and_then(|_| self.file.sync_data()) {
            tracing::error!(error = %cut, path = %self.path.display(), "cannot cut a failed append back");
        }
    }

    /// Records in the ledger the tasks of `finished` whose work it does not record yet (the
    /// first of a work, if it comes twice), covers their segments and adds them to
    /// `finished`. Their results are durable (a segment's primes written before). Returns
    /// the segments covered.
    fn record<'a>(&mut self, finished: impl IntoIterator<Item = &'a Finished>) -> usize {
        let mut lines = Vec::new();
        let mut covered = 0;
        for c in finished {
            if self.works.contains(&c.work) {
                continue;
            }
            self.works.insert(c.work.clone());
            if let Some((lo, hi)) = c.covers() {
                self.ranges.cover(lo, hi);
                covered += 1;
            }
            match serde_json::to_vec(c) {
                Ok(l) => {
                    lines.extend_from_slice(&l);
                    lines.push(b'\n');
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a ledger line"),
            }
            self.finished.push(c.clone());
        }
        if lines.is_empty() {
            return covered;
        }
        // The primes are durable: the covers hold in memory whatever happens here (and a
        // checkpoint records them). A ledger that misses them only makes the next start
        // load those primes into the set (and sieve those segments again if their job has
        // to resume). A failed write is cut back, so no torn line is left for the next one
        // to run into.
        if let Err(e) = self.ledger.write_all(&lines).and_then(|_| {
            if self.sync {
                self.ledger.sync_data()
            } else {
                Ok(())
            }
        }) {
            tracing::error!(error = %e, path = %self.ledger_path.display(), "cannot append to the ledger of finished segments");
            if let Err(e) = self.ledger.set_len(self.ledger_bytes) {
                tracing::error!(error = %e, path = %self.ledger_path.display(), "cannot cut a failed ledger append back");
            }
            return covered;
        }
        self.ledger_bytes += lines.len() as u64;
        covered
    }

    /// Adds the primes of another primes file's first `primes_len` bytes and the tasks of
    /// another ledger's first `ledger_len` bytes (whole lines of each), streaming: memory
    /// grows only with the set, as appends do. Returns the primes added.
    ///
    /// The other ledger is read first. A line of the other file already here (in the
    /// intervals or the set) is skipped; one in a segment the other ledger covers is
    /// appended without entering the set (its segment is covered here once the ledger
    /// lines are added); any other is appended and enters the set. Then the other ledger's
    /// tasks whose work this ledger does not record are appended, their segments covered
    /// (primes of the set they cover leave it, counted by the intervals as a reopen would).
    /// The other file must hold each prime once (as a primes file does). If the other
    /// ledger does not match the other file (a covered interval holds fewer lines than its
    /// segments found, see `ledger_mismatch`), its segments are not taken and the primes
    /// appended for them enter the set.
    ///
    /// The decisions depend only on the two inputs and on what this file holds, so the same
    /// inputs and the same starting files give the same bytes (members of a group run it).
    /// A failed write of primes.txt is cut back and returns an error (nothing taken).
    pub fn merge_from(
        &mut self,
        primes: &Path,
        primes_len: u64,
        ledger: &Path,
        ledger_len: u64,
    ) -> anyhow::Result<u64> {
        let open = |p: &Path, len: u64| -> anyhow::Result<File> {
            let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
            let have = f
                .metadata()
                .with_context(|| format!("stat {}", p.display()))?
                .len();
            if have < len {
                anyhow::bail!(
                    "{} is {have} bytes, fewer than the {len} to merge",
                    p.display()
                );
            }
            Ok(f)
        };
        let mut other: Vec<Finished> = read_ledger(ledger, &open(ledger, ledger_len)?, ledger_len)?
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        let mut other_cov = Covered::default();
        for (lo, hi) in other.iter().filter_map(Finished::covers) {
            other_cov.insert(lo, hi);
        }
        let src = open(primes, primes_len)?;
        let start = self.bytes;
        let mut out = Vec::with_capacity(WRITE_PIECE + 64);
        let mut total = 0u64;
        let mut new_small: Vec<u64> = Vec::new();
        let mut new_big: Vec<String> = Vec::new();
        // Appended without entering the set (in the other ledger's segments).
        let mut unset = 0u64;
        // Lines of the other file per interval of its ledger, for its check.
        let mut per_interval: HashMap<u64, u64> = HashMap::new();
        let mut last: Option<(u64, u64)> = None;
        let mut digits = itoa::Buffer::new();
        let (ranges, small, big) = (&self.ranges, &mut self.small, &mut self.big);
        let mut file = &self.file;
        let scanned = scan_lines(&src, 0, primes_len, |line| {
            match parse_line(line) {
                Some(Line::Small(v)) => {
                    match last {
                        Some((lo, hi)) if lo <= v && v <= hi => {}
                        _ => last = other_cov.interval_of(v),
                    }
                    if let Some((lo, _)) = last {
                        *per_interval.entry(lo).or_default() += 1;
                    }
                    if ranges.has(v) || small.contains(&v) {
                        return Ok(());
                    }
                    if last.is_some() {
                        unset += 1;
                    } else {
                        small.insert(v);
                        new_small.push(v);
                    }
                    out.extend_from_slice(digits.format(v).as_bytes());
                }
                Some(Line::Big(s)) => {
                    let s = s.trim_start_matches('0');
                    if big.contains(s) {
                        return Ok(());
                    }
                    big.insert(s.to_string());
                    new_big.push(s.to_string());
                    out.extend_from_slice(s.as_bytes());
                }
                None => return Ok(()),
            }
            out.push(b'\n');
            if out.len() >= WRITE_PIECE {
                file.write_all(&out)?;
                total += out.len() as u64;
                out.clear();
            }
            Ok(())
        })
        .with_context(|| format!("reading {}", primes.display()));
        let added = new_small.len() as u64 + new_big.len() as u64 + unset;
        self.set_changes += new_small.len() as u64 + new_big.len() as u64;
        let result = scanned.and_then(|_| {
            total += out.len() as u64;
            self.file
                .write_all(&out)
                .and_then(|_| {
                    if self.sync && added > 0 {
                        self.file.sync_data()
                    } else {
                        Ok(())
                    }
                })
                .with_context(|| format!("appending to {}", self.path.display()))
        });
        let undo = |f: &mut Self, more: &[u64]| {
            f.cut_back(start);
            for p in new_small.iter().chain(more) {
                f.small.remove(p);
            }
            for p in &new_big {
                f.big.remove(p);
            }
        };
        if let Err(e) = result {
            undo(self, &[]);
            return Err(e);
        }
        if let Some(why) = ledger_mismatch(&other, &other_cov, &per_interval) {
            tracing::warn!(
                path = %ledger.display(),
                why,
                "the merged ledger's primes segments do not match its primes file; not taking them"
            );
            other.retain(|f| f.covers().is_none());
            if unset > 0 {
                // The lines appended for those segments (those in them: the others entered
                // the set) enter the set after all.
                let mut moved = Vec::new();
                let small = &mut self.small;
                let read = scan_lines(&self.file, start, start + total, |line| {
                    if let Some(Line::Small(v)) = parse_line(line) {
                        if other_cov.contains(v) && small.insert(v) {
                            moved.push(v);
                        }
                    }
                    Ok(())
                })
                .with_context(|| format!("reading {}", self.path.display()));
                if let Err(e) = read {
                    undo(self, &moved);
                    return Err(e);
                }
                unset -= moved.len() as u64;
                self.set_changes += moved.len() as u64;
            }
        }
        self.bytes = start + total;
        self.in_ranges += unset;
        if self.record(&other) > 0 {
            // Primes of the set the new segments cover are known by them now: out of the
            // set, as a reopen would read them (one pass over the set; a merge is rare).
            let (covered, before) = (&self.ranges.covered, self.small.len());
            self.small.retain(|v| !covered.contains(*v));
            let moved = (before - self.small.len()) as u64;
            self.in_ranges += moved;
            self.set_changes += moved;
        }
        Ok(added)
    }
}

/// The first `len` bytes of primes.txt (whole lines), loaded.
fn load_all(file: &File, len: u64, covered: &Covered) -> std::io::Result<Loaded> {
    // Most lines of a large primes.txt are 64-bit primes of about 20 bytes: reserving for
    // that many avoids rehashing (which briefly needs old and new tables at once).
    // Lines inside covered segments are not held: then reserve for the rest only.
    let reserve = if covered.intervals() > 0 {
        0
    } else {
        (len / 20) as usize
    };
    let sets = (
        HashSet::with_capacity_and_hasher(reserve, Hash::default()),
        HashSet::with_hasher(Hash::default()),
    );
    load(file, 0, len, covered, sets, HashSet::new())
}

/// Lines `from..to` of primes.txt loaded into `sets` (or counted, in covered intervals);
/// the values of `watch` seen are taken out of it.
fn load(
    file: &File,
    from: u64,
    to: u64,
    covered: &Covered,
    (small, big): Sets,
    watch: HashSet<u64>,
) -> std::io::Result<Loaded> {
    let mut load = Loader {
        small,
        big,
        covered,
        last: None,
        in_ranges: 0,
        per_interval: HashMap::new(),
        watch,
    };
    scan_lines(file, from, to, |line| {
        load.line(line);
        Ok(())
    })?;
    Ok(Loaded {
        small: load.small,
        big: load.big,
        in_ranges: load.in_ranges,
        per_interval: load.per_interval,
        watch: load.watch,
    })
}

/// What [`load`] read.
struct Loaded {
    small: HashSet<u64, Hash>,
    big: HashSet<String, Hash>,
    in_ranges: u64,
    per_interval: HashMap<u64, u64>,
    watch: HashSet<u64>,
}

/// Why the ledger cannot describe this primes.txt, if it cannot: a covered interval holds
/// fewer lines than disjoint segments of it found primes.
fn ledger_mismatch(
    done: &[Finished],
    covered: &Covered,
    per_interval: &HashMap<u64, u64>,
) -> Option<String> {
    // Per covered interval, the primes of a set of disjoint segments in it (greedy by start):
    // a lower bound of the distinct primes it holds.
    let mut segs: Vec<(u64, u64, u64)> = done
        .iter()
        .filter_map(|r| r.covers().map(|(lo, hi)| (lo, hi, r.result.primes)))
        .collect();
    segs.sort_unstable();
    segs.dedup();
    let mut want: HashMap<u64, u64> = HashMap::new();
    let mut last_end: HashMap<u64, u64> = HashMap::new();
    for (lo, hi, primes) in segs {
        let Some((start, _)) = covered.interval_of(lo) else {
            continue;
        };
        if last_end.get(&start).is_none_or(|&end| lo > end) {
            *want.entry(start).or_default() += primes;
            last_end.insert(start, hi);
        }
    }
    want.into_iter().find_map(|(start, n)| {
        let got = per_interval.get(&start).copied().unwrap_or(0);
        (got < n).then(|| {
            format!("the segments from {start} found {n} primes, primes.txt holds {got} there")
        })
    })
}

/// Loads lines of primes.txt: into the set, or counted when a covered segment holds them.
struct Loader<'a> {
    small: HashSet<u64, Hash>,
    big: HashSet<String, Hash>,
    covered: &'a Covered,
    /// The covered interval of the previous line (range primes come in long runs).
    last: Option<(u64, u64)>,
    in_ranges: u64,
    /// Lines per covered interval (by its start).
    per_interval: HashMap<u64, u64>,
    /// Values looked for (taken out when seen).
    watch: HashSet<u64>,
}

impl Loader<'_> {
    fn line(&mut self, line: &[u8]) {
        match parse_line(line) {
            Some(Line::Small(v)) => {
                if !self.watch.is_empty() {
                    self.watch.remove(&v);
                }
                match self.last {
                    Some((lo, hi)) if lo <= v && v <= hi => {}
                    _ => self.last = self.covered.interval_of(v),
                }
                if let Some((lo, _)) = self.last {
                    self.in_ranges += 1;
                    *self.per_interval.entry(lo).or_default() += 1;
                } else {
                    self.small.insert(v);
                }
            }
            Some(Line::Big(s)) => {
                self.big.insert(s);
            }
            None => {}
        }
    }
}

enum Line {
    Small(u64),
    Big(String),
}

/// One line of primes.txt (canonical decimal; anything else is logged and skipped rather
/// than trusted).
fn parse_line(line: &[u8]) -> Option<Line> {
    let t = line.trim_ascii();
    if t.is_empty() {
        return None;
    }
    if !t.iter().all(u8::is_ascii_digit) {
        tracing::warn!(line = %String::from_utf8_lossy(t), "ignoring a line of primes.txt that is not a number");
        return None;
    }
    let mut v: u64 = 0;
    for &d in t {
        match v
            .checked_mul(10)
            .and_then(|x| x.checked_add((d - b'0') as u64))
        {
            Some(x) => v = x,
            None => return Some(Line::Big(String::from_utf8_lossy(t).into_owned())),
        }
    }
    Some(Line::Small(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A torn last line is cut, never read; appends skip what is present; reopen restores.
    fn torn_tail_and_dedup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("primes.txt");
        std::fs::write(&path, "2\n3\n5\n1844674407370955").expect("write");
        let mut f = PrimesFile::open(&path).expect("open");
        assert_eq!(f.truncated_bytes, 16);
        assert_eq!(f.len(), 3);
        let big = "170141183460469231731687303715884105727".to_string();
        assert_eq!(
            f.append(&[3, 7, 7, 11], &[big.clone(), big.clone()], &[], &[])
                .expect("append"),
            3
        );
        assert_eq!(
            f.append(&[2, 7], std::slice::from_ref(&big), &[], &[])
                .expect("append"),
            0
        );
        drop(f);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("2\n3\n5\n7\n11\n{big}\n")
        );
        let f = PrimesFile::open(&path).expect("reopen");
        assert_eq!((f.len(), f.truncated_bytes), (6, 0));
        std::fs::write(&path, "123").expect("write");
        let f = PrimesFile::open(&path).expect("open");
        assert_eq!(
            (f.len(), f.truncated_bytes),
            (0, 3),
            "a file of one torn line is empty"
        );
        assert_eq!(std::fs::read(&path).expect("read"), b"");
    }

    fn done(lo: u64, hi: u64, primes: u64) -> Finished {
        Finished {
            work: proto::msg::Work::Primes { lo, hi },
            worker: "w".into(),
            result: proto::msg::TaskDone {
                attempt: "a".into(),
                version: String::new(),
                size: 0,
                lines: 0,
                numbers: hi - lo + 1,
                blank: 0,
                invalid: 0,
                first_invalid: Vec::new(),
                primes,
                answer: None,
                first_prime: None,
                last_prime: None,
            },
        }
    }

    fn run(lo: u64, hi: u64, primes: &[u64]) -> Run {
        Run {
            lo,
            hi,
            primes: primes.to_vec(),
        }
    }

    #[test]
    /// Range primes are written once across files and segments, never held in the set; the
    /// ledger survives a reopen (covered primes counted, not loaded), and a ledger that
    /// does not match primes.txt is dropped rather than trusted.
    fn segments_by_interval_and_ledger() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("primes.txt");
        let mut f = PrimesFile::open(&path).expect("open");
        // A file prime first, then a segment [10, 30] in two messages, its cover.
        assert_eq!(f.append(&[13], &[], &[], &[]).expect("append"), 1);
        let r1 = run(10, 30, &[11, 13, 17]);
        let r2 = run(10, 30, &[19, 23, 29]);
        assert_eq!(f.append(&[], &[], &[r1], &[]).expect("append"), 2);
        assert_eq!(
            f.append(&[], &[], &[r2], &[done(10, 30, 6)])
                .expect("append"),
            3
        );
        assert_eq!((f.len(), f.in_set()), (6, 1));
        // Covered now: a file prime in it and an overlapping segment add only what is new.
        assert_eq!(f.append(&[17, 31], &[], &[], &[]).expect("append"), 1);
        assert_eq!(
            f.append(&[], &[], &[run(25, 40, &[29, 31, 37])], &[done(25, 40, 3)])
                .expect("append"),
            1
        );
        assert_eq!(f.len(), 8);
        // A count task's result is in the ledger too (it covers nothing).
        let mut count = done(100, 200, 21);
        count.work = proto::msg::Work::Count { lo: 100, hi: 200 };
        assert_eq!(
            f.append(&[], &[], &[], std::slice::from_ref(&count))
                .expect("append"),
            0
        );
        drop(f);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            "13
11
17
19
23
29
31
37
"
        );
        let f = PrimesFile::open(&path).expect("reopen");
        assert_eq!(f.len(), 8);
        assert_eq!(f.in_set(), 0, "every line lies in a covered segment");
        assert_eq!(f.finished.len(), 3);
        drop(f);
        // primes.txt replaced while the ledger stays: the ledger is dropped.
        std::fs::write(
            &path, "2
3
",
        )
        .expect("write");
        let f = PrimesFile::open(&path).expect("reopen");
        assert_eq!((f.len(), f.in_set()), (2, 2));
        assert_eq!(f.finished, vec![count.clone()], "only the count stays");
        assert_eq!(f.range_stats(), (0, 0));
        drop(f);
        let f = PrimesFile::open(&path).expect("reopen");
        assert_eq!(
            f.finished,
            vec![count],
            "the ledger was rewritten without the segments"
        );
    }

    fn count_task(lo: u64, hi: u64) -> Finished {
        let mut c = done(lo, hi, 1);
        c.work = proto::msg::Work::Count { lo, hi };
        c
    }

    /// A segment's finished task with its first and last prime, as a worker reports it.
    fn seg(lo: u64, hi: u64, primes: &[u64]) -> Finished {
        let mut f = done(lo, hi, primes.len() as u64);
        f.result.first_prime = primes.first().map(u64::to_string);
        f.result.last_prime = primes.last().map(u64::to_string);
        f
    }

    /// The lines of a file, checked to hold no value twice.
    fn distinct_lines(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).expect("read");
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let set: HashSet<&String> = lines.iter().collect();
        assert_eq!(set.len(), lines.len(), "a line twice in {}", path.display());
        lines
    }

    fn ledger_lines(path: &Path) -> usize {
        std::fs::read_to_string(ledger_path(path))
            .expect("read")
            .lines()
            .count()
    }

    #[test]
    /// A task is recorded once, whether it comes twice in a batch, in two batches, or
    /// after a reopen; `finished` holds it once.
    fn finished_task_recorded_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("primes.txt");
        let mut f = PrimesFile::open(&path).expect("open");
        let d = seg(10, 30, &[11, 13]);
        let r = run(10, 30, &[11, 13]);
        f.append(&[], &[], std::slice::from_ref(&r), &[d.clone(), d.clone()])
            .expect("append");
        f.append(&[], &[], std::slice::from_ref(&r), std::slice::from_ref(&d))
            .expect("append again");
        assert_eq!(ledger_lines(&path), 1);
        assert_eq!(f.finished, vec![d.clone()]);
        // Taking `finished` (as a coordinator does) changes no decision.
        let taken = std::mem::take(&mut f.finished);
        f.append(&[], &[], &[], std::slice::from_ref(&d))
            .expect("append after take");
        assert!(f.finished.is_empty());
        assert_eq!(taken.len(), 1);
        let n = f.ledger_bytes();
        drop(f);
        let mut f = PrimesFile::open(&path).expect("reopen");
        assert_eq!(f.ledger_bytes(), n);
        f.append(&[], &[], &[], &[d.clone(), count_task(1, 5)])
            .expect("append after reopen");
        assert_eq!(ledger_lines(&path), 2, "only the count task is new");
        assert_eq!(f.finished, vec![d, count_task(1, 5)]);
    }

    #[test]
    /// Open takes the set from the checkpoint and reads only the lines after it, to the same
    /// counts; a segment streamed at the checkpoint stays known by its progress (not the
    /// set), so a new attempt or a file prime in it writes nothing twice.
    fn checkpoint_then_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("primes.txt");
        let big = "170141183460469231731687303715884105727".to_string();
        let mut f = PrimesFile::open(&path).expect("open");
        assert!(!f.from_checkpoint());
        f.append(
            &[2, 3, 5],
            std::slice::from_ref(&big),
            &[run(10, 30, &[11, 13]), run(40, 60, &[41, 43, 47, 53, 59])],
            &[seg(40, 60, &[41, 43, 47, 53, 59])],
        )
        .expect("append");
        f.checkpoint().expect("checkpoint");
        assert!(meta_path(&path).exists() && set_path(&path).exists());
        // Appended after the checkpoint: the tail.
        f.append(&[7, 97], &[], &[run(10, 30, &[11, 13, 17, 19])], &[])
            .expect("append");
        let (len, in_set, bytes) = (f.len(), f.in_set(), f.bytes());
        assert_eq!((len, in_set), (15, 6));
        drop(f);
        let mut f = PrimesFile::open(&path).expect("reopen");
        assert!(f.from_checkpoint());
        assert_eq!(
            (f.len(), f.in_set(), f.bytes()),
            (len, in_set + 2, bytes),
            "17 and 19 (after the checkpoint, not covered) are read into the set"
        );
        assert_eq!(
            f.range_stats(),
            (1, 1),
            "[40, 60] covered, [10, 30] streamed"
        );
        // A new attempt of [10, 30] from its start, and file primes in it.
        assert_eq!(
            f.append(
                &[13, 23],
                &[],
                &[run(10, 30, &[11, 13, 17, 19, 23, 29])],
                &[]
            )
            .expect("append"),
            2
        );
        assert_eq!(f.append(&[11, 29, 47], &[], &[], &[]).expect("append"), 0);
        distinct_lines(&path);
        let (len, bytes) = (f.len(), f.bytes());
        drop(f);
        // A full scan (checkpoint gone) agrees.
        remove_checkpoint(&path);
        let f = PrimesFile::open(&path).expect("reopen without checkpoint");
        assert!(!f.from_checkpoint());
        assert_eq!((f.len(), f.bytes()), (len, bytes));
    }

    fn ino(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).expect("stat").ino()
    }

    #[test]
    /// A checkpoint after appends of segments only does not write the set again.
    fn checkpoint_of_ranges_keeps_the_dump() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("primes.txt");
        let mut f = PrimesFile::open(&path).expect("open");
        f.append(&[2, 3], &[], &[], &[]).expect("append");
        f.checkpoint().expect("checkpoint");
        let dump = ino(&set_path(&path));
        let meta = std::fs::read(meta_path(&path)).expect("meta");
        f.append(
            &[],
            &[],
            &[run(10, 20, &[11, 13, 17, 19])],
            &[seg(10, 20, &[11, 13, 17, 19])],
        )
        .expect("append");
        f.checkpoint().expect("checkpoint");
        assert_eq!(ino(&set_path(&path)), dump, "the dump is not rewritten");
        assert_ne!(std::fs::read(meta_path(&path)).expect("meta"), meta);
        let f = PrimesFile::open(&path).expect("reopen");
        assert!(f.from_checkpoint());
        assert_eq!((f.len(), f.in_set()), (6, 2));
        // Opened from it with no line after: still current.
        let mut f = f;
        f.checkpoint().expect("checkpoint");
        assert_eq!(ino(&set_path(&path)), dump);
        f.append(&[5], &[], &[], &[]).expect("append");
        f.checkpoint().expect("checkpoint");
        assert_ne!(ino(&set_path(&path)), dump, "a new file prime: a new dump");
        drop(f);
        let f = PrimesFile::open(&path).expect("reopen");
        assert!(f.from_checkpoint());
        assert_eq!((f.len(), f.in_set()), (7, 3));
    }

    /// A state with a checkpoint and lines after it, for the tests that spoil it.
    fn checkpointed(dir: &Path) -> PathBuf {
        let path = dir.join("primes.txt");
        let mut f = PrimesFile::open(&path).expect("open");
        f.append(&[2, 3, 5], &[], &[run(10, 30, &[11, 13, 17])], &[])
            .expect("append");
        f.append(
            &[],
            &[],
            &[run(10, 30, &[19, 23, 29])],
            &[seg(10, 30, &[11, 13, 17, 19, 23, 29])],
        )
        .expect("append");
        f.checkpoint().expect("checkpoint");
        f.append(&[7], &[], &[], &[]).expect("append");
        path
    }

    #[test]
    /// A checkpoint that does not describe the files is not used (and removed): the whole
    /// file is read, to the right counts.
    fn checkpoint_not_matching_is_not_used() {
        type Spoil = (&'static str, fn(&Path));
        let spoil: [Spoil; 6] = [
            ("primes.txt cut below it", |p| {
                let f = OpenOptions::new().write(true).open(p).expect("open");
                f.set_len(4).expect("cut");
            }),
            ("primes.txt replaced, same length", |p| {
                let text = std::fs::read_to_string(p).expect("read");
                std::fs::write(p, text.replace("17\n", "71\n")).expect("write");
            }),
            ("the dump damaged", |p| {
                let mut b = std::fs::read(set_path(p)).expect("read");
                b[0] ^= 1;
                std::fs::write(set_path(p), b).expect("write");
            }),
            ("the dump cut", |p| {
                let mut b = std::fs::read(set_path(p)).expect("read");
                b.pop();
                std::fs::write(set_path(p), b).expect("write");
            }),
            ("the ledger replaced", |p| {
                std::fs::write(ledger_path(p), "").expect("write");
            }),
            ("the meta unreadable", |p| {
                std::fs::write(meta_path(p), "{").expect("write");
            }),
        ];
        for (what, spoil) in spoil {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = checkpointed(dir.path());
            spoil(&path);
            let f = PrimesFile::open(&path).expect("open");
            assert!(!f.from_checkpoint(), "{what}");
            assert!(!meta_path(&path).exists(), "{what}: removed");
            let lines = distinct_lines(&path);
            assert_eq!(f.len(), lines.len(), "{what}");
        }
        // Untouched, it is used.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = checkpointed(dir.path());
        let f = PrimesFile::open(&path).expect("open");
        assert!(f.from_checkpoint());
        assert_eq!((f.len(), f.in_set()), (10, 4));
    }

    #[test]
    /// Unsynced appends after a checkpoint, then a crash that kept the ledger's new line but
    /// not the primes: the segment's primes are missing, so the checkpoint is not trusted and
    /// the full scan drops the ledger's segments (their primes load into the set).
    fn ledger_ahead_of_primes_after_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("primes.txt");
        let mut f = PrimesFile::open(&path).expect("open");
        f.set_sync(false);
        f.append(&[2, 3], &[], &[], &[]).expect("append");
        f.checkpoint().expect("checkpoint");
        let at = f.bytes();
        f.append(
            &[],
            &[],
            &[run(10, 20, &[11, 13, 17, 19])],
            &[seg(10, 20, &[11, 13, 17, 19])],
        )
        .expect("append");
        drop(f);
        // The lines after the checkpoint lost, the ledger's kept.
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(at).expect("cut");
        let mut f = PrimesFile::open(&path).expect("reopen");
        assert!(!f.from_checkpoint());
        assert_eq!((f.len(), f.range_stats()), (2, (0, 0)));
        assert!(f.finished.is_empty(), "the segment is to be done again");
        f.append(&[], &[], &[run(10, 20, &[11, 13, 17, 19])], &[])
            .expect("append");
        assert_eq!(distinct_lines(&path).len(), 6);
    }

    /// A source state: file primes (one big), a covered segment, a segment streamed but not
    /// finished, a count task.
    fn source(dir: &Path) -> PathBuf {
        let path = dir.join("src.txt");
        let big = "170141183460469231731687303715884105727".to_string();
        let mut f = PrimesFile::open(&path).expect("open");
        f.append(&[2, 3, 5, 101], std::slice::from_ref(&big), &[], &[])
            .expect("append");
        f.append(
            &[],
            &[],
            &[
                run(10, 40, &[11, 13, 17, 19, 23, 29, 31, 37]),
                run(200, 300, &[211, 223]),
            ],
            &[
                seg(10, 40, &[11, 13, 17, 19, 23, 29, 31, 37]),
                count_task(1, 100),
            ],
        )
        .expect("append");
        f.append(&[7], &[], &[], &[]).expect("append");
        path
    }

    fn merge(dst: &mut PrimesFile, src: &Path) -> u64 {
        let (p, l) = (
            std::fs::metadata(src).expect("stat").len(),
            std::fs::metadata(ledger_path(src)).expect("stat").len(),
        );
        dst.merge_from(src, p, &ledger_path(src), l).expect("merge")
    }

    #[test]
    /// Merged into an empty file, a state is copied byte for byte (primes and ledger), its
    /// segment primes known by the intervals, not the set.
    fn merge_into_empty_is_a_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = source(dir.path());
        let path = dir.path().join("primes.txt");
        let mut f = PrimesFile::open(&path).expect("open");
        assert_eq!(merge(&mut f, &src), 16);
        assert_eq!(
            std::fs::read(&path).expect("read"),
            std::fs::read(&src).expect("read")
        );
        assert_eq!(
            std::fs::read(ledger_path(&path)).expect("read"),
            std::fs::read(ledger_path(&src)).expect("read")
        );
        let s = PrimesFile::open(&src).expect("open src");
        assert_eq!((f.len(), f.in_set()), (s.len(), s.in_set()));
        assert_eq!(
            (f.len(), f.in_set()),
            (16, 8),
            "the 8 of [10, 40] by the interval"
        );
        assert_eq!(f.finished, s.finished);
        assert_eq!(f.range_stats(), (1, 0));
        // Merged again: nothing.
        assert_eq!(merge(&mut f, &src), 0);
        assert_eq!(ledger_lines(&path), 2);
    }

    #[test]
    /// Merged into a file that holds some of the same primes and segments: no prime twice,
    /// the other's segments covered, the same counts after a reopen, and the same bytes
    /// on two copies of the starting state.
    fn merge_into_overlapping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = source(dir.path());
        let start = |name: &str| {
            let path = dir.path().join(name);
            let mut f = PrimesFile::open(&path).expect("open");
            // 13 and 5 here as file primes, [30, 50] covered here (31, 37 of the other's
            // segment; 41 of no segment there), [10, 40] as a count task (not a segment).
            f.append(&[13, 5, 300007], &[], &[], &[]).expect("append");
            f.append(
                &[],
                &[],
                &[run(30, 50, &[31, 37, 41, 43, 47])],
                &[seg(30, 50, &[31, 37, 41, 43, 47])],
            )
            .expect("append");
            (path, f)
        };
        let (path, mut f) = start("a.txt");
        let added = merge(&mut f, &src);
        // 2 3 101 big 11 17 19 23 29 211 223 7 (13, 5, 31, 37 were here).
        assert_eq!(added, 12);
        let lines = distinct_lines(&path);
        assert_eq!(f.len(), lines.len());
        assert_eq!(f.len(), 3 + 5 + 12);
        for p in [11u64, 13, 29, 31, 37, 40, 50] {
            assert!(f.ranges.covered.contains(p), "{p} covered");
        }
        assert_eq!(ledger_lines(&path), 3, "[30, 50], [10, 40], count [1, 100]");
        let (len, in_set) = (f.len(), f.in_set());
        // 5 101 300007 2 3 big 211 223 7: 13 left the set for [10, 40].
        assert_eq!(in_set, 9);
        drop(f);
        let f = PrimesFile::open(&path).expect("reopen");
        assert_eq!((f.len(), f.in_set()), (len, in_set));
        assert_eq!(f.finished.len(), 3);
        let (path_b, mut g) = start("b.txt");
        merge(&mut g, &src);
        assert_eq!(
            std::fs::read(&path).expect("a"),
            std::fs::read(&path_b).expect("b")
        );
        assert_eq!(
            std::fs::read(ledger_path(&path)).expect("a"),
            std::fs::read(ledger_path(&path_b)).expect("b")
        );
    }

    #[test]
    /// Merging a state of segment primes only does not grow the set (nor its dump).
    fn merge_of_ranges_keeps_the_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.txt");
        let mut s = PrimesFile::open(&src).expect("open");
        let primes = [11, 13, 17, 19, 23, 29];
        s.append(&[], &[], &[run(10, 30, &primes)], &[seg(10, 30, &primes)])
            .expect("append");
        s.append(
            &[],
            &[],
            &[run(100, 110, &[101, 103, 107, 109])],
            &[seg(100, 110, &[101, 103, 107, 109])],
        )
        .expect("append");
        drop(s);
        let path = dir.path().join("primes.txt");
        let mut f = PrimesFile::open(&path).expect("open");
        f.append(&[2, 3, 103], &[], &[], &[]).expect("append");
        f.checkpoint().expect("checkpoint");
        let dump = ino(&set_path(&path));
        assert_eq!(merge(&mut f, &src), 9);
        assert_eq!(
            (f.len(), f.in_set()),
            (12, 2),
            "103 left the set for [100, 110]"
        );
        // Only the merge's own primes counted: the set shrank, the dump is rewritten once.
        f.checkpoint().expect("checkpoint");
        assert_ne!(ino(&set_path(&path)), dump);
        let dump = ino(&set_path(&path));
        // A second merge of it adds nothing, changes no set.
        assert_eq!(merge(&mut f, &src), 0);
        f.checkpoint().expect("checkpoint");
        assert_eq!(ino(&set_path(&path)), dump);
        drop(f);
        let f = PrimesFile::open(&path).expect("reopen");
        assert!(f.from_checkpoint());
        assert_eq!((f.len(), f.in_set()), (12, 2));
    }

    #[test]
    /// Only whole lines of the given lengths are merged; a ledger whose segments do not
    /// match its primes file gives its primes but not its segments.
    fn merge_lengths_and_a_ledger_not_matching() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.txt");
        std::fs::write(&src, "2\n3\n11\n13\n17\n").expect("write");
        let lines = [seg(10, 20, &[11, 13, 17, 19]), count_task(1, 9)]
            .iter()
            .map(|f| serde_json::to_string(f).expect("json") + "\n")
            .collect::<String>();
        std::fs::write(ledger_path(&src), &lines).expect("write");
        let path = dir.path().join("primes.txt");
        let mut f = PrimesFile::open(&path).expect("open");
        // "2\n3\n1" of the primes, the first ledger line and part of the second.
        let first = lines.find('\n').expect("a line") as u64 + 1;
        assert_eq!(
            f.merge_from(&src, 5, &ledger_path(&src), first + 3)
                .expect("merge"),
            2
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "2\n3\n");
        assert_eq!(
            f.finished.len(),
            0,
            "[10, 20] found 4 primes, the file has none there"
        );
        // All of it: [10, 20] lists 4 primes, the file holds 3 there: not taken.
        let n = std::fs::metadata(&src).expect("stat").len();
        assert_eq!(
            f.merge_from(&src, n, &ledger_path(&src), lines.len() as u64)
                .expect("merge"),
            3
        );
        assert_eq!((f.len(), f.in_set()), (5, 5));
        assert_eq!(f.finished, vec![count_task(1, 9)]);
        assert_eq!(f.range_stats(), (0, 0));
        // Longer than the file: refused.
        assert!(f.merge_from(&src, n + 1, &ledger_path(&src), 0).is_err());
        drop(f);
        let f = PrimesFile::open(&path).expect("reopen");
        assert_eq!((f.len(), f.in_set()), (5, 5));
    }
}
