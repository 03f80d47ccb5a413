//! Time to create 100,000 labelled counter series, sonde and its peers in one criterion group
//! (`series_creation`).
//!
//! Each iteration gets a fresh registry and family (untimed), then times 100,000 first
//! increments of distinct label combinations `("m{i % 7}", "route{i}", "s{i % 5}")`, which is
//! what creates a series in every library; the structures are dropped after the timer stops.
//! The throughput line is series created per second.
//!
//! Label values are pre-built `String`s; the libraries whose keys must be owned
//! (`prometheus-client`, `opentelemetry_sdk`, `metrics`) clone them in the timed loop, as their
//! users do.
//!
//! The OpenTelemetry SDK caps every metric stream at 2,000 attribute sets by default (the rest
//! are folded into one overflow data point): a view raises the limit to 200,000 here so that it
//! really creates 100,000 series. sonde likewise gets `max_series(200_000)`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{Instrument, ManualReader, SdkMeterProvider, Stream};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::family::Family as PcFamily;
use sonde_bench::{CREATED_SERIES, LABEL_NAMES, creation_label_values};

/// Series limit given to the libraries that have one (sonde, OpenTelemetry SDK).
const LIMIT: usize = 200_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    method: String,
    route: String,
    status: String,
}

/// Times `create` over every label combination, `iters` times, each on a fresh structure from
/// `setup`. Setting up, `check` (which verifies, where the library can tell, that the series
/// really were created) and dropping are not timed.
fn timed<T>(
    iters: u64,
    labels: &[[String; 3]],
    mut setup: impl FnMut() -> T,
    mut create: impl FnMut(&T, &[String; 3]),
    check: impl Fn(&T),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let target = setup();
        let start = Instant::now();
        for values in labels {
            create(&target, values);
        }
        total += start.elapsed();
        check(&target);
        drop(target);
    }
    total
}

fn series_creation(c: &mut Criterion) {
    let labels = creation_label_values();
    let mut g = c.benchmark_group("series_creation");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(CREATED_SERIES as u64));

    g.bench_function("sonde", |b| {
        b.iter_custom(|n| {
            timed(
                n,
                &labels,
                || {
                    let registry = sonde::Registry::with_max_series(LIMIT);
                    let family = registry
                        .counter("c")
                        .labels(LABEL_NAMES)
                        .max_series(LIMIT)
                        .build()
                        .unwrap();
                    (registry, family)
                },
                |(_, family), v| family.with(&v[..]).inc(),
                |(_, family)| assert_eq!(family.series_count(), CREATED_SERIES),
            )
        })
    });

    g.bench_function("metrics", |b| {
        b.iter_custom(|n| {
            timed(
                n,
                &labels,
                || metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
                |recorder, v| {
                    // A local recorder per call costs a thread-local swap, a few ns next to
                    // creating a series; it stands in for the global recorder, which can be
                    // installed only once per process.
                    metrics::with_local_recorder(recorder, || {
                        metrics::counter!(
                            "c",
                            "method" => v[0].clone(),
                            "route" => v[1].clone(),
                            "status" => v[2].clone()
                        )
                        .increment(1);
                    });
                },
                |_| {},
            )
        })
    });

    g.bench_function("prometheus_client", |b| {
        b.iter_custom(|n| {
            timed(
                n,
                &labels,
                || {
                    let family = PcFamily::<Labels, PcCounter>::default();
                    let mut registry = prometheus_client::registry::Registry::default();
                    registry.register("c", "C.", family.clone());
                    (registry, family)
                },
                |(_, family), v| {
                    family
                        .get_or_create(&Labels {
                            method: v[0].clone(),
                            route: v[1].clone(),
                            status: v[2].clone(),
                        })
                        .inc();
                },
                |_| {},
            )
        })
    });

    g.bench_function("prometheus", |b| {
        b.iter_custom(|n| {
            timed(
                n,
                &labels,
                || {
                    let vec = prometheus::IntCounterVec::new(
                        prometheus::Opts::new("c", "C."),
                        &LABEL_NAMES,
                    )
                    .unwrap();
                    let registry = prometheus::Registry::new();
                    registry.register(Box::new(vec.clone())).unwrap();
                    (registry, vec)
                },
                |(_, vec), v| vec.with_label_values(&v[..]).inc(),
                |_| {},
            )
        })
    });

    g.bench_function("opentelemetry_sdk", |b| {
        b.iter_custom(|n| {
            timed(
                n,
                &labels,
                || {
                    let provider = SdkMeterProvider::builder()
                        .with_reader(ManualReader::builder().build())
                        .with_view(|_: &Instrument| {
                            Stream::builder().with_cardinality_limit(LIMIT).build().ok()
                        })
                        .build();
                    let counter = provider.meter("sonde-bench").u64_counter("c").build();
                    (provider, counter)
                },
                |(_, counter), v| {
                    counter.add(
                        1,
                        &[
                            KeyValue::new(LABEL_NAMES[0], v[0].clone()),
                            KeyValue::new(LABEL_NAMES[1], v[1].clone()),
                            KeyValue::new(LABEL_NAMES[2], v[2].clone()),
                        ],
                    );
                },
                |_| {},
            )
        })
    });

    g.finish();
}

fn config() -> Criterion {
    // Flat sampling with 10 samples: an iteration creates 100k series (tens to hundreds of ms),
    // so the whole group takes about a minute.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(10)
}

criterion_group! {
    name = benches;
    config = config();
    targets = series_creation
}
criterion_main!(benches);
