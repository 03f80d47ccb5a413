//! # sonde-process
//!
//! Process metrics for sonde, by the OpenTelemetry semantic conventions: CPU time and
//! utilization, resident and virtual memory, threads, open file descriptors and uptime, of the
//! running service ([`ProcessCollector::current`]) or of any process by pid
//! ([`ProcessCollector::for_pid`]).
//!
//! Nothing runs on a timer: [`install`](ProcessCollector::install) registers the families and
//! a collect hook ([`Registry::register_collector`]), and every collection of the registry (a
//! snapshot, a scrape, a delta reader's collect) first reads the process once and updates them.
//! The hook lasts as long as the returned [`ProcessMetrics`] (or a clone of it): dropping the
//! last one removes it, and the series keep their last values.
//!
//! ```
//! use sonde_core::Registry;
//! use sonde_process::ProcessCollector;
//!
//! let registry = Registry::new(); // or leave `.registry(..)` out for `Registry::global()`
//! let process = ProcessCollector::current().registry(&registry).install()?;
//!
//! let snapshot = registry.snapshot(); // reads the process first
//! let rss = snapshot.point("process.memory.usage", &[]).and_then(|p| p.number()).unwrap();
//! assert!(rss.as_f64() > 0.0);
//! # #[cfg(target_os = "linux")]
//! assert!(snapshot.point("process.cpu.time", &[("cpu.mode", "user")]).is_some());
//! assert!(process.is_alive());
//!
//! // Another process, labelled so that several processes can share the families (all the
//! // collectors of one registry need the same label names):
//! # #[cfg(unix)] {
//! let agent = Registry::new();
//! let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
//! let sleep = ProcessCollector::for_pid(child.id())
//!     .registry(&agent)
//!     .pid_label()
//!     .executable_name_label()
//!     .install()?;
//! let labels: Vec<(&str, &str)> = sleep.labels().iter().map(|(n, v)| (&**n, v.as_str())).collect();
//! assert_eq!(labels[0], ("process.pid", child.id().to_string().as_str()));
//! assert!(agent.snapshot().point("process.memory.usage", &labels).is_some());
//! child.kill().unwrap();
//! child.wait().unwrap();
//! assert!(!sleep.collect()); // exited: its series keep their last values...
//! sleep.uninstall(); // ...until uninstalled
//! assert!(agent.snapshot().point("process.memory.usage", &labels).is_none());
//! # }
//! # Ok::<(), sonde_process::Error>(())
//! ```
//!
//! ## Metrics
//!
//! | Name | Instrument | Unit | Labels | Value |
//! |---|---|---|---|---|
//! | `process.cpu.time` | `Counter<f64>` | `s` | `cpu.mode` = `user`, `system` | CPU seconds since the process started |
//! | `process.cpu.utilization` | `Gauge<f64>` | `1` | `cpu.mode` = `user`, `system` | see below, 0 to 1 |
//! | `process.memory.usage` | `Gauge` (`i64`) | `By` | | resident set size |
//! | `process.memory.virtual` | `Gauge` (`i64`) | `By` | | virtual memory size |
//! | `process.thread.count` | `Gauge` (`i64`) | `{thread}` | | threads (Linux only) |
//! | `process.open_file_descriptor.count` | `Gauge` (`i64`) | `{file_descriptor}` | | open file descriptors |
//! | `process.uptime` | `Gauge<f64>` | `s` | | seconds since the process started |
//! | `process.open_file_descriptor.limit` | `Gauge` (`i64`) | `{file_descriptor}` | | soft limit on open files, `ulimit -n` (Linux; no series when unlimited) |
//! | `process.memory.limit` | `Gauge` (`i64`) | `By` | | memory limit of the process's cgroup (Linux; no series when unlimited) |
//!
//! Every family also carries the collector's extra labels ([`label`](ProcessCollector::label),
//! [`pid_label`](ProcessCollector::pid_label),
//! [`executable_name_label`](ProcessCollector::executable_name_label)), after `cpu.mode`.
//! [`name_prefix`](ProcessCollector::name_prefix) replaces `process` in every name (procstat
//! uses `procstat.cpu.time`...). Prometheus renders the two limits as
//! `process_open_file_descriptor_limit` and `process_memory_limit_bytes`: an alert on
//! `process_memory_usage_bytes / process_memory_limit_bytes` or
//! `process_open_file_descriptor_count_value / process_open_file_descriptor_limit` only has
//! operands where there is a limit.
//!
//! ### Prometheus-conventional names
//!
//! [`prometheus_names(true)`](ProcessCollector::prometheus_names) registers, **in addition
//! to** the names above (sonde's dashboards and alerts use those), the families of the
//! Prometheus client libraries' process collectors, with their meanings, for dashboards and
//! alerts written against client_golang or prometheus_client ([`prometheus_names`] lists the
//! constants):
//!
//! | Name | Instrument | Value |
//! |---|---|---|
//! | `process_cpu_seconds_total` | `Counter<f64>` | user plus system CPU seconds |
//! | `process_resident_memory_bytes` | `Gauge` | resident set size |
//! | `process_virtual_memory_bytes` | `Gauge` | virtual memory size |
//! | `process_open_fds` | `Gauge` | open file descriptors |
//! | `process_max_fds` | `Gauge` | soft limit on open files (Linux) |
//! | `process_start_time_seconds` | `Gauge<f64>` | start time, seconds since the UNIX epoch (boot time plus the start time in clock ticks, as client_golang computes it); registered as `process.start_time` (unit `s`), the family sonde-instrument's `Lifecycle` registers too |
//! | `process_threads` | `Gauge` | threads (Linux) |
//!
//! They carry the collector's extra labels, and over OTLP keep these names as they are
//! (`process.start_time` for the start time).
//!
//! - **CPU time** is a monotonic counter of the process's own user and system time (children
//!   not included). The operating system gives an absolute total; at each reading the
//!   collector adds the difference between that total and the counter (never a negative
//!   amount), so the counter equals the process's CPU time. On Linux it comes from
//!   `/proc/<pid>/stat` (`utime`, `stime`, in clock ticks of `1/sysconf(_SC_CLK_TCK)` s,
//!   10 ms in practice, the rate read from the kernel's auxiliary vector). Elsewhere sysinfo
//!   only gives their sum: the series then carry it without a `cpu.mode` label (the
//!   conventions allow either all points with a mode or none).
//! - **CPU utilization** follows the conventions: the difference in `process.cpu.time` since
//!   the last reading, divided by the elapsed time and by the number of CPUs available to the
//!   process, per mode, clamped to 0..=1 (1 means every available CPU was busy; the modes add
//!   up to at most about 1). The CPUs available are [`std::thread::available_parallelism`]
//!   when the collector is installed (it honours CPU affinity and cgroup quotas of *this*
//!   process; for another pid it is an approximation). At install the first value is the
//!   average since the process started. "The last reading" is the last one by any consumer
//!   of the registry, and readings less than [`MIN_UTILIZATION_WINDOW`] apart leave it as it
//!   is (the window keeps growing until the next reading), since clock-tick resolution would
//!   make shorter windows noisy.
//! - **Memory** is a gauge, not the up-down counter of the conventions: the value is sampled,
//!   not accumulated from changes, and a gauge keeps carrying the value itself to delta
//!   readers (CloudWatch, delta OTLP), where an up-down counter would carry the change since
//!   the previous export. On Linux from `/proc/<pid>/stat` (`rss` times the page size,
//!   `vsize`: the counters behind `VmRSS` and `VmSize`), elsewhere from sysinfo.
//! - **Threads** come from `/proc/<pid>/stat` (`num_threads`); sysinfo has no thread count on
//!   other platforms, so the family is not registered there.
//! - **Open file descriptors** count the entries of `/proc/<pid>/fd` on Linux (for the current
//!   process, not counting the one used to list them), elsewhere what sysinfo reports. When
//!   they cannot be read (another user's process without `CAP_SYS_PTRACE`), the process has no
//!   series in the family, and [`Reading::open_fds_error`] says why. Newer conventions name
//!   this metric `process.unix.file_descriptor.count`.
//! - **Limits** (Linux): the soft "Max open files" of `/proc/<pid>/limits`, and the lowest
//!   memory limit of the process's cgroup and its ancestors (cgroup v2 `memory.max`, or v1
//!   `memory.limit_in_bytes` when the memory controller is on v1, as on hybrid systems), the
//!   cgroup resolved at install from `/proc/<pid>/cgroup` and the cgroup mounts this process
//!   sees. Both are read at every collection. Unlimited, or unreadable, means no series; a
//!   collector without any extra label cannot remove the only series of an unlabelled family,
//!   so there a limit lifted after install keeps its last value.
//! - **Uptime** is a `f64` gauge of seconds since the process started (on Linux from its start
//!   time in clock ticks and `/proc/uptime`, so to about 10 ms; elsewhere to the second).
//!
//! ## When the process exits
//!
//! Install fails with [`Error::NoSuchProcess`] if the process cannot be read. Once it has
//! exited (or the pid now belongs to another process, detected by its start time; a zombie
//! counts as exited), its series keep their last values, [`ProcessMetrics::is_alive`] turns
//! false and the hook stops reading anything. Call [`ProcessMetrics::uninstall`] to drop its
//! series; to follow a restarted process, install a new collector for the new pid.
//!
//! ## Cost
//!
//! Per collection, on Linux: one read of `/proc/<pid>/stat` (into a reused buffer), one of
//! `/proc/uptime` and the listing of `/proc/<pid>/fd`, about 30 µs in all; the limits add
//! `/proc/<pid>/limits` and one small file per cgroup level (two to five in practice), about
//! as much again. sysinfo is not
//! involved there: its public API lacks the CPU split and the thread count, so `stat` has to
//! be read anyway, and it carries the memory counters too, while a sysinfo refresh of the
//! process alone (it reads `status`, `stat`, `statm` and `/proc/uptime`) costs about 50 µs.
//! sysinfo reads the executable name at install. On other platforms a reused
//! `sysinfo::System` refreshes just that pid and just its memory and CPU time. The hook never
//! blocks on another collection that is already reading the same process (it skips it: the
//! values are being refreshed anyway) and never panics: a poisoned lock is recovered, and a
//! panic inside the reading is caught and treated like an exit of the process (the collector
//! stops reading it; [`ProcessMetrics::is_alive`] turns false).
//!
//! Several collectors can share a registry as long as they use the same label names and
//! distinct label values (typically [`pid_label`](ProcessCollector::pid_label)); two
//! collectors with identical labels would write the same series.
#![warn(missing_docs)]

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
#[doc(hidden)]
pub mod procfs;
mod sample;

