//! The example service uses every instrumentation helper against a real SQLite database; each
//! metric's name, unit, label names and values are checked, with exact relations between them.

use std::time::Duration;

use sonde::{Kind, Point, Registry, Snapshot, Unit};
use sonde_example::{Options, Workload};
use sonde_tests::example::run_workload;

fn family<'a>(
    snap: &'a Snapshot,
    name: &str,
    kind: Kind,
    unit: &Unit,
    labels: &[&str],
) -> &'a sonde::FamilySnapshot {
    let f = snap
        .family(name)
        .unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!(f.meta.kind(), kind, "{name} kind");
    assert_eq!(f.meta.unit(), unit, "{name} unit");
    assert_eq!(
        f.meta.label_names().collect::<Vec<_>>(),
        labels,
        "{name} labels"
    );
    assert!(!f.series.is_empty(), "{name} has no series");
    f
}

fn count(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> u64 {
    match snap.point(name, labels) {
        Some(Point::Histogram(h)) => h.count(),
        Some(Point::Counter(n)) => n.as_f64() as u64,
        None => 0,
        other => panic!("{name}: {other:?}"),
    }
}

fn total(snap: &Snapshot, name: &str, filter: impl Fn(&[(&str, &str)]) -> bool) -> u64 {
    let f = snap.family(name).unwrap();
    f.series
        .iter()
        .filter(|s| filter(&f.labels(s)))
        .map(|s| match &s.point {
            Point::Histogram(h) => h.count(),
            Point::Counter(n) => n.as_f64() as u64,
            _ => 0,
        })
        .sum()
}

#[test]
fn every_helper_reports_with_the_conventional_names() {
    let reg = Registry::new();
    run_workload(&reg, Duration::from_millis(1500));
    let snap = reg.snapshot();
    let s = Unit::Seconds;
    let by = Unit::Bytes;

    family(
        &snap,
        "http.server.request.duration",
        Kind::Histogram,
        &s,
        &[
            "http.request.method",
            "http.route",
            "http.response.status_code",
            "error.type",
        ],
    );
    family(
        &snap,
        "http.server.active_requests",
        Kind::UpDownCounter,
        &Unit::Count("{request}".into()),
        &["http.request.method"],
    );
    family(
        &snap,
        "db.client.operation.duration",
        Kind::Histogram,
        &s,
        &[
            "db.system.name",
            "db.operation.name",
            "db.collection.name",
            "error.type",
        ],
    );
    family(
        &snap,
        "http.client.request.duration",
        Kind::Histogram,
        &s,
        &[
            "http.request.method",
            "server.address",
            "http.response.status_code",
            "error.type",
            "url.template",
        ],
    );
    family(
        &snap,
        "cache.requests",
        Kind::Counter,
        &Unit::None,
        &["cache.name", "cache.result"],
    );
    family(
        &snap,
        "cache.size",
        Kind::Gauge,
        &Unit::Count("{entry}".into()),
        &["cache.name"],
    );
    family(
        &snap,
        "db.client.connection.count",
        Kind::Gauge,
        &Unit::Count("{connection}".into()),
        &[
            "db.client.connection.pool.name",
            "db.client.connection.state",
        ],
    );
    family(
        &snap,
        "db.client.connection.max",
        Kind::Gauge,
        &Unit::Count("{connection}".into()),
        &["db.client.connection.pool.name"],
    );
    family(
        &snap,
        "db.client.connection.wait_time",
        Kind::Histogram,
        &s,
        &["db.client.connection.pool.name"],
    );
    family(
        &snap,
        "checkout.phase.duration",
        Kind::Histogram,
        &s,
        &["phase"],
    );
    family(
        &snap,
        "orders.placed",
        Kind::Counter,
        &Unit::None,
        &["channel"],
    );
    family(&snap, "process.startup.duration", Kind::Gauge, &s, &[]);
    family(
        &snap,
        "process.first_request.duration",
        Kind::Gauge,
        &s,
        &[],
    );
    family(&snap, "process.cpu.time", Kind::Counter, &s, &["cpu.mode"]);
    family(&snap, "process.memory.usage", Kind::Gauge, &by, &[]);

    // Exact relations, now that the workers have stopped.
    let users = total(&snap, "http.server.request.duration", |l| {
        l.contains(&("http.route", "/users/{id}"))
    });
    let hits = count(
        &snap,
        "cache.requests",
        &[("cache.name", "users"), ("cache.result", "hit")],
    );
    let misses = count(
        &snap,
        "cache.requests",
        &[("cache.name", "users"), ("cache.result", "miss")],
    );
    assert!(users > 50, "{users} user lookups");
    assert_eq!(
        hits + misses,
        users,
        "every user lookup is one cache lookup"
    );
    let user_selects = total(&snap, "db.client.operation.duration", |l| {
        l.contains(&("db.collection.name", "users"))
    });
    assert_eq!(user_selects, misses, "every miss reads the database");
    assert!(
        hits > misses,
        "the cache holds 40 of 50 users: {hits} hits, {misses} misses"
    );

    let posts = total(&snap, "http.server.request.duration", |l| {
        l.contains(&("http.request.method", "POST"))
    });
    let created = total(&snap, "http.server.request.duration", |l| {
        l.contains(&("http.response.status_code", "201"))
    });
    let bad_gateway = total(&snap, "http.server.request.duration", |l| {
        l.contains(&("http.response.status_code", "502"))
    });
    // Under load SQLite can stay busy past the pool's timeout: such an order fails its INSERT
    // and answers 500. Every POST is one of the three, and each 500 is one failed INSERT.
    let server_errors = total(&snap, "http.server.request.duration", |l| {
        l.contains(&("http.response.status_code", "500"))
    });
    let failed_inserts = total(&snap, "db.client.operation.duration", |l| {
        l.contains(&("db.operation.name", "INSERT"))
            && l.iter().any(|(k, v)| *k == "error.type" && !v.is_empty())
    });
    assert_eq!(created + bad_gateway + server_errors, posts);
    assert_eq!(server_errors, failed_inserts);
    assert_eq!(
        total(&snap, "orders.placed", |_| true),
        created,
        "one event per created order"
    );
    let inserts = total(&snap, "db.client.operation.duration", |l| {
        l.contains(&("db.operation.name", "INSERT"))
    });
    assert_eq!(inserts, created + failed_inserts);
    let api = total(&snap, "http.client.request.duration", |_| true);
    assert_eq!(api, posts, "one payments call per order");
    let failed_api = total(&snap, "http.client.request.duration", |l| {
        l.contains(&("error.type", "503"))
    });
    assert_eq!(failed_api, bad_gateway);
    for phase in ["validate", "charge"] {
        assert_eq!(
            count(&snap, "checkout.phase.duration", &[("phase", phase)]),
            posts,
            "{phase}"
        );
    }
    assert_eq!(
        count(&snap, "checkout.phase.duration", &[("phase", "store")]),
        created + server_errors
    );
    // `#[measured]` records into the global registry; the other test here prices orders too.
    let global = Registry::global().snapshot();
    family(
        &global,
        "function.calls",
        Kind::Counter,
        &Unit::None,
        &["function", "module", "result"],
    );
    family(
        &global,
        "function.duration",
        Kind::Histogram,
        &s,
        &["function", "module"],
    );
    assert!(
        total(&global, "function.calls", |l| l
            .contains(&("function", "price")))
            >= posts,
        "#[measured] price() once per order"
    );
    let active = snap
        .point(
            "http.server.active_requests",
            &[("http.request.method", "GET")],
        )
        .unwrap();
    assert_eq!(
        active.number().unwrap().as_f64(),
        0.0,
        "nothing in flight after stop"
    );
    let startup = snap
        .point("process.startup.duration", &[])
        .unwrap()
        .number()
        .unwrap()
        .as_f64();
    assert!(startup > 0.0);
    let max = snap
        .point(
            "db.client.connection.max",
            &[("db.client.connection.pool.name", "sqlite")],
        )
        .unwrap();
    assert_eq!(max.number().unwrap().as_f64(), 4.0);
    let waits = snap
        .point(
            "db.client.connection.wait_time",
            &[("db.client.connection.pool.name", "sqlite")],
        )
        .and_then(Point::histogram)
        .unwrap()
        .count();
    assert_eq!(
        waits,
        user_selects
            + inserts
            + total(&snap, "db.client.operation.duration", |l| l
                .contains(&("db.collection.name", "orders"))
                && l.contains(&("db.operation.name", "SELECT")))
            + 1,
        "one checkout per query, plus seeding"
    );
}

#[test]
fn a_slow_database_shows_in_its_latency() {
    let reg = Registry::new();
    let workload = Workload::start(
        &reg,
        Options {
            cold_start: Duration::ZERO,
            process_metrics: false,
            ..Options::default()
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = reg.snapshot();
    workload.set_db_delay(Duration::from_millis(20));
    let mut deltas = reg.reader(sonde::Temporality::Delta);
    let _ = deltas.collect();
    std::thread::sleep(Duration::from_millis(600));
    let slow = deltas.collect();
    workload.stop();
    let p50 = |snap: &Snapshot| {
        let f = snap.family("db.client.operation.duration").unwrap();
        let mut worst: f64 = 0.0;
        for s in &f.series {
            if let Point::Histogram(h) = &s.point
                && let Some(q) = h.quantile(0.5)
            {
                worst = worst.max(q);
            }
        }
        worst
    };
    assert!(p50(&before) < 0.01, "fast before: {}", p50(&before));
    assert!(p50(&slow) >= 0.019, "slow after: {}", p50(&slow));
}
