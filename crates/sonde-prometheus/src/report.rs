//! `/report`: the JSON performance report a team reads first when it asks where the time goes.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sonde_core::{FamilySnapshot, Kind, Point, SeriesSnapshot, Snapshot};

fn labels(f: &FamilySnapshot, s: &SeriesSnapshot) -> Value {
    Value::Object(
        f.labels(s)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::from(v)))
            .collect::<Map<_, _>>(),
    )
}

fn finite(v: Option<f64>) -> Value {
    v.filter(|v| v.is_finite())
        .map(Value::from)
        .unwrap_or(Value::Null)
}

/// Builds the report from a cumulative snapshot and the deltas since the previous report
/// (`interval` seconds ago): per series count, rate, mean, min, max and p50/p95/p99, histograms
/// sorted by the total time they account for; counters with rates; gauges; cache hit ratios
/// from `cache.requests{cache.name, cache.result}`.
pub fn report(cumulative: &Snapshot, deltas: &Snapshot, interval: f64, uptime: f64) -> Value {
    let mut rates: BTreeMap<u64, f64> = BTreeMap::new();
    for f in &deltas.families {
        for s in &f.series {
            let n = match &s.point {
                Point::Histogram(h) => h.count() as f64,
                Point::Counter(n) => n.as_f64(),
                _ => continue,
            };
            rates.insert(s.id(), if interval > 0.0 { n / interval } else { 0.0 });
        }
    }
    let mut histograms = Vec::new();
    let mut counters = Vec::new();
    let mut gauges = Vec::new();
    let mut caches: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for f in &cumulative.families {
        let meta = &f.meta;
        for s in &f.series {
            let rate = rates.get(&s.id()).copied().unwrap_or(0.0);
            match &s.point {
                Point::Histogram(h) => {
                    if h.count() == 0 {
                        continue;
                    }
                    histograms.push(json!({
                        "metric": meta.name(),
                        "unit": meta.unit().ucum(),
                        "labels": labels(f, s),
                        "count": h.count(),
                        "rate_per_second": rate,
                        "sum": h.sum(),
                        "mean": h.sum() / h.count() as f64,
                        "min": finite(h.min()),
                        "max": finite(h.max()),
                        "p50": finite(h.quantile(0.5)),
                        "p95": finite(h.quantile(0.95)),
                        "p99": finite(h.quantile(0.99)),
                    }));
                }
                Point::Counter(n) => {
                    if meta.name() == "cache.requests" {
                        let pairs = f.labels(s);
                        let get = |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
                        if let (Some(cache), Some(result)) =
                            (get("cache.name"), get("cache.result"))
                        {
                            let e = caches.entry(cache.to_owned()).or_default();
                            match result {
                                "hit" => e.0 += n.as_f64(),
                                "miss" => e.1 += n.as_f64(),
                                _ => {}
                            }
                        }
                    }
                    counters.push(json!({
                        "metric": meta.name(),
                        "labels": labels(f, s),
                        "total": n.as_f64(),
                        "rate_per_second": rate,
                    }));
                }
                Point::Gauge(n) | Point::UpDownCounter(n) => gauges.push(json!({
                    "metric": meta.name(),
                    "kind": if meta.kind() == Kind::Gauge { "gauge" } else { "up_down_counter" },
                    "labels": labels(f, s),
                    "value": finite(Some(n.as_f64())),
                })),
            }
        }
    }
    // Where the time goes: duration histograms by the total time they hold.
    histograms.sort_by(|a, b| {
        let key = |v: &Value| {
            if v["unit"] == "s" {
                v["sum"].as_f64().unwrap_or(0.0)
            } else {
                -1.0
            }
        };
        key(b).total_cmp(&key(a))
    });
    let caches: Vec<Value> = caches
        .into_iter()
        .map(|(cache, (hits, misses))| {
            let total = hits + misses;
            json!({
                "cache": cache,
                "hits": hits,
                "misses": misses,
                "hit_ratio": if total > 0.0 { Value::from(hits / total) } else { Value::Null },
            })
        })
        .collect();
    json!({
        "uptime_seconds": uptime,
        "interval_seconds": interval,
        "histograms": histograms,
        "counters": counters,
        "gauges": gauges,
        "caches": caches,
    })
}
