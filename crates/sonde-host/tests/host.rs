//! Host metrics on this machine: existence, plausible values, monotonic counters, per-CPU
//! series, collect hooks, the portable path, and (on a fake `/proc`) removal of series,
//! counter resets and failed readings.

#![cfg(target_os = "linux")] // compared with /proc

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{assert_no_series, errors, install, label, series, sum, value};
use sonde_core::{Kind, Registry};
use sonde_host::{Error, HostCollector, SYSTEM_CPU_MODES};
use sonde_testkit::procfs::{self, ProcTree};

fn in_unit_range(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}

#[test]
fn host_metrics_exist_with_plausible_values() {
    let (registry, host) = install(HostCollector::new());
    host.collect();
    let snap = registry.snapshot();

    // CPU: every mode, each in [0, 1], adding up to 1.
    let mut total = 0.0;
    for mode in SYSTEM_CPU_MODES {
        let u = value(&snap, "system.cpu.utilization", &[("cpu.mode", mode)]).unwrap();
        assert!(in_unit_range(u), "{mode}: {u}");
        total += u;
        assert!(value(&snap, "system.cpu.time", &[("cpu.mode", mode)]).unwrap() >= 0.0);
    }
    assert!((total - 1.0).abs() < 1e-6, "modes add up to {total}");
    let cpus = std::thread::available_parallelism().unwrap().get() as f64;
    assert!(value(&snap, "system.cpu.logical.count", &[]).unwrap() >= cpus.min(1.0));
    for name in [
        "system.cpu.load_average.1m",
        "system.cpu.load_average.5m",
        "system.cpu.load_average.15m",
    ] {
        assert!(value(&snap, name, &[]).unwrap() >= 0.0, "{name}");
    }

    // Memory.
    let (used, limit) = memory_used_and_limit(&snap);
    assert!(
        limit > 0.0 && used > 0.0 && used < limit,
        "{used} of {limit}"
    );
    for state in ["used", "free", "buffers", "cached"] {
        let u = value(
            &snap,
            "system.memory.usage",
            &[("system.memory.state", state)],
        )
        .unwrap();
        assert!(u >= 0.0 && u <= limit, "{state}: {u}");
        let r = value(
            &snap,
            "system.memory.utilization",
            &[("system.memory.state", state)],
        )
        .unwrap();
        assert!(in_unit_range(r), "{state}: {r}");
        assert!((r - u / limit).abs() < 1e-9);
    }
    let available = value(&snap, "system.memory.linux.available", &[]).unwrap();
    assert!((limit - available - used).abs() < 1.0);
    let swap: f64 = ["used", "free"]
        .iter()
        .map(|s| value(&snap, "system.paging.usage", &[("system.paging.state", s)]).unwrap())
        .sum();
    assert!(swap >= 0.0);

    // Filesystems: "/" (or at least one), with states adding up to the limit.
    let fs = series(&snap, "system.filesystem.limit");
    assert!(!fs.is_empty(), "no filesystem");
    for (labels, limit) in &fs {
        let base: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (&**k, &**v)).collect();
        let mut states = 0.0;
        for state in ["used", "free", "reserved"] {
            let mut l = base.clone();
            l.push(("system.filesystem.state", state));
            let u = value(&snap, "system.filesystem.usage", &l).unwrap();
            let r = value(&snap, "system.filesystem.utilization", &l).unwrap();
            assert!(in_unit_range(r) && (r - u / limit).abs() < 1e-9, "{l:?}");
            states += u;
        }
        assert_eq!(states, *limit, "{labels:?}");
        let t = label(labels, "system.filesystem.type").unwrap();
        assert!(!["proc", "sysfs", "tmpfs", "overlay", "devtmpfs"].contains(&t));
    }
    assert!(
        fs.iter()
            .any(|(l, _)| label(l, "system.filesystem.mountpoint") == Some("/"))
            || std::fs::read_to_string("/proc/self/mounts")
                .unwrap()
                .lines()
                .any(|l| l.split(' ').nth(1) == Some("/") && l.contains(" overlay ")),
        "/ is missing: {fs:?}"
    );

    // Network: loopback, both directions, every counter.
    for dir in ["receive", "transmit"] {
        let l = [
            ("network.interface.name", "lo"),
            ("network.io.direction", dir),
        ];
        for name in [
            "system.network.io",
            "system.network.packet.count",
            "system.network.errors",
            "system.network.packet.dropped",
        ] {
            assert!(value(&snap, name, &l).is_some(), "{name} {dir}");
        }
    }

    // Disks: no loop devices, no partitions.
    for (l, _) in series(&snap, "system.disk.io") {
        let dev = label(&l, "system.device").unwrap();
        assert!(!dev.starts_with("loop") && !dev.starts_with("ram"), "{dev}");
        assert!(Path::new("/sys/block").join(dev).exists(), "{dev}");
    }

    let uptime = value(&snap, "system.uptime", &[]).unwrap();
    let proc_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(uptime > 0.0 && (proc_uptime - uptime).abs() < 5.0);
    assert!(value(&snap, "system.process.count", &[]).unwrap() >= 2.0);
    assert!(value(&snap, "system.process.created", &[]).unwrap() >= 0.0);
    // Nothing failed (a mount whose size cannot be read is possible on some machines).
    for (l, v) in series(&snap, "sonde.collector.errors") {
        assert_eq!(label(&l, "reason"), Some("statvfs"), "{v} errors");
    }
}

