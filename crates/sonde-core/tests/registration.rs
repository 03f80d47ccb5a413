//! Registration rules: same definition returns the same family, anything else is an error.

use sonde_core::{
    Counter, Error, Gauge, Histogram, INSTRUMENTATION_ERRORS, LazyFamily, Number, Registry, Unit,
    testing,
};

#[test]
fn same_definition_returns_same_family() {
    let reg = Registry::new();
    let a = reg.counter("jobs").labels(["queue"]).build().unwrap();
    let b = reg.counter("jobs").labels(["queue"]).build().unwrap();
    a.with(&["q"]).inc();
    b.with(&["q"]).inc();
    assert_eq!(a.with(&["q"]).value(), Number::U64(2));
    assert_eq!(reg.snapshot().family("jobs").unwrap().series.len(), 1);
}

#[test]
fn conflicting_definitions_are_errors() {
    let reg = Registry::new();
    testing::family(reg.counter("x").labels(["a"]).unit(Unit::Seconds));
    let cases: Vec<Error> = vec![
        testing::refused(reg.gauge("x").labels(["a"]).unit(Unit::Seconds)),
        testing::refused(reg.counter("x").labels(["b"]).unit(Unit::Seconds)),
        testing::refused(reg.counter("x").labels(["a"]).unit(Unit::Bytes)),
        testing::refused(reg.counter_f64("x").labels(["a"]).unit(Unit::Seconds)),
        testing::refused(reg.counter("x").unit(Unit::Seconds)),
    ];
    for e in cases {
        let msg = e.to_string();
        assert!(matches!(e, Error::Conflict { .. }), "{msg}");
        assert!(
            msg.contains("already registered") && msg.contains("\"x\""),
            "{msg}"
        );
    }
}

#[test]
fn invalid_names_name_the_character() {
    let reg = Registry::new();
    let e = testing::refused(reg.counter("http requests")).to_string();
    assert!(e.contains("' '") && e.contains("byte 4"), "{e}");
    let e = testing::refused(reg.counter("ok").labels(["route", "bad-label"])).to_string();
    assert!(e.contains("'-'") && e.contains("bad-label"), "{e}");
    let e = testing::refused(reg.histogram("h").labels(["le"])).to_string();
    assert!(e.contains("reserved"), "{e}");
    let e = testing::refused(reg.counter("d").labels(["a", "a"])).to_string();
    assert!(e.contains("declared twice"), "{e}");
    let e = testing::refused(reg.histogram("b").buckets(vec![1.0, 0.5])).to_string();
    assert!(e.contains("strictly increasing"), "{e}");
    let e = testing::refused(reg.histogram("b").buckets(vec![1.0, f64::NAN])).to_string();
    assert!(e.contains("not finite"), "{e}");
    // Nothing was registered by the failures.
    assert!(!reg.family_names().iter().any(|n| n == "b" || n == "d"));
}

#[test]
fn wrong_label_count_never_panics() {
    let reg = Registry::new();
    let f = reg.counter("c").labels(["a", "b"]).build().unwrap();
    let err = f.try_with(&["only-one"]).unwrap_err();
    assert!(err.to_string().contains("declares 2 label(s)"), "{err}");
    // `with` records into a detached series and counts the mistake.
    f.with(&["only-one"]).inc();
    f.with(&["x", "y", "z"]).inc();
    let snap = reg.snapshot();
    assert!(snap.family("c").unwrap().series.is_empty());
    testing::assert_counter(
        &snap,
        INSTRUMENTATION_ERRORS,
        &[("metric", "c"), ("reason", "label_count")],
        2.0,
    );
}

static STATIC_JOBS: LazyFamily<Counter> = LazyFamily::new("test.static.jobs")
    .description("Jobs done.")
    .labels(&["queue"]);
static STATIC_CONFLICT: LazyFamily<Gauge> = LazyFamily::new("test.static.jobs");
static STATIC_LATENCY: LazyFamily<Histogram> = LazyFamily::new("test.static.latency")
    .unit(|| Unit::Seconds)
    .buckets(&[0.1, 1.0]);

#[test]
fn static_families_and_macros_use_the_global_registry() {
    STATIC_JOBS.with(&["mail"]).inc();
    STATIC_JOBS.with(&["mail"]).inc();
    // A conflicting static definition yields detached handles and an error, not a panic.
    STATIC_CONFLICT.handle().set(5);
    assert!(STATIC_CONFLICT.get().is_err());
    STATIC_LATENCY.handle().observe(0.5);
    for _ in 0..3 {
        sonde_core::counter!("test.macro.hits", "cache.name" => "users", "cache.result" => "hit")
            .inc();
    }
    let result = String::from("miss");
    sonde_core::counter!("test.macro.hits", "cache.name" => "users", "cache.result" => result)
        .add(2);
    sonde_core::histogram!("test.macro.duration", "op" => "get").observe(0.02);
    sonde_core::gauge!("test.macro.depth").set(7);

    let snap = Registry::global().snapshot();
    testing::assert_counter(&snap, "test.static.jobs", &[("queue", "mail")], 2.0);
    let h = snap
        .point("test.static.latency", &[])
        .unwrap()
        .histogram()
        .unwrap();
    assert_eq!(h.layout().explicit_bounds(), &[0.1, 1.0]);
    assert_eq!(h.bucket_counts(), vec![0, 1, 0]);
    testing::assert_counter(
        &snap,
        "test.macro.hits",
        &[("cache.name", "users"), ("cache.result", "hit")],
        3.0,
    );
    testing::assert_counter(
        &snap,
        "test.macro.hits",
        &[("cache.name", "users"), ("cache.result", "miss")],
        2.0,
    );
    testing::assert_histogram(&snap, "test.macro.duration", &[("op", "get")], 1, 0.02);
    assert_eq!(
        snap.family("test.macro.duration").unwrap().meta.unit(),
        &Unit::Seconds
    );
    testing::assert_gauge(&snap, "test.macro.depth", &[], 7.0);
}

#[test]
fn registries_are_isolated() {
    let a = testing::registry();
    let b = testing::registry();
    testing::handle(a.counter("same")).inc();
    // Another registry may use the same name with another definition.
    testing::handle(b.gauge("same")).set(3);
    testing::assert_counter(&a.snapshot(), "same", &[], 1.0);
    testing::assert_gauge(&b.snapshot(), "same", &[], 3.0);
}

#[test]
fn timers_record_on_a_monotonic_clock() {
    let reg = Registry::new();
    let h = testing::seconds_histogram(&reg, "t.duration", &[]).handle();
    {
        let _t = h.start_timer();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let secs = h.start_timer().stop();
    assert!(secs >= 0.0);
    h.start_timer().discard();
    let out = h.time(|| 42);
    assert_eq!(out, 42);
    let fut = h.time_future(async { 7 });
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert_eq!(fut.as_mut().poll(&mut cx), std::task::Poll::Ready(7));
    let p = h.read();
    assert_eq!(p.count(), 4);
    assert!(p.max().unwrap() >= 0.005, "{p:?}");

    let ms = testing::handle(reg.histogram("t.ms").unit(Unit::Milliseconds));
    {
        let _t = ms.start_timer();
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    assert!(
        ms.read().sum() >= 3.0,
        "milliseconds unit records milliseconds"
    );
}
