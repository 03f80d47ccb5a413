//! CloudWatch export per interval, 1k and 10k series: requests, datums, bytes and CPU of
//! `sonde::cloudwatch` through the real AWS SDK (`aws-sdk-cloudwatch`, Smithy RPC v2 CBOR) to the
//! CloudWatch-compatible test endpoint of `sonde-tests`, and the datums, requests and metrics
//! sonde sends against a naive one-datum-per-statistic export:
//! `cargo bench -p sonde-bench --bench cloudwatch_export`.
//!
//! Workload ([`Workload`], the same shape at both sizes): 80 % counter series
//! (`bench.requests{id}`, `u64`) and 20 % histogram series (`bench.duration{route}`, unit `s`,
//! sonde's default grid). Each interval increments every counter once and observes
//! [`VALUES_PER_HISTOGRAM`] distinct values (1 ms to about 0.5 s, different per series) into
//! every histogram, then calls `CloudWatchExporter::force_flush`: one delta collection,
//! conversion to datums (one per counter, one `Values`/`Counts` datum per histogram series),
//! batching, and PutMetricData calls through the SDK (which gzips bodies of 10 KiB or more),
//! waiting for the endpoint's answers. The exporter has a 1 h interval, so only the flushes
//! export; resource `service.name=bench` (the one dimension besides the label); builder defaults
//! otherwise (60 s storage resolution, no `sonde.*` self-metrics).
//!
//! The endpoint (`sonde_tests::cloudwatch::CloudWatchEndpoint`, in this process on its own
//! thread) gunzips, decodes the CBOR, validates every datum as CloudWatch documents and records
//! each call with its body size as received and uncompressed.
//!
//! Printed before the criterion groups, from one measured interval (after a warm-up interval):
//! requests, datums and bytes as the endpoint recorded them; the CPU time per interval of the
//! exporter's thread, the endpoint's thread and the rest of the process (per-thread
//! `/proc/self/task/*/schedstat`, mean over several intervals); and datums, requests, calls per
//! hour and metrics against a naive export that sends each histogram series as 7 single-value
//! datums (count, sum, min, max, p50, p90, p99) — computed from the recorded datums, not sent.
//!
//! Criterion groups:
//!
//! - `cloudwatch_export`: wall time of one interval's `force_flush`;
//! - `cloudwatch_export_cpu`: process CPU time of the same (`CLOCK_PROCESS_CPUTIME_ID` through
//!   `cpu-time`, [`ProcessCpu`]); it includes the in-process endpoint's work;
//! - `cloudwatch_convert`: the exporter's own conversion on the calling thread, without the SDK
//!   and HTTP: `datum::convert` + `datum::batches` of a collected snapshot, and the same
//!   preceded by the delta collection (`Reader::collect`).
//!
//! Recording the interval's values and clearing the endpoint's records happen outside the timed
//! routine (`iter_batched`, one interval per batch).
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use cpu_time::ProcessTime;
use criterion::measurement::Measurement;
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput};
use sonde::cloudwatch::datum::{self, MAX_REQUEST_BYTES, Settings};
use sonde::cloudwatch::{CloudWatchBuilder, CloudWatchExporter, cost_preview};
use sonde::{Counter, Histogram, Kind, Reader, Registry, Resource, Temporality, Unit};
use sonde_bench::ProcessCpu;
use sonde_tests::cloudwatch::{CloudWatchEndpoint, CwAttempt, PutRequest, SERVICE_PATH};

