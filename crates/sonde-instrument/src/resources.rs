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
        let gauge = |name: &'static str, description: &'static str, unit: &'static str| {
            registry
                .gauge(name)
                .description(description)
                .unit(Unit::Count(unit.into()))
                .labels(["db.client.connection.pool.name"])
                .build()
                .map(|f| f.with(&[pool]))
        };
        Ok(PoolMetrics {
            registry: registry.clone(),
            idle: count.with(&[pool, "idle"]),
            used: count.with(&[pool, "used"]),
            max: gauge(
                "db.client.connection.max",
                "The most connections the pool opens.",
                "{connection}",
            )?,
            pending: gauge(
                "db.client.connection.pending_requests",
                "Requests waiting for a connection.",
                "{request}",
            )?,
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

#[cfg(feature = "r2d2")]
mod r2d2_adapter {
    use std::sync::Arc;

    use super::{PoolMetrics, PoolStats};

    /// [`PoolStats`] of an r2d2 pool.
    pub struct R2d2Stats<M: r2d2::ManageConnection>(pub r2d2::Pool<M>);

    impl<M: r2d2::ManageConnection> PoolStats for R2d2Stats<M> {
        fn idle(&self) -> u64 {
            u64::from(self.0.state().idle_connections)
        }
        fn used(&self) -> u64 {
            let s = self.0.state();
            u64::from(s.connections.saturating_sub(s.idle_connections))
        }
        fn max(&self) -> u64 {
            u64::from(self.0.max_size())
        }
    }

    /// An r2d2 event handler recording checkout waits and timeouts into [`PoolMetrics`]; give it
    /// to `r2d2::Pool::builder().event_handler(...)`.
    #[derive(Clone)]
    pub struct R2d2Events(pub PoolMetrics);

    impl std::fmt::Debug for R2d2Events {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("R2d2Events")
        }
    }

    impl r2d2::HandleEvent for R2d2Events {
        fn handle_checkout(&self, event: r2d2::event::CheckoutEvent) {
            self.0.record_wait(event.duration());
        }
        fn handle_timeout(&self, _: r2d2::event::TimeoutEvent) {
            self.0.timeout();
        }
    }

    impl PoolMetrics {
        /// Samples an r2d2 pool's sizes at each collection.
        pub fn watch_r2d2<M: r2d2::ManageConnection>(&self, pool: &r2d2::Pool<M>) {
            self.watch(Arc::new(R2d2Stats(pool.clone())));
        }

        /// The event handler that records this pool's checkout waits and timeouts; pass it to
        /// `r2d2::Pool::builder().event_handler(Box::new(...))`.
        pub fn r2d2_events(&self) -> R2d2Events {
            R2d2Events(self.clone())
        }
    }
}

#[cfg(feature = "r2d2")]
pub use r2d2_adapter::{R2d2Events, R2d2Stats};

#[cfg(feature = "deadpool")]
mod deadpool_adapter {
    use deadpool::managed::{Manager, Object, Pool, PoolError};

    use super::{PoolMetrics, PoolStats};

    /// [`PoolStats`] of a deadpool pool (its `status()`: objects idle and in use, the
    /// maximum, futures waiting), for [`PoolMetrics::watch`].
    pub struct DeadpoolStats<M: Manager>(pub Pool<M>);

    impl<M: Manager> PoolStats for DeadpoolStats<M> {
        fn idle(&self) -> u64 {
            self.0.status().available as u64
        }
        fn used(&self) -> u64 {
            let s = self.0.status();
            s.size.saturating_sub(s.available) as u64
        }
        fn max(&self) -> u64 {
            self.0.status().max_size as u64
        }
        fn pending_requests(&self) -> u64 {
            self.0.status().waiting as u64
        }
    }

    /// `pool.get()`, recording how long it waited in `metrics` (`db.client.connection.wait_time`),
    /// and a timeout as `db.client.connection.timeouts`.
    ///
    /// ```
    /// struct Numbers;
    /// impl deadpool::managed::Manager for Numbers {
    ///     type Type = u32;
    ///     type Error = std::convert::Infallible;
    ///     async fn create(&self) -> Result<u32, Self::Error> { Ok(7) }
    ///     async fn recycle(&self, _: &mut u32, _: &deadpool::managed::Metrics)
    ///         -> deadpool::managed::RecycleResult<Self::Error> { Ok(()) }
    /// }
    /// let registry = sonde_core::Registry::new();
    /// let pool = deadpool::managed::Pool::<Numbers>::builder(Numbers).max_size(2).build().unwrap();
    /// let metrics = sonde_instrument::PoolMetrics::install(&registry, "numbers")?;
    /// metrics.watch(std::sync::Arc::new(sonde_instrument::DeadpoolStats(pool.clone())));
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let n = rt.block_on(sonde_instrument::deadpool_get(&pool, &metrics)).unwrap();
    /// assert_eq!(*n, 7);
    /// # Ok::<(), sonde_instrument::Error>(())
    /// ```
    pub async fn deadpool_get<M: Manager>(
        pool: &Pool<M>,
        metrics: &PoolMetrics,
    ) -> Result<Object<M>, PoolError<M::Error>> {
        metrics
            .time_acquire(pool.get(), |e| matches!(e, PoolError::Timeout(_)))
            .await
    }
}

#[cfg(feature = "deadpool")]
pub use deadpool_adapter::{DeadpoolStats, deadpool_get};

#[cfg(feature = "bb8")]
mod bb8_adapter {
    use bb8::{ManageConnection, Pool, PooledConnection, RunError};

    use super::{PoolMetrics, PoolStats};

    /// [`PoolStats`] of a bb8 pool: connections idle and in use from its `state()`, its
    /// `max_size`, and the requests waiting (gets started but not yet completed or timed out,
    /// from bb8's own statistics: a get whose future is dropped while it waits, a cancelled
    /// request, stays counted there, so under cancellations this gauge reads high).
    pub struct Bb8Stats<M: ManageConnection>(pub Pool<M>);

    impl<M: ManageConnection> PoolStats for Bb8Stats<M> {
        fn idle(&self) -> u64 {
            u64::from(self.0.state().idle_connections)
        }
        fn used(&self) -> u64 {
            let s = self.0.state();
            u64::from(s.connections.saturating_sub(s.idle_connections))
        }
        fn max(&self) -> u64 {
            u64::from(self.0.config().max_size)
        }
        fn pending_requests(&self) -> u64 {
            let s = self.0.state().statistics;
            s.get_started
                .saturating_sub(s.get_direct)
                .saturating_sub(s.get_waited)
                .saturating_sub(s.get_timed_out)
        }
    }

    /// `pool.get()`, recording how long it waited in `metrics` (`db.client.connection.wait_time`),
    /// and a timeout as `db.client.connection.timeouts`.
    ///
    /// ```
    /// struct Numbers;
    /// impl bb8::ManageConnection for Numbers {
    ///     type Connection = u32;
    ///     type Error = std::convert::Infallible;
    ///     async fn connect(&self) -> Result<u32, Self::Error> { Ok(7) }
    ///     async fn is_valid(&self, _: &mut u32) -> Result<(), Self::Error> { Ok(()) }
    ///     fn has_broken(&self, _: &mut u32) -> bool { false }
    /// }
    /// let registry = sonde_core::Registry::new();
    /// let metrics = sonde_instrument::PoolMetrics::install(&registry, "numbers")?;
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    /// rt.block_on(async {
    ///     let pool = bb8::Pool::builder().max_size(2).build(Numbers).await.unwrap();
    ///     metrics.watch(std::sync::Arc::new(sonde_instrument::Bb8Stats(pool.clone())));
    ///     let n = sonde_instrument::bb8_get(&pool, &metrics).await.unwrap();
    ///     assert_eq!(*n, 7);
    /// });
    /// # Ok::<(), sonde_instrument::Error>(())
    /// ```
    pub async fn bb8_get<'a, M: ManageConnection>(
        pool: &'a Pool<M>,
        metrics: &PoolMetrics,
    ) -> Result<PooledConnection<'a, M>, RunError<M::Error>> {
        metrics
            .time_acquire(pool.get(), |e| matches!(e, RunError::TimedOut))
            .await
    }
}

