//! Every helper, asserting metric names, units, label names and values.
#![allow(clippy::unwrap_used)] // tests panic on failure by design

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

mod common;

use common::{assert_connections, assert_timeouts_and_waits, pool_label, value};
use sonde_core::testing::{assert_counter, assert_gauge, block_on};
use sonde_core::{Point, Registry, Snapshot, Unit};
use sonde_instrument::*;

fn histogram_count(reg: &Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    reg.snapshot()
        .point(name, labels)
        .and_then(Point::histogram)
        .map_or(0, |h| h.count())
}

fn unit_of(reg: &Registry, name: &str) -> Unit {
    reg.snapshot().family(name).unwrap().meta.unit().clone()
}

/// Asserts each of the counter series of the family `name`, by its labels.
#[track_caller]
fn assert_counters(snap: &Snapshot, name: &str, series: &[(&[(&str, &str)], f64)]) {
    for (labels, value) in series {
        assert_counter(snap, name, labels, *value);
    }
}

/// Asserts that `trigger` has seen one cold invocation (its cold start) and one warm one.
#[track_caller]
fn assert_one_cold_and_one_warm_invocation(snap: &Snapshot, trigger: &str) {
    assert_counters(
        snap,
        "faas.invocations",
        &[
            (
                &[("faas.trigger", trigger), ("faas.coldstart", "true")],
                1.0,
            ),
            (
                &[("faas.trigger", trigger), ("faas.coldstart", "false")],
                1.0,
            ),
        ],
    );
    assert_counter(snap, "faas.coldstarts", &[("faas.trigger", trigger)], 1.0);
}

#[test]
fn lifecycle_reads_the_start_time_from_the_os() {
    let reg = Registry::new();
    let start = process_start_time();
    let age = SystemTime::now().duration_since(start).unwrap();
    // The test binary started moments ago; the OS clock ticks are 10 ms.
    assert!(age < Duration::from_secs(600), "{age:?}");
    assert!(
        os_start_time(std::process::id()).is_some(),
        "/proc is readable on Linux"
    );
    let l = Lifecycle::install(&reg).unwrap();
    let ready = l.mark_ready().unwrap();
    assert!((0.0..600.0).contains(&ready));
    assert!(l.mark_ready().is_none(), "only the first call counts");
    l.mark_first_request();
    l.mark_first_request();
    let snap = reg.snapshot();
    assert_gauge(&snap, "process.startup.duration", &[], ready);
    let first = value(&snap, "process.first_request.duration", &[]);
    assert!(first >= ready);
    assert_eq!(unit_of(&reg, "process.startup.duration"), Unit::Seconds);
}

#[test]
fn faas_cold_and_warm_invocations() {
    let reg = Registry::new();
    let faas = Faas::install(&reg).unwrap();
    let flushed = Arc::new(AtomicUsize::new(0));
    {
        // The flush hook sees the invocation already recorded.
        let (flushed, reg) = (flushed.clone(), reg.clone());
        faas.on_invocation_end(move || {
            let n = flushed.fetch_add(1, Ordering::SeqCst) + 1;
            let snap = reg.snapshot();
            let total: f64 = snap
                .family("faas.invocations")
                .map(|f| {
                    f.series
                        .iter()
                        .filter_map(|s| s.point.number())
                        .map(|n| n.as_f64())
                        .sum()
                })
                .unwrap_or(0.0);
            assert_eq!(total as usize, n, "recorded before the flush");
        });
    }
    let r: Result<u8, std::io::Error> = faas.invoke(Trigger::Http, || Ok(1));
    assert_eq!(r.unwrap(), 1);
    let r: Result<u8, String> = faas.invoke(Trigger::Http, || Err("boom".to_owned()));
    assert!(r.is_err());
    let past = Instant::now();
    let r: Result<(), ()> = faas.invoke_with_deadline(Trigger::Timer, past, || {
        std::thread::sleep(Duration::from_millis(2));
        Ok(())
    });
    assert!(r.is_ok());
    let r: Result<u8, ()> = block_on(faas.invoke_async(Trigger::PubSub, async { Ok(7) }));
    assert_eq!(r.unwrap(), 7);
    assert_eq!(flushed.load(Ordering::SeqCst), 4);

    let snap = reg.snapshot();
    assert_one_cold_and_one_warm_invocation(&snap, "http");
    assert_counter(&snap, "faas.errors", &[("faas.trigger", "http")], 1.0);
    assert_counter(&snap, "faas.timeouts", &[("faas.trigger", "timer")], 1.0);
    assert_eq!(histogram_count(&reg, "faas.init_duration", &[]), 1);
    assert_eq!(
        histogram_count(
            &reg,
            "faas.invoke_duration",
            &[("faas.trigger", "pubsub"), ("faas.coldstart", "false")]
        ),
        1
    );
    assert_eq!(unit_of(&reg, "faas.invoke_duration"), Unit::Seconds);
}

