//! Caches and connection pools.

use std::borrow::Cow;
use std::sync::Arc;

use sonde_core::{Counter, Gauge, Histogram, Instrument, Registry, Unit};

use crate::Error;

/// One named cache: `cache.requests{cache.name, cache.result=hit|miss}` (hit ratio is
/// hit / (hit + miss)), `cache.evictions{cache.name}` and `cache.size{cache.name}`.
///
/// ```
/// let registry = sonde_core::Registry::new();
/// let users = sonde_instrument::CacheMetrics::install(&registry, "users")?;
/// users.hit();
/// users.miss();
/// users.set_size(1);
/// # Ok::<(), sonde_instrument::Error>(())
/// ```
#[derive(Clone)]
pub struct CacheMetrics {
    hit: Counter,
    miss: Counter,
    evictions: Counter,
    size: Gauge,
}

impl CacheMetrics {
    /// Registers (or reuses) the families and resolves this cache's series once.
    pub fn install(registry: &Registry, cache: &str) -> Result<CacheMetrics, Error> {
        let requests = registry
            .counter("cache.requests")
            .description("Cache lookups by result; hit ratio is hit / (hit + miss).")
            .labels(["cache.name", "cache.result"])
            .build()?;
        Ok(CacheMetrics {
            hit: requests.with(&[cache, "hit"]),
            miss: requests.with(&[cache, "miss"]),
            evictions: registry
                .counter("cache.evictions")
                .description("Entries evicted from the cache.")
                .labels(["cache.name"])
                .build()?
                .with(&[cache]),
            size: registry
                .gauge("cache.size")
                .description("Entries in the cache.")
                .unit(Unit::Count("{entry}".into()))
                .labels(["cache.name"])
                .build()?
                .with(&[cache]),
        })
    }

    /// A lookup that found its entry.
    #[inline]
    pub fn hit(&self) {
        self.hit.inc();
    }

    /// A lookup that did not.
    #[inline]
    pub fn miss(&self) {
        self.miss.inc();
    }

    /// Records a lookup by whether it hit.
    #[inline]
    pub fn lookup(&self, hit: bool) {
        if hit { self.hit.inc() } else { self.miss.inc() }
    }

    /// `n` entries were evicted.
    #[inline]
    pub fn evicted(&self, n: u64) {
        self.evictions.add(n);
    }

    /// The cache now holds `n` entries.
    #[inline]
    pub fn set_size(&self, n: i64) {
        self.size.set(n);
    }
}

/// What a connection pool reports; implement it for your pool (or use an adapter).
pub trait PoolStats: Send + Sync {
    /// Connections open and idle.
    fn idle(&self) -> u64;
    /// Connections open and in use.
    fn used(&self) -> u64;
    /// The most connections the pool opens.
    fn max(&self) -> u64;
    /// Requests waiting for a connection, when the pool knows (0 otherwise).
    fn pending_requests(&self) -> u64 {
        0
    }
}

/// The [`PoolMetrics`] families labelled by the pool's name alone: name, description, unit.
const POOL_FAMILIES: [(&str, &str, Unit); 4] = [
    (
        "db.client.connection.max",
        "The most connections the pool opens.",
        Unit::Count(Cow::Borrowed("{connection}")),
    ),
    (
        "db.client.connection.pending_requests",
        "Requests waiting for a connection.",
        Unit::Count(Cow::Borrowed("{request}")),
    ),
    (
        "db.client.connection.wait_time",
        "Time it took to obtain a connection from the pool.",
        Unit::Seconds,
    ),
    (
        "db.client.connection.timeouts",
        "Requests for a connection that timed out.",
        Unit::Count(Cow::Borrowed("{timeout}")),
    ),
];

/// The series of `pool` in the family `spec` describes (one of [`POOL_FAMILIES`]).
fn pool_series<M: Instrument>(
    registry: &Registry,
    spec: &(&'static str, &'static str, Unit),
    pool: &str,
) -> Result<M, Error> {
    let (name, description, unit) = spec;
    let family = registry
        .family::<M>(*name)
        .description(*description)
        .unit(unit.clone())
        .labels(["db.client.connection.pool.name"])
        .build()?;
    Ok(family.with(&[pool]))
}

