//! A segmented sieve of Eratosthenes on a mod-30 wheel: the primes (or their count) in any
//! range [lo, hi] of 64-bit numbers, a segment at a time.
//!
//! - **Wheel.** One byte stands for 30 consecutive numbers, one bit for each residue
//!   coprime to 30 (1, 7, 11, 13, 17, 19, 23, 29): multiples of 2, 3 and 5 take no space and
//!   no time.
//! - **Pre-sieve.** The multiples of the primes 7 to 71 repeat with short periods: each
//!   segment starts as a copy of those patterns (five of them, ANDed) instead of being
//!   crossed off (about half of all crossings on [10^12, 10^12 + 10^10]).
//! - **Cache-sized segments.** A segment is [`SEGMENT_BYTES`] bytes (31 million numbers,
//!   in the L2 cache); primes below 2^20 cross it in blocks of 32 KiB, each while it is in
//!   L1. Each sieving prime keeps its next multiple and its place on the wheel from one
//!   segment to the next, and crosses off eight multiples per turn of the wheel with offsets
//!   computed once per segment.
//! - **Above 2^44** (short ranges; long ones go to [`super::bucket`]). Sieving primes go up
//!   to [`BASE_LIMIT`] (2^22) at most, so memory stays
//!   small for ranges near 2^64 (where the square root is 2^32); the numbers that survive
//!   (about 4%) are then tested with the exact 64-bit test ([`crate::prime`]). Below 2^44
//!   the sieve alone decides.
//!
//! Sieving primes larger than a segment are visited once per segment (at most 295,947 of
//! them). Long ranges above 2^44 go to the bucket sieve instead ([`super::bucket`]), which
//! uses [`RangeSieve::partial`] for its primes up to 2^22.

use super::isqrt;
use crate::prime;

/// The residues mod 30 that a bit stands for, in bit order.
pub(super) const R: [u64; 8] = [1, 7, 11, 13, 17, 19, 23, 29];
/// R[j + 1] - R[j] (the last wraps to 31).
pub(super) const GAP: [u64; 8] = [6, 4, 2, 4, 2, 4, 6, 2];

/// Bytes of one segment (30 numbers each).
pub const SEGMENT_BYTES: usize = 1024 * 1024;

/// Bytes of a core's L1 data cache (the sub-blocks small primes cross).
const L1_BYTES: u64 = 32 * 1024;

/// Sieving primes go up to this at most; above BASE_LIMIT², survivors are tested.
pub const BASE_LIMIT: u64 = 1 << 22;

/// Below this the wheel is not used (2, 3 and 5, and the pre-sieved primes themselves).
pub(super) const SMALL: u64 = 1024;

/// Pre-sieved primes, in groups whose multiples repeat every product-of-the-group bytes:
/// a segment starts as a copy of the first group's pattern, ANDed with the others'.
const PRE: [&[u64]; 5] = [
    &[7, 11, 13, 17, 19],
    &[23, 29, 31],
    &[37, 41, 43],
    &[47, 53, 59],
    &[61, 67, 71],
];
/// The largest pre-sieved prime: sieving primes start above it.
const PRE_MAX: u64 = 71;

/// For bit t of a little-endian word of eight wheel bytes: the number it stands for, beyond
/// the word's first (bit 8 b + k is 30 b + R[k]).
const WORD_OFFSET: [u64; 64] = {
    let mut t = [0u64; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = 30 * (i as u64 / 8) + R[i % 8];
        i += 1;
    }
    t
};

/// Appends, ascending, the number each set bit of `bytes` stands for: bit k of byte i is
/// `first + 30 i + R[k]` (`first` a multiple of 30). The caller wants them all, and the
/// last fits in a u64. Eight bytes at a time, with room made once: taking a byte, a bit
/// and a 128-bit sum per number, and growing the vector as it went, made listing the
/// primes of a segment cost 2.4 times sieving it.
pub(super) fn push_survivors(bytes: &[u8], first: u64, out: &mut Vec<u64>) {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    out.reserve(
        words
            .clone()
            .map(|c| word(c).count_ones() as usize)
            .chain(tail.iter().map(|b| b.count_ones() as usize))
            .sum(),
    );
    let mut base = first;
    for c in words {
        let mut w = word(c);
        while w != 0 {
            let t = w.trailing_zeros() as usize;
            w &= w - 1;
            out.push(base + WORD_OFFSET[t]);
        }
        base += 240;
    }
    for &byte in tail {
        let mut bits = byte;
        while bits != 0 {
            let k = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            out.push(base + R[k]);
        }
        base += 30;
    }
}

