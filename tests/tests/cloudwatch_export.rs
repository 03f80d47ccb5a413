//! End-to-end tests of the CloudWatch exporter (through the real AWS SDK, against the test
//! endpoint speaking Smithy RPC v2 CBOR and validating every documented limit) and of the EMF
//! writer (documents checked line by line).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sonde::cloudwatch::datum::MAX_REQUEST_BYTES;
use sonde::cloudwatch::{CloudWatchBuilder, Destination, EmfBuilder, EmfWriter, cost_preview};
use sonde::{Registry, Resource, Unit};
use sonde_tests::cloudwatch::{CloudWatchEndpoint, CwFault, Datum};
use sonde_tests::fixtures::counter_per_id;
use sonde_tests::{TempDir, self_metric};

fn builder(reg: &Registry, cw: &CloudWatchEndpoint) -> CloudWatchBuilder {
    cw.exporter("sonde-test", reg)
        .resource(Resource::empty().with("service.name", "checkout"))
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
}

fn dims(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("service.name".to_string(), "checkout".to_string())])
        .collect();
    v.sort();
    v
}

fn find<'a>(datums: &'a [(String, Datum)], name: &str, d: &[(&str, &str)]) -> Vec<&'a Datum> {
    let want = dims(d);
    datums
        .iter()
        .map(|(_, d)| d)
        .filter(|x| {
            let mut have = x.dimensions.clone();
            have.sort();
            x.metric_name == name && have == want
        })
        .collect()
}

