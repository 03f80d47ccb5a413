//! Snapshots to `ExportMetricsServiceRequest`s, split so no request exceeds the configured
//! number of data points or bytes.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogramDataPoint, exemplar,
    exponential_histogram_data_point::Buckets, number_data_point,
};
// The message types `encode` used to build, kept as the tests' reference.
#[cfg(test)]
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric::Data,
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

/// Converts `snapshot` into requests (for tests and tools; the exporter uses `encode`).
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

/// The protobuf wire format, written straight from the snapshot: no message tree, no owned
/// copies of names and label values (what building `opentelemetry-proto` messages cost: an
/// allocation per attribute string and per point, and a walk of the tree for lengths at each
/// level). The output decodes to the same `ExportMetricsServiceRequest` the message types
/// would have encoded (tested against them below).
mod wire {
    pub(super) const VARINT: u8 = 0;
    pub(super) const I64: u8 = 1;
    pub(super) const LEN: u8 = 2;

    pub(super) fn varint(buf: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    }

    pub(super) fn varint_len(v: u64) -> usize {
        (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
    }

    pub(super) fn tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
        varint(buf, (u64::from(field) << 3) | u64::from(wire));
    }

    /// A length-delimited field (a string, bytes, or an encoded message).
    pub(super) fn bytes(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
        tag(buf, field, LEN);
        varint(buf, data.len() as u64);
        buf.extend_from_slice(data);
    }

    /// A string field, left out when empty (as proto3 does).
    pub(super) fn string(buf: &mut Vec<u8>, field: u32, s: &str) {
        if !s.is_empty() {
            bytes(buf, field, s.as_bytes());
        }
    }

    /// What [`string`] writes (fields below 16: a one-byte tag).
    pub(super) fn string_len(s: &str) -> usize {
        if s.is_empty() {
            0
        } else {
            1 + varint_len(s.len() as u64) + s.len()
        }
    }

    pub(super) fn fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
        tag(buf, field, I64);
        buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(super) fn double(buf: &mut Vec<u8>, field: u32, v: f64) {
        fixed64(buf, field, v.to_bits());
    }

    /// An `attributes` entry: `KeyValue { key, value: AnyValue { string_value } }`.
    pub(super) fn string_attribute(buf: &mut Vec<u8>, field: u32, key: &str, value: &str) {
        // AnyValue.string_value is a oneof member: written even when empty.
        let any = 1 + varint_len(value.len() as u64) + value.len();
        let kv = string_len(key) + 1 + varint_len(any as u64) + any;
        tag(buf, field, LEN);
        varint(buf, kv as u64);
        string(buf, 1, key);
        tag(buf, 2, LEN);
        varint(buf, any as u64);
        bytes(buf, 1, value.as_bytes());
    }
}

/// The data field of a `Metric`, by kind.
#[derive(Clone, Copy)]
enum DataKind {
    Gauge,
    Sum { temporality: i32, monotonic: bool },
    Histogram { temporality: i32 },
    Exponential { temporality: i32 },
}

impl DataKind {
    /// The `Metric` field, and the fields the data message has besides its points.
    fn fields(self) -> (u32, i32, bool) {
        match self {
            DataKind::Gauge => (5, 0, false),
            DataKind::Sum {
                temporality,
                monotonic,
            } => (7, temporality, monotonic),
            DataKind::Histogram { temporality } => (9, temporality, false),
            DataKind::Exponential { temporality } => (10, temporality, false),
        }
    }

    /// The bytes of the data message around `points` bytes of points.
    fn inner_len(self, points: usize) -> usize {
        let (_, temporality, monotonic) = self.fields();
        points
            + if temporality != 0 {
                1 + wire::varint_len(temporality as u64)
            } else {
                0
            }
            + if monotonic { 2 } else { 0 }
    }

    /// What [`write`](Self::write) writes for `points` bytes of points.
    fn len(self, points: usize) -> usize {
        let inner = self.inner_len(points);
        1 + wire::varint_len(inner as u64) + inner
    }

    /// The `Metric` field holding the data message with `points`.
    fn write(self, out: &mut Vec<u8>, points: &[u8]) {
        let (field, temporality, monotonic) = self.fields();
        let temporality = temporality as u64;
        wire::tag(out, field, wire::LEN);
        wire::varint(out, self.inner_len(points.len()) as u64);
        out.extend_from_slice(points);
        if temporality != 0 {
            wire::tag(out, 2, wire::VARINT);
            wire::varint(out, temporality);
        }
        if monotonic {
            wire::tag(out, 3, wire::VARINT);
            out.push(1);
        }
    }
}

