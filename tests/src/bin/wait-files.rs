//! `wait-files DIR COUNT [SUFFIX] [TIMEOUT_S]`: returns once DIR holds at least COUNT files
//! whose names end in SUFFIX (default `.json`), or fails after TIMEOUT_S seconds (default
//! 600). For the end-to-end benchmark, which must not take CPU from the system it measures:
//! the directory is read once, then inotify tells which files appear (reading a folder of
//! thousands of entries every 2 ms cost ~4% of a core; a shell loop of `find | wc`, 16%).
//! A name counts once however often it is rewritten; only names that exist count.
//!
//! On success it prints the moment it saw the last file (seconds since the Unix epoch, as
//! `date +%s.%N`), before it exits: the kernel's release of an inotify instance at exit
//! waits for an SRCU grace period, which took 1-25 ms here, and is not the measured
//! system's time (a `date` after this tool counted it).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

fn counted(name: &str, suffix: &str) -> bool {
    name.ends_with(suffix) && !name.starts_with('.')
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(count)) = (
        args.first(),
        args.get(1).and_then(|c| c.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: wait-files DIR COUNT [SUFFIX] [TIMEOUT_S]");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let suffix = args.get(2).cloned().unwrap_or_else(|| ".json".into());
    let timeout = Duration::from_secs(args.get(3).and_then(|t| t.parse().ok()).unwrap_or(600));
    let started = Instant::now();
    // The folder may not exist yet: wait for it (rarely more than a few ms).
    while !dir.is_dir() {
        if started.elapsed() > timeout {
            eprintln!("wait-files: {} never appeared", dir.display());
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (tx, rx) = mpsc::channel();
    let mut watcher = match notify::recommended_watcher(tx) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("wait-files: cannot watch: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        eprintln!("wait-files: cannot watch {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    // Watching first, then reading: a file that appears in between is seen either way. The
    // folder is read again after a lost event (a full inotify queue) and once a second.
    let read = |seen: &mut HashSet<String>| {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.filter_map(Result::ok) {
                if let Some(n) = e.file_name().to_str() {
                    if counted(n, &suffix) {
                        seen.insert(n.to_string());
                    }
                }
            }
        }
    };
    let mut seen = HashSet::new();
    read(&mut seen);
    while seen.len() < count {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            eprintln!(
                "wait-files: {} of {count} files in {} after {timeout:?}",
                seen.len(),
                dir.display()
            );
            return ExitCode::FAILURE;
        }
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(Ok(ev)) if !ev.need_rescan() => {
                for p in &ev.paths {
                    if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                        if counted(n, &suffix) && !seen.contains(n) && p.exists() {
                            seen.insert(n.to_string());
                        }
                    }
                }
            }
            _ => read(&mut seen),
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    println!("{}.{:09}", now.as_secs(), now.subsec_nanos());
    ExitCode::SUCCESS
}
