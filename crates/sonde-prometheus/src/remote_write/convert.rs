//! Snapshots to remote write requests, with the names and labels of the text encoder.

use prost::Message;
use sonde_core::{FamilySnapshot, Kind, Point, Resource, SeriesSnapshot, Snapshot};

use super::pb;
use crate::naming::{family_name, label_name};

/// What a conversion adds to and how it splits the series of a snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Rendered as a `target_info` series when not empty.
    pub resource: Resource,
    /// Added to every series that does not already have the label; sorted, valid names.
    pub external_labels: Vec<(String, String)>,
    /// Series per request, at least 1.
    pub max_series_per_request: usize,
    /// Whether to send `# TYPE`/`# HELP`-like metadata.
    pub metadata: bool,
}

/// The snapshot's time in milliseconds since the epoch.
pub(crate) fn timestamp_ms(snapshot: &Snapshot) -> i64 {
    i64::try_from(snapshot.time_unix_nanos / 1_000_000).unwrap_or(i64::MAX)
}

/// Converts a cumulative snapshot into requests of at most `options.max_series_per_request`
/// series each. Every sample carries `timestamp` (milliseconds since the epoch).
pub(crate) fn write_requests(
    snapshot: &Snapshot,
    timestamp: i64,
    options: &Options,
) -> Vec<pb::WriteRequest> {
    let mut out = Collector {
        timestamp,
        external: &options.external_labels,
        series: Vec::with_capacity(snapshot.series_count() + 1),
        metadata: Vec::new(),
        scratch: Vec::new(),
    };
    if !options.resource.is_empty() {
        let labels: Vec<(String, &str)> = options
            .resource
            .iter()
            .map(|(k, v)| (label_name(k), v))
            .collect();
        let refs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        out.push("target_info", &refs, None, 1.0);
        if options.metadata {
            out.metadata.push(pb::MetricMetadata {
                r#type: pb::MetricType::Gauge as i32,
                metric_family_name: "target_info".to_owned(),
                help: "Target metadata".to_owned(),
                unit: String::new(),
            });
        }
    }
    for family in &snapshot.families {
        if !family.series.is_empty() {
            out.family(family, options.metadata);
        }
    }
    split(out.series, out.metadata, options.max_series_per_request)
}

/// Protobuf-encodes and snappy-compresses (block format) a request, as the protocol sends it.
pub(crate) fn encode(request: &pb::WriteRequest) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(&request.encode_to_vec())
}

/// Decompresses and decodes a request body.
pub(crate) fn decode(body: &[u8]) -> Option<pb::WriteRequest> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).ok()?;
    pb::WriteRequest::decode(&raw[..]).ok()
}

fn split(
    series: Vec<pb::TimeSeries>,
    metadata: Vec<pb::MetricMetadata>,
    max: usize,
) -> Vec<pb::WriteRequest> {
    let max = max.max(1);
    let mut requests: Vec<pb::WriteRequest> = Vec::with_capacity(series.len() / max + 1);
    let mut series = series.into_iter().peekable();
    let mut metadata = metadata.into_iter().peekable();
    while series.peek().is_some() || metadata.peek().is_some() {
        requests.push(pb::WriteRequest {
            timeseries: series.by_ref().take(max).collect(),
            metadata: metadata.by_ref().take(max).collect(),
        });
    }
    requests
}

struct Collector<'a> {
    timestamp: i64,
    external: &'a [(String, String)],
    series: Vec<pb::TimeSeries>,
    metadata: Vec<pb::MetricMetadata>,
    scratch: Vec<u64>,
}

