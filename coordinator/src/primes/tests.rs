//! Unit tests of the primes file: torn tails, dedup, segments and the ledger, checkpoints,
//! merges.

use std::fs::OpenOptions;

use super::*;

#[test]
/// A torn last line is cut, never read; appends skip what is present; reopen restores.
fn torn_tail_and_dedup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("primes.txt");
    std::fs::write(&path, "2\n3\n5\n1844674407370955").expect("write");
    let mut f = PrimesFile::open(&path).expect("open");
    assert_eq!(f.truncated_bytes, 16);
    assert_eq!(f.len(), 3);
    let big = "170141183460469231731687303715884105727".to_string();
    assert_eq!(
        f.append(&[3, 7, 7, 11], &[big.clone(), big.clone()], &[], &[])
            .expect("append"),
        3
    );
    assert_eq!(
        f.append(&[2, 7], std::slice::from_ref(&big), &[], &[])
            .expect("append"),
        0
    );
    drop(f);
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        format!("2\n3\n5\n7\n11\n{big}\n")
    );
    let f = PrimesFile::open(&path).expect("reopen");
    assert_eq!((f.len(), f.truncated_bytes), (6, 0));
    std::fs::write(&path, "123").expect("write");
    let f = PrimesFile::open(&path).expect("open");
    assert_eq!(
        (f.len(), f.truncated_bytes),
        (0, 3),
        "a file of one torn line is empty"
    );
    assert_eq!(std::fs::read(&path).expect("read"), b"");
}

fn done(lo: u64, hi: u64, primes: u64) -> Finished {
    Finished {
        work: proto::msg::Work::Primes { lo, hi },
        worker: "w".into(),
        result: proto::msg::TaskDone {
            attempt: "a".into(),
            version: String::new(),
            size: 0,
            lines: 0,
            numbers: hi - lo + 1,
            blank: 0,
            invalid: 0,
            first_invalid: Vec::new(),
            primes,
            answer: None,
            first_prime: None,
            last_prime: None,
        },
    }
}

fn run(lo: u64, hi: u64, primes: &[u64]) -> Run {
    Run {
        lo,
        hi,
        primes: primes.to_vec(),
    }
}

#[test]
/// Range primes are written once across files and segments, never held in the set; the
/// ledger survives a reopen (covered primes counted, not loaded), and a ledger that
/// does not match primes.txt is dropped rather than trusted.
fn segments_by_interval_and_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("primes.txt");
    let mut f = PrimesFile::open(&path).expect("open");
    // A file prime first, then a segment [10, 30] in two messages, its cover.
    assert_eq!(f.append(&[13], &[], &[], &[]).expect("append"), 1);
    let r1 = run(10, 30, &[11, 13, 17]);
    let r2 = run(10, 30, &[19, 23, 29]);
    assert_eq!(f.append(&[], &[], &[r1], &[]).expect("append"), 2);
    assert_eq!(
        f.append(&[], &[], &[r2], &[done(10, 30, 6)])
            .expect("append"),
        3
    );
    assert_eq!((f.len(), f.in_set()), (6, 1));
    // Covered now: a file prime in it and an overlapping segment add only what is new.
    assert_eq!(f.append(&[17, 31], &[], &[], &[]).expect("append"), 1);
    assert_eq!(
        f.append(&[], &[], &[run(25, 40, &[29, 31, 37])], &[done(25, 40, 3)])
            .expect("append"),
        1
    );
    assert_eq!(f.len(), 8);
    // A count task's result is in the ledger too (it covers nothing).
    let mut count = done(100, 200, 21);
    count.work = proto::msg::Work::Count { lo: 100, hi: 200 };
    assert_eq!(
        f.append(&[], &[], &[], std::slice::from_ref(&count))
            .expect("append"),
        0
    );
    drop(f);
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(
        text,
        "13
11
17
19
23
29
31
37
"
    );
    let f = PrimesFile::open(&path).expect("reopen");
    assert_eq!(f.len(), 8);
    assert_eq!(f.in_set(), 0, "every line lies in a covered segment");
    assert_eq!(f.finished.len(), 3);
    drop(f);
    // primes.txt replaced while the ledger stays: the ledger is dropped.
    std::fs::write(
        &path, "2
3
",
    )
    .expect("write");
    let f = PrimesFile::open(&path).expect("reopen");
    assert_eq!((f.len(), f.in_set()), (2, 2));
    assert_eq!(f.finished, vec![count.clone()], "only the count stays");
    assert_eq!(f.range_stats(), (0, 0));
    drop(f);
    let f = PrimesFile::open(&path).expect("reopen");
    assert_eq!(
        f.finished,
        vec![count],
        "the ledger was rewritten without the segments"
    );
}

