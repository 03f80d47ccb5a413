//! A plain hyper 1 server (no tower, no framework) with the instrumented service: route
//! templates from a `route_with` function, statuses, 5xx as errors and the active-requests
//! gauge while a request is in flight, over real HTTP/1.1 on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{active_gets, get, server_count};
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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
    let slow = std::thread::spawn(move || get(addr, "/slow"));
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(active_gets(&registry.snapshot()), Some(1.0));
    assert_eq!(slow.join().unwrap(), 200);
    let s = registry.snapshot();
    assert_eq!(active_gets(&s), Some(0.0));
    assert_eq!(server_count(&s, "/users/{id}", "200", ""), 3);
    assert_eq!(server_count(&s, "/boom", "500", "500"), 1);
    assert_eq!(server_count(&s, "/slow", "200", ""), 1);
    let slow_seconds = s
        .point(
            "http.server.request.duration",
            &[
                ("http.request.method", "GET"),
                ("http.route", "/slow"),
                ("http.response.status_code", "200"),
                ("error.type", ""),
            ],
        )
        .and_then(|p| p.histogram())
        .unwrap()
        .sum();
    assert!(slow_seconds >= 0.39, "{slow_seconds}");
    rt.shutdown_background();
}