impl Collector<'_> {
    fn family(&mut self, family: &FamilySnapshot, metadata: bool) {
        let meta = &family.meta;
        let name = family_name(meta);
        let label_names: Vec<String> = meta.label_names().map(label_name).collect();
        if metadata {
            let (kind, meta_name) = match meta.kind() {
                Kind::Counter => (pb::MetricType::Counter, format!("{name}_total")),
                Kind::Histogram => (pb::MetricType::Histogram, name.clone()),
                Kind::Gauge | Kind::UpDownCounter => (pb::MetricType::Gauge, name.clone()),
            };
            self.metadata.push(pb::MetricMetadata {
                r#type: kind as i32,
                metric_family_name: meta_name,
                help: if meta.description().is_empty() {
                    meta.name().to_owned()
                } else {
                    meta.description().to_owned()
                },
                unit: crate::naming::unit_word(meta.unit(), meta.kind()).unwrap_or_default(),
            });
        }
        let bucket_name = format!("{name}_bucket");
        let sum_name = format!("{name}_sum");
        let count_name = format!("{name}_count");
        let total_name = format!("{name}_total");
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(label_names.len());
        for series in &family.series {
            labels.clear();
            series_labels(&label_names, series, &mut labels);
            match &series.point {
                Point::Counter(n) => self.push(&total_name, &labels, None, n.as_f64()),
                Point::Gauge(n) | Point::UpDownCounter(n) => {
                    self.push(&name, &labels, None, n.as_f64())
                }
                Point::Histogram(h) => {
                    let mut buckets = std::mem::take(&mut self.scratch);
                    h.cumulative_into(&mut buckets);
                    let bounds = h.layout().explicit_bounds();
                    for (i, count) in buckets.iter().enumerate() {
                        let le = match bounds.get(i) {
                            Some(b) => format!("{b:?}"),
                            None => "+Inf".to_owned(),
                        };
                        self.push(&bucket_name, &labels, Some(("le", &le)), *count as f64);
                    }
                    self.scratch = buckets;
                    self.push(&sum_name, &labels, None, h.sum());
                    self.push(&count_name, &labels, None, h.count() as f64);
                }
            }
        }
    }

    /// Adds one series: `__name__`, then `extra` (so a bucket's `le` wins over a family label of
    /// that name), the series labels, and the external labels the series does not have; sorted
    /// by name, empty values left out (Prometheus treats them as absent).
    fn push(&mut self, name: &str, labels: &[(&str, &str)], extra: Option<(&str, &str)>, v: f64) {
        let mut out: Vec<pb::Label> = Vec::with_capacity(labels.len() + self.external.len() + 2);
        let mut add = |k: &str, v: &str| {
            if !v.is_empty() {
                out.push(pb::Label {
                    name: k.to_owned(),
                    value: v.to_owned(),
                });
            }
        };
        add("__name__", name);
        if let Some((k, v)) = extra {
            add(k, v);
        }
        for (k, v) in labels {
            add(k, v);
        }
        for (k, v) in self.external {
            add(k, v);
        }
        // Stable: of equal names the first pushed stays.
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|later, earlier| later.name == earlier.name);
        self.series.push(pb::TimeSeries {
            labels: out,
            samples: vec![pb::Sample {
                value: v,
                timestamp: self.timestamp,
            }],
        });
    }
}

