//! Helpers shared by the adapter tests (each test file includes what it uses).
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use sonde_core::testing::{assert_counter, assert_gauge};
use sonde_core::{HistogramPoint, Registry, Snapshot};

/// A series' value: a histogram's count, a counter's or gauge's number; NaN when absent.
pub fn value(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.point(name, labels)
        .map(|p| match p.histogram() {
            Some(h) => h.count() as f64,
            None => p.number().unwrap().as_f64(),
        })
        .unwrap_or(f64::NAN)
}

/// A multi-thread Tokio runtime with `workers` worker threads and every driver enabled.
pub fn multi_thread_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// One GET over a new connection; the status code.
pub fn get(addr: SocketAddr, path: &str) -> u16 {
    sonde_testkit::raw_request(addr, "GET", path, Duration::from_secs(10))
        .unwrap()
        .0
}

/// The `http.server.request.duration` series of GET requests under `route`, `status`, `error`.
pub fn server_histogram(
    s: &Snapshot,
    route: &str,
    status: &str,
    error: &str,
) -> Option<HistogramPoint> {
    s.point(
        "http.server.request.duration",
        &[
            ("http.request.method", "GET"),
            ("http.route", route),
            ("http.response.status_code", status),
            ("error.type", error),
        ],
    )
    .and_then(|p| p.histogram().cloned())
}

/// GET requests recorded in `http.server.request.duration` under `route`, `status`, `error`.
pub fn server_count(s: &Snapshot, route: &str, status: &str, error: &str) -> u64 {
    server_histogram(s, route, status, error).map_or(0, |h| h.count())
}

/// `http.server.active_requests` for GET.
pub fn active_gets(s: &Snapshot) -> Option<f64> {
    s.point(
        "http.server.active_requests",
        &[("http.request.method", "GET")],
    )
    .and_then(|p| p.number())
    .map(|n| n.as_f64())
}

/// GETs `/slow` (a route that answers 200 after about 400 ms) on `addr`, asserting it counts as
/// active in `registry` while in flight and no longer once answered; the snapshot after.
pub fn assert_slow_get_is_active_while_in_flight(
    registry: &Registry,
    addr: SocketAddr,
) -> Snapshot {
    let slow = std::thread::spawn(move || get(addr, "/slow"));
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(active_gets(&registry.snapshot()), Some(1.0));
    assert_eq!(slow.join().unwrap(), 200);
    let s = registry.snapshot();
    assert_eq!(active_gets(&s), Some(0.0));
    s
}

/// The label of the connection pool called `pool`.
pub fn pool_label(pool: &str) -> (&'static str, &str) {
    ("db.client.connection.pool.name", pool)
}

/// Asserts the connections of `pool` in use and idle (`db.client.connection.count`).
#[track_caller]
pub fn assert_connections(s: &Snapshot, pool: &str, used: f64, idle: f64) {
    for (state, n) in [("used", used), ("idle", idle)] {
        assert_gauge(
            s,
            "db.client.connection.count",
            &[pool_label(pool), ("db.client.connection.state", state)],
            n,
        );
    }
}

/// Asserts that every connection of `pool`, `size` at most, is in use.
#[track_caller]
pub fn assert_pool_exhausted(s: &Snapshot, pool: &str, size: f64) {
    assert_connections(s, pool, size, 0.0);
    assert_gauge(s, "db.client.connection.max", &[pool_label(pool)], size);
}

/// Asserts the checkouts of `pool` that timed out and those that waited and got a connection.
#[track_caller]
pub fn assert_timeouts_and_waits(s: &Snapshot, pool: &str, timeouts: f64, waits: u64) {
    let name = [pool_label(pool)];
    assert_counter(s, "db.client.connection.timeouts", &name, timeouts);
    let recorded = s
        .point("db.client.connection.wait_time", &name)
        .and_then(|p| p.histogram())
        .map(|h| h.count());
    assert_eq!(recorded, Some(waits), "waits recorded");
}
