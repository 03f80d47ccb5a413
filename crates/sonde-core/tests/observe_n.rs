//! `Histogram::observe_n`: `n` observations at once read exactly as `n` calls of `observe`
//! (the sum within the rounding of those calls), and bad input (NaN, infinities, negative
//! values, `n = 0`, a huge `n`) is handled as documented.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sonde_core::exemplar::set_trace_context_provider;
use sonde_core::histogram::MAX_CELL_COUNT;
use sonde_core::{
    Histogram, HistogramPoint, Precision, Registry, Temporality, TraceContext, Unit, testing,
};

const NS: [u64; 4] = [1, 2, 1000, 10_000];
const QUANTILES: [f64; 9] = [0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0];

/// One family pair: a label for messages, then the `observe_n` series and the `observe` series
/// with their family names.
type Pair = (String, (String, Histogram), (String, Histogram));

/// The families compared: default seconds, custom boundaries (with zero and negatives) at
/// every precision, and a shifted grid.
fn families(reg: &Registry, name: &str) -> Vec<Pair> {
    let mut out: Vec<Pair> = Vec::new();
    let mut add = |label: String, make: &dyn Fn(&str) -> Histogram| {
        let (na, nb) = (
            format!("{name}_{}_a", out.len()),
            format!("{name}_{}_b", out.len()),
        );
        let (a, b) = (make(&na), make(&nb));
        out.push((label, (na, a), (nb, b)));
    };
    add("seconds".into(), &|n| {
        testing::handle(reg.histogram(n.to_owned()).unit(Unit::Seconds))
    });
    for p in [Precision::Compact, Precision::Standard, Precision::High] {
        add(format!("custom {p:?}"), &|n| {
            testing::handle(
                reg.histogram(n.to_owned())
                    .buckets(vec![-5.0, -0.5, 0.0, 0.001, 0.1, 1.0, 1.5, 2.0, 100.0, 1e6])
                    .precision(p),
            )
        });
    }
    add("bytes".into(), &|n| {
        testing::handle(
            reg.histogram(n.to_owned())
                .unit(Unit::Bytes)
                .min_exponent(10),
        )
    });
    out
}

/// Values that stress the grid and the explicit buckets: every boundary and its neighbours,
/// powers of two (cell bounds), tiny and huge magnitudes, zero, negatives, and random values.
fn values() -> Vec<f64> {
    let mut v = vec![
        0.0, -0.0, -1.0, -5.0, -0.5, 5e-324, 1e-300, 1e-12, 1e-7, 0.0005, 0.001, 0.1, 0.5, 1.0,
        1.5, 2.0, 3.0, 60.0, 100.0, 1024.0, 1e6, 1e15, 1e300, -1e300,
    ];
    let bounds: Vec<f64> = sonde_core::histogram::DEFAULT_SECONDS_BUCKETS
        .iter()
        .chain(sonde_core::histogram::DEFAULT_BYTES_BUCKETS)
        .chain(&[-5.0, -0.5, 0.001, 0.1, 1.5, 100.0, 1e6])
        .copied()
        .collect();
    for b in bounds {
        v.extend([b, b.next_up(), b.next_down()]);
    }
    for e in [-30, -20, -10, -1, 0, 1, 10, 20, 30, 40] {
        let p = 2f64.powi(e);
        v.extend([p, p.next_up(), p.next_down()]);
    }
    let mut rng = StdRng::seed_from_u64(0x0b5e_4e11);
    for _ in 0..40 {
        // Log-uniform over 1e-9..1e9, either sign now and then.
        let x = 10f64.powf(rng.random_range(-9.0..9.0));
        v.push(if rng.random_bool(0.1) { -x } else { x });
    }
    v
}

