//! Shared helpers for the sonde benchmarks.
//!
//! The benchmarks themselves live in `benches/`:
//!
//! - `instruments`: recording cost through held handles and lookups (`counter_inc`,
//!   `counter_labels_lookup`, `histogram_observe`, `request_path`, `histogram_observe_n`,
//!   `contended_2_threads`), each with sonde and every peer in the same criterion group;
//! - `series_creation`: time to create 100k labelled counter series, sonde and its peers;
//! - `alloc_per_series`: live bytes and allocations per labelled counter series and per
//!   histogram series (not criterion: it prints tables, measured with a counting global
//!   allocator);
//! - `encode`: Prometheus text exposition of 10k and 100k mixed series ([`Mixed`]), sonde
//!   (collect + encode, and OpenMetrics) side by side with prometheus-client and
//!   metrics-exporter-prometheus;
//! - `scrape_latency`: latency of 1 and of 20 concurrent scrapers of sonde's `/metrics` server
//!   over 10k mixed series (not criterion: it prints p50/p95/p99/max);
//! - `middleware`: per-request cost of the HTTP server instrumentation (tower
//!   `HttpServerLayer`, hyper, actix-web) and of reqwest's `HttpClientMiddleware`, each against
//!   a bare baseline, and per-span cost of the tracing `SondeLayer` (against no layer and
//!   tracing-opentelemetry's `MetricsLayer`);
//! - `otlp_export`: OTLP/HTTP export of 10k series per interval to a loopback sink, sonde-otlp
//!   against opentelemetry_sdk with opentelemetry-otlp, wall and process CPU time per export;
//! - `cloudwatch_export`: CloudWatch export of 1k and 10k series per interval through the AWS
//!   SDK to the in-process test endpoint of `sonde-tests`: requests, datums and bytes, wall and
//!   CPU time per `force_flush`, the conversion alone, and a naive one-datum-per-statistic
//!   export for comparison;
//! - `statsd_parse`: StatsD parsing, and parsing plus recording, in lines per second on one
//!   core;
//! - `statsd_udp`: the highest zero-loss rate of sonde's StatsD server over loopback UDP,
//!   against a raw UDP receive loop (not criterion: it prints the rates);
//! - `statsd_vs_collectd`: CPU per StatsD line, the release `sonde-agent` binary against
//!   collectd's `statsd` plugin (not criterion, not in CI: it needs `collectd-core` installed
//!   and `cargo build --release -p sonde-agent` first, and panics saying so otherwise);
//! - `sources`: the agent's ways in, per 10k points: an OTLP/HTTP request received and recorded,
//!   a Prometheus target scraped and mirrored (text and protobuf), StatsD lines ingested.
//!
//! Run them all with `cargo bench -p sonde-bench` (which needs `statsd_vs_collectd`'s
//! prerequisites), or one with `cargo bench -p sonde-bench --bench instruments -- counter_inc`.

use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Explicit histogram bucket boundaries (seconds, 0.5 ms to 60 s) given to every library that
/// takes explicit buckets, so that all of them count into the same 16 boundaries (17 buckets).
/// They are sonde's defaults for [`sonde::Unit::Seconds`].
pub const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Label names of the labelled counter families, in the order of the values in
/// [`lookup_label_values`] and [`creation_label_values`]. They are already sorted, which spares
/// the OpenTelemetry SDK from keeping a second, sorted copy of each attribute set.
pub const LABEL_NAMES: [&str; 3] = ["method", "route", "status"];

/// Number of series of the `counter_labels_lookup` workload: 4 methods × 50 routes × 5 statuses.
pub const LOOKUP_SERIES: usize = 1_000;

/// Number of series created by the `series_creation` and `alloc_per_series` workloads.
pub const CREATED_SERIES: usize = 100_000;

