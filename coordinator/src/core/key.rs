//! The key of an entry the core tracks: an input file or a generation job. Written as one
//! string (a file's relative path; `.jobs/<name>` for a job), in snapshots, the state
//! on disk, the group's log and on the wire, exactly as when the key was that string.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a job's key starts with in its string form. No input file can have it: inputs
/// never have a hidden component (`inputs::list_files`, the file server's names).
const JOB_PREFIX: &str = ".jobs/";

/// An entry of the core's table: a version of an input file, or a generation job
/// (`data/jobs/<name>.job`), with its chunks (a job's tasks).
///
/// Its string form ([`fmt::Display`], [`FromStr`], serde) is the path for a file and
/// `.jobs/<name>` for a job; keys order as their string forms do, so every map and list
/// keyed by them keeps the order it had when keys were those strings (snapshots, the
/// order of actions).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// An input file, by its path relative to the input folder (parts joined by `/`).
    /// MUST NOT start with `.jobs/` (inputs are never hidden): it would read back as a job.
    File(String),
    /// A generation job, by its name (its file's name without `.job`).
    Job(String),
}

impl Key {
    /// The key of the input file at `rel`.
    pub fn file(rel: impl Into<String>) -> Key {
        Key::File(rel.into())
    }

    /// The key of generation job `name`.
    pub fn job(name: impl Into<String>) -> Key {
        Key::Job(name.into())
    }

    /// The job's name, if this is a generation job.
    pub fn job_name(&self) -> Option<&str> {
        match self {
            Key::Job(name) => Some(name),
            Key::File(_) => None,
        }
    }

    /// True if this is a generation job.
    pub fn is_job(&self) -> bool {
        matches!(self, Key::Job(_))
    }

    /// The key whose string form is `s` (any string but a job's is a file's path): for
    /// strings written elsewhere, such as a file report's name.
    pub fn parse(s: &str) -> Key {
        Key::from_string(s.to_string())
    }

    /// The string form in two pieces (a prefix, then the name), without allocating.
    fn parts(&self) -> (&str, &str) {
        match self {
            Key::File(rel) => ("", rel),
            Key::Job(name) => (JOB_PREFIX, name),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, name) = self.parts();
        f.write_str(prefix)?;
        f.write_str(name)
    }
}

impl FromStr for Key {
    type Err = std::convert::Infallible;

    /// The key whose string form is `s`: never fails (any string but a job's is a file's
    /// path). For strings written before the key was a type, and by other processes.
    fn from_str(s: &str) -> Result<Key, Self::Err> {
        Ok(Key::parse(s))
    }
}

impl Key {
    /// The key whose string form is `s`, reusing it for a file's path.
    fn from_string(s: String) -> Key {
        match s.strip_prefix(JOB_PREFIX) {
            Some(name) => Key::Job(name.to_string()),
            None => Key::File(s),
        }
    }
}

impl Ord for Key {
    /// As the string forms order (byte by byte, as `String` does); the variant only breaks
    /// a tie no key read from its string form can make (a `File` spelled like a job).
    fn cmp(&self, other: &Self) -> Ordering {
        fn bytes(k: &Key) -> impl Iterator<Item = u8> + '_ {
            let (prefix, name) = k.parts();
            prefix.bytes().chain(name.bytes())
        }
        match (self, other) {
            // The same prefix on both sides: the names decide (one memcmp, as `String`).
            (Key::File(a), Key::File(b)) | (Key::Job(a), Key::Job(b)) => a.cmp(b),
            _ => bytes(self)
                .cmp(bytes(other))
                .then_with(|| self.is_job().cmp(&other.is_job())),
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Key::File(rel) => s.serialize_str(rel),
            Key::Job(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        String::deserialize(d).map(Key::from_string)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use super::*;

    /// Keys and the strings they were before they were a type.
    fn cases() -> Vec<(Key, &'static str)> {
        vec![
            (Key::file("a.txt"), "a.txt"),
            (Key::file("sub/dir/b.txt"), "sub/dir/b.txt"),
            (Key::file("-dash.txt"), "-dash.txt"),
            (
                Key::file("ünïcode \"quoted\".txt"),
                "ünïcode \"quoted\".txt",
            ),
            (Key::job("big"), ".jobs/big"),
            (Key::job("tw"), ".jobs/tw"),
            (Key::job(""), ".jobs/"),
        ]
    }

    #[test]
    /// A key serializes as the string it used to be (JSON string and map key), shows as
    /// it, and reads back as the same key.
    fn round_trip_through_the_string_form() {
        for (key, s) in cases() {
            let json = serde_json::to_string(&key).expect("encode");
            assert_eq!(json, serde_json::to_string(s).expect("encode"), "{key:?}");
            assert_eq!(key.to_string(), s, "{key:?}");
            let back: Key = serde_json::from_str(&json).expect("decode");
            assert_eq!(back, key, "{s}");
            assert_eq!(s.parse::<Key>(), Ok(key.clone()), "{s}");
            let map = BTreeMap::from([(key.clone(), 1)]);
            let json = serde_json::to_string(&map).expect("encode");
            assert_eq!(
                json,
                format!("{{{}:1}}", serde_json::to_string(s).expect("s"))
            );
            let back: HashMap<Key, i32> = serde_json::from_str(&json).expect("decode");
            assert_eq!(back.get(&key), Some(&1), "{s}");
        }
    }

    #[test]
    /// Strings written before the key was a type (snapshots, the group's log) read as
    /// the same entries: `.jobs/<name>` a job, anything else a file.
    fn old_strings_parse() {
        let old = r#"[".jobs/count-1", "a.txt", "dir/.jobs/x", "jobs/y", ".jobsx", ".jobs/a/b"]"#;
        let keys: Vec<Key> = serde_json::from_str(old).expect("decode");
        assert_eq!(
            keys,
            vec![
                Key::job("count-1"),
                Key::file("a.txt"),
                Key::file("dir/.jobs/x"),
                Key::file("jobs/y"),
                Key::file(".jobsx"),
                Key::job("a/b"),
            ]
        );
        let chunk: crate::core::ChunkKey =
            serde_json::from_str(r#"{"file":".jobs/big","gen":3,"chunk":1}"#).expect("decode");
        assert_eq!(chunk, crate::core::ChunkKey::new(&Key::job("big"), 3, 1));
    }

    #[test]
    /// Keys order as their strings did (maps keyed by them iterate in the old order), and
    /// equal keys are equal strings.
    fn order_is_the_strings_order() {
        let keys = cases();
        for (a, sa) in &keys {
            for (b, sb) in &keys {
                assert_eq!(a.cmp(b), sa.cmp(sb), "{sa} vs {sb}");
                assert_eq!(a == b, sa == sb, "{sa} vs {sb}");
            }
        }
        let sorted: Vec<String> = keys
            .iter()
            .map(|(k, _)| k.clone())
            .collect::<BTreeSet<_>>()
            .iter()
            .map(Key::to_string)
            .collect();
        let mut want: Vec<String> = keys.iter().map(|(_, s)| s.to_string()).collect();
        want.sort();
        assert_eq!(sorted, want);
    }
}
