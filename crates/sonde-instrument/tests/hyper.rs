//! A plain hyper 1 server (no tower, no framework) with the instrumented service: route
//! templates from a `route_with` function, statuses, 5xx as errors and the active-requests
//! gauge while a request is in flight, over real HTTP/1.1 on loopback.

use crate::common;

use std::time::Duration;

use common::{
    assert_slow_get_is_active_while_in_flight, get, multi_thread_runtime, server_count,
    server_histogram,
};
use sonde_core::Registry;
use sonde_instrument::{HttpServerLayer, HttpServerMetrics};
use tower_layer::Layer as _;

async fn handler(
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<String>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let status = if path == "/boom" { 500 } else { 200 };
    Ok(http::Response::builder()
        .status(status)
        .body(format!("{path}\n"))
        .unwrap())
}

#[test]
fn a_plain_hyper_server_records_routes_statuses_and_active_requests() {
    let registry = Registry::new();
    let metrics = HttpServerMetrics::install(&registry).unwrap();
    let rt = multi_thread_runtime(2);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    // The application's own routing knows its templates.
    let service = HttpServerLayer::new(metrics)
        .route_with(|uri, _| {
            let p = uri.path();
            Some(if p.starts_with("/users/") {
                "/users/{id}".to_owned()
            } else {
                p.to_owned()
            })
        })
        .layer(hyper::service::service_fn(handler));
    rt.spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let service = service.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    for id in 1..=3 {
        assert_eq!(get(addr, &format!("/users/{id}")), 200);
    }
    assert_eq!(get(addr, "/boom"), 500);
    // While /slow is in flight, it counts as active.
    let s = assert_slow_get_is_active_while_in_flight(&registry, addr);
    assert_eq!(server_count(&s, "/users/{id}", "200", ""), 3);
    assert_eq!(server_count(&s, "/boom", "500", "500"), 1);
    assert_eq!(server_count(&s, "/slow", "200", ""), 1);
    let slow_seconds = server_histogram(&s, "/slow", "200", "").unwrap().sum();
    assert!(slow_seconds >= 0.39, "{slow_seconds}");
    rt.shutdown_background();
}
