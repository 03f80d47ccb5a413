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
//! Local queue depths, blocking-pool threads and the poll-time histogram need Tokio's
//! `tokio_unstable` build flag: with feature `tokio-unstable` and a build with
//! `RUSTFLAGS="--cfg tokio_unstable"`, they are read too:
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `tokio.runtime.blocking.threads` | gauge | threads of the blocking pool |
//! | `tokio.runtime.blocking.idle_threads` | gauge | idle threads of the blocking pool |
//! | `tokio.runtime.blocking.queue.depth` | gauge | tasks waiting for a blocking thread |
//! | `tokio.runtime.worker.local_queue.depth{tokio.worker}` | gauge | tasks in each worker's own queue |
//! | `tokio.runtime.worker.polls{tokio.worker}` | counter | tasks polled by each worker |
//! | `tokio.runtime.worker.steals{tokio.worker}` | counter | tasks each worker stole from others |
//! | `tokio.runtime.worker.poll.duration` | histogram, s | how long task polls took, all workers (when the runtime was built with `enable_metrics_poll_time_histogram()`) |

use std::sync::{Arc, Mutex};

use sonde_core::{CollectorGuard, Counter, Gauge, Registry, Unit};
use tokio::runtime::Handle;

use crate::Error;

/// Reads a runtime's metrics at every collection while it lives; dropping it stops reading.
#[must_use = "dropping the handle stops reading the runtime: keep it (`let _runtime_metrics = ...`) for as long as it should be read"]
pub struct TokioRuntimeMetrics {
    _guard: CollectorGuard,
    #[cfg(all(feature = "tokio-unstable", tokio_unstable))]
    _unstable: Option<CollectorGuard>,
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
        let gauge = |name, help| unlabelled_gauge(registry, name, help);
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
        #[cfg(all(feature = "tokio-unstable", tokio_unstable))]
        let handle_for_unstable = handle.clone();
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
        #[cfg(all(feature = "tokio-unstable", tokio_unstable))]
        let unstable = Some(unstable::install(registry, handle_for_unstable)?);
        #[cfg(all(feature = "tokio-unstable", not(tokio_unstable)))]
        sonde_core::diag::warn(format_args!(
            "sonde-instrument's feature tokio-unstable is on, but this build lacks RUSTFLAGS=\"--cfg tokio_unstable\": Tokio's unstable runtime metrics (blocking pool, local queues, polls, steals, poll durations) are not read"
        ));
        Ok(TokioRuntimeMetrics {
            _guard: guard,
            #[cfg(all(feature = "tokio-unstable", tokio_unstable))]
            _unstable: unstable,
        })
    }

    /// Whether this build reads Tokio's unstable runtime metrics too (feature `tokio-unstable`
    /// and `--cfg tokio_unstable`).
    pub fn reads_unstable_metrics() -> bool {
        cfg!(all(feature = "tokio-unstable", tokio_unstable))
    }
}

/// The one series of an unlabelled gauge family `name`.
fn unlabelled_gauge(
    registry: &Registry,
    name: &'static str,
    help: &'static str,
) -> Result<Gauge, sonde_core::Error> {
    registry
        .gauge(name)
        .description(help)
        .build()
        .map(|f| f.with::<&str>(&[]))
}

#[cfg(all(feature = "tokio-unstable", tokio_unstable))]
mod unstable {
    use std::sync::{Arc, Mutex};

    use sonde_core::{CollectorGuard, Counter, Gauge, Histogram, Registry, Unit};
    use tokio::runtime::Handle;

    use super::unlabelled_gauge;
    use crate::Error;

    struct State {
        blocking: Gauge,
        idle_blocking: Gauge,
        blocking_queue: Gauge,
        local_queue: Vec<Gauge>,
        polls: Vec<Counter>,
        steals: Vec<Counter>,
        poll_duration: Histogram,
        /// Last totals: polls and steals per worker, poll-time bucket counts per worker.
        last: Vec<(u64, u64, Vec<u64>)>,
        batch: Vec<(f64, u64)>,
    }

