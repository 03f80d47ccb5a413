//! The integration tests, one module a file: one test binary to build and link for all of them.
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod cli;
mod committed;
mod errors;
mod outputs;
mod promtool;
mod support;
