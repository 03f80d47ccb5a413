//! Procstat: per-process metrics for the processes that match a name, a pattern or a pid file,
//! followed as they start and exit, under their own `procstat.*` names, with totals per
//! matcher (group).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;
use sonde_core::{Counter, Family, Gauge, Registry, Unit};
use sonde_process::{
    CPU_MODES, EXECUTABLE_NAME_LABEL, PID_LABEL, ProcessCollector, ProcessMetrics, Reading,
};
use sysinfo::{
    Pid, Process, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, ThreadKind,
    UpdateKind,
};

use crate::host::collector_errors;
use crate::shared::{Running, Shared};
use crate::{
    CPU_MODE_LABEL, Error, GROUP_CPU_TIME, GROUP_CPU_UTILIZATION, GROUP_MEMORY_USAGE,
    GROUP_MEMORY_VIRTUAL, GROUP_OPEN_FILE_DESCRIPTORS, GROUP_PROCESS_COUNT, GROUP_THREAD_COUNT,
    MATCH_LABEL, PROCSTAT_PREFIX, PROCSTAT_READ_ERRORS, PROCSTAT_START_TIME, REASON_LABEL,
};

/// Which processes a [`ProcstatCollector`] follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessMatcher {
    /// Processes whose executable's file name is exactly this (`nginx`); also matches the
    /// name the OS reports (on Linux the command name, at most 15 bytes, which a process can
    /// change), so that busybox applets and processes whose executable cannot be read (another
    /// user's, without privileges) are found too.
    Name(String),
    /// Processes whose command line (arguments joined by spaces) or executable name matches
    /// this regular expression (`^postgres`, `java .*-jar app\.jar`). The collecting process
    /// itself is never matched.
    Pattern(String),
    /// The process whose pid is in this file (`/run/nginx.pid`), read at every collection.
    PidFile(PathBuf),
}

impl fmt::Display for ProcessMatcher {
    /// The value of the `process.match` label: `name:nginx`, `pattern:^postgres`,
    /// `pid_file:/run/nginx.pid`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessMatcher::Name(n) => write!(f, "name:{n}"),
            ProcessMatcher::Pattern(p) => write!(f, "pattern:{p}"),
            ProcessMatcher::PidFile(p) => write!(f, "pid_file:{}", p.display()),
        }
    }
}

/// A [`ProcessMatcher`] checked once, its pattern compiled: build it where a configuration is
/// checked and hand it to [`ProcstatCollector::checked`], so that the pattern is compiled once
/// and what the check accepted is what the collector runs.
#[derive(Debug, Clone)]
pub struct CheckedMatcher {
    matcher: ProcessMatcher,
    regex: Option<Regex>,
}

impl CheckedMatcher {
    /// Compiles the pattern of a [`ProcessMatcher::Pattern`]; the other matchers are always valid.
    pub fn new(matcher: ProcessMatcher) -> Result<CheckedMatcher, Error> {
        let regex = match &matcher {
            ProcessMatcher::Pattern(p) => {
                Some(Regex::new(p).map_err(|source| Error::InvalidRegex {
                    what: "ProcessMatcher::Pattern",
                    pattern: p.clone(),
                    source: Box::new(source),
                })?)
            }
            _ => None,
        };
        Ok(CheckedMatcher { matcher, regex })
    }

    /// The matcher.
    pub fn matcher(&self) -> &ProcessMatcher {
        &self.matcher
    }
}

// The regex is compiled from the matcher: equal matchers are equal.
impl PartialEq for CheckedMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.matcher == other.matcher
    }
}

impl Eq for CheckedMatcher {}

/// A matcher given to the builder: checked already, or checked at install.
#[derive(Debug, Clone)]
enum Given {
    Unchecked(ProcessMatcher),
    Checked(CheckedMatcher),
}

/// The label names of procstat's per-process families, in order (after `cpu.mode` on the CPU
/// families): `process.match` (the group), `process.pid`, `process.executable.name`.
pub const PROCSTAT_LABELS: [&str; 3] = [MATCH_LABEL, PID_LABEL, EXECUTABLE_NAME_LABEL];

