//! Spans become metrics; sampled spans leave their trace id as the bucket's exemplar.
#![allow(clippy::unwrap_used)] // tests panic on failure by design

use opentelemetry::trace::TracerProvider as _;
use sonde_core::{Point, Registry, Unit, testing};
use sonde_tracing::SondeLayer;
use tracing_subscriber::layer::SubscriberExt;

fn hist(reg: &Registry, name: &str, labels: &[(&str, &str)]) -> sonde_core::HistogramPoint {
    reg.snapshot()
        .point(name, labels)
        .and_then(Point::histogram)
        .cloned()
        .unwrap()
}

#[test]
fn semantic_convention_spans_become_metrics() {
    let reg = Registry::new();
    let layer = SondeLayer::new(&reg).unwrap().span_durations(true);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        {
            let s = tracing::info_span!(
                "request",
                http.request.method = "GET",
                http.route = "/users/{id}",
                http.response.status_code = tracing::field::Empty,
            );
            let _e = s.enter();
            std::thread::sleep(std::time::Duration::from_millis(5));
            s.record("http.response.status_code", 200u64);
        }
        {
            let _s = tracing::info_span!(
                "query",
                db.system.name = "sqlite",
                db.operation.name = "SELECT",
                db.collection.name = "users",
                error.type = "Timeout",
            )
            .entered();
        }
        {
            let _s = tracing::info_span!(
                "call",
                http.request.method = "POST",
                server.address = "pay.example",
                http.response.status_code = 201u64
            )
            .entered();
        }
        {
            let _s = tracing::info_span!("render_page").entered();
        }
    });
    let h = hist(
        &reg,
        "http.server.request.duration",
        &[
            ("http.request.method", "GET"),
            ("http.route", "/users/{id}"),
            ("http.response.status_code", "200"),
            ("error.type", ""),
        ],
    );
    assert_eq!(h.count(), 1);
    assert!(h.sum() >= 0.005);
    let db = [
        ("db.system.name", "sqlite"),
        ("db.operation.name", "SELECT"),
        ("db.collection.name", "users"),
        ("error.type", "Timeout"),
    ];
    assert_eq!(hist(&reg, "db.client.operation.duration", &db).count(), 1);
    let client = [
        ("http.request.method", "POST"),
        ("server.address", "pay.example"),
        ("http.response.status_code", "201"),
        ("error.type", ""),
        ("url.template", ""),
    ];
    assert_eq!(
        hist(&reg, "http.client.request.duration", &client).count(),
        1
    );
    assert_eq!(
        hist(&reg, "span.duration", &[("span.name", "render_page")]).count(),
        1
    );
    assert_eq!(
        reg.snapshot().family("span.duration").unwrap().meta.unit(),
        &Unit::Seconds
    );
}

#[test]
fn exemplars_carry_the_span_trace_id() {
    let reg = Registry::new();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .build();
    let tracer = provider.tracer("test");
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let sonde = SondeLayer::new(&reg).unwrap();
    // Plain observe() calls inside spans get exemplars too.
    assert!(sonde_tracing::install_exemplar_provider());
    let inner = testing::handle(
        reg.histogram("work.duration")
            .unit(Unit::Seconds)
            .exemplars(true),
    );
    let subscriber = tracing_subscriber::registry().with(sonde).with(otel);
    let (span_trace, inner_trace) = tracing::subscriber::with_default(subscriber, || {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let span = tracing::info_span!(
            "request",
            http.request.method = "GET",
            http.route = "/a",
            http.response.status_code = 200u64
        );
        let trace_id = span.context().span().span_context().trace_id().to_bytes();
        let inner_trace = {
            let _e = span.enter();
            inner.observe(0.002);
            trace_id
        };
        drop(span);
        (trace_id, inner_trace)
    });
    let h = hist(
        &reg,
        "http.server.request.duration",
        &[
            ("http.request.method", "GET"),
            ("http.route", "/a"),
            ("http.response.status_code", "200"),
            ("error.type", ""),
        ],
    );
    let exemplar = h.exemplars().iter().flatten().next().copied().unwrap();
    assert_eq!(
        exemplar.trace_id, span_trace,
        "the bucket's exemplar is the span's trace"
    );
    assert_ne!(span_trace, [0u8; 16]);
    let w = inner.read();
    let e = w.exemplars().iter().flatten().next().copied().unwrap();
    assert_eq!(e.trace_id, inner_trace);
    assert_eq!(e.value, 0.002);
}
