//! Helpers for testing your own instrumentation: an isolated registry and assertions on
//! snapshots.
//!
//! ```
//! use sonde_core::testing;
//! let registry = testing::registry();
//! let hits = registry.counter("cache.requests").labels(["cache.result"]).build().unwrap();
//! hits.with(&["hit"]).inc();
//! let snap = registry.snapshot();
//! testing::assert_counter(&snap, "cache.requests", &[("cache.result", "hit")], 1.0);
//! ```

use crate::snapshot::{Point, Snapshot};
use crate::{Counter, Family, FamilyBuilder, Histogram, Instrument, Registry, Unit};

/// A fresh registry, isolated from the global one and from other tests.
pub fn registry() -> Registry {
    Registry::new()
}

fn point<'a>(snap: &'a Snapshot, name: &str, labels: &[(&str, &str)]) -> &'a Point {
    let Some(family) = snap.family(name) else {
        panic!(
            "no family {name:?} in the snapshot; families: {:?}",
            snap.families
                .iter()
                .map(|f| f.meta.name())
                .collect::<Vec<_>>()
        );
    };
    match family.find(labels) {
        Some(s) => &s.point,
        None => panic!(
            "family {name:?} has no series with labels {labels:?}; series: {:?}",
            family
                .series
                .iter()
                .map(|s| family.labels(s))
                .collect::<Vec<_>>()
        ),
    }
}

/// Asserts that a counter series exists and has `value`.
#[track_caller]
pub fn assert_counter(snap: &Snapshot, name: &str, labels: &[(&str, &str)], value: f64) {
    match point(snap, name, labels) {
        Point::Counter(n) => assert_eq!(n.as_f64(), value, "counter {name} {labels:?}"),
        other => panic!("{name} is not a counter: {other:?}"),
    }
}

/// Asserts that a gauge or up-down counter series exists and has `value`.
#[track_caller]
pub fn assert_gauge(snap: &Snapshot, name: &str, labels: &[(&str, &str)], value: f64) {
    match point(snap, name, labels) {
        Point::Gauge(n) | Point::UpDownCounter(n) => {
            assert_eq!(n.as_f64(), value, "gauge {name} {labels:?}")
        }
        other => panic!("{name} is not a gauge: {other:?}"),
    }
}

