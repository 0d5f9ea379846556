//! A bucket sieve for long ranges whose sieving primes are large: up to 2^32 near 2^64,
//! where the plain segmented sieve ([`super::sieve`]) would visit every one of them in
//! every segment although most have no multiple there.
//!
//! The idea is Tomás Oliveira e Silva's: a large sieving prime is handled only where it has
//! a multiple, by keeping it in the bucket of the segment of its next multiple. That needs
//! a place for every prime at once (~1.2·10^8 primes have a multiple in [2^64 − 2^32,
//! 2^64): ~0.9 GiB, primesieve's peak there). To stay within a fixed memory:
//!
//! - **Windows.** The range is cut into windows (a mod-30 wheel byte per 30 numbers: 2^32
//!   numbers in 143 MB). Each 1 MiB segment of a window is sieved by the primes up to
//!   [`MEDIUM`] (2^22), which hit every segment many times ([`RangeSieve::partial`], with
//!   its pre-sieve), then by the classic buckets.
//! - **Classic buckets** (`classic`): the primes above MEDIUM whose 8-byte states fit in
//!   the memory left (all of them up to ~10^17; the smallest ~4 M near 2^64), each in the
//!   bucket of its next multiple's 256 KiB segment, over the whole range.
//! - **The rest, per window.** The primes above those (near 2^64: up to 2^32) are generated
//!   again for every window, a 16 KiB piece of a segment at a time (never stored), and
//!   each one's first multiple in the window is found (an f64 quotient corrected exactly,
//!   and the mod-30 wheel for the cofactor). Its multiples are not crossed off at once
//!   (a cache miss into 143 MB each): each goes as 4 bytes into the bucket of its 64 KiB
//!   region of the window, and a bucket holding [`BUCKET_HITS`] multiples is applied to its
//!   region at once, 4 per cache line. A window is therefore as long as memory allows, so
//!   that this per-window work (~2.8 s near 2^64) is paid once per 2^32 numbers.
//!
//! Memory: the window, its buckets (16 KiB per 64 KiB region), the classic buckets (the
//! primes they hold, 8 bytes each, and a page per bucket), a 1 MiB segment of the medium
//! sieve and one of the prime generator: at most the memory given to [`BucketSieve::new`]
//! plus a few MB, whatever the range (`plan`).

mod classic;

use super::isqrt;
use super::sieve::{RangeSieve, GAP, R, SEGMENT_BYTES, SMALL, TABLES};
use classic::Classic;

/// Sieving primes up to this cross each segment of the window directly (each has at least
/// ~2 multiples in a 1 MiB segment of 31 M numbers, so visiting it per segment costs little);
/// larger ones go through the buckets. The plain sieve's own limit, so a range whose root is
/// below it needs no bucket.
pub const MEDIUM: u64 = 1 << 22;

/// log2 of [`REGION_BYTES`].
const REGION_SHIFT: u32 = 16;
/// Bytes of the window a bucket stands for (64 KiB: in L2 while its multiples are applied).
pub const REGION_BYTES: usize = 1 << REGION_SHIFT;
/// Multiples a bucket holds before it is applied to its region: 4 per cache line of the
/// region, 16 KiB of bucket per 64 KiB of window.
pub const BUCKET_HITS: usize = 4096;

/// Bytes of window per byte of sieve memory (the rest are buckets).
const fn window_for(memory: usize) -> usize {
    let per_region = REGION_BYTES + 4 * BUCKET_HITS;
    memory / per_region * REGION_BYTES / SEGMENT_BYTES * SEGMENT_BYTES
}

/// Numbers of one window when its sieve is given `memory` bytes.
pub fn window_numbers(memory: usize) -> u64 {
    30 * window_for(memory).max(SEGMENT_BYTES) as u64
}

/// The smallest cofactor residue >= r coprime to 30 (as an index into R), for r in 0..30.
const NEXT: [u8; 30] = {
    let mut t = [0u8; 30];
    let mut r = 0;
    while r < 30 {
        let mut j = 0;
        while R[j] < r as u64 {
            j += 1;
        }
        t[r] = j as u8;
        r += 1;
    }
    t
};

/// ⌈n / p⌉ for 2^12 <= p < 2^32, by an f64 quotient corrected to the exact one: a 64-bit
/// division per sieving prime per window would be most of the per-prime cost near 2^64.
/// The f64 quotient is within 1 of n / p (n is rounded by at most 2^11 and n / p < 2^52,
/// rounded by less than 1), so the remainder n - q p is within ±2p and fits an i64.
#[inline]
fn div_ceil(n: u64, p: u64) -> u64 {
    // p < 2^32 and the quotient < 2^52 convert as signed (one instruction each way).
    let est = (n as f64 / (p as i64) as f64) as i64 as u64;
    let mut r = n.wrapping_sub(est.wrapping_mul(p)) as i64;
    let mut q = est;
    while r < 0 {
        q = q.wrapping_sub(1);
        r += p as i64;
    }
    while r >= p as i64 {
        q += 1;
        r -= p as i64;
    }
    q + (r != 0) as u64
}