use std::borrow::Cow;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sonde_core::{Counter, Family, FamilyBuilder, Gauge, Instrument, Registry, Unit};

pub use crate::sample::CPU_MODES;
use crate::sample::{CpuTimes, Sample, Sampler};

/// `process.cpu.time`: CPU seconds, `Counter<f64>`, label `cpu.mode` (Linux).
pub const CPU_TIME: &str = "process.cpu.time";
/// `process.cpu.utilization`: share of the available CPUs, `Gauge<f64>` (unit `1`), label
/// `cpu.mode` (Linux).
pub const CPU_UTILIZATION: &str = "process.cpu.utilization";
/// `process.memory.usage`: resident set size in bytes, `Gauge` (`i64`).
pub const MEMORY_USAGE: &str = "process.memory.usage";
/// `process.memory.virtual`: virtual memory size in bytes, `Gauge` (`i64`).
pub const MEMORY_VIRTUAL: &str = "process.memory.virtual";
/// `process.thread.count`: threads, `Gauge` (`i64`), Linux only.
pub const THREAD_COUNT: &str = "process.thread.count";
/// `process.open_file_descriptor.count`: open file descriptors, `Gauge` (`i64`).
pub const OPEN_FILE_DESCRIPTORS: &str = "process.open_file_descriptor.count";
/// `process.uptime`: seconds since the process started, `Gauge<f64>`.
pub const UPTIME: &str = "process.uptime";
/// `process.open_file_descriptor.limit`: the soft limit on open files (`ulimit -n`), `Gauge`
/// (`i64`); no series when unlimited or unreadable (Linux only).
pub const OPEN_FILE_DESCRIPTOR_LIMIT: &str = "process.open_file_descriptor.limit";
/// `process.memory.limit`: the memory limit of the process's cgroup in bytes, `Gauge` (`i64`);
/// no series when unlimited or unreadable (Linux only).
pub const MEMORY_LIMIT: &str = "process.memory.limit";

