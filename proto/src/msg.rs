//! Coordinator–worker messages. Every connection starts with the cluster-key handshake
//! (service `coordinator`), then the worker registers. One JSON object per line; examples of
//! every message:
//!
//! ```text
//! worker -> {"type":"register","worker_id":"worker-1","pid":4242,"threads":2,"instance":9120379011}
//! coord  -> {"type":"welcome","session":"7f3a9c","heartbeat_ms":5000}
//! coord  -> {"type":"assign","attempt":"7f3a9c-12","file":"a.txt","chunk":0,"chunks":1,"start":0,"end":1234,"size":1234}
//! coord  -> {"type":"assign","attempt":"7f3a9c-13","file":".jobs/big","chunk":3,"chunks":16,"start":0,"end":67108864,"size":67108864,"work":{"kind":"primes","lo":201326592,"hi":268435455}}
//! coord  -> {"type":"assign","attempt":"7f3a9c-14","file":".jobs/tw","chunk":0,"chunks":10,"start":0,"end":1048577,"size":1048577,"work":{"kind":"twins","lo":0,"hi":1048577}}
//! worker -> {"type":"heartbeat","busy":["7f3a9c-12"],"bytes_done":512,"bytes_total":1234}
//! worker -> {"type":"primes","attempt":"7f3a9c-12","small":[2,3,5],"big":["170141183460469231731687303715884105727"]}
//! worker -> {"type":"primes","attempt":"7f3a9c-12","small":"AgAAAAAAAAADAAAAAAAAAAUAAAAAAAAA","big":[]}
//! worker -> {"type":"task_done","attempt":"7f3a9c-12","version":"9c1e","size":1234,"lines":10,"numbers":8,"blank":1,"invalid":1,"first_invalid":[{"line":4,"reason":"not a number: unexpected 'x' at column 1"}],"primes":4}
//! worker -> {"type":"task_done","attempt":"7f3a9c-14","version":"","size":1,"lines":0,"numbers":1,"blank":0,"invalid":0,"first_invalid":[],"primes":0,"answer":"29"}
//! worker -> {"type":"task_failed","attempt":"7f3a9c-12","reason":"a.txt: not found on any file server","retryable":true}
//! coord  -> {"type":"cancel","attempt":"7f3a9c-12"}
//! coord  -> {"type":"marker","snapshot":3}
//! worker -> {"type":"marker","snapshot":3,"state":{"worker_id":"worker-1","in_progress":[{"attempt":"7f3a9c-12","file":"a.txt","chunk":0,"phase":"testing","bytes_done":512,"bytes_total":1234}],"tasks_done":5,"numbers_tested":1000,"cached_files":["a.txt"]}}
//! coord  -> {"type":"shutdown","reason":"coordinator stopping"}
//! worker -> {"type":"goodbye"}
//! coord  -> {"type":"error","message":"worker id \"bad id\" is not valid"}
//! coord  -> {"type":"refused","reason":"worker id \"worker-1\" is already in use by a connected worker"}
//! ```

use serde::{Deserialize, Serialize};

use crate::jobs::Params;

/// Service name in the handshake.
pub const SERVICE: &str = "coordinator";

/// Most primes in one `primes` message; a worker splits larger results. At most ~21 bytes a
/// prime, so a batch stays far below the line limit.
pub const MAX_PRIMES_PER_BATCH: usize = 16_384;

/// Longest line on coordinator connections: a full batch of big primes (4096 bits is 1234
/// digits) plus room.
pub const MAX_LINE: usize = 24 << 20;

/// The `primes` message as a plain struct: serde decodes an internally tagged enum by first
/// buffering the whole object as generic content (an allocation per number), which made
/// decoding a batch of 16,384 primes cost more than testing them. See [`WorkerMsg::decode`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrimesWire {
    #[serde(rename = "type")]
    _kind: PrimesTag,
    attempt: String,
    #[serde(with = "crate::compact")]
    small: Vec<u64>,
    big: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum PrimesTag {
    Primes,
}

