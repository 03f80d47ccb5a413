//! # sonde-host
//!
//! Host metrics for sonde by the OpenTelemetry semantic conventions for system metrics (CPU,
//! load, memory, swap, filesystems, disk and network IO, uptime, processes), and procstat:
//! per-process metrics for the processes that match a name, a pattern or a pid file, followed
//! as they start and exit (like the CloudWatch agent's procstat plugin).
//!
//! Nothing runs on a timer: [`HostMetrics::collect`] and [`ProcstatMetrics::collect`] read
//! the host when called (a daemon calls them on its own interval, from any thread), or, with
//! `.on_collect(true)`, every collection of the registry does (a scrape, an export).
//!
//! ```
//! use sonde_core::Registry;
//! use sonde_host::{HostCollector, ProcessMatcher, ProcstatCollector};
//!
//! let registry = Registry::new(); // or leave `.registry(..)` out for `Registry::global()`
//! let host = HostCollector::new().registry(&registry).per_cpu(false).install()?;
//! host.collect(); // on the daemon's interval
//!
//! let snapshot = registry.snapshot();
//! let limit = snapshot.point("system.memory.limit", &[]).and_then(|p| p.number()).unwrap();
//! assert!(limit.as_f64() > 0.0);
//! # #[cfg(target_os = "linux")] {
//! let idle = snapshot.point("system.cpu.utilization", &[("cpu.mode", "idle")]);
//! let idle = idle.and_then(|p| p.number()).unwrap().as_f64();
//! assert!((0.0..=1.0).contains(&idle));
//! let lo = [("network.interface.name", "lo"), ("network.io.direction", "receive")];
//! assert!(snapshot.point("system.network.io", &lo).is_some());
//! # }
//!
//! // Per-process metrics of every process named `sleep`, under procstat.* (the service's own
//! // process.* series stay its own), and their totals per matcher:
//! # #[cfg(unix)] {
//! let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
//! let sleepers = ProcstatCollector::new(ProcessMatcher::Name("sleep".into()))
//!     .registry(&registry)
//!     .install()?; // looks once; then on every .collect()
//! let pid = child.id().to_string();
//! let labels = [("process.match", "name:sleep"), ("process.pid", pid.as_str()), ("process.executable.name", "sleep")];
//! let snapshot = registry.snapshot();
//! assert!(snapshot.point("procstat.memory.usage", &labels).is_some());
//! assert!(snapshot.point("procstat.start_time", &labels).is_some());
//! let group = [("process.match", "name:sleep")];
//! assert!(snapshot.point("procstat.group.process.count", &group).is_some());
//! assert!(snapshot.point("process.memory.usage", &labels).is_none());
//! child.kill().unwrap();
//! child.wait().unwrap();
//! sleepers.collect(); // the child has exited: its series are removed
//! assert!(registry.snapshot().point("procstat.memory.usage", &labels).is_none());
//! # }
//! # Ok::<(), sonde_host::Error>(())
//! ```
//!
//! ## Host metrics
//!
//! | Name | Instrument | Unit | Labels | Value |
//! |---|---|---|---|---|
//! | `system.cpu.time` | `Counter<f64>` | `s` | `cpu.mode`, [`cpu.logical_number`] | CPU seconds per mode since install (Linux) |
//! | `system.cpu.utilization` | `Gauge<f64>` | `1` | `cpu.mode`, [`cpu.logical_number`] | share of CPU time per mode over the last interval, 0 to 1 |
//! | `system.cpu.logical.count` | `Gauge` | `{cpu}` | | logical CPUs online |
//! | `system.cpu.load_average.1m`, `.5m`, `.15m` | `Gauge<f64>` | `{thread}` | | load averages (not on Windows) |
//! | `system.memory.usage` | `Gauge` | `By` | `system.memory.state` = `used`, `free`, `buffers`, `cached` | bytes per state |
//! | `system.memory.utilization` | `Gauge<f64>` | `1` | `system.memory.state` | usage / limit |
//! | `system.memory.limit` | `Gauge` | `By` | | total memory |
//! | `system.memory.linux.available` | `Gauge` | `By` | | `MemAvailable` (Linux) |
//! | `system.paging.usage` | `Gauge` | `By` | `system.paging.state` = `used`, `free` | swap space |
//! | `system.paging.utilization` | `Gauge<f64>` | `1` | `system.paging.state` | usage / swap size (0 without swap) |
//! | `system.filesystem.usage` | `Gauge` | `By` | `system.device`, `system.filesystem.mountpoint`, `.type`, `.mode`, `.state` = `used`, `free`, `reserved` | bytes per state |
//! | `system.filesystem.utilization` | `Gauge<f64>` | `1` | same | usage / limit |
//! | `system.filesystem.limit` | `Gauge` | `By` | `system.device`, `system.filesystem.mountpoint`, `.type`, `.mode` | filesystem size |
//! | `system.disk.io` | `Counter` | `By` | `system.device`, `disk.io.direction` = `read`, `write` | bytes transferred |
//! | `system.disk.operations` | `Counter` | `{operation}` | `system.device`, `disk.io.direction` | operations completed (Linux) |
//! | `system.disk.operation_time` | `Counter<f64>` | `s` | `system.device`, `disk.io.direction` | sum of the operations' durations (Linux) |
//! | `system.disk.io_time` | `Counter<f64>` | `s` | `system.device` | time with IO in progress (Linux) |
//! | `system.network.io` | `Counter` | `By` | `network.interface.name`, `network.io.direction` = `receive`, `transmit` | bytes |
//! | `system.network.packet.count` | `Counter` | `{packet}` | `network.interface.name`, `network.io.direction` | packets |
//! | `system.network.errors` | `Counter` | `{error}` | `network.interface.name`, `network.io.direction` | errors |
//! | `system.network.packet.dropped` | `Counter` | `{packet}` | `network.interface.name`, `network.io.direction` | packets dropped (Linux) |
//! | `system.uptime` | `Gauge<f64>` | `s` | | seconds since boot |
//! | `system.process.count` | `Gauge` | `{process}` | | processes (Linux) |
//! | `system.process.created` | `Counter` | `{process}` | | processes created since install (Linux) |
//! | `system.pressure.waiting` | `Counter<f64>` | `s` | `system.pressure.resource` | time some tasks stalled on `cpu`, `memory`, `io` (Linux PSI) |
//! | `system.pressure.stalled` | `Counter<f64>` | `s` | `system.pressure.resource` | time all non-idle tasks stalled at once (Linux PSI) |
//! | `sonde.collector.errors` | `Counter` | | `collector` = `host`, `procstat`, `cgroup`; `reason` | readings that failed |
//!
//! [`cpu.logical_number`]: HostCollector::per_cpu
//!
//! - **Sources.** On Linux everything is read from `/proc` (`stat`, `meminfo`, `loadavg`,
//!   `uptime`, `diskstats`, `net/dev`, `self/mounts`), `/sys/block` and `statvfs(2)`: one
//!   read per file. Elsewhere sysinfo provides what it can: CPU utilization without the split
//!   by mode (the family then has no `cpu.mode` label, and there is no `system.cpu.time`),
//!   memory without buffers and cache, filesystems without reserved blocks, disk bytes without
//!   operations, network counters without drops, and no process count.
//! - **Containers**: [`CgroupCollector`] reads cgroups (v2, v1 or hybrid) into `container.*`
//!   families per cgroup (see [`CONTAINER_CPU_TIME`] and the constants after it), labelled
//!   [`CGROUP_LABELS`]. A cgroup with nothing readable counts in
//!   `sonde.collector.errors{collector="cgroup", reason="read"}`, and cgroups past
//!   [`CgroupCollector::max_cgroups`] are left out and counted once per reading in
//!   `reason="too_many_cgroups"`.
//! - **In a container**, [`HostCollector::host_root`] reads the host mounted at a path (`/host`):
//!   its `/proc`, the mounts of its PID 1 and filesystem sizes through the root, mountpoints
//!   reported as the host names them; [`HostCollector::proc_and_sys`] takes `/proc` and `/sys`
//!   alone (`HOST_PROC`, `HOST_SYS`).
//! - **Counters** advance by the difference between consecutive OS totals, so they are
//!   cumulative and monotonic whatever the OS does: a total lower than the previous one is a
//!   reset (an interface re-created, a 32-bit counter wrapping) and counts from zero again;
//!   CPU times that go backwards (iowait does on some kernels) add nothing. They count from
//!   install (the first reading is their starting point) rather than from boot, so that a
//!   delta exporter's first point is not everything since boot; devices and interfaces that
//!   appear later count from their creation.
//! - **Sampled values are gauges**, not the up-down counters of the conventions: a gauge
//!   carries the value itself to delta readers (CloudWatch, delta OTLP), where an up-down
//!   counter would carry the change since the previous export.
//! - **CPU utilization** is the change in each mode's time divided by the change in the total
//!   (all modes) since the previous reading, so the modes add up to 1; `cpu.mode` is `user`,
//!   `nice`, `system`, `idle`, `iowait`, `interrupt` (hard and soft IRQs) and `steal` (guest
//!   time is part of `user` and `nice`, as the kernel counts it). The first value is the average
//!   since boot; readings less than [`MIN_UTILIZATION_WINDOW`] apart leave it unchanged.
//! - **Memory**: `used` is `MemTotal - MemAvailable` (the conventions' definition; without
//!   `MemAvailable`, `total - free - buffers - cached`), `cached` is the page cache plus
//!   reclaimable slab, as `free(1)` counts it. The states overlap (`used` excludes the
//!   reclaimable cache), so they do not add up to the limit.
//! - **Filesystems**: `used` + `free` (available to unprivileged users) + `reserved` (for
//!   root) = `limit`; `df`'s `Use%` is `used / (used + free)`. Pseudo filesystems, container
//!   layers and network filesystems are left out by default
//!   ([`DEFAULT_FILESYSTEM_TYPES_EXCLUDE`], [`DEFAULT_MOUNTPOINTS_EXCLUDE`]; see
//!   [`HostCollector::filesystems_exclude`]). The mounts are those of the collecting process's
//!   mount namespace: an agent in a container sees the host's filesystems only where they are
//!   mounted into it.
//! - **Disks** are whole block devices (`/sys/block`) without loop, RAM and optical devices
//!   by default ([`DEFAULT_DISKS_EXCLUDE`], [`HostCollector::disk_partitions`]).
//! - **Network** counters are those of the collecting process's network namespace.
//! - **Series come and go** with devices, interfaces, mounts and CPUs: those that disappear
//!   from a reading have their series removed, so memory stays bounded. A reading that fails
//!   (an unreadable or garbled file) leaves its series unchanged and counts in
//!   `sonde.collector.errors{collector="host", reason}` (`reason`: `cpu`, `memory`, `load`,
//!   `uptime`, `processes`, `filesystems`, `statvfs`, `disks`, `network`, `pressure`). A
//!   collection that panics is caught, so the panic never reaches the caller, and counts with
//!   `reason="panic"`; what it had updated before the panic stays updated.
//!
//! ## Procstat
//!
//! [`ProcstatCollector`] follows the processes that a [`ProcessMatcher`] selects: at every
//! [`collect`](ProcstatMetrics::collect) it lists the processes (one sysinfo refresh of the
//! process list, reading each process's `stat` and `status`, plus its executable link and
//! command line when a name or pattern needs them; a pid file needs no listing), installs a
//! [`sonde_process::ProcessCollector`] for each new match and uninstalls those of processes
//! that exited (or whose pid now belongs to another process), which removes their series.
//! Its collect hook reads the processes found and sets the group totals at every collection
//! of the registry (with [`on_collect`](ProcstatCollector::on_collect), it also looks for new
//! ones there).
//!
//! Each matcher is a **group**, named by the `process.match` label: the matcher written as
//! `name:nginx`, `pattern:^postgres` or `pid_file:/run/nginx.pid`. Every series carries it.
//!
//! **Per process**, the metrics are sonde-process's under the `procstat` prefix, so that they
//! never mix with the service's own `process.*` (a dashboard or alert on `process_*` by job and
//! instance sees the agent, not nginx and postgres added to it), labelled `process.match`,
//! `process.pid`, `process.executable.name` ([`PROCSTAT_LABELS`]; `cpu.mode` first on the CPU
//! families):
//!
//! | Name | Instrument | Unit | Value |
//! |---|---|---|---|
//! | `procstat.cpu.time` | `Counter<f64>` | `s` | CPU seconds per `cpu.mode` (`user`, `system`) since the process started |
//! | `procstat.cpu.utilization` | `Gauge<f64>` | `1` | share of the CPUs, per `cpu.mode` |
//! | `procstat.memory.usage` | `Gauge` | `By` | resident set size |
//! | `procstat.memory.virtual` | `Gauge` | `By` | virtual memory size |
//! | `procstat.thread.count` | `Gauge` | `{thread}` | threads (Linux) |
//! | `procstat.open_file_descriptor.count` | `Gauge` | `{file_descriptor}` | open file descriptors; no series when they cannot be read |
//! | `procstat.open_file_descriptor.limit` | `Gauge` | `{file_descriptor}` | soft limit on open files (Linux) |
//! | `procstat.memory.limit` | `Gauge` | `By` | memory limit of its cgroup (Linux; no series when unlimited) |
//! | `procstat.uptime` | `Gauge<f64>` | `s` | seconds since it started |
//! | `procstat.start_time` | `Gauge<f64>` | `s` | start time, seconds since the UNIX epoch |
//!
//! **Per group**, the same figures summed over its processes, labelled `process.match` only
//! (and `cpu.mode`), so that a graph or alert need not sum pids that come and go:
//!
//! | Name | Instrument | Unit | Value |
//! |---|---|---|---|
//! | `procstat.group.process.count` | `Gauge` | `{process}` | processes followed (0 when none match) |
//! | `procstat.group.cpu.time` | `Counter<f64>` | `s` | CPU seconds of the group's processes while followed, per `cpu.mode` |
//! | `procstat.group.cpu.utilization` | `Gauge<f64>` | `1` | sum of `procstat.cpu.utilization` |
//! | `procstat.group.memory.usage` | `Gauge` | `By` | sum of `procstat.memory.usage` |
//! | `procstat.group.memory.virtual` | `Gauge` | `By` | sum of `procstat.memory.virtual` |
//! | `procstat.group.thread.count` | `Gauge` | `{thread}` | sum of `procstat.thread.count` (Linux) |
//! | `procstat.group.open_file_descriptor.count` | `Gauge` | `{file_descriptor}` | sum of `procstat.open_file_descriptor.count`; no series while one process's cannot be read (a partial sum would look like a healthy low count) |
//!
//! The gauges equal the sums of the per-process series at every collection. The CPU time is a
//! counter that never goes down when a process exits: the processes found at install add
//! their whole CPU time (the series starts there, as theirs do), processes found later what
//! they use from then on (so a long-running process found late is not a spike in the rate),
//! and an exited process keeps what it added. `rate()` of it is the group's CPU use across
//! restarts.
//!
//! **Errors.** A matched process, or a file of it, that cannot be read counts in
//! `sonde.procstat.read_errors{process.match, reason}` at every reading that fails, and is
//! logged once per group and reason through `tracing` at warn level, with what to do
//! ([`read_error`]): `fd_denied` (its descriptors cannot be listed: another user's process,
//! and the collector lacks `CAP_SYS_PTRACE`; typical when sonde-agent runs as its own user),
//! `denied` (the process itself cannot be read: `hidepid`, another PID namespace) and
//! `exited` (gone between the listing and the reading). Failures of the collection itself
//! count in `sonde.collector.errors{collector="procstat", reason}` (`pid_file`: missing or not
//! a pid; `install`: a process collector could not be registered; `process_list`: no process
//! could be listed; `panic`).
//!
//! ## Cost
//!
//! A host collection reads about ten small files and calls `statvfs` once per filesystem:
//! 0.2 to 0.4 ms on a small VM, most of it in the kernel generating the files (see
//! `tests/cost.rs`), so well under 0.01 % of a CPU at a 10 s interval. It allocates only for
//! new devices and label strings; the series handles are kept, so recording is a few atomic
//! stores. A procstat collection with name or pattern matchers lists every process (about
//! 35 µs per process on the same VM, two `/proc` files each plus the executable link and
//! command line: 3.5 ms for 90 processes); a pid file costs one read and one process. Put
//! all the matchers in one collector ([`ProcstatCollector::matcher`]) to list the processes
//! once. Each followed process then costs about 30 µs per registry collection
//! (sonde-process).
//!
//! ## Threads
//!
//! [`HostMetrics`] and [`ProcstatMetrics`] are `Send + Sync` and cheap to clone: `collect`
//! can be called from any thread; concurrent calls are serialized (a collect hook skips its
//! reading when another one is in progress rather than waiting).
#![warn(missing_docs)]

