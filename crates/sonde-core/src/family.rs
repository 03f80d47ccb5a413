//! A family: the series of one metric, keyed by label values, with a series limit,
//! an overflow series and optional idle expiry.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use hashbrown::HashTable;

use crate::Error;
use crate::budget::BudgetState;
use crate::instrument::{Counter, Instrument, InstrumentOptions};
use crate::labels::{LabelValues, hash_values};
use crate::series::{Series, SeriesInfo};
use crate::snapshot::{FamilyMeta, SeriesSnapshot};

const SHARDS: usize = 8;

type Table<C> = HashTable<Arc<Series<C>>>;

/// Self-metric families a family reports into; their series appear only when something
/// happens, so healthy families add no zero-valued series.
#[derive(Clone, Default)]
pub(crate) struct SelfMetrics {
    /// `sonde.series.overflow{metric}`: lookups sent to the overflow series.
    pub(crate) overflow: Option<Family<Counter>>,
    /// `sonde.instrumentation.errors{metric,reason}`.
    pub(crate) errors: Option<Family<Counter>>,
    /// `sonde.series.refused{metric,reason}`: new label sets refused by the memory budget.
    pub(crate) refused: Option<Family<Counter>>,
    /// The registry's memory budget, shared by its families.
    pub(crate) budget: Option<Arc<BudgetState>>,
}

pub(crate) struct FamilyInner<M: Instrument> {
    pub(crate) meta: Arc<FamilyMeta>,
    pub(crate) config: Arc<M::Config>,
    hasher: foldhash::fast::RandomState,
    shards: [RwLock<Table<M::Core>>; SHARDS],
    len: AtomicUsize,
    max_series: usize,
    idle_ttl: Option<u64>,
    /// The builder's options as given, to build the configuration again on widening.
    pub(crate) options: InstrumentOptions,
    overflow: OnceLock<Arc<Series<M::Core>>>,
    unlabelled: OnceLock<M>,
    self_metrics: SelfMetrics,
    /// Estimated bytes of one series before its label values.
    base_bytes: usize,
    /// Bytes this family's live series took from the budget.
    charged: AtomicUsize,
}

impl<M: Instrument> Drop for FamilyInner<M> {
    fn drop(&mut self) {
        // A removed or replaced family gives its series' share back.
        if let Some(b) = &self.self_metrics.budget {
            b.give_back(*self.len.get_mut(), *self.charged.get_mut());
        }
    }
}

impl<M: Instrument> FamilyInner<M> {
    fn series_bytes<'a>(&self, values: impl Iterator<Item = &'a str>) -> usize {
        self.base_bytes + values.map(str::len).sum::<usize>()
    }

    /// Charges the budget for a series that exists already.
    fn charge(&self, bytes: usize) {
        if let Some(b) = &self.self_metrics.budget {
            b.take(1, bytes);
            self.charged.fetch_add(bytes, Relaxed);
        }
    }

    fn release(&self, series: usize, bytes: usize) {
        if let Some(b) = &self.self_metrics.budget {
            b.give_back(series, bytes);
            self.charged
                .fetch_sub(bytes.min(self.charged.load(Relaxed)), Relaxed);
        }
    }
}

/// A family of series sharing a name, kind, unit and label names.
///
/// Cheap to clone (an `Arc`). Resolve a series with [`with`](Self::with) and keep the handle:
/// recording through a handle is a single atomic operation.
///
/// ```
/// let registry = sonde_core::Registry::new();
/// let requests = registry
///     .counter("http.server.requests")
///     .labels(["http.request.method", "http.route"])
///     .build()?;
/// let h = requests.with(&["GET", "/users"]);
/// h.inc();
/// # Ok::<(), sonde_core::Error>(())
/// ```
pub struct Family<M: Instrument> {
    pub(crate) inner: Arc<FamilyInner<M>>,
}

