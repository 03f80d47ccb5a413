//! # sonde-prometheus
//!
//! Serves a sonde registry to Prometheus: text 0.0.4, OpenMetrics 1.0 or the protobuf format
//! (length-delimited `MetricFamily` messages, the one that carries native histograms) chosen by
//! the scrape's `Accept` header, gzip when asked, from a server on its own thread and Tokio
//! runtime, so the application needs no async runtime and never waits on a scrape. The same
//! server answers `/report` (percentiles, rates and error ratios per route over the last
//! minute, the last 5 minutes and since start; `?format=md` for Markdown), `/health`
//! (liveness) and `/ready` (readiness the application declares on a [`Readiness`] plus the
//! exporters' state), and, with a [`Judge`] given to [`PrometheusBuilder::judge`], a verdict
//! per objective in the report (met, violated, no data; `sonde-objectives` judges an
//! `objectives.toml`): see `ENDPOINTS.md` in this crate for the JSON and a Kubernetes probe
//! snippet.
//!
//! ```
//! use sonde_core::Registry;
//! use sonde_prometheus::PrometheusBuilder;
//!
//! let registry = Registry::new();
//! registry.counter("jobs.done").build()?.handle().inc();
//! // Port 0 picks a free port; the default is 127.0.0.1:9464.
//! let server = PrometheusBuilder::new()
//!     .registry(registry)
//!     .bind("127.0.0.1:0".parse().unwrap())
//!     .install()?;
//! println!("scrape http://{}/metrics", server.local_addr());
//! sonde_core::Component::shutdown(&server, std::time::Duration::from_secs(5))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

// The push paths' HTTP client (reqwest on rustls), shared by remote write and the Pushgateway.
#[cfg(any(feature = "remote-write", feature = "pushgateway"))]
mod client;
mod encode;
#[cfg(test)]
mod fixtures;
pub mod naming;
pub mod proto;
#[cfg(feature = "pushgateway")]
pub mod push;
mod ready;
#[cfg(feature = "remote-write")]
pub mod remote_write;
mod report;
mod server;
mod server_config;

pub use encode::{Format, encode, encode_registry};
pub use proto::encode_protobuf;
#[cfg(feature = "pushgateway")]
pub use push::{PushOnDrop, PushgatewayBuilder};
pub use ready::{MAX_CONDITIONS, Readiness};
#[cfg(feature = "remote-write")]
pub use remote_write::{RemoteWriteBuilder, RemoteWriteConfig, RemoteWriter};
pub use report::{
    Judge, MARKDOWN_ROWS, REPORT_SCHEMA_VERSION, Window, report, report_markdown,
    report_with_windows,
};
pub use server::{
    ACCEPT_ERRORS, CONNECTIONS_EVICTED, CONNECTIONS_OPEN, CONNECTIONS_REFUSED,
    DEFAULT_REPORT_MEMORY_LIMIT, DEFAULT_REPORT_RESOLUTION, DEFAULT_REPORT_WINDOWS,
    FAILING_AFTER_INTERVALS, PrometheusBuilder, PrometheusServer, check_basic_auth_user,
    check_tls_files,
};
pub use server_config::{DEFAULT_LISTEN, PrometheusServerConfig};

/// Errors of the Prometheus exporter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listen address could not be bound.
    #[error(
        "could not listen on {addr}: {source}; choose a free address with PrometheusBuilder::bind or OTEL_EXPORTER_PROMETHEUS_HOST/OTEL_EXPORTER_PROMETHEUS_PORT"
    )]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The web configuration (TLS files, basic auth users) is unusable.
    #[error("invalid web configuration: {0}")]
    WebConfig(String),
    /// The server's thread or runtime could not be started.
    #[error("could not start the Prometheus exporter's thread: {0}")]
    Start(#[source] std::io::Error),
    /// A push exporter's setting is invalid (the message says which and how to fix it).
    #[error("{0}")]
    Config(String),
    /// A push endpoint could not be reached.
    #[error(
        "could not send to {url}: {reason}; check that the server is running and reachable at that address"
    )]
    Transport {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A push endpoint answered with a status other than 2xx.
    #[error("{url} answered HTTP {status}: {body:?}; {hint}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
        /// What to check.
        hint: &'static str,
    },
    /// Remote write did not deliver everything it was asked to.
    #[error("remote write did not deliver everything: {0}")]
    Incomplete(String),
}