/// A series: family name, labels, value.
type Series = (String, Vec<(String, String)>, f64);

/// Every counter series of the snapshot, keyed by family name and labels.
fn counters(snap: &sonde_core::Snapshot) -> Vec<Series> {
    snap.families
        .iter()
        .filter(|f| f.meta.kind() == Kind::Counter && f.meta.name().starts_with("system."))
        .flat_map(|f| {
            series(snap, f.meta.name())
                .into_iter()
                .map(|(l, v)| (f.meta.name().to_owned(), l, v))
        })
        .collect()
}

#[test]
fn counters_are_monotonic_and_follow_disk_and_network_activity() {
    let (registry, host) = install(HostCollector::new());
    let before = registry.snapshot();
    let lo_rx = |s| net_rx(s, "lo").unwrap();

    // 4 MiB written and synced to the filesystem of the target directory...
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sonde-host-io-{}.bin", std::process::id()));
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 1 << 20];
    for _ in 0..4 {
        file.write_all(&chunk).unwrap();
    }
    file.sync_all().unwrap();
    drop(file);
    std::fs::remove_file(&path).unwrap();
    // ...and 2 MiB over loopback TCP.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut n = 0;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match s.read(&mut buf).unwrap() {
                0 => break n,
                k => n += k,
            }
        }
    });
    let mut client = TcpStream::connect(addr).unwrap();
    for _ in 0..2 {
        client.write_all(&chunk).unwrap();
    }
    drop(client);
    assert_eq!(reader.join().unwrap(), 2 << 20);
    // /proc/stat counts CPU time in 10 ms ticks: let a few pass so it must have moved.
    std::thread::sleep(std::time::Duration::from_millis(60));

    host.collect();
    let after = registry.snapshot();
    for (name, labels, v) in counters(&before) {
        let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (&**k, &**v)).collect();
        let now = value(&after, &name, &l).unwrap();
        assert!(now >= v, "{name} {labels:?} went from {v} to {now}");
    }
    let received = lo_rx(&after) - lo_rx(&before);
    assert!(received >= (2 << 20) as f64, "lo received {received} B");
    let written = sum(&after, "system.disk.io", &[("disk.io.direction", "write")])
        - sum(&before, "system.disk.io", &[("disk.io.direction", "write")]);
    let on_block_device = !series(&after, "system.disk.io").is_empty()
        && device_of(Path::new(env!("CARGO_TARGET_TMPDIR"))).starts_with("/dev/");
    if on_block_device {
        assert!(written >= (4 << 20) as f64, "disks wrote {written} B");
        let ops = sum(
            &after,
            "system.disk.operations",
            &[("disk.io.direction", "write")],
        ) - sum(
            &before,
            "system.disk.operations",
            &[("disk.io.direction", "write")],
        );
        assert!(ops >= 1.0, "{ops} write operations");
    }
    // CPU time moved on (at least idle or user; all modes never go backwards).
    let cpu = |s| sum(s, "system.cpu.time", &[]);
    assert!(cpu(&after) > cpu(&before));
    // A second reading right after: still monotonic.
    host.collect();
    let again = registry.snapshot();
    for (name, labels, v) in counters(&after) {
        let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert!(value(&again, &name, &l).unwrap() >= v, "{name} {labels:?}");
    }
}

