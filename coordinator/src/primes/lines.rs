//! Reading primes.txt and its ledger line by line: the torn last line cut at open, the
//! lines loaded into the dedup set (or counted, inside covered segments), the ledger's
//! finished tasks, and the check that the ledger describes the primes file.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::Context;

use super::{Hash, Sets};
use crate::ranges::{Covered, Finished};

/// Opens `path` for appending and reading, creating it, and cuts a torn last line. Returns
/// the file, its length after the cut and the bytes cut.
pub(super) fn open_lines(path: &Path) -> anyhow::Result<(File, u64, u64)> {
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
pub(super) fn scan_lines(
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
pub(super) fn read_ledger(
    path: &Path,
    file: &File,
    len: u64,
) -> anyhow::Result<Vec<(u64, Finished)>> {
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

/// The first `len` bytes of primes.txt (whole lines), loaded.
pub(super) fn load_all(file: &File, len: u64, covered: &Covered) -> std::io::Result<Loaded> {
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
pub(super) fn load(
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
pub(super) struct Loaded {
    pub(super) small: HashSet<u64, Hash>,
    pub(super) big: HashSet<String, Hash>,
    pub(super) in_ranges: u64,
    pub(super) per_interval: HashMap<u64, u64>,
    pub(super) watch: HashSet<u64>,
}

/// Why the ledger cannot describe this primes.txt, if it cannot: a covered interval holds
/// fewer lines than disjoint segments of it found primes.
pub(super) fn ledger_mismatch(
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

pub(super) enum Line {
    Small(u64),
    Big(String),
}

/// One line of primes.txt (canonical decimal; anything else is logged and skipped rather
/// than trusted).
pub(super) fn parse_line(line: &[u8]) -> Option<Line> {
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
