//! [`PrimesFile::merge_from`]: another primes file and its ledger added, streaming, with the
//! same decisions on every member of a group.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::lines::{ledger_mismatch, parse_line, read_ledger, scan_lines, Line};
use super::{PrimesFile, WRITE_PIECE};
use crate::ranges::{Covered, Finished};

impl PrimesFile {
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
