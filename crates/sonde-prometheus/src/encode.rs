//! Prometheus text 0.0.4 and OpenMetrics 1.0 encoders.

use std::io::Write;

use sonde_core::{FamilySnapshot, Kind, Number, Point, Resource, SeriesSnapshot, Snapshot};

use crate::naming::{family_name, label_name};

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text (`_created`, `# UNIT`, `# EOF`).
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Picks the format a scraper asked for in its `Accept` header: OpenMetrics when it lists
    /// `application/openmetrics-text` (as Prometheus does), text 0.0.4 otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }
}

/// Encodes a cumulative snapshot, plus `target_info` for the resource, appending to `out`.
///
/// Families are written in name order and series in creation order, so output is deterministic
/// for a deterministic program. Families without series are left out.
pub fn encode(snapshot: &Snapshot, resource: Option<&Resource>, format: Format, out: &mut Vec<u8>) {
    let mut scratch = Scratch::default();
    if let Some(r) = resource.filter(|r| !r.is_empty()) {
        write_target_info(r, format, out);
    }
    for family in &snapshot.families {
        if !family.series.is_empty() {
            write_family(family, format, out, &mut scratch);
        }
    }
    if format == Format::OpenMetrics {
        out.extend_from_slice(b"# EOF\n");
    }
}

#[derive(Default)]
struct Scratch {
    buckets: Vec<u64>,
    labels: Vec<String>,
}

fn write_target_info(r: &Resource, format: Format, out: &mut Vec<u8>) {
    match format {
        Format::Text => out.extend_from_slice(
            b"# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info",
        ),
        Format::OpenMetrics => {
            out.extend_from_slice(b"# TYPE target info\n# HELP target Target metadata\ntarget_info")
        }
    }
    out.push(b'{');
    for (i, (k, v)) in r.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(label_name(k).as_bytes());
        out.extend_from_slice(b"=\"");
        escape_label_value(v, out);
        out.push(b'"');
    }
    out.extend_from_slice(b"} 1\n");
}

fn write_family(family: &FamilySnapshot, format: Format, out: &mut Vec<u8>, scratch: &mut Scratch) {
    let meta = &family.meta;
    let name = family_name(meta);
    let (type_word, sample_suffix) = match meta.kind() {
        Kind::Counter => ("counter", "_total"),
        Kind::Histogram => ("histogram", ""),
        Kind::Gauge | Kind::UpDownCounter => ("gauge", ""),
    };
    // Text 0.0.4 names a counter family with its `_total`; OpenMetrics without.
    let meta_name = match format {
        Format::Text => format!("{name}{sample_suffix}"),
        Format::OpenMetrics => name.clone(),
    };
    if format == Format::OpenMetrics {
        let _ = writeln!(out, "# TYPE {meta_name} {type_word}");
        if let Some(word) = crate::naming::unit_word(meta.unit(), meta.kind())
            && name.ends_with(&format!("_{word}"))
        {
            let _ = writeln!(out, "# UNIT {meta_name} {word}");
        }
    }
    // Always a HELP line (linters ask for one); without a description, the OpenTelemetry name
    // tells the reader where the series comes from.
    let _ = write!(out, "# HELP {meta_name} ");
    escape_help(
        if meta.description().is_empty() {
            meta.name()
        } else {
            meta.description()
        },
        out,
    );
    out.push(b'\n');
    if format == Format::Text {
        let _ = writeln!(out, "# TYPE {meta_name} {type_word}");
    }
    scratch.labels.clear();
    scratch.labels.extend(meta.label_names().map(label_name));
    for series in &family.series {
        match &series.point {
            Point::Counter(n) => {
                write_sample(out, &name, "_total", &scratch.labels, series, None, |o| {
                    write_number(o, *n)
                });
                if format == Format::OpenMetrics {
                    write_created(out, &name, &scratch.labels, series);
                }
            }
            Point::Gauge(n) | Point::UpDownCounter(n) => {
                write_sample(out, &name, "", &scratch.labels, series, None, |o| {
                    write_number(o, *n)
                });
            }
            Point::Histogram(h) => {
                h.cumulative_into(&mut scratch.buckets);
                let bounds = h.layout().explicit_bounds();
                let mut le = String::new();
                for (i, count) in scratch.buckets.iter().enumerate() {
                    le.clear();
                    match bounds.get(i) {
                        Some(b) => float_label(*b, &mut le),
                        None => le.push_str("+Inf"),
                    }
                    write_sample(
                        out,
                        &name,
                        "_bucket",
                        &scratch.labels,
                        series,
                        Some(("le", &le)),
                        |o| write_u64(o, *count),
                    );
                }
                write_sample(out, &name, "_sum", &scratch.labels, series, None, |o| {
                    write_f64(o, h.sum())
                });
                write_sample(out, &name, "_count", &scratch.labels, series, None, |o| {
                    write_u64(o, h.count())
                });
                if format == Format::OpenMetrics {
                    write_created(out, &name, &scratch.labels, series);
                }
            }
        }
    }
}

