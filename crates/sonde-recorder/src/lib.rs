//! # sonde-recorder
//!
//! A [`metrics::Recorder`] that sends everything instrumented with the
//! [`metrics`](https://docs.rs/metrics) crate's macros (`counter!`, `gauge!`, `histogram!`,
//! `describe_*!`) into a sonde [`Registry`], so libraries built on the `metrics` facade show up
//! next to sonde's own families in every exporter.
//!
//! ```
//! use metrics::{Unit, counter, describe_histogram, gauge, histogram};
//! use sonde_core::{Registry, testing};
//! use sonde_recorder::SondeRecorder;
//!
//! let registry = Registry::new();
//! let recorder = SondeRecorder::new(registry.clone());
//!
//! // In tests, as a local recorder (this thread, this closure); in an application, install it
//! // once at startup with `recorder.install()?` (or `sonde_recorder::install()?` for the global
//! // registry).
//! recorder.with_local(|| {
//!     describe_histogram!("http.server.request.duration", Unit::Seconds, "Duration of HTTP server requests.");
//!     counter!("http_requests_total", "method" => "GET").increment(3);
//!     gauge!("queue.depth").set(7.0);
//!     histogram!("http.server.request.duration", "route" => "/users").record(0.012);
//! });
//!
//! let snap = registry.snapshot();
//! testing::assert_counter(&snap, "http_requests_total", &[("method", "GET")], 3.0);
//! testing::assert_gauge(&snap, "queue.depth", &[], 7.0);
//! testing::assert_histogram(&snap, "http.server.request.duration", &[("route", "/users")], 1, 0.012);
//! let meta = &snap.family("http.server.request.duration").unwrap().meta;
//! assert_eq!(meta.unit(), &sonde_core::Unit::Seconds);
//! assert_eq!(meta.description(), "Duration of HTTP server requests.");
//! ```
//!
//! ## Instruments
//!
//! | `metrics` | sonde | notes |
//! |---|---|---|
//! | `Counter` | [`Counter`] (`u64`) | `absolute(v)`: see below |
//! | `Gauge` | [`Gauge<f64>`](Gauge) | `increment`, `decrement`, `set` |
//! | `Histogram` | [`Histogram`] | `record(v)` observes `v` |
//!
//! `absolute(v)` on a counter: sonde counters only add, so each key's handle remembers the
//! largest value passed to `absolute` and adds the growth; smaller values (decreases) are
//! ignored. Increments and absolute values on the same key add up independently (the counter
//! holds the sum of the increments plus the largest absolute value).
//!
//! ## Names
//!
//! `metrics` names are arbitrary strings; a sonde name matches `[A-Za-z][A-Za-z0-9_.\-/]*`
//! (at most 255 bytes). Valid names are kept as they are (`http_requests_total`,
//! `my.lib.latency`, `foo-bar`); otherwise invalid characters become `_`, a name that does not
//! start with a letter gets the prefix `m_`, and long names are cut to 255 bytes (see
//! [`sanitize_metric_name`]). Label keys become valid label names the same way (`content-type`
//! → `content_type`, `2xx` → `_2xx`, `__x` → `_x`, and `le`/`quantile` on histograms → `le_`,
//! `quantile_`; see [`sanitize_label_name`]). Label values are kept as they are. Names that
//! sanitize to the same string share one family.
//!
//! ## Label sets
//!
//! A `metrics` name can be used with different label keys at different call sites; a sonde
//! family has a fixed list of label names. The family is registered the first time its name is
//! seen, with that key's label keys, sanitized and **sorted** (so key order never matters).
//! Every later key of that name is mapped onto those label names:
//!
//! - a label the family has takes the key's value;
//! - a label the family has but the key lacks gets the empty value `""` (which Prometheus treats
//!   as "no such label", so `{method="GET"}` and `{method="GET", status=""}` render alike);
//! - a label the key has but the family lacks is **dropped** and counted in
//!   `sonde.recorder.errors{reason="label_mismatch"}`.
//!
//! To give a name the union of the label keys its call sites use, register the family in the
//! sonde registry before the first `metrics` call: the recorder then adopts the existing family
//! (same kind; its unit, description and label names win) and maps every key onto it.
//!
//! ## Units and descriptions
//!
//! `describe_*!` calls made before a name's first registration set the family's unit (see
//! [`sonde_unit`] for the mapping) and description. sonde fixes both at registration, so a
//! describe call that comes later and would change them is ignored and counted
//! (`reason="late_describe"`). Describe in your initialization code, before recording.
//!
//! Histograms get buckets for their unit: seconds (described, or by name: `_seconds`,
//! `.seconds`, `.duration` suffixes) get sonde's 0.5 ms–60 s buckets, bytes (described, or by
//! name: `_bytes`, `.bytes`) 64 B–1 GiB, milliseconds, microseconds and nanoseconds the seconds
//! buckets in their unit, KiB to TiB the bytes buckets in their unit; anything else the
//! OpenTelemetry defaults. [`Builder::histogram_buckets`] sets explicit buckets per name. Values
//! are never rescaled.
//!
//! ## Caching and memory
//!
//! The macros call `register_*` on every invocation unless the caller keeps the handle. The
//! recorder caches the handle per [`metrics::Key`] (found by the hash the key computed when it
//! was built; one read lock on one of 8 shards), so a repeated `counter!(...)` costs a lookup and
//! the recording itself one atomic operation. The cache holds at most
//! [`DEFAULT_MAX_CACHED_KEYS`] keys ([`Builder::max_cached_keys`]); past that, new keys are
//! resolved through their family on every call (correct, slower), and `absolute` on their
//! counters is ignored and counted (`reason="absolute_uncached"`), because each call gets a new
//! handle that cannot know the previous value. sonde's series limits apply as usual (2000 series
//! per family by default, then the overflow series).
//!
//! ## Errors
//!
//! Nothing panics and nothing is silently lost: what cannot be recorded as sent is counted in
//! [`RECORDER_ERRORS`] (`sonde.recorder.errors{metric, reason}`, `metric` being the `metrics`
//! name), once per distinct key (not per observation), with the reasons in [`reason`]. Keys
//! whose family cannot be registered get no-op handles.
//!
//! `metrics` [`Metadata`] (target, level, module) is ignored.
#![warn(missing_docs)]