/// The family names [`ProcessCollector::prometheus_names`] adds, with the meanings of the
/// Prometheus client libraries' process collectors (client_golang, prometheus_client).
pub mod prometheus_names {
    /// `process_cpu_seconds_total`: user plus system CPU seconds, `Counter<f64>`.
    pub const CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
    /// `process_resident_memory_bytes`: resident set size, `Gauge` (`i64`).
    pub const RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
    /// `process_virtual_memory_bytes`: virtual memory size, `Gauge` (`i64`).
    pub const VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
    /// `process_open_fds`: open file descriptors, `Gauge` (`i64`).
    pub const OPEN_FDS: &str = "process_open_fds";
    /// `process_max_fds`: the soft limit on open files, `Gauge` (`i64`).
    pub const MAX_FDS: &str = "process_max_fds";
    /// `process.start_time`: start time, seconds since the UNIX epoch, `Gauge<f64>`, unit `s`,
    /// which Prometheus renders `process_start_time_seconds`. Registered under this name so
    /// that it is one family with the one sonde-instrument's `Lifecycle` registers (same
    /// meaning): two families rendering the same Prometheus name would break the scrape.
    pub const START_TIME: &str = "process.start_time";
    /// `process_threads`: threads, `Gauge` (`i64`), Linux only.
    pub const THREADS: &str = "process_threads";
}

/// The label of the CPU mode (`user`, `system`) on the CPU families.
pub const CPU_MODE_LABEL: &str = "cpu.mode";
/// The label [`ProcessCollector::pid_label`] adds.
pub const PID_LABEL: &str = "process.pid";
/// The label [`ProcessCollector::executable_name_label`] adds.
pub const EXECUTABLE_NAME_LABEL: &str = "process.executable.name";

/// Readings closer together than this leave `process.cpu.utilization` unchanged: CPU times
/// have clock-tick resolution (10 ms on Linux), which makes shorter windows noisy.
pub const MIN_UTILIZATION_WINDOW: Duration = Duration::from_millis(100);

/// What can go wrong when installing a collector. Messages say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process could not be read when installing.
    #[error(
        "no process with pid {pid} can be read: it has exited or never existed, or this user cannot see it (/proc mounted with hidepid, another PID namespace); check the pid (or the pid file it came from) and install the collector while the process runs"
    )]
    NoSuchProcess {
        /// The pid asked for.
        pid: u32,
    },
    /// The operating system's process information could not be opened at all.
    #[error(
        "cannot read process information from the operating system: {message}; process metrics need a platform sysinfo supports (Linux, macOS, Windows, FreeBSD) and, on Linux, a mounted /proc"
    )]
    System {
        /// What sysinfo reported.
        message: String,
    },
    /// A family could not be registered: usually another definition under the same name, such
    /// as a collector installed earlier in the same registry with other label names.
    #[error(
        "cannot register the process metric families: {0}; collectors sharing a registry need the same label names (and distinct label values, e.g. .pid_label())"
    )]
    Register(#[from] sonde_core::Error),
}

