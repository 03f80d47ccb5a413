//! sqlx pools on the `db.client.connection.*` metrics, against the real sqlx on a real SQLite
//! database file: sizes, acquire wait times, a timeout, and queries timed by `DbMetrics`.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    assert_connections, assert_pool_exhausted, assert_timeouts_and_waits, multi_thread_runtime,
    value,
};
use sonde_core::Registry;
use sonde_instrument::{DbMetrics, PoolMetrics, SqlxStats, sqlx_acquire};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

#[test]
fn sizes_waits_timeouts_and_timed_queries_on_sqlite() {
    let rt = multi_thread_runtime(1);
    let dir = std::env::temp_dir().join(format!("sonde-sqlx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("shop.db");
    let registry = Registry::new();
    let metrics = PoolMetrics::install(&registry, "shop").unwrap();
    let db = DbMetrics::install(&registry).unwrap();
    let name = ("db.client.connection.pool.name", "shop");
    let state = |s: &'static str| [name, ("db.client.connection.state", s)];
    rt.block_on(async {
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_millis(200))
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&file)
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        metrics.watch(Arc::new(SqlxStats(pool.clone())));
        sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
            .execute(&pool)
            .await
            .unwrap();
        for i in 0..5 {
            db.time(
                "sqlite",
                "INSERT",
                "orders",
                sqlx::query("INSERT INTO orders (total) VALUES (?)")
                    .bind(f64::from(i) * 1.5)
                    .execute(&pool),
            )
            .await
            .unwrap();
        }
        let mut a = sqlx_acquire(&pool, &metrics).await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders")
            .fetch_one(&mut *a)
            .await
            .unwrap();
        assert_eq!(n, 5);
        let b = sqlx_acquire(&pool, &metrics).await.unwrap();
        assert_pool_exhausted(&registry.snapshot(), "shop", 2.0);
        // Both held: the third acquire times out after 200 ms.
        let third = sqlx_acquire(&pool, &metrics).await;
        assert!(matches!(third, Err(sqlx::Error::PoolTimedOut)), "{third:?}");
        drop(a);
        drop(b);
        let again = sqlx_acquire(&pool, &metrics).await.unwrap();
        // sqlx returns a dropped connection to the pool on a task of its own: wait for it.
        let mut s = registry.snapshot();
        for _ in 0..100 {
            if value(&s, "db.client.connection.count", &state("used")) == 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            s = registry.snapshot();
        }
        assert_timeouts_and_waits(&s, "shop", 1.0, 3);
        assert_connections(&s, "shop", 1.0, 1.0);
        assert_eq!(
            value(
                &s,
                "db.client.operation.duration",
                &[
                    ("db.system.name", "sqlite"),
                    ("db.operation.name", "INSERT"),
                    ("db.collection.name", "orders"),
                    ("error.type", "")
                ]
            ),
            5.0,
            "{s:#?}"
        );
        // `close` waits for every connection to come back.
        drop(again);
        pool.close().await;
    });
    // A closed pool's metrics stay registered and read zero open connections.
    let s = registry.snapshot();
    assert_eq!(value(&s, "db.client.connection.count", &state("used")), 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}
