//! # sonde-scrape
//!
//! Reading Prometheus endpoints (text, OpenMetrics and the protobuf format with native
//! histograms): [`parse`] or [`parse_protobuf`] any exposition into families, fetch one
//! endpoint with a time and size limit ([`Request`], or [`fetch_exposition`] with every setting
//! given), and [`ScrapeSource`] to mirror scraped targets into a [`sonde_core::Registry`] (as
//! the agent's `[[sources.scrape]]` does), so every exporter forwards them.
//!
//! ```
//! let e = sonde_scrape::parse("# TYPE up gauge\nup{job=\"node\"} 1\n").unwrap();
//! assert_eq!(e.families["up"].kind, sonde_scrape::Kind::Gauge);
//! ```
#![warn(missing_docs)]

mod config;
mod fetch;
mod proto;
mod source;
mod text;

pub use config::ScrapeTargetConfig;
pub use fetch::{
    ACCEPT, ACCEPT_PROTOBUF, Auth, FetchError, MAX_BODY_BYTES, Request, Tls, check_login,
    check_url, fetch_exposition,
};
pub use proto::parse_protobuf;
#[cfg(fuzzing)]
#[doc(hidden)]
pub use source::fuzzing;
pub use source::{DEFAULT_SAMPLE_LIMIT, ScrapeSource, ScrapeStats, Scraper, Target};
pub use text::{
    Exposition, Family, Kind, Labels, Native, Sample, Series, bucket_quantile, parse, parse_sample,
    parse_value,
};
