//! The integration tests, one module a file: one test binary to build and link for all of them.
#![allow(clippy::unwrap_used)] // tests panic on failure by design

#[cfg(target_os = "linux")] // every file that uses it is Linux-only
mod common;
mod cost;
mod host;
mod procstat;
