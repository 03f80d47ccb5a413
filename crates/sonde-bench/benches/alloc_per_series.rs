//! Memory per labelled counter series, sonde and its peers: not a criterion benchmark but a
//! table printed by `cargo bench -p sonde-bench --bench alloc_per_series`.
//!
//! A counting global allocator (wrapping the system allocator) tracks live bytes (allocated
//! minus freed) and the number of allocations. For each library: build the registry and family,
//! create one warm-up series, take a reading, create 100,000 more series with distinct labels
//! `("m{i % 7}", "route{i}", "s{i % 5}")` (label strings built before the first reading), take a
//! second reading while everything is still alive, then drop it all.
//!
//! - `live B/series`: growth of live bytes / 100,000. It includes each library's copy of the
//!   label values and its share of hash-table capacity (tables grow by doubling, so this depends
//!   a little on where 100,000 falls relative to a resize).
//! - `allocs/series`: allocation calls / 100,000, including transient ones (keys built for the
//!   lookup and freed again).
//!
//! A second table does the same for **histogram series**: 10,000 series with the first 10,000
//! label sets, each given 1,000 observations from one distribution, measured after the last
//! observation (so memory that grows with the data is in the figure):
//!
//! - `narrow`: uniform over 40–80 ms (one octave);
//! - `typical`: log-normal, median 30 ms, σ = 1.12 (p0.1 ≈ 0.95 ms, p99.9 ≈ 950 ms: three
//!   decades);
//! - `worst`: log-uniform over 1 µs–1000 s (every octave of sonde's seconds grid).
//!
//! sonde (default precision, the 16 explicit buckets of [`sonde_bench::BUCKETS`]),
//! prometheus-client and tikv `prometheus` (the same 16 buckets), the OpenTelemetry SDK with its
//! explicit-bucket histogram (same buckets) and its base-2 exponential histogram (160 buckets,
//! scale 20, its defaults), and `metrics` through `metrics-exporter-prometheus` (which keeps raw
//! samples until it renders, so its figure grows with the observations).
//!
//! This bench has its own binary because the counting allocator slows down allocation.
#![allow(unsafe_code, clippy::unwrap_used, missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{Aggregation, Instrument, ManualReader, SdkMeterProvider, Stream};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::family::Family as PcFamily;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sonde_bench::{BUCKETS, CREATED_SERIES, LABEL_NAMES, creation_label_values};

/// Series limit given to the libraries that have one (sonde, OpenTelemetry SDK).
const LIMIT: usize = 200_000;

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counters have no effect on it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Relaxed);
            ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Relaxed);
            ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as i64, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
            ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Reading {
    live: i64,
    allocs: u64,
}