/// Connection pool metrics by the `db.client.connection.*` conventions, labelled
/// `db.client.connection.pool.name`: `count{state=idle|used}`, `max`, `pending_requests`
/// (sampled from a [`PoolStats`] at each collection once [`watch`](Self::watch)ed), `wait_time`
/// (seconds) and `timeouts` (recorded as they happen).
///
/// ```
/// struct MyPool;
/// impl sonde_instrument::PoolStats for MyPool {
///     fn idle(&self) -> u64 { 3 }
///     fn used(&self) -> u64 { 2 }
///     fn max(&self) -> u64 { 10 }
/// }
/// let registry = sonde_core::Registry::new();
/// let pool = sonde_instrument::PoolMetrics::install(&registry, "main")?;
/// pool.watch(std::sync::Arc::new(MyPool));
/// pool.record_wait(std::time::Duration::from_millis(3));
/// # Ok::<(), sonde_instrument::Error>(())
/// ```
#[derive(Clone)]
pub struct PoolMetrics {
    registry: Registry,
    idle: Gauge,
    used: Gauge,
    max: Gauge,
    pending: Gauge,
    wait_time: Histogram,
    timeouts: Counter,
}

impl PoolMetrics {
    /// Registers the families for the pool called `pool`.
    pub fn install(registry: &Registry, pool: &str) -> Result<PoolMetrics, Error> {
        let count = registry
            .gauge("db.client.connection.count")
            .description("Connections in the pool by state.")
            .unit(Unit::Count("{connection}".into()))
            .labels([
                "db.client.connection.pool.name",
                "db.client.connection.state",
            ])
            .build()?;
        let [max, pending, wait_time, timeouts] = &POOL_FAMILIES;
        Ok(PoolMetrics {
            registry: registry.clone(),
            idle: count.with(&[pool, "idle"]),
            used: count.with(&[pool, "used"]),
            max: pool_series(registry, max, pool)?,
            pending: pool_series(registry, pending, pool)?,
            wait_time: pool_series(registry, wait_time, pool)?,
            timeouts: pool_series(registry, timeouts, pool)?,
        })
    }

    /// Samples `stats` into the size gauges at every collection.
    ///
    /// The registry keeps `stats` (and the pool handle inside `SqlxStats`, `DeadpoolStats`,
    /// `Bb8Stats` or `R2d2Stats`) for as long as it lives, so watch a pool that lives as long
    /// as the service. A pool closed meanwhile reads as it is (a closed sqlx pool: no
    /// connections); nothing panics.
    pub fn watch(&self, stats: Arc<dyn PoolStats>) {
        let (idle, used, max, pending) = (
            self.idle.clone(),
            self.used.clone(),
            self.max.clone(),
            self.pending.clone(),
        );
        self.registry.add_collect_hook(move || {
            idle.set(stats.idle() as i64);
            used.set(stats.used() as i64);
            max.set(stats.max() as i64);
            pending.set(stats.pending_requests() as i64);
        });
    }

    /// A connection was obtained after waiting `wait`.
    #[inline]
    pub fn record_wait(&self, wait: std::time::Duration) {
        self.wait_time.observe(wait.as_secs_f64());
    }

    /// A request for a connection timed out.
    #[inline]
    pub fn timeout(&self) {
        self.timeouts.inc();
    }

    /// Awaits `acquire` (a pool's get), recording its wait when it succeeds and a timeout
    /// when `timed_out` says its error is one: what the pool adapters' `*_get` wrap.
    pub async fn time_acquire<T, E>(
        &self,
        acquire: impl std::future::Future<Output = Result<T, E>>,
        timed_out: impl FnOnce(&E) -> bool,
    ) -> Result<T, E> {
        let start = std::time::Instant::now();
        let got = acquire.await;
        match &got {
            Ok(_) => self.record_wait(start.elapsed()),
            Err(e) if timed_out(e) => self.timeout(),
            Err(_) => {}
        }
        got
    }
}

/// `PoolStats::idle` and `used` of an adapter around a pool whose `state()` counts connections
/// open (`connections`) and idle (`idle_connections`): r2d2 and bb8 both do, in types of their own.
#[cfg(any(feature = "r2d2", feature = "bb8"))]
macro_rules! idle_and_used_from_state {
    () => {
        fn idle(&self) -> u64 {
            u64::from(self.0.state().idle_connections)
        }
        fn used(&self) -> u64 {
            let s = self.0.state();
            u64::from(s.connections.saturating_sub(s.idle_connections))
        }
    };
}

// One file per pool library, compiled with its feature only; lib.rs re-exports their items.
#[cfg(feature = "bb8")]
pub(crate) mod bb8_adapter;
#[cfg(feature = "deadpool")]
pub(crate) mod deadpool_adapter;
#[cfg(feature = "r2d2")]
pub(crate) mod r2d2_adapter;
#[cfg(feature = "sqlx")]
pub(crate) mod sqlx_adapter;
