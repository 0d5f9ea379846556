//! Results without a shared disk: every member of a group holds complete results in its own
//! folder once it has applied the log (`primes.txt`, `output/` with the reports and job
//! reports, `snapshots/`), and serves them read-only over HTTP beside its dashboard; the
//! `coordinator results` command reads them from the leader, or from the most up-to-date
//! member that answers.
//!
//! Endpoints (on every member's `--http` address, no key, like the dashboard):
//! - `GET /results` — which member answers and how far it has applied ([`Info`]).
//! - `GET /primes.txt` — the member's primes file, cut at the length its applied entries
//!   wrote (whole lines), streamed from the file; `Content-Length` always set.
//! - `GET /reports` — the names of its reports (`a.txt.json`, `jobs/x.json`, `jobs/x.txt`).
//! - `GET /reports/<name>` — one report, streamed.
//! - `GET /snapshots`, `GET /snapshots/<name>` — its snapshots (the replicated ones, and
//!   those the leader wrote on this host).
//!
//! Decisions (which member to read from, which names are safe) are pure functions here,
//! with unit tests; the HTTP client is a minimal blocking HTTP/1.1 GET (the command needs
//! nothing more, and the workspace has no HTTP client crate).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// What a member says of the results it serves (`GET /results`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The member's number (coordinator-N).
    pub member: u64,
    /// Its Raft role: leader, follower, candidate, learner.
    pub role: String,
    /// The leader it knows, if any.
    pub leader: Option<u64>,
    pub term: u64,
    /// The last log index its files reflect.
    pub applied_index: u64,
    /// The length of its primes file at `applied_index` (what `/primes.txt` serves).
    pub primes_bytes: u64,
}

/// Where a member's results are, and how far they go: given to the web server by the group.
pub trait Source: Send + Sync {
    /// The member's state now (read under the replica's lock: the primes length matches
    /// the applied index).
    fn info(&self) -> Info;
    /// The member's own folder: `primes.txt`, `output/`, `snapshots/`.
    fn dir(&self) -> PathBuf;
}

/// The member's replicated snapshots folder inside its own folder `dir`.
pub fn snapshots_dir(dir: &Path) -> PathBuf {
    dir.join("snapshots")
}

/// A member that answered `/results`, at the address it was asked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addr: String,
    pub info: Info,
}

/// The members to read from, best first, with why the first one was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Indices into the answers, in the order to try.
    pub order: Vec<usize>,
    /// True if the first is the leader of the newest term or up to date with it.
    pub up_to_date: bool,
}

/// Which members to read from: the leader of the newest term that answers, then the
/// members that have applied as far as it has; with no leader answering (an election, the
/// leader down), every member that answered, the most applied first (ties: the newer term,
/// then the lower number), marked not known to be up to date. A member that says it leads
/// but in an older term than another answer (a deposed leader not yet told) counts as a
/// follower. None if nobody answered.
pub fn choose(answers: &[Answer]) -> Option<Plan> {
    if answers.is_empty() {
        return None;
    }
    let newest = answers.iter().map(|a| a.info.term).max().unwrap_or(0);
    let leader = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.info.role == "leader" && a.info.term == newest)
        .max_by_key(|(_, a)| a.info.applied_index)
        .map(|(i, _)| i);
    let mut rest: Vec<usize> = (0..answers.len()).filter(|i| Some(*i) != leader).collect();
    rest.sort_by(|&a, &b| {
        let (x, y) = (&answers[a].info, &answers[b].info);
        y.applied_index
            .cmp(&x.applied_index)
            .then(y.term.cmp(&x.term))
            .then(x.member.cmp(&y.member))
    });
    Some(match leader {
        Some(l) => {
            let floor = answers[l].info.applied_index;
            let mut order = vec![l];
            order.extend(
                rest.into_iter()
                    .filter(|i| answers[*i].info.applied_index >= floor),
            );
            Plan {
                order,
                up_to_date: true,
            }
        }
        None => Plan {
            order: rest,
            up_to_date: false,
        },
    })
}

/// True if `name` is a report name a member may serve: relative, `/`-separated, no empty,
/// `.` or `..` component, no hidden component (writes in progress are hidden), no NUL or
/// backslash, ending in `.json` or `.txt` (a factorial's value).
pub fn report_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 4096
        && (name.ends_with(".json") || name.ends_with(".txt"))
        && !name.contains(['\\', '\0'])
        && name
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.'))
}