/// The source of the filesystem holding `path` (the longest mountpoint that contains it).
fn device_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some((f.next()?, f.next()?))
        })
        .filter(|(_, m)| path.starts_with(m))
        .max_by_key(|(_, m)| m.len())
        .map(|(d, _)| d.to_owned())
        .unwrap_or_default()
}

#[test]
fn counters_start_from_install_not_from_boot() {
    let (registry, _host) = install(HostCollector::new());
    let snap = registry.snapshot();
    // lo has carried traffic since boot, yet its counter starts near zero.
    let text = std::fs::read_to_string("/proc/net/dev").unwrap();
    let lo_total: f64 = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:"))
        .unwrap()
        .split_ascii_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let lo = net_rx(&snap, "lo").unwrap();
    assert!(lo <= lo_total);
    // CPU time counts from install: far less than the uptime times the CPUs.
    let uptime = value(&snap, "system.uptime", &[]).unwrap();
    assert!(sum(&snap, "system.cpu.time", &[]) < uptime.max(10.0));
}

#[test]
fn per_cpu_series_carry_the_logical_number() {
    let (registry, host) = install(HostCollector::new().per_cpu(true));
    std::thread::sleep(Duration::from_millis(150));
    host.collect();
    let snap = registry.snapshot();
    let cpus = value(&snap, "system.cpu.logical.count", &[]).unwrap() as usize;
    let util = series(&snap, "system.cpu.utilization");
    assert_eq!(util.len(), cpus * SYSTEM_CPU_MODES.len());
    let mut numbers: Vec<&str> = util
        .iter()
        .map(|(l, _)| label(l, "cpu.logical_number").unwrap())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), cpus);
    for n in numbers {
        let total = sum(
            &snap,
            "system.cpu.utilization",
            &[("cpu.logical_number", n)],
        );
        assert!((total - 1.0).abs() < 1e-6, "cpu {n}: {total}");
    }
    assert_eq!(
        series(&snap, "system.cpu.time").len(),
        cpus * SYSTEM_CPU_MODES.len()
    );
}

#[test]
fn on_collect_refreshes_at_every_registry_collection() {
    let (registry, _host) = install(HostCollector::new().on_collect(true));
    let a = value(&registry.snapshot(), "system.uptime", &[]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let b = value(&registry.snapshot(), "system.uptime", &[]).unwrap();
    assert!(b > a, "{a} then {b}");
    // Concurrent snapshots and explicit collections neither deadlock nor panic.
    let host = HostCollector::new()
        .registry(&registry)
        .on_collect(true)
        .install()
        .unwrap();
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..20 {
                    registry.snapshot();
                    host.collect();
                }
            });
        }
    });
}

#[test]
fn uninstall_removes_the_series() {
    let (registry, host) = install(HostCollector::new());
    assert!(!series(&registry.snapshot(), "system.network.io").is_empty());
    // Where the kernel has pressure stall information, its series go too.
    if std::fs::read_to_string("/proc/pressure/cpu").is_ok() {
        assert!(!series(&registry.snapshot(), sonde_host::PRESSURE_WAITING).is_empty());
    }
    host.uninstall();
    host.uninstall();
    assert!(!host.is_installed());
    host.collect();
    assert_no_series(
        &registry,
        &[
            "system.network.io",
            "system.filesystem.usage",
            "system.cpu.utilization",
            "system.disk.io",
            sonde_host::PRESSURE_WAITING,
            sonde_host::PRESSURE_STALLED,
        ],
    );
}

#[test]
fn invalid_filters_are_install_errors() {
    let err = HostCollector::new()
        .registry(&Registry::new())
        .network_interfaces_exclude(Some("(veth"))
        .install()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidRegex {
                what: "network_interfaces_exclude",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("(veth"));
}

