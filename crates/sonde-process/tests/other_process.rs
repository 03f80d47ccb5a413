//! Collectors for other processes by pid, labels, errors, exits and uninstalling, and the
//! collect hook under concurrent snapshots.

#![cfg(target_os = "linux")] // compared with /proc
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::time::Duration;

use common::{install, value};
use sonde_core::Registry;
use sonde_process::{
    CPU_TIME, CPU_UTILIZATION, Error, MEMORY_USAGE, MEMORY_VIRTUAL, OPEN_FILE_DESCRIPTORS,
    ProcessCollector, THREAD_COUNT, UPTIME,
};
use sonde_testkit::sleeper::{Sleeper, executable_name};

#[test]
fn for_pid_reports_a_child_process_with_its_labels() {
    let registry = Registry::new();
    let mut child = Sleeper::spawn_running("5");
    let pid = child.pid().to_string();
    let name = executable_name(child.pid());
    // Both with the same labels, so that they share the families.
    let install_labelled = |collector: ProcessCollector| {
        collector
            .registry(&registry)
            .pid_label()
            .executable_name_label()
            .label("service.name", "test")
            .install()
            .unwrap()
    };
    let me = install_labelled(ProcessCollector::current());
    let sleeper = install_labelled(ProcessCollector::for_pid(child.pid()));
    assert_eq!(sleeper.pid(), child.pid());
    let labels: Vec<(&str, &str)> = sleeper
        .labels()
        .iter()
        .map(|(n, v)| (&**n, v.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("process.pid", pid.as_str()),
            ("process.executable.name", name.as_str()),
            ("service.name", "test"),
        ]
    );
    let my_name = executable_name(std::process::id());
    assert_eq!(me.labels()[1].1, my_name);
    assert_ne!(me.labels()[0].1, pid);

    std::thread::sleep(Duration::from_millis(150));
    let snap = registry.snapshot();
    for family in [CPU_TIME, MEMORY_USAGE, UPTIME] {
        assert_eq!(
            snap.family(family).unwrap().series.len(),
            family_series(family)
        );
    }
    let user: Vec<_> = [("cpu.mode", "user")]
        .into_iter()
        .chain(labels.iter().copied())
        .collect();
    assert!(value(&snap, CPU_TIME, &user) >= 0.0);
    let u = value(&snap, CPU_UTILIZATION, &user);
    assert!((0.0..=0.1).contains(&u), "a sleeping process at {u}");
    assert_eq!(value(&snap, THREAD_COUNT, &labels), 1.0);
    // A sleep: 0 to 3 inherited descriptors and perhaps a locale file.
    assert!(value(&snap, OPEN_FILE_DESCRIPTORS, &labels) <= 8.0);
    let rss = value(&snap, MEMORY_USAGE, &labels);
    assert!(
        rss > 0.0 && rss < 64.0 * 1024.0 * 1024.0,
        "sleep uses {rss} bytes"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let vmrss: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(
        (rss - vmrss * 1024.0).abs() <= 1024.0 * 1024.0,
        "{rss} vs VmRSS {vmrss} kB"
    );
    assert!(value(&snap, MEMORY_VIRTUAL, &labels) >= rss);
    let uptime = value(&snap, UPTIME, &labels);
    assert!((0.1..5.0).contains(&uptime), "the child has run {uptime} s");
    // The current process is there too, under its own pid.
    let mine = [
        ("process.pid", me.labels()[0].1.as_str()),
        ("process.executable.name", my_name.as_str()),
        ("service.name", "test"),
    ];
    assert!(value(&snap, THREAD_COUNT, &mine) >= 1.0);
    // This process started first, but each uptime is read at its own moment and the two
    // starts are a few clock ticks apart at most (nextest runs each test in a new process):
    // the later read can be the larger by that gap.
    assert!(value(&snap, UPTIME, &mine) + 0.5 >= uptime);

    // The child exits: its series keep their last values, the collector says so.
    child.kill();
    assert!(!sleeper.collect());
    assert!(!sleeper.is_alive() && sleeper.is_installed());
    let after = registry.snapshot();
    assert_eq!(value(&after, MEMORY_USAGE, &labels), rss);
    assert_eq!(value(&after, THREAD_COUNT, &labels), 1.0);
    assert!(me.is_alive());

    // Uninstalling removes them, and leaves the other collector's series alone.
    sleeper.uninstall();
    sleeper.uninstall();
    assert!(!sleeper.is_installed());
    let after = registry.snapshot();
    for family in [
        CPU_TIME,
        CPU_UTILIZATION,
        MEMORY_USAGE,
        MEMORY_VIRTUAL,
        THREAD_COUNT,
        UPTIME,
    ] {
        let f = after.family(family).unwrap();
        assert!(
            f.series
                .iter()
                .all(|s| !f.labels(s).contains(&("process.pid", pid.as_str()))),
            "{family} still has the uninstalled process"
        );
        assert!(!f.series.is_empty(), "{family} lost the current process");
    }
    assert!(value(&after, THREAD_COUNT, &mine) >= 1.0);
}

/// Series expected per family with two processes (two CPU modes each for the CPU families).
fn family_series(family: &str) -> usize {
    if family == CPU_TIME { 4 } else { 2 }
}

#[test]
fn a_pid_that_does_not_exist_is_an_error_at_install() {
    let registry = Registry::new();
    // Above the kernel's pid limit (at most 2^22).
    let err = ProcessCollector::for_pid(u32::MAX - 7)
        .registry(&registry)
        .install()
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchProcess { pid } if pid == u32::MAX - 7));
    let msg = err.to_string();
    assert!(
        msg.contains("4294967288") && msg.contains("check the pid"),
        "{msg}"
    );
    // Nothing was registered.
    assert!(registry.snapshot().family(MEMORY_USAGE).is_none());
}