/// Series counts benchmarked.
const SIZES: [usize; 2] = [1_000, 10_000];
/// Distinct values observed into each histogram series per interval.
const VALUES_PER_HISTOGRAM: usize = 20;
/// Datums a naive exporter sends per histogram series: count, sum, min, max, p50, p90, p99.
const NAIVE_DATUMS_PER_HISTOGRAM: usize = 7;
/// Datums per PutMetricData request (CloudWatch's limit).
const DATUMS_PER_REQUEST: usize = 1000;
/// The interval the cost figures assume.
const COST_INTERVAL: Duration = Duration::from_secs(60);
/// PutMetricData list price (us-east-1), US dollars per 1,000 requests.
const USD_PER_1000_REQUESTS: f64 = 0.01;
/// Custom-metric list price tiers (us-east-1), metrics and US dollars per metric-month (the
/// tiers of `sonde::cloudwatch::cost_preview`).
const METRIC_TIERS: [(f64, f64); 4] = [
    (10_000.0, 0.30),
    (240_000.0, 0.10),
    (750_000.0, 0.05),
    (f64::INFINITY, 0.02),
];
const HOURS_PER_MONTH: f64 = 730.0;
/// Exporter interval: long enough that only the benchmark's flushes export.
const INTERVAL: Duration = Duration::from_secs(3600);
/// Deadline of one flush.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Intervals averaged for the per-thread CPU breakdown.
const CPU_BREAKDOWN_INTERVALS: usize = 20;

fn label(series: usize) -> String {
    format!("{}k", series / 1000)
}

// ---------------------------------------------------------------------------------------------
// The workload.

/// One registry with `series` series and their handles.
struct Workload {
    series: usize,
    registry: Registry,
    counters: Vec<Counter>,
    /// Each histogram with its values per interval.
    histograms: Vec<(Histogram, [f64; VALUES_PER_HISTOGRAM])>,
}

impl Workload {
    fn new(series: usize) -> Workload {
        let n_histograms = series / 5;
        let n_counters = series - n_histograms;
        let registry = Registry::new();
        let counter = registry
            .counter("bench.requests")
            .labels(["id"])
            .max_series(2 * series)
            .build()
            .unwrap();
        let histogram = registry
            .histogram("bench.duration")
            .unit(Unit::Seconds)
            .labels(["route"])
            .max_series(2 * series)
            .build()
            .unwrap();
        let counters = (0..n_counters)
            .map(|i| counter.with(&[i.to_string()]))
            .collect();
        let histograms = (0..n_histograms)
            .map(|i| {
                let h = histogram.with(&[format!("/r/{i}")]);
                // 1 ms growing by 35 % a step (well apart on the grid), scaled per series.
                let scale = 1.0 + (i % 10) as f64 / 10.0;
                let values = std::array::from_fn(|k| 0.001 * 1.35f64.powi(k as i32) * scale);
                (h, values)
            })
            .collect();
        Workload {
            series,
            registry,
            counters,
            histograms,
        }
    }

    fn n_counters(&self) -> usize {
        self.counters.len()
    }

    fn n_histograms(&self) -> usize {
        self.histograms.len()
    }

    /// One interval's recording: every counter incremented, every histogram observed.
    fn record_interval(&self) {
        for c in &self.counters {
            c.inc();
        }
        for (h, values) in &self.histograms {
            for v in values {
                h.observe(*v);
            }
        }
    }

    /// A delta reader as the exporter makes it.
    fn reader(&self) -> Reader {
        self.registry
            .reader(Temporality::Delta)
            .with_cumulative_kinds(&[Kind::UpDownCounter])
    }
}

fn resource() -> Resource {
    Resource::empty().with("service.name", "bench")
}

// ---------------------------------------------------------------------------------------------
// The exporter and its endpoint.

/// A workload exported to its own endpoint. Fields drop in order: the exporter (whose drop
/// flushes once more) before the endpoint.
struct Fixture {
    workload: Workload,
    exporter: CloudWatchExporter,
    endpoint: CloudWatchEndpoint,
}

impl Fixture {
    fn new(series: usize) -> Fixture {
        let workload = Workload::new(series);
        let endpoint = CloudWatchEndpoint::start();
        let exporter = CloudWatchBuilder::new("bench")
            .registry(workload.registry.clone())
            .endpoint_url(endpoint.url())
            .region("us-east-1")
            .credentials("AKIDEXAMPLE", "secret")
            .resource(resource())
            .interval(INTERVAL)
            .jitter_first_flush(false)
            .install()
            .unwrap();
        Fixture {
            workload,
            exporter,
            endpoint,
        }
    }

