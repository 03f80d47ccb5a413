//! `/report`: the performance report a team reads first when it asks where the time goes, as
//! JSON or Markdown, since start and over sliding windows (last minute, last five minutes).
//!
//! The windows come from a ring of delta reads closed on a fixed cadence
//! ([`PrometheusBuilder::report_resolution`](crate::PrometheusBuilder::report_resolution)): a
//! window's changes are the sum of the intervals of its span, so percentiles and rates move
//! with the traffic instead of settling over the process lifetime.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sonde_core::{
    FamilySnapshot, HistogramPoint, Kind, Number, Point, Reader, Registry, SeriesSnapshot,
    Snapshot, Temporality,
};

/// The version of the report's JSON layout, `schema_version` in the body. Fields are only
/// added within a version; a field renamed, moved or removed raises it.
pub const REPORT_SCHEMA_VERSION: u64 = 2;

/// The histogram family per-route figures come from (the OpenTelemetry HTTP server convention).
const HTTP_SERVER_DURATION: &str = "http.server.request.duration";

/// Ring entries kept at most, whatever the windows and resolution asked for: past it the
/// resolution is coarsened (longest window / this), so the entry count stays bounded.
pub(crate) const MAX_RING_ENTRIES: usize = 720;

fn labels(f: &FamilySnapshot, s: &SeriesSnapshot) -> Value {
    Value::Object(
        f.labels(s)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::from(v)))
            .collect::<Map<_, _>>(),
    )
}

fn finite(v: Option<f64>) -> Value {
    v.filter(|v| v.is_finite())
        .map(Value::from)
        .unwrap_or(Value::Null)
}

fn label<'a>(pairs: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| *n == key).map(|(_, v)| *v)
}

/// The figures of one histogram series (cumulative or the change over a window).
fn histogram_json(f: &FamilySnapshot, s: &SeriesSnapshot, h: &HistogramPoint, rate: f64) -> Value {
    json!({
        "metric": f.meta.name(),
        "unit": f.meta.unit().ucum(),
        "labels": labels(f, s),
        "count": h.count(),
        "rate_per_second": rate,
        "sum": h.sum(),
        "mean": h.sum() / h.count() as f64,
        "min": finite(h.min()),
        "max": finite(h.max()),
        "p50": finite(h.quantile(0.5)),
        "p95": finite(h.quantile(0.95)),
        "p99": finite(h.quantile(0.99)),
    })
}

/// Adds a `cache.requests{cache.name, cache.result}` series to the hits and misses per cache.
fn add_cache(
    f: &FamilySnapshot,
    s: &SeriesSnapshot,
    n: f64,
    caches: &mut BTreeMap<String, (f64, f64)>,
) {
    if f.meta.name() != "cache.requests" {
        return;
    }
    let pairs = f.labels(s);
    if let (Some(cache), Some(result)) =
        (label(&pairs, "cache.name"), label(&pairs, "cache.result"))
    {
        let e = caches.entry(cache.to_owned()).or_default();
        match result {
            "hit" => e.0 += n,
            "miss" => e.1 += n,
            _ => {}
        }
    }
}

fn caches_json(caches: BTreeMap<String, (f64, f64)>) -> Vec<Value> {
    caches
        .into_iter()
        .map(|(cache, (hits, misses))| {
            let total = hits + misses;
            json!({
                "cache": cache,
                "hits": hits,
                "misses": misses,
                "hit_ratio": if total > 0.0 { Value::from(hits / total) } else { Value::Null },
            })
        })
        .collect()
}

/// Where the time goes: duration histograms by the total time they hold, others after.
fn by_time_held(histograms: &mut [Value]) {
    histograms.sort_by(|a, b| {
        let key = |v: &Value| {
            if v["unit"] == "s" {
                v["sum"].as_f64().unwrap_or(0.0)
            } else {
                -1.0
            }
        };
        key(b).total_cmp(&key(a))
    });
}

/// Builds the report from a cumulative snapshot and the deltas since the previous report
/// (`interval` seconds ago): per series count, rate, mean, min, max and p50/p95/p99, histograms
/// sorted by the total time they account for; counters with rates; gauges; cache hit ratios
/// from `cache.requests{cache.name, cache.result}`. Everything since each series started; see
/// [`report_with_windows`] for the sliding windows `/report` serves.
pub fn report(cumulative: &Snapshot, deltas: &Snapshot, interval: f64, uptime: f64) -> Value {
    let mut rates: BTreeMap<u64, f64> = BTreeMap::new();
    for f in &deltas.families {
        for s in &f.series {
            let n = match &s.point {
                Point::Histogram(h) => h.count() as f64,
                Point::Counter(n) => n.as_f64(),
                _ => continue,
            };
            rates.insert(s.id(), if interval > 0.0 { n / interval } else { 0.0 });
        }
    }
    let mut histograms = Vec::new();
    let mut counters = Vec::new();
    let mut gauges = Vec::new();
    let mut caches: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for f in &cumulative.families {
        let meta = &f.meta;
        for s in &f.series {
            let rate = rates.get(&s.id()).copied().unwrap_or(0.0);
            match &s.point {
                Point::Histogram(h) => {
                    if h.count() == 0 {
                        continue;
                    }
                    histograms.push(histogram_json(f, s, h, rate));
                }
                Point::Counter(n) => {
                    add_cache(f, s, n.as_f64(), &mut caches);
                    counters.push(json!({
                        "metric": meta.name(),
                        "labels": labels(f, s),
                        "total": n.as_f64(),
                        "rate_per_second": rate,
                    }));
                }
                Point::Gauge(n) | Point::UpDownCounter(n) => gauges.push(json!({
                    "metric": meta.name(),
                    "kind": if meta.kind() == Kind::Gauge { "gauge" } else { "up_down_counter" },
                    "labels": labels(f, s),
                    "value": finite(Some(n.as_f64())),
                })),
            }
        }
    }
    by_time_held(&mut histograms);
    json!({
        "uptime_seconds": uptime,
        "interval_seconds": interval,
        "histograms": histograms,
        "counters": counters,
        "gauges": gauges,
        "caches": caches_json(caches),
    })
}

