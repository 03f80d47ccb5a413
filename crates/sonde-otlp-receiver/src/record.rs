//! OTLP metrics into registry families: the mapping the receiver documents.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, metric::Data, number_data_point,
};
use sonde_core::{
    Counter, Family, FamilyBuilder, Gauge, Histogram, Instrument, Registry, Unit, UpDownCounter,
};

/// Label values of a series, in its family's label order.
type Key = Vec<String>;

/// What one request did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Data points recorded.
    pub accepted: u64,
    /// Data points refused, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
}

impl Outcome {
    /// Refused data points in all.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    fn refuse(&mut self, reason: &'static str, n: u64) {
        *self.rejected.entry(reason).or_default() += n;
    }
}

/// A family as received: its label names (the points' attributes, then `job` and `instance`)
/// and what it records into.
struct Received {
    labels: Vec<String>,
    store: Store,
    /// The label values of the point at hand, rebuilt in place for each point (no allocation
    /// once the strings have grown), so a known series is found without allocating.
    scratch: Key,
    /// The expiry tick of the last point of this name.
    seen: u32,
}

/// Per-series state, by label values, with a fast hash (keys come from senders the agent
/// serves, but the map is per family and bounded by the registry's series limits), and the
/// expiry tick of the series' last point.
type BySeries<V> = HashMap<Key, (V, u32), foldhash::fast::RandomState>;

enum Store {
    /// The handle and the last cumulative total of each series.
    Counter(Family<Counter<f64>>, BySeries<(Counter<f64>, f64)>),
    /// The last cumulative value of each series.
    UpDown(Family<UpDownCounter<f64>>, BySeries<f64>),
    /// No state: the family's idle timeout expires its series.
    Gauge(Family<Gauge<f64>>),
    /// Explicit bounds, and per series the handle, the last cumulative bucket counts and sum.
    Histogram(
        Family<Histogram>,
        Vec<f64>,
        BySeries<(Histogram, (Vec<u64>, f64))>,
    ),
    /// Exponential points into a histogram on the default grid; the last cumulative
    /// (representative value, count) pairs and sum per series.
    Exponential(Family<Histogram>, BySeries<(Vec<(f64, u64)>, f64)>),
    Refused(&'static str),
}

impl Store {
    /// Forgets the series whose last point is older than `idle` says, removing them from the
    /// family (a gauge family's expire by its idle timeout).
    fn expire(&mut self, idle: impl Fn(u32) -> bool) {
        fn prune<M: Instrument, V>(
            f: &Family<M>,
            series: &mut BySeries<V>,
            idle: impl Fn(u32) -> bool,
        ) {
            series.retain(|key, (_, seen)| {
                !idle(*seen) || {
                    f.remove(key);
                    false
                }
            });
        }
        match self {
            Store::Counter(f, series) => prune(f, series, idle),
            Store::UpDown(f, series) => prune(f, series, idle),
            Store::Histogram(f, _, series) => prune(f, series, idle),
            Store::Exponential(f, series) => prune(f, series, idle),
            Store::Gauge(_) | Store::Refused(_) => {}
        }
    }

    /// Gives the family back to the registry if it holds no series; true when it is gone
    /// (or there was none, or the registry no longer has it).
    fn give_back(&self, registry: &Registry) -> bool {
        fn gone<M: Instrument>(registry: &Registry, f: &Family<M>) -> bool {
            !registry.is_registered(f) || registry.remove_family_if_unused(f)
        }
        match self {
            Store::Counter(f, _) => gone(registry, f),
            Store::UpDown(f, _) => gone(registry, f),
            Store::Gauge(f) => gone(registry, f),
            Store::Histogram(f, _, _) | Store::Exponential(f, _) => gone(registry, f),
            Store::Refused(_) => true,
        }
    }