mod cache;
mod handles;
mod names;
mod units;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use metrics::{Key, KeyName, Metadata, SharedString};
use sonde_core::{
    Counter, Family, FamilyBuilder, Gauge, Histogram, Instrument, Kind, NumberKind, Registry,
};

use cache::KeyCache;
use handles::{Absolute, CounterHandle, GaugeHandle, HistogramHandle};
pub use names::{METRIC_NAME_PREFIX, sanitize_label_name, sanitize_metric_name};
pub use units::sonde_unit;

/// Self-metric: `metrics` keys that could not be recorded as sent, by `metric` and `reason`.
pub const RECORDER_ERRORS: &str = "sonde.recorder.errors";

/// The default number of keys whose handles the recorder caches.
pub const DEFAULT_MAX_CACHED_KEYS: usize = 65_536;

/// Values of the `reason` label of [`RECORDER_ERRORS`].
pub mod reason {
    /// The name is empty: there is nothing to sanitize into a name. No-op handle.
    pub const INVALID_NAME: &str = "invalid_name";
    /// The (sanitized) name is registered as another kind or number type, by this recorder
    /// (e.g. a `metrics` counter and gauge with one name) or in the registry. No-op handle.
    pub const CONFLICT: &str = "conflict";
    /// The histogram buckets given with [`Builder::histogram_buckets`](crate::Builder::histogram_buckets)
    /// are unusable. No-op handle.
    pub const INVALID_HISTOGRAM: &str = "invalid_histogram";
    /// The registry refused the family for another reason. No-op handle.
    pub const REGISTRATION: &str = "registration";
    /// The key has labels its family does not; they were dropped.
    pub const LABEL_MISMATCH: &str = "label_mismatch";
    /// The key has two labels with the same (sanitized) name; the later one was dropped.
    pub const DUPLICATE_LABEL: &str = "duplicate_label";
    /// A `describe_*!` came after the family was registered and would have changed its unit or
    /// description; it was ignored.
    pub const LATE_DESCRIBE: &str = "late_describe";
    /// `absolute` on a counter handle that is not cached (the key cache is full); ignored.
    pub const ABSOLUTE_UNCACHED: &str = "absolute_uncached";
}

