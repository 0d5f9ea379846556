//! `primes.txt`: the durable, deduplicated set of primes found.
//!
//! The file is append-only. On open, a torn last line (a crash in the middle of an append)
//! is cut off, never read as a number, and the in-memory dedup set is rebuilt from what
//! remains. An append writes only primes not yet written, then fsyncs; a failed write takes
//! back what the batch decided, so it can simply be retried.
//!
//! Primes of `primes` jobs (range segments) are deduplicated by intervals instead of the set
//! ([`crate::ranges`]): the ledger `primes.txt.ranges` lists, one JSON line each, the
//! segments whose primes are all durable, appended and fsynced after the primes; at open,
//! lines of primes.txt inside those segments are counted, not loaded into the set.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

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
    /// The ledger's finished tasks read at open, for the machine to take (jobs resume from
    /// them).
    pub finished: Vec<Finished>,
    /// Bytes cut from a torn tail at open, for the log.
    pub truncated_bytes: u64,
    /// fsync every append (see [`PrimesFile::set_sync`]).
    sync: bool,
}

/// Bytes formatted before they are handed to the file during an append.
const WRITE_PIECE: usize = 1 << 20;

/// The ledger of `path` (`primes.txt` -> `primes.txt.ranges`).
pub fn ledger_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".ranges");
    PathBuf::from(s)
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
    // Find the end of the last complete line.
    let mut good = len;
    if len > 0 {
        let mut pos = len;
        let mut buf = vec![0u8; 64 << 10];
        'outer: loop {
            let start = pos.saturating_sub(buf.len() as u64);
            let n = (pos - start) as usize;
            file.seek(SeekFrom::Start(start))
                .and_then(|_| std::io::Read::read_exact(&mut file, &mut buf[..n]))
                .with_context(|| format!("reading {}", path.display()))?;
            for i in (0..n).rev() {
                if buf[i] == b'\n' {
                    good = start + i as u64 + 1;
                    break 'outer;
                }
            }
            if start == 0 {
                good = 0;
                break;
            }
            pos = start;
        }
    }
    if len > good {
        file.set_len(good)
            .and_then(|_| file.sync_all())
            .with_context(|| format!("cutting the torn tail of {}", path.display()))?;
    }
    Ok((file, good, len - good))
}

/// The ledger's finished tasks (a line that cannot be read is logged and skipped: a
/// segment's primes are then loaded into the set, which costs memory, never exactness).
fn read_ledger(path: &Path, file: &mut File) -> anyhow::Result<Vec<Finished>> {
    file.seek(SeekFrom::Start(0))
        .with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for line in BufReader::new(&*file).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Finished>(&line) {
            Ok(r) if r.covers().is_none_or(|(lo, hi)| lo <= hi) => out.push(r),
            Ok(_) => tracing::warn!(line, "ignoring a ledger line with lo > hi"),
            Err(e) => {
                tracing::warn!(line, error = %e, "ignoring a ledger line that cannot be read")
            }
        }
    }
    file.seek(SeekFrom::End(0))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(out)
}

