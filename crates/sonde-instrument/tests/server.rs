//! HTTP server metrics through the tower layer in a real axum server on loopback.
#![cfg(all(feature = "tower", feature = "warp"))]

use std::time::Duration;

use axum::Router;
use axum::extract::MatchedPath;
use axum::routing::get;
use sonde_core::testing::assert_gauge;
use sonde_core::{Point, Registry};
use sonde_instrument::{HttpServerLayer, HttpServerMetrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Sends one request and asserts the status line of its answer.
async fn assert_status(addr: std::net::SocketAddr, method: &str, path: &str, status: u16) {
    let answer = request(addr, method, path).await;
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{method} {path}: {answer}"
    );
}

/// Asserts that no GET is active and that `series` request-duration series were recorded.
fn assert_settled(reg: &Registry, series: usize) {
    let snap = reg.snapshot();
    assert_gauge(
        &snap,
        "http.server.active_requests",
        &[("http.request.method", "GET")],
        0.0,
    );
    assert_eq!(
        snap.family("http.server.request.duration")
            .unwrap()
            .series
            .len(),
        series
    );
}

fn count(reg: &Registry, labels: &[(&str, &str)]) -> u64 {
    reg.snapshot()
        .point("http.server.request.duration", labels)
        .and_then(Point::histogram)
        .map_or(0, |h| h.count())
}

