//! The agent's ways in, 10k data points each, in one criterion run (wall time per 10k points
//! on this machine, the client side included where there is one):
//!
//! - `otlp_http`: one OTLP/HTTP request (8,000 cumulative sum points over 100 metrics, 2,000
//!   explicit-bucket histogram points over 20 metrics), protobuf pre-encoded, POSTed over a
//!   kept-alive loopback connection to `sonde-otlp-receiver`, decoded and recorded;
//! - `scrape`: a 10k-series Prometheus text target (8,000 counter series, 2,000 gauges) served
//!   from memory on loopback, fetched, parsed and mirrored into a registry by `sonde-scrape`;
//! - `statsd`: 10k StatsD lines parsed and recorded by the agent's StatsD ingest (no socket),
//!   the agent's own path for comparison;
//! - `scrape_protobuf`: the `scrape` target in the protobuf format, fetched, decoded and
//!   mirrored the same way.
//!
//! The OpenTelemetry Collector would be the peer; it is not in Debian, PyPI, npm or crates.io
//! (only its Go API sources are, `golang-opentelemetry-otel-dev`), so it is not run here.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use sonde::Registry;
use sonde_scrape::{Scraper, Target};
use sonde_statsd::Ingest;

fn kv(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..KeyValue::default()
    }
}

/// 8,000 sum points and 2,000 histogram points.
fn otlp_request() -> ExportMetricsServiceRequest {
    let mut metrics = Vec::new();
    for m in 0..100 {
        let data_points = (0..80)
            .map(|s| NumberDataPoint {
                attributes: vec![kv("route", format!("/r{s}")), kv("code", "200".into())],
                start_time_unix_nano: 1,
                time_unix_nano: 2,
                value: Some(number_data_point::Value::AsDouble((m * s) as f64)),
                ..NumberDataPoint::default()
            })
            .collect();
        metrics.push(Metric {
            name: format!("bench.requests.{m}"),
            data: Some(Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Metric::default()
        });
    }
    let bounds = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
    for m in 0..20 {
        let data_points = (0..100)
            .map(|s| HistogramDataPoint {
                attributes: vec![kv("route", format!("/r{s}"))],
                start_time_unix_nano: 1,
                time_unix_nano: 2,
                count: 55,
                sum: Some(12.5),
                bucket_counts: (0..=10).collect(),
                explicit_bounds: bounds.clone(),
                ..HistogramDataPoint::default()
            })
            .collect();
        metrics.push(Metric {
            name: format!("bench.duration.{m}"),
            unit: "s".into(),
            data: Some(Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Metric::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "bench".into())],
                ..Resource::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

/// 8,000 counter series and 2,000 gauges in Prometheus text.
fn exposition() -> String {
    let mut s = String::new();
    for m in 0..100 {
        s.push_str(&format!("# TYPE bench_requests_{m}_total counter\n"));
        for i in 0..80 {
            s.push_str(&format!(
                "bench_requests_{m}_total{{route=\"/r{i}\",code=\"200\"}} {}\n",
                m * i
            ));
        }
    }
    for m in 0..20 {
        s.push_str(&format!("# TYPE bench_queue_{m} gauge\n"));
        for i in 0..100 {
            s.push_str(&format!("bench_queue_{m}{{pool=\"p{i}\"}} {i}.5\n"));
        }
    }
    s
}

/// The same 10,000 series in Prometheus's protobuf format, as sonde's exporter encodes them
/// (counters and gauges of a registry; its own few `sonde_*` families come along).
fn exposition_protobuf() -> Vec<u8> {
    let registry = Registry::new();
    for m in 0..100 {
        let f = registry
            .counter(format!("bench.requests.{m}"))
            .labels(["route", "code"])
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..80 {
            f.with(&[format!("/r{i}").as_str(), "200"]).add(m * i);
        }
    }
    for m in 0..20 {
        let f = registry
            .gauge_f64(format!("bench.queue.{m}"))
            .labels(["pool"])
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..100 {
            f.with(&[format!("p{i}").as_str()]).set(f64::from(i) + 0.5);
        }
    }
    let mut out = Vec::new();
    sonde::prometheus::encode_protobuf(&registry.snapshot(), None, &mut out);
    out
}

/// Serves `body` to every request, one connection at a time.
fn serve(body: String) -> SocketAddr {
    serve_bytes(body.into_bytes(), "text/plain; version=0.0.4")
}

/// Serves `body` as `content_type` to every request, one connection at a time.
fn serve_bytes(body: Vec<u8>, content_type: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let Ok(clone) = conn.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(clone);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    addr
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sources");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(20);

    let registry = Registry::new();
    let receiver = sonde_otlp_receiver::OtlpReceiverBuilder::new()
        .http("127.0.0.1:0")
        .registry(registry.clone())
        .start()
        .unwrap_or_else(|e| panic!("receiver: {e}"));
    let url = format!(
        "http://{}/v1/metrics",
        receiver.http_addr().unwrap_or_else(|| panic!("no address"))
    );
    let body = otlp_request().encode_to_vec();
    // reqwest is built without a default TLS crypto provider in this workspace (plain http here).
    #[allow(deprecated)] // ring: the workspace's one TLS stack
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"));
    let post = || {
        let r = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
            .unwrap_or_else(|e| panic!("post: {e}"));
        assert!(r.status().is_success(), "{}", r.status());
        let _ = r.bytes();
    };
    post();
    g.bench_function("otlp_http", |b| b.iter(post));

    let target = Target::new("bench", format!("http://{}/metrics", serve(exposition())));
    // The steady state: one scraper kept across scrapes, as a scrape source's thread does.
    let mut scraper = Scraper::new(&Registry::new(), target);
    let first = scraper.scrape();
    assert_eq!(first.series, 10_000, "{:?}", first.error);
    g.bench_function("scrape", |b| b.iter(|| black_box(scraper.scrape())));

    let target = Target::new(
        "bench",
        format!(
            "http://{}/metrics",
            serve_bytes(
                exposition_protobuf(),
                sonde::prometheus::proto::CONTENT_TYPE
            )
        ),
    );
    let mut scraper = Scraper::new(&Registry::new(), target);
    let first = scraper.scrape();
    assert!(first.series >= 10_000, "{first:?}");
    g.bench_function("scrape_protobuf", |b| {
        b.iter(|| black_box(scraper.scrape()))
    });

    let lines: Vec<Vec<u8>> = (0..10_000)
        .map(|i| {
            format!(
                "bench.requests.{}:1|c|#route:/r{},code:200\n",
                i % 100,
                i % 80
            )
            .into_bytes()
        })
        .collect::<Vec<_>>()
        .chunks(30)
        .map(|c| c.concat())
        .collect();
    let mut ingest = Ingest::new(Registry::new());
    for p in &lines {
        ingest.ingest_packet(p);
    }
    g.bench_function("statsd", |b| {
        b.iter(|| {
            for p in &lines {
                black_box(ingest.ingest_packet(p));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
