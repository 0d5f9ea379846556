//! Input-line parsing on bytes, following the line rules of DESIGN.md 1.3.
//!
//! A line holds one integer, optionally surrounded by ASCII whitespace (CR included, so CRLF
//! files work), with an optional single `+` or `-` and any number of leading zeros. A line of
//! only whitespace is blank. Anything else is invalid, with a reason. No line ever allocates
//! unless it holds a number above 2^64, and no byte sequence panics.

use num_bigint::BigUint;
use std::fmt;

/// Default largest accepted magnitude, in bits.
pub const DEFAULT_MAX_BITS: u64 = 4096;

/// The value of a valid line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A non-negative integer below 2^64.
    Word(u64),
    /// A non-negative integer of 2^64 or more (within the size limit).
    Big(BigUint),
    /// Any integer below zero: valid, never prime.
    Negative,
}

/// Why a line is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// A sign with no digits after it.
    NoDigits,
    /// A byte that cannot appear in a number at this place (1-based column).
    UnexpectedByte { byte: u8, column: usize },
    /// More bits than the configured limit.
    TooLarge { bits: u64, max_bits: u64 },
    /// A line longer than the reader accepts (it is skipped without being held in memory).
    LineTooLong { bytes: u64, max_bytes: u64 },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::NoDigits => write!(f, "sign without digits"),
            Invalid::UnexpectedByte { byte, column } => {
                if byte.is_ascii_graphic() || *byte == b' ' {
                    write!(
                        f,
                        "not a number: unexpected '{}' at column {column}",
                        *byte as char
                    )
                } else {
                    write!(
                        f,
                        "not a number: unexpected byte 0x{byte:02x} at column {column}"
                    )
                }
            }
            Invalid::TooLarge { bits, max_bits } => {
                write!(f, "too large: at least {bits} bits, limit is {max_bits}")
            }
            Invalid::LineTooLong { bytes, max_bytes } => {
                write!(f, "line too long: {bytes} bytes, limit is {max_bytes}")
            }
        }
    }
}

/// What one line is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Blank,
    Number(Value),
    Invalid(Invalid),
}

/// ASCII whitespace as C's `isspace` knows it: space, \t, \n, \v, \f, \r.
#[inline(always)]
pub fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// True if all eight bytes of `v` are ASCII digits.
#[inline(always)]
fn eight_digits(v: u64) -> bool {
    ((v & 0xF0F0_F0F0_F0F0_F0F0)
        | ((v.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4))
        == 0x3333_3333_3333_3333
}

/// The value of eight ASCII digits, first digit in the lowest byte.
#[inline(always)]
fn parse_eight(v: u64) -> u64 {
    let v = v.wrapping_sub(0x3030_3030_3030_3030);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let a = (v & 0x0000_00FF_0000_00FF).wrapping_mul(100 + (1_000_000 << 32));
    let b = ((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32));
    (a.wrapping_add(b) >> 32) & 0xFFFF_FFFF
}

/// Parses up to 19 digits (which always fit a u64), eight at a time. Returns the index of the
/// first non-digit on failure.
#[inline(always)]
fn parse_short(d: &[u8]) -> Result<u64, usize> {
    debug_assert!(d.len() <= 19);
    let mut v = 0u64;
    let mut i = 0;
    while i + 8 <= d.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&d[i..i + 8]);
        let x = u64::from_le_bytes(w);
        if !eight_digits(x) {
            break;
        }
        v = v * 100_000_000 + parse_eight(x);
        i += 8;
    }
    while i < d.len() {
        let c = d[i].wrapping_sub(b'0');
        if c > 9 {
            return Err(i);
        }
        v = v * 10 + c as u64;
        i += 1;
    }
    Ok(v)
}