    /// Untimed part of an interval: forget the endpoint's records, record the values.
    fn setup_interval(&self) {
        self.endpoint.clear();
        self.workload.record_interval();
    }

    /// Timed part: export the interval.
    fn flush(&self) {
        self.exporter.flush(FLUSH_TIMEOUT).unwrap();
    }

    /// One whole interval; returns what the endpoint accepted, and every call.
    fn interval(&self) -> (Vec<PutRequest>, Vec<CwAttempt>) {
        self.setup_interval();
        self.flush();
        let requests = self.endpoint.requests();
        let attempts = self.endpoint.attempts();
        assert_eq!(
            attempts.len(),
            requests.len(),
            "the endpoint rejected a request"
        );
        (requests, attempts)
    }
}

// ---------------------------------------------------------------------------------------------
// Figures of one interval.

/// What one interval sent, as recorded by the endpoint.
struct IntervalFigures {
    series: usize,
    counters: usize,
    histograms: usize,
    requests: usize,
    gzip_requests: usize,
    datums: usize,
    counter_datums: usize,
    histogram_datums: usize,
    values_per_histogram_datum: f64,
    uncompressed_bytes: usize,
    body_bytes: usize,
    /// HTTP/1.1 request heads rebuilt from the recorded headers.
    head_bytes: usize,
    /// Metrics (name and dimensions) in the interval.
    metrics: usize,
    /// CPU time per interval in nanoseconds: exporter thread, endpoint thread, rest, process.
    cpu_exporter: f64,
    cpu_endpoint: f64,
    cpu_other: f64,
    cpu_process: f64,
    wall: f64,
}

impl IntervalFigures {
    fn naive_datums(&self) -> usize {
        self.counter_datums + NAIVE_DATUMS_PER_HISTOGRAM * self.histogram_datums
    }
}

/// Requests per interval to calls per hour at [`COST_INTERVAL`], and their monthly price.
fn calls(requests: usize) -> (f64, f64) {
    let per_hour = requests as f64 * 3600.0 / COST_INTERVAL.as_secs_f64();
    (
        per_hour,
        per_hour * HOURS_PER_MONTH / 1000.0 * USD_PER_1000_REQUESTS,
    )
}

fn metric_cost(metrics: usize) -> f64 {
    let mut left = metrics as f64;
    let mut cost = 0.0;
    for (size, price) in METRIC_TIERS {
        let n = left.min(size);
        cost += n * price;
        left -= n;
        if left <= 0.0 {
            break;
        }
    }
    cost
}

/// CPU time so far of this process's live threads, by role: (exporter thread, endpoint thread),
/// nanoseconds (first field of `/proc/self/task/<tid>/schedstat`).
fn thread_cpu() -> (u64, u64) {
    let (mut exporter, mut endpoint) = (0, 0);
    for entry in fs::read_dir("/proc/self/task").unwrap() {
        let path = entry.unwrap().path();
        let (Ok(comm), Ok(sched)) = (
            fs::read_to_string(path.join("comm")),
            fs::read_to_string(path.join("schedstat")),
        ) else {
            continue;
        };
        let ns: u64 = sched
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // Thread names are cut to 15 bytes: "sonde-cloudwatch", "cloudwatch-endpoint".
        if comm.starts_with("sonde-cloudwatc") {
            exporter += ns;
        } else if comm.starts_with("cloudwatch-endp") {
            endpoint += ns;
        }
    }
    (exporter, endpoint)
}

