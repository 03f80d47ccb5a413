//! Recording cost of sonde and its peers, side by side in one criterion run.
//!
//! Groups (each with sonde, every peer that supports the workload and, where it applies, a raw
//! `AtomicU64::fetch_add(1, Relaxed)` floor):
//!
//! - `counter_inc`: unlabelled counter increment through a held handle;
//! - `counter_labels_lookup`: counter with 3 labels looked up by value on every call, cycling
//!   through 1,000 existing series;
//! - `histogram_observe`: histogram observation through a held handle, cycling through 4,096
//!   pre-generated log-normal latencies (seconds), every library counting into the same 16
//!   explicit buckets ([`sonde_bench::BUCKETS`]);
//! - `request_path`: the work of one served request: look up the series of a labelled
//!   histogram by method, route and status (600 series, values as runtime strings) and observe
//!   its latency, as an HTTP middleware does;
//! - `histogram_observe_n`: 1,000 observations of one value through one `observe_n` and
//!   through a loop of `observe` (sonde only);
//! - `contended_2_threads`: the same counter and the same histogram hammered by 1 and by 2
//!   threads. The time per iteration is the wall time for each thread to do one operation, so
//!   perfect scaling shows the same time for both; the throughput line gives aggregate ops/s.
//!
//! Peers: `metrics` (0.24, behind the `metrics-exporter-prometheus` recorder, the one most of its
//! users install, as a local recorder), `prometheus-client` (0.24), `prometheus` (tikv, 0.14) and
//! `opentelemetry_sdk` (0.33, cumulative pipeline with a `ManualReader`, nothing exporting in the
//! background).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::family::Family as PcFamily;
use prometheus_client::metrics::histogram::Histogram as PcHistogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sonde_bench::{
    BUCKETS, LABEL_NAMES, LOOKUP_SERIES, lookup_label_values, run_loop, run_threads,
};

/// Number of pre-generated latencies (a power of two, indexed with `i & SAMPLE_MASK`).
const SAMPLES: usize = 4096;
const SAMPLE_MASK: usize = SAMPLES - 1;

/// Log-normal latencies in seconds: median 5 ms, σ = 1.2 (so p1 ≈ 0.3 ms, p99 ≈ 80 ms), spread
/// over the whole bucket range. Box–Muller on a seeded generator, so every run sees the same
/// values.
fn latencies() -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    (0..SAMPLES)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
            let u2: f64 = rng.random();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (0.005f64.ln() + 1.2 * z).exp()
        })
        .collect()
}

/// An OpenTelemetry SDK pipeline with a manual reader (cumulative temporality). The provider
/// must outlive the instruments: once it is dropped (shut down) they stop recording.
fn otel() -> (SdkMeterProvider, Meter) {
    let provider = SdkMeterProvider::builder()
        .with_reader(ManualReader::builder().build())
        .build();
    let meter = provider.meter("sonde-bench");
    (provider, meter)
}

/// The `metrics-exporter-prometheus` recorder (no HTTP listener), histograms rendered with
/// [`BUCKETS`]. Its histograms append every sample to a queue drained by upkeep: the benchmarks
/// run upkeep after each timed batch (untimed) so that memory stays bounded.
fn metrics_recorder() -> (PrometheusRecorder, PrometheusHandle) {
    let recorder = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    (recorder, handle)
}

/// Label set of the prometheus-client family. Its `Family` is keyed by an owned label set, so a
/// lookup from runtime values has to build one (three `String` clones) on every call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

impl RequestLabels {
    fn new(values: &[String; 3]) -> Self {
        Self {
            method: values[0].clone(),
            route: values[1].clone(),
            status: values[2].clone(),
        }
    }
}

/// OpenTelemetry attributes for one lookup. `KeyValue` values must be `'static` or owned, so
/// runtime `String` values are cloned on every call (with `&'static str` values they would not).
fn otel_attributes(values: &[String; 3]) -> [KeyValue; 3] {
    [
        KeyValue::new(LABEL_NAMES[0], values[0].clone()),
        KeyValue::new(LABEL_NAMES[1], values[1].clone()),
        KeyValue::new(LABEL_NAMES[2], values[2].clone()),
    ]
}

