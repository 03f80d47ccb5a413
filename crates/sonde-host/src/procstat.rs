//! Procstat: per-process metrics for the processes that match a name, a pattern or a pid file,
//! followed as they start and exit.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use regex::Regex;
use sonde_core::{Counter, Family, Gauge, Registry, Unit};
use sonde_process::{EXECUTABLE_NAME_LABEL, PID_LABEL, ProcessCollector, ProcessMetrics};
use sysinfo::{
    Pid, Process, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, ThreadKind,
    UpdateKind,
};

use crate::host::collector_errors;
use crate::{Error, MATCH_LABEL, PROCESS_START_TIME, PROCSTAT_MATCHES};

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

/// Adds the labels procstat uses to a [`ProcessCollector`]: `process.pid`,
/// `process.executable.name` and `process.match` (with `process_match` as value), in that order.
///
/// All the process collectors of one registry need the same label names, so a daemon that
/// reports its own process next to procstat's installs it like this:
///
/// ```
/// # let registry = sonde_core::Registry::new();
/// let own = sonde_host::with_procstat_labels(
///     sonde_process::ProcessCollector::current().registry(&registry),
///     "self",
/// )
/// .install()?;
/// # Ok::<(), sonde_process::Error>(())
/// ```
pub fn with_procstat_labels(
    collector: ProcessCollector,
    process_match: impl Into<Cow<'static, str>>,
) -> ProcessCollector {
    collector
        .pid_label()
        .executable_name_label()
        .label(MATCH_LABEL, process_match)
}

/// The label names of procstat's process families (after `cpu.mode` on the CPU families).
pub const PROCSTAT_LABELS: [&str; 3] = [PID_LABEL, EXECUTABLE_NAME_LABEL, MATCH_LABEL];

/// Describes which processes to follow and where to register their metrics; finish with
/// [`install`](Self::install).
#[derive(Debug, Clone)]
#[must_use = "call .install() to start collecting"]
pub struct ProcstatCollector {
    matchers: Vec<ProcessMatcher>,
    registry: Option<Registry>,
    on_collect: bool,
}

impl ProcstatCollector {
    /// Follows the processes `matcher` selects.
    pub fn new(matcher: ProcessMatcher) -> Self {
        ProcstatCollector {
            matchers: vec![matcher],
            registry: None,
            on_collect: false,
        }
    }

    /// Follows the processes `matcher` selects too. One collector with several matchers lists
    /// the processes once per collection, where several collectors list them once each.
    pub fn matcher(mut self, matcher: ProcessMatcher) -> Self {
        self.matchers.push(matcher);
        self
    }

    /// Registers into `registry` instead of [`Registry::global`].
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Also looks for matching processes at every collection of the registry, from a collect
    /// hook, instead of only when [`ProcstatMetrics::collect`] is called (off by default).
    /// The metrics of the processes found are refreshed at every collection either way.
    pub fn on_collect(mut self, on: bool) -> Self {
        self.on_collect = on;
        self
    }

    /// Checks the matchers and the registry, registers the families, looks for matching
    /// processes once (installing a [`ProcessCollector`] for each) and, with
    /// [`on_collect`](Self::on_collect), adds a collect hook.
    pub fn install(self) -> Result<ProcstatMetrics, Error> {
        let registry = self.registry.unwrap_or_else(|| Registry::global().clone());
        check_process_labels(&registry)?;
        let errors = collector_errors(&registry)?;
        let start_time = registry
            .gauge_f64(PROCESS_START_TIME)
            .description("When the process started, in seconds since the UNIX epoch.")
            .unit(Unit::Seconds)
            .labels(PROCSTAT_LABELS)
            .build()?;
        let matches = registry
            .gauge(PROCSTAT_MATCHES)
            .description("Processes that match, per matcher.")
            .unit(Unit::Count("{process}".into()))
            .labels([MATCH_LABEL])
            .build()?;
        let mut entries = Vec::with_capacity(self.matchers.len());
        for matcher in self.matchers {
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
            let label = matcher.to_string();
            entries.push(Matcher {
                matches: matches.with(&[label.as_str()]),
                label,
                regex,
                matcher,
                tracked: HashMap::new(),
            });
        }
        let sys = System::new().map_err(|e| Error::System {
            message: e.to_string(),
        })?;
        let mut state = State {
            registry: registry.clone(),
            matchers: entries,
            sys,
            start_time,
            matches,
            errors,
            own_pid: std::process::id(),
        };
        state.update();
        let shared = Arc::new(Shared {
            installed: AtomicBool::new(true),
            state: Mutex::new(Some(state)),
        });
        if self.on_collect {
            let hook = shared.clone();
            registry.add_collect_hook(move || hook.collect(false));
        }
        Ok(ProcstatMetrics { shared })
    }
}