    /// Whether its family is still the registry's (a refused name has none).
    fn is_registered(&self, registry: &Registry) -> bool {
        match self {
            Store::Counter(f, _) => registry.is_registered(f),
            Store::UpDown(f, _) => registry.is_registered(f),
            Store::Gauge(f) => registry.is_registered(f),
            Store::Histogram(f, _, _) | Store::Exponential(f, _) => registry.is_registered(f),
            Store::Refused(_) => true,
        }
    }
}

/// Records requests into a registry.
pub(crate) struct Recorder {
    registry: Registry,
    families: Mutex<HashMap<String, Received>>,
    info: Mutex<TargetInfo>,
    /// Series and names without a point for this long expire (`None`: never).
    ttl: Option<Duration>,
    /// Counts half-TTLs: what was last used more than two ticks ago has been idle a TTL.
    tick: AtomicU32,
    last_tick: Mutex<Instant>,
}

/// How many senders' `target_info` label values are remembered as already set.
const MAX_REMEMBERED_SENDERS: usize = 4096;

/// Each sender's `target_info` series: `job`, `instance` and the kept resource attributes.
struct TargetInfo {
    /// The kept attributes, which are the family's labels after `job` and `instance`.
    attributes: Vec<String>,
    /// Registered at the first resource with one of the attributes (`None` if refused).
    family: Option<Option<Family<Gauge<f64>>>>,
    /// Each sender's (`job`, `instance`) current label values: a sender repeats its resource
    /// every request (nothing to do), and one whose attributes change (a new `process.pid`)
    /// replaces its series, so a join on `job, instance` keeps finding one.
    /// Keyed by `job` NUL `instance`, built in `sender` (no allocation for a known sender),
    /// with the expiry tick of the sender's last request.
    current: HashMap<String, (Key, u32), foldhash::fast::RandomState>,
    sender: String,
    scratch: Key,
}

impl Recorder {
    pub(crate) fn new(
        registry: Registry,
        target_info_attributes: Vec<String>,
        ttl: Option<Duration>,
    ) -> Recorder {
        Recorder {
            registry,
            families: Mutex::new(HashMap::new()),
            info: Mutex::new(TargetInfo {
                attributes: target_info_attributes,
                family: None,
                current: HashMap::default(),
                sender: String::new(),
                scratch: Key::new(),
            }),
            ttl,
            tick: AtomicU32::new(0),
            last_tick: Mutex::new(Instant::now()),
        }
    }

    /// Expires what had no point for the TTL, when due (every half TTL; cheap otherwise):
    /// the series of stateful families (removed here, with what was kept to take deltas
    /// from), the names (their family given back once it holds no series; gauges' series
    /// expire by the family's idle timeout) and the senders' `target_info` memory. A series
    /// goes between one and one and a half TTLs after its last point.
    pub(crate) fn maintain(&self, now: Instant) {
        let Some(ttl) = self.ttl else { return };
        {
            let mut last = self.last_tick.lock().unwrap_or_else(|e| e.into_inner());
            if now.saturating_duration_since(*last) < ttl / 2 {
                return;
            }
            *last = now;
        }
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        // Taken under the lock, so no stamp is newer than it; compared as a signed distance
        // all the same, so a newer stamp could never read as idle.
        let tick = self.tick.fetch_add(1, Relaxed).wrapping_add(1);
        // Used at tick t: idle since before tick t + 1, so two ticks later at least a TTL.
        let idle = |seen: u32| (tick.wrapping_sub(seen) as i32) >= 3;
        families.retain(|_, received| {
            received.store.expire(idle);
            !(idle(received.seen) && received.store.give_back(&self.registry))
        });
        drop(families);
        // A silent sender's target_info series goes too (the family may be another source's,
        // registered without an idle timeout).
        let mut guard = self.info.lock().unwrap_or_else(|e| e.into_inner());
        let info = &mut *guard;
        let family = info.family.as_ref().and_then(Option::as_ref);
        info.current.retain(|_, (key, seen)| {
            !idle(*seen) || {
                if let Some(f) = family {
                    f.remove(&key[..]);
                }
                false
            }
        });
    }

    /// Takes over what `previous` received (a receiver started in its place): the families'
    /// state and the senders' `target_info` memory when the attributes are the same.
    pub(crate) fn adopt(&self, previous: &Recorder) {
        if !self.registry.same_as(&previous.registry) {
            return;
        }
        let taken =
            std::mem::take(&mut *previous.families.lock().unwrap_or_else(|e| e.into_inner()));
        *self.families.lock().unwrap_or_else(|e| e.into_inner()) = taken;
        self.tick.store(previous.tick.load(Relaxed), Relaxed);
        let mut old = previous.info.lock().unwrap_or_else(|e| e.into_inner());
        let mut new = self.info.lock().unwrap_or_else(|e| e.into_inner());
        if old.attributes == new.attributes {
            new.family = old.family.take();
            new.current = std::mem::take(&mut old.current);
        }
    }