/// A worker's message as it goes on the wire: a `primes` message with `small` as base64 of
/// its little-endian values ([`crate::compact`]), anything else as [`WorkerMsg`] writes
/// it. (`WorkerMsg` itself writes `small` as an array of numbers, which snapshots show;
/// both forms are read.)
pub struct OnWire<'a>(pub &'a WorkerMsg);

#[derive(Serialize)]
struct PrimesOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    attempt: &'a str,
    #[serde(serialize_with = "crate::compact::serialize")]
    small: &'a [u64],
    big: &'a [String],
}

impl Serialize for OnWire<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            WorkerMsg::Primes {
                attempt,
                small,
                big,
            } => PrimesOut {
                kind: "primes",
                attempt,
                small,
                big,
            }
            .serialize(s),
            m => m.serialize(s),
        }
    }
}

impl WorkerMsg {
    /// Decodes one line: the same result as `serde_json::from_slice`, but a `primes`
    /// message as written by our workers (`{"type":"primes",` first) is decoded directly.
    pub fn decode(line: &[u8]) -> serde_json::Result<WorkerMsg> {
        if line.starts_with(br#"{"type":"primes","#) {
            if let Ok(p) = serde_json::from_slice::<PrimesWire>(line) {
                return Ok(WorkerMsg::Primes {
                    attempt: p.attempt,
                    small: p.small,
                    big: p.big,
                });
            }
        }
        serde_json::from_slice(line)
    }
}

/// Messages a worker sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WorkerMsg {
    Register {
        worker_id: String,
        pid: u32,
        threads: u32,
        /// Random per worker process: a reconnection of the same process (same instance)
        /// replaces its old connection; another process with an id in use is refused.
        #[serde(default)]
        instance: u64,
    },
    Heartbeat {
        busy: Vec<String>,
        /// Progress of the task being tested: bytes of its chunk read so far, of its size.
        #[serde(default)]
        bytes_done: u64,
        #[serde(default)]
        bytes_total: u64,
    },
    Primes {
        attempt: String,
        /// Read as an array of numbers or as base64 ([`OnWire`]).
        #[serde(deserialize_with = "crate::compact::deserialize")]
        small: Vec<u64>,
        big: Vec<String>,
    },
    TaskDone(TaskDone),
    TaskFailed {
        attempt: String,
        reason: String,
        retryable: bool,
    },
    Marker {
        snapshot: u64,
        state: WorkerState,
    },
    Goodbye {},
}

/// Messages the coordinator sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CoordMsg {
    Welcome {
        session: String,
        heartbeat_ms: u64,
        /// The group term of the coordinator (a replicated group's leader): a worker refuses
        /// a coordinator whose term is older than one it has already followed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        term: Option<u64>,
    },
    /// Sent by the coordinator on a connection it has sent nothing else on for a heartbeat
    /// interval: a worker that hears nothing for 3 intervals gives the coordinator up (a
    /// paused or cut-off leader) and tries the others.
    Alive {},
    /// This coordinator does not lead its group (answer to `register`): try `leader` (its
    /// workers' address) if known, else the next coordinator. The connection then closes.
    NotLeader {
        #[serde(default)]
        leader: Option<String>,
    },
    Assign(Assignment),
    Cancel {
        attempt: String,
    },
    Marker {
        snapshot: u64,
    },
    Shutdown {
        reason: String,
    },
    Error {
        message: String,
    },
    /// Registration refused for good (e.g. the id is in use by another live worker): the
    /// worker MUST NOT retry with the same settings; it exits with an error.
    Refused {
        reason: String,
    },
}