/// Every rendering of `a` (from `observe_n`) equals that of `b` (from `observe` in a loop),
/// except the sum, which may differ by the rounding of `calls` separate additions.
fn assert_same_read(a: &HistogramPoint, b: &HistogramPoint, calls: u64, what: &str) {
    assert_eq!(a.count(), b.count(), "{what}: count");
    assert_eq!(a.min(), b.min(), "{what}: min");
    assert_eq!(a.max(), b.max(), "{what}: max");
    let (pa, pb) = (a.to_parts(), b.to_parts());
    assert_eq!(pa.cells, pb.cells, "{what}: cells");
    assert_eq!(pa.splits, pb.splits, "{what}: splits");
    assert_eq!(
        a.cumulative_buckets(),
        b.cumulative_buckets(),
        "{what}: buckets"
    );
    assert_eq!(
        a.bucket_counts(),
        b.bucket_counts(),
        "{what}: bucket counts"
    );
    for scale in -4..=a.layout().max_scale() {
        assert_eq!(
            a.exponential(scale),
            b.exponential(scale),
            "{what}: scale {scale}"
        );
    }
    for q in QUANTILES {
        assert_eq!(a.quantile(q), b.quantile(q), "{what}: q{q}");
    }
    assert_eq!(
        a.value_counts(150),
        b.value_counts(150),
        "{what}: value counts"
    );
    let tolerance = calls as f64 * f64::EPSILON * a.sum().abs().max(b.sum().abs());
    assert!(
        (a.sum() - b.sum()).abs() <= tolerance,
        "{what}: sum {} vs {}",
        a.sum(),
        b.sum()
    );
}

#[test]
fn one_value_reads_as_n_observes() {
    let reg = Registry::new();
    let values = values();
    for n in NS {
        for (i, &v) in values.iter().enumerate() {
            for (label, (_, a), (_, b)) in families(&reg, &format!("one_{n}_{i}")) {
                a.observe_n(v, n);
                for _ in 0..n {
                    b.observe(v);
                }
                let what = format!("{label}: {v:e} × {n}");
                let (pa, pb) = (a.read(), b.read());
                assert_same_read(&pa, &pb, n, &what);
                // From an empty series the sum is the one rounded product.
                assert_eq!(pa.sum(), v * n as f64, "{what}: sum");
                assert_eq!(pa.count(), n, "{what}");
            }
        }
    }
}

#[test]
fn mixed_batches_read_as_the_same_observes() {
    let reg = Registry::new();
    let values = values();
    let mut rng = StdRng::seed_from_u64(7);
    let fams = families(&reg, "mixed");
    let mut delta = reg.reader(Temporality::Delta);
    let (mut calls, mut interval_calls) = (0, 0);
    for round in 0..400 {
        let v = values[rng.random_range(0..values.len())];
        let n = NS[rng.random_range(0..NS.len())];
        calls += n;
        interval_calls += n;
        for (_, (_, a), (_, b)) in &fams {
            a.observe_n(v, n);
            for _ in 0..n {
                b.observe(v);
            }
        }
        if round % 100 == 99 {
            // Delta reads (what CloudWatch and delta OTLP see) agree too.
            let snap = delta.collect();
            for (label, (na, _), (nb, _)) in &fams {
                let da = snap.point(na, &[]).and_then(|p| p.histogram()).unwrap();
                let db = snap.point(nb, &[]).and_then(|p| p.histogram()).unwrap();
                assert_same_read(da, db, interval_calls, &format!("{label}: delta {round}"));
            }
            interval_calls = 0;
        }
    }
    for (label, (_, a), (_, b)) in &fams {
        assert_same_read(&a.read(), &b.read(), calls, label);
    }
}

#[test]
fn zero_count_records_nothing() {
    let reg = Registry::new();
    let h = testing::seconds_histogram(&reg, "zero", &[]).handle();
    for v in [
        0.5,
        0.0,
        -1.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1e300,
    ] {
        h.observe_n(v, 0);
    }
    let p = h.read();
    assert_eq!((p.count(), p.sum(), p.min(), p.max()), (0, 0.0, None, None));
    assert_eq!(p.cells().count(), 0);
    assert!(p.bucket_counts().iter().all(|c| *c == 0));
    assert_eq!(p.quantile(0.5), None);
    // A later observation is not disturbed by the empty batches.
    h.observe_n(0.25, 3);
    let p = h.read();
    assert_eq!(
        (p.count(), p.sum(), p.min(), p.max()),
        (3, 0.75, Some(0.25), Some(0.25))
    );
}

