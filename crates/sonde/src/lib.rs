//! # sonde
//!
//! Observability and metrics for Rust services. This is the crate to depend on: it re-exports
//! the engine ([`sonde_core`]) and, behind cargo features, each exporter and integration as
//! they land.
//!
//! ```
//! use sonde::{Registry, Unit};
//!
//! let registry = Registry::new();
//! let requests = registry
//!     .counter("http.server.requests")
//!     .description("HTTP requests served.")
//!     .labels(["http.request.method", "http.route", "http.response.status_code"])
//!     .build()?;
//! let ok = requests.with(&["GET", "/users/:id", "200"]);
//! ok.inc();
//!
//! let latency = registry
//!     .histogram("http.server.request.duration")
//!     .unit(Unit::Seconds)
//!     .labels(["http.route"])
//!     .build()?;
//! latency.with(&["/users/:id"]).time(|| { /* handle the request */ });
//!
//! // Static families and macros use the global registry.
//! sonde::counter!("cache.requests", "cache.name" => "users", "cache.result" => "hit").inc();
//! # Ok::<(), sonde::Error>(())
//! ```
#![warn(missing_docs)]

pub use sonde_core::*;

/// Instrumentation helpers (feature `instrument`).
#[cfg(feature = "instrument")]
pub use sonde_instrument as instrument;

/// `#[measured]` (feature `macros`): calls, errors and duration per function.
#[cfg(feature = "macros")]
pub use sonde_macros::measured;

/// Process metrics (feature `process`).
#[cfg(feature = "process")]
pub use sonde_process as process;

/// The tracing layer (feature `tracing`).
#[cfg(feature = "tracing")]
pub use sonde_tracing as tracing;

/// The `metrics` crate bridge (feature `metrics`).
#[cfg(feature = "metrics")]
pub use sonde_recorder as recorder;

/// The Prometheus exporter (feature `prometheus`).
#[cfg(feature = "prometheus")]
pub use sonde_prometheus as prometheus;

/// OTLP export of metrics, and the tracing pipeline (feature `otlp`).
#[cfg(feature = "otlp")]
pub use sonde_otlp as otlp;

/// AWS CloudWatch export: PutMetricData, EMF and the cost preview (feature `cloudwatch`).
#[cfg(feature = "cloudwatch")]
pub use sonde_cloudwatch as cloudwatch;