/// The 1,000 label value combinations of the `counter_labels_lookup` workload, as runtime
/// `String`s (like a matched route taken from a request), in a fixed order that interleaves
/// methods, routes and statuses so that consecutive lookups hit unrelated series.
pub fn lookup_label_values() -> Vec<[String; 3]> {
    const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
    const STATUSES: [&str; 5] = ["200", "201", "404", "429", "500"];
    let mut all = Vec::with_capacity(LOOKUP_SERIES);
    for m in METHODS {
        for r in 0..50 {
            for s in STATUSES {
                all.push([
                    m.to_owned(),
                    format!("/api/v1/resource{r}/:id"),
                    s.to_owned(),
                ]);
            }
        }
    }
    // 7919 is prime and coprime with 1000, so `i * 7919 % 1000` visits every combination once.
    (0..LOOKUP_SERIES)
        .map(|i| all[i * 7919 % LOOKUP_SERIES].clone())
        .collect()
}

/// The [`CREATED_SERIES`] distinct label value combinations of the `series_creation` and
/// `alloc_per_series` workloads: `("m{i % 7}", "route{i}", "s{i % 5}")`.
pub fn creation_label_values() -> Vec<[String; 3]> {
    (0..CREATED_SERIES)
        .map(|i| {
            [
                format!("m{}", i % 7),
                format!("route{i}"),
                format!("s{}", i % 5),
            ]
        })
        .collect()
}

/// How far apart the threads of [`run_threads`] start in the index they pass to `op`: two
/// request streams do not observe the same values in lockstep, so each thread walks the
/// pre-generated samples from its own offset.
pub const THREAD_STRIDE: usize = 1_237;

/// Runs `op(t * THREAD_STRIDE + i)` for `i` in `0..iters` on each thread `t` of `threads` at once and returns the wall
/// time from the moment all threads are released until the last one finishes. Thread spawning
/// is not timed.
///
/// With `threads = 2`, the returned time covers `2 × iters` operations: divided by `iters` (as
/// criterion does), it is the time per operation *per thread*, so perfect scaling shows the same
/// time for 1 and 2 threads.
pub fn run_threads<F>(threads: usize, iters: u64, op: F) -> Duration
where
    F: Fn(usize) + Sync,
{
    let barrier = Barrier::new(threads);
    let (op, barrier) = (&op, &barrier);
    // Each worker timestamps its own start (right after the barrier) and end, so that the main
    // thread's wake-up, which competes with the workers for the cores, is never timed.
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        op(t * THREAD_STRIDE + i as usize);
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let first_start = spans.iter().map(|s| s.0).min();
    let last_end = spans.iter().map(|s| s.1).max();
    match (first_start, last_end) {
        (Some(start), Some(end)) => end.duration_since(start),
        _ => Duration::ZERO,
    }
}

/// Runs `op(i)` for `i` in `0..iters` on the current thread and returns the time it took: the
/// body of a criterion `iter_custom` for the single-threaded workloads.
#[inline]
pub fn run_loop<F>(iters: u64, mut op: F) -> Duration
where
    F: FnMut(usize),
{
    let start = Instant::now();
    for i in 0..iters {
        op(i as usize);
    }
    start.elapsed()
}

/// Label names of the mixed workload's counter family (`http.server.requests`).
pub const MIXED_COUNTER_LABELS: [&str; 3] = ["method", "route", "status"];
/// Label names of the mixed workload's gauge family (`queue.depth`).
pub const MIXED_GAUGE_LABELS: [&str; 2] = ["host", "queue"];
/// Label names of the mixed workload's histogram family (`http.server.request.duration`).
pub const MIXED_HISTOGRAM_LABELS: [&str; 2] = ["method", "route"];

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const STATUSES: [&str; 5] = ["200", "201", "404", "429", "500"];
const QUEUES: [&str; 10] = [
    "orders",
    "payments",
    "emails",
    "invoices",
    "exports",
    "imports",
    "thumbnails",
    "webhooks",
    "search-index",
    "audit-log",
];

