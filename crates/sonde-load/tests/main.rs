//! The integration tests, one module a file: one test binary to build and link for all of them.
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod baseline;
mod coldstart;
mod compare;
mod objectives;
mod push;
mod run;
mod scenario;
mod scrape;
mod support;
