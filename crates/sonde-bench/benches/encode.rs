//! Prometheus text exposition of 10k and 100k mixed series, sonde and its peers side by side in
//! one criterion run: `cargo bench -p sonde-bench --bench encode`.
//!
//! The workload ([`sonde_bench::Mixed`]) is the same for every library: 40 % counters
//! (`http_server_requests_total{method,route,status}`), 30 % `f64` gauges
//! (`queue_depth{host,queue}`) and 30 % histograms
//! (`http_server_request_duration_seconds{method,route}`, 3 observations each, the 16 explicit
//! buckets of [`sonde_bench::BUCKETS`] in every library), by series count. Each iteration is one
//! scrape's worth of work with the output buffer reused between scrapes:
//!
//! - `sonde`: `encode_registry`, which reads each series right before writing it, as text 0.0.4
//!   into a cleared `Vec<u8>` (what the `/metrics` server does);
//! - `sonde_snapshot`: collect a cumulative snapshot first (`Reader::collect_into`, reusing the
//!   snapshot), then encode it: the path for consumers that need a snapshot;
//! - `sonde_openmetrics`: the same in OpenMetrics 1.0, which adds a `_created` line per counter
//!   and histogram series (prometheus-client writes OpenMetrics, without `_created`);
//! - `prometheus_client`: `prometheus_client::encoding::text::encode` (OpenMetrics text) into a
//!   cleared `String`;
//! - `metrics`: `metrics-exporter-prometheus`'s `PrometheusHandle::render_to_write` into a
//!   cleared `Vec<u8>` (its `render()` is the same plus a fresh `String` per call), histograms
//!   rendered as histograms with `set_buckets`. Nothing is recorded between scrapes, so its
//!   histogram sample queues are empty at each render.
//!
//! Before timing, each library's exposition is rendered once and its size and sample-line count
//! are printed and checked against the workload (the time of that first render is not
//! measured). sonde's output also holds its own `sonde_series_active{metric}` gauge, one series
//! per family (5 of them), as every sonde scrape does.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use metrics_exporter_prometheus::PrometheusBuilder;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::family::Family as PcFamily;
use prometheus_client::metrics::gauge::Gauge as PcGauge;
use prometheus_client::metrics::histogram::Histogram as PcHistogram;
use sonde::prometheus::{Format, encode};
use sonde_bench::{
    BUCKETS, MIXED_COUNTER_HELP, MIXED_GAUGE_HELP, MIXED_HISTOGRAM_HELP, Mixed, sonde_mixed,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CounterLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GaugeLabels {
    host: String,
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HistogramLabels {
    method: String,
    route: String,
}

type PcHistogramFamily = PcFamily<HistogramLabels, PcHistogram, fn() -> PcHistogram>;

/// A prometheus-client registry holding the mixed workload. The families are kept alive by the
/// registry (it holds clones).
fn prometheus_client_mixed(mixed: &Mixed) -> prometheus_client::registry::Registry {
    let mut registry = prometheus_client::registry::Registry::default();
    let counters = PcFamily::<CounterLabels, PcCounter>::default();
    registry.register("http_server_requests", MIXED_COUNTER_HELP, counters.clone());
    for (l, v) in &mixed.counters {
        counters
            .get_or_create(&CounterLabels {
                method: l[0].clone(),
                route: l[1].clone(),
                status: l[2].clone(),
            })
            .inc_by(*v);
    }
    let gauges = PcFamily::<GaugeLabels, PcGauge<f64, AtomicU64>>::default();
    registry.register("queue_depth", MIXED_GAUGE_HELP, gauges.clone());
    for (l, v) in &mixed.gauges {
        gauges
            .get_or_create(&GaugeLabels {
                host: l[0].clone(),
                queue: l[1].clone(),
            })
            .set(*v);
    }
    let histograms: PcHistogramFamily =
        PcFamily::new_with_constructor(|| PcHistogram::new(BUCKETS.iter().copied()));
    registry.register(
        "http_server_request_duration_seconds",
        MIXED_HISTOGRAM_HELP,
        histograms.clone(),
    );
    for (l, vs) in &mixed.histograms {
        let h = histograms.get_or_create(&HistogramLabels {
            method: l[0].clone(),
            route: l[1].clone(),
        });
        for v in vs {
            h.observe(*v);
        }
    }
    registry
}

/// A `metrics-exporter-prometheus` recorder holding the mixed workload, recorded through the
/// `metrics` macros with it as the local recorder.
fn metrics_mixed(mixed: &Mixed) -> metrics_exporter_prometheus::PrometheusHandle {
    let recorder = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_counter!("http_server_requests_total", MIXED_COUNTER_HELP);
        metrics::describe_gauge!("queue_depth", MIXED_GAUGE_HELP);
        metrics::describe_histogram!("http_server_request_duration_seconds", MIXED_HISTOGRAM_HELP);
        for (l, v) in &mixed.counters {
            metrics::counter!(
                "http_server_requests_total",
                "method" => l[0].clone(),
                "route" => l[1].clone(),
                "status" => l[2].clone()
            )
            .increment(*v);
        }
        for (l, v) in &mixed.gauges {
            metrics::gauge!("queue_depth", "host" => l[0].clone(), "queue" => l[1].clone()).set(*v);
        }
        for (l, vs) in &mixed.histograms {
            let h = metrics::histogram!(
                "http_server_request_duration_seconds",
                "method" => l[0].clone(),
                "route" => l[1].clone()
            );
            for v in vs {
                h.record(*v);
            }
        }
    });
    // The recorder itself is not needed to render: the handle shares its storage.
    drop(recorder);
    handle
}

