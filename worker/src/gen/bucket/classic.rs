//! The bucket sieve proper (Oliveira e Silva's) for the middle sieving primes: those above
//! [`super::MEDIUM`] whose states fit in memory (up to 1.95 M primes, all of √(10^15 +
//! 10^10), in ~24 MB). Each prime waits in the bucket of the segment of its next multiple;
//! sieving a segment takes its bucket, crosses off each prime's multiples there (one or a
//! few: the primes are larger than a tenth of a segment), and files the prime under the
//! segment of its next multiple. A prime costs nothing in the segments it skips.
//!
//! Buckets form a ring of 2^k, enough for the longest step of the largest prime (6p
//! numbers), so a bucket is reused once its segment is done. A bucket is a list of pages of
//! [`PAGE`] entries drawn from one pool and returned to it as soon as they are read, so the
//! memory is that of the primes held (8 bytes each) plus a page per bucket, however
//! unevenly the buckets fill (vectors per bucket would each keep the capacity of their
//! fullest moment: 40 bytes per prime, measured). A prime whose first multiple
//! (its square, when the range starts below it) lies beyond the ring waits in `later`,
//! which is sorted since squares grow with the primes.

use super::super::sieve::{RangeSieve, GAP, R, SEGMENT_BYTES, TABLES};

/// log2 of the bytes of the segments the buckets stand for: 256 KiB, a quarter of the
/// plain sieve's [`SEGMENT_BYTES`], so that a segment stays in L2 while scattered
/// multiples are crossed off in it (with 1 MiB segments, half the time went to misses).
const SEG_SHIFT: u32 = 18;
/// Bytes of a bucket's segment.
const SEG: usize = 1 << SEG_SHIFT;
const _: () = assert!(SEGMENT_BYTES % SEG == 0);
// A held prime p > MEDIUM steps at least 2 * (p / 30) bytes: more than a segment, so it has
// at most one multiple per segment.
const _: () = assert!(2 * (super::MEDIUM / 30) >= SEG as u64);

/// One prime's state: p = 30a + R[c], its next multiple at byte `byte` of its bucket's
/// segment with cofactor at wheel position j. `pos` = byte << 6 | c << 3 | j.
#[derive(Clone, Copy)]
struct Entry {
    a: u32,
    pos: u32,
}

impl Entry {
    fn new(a: u64, c: usize, j: usize, byte: u64) -> Entry {
        let off = byte & (SEG as u64 - 1);
        Entry {
            a: a as u32,
            pos: ((off << 6) | (c << 3) as u64 | j as u64) as u32,
        }
    }
}

/// Bytes of memory per prime held: the entry, and the last pages, part full.
pub(super) const BYTES_PER_PRIME: usize = 9;

/// Entries of a page (8 KiB).
const PAGE: usize = 1024;

/// An upper bound of the n-th prime: n (ln n + ln ln n) for n >= 6 (Rosser).
fn nth_upper(n: usize) -> u64 {
    if n < 6 {
        return 13;
    }
    let x = n as f64;
    (x * (x.ln() + x.ln().ln())).min(u64::MAX as f64) as u64 + 1
}

/// The middle primes' buckets over one range.
pub(super) struct Classic {
    /// Pages of entries, each with capacity [`PAGE`]; `free` lists the empty ones.
    pages: Vec<Vec<Entry>>,
    free: Vec<u32>,
    /// The pages of each bucket, in the order they were filled.
    ring: Vec<Vec<u32>>,
    /// Segment to sieve next, counted from the range's first.
    seg: u64,
    /// Segments in the range.
    segs: u64,
    /// Primes whose first multiple is beyond the ring, with its byte from the range's start.
    later: Vec<(Entry, u64)>,
    later_at: usize,
    /// The largest prime held (primes above it are the caller's).
    limit: u64,
}

