//! A batch's file primes, decoded once and encoded once.
//!
//! An entry's file primes (up to ~24,000, ~256 KiB as base64) are serialized several times:
//! into the proposer's log, into an AppendEntries line for each follower, and into each
//! follower's log; and the entry is cloned each time the log's cache hands it out. With a
//! plain `Vec<u64>` each of those was a copy, a base64 encoding and a JSON escape scan of
//! the text: a group of three spent more on them than on writing its primes. Here the
//! numbers and their JSON text are shared behind an `Arc`: a clone is a pointer; the text is
//! made once (by the first serialization, or kept as received) and written byte for byte
//! (`serde_json`'s raw values); the numbers are decoded once, when the entry is read.
//!
//! The text is the same as `proto::compact` writes (one base64 string of 8 bytes per
//! number, little-endian), and the array form of older logs is still read.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

#[derive(Default)]
struct Inner {
    values: Vec<u64>,
    /// The JSON text of `values` (a quoted base64 string), once made or as received.
    text: OnceLock<Box<RawValue>>,
}

/// File primes of a [`super::Batch`]: a `[u64]` to read, cheap to clone and to serialize
/// again.
#[derive(Clone, Default)]
pub struct FilePrimes(Arc<Inner>);

impl From<Vec<u64>> for FilePrimes {
    fn from(values: Vec<u64>) -> Self {
        FilePrimes(Arc::new(Inner {
            values,
            text: OnceLock::new(),
        }))
    }
}

impl Deref for FilePrimes {
    type Target = [u64];

    fn deref(&self) -> &[u64] {
        &self.0.values
    }
}

impl PartialEq for FilePrimes {
    fn eq(&self, other: &Self) -> bool {
        self.0.values == other.0.values
    }
}

impl fmt::Debug for FilePrimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.values.iter()).finish()
    }
}

/// The JSON text of `values`: a quoted base64 string.
fn encode(values: &[u64]) -> Result<Box<RawValue>, serde_json::Error> {
    let mut text = String::from("\"");
    proto::compact::encode_base64_into(values, &mut text);
    text.push('"');
    RawValue::from_string(text)
}

impl Serialize for FilePrimes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        if let Some(text) = self.0.text.get() {
            return text.serialize(s);
        }
        let text = encode(&self.0.values).map_err(S::Error::custom)?;
        self.0.text.get_or_init(|| text).serialize(s)
    }
}

impl<'de> Deserialize<'de> for FilePrimes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = Box::<RawValue>::deserialize(d)?;
        let text = raw.get();
        // Base64 never needs an escape: a string without one is the text as written, kept
        // to be written again. Anything else (the array form, an escaped string) is read by
        // the general decoder and encoded afresh when written.
        let plain =
            text.len() >= 2 && text.starts_with('"') && text.ends_with('"') && !text.contains('\\');
        if plain {
            let values = proto::compact::decode_base64(&text[1..text.len() - 1])
                .map_err(D::Error::custom)?;
            let text = OnceLock::new();
            let _ = text.set(raw);
            Ok(FilePrimes(Arc::new(Inner { values, text })))
        } else {
            let mut de = serde_json::Deserializer::from_str(text);
            let values = proto::compact::deserialize(&mut de).map_err(D::Error::custom)?;
            Ok(FilePrimes::from(values))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct T {
        p: FilePrimes,
    }

    #[test]
    fn the_same_text_as_compact_and_back() {
        let v = vec![2u64, 3, 5, u64::MAX, 1_000_000_007];
        #[derive(Serialize)]
        struct C<'a> {
            #[serde(with = "proto::compact")]
            p: &'a Vec<u64>,
        }
        let ours = serde_json::to_string(&T {
            p: FilePrimes::from(v.clone()),
        })
        .unwrap();
        assert_eq!(ours, serde_json::to_string(&C { p: &v }).unwrap());
        let back: T = serde_json::from_str(&ours).unwrap();
        assert_eq!(&*back.p, &v[..]);
        // Written again as received.
        assert_eq!(serde_json::to_string(&back).unwrap(), ours);
        // Empty.
        let e = serde_json::to_string(&T {
            p: FilePrimes::default(),
        })
        .unwrap();
        assert_eq!(e, r#"{"p":""}"#);
        let back: T = serde_json::from_str(&e).unwrap();
        assert!(back.p.is_empty());
    }

    #[test]
    fn reads_the_array_form_and_escaped_strings_and_refuses_broken_text() {
        let back: T = serde_json::from_str(r#"{"p":[2,3,5]}"#).unwrap();
        assert_eq!(&*back.p, &[2, 3, 5]);
        // Written in the base64 form.
        let again: T = serde_json::from_str(&serde_json::to_string(&back).unwrap()).unwrap();
        assert_eq!(again, back);
        // An escaped "=" (\u003d): AgAAAAAAAAA= is 2.
        let back: T = serde_json::from_str(r#"{"p":"AgAAAAAAAAA\u003d"}"#).unwrap();
        assert_eq!(&*back.p, &[2]);
        for bad in [
            r#"{"p":"AgAA"}"#,
            r#"{"p":"not base64!"}"#,
            r#"{"p":12}"#,
            r#"{"p":["x"]}"#,
        ] {
            assert!(serde_json::from_str::<T>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn inside_an_adjacently_tagged_enum_as_the_log_holds_it() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        #[serde(tag = "type", content = "data")]
        enum E {
            B { p: FilePrimes, n: u64 },
        }
        let e = E::B {
            p: FilePrimes::from(vec![7, 11]),
            n: 1,
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<E>(&text).unwrap(), e);
    }
}
