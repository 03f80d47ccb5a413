//! The integration tests, one module a file: one test binary to build and link for all of them.
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod agent;
mod common;
mod configs;
mod containers;
mod durable;
mod exposition_lint;
mod first_hour;
mod memory_budget;
mod name_collisions;
mod packaging;
mod process;
mod prometheus_web;
mod reliability;
mod reload;
mod select;
mod sources;