/// The idiomatic `metrics` call site with runtime label values: `Label` values must be
/// `'static` or owned, so they are cloned on every call, and the key is looked up (and, by this
/// recorder, cloned) on every call.
macro_rules! metrics_requests {
    ($values:expr) => {{
        let v: &[String; 3] = $values;
        metrics::counter!(
            "requests",
            "method" => v[0].clone(),
            "route" => v[1].clone(),
            "status" => v[2].clone()
        )
    }};
}

fn counter_inc(c: &mut Criterion) {
    let mut g = c.benchmark_group("counter_inc");

    let atomic = AtomicU64::new(0);
    g.bench_function("atomic_floor", |b| {
        b.iter_custom(|n| {
            run_loop(n, |_| {
                black_box(&atomic).fetch_add(1, Relaxed);
            })
        })
    });

    let registry = sonde::Registry::new();
    let sonde_counter = registry.counter("jobs").build().unwrap().handle();
    g.bench_function("sonde", |b| {
        b.iter_custom(|n| run_loop(n, |_| black_box(&sonde_counter).inc()))
    });

    let (recorder, _handle) = metrics_recorder();
    let metrics_counter = metrics::with_local_recorder(&recorder, || metrics::counter!("jobs"));
    g.bench_function("metrics", |b| {
        b.iter_custom(|n| run_loop(n, |_| black_box(&metrics_counter).increment(1)))
    });

    let pc_counter = PcCounter::<u64>::default();
    let mut pc_registry = prometheus_client::registry::Registry::default();
    pc_registry.register("jobs", "Jobs.", pc_counter.clone());
    g.bench_function("prometheus_client", |b| {
        b.iter_custom(|n| {
            run_loop(n, |_| {
                black_box(&pc_counter).inc();
            })
        })
    });

    let prom_counter = prometheus::IntCounter::new("jobs", "Jobs.").unwrap();
    let prom_registry = prometheus::Registry::new();
    prom_registry
        .register(Box::new(prom_counter.clone()))
        .unwrap();
    g.bench_function("prometheus", |b| {
        b.iter_custom(|n| run_loop(n, |_| black_box(&prom_counter).inc()))
    });

    let (_provider, meter) = otel();
    let otel_counter = meter.u64_counter("jobs").build();
    g.bench_function("opentelemetry_sdk", |b| {
        b.iter_custom(|n| run_loop(n, |_| black_box(&otel_counter).add(1, &[])))
    });

    g.finish();
}

fn counter_labels_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("counter_labels_lookup");
    let combos = lookup_label_values();
    let values = |i: usize| black_box(&combos[i % LOOKUP_SERIES]);

    let registry = sonde::Registry::new();
    let sonde_family = registry
        .counter("requests")
        .labels(LABEL_NAMES)
        .build()
        .unwrap();
    for v in &combos {
        sonde_family.with(&v[..]).inc();
    }
    g.bench_function("sonde", |b| {
        b.iter_custom(|n| run_loop(n, |i| sonde_family.with(&values(i)[..]).inc()))
    });

    let (recorder, _handle) = metrics_recorder();
    metrics::with_local_recorder(&recorder, || {
        for v in &combos {
            metrics_requests!(v).increment(1);
        }
    });
    g.bench_function("metrics", |b| {
        metrics::with_local_recorder(&recorder, || {
            b.iter_custom(|n| run_loop(n, |i| metrics_requests!(values(i)).increment(1)))
        })
    });

    let pc_family = PcFamily::<RequestLabels, PcCounter>::default();
    let mut pc_registry = prometheus_client::registry::Registry::default();
    pc_registry.register("requests", "Requests.", pc_family.clone());
    for v in &combos {
        pc_family.get_or_create(&RequestLabels::new(v)).inc();
    }
    g.bench_function("prometheus_client", |b| {
        b.iter_custom(|n| {
            run_loop(n, |i| {
                pc_family
                    .get_or_create(&RequestLabels::new(values(i)))
                    .inc();
            })
        })
    });

    let prom_vec = prometheus::IntCounterVec::new(
        prometheus::Opts::new("requests", "Requests."),
        &LABEL_NAMES,
    )
    .unwrap();
    let prom_registry = prometheus::Registry::new();
    prom_registry.register(Box::new(prom_vec.clone())).unwrap();
    for v in &combos {
        prom_vec.with_label_values(&v[..]).inc();
    }
    g.bench_function("prometheus", |b| {
        b.iter_custom(|n| run_loop(n, |i| prom_vec.with_label_values(&values(i)[..]).inc()))
    });

    let (_provider, meter) = otel();
    let otel_counter = meter.u64_counter("requests").build();
    for v in &combos {
        otel_counter.add(1, &otel_attributes(v));
    }
    g.bench_function("opentelemetry_sdk", |b| {
        b.iter_custom(|n| run_loop(n, |i| otel_counter.add(1, &otel_attributes(values(i)))))
    });

    g.finish();
}