/// One chunk of one file to process. The chunk holds the lines that *start* at a byte offset
/// in `[start, end)` of the file; a line that starts inside and runs past `end` is this
/// chunk's. Chunk 0 starts at 0; the last chunk's `end` is the file size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// Unique id of this attempt at this chunk; results name it.
    pub attempt: String,
    /// Path relative to the file servers' root.
    pub file: String,
    pub chunk: u32,
    pub chunks: u32,
    pub start: u64,
    pub end: u64,
    /// File size when the coordinator queued it.
    pub size: u64,
    /// A generation task instead of a chunk of a file (`file` then names the job,
    /// `.jobs/<name>`, and `start`..`end` counts its numbers, for progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<Work>,
}

/// What a generation task computes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Work {
    /// Every prime in [lo, hi]: sent in `primes` messages, then `task_done` with their
    /// count in `primes` and the first and last.
    Primes { lo: u64, hi: u64 },
    /// The number of primes in [lo, hi], in `answer`.
    Count { lo: u64, hi: u64 },
    /// π(x), in `answer`.
    Pi { x: u64 },
    /// The n-th prime, in `answer`.
    Nth { n: u64 },
    /// Part `part` of π(x) cut for `k` workers (the worker's `lmo::Context::parts(k)`:
    /// 3k + 1 parts), in `answer` as the part's numbers (`lmo::PartAnswer::encode`); the
    /// coordinator combines the parts.
    PiPart { x: u64, k: u32, part: u32 },
    /// The n-th prime, knowing that π(x) = `pi`: a short sieve from x, in `answer`.
    NthNear { n: u64, x: u64, pi: u64 },
    /// The product of 1 to 4 factors (lowercase hex), in `answer`: hex, or decimal when
    /// `decimal` (the last product of a factorial).
    Multiply {
        factors: Vec<String>,
        #[serde(default)]
        decimal: bool,
    },
    /// A task of a kind without a variant of its own (a kind added as one module in
    /// `worker::kinds`): its word and integer arguments, flat like the others, e.g.
    /// `{"kind":"twins","lo":0,"hi":1048577}`, in `answer` as the kind says. Only a word
    /// that is none of the variants above lands here.
    #[serde(untagged)]
    Other(OpenWork),
}

/// The task of [`Work::Other`]: a [`Params`] whose word is not one of [`Work`]'s own (so a
/// malformed `primes` task is an error, not an open one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct OpenWork(pub Params);

/// The words of [`Work`]'s own variants.
const WORK_WORDS: [&str; 7] = [
    "primes", "count", "pi", "nth", "pi_part", "nth_near", "multiply",
];

impl<'de> Deserialize<'de> for OpenWork {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = Params::deserialize(d)?;
        if WORK_WORDS.contains(&p.kind.as_str()) {
            return Err(serde::de::Error::custom(format!(
                "a {} task with missing or unknown fields",
                p.kind
            )));
        }
        Ok(OpenWork(p))
    }
}

/// One invalid line, numbered from 1 within the chunk (the coordinator renumbers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidLine {
    pub line: u64,
    pub reason: String,
}

/// A finished chunk: everything but the primes, which went before in `primes` messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDone {
    pub attempt: String,
    /// Content version the worker read (from the file server).
    pub version: String,
    /// Size of the file the worker read.
    pub size: u64,
    pub lines: u64,
    pub numbers: u64,
    pub blank: u64,
    pub invalid: u64,
    pub first_invalid: Vec<InvalidLine>,
    /// Primes found in the chunk, repeats counted.
    pub primes: u64,
    /// A generation task's result (see [`Work`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// A `primes` task's smallest and largest prime, if it found any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_prime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prime: Option<String>,
}

