//! # sonde-statsd
//!
//! StatsD and DogStatsD ingest into a sonde [`Registry`](sonde_core::Registry):
//!
//! * a zero-copy, allocation-free line [parser](parse_packet) (`name:value|type|@rate|#tags`,
//!   DogStatsD multi-values, container ids, timestamps; events and service checks recognised
//!   and ignored) that never panics and reports malformed lines by [reason](ParseError::reason);
//! * [mapping rules](Mapper): glob patterns on `.`-separated names that rename, add labels
//!   (with captures) or drop;
//! * [`Ingest`] (details in [`ingest`]): one family per metric name, with label sets discovered at runtime from the
//!   DogStatsD tags (a new tag key widens the family; every series keeps its value),
//!   limits on names, series and labels, and a handle cache so repeated lines cost a hash
//!   lookup and an atomic add;
//! * a [`StatsdServer`] with UDP and unix datagram receivers and newline-delimited TCP
//!   listeners ([`tcp`]), decoupled from the parser by a bounded queue (when it is full,
//!   datagrams are dropped and TCP connections wait).
//!
//! Self-metrics (see [`self_metrics`]): `sonde.statsd.packets{transport}`,
//! `sonde.statsd.lines`, `sonde.statsd.parse_errors{reason}`, `sonde.statsd.dropped{reason}`,
//! `sonde.statsd.relabels{metric}`, `sonde.statsd.ignored{kind}`,
//! `sonde.statsd.receive_errors{transport}` and `sonde.statsd.queue.size`. Malformed lines
//! are also logged at debug level through `tracing`, rate-limited (see
//! [`Ingest::ingest_packet`]).
//!
//! ```
//! use sonde_core::{Registry, Unit};
//! use sonde_statsd::{Ingest, Mapper, MappingRule};
//!
//! let registry = Registry::new();
//! let mapper = Mapper::new([MappingRule::new("api.*.latency").name("http.latency").label("route", "$1")])?;
//! let mut ingest = Ingest::new(registry.clone()).mapper(mapper);
//! ingest.ingest_packet(b"api.users.latency:12|ms|#method:GET\napi.users.latency:30|ms|#method:GET\n\
//!                       page.views:1|c|@0.1\nqueue.depth:7|g\nqueue.depth:-2|g\nbad line");
//!
//! let snap = registry.snapshot();
//! let latency = snap.point("http.latency", &[("route", "users"), ("method", "GET")]).unwrap();
//! let h = latency.histogram().unwrap();
//! assert_eq!(h.count(), 2);
//! assert!((h.sum() - 0.042).abs() < 1e-12); // timers are recorded in seconds
//! assert_eq!(snap.family("http.latency").unwrap().meta.unit(), &Unit::Seconds);
//! assert_eq!(snap.point("page.views", &[]).unwrap().number().unwrap().as_f64(), 10.0);
//! assert_eq!(snap.point("queue.depth", &[]).unwrap().number().unwrap().as_f64(), 5.0);
//! let errors = snap.point("sonde.statsd.parse_errors", &[("reason", "missing_value")]).unwrap();
//! assert_eq!(errors.number().unwrap().as_f64(), 1.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod ingest;
pub mod mapping;
pub mod parser;
pub mod self_metrics;
pub mod server;
pub mod tcp;

pub use config::StatsdConfig;
pub use ingest::{
    DEFAULT_MAX_LABELS, DEFAULT_MAX_METRICS, DEFAULT_MAX_SERIES, Ingest, MAX_LINE_OBSERVATIONS,
    MAX_SAMPLE_WEIGHT, MAX_SET_SIZE,
};
pub use mapping::{
    Mapped, Mapper, MappingError, MappingRule, NAME_PREFIX, sanitize_label_name,
    sanitize_metric_name,
};
pub use parser::{
    MAX_LINE_LEN, Metric, MetricType, ParseError, Sample, TagIter, Tags, Value, Values, parse_line,
    parse_packet,
};
pub use server::{
    DEFAULT_QUEUE, Error, Listener, MAX_DATAGRAM, StatsdServer, StatsdServerBuilder, Transport,
};
