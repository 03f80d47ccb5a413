//! `sonde-load coldstart` against real processes on loopback: `sonde-load-target` with a known
//! startup delay (time to ready measured from spawn, thresholds and their exit codes, the JSON
//! file), and the failures: a missing command, one that exits at once, one that never becomes
//! ready (and leaves no process behind), a port already taken.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sonde_core::testing::assert_contains_all;
use sonde_load::coldstart::{ColdstartResult, SCHEMA};

const BIN: &str = env!("CARGO_BIN_EXE_sonde-load");
const TARGET: &str = env!("CARGO_BIN_EXE_sonde-load-target");

fn coldstart(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("coldstart")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `coldstart --command COMMAND` waiting for `/health` on a free port, 3 runs, then `extra`.
fn coldstart_on_free_port(command: &str, extra: &[&str]) -> Output {
    let port = sonde_tests::free_port();
    three_runs(command, &format!("http://127.0.0.1:{port}/health"), extra)
}

/// `coldstart --command COMMAND --ready READY --runs 3`, then `extra`.
fn three_runs(command: &str, ready: &str, extra: &[&str]) -> Output {
    let base = ["--command", command, "--ready", ready, "--runs", "3"];
    coldstart(&[&base[..], extra].concat())
}

/// A shell that writes its pid and its child's (a `sleep 30`) to two files in `dir`, then
/// waits: its command and the two files.
fn pid_writing_shell(dir: &Path) -> (String, PathBuf, PathBuf) {
    let (shell, child) = (dir.join("shell.pid"), dir.join("child.pid"));
    let command = format!(
        "sh -c 'echo $$ > {}; sleep 30 & echo $! > {}; wait'",
        shell.display(),
        child.display()
    );
    (command, shell, child)
}

/// A target that binds `port` 300 ms after it starts.
fn slow_target(port: u16) -> (String, String) {
    (
        format!("{TARGET} --listen 127.0.0.1:{port} --startup-delay 300ms"),
        format!("http://127.0.0.1:{port}/health"),
    )
}

#[test]
fn time_to_ready_counts_the_startup_delay_and_thresholds_set_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out/coldstart.json");
    let port = sonde_tests::free_port();
    let (command, ready) = slow_target(port);
    let o = three_runs(
        &command,
        &ready,
        &[
            "--warm-requests",
            "5",
            "--threshold",
            "p95<5s",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let table = stdout(&o);
    assert_contains_all(
        &table,
        &[
            "time to ready",
            "first request",
            "warm requests",
            "PASS  p95<5s",
        ],
    );
    let r: ColdstartResult =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r.schema, SCHEMA);
    assert_eq!((r.runs, r.per_run.len()), (3, 3));
    assert_eq!(r.time_to_ready.parts.count, 3);
    assert_eq!(r.first_request.parts.count, 3);
    assert_eq!(r.warm.parts.count + r.warm_errors, 15);
    assert_eq!(r.warm_errors, 0);
    // The process sleeps 300 ms before it binds: nothing can answer sooner. The margin is for
    // a loaded 2-core machine (process start, a debug build).
    let p50 = r.time_to_ready.quantile(0.5).unwrap();
    assert!((0.3..1.0).contains(&p50), "time to ready p50 {p50} s");
    for run in &r.per_run {
        assert!(run.time_to_ready_seconds >= 0.3, "{run:?}");
        assert!(
            run.first_request_seconds < run.time_to_ready_seconds,
            "{run:?}"
        );
        assert!(run.polls >= 1);
    }
    // The first request is a part of the time to ready; warm requests were answered.
    assert!(r.first_request.parts.max.unwrap() < 0.3);
    assert!(r.warm.quantile(0.5).unwrap() > 0.0);
    assert_eq!(r.thresholds.len(), 1);
    assert!(r.thresholds[0].passed);

    // The port is free again after the runs: a second benchmark on it can start at once.
    let o = three_runs(
        &command,
        &ready,
        &["--warm-requests", "2", "--threshold", "p95<100ms"],
    );
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("FAIL  p95<100ms"), "{}", stdout(&o));
}

#[test]
fn a_missing_command_is_a_usage_error() {
    let o = coldstart_on_free_port("/nonexistent/my-service --port 1", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let o = coldstart(&["--command", "'unclosed", "--ready", "http://127.0.0.1:1/"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("quote"), "{}", stderr(&o));
    let o = coldstart(&[
        "--command",
        "true",
        "--ready",
        "http://127.0.0.1:1/",
        "--threshold",
        "rate>5",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("does not apply"), "{}", stderr(&o));
}

#[test]
fn a_command_that_exits_at_once_shows_its_status_and_stderr() {
    let o = coldstart_on_free_port("sh -c 'echo cannot open config.toml >&2; exit 3'", &[]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("run 1:"), "{e}");
    assert!(e.contains("exit code 3"), "{e}");
    assert!(e.contains("cannot open config.toml"), "{e}");
}

fn alive(pid: &str) -> bool {
    // A zombie has exited; only a live process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn read_pid(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

#[test]
fn a_service_never_ready_times_out_and_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    // A shell that starts a child of its own and waits: both must be stopped.
    let (command, shell, child) = pid_writing_shell(dir.path());
    let started = Instant::now();
    let o = coldstart_on_free_port(&command, &["--timeout", "1s"]);
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("did not answer 2xx") && e.contains("--timeout"),
        "{e}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // SIGKILL is delivered at once but takes effect when the process next runs: on a busy
    // machine the grandchild can show as running for a moment after sonde-load has exited.
    for pid in [read_pid(&shell), read_pid(&child)] {
        let deadline = Instant::now() + Duration::from_secs(2);
        while alive(&pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !alive(&pid),
            "process {pid} is still running 2 s after sonde-load exited"
        );
    }
}

#[test]
fn a_port_already_taken_is_refused_before_anything_starts() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let o = coldstart(&[
        "--command",
        "sleep 30",
        "--ready",
        &format!("http://{addr}/health"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already listens"), "{}", stderr(&o));
}

/// Ctrl-C while a service is starting stops the service and whatever it started (its own
/// process group does not get the terminal's signal), then exits with 130.
#[test]
fn ctrl_c_stops_the_service_being_measured() {
    let dir = tempfile::tempdir().unwrap();
    let (command, shell, child) = pid_writing_shell(dir.path());
    let port = sonde_tests::free_port();
    let mut run = Command::new(BIN)
        .args(["coldstart", "--command", &command, "--ready"])
        .arg(format!("http://127.0.0.1:{port}/health"))
        .args(["--runs", "3", "--timeout", "20s"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: the service writes both pids as soon as it runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(child.exists() && std::fs::metadata(&child).is_ok_and(|m| m.len() > 0)) {
        assert!(Instant::now() < deadline, "the service never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rustix::process::Pid::from_raw(run.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = run.kill();
            panic!("sonde-load still running 10 s after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut e = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut e).unwrap();
    assert_eq!(status.code(), Some(130), "{e}");
    assert!(e.contains("interrupted: stopping the service"), "{e}");
    for pid in [read_pid(&shell), read_pid(&child)] {
        assert!(!alive(&pid), "process {pid} is still running after Ctrl-C");
    }
}
