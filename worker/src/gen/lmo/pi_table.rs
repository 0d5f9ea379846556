//! The table of π(n) up to √x that the easy leaves and P2 look up: a bit per number
//! coprime to 30 and a running count per word.

use super::*;

/// π(n) for every n up to a limit: one bit per number coprime to 30 (a u64 word for 240
/// numbers) and the count of primes before each word, 16 bytes per 240 numbers.
pub struct PiTable {
    /// Per 240 numbers: (primes before, bits), side by side so a lookup reads one line.
    entries: Vec<(u64, u64)>,
    limit: u64,
}

/// Bits of a word standing for numbers <= r (r in 0..240).
const fn word_mask(r: u64) -> u64 {
    let full = r / 30;
    let mut m = if full == 0 {
        0
    } else {
        (1u64 << (8 * full)) - 1
    };
    let mut k = 0;
    while k < 8 {
        if R[k] <= r % 30 {
            m |= 1 << (8 * full + k as u64);
        }
        k += 1;
    }
    m
}

/// [`word_mask`] of every r.
pub(super) const MASKS: [u64; 240] = {
    let mut t = [0u64; 240];
    let mut r = 0;
    while r < 240 {
        t[r] = word_mask(r as u64);
        r += 1;
    }
    t
};

impl PiTable {
    /// The table up to `limit` (at most 2^32: √x for any 64-bit x).
    pub fn new(limit: u64) -> Self {
        let limit = limit.clamp(1, u32::MAX as u64);
        let nwords = (limit / 240 + 1) as usize;
        let mut words = vec![0u64; nwords];
        let mut set = |n: u64| words[(n / 240) as usize] |= 1 << bit_index(n);
        // Below the sieve's wheel, prime by prime; above, its bytes as they are (one byte
        // for 30 numbers, the same bit order).
        for p in primes_in(7, limit.min(1049)) {
            set(p);
        }
        let mut s = RangeSieve::new(1050, limit.max(1050));
        while let Some(seg) = s.next_segment() {
            let (first_byte, bytes) = seg.wheel_bytes();
            for (i, &b) in bytes.iter().enumerate() {
                let at = first_byte as usize + i;
                if let Some(w) = words.get_mut(at / 8) {
                    *w |= (b as u64) << (8 * (at % 8));
                }
            }
        }
        let mut acc = 3u64; // 2, 3 and 5 have no bit
        let entries = words
            .into_iter()
            .map(|w| {
                let e = (acc, w);
                acc += w.count_ones() as u64;
                e
            })
            .collect();
        PiTable { entries, limit }
    }

    /// The largest n the table answers for.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// π(n), n <= [`PiTable::limit`].
    #[inline]
    pub fn pi(&self, n: u64) -> u64 {
        if n < 7 {
            return [0, 0, 1, 2, 2, 3, 3][n as usize];
        }
        let (before, bits) = self.entries[(n / 240) as usize];
        before + (bits & MASKS[(n % 240) as usize]).count_ones() as u64
    }
}

/// Bit of n (coprime to 30) in its word.
fn bit_index(n: u64) -> u64 {
    let r = n % 30;
    let k = R.iter().position(|&x| x == r).unwrap_or(0) as u64;
    8 * ((n % 240) / 30) + k
}