    /// Sets the sender's `target_info` series if its resource has attributes to keep.
    fn target_info(&self, attrs: &[KeyValue], job: &str, instance: &str) {
        let mut guard = self.info.lock().unwrap_or_else(|e| e.into_inner());
        let info = &mut *guard;
        if info.attributes.is_empty() {
            return;
        }
        // A family another source gave back is registered again.
        if info
            .family
            .as_ref()
            .and_then(Option::as_ref)
            .is_some_and(|f| !self.registry.is_registered(f))
        {
            info.family = None;
            info.current.clear();
        }

        let n = info.attributes.len();
        info.scratch.resize_with(n + 2, String::new);
        info.scratch.iter_mut().for_each(String::clear);
        info.scratch[0].push_str(job);
        info.scratch[1].push_str(instance);
        let mut any = false;
        for kv in attrs {
            if let Some(i) = info.attributes.iter().position(|a| *a == kv.key) {
                push_value(&mut info.scratch[i + 2], kv.value.as_ref());
                any = true;
            }
        }
        if !any {
            return;
        }
        info.sender.clear();
        info.sender.push_str(job);
        info.sender.push('\0');
        info.sender.push_str(instance);
        let tick = self.tick.load(Relaxed);
        let previous = info.current.get(info.sender.as_str()).map(|(key, _)| key);
        if previous == Some(&info.scratch) && self.ttl.is_none() {
            return;
        }
        let family = info.family.get_or_insert_with(|| {
            let labels = ["job".to_owned(), "instance".to_owned()]
                .into_iter()
                .chain(info.attributes.iter().cloned());
            let builder = self
                .registry
                .gauge_f64("target_info")
                .description("Target metadata")
                .labels(labels);
            // With a TTL, a sender's series goes once it has been silent that long (it is set
            // again at every request).
            let builder = match self.ttl {
                Some(ttl) => builder.idle_timeout(ttl),
                None => builder,
            };
            match builder.build() {
                Ok(f) => Some(f),
                Err(e) => {
                    sonde_core::diag::warn(format_args!(
                        "OTLP senders' resource attributes are not kept as target_info: {e}"
                    ));
                    None
                }
            }
        });
        let Some(f) = family else {
            return;
        };
        if let Some(old) = previous.filter(|old| **old != info.scratch) {
            f.remove(&old[..]);
        }
        f.with(&info.scratch[..]).set(1.0);
        let full = info.current.len() >= MAX_REMEMBERED_SENDERS;
        match info.current.get_mut(info.sender.as_str()) {
            Some(known) => {
                known.0.clone_from(&info.scratch);
                known.1 = tick;
            }
            None if !full => {
                info.current
                    .insert(info.sender.clone(), (info.scratch.clone(), tick));
            }
            None => {}
        }
    }

    pub(crate) fn record(&self, request: &ExportMetricsServiceRequest) -> Outcome {
        self.maintain(Instant::now());
        let mut out = Outcome::default();
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        for rm in &request.resource_metrics {
            let attrs = rm
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let (job, instance) = job_and_instance(attrs);
            self.target_info(attrs, &job, &instance);
            for sm in &rm.scope_metrics {
                for metric in &sm.metrics {
                    self.metric(&mut families, metric, &job, &instance, &mut out);
                }
            }
        }
        out
    }