#[cfg(feature = "bb8")]
pub use bb8_adapter::{Bb8Stats, bb8_get};

#[cfg(feature = "sqlx")]
mod sqlx_adapter {
    use sqlx::pool::PoolConnection;
    use sqlx::{Database, Pool};

    use super::{PoolMetrics, PoolStats};

    /// [`PoolStats`] of an sqlx pool: connections open (`size`) and idle (`num_idle`), and its
    /// `max_connections` (sqlx does not tell how many requests wait).
    pub struct SqlxStats<DB: Database>(pub Pool<DB>);

    impl<DB: Database> PoolStats for SqlxStats<DB> {
        fn idle(&self) -> u64 {
            self.0.num_idle() as u64
        }
        fn used(&self) -> u64 {
            u64::from(self.0.size()).saturating_sub(self.0.num_idle() as u64)
        }
        fn max(&self) -> u64 {
            u64::from(self.0.options().get_max_connections())
        }
    }

    /// `pool.acquire()`, recording how long it waited in `metrics`
    /// (`db.client.connection.wait_time`), and `PoolTimedOut` as
    /// `db.client.connection.timeouts`. Queries through the pool itself (`query(..)
    /// .fetch_all(&pool)`) acquire inside sqlx; time them with [`crate::time_db`].
    pub async fn sqlx_acquire<DB: Database>(
        pool: &Pool<DB>,
        metrics: &PoolMetrics,
    ) -> Result<PoolConnection<DB>, sqlx::Error> {
        metrics
            .time_acquire(pool.acquire(), |e| matches!(e, sqlx::Error::PoolTimedOut))
            .await
    }
}

#[cfg(feature = "sqlx")]
pub use sqlx_adapter::{SqlxStats, sqlx_acquire};
