//! End-to-end tests of the OTLP metrics exporter and the tracing pipeline against the OTLP test
//! receiver (real gRPC and HTTP servers on loopback built from opentelemetry-proto).

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogramDataPoint, HistogramDataPoint, NumberDataPoint, metric::Data,
    number_data_point,
};
use sonde::otlp::traces::TracesBuilder;
use sonde::otlp::{Compression, HistogramAggregation, OtlpMetricsBuilder, OtlpTransport, Protocol};
use sonde::{Registry, Resource, Temporality, TraceContext};
use sonde_tests::fixtures::counter_per_id;
use sonde_tests::otlp::{
    ExportMetricsServiceRequest, Fault, OtlpReceiver, Signal, Transport, attrs, find_metrics,
    resource_attrs,
};
use sonde_tests::self_metric;

type Attrs = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Attrs {
    let mut v: Attrs = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

fn endpoint(rx: &OtlpReceiver, protocol: Protocol) -> String {
    match protocol {
        Protocol::Grpc => rx.grpc_endpoint(),
        Protocol::HttpProtobuf => rx.http_endpoint(),
    }
}

/// A transport to `rx` over `protocol`, for a test to add its settings to.
fn transport(rx: &OtlpReceiver, protocol: Protocol) -> OtlpTransport {
    OtlpTransport::new()
        .endpoint(endpoint(rx, protocol))
        .protocol(protocol)
}

/// Runs `check` over gRPC, then over HTTP, against one receiver cleared before each.
fn over_both_transports(mut check: impl FnMut(&OtlpReceiver, Protocol)) {
    let rx = OtlpReceiver::start();
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        rx.clear();
        check(&rx, protocol);
    }
}

/// An exporter that reads no environment variable and collects only when asked.
fn builder(reg: &Registry, rx: &OtlpReceiver, protocol: Protocol) -> OtlpMetricsBuilder {
    OtlpMetricsBuilder::new()
        .registry(reg.clone())
        .environment(|_| None)
        .transport(transport(rx, protocol))
        .resource(Resource::empty().with("service.name", "otlp-test"))
        .interval(Duration::from_secs(3600))
}

fn number(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        Some(number_data_point::Value::AsDouble(d)) => d,
        None => f64::NAN,
    }
}

/// Every number point of `name`: (attributes, value, temporality (0 for gauges), monotonic).
fn numbers(reqs: &[ExportMetricsServiceRequest], name: &str) -> Vec<(Attrs, f64, i32, bool)> {
    let mut out = Vec::new();
    for m in find_metrics(reqs, name) {
        match &m.data {
            Some(Data::Sum(s)) => {
                for p in &s.data_points {
                    out.push((
                        attrs(&p.attributes),
                        number(p),
                        s.aggregation_temporality,
                        s.is_monotonic,
                    ));
                }
            }
            Some(Data::Gauge(g)) => {
                for p in &g.data_points {
                    out.push((attrs(&p.attributes), number(p), 0, false));
                }
            }
            _ => {}
        }
    }
    out
}

fn last_number(reqs: &[ExportMetricsServiceRequest], name: &str, l: &[(&str, &str)]) -> f64 {
    let want = labels(l);
    numbers(reqs, name)
        .into_iter()
        .rev()
        .find(|(a, ..)| *a == want)
        .map(|(_, v, ..)| v)
        .unwrap_or_else(|| panic!("no point of {name} {want:?}"))
}

fn histograms(
    reqs: &[ExportMetricsServiceRequest],
    name: &str,
) -> Vec<(Attrs, i32, HistogramDataPoint)> {
    let mut out = Vec::new();
    for m in find_metrics(reqs, name) {
        if let Some(Data::Histogram(h)) = &m.data {
            for p in &h.data_points {
                out.push((attrs(&p.attributes), h.aggregation_temporality, p.clone()));
            }
        }
    }
    out
}

fn exponentials(
    reqs: &[ExportMetricsServiceRequest],
    name: &str,
) -> Vec<(Attrs, ExponentialHistogramDataPoint)> {
    let mut out = Vec::new();
    for m in find_metrics(reqs, name) {
        if let Some(Data::ExponentialHistogram(h)) = &m.data {
            for p in &h.data_points {
                out.push((attrs(&p.attributes), p.clone()));
            }
        }
    }
    out
}

