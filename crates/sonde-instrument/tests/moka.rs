//! `MokaCache` against the real moka: hits, misses, evictions by cause, size.

use std::time::Duration;

use sonde_core::{Registry, Snapshot};
use sonde_instrument::MokaCache;

fn value(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.point(name, labels)
        .and_then(|p| p.number())
        .map(|n| n.as_f64())
        .unwrap_or(0.0)
}

#[test]
fn lookups_evictions_and_size_are_counted() {
    let registry = Registry::new();
    let cache = MokaCache::new(
        &registry,
        "users",
        moka::sync::Cache::builder()
            .max_capacity(10)
            .time_to_live(Duration::from_millis(300)),
    )
    .unwrap();
    for i in 0..10u32 {
        assert_eq!(cache.get_with(i, || i * 2), i * 2); // 10 misses, loaded
    }
    for i in 0..10u32 {
        assert_eq!(cache.get(&i), Some(i * 2)); // 10 hits
    }
    assert_eq!(cache.get(&99), None); // 1 miss
    assert_eq!(cache.get_with(3, || 0), 6); // 1 hit
    cache.insert(3, 7); // replaced
    cache.invalidate(&4); // explicit
    // Past the capacity: size evictions.
    for i in 100..150u32 {
        cache.insert(i, i);
    }
    cache.inner().run_pending_tasks();
    let s = registry.snapshot();
    fn users(extra: (&'static str, &'static str)) -> Vec<(&'static str, &'static str)> {
        vec![("cache.name", "users"), extra]
    }
    assert_eq!(
        value(&s, "cache.requests", &users(("cache.result", "hit"))),
        11.0
    );
    assert_eq!(
        value(&s, "cache.requests", &users(("cache.result", "miss"))),
        11.0
    );
    assert_eq!(
        value(
            &s,
            "cache.removals",
            &users(("cache.removal.cause", "replaced"))
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "cache.removals",
            &users(("cache.removal.cause", "explicit"))
        ),
        1.0
    );
    let size_evictions = value(
        &s,
        "cache.removals",
        &users(("cache.removal.cause", "size")),
    );
    assert!(size_evictions >= 40.0, "{size_evictions}");
    assert!(value(&s, "cache.size", &[("cache.name", "users")]) <= 10.0);
    // Time to live: what is left expires.
    std::thread::sleep(Duration::from_millis(400));
    cache.inner().run_pending_tasks();
    let s = registry.snapshot();
    assert!(
        value(
            &s,
            "cache.removals",
            &users(("cache.removal.cause", "expired"))
        ) >= 1.0
    );
    assert_eq!(value(&s, "cache.size", &[("cache.name", "users")]), 0.0);
    // Evictions (size + expired) also count in cache.evictions, the CacheMetrics total.
    let evictions = value(&s, "cache.evictions", &[("cache.name", "users")]);
    let by_cause = value(
        &s,
        "cache.removals",
        &users(("cache.removal.cause", "size")),
    ) + value(
        &s,
        "cache.removals",
        &users(("cache.removal.cause", "expired")),
    );
    assert_eq!(evictions, by_cause);
}

#[test]
fn a_dropped_cache_stops_being_read() {
    let registry = Registry::new();
    let cache: MokaCache<u32, u32> = MokaCache::new(
        &registry,
        "short",
        moka::sync::Cache::builder().max_capacity(5),
    )
    .unwrap();
    cache.insert(1, 1);
    cache.inner().run_pending_tasks();
    let size = |r: &Registry| value(&r.snapshot(), "cache.size", &[("cache.name", "short")]);
    assert_eq!(size(&registry), 1.0);
    // The moka cache lives on (a clone), but the MokaCache is gone, and its collector with it:
    // the size is no longer read.
    let kept = cache.inner().clone();
    drop(cache);
    kept.insert(2, 2);
    kept.run_pending_tasks();
    assert_eq!(kept.entry_count(), 2);
    assert_eq!(size(&registry), 1.0);
}