    fn metric(
        &self,
        families: &mut HashMap<String, Received>,
        m: &Metric,
        job: &str,
        instance: &str,
        out: &mut Outcome,
    ) {
        let Some(data) = &m.data else {
            return;
        };
        // A family another source gave back is registered again.
        if families
            .get(&m.name)
            .is_some_and(|r| !r.store.is_registered(&self.registry))
        {
            families.remove(&m.name);
        }
        if !families.contains_key(&m.name) {
            let received = self.register(m, data);
            families.insert(m.name.clone(), received);
        }
        let Some(fam) = families.get_mut(&m.name) else {
            return;
        };
        let tick = self.tick.load(Relaxed);
        fam.seen = tick;
        let Received {
            labels,
            store,
            scratch,
            seen: _,
        } = fam;
        let labels: &[String] = labels;
        // Fills `scratch` with a point's label values; false when an attribute is not one of
        // the family's labels.
        let fill = |scratch: &mut Key, attributes: &[KeyValue]| -> bool {
            scratch.resize_with(labels.len(), String::new);
            scratch.iter_mut().for_each(String::clear);
            for kv in attributes {
                let Some(i) = labels.iter().position(|l| *l == kv.key) else {
                    return false;
                };
                push_value(&mut scratch[i], kv.value.as_ref());
            }
            let n = labels.len();
            scratch[n - 2].push_str(job);
            scratch[n - 1].push_str(instance);
            true
        };
        match (store, data) {
            (Store::Refused(reason), d) => out.refuse(reason, points(d)),
            (Store::Counter(f, series), Data::Sum(s)) => {
                let cumulative =
                    s.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                for p in &s.data_points {
                    let Some(v) = number(p.value) else {
                        out.refuse("bad_value", 1);
                        continue;
                    };
                    if !fill(scratch, &p.attributes) {
                        out.refuse("new_attribute", 1);
                        continue;
                    }
                    if !v.is_finite() || v < 0.0 {
                        out.refuse("bad_value", 1);
                        continue;
                    }
                    match series.get_mut(&scratch[..]) {
                        Some(((c, prev), seen)) if !cumulative => {
                            c.add(v);
                            *prev = v;
                            *seen = tick;
                        }
                        Some(((c, prev), seen)) if v >= *prev => {
                            c.add(v - *prev);
                            *prev = v;
                            *seen = tick;
                        }
                        // New, or the sender restarted: a new series from its new total.
                        _ => start_series(f, series, scratch, v, tick, |c| c.add(v)),
                    }
                    out.accepted += 1;
                }
            }
            (Store::UpDown(f, last), Data::Sum(s)) => {
                let cumulative =
                    s.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                finite_numbers(&s.data_points, scratch, &fill, out, |key, v| {
                    // A delta sender says nothing while the value stays: its series keeps no
                    // state and never expires (a restart from 0 would lose the value).
                    let prev = if cumulative {
                        last.insert(key.clone(), (v, tick)).map_or(0.0, |(p, _)| p)
                    } else {
                        0.0
                    };
                    f.with(key).add(v - prev);
                });
            }
            (Store::Gauge(f), Data::Gauge(g)) => {
                finite_numbers(&g.data_points, scratch, &fill, out, |key, v| {
                    f.with(key).set(v);
                });
            }
            (Store::Gauge(f), Data::Summary(s)) => {
                // The labels are the attributes, then `quantile`, `job` and `instance`.
                let quantile = labels.len() - 3;
                for p in &s.data_points {
                    if !fill(scratch, &p.attributes) {
                        out.refuse("new_attribute", p.quantile_values.len() as u64);
                        continue;
                    }
                    for q in &p.quantile_values {
                        if !q.value.is_finite() {
                            out.refuse("bad_value", 1);
                            continue;
                        }
                        scratch[quantile] = q.quantile.to_string();
                        f.with(&scratch[..]).set(q.value);
                        out.accepted += 1;
                    }
                }
            }
            (Store::Histogram(f, bounds, series), Data::Histogram(h)) => {
                let cumulative =
                    h.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                let values = sonde_core::histogram::bucket_values(bounds);
                let mut batch: Vec<(f64, u64)> = Vec::with_capacity(values.len());
                for p in &h.data_points {
                    if !fill(scratch, &p.attributes) {
                        out.refuse("new_attribute", 1);
                        continue;
                    }
                    if explicit_counts(p, bounds).is_none() {
                        out.refuse("bounds_changed", 1);
                        continue;
                    }
                    let counts = &p.bucket_counts;
                    let sum = p.sum.filter(|s| s.is_finite()).unwrap_or(0.0);
                    let mut record =
                        |h: &Histogram, delta: &mut dyn Iterator<Item = u64>, sum: f64| {
                            batch.clear();
                            batch.extend(values.iter().copied().zip(delta));
                            h.record_counts(&batch, sum);
                        };
                    match series.get_mut(&scratch[..]) {
                        Some(((h, _), seen)) if !cumulative => {
                            record(h, &mut counts.iter().copied(), sum);
                            *seen = tick;
                        }
                        Some(((h, (prev, prev_sum)), seen))
                            if counts.iter().zip(prev.iter()).all(|(n, p)| n >= p) =>
                        {
                            record(
                                h,
                                &mut counts.iter().zip(prev.iter()).map(|(n, p)| n - p),
                                sum - *prev_sum,
                            );
                            prev.clone_from(counts);
                            *prev_sum = sum;
                            *seen = tick;
                        }
                        // New, or the sender restarted: a new series from its new totals.
                        _ => start_series(f, series, scratch, (counts.clone(), sum), tick, |h| {
                            record(h, &mut counts.iter().copied(), sum)
                        }),
                    }
                    out.accepted += 1;
                }
            }
            (Store::Exponential(f, last), Data::ExponentialHistogram(h)) => {
                let cumulative =
                    h.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                for p in &h.data_points {
                    if !fill(scratch, &p.attributes) {
                        out.refuse("new_attribute", 1);
                        continue;
                    }
                    let Some(counts) = exponential_counts(p) else {
                        out.refuse("bad_value", 1);
                        continue;
                    };
                    let sum = p.sum.filter(|s| s.is_finite()).unwrap_or(0.0);
                    let k = &scratch[..];
                    let h = f.with(k);
                    if cumulative {
                        let prev = last.get(k).map(|(prev, _)| prev);
                        let delta = prev.and_then(|(prev, _)| {
                            // A lower scale than last time nests the old buckets in the new.
                            sonde_core::histogram::counts_since_at_scale(&counts, prev, p.scale)
                        });
                        match (prev, delta) {
                            (Some((_, prev_sum)), Some(d)) => h.record_counts(&d, sum - prev_sum),
                            (Some(_), None) => {
                                f.remove(k);
                                f.with(k).record_counts(&counts, sum);
                            }
                            (None, _) => h.record_counts(&counts, sum),
                        }
                        last.insert(scratch.clone(), ((counts, sum), tick));
                    } else {
                        h.record_counts(&counts, sum);
                        // Kept only to expire the series with the others.
                        match last.get_mut(k) {
                            Some((_, seen)) => *seen = tick,
                            None => {
                                last.insert(scratch.clone(), ((Vec::new(), 0.0), tick));
                            }
                        }
                    }
                    out.accepted += 1;
                }
            }
            (_, d) => out.refuse("type_changed", points(d)),
        }
    }