impl Classic {
    /// The primes in (from, to], at most `max_primes` of them (the smallest), over the range
    /// of `bytes` wheel bytes from byte index `base` (number / 30).
    pub(super) fn new(from: u64, to: u64, max_primes: usize, base: u64, bytes: u64) -> Classic {
        let segs = bytes.div_ceil(SEG as u64);
        // Longest step (6p numbers) in segments, and the ring that covers it: p is at most
        // the (π(from) + max_primes)-th prime (a ring sized for a larger p would keep the
        // capacity of buckets that are not used again for long).
        let largest = to.min(nth_upper(super::pi_upper(from).saturating_add(max_primes)));
        let max_step = (6 * (largest / 30 + 1) + 8) >> SEG_SHIFT;
        let ring_len = (max_step as usize + 2).next_power_of_two();
        let mut c = Classic {
            pages: Vec::new(),
            free: Vec::new(),
            ring: vec![Vec::new(); ring_len],
            seg: 0,
            segs,
            later: Vec::new(),
            later_at: 0,
            limit: from,
        };
        if to <= from || segs == 0 {
            return c;
        }
        let mut held = 0usize;
        let mut gen = RangeSieve::new(from + 1, to);
        while let Some(s) = gen.next_segment() {
            let (b0, bytes) = s.wheel_bytes();
            for (i, &byte) in bytes.iter().enumerate() {
                let mut bits = byte;
                while bits != 0 {
                    let k = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let a = b0 + i as u64;
                    let p = 30 * a + R[k];
                    if p <= from || p > to {
                        continue;
                    }
                    if held == max_primes {
                        return c;
                    }
                    held += 1;
                    c.limit = p;
                    let f = super::first_multiple(p, base);
                    let (j, g) = ((f & 7) as usize, f >> 3);
                    let s = g >> SEG_SHIFT;
                    if s >= segs {
                        continue;
                    }
                    let e = Entry::new(a, k, j, g);
                    if s < ring_len as u64 {
                        c.push(s as usize, e);
                    } else {
                        c.later.push((e, g));
                    }
                }
            }
        }
        c.limit = to;
        c
    }

    /// The largest prime held: the caller sieves with the primes above it.
    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    /// Crosses off the held primes' multiples in the next piece of the range, `piece` (a
    /// plain sieve's segment: whole bucket segments, but for the range's last).
    pub(super) fn cross(&mut self, piece: &mut [u8]) {
        for seg in piece.chunks_mut(SEG) {
            self.cross_one(seg);
        }
    }

    fn cross_one(&mut self, seg: &mut [u8]) {
        let s = self.seg;
        let mask = self.ring.len() - 1;
        let horizon = s + self.ring.len() as u64;
        while let Some(&(e, g)) = self.later.get(self.later_at) {
            if g >> SEG_SHIFT >= horizon {
                break;
            }
            self.push((g >> SEG_SHIFT) as usize & mask, e);
            self.later_at += 1;
        }
        let slot = s as usize & mask;
        let mut list = std::mem::take(&mut self.ring[slot]);
        for &pg in &list {
            let mut page = std::mem::take(&mut self.pages[pg as usize]);
            for e in &page {
                let a = e.a as u64;
                let c = ((e.pos >> 3) & 7) as usize;
                let mut j = (e.pos & 7) as usize;
                let mut byte = (e.pos >> 6) as u64;
                // One multiple here: the entry is in this segment's bucket, and the
                // next is at least 2a > SEG bytes further.
                if let Some(b) = seg.get_mut(byte as usize) {
                    *b &= TABLES.mask[c][j];
                    byte += a * GAP[j] + TABLES.corr[c][j];
                    j = (j + 1) & 7;
                } else {
                    // Beyond the end of the range's last, short segment.
                    continue;
                }
                // Beyond a full segment: file it under its next one (a short segment is
                // the range's last, and its primes are done).
                let d = byte >> SEG_SHIFT;
                if d > 0 && s + d < self.segs {
                    self.push((s + d) as usize & mask, Entry::new(a, c, j, byte));
                }
            }
            page.clear();
            self.pages[pg as usize] = page;
            self.free.push(pg);
        }
        list.clear();
        self.ring[slot] = list;
        self.seg += 1;
    }

    /// Files `e` in bucket `slot`: in its last page, or a new one from the pool.
    #[inline]
    fn push(&mut self, slot: usize, e: Entry) {
        if let Some(&pg) = self.ring[slot].last() {
            let page = &mut self.pages[pg as usize];
            if page.len() < PAGE {
                page.push(e);
                return;
            }
        }
        let pg = match self.free.pop() {
            Some(pg) => pg,
            None => {
                self.pages.push(Vec::with_capacity(PAGE));
                (self.pages.len() - 1) as u32
            }
        };
        self.pages[pg as usize].push(e);
        self.ring[slot].push(pg);
    }
}