#[test]
fn filters_leave_out_interfaces_disks_and_filesystems() {
    let (registry, _host) = install(
        HostCollector::new()
            .network_interfaces_exclude(Some("^lo$"))
            .disks_exclude(Some(".*"))
            .filesystems_exclude(["ext*", "xfs", "btrfs", "overlay", "vfat", "zfs"]),
    );
    let snap = registry.snapshot();
    assert!(
        series(&snap, "system.network.io")
            .iter()
            .all(|(l, _)| label(l, "network.interface.name") != Some("lo"))
    );
    assert!(series(&snap, "system.disk.io").is_empty());
    for (l, _) in series(&snap, "system.filesystem.limit") {
        let t = label(&l, "system.filesystem.type").unwrap();
        assert!(!t.starts_with("ext") && t != "xfs", "{t}");
    }
    // No exclusions: pseudo filesystems with blocks (tmpfs) show up.
    let (all, _host) = install(
        HostCollector::new()
            .filesystems_exclude(Vec::<String>::new())
            .mountpoints_exclude(None),
    );
    let n_all = series(&all.snapshot(), "system.filesystem.limit").len();
    let n_default = series(&registry.snapshot(), "system.filesystem.limit").len();
    assert!(n_all >= n_default);
}

#[test]
fn the_portable_path_reads_this_machine_through_sysinfo() {
    let (registry, host) = install(HostCollector::new().portable());
    std::thread::sleep(sysinfo_interval());
    host.collect();
    let snap = registry.snapshot();
    // No split by mode: one series without labels, and no CPU time.
    let u = value(&snap, "system.cpu.utilization", &[]).unwrap();
    assert!(in_unit_range(u), "{u}");
    assert!(snap.family("system.cpu.time").is_none());
    let (used, limit) = memory_used_and_limit(&snap);
    assert!(limit > 0.0 && used > 0.0 && used < limit);
    assert!(
        value(
            &snap,
            "system.memory.usage",
            &[("system.memory.state", "buffers")]
        )
        .is_none()
    );
    assert!(value(&snap, "system.uptime", &[]).unwrap() > 0.0);
    assert!(value(&snap, "system.cpu.load_average.1m", &[]).unwrap() >= 0.0);
    assert!(!series(&snap, "system.filesystem.limit").is_empty());
    assert!(net_rx(&snap, "lo").is_some());
    assert!(
        snap.family("sonde.collector.errors")
            .unwrap()
            .series
            .is_empty()
    );
}

fn sysinfo_interval() -> Duration {
    Duration::from_millis(250)
}

/// A fake `/proc` and `/sys/block`.
struct FakeProc {
    tree: ProcTree,
}

impl FakeProc {
    fn new(name: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sonde-host-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let host = procfs::Host {
            stat: "cpu  100 0 50 800 10 5 5 0 0 0\ncpu0 50 0 25 400 5 3 2 0 0 0\ncpu1 50 0 25 400 5 2 3 0 0 0\nprocesses 1000\n",
            memory_kb: (1000, 200, 600),
            loadavg: "0.50 0.25 0.10 1/100 42\n",
            diskstats: " 254 0 vda 100 0 2000 50 10 0 400 20 0 60 70\n 254 1 vda1 100 0 2000 50 10 0 400 20 0 60 70\n   7 0 loop0 1 0 1 1 1 0 1 1 0 1 1\n   8 16 sdb 5 0 10 1 5 0 10 1 0 2 2\n",
            interfaces: &[("lo", 1000), ("eth0", 5000), ("veth1", 300)],
            mounts: "/dev/vda / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n",
            ..Default::default()
        };
        let dirs = ["proc/42", "proc/sys", "sys_block/vda", "sys_block/sdb"];
        FakeProc {
            tree: ProcTree::new(dir, &dirs, &host),
        }
    }

    fn proc(&self) -> PathBuf {
        self.tree.proc()
    }

    fn write(&self, name: &str, text: &str) {
        self.tree.write(name, text);
    }

    fn net(&self, ifaces: &[(&str, u64)]) {
        self.write("net/dev", &procfs::net_dev(ifaces));
    }