fn reading() -> Reading {
    Reading {
        live: LIVE.load(Relaxed),
        allocs: ALLOCS.load(Relaxed),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    method: String,
    route: String,
    status: String,
}

/// Histogram series in the second table, and observations per series.
const HIST_SERIES: usize = 10_000;
const HIST_OBSERVATIONS: usize = 1_000;

/// The three distributions of the histogram table (seconds), seeded so every run sees the
/// same values.
fn distributions() -> Vec<(&'static str, Vec<f64>)> {
    let mut rng = StdRng::seed_from_u64(15);
    let mut normal = move || {
        // Box–Muller.
        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    };
    let mut rng = StdRng::seed_from_u64(16);
    let narrow = (0..HIST_OBSERVATIONS)
        .map(|_| 0.040 + 0.040 * rng.random::<f64>())
        .collect();
    let typical = (0..HIST_OBSERVATIONS)
        .map(|_| 0.030 * (1.12 * normal()).exp())
        .collect();
    let worst = (0..HIST_OBSERVATIONS)
        .map(|_| 10f64.powf(-6.0 + 9.0 * rng.random::<f64>()))
        .collect();
    vec![("narrow", narrow), ("typical", typical), ("worst", worst)]
}

/// Like [`measure`], for histograms: `observe` records every value of `values` into the series
/// of a label set (creating it on first use).
fn measure_histograms<T>(
    labels: &[[String; 3]],
    values: &[f64],
    setup: impl FnOnce() -> T,
    mut observe: impl FnMut(&T, &[String; 3], &[f64]),
) {
    let target = setup();
    observe(
        &target,
        &["warm".to_owned(), "up".to_owned(), "series".to_owned()],
        values,
    );
    let before = reading();
    for (i, l) in labels.iter().enumerate() {
        // Each series starts elsewhere in the sample, so no two see the same order.
        let at = (i * 7) % values.len();
        let rotated: Vec<f64> = values[at..].iter().chain(&values[..at]).copied().collect();
        observe(&target, l, &rotated);
        // Freed before the next reading: the copy is the bench's, not the library's.
        drop(rotated);
    }
    let after = reading();
    print!(
        " {:>9.0}",
        (after.live - before.live) as f64 / labels.len() as f64
    );
    drop(target);
}

/// Builds a structure with `setup`, creates one warm-up series and then one series per entry of
/// `labels` with `create`, and prints the growth per series between the warm-up and the end.
/// `check` then verifies, where the library can tell, that the series really were created.
fn measure<T>(
    name: &str,
    labels: &[[String; 3]],
    setup: impl FnOnce() -> T,
    mut create: impl FnMut(&T, &[String; 3]),
    check: impl FnOnce(&T),
) {
    let target = setup();
    create(
        &target,
        &["warm".to_owned(), "up".to_owned(), "series".to_owned()],
    );
    let before = reading();
    for values in labels {
        create(&target, values);
    }
    let after = reading();
    let n = labels.len() as f64;
    println!(
        "{name:<20} {:>14.1} {:>14.2} {:>16.1}",
        (after.live - before.live) as f64 / n,
        (after.allocs - before.allocs) as f64 / n,
        (after.live - before.live) as f64 / (1024.0 * 1024.0),
    );
    check(&target);
    drop(target);
}

/// The first positional argument, if any: `cargo bench` passes `--bench` and whatever follows
/// `--`, which may include criterion options and their values (`--warm-up-time 0.2`); those are
/// skipped. A filter selects libraries by substring.
fn filter(args: &[String]) -> Option<&str> {
    const FLAGS: &[&str] = &[
        "--bench",
        "--test",
        "--exact",
        "--ignored",
        "--nocapture",
        "--quiet",
        "-q",
        "--verbose",
        "-v",
        "-n",
        "--noplot",
        "--discard-baseline",
        "--quick",
    ];
    let mut previous_takes_value = false;
    for a in args {
        if a.starts_with('-') {
            previous_takes_value = !FLAGS.contains(&a.as_str()) && !a.contains('=');
        } else if previous_takes_value {
            previous_takes_value = false;
        } else {
            return Some(a);
        }
    }
    None
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let filter = filter(&args);
    let wanted = |name: &str| filter.is_none_or(|f| name.contains(f));
    let labels = creation_label_values();
    assert_eq!(labels.len(), CREATED_SERIES);

    println!(
        "alloc_per_series: {CREATED_SERIES} labelled counter series (3 labels), after 1 warm-up series"
    );
    println!(
        "{:<20} {:>14} {:>14} {:>16}",
        "library", "live B/series", "allocs/series", "live MiB total"
    );

    if wanted("sonde") {
        measure(
            "sonde",
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
            |(_, family)| assert_eq!(family.series_count(), CREATED_SERIES + 1),
        );
    }

    if wanted("metrics") {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            measure(
                "metrics",
                &labels,
                || (),
                |(), v| {
                    metrics::counter!(
                        "c",
                        "method" => v[0].clone(),
                        "route" => v[1].clone(),
                        "status" => v[2].clone()
                    )
                    .increment(1);
                },
                |()| {},
            );
        });
    }

    if wanted("prometheus_client") {
        measure(
            "prometheus_client",
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
        );
    }

    if wanted("prometheus") {
        measure(
            "prometheus",
            &labels,
            || {
                let vec =
                    prometheus::IntCounterVec::new(prometheus::Opts::new("c", "C."), &LABEL_NAMES)
                        .unwrap();
                let registry = prometheus::Registry::new();
                registry.register(Box::new(vec.clone())).unwrap();
                (registry, vec)
            },
            |(_, vec), v| vec.with_label_values(&v[..]).inc(),
            |_| {},
        );
    }

    if wanted("opentelemetry_sdk") {
        measure(
            "opentelemetry_sdk",
            &labels,
            || {
                // The default cardinality limit (2,000 attribute sets per stream) would fold
                // almost every series into the overflow data point.
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
        );
    }
    histograms(&labels[..HIST_SERIES], &wanted);
}

