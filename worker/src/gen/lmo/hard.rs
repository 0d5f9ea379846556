//! The hard leaves: φ(n, b) counted in a segmented sieve of [1, x/y] pre-sieved by 7-17,
//! with counters per 64 and per 1024 bytes (the part of π(x) that takes most of the time).

use super::*;

impl Context {
    /// The hard leaves with n in [lo, hi) (lo a multiple of [`HARD_ALIGN`]), counted as if
    /// φ(lo - 1, b) were 0 for every b.
    pub(super) fn hard(&self, lo: u64, hi: u64) -> PartAnswer {
        let nb = (self.b_max + 1).saturating_sub(C);
        let mut mu_sum = vec![0i64; nb];
        let mut count = vec![0u64; nb];
        let mut phi = vec![0u64; nb];
        let mut sum: i128 = 0;
        if nb == 0 || lo >= hi {
            return PartAnswer::Hard {
                y: self.y,
                sum,
                mu_sum,
                count,
            };
        }
        let x = self.x;
        let y = self.y;
        let mut seg = HardSieve::new();
        let mut seg_lo = lo;
        while seg_lo < hi {
            let seg_hi = (seg_lo + SEG_NUMBERS).min(hi) - 1; // inclusive
            seg.reset(seg_lo, seg_hi); // stage C: 2 to 17 removed
            for b in C..=self.b_max {
                let p = self.primes[b + 1];
                let x_p = x / p;
                // Hard m: (y/p, min(y, x/p³)], lpf(m) > p, n = x/(p m) in [seg_lo, seg_hi].
                let m_hi = y.min(x_p / p / p).min(x_p / seg_lo.max(1));
                let m_lo = (y / p).max(x_p / (seg_hi + 1)).max(p) + 1;
                let i = b - C;
                if m_lo <= m_hi {
                    seg.rewind();
                    if p * p > y {
                        let (i0, i1) =
                            (self.pi.pi(m_lo - 1) as usize + 1, self.pi.pi(m_hi) as usize);
                        let mut leaves = 0i64;
                        for j in (i0..=i1).rev() {
                            let n = self.divs[j].div(x_p);
                            sum += (phi[i] + seg.count_upto(n)) as i128;
                            leaves += 1;
                        }
                        mu_sum[i] -= leaves;
                    } else {
                        let mut m = m_hi;
                        if m % 2 == 0 {
                            m -= 1;
                        }
                        while m >= m_lo {
                            let f = self.factor(m);
                            if f != 0 && f.unsigned_abs() > p {
                                let n = x_p / m;
                                let v = (phi[i] + seg.count_upto(n)) as i128;
                                if f > 0 {
                                    sum -= v;
                                    mu_sum[i] += 1;
                                } else {
                                    sum += v;
                                    mu_sum[i] -= 1;
                                }
                            }
                            m -= 2;
                        }
                    }
                }
                phi[i] += seg.total;
                if b < self.b_max {
                    seg.cross(p);
                }
            }
            seg_lo = seg_hi + 1;
        }
        count.copy_from_slice(&phi);
        PartAnswer::Hard {
            y: self.y,
            sum,
            mu_sum,
            count,
        }
    }
}

/// Bytes (of 30 numbers each) per small and per big counter of the hard sieve.
const SMALL_BYTES: usize = 64;
const BIG_BYTES: usize = 1024;
/// Period of the pre-sieve pattern, in words of 240 numbers: 7·11·13·17.
const PATTERN_WORDS: usize = 7 * 11 * 13 * 17;

/// The pre-sieve: the numbers free of 2 to 17 (stage C), one bit per number coprime to 30
/// as in the π table (word w: 240w + 30j + R[k] at bit 8j + k), period 17,017 words.
static PATTERN: std::sync::LazyLock<Vec<u64>> = std::sync::LazyLock::new(|| {
    // Per prime, its own period of p words (240 is coprime to p), then the AND of the four:
    // a few thousand divisions instead of one per bit of the whole period.
    let of = |p: u64| -> Vec<u64> {
        (0..p)
            .map(|w| {
                (0..64u64)
                    .filter(|&bit| (240 * w + 30 * (bit / 8) + R[bit as usize % 8]) % p != 0)
                    .fold(0u64, |m, bit| m | 1 << bit)
            })
            .collect()
    };
    let (p7, p11, p13, p17) = (of(7), of(11), of(13), of(17));
    (0..PATTERN_WORDS)
        .map(|w| p7[w % 7] & p11[w % 11] & p13[w % 13] & p17[w % 17])
        .collect()
});

