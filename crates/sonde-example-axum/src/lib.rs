//! The routes of the example axum service and the one line that instruments them; `main.rs`
//! serves them next to sonde's Prometheus exporter.
//!
//! | route | what |
//! |---|---|
//! | `GET /users/{id}` | a user; ids above 1000 do not exist (404) |
//! | `GET /orders`, `POST /orders` | the order list; a new order (201) |
//! | `POST /checkout` | a payment that fails (500) on every 4th call |
//! | `GET /report` | slow: 100 to 300 ms |
//! | `GET /health` | `ok` |
//!
//! Every request is recorded in `http.server.request.duration` by method, route *template*
//! (`/users/{id}`, never `/users/42`), status and error type, and in
//! `http.server.active_requests` while it runs. Requests that match no route share one series,
//! `http.route=""`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use sonde::instrument::{HttpServerLayer, HttpServerMetrics};

/// The service's routes, recording into `metrics`.
pub fn app(metrics: HttpServerMetrics) -> Router {
    Router::new()
        .route("/users/{id}", get(user))
        .route("/orders", get(orders).post(create_order))
        .route("/checkout", post(checkout))
        .route("/report", get(report))
        .route("/health", get(|| async { "ok" }))
        // After the routes: the layer then sees each request's route template (axum's
        // `MatchedPath`, read by sonde's `axum` feature). Unmatched requests are recorded too.
        .layer(HttpServerLayer::new(metrics))
}

async fn user(Path(id): Path<u64>) -> Result<String, StatusCode> {
    if id > 1000 {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(format!("{{\"id\":{id},\"name\":\"user {id}\"}}"))
}

async fn orders() -> &'static str {
    "[{\"id\":1},{\"id\":2}]"
}

async fn create_order() -> (StatusCode, &'static str) {
    (StatusCode::CREATED, "{\"id\":3}")
}

/// Every 4th payment fails, as a flaky provider would.
async fn checkout() -> Result<&'static str, (StatusCode, &'static str)> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    if CALLS.fetch_add(1, Ordering::Relaxed) % 4 == 3 {
        return Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "payment provider unavailable",
        ));
    }
    Ok("paid")
}

/// A slow endpoint: 100, 150, ... 300 ms in turn.
async fn report() -> &'static str {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed) % 5;
    tokio::time::sleep(Duration::from_millis(100 + 50 * n)).await;
    "report"
}
