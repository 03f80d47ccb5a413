//! The bb8 adapter: pool sizes and a timed `get`.

use bb8::{ManageConnection, Pool, PooledConnection, RunError};

use super::{PoolMetrics, PoolStats};

/// [`PoolStats`] of a bb8 pool: connections idle and in use from its `state()`, its
/// `max_size`, and the requests waiting (gets started but not yet completed or timed out,
/// from bb8's own statistics: a get whose future is dropped while it waits, a cancelled
/// request, stays counted there, so under cancellations this gauge reads high).
pub struct Bb8Stats<M: ManageConnection>(pub Pool<M>);

impl<M: ManageConnection> PoolStats for Bb8Stats<M> {
    idle_and_used_from_state!();
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
