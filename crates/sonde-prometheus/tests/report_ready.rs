//! `/report` over sliding windows (JSON and Markdown), per-route error ratios, and `/ready`
//! against `/health`, over real sockets. Windows use a 100 ms resolution and a 1 s window so the
//! tests take seconds, not minutes.

use sonde_core::Component as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sonde_core::{Family, Histogram, Registry, Resource, testing};
use sonde_prometheus::{PrometheusBuilder, PrometheusServer, Readiness, RemoteWriteBuilder};

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `GET path` on a new connection.
fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    Reply {
        status,
        content_type,
        body: body.to_owned(),
    }
}

fn server_histogram(registry: &Registry) -> Family<Histogram> {
    testing::seconds_histogram(
        registry,
        "http.server.request.duration",
        &["http.route", "http.response.status_code", "error.type"],
    )
}

/// The entry of the list `parent[list]` whose `key` is `value` (a `what` the panic names).
fn entry<'a>(parent: &'a Value, list: &str, key: &str, value: &str, what: &str) -> &'a Value {
    parent[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e[key] == value)
        .unwrap_or_else(|| panic!("no {what} {value} in {parent}"))
}

fn window<'a>(report: &'a Value, name: &str) -> &'a Value {
    entry(report, "windows", "name", name, "window")
}

fn route<'a>(window: &'a Value, route: &str) -> &'a Value {
    entry(window, "routes", "route", route, "route")
}

fn near(value: &Value, want: f64) -> bool {
    // Within the default grid's relative error, with room to spare.
    value
        .as_f64()
        .is_some_and(|v| (v - want).abs() / want < 0.05)
}

fn install(registry: &Registry, builder: PrometheusBuilder) -> PrometheusServer {
    builder
        .registry(registry.clone())
        .resource(Resource::empty())
        .bind("127.0.0.1:0".parse().unwrap())
        .install()
        .unwrap()
}

