//! OpenTelemetry names to Prometheus names, by the rules of the OpenTelemetry specification's
//! Prometheus compatibility section: invalid characters become `_` (runs collapsed), the unit
//! becomes a suffix (`_seconds`, `_bytes`...), counters end in `_total`, attribute keys use `_`.
//!
//! One rule of sonde's own on top: a name that would end in a suffix Prometheus reserves for
//! another type (`_count`, `_sum`, `_bucket` outside histograms, `_total` outside counters) gets
//! `_value` appended (`process.thread.count` → `process_thread_count_value`), so that
//! `promtool check metrics` and the queries written for histograms and counters never mistake a
//! gauge for a part of another family.

use sonde_core::name::{prometheus_name, prometheus_sanitize, prometheus_unit_word};
use sonde_core::{FamilyMeta, Kind, Unit};

/// The Prometheus unit word for a unit, if it has one.
pub fn unit_word(unit: &Unit, kind: Kind) -> Option<String> {
    prometheus_unit_word(unit, kind)
}

/// The Prometheus family name: sanitized, with the unit suffix, without `_total` (the encoders
/// add it to counter samples), and `_value` after a suffix reserved for another type.
///
/// Every encoder (text, OpenMetrics, protobuf, remote write, Pushgateway) names families with
/// this function, and the registry refuses a family whose name it renders like another's with
/// the same function ([`sonde_core::name::prometheus_name`]), so they all agree.
pub fn family_name(meta: &FamilyMeta) -> String {
    prometheus_name(meta.name(), meta.kind(), meta.unit())
}

/// A Prometheus label name for an attribute key (`http.request.method` → `http_request_method`).
pub fn label_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    prometheus_sanitize(key, false, &mut out);
    if out.starts_with("__") {
        out.replace_range(0..2, "key_");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation() {
        let reg = sonde_core::Registry::new();
        let meta = |name: &'static str, kind: Kind, unit: Unit| -> String {
            let f = match kind {
                Kind::Counter => reg
                    .counter(name)
                    .unit(unit)
                    .build()
                    .map(|f| f.meta().clone()),
                Kind::Histogram => reg
                    .histogram(name)
                    .unit(unit)
                    .build()
                    .map(|f| f.meta().clone()),
                _ => reg.gauge(name).unit(unit).build().map(|f| f.meta().clone()),
            };
            family_name(&f.unwrap())
        };
        assert_eq!(
            meta(
                "http.server.request.duration",
                Kind::Histogram,
                Unit::Seconds
            ),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            meta("process.memory.usage", Kind::Gauge, Unit::Bytes),
            "process_memory_usage_bytes"
        );
        assert_eq!(meta("jobs.total", Kind::Counter, Unit::None), "jobs");
        assert_eq!(
            meta("cpu.utilization", Kind::Gauge, Unit::Ratio),
            "cpu_utilization_ratio"
        );
        assert_eq!(meta("requests", Kind::Counter, Unit::Ratio), "requests");
        assert_eq!(
            meta("x-y/z", Kind::Gauge, Unit::Count("{request}".into())),
            "x_y_z"
        );
        assert_eq!(
            meta("uptime_seconds", Kind::Gauge, Unit::Seconds),
            "uptime_seconds"
        );
        assert_eq!(label_name("http.request.method"), "http_request_method");
        assert_eq!(label_name("__x"), "key_x");
    }

    #[test]
    fn suffixes_reserved_for_other_types_get_value() {
        let reg = sonde_core::Registry::new();
        let gauge = |name: &'static str, unit: Unit| {
            family_name(reg.gauge(name).unit(unit).build().unwrap().meta())
        };
        let updown =
            |name: &'static str| family_name(reg.up_down_counter(name).build().unwrap().meta());
        let counter = |name: &'static str| family_name(reg.counter(name).build().unwrap().meta());
        let histogram =
            |name: &'static str| family_name(reg.histogram(name).build().unwrap().meta());
        // The gauges of issue #21, as the host and process collectors and the example name them.
        assert_eq!(
            gauge("process.thread.count", Unit::Count("{thread}".into())),
            "process_thread_count_value"
        );
        assert_eq!(
            gauge("process.open_file_descriptor.count", Unit::None),
            "process_open_file_descriptor_count_value"
        );
        assert_eq!(
            gauge("system.cpu.logical.count", Unit::None),
            "system_cpu_logical_count_value"
        );
        assert_eq!(
            updown("db.client.connection.count"),
            "db_client_connection_count_value"
        );
        assert_eq!(gauge("queue.sum", Unit::None), "queue_sum_value");
        assert_eq!(gauge("le.bucket", Unit::None), "le_bucket_value");
        assert_eq!(gauge("jobs.total", Unit::None), "jobs_total_value");
        // A unit suffix ends the name: nothing reserved, nothing appended.
        assert_eq!(gauge("disk.count", Unit::Bytes), "disk_count_bytes");
        // A unit that is itself "count" renders `_count`, which is reserved.
        assert_eq!(
            gauge("widgets", Unit::Custom("count".into())),
            "widgets_count_value"
        );
        // Only whole suffixes: `_counter`, `_summary`, `account` are left alone.
        assert_eq!(gauge("retries.counter", Unit::None), "retries_counter");
        assert_eq!(gauge("user.account", Unit::None), "user_account");
        // Counters end in `_total` on the wire, histograms own `_count`/`_sum`/`_bucket`.
        assert_eq!(counter("requests.count"), "requests_count");
        assert_eq!(counter("done.total"), "done");
        assert_eq!(histogram("batch.count"), "batch_count");
        assert_eq!(histogram("batch.total"), "batch_total_value");
    }
}