fn count_task(lo: u64, hi: u64) -> Finished {
    let mut c = done(lo, hi, 1);
    c.work = proto::msg::Work::Count { lo, hi };
    c
}

/// A segment's finished task with its first and last prime, as a worker reports it.
fn seg(lo: u64, hi: u64, primes: &[u64]) -> Finished {
    let mut f = done(lo, hi, primes.len() as u64);
    f.result.first_prime = primes.first().map(u64::to_string);
    f.result.last_prime = primes.last().map(u64::to_string);
    f
}

/// The lines of a file, checked to hold no value twice.
fn distinct_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read");
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let set: HashSet<&String> = lines.iter().collect();
    assert_eq!(set.len(), lines.len(), "a line twice in {}", path.display());
    lines
}

fn ledger_lines(path: &Path) -> usize {
    std::fs::read_to_string(ledger_path(path))
        .expect("read")
        .lines()
        .count()
}

#[test]
/// A task is recorded once, whether it comes twice in a batch, in two batches, or
/// after a reopen; `finished` holds it once.
fn finished_task_recorded_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("primes.txt");
    let mut f = PrimesFile::open(&path).expect("open");
    let d = seg(10, 30, &[11, 13]);
    let r = run(10, 30, &[11, 13]);
    f.append(&[], &[], std::slice::from_ref(&r), &[d.clone(), d.clone()])
        .expect("append");
    f.append(&[], &[], std::slice::from_ref(&r), std::slice::from_ref(&d))
        .expect("append again");
    assert_eq!(ledger_lines(&path), 1);
    assert_eq!(f.finished, vec![d.clone()]);
    // Taking `finished` (as a coordinator does) changes no decision.
    let taken = std::mem::take(&mut f.finished);
    f.append(&[], &[], &[], std::slice::from_ref(&d))
        .expect("append after take");
    assert!(f.finished.is_empty());
    assert_eq!(taken.len(), 1);
    let n = f.ledger_bytes();
    drop(f);
    let mut f = PrimesFile::open(&path).expect("reopen");
    assert_eq!(f.ledger_bytes(), n);
    f.append(&[], &[], &[], &[d.clone(), count_task(1, 5)])
        .expect("append after reopen");
    assert_eq!(ledger_lines(&path), 2, "only the count task is new");
    assert_eq!(f.finished, vec![d, count_task(1, 5)]);
}

