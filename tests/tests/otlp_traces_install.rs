//! The one-call tracing pipeline, installed globally (its own test binary, since a process has
//! one global subscriber).
#![allow(clippy::unwrap_used)] // tests panic on failure by design

use std::time::Duration;

use sonde::otlp::OtlpTransport;
use sonde::otlp::traces::TracesBuilder;
use sonde::{Registry, Resource};
use sonde_tests::otlp::OtlpReceiver;

#[test]
fn install_sets_up_spans_metrics_and_exemplars_in_one_call() {
    let rx = OtlpReceiver::start();
    let reg = Registry::new();
    let base = rx.http_endpoint();
    let pipeline = TracesBuilder::new()
        // The sampler and endpoint come from the standard variables.
        .environment(move |k| match k {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => Some(format!("{base}/v1/traces")),
            "OTEL_TRACES_SAMPLER" => Some("always_on".into()),
            _ => None,
        })
        .transport(OtlpTransport::new())
        .resource(Resource::empty().with("service.name", "installed"))
        .registry(reg.clone())
        .span_durations(true)
        .install()
        .unwrap();
    let checkout = reg
        .histogram("checkout.duration")
        .exemplars(true)
        .build()
        .unwrap()
        .handle();
    tracing::info_span!("checkout").in_scope(|| checkout.observe(0.12));
    pipeline.flush(Duration::from_secs(5)).unwrap();
    assert!(rx.wait_for_traces(Duration::from_secs(10), |t| !t.is_empty()));
    let span = rx.traces()[0].resource_spans[0].scope_spans[0].spans[0].clone();
    assert_eq!(span.name, "checkout");
    // A plain observation inside the span kept its trace id (installed exemplar provider).
    let snap = reg.snapshot();
    let point = snap
        .point("checkout.duration", &[])
        .unwrap()
        .histogram()
        .unwrap();
    let ex = point.exemplars().iter().flatten().next().unwrap();
    assert_eq!(ex.trace_id.to_vec(), span.trace_id);
    // Spans without conventional fields, opted in, become span.duration{span.name}.
    let d = snap
        .point("span.duration", &[("span.name", "checkout")])
        .unwrap();
    assert_eq!(d.histogram().unwrap().count(), 1);
    // A second global installation is refused with a clear error.
    let e = TracesBuilder::new()
        .environment(|_| None)
        .registry(reg)
        .install()
        .unwrap_err();
    assert!(e.to_string().contains("already installed"), "{e}");
    pipeline.shutdown(Duration::from_secs(5)).unwrap();
}
