//! Helpers shared by the adapter tests (each test file includes what it uses).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sonde_core::Snapshot;

/// A series' value: a histogram's count, a counter's or gauge's number; NaN when absent.
pub fn value(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.point(name, labels)
        .map(|p| match p.histogram() {
            Some(h) => h.count() as f64,
            None => p.number().unwrap().as_f64(),
        })
        .unwrap_or(f64::NAN)
}

/// One GET over a new connection; the status code.
pub fn get(addr: SocketAddr, path: &str) -> u16 {
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

/// GET requests recorded in `http.server.request.duration` under `route`, `status`, `error`.
pub fn server_count(s: &Snapshot, route: &str, status: &str, error: &str) -> u64 {
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

/// `http.server.active_requests` for GET.
pub fn active_gets(s: &Snapshot) -> Option<f64> {
    s.point(
        "http.server.active_requests",
        &[("http.request.method", "GET")],
    )
    .and_then(|p| p.number())
    .map(|n| n.as_f64())
}
