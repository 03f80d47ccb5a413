//! Runs the example binary as a user would, drives its routes on loopback and scrapes its
//! `/metrics`: every request is counted under its route template, never a raw path.
#![allow(clippy::unwrap_used)] // tests panic on failure by design

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sonde-example-axum");
const TIMEOUT: Duration = Duration::from_secs(20);

/// The running example, killed on drop.
struct Service {
    child: Child,
    app: SocketAddr,
    metrics: SocketAddr,
}

impl Service {
    fn start() -> Service {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addr = |prefix: &str| -> SocketAddr {
            let line = rx.recv_timeout(TIMEOUT).unwrap_or_else(|e| {
                let _ = child.kill();
                panic!("the example printed no {prefix:?} line: {e}")
            });
            line.strip_prefix(prefix)
                .and_then(|rest| rest.trim_end_matches("/metrics").parse().ok())
                .unwrap_or_else(|| panic!("expected {prefix:?}..., got {line:?}"))
        };
        let app = addr("listening on http://");
        let metrics = addr("metrics on http://");
        Service {
            child,
            app,
            metrics,
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    sonde_testkit::raw_request(addr, method, path, TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `name{labels} value` samples of a text exposition, by their labels.
fn samples(text: &str, name: &str) -> BTreeMap<BTreeMap<String, String>, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").unwrap();
        let labels = labels
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once("=\"").unwrap();
                (k.to_owned(), v.trim_end_matches('"').to_owned())
            })
            .collect();
        out.insert(labels, value.parse().unwrap());
    }
    out
}

#[test]
fn requests_are_counted_by_route_template_on_metrics() {
    let svc = Service::start();
    let mut sent: Vec<(&str, String, u16)> = Vec::new();
    for id in 1..=30 {
        sent.push(("GET", format!("/users/{id}"), 200));
    }
    sent.push(("GET", "/users/5000".into(), 404));
    sent.push(("GET", "/users/not-a-number".into(), 400));
    sent.push(("GET", "/orders".into(), 200));
    sent.push(("POST", "/orders".into(), 201));
    for n in 0..8 {
        sent.push((
            "POST",
            "/checkout".into(),
            if n % 4 == 3 { 500 } else { 200 },
        ));
    }
    sent.push(("GET", "/report".into(), 200));
    sent.push(("GET", "/report".into(), 200));
    sent.push(("GET", "/health".into(), 200));
    sent.push(("GET", "/no/such/page/123".into(), 404));
    sent.push(("GET", "/no/such/page/456".into(), 404));
    for (method, path, status) in &sent {
        assert_eq!(http(svc.app, method, path).0, *status, "{method} {path}");
    }

    let (status, text) = http(svc.metrics, "GET", "/metrics");
    assert_eq!(status, 200, "{text}");
    let counts = samples(&text, "http_server_request_duration_seconds_count");
    let by = |method: &str, route: &str, code: &str| -> f64 {
        counts
            .iter()
            .find(|(l, _)| {
                l["http_request_method"] == method
                    && l["http_route"] == route
                    && l["http_response_status_code"] == code
            })
            .map_or(0.0, |(_, v)| *v)
    };
    assert_eq!(by("GET", "/users/{id}", "200"), 30.0, "{counts:#?}");
    assert_eq!(by("GET", "/users/{id}", "404"), 1.0, "{counts:#?}");
    assert_eq!(by("GET", "/users/{id}", "400"), 1.0, "{counts:#?}");
    assert_eq!(by("GET", "/orders", "200"), 1.0, "{counts:#?}");
    assert_eq!(by("POST", "/orders", "201"), 1.0, "{counts:#?}");
    assert_eq!(by("POST", "/checkout", "200"), 6.0, "{counts:#?}");
    assert_eq!(by("POST", "/checkout", "500"), 2.0, "{counts:#?}");
    assert_eq!(by("GET", "/report", "200"), 2.0, "{counts:#?}");
    assert_eq!(by("GET", "/health", "200"), 1.0, "{counts:#?}");
    // Unmatched paths: one series, no raw path.
    assert_eq!(by("GET", "", "404"), 2.0, "{counts:#?}");
    let total: f64 = counts.values().sum();
    assert_eq!(total, sent.len() as f64, "{counts:#?}");

    // Only templates as routes, and the 500s carry their error type.
    let routes: BTreeSet<&str> = counts.keys().map(|l| l["http_route"].as_str()).collect();
    let templates = BTreeSet::from(sonde_testkit::AXUM_ROUTES);
    assert!(
        routes.is_subset(&templates),
        "raw paths recorded: {routes:?}"
    );
    for (l, _) in counts
        .iter()
        .filter(|(l, _)| l["http_response_status_code"] == "500")
    {
        assert_eq!(l["error_type"], "500", "{l:?}");
    }

    // The slow route's latency is real: 2 requests of at least 100 ms.
    let sums = samples(&text, "http_server_request_duration_seconds_sum");
    let report_sum: f64 = sums
        .iter()
        .filter(|(l, _)| l["http_route"] == "/report")
        .map(|(_, v)| v)
        .sum();
    assert!(report_sum >= 0.2, "{report_sum}");

    // Process metrics are served alongside.
    assert!(
        text.lines()
            .any(|l| l.starts_with("process_cpu_time_seconds_total")),
        "no process metrics in:\n{text}"
    );
}

#[test]
fn a_bad_address_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["--listen", "localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen \"localhost\"") && err.contains("IP:PORT"),
        "{err}"
    );
}