/// Implements [`sonde_core::Component`] for a collector handle with `collect()` and a
/// `shared: Arc<crate::shared::Shared<_>>`. A collector reads when the registry is read: `flush` reads now (so
/// the next export sees the values of this moment); `shutdown` stops collecting, on purpose
/// (dropping the handle then logs nothing), and the series keep their last values (`uninstall`
/// removes them too). Idempotent.
macro_rules! collector_component {
    ($handle:ty, $name:literal) => {
        /// The lifecycle every sonde component shares: `flush` reads now, `shutdown` stops
        /// collecting and keeps the series.
        impl sonde_core::Component for $handle {
            fn name(&self) -> &'static str {
                $name
            }

            fn flush(
                &self,
                _timeout: std::time::Duration,
            ) -> Result<(), sonde_core::ComponentError> {
                self.collect();
                Ok(())
            }

            fn shutdown(
                &self,
                _timeout: std::time::Duration,
            ) -> Result<(), sonde_core::ComponentError> {
                self.shared.stop();
                Ok(())
            }
        }
    };
}
pub(crate) use collector_component;

mod cgroup;
mod config;
mod entries;
mod host;
#[cfg(target_os = "linux")]
mod linux;
mod procstat;
// Parts of these are only built from `/proc` readings (CPU ticks, disk operations).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
mod reading;
mod shared;
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
mod source;

