//! OTLP export for sonde: metrics from a registry over gRPC or HTTP/protobuf, and a one-call
//! tracing pipeline that sends spans through the same endpoint configuration.
//!
//! Metrics leave as `opentelemetry-proto` messages: sums (monotonic or not), gauges, explicit or
//! exponential histograms with min/max and exemplars (trace and span ids), start times, the
//! `sonde` instrumentation scope and a resource from `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES` and detected host, process and FaaS attributes.
//!
//! Delivery happens on a thread with its own Tokio runtime, never the application's:
//! - a collection every interval (cumulative or delta), split into requests of bounded size;
//! - a bounded queue that drops the oldest request when full, counted in
//!   `sonde.exporter.dropped_points{exporter="otlp",reason}`;
//! - retries only for the retryable answers of the specification (gRPC UNAVAILABLE,
//!   DEADLINE_EXCEEDED..., RESOURCE_EXHAUSTED with RetryInfo; HTTP 429/502/503/504), with
//!   jittered exponential backoff, honouring RetryInfo and Retry-After (at most an hour:
//!   a longer delay than the retry time drops the request);
//! - over HTTP, no redirect is followed (a 3xx, or a 2xx HTML page, is a failure naming where
//!   it pointed) and at most 64 KiB of a response body is read;
//! - a panic while collecting or sending loses that batch only, counted in
//!   `sonde.exporter.panics` and `dropped_points{reason="panic"}`;
//! - header values and URL credentials never appear in `Debug` output or errors;
//! - partial success counted in `sonde.exporter.rejected_points`;
//! - [`OtlpMetricsExporter::flush`] and [`OtlpMetricsExporter::shutdown`] deliver
//!   everything pending within a deadline.
//!
//! Settings: explicit builder calls beat `OTEL_EXPORTER_OTLP_METRICS_*` variables, which beat
//! `OTEL_EXPORTER_OTLP_*`, which beat the defaults (HTTP/protobuf to `http://localhost:4318`,
//! every 60 s, cumulative).
//!
//! ```no_run
//! use std::time::Duration;
//! use sonde_core::Registry;
//! use sonde_otlp::{OtlpMetricsBuilder, OtlpTransport, Protocol};
//!
//! let registry = Registry::new();
//! let exporter = OtlpMetricsBuilder::new()
//!     .registry(registry.clone())
//!     .transport(OtlpTransport::new().endpoint("http://127.0.0.1:4317").protocol(Protocol::Grpc))
//!     .interval(Duration::from_secs(10))
//!     .install()?;
//! registry.counter("jobs.done").build()?.handle().inc();
//! // Deliver what was recorded before exiting.
//! exporter.shutdown(Duration::from_secs(5))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod config;
mod convert;
mod exporter;
mod settings;
#[cfg(feature = "traces")]
pub mod traces;
mod transport;

pub use config::{Compression, OtlpTransport, Protocol, Resolved, Signal};
pub use convert::{HistogramAggregation, to_requests};
pub use exporter::{DROP_SHUTDOWN_TIMEOUT, EXPORTER, OtlpMetricsBuilder, OtlpMetricsExporter};
pub use settings::OtlpExporterConfig;
pub use sonde_push::telemetry::{DROPPED_POINTS, PANICS, REJECTED_POINTS, REQUESTS, RETRIES};

/// Errors of the OTLP exporter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting or environment variable is invalid; the message names it and the fix.
    #[error("invalid OTLP configuration: {0}")]
    Config(String),
    /// The exporter's thread or runtime could not start.
    #[error("could not start the OTLP exporter: {0}")]
    Start(#[source] std::io::Error),
    /// Not everything was delivered by the deadline, or some data was dropped; the message
    /// says what and why.
    #[error("OTLP export incomplete: {0}")]
    Incomplete(String),
}