/// Fails if the registry already has process families with other label names than procstat's
/// (say a `ProcessCollector::current()` without labels): the process collectors would fail to
/// register.
fn check_process_labels(registry: &Registry) -> Result<(), Error> {
    let snapshot = registry.snapshot_families(&[sonde_process::MEMORY_USAGE]);
    if let Some(f) = snapshot.families.first() {
        let found: Vec<String> = f.meta.label_names().map(str::to_owned).collect();
        if found != PROCSTAT_LABELS {
            return Err(Error::IncompatibleProcessLabels { found });
        }
    }
    Ok(())
}

/// Installed procstat collection. Cheap to clone, `Send` and `Sync`; dropping it does not
/// stop the process collectors it installed (their collect hooks keep refreshing them), nor a
/// collect hook ([`ProcstatCollector::on_collect`]).
#[derive(Clone)]
pub struct ProcstatMetrics {
    shared: Arc<Shared>,
}

impl fmt::Debug for ProcstatMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcstatMetrics")
            .field("matches", &self.matches())
            .finish()
    }
}

impl ProcstatMetrics {
    /// Looks for matching processes now: installs a process collector for each new one and
    /// uninstalls those of processes that exited (their series are removed). Call it from any
    /// thread; a collection in progress on another thread is waited for. Never panics.
    pub fn collect(&self) {
        self.shared.collect(true);
    }

    /// The `process.match` value of each matcher and the pids it follows, sorted.
    pub fn matches(&self) -> Vec<(String, Vec<u32>)> {
        let guard = lock(&self.shared.state);
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
        self.shared.installed.load(Ordering::Relaxed)
    }

    /// Stops looking, uninstalls every process collector and removes the series. Idempotent.
    pub fn uninstall(&self) {
        self.shared.installed.store(false, Ordering::Relaxed);
        if let Some(mut state) = lock(&self.shared.state).take() {
            for i in 0..state.matchers.len() {
                let pids: Vec<u32> = state.matchers[i].tracked.keys().copied().collect();
                for pid in pids {
                    state.untrack(i, pid);
                }
                let label = state.matchers[i].label.clone();
                state.matches.remove(&[label]);
            }
        }
    }
}

struct Shared {
    installed: AtomicBool,
    state: Mutex<Option<State>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn collect(&self, wait: bool) {
        if !self.installed.load(Ordering::Relaxed) {
            return;
        }
        let mut guard = if wait {
            lock(&self.state)
        } else {
            match self.state.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            }
        };
        let Some(state) = guard.as_mut() else { return };
        if catch_unwind(AssertUnwindSafe(|| state.update())).is_err() {
            state.error("panic");
        }
    }
}

struct Tracked {
    metrics: ProcessMetrics,
    /// Start time (UNIX seconds) when found: a different one means the pid was reused.
    start: u64,
}

struct Matcher {
    matcher: ProcessMatcher,
    label: String,
    regex: Option<Regex>,
    matches: Gauge,
    tracked: HashMap<u32, Tracked>,
}

struct State {
    registry: Registry,
    matchers: Vec<Matcher>,
    sys: System,
    start_time: Family<Gauge<f64>>,
    matches: Family<Gauge>,
    errors: Family<Counter>,
    own_pid: u32,
}

impl State {
    fn error(&self, reason: &'static str) {
        self.errors.with(&["procstat", reason]).inc();
    }

    fn update(&mut self) {
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
            let collector = ProcessCollector::for_pid(pid).registry(&self.registry);
            match with_procstat_labels(collector, self.matchers[i].label.clone()).install() {
                Ok(metrics) => {
                    let values: Vec<&str> =
                        metrics.labels().iter().map(|(_, v)| v.as_str()).collect();
                    self.start_time.with(&values).set(start as f64);
                    self.matchers[i]
                        .tracked
                        .insert(pid, Tracked { metrics, start });
                }
                // Exited in the meantime.
                Err(sonde_process::Error::NoSuchProcess { .. }) => {}
                Err(_) => self.error("install"),
            }
        }
        let m = &self.matchers[i];
        m.matches
            .set(i64::try_from(found.len()).unwrap_or(i64::MAX));
    }

    fn untrack(&mut self, i: usize, pid: u32) {
        if let Some(t) = self.matchers[i].tracked.remove(&pid) {
            t.metrics.uninstall();
            let values: Vec<&str> = t.metrics.labels().iter().map(|(_, v)| v.as_str()).collect();
            self.start_time.remove(&values);
        }
    }
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
