//! Snapshots to `ExportMetricsServiceRequest`s, split so no request exceeds the configured
//! number of data points or bytes.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use prost::Message;
use sonde_core::{
    FamilySnapshot, HistogramPoint, Kind, Number, NumberKind, Resource, SeriesSnapshot, Snapshot,
};

/// How histograms are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HistogramAggregation {
    /// `Histogram` points with the family's explicit bounds (the default; what Prometheus-style
    /// backends and dashboards expect).
    #[default]
    ExplicitBuckets,
    /// `ExponentialHistogram` points (base-2, scale up to the family's precision): no bounds to
    /// choose, and accurate quantiles on backends that support them.
    Exponential,
}

/// Conversion settings.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub resource: ProtoResource,
    pub scope: InstrumentationScope,
    pub histograms: HistogramAggregation,
    pub max_scale: i32,
    pub max_points: usize,
    pub max_bytes: usize,
}

impl Options {
    pub(crate) fn new(resource: &Resource) -> Options {
        Options {
            resource: proto_resource(resource),
            scope: InstrumentationScope {
                name: "sonde".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            },
            histograms: HistogramAggregation::ExplicitBuckets,
            max_scale: 20,
            max_points: 10_000,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Attributes OpenTelemetry types as integers.
const INT_ATTRIBUTES: &[&str] = &["process.pid", "process.parent_pid", "faas.max_memory"];

pub(crate) fn proto_resource(resource: &Resource) -> ProtoResource {
    ProtoResource {
        attributes: resource
            .iter()
            .map(|(k, v)| match v.parse::<i64>() {
                Ok(i) if INT_ATTRIBUTES.contains(&k) => KeyValue {
                    key: k.to_string(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(i)),
                    }),
                    ..Default::default()
                },
                _ => kv(k, v),
            })
            .collect(),
        ..Default::default()
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    }
}

/// One request, encoded, with the number of data points it carries.
pub(crate) use sonde_push::Encoded;

/// Converts and encodes `snapshot` into as few requests as the limits allow.
pub(crate) fn encode(snapshot: &Snapshot, opts: &Options) -> Vec<Encoded> {
    let mut b = Builder::new(opts);
    for family in &snapshot.families {
        b.family(snapshot, family);
    }
    b.finish();
    b.out
}

/// Converts `snapshot` into requests (for tests and tools; the exporter uses [`encode`]).
pub fn to_requests(
    snapshot: &Snapshot,
    resource: &Resource,
    histograms: HistogramAggregation,
) -> Vec<ExportMetricsServiceRequest> {
    let mut opts = Options::new(resource);
    opts.histograms = histograms;
    encode(snapshot, &opts)
        .into_iter()
        .filter_map(|e| ExportMetricsServiceRequest::decode(&e.body[..]).ok())
        .collect()
}

/// Bytes a metric adds besides its points (name, description, unit, framing).
fn metric_overhead(f: &FamilySnapshot) -> usize {
    f.meta.name().len() + f.meta.description().len() + f.meta.unit().ucum().len() + 24
}

struct Builder<'a> {
    opts: &'a Options,
    metrics: Vec<Metric>,
    points: usize,
    bytes: usize,
    base_bytes: usize,
    out: Vec<Encoded>,
}

impl<'a> Builder<'a> {
    fn new(opts: &'a Options) -> Self {
        let base_bytes = opts.resource.encoded_len() + opts.scope.encoded_len() + 32;
        Builder {
            opts,
            metrics: Vec::new(),
            points: 0,
            bytes: base_bytes,
            base_bytes,
            out: Vec::new(),
        }
    }

    fn finish(&mut self) {
        if self.metrics.is_empty() {
            return;
        }
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.opts.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(self.opts.scope.clone()),
                    metrics: std::mem::take(&mut self.metrics),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        self.out.push(Encoded {
            body: request.encode_to_vec().into(),
            points: self.points as u64,
        });
        self.points = 0;
        self.bytes = self.base_bytes;
    }