#[test]
fn datums_carry_what_was_recorded() {
    let cw = CloudWatchEndpoint::start();
    let reg = Registry::new();
    let requests = sonde::testing::labelled_counter(&reg, "http.server.requests", &["http.route"]);
    requests.with(&["/users/:id"]).add(40);
    reg.gauge("queue.depth").build().unwrap().handle().set(12);
    let latency =
        sonde::testing::seconds_histogram(&reg, "http.server.request.duration", &["http.route"])
            .with(&["/users/:id"]);
    let observed: Vec<f64> = (0..500).map(|i| 0.001 + 0.0007 * f64::from(i)).collect();
    for v in &observed {
        latency.observe(*v);
    }
    let exporter = builder(&reg, &cw).install().unwrap();
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    exporter.flush(Duration::from_secs(10)).unwrap();
    let datums = cw.datums();
    assert!(datums.iter().all(|(ns, _)| ns == "sonde-test"));

    let c = find(
        &datums,
        "http.server.requests",
        &[("http.route", "/users/:id")],
    );
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].value, Some(40.0));
    assert_eq!(c[0].unit.as_deref(), Some("Count"));
    assert_eq!(c[0].storage_resolution, Some(60));
    let ts = c[0].timestamp.unwrap();
    assert!((ts - before).abs() < 5.0, "{ts} vs {before}");
    assert_eq!(find(&datums, "queue.depth", &[])[0].value, Some(12.0));

    let h = find(
        &datums,
        "http.server.request.duration",
        &[("http.route", "/users/:id")],
    );
    assert_eq!(h.len(), 1, "one datum per histogram series");
    let h = h[0];
    assert_eq!(h.unit.as_deref(), Some("Seconds"));
    assert!(h.values.len() <= 150 && h.values.len() == h.counts.len());
    assert_eq!(h.counts.iter().sum::<f64>(), 500.0);
    let min = h.values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = h.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(min, observed[0]);
    assert_eq!(max, *observed.last().unwrap());
    let sum: f64 = h.values.iter().zip(&h.counts).map(|(v, c)| v * c).sum();
    let exact: f64 = observed.iter().sum();
    assert!((sum / exact - 1.0).abs() < 0.015, "{sum} vs {exact}");
    // Percentiles CloudWatch computes from the pairs stay within the grid's error.
    let mut sorted = observed.clone();
    sorted.sort_by(f64::total_cmp);
    let mut pairs: Vec<(f64, f64)> = h
        .values
        .iter()
        .copied()
        .zip(h.counts.iter().copied())
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut seen = 0.0;
    let p95 = pairs
        .iter()
        .find(|(_, c)| {
            seen += c;
            seen >= 475.0
        })
        .unwrap()
        .0;
    assert!(
        (p95 / sorted[474] - 1.0).abs() < 0.02,
        "{p95} vs {}",
        sorted[474]
    );

    // The next interval carries the change only.
    cw.clear();
    requests.with(&["/users/:id"]).add(5);
    exporter.flush(Duration::from_secs(10)).unwrap();
    let datums = cw.datums();
    assert_eq!(
        find(
            &datums,
            "http.server.requests",
            &[("http.route", "/users/:id")]
        )[0]
        .value,
        Some(5.0)
    );
    assert!(
        find(
            &datums,
            "http.server.request.duration",
            &[("http.route", "/users/:id")]
        )
        .is_empty(),
        "an empty histogram interval sends nothing"
    );
    assert!(
        self_metric(
            &reg,
            sonde::telemetry::SENT_POINTS,
            &[("exporter", "cloudwatch")]
        ) > 0.0
    );
    exporter.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn ten_thousand_series_go_out_in_the_fewest_valid_requests() {
    let cw = CloudWatchEndpoint::start();
    let reg = Registry::with_max_series(100_000);
    counter_per_id(&reg, "jobs", 8000, |i| i + 1);
    let h = reg
        .histogram("job.duration")
        .unit(Unit::Seconds)
        .labels(["queue"])
        .max_series(20_000)
        .build()
        .unwrap();
    for i in 0..2000u32 {
        let s = h.with(&[&format!("q{i}")]);
        for k in 0..20 {
            s.observe(0.001 * f64::from(k + 1) * f64::from(i % 7 + 1));
        }
    }
    let settings = CloudWatchBuilder::new("x").settings().clone();
    let resource = Resource::empty().with("service.name", "checkout");
    let preview = cost_preview(&reg, &resource, &settings, Duration::from_secs(60));
    let exporter = builder(&reg, &cw).install().unwrap();
    exporter.flush(Duration::from_secs(60)).unwrap();
    let attempts = cw.attempts();
    assert!(
        attempts.iter().all(|a| a.status == 200),
        "{:?}",
        attempts.iter().find(|a| a.status != 200)
    );
    let requests = cw.requests();
    let datums: usize = requests.iter().map(|r| r.datums.len()).sum();
    assert!(datums >= 10_000);
    let bytes: usize = requests.iter().map(|r| r.uncompressed_bytes).sum();
    // No fewer requests are possible than the datum limit and the byte limit each force.
    let lower = datums.div_ceil(1000).max(bytes.div_ceil(MAX_REQUEST_BYTES));
    assert!(
        requests.len() <= lower + 1,
        "{} requests for {datums} datums, {bytes} bytes (lower bound {lower})",
        requests.len()
    );
    for r in &requests {
        assert!(r.datums.len() <= 1000 && r.uncompressed_bytes <= MAX_REQUEST_BYTES);
    }
    assert!(
        requests.iter().any(|r| r.gzip),
        "large bodies are compressed"
    );
    // Every series arrived with its value.
    let all = cw.datums();
    let jobs: BTreeMap<String, f64> = all
        .iter()
        .filter(|(_, d)| d.metric_name == "jobs")
        .map(|(_, d)| {
            let id = d
                .dimensions
                .iter()
                .find(|(k, _)| k == "id")
                .unwrap()
                .1
                .clone();
            (id, d.value.unwrap())
        })
        .collect();
    assert_eq!(jobs.len(), 8000);
    assert!(
        jobs.iter()
            .all(|(id, v)| id.parse::<f64>().unwrap() + 1.0 == *v)
    );
    // The cost preview predicted this interval.
    assert_eq!(preview.requests_per_interval, requests.len());
    let metrics: BTreeSet<(String, Vec<(String, String)>)> = all
        .iter()
        .map(|(_, d)| {
            let mut dims = d.dimensions.clone();
            dims.sort();
            (d.metric_name.clone(), dims)
        })
        .collect();
    assert_eq!(preview.metrics, metrics.len());
    exporter.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn throttling_and_faults_are_retried_and_nothing_is_lost() {
    let cw = CloudWatchEndpoint::start();
    let reg = Registry::new();
    let c = reg.counter("orders").build().unwrap().handle();
    c.add(7);
    let exporter = builder(&reg, &cw).install().unwrap();
    cw.script([
        CwFault::Throttling,
        CwFault::InternalServiceFault,
        CwFault::Unavailable,
        CwFault::Throttling,
    ]);
    exporter.flush(Duration::from_secs(20)).unwrap();
    let attempts = cw.attempts();
    assert_eq!(attempts.len(), 5);
    assert_eq!(attempts[0].error_code.as_deref(), Some("Throttling"));
    assert_eq!(attempts[1].status, 500);
    assert_eq!(attempts[4].status, 200);
    assert_eq!(find(&cw.datums(), "orders", &[])[0].value, Some(7.0));
    assert_eq!(
        self_metric(
            &reg,
            sonde::telemetry::RETRIES,
            &[("exporter", "cloudwatch")]
        ),
        4.0
    );
    // A longer throttling episode across several intervals: every change arrives once.
    cw.clear();
    cw.set_default(CwFault::Throttling);
    for _ in 0..3 {
        c.add(1);
        let _ = exporter.flush(Duration::from_millis(200));
    }
    cw.set_default(CwFault::Ok);
    exporter.shutdown(Duration::from_secs(20)).unwrap();
    let delivered: f64 = find(&cw.datums(), "orders", &[])
        .iter()
        .map(|d| d.value.unwrap())
        .sum();
    assert_eq!(delivered, 3.0);
}

#[test]
fn invalid_values_are_never_sent_and_are_counted() {
    let cw = CloudWatchEndpoint::start();
    let reg = Registry::new();
    let g = reg.gauge_f64("reading").labels(["sensor"]).build().unwrap();
    g.with(&["nan"]).set(f64::NAN);
    g.with(&["inf"]).set(f64::INFINITY);
    g.with(&["huge"]).set(1e200);
    g.with(&["ok"]).set(1.5);
    g.with(&["ünïcode"]).set(2.5);
    g.with(&[""]).set(3.5);
    let labels: Vec<String> = (0..31).map(|i| format!("l{i}")).collect();
    let wide = reg.counter("wide").labels(labels.clone()).build().unwrap();
    let values: Vec<String> = (0..31).map(|i| format!("v{i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    wide.with(&refs).inc();
    let exporter = builder(&reg, &cw).install().unwrap();
    exporter.flush(Duration::from_secs(10)).unwrap();
    assert!(cw.attempts().iter().all(|a| a.status == 200));
    let datums = cw.datums();
    let readings: Vec<_> = datums
        .iter()
        .filter(|(_, d)| d.metric_name == "reading")
        .collect();
    assert_eq!(readings.len(), 3, "{readings:?}");
    assert!(readings.iter().all(|(_, d)| d.value.unwrap().is_finite()));
    assert_eq!(
        find(&datums, "reading", &[("sensor", "_n_code")])[0].value,
        Some(2.5)
    );
    // An empty label value leaves that dimension out.
    assert_eq!(find(&datums, "reading", &[])[0].value, Some(3.5));
    assert!(datums.iter().all(|(_, d)| d.metric_name != "wide"));
    let dropped = |reason: &str| {
        self_metric(
            &reg,
            sonde::telemetry::DROPPED_POINTS,
            &[("exporter", "cloudwatch"), ("reason", reason)],
        )
    };
    assert_eq!(dropped("invalid_value"), 3.0);
    assert_eq!(dropped("too_many_dimensions"), 1.0);
    // With the label denied, the wide counter fits.
    cw.clear();
    wide.with(&refs).inc();
    let exporter2 = builder(&reg, &cw)
        .deny_dimensions(["l0", "l1"])
        .install()
        .unwrap();
    exporter2.flush(Duration::from_secs(10)).unwrap();
    assert!(cw.datums().iter().any(|(_, d)| d.metric_name == "wide"));
}

#[test]
fn rollups_aggregate_across_dropped_labels() {
    let cw = CloudWatchEndpoint::start();
    let reg = Registry::new();
    let c = sonde::testing::labelled_counter(&reg, "requests", &["route", "code"]);
    c.with(&["/a", "200"]).add(3);
    c.with(&["/a", "500"]).add(1);
    c.with(&["/b", "200"]).add(6);
    let h = sonde::testing::seconds_histogram(&reg, "latency", &["route"]);
    h.with(&["/a"]).observe(0.1);
    h.with(&["/b"]).observe(0.2);
    h.with(&["/b"]).observe(0.3);
    let exporter = builder(&reg, &cw)
        .full_dimensions(false)
        .rollup(["route"])
        .rollup(Vec::<String>::new())
        .install()
        .unwrap();
    exporter.flush(Duration::from_secs(10)).unwrap();
    let datums = cw.datums();
    assert_eq!(
        find(&datums, "requests", &[("route", "/a")])[0].value,
        Some(4.0)
    );
    assert_eq!(find(&datums, "requests", &[])[0].value, Some(10.0));
    assert!(find(&datums, "requests", &[("route", "/a"), ("code", "200")]).is_empty());
    let all = find(&datums, "latency", &[]);
    assert_eq!(all[0].counts.iter().sum::<f64>(), 3.0);
}

#[test]
fn shutdown_flushes_the_last_interval() {
    let cw = CloudWatchEndpoint::start();
    let reg = Registry::new();
    let exporter = builder(&reg, &cw).install().unwrap();
    reg.counter("last").build().unwrap().handle().add(2);
    exporter.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(find(&cw.datums(), "last", &[])[0].value, Some(2.0));
    // A missing region is a clear error at install.
    let e = CloudWatchBuilder::new("ns/ok")
        .registry(Registry::new())
        .endpoint_url(cw.url())
        .credentials("a", "b")
        .region("")
        .install();
    assert!(e.is_err());
    let e = CloudWatchBuilder::new("AWS/EC2")
        .registry(Registry::new())
        .install()
        .unwrap_err();
    assert!(e.to_string().contains("AWS/"), "{e}");
}

/// An EMF writer of `reg`'s metrics under `namespace`, to `destination`, with `resource`.
fn emf_writer(
    namespace: &str,
    reg: &Registry,
    destination: Destination,
    resource: Resource,
) -> EmfWriter {
    EmfBuilder::new(namespace)
        .registry(reg.clone())
        .destination(destination)
        .resource(resource)
        .build()
        .unwrap()
}

/// Checks one EMF document against the specification and the limits; returns it parsed.
fn check_emf(line: &str, max_bytes: usize) -> Value {
    assert!(line.len() < max_bytes, "document of {} bytes", line.len());
    let doc: Value = serde_json::from_str(line).unwrap();
    let aws = &doc["_aws"];
    assert!(aws["Timestamp"].as_u64().unwrap() > 1_600_000_000_000);
    let directives = aws["CloudWatchMetrics"].as_array().unwrap();
    assert!(!directives.is_empty());
    for d in directives {
        assert!(!d["Namespace"].as_str().unwrap().is_empty());
        for set in d["Dimensions"].as_array().unwrap() {
            let keys = set.as_array().unwrap();
            assert!(keys.len() <= 30);
            for k in keys {
                let k = k.as_str().unwrap();
                assert!(doc[k].is_string(), "dimension {k} is not a string member");
            }
        }
        let metrics = d["Metrics"].as_array().unwrap();
        assert!(!metrics.is_empty() && metrics.len() <= 100);
        for m in metrics {
            let name = m["Name"].as_str().unwrap();
            let v = &doc[name];
            match v {
                Value::Number(_) => {}
                Value::Array(a) => {
                    assert!(
                        !a.is_empty() && a.len() <= 100,
                        "{name}: {} values",
                        a.len()
                    );
                    assert!(a.iter().all(Value::is_number));
                }
                other => panic!("metric {name} is {other:?}"),
            }
            assert!(m["Unit"].is_string());
            assert!(matches!(m["StorageResolution"].as_i64(), Some(1 | 60)));
        }
    }
    doc
}

fn emf_values(docs: &[Value], name: &str) -> Vec<f64> {
    docs.iter()
        .flat_map(|d| match &d[name] {
            Value::Number(n) => vec![n.as_f64().unwrap()],
            Value::Array(a) => a.iter().map(|v| v.as_f64().unwrap()).collect(),
            _ => vec![],
        })
        .collect()
}

#[test]
fn emf_documents_are_valid_line_by_line_and_respect_every_limit() {
    let dir = TempDir::new("emf");
    let path = dir.0.join("emf.log");
    let reg = Registry::new();
    // 150 metrics sharing one dimension set: more than a document holds.
    for i in 0..150 {
        reg.counter(format!("ops.kind{i}"))
            .labels(["route"])
            .build()
            .unwrap()
            .with(&["/a"])
            .add(i + 1);
    }
    let h = sonde::testing::seconds_histogram(&reg, "op.duration", &["route"]).with(&["/a"]);
    for i in 0..350 {
        h.observe(0.001 * f64::from(i % 37 + 1));
    }
    let writer = emf_writer(
        "sonde-emf",
        &reg,
        Destination::File(path.clone()),
        Resource::empty().with("service.name", "fn"),
    );
    let n = writer.write_now().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), n);
    let docs: Vec<Value> = lines.iter().map(|l| check_emf(l, 256 * 1024)).collect();
    assert!(docs.len() >= 4, "{} documents", docs.len());
    let total: f64 = (0..150)
        .map(|i| emf_values(&docs, &format!("ops.kind{i}"))[0])
        .sum();
    assert_eq!(total, (1..=150).sum::<u64>() as f64);
    let latencies = emf_values(&docs, "op.duration");
    assert_eq!(latencies.len(), 350, "each observation once");
    assert!(
        docs.iter()
            .all(|d| d["service.name"] == "fn" && d["route"] == "/a")
    );
    // Unchanged since: nothing more to write.
    assert_eq!(writer.write_now().unwrap(), 0);
}

#[test]
fn emf_reaches_the_agent_over_udp_and_tcp() {
    let reg = Registry::new();
    let c = reg.counter("beats").build().unwrap().handle();
    // UDP: one document per datagram, each under the datagram budget.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let writer = emf_writer(
        "sonde-emf",
        &reg,
        Destination::parse(&format!("udp://{}", udp.local_addr().unwrap())).unwrap(),
        Resource::empty(),
    );
    c.add(3);
    assert_eq!(writer.write_now().unwrap(), 1);
    let mut buf = vec![0u8; 70_000];
    let n = udp.recv(&mut buf).unwrap();
    let doc = check_emf(std::str::from_utf8(&buf[..n]).unwrap(), 60 * 1024);
    assert_eq!(doc["beats"].as_f64(), Some(3.0));
    // TCP: newline-delimited on one connection, reused across flushes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let writer = emf_writer("sonde-emf", &reg, Destination::Tcp(addr), Resource::empty());
    c.add(4);
    writer.write_now().unwrap();
    c.add(5);
    writer.write_now().unwrap();
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let mut got = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        got.push(
            check_emf(line.trim_end(), 256 * 1024)["beats"]
                .as_f64()
                .unwrap(),
        );
    }
    // A new writer's first document holds everything since the series began (3 + 4).
    assert_eq!(got, vec![7.0, 5.0]);
    // A destination nobody listens on is an error that names it, and is counted.
    drop(reader);
    drop(listener);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let writer = emf_writer("sonde-emf", &reg, Destination::Tcp(dead), Resource::empty());
    c.add(1);
    let e = writer.write_now().unwrap_err();
    assert!(e.to_string().contains(&dead.to_string()), "{e}");
    assert!(Destination::parse("http://x").is_err());
}

#[test]
fn each_lambda_invocation_writes_its_emf_before_returning() {
    use sonde::instrument::{Faas, Trigger};
    let dir = TempDir::new("emf-lambda");
    let path = dir.0.join("stdout.log");
    let reg = Registry::new();
    let faas = Faas::install(&reg).unwrap();
    let writer = Arc::new(emf_writer(
        "sonde-lambda",
        &reg,
        Destination::File(path.clone()),
        Resource::empty().with("service.name", "resize"),
    ));
    faas.flush_through(writer, Duration::from_secs(1));
    for i in 1..=2u32 {
        let out: Result<u32, ()> = faas.invoke(Trigger::Http, || Ok(i));
        assert_eq!(out, Ok(i));
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = text.lines().map(|l| check_emf(l, 256 * 1024)).collect();
        let invocations: f64 = emf_values(&docs, "faas.invocations").iter().sum();
        assert_eq!(invocations, f64::from(i), "after invocation {i}");
    }
}
