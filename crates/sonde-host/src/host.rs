//! Host metrics: the collector builder, the installed handle and the recording of readings.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;
use sonde_core::{Counter, Family, Gauge, Instrument, Registry, Unit};

use crate::entries::Entries;
use crate::reading::{
    Cpu, CpuTicks, DiskIo, Filesystem, Listed, Memory, Mount, NetIo, PRESSURE_RESOURCES, Pressure,
};
use crate::shared::{Running, Shared};
use crate::source::{Got, Miss, Source};
use crate::*;

/// Filesystem types left out by default: pseudo and in-memory filesystems, container layers,
/// read-only images, and network filesystems (on which `statvfs` can block for as long as the
/// server is unreachable). A trailing `*` matches any suffix.
pub const DEFAULT_FILESYSTEM_TYPES_EXCLUDE: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "iso9660",
    "nfs",
    "nfs4",
    "nfsd",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "afs",
    "fuse.sshfs",
    "fuse.lxcfs",
    "fuse.portal",
    "fuse.gvfsd-fuse",
    "fuse.s3fs",
    "fuse.rclone",
    "fuse.glusterfs",
];

/// Mountpoints left out by default (a regular expression): kernel interfaces and the
/// per-container and per-pod mounts of container runtimes.
pub const DEFAULT_MOUNTPOINTS_EXCLUDE: &str =
    r"^/(dev|proc|sys)(/|$)|^/var/lib/(docker|containers|kubelet)/|^/snap/";

/// Block devices left out by default (a regular expression on the kernel name): loop and RAM
/// disks, compressed RAM (zram), floppies, optical drives and network block devices.
pub const DEFAULT_DISKS_EXCLUDE: &str = r"^(loop|ram|zram|fd|sr|nbd)\d+$";

/// Readings closer together than this leave `system.cpu.utilization` unchanged (the window
/// keeps growing until the next reading): CPU times have clock-tick resolution (10 ms).
pub const MIN_UTILIZATION_WINDOW: Duration = Duration::from_millis(100);

/// Describes what host metrics to collect and where to register them; finish with
/// [`install`](Self::install).
#[derive(Debug, Clone)]
#[must_use = "call .install() to start collecting"]
pub struct HostCollector {
    registry: Option<Registry>,
    per_cpu: bool,
    on_collect: bool,
    fs_types_exclude: Vec<String>,
    mountpoints_exclude: Option<String>,
    disks_exclude: Option<String>,
    disk_partitions: bool,
    interfaces_exclude: Option<String>,
    portable: bool,
    paths: Option<Paths>,
}

impl Default for HostCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl HostCollector {
    /// Everything, with the default filters, into [`Registry::global`].
    pub fn new() -> Self {
        HostCollector {
            registry: None,
            per_cpu: false,
            on_collect: false,
            fs_types_exclude: DEFAULT_FILESYSTEM_TYPES_EXCLUDE
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            mountpoints_exclude: Some(DEFAULT_MOUNTPOINTS_EXCLUDE.to_owned()),
            disks_exclude: Some(DEFAULT_DISKS_EXCLUDE.to_owned()),
            disk_partitions: false,
            interfaces_exclude: None,
            portable: false,
            paths: None,
        }
    }

    /// Registers into `registry` instead of [`Registry::global`].
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    sonde_core::builder_setters! {
        /// Reports `system.cpu.time` and `system.cpu.utilization` per logical CPU, with a
        /// `cpu.logical_number` label, instead of for all CPUs together (off by default). The
        /// host figures are then the average (utilization) or sum (time) over
        /// `cpu.logical_number`.
        per_cpu: bool;
        /// Also collects at every collection of the registry (a scrape, an export), from a
        /// collect hook, instead of only when [`HostMetrics::collect`] is called (off by
        /// default). Use one or the other: a daemon with a collection interval of its own calls
        /// `collect` on it.
        on_collect: bool;
    }

