//! The global install path (its own test binary: a process gets one global recorder).

#![allow(clippy::unwrap_used)] // tests panic on failure by design

use sonde_core::testing;
use sonde_recorder::{InstallError, SondeRecorder};

#[test]
fn install_once() {
    let registry = testing::registry();
    let recorder = SondeRecorder::new(registry.clone());
    recorder.install().unwrap();

    metrics::counter!("installed_total", "path" => "global").increment(2);
    // From another thread too: the global recorder is process-wide.
    std::thread::spawn(|| metrics::histogram!("installed.duration").record(0.5))
        .join()
        .unwrap();

    let snap = registry.snapshot();
    testing::assert_counter(&snap, "installed_total", &[("path", "global")], 2.0);
    testing::assert_histogram(&snap, "installed.duration", &[], 1, 0.5);

    // A second install fails with a clear error, and the first recorder stays.
    let second = SondeRecorder::new(testing::registry());
    let err = second.install().unwrap_err();
    assert_eq!(err, InstallError::AlreadyInstalled);
    assert!(err.to_string().contains("already installed"), "{err}");
    assert!(matches!(
        sonde_recorder::install(),
        Err(InstallError::AlreadyInstalled)
    ));
    metrics::counter!("installed_total", "path" => "global").increment(1);
    testing::assert_counter(
        &registry.snapshot(),
        "installed_total",
        &[("path", "global")],
        3.0,
    );

    // A local recorder still takes precedence on its thread.
    let local_registry = testing::registry();
    let local = SondeRecorder::new(local_registry.clone());
    local.with_local(|| metrics::counter!("installed_total", "path" => "local").increment(1));
    testing::assert_counter(
        &local_registry.snapshot(),
        "installed_total",
        &[("path", "local")],
        1.0,
    );
    assert!(
        registry
            .snapshot()
            .point("installed_total", &[("path", "local")])
            .is_none()
    );
}
