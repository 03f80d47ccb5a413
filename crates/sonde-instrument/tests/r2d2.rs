//! Pool metrics from a real r2d2 pool of SQLite connections.
#![cfg(feature = "r2d2")]

use crate::common;

use std::time::Duration;

use common::{assert_pool_exhausted, assert_timeouts_and_waits, pool_label};
use r2d2_sqlite::SqliteConnectionManager;
use sonde_core::Registry;
use sonde_core::testing::assert_gauge;
use sonde_instrument::PoolMetrics;

#[test]
fn r2d2_pool_sizes_waits_and_timeouts() {
    let reg = Registry::new();
    let metrics = PoolMetrics::install(&reg, "sqlite").unwrap();
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .min_idle(Some(2))
        .connection_timeout(Duration::from_millis(200))
        .event_handler(Box::new(metrics.r2d2_events()))
        .build(SqliteConnectionManager::memory())
        .unwrap();
    metrics.watch_r2d2(&pool);
    let a = pool.get().unwrap();
    let n: i64 = a.query_row("SELECT 40 + 2", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 42);
    let b = pool.get().unwrap();
    // Both connections are out: the next checkout times out.
    assert!(pool.get().is_err());
    assert_pool_exhausted(&reg.snapshot(), "sqlite", 2.0);
    drop((a, b));
    assert_gauge(
        &reg.snapshot(),
        "db.client.connection.count",
        &[pool_label("sqlite"), ("db.client.connection.state", "idle")],
        2.0,
    );
    // Two successful checkouts.
    assert_timeouts_and_waits(&reg.snapshot(), "sqlite", 1.0, 2);
}