    /// Filesystem types to leave out, replacing [`DEFAULT_FILESYSTEM_TYPES_EXCLUDE`]; a
    /// trailing `*` matches any suffix (`"fuse.*"`). An empty list keeps every filesystem with
    /// blocks, network filesystems included: `statvfs` on an unreachable hard-mounted NFS share
    /// blocks the collecting thread.
    pub fn filesystems_exclude<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fs_types_exclude = types.into_iter().map(Into::into).collect();
        self
    }

    /// A regular expression on mountpoints to leave out, replacing
    /// [`DEFAULT_MOUNTPOINTS_EXCLUDE`]; `None` keeps every mountpoint.
    pub fn mountpoints_exclude(mut self, regex: Option<&str>) -> Self {
        self.mountpoints_exclude = regex.map(str::to_owned);
        self
    }

    /// A regular expression on block device names (`sda`, `nvme0n1`, `dm-0`) to leave out of
    /// the disk metrics, replacing [`DEFAULT_DISKS_EXCLUDE`]; `None` keeps every device.
    pub fn disks_exclude(mut self, regex: Option<&str>) -> Self {
        self.disks_exclude = regex.map(str::to_owned);
        self
    }

    sonde_core::builder_setters! {
        /// Also reports partitions (`sda1`) in the disk metrics (Linux; off by default: only
        /// whole devices, those listed in `/sys/block`, so that sums over devices do not count
        /// the same IO twice).
        disk_partitions: bool;
    }

    /// A regular expression on network interface names to leave out (none by default; on
    /// container hosts, `^(veth|cali|flannel|cni|docker)` avoids a series per container).
    pub fn network_interfaces_exclude(mut self, regex: Option<&str>) -> Self {
        self.interfaces_exclude = regex.map(str::to_owned);
        self
    }

    /// Reads through sysinfo, as on platforms other than Linux (for tests of that path).
    #[doc(hidden)]
    pub fn portable(mut self) -> Self {
        self.portable = true;
        self
    }

    /// Reads `proc` and `sys_block` instead of `/proc` and `/sys/block` (for tests).
    #[doc(hidden)]
    pub fn paths(
        mut self,
        proc: impl Into<std::path::PathBuf>,
        sys_block: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.paths = Some(Paths {
            proc: proc.into(),
            sys_block: sys_block.into(),
            rootfs: None,
        });
        self
    }

    /// Reports the host whose root filesystem is mounted at `root` (`/host` in a container
    /// started with `-v /:/host:ro`, with the host's PID namespace): `root/proc`,
    /// `root/sys/block`, the mounts of the host's PID 1 and filesystem sizes through `root`,
    /// with mountpoints reported as the host sees them. Like node_exporter's `--path.rootfs`
    /// and the Collector's `root_path`. Linux only (elsewhere the system's own view is read).
    pub fn host_root(mut self, root: impl Into<std::path::PathBuf>) -> Self {
        let root = root.into();
        self.paths = Some(Paths {
            proc: root.join("proc"),
            sys_block: root.join("sys/block"),
            rootfs: Some(root),
        });
        self
    }

    /// Reads the host's `/proc` at `proc` and its `/sys` at `sys` (the `HOST_PROC` and
    /// `HOST_SYS` of gopsutil and the Collector), leaving the mounts and filesystem paths as
    /// this process sees them.
    pub fn proc_and_sys(
        self,
        proc: impl Into<std::path::PathBuf>,
        sys: impl Into<std::path::PathBuf>,
    ) -> Self {
        let sys = sys.into();
        self.paths(proc, sys.join("block"))
    }

    /// Registers the families (or reuses them if they exist with the same definition), reads
    /// the host once and, with [`on_collect`](Self::on_collect), adds a collect hook.
    ///
    /// The first reading sets the gauges (CPU utilization: the average since boot) and the
    /// starting point of the counters: they count from now on, so that a delta exporter's first
    /// point is not everything since boot (devices that appear later count from their creation).
    pub fn install(self) -> Result<HostMetrics, Error> {
        let registry = self.registry.unwrap_or_else(|| Registry::global().clone());
        let compile = |what: &'static str, pattern: Option<String>| {
            pattern
                .map(|p| {
                    Regex::new(&p).map_err(|source| Error::InvalidRegex {
                        what,
                        pattern: p.clone(),
                        source: Box::new(source),
                    })
                })
                .transpose()
        };
        let filters = Filters {
            fs_types: self.fs_types_exclude,
            mountpoints: compile("mountpoints_exclude", self.mountpoints_exclude)?,
            disks: compile("disks_exclude", self.disks_exclude)?,
            disk_partitions: self.disk_partitions,
            interfaces: compile("network_interfaces_exclude", self.interfaces_exclude)?,
        };
        let source = make_source(self.portable, self.paths)?;
        let families = Families::register(&registry, source.has_cpu_modes(), self.per_cpu)?;
        let mut state = State {
            source,
            families,
            filters,
            per_cpu: self.per_cpu,
            cpus: Entries::new(),
            util_at: None,
            process_created: None,
            filesystems: Entries::new(),
            disks: Entries::new(),
            networks: Entries::new(),
            pressure: HashMap::new(),
            generation: 0,
        };
        state.update(true);
        let shared = Shared::new(state);
        let hook = self
            .on_collect
            .then(|| shared.hook(&registry, |shared| collect(shared, false)));
        Ok(HostMetrics {
            _running: Running::new(
                &shared,
                hook,
                "host metrics: stopping because the handle was dropped (keep it in a variable, `let _host = ...`, for as long as they should be collected)",
            ),
            shared,
        })
    }
}

/// Where the host is read from, when not `/proc`, `/sys/block` and this process's mounts.
#[derive(Debug, Clone)]
struct Paths {
    proc: std::path::PathBuf,
    sys_block: std::path::PathBuf,
    rootfs: Option<std::path::PathBuf>,
}

#[cfg(target_os = "linux")]
fn make_source(portable: bool, paths: Option<Paths>) -> Result<Source, Error> {
    if portable {
        return portable_source();
    }
    let p = paths.unwrap_or_else(|| Paths {
        proc: "/proc".into(),
        sys_block: "/sys/block".into(),
        rootfs: None,
    });
    Ok(Source::Procfs(crate::linux::Procfs::new(
        p.proc,
        p.sys_block,
        p.rootfs,
    )))
}

#[cfg(not(target_os = "linux"))]
fn make_source(_portable: bool, _paths: Option<Paths>) -> Result<Source, Error> {
    portable_source()
}

fn portable_source() -> Result<Source, Error> {
    let p = crate::source::Portable::new().map_err(|e| Error::System {
        message: e.to_string(),
    })?;
    Ok(Source::Sysinfo(Box::new(p)))
}

/// Installed host metrics. Cheap to clone, `Send` and `Sync`. The collection runs until the
/// last clone is dropped (then it stops, logging a line if it ran on the registry's
/// collections; the series keep their last values) or [`uninstall`](Self::uninstall) is
/// called (which also removes the series).
#[derive(Clone)]
#[must_use = "dropping the handle stops the host metrics: keep it (`let _host = ...`) for as long as they should be collected"]
pub struct HostMetrics {
    shared: Arc<Shared<State>>,
    _running: Arc<Running<State>>,
}