fn metric_attempts(rx: &OtlpReceiver) -> Vec<sonde_tests::otlp::Attempt> {
    rx.attempts()
        .into_iter()
        .filter(|a| a.signal == Signal::Metrics)
        .collect()
}

const TRACE: TraceContext = TraceContext {
    trace_id: [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ],
    span_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
};

#[test]
fn recorded_values_arrive_intact_over_grpc_and_http() {
    let rx = OtlpReceiver::start();
    for (protocol, compression) in [
        (Protocol::Grpc, Compression::None),
        (Protocol::Grpc, Compression::Gzip),
        (Protocol::HttpProtobuf, Compression::None),
        (Protocol::HttpProtobuf, Compression::Gzip),
    ] {
        rx.clear();
        let reg = Registry::new();
        let requests =
            sonde::testing::labelled_counter(&reg, "http.server.requests", &["route", "code"]);
        requests.with(&["/users/:id", "200"]).add(41);
        requests.with(&["/users/:id", "500"]).add(2);
        reg.counter_f64("work.seconds")
            .build()
            .unwrap()
            .handle()
            .add(1.25);
        reg.gauge("queue.depth").build().unwrap().handle().set(-7);
        reg.gauge_f64("temperature")
            .build()
            .unwrap()
            .handle()
            .set(21.5);
        let inflight = reg.up_down_counter("inflight").build().unwrap().handle();
        inflight.add(5);
        inflight.add(-2);
        let latency = sonde::testing::exemplar_histogram(&reg, "rpc.duration", &[0.1, 0.5, 1.0]);
        for v in [0.05, 0.2, 0.3, 0.7, 3.0] {
            latency.observe(v);
        }
        latency.observe_with_exemplar(0.4, &TRACE);
        let exporter = builder(&reg, &rx, protocol)
            .transport(
                transport(&rx, protocol)
                    .compression(compression)
                    .header("x-tenant", "checkout"),
            )
            .install()
            .unwrap();
        exporter.flush(Duration::from_secs(10)).unwrap();
        let reqs = rx.metrics();
        let label = format!("{protocol:?} {compression:?}");
        assert!(!reqs.is_empty(), "{label}");

        let rm = &reqs[0].resource_metrics[0];
        let resource = resource_attrs(rm.resource.as_ref());
        assert!(resource.contains(&("service.name".into(), "otlp-test".into())));
        assert_eq!(rm.scope_metrics[0].scope.as_ref().unwrap().name, "sonde");

        let at = |name: &str, l: &[(&str, &str)]| last_number(&reqs, name, l);
        assert_eq!(
            at(
                "http.server.requests",
                &[("route", "/users/:id"), ("code", "200")]
            ),
            41.0
        );
        assert_eq!(
            at(
                "http.server.requests",
                &[("route", "/users/:id"), ("code", "500")]
            ),
            2.0
        );
        assert_eq!(at("work.seconds", &[]), 1.25);
        assert_eq!(at("queue.depth", &[]), -7.0);
        assert_eq!(at("temperature", &[]), 21.5);
        assert_eq!(at("inflight", &[]), 3.0);
        let kinds = |name: &str| {
            let (_, _, t, mono) = numbers(&reqs, name).pop().unwrap();
            (t, mono)
        };
        assert_eq!(kinds("http.server.requests"), (2, true), "{label}");
        assert_eq!(kinds("inflight"), (2, false), "{label}");
        assert_eq!(kinds("queue.depth"), (0, false), "{label}");

        let (_, temporality, h) = histograms(&reqs, "rpc.duration").pop().unwrap();
        assert_eq!(temporality, 2);
        assert_eq!(h.explicit_bounds, vec![0.1, 0.5, 1.0]);
        assert_eq!(h.bucket_counts, vec![1, 3, 1, 1], "{label}");
        assert_eq!(h.count, 6);
        assert!((h.sum.unwrap() - 4.65).abs() < 1e-9);
        assert_eq!(h.min, Some(0.05));
        assert_eq!(h.max, Some(3.0));
        assert!(h.start_time_unix_nano > 0 && h.start_time_unix_nano <= h.time_unix_nano);
        let m = find_metrics(&reqs, "rpc.duration").pop().unwrap();
        assert_eq!(m.unit, "s");
        assert_eq!(h.exemplars.len(), 1, "{label}");
        assert_eq!(h.exemplars[0].trace_id, TRACE.trace_id.to_vec());
        assert_eq!(h.exemplars[0].span_id, TRACE.span_id.to_vec());

        let attempts = metric_attempts(&rx);
        assert!(
            attempts
                .iter()
                .all(|a| a.header("x-tenant") == Some("checkout"))
        );
        assert!(
            attempts
                .iter()
                .all(|a| a.gzip == (compression == Compression::Gzip)),
            "{label}"
        );
        let want = match protocol {
            Protocol::Grpc => Transport::Grpc,
            Protocol::HttpProtobuf => Transport::Http,
        };
        assert!(attempts.iter().all(|a| a.transport == want));
        exporter.shutdown(Duration::from_secs(5)).unwrap();
    }
}

