//! The actix-web middleware on a real actix-web server over loopback: route patterns from
//! actix's resource map, statuses, 5xx and handler errors as errors, unmatched requests under
//! one series, and the active-requests gauge while a request runs.

use crate::common;

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use common::{assert_slow_get_is_active_while_in_flight, get, server_count};
use sonde_core::Registry;
use sonde_instrument::{HttpServerMetrics, HttpServerMetricsActix};

#[test]
fn routes_statuses_errors_and_active_requests() {
    let registry = Registry::new();
    let metrics = HttpServerMetrics::install(&registry).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let middleware = HttpServerMetricsActix::new(metrics);
            let server = HttpServer::new(move || {
                App::new()
                    .wrap(middleware.clone())
                    .route("/users/{id}", web::get().to(|| async { "user" }))
                    .route(
                        "/boom",
                        web::get().to(|| async { HttpResponse::InternalServerError().finish() }),
                    )
                    .route(
                        "/fails",
                        web::get().to(|| async {
                            Err::<String, _>(actix_web::error::ErrorServiceUnavailable("down"))
                        }),
                    )
                    .route(
                        "/slow",
                        web::get().to(|| async {
                            actix_web::rt::time::sleep(Duration::from_millis(400)).await;
                            "late"
                        }),
                    )
            })
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .unwrap();
            let addr = server.addrs()[0];
            let running = server.run();
            tx.send((addr, running.handle())).unwrap();
            running.await.unwrap();
        });
    });
    let (addr, handle) = rx.recv().unwrap();
    for id in 1..=3 {
        assert_eq!(get(addr, &format!("/users/{id}")), 200);
    }
    assert_eq!(get(addr, "/boom"), 500);
    assert_eq!(get(addr, "/fails"), 503);
    assert_eq!(get(addr, "/nowhere/42"), 404);
    let s = assert_slow_get_is_active_while_in_flight(&registry, addr);
    assert_eq!(server_count(&s, "/users/{id}", "200", ""), 3, "{s:#?}");
    assert_eq!(server_count(&s, "/boom", "500", "500"), 1);
    assert_eq!(server_count(&s, "/fails", "503", "503"), 1);
    // Unmatched paths share one series, never the raw path.
    assert_eq!(server_count(&s, "", "404", ""), 1, "{s:#?}");
    assert_eq!(server_count(&s, "/slow", "200", ""), 1);
    actix_web::rt::System::new().block_on(handle.stop(true));
    server.join().unwrap();
}