fn histogram_observe(c: &mut Criterion) {
    let mut g = c.benchmark_group("histogram_observe");
    let samples = latencies();
    let sample = |i: usize| black_box(samples[i & SAMPLE_MASK]);

    let registry = sonde::Registry::new();
    let sonde_hist = registry
        .histogram("latency")
        .unit(sonde::Unit::Seconds)
        .buckets(BUCKETS)
        .build()
        .unwrap()
        .handle();
    g.bench_function("sonde", |b| {
        b.iter_custom(|n| run_loop(n, |i| sonde_hist.observe(sample(i))))
    });

    let (recorder, handle) = metrics_recorder();
    let metrics_hist = metrics::with_local_recorder(&recorder, || metrics::histogram!("latency"));
    g.bench_function("metrics", |b| {
        b.iter_custom(|n| {
            let d = run_loop(n, |i| metrics_hist.record(sample(i)));
            handle.run_upkeep();
            d
        })
    });

    let pc_hist = PcHistogram::new(BUCKETS.iter().copied());
    let mut pc_registry = prometheus_client::registry::Registry::default();
    pc_registry.register("latency", "Latency.", pc_hist.clone());
    g.bench_function("prometheus_client", |b| {
        b.iter_custom(|n| run_loop(n, |i| pc_hist.observe(sample(i))))
    });

    let prom_hist = prometheus::Histogram::with_opts(
        prometheus::HistogramOpts::new("latency", "Latency.").buckets(BUCKETS.to_vec()),
    )
    .unwrap();
    let prom_registry = prometheus::Registry::new();
    prom_registry.register(Box::new(prom_hist.clone())).unwrap();
    g.bench_function("prometheus", |b| {
        b.iter_custom(|n| run_loop(n, |i| prom_hist.observe(sample(i))))
    });

    let (_provider, meter) = otel();
    let otel_hist = meter
        .f64_histogram("latency")
        .with_unit("s")
        .with_boundaries(BUCKETS.to_vec())
        .build();
    g.bench_function("opentelemetry_sdk", |b| {
        b.iter_custom(|n| run_loop(n, |i| otel_hist.record(sample(i), &[])))
    });

    g.finish();
}

