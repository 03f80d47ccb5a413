//! reqwest through reqwest-middleware on `http.client.request.duration`, against a real axum
//! server on loopback: status codes, 5xx as errors, a timeout and a refused connection by kind,
//! the server address, and the caller's route template.

use crate::common;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::multi_thread_runtime;
use sonde_core::{Registry, Snapshot};
use sonde_instrument::{HttpClientMetrics, HttpClientMiddleware, UrlTemplate};

fn count(s: &Snapshot, labels: &[(&str, &str)]) -> u64 {
    s.point("http.client.request.duration", labels)
        .and_then(|p| p.histogram())
        .map_or(0, |h| h.count())
}

#[test]
fn requests_are_timed_by_status_error_server_and_template() {
    let rt = multi_thread_runtime(1);
    let registry = Registry::new();
    let metrics = HttpClientMetrics::install(&registry).unwrap();
    // The workspace may build reqwest with `rustls-no-provider` (plain http here still needs
    // one installed to build a client).
    #[allow(deprecated)] // ring: the workspace's one TLS stack
    let _ = rustls::crypto::ring::default_provider().install_default();
    rt.block_on(async {
        let app = Router::new()
            .route("/users/{id}", get(|| async { "user" }))
            .route("/fail", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest_middleware::ClientBuilder::new(
            reqwest::Client::builder()
                .timeout(Duration::from_millis(300))
                .build()
                .unwrap(),
        )
        .with(HttpClientMiddleware::new(metrics))
        .build();
        for id in [1, 2, 3] {
            let r = client
                .get(format!("http://{addr}/users/{id}"))
                .with_extension(UrlTemplate("/users/{id}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let r = client
            .get(format!("http://{addr}/fail"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let slow = client.get(format!("http://{addr}/slow")).send().await;
        assert!(slow.is_err());
        // Nothing listens on a port just freed.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let refused = client.post(format!("http://{closed}/orders")).send().await;
        assert!(refused.is_err());
    });
    let s = registry.snapshot();
    let labels = |method, status, error, template| {
        [
            ("http.request.method", method),
            ("server.address", "127.0.0.1"),
            ("http.response.status_code", status),
            ("error.type", error),
            ("url.template", template),
        ]
    };
    assert_eq!(
        count(&s, &labels("GET", "200", "", "/users/{id}")),
        3,
        "{s:#?}"
    );
    assert_eq!(count(&s, &labels("GET", "503", "503", "")), 1);
    assert_eq!(count(&s, &labels("GET", "", "timeout", "")), 1, "{s:#?}");
    assert_eq!(count(&s, &labels("POST", "", "connect", "")), 1, "{s:#?}");
    // The timed-out request took about its 300 ms limit.
    let slow = s
        .point(
            "http.client.request.duration",
            &labels("GET", "", "timeout", ""),
        )
        .and_then(|p| p.histogram())
        .unwrap()
        .sum();
    assert!((0.25..1.5).contains(&slow), "{slow}");
}