#[test]
fn exponential_histograms_put_each_observation_in_its_bucket() {
    let rx = OtlpReceiver::start();
    let reg = Registry::new();
    let h = reg
        .histogram("payload.size")
        .unit(sonde::Unit::Bytes)
        .labels(["kind"])
        .build()
        .unwrap();
    let values = [3.0, 1000.0, 1000.5, 65_536.0, 1.0e6];
    for v in values {
        h.with(&["upload"]).observe(v);
    }
    let exporter = builder(&reg, &rx, Protocol::Grpc)
        .histograms(HistogramAggregation::Exponential)
        .install()
        .unwrap();
    exporter.flush(Duration::from_secs(10)).unwrap();
    let (a, p) = exponentials(&rx.metrics(), "payload.size").pop().unwrap();
    assert_eq!(a, labels(&[("kind", "upload")]));
    assert_eq!(p.count, values.len() as u64);
    let positive = p.positive.as_ref().unwrap();
    assert_eq!(
        p.zero_count + positive.bucket_counts.iter().sum::<u64>(),
        p.count
    );
    assert_eq!(p.min, Some(3.0));
    assert_eq!(p.max, Some(1.0e6));
    assert!((p.sum.unwrap() - values.iter().sum::<f64>()).abs() < 1e-6);
    // Bucket i of scale s holds (2^(i/2^s), 2^((i+1)/2^s)]; values at or below the zero
    // threshold (the bottom of the family's grid, 16 bytes) count as zero.
    assert_eq!(p.zero_threshold, 16.0);
    assert_eq!(p.zero_count, 1);
    let mut expected = std::collections::BTreeMap::new();
    for v in values.into_iter().filter(|v| *v > p.zero_threshold) {
        let index = (v.log2() * 2f64.powi(p.scale)).ceil() as i32 - 1;
        *expected.entry(index).or_insert(0u64) += 1;
    }
    let got: std::collections::BTreeMap<i32, u64> = positive
        .bucket_counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, c)| (positive.offset + i as i32, *c))
        .collect();
    assert_eq!(got, expected, "scale {}", p.scale);
    assert!(p.scale >= 3, "scale {}", p.scale);
}

