//! The registry: families by name, builders, self-metrics, collection.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use crate::budget::{BudgetState, MemoryBudget};
use crate::error::describe;
use crate::family::{ErasedFamily, Family, SelfMetrics, VisitEvent};
use crate::histogram::{Histogram, Precision};
use crate::instrument::{Counter, Gauge, Instrument, InstrumentOptions, UpDownCounter};
use crate::name::{prometheus_name, validate_label_name, validate_metric_name};
use crate::select::Selection;
use crate::series::{mono_secs, unix_nanos};
use crate::snapshot::{FamilyMeta, SeriesSnapshot, Snapshot};
use crate::{Error, Kind, Unit};

/// Receives a registry's families and series one at a time; see [`Registry::visit`].
pub trait Visitor {
    /// A family begins; `series` of its series follow (possibly none).
    fn family(&mut self, meta: &Arc<FamilyMeta>, series: usize);
    /// One series of the current family, read just now (cumulative).
    fn series(&mut self, meta: &Arc<FamilyMeta>, series: &SeriesSnapshot);
}

/// The default per-family series limit.
pub const DEFAULT_MAX_SERIES: usize = 2000;

/// Self-metric: label sets sent to a family's overflow series.
pub const SERIES_OVERFLOW: &str = "sonde.series.overflow";
/// Self-metric: live series per family.
pub const SERIES_ACTIVE: &str = "sonde.series.active";
/// Self-metric: instrumentation mistakes (wrong label counts...).
pub const INSTRUMENTATION_ERRORS: &str = "sonde.instrumentation.errors";
/// Self-metric: new label sets refused (`reason="budget"`: the registry's memory budget) and
/// recorded in their family's overflow series.
pub const SERIES_REFUSED: &str = "sonde.series.refused";
/// Self-metric: the memory budget's limits (`resource` = `series` or `bytes`); only with a budget.
pub const BUDGET_LIMIT: &str = "sonde.memory_budget.limit";
/// Self-metric: what is taken from the memory budget (`resource` = `series` or `bytes`).
pub const BUDGET_USAGE: &str = "sonde.memory_budget.usage";

type Hook = Arc<dyn Fn() + Send + Sync>;

/// Collect hooks with the id a [`CollectorGuard`] removes them by.
#[derive(Default)]
struct Hooks {
    next_id: u64,
    hooks: Vec<(u64, Hook)>,
}

struct Inner {
    families: RwLock<BTreeMap<String, Arc<dyn ErasedFamily>>>,
    /// Prometheus name → family name, to refuse a second family rendering alike. Locked only
    /// while `families` is write-locked, after it.
    rendered: Mutex<std::collections::HashMap<String, String>>,
    hooks: RwLock<Hooks>,
    default_max_series: usize,
    overflow: Option<Family<Counter>>,
    errors: Option<Family<Counter>>,
    series_count: Option<Family<Gauge>>,
    refused: Option<Family<Counter>>,
    budget: Option<Arc<BudgetState>>,
    /// `sonde.memory_budget.limit` and `.usage`, registered only with a budget.
    budget_gauges: Option<(Family<Gauge>, Family<Gauge>)>,
    /// Histogram name → bucket boundaries added to whatever its builder asks for
    /// ([`Registry::add_bucket_boundaries`]).
    extra_bounds: Mutex<std::collections::HashMap<String, Vec<f64>>>,
}

/// The lock of a collector's state for one collection: waited for when `wait` (an explicit
/// `collect()`), else taken only if free (a collect hook skips a reading another thread is
/// making: it refreshes the same values). A poisoned lock is taken as it is: a collector leaves
/// its state usable at every step.
pub fn collection_lock<T>(
    state: &std::sync::Mutex<T>,
    wait: bool,
) -> Option<std::sync::MutexGuard<'_, T>> {
    if wait {
        return Some(state.lock().unwrap_or_else(|e| e.into_inner()));
    }
    match state.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Keeps a collect hook registered with [`Registry::register_collector`]; dropping it removes
/// the hook.
#[must_use = "dropping the guard removes the collect hook at once"]
#[derive(Debug)]
pub struct CollectorGuard {
    registry: std::sync::Weak<Inner>,
    id: u64,
}

impl Drop for CollectorGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.registry.upgrade() {
            let mut hooks = inner.hooks.write().unwrap_or_else(|e| e.into_inner());
            hooks.hooks.retain(|(id, _)| *id != self.id);
        }
    }
}

/// A set of families. Clone it freely (an `Arc`).
///
/// Use [`Registry::global`] in applications; create separate registries where isolation
/// matters (tests, libraries that export on their own).
///
/// ```
/// use sonde_core::{Registry, Temporality, Unit};
/// let registry = Registry::new();
/// let latency = registry.histogram("db.client.operation.duration").unit(Unit::Seconds).build()?;
/// latency.handle().observe(0.003);
/// let snapshot = registry.snapshot();
/// let point = snapshot.point("db.client.operation.duration", &[]).unwrap();
/// assert_eq!(point.histogram().unwrap().count(), 1);
/// # Ok::<(), sonde_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("families", &self.family_names())
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

static GLOBAL: LazyLock<Registry> = LazyLock::new(Registry::new);

/// Writes the typed shortcuts to [`Registry::family`]: `name => Type;` is a method `name` that
/// starts registering a family of `Type`, with the docs written above it.
macro_rules! family_shortcuts {
    ($($(#[$doc:meta])* $method:ident => $instrument:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $method(&self, name: impl Into<Cow<'static, str>>) -> FamilyBuilder<'_, $instrument> {
                self.family(name)
            }
        )*
    };
}

impl Registry {
    /// A new, empty registry (apart from its `sonde.*` self-metrics) with the default series limit.
    pub fn new() -> Self {
        Self::with_max_series(DEFAULT_MAX_SERIES)
    }

    /// A new registry whose families default to `max_series` series each.
    pub fn with_max_series(max_series: usize) -> Self {
        Self::build(max_series, None)
    }

    /// A new registry whose families default to `max_series` series each and whose series
    /// together stay within `budget` (see [`MemoryBudget`]). The self-metric families are not
    /// counted against it, nor are families named `sonde.*` (sonde's own, bounded, which report
    /// the refusals).
    pub fn with_budget(max_series: usize, budget: MemoryBudget) -> Self {
        Self::build(max_series, Some(budget))
    }

    /// The memory budget, if the registry has one.
    pub fn budget(&self) -> Option<MemoryBudget> {
        self.inner.budget.as_ref().map(|b| b.limits)
    }

