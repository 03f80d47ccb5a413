//! # sonde
//!
//! Observability and metrics for Rust services. This is the crate to depend on: it re-exports
//! the engine ([`sonde_core`]: registries, counters, gauges, histograms, snapshots) at its root
//! and, behind cargo features, every exporter and integration as a module.
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
//!
//! ## Running handles
//!
//! The `install()` of every exporter, server, collector and pipeline (the Prometheus server and
//! remote writer, the OTLP and CloudWatch exporters, the tracing pipeline, the process and Tokio
//! runtime collectors) returns a `#[must_use]` handle: the component runs for as long as the
//! handle lives; dropping it stops the component, delivering what a push exporter holds, and
//! logs a line (the Tokio runtime collector stops silently). Bind it for the life of the
//! service:
//!
#![cfg_attr(feature = "prometheus", doc = "```no_run")]
#![cfg_attr(not(feature = "prometheus"), doc = "```ignore")]
//! let _metrics = sonde::prometheus::PrometheusBuilder::new().install()?;
//! # Ok::<(), sonde::prometheus::Error>(())
//! ```
//!
//! A handle left unused is a compile-time warning, not a silent stop:
//!
#![cfg_attr(feature = "prometheus", doc = "```compile_fail")]
#![cfg_attr(not(feature = "prometheus"), doc = "```ignore")]
//! #![deny(unused_must_use)]
//! sonde::prometheus::PrometheusBuilder::new().install()?;
//! # Ok::<(), sonde::prometheus::Error>(())
//! ```
//!
//! Two kinds of `install` return no such handle. That of the `metrics` bridge
//! (`sonde::recorder::install()`, `SondeRecorder::install`) sets the process-wide `metrics`
//! recorder, which stays installed for the life of the process: dropping the `SondeRecorder`
//! returned changes nothing, and a second install fails. Those of the instrumentation helpers
//! (`DbMetrics`, `CacheMetrics`, `Lifecycle`, `Faas`...) register families and return the
//! helper that records into them: nothing runs in the background, so there is nothing to stop
//! (a pool given to `PoolMetrics::watch` is read at every collection for the life of the
//! registry).
//!
//! ## Feature flags
//!
//! None is on by default: the engine alone has six small dependencies.
#![doc = document_features::document_features!()]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub use sonde_core::*;

/// Instrumentation helpers (feature `instrument`).
#[cfg(feature = "instrument")]
#[cfg_attr(docsrs, doc(cfg(feature = "instrument")))]
#[doc(inline)]
pub use sonde_instrument as instrument;

/// `#[measured]` (feature `macros`): calls, errors and duration per function.
#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
#[doc(inline)]
pub use sonde_macros::measured;

/// Process metrics (feature `process`).
#[cfg(feature = "process")]
#[cfg_attr(docsrs, doc(cfg(feature = "process")))]
#[doc(inline)]
pub use sonde_process as process;

/// The tracing layer (feature `tracing`).
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
#[doc(inline)]
pub use sonde_tracing as tracing;

/// The `metrics` crate bridge (feature `metrics`).
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
#[doc(inline)]
pub use sonde_recorder as recorder;

/// The Prometheus exporter (feature `prometheus`).
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
#[doc(inline)]
pub use sonde_prometheus as prometheus;

/// OTLP export of metrics, and the tracing pipeline (feature `otlp`).
#[cfg(feature = "otlp")]
#[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
#[doc(inline)]
pub use sonde_otlp as otlp;

/// AWS CloudWatch export: PutMetricData, EMF and the cost preview (feature `cloudwatch`).
#[cfg(feature = "cloudwatch")]
#[cfg_attr(docsrs, doc(cfg(feature = "cloudwatch")))]
#[doc(inline)]
pub use sonde_cloudwatch as cloudwatch;

/// The self-metrics every push exporter shares (`sonde.exporter.requests`, `dropped_points`,
/// `queue.size`...), by `exporter` label; the `/health` endpoint reads them.
#[cfg(any(feature = "prometheus", feature = "otlp", feature = "cloudwatch"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "prometheus", feature = "otlp", feature = "cloudwatch")))
)]
pub use sonde_push::telemetry;

/// A durable queue for a push exporter (`durable_queue(...)` on the remote write, OTLP and
/// CloudWatch builders): requests wait on disk through outages, restarts and crashes.
#[cfg(any(feature = "prometheus", feature = "otlp", feature = "cloudwatch"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "prometheus", feature = "otlp", feature = "cloudwatch")))
)]
pub use sonde_push::{DiskQueueConfig, Fsync};

/// The exporters' typed settings (`RemoteWriteConfig`, `OtlpExporterConfig`, `CloudWatchConfig`
/// ...): bring [`settings::Settings`] into scope for their `validate()`.
#[cfg(any(feature = "prometheus", feature = "otlp", feature = "cloudwatch"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "prometheus", feature = "otlp", feature = "cloudwatch")))
)]
pub use sonde_settings as settings;