    fn install(&self, registry: &Registry) -> sonde_host::HostMetrics {
        HostCollector::new()
            .registry(registry)
            .paths(self.proc(), self.tree.root().join("sys_block"))
            .install()
            .unwrap()
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.tree.root());
    }
}

/// `system.memory.usage{system.memory.state="used"}` and `system.memory.limit`.
fn memory_used_and_limit(snap: &sonde_core::Snapshot) -> (f64, f64) {
    let used = value(
        snap,
        "system.memory.usage",
        &[("system.memory.state", "used")],
    );
    let limit = value(snap, "system.memory.limit", &[]);
    (used.unwrap(), limit.unwrap())
}

fn net_rx(snap: &sonde_core::Snapshot, iface: &str) -> Option<f64> {
    value(
        snap,
        "system.network.io",
        &[
            ("network.interface.name", iface),
            ("network.io.direction", "receive"),
        ],
    )
}

#[test]
fn uninstall_removes_the_pressure_series() {
    // A fake /proc with pressure stall information, so this holds on any kernel.
    let fake = FakeProc::new("pressure");
    std::fs::create_dir_all(fake.proc().join("pressure")).unwrap();
    fake.write(
        "pressure/cpu",
        "some avg10=1.00 avg60=0.50 avg300=0.10 total=1000000\n",
    );
    let registry = Registry::new();
    let host = fake.install(&registry);
    let cpu = [("system.pressure.resource", "cpu")];
    assert_eq!(
        value(&registry.snapshot(), sonde_host::PRESSURE_WAITING, &cpu),
        Some(0.0)
    );
    host.uninstall();
    assert_no_series(
        &registry,
        &[sonde_host::PRESSURE_WAITING, sonde_host::PRESSURE_STALLED],
    );
}