struct Builder<'a> {
    opts: &'a Options,
    /// `Resource` and `InstrumentationScope`, encoded once.
    resource: Vec<u8>,
    scope: Vec<u8>,
    /// The encoded `Metric`s of the request being built (each with its tag and length).
    metrics: Vec<u8>,
    /// The encoded points of the metric being built.
    chunk: Vec<u8>,
    chunk_points: usize,
    points: usize,
    bytes: usize,
    base_bytes: usize,
    out: Vec<Encoded>,
}

impl<'a> Builder<'a> {
    fn new(opts: &'a Options) -> Self {
        let (resource, scope) = (opts.resource.encode_to_vec(), opts.scope.encode_to_vec());
        let base_bytes = resource.len() + scope.len() + 32;
        Builder {
            opts,
            resource,
            scope,
            metrics: Vec::new(),
            chunk: Vec::new(),
            chunk_points: 0,
            points: 0,
            bytes: base_bytes,
            base_bytes,
            out: Vec::new(),
        }
    }

    /// Ends the request being built: `ExportMetricsServiceRequest { resource_metrics: [{
    /// resource, scope_metrics: [{ scope, metrics }] }] }`.
    fn finish(&mut self) {
        if self.metrics.is_empty() {
            return;
        }
        let field = |len: usize| 1 + wire::varint_len(len as u64) + len;
        let scope_metrics = field(self.scope.len()) + self.metrics.len();
        let resource_metrics = field(self.resource.len()) + field(scope_metrics);
        let mut body = Vec::with_capacity(field(resource_metrics));
        wire::tag(&mut body, 1, wire::LEN);
        wire::varint(&mut body, resource_metrics as u64);
        wire::bytes(&mut body, 1, &self.resource);
        wire::tag(&mut body, 2, wire::LEN);
        wire::varint(&mut body, scope_metrics as u64);
        wire::bytes(&mut body, 1, &self.scope);
        body.extend_from_slice(&self.metrics);
        self.metrics.clear();
        self.out.push(Encoded {
            body: body.into(),
            points: self.points as u64,
        });
        self.points = 0;
        self.bytes = self.base_bytes;
    }

    /// Writes the metric of the points in `chunk` into the request being built.
    fn end_metric(&mut self, family: &FamilySnapshot, data: DataKind) {
        if self.chunk_points == 0 {
            return;
        }
        let (name, description, unit) = (
            family.meta.name(),
            family.meta.description(),
            family.meta.unit().ucum(),
        );
        let len = wire::string_len(name)
            + wire::string_len(description)
            + wire::string_len(unit)
            + data.len(self.chunk.len());
        wire::tag(&mut self.metrics, 2, wire::LEN);
        wire::varint(&mut self.metrics, len as u64);
        wire::string(&mut self.metrics, 1, name);
        wire::string(&mut self.metrics, 2, description);
        wire::string(&mut self.metrics, 3, unit);
        data.write(&mut self.metrics, &self.chunk);
        self.chunk.clear();
        self.chunk_points = 0;
    }

    /// Adds the points of one metric, each written by `point` into the buffer it is given (or
    /// skipped when it returns false), starting a new request whenever a limit would be passed.
    fn push<T>(
        &mut self,
        family: &FamilySnapshot,
        data: DataKind,
        items: impl Iterator<Item = T>,
        mut point: impl FnMut(&mut Vec<u8>, T) -> bool,
    ) {
        let overhead = metric_overhead(family);
        let mut encoded = Vec::new();
        for item in items {
            encoded.clear();
            if !point(&mut encoded, item) {
                continue;
            }
            let len = encoded.len() + 4;
            let extra = if self.chunk_points == 0 { overhead } else { 0 };
            if self.points > 0
                && (self.points >= self.opts.max_points
                    || self.bytes + len + extra > self.opts.max_bytes)
            {
                self.end_metric(family, data);
                self.finish();
            }
            if self.chunk_points == 0 {
                self.bytes += overhead;
            }
            self.points += 1;
            self.bytes += len;
            self.chunk_points += 1;
            wire::bytes(&mut self.chunk, 1, &encoded);
        }
        self.end_metric(family, data);
    }