    /// Adds the points of one metric, starting a new request whenever a limit would be passed.
    fn push<P: Message>(
        &mut self,
        family: &FamilySnapshot,
        points: impl Iterator<Item = P>,
        wrap: impl Fn(Vec<P>) -> Data,
    ) {
        let overhead = metric_overhead(family);
        let mut chunk: Vec<P> = Vec::new();
        for p in points {
            let len = p.encoded_len() + 4;
            let extra = if chunk.is_empty() { overhead } else { 0 };
            if self.points > 0
                && (self.points >= self.opts.max_points
                    || self.bytes + len + extra > self.opts.max_bytes)
            {
                if !chunk.is_empty() {
                    let data = wrap(std::mem::take(&mut chunk));
                    self.metrics.push(metric(family, data));
                }
                self.finish();
            }
            if chunk.is_empty() {
                self.bytes += overhead;
            }
            self.points += 1;
            self.bytes += len;
            chunk.push(p);
        }
        if !chunk.is_empty() {
            self.metrics.push(metric(family, wrap(chunk)));
        }
    }

    fn family(&mut self, snapshot: &Snapshot, family: &FamilySnapshot) {
        let temporality = if snapshot.is_delta(family) {
            AggregationTemporality::Delta
        } else {
            AggregationTemporality::Cumulative
        } as i32;
        let time = snapshot.time_unix_nanos;
        let float = family.meta.number_kind() == NumberKind::F64;
        match family.meta.kind() {
            Kind::Counter | Kind::UpDownCounter => {
                let is_monotonic = family.meta.kind() == Kind::Counter;
                let points = family
                    .series
                    .iter()
                    .filter_map(|s| number_point(family, s, time, true, float));
                self.push(family, points, |data_points| {
                    Data::Sum(Sum {
                        data_points,
                        aggregation_temporality: temporality,
                        is_monotonic,
                    })
                });
            }
            Kind::Gauge => {
                let points = family
                    .series
                    .iter()
                    .filter_map(|s| number_point(family, s, time, false, float));
                self.push(family, points, |data_points| {
                    Data::Gauge(Gauge { data_points })
                });
            }
            Kind::Histogram => {
                let delta = temporality == AggregationTemporality::Delta as i32;
                match self.opts.histograms {
                    HistogramAggregation::ExplicitBuckets => {
                        let points = family.series.iter().filter_map(|s| {
                            let h = s.point.histogram()?;
                            Some(explicit_point(family, s, h, time, delta))
                        });
                        self.push(family, points, |data_points| {
                            Data::Histogram(Histogram {
                                data_points,
                                aggregation_temporality: temporality,
                            })
                        });
                    }
                    HistogramAggregation::Exponential => {
                        let max_scale = self.opts.max_scale;
                        let points = family.series.iter().filter_map(|s| {
                            let h = s.point.histogram()?;
                            Some(exponential_point(family, s, h, time, delta, max_scale))
                        });
                        self.push(family, points, |data_points| {
                            Data::ExponentialHistogram(ExponentialHistogram {
                                data_points,
                                aggregation_temporality: temporality,
                            })
                        });
                    }
                }
            }
        }
    }
}

fn metric(family: &FamilySnapshot, data: Data) -> Metric {
    Metric {
        name: family.meta.name().to_string(),
        description: family.meta.description().to_string(),
        unit: family.meta.unit().ucum().to_string(),
        data: Some(data),
        ..Default::default()
    }
}

fn attributes(family: &FamilySnapshot, s: &SeriesSnapshot) -> Vec<KeyValue> {
    family
        .labels(s)
        .into_iter()
        .map(|(k, v)| kv(k, v))
        .collect()
}

fn number_point(
    family: &FamilySnapshot,
    s: &SeriesSnapshot,
    time: u64,
    with_start: bool,
    float: bool,
) -> Option<NumberDataPoint> {
    let n = s.point.number()?;
    Some(NumberDataPoint {
        attributes: attributes(family, s),
        start_time_unix_nano: if with_start { s.start_unix_nanos } else { 0 },
        time_unix_nano: time,
        value: Some(number_value(n, float)),
        ..Default::default()
    })
}

fn number_value(n: Number, float: bool) -> number_data_point::Value {
    use number_data_point::Value;
    match n {
        _ if float => Value::AsDouble(n.as_f64()),
        Number::U64(v) => match i64::try_from(v) {
            Ok(i) => Value::AsInt(i),
            Err(_) => Value::AsDouble(v as f64),
        },
        Number::I64(v) => Value::AsInt(v),
        Number::F64(v) => Value::AsDouble(v),
    }
}