#[tokio::test(flavor = "current_thread")]
async fn axum_routes_are_recorded_by_template() {
    let reg = Registry::new();
    let metrics = HttpServerMetrics::install(&reg).unwrap();
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route(
            "/fail",
            get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                "slow"
            }),
        )
        .layer(
            HttpServerLayer::new(metrics)
                .route_with(|_, ext| ext.get::<MatchedPath>().map(|p| p.as_str().to_owned())),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    for id in 0..25 {
        assert_status(addr, "GET", &format!("/users/{id}"), 200).await;
    }
    assert_status(addr, "GET", "/fail", 500).await;
    assert_status(addr, "GET", "/nowhere/12345", 404).await;
    assert_status(addr, "BREW", "/users/1", 405).await;
    // While one request is in flight it counts as active.
    let slow = tokio::spawn(request(addr, "GET", "/slow"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_gauge(
        &reg.snapshot(),
        "http.server.active_requests",
        &[("http.request.method", "GET")],
        1.0,
    );
    assert!(slow.await.unwrap().contains("slow"));

    let l = |m: &'static str, route: &'static str, code: &'static str, e: &'static str| {
        [
            ("http.request.method", m),
            ("http.route", route),
            ("http.response.status_code", code),
            ("error.type", e),
        ]
    };
    // 25 distinct paths, one series: the template, never the raw path.
    assert_eq!(count(&reg, &l("GET", "/users/{id}", "200", "")), 25);
    assert_eq!(count(&reg, &l("GET", "/fail", "500", "500")), 1);
    assert_eq!(count(&reg, &l("GET", "", "404", "")), 1);
    assert_eq!(count(&reg, &l("_OTHER", "/users/{id}", "405", "")), 1);
    assert_eq!(count(&reg, &l("GET", "/slow", "200", "")), 1);
    let slow_sum = reg
        .snapshot()
        .point(
            "http.server.request.duration",
            &l("GET", "/slow", "200", ""),
        )
        .unwrap()
        .histogram()
        .unwrap()
        .sum();
    assert!(slow_sum >= 0.02, "{slow_sum}");
    assert_settled(&reg, 5);
    server.abort();
}

#[test]
fn dropped_requests_are_recorded_as_errors() {
    let reg = Registry::new();
    let metrics = HttpServerMetrics::install(&reg).unwrap();
    drop(metrics.start("GET"));
    let labels = [
        ("http.request.method", "GET"),
        ("http.route", ""),
        ("http.response.status_code", ""),
        ("error.type", "_OTHER"),
    ];
    assert_eq!(count(&reg, &labels), 1);
    assert_gauge(
        &reg.snapshot(),
        "http.server.active_requests",
        &[("http.request.method", "GET")],
        0.0,
    );
}

#[tokio::test(flavor = "current_thread")]
async fn warp_routes_are_recorded_by_template() {
    use warp::Filter;
    let reg = Registry::new();
    let metrics = HttpServerMetrics::install(&reg).unwrap();
    let users = sonde_instrument::instrument_warp(
        &metrics,
        "/users/:id",
        warp::path!("users" / u32).map(|id: u32| format!("user {id}")),
    );
    let teapot = sonde_instrument::instrument_warp(
        &metrics,
        "/teapot",
        warp::path!("teapot").map(|| {
            warp::reply::with_status("short and stout", warp::http::StatusCode::IM_A_TEAPOT)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(warp::serve(users.or(teapot)).incoming(listener).run());
    for id in 0..5 {
        assert_status(addr, "GET", &format!("/users/{id}"), 200).await;
    }
    assert_status(addr, "GET", "/teapot", 418).await;
    assert_status(addr, "GET", "/nowhere", 404).await;
    let l = |route: &'static str, code: &'static str| {
        [
            ("http.request.method", "GET"),
            ("http.route", route),
            ("http.response.status_code", code),
            ("error.type", ""),
        ]
    };
    assert_eq!(count(&reg, &l("/users/:id", "200")), 5);
    assert_eq!(count(&reg, &l("/teapot", "418")), 1);
    // The unmatched request was rejected by both routes and recorded by neither.
    assert_settled(&reg, 2);
    server.abort();
}

#[derive(Debug)]
struct ConnectionRefused;

#[test]
fn client_layer_records_status_server_and_errors() {
    use tower::{Layer, Service, ServiceExt};
    let reg = Registry::new();
    let metrics = sonde_instrument::HttpClientMetrics::install(&reg).unwrap();
    // A client whose answer depends on the path; "/down" fails without an answer.
    let client = tower::service_fn(|req: http::Request<()>| async move {
        match req.uri().path() {
            "/down" => Err(ConnectionRefused),
            "/missing" => Ok(http::Response::builder().status(404).body(()).unwrap()),
            _ => Ok(http::Response::new(())),
        }
    });
    let mut client = sonde_instrument::HttpClientLayer::new(metrics).layer(client);
    let call = |client: &mut _, uri: &str| {
        let mut req = http::Request::get(uri).body(()).unwrap();
        if uri.ends_with("/users/7") {
            // The caller's route template, as a request extension.
            req.extensions_mut()
                .insert(sonde_instrument::UrlTemplate("/users/{id}"));
        }
        let fut = async {
            let c: &mut sonde_instrument::HttpClientService<_> = client;
            c.ready().await.unwrap().call(req).await
        };
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
    };
    assert!(call(&mut client, "http://api.example/ok").is_ok());
    assert!(call(&mut client, "http://api.example/ok").is_ok());
    assert!(call(&mut client, "http://api.example/users/7").is_ok());
    assert_eq!(
        call(&mut client, "https://api.example/missing")
            .unwrap()
            .status(),
        404
    );
    assert!(call(&mut client, "http://other.example/down").is_err());
    let c = |server: &'static str, code: &'static str, e: &'static str| {
        [
            ("http.request.method", "GET"),
            ("server.address", server),
            ("http.response.status_code", code),
            ("error.type", e),
            ("url.template", ""),
        ]
    };
    let n = |labels: &[(&str, &str)]| {
        reg.snapshot()
            .point("http.client.request.duration", labels)
            .and_then(Point::histogram)
            .map_or(0, |h| h.count())
    };
    assert_eq!(n(&c("api.example", "200", "")), 2);
    let mut users = c("api.example", "200", "");
    users[4].1 = "/users/{id}";
    assert_eq!(n(&users), 1);
    assert_eq!(n(&c("api.example", "404", "404")), 1);
    assert_eq!(n(&c("other.example", "", "ConnectionRefused")), 1);
}
