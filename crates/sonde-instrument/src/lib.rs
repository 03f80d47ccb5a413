//! # sonde-instrument
//!
//! What a service adds in a few lines on top of the sonde engine, with OpenTelemetry semantic
//! convention names: process lifecycle and cold starts ([`Lifecycle`], [`Faas`]), database and
//! HTTP client timings ([`DbMetrics`], [`HttpClientMetrics`], [`time_db`]), caches
//! ([`CacheMetrics`]), connection pools ([`PoolMetrics`] over [`PoolStats`]), multi-step
//! operations ([`Phases`]) and business events with bounded label values ([`Events`]).
//!
//! Every helper but [`Faas`] costs at most one histogram record and two clock reads on top of
//! the call it wraps. A [`Faas`] invocation records one histogram and reads the clock two to four
//! times (one more each with a cost model and with a deadline); its cold start adds a clock read
//! and a second histogram record (`faas.init_duration`), and, if nothing has asked for
//! [`process_start_time`] before, reads the process's start time (on Linux, from `/proc`).
//! Series are resolved once where the labels are known up front.
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
pub mod conventions;
mod faas;
mod lifecycle;
#[cfg(feature = "moka")]
mod moka_cache;
#[cfg(feature = "tower")]
mod recorded;
mod resources;
#[cfg(feature = "tokio")]
mod runtime;
mod server;
mod work;

#[cfg(feature = "reqwest")]
pub use calls::HttpClientMiddleware;
pub use calls::{DbMetrics, HttpClientMetrics, UrlTemplate, error_type, time_db, time_db_sync};
#[cfg(feature = "tower")]
pub use calls::{HttpClientLayer, HttpClientService};
pub use faas::{
    Architecture, CostModel, Faas, Invocation, LAMBDA_PRICES_AS_OF, LambdaPricing, Outcome,
    Trigger, lambda_resource, lambda_resource_from,
};
pub use lifecycle::{Lifecycle, os_start_time, process_start_time};
#[cfg(feature = "moka")]
pub use moka_cache::MokaCache;
#[cfg(feature = "tower")]
pub use recorded::{Instrumented, Observe, Record, Recorded};
#[cfg(feature = "bb8")]
pub use resources::bb8_adapter::{Bb8Stats, bb8_get};
#[cfg(feature = "deadpool")]
pub use resources::deadpool_adapter::{DeadpoolStats, deadpool_get};
#[cfg(feature = "r2d2")]
pub use resources::r2d2_adapter::{R2d2Events, R2d2Stats};
#[cfg(feature = "sqlx")]
pub use resources::sqlx_adapter::{SqlxStats, sqlx_acquire};
pub use resources::{CacheMetrics, PoolMetrics, PoolStats};
#[cfg(feature = "tokio")]
pub use runtime::TokioRuntimeMetrics;
#[cfg(feature = "warp")]
pub use server::instrument_warp;
pub use server::{ActiveRequest, HttpServerMetrics, method_label};
#[cfg(feature = "actix-web")]
pub use server::{ActixInner, HttpServerMetricsActix, HttpServerMetricsActixService};
#[cfg(feature = "tower")]
pub use server::{HttpServerLayer, HttpServerService, RouteFn};
pub use work::{
    BuildInfo, BusinessEvent, BusinessEvents, BusinessEventsBuilder, Events, MAX_DIMENSION_VALUES,
    MAX_DIMENSIONS, MAX_OUTCOMES, PhaseTimer, Phases,
};

/// Errors of the instrumentation helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A family could not be registered (usually: the name is already registered with another
    /// definition in this registry).
    #[error("could not register the instrumentation's metrics: {0}")]
    Register(#[from] sonde_core::Error),
    /// A helper was configured past its limits; the message says which.
    #[error("{0}")]
    Config(String),
}

#[doc(hidden)]
pub mod __private {
    //! The runtime `#[measured]` expands to.

    use std::sync::OnceLock;
    use std::time::Instant;

    use sonde_core::{Counter, Histogram, Registry, Unit};

    struct Handles {
        ok: Counter,
        error: Counter,
        duration: Histogram,
    }

    /// Per-function handles, resolved on the first call.
    pub struct FnMetrics {
        module: &'static str,
        function: &'static str,
        handles: OnceLock<Option<Handles>>,
    }

    impl FnMetrics {
        /// For `function` in `module`.
        pub const fn new(module: &'static str, function: &'static str) -> Self {
            FnMetrics {
                module,
                function,
                handles: OnceLock::new(),
            }
        }

        /// Records one call that started at `start`.
        #[inline]
        pub fn record(&self, start: Instant, ok: bool) {
            let handles = self.handles.get_or_init(|| {
                let reg = Registry::global();
                let calls = reg
                    .counter("function.calls")
                    .description("Calls of functions marked #[measured], by result.")
                    .labels(["function", "module", "result"])
                    .build()
                    .ok()?;
                let duration = reg
                    .histogram("function.duration")
                    .description("Duration of functions marked #[measured].")
                    .unit(Unit::Seconds)
                    .labels(["function", "module"])
                    .build()
                    .ok()?;
                Some(Handles {
                    ok: calls.with(&[self.function, self.module, "ok"]),
                    error: calls.with(&[self.function, self.module, "error"]),
                    duration: duration.with(&[self.function, self.module]),
                })
            });
            if let Some(h) = handles {
                h.duration.record_since(start);
                if ok { h.ok.inc() } else { h.error.inc() }
            }
        }
    }
}
