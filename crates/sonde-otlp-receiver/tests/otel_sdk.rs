//! The OpenTelemetry Rust SDK (opentelemetry_sdk + opentelemetry-otlp over HTTP/protobuf) as the
//! sender: what it pushes is what the registry holds.

use crate::common;

use std::time::Duration;

use common::http_receiver;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::metrics::Temporality;
use sonde_core::Registry;
use sonde_tests::otel_sdk::push_orders_and_latency;

#[test]
fn the_rust_sdk_pushes_exact_values() {
    let agent = Registry::new();
    let receiver = http_receiver(&agent);
    let endpoint = format!("http://{}/v1/metrics", receiver.http_addr().unwrap());
    // reqwest is built without a default crypto provider in this workspace (plain http here).
    // The blocking client must be built outside any Tokio runtime, as this test thread is.
    #[allow(deprecated)] // ring: the workspace's one TLS stack
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for temporality in [Temporality::Cumulative, Temporality::Delta] {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(client.clone())
            .with_endpoint(endpoint.clone())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_temporality(temporality)
            .build()
            .unwrap();
        let name = format!("{temporality:?}").to_lowercase();
        push_orders_and_latency(
            exporter,
            [
                KeyValue::new("service.name", "rust-sdk"),
                KeyValue::new("service.instance.id", name.clone()),
            ],
            "sdk",
        );

        let s = agent.snapshot();
        let id = [("job", "rust-sdk"), ("instance", name.as_str())];
        let orders = s
            .point("sdk.orders", &[("region", "eu"), id[0], id[1]])
            .and_then(|p| p.number())
            .map(|n| n.as_f64());
        assert_eq!(orders, Some(10.0), "{temporality:?}: {s:#?}");
        let h = s.point("sdk.latency", &id).unwrap().histogram().unwrap();
        assert_eq!(h.count(), 3, "{temporality:?}");
        assert!(
            (h.sum() - 2.35).abs() < 1e-9,
            "{temporality:?}: {}",
            h.sum()
        );
        assert_eq!(
            h.cumulative_buckets(),
            vec![(0.1, 1), (0.5, 2), (f64::INFINITY, 3)]
        );
    }
}
