//! OpenTelemetry names to Prometheus names, by the rules of the OpenTelemetry specification's
//! Prometheus compatibility section: invalid characters become `_` (runs collapsed), the unit
//! becomes a suffix (`_seconds`, `_bytes`...), counters end in `_total`, attribute keys use `_`.

use sonde_core::{FamilyMeta, Kind, Unit};

/// Replaces every character outside `[a-zA-Z0-9_:]` (or `[a-zA-Z0-9_]` for labels) with `_`,
/// collapsing runs, and prefixes a leading digit.
fn sanitize(s: &str, allow_colon: bool, out: &mut String) {
    let start = out.len();
    for ch in s.chars() {
        let ok = ch.is_ascii_alphanumeric() || ch == '_' || (allow_colon && ch == ':');
        if ok {
            out.push(ch);
        } else if !out[start..].ends_with('_') {
            out.push('_');
        }
    }
    if out[start..].starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(start, '_');
    }
}

/// The Prometheus unit word for a unit, if it has one.
pub fn unit_word(unit: &Unit, kind: Kind) -> Option<String> {
    let word = match unit {
        Unit::None | Unit::Count(_) => return None,
        Unit::Seconds => "seconds",
        Unit::Milliseconds => "milliseconds",
        Unit::Bytes => "bytes",
        Unit::Percent => "percent",
        // "1" is a ratio for gauges; on counters it only says "a count".
        Unit::Ratio => {
            return (kind != Kind::Counter).then(|| "ratio".to_owned());
        }
        Unit::Custom(s) => match s.as_ref() {
            "d" => "days",
            "h" => "hours",
            "min" => "minutes",
            "us" => "microseconds",
            "ns" => "nanoseconds",
            "KiBy" => "kibibytes",
            "MiBy" => "mebibytes",
            "GiBy" => "gibibytes",
            "KBy" => "kilobytes",
            "MBy" => "megabytes",
            "GBy" => "gigabytes",
            "By/s" => "bytes_per_second",
            "m" => "meters",
            "V" => "volts",
            "A" => "amperes",
            "J" => "joules",
            "W" => "watts",
            "g" => "grams",
            "Cel" => "celsius",
            "Hz" => "hertz",
            other if other.starts_with('{') => return None,
            other => {
                let mut w = String::new();
                sanitize(other, false, &mut w);
                let w = w.trim_matches('_').to_ascii_lowercase();
                return (!w.is_empty()).then_some(w);
            }
        },
        _ => return None,
    };
    Some(word.to_owned())
}

/// The Prometheus family name: sanitized, with the unit suffix, without `_total` (the encoders
/// add it to counter samples).
pub fn family_name(meta: &FamilyMeta) -> String {
    let mut name = String::with_capacity(meta.name().len() + 12);
    sanitize(meta.name(), true, &mut name);
    if meta.kind() == Kind::Counter {
        while let Some(stripped) = name.strip_suffix("_total") {
            name.truncate(stripped.len());
        }
    }
    if let Some(word) = unit_word(meta.unit(), meta.kind()) {
        let suffix = format!("_{word}");
        if !name.ends_with(&suffix) {
            name.push_str(&suffix);
        }
    }
    name
}

/// A Prometheus label name for an attribute key (`http.request.method` → `http_request_method`).
pub fn label_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    sanitize(key, false, &mut out);
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
}