/// Index into R of each residue mod 30 coprime to 30 (others: 0, unused).
const CLASS: [u8; 30] = {
    let mut t = [0u8; 30];
    let mut k = 0;
    while k < 8 {
        t[R[k] as usize] = k as u8;
        k += 1;
    }
    t
};

/// The first multiple p*q >= max(p^2, 30 * base) with q coprime to 30, of a prime
/// 2^12 < p < 2^32 coprime to 30: its byte from `base` (number / 30) << 3 | the wheel
/// position of q.
#[inline]
fn first_multiple(p: u64, base: u64) -> u64 {
    // p^2 and 30 * base fit a u64, and so does (p*q)/30 (p*q < 2^64 + 7p).
    let start = (p * p).max(base * 30);
    let q0 = div_ceil(start, p);
    let (a, c) = (p / 30, CLASS[(p % 30) as usize] as usize);
    let j = NEXT[(q0 % 30) as usize] as usize;
    // (p*q)/30 with q = 30b + R[j]: p*b + (p*R[j])/30 = p*b + a*R[j] + (R[c]*R[j])/30,
    // and it is at least base since p*q >= start.
    let byte = p * (q0 / 30) + a * R[j] + TABLES.off[c][j] - base;
    byte << 3 | j as u64
}

/// An upper bound of the number of primes up to x (Rosser–Schoenfeld: 1.25506 x / ln x).
pub(super) fn pi_upper(x: u64) -> usize {
    if x < 17 {
        return 7;
    }
    (1.25506 * x as f64 / (x as f64).ln()) as usize + 1
}

/// How a sieve of `needed` wheel bytes up to `hi` spends `memory`: the bytes of its window
/// and the most primes its classic buckets hold. When every sieving prime's state fits in
/// half of it, all go to the classic buckets and a window is [`LISTING_WINDOW`] bytes
/// (it needs no buckets); otherwise the window takes up to 7/8 of it (a long window
/// amortises the primes above the classic ones, which are found again in every window)
/// and the classic buckets what is left.
fn plan(hi: u64, needed: usize, memory: usize) -> (usize, usize) {
    let root = isqrt(hi);
    let all = pi_upper(root);
    let needed = needed.div_ceil(SEGMENT_BYTES).max(1) * SEGMENT_BYTES;
    if root <= MEDIUM || all.saturating_mul(classic::BYTES_PER_PRIME) <= memory / 2 {
        return (LISTING_WINDOW.min(needed), all);
    }
    let cap = window_for(memory - memory / 8)
        .min(needed)
        .max(SEGMENT_BYTES);
    let used = cap / REGION_BYTES * (REGION_BYTES + 4 * BUCKET_HITS);
    (cap, memory.saturating_sub(used) / classic::BYTES_PER_PRIME)
}

/// Window bytes when no bucket needs it (16 MiB, 500 M numbers): a listing is written a
/// window at a time, several in parallel.
const LISTING_WINDOW: usize = 16 * SEGMENT_BYTES;

/// Numbers of the windows a sieve of [lo, hi] with `memory` uses: [lo, hi] cut into
/// pieces this wide takes one window each.
pub fn window_numbers_for(lo: u64, hi: u64, memory: usize) -> u64 {
    let needed = (hi / 30 - lo.max(SMALL).min(hi) / 30 + 1) as usize;
    30 * plan(hi, needed, memory).0 as u64 - 30
}

/// The sieve of one long range, a window at a time.
pub struct BucketSieve {
    lo: u64,
    hi: u64,
    /// The primes up to [`MEDIUM`] over the whole range, a segment at a time.
    medium: RangeSieve,
    /// The primes above MEDIUM whose states fit in memory, in buckets over the whole range.
    classic: Classic,
    /// Most bytes of one window (a multiple of [`SEGMENT_BYTES`]).
    capacity: usize,
    /// The current window's wheel bytes.
    win: Vec<u8>,
    /// Index (number / 30) of the window's first byte.
    base: u64,
    /// Buckets of [`BUCKET_HITS`] entries each, one per region: `byte_in_region << 8 | mask`.
    store: Vec<u32>,
    lens: Vec<u32>,
    /// Primes below the wheel ([`SMALL`]) in the range, with the first window.
    small: Vec<u64>,
    done: bool,
}

/// One sieved window: its primes are the set bits of its bytes (already clipped to the
/// range) and its small primes.
pub struct Window<'a> {
    base: u64,
    bytes: &'a [u8],
    small: &'a [u64],
    lo: u64,
    hi: u64,
}