impl fmt::Debug for HostMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostMetrics")
            .field("installed", &self.is_installed())
            .finish()
    }
}

impl HostMetrics {
    /// Reads the host now and updates the families. Call it from any thread (typically the
    /// daemon's collection thread, on its interval); a collection already in progress on
    /// another thread is waited for. Never panics: what cannot be read leaves its series as
    /// they were and counts in `sonde.collector.errors{collector="host"}`.
    pub fn collect(&self) {
        collect(&self.shared, true);
    }

    /// Whether the collector still updates its families.
    pub fn is_installed(&self) -> bool {
        self.shared.is_installed()
    }

    /// Stops collecting and removes the series this collector created (the families stay,
    /// empty; the collect hook goes with the last handle). Idempotent.
    pub fn uninstall(&self) {
        if let Some(state) = self.shared.uninstall() {
            state.remove_all();
        }
    }
}

crate::collector_component!(HostMetrics, "host");

/// One reading of the host; a panic counts as an error.
fn collect(shared: &Shared<State>, wait: bool) {
    shared.collect_catching(
        wait,
        |state| state.update(false),
        |state| state.families.error("panic"),
    );
}

struct Filters {
    fs_types: Vec<String>,
    mountpoints: Option<Regex>,
    disks: Option<Regex>,
    disk_partitions: bool,
    interfaces: Option<Regex>,
}

impl Filters {
    fn keep_filesystem(&self, fs_type: &str, mountpoint: &str) -> bool {
        let excluded = self.fs_types.iter().any(|t| match t.strip_suffix('*') {
            Some(prefix) => fs_type.starts_with(prefix),
            None => t == fs_type,
        });
        !excluded
            && !self
                .mountpoints
                .as_ref()
                .is_some_and(|r| r.is_match(mountpoint))
    }
}

/// A counter fed from a cumulative OS total: it advances by the difference between
/// consecutive totals. A total below the previous one is a reset (the device was re-created
/// or a 32-bit counter wrapped): the new total is what accumulated since.
pub(crate) struct Cumulative {
    counter: Counter,
    last: u64,
}

impl Cumulative {
    /// `baseline`: the first total is the starting point (counts from now on); else it is
    /// counted (the device is new).
    pub(crate) fn new(counter: Counter, first: u64, baseline: bool) -> Self {
        let mut c = Cumulative {
            counter,
            last: if baseline { first } else { 0 },
        };
        c.update(first);
        c
    }

    pub(crate) fn update(&mut self, total: u64) {
        let delta = if total >= self.last {
            total - self.last
        } else {
            total
        };
        self.last = total;
        if delta > 0 {
            self.counter.add(delta);
        }
    }
}

/// Like [`Cumulative`], for totals in ticks or milliseconds counted in seconds.
pub(crate) struct CumulativeSecs {
    counter: Counter<f64>,
    last: u64,
    per_second: f64,
    /// Whether a decrease is a reset (devices) or noise to ignore (CPU times: iowait can go
    /// backwards on some kernels).
    resets: bool,
}

impl CumulativeSecs {
    pub(crate) fn new(
        counter: Counter<f64>,
        first: u64,
        per_second: f64,
        resets: bool,
        baseline: bool,
    ) -> Self {
        let mut c = CumulativeSecs {
            counter,
            last: if baseline { first } else { 0 },
            per_second,
            resets,
        };
        c.update(first);
        c
    }

    pub(crate) fn update(&mut self, total: u64) {
        let delta = if total >= self.last {
            total - self.last
        } else if self.resets {
            total
        } else {
            0
        };
        self.last = total;
        if delta > 0 {
            self.counter.add(delta as f64 / self.per_second);
        }
    }
}

/// The series of one CPU entry (all CPUs, or one logical CPU).
struct CpuEntry {
    /// Label values per mode (or one entry without a mode on the portable path).
    values: Vec<Vec<String>>,
    times: Vec<CumulativeSecs>,
    utilization: Vec<Gauge<f64>>,
    /// Ticks at the start of the utilization window (`None`: since boot).
    window_start: Option<CpuTicks>,
}

struct FsEntry {
    /// `[device, mountpoint, type, mode]`.
    base: [String; 4],
    /// Per [`FS_STATES`] entry.
    states: [UsageSeries; 3],
    limit: Gauge,
}

struct DiskEntry {
    io: [Cumulative; 2],
    ops: Option<[Cumulative; 2]>,
    op_time: Option<[CumulativeSecs; 2]>,
    io_time: Option<CumulativeSecs>,
}

struct NetEntry {
    io: [Cumulative; 2],
    packets: [Cumulative; 2],
    errors: [Cumulative; 2],
    dropped: Option<[Cumulative; 2]>,
}

const FS_STATES: [&str; 3] = ["used", "free", "reserved"];
const DISK_DIRECTIONS: [&str; 2] = ["read", "write"];
const NET_DIRECTIONS: [&str; 2] = ["receive", "transmit"];

struct State {
    source: Source,
    families: Families,
    filters: Filters,
    per_cpu: bool,
    /// By logical CPU number (`None`: all CPUs).
    cpus: Entries<Option<u32>, CpuEntry>,
    util_at: Option<Instant>,
    process_created: Option<Cumulative>,
    filesystems: Entries<[String; 4], FsEntry>,
    disks: Entries<String, DiskEntry>,
    networks: Entries<String, NetEntry>,
    pressure: PressureCounters,
    /// Increments at every reading; entries not seen in the latest are removed.
    generation: u64,
}

