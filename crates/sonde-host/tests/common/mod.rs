//! Helpers shared by the integration tests.

use sonde_core::{Registry, Snapshot};
use sonde_host::{HostCollector, HostMetrics};

/// Installs `collector` into a new registry; returns both.
pub fn install(collector: HostCollector) -> (Registry, HostMetrics) {
    let registry = Registry::new();
    let host = collector.registry(&registry).install().unwrap();
    (registry, host)
}

/// The value of the series of `name` with exactly `labels`.
pub fn value(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    snap.point(name, labels)
        .and_then(|p| p.number())
        .map(|n| n.as_f64())
}

/// Every series of `name`: its labels (owned) and value.
pub fn series(snap: &Snapshot, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let Some(f) = snap.family(name) else {
        return Vec::new();
    };
    f.series
        .iter()
        .map(|s| {
            let labels = f
                .labels(s)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let v = s.point.number().map_or(f64::NAN, |n| n.as_f64());
            (labels, v)
        })
        .collect()
}

/// Asserts that `registry` has no series of any of the families `names`.
pub fn assert_no_series(registry: &Registry, names: &[&str]) {
    let snap = registry.snapshot();
    for name in names {
        assert!(series(&snap, name).is_empty(), "{name}");
    }
}

/// The value of label `name` in `labels`.
pub fn label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Sum of the series of `name` whose labels include all of `filter`.
pub fn sum(snap: &Snapshot, name: &str, filter: &[(&str, &str)]) -> f64 {
    series(snap, name)
        .into_iter()
        .filter(|(l, _)| filter.iter().all(|(k, v)| label(l, k) == Some(*v)))
        .map(|(_, v)| v)
        .sum()
}

/// `sonde.collector.errors{collector, reason}`, 0 if absent.
pub fn errors(snap: &Snapshot, collector: &str, reason: &str) -> f64 {
    value(
        snap,
        "sonde.collector.errors",
        &[("collector", collector), ("reason", reason)],
    )
    .unwrap_or(0.0)
}
