//! Tokio runtime metrics from the stable `RuntimeMetrics` API, read when the registry is
//! collected.
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `tokio.runtime.workers` | gauge | worker threads |
//! | `tokio.runtime.tasks.alive` | gauge | tasks spawned and not finished |
//! | `tokio.runtime.global_queue.depth` | gauge | tasks waiting in the injection queue |
//! | `tokio.runtime.worker.busy.time{tokio.worker}` | counter, s | time each worker spent polling (its rate is the busy ratio) |
//! | `tokio.runtime.worker.parks{tokio.worker}` | counter | times each worker parked (went idle) |
//!
//! Local queue depths, blocking-pool threads and the poll-time histogram need the
//! `tokio_unstable` build flag and are not read here.

use std::sync::{Arc, Mutex};

use sonde_core::{CollectorGuard, Counter, Gauge, Registry, Unit};
use tokio::runtime::Handle;

use crate::Error;

/// Reads a runtime's metrics at every collection while it lives; dropping it stops reading.
pub struct TokioRuntimeMetrics {
    _guard: CollectorGuard,
}

struct Families {
    workers: Gauge,
    alive: Gauge,
    queue: Gauge,
    busy: Vec<Counter<f64>>,
    parks: Vec<Counter>,
    /// Last totals per worker: busy seconds, parks (the runtime's counters are totals).
    last: Vec<(f64, u64)>,
}

impl TokioRuntimeMetrics {
    /// Registers the families and reads `handle`'s runtime at every collection.
    ///
    /// ```
    /// let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    /// let registry = sonde_core::Registry::new();
    /// let _metrics = sonde_instrument::TokioRuntimeMetrics::install(&registry, rt.handle().clone())?;
    /// let snap = registry.snapshot();
    /// assert_eq!(snap.point("tokio.runtime.workers", &[]).unwrap().number().unwrap().as_f64(), 2.0);
    /// # Ok::<(), sonde_instrument::Error>(())
    /// ```
    pub fn install(registry: &Registry, handle: Handle) -> Result<TokioRuntimeMetrics, Error> {
        let m = handle.metrics();
        let n = m.num_workers();
        let gauge = |name: &'static str, help: &'static str| {
            registry
                .gauge(name)
                .description(help)
                .build()
                .map(|f| f.with::<&str>(&[]))
        };
        let workers = gauge(
            "tokio.runtime.workers",
            "Worker threads of the Tokio runtime.",
        )?;
        let alive = gauge(
            "tokio.runtime.tasks.alive",
            "Tasks spawned and not finished.",
        )?;
        let queue = gauge(
            "tokio.runtime.global_queue.depth",
            "Tasks waiting in the runtime's global (injection) queue.",
        )?;
        let busy_family = registry
            .counter_f64("tokio.runtime.worker.busy.time")
            .description(
                "Time each worker spent polling tasks; its rate is the worker's busy ratio.",
            )
            .unit(Unit::Seconds)
            .labels(["tokio.worker"])
            .build()?;
        let parks_family = registry
            .counter("tokio.runtime.worker.parks")
            .description("Times each worker parked (ran out of work).")
            .labels(["tokio.worker"])
            .build()?;
        let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let families = Arc::new(Mutex::new(Families {
            workers,
            alive,
            queue,
            busy: ids
                .iter()
                .map(|i| busy_family.with(&[i.as_str()]))
                .collect(),
            parks: ids
                .iter()
                .map(|i| parks_family.with(&[i.as_str()]))
                .collect(),
            last: vec![(0.0, 0); n],
        }));
        let guard = registry.register_collector(move || {
            let m = handle.metrics();
            let mut f = families.lock().unwrap_or_else(|e| e.into_inner());
            let Families {
                workers,
                alive,
                queue,
                busy,
                parks,
                last,
            } = &mut *f;
            workers.set(i64::try_from(m.num_workers()).unwrap_or(i64::MAX));
            alive.set(i64::try_from(m.num_alive_tasks()).unwrap_or(i64::MAX));
            queue.set(i64::try_from(m.global_queue_depth()).unwrap_or(i64::MAX));
            for (w, (busy_last, parks_last)) in last.iter_mut().enumerate() {
                let b = m.worker_total_busy_duration(w).as_secs_f64();
                let p = m.worker_park_count(w);
                if let Some(c) = busy.get(w) {
                    c.add((b - *busy_last).max(0.0));
                }
                if let Some(c) = parks.get(w) {
                    c.add(p.saturating_sub(*parks_last));
                }
                *busy_last = b.max(*busy_last);
                *parks_last = p.max(*parks_last);
            }
        });
        Ok(TokioRuntimeMetrics { _guard: guard })
    }
}