/// Runs a warm-up interval, one recorded interval (checked), then [`CPU_BREAKDOWN_INTERVALS`]
/// intervals for the CPU breakdown.
fn measure_interval(f: &Fixture) -> IntervalFigures {
    let w = &f.workload;
    f.interval();
    let (requests, attempts) = f.interval();
    let datums: Vec<_> = requests.iter().flat_map(|r| r.datums.iter()).collect();
    let histogram_datums: Vec<_> = datums.iter().filter(|d| !d.values.is_empty()).collect();
    let counter_datums = datums.len() - histogram_datums.len();
    // Every series arrived once, with this interval's values.
    assert_eq!(counter_datums, w.n_counters());
    assert_eq!(histogram_datums.len(), w.n_histograms());
    for d in &datums {
        if d.values.is_empty() {
            assert_eq!(d.metric_name, "bench.requests");
            assert_eq!(d.value, Some(1.0));
        } else {
            assert_eq!(d.metric_name, "bench.duration");
            assert_eq!(d.counts.iter().sum::<f64>(), VALUES_PER_HISTOGRAM as f64);
        }
    }
    let metrics: BTreeSet<_> = datums
        .iter()
        .map(|d| {
            let mut dims = d.dimensions.clone();
            dims.sort();
            (d.metric_name.clone(), dims)
        })
        .collect();
    // sonde's own cost preview agrees with what was sent.
    let preview = cost_preview(
        &w.registry,
        &resource(),
        &Settings::default(),
        COST_INTERVAL,
    );
    assert_eq!(preview.datums_per_interval, datums.len());
    assert_eq!(preview.requests_per_interval, requests.len());
    assert_eq!(preview.metrics, metrics.len());

    let (mut exporter, mut endpoint, mut process, mut wall) = (0u64, 0u64, 0u64, 0u64);
    for _ in 0..CPU_BREAKDOWN_INTERVALS {
        f.setup_interval();
        let (e0, p0) = thread_cpu();
        let cpu0 = ProcessTime::now();
        let t0 = Instant::now();
        f.flush();
        wall += t0.elapsed().as_nanos() as u64;
        process += cpu0.elapsed().as_nanos() as u64;
        let (e1, p1) = thread_cpu();
        exporter += e1 - e0;
        endpoint += p1 - p0;
    }
    let n = CPU_BREAKDOWN_INTERVALS as f64;
    IntervalFigures {
        series: w.series,
        counters: w.n_counters(),
        histograms: w.n_histograms(),
        requests: requests.len(),
        gzip_requests: requests.iter().filter(|r| r.gzip).count(),
        datums: datums.len(),
        counter_datums,
        histogram_datums: histogram_datums.len(),
        values_per_histogram_datum: histogram_datums
            .iter()
            .map(|d| d.values.len())
            .sum::<usize>() as f64
            / histogram_datums.len() as f64,
        uncompressed_bytes: requests.iter().map(|r| r.uncompressed_bytes).sum(),
        body_bytes: requests.iter().map(|r| r.body_bytes).sum(),
        head_bytes: attempts.iter().map(head_bytes).sum(),
        metrics: metrics.len(),
        cpu_exporter: exporter as f64 / n,
        cpu_endpoint: endpoint as f64 / n,
        cpu_other: process.saturating_sub(exporter + endpoint) as f64 / n,
        cpu_process: process as f64 / n,
        wall: wall as f64 / n,
    }
}

/// Bytes of the HTTP/1.1 request head of a call: request line, `name: value` lines (as the
/// endpoint recorded them) and the empty line.
fn head_bytes(a: &CwAttempt) -> usize {
    let line = "POST ".len() + SERVICE_PATH.len() + a.operation.len() + " HTTP/1.1\r\n".len();
    let headers: usize = a
        .headers
        .iter()
        .map(|(k, v)| k.len() + ": ".len() + v.len() + "\r\n".len())
        .sum();
    line + headers + "\r\n".len()
}

fn ms(ns: f64) -> String {
    format!("{:.2} ms", ns / 1e6)
}

fn bytes(n: usize) -> String {
    // Thousands separators.
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out + " B"
}