#[test]
fn delta_and_cumulative_agree_across_intervals() {
    let rx = OtlpReceiver::start();
    let reg = Registry::new();
    let c = reg.counter("jobs").labels(["queue"]).build().unwrap();
    let h = reg
        .histogram("job.duration")
        .buckets([0.01, 0.1, 1.0])
        .build()
        .unwrap()
        .handle();
    let level = reg.up_down_counter("workers").build().unwrap().handle();
    let cumulative = builder(&reg, &rx, Protocol::Grpc).install().unwrap();
    let delta = builder(&reg, &rx, Protocol::HttpProtobuf)
        .temporality(Temporality::Delta)
        .install()
        .unwrap();
    let mut total = [0u64; 2];
    let mut level_now = 0i64;
    for round in 1..=5u64 {
        for (i, q) in ["fast", "slow"].into_iter().enumerate() {
            let n = round * (i as u64 + 2);
            c.with(&[q]).add(n);
            total[i] += n;
        }
        for k in 0..round {
            h.observe(0.005 * (k as f64 + 1.0) * round as f64);
        }
        let change = if round % 2 == 0 { -3 } else { 5 };
        level.add(change);
        level_now += change;
        cumulative.flush(Duration::from_secs(10)).unwrap();
        delta.flush(Duration::from_secs(10)).unwrap();

        let reqs = rx.metrics();
        for (i, q) in ["fast", "slow"].into_iter().enumerate() {
            let points: Vec<_> = numbers(&reqs, "jobs")
                .into_iter()
                .filter(|(a, ..)| *a == labels(&[("queue", q)]))
                .collect();
            let deltas: f64 = points.iter().filter(|p| p.2 == 1).map(|p| p.1).sum();
            let last_cumulative = points.iter().rev().find(|p| p.2 == 2).unwrap().1;
            assert_eq!(deltas, total[i] as f64, "round {round} {q}");
            assert_eq!(last_cumulative, total[i] as f64, "round {round} {q}");
            assert_eq!(points.iter().filter(|p| p.2 == 1).count() as u64, round);
        }
        // Up-down counters stay cumulative under the delta preference.
        for (_, v, t, mono) in numbers(&reqs, "workers").into_iter().rev().take(2) {
            assert_eq!((v, t, mono), (level_now as f64, 2, false), "round {round}");
        }
        let hs = histograms(&reqs, "job.duration");
        let last = hs.iter().rev().find(|p| p.1 == 2).unwrap();
        let mut summed = vec![0u64; 4];
        let (mut count, mut sum) = (0, 0.0);
        for (_, _, p) in hs.iter().filter(|p| p.1 == 1) {
            for (s, c) in summed.iter_mut().zip(&p.bucket_counts) {
                *s += c;
            }
            count += p.count;
            sum += p.sum.unwrap();
        }
        assert_eq!(summed, last.2.bucket_counts, "round {round}");
        assert_eq!(count, last.2.count);
        assert!((sum - last.2.sum.unwrap()).abs() < 1e-9);
        // Each delta point starts where the previous one ended.
        let deltas: Vec<_> = hs.iter().filter(|p| p.1 == 1).map(|p| &p.2).collect();
        for w in deltas.windows(2) {
            assert_eq!(w[1].start_time_unix_nano, w[0].time_unix_nano);
        }
    }
}

#[test]
fn only_retryable_answers_are_retried() {
    over_both_transports(|rx, protocol| {
        let reg = Registry::new();
        reg.counter("ticks").build().unwrap().handle().inc();
        let exporter = builder(&reg, rx, protocol)
            .backoff(Duration::from_millis(10), Duration::from_millis(20))
            .transport(transport(rx, protocol).timeout(Duration::from_millis(300)))
            .install()
            .unwrap();
        let retries =
            |reg: &Registry| self_metric(reg, sonde::otlp::RETRIES, &[("exporter", "otlp")]);
        let dropped = |reg: &Registry, reason: &str| {
            self_metric(
                reg,
                sonde::otlp::DROPPED_POINTS,
                &[("exporter", "otlp"), ("reason", reason)],
            )
        };

        // Retryable: UNAVAILABLE/503, RESOURCE_EXHAUSTED with RetryInfo/429, ABORTED/502, a hang.
        rx.script([
            Fault::Unavailable { retry_after: None },
            Fault::Throttled {
                retry_after: Some(Duration::from_millis(400)),
            },
            Fault::Status {
                grpc: 10,
                http: 502,
            },
            Fault::Hang(Duration::from_secs(2)),
            Fault::Ok,
        ]);
        exporter.flush(Duration::from_secs(20)).unwrap();
        let attempts = metric_attempts(rx);
        assert_eq!(attempts.len(), 5, "{protocol:?}");
        assert_eq!(rx.metrics().len(), 1);
        assert_eq!(retries(&reg), 4.0);
        // The server's delay is honoured (HTTP Retry-After is whole seconds, rounded up).
        let waited = attempts[2].at - attempts[1].at;
        assert!(
            waited >= Duration::from_millis(400),
            "{protocol:?} {waited:?}"
        );

        // Not retryable: INVALID_ARGUMENT/400, INTERNAL/500, and over gRPC RESOURCE_EXHAUSTED
        // without RetryInfo.
        let mut fatal = vec![
            Fault::Invalid,
            Fault::Status {
                grpc: 13,
                http: 500,
            },
        ];
        if protocol == Protocol::Grpc {
            fatal.push(Fault::Throttled { retry_after: None });
        }
        for fault in fatal {
            rx.clear();
            rx.script([fault.clone()]);
            let before = dropped(&reg, "rejected");
            let e = exporter.flush(Duration::from_secs(10)).unwrap_err();
            assert!(e.to_string().contains("dropped"), "{e}");
            assert_eq!(metric_attempts(rx).len(), 1, "{protocol:?} {fault:?}");
            assert!(dropped(&reg, "rejected") > before);
        }
        assert_eq!(retries(&reg), 4.0, "{protocol:?}");
        // HTTP 429 without Retry-After is retried with backoff.
        if protocol == Protocol::HttpProtobuf {
            rx.clear();
            rx.script([Fault::Throttled { retry_after: None }, Fault::Ok]);
            exporter.flush(Duration::from_secs(10)).unwrap();
            assert_eq!(metric_attempts(rx).len(), 2);
        }
        exporter.shutdown(Duration::from_secs(5)).unwrap();
    });
}