#[test]
fn nan_is_ignored_infinities_and_negatives_are_counted_as_by_observe() {
    let reg = Registry::new();
    let make = |name: &str| {
        testing::handle(
            reg.histogram(name.to_owned())
                .buckets(vec![-1.0, 0.0, 10.0]),
        )
    };
    // NaN: nothing at all, as `observe`.
    let nan = make("nan");
    nan.observe_n(f64::NAN, 1000);
    let p = nan.read();
    assert_eq!((p.count(), p.sum(), p.cells().count()), (0, 0.0, 0));

    // +Inf: counted in the +Inf bucket and the high cell, kept out of the sum; max() None.
    let (inf_n, inf_1) = (make("inf_n"), make("inf_1"));
    inf_n.observe_n(f64::INFINITY, 3);
    for _ in 0..3 {
        inf_1.observe(f64::INFINITY);
    }
    let (a, b) = (inf_n.read(), inf_1.read());
    assert_eq!(a.to_parts(), b.to_parts());
    assert_eq!(a.count(), 3);
    assert_eq!(a.bucket_counts(), vec![0, 0, 0, 3]);
    assert_eq!(a.sum(), 0.0);
    assert_eq!(a.max(), None);
    assert_eq!(a.cells().last().unwrap().0, a.layout().cells() - 1);

    // -Inf: counted in the first bucket and the low cell, kept out of the sum; min() None.
    let (ninf_n, ninf_1) = (make("ninf_n"), make("ninf_1"));
    ninf_n.observe_n(f64::NEG_INFINITY, 2);
    ninf_1.observe(f64::NEG_INFINITY);
    ninf_1.observe(f64::NEG_INFINITY);
    let (a, b) = (ninf_n.read(), ninf_1.read());
    assert_eq!(a.to_parts(), b.to_parts());
    assert_eq!(a.bucket_counts(), vec![2, 0, 0, 0]);
    assert_eq!((a.sum(), a.min()), (0.0, None));

    // Both signs: the sum stays finite (it would be NaN for good if infinities entered it).
    ninf_n.observe_n(f64::INFINITY, 1);
    ninf_1.observe(f64::INFINITY);
    let (a, b) = (ninf_n.read(), ninf_1.read());
    assert_eq!((a.sum(), b.sum()), (0.0, 0.0));
    assert_eq!((a.count(), a.bucket_counts()), (3, vec![2, 0, 0, 1]));

    // Negative and zero values: counted in the exact buckets, the sum and the min.
    let neg = make("neg");
    neg.observe_n(-2.5, 4);
    neg.observe_n(-1.0, 2);
    neg.observe_n(0.0, 3);
    neg.observe_n(4.0, 1);
    let p = neg.read();
    assert_eq!(p.count(), 10);
    assert_eq!(p.sum(), -10.0 - 2.0 + 4.0);
    assert_eq!((p.min(), p.max()), (Some(-2.5), Some(4.0)));
    assert_eq!(
        p.cumulative_buckets(),
        vec![(-1.0, 6), (0.0, 9), (10.0, 10), (f64::INFINITY, 10)]
    );
}

