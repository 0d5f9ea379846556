//! Lists of primes as one base64 string of their 8-byte little-endian values:
//! `#[serde(with = "proto::compact")]` on a `Vec<u64>`. A worker's `primes` message and a
//! flush in the group's log hold thousands of primes each, and both are JSON: as an array,
//! each number was formatted and parsed digit by digit (parsing the workers' prime lists
//! was a fifth of the coordinator's time on a `primes` job); as base64 the JSON parser
//! scans one string and the decoding is a few table lookups per number (the `hex` crate's
//! decoder, tried first, took ~70 ns per number). Reading also accepts the array form
//! (logs written before, other workers).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

/// Takes a `Vec<u64>`, a `[u64]` or a `&[u64]` (`serialize_with` on a borrowed slice).
pub fn serialize<S: Serializer, V: AsRef<[u64]> + ?Sized>(v: &V, s: S) -> Result<S::Ok, S::Error> {
    let mut text = String::new();
    encode_base64_into(v.as_ref(), &mut text);
    s.serialize_str(&text)
}

/// Appends the base64 of `v`'s 8-byte little-endian values to `out` (the text
/// [`serialize`] writes, without quotes).
pub fn encode_base64_into(v: &[u64], out: &mut String) {
    let mut bytes = Vec::with_capacity(v.len() * 8);
    for n in v {
        bytes.extend_from_slice(&n.to_le_bytes());
    }
    out.reserve(bytes.len().div_ceil(3) * 4);
    STANDARD.encode_string(&bytes, out);
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    d.deserialize_any(Numbers)
}

/// The numbers of a base64 string of 8 little-endian bytes each.
pub fn decode_base64(s: &str) -> Result<Vec<u64>, String> {
    let bytes = STANDARD.decode(s).map_err(|e| e.to_string())?;
    if bytes.len() % 8 != 0 {
        return Err(format!(
            "{} bytes of numbers: not 8 per number",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect())
}

struct Numbers;

impl<'de> Visitor<'de> for Numbers {
    type Value = Vec<u64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("base64 of 8 bytes per number, or an array of numbers")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<u64>, E> {
        decode_base64(s).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(n) = seq.next_element::<u64>()? {
            out.push(n);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "super")]
        v: Vec<u64>,
    }

    #[test]
    fn round_trip_and_the_array_form() {
        let t = T {
            v: vec![0, 2, 3, 255, 1 << 40, u64::MAX],
        };
        let s = serde_json::to_string(&t).unwrap();
        // 2 is 02 00 .. 00: "AgAAAAAAAAA=" alone.
        let two = serde_json::to_string(&T { v: vec![2] }).unwrap();
        assert_eq!(two, r#"{"v":"AgAAAAAAAAA="}"#);
        assert_eq!(serde_json::from_str::<T>(&s).unwrap(), t);
        let old: T =
            serde_json::from_str(r#"{"v":[0,2,3,255,1099511627776,18446744073709551615]}"#)
                .unwrap();
        assert_eq!(old, t);
        let empty = T { v: vec![] };
        assert_eq!(serde_json::to_string(&empty).unwrap(), r#"{"v":""}"#);
        assert_eq!(serde_json::from_str::<T>(r#"{"v":""}"#).unwrap(), empty);
    }

    #[test]
    fn refuses_broken_text() {
        // 7 bytes, not a whole number.
        assert!(serde_json::from_str::<T>(r#"{"v":"AgAAAAAAAA=="}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"v":"AgAAAAAAAA!="}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"v":[-1]}"#).is_err());
    }
}