/// True if `name` is a snapshot file name (as the snapshot writer makes them).
pub fn snapshot_name_ok(name: &str) -> bool {
    name.starts_with("snapshot_")
        && name.ends_with(".json")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The report names under `output` (relative, sorted), hidden files and folders left out.
pub fn report_names(output: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![(output.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push((e.path(), r)),
                Ok(t) if t.is_file() && report_name_ok(&r) => names.push(r),
                _ => {}
            }
        }
    }
    names.sort();
    names
}

/// The snapshot names in `dirs` (each name once), newest first.
pub fn snapshot_names(dirs: &[PathBuf]) -> Vec<String> {
    let mut all: Vec<(u64, String)> = dirs
        .iter()
        .flat_map(|d| crate::snapshot::list_snapshots(d))
        .filter_map(|(seq, p)| Some((seq, p.file_name()?.to_str()?.to_string())))
        .collect();
    all.sort_by(|a, b| b.cmp(a));
    all.dedup_by(|a, b| a.1 == b.1);
    all.into_iter().map(|(_, n)| n).collect()
}

// ---- the client side: `coordinator results` ----

/// How long the command waits to connect to a member, and for each read.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest status line plus headers accepted.
const MAX_HEAD: usize = 16 << 10;
/// Longest JSON body (a listing, `/results`) read into memory.
const MAX_JSON: u64 = 16 << 20;

/// A response whose body is still to be read: its length and the stream positioned at it.
pub struct Body {
    pub len: u64,
    reader: BufReader<TcpStream>,
}

impl Body {
    /// Copies exactly the body to `out`; an error if the member sent fewer bytes.
    pub fn copy_to(mut self, out: &mut impl Write) -> anyhow::Result<u64> {
        let n = std::io::copy(&mut (&mut self.reader).take(self.len), out)
            .context("reading the body")?;
        if n != self.len {
            bail!("the body ended after {n} of {} bytes", self.len);
        }
        Ok(n)
    }

    fn json<T: serde::de::DeserializeOwned>(self) -> anyhow::Result<T> {
        if self.len > MAX_JSON {
            bail!("a {} byte answer is too large for a listing", self.len);
        }
        let mut buf = Vec::with_capacity(self.len as usize);
        self.copy_to(&mut buf)?;
        serde_json::from_slice(&buf).context("decoding the JSON answer")
    }
}

/// `GET path` from `addr` (HTTP/1.1, one request per connection): the body of a 200
/// answer with a Content-Length; an error naming the status otherwise.
pub fn get(addr: &str, path: &str) -> anyhow::Result<Body> {
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("address {addr:?}"))?
        .next()
        .with_context(|| format!("address {addr:?} resolves to nothing"))?;
    let stream = TcpStream::connect_timeout(&sock, CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .context("setting a read timeout")?;
    let mut w = stream.try_clone().context("cloning the socket")?;
    write!(
        w,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )
    .with_context(|| format!("sending GET {path} to {addr}"))?;
    let mut reader = BufReader::new(stream);
    let mut head = Vec::new();
    let mut status = None;
    let mut len = None;
    loop {
        let mut line = Vec::new();
        let n = (&mut reader)
            .take((MAX_HEAD - head.len().min(MAX_HEAD)) as u64 + 1)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading the answer of {addr}"))?;
        if n == 0 || !line.ends_with(b"\n") {
            bail!("{addr} closed the connection or sent too long a header");
        }
        head.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if status.is_none() {
            let code = text
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok())
                .with_context(|| format!("{addr} did not answer HTTP: {text:?}"))?;
            status = Some(code);
            continue;
        }
        if text.is_empty() {
            break;
        }
        if let Some((k, v)) = text.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = Some(
                    v.trim()
                        .parse::<u64>()
                        .with_context(|| format!("bad Content-Length from {addr}: {v:?}"))?,
                );
            }
        }
    }
    let status = status.unwrap_or(0);
    if status != 200 {
        let mut why = String::new();
        let _ = (&mut reader).take(512).read_to_string(&mut why);
        bail!("{addr}: GET {path}: HTTP {status}: {}", why.trim());
    }
    let len = len.with_context(|| format!("{addr}: GET {path}: no Content-Length"))?;
    Ok(Body { len, reader })
}

/// What `coordinator results` fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// What every member that answers says of itself ([`Info`], one JSON line each).
    Status,
    Primes,
    Reports,
    Snapshots,
}

