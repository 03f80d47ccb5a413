//! Helpers shared by the test binaries. Each binary holds one test (or tests that do not
//! disturb each other), because threads, file descriptors and memory are process-wide and
//! tests of one binary run in parallel.

#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sonde_core::{Kind, Point, Registry, Snapshot, Unit};
use sonde_process::{ProcessCollector, ProcessMetrics};

/// Installs `collector` into a new registry; returns both.
pub fn install(collector: ProcessCollector) -> (Registry, ProcessMetrics) {
    let registry = Registry::new();
    let process = collector.registry(&registry).install().unwrap();
    (registry, process)
}

/// Asserts the kind and unit of family `name` in `snap`.
pub fn assert_kind_unit(snap: &Snapshot, name: &str, kind: Kind, unit: Unit) {
    let meta = &snap.family(name).unwrap().meta;
    assert_eq!((meta.kind(), meta.unit()), (kind, &unit), "{name}");
}

/// Installs the current process's collector into a new registry and checks that family
/// `name` is a gauge in `unit` whose value is what `os` says now; returns the registry, the
/// handle and that value.
pub fn install_current_gauge(
    name: &str,
    unit: Unit,
    os: impl FnOnce() -> f64,
) -> (Registry, ProcessMetrics, f64) {
    let (registry, process) = install(ProcessCollector::current());
    assert_kind_unit(&registry.snapshot(), name, Kind::Gauge, unit);
    let now = current_value_is(&registry, name, os);
    (registry, process, now)
}

/// Reads `name` from a new snapshot of `registry`, asserts it equals what `os` says right
/// after (the OS's own figure) and returns it.
pub fn current_value_is(registry: &Registry, name: &str, os: impl FnOnce() -> f64) -> f64 {
    let now = value(&registry.snapshot(), name, &[]);
    assert_eq!(now, os(), "{name}");
    now
}

/// The number of a counter, gauge or up-down counter series; panics with the families and
/// series present if it is missing.
pub fn value(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    match snap.point(name, labels) {
        Some(Point::Counter(n) | Point::Gauge(n) | Point::UpDownCounter(n)) => n.as_f64(),
        other => panic!(
            "no number for {name} {labels:?}: {other:?}; series: {:?}",
            snap.family(name)
                .map(|f| f.series.iter().map(|s| f.labels(s)).collect::<Vec<_>>())
        ),
    }
}

/// A field of `/proc/self/status`, e.g. `Threads` or `VmRSS` (in kB for the `Vm*` fields).
pub fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
}

/// Open file descriptors of this process, not counting the one that lists them.
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64 - 1
}

/// Keeps this thread busy on the CPU for `d` of wall time (bounded), and returns a value the
/// optimizer cannot discard.
pub fn burn_cpu(d: Duration) -> u64 {
    let start = Instant::now();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while start.elapsed() < d {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = std::hint::black_box(x);
    }
    x
}

/// User CPU time of the calling thread, in clock ticks (`/proc/thread-self/stat`, field 14).
pub fn thread_user_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(11).unwrap().parse().unwrap()
}

/// User and system CPU seconds of this process from `/proc/self/stat`, assuming the usual
/// 100 clock ticks per second.
pub fn process_cpu_secs() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    (f[0] as f64 / 100.0, f[1] as f64 / 100.0)
}

/// Burns at least `ticks` clock ticks of user CPU time on this thread (200 ms for 20 ticks),
/// giving up after `max_wall` on a starved machine.
pub fn burn_user_ticks(ticks: u64, max_wall: Duration) {
    let start = Instant::now();
    let t0 = thread_user_ticks();
    while thread_user_ticks() < t0 + ticks && start.elapsed() < max_wall {
        burn_cpu(Duration::from_millis(5));
    }
}