fn report(figures: &[IntervalFigures]) {
    let row = |name: &str, cells: Vec<String>| println!("| {name} | {} |", cells.join(" | "));
    let each = |f: &dyn Fn(&IntervalFigures) -> String| figures.iter().map(f).collect::<Vec<_>>();

    println!();
    println!(
        "One interval, as recorded by the CloudWatch test endpoint (the interval after a warm-up):"
    );
    println!();
    row(
        "per interval",
        each(&|f| format!("{} series", label(f.series))),
    );
    println!("|---|{}", "---|".repeat(figures.len()));
    row(
        "counter / histogram series",
        each(&|f| format!("{} / {}", f.counters, f.histograms)),
    );
    row(
        "PutMetricData requests",
        each(&|f| format!("{} ({} gzip)", f.requests, f.gzip_requests)),
    );
    row(
        "datums (counter + histogram)",
        each(&|f| {
            format!(
                "{} ({} + {})",
                f.datums, f.counter_datums, f.histogram_datums
            )
        }),
    );
    row(
        "values per histogram datum (mean)",
        each(&|f| format!("{:.1}", f.values_per_histogram_datum)),
    );
    row(
        "request bodies, uncompressed CBOR",
        each(&|f| bytes(f.uncompressed_bytes)),
    );
    row(
        "request bodies on the wire (gzip)",
        each(&|f| {
            format!(
                "{} ({:.1} % of uncompressed)",
                bytes(f.body_bytes),
                100.0 * f.body_bytes as f64 / f.uncompressed_bytes as f64
            )
        }),
    );
    row(
        "request heads (HTTP/1.1, from the recorded headers)",
        each(&|f| {
            format!(
                "{} ({:.0} B per request)",
                bytes(f.head_bytes),
                f.head_bytes as f64 / f.requests as f64
            )
        }),
    );
    row(
        "requests on the wire (heads + bodies)",
        each(&|f| bytes(f.head_bytes + f.body_bytes)),
    );
    row(
        "body bytes on the wire per datum",
        each(&|f| format!("{:.1} B", f.body_bytes as f64 / f.datums as f64)),
    );

    println!();
    println!(
        "CPU time per interval's force_flush, mean of {CPU_BREAKDOWN_INTERVALS} intervals \
         (per-thread schedstat; process CPU from CLOCK_PROCESS_CPUTIME_ID):"
    );
    println!();
    row(
        "per interval",
        each(&|f| format!("{} series", label(f.series))),
    );
    println!("|---|{}", "---|".repeat(figures.len()));
    row("wall time", each(&|f| ms(f.wall)));
    row(
        "exporter thread (collect, convert, batch, SDK: CBOR, gzip, SigV4, HTTP)",
        each(&|f| ms(f.cpu_exporter)),
    );
    row(
        "endpoint thread (HTTP, gunzip, CBOR decode, validation)",
        each(&|f| ms(f.cpu_endpoint)),
    );
    row("rest of the process", each(&|f| ms(f.cpu_other)));
    row("process total", each(&|f| ms(f.cpu_process)));
    row(
        "exporter thread per 1,000 series",
        each(&|f| ms(f.cpu_exporter * 1000.0 / f.series as f64)),
    );

    println!();
    println!(
        "Datums against a naive export (each histogram series as {NAIVE_DATUMS_PER_HISTOGRAM} \
         single-value datums: count, sum, min, max, p50, p90, p99; counters 1; \
         {DATUMS_PER_REQUEST} datums per request), at a {} s interval, us-east-1 list prices \
         (${USD_PER_1000_REQUESTS} per 1,000 requests, {HOURS_PER_MONTH} h per month; metrics \
         $0.30 up to 10k, then $0.10):",
        COST_INTERVAL.as_secs()
    );
    println!();
    let mut header = Vec::new();
    for f in figures {
        header.push(format!("sonde {}", label(f.series)));
        header.push(format!("naive {}", label(f.series)));
    }
    row("", header);
    println!("|---|{}", "---|".repeat(2 * figures.len()));
    let pair = |sonde: &dyn Fn(&IntervalFigures) -> String,
                naive: &dyn Fn(&IntervalFigures) -> String| {
        figures
            .iter()
            .flat_map(|f| [sonde(f), naive(f)])
            .collect::<Vec<_>>()
    };
    row(
        "datums per interval",
        pair(&|f| f.datums.to_string(), &|f| f.naive_datums().to_string()),
    );
    row(
        "datums per series",
        pair(
            &|f| format!("{:.2}", f.datums as f64 / f.series as f64),
            &|f| format!("{:.2}", f.naive_datums() as f64 / f.series as f64),
        ),
    );
    row(
        "datums per histogram series",
        pair(
            &|f| format!("{:.0}", f.histogram_datums as f64 / f.histograms as f64),
            &|_| NAIVE_DATUMS_PER_HISTOGRAM.to_string(),
        ),
    );
    let naive_requests = |f: &IntervalFigures| f.naive_datums().div_ceil(DATUMS_PER_REQUEST);
    row(
        "PutMetricData requests per interval",
        pair(&|f| f.requests.to_string(), &|f| {
            naive_requests(f).to_string()
        }),
    );
    row(
        "PutMetricData calls per hour",
        pair(&|f| format!("{:.0}", calls(f.requests).0), &|f| {
            format!("{:.0}", calls(naive_requests(f)).0)
        }),
    );
    row(
        "PutMetricData cost per month",
        pair(&|f| format!("${:.2}", calls(f.requests).1), &|f| {
            format!("${:.2}", calls(naive_requests(f)).1)
        }),
    );
    row(
        "CloudWatch metrics (billed each)",
        pair(&|f| f.metrics.to_string(), &|f| {
            f.naive_datums().to_string()
        }),
    );
    row(
        "metric cost per month",
        pair(&|f| format!("${:.2}", metric_cost(f.metrics)), &|f| {
            format!("${:.2}", metric_cost(f.naive_datums()))
        }),
    );
    println!();
}

