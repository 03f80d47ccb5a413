//! The protobuf exposition (`io.prometheus.client.MetricFamily`, length-delimited), the only
//! format that carries native histograms. Messages are generated from `proto/metrics.proto`, field
//! numbers as in Prometheus's `metrics.proto`.

use prost::Message;
use sonde_core::{FamilySnapshot, Kind, Number, Point, Resource, SeriesSnapshot, Snapshot};

use crate::encode::Names;
use crate::naming::{family_name, label_name};

/// The `Content-Type` of the delimited protobuf exposition.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Native histograms are rendered at this schema (the finest the default grid nests into).
pub const NATIVE_SCHEMA: i32 = 3;

#[allow(missing_docs, clippy::doc_markdown)]
pub mod pb {
    //! `metrics.proto` messages, generated from `proto/metrics.proto` by the build script.

    pub use prost_types::Timestamp;

    include!(concat!(env!("OUT_DIR"), "/io.prometheus.client.rs"));
}

/// Encodes a cumulative snapshot as length-delimited `MetricFamily` messages, appending to `out`.
/// Histograms carry both their classic buckets and a native (exponential, schema 3) form.
/// A family whose Prometheus name an earlier one has is left out (and counted and logged), so
/// the exposition stays valid.
pub fn encode_protobuf(snapshot: &Snapshot, resource: Option<&Resource>, out: &mut Vec<u8>) {
    let names = Names::new(
        resource.is_some_and(|r| !r.is_empty()),
        crate::Format::Protobuf,
        None,
    );
    encode_protobuf_with(snapshot, resource, out, names);
}

pub(crate) fn encode_protobuf_with(
    snapshot: &Snapshot,
    resource: Option<&Resource>,
    out: &mut Vec<u8>,
    mut names: Names,
) {
    let mut info = resource
        .filter(|r| !r.is_empty())
        .map(|r| pb::MetricFamily {
            name: Some("target_info".into()),
            help: Some("Target metadata".into()),
            r#type: Some(pb::MetricType::Gauge as i32),
            metric: vec![pb::Metric {
                label: r.iter().map(|(k, v)| pair(&label_name(k), v)).collect(),
                gauge: Some(pb::Gauge { value: Some(1.0) }),
                ..Default::default()
            }],
            unit: None,
        });
    // A `target_info` gauge (received or scraped from other services) joins the resource's
    // family: one family per name, or the scrape fails.
    if let Some(info) = &mut info {
        for family in &snapshot.families {
            if crate::encode::is_target_info(&family_name(&family.meta), &family.meta) {
                info.metric.extend(to_family(family).metric);
            }
        }
        let _ = info.encode_length_delimited(out);
    }
    for family in snapshot.families.iter().filter(|f| !f.series.is_empty()) {
        let name = family_name(&family.meta);
        if info.is_some() && crate::encode::is_target_info(&name, &family.meta) {
            continue;
        }
        if names.admit(&name, &family.meta) {
            let _ = to_family(family).encode_length_delimited(out);
        }
    }
}

fn pair(name: &str, value: &str) -> pb::LabelPair {
    pb::LabelPair {
        name: Some(name.to_owned()),
        value: Some(value.to_owned()),
    }
}

fn timestamp(unix_nanos: u64) -> pb::Timestamp {
    pb::Timestamp {
        seconds: (unix_nanos / 1_000_000_000) as i64,
        nanos: (unix_nanos % 1_000_000_000) as i32,
    }
}

fn to_family(family: &FamilySnapshot) -> pb::MetricFamily {
    let meta = &family.meta;
    let base = family_name(meta);
    let (name, kind) = match meta.kind() {
        Kind::Counter => (format!("{base}_total"), pb::MetricType::Counter),
        Kind::Histogram => (base, pb::MetricType::Histogram),
        Kind::Gauge | Kind::UpDownCounter => (base, pb::MetricType::Gauge),
    };
    let label_names: Vec<String> = meta.label_names().map(label_name).collect();
    let metric = family
        .series
        .iter()
        .map(|s| to_metric(s, &label_names))
        .collect();
    let help = if meta.description().is_empty() {
        meta.name()
    } else {
        meta.description()
    };
    pb::MetricFamily {
        name: Some(name),
        help: Some(help.to_owned()),
        r#type: Some(kind as i32),
        metric,
        unit: None,
    }
}