    /// Registers the family of a metric seen for the first time, its label names taken from
    /// the attributes of its points in this request.
    fn register(&self, m: &Metric, data: &Data) -> Received {
        let mut labels: Vec<String> = attribute_keys(data);
        if matches!(data, Data::Summary(_)) {
            labels.push("quantile".into());
        }
        labels.push("job".into());
        labels.push("instance".into());
        let unit = unit(&m.unit);
        let r = &self.registry;
        let name = m.name.clone();
        let description = m.description.clone();
        let store = match data {
            Data::Sum(s) if s.is_monotonic => {
                describe(r.counter_f64(name), description, unit, &labels)
                    .build()
                    .map(|f| Store::Counter(f, BySeries::default()))
            }
            Data::Sum(_) => describe(r.up_down_counter_f64(name), description, unit, &labels)
                .build()
                .map(|f| Store::UpDown(f, BySeries::default())),
            Data::Gauge(_) | Data::Summary(_) => {
                let gauge = describe(r.gauge_f64(name), description, unit, &labels);
                // No state to expire them by: the registry does, a TTL after the last point.
                match self.ttl {
                    Some(ttl) => gauge.idle_timeout(ttl),
                    None => gauge,
                }
                .build()
                .map(Store::Gauge)
            }
            Data::Histogram(h) => {
                let bounds = h
                    .data_points
                    .first()
                    .map(|p| p.explicit_bounds.clone())
                    .unwrap_or_default();
                describe(r.histogram(name), description, unit, &labels)
                    .buckets(bounds.clone())
                    .build()
                    .map(|f| Store::Histogram(f, bounds, BySeries::default()))
            }
            Data::ExponentialHistogram(_) => {
                describe(r.histogram(name), description, unit, &labels)
                    .build()
                    .map(|f| Store::Exponential(f, BySeries::default()))
            }
        };
        Received {
            labels,
            store: store.unwrap_or(Store::Refused("cannot_register")),
            scratch: Key::new(),
            seen: self.tick.load(Relaxed),
        }
    }
}

/// `job` and `instance` from the resource, as Prometheus's OTLP receiver derives them:
/// `service.namespace/service.name` (or `service.name`) and `service.instance.id`.
fn job_and_instance(attrs: &[KeyValue]) -> (String, String) {
    let get = |k: &str| {
        attrs
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| value_string(kv.value.as_ref()))
    };
    let job = match (get("service.namespace"), get("service.name")) {
        (Some(ns), Some(name)) if !ns.is_empty() => format!("{ns}/{name}"),
        (_, Some(name)) => name,
        _ => String::new(),
    };
    (job, get("service.instance.id").unwrap_or_default())
}