#[test]
/// Open takes the set from the checkpoint and reads only the lines after it, to the same
/// counts; a segment streamed at the checkpoint stays known by its progress (not the
/// set), so a new attempt or a file prime in it writes nothing twice.
fn checkpoint_then_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("primes.txt");
    let big = "170141183460469231731687303715884105727".to_string();
    let mut f = PrimesFile::open(&path).expect("open");
    assert!(!f.from_checkpoint());
    f.append(
        &[2, 3, 5],
        std::slice::from_ref(&big),
        &[run(10, 30, &[11, 13]), run(40, 60, &[41, 43, 47, 53, 59])],
        &[seg(40, 60, &[41, 43, 47, 53, 59])],
    )
    .expect("append");
    f.checkpoint().expect("checkpoint");
    assert!(meta_path(&path).exists() && set_path(&path).exists());
    // Appended after the checkpoint: the tail.
    f.append(&[7, 97], &[], &[run(10, 30, &[11, 13, 17, 19])], &[])
        .expect("append");
    let (len, in_set, bytes) = (f.len(), f.in_set(), f.bytes());
    assert_eq!((len, in_set), (15, 6));
    drop(f);
    let mut f = PrimesFile::open(&path).expect("reopen");
    assert!(f.from_checkpoint());
    assert_eq!(
        (f.len(), f.in_set(), f.bytes()),
        (len, in_set + 2, bytes),
        "17 and 19 (after the checkpoint, not covered) are read into the set"
    );
    assert_eq!(
        f.range_stats(),
        (1, 1),
        "[40, 60] covered, [10, 30] streamed"
    );
    // A new attempt of [10, 30] from its start, and file primes in it.
    assert_eq!(
        f.append(
            &[13, 23],
            &[],
            &[run(10, 30, &[11, 13, 17, 19, 23, 29])],
            &[]
        )
        .expect("append"),
        2
    );
    assert_eq!(f.append(&[11, 29, 47], &[], &[], &[]).expect("append"), 0);
    distinct_lines(&path);
    let (len, bytes) = (f.len(), f.bytes());
    drop(f);
    // A full scan (checkpoint gone) agrees.
    remove_checkpoint(&path);
    let f = PrimesFile::open(&path).expect("reopen without checkpoint");
    assert!(!f.from_checkpoint());
    assert_eq!((f.len(), f.bytes()), (len, bytes));
}

fn ino(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").ino()
}

#[test]
/// A checkpoint after appends of segments only does not write the set again.
fn checkpoint_of_ranges_keeps_the_dump() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("primes.txt");
    let mut f = PrimesFile::open(&path).expect("open");
    f.append(&[2, 3], &[], &[], &[]).expect("append");
    f.checkpoint().expect("checkpoint");
    let dump = ino(&set_path(&path));
    let meta = std::fs::read(meta_path(&path)).expect("meta");
    f.append(
        &[],
        &[],
        &[run(10, 20, &[11, 13, 17, 19])],
        &[seg(10, 20, &[11, 13, 17, 19])],
    )
    .expect("append");
    f.checkpoint().expect("checkpoint");
    assert_eq!(ino(&set_path(&path)), dump, "the dump is not rewritten");
    assert_ne!(std::fs::read(meta_path(&path)).expect("meta"), meta);
    let f = PrimesFile::open(&path).expect("reopen");
    assert!(f.from_checkpoint());
    assert_eq!((f.len(), f.in_set()), (6, 2));
    // Opened from it with no line after: still current.
    let mut f = f;
    f.checkpoint().expect("checkpoint");
    assert_eq!(ino(&set_path(&path)), dump);
    f.append(&[5], &[], &[], &[]).expect("append");
    f.checkpoint().expect("checkpoint");
    assert_ne!(ino(&set_path(&path)), dump, "a new file prime: a new dump");
    drop(f);
    let f = PrimesFile::open(&path).expect("reopen");
    assert!(f.from_checkpoint());
    assert_eq!((f.len(), f.in_set()), (7, 3));
}

/// A state with a checkpoint and lines after it, for the tests that spoil it.
fn checkpointed(dir: &Path) -> PathBuf {
    let path = dir.join("primes.txt");
    let mut f = PrimesFile::open(&path).expect("open");
    f.append(&[2, 3, 5], &[], &[run(10, 30, &[11, 13, 17])], &[])
        .expect("append");
    f.append(
        &[],
        &[],
        &[run(10, 30, &[19, 23, 29])],
        &[seg(10, 30, &[11, 13, 17, 19, 23, 29])],
    )
    .expect("append");
    f.checkpoint().expect("checkpoint");
    f.append(&[7], &[], &[], &[]).expect("append");
    path
}

