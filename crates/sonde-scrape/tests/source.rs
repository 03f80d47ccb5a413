//! A target on 127.0.0.1 serving an exposition we control, mirrored into a registry: exact
//! values, changes, restarts, vanished series and a failing target.
#![allow(clippy::unwrap_used)]

use sonde_core::Component as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sonde_core::{Registry, Snapshot};
use sonde_scrape::{ScrapeSource, ScrapeStats, Scraper, Target};

/// Serves `state` (status, body) to every request until the test ends.
fn target(state: Arc<Mutex<(u16, String)>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let (status, body) = state.lock().unwrap().clone();
            let head = sonde_testkit::http_head(
                &format!("HTTP/1.1 {status} X"),
                body.len(),
                &[("Content-Type", "text/plain; version=0.0.4")],
            );
            let _ = write!(conn, "{head}{body}");
        }
    });
    addr
}

fn number(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.point(name, labels)
        .and_then(|p| p.number())
        .map(|n| n.as_f64())
}

/// The number a target's series `name` is mirrored as: its `labels`, then `job` and `instance`.
fn mirrored(
    s: &Snapshot,
    name: &str,
    labels: &[(&str, &str)],
    job: &str,
    instance: &str,
) -> Option<f64> {
    let mut labels = labels.to_vec();
    labels.extend([("job", job), ("instance", instance)]);
    number(s, name, &labels)
}