pub use cgroup::{CGROUP_LABELS, CgroupCollector, CgroupMetrics, Identity, identify};
pub use config::{CgroupsConfig, HostConfig, ProcstatConfig};
pub use host::{
    DEFAULT_DISKS_EXCLUDE, DEFAULT_FILESYSTEM_TYPES_EXCLUDE, DEFAULT_MOUNTPOINTS_EXCLUDE,
    HostCollector, HostMetrics, MIN_UTILIZATION_WINDOW,
};
pub use procstat::{
    CheckedMatcher, PROCSTAT_LABELS, ProcessMatcher, ProcstatCollector, ProcstatMetrics, read_error,
};

/// `system.cpu.time`: CPU seconds per mode, `Counter<f64>` (Linux).
pub const CPU_TIME: &str = "system.cpu.time";
/// `system.cpu.utilization`: share of CPU time per mode, `Gauge<f64>`, 0 to 1.
pub const CPU_UTILIZATION: &str = "system.cpu.utilization";
/// `system.cpu.logical.count`: logical CPUs online, `Gauge`.
pub const CPU_LOGICAL_COUNT: &str = "system.cpu.logical.count";
/// `system.cpu.load_average.1m`, `Gauge<f64>`.
pub const LOAD_AVERAGE_1M: &str = "system.cpu.load_average.1m";
/// `system.cpu.load_average.5m`, `Gauge<f64>`.
pub const LOAD_AVERAGE_5M: &str = "system.cpu.load_average.5m";
/// `system.cpu.load_average.15m`, `Gauge<f64>`.
pub const LOAD_AVERAGE_15M: &str = "system.cpu.load_average.15m";
/// `system.memory.usage`: bytes per state, `Gauge`.
pub const MEMORY_USAGE: &str = "system.memory.usage";
/// `system.memory.utilization`: share of memory per state, `Gauge<f64>`.
pub const MEMORY_UTILIZATION: &str = "system.memory.utilization";
/// `system.memory.limit`: total memory in bytes, `Gauge`.
pub const MEMORY_LIMIT: &str = "system.memory.limit";
/// `system.memory.linux.available`: `MemAvailable` in bytes, `Gauge` (Linux).
pub const MEMORY_AVAILABLE: &str = "system.memory.linux.available";
/// `system.paging.usage`: swap bytes per state, `Gauge`.
pub const PAGING_USAGE: &str = "system.paging.usage";
/// `system.paging.utilization`: share of swap per state, `Gauge<f64>`.
pub const PAGING_UTILIZATION: &str = "system.paging.utilization";
/// `system.filesystem.usage`: bytes per state, `Gauge`.
pub const FILESYSTEM_USAGE: &str = "system.filesystem.usage";
/// `system.filesystem.utilization`: share of the filesystem per state, `Gauge<f64>`.
pub const FILESYSTEM_UTILIZATION: &str = "system.filesystem.utilization";
/// `system.filesystem.limit`: filesystem size in bytes, `Gauge`.
pub const FILESYSTEM_LIMIT: &str = "system.filesystem.limit";
/// `system.disk.io`: bytes transferred, `Counter`.
pub const DISK_IO: &str = "system.disk.io";
/// `system.disk.operations`: operations completed, `Counter` (Linux).
pub const DISK_OPERATIONS: &str = "system.disk.operations";
/// `system.disk.operation_time`: sum of operation durations in seconds, `Counter<f64>` (Linux).
pub const DISK_OPERATION_TIME: &str = "system.disk.operation_time";
/// `system.disk.io_time`: seconds with IO in progress, `Counter<f64>` (Linux).
pub const DISK_IO_TIME: &str = "system.disk.io_time";
/// `system.network.io`: bytes, `Counter`.
pub const NETWORK_IO: &str = "system.network.io";
/// `system.network.packet.count`: packets, `Counter` (called `system.network.packets` by
/// older conventions and the OpenTelemetry Collector).
pub const NETWORK_PACKETS: &str = "system.network.packet.count";
/// `system.network.errors`: errors, `Counter`.
pub const NETWORK_ERRORS: &str = "system.network.errors";
/// `system.network.packet.dropped`: packets dropped, `Counter` (Linux; formerly
/// `system.network.dropped`).
pub const NETWORK_DROPPED: &str = "system.network.packet.dropped";
/// `system.uptime`: seconds since boot, `Gauge<f64>`.
pub const UPTIME: &str = "system.uptime";
/// `system.process.count`: processes, `Gauge` (Linux).
pub const PROCESS_COUNT: &str = "system.process.count";
/// `system.process.created`: processes created since install, `Counter` (Linux).
pub const PROCESS_CREATED: &str = "system.process.created";
/// `system.pressure.waiting`: seconds in which some tasks were stalled waiting for a resource
/// (the `some` line of `/proc/pressure/<resource>`), `Counter<f64>`, label
/// `system.pressure.resource` (`cpu`, `memory`, `io`). Linux with PSI. No OpenTelemetry
/// convention exists; node_exporter's `node_pressure_*_waiting_seconds_total`.
pub const PRESSURE_WAITING: &str = "system.pressure.waiting";
/// `system.pressure.stalled`: seconds in which all non-idle tasks were stalled at once (the
/// `full` line), `Counter<f64>`, label `system.pressure.resource`.
pub const PRESSURE_STALLED: &str = "system.pressure.stalled";
/// The label of the pressure families: `cpu`, `memory` or `io`.
pub const PRESSURE_RESOURCE_LABEL: &str = "system.pressure.resource";
/// `container.cpu.time`: CPU seconds of a cgroup, `Counter<f64>`.
pub const CONTAINER_CPU_TIME: &str = "container.cpu.time";
/// `container.cpu.throttled.periods`: periods in which a cgroup hit its CPU limit, `Counter`.
/// No OpenTelemetry convention; cAdvisor's `container_cpu_cfs_throttled_periods_total`.
pub const CONTAINER_CPU_THROTTLED_PERIODS: &str = "container.cpu.throttled.periods";
/// `container.cpu.throttled.time`: seconds a cgroup was held back by its CPU limit,
/// `Counter<f64>`. cAdvisor's `container_cpu_cfs_throttled_seconds_total`.
pub const CONTAINER_CPU_THROTTLED_TIME: &str = "container.cpu.throttled.time";
/// `container.memory.usage`: memory a cgroup uses, page cache included, `Gauge`.
pub const CONTAINER_MEMORY_USAGE: &str = "container.memory.usage";
/// `container.memory.limit`: a cgroup's memory limit (no series without one), `Gauge`.
pub const CONTAINER_MEMORY_LIMIT: &str = "container.memory.limit";
/// `container.memory.working_set`: usage minus inactive file cache, `Gauge`.
pub const CONTAINER_MEMORY_WORKING_SET: &str = "container.memory.working_set";
/// `container.memory.oom_kills`: processes killed for the cgroup's memory limit, `Counter`.
pub const CONTAINER_MEMORY_OOM_KILLS: &str = "container.memory.oom_kills";
/// `container.disk.io`: bytes a cgroup read and wrote, `Counter`, label `disk.io.direction`.
pub const CONTAINER_DISK_IO: &str = "container.disk.io";
/// `container.disk.operations`: block operations of a cgroup, `Counter`, `disk.io.direction`.
pub const CONTAINER_DISK_OPERATIONS: &str = "container.disk.operations";
/// `container.pressure.waiting`: a cgroup's `some` stall seconds (v2), `Counter<f64>`, label
/// `system.pressure.resource`.
pub const CONTAINER_PRESSURE_WAITING: &str = "container.pressure.waiting";
/// `container.pressure.stalled`: a cgroup's `full` stall seconds (v2), `Counter<f64>`.
pub const CONTAINER_PRESSURE_STALLED: &str = "container.pressure.stalled";
/// The cgroup's path from the cgroup root (`/system.slice/docker-<id>.scope`).
pub const CGROUP_PATH_LABEL: &str = "cgroup.path";
/// The container id a cgroup path names (empty when none).
pub const CONTAINER_ID_LABEL: &str = "container.id";
/// The container runtime a cgroup path names (`docker`, `containerd`, `cri-o`, `podman`).
pub const CONTAINER_RUNTIME_LABEL: &str = "container.runtime";
/// The Kubernetes pod UID a cgroup path names.
pub const K8S_POD_UID_LABEL: &str = "k8s.pod.uid";
/// `procstat`: the prefix of procstat's per-process families, in place of sonde-process's
/// `process` (`procstat.cpu.time`, `procstat.memory.usage`...).
pub const PROCSTAT_PREFIX: &str = "procstat";
/// `procstat.start_time`: start time of a procstat process, seconds since the UNIX epoch,
/// `Gauge<f64>`.
pub const PROCSTAT_START_TIME: &str = "procstat.start_time";
/// `procstat.group.process.count`: processes followed per group (matcher), `Gauge`.
pub const GROUP_PROCESS_COUNT: &str = "procstat.group.process.count";
/// `procstat.group.cpu.time`: CPU seconds of a group's processes, `Counter<f64>`, label
/// `cpu.mode` (Linux).
pub const GROUP_CPU_TIME: &str = "procstat.group.cpu.time";
/// `procstat.group.cpu.utilization`: sum of the group's `procstat.cpu.utilization`,
/// `Gauge<f64>`, label `cpu.mode` (Linux).
pub const GROUP_CPU_UTILIZATION: &str = "procstat.group.cpu.utilization";
/// `procstat.group.memory.usage`: sum of the group's resident set sizes, `Gauge`.
pub const GROUP_MEMORY_USAGE: &str = "procstat.group.memory.usage";
/// `procstat.group.memory.virtual`: sum of the group's virtual memory sizes, `Gauge`.
pub const GROUP_MEMORY_VIRTUAL: &str = "procstat.group.memory.virtual";
/// `procstat.group.thread.count`: the group's threads, `Gauge` (Linux).
pub const GROUP_THREAD_COUNT: &str = "procstat.group.thread.count";
/// `procstat.group.open_file_descriptor.count`: the group's open file descriptors, `Gauge`;
/// absent while those of one of its processes cannot be read.
pub const GROUP_OPEN_FILE_DESCRIPTORS: &str = "procstat.group.open_file_descriptor.count";
/// `sonde.procstat.read_errors`: matched processes or files of theirs that could not be read,
/// `Counter`, labels `process.match`, `reason` (see [`read_error`]).
pub const PROCSTAT_READ_ERRORS: &str = "sonde.procstat.read_errors";
/// `sonde.collector.errors`: readings that failed, `Counter`, labels `collector`, `reason`.
pub const COLLECTOR_ERRORS: &str = "sonde.collector.errors";