#[derive(Debug, Clone)]
enum LabelValue {
    Fixed(Cow<'static, str>),
    Pid,
    ExecutableName,
}

/// Describes what process to measure and where to register its metrics; finish with
/// [`install`](Self::install).
#[derive(Debug, Clone)]
#[must_use = "call .install() to start collecting"]
pub struct ProcessCollector {
    pid: u32,
    registry: Option<Registry>,
    labels: Vec<(Cow<'static, str>, LabelValue)>,
    name_prefix: Cow<'static, str>,
    on_collect: bool,
    prometheus_names: bool,
}

impl ProcessCollector {
    /// The running process (the service itself).
    pub fn current() -> Self {
        Self::for_pid(std::process::id())
    }

    /// Any process, by pid (reading another user's processes may need privileges; on Linux
    /// everything but the file descriptor count is readable by anyone unless `/proc` is
    /// mounted with `hidepid`).
    pub fn for_pid(pid: u32) -> Self {
        ProcessCollector {
            pid,
            registry: None,
            labels: Vec::new(),
            name_prefix: Cow::Borrowed("process"),
            on_collect: true,
            prometheus_names: false,
        }
    }

    /// The pid this collector will read.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Registers into `registry` instead of [`Registry::global`].
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Adds a label with a fixed value to every family (after `cpu.mode`, in the order the
    /// labels are added), e.g. `.label("process.owner", "web")`.
    pub fn label(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.labels
            .push((name.into(), LabelValue::Fixed(value.into())));
        self
    }

    /// Adds `process.pid` with the pid as value.
    pub fn pid_label(mut self) -> Self {
        self.labels.push((PID_LABEL.into(), LabelValue::Pid));
        self
    }

    /// Adds `process.executable.name`, read once at install: the file name of the process's
    /// executable, or, when that link cannot be read (another user's process), the name the
    /// OS reports (on Linux the command name, at most 15 bytes).
    pub fn executable_name_label(mut self) -> Self {
        self.labels
            .push((EXECUTABLE_NAME_LABEL.into(), LabelValue::ExecutableName));
        self
    }

    sonde_core::builder_setters! {
        /// Names the families `<prefix>.cpu.time`, `<prefix>.memory.usage`... instead of
        /// `process.*` (sonde-host's procstat uses `procstat`, so that the processes it follows do
        /// not mix with the service's own `process.*` series). Must be a valid metric name start.
        name_prefix: impl Into<Cow<'static, str>>;
        /// Whether every collection of the registry reads the process first, from a collect hook
        /// (the default). Off, nothing reads it but [`ProcessMetrics::collect`]: for an owner
        /// that reads several processes itself (sonde-host's procstat, to sum them per group).
        on_collect: bool;
        /// Also registers the names the Prometheus client libraries' process collectors use
        /// (client_golang, prometheus_client), with their meanings, in addition to the
        /// OpenTelemetry names (off by default): `process_cpu_seconds_total` (user plus system),
        /// `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
        /// `process_max_fds` (the soft limit, Linux), `process_start_time_seconds` and
        /// `process_threads` (Linux). For dashboards and alerts written against those
        /// collectors. The names are fixed ([`name_prefix`](Self::name_prefix) does not apply)
        /// and carry the collector's extra labels.
        prometheus_names: bool;
    }

    /// Reads the process once, registers the families (or reuses them if they exist with the
    /// same definition), sets their values and adds a collect hook that updates them at every
    /// collection of the registry (unless [`on_collect(false)`](Self::on_collect)).
    ///
    /// The collection runs for as long as the returned handle (or a clone of it) lives:
    /// dropping the last one stops it (the series keep their last values; call
    /// [`ProcessMetrics::uninstall`] to remove them too) and logs a line saying so when it was
    /// collecting on the registry's collections.
    pub fn install(self) -> Result<ProcessMetrics, Error> {
        let pid = self.pid;
        let registry = self.registry.unwrap_or_else(|| Registry::global().clone());
        let mut sampler = Sampler::new(pid).map_err(|e| Error::System {
            message: e.to_string(),
        })?;
        let first = sampler.sample().ok_or(Error::NoSuchProcess { pid })?;
        let mut labels = Vec::with_capacity(self.labels.len());
        for (name, value) in self.labels {
            let value = match value {
                LabelValue::Fixed(v) => v.into_owned(),
                LabelValue::Pid => pid.to_string(),
                LabelValue::ExecutableName => sampler
                    .executable_name()
                    .ok_or(Error::NoSuchProcess { pid })?,
            };
            labels.push((name, value));
        }
        let instruments = Instruments::register(
            &registry,
            &self.name_prefix,
            self.prometheus_names,
            &labels,
            &first,
        )?;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        let mut state = State {
            sampler,
            instruments,
            identity: first.identity,
            alive: true,
            cpus,
            prev_cpu: first.cpu,
            prev_at: Instant::now(),
            utilization: [0.0; 2],
            last: Reading::default(),
        };
        state.instruments.record(&first);
        // The first utilization: the average since the process started.
        if first.uptime >= MIN_UTILIZATION_WINDOW.as_secs_f64() {
            state.set_utilization(None, &first.cpu, first.uptime);
        }
        state.last = Reading::new(&first, state.utilization);
        let shared = Arc::new(Shared {
            pid,
            labels,
            installed: AtomicBool::new(true),
            alive: AtomicBool::new(true),
            state: Mutex::new(Some(state)),
        });
        let hook = self.on_collect.then(|| {
            let hook = shared.clone();
            registry.register_collector(move || {
                hook.collect(false);
            })
        });
        Ok(ProcessMetrics {
            _running: Arc::new(Running {
                shared: shared.clone(),
                hook,
            }),
            shared,
        })
    }
}

/// An installed collector. Cheap to clone; the collection runs until the last clone is
/// dropped (or [`uninstall`](Self::uninstall) is called).
#[derive(Clone)]
#[must_use = "dropping the handle stops the collection: keep it (`let _process = ...`) for as long as it should run"]
pub struct ProcessMetrics {
    shared: Arc<Shared>,
    _running: Arc<Running>,
}

/// Stops the collector when the last handle goes.
struct Running {
    shared: Arc<Shared>,
    /// The registry's collect hook, removed with this.
    hook: Option<sonde_core::CollectorGuard>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.hook.is_some() && self.shared.installed.load(Ordering::Relaxed) {
            sonde_core::diag::info(format_args!(
                "process metrics of pid {}: stopping because the handle was dropped (keep it in a variable, `let _process = ...`, for as long as they should be collected)",
                self.shared.pid
            ));
        }
        self.shared.installed.store(false, Ordering::Relaxed);
    }
}

impl fmt::Debug for ProcessMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessMetrics")
            .field("pid", &self.shared.pid)
            .field("labels", &self.shared.labels)
            .field("installed", &self.is_installed())
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl ProcessMetrics {
    /// The pid being measured.
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// The extra labels and their values (pid and executable name resolved).
    pub fn labels(&self) -> &[(Cow<'static, str>, String)] {
        &self.shared.labels
    }

    /// Whether the process was still running at the last reading (see the crate docs: once
    /// it has exited, the series keep their last values and nothing is read any more).
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Relaxed)
    }