#[test]
#[allow(unsafe_code)]
fn lambda_is_detected_from_its_environment() {
    assert!(lambda_resource_from(|_| None).is_none());
    // SAFETY: no other test in this binary reads or writes these variables.
    unsafe {
        std::env::set_var("AWS_LAMBDA_FUNCTION_NAME", "checkout");
        std::env::set_var("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
        std::env::set_var("AWS_REGION", "eu-west-1");
        std::env::set_var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512");
    }
    let r = lambda_resource().unwrap();
    assert_eq!(r.get("faas.name"), Some("checkout"));
    assert_eq!(r.get("faas.version"), Some("$LATEST"));
    assert_eq!(r.get("cloud.region"), Some("eu-west-1"));
    assert_eq!(r.get("cloud.provider"), Some("aws"));
    assert_eq!(r.get("cloud.platform"), Some("aws_lambda"));
    assert_eq!(r.get("faas.max_memory"), Some("536870912"));
    // A cold and a warm invocation of the function that environment describes.
    let reg = Registry::new();
    let faas = Faas::install(&reg).unwrap();
    for _ in 0..2 {
        let out: Result<&str, ()> = faas.invoke(Trigger::Http, || Ok("ok"));
        assert!(out.is_ok());
    }
    let snap = reg.snapshot();
    assert_one_cold_and_one_warm_invocation(&snap, "http");
    unsafe {
        std::env::remove_var("AWS_LAMBDA_FUNCTION_NAME");
    }
    assert!(lambda_resource().is_none());
}

#[derive(Debug)]
struct QueryFailed;

#[test]
fn database_and_http_client_timings() {
    let reg = Registry::new();
    let db = DbMetrics::install(&reg).unwrap();
    let ok: Result<u32, QueryFailed> = db.time_sync("sqlite", "SELECT", "users", || Ok(1));
    assert!(ok.is_ok());
    let err: Result<u32, QueryFailed> =
        db.time_sync("sqlite", "INSERT", "users", || Err(QueryFailed));
    assert!(err.is_err());
    let r: Result<u8, QueryFailed> =
        block_on(db.time("sqlite", "SELECT", "orders", async { Ok(2) }));
    assert!(r.is_ok());
    let labels = |op: &'static str, coll: &'static str, e: &'static str| {
        [
            ("db.system.name", "sqlite"),
            ("db.operation.name", op),
            ("db.collection.name", coll),
            ("error.type", e),
        ]
    };
    assert_eq!(
        histogram_count(
            &reg,
            "db.client.operation.duration",
            &labels("SELECT", "users", "")
        ),
        1
    );
    assert_eq!(
        histogram_count(
            &reg,
            "db.client.operation.duration",
            &labels("INSERT", "users", "QueryFailed")
        ),
        1
    );
    assert_eq!(
        histogram_count(
            &reg,
            "db.client.operation.duration",
            &labels("SELECT", "orders", "")
        ),
        1
    );
    assert_eq!(error_type::<std::io::Error>(), "Error");
    assert_eq!(error_type::<QueryFailed>(), "QueryFailed");

    let api = HttpClientMetrics::install(&reg).unwrap();
    let _: Result<u16, QueryFailed> = api.time_sync("GET", "api.example", |s| *s, || Ok(200));
    let _: Result<u16, QueryFailed> = api.time_sync("GET", "api.example", |s| *s, || Ok(503));
    let _: Result<u16, QueryFailed> =
        api.time_sync("GET", "api.example", |s| *s, || Err(QueryFailed));
    let _: Result<u16, QueryFailed> =
        block_on(api.time("POST", "api.example", |s| *s, async { Ok(201) }));
    let l = |m: &'static str, code: &'static str, e: &'static str| {
        [
            ("http.request.method", m),
            ("server.address", "api.example"),
            ("http.response.status_code", code),
            ("error.type", e),
            ("url.template", ""),
        ]
    };
    for (labels, n) in [
        (l("GET", "200", ""), 1),
        (l("GET", "503", "503"), 1),
        (l("GET", "", "QueryFailed"), 1),
        (l("POST", "201", ""), 1),
    ] {
        assert_eq!(
            histogram_count(&reg, "http.client.request.duration", &labels),
            n,
            "{labels:?}"
        );
    }
}