/// Prints the size of one exposition and checks that it holds the expected samples: one line
/// per counter and gauge series, 19 (17 `le` buckets, `_sum`, `_count`) per histogram series,
/// plus a `_created` line per counter and histogram series where `created` is set.
/// `extra` is the number of series a library adds of its own (sonde's `sonde_series_active`
/// gauge, one series per family).
fn report(lib: &str, mixed: &Mixed, text: &[u8], created: bool, extra: usize) {
    let text = std::str::from_utf8(text).unwrap();
    let samples = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    let created_lines = if created {
        mixed.counters.len() + mixed.histograms.len()
    } else {
        0
    };
    let expected = mixed.counters.len()
        + mixed.gauges.len()
        + 19 * mixed.histograms.len()
        + created_lines
        + extra;
    let buckets = text.matches("_bucket{").count();
    println!(
        "exposition {:>6} series, {lib:<18} {:>10} bytes, {samples:>7} sample lines ({buckets} bucket lines, {extra} own series)",
        mixed.len(),
        text.len(),
    );
    assert_eq!(
        samples, expected,
        "{lib}: unexpected number of sample lines"
    );
    assert_eq!(buckets, 17 * mixed.histograms.len(), "{lib}: bucket lines");
}

fn encode_text(c: &mut Criterion, n: usize, label: &str) {
    let mixed = Mixed::new(n);
    assert_eq!(mixed.len(), n);

    let mut g = c.benchmark_group(format!("encode_text/{label}"));
    g.throughput(Throughput::Elements(n as u64));
    if n > 10_000 {
        // An iteration takes tens of milliseconds: one iteration per sample.
        g.sampling_mode(SamplingMode::Flat);
    }

    {
        let registry = sonde_mixed(&mixed);
        let mut reader = registry.reader(sonde::Temporality::Cumulative);
        let mut snapshot = sonde::Snapshot::default();
        for (name, format, streaming) in [
            ("sonde", Format::Text, true),
            ("sonde_openmetrics", Format::OpenMetrics, true),
            ("sonde_snapshot", Format::Text, false),
        ] {
            let mut out = Vec::new();
            reader.collect_into(&mut snapshot);
            // sonde also exports `sonde_series_active{metric}`, one series per family.
            let own = snapshot
                .family("sonde.series.active")
                .map_or(0, |f| f.series.len());
            assert_eq!(snapshot.series_count(), n + own);
            encode(&snapshot, None, format, &mut out);
            report(name, &mixed, &out, format == Format::OpenMetrics, own);
            g.bench_function(name, |b| {
                b.iter(|| {
                    out.clear();
                    if streaming {
                        sonde::prometheus::encode_registry(&registry, None, format, &mut out);
                    } else {
                        reader.collect_into(&mut snapshot);
                        encode(&snapshot, None, format, &mut out);
                    }
                    black_box(out.len())
                })
            });
        }
    }

    {
        let registry = prometheus_client_mixed(&mixed);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        report("prometheus_client", &mixed, out.as_bytes(), false, 0);
        g.bench_function("prometheus_client", |b| {
            b.iter(|| {
                out.clear();
                prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
                black_box(out.len())
            })
        });
    }

    {
        let handle = metrics_mixed(&mixed);
        let mut out = Vec::new();
        // The first render also drains the histogram samples recorded above into buckets.
        handle.render_to_write(&mut out).unwrap();
        report("metrics", &mixed, &out, false, 0);
        g.bench_function("metrics", |b| {
            b.iter(|| {
                out.clear();
                handle.render_to_write(&mut out).unwrap();
                black_box(out.len())
            })
        });
    }

    g.finish();
}

fn encode_10k(c: &mut Criterion) {
    encode_text(c, 10_000, "10k");
}

fn encode_100k(c: &mut Criterion) {
    encode_text(c, 100_000, "100k");
}

fn config() -> Criterion {
    // 20 samples over about 5 s per library (the slowest, `metrics` at 10k, stretches to ~9 s):
    // the two groups, with building 110k series in each library, take about two minutes.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = encode_10k, encode_100k
}
criterion_main!(benches);
