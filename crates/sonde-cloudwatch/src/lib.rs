//! AWS CloudWatch export for sonde.
#![warn(missing_docs)]

mod config;
mod cost;
pub mod datum;
pub mod emf;
mod exporter;

pub use config::{CloudWatchConfig, EmfConfig};
pub use cost::{CostPreview, cost_preview};
pub use emf::{Destination, EmfBuilder, EmfWriter};
pub use exporter::{
    CloudWatchBuilder, CloudWatchExporter, DROP_SHUTDOWN_TIMEOUT, EXPORTER, check_namespace,
};

/// Errors of the CloudWatch exporter and the EMF writer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid; the message names it and the fix.
    #[error("invalid CloudWatch configuration: {0}")]
    Config(String),
    /// The exporter's thread or runtime could not start.
    #[error("could not start the CloudWatch exporter: {0}")]
    Start(#[source] std::io::Error),
    /// Not everything was delivered by the deadline, or some data was dropped.
    #[error("CloudWatch export incomplete: {0}")]
    Incomplete(String),
    /// Writing EMF documents failed.
    #[error(
        "could not write EMF documents to {destination}: {source}; check that the destination exists and accepts writes"
    )]
    Write {
        /// Where.
        destination: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