/// Why a matched process, or one of its files, could not be read: the `reason` of
/// `sonde.procstat.read_errors`.
pub mod read_error {
    /// The process matched but exited before it could be read (short-lived processes; harmless
    /// when rare).
    pub const EXITED: &str = "exited";
    /// The process matched but its `/proc/<pid>/stat` cannot be read by this user (`/proc`
    /// mounted with `hidepid`, another PID namespace): it is not followed.
    pub const DENIED: &str = "denied";
    /// Its open file descriptors cannot be listed: another user's process, and the collector
    /// lacks `CAP_SYS_PTRACE`. Its `procstat.open_file_descriptor.count` and its group's
    /// `procstat.group.open_file_descriptor.count` are left out.
    pub const FD_DENIED: &str = "fd_denied";
}

/// Describes which processes to follow and where to register their metrics; finish with
/// [`install`](Self::install).
#[derive(Debug, Clone)]
#[must_use = "call .install() to start collecting"]
pub struct ProcstatCollector {
    matchers: Vec<Given>,
    registry: Option<Registry>,
    on_collect: bool,
}

impl ProcstatCollector {
    /// Follows the processes `matcher` selects.
    pub fn new(matcher: ProcessMatcher) -> Self {
        ProcstatCollector {
            matchers: vec![Given::Unchecked(matcher)],
            registry: None,
            on_collect: false,
        }
    }

    /// Follows the processes an already checked `matcher` selects (its pattern is not compiled
    /// again).
    pub fn checked(matcher: CheckedMatcher) -> Self {
        ProcstatCollector {
            matchers: vec![Given::Checked(matcher)],
            registry: None,
            on_collect: false,
        }
    }

    /// Follows the processes `matcher` selects too. One collector with several matchers lists
    /// the processes once per collection, where several collectors list them once each.
    pub fn matcher(mut self, matcher: ProcessMatcher) -> Self {
        self.matchers.push(Given::Unchecked(matcher));
        self
    }

    /// Follows the processes an already checked `matcher` selects too.
    pub fn checked_matcher(mut self, matcher: CheckedMatcher) -> Self {
        self.matchers.push(Given::Checked(matcher));
        self
    }

    /// Registers into `registry` instead of [`Registry::global`].
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    sonde_core::builder_setters! {
        /// Also looks for matching processes at every collection of the registry, from a
        /// collect hook, instead of only when [`ProcstatMetrics::collect`] is called (off by
        /// default). The metrics of the processes found are refreshed at every collection
        /// either way.
        on_collect: bool;
    }

    /// Checks the matchers, registers the families, looks for matching processes once
    /// (installing a [`ProcessCollector`] named `procstat.*` for each) and adds a collect hook
    /// that reads them (and, with [`on_collect`](Self::on_collect), looks for new ones) at
    /// every collection of the registry.
    pub fn install(self) -> Result<ProcstatMetrics, Error> {
        let registry = self.registry.unwrap_or_else(|| Registry::global().clone());
        let errors = collector_errors(&registry)?;
        let families = Families::register(&registry)?;
        let mut entries = Vec::with_capacity(self.matchers.len());
        for given in self.matchers {
            let CheckedMatcher { matcher, regex } = match given {
                Given::Checked(c) => c,
                Given::Unchecked(m) => CheckedMatcher::new(m)?,
            };
            let label = matcher.to_string();
            entries.push(Matcher {
                group: Group::new(&families, &label),
                label,
                regex,
                matcher,
                tracked: HashMap::new(),
                logged: Vec::new(),
            });
        }
        let sys = System::new().map_err(|e| Error::System {
            message: e.to_string(),
        })?;
        let mut state = State {
            registry: registry.clone(),
            matchers: entries,
            sys,
            families,
            errors,
            own_pid: std::process::id(),
            first: true,
        };
        state.update(true);
        state.first = false;
        let shared = Shared::new(state);
        let rematch = self.on_collect;
        let hook = shared.hook(&registry, move |shared| collect(shared, false, rematch));
        Ok(ProcstatMetrics {
            _running: Running::new(
                &shared,
                Some(hook),
                "procstat: stopping because its handle was dropped (keep it in a variable, `let _procstat = ...`, for as long as it should run)",
            ),
            shared,
        })
    }
}

