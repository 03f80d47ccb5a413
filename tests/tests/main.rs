//! The integration tests, one module a file: one test binary to build and link for all of them.
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod alerts;
mod cloudwatch_endpoint;
mod cloudwatch_export;
mod dashboards;
mod example_service;
mod exposition_lint;
mod first_hour;
mod hardening_exporters;
mod lifecycle;
mod otlp_export;
mod otlp_receiver;
mod prometheus_exporter;
mod prometheus_push;
mod readme;
