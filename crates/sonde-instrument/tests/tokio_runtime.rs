//! Tokio runtime metrics against a real multi-thread runtime with busy and parked workers.

use crate::common;

use std::time::{Duration, Instant};

use common::multi_thread_runtime;
use sonde_core::{Registry, Snapshot};
use sonde_instrument::TokioRuntimeMetrics;

fn value(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.point(name, labels).unwrap().number().unwrap().as_f64()
}

/// `name` summed over the two workers.
fn both_workers(s: &Snapshot, name: &str) -> f64 {
    ["0", "1"]
        .iter()
        .map(|w| value(s, name, &[("tokio.worker", w)]))
        .sum()
}

#[test]
fn workers_tasks_busy_time_and_parks_are_read_at_collection() {
    let rt = multi_thread_runtime(2);
    let registry = Registry::new();
    let metrics = TokioRuntimeMetrics::install(&registry, rt.handle().clone()).unwrap();
    let first = registry.snapshot();
    assert_eq!(value(&first, "tokio.runtime.workers", &[]), 2.0);
    // Tasks that never finish are alive; two that spin keep the workers busy for a while.
    for _ in 0..5 {
        rt.spawn(async { tokio::time::sleep(Duration::from_secs(3600)).await });
    }
    for _ in 0..2 {
        rt.spawn(async {
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(200) {
                std::hint::spin_loop();
            }
        });
    }
    std::thread::sleep(Duration::from_millis(400));
    let s = registry.snapshot();
    assert!(value(&s, "tokio.runtime.tasks.alive", &[]) >= 5.0);
    let busy = both_workers(&s, "tokio.runtime.worker.busy.time");
    assert!(
        busy >= 0.3,
        "the two spinning tasks kept workers busy ~0.4 s, read {busy}"
    );
    let parks = both_workers(&s, "tokio.runtime.worker.parks");
    assert!(parks >= 1.0, "idle workers park: {parks}");
    // Totals only grow between collections, as counters.
    let again = registry.snapshot();
    let busy_again = both_workers(&again, "tokio.runtime.worker.busy.time");
    assert!(busy_again >= busy);
    // Dropping the handle stops the reads; the runtime may go away without harm.
    drop(metrics);
    rt.shutdown_timeout(Duration::from_millis(100));
    let _ = registry.snapshot();
}
