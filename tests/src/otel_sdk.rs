//! The OpenTelemetry Rust SDK as a sender: a fixed recording pushed through any metrics exporter
//! (opentelemetry-otlp over gRPC or HTTP), for the receivers to hold exactly.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

/// Records through the SDK, for a resource of `resource` attributes, and pushes with `exporter`:
/// the counter `{prefix}.orders` (`region=eu`) 4, the histogram `{prefix}.latency` (unit `s`,
/// boundaries 0.1 and 0.5) 0.05 and 0.3, a flush; then 6 more orders and a latency of 2.0, a
/// flush; then shuts the provider down. A receiver ends up with 10 orders and a histogram of
/// count 3, sum 2.35, buckets 1, 2, 3.
pub fn push_orders_and_latency(
    exporter: impl PushMetricExporter,
    resource: impl IntoIterator<Item = KeyValue>,
    prefix: &str,
) {
    let provider = provider(exporter, resource);
    let meter = provider.meter("test");
    let orders = meter.u64_counter(format!("{prefix}.orders")).build();
    let latency = meter
        .f64_histogram(format!("{prefix}.latency"))
        .with_unit("s")
        .with_boundaries(vec![0.1, 0.5])
        .build();
    orders.add(4, &[KeyValue::new("region", "eu")]);
    latency.record(0.05, &[]);
    latency.record(0.3, &[]);
    provider.force_flush().unwrap();
    orders.add(6, &[KeyValue::new("region", "eu")]);
    latency.record(2.0, &[]);
    provider.force_flush().unwrap();
    provider.shutdown().unwrap();
}

/// An SDK meter provider for a resource of `resource` attributes that pushes with `exporter`
/// only when flushed (its interval is an hour).
pub fn provider(
    exporter: impl PushMetricExporter,
    resource: impl IntoIterator<Item = KeyValue>,
) -> SdkMeterProvider {
    SdkMeterProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder_empty()
                .with_attributes(resource)
                .build(),
        )
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build()
}