/// Eight wheel bytes as a little-endian word (`c` holds eight).
fn word(c: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(c);
    u64::from_le_bytes(b)
}

pub(super) const fn bit_of(r: u64) -> u8 {
    let mut k = 0;
    while k < 8 {
        if R[k] == r {
            return k as u8;
        }
        k += 1;
    }
    255
}

/// For a prime of residue class `c` (index into R) whose cofactor is at wheel position `j`:
/// the mask clearing the multiple's bit, and how many bytes the next multiple is further
/// beyond `a * GAP[j]` (a = p / 30).
pub(super) struct Tables {
    pub(super) mask: [[u8; 8]; 8],
    pub(super) corr: [[u64; 8]; 8],
    /// Byte offset of the k-th multiple in one turn of the wheel (cofactor 30b + R[k]),
    /// beyond a * (R[k] - 1), from the first (cofactor 30b + 1).
    pub(super) off: [[u64; 8]; 8],
}

pub(super) const TABLES: Tables = {
    let mut t = Tables {
        mask: [[0; 8]; 8],
        corr: [[0; 8]; 8],
        off: [[0; 8]; 8],
    };
    let mut c = 0;
    while c < 8 {
        let mut j = 0;
        while j < 8 {
            let r = (R[c] * R[j]) % 30;
            let r2 = (R[c] * R[(j + 1) % 8]) % 30;
            t.mask[c][j] = !(1u8 << bit_of(r));
            t.corr[c][j] = (R[c] * GAP[j] + r - r2) / 30;
            t.off[c][j] = (R[c] * R[j]) / 30;
            j += 1;
        }
        c += 1;
    }
    t
};

/// One sieving prime's state between segments.
#[derive(Clone, Copy)]
struct Sieving {
    /// Byte of its next multiple, from the start of the current segment.
    byte: u64,
    /// p / 30.
    a: u64,
    /// Index of p mod 30 in R.
    class: u8,
    /// Wheel position of the next multiple's cofactor.
    wheel: u8,
}

/// The primes up to `limit`: from one table made once per process up to [`BASE_LIMIT`]
/// (every range sieve needs them, and a follower regenerating a job's segments, or a worker
/// sieving them, made the table again for each: ~6% of its time), made anew above it.
fn sieving_primes(limit: u64) -> std::borrow::Cow<'static, [u64]> {
    static TABLE: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    if limit > BASE_LIMIT {
        return small_primes(limit).into();
    }
    let table = TABLE.get_or_init(|| small_primes(BASE_LIMIT));
    table[..table.partition_point(|&p| p <= limit)].into()
}

/// The odd primes up to `limit` (a plain sieve; at most 2^22, a few milliseconds).
pub fn small_primes(limit: u64) -> Vec<u64> {
    let limit = limit as usize;
    if limit < 2 {
        return Vec::new();
    }
    let mut composite = vec![false; limit + 1];
    let mut out = vec![2];
    let mut i = 3;
    while i <= limit {
        if !composite[i] {
            out.push(i as u64);
            let mut m = i * i;
            while m <= limit {
                composite[m] = true;
                m += 2 * i;
            }
        }
        i += 2;
    }
    out
}

/// The pre-sieve patterns, built once per process (845 KB).
fn patterns() -> &'static [Vec<u8>] {
    static PATTERNS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    PATTERNS.get_or_init(|| {
        PRE.iter()
            .map(|group| {
                let period: u64 = group.iter().product();
                let mut pat = vec![0xffu8; period as usize];
                for &p in group.iter() {
                    // Every multiple p·q with q coprime to 30 over one period (30 · period
                    // numbers): for q = 30j + R[i], byte p·j + p·R[i]/30 and one fixed bit,
                    // so 8 strided passes without a division.
                    for r in R {
                        let bit = bit_of(p * r % 30);
                        let mut b = (p * r / 30) as usize;
                        while b < pat.len() {
                            pat[b] &= !(1 << bit);
                            b += p as usize;
                        }
                    }
                }
                pat
            })
            .collect()
    })
}

