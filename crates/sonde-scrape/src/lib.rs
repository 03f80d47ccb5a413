//! # sonde-scrape
//!
//! Reading Prometheus text and OpenMetrics endpoints: [`parse`] any exposition into families,
//! [`fetch`] one endpoint with a time and size limit, and [`ScrapeSource`] to mirror scraped
//! targets into a [`sonde_core::Registry`] (as the agent's `[[sources.scrape]]` does), so every
//! exporter forwards them.
//!
//! ```
//! let e = sonde_scrape::parse("# TYPE up gauge\nup{job=\"node\"} 1\n").unwrap();
//! assert_eq!(e.families["up"].kind, sonde_scrape::Kind::Gauge);
//! ```
#![warn(missing_docs)]

mod fetch;
mod source;
mod text;

pub use fetch::{ACCEPT, Auth, FetchError, MAX_BODY_BYTES, Tls, check_url, fetch, fetch_with_tls};
pub use source::{ScrapeSource, ScrapeStats, Scraper, Target};
pub use text::{
    Exposition, Family, Kind, Labels, Sample, Series, bucket_quantile, parse, parse_sample,
    parse_value,
};