impl State {
    fn update(&mut self, first: bool) {
        self.generation += 1;
        self.update_cpu(first);
        if let Some(m) = self.read(Source::memory, "memory") {
            self.families.record_memory(&m);
        }
        if let Some(l) = self.read(Source::load, "load") {
            for (g, v) in self.families.load.iter().zip(l) {
                g.set(v);
            }
        }
        if let Some(u) = self.read(Source::uptime, "uptime") {
            self.families.uptime.set(u);
        }
        if let Some(n) = self.read(Source::process_count, "processes") {
            self.families.process_count.set(clamp_i64(n));
        }
        self.update_filesystems();
        self.update_disks(first);
        self.update_networks(first);
        if let Some(p) = self.read(Source::pressure, "pressure") {
            self.families
                .pressure
                .record(&mut self.pressure, &p, &[], first);
        }
    }

    /// Reads one thing; a failure is counted and gives `None`.
    fn read<T>(
        &mut self,
        f: impl FnOnce(&mut Source) -> Got<T>,
        reason: &'static str,
    ) -> Option<T> {
        match f(&mut self.source) {
            Ok(v) => Some(v),
            Err(Miss::Failed) => {
                self.families.error(reason);
                None
            }
            Err(Miss::Unsupported) => None,
        }
    }

    fn update_cpu(&mut self, first: bool) {
        let Some((cpu, created)) = self.read(Source::cpu, "cpu") else {
            return;
        };
        self.families
            .cpu_count
            .set(i64::try_from(cpu.logical_count()).unwrap_or(i64::MAX));
        if let Some(total) = created {
            match &mut self.process_created {
                Some(c) => c.update(total),
                None => {
                    self.process_created = Some(Cumulative::new(
                        self.families.process_created.handle(),
                        total,
                        first,
                    ));
                }
            }
        }
        let now = Instant::now();
        let window_done = self
            .util_at
            .is_none_or(|at| now.saturating_duration_since(at) >= MIN_UTILIZATION_WINDOW);
        if window_done {
            self.util_at = Some(now);
        }
        let generation = self.generation;
        match cpu {
            Cpu::Ticks {
                total,
                per_cpu,
                ticks_per_second,
            } => {
                let tps = ticks_per_second as f64;
                for (n, ticks) in cpus_reported(self.per_cpu, total, per_cpu) {
                    let fams = &self.families;
                    let entry = self
                        .cpus
                        .seen_or_insert_with(n, generation, |_| fams.cpu_entry(n, &ticks, tps));
                    for (c, t) in entry.times.iter_mut().zip(ticks) {
                        c.update(t);
                    }
                    if window_done {
                        let start = entry.window_start.unwrap_or([0; 7]);
                        let delta: Vec<u64> = ticks
                            .iter()
                            .zip(start)
                            .map(|(now, then)| now.saturating_sub(then))
                            .collect();
                        let sum: u64 = delta.iter().sum();
                        if sum > 0 {
                            for (g, d) in entry.utilization.iter().zip(&delta) {
                                g.set((*d as f64 / sum as f64).clamp(0.0, 1.0));
                            }
                        }
                        entry.window_start = Some(ticks);
                    }
                }
            }
            Cpu::Usage { total, per_cpu } => {
                for (n, usage) in cpus_reported(self.per_cpu, total, per_cpu) {
                    let fams = &self.families;
                    let entry = self
                        .cpus
                        .seen_or_insert_with(n, generation, |_| fams.cpu_entry(n, &[0; 7], 1.0));
                    if let Some(g) = entry.utilization.first() {
                        g.set(usage);
                    }
                }
            }
        }
        let fams = &self.families;
        self.cpus
            .remove_unseen(generation, |_, e| fams.remove_cpu(e));
    }

    fn update_filesystems(&mut self) {
        let filters = &self.filters;
        let keep = |t: &str, m: &str| filters.keep_filesystem(t, m);
        let list = match self.source.filesystems(&keep) {
            Ok(l) => l,
            Err(Miss::Failed) => return self.families.error("filesystems"),
            Err(Miss::Unsupported) => return,
        };
        let generation = self.generation;
        for fs in list {
            let Filesystem {
                mount:
                    Mount {
                        device,
                        mountpoint,
                        fs_type,
                        mode,
                    },
                sizes,
            } = fs;
            let key = [device, mountpoint, fs_type, mode.to_owned()];
            let Some(sizes) = sizes else {
                // Keeps the series of a filesystem seen before as they were.
                self.filesystems.get_seen(&key, generation);
                self.families.error("statvfs");
                continue;
            };
            let fams = &self.families;
            let entry = self
                .filesystems
                .seen_or_insert_with(key, generation, |key| fams.fs_entry(key));
            for (series, v) in entry.states.iter().zip(sizes.states()) {
                series.set(v, sizes.total);
            }
            entry.limit.set(clamp_i64(sizes.total));
        }
        let fams = &self.families;
        self.filesystems
            .remove_unseen(generation, |_, e| fams.remove_fs(e));
    }

    fn update_disks(&mut self, first: bool) {
        let partitions = self.filters.disk_partitions;
        let Some(list) = self.read(|s| s.disks(partitions), "disks") else {
            return;
        };
        let exclude = self.filters.disks.as_ref();
        self.families
            .disk
            .update_listed(&mut self.disks, self.generation, list, exclude, first);
    }