/// Crosses off `sp`'s multiples in `seg` up to byte `end` (exclusive), leaving it at its
/// next multiple (bytes counted from the start of `seg`).
#[inline]
fn cross(seg: &mut [u8], sp: &mut Sieving, end: u64) {
    let c = sp.class as usize;
    let mut i = sp.byte;
    if i >= end {
        return;
    }
    let mut j = sp.wheel as usize;
    let a = sp.a;
    while j != 0 && i < end {
        seg[i as usize] &= TABLES.mask[c][j];
        i += a * GAP[j] + TABLES.corr[c][j];
        j = (j + 1) & 7;
    }
    if j == 0 {
        let p = a * 30 + R[c];
        let off: [u64; 8] = std::array::from_fn(|k| a * (R[k] - 1) + TABLES.off[c][k]);
        let m = &TABLES.mask[c];
        while i + off[7] < end {
            let b = i as usize;
            seg[b + off[0] as usize] &= m[0];
            seg[b + off[1] as usize] &= m[1];
            seg[b + off[2] as usize] &= m[2];
            seg[b + off[3] as usize] &= m[3];
            seg[b + off[4] as usize] &= m[4];
            seg[b + off[5] as usize] &= m[5];
            seg[b + off[6] as usize] &= m[6];
            seg[b + off[7] as usize] &= m[7];
            i += p;
        }
        while i < end {
            seg[i as usize] &= TABLES.mask[c][j];
            i += a * GAP[j] + TABLES.corr[c][j];
            j = (j + 1) & 7;
        }
    }
    sp.byte = i;
    sp.wheel = j as u8;
}

/// The sieve of one range, walked a segment at a time.
pub struct RangeSieve {
    lo: u64,
    hi: u64,
    /// Primes below [`SMALL`] in the range, reported with the first segment.
    small: Vec<u64>,
    small_sent: bool,
    /// First number (a multiple of 30) of the next segment; None when done.
    next: Option<u128>,
    sieving: Vec<Sieving>,
    /// Survivors must be tested (the sieving primes stop below sqrt(hi)).
    test_survivors: bool,
    seg: Vec<u8>,
}

/// One sieved segment: numbers [first, first + 30 * bytes.len()), clipped to the range.
pub struct Segment<'a> {
    first: u128,
    lo: u64,
    hi: u64,
    bytes: &'a [u8],
    small: &'a [u64],
    test: bool,
}

impl RangeSieve {
    /// The sieve of [lo, hi] (inclusive; empty if lo > hi).
    pub fn new(lo: u64, hi: u64) -> Self {
        let root = isqrt(hi);
        Self::with_limit(lo, hi, root.min(BASE_LIMIT), root > BASE_LIMIT)
    }

    /// The sieve of [lo, hi] by the primes up to `limit` only: its survivors include
    /// composites whose factors are all larger (the bucket sieve crosses those off).
    pub fn partial(lo: u64, hi: u64, limit: u64) -> Self {
        Self::with_limit(lo, hi, limit, false)
    }

    fn with_limit(lo: u64, hi: u64, limit: u64, test_survivors: bool) -> Self {
        let small: Vec<u64> = if lo < SMALL {
            // A plain sieve of [0, SMALL): asking the exact test would build its 2^24-bit
            // table (~20 ms, once per process) for these few numbers.
            sieving_primes(SMALL - 1)
                .iter()
                .copied()
                .filter(|&n| n >= lo && n <= hi)
                .collect()
        } else {
            Vec::new()
        };
        let start = lo.max(SMALL);
        let next = (start <= hi && lo <= hi).then(|| (start / 30 * 30) as u128);
        let base = next.map_or(0, |b| b as u64);
        let sieving = sieving_primes(limit)
            .iter()
            .filter(|&&p| p > PRE_MAX)
            .map(|&p| {
                // First multiple p*q >= max(p^2, base) with q coprime to 30.
                let q0 = p.max(base.div_ceil(p));
                let (b, r) = (q0 / 30, q0 % 30);
                let (b, j) = match R.iter().position(|&x| x >= r) {
                    Some(j) => (b, j),
                    None => (b + 1, 0),
                };
                // In u64 unless p*q passes 2^64 (ranges near 2^64 only): a u128 division
                // per sieving prime cost ~5% of regenerating a segment.
                let byte = match b
                    .checked_mul(30)
                    .and_then(|q| q.checked_add(R[j]))
                    .and_then(|q| q.checked_mul(p))
                {
                    Some(m) => m / 30 - base / 30,
                    None => {
                        let m = p as u128 * (b as u128 * 30 + R[j] as u128);
                        u64::try_from(m / 30 - base as u128 / 30).unwrap_or(u64::MAX)
                    }
                };
                Sieving {
                    byte,
                    a: p / 30,
                    class: bit_of(p % 30),
                    wheel: j as u8,
                }
            })
            .collect();
        RangeSieve {
            lo,
            hi,
            small,
            small_sent: false,
            next,
            sieving,
            test_survivors,
            seg: vec![0; SEGMENT_BYTES],
        }
    }