    fn family(&mut self, snapshot: &Snapshot, family: &FamilySnapshot) {
        let temporality = if snapshot.is_delta(family) {
            AggregationTemporality::Delta
        } else {
            AggregationTemporality::Cumulative
        } as i32;
        let time = snapshot.time_unix_nanos;
        let float = family.meta.number_kind() == NumberKind::F64;
        let series = family.series.iter();
        match family.meta.kind() {
            Kind::Counter | Kind::UpDownCounter => {
                let data = DataKind::Sum {
                    temporality,
                    monotonic: family.meta.kind() == Kind::Counter,
                };
                self.push(family, data, series, |buf, s| {
                    write_number_point(buf, family, s, time, true, float)
                });
            }
            Kind::Gauge => {
                self.push(family, DataKind::Gauge, series, |buf, s| {
                    write_number_point(buf, family, s, time, false, float)
                });
            }
            Kind::Histogram => {
                let delta = temporality == AggregationTemporality::Delta as i32;
                match self.opts.histograms {
                    HistogramAggregation::ExplicitBuckets => {
                        let data = DataKind::Histogram { temporality };
                        self.push(family, data, series, |buf, s| {
                            write_explicit_point(buf, family, s, time, delta)
                        });
                    }
                    HistogramAggregation::Exponential => {
                        let max_scale = self.opts.max_scale;
                        let data = DataKind::Exponential { temporality };
                        // Rarely chosen; the message types write it.
                        self.push(family, data, series, |buf, s| {
                            let Some(h) = s.point.histogram() else {
                                return false;
                            };
                            exponential_point(family, s, h, time, delta, max_scale).encode_raw(buf);
                            true
                        });
                    }
                }
            }
        }
    }
}

/// The series' attributes, straight from the snapshot.
fn write_attributes(buf: &mut Vec<u8>, field: u32, family: &FamilySnapshot, s: &SeriesSnapshot) {
    for (k, v) in family.label_pairs(s) {
        wire::string_attribute(buf, field, k, v);
    }
}

/// A `NumberDataPoint`, as [`number_point`] builds it.
fn write_number_point(
    buf: &mut Vec<u8>,
    family: &FamilySnapshot,
    s: &SeriesSnapshot,
    time: u64,
    with_start: bool,
    float: bool,
) -> bool {
    let Some(n) = s.point.number() else {
        return false;
    };
    if with_start && s.start_unix_nanos != 0 {
        wire::fixed64(buf, 2, s.start_unix_nanos);
    }
    if time != 0 {
        wire::fixed64(buf, 3, time);
    }
    match number_value(n, float) {
        number_data_point::Value::AsDouble(v) => wire::double(buf, 4, v),
        number_data_point::Value::AsInt(v) => wire::fixed64(buf, 6, v as u64),
    }
    write_attributes(buf, 7, family, s);
    true
}

/// A `HistogramDataPoint` with explicit bounds, as [`explicit_point`] builds it.
fn write_explicit_point(
    buf: &mut Vec<u8>,
    family: &FamilySnapshot,
    s: &SeriesSnapshot,
    time: u64,
    delta: bool,
) -> bool {
    let Some(h) = s.point.histogram() else {
        return false;
    };
    if s.start_unix_nanos != 0 {
        wire::fixed64(buf, 2, s.start_unix_nanos);
    }
    if time != 0 {
        wire::fixed64(buf, 3, time);
    }
    if h.count() != 0 {
        wire::fixed64(buf, 4, h.count());
    }
    wire::double(buf, 5, h.sum());
    let counts = h.bucket_counts();
    if !counts.is_empty() {
        wire::tag(buf, 6, wire::LEN);
        wire::varint(buf, 8 * counts.len() as u64);
        for c in &counts {
            buf.extend_from_slice(&c.to_le_bytes());
        }
    }
    let bounds = h.layout().explicit_bounds();
    if !bounds.is_empty() {
        wire::tag(buf, 7, wire::LEN);
        wire::varint(buf, 8 * bounds.len() as u64);
        for b in bounds {
            buf.extend_from_slice(&b.to_bits().to_le_bytes());
        }
    }
    for e in exemplars(h, s.start_unix_nanos, delta) {
        wire::tag(buf, 8, wire::LEN);
        wire::varint(buf, e.encoded_len() as u64);
        e.encode_raw(buf);
    }
    write_attributes(buf, 9, family, s);
    if let Some(min) = h.min() {
        wire::double(buf, 11, min);
    }
    if let Some(max) = h.max() {
        wire::double(buf, 12, max);
    }
    true
}

#[cfg(test)]
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

#[cfg(test)]
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