#[test]
fn global_time_db() {
    let r: Result<u8, QueryFailed> = time_db_sync("postgresql", "UPDATE", "carts", || Ok(1));
    assert!(r.is_ok());
    let r: Result<u8, QueryFailed> =
        block_on(time_db("postgresql", "UPDATE", "carts", async { Ok(1) }));
    assert!(r.is_ok());
    let labels = [
        ("db.system.name", "postgresql"),
        ("db.operation.name", "UPDATE"),
        ("db.collection.name", "carts"),
        ("error.type", ""),
    ];
    assert_eq!(
        histogram_count(Registry::global(), "db.client.operation.duration", &labels),
        2
    );
}

struct Pool {
    idle: AtomicU64,
    used: AtomicU64,
}

impl PoolStats for Pool {
    fn idle(&self) -> u64 {
        self.idle.load(Ordering::Relaxed)
    }
    fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
    fn max(&self) -> u64 {
        10
    }
    fn pending_requests(&self) -> u64 {
        2
    }
}

#[test]
fn caches_pools_phases_and_events() {
    let reg = Registry::new();
    let cache = CacheMetrics::install(&reg, "users").unwrap();
    for i in 0..10 {
        cache.lookup(i % 5 != 0);
    }
    cache.evicted(3);
    cache.set_size(42);
    let snap = reg.snapshot();
    assert_counters(
        &snap,
        "cache.requests",
        &[
            (&[("cache.name", "users"), ("cache.result", "hit")], 8.0),
            (&[("cache.name", "users"), ("cache.result", "miss")], 2.0),
        ],
    );
    assert_counter(&snap, "cache.evictions", &[("cache.name", "users")], 3.0);
    assert_gauge(&snap, "cache.size", &[("cache.name", "users")], 42.0);

    let stats = Arc::new(Pool {
        idle: AtomicU64::new(3),
        used: AtomicU64::new(5),
    });
    let pool = PoolMetrics::install(&reg, "main").unwrap();
    pool.watch(stats.clone());
    pool.record_wait(Duration::from_millis(4));
    pool.timeout();
    stats.used.store(7, Ordering::Relaxed);
    // Sampled at collection time, so the latest values show.
    let snap = reg.snapshot();
    let p = [pool_label("main")];
    assert_connections(&snap, "main", 7.0, 3.0);
    assert_gauge(&snap, "db.client.connection.max", &p, 10.0);
    assert_gauge(&snap, "db.client.connection.pending_requests", &p, 2.0);
    assert_timeouts_and_waits(&snap, "main", 1.0, 1);

    let phases = Phases::install(&reg, "checkout.phase.duration").unwrap();
    let mut t = phases.start();
    std::thread::sleep(Duration::from_millis(3));
    let validate = t.checkpoint("validate");
    let charge = t.checkpoint("charge");
    assert!(validate >= 0.003 && charge < validate);
    assert_eq!(
        histogram_count(&reg, "checkout.phase.duration", &[("phase", "validate")]),
        1
    );
    assert_eq!(
        histogram_count(&reg, "checkout.phase.duration", &[("phase", "charge")]),
        1
    );

    let orders = Events::install(&reg, "orders.placed", "channel", &["web", "api"]).unwrap();
    orders.record("web");
    orders.add("api", 4);
    for bogus in 0..1000 {
        orders.record(&format!("bogus-{bogus}"));
    }
    let snap = reg.snapshot();
    assert_counter(&snap, "orders.placed", &[("channel", "web")], 1.0);
    assert_counter(&snap, "orders.placed", &[("channel", "api")], 4.0);
    assert_counter(&snap, "orders.placed", &[("channel", "other")], 1000.0);
    assert_eq!(snap.family("orders.placed").unwrap().series.len(), 3);
}