/// `request_path`: per request, a labelled histogram's series looked up by method, route and
/// status among 600 (4 methods x 30 routes x 5 statuses, in the lookup bench's interleaved
/// order) and one latency observed into it.
fn request_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_path");
    let combos: Vec<[String; 3]> = lookup_label_values()
        .into_iter()
        .filter(|v| {
            v[1].strip_prefix("/api/v1/resource")
                .and_then(|r| r.strip_suffix("/:id"))
                .and_then(|r| r.parse::<u32>().ok())
                .is_some_and(|r| r < 30)
        })
        .collect();
    assert_eq!(combos.len(), 600);
    let samples = latencies();
    let at = |i: usize| {
        (
            black_box(&combos[i % combos.len()]),
            black_box(samples[i & SAMPLE_MASK]),
        )
    };

    let registry = sonde::Registry::new();
    let sonde_family = registry
        .histogram("http.server.request.duration")
        .unit(sonde::Unit::Seconds)
        .buckets(BUCKETS)
        .labels(LABEL_NAMES)
        .build()
        .unwrap();
    for v in &combos {
        sonde_family.with(&v[..]).observe(0.01);
    }
    g.bench_function("sonde", |b| {
        b.iter_custom(|n| {
            run_loop(n, |i| {
                let (v, x) = at(i);
                sonde_family.with(&v[..]).observe(x);
            })
        })
    });

    let (recorder, handle) = metrics_recorder();
    macro_rules! metrics_latency {
        ($v:expr) => {{
            let v: &[String; 3] = $v;
            metrics::histogram!(
                "http_server_request_duration_seconds",
                "method" => v[0].clone(),
                "route" => v[1].clone(),
                "status" => v[2].clone()
            )
        }};
    }
    metrics::with_local_recorder(&recorder, || {
        for v in &combos {
            metrics_latency!(v).record(0.01);
        }
    });
    g.bench_function("metrics", |b| {
        metrics::with_local_recorder(&recorder, || {
            b.iter_custom(|n| {
                let d = run_loop(n, |i| {
                    let (v, x) = at(i);
                    metrics_latency!(v).record(x);
                });
                handle.run_upkeep();
                d
            })
        })
    });

    type PcCtor = fn() -> PcHistogram;
    let pc_family = PcFamily::<RequestLabels, PcHistogram, PcCtor>::new_with_constructor(|| {
        PcHistogram::new(BUCKETS.iter().copied())
    });
    let mut pc_registry = prometheus_client::registry::Registry::default();
    pc_registry.register("latency", "Latency.", pc_family.clone());
    for v in &combos {
        pc_family
            .get_or_create(&RequestLabels::new(v))
            .observe(0.01);
    }
    g.bench_function("prometheus_client", |b| {
        b.iter_custom(|n| {
            run_loop(n, |i| {
                let (v, x) = at(i);
                pc_family.get_or_create(&RequestLabels::new(v)).observe(x);
            })
        })
    });

    let prom_vec = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new("latency", "Latency.").buckets(BUCKETS.to_vec()),
        &LABEL_NAMES,
    )
    .unwrap();
    let prom_registry = prometheus::Registry::new();
    prom_registry.register(Box::new(prom_vec.clone())).unwrap();
    for v in &combos {
        prom_vec.with_label_values(&v[..]).observe(0.01);
    }
    g.bench_function("prometheus", |b| {
        b.iter_custom(|n| {
            run_loop(n, |i| {
                let (v, x) = at(i);
                prom_vec.with_label_values(&v[..]).observe(x);
            })
        })
    });

    let (_provider, meter) = otel();
    let otel_hist = meter
        .f64_histogram("http.server.request.duration")
        .with_unit("s")
        .with_boundaries(BUCKETS.to_vec())
        .build();
    for v in &combos {
        otel_hist.record(0.01, &otel_attributes(v));
    }
    g.bench_function("opentelemetry_sdk", |b| {
        b.iter_custom(|n| {
            run_loop(n, |i| {
                let (v, x) = at(i);
                otel_hist.record(x, &otel_attributes(v));
            })
        })
    });

    g.finish();
}

/// `histogram_observe_n`: 1,000 observations of one value (a StatsD timer sampled at 0.1 %),
/// as one `observe_n(v, 1000)` against a loop of 1,000 `observe(v)`, cycling through the same
/// latencies as `histogram_observe`. Time per iteration is for all 1,000.
fn histogram_observe_n(c: &mut Criterion) {
    const N: u64 = 1000;
    let mut g = c.benchmark_group("histogram_observe_n");
    g.throughput(Throughput::Elements(N));
    let samples = latencies();
    let sample = |i: usize| black_box(samples[i & SAMPLE_MASK]);
    let registry = sonde::Registry::new();
    let make = |name: &'static str| {
        registry
            .histogram(name)
            .unit(sonde::Unit::Seconds)
            .buckets(BUCKETS)
            .build()
            .unwrap()
            .handle()
    };
    let (batched, looped) = (make("batched"), make("looped"));
    g.bench_function("observe_n_1000", |b| {
        b.iter_custom(|n| run_loop(n, |i| batched.observe_n(sample(i), black_box(N))))
    });
    g.bench_function("observe_loop_1000", |b| {
        b.iter_custom(|n| {
            run_loop(n, |i| {
                let v = sample(i);
                for _ in 0..black_box(N) {
                    looped.observe(v);
                }
            })
        })
    });
    g.finish();
}

