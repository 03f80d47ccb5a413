//! The Prometheus exporter against real peers: promtool, the Python parsers, and a Prometheus
//! server scraping the example service over loopback.

use sonde::Component as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use sonde::prometheus::{PrometheusBuilder, PrometheusServer};
use sonde::{Registry, Resource, Unit};
use sonde_tests::{example, http, prometheus, python};

const OM: &str = "application/openmetrics-text; version=1.0.0";

/// A registry with every kind, awkward label values, an overflow series and special floats.
fn tricky_registry() -> Registry {
    let reg = Registry::new();
    sonde_tests::fixtures::every_kind(
        &reg,
        "test",
        "Requests with \"quotes\", back\\slashes\nand newlines.",
        [
            "plain",
            "quote\" backslash\\ newline\n end",
            "ünïcødé ✓",
            "past the limit", // overflow series
        ],
    );
    reg.gauge_f64("test.nan")
        .build()
        .unwrap()
        .handle()
        .set(f64::NAN);
    reg.gauge_f64("test.inf")
        .build()
        .unwrap()
        .handle()
        .set(f64::INFINITY);
    reg.histogram("test.size")
        .unit(Unit::Bytes)
        .build()
        .unwrap()
        .handle()
        .observe(1500.0);
    reg
}

fn serve(reg: &Registry) -> PrometheusServer {
    sonde_tests::loopback_exporter(reg)
        .resource(
            Resource::empty()
                .with("service.name", "sonde-test")
                .with("service.instance.id", "i-1"),
        )
        .install()
        .unwrap()
}