fn exemplar(e: &sonde_core::Exemplar) -> pb::Exemplar {
    pb::Exemplar {
        label: vec![
            pair("trace_id", &e.trace_id_hex()),
            pair("span_id", &e.span_id_hex()),
        ],
        value: Some(e.value),
        timestamp: Some(timestamp(e.unix_nanos)),
    }
}

fn number(n: Number) -> f64 {
    n.as_f64()
}

fn to_metric(series: &SeriesSnapshot, label_names: &[String]) -> pb::Metric {
    let label = if series.is_overflow() {
        vec![pair("otel_metric_overflow", "true")]
    } else {
        label_names
            .iter()
            .zip(series.label_values())
            .map(|(k, v)| pair(k, v))
            .collect()
    };
    let mut m = pb::Metric {
        label,
        ..Default::default()
    };
    match &series.point {
        Point::Counter(n) => {
            m.counter = Some(pb::Counter {
                value: Some(number(*n)),
                exemplar: None,
                created_timestamp: Some(timestamp(series.start_unix_nanos)),
            })
        }
        Point::Gauge(n) | Point::UpDownCounter(n) => {
            m.gauge = Some(pb::Gauge {
                value: Some(number(*n)),
            })
        }
        Point::Histogram(h) => {
            let mut cumulative = Vec::new();
            h.cumulative_into(&mut cumulative);
            let bucket = h
                .layout()
                .explicit_bounds()
                .iter()
                .zip(&cumulative)
                .enumerate()
                .map(|(i, (b, c))| pb::Bucket {
                    cumulative_count: Some(*c),
                    upper_bound: Some(*b),
                    exemplar: h
                        .exemplars()
                        .get(i)
                        .copied()
                        .flatten()
                        .map(|e| exemplar(&e)),
                    cumulative_count_float: None,
                })
                .collect();
            let e = h.exponential(NATIVE_SCHEMA);
            // OpenTelemetry's bucket i is (base^i, base^(i+1)]; Prometheus's is (base^(i-1), base^i].
            let (positive_span, positive_delta) = spans_and_deltas(e.offset + 1, &e.counts);
            m.histogram = Some(pb::Histogram {
                sample_count: Some(h.count()),
                sample_sum: Some(h.sum()),
                bucket,
                schema: Some(e.scale),
                zero_threshold: Some(e.zero_threshold),
                zero_count: Some(e.zero_count),
                negative_span: Vec::new(),
                negative_delta: Vec::new(),
                positive_span,
                positive_delta,
                created_timestamp: Some(timestamp(series.start_unix_nanos)),
                ..Default::default()
            });
        }
    }
    m
}

