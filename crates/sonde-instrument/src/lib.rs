//! # sonde-instrument
//!
//! What a service adds in a few lines on top of the sonde engine, with OpenTelemetry semantic
//! convention names: process lifecycle and cold starts ([`Lifecycle`], [`Faas`]), database and
//! HTTP client timings ([`DbMetrics`], [`HttpClientMetrics`], [`time_db`]), caches
//! ([`CacheMetrics`]), connection pools ([`PoolMetrics`] over [`PoolStats`]), multi-step
//! operations ([`Phases`]) and business events with bounded label values ([`Events`]).
//!
//! Every helper costs at most one histogram record and two clock reads on top of the call it
//! wraps; series are resolved once where the labels are known up front.
//!
//! ```
//! use sonde_instrument::{CacheMetrics, DbMetrics, Lifecycle};
//! let registry = sonde_core::Registry::new();
//! let lifecycle = Lifecycle::install(&registry)?;
//! let db = DbMetrics::install(&registry)?;
//! let cache = CacheMetrics::install(&registry, "users")?;
//! lifecycle.mark_ready();
//! let user: Result<&str, std::io::Error> = db.time_sync("sqlite", "SELECT", "users", || Ok("ada"));
//! cache.miss();
//! # let _ = user;
//! # Ok::<(), sonde_instrument::Error>(())
//! ```
#![warn(missing_docs)]

mod calls;
mod faas;
mod lifecycle;
mod resources;
mod server;
mod work;

pub use calls::{DbMetrics, HttpClientMetrics, error_type, time_db, time_db_sync};
pub use faas::{Faas, Invocation, Outcome, Trigger, lambda_resource, lambda_resource_from};
pub use lifecycle::{Lifecycle, os_start_time, process_start_time};
pub use resources::{CacheMetrics, PoolMetrics, PoolStats};
#[cfg(feature = "warp")]
pub use server::instrument_warp;
pub use server::{ActiveRequest, HttpServerMetrics, method_label};
#[cfg(feature = "tower")]
pub use server::{HttpServerLayer, HttpServerService, RouteFn};
pub use work::{Events, PhaseTimer, Phases};

/// Errors of the instrumentation helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A family could not be registered (usually: the name is already registered with another
    /// definition in this registry).
    #[error("could not register the instrumentation's metrics: {0}")]
    Register(#[from] sonde_core::Error),
}
