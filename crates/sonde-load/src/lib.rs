//! Load tests and benchmarks that judge a service, side by side with what the service measured
//! about itself.
//!
//! The binary `sonde-load` is the way in (`sonde-load --help`); this library holds its parts:
//! [`plan`] (what to send, built from flags or a [`scenario`] file), [`engine`] (open and closed
//! load models, coordinated omission corrected), [`result`] (a run as data, with every
//! latency kept as a sonde-core histogram so runs merge exactly), [`threshold`], [`compare`]
//! (baselines and regressions), [`report`] (summary table, Markdown and SVG), [`scrape`] (the
//! service's own histograms over the run's window) and [`coldstart`].
//!
//! ```
//! use sonde_load::threshold::Threshold;
//! let t: Threshold = "p95<300ms".parse().unwrap();
//! assert_eq!(t.to_string(), "p95<300ms");
//! ```

pub mod cli;
pub mod coldstart;
pub mod compare;
pub mod engine;
pub mod plan;
pub mod push;
pub mod report;
pub mod result;
pub mod scenario;
pub mod scrape;
mod signals;
pub mod threshold;
