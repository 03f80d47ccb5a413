//! The sqlx adapter: pool sizes and a timed `acquire`.

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