/// `cpu.mode`.
pub const CPU_MODE_LABEL: &str = "cpu.mode";
/// The [`CPU_MODE_LABEL`] values of [`CPU_TIME`] and [`CPU_UTILIZATION`], in this order (the
/// host's modes; a process has its own, `sonde_process::CPU_MODES`).
pub const SYSTEM_CPU_MODES: [&str; 7] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "interrupt",
    "steal",
];
/// `cpu.logical_number` (with [`HostCollector::per_cpu`]).
pub const CPU_LOGICAL_NUMBER_LABEL: &str = "cpu.logical_number";
/// `system.memory.state`.
pub const MEMORY_STATE_LABEL: &str = "system.memory.state";
/// `system.paging.state`.
pub const PAGING_STATE_LABEL: &str = "system.paging.state";
/// `system.device`: block device (`vda`) or filesystem source (`/dev/vda1`).
pub const DEVICE_LABEL: &str = "system.device";
/// `system.filesystem.mountpoint`.
pub const FILESYSTEM_MOUNTPOINT_LABEL: &str = "system.filesystem.mountpoint";
/// `system.filesystem.type`.
pub const FILESYSTEM_TYPE_LABEL: &str = "system.filesystem.type";
/// `system.filesystem.mode`: `rw` or `ro`.
pub const FILESYSTEM_MODE_LABEL: &str = "system.filesystem.mode";
/// `system.filesystem.state`.
pub const FILESYSTEM_STATE_LABEL: &str = "system.filesystem.state";
/// `disk.io.direction`: `read` or `write`.
pub const DISK_IO_DIRECTION_LABEL: &str = "disk.io.direction";
/// `network.interface.name`.
pub const NETWORK_INTERFACE_LABEL: &str = "network.interface.name";
/// `network.io.direction`: `receive` or `transmit`.
pub const NETWORK_IO_DIRECTION_LABEL: &str = "network.io.direction";
/// `process.match`: the matcher of a procstat process, which names its group.
pub const MATCH_LABEL: &str = "process.match";
/// `collector` on `sonde.collector.errors`.
pub const COLLECTOR_LABEL: &str = "collector";
/// `reason` on `sonde.collector.errors`.
pub const REASON_LABEL: &str = "reason";

/// What can go wrong when installing a collector. Messages say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A family could not be registered: usually another definition under the same name.
    #[error(
        "cannot register the host metric families: {0}; another definition of the same metric exists in this registry (install each collector once per registry, or use a separate registry)"
    )]
    Register(#[from] sonde_core::Error),
    /// A filter or pattern is not a valid regular expression.
    #[error("{what}: {pattern:?} is not a valid regular expression: {source}")]
    InvalidRegex {
        /// Which setting.
        what: &'static str,
        /// The expression given.
        pattern: String,
        /// What the regex parser said.
        #[source]
        source: Box<regex::Error>,
    },
    /// The operating system's information could not be opened at all.
    #[error(
        "cannot read system information: {message}; host metrics need a platform sysinfo supports (Linux, macOS, Windows, FreeBSD)"
    )]
    System {
        /// What sysinfo reported.
        message: String,
    },
    /// The cgroup root is not a cgroup filesystem.
    #[error(
        "{} is not a cgroup filesystem (no cgroup.controllers, and no cpuacct, memory or unified directory); mount the host's /sys/fs/cgroup there",
        root.display()
    )]
    NotCgroupFs {
        /// The root given.
        root: std::path::PathBuf,
    },
}
