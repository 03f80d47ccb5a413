//! Selections: which metrics and series one exporter sends, and which labels it keeps.
//!
//! An agent that sends every series to every backend pays for what nobody chose (CloudWatch
//! bills each metric a month). A [`Selection`] given to a [`Reader`](crate::Reader) is applied
//! to each collection, after deltas are computed. It is a list of [`Rule`]s; the first rule
//! that takes a metric decides for it, and a metric no rule takes is not sent. A rule:
//!
//! 1. takes metric names that match an `include` pattern (or there is none) and no `exclude`
//!    pattern;
//! 2. keeps the series for which every label condition holds (a label the series lacks reads
//!    as `""`, as in Prometheus matchers);
//! 3. removes `drop_labels` (or everything not in `keep_labels`), and aggregates the series
//!    that then carry the same labels into one: counters and up-down counters add,
//!    histograms merge (quantiles of the union, not averages), gauges combine as
//!    [`GaugeAggregation`] says. The overflow series stays on its own.
//!
//! ```
//! use sonde_core::{Pattern, Registry, Rule, Selection, Temporality};
//!
//! let registry = Registry::new();
//! let io = registry.counter("disk.io").labels(["device", "direction"]).build()?;
//! io.with(&["sda", "read"]).add(3);
//! io.with(&["sdb", "read"]).add(4);
//! registry.counter("disk.ops").build()?.with::<&str>(&[]).add(1);
//!
//! let only_io_by_direction = Selection::from(
//!     Rule::new().include([Pattern::glob("disk.io*")]).drop_labels(["device"]),
//! );
//! let snapshot = registry
//!     .reader(Temporality::Cumulative)
//!     .with_selection(only_io_by_direction)
//!     .collect();
//! assert_eq!(snapshot.families.len(), 1);
//! let read = snapshot.point("disk.io", &[("direction", "read")]).unwrap();
//! assert_eq!(read.number().unwrap().as_f64(), 7.0);
//! # Ok::<(), sonde_core::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::labels::LabelValues;
use crate::number::{Number, NumberKind};
use crate::series::{Header, SeriesInfo};
use crate::snapshot::{FamilyMeta, FamilySnapshot, Point, SeriesSnapshot, Snapshot};

/// A pattern on a metric name, a label name or a label value: a glob (`*` any run of
/// characters, dots included; `?` one character; everything else literal), or a predicate
/// the caller compiles (a regular expression, say: the core has no regex engine).
#[derive(Clone)]
pub struct Pattern {
    text: Arc<str>,
    test: Test,
}

#[derive(Clone)]
enum Test {
    Glob,
    Predicate(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl Pattern {
    /// A glob: `system.cpu.*`, `*.duration`, `http.server.request.duration`.
    pub fn glob(text: impl Into<String>) -> Pattern {
        Pattern {
            text: Arc::from(text.into()),
            test: Test::Glob,
        }
    }

    /// A pattern that matches where `test` says, shown as `text` (for example a compiled
    /// regular expression and its source).
    pub fn predicate(
        text: impl Into<String>,
        test: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Pattern {
        Pattern {
            text: Arc::from(text.into()),
            test: Test::Predicate(Arc::new(test)),
        }
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        match &self.test {
            Test::Glob => glob_match(self.text.as_bytes(), s.as_bytes()),
            Test::Predicate(f) => f(s),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.text)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.text == other.text
            && matches!(self.test, Test::Glob) == matches!(other.test, Test::Glob)
    }
}

/// `*` and `?` globbing in time linear in the pattern times the text (one backtrack point,
/// the classic greedy algorithm), so a hostile pattern or name cannot blow up.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// How gauges combine when dropping labels makes several series one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GaugeAggregation {
    /// The mean (utilizations, ratios, temperatures): the default.
    #[default]
    Mean,
    /// The sum (sizes and levels split by a label that is dropped).
    Sum,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
}

impl GaugeAggregation {
    /// Parses `mean`, `sum`, `min` or `max`.
    pub fn parse(s: &str) -> Option<GaugeAggregation> {
        Some(match s {
            "mean" => GaugeAggregation::Mean,
            "sum" => GaugeAggregation::Sum,
            "min" => GaugeAggregation::Min,
            "max" => GaugeAggregation::Max,
            _ => return None,
        })
    }
}

/// One rule of a [`Selection`]: which metric names it takes, which of their series, and
/// which labels it keeps. The default takes every metric unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rule {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
    /// Label conditions: the label, values it must match one of (none: any), values it must
    /// match none of.
    labels: Vec<(String, Vec<Pattern>, Vec<Pattern>)>,
    drop_labels: Vec<Pattern>,
    keep_labels: Option<Vec<String>>,
    gauges: GaugeAggregation,
    without_labels: Vec<String>,
    with_labels: Vec<String>,
}

impl Rule {
    /// A rule that takes every metric unchanged.
    pub fn new() -> Rule {
        Rule::default()
    }

