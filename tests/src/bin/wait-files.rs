//! `wait-files DIR COUNT [SUFFIX] [TIMEOUT_S]`: returns once DIR holds at least COUNT files
//! whose names end in SUFFIX (default `.json`), or fails after TIMEOUT_S seconds (default
//! 600). For the end-to-end benchmark: one process reading the directory every 2 ms costs
//! far less CPU than a shell loop starting `find | wc` every few ms on the cores that the
//! measured system is using.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    loop {
        let n = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(&suffix))
                    .count()
            })
            .unwrap_or(0);
        if n >= count {
            return ExitCode::SUCCESS;
        }
        if started.elapsed() > timeout {
            eprintln!(
                "wait-files: {n} of {count} files in {} after {timeout:?}",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