/// The bucket exemplars, for deltas only those observed within the interval.
fn exemplars(h: &HistogramPoint, start: u64, delta: bool) -> Vec<Exemplar> {
    h.exemplars()
        .iter()
        .flatten()
        .filter(|e| !delta || e.unix_nanos >= start)
        .map(|e| Exemplar {
            time_unix_nano: e.unix_nanos,
            span_id: e.span_id.to_vec(),
            trace_id: e.trace_id.to_vec(),
            value: Some(exemplar::Value::AsDouble(e.value)),
            ..Default::default()
        })
        .collect()
}

fn explicit_point(
    family: &FamilySnapshot,
    s: &SeriesSnapshot,
    h: &HistogramPoint,
    time: u64,
    delta: bool,
) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes: attributes(family, s),
        start_time_unix_nano: s.start_unix_nanos,
        time_unix_nano: time,
        count: h.count(),
        sum: Some(h.sum()),
        bucket_counts: h.bucket_counts(),
        explicit_bounds: h.layout().explicit_bounds().to_vec(),
        exemplars: exemplars(h, s.start_unix_nanos, delta),
        flags: 0,
        min: h.min(),
        max: h.max(),
    }
}

fn exponential_point(
    family: &FamilySnapshot,
    s: &SeriesSnapshot,
    h: &HistogramPoint,
    time: u64,
    delta: bool,
    max_scale: i32,
) -> ExponentialHistogramDataPoint {
    let b = h.exponential(max_scale.min(h.layout().max_scale()));
    ExponentialHistogramDataPoint {
        attributes: attributes(family, s),
        start_time_unix_nano: s.start_unix_nanos,
        time_unix_nano: time,
        count: h.count(),
        sum: Some(h.sum()),
        scale: b.scale,
        zero_count: b.zero_count,
        positive: Some(Buckets {
            offset: b.offset,
            bucket_counts: b.counts,
        }),
        negative: None,
        flags: 0,
        exemplars: exemplars(h, s.start_unix_nanos, delta),
        min: h.min(),
        max: h.max(),
        zero_threshold: b.zero_threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_core::{Registry, Temporality};

    fn points_of(r: &ExportMetricsServiceRequest) -> usize {
        r.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .map(|m| match &m.data {
                Some(Data::Sum(s)) => s.data_points.len(),
                Some(Data::Gauge(g)) => g.data_points.len(),
                Some(Data::Histogram(h)) => h.data_points.len(),
                Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn requests_are_split_by_points_and_bytes_and_lose_nothing() {
        let reg = Registry::new();
        let c = reg.counter("c").labels(["i"]).build().unwrap();
        let h = reg.histogram("h").labels(["i"]).build().unwrap();
        for i in 0..250 {
            c.with(&[&i.to_string()]).inc();
            h.with(&[&i.to_string()]).observe(0.01 * f64::from(i));
        }
        let snap = reg.reader(Temporality::Cumulative).collect();
        let mut opts = Options::new(&Resource::empty().with("service.name", "t"));
        opts.max_points = 100;
        let out = encode(&snap, &opts);
        // The registry's own self-metrics come along.
        let total = snap.series_count() as u64;
        assert!(total >= 500);
        assert_eq!(out.len() as u64, total.div_ceil(100));
        assert_eq!(out.iter().map(|e| e.points).sum::<u64>(), total);
        for e in &out {
            let r = ExportMetricsServiceRequest::decode(&e.body[..]).unwrap();
            assert_eq!(points_of(&r) as u64, e.points);
            assert!(r.resource_metrics[0].resource.is_some());
        }
        opts.max_points = usize::MAX;
        opts.max_bytes = 16 * 1024;
        let out = encode(&snap, &opts);
        assert!(out.len() > 2);
        assert_eq!(out.iter().map(|e| e.points).sum::<u64>(), total);
        for e in &out {
            assert!(e.body.len() <= 16 * 1024, "{}", e.body.len());
        }
    }

    #[test]
    fn integer_resource_attributes_are_typed() {
        let r = proto_resource(&Resource::empty().with("process.pid", "42").with("x", "7"));
        let v = |k: &str| {
            r.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(v("process.pid"), Some(any_value::Value::IntValue(42)));
        assert_eq!(v("x"), Some(any_value::Value::StringValue("7".into())));
    }
}
