//! Shared helpers for the end-to-end tests: the `sonde-load-target` server and the `sonde-load`
//! binary, each bounded in time and killed on drop.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sonde_load::result::RunResult;

/// Load tests measure time: run them one at a time so they do not skew each other on a small
/// machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running `sonde-load-target`, killed on drop.
pub struct Target {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Target {
    /// Starts the target with these flags (on 127.0.0.1, any port) and waits for its line.
    pub fn start(args: &[&str]) -> Target {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sonde-load-target"))
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sonde-load-target");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Target { child, addr }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a `sonde-load` run left.
pub struct Outcome {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The `--json` result, when one was written.
    pub result: Option<RunResult>,
}

impl Outcome {
    /// The exit code.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// The result, or a panic that shows what the run printed.
    pub fn result(&self) -> &RunResult {
        self.result.as_ref().unwrap_or_else(|| {
            panic!(
                "no result (exit {}):\nstdout:\n{}\nstderr:\n{}",
                self.code(),
                self.stdout,
                self.stderr
            )
        })
    }
}

/// Runs `sonde-load ARGS --json TMP --no-progress`, killed after `limit`.
pub fn sonde_load(args: &[&str], dir: &Path, limit: Duration) -> Outcome {
    let json = dir.join(format!("run-{}.json", std::process::id() as u128 + nanos()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonde-load"));
    cmd.args(args);
    if args.first() == Some(&"run") {
        cmd.arg("--json").arg(&json).arg("--no-progress");
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sonde-load");
    let out = wait_bounded(child, limit);
    let result = json
        .exists()
        .then(|| RunResult::read(&json).expect("read the result"));
    Outcome {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        result,
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn wait_bounded(mut child: Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "sonde-load did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