impl<M: Instrument> Clone for Family<M> {
    fn clone(&self) -> Self {
        Family {
            inner: self.inner.clone(),
        }
    }
}

impl<M: Instrument> fmt::Debug for Family<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Family")
            .field("name", &self.inner.meta.name())
            .field("kind", &self.inner.meta.kind())
            .field("series", &self.series_count())
            .finish()
    }
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panic while holding the lock cannot leave a table half-updated in a way that matters
    // here (inserts are single calls), so a poisoned lock is still usable.
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl<M: Instrument> Family<M> {
    pub(crate) fn new(
        meta: FamilyMeta,
        config: M::Config,
        max_series: usize,
        idle_timeout: Option<Duration>,
        options: InstrumentOptions,
        self_metrics: SelfMetrics,
    ) -> Self {
        // Arc counts, header, table slot, one boxed string per label value, the storage.
        let base_bytes = 16
            + std::mem::size_of::<crate::series::Header>()
            + 16
            + 16 * meta.label_names.len()
            + M::core_bytes(&config);
        // The family itself (tables, definition, layout) counts too, without refusal: a
        // caller creating families without bound checks `Registry::over_budget` first.
        let family_bytes = std::mem::size_of::<FamilyInner<M>>()
            + M::config_bytes(&config)
            + meta.name().len()
            + meta.description.len()
            + 32 * meta.label_names.len();
        if let Some(b) = &self_metrics.budget {
            b.take(0, family_bytes);
        }
        Family {
            inner: Arc::new(FamilyInner {
                base_bytes,
                charged: AtomicUsize::new(if self_metrics.budget.is_some() {
                    family_bytes
                } else {
                    0
                }),
                meta: Arc::new(meta),
                config: Arc::new(config),
                hasher: foldhash::fast::RandomState::default(),
                shards: std::array::from_fn(|_| RwLock::new(HashTable::new())),
                len: AtomicUsize::new(0),
                max_series: max_series.max(1),
                // Whole seconds, rounded up: a series never goes before its timeout.
                idle_ttl: idle_timeout
                    .map(|d| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)),
                options,
                overflow: OnceLock::new(),
                unlabelled: OnceLock::new(),
                self_metrics,
            }),
        }
    }

    /// The family's definition.
    pub fn meta(&self) -> &FamilyMeta {
        &self.inner.meta
    }

    /// The instrument configuration (the histogram layout for histograms).
    pub fn config(&self) -> &M::Config {
        &self.inner.config
    }

    /// Number of live series, not counting the overflow series.
    pub fn series_count(&self) -> usize {
        self.inner.len.load(Relaxed)
    }

    /// The series limit: past it, new label sets share the overflow series.
    pub fn max_series(&self) -> usize {
        self.inner.max_series
    }

    /// The handle of the series with these label values, created on first use.
    ///
    /// Looking up an existing series hashes the borrowed values and allocates nothing; creating
    /// one allocates once. Past the series limit, the overflow series is returned. With a wrong
    /// number of values, a detached handle is returned (its data is not exported) and
    /// `sonde.instrumentation.errors{reason="label_count"}` is incremented; use
    /// [`try_with`](Self::try_with) to get the error instead.
    #[inline]
    pub fn with<S: AsRef<str>>(&self, values: &[S]) -> M {
        match self.try_with(values) {
            Ok(h) => h,
            Err(_) => {
                if let Some(f) = &self.inner.self_metrics.errors {
                    f.with(&[self.inner.meta.name(), "label_count"]).inc();
                }
                M::detached(&self.inner.config)
            }
        }
    }

    /// Like [`with`](Self::with), but a wrong number of label values is an error.
    #[inline]
    pub fn try_with<S: AsRef<str>>(&self, values: &[S]) -> Result<M, Error> {
        let inner = &*self.inner;
        if values.len() != inner.meta.label_names.len() {
            return Err(Error::LabelCount {
                metric: inner.meta.name().to_owned(),
                names: inner.meta.label_names().map(str::to_owned).collect(),
                expected: inner.meta.label_names.len(),
                got: values.len(),
            });
        }
        if values.is_empty() {
            return Ok(self.handle());
        }
        let hash = hash_values(&inner.hasher, values.iter().map(AsRef::as_ref));
        let shard = &inner.shards[shard_of(hash)];
        if let Some(s) = read(shard).find(hash, |s| s.header.labels.eq_values(values)) {
            if inner.idle_ttl.is_some() {
                s.header.touch();
            }
            return Ok(M::from_series(s.clone()));
        }
        Ok(self.insert(hash, values))
    }

    #[cold]
    fn insert<S: AsRef<str>>(&self, hash: u64, values: &[S]) -> M {
        let inner = &*self.inner;
        let mut table = write(&inner.shards[shard_of(hash)]);
        if let Some(s) = table.find(hash, |s| s.header.labels.eq_values(values)) {
            return M::from_series(s.clone());
        }
        // `len` only changes under a shard's write lock; a racing insert in another shard can
        // overshoot the limit by at most SHARDS - 1 series.
        if inner.len.load(Relaxed) >= inner.max_series {
            drop(table);
            return self.overflow();
        }
        let bytes = inner.series_bytes(values.iter().map(AsRef::as_ref));
        if let Some(b) = &inner.self_metrics.budget {
            // Checked before anything is allocated for the series.
            if !b.try_take(bytes) {
                drop(table);
                if let Some(f) = &inner.self_metrics.refused {
                    f.with(&[inner.meta.name(), "budget"]).inc();
                }
                return self.overflow_series();
            }
            inner.charged.fetch_add(bytes, Relaxed);
        }
        let series = Series::new(LabelValues::new(values), false, M::new_core(&inner.config));
        let hasher = &inner.hasher;
        table.insert_unique(hash, series.clone(), |s| {
            hash_values(hasher, s.header.labels.iter())
        });
        inner.len.fetch_add(1, Relaxed);
        M::from_series(series)
    }

    fn overflow(&self) -> M {
        let inner = &*self.inner;
        if let Some(f) = &inner.self_metrics.overflow {
            f.with(&[inner.meta.name()]).inc();
        }
        self.overflow_series()
    }

    fn overflow_series(&self) -> M {
        let inner = &*self.inner;
        let s = inner
            .overflow
            .get_or_init(|| Series::new(LabelValues::empty(), true, M::new_core(&inner.config)));
        M::from_series(s.clone())
    }

    /// The handle of the family's only series, for families without labels. For a labelled
    /// family this is a detached handle (see [`with`](Self::with)).
    pub fn handle(&self) -> M {
        let inner = &*self.inner;
        if !inner.meta.label_names.is_empty() {
            return self.with::<&str>(&[]);
        }
        inner
            .unlabelled
            .get_or_init(|| {
                let series = Series::new(LabelValues::empty(), false, M::new_core(&inner.config));
                let hasher = &inner.hasher;
                let hash = hash_values(hasher, std::iter::empty());
                write(&inner.shards[shard_of(hash)]).insert_unique(hash, series.clone(), |s| {
                    hash_values(hasher, s.header.labels.iter())
                });
                inner.len.fetch_add(1, Relaxed);
                // A family's only series is never refused: the family exists, so does it.
                inner.charge(inner.base_bytes);
                M::from_series(series)
            })
            .clone()
    }

    /// A new family (not registered) with `meta` and `config` holding every series of this one,
    /// its label values rearranged by `positions` (for each new label, the index of the old
    /// label it takes its value from, or `None` for `""`) and its recorded state, id and start
    /// time carried over. See [`Registry::widen_family`](crate::Registry::widen_family).
    pub(crate) fn widened(
        &self,
        meta: FamilyMeta,
        config: M::Config,
        positions: &[Option<usize>],
    ) -> Family<M> {
        let old = &*self.inner;
        let new = Family::<M>::new(
            meta,
            config,
            old.max_series,
            old.idle_ttl.map(Duration::from_secs),
            old.options.clone(),
            old.self_metrics.clone(),
        );
        let inner = &*new.inner;
        let carry = |s: &Series<M::Core>, labels: LabelValues| {
            let core = M::new_core(&inner.config);
            M::absorb(&core, &s.core);
            Arc::new(Series {
                header: crate::series::Header::carried(labels, &s.header),
                core,
            })
        };
        for shard in &old.shards {
            for s in read(shard).iter() {
                let old_values: Vec<&str> = s.header.labels.iter().collect();
                let values: Vec<&str> = positions
                    .iter()
                    .map(|p| p.and_then(|i| old_values.get(i).copied()).unwrap_or(""))
                    .collect();
                let series = carry(s, LabelValues::new(&values));
                let hash = hash_values(&inner.hasher, values.iter().copied());
                let hasher = &inner.hasher;
                write(&inner.shards[shard_of(hash)]).insert_unique(hash, series.clone(), |s| {
                    hash_values(hasher, s.header.labels.iter())
                });
                inner.len.fetch_add(1, Relaxed);
                inner.charge(inner.series_bytes(values.iter().copied()));
                if positions.is_empty() {
                    // Without labels the one series is also the family's handle.
                    let _ = inner.unlabelled.set(M::from_series(series));
                }
            }
        }
        if let Some(s) = old.overflow.get() {
            let _ = inner.overflow.set(carry(s, LabelValues::empty()));
        }
        new
    }

    /// Removes the series with these label values, if present. Handles still held keep
    /// recording into the removed series, which is no longer exported.
    pub fn remove<S: AsRef<str>>(&self, values: &[S]) -> bool {
        let inner = &*self.inner;
        if values.is_empty() {
            return false;
        }
        let hash = hash_values(&inner.hasher, values.iter().map(AsRef::as_ref));
        let mut table = write(&inner.shards[shard_of(hash)]);
        match table.find_entry(hash, |s| s.header.labels.eq_values(values)) {
            Ok(entry) => {
                let (s, _) = entry.remove();
                inner.len.fetch_sub(1, Relaxed);
                inner.release(1, inner.series_bytes(s.header.labels.iter()));
                true
            }
            Err(_) => false,
        }
    }
}