/// A worker's local state, recorded when a snapshot marker reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkerState {
    pub worker_id: String,
    pub in_progress: Vec<TaskProgress>,
    pub tasks_done: u64,
    pub numbers_tested: u64,
    /// Files in the worker's AFS cache.
    pub cached_files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskProgress {
    pub attempt: String,
    pub file: String,
    pub chunk: u32,
    /// "queued", "fetching", "testing" or "sending".
    pub phase: String,
    /// How far the test got: bytes of the chunk read so far (advances in blocks of up to
    /// 16 MiB), out of the chunk's size.
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// A worker id is 1 to 64 characters of ASCII letters, digits, '-', '_' and '.', so it is
/// safe in file names (logs, cache folders).
pub fn valid_worker_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// Every example in the module doc decodes strictly and round-trips.
    fn doc_examples_decode() {
        let mut n = 0;
        for line in include_str!("msg.rs").lines() {
            let line = line.trim_start_matches("//!").trim();
            let (worker, json) = if let Some(j) = line.strip_prefix("worker ->") {
                (true, j.trim())
            } else if let Some(j) = line.strip_prefix("coord  ->") {
                (false, j.trim())
            } else {
                continue;
            };
            if worker {
                let m: WorkerMsg =
                    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
                let back: WorkerMsg =
                    serde_json::from_str(&serde_json::to_string(&m).expect("encode"))
                        .expect("decode");
                assert_eq!(back, m);
            } else {
                let m: CoordMsg =
                    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
                let back: CoordMsg =
                    serde_json::from_str(&serde_json::to_string(&m).expect("encode"))
                        .expect("decode");
                assert_eq!(back, m);
            }
            n += 1;
        }
        assert_eq!(n, 18, "every message has an example (primes in both forms)");
        assert!(serde_json::from_str::<WorkerMsg>(r#"{"type":"goodbye","x":1}"#).is_err());
        assert!(serde_json::from_str::<WorkerMsg>(r#"{"type":"self_destruct"}"#).is_err());
    }

    #[test]
    /// The fast decoder agrees with the generic one, on good and on broken primes messages.
    fn fast_decode_agrees() {
        let cases = [
            r#"{"type":"primes","attempt":"a-1","small":[2,3,18446744073709551557],"big":["340282366920938463463374607431768211297"]}"#,
            r#"{"type":"primes","attempt":"a-1","small":[],"big":[]}"#,
            r#"{"type":"primes","attempt":"a-1","small":[2],"big":[],"extra":1}"#,
            r#"{"type":"primes","attempt":"a-1","small":[-2],"big":[]}"#,
            r#"{"type":"primes","attempt":"a-1","small":[18446744073709551616],"big":[]}"#,
            r#"{"type":"primes","attempt":"a-1","small":[2]}"#,
            r#"{"type":"primes","type":"primes","attempt":"a-1","small":[2],"big":[]}"#,
            r#"{"type":"primes","attempt":"a-1","small":[2],"big":[],"attempt":"b"}"#,
            r#"{"attempt":"a-1","type":"primes","small":[2],"big":[]}"#,
            r#"{"type":"primes","attempt":"a-1","small":[2],"big":[]"#,
            r#"{"type":"goodbye"}"#,
            r#"{"type":"primes","attempt":"a-1","small":"AgAAAAAAAAADAAAAAAAAAAUAAAAAAAAA","big":[]}"#,
            r#"{"type":"primes","attempt":"a-1","small":"","big":[]}"#,
            r#"{"type":"primes","attempt":"a-1","small":"AgAAAAAAAA==","big":[]}"#,
            r#"{"type":"primes","attempt":"a-1","small":"not base64!","big":[]}"#,
            r#"{"type":"primes","attempt":"a-1","small":7,"big":[]}"#,
        ];
        for c in cases {
            let fast = WorkerMsg::decode(c.as_bytes()).ok();
            let slow = serde_json::from_str::<WorkerMsg>(c).ok();
            assert_eq!(fast, slow, "{c}");
        }
        assert!(WorkerMsg::decode(cases[0].as_bytes()).is_ok());
    }

    #[test]
    /// What a worker writes ([`OnWire`]) reads back as the message, `primes` as base64.
    fn on_the_wire() {
        let msgs = [
            WorkerMsg::Primes {
                attempt: "a-1".into(),
                small: vec![2, 3, 5, u64::MAX],
                big: vec!["18446744073709551629".into()],
            },
            WorkerMsg::Primes {
                attempt: "a-2".into(),
                small: vec![],
                big: vec![],
            },
            WorkerMsg::Goodbye {},
        ];
        for m in msgs {
            let line = serde_json::to_vec(&OnWire(&m)).expect("encode");
            assert_eq!(WorkerMsg::decode(&line).expect("decode"), m);
            assert_eq!(
                serde_json::from_slice::<WorkerMsg>(&line).expect("decode"),
                m
            );
        }
        let p = WorkerMsg::Primes {
            attempt: "a".into(),
            small: vec![2, 3, 5],
            big: vec![],
        };
        let text = serde_json::to_string(&OnWire(&p)).expect("encode");
        assert_eq!(
            text,
            r#"{"type":"primes","attempt":"a","small":"AgAAAAAAAAADAAAAAAAAAAUAAAAAAAAA","big":[]}"#
        );
        // WorkerMsg itself (what snapshots record) keeps the readable array.
        assert!(serde_json::to_string(&p)
            .expect("encode")
            .contains(r#""small":[2,3,5]"#));
    }

    #[test]
    /// A task of a kind without its own variant travels flat; a malformed built-in one is
    /// refused rather than taken for an open one.
    fn open_work() {
        let w: Work = serde_json::from_str(r#"{"kind":"twins","lo":3,"hi":100}"#).expect("open");
        assert_eq!(
            w,
            Work::Other(OpenWork(Params::new("twins", &[("lo", 3), ("hi", 100)])))
        );
        assert_eq!(
            serde_json::to_string(&w).expect("encode"),
            r#"{"kind":"twins","lo":3,"hi":100}"#
        );
        let p: Work = serde_json::from_str(r#"{"kind":"primes","lo":3,"hi":100}"#).expect("primes");
        assert_eq!(p, Work::Primes { lo: 3, hi: 100 });
        for bad in [
            r#"{"kind":"primes","lo":3}"#,
            r#"{"kind":"primes","lo":3,"hi":4,"x":1}"#,
            r#"{"kind":"multiply"}"#,
            r#"{"kind":"twins","lo":"3"}"#,
            r#"{"lo":3}"#,
        ] {
            assert!(serde_json::from_str::<Work>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    /// Worker ids that would be unsafe in paths are refused.
    fn worker_ids() {
        for ok in ["worker-1", "w_2", "a.b"] {
            assert!(valid_worker_id(ok), "{ok}");
        }
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(65)] {
            assert!(!valid_worker_id(bad), "{bad}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Arbitrary bytes never panic the decoders, and whatever decodes re-encodes to
        /// something that decodes to the same message.
        #[test]
        fn decoders_survive_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert_eq!(WorkerMsg::decode(&bytes).ok(), serde_json::from_slice::<WorkerMsg>(&bytes).ok());
            if let Ok(m) = serde_json::from_slice::<WorkerMsg>(&bytes) {
                let back: WorkerMsg = serde_json::from_str(&serde_json::to_string(&m).expect("encode")).expect("decode");
                prop_assert_eq!(back, m);
            }
            if let Ok(m) = serde_json::from_slice::<CoordMsg>(&bytes) {
                let back: CoordMsg = serde_json::from_str(&serde_json::to_string(&m).expect("encode")).expect("decode");
                prop_assert_eq!(back, m);
            }
        }

        /// JSON objects with random types and fields are accepted only when they are exactly
        /// a known message.
        #[test]
        fn unknown_shapes_are_refused(ty in "[a-z_]{1,12}", field in "[a-z_]{1,8}", n in any::<u64>()) {
            let json = format!(r#"{{"type":"{ty}","{field}":{n}}}"#);
            if let Ok(m) = serde_json::from_str::<WorkerMsg>(&json) {
                // Only a one-field message of that exact shape can decode.
                let back = serde_json::to_value(&m).expect("encode");
                prop_assert_eq!(back[&field].as_u64(), Some(n));
            }
        }
    }
}
