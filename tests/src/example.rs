//! The examples as the end-to-end tests run them: the example service's workload
//! (`sonde-example`) and the axum example's routes.

use std::time::Duration;

use sonde::Registry;
use sonde_example::{Options, Workload};

/// The example workload recording into `registry`: its default options, after `cold_start`.
pub fn workload(registry: &Registry, cold_start: Duration) -> Workload {
    Workload::start(
        registry,
        Options {
            cold_start,
            ..Options::default()
        },
    )
    .unwrap()
}

/// Runs the example workload (default options, a 20 ms cold start) on `registry` for `run`,
/// then stops it: every instrumentation helper has recorded by then.
pub fn run_workload(registry: &Registry, run: Duration) {
    let workload = workload(registry, Duration::from_millis(20));
    std::thread::sleep(run);
    workload.stop();
}

/// The example workload for exact comparisons: no cold start, no process metrics (whose values
/// move on their own), a request every 2 ms per worker.
pub fn steady_workload(registry: &Registry) -> Workload {
    Workload::start(
        registry,
        Options {
            cold_start: Duration::ZERO,
            process_metrics: false,
            pause: Duration::from_millis(2),
            ..Options::default()
        },
    )
    .unwrap()
}

pub use sonde_testkit::AXUM_ROUTES;