    pub(super) fn install(registry: &Registry, handle: Handle) -> Result<CollectorGuard, Error> {
        let m = handle.metrics();
        let n = m.num_workers();
        let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let gauge = |name, help| unlabelled_gauge(registry, name, help);
        let per_worker_gauge = registry
            .gauge("tokio.runtime.worker.local_queue.depth")
            .description("Tasks in each worker's own queue.")
            .labels(["tokio.worker"])
            .build()?;
        let counter = |name: &'static str, help: &'static str| {
            registry
                .counter(name)
                .description(help)
                .labels(["tokio.worker"])
                .build()
        };
        let polls = counter("tokio.runtime.worker.polls", "Tasks polled by each worker.")?;
        let steals = counter(
            "tokio.runtime.worker.steals",
            "Tasks each worker stole from another worker's queue.",
        )?;
        let buckets = if m.poll_time_histogram_enabled() {
            m.poll_time_histogram_num_buckets()
        } else {
            0
        };
        let state = Arc::new(Mutex::new(State {
            blocking: gauge(
                "tokio.runtime.blocking.threads",
                "Threads of the runtime's blocking pool.",
            )?,
            idle_blocking: gauge(
                "tokio.runtime.blocking.idle_threads",
                "Idle threads of the runtime's blocking pool.",
            )?,
            blocking_queue: gauge(
                "tokio.runtime.blocking.queue.depth",
                "Tasks waiting for a thread of the blocking pool.",
            )?,
            local_queue: ids
                .iter()
                .map(|i| per_worker_gauge.with(&[i.as_str()]))
                .collect(),
            polls: ids.iter().map(|i| polls.with(&[i.as_str()])).collect(),
            steals: ids.iter().map(|i| steals.with(&[i.as_str()])).collect(),
            poll_duration: registry
                .histogram("tokio.runtime.worker.poll.duration")
                .description("How long task polls took, all workers.")
                .unit(Unit::Seconds)
                .build()?
                .handle(),
            last: vec![(0, 0, vec![0; buckets]); n],
            batch: Vec::with_capacity(buckets),
        }));
        Ok(registry.register_collector(move || {
            let m = handle.metrics();
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            let s = &mut *s;
            let clamp = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
            s.blocking.set(clamp(m.num_blocking_threads()));
            s.idle_blocking.set(clamp(m.num_idle_blocking_threads()));
            s.blocking_queue.set(clamp(m.blocking_queue_depth()));
            for w in 0..s.last.len() {
                if let Some(g) = s.local_queue.get(w) {
                    g.set(clamp(m.worker_local_queue_depth(w)));
                }
                let (polls_last, steals_last, buckets_last) = &mut s.last[w];
                let p = m.worker_poll_count(w);
                let st = m.worker_steal_count(w);
                if let Some(c) = s.polls.get(w) {
                    c.add(p.saturating_sub(*polls_last));
                }
                if let Some(c) = s.steals.get(w) {
                    c.add(st.saturating_sub(*steals_last));
                }
                *polls_last = p.max(*polls_last);
                *steals_last = st.max(*steals_last);
                s.batch.clear();
                let buckets_total = buckets_last.len();
                for (b, last) in buckets_last.iter_mut().enumerate() {
                    let now = m.poll_time_histogram_bucket_count(w, b);
                    let added = now.saturating_sub(*last);
                    *last = now.max(*last);
                    if added > 0 {
                        // The bucket's middle; the last bucket is open (its end is u64::MAX
                        // nanoseconds), so its start stands for it.
                        let r = m.poll_time_histogram_bucket_range(b);
                        let end = if b + 1 == buckets_total {
                            r.start
                        } else {
                            r.end
                        };
                        let mid = (r.start.as_secs_f64() + end.as_secs_f64()) / 2.0;
                        s.batch.push((mid, added));
                    }
                }
                if !s.batch.is_empty() {
                    let sum = s.batch.iter().map(|(v, n)| v * *n as f64).sum();
                    s.poll_duration.record_counts(&s.batch, sum);
                }
            }
        }))
    }
}