impl PrimesFile {
    /// Opens (creating) `path`, cutting a torn tail and loading every prime.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let ledger_path = ledger_path(path);
        let (mut ledger, _, ledger_cut) = open_lines(&ledger_path)?;
        if ledger_cut > 0 {
            tracing::warn!(bytes = ledger_cut, path = %ledger_path.display(), "cut a torn last line");
        }
        let mut finished = read_ledger(&ledger_path, &mut ledger)?;
        let mut ranges = Ranges::default();
        for (lo, hi) in finished.iter().filter_map(Finished::covers) {
            ranges.cover(lo, hi);
        }
        let (mut file, good, truncated_bytes) = open_lines(path)?;
        let mut loaded = load(&mut file, good, &ranges.covered)
            .with_context(|| format!("reading {}", path.display()))?;
        // The ledger must describe this primes.txt: a segment it lists whose primes are not
        // all there (primes.txt deleted or replaced, the ledger kept) would be skipped for
        // good. Then its segments are dropped and everything loads into the set.
        if let Some(why) = ledger_mismatch(&finished, &ranges.covered, &loaded.per_interval) {
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
            ledger = open_lines(&ledger_path)?.0;
            ranges = Ranges::default();
            loaded = load(&mut file, good, &ranges.covered)
                .with_context(|| format!("reading {}", path.display()))?;
        }
        file.seek(SeekFrom::End(0))
            .with_context(|| format!("seeking {}", path.display()))?;
        Ok(PrimesFile {
            path: path.to_path_buf(),
            file,
            small: loaded.small,
            big: loaded.big,
            in_ranges: loaded.in_ranges,
            bytes: good,
            ranges,
            ledger_path,
            ledger,
            finished,
            truncated_bytes,
            sync: true,
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

    /// Distinct primes on disk.
    pub fn len(&self) -> usize {
        self.small.len() + self.big.len() + self.in_ranges as usize
    }

    /// Primes held in the dedup set (the rest are known by their segments).
    pub fn in_set(&self) -> usize {
        self.small.len() + self.big.len()
    }

    /// Covered segments (merged) and segments being streamed, for the log.
    pub fn range_stats(&self) -> (usize, usize) {
        (self.ranges.covered.intervals(), self.ranges.streaming())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the primes not yet written, then fsyncs; then records `finished` (tasks whose
    /// results are now all durable; a `primes` segment's primes included) in the ledger. Returns how many primes were new.
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
                if let Err(cut) = self.file.set_len(start).and_then(|_| self.file.sync_data()) {
                    tracing::error!(error = %cut, path = %self.path.display(), "cannot cut a failed append back");
                }
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
        if !finished.is_empty() {
            let mut lines = Vec::new();
            for c in finished {
                if let Some((lo, hi)) = c.covers() {
                    self.ranges.cover(lo, hi);
                }
                if let Ok(l) = serde_json::to_vec(c) {
                    lines.extend_from_slice(&l);
                    lines.push(b'\n');
                }
            }
            // The primes are durable: the covers hold in memory whatever happens here. A
            // ledger that misses them only makes the next start load those primes into the
            // set (and sieve those segments again if their job has to resume).
            if let Err(e) = self.ledger.write_all(&lines).and_then(|_| {
                if self.sync {
                    self.ledger.sync_data()
                } else {
                    Ok(())
                }
            }) {
                tracing::error!(error = %e, path = %self.ledger_path.display(), "cannot append to the ledger of finished segments");
            }
        }
        Ok(new)
    }
}

/// The first `len` bytes of primes.txt (whole lines), loaded.
fn load(file: &mut File, len: u64, covered: &Covered) -> std::io::Result<Loaded> {
    // Most lines of a large primes.txt are 64-bit primes of about 20 bytes: reserving for
    // that many avoids rehashing (which briefly needs old and new tables at once).
    let mut load = Loader {
        small: HashSet::with_capacity_and_hasher((len / 20) as usize, Hash::default()),
        big: HashSet::with_hasher(Hash::default()),
        covered,
        last: None,
        in_ranges: 0,
        per_interval: HashMap::new(),
    };
    if covered.intervals() > 0 {
        // Lines inside covered segments are not held: reserve for the rest only.
        load.small = HashSet::with_hasher(Hash::default());
    }
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::with_capacity(1 << 20, &*file);
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
                    load.line(&carry);
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
            load.line(&rest[..k]);
            rest = &rest[k + 1..];
        }
        carry.extend_from_slice(rest);
        reader.consume(n);
    }
    load.line(&carry);
    Ok(Loaded {
        small: load.small,
        big: load.big,
        in_ranges: load.in_ranges,
        per_interval: load.per_interval,
    })
}

/// What [`load`] read.
struct Loaded {
    small: HashSet<u64, Hash>,
    big: HashSet<String, Hash>,
    in_ranges: u64,
    per_interval: HashMap<u64, u64>,
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
}

impl Loader<'_> {
    fn line(&mut self, line: &[u8]) {
        match parse_line(line) {
            Some(Line::Small(v)) => {
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
}