/// The "mixed" exposition workload: `n` series, 40 % counters, 30 % gauges and 30 % histograms
/// (by series count), the same label values and recorded values for every library.
///
/// - counters, `http.server.requests{method, route, status}`: 4 methods × 5 statuses per route
///   (`/api/v1/resource{r}/:id`), values from 1 to 100,000;
/// - gauges, `queue.depth{host, queue}`: 10 queues per host (`web-0042.prod.internal`),
///   values in quarter steps (`0.25` to `249.75`), so they print with a fraction;
/// - histograms, `http.server.request.duration{method, route}` in seconds: 4 methods per route,
///   3 observations each (a few ms to a few hundred ms), counted into the 16 buckets of
///   [`BUCKETS`] by every library (17 `le` lines, `_sum` and `_count` per series).
pub struct Mixed {
    /// Counter label values and the amount added.
    pub counters: Vec<([String; 3], u64)>,
    /// Gauge label values and the value set.
    pub gauges: Vec<([String; 2], f64)>,
    /// Histogram label values and the values observed.
    pub histograms: Vec<([String; 2], [f64; 3])>,
}

impl Mixed {
    /// The workload with `n` series in all (`n` a multiple of 100).
    pub fn new(n: usize) -> Self {
        let (nc, ng) = (n * 4 / 10, n * 3 / 10);
        let nh = n - nc - ng;
        let route = |r: usize| format!("/api/v1/resource{r}/:id");
        let counters = (0..nc)
            .map(|i| {
                let labels = [
                    METHODS[i % 4].to_owned(),
                    route(i / 20),
                    STATUSES[(i / 4) % 5].to_owned(),
                ];
                (labels, (i as u64).wrapping_mul(7919) % 100_000 + 1)
            })
            .collect();
        let gauges = (0..ng)
            .map(|i| {
                let labels = [
                    format!("web-{:04}.prod.internal", i / 10),
                    QUEUES[i % 10].to_owned(),
                ];
                (labels, (i % 1000) as f64 * 0.25)
            })
            .collect();
        let histograms = (0..nh)
            .map(|i| {
                let labels = [METHODS[i % 4].to_owned(), route(i / 4)];
                let f = 1.0 + (i % 13) as f64 / 13.0;
                (labels, [0.003 * f, 0.012 * f, 0.18 * f])
            })
            .collect();
        Mixed {
            counters,
            gauges,
            histograms,
        }
    }

    /// Total number of series.
    pub fn len(&self) -> usize {
        self.counters.len() + self.gauges.len() + self.histograms.len()
    }

