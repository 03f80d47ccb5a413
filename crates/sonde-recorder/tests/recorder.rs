//! The recorder as a local recorder over isolated registries.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

use std::sync::Arc;
use std::thread;

use metrics::{
    Unit as MUnit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use sonde_core::{Point, Registry, Snapshot, Unit, testing};
use sonde_recorder::{Builder, RECORDER_ERRORS, SondeRecorder, reason};

fn setup() -> (Registry, SondeRecorder) {
    setup_with(|builder| builder)
}

/// A recorder into a fresh registry, configured by `configure`.
fn setup_with(configure: impl FnOnce(Builder) -> Builder) -> (Registry, SondeRecorder) {
    let registry = testing::registry();
    let recorder = configure(SondeRecorder::builder(registry.clone())).build();
    (registry, recorder)
}

fn errors(snap: &Snapshot, metric: &str, reason: &str) -> f64 {
    snap.point(RECORDER_ERRORS, &[("metric", metric), ("reason", reason)])
        .and_then(Point::number)
        .map_or(0.0, |n| n.as_f64())
}

fn no_errors(snap: &Snapshot) {
    let f = snap.family(RECORDER_ERRORS).unwrap();
    let all: Vec<_> = f.series.iter().map(|s| f.labels(s)).collect();
    assert!(all.is_empty(), "unexpected recorder errors: {all:?}");
}

#[test]
fn counter_with_labels() {
    let (registry, recorder) = setup();
    recorder.with_local(|| {
        counter!("requests_total", "method" => "GET").increment(3);
        counter!("requests_total", "method" => "POST").increment(1);
        counter!("requests_total", "method" => "GET").increment(2);
        let method = String::from("PUT");
        counter!("requests_total", "method" => method).increment(4);
    });
    let snap = registry.snapshot();
    testing::assert_counter(&snap, "requests_total", &[("method", "GET")], 5.0);
    testing::assert_counter(&snap, "requests_total", &[("method", "POST")], 1.0);
    testing::assert_counter(&snap, "requests_total", &[("method", "PUT")], 4.0);
    let meta = &snap.family("requests_total").unwrap().meta;
    assert_eq!(meta.kind(), sonde_core::Kind::Counter);
    assert_eq!(meta.label_names().collect::<Vec<_>>(), ["method"]);
    no_errors(&snap);
}

#[test]
fn handles_are_cached_per_key() {
    let (_registry, recorder) = setup();
    recorder.with_local(|| {
        for _ in 0..100 {
            counter!("hits", "a" => "1", "b" => "2").increment(1);
            let (a, b) = ("1".to_string(), "2".to_string());
            // Same key with labels in another order, built at run time.
            counter!("hits", "b" => b, "a" => a).increment(1);
            gauge!("hits").set(1.0); // another kind: its own cache (and a conflict)
        }
    });
    assert_eq!(recorder.cached_keys(), 2);
}

#[test]
fn gauges() {
    let (registry, recorder) = setup();
    recorder.with_local(|| {
        describe_gauge!("pool.size", MUnit::Count, "Connections in the pool.");
        let g = gauge!("pool.size", "pool" => "main");
        g.set(10.0);
        g.increment(2.5);
        g.decrement(0.5);
        gauge!("temperature").set(-3.25);
        gauge!("temperature").increment(1.0);
    });
    let snap = registry.snapshot();
    testing::assert_gauge(&snap, "pool.size", &[("pool", "main")], 12.0);
    testing::assert_gauge(&snap, "temperature", &[], -2.25);
    let meta = &snap.family("pool.size").unwrap().meta;
    assert_eq!(meta.unit().ucum(), "{count}");
    assert_eq!(meta.description(), "Connections in the pool.");
    no_errors(&snap);
}

#[test]
fn histograms_and_buckets() {
    let (registry, recorder) = setup();
    recorder.with_local(|| {
        describe_histogram!(
            "db.query.time",
            MUnit::Seconds,
            "Time spent in database queries."
        );
        let h = histogram!("db.query.time", "table" => "users");
        for v in [0.003, 0.2, 2.0, 0.004] {
            h.record(v);
        }
        histogram!("request_latency_seconds").record(std::time::Duration::from_millis(250));
        histogram!("batch.size").record(7.0);
        histogram!("batch.size").record(600.0);
    });
    let snap = registry.snapshot();
    testing::assert_histogram(&snap, "db.query.time", &[("table", "users")], 4, 2.207);
    let meta = &snap.family("db.query.time").unwrap().meta;
    assert_eq!(meta.unit(), &Unit::Seconds);
    assert_eq!(meta.description(), "Time spent in database queries.");
    let h = snap
        .point("db.query.time", &[("table", "users")])
        .and_then(Point::histogram)
        .unwrap();
    let buckets = h.cumulative_buckets();
    let le = |bound: f64| buckets.iter().find(|(b, _)| *b == bound).unwrap().1;
    // Seconds buckets: 0.5 ms ... 60 s.
    assert_eq!(buckets[0].0, 0.0005);
    assert_eq!(le(0.0025), 0);
    assert_eq!(le(0.005), 2);
    assert_eq!(le(0.25), 3);
    assert_eq!(le(2.5), 4);

    // Seconds by name, Duration values in seconds.
    testing::assert_histogram(&snap, "request_latency_seconds", &[], 1, 0.25);
    let meta = &snap.family("request_latency_seconds").unwrap().meta;
    assert_eq!(meta.unit(), &Unit::Seconds);

    // No unit: the OpenTelemetry default buckets.
    testing::assert_histogram(&snap, "batch.size", &[], 2, 607.0);
    let h = snap
        .point("batch.size", &[])
        .and_then(Point::histogram)
        .unwrap();
    let buckets = h.cumulative_buckets();
    assert_eq!(buckets[1], (5.0, 0));
    assert_eq!(buckets[2], (10.0, 1));
    assert_eq!(snap.family("batch.size").unwrap().meta.unit(), &Unit::None);
    no_errors(&snap);
}

#[test]
fn histogram_units_and_explicit_buckets() {
    let (registry, recorder) = setup_with(|b| {
        b.histogram_buckets("payload", [1.0, 10.0, 100.0])
            .histogram_buckets("bad", [3.0, 1.0])
    });
    recorder.with_local(|| {
        describe_histogram!("gc.pause", MUnit::Nanoseconds, "GC pauses.");
        histogram!("gc.pause").record(2_000_000.0);
        histogram!("payload").record(50.0);
        histogram!("bad").record(1.0);
    });
    let snap = registry.snapshot();
    let meta = &snap.family("gc.pause").unwrap().meta;
    assert_eq!(meta.unit().ucum(), "ns");
    let h = snap
        .point("gc.pause", &[])
        .and_then(Point::histogram)
        .unwrap();
    let buckets = h.cumulative_buckets();
    assert_eq!(buckets[0].0, 500_000.0); // 0.5 ms in ns
    assert!(buckets.contains(&(2_500_000.0, 1)));
    // The quantile grid covers nanoseconds too.
    let p50 = h.quantile(0.5).unwrap();
    assert!((p50 - 2e6).abs() / 2e6 < 0.02, "{p50}");

    let h = snap
        .point("payload", &[])
        .and_then(Point::histogram)
        .unwrap();
    assert_eq!(
        h.cumulative_buckets(),
        [(1.0, 0), (10.0, 0), (100.0, 1), (f64::INFINITY, 1)]
    );
    assert!(snap.family("bad").is_none());
    assert_eq!(errors(&snap, "bad", reason::INVALID_HISTOGRAM), 1.0);
}

#[test]
fn describe_before_and_after_registration() {
    let (registry, recorder) = setup();
    recorder.with_local(|| {
        describe_counter!("bytes_sent", MUnit::Bytes, "Bytes sent.");
        counter!("bytes_sent").increment(10);
        // Same again: nothing changes, nothing counted.
        describe_counter!("bytes_sent", MUnit::Bytes, "Bytes sent.");
        counter!("late").increment(1);
        describe_counter!("late", "Described too late.");
        // A description for another kind does not apply to the counter.
        describe_gauge!("mixed", MUnit::Seconds, "A gauge description.");
        counter!("mixed").increment(1);
    });
    let snap = registry.snapshot();
    let meta = &snap.family("bytes_sent").unwrap().meta;
    assert_eq!(meta.unit(), &Unit::Bytes);
    assert_eq!(meta.description(), "Bytes sent.");
    assert_eq!(errors(&snap, "bytes_sent", reason::LATE_DESCRIBE), 0.0);
    assert_eq!(snap.family("late").unwrap().meta.description(), "");
    assert_eq!(errors(&snap, "late", reason::LATE_DESCRIBE), 1.0);
    let meta = &snap.family("mixed").unwrap().meta;
    assert_eq!((meta.unit(), meta.description()), (&Unit::None, ""));
}

#[test]
fn names_are_sanitized() {
    let (registry, recorder) = setup();
    recorder.with_local(|| {
        counter!("http requests", "content-type" => "json", "2xx" => "yes").increment(1);
        counter!("my.lib.latency-total", "http.method" => "GET").increment(1);
        counter!("9lives").increment(1);
        counter!("").increment(1);
        counter!("__internal", "__name__" => "x").increment(1);
        histogram!("h", "le" => "1", "quantile" => "0.5").record(1.0);
        counter!("héllo", "lé" => "é").increment(1);
    });
    let snap = registry.snapshot();
    testing::assert_counter(
        &snap,
        "http_requests",
        &[("content_type", "json"), ("_2xx", "yes")],
        1.0,
    );
    testing::assert_counter(
        &snap,
        "my.lib.latency-total",
        &[("http.method", "GET")],
        1.0,
    );
    testing::assert_counter(&snap, "m_9lives", &[], 1.0);
    testing::assert_counter(&snap, "m___internal", &[("_name__", "x")], 1.0);
    testing::assert_histogram(&snap, "h", &[("le_", "1"), ("quantile_", "0.5")], 1, 1.0);
    testing::assert_counter(&snap, "h_llo", &[("l_", "é")], 1.0);
    assert_eq!(errors(&snap, "", reason::INVALID_NAME), 1.0);
}

#[test]
fn conflicting_label_sets() {
    let (registry, recorder) = setup();
    recorder.with_local(|| {
        // The first key fixes the label names (sorted): [method, status].
        counter!("calls", "status" => "200", "method" => "GET").increment(1);
        // Same keys, other order: same series.
        counter!("calls", "method" => "GET", "status" => "200").increment(1);
        // A missing label gets "".
        counter!("calls", "method" => "POST").increment(2);
        counter!("calls").increment(3);
        // An extra label is dropped and counted.
        counter!("calls", "method" => "GET", "status" => "200", "user" => "u1").increment(4);
        counter!("calls", "method" => "GET", "status" => "200", "user" => "u2").increment(5);
        // Two keys with the same sanitized name: the first wins.
        counter!("calls", "method" => "PUT", "status" => "201", "status" => "202").increment(6);
    });
    let snap = registry.snapshot();
    let family = snap.family("calls").unwrap();
    assert_eq!(
        family.meta.label_names().collect::<Vec<_>>(),
        ["method", "status"]
    );
    testing::assert_counter(
        &snap,
        "calls",
        &[("method", "GET"), ("status", "200")],
        11.0,
    );
    testing::assert_counter(&snap, "calls", &[("method", "POST"), ("status", "")], 2.0);
    testing::assert_counter(&snap, "calls", &[("method", ""), ("status", "")], 3.0);
    testing::assert_counter(&snap, "calls", &[("method", "PUT"), ("status", "201")], 6.0);
    assert_eq!(family.series.len(), 4);
    // Counted once per distinct key.
    assert_eq!(errors(&snap, "calls", reason::LABEL_MISMATCH), 2.0);
    assert_eq!(errors(&snap, "calls", reason::DUPLICATE_LABEL), 1.0);
}

#[test]
fn existing_family_is_adopted() {
    let (registry, recorder) = setup();
    // Declared in sonde first with the union of the label keys the call sites use.
    let native = registry
        .counter("jobs")
        .description("Jobs run.")
        .labels(["queue", "result"])
        .build()
        .unwrap();
    native.with(&["emails", "ok"]).inc();
    recorder.with_local(|| {
        counter!("jobs", "queue" => "emails", "result" => "ok").increment(2);
        counter!("jobs", "queue" => "reports").increment(1);
        // Same name, other kind: refused and counted, no-op handle.
        gauge!("jobs").set(1.0);
        histogram!("jobs").record(1.0);
    });
    let snap = registry.snapshot();
    testing::assert_counter(&snap, "jobs", &[("queue", "emails"), ("result", "ok")], 3.0);
    testing::assert_counter(&snap, "jobs", &[("queue", "reports"), ("result", "")], 1.0);
    assert_eq!(snap.family("jobs").unwrap().meta.description(), "Jobs run.");
    assert_eq!(errors(&snap, "jobs", reason::CONFLICT), 2.0);
    assert_eq!(errors(&snap, "jobs", reason::LABEL_MISMATCH), 0.0);

    // A registry family of the same kind but another number type cannot be adopted.
    registry.gauge("depth").build().unwrap(); // i64
    recorder.with_local(|| gauge!("depth").set(2.0));
    assert_eq!(errors(&registry.snapshot(), "depth", reason::CONFLICT), 1.0);
}

#[test]
fn absolute_counters() {
    let (registry, recorder) = setup();
    let value = |registry: &Registry| {
        registry
            .snapshot()
            .point("external_total", &[("src", "a")])
            .and_then(Point::number)
            .unwrap()
            .as_f64()
    };
    recorder.with_local(|| {
        // Sets the counter's absolute value to `n`, then asserts the series reads `want`.
        let absolute = |n: u64, want: f64| {
            counter!("external_total", "src" => "a").absolute(n);
            assert_eq!(value(&registry), want, "after absolute({n})");
        };
        absolute(10, 10.0);
        absolute(15, 15.0);
        // Decreases are ignored.
        absolute(12, 15.0);
        absolute(15, 15.0);
        // Increments add on top, independently of absolute values.
        counter!("external_total", "src" => "a").increment(1);
        assert_eq!(value(&registry), 16.0);
        absolute(20, 21.0);
    });
    no_errors(&registry.snapshot());
}

#[test]
fn cache_limit() {
    let (registry, recorder) = setup_with(|b| b.max_cached_keys(1));
    recorder.with_local(|| {
        counter!("c", "k" => "cached").absolute(5);
        for _ in 0..3 {
            counter!("c", "k" => "uncached").increment(2);
            counter!("c", "k" => "uncached").absolute(100);
        }
        // A held uncached handle: increments fine.
        let held = counter!("c", "k" => "held");
        held.increment(1);
        held.increment(1);
        counter!("c", "k" => "cached").absolute(7);
    });
    assert_eq!(recorder.cached_keys(), 1);
    let snap = registry.snapshot();
    testing::assert_counter(&snap, "c", &[("k", "cached")], 7.0);
    testing::assert_counter(&snap, "c", &[("k", "uncached")], 6.0);
    testing::assert_counter(&snap, "c", &[("k", "held")], 2.0);
    assert_eq!(errors(&snap, "c", reason::ABSOLUTE_UNCACHED), 3.0);
}

#[test]
fn series_limit_applies() {
    let (registry, recorder) = setup_with(|b| b.max_series(10));
    recorder.with_local(|| {
        for i in 0..100 {
            counter!("by_user", "user" => i.to_string()).increment(1);
        }
    });
    let snap = registry.snapshot();
    let family = snap.family("by_user").unwrap();
    assert_eq!(family.series.len(), 11); // 10 + overflow
    let total: f64 = family
        .series
        .iter()
        .map(|s| s.point.number().unwrap().as_f64())
        .sum();
    assert_eq!(total, 100.0);
}

#[test]
fn many_threads_exact_totals() {
    const THREADS: usize = 8;
    const ITERS: u64 = 20_000;
    let (registry, recorder) = setup();
    let recorder = Arc::new(recorder);
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let recorder = recorder.clone();
            thread::spawn(move || {
                recorder.with_local(|| {
                    let parity = if t % 2 == 0 { "even" } else { "odd" };
                    for i in 0..ITERS {
                        counter!("ops_total").increment(1);
                        counter!("ops_by_parity", "parity" => parity).increment(2);
                        gauge!("level").increment(1.0);
                        histogram!("work.duration", "parity" => parity).record(0.001);
                        if i % 1000 == 0 {
                            // New keys while others record.
                            counter!("sparse", "i" => i.to_string()).increment(1);
                        }
                    }
                });
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let snap = registry.snapshot();
    let n = (THREADS as u64 * ITERS) as f64;
    testing::assert_counter(&snap, "ops_total", &[], n);
    testing::assert_counter(&snap, "ops_by_parity", &[("parity", "even")], n);
    testing::assert_counter(&snap, "ops_by_parity", &[("parity", "odd")], n);
    testing::assert_gauge(&snap, "level", &[], n);
    let half = THREADS as u64 / 2 * ITERS;
    testing::assert_histogram(
        &snap,
        "work.duration",
        &[("parity", "even")],
        half,
        half as f64 * 0.001,
    );
    testing::assert_counter(&snap, "sparse", &[("i", "0")], THREADS as f64);
    assert_eq!(snap.family("sparse").unwrap().series.len(), 20);
    no_errors(&snap);
}

/// `record_many` is one batched update, equal to that many records.
#[test]
fn record_many_counts_every_observation() {
    let (registry, recorder) = setup();
    recorder.with_local(|| {
        let h = histogram!("batch.wait");
        h.record_many(0.25, 1000);
        h.record_many(0.5, 0);
        h.record(0.5);
    });
    let snap = registry.snapshot();
    testing::assert_histogram(&snap, "batch.wait", &[], 1001, 250.5);
    no_errors(&snap);
}