/// The OS start time of a process is right to the clock tick: a child spawned now starts now.
/// (From the boot time in whole seconds, as before, it was up to a second early, and every
/// startup, first-request and cold start duration up to a second too long.)
#[cfg(target_os = "linux")]
#[test]
fn a_process_start_time_is_exact_to_a_few_clock_ticks() {
    for _ in 0..3 {
        let before = SystemTime::now();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let after = SystemTime::now();
        let start = os_start_time(child.id()).expect("/proc is readable");
        let _ = child.kill();
        let _ = child.wait();
        // Two readings of 10 ms resolution (the start tick and /proc/uptime).
        let slack = Duration::from_millis(40);
        assert!(
            start + slack >= before && start <= after + slack,
            "started {:?} before the spawn began, or {:?} after it ended",
            before.duration_since(start).unwrap_or_default(),
            start.duration_since(after).unwrap_or_default()
        );
    }
}

#[test]
fn a_phase_timer_finishes_with_its_total_and_a_bounded_outcome() {
    let reg = Registry::new();
    let checkout =
        Phases::install_with_total(&reg, "checkout.phase.duration", "checkout.duration").unwrap();
    let mut t = checkout.start();
    std::thread::sleep(Duration::from_millis(5));
    let first = t.checkpoint("validate");
    std::thread::sleep(Duration::from_millis(5));
    t.checkpoint("charge");
    let total = t.finish("paid");
    assert!(total >= first && total >= 0.010, "{total}");
    assert_eq!(
        histogram_count(&reg, "checkout.duration", &[("outcome", "paid")]),
        1
    );
    let snap = reg.snapshot();
    let h = snap
        .point("checkout.duration", &[("outcome", "paid")])
        .and_then(|p| p.histogram().cloned())
        .unwrap();
    assert!((h.sum() - total).abs() < 1e-9);
    // Outcomes are free text, so they are capped: the 33rd distinct one overflows.
    for i in 0..40 {
        checkout.start().finish(&format!("outcome-{i}"));
    }
    let f = reg.snapshot();
    let fam = f.family("checkout.duration").unwrap();
    assert!(fam.series.len() <= MAX_OUTCOMES + 1, "{}", fam.series.len());
    assert!(fam.series.iter().any(|s| s.is_overflow()));
    // Without a total family, finish only returns the time.
    let plain = Phases::install(&reg, "plain.phase.duration").unwrap();
    assert!(plain.start().finish("ok") >= 0.0);
}

