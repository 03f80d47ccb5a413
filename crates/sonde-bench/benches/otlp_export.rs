//! OTLP export of 10k series per interval, sonde and the OpenTelemetry SDK side by side in one
//! criterion run: `cargo bench -p sonde-bench --bench otlp_export`.
//!
//! Both sides hold the same data, recorded once before timing ([`SERIES`] series):
//!
//! - [`COUNTERS`] monotonic `u64` counter series, one family `bench.requests{id}`, `id` =
//!   `"0"`..`"7999"`, value `3 * id + 1`;
//! - [`HISTOGRAMS`] histogram series, one family `bench.duration{route}` (unit `s`), `route` =
//!   `"/r/0"`..`"/r/1999"`, the explicit bounds of [`BOUNDS`] on both sides, [`OBSERVATIONS`]
//!   observations each (the same values on both sides).
//!
//! Each iteration is one full cumulative export of all of them over OTLP HTTP/protobuf to a
//! loopback sink, waiting until the sink has answered:
//!
//! - `sonde`: `sonde::otlp::OtlpMetricsExporter::force_flush` (collect, convert, encode, POST on
//!   the exporter's own thread and runtime, async reqwest), with the builder's defaults (at most
//!   10,000 points per request, so the collection leaves as two requests);
//! - `opentelemetry_sdk`: `SdkMeterProvider::force_flush` over a `PeriodicReader` (its own
//!   thread) and `opentelemetry_otlp::MetricExporter` with HTTP/protobuf on blocking reqwest (the
//!   client that opentelemetry-otlp's default features select), cumulative temporality, one
//!   request per export.
//!
//! Both exporters have an interval of one hour, so only the benchmark's flushes export. Both
//! send the resource `service.name=bench` and nothing else; neither compresses.
//!
//! The sink ([`Sink`], one per side, the same code) is a hand-written HTTP/1.1 responder on
//! `std::net`, one thread per connection with keep-alive: it reads the request head and the
//! whole body (`Content-Length` or chunked) into nothing, counts requests and bytes, and
//! answers `200 OK`, `Content-Type: application/x-protobuf`, empty body (which decodes as an
//! `ExportMetricsServiceResponse` without partial success).
//!
//! Two groups:
//!
//! - `otlp_export_10k`: wall time per export;
//! - `otlp_export_10k_cpu`: process CPU time per export (`CLOCK_PROCESS_CPUTIME_ID` through the
//!   `cpu-time` crate, [`ProcessCpu`]), since the work happens on exporter threads and the
//!   calling thread only waits. It includes the sink's reading and discarding of the request
//!   bytes, the same code for both sides.
//!
//! Before timing, one export of each side is captured by the sink, decoded with
//! `opentelemetry-proto` and checked: 8,000 counter points with the same sum, 2,000 histogram
//! points with the same count and bucket counts on both sides. The request count and bytes per
//! export are printed. sonde also exports its own exporter self-metrics
//! (`sonde.exporter.*{exporter="otlp"}`, registered in the exported registry), printed too.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
use opentelemetry_sdk::metrics::{
    Instrument, PeriodicReader, SdkMeterProvider, Stream, Temporality,
};
use prost::Message as _;
use sonde_bench::ProcessCpu;

/// Counter series.
const COUNTERS: usize = 8_000;
/// Histogram series.
const HISTOGRAMS: usize = 2_000;
/// Series per export.
const SERIES: usize = COUNTERS + HISTOGRAMS;
/// Observations per histogram series.
const OBSERVATIONS: usize = 5;
/// Explicit histogram bounds, the same on both sides.
const BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Exporter interval: long enough that only the benchmark's flushes export.
const INTERVAL: Duration = Duration::from_secs(3600);
/// Deadline of one flush.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// The value of counter series `id`.
fn counter_value(id: usize) -> u64 {
    3 * id as u64 + 1
}

/// The observations of histogram series `route` (spread over the buckets, differing by series).
fn observations(route: usize) -> [f64; OBSERVATIONS] {
    let f = 1.0 + (route % 10) as f64 / 10.0;
    [0.003 * f, 0.02 * f, 0.07 * f, 0.3 * f, 1.5 * f]
}

// ---------------------------------------------------------------------------------------------
// The sink.