/// Installed procstat collection. Cheap to clone, `Send` and `Sync`. The collection runs
/// until the last clone is dropped (then it stops and logs a line; the series keep their last
/// values) or [`uninstall`](Self::uninstall) is called (which also removes the series).
#[derive(Clone)]
#[must_use = "dropping the handle stops procstat: keep it (`let _procstat = ...`) for as long as it should run"]
pub struct ProcstatMetrics {
    shared: Arc<Shared<State>>,
    _running: Arc<Running<State>>,
}

impl fmt::Debug for ProcstatMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcstatMetrics")
            .field("matches", &self.matches())
            .finish()
    }
}

impl ProcstatMetrics {
    /// Looks for matching processes now (installs a process collector for each new one and
    /// uninstalls those of processes that exited, removing their series), then reads them and
    /// updates the group totals. Call it from any thread; a collection in progress on another
    /// thread is waited for. Never panics.
    pub fn collect(&self) {
        collect(&self.shared, true, true);
    }

    /// The `process.match` value of each matcher and the pids it follows, sorted.
    pub fn matches(&self) -> Vec<(String, Vec<u32>)> {
        let guard = self.shared.state();
        let Some(state) = guard.as_ref() else {
            return Vec::new();
        };
        state
            .matchers
            .iter()
            .map(|m| {
                let mut pids: Vec<u32> = m.tracked.keys().copied().collect();
                pids.sort_unstable();
                (m.label.clone(), pids)
            })
            .collect()
    }

    /// Whether the collector still looks for processes.
    pub fn is_installed(&self) -> bool {
        self.shared.is_installed()
    }

    /// Stops looking, uninstalls every process collector and removes the series (per process,
    /// per group, and the read errors). Idempotent.
    pub fn uninstall(&self) {
        self.uninstall_except(&[]);
    }

    /// Like [`uninstall`](Self::uninstall), but the series of the matchers whose
    /// `process.match` value is in `keep` stay: a successor collector (a reloaded
    /// configuration) that follows them too goes on with the same series, so nothing resets
    /// and delta exporters count nothing twice. Idempotent.
    pub fn uninstall_except(&self, keep: &[String]) {
        if let Some(mut state) = self.shared.uninstall() {
            for i in 0..state.matchers.len() {
                if keep.contains(&state.matchers[i].label) {
                    continue;
                }
                let pids: Vec<u32> = state.matchers[i].tracked.keys().copied().collect();
                for pid in pids {
                    state.untrack(i, pid);
                }
                state.matchers[i].group.remove(&state.families);
            }
        }
    }
}

crate::collector_component!(ProcstatMetrics, "procstat");

/// One collection: looks for processes if `rematch`, then reads the ones followed; a panic
/// counts as an error.
fn collect(shared: &Shared<State>, wait: bool, rematch: bool) {
    shared.collect_catching(
        wait,
        |state| state.update(rematch),
        |state| state.error("panic"),
    );
}

/// The families procstat registers itself (the per-process ones are sonde-process's, with the
/// `procstat` prefix).
struct Families {
    start_time: Family<Gauge<f64>>,
    read_errors: Family<Counter>,
    process_count: Family<Gauge>,
    cpu_time: Family<Counter<f64>>,
    cpu_utilization: Family<Gauge<f64>>,
    memory_usage: Family<Gauge>,
    memory_virtual: Family<Gauge>,
    threads: Option<Family<Gauge>>,
    open_fds: Family<Gauge>,
}

