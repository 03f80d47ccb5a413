//! The server-side view (`--scrape`) against real services on loopback, exposed by sonde's own
//! Prometheus exporter (OpenMetrics and text 0.0.4 by content negotiation):
//! - the axum example (`crates/sonde-example-axum`, which serves real routes): requests sent
//!   between the two scrapes are counted exactly per route, traffic before the window is not;
//! - the example service's workload (`crates/sonde-example`, what `sonde-example-service`
//!   serves): its HTTP, database and cache figures, checked against an independent reading of
//!   the exposition;
//! - a service restarted between the scrapes: noted, never negative.

use sonde_core::Component as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sonde::prometheus::{PrometheusBuilder, PrometheusServer};
use sonde::{Registry, instrument::HttpServerMetrics};
use sonde_load::plan::{Model, Plan, RequestSpec, Stage};
use sonde_load::result::{ServerRoute, ServerView};
use sonde_load::scrape;
use sonde_tests::http::{get, post};

const HTTP_FAMILY: &str = "http_server_request_duration_seconds";
const TIMEOUT: Duration = Duration::from_secs(10);

/// The axum example on its own registry, with sonde's exporter beside it.
struct AxumService {
    app: SocketAddr,
    metrics: PrometheusServer,
    _rt: tokio::runtime::Runtime,
}

impl AxumService {
    /// On loopback, its metrics on any free port.
    fn start() -> AxumService {
        Self::try_start("127.0.0.1:0".parse().unwrap()).unwrap()
    }

    fn try_start(metrics_addr: SocketAddr) -> Result<AxumService, String> {
        let reg = Registry::new();
        let http = HttpServerMetrics::install(&reg).unwrap();
        let (rt, listener, app) = sonde_tests::serve::loopback_runtime(2);
        rt.spawn(async move { axum::serve(listener, sonde_example_axum::app(http)).await });
        let metrics = serve_metrics(reg, metrics_addr)?;
        Ok(AxumService {
            app,
            metrics,
            _rt: rt,
        })
    }

    fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics.local_addr())
    }

    /// `http://APP` + `path`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app)
    }

    /// Sends `GET path` to the app and checks the answer's status.
    fn expect_get(&self, path: &str, status: u16) {
        assert_eq!(get(&self.url(path), &[]).status, status, "GET {path}");
    }
}

/// sonde's exporter serving `reg` on `addr`.
fn serve_metrics(reg: Registry, addr: SocketAddr) -> Result<PrometheusServer, String> {
    PrometheusBuilder::new()
        .registry(reg)
        .bind(addr)
        .install()
        .map_err(|e| e.to_string())
}

fn request(name: &str, method: http::Method, url: &str) -> RequestSpec {
    RequestSpec {
        name: name.to_owned(),
        method,
        url: url.parse().unwrap(),
        headers: Vec::new(),
        body: Bytes::new(),
        weight: 1,
        thresholds: Vec::new(),
    }
}

fn plan(requests: Vec<RequestSpec>) -> Plan {
    Plan {
        requests,
        model: Model::Open,
        stages: vec![Stage {
            duration: Duration::from_secs(1),
            target: 1.0,
            hold: true,
        }],
        warmup: Duration::ZERO,
        connections: 1,
        timeout: TIMEOUT,
        http2: false,
        insecure: false,
        thresholds: Vec::new(),
    }
}

fn rows_for<'a>(view: &'a ServerView, request: &str) -> Vec<&'a ServerRoute> {
    view.routes
        .iter()
        .filter(|r| r.request.as_deref() == Some(request))
        .collect()
}

fn count_for(view: &ServerView, request: &str) -> u64 {
    rows_for(view, request).iter().map(|r| r.count).sum()
}

fn assert_sane_quantiles(r: &ServerRoute, lo: f64, hi: f64) {
    let [p50, p95, p99] = r.quantiles.to_array().map(Option::unwrap);
    assert!(
        lo <= p50 && p50 <= p95 && p95 <= p99 && p99 <= hi,
        "{} {{{}}}: p50 {p50} p95 {p95} p99 {p99} not within [{lo}, {hi}] in order",
        r.metric,
        r.labels
    );
}

