//! Limits (max open files, cgroup memory limit) and the Prometheus-conventional names, against
//! real processes: `ulimit -n` in a child, `prlimit(1)`, a memory cgroup made for the test, and
//! Python prometheus_client's own process collector reading the same pid.

#![cfg(target_os = "linux")] // compared with /proc
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{assert_kind_unit, install, value};
use sonde_core::{Kind, Registry, Unit};
use sonde_process::prometheus_names::{
    CPU_SECONDS_TOTAL, MAX_FDS, OPEN_FDS, RESIDENT_MEMORY_BYTES, START_TIME, THREADS,
    VIRTUAL_MEMORY_BYTES,
};
use sonde_process::{
    CPU_TIME, MEMORY_LIMIT, MEMORY_USAGE, OPEN_FILE_DESCRIPTOR_LIMIT, OPEN_FILE_DESCRIPTORS,
    ProcessCollector,
};

/// A child killed and reaped when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// `sh -c 'ulimit -n <n>; exec sleep 30'`, once it is `sleep` (the limit is set by then).
fn sleeper_with_nofile(n: u32) -> Kid {
    let kid = Kid(Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {n}; exec sleep 30"))
        .spawn()
        .unwrap());
    let comm = format!("/proc/{}/comm", kid.0.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
        assert!(Instant::now() < deadline, "the child never exec'd sleep");
        std::thread::sleep(Duration::from_millis(10));
    }
    kid
}