impl Families {
    fn register(registry: &Registry) -> Result<Self, sonde_core::Error> {
        let mut cpu_labels = vec![MATCH_LABEL];
        if !CPU_MODES.is_empty() {
            cpu_labels.insert(0, CPU_MODE_LABEL);
        }
        let gauge = |name: &'static str, description: &'static str, unit: Unit| {
            registry
                .gauge(name)
                .description(description)
                .unit(unit)
                .labels([MATCH_LABEL])
                .build()
        };
        Ok(Families {
            start_time: registry
                .gauge_f64(PROCSTAT_START_TIME)
                .description("When the process started, in seconds since the UNIX epoch.")
                .unit(Unit::Seconds)
                .labels(PROCSTAT_LABELS)
                .build()?,
            read_errors: registry
                .counter(PROCSTAT_READ_ERRORS)
                .description("Readings of a matched process, or of one of its files, that failed, by group and reason (exited, denied, fd_denied).")
                .labels([MATCH_LABEL, REASON_LABEL])
                .build()?,
            process_count: gauge(
                GROUP_PROCESS_COUNT,
                "Processes of the group followed (matched and readable).",
                Unit::Count("{process}".into()),
            )?,
            cpu_time: registry
                .counter_f64(GROUP_CPU_TIME)
                .description("CPU seconds of the group's processes while followed (those found at install since they started), exited ones included.")
                .unit(Unit::Seconds)
                .labels(cpu_labels.clone())
                .build()?,
            cpu_utilization: registry
                .gauge_f64(GROUP_CPU_UTILIZATION)
                .description("Sum of procstat.cpu.utilization over the group's processes.")
                .unit(Unit::Ratio)
                .labels(cpu_labels)
                .build()?,
            memory_usage: gauge(
                GROUP_MEMORY_USAGE,
                "Sum of the resident set sizes of the group's processes.",
                Unit::Bytes,
            )?,
            memory_virtual: gauge(
                GROUP_MEMORY_VIRTUAL,
                "Sum of the virtual memory sizes of the group's processes.",
                Unit::Bytes,
            )?,
            threads: if cfg!(target_os = "linux") {
                Some(gauge(
                    GROUP_THREAD_COUNT,
                    "Threads of the group's processes.",
                    Unit::Count("{thread}".into()),
                )?)
            } else {
                None
            },
            open_fds: gauge(
                GROUP_OPEN_FILE_DESCRIPTORS,
                "Open file descriptors of the group's processes; absent when those of one of them cannot be read.",
                Unit::Count("{file_descriptor}".into()),
            )?,
        })
    }
}

/// One matcher's totals.
struct Group {
    process_count: Gauge,
    /// Label values of the CPU series, one list per mode: `[mode, group]` (or `[group]`).
    cpu_values: Vec<Vec<String>>,
    cpu_time: Vec<Counter<f64>>,
    cpu_utilization: Vec<Gauge<f64>>,
    memory_usage: Gauge,
    memory_virtual: Gauge,
    threads: Option<Gauge>,
    /// Present only while every process's descriptors could be read.
    open_fds: Option<Gauge>,
}

impl Group {
    fn new(f: &Families, label: &str) -> Group {
        let cpu_values: Vec<Vec<String>> = if CPU_MODES.is_empty() {
            vec![vec![label.to_owned()]]
        } else {
            CPU_MODES
                .iter()
                .map(|m| vec![(*m).to_owned(), label.to_owned()])
                .collect()
        };
        let values = [label];
        Group {
            process_count: f.process_count.with(&values),
            cpu_time: cpu_values.iter().map(|v| f.cpu_time.with(v)).collect(),
            cpu_utilization: cpu_values
                .iter()
                .map(|v| f.cpu_utilization.with(v))
                .collect(),
            cpu_values,
            memory_usage: f.memory_usage.with(&values),
            memory_virtual: f.memory_virtual.with(&values),
            threads: f.threads.as_ref().map(|t| t.with(&values)),
            open_fds: Some(f.open_fds.with(&values)),
        }
    }

