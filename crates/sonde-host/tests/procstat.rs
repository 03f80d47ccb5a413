//! Procstat: finding a child by name, pattern and pid file, following it as it exits, bad pid
//! files, group totals, its own names next to the service's `process.*`, and read errors (as
//! another user, for real).

#![cfg(target_os = "linux")]

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{assert_no_series, errors, label, series, sum, value};
use sonde_core::Registry;
use sonde_host::{Error, ProcessMatcher, ProcstatCollector, ProcstatMetrics};
use sonde_process::ProcessCollector;
use sonde_testkit::sleeper::{Sleeper, executable_name};
use sonde_testkit::{require_program, succeeded};

/// The labels of a `sleep` process's series (its executable may be a multi-call binary).
fn labels(pid: &str, matcher: &str) -> Vec<(&'static str, String)> {
    vec![
        ("process.match", matcher.to_owned()),
        ("process.pid", pid.to_owned()),
        (
            "process.executable.name",
            executable_name(pid.parse().unwrap()),
        ),
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

/// Asserts that `procstat` has one matcher, `matcher`, that follows `child` alone, and that
/// the child has series; returns its pid as a label value.
fn assert_follows_only(
    procstat: &ProcstatMetrics,
    registry: &Registry,
    matcher: &str,
    child: &Sleeper,
) -> String {
    assert_eq!(
        procstat.matches(),
        vec![(matcher.to_owned(), vec![child.pid()])]
    );
    let pid = child.pid().to_string();
    assert!(
        value(
            &registry.snapshot(),
            "procstat.memory.usage",
            &as_refs(&labels(&pid, matcher))
        )
        .is_some()
    );
    pid
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
    assert!(value(&snap, "procstat.memory.usage", &l).unwrap() > 0.0);
    assert!(
        value(
            &snap,
            "procstat.cpu.time",
            &[[("cpu.mode", "user")].as_slice(), &l].concat()
        )
        .is_some()
    );
    let start = value(&snap, "procstat.start_time", &l).unwrap();
    assert!((now_secs() - start).abs() < 60.0, "started at {start}");
    let matches = value(
        &snap,
        "procstat.group.process.count",
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
        "procstat.memory.usage",
        "procstat.cpu.time",
        "procstat.start_time",
        "procstat.uptime",
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
    let sleep = UniqueSleep::new(3, "5");
    let child = Sleeper::spawn(&sleep.arg);
    let other = Sleeper::spawn("31.25");
    let procstat = sleep.install(&registry);
    let matcher = sleep.matcher();
    assert_follows_only(&procstat, &registry, &matcher, &child);
    assert!(!pids_of(&registry, "procstat.memory.usage").contains(&other.pid().to_string()));
    assert_eq!(
        value(
            &registry.snapshot(),
            "procstat.group.process.count",
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

/// A `sleep` duration unique to this test run, and the pattern that matches its command line
/// alone.
struct UniqueSleep {
    arg: String,
    pattern: String,
}

impl UniqueSleep {
    /// `{lead}{pid % 1000}.{fraction}` seconds: each test has its own `lead` and `fraction`.
    fn new(lead: u32, fraction: &str) -> Self {
        let arg = format!("{lead}{}.{fraction}", std::process::id() % 1000);
        let pattern = format!(r"^sleep {}$", arg.replace('.', r"\."));
        UniqueSleep { arg, pattern }
    }

    /// The `process.match` value of the pattern.
    fn matcher(&self) -> String {
        format!("pattern:{}", self.pattern)
    }

    /// A procstat collector of the pattern, installed into `registry`.
    fn install(&self, registry: &Registry) -> ProcstatMetrics {
        ProcstatCollector::new(ProcessMatcher::Pattern(self.pattern.clone()))
            .registry(registry)
            .install()
            .unwrap()
    }
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
    let pid = assert_follows_only(&procstat, &registry, &matcher, &child);

    // The service restarts: new pid in the file, found at the next registry collection.
    child.kill();
    let next = Sleeper::spawn("30");
    std::fs::write(&path, format!("{}\n", next.pid())).unwrap();
    let snap = registry.snapshot();
    assert_eq!(procstat.matches()[0].1, vec![next.pid()]);
    // The hook ran before the process collectors' ones were read: the new one shows at the
    // next collection, the old one is gone already.
    assert!(!pids_of(&registry, "procstat.memory.usage").contains(&pid));
    assert!(pids_of(&registry, "procstat.memory.usage").contains(&next.pid().to_string()));
    assert_eq!(
        value(
            &snap,
            "procstat.group.process.count",
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
        series(&snap, "procstat.group.process.count")
            .iter()
            .all(|(_, v)| *v == 0.0)
    );
    assert!(series(&snap, "procstat.memory.usage").is_empty());
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
    assert!(series(&registry.snapshot(), "procstat.memory.usage").is_empty());
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
    assert!(pids_of(&registry, "procstat.memory.usage").contains(&child.pid().to_string()));
    procstat.uninstall();
    procstat.uninstall();
    assert!(!procstat.is_installed());
    procstat.collect();
    assert_no_series(
        &registry,
        &[
            "procstat.memory.usage",
            "procstat.start_time",
            "procstat.group.process.count",
        ],
    );
}

#[test]
fn an_invalid_pattern_is_an_install_error() {
    let err = ProcstatCollector::new(ProcessMatcher::Pattern("(unclosed".into()))
        .registry(&Registry::new())
        .install()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRegex { .. }), "{err}");
}

/// Every series of `name` for group `matcher`, by pid.
fn per_pid(registry: &Registry, name: &str, matcher: &str) -> Vec<(String, f64)> {
    series(&registry.snapshot(), name)
        .into_iter()
        .filter(|(l, _)| label(l, "process.match") == Some(matcher))
        .filter_map(|(l, v)| Some((label(&l, "process.pid")?.to_owned(), v)))
        .collect()
}

#[test]
fn group_totals_are_the_sums_over_the_groups_processes() {
    let registry = Registry::new();
    let sleep = UniqueSleep::new(4, "25");
    let mut kids: Vec<Sleeper> = (0..3).map(|_| Sleeper::spawn(&sleep.arg)).collect();
    let matcher = sleep.matcher();
    let procstat = sleep.install(&registry);
    let group = [("process.match", matcher.as_str())];
    let check = |n: usize| {
        let snap = registry.snapshot();
        assert_eq!(
            value(&snap, "procstat.group.process.count", &group),
            Some(n as f64)
        );
        for (total, each) in [
            ("procstat.group.memory.usage", "procstat.memory.usage"),
            ("procstat.group.memory.virtual", "procstat.memory.virtual"),
            ("procstat.group.thread.count", "procstat.thread.count"),
            (
                "procstat.group.open_file_descriptor.count",
                "procstat.open_file_descriptor.count",
            ),
        ] {
            assert_eq!(series(&snap, each).len(), n, "{each}");
            assert_eq!(
                value(&snap, total, &group),
                Some(sum(&snap, each, &group)),
                "{total}"
            );
        }
        for mode in ["user", "system"] {
            let l = [("cpu.mode", mode), group[0]];
            let total = value(&snap, "procstat.group.cpu.utilization", &l).unwrap();
            let each = sum(&snap, "procstat.cpu.utilization", &l);
            assert!((total - each).abs() < 1e-9, "{mode}: {total} vs {each}");
        }
        snap
    };
    let snap = check(3);
    assert_eq!(
        value(&snap, "procstat.group.thread.count", &group),
        Some(3.0)
    );
    // Found at install: the CPU time counter starts at their sum.
    for mode in ["user", "system"] {
        let l = [("cpu.mode", mode), group[0]];
        let total = value(&snap, "procstat.group.cpu.time", &l).unwrap();
        let each = sum(&snap, "procstat.cpu.time", &l);
        assert!((total - each).abs() < 1e-9, "{mode}: {total} vs {each}");
    }
    let cpu_before = sum(&snap, "procstat.group.cpu.time", &group);

    // One exits: gone from every sum at the next collection; the counter does not go down.
    kids.pop().unwrap().kill();
    procstat.collect();
    let snap = check(2);
    assert_eq!(per_pid(&registry, "procstat.uptime", &matcher).len(), 2);
    assert!(sum(&snap, "procstat.group.cpu.time", &group) >= cpu_before);
    // None left: zeros, not stale values.
    kids.clear();
    procstat.collect();
    check(0);
}

#[test]
fn a_process_found_late_adds_only_the_cpu_time_it_uses_from_then_on() {
    let registry = Registry::new();
    let sleep = UniqueSleep::new(5, "5");
    let matcher = sleep.matcher();
    let procstat = sleep.install(&registry);
    let group = [("process.match", matcher.as_str())];
    let before = sum(&registry.snapshot(), "procstat.group.cpu.time", &group);
    assert_eq!(before, 0.0);
    // A shell that burns CPU time, then becomes `sleep`.
    let kid = Sleeper(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exec sleep {}",
                sleep.arg
            ))
            .spawn()
            .unwrap(),
    );
    let comm = format!("/proc/{}/comm", kid.pid());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
        assert!(
            std::time::Instant::now() < deadline,
            "the shell never exec'd"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    procstat.collect();
    let snap = registry.snapshot();
    let pid = kid.pid().to_string();
    let own = sum(&snap, "procstat.cpu.time", &[("process.pid", pid.as_str())]);
    assert!(own >= 0.05, "the shell burnt {own} s");
    // Its series carries its whole CPU time; the group's counter only what came after.
    assert!(sum(&snap, "procstat.group.cpu.time", &group) < own / 2.0);
    assert_eq!(
        value(&snap, "procstat.group.process.count", &group),
        Some(1.0)
    );
}

#[test]
fn procstat_does_not_mix_with_the_services_own_process_metrics() {
    // The service's own process, unlabelled, and procstat in the same registry.
    let registry = Registry::new();
    let own = ProcessCollector::current()
        .registry(&registry)
        .install()
        .unwrap();
    let child = Sleeper::spawn("30");
    let _procstat = ProcstatCollector::new(ProcessMatcher::Name("sleep".into()))
        .registry(&registry)
        .install()
        .unwrap();
    let snap = registry.snapshot();
    // process.*: this process alone, as a dashboard summing process_* by instance expects.
    for name in [
        "process.memory.usage",
        "process.memory.virtual",
        "process.thread.count",
        "process.uptime",
        "process.open_file_descriptor.count",
    ] {
        let s = series(&snap, name);
        assert_eq!(s.len(), 1, "{name}: {s:?}");
        assert!(s[0].0.is_empty(), "{name}: {s:?}");
    }
    assert_eq!(series(&snap, "process.cpu.time").len(), 2); // user, system
    assert_eq!(
        value(&snap, "process.memory.usage", &[]),
        Some(own.reading().unwrap().resident_bytes() as f64)
    );
    // procstat.*: the child, under its own names.
    assert!(pids_of(&registry, "procstat.memory.usage").contains(&child.pid().to_string()));
    assert!(!pids_of(&registry, "procstat.memory.usage").contains(&std::process::id().to_string()));
    for f in &snap.families {
        let name = f.meta.name();
        assert!(
            name.starts_with("procstat.")
                || name.starts_with("process.")
                || name.starts_with("sonde."),
            "{name}"
        );
        if name.starts_with("process.") {
            assert!(f.meta.label_names().all(|l| l == "cpu.mode"), "{name}");
        }
    }
}

/// The uid this process runs as (`/proc/self/status`).
fn uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

const PATTERN_ENV: &str = "SONDE_PROCSTAT_TEST_PATTERN";

/// Root's `sleep`, read by this test binary run as `nobody`: its descriptors cannot be listed.
#[test]
fn another_users_descriptors_are_a_counted_read_error_logged_once() {
    assert_eq!(
        uid(),
        0,
        "this test runs a reader as another user and needs root (scripts/test runs as root)"
    );
    let setpriv = require_program("setpriv", "apt-get install -y util-linux");
    let sleep = UniqueSleep::new(6, "125");
    let child = Sleeper::spawn(&sleep.arg);
    let out = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "procstat::unprivileged_reader",
            "--ignored",
            "--nocapture",
        ])
        .env(PATTERN_ENV, &sleep.pattern)
        .env("SONDE_PROCSTAT_TEST_PID", child.pid().to_string())
        .output()
        .unwrap();
    let text = succeeded("the unprivileged reader", &out);
    assert!(text.contains("1 passed"), "{text}");
    eprintln!("{text}");
}

#[test]
#[ignore = "run as nobody by another_users_descriptors_are_a_counted_read_error_logged_once"]
fn unprivileged_reader() {
    let pattern = std::env::var(PATTERN_ENV).expect("run by another test, as another user");
    let pid: u32 = std::env::var("SONDE_PROCSTAT_TEST_PID")
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(uid(), 0);
    let registry = Registry::new();
    let matcher = format!("pattern:{pattern}");
    let group = [("process.match", matcher.as_str())];
    let (procstat, lines) = sonde_core::testing::capture_diagnostics(|| {
        let p = ProcstatCollector::new(ProcessMatcher::Pattern(pattern.clone()))
            .registry(&registry)
            .install()
            .unwrap();
        for _ in 0..3 {
            p.collect();
            registry.snapshot();
        }
        p
    });
    assert_eq!(procstat.matches()[0].1, vec![pid]);
    let snap = registry.snapshot();
    let me = [("process.pid", pid.to_string())];
    let me: Vec<(&str, &str)> = me.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Everything else is read; the descriptors are left out, per process and for the group.
    assert!(sum(&snap, "procstat.memory.usage", &me) > 0.0);
    assert_eq!(sum(&snap, "procstat.thread.count", &me), 1.0);
    assert!(
        series(&snap, "procstat.open_file_descriptor.count").is_empty(),
        "{:?}",
        series(&snap, "procstat.open_file_descriptor.count")
    );
    assert_eq!(
        value(&snap, "procstat.group.open_file_descriptor.count", &group),
        None
    );
    assert_eq!(
        value(&snap, "procstat.group.process.count", &group),
        Some(1.0)
    );
    assert_eq!(
        value(&snap, "procstat.group.memory.usage", &group),
        Some(sum(&snap, "procstat.memory.usage", &me))
    );
    // Counted at every reading (install, 3 collections, 4 collect hooks and this snapshot's),
    // logged once.
    let errors = value(
        &snap,
        "sonde.procstat.read_errors",
        &[group[0], ("reason", "fd_denied")],
    )
    .unwrap();
    assert!(errors >= 8.0, "{errors}");
    let warns: Vec<&String> = lines.iter().filter(|l| l.starts_with("WARN")).collect();
    assert_eq!(warns.len(), 1, "{lines:#?}");
    assert!(
        warns[0].contains("fd_denied") && warns[0].contains("CAP_SYS_PTRACE"),
        "{}",
        warns[0]
    );
    eprintln!("logged: {}", warns[0]);
}
