//! End-to-end tests: real binaries, ephemeral ports, a temp dir each, children killed on drop.

mod afs_tests;
mod pipeline_tests;
