//! Exact totals from many threads, and snapshots taken while writers run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use sonde_core::{Number, Point, Registry, Temporality, Unit, testing};

const THREADS: usize = 8;
const PER_THREAD: u64 = 100_000;

#[test]
fn concurrent_increments_sum_exactly() {
    let reg = Registry::new();
    // Striped, so per-thread stripes must add up exactly; the other test covers unstriped ones.
    let counter = testing::family(reg.counter("c").labels(["worker", "kind"]).striped(true));
    let fcounter = testing::handle(reg.counter_f64("cpu.time").unit(Unit::Seconds));
    let gauge = testing::handle(reg.gauge("g"));
    let updown = testing::handle(reg.up_down_counter_f64("ud"));
    let hist = testing::seconds_histogram(&reg, "h", &[]).handle();
    thread::scope(|s| {
        for t in 0..THREADS {
            let (counter, fcounter, gauge, updown, hist) = (
                &counter,
                fcounter.clone(),
                gauge.clone(),
                updown.clone(),
                hist.clone(),
            );
            s.spawn(move || {
                let shared = counter.with(&["all", "x"]);
                let own_name = format!("w{t}");
                for i in 0..PER_THREAD {
                    shared.inc();
                    // Looked up on every call, racing with other threads creating the same series.
                    counter.with(&[own_name.as_str(), "y"]).add(2);
                    counter
                        .with(&["all", if i % 2 == 0 { "even" } else { "odd" }])
                        .inc();
                    fcounter.add(0.5);
                    gauge.inc();
                    if i % 2 == 0 {
                        gauge.dec();
                    }
                    updown.add(0.25);
                    hist.observe(0.001 * (i % 1000 + 1) as f64);
                }
            });
        }
    });
    let total = THREADS as u64 * PER_THREAD;
    let snap = reg.snapshot();
    let get = |labels: &[(&str, &str)]| snap.point("c", labels).and_then(Point::number).unwrap();
    assert_eq!(get(&[("worker", "all"), ("kind", "x")]), Number::U64(total));
    for t in 0..THREADS {
        let w = format!("w{t}");
        assert_eq!(
            get(&[("worker", &w), ("kind", "y")]),
            Number::U64(2 * PER_THREAD)
        );
    }
    assert_eq!(
        get(&[("worker", "all"), ("kind", "even")]),
        Number::U64(total / 2)
    );
    assert_eq!(
        get(&[("worker", "all"), ("kind", "odd")]),
        Number::U64(total / 2)
    );
    assert_eq!(snap.family("c").unwrap().series.len(), THREADS + 3);
    // 0.5 and 0.25 are exact in binary, so float sums are exact too.
    assert_eq!(fcounter.value(), Number::F64(total as f64 * 0.5));
    assert_eq!(updown.value(), Number::F64(total as f64 * 0.25));
    assert_eq!(gauge.value(), Number::I64((total / 2) as i64));
    let h = hist.read();
    assert_eq!(h.count(), total);
    let expect_sum: f64 = (0..PER_THREAD)
        .map(|i| 0.001 * (i % 1000 + 1) as f64)
        .sum::<f64>()
        * THREADS as f64;
    assert!(
        (h.sum() - expect_sum).abs() / expect_sum < 1e-9,
        "{} vs {expect_sum}",
        h.sum()
    );
    assert_eq!(h.min(), Some(0.001));
    assert_eq!(h.max(), Some(1.0));
    // Explicit buckets are exact: 1..=1000 ms, each value equally often.
    for (le, n) in h.cumulative_buckets() {
        let per_value = total / 1000;
        let values_at_or_below = (1..=1000u64)
            .filter(|ms| (0.001 * *ms as f64) <= le)
            .count() as u64;
        assert_eq!(n, values_at_or_below * per_value, "le={le}");
    }
}