/// Traffic at 10 ms, then (past the 1 s window) at 200 ms: the 1 s window shows only the new
/// latency while since start mixes both; a window longer than the uptime says it is incomplete.
#[test]
fn windows_move_with_the_traffic() {
    let registry = Registry::new();
    let h = server_histogram(&registry);
    let server = install(
        &registry,
        PrometheusBuilder::new()
            .report_resolution(Duration::from_millis(100))
            .report_windows([Duration::from_secs(1), Duration::from_secs(60)]),
    );
    let addr = server.local_addr();
    let orders = h.with(&["/orders", "200", ""]);
    orders.observe_n(0.010, 100);
    std::thread::sleep(Duration::from_millis(1600));
    orders.observe_n(0.200, 100);
    let r = get(addr, "/report");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json");
    let report = r.json();
    assert_eq!(report["schema_version"], 2, "{report}");
    assert_eq!(report["resolution_seconds"], 0.1, "{report}");
    let names: Vec<&str> = report["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["1s", "1m", "since_start"]);

    let last = window(&report, "1s");
    assert_eq!(last["complete"], true, "{last}");
    let covered = last["covered_seconds"].as_f64().unwrap();
    assert!((0.8..1.3).contains(&covered), "{last}");
    let recent = route(last, "/orders");
    assert_eq!(recent["requests"], 100, "{recent}");
    assert!(near(&recent["p50"], 0.2), "{recent}");
    assert!(near(&recent["p99"], 0.2), "{recent}");
    let rate = recent["rate_per_second"].as_f64().unwrap();
    assert!((rate - 100.0 / covered).abs() < 1e-9, "{recent}");
    let hist = &last["histograms"][0];
    assert_eq!(hist["count"], 100, "{hist}");
    assert!(near(&hist["min"], 0.2), "only the new latency: {hist}");

    let all = window(&report, "since_start");
    let mixed = route(all, "/orders");
    assert_eq!(mixed["requests"], 200, "{mixed}");
    assert!(near(&mixed["p50"], 0.01), "{mixed}");
    assert!(near(&mixed["p95"], 0.2), "{mixed}");

    let minute = window(&report, "1m");
    assert_eq!(
        minute["complete"], false,
        "the server ran < 1 min: {minute}"
    );
    assert_eq!(route(minute, "/orders")["requests"], 200, "{minute}");

    // The fields from before the windows are still there, since start.
    let top = &report["histograms"][0];
    assert_eq!(top["count"], 200, "{report}");
    assert!(report["interval_seconds"].as_f64().is_some(), "{report}");

    // Quiet for longer than the window: the route leaves it, since start keeps it.
    std::thread::sleep(Duration::from_millis(1600));
    let report = get(addr, "/report").json();
    let last = window(&report, "1s");
    assert_eq!(last["routes"], serde_json::json!([]), "{last}");
    assert_eq!(
        route(window(&report, "since_start"), "/orders")["requests"],
        200
    );
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

/// Error ratios per route from `error.type` (or a 5xx status), in JSON and Markdown; an
/// unknown format is a 400 that names the valid ones.
#[test]
fn error_ratios_per_route_and_markdown() {
    let registry = Registry::new();
    let h = server_histogram(&registry);
    let server = install(&registry, PrometheusBuilder::new());
    let addr = server.local_addr();
    h.with(&["/orders", "200", ""]).observe_n(0.02, 90);
    h.with(&["/orders", "500", "500"]).observe_n(0.4, 10);
    h.with(&["/users/{id}", "200", ""]).observe_n(0.005, 50);
    h.with(&["/users/{id}", "404", ""]).observe_n(0.005, 5);
    // No response at all (the client went away): an error without a status.
    h.with(&["/pay", "", "_OTHER"]).observe_n(1.0, 2);
    let cache =
        testing::labelled_counter(&registry, "cache.requests", &["cache.name", "cache.result"]);
    cache.with(&["users", "hit"]).add(3);
    cache.with(&["users", "miss"]).add(1);

    let report = get(addr, "/report?format=json").json();
    for name in ["1m", "5m", "since_start"] {
        let w = window(&report, name);
        let orders = route(w, "/orders");
        assert_eq!(orders["requests"], 100, "{name}: {orders}");
        assert_eq!(orders["errors"], 10, "{name}: {orders}");
        assert_eq!(orders["error_ratio"], 0.1, "{name}: {orders}");
        assert!(near(&orders["p99"], 0.4), "{name}: {orders}");
        let users = route(w, "/users/{id}");
        assert_eq!(users["errors"], 0, "4xx is the client's error: {users}");
        assert_eq!(users["error_ratio"], 0.0, "{users}");
        assert_eq!(route(w, "/pay")["error_ratio"], 1.0, "{w}");
        assert_eq!(w["caches"][0]["hit_ratio"], 0.75, "{w}");
    }

    let md = get(addr, "/report?format=md");
    assert_eq!(md.status, 200);
    assert_eq!(md.content_type, "text/markdown; charset=utf-8");
    let text = md.body;
    testing::assert_contains_all(
        &text,
        &[
            "## Last 1m",
            "## Last 5m",
            "## Since start",
            "### HTTP routes",
        ],
    );
    let row = |route: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("| {route} |")))
            .unwrap_or_else(|| panic!("no row for {route}:\n{text}"))
            .to_owned()
    };
    let orders = row("/orders");
    assert!(
        orders.contains("| 100 |") && orders.contains("| 10 |") && orders.contains("10.00 %"),
        "{orders}"
    );
    assert!(row("/pay").contains("100.00 %"), "{text}");
    assert!(row("/users/{id}").contains("0.00 %"), "{text}");
    // Tables are well formed: every row has as many cells as its header.
    let mut cells = 0;
    for line in text.lines() {
        if !line.starts_with('|') {
            cells = 0;
            continue;
        }
        let n = line.replace("\\|", "").matches('|').count();
        if cells == 0 {
            cells = n;
        }
        assert_eq!(n, cells, "{line}\n{text}");
    }
    assert_eq!(get(addr, "/report?format=markdown").status, 200);

    let bad = get(addr, "/report?format=bogus");
    assert_eq!(bad.status, 400);
    assert!(
        bad.content_type.starts_with("text/plain"),
        "{}",
        bad.content_type
    );
    assert!(
        bad.body.contains("\"bogus\"") && bad.body.contains("format=md"),
        "{}",
        bad.body
    );
    // Other parameters are left alone.
    assert_eq!(get(addr, "/report?pretty=1").status, 200);
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