/// The labels the text encoder writes for a series: `otel_metric_overflow="true"` alone for the
/// overflow series, the family's labels otherwise.
fn series_labels<'a>(
    names: &'a [String],
    series: &'a SeriesSnapshot,
    out: &mut Vec<(&'a str, &'a str)>,
) {
    if series.is_overflow() {
        out.push(("otel_metric_overflow", "true"));
    } else {
        out.extend(names.iter().map(String::as_str).zip(series.label_values()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, encode as encode_text};
    use sonde_core::Registry;
    use std::collections::BTreeSet;

    fn options(max: usize) -> Options {
        Options {
            resource: Resource::empty().with("service.name", "svc"),
            external_labels: Vec::new(),
            max_series_per_request: max,
            metadata: true,
        }
    }

    fn registry() -> Registry {
        let reg = Registry::new();
        let c = sonde_core::testing::family(
            reg.counter("http.server.requests")
                .labels(["http.request.method", "path"])
                .max_series(2),
        );
        c.with(&["GET", "/a"]).add(3);
        c.with(&["POST", "/b"]).add(1);
        c.with(&["PUT", "/c"]).add(7); // overflow
        crate::fixtures::request_durations(&reg, &["route"], &["/r"]);
        crate::fixtures::temperature(&reg, 21.5);
        reg.up_down_counter("queue.depth")
            .labels(["empty"])
            .build()
            .unwrap()
            .with(&[""])
            .add(-4);
        reg
    }

    /// `name{k="v",...} value` with labels sorted and empty values dropped.
    fn text_lines(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                let mut pairs: Vec<(String, String)> = labels
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap();
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .filter(|(_, v)| !v.is_empty())
                    .collect();
                pairs.sort();
                let value: f64 = match value {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().unwrap(),
                };
                render(name, &pairs, value)
            })
            .collect()
    }

    fn render(name: &str, pairs: &[(String, String)], value: f64) -> String {
        let labels: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{name}{{{}}} {value}", labels.join(","))
    }

    fn request_lines(requests: &[pb::WriteRequest]) -> BTreeSet<String> {
        requests
            .iter()
            .flat_map(|r| &r.timeseries)
            .map(|ts| {
                let name = ts.label("__name__").unwrap();
                let pairs: Vec<(String, String)> = ts
                    .label_pairs()
                    .into_iter()
                    .filter(|(k, _)| *k != "__name__")
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                assert_eq!(ts.samples.len(), 1);
                render(name, &pairs, ts.samples[0].value)
            })
            .collect()
    }

    #[test]
    fn mirrors_the_text_encoder() {
        let reg = registry();
        let snapshot = reg.snapshot();
        let mut text = Vec::new();
        let opts = options(2000);
        encode_text(&snapshot, Some(&opts.resource), Format::Text, &mut text);
        let text = String::from_utf8(text).unwrap();
        let requests = write_requests(&snapshot, timestamp_ms(&snapshot), &opts);
        assert_eq!(requests.len(), 1);
        assert_eq!(request_lines(&requests), text_lines(&text), "{text}");
        let lines = request_lines(&requests);
        assert!(
            lines.contains("http_server_requests_total{otel_metric_overflow=true} 7"),
            "{lines:?}"
        );
        assert!(
            lines.contains("http_server_request_duration_seconds_bucket{le=1.0,route=/r} 2"),
            "{lines:?}"
        );
        assert!(lines.contains("queue_depth{} -4"), "{lines:?}");
        // Sorted labels with __name__, one timestamp for all.
        let ts = snapshot.time_unix_nanos as i64 / 1_000_000;
        for s in &requests[0].timeseries {
            assert!(s.labels.windows(2).all(|w| w[0].name < w[1].name), "{s:?}");
            assert_eq!(s.samples[0].timestamp, ts);
        }
        let md = &requests[0].metadata;
        let counter = md
            .iter()
            .find(|m| m.metric_family_name == "http_server_requests_total")
            .unwrap();
        assert_eq!(counter.r#type, pb::MetricType::Counter as i32);
        let hist = md
            .iter()
            .find(|m| m.metric_family_name == "http_server_request_duration_seconds")
            .unwrap();
        assert_eq!(hist.unit, "seconds");
    }

    #[test]
    fn external_labels_do_not_override() {
        let reg = Registry::new();
        reg.gauge("g")
            .labels(["job"])
            .build()
            .unwrap()
            .with(&["mine"])
            .set(1);
        let mut opts = options(10);
        opts.resource = Resource::empty();
        opts.external_labels = vec![
            ("instance".into(), "i1".into()),
            ("job".into(), "ext".into()),
        ];
        let requests = write_requests(&reg.snapshot(), 1, &opts);
        let g = requests[0].series("g").unwrap();
        assert_eq!(
            g.label_pairs(),
            [("__name__", "g"), ("instance", "i1"), ("job", "mine")]
        );
    }

    #[test]
    fn splits_and_round_trips() {
        let reg = Registry::new();
        let f = reg.gauge("g").labels(["i"]).build().unwrap();
        for i in 0..25 {
            f.with(&[i.to_string()]).set(i);
        }
        let snapshot = reg.snapshot();
        let total = snapshot.series_count() + 1; // + target_info
        let requests = write_requests(&snapshot, 1, &options(10));
        assert_eq!(requests.len(), total.div_ceil(10));
        assert!(requests.iter().all(|r| r.timeseries.len() <= 10));
        assert_eq!(
            requests.iter().map(|r| r.timeseries.len()).sum::<usize>(),
            total
        );
        let body = encode(&requests[0]).unwrap();
        assert_eq!(decode(&body).unwrap(), requests[0]);
        assert!(decode(b"not snappy").is_none());
        // Zero is treated as one.
        assert_eq!(write_requests(&snapshot, 1, &options(0)).len(), total);
    }
}
