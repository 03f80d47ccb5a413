//! Recording parsed samples into a registry: one family per (mapped) metric name, with label
//! sets discovered at runtime.
//!
//! * `c` → `Counter<f64>`, each value divided by the sample rate.
//! * `g` → `Gauge<f64>`: an unsigned value sets it, a signed one (`+3`, `-3`) adds to it.
//! * `ms` → a histogram with unit seconds (values divided by 1000).
//! * `h`, `d` → a histogram without unit. They share a family; `ms` does not (another unit).
//! * `s` → a `Gauge<f64>` holding the number of distinct members of the **last complete
//!   window**: members of the current window are counted privately (as 64-bit hashes), and
//!   [`rotate_sets`](Ingest::rotate_sets), called once per export interval, publishes the
//!   window's count and starts a new one. Every exporter (a Prometheus scrape at any moment, an
//!   EMF or OTLP flush right after the rotation) thus reads the same, whole figure; it changes
//!   once per interval. A new set series reads 0 until its first window closes.
//!
//! With a sample rate below 1, histogram and timer values count as `round(1 / rate)`
//! observations (at most [`MAX_SAMPLE_WEIGHT`], and [`MAX_LINE_OBSERVATIONS`] per line),
//! recorded in one step with [`Histogram::observe_n`]: a `|@0.001` timer costs what an
//! unsampled one does, and its sum grows by `value × weight`. Gauges and sets ignore the rate. Timestamps (`|T`) and container ids (`|c:`) are ignored: the registry
//! records "now" (each timestamp left aside counts in `sonde.statsd.ignored{kind="timestamp"}`).
//!
//! **Labels.** DogStatsD tags become labels; a bare tag (`#canary`) becomes the label
//! `canary="true"`. Tag keys are [sanitized](crate::sanitize_label_name), and on histograms
//! `le` and `quantile` become `tag_le` and `tag_quantile`. If a tag key appears twice in a
//! line, the first wins; labels from a mapping rule win over tags. The first sample of a name
//! defines its family's label names (sorted); a later sample without some of them records with
//! `""` for those (which Prometheus treats as absent). A sample bringing a new key
//! **widens** the family to the union of the keys (at most [`Ingest::max_labels`]), counted in
//! `sonde.statsd.relabels{metric}`: every existing series moves to the wider family with `""`
//! for the new labels and keeps its value (counter totals, gauge values, histogram and timer
//! counts, sums and buckets, set counts), its id and its start time
//! ([`Registry::widen_family`](sonde_core::Registry::widen_family)). So each tag set stays its
//! own series, as with Datadog and statsd_exporter: after 5 untagged `api.hits:1|c`, one
//! tagged `#route:/users`, one untagged and one tagged `#host:a`, the family holds
//! `{host="",route=""} 6`, `{host="",route="/users"} 1` and `{host="a",route=""} 1`.
//! Prometheus, for which an empty label is an absent one, sees the untagged series continue
//! without a reset; delta consumers (CloudWatch, delta OTLP) see the same series and count
//! nothing twice.
//!
//! **Limits.** At most [`Ingest::max_metrics`] distinct names (past it, samples of new names
//! are dropped and counted in `sonde.statsd.dropped{reason="too_many_metrics"}`); each family
//! has [`Ingest::max_series`] series before new label sets go to its overflow series. A name
//! that arrives with another type than its first sample (`x:1|c` then `x:1|g`) is dropped and
//! counted in `sonde.statsd.parse_errors{reason="type_conflict"}`. A name whose Prometheus form
//! is another family's (`a.b` after `a_b`, or `system_cpu_time` next to the host collector's
//! `system.cpu.time`: the registry refuses it, see
//! [`Error::NameCollision`](sonde_core::Error::NameCollision)) is dropped and counted in
//! `sonde.statsd.parse_errors{reason="name_collision"}`, so the exposition stays valid.
//! With a registry [memory budget](sonde_core::MemoryBudget) that is full, a new name is
//! dropped before anything is allocated for it (`sonde.statsd.dropped{reason="budget"}`) and
//! new label sets go to the overflow series. With a [TTL](Ingest::ttl), idle series and names
//! expire, freeing their budget and their place under the name limit. The handle cache is bounded
//! in entries and in [bytes](MAX_CACHE_BYTES) and keeps neither refused lines nor overflow
//! handles; names longer than 1020 bytes are refused (`too_long`) before they are mapped.
//!
//! **Non-finite values.** `inf`, `nan` and numbers beyond the `f64` range are malformed
//! (`bad_value`). A value that would make a counter's total, a gauge or a histogram's sum
//! infinite (`x:1e308|c` twice, `x:1e308|c|@0.1`, `g:+1e308|g` twice) is not recorded and is
//! counted in `sonde.statsd.dropped{reason="non_finite"}`: sonde never exports `+Inf` or `NaN`
//! for StatsD input.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use sonde_core::name::{MAX_NAME_LEN, validate_metric_name};
use sonde_core::{Counter, Family, Gauge, Histogram, Registry, Unit};

use crate::mapping::{Mapper, sanitize_label_name};
use crate::parser::{self, Metric, MetricType, ParseError, Sample, parse_line};
use crate::self_metrics::Stats;

/// Default limit on distinct metric names.
pub const DEFAULT_MAX_METRICS: usize = 10_000;
/// Default series limit of each family.
pub const DEFAULT_MAX_SERIES: usize = 2000;
/// Default limit on label names per family.
pub const DEFAULT_MAX_LABELS: usize = 32;
/// Most observations one histogram or timer value counts for, to make up for its sample rate.
pub const MAX_SAMPLE_WEIGHT: u32 = 1000;
/// Most weighted observations one histogram or timer line makes: past it, the line's remaining
/// values are observed once each.
pub const MAX_LINE_OBSERVATIONS: u32 = 10_000;
/// Most distinct members a set series remembers per window; more are dropped and counted in
/// `sonde.statsd.dropped{reason="set_full"}`.
pub const MAX_SET_SIZE: usize = 1 << 20;
/// Most bytes of a malformed line copied into its debug log line.
pub const MAX_LOGGED_LINE: usize = 200;
/// At most one malformed-line log line per this period, after the first.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Default number of (name, type, tags) handles cached; past it the cache starts over.
const DEFAULT_MAX_CACHED: usize = 100_000;
/// Bytes of cached lines (keys plus per-entry overhead) before the cache starts over.
pub const MAX_CACHE_BYTES: usize = 16 << 20;
/// Longest raw name mapped at all: longer ones cannot map to a valid name in practice and are
/// refused as `too_long` before anything is cached for them.
const MAX_RAW_NAME: usize = 4 * MAX_NAME_LEN;
/// Estimated bytes per cache entry besides its key.
const CACHE_ENTRY: usize = 96;
/// Estimated bytes of a new histogram series, to refuse a new name when the registry's memory
/// budget could not take its first series (one with every block of cells: 1.9 KB at the
/// default precision).
const NEW_SERIES_BYTES: usize = 2 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Timer,
    Histogram,
    Set,
}

impl Kind {
    fn of(t: MetricType) -> Kind {
        match t {
            MetricType::Counter => Kind::Counter,
            MetricType::Gauge => Kind::Gauge,
            MetricType::Timer => Kind::Timer,
            MetricType::Histogram | MetricType::Distribution => Kind::Histogram,
            MetricType::Set => Kind::Set,
        }
    }

    fn is_histogram(self) -> bool {
        matches!(self, Kind::Timer | Kind::Histogram)
    }
}