    /// Numbers in the range not yet sieved.
    pub fn remaining(&self) -> u64 {
        match self.next {
            Some(n) => (self.hi as u128 + 1 - n.max(self.lo as u128)).min(u64::MAX as u128) as u64,
            None => 0,
        }
    }

    /// Sieves the next segment; None once the range is done.
    pub fn next_segment(&mut self) -> Option<Segment<'_>> {
        let Some(first) = self.next else {
            if self.small_sent || self.small.is_empty() {
                return None;
            }
            // A range below the wheel: only its small primes.
            self.small_sent = true;
            return Some(Segment {
                first: 0,
                lo: self.lo,
                hi: self.hi,
                bytes: &[],
                small: &self.small,
                test: false,
            });
        };
        let end = self.hi as u128 + 1;
        let len = ((end - first).div_ceil(30) as usize).min(SEGMENT_BYTES);
        let after = first + 30 * len as u128;
        self.next = (after < end).then_some(after);
        let seg = &mut self.seg[..len];
        // Pre-sieved patterns, from this segment's place in each period.
        for (g, pat) in patterns().iter().enumerate() {
            let mut at = ((first / 30) % pat.len() as u128) as usize;
            let mut filled = 0;
            while filled < len {
                let n = (len - filled).min(pat.len() - at);
                let (dst, src) = (&mut seg[filled..filled + n], &pat[at..at + n]);
                if g == 0 {
                    dst.copy_from_slice(src);
                } else {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d &= s);
                }
                filled += n;
                at = 0;
            }
        }
        // Primes that hit an L1-sized block many times cross it block by block, while it is
        // in L1; the others cross the whole segment at once.
        let len64 = len as u64;
        let split = self.sieving.partition_point(|sp| sp.a * 30 < L1_BYTES);
        let (near, far) = self.sieving.split_at_mut(split);
        let mut end = 0;
        while end < len64 {
            end = (end + L1_BYTES).min(len64);
            for sp in near.iter_mut() {
                cross(seg, sp, end);
            }
        }
        for sp in far.iter_mut() {
            cross(seg, sp, len64);
        }
        for sp in self.sieving.iter_mut() {
            sp.byte -= len64;
        }
        let small: &[u64] = if self.small_sent {
            &[]
        } else {
            self.small_sent = true;
            &self.small
        };
        Some(Segment {
            first,
            lo: self.lo,
            hi: self.hi,
            bytes: &self.seg[..len],
            small,
            test: self.test_survivors,
        })
    }
}