#[cfg(test)]
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
    use sonde_core::testing::{family, handle};
    use sonde_core::{Registry, Temporality, Unit};

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

    /// The request the message types build for a snapshot (what `encode` wrote before it
    /// wrote the wire format itself), all in one request.
    fn reference(snapshot: &Snapshot, opts: &Options) -> ExportMetricsServiceRequest {
        let time = snapshot.time_unix_nanos;
        let mut metrics = Vec::new();
        for family in &snapshot.families {
            let temporality = if snapshot.is_delta(family) {
                AggregationTemporality::Delta
            } else {
                AggregationTemporality::Cumulative
            } as i32;
            let delta = temporality == AggregationTemporality::Delta as i32;
            let float = family.meta.number_kind() == NumberKind::F64;
            let series = family.series.iter();
            let data = match family.meta.kind() {
                Kind::Counter | Kind::UpDownCounter => Data::Sum(Sum {
                    data_points: series
                        .filter_map(|s| number_point(family, s, time, true, float))
                        .collect(),
                    aggregation_temporality: temporality,
                    is_monotonic: family.meta.kind() == Kind::Counter,
                }),
                Kind::Gauge => Data::Gauge(Gauge {
                    data_points: series
                        .filter_map(|s| number_point(family, s, time, false, float))
                        .collect(),
                }),
                Kind::Histogram => match opts.histograms {
                    HistogramAggregation::ExplicitBuckets => Data::Histogram(Histogram {
                        data_points: series
                            .filter_map(|s| {
                                Some(explicit_point(family, s, s.point.histogram()?, time, delta))
                            })
                            .collect(),
                        aggregation_temporality: temporality,
                    }),
                    HistogramAggregation::Exponential => {
                        Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: series
                                .filter_map(|s| {
                                    Some(exponential_point(
                                        family,
                                        s,
                                        s.point.histogram()?,
                                        time,
                                        delta,
                                        opts.max_scale,
                                    ))
                                })
                                .collect(),
                            aggregation_temporality: temporality,
                        })
                    }
                },
            };
            let m = metric(family, data);
            // A family without points (no series yet) sends no metric.
            let mut one = ExportMetricsServiceRequest::default();
            one.resource_metrics.push(ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![m.clone()],
                    ..Default::default()
                }],
                ..Default::default()
            });
            if points_of(&one) > 0 {
                metrics.push(m);
            }
        }
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(opts.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(opts.scope.clone()),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    /// The wire format written from the snapshot decodes to exactly what the message types
    /// build: every kind, integer and float values, negative and huge ones, empty label values,
    /// the overflow series, exemplars, delta and cumulative, explicit and exponential.
    #[test]
    fn the_wire_format_is_what_the_message_types_encode() {
        for temporality in [Temporality::Cumulative, Temporality::Delta] {
            for histograms in [
                HistogramAggregation::ExplicitBuckets,
                HistogramAggregation::Exponential,
            ] {
                let reg = Registry::new();
                let c = family(reg.counter("c.total").labels(["i", "empty"]).max_series(3));
                let f = handle(reg.counter_f64("f").unit(Unit::Seconds));
                let u = handle(reg.up_down_counter("u").description("Up and down."));
                let g = family(reg.gauge("g").labels(["k"]));
                let h = family(
                    reg.histogram("h")
                        .unit(Unit::Seconds)
                        .labels(["route"])
                        .exemplars(true),
                );
                let _ = handle(reg.histogram("none"));
                for i in 0..5 {
                    // Past max_series(3): the overflow series.
                    c.with(&[&i.to_string(), ""]).add(u64::MAX / 2 + i);
                }
                f.add(2.5);
                u.add(-7);
                g.with(&["a"]).set(-3);
                g.with(&["b"]).set(i64::MAX);
                let trace = sonde_core::TraceContext {
                    trace_id: [7; 16],
                    span_id: [9; 8],
                };
                for (i, v) in [0.0, 0.001, 0.2, 5.0, 1e9, -1.0].into_iter().enumerate() {
                    let route = if i % 2 == 0 { "/a" } else { "/b" };
                    h.with(&[route]).observe_with_exemplar(v, &trace);
                }
                let snap = reg.reader(temporality).collect();
                let mut opts = Options::new(
                    &Resource::empty()
                        .with("service.name", "t")
                        .with("process.pid", "42"),
                );
                opts.histograms = histograms;
                opts.max_points = usize::MAX;
                opts.max_bytes = usize::MAX;
                let out = encode(&snap, &opts);
                assert_eq!(out.len(), 1);
                let got = ExportMetricsServiceRequest::decode(&out[0].body[..]).unwrap();
                let want = reference(&snap, &opts);
                assert_eq!(got, want, "{temporality:?} {histograms:?}");
                assert_eq!(out[0].body.len(), want.encoded_len());
                assert_eq!(out[0].points, points_of(&want) as u64);
            }
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
