//! Properties of the histogram core over arbitrary inputs and boundaries.

use proptest::prelude::*;
use sonde_core::{Precision, Registry, Temporality, Unit, testing};

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 1e-7f64..2e3,
        1 => -10.0f64..10.0,
        1 => prop::sample::select(vec![0.0, -0.0, 1.0, 2.0, 0.5, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e300, -1e300, 5e-324]),
    ]
}

fn bounds() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(-5.0f64..100.0, 0..20).prop_map(|mut v| {
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn renderings_agree_with_a_naive_count(
        values in prop::collection::vec(value(), 0..300),
        buckets in bounds(),
        precision in prop::sample::select(vec![Precision::Compact, Precision::Standard, Precision::High]),
        split_at in 0usize..300,
    ) {
        let reg = Registry::new();
        let h = testing::handle(
            reg.histogram("h").unit(Unit::Seconds).buckets(buckets.clone()).precision(precision),
        );
        let mut delta = reg.reader(Temporality::Delta);
        let split_at = split_at.min(values.len());
        for v in &values[..split_at] { h.observe(*v); }
        let first = delta.collect();
        for v in &values[split_at..] { h.observe(*v); }
        let second = delta.collect();
        let p = h.read();
        let recorded: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();

        prop_assert_eq!(p.count(), recorded.len() as u64);
        // Explicit buckets: exact, whatever the boundaries.
        for (le, n) in p.cumulative_buckets() {
            let expect = recorded.iter().filter(|v| **v <= le).count() as u64;
            prop_assert_eq!(n, expect, "le={}", le);
        }
        prop_assert_eq!(p.bucket_counts().iter().sum::<u64>(), p.count());
        // Exponential buckets hold every observation at every scale.
        for scale in -4..=p.layout().max_scale() {
            let e = p.exponential(scale);
            prop_assert_eq!(e.counts.iter().sum::<u64>() + e.zero_count, p.count());
        }
        // CloudWatch pairs: at most 150, all observations, values inside [min, max].
        let pairs = p.value_counts(150);
        prop_assert!(pairs.len() <= 150);
        prop_assert_eq!(pairs.iter().map(|x| x.1).sum::<u64>(), p.count());
        if let (Some(min), Some(max)) = (p.min(), p.max()) {
            prop_assert!(pairs.iter().all(|(v, _)| *v >= min && *v <= max));
            for q in [0.0, 0.5, 0.99, 1.0] {
                let est = p.quantile(q).unwrap();
                prop_assert!(est >= min && est <= max, "q{} = {} outside [{}, {}]", q, est, min, max);
            }
        }
        // Deltas add up to the cumulative read.
        let d1 = first.point("h", &[]).unwrap().histogram().unwrap().clone();
        let d2 = second.point("h", &[]).unwrap().histogram().unwrap().clone();
        prop_assert_eq!(d1.count() + d2.count(), p.count());
        let c1 = d1.bucket_counts();
        let c2 = d2.bucket_counts();
        let c = p.bucket_counts();
        for i in 0..c.len() {
            prop_assert_eq!(c1[i] + c2[i], c[i]);
        }
    }
}