fn value_string(v: Option<&AnyValue>) -> String {
    let mut s = String::new();
    push_value(&mut s, v);
    s
}

/// Appends an attribute value as a label value (strings, numbers and booleans; others empty).
fn push_value(out: &mut String, v: Option<&AnyValue>) {
    use std::fmt::Write as _;
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => out.push_str(s),
        Some(any_value::Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(any_value::Value::DoubleValue(d)) => {
            let _ = write!(out, "{d}");
        }
        Some(any_value::Value::BoolValue(b)) => {
            let _ = write!(out, "{b}");
        }
        _ => {}
    }
}

/// The attributes of each point of `data`.
fn point_attributes(data: &Data) -> Box<dyn Iterator<Item = &[KeyValue]> + '_> {
    match data {
        Data::Sum(s) => Box::new(s.data_points.iter().map(|p| p.attributes.as_slice())),
        Data::Gauge(g) => Box::new(g.data_points.iter().map(|p| p.attributes.as_slice())),
        Data::Histogram(h) => Box::new(h.data_points.iter().map(|p| p.attributes.as_slice())),
        Data::ExponentialHistogram(h) => {
            Box::new(h.data_points.iter().map(|p| p.attributes.as_slice()))
        }
        Data::Summary(s) => Box::new(s.data_points.iter().map(|p| p.attributes.as_slice())),
    }
}

/// The attribute keys of every point of `data`, sorted and deduplicated.
fn attribute_keys(data: &Data) -> Vec<String> {
    let mut keys: Vec<String> = point_attributes(data)
        .flatten()
        .map(|kv| kv.key.clone())
        .collect();
    keys.retain(|k| k != "job" && k != "instance" && k != "quantile");
    keys.sort();
    keys.dedup();
    keys
}

/// The number of points of `data`.
pub(crate) fn points(d: &Data) -> u64 {
    point_attributes(d).count() as u64
}

/// `builder` with a received metric's `description`, `unit` and `labels`.
fn describe<'r, M: Instrument>(
    builder: FamilyBuilder<'r, M>,
    description: String,
    unit: Unit,
    labels: &[String],
) -> FamilyBuilder<'r, M> {
    builder
        .description(description)
        .unit(unit)
        .labels(labels.to_vec())
}

/// Records each of `points` that has a finite value, with `record`, its label values filled in
/// `scratch` by `fill`; refuses into `out` a point with an attribute that is not a label
/// (`new_attribute`) or with no finite value (`bad_value`).
fn finite_numbers(
    points: &[NumberDataPoint],
    scratch: &mut Key,
    fill: &impl Fn(&mut Key, &[KeyValue]) -> bool,
    out: &mut Outcome,
    mut record: impl FnMut(&Key, f64),
) {
    for p in points {
        if !fill(scratch, &p.attributes) {
            out.refuse("new_attribute", 1);
            continue;
        }
        let Some(v) = number(p.value).filter(|v| v.is_finite()) else {
            out.refuse("bad_value", 1);
            continue;
        };
        record(scratch, v);
        out.accepted += 1;
    }
}

/// Starts the series `key` of `family` afresh from a cumulative point's whole value: a series
/// not seen before, or one whose sender restarted (its totals went down), whose old series is
/// dropped. `record` records the point into the new handle; `last` is kept to take the next
/// point's delta from.
fn start_series<M: Instrument, L>(
    family: &Family<M>,
    series: &mut BySeries<(M, L)>,
    key: &Key,
    last: L,
    tick: u32,
    record: impl FnOnce(&M),
) {
    if series.contains_key(key) {
        family.remove(key);
    }
    let handle = family.with(key);
    record(&handle);
    series.insert(key.clone(), ((handle, last), tick));
}