/// Why [`SondeRecorder::install`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// `metrics` accepts one global recorder per process, and one is already installed.
    #[error(
        "a global metrics recorder is already installed (metrics::set_global_recorder succeeds once per process); install the sonde recorder once, at startup, before any other recorder, or use it as a local recorder (SondeRecorder::with_local)"
    )]
    AlreadyInstalled,
}

/// Configures a [`SondeRecorder`]; start with [`SondeRecorder::builder`].
#[derive(Debug, Clone)]
#[must_use = "call .build() to get the recorder"]
pub struct Builder {
    registry: Registry,
    max_cached_keys: usize,
    max_series: Option<usize>,
    buckets: HashMap<String, Vec<f64>>,
}

impl Builder {
    /// How many keys' handles to cache (default [`DEFAULT_MAX_CACHED_KEYS`]); see the crate
    /// docs on caching.
    pub fn max_cached_keys(mut self, n: usize) -> Self {
        self.max_cached_keys = n;
        self
    }

    /// The series limit of the families the recorder registers (default: the registry's).
    pub fn max_series(mut self, n: usize) -> Self {
        self.max_series = Some(n);
        self
    }

    /// Explicit bucket upper bounds for the histogram with this `metrics` name (finite,
    /// strictly increasing), instead of the unit's defaults.
    pub fn histogram_buckets(
        mut self,
        name: impl Into<String>,
        bounds: impl Into<Vec<f64>>,
    ) -> Self {
        self.buckets.insert(name.into(), bounds.into());
        self
    }

    /// Builds the recorder (and registers its self-metric family, [`RECORDER_ERRORS`]).
    pub fn build(self) -> SondeRecorder {
        let errors = self
            .registry
            .counter(RECORDER_ERRORS)
            .description("metrics-crate keys that could not be recorded as sent, by metrics name and reason (see sonde_recorder::reason).")
            .labels(["metric", "reason"])
            .build()
            .ok();
        SondeRecorder {
            inner: Arc::new(Inner {
                registry: self.registry,
                errors,
                counters: KeyCache::new(),
                gauges: KeyCache::new(),
                histograms: KeyCache::new(),
                cached: AtomicUsize::new(0),
                max_cached: self.max_cached_keys,
                max_series: self.max_series,
                buckets: self.buckets,
                families: Mutex::new(HashMap::new()),
                described: Mutex::new(HashMap::new()),
            }),
        }
    }
}

/// A [`metrics::Recorder`] that records into a sonde [`Registry`]. Cheap to clone (an `Arc`);
/// clones share their state.
///
/// See the [crate docs](crate) for how names, labels, units and descriptions are mapped.
#[derive(Clone)]
pub struct SondeRecorder {
    inner: Arc<Inner>,
}

impl fmt::Debug for SondeRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SondeRecorder")
            .field("registry", &self.inner.registry)
            .field("cached_keys", &self.cached_keys())
            .finish_non_exhaustive()
    }
}

/// Installs a recorder on [`Registry::global`] as the global `metrics` recorder and returns it.
///
/// ```
/// let recorder = sonde_recorder::install()?;
/// metrics::counter!("jobs_total").increment(1);
/// assert!(sonde_recorder::install().is_err()); // once per process
/// # let _ = recorder;
/// # Ok::<(), sonde_recorder::InstallError>(())
/// ```
pub fn install() -> Result<SondeRecorder, InstallError> {
    let recorder = SondeRecorder::new(Registry::global().clone());
    recorder.install()?;
    Ok(recorder)
}

impl SondeRecorder {
    /// A recorder into `registry`, with the defaults.
    pub fn new(registry: Registry) -> Self {
        Self::builder(registry).build()
    }

    /// Starts configuring a recorder into `registry`.
    pub fn builder(registry: Registry) -> Builder {
        Builder {
            registry,
            max_cached_keys: DEFAULT_MAX_CACHED_KEYS,
            max_series: None,
            buckets: HashMap::new(),
        }
    }