/// Asks every address for `/results`; the answers, and one line per address that did not
/// answer.
pub fn probe(from: &[String]) -> (Vec<Answer>, Vec<String>) {
    let mut answers = Vec::new();
    let mut failed = Vec::new();
    for addr in from {
        match get(addr, "/results").and_then(|b| b.json::<Info>()) {
            Ok(info) => answers.push(Answer {
                addr: addr.clone(),
                info,
            }),
            Err(e) => failed.push(format!("{addr}: {e:#}")),
        }
    }
    (answers, failed)
}

/// The command: fetches `what` from the best member (see [`choose`]) into `out` (a folder;
/// stdout for primes, or a listing, without one), saying on stderr which member and how far
/// it has applied. A member that fails mid-way is replaced by the next one in the plan.
pub fn run(what: What, from: &[String], out: Option<&Path>) -> anyhow::Result<()> {
    if from.is_empty() {
        bail!("no member to ask: give --from HOST:PORT (a member's --http address)");
    }
    let (answers, failed) = probe(from);
    for f in &failed {
        eprintln!("results: no answer from {f}");
    }
    if what == What::Status {
        for a in &answers {
            let line = serde_json::json!({"addr": a.addr, "info": a.info});
            println!("{line}");
        }
        if answers.is_empty() {
            bail!("no member answered (asked {})", from.join(", "));
        }
        return Ok(());
    }
    let plan = choose(&answers).with_context(|| {
        format!(
            "no member answered (asked {}); is --from a member's --http address?",
            from.join(", ")
        )
    })?;
    let mut last_err = None;
    for (rank, &i) in plan.order.iter().enumerate() {
        let a = &answers[i];
        let why = if plan.up_to_date && rank == 0 {
            "the leader".to_string()
        } else if plan.up_to_date {
            format!("a {} up to date with the leader", a.info.role)
        } else {
            format!(
                "a {}; no leader answers: the most applied of the {} member(s) that did",
                a.info.role,
                answers.len()
            )
        };
        eprintln!(
            "results: from coordinator-{} at {} ({why}; term {}, applied index {})",
            a.info.member, a.addr, a.info.term, a.info.applied_index
        );
        match fetch(what, &a.addr, out) {
            Ok(()) => return Ok(()),
            Err(e) => {
                eprintln!(
                    "results: coordinator-{} at {} failed: {e:#}",
                    a.info.member, a.addr
                );
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no member could serve the results")))
}

fn fetch(what: What, addr: &str, out: Option<&Path>) -> anyhow::Result<()> {
    match what {
        What::Primes => {
            let body = get(addr, "/primes.txt")?;
            match out {
                Some(dir) => {
                    let n = save(dir, "primes.txt", body)?;
                    eprintln!(
                        "results: wrote {} ({n} bytes)",
                        dir.join("primes.txt").display()
                    );
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut lock = stdout.lock();
                    body.copy_to(&mut lock)?;
                    lock.flush().context("writing to stdout")?;
                }
            }
            Ok(())
        }
        What::Status => Ok(()),
        What::Reports | What::Snapshots => {
            let (list, prefix, ok): (&str, &str, fn(&str) -> bool) = match what {
                What::Reports => ("/reports", "/reports/", report_name_ok),
                _ => ("/snapshots", "/snapshots/", snapshot_name_ok),
            };
            let names: Vec<String> = get(addr, list)?.json()?;
            let Some(dir) = out else {
                for n in &names {
                    println!("{n}");
                }
                return Ok(());
            };
            let mut count = 0;
            for n in &names {
                if !ok(n) {
                    bail!("{addr} listed a name that is not safe to write: {n:?}");
                }
                let body = get(addr, &format!("{prefix}{}", url_path(n)))?;
                save(dir, n, body)?;
                count += 1;
            }
            eprintln!("results: wrote {count} file(s) under {}", dir.display());
            Ok(())
        }
    }
}

/// Bytes a name keeps in a request's path (its `/` separate folders, as the routes take
/// them); everything else, and every byte of a non-ASCII character, is percent-encoded: a
/// report of `spaced name ü.txt` was asked for raw and refused (HTTP 400), which ended
/// `results reports --out` at the first such name.
const PATH_BYTES: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `name` as a request path's part.
fn url_path(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, PATH_BYTES).to_string()
}

/// Writes `body` to `dir/name` atomically (a hidden temporary name, then a rename), so a
/// reader never sees a partial file and a failed transfer leaves the old one.
fn save(dir: &Path, name: &str, body: Body) -> anyhow::Result<u64> {
    let path = dir.join(name);
    let parent = path.parent().unwrap_or(dir).to_path_buf();
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let file_name = path
        .file_name()
        .and_then(|f| f.to_str())
        .with_context(|| format!("no file name in {name:?}"))?;
    let tmp = parent.join(proto::files::hidden_name(file_name, ".part"));
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let n = body.copy_to(&mut f)?;
    f.flush()
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// Names with spaces, non-ASCII, `%`, `#`, `?` and `+` reach a route like the members'
    /// (`/reports/{*name}`) as they are, folders included.
    fn odd_report_names_reach_the_route_whole() {
        use axum::extract::Path as UrlPath;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the test");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("an ephemeral port");
        let addr = listener.local_addr().expect("its address").to_string();
        let app = axum::Router::new().route(
            "/reports/{*name}",
            axum::routing::get(|UrlPath(name): UrlPath<String>| async move { name }),
        );
        let server = rt.spawn(async move { axum::serve(listener, app).await });
        for name in [
            "bad/spaced name ü 素数.txt.json",
            "100% sure #1?.txt.json",
            "a+b=c&d.txt.json",
            "jobs/x.json",
        ] {
            let body = get(&addr, &format!("/reports/{}", url_path(name)))
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let mut got = Vec::new();
            body.copy_to(&mut got).expect("the body");
            assert_eq!(String::from_utf8_lossy(&got), name);
        }
        server.abort();
    }

    fn a(member: u64, role: &str, term: u64, applied: u64) -> Answer {
        Answer {
            addr: format!("h{member}:7410"),
            info: Info {
                member,
                role: role.into(),
                leader: None,
                term,
                applied_index: applied,
                primes_bytes: 0,
            },
        }
    }

    #[test]
    fn the_leader_first_then_members_as_far_applied() {
        let answers = [
            a(1, "follower", 3, 90),
            a(2, "leader", 3, 100),
            a(3, "follower", 3, 100),
        ];
        assert_eq!(
            choose(&answers),
            Some(Plan {
                order: vec![1, 2],
                up_to_date: true
            })
        );
    }

    #[test]
    fn a_deposed_leader_of_an_older_term_is_not_the_leader() {
        let answers = [a(1, "leader", 2, 120), a(2, "follower", 3, 80)];
        assert_eq!(
            choose(&answers),
            Some(Plan {
                order: vec![0, 1],
                up_to_date: false
            }),
            "no leader of term 3 answers: most applied first, not known up to date"
        );
    }

    #[test]
    fn without_a_leader_the_most_applied_then_newest_then_lowest() {
        let answers = [
            a(3, "follower", 4, 50),
            a(1, "candidate", 5, 50),
            a(2, "follower", 5, 50),
            a(4, "follower", 5, 60),
        ];
        let plan = choose(&answers).expect("answers");
        assert_eq!(plan.order, vec![3, 1, 2, 0]);
        assert!(!plan.up_to_date);
        assert_eq!(choose(&[]), None, "nobody answered");
    }

    #[test]
    fn report_names() {
        for (name, ok) in [
            ("a.txt.json", true),
            ("sub/f.json", true),
            ("jobs/x.txt", true),
            ("jobs/x.json", true),
            ("", false),
            ("../primes.txt", false),
            ("a/../../b.json", false),
            ("/etc/passwd.json", false),
            ("a//b.json", false),
            ("./a.json", false),
            (".hidden.json", false),
            ("jobs/.x.json.tmp", false),
            ("a\\b.json", false),
            ("a\0.json", false),
            ("raft-log.jsonl", false),
            ("applied.json/x", false),
        ] {
            assert_eq!(report_name_ok(name), ok, "{name:?}");
        }
        for (name, ok) in [
            ("snapshot_000012_20250101T000000Z.json", true),
            ("snapshot_../x.json", false),
            ("snapshot_1/2.json", false),
            ("other.json", false),
        ] {
            assert_eq!(snapshot_name_ok(name), ok, "{name:?}");
        }
    }

    #[test]
    fn listings_skip_hidden_and_unsafe_files() {
        let d = tempfile::tempdir().expect("tempdir");
        let out = d.path();
        std::fs::create_dir_all(out.join("jobs")).expect("mkdir");
        std::fs::create_dir_all(out.join(".hidden")).expect("mkdir");
        for f in [
            "a.txt.json",
            "jobs/x.json",
            "jobs/x.txt",
            ".tmp.json",
            ".hidden/y.json",
            "notes.md",
        ] {
            std::fs::write(out.join(f), b"{}").expect("write");
        }
        assert_eq!(
            super::report_names(out),
            vec!["a.txt.json", "jobs/x.json", "jobs/x.txt"]
        );
    }
}