    /// Series and estimated bytes taken from the memory budget, if the registry has one.
    pub fn budget_used(&self) -> Option<(usize, usize)> {
        self.inner.budget.as_ref().map(|b| b.used())
    }

    /// Whether a new series of about `bytes` would be refused by the memory budget now: lets a
    /// caller refuse work (a new StatsD name) before allocating anything for it.
    pub fn over_budget(&self, bytes: usize) -> bool {
        self.inner.budget.as_ref().is_some_and(|b| b.full(bytes))
    }

    /// Makes `bounds` bucket boundaries of the histogram `name` whenever it is registered,
    /// on top of the buckets its builder sets (or the unit's defaults): a latency objective
    /// "95 % under 300 ms" is then counted exactly in the `le="0.3"` bucket instead of being
    /// interpolated. Call it before the instrumentation registers the family; once the family
    /// exists its buckets cannot change, and boundaries it lacks are refused with
    /// [`Error::BoundsTooLate`] (those it already has are fine). Non-finite values are ignored.
    ///
    /// ```
    /// use sonde_core::{Registry, Unit};
    ///
    /// let registry = Registry::new();
    /// registry.add_bucket_boundaries("http.server.request.duration", &[0.3, 1.5])?;
    /// let family = registry
    ///     .histogram("http.server.request.duration")
    ///     .unit(Unit::Seconds)
    ///     .buckets([0.1, 0.5, 1.0])
    ///     .build()?;
    /// assert_eq!(family.config().explicit_bounds(), &[0.1, 0.3, 0.5, 1.0, 1.5]);
    /// // Too late for a boundary the registered family lacks:
    /// assert!(registry.add_bucket_boundaries("http.server.request.duration", &[0.2]).is_err());
    /// # Ok::<(), sonde_core::Error>(())
    /// ```
    pub fn add_bucket_boundaries(&self, name: &str, bounds: &[f64]) -> Result<(), Error> {
        let bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        // Under the families' lock, so a family cannot be registered in between.
        let families = self.families_mut();
        if let Some(existing) = families.get(name) {
            let snapshot_bounds = existing_bounds(existing);
            let missing: Vec<f64> = bounds
                .iter()
                .copied()
                .filter(|b| !snapshot_bounds.contains(b))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            return Err(Error::BoundsTooLate {
                name: name.to_owned(),
                missing,
            });
        }
        let mut extra = self
            .inner
            .extra_bounds
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        extra.entry(name.to_owned()).or_default().extend(bounds);
        drop(families);
        Ok(())
    }

    fn build(max_series: usize, budget: Option<MemoryBudget>) -> Self {
        let bare = Registry {
            inner: Arc::new(Inner {
                families: RwLock::new(BTreeMap::new()),
                rendered: Mutex::default(),
                hooks: RwLock::new(Hooks::default()),
                default_max_series: max_series,
                overflow: None,
                errors: None,
                series_count: None,
                refused: None,
                budget: None,
                budget_gauges: None,
                extra_bounds: Mutex::default(),
            }),
        };
        // Self-metric families live in the registry like any other; they report into nothing.
        let overflow = self_metric(bare.counter(SERIES_OVERFLOW));
        let errors = self_metric(bare.counter(INSTRUMENTATION_ERRORS));
        let series_count = self_metric(bare.gauge(SERIES_ACTIVE));
        let refused = self_metric(bare.counter(SERIES_REFUSED));
        let budget_gauges = budget.and_then(|_| {
            let limit = self_metric(bare.gauge(BUDGET_LIMIT))?;
            let usage = self_metric(bare.gauge(BUDGET_USAGE))?;
            Some((limit, usage))
        });
        let families = std::mem::take(&mut *bare.families_mut());
        let rendered = std::mem::take(&mut *bare.rendered());
        Registry {
            inner: Arc::new(Inner {
                families: RwLock::new(families),
                rendered: Mutex::new(rendered),
                hooks: RwLock::new(Hooks::default()),
                default_max_series: max_series,
                overflow,
                errors,
                series_count,
                refused,
                budget: budget.map(|b| Arc::new(BudgetState::new(b))),
                budget_gauges,
                extra_bounds: Mutex::default(),
            }),
        }
    }