    /// The registry this recorder records into.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Installs (a clone of) this recorder as the process-wide `metrics` recorder
    /// ([`metrics::set_global_recorder`]). Possible once per process.
    pub fn install(&self) -> Result<(), InstallError> {
        metrics::set_global_recorder(self.clone()).map_err(|_| InstallError::AlreadyInstalled)
    }

    /// Runs `f` with this recorder as the `metrics` recorder of the current thread
    /// ([`metrics::with_local_recorder`]): for tests, without touching the global recorder.
    pub fn with_local<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(self, f)
    }

    /// How many keys' handles are cached.
    pub fn cached_keys(&self) -> usize {
        let i = &*self.inner;
        i.counters.len() + i.gauges.len() + i.histograms.len()
    }

    fn register<M: Mapped>(&self, key: &Key) -> M::Handle {
        let inner = &*self.inner;
        let cache = M::cache(inner);
        if let Some(h) = cache.get(key) {
            return h;
        }
        cache.get_or_make(
            key,
            || inner.reserve_cache_slot(),
            |cached| inner.resolve::<M>(key, cached),
        )
    }
}

impl metrics::Recorder for SondeRecorder {
    fn describe_counter(
        &self,
        key: KeyName,
        unit: Option<metrics::Unit>,
        description: SharedString,
    ) {
        self.inner.describe(Kind::Counter, &key, unit, &description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<metrics::Unit>, description: SharedString) {
        self.inner.describe(Kind::Gauge, &key, unit, &description);
    }

    fn describe_histogram(
        &self,
        key: KeyName,
        unit: Option<metrics::Unit>,
        description: SharedString,
    ) {
        self.inner
            .describe(Kind::Histogram, &key, unit, &description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> metrics::Counter {
        self.register::<Counter>(key)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> metrics::Gauge {
        self.register::<Gauge<f64>>(key)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        self.register::<Histogram>(key)
    }
}

/// What `describe_*!` said about a name.
#[derive(Clone)]
struct Described {
    unit: Option<metrics::Unit>,
    description: String,
}

/// A family this recorder registered or adopted, by sanitized name.
enum Entry {
    Counter(Family<Counter>),
    Gauge(Family<Gauge<f64>>),
    Histogram(Family<Histogram>),
}

impl Entry {
    fn kind_and_meta(&self) -> (Kind, &sonde_core::FamilyMeta) {
        match self {
            Entry::Counter(f) => (Kind::Counter, f.meta()),
            Entry::Gauge(f) => (Kind::Gauge, f.meta()),
            Entry::Histogram(f) => (Kind::Histogram, f.meta()),
        }
    }
}

struct Inner {
    registry: Registry,
    errors: Option<Family<Counter>>,
    counters: KeyCache<metrics::Counter>,
    gauges: KeyCache<metrics::Gauge>,
    histograms: KeyCache<metrics::Histogram>,
    cached: AtomicUsize,
    max_cached: usize,
    max_series: Option<usize>,
    buckets: HashMap<String, Vec<f64>>,
    families: Mutex<HashMap<String, Entry>>,
    described: Mutex<HashMap<(Kind, String), Described>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Updates are single inserts: a panic elsewhere cannot leave a map half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn count_error(&self, metric: &str, reason: &str) {
        if let Some(f) = &self.errors {
            f.with(&[metric, reason]).inc();
        }
    }

    fn reserve_cache_slot(&self) -> bool {
        if self.cached.fetch_add(1, Relaxed) < self.max_cached {
            true
        } else {
            self.cached.fetch_sub(1, Relaxed);
            false
        }
    }

    fn describe(&self, kind: Kind, key: &KeyName, unit: Option<metrics::Unit>, description: &str) {
        let metric = key.as_str();
        if let Some(name) = sanitize_metric_name(metric)
            && let Some(entry) = lock(&self.families).get(&*name)
        {
            let (existing, meta) = entry.kind_and_meta();
            let changes_unit = unit.is_some_and(|u| sonde_unit(u) != *meta.unit());
            if existing == kind && (changes_unit || meta.description() != description) {
                self.count_error(metric, reason::LATE_DESCRIBE);
            }
        }
        lock(&self.described).insert(
            (kind, metric.to_owned()),
            Described {
                unit,
                description: description.to_owned(),
            },
        );
    }

    fn resolve<M: Mapped>(&self, key: &Key, cached: bool) -> M::Handle {
        let Some(family) = self.family_for::<M>(key) else {
            return M::noop();
        };
        let values = self.label_values(&family, key);
        M::wrap(family.with(&values), cached, self, key.name())
    }

    /// The family for `key`'s name: the one registered or adopted before, or a new one with
    /// `key`'s label names.
    fn family_for<M: Mapped>(&self, key: &Key) -> Option<Family<M>> {
        let metric = key.name();
        let Some(name) = sanitize_metric_name(metric) else {
            self.count_error(metric, reason::INVALID_NAME);
            return None;
        };
        let mut families = lock(&self.families);
        if let Some(entry) = families.get(&*name) {
            let family = M::family(entry).cloned();
            if family.is_none() {
                self.count_error(metric, reason::CONFLICT);
            }
            return family;
        }
        let mut labels: Vec<String> = Vec::with_capacity(key.labels().len());
        for label in key.labels() {
            let l = sanitize_label_name(label.key(), M::RESERVED);
            if !labels.iter().any(|x| *x == l) {
                labels.push(l.into_owned());
            }
        }
        labels.sort_unstable();
        let described = lock(&self.described)
            .get(&(M::KIND_OF, metric.to_owned()))
            .cloned();
        let unit = described.as_ref().and_then(|d| d.unit).or_else(|| {
            if M::KIND_OF == Kind::Histogram {
                units::histogram_unit_from_name(metric)
            } else {
                None
            }
        });
        let mut builder = self
            .registry
            .family::<M>(name.to_string())
            .labels(labels)
            .unit(unit.map(sonde_unit).unwrap_or_default());
        if let Some(d) = described {
            builder = builder.description(d.description);
        }
        if let Some(n) = self.max_series {
            builder = builder.max_series(n);
        }
        builder = M::configure(builder, self, metric, unit);
        let result = match builder.build() {
            Ok(f) => Ok(f),
            Err(sonde_core::Error::Conflict { .. }) => {
                self.adopt::<M>(&name).ok_or(reason::CONFLICT)
            }
            Err(sonde_core::Error::InvalidHistogram { .. }) => Err(reason::INVALID_HISTOGRAM),
            Err(_) => Err(reason::REGISTRATION),
        };
        match result {
            Ok(family) => {
                families.insert(name.into_owned(), M::entry(family.clone()));
                Some(family)
            }
            Err(reason) => {
                self.count_error(metric, reason);
                None
            }
        }
    }

    /// The family already registered as `name`, if it has the kind and number type `M` needs:
    /// its definition wins over what the `metrics` side would have registered.
    fn adopt<M: Mapped>(&self, name: &str) -> Option<Family<M>> {
        let snapshot = self.registry.snapshot_families(&[name]);
        let meta = &snapshot.family(name)?.meta;
        if meta.kind() != M::KIND_OF || meta.number_kind() != M::NUMBER_OF {
            return None;
        }
        self.registry
            .family::<M>(name.to_owned())
            .description(meta.description().to_owned())
            .unit(meta.unit().clone())
            .labels(meta.label_names().map(str::to_owned).collect::<Vec<_>>())
            .build()
            .ok()
    }

    /// `key`'s label values in the order of `family`'s label names: `""` for a label the key
    /// lacks; labels the family lacks and repeated labels are dropped and counted.
    fn label_values<'k, M: Mapped>(&self, family: &Family<M>, key: &'k Key) -> Vec<&'k str> {
        let names: Vec<&str> = family.meta().label_names().collect();
        let mut values: Vec<Option<&'k str>> = vec![None; names.len()];
        let (mut extra, mut duplicate) = (false, false);
        for label in key.labels() {
            let l = sanitize_label_name(label.key(), M::RESERVED);
            match names.iter().position(|n| *n == l) {
                Some(i) if values[i].is_none() => values[i] = Some(label.value()),
                Some(_) => duplicate = true,
                None => extra = true,
            }
        }
        if extra {
            self.count_error(key.name(), reason::LABEL_MISMATCH);
        }
        if duplicate {
            self.count_error(key.name(), reason::DUPLICATE_LABEL);
        }
        values.into_iter().map(|v| v.unwrap_or("")).collect()
    }
}

/// The sonde instruments `metrics` instruments map to.
trait Mapped: Instrument {
    const KIND_OF: Kind;
    const NUMBER_OF: NumberKind;
    const RESERVED: &'static [&'static str] = &[];
    type Handle: Clone;
    fn cache(inner: &Inner) -> &KeyCache<Self::Handle>;
    fn noop() -> Self::Handle;
    fn wrap(self, cached: bool, inner: &Inner, metric: &str) -> Self::Handle;
    fn entry(family: Family<Self>) -> Entry;
    fn family(entry: &Entry) -> Option<&Family<Self>>;
    fn configure<'r>(
        builder: FamilyBuilder<'r, Self>,
        _inner: &Inner,
        _metric: &str,
        _unit: Option<metrics::Unit>,
    ) -> FamilyBuilder<'r, Self> {
        builder
    }
}