#[test]
fn huge_counts_saturate_per_cell_and_never_wrap() {
    let reg = Registry::new();
    let h = testing::handle(reg.histogram("huge").buckets(vec![1.0, 2.0]));
    h.observe_n(1.0, u64::MAX);
    let p = h.read();
    assert_eq!(p.count(), MAX_CELL_COUNT);
    assert_eq!(p.sum(), MAX_CELL_COUNT as f64);
    assert_eq!(p.bucket_counts(), vec![MAX_CELL_COUNT, 0, 0]);
    // The cell is full: another batch into it is dropped from every figure.
    h.observe_n(1.0, u64::MAX);
    h.observe_n(1.0, 1);
    let p = h.read();
    assert_eq!(
        (p.count(), p.sum()),
        (MAX_CELL_COUNT, MAX_CELL_COUNT as f64)
    );
    // Other cells still count.
    h.observe_n(1.5, 5);
    let p = h.read();
    assert_eq!(p.count(), MAX_CELL_COUNT + 5);
    assert_eq!(p.bucket_counts(), vec![MAX_CELL_COUNT, 5, 0]);
    assert_eq!(p.sum(), MAX_CELL_COUNT as f64 + 7.5);
    // `observe` has no such limit, and `observe_n` never takes back what it added.
    h.observe(1.0);
    h.observe_n(1.0, 10);
    assert_eq!(h.read().count(), MAX_CELL_COUNT + 6);

    // A batch that crosses the limit keeps exactly the part below it.
    let part = testing::handle(reg.histogram("part").buckets(vec![1.0]));
    part.observe_n(0.5, MAX_CELL_COUNT - 10);
    part.observe_n(0.5, 100);
    let p = part.read();
    assert_eq!(p.count(), MAX_CELL_COUNT);
    assert_eq!(p.sum(), 0.5 * MAX_CELL_COUNT as f64);
    assert_eq!(p.cumulative_buckets()[0], (1.0, MAX_CELL_COUNT));

    // Every cell of a series full: the total stays far from wrapping and every rendering works.
    let full = testing::handle(reg.histogram("full").precision(Precision::High));
    let cells = full.read().layout().cells();
    let mut delta = reg.reader(Temporality::Delta);
    for cell in 0..cells {
        // The middle of each grid cell; the low and high cells take a value beyond the grid.
        let (lo, hi) = full.read().layout().cell_bounds(cell);
        let v = match (lo.is_finite(), hi.is_finite()) {
            (true, true) => (lo + hi) / 2.0,
            (false, _) => hi / 2.0,
            (_, false) => lo * 2.0,
        };
        full.observe_n(v, u64::MAX);
    }
    let p = full.read();
    assert_eq!(p.count(), cells as u64 * MAX_CELL_COUNT);
    assert_eq!(p.bucket_counts().iter().sum::<u64>(), p.count());
    assert!(p.quantile(0.5).is_some());
    assert_eq!(
        p.value_counts(150).iter().map(|c| c.1).sum::<u64>(),
        p.count()
    );
    let snap = delta.collect();
    let d = snap.point("full", &[]).and_then(|p| p.histogram()).unwrap();
    assert_eq!(d.count(), p.count());
}

#[test]
fn concurrent_batches_saturate_exactly_and_striped_series_add_up() {
    let reg = Registry::new();
    // Unlabelled families are striped per thread by default.
    let h = testing::handle(reg.histogram("racing"));
    let striped = testing::handle(reg.histogram("striped"));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (h, striped) = (h.clone(), striped.clone());
            s.spawn(move || {
                for i in 0..2000u64 {
                    h.observe_n(3.0, u64::MAX / 3);
                    striped.observe_n(1.0 + (i % 7) as f64, t + 1);
                }
            });
        }
    });
    // Each stripe's cell holds at most MAX_CELL_COUNT; whatever the interleaving, the racing
    // batches never push a stripe past it or below what it held.
    let p = h.read();
    let stripes = p.count() / MAX_CELL_COUNT;
    assert!((1..=8).contains(&stripes), "{}", p.count());
    assert_eq!(p.count(), stripes * MAX_CELL_COUNT);
    assert_eq!(p.sum(), 3.0 * p.count() as f64);
    let s = striped.read();
    assert_eq!(s.count(), 2000 * (1 + 2 + 3 + 4));
    let expect_sum: f64 = (1..=4u64)
        .map(|t| {
            (0..2000u64)
                .map(|i| (1 + i % 7) as f64 * t as f64)
                .sum::<f64>()
        })
        .sum();
    assert_eq!(s.sum(), expect_sum);
}

#[test]
fn a_batch_keeps_one_exemplar_and_an_empty_batch_none() {
    fn provider() -> Option<TraceContext> {
        Some(TraceContext {
            trace_id: [7; 16],
            span_id: [3; 8],
        })
    }
    // This test binary's only provider.
    assert!(set_trace_context_provider(provider));
    let reg = Registry::new();
    let h = testing::handle(reg.histogram("ex").buckets(vec![1.0, 10.0]).exemplars(true));
    h.observe_n(0.5, 100);
    h.observe_n(5.0, 0);
    h.observe_n(f64::NAN, 10);
    let p = h.read();
    let ex = p.exemplars();
    assert_eq!(ex.len(), 3);
    let first = ex[0].unwrap();
    assert_eq!((first.value, first.trace_id), (0.5, [7; 16]));
    assert!(ex[1].is_none() && ex[2].is_none());
    assert_eq!(p.count(), 100);
}
