//! End-to-end tests: real binaries, ephemeral ports, a temp dir each, children killed on drop.

mod afs_tests;
mod bulk_tests;
mod chaos_tests;
mod container_tests;
mod dashboard_tests;
mod group_tests;
mod hostile_tests;
mod jobs_tests;
mod netns_tests;
mod outside_tests;
mod pipeline_tests;
mod swarm_tests;

/// `e2e::wait_for`, re-exported for the test modules.
pub fn e2e_wait(limit: std::time::Duration, what: &str, cond: impl FnMut() -> bool) {
    e2e::wait_for(limit, what, cond)
}