#[test]
fn collectors_with_other_label_names_conflict_with_a_clear_error() {
    let (registry, _process) = install(ProcessCollector::current());
    let err = ProcessCollector::current()
        .registry(&registry)
        .pid_label()
        .install()
        .unwrap_err();
    assert!(matches!(err, Error::Register(_)));
    let msg = err.to_string();
    assert!(
        msg.contains(CPU_TIME) && msg.contains("same label names"),
        "{msg}"
    );
}

#[test]
fn the_hook_survives_concurrent_snapshots_and_uninstall() {
    let (registry, process) = install(ProcessCollector::current().label("worker", "x"));
    let labels = [("worker", "x")];
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    let snap = registry.snapshot();
                    assert!(value(&snap, MEMORY_USAGE, &labels) > 0.0);
                    let u = value(&snap, CPU_UTILIZATION, &[("cpu.mode", "user"), labels[0]]);
                    assert!((0.0..=1.0).contains(&u));
                }
            });
        }
    });
    process.uninstall();
    let snap = registry.snapshot();
    assert!(snap.point(MEMORY_USAGE, &labels).is_none());
    assert!(!process.collect());
    // Installing again works (same families, fresh series).
    let again = ProcessCollector::current()
        .registry(&registry)
        .label("worker", "x")
        .install()
        .unwrap();
    assert!(value(&registry.snapshot(), MEMORY_USAGE, &labels) > 0.0);
    assert!(format!("{again:?}").contains("worker"));
}

#[test]
fn the_global_registry_is_the_default() {
    let process = ProcessCollector::current()
        .label("test", "global_default")
        .install()
        .unwrap();
    let snap = Registry::global().snapshot();
    assert!(value(&snap, MEMORY_USAGE, &[("test", "global_default")]) > 0.0);
    process.uninstall();
}

#[test]
fn a_prefix_and_no_hook_for_an_owner_that_reads_processes_itself() {
    let registry = Registry::new();
    let child = Sleeper::spawn_running("5");
    let pid = child.pid().to_string();
    let sleeper = ProcessCollector::for_pid(child.pid())
        .registry(&registry)
        .name_prefix("procstat")
        .on_collect(false)
        .pid_label()
        .install()
        .unwrap();
    let labels = [("process.pid", pid.as_str())];
    let snap = registry.snapshot();
    // Only the prefixed names: nothing under process.*.
    assert!(
        snap.families
            .iter()
            .all(|f| !f.meta.name().starts_with("process."))
    );
    let rss = value(&snap, "procstat.memory.usage", &labels);
    assert!(rss > 0.0);
    assert_eq!(value(&snap, "procstat.thread.count", &labels), 1.0);
    let user = [("cpu.mode", "user"), labels[0]];
    assert!(value(&snap, "procstat.cpu.time", &user) >= 0.0);
    assert!(
        snap.point("procstat.open_file_descriptor.limit", &labels)
            .is_some()
    );
    // The reading carries the values the series carry.
    let r = sleeper.reading().unwrap();
    assert_eq!(r.resident_bytes() as f64, rss);
    assert_eq!(r.threads(), Some(1));
    assert_eq!(
        r.open_fds().map(|n| n as f64),
        Some(value(&snap, "procstat.open_file_descriptor.count", &labels))
    );
    assert_eq!(r.open_fds_error(), None);
    assert_eq!(r.cpu_time().len(), sonde_process::CPU_MODES.len());
    assert_eq!(r.cpu_time()[0], value(&snap, "procstat.cpu.time", &user));
    assert!(r.uptime() >= 0.0 && r.start_time() > 1e9);

    // Without a hook, a collection of the registry reads nothing; collect() does.
    let mut child = child;
    child.kill();
    let _ = registry.snapshot();
    assert!(sleeper.is_alive());
    assert!(!sleeper.collect());
    assert!(!sleeper.is_alive());
    sleeper.uninstall();
    assert!(sleeper.reading().is_none());
    assert!(
        registry
            .snapshot()
            .point("procstat.memory.usage", &labels)
            .is_none()
    );
}