/// The items of [`Mapped`] that only name the kind: its `metrics` handle type, the cache of
/// those handles in [`Inner`] and its [`Entry`] variant.
macro_rules! mapped_kind {
    ($handle:ty, $cache:ident, $variant:ident) => {
        type Handle = $handle;
        fn cache(inner: &Inner) -> &KeyCache<$handle> {
            &inner.$cache
        }
        fn noop() -> $handle {
            <$handle>::noop()
        }
        fn entry(family: Family<Self>) -> Entry {
            Entry::$variant(family)
        }
        fn family(entry: &Entry) -> Option<&Family<Self>> {
            match entry {
                Entry::$variant(f) => Some(f),
                _ => None,
            }
        }
    };
}

impl Mapped for Counter {
    const KIND_OF: Kind = Kind::Counter;
    const NUMBER_OF: NumberKind = NumberKind::U64;
    mapped_kind!(metrics::Counter, counters, Counter);
    fn wrap(self, cached: bool, inner: &Inner, metric: &str) -> metrics::Counter {
        let absolute = if cached {
            Absolute::Tracked(AtomicU64::new(0))
        } else {
            Absolute::Untracked {
                errors: inner.errors.clone(),
                metric: metric.into(),
            }
        };
        metrics::Counter::from_arc(Arc::new(CounterHandle {
            counter: self,
            absolute,
        }))
    }
}