#[test]
fn partial_success_is_counted_as_rejected_points() {
    let rx = OtlpReceiver::start();
    let reg = Registry::new();
    reg.counter("ticks").build().unwrap().handle().inc();
    let exporter = builder(&reg, &rx, Protocol::Grpc).install().unwrap();
    rx.script([Fault::PartialSuccess {
        rejected: 3,
        message: "3 points had bad units".into(),
    }]);
    exporter.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(
        self_metric(&reg, sonde::otlp::REJECTED_POINTS, &[("exporter", "otlp")]),
        3.0
    );
    assert_eq!(metric_attempts(&rx).len(), 1);
    let mut out = Vec::new();
    sonde::prometheus::encode(
        &reg.snapshot(),
        None,
        sonde::prometheus::Format::Text,
        &mut out,
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("sonde_exporter_rejected_points_total{exporter=\"otlp\"} 3"),
        "{text}"
    );
}

#[test]
fn large_collections_are_split_into_bounded_requests() {
    let rx = OtlpReceiver::start();
    let reg = Registry::with_max_series(100_000);
    counter_per_id(&reg, "series", 5000, |i| i);
    let exporter = builder(&reg, &rx, Protocol::Grpc)
        .max_points_per_request(1000)
        .install()
        .unwrap();
    exporter.flush(Duration::from_secs(20)).unwrap();
    let reqs = rx.metrics();
    assert!(reqs.len() >= 5, "{}", reqs.len());
    let points = numbers(&reqs, "series");
    assert_eq!(points.len(), 5000);
    for (a, v, ..) in &points {
        assert_eq!(a[0].1.parse::<f64>().unwrap(), *v);
    }
    rx.clear();
    let exporter = builder(&reg, &rx, Protocol::HttpProtobuf)
        .max_request_bytes(64 * 1024)
        .install()
        .unwrap();
    exporter.flush(Duration::from_secs(20)).unwrap();
    let reqs = rx.metrics();
    assert!(reqs.len() >= 4, "{}", reqs.len());
    assert_eq!(numbers(&reqs, "series").len(), 5000);
    for a in metric_attempts(&rx) {
        assert!(a.body_bytes <= 64 * 1024, "{}", a.body_bytes);
    }
}

#[test]
fn shutdown_and_drop_deliver_the_last_interval() {
    let rx = OtlpReceiver::start();
    let reg = Registry::new();
    let c = reg.counter("last").build().unwrap().handle();
    let exporter = builder(&reg, &rx, Protocol::HttpProtobuf)
        .temporality(Temporality::Delta)
        .install()
        .unwrap();
    c.add(9);
    exporter.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(last_number(&rx.metrics(), "last", &[]), 9.0);
    assert!(exporter.flush(Duration::from_secs(1)).is_err());
    assert!(exporter.shutdown(Duration::from_secs(1)).is_ok());

    rx.clear();
    let exporter = builder(&reg, &rx, Protocol::Grpc).install().unwrap();
    c.add(1);
    drop(exporter);
    assert_eq!(last_number(&rx.metrics(), "last", &[]), 10.0);
}

