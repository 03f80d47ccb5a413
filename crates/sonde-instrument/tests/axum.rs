//! Feature `axum`: `HttpServerLayer::new(metrics)` records axum's route templates with no
//! closure, in a real axum 0.8 server on loopback, for each place the layer can go.
#![allow(clippy::unwrap_used)] // tests panic on failure by design
#![cfg(feature = "axum")]

use std::collections::BTreeMap;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use sonde_core::{Point, Registry};
use sonde_instrument::{HttpServerLayer, HttpServerMetrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {out:?}"))
}

/// Serves `app`, sends `requests`, and returns the request counts by (method, route, status).
async fn recorded(
    reg: &Registry,
    app: Router,
    requests: &[(&str, &str, u16)],
) -> BTreeMap<(String, String, String), u64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    for (method, path, status) in requests {
        assert_eq!(
            request(addr, method, path).await,
            *status,
            "{method} {path}"
        );
    }
    server.abort();
    let snap = reg.snapshot();
    let family = snap.family("http.server.request.duration").unwrap();
    family
        .series
        .iter()
        .map(|s| {
            let labels: BTreeMap<&str, &str> = family.labels(s).into_iter().collect();
            let n = match &s.point {
                Point::Histogram(h) => h.count(),
                other => panic!("{other:?}"),
            };
            let l = |k: &str| labels[k].to_owned();
            (
                (
                    l("http.request.method"),
                    l("http.route"),
                    l("http.response.status_code"),
                ),
                n,
            )
        })
        .collect()
}

fn key(method: &str, route: &str, status: &str) -> (String, String, String) {
    (method.to_owned(), route.to_owned(), status.to_owned())
}

fn routes() -> Router {
    let orders = Router::new().route("/orders/{id}", get(|| async { "order" }));
    Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/orders", post(|| async { StatusCode::CREATED }))
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "no") }),
        )
        .nest("/api", orders)
}

/// What the routes above receive: 20 distinct user paths, a nested route, two unknown paths, a
/// method the route does not allow.
const TRAFFIC: &[(&str, &str, u16)] = &[
    ("GET", "/users/1", 200),
    ("GET", "/users/2", 200),
    ("GET", "/users/3", 200),
    ("GET", "/users/ada", 200),
    ("POST", "/orders", 201),
    ("GET", "/fail", 500),
    ("GET", "/api/orders/77", 200),
    ("GET", "/nowhere/12345", 404),
    ("GET", "/nowhere/67890", 404),
    ("DELETE", "/users/1", 405),
];

#[tokio::test(flavor = "current_thread")]
async fn router_layer_records_templates_without_configuration() {
    let reg = Registry::new();
    let metrics = HttpServerMetrics::install(&reg).unwrap();
    let app = routes().layer(HttpServerLayer::new(metrics));
    let got = recorded(&reg, app, TRAFFIC).await;
    let want: BTreeMap<_, _> = [
        (key("GET", "/users/{id}", "200"), 4),
        (key("POST", "/orders", "201"), 1),
        (key("GET", "/fail", "500"), 1),
        (key("GET", "/api/orders/{id}", "200"), 1),
        // Unmatched paths share one series: no raw path, bounded cardinality.
        (key("GET", "", "404"), 2),
        (key("DELETE", "/users/{id}", "405"), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "current_thread")]
async fn route_layer_records_matched_routes_only() {
    let reg = Registry::new();
    let metrics = HttpServerMetrics::install(&reg).unwrap();
    let app = routes().route_layer(HttpServerLayer::new(metrics));
    let got = recorded(&reg, app, TRAFFIC).await;
    let want: BTreeMap<_, _> = [
        (key("GET", "/users/{id}", "200"), 4),
        (key("POST", "/orders", "201"), 1),
        (key("GET", "/fail", "500"), 1),
        (key("GET", "/api/orders/{id}", "200"), 1),
        (key("DELETE", "/users/{id}", "405"), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

/// Around the whole router (as hyper or a `ServiceBuilder` would put it) the layer runs before
/// axum routes the request: every request is recorded, all under `""` (as documented).
#[tokio::test(flavor = "current_thread")]
async fn outside_the_router_no_template_is_known() {
    use tower::Layer;
    let reg = Registry::new();
    let metrics = HttpServerMetrics::install(&reg).unwrap();
    let svc = HttpServerLayer::new(metrics).layer(routes());
    let app = Router::new().fallback_service(svc);
    let got = recorded(&reg, app, &TRAFFIC[..3]).await;
    let want: BTreeMap<_, _> = [(key("GET", "", "200"), 3)].into_iter().collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "current_thread")]
async fn route_with_replaces_the_axum_default() {
    let reg = Registry::new();
    let metrics = HttpServerMetrics::install(&reg).unwrap();
    let app =
        routes().layer(HttpServerLayer::new(metrics).route_with(|_, _| Some("/custom".into())));
    let got = recorded(&reg, app, &TRAFFIC[..2]).await;
    let want: BTreeMap<_, _> = [(key("GET", "/custom", "200"), 2)].into_iter().collect();
    assert_eq!(got, want);
}