    /// Whether `other` is this registry (a clone of it), not another one.
    pub fn same_as(&self, other: &Registry) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The process-wide default registry, used by static families and the macros.
    pub fn global() -> &'static Registry {
        &GLOBAL
    }

    fn families_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<dyn ErasedFamily>>> {
        self.inner
            .families
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn rendered(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        self.inner
            .rendered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn families(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<dyn ErasedFamily>>> {
        self.inner
            .families
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Names of the registered families, sorted.
    pub fn family_names(&self) -> Vec<String> {
        self.families().keys().cloned().collect()
    }

    /// Removes the family named `name`, so the name can be registered again, possibly with
    /// another kind, unit or label names. Returns whether such a family was registered.
    ///
    /// Collections no longer see the family, nor its series of the per-name self-metrics
    /// (`sonde.series.active`, `.overflow` and `.refused`, and
    /// `sonde.instrumentation.errors{reason="label_count"}`). `Family` values and handles still
    /// held keep recording into it, but what they record is no longer exported; resolve new
    /// handles from the family registered in its place.
    ///
    /// ```
    /// let registry = sonde_core::Registry::new();
    /// registry.counter("jobs").labels(["queue"]).build()?;
    /// assert!(registry.remove_family("jobs"));
    /// let jobs = registry.counter("jobs").labels(["queue", "priority"]).build()?;
    /// jobs.with(&["default", "high"]).inc();
    /// # Ok::<(), sonde_core::Error>(())
    /// ```
    pub fn remove_family(&self, name: &str) -> bool {
        self.remove_family_where(name, |_| true)
    }

    /// Whether `family` is the one registered under its name: `false` once it was removed
    /// (by [`remove_family`](Self::remove_family) or
    /// [`remove_family_if_unused`](Self::remove_family_if_unused)) or replaced, when what it
    /// records is no longer exported. A source that keeps family handles across collections
    /// checks this before recording into one it registered long ago.
    pub fn is_registered<M: Instrument>(&self, family: &Family<M>) -> bool {
        self.families()
            .get(family.meta().name())
            .is_some_and(|f| same_family(f, family))
    }

    /// Removes `family` if it is still the one registered under its name and has no live
    /// series, in one step, so no series can be added meanwhile through the registry: how a
    /// source that creates families from what it receives (a scraped target's names) gives
    /// back what a name that went away took from the memory budget, without removing a family
    /// that another source still fills. Returns whether it was removed. Handles held elsewhere
    /// keep working but are no longer exported (see [`is_registered`](Self::is_registered)).
    /// Its `sonde.series.*` self-metric series go with it, as with
    /// [`remove_family`](Self::remove_family).
    pub fn remove_family_if_unused<M: Instrument>(&self, family: &Family<M>) -> bool {
        let name = family.meta().name();
        self.remove_family_where(name, |f| same_family(f, family) && f.series_count() == 0)
    }

    fn remove_family_where(
        &self,
        name: &str,
        remove: impl Fn(&Arc<dyn ErasedFamily>) -> bool,
    ) -> bool {
        let mut families = self.families_mut();
        let Some(f) = families.get(name).filter(|f| remove(f)).cloned() else {
            return false;
        };
        families.remove(name);
        let m = f.meta();
        let key = prometheus_name(m.name(), m.kind, &m.unit);
        let mut rendered = self.rendered();
        if rendered.get(&key).is_some_and(|owner| owner == name) {
            rendered.remove(&key);
        }
        drop(rendered);
        // Its per-name self-metric series would otherwise linger with their last values: a set
        // for every name a source whose names come and go saw. Removed while the family list is
        // held, so no collection shows them without the family, and a family registered again
        // under the name meanwhile keeps its own.
        if let Some(g) = &self.inner.series_count {
            g.remove(&[name]);
        }
        if let Some(o) = &self.inner.overflow {
            o.remove(&[name]);
        }
        if let Some(r) = &self.inner.refused {
            r.remove(&[name, "budget"]);
        }
        if let Some(e) = &self.inner.errors {
            e.remove(&[name, "label_count"]);
        }
        drop(families);
        true
    }

    /// Replaces the registered `family` by one with the label names `labels`, which must hold
    /// each of the family's own (in any order) plus new ones, and returns it. Every series moves
    /// over with `""` for the new labels, keeping its recorded state (counts, sums, buckets,
    /// gauge values, exemplars), its id and its start time: Prometheus, which treats an empty
    /// label as absent, sees each series continue, and delta readers see no reset and count
    /// nothing twice. Name, kind, unit, description, histogram layout, series limit and idle
    /// timeout stay the same.
    ///
    /// The family is swapped while the registry is locked, so a collection sees either the old
    /// family or the new one, whole. Handles of the old family keep recording into series no
    /// longer exported: stop recording through them first (what they record after the move is
    /// lost) and resolve new handles from the returned family. Costs one allocation per series.
    ///
    /// ```
    /// let registry = sonde_core::Registry::new();
    /// let jobs = registry.counter("jobs").labels(["queue"]).build()?;
    /// jobs.with(&["mail"]).add(5);
    /// let jobs = registry.widen_family(&jobs, ["priority", "queue"])?;
    /// jobs.with(&["high", "mail"]).add(1);
    /// let snapshot = registry.snapshot();
    /// let total = |p| snapshot.point("jobs", &[("priority", p), ("queue", "mail")]).unwrap().number().unwrap();
    /// assert_eq!(total(""), sonde_core::Number::U64(5));
    /// assert_eq!(total("high"), sonde_core::Number::U64(1));
    /// # Ok::<(), sonde_core::Error>(())
    /// ```
    pub fn widen_family<M, I, S>(&self, family: &Family<M>, labels: I) -> Result<Family<M>, Error>
    where
        M: Instrument,
        I: IntoIterator<Item = S>,
        S: Into<Cow<'static, str>>,
    {
        let old = family.meta();
        let labels: Vec<Cow<'static, str>> = labels.into_iter().map(Into::into).collect();
        check_labels::<M>(old.name(), &labels)?;
        let mut positions = Vec::with_capacity(labels.len());
        for l in &labels {
            positions.push(old.label_names.iter().position(|o| o == l));
        }
        if let Some(kept) = old.label_names.iter().find(|o| !labels.contains(o)) {
            return Err(Error::InvalidLabelName {
                metric: old.name().to_owned(),
                label: kept.to_string(),
                problem: "widening keeps every label of the family, and this one is missing from the new list; add names, do not remove them".into(),
            });
        }
        let meta = FamilyMeta {
            label_names: labels.into_boxed_slice(),
            ..old.clone()
        };
        let config = make_config::<M>(&meta, &family.inner.options)?;
        let mut families = self.families_mut();
        let registered = families
            .get(meta.name())
            .is_some_and(|f| std::ptr::addr_eq(Arc::as_ptr(f), Arc::as_ptr(&family.inner)));
        if !registered {
            return Err(Error::NotRegistered {
                name: meta.name().to_owned(),
            });
        }
        let name = meta.name().to_owned();
        let widened = family.widened(meta, config, &positions);
        families.insert(name, widened.inner.clone());
        Ok(widened)
    }

    /// The registered family `name` as a typed handle, or `None` when no family of that name is
    /// registered or it holds another instrument type. Lets a source that re-creates its state
    /// (a reloaded StatsD server) take over the families its predecessor registered.
    pub fn registered_family<M: Instrument>(&self, name: &str) -> Option<Family<M>> {
        let families = self.families();
        let existing = families.get(name)?.clone();
        existing
            .into_any()
            .downcast::<crate::family::FamilyInner<M>>()
            .ok()
            .map(|inner| Family { inner })
    }

    family_shortcuts! {
        /// Starts registering a `u64` counter.
        counter => Counter;
        /// Starts registering an `f64` counter (for things like seconds of CPU).
        counter_f64 => Counter<f64>;
        /// Starts registering an `i64` gauge.
        gauge => Gauge;
        /// Starts registering an `f64` gauge.
        gauge_f64 => Gauge<f64>;
        /// Starts registering an `i64` up-down counter.
        up_down_counter => UpDownCounter;
        /// Starts registering an `f64` up-down counter.
        up_down_counter_f64 => UpDownCounter<f64>;
        /// Starts registering a histogram.
        histogram => Histogram;
    }

    /// Starts registering a family of any instrument type, e.g. `registry.family::<Counter<f64>>("x")`.
    pub fn family<M: Instrument>(
        &self,
        name: impl Into<Cow<'static, str>>,
    ) -> FamilyBuilder<'_, M> {
        FamilyBuilder {
            registry: self,
            name: name.into(),
            description: Cow::Borrowed(""),
            unit: Unit::None,
            labels: Vec::new(),
            max_series: None,
            idle_timeout: None,
            histogram: InstrumentOptions::default(),
            _m: PhantomData,
        }
    }

    /// Runs `hook` at the start of every collection, before any family is read: the place for
    /// collectors that sample state into gauges (process metrics, pool stats).
    /// The hook stays for the registry's lifetime; see
    /// [`register_collector`](Self::register_collector) for one that can be removed.
    pub fn add_collect_hook(&self, hook: impl Fn() + Send + Sync + 'static) {
        // Never removed: the guard is not dropped.
        std::mem::forget(self.register_collector(hook));
    }

    /// Like [`add_collect_hook`](Self::add_collect_hook), for as long as the returned guard
    /// lives: dropping it removes the hook (a collection already running may still call it
    /// once).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// let registry = sonde_core::Registry::new();
    /// let calls = Arc::new(AtomicU32::new(0));
    /// let seen = calls.clone();
    /// let guard = registry.register_collector(move || {
    ///     seen.fetch_add(1, Ordering::Relaxed);
    /// });
    /// registry.snapshot();
    /// drop(guard);
    /// registry.snapshot();
    /// assert_eq!(calls.load(Ordering::Relaxed), 1);
    /// ```
    pub fn register_collector(&self, hook: impl Fn() + Send + Sync + 'static) -> CollectorGuard {
        let mut hooks = self.inner.hooks.write().unwrap_or_else(|e| e.into_inner());
        let id = hooks.next_id;
        hooks.next_id += 1;
        hooks.hooks.push((id, Arc::new(hook)));
        CollectorGuard {
            registry: Arc::downgrade(&self.inner),
            id,
        }
    }

    // `snapshot` and `reader` are in reader.rs, next to the `Reader` they create, so the
    // registry does not depend on its readers.

    /// A cumulative snapshot of just the named families (no collect hooks, no sweep): cheap
    /// enough for health checks on registries with many series.
    pub fn snapshot_families(&self, names: &[&str]) -> Snapshot {
        let families: Vec<_> = {
            let map = self.families();
            names.iter().filter_map(|n| map.get(*n).cloned()).collect()
        };
        let mut snapshot = Snapshot {
            time_unix_nanos: unix_nanos(),
            ..Snapshot::default()
        };
        for f in families {
            let mut series = Vec::with_capacity(f.series_count() + 1);
            f.read(&mut series);
            snapshot.families.push(crate::snapshot::FamilySnapshot {
                meta: f.meta().clone(),
                series,
            });
        }
        snapshot
    }

    /// Drops series that have been idle past their family's idle timeout. Runs on every
    /// collection; call it yourself if nothing collects.
    pub fn sweep_idle(&self) {
        let now = mono_secs();
        let families: Vec<_> = self.families().values().cloned().collect();
        for f in families {
            f.sweep(now);
        }
    }

    /// Runs the collect hooks and the idle sweep and refreshes the series-count gauges, then
    /// returns the families in name order.
    fn prepare(&self) -> Vec<Arc<dyn ErasedFamily>> {
        let hooks: Vec<Hook> = self
            .inner
            .hooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .hooks
            .iter()
            .map(|(_, h)| h.clone())
            .collect();
        for hook in hooks {
            hook();
        }
        self.sweep_idle();
        let families: Vec<_> = {
            let registered = self.families();
            // Set under the lock: a family removed meanwhile (its count series removed after
            // it) would otherwise get its count series back, for good.
            if let Some(g) = &self.inner.series_count {
                for f in registered.values() {
                    let name = f.meta().name();
                    if name != SERIES_ACTIVE {
                        g.with(&[name]).set(f.series_count() as i64);
                    }
                }
            }
            registered.values().cloned().collect()
        };
        if let (Some((limit, usage)), Some(b)) = (&self.inner.budget_gauges, &self.inner.budget) {
            let (series, bytes) = b.used();
            let clamp = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
            limit.with(&["series"]).set(clamp(b.limits.max_series()));
            limit.with(&["bytes"]).set(clamp(b.limits.max_bytes()));
            usage.with(&["series"]).set(clamp(series));
            usage.with(&["bytes"]).set(clamp(bytes));
        }
        families
    }

    /// Streams a cumulative read of every family to `visitor`: families in name order, each
    /// family's series in creation order, each series read right before it is handed over. An
    /// encoder that writes as it goes never holds the whole registry in memory, which keeps large
    /// registries in cache.
    pub fn visit(&self, visitor: &mut dyn Visitor) {
        for f in self.prepare() {
            let meta = f.meta().clone();
            f.visit(&mut |event| match event {
                VisitEvent::Start(n) => visitor.family(&meta, n),
                VisitEvent::Series(s) => visitor.series(&meta, s),
            });
        }
    }

    /// Reads every family (those `selection` selects by name, when given) into `snapshot`.
    pub(crate) fn read_into(&self, snapshot: &mut Snapshot, selection: Option<&Selection>) {
        let mut families = self.prepare();
        if let Some(selection) = selection {
            families.retain(|f| selection.selects_family(f.meta()));
        }
        snapshot.time_unix_nanos = unix_nanos();
        snapshot.families.truncate(families.len());
        for (i, f) in families.iter().enumerate() {
            if i < snapshot.families.len() {
                let fs = &mut snapshot.families[i];
                fs.meta = f.meta().clone();
                fs.series.clear();
                f.read(&mut fs.series);
            } else {
                let mut series = Vec::with_capacity(f.series_count() + 1);
                f.read(&mut series);
                snapshot.families.push(crate::snapshot::FamilySnapshot {
                    meta: f.meta().clone(),
                    series,
                });
            }
        }
    }

    fn register<M: Instrument>(&self, b: FamilyBuilder<'_, M>) -> Result<Family<M>, Error> {
        validate_metric_name(&b.name)?;
        check_labels::<M>(&b.name, &b.labels)?;
        let meta = FamilyMeta {
            name: b.name.clone(),
            description: b.description,
            unit: b.unit,
            kind: M::KIND,
            number: M::NUMBER,
            label_names: b.labels.into_boxed_slice(),
        };
        let mut families = self.families_mut();
        if let Some(existing) = families.get(meta.name()) {
            let em = existing.meta();
            let same = em.kind == meta.kind
                && em.number == meta.number
                && em.unit == meta.unit
                && em.label_names == meta.label_names;
            if same
                && let Ok(f) = existing
                    .clone()
                    .into_any()
                    .downcast::<crate::family::FamilyInner<M>>()
            {
                return Ok(Family { inner: f });
            }
            return Err(Error::conflict(
                meta.name(),
                describe(em.kind, em.unit.ucum(), &em.label_names),
                describe(meta.kind, meta.unit.ucum(), &meta.label_names),
            ));
        }
        let prometheus = prometheus_name(meta.name(), meta.kind, &meta.unit);
        let clash = self.rendered().get(&prometheus).cloned();
        if let Some(existing) = clash {
            let err = Error::NameCollision {
                name: meta.name().to_owned(),
                existing,
                prometheus,
            };
            drop(families);
            if let Some(errors) = &self.inner.errors {
                errors.with(&[meta.name(), "name_collision"]).inc();
            }
            return Err(err);
        }
        let mut options = b.histogram;
        if M::KIND == Kind::Histogram
            && let Some(extra) = self
                .inner
                .extra_bounds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(meta.name())
        {
            let mut bounds = options
                .buckets
                .take()
                .unwrap_or_else(|| crate::histogram::HistogramConfig::for_unit(&meta.unit).buckets);
            bounds.extend(extra.iter().copied());
            bounds.sort_by(f64::total_cmp);
            bounds.dedup();
            options.buckets = Some(bounds);
        }
        let config = make_config::<M>(&meta, &options)?;
        let name = meta.name.to_string();
        self.rendered().insert(prometheus, name.clone());
        let self_metrics = SelfMetrics {
            overflow: self.inner.overflow.clone(),
            errors: self.inner.errors.clone(),
            refused: self.inner.refused.clone(),
            // sonde's own self-metrics are bounded by construction and must be able to report
            // refusals when the budget is full.
            budget: if name.starts_with("sonde.") {
                None
            } else {
                self.inner.budget.clone()
            },
        };
        let family = Family::<M>::new(
            meta,
            config,
            b.max_series.unwrap_or(self.inner.default_max_series),
            b.idle_timeout,
            options,
            self_metrics,
        );
        families.insert(name, family.inner.clone());
        Ok(family)
    }
}

/// The explicit bucket boundaries of a registered family (none unless it is a histogram).
/// Whether the registered `entry` is `family` (the same allocation, not only the same name).
fn same_family<M: Instrument>(entry: &Arc<dyn ErasedFamily>, family: &Family<M>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(entry), Arc::as_ptr(&family.inner))
}

fn existing_bounds(family: &Arc<dyn ErasedFamily>) -> Vec<f64> {
    family
        .clone()
        .into_any()
        .downcast::<crate::family::FamilyInner<Histogram>>()
        .map(|f| f.config.explicit_bounds().to_vec())
        .unwrap_or_default()
}

/// Checks a family's label names: valid, not reserved for the kind, none twice.
fn check_labels<M: Instrument>(metric: &str, labels: &[Cow<'static, str>]) -> Result<(), Error> {
    for l in labels {
        validate_label_name(metric, l, M::RESERVED_LABELS)?;
    }
    if let Some(dup) = labels
        .iter()
        .enumerate()
        .find(|(i, l)| labels[..*i].contains(l))
    {
        return Err(Error::InvalidLabelName {
            metric: metric.to_owned(),
            label: dup.1.to_string(),
            problem: "it is declared twice".into(),
        });
    }
    Ok(())
}

/// The self-metric families of every registry: name, description and label names, in one
/// table so the six registrations in `Registry::build` read as one line each.
const SELF_METRICS: [(&str, &str, &[&str]); 6] = [
    (
        SERIES_OVERFLOW,
        "Label sets that exceeded a family's series limit and were recorded in its overflow series.",
        &["metric"],
    ),
    (
        INSTRUMENTATION_ERRORS,
        "Instrumentation mistakes, such as a wrong number of label values; the data went to a detached series.",
        &["metric", "reason"],
    ),
    (
        SERIES_ACTIVE,
        "Live series per family, excluding the overflow series.",
        &["metric"],
    ),
    (
        SERIES_REFUSED,
        "New label sets refused (reason=\"budget\": the memory budget was reached) and recorded in their family's overflow series.",
        &["metric", "reason"],
    ),
    (
        BUDGET_LIMIT,
        "The registry's memory budget: resource=\"series\" is the series cap, resource=\"bytes\" the estimated bytes cap.",
        &["resource"],
    ),
    (
        BUDGET_USAGE,
        "What the registry's series take from the memory budget (series, estimated bytes); new series are refused once a limit is reached.",
        &["resource"],
    ),
];

/// A registry's own family (series overflow, errors, budget), described and labelled as
/// [`SELF_METRICS`] says: registered in the bare registry it is built in, so it cannot
/// conflict; `None` leaves the self-metric out all the same.
fn self_metric<M: Instrument>(builder: FamilyBuilder<'_, M>) -> Option<Family<M>> {
    let entry = SELF_METRICS.iter().find(|m| m.0 == builder.name);
    debug_assert!(entry.is_some(), "{} is not in SELF_METRICS", builder.name);
    let (_, description, labels) = entry?;
    builder
        .description(*description)
        .labels(labels.iter().copied())
        .build()
        .ok()
}

/// The storage configuration of a family from its builder's options.
fn make_config<M: Instrument>(
    meta: &FamilyMeta,
    given: &InstrumentOptions,
) -> Result<M::Config, Error> {
    let mut options = given.clone();
    if options.stripes.is_none() && meta.label_names.is_empty() {
        // A family without labels is one series, typically a process-wide hot counter:
        // striping it costs a few cache lines once and lets threads add without contention.
        options.stripes = Some(crate::number::default_stripes());
    }
    M::make_config(&meta.name, &meta.unit, &options)
}

/// Describes a family before registering it; finish with [`build`](Self::build).
#[must_use = "call .build() to register the family"]
pub struct FamilyBuilder<'r, M: Instrument> {
    registry: &'r Registry,
    name: Cow<'static, str>,
    description: Cow<'static, str>,
    unit: Unit,
    labels: Vec<Cow<'static, str>>,
    max_series: Option<usize>,
    idle_timeout: Option<Duration>,
    pub(crate) histogram: InstrumentOptions,
    _m: PhantomData<fn() -> M>,
}

impl<'r, M: Instrument> FamilyBuilder<'r, M> {
    crate::builder_setters! {
        /// What the metric measures.
        description: impl Into<Cow<'static, str>>;
        /// The unit ([`Unit::Seconds`] and [`Unit::Bytes`] by the OpenTelemetry conventions).
        unit: Unit;
    }

    /// Label (attribute) names, fixed for the family, e.g. `["http.request.method", "http.route"]`.
    pub fn labels<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Cow<'static, str>>,
    {
        self.labels = names.into_iter().map(Into::into).collect();
        self
    }

    crate::builder_setters! {
        /// The series limit for this family (default 2000, or the registry's default).
        max_series: Some(usize);
        /// Drops series that nobody looked up or held for `idle_timeout` (checked at each
        /// collection, so the granularity is the collection interval). Off by default.
        idle_timeout: Some(Duration);
    }

    /// Spreads each series of this counter or up-down counter over per-thread stripes on their
    /// own cache lines, so many threads can add to one series without contending; a read sums
    /// the stripes. Costs 64 bytes per stripe per series (stripes: twice the CPU count, at most
    /// 32), so use it for a few hot series. Families without labels are striped by default;
    /// `.striped(false)` turns that off. Gauges are never striped.
    pub fn striped(mut self, on: bool) -> Self {
        self.histogram.stripes = Some(if on {
            crate::number::default_stripes()
        } else {
            1
        });
        self
    }

    /// Registers the family, or returns the existing one if `name` is already registered with
    /// the same kind, number type, unit and label names. Anything else is an error.
    pub fn build(self) -> Result<Family<M>, Error> {
        let registry = self.registry;
        registry.register(self)
    }
}

impl<'r> FamilyBuilder<'r, Histogram> {
    /// Explicit bucket upper bounds (finite, strictly increasing; `+Inf` is implied). The
    /// defaults depend on the unit: 0.5 ms–60 s for seconds, 64 B–1 GiB for bytes.
    pub fn buckets(mut self, bounds: impl Into<Vec<f64>>) -> Self {
        self.histogram.buckets = Some(bounds.into());
        self
    }

    /// Resolution of the quantile grid (default [`Precision::Standard`], 1.44 % worst case).
    pub fn precision(mut self, p: Precision) -> Self {
        self.histogram.precision = Some(p);
        self
    }

    /// Keeps the latest exemplar (value, trace and span id) of each explicit bucket, from
    /// [`Histogram::observe_with_exemplar`] or the installed trace context provider. Costs
    /// 48 bytes per bucket per series. Off by default.
    pub fn exemplars(mut self, on: bool) -> Self {
        self.histogram.exemplars = Some(on);
        self
    }

    /// Where the 30-octave grid starts: it spans `(2^e, 2^(e+30)]`.
    pub fn min_exponent(mut self, e: i32) -> Self {
        self.histogram.min_exponent = Some(e);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Point, Temporality};

    #[test]
    fn remove_family_frees_the_name_for_another_definition() {
        let registry = Registry::new();
        let old = registry.counter("jobs").labels(["queue"]).build().unwrap();
        let old_handle = old.with(&["default"]);
        old_handle.add(3);
        registry.snapshot(); // refreshes sonde.series.active{metric="jobs"}
        assert!(
            registry
                .snapshot()
                .point(SERIES_ACTIVE, &[("metric", "jobs")])
                .is_some()
        );

        // Same name, other labels: a conflict while the family is registered.
        assert!(matches!(
            registry
                .counter("jobs")
                .labels(["queue", "priority"])
                .build(),
            Err(Error::Conflict { .. })
        ));
        assert!(registry.remove_family("jobs"));
        assert!(!registry.remove_family("jobs"));
        assert!(!registry.remove_family("never.registered"));
        assert!(!registry.family_names().contains(&"jobs".to_string()));
        let snap = registry.snapshot();
        assert!(snap.family("jobs").is_none());

        // Now it registers with other labels, even another kind.
        let new = registry
            .gauge_f64("jobs")
            .labels(["queue", "priority"])
            .build()
            .unwrap();
        new.with(&["default", ""]).set(1.5);
        // The old handle still works but is no longer exported.
        old_handle.inc();
        let snap = registry.snapshot();
        let family = snap.family("jobs").unwrap();
        assert_eq!(family.series.len(), 1);
        match snap.point("jobs", &[("queue", "default"), ("priority", "")]) {
            Some(Point::Gauge(n)) => assert_eq!(n.as_f64(), 1.5),
            other => panic!("{other:?}"),
        }
        // The series count follows the new family.
        match snap.point(SERIES_ACTIVE, &[("metric", "jobs")]) {
            Some(Point::Gauge(n)) => assert_eq!(n.as_f64(), 1.0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_that_render_alike_in_prometheus_are_refused_and_counted() {
        let registry = Registry::new();
        let first = registry.counter_f64("a.b").build().unwrap();
        first.handle().add(1.0);
        let err = registry.counter_f64("a_b").build().unwrap_err();
        assert_eq!(
            err,
            Error::NameCollision {
                name: "a_b".into(),
                existing: "a.b".into(),
                prometheus: "a_b".into(),
            }
        );
        assert!(err.to_string().contains("rename one of them"), "{err}");
        // Other kinds and units that render alike, and `_total` on counters.
        registry.gauge("x").unit(Unit::Seconds).build().unwrap();
        assert!(matches!(
            registry.gauge("x.seconds").build(),
            Err(Error::NameCollision { .. })
        ));
        registry.counter("jobs").build().unwrap();
        assert!(matches!(
            registry.counter("jobs.total").build(),
            Err(Error::NameCollision { .. })
        ));
        assert!(matches!(
            registry.histogram("jobs").build(),
            Err(Error::Conflict { .. })
        ));
        // What renders differently is fine: a gauge named like a counter's sample gets `_value`.
        registry.gauge("jobs.total").build().unwrap();
        // The same name again is still the same family, not a collision.
        registry
            .counter_f64("a.b")
            .build()
            .unwrap()
            .handle()
            .add(1.0);
        let snap = registry.snapshot();
        assert_eq!(num(&snap, "a.b", &[]), 2.0);
        assert!(snap.family("a_b").is_none());
        assert_eq!(
            num(
                &snap,
                INSTRUMENTATION_ERRORS,
                &[("metric", "a_b"), ("reason", "name_collision")]
            ),
            1.0
        );
        // Removing the owner frees its Prometheus name.
        assert!(registry.remove_family("a.b"));
        registry.counter_f64("a_b").build().unwrap();
        assert!(matches!(
            registry.counter_f64("a.b").build(),
            Err(Error::NameCollision { .. })
        ));
    }

    fn num(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
        snap.point(name, labels).unwrap().number().unwrap().as_f64()
    }

    #[test]
    fn widen_family_keeps_every_series_state_id_and_start() {
        let registry = Registry::with_max_series(3);
        // Unlabelled families are striped; the widened ones are not, and still add up.
        let hits = registry.counter("hits").build().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = hits.handle();
                std::thread::spawn(move || (0..100).for_each(|_| h.inc()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let lat = registry
            .histogram("lat")
            .unit(Unit::Seconds)
            .labels(["route"])
            .exemplars(true)
            .build()
            .unwrap();
        let ctx = crate::TraceContext {
            trace_id: [7; 16],
            span_id: [8; 8],
        };
        lat.with(&["/a"]).observe_with_exemplar(0.2, &ctx);
        lat.with(&["/a"]).observe(0.003);
        for r in ["/b", "/c", "/d", "/e"] {
            lat.with(&[r]).observe(1.5); // /d and /e go to the overflow series
        }
        let temp = registry.gauge_f64("temp").labels(["room"]).build().unwrap();
        temp.with(&["attic"]).set(-3.5);

        let mut deltas = registry.reader(Temporality::Delta);
        let before = deltas.collect();
        let ids = |snap: &Snapshot, name: &str| {
            let mut v: Vec<_> = snap
                .family(name)
                .unwrap()
                .series
                .iter()
                .map(|s| (s.id(), s.start_unix_nanos))
                .collect();
            v.sort_unstable();
            v
        };
        let cumulative = registry.snapshot();

        let hits = registry.widen_family(&hits, ["host"]).unwrap();
        let lat = registry.widen_family(&lat, ["host", "route"]).unwrap();
        registry.widen_family(&temp, ["room", "floor"]).unwrap();
        assert_eq!(hits.config(), &1, "widened with labels: no stripes");
        assert_eq!(lat.config().stripes(), 1);

        let snap = registry.snapshot();
        assert_eq!(num(&snap, "hits", &[("host", "")]), 400.0);
        assert_eq!(
            num(&snap, "temp", &[("room", "attic"), ("floor", "")]),
            -3.5
        );
        let a = snap
            .point("lat", &[("host", ""), ("route", "/a")])
            .unwrap()
            .histogram()
            .unwrap();
        assert_eq!(
            (a.count(), a.sum(), a.min(), a.max()),
            (2, 0.203, Some(0.003), Some(0.2))
        );
        assert_eq!(
            a.bucket_counts(),
            cumulative
                .point("lat", &[("route", "/a")])
                .unwrap()
                .histogram()
                .unwrap()
                .bucket_counts()
        );
        let e = a.exemplars().iter().flatten().next().unwrap();
        assert_eq!((e.value, e.trace_id, e.span_id), (0.2, [7; 16], [8; 8]));
        let fam = snap.family("lat").unwrap();
        assert_eq!(fam.series.len(), 4, "3 series and the overflow series");
        let overflow = fam.series.iter().find(|s| s.is_overflow()).unwrap();
        assert_eq!(overflow.point.histogram().unwrap().count(), 2);
        for name in ["hits", "lat", "temp"] {
            assert_eq!(ids(&snap, name), ids(&cumulative, name), "{name}");
        }
        // Full: a new label set goes to the overflow series.
        lat.with(&["x", "/f"]).observe(1.0);
        hits.with(&["a"]).add(2);
        hits.with(&[""]).add(1);
        let after = deltas.collect();
        assert_eq!(num(&before, "hits", &[]), 400.0);
        assert_eq!(num(&after, "hits", &[("host", "")]), 1.0);
        assert_eq!(num(&after, "hits", &[("host", "a")]), 2.0);
        let fam = after.family("lat").unwrap();
        let overflow = fam.series.iter().find(|s| s.is_overflow()).unwrap();
        assert_eq!(overflow.point.histogram().unwrap().count(), 1);
        assert_eq!(
            after
                .point("lat", &[("host", ""), ("route", "/a")])
                .unwrap()
                .histogram()
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn budget_refuses_new_series_then_recovers_after_removal_and_expiry() {
        let registry = Registry::with_budget(100, MemoryBudget::new(3, usize::MAX));
        let jobs = registry
            .counter("jobs")
            .labels(["queue"])
            .idle_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        for q in ["a", "b", "c", "d", "e"] {
            jobs.with(&[q]).inc();
        }
        assert_eq!(jobs.series_count(), 3);
        assert_eq!(registry.budget_used().unwrap().0, 3);
        assert!(registry.over_budget(0));
        let snap = registry.snapshot();
        let refused = &[("metric", "jobs"), ("reason", "budget")];
        assert_eq!(num(&snap, SERIES_REFUSED, refused), 2.0);
        let fam = snap.family("jobs").unwrap();
        let overflow = fam.series.iter().find(|s| s.is_overflow()).unwrap();
        assert_eq!(overflow.point.number().unwrap().as_f64(), 2.0);
        // Not a family-limit overflow.
        assert!(snap.point(SERIES_OVERFLOW, &[("metric", "jobs")]).is_none());
        drop(snap); // snapshots hold their series
        // Existing series still record.
        jobs.with(&["a"]).inc();
        assert_eq!(num(&registry.snapshot(), "jobs", &[("queue", "a")]), 2.0);

        // Removal gives the share back.
        assert!(jobs.remove(&["a"]));
        jobs.with(&["d"]).inc();
        assert!(
            registry
                .snapshot()
                .point("jobs", &[("queue", "d")])
                .is_some()
        );
        assert_eq!(registry.budget_used().unwrap().0, 3);

        // So does idle expiry (nothing holds the handles).
        std::thread::sleep(Duration::from_millis(2100));
        registry.sweep_idle();
        assert_eq!(jobs.series_count(), 0);
        let (series, bytes) = registry.budget_used().unwrap();
        // What is left is the family itself.
        assert_eq!(series, 0);
        assert!((100..1000).contains(&bytes), "{bytes}");
        jobs.with(&["f"]).inc();
        assert_eq!(num(&registry.snapshot(), "jobs", &[("queue", "f")]), 1.0);

        // And a removed family gives back all of its series.
        let other = registry.gauge("other").labels(["x"]).build().unwrap();
        other.with(&["1"]).set(1);
        other.with(&["2"]).set(1);
        assert_eq!(registry.budget_used().unwrap().0, 3);
        drop(other);
        assert!(registry.remove_family("other"));
        assert_eq!(registry.budget_used().unwrap().0, 1);
        // Its refusals go with it (StatsD's expired names remove theirs this way).
        let refused = &[("metric", "jobs"), ("reason", "budget")];
        assert!(registry.snapshot().point(SERIES_REFUSED, refused).is_some());
        drop(jobs);
        assert!(registry.remove_family("jobs"));
        assert!(registry.snapshot().point(SERIES_REFUSED, refused).is_none());
    }

    #[test]
    fn a_removed_family_takes_its_self_metric_series_with_it() {
        let registry = Registry::new();
        let jobs = registry.counter("jobs").labels(["queue"]);
        let jobs = jobs.max_series(1).build().unwrap();
        jobs.with(&["a"]).inc();
        jobs.with(&["b"]).inc(); // overflow
        jobs.with(&["a", "extra"]).inc(); // a wrong label count
        let _ = registry.snapshot(); // sets the series count
        let snap = registry.snapshot();
        let this = &[("metric", "jobs")];
        let wrong = &[("metric", "jobs"), ("reason", "label_count")];
        assert_eq!(num(&snap, SERIES_OVERFLOW, this), 1.0);
        assert_eq!(num(&snap, SERIES_ACTIVE, this), 1.0);
        assert_eq!(num(&snap, INSTRUMENTATION_ERRORS, wrong), 1.0);
        drop(snap);
        drop(jobs);
        assert!(registry.remove_family("jobs"));
        let snap = registry.snapshot();
        assert!(snap.point(SERIES_OVERFLOW, this).is_none());
        assert!(snap.point(SERIES_ACTIVE, this).is_none());
        assert!(snap.point(INSTRUMENTATION_ERRORS, wrong).is_none());
    }

    #[test]
    fn a_family_is_removed_if_unused_only_while_it_is_the_registered_one_and_empty() {
        let registry = Registry::with_budget(100, MemoryBudget::new(1, usize::MAX));
        let empty_budget = registry.budget_used().unwrap();
        let jobs = registry.counter("jobs").labels(["queue"]).build().unwrap();
        jobs.with(&["a"]).inc();
        jobs.with(&["b"]).inc(); // refused: the budget holds one series
        let refused = &[("metric", "jobs"), ("reason", "budget")];
        assert_eq!(num(&registry.snapshot(), SERIES_REFUSED, refused), 1.0);
        assert!(registry.is_registered(&jobs));
        // A series is left: the family stays.
        assert!(!registry.remove_family_if_unused(&jobs));
        assert!(jobs.remove(&["a"]));
        assert!(registry.remove_family_if_unused(&jobs));
        assert!(!registry.is_registered(&jobs));
        assert!(!registry.family_names().contains(&"jobs".to_owned()));
        // Its refusals went with it.
        let snap = registry.snapshot();
        assert!(snap.point(SERIES_REFUSED, refused).is_none());
        drop(snap);
        // Once the last handle goes, the budget is as before the family.
        drop(jobs);
        assert_eq!(registry.budget_used().unwrap(), empty_budget);
        // A family registered in its place under the same name is not the old handle's.
        let old = registry.counter("jobs").build().unwrap();
        assert!(registry.remove_family("jobs"));
        let new = registry.counter("jobs").build().unwrap();
        assert!(!registry.is_registered(&old));
        assert!(!registry.remove_family_if_unused(&old));
        assert!(registry.is_registered(&new));
    }

    #[test]
    fn budget_counts_estimated_bytes_by_instrument_kind() {
        // Room for the family and three default histograms (charged 1.9 KB each, what they hold
        // with every block of cells allocated), not four.
        let registry = Registry::with_budget(100, MemoryBudget::new(1000, 10_600));
        let lat = registry.histogram("lat").labels(["route"]).build().unwrap();
        for r in ["/a", "/b", "/c", "/d"] {
            lat.with(&[r]).observe(1.0);
        }
        assert_eq!(lat.series_count(), 3);
        let (_, bytes) = registry.budget_used().unwrap();
        assert!((8_000..10_600).contains(&bytes), "{bytes}");
        // Counters are small: many more fit in what is left.
        let hits = registry.counter("hits").labels(["k"]).build().unwrap();
        for i in 0..10 {
            hits.with(&[i.to_string()]).inc();
        }
        assert_eq!(hits.series_count(), 10);
        let snap = registry.snapshot();
        assert_eq!(
            num(
                &snap,
                SERIES_REFUSED,
                &[("metric", "lat"), ("reason", "budget")]
            ),
            1.0
        );
        // The registry without a budget refuses nothing.
        assert!(!Registry::new().over_budget(usize::MAX));
    }

    #[test]
    fn widen_family_refuses_what_it_cannot_do() {
        let registry = Registry::new();
        let jobs = registry.counter("jobs").labels(["queue"]).build().unwrap();
        let old_handle = jobs.with(&["mail"]);
        assert!(matches!(
            registry.widen_family(&jobs, ["priority"]),
            Err(Error::InvalidLabelName { label, .. }) if label == "queue"
        ));
        assert!(matches!(
            registry.widen_family(&jobs, ["queue", "queue"]),
            Err(Error::InvalidLabelName { .. })
        ));
        let lat = registry.histogram("lat").build().unwrap();
        assert!(registry.widen_family(&lat, ["le"]).is_err());
        let widened = registry.widen_family(&jobs, ["queue", "priority"]).unwrap();
        // The old family is no longer the registered one, nor is a family of another registry.
        let err = registry.widen_family(&jobs, ["queue", "x"]).unwrap_err();
        assert!(matches!(err, Error::NotRegistered { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("widen the family the registry holds now")
        );
        let other = Registry::new()
            .counter("jobs")
            .labels(["queue"])
            .build()
            .unwrap();
        assert!(matches!(
            registry.widen_family(&other, ["queue", "x"]),
            Err(Error::NotRegistered { .. })
        ));
        // The widened family's `mail` series, from a fresh snapshot each time.
        let mail = || {
            num(
                &registry.snapshot(),
                "jobs",
                &[("queue", "mail"), ("priority", "")],
            )
        };
        // Handles of the old family record into a series that is not exported.
        old_handle.add(5);
        widened.with(&["mail", ""]).inc();
        assert_eq!(mail(), 1.0);
        // The same names in another order (or none added) are fine.
        let same = registry
            .widen_family(&widened, ["priority", "queue"])
            .unwrap();
        assert_eq!(mail(), 1.0);
        same.with(&["", "mail"]).inc();
        assert_eq!(mail(), 2.0);
        let up = registry.gauge("up").build().unwrap();
        up.handle().set(1);
        let up = registry
            .widen_family(&up, Vec::<&'static str>::new())
            .unwrap();
        up.handle().inc();
        assert_eq!(num(&registry.snapshot(), "up", &[]), 2.0);
    }
}