    fn remove(&self, f: &Families) {
        let label = self.cpu_values[0].last().map(String::as_str).unwrap_or("");
        let values = [label];
        for v in &self.cpu_values {
            f.cpu_time.remove(v);
            f.cpu_utilization.remove(v);
        }
        for family in [
            &f.process_count,
            &f.memory_usage,
            &f.memory_virtual,
            &f.open_fds,
        ] {
            family.remove(&values);
        }
        if let Some(t) = &f.threads {
            t.remove(&values);
        }
        for reason in [
            read_error::EXITED,
            read_error::DENIED,
            read_error::FD_DENIED,
        ] {
            f.read_errors.remove(&[label, reason]);
        }
    }
}

struct Tracked {
    metrics: ProcessMetrics,
    /// Start time (UNIX seconds, sysinfo's) when found: a different one means the pid was
    /// reused.
    start: u64,
    /// CPU seconds per mode already added to the group's `procstat.group.cpu.time`.
    counted: [f64; 2],
    /// Installed during this collection: its reading is fresh.
    fresh: bool,
}

struct Matcher {
    matcher: ProcessMatcher,
    label: String,
    regex: Option<Regex>,
    group: Group,
    tracked: HashMap<u32, Tracked>,
    /// The read error reasons already logged for this group (once each).
    logged: Vec<&'static str>,
}

struct State {
    registry: Registry,
    matchers: Vec<Matcher>,
    sys: System,
    families: Families,
    errors: Family<Counter>,
    own_pid: u32,
    /// The collection at install: the processes found then count in the group's CPU time
    /// with all their CPU time (the series starts there); those found later only with what
    /// they use from then on, so that a process found late is not a spike in its rate.
    first: bool,
}

impl State {
    fn error(&self, reason: &'static str) {
        self.errors.with(&["procstat", reason]).inc();
    }

    /// Counts a read error of group `i`, and logs it the first time for this group and reason.
    fn read_error(&mut self, i: usize, reason: &'static str, pid: u32) {
        let m = &mut self.matchers[i];
        self.families
            .read_errors
            .with(&[m.label.as_str(), reason])
            .inc();
        if m.logged.contains(&reason) {
            return;
        }
        m.logged.push(reason);
        let group = m.label.as_str();
        match reason {
            read_error::FD_DENIED => tracing::warn!(
                group,
                pid,
                reason,
                "procstat: the open file descriptors of process {pid} (matched by {group}) cannot be listed: permission denied; its procstat.open_file_descriptor.count and the group's total are left out. Run the collector as the process's user or with CAP_SYS_PTRACE (AmbientCapabilities=CAP_SYS_PTRACE in a systemd unit). Counted in sonde.procstat.read_errors; logged once per group and reason"
            ),
            read_error::DENIED => tracing::warn!(
                group,
                pid,
                reason,
                "procstat: process {pid} (matched by {group}) cannot be read by this user (/proc mounted with hidepid, or another PID namespace) and is not followed. Counted in sonde.procstat.read_errors; logged once per group and reason"
            ),
            _ => tracing::warn!(
                group,
                pid,
                reason,
                "procstat: process {pid} (matched by {group}) exited before it could be read; harmless for short-lived processes. Counted in sonde.procstat.read_errors; logged once per group and reason"
            ),
        }
    }

    /// Looks for processes (if `rematch`), then reads those followed and sets the totals.
    fn update(&mut self, rematch: bool) {
        if rematch {
            self.rematch();
        }
        for i in 0..self.matchers.len() {
            self.read(i);
        }
    }

    fn rematch(&mut self) {
        let names = self
            .matchers
            .iter()
            .any(|m| matches!(m.matcher, ProcessMatcher::Name(_)));
        let patterns = self
            .matchers
            .iter()
            .any(|m| matches!(m.matcher, ProcessMatcher::Pattern(_)));
        if names || patterns {
            // Per process: `stat` and `status`, plus the executable link for names and the
            // command line for patterns (both can change at exec).
            let mut kind = ProcessRefreshKind::nothing()
                .without_tasks()
                .with_exe(UpdateKind::Always);
            if patterns {
                kind = kind.with_cmd(UpdateKind::Always);
            }
            self.sys
                .refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
            if self.sys.processes().is_empty() {
                self.error("process_list");
            }
        }
        for i in 0..self.matchers.len() {
            let found = self.find(i);
            self.reconcile(i, found);
        }
    }