enum FamilyRef {
    Counter(Family<Counter<f64>>),
    /// Gauges and sets.
    Gauge(Family<Gauge<f64>>),
    /// Histograms and timers.
    Histogram(Family<Histogram>),
    /// The name is registered by someone else with another definition (`type_conflict`), or
    /// another family has its Prometheus name (`name_collision`): the rejection reason.
    Conflict(&'static str),
}

struct MetricState {
    name: Box<str>,
    kind: Kind,
    /// Sorted.
    labels: Vec<Box<str>>,
    family: FamilyRef,
    /// Bumped when the family is replaced, which invalidates cached handles.
    generation: u32,
    /// Set states of this metric (sets only).
    sets: Vec<u32>,
    /// The set state shared by label sets past the series limit (sets only).
    overflow_set: Option<u32>,
    /// The maintenance tick of the last line recorded for this name.
    last_used: u32,
}

impl MetricState {
    /// Every set state of this metric, the shared overflow one included.
    fn set_slots(&self) -> Vec<u32> {
        self.sets
            .iter()
            .chain(&self.overflow_set)
            .copied()
            .collect()
    }
}

#[derive(Clone)]
enum Handle {
    Counter(Counter<f64>),
    Gauge(Gauge<f64>),
    Timer(Histogram),
    Histogram(Histogram),
    Set(u32),
}

impl Handle {
    fn is_overflow(&self) -> bool {
        match self {
            Handle::Counter(h) => h.is_overflow(),
            Handle::Gauge(h) => h.is_overflow(),
            Handle::Timer(h) | Handle::Histogram(h) => h.is_overflow(),
            Handle::Set(_) => false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Reject {
    /// Counted in `sonde.statsd.dropped{reason}`.
    Dropped(&'static str),
    /// Counted in `sonde.statsd.parse_errors{reason}`.
    Error(&'static str),
}

enum Cached {
    Series {
        metric: u32,
        generation: u32,
        handle: Handle,
    },
    Rejected(Reject),
}

/// (metric index, label values in the family's order).
type SetKey = (u32, Box<[Box<str>]>);

struct SetState {
    /// Label values in the family's label order.
    values: Box<[Box<str>]>,
    /// `None` once the set's name expired (the slot waits in `free_sets` for reuse).
    gauge: Option<Gauge<f64>>,
    seen: HashSet<u64, RandomState>,
}

/// Records StatsD samples into a [`Registry`]. Single-threaded: one owner (the parser thread
/// of a [`StatsdServer`](crate::StatsdServer), or your own loop) feeds it.
///
/// Lines repeat, so each distinct (type, name, raw tags) is resolved once, to a cached handle:
/// recording a repeated line costs a hash lookup and one atomic operation per value.
///
/// ```
/// use sonde_statsd::Ingest;
/// let registry = sonde_core::Registry::new();
/// let mut ingest = Ingest::new(registry.clone());
/// ingest.ingest_packet(b"jobs.done:2|c|#queue:mail\njobs.done:1|c|#queue:mail\nqueue.depth:7|g");
/// let snap = registry.snapshot();
/// let done = snap.point("jobs.done", &[("queue", "mail")]).unwrap();
/// assert_eq!(done.number().unwrap().as_f64(), 3.0);
/// ```
pub struct Ingest {
    registry: Registry,
    mapper: Mapper,
    max_metrics: usize,
    max_series: usize,
    max_labels: usize,
    max_cached: usize,
    metrics: Vec<MetricState>,
    by_name: HashMap<Box<str>, u32, RandomState>,
    /// Slots of `metrics` whose name expired, for reuse.
    free: Vec<u32>,
    cache: HashMap<Box<[u8]>, Cached, RandomState>,
    /// The cache before the last rotation: entries used again move back, the rest are dropped
    /// (with their handles, so idle series can expire) at the next rotation.
    old_cache: HashMap<Box<[u8]>, Cached, RandomState>,
    cache_bytes: usize,
    ttl: Option<Duration>,
    tick: u32,
    last_tick: Instant,
    key: Vec<u8>,
    sets: Vec<SetState>,
    /// Slots of `sets` whose name expired, for reuse.
    free_sets: Vec<u32>,
    set_index: HashMap<SetKey, u32, RandomState>,
    set_hasher: RandomState,
    stats: Stats,
    malformed_log: sonde_core::diag::RateLimit,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("metrics", &self.metrics.len())
            .field("cached", &self.cache.len())
            .field("max_metrics", &self.max_metrics)
            .field("max_series", &self.max_series)
            .field("max_labels", &self.max_labels)
            .finish_non_exhaustive()
    }
}

fn type_byte(t: MetricType) -> u8 {
    match t {
        MetricType::Counter => b'c',
        MetricType::Gauge => b'g',
        MetricType::Timer => b'm',
        MetricType::Histogram => b'h',
        MetricType::Distribution => b'd',
        MetricType::Set => b's',
    }
}

fn weight(rate: f64) -> u32 {
    if rate >= 1.0 {
        1
    } else {
        (1.0 / rate)
            .round()
            .clamp(1.0, f64::from(MAX_SAMPLE_WEIGHT)) as u32
    }
}

impl Ingest {
    /// Records into `registry`, without mapping rules and with the default limits.
    pub fn new(registry: Registry) -> Ingest {
        Ingest {
            stats: Stats::register(&registry),
            registry,
            mapper: Mapper::default(),
            max_metrics: DEFAULT_MAX_METRICS,
            max_series: DEFAULT_MAX_SERIES,
            max_labels: DEFAULT_MAX_LABELS,
            max_cached: DEFAULT_MAX_CACHED,
            metrics: Vec::new(),
            by_name: HashMap::default(),
            free: Vec::new(),
            cache: HashMap::default(),
            old_cache: HashMap::default(),
            cache_bytes: 0,
            ttl: None,
            tick: 0,
            last_tick: Instant::now(),
            key: Vec::with_capacity(256),
            sets: Vec::new(),
            free_sets: Vec::new(),
            set_index: HashMap::default(),
            set_hasher: RandomState::default(),
            malformed_log: sonde_core::diag::RateLimit::new(LOG_EVERY),
        }
    }

    /// Applies `mapper`'s rules to every name.
    pub fn mapper(mut self, mapper: Mapper) -> Self {
        self.mapper = mapper;
        self.cache.clear();
        self
    }

    sonde_core::builder_setters! {
        /// The limit on distinct metric names (default 10 000).
        max_metrics: usize;
        /// The limit on label names per family (default 32).
        max_labels: usize;
    }

    /// The series limit of each family this creates (default 2000).
    pub fn max_series(mut self, n: usize) -> Self {
        self.max_series = n.max(1);
        self
    }

    /// Expires what is idle for `ttl` (off by default; statsd_exporter's `--statsd.cache-ttl`):
    /// series of the families this creates (the registry's idle timeout), and names without a
    /// line for `ttl` to 1.5 × `ttl` (their family is removed and the name no longer counts
    /// against [`max_metrics`](Self::max_metrics)). Set metrics never expire. Needs
    /// [`maintain`](Self::maintain) called regularly (the server does).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl.max(Duration::from_secs(1)));
        self
    }

    /// Runs expiry when due (every half TTL): rotates the handle cache, so handles of lines
    /// not seen since the previous rotation are released and their series can expire, and
    /// removes the families of names idle for the TTL. Cheap when not due.
    pub fn maintain(&mut self, now: Instant) {
        let Some(ttl) = self.ttl else { return };
        if now.duration_since(self.last_tick) < ttl / 2 {
            return;
        }
        self.last_tick = now;
        self.tick = self.tick.wrapping_add(1);
        self.rotate_cache();
        for i in 0..self.metrics.len() {
            let state = &self.metrics[i];
            let idle = self.tick.wrapping_sub(state.last_used) >= 2;
            if !idle || !self.by_name.contains_key(&state.name) {
                continue;
            }
            let is_set = state.kind == Kind::Set;
            let remove = !matches!(state.family, FamilyRef::Conflict(_));
            if is_set {
                // A set publishes every window, so its series never idle out in the family:
                // its name expires here, from the lines, like any other.
                for j in state.set_slots() {
                    let s = &mut self.sets[j as usize];
                    let values = std::mem::take(&mut s.values);
                    self.set_index.remove(&(i as u32, values));
                    s.gauge = None;
                    s.seen = HashSet::default();
                    self.free_sets.push(j);
                }
                let state = &mut self.metrics[i];
                state.sets = Vec::new();
                state.overflow_set = None;
            }
            let state = &mut self.metrics[i];
            if remove {
                self.registry.remove_family(&state.name);
            }
            self.stats.forget(&state.name);
            self.by_name.remove(&state.name);
            state.family = FamilyRef::Conflict("expired");
            state.generation = state.generation.wrapping_add(1);
            state.labels = Vec::new();
            self.free.push(i as u32);
        }
    }

    fn rotate_cache(&mut self) {
        self.old_cache = std::mem::take(&mut self.cache);
        self.cache_bytes = 0;
    }

    /// The registry recorded into.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Number of distinct metric names seen (after mapping).
    pub fn metric_count(&self) -> usize {
        self.metrics.len()
    }

    /// Parses a datagram and records every line; returns the number of lines (non-empty,
    /// well-formed or not), which is also added to `sonde.statsd.lines`.
    ///
    /// A malformed line is also logged at debug level (target `sonde_statsd`), with its reason
    /// and an escaped copy of its first [`MAX_LOGGED_LINE`] bytes: the first one, then at most
    /// one every 10 seconds with the number left out since.
    pub fn ingest_packet(&mut self, packet: &[u8]) -> usize {
        let mut lines = 0usize;
        for line in parser::lines(packet) {
            lines += 1;
            match parse_line(line) {
                Ok(sample) => self.record(&sample),
                Err(e) => {
                    self.record_error(e);
                    self.log_malformed(e.reason(), &e, line);
                }
            }
        }
        self.stats.lines(lines as u64);
        lines
    }

    /// Counts a malformed line in `sonde.statsd.parse_errors{reason}`.
    pub fn record_error(&mut self, error: ParseError) {
        self.stats.parse_error(error.reason());
    }

    /// Counts a sample that is not recorded; logs it (rate-limited) if it is an error.
    fn reject(&mut self, r: Reject, m: &Metric<'_>) {
        match r {
            Reject::Dropped(reason) => self.stats.dropped(reason, 1),
            Reject::Error(reason) => {
                self.stats.parse_error(reason);
                self.log_malformed(reason, &explain(reason), m.name.as_bytes());
            }
        }
    }

    /// Logs a rejected line (or, past parsing, its name), rate-limited. Off the hot path: only rejected lines get here, and
    /// with debug logging off it costs one check of the callsite's interest.
    #[cold]
    fn log_malformed(&mut self, reason: &'static str, why: &dyn std::fmt::Display, line: &[u8]) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        if let Some(n) = self.malformed_log.hit() {
            let left_out = n - 1;
            let shown = &line[..line.len().min(MAX_LOGGED_LINE)];
            let more = if shown.len() < line.len() { "..." } else { "" };
            tracing::debug!(
                reason,
                left_out_since_last_log = left_out,
                "malformed StatsD line dropped ({why}): \"{}{more}\"",
                shown.escape_ascii()
            );
        }
    }

    /// Records one sample. Events and service checks are counted in
    /// `sonde.statsd.ignored{kind}`; so is a DogStatsD `|T` timestamp (`kind="timestamp"`):
    /// the value is recorded at arrival, as every backend the agent feeds reads values without
    /// a timestamp of their own.
    #[inline]
    pub fn record(&mut self, sample: &Sample<'_>) {
        match sample {
            Sample::Metric(m) => {
                if m.timestamp.is_some() {
                    self.stats.ignored("timestamp");
                }
                self.record_metric(m)
            }
            Sample::Event => self.stats.ignored("event"),
            Sample::ServiceCheck => self.stats.ignored("service_check"),
        }
    }

    /// Closes the current set window: every set gauge takes the number of distinct members
    /// seen since the previous call (0 if none), and a new window starts counting privately.
    /// Call it once per export interval, before the exporters that run at that interval read,
    /// so every exporter reads the same, complete figure until the next call.
    pub fn rotate_sets(&mut self) {
        for s in &mut self.sets {
            if let Some(g) = &s.gauge {
                g.set(s.seen.len() as f64);
            }
            s.seen.clear();
            s.seen.shrink_to(1024);
        }
    }

    #[inline]
    fn record_metric(&mut self, m: &Metric<'_>) {
        self.key.clear();
        self.key.push(type_byte(m.metric_type));
        self.key.extend_from_slice(m.name.as_bytes());
        // 0xff never occurs in UTF-8, so the key is unambiguous.
        self.key.push(0xff);
        self.key.extend_from_slice(m.tags.raw().as_bytes());

        if !self.cache.contains_key(self.key.as_slice())
            && let Some((k, v)) = self.old_cache.remove_entry(self.key.as_slice())
        {
            // Used again since the last rotation: keep it.
            self.keep(k, v);
        }
        if let Some(cached) = self.cache.get(self.key.as_slice()) {
            match cached {
                Cached::Series {
                    metric,
                    generation,
                    handle,
                } if self.metrics[*metric as usize].generation == *generation => {
                    self.metrics[*metric as usize].last_used = self.tick;
                    apply(handle, m, &mut self.sets, &self.set_hasher, &self.stats);
                    return;
                }
                Cached::Rejected(r) => {
                    let r = *r;
                    self.reject(r, m);
                    return;
                }
                // A handle of a family that was since replaced: resolve again.
                Cached::Series { .. } => {}
            }
        }

        let resolved = self.resolve(m);
        let keep = match &resolved {
            Cached::Series { handle, .. } => {
                apply(handle, m, &mut self.sets, &self.set_hasher, &self.stats);
                // An overflow handle is not kept: the label set gets its own series once
                // the family or the budget has room.
                !handle.is_overflow()
            }
            Cached::Rejected(r) => {
                self.reject(*r, m);
                // Refused lines are not kept (junk would crowd out real lines), except
                // for names a mapping rule drops on purpose, which repeat.
                matches!(r, Reject::Dropped("mapping"))
            }
        };
        if !keep {
            return;
        }
        let key: Box<[u8]> = self.key.as_slice().into();
        self.keep(key, resolved);
    }

    /// Caches an entry, rotating first if the cache is full (in entries or bytes): the cache
    /// and the previous one together hold at most twice the bounds.
    fn keep(&mut self, key: Box<[u8]>, entry: Cached) {
        let bytes = key.len() + CACHE_ENTRY;
        if self.cache.len() >= self.max_cached || self.cache_bytes + bytes > MAX_CACHE_BYTES {
            self.rotate_cache();
        }
        self.cache_bytes += bytes;
        self.cache.insert(key, entry);
    }

    /// The slow path: map the name, build the labels, find or create (or widen) the family
    /// and resolve the series.
    fn resolve(&mut self, m: &Metric<'_>) -> Cached {
        let kind = Kind::of(m.metric_type);
        if m.name.len() > MAX_RAW_NAME {
            return Cached::Rejected(Reject::Error("too_long"));
        }
        // Looked up without caching: the name is remembered only once a line is accepted.
        let mapped = match self.mapper.cached(m.name) {
            Some(m) => m.cloned(),
            None => self.mapper.map_uncached(m.name),
        };
        let Some(mapped) = mapped else {
            self.mapper.remember(m.name, None);
            return Cached::Rejected(Reject::Dropped("mapping"));
        };
        let name = mapped.name.clone();
        // Mapping labels first: after a stable sort and dedup, the first of a key wins.
        let mut labels: Vec<(Cow<'_, str>, Cow<'_, str>)> = mapped
            .labels
            .iter()
            .map(|(k, v)| (Cow::Owned(k.clone()), Cow::Owned(v.clone())))
            .collect();
        if validate_metric_name(&name).is_err() {
            let reason = if name.len() > MAX_NAME_LEN {
                "too_long"
            } else {
                "bad_name"
            };
            return Cached::Rejected(Reject::Error(reason));
        }
        for (k, v) in m.tags.iter() {
            let Some(k) = sanitize_label_name(k) else {
                return Cached::Rejected(Reject::Error("bad_tags"));
            };
            labels.push((k, Cow::Borrowed(v.unwrap_or("true"))));
        }
        if kind.is_histogram() {
            for (k, _) in &mut labels {
                if *k == "le" || *k == "quantile" {
                    *k = Cow::Owned(format!("tag_{k}"));
                }
            }
        }
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|later, earlier| later.0 == earlier.0);
        if labels.len() > self.max_labels {
            return Cached::Rejected(Reject::Dropped("too_many_labels"));
        }

        let idx = match self.by_name.get(name.as_str()) {
            Some(&i) => i as usize,
            None => {
                if self.by_name.len() >= self.max_metrics {
                    return Cached::Rejected(Reject::Dropped("too_many_metrics"));
                }
                // Nothing is allocated for a name whose first series the registry's memory
                // budget could not take anyway.
                if self.registry.over_budget(NEW_SERIES_BYTES) {
                    return Cached::Rejected(Reject::Dropped("budget"));
                }
                let keys: Vec<Box<str>> = labels.iter().map(|(k, _)| k.as_ref().into()).collect();
                let (family, keys) = match register(
                    &self.registry,
                    &name,
                    kind,
                    &keys,
                    self.max_series,
                    self.ttl,
                ) {
                    Ok(f) => (f, keys),
                    // A StatsD family of this name and type already in the registry was made by
                    // the ingest this one replaced (a reload that changed `[statsd]`): take it
                    // over, widened to this line's tags, so its series and their values go on.
                    Err(e @ sonde_core::Error::Conflict { .. }) => {
                        match adopt(&self.registry, &name, kind, &keys) {
                            Some(adopted) => adopted,
                            None => (FamilyRef::Conflict(conflict_reason(&e)), keys),
                        }
                    }
                    Err(e) => (FamilyRef::Conflict(conflict_reason(&e)), keys),
                };
                let state = MetricState {
                    name: name.as_str().into(),
                    kind,
                    labels: keys,
                    family,
                    generation: 0,
                    sets: Vec::new(),
                    overflow_set: None,
                    last_used: self.tick,
                };
                let i = match self.free.pop() {
                    Some(i) => {
                        // A new generation, so cached handles of the expired name miss.
                        let slot = &mut self.metrics[i as usize];
                        let generation = slot.generation.wrapping_add(1);
                        *slot = MetricState {
                            generation,
                            ..state
                        };
                        i as usize
                    }
                    None => {
                        self.metrics.push(state);
                        self.metrics.len() - 1
                    }
                };
                self.by_name.insert(name.as_str().into(), i as u32);
                i
            }
        };
        self.metrics[idx].last_used = self.tick;

        let state = &self.metrics[idx];
        if state.kind != kind {
            return Cached::Rejected(Reject::Error("type_conflict"));
        }
        if let FamilyRef::Conflict(reason) = state.family {
            return Cached::Rejected(Reject::Error(reason));
        }
        let missing = labels
            .iter()
            .any(|(k, _)| state.labels.binary_search_by(|l| (**l).cmp(&**k)).is_err());
        if missing {
            let mut union: Vec<Box<str>> = state.labels.clone();
            union.extend(labels.iter().map(|(k, _)| Box::<str>::from(k.as_ref())));
            union.sort();
            union.dedup();
            if union.len() > self.max_labels {
                return Cached::Rejected(Reject::Dropped("too_many_labels"));
            }
            if let Err(r) = self.widen(idx, union) {
                return Cached::Rejected(r);
            }
        }

        let state = &self.metrics[idx];
        let values: Vec<&str> = state
            .labels
            .iter()
            .map(|l| {
                labels
                    .binary_search_by(|(k, _)| (**k).cmp(&**l))
                    .map_or("", |i| labels[i].1.as_ref())
            })
            .collect();
        let generation = state.generation;
        let handle = match &state.family {
            FamilyRef::Counter(f) => Handle::Counter(f.with(&values)),
            FamilyRef::Gauge(f) if kind == Kind::Set => {
                let f = f.clone();
                Handle::Set(self.set_state(idx, &values, &f))
            }
            FamilyRef::Gauge(f) => Handle::Gauge(f.with(&values)),
            FamilyRef::Histogram(f) if kind == Kind::Timer => Handle::Timer(f.with(&values)),
            FamilyRef::Histogram(f) => Handle::Histogram(f.with(&values)),
            FamilyRef::Conflict(reason) => return Cached::Rejected(Reject::Error(reason)),
        };
        if !handle.is_overflow() {
            self.mapper.remember(m.name, Some(mapped));
        }
        Cached::Series {
            metric: idx as u32,
            generation,
            handle,
        }
    }

    fn set_state(&mut self, idx: usize, values: &[&str], family: &Family<Gauge<f64>>) -> u32 {
        let key: SetKey = (idx as u32, values.iter().map(|&v| v.into()).collect());
        if let Some(&i) = self.set_index.get(&key) {
            return i;
        }
        let state = &self.metrics[idx];
        if state.sets.len() >= self.max_series {
            // Past the series limit every new label set lands in the overflow series anyway;
            // share one state rather than growing without bound.
            if let Some(i) = state.overflow_set {
                return i;
            }
        }
        let fresh = SetState {
            values: key.1.clone(),
            gauge: Some(family.with(values)),
            seen: HashSet::default(),
        };
        let i = match self.free_sets.pop() {
            Some(i) => {
                self.sets[i as usize] = fresh;
                i
            }
            None => {
                self.sets.push(fresh);
                (self.sets.len() - 1) as u32
            }
        };
        let state = &mut self.metrics[idx];
        if state.sets.len() >= self.max_series {
            state.overflow_set = Some(i);
        } else {
            state.sets.push(i);
            self.set_index.insert(key, i);
        }
        i
    }

    /// Replaces the family of metric `idx` by one with label names `union` (sorted, a superset
    /// of the current ones), every series moving over with its value (see the module docs).
    fn widen(&mut self, idx: usize, union: Vec<Box<str>>) -> Result<(), Reject> {
        let state = &self.metrics[idx];
        let name = state.name.clone();
        let kind = state.kind;
        let old_labels = state.labels.clone();
        let labels = || union.iter().map(|l| l.to_string());
        let widened = match &state.family {
            FamilyRef::Counter(f) => self
                .registry
                .widen_family(f, labels())
                .map(FamilyRef::Counter),
            FamilyRef::Gauge(f) => self
                .registry
                .widen_family(f, labels())
                .map(FamilyRef::Gauge),
            FamilyRef::Histogram(f) => self
                .registry
                .widen_family(f, labels())
                .map(FamilyRef::Histogram),
            FamilyRef::Conflict(reason) => return Err(Reject::Error(reason)),
        };
        let family = match widened {
            Ok(f) => Ok(f),
            // Removed from the registry by its owner: nothing of it is exported any more, so
            // start afresh under the name.
            Err(sonde_core::Error::NotRegistered { .. }) => register(
                &self.registry,
                &name,
                kind,
                &union,
                self.max_series,
                self.ttl,
            ),
            Err(e) => Err(e),
        };
        let family = match family {
            Ok(f) => f,
            Err(e) => {
                // Registered by someone else in between: the name is theirs now.
                let reason = conflict_reason(&e);
                let state = &mut self.metrics[idx];
                state.family = FamilyRef::Conflict(reason);
                state.generation = state.generation.wrapping_add(1);
                return Err(Reject::Error(reason));
            }
        };
        if let FamilyRef::Gauge(f) = &family
            && kind == Kind::Set
        {
            // The series moved with their published counts; point every set state (the shared
            // overflow one included: the family is full, so it resolves to the overflow series
            // again) at its series in the new family.
            for i in self.metrics[idx].set_slots() {
                let s = &mut self.sets[i as usize];
                let new_values: Box<[Box<str>]> = union
                    .iter()
                    .map(|l| {
                        old_labels
                            .iter()
                            .position(|o| o == l)
                            .map_or("".into(), |p| s.values[p].clone())
                    })
                    .collect();
                let key = (idx as u32, s.values.clone());
                if self.set_index.get(&key) == Some(&i) {
                    self.set_index.remove(&key);
                    self.set_index.insert((idx as u32, new_values.clone()), i);
                }
                s.gauge = Some(f.with(&new_values));
                s.values = new_values;
            }
        }
        let state = &mut self.metrics[idx];
        state.labels = union;
        state.family = family;
        state.generation = state.generation.wrapping_add(1);
        self.stats.relabel(&name);
        Ok(())
    }
}

fn register(
    registry: &Registry,
    name: &str,
    kind: Kind,
    labels: &[Box<str>],
    max_series: usize,
    ttl: Option<Duration>,
) -> Result<FamilyRef, sonde_core::Error> {
    let name = name.to_owned();
    let family = StatsdFamily {
        kind,
        labels,
        max_series,
        ttl,
    };
    Ok(match kind {
        Kind::Counter => FamilyRef::Counter(family.build(registry.counter_f64(name))?),
        Kind::Gauge | Kind::Set => FamilyRef::Gauge(family.build(registry.gauge_f64(name))?),
        Kind::Timer => {
            FamilyRef::Histogram(family.build(registry.histogram(name).unit(Unit::Seconds))?)
        }
        Kind::Histogram => FamilyRef::Histogram(family.build(registry.histogram(name))?),
    })
}

/// The description every StatsD family of `kind` carries: how a reloaded ingest recognises the
/// families its predecessor registered (and never takes over a library's or a host family).
fn description(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "StatsD counter.",
        Kind::Gauge => "StatsD gauge.",
        Kind::Set => "StatsD set: distinct values seen in the last complete window.",
        Kind::Timer => "StatsD timer.",
        Kind::Histogram => "StatsD histogram or distribution.",
    }
}

/// Takes over the StatsD family `name` of `kind` registered by an earlier ingest on the same
/// registry, widened to cover `keys`; returns it with its (sorted) label names. `None` when the
/// name belongs to something else.
fn adopt(
    registry: &Registry,
    name: &str,
    kind: Kind,
    keys: &[Box<str>],
) -> Option<(FamilyRef, Vec<Box<str>>)> {
    fn take<M: sonde_core::Instrument>(
        registry: &Registry,
        name: &str,
        kind: Kind,
        keys: &[Box<str>],
    ) -> Option<(Family<M>, Vec<Box<str>>)> {
        let f = registry.registered_family::<M>(name)?;
        if f.meta().description() != description(kind) {
            return None;
        }
        let existing: Vec<Box<str>> = f.meta().label_names().map(Box::from).collect();
        let mut union = existing.clone();
        union.extend(keys.iter().cloned());
        union.sort();
        union.dedup();
        if union == existing {
            return Some((f, existing));
        }
        let widened = registry
            .widen_family(&f, union.iter().map(|l| l.to_string()))
            .ok()?;
        Some((widened, union))
    }
    match kind {
        Kind::Counter => take::<Counter<f64>>(registry, name, kind, keys)
            .map(|(f, l)| (FamilyRef::Counter(f), l)),
        Kind::Gauge | Kind::Set => {
            take::<Gauge<f64>>(registry, name, kind, keys).map(|(f, l)| (FamilyRef::Gauge(f), l))
        }
        Kind::Timer | Kind::Histogram => {
            take::<Histogram>(registry, name, kind, keys).map(|(f, l)| (FamilyRef::Histogram(f), l))
        }
    }
}

/// What every StatsD family shares: the description of its kind, its labels and series limit;
/// never striped (one parser thread records, so stripes would only multiply the memory of
/// unlabelled histograms), idle expiry when a TTL is set.
struct StatsdFamily<'a> {
    kind: Kind,
    labels: &'a [Box<str>],
    max_series: usize,
    ttl: Option<Duration>,
}