/// Spans of non-empty buckets (gaps of more than two empty buckets start a new span, shorter gaps
/// are cheaper as zeros) and the counts delta-encoded across spans.
fn spans_and_deltas(first_index: i32, counts: &[u64]) -> (Vec<pb::BucketSpan>, Vec<i64>) {
    let mut spans: Vec<pb::BucketSpan> = Vec::new();
    let mut deltas = Vec::new();
    let mut prev_count = 0i64;
    let mut prev_end: Option<i32> = None; // index after the last bucket of the current span
    let mut i = 0usize;
    while i < counts.len() {
        if counts[i] == 0 {
            i += 1;
            continue;
        }
        let index = first_index + i as i32;
        match prev_end {
            Some(end) if index - end <= 2 => {
                // Extend the current span across the short gap with explicit zeros.
                let span = spans.last_mut().map(|s| s.length.get_or_insert(0));
                if let Some(len) = span {
                    for _ in end..index {
                        deltas.push(-prev_count);
                        prev_count = 0;
                        *len += 1;
                    }
                    *len += 1;
                }
            }
            _ => {
                let offset = match prev_end {
                    None => index,
                    Some(end) => index - end,
                };
                spans.push(pb::BucketSpan {
                    offset: Some(offset),
                    length: Some(1),
                });
            }
        }
        let c = counts[i] as i64;
        deltas.push(c - prev_count);
        prev_count = c;
        prev_end = Some(index + 1);
        i += 1;
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `proto/descriptors.bin`, which the build script generates the messages from, is the
    /// `.proto` files compiled: with `SONDE_WRITE_DESCRIPTORS=1` this test writes it again.
    #[test]
    fn the_descriptor_set_is_the_proto_files_compiled() {
        let fresh = protox::compile(["proto/metrics.proto", "proto/remote.proto"], ["proto"])
            .unwrap()
            .encode_to_vec();
        let path = "proto/descriptors.bin";
        if std::env::var_os("SONDE_WRITE_DESCRIPTORS").is_some() {
            std::fs::write(path, &fresh).unwrap();
        }
        let committed = std::fs::read(path).unwrap();
        assert!(
            committed == fresh,
            "{path} is not what the .proto files compile to: run `SONDE_WRITE_DESCRIPTORS=1 cargo \
             test -p sonde-prometheus --lib the_descriptor_set` and commit it"
        );
    }

    #[test]
    fn native_counts_are_packed_as_before_the_messages_were_generated() {
        let h = pb::Histogram {
            positive_delta: vec![1, -1],
            positive_count: vec![2.0],
            ..Default::default()
        };
        // Field 13 (zigzag 1 and -1: 2 and 1) and field 14 (one double), each as one
        // length-delimited run (wire type 2), not one tag per element.
        let mut want = vec![13 << 3 | 2, 2, 2, 1, 14 << 3 | 2, 8];
        want.extend(2.0f64.to_le_bytes());
        assert_eq!(h.encode_to_vec(), want);
    }

    fn expand(spans: &[pb::BucketSpan], deltas: &[i64]) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        let mut index = 0;
        let mut count = 0;
        let mut d = deltas.iter();
        for (n, s) in spans.iter().enumerate() {
            // The first offset is absolute; later ones count from the end of the previous span.
            index += s.offset.unwrap_or(0);
            let _ = n;
            for _ in 0..s.length.unwrap_or(0) {
                count += d.next().unwrap();
                out.push((index, count));
                index += 1;
            }
        }
        out.into_iter().filter(|(_, c)| *c != 0).collect()
    }

    #[test]
    fn spans_round_trip() {
        let counts = [3, 0, 5, 0, 0, 0, 0, 2, 1, 0, 0, 7];
        let (spans, deltas) = spans_and_deltas(-10, &counts);
        let expect: Vec<(i32, i64)> = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != 0)
            .map(|(i, c)| (-10 + i as i32, *c as i64))
            .collect();
        assert_eq!(expand(&spans, &deltas), expect);
        assert_eq!(spans.len(), 2, "{spans:?}");
        let (spans, deltas) = spans_and_deltas(0, &[]);
        assert!(spans.is_empty() && deltas.is_empty());
    }

    #[test]
    fn native_histogram_matches_the_values() {
        let reg = sonde_core::Registry::new();
        let h = sonde_core::testing::seconds_histogram(&reg, "h", &[]).handle();
        for v in [0.0, 0.001, 0.0011, 0.5, 1.0, 3.0] {
            h.observe(v);
        }
        let mut out = Vec::new();
        encode_protobuf(&reg.snapshot(), None, &mut out);
        let f = crate::fixtures::decode_families(&out)
            .into_iter()
            .rfind(|f| f.name.as_deref() == Some("h_seconds"))
            .unwrap();
        let hist = f.metric[0].histogram.clone().unwrap();
        assert_eq!(hist.sample_count, Some(6));
        assert_eq!(hist.zero_count, Some(1));
        assert_eq!(hist.schema, Some(3));
        let base = 2f64.powf(1.0 / 8.0);
        let buckets = expand(&hist.positive_span, &hist.positive_delta);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<i64>(), 5);
        for v in [0.001f64, 0.0011, 0.5, 1.0, 3.0] {
            // Prometheus: bucket i holds (base^(i-1), base^i].
            let i = (v.log(base) - 1e-9).ceil() as i32;
            assert!(
                buckets.iter().any(|(idx, _)| *idx == i),
                "{v} should be in bucket {i}: {buckets:?}"
            );
        }
    }
}
