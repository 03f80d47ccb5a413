//! The actix-web middleware on a real actix-web server over loopback: route patterns from
//! actix's resource map, statuses, 5xx and handler errors as errors, unmatched requests under
//! one series, and the active-requests gauge while a request runs.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use sonde_core::{Registry, Snapshot};
use sonde_instrument::{HttpServerMetrics, HttpServerMetricsActix};

/// One GET over a new connection; the status code.
fn get(addr: SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out[9..12].parse().unwrap()
}

fn count(s: &Snapshot, route: &str, status: &str, error: &str) -> u64 {
    s.point(
        "http.server.request.duration",
        &[
            ("http.request.method", "GET"),
            ("http.route", route),
            ("http.response.status_code", status),
            ("error.type", error),
        ],
    )
    .and_then(|p| p.histogram())
    .map_or(0, |h| h.count())
}

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
    let slow = std::thread::spawn(move || get(addr, "/slow"));
    std::thread::sleep(Duration::from_millis(150));
    let active = |s: &Snapshot| {
        s.point(
            "http.server.active_requests",
            &[("http.request.method", "GET")],
        )
        .and_then(|p| p.number())
        .map(|n| n.as_f64())
    };
    assert_eq!(active(&registry.snapshot()), Some(1.0));
    assert_eq!(slow.join().unwrap(), 200);
    let s = registry.snapshot();
    assert_eq!(active(&s), Some(0.0));
    assert_eq!(count(&s, "/users/{id}", "200", ""), 3, "{s:#?}");
    assert_eq!(count(&s, "/boom", "500", "500"), 1);
    assert_eq!(count(&s, "/fails", "503", "503"), 1);
    // Unmatched paths share one series, never the raw path.
    assert_eq!(count(&s, "", "404", ""), 1, "{s:#?}");
    assert_eq!(count(&s, "/slow", "200", ""), 1);
    actix_web::rt::System::new().block_on(handle.stop(true));
    server.join().unwrap();
}