#[test]
fn configuration_comes_from_the_standard_variables() {
    let rx = OtlpReceiver::start();
    let reg = Registry::new();
    reg.counter("from.env").build().unwrap().handle().add(4);
    let base = rx.http_endpoint();
    let exporter = OtlpMetricsBuilder::new()
        .registry(reg.clone())
        .environment(move |k| {
            Some(
                match k {
                    "OTEL_EXPORTER_OTLP_ENDPOINT" => base.as_str(),
                    "OTEL_EXPORTER_OTLP_HEADERS" => "x-tenant=a%20b,authorization=Bearer%20t",
                    "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION" => "gzip",
                    "OTEL_SERVICE_NAME" => "from-env",
                    "OTEL_RESOURCE_ATTRIBUTES" => "deployment.environment.name=test",
                    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE" => "Delta",
                    "OTEL_METRIC_EXPORT_INTERVAL" => "100",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .install()
        .unwrap();
    assert!(exporter.endpoint().ends_with("/v1/metrics"));
    assert!(rx.wait_for_metrics(Duration::from_secs(10), |r| r.len() >= 2));
    let a = &metric_attempts(&rx)[0];
    assert_eq!(a.transport, Transport::Http);
    assert!(a.gzip);
    assert_eq!(a.header("x-tenant"), Some("a b"));
    assert_eq!(a.header("authorization"), Some("Bearer t"));
    let reqs = rx.metrics();
    let resource = resource_attrs(reqs[0].resource_metrics[0].resource.as_ref());
    let get = |k: &str| {
        resource
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("service.name"), Some("from-env"));
    assert_eq!(get("deployment.environment.name"), Some("test"));
    assert!(get("host.name").is_some());
    assert_eq!(
        get("process.pid"),
        Some(std::process::id().to_string().as_str())
    );
    let (_, v, temporality, _) = numbers(&reqs, "from.env")[0].clone();
    assert_eq!((v, temporality), (4.0, 1));
    drop(exporter);

    // The signal-specific variable and an explicit setting beat the generic ones.
    rx.clear();
    let grpc = rx.grpc_endpoint();
    let exporter = OtlpMetricsBuilder::new()
        .registry(reg.clone())
        .environment(move |k| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://127.0.0.1:9".into()),
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" => Some(grpc.clone()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".into()),
            "OTEL_EXPORTER_OTLP_COMPRESSION" => Some("gzip".into()),
            _ => None,
        })
        .transport(OtlpTransport::new().compression(Compression::None))
        .interval(Duration::from_secs(3600))
        .install()
        .unwrap();
    exporter.flush(Duration::from_secs(10)).unwrap();
    let a = &metric_attempts(&rx)[0];
    assert_eq!((a.transport, a.gzip), (Transport::Grpc, false));

    // An unusable variable is warned about and its default used, as the specification asks:
    // the exporter still starts.
    let (exporter, lines) = sonde::testing::capture_diagnostics(|| {
        OtlpMetricsBuilder::new()
            .registry(reg)
            .environment(|k| (k == "OTEL_METRIC_EXPORT_INTERVAL").then(|| "1m".to_string()))
            .install()
    });
    let exporter = exporter.unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("WARN OTEL_METRIC_EXPORT_INTERVAL=\"1m\" is ignored")),
        "{lines:?}"
    );
    // Nothing listens on the default endpoint: the last interval cannot be delivered.
    let _ = exporter.shutdown(Duration::from_millis(200));
}

#[test]
fn nothing_is_lost_across_a_30s_outage_with_default_settings() {
    let rx = OtlpReceiver::start();
    let reg = Registry::new();
    let c = reg.counter("orders").build().unwrap().handle();
    let h = reg.histogram("order.duration").build().unwrap().handle();
    // Default queue, retry and backoff settings; a short interval so the outage spans many
    // collections, and deltas so any lost request shows.
    let exporter = OtlpMetricsBuilder::new()
        .registry(reg.clone())
        .environment(|_| None)
        .transport(OtlpTransport::new().endpoint(rx.http_endpoint()))
        .resource(Resource::empty())
        .temporality(Temporality::Delta)
        .interval(Duration::from_millis(500))
        .install()
        .unwrap();
    rx.set_default(Fault::Unavailable { retry_after: None });
    let start = Instant::now();
    let mut total = 0u64;
    while start.elapsed() < Duration::from_secs(30) {
        c.add(3);
        h.observe(0.02);
        total += 3;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rx.metrics().is_empty());
    let failed = metric_attempts(&rx).len();
    assert!(failed >= 5, "{failed} attempts during the outage");
    rx.set_default(Fault::Ok);
    exporter.shutdown(Duration::from_secs(30)).unwrap();
    let reqs = rx.metrics();
    let delivered: f64 = numbers(&reqs, "orders").iter().map(|p| p.1).sum();
    assert_eq!(delivered, total as f64);
    let observed: u64 = histograms(&reqs, "order.duration")
        .iter()
        .map(|p| p.2.count)
        .sum();
    assert_eq!(observed * 3, total);
    for reason in ["queue_full", "retries_exhausted", "shutdown", "rejected"] {
        assert_eq!(
            self_metric(
                &reg,
                sonde::otlp::DROPPED_POINTS,
                &[("exporter", "otlp"), ("reason", reason)]
            ),
            0.0,
            "{reason}"
        );
    }
}

