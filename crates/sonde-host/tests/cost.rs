//! What a collection costs (indicative: run with `--release -- --nocapture` to see the
//! numbers). The agent's budget: under 1 % of a CPU at a 10 s interval (100 ms per interval),
//! under 30 MB resident.

#![cfg(target_os = "linux")]

use crate::common;

use std::time::{Duration, Instant};

use common::install;
use sonde_core::Registry;
use sonde_host::{HostCollector, ProcessMatcher, ProcstatCollector, ProcstatMetrics};

/// Anonymous resident memory (heap and stacks, not the pages of the executable), KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// CPU time (user + system) of this process, from `/proc/self/stat`, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn time<F: FnMut()>(n: u32, mut f: F) -> Duration {
    f(); // warm up
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

#[test]
fn cost_of_one_host_collection() {
    // The first collector faults in what any would (allocator arenas, regex caches...).
    let warm_up = HostCollector::new()
        .registry(&Registry::new())
        .install()
        .unwrap();
    warm_up.collect();
    let rss0 = rss_kib();
    let (registry, host) = install(HostCollector::new());
    let (_per_cpu_registry, per_cpu) = install(HostCollector::new().per_cpu(true));
    host.collect();
    per_cpu.collect();
    let rss1 = rss_kib();

    let n = 300;
    let ticks = cpu_ticks();
    let wall = Instant::now();
    let one = time(n, || host.collect());
    let cpu_secs = (cpu_ticks() - ticks) as f64 / 100.0;
    let wall = wall.elapsed().as_secs_f64();
    let one_per_cpu = time(n, || per_cpu.collect());
    let snapshot = time(100, || {
        registry.snapshot();
    });
    let series = registry.snapshot().series_count();
    println!(
        "host collect: {:?} per call ({:?} with per_cpu), {:.0} % of it on CPU; snapshot of {series} series: {:?}",
        one,
        one_per_cpu,
        100.0 * cpu_secs / wall.max(1e-9),
        snapshot
    );
    println!(
        "at a 10 s interval: {:.4} % of one CPU; anonymous RSS {} KiB with one collector, +{} KiB for two more",
        one.as_secs_f64() / 10.0 * 100.0,
        rss0,
        rss1.saturating_sub(rss0)
    );
    // Generous (debug builds, loaded CI machines): the budget is 100 ms per interval.
    assert!(one < Duration::from_millis(20), "{one:?}");
}

/// A procstat collector of `matcher`, installed into `registry`.
fn procstat(registry: &Registry, matcher: ProcessMatcher) -> ProcstatMetrics {
    ProcstatCollector::new(matcher)
        .registry(registry)
        .install()
        .unwrap()
}

#[test]
fn cost_of_one_procstat_collection() {
    let registry = Registry::new();
    let by_name = procstat(&registry, ProcessMatcher::Name("sleep".into()));
    let by_pattern = procstat(
        &registry,
        ProcessMatcher::Pattern("^nothing-matches-this$".into()),
    );
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let pid_file = dir.join(format!("sonde-cost-{}.pid", std::process::id()));
    std::fs::write(&pid_file, std::process::id().to_string()).unwrap();
    let by_pid_file = procstat(&Registry::new(), ProcessMatcher::PidFile(pid_file.clone()));
    let processes = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
        })
        .count();
    let name = time(50, || by_name.collect());
    let pattern = time(50, || by_pattern.collect());
    let pid = time(200, || by_pid_file.collect());
    println!(
        "procstat collect with {processes} processes: name {name:?}, pattern {pattern:?}, pid file {pid:?}"
    );
    std::fs::remove_file(&pid_file).unwrap();
    assert!(name < Duration::from_millis(200), "{name:?}");
}

/// Processes that come and go (say a pattern matching short-lived workers): each one found
/// installs a sonde-process collector whose registry collect hook stays, a no-op, after it is
/// uninstalled (sonde-core has no way to remove a hook). This measures what that leaves behind.
#[test]
fn cost_of_process_churn() {
    let registry = Registry::new();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let pid_file = dir.join(format!("sonde-churn-{}.pid", std::process::id()));
    std::fs::write(&pid_file, "0").unwrap();
    let procstat = procstat(&registry, ProcessMatcher::PidFile(pid_file.clone()));
    let churn = |n: usize| {
        for _ in 0..n {
            let mut child = std::process::Command::new("sleep")
                .arg("10")
                .spawn()
                .unwrap();
            std::fs::write(&pid_file, child.id().to_string()).unwrap();
            procstat.collect();
            assert_eq!(procstat.matches()[0].1, vec![child.id()]);
            child.kill().unwrap();
            child.wait().unwrap();
        }
        procstat.collect();
        assert!(procstat.matches()[0].1.is_empty());
    };
    churn(20);
    let snapshot = |registry: &Registry| time(20, || drop(registry.snapshot()));
    let (rss0, snap0) = (rss_kib(), snapshot(&registry));
    let n = 300;
    churn(n);
    let (rss1, snap1) = (rss_kib(), snapshot(&registry));
    println!(
        "process churn: {n} processes followed then gone: anonymous RSS +{} KiB ({} B each), snapshot {snap0:?} -> {snap1:?}",
        rss1.saturating_sub(rss0),
        rss1.saturating_sub(rss0) * 1024 / n as u64
    );
    assert!(series_empty(&registry));
    std::fs::remove_file(&pid_file).unwrap();
}

fn series_empty(registry: &Registry) -> bool {
    registry
        .snapshot()
        .family("process.memory.usage")
        .is_none_or(|f| f.series.is_empty())
}
