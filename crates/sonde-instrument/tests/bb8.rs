//! bb8 pools on the `db.client.connection.*` metrics: sizes, waiting requests, wait times and
//! timeouts, against the real bb8 crate on a Tokio runtime.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{assert_pool_exhausted, assert_timeouts_and_waits, multi_thread_runtime, value};
use sonde_core::Registry;
use sonde_instrument::{Bb8Stats, PoolMetrics, bb8_get};

struct Conns;

impl bb8::ManageConnection for Conns {
    type Connection = u32;
    type Error = std::convert::Infallible;
    async fn connect(&self) -> Result<u32, Self::Error> {
        Ok(1)
    }
    async fn is_valid(&self, _: &mut u32) -> Result<(), Self::Error> {
        Ok(())
    }
    fn has_broken(&self, _: &mut u32) -> bool {
        false
    }
}

#[test]
fn sizes_waiting_requests_waits_and_timeouts() {
    let rt = multi_thread_runtime(1);
    let registry = Registry::new();
    let metrics = PoolMetrics::install(&registry, "main").unwrap();
    let name = ("db.client.connection.pool.name", "main");
    let state = |s: &'static str| [name, ("db.client.connection.state", s)];
    rt.block_on(async {
        let pool = bb8::Pool::builder()
            .max_size(2)
            .min_idle(Some(2))
            .connection_timeout(Duration::from_millis(300))
            .build(Conns)
            .await
            .unwrap();
        metrics.watch(Arc::new(Bb8Stats(pool.clone())));
        let a = bb8_get(&pool, &metrics).await.unwrap();
        let b = bb8_get(&pool, &metrics).await.unwrap();
        assert_pool_exhausted(&registry.snapshot(), "main", 2.0);
        // A third request waits: it shows as pending while it does, then times out.
        let (third, pending) = tokio::join!(bb8_get(&pool, &metrics), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let s = registry.snapshot();
            value(&s, "db.client.connection.pending_requests", &[name])
        });
        assert!(matches!(third, Err(bb8::RunError::TimedOut)));
        assert_eq!(pending, 1.0);
        drop(a);
        drop(b);
        let _again = bb8_get(&pool, &metrics).await.unwrap();
        let s = registry.snapshot();
        assert_timeouts_and_waits(&s, "main", 1.0, 3);
        assert_eq!(value(&s, "db.client.connection.count", &state("used")), 1.0);
        assert_eq!(
            value(&s, "db.client.connection.pending_requests", &[name]),
            0.0
        );
    });
}