impl StatsdFamily<'_> {
    fn build<M: sonde_core::Instrument>(
        &self,
        b: sonde_core::FamilyBuilder<'_, M>,
    ) -> Result<Family<M>, sonde_core::Error> {
        let b = b
            .description(description(self.kind))
            .labels(self.labels.iter().map(|l| l.to_string()))
            .max_series(self.max_series)
            .striped(false);
        match self.ttl {
            Some(t) => b.idle_timeout(t),
            None => b,
        }
        .build()
    }
}

/// The rejection reason for a family the registry refused.
fn conflict_reason(e: &sonde_core::Error) -> &'static str {
    match e {
        sonde_core::Error::NameCollision { .. } => "name_collision",
        _ => "type_conflict",
    }
}

/// Magnitude below which adding a value to a finite `f64` cannot overflow: half the spacing
/// of floats near `f64::MAX` is 2^970 (~9.98e291), so a smaller addend rounds to at most
/// `f64::MAX`. Larger ones take the slow path that reads the current total first.
const OVERFLOW_SAFE: f64 = 1e291;

/// What a rejection reason of [`Reject::Error`] means, for the log.
fn explain(reason: &str) -> &'static str {
    match reason {
        "name_collision" => {
            "another metric (StatsD, host or library) has the same Prometheus name: names that differ only in characters outside [A-Za-z0-9] render alike"
        }
        "type_conflict" => {
            "the name came before with another type, or is registered with another definition"
        }
        "bad_name" => "the (mapped) name is not a valid metric name",
        "too_long" => "the (mapped) name is longer than 255 bytes",
        "bad_tags" => "a tag key is longer than 255 bytes",
        _ => "rejected",
    }
}