/// A remote-write receiver that answers 503 while `failing` is set, 204 otherwise.
struct Receiver {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(failing: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let failing = Arc::new(AtomicBool::new(failing));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, st) = (failing.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut req = Vec::new();
                let mut buf = [0u8; 8192];
                // Headers, then the body by its length.
                let body_at = loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                    if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i + 4);
                    }
                };
                let Some(body_at) = body_at else { continue };
                let head = String::from_utf8_lossy(&req[..body_at]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while req.len() < body_at + len {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let reply: &[u8] = if f.load(Ordering::Relaxed) {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown"
                } else {
                    b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
                };
                let _ = s.write_all(reply);
            }
        });
        Receiver {
            addr,
            failing,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `path` until `done` holds or 15 s pass; the last reply either way.
fn wait_for(addr: SocketAddr, path: &str, done: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(addr, path);
        if done(&r) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `/ready` follows what the application declares (200 → 503 → 200, reasons in the body) and
/// a failing exporter (a real remote writer against a receiver that answers 503), while
/// `/health` stays 200 throughout.
#[test]
fn ready_follows_the_application_and_the_exporters_health_stays_up() {
    let registry = Registry::new();
    registry.counter("jobs").build().unwrap().handle().inc();
    let readiness = Readiness::new();
    let server = install(
        &registry,
        PrometheusBuilder::new().readiness(readiness.clone()),
    );
    let addr = server.local_addr();
    let health_is_up = || {
        let h = get(addr, "/health");
        assert_eq!(h.status, 200, "{}", h.body);
        h.json()
    };

    let r = get(addr, "/ready");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.content_type, "application/json");
    assert_eq!(r.json()["status"], "ready");

    readiness.not_ready("cache", "warming up: 10 of 5000 keys loaded");
    let r = get(addr, "/ready");
    assert_eq!(r.status, 503, "{}", r.body);
    let body = r.json();
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(
        body["reasons"],
        serde_json::json!(["cache: warming up: 10 of 5000 keys loaded"]),
        "{body}"
    );
    assert_eq!(body["conditions"]["cache"]["ready"], false, "{body}");
    assert_eq!(health_is_up()["status"], "ok");

    // The server's handle flips the same conditions.
    server.readiness().not_ready("database", "no connection");
    assert_eq!(
        get(addr, "/ready").json()["reasons"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    readiness.ready("cache");
    server.readiness().set("database", true, "");
    let r = get(addr, "/ready");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["reasons"], serde_json::json!([]));

    // A second server on the same registry that does not let exporters decide readiness.
    let lenient = install(
        &registry,
        PrometheusBuilder::new().exporters_affect_readiness(false),
    );

    let receiver = Receiver::start(true);
    let writer = RemoteWriteBuilder::new(format!("http://{}/api/v1/write", receiver.addr))
        .registry(registry.clone())
        .resource(Resource::empty())
        .interval(Duration::from_millis(100))
        .backoff(Duration::from_millis(20), Duration::from_millis(50))
        .timeout(Duration::from_secs(2))
        .install()
        .unwrap();
    let r = wait_for(addr, "/ready", |r| r.status == 503);
    assert_eq!(r.status, 503, "{}", r.body);
    let body = r.json();
    assert_eq!(
        body["failing_exporters"],
        serde_json::json!(["remote_write"]),
        "{body}"
    );
    let reason = body["reasons"][0].as_str().unwrap();
    assert!(
        reason.starts_with("exporter remote_write: no successful request for"),
        "{body}"
    );
    let health = health_is_up();
    assert_eq!(health["status"], "degraded", "{health}");
    let l = get(lenient.local_addr(), "/ready");
    assert_eq!(l.status, 200, "{}", l.body);
    assert_eq!(
        l.json()["failing_exporters"],
        serde_json::json!(["remote_write"])
    );

    receiver.failing.store(false, Ordering::Relaxed);
    let r = wait_for(addr, "/ready", |r| r.status == 200);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(health_is_up()["status"], "ok");

    writer.shutdown(Duration::from_secs(5)).unwrap();
    lenient
        .shutdown(std::time::Duration::from_secs(10))
        .unwrap();
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

/// Serverless invocations through sonde-instrument's `Faas` with a Lambda cost model: each
/// window of /report sums invocations, cold starts and errors, and gives the estimated cost
/// per invocation and per million, in JSON and Markdown.
#[test]
fn serverless_invocations_and_their_cost_per_window() {
    use sonde_instrument::{Architecture, CostModel, Faas, LambdaPricing, Trigger};
    let registry = Registry::new();
    let model = CostModel {
        memory_mb: 1024,
        architecture: Architecture::Arm64,
        pricing: LambdaPricing::default(),
    };
    let faas = Faas::install(&registry)
        .unwrap()
        .with_cost_model(model, &registry)
        .unwrap();
    let server = install(&registry, PrometheusBuilder::new());
    let addr = server.local_addr();
    for i in 0..20 {
        let r: Result<(), String> = faas.invoke(Trigger::Http, || {
            std::thread::sleep(Duration::from_millis(2));
            if i % 10 == 9 {
                Err("failed".into())
            } else {
                Ok(())
            }
        });
        let _ = r;
    }
    let report = get(addr, "/report?format=json").json();
    let total = registry
        .snapshot()
        .point("faas.invocation.cost", &[("faas.trigger", "http")])
        .and_then(|p| p.number())
        .unwrap()
        .as_f64();
    // At least 2 ms billed at 1 GB on arm64 each, plus the request charge.
    let least = 20.0 * (0.000_000_2 + 0.002 * 0.000_013_333_4);
    assert!(total >= least && total < least * 20.0, "{total}");
    for name in ["1m", "since_start"] {
        let f = &window(&report, name)["faas"];
        assert_eq!(f["invocations"], 20.0, "{name}: {f}");
        assert_eq!(f["cold_starts"], 1.0, "{f}");
        assert_eq!(f["errors"], 2.0, "{f}");
        let per = f["cost_per_invocation_usd"].as_f64().unwrap();
        assert!((per - total / 20.0).abs() < 1e-15, "{f}");
        let million = f["cost_per_million_invocations_usd"].as_f64().unwrap();
        assert!((million - per * 1e6).abs() < 1e-9, "{f}");
    }
    let md = get(addr, "/report?format=md").body;
    assert!(
        md.contains("**Serverless**: 20 invocations, 1 cold starts (5.00 %), 2 errors, 0 timeouts; estimated cost $"),
        "{md}"
    );
    assert!(md.contains("per million invocations)"), "{md}");
    // Without invocations there is no serverless summary.
    let quiet = Registry::new();
    let other = install(&quiet, PrometheusBuilder::new());
    let report = get(other.local_addr(), "/report?format=json").json();
    assert!(window(&report, "since_start")["faas"].is_null(), "{report}");
}
