//! # sonde-core
//!
//! The metrics engine of sonde: counters, gauges, up-down counters and histograms with labels,
//! recorded through handles without a lock; bounded series per family with an overflow series;
//! one histogram core that renders as classic buckets, exponential buckets, CloudWatch
//! value/count pairs and quantiles; and snapshots that exporters read cumulatively or as deltas,
//! each consumer on its own schedule.
//!
//! What a record costs through a handle:
//! - a counter, up-down counter or gauge: one relaxed atomic operation (for `f64` additions, a
//!   relaxed compare-and-swap loop);
//! - a histogram observation: a few atomic operations: a relaxed add to the value's cell, a
//!   relaxed compare-and-swap loop on the sum, an add to the explicit bucket's counter when a
//!   bucket boundary falls inside that cell, and relaxed loads of the minimum and maximum, with
//!   a compare-and-swap only when the value passes one of them (plus the bucket's exemplar, in a
//!   family that keeps them, when a trace is current).
//!
//! Recording allocates nothing, except a histogram series' storage, once each: a block of cells
//! (96 bytes) the first time the series records a value in the block's range (two octaves at
//! the default precision), and, the first time a cell reaches 2^15 observations, its block's
//! carry (192 bytes) and, at the series' first, the table of carries (about 160 bytes).
//!
//! No async runtime, no exporter code: exporters live in their own crates.
//!
//! ```
//! use sonde_core::{Registry, Temporality, Unit};
//!
//! let registry = Registry::new();
//! let duration = registry
//!     .histogram("http.server.request.duration")
//!     .description("Duration of HTTP server requests.")
//!     .unit(Unit::Seconds)
//!     .labels(["http.request.method", "http.route"])
//!     .build()?;
//!
//! // Resolve the series once, keep the handle: recording then takes no lock and no lookup.
//! let get_users = duration.with(&["GET", "/users/:id"]);
//! for ms in [3.0, 5.0, 8.0, 120.0] {
//!     get_users.observe(ms / 1000.0);
//! }
//!
//! let snapshot = registry.snapshot();
//! let h = snapshot
//!     .point("http.server.request.duration", &[("http.request.method", "GET"), ("http.route", "/users/:id")])
//!     .and_then(|p| p.histogram())
//!     .unwrap();
//! assert_eq!(h.count(), 4);
//! let p50 = h.quantile(0.5).unwrap();
//! assert!((p50 - 0.005).abs() / 0.005 < 0.0144);
//!
//! // A delta consumer (CloudWatch, delta OTLP) sees changes since its own last read.
//! let mut deltas = registry.reader(Temporality::Delta);
//! let _first = deltas.collect();
//! get_users.observe(0.010);
//! let second = deltas.collect();
//! let d = second.point("http.server.request.duration", &[("http.request.method", "GET"), ("http.route", "/users/:id")]).unwrap();
//! assert_eq!(d.histogram().unwrap().count(), 1);
//! # Ok::<(), sonde_core::Error>(())
//! ```
#![warn(missing_docs)]

mod budget;
mod builder;
mod component;
pub mod diag;
mod error;
pub mod exemplar;
mod family;
pub mod histogram;
mod histogram_instrument;
mod instrument;
mod kind;
mod labels;
mod lazy;
pub mod name;
mod number;
mod reader;
mod registry;
mod resource;
pub mod select;
mod series;
mod snapshot;
pub mod testing;
mod unit;

pub use error::Error;

pub use budget::MemoryBudget;
pub use component::{Component, ComponentError, ComponentThread};
pub use exemplar::{Exemplar, TraceContext};
pub use family::Family;
pub use histogram::{
    ExponentialBuckets, Histogram, HistogramConfig, HistogramLayout, HistogramParts,
    HistogramPoint, HistogramTimer, Precision, Timed,
};
pub use instrument::{Counter, CounterNumber, Gauge, GaugeNumber, Instrument, UpDownCounter};
pub use kind::Kind;
pub use labels::LabelIter;
pub use lazy::LazyFamily;
#[doc(hidden)]
pub use lazy::{__family, __unit_for_name};
pub use number::{AtomicNumber, Number, NumberKind};
pub use reader::{DeltaState, Reader};
pub use registry::{
    BUDGET_LIMIT, BUDGET_USAGE, CollectorGuard, DEFAULT_MAX_SERIES, FamilyBuilder,
    INSTRUMENTATION_ERRORS, Registry, SERIES_ACTIVE, SERIES_OVERFLOW, SERIES_REFUSED, Visitor,
    collection_lock,
};
pub use resource::{Resource, TARGET_INFO_ATTRIBUTES, instance_id, parse_key_values};
pub use select::{GaugeAggregation, Pattern, Rule, Selection};
pub use series::{Header, SeriesInfo, unix_nanos};
pub use snapshot::{
    FamilyMeta, FamilySnapshot, OVERFLOW_LABEL, Point, SeriesSnapshot, Snapshot, Temporality,
};
pub use unit::Unit;