    /// Takes only metrics whose name matches one of `patterns` (adds to earlier ones).
    pub fn include(mut self, patterns: impl IntoIterator<Item = Pattern>) -> Rule {
        self.include.extend(patterns);
        self
    }

    /// Does not take metrics whose name matches one of `patterns`, included or not.
    pub fn exclude(mut self, patterns: impl IntoIterator<Item = Pattern>) -> Rule {
        self.exclude.extend(patterns);
        self
    }

    /// Keeps only series whose `label` matches one of `values` (a series without the label
    /// reads as `""`). Several conditions must all hold.
    pub fn label(
        mut self,
        label: impl Into<String>,
        values: impl IntoIterator<Item = Pattern>,
    ) -> Rule {
        self.condition(label.into()).1.extend(values);
        self
    }

    /// Keeps only series whose `label` matches none of `values` (`lo` among network
    /// interfaces, say). Combines with [`label`](Self::label) on the same label.
    pub fn label_not(
        mut self,
        label: impl Into<String>,
        values: impl IntoIterator<Item = Pattern>,
    ) -> Rule {
        self.condition(label.into()).2.extend(values);
        self
    }

    fn condition(&mut self, label: String) -> &mut (String, Vec<Pattern>, Vec<Pattern>) {
        let at = match self.labels.iter().position(|c| c.0 == label) {
            Some(i) => i,
            None => {
                self.labels.push((label, Vec::new(), Vec::new()));
                self.labels.len() - 1
            }
        };
        &mut self.labels[at]
    }

    /// Removes the labels whose names match (globs), aggregating series that become equal.
    pub fn drop_labels<S: Into<String>>(mut self, labels: impl IntoIterator<Item = S>) -> Rule {
        self.drop_labels
            .extend(labels.into_iter().map(|l| Pattern::glob(l)));
        self
    }

    /// Keeps only these labels (CloudWatch's `aggregation_dimensions` shape), aggregating
    /// series that become equal. An empty list aggregates each metric into one series.
    pub fn keep_labels<S: Into<String>>(mut self, labels: impl IntoIterator<Item = S>) -> Rule {
        self.keep_labels = Some(labels.into_iter().map(Into::into).collect());
        self
    }

    /// How gauges combine when series are aggregated (default [`GaugeAggregation::Mean`]).
    pub fn gauges(mut self, how: GaugeAggregation) -> Rule {
        self.gauges = how;
        self
    }

    /// Does not take families that carry every one of these label names (`job` and
    /// `instance` mark what the agent scraped from other targets, say).
    pub fn without_labels<S: Into<String>>(mut self, labels: impl IntoIterator<Item = S>) -> Rule {
        self.without_labels
            .extend(labels.into_iter().map(Into::into));
        self
    }

    /// Takes only families that carry every one of these label names.
    pub fn with_labels<S: Into<String>>(mut self, labels: impl IntoIterator<Item = S>) -> Rule {
        self.with_labels.extend(labels.into_iter().map(Into::into));
        self
    }

    /// Whether this rule takes the metric `name` with the label names `labels`.
    pub fn takes(&self, name: &str, labels: &[&str]) -> bool {
        self.takes_with(name, |w| labels.contains(&w))
    }