    fn update_networks(&mut self, first: bool) {
        let Some(list) = self.read(Source::networks, "network") else {
            return;
        };
        let exclude = self.filters.interfaces.as_ref();
        self.families
            .net
            .update_listed(&mut self.networks, self.generation, list, exclude, first);
    }

    /// Removes every series this collector created.
    fn remove_all(self) {
        let f = &self.families;
        for (_, e) in self.cpus.iter() {
            f.remove_cpu(e);
        }
        for (_, e) in self.filesystems.iter() {
            f.remove_fs(e);
        }
        for (name, _) in self.disks.iter() {
            f.disk.remove(name);
        }
        for (name, _) in self.networks.iter() {
            f.net.remove(name);
        }
        f.pressure.remove(&[]);
    }
}

/// The readings to report by logical CPU number: each CPU's with `per_cpu`, else the total
/// (`None`).
fn cpus_reported<T>(per_cpu: bool, total: T, each: Vec<(u32, T)>) -> Vec<(Option<u32>, T)> {
    if per_cpu {
        each.into_iter().map(|(n, t)| (Some(n), t)).collect()
    } else {
        vec![(None, total)]
    }
}

pub(crate) fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn ratio(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (part as f64 / total as f64).clamp(0.0, 1.0)
    }
}

/// The registered families.
struct Families {
    errors: Family<Counter>,
    cpu_modes: bool,
    per_cpu: bool,
    cpu_time: Option<Family<Counter<f64>>>,
    cpu_utilization: Family<Gauge<f64>>,
    cpu_count: Gauge,
    load: [Gauge<f64>; 3],
    memory: UsageFamilies,
    memory_limit: Gauge,
    memory_available: Option<Gauge>,
    paging: UsageFamilies,
    fs: UsageFamilies,
    fs_limit: Family<Gauge>,
    disk: DiskFamilies,
    net: NetFamilies,
    uptime: Gauge<f64>,
    process_count: Gauge,
    process_created: Family<Counter>,
    pressure: PressureFamilies,
}

impl Families {
    fn register(registry: &Registry, cpu_modes: bool, per_cpu: bool) -> Result<Self, Error> {
        let mut cpu_labels: Vec<&'static str> = Vec::new();
        if cpu_modes {
            cpu_labels.push(CPU_MODE_LABEL);
        }
        if per_cpu {
            cpu_labels.push(CPU_LOGICAL_NUMBER_LABEL);
        }
        let gauge = |name: &'static str, description: &'static str, unit: Unit| {
            registry
                .gauge(name)
                .description(description)
                .unit(unit)
                .build()
                .map(|f| f.handle())
        };
        let load = |name: &'static str, description: &'static str| {
            registry
                .gauge_f64(name)
                .description(description)
                .unit(Unit::Count("{thread}".into()))
                .build()
                .map(|f| f.handle())
        };
        let fs = [
            DEVICE_LABEL,
            FILESYSTEM_MOUNTPOINT_LABEL,
            FILESYSTEM_TYPE_LABEL,
            FILESYSTEM_MODE_LABEL,
        ];
        let fs_state = [
            DEVICE_LABEL,
            FILESYSTEM_MOUNTPOINT_LABEL,
            FILESYSTEM_TYPE_LABEL,
            FILESYSTEM_MODE_LABEL,
            FILESYSTEM_STATE_LABEL,
        ];
        Ok(Families {
            errors: collector_errors(registry)?,
            cpu_modes,
            per_cpu,
            cpu_time: if cpu_modes {
                Some(
                    registry
                        .counter_f64(CPU_TIME)
                        .description("Seconds each logical CPU spent on each mode.")
                        .unit(Unit::Seconds)
                        .labels(cpu_labels.clone())
                        .build()?,
                )
            } else {
                None
            },
            cpu_utilization: registry
                .gauge_f64(CPU_UTILIZATION)
                .description("Change in system.cpu.time over the interval divided by the elapsed CPU time: the share of the CPUs in each mode, 0 to 1.")
                .unit(Unit::Ratio)
                .labels(cpu_labels)
                .build()?,
            cpu_count: gauge(
                CPU_LOGICAL_COUNT,
                "Logical CPUs online.",
                Unit::Count("{cpu}".into()),
            )?,
            load: [
                load(LOAD_AVERAGE_1M, "Load average over the last minute: runnable and uninterruptible tasks.")?,
                load(LOAD_AVERAGE_5M, "Load average over the last 5 minutes.")?,
                load(LOAD_AVERAGE_15M, "Load average over the last 15 minutes.")?,
            ],
            memory: UsageFamilies::register(
                registry,
                (
                    MEMORY_USAGE,
                    "Memory in use by state (used is total minus available).",
                ),
                (MEMORY_UTILIZATION, "Share of memory in each state, 0 to 1."),
                &[MEMORY_STATE_LABEL],
            )?,
            memory_limit: gauge(MEMORY_LIMIT, "Total memory.", Unit::Bytes)?,
            memory_available: if cpu_modes {
                Some(gauge(
                    MEMORY_AVAILABLE,
                    "An estimate of how much memory is available for starting new applications, without causing swapping (MemAvailable).",
                    Unit::Bytes,
                )?)
            } else {
                None
            },
            paging: UsageFamilies::register(
                registry,
                (PAGING_USAGE, "Swap space in use and free."),
                (PAGING_UTILIZATION, "Share of swap space in each state, 0 to 1."),
                &[PAGING_STATE_LABEL],
            )?,
            fs: UsageFamilies::register(
                registry,
                (
                    FILESYSTEM_USAGE,
                    "Filesystem space by state; the states add up to system.filesystem.limit.",
                ),
                (
                    FILESYSTEM_UTILIZATION,
                    "Share of the filesystem's space in each state, 0 to 1.",
                ),
                &fs_state,
            )?,
            fs_limit: registry
                .gauge(FILESYSTEM_LIMIT)
                .description("Total size of the filesystem.")
                .unit(Unit::Bytes)
                .labels(fs)
                .build()?,
            disk: DiskFamilies::register(registry)?,
            net: NetFamilies::register(registry)?,
            uptime: registry
                .gauge_f64(UPTIME)
                .description("Seconds since the system booted.")
                .unit(Unit::Seconds)
                .build()?
                .handle(),
            process_count: gauge(
                PROCESS_COUNT,
                "Processes on the host.",
                Unit::Count("{process}".into()),
            )?,
            process_created: registry
                .counter(PROCESS_CREATED)
                .description("Processes created.")
                .unit(Unit::Count("{process}".into()))
                .striped(false)
                .build()?,
            pressure: PressureFamilies::register(
                registry,
                (
                    PRESSURE_WAITING,
                    "Seconds in which some tasks were stalled waiting for the resource (Linux pressure stall information, the `some` line).",
                ),
                (
                    PRESSURE_STALLED,
                    "Seconds in which all non-idle tasks were stalled on the resource at once (Linux pressure stall information, the `full` line).",
                ),
                &[],
            )?,
        })
    }