fn write_created(out: &mut Vec<u8>, name: &str, labels: &[String], series: &SeriesSnapshot) {
    let secs = series.start_unix_nanos as f64 / 1e9;
    write_sample(out, name, "_created", labels, series, None, |o| {
        write_f64(o, secs)
    });
}

fn write_sample(
    out: &mut Vec<u8>,
    name: &str,
    suffix: &str,
    label_names: &[String],
    series: &SeriesSnapshot,
    extra: Option<(&str, &str)>,
    value: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    let mut first = true;
    let mut pair = |out: &mut Vec<u8>, k: &str, v: &str| {
        out.push(if first { b'{' } else { b',' });
        first = false;
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_label_value(v, out);
        out.push(b'"');
    };
    if series.is_overflow() {
        pair(out, "otel_metric_overflow", "true");
    } else {
        for (k, v) in label_names.iter().zip(series.label_values()) {
            pair(out, k, v);
        }
    }
    if let Some((k, v)) = extra {
        pair(out, k, v);
    }
    if !first {
        out.push(b'}');
    }
    out.push(b' ');
    value(out);
    out.push(b'\n');
}

fn escape_label_value(v: &str, out: &mut Vec<u8>) {
    for b in v.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b => out.push(b),
        }
    }
}

fn escape_help(v: &str, out: &mut Vec<u8>) {
    for b in v.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b => out.push(b),
        }
    }
}

fn write_number(out: &mut Vec<u8>, n: Number) {
    match n {
        Number::U64(v) => write_u64(out, v),
        Number::I64(v) => {
            let _ = write!(out, "{v}");
        }
        Number::F64(v) => write_f64(out, v),
    }
}

fn write_u64(out: &mut Vec<u8>, v: u64) {
    let _ = write!(out, "{v}");
}

/// Floats as Prometheus parses them: `NaN`, `+Inf`, `-Inf`, integers without a fraction, the
/// shortest round-trip form otherwise.
fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v:?}");
    }
}

/// `le` values in OpenMetrics' canonical form (`1.0`, `0.25`, `1e-05` style exponents are fine).
fn float_label(v: f64, out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(out, "{v:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_core::{Registry, Unit};

    fn render(format: Format) -> String {
        let reg = Registry::new();
        let c = reg
            .counter("http.server.requests")
            .description("Requests.\nSecond \\ line.")
            .labels(["http.request.method", "path"])
            .build()
            .unwrap();
        c.with(&["GET", "a\"b\\c\nd"]).add(3);
        let h = reg
            .histogram("http.server.request.duration")
            .unit(Unit::Seconds)
            .buckets(vec![0.1, 1.0])
            .build()
            .unwrap()
            .handle();
        h.observe(0.05);
        h.observe(0.5);
        h.observe(2.0);
        reg.gauge_f64("temp")
            .unit(Unit::Custom("Cel".into()))
            .build()
            .unwrap()
            .handle()
            .set(f64::NAN);
        let mut out = Vec::new();
        let resource = Resource::empty().with("service.name", "svc");
        encode(&reg.snapshot(), Some(&resource), format, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_format() {
        let t = render(Format::Text);
        assert!(
            t.contains("# HELP http_server_requests_total Requests.\\nSecond \\\\ line.\n"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE http_server_requests_total counter\n"),
            "{t}"
        );
        assert!(t.contains("http_server_requests_total{http_request_method=\"GET\",path=\"a\\\"b\\\\c\\nd\"} 3\n"), "{t}");
        assert!(
            t.contains("http_server_request_duration_seconds_bucket{le=\"0.1\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("http_server_request_duration_seconds_bucket{le=\"1.0\"} 2\n"),
            "{t}"
        );
        assert!(
            t.contains("http_server_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{t}"
        );
        assert!(
            t.contains("http_server_request_duration_seconds_sum 2.55\n"),
            "{t}"
        );
        assert!(
            t.contains("http_server_request_duration_seconds_count 3\n"),
            "{t}"
        );
        assert!(t.contains("temp_celsius NaN\n"), "{t}");
        assert!(t.starts_with("# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info{service_name=\"svc\"} 1\n"), "{t}");
        assert!(!t.contains("# EOF"));
    }

    #[test]
    fn openmetrics_format() {
        let t = render(Format::OpenMetrics);
        assert!(t.contains("# TYPE http_server_requests counter\n"), "{t}");
        assert!(t.contains("http_server_requests_total{"), "{t}");
        assert!(t.contains("http_server_requests_created{"), "{t}");
        assert!(t.contains("# TYPE http_server_request_duration_seconds histogram\n# UNIT http_server_request_duration_seconds seconds\n"), "{t}");
        assert!(t.contains("# TYPE target info\n"), "{t}");
        assert!(t.ends_with("# EOF\n"), "{t}");
    }

    #[test]
    fn negotiation() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
    }
}