    /// [`takes`](Self::takes) with `has_label` telling which label names the family has.
    fn takes_with(&self, name: &str, has_label: impl Fn(&str) -> bool) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(name)))
            && !self.exclude.iter().any(|p| p.matches(name))
            && (self.without_labels.is_empty() || !self.without_labels.iter().all(|w| has_label(w)))
            && self.with_labels.iter().all(|w| has_label(w))
    }

    fn filter_series(&self, family: &mut FamilySnapshot) {
        if self.labels.is_empty() {
            return;
        }
        let positions: Vec<Option<usize>> = self
            .labels
            .iter()
            .map(|(name, _, _)| family.meta.label_names().position(|l| l == name))
            .collect();
        family.series.retain(|s| {
            let values: Vec<&str> = if s.is_overflow() {
                Vec::new()
            } else {
                s.label_values().collect()
            };
            self.labels
                .iter()
                .zip(&positions)
                .all(|((_, any, none), at)| {
                    let v = at.and_then(|i| values.get(i).copied()).unwrap_or("");
                    (any.is_empty() || any.iter().any(|p| p.matches(v)))
                        && !none.iter().any(|p| p.matches(v))
                })
        });
    }

    /// Drops labels and aggregates the series that become equal.
    fn project(&self, family: &mut FamilySnapshot, stats: &Stats) {
        let keep: Vec<usize> = family
            .meta
            .label_names()
            .enumerate()
            .filter(|(_, name)| match &self.keep_labels {
                Some(keep) => keep.iter().any(|k| k == name),
                None => !self.drop_labels.iter().any(|p| p.matches(name)),
            })
            .map(|(i, _)| i)
            .collect();
        if keep.len() == family.meta.label_names.len() {
            return;
        }
        let mut meta = FamilyMeta::clone(&family.meta);
        meta.label_names = keep.iter().map(|&i| meta.label_names[i].clone()).collect();
        let mean_of_integers = self.gauges == GaugeAggregation::Mean
            && family.meta.kind == crate::Kind::Gauge
            && meta.number != NumberKind::F64;
        if mean_of_integers {
            meta.number = NumberKind::F64;
        }
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<Vec<String>, usize> = HashMap::new();
        for s in family.series.drain(..) {
            if s.is_overflow() {
                groups.push(Group::single(s, None));
                continue;
            }
            let values: Vec<&str> = s.label_values().collect();
            let key: Vec<String> = keep
                .iter()
                .map(|&i| values.get(i).copied().unwrap_or("").to_owned())
                .collect();
            match index.get(&key) {
                Some(&g) => {
                    if groups[g].add(&s) {
                        stats.aggregated.fetch_add(1, Relaxed);
                    } else {
                        // Not reachable with one family's series (they share a kind and a
                        // layout), but never dropped silently.
                        stats.incompatible.fetch_add(1, Relaxed);
                        static LOG: crate::diag::RateLimit =
                            crate::diag::RateLimit::new(std::time::Duration::from_secs(60));
                        if let Some(n) = LOG.hit() {
                            crate::diag::warn(format_args!(
                                "a series of {:?} could not be aggregated with the others of its group (different histogram settings) and was left out ({n} since the last report)",
                                family.meta.name()
                            ));
                        }
                    }
                }
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push(Group::single(s, Some(key)));
                }
            }
        }
        family.meta = Arc::new(meta);
        family.series = groups
            .into_iter()
            .map(|g| g.finish(self.gauges, mean_of_integers))
            .collect();
    }

    fn changes_series(&self) -> bool {
        !self.labels.is_empty() || !self.drop_labels.is_empty() || self.keep_labels.is_some()
    }
}

/// Which metrics and series an exporter sends, and which labels it keeps: a list of
/// [`Rule`]s, where the first rule that takes a metric decides what happens to it and a
/// metric no rule takes is not sent (see the [module docs](self)). With no rule, everything
/// is sent unchanged.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    rules: Vec<Rule>,
    stats: Arc<Stats>,
}

impl PartialEq for Selection {
    /// Equal when the rules are (the counters are not compared).
    fn eq(&self, other: &Selection) -> bool {
        self.rules == other.rules
    }
}

#[derive(Debug, Default)]
struct Stats {
    aggregated: AtomicU64,
    incompatible: AtomicU64,
}

impl From<Rule> for Selection {
    fn from(rule: Rule) -> Selection {
        Selection::new().rule(rule)
    }
}

impl Selection {
    /// Selects everything, unchanged.
    pub fn new() -> Selection {
        Selection::default()
    }

    /// Adds a rule after the existing ones.
    pub fn rule(mut self, rule: Rule) -> Selection {
        self.rules.push(rule);
        self
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether this selection changes nothing.
    pub fn is_everything(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule that decides for the metric `name`, if one takes it.
    fn rule_for(&self, meta: &FamilyMeta) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.takes_with(meta.name(), |w| meta.label_names().any(|l| l == w)))
    }

    /// Whether a metric `name` without labels is sent (see [`selects_family`](Self::selects_family)).
    pub fn selects(&self, name: &str) -> bool {
        self.is_everything() || self.rules.iter().any(|r| r.takes(name, &[]))
    }

    /// Whether the family `meta` is sent (before any label condition on its series).
    pub fn selects_family(&self, meta: &FamilyMeta) -> bool {
        self.is_everything() || self.rule_for(meta).is_some()
    }