    /// Whether the collector still updates its families ([`uninstall`](Self::uninstall) has
    /// not been called).
    pub fn is_installed(&self) -> bool {
        self.shared.installed.load(Ordering::Relaxed)
    }

    /// Reads the process now and updates the families, as every collection of the registry
    /// does; returns whether the process is still running. Waits for a reading in progress.
    pub fn collect(&self) -> bool {
        self.shared.collect(true)
    }

    /// The values of the last reading, as the series carry them; `None` once uninstalled.
    /// After the process has exited, those of the last reading while it ran.
    pub fn reading(&self) -> Option<Reading> {
        lock(&self.shared.state).as_ref().map(|s| s.last)
    }

    /// Stops reading the process and removes its series from the families (a collector
    /// without any extra label cannot remove the series of unlabelled families: they keep
    /// their last values). The registry's collect hook goes with the last handle.
    /// Idempotent.
    pub fn uninstall(&self) {
        self.shared.uninstall();
    }
}

/// A collector reads when the registry is read: `flush` reads now (so the next export sees
/// the values of this moment); `shutdown` stops collecting, on purpose (dropping the handle then
/// logs nothing), and the series keep their last values (`uninstall` removes them too).
/// Idempotent.
impl sonde_core::Component for ProcessMetrics {
    fn name(&self) -> &'static str {
        "process"
    }

    fn flush(&self, _timeout: std::time::Duration) -> Result<(), sonde_core::ComponentError> {
        let _ = self.collect();
        Ok(())
    }

    fn shutdown(&self, _timeout: std::time::Duration) -> Result<(), sonde_core::ComponentError> {
        self.shared.installed.store(false, Ordering::Relaxed);
        Ok(())
    }
}

struct Shared {
    pid: u32,
    labels: Vec<(Cow<'static, str>, String)>,
    installed: AtomicBool,
    alive: AtomicBool,
    state: Mutex<Option<State>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent at every step (plain numbers), so a panic that poisoned the
    // lock leaves nothing to repair.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn uninstall(&self) {
        self.installed.store(false, Ordering::Relaxed);
        let state = lock(&self.state).take();
        if let Some(state) = state {
            state.instruments.remove_series();
        }
    }

    /// One reading. From the hook (`wait == false`), a reading already in progress on another
    /// thread is not waited for.
    fn collect(&self, wait: bool) -> bool {
        if !self.installed.load(Ordering::Relaxed) || !self.alive.load(Ordering::Relaxed) {
            return false;
        }
        let Some(mut guard) = sonde_core::collection_lock(&self.state, wait) else {
            return true;
        };
        let Some(state) = guard.as_mut() else {
            return false;
        };
        let alive = catch_unwind(AssertUnwindSafe(|| state.update())).unwrap_or(false);
        if !alive {
            state.alive = false;
            self.alive.store(false, Ordering::Relaxed);
        }
        alive
    }
}

struct State {
    sampler: Sampler,
    instruments: Instruments,
    identity: u64,
    alive: bool,
    cpus: f64,
    prev_cpu: CpuTimes,
    prev_at: Instant,
    /// The values of `process.cpu.utilization`, per mode.
    utilization: [f64; 2],
    last: Reading,
}