fn shard_of(hash: u64) -> usize {
    // Middle bits: hashbrown uses the low bits for the slot and the top 7 for the tag.
    (hash >> 32) as usize % SHARDS
}

/// Sorts snapshots by series id. A snapshot is large (a histogram point is over 100 bytes), so
/// the order is found on indices and then applied by following its cycles: each snapshot moves
/// about once instead of at every step of a sort.
/// (Sorting the series handles before reading them, as `visit` does, was measured slower here:
/// the changed allocation pattern made glibc return the heap after each export; BENCHMARKS.md,
/// issue 15.)
fn sort_by_id(series: &mut [SeriesSnapshot]) {
    if series.is_sorted_by_key(|s| s.id) {
        return;
    }
    let mut order: Vec<u32> = (0..series.len() as u32).collect();
    order.sort_unstable_by_key(|&i| series[i as usize].id);
    // Position k receives what was at order[k]; u32::MAX marks a position already placed.
    for i in 0..order.len() {
        if order[i] == u32::MAX {
            continue;
        }
        let mut at = i;
        loop {
            let from = order[at] as usize;
            order[at] = u32::MAX;
            if from == i {
                break;
            }
            series.swap(at, from);
            at = from;
        }
    }
}

/// What [`ErasedFamily::visit`] reports: how many series follow, then each series.
pub(crate) enum VisitEvent<'a> {
    Start(usize),
    Series(&'a SeriesSnapshot),
}

