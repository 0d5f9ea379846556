//! The fence of the root files (`primes.txt.leader`): which group, and which of its terms,
//! holds them; a group's name in it.

use std::path::{Path, PathBuf};

/// The fence of the root primes file `primes`: `<primes>.leader`.
pub fn fence_path(primes: &Path) -> PathBuf {
    let mut fence = primes.as_os_str().to_owned();
    fence.push(".leader");
    PathBuf::from(fence)
}

/// Who holds the root files by the fence's text: (term, group); (0, "") if nobody.
pub fn parse_fence(text: &str) -> (u64, String) {
    let mut it = text.split_whitespace();
    let term = it.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    (term, it.next().unwrap_or("").to_string())
}

/// Reads the fence of the root primes file `primes`: (term, group); (0, "") if none.
pub fn read_fence(primes: &Path) -> (u64, String) {
    parse_fence(&std::fs::read_to_string(fence_path(primes)).unwrap_or_default())
}

/// A group's name in the fence: its member numbers (`1,2,3`; a group of one is `1`). Two
/// groups that take turns on the same root files (simple mode, then replicated) differ.
pub fn group_id<'a>(ids: impl IntoIterator<Item = &'a u64>) -> String {
    ids.into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