/// Classifies one line (without its `\n`). `max_bits` bounds the magnitude.
pub fn parse_line(line: &[u8], max_bits: u64) -> Line {
    let mut start = 0;
    let mut end = line.len();
    while start < end && is_space(line[start]) {
        start += 1;
    }
    if start == end {
        return Line::Blank;
    }
    while is_space(line[end - 1]) {
        end -= 1;
    }
    let mut i = start;
    let negative = match line[i] {
        b'-' => {
            i += 1;
            true
        }
        b'+' => {
            i += 1;
            false
        }
        _ => false,
    };
    if i == end {
        return Line::Invalid(Invalid::NoDigits);
    }
    // Skip leading zeros.
    let digits_start = i;
    while i < end && line[i] == b'0' {
        i += 1;
    }
    let d = &line[i..end];
    let bad = |k: usize| {
        Line::Invalid(Invalid::UnexpectedByte {
            byte: line[k],
            column: k + 1,
        })
    };
    if d.len() <= 19 {
        return match parse_short(d) {
            Ok(v) if negative && v != 0 => Line::Number(Value::Negative),
            Ok(v) => Line::Number(Value::Word(v)),
            Err(k) => bad(i + k),
        };
    }
    if let Some(k) = d.iter().position(|c| !c.is_ascii_digit()) {
        return bad(i + k);
    }
    let _ = digits_start;
    // d has no leading zero, so 10^(len-1) <= value: at least floor((len-1)*log2(10)) + 1 bits.
    let min_bits = ((d.len() as f64 - 1.0) * std::f64::consts::LOG2_10).floor() as u64 + 1;
    if min_bits > max_bits {
        return Line::Invalid(Invalid::TooLarge {
            bits: min_bits,
            max_bits,
        });
    }
    if d.len() == 20 {
        // Might still fit a machine word.
        let mut v: u64 = 0;
        let mut fits = true;
        for &c in d {
            match v
                .checked_mul(10)
                .and_then(|x| x.checked_add((c - b'0') as u64))
            {
                Some(x) => v = x,
                None => {
                    fits = false;
                    break;
                }
            }
        }
        if fits {
            return Line::Number(if negative {
                Value::Negative
            } else {
                Value::Word(v)
            });
        }
    }
    // All bytes are digits, so parsing cannot fail; guard anyway rather than panic.
    let Some(big) = BigUint::parse_bytes(d, 10) else {
        return bad(i);
    };
    if big.bits() > max_bits {
        return Line::Invalid(Invalid::TooLarge {
            bits: big.bits(),
            max_bits,
        });
    }
    Line::Number(if negative {
        Value::Negative
    } else {
        Value::Big(big)
    })
}