impl Mapped for Gauge<f64> {
    const KIND_OF: Kind = Kind::Gauge;
    const NUMBER_OF: NumberKind = NumberKind::F64;
    mapped_kind!(metrics::Gauge, gauges, Gauge);
    fn wrap(self, _: bool, _: &Inner, _: &str) -> metrics::Gauge {
        metrics::Gauge::from_arc(Arc::new(GaugeHandle(self)))
    }
}

impl Mapped for Histogram {
    const KIND_OF: Kind = Kind::Histogram;
    const NUMBER_OF: NumberKind = NumberKind::F64;
    const RESERVED: &'static [&'static str] = &["le", "quantile"];
    mapped_kind!(metrics::Histogram, histograms, Histogram);
    fn wrap(self, _: bool, _: &Inner, _: &str) -> metrics::Histogram {
        metrics::Histogram::from_arc(Arc::new(HistogramHandle(self)))
    }
    fn configure<'r>(
        builder: FamilyBuilder<'r, Self>,
        inner: &Inner,
        metric: &str,
        unit: Option<metrics::Unit>,
    ) -> FamilyBuilder<'r, Self> {
        if let Some(bounds) = inner.buckets.get(metric) {
            builder.buckets(bounds.clone())
        } else if let Some((bounds, min_exponent)) = unit.and_then(units::scaled_buckets) {
            builder.buckets(bounds).min_exponent(min_exponent)
        } else {
            builder
        }
    }
}
