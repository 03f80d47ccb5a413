//! Pool metrics from a real r2d2 pool of SQLite connections.
#![allow(clippy::unwrap_used)] // tests panic on failure by design
#![cfg(feature = "r2d2")]

use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use sonde_core::testing::{assert_counter, assert_gauge};
use sonde_core::{Point, Registry};
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
    let p = [("db.client.connection.pool.name", "sqlite")];
    let snap = reg.snapshot();
    assert_gauge(
        &snap,
        "db.client.connection.count",
        &[p[0], ("db.client.connection.state", "used")],
        2.0,
    );
    assert_gauge(
        &snap,
        "db.client.connection.count",
        &[p[0], ("db.client.connection.state", "idle")],
        0.0,
    );
    assert_gauge(&snap, "db.client.connection.max", &p, 2.0);
    drop((a, b));
    let snap = reg.snapshot();
    assert_gauge(
        &snap,
        "db.client.connection.count",
        &[p[0], ("db.client.connection.state", "idle")],
        2.0,
    );
    let snap = reg.snapshot();
    assert_counter(&snap, "db.client.connection.timeouts", &p, 1.0);
    let waits = snap
        .point("db.client.connection.wait_time", &p)
        .and_then(Point::histogram)
        .unwrap();
    assert_eq!(waits.count(), 2, "two successful checkouts");
}
