//! Helpers shared by the agent's integration tests: writing a configuration, running
//! `check-config` on it, and running the agent on it.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use sonde_tests::agent::{KillOnDrop, free_udp, scrape_metrics, spawn_agent_with_env};
use sonde_tests::{TempDir, free_addr, prometheus, wait_for};

/// The agent binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sonde-agent");

/// Writes `contents` to the file `name` in `dir`; returns its path.
pub fn write_file(dir: &TempDir, name: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.0.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Writes `toml` to `agent.toml` in `dir`; returns its path.
pub fn write_config(dir: &TempDir, toml: impl AsRef<[u8]>) -> PathBuf {
    write_file(dir, "agent.toml", toml)
}

/// A new temporary directory named after `name`, with `toml` written to `agent.toml` in it;
/// returns both.
pub fn temp_config(name: &str, toml: impl AsRef<[u8]>) -> (TempDir, PathBuf) {
    let dir = TempDir::new(name);
    let path = write_config(&dir, toml);
    (dir, path)
}

/// Runs `sonde-agent check-config <path>` with `env` added to its environment.
pub fn check_config_with_env(path: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .arg("check-config")
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Runs `sonde-agent check-config <path>`.
pub fn check_config(path: &Path) -> Output {
    check_config_with_env(path, &[])
}

/// Asserts that `check-config` accepts the configuration at `path` (with `env`), showing its
/// errors if not.
pub fn assert_config_ok_with_env(path: &Path, env: &[(&str, &str)]) {
    let out = check_config_with_env(path, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that `check-config` accepts the configuration at `path`, showing its errors if not.
pub fn assert_config_ok(path: &Path) {
    assert_config_ok_with_env(path, &[]);
}

/// Writes `toml` to `path`, asserts that `check-config` refuses it as a configuration error
/// (exit 2) and returns what it said.
pub fn refused_config(path: &Path, toml: &str) -> String {
    std::fs::write(path, toml).unwrap();
    let out = check_config(path);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{toml}\n{err}");
    err
}

/// A running agent that takes StatsD on `statsd` (the [`LoggedAgent`] it derefs to serves
/// `/metrics`); killed when dropped.
pub struct StatsdAgent {
    pub statsd: SocketAddr,
    agent: LoggedAgent,
    sock: UdpSocket,
}

impl StatsdAgent {
    /// Starts the agent in a temporary directory named after `name`, configured by
    /// `config(statsd, metrics)` with free ports for both; returns once `/metrics` answers.
    pub fn start(name: &str, config: impl FnOnce(SocketAddr, SocketAddr) -> String) -> Self {
        let (statsd, metrics) = (free_udp(), free_addr());
        StatsdAgent {
            statsd,
            agent: LoggedAgent::start(name, &config(statsd, metrics), metrics, &[]),
            sock: UdpSocket::bind("127.0.0.1:0").unwrap(),
        }
    }

    /// Sends `lines` to the agent's StatsD port, in one datagram.
    pub fn send(&self, lines: &str) {
        self.sock.send_to(lines.as_bytes(), self.statsd).unwrap();
    }
}

impl std::ops::Deref for StatsdAgent {
    type Target = LoggedAgent;

    fn deref(&self) -> &LoggedAgent {
        &self.agent
    }
}

/// A running agent started from a configuration in a temporary directory, its stderr in
/// `agent.log` there; killed when dropped.
pub struct LoggedAgent {
    kid: KillOnDrop,
    dir: TempDir,
    /// Where its `/metrics` answers.
    pub metrics: SocketAddr,
}

impl LoggedAgent {
    /// Starts the agent with `config` and `env` in a temporary directory named after `name`;
    /// returns once its `/metrics` (at `metrics`, as `config` sets it) shows the agent.
    pub fn start(name: &str, config: &str, metrics: SocketAddr, env: &[(&str, &str)]) -> Self {
        let (dir, path) = temp_config(name, config);
        let kid = spawn_agent_with_env(BIN, &path, &dir.0, env);
        let agent = LoggedAgent { kid, dir, metrics };
        agent.scrape_until("the agent's /metrics", Duration::from_secs(20), |t| {
            t.contains("sonde_agent_info")
        });
        agent
    }

    /// The configuration file it was started with.
    pub fn path(&self) -> PathBuf {
        self.dir.0.join("agent.toml")
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("agent.log")).unwrap_or_default()
    }

    /// The body of `/metrics`, if it answers.
    pub fn scrape(&self) -> Option<String> {
        scrape_metrics(self.metrics)
    }

    /// The first body of `/metrics` for which `ready` holds, waiting up to `timeout` for it.
    pub fn scrape_until(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&str) -> bool,
    ) -> String {
        wait_for(what, timeout, || self.scrape().filter(|t| ready(t)))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.kid.0.id()
    }

    /// Sends `sig` (`-HUP`, `-TERM`) to the agent.
    pub fn signal(&self, sig: &str) {
        assert!(
            Command::new("kill")
                .args([sig, &self.pid().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.kid.0.try_wait().unwrap()
    }

    /// Sends SIGTERM and waits up to `timeout` for the agent to exit; returns its exit status
    /// and its log.
    pub fn terminate(mut self, timeout: Duration) -> (ExitStatus, String) {
        self.signal("-TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return (status, self.log());
            }
            assert!(
                start.elapsed() < timeout,
                "the agent did not exit within {timeout:?} after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The first line of `text` that starts with `prefix`; panics, showing `text`, if none does.
pub fn line_starting_with<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?} in:\n{text}"))
}

/// Asserts that `promtool check metrics` finds nothing to say about the exposition `text`.
pub fn assert_promtool_clean(text: &str) {
    let findings = prometheus::promtool_check_metrics(text);
    assert!(
        findings.trim().is_empty(),
        "promtool check metrics has findings on the agent's exposition:\n{findings}\n---\n{text}"
    );
}

/// The OpenTelemetry SDK's OTLP/gRPC metrics exporter to `grpc`, gzip-compressed if asked,
/// with the Tokio runtime tonic needs around it (keep both).
pub fn sdk_grpc_exporter(
    grpc: std::net::SocketAddr,
    gzip: bool,
) -> (tokio::runtime::Runtime, opentelemetry_otlp::MetricExporter) {
    use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let exporter = {
        let _guard = runtime.enter();
        let builder = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://{grpc}"));
        let builder = if gzip {
            builder.with_compression(opentelemetry_otlp::Compression::Gzip)
        } else {
            builder
        };
        builder.build().unwrap()
    };
    (runtime, exporter)
}
