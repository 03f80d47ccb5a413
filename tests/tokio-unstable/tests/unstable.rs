//! Tokio's unstable runtime metrics on a real runtime: blocking threads, polls, steals, local
//! queue depths and poll durations, read at collection.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sonde_core::Registry;
use sonde_instrument::TokioRuntimeMetrics;

#[test]
fn blocking_threads_polls_and_poll_durations_are_read() {
    assert!(
        TokioRuntimeMetrics::reads_unstable_metrics(),
        "build with RUSTFLAGS=\"--cfg tokio_unstable\""
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .enable_metrics_poll_time_histogram()
        .build()
        .unwrap();
    let registry = Registry::new();
    let _metrics = TokioRuntimeMetrics::install(&registry, rt.handle().clone()).unwrap();
    rt.block_on(async {
        let blocking =
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(50)));
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i % 7)).await;
                i
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        blocking.await.unwrap();
    });
    let s = registry.snapshot();
    let number = |name: &str, labels: &[(&str, &str)]| {
        s.point(name, labels)
            .and_then(|p| p.number())
            .map(|n| n.as_f64())
            .unwrap_or_else(|| panic!("{name} missing: {s:#?}"))
    };
    assert!(number("tokio.runtime.blocking.threads", &[]) >= 1.0);
    let polls: f64 = ["0", "1"]
        .iter()
        .map(|w| number("tokio.runtime.worker.polls", &[("tokio.worker", w)]))
        .sum();
    assert!(polls >= 200.0, "{polls} polls for 200 tasks");
    let _ = number("tokio.runtime.worker.steals", &[("tokio.worker", "0")]);
    let _ = number(
        "tokio.runtime.worker.local_queue.depth",
        &[("tokio.worker", "1")],
    );
    let _ = number("tokio.runtime.blocking.queue.depth", &[]);
    let durations = s
        .point("tokio.runtime.worker.poll.duration", &[])
        .and_then(|p| p.histogram())
        .unwrap()
        .clone();
    assert!(
        durations.count() as f64 >= polls * 0.9,
        "{} of {polls}",
        durations.count()
    );
    assert!(
        durations.quantile(0.5).unwrap() < 0.01,
        "polls of these tasks are short"
    );
    // No poll stands for more than it could have taken (the open last bucket counts at its
    // start, not at its u64::MAX end).
    let mean = durations.sum() / durations.count() as f64;
    assert!(mean < 0.05, "mean poll {mean} s");
    assert!(durations.max().unwrap() < 1.0, "{:?}", durations.max());
}