fn number(v: Option<number_data_point::Value>) -> Option<f64> {
    match v? {
        number_data_point::Value::AsDouble(d) => Some(d),
        number_data_point::Value::AsInt(i) => Some(i as f64),
    }
}

fn unit(u: &str) -> Unit {
    match u {
        "s" => Unit::Seconds,
        "ms" => Unit::Milliseconds,
        "By" => Unit::Bytes,
        "1" => Unit::Ratio,
        _ => Unit::None,
    }
}

/// The point's bucket counts when its bounds are `bounds`.
fn explicit_counts(p: &HistogramDataPoint, bounds: &[f64]) -> Option<Vec<u64>> {
    (p.explicit_bounds == bounds && p.bucket_counts.len() == bounds.len() + 1)
        .then(|| p.bucket_counts.clone())
}

/// `(value, count)` of an exponential point: each bucket at its geometric middle, zeros at 0.
fn exponential_counts(p: &ExponentialHistogramDataPoint) -> Option<Vec<(f64, u64)>> {
    if !(-10..=20).contains(&p.scale) {
        return None;
    }
    let middle = |index: i64| sonde_core::histogram::exponential_middle(p.scale, index);
    let mut out = Vec::new();
    if p.zero_count > 0 {
        out.push((0.0, p.zero_count));
    }
    if let Some(b) = &p.positive {
        for (i, &n) in b.bucket_counts.iter().enumerate() {
            if n > 0 {
                out.push((middle(i64::from(b.offset) + i as i64), n));
            }
        }
    }
    if let Some(b) = &p.negative {
        for (i, &n) in b.bucket_counts.iter().enumerate() {
            if n > 0 {
                out.push((-middle(i64::from(b.offset) + i as i64), n));
            }
        }
    }
    out.iter().all(|(v, _)| v.is_finite()).then_some(out)
}

/// What the fuzz target (`crates/sonde-otlp-receiver/fuzz`) drives: the recorder fed with
/// request bodies. Compiled under cargo-fuzz (`--cfg fuzzing`), and in this crate's tests,
/// which keep it working.
#[cfg(any(fuzzing, test))]
pub mod fuzzing {
    use super::*;
    use prost::Message;

    /// A receiver's recording half.
    pub struct Recording(Recorder);

    impl Recording {
        /// Records into `registry`, expiring series idle for `ttl`.
        pub fn new(registry: Registry, ttl: Option<Duration>) -> Recording {
            Recording(Recorder::new(
                registry,
                crate::DEFAULT_TARGET_INFO_ATTRIBUTES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                ttl,
            ))
        }

        /// Decodes a request body as the receiver does and records it.
        pub fn record(&self, body: &[u8]) -> Option<Outcome> {
            let request = ExportMetricsServiceRequest::decode(body).ok()?;
            Some(self.0.record(&request))
        }

        /// Runs expiry as if `now` had come.
        pub fn maintain(&self, now: Instant) {
            self.0.maintain(now)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        metric::Data, number_data_point::Value,
    };
    use prost::Message;
    use sonde_core::Registry;

    use super::fuzzing::Recording;

    #[test]
    fn the_fuzz_hook_records_a_body_and_expires_it() {
        let registry = Registry::new();
        let recording = Recording::new(registry.clone(), Some(Duration::from_secs(60)));
        let point = NumberDataPoint {
            value: Some(Value::AsDouble(3.0)),
            ..Default::default()
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "jobs".into(),
                        data: Some(Data::Sum(Sum {
                            data_points: vec![point],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let outcome = recording.record(&request.encode_to_vec()).expect("decodes");
        assert_eq!(outcome.accepted, 1);
        assert!(registry.snapshot().family("jobs").is_some());
        assert!(recording.record(b"\xff\xff").is_none(), "not a request");
        // Two TTLs of silence: the name is given back.
        let later = Instant::now() + Duration::from_secs(121);
        for step in 0..5 {
            recording.maintain(later + Duration::from_secs(31 * step));
        }
        assert!(registry.snapshot().family("jobs").is_none());
    }
}