/// Iterates the lines of a buffer (split on `\n`; a final line without `\n` still counts,
/// an empty tail after the last `\n` does not).
pub fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match memchr::memchr(b'\n', rest) {
            Some(k) => {
                let (line, tail) = rest.split_at(k);
                rest = &tail[1..];
                Some(line)
            }
            None => {
                let line = rest;
                rest = &[];
                Some(line)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &[u8]) -> Line {
        parse_line(s, DEFAULT_MAX_BITS)
    }

    #[test]
    /// Each rule of DESIGN.md 1.3 on a hand-picked case.
    fn line_rules() {
        let cases: &[(&[u8], Line)] = &[
            (b"17", Line::Number(Value::Word(17))),
            (b"  17  ", Line::Number(Value::Word(17))),
            (b"+0013", Line::Number(Value::Word(13))),
            (b"-7", Line::Number(Value::Negative)),
            (b"-0", Line::Number(Value::Word(0))),
            (b"0", Line::Number(Value::Word(0))),
            (b"000", Line::Number(Value::Word(0))),
            (b"18446744073709551615", Line::Number(Value::Word(u64::MAX))),
            (
                b"18446744073709551557\r",
                Line::Number(Value::Word(18446744073709551557)),
            ),
            (b"\t2\t", Line::Number(Value::Word(2))),
            (b"", Line::Blank),
            (b"   \t \r", Line::Blank),
            (b"+", Line::Invalid(Invalid::NoDigits)),
            (b"-", Line::Invalid(Invalid::NoDigits)),
            (
                b"++5",
                Line::Invalid(Invalid::UnexpectedByte {
                    byte: b'+',
                    column: 2,
                }),
            ),
            (
                b"- 5",
                Line::Invalid(Invalid::UnexpectedByte {
                    byte: b' ',
                    column: 2,
                }),
            ),
            (
                b"7 11",
                Line::Invalid(Invalid::UnexpectedByte {
                    byte: b' ',
                    column: 2,
                }),
            ),
            (
                b"12a",
                Line::Invalid(Invalid::UnexpectedByte {
                    byte: b'a',
                    column: 3,
                }),
            ),
            (
                b"3.0",
                Line::Invalid(Invalid::UnexpectedByte {
                    byte: b'.',
                    column: 2,
                }),
            ),
            (
                b"123456789012345678x",
                Line::Invalid(Invalid::UnexpectedByte {
                    byte: b'x',
                    column: 19,
                }),
            ),
            (
                b"1234567890123456789012345x",
                Line::Invalid(Invalid::UnexpectedByte {
                    byte: b'x',
                    column: 26,
                }),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                &p(input),
                want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(
            p(b"18446744073709551616"),
            Line::Number(Value::Big(BigUint::from(u64::MAX) + 1u32))
        );
    }

    #[test]
    /// The size limit counts bits of the magnitude, leading zeros excluded.
    fn size_limit() {
        // 10^30 has 100 bits.
        let mut ten_30 = b"1".to_vec();
        ten_30.extend(std::iter::repeat_n(b'0', 30));
        assert!(matches!(
            parse_line(&ten_30, 100),
            Line::Number(Value::Big(_))
        ));
        assert!(matches!(
            parse_line(&ten_30, 99),
            Line::Invalid(Invalid::TooLarge { bits: 100, .. })
        ));
        let zeros: Vec<u8> = std::iter::repeat_n(b'0', 10_000_000).chain(*b"7").collect();
        assert_eq!(p(&zeros), Line::Number(Value::Word(7)));
        let nines = vec![b'9'; 10_000_000];
        assert!(matches!(p(&nines), Line::Invalid(Invalid::TooLarge { .. })));
        // 2^4096 - 1 has 1234 digits and is accepted; 2^4096 is not.
        let max = (BigUint::from(1u32) << 4096u32) - 1u32;
        assert_eq!(
            p(max.to_string().as_bytes()),
            Line::Number(Value::Big(max.clone()))
        );
        let over = max + 1u32;
        assert!(matches!(
            p(over.to_string().as_bytes()),
            Line::Invalid(Invalid::TooLarge { bits: 4097, .. })
        ));
    }

    #[test]
    /// Line splitting: a final line without newline counts, a trailing newline adds none.
    fn line_splitting() {
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(lines(b"\n").collect::<Vec<_>>(), vec![b"" as &[u8]]);
        assert_eq!(
            lines(b"1\n2").collect::<Vec<_>>(),
            vec![b"1" as &[u8], b"2"]
        );
        assert_eq!(lines(b"1\n2\n").count(), 2);
    }

    proptest! {
        /// Any byte sequence classifies without panicking, and a valid answer is right.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Line::Number(Value::Word(v)) = parse_line(&bytes, DEFAULT_MAX_BITS) {
                let s = std::str::from_utf8(&bytes).expect("a valid number is ASCII");
                let t = s.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b');
                let t = t.strip_prefix('+').unwrap_or(t);
                let t = t.strip_prefix('-').unwrap_or(t);
                prop_assert_eq!(t.parse::<u64>().ok(), Some(v));
            }
        }

        /// Digit-and-sign strings agree with the standard library's parser.
        #[test]
        fn agrees_with_std(s in "[ \t]{0,2}[+-]?0{0,3}[0-9]{0,25}[ \t\r]{0,2}") {
            let t = s.trim();
            let got = p(s.as_bytes());
            let std_val = t.parse::<i128>();
            match got {
                Line::Blank => prop_assert!(t.is_empty()),
                Line::Invalid(Invalid::NoDigits) => prop_assert!(t == "+" || t == "-"),
                Line::Number(Value::Word(v)) => prop_assert_eq!(std_val.ok().map(|x| x.unsigned_abs()), Some(v as u128)),
                Line::Number(Value::Negative) => prop_assert!(std_val.ok().is_some_and(|x| x < 0)),
                Line::Number(Value::Big(b)) => prop_assert_eq!(b.to_string(), t.trim_start_matches('+').trim_start_matches('0')),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