// ---------------------------------------------------------------------------------------------
// Process CPU time as a criterion measurement (as in `otlp_export`).

// ---------------------------------------------------------------------------------------------
// The benchmarks.

fn configure<M: Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
}

/// One interval's `force_flush` per iteration, the recording outside the timing.
fn flush_group<M: Measurement>(c: &mut Criterion<M>, name: &str, fixtures: &[Fixture]) {
    let mut group = c.benchmark_group(name);
    configure(&mut group);
    for f in fixtures {
        group.throughput(Throughput::Elements(f.workload.series as u64));
        group.bench_function(format!("force_flush/{}", label(f.workload.series)), |b| {
            b.iter_batched(
                || f.setup_interval(),
                |()| f.flush(),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// The exporter's conversion on the calling thread, without the SDK and HTTP.
fn convert_group(c: &mut Criterion) {
    let mut group = c.benchmark_group("cloudwatch_convert");
    configure(&mut group);
    let settings = Settings::default();
    let resource = resource();
    for series in SIZES {
        let workload = Workload::new(series);
        let mut reader = workload.reader();
        let expected_requests = series.div_ceil(DATUMS_PER_REQUEST);
        group.throughput(Throughput::Elements(series as u64));
        group.bench_function(format!("convert_batches/{}", label(series)), |b| {
            b.iter_batched(
                || {
                    workload.record_interval();
                    reader.collect()
                },
                |snapshot| {
                    let converted = datum::convert(&snapshot, &resource, &settings);
                    let batches = datum::batches(converted.datums, MAX_REQUEST_BYTES);
                    assert_eq!(batches.len(), expected_requests);
                    (snapshot, batches)
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(format!("collect_convert_batches/{}", label(series)), |b| {
            b.iter_batched(
                || workload.record_interval(),
                |()| {
                    let snapshot = reader.collect();
                    let converted = datum::convert(&snapshot, &resource, &settings);
                    let batches = datum::batches(converted.datums, MAX_REQUEST_BYTES);
                    assert_eq!(batches.len(), expected_requests);
                    (snapshot, batches)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn main() {
    let fixtures: Vec<Fixture> = SIZES.into_iter().map(Fixture::new).collect();
    let figures: Vec<IntervalFigures> = fixtures.iter().map(measure_interval).collect();
    report(&figures);

    let mut wall = Criterion::default().configure_from_args();
    flush_group(&mut wall, "cloudwatch_export", &fixtures);
    convert_group(&mut wall);
    let mut cpu = Criterion::default()
        .with_measurement(ProcessCpu)
        .configure_from_args();
    flush_group(&mut cpu, "cloudwatch_export_cpu", &fixtures);

    wall.final_summary();
    cpu.final_summary();
}
