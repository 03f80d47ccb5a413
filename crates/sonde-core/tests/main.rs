//! The integration tests, one module a file: one test binary to build and link for all of them.
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod concurrency;
mod delta_handover;
mod exemplars;
mod histogram_props;
mod observe_n;
mod quantiles;
mod registration;
mod select;