    fn error(&self, reason: &'static str) {
        self.errors.with(&["host", reason]).inc();
    }

    fn record_memory(&self, m: &Memory) {
        let states = [
            ("used", Some(m.used())),
            ("free", Some(m.free)),
            ("buffers", m.buffers),
            ("cached", m.cached),
        ];
        for (state, v) in states {
            if let Some(v) = v {
                self.memory.with(&[state]).set(v, m.total);
            }
        }
        self.memory_limit.set(clamp_i64(m.total));
        if let (Some(g), Some(a)) = (&self.memory_available, m.available) {
            g.set(clamp_i64(a));
        }
        let swap_free = m.swap_free.min(m.swap_total);
        for (state, v) in [("used", m.swap_total - swap_free), ("free", swap_free)] {
            self.paging.with(&[state]).set(v, m.swap_total);
        }
    }

    fn cpu_values(&self, n: Option<u32>) -> Vec<Vec<String>> {
        let number = n.map(|n| n.to_string());
        let with = |mode: Option<&str>| {
            let mut v: Vec<String> = mode.map(str::to_owned).into_iter().collect();
            if self.per_cpu {
                v.push(number.clone().unwrap_or_default());
            }
            v
        };
        if self.cpu_modes {
            SYSTEM_CPU_MODES.iter().map(|m| with(Some(m))).collect()
        } else {
            vec![with(None)]
        }
    }

    fn cpu_entry(&self, n: Option<u32>, first: &CpuTicks, ticks_per_second: f64) -> CpuEntry {
        let values = self.cpu_values(n);
        let times = match &self.cpu_time {
            Some(f) => values
                .iter()
                .zip(first)
                .map(|(v, t)| CumulativeSecs::new(f.with(v), *t, ticks_per_second, false, true))
                .collect(),
            None => Vec::new(),
        };
        CpuEntry {
            utilization: values
                .iter()
                .map(|v| self.cpu_utilization.with(v))
                .collect(),
            times,
            values,
            window_start: None,
        }
    }

    fn remove_cpu(&self, e: &CpuEntry) {
        for v in &e.values {
            if let Some(f) = &self.cpu_time {
                f.remove(v);
            }
            self.cpu_utilization.remove(v);
        }
    }

    fn fs_entry(&self, base: &[String; 4]) -> FsEntry {
        let with_state = |state: &'static str| {
            let mut v: Vec<&str> = base.iter().map(String::as_str).collect();
            v.push(state);
            v
        };
        FsEntry {
            states: FS_STATES.map(|s| self.fs.with(&with_state(s))),
            limit: self.fs_limit.with(base),
            base: base.clone(),
        }
    }

    fn remove_fs(&self, e: &FsEntry) {
        for s in FS_STATES {
            let mut v: Vec<&str> = e.base.iter().map(String::as_str).collect();
            v.push(s);
            self.fs.remove(&v);
        }
        self.fs_limit.remove(&e.base);
    }
}