#[test]
fn fake_proc_values_resets_removals_and_failures() {
    let fake = FakeProc::new("fake");
    let registry = Registry::new();
    let host = fake.install(&registry);
    let snap = registry.snapshot();

    // Values from the fixture.
    let mem = |state| {
        value(
            &snap,
            "system.memory.usage",
            &[("system.memory.state", state)],
        )
    };
    assert_eq!(mem("used"), Some(400.0 * 1024.0));
    assert_eq!(mem("free"), Some(200.0 * 1024.0));
    assert_eq!(mem("buffers"), Some(100.0 * 1024.0));
    assert_eq!(mem("cached"), Some(300.0 * 1024.0));
    assert_eq!(
        value(&snap, "system.memory.limit", &[]),
        Some(1000.0 * 1024.0)
    );
    assert_eq!(
        value(
            &snap,
            "system.paging.utilization",
            &[("system.paging.state", "used")]
        ),
        Some(0.0)
    );
    assert_eq!(value(&snap, "system.cpu.load_average.5m", &[]), Some(0.25));
    assert_eq!(value(&snap, "system.uptime", &[]), Some(1000.5));
    assert_eq!(value(&snap, "system.process.count", &[]), Some(2.0));
    assert_eq!(value(&snap, "system.cpu.logical.count", &[]), Some(2.0));
    // Since boot: user 100 of 970 ticks.
    let user = value(&snap, "system.cpu.utilization", &[("cpu.mode", "user")]).unwrap();
    assert!((user - 100.0 / 970.0).abs() < 1e-9, "{user}");
    let interrupt = value(
        &snap,
        "system.cpu.utilization",
        &[("cpu.mode", "interrupt")],
    )
    .unwrap();
    assert!((interrupt - 10.0 / 970.0).abs() < 1e-9);
    // Whole disks only, loop excluded; counters start at zero.
    let disks: Vec<String> = series(&snap, "system.disk.io_time")
        .into_iter()
        .map(|(l, _)| label(&l, "system.device").unwrap().to_owned())
        .collect();
    assert_eq!(disks, ["vda", "sdb"]);
    assert_eq!(net_rx(&snap, "eth0"), Some(0.0));
    assert_eq!(sum(&snap, "system.cpu.time", &[]), 0.0);

    // Traffic, a new interface (counted from its creation), one gone, one reset.
    fake.net(&[("lo", 1500), ("eth0", 100), ("wlan0", 70)]);
    fake.write(
        "stat",
        "cpu  150 0 60 840 10 5 5 0 0 0\ncpu0 75 0 30 420 5 3 2 0 0 0\ncpu1 75 0 30 420 5 2 3 0 0 0\nprocesses 1010\n",
    );
    fake.write(
        "diskstats",
        " 254 0 vda 110 0 2100 55 12 0 500 25 0 70 80\n   8 16 sdb 5 0 10 1 5 0 10 1 0 2 2\n",
    );
    std::thread::sleep(sonde_host::MIN_UTILIZATION_WINDOW);
    host.collect();
    let snap = registry.snapshot();
    assert_eq!(net_rx(&snap, "lo"), Some(500.0));
    assert_eq!(
        net_rx(&snap, "eth0"),
        Some(100.0),
        "reset: counts the new total"
    );
    assert_eq!(
        net_rx(&snap, "wlan0"),
        Some(70.0),
        "new: counts from creation"
    );
    assert_eq!(net_rx(&snap, "veth1"), None, "gone: removed");
    for name in [
        "system.network.packet.count",
        "system.network.errors",
        "system.network.packet.dropped",
    ] {
        assert!(
            series(&snap, name)
                .iter()
                .all(|(l, _)| label(l, "network.interface.name") != Some("veth1")),
            "{name}"
        );
    }
    assert_eq!(
        value(
            &snap,
            "system.disk.io",
            &[("system.device", "vda"), ("disk.io.direction", "write")]
        ),
        Some(100.0 * 512.0)
    );
    assert_eq!(
        value(
            &snap,
            "system.disk.operations",
            &[("system.device", "vda"), ("disk.io.direction", "read")]
        ),
        Some(10.0)
    );
    assert_eq!(
        value(&snap, "system.disk.io_time", &[("system.device", "vda")]),
        Some(0.01)
    );
    assert_eq!(value(&snap, "system.process.created", &[]), Some(10.0));
    // 100 ticks at USER_HZ = 100 (on every common architecture).
    let cpu_time = sum(&snap, "system.cpu.time", &[]);
    assert!((cpu_time - 1.0).abs() < 1e-9, "{cpu_time}");
    // Over the interval: user 50 of 100 ticks.
    let user = value(&snap, "system.cpu.utilization", &[("cpu.mode", "user")]).unwrap();
    assert!((user - 0.5).abs() < 1e-9, "{user}");

    // A garbled or missing file: that reading fails, its series keep their values, errors
    // are counted; everything else is still read.
    fake.write("meminfo", "garbage\n");
    fake.write("net/dev", "Inter-|\n face |\n  eth0: 1 2 x\n");
    std::fs::remove_file(fake.proc().join("stat")).unwrap();
    fake.write("uptime", "2000 0\n");
    host.collect();
    let snap = registry.snapshot();
    assert_eq!(errors(&snap, "host", "memory"), 1.0);
    assert_eq!(errors(&snap, "host", "network"), 1.0);
    assert_eq!(errors(&snap, "host", "cpu"), 1.0);
    assert_eq!(
        value(
            &snap,
            "system.memory.usage",
            &[("system.memory.state", "used")]
        ),
        Some(400.0 * 1024.0)
    );
    assert_eq!(net_rx(&snap, "wlan0"), Some(70.0));
    assert_eq!(net_rx(&snap, "lo"), Some(500.0));
    assert!(
        (value(&snap, "system.cpu.utilization", &[("cpu.mode", "user")]).unwrap() - 0.5).abs()
            < 1e-9
    );
    assert_eq!(value(&snap, "system.uptime", &[]), Some(2000.0));

    // Everything gone: no panic, every reading counted as failed.
    std::fs::remove_dir_all(fake.proc()).unwrap();
    host.collect();
    let snap = registry.snapshot();
    for reason in [
        "cpu",
        "memory",
        "load",
        "uptime",
        "processes",
        "filesystems",
        "disks",
        "network",
    ] {
        assert!(errors(&snap, "host", reason) >= 1.0, "{reason}");
    }
    assert_eq!(net_rx(&snap, "lo"), Some(500.0));
}