impl Segment<'_> {
    /// Numbers of this segment, clipped to the range: (first, last).
    pub fn span(&self) -> (u64, u64) {
        if self.bytes.is_empty() {
            return (self.lo, self.hi.min(SMALL - 1));
        }
        let end = self.first + 30 * self.bytes.len() as u128 - 1;
        (
            (self.first.max(self.lo.max(SMALL) as u128)) as u64,
            end.min(self.hi as u128) as u64,
        )
    }

    /// The primes below 1024 of the range (with the first segment only).
    pub fn small(&self) -> &[u64] {
        self.small
    }

    /// The segment's wheel bytes as sieved (unclipped: the edge bytes may hold numbers
    /// outside the range) and the index of its first byte (number / 30).
    pub fn wheel_bytes(&self) -> (u64, &[u8]) {
        ((self.first / 30) as u64, self.bytes)
    }

    /// Appends every survivor of the wheel in range, ascending: the bytes wholly inside the
    /// range a word at a time ([`push_survivors`]), the edge bytes number by number.
    fn survivors(&self, out: &mut Vec<u64>) {
        let lo = self.lo.max(SMALL) as u128;
        let hi = self.hi as u128;
        let len = self.bytes.len();
        // Byte i stands for first + 30 i + 1 ..= first + 30 i + 29: bytes [a, b) are inside.
        let a = if lo <= self.first + 1 {
            0
        } else {
            (lo - self.first - 1).div_ceil(30).min(len as u128) as usize
        };
        let b = if hi < self.first + 29 {
            0
        } else {
            ((hi - self.first - 29) / 30 + 1).min(len as u128) as usize
        };
        let (a, b) = if a < b { (a, b) } else { (len, len) };
        let edge = |from: usize, to: usize, out: &mut Vec<u64>| {
            for (i, &byte) in self.bytes[from..to].iter().enumerate() {
                let mut bits = byte;
                while bits != 0 {
                    let k = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let n = self.first + 30 * (from + i) as u128 + R[k] as u128;
                    if n >= lo && n <= hi {
                        out.push(n as u64);
                    }
                }
            }
        };
        edge(0, a, out);
        if a < b {
            // Inside the range, so below 2^64.
            push_survivors(&self.bytes[a..b], (self.first + 30 * a as u128) as u64, out);
        }
        edge(b, len, out);
    }

    /// How many primes: popcount of the interior, with the edges checked one by one.
    pub fn count(&self) -> u64 {
        let mut n = self.small.len() as u64;
        if self.bytes.is_empty() {
            return n;
        }
        if self.test {
            let mut buf = Vec::new();
            self.primes(&mut buf);
            return buf.len() as u64;
        }
        let (first, last) = self.span();
        let bytes = self.bytes;
        // Bytes wholly inside [first, last].
        let byte_of = |x: u64| ((x as u128 - self.first) / 30) as usize;
        let (b0, b1) = (byte_of(first), byte_of(last));
        let full_lo = b0 + 1;
        let full_hi = b1; // exclusive
        if full_lo < full_hi {
            let mut words = bytes[full_lo..full_hi].chunks_exact(8);
            for c in &mut words {
                let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                n += w.count_ones() as u64;
            }
            n += words
                .remainder()
                .iter()
                .map(|b| b.count_ones() as u64)
                .sum::<u64>();
        }
        for &b in [b0, b1].iter().take(if b0 == b1 { 1 } else { 2 }) {
            let mut byte = bytes[b];
            while byte != 0 {
                let k = byte.trailing_zeros() as usize;
                byte &= byte - 1;
                let x = self.first + 30 * b as u128 + R[k] as u128;
                if x >= first as u128 && x <= last as u128 {
                    n += 1;
                }
            }
        }
        n
    }

    /// Appends the primes of this segment, ascending.
    pub fn primes(&self, out: &mut Vec<u64>) {
        out.extend_from_slice(self.small);
        if self.test {
            let mut cands = Vec::new();
            self.survivors(&mut cands);
            let start = out.len();
            prime::filter_primes_u64(&cands, out);
            out[start..].sort_unstable();
        } else {
            self.survivors(out);
        }
    }
}

/// For each target `t` of `targets` (ascending, each in [lo, hi]): the number of primes in
/// [lo, t]. One pass of the sieve over [lo, hi], popcounts from one target to the next: the
/// prime-counting function's P2 term asks for π at ~√x points of one interval this way.
pub fn counts_at(lo: u64, hi: u64, targets: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(targets.len());
    if lo > hi {
        return out;
    }
    if lo < SMALL || isqrt(hi) > BASE_LIMIT {
        // Below the wheel or where survivors are tested: list the primes (tests, small x).
        let ps = primes_in(lo, hi);
        out.extend(
            targets
                .iter()
                .map(|&t| ps.partition_point(|&p| p <= t) as u64),
        );
        return out;
    }
    // Bits of a byte standing for residues <= r.
    let upto: [u8; 30] = std::array::from_fn(|r| {
        (0..8)
            .filter(|&k| R[k] <= r as u64)
            .fold(0u8, |m, k| m | 1 << k)
    });
    let mut s = RangeSieve::new(lo, hi);
    let mut before = 0u64; // primes in [lo, first of the segment)
    let mut k = 0;
    while let Some(seg) = s.next_segment() {
        let (_, last) = seg.span();
        let first = seg.first as u64;
        // Bits of the first byte below lo (only in the range's first segment).
        let below = if first < lo {
            let r = (lo - first - 1).min(29) as usize;
            (seg.bytes[0] & upto[r]).count_ones() as u64
        } else {
            0
        };
        let (mut at, mut acc) = (0usize, 0u64); // popcount of bytes [0, at)
        while k < targets.len() && targets[k] <= last {
            let t = targets[k];
            let bt = ((t - first) / 30) as usize;
            acc += seg.bytes[at..bt]
                .iter()
                .map(|b| b.count_ones() as u64)
                .sum::<u64>();
            at = bt;
            let part = (seg.bytes[bt] & upto[((t - first) % 30) as usize]).count_ones() as u64;
            out.push(before + acc + part - below);
            k += 1;
        }
        before += seg.count();
    }
    out
}