/// Registers (or finds) the family `(name, description)` with `unit` and `labels`.
pub(crate) fn family<M: Instrument>(
    registry: &Registry,
    (name, description): (&'static str, &'static str),
    unit: Unit,
    labels: &[&'static str],
) -> Result<Family<M>, sonde_core::Error> {
    registry
        .family::<M>(name)
        .description(description)
        .unit(unit)
        .labels(labels.iter().copied())
        .build()
}

/// A `*.usage` family (bytes by state) and its `*.utilization` (each state's share of the
/// total, 0 to 1): memory, paging and filesystems.
struct UsageFamilies {
    usage: Family<Gauge>,
    utilization: Family<Gauge<f64>>,
}

impl UsageFamilies {
    /// `usage` and `utilization`: each family's name and description.
    fn register(
        registry: &Registry,
        usage: (&'static str, &'static str),
        utilization: (&'static str, &'static str),
        labels: &[&'static str],
    ) -> Result<Self, sonde_core::Error> {
        Ok(UsageFamilies {
            usage: family(registry, usage, Unit::Bytes, labels)?,
            utilization: family(registry, utilization, Unit::Ratio, labels)?,
        })
    }

    /// The series of one state (the last of `values`).
    fn with(&self, values: &[&str]) -> UsageSeries {
        UsageSeries {
            usage: self.usage.with(values),
            utilization: self.utilization.with(values),
        }
    }

    fn remove(&self, values: &[&str]) {
        self.usage.remove(values);
        self.utilization.remove(values);
    }
}

/// One state's series of [`UsageFamilies`].
struct UsageSeries {
    usage: Gauge,
    utilization: Gauge<f64>,
}

impl UsageSeries {
    /// `v` bytes of `total` are in this state.
    fn set(&self, v: u64, total: u64) {
        self.usage.set(clamp_i64(v));
        self.utilization.set(ratio(v, total));
    }
}

/// The families of the things a reading lists by name, which a regular expression on the name
/// can leave out (disks, network interfaces), and the counters each keeps.
trait Named {
    /// One listed thing, as read.
    type Item: Listed;
    /// Its counters.
    type Entry;

    /// The counters of a thing listed for the first time (`baseline`: its totals are the
    /// starting point, else they are counted).
    fn entry(&self, item: &Self::Item, baseline: bool) -> Self::Entry;

    /// Counts a later reading of the thing into its counters.
    fn update(entry: &mut Self::Entry, item: &Self::Item);

    /// Removes the series of the thing called `name`.
    fn remove(&self, name: &str);

    /// One reading (`generation`) of `list` into `entries`, but the things `exclude` matches.
    fn update_listed(
        &self,
        entries: &mut Entries<String, Self::Entry>,
        generation: u64,
        list: Vec<Self::Item>,
        exclude: Option<&Regex>,
        baseline: bool,
    ) {
        entries.update_listed(
            generation,
            list.into_iter()
                .filter(|item| !exclude.is_some_and(|r| r.is_match(item.name()))),
            Self::Item::name,
            Self::update,
            |item| self.entry(item, baseline),
            |name, _| self.remove(name),
        );
    }
}

/// The disk families, by device and (but `io_time`) direction.
struct DiskFamilies {
    io: Family<Counter>,
    operations: Family<Counter>,
    operation_time: Family<Counter<f64>>,
    io_time: Family<Counter<f64>>,
}

impl DiskFamilies {
    fn register(registry: &Registry) -> Result<Self, sonde_core::Error> {
        let labels = [DEVICE_LABEL, DISK_IO_DIRECTION_LABEL];
        Ok(DiskFamilies {
            io: registry
                .counter(DISK_IO)
                .description("Disk bytes transferred.")
                .unit(Unit::Bytes)
                .labels(labels)
                .build()?,
            operations: registry
                .counter(DISK_OPERATIONS)
                .description("Disk operations completed.")
                .unit(Unit::Count("{operation}".into()))
                .labels(labels)
                .build()?,
            operation_time: registry
                .counter_f64(DISK_OPERATION_TIME)
                .description("Sum of the time each operation took to complete.")
                .unit(Unit::Seconds)
                .labels(labels)
                .build()?,
            io_time: registry
                .counter_f64(DISK_IO_TIME)
                .description("Time the disk spent with operations in progress.")
                .unit(Unit::Seconds)
                .labels([DEVICE_LABEL])
                .build()?,
        })
    }
}

impl Named for DiskFamilies {
    type Item = DiskIo;
    type Entry = DiskEntry;

    fn entry(&self, d: &DiskIo, baseline: bool) -> DiskEntry {
        let name = d.name.as_str();
        let c = |f: &Family<Counter>, dir: usize, first: u64| {
            Cumulative::new(f.with(&[name, DISK_DIRECTIONS[dir]]), first, baseline)
        };
        let ms = |f: &Family<Counter<f64>>, labels: &[&str], first: u64| {
            CumulativeSecs::new(f.with(labels), first, 1000.0, true, baseline)
        };
        DiskEntry {
            io: [c(&self.io, 0, d.read_bytes), c(&self.io, 1, d.write_bytes)],
            ops: d.ops.map(|o| {
                [
                    c(&self.operations, 0, o.reads),
                    c(&self.operations, 1, o.writes),
                ]
            }),
            op_time: d.ops.map(|o| {
                [
                    ms(&self.operation_time, &[name, "read"], o.read_ms),
                    ms(&self.operation_time, &[name, "write"], o.write_ms),
                ]
            }),
            io_time: d.ops.map(|o| ms(&self.io_time, &[name], o.io_ms)),
        }
    }

    fn update(entry: &mut DiskEntry, d: &DiskIo) {
        entry.io[0].update(d.read_bytes);
        entry.io[1].update(d.write_bytes);
        if let Some(ops) = &d.ops {
            if let Some([r, w]) = &mut entry.ops {
                r.update(ops.reads);
                w.update(ops.writes);
            }
            if let Some([r, w]) = &mut entry.op_time {
                r.update(ops.read_ms);
                w.update(ops.write_ms);
            }
            if let Some(t) = &mut entry.io_time {
                t.update(ops.io_ms);
            }
        }
    }

    fn remove(&self, name: &str) {
        for dir in DISK_DIRECTIONS {
            self.io.remove(&[name, dir]);
            self.operations.remove(&[name, dir]);
            self.operation_time.remove(&[name, dir]);
        }
        self.io_time.remove(&[name]);
    }
}

/// The network families, by interface and direction.
struct NetFamilies {
    io: Family<Counter>,
    packets: Family<Counter>,
    errors: Family<Counter>,
    dropped: Family<Counter>,
}

impl NetFamilies {
    fn register(registry: &Registry) -> Result<Self, sonde_core::Error> {
        let counter = |name: &'static str, description: &'static str, unit: Unit| {
            registry
                .counter(name)
                .description(description)
                .unit(unit)
                .labels([NETWORK_INTERFACE_LABEL, NETWORK_IO_DIRECTION_LABEL])
                .build()
        };
        Ok(NetFamilies {
            io: counter(NETWORK_IO, "Bytes transmitted and received.", Unit::Bytes)?,
            packets: counter(
                NETWORK_PACKETS,
                "Packets transferred.",
                Unit::Count("{packet}".into()),
            )?,
            errors: counter(
                NETWORK_ERRORS,
                "Network errors detected.",
                Unit::Count("{error}".into()),
            )?,
            dropped: counter(
                NETWORK_DROPPED,
                "Packets dropped even though there was no error.",
                Unit::Count("{packet}".into()),
            )?,
        })
    }
}

impl Named for NetFamilies {
    type Item = NetIo;
    type Entry = NetEntry;

    fn entry(&self, n: &NetIo, baseline: bool) -> NetEntry {
        let name = n.name.as_str();
        let pair = |f: &Family<Counter>, v: [u64; 2]| {
            [0, 1].map(|i| Cumulative::new(f.with(&[name, NET_DIRECTIONS[i]]), v[i], baseline))
        };
        NetEntry {
            io: pair(&self.io, n.bytes),
            packets: pair(&self.packets, n.packets),
            errors: pair(&self.errors, n.errors),
            dropped: n.dropped.map(|d| pair(&self.dropped, d)),
        }
    }

    fn update(entry: &mut NetEntry, n: &NetIo) {
        for i in 0..2 {
            entry.io[i].update(n.bytes[i]);
            entry.packets[i].update(n.packets[i]);
            entry.errors[i].update(n.errors[i]);
        }
        if let (Some(d), Some(e)) = (&n.dropped, &mut entry.dropped) {
            e[0].update(d[0]);
            e[1].update(d[1]);
        }
    }

    fn remove(&self, name: &str) {
        for dir in NET_DIRECTIONS {
            let v = [name, dir];
            self.io.remove(&v);
            self.packets.remove(&v);
            self.errors.remove(&v);
            self.dropped.remove(&v);
        }
    }
}

/// The two pressure stall families, of the `some` and the `full` lines of a PSI file: the
/// host's (`system.pressure.*`) and the cgroups' (`container.pressure.*`).
pub(crate) struct PressureFamilies {
    waiting: Family<Counter<f64>>,
    stalled: Family<Counter<f64>>,
}

/// PSI counters by resource and line (`false`: some, `true`: full).
pub(crate) type PressureCounters = HashMap<(&'static str, bool), CumulativeSecs>;

impl PressureFamilies {
    /// `waiting` and `stalled`: each family's name and description; labelled `labels`, then
    /// the resource.
    pub(crate) fn register(
        registry: &Registry,
        waiting: (&'static str, &'static str),
        stalled: (&'static str, &'static str),
        labels: &[&'static str],
    ) -> Result<Self, sonde_core::Error> {
        let labels = [labels, &[PRESSURE_RESOURCE_LABEL]].concat();
        Ok(PressureFamilies {
            waiting: family(registry, waiting, Unit::Seconds, &labels)?,
            stalled: family(registry, stalled, Unit::Seconds, &labels)?,
        })
    }

    /// Counts PSI totals in microseconds as seconds into `counters`, each made at the first
    /// reading of its resource and line, labelled `labels` and the resource (`baseline`: that
    /// first total is the starting point). A decrease is noise: the kernel's totals only grow.
    pub(crate) fn record(
        &self,
        counters: &mut PressureCounters,
        readings: &[Pressure],
        labels: &[&str],
        baseline: bool,
    ) {
        for p in readings {
            for (full, total) in [(false, Some(p.some_us)), (true, p.full_us)] {
                let Some(total) = total else { continue };
                match counters.entry((p.resource, full)) {
                    std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().update(total),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let family = if full { &self.stalled } else { &self.waiting };
                        let mut values = labels.to_vec();
                        values.push(p.resource);
                        e.insert(CumulativeSecs::new(
                            family.with(&values),
                            total,
                            1e6,
                            false,
                            baseline,
                        ));
                    }
                }
            }
        }
    }

    /// Removes the series labelled `labels` and one of the [`PRESSURE_RESOURCES`].
    pub(crate) fn remove(&self, labels: &[&str]) {
        for resource in PRESSURE_RESOURCES {
            let mut values = labels.to_vec();
            values.push(resource);
            self.waiting.remove(&values);
            self.stalled.remove(&values);
        }
    }
}

/// Registers (or finds) `sonde.collector.errors{collector, reason}`.
pub(crate) fn collector_errors(registry: &Registry) -> Result<Family<Counter>, sonde_core::Error> {
    registry
        .counter(COLLECTOR_ERRORS)
        .description(
            "Readings a collector could not make; the affected series kept their previous values.",
        )
        .labels([COLLECTOR_LABEL, REASON_LABEL])
        .build()
}
