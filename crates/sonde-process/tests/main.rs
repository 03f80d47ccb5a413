//! The integration tests, one module a file: one test binary to build and link for all of them.
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;
mod cpu_and_uptime;
mod file_descriptors;
mod limits;
mod memory;
mod other_process;
mod threads;