#[inline]
fn apply(
    handle: &Handle,
    m: &Metric<'_>,
    sets: &mut [SetState],
    hasher: &RandomState,
    stats: &Stats,
) {
    match handle {
        Handle::Counter(c) => {
            let rate = m.sample_rate;
            for v in m.values() {
                let inc = v.number / rate;
                // `1e308|c|@0.1` or a total past f64::MAX would export +Inf for good.
                if inc >= OVERFLOW_SAFE && !(c.value().as_f64() + inc).is_finite() {
                    stats.dropped("non_finite", 1);
                    continue;
                }
                c.add(inc);
            }
        }
        Handle::Gauge(g) => {
            for v in m.values() {
                if !v.signed {
                    g.set(v.number);
                } else if v.number.abs() >= OVERFLOW_SAFE
                    && !(g.value().as_f64() + v.number).is_finite()
                {
                    stats.dropped("non_finite", 1);
                } else {
                    g.add(v.number);
                }
            }
        }
        Handle::Timer(h) => observe(h, m, 1000.0, stats),
        Handle::Histogram(h) => observe(h, m, 1.0, stats),
        Handle::Set(i) => {
            let (Some(s), Some(member)) = (sets.get_mut(*i as usize), m.set_member()) else {
                return;
            };
            let hash = hasher.hash_one(member.as_bytes());
            if s.seen.len() < MAX_SET_SIZE {
                s.seen.insert(hash);
            } else if !s.seen.contains(&hash) {
                stats.dropped("set_full", 1);
            }
            // The gauge shows the last complete window; `rotate_sets` publishes this one.
        }
    }
}

