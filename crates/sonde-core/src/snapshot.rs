//! Snapshots: what exporters read, cumulative or as deltas per consumer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::histogram::HistogramPoint;
use crate::instrument::Kind;
use crate::labels::LabelIter;
use crate::number::NumberKind;
use crate::registry::Registry;
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

    fn minus(&self, earlier: &Point) -> Point {
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
        if series.is_overflow() {
            return vec![(OVERFLOW_LABEL, "true")];
        }
        self.meta.label_names().zip(series.label_values()).collect()
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
    /// kind was not kept cumulative by the reader (see [`Reader::with_cumulative_kinds`]).
    pub fn is_delta(&self, family: &FamilySnapshot) -> bool {
        self.temporality == Temporality::Delta && !self.cumulative_kinds.contains(&family.meta.kind)
    }

    /// Total number of series.
    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.series.len()).sum()
    }
}

/// A consumer of a registry: an exporter, with its own temporality and, for deltas, its own
/// memory of what it read last, so consumers with different intervals never disturb each other.
pub struct Reader {
    registry: Registry,
    temporality: Temporality,
    memory: Arc<Mutex<Memory>>,
    cumulative_kinds: Vec<Kind>,
}

/// What a delta reader read last.
#[derive(Default)]
struct Memory {
    previous: HashMap<u64, Point>,
    last_collect: u64,
}

/// A delta reader's memory of what it read last, handed to the reader that replaces it (an
/// exporter restarted with new settings) so the new one continues where the old one is: every
/// change is reported once, by one of them, instead of the new one's first collection
/// repeating every counter's total. Readers that share it may collect in any order, also at
/// the same time.
#[derive(Clone)]
pub struct DeltaState(Arc<Mutex<Memory>>);

impl std::fmt::Debug for DeltaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("DeltaState")
            .field("series", &m.previous.len())
            .field("last_collect", &m.last_collect)
            .finish()
    }
}

impl Reader {
    pub(crate) fn new(registry: Registry, temporality: Temporality) -> Self {
        Reader {
            registry,
            temporality,
            memory: Arc::default(),
            cumulative_kinds: Vec::new(),
        }
    }

    /// This reader's delta memory, for [`continue_from`](Self::continue_from) in its successor.
    pub fn delta_state(&self) -> DeltaState {
        DeltaState(self.memory.clone())
    }

    /// Shares `state` (another delta reader's [`delta_state`](Self::delta_state)): this reader's
    /// first collection reports the changes since that reader's last one, not since each series
    /// started. Give it to readers of the same registry that keep the same kinds cumulative.
    pub fn continue_from(mut self, state: &DeltaState) -> Self {
        self.memory = state.0.clone();
        self
    }

    /// Keeps families of these kinds cumulative in a delta reader: OTLP's `delta` temporality
    /// preference wants up-down counters cumulative, since their changes alone say nothing of
    /// the level. Check per family with [`Snapshot::is_delta`].
    pub fn with_cumulative_kinds(mut self, kinds: &[Kind]) -> Self {
        self.cumulative_kinds = kinds.to_vec();
        self
    }

    /// This reader's temporality.
    pub fn temporality(&self) -> Temporality {
        self.temporality
    }

    /// Reads every family. For delta readers, each point is the change since this reader's
    /// previous collection (for a series it has not seen, since the series was created).
    pub fn collect(&mut self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        self.collect_into(&mut snapshot);
        snapshot
    }

    /// Like [`collect`](Self::collect), reusing `snapshot`'s allocations.
    pub fn collect_into(&mut self, snapshot: &mut Snapshot) {
        if self.temporality == Temporality::Cumulative {
            self.registry.read_into(snapshot);
            snapshot.temporality = self.temporality;
            snapshot.cumulative_kinds.clone_from(&self.cumulative_kinds);
            return;
        }
        // Read under the memory's lock, so readers sharing it take turns whole: a read older
        // than the memory would come out negative.
        let memory = self.memory.clone();
        let mut memory = memory.lock().unwrap_or_else(|e| e.into_inner());
        self.registry.read_into(snapshot);
        snapshot.temporality = self.temporality;
        snapshot.cumulative_kinds.clone_from(&self.cumulative_kinds);
        let now = snapshot.time_unix_nanos;
        let mut seen = HashMap::with_capacity(memory.previous.len());
        for family in &mut snapshot.families {
            if self.cumulative_kinds.contains(&family.meta.kind) {
                continue;
            }
            for s in &mut family.series {
                let id = s.series.header().id();
                let cumulative = std::mem::replace(&mut s.point, Point::Gauge(Number::U64(0)));
                s.point = match memory.previous.get(&id) {
                    Some(prev) => {
                        s.start_unix_nanos = memory.last_collect;
                        cumulative.minus(prev)
                    }
                    None => cumulative.clone(),
                };
                if !matches!(cumulative, Point::Gauge(_)) {
                    seen.insert(id, cumulative);
                }
            }
        }
        // Series that expired are forgotten with the old map.
        memory.previous = seen;
        memory.last_collect = now;
    }
}