/// Judges objectives over the report's windows: its answer becomes the report's `objectives`
/// key (see [`PrometheusBuilder::judge`](crate::PrometheusBuilder::judge)).
///
/// sonde-prometheus knows no objective: an implementation (`sonde-objectives` has one for its
/// `objectives.toml`, behind its `report` feature) reads the windows' changes and answers a
/// JSON array with one object per objective, in the layout `ENDPOINTS.md` documents (section
/// "Objectives"), which the Markdown rendering reads:
///
/// ```
/// use std::sync::Arc;
/// use serde_json::{Value, json};
/// use sonde_prometheus::{Judge, Window};
///
/// /// Met while the last window saw any request at all.
/// struct Busy;
/// impl Judge for Busy {
///     fn judge(&self, windows: &[Window]) -> Value {
///         let Some(w) = windows.first() else { return json!([]) };
///         let seen = w.changes.family("http.server.request.duration").is_some();
///         json!([{ "name": "busy", "kind": "custom", "window": w.name,
///                  "verdict": if seen { "met" } else { "no_data" } }])
///     }
/// }
/// let server = sonde_prometheus::PrometheusBuilder::new()
///     .registry(sonde_core::Registry::new())
///     .bind("127.0.0.1:0".parse().unwrap())
///     .judge(Arc::new(Busy))
///     .install()?;
/// sonde_core::Component::shutdown(&server, std::time::Duration::from_secs(5))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Judge: Send + Sync {
    /// The verdicts over `windows` (the sliding windows, shortest first, then `since_start`),
    /// as a JSON array. Called on the server's blocking pool for each `/report` request; a
    /// panic is caught and reported in the body instead of the verdicts.
    fn judge(&self, windows: &[Window]) -> Value;
}

/// Puts `judge`'s verdicts under the report's `objectives` key; a panicking judge leaves
/// `{"error": ...}` there instead (the rest of the report is still worth serving).
pub(crate) fn add_verdicts(report: &mut Value, judge: &dyn Judge, windows: &[Window]) {
    let verdicts = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| judge.judge(windows)))
        .unwrap_or_else(|_| {
            json!({ "error": "judging the objectives panicked; this is a bug in the Judge implementation" })
        });
    if let Some(o) = report.as_object_mut() {
        o.insert("objectives".into(), verdicts);
    }
}

/// One window of the report: what changed over its span.
#[derive(Debug, Clone)]
pub struct Window {
    /// Its name in the report: `1m`, `5m` (from the span), or `since_start`.
    pub name: String,
    /// The span asked for; `None` for since start.
    pub span: Option<Duration>,
    /// The time the changes cover: the span to within the ring's resolution, less while the
    /// server has run for less than the span.
    pub covered: Duration,
    /// Counters and histograms: the changes over `covered` (for since start, the totals since
    /// each series started).
    pub changes: Snapshot,
}

impl Window {
    /// Whether the window covers its whole span (the server has run long enough).
    fn complete(&self, resolution: Duration) -> bool {
        match self.span {
            Some(span) => self.covered + resolution / 2 >= span,
            None => true,
        }
    }
}