#[test]
/// A checkpoint that does not describe the files is not used (and removed): the whole
/// file is read, to the right counts.
fn checkpoint_not_matching_is_not_used() {
    type Spoil = (&'static str, fn(&Path));
    let spoil: [Spoil; 6] = [
        ("primes.txt cut below it", |p| {
            let f = OpenOptions::new().write(true).open(p).expect("open");
            f.set_len(4).expect("cut");
        }),
        ("primes.txt replaced, same length", |p| {
            let text = std::fs::read_to_string(p).expect("read");
            std::fs::write(p, text.replace("17\n", "71\n")).expect("write");
        }),
        ("the dump damaged", |p| {
            let mut b = std::fs::read(set_path(p)).expect("read");
            b[0] ^= 1;
            std::fs::write(set_path(p), b).expect("write");
        }),
        ("the dump cut", |p| {
            let mut b = std::fs::read(set_path(p)).expect("read");
            b.pop();
            std::fs::write(set_path(p), b).expect("write");
        }),
        ("the ledger replaced", |p| {
            std::fs::write(ledger_path(p), "").expect("write");
        }),
        ("the meta unreadable", |p| {
            std::fs::write(meta_path(p), "{").expect("write");
        }),
    ];
    for (what, spoil) in spoil {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = checkpointed(dir.path());
        spoil(&path);
        let f = PrimesFile::open(&path).expect("open");
        assert!(!f.from_checkpoint(), "{what}");
        assert!(!meta_path(&path).exists(), "{what}: removed");
        let lines = distinct_lines(&path);
        assert_eq!(f.len(), lines.len(), "{what}");
    }
    // Untouched, it is used.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = checkpointed(dir.path());
    let f = PrimesFile::open(&path).expect("open");
    assert!(f.from_checkpoint());
    assert_eq!((f.len(), f.in_set()), (10, 4));
}

#[test]
/// Unsynced appends after a checkpoint, then a crash that kept the ledger's new line but
/// not the primes: the segment's primes are missing, so the checkpoint is not trusted and
/// the full scan drops the ledger's segments (their primes load into the set).
fn ledger_ahead_of_primes_after_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("primes.txt");
    let mut f = PrimesFile::open(&path).expect("open");
    f.set_sync(false);
    f.append(&[2, 3], &[], &[], &[]).expect("append");
    f.checkpoint().expect("checkpoint");
    let at = f.bytes();
    f.append(
        &[],
        &[],
        &[run(10, 20, &[11, 13, 17, 19])],
        &[seg(10, 20, &[11, 13, 17, 19])],
    )
    .expect("append");
    drop(f);
    // The lines after the checkpoint lost, the ledger's kept.
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(at).expect("cut");
    let mut f = PrimesFile::open(&path).expect("reopen");
    assert!(!f.from_checkpoint());
    assert_eq!((f.len(), f.range_stats()), (2, (0, 0)));
    assert!(f.finished.is_empty(), "the segment is to be done again");
    f.append(&[], &[], &[run(10, 20, &[11, 13, 17, 19])], &[])
        .expect("append");
    assert_eq!(distinct_lines(&path).len(), 6);
}

/// A source state: file primes (one big), a covered segment, a segment streamed but not
/// finished, a count task.
fn source(dir: &Path) -> PathBuf {
    let path = dir.join("src.txt");
    let big = "170141183460469231731687303715884105727".to_string();
    let mut f = PrimesFile::open(&path).expect("open");
    f.append(&[2, 3, 5, 101], std::slice::from_ref(&big), &[], &[])
        .expect("append");
    f.append(
        &[],
        &[],
        &[
            run(10, 40, &[11, 13, 17, 19, 23, 29, 31, 37]),
            run(200, 300, &[211, 223]),
        ],
        &[
            seg(10, 40, &[11, 13, 17, 19, 23, 29, 31, 37]),
            count_task(1, 100),
        ],
    )
    .expect("append");
    f.append(&[7], &[], &[], &[]).expect("append");
    path
}

fn merge(dst: &mut PrimesFile, src: &Path) -> u64 {
    let (p, l) = (
        std::fs::metadata(src).expect("stat").len(),
        std::fs::metadata(ledger_path(src)).expect("stat").len(),
    );
    dst.merge_from(src, p, &ledger_path(src), l).expect("merge")
}

