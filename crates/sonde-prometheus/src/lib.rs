//! # sonde-prometheus
//!
//! Serves a sonde registry to Prometheus: text 0.0.4 or OpenMetrics 1.0 chosen by the scrape's
//! `Accept` header, gzip when asked, from a server on its own thread and Tokio runtime, so the
//! application needs no async runtime and never waits on a scrape.
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
//! server.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod encode;
pub mod naming;
mod server;

pub use encode::{Format, encode};
pub use server::{PrometheusBuilder, PrometheusServer};

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
    /// `OTEL_EXPORTER_PROMETHEUS_HOST`/`_PORT` do not form an address.
    #[error(
        "invalid Prometheus exporter address {value:?} from the environment: {reason}; set OTEL_EXPORTER_PROMETHEUS_HOST to an IP address and OTEL_EXPORTER_PROMETHEUS_PORT to a port number"
    )]
    Address {
        /// What was read.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server's thread or runtime could not be started.
    #[error("could not start the Prometheus exporter's thread: {0}")]
    Start(#[source] std::io::Error),
}
