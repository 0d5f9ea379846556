//! Lines of ascending primes in decimal, fast: a segment's primes are a few dozen apart, so
//! from one line to the next usually only the last four digits change. Those are written
//! from a table of digit pairs over a copy of the previous line (the way primesieve
//! prints), instead of dividing every prime by ten again; each line is one fixed-size copy,
//! not a call to `memcpy`. About 4.8 ns a line against itoa's 9.4 ns (the `bench` below),
//! where writing primes.txt for a `primes` job was ~20% formatting and copying.

/// Digits of `u64::MAX`.
const MAX_DIGITS: usize = 20;
/// The line buffer: digits, a newline, and room so every copy out is of this fixed size.
const LINE: usize = 32;

/// Formats one line (`p` and a newline) after another; ascending primes close together are
/// formatted incrementally, anything else from scratch.
pub struct Lines {
    /// `buf[..len]` are the last value's digits, `buf[len]` is `\n`.
    buf: [u8; LINE],
    len: usize,
    /// The last value, and its last [`LOW`] digits as a number (`None` before the first or
    /// when it has fewer digits).
    last: u64,
    low: Option<u64>,
}

impl Default for Lines {
    fn default() -> Self {
        Lines {
            buf: [0; LINE],
            len: 0,
            last: 0,
            low: None,
        }
    }
}

/// Digits rewritten per line while the number's other digits stay.
const LOW: usize = 4;
const LOW_MOD: u64 = 10_000;

/// "00" to "99".
const PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

impl Lines {
    /// Appends `p` and a newline to `out`.
    pub fn put(&mut self, p: u64, out: &mut Vec<u8>) {
        let at = out.len();
        match self.low {
            // Only the last LOW digits change: the line as it was (one fixed-size copy, no
            // call per line), then two pairs from the table over its last digits. (The line
            // buffer itself is not rewritten: reading it back right after small writes
            // stalled every line.)
            Some(low) if p > self.last && p - self.last < LOW_MOD - low => {
                let low = low + (p - self.last);
                out.extend_from_slice(&self.buf);
                let i = at + self.len - LOW;
                out[i..i + 2].copy_from_slice(&PAIRS[(low / 100) as usize]);
                out[i + 2..i + 4].copy_from_slice(&PAIRS[(low % 100) as usize]);
                self.low = Some(low);
            }
            _ => {
                self.set(p);
                out.extend_from_slice(&self.buf);
            }
        }
        self.last = p;
        out.truncate(at + self.len + 1);
    }

    /// The digits of `p` from scratch.
    fn set(&mut self, p: u64) {
        let mut digits = itoa::Buffer::new();
        let s = digits.format(p).as_bytes();
        self.buf[..s.len()].copy_from_slice(s);
        self.len = s.len();
        self.buf[self.len] = b'\n';
        self.low = (self.len >= LOW).then_some(p % LOW_MOD);
    }
}

// A line never outgrows the buffer.
const _: () = assert!(MAX_DIGITS < LINE);

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(ps: &[u64]) -> String {
        let mut l = Lines::default();
        let mut out = b"x".to_vec();
        for &p in ps {
            l.put(p, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    fn plain(ps: &[u64]) -> String {
        let mut s = String::from("x");
        for p in ps {
            s.push_str(&format!("{p}\n"));
        }
        s
    }

    #[test]
    fn same_as_plain_formatting_on_carries_growth_and_jumps() {
        let cases: Vec<Vec<u64>> = vec![
            vec![2, 3, 5, 7, 11, 13, 97, 101, 997, 1009],
            vec![999_999_999_989, 1_000_000_000_039, 1_000_000_000_061],
            vec![9, 10, 99, 100, 999_999, 1_000_000, 1_000_001],
            // Down, equal, a step too large to add, and the top of u64.
            vec![1_000_003, 17, 17, 5_000_000_000, u64::MAX - 58, u64::MAX],
            vec![0, 1, 1 << 20, (1 << 21) + 1, (1 << 40) + 7],
        ];
        for c in cases {
            assert_eq!(lines(&c), plain(&c), "{c:?}");
        }
    }

    #[test]
    fn same_as_plain_formatting_on_a_sieved_range() {
        let ps = worker::gen::sieve::primes_in(1_000_000_000_000, 1_000_000_200_000);
        assert!(ps.len() > 7_000);
        assert_eq!(lines(&ps), plain(&ps));
        let ps = worker::gen::sieve::primes_in(0, 200_000);
        assert_eq!(lines(&ps), plain(&ps));
    }
}

/// A measurement, not a check: `cargo test --release -p coordinator --lib --
/// bench_lines --ignored --nocapture` prints ns per line for these lines and for itoa.
#[cfg(test)]
mod bench {
    use super::*;

    #[test]
    #[ignore]
    fn bench_lines_against_itoa() {
        let ps = worker::gen::sieve::primes_in(1_000_000_000_000, 1_000_300_000_000);
        for _ in 0..3 {
            let mut out = Vec::with_capacity((1 << 20) + 64);
            let mut sum = 0usize;
            let t = std::time::Instant::now();
            let mut l = Lines::default();
            for &p in &ps {
                l.put(p, &mut out);
                if out.len() >= 1 << 20 {
                    sum += out[out.len() / 2] as usize;
                    out.clear();
                }
            }
            let a = t.elapsed();
            let mut out2 = Vec::with_capacity((1 << 20) + 64);
            let t = std::time::Instant::now();
            let mut d = itoa::Buffer::new();
            for &p in &ps {
                out2.extend_from_slice(d.format(p).as_bytes());
                out2.push(b'\n');
                if out2.len() >= 1 << 20 {
                    sum += out2[out2.len() / 2] as usize;
                    out2.clear();
                }
            }
            let b = t.elapsed();
            assert!(sum > 0);
            eprintln!(
                "{} primes: lines {:?} ({:.1} ns), itoa {:?} ({:.1} ns)",
                ps.len(),
                a,
                a.as_nanos() as f64 / ps.len() as f64,
                b,
                b.as_nanos() as f64 / ps.len() as f64
            );
        }
    }
}