/// What one sink received.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    /// Request bodies (after chunked decoding, if any).
    body_bytes: AtomicU64,
    /// Everything read from the sockets: request lines, headers and bodies.
    wire_bytes: AtomicU64,
    /// When `Some`, bodies are also appended here (only outside the timed loops).
    capture: Mutex<Option<Vec<Vec<u8>>>>,
}

impl Stats {
    fn counts(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.body_bytes.load(Ordering::Relaxed),
            self.wire_bytes.load(Ordering::Relaxed),
        )
    }
}

/// A minimal OTLP/HTTP receiver on `127.0.0.1`, one thread per connection.
struct Sink {
    addr: SocketAddr,
    stats: Arc<Stats>,
}

impl Sink {
    fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let accept_stats = stats.clone();
        std::thread::Builder::new()
            .name("otlp-sink".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let stats = accept_stats.clone();
                    std::thread::Builder::new()
                        .name("otlp-sink-conn".into())
                        .spawn(move || {
                            // A closed or broken connection just ends its thread.
                            let _ = serve(stream, &stats);
                        })
                        .unwrap();
                }
            })
            .unwrap();
        Sink { addr, stats }
    }

    /// Captures the bodies of the requests made during `f`; returns them with the number of
    /// requests, body bytes and wire bytes.
    fn capture(&self, f: impl FnOnce()) -> (Vec<Vec<u8>>, u64, u64, u64) {
        *self.stats.capture.lock().unwrap() = Some(Vec::new());
        let (r0, b0, w0) = self.stats.counts();
        f();
        let (r1, b1, w1) = self.stats.counts();
        let bodies = self.stats.capture.lock().unwrap().take().unwrap();
        (bodies, r1 - r0, b1 - b0, w1 - w0)
    }
}

/// Counts what passes through.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Serves one keep-alive connection until the client closes it.
fn serve(stream: TcpStream, stats: &Stats) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::with_capacity(
        64 * 1024,
        Counted {
            inner: stream,
            n: 0,
        },
    );
    let mut line = String::new();
    loop {
        // Request line (tolerating stray empty lines between requests).
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let mut content_length = 0u64;
        let mut chunked = false;
        let mut close = false;
        let mut expect_continue = false;
        loop {
            line.clear();
            if input.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("expect") {
                expect_continue = value.eq_ignore_ascii_case("100-continue");
            }
        }
        if expect_continue {
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut capture = stats.capture.lock().unwrap().is_some().then(Vec::new);
        let body = if chunked {
            read_chunked(&mut input, &mut line, &mut capture)?
        } else {
            read_body(&mut input, content_length, &mut capture)?
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats.body_bytes.fetch_add(body, Ordering::Relaxed);
        let read = std::mem::take(&mut input.get_mut().n);
        stats.wire_bytes.fetch_add(read, Ordering::Relaxed);
        if let Some(b) = capture
            && let Some(bodies) = stats.capture.lock().unwrap().as_mut()
        {
            bodies.push(b);
        }
        out.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        )?;
        if close {
            return Ok(());
        }
    }
}

/// Reads `n` body bytes into nothing (or into `capture`).
fn read_body(input: &mut impl BufRead, n: u64, capture: &mut Option<Vec<u8>>) -> io::Result<u64> {
    let mut part = input.take(n);
    let copied = match capture {
        Some(buf) => io::copy(&mut part, buf)?,
        None => io::copy(&mut part, &mut io::sink())?,
    };
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(n)
}