/// The name of a window of `span`: `1m`, `5m`, `1h`, `30s`, `500ms`.
pub(crate) fn window_name(span: Duration) -> String {
    let ms = span.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = span.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Per route of `http.server.request.duration`: requests, errors and the merged latencies.
#[derive(Default)]
struct Route {
    requests: u64,
    errors: u64,
    latency: Option<HistogramPoint>,
}

/// A request failed when it carries an `error.type` (the instrumentation sets it for 5xx and
/// for requests that never got a response) or, where no `error.type` is recorded, a 5xx status.
fn is_error(pairs: &[(&str, &str)]) -> bool {
    if label(pairs, "error.type").is_some_and(|e| !e.is_empty()) {
        return true;
    }
    label(pairs, "http.response.status_code")
        .and_then(|c| c.parse::<u16>().ok())
        .is_some_and(|c| c >= 500)
}

/// The figures of one window: histograms and counters that changed in it, per route request
/// counts, error ratios and latencies, and cache hit ratios.
fn window_json(w: &Window, resolution: Duration, uptime: f64) -> Value {
    let now = w.changes.time_unix_nanos;
    // Since start, a series' rate is over its own life; over a window, over the window.
    let seconds = |s: &SeriesSnapshot| match w.span {
        Some(_) => w.covered.as_secs_f64(),
        None => (now.saturating_sub(s.start_unix_nanos) as f64 / 1e9).min(uptime.max(1e-3)),
    };
    let rate = |n: f64, s: &SeriesSnapshot| {
        let secs = seconds(s);
        if secs > 0.0 { n / secs } else { 0.0 }
    };
    let mut histograms = Vec::new();
    let mut counters = Vec::new();
    let mut caches: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut routes: BTreeMap<String, Route> = BTreeMap::new();
    let mut route_unit = "s".to_owned();
    let mut faas = Faas::default();
    for f in &w.changes.families {
        for s in &f.series {
            match &s.point {
                Point::Histogram(h) if h.count() > 0 => {
                    histograms.push(histogram_json(f, s, h, rate(h.count() as f64, s)));
                    if f.meta.name() == HTTP_SERVER_DURATION {
                        route_unit = f.meta.unit().ucum().to_owned();
                        let pairs = f.labels(s);
                        let route = label(&pairs, "http.route").unwrap_or_default();
                        let r = routes.entry(route.to_owned()).or_default();
                        r.requests += h.count();
                        if is_error(&pairs) {
                            r.errors += h.count();
                        }
                        r.latency = match r.latency.take() {
                            None => Some(h.clone()),
                            // Series of one family share a layout, so merging only fails on
                            // a bug; the route then shows no percentiles rather than wrong ones.
                            Some(l) => l.merge(h).ok(),
                        };
                    }
                }
                Point::Counter(n) if n.as_f64() > 0.0 => {
                    let n = n.as_f64();
                    add_cache(f, s, n, &mut caches);
                    faas.add(f.meta.name(), n);
                    counters.push(json!({
                        "metric": f.meta.name(),
                        "labels": labels(f, s),
                        "increase": n,
                        "rate_per_second": rate(n, s),
                    }));
                }
                _ => {}
            }
        }
    }
    by_time_held(&mut histograms);
    let secs = match w.span {
        Some(_) => w.covered.as_secs_f64(),
        None => uptime,
    };
    let routes: Vec<Value> = routes
        .into_iter()
        .map(|(route, r)| {
            let q = |p: f64| finite(r.latency.as_ref().and_then(|l| l.quantile(p)));
            json!({
                "route": route,
                "requests": r.requests,
                "rate_per_second": if secs > 0.0 { r.requests as f64 / secs } else { 0.0 },
                "errors": r.errors,
                "error_ratio": r.errors as f64 / r.requests.max(1) as f64,
                "unit": route_unit,
                "p50": q(0.5),
                "p95": q(0.95),
                "p99": q(0.99),
            })
        })
        .collect();
    json!({
        "name": w.name,
        "window_seconds": w.span.map(|s| s.as_secs_f64()),
        "covered_seconds": secs,
        "complete": w.complete(resolution),
        "routes": routes,
        "histograms": histograms,
        "counters": counters,
        "caches": caches_json(caches),
        "faas": faas.json(),
    })
}

/// Serverless invocations of a window (`faas.*` counters), with their estimated cost when the
/// service records `faas.invocation.cost`.
#[derive(Default)]
struct Faas {
    invocations: f64,
    cold_starts: f64,
    errors: f64,
    timeouts: f64,
    cost: Option<f64>,
}

impl Faas {
    fn add(&mut self, metric: &str, n: f64) {
        match metric {
            "faas.invocations" => self.invocations += n,
            "faas.coldstarts" => self.cold_starts += n,
            "faas.errors" => self.errors += n,
            "faas.timeouts" => self.timeouts += n,
            "faas.invocation.cost" => *self.cost.get_or_insert(0.0) += n,
            _ => {}
        }
    }

    /// `null` without invocations.
    fn json(&self) -> Value {
        if self.invocations <= 0.0 {
            return Value::Null;
        }
        let per = |x: f64| x / self.invocations;
        json!({
            "invocations": self.invocations,
            "cold_starts": self.cold_starts,
            "cold_start_ratio": per(self.cold_starts),
            "errors": self.errors,
            "timeouts": self.timeouts,
            "cost_usd": finite(self.cost),
            "cost_per_invocation_usd": finite(self.cost.map(per)),
            "cost_per_million_invocations_usd": finite(self.cost.map(|c| per(c) * 1e6)),
        })
    }
}

/// [`report`] plus `schema_version` and the `windows` (in the order given, usually the
/// sliding windows shortest first, then `since_start`); `resolution` is the ring's cadence,
/// which decides whether a window counts as complete. The layout is documented in the README
/// (section "/report").
pub fn report_with_windows(
    cumulative: &Snapshot,
    deltas: &Snapshot,
    interval: f64,
    uptime: f64,
    windows: &[Window],
    resolution: Duration,
) -> Value {
    let mut body = report(cumulative, deltas, interval, uptime);
    if let Some(o) = body.as_object_mut() {
        o.insert("schema_version".into(), Value::from(REPORT_SCHEMA_VERSION));
        o.insert(
            "resolution_seconds".into(),
            Value::from(resolution.as_secs_f64()),
        );
        o.insert(
            "windows".into(),
            Value::Array(
                windows
                    .iter()
                    .map(|w| window_json(w, resolution, uptime))
                    .collect(),
            ),
        );
    }
    body
}

/// What changed in one interval of the ring: only the counters and histograms that moved.
struct Entry {
    /// Where the interval starts; it ends where the next one starts (or now, for the open one).
    start: Instant,
    changes: HashMap<u64, Point>,
    bytes: usize,
}

impl Entry {
    fn new(start: Instant) -> Entry {
        Entry {
            start,
            changes: HashMap::new(),
            bytes: 0,
        }
    }
}

/// Heap bytes a change takes in an entry, map slot included.
fn change_bytes(p: &Point) -> usize {
    64 + p.histogram().map_or(0, HistogramPoint::heap_bytes)
}

/// Adds `change` to the change of the same series in `into`.
fn add_change(into: &mut HashMap<u64, Point>, id: u64, change: &Point) {
    let sum = match (into.get(&id), change) {
        (None, p) => p.clone(),
        (Some(Point::Histogram(a)), Point::Histogram(b)) => match a.merge(b) {
            Ok(h) => Point::Histogram(h),
            // One series keeps one layout; should it not, the newer change wins.
            Err(_) => change.clone(),
        },
        (Some(Point::Counter(a)), Point::Counter(b)) => {
            Point::Counter(Number::F64(a.as_f64() + b.as_f64()))
        }
        (Some(_), p) => p.clone(),
    };
    into.insert(id, sum);
}

/// The changes of the last intervals, one entry per `resolution`, read by a delta reader of
/// its own, for the sliding windows.
///
/// Memory is bounded three ways: at most `longest window / resolution + 2` entries (32 with
/// the defaults, 1 and 5 minutes at 10 s; never more than [`MAX_RING_ENTRIES`]); an entry
/// holds only the series that changed in its interval, so at most every counter and histogram
/// series, whose number the registry's series limits and memory budget bound; and the entries
/// together stay under a byte limit
/// ([`report_memory_limit`](crate::PrometheusBuilder::report_memory_limit)): past it the
/// oldest go first and the longest window says it covers less (`complete: false`). The delta
/// reader itself remembers one cumulative point per series (what it read last).
pub(crate) struct Ring {
    reader: Option<Reader>,
    resolution: Duration,
    spans: Vec<Duration>,
    capacity: usize,
    max_bytes: usize,
    /// Changes since the last tick (a report folds its read in here).
    open: Entry,
    /// Closed intervals, oldest first.
    closed: VecDeque<Entry>,
    bytes: usize,
}

impl Ring {
    /// A ring for these window spans (zero spans dropped, duplicates merged, shortest first),
    /// starting at `now`. With no span it reads nothing.
    pub(crate) fn new(
        registry: &Registry,
        resolution: Duration,
        spans: &[Duration],
        max_bytes: usize,
        now: Instant,
    ) -> Ring {
        let mut spans: Vec<Duration> = spans.iter().copied().filter(|s| !s.is_zero()).collect();
        spans.sort();
        spans.dedup();
        let longest = spans.last().copied().unwrap_or_default();
        let mut resolution = resolution.max(Duration::from_millis(10));
        if longest.as_secs_f64() / resolution.as_secs_f64() > (MAX_RING_ENTRIES - 2) as f64 {
            resolution = longest / (MAX_RING_ENTRIES - 2) as u32;
        }
        let capacity = (longest.as_secs_f64() / resolution.as_secs_f64()).ceil() as usize + 2;
        let reader = (!spans.is_empty()).then(|| {
            let mut reader = registry.reader(Temporality::Delta);
            // The first read holds every series' whole past, which no window covers.
            reader.collect();
            reader
        });
        Ring {
            reader,
            resolution,
            spans,
            capacity: capacity.min(MAX_RING_ENTRIES),
            max_bytes,
            open: Entry::new(now),
            closed: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The cadence of the entries (possibly coarsened, see [`MAX_RING_ENTRIES`]).
    pub(crate) fn resolution(&self) -> Duration {
        self.resolution
    }

    /// Whether there are sliding windows at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Reads what changed since the last read into the open entry.
    fn fold(&mut self) {
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        let read = reader.collect();
        for f in &read.families {
            for s in &f.series {
                let moved = match &s.point {
                    Point::Histogram(h) => h.count() > 0,
                    Point::Counter(n) => n.as_f64() > 0.0,
                    _ => false,
                };
                if moved {
                    let before = self.open.changes.get(&s.id()).map_or(0, change_bytes);
                    add_change(&mut self.open.changes, s.id(), &s.point);
                    let after = self.open.changes.get(&s.id()).map_or(0, change_bytes);
                    self.open.bytes = (self.open.bytes + after).saturating_sub(before);
                }
            }
        }
    }

    /// Closes the interval that ends at `now` (called every resolution).
    pub(crate) fn tick(&mut self, now: Instant) {
        if self.reader.is_none() {
            return;
        }
        self.fold();
        let entry = std::mem::replace(&mut self.open, Entry::new(now));
        self.bytes += entry.bytes;
        self.closed.push_back(entry);
        let longest = self.spans.last().copied().unwrap_or_default();
        let mut trimmed = false;
        while let Some(oldest) = self.closed.front() {
            let too_old = now.saturating_duration_since(oldest.start) > longest + self.resolution;
            let over_bytes = self.bytes > self.max_bytes;
            trimmed |= over_bytes && !too_old;
            if !(too_old || over_bytes || self.closed.len() > self.capacity) {
                break;
            }
            if let Some(e) = self.closed.pop_front() {
                self.bytes -= e.bytes;
            }
        }
        if trimmed {
            static TRIMMED: sonde_core::diag::RateLimit =
                sonde_core::diag::RateLimit::new(Duration::from_secs(3600));
            if TRIMMED.hit().is_some() {
                sonde_core::diag::warn(format_args!(
                    "/report: the changes over the last {} need more than {} bytes; the longest window covers less (see covered_seconds). Raise PrometheusBuilder::report_memory_limit or shorten the windows",
                    window_name(longest),
                    self.max_bytes
                ));
            }
        }
    }

    /// Bytes the entries hold.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes + self.open.bytes
    }

    /// The sliding windows at `now`, with the series (and labels) of `current`, a cumulative
    /// read taken at `now`; then `since_start` (`current` itself, covering `uptime`).
    pub(crate) fn windows(
        &mut self,
        current: &Snapshot,
        now: Instant,
        uptime: Duration,
    ) -> Vec<Window> {
        let mut out = Vec::with_capacity(self.spans.len() + 1);
        if self.reader.is_some() {
            self.fold();
            // Windows nest: each adds older entries to the changes of the one before.
            let mut sum = self.open.changes.clone();
            let mut start = self.open.start;
            let mut taken = 0; // closed entries in `sum`, newest first
            for &span in &self.spans {
                // Take older entries while that brings the covered time closer to the span.
                while let Some(e) = self.closed.iter().rev().nth(taken) {
                    let now_off = now.saturating_duration_since(start).abs_diff(span);
                    let with = now.saturating_duration_since(e.start).abs_diff(span);
                    if with >= now_off {
                        break;
                    }
                    for (id, p) in &e.changes {
                        add_change(&mut sum, *id, p);
                    }
                    start = e.start;
                    taken += 1;
                }
                out.push(Window {
                    name: window_name(span),
                    span: Some(span),
                    covered: now.saturating_duration_since(start),
                    changes: with_changes(current, &sum),
                });
            }
        }
        let mut since = current.clone();
        since
            .families
            .retain(|f| matches!(f.meta.kind(), Kind::Counter | Kind::Histogram));
        out.push(Window {
            name: "since_start".into(),
            span: None,
            covered: uptime,
            changes: since,
        });
        out
    }
}

/// `current`'s counter and histogram series that changed, with their changes as points.
fn with_changes(current: &Snapshot, changes: &HashMap<u64, Point>) -> Snapshot {
    let mut out = Snapshot {
        time_unix_nanos: current.time_unix_nanos,
        temporality: Temporality::Delta,
        families: Vec::new(),
        cumulative_kinds: Vec::new(),
    };
    for f in &current.families {
        if !matches!(f.meta.kind(), Kind::Counter | Kind::Histogram) {
            continue;
        }
        let series: Vec<SeriesSnapshot> = f
            .series
            .iter()
            .filter_map(|s| {
                let mut s = s.clone();
                s.point = changes.get(&s.id())?.clone();
                Some(s)
            })
            .collect();
        if !series.is_empty() {
            out.families.push(FamilySnapshot {
                meta: f.meta.clone(),
                series,
            });
        }
    }
    out
}

/// Markdown rendering of a report from [`report_with_windows`]: per window, tables of routes,
/// histograms, caches and counters, for pasting into a review. Long tables keep their first
/// [`MARKDOWN_ROWS`] rows (the JSON has them all).
pub fn report_markdown(report: &Value) -> String {
    let mut out = String::new();
    let uptime = report["uptime_seconds"].as_f64().unwrap_or(0.0);
    let _ = write!(
        out,
        "# Performance report\n\nUptime {}. Each window shows what happened in it; `since start` covers each series' whole life.\n\n",
        human_seconds(uptime)
    );
    objectives_md(&mut out, &report["objectives"]);
    let Some(windows) = report["windows"].as_array() else {
        return out;
    };
    for w in windows {
        let name = w["name"].as_str().unwrap_or_default();
        let covered = w["covered_seconds"].as_f64().unwrap_or(0.0);
        let title = if name == "since_start" {
            "Since start".to_owned()
        } else {
            format!("Last {name}")
        };
        let _ = write!(out, "## {title}\n\n");
        if w["complete"] == false {
            let _ = write!(
                out,
                "Covers {} so far (the server has run for less than the window).\n\n",
                human_seconds(covered)
            );
        } else if name != "since_start" {
            let _ = write!(out, "Covers {}.\n\n", human_seconds(covered));
        }
        let empty = |k: &str| w[k].as_array().is_none_or(|a| a.is_empty());
        if empty("routes") && empty("histograms") && empty("counters") {
            let _ = write!(out, "No activity in this window.\n\n");
            continue;
        }
        table(
            &mut out,
            "HTTP routes (`http.server.request.duration`)",
            &[
                "route",
                "requests",
                "req/s",
                "errors",
                "error ratio",
                "p50",
                "p95",
                "p99",
            ],
            w["routes"].as_array(),
            |r| {
                let unit = r["unit"].as_str().unwrap_or_default();
                let route = r["route"].as_str().unwrap_or_default();
                let mut cells = vec![if route.is_empty() {
                    "(no route)".into()
                } else {
                    escape(route)
                }];
                cells.extend(numbers(r, &["requests", "rate_per_second", "errors"], ""));
                cells.push(percent(&r["error_ratio"]));
                cells.extend(numbers(r, &["p50", "p95", "p99"], unit));
                cells
            },
        );
        table(
            &mut out,
            "Histograms (by total time held)",
            &[
                "metric", "labels", "count", "rate/s", "mean", "p50", "p95", "p99", "max",
            ],
            w["histograms"].as_array(),
            |h| {
                let unit = h["unit"].as_str().unwrap_or_default();
                let mut cells = series_cells(h);
                cells.extend(numbers(h, &["count", "rate_per_second"], ""));
                cells.extend(numbers(h, &["mean", "p50", "p95", "p99", "max"], unit));
                cells
            },
        );
        if let Some(f) = w["faas"].as_object() {
            let _ = write!(
                out,
                "**Serverless**: {} invocations, {} cold starts ({}), {} errors, {} timeouts",
                number(&f["invocations"], ""),
                number(&f["cold_starts"], ""),
                percent(&f["cold_start_ratio"]),
                number(&f["errors"], ""),
                number(&f["timeouts"], ""),
            );
            if let (Some(total), Some(million)) = (
                f["cost_usd"].as_f64(),
                f["cost_per_million_invocations_usd"].as_f64(),
            ) {
                let _ = write!(
                    out,
                    "; estimated cost ${total:.6} (${million:.2} per million invocations)"
                );
            }
            out.push_str(".\n\n");
        }
        table(
            &mut out,
            "Caches",
            &["cache", "hits", "misses", "hit ratio"],
            w["caches"].as_array(),
            |c| {
                let mut cells = vec![text(&c["cache"])];
                cells.extend(numbers(c, &["hits", "misses"], ""));
                cells.push(percent(&c["hit_ratio"]));
                cells
            },
        );
        table(
            &mut out,
            "Counters",
            &["metric", "labels", "increase", "rate/s"],
            w["counters"].as_array(),
            |c| {
                let mut cells = series_cells(c);
                cells.extend(numbers(c, &["increase", "rate_per_second"], ""));
                cells
            },
        );
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// The `objectives` section: one row per objective, or per group of a grouped objective.
fn objectives_md(out: &mut String, objectives: &Value) {
    if let Some(e) = objectives["error"].as_str() {
        let _ = write!(out, "## Objectives\n\n{}\n\n", escape(e));
        return;
    }
    let Some(list) = objectives.as_array().filter(|l| !l.is_empty()) else {
        return;
    };
    let mut rows = Vec::new();
    for o in list {
        match o["groups"].as_array().filter(|g| !g.is_empty()) {
            // A grouped objective: one row per group, named after it.
            Some(groups) if o["grouped"] == true => {
                for g in groups {
                    let mut row = g.clone();
                    if let Some(r) = row.as_object_mut() {
                        let name = format!(
                            "{} ({})",
                            o["name"].as_str().unwrap_or_default(),
                            labels_text(&g["labels"])
                        );
                        r.insert("name".into(), Value::from(name));
                        for k in ["kind", "unit", "target", "window"] {
                            r.entry(k).or_insert_with(|| o[k].clone());
                        }
                    }
                    rows.push(row);
                }
            }
            _ => rows.push(o.clone()),
        }
    }
    out.push_str("## Objectives\n\nEach objective judged over the window named (grouped objectives: one row per group).\n\n");
    table(
        out,
        "Verdicts",
        &[
            "objective",
            "window",
            "current value",
            "target",
            "verdict",
            "error budget remaining",
        ],
        Some(&rows),
        |r| {
            let ratio = r["kind"] == "ratio";
            let unit = r["unit"].as_str().unwrap_or_default();
            let figure = |v: &Value| if ratio { percent(v) } else { number(v, unit) };
            let target = escape(&if ratio {
                format!("≥ {}", percent(&r["target"]))
            } else {
                format!("< {}", number(&r["target"], unit))
            });
            vec![
                text(&r["name"]),
                text(&r["window"]),
                figure(&r["value"]),
                target,
                match r["verdict"].as_str().unwrap_or_default() {
                    "violated" => "**violated**".to_owned(),
                    "no_data" => "no data".to_owned(),
                    v => escape(v),
                },
                percent(&r["error_budget_remaining"]),
            ]
        },
    );
}

/// `k=v, k=v` (empty values shown as `""`), unescaped.
fn labels_text(labels: &Value) -> String {
    match labels.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some("") | None => format!("{k}=\"\""),
                Some(v) => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => "all".to_owned(),
    }
}

/// Rows per Markdown table at most.
pub const MARKDOWN_ROWS: usize = 25;

fn table(
    out: &mut String,
    title: &str,
    header: &[&str],
    rows: Option<&Vec<Value>>,
    row: impl Fn(&Value) -> Vec<String>,
) {
    let Some(rows) = rows.filter(|r| !r.is_empty()) else {
        return;
    };
    let _ = write!(out, "### {title}\n\n| {} |\n|", header.join(" | "));
    for (i, _) in header.iter().enumerate() {
        // Text columns left, figures right.
        out.push_str(if i == 0 || header[i] == "labels" {
            "---|"
        } else {
            "---:|"
        });
    }
    out.push('\n');
    for r in rows.iter().take(MARKDOWN_ROWS) {
        let _ = writeln!(out, "| {} |", row(r).join(" | "));
    }
    if rows.len() > MARKDOWN_ROWS {
        let _ = write!(
            out,
            "\n{} more rows in the JSON report (`/report`).\n",
            rows.len() - MARKDOWN_ROWS
        );
    }
    out.push('\n');
}

/// Escapes what would break a table cell or turn into formatting.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '|' | '`' | '*' | '_' | '<' | '>' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A text cell: the string escaped (empty for anything else).
fn text(v: &Value) -> String {
    escape(v.as_str().unwrap_or_default())
}

/// The cells of the figures under `keys` in `row`, in `unit`.
fn numbers<'a>(
    row: &'a Value,
    keys: &'a [&str],
    unit: &'a str,
) -> impl Iterator<Item = String> + 'a {
    keys.iter().map(move |k| number(&row[*k], unit))
}

/// The first two cells of a series' row: its metric and its labels.
fn series_cells(series: &Value) -> Vec<String> {
    vec![text(&series["metric"]), labels_md(&series["labels"])]
}

fn labels_md(labels: &Value) -> String {
    match labels.as_object() {
        // Empty values (no `error.type` on a success) say nothing.
        Some(m) if !m.is_empty() => m
            .iter()
            .filter(|(_, v)| v.as_str().is_some_and(|v| !v.is_empty()))
            .map(|(k, v)| escape(&format!("{k}={}", v.as_str().unwrap_or_default())))
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    }
}

fn percent(v: &Value) -> String {
    match v.as_f64() {
        Some(r) if r.is_finite() => format!("{:.2} %", r * 100.0),
        _ => "–".into(),
    }
}

/// A figure with its unit; seconds are shown in ms below one second.
fn number(v: &Value, unit: &str) -> String {
    let Some(x) = v.as_f64().filter(|x| x.is_finite()) else {
        return "–".into();
    };
    if unit == "s" {
        return if x.abs() < 1.0 {
            format!("{} ms", short(x * 1e3))
        } else {
            format!("{} s", short(x))
        };
    }
    let unit = match unit {
        "" | "1" => String::new(),
        u => format!(" {}", escape(u)),
    };
    if v.is_u64() || v.is_i64() || (x.fract() == 0.0 && x.abs() < 1e15) {
        return format!("{x:.0}{unit}");
    }
    format!("{}{unit}", short(x))
}

/// Three significant figures, or whole numbers from 100 up.
fn short(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 || a == 0.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn human_seconds(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 120.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_core::testing;

    /// A ring of one 60 s window closing an interval every 10 s, holding up to `limit` bytes.
    fn minute_ring(registry: &Registry, limit: usize, t0: Instant) -> Ring {
        Ring::new(
            registry,
            Duration::from_secs(10),
            &[Duration::from_secs(60)],
            limit,
            t0,
        )
    }

    fn server_histogram(registry: &Registry) -> sonde_core::Family<sonde_core::Histogram> {
        testing::seconds_histogram(
            registry,
            HTTP_SERVER_DURATION,
            &["http.route", "http.response.status_code", "error.type"],
        )
    }

    #[test]
    fn window_names() {
        assert_eq!(window_name(Duration::from_secs(60)), "1m");
        assert_eq!(window_name(Duration::from_secs(300)), "5m");
        assert_eq!(window_name(Duration::from_secs(3600)), "1h");
        assert_eq!(window_name(Duration::from_secs(90)), "90s");
        assert_eq!(window_name(Duration::from_millis(1500)), "1500ms");
    }

    /// With an injected clock: a window adds up the intervals of its span, so observations
    /// older than the span leave it while `since_start` keeps them.
    #[test]
    fn a_window_forgets_what_is_older_than_its_span() {
        let registry = Registry::new();
        let h = server_histogram(&registry);
        let orders = h.with(&["/orders", "200", ""]);
        // Before the ring starts: since start only.
        orders.observe(5.0);
        let t0 = Instant::now();
        let mut ring = minute_ring(&registry, usize::MAX, t0);
        orders.observe_n(0.010, 100);
        for i in 1..=6u32 {
            ring.tick(t0 + Duration::from_secs(10) * i);
        }
        orders.observe_n(0.200, 100);
        ring.tick(t0 + Duration::from_secs(70));
        let now = t0 + Duration::from_secs(72);
        let windows = ring.windows(&registry.snapshot(), now, Duration::from_secs(72));
        assert_eq!(windows.len(), 2);
        let last_minute = &windows[0];
        assert_eq!(last_minute.name, "1m");
        // Intervals from 10 s on: 62 s, the closest to a minute.
        assert_eq!(last_minute.covered, Duration::from_secs(62));
        let point = |w: &Window| {
            w.changes
                .point(
                    HTTP_SERVER_DURATION,
                    &[
                        ("http.route", "/orders"),
                        ("http.response.status_code", "200"),
                        ("error.type", ""),
                    ],
                )
                .and_then(Point::histogram)
                .cloned()
                .expect("the series is in the window")
        };
        let recent = point(last_minute);
        assert_eq!(recent.count(), 100);
        let p50 = recent.quantile(0.5).expect("observations");
        assert!((p50 - 0.2).abs() / 0.2 < 0.05, "{p50}");
        let all = point(&windows[1]);
        assert_eq!(all.count(), 201);
        let p50 = all.quantile(0.5).expect("observations");
        assert!((p50 - 0.2).abs() / 0.2 < 0.05, "{p50}");
        let p25 = all.quantile(0.25).expect("observations");
        assert!((p25 - 0.01).abs() / 0.01 < 0.05, "{p25}");

        // A report between ticks sees the changes since the last tick; the next tick keeps
        // them (counted once).
        orders.observe(0.200);
        let w = ring.windows(
            &registry.snapshot(),
            now + Duration::from_secs(1),
            Duration::from_secs(73),
        );
        assert_eq!(point(&w[0]).count(), 101);
        ring.tick(t0 + Duration::from_secs(80));
        let w = ring.windows(
            &registry.snapshot(),
            t0 + Duration::from_secs(80),
            Duration::from_secs(80),
        );
        assert_eq!(point(&w[0]).count(), 101);
        assert_eq!(w[0].covered, Duration::from_secs(60));
        // Quiet for longer than the window: nothing left in it.
        for i in 9..=16u32 {
            ring.tick(t0 + Duration::from_secs(10) * i);
        }
        let w = ring.windows(
            &registry.snapshot(),
            t0 + Duration::from_secs(160),
            Duration::from_secs(160),
        );
        assert!(w[0].changes.families.is_empty(), "{:?}", w[0].changes);
        assert_eq!(point(&w[1]).count(), 202);
    }

    #[test]
    fn the_ring_is_bounded_by_the_longest_window_and_its_byte_limit() {
        let registry = Registry::new();
        let h = server_histogram(&registry);
        let t0 = Instant::now();
        let mut ring = Ring::new(
            &registry,
            Duration::from_secs(10),
            &[
                Duration::from_secs(300),
                Duration::from_secs(60),
                Duration::ZERO,
            ],
            usize::MAX,
            t0,
        );
        for i in 1..=100u32 {
            h.with(&["/orders", "200", ""])
                .observe(f64::from(i) / 1000.0);
            ring.tick(t0 + Duration::from_secs(10) * i);
        }
        assert!(ring.closed.len() <= 32, "{}", ring.closed.len());
        // A window far longer than the entry cap allows coarsens the resolution instead.
        let long = Ring::new(
            &registry,
            Duration::from_secs(1),
            &[Duration::from_secs(86_400)],
            usize::MAX,
            t0,
        );
        assert!(long.capacity <= MAX_RING_ENTRIES);
        assert!(long.resolution() >= Duration::from_secs(86_400 / 720));

        // Over the byte limit the oldest intervals go and the window says it is short.
        let busy = |ring: &mut Ring, i: u32| {
            for route in ["/a", "/b", "/c", "/d"] {
                h.with(&[route, "200", ""]).observe(f64::from(i));
                h.with(&[route, "200", ""]).observe(f64::from(i) / 1e4);
            }
            ring.tick(t0 + Duration::from_secs(10) * i);
        };
        let mut probe = minute_ring(&registry, usize::MAX, t0);
        busy(&mut probe, 1);
        let per_interval = probe.bytes();
        let limit = 3 * per_interval + per_interval / 2;
        let mut small = minute_ring(&registry, limit, t0);
        for i in 1..=10u32 {
            busy(&mut small, i);
        }
        assert!(small.bytes() <= limit, "{} > {limit}", small.bytes());
        assert_eq!(small.closed.len(), 3);
        let now = t0 + Duration::from_secs(100);
        let w = small.windows(&registry.snapshot(), now, Duration::from_secs(100));
        assert_eq!(w[0].covered, Duration::from_secs(30));
        let v = window_json(&w[0], small.resolution(), 100.0);
        assert_eq!(v["complete"], false, "{v}");
        assert_eq!(v["routes"][0]["requests"], 6, "{v}");
    }

    #[test]
    fn young_windows_say_they_are_incomplete() {
        let registry = Registry::new();
        let t0 = Instant::now();
        let mut ring = minute_ring(&registry, usize::MAX, t0);
        ring.tick(t0 + Duration::from_secs(10));
        let w = ring.windows(
            &registry.snapshot(),
            t0 + Duration::from_secs(20),
            Duration::from_secs(20),
        );
        assert_eq!(w[0].covered, Duration::from_secs(20));
        let v = window_json(&w[0], ring.resolution(), 20.0);
        assert_eq!(v["complete"], false, "{v}");
        assert_eq!(v["window_seconds"], 60.0, "{v}");
    }

    #[test]
    fn routes_count_errors_by_error_type_or_5xx() {
        let registry = Registry::new();
        let h = server_histogram(&registry);
        h.with(&["/orders", "200", ""]).observe_n(0.01, 90);
        h.with(&["/orders", "500", "500"]).observe_n(0.5, 10);
        h.with(&["/users", "404", ""]).observe_n(0.01, 4);
        // No error.type recorded, a 503 all the same.
        h.with(&["/users", "503", ""]).observe(0.01);
        let snapshot = registry.snapshot();
        let w = Window {
            name: "since_start".into(),
            span: None,
            covered: Duration::from_secs(10),
            changes: snapshot,
        };
        let v = window_json(&w, Duration::from_secs(10), 10.0);
        let route = |r: &str| {
            v["routes"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["route"] == r))
                .cloned()
                .expect("the route is listed")
        };
        let orders = route("/orders");
        assert_eq!(orders["requests"], 100);
        assert_eq!(orders["errors"], 10);
        assert_eq!(orders["error_ratio"], 0.1);
        let p99 = orders["p99"].as_f64().expect("a p99");
        assert!((p99 - 0.5).abs() / 0.5 < 0.05, "{orders}");
        let users = route("/users");
        assert_eq!(users["errors"], 1, "{users}");
        assert_eq!(users["error_ratio"], 0.2, "{users}");
    }

    /// The report of an empty registry after 5 s, without windows.
    fn empty_report() -> Value {
        report_with_windows(
            &Snapshot::default(),
            &Snapshot::default(),
            0.0,
            5.0,
            &[],
            Duration::from_secs(10),
        )
    }

    /// Asserts that every table row of `md` has `n` cells, escaped bars aside.
    fn assert_cells(md: &str, n: usize) {
        for line in md.lines().filter(|l| l.starts_with('|')) {
            let cells = line.replace("\\|", "").matches('|').count();
            assert_eq!(cells, n, "{line}");
        }
    }

    struct Fixed(Value);
    impl Judge for Fixed {
        fn judge(&self, _: &[Window]) -> Value {
            self.0.clone()
        }
    }

    struct Panics;
    impl Judge for Panics {
        fn judge(&self, _: &[Window]) -> Value {
            panic!("a judge with a bug")
        }
    }

    #[test]
    fn verdicts_render_as_one_row_per_objective_or_group() {
        let mut v = empty_report();
        let verdicts = json!([
            { "name": "api-latency-p95", "kind": "threshold", "window": "5m", "unit": "s",
              "target": 0.3, "verdict": "violated", "value": 0.45,
              "error_budget_remaining": null, "grouped": true,
              "groups": [
                  { "labels": { "http.route": "/users" }, "verdict": "violated", "value": 0.45 },
                  { "labels": { "http.route": "/orders" }, "verdict": "met", "value": 0.02 }
              ] },
            { "name": "availability", "kind": "ratio", "window": "5m", "unit": "1",
              "target": 0.999, "verdict": "no_data", "value": null,
              "error_budget_remaining": 0.25, "grouped": false,
              "groups": [ { "labels": {}, "verdict": "no_data", "value": null } ] }
        ]);
        add_verdicts(&mut v, &Fixed(verdicts.clone()), &[]);
        assert_eq!(v["objectives"], verdicts);
        let md = report_markdown(&v);
        crate::fixtures::assert_contains_all(
            &md,
            &[
                "| api-latency-p95 (http.route=/users) | 5m | 450 ms | \\< 300 ms | **violated** | – |",
                "| api-latency-p95 (http.route=/orders) | 5m | 20.0 ms | \\< 300 ms | met | – |",
                "| availability | 5m | – | ≥ 99.90 % | no data | 25.00 % |",
            ],
        );
        assert_cells(&md, 7);

        // A judge that panics costs the verdicts, not the report.
        let mut v = empty_report();
        add_verdicts(&mut v, &Panics, &[]);
        assert!(v["objectives"]["error"].as_str().is_some(), "{v}");
        assert!(report_markdown(&v).contains("judging the objectives panicked"));
    }

    #[test]
    fn markdown_escapes_cells_and_caps_tables() {
        let registry = Registry::new();
        let c = testing::labelled_counter(&registry, "jobs", &["queue"]);
        c.with(&["a|b_c"]).inc();
        for i in 0..(MARKDOWN_ROWS + 3) {
            c.with(&[format!("q{i}").as_str()]).inc();
        }
        let snapshot = registry.snapshot();
        let windows = vec![Window {
            name: "since_start".into(),
            span: None,
            covered: Duration::from_secs(5),
            changes: snapshot.clone(),
        }];
        let v = report_with_windows(
            &snapshot,
            &Snapshot::default(),
            0.0,
            5.0,
            &windows,
            Duration::from_secs(10),
        );
        let md = report_markdown(&v);
        assert!(md.contains("queue=a\\|b\\_c"), "{md}");
        assert!(md.contains("4 more rows in the JSON report"), "{md}");
        // Every table row has as many cells as its header.
        assert_cells(&md, 5);
    }
}
