//! Snapshots: what exporters read, cumulative or as deltas per consumer.

use std::sync::Arc;

use crate::histogram::HistogramPoint;
use crate::kind::Kind;
use crate::labels::LabelIter;
use crate::number::NumberKind;
use crate::series::SeriesInfo;
use crate::{Number, Unit};
use std::borrow::Cow;

/// The label name of a family's overflow series (rendered `otel_metric_overflow` for Prometheus).
pub const OVERFLOW_LABEL: &str = "otel.metric.overflow";

/// One value read from a series.
#[derive(Debug, Clone)]
pub enum Point {
    /// A monotonic sum.
    Counter(Number),
    /// A non-monotonic sum.
    UpDownCounter(Number),
    /// A last value.
    Gauge(Number),
    /// A distribution.
    Histogram(HistogramPoint),
}

impl Point {
    /// The number of a counter, up-down counter or gauge.
    pub fn number(&self) -> Option<Number> {
        match self {
            Point::Counter(n) | Point::UpDownCounter(n) | Point::Gauge(n) => Some(*n),
            Point::Histogram(_) => None,
        }
    }

    /// The histogram read, if this is a histogram.
    pub fn histogram(&self) -> Option<&HistogramPoint> {
        match self {
            Point::Histogram(h) => Some(h),
            _ => None,
        }
    }

    pub(crate) fn minus(&self, earlier: &Point) -> Point {
        match (self, earlier) {
            (Point::Counter(a), Point::Counter(b)) => Point::Counter(a.minus(*b)),
            (Point::UpDownCounter(a), Point::UpDownCounter(b)) => Point::UpDownCounter(a.minus(*b)),
            (Point::Histogram(a), Point::Histogram(b)) => Point::Histogram(a.minus(b)),
            (p, _) => p.clone(),
        }
    }
}

/// Whether points carry totals since the series started or changes since the last collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Temporality {
    /// Totals since the series' start time (Prometheus, cumulative OTLP).
    #[default]
    Cumulative,
    /// Changes since this consumer's previous collection (CloudWatch, delta OTLP, StatsD-like
    /// backends). Gauges always carry their last value.
    Delta,
}

/// What a family is: name, description, unit, kind and label names.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyMeta {
    pub(crate) name: Cow<'static, str>,
    pub(crate) description: Cow<'static, str>,
    pub(crate) unit: Unit,
    pub(crate) kind: Kind,
    pub(crate) number: NumberKind,
    pub(crate) label_names: Box<[Cow<'static, str>]>,
}

impl FamilyMeta {
    /// The metric name, as registered (OpenTelemetry style, e.g. `http.server.request.duration`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The description.
    pub fn description(&self) -> &str {
        &self.description
    }
    /// The unit.
    pub fn unit(&self) -> &Unit {
        &self.unit
    }
    /// The instrument kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// The number type.
    pub fn number_kind(&self) -> NumberKind {
        self.number
    }
    /// Declared label names, in order.
    pub fn label_names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.label_names.iter().map(|l| l.as_ref())
    }
}

/// One series in a snapshot.
#[derive(Clone)]
pub struct SeriesSnapshot {
    pub(crate) series: Arc<dyn SeriesInfo>,
    /// Copied from the header, so sorting needs no indirection.
    pub(crate) id: u64,
    /// Start of the interval (delta) or of the series (cumulative), UNIX nanoseconds.
    pub start_unix_nanos: u64,
    /// The value.
    pub point: Point,
}

impl std::fmt::Debug for SeriesSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesSnapshot")
            .field("labels", &self.label_values().collect::<Vec<_>>())
            .field("overflow", &self.is_overflow())
            .field("point", &self.point)
            .finish()
    }
}

impl SeriesSnapshot {
    /// The label values, in the family's label order (none for the overflow series).
    pub fn label_values(&self) -> LabelIter<'_> {
        self.series.header().label_values()
    }

    /// Whether this is the overflow series, which carries `otel.metric.overflow="true"`
    /// instead of the family's labels.
    pub fn is_overflow(&self) -> bool {
        self.series.header().is_overflow()
    }

    /// Process-unique series id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// One family in a snapshot.
#[derive(Debug, Clone)]
pub struct FamilySnapshot {
    /// What the family is.
    pub meta: Arc<FamilyMeta>,
    /// Its series, in creation order.
    pub series: Vec<SeriesSnapshot>,
}

impl FamilySnapshot {
    /// `(label name, label value)` pairs of a series of this family.
    pub fn labels<'a>(&'a self, series: &'a SeriesSnapshot) -> Vec<(&'a str, &'a str)> {
        self.label_pairs(series).collect()
    }

    /// The pairs of [`labels`](Self::labels), without collecting them (for encoders that
    /// write each pair once).
    pub fn label_pairs<'a>(
        &'a self,
        series: &'a SeriesSnapshot,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let overflow = series.is_overflow();
        let own = (!overflow).then(|| self.meta.label_names().zip(series.label_values()));
        own.into_iter()
            .flatten()
            .chain(overflow.then_some((OVERFLOW_LABEL, "true")))
    }

    /// Finds the series whose labels are exactly `labels` (in any order).
    pub fn find(&self, labels: &[(&str, &str)]) -> Option<&SeriesSnapshot> {
        self.series.iter().find(|s| {
            let have = self.labels(s);
            have.len() == labels.len() && labels.iter().all(|l| have.contains(l))
        })
    }
}

/// Everything a registry held at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When it was taken, UNIX nanoseconds.
    pub time_unix_nanos: u64,
    /// Cumulative or delta.
    pub temporality: Temporality,
    /// Families, sorted by name.
    pub families: Vec<FamilySnapshot>,
    /// Kinds a delta reader kept cumulative.
    pub cumulative_kinds: Vec<Kind>,
}

impl Snapshot {
    /// The family named `name`.
    pub fn family(&self, name: &str) -> Option<&FamilySnapshot> {
        self.families.iter().find(|f| f.meta.name() == name)
    }

    /// The point of the series of `name` with exactly `labels`.
    pub fn point(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Point> {
        self.family(name)?.find(labels).map(|s| &s.point)
    }

    /// Whether the points of `family` are deltas: the snapshot is a delta one and the family's
    /// kind was not kept cumulative by the reader (see
    /// [`Reader::with_cumulative_kinds`](crate::Reader::with_cumulative_kinds)).
    pub fn is_delta(&self, family: &FamilySnapshot) -> bool {
        self.temporality == Temporality::Delta && !self.cumulative_kinds.contains(&family.meta.kind)
    }

    /// Total number of series.
    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.series.len()).sum()
    }
}