#[test]
fn business_events_bound_their_dimensions_sample_their_log_and_skip_bad_values() {
    let reg = Registry::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let orders = BusinessEvents::builder("orders")
        .dimension("channel", &["web", "mobile"])
        .dimension("country", &["fr", "de"])
        .sampled_log(10, move |e| {
            assert_eq!(e.name, "orders");
            assert_eq!(e.dimensions.len(), 2);
            seen.fetch_add(1, Ordering::Relaxed);
        })
        .install(&reg)
        .unwrap();
    for i in 0..1000 {
        // Values from users: most are not in the sets.
        let channel = format!("ch{}", i % 50);
        orders.record(&[&channel, "fr"], Some(i as f64));
    }
    orders.record(&["web"], None); // a missing dimension is `other`
    orders.record(&["web", "de"], Some(-5.0)); // a refund
    orders.record(&["web", "de"], Some(f64::NAN));
    orders.record(&["web", "de"], Some(f64::INFINITY));
    let snap = reg.snapshot();
    let fam = snap.family("orders").unwrap();
    // 2 × 2 allowed values, plus `other` in each: at most 9 series, whatever was sent.
    assert!(fam.series.len() <= 9, "{}", fam.series.len());
    assert_counters(
        &snap,
        "orders",
        &[
            (&[("channel", "other"), ("country", "fr")], 1000.0),
            (&[("channel", "web"), ("country", "other")], 1.0),
            (&[("channel", "web"), ("country", "de")], 3.0),
        ],
    );
    let v = snap
        .point("orders.value", &[("channel", "web"), ("country", "de")])
        .and_then(|p| p.histogram().cloned())
        .unwrap();
    assert_eq!((v.count(), v.sum()), (1, -5.0), "the refund only");
    assert_counter(
        &snap,
        "sonde.business_events.invalid_values",
        &[("event", "orders")],
        2.0,
    );
    // 1004 events, one in ten logged: events 0, 10, ..., 1000.
    assert_eq!(calls.load(Ordering::Relaxed), 101);
    // Limits are checked at install.
    let too_many = (0..5).fold(BusinessEvents::builder("wide"), |b, i| {
        b.dimension(["a", "b", "c", "d", "e"][i], &["x"])
    });
    assert!(matches!(too_many.install(&reg), Err(Error::Config(_))));
}

/// Lambda cost per invocation: the billed duration (rounded up to the millisecond) times the
/// memory at the architecture's price, plus the request charge, summed by trigger; from
/// Lambda's environment or given; absent outside Lambda.
#[test]
fn invocations_are_priced_by_the_cost_model() {
    use sonde_instrument::{Architecture, CostModel, LambdaPricing};
    // Outside Lambda (no memory size), no cost family.
    assert_eq!(CostModel::from_env_with(|_| None), None);
    assert_eq!(
        CostModel::from_env_with(
            |k| (k == "AWS_LAMBDA_FUNCTION_MEMORY_SIZE").then(|| "huge".into())
        ),
        None
    );
    let from_env = CostModel::from_env_with(|k| {
        (k == "AWS_LAMBDA_FUNCTION_MEMORY_SIZE").then(|| "1769".into())
    })
    .unwrap();
    assert_eq!(from_env.memory_mb, 1769);
    assert_eq!(from_env.pricing, LambdaPricing::default());

    let arm = CostModel {
        memory_mb: 1024,
        architecture: Architecture::Arm64,
        pricing: LambdaPricing::default(),
    };
    // 1 GB for exactly 1 s on arm64, and 1 ns billed as 1 ms.
    assert!((arm.cost(Duration::from_secs(1)) - (0.000_000_2 + 0.000_013_333_4)).abs() < 1e-15);
    assert!(
        (arm.cost(Duration::from_nanos(1)) - (0.000_000_2 + 0.001 * 0.000_013_333_4)).abs() < 1e-15
    );

    let reg = Registry::new();
    let plain = Faas::install(&reg).unwrap();
    assert!(
        plain.cost_model().is_none() || std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").is_ok()
    );
    let model = CostModel {
        memory_mb: 512,
        architecture: Architecture::X86_64,
        pricing: LambdaPricing {
            x86_64_per_gb_second: 1.0,
            arm64_per_gb_second: 1.0,
            per_request: 0.5,
        },
    };
    let faas = Faas::install(&reg)
        .unwrap()
        .with_cost_model(model, &reg)
        .unwrap();
    for _ in 0..4 {
        let r: Result<(), std::io::Error> = faas.invoke(Trigger::PubSub, || {
            std::thread::sleep(Duration::from_millis(20));
            Ok(())
        });
        r.unwrap();
    }
    let total = value(
        &reg.snapshot(),
        "faas.invocation.cost",
        &[("faas.trigger", "pubsub")],
    );
    // Four requests at 0.5, and 4 x at least 20 ms at 0.5 GB x 1 $/GB-s.
    let duration_part = total - 2.0;
    assert!(
        (0.04..0.2).contains(&duration_part),
        "{total}: {duration_part}"
    );
}
