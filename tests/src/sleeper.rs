//! A child process to observe (from `sonde-testkit`, which the crates' own tests use too).

pub use sonde_testkit::sleeper::*;