impl BucketSieve {
    /// The sieve of [lo, hi] (empty if lo > hi) in windows that, with their buckets, take
    /// at most about `memory` bytes (at least one segment's worth: 1.25 MiB).
    pub fn new(lo: u64, hi: u64, memory: usize) -> Self {
        let start = lo.max(SMALL);
        let base = start / 30;
        let needed = if start <= hi && lo <= hi {
            (hi / 30 - base + 1) as usize
        } else {
            0
        };
        let root = isqrt(hi);
        let (capacity, max_primes) = plan(hi, needed, memory);
        let medium = MEDIUM.min(root);
        BucketSieve {
            lo,
            hi,
            medium: RangeSieve::partial(lo, hi, medium),
            classic: Classic::new(medium, root, max_primes, base, needed as u64),
            capacity,
            win: Vec::new(),
            base: 0,
            store: Vec::new(),
            lens: Vec::new(),
            small: Vec::new(),
            done: lo > hi,
        }
    }

    /// Numbers of the range not yet sieved (a window's worth at a time).
    pub fn remaining(&self) -> u64 {
        self.medium.remaining()
    }

    /// Sieves the next window; None once the range is done.
    pub fn next_window(&mut self) -> Option<Window<'_>> {
        if self.sieve_next() {
            self.window()
        } else {
            None
        }
    }

    /// The window last sieved by [`BucketSieve::sieve_next`] (None before the first).
    pub fn window(&self) -> Option<Window<'_>> {
        (!self.win.is_empty() || !self.small.is_empty()).then_some(Window {
            base: self.base,
            bytes: &self.win,
            small: &self.small,
            lo: self.lo,
            hi: self.hi,
        })
    }

    /// Sieves the next window (read it with [`BucketSieve::window`]); false once the range
    /// is done.
    pub fn sieve_next(&mut self) -> bool {
        self.win.clear();
        self.small.clear();
        if self.done {
            return false;
        }
        let mut base = None;
        while self.win.len() < self.capacity {
            let Some(seg) = self.medium.next_segment() else {
                self.done = true;
                break;
            };
            self.small.extend_from_slice(seg.small());
            let (b, bytes) = seg.wheel_bytes();
            if !bytes.is_empty() {
                base.get_or_insert(b);
                if self.win.capacity() == 0 {
                    self.win.reserve_exact(self.capacity);
                }
                let at = self.win.len();
                self.win.extend_from_slice(bytes);
                self.classic.cross(&mut self.win[at..]);
            }
        }
        if self.win.is_empty() && self.small.is_empty() {
            self.done = true;
            return false;
        }
        self.base = base.unwrap_or(0);
        if !self.win.is_empty() {
            let end = (self.base as u128 + self.win.len() as u128) * 30 - 1;
            let last = end.min(self.hi as u128) as u64;
            let root = isqrt(last);
            if root > self.classic.limit() {
                self.cross_large(self.classic.limit(), root);
            }
            self.clip_edges();
        }
        true
    }

    /// Clears the bits of numbers outside [max(lo, SMALL), hi] in the window's edge bytes.
    fn clip_edges(&mut self) {
        let lo = self.lo.max(SMALL) as u128;
        let hi = self.hi as u128;
        let last = self.win.len() - 1;
        for i in [0, last] {
            let n0 = (self.base as u128 + i as u128) * 30;
            for (k, &r) in R.iter().enumerate() {
                let n = n0 + r as u128;
                if n < lo || n > hi {
                    self.win[i] &= !(1u8 << k);
                }
            }
        }
    }

    /// Crosses off the multiples of the primes in (from, root] in the window.
    fn cross_large(&mut self, from: u64, root: u64) {
        let regions = self.win.len().div_ceil(REGION_BYTES);
        if self.lens.len() < regions {
            self.lens.resize(regions, 0);
            // Zeroed pages are committed only when a bucket first reaches them.
            self.store = vec![0; regions * BUCKET_HITS];
        }
        let (mut ps, mut firsts) = (Vec::new(), Vec::new());
        let mut gen = RangeSieve::new(from + 1, root);
        while let Some(seg) = gen.next_segment() {
            let (b0, bytes) = seg.wheel_bytes();
            // Three passes over each 16 KiB of a segment's primes (~7,000), so that the
            // arithmetic of the middle one runs without mispredicted branches: list them,
            // find each one's first multiple in the window, then bucket the multiples of
            // those that have one.
            for (n, chunk) in bytes.chunks(1 << 14).enumerate() {
                ps.clear();
                let b0 = b0 + (n << 14) as u64;
                for (i, &byte) in chunk.iter().enumerate() {
                    let mut bits = byte;
                    while bits != 0 {
                        let k = bits.trailing_zeros() as u64;
                        bits &= bits - 1;
                        ps.push(30 * (b0 + i as u64) + R[k as usize]);
                    }
                }
                ps.retain(|&p| p > from && p <= root);
                self.bucket_multiples(&ps, &mut firsts);
            }
        }
        for b in 0..regions {
            let n = self.lens[b] as usize;
            self.apply(b, n);
            self.lens[b] = 0;
        }
    }

    /// Buckets the window's multiples of the primes `ps` (`firsts` is scratch space).
    fn bucket_multiples(&mut self, ps: &[u64], firsts: &mut Vec<u64>) {
        let len = self.win.len() as u64;
        firsts.clear();
        firsts.extend(ps.iter().map(|&p| first_multiple(p, self.base)));
        for (&p, &f) in ps.iter().zip(firsts.iter()) {
            let mut byte = f >> 3;
            if byte >= len {
                continue;
            }
            let (a, c) = (p / 30, CLASS[(p % 30) as usize] as usize);
            let mut j = (f & 7) as usize;
            while byte < len {
                self.push(byte, TABLES.mask[c][j]);
                byte += a * GAP[j] + TABLES.corr[c][j];
                j = (j + 1) & 7;
            }
        }
    }

    #[inline]
    fn push(&mut self, byte: u64, mask: u8) {
        let b = (byte >> REGION_SHIFT) as usize;
        let n = self.lens[b] as usize;
        let entry = ((byte as u32 & (REGION_BYTES as u32 - 1)) << 8) | mask as u32;
        self.store[b * BUCKET_HITS + n] = entry;
        if n + 1 == BUCKET_HITS {
            self.apply(b, BUCKET_HITS);
            self.lens[b] = 0;
        } else {
            self.lens[b] = n as u32 + 1;
        }
    }

    /// Crosses off the first `n` multiples of bucket `b` in its region.
    fn apply(&mut self, b: usize, n: usize) {
        let start = b << REGION_SHIFT;
        let end = (start + REGION_BYTES).min(self.win.len());
        let region = &mut self.win[start..end];
        for &e in &self.store[b * BUCKET_HITS..b * BUCKET_HITS + n] {
            region[(e >> 8) as usize] &= e as u8;
        }
    }
}