#[test]
fn memory_stays_bounded_through_a_long_outage_and_drops_are_counted() {
    let rx = OtlpReceiver::start();
    let reg = Registry::new();
    let c = reg.counter("events").labels(["n"]).build().unwrap();
    for i in 0..50 {
        c.with(&[&i.to_string()]).inc();
    }
    let exporter = builder(&reg, &rx, Protocol::Grpc)
        .temporality(Temporality::Delta)
        .interval(Duration::from_millis(20))
        .queue_capacity(5, 64 * 1024 * 1024)
        .backoff(Duration::from_millis(10), Duration::from_millis(40))
        .install()
        .unwrap();
    rx.set_default(Fault::Unavailable { retry_after: None });
    let start = Instant::now();
    let mut max_queue = 0.0f64;
    while start.elapsed() < Duration::from_secs(4) {
        c.with(&["0"]).inc();
        max_queue = max_queue.max(self_metric(
            &reg,
            sonde::telemetry::QUEUE_SIZE,
            &[("exporter", "otlp")],
        ));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(max_queue <= 6.0, "queue grew to {max_queue}");
    assert!(max_queue >= 5.0, "the queue never filled ({max_queue})");
    let dropped = self_metric(
        &reg,
        sonde::otlp::DROPPED_POINTS,
        &[("exporter", "otlp"), ("reason", "queue_full")],
    );
    assert!(dropped > 100.0, "{dropped}");
    // Once the receiver is back, what is queued arrives.
    rx.set_default(Fault::Ok);
    assert!(rx.wait_for_metrics(Duration::from_secs(10), |r| r.len() >= 5));
    drop(exporter);
}

#[test]
fn spans_arrive_over_both_transports_and_exemplars_point_to_them() {
    over_both_transports(|rx, protocol| {
        let reg = Registry::new();
        let pipeline = TracesBuilder::new()
            .environment(|_| None)
            .transport(transport(rx, protocol).compression(Compression::Gzip))
            .resource(Resource::empty().with("service.name", "traced"))
            .registry(reg.clone())
            .build()
            .unwrap();
        tracing::subscriber::with_default(pipeline.subscriber().unwrap(), || {
            let span = tracing::info_span!(
                "GET /users/:id",
                http.request.method = "GET",
                http.route = "/users/:id",
                http.response.status_code = 200
            );
            span.in_scope(|| {
                tracing::info_span!(
                    "SELECT users",
                    db.system.name = "sqlite",
                    db.operation.name = "SELECT",
                    db.collection.name = "users"
                )
                .in_scope(|| std::thread::sleep(Duration::from_millis(2)));
            });
        });
        pipeline.flush(std::time::Duration::from_secs(5)).unwrap();
        let traces = rx.traces();
        let spans: Vec<_> = traces
            .iter()
            .flat_map(|t| &t.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"GET /users/:id"), "{protocol:?} {names:?}");
        assert!(names.contains(&"SELECT users"), "{protocol:?} {names:?}");
        let server = spans.iter().find(|s| s.name == "GET /users/:id").unwrap();
        let db = spans.iter().find(|s| s.name == "SELECT users").unwrap();
        assert_eq!(server.trace_id, db.trace_id);
        assert_eq!(db.parent_span_id, server.span_id);
        let resource = resource_attrs(traces[0].resource_spans[0].resource.as_ref());
        assert!(resource.contains(&("service.name".into(), "traced".into())));
        assert!(
            rx.attempts()
                .iter()
                .filter(|a| a.signal == Signal::Traces)
                .all(|a| a.gzip)
        );

        // The latency metrics of the same spans, exported over OTLP, carry the trace ids.
        let exporter = builder(&reg, rx, protocol).install().unwrap();
        exporter.flush(Duration::from_secs(10)).unwrap();
        let reqs = rx.metrics();
        for (name, span) in [
            ("http.server.request.duration", server),
            ("db.client.operation.duration", db),
        ] {
            let (_, _, p) = histograms(&reqs, name).pop().unwrap();
            assert_eq!(p.count, 1, "{name}");
            assert_eq!(p.exemplars.len(), 1, "{name}");
            assert_eq!(p.exemplars[0].trace_id, span.trace_id, "{name}");
            assert_eq!(p.exemplars[0].span_id, span.span_id, "{name}");
        }
        pipeline
            .shutdown(std::time::Duration::from_secs(5))
            .unwrap();
    });
}