    /// Series merged into another by aggregation so far (all collections of every reader
    /// sharing this selection).
    pub fn aggregated_series(&self) -> u64 {
        self.stats.aggregated.load(Relaxed)
    }

    /// Series left out of an aggregation because their histogram settings differ from the
    /// series they would merge into (counted, never merged wrongly).
    pub fn incompatible_series(&self) -> u64 {
        self.stats.incompatible.load(Relaxed)
    }

    /// Applies the whole selection to `snapshot`.
    pub fn apply(&self, snapshot: &mut Snapshot) {
        if self.is_everything() {
            return;
        }
        // One pass: the rule that takes a family decides for it, none drops it.
        snapshot.families.retain_mut(|family| {
            let Some(rule) = self.rule_for(&family.meta) else {
                return false;
            };
            if rule.changes_series() {
                rule.filter_series(family);
                rule.project(family, &self.stats);
            }
            true
        });
    }
}

/// Series that aggregate into one.
struct Group {
    first: SeriesSnapshot,
    /// The kept label values (`None` for the overflow series, which keeps its header).
    key: Option<Vec<String>>,
    point: Point,
    start: u64,
    members: u64,
    /// Gauges: sum, smallest and largest of the members' values.
    gauge: (f64, f64, f64),
}

impl Group {
    fn single(s: SeriesSnapshot, key: Option<Vec<String>>) -> Group {
        let v = match &s.point {
            Point::Gauge(n) => n.as_f64(),
            _ => 0.0,
        };
        Group {
            point: s.point.clone(),
            start: s.start_unix_nanos,
            first: s,
            key,
            members: 1,
            gauge: (v, v, v),
        }
    }

    /// Adds `s`; false when it cannot merge (histograms with different settings).
    fn add(&mut self, s: &SeriesSnapshot) -> bool {
        self.point = match (&self.point, &s.point) {
            (Point::Counter(a), Point::Counter(b)) => Point::Counter(plus(*a, *b)),
            (Point::UpDownCounter(a), Point::UpDownCounter(b)) => {
                Point::UpDownCounter(plus(*a, *b))
            }
            (Point::Gauge(a), Point::Gauge(b)) => {
                let v = b.as_f64();
                let (sum, min, max) = &mut self.gauge;
                *sum += v;
                *min = min.min(v);
                *max = max.max(v);
                Point::Gauge(*a)
            }
            (Point::Histogram(a), Point::Histogram(b)) => match a.merge(b) {
                Ok(m) => Point::Histogram(m),
                Err(_) => return false,
            },
            _ => return false,
        };
        self.start = self.start.min(s.start_unix_nanos);
        self.members += 1;
        true
    }

    fn finish(self, how: GaugeAggregation, mean_of_integers: bool) -> SeriesSnapshot {
        let point = match self.point {
            Point::Gauge(n) => Point::Gauge(self.gauge_value(n, how, mean_of_integers)),
            p => p,
        };
        let Some(key) = self.key else {
            return SeriesSnapshot {
                point,
                ..self.first
            };
        };
        let header = Header::carried(LabelValues::new(&key), self.first.series.header());
        SeriesSnapshot {
            series: Arc::new(Projected(header)),
            id: self.first.id,
            start_unix_nanos: self.start,
            point,
        }
    }

    /// The aggregated gauge, in the family's number type (a mean of integers is a float, and
    /// the family's type says so).
    fn gauge_value(&self, first: Number, how: GaugeAggregation, mean_of_integers: bool) -> Number {
        let (sum, min, max) = self.gauge;
        let v = match how {
            GaugeAggregation::Mean => sum / self.members as f64,
            GaugeAggregation::Sum => sum,
            GaugeAggregation::Min => min,
            GaugeAggregation::Max => max,
        };
        if self.members == 1 && !mean_of_integers {
            return first;
        }
        match first {
            _ if mean_of_integers => Number::F64(v),
            Number::F64(_) => Number::F64(v),
            Number::I64(_) => Number::I64(v.round() as i64),
            Number::U64(_) => Number::U64(v.round().max(0.0) as u64),
        }
    }
}

fn plus(a: Number, b: Number) -> Number {
    match (a, b) {
        (Number::U64(x), Number::U64(y)) => Number::U64(x.saturating_add(y)),
        (Number::I64(x), Number::I64(y)) => Number::I64(x.saturating_add(y)),
        (x, y) => Number::F64(x.as_f64() + y.as_f64()),
    }
}

/// A series header under the kept labels, for a projected or aggregated series.
struct Projected(Header);

impl SeriesInfo for Projected {
    fn header(&self) -> &Header {
        &self.0
    }
}