    /// The pids matcher `i` selects now, with their start times.
    fn find(&mut self, i: usize) -> HashMap<u32, u64> {
        let m = &self.matchers[i];
        let alive = |p: &Process| {
            !matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead)
                && p.thread_kind() != Some(ThreadKind::Kernel)
        };
        match &m.matcher {
            ProcessMatcher::Name(name) => self
                .sys
                .processes()
                .values()
                .filter(|p| alive(p) && name_matches(p, name))
                .map(|p| (p.pid().as_u32(), p.start_time()))
                .collect(),
            ProcessMatcher::Pattern(_) => {
                let Some(re) = &m.regex else {
                    return HashMap::new();
                };
                let own = self.own_pid;
                self.sys
                    .processes()
                    .values()
                    .filter(|p| p.pid().as_u32() != own && alive(p) && pattern_matches(p, re))
                    .map(|p| (p.pid().as_u32(), p.start_time()))
                    .collect()
            }
            ProcessMatcher::PidFile(path) => {
                let Some(pid) = read_pid_file(path) else {
                    self.error("pid_file");
                    return HashMap::new();
                };
                let spid = Pid::from_u32(pid);
                self.sys.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&[spid]),
                    true,
                    ProcessRefreshKind::nothing().without_tasks(),
                );
                self.sys
                    .process(spid)
                    .filter(|p| p.exists() && alive(p))
                    .map(|p| (pid, p.start_time()))
                    .into_iter()
                    .collect()
            }
        }
    }

    /// Uninstalls the collectors of processes no longer selected and installs collectors for
    /// the new ones.
    fn reconcile(&mut self, i: usize, found: HashMap<u32, u64>) {
        let gone: Vec<u32> = self.matchers[i]
            .tracked
            .iter()
            .filter(|(pid, t)| found.get(pid) != Some(&t.start) || !t.metrics.is_alive())
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            self.untrack(i, pid);
        }
        let tracked: HashSet<u32> = self.matchers[i].tracked.keys().copied().collect();
        let mut new: Vec<(u32, u64)> = found
            .iter()
            .filter(|(pid, _)| !tracked.contains(pid))
            .map(|(p, s)| (*p, *s))
            .collect();
        new.sort_unstable();
        for (pid, start) in new {
            self.track(i, pid, start);
        }
    }

    /// Installs a process collector for `pid` in group `i`.
    fn track(&mut self, i: usize, pid: u32, start: u64) {
        let installed = ProcessCollector::for_pid(pid)
            .registry(&self.registry)
            .name_prefix(PROCSTAT_PREFIX)
            .on_collect(false)
            .label(MATCH_LABEL, self.matchers[i].label.clone())
            .pid_label()
            .executable_name_label()
            .install();
        match installed {
            Ok(metrics) => {
                let reading = metrics.reading().unwrap_or_default();
                let values: Vec<&str> = metrics.labels().iter().map(|(_, v)| v.as_str()).collect();
                self.families
                    .start_time
                    .with(&values)
                    .set(reading.start_time());
                let mut counted = [0.0; 2];
                if !self.first {
                    for (c, t) in counted.iter_mut().zip(reading.cpu_time()) {
                        *c = *t;
                    }
                }
                self.matchers[i].tracked.insert(
                    pid,
                    Tracked {
                        metrics,
                        start,
                        counted,
                        fresh: true,
                    },
                );
            }
            Err(sonde_process::Error::NoSuchProcess { .. }) => {
                let reason = if process_exists(pid) {
                    read_error::DENIED
                } else {
                    read_error::EXITED
                };
                self.read_error(i, reason, pid);
            }
            Err(_) => self.error("install"),
        }
    }

    fn untrack(&mut self, i: usize, pid: u32) {
        if let Some(t) = self.matchers[i].tracked.remove(&pid) {
            t.metrics.uninstall();
            let values: Vec<&str> = t.metrics.labels().iter().map(|(_, v)| v.as_str()).collect();
            self.families.start_time.remove(&values);
        }
    }

    /// Reads group `i`'s processes (those installed in this collection were just read),
    /// drops those that exited, and sets the group's totals.
    fn read(&mut self, i: usize) {
        let mut totals = Totals::default();
        let mut gone = Vec::new();
        let mut fd_denied = Vec::new();
        let m = &mut self.matchers[i];
        for (&pid, t) in &mut m.tracked {
            let fresh = std::mem::take(&mut t.fresh);
            let reading = if fresh || t.metrics.collect() {
                t.metrics.reading()
            } else {
                None
            };
            let Some(r) = reading else {
                gone.push(pid);
                continue;
            };
            for ((counter, counted), &now) in m
                .group
                .cpu_time
                .iter()
                .zip(&mut t.counted)
                .zip(r.cpu_time())
            {
                if now > *counted {
                    counter.add(now - *counted);
                    *counted = now;
                }
            }
            if r.open_fds().is_none()
                && r.open_fds_error() == Some(std::io::ErrorKind::PermissionDenied)
            {
                fd_denied.push(pid);
            }
            totals.add(&r);
        }
        m.group.set(&self.families, &m.label, &totals);
        for pid in gone {
            self.untrack(i, pid);
        }
        for pid in fd_denied {
            self.read_error(i, read_error::FD_DENIED, pid);
        }
    }
}