    /// Whether there are no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// HELP text of the mixed workload's counter family, the same for every library.
pub const MIXED_COUNTER_HELP: &str = "HTTP server requests.";
/// HELP text of the mixed workload's gauge family.
pub const MIXED_GAUGE_HELP: &str = "Jobs waiting in the queue.";
/// HELP text of the mixed workload's histogram family.
pub const MIXED_HISTOGRAM_HELP: &str = "Duration of HTTP server requests.";

/// A sonde registry holding the [`Mixed`] workload: `http_server_requests_total`,
/// `queue_depth` (an `f64` gauge) and `http_server_request_duration_seconds` once rendered.
pub fn sonde_mixed(mixed: &Mixed) -> sonde::Registry {
    let limit = mixed.len() + 1;
    let registry = sonde::Registry::with_max_series(limit);
    let counters = registry
        .counter("http.server.requests")
        .description(MIXED_COUNTER_HELP)
        .labels(MIXED_COUNTER_LABELS)
        .max_series(limit)
        .build()
        .expect("counter family");
    for (labels, v) in &mixed.counters {
        counters.with(&labels[..]).add(*v);
    }
    let gauges = registry
        .gauge_f64("queue.depth")
        .description(MIXED_GAUGE_HELP)
        .labels(MIXED_GAUGE_LABELS)
        .max_series(limit)
        .build()
        .expect("gauge family");
    for (labels, v) in &mixed.gauges {
        gauges.with(&labels[..]).set(*v);
    }
    let histograms = registry
        .histogram("http.server.request.duration")
        .description(MIXED_HISTOGRAM_HELP)
        .unit(sonde::Unit::Seconds)
        .buckets(BUCKETS.to_vec())
        .labels(MIXED_HISTOGRAM_LABELS)
        .max_series(limit)
        .build()
        .expect("histogram family");
    for (labels, vs) in &mixed.histograms {
        let h = histograms.with(&labels[..]);
        for v in vs {
            h.observe(*v);
        }
    }
    registry
}

/// StatsD datagrams as clients send them (~1400 bytes each): tagged counters, timers with a
/// sample rate, gauges, histograms and sets over a few hundred names; and how many lines they
/// hold. Shared by the `statsd_parse` and `statsd_udp` benches.
pub fn statsd_packets() -> (Vec<Vec<u8>>, usize) {
    let routes = ["/users", "/users/:id", "/orders", "/health", "/login"];
    let mut packets = Vec::new();
    let mut packet = Vec::new();
    let mut lines = 0;
    for i in 0..20_000usize {
        let route = routes[i % routes.len()];
        let line = match i % 6 {
            0 => format!("api.requests:1|c|#route:{route},method:GET,code:200\n"),
            1 => format!("api.latency:{}|ms|@0.5|#route:{route}\n", 3 + i % 200),
            2 => format!("svc{}.queue.depth:{}|g\n", i % 100, i % 1000),
            3 => format!("payload.size:{}.5|h|#route:{route}\n", i % 5000),
            4 => format!("svc{}.hits:1|c\n", i % 200),
            _ => format!("users.active:u{}|s\n", i % 300),
        };
        if packet.len() + line.len() > 1400 {
            packets.push(std::mem::take(&mut packet));
        }
        packet.extend_from_slice(line.as_bytes());
        lines += 1;
    }
    packets.push(packet);
    (packets, lines)
}

// ---------------------------------------------------------------------------------------------
// Process CPU time as a criterion measurement, for exporters whose work runs on their own threads.

use cpu_time::ProcessTime;
use criterion::Throughput;
use criterion::measurement::{Measurement, ValueFormatter};

/// Process CPU time (all threads: callers, exporter threads, the sinks), in nanoseconds.
pub struct ProcessCpu;

impl Measurement for ProcessCpu {
    type Intermediate = ProcessTime;
    type Value = Duration;

    fn start(&self) -> ProcessTime {
        ProcessTime::now()
    }
    fn end(&self, i: ProcessTime) -> Duration {
        i.elapsed()
    }
    fn add(&self, v1: &Duration, v2: &Duration) -> Duration {
        *v1 + *v2
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Formats nanoseconds of CPU time like criterion formats wall time.
pub struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if ns < 1e3 {
            (1.0, "ns")
        } else if ns < 1e6 {
            (1e-3, "µs")
        } else if ns < 1e9 {
            (1e-6, "ms")
        } else {
            (1e-9, "s")
        };
        for v in values {
            *v *= factor;
        }
        unit
    }

    fn scale_throughputs(
        &self,
        ns: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let elements = match *throughput {
            Throughput::Elements(n) | Throughput::ElementsAndBytes { elements: n, .. } => n,
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) | Throughput::Bits(n) => n,
        } as f64;
        let per_cpu_second = elements * 1e9 / ns;
        let (div, unit) = if per_cpu_second < 1e3 {
            (1.0, " elem/cpu-s")
        } else if per_cpu_second < 1e6 {
            (1e3, "Kelem/cpu-s")
        } else {
            (1e6, "Melem/cpu-s")
        };
        for v in values {
            *v = elements * 1e9 / *v / div;
        }
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}
