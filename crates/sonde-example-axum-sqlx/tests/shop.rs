//! The shop service end to end on a real SQLite file, over real HTTP on loopback: every
//! adapter's metrics on its /metrics, with counts that follow from the requests sent.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use sonde::instrument::HttpServerMetrics;

fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    sonde_testkit::raw_request(addr, method, path, Duration::from_secs(10)).unwrap()
}

/// The value of the sample line that starts with `series ` (exact labels, in order).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_adapter_reports_what_the_requests_did() {
    let dir = std::env::temp_dir().join(format!("sonde-shop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let registry = sonde::Registry::new();
    let (rt, listener, addr) = sonde_testkit::loopback_runtime(2);
    let reg = registry.clone();
    let db = dir.join("shop.db");
    let shop = rt
        .block_on(sonde_example_axum_sqlx::Shop::open(
            &reg,
            &db,
            2,
            &format!("http://{addr}"),
        ))
        .unwrap();
    let app = shop.app(HttpServerMetrics::install(&registry).unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    let exporter = sonde::prometheus::PrometheusBuilder::new()
        .registry(registry.clone())
        .bind("127.0.0.1:0".parse().unwrap())
        .install()
        .unwrap();

    // Product 7 three times (a miss, then two hits), products 1..=150 once (misses that evict
    // from a cache of 100), a product that does not exist, and ten orders of product 7.
    for _ in 0..3 {
        assert_eq!(request(addr, "GET", "/products/7").0, 200);
    }
    for id in 1..=150 {
        assert_eq!(request(addr, "GET", &format!("/products/{id}")).0, 200);
    }
    assert_eq!(request(addr, "GET", "/products/100000").0, 404);
    let mut created = 0;
    let mut declined = 0;
    for _ in 0..10 {
        match request(addr, "POST", "/orders/7").0 {
            201 => created += 1,
            402 => declined += 1,
            other => panic!("order answered {other}"),
        }
    }
    assert_eq!((created, declined), (8, 2), "every 5th payment is declined");

    let (_, text) = request(exporter.local_addr(), "GET", "/metrics");
    let route = |method: &str, route: &str, status: &str, error: &str| {
        sample(
            &text,
            &format!(
                "http_server_request_duration_seconds_count{{http_request_method=\"{method}\",http_route=\"{route}\",http_response_status_code=\"{status}\",error_type=\"{error}\"}}"
            ),
        )
    };
    assert_eq!(
        route("GET", "/products/{id}", "200", ""),
        Some(153.0),
        "{text}"
    );
    assert_eq!(route("GET", "/products/{id}", "404", ""), Some(1.0));
    assert_eq!(route("POST", "/orders/{product}", "201", ""), Some(8.0));
    assert_eq!(route("POST", "/orders/{product}", "402", ""), Some(2.0));
    assert_eq!(route("POST", "/payments/{order}", "200", ""), Some(8.0));
    // The outgoing payment calls, by template.
    let calls = |status: &str, error: &str| {
        sample(
            &text,
            &format!(
                "http_client_request_duration_seconds_count{{http_request_method=\"POST\",server_address=\"127.0.0.1\",http_response_status_code=\"{status}\",error_type=\"{error}\",url_template=\"/payments/{{order}}\"}}"
            ),
        )
    };
    assert_eq!(calls("200", ""), Some(8.0), "{text}");
    assert_eq!(calls("402", "402"), Some(2.0), "{text}");
    // The cache: 164 lookups (3 + 150 + 1 GETs, 10 orders); 7 misses once, every other
    // product (and the unknown one) once, moka may evict more when it makes room.
    let cache = |result: &str| {
        sample(
            &text,
            &format!("cache_requests_total{{cache_name=\"products\",cache_result=\"{result}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let misses = cache("miss");
    assert_eq!(cache("hit") + misses, 164.0, "{text}");
    assert!(misses >= 151.0, "{misses}");
    // Queries: one SELECT per miss, one INSERT per order.
    let query = |op: &str, table: &str| {
        sample(
            &text,
            &format!(
                "db_client_operation_duration_seconds_count{{db_system_name=\"sqlite\",db_operation_name=\"{op}\",db_collection_name=\"{table}\",error_type=\"\"}}"
            ),
        )
    };
    assert_eq!(query("SELECT", "products"), Some(misses), "{text}");
    assert_eq!(query("INSERT", "orders"), Some(10.0));
    // The pool: one acquire per query, and its size.
    assert_eq!(
        sample(
            &text,
            "db_client_connection_wait_time_seconds_count{db_client_connection_pool_name=\"shop\"}"
        ),
        Some(misses + 10.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "db_client_connection_max{db_client_connection_pool_name=\"shop\"}"
        ),
        Some(2.0)
    );
    // The Tokio runtime serving it.
    assert_eq!(sample(&text, "tokio_runtime_workers"), Some(2.0), "{text}");
    assert!(text.contains("tokio_runtime_worker_busy_time_seconds_total{tokio_worker=\"0\"}"));
    rt.shutdown_background();
    let _ = std::fs::remove_dir_all(&dir);
}