/// Reads a chunked body (and its trailers); returns its decoded length.
fn read_chunked(
    input: &mut impl BufRead,
    line: &mut String,
    capture: &mut Option<Vec<u8>>,
) -> io::Result<u64> {
    let mut total = 0;
    loop {
        line.clear();
        input.read_line(line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size.trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if input.read_line(line)? == 0 || line.trim().is_empty() {
                    return Ok(total);
                }
            }
        }
        total += read_body(input, size, capture)?;
        line.clear();
        input.read_line(line)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The two exporters.

/// Both sides with their data recorded and their sinks.
struct Fixture {
    sonde: sonde::otlp::OtlpMetricsExporter,
    sonde_sink: Sink,
    otel: SdkMeterProvider,
    otel_sink: Sink,
}

impl Fixture {
    fn new() -> Fixture {
        let ids: Vec<String> = (0..COUNTERS).map(|i| i.to_string()).collect();
        let routes: Vec<String> = (0..HISTOGRAMS).map(|i| format!("/r/{i}")).collect();

        // sonde.
        let sonde_sink = Sink::start();
        let reg = sonde::Registry::new();
        let counter = reg
            .counter("bench.requests")
            .labels(["id"])
            .max_series(2 * SERIES)
            .build()
            .unwrap();
        let histogram = reg
            .histogram("bench.duration")
            .unit(sonde::Unit::Seconds)
            .labels(["route"])
            .buckets(BOUNDS)
            .max_series(2 * SERIES)
            .build()
            .unwrap();
        for (i, id) in ids.iter().enumerate() {
            counter.with(&[id]).add(counter_value(i));
        }
        for (i, route) in routes.iter().enumerate() {
            let h = histogram.with(&[route]);
            for v in observations(i) {
                h.observe(v);
            }
        }
        let sonde = sonde::otlp::OtlpMetricsBuilder::new()
            .registry(reg)
            .environment(|_| None)
            .resource(sonde::Resource::empty().with("service.name", "bench"))
            .transport(
                sonde::otlp::OtlpTransport::new()
                    .endpoint(format!("http://{}", sonde_sink.addr))
                    .protocol(sonde::otlp::Protocol::HttpProtobuf),
            )
            .interval(INTERVAL)
            .install()
            .unwrap();

        // OpenTelemetry.
        let otel_sink = Sink::start();
        // sonde-otlp turns on reqwest's `rustls-no-provider` feature, and with it any reqwest
        // client needs a process-wide rustls provider to be built (the connections here are
        // plain http). An application with both exporters does the same.
        #[allow(deprecated)] // ring: the workspace's one TLS stack
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Built on a thread of its own, as opentelemetry-otlp does for its default client:
        // the blocking client must not be created or dropped inside a Tokio runtime.
        let client = std::thread::spawn(|| {
            reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap()
        })
        .join()
        .unwrap();
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(format!("http://{}/v1/metrics", otel_sink.addr))
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_temporality(Temporality::Cumulative)
            .build()
            .unwrap();
        let reader = PeriodicReader::builder(exporter)
            .with_interval(INTERVAL)
            .build();
        let otel = SdkMeterProvider::builder()
            .with_resource(
                opentelemetry_sdk::Resource::builder_empty()
                    .with_attribute(KeyValue::new("service.name", "bench"))
                    .build(),
            )
            .with_reader(reader)
            // The default cardinality limit is 2000 series per instrument.
            .with_view(|_: &Instrument| {
                Stream::builder()
                    .with_cardinality_limit(2 * SERIES)
                    .build()
                    .ok()
            })
            .build();
        let meter = otel.meter("bench");
        let counter = meter.u64_counter("bench.requests").build();
        let histogram = meter
            .f64_histogram("bench.duration")
            .with_unit("s")
            .with_boundaries(BOUNDS.to_vec())
            .build();
        for (i, id) in ids.iter().enumerate() {
            counter.add(counter_value(i), &[KeyValue::new("id", id.clone())]);
        }
        for (i, route) in routes.iter().enumerate() {
            let attrs = [KeyValue::new("route", route.clone())];
            for v in observations(i) {
                histogram.record(v, &attrs);
            }
        }

        Fixture {
            sonde,
            sonde_sink,
            otel,
            otel_sink,
        }
    }

    fn export_sonde(&self) {
        self.sonde.flush(FLUSH_TIMEOUT).unwrap();
    }

    fn export_otel(&self) {
        self.otel.force_flush().unwrap();
    }

    /// Captures one export of each side, checks that they carry the same series, and prints
    /// requests and bytes per export.
    fn check_and_report(&self) {
        let sides: [(&str, &Sink, &dyn Fn()); 2] = [
            ("sonde", &self.sonde_sink, &|| self.export_sonde()),
            ("opentelemetry_sdk", &self.otel_sink, &|| self.export_otel()),
        ];
        let mut summaries = Vec::new();
        for (name, sink, export) in sides {
            // One export to warm up connections, then the captured one.
            export();
            let (bodies, requests, body, wire) = sink.capture(export);
            assert_eq!(bodies.len() as u64, requests);
            let summary = summarize(&bodies);
            println!(
                "{name}: {requests} requests, {body} body bytes ({wire} bytes with request heads) per export"
            );
            for (metric, s) in &summary {
                println!(
                    "  {metric}: {} points, sum {}, histogram count {}",
                    s.points, s.sum, s.count
                );
            }
            summaries.push(summary);
        }
        for metric in ["bench.requests", "bench.duration"] {
            assert_eq!(summaries[0][metric], summaries[1][metric], "{metric}");
        }
        let expected_sum: u64 = (0..COUNTERS).map(counter_value).sum();
        assert_eq!(summaries[0]["bench.requests"].points, COUNTERS);
        assert_eq!(summaries[0]["bench.requests"].sum, expected_sum.to_string());
        assert_eq!(summaries[0]["bench.duration"].points, HISTOGRAMS);
        assert_eq!(
            summaries[0]["bench.duration"].count,
            (HISTOGRAMS * OBSERVATIONS) as u64
        );
    }
}

/// What a metric carries across one export's requests.
#[derive(Debug, Default, PartialEq)]
struct MetricSummary {
    points: usize,
    /// Sum of the sum points' values, or of the histograms' bucket counts by bucket.
    sum: String,
    /// Total histogram count.
    count: u64,
}

fn summarize(bodies: &[Vec<u8>]) -> BTreeMap<String, MetricSummary> {
    let mut int_sums: BTreeMap<String, u64> = BTreeMap::new();
    let mut buckets: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut out: BTreeMap<String, MetricSummary> = BTreeMap::new();
    for body in bodies {
        let request = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        for rm in request.resource_metrics {
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let s = out.entry(m.name.clone()).or_default();
                    match m.data {
                        Some(Data::Sum(sum)) => {
                            s.points += sum.data_points.len();
                            let total = int_sums.entry(m.name.clone()).or_default();
                            for p in sum.data_points {
                                *total += match p.value {
                                    Some(Value::AsInt(v)) => v as u64,
                                    Some(Value::AsDouble(v)) => v as u64,
                                    None => 0,
                                };
                            }
                        }
                        Some(Data::Histogram(h)) => {
                            s.points += h.data_points.len();
                            let by_bucket = buckets.entry(m.name.clone()).or_default();
                            for p in h.data_points {
                                s.count += p.count;
                                by_bucket.resize(by_bucket.len().max(p.bucket_counts.len()), 0);
                                for (b, c) in by_bucket.iter_mut().zip(&p.bucket_counts) {
                                    *b += c;
                                }
                            }
                        }
                        Some(Data::Gauge(g)) => s.points += g.data_points.len(),
                        Some(Data::ExponentialHistogram(h)) => s.points += h.data_points.len(),
                        Some(Data::Summary(x)) => s.points += x.data_points.len(),
                        None => {}
                    }
                }
            }
        }
    }
    for (name, total) in int_sums {
        out.get_mut(&name).unwrap().sum = total.to_string();
    }
    for (name, by_bucket) in buckets {
        out.get_mut(&name).unwrap().sum = format!("{by_bucket:?}");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Process CPU time as a criterion measurement.

// ---------------------------------------------------------------------------------------------
// The benchmarks.

fn configure<M: Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(SERIES as u64));
}

fn run<M: Measurement>(c: &mut Criterion<M>, group_name: &str, fixture: &Fixture) {
    let mut group = c.benchmark_group(group_name);
    configure(&mut group);
    group.bench_function("sonde", |b| b.iter(|| fixture.export_sonde()));
    group.bench_function("opentelemetry_sdk", |b| b.iter(|| fixture.export_otel()));
    group.finish();
}

fn wall(c: &mut Criterion) {
    let fixture = Fixture::new();
    fixture.check_and_report();
    run(c, "otlp_export_10k", &fixture);
}

fn cpu(c: &mut Criterion<ProcessCpu>) {
    let fixture = Fixture::new();
    run(c, "otlp_export_10k_cpu", &fixture);
}

criterion_group!(wall_time, wall);
criterion_group! {
    name = cpu_time;
    config = Criterion::default().with_measurement(ProcessCpu);
    targets = cpu
}
criterion_main!(wall_time, cpu_time);