/// A histogram family of durations in seconds, registered in a scraped service.
fn seconds_histogram(
    service: &Registry,
    name: &'static str,
    labels: &[&'static str],
) -> sonde_core::Family<sonde_core::Histogram> {
    service
        .histogram(name)
        .unit(sonde_core::Unit::Seconds)
        .labels(labels.iter().copied())
        .build()
        .unwrap()
}

/// Asserts the `target_info` series of `job`: its instance and kept `service.version`.
#[track_caller]
fn assert_target_info(s: &Snapshot, job: &str, instance: &str, version: &str) {
    let own = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(
        target_info(s, job),
        [
            own("job", job),
            own("instance", instance),
            own("service.version", version)
        ]
    );
}

/// The non-empty labels of the `target_info` series of `job`.
fn target_info(s: &Snapshot, job: &str) -> Vec<(String, String)> {
    let family = s.family("target_info").expect("a target_info family");
    let series = family
        .series
        .iter()
        .find(|x| family.labels(x).contains(&("job", job)))
        .unwrap_or_else(|| panic!("no target_info for {job}: {family:?}"));
    family
        .labels(series)
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const FIRST: &str = "\
# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code=\"200\",job=\"inner\"} 10
http_requests_total{code=\"500\"} 2
# TYPE temperature gauge
temperature{room=\"a\"} 21.5
# TYPE latency_seconds histogram
latency_seconds_bucket{le=\"0.1\"} 3
latency_seconds_bucket{le=\"0.5\"} 5
latency_seconds_bucket{le=\"+Inf\"} 6
latency_seconds_sum 1.37
latency_seconds_count 6
# TYPE gc_seconds summary
gc_seconds{quantile=\"0.5\"} 0.002
gc_seconds{quantile=\"0.99\"} 0.01
gc_seconds_sum 0.5
gc_seconds_count 100
";

#[test]
fn a_target_is_mirrored_exactly_and_follows_its_changes() {
    let state = Arc::new(Mutex::new((200, FIRST.to_owned())));
    let addr = target(state.clone());
    let registry = Registry::new();
    let mut t = Target::new("app", format!("http://{addr}/metrics"));
    t.interval = Duration::from_millis(100);
    let instance = addr.to_string();
    // A series of the target's, as mirrored.
    let app = |s: &Snapshot, name: &str, labels: &[(&str, &str)]| {
        mirrored(s, name, labels, "app", &instance)
    };
    let requests = |s: &Snapshot, code: &str, job: &str| {
        app(s, "http_requests", &[("code", code), ("exported_job", job)])
    };
    let latency = |s: &Snapshot| {
        let labels = [("job", "app"), ("instance", instance.as_str())];
        let point = s.point("latency_seconds", &labels).unwrap();
        point.histogram().unwrap().clone()
    };
    let source = ScrapeSource::start(&registry, vec![t]).unwrap();
    wait("the first scrape", || {
        app(&registry.snapshot(), "up", &[]) == Some(1.0)
    });
    let s = registry.snapshot();
    // The scraped `job` label is kept as exported_job; every series gets job and instance.
    assert_eq!(requests(&s, "200", "inner"), Some(10.0));
    assert_eq!(requests(&s, "500", ""), Some(2.0));
    assert_eq!(app(&s, "temperature", &[("room", "a")]), Some(21.5));
    let h = latency(&s);
    assert_eq!(h.count(), 6);
    assert_eq!(h.sum(), 1.37);
    assert_eq!(
        h.cumulative_buckets(),
        vec![(0.1, 3), (0.5, 5), (f64::INFINITY, 6)]
    );
    assert_eq!(app(&s, "gc_seconds", &[("quantile", "0.99")]), Some(0.01));
    assert!(app(&s, "scrape_samples_scraped", &[]).unwrap() >= 8.0);
    assert!(app(&s, "scrape_duration", &[]).unwrap() > 0.0);

    // Counters grow, one series vanishes, the histogram moves, the gauge changes.
    *state.lock().unwrap() = (
        200,
        FIRST
            .replace(
                "{code=\"200\",job=\"inner\"} 10",
                "{code=\"200\",job=\"inner\"} 15",
            )
            .replace("http_requests_total{code=\"500\"} 2\n", "")
            .replace(
                "latency_seconds_bucket{le=\"+Inf\"} 6",
                "latency_seconds_bucket{le=\"+Inf\"} 8",
            )
            .replace("latency_seconds_count 6", "latency_seconds_count 8")
            .replace("latency_seconds_sum 1.37", "latency_seconds_sum 5.37")
            .replace("21.5", "19"),
    );
    wait("the second scrape", || {
        app(&registry.snapshot(), "temperature", &[("room", "a")]) == Some(19.0)
    });
    let s = registry.snapshot();
    assert_eq!(requests(&s, "200", "inner"), Some(15.0));
    assert_eq!(
        requests(&s, "500", ""),
        None,
        "a series gone from the target is gone here"
    );
    let h = latency(&s);
    assert_eq!(h.count(), 8);
    assert!((h.sum() - 5.37).abs() < 1e-12, "{}", h.sum());
    assert_eq!(
        h.cumulative_buckets(),
        vec![(0.1, 3), (0.5, 5), (f64::INFINITY, 8)]
    );

    // The target restarts: its counter starts over, and so does the mirrored series.
    *state.lock().unwrap() = (200, FIRST.replace("job=\"inner\"} 10", "job=\"inner\"} 4"));
    wait("the restart", || {
        requests(&registry.snapshot(), "200", "inner") == Some(4.0)
    });

    // A failing target: up is 0 and its series are gone.
    *state.lock().unwrap() = (500, "oops".into());
    wait("up == 0", || {
        app(&registry.snapshot(), "up", &[]) == Some(0.0)
    });
    // The families go too: no other target fills them.
    let s = registry.snapshot();
    assert!(s.family("temperature").is_none());
    assert!(s.family("latency_seconds").is_none());

    // Back, then shut down: the mirrored series go with the source.
    *state.lock().unwrap() = (200, FIRST.to_owned());
    wait("up again", || {
        app(&registry.snapshot(), "up", &[]) == Some(1.0)
    });
    source.uninstall();
    assert!(registry.snapshot().family("temperature").is_none());
}

#[test]
fn what_cannot_be_mirrored_is_counted_and_the_rest_goes_on() {
    // A gauge that is NaN, a counter that later gains a label, a histogram whose bounds change,
    // and a name another source already holds with another kind.
    let registry = Registry::new();
    registry
        .counter("taken")
        .build()
        .unwrap()
        .with::<&str>(&[])
        .add(1);
    let body = "# TYPE g gauge\ng NaN\ng2 3\n# TYPE c counter\nc_total{a=\"x\"} 1\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0.5\n\
                # TYPE taken gauge\ntaken 5\n";
    let state = Arc::new(Mutex::new((200, body.to_owned())));
    let addr = target(state.clone());
    let mut t = Target::new("odd", format!("http://{addr}/metrics"));
    t.interval = Duration::from_millis(100);
    let _source = ScrapeSource::start(&registry, vec![t]).unwrap();
    let refused = |reason: &str| {
        number(
            &registry.snapshot(),
            "sonde.scrape.refused",
            &[("job", "odd"), ("reason", reason)],
        )
    };
    // Both are counted while the first scrape is mirrored, one after the other: a snapshot
    // between the two sees only the first.
    wait("the first scrape", || refused("bad_value").is_some());
    wait("the taken name to be refused", || {
        refused("cannot_register").is_some()
    });
    let snap = registry.snapshot();
    let inst = addr.to_string();
    assert_eq!(mirrored(&snap, "g2", &[], "odd", &inst), Some(3.0));
    *state.lock().unwrap() = (
        200,
        body.replace("c_total{a=\"x\"} 1", "c_total{a=\"x\",b=\"y\"} 2")
            .replace("le=\"1\"", "le=\"2\""),
    );
    wait("new labels and bounds refused", || {
        refused("new_label").is_some() && refused("bounds_changed").is_some()
    });
    assert_eq!(
        mirrored(&registry.snapshot(), "g2", &[], "odd", &inst),
        Some(3.0)
    );
}

#[test]
fn a_bad_url_is_refused_before_anything_starts() {
    let err = ScrapeSource::start(&Registry::new(), vec![Target::new("x", "localhost:9100")])
        .unwrap_err();
    assert_eq!(err.reason, "bad_url");
    assert!(err.message.contains("http://"), "{}", err.message);
    // Credentials in the URL and a configured login would send two Authorization headers.
    let err = sonde_scrape::Request::new(
        "http://user:secret@127.0.0.1:9/metrics",
        Duration::from_secs(1),
        "test",
    )
    .auth(&sonde_scrape::Auth::Bearer("t".into()))
    .max_body(1024)
    .text()
    .unwrap_err();
    assert_eq!(err.reason, "bad_url");
    assert!(!err.message.contains("secret"), "{}", err.message);
}

#[test]
fn garbage_and_a_target_that_never_answers_are_down_not_fatal() {
    let registry = Registry::new();
    let state = Arc::new(Mutex::new((
        200,
        "<html><body>login</body></html>".to_owned(),
    )));
    let garbage = target(state);
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _held = std::thread::spawn(move || {
        let conns: Vec<_> = silent.incoming().take(50).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(conns);
    });
    let mut a = Target::new("garbage", format!("http://{garbage}/metrics"));
    a.interval = Duration::from_millis(200);
    let mut b = Target::new("silent", format!("http://{silent_addr}/metrics"));
    b.interval = Duration::from_millis(500);
    b.timeout = Duration::from_millis(300);
    let g = ScrapeSource::scrape_once(&registry, &a);
    assert!(
        !g.up
            && g.error
                .as_deref()
                .unwrap_or("")
                .contains("not Prometheus text"),
        "{g:?}"
    );
    let started = Instant::now();
    let s = ScrapeSource::scrape_once(&registry, &b);
    assert!(!s.up, "{s:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout held: {:?}",
        started.elapsed()
    );
    let snap = registry.snapshot();
    let ga = garbage.to_string();
    let si = silent_addr.to_string();
    assert_eq!(mirrored(&snap, "up", &[], "garbage", &ga), Some(0.0));
    assert_eq!(mirrored(&snap, "up", &[], "silent", &si), Some(0.0));
}

/// A service instrumented with sonde, served by sonde's own `/metrics` (OpenMetrics, with
/// `# UNIT`, `_created` and exemplar-free buckets): every bucket, count and sum arrives exactly.
#[test]
fn a_sonde_service_is_mirrored_bucket_for_bucket() {
    let service = Registry::new();
    let h = seconds_histogram(&service, "http.server.request.duration", &["http.route"]);
    let c = service
        .counter("http.server.errors")
        .labels(["http.route"])
        .build()
        .unwrap();
    for i in 0..500u32 {
        h.with(&["/users/{id}"]).observe(f64::from(i % 97) / 1000.0);
        h.with(&["/orders"]).observe(f64::from(i % 13) / 10.0);
    }
    c.with(&["/orders"]).add(7);
    let server = sonde_prometheus::PrometheusBuilder::new()
        .registry(service.clone())
        .resource(
            sonde_core::Resource::empty()
                .with("service.name", "svc")
                .with("service.version", "1.4.0")
                .with("vcs.branch", "main"),
        )
        .bind("127.0.0.1:0".parse().unwrap())
        .install()
        .unwrap();
    let url = format!("http://{}/metrics", server.local_addr());
    let agent = Registry::new();
    let stats = ScrapeSource::scrape_once(&agent, &Target::new("svc", url.clone()));
    // The service's own sonde_* self-metrics render like the agent registry's: refused and
    // counted, the rest mirrored.
    assert!(stats.up, "{stats:?}");
    assert!(
        stats.refused.keys().all(|r| *r == "cannot_register"),
        "{stats:?}"
    );
    // The service's own exposition, parsed, against the agent's mirror.
    let direct = sonde_scrape::parse(
        &sonde_scrape::Request::new(&url, Duration::from_secs(5), "t")
            .max_body(1 << 26)
            .text()
            .unwrap(),
    )
    .unwrap();
    let fam = &direct.families["http_server_request_duration_seconds"];
    let snap = agent.snapshot();
    let inst = server.local_addr().to_string();
    for (labels, series) in &fam.series {
        let route = &labels.iter().find(|(k, _)| k == "http_route").unwrap().1;
        let mirrored = snap
            .point(
                "http_server_request_duration_seconds",
                &[("http_route", route), ("job", "svc"), ("instance", &inst)],
            )
            .unwrap()
            .histogram()
            .unwrap()
            .clone();
        let want: Vec<(f64, u64)> = series
            .buckets
            .iter()
            .map(|(le, n)| (*le, *n as u64))
            .collect();
        assert_eq!(mirrored.cumulative_buckets(), want, "{route}");
        assert_eq!(mirrored.count() as f64, series.count.unwrap());
        assert!((mirrored.sum() - series.sum.unwrap()).abs() < 1e-9);
    }
    let errors = &[("http_route", "/orders")];
    assert_eq!(
        mirrored(&snap, "http_server_errors", errors, "svc", &inst),
        Some(7.0)
    );
    // The service's target_info joins the agent's: job, instance and the kept attributes
    // (`vcs.branch` is not in the list), in one family next to the agent's own resource.
    assert_target_info(&snap, "svc", &inst, "1.4.0");
    let mut out = Vec::new();
    sonde_prometheus::encode_registry(
        &agent,
        Some(&sonde_core::Resource::empty().with("service.name", "agent")),
        sonde_prometheus::Format::Text,
        &mut out,
    );
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("# TYPE target_info").count(), 1, "{text}");
    assert!(
        text.contains(&format!(
            "target_info{{job=\"svc\",instance=\"{inst}\",service_version=\"1.4.0\","
        )),
        "{text}"
    );
    assert!(!text.contains("vcs_branch"), "{text}");
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

/// An OpenMetrics `info` family keeps its `_info` name when mirrored.
#[test]
fn openmetrics_info_families_keep_their_name() {
    let state = Arc::new(Mutex::new((
        200,
        "# TYPE build info\nbuild_info{version=\"1.2\"} 1\n\
         # TYPE target info\ntarget_info{service_version=\"3.0\",other=\"x\"} 1\n# EOF\n"
            .to_owned(),
    )));
    let addr = target(state);
    let registry = Registry::new();
    let stats = ScrapeSource::scrape_once(&registry, &Target::new("om", format!("http://{addr}/")));
    assert!(stats.up && stats.refused.is_empty(), "{stats:?}");
    let snap = registry.snapshot();
    let inst = addr.to_string();
    assert_eq!(
        mirrored(&snap, "build_info", &[("version", "1.2")], "om", &inst),
        Some(1.0)
    );
    assert_target_info(&snap, "om", &inst, "3.0");
}

/// An https target with a private CA: trusted through `ca_file`, refused without it, and
/// reachable without verification only when asked for.
#[test]
fn https_targets_are_verified_against_the_given_ca() {
    let state = Arc::new(Mutex::new((200, "# TYPE g gauge\ng 1\n".to_owned())));
    let plain = target(state);
    let proxy = sonde_tests::tls_proxy::TlsProxy::start(plain);
    let registry = Registry::new();
    let url = format!("https://127.0.0.1:{}/metrics", proxy.addr.port());
    let mut t = Target::new("tls", url);
    let untrusted = ScrapeSource::scrape_once(&registry, &t);
    assert!(
        !untrusted.up,
        "a self-signed target is refused by default: {untrusted:?}"
    );
    t.tls.ca_file = Some(proxy.ca_pem.clone());
    let trusted = ScrapeSource::scrape_once(&registry, &t);
    assert!(trusted.up, "{trusted:?}");
    t.tls = sonde_scrape::Tls {
        insecure_skip_verify: true,
        ..Default::default()
    };
    assert!(ScrapeSource::scrape_once(&registry, &t).up);
    // A CA file that is not PEM is an error before any connection.
    let bad = sonde_scrape::Tls {
        ca_file: Some(std::env::current_exe().unwrap()),
        ..Default::default()
    };
    assert!(
        bad.check()
            .unwrap_err()
            .to_string()
            .contains("no PEM certificate")
    );
}

/// A target that requires a client certificate (mutual TLS) is reached with one, and refuses
/// a scrape without it.
#[test]
fn client_certificates_reach_targets_that_require_them() {
    let state = Arc::new(Mutex::new((200, "# TYPE g gauge\ng 1\n".to_owned())));
    let proxy = sonde_tests::tls_proxy::TlsProxy::start_requiring_client_cert(target(state));
    let registry = Registry::new();
    let mut t = Target::new(
        "mtls",
        format!("https://127.0.0.1:{}/metrics", proxy.addr.port()),
    );
    t.tls.ca_file = Some(proxy.ca_pem.clone());
    let without = ScrapeSource::scrape_once(&registry, &t);
    assert!(!without.up, "{without:?}");
    t.tls.client_cert = proxy.client.clone();
    let with = ScrapeSource::scrape_once(&registry, &t);
    assert!(with.up, "{with:?}");
    assert_eq!(
        number(
            &registry.snapshot(),
            "g",
            &[
                ("job", "mtls"),
                ("instance", &format!("127.0.0.1:{}", proxy.addr.port()))
            ]
        ),
        Some(1.0)
    );
    // A key file without a key is an error before any connection.
    let (cert, _) = proxy.client.clone().unwrap();
    let bad = sonde_scrape::Tls {
        client_cert: Some((cert.clone(), cert)),
        ..Default::default()
    };
    assert!(
        bad.check()
            .unwrap_err()
            .to_string()
            .contains("no PEM private key"),
        "{:?}",
        bad.check()
    );
}

/// Native histograms from a real Prometheus: a sonde service's histogram, scraped by Prometheus
/// with native histograms on (stored natively, without classic buckets), read back from its
/// `/federate` in the protobuf format and mirrored onto sonde's grid: count and sum exact,
/// quantiles within the native buckets' resolution.
#[test]
fn native_histograms_from_prometheus_federation_are_mirrored() {
    let service = Registry::new();
    let h = seconds_histogram(&service, "rpc.duration", &[]).handle();
    // 1,000 values spread over four decades, 1 ms to 10 s.
    let mut values: Vec<f64> = (0..1000)
        .map(|i| 0.001 * 10f64.powf(4.0 * f64::from(i) / 999.0))
        .collect();
    for v in &values {
        h.observe(*v);
    }
    values.sort_by(f64::total_cmp);
    let server = sonde_prometheus::PrometheusBuilder::new()
        .registry(service.clone())
        .bind("127.0.0.1:0".parse().unwrap())
        .install()
        .unwrap();
    let prom = sonde_tests::prometheus::Prometheus::start(
        &[server.local_addr()],
        &[],
        &["--enable-feature=native-histograms"],
    );
    let got = prom.wait_for_series(
        "histogram_count(rpc_duration_seconds)",
        Duration::from_secs(30),
    );
    assert_eq!(got[0].value, 1000.0);
    let url = format!("http://{}/federate?match[]=rpc_duration_seconds", prom.addr);
    // What Prometheus federates is native only: a schema, spans, no classic buckets.
    let e = sonde_scrape::Request::new(&url, Duration::from_secs(5), "test")
        .max_body(1 << 26)
        .exposition(true)
        .unwrap();
    let series = e.families["rpc_duration_seconds"]
        .series
        .values()
        .next()
        .unwrap();
    let native = series.native.as_ref().expect("a native histogram");
    assert!(series.buckets.is_empty(), "{series:?}");
    assert!(!native.positive.is_empty(), "{native:?}");
    let agent = Registry::new();
    let target = Target::new("federate", url);
    let mut scraper = sonde_scrape::Scraper::new(&agent, target);
    let stats = scraper.scrape();
    assert!(stats.up && stats.refused.is_empty(), "{stats:?}");
    let snap = agent.snapshot();
    let fam = snap
        .family("rpc_duration_seconds")
        .unwrap_or_else(|| panic!("{snap:#?}"));
    let mirrored = fam.series[0].point.histogram().unwrap();
    assert_eq!(mirrored.count(), 1000);
    let sum: f64 = values.iter().sum();
    assert!(
        (mirrored.sum() - sum).abs() < 1e-6 * sum,
        "{} vs {sum}",
        mirrored.sum()
    );
    // Schema 3 buckets are 9 % wide: their middle is within 4.5 % of any value in them.
    for q in [0.5, 0.9, 0.99] {
        let exact = values[((q * 1000.0) as usize).min(999)];
        let read = mirrored.quantile(q).unwrap();
        assert!(
            (read - exact).abs() <= 0.05 * exact,
            "p{q}: {read} vs {exact}"
        );
    }
    // The next scrape adds what was observed since, and nothing twice.
    for _ in 0..10 {
        h.observe(20.0);
    }
    prom.wait_for_series(
        "histogram_count(rpc_duration_seconds) == 1010",
        Duration::from_secs(30),
    );
    assert!(scraper.scrape().up);
    let snap = agent.snapshot();
    let mirrored = snap.family("rpc_duration_seconds").unwrap().series[0]
        .point
        .histogram()
        .unwrap()
        .clone();
    assert_eq!(mirrored.count(), 1010);
    let top = mirrored.quantile(0.999).unwrap();
    assert!((top - 20.0).abs() <= 0.05 * 20.0, "{top}");
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

/// A target's `target_info` series that differ only in labels the shared family leaves out are
/// one series, kept scrape after scrape; when the target fails, its `target_info` goes too.
#[test]
fn target_info_series_are_kept_by_what_is_kept_and_removed_with_the_target() {
    let body = "# TYPE target_info gauge\n\
                target_info{service_version=\"1.0\",other=\"a\"} 1\n\
                target_info{service_version=\"1.0\",other=\"b\"} 1\n\
                # TYPE up_total counter\nup_total 1\n";
    let state = Arc::new(Mutex::new((200, body.to_owned())));
    let addr = target(state.clone());
    let registry = Registry::new();
    let mut scraper = sonde_scrape::Scraper::new(
        &registry,
        Target::new("info", format!("http://{addr}/metrics")),
    );
    let infos = |r: &Registry| {
        r.snapshot()
            .family("target_info")
            .map_or(0, |f| f.series.len())
    };
    for _ in 0..3 {
        assert!(scraper.scrape().up);
        assert_eq!(infos(&registry), 1);
        assert_eq!(
            target_info(&registry.snapshot(), "info")
                .iter()
                .find(|(k, _)| k == "service.version")
                .map(|(_, v)| v.as_str()),
            Some("1.0")
        );
    }
    state.lock().unwrap().0 = 500;
    assert!(!scraper.scrape().up);
    assert_eq!(
        infos(&registry),
        0,
        "a failed target's target_info is stale"
    );
}

/// `n` gauges named after `round`, as a target whose metric names change at every scrape.
fn rotating(round: usize, n: usize) -> String {
    (0..n).map(|i| format!("junk_{round}_{i} 1\n")).collect()
}

fn junk_families(registry: &Registry) -> usize {
    registry
        .family_names()
        .iter()
        .filter(|n| n.starts_with("junk_"))
        .count()
}

/// A target serving `body` (changed with [`rescrape`]) and a scraper of it as `job` into
/// `registry` that scrapes only when asked; with the target's `instance`.
fn scraped(
    registry: &Registry,
    job: &str,
    body: &str,
    sample_limit: usize,
) -> (Arc<Mutex<(u16, String)>>, String, Scraper) {
    let state = Arc::new(Mutex::new((200, body.to_owned())));
    let addr = target(state.clone());
    let mut t = Target::new(job, format!("http://{addr}/metrics"));
    t.sample_limit = sample_limit;
    (state, addr.to_string(), Scraper::new(registry, t))
}

/// Has the target answer `body` from now on, and scrapes it once.
fn rescrape(state: &Mutex<(u16, String)>, scraper: &mut Scraper, body: String) -> ScrapeStats {
    *state.lock().unwrap() = (200, body);
    scraper.scrape()
}

/// The number the unlabelled series `name` of the target `job`/`instance` is mirrored as now.
fn mirrored_now(registry: &Registry, name: &str, job: &str, instance: &str) -> Option<f64> {
    mirrored(&registry.snapshot(), name, &[], job, instance)
}

fn registered(registry: &Registry, name: &str) -> bool {
    registry.family_names().iter().any(|n| n == name)
}

#[test]
fn a_target_whose_names_change_at_every_scrape_holds_only_its_latest_names() {
    let registry = Registry::with_budget(2000, sonde_core::MemoryBudget::new(100_000, 64 << 20));
    let (state, inst, mut scraper) = scraped(&registry, "junk", &rotating(0, 200), 50_000);
    assert!(scraper.scrape().up);
    let used_after_one = registry.budget_used().unwrap();
    for round in 1..=5 {
        let stats = rescrape(&state, &mut scraper, rotating(round, 200));
        assert!(stats.up, "{stats:?}");
        assert_eq!(stats.series, 200);
        // The names of earlier rounds are gone from the registry, not only their series.
        assert_eq!(junk_families(&registry), 200, "round {round}");
        let name = |r: usize| format!("junk_{r}_0");
        assert_eq!(
            mirrored_now(&registry, &name(round), "junk", &inst),
            Some(1.0)
        );
        assert!(!registered(&registry, &name(round - 1)));
    }
    // What the budget holds does not grow with the rounds.
    assert_eq!(registry.budget_used().unwrap(), used_after_one);
    // A failed scrape removes the target's series, and the families with them.
    *state.lock().unwrap() = (500, String::new());
    assert!(!scraper.scrape().up);
    assert_eq!(junk_families(&registry), 0);
}

#[test]
fn a_family_two_targets_fill_stays_while_one_of_them_still_does() {
    let body = "# TYPE node_load1 gauge\nnode_load1 0.5\n\
                # TYPE node_boot_time_seconds gauge\nnode_boot_time_seconds 100\n";
    let without_load = body.replace("node_load1 0.5\n", "");
    let registry = Registry::new();
    let (a, inst_a, mut scraper_a) = scraped(&registry, "node", body, 50_000);
    let (b, inst_b, mut scraper_b) = scraped(&registry, "node", body, 50_000);
    assert!(scraper_a.scrape().up && scraper_b.scrape().up);
    // A stops exposing node_load1: its series goes, B's stays (the family is B's too).
    assert!(rescrape(&a, &mut scraper_a, without_load.clone()).up);
    assert_eq!(mirrored_now(&registry, "node_load1", "node", &inst_a), None);
    assert_eq!(
        mirrored_now(&registry, "node_load1", "node", &inst_b),
        Some(0.5)
    );
    // B stops too: the family is given back; then B exposes it again and it is registered anew.
    assert!(rescrape(&b, &mut scraper_b, without_load).up);
    assert!(!registered(&registry, "node_load1"));
    assert!(rescrape(&b, &mut scraper_b, body.replace("0.5", "0.75")).up);
    assert_eq!(
        mirrored_now(&registry, "node_load1", "node", &inst_b),
        Some(0.75)
    );
    // A, whose handle on the old family was dropped with the name, follows into the new one.
    assert!(rescrape(&a, &mut scraper_a, body.replace("0.5", "0.25")).up);
    assert_eq!(
        mirrored_now(&registry, "node_load1", "node", &inst_a),
        Some(0.25)
    );
}

#[test]
fn a_family_given_back_while_a_target_held_it_is_registered_again() {
    // B holds the family with no series of its own (all its samples refused), A gives it back,
    // then B's samples become good: B must not write into the removed family.
    let registry = Registry::new();
    let temp = |v: &str| format!("# TYPE temp gauge\ntemp {v}\n");
    let (a, _, mut scraper_a) = scraped(&registry, "a", &temp("20"), 50_000);
    let (b, inst_b, mut scraper_b) = scraped(&registry, "b", &temp("NaN"), 50_000);
    assert!(scraper_a.scrape().up);
    assert_eq!(scraper_b.scrape().refused.get("bad_value"), Some(&1));
    assert!(rescrape(&a, &mut scraper_a, String::new()).up);
    assert!(!registered(&registry, "temp"));
    assert!(rescrape(&b, &mut scraper_b, temp("21")).up);
    assert_eq!(mirrored_now(&registry, "temp", "b", &inst_b), Some(21.0));
}

#[test]
fn a_scrape_over_its_sample_limit_fails_whole_and_mirrors_nothing() {
    // 3 gauges and a histogram of 2 buckets (+ _sum and _count): 7 samples.
    let body = "g1 1\ng2 2\ng3 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n\
                h_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n";
    let registry = Registry::new();
    let (state, inst, mut scraper) = scraped(&registry, "big", body, 6);
    let stats = scraper.scrape();
    assert!(!stats.up);
    assert_eq!(stats.refused.get("sample_limit"), Some(&1));
    let error = stats.error.unwrap();
    assert!(
        error.contains("exposed more than 6 samples") && error.contains("sample_limit"),
        "{error}"
    );
    let snap = registry.snapshot();
    let up = number(&snap, "up", &[("job", "big"), ("instance", &inst)]);
    assert_eq!(up, Some(0.0));
    let refused = [("job", "big"), ("reason", "sample_limit")];
    assert_eq!(number(&snap, "sonde.scrape.refused", &refused), Some(1.0));
    assert!(snap.family("g1").is_none() && snap.family("h").is_none());
    drop(snap);
    // Within the limit, all of it.
    let stats = rescrape(&state, &mut scraper, body.replace("g3 3\n", ""));
    assert!(stats.up, "{stats:?}");
    assert_eq!(mirrored_now(&registry, "g1", "big", &inst), Some(1.0));
}

#[test]
fn new_names_wait_while_the_memory_budget_is_full() {
    // Room for the target's own up/duration/samples series and two more.
    let registry = Registry::with_budget(2000, sonde_core::MemoryBudget::new(5, 64 << 20));
    let (state, inst, mut scraper) = scraped(&registry, "t", "a 1\nb 2\nc 3\nd 4\n", 50_000);
    let stats = scraper.scrape();
    assert!(stats.up);
    assert_eq!(stats.refused.get("budget"), Some(&2), "{stats:?}");
    // A name is mirrored whole or not registered at all: no family is left holding only an
    // overflow series.
    assert_eq!(mirrored_now(&registry, "a", "t", &inst), Some(1.0));
    assert_eq!(mirrored_now(&registry, "b", "t", &inst), Some(2.0));
    assert!(!registered(&registry, "c") && !registered(&registry, "d"));
    // Room again (the target drops two names): the others get in at the next scrape.
    rescrape(&state, &mut scraper, "c 3\nd 4\n".to_owned());
    let stats = scraper.scrape();
    assert!(stats.refused.is_empty(), "{stats:?}");
    assert_eq!(mirrored_now(&registry, "c", "t", &inst), Some(3.0));
    assert_eq!(mirrored_now(&registry, "d", "t", &inst), Some(4.0));
}