/// The values of one reading of a process ([`ProcessMetrics::reading`]), as its series carry
/// them: for an owner that sums several processes (sonde-host's procstat groups).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Reading {
    cpu_time: [f64; 2],
    cpu_utilization: [f64; 2],
    cpu_len: usize,
    resident_bytes: u64,
    virtual_bytes: u64,
    threads: Option<u64>,
    open_fds: Option<u64>,
    open_fds_error: Option<std::io::ErrorKind>,
    open_fds_limit: Option<u64>,
    memory_limit: Option<u64>,
    uptime: f64,
    start_time: f64,
}

impl Reading {
    fn new(s: &Sample, utilization: [f64; 2]) -> Self {
        let secs = s.cpu.secs();
        let mut cpu_time = [0.0; 2];
        cpu_time[..secs.len()].copy_from_slice(secs);
        Reading {
            cpu_time,
            cpu_utilization: utilization,
            cpu_len: secs.len(),
            resident_bytes: s.resident_bytes,
            virtual_bytes: s.virtual_bytes,
            threads: s.threads,
            open_fds: s.open_fds,
            open_fds_error: s.open_fds_error,
            open_fds_limit: s.open_fds_limit,
            memory_limit: s.memory_limit,
            uptime: s.uptime,
            start_time: s.start_time,
        }
    }

    /// CPU seconds since the process started, per [`CPU_MODES`] entry (one total where
    /// `CPU_MODES` is empty).
    pub fn cpu_time(&self) -> &[f64] {
        &self.cpu_time[..self.cpu_len]
    }

    /// `process.cpu.utilization`, in the same order as [`cpu_time`](Self::cpu_time).
    pub fn cpu_utilization(&self) -> &[f64] {
        &self.cpu_utilization[..self.cpu_len]
    }

    /// Resident set size, bytes.
    pub fn resident_bytes(&self) -> u64 {
        self.resident_bytes
    }

    /// Virtual memory size, bytes.
    pub fn virtual_bytes(&self) -> u64 {
        self.virtual_bytes
    }

    /// Threads (Linux only).
    pub fn threads(&self) -> Option<u64> {
        self.threads
    }

    /// Open file descriptors, if they could be read.
    pub fn open_fds(&self) -> Option<u64> {
        self.open_fds
    }

    /// Why [`open_fds`](Self::open_fds) is `None`, when the platform said: on Linux
    /// [`PermissionDenied`](std::io::ErrorKind::PermissionDenied) when `/proc/<pid>/fd` of
    /// another user's process cannot be listed without `CAP_SYS_PTRACE`.
    pub fn open_fds_error(&self) -> Option<std::io::ErrorKind> {
        self.open_fds_error
    }

    /// The soft limit on open files (`None`: unlimited, or not known on this platform).
    pub fn open_fds_limit(&self) -> Option<u64> {
        self.open_fds_limit
    }

    /// The memory limit of the process's cgroup, bytes (`None`: unlimited, unreadable, or not
    /// known on this platform).
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    /// Seconds since the process started.
    pub fn uptime(&self) -> f64 {
        self.uptime
    }

    /// When the process started, seconds since the UNIX epoch.
    pub fn start_time(&self) -> f64 {
        self.start_time
    }
}

impl State {
    /// Reads the process and records; false once it has exited.
    fn update(&mut self) -> bool {
        if !self.alive {
            return false;
        }
        let Some(sample) = self
            .sampler
            .sample()
            .filter(|s| s.identity == self.identity)
        else {
            return false;
        };
        let now = Instant::now();
        self.instruments.record(&sample);
        let elapsed = now.saturating_duration_since(self.prev_at);
        if elapsed >= MIN_UTILIZATION_WINDOW {
            let prev = self.prev_cpu;
            self.set_utilization(Some(&prev), &sample.cpu, elapsed.as_secs_f64());
            self.prev_cpu = sample.cpu;
            self.prev_at = now;
        }
        self.last = Reading::new(&sample, self.utilization);
        true
    }

    /// Sets `process.cpu.utilization` from two readings `secs` apart (no `prev`: since the
    /// process started).
    fn set_utilization(&mut self, prev: Option<&CpuTimes>, cur: &CpuTimes, secs: f64) {
        let capacity = secs * self.cpus;
        if capacity <= 0.0 {
            return;
        }
        for (i, (gauge, now)) in self
            .instruments
            .cpu_utilization
            .iter()
            .zip(cur.secs())
            .enumerate()
        {
            let before = prev.and_then(|p| p.secs().get(i).copied()).unwrap_or(0.0);
            let u = ((now - before) / capacity).clamp(0.0, 1.0);
            if u.is_finite() {
                gauge.set(u);
                if let Some(slot) = self.utilization.get_mut(i) {
                    *slot = u;
                }
            }
        }
    }
}

/// Reads one gauge's value from a sample (`None`: not available).
type Read = fn(&Sample) -> Option<u64>;

/// Where a gauge can be read, so where it is registered.
#[derive(Clone, Copy)]
enum When {
    Always,
    /// Where the platform counts a process's threads.
    Threads,
    /// On Linux only.
    Linux,
}