/// Asserts that a histogram series exists with `count` observations summing to `sum`
/// (compared with a relative tolerance of 1e-9).
#[track_caller]
pub fn assert_histogram(
    snap: &Snapshot,
    name: &str,
    labels: &[(&str, &str)],
    count: u64,
    sum: f64,
) {
    match point(snap, name, labels) {
        Point::Histogram(h) => {
            assert_eq!(h.count(), count, "histogram {name} {labels:?} count");
            let tol = 1e-9 * sum.abs().max(1e-12);
            assert!(
                (h.sum() - sum).abs() <= tol,
                "histogram {name} {labels:?} sum {} != {sum}",
                h.sum()
            );
        }
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

/// A `u64` counter `name` with these label names. Panics if the registry refuses it (a name
/// taken, a label name invalid).
///
/// ```
/// let registry = sonde_core::testing::registry();
/// let hits = sonde_core::testing::labelled_counter(&registry, "cache.requests", &["cache.result"]);
/// hits.with(&["hit"]).add(2);
/// let snap = registry.snapshot();
/// sonde_core::testing::assert_counter(&snap, "cache.requests", &[("cache.result", "hit")], 2.0);
/// ```
#[track_caller]
pub fn labelled_counter(
    registry: &Registry,
    name: &'static str,
    label_names: &[&'static str],
) -> Family<Counter> {
    family(registry.counter(name).labels(label_names.iter().copied()))
}

/// A histogram `name` in seconds with the default buckets and these label names: the usual
/// latency fixture. Panics if the registry refuses it (a name taken, a label name invalid).
///
/// ```
/// let registry = sonde_core::testing::registry();
/// let latency = sonde_core::testing::seconds_histogram(&registry, "op.duration", &["op"]);
/// latency.with(&["read"]).observe(0.25);
/// let snap = registry.snapshot();
/// sonde_core::testing::assert_histogram(&snap, "op.duration", &[("op", "read")], 1, 0.25);
/// ```
#[track_caller]
pub fn seconds_histogram(
    registry: &Registry,
    name: &'static str,
    label_names: &[&'static str],
) -> Family<Histogram> {
    family(
        registry
            .histogram(name)
            .unit(Unit::Seconds)
            .labels(label_names.iter().copied()),
    )
}

/// A histogram `name` in seconds, without labels, with buckets at `bounds` and one exemplar
/// kept per bucket: the handle to observe into when a test checks exemplars. Panics if the
/// registry refuses it (a name taken, bounds not increasing).
///
/// ```
/// let registry = sonde_core::testing::registry();
/// let h = sonde_core::testing::exemplar_histogram(&registry, "latency", &[0.1, 1.0]);
/// h.observe(0.05);
/// assert_eq!(h.read().exemplars().len(), 3);
/// ```
#[track_caller]
pub fn exemplar_histogram(registry: &Registry, name: &'static str, bounds: &[f64]) -> Histogram {
    handle(
        registry
            .histogram(name)
            .unit(Unit::Seconds)
            .buckets(bounds.to_vec())
            .exemplars(true),
    )
}

/// The family `builder` registers, for a fixture whose registration cannot fail: a refusal
/// panics at the test's line with the reason (which names the metric).
///
/// ```
/// use sonde_core::{testing, Unit};
/// let registry = testing::registry();
/// let size = testing::family(registry.gauge("queue.size").unit(Unit::Bytes).labels(["queue"]));
/// size.with(&["jobs"]).set(512);
/// let snap = registry.snapshot();
/// testing::assert_gauge(&snap, "queue.size", &[("queue", "jobs")], 512.0);
/// ```
#[track_caller]
pub fn family<M: Instrument>(builder: FamilyBuilder<'_, M>) -> Family<M> {
    match builder.build() {
        Ok(family) => family,
        Err(e) => panic!("registration refused: {e}"),
    }
}

/// The only series of the unlabelled family `builder` registers (its
/// [`handle`](Family::handle)): `reg.histogram("t").unit(Unit::Seconds).build().unwrap().handle()`
/// in one call. A refusal panics at the test's line with the reason.
///
/// ```
/// use sonde_core::{testing, Unit};
/// let registry = testing::registry();
/// let cpu = testing::handle(registry.counter_f64("cpu.time").unit(Unit::Seconds));
/// cpu.add(0.5);
/// testing::assert_counter(&registry.snapshot(), "cpu.time", &[], 0.5);
/// ```
#[track_caller]
pub fn handle<M: Instrument>(builder: FamilyBuilder<'_, M>) -> M {
    family(builder).handle()
}

/// The error the registry refuses the family `builder` describes with (a conflicting
/// definition, an invalid name, bad buckets); panics at the test's line if it registers.
///
/// ```
/// use sonde_core::{testing, Error};
/// let registry = testing::registry();
/// testing::family(registry.counter("jobs").labels(["queue"]));
/// let e = testing::refused(registry.gauge("jobs").labels(["queue"]));
/// assert!(matches!(e, Error::Conflict { .. }), "{e}");
/// ```
#[track_caller]
pub fn refused<M: Instrument>(builder: FamilyBuilder<'_, M>) -> crate::Error {
    match builder.build() {
        Ok(family) => panic!("the registry accepted {:?}", family.meta().name()),
        Err(e) => e,
    }
}

/// Asserts that `text` contains every one of `parts`; panics naming the first one missing,
/// with the whole text (an exposition, a report, an error message).
///
/// ```
/// sonde_core::testing::assert_contains_all("time to ready: 1.2s\nPASS", &["ready", "PASS"]);
/// ```
#[track_caller]
pub fn assert_contains_all(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
}

/// Asserts that one line of `text` is exactly `line` (an exposition's sample, an error
/// message's problem); panics with the line and the whole text.
///
/// ```
/// sonde_core::testing::assert_has_line("# TYPE up gauge\nup 1\n", "up 1");
/// ```
#[track_caller]
pub fn assert_has_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

/// Runs a future to completion on the current thread by polling it in a loop. Meant for tests of
/// async instrumentation whose futures do not wait on I/O or timers (they would spin).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// Runs `f` with a subscriber on this thread that records every `tracing` event, sonde's
/// diagnostics (see [`crate::diag`]) included, and returns `f`'s result with the lines, as
/// `LEVEL message` followed by ` field=value` (values in `Debug` form) for the other fields.
/// Events on other threads are not seen.
///
/// ```
/// let ((), lines) = sonde_core::testing::capture_diagnostics(|| {
///     sonde_core::diag::warn(format_args!("export failed"));
/// });
/// assert_eq!(lines, ["WARN export failed"]);
/// ```
pub fn capture_diagnostics<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let subscriber = Capture {
        lines: lines.clone(),
    };
    let result = tracing::subscriber::with_default(subscriber, f);
    let lines = std::mem::take(&mut *lines.lock().unwrap_or_else(|e| e.into_inner()));
    (result, lines)
}

/// The lines a [`capture_global_diagnostics`] subscriber has recorded so far.
pub type CapturedLines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Installs, as the process's global default, a subscriber that records every `tracing`
/// event on every thread as [`capture_diagnostics`] does, and returns its lines: for
/// diagnostics logged on threads the test does not run (an exporter's, say). Once per
/// process; an error if a global subscriber is set already.
pub fn capture_global_diagnostics()
-> Result<CapturedLines, tracing::subscriber::SetGlobalDefaultError> {
    let lines = CapturedLines::default();
    tracing::subscriber::set_global_default(Capture {
        lines: lines.clone(),
    })?;
    Ok(lines)
}

/// The subscriber of [`capture_diagnostics`]: keeps every event's level and message.
struct Capture {
    lines: CapturedLines,
}

/// The message, then the other fields.
struct Line(String, String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.1, " {}={value:?}", field.name());
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut l = Line(String::new(), String::new());
        event.record(&mut l);
        let line = format!("{} {}{}", event.metadata().level(), l.0, l.1);
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
