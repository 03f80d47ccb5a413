//! deadpool pools on the `db.client.connection.*` metrics: sizes, waiting requests, wait times
//! and timeouts, against the real deadpool crate on a Tokio runtime.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{assert_connections, assert_pool_exhausted, assert_timeouts_and_waits};
use deadpool::managed::{Manager, Metrics, Pool, PoolError, RecycleResult};
use sonde_core::Registry;
use sonde_instrument::{DeadpoolStats, PoolMetrics, deadpool_get};

struct Conns;

impl Manager for Conns {
    type Type = u32;
    type Error = std::convert::Infallible;
    async fn create(&self) -> Result<u32, Self::Error> {
        Ok(1)
    }
    async fn recycle(&self, _: &mut u32, _: &Metrics) -> RecycleResult<Self::Error> {
        Ok(())
    }
}

#[test]
fn sizes_waits_and_timeouts() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let pool = Pool::<Conns>::builder(Conns)
        .max_size(2)
        .wait_timeout(Some(Duration::from_millis(100)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .unwrap();
    let registry = Registry::new();
    let metrics = PoolMetrics::install(&registry, "main").unwrap();
    metrics.watch(Arc::new(DeadpoolStats(pool.clone())));
    rt.block_on(async {
        let a = deadpool_get(&pool, &metrics).await.unwrap();
        let b = deadpool_get(&pool, &metrics).await.unwrap();
        assert_pool_exhausted(&registry.snapshot(), "main", 2.0);
        // Both taken: the third request waits 100 ms and times out.
        let third = deadpool_get(&pool, &metrics).await;
        assert!(matches!(third, Err(PoolError::Timeout(_))));
        drop(a);
        drop(b);
        let _again = deadpool_get(&pool, &metrics).await.unwrap();
    });
    let s = registry.snapshot();
    assert_timeouts_and_waits(&s, "main", 1.0, 3);
    // Everything returned: both connections idle.
    assert_connections(&s, "main", 0.0, 2.0);
}
