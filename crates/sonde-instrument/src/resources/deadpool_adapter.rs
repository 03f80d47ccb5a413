//! The deadpool adapter: pool sizes and a timed `get`.

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
