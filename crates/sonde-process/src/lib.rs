//! # sonde-process
//!
//! Process metrics for sonde, by the OpenTelemetry semantic conventions: CPU time and
//! utilization, resident and virtual memory, threads, open file descriptors and uptime, of the
//! running service ([`ProcessCollector::current`]) or of any process by pid
//! ([`ProcessCollector::for_pid`]).
//!
//! Nothing runs on a timer: [`install`](ProcessCollector::install) registers the families and
//! a collect hook ([`Registry::add_collect_hook`]), and every collection of the registry (a
//! snapshot, a scrape, a delta reader's collect) first reads the process once and updates them.
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
//!
//! Every family also carries the collector's extra labels ([`label`](ProcessCollector::label),
//! [`pid_label`](ProcessCollector::pid_label),
//! [`executable_name_label`](ProcessCollector::executable_name_label)), after `cpu.mode`.
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
//!   process, not counting the one used to list them), elsewhere what sysinfo reports. If they
//!   cannot be read at install (another user's process), the family is not registered by this
//!   collector. Newer conventions name this metric `process.unix.file_descriptor.count`.
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
//! `/proc/uptime` and the listing of `/proc/<pid>/fd`, about 30 µs in all. sysinfo is not
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
mod sample;

use std::borrow::Cow;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use sonde_core::{Counter, Family, Gauge, Registry, Unit};

use crate::sample::{CPU_MODES, CpuTimes, Sample, Sampler};

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

    /// Reads the process once, registers the families (or reuses them if they exist with the
    /// same definition), sets their values and adds a collect hook that updates them at every
    /// collection of the registry.
    ///
    /// Dropping the returned handle does not stop the collection (install and forget); call
    /// [`ProcessMetrics::uninstall`] for that.
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
        let instruments = Instruments::register(&registry, &labels, &first)?;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        let state = State {
            sampler,
            instruments,
            identity: first.identity,
            alive: true,
            cpus,
            prev_cpu: first.cpu,
            prev_at: Instant::now(),
        };
        state.instruments.record(&first);
        // The first utilization: the average since the process started.
        if first.uptime >= MIN_UTILIZATION_WINDOW.as_secs_f64() {
            state.set_utilization(None, &first.cpu, first.uptime);
        }
        let shared = Arc::new(Shared {
            pid,
            labels,
            installed: AtomicBool::new(true),
            alive: AtomicBool::new(true),
            state: Mutex::new(Some(state)),
        });
        let hook = shared.clone();
        registry.add_collect_hook(move || {
            hook.collect(false);
        });
        Ok(ProcessMetrics { shared })
    }
}

/// An installed collector. Cheap to clone; dropping it does not stop the collection.
#[derive(Clone)]
pub struct ProcessMetrics {
    shared: Arc<Shared>,
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

    /// Stops reading the process and removes its series from the families (a collector
    /// without any extra label cannot remove the series of unlabelled families: they keep
    /// their last values). The registry's collect hook stays, as a no-op. Idempotent.
    pub fn uninstall(&self) {
        self.shared.installed.store(false, Ordering::Relaxed);
        let state = lock(&self.shared.state).take();
        if let Some(state) = state {
            state.instruments.remove_series();
        }
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
    /// One reading. From the hook (`wait == false`), a reading already in progress on another
    /// thread is not waited for.
    fn collect(&self, wait: bool) -> bool {
        if !self.installed.load(Ordering::Relaxed) || !self.alive.load(Ordering::Relaxed) {
            return false;
        }
        let mut guard = if wait {
            lock(&self.state)
        } else {
            match self.state.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => return true,
            }
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
        true
    }

    /// Sets `process.cpu.utilization` from two readings `secs` apart (no `prev`: since the
    /// process started).
    fn set_utilization(&self, prev: Option<&CpuTimes>, cur: &CpuTimes, secs: f64) {
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
            }
        }
    }
}

/// Reads one gauge's value from a sample (`None`: not available).
type Read = fn(&Sample) -> Option<u64>;

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
    gauges: Vec<(Family<Gauge>, Gauge, Read)>,
    uptime_family: Family<Gauge<f64>>,
    uptime: Gauge<f64>,
}

impl Instruments {
    fn register(
        registry: &Registry,
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

        let cpu_time_family = registry
            .counter_f64(CPU_TIME)
            .description("Total CPU seconds broken down by different states.")
            .unit(Unit::Seconds)
            .labels(cpu_names.clone())
            .build()?;
        let cpu_utilization_family = registry
            .gauge_f64(CPU_UTILIZATION)
            .description("Difference in process.cpu.time since the last measurement, divided by the elapsed time and number of CPUs available to the process.")
            .unit(Unit::Ratio)
            .labels(cpu_names)
            .build()?;
        let gauge = |name: &'static str, description: &'static str, unit: Unit| {
            registry
                .gauge(name)
                .description(description)
                .unit(unit)
                .labels(names.clone())
                .build()
        };
        let mut gauges: Vec<(Family<Gauge>, Read)> = vec![
            (
                gauge(
                    MEMORY_USAGE,
                    "The amount of physical memory in use (resident set size).",
                    Unit::Bytes,
                )?,
                |s| Some(s.resident_bytes),
            ),
            (
                gauge(
                    MEMORY_VIRTUAL,
                    "The amount of committed virtual memory.",
                    Unit::Bytes,
                )?,
                |s| Some(s.virtual_bytes),
            ),
        ];
        if first.threads.is_some() {
            gauges.push((
                gauge(
                    THREAD_COUNT,
                    "Process threads count.",
                    Unit::Count("{thread}".into()),
                )?,
                |s| s.threads,
            ));
        }
        if first.open_fds.is_some() {
            gauges.push((
                gauge(
                    OPEN_FILE_DESCRIPTORS,
                    "Number of file descriptors in use by the process.",
                    Unit::Count("{file_descriptor}".into()),
                )?,
                |s| s.open_fds,
            ));
        }
        let uptime_family = registry
            .gauge_f64(UPTIME)
            .description("The time the process has been running.")
            .unit(Unit::Seconds)
            .labels(names.clone())
            .build()?;

        Ok(Instruments {
            cpu_time: cpu_values.iter().map(|v| cpu_time_family.with(v)).collect(),
            cpu_utilization: cpu_values
                .iter()
                .map(|v| cpu_utilization_family.with(v))
                .collect(),
            gauges: gauges
                .into_iter()
                .map(|(f, read)| {
                    let h = f.with(&values);
                    (f, h, read)
                })
                .collect(),
            uptime: uptime_family.with(&values),
            cpu_values,
            values,
            cpu_time_family,
            cpu_utilization_family,
            uptime_family,
        })
    }

    fn record(&self, s: &Sample) {
        for (counter, &total) in self.cpu_time.iter().zip(s.cpu.secs()) {
            // Counters only add: add what the OS total is ahead of the counter. Whoever else
            // writes the series, it converges on the total instead of double counting.
            let delta = total - counter.value().as_f64();
            if delta > 0.0 {
                counter.add(delta);
            }
        }
        for (_, gauge, read) in &self.gauges {
            if let Some(v) = read(s) {
                gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        }
        self.uptime.set(s.uptime);
    }

    fn remove_series(&self) {
        for v in &self.cpu_values {
            self.cpu_time_family.remove(v);
            self.cpu_utilization_family.remove(v);
        }
        for (family, _, _) in &self.gauges {
            family.remove(&self.values);
        }
        self.uptime_family.remove(&self.values);
    }
}