/// The number of primes in [lo, hi].
pub fn count_primes(lo: u64, hi: u64) -> u64 {
    let mut s = RangeSieve::new(lo, hi);
    let mut n = 0;
    while let Some(seg) = s.next_segment() {
        n += seg.count();
    }
    n
}

/// The primes in [lo, hi], ascending.
pub fn primes_in(lo: u64, hi: u64) -> Vec<u64> {
    let mut s = RangeSieve::new(lo, hi);
    let mut out = Vec::new();
    while let Some(seg) = s.next_segment() {
        seg.primes(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(lo: u64, hi: u64) -> Vec<u64> {
        (lo..=hi).filter(|&n| prime::is_prime_u64(n)).collect()
    }

    #[test]
    fn small_ranges_match_the_exact_test() {
        for (lo, hi) in [
            (0, 0),
            (0, 1),
            (0, 2),
            (2, 2),
            (0, 100),
            (1000, 1100),
            (1019, 1031),
            (0, 2_000_000),
            (999_983, 1_000_003),
            (5, 4),
        ] {
            assert_eq!(primes_in(lo, hi), naive(lo, hi), "[{lo}, {hi}]");
            assert_eq!(
                count_primes(lo, hi),
                naive(lo, hi).len() as u64,
                "[{lo}, {hi}]"
            );
        }
    }

    #[test]
    fn segments_and_edges() {
        // Ranges straddling segment boundaries at many offsets.
        let seg = 30 * SEGMENT_BYTES as u64;
        for k in [1u64, 2, 3, 7] {
            for d in [0u64, 1, 29, 30, 31] {
                let lo = k * seg - d - 100;
                let hi = k * seg + d + 100;
                assert_eq!(primes_in(lo, hi), naive(lo, hi), "[{lo}, {hi}]");
            }
        }
        assert_eq!(count_primes(0, 10_000_000), 664_579);
        assert_eq!(count_primes(0, 100_000_000), 5_761_455);
    }

    #[test]
    /// Listing a word (8 wheel bytes, 240 numbers) at a time: every alignment of both ends,
    /// ranges shorter than a byte, a word and longer, as counted and as tested one by one.
    fn listed_at_every_alignment() {
        let every: Vec<u64> = (0..62).collect();
        let some = [0u64, 1, 7, 29, 30, 31, 59];
        // Above 2^44 each range sieves by the primes up to 2^22 first: fewer of them there.
        for (base, starts) in [
            (1_000_000_000u64, &every[..]),
            ((1u64 << 44) + 7, &some[..]),
            (u64::MAX - 2000, &some[..]),
        ] {
            for &start in starts {
                for len in [0u64, 1, 2, 29, 30, 31, 239, 240, 241, 481, 1000] {
                    let lo = base + start;
                    let Some(hi) = lo.checked_add(len) else {
                        continue;
                    };
                    let want = naive(lo, hi);
                    assert_eq!(primes_in(lo, hi), want, "[{lo}, {hi}]");
                    assert_eq!(count_primes(lo, hi), want.len() as u64, "[{lo}, {hi}]");
                }
            }
        }
    }

    #[test]
    fn large_numbers_and_the_top_of_u64() {
        let top = u64::MAX;
        for (lo, hi) in [
            (top - 2000, top),
            (top - 100, top - 50),
            (1u64 << 44, (1u64 << 44) + 5000),
            ((1u64 << 44) - 5000, (1u64 << 44) + 5000),
            (1_000_000_000_000, 1_000_000_050_000),
            ((1 << 62) - 3000, (1 << 62) + 3000),
        ] {
            assert_eq!(primes_in(lo, hi), naive(lo, hi), "[{lo}, {hi}]");
            assert_eq!(
                count_primes(lo, hi),
                naive(lo, hi).len() as u64,
                "[{lo}, {hi}]"
            );
        }
    }
}