#[test]
/// Merged into an empty file, a state is copied byte for byte (primes and ledger), its
/// segment primes known by the intervals, not the set.
fn merge_into_empty_is_a_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path());
    let path = dir.path().join("primes.txt");
    let mut f = PrimesFile::open(&path).expect("open");
    assert_eq!(merge(&mut f, &src), 16);
    assert_eq!(
        std::fs::read(&path).expect("read"),
        std::fs::read(&src).expect("read")
    );
    assert_eq!(
        std::fs::read(ledger_path(&path)).expect("read"),
        std::fs::read(ledger_path(&src)).expect("read")
    );
    let s = PrimesFile::open(&src).expect("open src");
    assert_eq!((f.len(), f.in_set()), (s.len(), s.in_set()));
    assert_eq!(
        (f.len(), f.in_set()),
        (16, 8),
        "the 8 of [10, 40] by the interval"
    );
    assert_eq!(f.finished, s.finished);
    assert_eq!(f.range_stats(), (1, 0));
    // Merged again: nothing.
    assert_eq!(merge(&mut f, &src), 0);
    assert_eq!(ledger_lines(&path), 2);
}

#[test]
/// Merged into a file that holds some of the same primes and segments: no prime twice,
/// the other's segments covered, the same counts after a reopen, and the same bytes
/// on two copies of the starting state.
fn merge_into_overlapping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path());
    let start = |name: &str| {
        let path = dir.path().join(name);
        let mut f = PrimesFile::open(&path).expect("open");
        // 13 and 5 here as file primes, [30, 50] covered here (31, 37 of the other's
        // segment; 41 of no segment there), [10, 40] as a count task (not a segment).
        f.append(&[13, 5, 300007], &[], &[], &[]).expect("append");
        f.append(
            &[],
            &[],
            &[run(30, 50, &[31, 37, 41, 43, 47])],
            &[seg(30, 50, &[31, 37, 41, 43, 47])],
        )
        .expect("append");
        (path, f)
    };
    let (path, mut f) = start("a.txt");
    let added = merge(&mut f, &src);
    // 2 3 101 big 11 17 19 23 29 211 223 7 (13, 5, 31, 37 were here).
    assert_eq!(added, 12);
    let lines = distinct_lines(&path);
    assert_eq!(f.len(), lines.len());
    assert_eq!(f.len(), 3 + 5 + 12);
    for p in [11u64, 13, 29, 31, 37, 40, 50] {
        assert!(f.ranges.covered.contains(p), "{p} covered");
    }
    assert_eq!(ledger_lines(&path), 3, "[30, 50], [10, 40], count [1, 100]");
    let (len, in_set) = (f.len(), f.in_set());
    // 5 101 300007 2 3 big 211 223 7: 13 left the set for [10, 40].
    assert_eq!(in_set, 9);
    drop(f);
    let f = PrimesFile::open(&path).expect("reopen");
    assert_eq!((f.len(), f.in_set()), (len, in_set));
    assert_eq!(f.finished.len(), 3);
    let (path_b, mut g) = start("b.txt");
    merge(&mut g, &src);
    assert_eq!(
        std::fs::read(&path).expect("a"),
        std::fs::read(&path_b).expect("b")
    );
    assert_eq!(
        std::fs::read(ledger_path(&path)).expect("a"),
        std::fs::read(ledger_path(&path_b)).expect("b")
    );
}

