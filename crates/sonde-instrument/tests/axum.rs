//! Feature `axum`: `HttpServerLayer::new(metrics)` records axum's route templates with no
//! closure, in a real axum 0.8 server on loopback, for each place the layer can go.
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

/// Serves the router `app` makes around a layer recording into a new registry, sends
/// `requests`, and returns the request counts by (method, route, status).
async fn recorded(
    app: impl FnOnce(HttpServerLayer) -> Router,
    requests: &[(&str, &str, u16)],
) -> BTreeMap<(String, String, String), u64> {
    let reg = Registry::new();
    let app = app(HttpServerLayer::new(
        HttpServerMetrics::install(&reg).unwrap(),
    ));
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

/// The counts by (method, route, status) that `recorded` returns.
fn counts(series: &[(&str, &str, &str, u64)]) -> BTreeMap<(String, String, String), u64> {
    series
        .iter()
        .map(|(method, route, status, n)| {
            let key = (method.to_string(), route.to_string(), status.to_string());
            (key, *n)
        })
        .collect()
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

/// What `TRAFFIC` records on the routes it matches.
const MATCHED: &[(&str, &str, &str, u64)] = &[
    ("GET", "/users/{id}", "200", 4),
    ("POST", "/orders", "201", 1),
    ("GET", "/fail", "500", 1),
    ("GET", "/api/orders/{id}", "200", 1),
    ("DELETE", "/users/{id}", "405", 1),
];

#[tokio::test(flavor = "current_thread")]
async fn router_layer_records_templates_without_configuration() {
    let got = recorded(|layer| routes().layer(layer), TRAFFIC).await;
    // Unmatched paths share one series: no raw path, bounded cardinality.
    let mut want = counts(&[("GET", "", "404", 2)]);
    want.extend(counts(MATCHED));
    assert_eq!(got, want);
}

#[tokio::test(flavor = "current_thread")]
async fn route_layer_records_matched_routes_only() {
    let got = recorded(|layer| routes().route_layer(layer), TRAFFIC).await;
    assert_eq!(got, counts(MATCHED));
}

/// Around the whole router (as hyper or a `ServiceBuilder` would put it) the layer runs before
/// axum routes the request: every request is recorded, all under `""` (as documented).
#[tokio::test(flavor = "current_thread")]
async fn outside_the_router_no_template_is_known() {
    use tower::Layer;
    let outside = |layer: HttpServerLayer| Router::new().fallback_service(layer.layer(routes()));
    let got = recorded(outside, &TRAFFIC[..3]).await;
    assert_eq!(got, counts(&[("GET", "", "200", 3)]));
}

#[tokio::test(flavor = "current_thread")]
async fn route_with_replaces_the_axum_default() {
    let custom =
        |layer: HttpServerLayer| routes().layer(layer.route_with(|_, _| Some("/custom".into())));
    let got = recorded(custom, &TRAFFIC[..2]).await;
    assert_eq!(got, counts(&[("GET", "/custom", "200", 2)]));
}
