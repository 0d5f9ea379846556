//! `primes.txt`: the durable, deduplicated set of primes found.
//!
//! The file is append-only. On open, a torn last line (a crash in the middle of an append)
//! is cut off, never read as a number, and the in-memory dedup set is rebuilt from what
//! remains. An append writes only primes not yet in the set, then fsyncs; the set learns them
//! only once they are durable, so a failed write can simply be retried.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

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
    /// Bytes cut from a torn tail at open, for the log.
    pub truncated_bytes: u64,
}

impl PrimesFile {
    /// Opens (creating) `path`, cutting a torn tail and loading every prime.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
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
                file.seek(SeekFrom::Start(start))?;
                std::io::Read::read_exact(&mut file, &mut buf[..n])?;
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
        let truncated_bytes = len - good;
        if truncated_bytes > 0 {
            file.set_len(good)
                .with_context(|| format!("cutting the torn tail of {}", path.display()))?;
            file.sync_all()?;
        }
        // Most lines of a large primes.txt are 64-bit primes of about 20 bytes: reserving
        // for that many avoids rehashing (which briefly needs old and new tables at once).
        let mut small: HashSet<u64, Hash> =
            HashSet::with_capacity_and_hasher((good / 20) as usize, Hash::default());
        let mut big = HashSet::with_hasher(Hash::default());
        file.seek(SeekFrom::Start(0))?;
        let mut reader = BufReader::with_capacity(1 << 20, &file);
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
                        add_line(&carry, &mut small, &mut big);
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
                add_line(&rest[..k], &mut small, &mut big);
                rest = &rest[k + 1..];
            }
            carry.extend_from_slice(rest);
            reader.consume(n);
        }
        add_line(&carry, &mut small, &mut big);
        file.seek(SeekFrom::End(0))?;
        Ok(PrimesFile {
            path: path.to_path_buf(),
            file,
            small,
            big,
            truncated_bytes,
        })
    }

    /// Distinct primes on disk.
    pub fn len(&self) -> usize {
        self.small.len() + self.big.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the primes not yet present, then fsyncs. Returns how many were new. `big`
    /// MUST hold canonical decimal (no sign, no leading zeros) of values of 2^64 or more.
    pub fn append(&mut self, small: &[u64], big: &[String]) -> anyhow::Result<usize> {
        // One probe per prime: insert at once (a duplicate, in the set or earlier in this
        // batch, is refused), and take the new ones out again if the write fails.
        let new_small: Vec<u64> = small
            .iter()
            .copied()
            .filter(|p| self.small.insert(*p))
            .collect();
        let new_big: Vec<&String> = big
            .iter()
            .filter(|p| !self.big.contains(*p) && self.big.insert((*p).clone()))
            .collect();
        if new_small.is_empty() && new_big.is_empty() {
            return Ok(0);
        }
        let mut out = Vec::with_capacity(new_small.len() * 21);
        let mut digits = itoa::Buffer::new();
        for p in &new_small {
            out.extend_from_slice(digits.format(*p).as_bytes());
            out.push(b'\n');
        }
        for p in &new_big {
            out.extend_from_slice(p.as_bytes());
            out.push(b'\n');
        }
        let written = self
            .file
            .write_all(&out)
            .and_then(|_| self.file.sync_data())
            .with_context(|| format!("appending to {}", self.path.display()));
        if let Err(e) = written {
            // Not durable: forget them, so that the retry writes them.
            for p in &new_small {
                self.small.remove(p);
            }
            for p in &new_big {
                self.big.remove(*p);
            }
            return Err(e);
        }
        Ok(new_small.len() + new_big.len())
    }
}

/// Adds one line of primes.txt to the sets (canonical decimal; anything else is logged and
/// skipped rather than trusted).
fn add_line(line: &[u8], small: &mut HashSet<u64, Hash>, big: &mut HashSet<String, Hash>) {
    let t = line.trim_ascii();
    if t.is_empty() {
        return;
    }
    if !t.iter().all(u8::is_ascii_digit) {
        tracing::warn!(line = %String::from_utf8_lossy(t), "ignoring a line of primes.txt that is not a number");
        return;
    }
    let mut v: u64 = 0;
    for &d in t {
        match v
            .checked_mul(10)
            .and_then(|x| x.checked_add((d - b'0') as u64))
        {
            Some(x) => v = x,
            None => {
                big.insert(String::from_utf8_lossy(t).into_owned());
                return;
            }
        }
    }
    small.insert(v);
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
            f.append(&[3, 7, 7, 11], &[big.clone(), big.clone()])
                .expect("append"),
            3
        );
        assert_eq!(
            f.append(&[2, 7], std::slice::from_ref(&big))
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
}
