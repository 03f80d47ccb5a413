//! Caches and connection pools.

use std::sync::Arc;

use sonde_core::{Counter, Gauge, Histogram, Registry, Unit};

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

/// Connection pool metrics by the `db.client.connection.*` conventions, labelled
/// `db.client.connection.pool.name`: `count{state=idle|used}`, `max`, `pending_requests`
/// (sampled from a [`PoolStats`] at each collection), `wait_time` (seconds) and `timeouts`
/// (recorded as they happen).
///
/// ```
/// struct MyPool;
/// impl sonde_instrument::PoolStats for MyPool {
///     fn idle(&self) -> u64 { 3 }
///     fn used(&self) -> u64 { 2 }
///     fn max(&self) -> u64 { 10 }
/// }
/// let registry = sonde_core::Registry::new();
/// let pool = sonde_instrument::PoolMetrics::install(&registry, "main", std::sync::Arc::new(MyPool))?;
/// pool.record_wait(std::time::Duration::from_millis(3));
/// # Ok::<(), sonde_instrument::Error>(())
/// ```
#[derive(Clone)]
pub struct PoolMetrics {
    wait_time: Histogram,
    timeouts: Counter,
}

impl PoolMetrics {
    /// Registers the families and a collect hook that samples `stats`.
    pub fn install(
        registry: &Registry,
        pool: &str,
        stats: Arc<dyn PoolStats>,
    ) -> Result<PoolMetrics, Error> {
        let count = registry
            .gauge("db.client.connection.count")
            .description("Connections in the pool by state.")
            .unit(Unit::Count("{connection}".into()))
            .labels([
                "db.client.connection.pool.name",
                "db.client.connection.state",
            ])
            .build()?;
        let gauge = |name: &'static str, description: &'static str| {
            registry
                .gauge(name)
                .description(description)
                .unit(Unit::Count("{connection}".into()))
                .labels(["db.client.connection.pool.name"])
                .build()
                .map(|f| f.with(&[pool]))
        };
        let (idle, used) = (count.with(&[pool, "idle"]), count.with(&[pool, "used"]));
        let max = gauge(
            "db.client.connection.max",
            "The most connections the pool opens.",
        )?;
        let pending = registry
            .gauge("db.client.connection.pending_requests")
            .description("Requests waiting for a connection.")
            .unit(Unit::Count("{request}".into()))
            .labels(["db.client.connection.pool.name"])
            .build()?
            .with(&[pool]);
        registry.add_collect_hook(move || {
            idle.set(stats.idle() as i64);
            used.set(stats.used() as i64);
            max.set(stats.max() as i64);
            pending.set(stats.pending_requests() as i64);
        });
        Ok(PoolMetrics {
            wait_time: registry
                .histogram("db.client.connection.wait_time")
                .description("Time it took to obtain a connection from the pool.")
                .unit(Unit::Seconds)
                .labels(["db.client.connection.pool.name"])
                .build()?
                .with(&[pool]),
            timeouts: registry
                .counter("db.client.connection.timeouts")
                .description("Requests for a connection that timed out.")
                .unit(Unit::Count("{timeout}".into()))
                .labels(["db.client.connection.pool.name"])
                .build()?
                .with(&[pool]),
        })
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
}
