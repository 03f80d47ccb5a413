//! Registries with known content, for the exporter tests to check what arrives.

use sonde::{Family, Histogram, Registry, Unit};

/// Registers in `registry` a family of every kind, named `{prefix}.…`, with fixed values:
/// `requests`, a counter with `description`, labelled `http.route` (`/a` to `/d`) and `note`
/// (`notes`, in that order), limited to 3 series so that `/d` overflows; `cpu.time`, a float
/// counter in seconds; `temperature`, a gauge in `Cel`; `active`, an up-down counter; and
/// `latency`, a histogram in seconds labelled `op`, buckets 0.01, 0.1 and 1, with five `read`
/// observations. Returns the `latency` family, for more observations.
pub fn every_kind(
    registry: &Registry,
    prefix: &str,
    description: &str,
    notes: [&str; 4],
) -> Family<Histogram> {
    let requests = registry
        .counter(format!("{prefix}.requests"))
        .description(description.to_owned())
        .labels(["http.route", "note"])
        .max_series(3)
        .build()
        .unwrap();
    let routes = [("/a", 5), ("/b", 7), ("/c", 1), ("/d", 2)];
    for ((route, n), note) in routes.into_iter().zip(notes) {
        requests.with(&[route, note]).add(n);
    }
    registry
        .counter_f64(format!("{prefix}.cpu.time"))
        .unit(Unit::Seconds)
        .build()
        .unwrap()
        .handle()
        .add(1.25);
    registry
        .gauge_f64(format!("{prefix}.temperature"))
        .unit(Unit::Custom("Cel".into()))
        .build()
        .unwrap()
        .handle()
        .set(-7.5);
    registry
        .up_down_counter(format!("{prefix}.active"))
        .build()
        .unwrap()
        .handle()
        .add(-3);
    let latency = registry
        .histogram(format!("{prefix}.latency"))
        .unit(Unit::Seconds)
        .labels(["op"])
        .buckets(vec![0.01, 0.1, 1.0])
        .build()
        .unwrap();
    for v in [0.005, 0.01, 0.05, 0.5, 2.0] {
        latency.with(&["read"]).observe(v);
    }
    latency
}

/// Registers the counter `name` with `count` series, labelled `id` = 0, 1, …, the series `i` at
/// `value(i)`: a collection large enough that exporters must split it.
pub fn counter_per_id(registry: &Registry, name: &str, count: u64, value: impl Fn(u64) -> u64) {
    let family = registry
        .counter(name.to_owned())
        .labels(["id"])
        .max_series(usize::try_from(count).unwrap())
        .build()
        .unwrap();
    for i in 0..count {
        family.with(&[&i.to_string()]).add(value(i));
    }
}