/// A family seen without its instrument type, for collection.
pub(crate) trait ErasedFamily: Send + Sync {
    fn meta(&self) -> &Arc<FamilyMeta>;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    fn read(&self, out: &mut Vec<SeriesSnapshot>);
    /// Reads the series one at a time, in creation order, right before handing each over.
    fn visit(&self, f: &mut dyn FnMut(VisitEvent<'_>));
    fn sweep(&self, now: u64);
    fn series_count(&self) -> usize;
}

impl<M: Instrument> ErasedFamily for FamilyInner<M> {
    fn meta(&self) -> &Arc<FamilyMeta> {
        &self.meta
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn read(&self, out: &mut Vec<SeriesSnapshot>) {
        let start = out.len();
        for shard in &self.shards {
            for s in read(shard).iter() {
                out.push(snapshot_of::<M>(s));
            }
        }
        sort_by_id(&mut out[start..]);
        if let Some(s) = self.overflow.get() {
            out.push(snapshot_of::<M>(s));
        }
    }

    fn visit(&self, f: &mut dyn FnMut(VisitEvent<'_>)) {
        let mut list: Vec<Arc<Series<M::Core>>> = Vec::with_capacity(self.len.load(Relaxed) + 1);
        for shard in &self.shards {
            list.extend(read(shard).iter().cloned());
        }
        list.sort_unstable_by_key(|s| s.header.id());
        list.extend(self.overflow.get().cloned());
        f(VisitEvent::Start(list.len()));
        for s in &list {
            f(VisitEvent::Series(&snapshot_of::<M>(s)));
        }
    }

    fn sweep(&self, now: u64) {
        let Some(ttl) = self.idle_ttl else { return };
        for shard in &self.shards {
            // Decide under the read lock; take the write lock only when something expires.
            let expired = read(shard)
                .iter()
                .filter(|s| s.header.idle_for(now, Arc::strong_count(s) > 1, ttl))
                .count();
            if expired == 0 {
                continue;
            }
            let (mut removed, mut bytes) = (0, 0);
            write(shard).retain(|s| {
                // Re-checked under the write lock: no handle can be taken meanwhile.
                let keep = Arc::strong_count(s) > 1 || !s.header.idle_for(now, false, ttl);
                if !keep {
                    removed += 1;
                    bytes += self.series_bytes(s.header.labels.iter());
                }
                keep
            });
            self.len.fetch_sub(removed, Relaxed);
            self.release(removed, bytes);
        }
    }

    fn series_count(&self) -> usize {
        self.len.load(Relaxed)
    }
}

fn snapshot_of<M: Instrument>(s: &Arc<Series<M::Core>>) -> SeriesSnapshot {
    SeriesSnapshot {
        id: s.header.id(),
        start_unix_nanos: s.header.created_unix_nanos(),
        point: M::read(&s.core),
        series: s.clone() as Arc<dyn SeriesInfo>,
    }
}

#[cfg(test)]
mod tests {
    /// Snapshots come in creation order (series ids ascending) whatever the shards' order,
    /// every series once.
    #[test]
    fn snapshots_are_in_creation_order() {
        let registry = crate::Registry::new();
        let h = registry
            .histogram("h")
            .labels(["k"])
            .max_series(5000)
            .build()
            .unwrap();
        for i in 0..3000 {
            h.with(&[format!("{}", (i * 7919) % 3000)])
                .observe(f64::from(i));
        }
        let snap = registry.snapshot();
        let f = snap.family("h").unwrap();
        assert_eq!(f.series.len(), 3000);
        assert!(f.series.windows(2).all(|w| w[0].id < w[1].id));
        let first = f.labels(&f.series[0]);
        assert_eq!(first, vec![("k", "0")]);
        let last = f.labels(&f.series[2999]);
        assert_eq!(
            last,
            vec![("k", ((2999 * 7919) % 3000).to_string().as_str())]
        );
    }
}