impl Window<'_> {
    /// Numbers of this window, clipped to the range: (first, last).
    pub fn span(&self) -> (u64, u64) {
        if self.bytes.is_empty() {
            return (self.lo, self.hi.min(SMALL - 1));
        }
        let first = if self.small.is_empty() {
            (self.base * 30).max(self.lo).max(SMALL)
        } else {
            self.lo
        };
        let end = (self.base as u128 + self.bytes.len() as u128) * 30 - 1;
        (first, end.min(self.hi as u128) as u64)
    }

    /// How many primes.
    pub fn count(&self) -> u64 {
        let mut words = self.bytes.chunks_exact(8);
        let mut n = self.small.len() as u64;
        for c in &mut words {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            n += w.count_ones() as u64;
        }
        n + words
            .remainder()
            .iter()
            .map(|b| b.count_ones() as u64)
            .sum::<u64>()
    }

    /// Bytes of the window: the primes of byte `i` are read by [`Window::primes_of`].
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the window holds no wheel bytes (a range below 1024).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends the primes of the window's bytes [from, to) (and the small primes, with
    /// from = 0), ascending.
    pub fn primes_of(&self, from: usize, to: usize, out: &mut Vec<u64>) {
        if from == 0 {
            out.extend_from_slice(self.small);
        }
        let to = to.min(self.bytes.len());
        if from < to {
            // Below hi (edges clipped), so no overflow.
            super::sieve::push_survivors(
                &self.bytes[from..to],
                (self.base + from as u64) * 30,
                out,
            );
        }
    }

    /// Appends all the window's primes, ascending.
    pub fn primes(&self, out: &mut Vec<u64>) {
        self.primes_of(0, self.bytes.len(), out);
    }
}

/// The number of primes in [lo, hi] by the bucket sieve, in windows of about `memory`
/// bytes.
pub fn count_primes(lo: u64, hi: u64, memory: usize) -> u64 {
    let mut s = BucketSieve::new(lo, hi, memory);
    let mut n = 0;
    while let Some(w) = s.next_window() {
        n += w.count();
    }
    n
}

/// The primes in [lo, hi], ascending, by the bucket sieve.
pub fn primes_in(lo: u64, hi: u64, memory: usize) -> Vec<u64> {
    let mut s = BucketSieve::new(lo, hi, memory);
    let mut out = Vec::new();
    while let Some(w) = s.next_window() {
        w.primes(&mut out);
    }
    out
}

#[cfg(test)]
mod tests;