impl When {
    /// Whether the gauge is registered, `first` being the sample taken at install: only the
    /// gauges the platform can read, so that no series stays unset.
    fn holds(self, first: &Sample) -> bool {
        match self {
            When::Always => true,
            When::Threads => first.threads.is_some(),
            When::Linux => cfg!(target_os = "linux"),
        }
    }
}

/// An `i64` gauge: its name, description, unit, reading and where it can be read.
type Gauge64 = (&'static str, &'static str, Unit, Read, When);

const THREADS_UNIT: Unit = Unit::Count(Cow::Borrowed("{thread}"));
const FDS_UNIT: Unit = Unit::Count(Cow::Borrowed("{file_descriptor}"));

/// The `i64` gauges, named after the OpenTelemetry conventions (with the collector's prefix).
const GAUGES: [Gauge64; 6] = [
    (
        MEMORY_USAGE,
        "The amount of physical memory in use (resident set size).",
        Unit::Bytes,
        |s| Some(s.resident_bytes),
        When::Always,
    ),
    (
        MEMORY_VIRTUAL,
        "The amount of committed virtual memory.",
        Unit::Bytes,
        |s| Some(s.virtual_bytes),
        When::Always,
    ),
    (
        THREAD_COUNT,
        "Process threads count.",
        THREADS_UNIT,
        |s| s.threads,
        When::Threads,
    ),
    (
        OPEN_FILE_DESCRIPTORS,
        "Number of file descriptors in use by the process.",
        FDS_UNIT,
        |s| s.open_fds,
        When::Always,
    ),
    (
        OPEN_FILE_DESCRIPTOR_LIMIT,
        "The soft limit on open file descriptors (RLIMIT_NOFILE, ulimit -n); absent when unlimited.",
        FDS_UNIT,
        |s| s.open_fds_limit,
        When::Linux,
    ),
    (
        MEMORY_LIMIT,
        "The memory limit of the process's cgroup (the lowest of its cgroup's and its ancestors' memory.max, or memory.limit_in_bytes on cgroup v1); absent when unlimited.",
        Unit::Bytes,
        |s| s.memory_limit,
        When::Linux,
    ),
];

/// The `i64` gauges [`ProcessCollector::prometheus_names`] adds.
const PROMETHEUS_GAUGES: [Gauge64; 5] = [
    (
        prometheus_names::RESIDENT_MEMORY_BYTES,
        "Resident memory size in bytes.",
        Unit::Bytes,
        |s| Some(s.resident_bytes),
        When::Always,
    ),
    (
        prometheus_names::VIRTUAL_MEMORY_BYTES,
        "Virtual memory size in bytes.",
        Unit::Bytes,
        |s| Some(s.virtual_bytes),
        When::Always,
    ),
    (
        prometheus_names::OPEN_FDS,
        "Number of open file descriptors.",
        FDS_UNIT,
        |s| s.open_fds,
        When::Always,
    ),
    (
        prometheus_names::MAX_FDS,
        "Maximum number of open file descriptors.",
        FDS_UNIT,
        |s| s.open_fds_limit,
        When::Linux,
    ),
    (
        prometheus_names::THREADS,
        "Number of OS threads in the process.",
        THREADS_UNIT,
        |s| s.threads,
        When::Threads,
    ),
];

/// An `i64` gauge whose series exists while the value is available: a process whose limit is
/// lifted, or whose file descriptors cannot be read, has no series rather than a stale one.
struct Optional {
    family: Family<Gauge>,
    series: Option<Gauge>,
    read: Read,
}

impl Optional {
    fn record(&mut self, values: &[String], s: &Sample) {
        match (self.read)(s) {
            Some(v) => {
                let family = &self.family;
                let gauge = self.series.get_or_insert_with(|| family.with(values));
                gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
            }
            // The only series of an unlabelled family cannot be removed: it keeps its last
            // value (see the crate docs).
            None if values.is_empty() => {}
            None => {
                if self.series.take().is_some() {
                    self.family.remove(values);
                }
            }
        }
    }
}

/// `process_cpu_seconds_total` and `process_start_time_seconds`
/// ([`ProcessCollector::prometheus_names`]; the `i64` ones are in `Instruments::gauges`).
struct PrometheusInstruments {
    cpu: Single<Counter<f64>>,
    start: Single<Gauge<f64>>,
}

/// A family and this collector's one series in it.
struct Single<M: Instrument> {
    family: Family<M>,
    series: M,
}

impl<M: Instrument> Single<M> {
    fn new(family: Family<M>, values: &[String]) -> Self {
        Single {
            series: family.with(values),
            family,
        }
    }

    fn remove(&self, values: &[String]) {
        self.family.remove(values);
    }
}

/// The families and this collector's series in them.
struct Instruments {
    /// Label values of the CPU series, one list per mode: `[mode, extra...]`.
    cpu_values: Vec<Vec<String>>,
    /// Values of the extra labels, for the other families.
    values: Vec<String>,
    cpu_time_family: Family<Counter<f64>>,
    cpu_time: Vec<Counter<f64>>,
    cpu_utilization_family: Family<Gauge<f64>>,
    cpu_utilization: Vec<Gauge<f64>>,
    gauges: Vec<Optional>,
    uptime: Single<Gauge<f64>>,
    prometheus: Option<PrometheusInstruments>,
}