/// The histogram table: one row per library, one column per distribution.
fn histograms(labels: &[[String; 3]], wanted: &dyn Fn(&str) -> bool) {
    let dists = distributions();
    println!();
    println!(
        "alloc_per_series: {HIST_SERIES} labelled histogram series (3 labels), {HIST_OBSERVATIONS} observations each; live B/series"
    );
    print!("{:<28}", "library");
    for (name, _) in &dists {
        print!(" {name:>9}");
    }
    println!();
    let row = |name: &str, f: &dyn Fn(&[f64])| {
        if wanted(name) {
            print!("{name:<28}");
            for (_, values) in &dists {
                f(values);
            }
            println!();
        }
    };
    row("sonde", &|values| {
        measure_histograms(
            labels,
            values,
            || {
                let registry = sonde::Registry::with_max_series(LIMIT);
                let family = registry
                    .histogram("h")
                    .unit(sonde::Unit::Seconds)
                    .buckets(BUCKETS)
                    .labels(LABEL_NAMES)
                    .max_series(LIMIT)
                    .build()
                    .unwrap();
                (registry, family)
            },
            |(_, family), l, values| {
                let h = family.with(&l[..]);
                for v in values {
                    h.observe(*v);
                }
            },
        )
    });
    row("prometheus_client", &|values| {
        type Ctor = fn() -> prometheus_client::metrics::histogram::Histogram;
        measure_histograms(
            labels,
            values,
            || {
                let family = PcFamily::<
                    Labels,
                    prometheus_client::metrics::histogram::Histogram,
                    Ctor,
                >::new_with_constructor(|| {
                    prometheus_client::metrics::histogram::Histogram::new(BUCKETS.iter().copied())
                });
                let mut registry = prometheus_client::registry::Registry::default();
                registry.register("h", "H.", family.clone());
                (registry, family)
            },
            |(_, family), l, values| {
                let h = family.get_or_create(&Labels {
                    method: l[0].clone(),
                    route: l[1].clone(),
                    status: l[2].clone(),
                });
                for v in values {
                    h.observe(*v);
                }
            },
        )
    });
    row("prometheus", &|values| {
        measure_histograms(
            labels,
            values,
            || {
                let vec = prometheus::HistogramVec::new(
                    prometheus::HistogramOpts::new("h", "H.").buckets(BUCKETS.to_vec()),
                    &LABEL_NAMES,
                )
                .unwrap();
                let registry = prometheus::Registry::new();
                registry.register(Box::new(vec.clone())).unwrap();
                (registry, vec)
            },
            |(_, vec), l, values| {
                let h = vec.with_label_values(&l[..]);
                for v in values {
                    h.observe(*v);
                }
            },
        )
    });
    for (name, aggregation) in [
        (
            "opentelemetry_sdk",
            Aggregation::ExplicitBucketHistogram {
                boundaries: BUCKETS.to_vec(),
                record_min_max: true,
            },
        ),
        (
            "opentelemetry_sdk (exponential)",
            Aggregation::Base2ExponentialHistogram {
                max_size: 160,
                max_scale: 20,
                record_min_max: true,
            },
        ),
    ] {
        row(name, &|values| {
            let aggregation = aggregation.clone();
            measure_histograms(
                labels,
                values,
                move || {
                    let provider = SdkMeterProvider::builder()
                        .with_reader(ManualReader::builder().build())
                        .with_view(move |_: &Instrument| {
                            Stream::builder()
                                .with_aggregation(aggregation.clone())
                                .with_cardinality_limit(LIMIT)
                                .build()
                                .ok()
                        })
                        .build();
                    let h = provider.meter("sonde-bench").f64_histogram("h").build();
                    (provider, h)
                },
                |(_, h), l, values| {
                    let attrs = [
                        KeyValue::new(LABEL_NAMES[0], l[0].clone()),
                        KeyValue::new(LABEL_NAMES[1], l[1].clone()),
                        KeyValue::new(LABEL_NAMES[2], l[2].clone()),
                    ];
                    for v in values {
                        h.record(*v, &attrs);
                    }
                },
            )
        });
    }
    row("metrics", &|values| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            measure_histograms(
                labels,
                values,
                || (),
                |(), l, values| {
                    let h = metrics::histogram!(
                        "h",
                        "method" => l[0].clone(),
                        "route" => l[1].clone(),
                        "status" => l[2].clone()
                    );
                    for v in values {
                        h.record(*v);
                    }
                },
            )
        });
    });
}