/// prometheus_client's `ProcessCollector` for `pid`: its samples by name.
fn python_process_collector(pid: u32) -> Vec<(String, f64)> {
    let script = format!(
        "import prometheus_client as p\n\
         from prometheus_client.core import CollectorRegistry\n\
         r = CollectorRegistry()\n\
         p.ProcessCollector(registry=r, pid=lambda: {pid})\n\
         for m in r.collect():\n\
         \x20   for s in m.samples: print(s.name, repr(s.value))\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3 is needed: apt-get install python3");
    assert!(
        out.status.success(),
        "prometheus_client is needed (pip install prometheus_client; scripts/test does this): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(' ')?;
            Some((n.to_owned(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn max_fds_is_the_soft_nofile_limit_and_matches_prometheus_client() {
    let kid = sleeper_with_nofile(123);
    let pid = kid.0.id();
    let (registry, _process) = install(ProcessCollector::for_pid(pid).prometheus_names(true));
    let snap = registry.snapshot();
    assert_kind_unit(
        &snap,
        OPEN_FILE_DESCRIPTOR_LIMIT,
        Kind::Gauge,
        Unit::Count("{file_descriptor}".into()),
    );
    assert_eq!(value(&snap, OPEN_FILE_DESCRIPTOR_LIMIT, &[]), 123.0);
    assert_eq!(value(&snap, MAX_FDS, &[]), 123.0);
    // The OpenTelemetry names stay next to the Prometheus ones.
    assert_eq!(
        value(&snap, OPEN_FDS, &[]),
        value(&snap, OPEN_FILE_DESCRIPTORS, &[])
    );
    assert_eq!(
        value(&snap, RESIDENT_MEMORY_BYTES, &[]),
        value(&snap, MEMORY_USAGE, &[])
    );
    assert_eq!(value(&snap, THREADS, &[]), 1.0);
    assert_kind_unit(&snap, CPU_SECONDS_TOTAL, Kind::Counter, Unit::Seconds);
    assert!(snap.family(CPU_TIME).is_some());

    // The same figures as the Python client's process collector reading the same pid.
    let theirs = python_process_collector(pid);
    let snap = registry.snapshot();
    let get = |name: &str| {
        theirs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("prometheus_client has no {name}: {theirs:?}"))
    };
    assert_eq!(get(MAX_FDS), 123.0);
    assert_eq!(get(OPEN_FDS), value(&snap, OPEN_FDS, &[]));
    let start = value(&snap, START_TIME, &[]);
    let theirs_start = get("process_start_time_seconds");
    assert!(
        (theirs_start - start).abs() < 0.02,
        "start time {start} vs {theirs_start}"
    );
    // A sleeping process: its memory and CPU time do not move between the two readings.
    assert_eq!(
        get(RESIDENT_MEMORY_BYTES),
        value(&snap, RESIDENT_MEMORY_BYTES, &[])
    );
    assert_eq!(
        get(VIRTUAL_MEMORY_BYTES),
        value(&snap, VIRTUAL_MEMORY_BYTES, &[])
    );
    assert!((get(CPU_SECONDS_TOTAL) - value(&snap, CPU_SECONDS_TOTAL, &[])).abs() < 0.011);
}

#[test]
fn max_fds_of_this_process_is_what_prlimit_reports() {
    let out = Command::new("prlimit")
        .args(["--nofile", "--output=SOFT", "--noheadings", "--pid"])
        .arg(std::process::id().to_string())
        .output()
        .expect("prlimit (util-linux) is needed");
    let soft: f64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let registry = Registry::new();
    // What sonde-instrument's Lifecycle registers: the start time shares it, rather than a
    // second family rendering process_start_time_seconds.
    registry
        .gauge_f64("process.start_time")
        .unit(Unit::Seconds)
        .build()
        .unwrap();
    let _process = ProcessCollector::current()
        .registry(&registry)
        .prometheus_names(true)
        .install()
        .unwrap();
    let snap = registry.snapshot();
    assert_eq!(value(&snap, OPEN_FILE_DESCRIPTOR_LIMIT, &[]), soft);
    assert_eq!(value(&snap, MAX_FDS, &[]), soft);
    assert!(value(&snap, START_TIME, &[]) > 1e9);
    // This test's cgroup has no memory limit: no series.
    let limits = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    if !limits.contains("sonde-process-test") {
        assert!(snap.point(MEMORY_LIMIT, &[]).is_none(), "{limits}");
    }
}

/// A memory cgroup made for the test (v1 or v2, whichever this host mounts), with a nested
/// one; removed when dropped.
struct Cgroup {
    outer: PathBuf,
    inner: PathBuf,
    /// `memory.limit_in_bytes` (v1) or `memory.max` (v2).
    file: &'static str,
    /// What lifts the limit: `-1` (v1) or `max` (v2).
    unlimited: &'static str,
}

impl Cgroup {
    fn new() -> Cgroup {
        let name = format!("sonde-process-test-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (root, file, unlimited) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.to_path_buf(), "memory.limit_in_bytes", "-1")
        } else {
            let root = PathBuf::from("/sys/fs/cgroup");
            // cgroup v2: let children have the memory controller.
            std::fs::write(root.join("cgroup.subtree_control"), "+memory").ok();
            (root, "memory.max", "max")
        };
        let outer = root.join(name);
        let inner = outer.join("inner");
        std::fs::create_dir_all(&inner).unwrap_or_else(|e| {
            panic!(
                "cannot create {}: {e}; this test needs root and a writable cgroup hierarchy (scripts/test runs as root)",
                inner.display()
            )
        });
        if !file.contains("limit_in_bytes") {
            std::fs::write(outer.join("cgroup.subtree_control"), "+memory").unwrap();
        }
        Cgroup {
            outer,
            inner,
            file,
            unlimited,
        }
    }

    fn set(&self, dir: &Path, limit: &str) {
        std::fs::write(dir.join(self.file), limit).unwrap();
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        std::fs::remove_dir(&self.inner).ok();
        std::fs::remove_dir(&self.outer).ok();
    }
}

#[test]
fn memory_limit_is_the_lowest_of_the_cgroup_and_its_ancestors() {
    let cgroup = Cgroup::new();
    let kid = Kid(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = kid.0.id();
    cgroup.set(&cgroup.outer, "268435456"); // 256 MiB
    cgroup.set(&cgroup.inner, "536870912"); // 512 MiB
    std::fs::write(cgroup.inner.join("cgroup.procs"), pid.to_string()).unwrap();

    // Labelled: a series that goes away can be removed (the only series of an unlabelled
    // family cannot).
    let (registry, _process) = install(ProcessCollector::for_pid(pid).label("job", "t"));
    let l = [("job", "t")];
    let snap = registry.snapshot();
    assert_kind_unit(&snap, MEMORY_LIMIT, Kind::Gauge, Unit::Bytes);
    assert_eq!(value(&snap, MEMORY_LIMIT, &l), 268435456.0);
    // The parent's limit lifted: the process's own cgroup's.
    cgroup.set(&cgroup.outer, cgroup.unlimited);
    assert_eq!(value(&registry.snapshot(), MEMORY_LIMIT, &l), 536870912.0);
    // No limit at all: no series (rather than a huge number).
    cgroup.set(&cgroup.inner, cgroup.unlimited);
    assert!(registry.snapshot().point(MEMORY_LIMIT, &l).is_none());
    cgroup.set(&cgroup.inner, "300000000");
    // v1 rounds down to whole pages.
    let limit = value(&registry.snapshot(), MEMORY_LIMIT, &l);
    assert!((299_995_000.0..=300_000_000.0).contains(&limit), "{limit}");
    drop(kid);
}