/// `process.cpu.time` with another prefix (`procstat.cpu.time`).
fn prefixed(prefix: &str, constant: &'static str) -> Cow<'static, str> {
    match constant.strip_prefix("process.") {
        Some(rest) if prefix != "process" => Cow::Owned(format!("{prefix}.{rest}")),
        _ => Cow::Borrowed(constant),
    }
}

/// Registers (or finds) the family `builder` names, with every collector family's shape: a
/// description, a unit and the label names.
fn family<M: Instrument>(
    builder: FamilyBuilder<'_, M>,
    description: &'static str,
    unit: Unit,
    labels: &[Cow<'static, str>],
) -> Result<Family<M>, sonde_core::Error> {
    builder
        .description(description)
        .unit(unit)
        .labels(labels.iter().cloned())
        .build()
}

impl Instruments {
    fn register(
        registry: &Registry,
        prefix: &str,
        prometheus_names: bool,
        labels: &[(Cow<'static, str>, String)],
        first: &Sample,
    ) -> Result<Self, Error> {
        let names: Vec<Cow<'static, str>> = labels.iter().map(|(n, _)| n.clone()).collect();
        let values: Vec<String> = labels.iter().map(|(_, v)| v.clone()).collect();
        let mut cpu_names = names.clone();
        let mut cpu_values = Vec::new();
        if CPU_MODES.is_empty() {
            cpu_values.push(values.clone());
        } else {
            cpu_names.insert(0, CPU_MODE_LABEL.into());
            for mode in CPU_MODES {
                let mut v = values.clone();
                v.insert(0, (*mode).to_owned());
                cpu_values.push(v);
            }
        }
        let name = |constant| prefixed(prefix, constant);

        let cpu_time_family = family(
            registry.counter_f64(name(CPU_TIME)),
            "Total CPU seconds broken down by different states.",
            Unit::Seconds,
            &cpu_names,
        )?;
        let cpu_utilization_family = family(
            registry.gauge_f64(name(CPU_UTILIZATION)),
            "Difference in process.cpu.time since the last measurement, divided by the elapsed time and number of CPUs available to the process.",
            Unit::Ratio,
            &cpu_names,
        )?;
        let gauge = |name: Cow<'static, str>, description: &'static str, unit: Unit| {
            family(registry.gauge(name), description, unit, &names)
        };
        let mut gauges: Vec<(Family<Gauge>, Read)> = Vec::new();
        for (constant, description, unit, read, when) in GAUGES {
            if when.holds(first) {
                gauges.push((gauge(name(constant), description, unit)?, read));
            }
        }
        let uptime = Single::new(
            family(
                registry.gauge_f64(name(UPTIME)),
                "The time the process has been running.",
                Unit::Seconds,
                &names,
            )?,
            &values,
        );

        let prometheus = if prometheus_names {
            use prometheus_names::*;
            for (name, description, unit, read, when) in PROMETHEUS_GAUGES {
                if when.holds(first) {
                    gauges.push((gauge(name.into(), description, unit)?, read));
                }
            }
            let cpu = family(
                registry.counter_f64(CPU_SECONDS_TOTAL),
                "Total user and system CPU time spent in seconds.",
                Unit::Seconds,
                &names,
            )?;
            let start = family(
                registry.gauge_f64(START_TIME),
                "Start time of the process since unix epoch in seconds.",
                Unit::Seconds,
                &names,
            )?;
            Some(PrometheusInstruments {
                cpu: Single::new(cpu, &values),
                start: Single::new(start, &values),
            })
        } else {
            None
        };

        Ok(Instruments {
            cpu_time: cpu_values.iter().map(|v| cpu_time_family.with(v)).collect(),
            cpu_utilization: cpu_values
                .iter()
                .map(|v| cpu_utilization_family.with(v))
                .collect(),
            gauges: gauges
                .into_iter()
                .map(|(family, read)| Optional {
                    family,
                    series: None,
                    read,
                })
                .collect(),
            uptime,
            cpu_values,
            values,
            cpu_time_family,
            cpu_utilization_family,
            prometheus,
        })
    }

    fn record(&mut self, s: &Sample) {
        for (counter, &total) in self.cpu_time.iter().zip(s.cpu.secs()) {
            advance(counter, total);
        }
        for gauge in &mut self.gauges {
            gauge.record(&self.values, s);
        }
        self.uptime.series.set(s.uptime);
        if let Some(p) = &self.prometheus {
            advance(&p.cpu.series, s.cpu.secs().iter().sum());
            p.start.series.set(s.start_time);
        }
    }

    fn remove_series(&self) {
        for v in &self.cpu_values {
            self.cpu_time_family.remove(v);
            self.cpu_utilization_family.remove(v);
        }
        for g in &self.gauges {
            if g.series.is_some() {
                g.family.remove(&self.values);
            }
        }
        self.uptime.remove(&self.values);
        if let Some(p) = &self.prometheus {
            p.cpu.remove(&self.values);
            p.start.remove(&self.values);
        }
    }
}

/// Counters only add: adds what the OS total is ahead of the counter. Whoever else writes the
/// series, it converges on the total instead of double counting.
fn advance(counter: &Counter<f64>, total: f64) {
    let delta = total - counter.value().as_f64();
    if delta > 0.0 {
        counter.add(delta);
    }
}
