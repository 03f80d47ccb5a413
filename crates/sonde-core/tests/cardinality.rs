//! Series limits, overflow, memory bounds and idle expiry, measured with a counting allocator
//! (its own test binary: the allocator counts the whole process).
#![allow(clippy::unwrap_used)] // tests panic on failure by design

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Duration;

use sonde_core::{Number, OVERFLOW_LABEL, Point, Registry, SERIES_OVERFLOW, Unit, testing};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates to the system allocator and only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

// Tests in this binary measure process-wide allocation, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn live() -> isize {
    LIVE.load(Relaxed)
}

#[test]
fn a_million_label_values_stay_bounded() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let reg = Registry::new();
    let fam = reg.counter("requests").labels(["user.id"]).build().unwrap();
    let mut buf = String::new();
    let mut after_limit = 0;
    for i in 0..1_000_000u32 {
        use std::fmt::Write;
        buf.clear();
        write!(buf, "user-{i}").unwrap();
        fam.with(&[buf.as_str()]).inc();
        if i == 1999 {
            after_limit = live();
        }
    }
    let growth = live() - after_limit;
    assert_eq!(fam.series_count(), 2000);
    // 998,000 lookups past the limit allocated (almost) nothing: the overflow series once.
    assert!(
        growth < 64 * 1024,
        "memory grew by {growth} bytes past the limit"
    );

    let snap = reg.snapshot();
    let f = snap.family("requests").unwrap();
    assert_eq!(f.series.len(), 2001);
    let overflow = f.series.iter().find(|s| s.is_overflow()).unwrap();
    assert_eq!(f.labels(overflow), vec![(OVERFLOW_LABEL, "true")]);
    assert_eq!(overflow.point.number(), Some(Number::U64(998_000)));
    testing::assert_counter(&snap, SERIES_OVERFLOW, &[("metric", "requests")], 998_000.0);
    testing::assert_gauge(
        &snap,
        sonde_core::SERIES_ACTIVE,
        &[("metric", "requests")],
        2000.0,
    );
    // Nothing was lost: every increment is in a regular or the overflow series.
    let total: u64 = f
        .series
        .iter()
        .map(|s| match s.point {
            Point::Counter(Number::U64(v)) => v,
            _ => 0,
        })
        .sum();
    assert_eq!(total, 1_000_000);
}

#[test]
fn bytes_per_series_are_bounded_and_stated() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let reg = Registry::with_max_series(200_000);
    let fam = testing::family(
        reg.counter("c")
            .labels([
                "http.request.method",
                "http.route",
                "http.response.status_code",
            ])
            .max_series(200_000),
    );
    let values: Vec<[String; 3]> = (0..100_000)
        .map(|i| {
            [
                format!("M{}", i % 7),
                format!("/route/{i}"),
                format!("{}", 200 + i % 5),
            ]
        })
        .collect();
    fam.with(&["warm", "up", "0"]).inc();
    let before = live();
    for v in &values {
        fam.with(v).inc();
    }
    let per_counter = (live() - before) as f64 / values.len() as f64;
    // Label bytes are part of the figure: "/route/NNNNN" etc. average ~20 bytes.
    assert!(
        per_counter <= 150.0,
        "{per_counter} bytes per counter series"
    );

    let h = testing::family(
        reg.histogram("h")
            .unit(Unit::Seconds)
            .labels(["k"])
            .max_series(10_000),
    );
    h.with(&["warm"]).observe(1.0);
    let before = live();
    for i in 0..1000 {
        h.with(&[format!("{i}").as_str()]).observe(0.1);
    }
    let per_hist = (live() - before) as f64 / 1000.0;
    let stated = h.config().series_bytes() as f64;
    // One value: one block of cells (96 bytes), far below the most a series can hold.
    assert!(
        per_hist <= stated / 2.0,
        "{per_hist} bytes per histogram series, at most {stated}"
    );
    // A three-decade spread (1 ms .. 1 s) per series: five blocks, under 1 KB with labels.
    let before = live();
    for i in 0..1000 {
        let s = h.with(&[format!("wide{i}").as_str()]);
        let mut x = 0.001;
        while x <= 1.0 {
            s.observe(x);
            x *= 1.05;
        }
    }
    let per_wide = (live() - before) as f64 / 1000.0;
    assert!(per_wide <= 1024.0, "{per_wide} bytes per 3-decade series");
    println!(
        "bytes per counter series: {per_counter:.1}; per histogram series: {per_hist:.0} with one value, {per_wide:.0} over three decades (at most {stated})"
    );

    // Memory follows the range the data spans, not the number of observations or reads: once
    // the blocks of a range and their carries exist (a block's carries come the first time one
    // of its cells passes 2^15 observations: a batch of 2^15 at every half octave makes them
    // here), a million observations in it allocate nothing, cells moving counts to their
    // carries on the way (the one value observed 500,000 times crosses 2^15 fifteen times).
    let one = h.with(&["warm"]);
    let mut v = 1e-6;
    while v < 0.2 {
        one.observe_n(v, 1 << 15);
        v *= 1.4;
    }
    for i in 0..100_000 {
        one.observe(1e-6 * (i + 1) as f64);
    }
    let before = live();
    for i in 0..500_000 {
        one.observe(1e-6 * (i % 100_000 + 1) as f64);
        one.observe(0.05);
    }
    assert_eq!(live(), before, "observing allocated");
}

#[test]
fn idle_series_expire_but_held_ones_do_not() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let reg = Registry::new();
    let fam = testing::family(
        reg.counter("sessions")
            .labels(["id"])
            .idle_timeout(Duration::from_secs(1)),
    );
    let held = fam.with(&["held"]);
    held.inc();
    fam.with(&["transient"]).inc();
    fam.with(&["looked-up"]).inc();
    assert_eq!(fam.series_count(), 3);
    // Bounded: at most ~3.5 s of polling.
    let mut expired = false;
    for _ in 0..35 {
        std::thread::sleep(Duration::from_millis(100));
        fam.with(&["looked-up"]).inc();
        reg.sweep_idle();
        if fam.series_count() == 2 {
            expired = true;
            break;
        }
    }
    assert!(expired, "the transient series did not expire");
    let snap = reg.snapshot();
    let f = snap.family("sessions").unwrap();
    let ids: Vec<_> = f
        .series
        .iter()
        .map(|s| s.label_values().next().unwrap().to_owned())
        .collect();
    assert!(
        ids.contains(&"held".to_owned()) && ids.contains(&"looked-up".to_owned()),
        "{ids:?}"
    );
    // A held handle keeps recording into the exported series.
    held.inc();
    testing::assert_counter(&reg.snapshot(), "sessions", &[("id", "held")], 2.0);
    // The expired series comes back fresh when used again.
    fam.with(&["transient"]).inc();
    testing::assert_counter(&reg.snapshot(), "sessions", &[("id", "transient")], 1.0);
}