fn sample<'a>(samples: &'a [Value], name: &str, labels: &[(&str, &str)]) -> &'a Value {
    samples
        .iter()
        .find(|s| {
            s["name"] == name
                && labels.iter().all(|(k, v)| s["labels"][*k] == *v)
                && s["labels"].as_object().unwrap().len() == labels.len()
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

#[test]
fn exposition_passes_promtool_and_both_python_parsers() {
    let reg = tricky_registry();
    let server = serve(&reg);
    let url = format!("http://{}/metrics", server.local_addr());

    let text = http::get(&url, &[]);
    assert_eq!(text.status, 200);
    assert_eq!(
        text.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = text.text();
    // promtool lints the text format; any complaint fails.
    let lint = prometheus::promtool_check_metrics(&text);
    assert!(
        lint.trim().is_empty(),
        "promtool complained:\n{lint}\n---\n{text}"
    );

    let om = http::get(&url, &[("Accept", OM)]);
    assert_eq!(
        om.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om = om.text();
    assert!(om.ends_with("# EOF\n"));

    for (format, body) in [("text", &text), ("openmetrics", &om)] {
        let s = python::parse(format, body);
        let total = |labels: &[(&str, &str)]| {
            sample(&s, "test_requests_total", labels)["value"]
                .as_f64()
                .unwrap()
        };
        assert_eq!(
            total(&[("http_route", "/a"), ("note", "plain")]),
            5.0,
            "{format}"
        );
        assert_eq!(
            total(&[
                ("http_route", "/b"),
                ("note", "quote\" backslash\\ newline\n end")
            ]),
            7.0,
            "{format}"
        );
        assert_eq!(
            total(&[("http_route", "/c"), ("note", "ünïcødé ✓")]),
            1.0,
            "{format}"
        );
        assert_eq!(total(&[("otel_metric_overflow", "true")]), 2.0, "{format}");
        assert_eq!(
            sample(&s, "test_cpu_time_seconds_total", &[])["value"],
            1.25
        );
        assert_eq!(sample(&s, "test_temperature_celsius", &[])["value"], -7.5);
        assert_eq!(sample(&s, "test_nan", &[])["value"], "NaN");
        assert_eq!(sample(&s, "test_inf", &[])["value"], "+Inf");
        assert_eq!(sample(&s, "test_active", &[])["value"], -3.0);
        for (le, n) in [("0.01", 2.0), ("0.1", 3.0), ("1.0", 4.0), ("+Inf", 5.0)] {
            let v = &sample(
                &s,
                "test_latency_seconds_bucket",
                &[("op", "read"), ("le", le)],
            )["value"];
            assert_eq!(v.as_f64().unwrap(), n, "{format} le={le}");
        }
        assert_eq!(
            sample(&s, "test_latency_seconds_count", &[("op", "read")])["value"],
            5.0
        );
        assert!(
            (sample(&s, "test_latency_seconds_sum", &[("op", "read")])["value"]
                .as_f64()
                .unwrap()
                - 2.565)
                .abs()
                < 1e-9
        );
        let info = sample(
            &s,
            "target_info",
            &[
                ("service_name", "sonde-test"),
                ("service_instance_id", "i-1"),
            ],
        );
        assert_eq!(info["value"], 1.0);
        if format == "openmetrics" {
            let lat = s
                .iter()
                .find(|x| x["family"] == "test_latency_seconds")
                .unwrap();
            assert_eq!(lat["unit"], "seconds");
            assert_eq!(lat["type"], "histogram");
            assert!(s.iter().any(|x| x["name"] == "test_requests_created"));
        }
    }

    // gzip when asked, same content.
    let gz = http::get(&url, &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.content_encoding, "gzip");
    assert!(gz.body.len() < text.len());
    let unzipped = gz.text();
    assert_eq!(
        unzipped.lines().filter(|l| l.starts_with("test_")).count(),
        text.lines().filter(|l| l.starts_with("test_")).count()
    );
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

#[test]
fn malformed_requests_get_4xx_and_the_server_keeps_serving() {
    let reg = tricky_registry();
    let server = sonde_tests::loopback_exporter(&reg)
        .request_timeout(Duration::from_secs(1))
        .install()
        .unwrap();
    let addr = server.local_addr();
    let base = format!("http://{addr}");
    assert_eq!(http::get(&format!("{base}/nope"), &[]).status, 404);
    assert_eq!(http::post(&format!("{base}/metrics"), b"x").status, 405);

    let raw = |request: &[u8]| -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let garbage = raw(b"\x16\x03\x01 not http at all\r\n\r\n");
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
        "{garbage:?}"
    );
    let huge_header = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let r = raw(huge_header.as_bytes());
    assert!(
        r.is_empty() || r.starts_with("HTTP/1.1 431") || r.starts_with("HTTP/1.1 400"),
        "{}",
        &r[..r.len().min(80)]
    );
    // A client that never finishes its headers is cut off after the request timeout.
    let start = std::time::Instant::now();
    let slow = raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "slow client held for {:?}",
        start.elapsed()
    );
    assert!(!slow.contains("200 OK"));

    let ok = http::get(&format!("{base}/metrics"), &[]);
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("test_requests_total"));
    let health: Value =
        serde_json::from_slice(&http::get(&format!("{base}/health"), &[]).body).unwrap();
    assert_eq!(health["status"], "ok");
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

/// The median, p90 and p99 of `values` as `(q, truth)`: the smallest value with at least that
/// share of `values` at or below it, which Prometheus's estimate is checked against.
fn true_quantiles(values: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    [0.5, 0.9, 0.99]
        .into_iter()
        .map(|q| (q, sorted[(q * sorted.len() as f64).ceil() as usize - 1]))
        .collect()
}

#[test]
fn prometheus_scrapes_the_example_service() {
    let reg = Registry::new();
    let workload = example::workload(&reg, Duration::from_millis(10));
    // Deterministic series next to the live workload.
    let c = sonde::testing::labelled_counter(&reg, "e2e.requests", &["route"]);
    c.with(&["/a"]).add(42);
    c.with(&["/b"]).add(7);
    reg.gauge_f64("e2e.temperature")
        .build()
        .unwrap()
        .handle()
        .set(-7.5);
    let h = reg
        .histogram("e2e.latency")
        .unit(Unit::Seconds)
        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
        .build()
        .unwrap()
        .handle();
    // 1000 observations from 1 ms to 1 s on a log scale: the true p90 is known.
    let values: Vec<f64> = (0..1000)
        .map(|i| 0.001 * 1000f64.powf(i as f64 / 999.0))
        .collect();
    for v in &values {
        h.observe(*v);
    }
    let server = serve(&reg);
    let prom = prometheus::Prometheus::start(&[server.local_addr()], &[], &[]);

    let up = prom.wait_for_series("up{job=\"sonde\"} == 1", Duration::from_secs(30));
    assert_eq!(up.len(), 1);
    prom.wait_for_series("e2e_requests_total", Duration::from_secs(30));
    let q = |e: &str| prom.query(e);
    let one = |e: &str| {
        let r = q(e);
        assert_eq!(r.len(), 1, "{e}: {r:?}");
        r[0].value
    };
    assert_eq!(one("e2e_requests_total{route=\"/a\"}"), 42.0);
    assert_eq!(one("e2e_requests_total{route=\"/b\"}"), 7.0);
    assert_eq!(one("e2e_temperature"), -7.5);
    let bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
    for b in bounds {
        let expect = values.iter().filter(|v| **v <= b).count() as f64;
        let le = format!("{b:?}");
        assert_eq!(
            one(&format!("e2e_latency_seconds_bucket{{le=\"{le}\"}}")),
            expect,
            "le={le}"
        );
    }
    assert_eq!(one("e2e_latency_seconds_bucket{le=\"+Inf\"}"), 1000.0);
    assert_eq!(one("e2e_latency_seconds_count"), 1000.0);
    // histogram_quantile interpolates inside the bucket that holds the true quantile.
    for (q90, truth) in true_quantiles(&values) {
        let est = one(&format!(
            "histogram_quantile({q90}, e2e_latency_seconds_bucket)"
        ));
        let upper = bounds.iter().copied().find(|b| *b >= truth).unwrap();
        let lower = bounds
            .iter()
            .copied()
            .rev()
            .find(|b| *b < truth)
            .unwrap_or(0.0);
        assert!(
            est > lower && est <= upper,
            "p{q90}: {est} not in ({lower}, {upper}] holding {truth}"
        );
    }
    // The live workload arrives too, with OpenTelemetry names in Prometheus form.
    let reqs = prom.wait_for_series(
        "sum(http_server_request_duration_seconds_count) > 0",
        Duration::from_secs(10),
    );
    assert!(reqs[0].value > 0.0);
    for family in [
        "db_client_operation_duration_seconds_bucket",
        "http_client_request_duration_seconds_sum",
        "cache_requests_total",
        "http_server_active_requests",
        "process_startup_duration_seconds",
        "process_cpu_time_seconds_total",
        "db_client_connection_count_value",
        "target_info",
    ] {
        assert!(!q(family).is_empty(), "{family} missing");
    }
    let route_labels = q("http_server_request_duration_seconds_count");
    assert!(route_labels.iter().all(
        |s| s.labels.contains_key("http_route") && s.labels.contains_key("http_request_method")
    ));
    workload.stop();
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

#[test]
fn native_histograms_arrive_over_protobuf() {
    let reg = Registry::new();
    let h = sonde::testing::seconds_histogram(&reg, "native.latency", &["op"]);
    let values: Vec<f64> = (0..1000)
        .map(|i| 0.0001 * 100_000f64.powf(i as f64 / 999.0))
        .collect();
    for v in &values {
        h.with(&["get"]).observe(*v);
    }
    h.with(&["zero"]).observe(0.0);
    reg.counter("native.requests")
        .build()
        .unwrap()
        .handle()
        .add(9);
    let server = serve(&reg);

    // What the server answers when asked for protobuf.
    let accept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,text/plain;version=0.0.4;q=0.3";
    let reply = http::get(
        &format!("http://{}/metrics", server.local_addr()),
        &[("Accept", accept)],
    );
    assert_eq!(reply.content_type, sonde::prometheus::proto::CONTENT_TYPE);

    let prom = prometheus::Prometheus::start(
        &[server.local_addr()],
        &[],
        &["--enable-feature=native-histograms"],
    );
    prom.wait_for_series("native_requests_total", Duration::from_secs(30));
    let one = |e: &str| {
        let r = prom.query(e);
        assert_eq!(r.len(), 1, "{e}: {r:?}");
        r[0].value
    };
    assert_eq!(one("native_requests_total"), 9.0);
    assert_eq!(
        one("histogram_count(native_latency_seconds{op=\"get\"})"),
        1000.0
    );
    let sum: f64 = values.iter().sum();
    assert!((one("histogram_sum(native_latency_seconds{op=\"get\"})") - sum).abs() < 1e-6 * sum);
    assert_eq!(
        one("histogram_count(native_latency_seconds{op=\"zero\"})"),
        1.0
    );
    // Schema 3 buckets are 2^(1/8) wide: Prometheus's estimate lands within one bucket (~9 %).
    for (q, truth) in true_quantiles(&values) {
        let est = one(&format!(
            "histogram_quantile({q}, native_latency_seconds{{op=\"get\"}})"
        ));
        assert!(
            (est - truth).abs() / truth < 0.095,
            "p{q}: {est} vs {truth}"
        );
    }
    // With a native histogram present Prometheus keeps it instead of the classic series.
    assert!(prom.query("native_latency_seconds_bucket").is_empty());
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

#[test]
fn report_shows_where_the_time_goes() {
    let reg = Registry::new();
    let workload = example::workload(&reg, Duration::from_millis(10));
    let server = serve(&reg);
    let url = format!("http://{}/report", server.local_addr());
    std::thread::sleep(Duration::from_millis(300));
    let first: Value = serde_json::from_slice(&http::get(&url, &[]).body).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let r = http::get(&url, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json");
    let report: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(first["interval_seconds"].as_f64().unwrap() > 0.0);
    let interval = report["interval_seconds"].as_f64().unwrap();
    assert!((0.5..5.0).contains(&interval), "{interval}");
    let hs = report["histograms"].as_array().unwrap();
    assert!(hs.len() >= 5, "{hs:?}");
    // Sorted by the total time they hold: the first is a duration with the largest sum.
    let sums: Vec<f64> = hs
        .iter()
        .filter(|h| h["unit"] == "s")
        .map(|h| h["sum"].as_f64().unwrap())
        .collect();
    assert!(sums.windows(2).all(|w| w[0] >= w[1]), "{sums:?}");
    for h in hs {
        let f = |k: &str| h[k].as_f64().unwrap();
        assert!(
            f("min") <= f("p50")
                && f("p50") <= f("p95")
                && f("p95") <= f("p99")
                && f("p99") <= f("max"),
            "{h}"
        );
        assert!((f("mean") - f("sum") / f("count")).abs() < 1e-12);
    }
    let server_requests = hs
        .iter()
        .find(|h| {
            h["metric"] == "http.server.request.duration" && h["labels"]["http.route"] == "/orders"
        })
        .unwrap();
    assert!(
        server_requests["rate_per_second"].as_f64().unwrap() > 0.0,
        "{server_requests}"
    );
    let cache = &report["caches"][0];
    assert_eq!(cache["cache"], "users");
    let ratio = cache["hit_ratio"].as_f64().unwrap();
    assert!(
        (0.6..0.95).contains(&ratio),
        "the workload hits 80 % of the time: {ratio}"
    );
    workload.stop();
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

#[test]
fn exemplars_come_back_from_the_exemplar_api() {
    use sonde::TraceContext;
    let reg = Registry::new();
    let h = sonde::testing::exemplar_histogram(&reg, "ex.latency", &[0.1, 1.0]);
    let trace = |n: u8| TraceContext {
        trace_id: [n; 16],
        span_id: [n.wrapping_add(1); 8],
    };
    h.observe_with_exemplar(0.05, &trace(0xab));
    h.observe_with_exemplar(0.5, &trace(0xcd));
    let server = serve(&reg);

    // The OpenMetrics exposition carries them, and an independent parser accepts it.
    let om = http::get(
        &format!("http://{}/metrics", server.local_addr()),
        &[("Accept", OM)],
    )
    .text();
    assert!(
        om.contains(&format!(
            "# {{trace_id=\"{}\",span_id=\"{}\"}} 0.05 ",
            "ab".repeat(16),
            "ac".repeat(8)
        )),
        "{om}"
    );
    let parsed = python::parse("openmetrics", &om);
    assert!(!parsed.is_empty());

    let prom = prometheus::Prometheus::start(
        &[server.local_addr()],
        &[],
        &["--enable-feature=exemplar-storage"],
    );
    prom.wait_for_series("ex_latency_seconds_count", Duration::from_secs(30));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (start, end) = ((now - 600).to_string(), (now + 60).to_string());
    let found = sonde_tests::wait_for("exemplars in Prometheus", Duration::from_secs(20), || {
        let body = prom.api(
            "query_exemplars",
            &[
                ("query", "ex_latency_seconds_bucket"),
                ("start", &start),
                ("end", &end),
            ],
        );
        let mut ids = Vec::new();
        for series in body["data"].as_array().unwrap() {
            for e in series["exemplars"].as_array().unwrap() {
                ids.push((
                    series["seriesLabels"]["le"].as_str().unwrap().to_owned(),
                    e["labels"]["trace_id"].as_str().unwrap().to_owned(),
                    e["value"].as_str().unwrap().parse::<f64>().unwrap(),
                ));
            }
        }
        (ids.len() >= 2).then_some(ids)
    });
    assert!(
        found.contains(&("0.1".to_owned(), "ab".repeat(16), 0.05)),
        "{found:?}"
    );
    assert!(
        found.contains(&("1.0".to_owned(), "cd".repeat(16), 0.5)),
        "{found:?}"
    );
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

#[test]
fn tls_and_basic_auth_guard_the_endpoint() {
    let dir = sonde_tests::TempDir::new("tls");
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let (cert_path, key_path) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, &key_pem).unwrap();
    // Cost 4 keeps the test fast; production hashes use 10 or more.
    let hash = bcrypt::hash("s3cret", 4).unwrap();

    let reg = Registry::new();
    reg.counter("guarded.requests")
        .build()
        .unwrap()
        .handle()
        .add(5);
    let server = sonde_tests::loopback_exporter(&reg)
        .tls(&cert_path, &key_path)
        .basic_auth_user("prometheus", hash)
        .install()
        .unwrap();
    let url = format!("https://127.0.0.1:{}/metrics", server.local_addr().port());
    let auth = http::basic_auth;
    let ok = http::get_with_ca(
        &url,
        &[("Authorization", &auth("prometheus", "s3cret"))],
        Some(&cert_pem),
    );
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("guarded_requests_total 5"));
    for bad in [
        auth("prometheus", "wrong"),
        auth("nobody", "s3cret"),
        "Basic !!!".to_owned(),
        "Bearer x".to_owned(),
    ] {
        let r = http::get_with_ca(&url, &[("Authorization", &bad)], Some(&cert_pem));
        assert_eq!(r.status, 401, "{bad}");
    }
    let r = http::get_with_ca(&url, &[], Some(&cert_pem));
    assert_eq!(r.status, 401);
    // Plain HTTP on the TLS port gets no metrics.
    let plain_url = format!("http://{}/metrics", server.local_addr());
    let plain = std::panic::catch_unwind(|| http::get(&plain_url, &[]));
    assert!(plain.map(|r| r.status != 200).unwrap_or(true));

    // A real Prometheus scrapes it over TLS with the right password, and is refused with a wrong one.
    let ca = cert_path.display().to_string();
    let target = format!("127.0.0.1:{}", server.local_addr().port());
    let scrape = format!(
        "  - job_name: good\n    scheme: https\n    tls_config:\n      ca_file: '{ca}'\n    basic_auth:\n      username: prometheus\n      password: s3cret\n    static_configs:\n      - targets: ['{target}']\n  - job_name: bad\n    scheme: https\n    tls_config:\n      ca_file: '{ca}'\n    basic_auth:\n      username: prometheus\n      password: nope\n    static_configs:\n      - targets: ['{target}']\n"
    );
    let prom = prometheus::Prometheus::start_with_scrape_configs(&scrape, &[], &[]);
    let good = prom.wait_for_series(
        "guarded_requests_total{job=\"good\"}",
        Duration::from_secs(30),
    );
    assert_eq!(good[0].value, 5.0);
    let bad = prom.wait_for_series("up{job=\"bad\"}", Duration::from_secs(30));
    assert_eq!(bad[0].value, 0.0);
    assert!(prom.query("guarded_requests_total{job=\"bad\"}").is_empty());
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

/// The message of the error `builder` fails to install with.
fn install_error(builder: PrometheusBuilder) -> String {
    builder.install().unwrap_err().to_string()
}

#[test]
fn bad_web_configuration_is_a_clear_error() {
    let loopback = || PrometheusBuilder::new().bind("127.0.0.1:0".parse().unwrap());
    let err = install_error(loopback().basic_auth_user("u", "plaintext-password"));
    assert!(
        err.contains("not a bcrypt hash") && err.contains("htpasswd"),
        "{err}"
    );
    let err = install_error(loopback().tls("/nonexistent/cert.pem", "/nonexistent/key.pem"));
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    // A port in use is the caller's error at install time.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = install_error(PrometheusBuilder::new().bind(taken.local_addr().unwrap()));
    assert!(err.contains("could not listen"), "{err}");
}