/// Benchmarks `op` with 1 and with 2 threads under `counter/<name>` or `histogram/<name>`,
/// running `after` (untimed) after each timed batch.
fn one_and_two_threads<F, A>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, op: F, after: A)
where
    F: Fn(usize) + Sync,
    A: Fn(),
{
    for threads in [1usize, 2] {
        let id = if threads == 1 {
            "1_thread"
        } else {
            "2_threads"
        };
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::new(name, id), |b| {
            b.iter_custom(|n| {
                let d = run_threads(threads, n, &op);
                after();
                d
            })
        });
    }
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("contended_2_threads");
    let samples = latencies();
    let sample = |i: usize| black_box(samples[i & SAMPLE_MASK]);
    let nothing = || {};

    // Counters.
    let atomic = AtomicU64::new(0);
    one_and_two_threads(
        &mut g,
        "counter/atomic_floor",
        |_| {
            black_box(&atomic).fetch_add(1, Relaxed);
        },
        nothing,
    );

    let registry = sonde::Registry::new();
    let sonde_counter = registry.counter("jobs").build().unwrap().handle();
    one_and_two_threads(
        &mut g,
        "counter/sonde",
        |_| black_box(&sonde_counter).inc(),
        nothing,
    );

    let (recorder, handle) = metrics_recorder();
    let metrics_counter = metrics::with_local_recorder(&recorder, || metrics::counter!("jobs"));
    one_and_two_threads(
        &mut g,
        "counter/metrics",
        |_| black_box(&metrics_counter).increment(1),
        nothing,
    );

    let pc_counter = PcCounter::<u64>::default();
    one_and_two_threads(
        &mut g,
        "counter/prometheus_client",
        |_| {
            black_box(&pc_counter).inc();
        },
        nothing,
    );

    let prom_counter = prometheus::IntCounter::new("jobs", "Jobs.").unwrap();
    one_and_two_threads(
        &mut g,
        "counter/prometheus",
        |_| black_box(&prom_counter).inc(),
        nothing,
    );

    let (_provider, meter) = otel();
    let otel_counter = meter.u64_counter("jobs").build();
    one_and_two_threads(
        &mut g,
        "counter/opentelemetry_sdk",
        |_| black_box(&otel_counter).add(1, &[]),
        nothing,
    );

    // Histograms.
    let sonde_hist = registry
        .histogram("latency")
        .unit(sonde::Unit::Seconds)
        .buckets(BUCKETS)
        .build()
        .unwrap()
        .handle();
    one_and_two_threads(
        &mut g,
        "histogram/sonde",
        |i| sonde_hist.observe(sample(i)),
        nothing,
    );

    let metrics_hist = metrics::with_local_recorder(&recorder, || metrics::histogram!("latency"));
    one_and_two_threads(
        &mut g,
        "histogram/metrics",
        |i| metrics_hist.record(sample(i)),
        || handle.run_upkeep(),
    );

    let pc_hist = PcHistogram::new(BUCKETS.iter().copied());
    one_and_two_threads(
        &mut g,
        "histogram/prometheus_client",
        |i| pc_hist.observe(sample(i)),
        nothing,
    );

    let prom_hist = prometheus::Histogram::with_opts(
        prometheus::HistogramOpts::new("latency", "Latency.").buckets(BUCKETS.to_vec()),
    )
    .unwrap();
    one_and_two_threads(
        &mut g,
        "histogram/prometheus",
        |i| prom_hist.observe(sample(i)),
        nothing,
    );

    let otel_hist = meter
        .f64_histogram("latency")
        .with_unit("s")
        .with_boundaries(BUCKETS.to_vec())
        .build();
    one_and_two_threads(
        &mut g,
        "histogram/opentelemetry_sdk",
        |i| otel_hist.record(sample(i), &[]),
        nothing,
    );

    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = instruments;
    config = config();
    targets = counter_inc, counter_labels_lookup, histogram_observe, request_path, histogram_observe_n, contended
}
criterion_main!(instruments);