#[inline]
fn observe(h: &Histogram, m: &Metric<'_>, divisor: f64, stats: &Stats) {
    let weight = weight(m.sample_rate);
    if weight == 1 {
        for v in m.values() {
            let x = v.number / divisor;
            if x.abs() >= OVERFLOW_SAFE && overflows(h, x, 1) {
                stats.dropped("non_finite", 1);
                continue;
            }
            h.observe(x);
        }
        return;
    }
    // A long multi-value line at a tiny rate must not stand for millions of observations.
    let mut budget = MAX_LINE_OBSERVATIONS;
    for v in m.values() {
        let x = v.number / divisor;
        let n = weight.min(budget).max(1);
        budget = budget.saturating_sub(n);
        if x.abs() >= OVERFLOW_SAFE && overflows(h, x, n) {
            stats.dropped("non_finite", 1);
            continue;
        }
        h.observe_n(x, u64::from(n));
    }
}

/// Whether observing `x` `n` times would make the series' sum infinite. Reads the whole
/// series, so only called for values of a magnitude that can overflow (never in practice).
#[cold]
fn overflows(h: &Histogram, x: f64, n: u32) -> bool {
    !(h.read().sum() + x * f64::from(n)).is_finite()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MappingRule;
    use crate::self_metrics::{DROPPED, IGNORED, LINES, PARSE_ERRORS, RELABELS};
    use sonde_core::{Point, Snapshot, testing};

    /// An ingest with the defaults, on a registry of its own.
    fn ingest() -> Ingest {
        Ingest::new(Registry::new())
    }

    /// Ingests `packet`, then reads the registry: what most checks look at.
    fn feed(ingest: &mut Ingest, packet: &[u8]) -> Snapshot {
        ingest.ingest_packet(packet);
        ingest.registry().snapshot()
    }

    fn number(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
        match snap.point(name, labels) {
            Some(p) => p.number().unwrap().as_f64(),
            None => panic!(
                "no {name} {labels:?}; have {:?}",
                snap.family(name)
                    .map(|f| f.series.iter().map(|s| f.labels(s)).collect::<Vec<_>>())
            ),
        }
    }

    fn hist(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> (u64, f64) {
        let h = snap.point(name, labels).unwrap().histogram().unwrap();
        (h.count(), h.sum())
    }

    fn count_or_zero(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
        snap.point(name, labels)
            .and_then(Point::number)
            .map_or(0.0, |n| n.as_f64())
    }

    /// The lines refused for `reason`.
    fn parse_errors(snap: &Snapshot, reason: &str) -> f64 {
        number(snap, PARSE_ERRORS, &[("reason", reason)])
    }

    /// The lines refused for `reason`, 0 when none was.
    fn parse_errors_or_zero(snap: &Snapshot, reason: &str) -> f64 {
        count_or_zero(snap, PARSE_ERRORS, &[("reason", reason)])
    }

    #[test]
    fn counters_with_sample_rate_and_multi_values() {
        let mut ingest = ingest();
        let snap = feed(
            &mut ingest,
            b"hits:1|c\nhits:2|c\nhits:1|c|@0.1\nhits:1:2:3|c",
        );
        assert!((number(&snap, "hits", &[]) - 19.0).abs() < 1e-9);
        assert_eq!(number(&snap, LINES, &[]), 4.0);
        let fam = snap.family("hits").unwrap();
        assert_eq!(fam.meta.kind(), sonde_core::Kind::Counter);
    }

    #[test]
    fn gauges_set_and_add() {
        let mut ingest = ingest();
        let g = |snap: Snapshot| number(&snap, "g", &[]);
        assert_eq!(g(feed(&mut ingest, b"g:10|g\ng:+5|g\ng:-3|g")), 12.0);
        assert_eq!(g(feed(&mut ingest, b"g:4|g\ng:-10|g")), -6.0);
        assert_eq!(g(feed(&mut ingest, b"g:1.5:2.5|g")), 2.5);
    }

    #[test]
    fn timers_in_seconds_and_histograms() {
        let mut ingest = ingest();
        ingest.ingest_packet(b"lat:750|ms|#route:/a\nlat:500|ms|@0.5|#route:/a\nlat:250|ms");
        let snap = feed(&mut ingest, b"size:3|h\nsize:5|d\nsize:1:2|d|@0.25");
        let lat = snap.family("lat").unwrap();
        assert_eq!(lat.meta.unit(), &Unit::Seconds);
        assert_eq!(hist(&snap, "lat", &[("route", "")]), (1, 0.25));
        assert_eq!(hist(&snap, "lat", &[("route", "/a")]), (3, 1.75));
        assert_eq!(snap.family("size").unwrap().meta.unit(), &Unit::None);
        // 3 + 5 + 4 × (1 + 2)
        assert_eq!(hist(&snap, "size", &[]), (10, 20.0));
        assert_eq!(weight(0.000_001), MAX_SAMPLE_WEIGHT);
        assert_eq!(weight(0.3), 3);

        // The per-line budget: 20 values at weight 1000 make 10 000 + 10 observations.
        let line = format!("big:{}|d|@0.001", vec!["1"; 20].join(":"));
        let snap = feed(&mut ingest, line.as_bytes());
        assert_eq!(hist(&snap, "big", &[]).0, 10_010);
    }

    #[test]
    fn sampled_timers_record_what_the_same_observations_would() {
        // 0.1 s at 1 %: 100 observations, 0.017 s at 0.1 %: 1000 (a value whose repeated sum
        // would round), plus an unsampled one.
        let snap = feed(&mut ingest(), b"t:100|ms|@0.01\nt:17|ms|@0.001\nt:2500|ms");
        let reference = Registry::new();
        let h = testing::handle(reference.histogram("t").unit(Unit::Seconds));
        for (v, n) in [(0.1, 100), (0.017, 1000), (2.5, 1)] {
            for _ in 0..n {
                h.observe(v);
            }
        }
        let got = snap.point("t", &[]).unwrap().histogram().unwrap();
        let want = h.read();
        assert_eq!(got.count(), 1101);
        assert_eq!(got.cumulative_buckets(), want.cumulative_buckets());
        assert_eq!(got.to_parts().cells, want.to_parts().cells);
        assert_eq!((got.min(), got.max()), (Some(0.017), Some(2.5)));
        assert_eq!(got.quantile(0.5), want.quantile(0.5));
        // One product per line: 0.1 × 100 + 0.017 × 1000 + 2.5, within the rounding of the
        // 1101 additions the loop makes.
        assert_eq!(got.sum(), 0.1 * 100.0 + 0.017 * 1000.0 + 2.5);
        assert!(
            (got.sum() - want.sum()).abs() < 1e-12,
            "{} vs {}",
            got.sum(),
            want.sum()
        );
    }

    #[test]
    fn sets_publish_the_last_complete_window() {
        let registry = Registry::new();
        let mut ingest = Ingest::new(registry.clone());
        // The distinct users published without the tag `x` and with `x:1`.
        let users = || {
            let snap = registry.snapshot();
            let of = |x| number(&snap, "users", &[("x", x)]);
            (of(""), of("1"))
        };
        ingest.ingest_packet(b"users:alice|s\nusers:bob|s\nusers:alice|s\nusers:a:b|s|#x:1");
        // The window is still open: the gauges show the last complete one (none yet).
        assert_eq!(users(), (0.0, 0.0));
        ingest.rotate_sets();
        assert_eq!(users(), (2.0, 1.0));
        // The next window counts privately; every read until the next rotation sees 2 and 1.
        ingest.ingest_packet(b"users:alice|s|@0.1\nusers:carol|s|@0.1\nusers:dave|s");
        assert_eq!(users(), (2.0, 1.0));
        ingest.rotate_sets();
        assert_eq!(users(), (3.0, 0.0));
        ingest.rotate_sets();
        assert_eq!(number(&registry.snapshot(), "users", &[("x", "")]), 0.0);
    }

    #[test]
    fn tags_become_sorted_labels_and_missing_ones_are_empty() {
        let mut ingest = ingest();
        ingest.ingest_packet(
            b"req:1|c|#zone:b,app:web,canary\nreq:2|c|#app:web,zone:b,canary\nreq:4|c|#app:api,canary,zone:a",
        );
        // A subset of the keys, in another order; a duplicate key (first wins).
        let snap = feed(&mut ingest, b"req:8|c|#app:web\nreq:16|c|#app:api,app:web");
        let fam = snap.family("req").unwrap();
        assert_eq!(
            fam.meta.label_names().collect::<Vec<_>>(),
            ["app", "canary", "zone"]
        );
        let l = |app, canary, zone| [("app", app), ("canary", canary), ("zone", zone)];
        assert_eq!(number(&snap, "req", &l("web", "true", "b")), 3.0);
        assert_eq!(number(&snap, "req", &l("api", "true", "a")), 4.0);
        assert_eq!(number(&snap, "req", &l("web", "", "")), 8.0);
        assert_eq!(number(&snap, "req", &l("api", "", "")), 16.0);
        assert_eq!(count_or_zero(&snap, RELABELS, &[("metric", "req")]), 0.0);
    }

    #[test]
    fn tag_keys_are_sanitized_and_reserved_ones_renamed_on_histograms() {
        let snap = feed(
            &mut ingest(),
            b"h:1|h|#le:5,quantile:x,my-key:v\nc:1|c|#le:5,5xx:y",
        );
        assert_eq!(
            snap.family("h")
                .unwrap()
                .meta
                .label_names()
                .collect::<Vec<_>>(),
            ["my_key", "tag_le", "tag_quantile"]
        );
        assert_eq!(number(&snap, "c", &[("le", "5"), ("_5xx", "y")]), 1.0);
    }

    /// Issue #21 item 6: a new tag key used to wipe the family.
    #[test]
    fn a_new_ingest_on_the_same_registry_takes_over_the_families_with_any_tag_set() {
        // A reload that changes `[statsd]` replaces the ingest but keeps the registry: the new
        // ingest must accept tag sets unlike the family's first one instead of `type_conflict`.
        let registry = Registry::new();
        let mut old = Ingest::new(registry.clone());
        old.ingest_packet(b"api.hits:2|c|#route:/a\napi.lat:100|ms|#route:/a\nq.depth:5|g|#q:x");
        drop(old);
        let mut new = Ingest::new(registry.clone());
        new.ingest_packet(b"api.hits:1|c\napi.lat:300|ms|#host:h\nq.depth:7|g|#q:x");
        let snap = feed(&mut new, b"api.hits:1|c|#route:/a");
        assert_eq!(parse_errors_or_zero(&snap, "type_conflict"), 0.0);
        assert_eq!(number(&snap, "api.hits", &[("route", "/a")]), 3.0);
        assert_eq!(number(&snap, "api.hits", &[("route", "")]), 1.0);
        let l = |host, route| [("host", host), ("route", route)];
        assert_eq!(hist(&snap, "api.lat", &l("", "/a")).0, 1);
        assert_eq!(hist(&snap, "api.lat", &l("h", "")).0, 1);
        assert_eq!(number(&snap, "q.depth", &[("q", "x")]), 7.0);
        // Another type under the name is still a conflict, and never a library family.
        new.ingest_packet(b"api.hits:1|g");
        testing::labelled_counter(&registry, "lib.jobs", &["queue"]);
        let snap = feed(&mut new, b"lib.jobs:1|c|#other:1");
        assert_eq!(parse_errors(&snap, "type_conflict"), 2.0);
    }

    #[test]
    fn a_new_tag_key_keeps_every_series_and_its_value() {
        let mut ingest = ingest();
        let mut deltas = ingest.registry().reader(sonde_core::Temporality::Delta);
        for _ in 0..5 {
            ingest.ingest_packet(b"api.hits:1|c\napi.lat:100|ms\napi.size:10|h");
        }
        let first = deltas.collect();
        assert_eq!(number(&first, "api.hits", &[]), 5.0);
        ingest.ingest_packet(b"api.hits:1|c|#route:/users\napi.lat:200|ms|#route:/users\napi.size:20|h|#route:/users");
        ingest.ingest_packet(b"api.hits:1|c\napi.lat:300|ms\napi.size:30|h");
        let snap = feed(
            &mut ingest,
            b"api.hits:1|c|#host:a\napi.lat:400|ms|#host:a\napi.size:40|h|#host:a",
        );
        let l = |host, route| [("host", host), ("route", route)];
        for name in ["api.hits", "api.lat", "api.size"] {
            let fam = snap.family(name).unwrap();
            assert_eq!(
                fam.meta.label_names().collect::<Vec<_>>(),
                ["host", "route"]
            );
            assert_eq!(fam.series.len(), 3, "{name}: {fam:?}");
            assert_eq!(number(&snap, RELABELS, &[("metric", name)]), 2.0);
        }
        assert_eq!(number(&snap, "api.hits", &l("", "")), 6.0);
        assert_eq!(number(&snap, "api.hits", &l("", "/users")), 1.0);
        assert_eq!(number(&snap, "api.hits", &l("a", "")), 1.0);
        let close = |(n, sum): (u64, f64), (want_n, want_sum): (u64, f64)| {
            n == want_n && (sum - want_sum).abs() < 1e-9
        };
        assert!(close(hist(&snap, "api.lat", &l("", "")), (6, 0.8)));
        assert!(close(hist(&snap, "api.lat", &l("", "/users")), (1, 0.2)));
        assert!(close(hist(&snap, "api.lat", &l("a", "")), (1, 0.4)));
        assert_eq!(hist(&snap, "api.size", &l("", "")), (6, 80.0));
        assert_eq!(hist(&snap, "api.size", &l("", "/users")), (1, 20.0));
        assert_eq!(hist(&snap, "api.size", &l("a", "")), (1, 40.0));
        // The buckets moved too: the untagged timer's 6 values are all at or below 0.3 s.
        let lat = snap
            .point("api.lat", &l("", ""))
            .unwrap()
            .histogram()
            .unwrap();
        assert_eq!((lat.min(), lat.max()), (Some(0.1), Some(0.3)));
        assert_eq!(
            lat.quantile(1.0).map(|q| (q - 0.3).abs() < 0.01),
            Some(true)
        );

        // The same series continues for a delta reader: nothing counted twice.
        let second = deltas.collect();
        assert_eq!(number(&second, "api.hits", &l("", "")), 1.0);
        assert_eq!(hist(&second, "api.size", &l("", "")), (1, 30.0));
        assert_eq!(number(&second, "api.hits", &l("a", "")), 1.0);
    }

    #[test]
    fn widening_carries_gauges_sets_and_cached_handles_follow() {
        let mut ingest = ingest();
        ingest.ingest_packet(
            b"c:5|c|#a:1\nc:7|c|#a:2\ng:3|g|#a:1\ns:x|s|#a:1\ns:y|s|#a:1\nh:1|h|#a:1",
        );
        ingest.rotate_sets();
        ingest.ingest_packet(b"c:1|c|#a:1,b:2\ng:+1|g|#b:2\ns:z|s|#b:9\ns:x|s|#a:1\nh:2|h|#b:1");
        // The cached handles of the old families must not be used any more.
        let snap = feed(
            &mut ingest,
            b"c:10|c|#a:1\ns:w|s|#a:1\ng:+2|g|#a:1\nh:3|h|#a:1",
        );
        let names = |n: &str| {
            snap.family(n)
                .unwrap()
                .meta
                .label_names()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        for m in ["c", "g", "s", "h"] {
            assert_eq!(names(m), ["a", "b"], "{m}");
            assert_eq!(number(&snap, RELABELS, &[("metric", m)]), 1.0, "{m}");
        }
        assert_eq!(number(&snap, "c", &[("a", "1"), ("b", "")]), 15.0);
        assert_eq!(number(&snap, "c", &[("a", "2"), ("b", "")]), 7.0);
        assert_eq!(number(&snap, "c", &[("a", "1"), ("b", "2")]), 1.0);
        assert_eq!(number(&snap, "g", &[("a", "1"), ("b", "")]), 5.0);
        assert_eq!(number(&snap, "g", &[("a", ""), ("b", "2")]), 1.0);
        assert_eq!(hist(&snap, "h", &[("a", "1"), ("b", "")]), (2, 4.0));
        assert_eq!(hist(&snap, "h", &[("a", ""), ("b", "1")]), (1, 2.0));
        // The published count of the closed window moved; the open window's members too.
        assert_eq!(number(&snap, "s", &[("a", "1"), ("b", "")]), 2.0);
        assert_eq!(number(&snap, "s", &[("a", ""), ("b", "9")]), 0.0);
        ingest.rotate_sets();
        let snap = ingest.registry().snapshot();
        assert_eq!(number(&snap, "s", &[("a", "1"), ("b", "")]), 2.0); // x, w
        assert_eq!(number(&snap, "s", &[("a", ""), ("b", "9")]), 1.0);
    }

    #[test]
    fn type_conflicts_are_counted_and_dropped() {
        let mut ingest = ingest();
        ingest.ingest_packet(b"x:1|c\nx:5|g\nx:5|g\nx:1|ms\nx:2|c\ny:1|h\ny:2|d\ny:3|ms");
        // A name registered by someone else with another definition.
        testing::family(ingest.registry().counter("taken"));
        let snap = feed(&mut ingest, b"taken:1|g\ntaken:1|g|#a:b");
        assert_eq!(number(&snap, "x", &[]), 3.0);
        assert_eq!(hist(&snap, "y", &[]), (2, 3.0));
        assert_eq!(parse_errors(&snap, "type_conflict"), 6.0);
    }

    #[test]
    fn names_that_render_alike_in_prometheus_are_dropped_as_name_collisions() {
        let mut ingest = ingest();
        let registry = ingest.registry();
        // A host-collector family of the name, as the agent registers it.
        testing::family(registry.counter_f64("system.cpu.time").unit(Unit::Seconds));
        testing::family(registry.counter_f64("system.load"));
        let snap = feed(
            &mut ingest,
            b"a.b:1|c\na_b:1|c\na-b:5|c\na.b:2|c\nsystem_load:1|c\nsystem_load:1|c",
        );
        assert_eq!(number(&snap, "a.b", &[]), 3.0);
        assert!(snap.family("a_b").is_none() && snap.family("a-b").is_none());
        assert!(snap.family("system_load").is_none());
        assert_eq!(parse_errors(&snap, "name_collision"), 4.0);
        assert_eq!(parse_errors_or_zero(&snap, "type_conflict"), 0.0);
        // A name seen before with another type is a type conflict, whatever its Prometheus name.
        let snap = feed(&mut ingest, b"a_b:1|g\na.b:1|g");
        assert_eq!(parse_errors(&snap, "type_conflict"), 2.0);
    }

    #[test]
    fn values_that_would_make_a_total_gauge_or_sum_infinite_are_dropped() {
        let snap = feed(
            &mut ingest(),
            b"c:1e308|c\nc:1e308|c\nc:1e308|c|@0.1\nc:1|c\n\
              g:+1e308|g\ng:+1e308|g\ng:-1e308|g\n\
              d:-1.7e308|g\nd:-1e308|g\n\
              h:1.7e308|h\nh:1.7e308|h\nh:1|h|@0.5\n\
              t:1.7e308|ms\nt:1.7e308:1e308|ms\n\
              w:1e307|h|@0.01\n\
              n:inf|c\nn:nan|g\nn:1e999|g\nn:-inf|g",
        );
        assert_eq!(number(&snap, "c", &[]), 1e308 + 1.0);
        assert_eq!(number(&snap, "g", &[]), 0.0);
        assert_eq!(number(&snap, "d", &[]), -1.7e308);
        assert_eq!(hist(&snap, "h", &[]), (3, 1.7e308 + 2.0));
        // Timers divide by 1000 first, so these fit.
        assert_eq!(hist(&snap, "t", &[]).0, 3);
        // 1e307 observed 100 times would pass f64::MAX.
        assert_eq!(hist(&snap, "w", &[]).0, 0);
        assert_eq!(
            number(&snap, DROPPED, &[("reason", "non_finite")]),
            6.0,
            "c twice, g, d, h, w"
        );
        assert_eq!(parse_errors(&snap, "bad_value"), 4.0);
        for f in &snap.families {
            for series in &f.series {
                match &series.point {
                    sonde_core::Point::Histogram(h) => {
                        assert!(h.sum().is_finite(), "{}", f.meta.name())
                    }
                    p => assert!(
                        p.number().unwrap().as_f64().is_finite(),
                        "{}",
                        f.meta.name()
                    ),
                }
            }
        }
    }

    #[test]
    fn the_metric_limit_drops_new_names() {
        let mut ingest = Ingest::new(Registry::new()).max_metrics(2);
        let snap = feed(&mut ingest, b"a:1|c\nb:1|c\nc:1|c\nc:1|c\na:1|c");
        assert_eq!(number(&snap, "a", &[]), 2.0);
        assert!(snap.family("c").is_none());
        assert_eq!(
            number(&snap, DROPPED, &[("reason", "too_many_metrics")]),
            2.0
        );
        assert_eq!(ingest.metric_count(), 2);
    }

    #[test]
    fn the_series_and_label_limits() {
        let mut ingest = Ingest::new(Registry::new()).max_series(2).max_labels(2);
        ingest.ingest_packet(b"a:1|c|#k:1\na:1|c|#k:2\na:1|c|#k:3\na:1|c|#k:4");
        ingest.ingest_packet(b"s:1|s|#k:1\ns:1|s|#k:2\ns:1|s|#k:3\ns:2|s|#k:4");
        let snap = feed(
            &mut ingest,
            b"b:1|c|#x:1,y:2,z:3\nb:1|c|#x:1,y:2\nb:1|c|#z:1",
        );
        let a = snap.family("a").unwrap();
        assert_eq!(a.series.len(), 3);
        assert!(a.series.iter().any(|s| s.is_overflow()));
        let s = snap.family("s").unwrap();
        assert!(s.series.iter().any(|s| s.is_overflow()));
        assert_eq!(
            number(&snap, DROPPED, &[("reason", "too_many_labels")]),
            2.0
        );
        assert_eq!(number(&snap, "b", &[("x", "1"), ("y", "2")]), 1.0);
    }

    #[test]
    fn mapping_renames_labels_and_drops() {
        let mapper = Mapper::new(vec![
            MappingRule::new("api.*.requests")
                .name("http.requests")
                .label("route", "$1"),
            MappingRule::new("debug.*").drop(),
        ])
        .unwrap();
        let snap = feed(
            &mut Ingest::new(Registry::new()).mapper(mapper),
            b"api.users.requests:1|c\napi.orders.requests:2|c|#route:ignored,code:200\ndebug.x:1|c\nweird name!:1|c",
        );
        // `code` widened the family after the first line; the first series kept its count.
        assert_eq!(
            number(&snap, "http.requests", &[("route", "users"), ("code", "")]),
            1.0
        );
        assert_eq!(
            number(
                &snap,
                "http.requests",
                &[("route", "orders"), ("code", "200")]
            ),
            2.0
        );
        assert!(snap.family("debug.x").is_none());
        assert_eq!(number(&snap, "weird_name_", &[]), 1.0);
        assert_eq!(number(&snap, DROPPED, &[("reason", "mapping")]), 1.0);
    }

    #[test]
    fn errors_and_ignored_lines_are_counted() {
        let mut ingest = ingest();
        let long_name = format!("{}:1|c", "n".repeat(300));
        ingest.ingest_packet(b"a:x|c\nb:1|zz\n_e{1,1}:a|b\n_sc|check|0\nok:1|c\nn:-1|c");
        ingest.ingest_packet(b"stamped:2|c|T1700000000");
        let snap = feed(&mut ingest, long_name.as_bytes());
        let reason = |r| number(&snap, PARSE_ERRORS, &[("reason", r)]);
        assert_eq!(reason("bad_value"), 1.0);
        assert_eq!(reason("bad_type"), 1.0);
        assert_eq!(reason("negative_counter"), 1.0);
        assert_eq!(reason("too_long"), 1.0);
        assert_eq!(number(&snap, IGNORED, &[("kind", "event")]), 1.0);
        assert_eq!(number(&snap, IGNORED, &[("kind", "service_check")]), 1.0);
        // A timestamp is left aside, counted, and the value recorded.
        assert_eq!(number(&snap, IGNORED, &[("kind", "timestamp")]), 1.0);
        assert_eq!(number(&snap, "stamped", &[]), 2.0);
        assert_eq!(number(&snap, LINES, &[]), 8.0);
        assert_eq!(number(&snap, "ok", &[]), 1.0);
    }

    #[test]
    fn malformed_lines_are_logged_at_debug_with_rate_limiting() {
        let mut ingest = ingest();
        let long = format!("x:1|zz{}", "y".repeat(500));
        let ((), logs) = sonde_core::testing::capture_diagnostics(|| {
            ingest.ingest_packet(b"bad\x1b[31m line\xff\nok:1|c\nok:2|zz");
            ingest.ingest_packet(long.as_bytes());
            ingest.ingest_packet(b"ok:1|g");
        });
        assert_eq!(logs.len(), 1, "{logs:?}");
        let first = &logs[0];
        assert!(first.starts_with("DEBUG "), "{first}");
        assert!(first.contains("left_out_since_last_log=0"), "{first}");
        assert!(first.contains("reason=\"not_utf8\""), "{first}");
        assert!(first.contains("(the line is not valid UTF-8)"), "{first}");
        // Escaped: no raw control or non-UTF-8 byte reaches the log.
        assert!(first.contains(r#""bad\x1b[31m line\xff""#), "{first}");
        // Every rejected line is still counted.
        let snap = ingest.registry().snapshot();
        assert_eq!(parse_errors(&snap, "bad_type"), 2.0);
        assert_eq!(parse_errors(&snap, "type_conflict"), 1.0);

        // After the period, the next one is logged with the count left out, truncated.
        ingest.malformed_log.expire();
        let ((), logs) = sonde_core::testing::capture_diagnostics(|| {
            ingest.ingest_packet(long.as_bytes());
            ingest.ingest_packet(b"ok:1|g");
        });
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(logs[0].contains("left_out_since_last_log=3"), "{}", logs[0]);
        assert!(logs[0].contains(&format!("{}...", &long[..MAX_LOGGED_LINE])));
        assert!(!logs[0].contains(&long[..MAX_LOGGED_LINE + 1]));
    }

    #[test]
    fn the_handle_cache_is_bounded_and_consistent() {
        let mut ingest = ingest();
        ingest.max_cached = 4;
        for i in 0..20 {
            ingest.ingest_packet(format!("c:1|c|#k:{}", i % 6).as_bytes());
        }
        assert!(ingest.cache.len() <= 4);
        let snap = ingest.registry().snapshot();
        let total: f64 = (0..6)
            .map(|i| number(&snap, "c", &[("k", &i.to_string())]))
            .sum();
        assert_eq!(total, 20.0);
    }

    #[test]
    fn idle_sets_expire_like_other_names_and_their_slots_are_reused() {
        let registry =
            Registry::with_budget(10_000, sonde_core::MemoryBudget::new(10_000, 1 << 30));
        let mut ingest = Ingest::new(registry.clone()).ttl(Duration::from_secs(10));
        let t0 = Instant::now();
        ingest.ingest_packet(b"users:a|s|#page:x\nusers:b|s|#page:y\nlive:1|s");
        ingest.rotate_sets();
        let snap = registry.snapshot();
        assert_eq!(number(&snap, "users", &[("page", "x")]), 1.0);
        let used = registry.budget_used().unwrap().0;
        drop(snap);
        // `live` keeps receiving, `users` idles for a TTL while windows keep closing.
        for k in 1..=3u64 {
            ingest.maintain(t0 + Duration::from_secs(5 * k));
            ingest.ingest_packet(b"live:1|s");
            ingest.rotate_sets();
        }
        let snap = registry.snapshot();
        assert!(
            snap.family("users").is_none(),
            "an idle set name must expire"
        );
        assert_eq!(number(&snap, "live", &[]), 1.0);
        assert!(
            registry.budget_used().unwrap().0 < used,
            "its series gave their budget back"
        );
        drop(snap);
        // The name comes back afresh, reusing a freed slot.
        let slots = ingest.sets.len();
        ingest.ingest_packet(b"users:c|s|#page:z\nusers:d|s|#page:z");
        ingest.rotate_sets();
        let snap = registry.snapshot();
        assert_eq!(number(&snap, "users", &[("page", "z")]), 2.0);
        assert!(snap.point("users", &[("page", "x")]).is_none());
        assert_eq!(ingest.sets.len(), slots);
        // The budget is visible as gauges.
        let gauge = |name, r| number(&snap, name, &[("resource", r)]);
        assert_eq!(gauge(sonde_core::BUDGET_LIMIT, "series"), 10_000.0);
        assert_eq!(
            gauge(sonde_core::BUDGET_LIMIT, "bytes"),
            (1u64 << 30) as f64
        );
        assert_eq!(
            gauge(sonde_core::BUDGET_USAGE, "series"),
            registry.budget_used().unwrap().0 as f64
        );
        assert!(gauge(sonde_core::BUDGET_USAGE, "bytes") > 0.0);
    }

    #[test]
    fn idle_names_expire_and_free_the_name_limit() {
        let mut ingest = Ingest::new(Registry::new())
            .max_metrics(3)
            .ttl(Duration::from_secs(10));
        let t0 = Instant::now();
        let snap = feed(
            &mut ingest,
            b"junk.1:1|c
junk.1:1|c|#route:/a
junk.2:1|ms
junk.3:1|g
keep:1|c",
        );
        assert_eq!(
            number(&snap, DROPPED, &[("reason", "too_many_metrics")]),
            1.0
        );
        assert_eq!(number(&snap, RELABELS, &[("metric", "junk.1")]), 1.0);
        assert!(snap.family("keep").is_none());
        drop(snap);
        // junk.3 stays in use; the others idle for a TTL.
        for k in 1..=3u32 {
            ingest.maintain(t0 + Duration::from_secs(5 * u64::from(k)));
            ingest.ingest_packet(b"junk.3:2|g");
        }
        assert_eq!(ingest.metric_count(), 3, "slots are kept for reuse");
        let snap = feed(
            &mut ingest,
            b"keep:1|c
keep:1|c
new:1|ms",
        );
        assert!(snap.family("junk.1").is_none() && snap.family("junk.2").is_none());
        // With their self-metric series.
        assert!(snap.point(RELABELS, &[("metric", "junk.1")]).is_none());
        assert_eq!(number(&snap, "junk.3", &[]), 2.0);
        assert_eq!(number(&snap, "keep", &[]), 2.0);
        assert_eq!(hist(&snap, "new", &[]), (1, 0.001));
        // A reused slot does not record into the expired name's family.
        let snap = feed(&mut ingest, b"junk.1:5|c");
        assert_eq!(
            number(&snap, DROPPED, &[("reason", "too_many_metrics")]),
            2.0
        );
    }

    #[test]
    fn refused_lines_are_not_cached_and_the_cache_is_bounded_in_bytes() {
        let registry = Registry::new();
        let mut ingest = Ingest::new(registry.clone()).max_metrics(1);
        ingest.ingest_packet(b"ok:1|c");
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for i in 0..100 {
            let line = format!(
                "{long}{i}:1|c
other{i}:1|c
{}:1|c",
                "y".repeat(5000)
            );
            ingest.ingest_packet(line.as_bytes());
        }
        assert_eq!(ingest.cache.len() + ingest.old_cache.len(), 1);
        assert_eq!(ingest.mapper.cached("ok").map(|m| m.is_some()), Some(true));
        assert!(ingest.mapper.cached("other1").is_none());
        // Accepted lines with long tags: the cache starts over before 16 MiB.
        let mut ingest = Ingest::new(registry.clone()).max_series(1_000_000);
        let tag = "v".repeat(10_000);
        for i in 0..3000 {
            ingest.ingest_packet(format!("t:1|c|#k:{tag}{i}").as_bytes());
        }
        assert!(ingest.cache_bytes <= MAX_CACHE_BYTES);
        assert!(ingest.cache.len() + ingest.old_cache.len() < 2 * MAX_CACHE_BYTES / 10_000);
    }

    #[test]
    fn the_registry_budget_refuses_new_names_and_series() {
        let registry = Registry::with_budget(10_000, sonde_core::MemoryBudget::new(100, 1 << 30));
        let mut ingest = Ingest::new(registry.clone()).ttl(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..150 {
            ingest.ingest_packet(format!("lat:1|ms|#id:{i}").as_bytes());
        }
        let snap = feed(&mut ingest, b"late:1|c");
        assert_eq!(registry.budget_used().unwrap().0, 100);
        let lat = snap.family("lat").unwrap().series.len() - 1;
        assert_eq!(lat, 100);
        assert_eq!(
            number(
                &snap,
                sonde_core::SERIES_REFUSED,
                &[("metric", "lat"), ("reason", "budget")]
            ),
            (150 - lat) as f64
        );
        assert_eq!(number(&snap, DROPPED, &[("reason", "budget")]), 1.0);
        assert!(snap.family("late").is_none());
        // Overflow handles are not cached: once there is room, label sets get their series.
        drop(snap);
        assert_eq!(ingest.cache.len(), lat);
        // The flood stops: after the TTL its name expires and gives its share back.
        ingest.maintain(t0 + Duration::from_secs(6));
        ingest.maintain(t0 + Duration::from_secs(12));
        assert!(registry.snapshot().family("lat").is_none());
        assert_eq!(registry.budget_used().unwrap().0, 0);
        assert_eq!(number(&feed(&mut ingest, b"late:1|c"), "late", &[]), 1.0);
    }
}