#[test]
fn snapshots_stay_consistent_during_writes() {
    let reg = Registry::new();
    let counter = reg.counter("requests").labels(["route"]).build().unwrap();
    // Striped: reads must also stay consistent when summing per-thread blocks.
    let hist = testing::family(
        reg.histogram("latency")
            .unit(Unit::Seconds)
            .labels(["route"])
            .striped(true),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut delta_reader = reg.reader(Temporality::Delta);
    let mut slow_delta_reader = reg.reader(Temporality::Delta);
    let mut delta_totals = std::collections::HashMap::<String, (u64, u64)>::new();
    let mut slow_totals = std::collections::HashMap::<String, (u64, u64)>::new();
    let mut last_cumulative = std::collections::HashMap::<String, (u64, u64, Vec<u64>)>::new();

    let accumulate =
        |snap: &sonde_core::Snapshot,
         totals: &mut std::collections::HashMap<String, (u64, u64)>| {
            for (name, idx) in [("requests", 0), ("latency", 1)] {
                let Some(f) = snap.family(name) else { continue };
                for s in &f.series {
                    let route = s.label_values().next().unwrap().to_owned();
                    let e = totals.entry(route).or_default();
                    match &s.point {
                        Point::Counter(Number::U64(v)) if idx == 0 => e.0 += v,
                        Point::Histogram(h) if idx == 1 => e.1 += h.count(),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
        };

    thread::scope(|s| {
        for t in 0..4 {
            let (counter, hist, stop) = (&counter, &hist, stop.clone());
            s.spawn(move || {
                let routes = ["/a", "/b", "/c"];
                let mut i = 0u64;
                // Bounded: stops on the flag or after 2M iterations.
                while !stop.load(Ordering::Relaxed) && i < 2_000_000 {
                    let r = routes[(i as usize + t) % 3];
                    counter.with(&[r]).inc();
                    hist.with(&[r])
                        .observe(1e-5 * ((i * 7919) % 100_000 + 1) as f64);
                    i += 1;
                }
            });
        }
        for round in 0..60 {
            let snap = reg.snapshot();
            for f in &snap.families {
                for s in &f.series {
                    let route = s.label_values().next().unwrap_or("").to_owned();
                    let prev = last_cumulative
                        .entry(format!("{}{route}", f.meta.name()))
                        .or_default();
                    match &s.point {
                        Point::Counter(Number::U64(v)) => {
                            assert!(*v >= prev.0, "counter went backwards: {v} < {}", prev.0);
                            prev.0 = *v;
                        }
                        Point::Histogram(h) => {
                            let buckets = h.bucket_counts();
                            assert_eq!(buckets.iter().sum::<u64>(), h.count(), "buckets != count");
                            let exp = h.exponential(3);
                            assert_eq!(exp.counts.iter().sum::<u64>() + exp.zero_count, h.count());
                            assert!(h.count() >= prev.1, "histogram count went backwards");
                            let mut cumulative = Vec::new();
                            h.cumulative_into(&mut cumulative);
                            assert!(
                                cumulative.windows(2).all(|w| w[0] <= w[1]),
                                "le buckets not monotonic"
                            );
                            if prev.2.len() == cumulative.len() {
                                for (a, b) in prev.2.iter().zip(&cumulative) {
                                    assert!(b >= a, "a cumulative bucket went backwards");
                                }
                            }
                            prev.1 = h.count();
                            prev.2 = cumulative;
                        }
                        _ => {}
                    }
                }
            }
            let d = delta_reader.collect();
            accumulate(&d, &mut delta_totals);
            if round % 7 == 0 {
                let d = slow_delta_reader.collect();
                accumulate(&d, &mut slow_totals);
            }
            thread::sleep(std::time::Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
    });
    // After the writers stop, one more delta read each: the deltas must add up to the totals.
    accumulate(&delta_reader.collect(), &mut delta_totals);
    accumulate(&slow_delta_reader.collect(), &mut slow_totals);
    let snap = reg.snapshot();
    for route in ["/a", "/b", "/c"] {
        let c = match snap.point("requests", &[("route", route)]).unwrap() {
            Point::Counter(Number::U64(v)) => *v,
            _ => unreachable!(),
        };
        let h = snap
            .point("latency", &[("route", route)])
            .unwrap()
            .histogram()
            .unwrap()
            .count();
        assert!(c > 0);
        assert_eq!(delta_totals[route], (c, h), "fast delta reader for {route}");
        assert_eq!(slow_totals[route], (c, h), "slow delta reader for {route}");
    }
}