#[test]
/// Merging a state of segment primes only does not grow the set (nor its dump).
fn merge_of_ranges_keeps_the_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.txt");
    let mut s = PrimesFile::open(&src).expect("open");
    let primes = [11, 13, 17, 19, 23, 29];
    s.append(&[], &[], &[run(10, 30, &primes)], &[seg(10, 30, &primes)])
        .expect("append");
    s.append(
        &[],
        &[],
        &[run(100, 110, &[101, 103, 107, 109])],
        &[seg(100, 110, &[101, 103, 107, 109])],
    )
    .expect("append");
    drop(s);
    let path = dir.path().join("primes.txt");
    let mut f = PrimesFile::open(&path).expect("open");
    f.append(&[2, 3, 103], &[], &[], &[]).expect("append");
    f.checkpoint().expect("checkpoint");
    let dump = ino(&set_path(&path));
    assert_eq!(merge(&mut f, &src), 9);
    assert_eq!(
        (f.len(), f.in_set()),
        (12, 2),
        "103 left the set for [100, 110]"
    );
    // Only the merge's own primes counted: the set shrank, the dump is rewritten once.
    f.checkpoint().expect("checkpoint");
    assert_ne!(ino(&set_path(&path)), dump);
    let dump = ino(&set_path(&path));
    // A second merge of it adds nothing, changes no set.
    assert_eq!(merge(&mut f, &src), 0);
    f.checkpoint().expect("checkpoint");
    assert_eq!(ino(&set_path(&path)), dump);
    drop(f);
    let f = PrimesFile::open(&path).expect("reopen");
    assert!(f.from_checkpoint());
    assert_eq!((f.len(), f.in_set()), (12, 2));
}

#[test]
/// Only whole lines of the given lengths are merged; a ledger whose segments do not
/// match its primes file gives its primes but not its segments.
fn merge_lengths_and_a_ledger_not_matching() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.txt");
    std::fs::write(&src, "2\n3\n11\n13\n17\n").expect("write");
    let lines = [seg(10, 20, &[11, 13, 17, 19]), count_task(1, 9)]
        .iter()
        .map(|f| serde_json::to_string(f).expect("json") + "\n")
        .collect::<String>();
    std::fs::write(ledger_path(&src), &lines).expect("write");
    let path = dir.path().join("primes.txt");
    let mut f = PrimesFile::open(&path).expect("open");
    // "2\n3\n1" of the primes, the first ledger line and part of the second.
    let first = lines.find('\n').expect("a line") as u64 + 1;
    assert_eq!(
        f.merge_from(&src, 5, &ledger_path(&src), first + 3)
            .expect("merge"),
        2
    );
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "2\n3\n");
    assert_eq!(
        f.finished.len(),
        0,
        "[10, 20] found 4 primes, the file has none there"
    );
    // All of it: [10, 20] lists 4 primes, the file holds 3 there: not taken.
    let n = std::fs::metadata(&src).expect("stat").len();
    assert_eq!(
        f.merge_from(&src, n, &ledger_path(&src), lines.len() as u64)
            .expect("merge"),
        3
    );
    assert_eq!((f.len(), f.in_set()), (5, 5));
    assert_eq!(f.finished, vec![count_task(1, 9)]);
    assert_eq!(f.range_stats(), (0, 0));
    // Longer than the file: refused.
    assert!(f.merge_from(&src, n + 1, &ledger_path(&src), 0).is_err());
    drop(f);
    let f = PrimesFile::open(&path).expect("reopen");
    assert_eq!((f.len(), f.in_set()), (5, 5));
}

#[test]
/// A run's primes already in the dedup set are left out both ways the set is consulted:
/// listed for the segment (a set small against the run) or probed per prime (a large set).
fn runs_skip_set_primes_whether_listed_or_probed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("primes.txt");
    let mut f = PrimesFile::open(&path).expect("open");
    // Many file primes against a run of two: probed.
    let many: Vec<u64> = vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41];
    assert_eq!(f.append(&many, &[], &[], &[]).expect("append"), 13);
    assert_eq!(
        f.append(&[], &[], &[run(10, 50, &[41, 43])], &[])
            .expect("append"),
        1
    );
    // A run long against the set: listed (41 is in it, 43 was written by the run).
    let long = [
        43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109,
    ];
    let mut with_41 = vec![41];
    with_41.extend_from_slice(&long);
    assert_eq!(
        f.append(&[], &[], &[run(40, 110, &with_41)], &[])
            .expect("append"),
        long.len() - 1
    );
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    let distinct: std::collections::HashSet<&&str> = lines.iter().collect();
    assert_eq!(lines.len(), distinct.len(), "no prime written twice");
    assert_eq!(lines.len(), 13 + 1 + long.len() - 1);
}