/// Requests sent before the first scrape are outside the window; those sent between the two
/// are counted exactly, per request, with the method telling GET and POST /orders apart.
#[test]
fn the_window_counts_exactly_the_requests_sent_in_it() {
    let svc = AxumService::start();
    // Before the window: must not be counted.
    for n in 0..7 {
        svc.expect_get(&format!("/users/{n}"), 200);
    }
    let before = scrape::take(&svc.metrics_url(), TIMEOUT).unwrap();
    let mut sent = [0u64; 4];
    for n in 0..40 {
        svc.expect_get(&format!("/users/{n}"), 200);
        sent[0] += 1;
        if n % 8 == 0 {
            svc.expect_get("/report", 200);
            sent[3] += 1;
        }
        if n % 2 == 0 {
            svc.expect_get("/orders", 200);
            sent[1] += 1;
        }
        if n % 4 == 0 {
            assert_eq!(post(&svc.url("/orders"), b"{}").status, 201);
            sent[2] += 1;
        }
    }
    let after = scrape::take(&svc.metrics_url(), TIMEOUT).unwrap();
    let p = plan(vec![
        request("user", http::Method::GET, &svc.url("/users/42")),
        request("orders", http::Method::GET, &svc.url("/orders")),
        request("new-order", http::Method::POST, &svc.url("/orders")),
        request("report", http::Method::GET, &svc.url("/report")),
        request("missing", http::Method::GET, &svc.url("/nowhere")),
    ]);
    let view = scrape::server_view(&svc.metrics_url(), &before, &after, &p);
    for (name, n) in ["user", "orders", "new-order", "report"].iter().zip(sent) {
        assert_eq!(count_for(&view, name), n, "{name}: {view:#?}");
        for r in rows_for(&view, name) {
            assert_eq!(r.metric, HTTP_FAMILY);
            assert!(r.labels.contains("http_route=\""), "{}", r.labels);
        }
    }
    let user = rows_for(&view, "user")[0];
    assert!(
        user.labels.contains(r#"http_route="/users/{id}""#),
        "{}",
        user.labels
    );
    assert!(
        user.labels.contains(r#"http_request_method="GET""#),
        "{}",
        user.labels
    );
    // Loopback answers: well under a second (the first bucket bounds the interpolation).
    assert_sane_quantiles(user, 0.0, 1.0);
    // /report sleeps 100–300 ms: the server's own quantiles must say so.
    assert_sane_quantiles(rows_for(&view, "report")[0], 0.05, 0.6);
    // The request that hit no route is named in a note with the routes the service has.
    let note = view
        .notes
        .iter()
        .find(|n| n.contains("\"missing\""))
        .unwrap_or_else(|| panic!("no note for the unmatched request: {:#?}", view.notes));
    assert!(note.contains("/users/{id}"), "{note}");
    // No credentials in the URL: kept as given.
    assert_eq!(view.url, svc.metrics_url());
}

/// The same registry read as OpenMetrics (what `take` asks for first) and as text 0.0.4 gives
/// the same histogram series.
#[test]
fn openmetrics_and_text_give_the_same_histograms() {
    let svc = AxumService::start();
    for n in 0..20 {
        svc.expect_get(&format!("/users/{n}"), 200);
        svc.expect_get(&format!("/no/such/{n}"), 404);
    }
    let om = get(
        &svc.metrics_url(),
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    );
    let om_body = om.text();
    assert!(om_body.trim_end().ends_with("# EOF"), "not OpenMetrics");
    let text = get(
        &svc.metrics_url(),
        &[("Accept", "text/plain;version=0.0.4")],
    )
    .text();
    assert!(!text.contains("# EOF"), "not text 0.0.4");
    let a = scrape::parse(&om_body).unwrap();
    let b = scrape::parse(&text).unwrap();
    assert_eq!(a.skipped_count, 0, "{:?}", a.skipped);
    assert_eq!(b.skipped_count, 0, "{:?}", b.skipped);
    let (fa, fb) = (&a.histograms[HTTP_FAMILY], &b.histograms[HTTP_FAMILY]);
    assert_eq!(fa.series, fb.series);
    assert_eq!(fa.unit.as_deref(), Some("seconds"), "OpenMetrics # UNIT");
    // 20 ok and 20 unmatched (route "") requests, each in its own series.
    let total: f64 = fa.series.values().map(|s| s.total()).sum();
    assert_eq!(total, 40.0);
    // `take` negotiates OpenMetrics and reads the same.
    let taken = scrape::take(&svc.metrics_url(), TIMEOUT).unwrap();
    assert_eq!(taken.histograms[HTTP_FAMILY].series, fa.series);
}

/// A service restarted between the scrapes (same address, counts start again): its series are
/// noted as restarted and counted from the restart, never negative.
#[test]
fn a_restart_between_the_scrapes_is_noted_not_negative() {
    let first = AxumService::start();
    let metrics_addr = first.metrics.local_addr();
    let url = first.metrics_url();
    for n in 0..30 {
        first.expect_get(&format!("/users/{n}"), 200);
    }
    let before = scrape::take(&url, TIMEOUT).unwrap();
    let AxumService {
        metrics, _rt: rt, ..
    } = first;
    metrics
        .shutdown(std::time::Duration::from_secs(10))
        .unwrap();
    drop(rt);
    // The new process binds the same metrics address (retrying while the port is released).
    let deadline = Instant::now() + TIMEOUT;
    let second = loop {
        match AxumService::try_start(metrics_addr) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the restarted service could not bind {metrics_addr}: {e}"),
        }
    };
    for n in 0..5 {
        second.expect_get(&format!("/users/{n}"), 200);
    }
    let after = scrape::take(&url, TIMEOUT).unwrap();
    let p = plan(vec![request(
        "user",
        http::Method::GET,
        &second.url("/users/1"),
    )]);
    let view = scrape::server_view(&url, &before, &after, &p);
    assert_eq!(count_for(&view, "user"), 5, "{view:#?}");
    assert!(
        view.notes.iter().any(|n| n.contains("restarted")),
        "{:#?}",
        view.notes
    );
    assert_sane_quantiles(rows_for(&view, "user")[0], 0.0, 1.0);
}

/// The example service's workload (what `sonde-example-service` serves on /metrics): its HTTP
/// histogram per route template, its database histogram and its cache counters over the
/// window, against an independent reading of the exposition's `_count` lines.
#[test]
fn the_example_service_view_has_routes_database_and_cache() {
    let reg = Registry::new();
    let workload = sonde_tests::example::steady_workload(&reg);
    let server = serve_metrics(reg.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}/metrics", server.local_addr());
    let text = |accept: &str| get(&url, &[("Accept", accept)]).text();
    // The workload keeps running: both readings of the window's start come from one body.
    std::thread::sleep(Duration::from_millis(300));
    let before_text = text("text/plain;version=0.0.4");
    let before = scrape::parse(&before_text).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    workload.stop();
    let after = scrape::take(&url, TIMEOUT).unwrap();
    let after_text = text("text/plain;version=0.0.4");

    let p = plan(vec![request(
        "user",
        http::Method::GET,
        "http://127.0.0.1:1/users/42",
    )]);
    let view = scrape::server_view(&url, &before, &after, &p);
    // The /users/{id} series, read off the text by plain line matching.
    let series = r#"http_server_request_duration_seconds_count{http_request_method="GET",http_route="/users/{id}",http_response_status_code="200",error_type=""}"#;
    let independent = sonde_tests::agent::sample_value(&after_text, series).unwrap()
        - sonde_tests::agent::sample_value(&before_text, series).unwrap_or(0.0);
    assert!(
        independent > 0.0,
        "the workload served no /users/{{id}} in 700 ms"
    );
    let user = rows_for(&view, "user");
    assert_eq!(user.len(), 1, "{view:#?}");
    assert_eq!(user[0].count as f64, independent);
    assert_sane_quantiles(user[0], 0.0, 1.0);
    // Database and cache: dependency histograms and counters that moved.
    let db = view
        .dependencies
        .iter()
        .find(|r| r.metric.starts_with("db_client_operation_duration") && r.count > 0)
        .unwrap_or_else(|| panic!("no database series: {view:#?}"));
    assert_eq!(db.request, None);
    assert!(
        view.routes.iter().all(|r| !r.metric.starts_with("db_")),
        "dependencies are listed apart from the routes: {view:#?}"
    );
    assert_sane_quantiles(db, 0.0, 1.0);
    assert!(
        view.counters
            .iter()
            .any(|(s, v)| s.contains("cache") && *v > 0.0),
        "{:#?}",
        view.counters
    );
    assert!(view.counters.len() <= 50);
    assert!(view.counters.iter().all(|(_, v)| *v > 0.0));
    // Unmatched HTTP routes are listed too (the workload also serves /orders and /health).
    assert!(
        view.routes
            .iter()
            .any(|r| r.metric == HTTP_FAMILY && r.request.is_none()),
        "{view:#?}"
    );
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

/// An endpoint that is not there, or not an exposition, is a clear error.
#[test]
fn scrape_errors_are_clear() {
    let dead = sonde_tests::free_addr();
    let e = scrape::take(&format!("http://{dead}/metrics"), TIMEOUT).unwrap_err();
    assert!(
        e.to_string()
            .contains("is running and serves its metrics there"),
        "{e}"
    );
    let e = scrape::take("localhost:9464/metrics", TIMEOUT).unwrap_err();
    assert!(e.to_string().contains("http://"), "{e}");
    let svc = AxumService::start();
    let e = scrape::take(&svc.url("/users/1"), TIMEOUT).unwrap_err();
    assert!(e.to_string().contains("not Prometheus text"), "{e}");
    let e = scrape::take(&svc.url("/nothing"), TIMEOUT).unwrap_err();
    assert!(e.to_string().contains("HTTP 404"), "{e}");
}

/// End to end: `sonde-load run --scrape` puts the service's own view of exactly the run into
/// the result, every request the run sent counted once by the server.
#[test]
fn run_with_scrape_puts_the_server_view_in_the_result() {
    let svc = AxumService::start();
    // Traffic before the run: outside its window.
    for n in 0..9 {
        svc.expect_get(&format!("/users/{n}"), 200);
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sonde-load"))
        .args(["run", "--url"])
        .arg(svc.url("/users/7"))
        .args([
            "--rate",
            "100",
            "--duration",
            "1s",
            "--no-progress",
            "--scrape",
        ])
        .arg(svc.metrics_url())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result = sonde_load::result::RunResult::read(&json).unwrap();
    let view = result
        .server
        .as_ref()
        .expect("no server view in the result");
    assert!(result.total.count >= 50, "{}", result.total.count);
    assert_eq!(count_for(view, "default"), result.total.count, "{view:#?}");
    let row = rows_for(view, "default")[0];
    assert!(
        row.labels.contains(r#"http_route="/users/{id}""#),
        "{}",
        row.labels
    );
    assert_sane_quantiles(row, 0.0, 1.0);
}