/// One segment of the hard leaves' sieve, numbers [lo, hi] coprime to 30: byte i holds
/// lo + 30i + R[k] at bit k (the π table's order; eight bytes read as one little-endian
/// word). Counters of the bits still set per 64 and per 1024 bytes, kept up to date on
/// each crossing, let a count skip whole blocks.
struct HardSieve {
    lo: u64,
    /// Bytes in use (the segment's numbers, rounded up to whole words).
    nbytes: usize,
    bytes: Vec<u8>,
    small: Vec<u16>,
    big: Vec<u32>,
    /// Bits still set.
    total: u64,
    /// The count cursor: bytes before `at_byte` (a multiple of 8) hold `at_count` set bits.
    at_byte: usize,
    at_count: u64,
}

impl HardSieve {
    fn new() -> Self {
        let nbytes = 8 * SEG_WORDS;
        HardSieve {
            lo: 0,
            nbytes: 0,
            bytes: vec![0; nbytes],
            small: vec![0; nbytes / SMALL_BYTES],
            big: vec![0; nbytes / BIG_BYTES],
            total: 0,
            at_byte: 0,
            at_count: 0,
        }
    }

    /// The word (64 bits, 240 numbers) at byte `at` (a multiple of 8).
    #[inline]
    fn word(&self, at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.bytes[at..at + 8]);
        u64::from_le_bytes(w)
    }

    /// Starts the segment [lo, hi] (lo a multiple of 240, hi - lo < SEG_NUMBERS): the
    /// numbers free of 2..17.
    fn reset(&mut self, lo: u64, hi: u64) {
        self.lo = lo;
        let nw = ((hi - lo) / 240 + 1) as usize;
        self.nbytes = 8 * nw;
        let pat = &*PATTERN;
        let mut p = (lo / 240) as usize % PATTERN_WORDS;
        for k in 0..SEG_WORDS {
            let w = if k + 1 < nw {
                pat[p]
            } else if k + 1 == nw {
                pat[p] & MASKS[((hi - lo) % 240) as usize]
            } else {
                0
            };
            self.bytes[8 * k..8 * k + 8].copy_from_slice(&w.to_le_bytes());
            p = if p + 1 == PATTERN_WORDS { 0 } else { p + 1 };
        }
        for (s, c) in self.small.iter_mut().enumerate() {
            *c = self.bytes[s * SMALL_BYTES..(s + 1) * SMALL_BYTES]
                .chunks_exact(8)
                .map(|b| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(b);
                    u64::from_le_bytes(w).count_ones() as u16
                })
                .sum();
        }
        let per = BIG_BYTES / SMALL_BYTES;
        for (b, c) in self.big.iter_mut().enumerate() {
            *c = self.small[b * per..(b + 1) * per]
                .iter()
                .map(|&s| s as u32)
                .sum();
        }
        self.total = self.big.iter().map(|&c| c as u64).sum();
    }

    /// Crosses off the multiples of p (p > 5, prime; p itself included). The multiples
    /// p·k with k coprime to 30 fall, for each of k's 8 residues mod 30, on one bit of
    /// every p-th byte: 8 strided passes, and the multiples of 2, 3 and 5 are never visited.
    fn cross(&mut self, p: u64) {
        let lo = self.lo;
        let kmin = lo.div_ceil(p).max(1);
        let mut removed = 0u64;
        let step = p as usize;
        for kr in R {
            let k = kmin + (kr + 30 - kmin % 30) % 30;
            let m = p * k;
            let mut i = ((m - lo) / 30) as usize;
            let r = m % 30;
            let bit = R.iter().position(|&x| x == r).unwrap_or(0) as u32;
            let mask = 1u8 << bit;
            while i < self.nbytes {
                let b = &mut self.bytes[i];
                let was = ((*b & mask) >> bit) as u16;
                *b &= !mask;
                self.small[i / SMALL_BYTES] -= was;
                self.big[i / BIG_BYTES] -= was as u32;
                removed += was as u64;
                i += step;
            }
        }
        self.total -= removed;
    }

    /// Puts the count cursor back at the segment's start.
    fn rewind(&mut self) {
        self.at_byte = 0;
        self.at_count = 0;
    }

    /// How many numbers are left in [lo, n] (n >= lo, n <= the segment's hi, and at least
    /// the last n asked since the last rewind).
    #[inline]
    fn count_upto(&mut self, n: u64) -> u64 {
        let t = n - self.lo;
        let tb = (t / 240) as usize * 8; // the word holding n
        let mut at = self.at_byte;
        let mut acc = self.at_count;
        while at < tb {
            if at % BIG_BYTES == 0 && at + BIG_BYTES <= tb {
                acc += self.big[at / BIG_BYTES] as u64;
                at += BIG_BYTES;
            } else if at % SMALL_BYTES == 0 && at + SMALL_BYTES <= tb {
                acc += self.small[at / SMALL_BYTES] as u64;
                at += SMALL_BYTES;
            } else {
                acc += self.word(at).count_ones() as u64;
                at += 8;
            }
        }
        self.at_byte = at;
        self.at_count = acc;
        acc + (self.word(tb) & MASKS[(t % 240) as usize]).count_ones() as u64
    }
}
