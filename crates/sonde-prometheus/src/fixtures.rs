//! Registry contents the unit tests of several modules encode the same way.

use sonde_core::{Registry, Unit};

/// Registers `http.server.request.duration` (seconds, buckets 0.1 and 1) labelled by `labels`
/// and gives its series `values` (the only series when there are no labels) one observation
/// per bucket: 0.05, 0.5 and 2.
pub(crate) fn request_durations(reg: &Registry, labels: &[&'static str], values: &[&str]) {
    let family = reg
        .histogram("http.server.request.duration")
        .unit(Unit::Seconds)
        .labels(labels.iter().copied())
        .buckets(vec![0.1, 1.0])
        .build()
        .unwrap();
    let h = if labels.is_empty() {
        family.handle()
    } else {
        family.with(values)
    };
    for v in [0.05, 0.5, 2.0] {
        h.observe(v);
    }
}

/// Registers the gauge `temp` in degrees Celsius and sets it to `value`.
pub(crate) fn temperature(reg: &Registry, value: f64) {
    reg.gauge_f64("temp")
        .unit(Unit::Custom("Cel".into()))
        .build()
        .unwrap()
        .handle()
        .set(value);
}

pub(crate) use sonde_core::testing::assert_contains_all;

/// The `MetricFamily` messages of a delimited protobuf exposition, in order.
pub(crate) fn decode_families(mut body: &[u8]) -> Vec<crate::proto::pb::MetricFamily> {
    let mut out = Vec::new();
    while !body.is_empty() {
        out.push(
            <crate::proto::pb::MetricFamily as prost::Message>::decode_length_delimited(&mut body)
                .unwrap(),
        );
    }
    out
}