#[test]
fn each_lambda_invocation_is_delivered_before_the_handler_returns() {
    use sonde::instrument::{Faas, Trigger};
    let rx = OtlpReceiver::start();
    let reg = Registry::new();
    let faas = Faas::install(&reg).unwrap();
    let exporter = std::sync::Arc::new(
        builder(&reg, &rx, Protocol::HttpProtobuf)
            .temporality(Temporality::Delta)
            .install()
            .unwrap(),
    );
    faas.flush_through(exporter.clone(), Duration::from_secs(5));
    for (i, cold) in [(1u32, "true"), (2, "false")] {
        let out: Result<u32, ()> = faas.invoke(Trigger::Http, || Ok(i));
        assert_eq!(out, Ok(i));
        // No waiting: the handler returned after the request was answered.
        let reqs = rx.metrics();
        let invocations: f64 = numbers(&reqs, "faas.invocations")
            .iter()
            .filter(|(a, ..)| a.contains(&("faas.coldstart".into(), cold.into())))
            .map(|p| p.1)
            .sum();
        assert_eq!(invocations, 1.0, "invocation {i}");
    }
    exporter.shutdown(Duration::from_secs(2)).unwrap();
}

#[test]
fn the_example_service_instrumentation_arrives_with_conventional_names_and_units() {
    let rx = OtlpReceiver::start();
    let reg = Registry::new();
    let exporter = builder(&reg, &rx, Protocol::Grpc)
        .histograms(HistogramAggregation::Exponential)
        .install()
        .unwrap();
    sonde_tests::example::run_workload(&reg, Duration::from_millis(1200));
    exporter.flush(Duration::from_secs(10)).unwrap();
    let reqs = rx.metrics();
    for (name, unit) in [
        ("http.server.request.duration", "s"),
        ("http.client.request.duration", "s"),
        ("db.client.operation.duration", "s"),
    ] {
        let m = find_metrics(&reqs, name);
        assert!(!m.is_empty(), "{name} missing");
        assert_eq!(m[0].unit, unit, "{name}");
        let points = exponentials(&reqs, name);
        assert!(points.iter().any(|(_, p)| p.count > 0), "{name}");
    }
    let routes: Vec<_> = exponentials(&reqs, "http.server.request.duration")
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert!(
        routes
            .iter()
            .all(|a| a.iter().any(|(k, _)| k == "http.route")),
        "{routes:?}"
    );
    assert!(!numbers(&reqs, "cache.requests").is_empty());
    assert!(!numbers(&reqs, "db.client.connection.count").is_empty());
}

#[test]
fn tls_over_both_transports_with_a_private_ca() {
    use sonde_tests::tls_proxy::TlsProxy;
    let upstream = |endpoint: String| -> std::net::SocketAddr {
        endpoint.trim_start_matches("http://").parse().unwrap()
    };
    over_both_transports(|rx, protocol| {
        let proxy = TlsProxy::start(upstream(endpoint(rx, protocol)));
        let url = format!("https://localhost:{}", proxy.addr.port());
        let reg = Registry::new();
        reg.counter("secure.requests")
            .build()
            .unwrap()
            .handle()
            .add(2);
        // Trusting the proxy's certificate: delivered.
        let exporter = builder(&reg, rx, protocol)
            .transport(
                OtlpTransport::new()
                    .endpoint(url.clone())
                    .protocol(protocol)
                    .ca_certificate(&proxy.ca_pem),
            )
            .install()
            .unwrap();
        exporter.flush(Duration::from_secs(10)).unwrap();
        assert_eq!(
            last_number(&rx.metrics(), "secure.requests", &[]),
            2.0,
            "{protocol:?}"
        );
        exporter.shutdown(Duration::from_secs(5)).unwrap();
        // With the system's roots only, the self-signed certificate is refused: nothing arrives.
        rx.clear();
        let exporter = builder(&reg, rx, protocol)
            .transport(OtlpTransport::new().endpoint(url).protocol(protocol))
            .max_retry_time(Duration::from_millis(500))
            .backoff(Duration::from_millis(10), Duration::from_millis(20))
            .install()
            .unwrap();
        let e = exporter.flush(Duration::from_secs(10)).unwrap_err();
        assert!(e.to_string().contains("dropped"), "{protocol:?}: {e}");
        assert!(rx.metrics().is_empty());
    });
}
