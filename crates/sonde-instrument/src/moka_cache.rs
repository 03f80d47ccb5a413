//! A moka cache with its metrics: lookups by result, evictions by cause, entries and weighted
//! size, on the [`CacheMetrics`] shape (`cache.requests{cache.name, cache.result}`,
//! `cache.evictions{cache.name}`, `cache.size{cache.name}`) plus
//! `cache.removals{cache.name, cache.removal.cause}` (expired, size, explicit, replaced) and
//! `cache.weighted_size{cache.name}`.

use std::hash::Hash;
use std::sync::Arc;

use moka::notification::RemovalCause;
use moka::sync::{Cache, CacheBuilder};
use sonde_core::{CollectorGuard, Counter, Registry};

use crate::{CacheMetrics, Error};

/// A `moka::sync::Cache` whose lookups, evictions and size are metrics. Lookups through
/// [`get`](Self::get) and [`get_with`](Self::get_with) count a hit or a miss (moka keeps no
/// statistics of its own); the entry count and weighted size are read at each collection.
/// The metrics add one relaxed atomic increment per lookup to moka's own work.
///
/// ```
/// let registry = sonde_core::Registry::new();
/// let users = sonde_instrument::MokaCache::new(
///     &registry,
///     "users",
///     moka::sync::Cache::builder().max_capacity(1_000),
/// )?;
/// assert_eq!(users.get_with(7u32, || "ada".to_string()), "ada"); // miss, then loaded
/// assert_eq!(users.get(&7), Some("ada".to_string()));             // hit
/// let snap = registry.snapshot();
/// let hits = snap.point("cache.requests", &[("cache.name", "users"), ("cache.result", "hit")]);
/// assert_eq!(hits.unwrap().number().unwrap().as_f64(), 1.0);
/// # Ok::<(), sonde_instrument::Error>(())
/// ```
pub struct MokaCache<K, V> {
    cache: Cache<K, V>,
    metrics: CacheMetrics,
    _collector: CollectorGuard,
}

impl<K, V> MokaCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Builds the cache from `builder` (size, time to live...) with an eviction listener that
    /// counts removals, and registers its metrics as `cache.name = name`. A listener of the
    /// caller's own on `builder` would be replaced: moka keeps one.
    pub fn new(
        registry: &Registry,
        name: &str,
        builder: CacheBuilder<K, V, Cache<K, V>>,
    ) -> Result<MokaCache<K, V>, Error> {
        let metrics = CacheMetrics::install(registry, name)?;
        let removals = registry
            .counter("cache.removals")
            .description(
                "Entries removed from the cache, by cause (expired and size are evictions).",
            )
            .labels(["cache.name", "cache.removal.cause"])
            .build()?;
        let by_cause: Arc<[Counter; 4]> = Arc::new(
            ["expired", "size", "explicit", "replaced"].map(|c| removals.with(&[name, c])),
        );
        let evict = metrics.clone();
        let cache = builder
            .eviction_listener(move |_key, _value, cause| {
                let i = match cause {
                    RemovalCause::Expired => 0,
                    RemovalCause::Size => 1,
                    RemovalCause::Explicit => 2,
                    RemovalCause::Replaced => 3,
                };
                by_cause[i].inc();
                if cause.was_evicted() {
                    evict.evicted(1);
                }
            })
            .build();
        let weighted = registry
            .gauge("cache.weighted_size")
            .description("The cache's weighted size (entries, or the weigher's units).")
            .labels(["cache.name"])
            .build()?
            .with(&[name]);
        let (reader, size) = (cache.clone(), metrics.clone());
        let collector = registry.register_collector(move || {
            size.set_size(i64::try_from(reader.entry_count()).unwrap_or(i64::MAX));
            weighted.set(i64::try_from(reader.weighted_size()).unwrap_or(i64::MAX));
        });
        Ok(MokaCache {
            cache,
            metrics,
            _collector: collector,
        })
    }

    /// The value for `key`, counting a hit or a miss.
    pub fn get(&self, key: &K) -> Option<V> {
        let v = self.cache.get(key);
        self.metrics.lookup(v.is_some());
        v
    }

    /// The value for `key`, loaded with `init` on a miss (counted as a miss, and a hit
    /// otherwise).
    pub fn get_with(&self, key: K, init: impl FnOnce() -> V) -> V {
        let entry = self.cache.entry(key).or_insert_with(init);
        self.metrics.lookup(!entry.is_fresh());
        entry.into_value()
    }

    /// Inserts (or replaces) `key`.
    pub fn insert(&self, key: K, value: V) {
        self.cache.insert(key, value);
    }

    /// Removes `key`.
    pub fn invalidate(&self, key: &K) {
        self.cache.invalidate(key);
    }

    /// The moka cache itself (lookups through it are not counted).
    pub fn inner(&self) -> &Cache<K, V> {
        &self.cache
    }
}