/// Sums over a group's processes.
#[derive(Default)]
struct Totals {
    processes: u64,
    cpu_utilization: [f64; 2],
    resident: u64,
    virtual_: u64,
    threads: u64,
    open_fds: u64,
    /// Some process's descriptors could not be read: the total would be too low.
    open_fds_missing: bool,
}

impl Totals {
    fn add(&mut self, r: &Reading) {
        self.processes += 1;
        for (sum, u) in self.cpu_utilization.iter_mut().zip(r.cpu_utilization()) {
            *sum += u;
        }
        self.resident = self.resident.saturating_add(r.resident_bytes());
        self.virtual_ = self.virtual_.saturating_add(r.virtual_bytes());
        self.threads += r.threads().unwrap_or(0);
        match r.open_fds() {
            Some(n) => self.open_fds += n,
            None => self.open_fds_missing = true,
        }
    }
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Group {
    fn set(&mut self, f: &Families, label: &str, t: &Totals) {
        self.process_count.set(as_i64(t.processes));
        for (g, u) in self.cpu_utilization.iter().zip(t.cpu_utilization) {
            g.set(u);
        }
        self.memory_usage.set(as_i64(t.resident));
        self.memory_virtual.set(as_i64(t.virtual_));
        if let Some(g) = &self.threads {
            g.set(as_i64(t.threads));
        }
        if t.open_fds_missing {
            if self.open_fds.take().is_some() {
                f.open_fds.remove(&[label]);
            }
        } else {
            self.open_fds
                .get_or_insert_with(|| f.open_fds.with(&[label]))
                .set(as_i64(t.open_fds));
        }
    }
}

/// Whether `/proc/<pid>` still exists (the process runs but cannot be read), on Linux.
fn process_exists(pid: u32) -> bool {
    cfg!(target_os = "linux") && Path::new("/proc").join(pid.to_string()).exists()
}

fn name_matches(p: &Process, name: &str) -> bool {
    let comm = p.name();
    if comm == name {
        return true;
    }
    match p.exe().and_then(Path::file_name) {
        Some(exe) => exe == name,
        // The command name is truncated to 15 bytes on Linux.
        None => name.len() > 15 && name.as_bytes().get(..15) == Some(comm.as_encoded_bytes()),
    }
}

fn pattern_matches(p: &Process, re: &Regex) -> bool {
    if !p.cmd().is_empty() {
        let line = p
            .cmd()
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        if re.is_match(&line) {
            return true;
        }
    }
    if let Some(exe) = p.exe().and_then(Path::file_name)
        && re.is_match(&exe.to_string_lossy())
    {
        return true;
    }
    re.is_match(&p.name().to_string_lossy())
}

/// The pid in a pid file: the first line, trimmed; `None` if the file is missing, empty, too
/// long or not a positive number.
fn read_pid_file(path: &Path) -> Option<u32> {
    let mut buf = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(64)
        .read_to_string(&mut buf)
        .ok()?;
    let pid: u32 = buf.lines().next()?.trim().parse().ok()?;
    (pid > 0).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_matchers_compile_once_and_refuse_bad_patterns() {
        let e = CheckedMatcher::new(ProcessMatcher::Pattern("(".into())).unwrap_err();
        assert!(matches!(e, Error::InvalidRegex { .. }), "{e}");
        let m = CheckedMatcher::new(ProcessMatcher::Pattern("^post".into())).unwrap();
        assert!(m.regex.as_ref().unwrap().is_match("postgres -D /data"));
        assert_eq!(m, m.clone());
        assert!(CheckedMatcher::new(ProcessMatcher::Name(String::new())).is_ok());
        // The collector runs the compiled pattern it was given.
        let registry = Registry::new();
        let metrics = ProcstatCollector::checked(m)
            .checked_matcher(CheckedMatcher::new(ProcessMatcher::Name("init".into())).unwrap())
            .registry(&registry)
            .install()
            .unwrap();
        drop(metrics);
    }

    #[test]
    fn matcher_labels() {
        assert_eq!(
            ProcessMatcher::Name("nginx".into()).to_string(),
            "name:nginx"
        );
        assert_eq!(
            ProcessMatcher::Pattern("^postgres".into()).to_string(),
            "pattern:^postgres"
        );
        assert_eq!(
            ProcessMatcher::PidFile("/run/a.pid".into()).to_string(),
            "pid_file:/run/a.pid"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_process_that_vanished_is_a_read_error_counted_each_time_and_logged_once() {
        let registry = Registry::new();
        let procstat = ProcstatCollector::new(ProcessMatcher::Name("sonde-no-such-name".into()))
            .registry(&registry)
            .install()
            .unwrap();
        // A pid that matched, then exited before it could be read.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        child.kill().unwrap();
        child.wait().unwrap();
        let ((), lines) = sonde_core::testing::capture_diagnostics(|| {
            let mut guard = procstat.shared.state();
            let state = guard.as_mut().unwrap();
            for _ in 0..3 {
                state.track(0, pid, 0);
            }
        });
        assert!(procstat.matches()[0].1.is_empty());
        let snap = registry.snapshot();
        let errors = snap
            .point(
                PROCSTAT_READ_ERRORS,
                &[
                    (MATCH_LABEL, "name:sonde-no-such-name"),
                    (REASON_LABEL, read_error::EXITED),
                ],
            )
            .and_then(|p| p.number())
            .map(|n| n.as_f64());
        assert_eq!(errors, Some(3.0));
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].starts_with("WARN")
                && lines[0].contains("exited before it could be read")
                && lines[0].contains("reason=\"exited\"")
                && lines[0].contains(&format!("pid={pid}")),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn reads_pid_files() {
        let dir = std::env::temp_dir().join(format!("sonde-host-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        assert_eq!(read_pid_file(&write("ok", "1234\n")), Some(1234));
        assert_eq!(read_pid_file(&write("spaces", "  77  \nextra\n")), Some(77));
        assert_eq!(read_pid_file(&write("zero", "0\n")), None);
        assert_eq!(read_pid_file(&write("garbage", "hello\n")), None);
        assert_eq!(read_pid_file(&write("empty", "")), None);
        assert_eq!(read_pid_file(&write("negative", "-5")), None);
        assert_eq!(read_pid_file(&write("long", &"9".repeat(100))), None);
        assert_eq!(read_pid_file(&dir.join("missing")), None);
        assert_eq!(read_pid_file(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
