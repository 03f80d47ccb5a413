//! Procstat: finding a child by name, pattern and pid file, following it as it exits,
//! bad pid files, label compatibility with other process collectors.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{errors, label, series, value};
use sonde_core::Registry;
use sonde_host::{Error, ProcessMatcher, ProcstatCollector, with_procstat_labels};
use sonde_process::ProcessCollector;

/// A `sleep` child, killed and reaped when dropped.
struct Sleeper(Child);

impl Sleeper {
    fn spawn(arg: &str) -> Self {
        Sleeper(Command::new("sleep").arg(arg).spawn().unwrap())
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn kill(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The labels of a `sleep` process's series (its executable may be a multi-call binary).
fn labels(pid: &str, matcher: &str) -> Vec<(&'static str, String)> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    vec![
        ("process.pid", pid.to_owned()),
        (
            "process.executable.name",
            exe.file_name().unwrap().to_string_lossy().into_owned(),
        ),
        ("process.match", matcher.to_owned()),
    ]
}

fn as_refs<'a>(labels: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    labels.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn pids_of(registry: &Registry, name: &str) -> Vec<String> {
    series(&registry.snapshot(), name)
        .into_iter()
        .filter_map(|(l, _)| label(&l, "process.pid").map(str::to_owned))
        .collect()
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sonde-procstat-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn finds_a_child_by_name_and_drops_it_when_it_exits() {
    let registry = Registry::new();
    let mut child = Sleeper::spawn("30");
    let pid = child.pid().to_string();
    let procstat = ProcstatCollector::new(ProcessMatcher::Name("sleep".into()))
        .registry(&registry)
        .install()
        .unwrap();
    let owned = labels(&pid, "name:sleep");
    let l = as_refs(&owned);
    let snap = registry.snapshot();
    assert!(value(&snap, "process.memory.usage", &l).unwrap() > 0.0);
    assert!(
        value(
            &snap,
            "process.cpu.time",
            &[[("cpu.mode", "user")].as_slice(), &l].concat()
        )
        .is_some()
    );
    let start = value(&snap, "process.start_time", &l).unwrap();
    assert!((now_secs() - start).abs() < 60.0, "started at {start}");
    let matches = value(
        &snap,
        "sonde.procstat.matches",
        &[("process.match", "name:sleep")],
    )
    .unwrap();
    assert!(matches >= 1.0);
    let (label_value, pids) = procstat.matches().remove(0);
    assert_eq!(label_value, "name:sleep");
    assert!(pids.contains(&child.pid()));

    child.kill();
    procstat.collect();
    assert!(!procstat.matches()[0].1.contains(&child.pid()));
    for name in [
        "process.memory.usage",
        "process.cpu.time",
        "process.start_time",
        "process.uptime",
    ] {
        assert!(
            !pids_of(&registry, name).contains(&pid),
            "{name} still has {pid}"
        );
    }
}

#[test]
fn finds_a_child_by_pattern_on_its_command_line() {
    let registry = Registry::new();
    // A duration unique to this test run.
    let arg = format!("3{}.5", std::process::id() % 1000);
    let child = Sleeper::spawn(&arg);
    let pattern = format!(r"^sleep {}$", regex_escape(&arg));
    let other = Sleeper::spawn("31.25");
    let procstat = ProcstatCollector::new(ProcessMatcher::Pattern(pattern.clone()))
        .registry(&registry)
        .install()
        .unwrap();
    let matcher = format!("pattern:{pattern}");
    assert_eq!(
        procstat.matches(),
        vec![(matcher.clone(), vec![child.pid()])]
    );
    let pid = child.pid().to_string();
    assert!(
        value(
            &registry.snapshot(),
            "process.memory.usage",
            &as_refs(&labels(&pid, &matcher))
        )
        .is_some()
    );
    assert!(!pids_of(&registry, "process.memory.usage").contains(&other.pid().to_string()));
    assert_eq!(
        value(
            &registry.snapshot(),
            "sonde.procstat.matches",
            &[("process.match", matcher.as_str())]
        ),
        Some(1.0)
    );
    // The executable name matches a pattern too.
    let by_exe = ProcstatCollector::new(ProcessMatcher::Pattern("^slee+p$".into()))
        .registry(&registry)
        .install()
        .unwrap();
    let found = &by_exe.matches()[0].1;
    assert!(found.contains(&child.pid()) && found.contains(&other.pid()));
}

fn regex_escape(s: &str) -> String {
    s.replace('.', r"\.")
}

#[test]
fn follows_the_pid_in_a_pid_file() {
    let registry = Registry::new();
    let dir = temp_dir("pidfile");
    let path = dir.join("app.pid");
    let mut child = Sleeper::spawn("30");
    std::fs::write(&path, format!("{}\n", child.pid())).unwrap();
    let procstat = ProcstatCollector::new(ProcessMatcher::PidFile(path.clone()))
        .registry(&registry)
        .on_collect(true)
        .install()
        .unwrap();
    let matcher = format!("pid_file:{}", path.display());
    assert_eq!(
        procstat.matches(),
        vec![(matcher.clone(), vec![child.pid()])]
    );
    let pid = child.pid().to_string();
    assert!(
        value(
            &registry.snapshot(),
            "process.memory.usage",
            &as_refs(&labels(&pid, &matcher))
        )
        .is_some()
    );

    // The service restarts: new pid in the file, found at the next registry collection.
    child.kill();
    let next = Sleeper::spawn("30");
    std::fs::write(&path, format!("{}\n", next.pid())).unwrap();
    let snap = registry.snapshot();
    assert_eq!(procstat.matches()[0].1, vec![next.pid()]);
    // The hook ran before the process collectors' ones were read: the new one shows at the
    // next collection, the old one is gone already.
    assert!(!pids_of(&registry, "process.memory.usage").contains(&pid));
    assert!(pids_of(&registry, "process.memory.usage").contains(&next.pid().to_string()));
    assert_eq!(
        value(
            &snap,
            "sonde.procstat.matches",
            &[("process.match", matcher.as_str())]
        ),
        Some(1.0)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_garbage_and_stale_pid_files_match_nothing() {
    let registry = Registry::new();
    let dir = temp_dir("bad");
    let garbage = dir.join("garbage.pid");
    std::fs::write(&garbage, "not a pid\n").unwrap();
    let stale = dir.join("stale.pid");
    std::fs::write(&stale, "4194304999\n").unwrap(); // beyond any pid_max
    let gone = dir.join("gone.pid");
    let mut child = Sleeper::spawn("30");
    std::fs::write(&gone, child.pid().to_string()).unwrap();
    child.kill();
    let procstat = ProcstatCollector::new(ProcessMatcher::PidFile(dir.join("missing.pid")))
        .matcher(ProcessMatcher::PidFile(garbage))
        .matcher(ProcessMatcher::PidFile(stale))
        .matcher(ProcessMatcher::PidFile(gone))
        .matcher(ProcessMatcher::PidFile(dir.clone())) // a directory
        .registry(&registry)
        .install()
        .unwrap();
    procstat.collect();
    assert!(procstat.matches().iter().all(|(_, pids)| pids.is_empty()));
    let snap = registry.snapshot();
    // Missing, garbage and a directory, at install and at the collection; the stale pids are
    // just not running.
    assert_eq!(errors(&snap, "procstat", "pid_file"), 6.0);
    assert!(
        series(&snap, "sonde.procstat.matches")
            .iter()
            .all(|(_, v)| *v == 0.0)
    );
    assert!(series(&snap, "process.memory.usage").is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_exited_but_unreaped_child_is_dropped() {
    let registry = Registry::new();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let dir = temp_dir("zombie");
    let path = dir.join("z.pid");
    std::fs::write(&path, child.id().to_string()).unwrap();
    let procstat = ProcstatCollector::new(ProcessMatcher::PidFile(path))
        .registry(&registry)
        .install()
        .unwrap();
    assert_eq!(procstat.matches()[0].1, vec![child.id()]);
    child.kill().unwrap(); // a zombie until waited for
    std::thread::sleep(Duration::from_millis(50));
    procstat.collect();
    assert!(procstat.matches()[0].1.is_empty());
    assert!(series(&registry.snapshot(), "process.memory.usage").is_empty());
    child.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn uninstall_removes_every_series() {
    let registry = Registry::new();
    let child = Sleeper::spawn("30");
    let procstat = ProcstatCollector::new(ProcessMatcher::Name("sleep".into()))
        .registry(&registry)
        .install()
        .unwrap();
    assert!(pids_of(&registry, "process.memory.usage").contains(&child.pid().to_string()));
    procstat.uninstall();
    procstat.uninstall();
    assert!(!procstat.is_installed());
    procstat.collect();
    let snap = registry.snapshot();
    for name in [
        "process.memory.usage",
        "process.start_time",
        "sonde.procstat.matches",
    ] {
        assert!(series(&snap, name).is_empty(), "{name}");
    }
}

#[test]
fn process_collectors_of_a_registry_need_procstat_labels() {
    // An unlabelled process collector first: procstat refuses with a clear error.
    let registry = Registry::new();
    let _own = ProcessCollector::current()
        .registry(&registry)
        .install()
        .unwrap();
    let err = ProcstatCollector::new(ProcessMatcher::Name("sleep".into()))
        .registry(&registry)
        .install()
        .unwrap_err();
    assert!(
        matches!(err, Error::IncompatibleProcessLabels { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("with_procstat_labels"));

    // The daemon's own process with procstat's labels: both work.
    let registry = Registry::new();
    let _own = with_procstat_labels(ProcessCollector::current().registry(&registry), "self")
        .install()
        .unwrap();
    let child = Sleeper::spawn("30");
    let _procstat = ProcstatCollector::new(ProcessMatcher::Name("sleep".into()))
        .registry(&registry)
        .install()
        .unwrap();
    let pids = pids_of(&registry, "process.memory.usage");
    assert!(pids.contains(&std::process::id().to_string()));
    assert!(pids.contains(&child.pid().to_string()));
}

#[test]
fn an_invalid_pattern_is_an_install_error() {
    let err = ProcstatCollector::new(ProcessMatcher::Pattern("(unclosed".into()))
        .registry(&Registry::new())
        .install()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRegex { .. }), "{err}");
}
